//! Before the kill: a per-container memory model, refreshed every `--forecast-interval`, that
//! warns (`oom_risk`) when a container's unreclaimable memory will reach one of the limits
//! above it within `--forecast-threshold`, or when it stalls in reclaim at one.
//!
//! - [`read`]: the cgroupfs reads (v1 and v2) and the node's `/proc/meminfo`.
//! - [`limits`]: every limit that can fire: container, pod, ancestors, node.
//! - [`model`]: a cgroup's samples and the growth rate of their floor.
//! - [`Forecaster`] (here): one tick of the model over the containers and cgroups it is
//!   given; pure but for the reads, so tests drive it on real scratch cgroups.
//! - [`event`]: the `oom_risk` line; [`lead`]: a kill's `warning_lead_s`.
//! - [`start`]: the model on a thread of its own, its results sent to the daemon's loop, so
//!   a kill is never held behind a cgroupfs read.

use std::{
    io,
    sync::Arc,
    time::{Duration, Instant},
};

use foldhash::{HashMap, HashSet};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tracing::{debug, info};

use crate::{
    audit::memory_fs::MemoryFs,
    enrich::{container::ContainerInfo, upkeep::Containerd},
    event::ContainerRef,
    host::cgroup_path,
};

pub mod error;
pub mod event;
pub mod lead;
pub mod limits;
pub mod model;
pub mod read;
pub mod schedule;

pub use error::ForecastError;
use event::{new_risk, RiskEvent, RiskReason};
use limits::{Limit, LimitKind};
use model::{time_to, Series, MIN_RATE};
use schedule::{
    read_cgroup, spread, CgroupState, Due, Reads, LIMITS_EVERY, QUIET_EVERY, QUIET_EVERY_MAX,
    QUIET_READS_PER_S, QUIET_SWEEP,
};

/// What `--forecast-*` asks for.
#[derive(Debug, Clone)]
pub struct ForecastOptions {
    /// How often the model is refreshed.
    pub interval: Duration,
    /// Warn when the nearest limit is closer than this.
    pub threshold: Duration,
    /// Cgroups modelled besides containerd's containers (memory hierarchy paths).
    pub cgroups: Vec<String>,
    /// Whether each tick reports every target's headroom (for the metrics' gauges): off,
    /// a node of 10,000 containers builds 30,000 entries a second for nobody.
    pub headroom: bool,
}

/// At most one `oom_risk` per container per this.
pub const REPEAT: Duration = Duration::from_secs(60);
/// A stall counts only this close to the limit: hitting the limit with page cache to give
/// back is the kernel's everyday work, not a stall.
const STALL_FRACTION: f64 = 0.98;
/// PSI `full avg10` (percent) that counts as stalling (v2).
const STALL_PSI_FULL: f64 = 10.0;
/// Processes named in a warning.
const TOP: usize = 3;

/// One thing to model: a container's cgroup, or a cgroup named by flag.
#[derive(Debug, Clone)]
pub struct Target {
    /// The memory cgroup (hierarchy path).
    pub cgroup: String,
    /// Its pod's cgroup, for a Kubernetes container.
    pub pod_cgroup: Option<String>,
    /// The container, if it is one (shared: every tick's headroom names it).
    pub container: Option<Arc<ContainerRef>>,
}

impl Target {
    /// The target of a container from containerd's index; none for sandboxes, deleted
    /// containers and those without a cgroup.
    pub fn of(c: &ContainerInfo) -> Option<Target> {
        if c.is_sandbox() || c.deleted_at.is_some() {
            return None;
        }
        let cgroup = c.cgroups().next()?.to_string();
        let pod_cgroup = (c.pod.is_some() || c.sandbox_id.is_some())
            .then(|| cgroup_path::parent(&cgroup).map(String::from))
            .flatten();
        Some(Target {
            cgroup,
            pod_cgroup,
            container: Some(Arc::new(ContainerRef::from(c))),
        })
    }

    /// A cgroup named by `--forecast-cgroup`.
    pub fn cgroup(path: &str) -> Target {
        Target {
            cgroup: path.to_string(),
            pod_cgroup: None,
            container: None,
        }
    }

