//! The forecast through containerd: a pod's container indexed by the daemon, leaking in its
//! own cgroup, is warned about by name (`oom_risk`, the `OOMRisk` Pod Event, the headroom
//! and time-to-OOM gauges) before its kill.
//!
//! A private containerd (the harness of `tests/src/containerd.rs`) runs one runc container
//! labelled as the kubelet labels a pod's container, under a 400 MiB limit, with cgroups
//! named `oomx-forecast-*` (removed in every hierarchy when the harness drops). The leak is
//! `oomx-hog` joining that container's memory cgroup from the host (the test rootfs is a
//! static busybox: no room for the glibc hog inside). As in `k8s_events.rs`, the Events go
//! to a loopback stand-in for the API server (none can run on these machines).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a panic is how a test fails"
)]

use std::{
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use tests::{
    containerd::{Containerd, RunOpts},
    fake_apiserver::FakeApiServer,
    hog_bin, pretty,
    prometheus::get,
    was_sigkilled,
};

#[test]
fn a_leaking_pod_container_is_warned_about_by_name_on_every_output() {
    let api = FakeApiServer::start();
    let mut cd = Containerd::start();
    // Our own prefix for the cgroups runc makes (the harness removes them on drop).
    cd.cgroup_parent = format!("/oomx-forecast-{}-cd", std::process::id());
    let kubeconfig = cd.observer_state().with_extension("kubeconfig");
    api.write_kubeconfig(&kubeconfig, "oomx-test-token")
        .unwrap();
    // Inherited by the daemon; set before it is spawned (this file has one test).
    std::env::set_var("KUBECONFIG", &kubeconfig);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let obs = cd.observer_with(
        Duration::from_secs(30),
        &[
            "--k8s-events",
            "--node-name",
            "node-a",
            "--metrics-listen",
            &listen,
        ],
    );
    let cgroup = cd.cgroup_of("leaky");
    cd.run_detached(
        "leaky",
        &RunOpts {
            cgroup: Some(&cgroup),
            annotations: &[],
            labels: &[
                ("io.kubernetes.pod.namespace", "shop"),
                ("io.kubernetes.pod.name", "web-1"),
                ("io.kubernetes.pod.uid", "uid-web-1"),
                ("io.kubernetes.container.name", "app"),
            ],
            runc_binary: None,
            memory_limit_mb: Some(400),
        },
        &["/bin/sh", "-c", "sleep 3600"],
    );
    cd.wait_running("leaky");
    // Past the model's warm-up (20 s from when it first reads the cgroup).
    thread::sleep(Duration::from_secs(23));
    let dir = std::path::Path::new("/sys/fs/cgroup/memory").join(cgroup.trim_start_matches('/'));
    let mut leak = Command::new(hog_bin())
        .arg("--join")
        .arg(&dir)
        .args(["--rate-mb", "10"])
        .env("MALLOC_MMAP_THRESHOLD_", "65536")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let evs = obs.wait_for("the container's oom_risk", Duration::from_secs(40), |evs| {
        evs.iter()
            .any(|e| e["event"] == "oom_risk" && e["container"]["id"] == "leaky")
    });
    let r = evs
        .iter()
        .find(|e| e["event"] == "oom_risk")
        .unwrap()
        .clone();
    assert_eq!(r["container"]["name"], "app", "{r}");
    assert_eq!(r["container"]["pod"]["name"], "web-1", "{r}");
    assert_eq!(r["cgroup"], cgroup.as_str(), "{r}");
    assert_eq!(r["limit"]["kind"], "container", "{r}");
    assert_eq!(r["limit"]["bytes"], 400u64 << 20, "{r}");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .starts_with("container app of pod shop/web-1 will reach its container limit"),
        "{r}"
    );
    // The gauges, while it grows.
    let (code, text) = get(&format!("http://{listen}/metrics")).expect("a scrape");
    assert_eq!(code, 200);
    let labels = r#"{namespace="shop",pod="web-1",container="app",limit="container"}"#;
    assert!(
        text.contains(&format!("oom_observer_memory_headroom_bytes{labels}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("oom_observer_time_to_oom_seconds{labels}")),
        "{text}"
    );
    let status = leak.wait().unwrap();
    assert!(was_sigkilled(&status), "{status:?}");
    let evs = obs.wait_for("the kill", Duration::from_secs(20), |evs| {
        evs.iter()
            .any(|e| e["event"] == "oom_kill" && e["container"]["id"] == "leaky")
    });
    let kill = evs
        .iter()
        .find(|e| e["event"] == "oom_kill" && e["container"]["id"] == "leaky")
        .unwrap();
    assert_eq!(kill["warning"], "oom_risk", "{kill}");
    let lead = kill["warning_lead_s"].as_f64().unwrap();
    assert!(lead >= 10.0, "{lead} s: {}", pretty(&evs));
    // The Pod got the warning first, then the kill.
    for _ in 0..50 {
        if api.seen().len() >= 2 {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let seen = api.seen();
    let reasons: Vec<&str> = seen
        .iter()
        .filter(|s| s.method == "POST")
        .filter_map(|s| s.body["reason"].as_str())
        .collect();
    assert_eq!(reasons, ["OOMRisk", "OOMKilling"], "{seen:#?}");
    let e = &seen[0].body;
    assert_eq!(e["involvedObject"]["name"], "web-1", "{e}");
    assert_eq!(
        e["involvedObject"]["fieldPath"], "spec.containers{app}",
        "{e}"
    );
    assert_eq!(e["type"], "Warning", "{e}");
    assert_eq!(e["message"], r["message"], "{e}");
    eprintln!("lead {lead:.1} s; Pod Events: {reasons:?}");
}
