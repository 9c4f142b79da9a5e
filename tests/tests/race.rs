//! The race that makes Kubernetes say `Error` instead of `OOMKilled`: for N real OOM kills of
//! runc containers under a private containerd, does a TaskOOM reach containerd's event
//! stream before the container's TaskExit? Ours beside containerd's own (the shim's), from
//! one run; and a waiter that asks the query socket the instant each victim exits. The logic
//! is `tests::race`, which the cgroup v2 VM guests run too (`cargo xtask race --vm`).
//! `cargo xtask race` runs this with N = 200 and writes the table; the README test command
//! runs a short version.
//!
//! OOMX_RACE_KILLS sets N (default 20); OOMX_RACE_REPORT names a markdown file to write.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a panic is how a test fails"
)]

use std::{fs, time::Duration};

use tests::{
    containerd::{Containerd, Subscriber},
    race::{ask_socket, run_kills, tally, ReadDelays, RECORD_TRACE, TABLE_HEAD},
};

const PARALLEL: usize = 4;

#[test]
fn our_task_oom_precedes_task_exit_in_every_kill() {
    let n: usize = std::env::var("OOMX_RACE_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let cd = Containerd::start();
    let sub = Subscriber::start(&cd.socket);
    // Each record's read is traced: how long kill records wait behind the kernel's printk.
    std::env::set_var("OOM_OBSERVER_LOG", RECORD_TRACE);
    let obs = cd.observer(Duration::from_secs(30));
    let ids: Vec<String> = (0..n).map(|i| format!("race-{i}")).collect();
    let ask = |pid: u32| ask_socket(&obs.query_socket, &format!("{{\"pid\":{pid}}}"));
    let kills = run_kills(&cd, &ids, PARALLEL, 24, &[], &ask).unwrap();
    // Everything has been published once every TaskExit is in.
    sub.wait_for("every TaskExit", Duration::from_secs(60), |s| {
        ids.iter().all(|id| {
            s.iter()
                .any(|e| e.topic == "/tasks/exit" && e.container_id.as_deref() == Some(id.as_str()))
        })
    });
    std::thread::sleep(Duration::from_secs(1));
    let mut t = tally(&cd.namespace, &kills, &sub.seen(), &obs.events());
    t.read_ms = ReadDelays::from_log(&obs.stderr_text());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let table = format!(
        "Race: {n} OOM kills of runc containers (private containerd {}, {PARALLEL} at a time), \
         Linux {}, cgroup v1 memory.\n\
         Latencies are from the kernel's kill (oom-observer's `time`) to containerd's envelope \
         timestamp of each event, in ms.\n\n{TABLE_HEAD}\n{}\n\n{}\n\n{}\n",
        cd.version.name,
        kernel.trim(),
        t.rows(),
        t.exit_and_waiter(),
        t.read_line(),
    );
    eprintln!("\n{table}");
    if std::env::var_os("OOMX_DUMP_LOG").is_some() {
        eprintln!("DAEMON LOG\n{}", obs.stderr_text());
    }
    if let Ok(path) = std::env::var("OOMX_RACE_REPORT") {
        fs::write(&path, &table).unwrap();
    }
    let problems = t.problems();
    assert!(problems.is_empty(), "{problems:#?}\n{table}");
}
