//! What the kubelet reads: pods run through containerd's own CRI plugin (RunPodSandbox with
//! a pod cgroup parent and a pod memory limit, CreateContainer with the container's limit,
//! StartContainer), their containers OOM-killed with oom-observer running, and each
//! container's status read the instant its init's exit is visible. Every container must
//! read `reason: OOMKilled`, exit code 137, at the first EXITED read and a second later, and
//! every kill line of the observer must name the container with the CRI's own labels.
//! The harness is `tests::cri`; `cargo xtask kubelet` runs the longer comparison.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a panic is how a test fails"
)]

use std::time::Duration;

use tests::{
    cri::{markdown_rows, rows, CriNode, PodSpec, RowSpec, Verdict, Workload},
    pretty,
};

/// Pods in this test (the README's test command keeps it to seconds).
const PODS: usize = 3;

/// One test at a time: each runs its own containerd, and the rows' idle node must not run
/// beside another test's pods (nor their loaded node beside another test).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn every_cri_container_reads_oomkilled_and_the_observer_names_it() {
    let _one = serial();
    let mut node = CriNode::start();
    let obs = node.cd.observer(Duration::from_secs(30));
    let outcomes = node.run_kills(PODS, PODS, 64, 32, Workload::Alloc);
    assert_eq!(outcomes.len(), PODS);
    for o in &outcomes {
        let p = &o.pod;
        // At the exit itself is containerd 1.6's CRI's race to lose (see Row::problems): the
        // README's test command holds every container to its reason a second later, as a
        // kubelet's relist reads it, and prints the first read.
        let r = &o.later;
        assert!(
            r.verdict() == Verdict::OomKilled && r.exit_code == 137,
            "pod {} container {}: 1 s later the CRI says {r:?}, a kubelet would not see \
             OOMKilled/137\ncontainerd log:\n{}",
            p.name,
            p.container_id,
            node.cd.log()
        );
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

/// Kills per row in the README's test command (`cargo xtask kubelet` sets OOMX_KUBELET_KILLS).
const QUICK_KILLS: usize = 2;

/// The same pods (the kill on CPU 0, the victim's exit on CPU 1) with and without
/// oom-observer, on an idle node and a loaded one (`tests::cri::rows`). With oom-observer
/// every container must read OOMKilled at the first EXITED read, and every kill line name
/// the container's init, published; without it the row is the baseline containerd gives on
/// this node. Writes `kubelet.json` and `kubelet.host.md` into OOMX_KUBELET_DIR when set.
#[test]
fn kubelet_reads_with_and_without_the_observer_idle_and_loaded() {
    let _one = serial();
    let kills: usize = std::env::var("OOMX_KUBELET_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(QUICK_KILLS);
    let mut node = CriNode::start();
    let spec = RowSpec::new(kills);
    let rows = rows(&mut node, &spec, Duration::from_secs(30));
    drop(node);
    let table = markdown_rows(&rows, &spec, "host");
    if let Some(dir) = std::env::var_os("OOMX_KUBELET_DIR") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        let json: Vec<_> = rows.iter().map(|r| r.json("host")).collect();
        std::fs::write(
            dir.join("kubelet.json"),
            serde_json::to_string_pretty(&json).unwrap() + "\n",
        )
        .unwrap();
        std::fs::write(dir.join("kubelet.host.md"), &table).unwrap();
        eprintln!("wrote {}", dir.display());
    }
    eprintln!("{table}");
    // The README's test command holds the row to the guarantee; `cargo xtask kubelet`
    // (OOMX_KUBELET_DIR set) to the goal, OOMKilled at the exit itself.
    let at_exit = std::env::var_os("OOMX_KUBELET_DIR").is_some();
    let problems: Vec<String> = rows.iter().flat_map(|r| r.problems(at_exit)).collect();
    assert!(problems.is_empty(), "{problems:#?}\n{table}");
}

/// The audit, end to end through the CRI. A kubelet with the systemd cgroup driver names the
/// pod's cgroup as a slice holding the pod's limit; the CRI plugin then hands the runtime a
/// systemd-form cgroupsPath (`<slice>:cri-containerd:<id>`), and runc without its systemd
/// driver creates that as a path below its caller's cgroup (the private containerd's `sys`),
/// outside the pod's slice: a container that relies on the pod's limit alone runs under no
/// limit of its own (only the test tree's 768 MiB). The observer must say
/// `limit_unenforced` as that container starts, and `oom-observer audit` exit 1. A pod the
/// CRI placed correctly (cgroupfs form, under its pod cgroup) gets no finding.
#[test]
fn audit_through_the_cri_finds_the_pod_runc_placed_outside_its_slice() {
    let _one = serial();
    let mut node = CriNode::start();
    let obs = node.cd.observer(Duration::from_secs(30));
    let sleep = "while :; do sleep 1; done".to_string();
    let escaped = node.run_pod_spec(&PodSpec {
        pod_limit_mb: 64,
        limit_mb: None,
        script: sleep.clone(),
        systemd_parent: true,
        shared_pid: false,
    });
    let placed = node.run_pod_spec(&PodSpec {
        pod_limit_mb: 64,
        limit_mb: Some(32),
        script: sleep,
        systemd_parent: false,
        shared_pid: false,
    });
    let evs = obs.wait_for(
        "limit_unenforced for the escaped pod's container",
        Duration::from_secs(20),
        |evs| {
            evs.iter().any(|e| {
                e["event"] == "limit_unenforced"
                    && e["container"]["id"] == escaped.container_id.as_str()
            })
        },
    );
    let f = evs
        .iter()
        .find(|e| {
            e["event"] == "limit_unenforced"
                && e["container"]["id"] == escaped.container_id.as_str()
        })
        .unwrap();
    let slice = node.tree.sub(&escaped.pod_cgroup);
    assert_eq!(f["declared"]["bytes"], 64u64 << 20, "{f}");
    assert_eq!(f["declared"]["pod_cgroup"], slice.as_str(), "{f}");
    // Where the spec says it belongs: the systemd form expanded, inside the pod's slice.
    let scope = format!("{slice}/cri-containerd-{}.scope", escaped.container_id);
    assert_eq!(f["expected_cgroup"], scope.as_str(), "{f}");
    let placed_cg = f["placed_cgroup"].as_str().unwrap_or_default();
    assert!(
        placed_cg.starts_with(&node.tree.sub("sys/")),
        "runc put it below containerd's own cgroup: {f}"
    );
    assert_eq!(f["container"]["pod"]["uid"], escaped.uid.as_str(), "{f}");
    assert!(
        f["reasons"].as_array().is_some_and(|r| r
            .iter()
            .any(|x| x == "limit_above_declared" || x == "no_limit")),
        "the pod's 64 MiB is not what holds it: {f}"
    );
    // The one-shot audit agrees (exit 1: a limit unenforced).
    let out = std::process::Command::new(tests::observer_bin())
        .args(["audit", "--json", "-n", "k8s.io", "--containerd-socket"])
        .arg(&node.cd.socket)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "oom-observer audit: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The correctly placed pod: nothing, for its container or its sandbox, by now (its
    // audit ran at its task's start, before the escaped pod's finding was awaited).
    std::thread::sleep(Duration::from_secs(1));
    let evs = obs.events();
    let about_placed: Vec<_> = evs
        .iter()
        .filter(|e| {
            e["event"] != "oom_kill"
                && e["event"] != "victim_exit"
                && e["container"]["pod"]["uid"] == placed.uid.as_str()
        })
        .collect();
    assert!(
        about_placed.is_empty(),
        "findings on a correctly placed pod: {about_placed:?}"
    );
}
