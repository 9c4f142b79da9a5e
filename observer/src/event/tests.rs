//! Unit tests of `event`.

use super::explain::{limit_in_words, message};
use super::facts::{limit, page_size};
use super::*;
use crate::kernel::{
    maps::LostCounts,
    record::{mkdir_path, Record, RecordError},
};
use observer_common::Plain;
use observer_common::{
    valid, CgroupAttachRecord, Constraint, Hook, OomKillRecord, RecordKind, CGROUP_PATH_LEN,
    COMM_LEN,
};

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
    assert_eq!(v["schema"], 2);
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
    assert!(matches!(Record::parse(bytes), Ok(Record::Attach(x)) if x.pid == 1234 && x.id == 7));
    assert!(matches!(
        Record::parse(&bytes[..8]),
        Err(RecordError::Short { .. })
    ));
    assert!(matches!(Record::parse(&[]), Err(RecordError::Short { .. })));
}

#[test]
fn mkdir_paths_cut_short_are_not_trusted() {
    let mut m = crate::kernel::record::mkdir_record(4, 1, b"/a/b");
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

#[test]
fn kills_carry_the_decision_time_where_the_hook_sees_it() {
    // tp_btf sees no decision: the field is there, null.
    let v = serde_json::to_value(build(&kill(), 1, false, &mut Paths)).unwrap();
    assert!(v["decided_at"].is_null() && v.get("decided_at").is_some());
    assert!(v["decided_ktime_ns"].is_null());
    // fentry: the incident id is the decision's time, before the kill's.
    let mut r = kill();
    r.hook = Hook::Fentry as u32;
    r.ktime_ns = 9_000_000_000;
    r.valid |= valid::INCIDENT;
    r.detail.incident_id = 8_000_000_000;
    let v = serde_json::to_value(build(&r, 1, false, &mut Paths)).unwrap();
    assert_eq!(v["decided_ktime_ns"], 8_000_000_000u64);
    assert_eq!(v["ktime_ns"], 9_000_000_000u64, "time stays the kill");
    let decided = humantime::parse_rfc3339(v["decided_at"].as_str().unwrap()).unwrap();
    let killed = humantime::parse_rfc3339(v["time"].as_str().unwrap()).unwrap();
    // Each time is mapped to the wall clock on its own: allow for the clock's drift.
    let gap = killed.duration_since(decided).unwrap().as_secs_f64();
    assert!((gap - 1.0).abs() < 0.01, "{gap}");
    // Exits and memcg OOMs have no decision.
    r.kind = RecordKind::VictimExit as u32;
    let v = serde_json::to_value(build(&r, 1, false, &mut Paths)).unwrap();
    assert!(v.get("decided_at").is_none());
}

#[test]
fn decisions_and_skipped_kills_are_their_own_events() {
    let mut r = kill();
    r.kind = RecordKind::OomDecision as u32;
    r.hook = Hook::Kprobe as u32;
    r.valid |= valid::INCIDENT;
    r.detail.incident_id = 5;
    let e = build(&r, 0, false, &mut Paths);
    assert_eq!(e.event.as_str(), "oom_decision");
    assert_eq!(e.decided_ktime_ns, Some(Some(5)));
    assert!(e.explained.is_none(), "a decision explains nothing yet");
    r.kind = RecordKind::OomSkipped as u32;
    let v = serde_json::to_value(build(&r, 1, false, &mut Paths)).unwrap();
    assert_eq!(v["event"], "oom_kill_skipped");
    assert_eq!(v["victim"]["pid"], 77);
    assert!(v.get("message").is_none(), "no kill to explain");
}
