//! The `oom_risk` event: a container is about to be OOM-killed, by which limit, and when.

use serde::Serialize;

use super::{
    limits::{Limit, LimitKind},
    read::{Pressure, TopProcess},
};
use crate::{
    audit::finding::mib,
    event::{ContainerRef, SCHEMA},
};

/// Its `event` name.
pub const OOM_RISK: &str = "oom_risk";

/// Why the warning: the projection, or a stall in reclaim right at the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RiskReason {
    /// The unreclaimable memory grows and reaches the limit within the threshold.
    Growth,
    /// It sits at the limit and the kernel keeps failing charges (or stalls, PSI full).
    Stall,
}

/// One `oom_risk` line.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RiskEvent {
    /// Always [`SCHEMA`].
    pub schema: u32,
    /// In the same sequence as the kills.
    pub seq: u64,
    /// Always `oom_risk`.
    pub event: &'static str,
    /// When the model decided, RFC 3339.
    pub time: String,
    /// `CLOCK_BOOTTIME` of that moment (the kill's `warning_lead_s` counts from it).
    pub ktime_ns: u64,
    /// `growth` or `stall`.
    pub reason: RiskReason,
    /// The container at risk; null for a cgroup named by `--forecast-cgroup`.
    pub container: Option<ContainerRef>,
    /// The memory cgroup modelled (the container's).
    pub cgroup: String,
    /// The limit that will fire.
    pub limit: Limit,
    /// Seconds until the unreclaimable memory reaches it at the current rate; null for a
    /// stall with no growth.
    pub time_left_s: Option<f64>,
    /// The limit's bytes less the unreclaimable memory of its domain (0 when over).
    pub headroom_bytes: u64,
    /// The limit's domain (the cgroup holding it, or the node): anon, shmem, unevictable
    /// and kernel memory, bytes.
    pub unreclaimable_bytes: u64,
    /// How fast that grows, bytes per second (the floor of the series: see the model); for
    /// a limit above the container's own, the container's own rate where that is less.
    pub rate_bytes_per_s: Option<f64>,
    /// The domain's page counter, page cache included.
    pub usage_bytes: Option<u64>,
    /// The domain's pressure.
    pub pressure: Option<Pressure>,
    /// The domain's processes holding the most unreclaimable memory, most first (at most 3).
    pub top: Vec<TopProcess>,
    /// A one-line summary.
    pub message: String,
}

impl RiskEvent {
    /// The summary line.
    pub fn summary(&self) -> String {
        let who = match &self.container {
            Some(c) => match (&c.name, &c.pod) {
                (Some(n), Some(p)) => format!(
                    "container {n} of pod {}/{}",
                    p.namespace.as_deref().unwrap_or("?"),
                    p.name.as_deref().unwrap_or("?")
                ),
                (Some(n), None) => format!("container {n}"),
                _ => format!("container {}", c.id.get(..12).unwrap_or(&c.id)),
            },
            None => format!("cgroup {}", self.cgroup),
        };
        let whose = match self.limit.kind {
            LimitKind::Node => "the node's memory".to_string(),
            k => format!("its {} limit of {}", k.as_str(), mib(self.limit.bytes)),
        };
        let unrec = mib(self.unreclaimable_bytes);
        match (self.reason, self.time_left_s, self.rate_bytes_per_s) {
            (RiskReason::Growth, Some(t), Some(r)) => format!(
                "{who} will reach {whose} in {t:.0} s: {unrec} unreclaimable, growing {}/s",
                mib(r.max(0.0) as u64)
            ),
            _ => format!("{who} stalls in reclaim at {whose}: {unrec} unreclaimable"),
        }
    }

    /// The log line for it.
    pub fn log(&self) {
        tracing::warn!(
            cgroup = %self.cgroup,
            container = self.container.as_ref().map(|c| c.id.as_str()).unwrap_or("-"),
            limit = self.limit.kind.as_str(),
            time_left_s = self.time_left_s.map(|t| format!("{t:.1}")).unwrap_or_else(|| "-".into()),
            "{}",
            self.message
        );
    }
}

/// A new event, `seq` 0 (the processor numbers it).
#[allow(
    clippy::too_many_arguments,
    reason = "one field each; named at the one caller"
)]
pub fn new_risk(
    reason: RiskReason,
    container: Option<ContainerRef>,
    cgroup: String,
    limit: Limit,
    time_left_s: Option<f64>,
    unreclaimable_bytes: u64,
    rate_bytes_per_s: Option<f64>,
    usage_bytes: Option<u64>,
    pressure: Option<Pressure>,
    top: Vec<TopProcess>,
) -> RiskEvent {
    let mut ev = RiskEvent {
        schema: SCHEMA,
        seq: 0,
        event: OOM_RISK,
        time: crate::kernel::clock::rfc3339(std::time::SystemTime::now()),
        ktime_ns: crate::kernel::clock::boot_ns(),
        reason,
        container,
        cgroup,
        headroom_bytes: limit.bytes.saturating_sub(unreclaimable_bytes),
        limit,
        time_left_s: time_left_s.map(|t| (t * 10.0).round() / 10.0),
        unreclaimable_bytes,
        rate_bytes_per_s: rate_bytes_per_s.map(f64::round),
        usage_bytes,
        pressure,
        top,
        message: String::new(),
    };
    ev.message = ev.summary();
    ev
}
