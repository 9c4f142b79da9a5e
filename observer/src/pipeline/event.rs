//! Kernel records in, schema-1 JSON events out.
//!
//! Schema 1 is documented in the README. Later versions add fields; they never rename or
//! drop one.

use observer_common::{constraint, hook, kind, valid, OomKillRecord};
use serde::Serialize;

use crate::kernel::clock::boot_rfc3339;

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
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
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
}

/// Name of a hook id.
pub fn hook_name(h: u32) -> &'static str {
    match h {
        hook::FENTRY => "fentry",
        hook::KPROBE => "kprobe",
        hook::TP_BTF => "tp_btf",
        hook::TRACEPOINT => "tracepoint",
        hook::SCHED_SWITCH => "sched_switch",
        hook::SCHED_PROCESS_EXIT => "sched_process_exit",
        _ => "unknown",
    }
}

/// Name of an `oom_constraint` value.
pub fn constraint_name(c: u32) -> Option<&'static str> {
    match c {
        constraint::GLOBAL => Some("global"),
        constraint::CPUSET => Some("cpuset"),
        constraint::MEMPOLICY => Some("mempolicy"),
        constraint::MEMCG => Some("memcg"),
        _ => None,
    }
}

fn comm(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
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
    let victim = (r.kind == kind::OOM_KILL || r.kind == kind::VICTIM_EXIT).then(|| {
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
        }
    });
    let oom_cgroup = (has(valid::OOM_MEMCG) && r.oom_memcg_id != 0).then(|| CgroupRef {
        id: r.oom_memcg_id,
        path: res.memory_path(r.oom_memcg_id),
    });
    Event {
        schema: SCHEMA,
        seq,
        event: match r.kind {
            kind::MEMCG_OOM => "memcg_oom",
            kind::VICTIM_EXIT => "victim_exit",
            _ => "oom_kill",
        },
        time: boot_rfc3339(r.ktime_ns),
        ktime_ns: r.ktime_ns,
        hook: hook_name(r.hook),
        victim,
        oom_cgroup,
        constraint: constraint_name(r.constraint),
        trigger: (r.trigger_pid != 0 || r.trigger_comm[0] != 0).then(|| Trigger {
            pid: r.trigger_pid,
            tgid: r.trigger_tgid,
            comm: comm(&r.trigger_comm),
        }),
        container: None,
        containers: Vec::new(),
        published: false,
        exit: (r.kind == kind::VICTIM_EXIT && has(valid::EXIT_CODE))
            .then(|| ExitInfo::from_status(r.exit_code)),
        kill_seq: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::record::{mkdir_path, Record, RecordError};
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
            kind: kind::OOM_KILL,
            hook: hook::TP_BTF,
            ktime_ns: 5,
            valid: valid::VICTIM_PID | valid::VICTIM_COMM | valid::VICTIM_MEMCG | valid::OOM_MEMCG,
            victim_pid: 77,
            victim_tgid: 0,
            victim_uid: 0,
            victim_memcg_id: 42,
            victim_dfl_cgroup_id: 9,
            oom_memcg_id: 42,
            constraint: constraint::MEMCG,
            trigger_pid: 77,
            trigger_tgid: 77,
            exit_code: 0,
            victim_comm: name("hog"),
            trigger_comm: name("hog"),
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
        r.constraint = constraint::GLOBAL;
        let v = serde_json::to_value(build(&r, 1, false, &mut Paths)).unwrap();
        assert!(v["oom_cgroup"].is_null());
        assert_eq!(v["constraint"], "global");
        r.valid &= !valid::OOM_MEMCG;
        r.constraint = constraint::UNKNOWN;
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
        r.kind = kind::VICTIM_EXIT;
        r.hook = hook::SCHED_PROCESS_EXIT;
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
        r.kind = kind::MEMCG_OOM;
        r.valid = valid::OOM_MEMCG;
        let v = serde_json::to_value(build(&r, 1, false, &mut Paths)).unwrap();
        assert_eq!(v["event"], "memcg_oom");
        assert!(v["victim"].is_null());
        assert_eq!(v["oom_cgroup"]["path"], "/pod/ctr");
    }

    #[test]
    fn parses_records_and_rejects_short_or_unknown() {
        let r = kill();
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&r as *const OomKillRecord).cast::<u8>(),
                std::mem::size_of::<OomKillRecord>(),
            )
        };
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
            kind: kind::CGROUP_ATTACH,
            root: 4,
            id: 7,
            pid: 1234,
            level: 2,
        };
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&a as *const CgroupAttachRecord).cast::<u8>(),
                std::mem::size_of::<CgroupAttachRecord>(),
            )
        };
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
            kind: kind::CGROUP_MKDIR,
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
}
