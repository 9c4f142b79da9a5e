//! Loading the kernel programs and choosing how to hook the OOM path on this kernel.
//!
//! A strategy is a set of programs. The two best ones hook `oom_kill_process` to see
//! `struct oom_control` (the memcg whose limit was hit, the constraint) and take the victims
//! from `mark_victim`, which fires once per killed process (so `memory.oom.group` kills are
//! all seen). The fallbacks hook `mark_victim` alone. Strategies are tried best first; each
//! attempt uses a fresh copy of the object, so a half-attached strategy leaves nothing behind.

use std::fmt;

use aya::{
    programs::{links::FdLink, BtfTracePoint, FEntry, FExit, KProbe, ProgramError, TracePoint},
    Btf, Ebpf, EbpfLoader,
};
use observer_common::{
    map, program, AttachLayout, KernelLayout, ABSENT, ATTACH_GLOBAL, LAYOUT_GLOBAL,
};

use crate::error::{chain, errno_of, ObserverError};

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

/// What the loader needs.
pub struct LoadParams<'a> {
    /// The eBPF object file.
    pub object: &'a [u8],
    /// Offsets for this kernel.
    pub layout: KernelLayout,
    /// The kernel's BTF, when there is any.
    pub btf: Option<&'a Btf>,
    /// Ring buffer size in bytes (a power of two, at least a page).
    pub ring_bytes: u32,
    /// Offsets for the process-migration program.
    pub attach: AttachLayout,
    /// Take each program's link out of the object (into [`Loaded::links`]), to be pinned:
    /// a pinned link keeps its program attached after the daemon exits.
    pub keep_links: bool,
}

/// Links taken out of the object, by program name (see [`LoadParams::keep_links`]).
pub type Links = Vec<(&'static str, FdLink)>;

/// The programs that run, and why better strategies were refused.
pub struct Loaded {
    /// The object with its maps and attached programs; dropping it detaches everything.
    pub ebpf: Ebpf,
    /// The strategy in use.
    pub strategy: Strategy,
    /// Which `mark_victim` program carries the victims.
    pub victim_hook: &'static str,
    /// Better strategies that could not be used, with the reason.
    pub refused: Vec<(Strategy, Refusal)>,
    /// Auxiliary programs (cgroup creation, exits, migrations): name and outcome.
    pub extras: Vec<(&'static str, Outcome)>,
    /// The attached programs' links, when [`LoadParams::keep_links`] asked for them;
    /// dropping one detaches its program unless it was pinned first.
    pub links: Links,
}

/// Loads the object and attaches the best strategy that works (or exactly `forced`).
pub fn load(p: &LoadParams<'_>, forced: Option<Strategy>) -> Result<Loaded, ObserverError> {
    let candidates: Vec<Strategy> = match forced {
        Some(s) => vec![s],
        None => Strategy::ALL.to_vec(),
    };
    let mut refused = Vec::new();
    for s in candidates {
        let mut ebpf = open(p)?;
        let mut links = Links::new();
        let l = &mut links;
        match attach_strategy(&mut ebpf, s, p, l) {
            Ok(victim_hook) => {
                let mut extras = vec![
                    ("cgroup_mkdir", attach_mkdir(&mut ebpf, p, l)),
                    ("victim_exit", attach_exit(&mut ebpf, p, l)),
                    ("cgroup_attach_task", attach_migrations(&mut ebpf, p, l)),
                ];
                if needs_kill_signal(s, p) {
                    let outcome = attach_kill_signal(&mut ebpf, p, l);
                    if outcome.is_ok() && matches!(s, Strategy::Fentry | Strategy::Kprobe) {
                        if let Err(e) = enable_kill_signal(&mut ebpf) {
                            tracing::warn!(error = %e, "cannot tell the kernel programs that signal_generate runs: a victim marked without a SIGKILL is reported as a kill");
                        }
                    }
                    extras.push(("kill_signal", outcome));
                }
                return Ok(Loaded {
                    ebpf,
                    strategy: s,
                    victim_hook,
                    refused,
                    extras,
                    links,
                });
            }
            Err(reason) => refused.push((s, reason)),
        }
    }
    Err(ObserverError::NoHook(refused))
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
    fn unavailable(what: impl Into<String>, why: &'static str) -> Refusal {
        Refusal::Unavailable {
            what: what.into(),
            why,
        }
    }
}

/// Each loaded program of the object and the number of instructions the kernel's verifier
/// processed for it (`None` where the kernel does not report it, before Linux 5.16).
pub fn program_stats(ebpf: &Ebpf) -> Vec<(String, Option<u32>)> {
    let mut out: Vec<(String, Option<u32>)> = ebpf
        .programs()
        .filter_map(|(name, prog)| {
            // Programs of other strategies are in the object but not loaded: no info.
            let info = prog.info().ok()?;
            Some((name.to_string(), info.verified_instruction_count()))
        })
        .collect();
    out.sort();
    out
}

/// Tries every strategy on its own, for `check`.
pub fn probe_all(p: &LoadParams<'_>) -> Result<Vec<(Strategy, Outcome)>, ObserverError> {
    let mut out = Vec::new();
    for s in Strategy::ALL {
        let mut ebpf = open(p)?;
        out.push((s, attach_strategy(&mut ebpf, s, p, &mut Links::new())));
    }
    Ok(out)
}

/// Parses the object, creates its maps and hands the layout to the programs.
pub fn open(p: &LoadParams<'_>) -> Result<Ebpf, ObserverError> {
    if p.object.is_empty() {
        return Err(ObserverError::NoObject);
    }
    EbpfLoader::new()
        .btf(p.btf)
        .override_global(LAYOUT_GLOBAL, &p.layout, true)
        .override_global(ATTACH_GLOBAL, &p.attach, true)
        .map_max_entries(map::EVENTS, p.ring_bytes)
        .map_max_entries(map::CGROUP_EVENTS, p.ring_bytes)
        .load(p.object)
        .map_err(|e| match errno_of(&e) {
            Some(c) if c == nix::libc::EPERM || c == nix::libc::EACCES => {
                ObserverError::NotPermitted(Box::new(e))
            }
            _ => ObserverError::Load(Box::new(e)),
        })
}

/// Turns a program error into a short reason: what a person needs to know.
fn reason(what: &str, e: &ProgramError) -> Refusal {
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

fn program<'e, T>(ebpf: &'e mut Ebpf, name: &str) -> Result<&'e mut T, Refusal>
where
    &'e mut T: TryFrom<&'e mut aya::programs::Program, Error = ProgramError>,
{
    let prog = ebpf.program_mut(name).ok_or_else(|| {
        Refusal::unavailable(format!("program {name}"), "missing from the object")
    })?;
    prog.try_into().map_err(|e: ProgramError| reason(name, &e))
}

fn need_btf<'a>(p: &LoadParams<'a>, what: &str) -> Result<&'a Btf, Refusal> {
    p.btf
        .ok_or_else(|| Refusal::unavailable(what, "needs kernel BTF, and none is available"))
}

