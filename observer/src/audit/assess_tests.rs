//! `assess` on its own, and through the `Auditor`'s events: the verdict and what is said of it.

use super::*;
use crate::audit::{finding::events, state::Auditor};
use crate::enrich::container::ContainerKey;

fn pod_ctr(id: &str, kind: &str, path: &str, runsc: bool) -> ContainerInfo {
    let mut c = ContainerInfo {
        namespace: "k8s.io".into(),
        id: id.into(),
        runtime: "io.containerd.runc.v2".into(),
        container_type: Some(kind.into()),
        sandbox_id: (kind == "container").then(|| "sb".to_string()),
        cgroups_path: Some(path.into()),
        spec_cgroup: crate::host::cgroup_path::from_spec(path),
        task_pid: Some(100),
        ..Default::default()
    };
    if runsc {
        c.runtime_binary = Some("/usr/bin/runsc".into());
    }
    c
}

fn placed(p: &str, bytes: Option<u64>) -> (String, Effective) {
    (
        p.into(),
        Effective {
            bytes,
            cgroup: bytes.map(|_| p.to_string()),
            ..Default::default()
        },
    )
}

const POD: &str = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice";

#[test]
fn the_incident_gvisor_sandbox_under_system_slice() {
    let app = pod_ctr(
        "app",
        "container",
        "kubepods-burstable-pod1.slice:cri-containerd:app",
        true,
    );
    assert_eq!(pod_cgroup(&app).as_deref(), Some(POD));
    assert_eq!(expected_cgroup(&app).as_deref(), Some(POD));
    let o = Observed {
        pids: vec![100],
        placed: vec![placed(
            "/system.slice/kubepods-burstable-pod1.slice:cri-containerd:sb",
            None,
        )],
        pod_limit: Some(256 << 20),
        sandbox: Some(SandboxProcess {
            pid: 100,
            total_memory: Some(503 << 30),
        }),
    };
    let a = assess(&app, &o);
    assert_eq!(a.declared.as_ref().unwrap().bytes, 256 << 20);
    assert_eq!(
        a.unenforced,
        vec![reasons::NO_LIMIT, reasons::OUTSIDE_EXPECTED_CGROUP]
    );
    assert!(!a.oversized, "no effective limit to be above");
}

#[test]
fn gvisor_sandbox_in_its_pod_is_enforced_but_maybe_oversized() {
    let sb = pod_ctr(
        "sb",
        "sandbox",
        "kubepods-burstable-pod1.slice:cri-containerd:sb",
        true,
    );
    let app = pod_ctr(
        "app",
        "container",
        "kubepods-burstable-pod1.slice:cri-containerd:app",
        true,
    );
    let o = Observed {
        pids: vec![100],
        placed: vec![placed(
            &format!("{POD}/cri-containerd-sb.scope"),
            Some(256 << 20),
        )],
        pod_limit: Some(256 << 20),
        sandbox: Some(SandboxProcess {
            pid: 100,
            total_memory: Some(24 << 30),
        }),
    };
    for c in [&sb, &app] {
        let a = assess(c, &o);
        assert!(a.unenforced.is_empty(), "{}: {:?}", c.id, a.unenforced);
        assert!(a.oversized, "old runsc sizes at the host's memory");
    }
}

