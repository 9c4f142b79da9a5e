//! Attaching the programs of one strategy, and the auxiliary ones, to a freshly opened
//! object, as [`LoadParams`] asks.

use aya::{
    programs::{links::FdLink, BtfTracePoint, FEntry, FExit, KProbe, ProgramError, TracePoint},
    Btf, Ebpf,
};
use observer_common::{map, program, AttachLayout, KernelLayout, ABSENT};

use super::{
    btf::{MARK_VICTIM, OOM_KILL_PROCESS, SCHED_PROCESS_EXIT, SIGNAL_GENERATE},
    strategy::{reason, Outcome, Refusal, RefusalKind, Strategy},
};
use crate::cause::chain;

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
    /// Take each program's link out of the object (into [`Loaded::links`](super::hooks::Loaded::links)), to be pinned:
    /// a pinned link keeps its program attached after the daemon exits.
    pub keep_links: bool,
}

/// Links taken out of the object, by program name (see [`LoadParams::keep_links`]).
pub type Links = Vec<(&'static str, FdLink)>;

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

pub(super) fn attach_strategy(
    ebpf: &mut Ebpf,
    s: Strategy,
    p: &LoadParams<'_>,
    links: &mut Links,
) -> Outcome {
    match s {
        Strategy::Fentry => {
            let btf = need_btf(p, "fentry")?;
            need_layout(p, "fentry")?;
            let prog: &mut FEntry = program(ebpf, program::OOM_KILL_FENTRY)?;
            prog.load(OOM_KILL_PROCESS, btf)
                .map_err(|e| reason("fentry oom_kill_process", &e))?;
            let id = prog
                .attach()
                .map_err(|e| reason("fentry oom_kill_process", &e))?;
            keep(p, links, program::OOM_KILL_FENTRY, || prog.take_link(id))?;
            let prog: &mut FExit = program(ebpf, program::OOM_KILL_FEXIT)?;
            prog.load(OOM_KILL_PROCESS, btf)
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
    attach_tp_btf(ebpf, p, links, program::MARK_VICTIM_BTF, MARK_VICTIM)
}

fn attach_victim_tp(ebpf: &mut Ebpf, p: &LoadParams<'_>, links: &mut Links) -> Outcome {
    if p.layout.tp_victim_pid == ABSENT {
        return Err(Refusal::unavailable(
            "tracepoint oom/mark_victim",
            "not in tracefs",
        ));
    }
    attach_tracepoint(
        ebpf,
        p,
        links,
        program::MARK_VICTIM_TP,
        "oom",
        "mark_victim",
    )
}

/// Loads and attaches the tp_btf program `prog_name` on the kernel's tracepoint `func`.
fn attach_tp_btf(
    ebpf: &mut Ebpf,
    p: &LoadParams<'_>,
    links: &mut Links,
    prog_name: &'static str,
    func: &str,
) -> Outcome {
    let what = format!("tp_btf {func}");
    let btf = need_btf(p, &what)?;
    let prog: &mut BtfTracePoint = program(ebpf, prog_name)?;
    prog.load(func, btf).map_err(|e| reason(&what, &e))?;
    let id = prog.attach().map_err(|e| reason(&what, &e))?;
    keep(p, links, prog_name, || prog.take_link(id))?;
    Ok("tp_btf")
}

/// Loads and attaches the classic-tracepoint program `prog_name` on `category/event`.
fn attach_tracepoint(
    ebpf: &mut Ebpf,
    p: &LoadParams<'_>,
    links: &mut Links,
    prog_name: &'static str,
    category: &str,
    event: &str,
) -> Outcome {
    let what = format!("tracepoint {category}/{event}");
    let prog: &mut TracePoint = program(ebpf, prog_name)?;
    prog.load().map_err(|e| reason(&what, &e))?;
    let id = prog
        .attach(category, event)
        .map_err(|e| reason(&what, &e))?;
    keep(p, links, prog_name, || prog.take_link(id))?;
    Ok("tracepoint")
}

/// Whether `signal_generate` gets its tp_btf program: with BTF, on every strategy but the
/// classic tracepoint's (which uses the classic tracepoints, as on a kernel without BTF, and
/// gets the classic `signal_generate`). On the `oom_kill_process` strategies it tells a kill
/// from a victim marked without a SIGKILL (see `probes::signal`); on a kernel whose
/// `tp_btf/mark_victim` passes only a pid (before Linux 6.8) it supplies the victim's task.
/// On every strategy it records the fatal signals and their senders, which the exit hook
/// joins to the exit: so it is attached on every one, and every signal passes it (its cost
/// is the bench's signal loop).
pub(super) fn kill_signal_btf(s: Strategy, p: &LoadParams<'_>) -> bool {
    p.btf.is_some() && s != Strategy::Tracepoint
}

/// Tells the kernel programs that `signal_generate` runs (see [`map::KILL_SIGNAL_ON`]).
pub(super) fn enable_kill_signal(ebpf: &mut Ebpf) -> Result<(), aya::maps::MapError> {
    let m = ebpf
        .map_mut(map::KILL_SIGNAL_ON)
        .ok_or(aya::maps::MapError::InvalidName {
            name: map::KILL_SIGNAL_ON.to_string(),
        })?;
    let mut a: aya::maps::Array<_, u32> = aya::maps::Array::try_from(m)?;
    a.set(0, 1, 0)
}

/// The `signal_generate` program for strategy `s` (see [`kill_signal_btf`]).
pub(super) fn attach_kill_signal(
    ebpf: &mut Ebpf,
    s: Strategy,
    p: &LoadParams<'_>,
    links: &mut Links,
) -> Outcome {
    if kill_signal_btf(s, p) {
        return attach_tp_btf(ebpf, p, links, program::KILL_SIGNAL_BTF, SIGNAL_GENERATE);
    }
    if p.layout.tp_signal_sig == ABSENT || p.layout.tp_signal_pid == ABSENT {
        return Err(Refusal::unavailable(
            "tracepoint signal/signal_generate",
            "not in tracefs",
        ));
    }
    attach_tracepoint(
        ebpf,
        p,
        links,
        program::KILL_SIGNAL_TP,
        "signal",
        SIGNAL_GENERATE,
    )
}

pub(super) fn attach_mkdir(ebpf: &mut Ebpf, p: &LoadParams<'_>, links: &mut Links) -> Outcome {
    attach_tracepoint(
        ebpf,
        p,
        links,
        program::CGROUP_MKDIR_TP,
        "cgroup",
        "cgroup_mkdir",
    )
}

/// Process migrations into memory cgroups: a container whose processes move is re-audited at
/// once (see `audit`).
pub(super) fn attach_migrations(ebpf: &mut Ebpf, p: &LoadParams<'_>, links: &mut Links) -> Outcome {
    if p.attach.tp_root == ABSENT || p.attach.memory_root == ABSENT {
        return Err(Refusal::unavailable(
            "tracepoint cgroup/cgroup_attach_task",
            "not in tracefs, or no memory hierarchy",
        ));
    }
    attach_tracepoint(
        ebpf,
        p,
        links,
        program::CGROUP_ATTACH_TP,
        "cgroup",
        "cgroup_attach_task",
    )
}

/// The victim-exit hook, on `sched_process_exit`.
pub(super) fn attach_exit(ebpf: &mut Ebpf, p: &LoadParams<'_>, links: &mut Links) -> Outcome {
    attach_btf_or_tracepoint(
        ebpf,
        p,
        links,
        program::EXIT_BTF,
        program::EXIT_TP,
        "sched",
        SCHED_PROCESS_EXIT,
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