fn need_layout(p: &LoadParams<'_>, what: &str) -> Result<(), Refusal> {
    let l = &p.layout;
    if l.have_btf == 0 || l.oc_memcg == ABSENT || l.oc_chosen == ABSENT || l.task_pid == ABSENT {
        return Err(Refusal::unavailable(
            what,
            "struct oom_control/task_struct layout unknown (no BTF)",
        ));
    }
    Ok(())
}

/// Takes an attached program's link out of the object when [`LoadParams::keep_links`] asks
/// for it. A link that is no bpf_link (a perf event, on kernels before 5.15) cannot be
/// pinned: that refuses the program (and detaches it, as the link is dropped).
fn keep<L>(
    p: &LoadParams<'_>,
    links: &mut Links,
    name: &'static str,
    taken: impl FnOnce() -> Result<L, ProgramError>,
) -> Result<(), Refusal>
where
    L: TryInto<FdLink>,
    L::Error: std::error::Error + 'static,
{
    if !p.keep_links {
        return Ok(());
    }
    let link = taken().map_err(|e| reason(name, &e))?;
    match link.try_into() {
        Ok(fd) => {
            links.push((name, fd));
            Ok(())
        }
        Err(e) => Err(Refusal::Kernel {
            what: name.to_string(),
            kind: RefusalKind::NotSupported,
            detail: format!("its link cannot be pinned: {}", chain(&e)),
        }),
    }
}

