//! Kernel records in, schema-1 JSON events out.
//!
//! Schema 1 is documented in the README. Later versions add fields; they never rename or
//! drop one.

use observer_common::{valid, Constraint, Hook, OomKillRecord, RecordKind};
use serde::{Deserialize, Serialize};

use crate::kernel::{clock::boot_rfc3339, maps::LostCounts};

/// The JSON schema version written in every event.
pub const SCHEMA: u32 = 1;

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
    /// `oom_kill` or `memcg_oom`.
    pub event: &'static str,
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
    /// `oom_kill` only: why, and what happens now.
    #[serde(flatten)]
    pub explained: Option<Explained>,
}

fn comm(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
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

/// Resolves cgroup ids to paths for [`build`].
pub trait Resolve {
    /// Path of a cgroup id in the memory controller's hierarchy.
    fn memory_path(&mut self, id: u64) -> Option<String>;
}

/// Builds the JSON event for a kernel record. `memory_on_dfl` says which of the victim's
/// two cgroup ids is its cgroup in the memory controller's hierarchy.
pub fn build(r: &OomKillRecord, seq: u64, memory_on_dfl: bool, res: &mut dyn Resolve) -> Event {
    let has = |bit: u32| r.valid & bit != 0;
    let kind = RecordKind::from_u32(r.kind);
    let victim = matches!(kind, Some(RecordKind::OomKill | RecordKind::VictimExit)).then(|| {
        // On cgroup v2 a task's memory css can belong to an ancestor (where the controller is
        // not enabled below it); the task's own cgroup is the unified one.
        let cg = if memory_on_dfl {
            has(valid::VICTIM_DFL_CGROUP).then_some(r.victim_dfl_cgroup_id)
        } else {
            has(valid::VICTIM_MEMCG).then_some(r.victim_memcg_id)
        };
        Victim {
            pid: has(valid::VICTIM_PID).then_some(r.victim_pid),
            tgid: has(valid::VICTIM_TGID).then_some(r.victim_tgid),
            comm: has(valid::VICTIM_COMM).then(|| comm(&r.victim_comm)),
            uid: has(valid::VICTIM_UID).then_some(r.victim_uid),
            cgroup_id: cg,
            cgroup: cg.and_then(|id| res.memory_path(id)),
            unified_cgroup_id: (!memory_on_dfl && has(valid::VICTIM_DFL_CGROUP))
                .then_some(r.victim_dfl_cgroup_id),
            facts: if kind == Some(RecordKind::OomKill) {
                victim_facts(r)
            } else {
                VictimFacts::default()
            },
        }
    });
    let oom_cgroup = (has(valid::OOM_MEMCG) && r.oom_memcg_id != 0).then(|| CgroupRef {
        id: r.oom_memcg_id,
        path: res.memory_path(r.oom_memcg_id),
    });
    Event {
        schema: SCHEMA,
        seq,
        event: match kind {
            Some(k @ (RecordKind::MemcgOom | RecordKind::VictimExit)) => k.as_str(),
            _ => RecordKind::OomKill.as_str(),
        },
        time: boot_rfc3339(r.ktime_ns),
        ktime_ns: r.ktime_ns,
        hook: Hook::from_u32(r.hook).map_or("unknown", Hook::as_str),
        victim,
        oom_cgroup,
        constraint: Constraint::from_u32(r.constraint).map(Constraint::as_str),
        trigger: (r.trigger_pid != 0 || r.trigger_comm[0] != 0).then(|| Trigger {
            pid: r.trigger_pid,
            tgid: r.trigger_tgid,
            comm: comm(&r.trigger_comm),
        }),
        container: None,
        containers: Vec::new(),
        published: false,
        exit: (kind == Some(RecordKind::VictimExit) && has(valid::EXIT_CODE))
            .then(|| ExitInfo::from_status(r.exit_code)),
        kill_seq: None,
        explained: (kind == Some(RecordKind::OomKill)).then(|| Explained {
            oom_domain: oom_domain(r),
            incident: has(valid::INCIDENT).then_some(Incident {
                id: r.detail.incident_id,
                victims: r.detail.incident_victims,
            }),
            ..Explained::default()
        }),
    }
}

/// The system's page size (the unit of the kernel's counters).
pub fn page_size() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .map_or(4096, |v| v as u64)
    })
}

