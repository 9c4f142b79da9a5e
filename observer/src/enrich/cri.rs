//! What the kubelet will read: a container's status through containerd's CRI plugin (the
//! `k8s-cri` API, on containerd's own socket), once the plugin has recorded its exit.

use std::{path::Path, time::Duration};

use k8s_cri::v1::{
    runtime_service_client::RuntimeServiceClient, ContainerState, ContainerStatusRequest,
};

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

/// Reads container `id`'s CRI status until it says EXITED, for at most `within`. `None`
/// when it never does in time, or when containerd serves no CRI (the error says which).
pub async fn exited(
    socket: &Path,
    id: &str,
    within: Duration,
) -> Result<Option<CriExit>, ContainerdError> {
    let client = Client::connect(socket).await?;
    let mut rs = RuntimeServiceClient::new(client.channel());
    let deadline = tokio::time::Instant::now() + within;
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
