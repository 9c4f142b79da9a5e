//! The forecast on real workloads: the real daemon, real scratch cgroup v1 memory cgroups
//! (`oomx-forecast-*`, removed on drop), real OOM kills.
//!
//! One daemon models three cgroups given by `--forecast-cgroup` at once (kernel-only: the
//! model reads cgroupfs the same way for a container's cgroup, and a flag-named cgroup needs
//! no containerd, so the test is quick and does not depend on the runtime):
//! - a steady 10 MiB/s leak into a 400 MiB limit, OOM-killed after about 40 s: its
//!   `oom_risk` must name that limit at least 10 s before the kill, and the kill must carry
//!   the lead time;
//! - a process sitting at 95 % of its limit, and a GC-like sawtooth peaking at 93 % of its
//!   limit: never killed, and never warned about.
//!
//! All three start after the model's warm-up, as in a cgroup watched for a while.
//!
//! Through containerd (the last test, beside the others: most of each test is waiting for a
//! leak): a pod's container indexed by the daemon, leaking in its own cgroup, is warned about
//! by name (`oom_risk`, the `OOMRisk` Pod Event, the headroom and time-to-OOM gauges) before
//! its kill. A private containerd (the harness of `tests/src/containerd.rs`) runs one runc
//! container labelled as the kubelet labels a pod's container, under a 400 MiB limit, with
//! cgroups named `oomx-forecast-*` (removed in every hierarchy when the harness drops). The
//! leak is `oomx-hog` joining that container's memory cgroup from the host (the test rootfs
//! is a static busybox: no room for the glibc hog inside). As in `k8s_events.rs`, the Events
//! go to a loopback stand-in for the API server (none can run on these machines).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a panic is how a test fails"
)]

use std::{
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::{
    containerd::{Containerd, RunOpts},
    events_in,
    fake_apiserver::FakeApiServer,
    hog_bin, pretty,
    prometheus::{free_port, get},
    was_sigkilled, Memcg, Observer,
};

const MIB: u64 = 1 << 20;

fn risks_for<'a>(evs: &'a [Value], cgroup: &str) -> Vec<&'a Value> {
    evs.iter()
        .filter(|e| e["event"] == "oom_risk" && e["cgroup"] == cgroup)
        .collect()
}

/// A hog with a static malloc mmap threshold, so the sawtooth's frees really go back to the
/// kernel (glibc's dynamic threshold would keep them in the heap).
fn hog(cg: &Memcg, args: &[&str]) -> std::process::Child {
    Command::new(hog_bin())
        .arg("--join")
        .arg(&cg.dir)
        .args(args)
        .env("MALLOC_MMAP_THRESHOLD_", "65536")
        .stdout(Stdio::null())
        .spawn()
        .expect("starting oomx-hog")
}