/// A counter in pages as bytes; per-CPU counters can read slightly negative, which the kernel
/// reports as 0 (`percpu_counter_read_positive`).
fn pages(n: i64) -> u64 {
    (n.max(0) as u64).saturating_mul(page_size())
}

/// A page counter limit in bytes; `None` when it is the "no limit" value (`PAGE_COUNTER_MAX`,
/// `LONG_MAX / PAGE_SIZE`).
fn limit(pages_: u64) -> Option<u64> {
    (pages_ < i64::MAX as u64 / page_size()).then(|| pages_ * page_size())
}

fn victim_facts(r: &OomKillRecord) -> VictimFacts {
    let has = |bit: u32| r.valid & bit != 0;
    let d = &r.detail;
    let rss = has(valid::RSS);
    let memory = VictimMemory {
        total_vm_bytes: has(valid::TOTAL_VM).then(|| pages(d.total_vm_pages as i64)),
        anon_rss_bytes: rss.then(|| pages(d.anon_rss_pages)),
        file_rss_bytes: rss.then(|| pages(d.file_rss_pages)),
        shmem_rss_bytes: rss.then(|| pages(d.shmem_rss_pages)),
        swap_bytes: rss.then(|| pages(d.swap_ents)),
        pgtables_bytes: has(valid::PGTABLES).then(|| d.pgtables_bytes.max(0) as u64),
    };
    VictimFacts {
        ns_pid: has(valid::NS_PID).then_some(d.ns_pid),
        oom_score_adj: has(valid::OOM_SCORE_ADJ).then_some(d.oom_score_adj),
        points: has(valid::POINTS).then_some(d.chosen_points),
        memory: (memory != VictimMemory::default()).then_some(memory),
        exe: None,
        cmdline: None,
    }
}

fn oom_domain(r: &OomKillRecord) -> Option<OomDomain> {
    let has = |bit: u32| r.valid & bit != 0;
    let d = &r.detail;
    let mem = has(valid::DOMAIN_MEMORY);
    let swap = has(valid::DOMAIN_SWAP);
    let total_pages = has(valid::TOTAL_PAGES).then_some(d.total_pages);
    let global = has(valid::OOM_MEMCG) && r.oom_memcg_id == 0;
    let dom = OomDomain {
        usage_bytes: mem.then(|| d.domain_usage_pages.saturating_mul(page_size())),
        limit_bytes: if mem {
            limit(d.domain_limit_pages)
        } else if global {
            // A global OOM's domain is the node: all of RAM and swap.
            total_pages.map(|p| p.saturating_mul(page_size()))
        } else {
            None
        },
        swap_usage_bytes: swap.then(|| d.domain_swap_usage_pages.saturating_mul(page_size())),
        swap_limit_bytes: if swap {
            limit(d.domain_swap_limit_pages)
        } else {
            None
        },
        total_pages,
    };
    (dom != OomDomain::default()).then_some(dom)
}

/// `12.3 MiB` or `1.5 GiB`.
pub fn human_bytes(b: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let mib = b as f64 / MIB;
    if mib >= 1024.0 {
        format!("{:.1} GiB", mib / 1024.0)
    } else {
        format!("{mib:.1} MiB")
    }
}

