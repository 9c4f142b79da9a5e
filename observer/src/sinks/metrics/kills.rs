//! `oom_observer_oom_kills_total` and the last kill's time: the metrics' sink, which counts
//! each kill after its line is written (atomics, nothing that waits). Its label sets are
//! bounded twice: the series of a container expire once containerd has deleted it for
//! longer than the index keeps deleted containers ([`KEEP_DELETED`]), and there are never
//! more than [`MAX_KILL_SERIES`] of them; beyond that, kills go to one `overflow` series.

use std::{
    collections::HashMap,
    sync::atomic::AtomicU64,
    time::{Instant, UNIX_EPOCH},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
};
use tracing::{debug, warn};

use crate::{
    enrich::{container::ContainerKey, index::KEEP_DELETED},
    event::{ContainerRef, Event, EventKind},
    kernel::clock::boot_to_wall,
    sinks::{taskoom::SAME_KILL, Line, Sink},
};

/// At most this many label sets of `oom_observer_oom_kills_total`.
pub const MAX_KILL_SERIES: usize = 2000;

/// The label value of every label of the overflow series, and of what is not known yet.
const OVERFLOW: &str = "overflow";
const UNKNOWN: &str = "unknown";

/// The labels of one kill series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KillLabels {
    /// The pod's Kubernetes namespace, else the containerd namespace; empty without a
    /// container.
    pub namespace: String,
    /// The pod's name; empty outside a pod.
    pub pod: String,
    /// The Kubernetes container name, else the containerd container id; empty without a
    /// container.
    pub container: String,
    /// Whose limit was hit: `container`, `pod`, `node`, `cgroup`, or `unknown`.
    pub limit: String,
    /// Whether the container lived on after the kill (`true`/`false`), or `unknown`.
    pub container_exits: String,
}

impl KillLabels {
    fn of(c: Option<&ContainerRef>, ev: &Event) -> KillLabels {
        let pod = c.and_then(|c| c.pod.as_ref());
        KillLabels {
            namespace: pod
                .and_then(|p| p.namespace.clone())
                .or_else(|| c.map(|c| c.namespace.clone()))
                .unwrap_or_default(),
            pod: pod.and_then(|p| p.name.clone()).unwrap_or_default(),
            container: c
                .map(|c| c.name.clone().unwrap_or_else(|| c.id.clone()))
                .unwrap_or_default(),
            limit: limit_of(ev),
            container_exits: container_exits_of(ev),
        }
    }

    fn overflow(&self) -> KillLabels {
        KillLabels {
            namespace: OVERFLOW.into(),
            pod: OVERFLOW.into(),
            container: OVERFLOW.into(),
            ..self.clone()
        }
    }
}

/// Whose limit was hit (`container`, `pod`, `node`, `cgroup`), as the kill's explanation
/// says; `unknown` where the hook cannot see the OOM cgroup.
fn limit_of(ev: &Event) -> String {
    ev.explained
        .as_ref()
        .and_then(|x| x.limit.clone())
        .unwrap_or_else(|| UNKNOWN.into())
}

/// Whether the container exits with the kill (`true`: its init was the victim) or lives on
/// (`false`: a worker was killed, which Kubernetes never reports); `unknown` when not seen.
fn container_exits_of(ev: &Event) -> String {
    match ev.explained.as_ref().and_then(|x| x.container_exits) {
        Some(b) => b.to_string(),
        None => UNKNOWN.into(),
    }
}

/// Whether a container's series may go: containerd no longer knows it, or deleted it longer
/// ago than the index keeps deleted containers (`deleted_at` as [`DeletedAt`] answers).
pub(super) fn gone_for_good(deleted_at: Option<Option<Instant>>, now: Instant) -> bool {
    match deleted_at {
        None => true,
        Some(None) => false,
        Some(Some(t)) => now.duration_since(t) > KEEP_DELETED,
    }
}

/// One kill series' upkeep.
#[derive(Debug)]
pub(super) struct Series {
    /// The container it counts (none for kills outside containers: never expires).
    container: Option<ContainerKey>,
    /// `ktime_ns` of its last counted kill (victims within [`SAME_KILL`] are one kill).
    last_kill_ns: u64,
}

/// When containerd deleted a container (`None` while it exists), `None` for one it no
/// longer knows: what [`KillSeries::expire`] asks.
pub type DeletedAt = Box<dyn Fn(&ContainerKey) -> Option<Option<Instant>>>;

