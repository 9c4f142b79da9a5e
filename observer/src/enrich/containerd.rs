//! containerd's API, through the `containerd-client` crate: the container index kept current
//! from containerd's own event stream, and TaskOOM publication.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use containerd_client::{
    events::{
        ContainerCreate, ContainerDelete, ContainerUpdate, TaskCreate, TaskDelete, TaskExecAdded,
        TaskExecStarted, TaskExit, TaskOom, TaskStart,
    },
    services::v1::{
        containers_client::ContainersClient, events_client::EventsClient,
        namespaces_client::NamespacesClient, tasks_client::TasksClient, Container,
        GetContainerRequest, ListContainersRequest, ListNamespacesRequest, ListPidsRequest,
        ListTasksRequest, PublishRequest, SubscribeRequest,
    },
    tonic::{transport::Channel, Request},
};
use prost::Message;
use tracing::{debug, info, warn};

use crate::index::{memory_cgroup_of, ContainerIndex, ContainerInfo};

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
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(status)) => Err(ContainerdError::Call {
            call,
            status: Box::new(status),
        }),
        Err(_) => Err(ContainerdError::Timeout(call)),
    }
}

impl Client {
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
            Ok(Err(e)) => Err(err(crate::error::chain(&e))),
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
            let containers = timed(
                "containers.list",
                ContainersClient::new(self.channel.clone())
                    .list(ns_request(ListContainersRequest::default(), &ns)),
            )
            .await?
            .into_inner()
            .containers;
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
            for c in containers {
                let mut info = container_info(&ns, c);
                if let Some(pid) = pids.get(&info.id).copied().filter(|p| *p > 0) {
                    info.task_pid = Some(pid);
                    info.task_cgroup = proc_memory_cgroup(pid, memory_on_dfl);
                }
                out.push(info);
            }
        }
        Ok(out)
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
    pub async fn publish_oom(
        &self,
        namespace: &str,
        container_id: &str,
        ktime_ns: u64,
    ) -> Result<(), ContainerdError> {
        let event = prost_types::Any {
            type_url: "containerd.events.TaskOOM".into(),
            value: task_oom_bytes(container_id, ktime_ns),
        };
        let req = PublishRequest {
            topic: "/tasks/oom".into(),
            event: Some(event),
        };
        timed(
            "events.publish",
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

/// The memory cgroup a process lives in.
pub fn proc_memory_cgroup(pid: u32, memory_on_dfl: bool) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    memory_cgroup_of(&text, memory_on_dfl)
}

/// What the limit audit should look at again (see `audit`), sent by the index upkeep when
/// containerd reports a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditRequest {
    /// Every container (after (re)connecting and listing everything).
    All,
    /// One container: its task started, its spec changed, its processes changed.
    One {
        /// containerd namespace.
        namespace: String,
        /// Container id.
        id: String,
    },
    /// A container's task is gone: forget what was reported about it.
    Forget {
        /// containerd namespace.
        namespace: String,
        /// Container id.
        id: String,
    },
}

/// The index, kept current from containerd, shared with the event path.
pub struct Containerd {
    socket: PathBuf,
    memory_on_dfl: bool,
    audit: Mutex<Option<tokio::sync::mpsc::UnboundedSender<AuditRequest>>>,
    /// Containers by cgroup.
    pub index: Mutex<ContainerIndex>,
    connected: AtomicBool,
    last_refresh: Mutex<Option<Instant>>,
}

/// Reconnection backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A resolution miss refreshes the index at most this often.
const REFRESH_EVERY: Duration = Duration::from_millis(200);

fn decode<T: Message + Default>(any: &Option<prost_types::Any>) -> Option<T> {
    any.as_ref()
        .and_then(|a| T::decode(a.value.as_slice()).ok())
}

impl Containerd {
    /// A handle for the socket; nothing is connected until [`Containerd::watch`] runs.
    pub fn new(socket: PathBuf, memory_on_dfl: bool) -> Arc<Containerd> {
        Arc::new(Containerd {
            socket,
            memory_on_dfl,
            index: Mutex::new(ContainerIndex::default()),
            connected: AtomicBool::new(false),
            last_refresh: Mutex::new(None),
            audit: Mutex::new(None),
        })
    }

    /// Where audit requests go (the daemon's loop); without one, nothing is audited.
    pub fn set_audit_sink(&self, tx: tokio::sync::mpsc::UnboundedSender<AuditRequest>) {
        *self.audit.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
    }

