//! Host integration tests: the real `oom-observer` binary, this machine's kernel, real OOM
//! kills in scratch cgroup v1 memory cgroups. Run with `cargo xtask test` (as root).
//!
//! The host offers `tp_btf` and `tracepoint` (no kprobes, fentry denied); both are forced in
//! turn. fentry and kprobe run in the VM matrix.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a panic is how a test fails"
)]

use std::{fs, thread, time::Duration};

use serde_json::Value;
use tests::{events_in, pretty, run_hog, spawn_hog, was_sigkilled, Memcg, Observer};

const WAIT: Duration = Duration::from_secs(20);

/// Asserts the fields a user checks on one kill of the hog.
fn assert_hog_kill(e: &Value, hog_pid: u32, victim_cgroup: &str, oom_cgroup: &str, hook: &str) {
    assert_eq!(e["schema"], 2, "{e}");
    assert_eq!(e["event"], "oom_kill", "{e}");
    assert_eq!(e["hook"], hook, "{e}");
    assert_eq!(e["victim"]["pid"], hog_pid, "{e}");
    assert_eq!(e["victim"]["tgid"], hog_pid, "{e}");
    assert_eq!(e["victim"]["comm"], "oomx-hog", "{e}");
    assert_eq!(e["victim"]["uid"], 0, "{e}");
    assert_eq!(e["victim"]["cgroup"], victim_cgroup, "{e}");
    assert!(e["victim"]["cgroup_id"].as_u64().unwrap_or(0) > 0, "{e}");
    assert_eq!(e["oom_cgroup"]["path"], oom_cgroup, "{e}");
    assert_eq!(e["constraint"], "memcg", "{e}");
    assert!(e["ktime_ns"].as_u64().unwrap_or(0) > 0, "{e}");
    assert!(e["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{e}");
}

fn single_kill(hook: &str) {
    let obs = Observer::start(&["--hook", hook]);
    let cg = Memcg::new(&format!("single-{hook}"));
    cg.limit_mb(32);
    let mut hog = spawn_hog(&cg.dir, &[]);
    let pid = hog.id();
    let status = hog.wait().unwrap();
    assert!(was_sigkilled(&status), "hog was not OOM-killed: {status:?}");
    obs.wait_for("the hog's oom_kill", WAIT, |evs| {
        !events_in(evs, "oom_kill", &cg.path).is_empty()
    });
    // Give a duplicate a chance to show up before counting.
    thread::sleep(Duration::from_millis(300));
    let evs = obs.events();
    let mine = events_in(&evs, "oom_kill", &cg.path);
    assert_eq!(
        mine.len(),
        1,
        "exactly one oom_kill per killed process:\n{}",
        pretty(&evs)
    );
    assert_hog_kill(mine[0], pid, &cg.path, &cg.path, hook);
    assert_eq!(
        mine[0]["trigger"]["pid"], pid,
        "the hog itself ran into its limit"
    );
    // The victim's exit follows its kill in the same stream, in kernel order.
    let evs = obs.wait_for("the victim's exit", WAIT, |e| {
        !events_in(e, "victim_exit", &cg.path).is_empty()
    });
    let exits = events_in(&evs, "victim_exit", &cg.path);
    assert_eq!(exits.len(), 1, "{}", pretty(&evs));
    let (kill, exit) = (events_in(&evs, "oom_kill", &cg.path)[0], exits[0]);
    assert_eq!(exit["victim"]["tgid"], pid, "{exit}");
    assert_eq!(exit["exit"]["signal"], 9, "{exit}");
    assert_eq!(exit["kill_seq"], kill["seq"], "{exit}");
    assert!(exit["seq"].as_u64() > kill["seq"].as_u64());
    assert!(exit["ktime_ns"].as_u64() > kill["ktime_ns"].as_u64());
}

#[test]
fn tp_btf_reports_a_memcg_kill_with_victim_and_cgroups() {
    single_kill("tp_btf");
}

#[test]
fn tracepoint_reports_a_memcg_kill_with_victim_and_cgroups() {
    single_kill("tracepoint");
}

fn parent_limit_child_victim(hook: &str) {
    let obs = Observer::start(&["--hook", hook]);
    let pod = Memcg::new(&format!("pod-{hook}"));
    pod.limit_mb(48);
    // Created after the observer started: its path is learned from the kernel's mkdir event.
    let (ctr_dir, ctr_path) = pod.child("ctr");
    let mut hog = spawn_hog(&ctr_dir, &[]);
    let pid = hog.id();
    assert!(was_sigkilled(&hog.wait().unwrap()));
    let evs = obs.wait_for("the pod kill", WAIT, |evs| {
        !events_in(evs, "oom_kill", &pod.path).is_empty()
    });
    let mine = events_in(&evs, "oom_kill", &pod.path);
    assert_eq!(mine.len(), 1, "{}", pretty(&evs));
    // The limit that was hit is the pod's; the victim sits in the container's cgroup.
    assert_hog_kill(mine[0], pid, &ctr_path, &pod.path, hook);
}

#[test]
fn tp_btf_names_the_parent_whose_limit_was_hit() {
    parent_limit_child_victim("tp_btf");
}

#[test]
fn tracepoint_names_the_parent_whose_limit_was_hit() {
    parent_limit_child_victim("tracepoint");
}

#[test]
fn twenty_cgroups_oom_at_once_each_kill_reported_once_in_sequence() {
    let obs = Observer::start(&[]);
    let parent = Memcg::new("storm");
    let tmp = tempfile::tempdir().unwrap();
    let go = tmp.path().join("go");
    let mut hogs = Vec::new();
    let mut paths = Vec::new();
    for i in 0..20 {
        let (dir, path) = parent.child(&format!("c{i}"));
        fs::write(dir.join("memory.limit_in_bytes"), (24u64 << 20).to_string()).unwrap();
        hogs.push(spawn_hog(&dir, &["--wait-for", go.to_str().unwrap()]));
        paths.push(path);
    }
    thread::sleep(Duration::from_millis(200));
    fs::write(&go, b"go").unwrap();
    let pids: Vec<u32> = hogs.iter().map(|h| h.id()).collect();
    for mut h in hogs {
        assert!(was_sigkilled(&h.wait().unwrap()));
    }
    let _ = fs::remove_file(&go);
    obs.wait_for("20 kills", WAIT, |evs| {
        events_in(evs, "oom_kill", &parent.path).len() >= 20
    });
    thread::sleep(Duration::from_millis(300));
    let evs = obs.events();
    let mine = events_in(&evs, "oom_kill", &parent.path);
    assert_eq!(mine.len(), 20, "every kill once:\n{}", pretty(&evs));
    for (pid, path) in pids.iter().zip(&paths) {
        let hits: Vec<_> = mine.iter().filter(|e| e["victim"]["pid"] == *pid).collect();
        assert_eq!(hits.len(), 1, "pid {pid}:\n{}", pretty(&evs));
        assert_eq!(hits[0]["victim"]["cgroup"], path.as_str());
        assert_eq!(hits[0]["oom_cgroup"]["path"], path.as_str());
    }
    // seq is gap-free and increasing over everything this daemon wrote.
    let seqs: Vec<u64> = evs.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    let expect: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expect, "seq must be 1, 2, 3, ... with no gap");
    assert!(
        !obs.stderr_text().contains("lost"),
        "no record may be lost:\n{}",
        obs.stderr_text()
    );
}

