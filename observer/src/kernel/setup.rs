//! What `run` and `check` both need before loading: tracefs, the cgroup layout, BTF and the
//! kernel layout computed from it.

use std::path::{Path, PathBuf};

use observer_common::{AttachLayout, KernelLayout};

use super::{
    btf::{self, BtfSource, KernelBtf},
    error::KernelError,
    tracefs,
};
use crate::host::{cgroupfs::CgroupMounts, startup};

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
    startup::step("tracefs and cgroup mounts");
    let btf_source = if no_btf {
        BtfSource::None
    } else {
        BtfSource::select(btf_file)
    };
    // One mapping of the kernel's BTF serves the layout and the loader (see `btf::loader`);
    // it is unmapped on return.
    let kbtf = match btf_source.path() {
        None if no_btf => Err("disabled with --no-btf".to_string()),
        None => Err(format!("{} not present and no --btf given", btf::SYS_BTF)),
        Some(path) => match KernelBtf::open(path) {
            Ok(k) => Ok(k),
            Err(e) if btf_file.is_some() => return Err(e),
            Err(e) => Err(e.to_string()),
        },
    };
    startup::step("kernel BTF mapped");
    let mut layout = btf::build(kbtf.as_ref().ok(), tracefs.as_deref().ok(), &cgroups);
    let mut oom_kill_process_in_btf = kbtf
        .as_ref()
        .ok()
        .map(|k| k.has_function("oom_kill_process"));
    startup::step("kernel layout resolved");
    let (aya_btf, btf_problem) = match kbtf {
        Ok(k) => match btf::loader_btf(&k) {
            Ok(a) => (Some(a), None),
            Err(e) => {
                let e = KernelError::Btf {
                    path: btf_source.path().map(Path::to_path_buf).unwrap_or_default(),
                    source: Box::new(e),
                };
                if btf_file.is_some() {
                    return Err(e);
                }
                // As if there were no BTF at all: nothing half-known.
                layout = btf::build(None, tracefs.as_deref().ok(), &cgroups);
                oom_kill_process_in_btf = None;
                (None, Some(e.to_string()))
            }
        },
        Err(problem) => (None, Some(problem)),
    };
    let attach = btf::attach(tracefs.as_deref().ok(), &cgroups);
    startup::step("loader BTF made");
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