#[test]
fn a_steady_leak_is_foreseen_and_steady_or_sawtooth_memory_is_not() {
    let tag = std::process::id();
    let leak = Memcg::named(&format!("oomx-forecast-{tag}-leak"));
    leak.limit_mb(400);
    let steady = Memcg::named(&format!("oomx-forecast-{tag}-steady"));
    steady.limit_mb(256);
    let saw = Memcg::named(&format!("oomx-forecast-{tag}-saw"));
    saw.limit_mb(200);
    let obs = Observer::start(&[
        "--forecast-cgroup",
        &leak.path,
        "--forecast-cgroup",
        &steady.path,
        "--forecast-cgroup",
        &saw.path,
    ]);
    obs.wait_log("forecast on", Duration::from_secs(5));

    // Past the model's 20 s warm-up, as for containers that have run a while: each
    // workload's start-up is then in plain view (a step, a ramp), as on a restart.
    thread::sleep(Duration::from_secs(22));
    // 240 MiB of 256: 95 % with the process's own pages and kernel memory.
    let mut holder = hog(&steady, &["--max-mb", "240", "--hold"]);
    // Climbs from 0 to 185 MiB at 40 MiB/s, then teeth from 100 to 185 (about 2 s each).
    let mut sawer = hog(
        &saw,
        &["--max-mb", "185", "--sawtooth-mb", "100", "--rate-mb", "40"],
    );
    let started = Instant::now();
    let mut leaker = hog(&leak, &["--rate-mb", "10"]);
    let status = leaker.wait().unwrap();
    let leak_secs = started.elapsed().as_secs_f64();
    assert!(
        was_sigkilled(&status),
        "the leak was not OOM-killed: {status:?}"
    );
    let evs = obs.wait_for("the leak's oom_kill", Duration::from_secs(20), |evs| {
        !events_in(evs, "oom_kill", &leak.path).is_empty()
    });
    // Watch the other two a while longer than the leak lived (the model's window is 40 s).
    thread::sleep(Duration::from_secs(15));
    let evs_all = obs.events();
    assert!(
        holder.try_wait().unwrap().is_none() && sawer.try_wait().unwrap().is_none(),
        "the never-killed workloads must live:\n{}",
        pretty(&evs_all)
    );
    let _ = holder.kill();
    let _ = sawer.kill();
    let _ = holder.wait();
    let _ = sawer.wait();

    // The leak: warned, naming its own limit, at least 10 s ahead.
    let kill = events_in(&evs, "oom_kill", &leak.path)[0].clone();
    let risks = risks_for(&evs, &leak.path);
    assert!(
        !risks.is_empty(),
        "no oom_risk before the kill ({leak_secs:.1} s of leak):\n{}\nstderr:\n{}",
        pretty(&evs),
        obs.stderr_text()
    );
    let r = risks[0];
    assert_eq!(r["schema"], 2, "{r}");
    assert_eq!(r["reason"], "growth", "{r}");
    assert_eq!(r["limit"]["kind"], "container", "{r}");
    assert_eq!(r["limit"]["cgroup"], leak.path.as_str(), "{r}");
    assert_eq!(r["limit"]["bytes"], 400 * MIB, "{r}");
    assert!(r["container"].is_null(), "{r}");
    // Low at first: the first warning comes while the floor's window still holds part of
    // the flat spell before the leak (see the model's comment).
    let rate = r["rate_bytes_per_s"].as_f64().unwrap();
    assert!(
        (4.0 * MIB as f64..14.0 * MIB as f64).contains(&rate),
        "the leak runs at 10 MiB/s, the model says {:.1} MiB/s: {r}",
        rate / MIB as f64
    );
    let left = r["time_left_s"].as_f64().unwrap();
    assert!(left > 0.0 && left < 60.0, "{r}");
    let top = r["top"].as_array().unwrap();
    assert_eq!(top[0]["comm"], "oomx-hog", "{r}");
    assert_eq!(top[0]["pid"], kill["victim"]["tgid"], "{r}");
    assert!(
        r["seq"].as_u64() < kill["seq"].as_u64(),
        "the warning comes first"
    );
    let lead_ns = kill["ktime_ns"].as_u64().unwrap() - r["ktime_ns"].as_u64().unwrap();
    let lead = lead_ns as f64 / 1e9;
    assert!(
        lead >= 10.0,
        "warned only {lead:.1} s before the kill: {r}\n{kill}"
    );
    assert_eq!(kill["warning"], "oom_risk", "{kill}");
    let carried = kill["warning_lead_s"].as_f64().unwrap();
    assert!(
        (carried - lead).abs() < 0.01,
        "the kill carries {carried} s, the events say {lead:.3} s: {kill}"
    );
    // At most one a minute per container: the leak lived under a minute.
    assert_eq!(risks.len(), 1, "{}", pretty(&evs));
    eprintln!("the leak's oom_risk: {r}\nits kill: {kill}");
    eprintln!(
        "leak: killed after {leak_secs:.1} s, warned {lead:.1} s ahead (rate {:.2} MiB/s)",
        rate / MIB as f64
    );

    // Never killed, never warned.
    for cg in [&steady, &saw] {
        let r = risks_for(&evs_all, &cg.path);
        assert!(
            r.is_empty(),
            "false alarm on {}:\n{}",
            cg.path,
            pretty(&evs_all)
        );
        assert!(events_in(&evs_all, "oom_kill", &cg.path).is_empty());
    }
    // The sawtooth really saw-toothed under its limit (the kernel's own high-water mark).
    let max = std::fs::read_to_string(saw.dir.join("memory.max_usage_in_bytes")).unwrap();
    let max: u64 = max.trim().parse().unwrap();
    assert!(
        max > 150 * MIB && max < 200 * MIB,
        "sawtooth peaked at {max}"
    );
}