    fn key(&self) -> &str {
        self.container
            .as_ref()
            .map(|c| c.id.as_str())
            .unwrap_or(&self.cgroup)
    }
}

/// One limit of one target as the model sees it now (a metric's sample).
#[derive(Debug, Clone, PartialEq)]
pub struct Headroom {
    /// The container (none for a cgroup named by flag).
    pub container: Option<Arc<ContainerRef>>,
    /// The modelled cgroup.
    pub cgroup: String,
    /// Whose limit.
    pub limit: LimitKind,
    /// Limit less unreclaimable, bytes.
    pub headroom_bytes: u64,
    /// Seconds to the limit; none while not growing.
    pub time_to_oom_s: Option<f64>,
}

/// What one tick found.
#[derive(Debug, Default)]
pub struct TickReport {
    /// Warnings to write.
    pub risks: Vec<RiskEvent>,
    /// Every target's headroom to each of its limits.
    pub headroom: Vec<Headroom>,
    /// Cgroups read in full this tick (the rest got one small read).
    pub full_reads: usize,
    /// Cgroups read at all.
    pub reads: usize,
}

/// The model over every target, one tick at a time.
pub struct Forecaster {
    mem: MemoryFs,
    threshold: f64,
    start: Instant,
    cgroups: HashMap<String, CgroupState>,
    chains: HashMap<String, (f64, Vec<Limit>)>,
    node: Series,
    node_last: Option<read::Node>,
    warned: HashMap<String, f64>,
    headroom: bool,
}

impl Forecaster {
    /// A model over the hierarchy `mem`, warning `threshold` ahead.
    pub fn new(mem: MemoryFs, threshold: Duration) -> Forecaster {
        Forecaster {
            mem,
            threshold: threshold.as_secs_f64(),
            start: Instant::now(),
            cgroups: HashMap::default(),
            chains: HashMap::default(),
            node: Series::default(),
            node_last: None,
            warned: HashMap::default(),
            headroom: true,
        }
    }

    /// Reads what the targets need and says who is at risk.
    pub fn tick(&mut self, targets: &[Target]) -> TickReport {
        self.tick_at(targets, self.start.elapsed().as_secs_f64())
    }

    /// [`tick`](Self::tick) at `now` seconds on the model's clock.
    fn tick_at(&mut self, targets: &[Target], now: f64) -> TickReport {
        let mut report = TickReport::default();
        let mut reads = Reads::default();
        self.refresh_chains(targets, now);
        // Each cgroup read once, however many targets share it (a pod's), with the nearest
        // limit it counts against.
        let mut paths: HashMap<&str, u64> = HashMap::default();
        for t in targets {
            let Some((_, chain)) = self.chains.get(&t.cgroup) else {
                continue;
            };
            let nearest = chain.iter().map(|l| l.bytes).min().unwrap_or(u64::MAX);
            let e = paths.entry(t.cgroup.as_str()).or_insert(u64::MAX);
            *e = (*e).min(nearest);
            for l in chain {
                if let Some(c) = &l.cgroup {
                    let e = paths.entry(c.as_str()).or_insert(u64::MAX);
                    *e = (*e).min(l.bytes);
                }
            }
        }
        // Containers' own cgroups first: one that wakes wakes the limits above it, which
        // are otherwise read only on their slow sweep (a pod's usage is its containers').
        let quiet_every = (targets.len() as f64 / QUIET_READS_PER_S)
            .clamp(QUIET_EVERY.as_secs_f64(), QUIET_EVERY_MAX.as_secs_f64());
        let mut woken: HashSet<&str> = HashSet::default();
        for t in targets {
            let Some(&nearest) = paths.get(t.cgroup.as_str()) else {
                continue;
            };
            let due = if woken.contains(t.cgroup.as_str()) {
                Due::Now
            } else {
                Due::Every(quiet_every)
            };
            if read_cgroup(
                &self.mem,
                &mut self.cgroups,
                &t.cgroup,
                nearest,
                now,
                due,
                &mut reads,
            ) {
                if let Some((_, chain)) = self.chains.get(&t.cgroup) {
                    woken.extend(chain.iter().filter_map(|l| l.cgroup.as_deref()));
                }
            }
        }
        let own: HashSet<&str> = targets.iter().map(|t| t.cgroup.as_str()).collect();
        for (&path, &nearest) in &paths {
            if own.contains(path) {
                continue;
            }
            let due = if woken.contains(path) {
                Due::Now
            } else {
                Due::Every(QUIET_SWEEP.as_secs_f64())
            };
            read_cgroup(
                &self.mem,
                &mut self.cgroups,
                path,
                nearest,
                now,
                due,
                &mut reads,
            );
        }
        self.cgroups.retain(|p, _| paths.contains_key(p.as_str()));
        match read::node() {
            Ok(n) => {
                self.node.push(now, n.unreclaimable);
                self.node_last = Some(n);
            }
            Err(e) => debug!(error = %e, "forecast: /proc/meminfo not read"),
        }
        report.reads = reads.reads;
        report.full_reads = reads.full_reads;
        for t in targets {
            if let Some(r) = self.assess(t, now, &mut report.headroom) {
                report.risks.push(r);
            }
        }
        let live: HashSet<&str> = targets.iter().map(Target::key).collect();
        self.warned.retain(|k, _| live.contains(k.as_str()));
        report
    }

