//! The JSON events: what one line holds.
//!
//! The schema is documented in docs/events.md. Each version adds fields or events (2 added
//! `container_exit`, `oom_risk` and the kill's `warning` and `warning_lead_s`); none renames
//! or drops one.

use serde::{Deserialize, Serialize};

use super::kind::EventKind;
use crate::kernel::maps::LostCounts;

/// The JSON schema version written in every event.
pub const SCHEMA: u32 = 2;

/// A cgroup named by id and, when known, path.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CgroupRef {
    /// The cgroup id (its directory's inode number).
    pub id: u64,
    /// Path in its hierarchy, or null when it could not be resolved.
    pub path: Option<String>,
}

/// The killed process.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Victim {
    /// Thread id.
    pub pid: Option<u32>,
    /// Process id.
    pub tgid: Option<u32>,
    /// Command name.
    pub comm: Option<String>,
    /// Real uid.
    pub uid: Option<u32>,
    /// Cgroup id in the hierarchy with the memory controller.
    pub cgroup_id: Option<u64>,
    /// Cgroup path in that hierarchy.
    pub cgroup: Option<String>,
    /// Cgroup id in the unified hierarchy when memory is on cgroup v1 (hybrid hosts).
    pub unified_cgroup_id: Option<u64>,
    /// What the kernel and `/proc` said about it at the kill (all null on exits).
    #[serde(flatten)]
    pub facts: VictimFacts,
}

/// The victim at its kill: what ran, its badness and its memory.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct VictimFacts {
    /// Its process id in its own pid namespace (1: that namespace's init).
    pub ns_pid: Option<u32>,
    /// `signal->oom_score_adj`.
    pub oom_score_adj: Option<i32>,
    /// `oom_control.chosen_points`: its badness, for the victim the OOM killer chose.
    pub points: Option<i64>,
    /// Its memory, as the kernel's own "Killed process" line reports it.
    pub memory: Option<VictimMemory>,
    /// `/proc/<pid>/exe` when the daemon handled the kill; null once it is gone.
    pub exe: Option<String>,
    /// `/proc/<pid>/cmdline`, the same way.
    pub cmdline: Option<Vec<String>>,
}

/// A victim's memory at its kill, in bytes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct VictimMemory {
    /// `total_vm`.
    pub total_vm_bytes: Option<u64>,
    /// `MM_ANONPAGES`.
    pub anon_rss_bytes: Option<u64>,
    /// `MM_FILEPAGES`.
    pub file_rss_bytes: Option<u64>,
    /// `MM_SHMEMPAGES`.
    pub shmem_rss_bytes: Option<u64>,
    /// `MM_SWAPENTS`.
    pub swap_bytes: Option<u64>,
    /// `pgtables_bytes`.
    pub pgtables_bytes: Option<u64>,
}

/// The OOM domain at the kill: the OOM cgroup's page counter, or the node.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct OomDomain {
    /// Its memory page counter's usage.
    pub usage_bytes: Option<u64>,
    /// Its memory limit; null when unlimited or not seen. For a global OOM, RAM and swap.
    pub limit_bytes: Option<u64>,
    /// Its swap page counter's usage (cgroup v2).
    pub swap_usage_bytes: Option<u64>,
    /// Its swap limit (cgroup v2); null when unlimited.
    pub swap_limit_bytes: Option<u64>,
    /// `oom_control.totalpages`: the domain's size in pages.
    pub total_pages: Option<u64>,
}

/// One invocation of the OOM killer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Incident {
    /// Shared by every victim of the invocation.
    pub id: u64,
    /// Victims of the incident so far, this one included.
    pub victims: u32,
}

/// Why a process was killed and what happens now (`oom_kill` only).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Explained {
    /// The OOM domain's counter and size; null when the hook sees none of it.
    pub oom_domain: Option<OomDomain>,
    /// Which limit fired: `container`, `pod`, `node` or `cgroup`.
    pub limit: Option<String>,
    /// Whether the victim was its container's init (the container exits).
    pub container_exits: Option<bool>,
    /// The OOM killer invocation it belongs to.
    pub incident: Option<Incident>,
    /// A one-line summary.
    pub message: Option<String>,
    /// Seconds between the first `oom_risk` for its container (or cgroup) and the kill;
    /// null when there was none (see `warning`).
    #[serde(default)]
    pub warning_lead_s: Option<LeadSeconds>,
    /// `oom_risk` when the kill was foreseen, `none` when it was not; null with the
    /// forecast off.
    #[serde(default)]
    pub warning: Option<String>,
}

/// Seconds, kept as milliseconds so the event stays `Eq`; written as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeadSeconds(pub u64);

impl LeadSeconds {
    /// From nanoseconds.
    pub fn from_ns(ns: u64) -> LeadSeconds {
        LeadSeconds(ns / 1_000_000)
    }

    /// As seconds.
    pub fn secs(self) -> f64 {
        self.0 as f64 / 1000.0
    }
}

