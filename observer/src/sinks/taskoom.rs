//! The containerd sink: one `/tasks/oom` per OOM-killed container per kill, in order, never
//! with an empty id, and never lost while containerd is down (spooled, retried with backoff).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use tracing::{info, warn};

use super::spool::{Pending, Spool};
use crate::enrich::{container::ContainerKey, containerd::Client};

/// Victims of one container within this window are one kill: a sandbox or a
/// `memory.oom.group` kill takes several processes at once, and gets one TaskOOM.
pub const SAME_KILL: Duration = Duration::from_secs(1);

/// How long a TaskOOM handed over for an OOM killer invocation (published at its decision)
/// answers for that invocation's kills of the same container: the kernel prints its whole
/// report between the decision and the kill, which on a slow serial console can take
/// longer than [`SAME_KILL`].
pub const SAME_INCIDENT: Duration = Duration::from_secs(120);

/// A container's last TaskOOM: when, whether containerd took it, for which invocation.
#[derive(Debug, Clone, Copy)]
struct Recent {
    at: Instant,
    delivered: bool,
    incident: Option<u64>,
}

impl Recent {
    /// Whether a kill at `now` of invocation `incident` is the same kill.
    fn covers(&self, now: Instant, incident: Option<u64>) -> bool {
        let age = now.duration_since(self.at);
        age < SAME_KILL || (incident.is_some() && incident == self.incident && age < SAME_INCIDENT)
    }
}

const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The longest a kill's TaskOOM may hold its JSON line back, counted from the kill itself:
/// naming the container, connecting and publishing together (see [`handoff_deadline`]). A
/// containerd that does not answer in time (hung, stopped, overloaded) gets the TaskOOM
/// through the spool, and the line is written with `published: false`.
pub const HANDOFF: Duration = Duration::from_secs(2);

/// Even a kill read late gets this long to reach containerd directly.
const MIN_ATTEMPT: Duration = Duration::from_millis(100);

/// When a kill's hand-off must be over: [`HANDOFF`] after the kill (`since_kill` ago), so
/// kills queued behind a slow one do not each add their own wait; at least [`MIN_ATTEMPT`]
/// from now.
pub fn handoff_deadline(since_kill: Duration) -> tokio::time::Instant {
    tokio::time::Instant::now() + HANDOFF.saturating_sub(since_kill).max(MIN_ATTEMPT)
}

/// How long a publish that ran past its hand-off deadline is still awaited before its entry
/// is sent again. containerd may have read it already (a stopped containerd reads it when it
/// runs again): waiting for its answer is what keeps that TaskOOM from arriving twice.
const LATE_ANSWER: Duration = Duration::from_secs(30);

/// A publish still in containerd's hands after its deadline: its entry waits at the front
/// of the spool, and is sent again only if this attempt fails.
type LatePublish = tokio::task::JoinHandle<(Option<Client>, bool)>;

/// How one hand-off ended.
enum Sent {
    /// containerd took it; the client to keep.
    Delivered(Option<Client>),
    /// containerd refused it or could not be reached.
    Failed,
    /// Not answered by the deadline, and still going.
    Late(LatePublish),
}

/// Publishes TaskOOM to containerd.
pub struct Publisher {
    socket: PathBuf,
    client: Option<Client>,
    spool: Spool,
    recent: HashMap<ContainerKey, Recent>,
    retry_at: Option<Instant>,
    backoff: Duration,
    delivered: u64,
    spooled: u64,
    /// The last attempt failed: new kills go straight to the spool (one hand-off delay per
    /// outage, not one per kill) until a retry gets through.
    down: bool,
    /// The spool's front entry, if its publish is still going (see [`LatePublish`]).
    late: Option<LatePublish>,
    wake: std::sync::Arc<tokio::sync::Notify>,
}

/// The publisher shared by the kill path and its retry task: each holds it only for one
/// bounded step, so neither waits long for the other.
pub type SharedPublisher = std::sync::Arc<tokio::sync::Mutex<Publisher>>;

