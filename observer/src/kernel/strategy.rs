//! The hook strategies, best first, and why the kernel refuses one: the words `check` and
//! the logs print.

use std::fmt;

use aya::programs::ProgramError;

use crate::cause::{chain, errno_of};

/// A way of seeing OOM kills, best first in [`Strategy::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Strategy {
    /// fentry/fexit on `oom_kill_process`, victims from `mark_victim`.
    #[value(name = "fentry")]
    Fentry,
    /// kprobe/kretprobe on `oom_kill_process`, victims from `mark_victim`.
    #[value(name = "kprobe")]
    Kprobe,
    /// BTF-typed tracepoint `mark_victim` alone.
    #[value(name = "tp_btf")]
    TpBtf,
    /// Classic tracepoint `oom/mark_victim` alone (works without BTF).
    #[value(name = "tracepoint")]
    Tracepoint,
}

impl Strategy {
    /// Every strategy, best first.
    pub const ALL: [Strategy; 4] = [
        Strategy::Fentry,
        Strategy::Kprobe,
        Strategy::TpBtf,
        Strategy::Tracepoint,
    ];

    /// The name used in flags, logs and the JSON `hook` field.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Fentry => "fentry",
            Strategy::Kprobe => "kprobe",
            Strategy::TpBtf => "tp_btf",
            Strategy::Tracepoint => "tracepoint",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What one attempt came to: how it attached (`tp_btf`, `tracepoint`, …), or why not.
pub type Outcome = Result<&'static str, Refusal>;

/// How the kernel refused a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// EPERM/EACCES: not allowed here (a lockdown, a sandbox, missing capabilities).
    Denied,
    /// The kernel was built without kprobes.
    KprobesOff,
    /// The function or tracepoint does not exist in this kernel.
    NotInKernel,
    /// The kernel cannot attach this kind of program here (no trampolines).
    NotSupported,
    /// Anything else (the detail says what).
    Failed,
}

impl std::fmt::Display for RefusalKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RefusalKind::Denied => "denied",
            RefusalKind::KprobesOff => "kprobes not enabled in this kernel",
            RefusalKind::NotInKernel => "not in the kernel",
            RefusalKind::NotSupported => "not supported",
            RefusalKind::Failed => "failed",
        })
    }
}

/// Why a hook could not be used, in the words `check` and the logs print.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The kernel refused to load or attach the program.
    #[error("{what}: {kind} ({detail})")]
    Kernel {
        /// The program and its attach point.
        what: String,
        /// How it was refused.
        kind: RefusalKind,
        /// The kernel's words (errno, the verifier's last line).
        detail: String,
    },
    /// Something the hook needs is missing on this node.
    #[error("{what}: {why}")]
    Unavailable {
        /// The hook.
        what: String,
        /// What it lacks.
        why: &'static str,
    },
    /// Neither of two ways to attach worked.
    #[error("{first}; {second}")]
    Neither {
        /// Why the preferred way failed.
        first: Box<Refusal>,
        /// Why the fallback failed.
        second: Box<Refusal>,
    },
    /// No `mark_victim` program could attach.
    #[error("no mark_victim hook: {btf}; {tracepoint}")]
    NoVictimHook {
        /// Why `tp_btf/mark_victim` failed.
        btf: Box<Refusal>,
        /// Why `tracepoint/oom/mark_victim` failed.
        tracepoint: Box<Refusal>,
    },
}

impl Refusal {
    /// Something the hook `what` needs is missing on this node.
    pub(super) fn unavailable(what: impl Into<String>, why: &'static str) -> Refusal {
        Refusal::Unavailable {
            what: what.into(),
            why,
        }
    }
}

/// Turns a program error into a short reason: what a person needs to know.
pub(super) fn reason(what: &str, e: &ProgramError) -> Refusal {
    let errno = errno_of(e);
    let kind = match errno {
        Some(c) if c == nix::libc::EPERM || c == nix::libc::EACCES => RefusalKind::Denied,
        Some(c) if c == nix::libc::ENOENT && chain(e).contains("kprobe/type") => {
            RefusalKind::KprobesOff
        }
        Some(c) if c == nix::libc::ENOENT => RefusalKind::NotInKernel,
        Some(c) if c == nix::libc::EOPNOTSUPP || c == ENOTSUPP => RefusalKind::NotSupported,
        _ => RefusalKind::Failed,
    };
    let detail = match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            tracing::debug!(program = what, verifier_log = %log, "verifier rejected a program");
            // The verifier ends with statistics; the reason is the line before them.
            let last = log
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| {
                    !l.is_empty()
                        && !l.starts_with("processed ")
                        && !l.starts_with("verification time")
                })
                .unwrap_or("")
                .to_string();
            if last.is_empty() {
                io_error.to_string()
            } else {
                format!("{io_error}; verifier: {last}")
            }
        }
        other => chain(other),
    };
    Refusal::Kernel {
        what: what.to_string(),
        kind,
        detail,
    }
}

/// Linux's internal ENOTSUPP, which BPF returns where a kernel has no trampolines.
const ENOTSUPP: i32 = 524;