#[test]
fn a_cgroup_removed_right_after_its_kill_still_resolves() {
    let obs = Observer::start(&[]);
    let cg = Memcg::new("gone");
    cg.limit_mb(32);
    let status = run_hog(&cg.dir, &[]);
    assert!(was_sigkilled(&status));
    // Tear the cgroup down at once, as a container runtime does.
    cg.remove_now();
    assert!(!cg.dir.exists());
    let evs = obs.wait_for("the kill", WAIT, |evs| {
        !events_in(evs, "oom_kill", &cg.path).is_empty()
    });
    let e = events_in(&evs, "oom_kill", &cg.path)[0];
    assert_eq!(e["victim"]["cgroup"], cg.path.as_str());
    assert_eq!(e["oom_cgroup"]["path"], cg.path.as_str());
}

#[test]
fn oom_kill_disable_reports_memcg_oom_and_no_kill() {
    let obs = Observer::start(&[]);
    let cg = Memcg::new("nokill");
    cg.limit_mb(16);
    cg.set("memory.oom_control", "1");
    // The hog stops by itself at 24 MiB: once released, it must finish normally.
    let mut hog = spawn_hog(&cg.dir, &["--max-mb", "24"]);
    let evs = obs.wait_for("memcg_oom", WAIT, |evs| {
        !events_in(evs, "memcg_oom", &cg.path).is_empty()
    });
    let e = events_in(&evs, "memcg_oom", &cg.path)[0].clone();
    assert_eq!(e["oom_cgroup"]["path"], cg.path.as_str(), "{e}");
    assert_eq!(e["constraint"], "memcg");
    assert!(e["victim"].is_null(), "nothing was killed: {e}");
    assert_eq!(e["trigger"]["pid"], hog.id(), "{e}");
    // The stalled hog is still alive; raise the limit to release it.
    assert!(
        hog.try_wait().unwrap().is_none(),
        "the hog must be stalled, not dead"
    );
    cg.limit_mb(64);
    let status = hog.wait().unwrap();
    assert!(
        status.success(),
        "released hog should finish normally: {status:?}"
    );
    thread::sleep(Duration::from_millis(300));
    let evs = obs.events();
    assert!(
        events_in(&evs, "oom_kill", &cg.path).is_empty(),
        "no kill expected:\n{}",
        pretty(&evs)
    );
}

