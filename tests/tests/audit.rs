//! Unenforced memory limits, with real containerd, runc and runsc, in scratch cgroups only.
//!
//! Every test builds a Kubernetes-shaped pod (a sandbox container plus an application
//! container, with the CRI's annotations and labels) inside a scratch tree of its own whose
//! top has a hard limit of [`OUTER_MB`]: a container placed outside its pod's limit is still
//! bounded by the test, never by the machine. The private containerd runs in `<tree>/sys`,
//! standing where `system.slice` stood in the incident: a systemd-form cgroupsPath given to a
//! runtime without its systemd driver lands there.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a panic is how a test fails"
)]

use std::{
    fs,
    process::Command,
    thread,
    time::{Duration, Instant, SystemTime},
};

use serde_json::Value;
use tests::{
    containerd::{Containerd, RunOpts, Subscriber},
    events_in, observer_bin,
    pod::{findings, hog_script, progress, Pod, ScratchTree},
    pretty,
};

/// How long a host daemon may take to attach.
const READY: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(30);
/// The hard limit over the whole test.
const OUTER_MB: u64 = 768;
/// The pod's limit.
const POD_MB: u64 = 64;

fn rfc3339(s: &str) -> SystemTime {
    humantime::parse_rfc3339(s).unwrap_or_else(|e| panic!("bad time {s:?}: {e}"))
}

