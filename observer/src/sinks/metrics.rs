//! The Prometheus metrics: the kill counters are a sink ([`KillSeries`], bumped after each
//! line is written: atomics, nothing that waits); the rest follows totals kept elsewhere
//! (TaskOOM, lost records, open findings), brought up to date after each turn of the
//! daemon's loop ([`Metrics::sync`]). `/metrics` is served by a thread of its own at
//! ordinary priority, so a scrape never runs on the kill path.

use std::{
    collections::HashMap,
    sync::{atomic::AtomicU64, Arc},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::Registry,
};

use crate::{audit::driver::AuditDriver, sinks::taskoom::SharedPublisher};

mod exits;
mod headroom;
mod http;
mod kills;

pub use exits::{ExitLabels, ExitSeries, MAX_EXIT_SERIES};
pub use headroom::{HeadroomLabels, HeadroomSeries, MAX_HEADROOM_SERIES};
pub use http::bind;
pub use kills::{DeletedAt, KillLabels, KillSeries, MAX_KILL_SERIES};

/// A `result` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    result: &'static str,
}

/// Counts one `result` in a family of result counters.
pub fn inc(family: &Family<ResultLabels, Counter>, result: &'static str) {
    family.get_or_create(&ResultLabels { result }).inc();
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    strategy: String,
}

/// What the sinks' own counters said at the last [`Metrics::sync`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// TaskOOMs containerd accepted (directly or from the spool).
    pub published: u64,
    /// TaskOOMs that had to wait in the spool.
    pub spooled: u64,
    /// TaskOOMs dropped from a full spool.
    pub dropped: u64,
    /// Open `limit_unenforced` findings.
    pub limit_unenforced: u64,
    /// Open `sandbox_oversized` findings.
    pub sandbox_oversized: u64,
    /// Open `cgroup_misplaced` findings.
    pub cgroup_misplaced: u64,
}

impl Totals {
    /// The totals now: the TaskOOM publisher's and the audit's open findings. Never waits:
    /// a publisher busy with a kill is counted at the next turn.
    pub fn of(publisher: Option<&SharedPublisher>, audits: Option<&AuditDriver>) -> Totals {
        let mut t = Totals::default();
        if let Some(p) = publisher.and_then(|p| p.try_lock().ok()) {
            t.published = p.delivered();
            t.spooled = p.spooled();
            t.dropped = p.dropped();
        }
        if let Some(a) = audits {
            let (unenforced, oversized, misplaced) = a.open_findings();
            t.limit_unenforced = unenforced as u64;
            t.sandbox_oversized = oversized as u64;
            t.cgroup_misplaced = misplaced as u64;
        }
        t
    }
}

/// The daemon's metrics: the registry, and the counters that follow totals.
pub struct Metrics {
    registry: Arc<Registry>,
    kills: Family<KillLabels, Counter>,
    exits: Family<ExitLabels, Counter>,
    taskoom: Family<ResultLabels, Counter>,
    lost: Family<KindLabels, Counter>,
    findings: Family<KindLabels, Gauge>,
    k8s_events: Family<ResultLabels, Counter>,
    last_kill: Gauge<f64, AtomicU64>,
    seen: Totals,
    lost_seen: HashMap<String, u64>,
    headroom: HeadroomSeries,
}