#[test]
fn btf_from_a_file_gives_the_full_event() {
    // The kernel's BTF copied to a file stands in for a BTF archive's file.
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("vmlinux.btf");
    fs::copy("/sys/kernel/btf/vmlinux", &f).expect("THIS TEST NEEDS /sys/kernel/btf/vmlinux");
    let obs = Observer::start(&["--btf", f.to_str().unwrap(), "--hook", "tp_btf"]);
    assert!(obs.stderr_text().contains("File("), "{}", obs.stderr_text());
    let cg = Memcg::new("btf-file");
    cg.limit_mb(32);
    let mut hog = spawn_hog(&cg.dir, &[]);
    let pid = hog.id();
    assert!(was_sigkilled(&hog.wait().unwrap()));
    let evs = obs.wait_for("the kill", WAIT, |e| {
        !events_in(e, "oom_kill", &cg.path).is_empty()
    });
    assert_hog_kill(
        events_in(&evs, "oom_kill", &cg.path)[0],
        pid,
        &cg.path,
        &cg.path,
        "tp_btf",
    );
}

#[test]
fn without_btf_kills_are_still_reported_with_what_the_tracepoint_sees() {
    let obs = Observer::start(&["--no-btf"]);
    let log = obs.stderr_text();
    assert!(
        log.contains("no BTF") && log.contains("fentry, kprobe and tp_btf cannot run"),
        "a clear message naming what is lost: {log}"
    );
    assert!(log.contains("strategy=tracepoint"), "{log}");
    let cg = Memcg::new("nobtf");
    cg.limit_mb(32);
    let mut hog = spawn_hog(&cg.dir, &[]);
    let pid = hog.id();
    assert!(was_sigkilled(&hog.wait().unwrap()));
    // No cgroup can be named without BTF: find the kill by pid.
    let evs = obs.wait_for("the kill", WAIT, |e| {
        e.iter()
            .any(|x| x["event"] == "oom_kill" && x["victim"]["pid"] == pid)
    });
    let e = evs
        .iter()
        .find(|x| x["event"] == "oom_kill" && x["victim"]["pid"] == pid)
        .unwrap();
    assert_eq!(e["hook"], "tracepoint", "{e}");
    assert_eq!(
        e["victim"]["comm"], "oomx-hog",
        "the tracepoint's own record has comm: {e}"
    );
    assert!(
        e["victim"]["cgroup"].is_null() && e["oom_cgroup"].is_null() && e["constraint"].is_null(),
        "{e}"
    );
    assert!(
        e["victim"]["tgid"].is_null(),
        "not seen, so null, never guessed: {e}"
    );
}