fn audit_cli(cd: &Containerd, json: bool) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(observer_bin());
    cmd.arg("audit");
    if json {
        cmd.arg("--json");
    }
    // Like ctr: the socket from CONTAINERD_ADDRESS when no flag names one.
    let out = cmd
        .env("CONTAINERD_ADDRESS", &cd.socket)
        .output()
        .expect("oom-observer audit");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A pod as it should be (cgroupfs-form paths under the pod's cgroup): no finding, and the
/// hog is OOM-killed at the pod's limit as usual.
fn pod_under_its_limit(gvisor: bool) {
    let tree = ScratchTree::new(OUTER_MB);
    tree.mkdir_all_hierarchies("sys");
    tree.mkdir_all_hierarchies("pod");
    tree.set_limit("pod", POD_MB);
    let cd = Containerd::start_in(tree.procs_files("sys"));
    let obs = cd.observer(READY);
    let pod = Pod {
        sandbox: "good-sb",
        app: "good-app",
        uid: "u-good",
    };
    let cgroup_of = |id: &str| tree.sub(&format!("pod/{id}"));
    pod.start(&cd, &cgroup_of, gvisor, None, &hog_script(pod.app, 3));

    // The one-shot audit looks at both and finds them enforced by the pod's limit.
    let (code, table, err) = audit_cli(&cd, false);
    assert_eq!(code, Some(0), "clean: exit 0\n{table}\n{err}");
    for id in [pod.sandbox, pod.app] {
        let row = table
            .lines()
            .find(|l| l.contains(id))
            .unwrap_or_else(|| panic!("no row for {id}:\n{table}"));
        assert!(row.contains("64MiB") && row.contains("  ok"), "{table}");
    }

    let pod_cg = tree.sub("pod");
    let evs = obs.wait_for("the hog's OOM kill", WAIT, |e| {
        events_in(e, "oom_kill", &pod_cg)
            .iter()
            .any(|k| k["container"]["id"] == pod.app)
    });
    let kill = events_in(&evs, "oom_kill", &pod_cg)
        .into_iter()
        .find(|k| k["container"]["id"] == pod.app)
        .unwrap();
    assert_eq!(kill["oom_cgroup"]["path"], pod_cg.as_str(), "{kill}");
    thread::sleep(Duration::from_millis(300));
    let evs = obs.events();
    for id in [pod.sandbox, pod.app] {
        assert!(
            findings(&evs, "limit_unenforced", id).is_empty(),
            "no finding for {id}: {}",
            pretty(&evs)
        );
    }
    if gvisor {
        // Debian's runsc sizes the sandbox at the host's memory although the pod's cgroup
        // limits it: informational, not a risk.
        let o = findings(&evs, "sandbox_oversized", pod.app);
        assert!(!o.is_empty(), "{}", pretty(&evs));
        assert_eq!(o[0]["effective"]["bytes"], POD_MB << 20, "{}", o[0]);
        assert_eq!(o[0]["effective"]["cgroup"], pod_cg.as_str(), "{}", o[0]);
    }
}

#[test]
fn pod_under_its_limit_has_no_finding_and_its_hog_is_oom_killed() {
    pod_under_its_limit(false);
}

#[test]
fn gvisor_pod_under_its_limit_has_no_finding_and_its_hog_is_oom_killed() {
    pod_under_its_limit(true);
}

/// The incident, with runc or runsc: the pod's cgroupsPath is in the systemd form, the
/// runtime has no systemd driver, so the sandbox's cgroup is made under the runtime's own
/// cgroup (`<tree>/sys`), a sibling of the pod slice with no limit of its own.
fn sandbox_outside_its_pod(gvisor: bool) {
    let tree = ScratchTree::new(OUTER_MB);
    tree.mkdir_all_hierarchies("sys");
    let pod_slice = format!("{}-pod.slice", tree.base);
    tree.mkdir_memory(&pod_slice, Some(POD_MB));
    let cd = Containerd::start_in(tree.procs_files("sys"));
    let sub = Subscriber::start(&cd.socket);
    let obs = cd.observer(READY);
    let pod = Pod {
        sandbox: "esc-sb",
        app: "esc-app",
        uid: "u-esc",
    };
    let cgroup_of = |id: &str| format!("{pod_slice}:cri-containerd:{id}");
    // gVisor: the application container declares the limit too, as the CRI would set it.
    let app_limit = gvisor.then_some(POD_MB);
    pod.start(&cd, &cgroup_of, gvisor, app_limit, &hog_script(pod.app, 0));

    let evs = obs.wait_for("limit_unenforced for the app", WAIT, |e| {
        !findings(e, "limit_unenforced", pod.app).is_empty()
    });
    // Read the hog's progress as soon as the finding is seen.
    let hog_mib_at_finding = progress(&cd, pod.app);
    let f = findings(&evs, "limit_unenforced", pod.app)[0].clone();
    eprintln!("FINDING {f}");
    let expected_pod = format!("{}/{pod_slice}", tree.path());
    let placed_sb = tree.sub(&format!("sys/{}", cgroup_of(pod.sandbox)));
    let placed_app = tree.sub(&format!("sys/{}", cgroup_of(pod.app)));
    assert_eq!(f["schema"], 2, "{f}");
    assert_eq!(f["container"]["name"], "app", "{f}");
    assert_eq!(f["container"]["pod"]["uid"], "u-esc", "{f}");
    assert_eq!(f["declared"]["bytes"], POD_MB << 20, "{f}");
    assert_eq!(f["declared"]["pod"], POD_MB << 20, "{f}");
    assert_eq!(f["declared"]["pod_cgroup"], expected_pod.as_str(), "{f}");
    // No limit of its own anywhere: only the test's outer bound.
    assert_eq!(f["effective"]["bytes"], OUTER_MB << 20, "{f}");
    assert_eq!(f["effective"]["cgroup"], tree.path().as_str(), "{f}");
    if gvisor {
        // Everything runs in the sandbox's cgroup; the app belongs anywhere in its pod.
        assert_eq!(f["placed_cgroup"], placed_sb.as_str(), "{f}");
        assert_eq!(f["expected_cgroup"], expected_pod.as_str(), "{f}");
        assert!(f["sandbox"]["pid"].as_u64().unwrap_or(0) > 0, "{f}");
    } else {
        assert_eq!(f["placed_cgroup"], placed_app.as_str(), "{f}");
        assert_eq!(
            f["expected_cgroup"],
            format!("{expected_pod}/cri-containerd-{}.scope", pod.app).as_str(),
            "{f}"
        );
    }
    assert_eq!(f["reason"], "limit_above_declared", "{f}");
    assert!(
        f["reasons"]
            .as_array()
            .unwrap()
            .contains(&Value::from("outside_expected_cgroup")),
        "{f}"
    );
    // The sandbox itself is named too.
    obs.wait_for("limit_unenforced for the sandbox", WAIT, |e| {
        !findings(e, "limit_unenforced", pod.sandbox).is_empty()
    });

    // Reported within one second of the task's start, before the hog used its limit.
    let at = |topic: &str| {
        sub.seen()
            .into_iter()
            .find(|s| s.topic == topic && s.container_id.as_deref() == Some(pod.app))
            .and_then(|s| s.timestamp)
            .unwrap_or_else(|| panic!("containerd's {topic} for the app"))
    };
    let found = rfc3339(f["time"].as_str().unwrap());
    let since = |t: SystemTime| {
        found
            .duration_since(t)
            .map(|d| d.as_secs_f64() * 1e3)
            .unwrap_or_else(|e| -e.duration().as_secs_f64() * 1e3)
    };
    let (from_create, ms) = (since(at("/tasks/create")), since(at("/tasks/start")));
    eprintln!(
        "LATENCY limit_unenforced ({}): {from_create:.1} ms after /tasks/create, {ms:.1} ms after /tasks/start \
         (negative: found before containerd published the start); hog held {hog_mib_at_finding} MiB of its {POD_MB} MiB",
        if gvisor { "runsc" } else { "runc" }
    );
    assert!(ms < 1000.0, "finding {ms:.1} ms after the task's start");
    assert!(
        hog_mib_at_finding < POD_MB,
        "the hog already held {hog_mib_at_finding} MiB"
    );

    // And the risk is real: the hog goes past its pod's limit without being killed.
    let deadline = Instant::now() + WAIT;
    while progress(&cd, pod.app) < POD_MB + 16 {
        assert!(
            Instant::now() < deadline,
            "the hog stopped at {} MiB",
            progress(&cd, pod.app)
        );
        thread::sleep(Duration::from_millis(50));
    }
    let evs = obs.events();
    assert!(
        events_in(&evs, "oom_kill", &tree.path()).is_empty(),
        "nothing was killed: the limit is not enforced: {}",
        pretty(&evs)
    );

    // The one-shot audit says the same, in JSON, with exit 1.
    let (code, out, err) = audit_cli(&cd, true);
    assert_eq!(code, Some(1), "findings: exit 1\n{out}\n{err}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["event"] == "limit_unenforced" && l["container"]["id"] == pod.app),
        "{out}"
    );
    if gvisor {
        // Debian's runsc sizes the sandbox at the host's memory: above the outer bound.
        let total = f["sandbox"]["total_memory"].as_u64();
        if total.is_some_and(|t| t > (OUTER_MB << 20) * 102 / 100) {
            let evs = obs.wait_for("sandbox_oversized", WAIT, |e| {
                !findings(e, "sandbox_oversized", pod.app).is_empty()
            });
            let o = findings(&evs, "sandbox_oversized", pod.app)[0];
            assert_eq!(o["reason"], "total_memory_above_limit", "{o}");
        }
    }
}

#[test]
fn runc_sandbox_outside_its_pod_is_flagged_within_a_second() {
    sandbox_outside_its_pod(false);
}

#[test]
fn gvisor_sandbox_outside_its_pod_is_flagged_within_a_second() {
    sandbox_outside_its_pod(true);
}

#[test]
fn moving_the_processes_into_their_cgroup_by_hand_clears_the_finding() {
    let tree = ScratchTree::new(OUTER_MB);
    tree.mkdir_all_hierarchies("sys");
    let pod_slice = format!("{}-pod.slice", tree.base);
    tree.mkdir_memory(&pod_slice, Some(POD_MB));
    let cd = Containerd::start_in(tree.procs_files("sys"));
    let obs = cd.observer(READY);
    let pod = Pod {
        sandbox: "fix-sb",
        app: "fix-app",
        uid: "u-fix",
    };
    let cgroup_of = |id: &str| format!("{pod_slice}:cri-containerd:{id}");
    // `exec sleep`: the task is one process, so moving it moves the container.
    pod.start(&cd, &cgroup_of, false, None, "exec sleep 3600");
    obs.wait_for("limit_unenforced for the app", WAIT, |e| {
        !findings(e, "limit_unenforced", pod.app).is_empty()
    });
    // Fixed by hand: the process goes where its spec says (what systemd would have made).
    let scope = format!("{pod_slice}/cri-containerd-{}.scope", pod.app);
    tree.mkdir_memory(&scope, None);
    obs.wait_log(r#"program="cgroup_attach_task" via="tracepoint""#, WAIT);
    let pid = cd.task_pid(pod.app);
    let moved = Instant::now();
    tree.move_memory(&scope, pid);
    // No periodic scan: only the kernel's report of the move can trigger this.
    let evs = obs.wait_for("limit_enforced for the app", Duration::from_secs(5), |e| {
        !findings(e, "limit_enforced", pod.app).is_empty()
    });
    eprintln!(
        "LATENCY move -> limit_enforced: {:.1} ms",
        moved.elapsed().as_secs_f64() * 1e3
    );
    let e = findings(&evs, "limit_enforced", pod.app)[0];
    assert_eq!(e["effective"]["bytes"], POD_MB << 20, "{e}");
    assert_eq!(e["placed_cgroup"], tree.sub(&scope).as_str(), "{e}");
    assert_eq!(e["reason"], "enforced", "{e}");
    // Events share one gap-free sequence.
    let seqs: Vec<u64> = evs.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    // The sandbox is still outside: its finding stays.
    assert!(findings(&evs, "limit_enforced", pod.sandbox).is_empty());
}

#[test]
fn a_container_that_declares_no_limit_gets_no_finding() {
    let tree = ScratchTree::new(OUTER_MB);
    tree.mkdir_all_hierarchies("sys");
    let cd = Containerd::start_in(tree.procs_files("sys"));
    let obs = cd.observer(READY);
    // Outside any pod, no memory limit, placed "wrongly" by a relative systemd-form path:
    // nothing was promised, so nothing is reported.
    let id = "nolimit";
    cd.run_detached(
        id,
        &RunOpts {
            cgroup: Some(&format!("{}-x.slice:cri-containerd:{id}", tree.base)),
            ..Default::default()
        },
        &["/bin/sh", "-c", "sleep 3600"],
    );
    cd.wait_running(id);
    let (code, table, err) = audit_cli(&cd, false);
    assert_eq!(code, Some(0), "{table}\n{err}");
    assert!(
        table
            .lines()
            .any(|l| l.contains(id) && l.ends_with("no limit declared")),
        "{table}"
    );
    thread::sleep(Duration::from_secs(1));
    let evs = obs.events();
    assert!(
        !evs.iter().any(|e| e["container"]["id"] == id),
        "{}",
        pretty(&evs)
    );
}

#[test]
fn a_limit_removed_and_restored_by_hand_is_flagged_then_cleared() {
    let tree = ScratchTree::new(OUTER_MB);
    tree.mkdir_all_hierarchies("sys");
    let cd = Containerd::start_in(tree.procs_files("sys"));
    let obs = cd.observer(READY);
    let id = "bylimit";
    let cg = tree.sub(&format!("ctr/{id}"));
    cd.run_detached(
        id,
        &RunOpts {
            cgroup: Some(&cg),
            memory_limit_mb: Some(POD_MB),
            ..Default::default()
        },
        &["/bin/sh", "-c", "exec sleep 3600"],
    );
    cd.wait_running(id);
    let (code, table, err) = audit_cli(&cd, false);
    assert_eq!(
        code,
        Some(0),
        "runc enforces its spec's limit\n{table}\n{err}"
    );
    thread::sleep(Duration::from_millis(500));
    assert!(obs.events().is_empty(), "{}", pretty(&obs.events()));
    // Someone lifts the limit by hand: the container is bounded only by the test's cap.
    let file = tree
        .memory_dir(&format!("ctr/{id}"))
        .join("memory.limit_in_bytes");
    fs::write(&file, "-1").unwrap();
    let evs = obs.wait_for("limit_unenforced", Duration::from_secs(5), |e| {
        !findings(e, "limit_unenforced", id).is_empty()
    });
    let f = findings(&evs, "limit_unenforced", id)[0];
    assert_eq!(f["declared"]["container"], POD_MB << 20, "{f}");
    assert_eq!(f["effective"]["bytes"], OUTER_MB << 20, "{f}");
    assert_eq!(f["placed_cgroup"], cg.as_str(), "{f}");
    assert_eq!(f["expected_cgroup"], cg.as_str(), "{f}");
    assert_eq!(
        f["reasons"],
        serde_json::json!(["limit_above_declared"]),
        "{f}"
    );
    let (code, _, _) = audit_cli(&cd, true);
    assert_eq!(code, Some(1));
    // And puts it back.
    fs::write(&file, (POD_MB << 20).to_string()).unwrap();
    let evs = obs.wait_for("limit_enforced", Duration::from_secs(5), |e| {
        !findings(e, "limit_enforced", id).is_empty()
    });
    let e = findings(&evs, "limit_enforced", id)[0];
    assert_eq!(e["effective"]["bytes"], POD_MB << 20, "{e}");
    assert_eq!(
        findings(&evs, "limit_unenforced", id).len(),
        1,
        "raised once: {}",
        pretty(&evs)
    );
}