    fn refresh_chains(&mut self, targets: &[Target], now: f64) {
        let mut levels = limits::Levels::default();
        for t in targets {
            let fresh = self
                .chains
                .get(&t.cgroup)
                .is_some_and(|(at, _)| now - at < LIMITS_EVERY.as_secs_f64());
            if fresh {
                continue;
            }
            match limits::chain(&self.mem, &t.cgroup, t.pod_cgroup.as_deref(), &mut levels) {
                Ok(c) => {
                    // Spread over the period, so the chains of containers that started
                    // together are not all read again on the same tick.
                    let at = if self.chains.contains_key(&t.cgroup) {
                        now
                    } else {
                        now - spread(&t.cgroup, LIMITS_EVERY.as_secs_f64())
                    };
                    self.chains.insert(t.cgroup.clone(), (at, c));
                }
                Err(e) => {
                    debug!(cgroup = %t.cgroup, error = %e, "forecast: limits not read");
                    self.chains.remove(&t.cgroup);
                }
            }
        }
        let live: HashSet<&str> = targets.iter().map(|t| t.cgroup.as_str()).collect();
        self.chains.retain(|p, _| live.contains(p.as_str()));
    }

    /// The target's limits, nearest in time first; a warning if one is due.
    fn assess(&mut self, t: &Target, now: f64, out: &mut Vec<Headroom>) -> Option<RiskEvent> {
        let (_, chain) = self.chains.get(&t.cgroup)?;
        let own = self.cgroups.get(&t.cgroup)?;
        // Nothing of it read this tick and no warning out: nothing it would say has changed
        // (its limits' time to fill needs a rate, which needs a read), and no one asked for
        // its headroom.
        let read_now = |c: &str| self.cgroups.get(c).is_some_and(|s| s.read_at >= now);
        if !self.headroom
            && !self.warned.contains_key(t.key())
            && own.read_at < now
            && !chain
                .iter()
                .filter_map(|l| l.cgroup.as_deref())
                .any(read_now)
        {
            return None;
        }
        let own_rate = own.series.rate();
        struct View<'a> {
            limit: Limit,
            unrec: u64,
            rate: Option<f64>,
            ttl: Option<f64>,
            stalled: bool,
            state: Option<&'a CgroupState>,
        }
        let mut views: Vec<View<'_>> = Vec::new();
        for l in chain {
            let Some(st) = l.cgroup.as_ref().and_then(|c| self.cgroups.get(c)) else {
                continue;
            };
            let Some(stat) = st.stat else { continue };
            let rate = st.series.rate();
            let near = stat.unreclaimable as f64 >= STALL_FRACTION * l.bytes as f64;
            let psi = stat
                .pressure
                .full_avg10
                .is_some_and(|f| f >= STALL_PSI_FULL);
            views.push(View {
                limit: l.clone(),
                unrec: stat.unreclaimable,
                rate,
                ttl: time_to(l.bytes, stat.unreclaimable, rate),
                stalled: near && (st.hits_rose || psi),
                state: Some(st),
            });
        }
        // The node's memory fills from every container: it is this one's to warn about only
        // while this one grows.
        if let Some(n) = self.node_last {
            let rate = self.node.rate();
            let growing = own_rate.is_some_and(|r| r >= MIN_RATE);
            views.push(View {
                limit: Limit {
                    kind: LimitKind::Node,
                    cgroup: None,
                    bytes: n.total,
                },
                unrec: n.unreclaimable,
                rate,
                ttl: if growing {
                    time_to(n.total, n.unreclaimable, rate)
                } else {
                    None
                },
                stalled: false,
                state: None,
            });
        }
        for v in views.iter().filter(|_| self.headroom) {
            out.push(Headroom {
                container: t.container.clone(),
                cgroup: t.cgroup.clone(),
                limit: v.limit.kind,
                headroom_bytes: v.limit.bytes.saturating_sub(v.unrec),
                time_to_oom_s: v.ttl,
            });
        }
        let soonest = views
            .iter()
            .filter(|v| v.ttl.is_some_and(|s| s < self.threshold))
            .min_by(|a, b| {
                a.ttl
                    .unwrap_or(f64::MAX)
                    .total_cmp(&b.ttl.unwrap_or(f64::MAX))
            });
        let (v, reason) = match soonest {
            Some(v) => (v, RiskReason::Growth),
            None => (views.iter().find(|v| v.stalled)?, RiskReason::Stall),
        };
        let key = t.key().to_string();
        if self
            .warned
            .get(&key)
            .is_some_and(|w| now - w < REPEAT.as_secs_f64())
        {
            return None;
        }
        self.warned.insert(key, now);
        let top = match &v.limit.cgroup {
            Some(c) => self
                .mem
                .dir(c)
                .map(|d| read::top_processes(&d, TOP))
                .unwrap_or_default(),
            None => read::top_processes(&self.mem.dir("/")?, TOP),
        };
        let stat = v.state.and_then(|s| s.stat);
        Some(new_risk(
            reason,
            t.container.as_deref().cloned(),
            t.cgroup.clone(),
            v.limit.clone(),
            v.ttl,
            v.unrec,
            v.rate,
            stat.map(|s| s.usage),
            stat.map(|s| s.pressure),
            top,
        ))
    }
}