    fn request_audit(&self, req: AuditRequest) {
        if let Some(tx) = self
            .audit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            // The receiver lives as long as the daemon; a send after it stopped is moot.
            let _ = tx.send(req);
        }
    }

    fn audit_one(&self, ns: &str, id: &str) {
        self.request_audit(AuditRequest::One {
            namespace: ns.to_string(),
            id: id.to_string(),
        });
    }

    /// The socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Whether the event stream is up.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ContainerIndex> {
        // A panic while holding the lock cannot leave the index half-written in a way that
        // matters more than losing it: keep going with what it holds.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps the index current forever: connect, subscribe, list everything, then follow
    /// the event stream; on any failure, back off and start over. Runs in kernel-only mode
    /// (with a warning) while containerd is unreachable.
    pub async fn watch(self: Arc<Self>) {
        let mut backoff = BACKOFF_MIN;
        let mut warned = false;
        loop {
            match self.follow().await {
                Ok(()) => {
                    backoff = BACKOFF_MIN;
                    warned = false;
                }
                Err(e) => {
                    if !warned {
                        warn!(error = %e, "containerd unreachable: kernel-only mode (events carry no container) until it is back");
                        warned = true;
                    } else {
                        debug!(error = %e, "containerd still unreachable");
                    }
                }
            }
            if self.connected.swap(false, Ordering::Relaxed) {
                warn!(socket = %self.socket.display(), "lost containerd's event stream; reconnecting");
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn follow(&self) -> Result<(), ContainerdError> {
        let client = Client::connect(&self.socket).await?;
        // Subscribe before listing, so nothing that happens in between is missed; the
        // subscription resolves only with the first event, so it runs beside the listing.
        let sub_client = client.clone();
        let subscription = tokio::spawn(async move { sub_client.subscribe().await });
        tokio::task::yield_now().await;
        let all = match client.snapshot(self.memory_on_dfl).await {
            Ok(all) => all,
            Err(e) => {
                subscription.abort();
                return Err(e);
            }
        };
        let n = all.len();
        {
            let mut idx = self.lock();
            for c in all {
                idx.upsert(c);
            }
        }
        self.connected.store(true, Ordering::Relaxed);
        info!(socket = %self.socket.display(), containers = n, "connected to containerd");
        self.request_audit(AuditRequest::All);
        let mut stream = match subscription.await {
            Ok(r) => r?,
            Err(e) => {
                return Err(ContainerdError::Connect {
                    socket: self.socket.display().to_string(),
                    reason: e.to_string(),
                })
            }
        };
        loop {
            match stream.message().await {
                Ok(Some(env)) => {
                    self.apply(&client, &env.namespace, &env.topic, &env.event)
                        .await
                }
                Ok(None) => return Ok(()),
                Err(status) => {
                    return Err(ContainerdError::Call {
                        call: "events stream",
                        status: Box::new(status),
                    })
                }
            }
        }
    }

    async fn apply(
        &self,
        client: &Client,
        ns: &str,
        topic: &str,
        event: &Option<prost_types::Any>,
    ) {
        match topic {
            "/containers/create" | "/containers/update" => {
                let id = match topic {
                    "/containers/create" => decode::<ContainerCreate>(event).map(|e| e.id),
                    _ => decode::<ContainerUpdate>(event).map(|e| e.id),
                };
                if let Some(id) = id {
                    self.fetch(client, ns, &id).await;
                    if topic == "/containers/update" {
                        self.audit_one(ns, &id);
                    }
                }
            }
            "/containers/delete" => {
                if let Some(e) = decode::<ContainerDelete>(event) {
                    self.lock().mark_deleted(ns, &e.id, Instant::now());
                }
            }
            "/tasks/create" | "/tasks/start" => {
                let (id, pid) = match topic {
                    "/tasks/create" => decode::<TaskCreate>(event).map(|e| (e.container_id, e.pid)),
                    _ => decode::<TaskStart>(event).map(|e| (e.container_id, e.pid)),
                }
                .unwrap_or_default();
                if id.is_empty() || pid == 0 {
                    return;
                }
                if self.lock().get(ns, &id).is_none() {
                    self.fetch(client, ns, &id).await;
                }
                let cg = proc_memory_cgroup(pid, self.memory_on_dfl);
                self.lock().set_task(ns, &id, pid, cg);
                self.audit_one(ns, &id);
            }
            "/tasks/exec-added" | "/tasks/exec-started" => {
                let id = match topic {
                    "/tasks/exec-added" => decode::<TaskExecAdded>(event).map(|e| e.container_id),
                    _ => decode::<TaskExecStarted>(event).map(|e| e.container_id),
                };
                if let Some(id) = id.filter(|i| !i.is_empty()) {
                    self.audit_one(ns, &id);
                }
            }
            "/tasks/exit" | "/tasks/delete" => {
                // The init process's exit ends the task (an exec's exit has its own id).
                let id = match topic {
                    "/tasks/exit" => decode::<TaskExit>(event)
                        .filter(|e| e.id.is_empty() || e.id == e.container_id)
                        .map(|e| e.container_id),
                    _ => decode::<TaskDelete>(event)
                        .filter(|e| e.id.is_empty() || e.id == e.container_id)
                        .map(|e| e.container_id),
                };
                if let Some(id) = id.filter(|i| !i.is_empty()) {
                    self.lock().clear_task(ns, &id);
                    self.request_audit(AuditRequest::Forget {
                        namespace: ns.to_string(),
                        id,
                    });
                }
            }
            _ => {}
        }
    }

    async fn fetch(&self, client: &Client, ns: &str, id: &str) {
        match client.container(ns, id).await {
            Ok(Some(c)) => self.lock().upsert(c),
            Ok(None) => {}
            Err(e) => debug!(namespace = ns, container = id, error = %e, "fetching container"),
        }
    }

    /// Re-reads everything from containerd, at most every [`REFRESH_EVERY`]: used when a
    /// kill's cgroup is not in the index (a container that lived for an instant).
    pub async fn refresh(&self) {
        {
            let mut last = self.last_refresh.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < REFRESH_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let Ok(client) = Client::connect(&self.socket).await else {
            return;
        };
        match client.snapshot(self.memory_on_dfl).await {
            Ok(all) => {
                let mut idx = self.lock();
                for c in all {
                    idx.upsert(c);
                }
            }
            Err(e) => debug!(error = %e, "refreshing the container index"),
        }
    }

    /// Attribution for a kill (see `resolve`); refreshes once on a miss while connected.
    pub async fn attribute(
        &self,
        victim_cgroup: Option<&str>,
        oom_cgroup: Option<&str>,
    ) -> Vec<ContainerInfo> {
        let found = crate::resolve::attribute(&self.lock(), victim_cgroup, oom_cgroup);
        if !found.is_empty() || victim_cgroup.is_none() || !self.connected() {
            return found;
        }
        self.refresh().await;
        crate::resolve::attribute(&self.lock(), victim_cgroup, oom_cgroup)
    }
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
