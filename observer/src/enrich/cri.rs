//! What the kubelet will read: a container's status through containerd's CRI plugin (the
//! `k8s-cri` API, on containerd's own socket), once the plugin has recorded its exit.

use std::{path::PathBuf, time::Duration};

use containerd_client::tonic::{transport::Channel, Code};
use k8s_cri::v1::{
    runtime_service_client::RuntimeServiceClient, ContainerState, ContainerStatusRequest,
};
use tokio::sync::Mutex;

use super::containerd::{Client, ContainerdError, CALL_TIMEOUT};

/// How often the status is read until it says EXITED.
const POLL: Duration = Duration::from_millis(50);

/// A container's end as the CRI reports it to the kubelet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriExit {
    /// `OOMKilled`, `Error`, `Completed`, ...
    pub reason: String,
    /// The exit code.
    pub exit_code: i32,
}

/// One connection to the CRI, shared by every container's end (each is read on a task of
/// its own, all at once when a pod's containers end together), made at the first read.
/// tonic's channel dials the socket again by itself when containerd restarts; a read that
/// still fails for want of a connection (a timeout, a broken transport) drops it, and the
/// next read connects anew.
pub struct Cri {
    socket: PathBuf,
    /// The connection; `None` until the first read, and after a failed one.
    held: Mutex<Option<Channel>>,
}

impl Cri {
    /// A client for the CRI on containerd's `socket`; it connects at its first read.
    pub fn new(socket: PathBuf) -> Self {
        Cri {
            socket,
            held: Mutex::new(None),
        }
    }

    /// The connection, made now when none is held (a second read at the same moment waits
    /// for the first one's rather than making its own).
    async fn channel(&self) -> Result<Channel, ContainerdError> {
        let mut held = self.held.lock().await;
        if let Some(c) = held.as_ref() {
            return Ok(c.clone());
        }
        let c = Client::connect(&self.socket).await?.channel();
        *held = Some(c.clone());
        Ok(c)
    }

    /// Reads container `id`'s CRI status until it says EXITED, for at most `within`. `None`
    /// when it never does in time; an error when containerd serves no CRI or cannot be
    /// reached.
    pub async fn exited(
        &self,
        id: &str,
        within: Duration,
    ) -> Result<Option<CriExit>, ContainerdError> {
        let deadline = tokio::time::Instant::now() + within;
        let r = poll_exited(self.channel().await?, id, deadline).await;
        if r.as_ref().is_err_and(lost_connection) {
            *self.held.lock().await = None;
        }
        r
    }
}

/// Whether `e` says the connection failed, not the CRI: a timeout, or a call that never
/// reached the server (tonic reports a broken transport as `Unavailable` or `Unknown`).
fn lost_connection(e: &ContainerdError) -> bool {
    match e {
        ContainerdError::Timeout(_) => true,
        ContainerdError::Connect { .. } => false,
        ContainerdError::Call { status, .. } => {
            matches!(
                status.code(),
                Code::Unavailable | Code::Unknown | Code::Cancelled
            )
        }
    }
}

/// Reads `id`'s status on `channel` until it says EXITED or `deadline` passes.
async fn poll_exited(
    channel: Channel,
    id: &str,
    deadline: tokio::time::Instant,
) -> Result<Option<CriExit>, ContainerdError> {
    let mut rs = RuntimeServiceClient::new(channel);
    loop {
        let req = ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        };
        let status = match tokio::time::timeout(CALL_TIMEOUT, rs.container_status(req)).await {
            Ok(Ok(r)) => r.into_inner().status,
            Ok(Err(status)) => {
                return Err(ContainerdError::Call {
                    call: "cri.ContainerStatus",
                    status: Box::new(status),
                })
            }
            Err(_) => return Err(ContainerdError::Timeout("cri.ContainerStatus")),
        };
        if let Some(s) = status.filter(|s| s.state == ContainerState::ContainerExited as i32) {
            return Ok(Some(CriExit {
                reason: s.reason,
                exit_code: s.exit_code,
            }));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use containerd_client::tonic::Status;

    use super::*;

    #[test]
    fn only_a_failed_connection_drops_it() {
        let call = |code| ContainerdError::Call {
            call: "cri.ContainerStatus",
            status: Box::new(Status::new(code, "")),
        };
        assert!(lost_connection(&call(Code::Unavailable)));
        assert!(lost_connection(&ContainerdError::Timeout(
            "cri.ContainerStatus"
        )));
        // The server answered: the connection is fine (no CRI plugin, no such container).
        assert!(!lost_connection(&call(Code::Unimplemented)));
        assert!(!lost_connection(&call(Code::NotFound)));
    }
}