/// Whose limit fired, as the container's and pod's cgroups say, for [`Explained::limit`].
/// `container_cgroups`: the cgroups of the container the kill is attributed to (empty
/// without one); `pod_cgroup`: its pod's.
pub fn limit_in_words(
    ev: &Event,
    container_cgroups: &[&str],
    pod_cgroup: Option<&str>,
) -> Option<&'static str> {
    if ev.constraint == Some(observer_common::Constraint::Global.as_str()) {
        return Some("node");
    }
    let oom = ev.oom_cgroup.as_ref()?;
    let Some(path) = oom.path.as_deref() else {
        // Only the path can tell a container's cgroup from any other.
        return container_cgroups.is_empty().then_some("cgroup");
    };
    if container_cgroups.contains(&path) {
        Some("container")
    } else if pod_cgroup == Some(path) {
        Some("pod")
    } else {
        Some("cgroup")
    }
}

/// The one-line summary, from what the event already says.
pub fn message(ev: &Event) -> Option<String> {
    let v = ev.victim.as_ref()?;
    let x = ev.explained.as_ref()?;
    let comm = v.comm.as_deref().unwrap_or("a process");
    let mut m = match v.tgid.or(v.pid) {
        Some(pid) => format!("{comm} (pid {pid}) OOM-killed: "),
        None => format!("{comm} OOM-killed: "),
    };
    let domain = x.oom_domain.as_ref();
    let who = match (x.limit.as_deref(), &ev.container) {
        (Some("node"), _) => None,
        (Some("container"), Some(c)) => Some(match (&c.name, &c.pod) {
            (Some(n), Some(p)) => format!(
                "container {n} of pod {}/{}",
                p.namespace.as_deref().unwrap_or("?"),
                p.name.as_deref().unwrap_or("?")
            ),
            (Some(n), None) => format!("container {n}"),
            _ => format!("container {}", short_id(&c.id)),
        }),
        (Some("pod"), Some(c)) => Some(match &c.pod {
            Some(p) => format!(
                "pod {}/{}",
                p.namespace.as_deref().unwrap_or("?"),
                p.name.as_deref().unwrap_or("?")
            ),
            None => format!("the pod of container {}", short_id(&c.id)),
        }),
        _ => Some(
            match ev.oom_cgroup.as_ref().and_then(|c| c.path.as_deref()) {
                Some(p) => format!("cgroup {p}"),
                None => "its memory cgroup".to_string(),
            },
        ),
    };
    match who {
        None => {
            m.push_str("the node ran out of memory");
            if let Some(b) = domain.and_then(|d| d.limit_bytes) {
                m.push_str(&format!(" ({} of RAM and swap)", human_bytes(b)));
            }
        }
        Some(w) => {
            m.push_str(&w);
            match domain.and_then(|d| d.limit_bytes) {
                Some(l) => m.push_str(&format!(" reached its {} limit", human_bytes(l))),
                None => m.push_str(" reached its limit"),
            }
            if let Some(u) = domain.and_then(|d| d.usage_bytes) {
                m.push_str(&format!(" (usage {})", human_bytes(u)));
            }
        }
    }
    if let Some(anon) = v.facts.memory.as_ref().and_then(|mem| mem.anon_rss_bytes) {
        m.push_str(&format!("; {comm} held {} anon", human_bytes(anon)));
    }
    match x.container_exits {
        Some(true) => m.push_str("; the container exits"),
        Some(false) => m.push_str("; a process was killed and the container keeps running"),
        None => {}
    }
    Some(m)
}

fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::record::{mkdir_path, Record, RecordError};
    use observer_common::Plain;
    use observer_common::{CgroupAttachRecord, CgroupMkdirRecord, CGROUP_PATH_LEN, COMM_LEN};

    struct Paths;
    impl Resolve for Paths {
        fn memory_path(&mut self, id: u64) -> Option<String> {
            (id == 42).then(|| "/pod/ctr".to_string())
        }
    }

    fn name(s: &str) -> [u8; COMM_LEN] {
        let mut b = [0u8; COMM_LEN];
        b[..s.len()].copy_from_slice(s.as_bytes());
        b
    }

    fn kill() -> OomKillRecord {
        OomKillRecord {
            kind: RecordKind::OomKill as u32,
            hook: Hook::TpBtf as u32,
            ktime_ns: 5,
            valid: valid::VICTIM_PID | valid::VICTIM_COMM | valid::VICTIM_MEMCG | valid::OOM_MEMCG,
            victim_pid: 77,
            victim_tgid: 0,
            victim_uid: 0,
            victim_memcg_id: 42,
            victim_dfl_cgroup_id: 9,
            oom_memcg_id: 42,
            constraint: Constraint::Memcg as u32,
            trigger_pid: 77,
            trigger_tgid: 77,
            exit_code: 0,
            victim_comm: name("hog"),
            trigger_comm: name("hog"),
            detail: Default::default(),
        }
    }

    #[test]
    fn schema_1_fields_and_nulls_for_unseen_fields() {
        let e = build(&kill(), 3, false, &mut Paths);
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["schema"], 1);
        assert_eq!(v["seq"], 3);
        assert_eq!(v["event"], "oom_kill");
        assert_eq!(v["hook"], "tp_btf");
        assert_eq!(v["victim"]["pid"], 77);
        assert!(
            v["victim"]["tgid"].is_null(),
            "tgid not seen must be null, not 0"
        );
        assert!(v["victim"]["uid"].is_null());
        assert_eq!(v["victim"]["comm"], "hog");
        assert_eq!(v["victim"]["cgroup_id"], 42);
        assert_eq!(v["victim"]["cgroup"], "/pod/ctr");
        assert!(v["victim"]["unified_cgroup_id"].is_null());
        assert_eq!(v["oom_cgroup"]["id"], 42);
        assert_eq!(v["oom_cgroup"]["path"], "/pod/ctr");
        assert_eq!(v["constraint"], "memcg");
        assert_eq!(v["trigger"]["comm"], "hog");
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
        for key in [
            "schema",
            "seq",
            "event",
            "time",
            "ktime_ns",
            "hook",
            "victim",
            "oom_cgroup",
            "constraint",
            "trigger",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
    }

    #[test]
    fn global_oom_has_no_oom_cgroup_and_unknown_constraint_is_null() {
        let mut r = kill();
        r.oom_memcg_id = 0;
        r.constraint = Constraint::Global as u32;
        let v = serde_json::to_value(build(&r, 1, false, &mut Paths)).unwrap();
        assert!(v["oom_cgroup"].is_null());
        assert_eq!(v["constraint"], "global");
        r.valid &= !valid::OOM_MEMCG;
        r.constraint = Constraint::UNSEEN;
        let v = serde_json::to_value(build(&r, 1, false, &mut Paths)).unwrap();
        assert!(v["oom_cgroup"].is_null());
        assert!(v["constraint"].is_null());
    }

    #[test]
    fn v2_uses_the_unified_cgroup_id() {
        let mut r = kill();
        r.valid |= valid::VICTIM_DFL_CGROUP;
        r.victim_dfl_cgroup_id = 42;
        r.victim_memcg_id = 1;
        let v = serde_json::to_value(build(&r, 1, true, &mut Paths)).unwrap();
        assert_eq!(v["victim"]["cgroup_id"], 42);
        assert!(v["victim"]["unified_cgroup_id"].is_null());
    }

    #[test]
    fn victim_exit_carries_the_signal() {
        let mut r = kill();
        r.kind = RecordKind::VictimExit as u32;
        r.hook = Hook::SchedProcessExit as u32;
        r.valid = valid::VICTIM_PID | valid::VICTIM_MEMCG | valid::EXIT_CODE;
        r.exit_code = 9;
        let v = serde_json::to_value(build(&r, 2, false, &mut Paths)).unwrap();
        assert_eq!(v["event"], "victim_exit");
        assert_eq!(v["hook"], "sched_process_exit");
        assert_eq!(v["exit"]["signal"], 9);
        assert!(v["exit"]["code"].is_null());
        assert_eq!(v["victim"]["cgroup"], "/pod/ctr");
        assert_eq!(
            ExitInfo::from_status(3 << 8),
            ExitInfo {
                status: 768,
                signal: None,
                code: Some(3)
            }
        );
        let k = serde_json::to_value(build(&kill(), 1, false, &mut Paths)).unwrap();
        assert!(
            k.get("exit").is_none() && k.get("kill_seq").is_none(),
            "kills carry no exit fields"
        );
    }

    #[test]
    fn memcg_oom_has_no_victim() {
        let mut r = kill();
        r.kind = RecordKind::MemcgOom as u32;
        r.valid = valid::OOM_MEMCG;
        let v = serde_json::to_value(build(&r, 1, false, &mut Paths)).unwrap();
        assert_eq!(v["event"], "memcg_oom");
        assert!(v["victim"].is_null());
        assert_eq!(v["oom_cgroup"]["path"], "/pod/ctr");
    }

    #[test]
    fn parses_records_and_rejects_short_or_unknown() {
        let r = kill();
        let bytes = r.as_bytes();
        assert!(matches!(Record::parse(bytes), Ok(Record::Oom(x)) if x.victim_pid == 77));
        assert!(matches!(
            Record::parse(&bytes[..10]),
            Err(RecordError::Short { .. })
        ));
        assert_eq!(
            Record::parse(&[9, 0, 0, 0]).unwrap_err(),
            RecordError::UnknownKind(9)
        );
        let a = CgroupAttachRecord {
            kind: RecordKind::CgroupAttach as u32,
            root: 4,
            id: 7,
            pid: 1234,
            level: 2,
        };
        let bytes = a.as_bytes();
        assert!(
            matches!(Record::parse(bytes), Ok(Record::Attach(x)) if x.pid == 1234 && x.id == 7)
        );
        assert!(matches!(
            Record::parse(&bytes[..8]),
            Err(RecordError::Short { .. })
        ));
        assert!(matches!(Record::parse(&[]), Err(RecordError::Short { .. })));
    }

    #[test]
    fn mkdir_paths_cut_short_are_not_trusted() {
        let mut m = CgroupMkdirRecord {
            kind: RecordKind::CgroupMkdir as u32,
            root: 4,
            id: 1,
            level: 1,
            path_len: 4,
            path: [0; CGROUP_PATH_LEN],
        };
        m.path[..4].copy_from_slice(b"/a/b");
        assert_eq!(mkdir_path(&m).as_deref(), Some("/a/b"));
        m.path_len = CGROUP_PATH_LEN as u32;
        assert_eq!(mkdir_path(&m), None);
    }

    #[test]
    fn abi_names_are_the_json_names() {
        assert_eq!(Hook::from_u32(3).map(Hook::as_str), Some("tp_btf"));
        assert_eq!(Hook::try_from(6), Ok(Hook::SchedProcessExit));
        assert_eq!(Hook::try_from(99), Err(99));
        assert_eq!(Constraint::from_u32(Constraint::UNSEEN), None);
        for k in RecordKind::ALL {
            assert_eq!(RecordKind::from_u32(*k as u32), Some(*k));
        }
        let lost = LostEvent::new(
            4,
            LostCounts {
                cgroup_mkdir: 3,
                ..Default::default()
            },
            LostCounts::default(),
        );
        let v = serde_json::to_value(lost).unwrap();
        assert_eq!(v["event"], "lost");
        assert_eq!(v["lost"]["cgroup_mkdir"], 3);
        assert_eq!(v["lost"]["oom_kill"], 0);
    }

    #[test]
    fn a_kill_is_explained_from_the_kernels_detail() {
        let ps = page_size();
        let mut r = kill();
        r.valid |= valid::DOMAIN_MEMORY | valid::RSS | valid::OOM_SCORE_ADJ | valid::NS_PID;
        r.detail.domain_usage_pages = (64 << 20) / ps;
        r.detail.domain_limit_pages = (64 << 20) / ps;
        r.detail.anon_rss_pages = (60 << 20) / ps as i64;
        r.detail.file_rss_pages = -3; // a per-CPU counter's central value can lag below zero
        r.detail.oom_score_adj = 500;
        r.detail.ns_pid = 1;
        let mut e = build(&r, 1, false, &mut Paths);
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["oom_domain"]["limit_bytes"], 64u64 << 20);
        assert!(v["oom_domain"]["total_pages"].is_null(), "not seen: null");
        assert!(v["incident"].is_null());
        assert_eq!(v["victim"]["memory"]["anon_rss_bytes"], 60u64 << 20);
        assert_eq!(v["victim"]["memory"]["file_rss_bytes"], 0);
        assert!(v["victim"]["memory"]["total_vm_bytes"].is_null());
        assert_eq!(v["victim"]["oom_score_adj"], 500);
        assert_eq!(v["victim"]["ns_pid"], 1);
        assert!(v["victim"]["points"].is_null());

        e.container = Some(ContainerRef {
            id: "0123456789abcdef".into(),
            namespace: "k8s.io".into(),
            name: Some("app".into()),
            runtime: "io.containerd.runc.v2".into(),
            pod: Some(crate::enrich::container::Pod {
                name: Some("web-0".into()),
                namespace: Some("shop".into()),
                uid: None,
            }),
        });
        assert_eq!(
            limit_in_words(&e, &["/pod/ctr"], Some("/pod")),
            Some("container")
        );
        assert_eq!(
            limit_in_words(&e, &["/pod/ctr/x"], Some("/pod/ctr")),
            Some("pod")
        );
        assert_eq!(limit_in_words(&e, &["/other"], Some("/o")), Some("cgroup"));
        let x = e.explained.as_mut().unwrap();
        x.limit = Some("container".into());
        x.container_exits = Some(true);
        assert_eq!(
            message(&e).unwrap(),
            "hog (pid 77) OOM-killed: container app of pod shop/web-0 reached its 64.0 MiB limit \
             (usage 64.0 MiB); hog held 60.0 MiB anon; the container exits"
        );
    }

    #[test]
    fn a_global_oom_is_the_nodes_and_an_unlimited_counter_is_null() {
        let ps = page_size();
        let mut r = kill();
        r.oom_memcg_id = 0;
        r.constraint = Constraint::Global as u32;
        r.valid |= valid::TOTAL_PAGES | valid::INCIDENT | valid::POINTS;
        r.detail.total_pages = (2u64 << 30) / ps;
        r.detail.incident_id = 99;
        r.detail.incident_victims = 1;
        r.detail.chosen_points = 1234;
        let mut e = build(&r, 1, false, &mut Paths);
        assert_eq!(limit_in_words(&e, &[], None), Some("node"));
        e.explained.as_mut().unwrap().limit = Some("node".into());
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["oom_domain"]["limit_bytes"], 2u64 << 30, "RAM and swap");
        assert_eq!(v["incident"]["id"], 99);
        assert_eq!(v["victim"]["points"], 1234);
        assert_eq!(
            message(&e).unwrap(),
            "hog (pid 77) OOM-killed: the node ran out of memory (2.0 GiB of RAM and swap)"
        );
        // PAGE_COUNTER_MAX is "no limit".
        assert_eq!(limit(i64::MAX as u64 / ps), None);
        assert_eq!(limit(10), Some(10 * ps));
        // Exits carry none of it.
        r.kind = RecordKind::VictimExit as u32;
        let v = serde_json::to_value(build(&r, 2, false, &mut Paths)).unwrap();
        assert!(v.get("oom_domain").is_none() && v.get("message").is_none());
        assert!(v["victim"]["memory"].is_null());
    }
}