#[test]
fn a_kill_nobody_foresaw_says_so() {
    // A step: one allocation far past the limit at once, no growth to see.
    let cg = Memcg::named(&format!("oomx-forecast-{}-step", std::process::id()));
    cg.limit_mb(64);
    let obs = Observer::start(&["--forecast-cgroup", &cg.path]);
    let status = hog(&cg, &[]).wait().unwrap();
    assert!(was_sigkilled(&status), "{status:?}");
    let evs = obs.wait_for("the step's oom_kill", Duration::from_secs(20), |evs| {
        !events_in(evs, "oom_kill", &cg.path).is_empty()
    });
    let kill = events_in(&evs, "oom_kill", &cg.path)[0];
    assert_eq!(kill["warning"], "none", "{kill}");
    assert!(kill["warning_lead_s"].is_null(), "{kill}");
    assert!(risks_for(&evs, &cg.path).is_empty(), "{}", pretty(&evs));
}

#[test]
fn with_the_forecast_off_kills_carry_no_warning_fields() {
    let cg = Memcg::named(&format!("oomx-forecast-{}-off", std::process::id()));
    cg.limit_mb(32);
    let obs = Observer::start(&["--no-forecast", "--forecast-cgroup", &cg.path]);
    let status = hog(&cg, &[]).wait().unwrap();
    assert!(was_sigkilled(&status), "{status:?}");
    let evs = obs.wait_for("the oom_kill", Duration::from_secs(20), |evs| {
        !events_in(evs, "oom_kill", &cg.path).is_empty()
    });
    let kill = events_in(&evs, "oom_kill", &cg.path)[0];
    assert!(kill["warning"].is_null(), "{kill}");
    assert!(kill["warning_lead_s"].is_null(), "{kill}");
    assert!(!obs.stderr_text().contains("forecast on"));
}

#[test]
fn a_cgroup_stalled_at_its_limit_is_warned_about_as_a_stall() {
    // cgroup v1 `oom_kill_disable`: the hog reaches its limit and waits there, its charges
    // failing, nobody killed: the stall the model must name, with no growth to project.
    let cg = Memcg::named(&format!("oomx-forecast-{}-stall", std::process::id()));
    cg.limit_mb(64);
    cg.set("memory.oom_control", "1");
    let obs = Observer::start(&["--forecast-cgroup", &cg.path]);
    // Past the warm-up, so a growth projection is possible too: it must not be what fires.
    thread::sleep(Duration::from_secs(22));
    let mut stalled = hog(&cg, &[]);
    let evs = obs.wait_for("the stall's oom_risk", Duration::from_secs(20), |evs| {
        !risks_for(evs, &cg.path).is_empty()
    });
    let r = risks_for(&evs, &cg.path)[0];
    assert_eq!(r["reason"], "stall", "{r}");
    assert_eq!(r["limit"]["kind"], "container", "{r}");
    assert_eq!(r["limit"]["bytes"], 64 * MIB, "{r}");
    assert!(r["pressure"]["limit_hits"].as_u64().unwrap() > 0, "{r}");
    assert!(
        r["message"].as_str().unwrap().contains("stalls in reclaim"),
        "{r}"
    );
    assert!(stalled.try_wait().unwrap().is_none(), "nobody is killed");
    let _ = stalled.kill();
    cg.remove_now();
    let _ = stalled.wait();
}

#[test]
fn a_leaking_pod_container_is_warned_about_by_name_on_every_output() {
    let api = FakeApiServer::start();
    let mut cd = Containerd::start();
    // Our own prefix for the cgroups runc makes (the harness removes them on drop).
    cd.cgroup_parent = format!("/oomx-forecast-{}-cd", std::process::id());
    let kubeconfig = cd.observer_state().with_extension("kubeconfig");
    api.write_kubeconfig(&kubeconfig, "oomx-test-token")
        .unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let obs = cd.observer_with_env(
        Duration::from_secs(30),
        &[
            "--k8s-events",
            "--node-name",
            "node-a",
            "--metrics-listen",
            &listen,
        ],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
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
