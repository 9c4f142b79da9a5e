//! The verdict: is a container's declared memory limit enforced where its processes are?

use serde::Serialize;

use super::{
    finding::reasons,
    memory_fs::{min_opt, Effective},
};
use crate::{
    enrich::container::ContainerInfo,
    host::cgroup_path::{is_under, parent},
};

/// Slack before an effective limit counts as above the declared one: the kernel rounds
/// limits to pages, and runtimes add small overheads.
pub fn tolerance(declared: u64) -> u64 {
    (1 << 20) + declared / 100
}

/// What a container was promised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Declared {
    /// The limit the effective one is held to: for a container of a sandboxed runtime (the
    /// sandbox shares one host cgroup) its pod's limit when there is one; otherwise the
    /// smaller of its own and its pod's.
    pub bytes: u64,
    /// The OCI spec's `linux.resources.memory.limit`.
    pub container: Option<u64>,
    /// The limit on the pod's cgroup (the parent its cgroupsPath names).
    pub pod: Option<u64>,
    /// The pod's cgroup, when the container belongs to a pod.
    pub pod_cgroup: Option<String>,
}

/// A gVisor sandbox's host process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SandboxProcess {
    /// The host pid (the `runsc-sandbox` process, the task's pid).
    pub pid: u32,
    /// `--total-memory` from its command line, in bytes.
    pub total_memory: Option<u64>,
}

/// What was read about one running container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Host pids whose cgroups were read.
    pub pids: Vec<u32>,
    /// Each distinct cgroup holding them, with its effective limit.
    pub placed: Vec<(String, Effective)>,
    /// The limit on the pod's cgroup, when it exists and has one.
    pub pod_limit: Option<u64>,
    /// For gVisor, the sandbox process.
    pub sandbox: Option<SandboxProcess>,
}

/// The verdict on one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    /// What was promised; none when nothing was (then there is no finding).
    pub declared: Option<Declared>,
    /// The reported cgroup's effective limit.
    pub effective: Effective,
    /// The cgroup reported as placed (the first outside the expected one, else the one with
    /// the largest effective limit).
    pub placed_cgroup: String,
    /// Where the processes belong: the spec's cgroup, or for a container inside a gVisor or
    /// Kata sandbox, its pod's cgroup.
    pub expected_cgroup: Option<String>,
    /// `limit_unenforced` reasons, most serious first; empty when enforced.
    pub unenforced: Vec<&'static str>,
    /// Whether a gVisor sandbox's `--total-memory` is above the effective limit.
    pub oversized: bool,
    /// Whether processes run outside the expected cgroup while the declared limit still
    /// holds where they are.
    pub misplaced: bool,
    /// The sandbox process, for gVisor.
    pub sandbox: Option<SandboxProcess>,
    /// Host pids read.
    pub pids: Vec<u32>,
}

/// Whether the container belongs to a Kubernetes-shaped pod.
pub fn is_pod_member(c: &ContainerInfo) -> bool {
    c.container_type.is_some() || c.sandbox_id.is_some() || c.pod.is_some()
}

/// The pod's cgroup: the parent of the one the container's cgroupsPath names.
pub fn pod_cgroup(c: &ContainerInfo) -> Option<String> {
    if !is_pod_member(c) {
        return None;
    }
    parent(c.spec_cgroup.as_deref()?)
        .filter(|p| *p != "/")
        .map(str::to_string)
}

/// Whether a container runs inside a sandbox it does not own: its host processes are its
/// pod sandbox's, in the sandbox's cgroup.
fn inside_foreign_sandbox(c: &ContainerInfo) -> bool {
    c.sandboxed_runtime() && !c.is_sandbox() && c.sandbox_id.is_some()
}

/// Where the container's processes belong.
pub fn expected_cgroup(c: &ContainerInfo) -> Option<String> {
    if inside_foreign_sandbox(c) {
        return pod_cgroup(c);
    }
    c.spec_cgroup.clone()
}

/// Decides, from what was observed, whether the container's declared limit is enforced.
pub fn assess(c: &ContainerInfo, o: &Observed) -> Assessment {
    let container = c.memory_limit.filter(|l| *l > 0).map(|l| l as u64);
    let pod_cg = pod_cgroup(c);
    let pod = pod_cg.as_ref().and(o.pod_limit);
    let bytes = if inside_foreign_sandbox(c) {
        pod.or(container)
    } else {
        min_opt(container, pod)
    };
    let declared = bytes.map(|bytes| Declared {
        bytes,
        container,
        pod,
        pod_cgroup: pod_cg.clone(),
    });
    let expected = expected_cgroup(c);
    let outside = |p: &str| expected.as_deref().is_some_and(|e| !is_under(p, e));
    // Report the worst placement: a cgroup outside the expected one, else the loosest limit.
    let worst = o
        .placed
        .iter()
        .max_by_key(|(p, e)| (outside(p), e.bytes.is_none(), e.bytes.unwrap_or(0)));
    let (placed_cgroup, effective) = worst
        .map(|(p, e)| (p.clone(), e.clone()))
        .unwrap_or_default();
    let mut unenforced = Vec::new();
    let mut oversized = false;
    let mut misplaced = false;
    if let Some(d) = &declared {
        match effective.bytes {
            None => unenforced.push(reasons::NO_LIMIT),
            Some(e) if e > d.bytes.saturating_add(tolerance(d.bytes)) => {
                unenforced.push(reasons::LIMIT_ABOVE_DECLARED)
            }
            Some(_) => {}
        }
        if o.placed.iter().any(|(p, _)| outside(p)) {
            // Outside its cgroup but held to its declared limit where it landed: the node is
            // not at risk, so this is not `limit_unenforced`; it gets its own finding.
            if unenforced.is_empty() {
                misplaced = true;
            } else {
                unenforced.push(reasons::OUTSIDE_EXPECTED_CGROUP);
            }
        }
        if let (Some(t), Some(e)) = (
            o.sandbox.as_ref().and_then(|s| s.total_memory),
            effective.bytes,
        ) {
            oversized = t > e.saturating_add(tolerance(e));
        }
    }
    Assessment {
        declared,
        effective,
        placed_cgroup,
        expected_cgroup: expected,
        unenforced,
        oversized,
        misplaced,
        sandbox: o.sandbox.clone(),
        pids: o.pids.clone(),
    }
}

#[cfg(test)]
mod tests {
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
}