fn attach_strategy(ebpf: &mut Ebpf, s: Strategy, p: &LoadParams<'_>, links: &mut Links) -> Outcome {
    match s {
        Strategy::Fentry => {
            let btf = need_btf(p, "fentry")?;
            need_layout(p, "fentry")?;
            let prog: &mut FEntry = program(ebpf, program::OOM_KILL_FENTRY)?;
            prog.load("oom_kill_process", btf)
                .map_err(|e| reason("fentry oom_kill_process", &e))?;
            let id = prog
                .attach()
                .map_err(|e| reason("fentry oom_kill_process", &e))?;
            keep(p, links, program::OOM_KILL_FENTRY, || prog.take_link(id))?;
            let prog: &mut FExit = program(ebpf, program::OOM_KILL_FEXIT)?;
            prog.load("oom_kill_process", btf)
                .map_err(|e| reason("fexit oom_kill_process", &e))?;
            let id = prog
                .attach()
                .map_err(|e| reason("fexit oom_kill_process", &e))?;
            keep(p, links, program::OOM_KILL_FEXIT, || prog.take_link(id))?;
            attach_victims(ebpf, p, links)
        }
        Strategy::Kprobe => {
            need_layout(p, "kprobe")?;
            if p.layout.kprobe_arg0 == ABSENT {
                return Err(Refusal::unavailable(
                    "kprobe",
                    "where this architecture passes arguments in pt_regs is unknown",
                ));
            }
            for (name, what) in [
                (program::OOM_KILL_KPROBE, "kprobe"),
                (program::OOM_KILL_KRETPROBE, "kretprobe"),
            ] {
                let prog: &mut KProbe = program(ebpf, name)?;
                prog.load().map_err(|e| reason(what, &e))?;
                let id = prog
                    .attach("oom_kill_process", 0)
                    .map_err(|e| reason(&format!("{what} oom_kill_process"), &e))?;
                keep(p, links, name, || prog.take_link(id))?;
            }
            attach_victims(ebpf, p, links)
        }
        Strategy::TpBtf => attach_victim_btf(ebpf, p, links),
        Strategy::Tracepoint => attach_victim_tp(ebpf, p, links),
    }
}

/// The victim hook for the `oom_kill_process` strategies: tp_btf when possible.
fn attach_victims(ebpf: &mut Ebpf, p: &LoadParams<'_>, links: &mut Links) -> Outcome {
    match attach_victim_btf(ebpf, p, links) {
        Ok(h) => Ok(h),
        Err(btf) => attach_victim_tp(ebpf, p, links).map_err(|tracepoint| Refusal::NoVictimHook {
            btf: Box::new(btf),
            tracepoint: Box::new(tracepoint),
        }),
    }
}

fn attach_victim_btf(ebpf: &mut Ebpf, p: &LoadParams<'_>, links: &mut Links) -> Outcome {
    let btf = need_btf(p, "tp_btf")?;
    let prog: &mut BtfTracePoint = program(ebpf, program::MARK_VICTIM_BTF)?;
    prog.load("mark_victim", btf)
        .map_err(|e| reason("tp_btf mark_victim", &e))?;
    let id = prog
        .attach()
        .map_err(|e| reason("tp_btf mark_victim", &e))?;
    keep(p, links, program::MARK_VICTIM_BTF, || prog.take_link(id))?;
    Ok("tp_btf")
}

fn attach_victim_tp(ebpf: &mut Ebpf, p: &LoadParams<'_>, links: &mut Links) -> Outcome {
    if p.layout.tp_victim_pid == ABSENT {
        return Err(Refusal::unavailable(
            "tracepoint oom/mark_victim",
            "not in tracefs",
        ));
    }
    let prog: &mut TracePoint = program(ebpf, program::MARK_VICTIM_TP)?;
    prog.load()
        .map_err(|e| reason("tracepoint oom/mark_victim", &e))?;
    let id = prog
        .attach("oom", "mark_victim")
        .map_err(|e| reason("tracepoint oom/mark_victim", &e))?;
    keep(p, links, program::MARK_VICTIM_TP, || prog.take_link(id))?;
    Ok("tracepoint")
}

/// Whether `signal_generate` is needed: on the `oom_kill_process` strategies it tells a kill
/// from a victim marked without a SIGKILL (see `probes::signal`); on a kernel whose
/// `tp_btf/mark_victim` passes only a pid (before Linux 6.8) it supplies the victim's task.
fn needs_kill_signal(s: Strategy, p: &LoadParams<'_>) -> bool {
    p.btf.is_some()
        && match s {
            Strategy::Fentry | Strategy::Kprobe => true,
            Strategy::TpBtf => p.layout.tp_btf_victim_is_task == 0,
            Strategy::Tracepoint => false,
        }
}