#[test]
fn runc_container_limits_compare_with_tolerance() {
    let mut c = pod_ctr("app", "container", "/kubepods/pod1/app", false);
    c.memory_limit = Some(64 << 20);
    let at = |bytes| Observed {
        pids: vec![100, 101],
        placed: vec![placed("/kubepods/pod1/app", bytes)],
        pod_limit: Some(128 << 20),
        sandbox: None,
    };
    let a = assess(&c, &at(Some((64 << 20) + 4096)));
    assert!(a.unenforced.is_empty(), "page rounding is tolerated");
    assert_eq!(a.declared.as_ref().unwrap().container, Some(64 << 20));
    assert_eq!(a.declared.as_ref().unwrap().pod, Some(128 << 20));
    let a = assess(&c, &at(Some(128 << 20)));
    assert_eq!(a.unenforced, vec![reasons::LIMIT_ABOVE_DECLARED]);
    let a = assess(&c, &at(None));
    assert_eq!(a.unenforced, vec![reasons::NO_LIMIT]);
    // A process in a sub-cgroup of its own cgroup is where it belongs.
    let mut o = at(Some(64 << 20));
    o.placed
        .push(placed("/kubepods/pod1/app/sub", Some(64 << 20)));
    assert!(assess(&c, &o).unenforced.is_empty());
    // One process outside is enough to be misplaced; held to its limit there, the
    // node is not at risk: `cgroup_misplaced`, not `limit_unenforced`.
    o.placed.push(placed("/elsewhere", Some(64 << 20)));
    let a = assess(&c, &o);
    assert!(a.unenforced.is_empty(), "{:?}", a.unenforced);
    assert!(a.misplaced);
    assert_eq!(a.placed_cgroup, "/elsewhere");
    let evs = Auditor::default().update(&c, &a);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].event, events::CGROUP_MISPLACED);
    assert_eq!(evs[0].reasons, vec![reasons::OUTSIDE_EXPECTED_CGROUP]);
    // Outside and unlimited there: the limit is not enforced, and that is the finding.
    o.placed.push(placed("/elsewhere/free", None));
    let a = assess(&c, &o);
    assert_eq!(
        a.unenforced,
        vec![reasons::NO_LIMIT, reasons::OUTSIDE_EXPECTED_CGROUP]
    );
    assert!(!a.misplaced);
}

#[test]
fn nothing_declared_nothing_found() {
    let c = ContainerInfo {
        namespace: "default".into(),
        id: "plain".into(),
        spec_cgroup: Some("/default/plain".into()),
        task_pid: Some(5),
        ..Default::default()
    };
    let o = Observed {
        pids: vec![5],
        placed: vec![placed("/elsewhere", None)],
        ..Default::default()
    };
    let a = assess(&c, &o);
    assert!(a.declared.is_none());
    assert!(a.unenforced.is_empty() && !a.oversized);
    let mut au = Auditor::default();
    assert!(au.update(&c, &a).is_empty());
}

#[test]
fn one_event_per_state_change_and_a_clearing_event() {
    let mut c = pod_ctr("app", "container", "/kubepods/pod1/app", false);
    c.memory_limit = Some(64 << 20);
    let mut o = Observed {
        pids: vec![100],
        placed: vec![placed("/system/app", None)],
        pod_limit: None,
        sandbox: None,
    };
    let mut au = Auditor::default();
    let ev = au.update(&c, &assess(&c, &o));
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].event, events::LIMIT_UNENFORCED);
    assert_eq!(ev[0].reason, reasons::NO_LIMIT);
    assert_eq!(ev[0].declared.bytes, 64 << 20);
    assert_eq!(ev[0].placed_cgroup, "/system/app");
    assert_eq!(ev[0].expected_cgroup.as_deref(), Some("/kubepods/pod1/app"));
    assert!(
        au.update(&c, &assess(&c, &o)).is_empty(),
        "same state: silent"
    );
    assert_eq!(
        au.affected_by_move(&[7, 100], None),
        vec![ContainerKey::new("k8s.io", "app")]
    );
    assert_eq!(
        au.affected_by_move(&[7], Some("/kubepods/pod1/app")),
        vec![ContainerKey::new("k8s.io", "app")]
    );
    assert!(au.affected_by_move(&[7], Some("/other")).is_empty());
    o.placed = vec![placed("/kubepods/pod1/app", Some(64 << 20))];
    let ev = au.update(&c, &assess(&c, &o));
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].event, events::LIMIT_ENFORCED);
    assert!(au.update(&c, &assess(&c, &o)).is_empty());
    let v = serde_json::to_value(&ev[0]).unwrap();
    for k in [
        "schema",
        "seq",
        "event",
        "time",
        "container",
        "declared",
        "effective",
        "placed_cgroup",
        "expected_cgroup",
        "reason",
        "reasons",
        "sandbox",
    ] {
        assert!(v.get(k).is_some(), "missing {k}: {v}");
    }
}
