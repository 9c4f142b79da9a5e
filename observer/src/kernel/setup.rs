//! What `run` and `check` both need before loading: tracefs, the cgroup layout, BTF and the
//! kernel layout computed from it.

use std::path::{Path, PathBuf};

use observer_common::{AttachLayout, KernelLayout};

use super::{
    btf::{self, BtfSource, KernelBtf},
    error::KernelError,
    tracefs,
};
use crate::host::cgroupfs::CgroupMounts;

/// The facts about this node that loading depends on.
pub struct Setup {
    /// The tracefs directory, if one is available.
    pub tracefs: Result<PathBuf, String>,
    /// Cgroup hierarchies and where memory lives.
    pub cgroups: CgroupMounts,
    /// Where BTF came from.
    pub btf_source: BtfSource,
    /// Why BTF is unavailable, when it is.
    pub btf_problem: Option<String>,
    /// BTF for aya (fentry and tp_btf attach targets).
    pub aya_btf: Option<aya::Btf>,
    /// Offsets handed to the kernel programs.
    pub layout: KernelLayout,
    /// Offsets for the process-migration program (the limit audit's kernel side).
    pub attach: AttachLayout,
    /// Whether the kernel has `oom_kill_process` as a traceable function in its BTF.
    pub oom_kill_process_in_btf: Option<bool>,
}

/// Gathers everything. A BTF file named explicitly must work; the kernel's own BTF missing
/// or broken only narrows what can be seen (and is said so).
pub fn prepare(
    btf_file: Option<&Path>,
    no_btf: bool,
    mount_tracefs: bool,
) -> Result<Setup, KernelError> {
    let tracefs = if mount_tracefs {
        tracefs::ensure_mounted().map_err(|e| e.to_string())
    } else {
        tracefs::find().ok_or_else(|| "not mounted".to_string())
    };
    let cgroups = CgroupMounts::discover().unwrap_or_default();
    let btf_source = if no_btf {
        BtfSource::None
    } else {
        BtfSource::select(btf_file)
    };
    // The layout's parse (btf_rs) and aya's are each tens of MiB for a kernel's BTF: one
    // after the other, never both at once, so the start-up peak is the larger of the two,
    // not their sum (it is the daemon's peak resident size: issue 13's 64 MiB bound).
    let kbtf = match btf_source.path() {
        None if no_btf => Err("disabled with --no-btf".to_string()),
        None => Err(format!("{} not present and no --btf given", btf::SYS_BTF)),
        Some(path) => match KernelBtf::open(path) {
            Ok(k) => Ok(k),
            Err(e) if btf_file.is_some() => return Err(e),
            Err(e) => Err(e.to_string()),
        },
    };
    let mut layout = btf::build(kbtf.as_ref().ok(), tracefs.as_deref().ok(), &cgroups);
    let mut oom_kill_process_in_btf = kbtf
        .as_ref()
        .ok()
        .map(|k| k.has_function("oom_kill_process"));
    let (aya_btf, btf_problem) = match kbtf {
        Ok(k) => {
            drop(k);
            match btf_source.aya_btf() {
                Ok(a) => (a, None),
                Err(e) if btf_file.is_some() => return Err(e),
                Err(e) => {
                    // As if there were no BTF at all: nothing half-known.
                    layout = btf::build(None, tracefs.as_deref().ok(), &cgroups);
                    oom_kill_process_in_btf = None;
                    (None, Some(e.to_string()))
                }
            }
        }
        Err(problem) => (None, Some(problem)),
    };
    let attach = btf::attach(tracefs.as_deref().ok(), &cgroups);
    Ok(Setup {
        attach,
        oom_kill_process_in_btf,
        tracefs,
        cgroups,
        btf_source,
        btf_problem,
        aya_btf,
        layout,
    })
}

impl Setup {
    /// What is lost without BTF, for the start-up warning and `check`.
    pub fn btf_loss(&self) -> Option<String> {
        self.btf_problem.as_ref().map(|p| {
            format!(
                "no BTF ({p}): fentry, kprobe and tp_btf cannot run; the classic tracepoint reports \
                 victim pid (and comm, uid where its record has them) but no cgroups, OOM cgroup or constraint"
            )
        })
    }
}
