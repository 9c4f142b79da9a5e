//! containerd's API, through the `containerd-client` crate: the calls the daemon makes
//! (list, get, pids, subscribe, publish) and the TaskOOM wire format.

use std::{collections::HashMap, path::Path, time::Duration};

use containerd_client::{
    events::TaskOom,
    services::v1::{
        containers_client::ContainersClient, events_client::EventsClient,
        namespaces_client::NamespacesClient, tasks_client::TasksClient, Container,
        GetContainerRequest, ListContainersRequest, ListNamespacesRequest, ListPidsRequest,
        ListTasksRequest, PublishRequest, SubscribeRequest,
    },
    tonic::{transport::Channel, Request},
};
use prost::Message;
use tracing::warn;

use super::container::ContainerInfo;
use crate::host::procfs::proc_memory_cgroup;

/// containerd's default socket.
pub const DEFAULT_SOCKET: &str = "/run/containerd/containerd.sock";

/// How long one containerd call may take before it counts as failed.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Protobuf field number of the marker our TaskOOM carries beside `container_id` (field 1).
/// Decoders that do not know it skip it, as protobuf requires; it lets subscribers tell our
/// TaskOOM from the runtime shim's.
pub const MARKER_FIELD: u32 = 15;
/// The marker's text starts with this.
pub const MARKER_PREFIX: &str = "oom-observer";

/// What can go wrong talking to containerd.
#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    /// The socket could not be reached.
    #[error("cannot connect to containerd at {socket}: {reason}")]
    Connect {
        /// The socket path.
        socket: String,
        /// Why.
        reason: String,
    },
    /// A call failed.
    #[error("containerd {call} failed: {status}")]
    Call {
        /// Which call.
        call: &'static str,
        /// The gRPC status.
        status: Box<containerd_client::tonic::Status>,
    },
    /// A call took longer than [`CALL_TIMEOUT`].
    #[error("containerd {0} timed out")]
    Timeout(&'static str),
}

/// A connection to one containerd.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
}

fn ns_request<T>(msg: T, namespace: &str) -> Request<T> {
    let mut req = Request::new(msg);
    if let Ok(v) = namespace.parse() {
        req.metadata_mut().insert("containerd-namespace", v);
    }
    req
}

