//! The unenforced-limit audit (issue 9) on cgroup v2 with runc, as the VM guests run it
//! (`cargo xtask audit --vm`): the host's `tests/tests/audit.rs` covers cgroup v1, runc and
//! gVisor; these are its three runc scenarios where a v2 runtime places containers.
//!
//! On v2, runc (cgroupfs driver) puts a cgroupsPath that is not absolute — the systemd form
//! `slice:prefix:name` given to a runtime without its systemd driver — under the *parent* of
//! its own cgroup (the shim's, which is containerd's `<tree>/sys`): `<tree>/<path>`, a sibling
//! of the pod slice, bounded only by the test's outer limit.
//!
//! Each scenario returns a one-line detail (with the measured time) or why it failed.

use std::{
    thread,
    time::{Duration, Instant, SystemTime},
};

use crate::{
    containerd::{Containerd, Subscriber},
    events_in,
    pod::{findings, hog_script, progress, Pod, ScratchTree},
    pretty,
};

/// Emulated guests are slow: generous waits.
const WAIT: Duration = Duration::from_secs(120);
const OUTER_MB: u64 = 512;
const POD_MB: u64 = 64;

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(what())
    }
}

/// A pod as it should be (cgroupfs-form paths under the pod's cgroup): no finding, and its
/// hog is OOM-killed at the pod's limit.
pub fn pod_under_its_limit() -> Result<String, String> {
    let tree = ScratchTree::new(OUTER_MB);
    tree.mkdir_all_hierarchies("sys");
    tree.mkdir_memory("pod", Some(POD_MB));
    let cd = Containerd::start_in(tree.procs_files("sys"));
    let obs = cd.observer(Duration::from_secs(240));
    let pod = Pod {
        sandbox: "good-sb",
        app: "good-app",
        uid: "u-good",
    };
    let cgroup_of = |id: &str| tree.sub(&format!("pod/{id}"));
    pod.start(&cd, &cgroup_of, false, None, &hog_script(pod.app, 3));
    let pod_cg = tree.sub("pod");
    let evs = obs.wait_for("the hog's OOM kill", WAIT, |e| {
        events_in(e, "oom_kill", &pod_cg)
            .iter()
            .any(|k| k["container"]["id"] == pod.app)
    });
    let kill = events_in(&evs, "oom_kill", &pod_cg)
        .into_iter()
        .find(|k| k["container"]["id"] == pod.app)
        .cloned()
        .unwrap_or_default();
    check(kill["oom_cgroup"]["path"] == pod_cg.as_str(), || {
        format!("OOM cgroup is not the pod's: {kill}")
    })?;
    thread::sleep(Duration::from_millis(500));
    let evs = obs.events();
    for id in [pod.sandbox, pod.app] {
        check(findings(&evs, "limit_unenforced", id).is_empty(), || {
            format!("a finding for {id}: {}", pretty(&evs))
        })?;
    }
    Ok(format!(
        "no finding; the hog OOM-killed in {pod_cg} (the pod's {POD_MB} MiB)"
    ))
}

