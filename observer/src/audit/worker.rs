//! The audit's observation, off the event path: reading pids and limits takes containerd
//! calls, so a kill arriving meanwhile is never held behind an audit.

use std::path::PathBuf;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use super::{assess::Observed, memory_fs::MemoryFs, observe::observe, AuditError};
use crate::enrich::{container::ContainerInfo, containerd::Client};

/// A container and what was read about it (or why nothing could be).
pub type Observation = (ContainerInfo, Result<Option<Observed>, AuditError>);

/// Observes audited containers one after another, in the order they were asked for, and
/// hands the results back to the main loop.
pub async fn run(
    socket: PathBuf,
    mem: MemoryFs,
    mut jobs: UnboundedReceiver<ContainerInfo>,
    results: UnboundedSender<Observation>,
) {
    let mut client: Option<Client> = None;
    while let Some(c) = jobs.recv().await {
        if client.is_none() {
            client = Client::connect(&socket).await.ok();
        }
        let r = observe(client.as_ref(), &c, &mem).await;
        if matches!(r, Err(AuditError::Containerd(_))) {
            // Reconnect next time.
            client = None;
        }
        if results.send((c, r)).is_err() {
            return;
        }
    }
}
