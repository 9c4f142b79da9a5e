//! What the kubelet reads: pods run through containerd's own CRI plugin (RunPodSandbox with
//! a pod cgroup parent and a pod memory limit, CreateContainer with the container's limit,
//! StartContainer), their containers OOM-killed with oom-observer running, and each
//! container's status read the instant its init's exit is visible. Every container must
//! read `reason: OOMKilled`, exit code 137, at the first EXITED read and a second later, and
//! every kill line of the observer must name the container with the CRI's own labels.
//! The harness is `tests::cri`; `cargo xtask kubelet` runs the longer comparison.

use std::time::Duration;

use tests::{
    cri::{CriNode, Verdict, Workload},
    pretty,
};

/// Pods in this test (the README's test command keeps it to seconds).
const PODS: usize = 3;

#[test]
fn every_cri_container_reads_oomkilled_at_exit_and_the_observer_names_it() {
    let mut node = CriNode::start();
    let obs = node.cd.observer(Duration::from_secs(30));
    let outcomes = node.run_kills(PODS, PODS, 64, 32, Workload::Alloc);
    assert_eq!(outcomes.len(), PODS);
    for o in &outcomes {
        let p = &o.pod;
        for (when, r) in [("at exit", &o.at_exit), ("1 s later", &o.later)] {
            assert!(
                r.verdict() == Verdict::OomKilled && r.exit_code == 137,
                "pod {} container {}: {when} the CRI says {r:?}, a kubelet would not see \
                 OOMKilled/137\ncontainerd log:\n{}",
                p.name,
                p.container_id,
                node.cd.log()
            );
        }
    }
    // The observer's JSON line for each kill names the container as the CRI labelled it.
    let evs = obs.wait_for(
        "a kill line naming each CRI container",
        Duration::from_secs(20),
        |evs| {
            outcomes.iter().all(|o| {
                evs.iter().any(|e| {
                    e["event"] == "oom_kill" && e["container"]["id"] == o.pod.container_id.as_str()
                })
            })
        },
    );
    for o in &outcomes {
        let p = &o.pod;
        let kill = evs
            .iter()
            .find(|e| e["event"] == "oom_kill" && e["container"]["id"] == p.container_id.as_str())
            .unwrap();
        let c = &kill["container"];
        let want = [
            (&c["namespace"], "k8s.io"),
            (&c["name"], p.container.as_str()),
            (&c["pod"]["name"], p.name.as_str()),
            (&c["pod"]["namespace"], p.namespace.as_str()),
            (&c["pod"]["uid"], p.uid.as_str()),
        ];
        for (got, want) in want {
            assert_eq!(got, want, "kill line {kill}\nall events:\n{}", pretty(&evs));
        }
        assert_eq!(
            kill["victim"]["tgid"], p.pid,
            "the victim is the container's init: {kill}"
        );
        assert_eq!(
            kill["published"], true,
            "containerd took our TaskOOM: {kill}"
        );
    }
    // The pods were correctly placed (pod cgroup with its limit, container below it): the
    // audit has nothing to say about them.
    let findings: Vec<_> = evs
        .iter()
        .filter(|e| {
            e["event"] == "limit_unenforced"
                && outcomes
                    .iter()
                    .any(|o| e["container"]["id"] == o.pod.container_id.as_str())
        })
        .collect();
    assert!(
        findings.is_empty(),
        "findings on correctly placed pods: {findings:?}"
    );
    for o in &outcomes {
        eprintln!(
            "pod {}: at exit {} {} (+{:.1} ms), later {} {}",
            o.pod.name,
            o.at_exit.reason,
            o.at_exit.exit_code,
            o.at_exit.after_exit.as_secs_f64() * 1e3,
            o.later.reason,
            o.later.exit_code
        );
    }
}
