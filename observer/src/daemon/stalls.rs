//! The cgroup v1 `oom_kill_disable` stall watcher: started beside the processor, its
//! records read by the loop like the kernel's own.

use observer_common::OomKillRecord;
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::warn;

use crate::host::{
    cgroupfs::CgroupMounts,
    oom_control::{self, StallWatch},
};

/// Starts the `memory.oom_control` watcher where the memory controller is on cgroup v1;
/// a watcher that cannot start is a warning, not a failed start.
pub fn start(cgroups: &CgroupMounts) -> Option<(StallWatch, UnboundedReceiver<OomKillRecord>)> {
    let memory = oom_control::hierarchy(cgroups.memory_v1.as_ref()).ok()?;
    match oom_control::start(memory) {
        Ok(started) => Some(started),
        Err(e) => {
            warn!(error = %e, "memcg OOM stalls (oom_kill_disable) are not watched");
            None
        }
    }
}

/// The next stall the watcher saw; forever without it.
pub async fn next(rx: &mut Option<UnboundedReceiver<OomKillRecord>>) -> Option<OomKillRecord> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
