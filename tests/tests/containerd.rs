//! Real containerd, real runc and gVisor: every OOM kill names its container, and our
//! TaskOOM reaches containerd's event stream with the container's id. Run with
//! `cargo xtask test` (root; it installs containerd, runc, runsc and busybox-static).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a panic is how a test fails"
)]

use std::{
    fs,
    path::PathBuf,
    thread,
    time::{Duration, SystemTime},
};

use serde_json::Value;
use tests::{
    containerd::{Containerd, K8sLabels, RunOpts, Subscriber},
    events_in, pretty, spawn_hog, was_sigkilled, Memcg, Observer,
};

/// How long a host daemon may take to attach.
const READY: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(30);

fn kills_of<'a>(evs: &'a [Value], cgroup: &str) -> Vec<&'a Value> {
    events_in(evs, "oom_kill", cgroup)
}

fn ms(a: SystemTime, b: SystemTime) -> f64 {
    match b.duration_since(a) {
        Ok(d) => d.as_secs_f64() * 1e3,
        Err(e) => -e.duration().as_secs_f64() * 1e3,
    }
}

fn rfc3339(s: &str) -> SystemTime {
    humantime::parse_rfc3339(s).unwrap_or_else(|e| panic!("bad time {s:?}: {e}"))
}

#[test]
fn runc_container_oom_kill_publishes_task_oom_with_its_id() {
    let cd = Containerd::start();
    let sub = Subscriber::start(&cd.socket);
    let obs = cd.observer(READY);
    let id = "runc-hog";
    let mut ctr = cd.run_pod_hog(
        id,
        32,
        &K8sLabels {
            namespace: "shop",
            pod: "web-0",
            uid: Some("uid-123"),
            container: "app",
        },
    );
    cd.wait_running(id);
    cd.go();
    let status = ctr.wait().unwrap();
    assert_eq!(status.code(), Some(137), "the container must be OOM-killed");
    let cg = cd.cgroup_of(id);
    let evs = obs.wait_for("the container's kill", WAIT, |e| {
        !kills_of(e, &cg).is_empty()
    });
    let e = kills_of(&evs, &cg)[0].clone();
    assert_eq!(e["container"]["id"], id, "{e}");
    assert_eq!(e["container"]["namespace"], cd.namespace.as_str(), "{e}");
    assert_eq!(e["container"]["name"], "app", "{e}");
    assert_eq!(e["container"]["runtime"], "io.containerd.runc.v2", "{e}");
    assert_eq!(e["container"]["pod"]["name"], "web-0", "{e}");
    assert_eq!(e["container"]["pod"]["namespace"], "shop", "{e}");
    assert_eq!(e["container"]["pod"]["uid"], "uid-123", "{e}");
    assert_eq!(e["victim"]["cgroup"], cg.as_str(), "{e}");
    assert_eq!(e["published"], true, "{e}");
    // The kill explained: the container's own limit, and its init was the victim.
    assert_eq!(e["limit"], "container", "{e}");
    assert_eq!(e["oom_domain"]["limit_bytes"], 32u64 << 20, "{e}");
    assert_eq!(e["victim"]["ns_pid"], 1, "the container's init: {e}");
    assert_eq!(e["container_exits"], true, "{e}");
    let msg = e["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("OOM-killed: container app of pod shop/web-0 reached its 32.0 MiB limit")
            && msg.ends_with("; the container exits"),
        "{msg}"
    );
    sub.wait_for("our TaskOOM", WAIT, |s| {
        s.iter()
            .any(|x| x.ours && x.container_id.as_deref() == Some(id))
    });
    thread::sleep(Duration::from_millis(500));
    let (ours, theirs) = sub.task_ooms(&cd.namespace, id);
    assert_eq!(ours.len(), 1, "exactly one TaskOOM of ours: {ours:#?}");
    // For the note: kill → TaskOOM on containerd's stream, ours beside containerd's own.
    let kill = rfc3339(e["time"].as_str().unwrap());
    // containerd's envelope timestamp: when containerd accepted the event.
    let our_ms = ms(kill, ours[0].timestamp.unwrap());
    let their_ms: Vec<String> = theirs
        .iter()
        .map(|t| format!("{:.2}", ms(kill, t.timestamp.unwrap())))
        .collect();
    eprintln!("LATENCY kill->TaskOOM accepted by containerd: ours {our_ms:.2} ms, containerd's own {their_ms:?} ms");
}