/// Delivers the spool in the background: wakes when a retry is due (or `wake` is
/// notified), delivers entries one lock at a time, and never blocks the event loop.
pub async fn retry_task(p: SharedPublisher, wake: std::sync::Arc<tokio::sync::Notify>) {
    loop {
        let at = p.lock().await.retry_at();
        match at {
            Some(t) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(t.into()) => {}
                    _ = wake.notified() => continue,
                }
            }
            None => {
                wake.notified().await;
                continue;
            }
        }
        loop {
            // A late publish of the front entry first: if containerd takes it after all,
            // the entry is delivered and is not sent a second time.
            let late = p.lock().await.late.take();
            if let Some(mut h) = late {
                match tokio::time::timeout(LATE_ANSWER, &mut h).await {
                    Ok(Ok((client, true))) => {
                        let mut g = p.lock().await;
                        if g.client.is_none() {
                            g.client = client;
                        }
                        info!("containerd took a TaskOOM after its deadline; not sent again");
                        g.acknowledge_front();
                        continue;
                    }
                    Ok(_) => {}
                    Err(_) => {
                        h.abort();
                        warn!(
                            waited_s = LATE_ANSWER.as_secs(),
                            "a TaskOOM publish got no answer; sending it again (containerd may \
                             still take the first copy: same ktime marker)"
                        );
                    }
                }
            }
            // The network call runs without the lock: a kill that arrives meanwhile is
            // spooled behind this entry at once instead of waiting for containerd.
            let (entry, client, socket) = {
                let mut g = p.lock().await;
                match g.spool.front().cloned() {
                    Some(e) => (e, g.client.take(), g.socket.clone()),
                    None => {
                        g.retry_done();
                        break;
                    }
                }
            };
            let deadline = tokio::time::Instant::now() + HANDOFF;
            let sent = publish_once(client, &socket, &entry, deadline).await;
            let mut g = p.lock().await;
            match sent {
                Sent::Delivered(client) => {
                    if g.client.is_none() {
                        g.client = client;
                    }
                    g.acknowledge_front();
                }
                Sent::Failed => {
                    g.retry_failed();
                    break;
                }
                Sent::Late(h) => {
                    g.late = Some(h);
                    g.retry_failed();
                    break;
                }
            }
        }
    }
}

impl Publisher {
    /// A publisher for `socket`, spooling under `state_dir` (memory only when `None`, or
    /// when the directory is unusable: [`Spool::open`] says so once).
    pub fn new(socket: &Path, state_dir: Option<&Path>) -> Publisher {
        let spool = Spool::open(state_dir);
        let mut p = Publisher {
            socket: socket.to_path_buf(),
            client: None,
            spool,
            recent: HashMap::new(),
            retry_at: None,
            backoff: RETRY_MIN,
            delivered: 0,
            spooled: 0,
            down: false,
            late: None,
            wake: Default::default(),
        };
        if !p.spool.is_empty() {
            info!(
                pending = p.spool.len(),
                "TaskOOMs left undelivered by a previous run will be published first"
            );
            p.retry_at = Some(Instant::now());
        }
        p
    }

    /// Connects ahead of the first kill, so that one does not pay for the connection.
    /// Best effort: a failure here is retried at publication.
    pub async fn warm_up(&mut self) {
        if self.client.is_none() {
            self.client = tokio::time::timeout(HANDOFF, Client::connect(&self.socket))
                .await
                .ok()
                .and_then(Result::ok);
        }
    }

    /// TaskOOMs acknowledged by containerd so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// TaskOOMs that had to wait in the spool so far.
    pub fn spooled(&self) -> u64 {
        self.spooled
    }

    /// TaskOOMs dropped from a full spool so far.
    pub fn dropped(&self) -> u64 {
        self.spool.dropped()
    }

    /// TaskOOMs waiting in the spool.
    pub fn pending(&self) -> usize {
        self.spool.len()
    }

    /// When the next retry of the spool is due, if anything waits.
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Hands one kill of a container to containerd by `deadline`, else to the spool.
    /// Returns whether containerd has a TaskOOM for this kill (published now, or moments ago
    /// for the same kill: within [`SAME_KILL`], or for the same OOM killer invocation
    /// `incident`, whose decision may have published it).
    pub async fn oom(
        &mut self,
        namespace: &str,
        container_id: &str,
        ktime_ns: u64,
        incident: Option<u64>,
        deadline: tokio::time::Instant,
    ) -> bool {
        if container_id.is_empty() {
            // containerd would drop it, and so do we.
            return false;
        }
        let key = ContainerKey::new(namespace, container_id);
        let now = Instant::now();
        self.recent.retain(|_, r| {
            let age = now.duration_since(r.at);
            age < SAME_KILL || (r.incident.is_some() && age < SAME_INCIDENT)
        });
        if let Some(r) = self.recent.get(&key) {
            if r.covers(now, incident) {
                return r.delivered;
            }
        }
        let recent = |delivered| Recent {
            at: now,
            delivered,
            incident,
        };
        let p = Pending {
            namespace: key.namespace.clone(),
            container_id: key.id.clone(),
            ktime_ns,
        };
        // Order: nothing new overtakes what is already waiting (the retry task delivers
        // it behind the rest); and while containerd is known not to answer, nothing waits
        // for it.
        if self.spool.is_empty() && !self.down {
            match publish_once(self.client.take(), &self.socket, &p, deadline).await {
                Sent::Delivered(client) => {
                    self.client = client;
                    self.delivered += 1;
                    self.recent.insert(key, recent(true));
                    return true;
                }
                Sent::Failed => {}
                // The spool is empty: this entry becomes its front.
                Sent::Late(h) => self.late = Some(h),
            }
            self.down = true;
        }
        self.spooled += 1;
        // Queued now; its thread writes it (and says so if the disk refuses it).
        self.spool.push(p);
        self.recent.insert(key, recent(false));
        if !self.down {
            // containerd answers: deliver the spool now, this one last.
            self.retry_at = Some(now);
        } else if self.retry_at.is_none() {
            self.retry_at = Some(now + self.backoff);
        }
        // The retry task re-reads when it is due.
        self.wake.notify_one();
        false
    }