async fn timed<T, F>(call: &'static str, f: F) -> Result<T, ContainerdError>
where
    F: std::future::Future<Output = Result<T, containerd_client::tonic::Status>>,
{
    timed_for(call, CALL_TIMEOUT, f).await
}

async fn timed_for<T, F>(call: &'static str, limit: Duration, f: F) -> Result<T, ContainerdError>
where
    F: std::future::Future<Output = Result<T, containerd_client::tonic::Status>>,
{
    match tokio::time::timeout(limit, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(status)) => Err(ContainerdError::Call {
            call,
            status: Box::new(status),
        }),
        Err(_) => Err(ContainerdError::Timeout(call)),
    }
}

impl Client {
    /// The connection, for the CRI's client on the same socket.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Connects to the socket.
    pub async fn connect(socket: &Path) -> Result<Client, ContainerdError> {
        let err = |reason: String| ContainerdError::Connect {
            socket: socket.display().to_string(),
            reason,
        };
        if !socket.exists() {
            return Err(err("no such socket".into()));
        }
        match tokio::time::timeout(CALL_TIMEOUT, containerd_client::connect(socket)).await {
            Ok(Ok(channel)) => Ok(Client { channel }),
            Ok(Err(e)) => Err(err(crate::cause::chain(&e))),
            Err(_) => Err(err("timed out".into())),
        }
    }

    /// Every namespace's containers, with their tasks' cgroups.
    pub async fn snapshot(
        &self,
        memory_on_dfl: bool,
    ) -> Result<Vec<ContainerInfo>, ContainerdError> {
        let nss = timed(
            "namespaces.list",
            NamespacesClient::new(self.channel.clone()).list(ListNamespacesRequest::default()),
        )
        .await?
        .into_inner()
        .namespaces;
        let mut out = Vec::new();
        for ns in nss {
            let ns = ns.name;
            // Tasks first, so each container is reduced to what the index keeps as it
            // arrives (its spec is not held for the whole listing). A task started in
            // between reaches the index through the event stream, subscribed before this.
            let tasks = timed(
                "tasks.list",
                TasksClient::new(self.channel.clone())
                    .list(ns_request(ListTasksRequest::default(), &ns)),
            )
            .await?
            .into_inner()
            .tasks;
            // A stopped task's pid may already belong to another process.
            let stopped = containerd_client::types::v1::Status::Stopped as i32;
            let pids: HashMap<String, u32> = tasks
                .into_iter()
                .filter(|t| t.status != stopped)
                .map(|t| {
                    (
                        if t.container_id.is_empty() {
                            t.id
                        } else {
                            t.container_id
                        },
                        t.pid,
                    )
                })
                .collect();
            self.containers_of(&ns, |c| {
                let mut info = container_info(&ns, c);
                if let Some(pid) = pids.get(&info.id).copied().filter(|p| *p > 0) {
                    info.task_pid = Some(pid);
                    info.task_cgroup = proc_memory_cgroup(pid, memory_on_dfl);
                }
                out.push(info);
            })
            .await?;
        }
        Ok(out)
    }

    /// Every container of one namespace, streamed one message per container
    /// (`ListStream`) and reduced by `each` as it arrives. A node's full listing in one
    /// reply (about 5 KiB of spec per container) passes containerd's 16 MiB send limit and
    /// the client's 4 MiB receive limit from a few thousand containers on, and would sit in
    /// memory whole. Each message gets its own [`CALL_TIMEOUT`]: a long listing that moves
    /// is not cut short, a containerd that stops answering is noticed as soon as one call.
    async fn containers_of(
        &self,
        ns: &str,
        mut each: impl FnMut(Container),
    ) -> Result<(), ContainerdError> {
        let call = "containers.list_stream";
        let mut stream = timed(
            call,
            ContainersClient::new(self.channel.clone())
                .list_stream(ns_request(ListContainersRequest::default(), ns)),
        )
        .await?
        .into_inner();
        while let Some(m) = timed(call, stream.message()).await? {
            if let Some(c) = m.container {
                each(c);
            }
        }
        Ok(())
    }

    /// One container.
    pub async fn container(
        &self,
        namespace: &str,
        id: &str,
    ) -> Result<Option<ContainerInfo>, ContainerdError> {
        let resp = timed(
            "containers.get",
            ContainersClient::new(self.channel.clone()).get(ns_request(
                GetContainerRequest { id: id.to_string() },
                namespace,
            )),
        )
        .await;
        match resp {
            Ok(r) => Ok(r
                .into_inner()
                .container
                .map(|c| container_info(namespace, c))),
            Err(ContainerdError::Call { status, .. })
                if status.code() == containerd_client::tonic::Code::NotFound =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The host pids of a task's processes (under a sandboxed runtime these are the
    /// sandbox's own pids, not host pids: callers use the task's pid there instead).
    pub async fn list_pids(&self, namespace: &str, id: &str) -> Result<Vec<u32>, ContainerdError> {
        let resp = timed(
            "tasks.list_pids",
            TasksClient::new(self.channel.clone()).list_pids(ns_request(
                ListPidsRequest {
                    container_id: id.to_string(),
                },
                namespace,
            )),
        )
        .await?;
        Ok(resp.into_inner().processes.iter().map(|p| p.pid).collect())
    }

    /// Subscribes to every namespace's events. containerd sends the stream's headers only
    /// with its first event, so this resolves when something happens: no timeout here.
    pub async fn subscribe(
        &self,
    ) -> Result<
        containerd_client::tonic::Streaming<containerd_client::types::Envelope>,
        ContainerdError,
    > {
        EventsClient::new(self.channel.clone())
            .subscribe(SubscribeRequest::default())
            .await
            .map(|r| r.into_inner())
            .map_err(|status| ContainerdError::Call {
                call: "events.subscribe",
                status: Box::new(status),
            })
    }

    /// Publishes `/tasks/oom` for a container, carrying our marker.
    /// Publishes a TaskOOM, waiting at most `limit` for containerd's answer: the caller
    /// bounds its own wait, and a longer `limit` lets a late answer still count (a request
    /// cut off here may be taken by containerd anyway, and then sent again).
    pub async fn publish_oom(
        &self,
        namespace: &str,
        container_id: &str,
        ktime_ns: u64,
        limit: Duration,
    ) -> Result<(), ContainerdError> {
        let event = prost_types::Any {
            type_url: "containerd.events.TaskOOM".into(),
            value: task_oom_bytes(container_id, ktime_ns),
        };
        let req = PublishRequest {
            topic: "/tasks/oom".into(),
            event: Some(event),
        };
        timed_for(
            "events.publish",
            limit,
            EventsClient::new(self.channel.clone()).publish(ns_request(req, namespace)),
        )
        .await
        .map(|_| ())
    }
}

/// `TaskOOM{container_id}` plus our marker field.
pub fn task_oom_bytes(container_id: &str, ktime_ns: u64) -> Vec<u8> {
    let mut buf = TaskOom {
        container_id: container_id.to_string(),
    }
    .encode_to_vec();
    prost::encoding::string::encode(
        MARKER_FIELD,
        &format!("{MARKER_PREFIX} ktime={ktime_ns}"),
        &mut buf,
    );
    buf
}

/// Reads a string field from raw protobuf bytes (fields the generated types do not know,
/// such as our marker or the runc shim options' `binary_name`).
pub fn proto_string_field(mut buf: &[u8], field: u32) -> Option<String> {
    use prost::encoding::{decode_key, decode_varint, WireType};
    while !buf.is_empty() {
        let (tag, wire) = decode_key(&mut buf).ok()?;
        match wire {
            WireType::Varint => {
                decode_varint(&mut buf).ok()?;
            }
            WireType::SixtyFourBit => buf = buf.get(8..)?,
            WireType::ThirtyTwoBit => buf = buf.get(4..)?,
            WireType::LengthDelimited => {
                let len = decode_varint(&mut buf).ok()? as usize;
                let (val, rest) = (buf.get(..len)?, buf.get(len..)?);
                if tag == field {
                    return String::from_utf8(val.to_vec()).ok();
                }
                buf = rest;
            }
            _ => return None,
        }
    }
    None
}

/// Field of `containerd.runc.v1.Options` naming the runtime binary.
const RUNC_OPTIONS_BINARY_NAME: u32 = 6;

fn container_info(namespace: &str, c: Container) -> ContainerInfo {
    let mut info = ContainerInfo {
        namespace: namespace.to_string(),
        id: c.id,
        ..Default::default()
    };
    if let Some(rt) = c.runtime {
        info.runtime = rt.name;
        info.runtime_binary = rt
            .options
            .as_ref()
            .and_then(|o| proto_string_field(&o.value, RUNC_OPTIONS_BINARY_NAME))
            .filter(|s| !s.is_empty());
    }
    info.apply_labels(&c.labels);
    match c
        .spec
        .as_ref()
        .map(|s| serde_json::from_slice::<serde_json::Value>(&s.value))
    {
        Some(Ok(spec)) => info.apply_spec(&spec),
        Some(Err(e)) => {
            warn!(namespace, container = %info.id, error = %e, "container spec is not valid JSON; its cgroup is taken from its task only")
        }
        None => {}
    }
    if let Some(p) = &info.cgroups_path {
        if info.spec_cgroup.is_none() && (p.contains(':') || p.contains("..")) {
            warn!(namespace, container = %info.id, cgroups_path = %p, "malformed cgroupsPath; its cgroup is taken from its task only");
        }
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_oom_carries_container_id_and_a_skippable_marker() {
        let b = task_oom_bytes("abc", 42);
        let decoded = TaskOom::decode(b.as_slice()).unwrap();
        assert_eq!(decoded.container_id, "abc", "standard decoders see the id");
        assert_eq!(
            proto_string_field(&b, MARKER_FIELD).as_deref(),
            Some("oom-observer ktime=42")
        );
        assert_eq!(proto_string_field(&b, 1).as_deref(), Some("abc"));
        assert_eq!(proto_string_field(&b, 9), None);
    }

    #[test]
    fn proto_scanner_survives_garbage() {
        assert_eq!(proto_string_field(&[0xff, 0xff, 0xff], 1), None);
        assert_eq!(
            proto_string_field(&[0x0a, 0x10, b'a'], 1),
            None,
            "length past the end"
        );
        assert_eq!(proto_string_field(&[], 1), None);
    }
}