/// What the model's thread sends the daemon's loop each tick.
pub type Report = TickReport;

/// Starts the model on a thread of its own: every `interval`, the targets (containerd's
/// containers and the flag's cgroups) are read and the report sent. It ends when the
/// receiver is dropped.
pub fn start(
    opts: ForecastOptions,
    mem: MemoryFs,
    containerd: Option<Arc<Containerd>>,
) -> io::Result<UnboundedReceiver<Report>> {
    let (tx, rx) = mpsc::unbounded_channel();
    info!(
        interval_ms = opts.interval.as_millis() as u64,
        threshold_s = opts.threshold.as_secs_f64(),
        cgroups = opts.cgroups.len(),
        "forecast on"
    );
    std::thread::Builder::new()
        .name("forecast".into())
        .spawn(move || run(opts, mem, containerd, tx))?;
    Ok(rx)
}

fn run(
    opts: ForecastOptions,
    mem: MemoryFs,
    containerd: Option<Arc<Containerd>>,
    tx: UnboundedSender<Report>,
) {
    let mut f = Forecaster::new(mem, opts.threshold);
    f.headroom = opts.headroom;
    let mut next = Instant::now();
    let mut targets: Vec<Target> = Vec::new();
    let mut seen = None;
    loop {
        // The targets are made again only when containerd's index changed.
        let generation = containerd.as_ref().map(|cd| cd.generation());
        if seen.is_none() || seen != Some(generation) {
            targets = opts.cgroups.iter().map(|c| Target::cgroup(c)).collect();
            if let Some(cd) = &containerd {
                targets.extend(cd.filter_map(Target::of));
            }
            seen = Some(generation);
        }
        let report = f.tick(&targets);
        if tx.send(report).is_err() {
            return;
        }
        next += opts.interval;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            // Late (a slow read): the next tick starts now, not in a burst.
            next = now;
        }
    }
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod schedule_tests;