    /// Wakes [`retry_task`] when something new waits.
    pub fn waker(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.wake.clone()
    }

    /// Whether the last attempt to reach containerd failed (new kills are spooled at once).
    pub fn is_down(&self) -> bool {
        self.down
    }

    /// Retries the spool (call when [`Publisher::retry_at`] is due): delivers until it is
    /// empty or an attempt fails.
    pub async fn retry(&mut self) {
        loop {
            match self.deliver_one().await {
                Some(true) => continue,
                Some(false) => return self.retry_failed(),
                None => return self.retry_done(),
            }
        }
    }

    /// Delivers the oldest spooled TaskOOM: `None` when nothing waits, else whether
    /// containerd took it.
    async fn deliver_one(&mut self) -> Option<bool> {
        let p = self.spool.front().cloned()?;
        // The front entry's own late publish decides first: never two copies in flight.
        if let Some(h) = self.late.take() {
            if !h.is_finished() {
                self.late = Some(h);
                return Some(false);
            }
            if let Ok((client, true)) = h.await {
                self.client = client;
                self.acknowledge_front();
                return Some(true);
            }
        }
        match publish_once(
            self.client.take(),
            &self.socket,
            &p,
            tokio::time::Instant::now() + HANDOFF,
        )
        .await
        {
            Sent::Delivered(client) => self.client = client,
            Sent::Failed => return Some(false),
            Sent::Late(h) => {
                self.late = Some(h);
                return Some(false);
            }
        }
        self.acknowledge_front();
        Some(true)
    }

    fn retry_done(&mut self) {
        self.spool.sync();
        self.retry_at = None;
        self.backoff = RETRY_MIN;
        self.down = false;
    }

    fn retry_failed(&mut self) {
        self.spool.sync();
        self.down = true;
        self.backoff = (self.backoff * 2).min(RETRY_MAX);
        self.retry_at = Some(Instant::now() + self.backoff);
    }

    /// The oldest entry was delivered (by [`retry_task`], outside the lock).
    fn acknowledge_front(&mut self) {
        self.delivered += 1;
        if let Some(p) = self.spool.front() {
            info!(namespace = %p.namespace, container = %p.container_id, "delivered a spooled TaskOOM");
        }
        self.spool.pop_front();
    }
}

/// One TaskOOM to containerd by `deadline` (connecting first if there is no client). A
/// publish that is not answered by then goes on in its own task ([`Sent::Late`]): containerd
/// may still take it, and its answer decides whether the entry is sent again.
async fn publish_once(
    client: Option<Client>,
    socket: &Path,
    p: &Pending,
    deadline: tokio::time::Instant,
) -> Sent {
    let (socket_path, entry) = (socket.to_path_buf(), p.clone());
    let mut attempt = tokio::spawn(async move {
        let client = match client {
            Some(c) => c,
            None => match Client::connect(&socket_path).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "TaskOOM not published yet");
                    return (None, false);
                }
            },
        };
        match client
            // The hand-off's own deadline is the caller's; containerd's answer counts until
            // LATE_ANSWER (see `Sent::Late`).
            .publish_oom(
                &entry.namespace,
                &entry.container_id,
                entry.ktime_ns,
                LATE_ANSWER,
            )
            .await
        {
            Ok(()) => (Some(client), true),
            Err(e) => {
                warn!(error = %e, namespace = %entry.namespace, container = %entry.container_id, "publishing TaskOOM failed; spooled for retry");
                (None, false)
            }
        }
    });
    let budget = deadline.saturating_duration_since(tokio::time::Instant::now());
    match tokio::time::timeout_at(deadline, &mut attempt).await {
        Ok(Ok((client, true))) => Sent::Delivered(client),
        Ok(Ok((_, false))) => Sent::Failed,
        Ok(Err(e)) => {
            warn!(error = %e, "the TaskOOM publish task failed; spooled for retry");
            Sent::Failed
        }
        Err(_) => {
            warn!(namespace = %p.namespace, container = %p.container_id, timeout_ms = budget.as_millis() as u64,
                "containerd did not take the TaskOOM in time; spooled, and sent again only if this attempt fails");
            Sent::Late(attempt)
        }
    }
}

#[cfg(test)]
#[path = "taskoom_tests.rs"]
mod tests;
