//! Loading the kernel programs and choosing how to hook the OOM path on this kernel.
//!
//! A strategy is a set of programs. The two best ones hook `oom_kill_process` to see
//! `struct oom_control` (the memcg whose limit was hit, the constraint) and take the victims
//! from `mark_victim`, which fires once per killed process (so `memory.oom.group` kills are
//! all seen). The fallbacks hook `mark_victim` alone. Strategies are tried best first; each
//! attempt uses a fresh copy of the object, so a half-attached strategy leaves nothing behind.
//! What each strategy attaches is in [`attach`](super::attach); the strategies and their
//! refusals are in [`strategy`](super::strategy).

use aya::{Ebpf, EbpfLoader};
use observer_common::{map, ATTACH_GLOBAL, LAYOUT_GLOBAL};

pub use super::attach::{Links, LoadParams};
pub use super::strategy::{Outcome, Refusal, RefusalKind, Strategy};
use super::{
    attach::{
        attach_exit, attach_kill_signal, attach_migrations, attach_mkdir, attach_strategy,
        enable_kill_signal, needs_kill_signal,
    },
    error::KernelError,
};
use crate::cause::errno_of;

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
pub fn load(p: &LoadParams<'_>, forced: Option<Strategy>) -> Result<Loaded, KernelError> {
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
    Err(KernelError::NoHook(refused))
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
pub fn probe_all(p: &LoadParams<'_>) -> Result<Vec<(Strategy, Outcome)>, KernelError> {
    let mut out = Vec::new();
    for s in Strategy::ALL {
        let mut ebpf = open(p)?;
        out.push((s, attach_strategy(&mut ebpf, s, p, &mut Links::new())));
    }
    Ok(out)
}

/// Parses the object, creates its maps and hands the layout to the programs.
pub fn open(p: &LoadParams<'_>) -> Result<Ebpf, KernelError> {
    if p.object.is_empty() {
        return Err(KernelError::NoObject);
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
                KernelError::NotPermitted(Box::new(e))
            }
            _ => KernelError::Load(Box::new(e)),
        })
}
