//! The daemon's third step: containerd's index (container names), watched, and the TaskOOM
//! publisher with its spool, delivered beside the loop.

use std::sync::Arc;

use tokio::sync::mpsc::{self, UnboundedReceiver};
use tracing::info;

use super::options::RunOptions;
use crate::{
    enrich::upkeep::{Containerd, IndexChange},
    host::cgroupfs::CgroupMounts,
    sinks::taskoom::{self, Publisher, SharedPublisher},
};

/// containerd, as the daemon talks to it.
pub struct ContainerdLink {
    /// Its index of containers.
    pub index: Arc<Containerd>,
    /// The TaskOOM publisher.
    pub publisher: SharedPublisher,
    /// The index's changes (relisted, containers created or gone).
    pub changes: UnboundedReceiver<IndexChange>,
}

/// Connects to containerd unless disabled (kernel-only mode).
pub async fn start(opts: &RunOptions, cgroups: &CgroupMounts) -> Option<ContainerdLink> {
    let Some(socket) = &opts.containerd else {
        info!("containerd disabled: kernel-only mode");
        return None;
    };
    let (change_tx, changes) = mpsc::unbounded_channel::<IndexChange>();
    let index = Containerd::new(socket.clone(), cgroups.memory_on_dfl());
    index.subscribe_changes(change_tx);
    tokio::spawn(index.clone().watch());
    let mut publisher = Publisher::new(socket, opts.state_dir.as_deref());
    publisher.warm_up().await;
    let wake = publisher.waker();
    let publisher = Arc::new(tokio::sync::Mutex::new(publisher));
    // The spool is delivered beside the loop: a containerd that hangs holds back no kill
    // for longer than the hand-off bound.
    tokio::spawn(taskoom::retry_task(publisher.clone(), wake));
    Some(ContainerdLink {
        index,
        publisher,
        changes,
    })
}
