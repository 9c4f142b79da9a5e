//! The kill explained (issue 14) on this host's cgroup v1: the OOM domain's page counter, the
//! victim's memory, its `oom_score_adj` and namespace pid, the limit in words and the one-line
//! summary, each checked against what the test itself set up. Real kills in scratch memcgs,
//! with the two strategies this host runs (`tp_btf`, `tracepoint`; fentry and kprobe, which
//! also see `oom_control`, run in the VM matrix).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a panic is how a test fails"
)]

use std::time::Duration;

use serde_json::Value;
use tests::{events_in, spawn_hog, was_sigkilled, Memcg, Observer};

const WAIT: Duration = Duration::from_secs(20);
const MIB: u64 = 1 << 20;

fn explained_kill(hook: &str) {
    let obs = Observer::start(&["--hook", hook]);
    let cg = Memcg::new(&format!("explain-{hook}"));
    let limit = 32 * MIB;
    cg.limit_mb(32);
    let mut hog = spawn_hog(&cg.dir, &["--oom-score-adj", "500"]);
    let pid = hog.id();
    assert!(
        was_sigkilled(&hog.wait().unwrap()),
        "the hog was not OOM-killed"
    );
    let evs = obs.wait_for("the kill", WAIT, |e| {
        !events_in(e, "oom_kill", &cg.path).is_empty()
    });
    let e: &Value = events_in(&evs, "oom_kill", &cg.path)[0];

    // The OOM domain: the memcg's own page counter, read at the kill.
    let d = &e["oom_domain"];
    assert_eq!(d["limit_bytes"], limit, "the limit the test wrote: {e}");
    let usage = d["usage_bytes"].as_u64().unwrap_or(0);
    assert!(
        usage <= limit && usage + 4 * MIB >= limit,
        "usage {usage} must be within a page-counter margin of the limit {limit}: {e}"
    );
    // cgroup v1 has no separate swap counter; tp_btf and tracepoint cannot see oom_control.
    assert!(
        d["swap_usage_bytes"].is_null() && d["swap_limit_bytes"].is_null(),
        "{e}"
    );
    assert!(d["total_pages"].is_null(), "not seen by {hook}: {e}");
    assert!(e["incident"].is_null(), "not seen by {hook}: {e}");
    assert!(e["victim"]["points"].is_null(), "not seen by {hook}: {e}");

    // The victim: what the kernel's own "Killed process" line prints.
    let v = &e["victim"];
    assert_eq!(
        v["oom_score_adj"], 500,
        "the oom_score_adj the hog set: {e}"
    );
    assert_eq!(v["ns_pid"], pid, "the host's own pid namespace: {e}");
    let m = &v["memory"];
    let anon = m["anon_rss_bytes"].as_u64().unwrap_or(0);
    assert!(
        anon <= limit && anon + 8 * MIB >= limit,
        "anon RSS {anon} must be near what the hog allocated (up to its {limit} limit): {e}"
    );
    assert!(m["total_vm_bytes"].as_u64().unwrap_or(0) >= anon, "{e}");
    assert!(m["file_rss_bytes"].as_u64().is_some(), "{e}");
    assert!(m["shmem_rss_bytes"].as_u64().is_some(), "{e}");
    assert_eq!(m["swap_bytes"], 0, "no swap on this host: {e}");
    assert!(m["pgtables_bytes"].as_u64().unwrap_or(0) > 0, "{e}");
    // exe and cmdline are read from /proc when the daemon handles the kill: right, or null
    // once the process is gone, never another process's.
    if let Some(exe) = v["exe"].as_str() {
        assert!(exe.ends_with("/oomx-hog"), "{e}");
    }
    if let Some(cmd) = v["cmdline"].as_array() {
        assert!(cmd.iter().any(|a| a == "--oom-score-adj"), "{e}");
    }

    // No container: the limit is a plain cgroup's, and nobody's init was killed.
    assert_eq!(e["limit"], "cgroup", "{e}");
    assert!(e["container_exits"].is_null(), "{e}");
    let msg = e["message"].as_str().unwrap_or("");
    assert!(
        msg.starts_with(&format!(
            "oomx-hog (pid {pid}) OOM-killed: cgroup {} reached its 32.0 MiB limit",
            cg.path
        )),
        "{msg}"
    );
    assert!(msg.contains("MiB anon"), "{msg}");

    // The query answer carries the same facts.
    let a = obs.ask(&format!("{{\"pid\":{pid}}}"));
    let k = &a["kills"][0];
    for f in [
        "oom_domain",
        "limit",
        "container_exits",
        "incident",
        "message",
    ] {
        assert_eq!(k[f], e[f], "query answer's {f}: {a}");
    }
    assert_eq!(k["memory"], e["victim"]["memory"], "{a}");
    assert_eq!(k["oom_score_adj"], 500, "{a}");
}

#[test]
fn tp_btf_explains_the_kill() {
    explained_kill("tp_btf");
}

#[test]
fn tracepoint_explains_the_kill_of_the_allocating_task() {
    explained_kill("tracepoint");
}

#[test]
fn a_parent_limit_is_reported_with_the_parents_counter() {
    let obs = Observer::start(&["--hook", "tp_btf"]);
    let pod = Memcg::new("explain-pod");
    pod.limit_mb(48);
    let (dir, _) = pod.child("ctr");
    let mut hog = spawn_hog(&dir, &[]);
    assert!(was_sigkilled(&hog.wait().unwrap()));
    let evs = obs.wait_for("the kill", WAIT, |e| {
        !events_in(e, "oom_kill", &pod.path).is_empty()
    });
    let e = events_in(&evs, "oom_kill", &pod.path)[0];
    assert_eq!(
        e["oom_domain"]["limit_bytes"],
        48 * MIB,
        "the parent's limit: {e}"
    );
    assert_eq!(e["victim"]["oom_score_adj"], 0, "{e}");
}
