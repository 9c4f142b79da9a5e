//! Unenforced memory limits: for every running container, compare the memory limit it
//! declared with the limit the kernel actually enforces on the cgroup its processes live in.
//!
//! The incident this exists for: gVisor pods on cgroup v2 with systemd, `runsc` without its
//! systemd driver. runsc took the systemd-form cgroupsPath literally and made the sandbox's
//! cgroup under `system.slice`, not under the pod slice holding the 256 MiB limit; no
//! ancestor limited it, runsc sized the sandbox at the host's 503 GiB, and one pod ate the
//! node without a single OOM kill.
//!
//! Pure where it can be: [`assess`] decides from what was observed, [`state`] keeps the
//! per-container state (one event per state change, a clearing event when fixed) and
//! [`finding`] shapes the events. IO sits at the edges: [`memory_fs`] reads cgroupfs,
//! [`observe`] reads `/proc` and asks containerd for the task's pids, [`limitwatch`] waits
//! for limits written by hand. In the daemon, [`driver`] decides what to audit when and
//! runs the observation on [`worker`], off the event path.

use std::io;

use crate::enrich::containerd::ContainerdError;

pub mod assess;
pub mod driver;
pub mod finding;
pub mod limitwatch;
pub mod memory_fs;
pub mod observe;
pub mod state;
pub mod worker;

/// Why an audit could not finish. None of these is a finding: an audit that cannot read
/// what it needs says nothing about the container.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The cgroup went away while it was read (the container stopped mid-audit).
    #[error("cgroup {0} is gone")]
    Gone(String),
    /// A control file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A control file held something that is not a limit.
    #[error("{path} holds {text:?}, not a limit")]
    Parse {
        /// The file.
        path: String,
        /// What it held.
        text: String,
    },
    /// No hierarchy has the memory controller.
    #[error("no cgroup hierarchy with the memory controller is mounted")]
    NoHierarchy,
    /// containerd failed.
    #[error(transparent)]
    Containerd(#[from] ContainerdError),
}
