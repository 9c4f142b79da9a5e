//! The Prometheus sink: counters the processor bumps after each event is written (atomics,
//! nothing that waits), and `/metrics` served by its own thread at ordinary priority, so a
//! scrape never runs on the kill path.
//!
//! Label cardinality is bounded twice: the series of a container expire once containerd
//! has deleted it for longer than the index keeps deleted containers
//! ([`KEEP_DELETED`](crate::enrich::index::KEEP_DELETED)), and there are never more than
//! [`MAX_KILL_SERIES`] kill series; beyond that, kills go to one `overflow` series.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{atomic::AtomicU64, Arc},
    time::{Duration, Instant, UNIX_EPOCH},
};

use http_body_util::Full;
use hyper::{body::Bytes, header, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::Registry,
};
use tracing::{debug, info, warn};

use crate::{
    enrich::{container::ContainerKey, index::KEEP_DELETED},
    kernel::clock::boot_to_wall,
    pipeline::event::{ContainerRef, Event},
    sinks::taskoom::SAME_KILL,
};

/// At most this many label sets of `oom_observer_oom_kills_total`.
pub const MAX_KILL_SERIES: usize = 2000;

/// The label value of every label of the overflow series, and of what is not known yet.
const OVERFLOW: &str = "overflow";
const UNKNOWN: &str = "unknown";

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 8;

/// The content type of what [`encode`] writes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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

/// One kill series' upkeep.
#[derive(Debug)]
struct Series {
    /// The container it counts (none for kills outside containers: never expires).
    container: Option<ContainerKey>,
    /// `ktime_ns` of its last counted kill (victims within [`SAME_KILL`] are one kill).
    last_kill_ns: u64,
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

/// The daemon's metrics.
pub struct Metrics {
    registry: Arc<Registry>,
    kills: Family<KillLabels, Counter>,
    taskoom: Family<ResultLabels, Counter>,
    lost: Family<KindLabels, Counter>,
    findings: Family<KindLabels, Gauge>,
    k8s_events: Family<ResultLabels, Counter>,
    last_kill: Gauge<f64, AtomicU64>,
    series: HashMap<KillLabels, Series>,
    seen: Totals,
    lost_seen: HashMap<String, u64>,
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
            taskoom,
            lost,
            findings,
            k8s_events,
            last_kill,
            series: HashMap::new(),
            seen: Totals::default(),
            lost_seen: HashMap::new(),
        }
    }

    /// Counts an event after its line was written (only `oom_kill` counts).
    pub fn on_event(&mut self, ev: &Event) {
        if ev.event != "oom_kill" {
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
                s.container.as_ref().is_some_and(|k| match deleted_at(k) {
                    None => true,
                    Some(None) => false,
                    Some(Some(t)) => now.duration_since(t) > KEEP_DELETED,
                })
            })
            .map(|(l, _)| l.clone())
            .collect();
        for l in gone {
            debug!(namespace = %l.namespace, pod = %l.pod, container = %l.container, "kill series expired");
            self.kills.remove(&l);
            self.series.remove(&l);
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
        render(&self.registry)
    }

    /// Serves `/metrics` on `listener` from a thread of its own; returns at once.
    pub fn serve(&self, listener: std::net::TcpListener) -> std::io::Result<()> {
        let registry = self.registry.clone();
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                ordinary_priority();
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        warn!(error = %e, "metrics: cannot start the runtime; no /metrics");
                        return;
                    }
                };
                rt.block_on(accept_loop(listener, registry));
            })?;
        info!(%addr, "serving Prometheus metrics on /metrics");
        Ok(())
    }
}

fn render(registry: &Registry) -> String {
    let mut out = String::with_capacity(4096);
    // Writing into a String cannot fail; an encoding error would be a bug in a label.
    if let Err(e) = encode(&mut out, registry) {
        warn!(error = %e, "metrics: encoding failed");
    }
    out
}

async fn accept_loop(listener: std::net::TcpListener, registry: Arc<Registry>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, "metrics: cannot listen; no /metrics");
            return;
        }
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and the like: wait instead of spinning.
                debug!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let registry = registry.clone();
                async move { Ok::<_, Infallible>(respond(&req, &registry)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "metrics: connection ended");
            }
            drop(permit);
        });
    }
}

fn respond<B>(req: &Request<B>, registry: &Registry) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match (req.method(), req.uri().path()) {
        (&hyper::Method::GET, "/metrics") => (StatusCode::OK, OPENMETRICS, render(registry)),
        (&hyper::Method::GET, _) => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: metrics are at /metrics\n".to_string(),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".to_string(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(ctype) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

/// Binds the metrics address (before the daemon says it is ready, so a taken port fails
/// the start with a clear error).
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    std::net::TcpListener::bind(addr)
}

/// The daemon's main thread may run at SCHED_FIFO, which threads inherit: the scrape
/// server must not, or a scrape could delay a kill's TaskOOM.
fn ordinary_priority() {
    // SAFETY: sched_param is plain integers, for which all-zero is valid.
    let param: nix::libc::sched_param = unsafe { std::mem::zeroed() };
    // The raw system call, as in the daemon (musl's wrapper is a stub); tid 0 = this thread.
    // SAFETY: plain syscall on this thread with a valid parameter.
    let rc = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_sched_setscheduler,
            0,
            nix::libc::SCHED_OTHER,
            &param as *const nix::libc::sched_param,
        )
    };
    if rc != 0 {
        debug!(error = %std::io::Error::last_os_error(), "metrics: cannot drop to ordinary priority");
    }
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
