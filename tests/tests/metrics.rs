//! Prometheus metrics, scraped by a real Prometheus (Debian's `prometheus`, its own config,
//! TSDB and loopback port, scrape interval 1 s) while real containers under a private
//! containerd are OOM-killed; then PromQL through Prometheus' HTTP API must give each
//! container's count. Run with `cargo xtask test` (root; it installs containerd, runc,
//! busybox-static and prometheus).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a panic is how a test fails"
)]

use std::{
    process::Command,
    thread,
    time::{Duration, Instant},
};

use tests::{
    containerd::{Containerd, K8sLabels},
    observer_bin,
    prometheus::{get, Prometheus},
};

const READY: Duration = Duration::from_secs(30);

/// The address the daemon says it serves metrics on (it was given port 0).
fn metrics_addr(log: &str) -> String {
    log.lines()
        .find(|l| l.contains("serving Prometheus metrics"))
        .and_then(|l| l.split("addr=").nth(1))
        .and_then(|a| a.split_whitespace().next())
        .unwrap_or_else(|| panic!("no metrics address logged:\n{log}"))
        .to_string()
}

/// One OOM-killed container of pod `shop/web-0`, container name `name`.
fn kill(cd: &Containerd, id: &str, name: &str) {
    let member = K8sLabels {
        namespace: "shop",
        pod: "web-0",
        uid: Some("uid-web-0"),
        container: name,
    };
    cd.oom_kill_pod_member(id, 24, &member);
}

#[test]
fn prometheus_counts_each_containers_oom_kills() {
    let cd = Containerd::start();
    let obs = cd.observer_with(READY, &["--metrics-listen", "127.0.0.1:0"]);
    let target = metrics_addr(&obs.stderr_text());
    let prom = Prometheus::start(&target, "1s");
    // Scraped before anything happened: the series users alert on exist from the start.
    let t0 = Instant::now();
    while prom.query("oom_observer_build_info").is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "prometheus never scraped the daemon; log:\n{}",
            prom.log()
        );
        thread::sleep(Duration::from_millis(250));
    }
    cd.go();
    // "app" is OOM-killed twice (two containers of the same name: the kubelet's restart),
    // "sidecar" once, while Prometheus scrapes every second.
    kill(&cd, "app-1", "app");
    kill(&cd, "sidecar-1", "sidecar");
    thread::sleep(Duration::from_millis(1500));
    kill(&cd, "app-2", "app");

    let want = vec![("app".to_string(), 2.0), ("sidecar".to_string(), 1.0)];
    // Only this test's pod: the daemon sees every kill on the host, other tests' too.
    let q = "sum by (container) (oom_observer_oom_kills_total{namespace=\"shop\"})";
    let t0 = Instant::now();
    let got = loop {
        let got = prom.by_label(q, "container");
        if got == want || t0.elapsed() > Duration::from_secs(20) {
            break got;
        }
        thread::sleep(Duration::from_millis(250));
    };
    let direct = get(&format!("http://{target}/metrics")).map(|(_, b)| b);
    assert_eq!(
        got,
        want,
        "PromQL `{q}`; the daemon's /metrics:\n{}\ndaemon log:\n{}",
        direct.as_deref().unwrap_or("(no answer)"),
        obs.stderr_text()
    );
    // The labels users join on, from the CRI's labels.
    let series = prom.query("oom_observer_oom_kills_total{container=\"app\"}");
    assert_eq!(series.len(), 1, "{series:?}");
    let m = &series[0]["metric"];
    assert_eq!(m["namespace"], "shop", "{m}");
    assert_eq!(m["pod"], "web-0", "{m}");
    // Every kill's TaskOOM was accepted by containerd, and counted so.
    let published = prom.by_label("oom_observer_taskoom_total", "result");
    assert!(
        published.contains(&("published".to_string(), 3.0))
            && published.contains(&("dropped".to_string(), 0.0)),
        "{published:?}"
    );
    let last = prom.query("time() - oom_observer_last_kill_timestamp_seconds");
    let ago: f64 = last[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!((0.0..60.0).contains(&ago), "last kill {ago} s ago");
    let build = prom.query("oom_observer_build_info");
    let strategy = build[0]["metric"]["strategy"].as_str().unwrap_or_default();
    assert!(
        ["fentry", "kprobe", "tp_btf", "tracepoint"].contains(&strategy),
        "{build:?}"
    );
    let mut lost = prom.by_label("oom_observer_records_lost_total", "kind");
    lost.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        lost,
        [
            "cgroup_attach",
            "cgroup_mkdir",
            "memcg_oom",
            "oom_decision",
            "oom_kill",
            "oom_kill_skipped",
            "signaled_exit",
            "victim_exit"
        ]
        .map(|k| (k.to_string(), 0.0))
        .to_vec(),
        "one lost counter per record kind, none lost"
    );
    let (code, _) = get(&format!("http://{target}/nope")).unwrap();
    assert_eq!(code, 404);
}

#[test]
fn a_metrics_address_in_use_is_one_line_and_exit_11() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(observer_bin())
        .args([
            "run",
            "--no-containerd",
            "--no-query",
            "--metrics-listen",
            &addr,
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(11), "{err}");
    assert!(
        err.lines().any(|l| l
            .starts_with(&format!("oom-observer: cannot serve metrics on {addr}"))
            && l.contains("in use")),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}