/// The kill counters and their series' upkeep.
pub struct KillSeries {
    kills: Family<KillLabels, Counter>,
    last_kill: Gauge<f64, AtomicU64>,
    pub(super) series: HashMap<KillLabels, Series>,
    /// Asked at each upkeep; without it (no containerd) no series expires.
    deleted_at: Option<DeletedAt>,
}

impl KillSeries {
    /// The sink of the `kills` counters and the `last_kill` gauge (registered by
    /// `Metrics::new`).
    pub(super) fn new(
        kills: Family<KillLabels, Counter>,
        last_kill: Gauge<f64, AtomicU64>,
    ) -> Self {
        KillSeries {
            kills,
            last_kill,
            series: HashMap::new(),
            deleted_at: None,
        }
    }

    /// Expires series at each upkeep, asking `deleted_at` (containerd's index).
    pub fn expiring(mut self, deleted_at: DeletedAt) -> Self {
        self.deleted_at = Some(deleted_at);
        self
    }

    /// Counts an event after its line was written (only `oom_kill` counts).
    pub fn on_event(&mut self, ev: &Event) {
        if ev.event != EventKind::OomKill {
            return;
        }
        let wall = boot_to_wall(ev.ktime_ns);
        if let Ok(d) = wall.duration_since(UNIX_EPOCH) {
            self.last_kill.set(d.as_secs_f64());
        }
        let owners: Vec<Option<&ContainerRef>> = if ev.containers.is_empty() {
            vec![ev.container.as_ref()]
        } else {
            ev.containers.iter().map(Some).collect()
        };
        for c in owners {
            self.count(KillLabels::of(c, ev), c, ev.ktime_ns);
        }
    }

    fn count(&mut self, labels: KillLabels, c: Option<&ContainerRef>, ktime_ns: u64) {
        let key = c.map(|c| ContainerKey::new(&c.namespace, &c.id));
        let overflow = !self.series.contains_key(&labels) && self.series.len() >= MAX_KILL_SERIES;
        let labels = if overflow {
            let o = labels.overflow();
            if !self.series.contains_key(&o) {
                warn!(
                    max = MAX_KILL_SERIES,
                    "too many kill series: further containers are counted as `overflow`"
                );
            }
            o
        } else {
            labels
        };
        match self.series.get_mut(&labels) {
            // The same container's victims within SAME_KILL are one kill (a sandbox's
            // processes, a memory.oom.group kill), as for TaskOOM.
            Some(s)
                if key.is_some()
                    && !overflow
                    && ktime_ns.saturating_sub(s.last_kill_ns) < SAME_KILL.as_nanos() as u64 =>
            {
                return;
            }
            Some(s) => s.last_kill_ns = ktime_ns,
            None => {
                self.series.insert(
                    labels.clone(),
                    Series {
                        container: if overflow { None } else { key },
                        last_kill_ns: ktime_ns,
                    },
                );
            }
        }
        self.kills.get_or_create(&labels).inc();
    }

    /// Drops the series of containers that are gone: `deleted_at` says when containerd
    /// deleted a container (`None` while it exists), `None` for one it no longer knows.
    pub fn expire(&mut self, deleted_at: impl Fn(&ContainerKey) -> Option<Option<Instant>>) {
        let now = Instant::now();
        let gone: Vec<KillLabels> = self
            .series
            .iter()
            .filter(|(_, s)| {
                s.container
                    .as_ref()
                    .is_some_and(|k| gone_for_good(deleted_at(k), now))
            })
            .map(|(l, _)| l.clone())
            .collect();
        for l in gone {
            debug!(namespace = %l.namespace, pod = %l.pod, container = %l.container, "kill series expired");
            self.kills.remove(&l);
            self.series.remove(&l);
        }
    }
}

/// Kills only; the rest passes by.
impl Sink for KillSeries {
    fn emit(&mut self, line: Line<'_>) -> std::io::Result<()> {
        if let Line::Event(ev) = line {
            self.on_event(ev);
        }
        Ok(())
    }

    /// Drops the kill series of containers deleted longer ago than the index keeps them.
    fn upkeep(&mut self) {
        if let Some(deleted_at) = self.deleted_at.take() {
            self.expire(&deleted_at);
            self.deleted_at = Some(deleted_at);
        }
    }
}