#[test]
fn gvisor_container_oom_kill_publishes_one_task_oom_for_the_container() {
    let cd = Containerd::start();
    let sub = Subscriber::start(&cd.socket);
    let obs = cd.observer(READY);
    let id = "gvisor-hog";
    let wrapper = cd.runsc_wrapper.to_str().unwrap().to_string();
    let mut ctr = cd.run_hog(id, 96, &["--runc-binary", &wrapper]);
    cd.wait_running(id);
    cd.go();
    let status = ctr.wait().unwrap();
    assert_eq!(status.code(), Some(137), "the sandbox must be OOM-killed");
    let cg = cd.cgroup_of(id);
    obs.wait_for("the sandbox's kill", WAIT, |e| !kills_of(e, &cg).is_empty());
    thread::sleep(Duration::from_millis(1500));
    let evs = obs.events();
    let kills = kills_of(&evs, &cg);
    assert!(!kills.is_empty(), "{}", pretty(&evs));
    for k in &kills {
        // The killed host processes are the sandbox's own (not the workload's pid), yet each
        // names the container.
        assert_eq!(k["container"]["id"], id, "{k}");
        assert_eq!(k["published"], true, "{k}");
    }
    assert!(
        kills.iter().any(|k| k["victim"]["comm"] != "sh"),
        "under gVisor the host victim is a sandbox process: {}",
        pretty(&evs)
    );
    let (ours, _) = sub.task_ooms(&cd.namespace, id);
    assert_eq!(
        ours.len(),
        1,
        "one TaskOOM for the container however many sandbox processes died: {ours:#?}"
    );
}

#[test]
fn a_cgroup_no_container_owns_gets_container_null_and_no_task_oom() {
    let cd = Containerd::start();
    let sub = Subscriber::start(&cd.socket);
    let obs = cd.observer(READY);
    let cg = Memcg::new("nocontainer");
    cg.limit_mb(32);
    let mut hog = spawn_hog(&cg.dir, &[]);
    assert!(was_sigkilled(&hog.wait().unwrap()));
    let evs = obs.wait_for("the kill", WAIT, |e| !kills_of(e, &cg.path).is_empty());
    let e = kills_of(&evs, &cg.path)[0];
    assert!(e["container"].is_null(), "{e}");
    assert_eq!(e["published"], false, "{e}");
    assert_eq!(e["victim"]["cgroup"], cg.path.as_str());
    thread::sleep(Duration::from_millis(500));
    assert!(
        !sub.seen().iter().any(|s| s.topic == "/tasks/oom" && s.ours),
        "no TaskOOM may be published for an unowned cgroup: {:#?}",
        sub.seen()
    );
}

#[test]
fn containerd_down_during_the_kill_gets_task_oom_after_restart_exactly_once() {
    let mut cd = Containerd::start();
    let obs = cd.observer(READY);
    let id = "while-down";
    let mut ctr = cd.run_hog(id, 32, &[]);
    cd.wait_running(id);
    cd.stop();
    cd.go();
    let cg = cd.cgroup_of(id);
    let evs = obs.wait_for("the kill while containerd is down", WAIT, |e| {
        !kills_of(e, &cg).is_empty()
    });
    let e = kills_of(&evs, &cg)[0].clone();
    assert_eq!(
        e["container"]["id"], id,
        "known from before containerd went down: {e}"
    );
    assert_eq!(e["published"], false, "containerd was down: {e}");
    let spool = cd.observer_state().join("taskoom-spool.jsonl");
    let spooled = fs::read_to_string(&spool).unwrap_or_default();
    assert!(
        spooled.contains(id),
        "the undelivered TaskOOM is on disk: {spooled:?}"
    );
    // Let the retry back off a little, so the subscriber below is live before it fires.
    thread::sleep(Duration::from_secs(2));
    cd.restart();
    let sub = Subscriber::start(&cd.socket);
    sub.wait_for("our TaskOOM after the restart", WAIT, |s| {
        s.iter()
            .any(|x| x.ours && x.container_id.as_deref() == Some(id))
    });
    thread::sleep(Duration::from_secs(3));
    let (ours, _) = sub.task_ooms(&cd.namespace, id);
    assert_eq!(ours.len(), 1, "exactly once: {ours:#?}");
    obs.wait_log("delivered a spooled TaskOOM", WAIT);
    let spooled = fs::read_to_string(&spool).unwrap_or_default();
    assert!(
        !spooled.contains(id),
        "delivered TaskOOMs leave the spool: {spooled:?}"
    );
    let _ = ctr.kill();
    let _ = ctr.wait();
}

#[test]
fn unreachable_socket_keeps_the_daemon_running_kernel_only() {
    let obs = Observer::start(&[
        "--containerd-socket",
        "/nonexistent/containerd.sock",
        "--state-dir",
        "/tmp/oomx-unused-state",
    ]);
    obs.wait_log("containerd unreachable: kernel-only mode", WAIT);
    let cg = Memcg::new("kernelonly");
    cg.limit_mb(32);
    let mut hog = spawn_hog(&cg.dir, &[]);
    assert!(was_sigkilled(&hog.wait().unwrap()));
    let evs = obs.wait_for("the kill", WAIT, |e| !kills_of(e, &cg.path).is_empty());
    let e = kills_of(&evs, &cg.path)[0];
    assert!(e["container"].is_null() && e["published"] == false, "{e}");
    assert!(
        !PathBuf::from("/tmp/oomx-unused-state").exists(),
        "nothing to spool, nothing written"
    );
}

