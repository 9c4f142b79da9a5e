//! The daemon's first step: the node set up, the kernel programs loaded and attached (or
//! found pinned), their maps taken.

use tracing::{info, warn};

use super::{lost::LostFile, options::RunOptions};
use crate::{
    error::ObserverError,
    host::startup,
    kernel::{
        hooks::{self, LoadParams, Loaded, Outcome, Refusal, Strategy},
        maps::KernelMaps,
        pins::{self, Attached},
        setup::{self, Setup},
    },
};

/// The programs at work and what the daemon reads from them.
pub struct Kernel {
    /// What the node offers: cgroup mounts, BTF, tracefs.
    pub setup: Setup,
    /// The maps the daemon reads.
    pub maps: KernelMaps,
    /// The hook strategy in use.
    pub strategy: Strategy,
    /// The program that sees the victims.
    pub victim_hook: &'static str,
    /// With `--pin-dir`: what is pinned, and the rings of a replaced object.
    pub pinned: Option<Attached>,
    /// Without `--pin-dir`: the loaded object, kept for its links (they detach when it
    /// drops).
    pub loaded: Option<Loaded>,
    /// With `--pin-dir` and a state directory: the losses already reported.
    pub lost_file: Option<LostFile>,
}

/// Sets the node up, loads (or reopens the pinned) programs, and logs how they attached.
pub fn start(opts: &RunOptions, object: &[u8]) -> Result<Kernel, ObserverError> {
    // Before the node is read: see `hooks::Loader` (a pinned start may need no loader).
    let loader = opts.pin_dir.is_none().then(hooks::Loader::new);
    startup::step("aya's loader made");
    let mut setup = setup::prepare(opts.btf.as_deref(), opts.no_btf, true)?;
    if let Err(e) = &setup.tracefs {
        warn!(error = %e, "no tracefs: classic tracepoints (oom/mark_victim, cgroup_mkdir) cannot attach");
    }
    if let Some(loss) = setup.btf_loss() {
        warn!("{loss}");
    }
    let params = LoadParams {
        object,
        layout: setup.layout,
        btf: setup.aya_btf.as_ref(),
        ring_bytes: opts.ring_bytes,
        attach: setup.attach,
        keep_links: opts.pin_dir.is_some(),
    };
    let mut kernel = match &opts.pin_dir {
        None => {
            let mut loaded = hooks::load_with(loader.unwrap_or_default(), &params, opts.hook)?;
            let maps = KernelMaps::take(&mut loaded.ebpf)?;
            after_load(&mut setup, &loaded.refused, &loaded.extras);
            Kernel {
                maps,
                strategy: loaded.strategy,
                victim_hook: loaded.victim_hook,
                pinned: None,
                loaded: Some(loaded),
                lost_file: None,
                setup,
            }
        }
        Some(dir) => {
            let (maps, a) = pins::start(dir, &params, opts.hook)?;
            after_load(&mut setup, &pins::refused_of(&a), &pins::extras_of(&a));
            Kernel {
                maps,
                strategy: a.strategy,
                victim_hook: a.victim_hook,
                pinned: Some(a),
                loaded: None,
                lost_file: None,
                setup,
            }
        }
    };
    kernel.lost_file = match (&kernel.pinned, &opts.state_dir) {
        (Some(a), Some(state)) => Some(LostFile::new(state, &a.dir)),
        _ => None,
    };
    if let (Some(f), Some(a)) = (&kernel.lost_file, &kernel.pinned) {
        if a.loaded.is_none() {
            if let Some(seen) = f.read() {
                kernel.maps.set_lost_seen(seen);
            }
        }
    }
    Ok(kernel)
}

/// The programs are in: the kernel's BTF (tens of MiB parsed) is needed only to load, so it
/// is given back; then the log says how they attached.
fn after_load(
    setup: &mut Setup,
    refused: &[(Strategy, Refusal)],
    extras: &[(&'static str, Outcome)],
) {
    drop(setup.aya_btf.take());
    crate::host::heap::release_freed_memory();
    startup::step("kernel BTF released");
    for (s, why) in refused {
        info!(strategy = %s, reason = %why, "strategy refused");
    }
    for (name, outcome) in extras {
        match outcome {
            Ok(how) => info!(program = name, via = how, "attached"),
            Err(why) => warn!(program = name, reason = %why, "not attached"),
        }
    }
}