impl Serialize for LeadSeconds {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.secs())
    }
}

impl<'de> Deserialize<'de> for LeadSeconds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let secs = f64::deserialize(d)?;
        Ok(LeadSeconds((secs.max(0.0) * 1000.0).round() as u64))
    }
}

/// The task that ran into the OOM.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Trigger {
    /// Thread id.
    pub pid: u32,
    /// Process id.
    pub tgid: u32,
    /// Command name.
    pub comm: String,
}

/// How a victim's process ended (`task->exit_code`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ExitInfo {
    /// The raw status, as `waitpid` would see it.
    pub status: i32,
    /// The signal that ended it (9 for an OOM kill), or null when it exited normally.
    pub signal: Option<i32>,
    /// The exit code when it exited normally, else null.
    pub code: Option<i32>,
}

impl ExitInfo {
    /// Decodes a kernel exit status.
    pub fn from_status(status: i32) -> Self {
        let sig = status & 0x7f;
        ExitInfo {
            status,
            signal: (sig != 0).then_some(sig),
            code: (sig == 0).then_some((status >> 8) & 0xff),
        }
    }
}

/// The container a kill is attributed to.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ContainerRef {
    /// Container id.
    pub id: String,
    /// containerd namespace.
    pub namespace: String,
    /// Kubernetes container name, if any.
    pub name: Option<String>,
    /// containerd runtime name.
    pub runtime: String,
    /// Kubernetes pod, if any.
    pub pod: Option<crate::enrich::container::Pod>,
}

impl From<&crate::enrich::container::ContainerInfo> for ContainerRef {
    fn from(c: &crate::enrich::container::ContainerInfo) -> Self {
        ContainerRef {
            id: c.id.clone(),
            namespace: c.namespace.clone(),
            name: c.name.clone(),
            runtime: c.runtime.clone(),
            pod: c.pod.clone(),
        }
    }
}

/// One JSON line.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Event {
    /// Always [`SCHEMA`].
    pub schema: u32,
    /// Gap-free per daemon run.
    pub seq: u64,
    /// `oom_kill`, `oom_kill_skipped`, `memcg_oom` or `victim_exit` (`oom_decision` is
    /// internal: it hands TaskOOM over and writes no line).
    pub event: EventKind,
    /// Wall-clock time of the kernel event, RFC 3339.
    pub time: String,
    /// `CLOCK_BOOTTIME` of the kernel event.
    pub ktime_ns: u64,
    /// The program that saw it.
    pub hook: &'static str,
    /// The killed process; null for `memcg_oom`.
    pub victim: Option<Victim>,
    /// The memory cgroup whose limit was hit; null for a global OOM or when not seen.
    pub oom_cgroup: Option<CgroupRef>,
    /// `memcg`, `global`, `cpuset`, `mempolicy`, or null when not seen.
    pub constraint: Option<&'static str>,
    /// The allocating task.
    pub trigger: Option<Trigger>,
    /// The container the kill is attributed to, or null when no container owns the cgroup.
    pub container: Option<ContainerRef>,
    /// Every container the kill is attributed to, when there is more than one (a sandbox
    /// with several application containers hit at pod level).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<ContainerRef>,
    /// Whether containerd has a TaskOOM for this kill (the containerd sink) when the line
    /// is written.
    pub published: bool,
    /// `victim_exit` only: how the process ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitInfo>,
    /// `victim_exit` only: `seq` of the kill this exit follows (null if it was not seen).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kill_seq: Option<Option<u64>>,
    /// `oom_kill` and `oom_kill_skipped` only: when the OOM killer chose the victim
    /// (`oom_kill_process` entry, RFC 3339), before its report and its SIGKILL; null where the
    /// hook cannot see the decision (tp_btf, tracepoint). `time` stays the kill.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<Option<String>>,
    /// `CLOCK_BOOTTIME` of the decision (the incident id), or null.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_ktime_ns: Option<Option<u64>>,
    /// `oom_kill` only: why, and what happens now.
    #[serde(flatten)]
    pub explained: Option<Explained>,
}

/// `lost`: records the kernel could not hand over (a ring buffer was full), per kind.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LostEvent {
    /// Always [`SCHEMA`].
    pub schema: u32,
    /// In the same sequence as the kills.
    pub seq: u64,
    /// Always `lost`.
    pub event: &'static str,
    /// When the daemon noticed, RFC 3339.
    pub time: String,
    /// Lost since the previous `lost` event.
    pub lost: LostCounts,
    /// Lost since the daemon started.
    pub lost_total: LostCounts,
}

impl LostEvent {
    /// The event for counts read now.
    pub fn new(seq: u64, lost: LostCounts, lost_total: LostCounts) -> LostEvent {
        LostEvent {
            schema: SCHEMA,
            seq,
            event: "lost",
            time: humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
            lost,
            lost_total,
        }
    }
}
