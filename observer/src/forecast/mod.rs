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

use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tracing::{debug, info};

use crate::{audit::memory_fs::MemoryFs, enrich::upkeep::Containerd, event::ContainerRef};

pub mod error;
pub mod event;
pub mod lead;
pub mod limits;
pub mod model;
mod plan;
pub mod read;
pub mod schedule;
mod target;

pub use error::ForecastError;
use event::{new_risk, RiskEvent, RiskReason};
use limits::{Limit, LimitKind};
use model::{time_to, Series};
use plan::Plan;
use schedule::{CgroupState, Reads, QUIET_EVERY, QUIET_EVERY_MAX, QUIET_READS_PER_S};
pub use target::Target;

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

/// One limit of one target as the model sees it now (a metric's sample).
#[derive(Debug, Clone, PartialEq)]
pub struct Headroom {
    /// The container (none for a cgroup named by flag).
    pub container: Option<Arc<ContainerRef>>,
    /// The modelled cgroup (the target's copy).
    pub cgroup: Arc<str>,
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
    plan: Plan,
    node: Series,
    node_last: Option<read::Node>,
    headroom: bool,
}

impl Forecaster {
    /// A model over the hierarchy `mem`, warning `threshold` ahead.
    pub fn new(mem: MemoryFs, threshold: Duration) -> Forecaster {
        Forecaster {
            mem,
            threshold: threshold.as_secs_f64(),
            start: Instant::now(),
            plan: Plan::new(plan::dir_fd_budget()),
            node: Series::default(),
            node_last: None,
            headroom: true,
        }
    }

    /// What to model from now on; what is known of a cgroup still modelled is kept.
    pub fn set_targets(&mut self, targets: Vec<Target>) {
        self.plan.set_targets(&self.mem, targets);
    }

    /// Reads what the targets need and says who is at risk.
    pub fn tick(&mut self) -> TickReport {
        self.tick_at(self.start.elapsed().as_secs_f64())
    }

    /// [`tick`](Self::tick) at `now` seconds on the model's clock.
    fn tick_at(&mut self, now: f64) -> TickReport {
        let mut report = TickReport::default();
        let mut reads = Reads::default();
        self.plan.refresh_chains(&self.mem, now);
        // Containers' own cgroups first: one that wakes wakes the limits above it, which
        // are otherwise read only on their slow sweep (a pod's usage is its containers').
        let quiet_every = (self.plan.targets.len() as f64 / QUIET_READS_PER_S)
            .clamp(QUIET_EVERY.as_secs_f64(), QUIET_EVERY_MAX.as_secs_f64());
        let assess = self.plan.read_due(&self.mem, now, quiet_every, &mut reads);
        match read::node() {
            Ok(n) => {
                self.node.push(now, n.unreclaimable);
                self.node_last = Some(n);
            }
            Err(e) => debug!(error = %e, "forecast: /proc/meminfo not read"),
        }
        report.reads = reads.reads;
        report.full_reads = reads.full_reads;
        // With the gauges on every target is assessed; else those read this tick, and
        // those warned about (their repeat bound runs out).
        let all: Vec<u32>;
        let order = if self.headroom {
            all = (0..self.plan.targets.len() as u32).collect();
            &all
        } else {
            &assess
        };
        for &i in order {
            if let Some(r) = self.assess(i as usize, now, &mut report.headroom) {
                report.risks.push(r);
            }
        }
        report
    }

    /// The target's limits, nearest in time first; a warning if one is due.
    fn assess(&mut self, i: usize, now: f64, out: &mut Vec<Headroom>) -> Option<RiskEvent> {
        let slots = &self.plan.slots;
        let p = &self.plan.targets[i];
        let t = &p.target;
        let (_, chain) = p.chain.as_ref()?;
        let own = &slots[p.own].state;
        let own_rate = own.series.rate();
        // A limit above the container's own (its pod's, an ancestor's, the node's) fills from
        // every container under it: this one fills it no faster than it grows itself, so
        // its time to that limit takes the lesser of the two rates (none while it does not
        // grow). In the cgroup v2 guests, five pods starting at once under a 768 MiB
        // ancestor read as 15.8 MiB/s of its growth, and every one of them, a steady holder
        // too, was warned about that ancestor's limit; a sawtooth whose own floor crept up
        // at a few KiB/s was warned about its pod's limit at the pod's 8.2 MiB/s.
        let share = |own: bool, rate: Option<f64>| {
            if own {
                rate
            } else {
                rate.zip(own_rate).map(|(r, o)| r.min(o))
            }
        };
        struct View<'a> {
            limit: Limit,
            unrec: u64,
            rate: Option<f64>,
            ttl: Option<f64>,
            stalled: bool,
            state: Option<&'a CgroupState>,
        }
        let mut views: Vec<View<'_>> = Vec::new();
        for (l, &s) in chain.iter().zip(&p.chain_slots) {
            let st = &slots[s].state;
            let Some(stat) = st.stat else { continue };
            let rate = share(s == p.own, st.series.rate());
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
        if let Some(n) = self.node_last {
            let rate = share(false, self.node.rate());
            views.push(View {
                limit: Limit {
                    kind: LimitKind::Node,
                    cgroup: None,
                    bytes: n.total,
                },
                unrec: n.unreclaimable,
                rate,
                ttl: time_to(n.total, n.unreclaimable, rate),
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
        if p.warned_at.is_some_and(|w| now - w < REPEAT.as_secs_f64()) {
            return None;
        }
        let top = match &v.limit.cgroup {
            Some(c) => self
                .mem
                .dir(c)
                .map(|d| read::top_processes(&d, TOP))
                .unwrap_or_default(),
            None => read::top_processes(&self.mem.dir("/")?, TOP),
        };
        let stat = v.state.and_then(|s| s.stat);
        let risk = new_risk(
            reason,
            t.container.as_deref().cloned(),
            t.cgroup.to_string(),
            v.limit.clone(),
            v.ttl,
            v.unrec,
            v.rate,
            stat.map(|s| s.usage),
            stat.map(|s| s.pressure),
            top,
        );
        self.plan.warned(i, now);
        Some(risk)
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
    plan::raise_open_file_limit();
    std::thread::Builder::new()
        .name("forecast".into())
        .spawn(move || {
            crate::host::priority::ordinary("forecast");
            run(opts, mem, containerd, tx)
        })?;
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
    let mut seen = None;
    let mut made = None;
    loop {
        // The targets are made again only when containerd's index changed.
        let generation = containerd.as_ref().map(|cd| cd.generation());
        if seen.is_none() || seen != Some(generation) {
            let mut targets: Vec<Target> = opts.cgroups.iter().map(|c| Target::cgroup(c)).collect();
            if let Some(cd) = &containerd {
                targets.extend(cd.filter_map(Target::of));
            }
            made = Some(targets.len());
            f.set_targets(targets);
            seen = Some(generation);
        }
        let t0 = Instant::now();
        let report = f.tick();
        // The first tick over new targets reads every new cgroup and its limits in full:
        // its cost is the start's, not the steady one's (`cargo xtask bench` reports both).
        if let Some(n) = made.take() {
            debug!(
                targets = n,
                reads = report.reads,
                full_reads = report.full_reads,
                took_ms = t0.elapsed().as_millis() as u64,
                "forecast: targets made, first tick"
            );
        }
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
#[path = "test_tree.rs"]
mod test_tree;

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod schedule_tests;

#[cfg(test)]
#[path = "assess_tests.rs"]
mod assess_tests;