/// Tells the kernel programs that `signal_generate` runs (see [`map::KILL_SIGNAL_ON`]).
fn enable_kill_signal(ebpf: &mut Ebpf) -> Result<(), aya::maps::MapError> {
    let m = ebpf
        .map_mut(map::KILL_SIGNAL_ON)
        .ok_or(aya::maps::MapError::InvalidName {
            name: map::KILL_SIGNAL_ON.to_string(),
        })?;
    let mut a: aya::maps::Array<_, u32> = aya::maps::Array::try_from(m)?;
    a.set(0, 1, 0)
}

fn attach_kill_signal(ebpf: &mut Ebpf, p: &LoadParams<'_>, links: &mut Links) -> Outcome {
    let btf = need_btf(p, "tp_btf signal_generate")?;
    let prog: &mut BtfTracePoint = program(ebpf, program::KILL_SIGNAL_BTF)?;
    prog.load("signal_generate", btf)
        .map_err(|e| reason("tp_btf signal_generate", &e))?;
    let id = prog
        .attach()
        .map_err(|e| reason("tp_btf signal_generate", &e))?;
    keep(p, links, program::KILL_SIGNAL_BTF, || prog.take_link(id))?;
    Ok("tp_btf")
}

fn attach_mkdir(ebpf: &mut Ebpf, p: &LoadParams<'_>, links: &mut Links) -> Outcome {
    let prog: &mut TracePoint = program(ebpf, program::CGROUP_MKDIR_TP)?;
    prog.load()
        .map_err(|e| reason("tracepoint cgroup/cgroup_mkdir", &e))?;
    let id = prog
        .attach("cgroup", "cgroup_mkdir")
        .map_err(|e| reason("tracepoint cgroup/cgroup_mkdir", &e))?;
    keep(p, links, program::CGROUP_MKDIR_TP, || prog.take_link(id))?;
    Ok("tracepoint")
}

/// Process migrations into memory cgroups: a container whose processes move is re-audited at
/// once (see `audit`).
fn attach_migrations(ebpf: &mut Ebpf, p: &LoadParams<'_>, links: &mut Links) -> Outcome {
    if p.attach.tp_root == ABSENT || p.attach.memory_root == ABSENT {
        return Err(Refusal::unavailable(
            "tracepoint cgroup/cgroup_attach_task",
            "not in tracefs, or no memory hierarchy",
        ));
    }
    let prog: &mut TracePoint = program(ebpf, program::CGROUP_ATTACH_TP)?;
    prog.load()
        .map_err(|e| reason("tracepoint cgroup/cgroup_attach_task", &e))?;
    let id = prog
        .attach("cgroup", "cgroup_attach_task")
        .map_err(|e| reason("tracepoint cgroup/cgroup_attach_task", &e))?;
    keep(p, links, program::CGROUP_ATTACH_TP, || prog.take_link(id))?;
    Ok("tracepoint")
}

/// The victim-exit hook, on `sched_process_exit`.
fn attach_exit(ebpf: &mut Ebpf, p: &LoadParams<'_>, links: &mut Links) -> Outcome {
    attach_btf_or_tracepoint(
        ebpf,
        p,
        links,
        program::EXIT_BTF,
        program::EXIT_TP,
        "sched",
        "sched_process_exit",
    )
}

/// Attaches a tracepoint's tp_btf program (cheapest: no record is built for it), else its
/// classic-tracepoint twin; says why each failed.
fn attach_btf_or_tracepoint(
    ebpf: &mut Ebpf,
    p: &LoadParams<'_>,
    links: &mut Links,
    btf_prog: &'static str,
    tp_prog: &'static str,
    category: &str,
    name: &str,
) -> Outcome {
    let first = match p.btf {
        Some(btf) => {
            let prog: &mut BtfTracePoint = program(ebpf, btf_prog)?;
            match prog.load(name, btf).and_then(|_| prog.attach()) {
                Ok(id) => {
                    keep(p, links, btf_prog, || prog.take_link(id))?;
                    return Ok("tp_btf");
                }
                Err(e) => reason(&format!("tp_btf {name}"), &e),
            }
        }
        None => Refusal::unavailable(format!("tp_btf {name}"), "no BTF"),
    };
    let prog: &mut TracePoint = program(ebpf, tp_prog)?;
    let id = prog
        .load()
        .and_then(|_| prog.attach(category, name))
        .map_err(|e| Refusal::Neither {
            first: Box::new(first),
            second: Box::new(reason(&format!("tracepoint {category}/{name}"), &e)),
        })?;
    keep(p, links, tp_prog, || prog.take_link(id))?;
    Ok("tracepoint")
}
