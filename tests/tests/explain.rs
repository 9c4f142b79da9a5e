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

/// Command lines carry secrets (issue 21): one real kill of a hog whose argv holds a
/// password and an API key, seen at once by three daemons: the default (`scrub`) prints the
/// masks, `--cmdline full` the raw values, `--cmdline drop` no command line at all. The read
/// of `/proc/<pid>/cmdline` races the victim's exit (a line may carry `null` when it lost):
/// kills are repeated until both the scrubbing and the full daemon read it, and the dropping
/// daemon must print `null` for every one of those kills, where a read would have succeeded.
#[test]
fn command_lines_are_scrubbed_by_default_full_on_request_and_dropped_on_request() {
    let scrub = Observer::start(&["--hook", "tp_btf", "--scrub-word", "unused_word"]);
    let full = Observer::start(&["--hook", "tp_btf", "--cmdline", "full"]);
    let drop = Observer::start(&["--hook", "tp_btf", "--cmdline", "drop"]);
    let secrets = ["--password=hunter2", "--api-key", "sekrit"];
    let mut extra = vec!["--"];
    extra.extend(secrets);
    let line = |obs: &Observer, cg: &Memcg, pid: u32| -> Value {
        let evs = obs.wait_for("the kill", WAIT, |e| {
            events_in(e, "oom_kill", &cg.path)
                .iter()
                .any(|e| e["victim"]["tgid"] == pid)
        });
        events_in(&evs, "oom_kill", &cg.path)
            .into_iter()
            .find(|e| e["victim"]["tgid"] == pid)
            .cloned()
            .unwrap()
    };
    let mut both_read = 0;
    for attempt in 0..5 {
        let cg = Memcg::new(&format!("scrub-{attempt}"));
        cg.limit_mb(32);
        let mut hog = spawn_hog(&cg.dir, &extra);
        let pid = hog.id();
        assert!(
            was_sigkilled(&hog.wait().unwrap()),
            "the hog was not OOM-killed"
        );
        let (s, f, d) = (
            line(&scrub, &cg, pid),
            line(&full, &cg, pid),
            line(&drop, &cg, pid),
        );
        // Whatever else happens, no line of the scrubbing or dropping daemon holds a secret.
        for e in [&s, &d] {
            let text = e.to_string();
            assert!(
                !text.contains("hunter2") && !text.contains("sekrit"),
                "a secret in the line: {e}"
            );
        }
        assert!(d["victim"]["cmdline"].is_null(), "--cmdline drop: {d}");
        let (Some(sc), Some(fc)) = (
            s["victim"]["cmdline"].as_array(),
            f["victim"]["cmdline"].as_array(),
        ) else {
            eprintln!("attempt {attempt}: a cmdline read lost the race with the exit:\n{s}\n{f}");
            continue;
        };
        assert!(fc[0].as_str().unwrap().ends_with("oomx-hog"), "{f}");
        assert_eq!(
            fc[fc.len() - 3..],
            secrets.map(Value::from),
            "--cmdline full prints the raw values: {f}"
        );
        assert_eq!(sc.len(), fc.len(), "{s}");
        assert_eq!(
            sc[sc.len() - 3..],
            ["--password=********", "--api-key", "********"].map(Value::from),
            "the default scrubs: {s}"
        );
        assert_eq!(
            sc[..sc.len() - 3],
            fc[..fc.len() - 3],
            "the rest is kept: {s}"
        );
        // The query answer is built from the same scrubbed event.
        let a = scrub.ask(&format!("{{\"pid\":{pid}}}")).to_string();
        assert!(!a.contains("hunter2") && !a.contains("sekrit"), "{a}");
        both_read += 1;
        if both_read == 2 {
            return;
        }
    }
    panic!("in 5 kills the daemons read the victim's cmdline together only {both_read} times");
}
