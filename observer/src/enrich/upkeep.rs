//! The container index kept current from containerd's own event stream: subscribe, list
//! everything, follow; reconnect with backoff while containerd is away.

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use containerd_client::events::{
    ContainerCreate, ContainerDelete, ContainerUpdate, TaskCreate, TaskDelete, TaskExecAdded,
    TaskExecStarted, TaskExit, TaskStart,
};
use prost::Message;
use tokio::sync::mpsc::UnboundedSender;
use tracing::{debug, info, warn};

use super::{
    attribute::attribute,
    container::{ContainerInfo, ContainerKey},
    containerd::{Client, ContainerdError},
    index::ContainerIndex,
};
use crate::host::procfs::proc_memory_cgroup;

/// A change containerd reported that the limit audit may care about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexChange {
    /// Everything was listed again (after (re)connecting).
    Relisted,
    /// One container: its task started, its spec changed, its processes changed.
    Changed(ContainerKey),
    /// A container's task is gone.
    TaskGone(ContainerKey),
    /// A container's init exited (sent just before its [`IndexChange::TaskGone`]).
    Exited(Box<TaskExited>),
}

/// A container's init exited, as containerd's `/tasks/exit` says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskExited {
    /// The container, as the index knew it before the exit.
    pub container: ContainerInfo,
    /// The init's host pid.
    pub pid: u32,
    /// Its exit status (128 + the signal for a signal).
    pub exit_status: u32,
}

/// The index, kept current from containerd, shared with the event path.
pub struct Containerd {
    socket: PathBuf,
    memory_on_dfl: bool,
    changes: Mutex<Option<UnboundedSender<IndexChange>>>,
    /// Containers by cgroup.
    index: Mutex<ContainerIndex>,
    connected: AtomicBool,
    last_refresh: Mutex<Option<Instant>>,
}

/// Reconnection backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A resolution miss refreshes the index at most this often.
const REFRESH_EVERY: Duration = Duration::from_millis(200);
/// The longest a kill waits for that refresh: a containerd that does not answer must not
/// hold the kill's line back (its TaskOOM has its own bound, `taskoom::HANDOFF`).
const REFRESH_BUDGET: Duration = Duration::from_millis(500);

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
            changes: Mutex::new(None),
        })
    }

    /// Where index changes go (the daemon's loop, for the audit); without one, none is sent.
    pub fn subscribe_changes(&self, tx: UnboundedSender<IndexChange>) {
        *self.changes.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
    }

    fn notify(&self, change: IndexChange) {
        if let Some(tx) = self
            .changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            // The receiver lives as long as the daemon; a send after it stopped is moot.
            let _ = tx.send(change);
        }
    }

    fn changed(&self, ns: &str, id: &str) {
        self.notify(IndexChange::Changed(ContainerKey::new(ns, id)));
    }

    /// The socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Whether the event stream is up.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// One container, as the index knows it now.
    pub fn container(&self, key: &ContainerKey) -> Option<ContainerInfo> {
        self.lock().get(&key.namespace, &key.id).cloned()
    }

    /// Every container the index knows now.
    pub fn containers(&self) -> Vec<ContainerInfo> {
        self.lock().all().cloned().collect()
    }

    /// `f` of every container in the index, without copying the index: the forecast's
    /// targets on a node of 10,000 containers, whose full copy (labels, annotations) was
    /// its start-up's peak.
    pub fn filter_map<T>(&self, f: impl FnMut(&ContainerInfo) -> Option<T>) -> Vec<T> {
        self.lock().all().filter_map(f).collect()
    }

    /// The index's change count (see [`ContainerIndex::generation`]).
    pub fn generation(&self) -> u64 {
        self.lock().generation()
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
                // It was up: the next outage starts from the shortest wait again.
                backoff = BACKOFF_MIN;
                warned = false;
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
        // Authoritative: what was deleted while we were away is marked so, stale task pids
        // are dropped.
        self.lock().resync(all, Instant::now());
        // The listing (a message per container, its spec parsed) was freed: give it back.
        crate::host::heap::release_freed_memory();
        self.connected.store(true, Ordering::Relaxed);
        info!(socket = %self.socket.display(), containers = n, "connected to containerd");
        self.notify(IndexChange::Relisted);
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
                        self.changed(ns, &id);
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
                self.changed(ns, &id);
            }
            "/tasks/exec-added" | "/tasks/exec-started" => {
                let id = match topic {
                    "/tasks/exec-added" => decode::<TaskExecAdded>(event).map(|e| e.container_id),
                    _ => decode::<TaskExecStarted>(event).map(|e| e.container_id),
                };
                if let Some(id) = id.filter(|i| !i.is_empty()) {
                    self.changed(ns, &id);
                }
            }
            "/tasks/exit" => {
                let Some(e) = decode::<TaskExit>(event)
                    .filter(|e| !e.container_id.is_empty())
                    .filter(|e| e.id.is_empty() || e.id == e.container_id)
                else {
                    return;
                };
                let known = self.lock().get(ns, &e.container_id).cloned();
                // A pod's sandbox (pause) is no container the kubelet reports.
                if let Some(c) = known.filter(|c| c.container_type.as_deref() != Some("sandbox")) {
                    self.notify(IndexChange::Exited(Box::new(TaskExited {
                        container: c,
                        pid: e.pid,
                        exit_status: e.exit_status,
                    })));
                }
                self.lock().clear_task(ns, &e.container_id);
                self.notify(IndexChange::TaskGone(ContainerKey::new(
                    ns,
                    &e.container_id,
                )));
            }
            "/tasks/delete" => {
                // The init process's end ends the task (an exec's has its own id).
                let id = decode::<TaskDelete>(event)
                    .filter(|e| e.id.is_empty() || e.id == e.container_id)
                    .map(|e| e.container_id);
                if let Some(id) = id.filter(|i| !i.is_empty()) {
                    self.lock().clear_task(ns, &id);
                    self.notify(IndexChange::TaskGone(ContainerKey::new(ns, &id)));
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
            Ok(all) => self.lock().resync(all, Instant::now()),
            Err(e) => debug!(error = %e, "refreshing the container index"),
        }
    }

    /// Attribution from the index as it is now, without asking containerd (kills made while
    /// it was away, once it is back and listed).
    pub fn attribute_indexed(
        &self,
        victim_cgroup: Option<&str>,
        oom_cgroup: Option<&str>,
    ) -> Vec<ContainerInfo> {
        attribute(&self.lock(), victim_cgroup, oom_cgroup)
    }

    /// Attribution for a kill (see [`attribute`]); refreshes once on a miss while connected.
    pub async fn attribute(
        &self,
        victim_cgroup: Option<&str>,
        oom_cgroup: Option<&str>,
    ) -> Vec<ContainerInfo> {
        let found = attribute(&self.lock(), victim_cgroup, oom_cgroup);
        if !found.is_empty() || victim_cgroup.is_none() || !self.connected() {
            return found;
        }
        if tokio::time::timeout(REFRESH_BUDGET, self.refresh())
            .await
            .is_err()
        {
            debug!("containerd did not answer the refresh in time; attributing from the index");
        }
        attribute(&self.lock(), victim_cgroup, oom_cgroup)
    }
}