impl Metrics {
    /// The metrics of a daemon of `version` running hook strategy `strategy`.
    pub fn new(version: &str, strategy: &str) -> Metrics {
        let mut r = Registry::default();
        let kills = Family::<KillLabels, Counter>::default();
        r.register(
            "oom_observer_oom_kills",
            "OOM kills attributed to a container (victims of one container within 1 s are one kill), by whose limit was hit and whether the container lived on",
            kills.clone(),
        );
        let exits = Family::<ExitLabels, Counter>::default();
        r.register(
            "oom_observer_container_exits",
            "containers' ends, by cause: oom_kill, oom_killer_userspace, runtime_stop, pod_process, node_process, crash, exited, unknown_signal",
            exits.clone(),
        );
        let taskoom = Family::<ResultLabels, Counter>::default();
        r.register(
            "oom_observer_taskoom",
            "TaskOOM events for containerd: published (accepted by containerd), spooled (had to wait), dropped (spool full)",
            taskoom.clone(),
        );
        let lost = Family::<KindLabels, Counter>::default();
        r.register(
            "oom_observer_records_lost",
            "kernel records lost because the ring buffer was full",
            lost.clone(),
        );
        let findings = Family::<KindLabels, Gauge>::default();
        r.register(
            "oom_observer_audit_findings",
            "open memory-limit audit findings (containers whose declared limit is not enforced, or oversized sandboxes)",
            findings.clone(),
        );
        let k8s_events = Family::<ResultLabels, Counter>::default();
        r.register(
            "oom_observer_k8s_events",
            "Kubernetes Events on Pods: created, patched (a repeat kill aggregated), failed (the API server refused or was unreachable), dropped (queue full)",
            k8s_events.clone(),
        );
        let headroom = Family::<HeadroomLabels, Gauge>::default();
        r.register_with_unit(
            "oom_observer_memory_headroom",
            "bytes a container's unreclaimable memory (anon, shmem, unevictable, kernel) can still grow before each limit above it fires: container, pod, cgroup, node",
            prometheus_client::registry::Unit::Bytes,
            headroom.clone(),
        );
        let time_to_oom = Family::<HeadroomLabels, Gauge<f64, AtomicU64>>::default();
        r.register_with_unit(
            "oom_observer_time_to_oom",
            "seconds until a container's unreclaimable memory reaches each limit at its current growth rate; absent while it does not grow",
            prometheus_client::registry::Unit::Seconds,
            time_to_oom.clone(),
        );
        let last_kill = Gauge::<f64, AtomicU64>::default();
        r.register(
            "oom_observer_last_kill_timestamp_seconds",
            "when the last OOM kill happened (Unix time; 0 before the first)",
            last_kill.clone(),
        );
        r.register(
            "oom_observer_build",
            "the running daemon: version and hook strategy",
            Info::new(BuildLabels {
                version: version.into(),
                strategy: strategy.into(),
            }),
        );
        // Present from the first scrape, so rate() and absent() work before anything happens.
        for result in ["published", "spooled", "dropped"] {
            drop(taskoom.get_or_create(&ResultLabels { result }));
        }
        for result in ["created", "patched", "failed", "dropped"] {
            drop(k8s_events.get_or_create(&ResultLabels { result }));
        }
        for kind in ["limit_unenforced", "sandbox_oversized", "cgroup_misplaced"] {
            drop(findings.get_or_create(&KindLabels { kind: kind.into() }));
        }
        Metrics {
            registry: Arc::new(r),
            kills,
            exits,
            taskoom,
            lost,
            findings,
            k8s_events,
            last_kill,
            seen: Totals::default(),
            lost_seen: HashMap::new(),
            headroom: HeadroomSeries::new(headroom, time_to_oom),
        }
    }

    /// Brings the counters up to the sinks' and the kernel's own totals: `lost` is each
    /// record kind's lost count, by the kind's JSON name.
    pub fn sync(&mut self, t: Totals, lost: &[(&str, u64)]) {
        let up = |c: &Counter, now: u64, seen: u64| {
            if now > seen {
                c.inc_by(now - seen);
            }
        };
        up(
            &self.taskoom_of("published"),
            t.published,
            self.seen.published,
        );
        up(&self.taskoom_of("spooled"), t.spooled, self.seen.spooled);
        up(&self.taskoom_of("dropped"), t.dropped, self.seen.dropped);
        self.finding_of("limit_unenforced")
            .set(t.limit_unenforced as i64);
        self.finding_of("sandbox_oversized")
            .set(t.sandbox_oversized as i64);
        self.finding_of("cgroup_misplaced")
            .set(t.cgroup_misplaced as i64);
        self.seen = t;
        for (kind, n) in lost {
            let seen = self.lost_seen.entry(kind.to_string()).or_default();
            // Created at 0 on the first sync, so an alert on its increase has a series.
            let c = self.lost.get_or_create_owned(&KindLabels {
                kind: kind.to_string(),
            });
            if *n > *seen {
                c.inc_by(*n - *seen);
                *seen = *n;
            }
        }
    }

    /// The memory model's latest view: headroom and time to OOM per container and limit.
    pub fn forecast(&mut self, view: &[crate::forecast::Headroom]) {
        self.headroom.update(view);
    }

    /// The sink that counts kills into `oom_observer_oom_kills_total` and the last kill's
    /// time (one per daemon: each keeps its own series).
    pub fn kill_series(&self) -> KillSeries {
        KillSeries::new(self.kills.clone(), self.last_kill.clone())
    }

    /// The sink that counts containers' ends into `oom_observer_container_exits_total`.
    pub fn exit_series(&self) -> ExitSeries {
        ExitSeries::new(self.exits.clone())
    }

    /// The counters of the Kubernetes Event sink.
    pub fn k8s_events(&self) -> Family<ResultLabels, Counter> {
        self.k8s_events.clone()
    }

    fn taskoom_of(&self, result: &'static str) -> Counter {
        self.taskoom.get_or_create_owned(&ResultLabels { result })
    }

    fn finding_of(&self, kind: &str) -> Gauge {
        self.findings
            .get_or_create_owned(&KindLabels { kind: kind.into() })
    }

    /// The exposition text, as `/metrics` serves it.
    pub fn render(&self) -> String {
        http::render(&self.registry)
    }

    /// Serves `/metrics` on `listener` from a thread of its own; returns at once.
    pub fn serve(&self, listener: std::net::TcpListener) -> std::io::Result<()> {
        http::serve(self.registry.clone(), listener)
    }
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
