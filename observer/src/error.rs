//! The daemon's errors, each with its own process exit code.

use std::io;

/// Everything that stops `oom-observer` from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum ObserverError {
    /// The kernel refused to create maps or load programs for lack of privilege.
    #[error("not permitted to load eBPF programs ({0}): run as root, or with CAP_BPF, CAP_PERFMON and CAP_SYS_RESOURCE")]
    NotPermitted(String),
    /// No hook strategy could be loaded and attached.
    #[error("no usable OOM hook on this kernel: {0}")]
    NoHook(String),
    /// A BTF file was named but could not be read or parsed.
    #[error("cannot use BTF from {path}: {reason}")]
    Btf {
        /// The file that was tried.
        path: String,
        /// Why it failed.
        reason: String,
    },
    /// Neither tracefs nor debugfs tracing is mounted, and mounting tracefs failed.
    #[error("tracefs is not available: {0}")]
    Tracefs(String),
    /// The binary was built without the kernel programs.
    #[error(
        "this oom-observer was built without its eBPF object: build it with `cargo xtask build`"
    )]
    NoObject,
    /// The eBPF object could not be parsed or relocated.
    #[error("cannot load the eBPF object: {0}")]
    Load(String),
    /// Writing the event stream failed (for example, stdout was closed).
    #[error("cannot write events: {0}")]
    Output(#[source] io::Error),
    /// The ring buffer or another kernel resource failed while running.
    #[error("event stream failed: {0}")]
    Stream(String),
}

impl ObserverError {
    /// The process exit code for this error; 2 is reserved for usage errors (clap).
    pub fn exit_code(&self) -> i32 {
        match self {
            ObserverError::NotPermitted(_) => 3,
            ObserverError::NoHook(_) => 4,
            ObserverError::Btf { .. } => 5,
            ObserverError::Tracefs(_) => 6,
            ObserverError::NoObject => 7,
            ObserverError::Load(_) => 8,
            ObserverError::Output(_) => 9,
            ObserverError::Stream(_) => 10,
        }
    }
}

/// The errno behind an error, looking through its chain of sources.
pub fn errno_of(err: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if let Some(code) = io.raw_os_error() {
                return Some(code);
            }
        }
        cur = e.source();
    }
    None
}

/// One line: the error and its sources, joined, so logs and the terminal get the cause.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}
