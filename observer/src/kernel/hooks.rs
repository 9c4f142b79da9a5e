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
        enable_kill_signal, kill_signal_btf,
    },
    error::KernelError,
};
use crate::{cause::errno_of, host::startup};

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

/// aya's loader, made before the rest of the start-up is in memory.
///
/// aya 0.14's `EbpfLoader::new`, the only way to make one, parses the whole of
/// /sys/kernel/btf/vmlinux for a default BTF (about 16 MiB of heap and 15-30 ms here), which
/// the daemon replaces with its own ([`LoadParams::btf`]). Made once, that parse is paid
/// once; made first, with its BTF dropped at once, it is the start-up's peak on its own
/// rather than on top of the daemon's own BTF and layout.
pub struct Loader(EbpfLoader<'static>);

impl Loader {
    /// Makes the loader and drops aya's own parse of the kernel's BTF.
    pub fn new() -> Self {
        let mut loader = EbpfLoader::new();
        loader.btf(None);
        crate::host::heap::release_freed_memory();
        Loader(loader)
    }
}

impl Default for Loader {
    fn default() -> Self {
        Self::new()
    }
}

/// Loads the object and attaches the best strategy that works (or exactly `forced`).
pub fn load(p: &LoadParams<'_>, forced: Option<Strategy>) -> Result<Loaded, KernelError> {
    load_with(Loader::new(), p, forced)
}

/// [`load`], with a loader made earlier.
pub fn load_with(
    loader: Loader,
    p: &LoadParams<'_>,
    forced: Option<Strategy>,
) -> Result<Loaded, KernelError> {
    let candidates: Vec<Strategy> = match forced {
        Some(s) => vec![s],
        None => Strategy::ALL.to_vec(),
    };
    let mut refused = Vec::new();
    let mut loader = configure(loader.0, p);
    for s in candidates {
        let mut ebpf = open_with(&mut loader, p)?;
        startup::step("object opened, maps created");
        let mut links = Links::new();
        let l = &mut links;
        let attached = attach_strategy(&mut ebpf, s, p, l);
        startup::step(match attached {
            Ok(_) => "strategy loaded and attached",
            Err(_) => "strategy refused",
        });
        match attached {
            Ok(victim_hook) => {
                let mut extras = vec![
                    ("cgroup_mkdir", attach_mkdir(&mut ebpf, p, l)),
                    ("victim_exit", attach_exit(&mut ebpf, p, l)),
                    ("cgroup_attach_task", attach_migrations(&mut ebpf, p, l)),
                ];
                let outcome = attach_kill_signal(&mut ebpf, s, p, l);
                // Only the tp_btf program stashes the SIGKILL's target that tells a kill
                // from a victim marked without one: with the classic program the flag would
                // read every kill as skipped.
                if outcome.is_ok()
                    && kill_signal_btf(s, p)
                    && matches!(s, Strategy::Fentry | Strategy::Kprobe)
                {
                    if let Err(e) = enable_kill_signal(&mut ebpf) {
                        tracing::warn!(error = %e, "cannot tell the kernel programs that signal_generate runs: a victim marked without a SIGKILL is reported as a kill");
                    }
                }
                extras.push(("kill_signal", outcome));
                startup::step("auxiliary programs loaded and attached");
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
    let mut loader = configure(Loader::new().0, p);
    for s in Strategy::ALL {
        let mut ebpf = open_with(&mut loader, p)?;
        out.push((s, attach_strategy(&mut ebpf, s, p, &mut Links::new())));
    }
    Ok(out)
}

/// Parses the object, creates its maps and hands the layout to the programs.
pub fn open(p: &LoadParams<'_>) -> Result<Ebpf, KernelError> {
    open_with(&mut configure(Loader::new().0, p), p)
}

/// `loader`, set up for `p`: it opens the object once per strategy tried.
fn configure<'p>(mut loader: EbpfLoader<'p>, p: &'p LoadParams<'_>) -> EbpfLoader<'p> {
    loader
        .btf(p.btf)
        .override_global(LAYOUT_GLOBAL, &p.layout, true)
        .override_global(ATTACH_GLOBAL, &p.attach, true)
        .map_max_entries(map::EVENTS, p.ring_bytes)
        .map_max_entries(map::CGROUP_EVENTS, p.ring_bytes);
    loader
}

fn open_with(loader: &mut EbpfLoader<'_>, p: &LoadParams<'_>) -> Result<Ebpf, KernelError> {
    if p.object.is_empty() {
        return Err(KernelError::NoObject);
    }
    loader.load(p.object).map_err(|e| match errno_of(&e) {
        Some(c) if c == nix::libc::EPERM || c == nix::libc::EACCES => {
            KernelError::NotPermitted(Box::new(e))
        }
        _ => KernelError::Load(Box::new(e)),
    })
}