/// The incident: systemd-form paths, runc without its systemd driver; the finding within a
/// second of the task's start, before the hog reaches its pod's limit.
pub fn sandbox_outside_its_pod() -> Result<String, String> {
    let tree = ScratchTree::new(OUTER_MB);
    tree.mkdir_all_hierarchies("sys");
    let pod_slice = format!("{}-pod.slice", tree.base);
    tree.mkdir_memory(&pod_slice, Some(POD_MB));
    let cd = Containerd::start_in(tree.procs_files("sys"));
    let sub = Subscriber::start(&cd.socket);
    let obs = cd.observer(Duration::from_secs(240));
    let pod = Pod {
        sandbox: "esc-sb",
        app: "esc-app",
        uid: "u-esc",
    };
    let cgroup_of = |id: &str| format!("{pod_slice}:cri-containerd:{id}");
    pod.start(&cd, &cgroup_of, false, None, &hog_script(pod.app, 0));
    let evs = obs.wait_for("limit_unenforced for the app", WAIT, |e| {
        !findings(e, "limit_unenforced", pod.app).is_empty()
    });
    let hog_mib = progress(&cd, pod.app);
    let f = findings(&evs, "limit_unenforced", pod.app)[0].clone();
    let expected_pod = format!("{}/{pod_slice}", tree.path());
    let placed = tree.sub(&cgroup_of(pod.app));
    for (field, got, want) in [
        ("placed_cgroup", &f["placed_cgroup"], placed.as_str().into()),
        ("declared.pod", &f["declared"]["pod"], (POD_MB << 20).into()),
        (
            "declared.pod_cgroup",
            &f["declared"]["pod_cgroup"],
            expected_pod.as_str().into(),
        ),
        (
            "effective.bytes",
            &f["effective"]["bytes"],
            (OUTER_MB << 20).into(),
        ),
        (
            "effective.cgroup",
            &f["effective"]["cgroup"],
            tree.path().as_str().into(),
        ),
        (
            "reason",
            &f["reason"],
            serde_json::Value::from("limit_above_declared"),
        ),
    ] {
        check(*got == want, || format!("{field}: {got}, not {want}: {f}"))?;
    }
    obs.wait_for("limit_unenforced for the sandbox", WAIT, |e| {
        !findings(e, "limit_unenforced", pod.sandbox).is_empty()
    });
    let start = sub
        .seen()
        .into_iter()
        .find(|s| s.topic == "/tasks/start" && s.container_id.as_deref() == Some(pod.app))
        .and_then(|s| s.timestamp)
        .ok_or("containerd's /tasks/start for the app")?;
    let found = f["time"]
        .as_str()
        .and_then(|t| humantime::parse_rfc3339(t).ok())
        .ok_or_else(|| format!("finding without a time: {f}"))?;
    let ms = ms_between(start, found);
    check(ms < 1000.0, || {
        format!("finding {ms:.1} ms after the task's start")
    })?;
    check(hog_mib < POD_MB, || {
        format!("the hog already held {hog_mib} MiB at the finding")
    })?;
    Ok(format!(
        "limit_unenforced {ms:.1} ms after /tasks/start, placed in {placed}; the hog held \
         {hog_mib} of its pod's {POD_MB} MiB"
    ))
}

/// Fixed by hand: the process moved where its spec says; `limit_enforced` follows from the
/// kernel's report of the move alone.
pub fn fixed_by_hand() -> Result<String, String> {
    let tree = ScratchTree::new(OUTER_MB);
    tree.mkdir_all_hierarchies("sys");
    let pod_slice = format!("{}-pod.slice", tree.base);
    tree.mkdir_memory(&pod_slice, Some(POD_MB));
    let cd = Containerd::start_in(tree.procs_files("sys"));
    let obs = cd.observer(Duration::from_secs(240));
    let pod = Pod {
        sandbox: "fix-sb",
        app: "fix-app",
        uid: "u-fix",
    };
    let cgroup_of = |id: &str| format!("{pod_slice}:cri-containerd:{id}");
    pod.start(&cd, &cgroup_of, false, None, "exec sleep 3600");
    obs.wait_for("limit_unenforced for the app", WAIT, |e| {
        !findings(e, "limit_unenforced", pod.app).is_empty()
    });
    let scope = format!("{pod_slice}/cri-containerd-{}.scope", pod.app);
    tree.mkdir_memory(&scope, None);
    let pid = cd.task_pid(pod.app);
    let moved = Instant::now();
    tree.move_memory(&scope, pid);
    let evs = obs.wait_for("limit_enforced for the app", Duration::from_secs(10), |e| {
        !findings(e, "limit_enforced", pod.app).is_empty()
    });
    let took = moved.elapsed().as_secs_f64() * 1e3;
    let e = findings(&evs, "limit_enforced", pod.app)[0].clone();
    check(e["effective"]["bytes"] == POD_MB << 20, || {
        format!("effective limit: {e}")
    })?;
    check(e["placed_cgroup"] == tree.sub(&scope).as_str(), || {
        format!("placed: {e}")
    })?;
    Ok(format!("limit_enforced {took:.1} ms after the move"))
}

/// A scenario: a detail line, or why it failed.
pub type Scenario = fn() -> Result<String, String>;

/// The scenarios, by name.
pub const ALL: [(&str, Scenario); 3] = [
    ("pod_under_its_limit", pod_under_its_limit),
    ("sandbox_outside_its_pod", sandbox_outside_its_pod),
    ("fixed_by_hand", fixed_by_hand),
];

fn ms_between(a: SystemTime, b: SystemTime) -> f64 {
    crate::stats::ms(a, b)
}