#[test]
fn malformed_cgroups_path_is_logged_and_the_daemon_keeps_going() {
    let cd = Containerd::start();
    let obs = cd.observer(READY);
    // A container (no task) whose spec names an impossible cgroupsPath.
    let spec = cd.ctr(&["oci", "spec"]);
    assert!(spec.status.success());
    let mut spec: Value = serde_json::from_slice(&spec.stdout).unwrap();
    spec["linux"]["cgroupsPath"] = "not/../valid:x".into();
    let spec_file = cd.dir.join("bad-spec.json");
    fs::write(&spec_file, serde_json::to_vec(&spec).unwrap()).unwrap();
    let out = cd.ctr(&[
        "containers",
        "create",
        "--config",
        spec_file.to_str().unwrap(),
        "bad-path",
    ]);
    assert!(
        out.status.success(),
        "ctr containers create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    obs.wait_log("malformed cgroupsPath", WAIT);
    // Still observing, still naming containers.
    let id = "after-bad";
    let mut ctr = cd.run_hog(id, 32, &[]);
    cd.wait_running(id);
    cd.go();
    assert_eq!(ctr.wait().unwrap().code(), Some(137));
    let cg = cd.cgroup_of(id);
    let evs = obs.wait_for("the kill", WAIT, |e| !kills_of(e, &cg).is_empty());
    assert_eq!(kills_of(&evs, &cg)[0]["container"]["id"], id);
}

/// A worker killed while the container's init survives: the container keeps running, which
/// Kubernetes never reports, and the event says so.
#[test]
fn a_worker_killed_while_the_init_survives_says_the_container_keeps_running() {
    let cd = Containerd::start();
    let obs = cd.observer(READY);
    let id = "runc-worker";
    let cg = cd.cgroup_of(id);
    // The init (a shell) starts a worker that grows until the limit, then sleeps on.
    let worker = "x=a; while :; do x=$x$x; done";
    let init = format!("sh -c '{worker}'; sleep 600");
    cd.run_detached(
        id,
        &RunOpts {
            cgroup: Some(&cg),
            annotations: &[],
            labels: &[("io.kubernetes.container.name", "app")],
            runc_binary: None,
            memory_limit_mb: Some(32),
        },
        &["/bin/sh", "-c", &init],
    );
    cd.wait_running(id);
    let init_pid = cd.task_pid(id);
    let evs = obs.wait_for("the worker's kill", WAIT, |e| !kills_of(e, &cg).is_empty());
    let e = kills_of(&evs, &cg)[0].clone();
    assert_eq!(e["container"]["id"], id, "{e}");
    assert_ne!(
        e["victim"]["tgid"], init_pid,
        "the worker, not the init: {e}"
    );
    assert_ne!(e["victim"]["ns_pid"], 1, "{e}");
    assert_eq!(e["limit"], "container", "{e}");
    assert_eq!(e["container_exits"], false, "{e}");
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.ends_with("a process was killed and the container keeps running")),
        "{e}"
    );
    // And it does keep running.
    thread::sleep(Duration::from_millis(500));
    let out = cd.ctr(&["tasks", "ls"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with(id) && l.contains("RUNNING")),
        "the init must survive: {text}"
    );
}

/// The limit on the pod's cgroup, the victim in a container below it: the limit that fired
/// is the pod's, and the event names it so.
#[test]
fn a_pod_level_limit_is_named_pod() {
    // Declared first, dropped last: containerd removes the container's cgroup before this.
    let pod = Memcg::new("pod-limit");
    pod.limit_mb(48);
    let cd = Containerd::start();
    let obs = cd.observer(READY);
    let id = "runc-in-pod";
    let cg = format!("{}/{id}", pod.path);
    cd.run_detached(
        id,
        &RunOpts {
            cgroup: Some(&cg),
            annotations: &[],
            labels: &[
                ("io.kubernetes.pod.name", "web-1"),
                ("io.kubernetes.pod.namespace", "shop"),
                ("io.kubernetes.pod.uid", "uid-456"),
                ("io.kubernetes.container.name", "app"),
            ],
            runc_binary: None,
            memory_limit_mb: None,
        },
        &["/bin/sh", "-c", "x=a; while :; do x=$x$x; done"],
    );
    let evs = obs.wait_for("the kill", WAIT, |e| !kills_of(e, &cg).is_empty());
    let e = kills_of(&evs, &cg)[0].clone();
    assert_eq!(e["container"]["id"], id, "{e}");
    assert_eq!(e["oom_cgroup"]["path"], pod.path.as_str(), "{e}");
    assert_eq!(e["limit"], "pod", "{e}");
    assert_eq!(e["oom_domain"]["limit_bytes"], 48u64 << 20, "{e}");
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("OOM-killed: pod shop/web-1 reached its 48.0 MiB limit")),
        "{e}"
    );
}
