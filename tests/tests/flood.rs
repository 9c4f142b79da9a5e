//! A cgroup mkdir/attach flood cannot displace OOM kills (issue 13, item 6): cgroup records
//! have their own ring buffer, and whatever the kernel could not hand over becomes a `lost`
//! event in the stream, counted per record kind. Real kills in scratch cgroup v1 memcgs on
//! this host, a real flood of scratch cgroups created and removed by several threads.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a panic is how a test fails"
)]

use std::{
    fs,
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::Duration,
};

use serde_json::Value;
use tests::{events_in, pretty, spawn_hog, was_sigkilled, Memcg, Observer};

const WAIT: Duration = Duration::from_secs(30);
const HOGS: usize = 20;

/// Creates and removes scratch cgroups below `parent` from `threads` threads until `stop`
/// (or `per_thread` each, when given); returns how many were made.
fn flood(parent: &Path, threads: usize, per_thread: Option<u64>, stop: Arc<AtomicBool>) -> u64 {
    let made = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (parent, stop, made) = (parent.to_path_buf(), stop.clone(), made.clone());
            thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) && per_thread.is_none_or(|n| i < n) {
                    let d = parent.join(format!("f{t}-{i}"));
                    if fs::create_dir(&d).is_ok() {
                        made.fetch_add(1, Ordering::Relaxed);
                        let _ = fs::remove_dir(&d);
                    }
                    i += 1;
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    made.load(Ordering::Relaxed)
}

/// `HOGS` hogs, each in its own 24 MiB cgroup below `parent`, released together.
fn kill_round(parent: &Memcg, round: usize) -> Vec<(u32, String)> {
    let go = std::env::temp_dir().join(format!("oomx-flood-go-{}-{round}", std::process::id()));
    let _ = fs::remove_file(&go);
    let mut hogs = Vec::new();
    for i in 0..HOGS {
        let (dir, path) = parent.child(&format!("r{round}-c{i}"));
        fs::write(dir.join("memory.limit_in_bytes"), (24u64 << 20).to_string()).unwrap();
        let hog = spawn_hog(&dir, &["--wait-for", go.to_str().unwrap()]);
        hogs.push((hog, path));
    }
    thread::sleep(Duration::from_millis(200));
    fs::write(&go, b"go").unwrap();
    let mut out = Vec::new();
    for (mut h, path) in hogs {
        let pid = h.id();
        assert!(
            was_sigkilled(&h.wait().unwrap()),
            "hog {pid} was not OOM-killed"
        );
        out.push((pid, path));
    }
    let _ = fs::remove_file(&go);
    out
}

fn lost_total(evs: &[Value], kind: &str) -> u64 {
    evs.iter()
        .filter(|e| e["event"] == "lost")
        .map(|e| e["lost"][kind].as_u64().unwrap_or(0))
        .sum()
}

fn sig(pid: u32, s: i32) {
    assert_eq!(
        // SAFETY: kill(2) takes plain integers and touches none of our memory.
        unsafe { libc::kill(pid as i32, s) },
        0,
        "signal {s} to {pid}"
    );
}

#[test]
fn kills_survive_a_cgroup_mkdir_flood_and_every_loss_is_a_lost_event() {
    let obs = Observer::start(&[]);
    let victims = Memcg::new("flood-kills");
    let scratch = Memcg::new("flood-mkdir");
    let mut killed: Vec<(u32, String)> = Vec::new();

    // 1. The daemon is stopped while the kernel kills and the flood fills the rings: the
    //    cgroup ring overflows, the kill ring must not.
    sig(obs.pid(), libc::SIGSTOP);
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = {
        let (dir, stop) = (scratch.dir.clone(), stop.clone());
        thread::spawn(move || flood(&dir, 4, Some(1500), stop))
    };
    killed.extend(kill_round(&victims, 0));
    let made_stopped = flooder.join().unwrap();
    sig(obs.pid(), libc::SIGCONT);
    assert!(
        made_stopped > 2000,
        "the flood made only {made_stopped} cgroups"
    );
    obs.wait_for("the kills made while the daemon was stopped", WAIT, |evs| {
        events_in(evs, "oom_kill", &victims.path).len() >= HOGS
            && lost_total(evs, "cgroup_mkdir") > 0
    });

    // 2. The daemon runs, the flood goes on meanwhile.
    let flooder = {
        let (dir, stop) = (scratch.dir.clone(), stop.clone());
        thread::spawn(move || flood(&dir, 3, None, stop))
    };
    for round in 1..4 {
        killed.extend(kill_round(&victims, round));
    }
    stop.store(true, Ordering::Relaxed);
    flooder.join().unwrap();

    let want = killed.len();
    obs.wait_for("every kill and every exit", WAIT, |evs| {
        events_in(evs, "oom_kill", &victims.path).len() >= want
            && events_in(evs, "victim_exit", &victims.path).len() >= want
    });
    thread::sleep(Duration::from_millis(500));
    let evs = obs.events();
    let kills = events_in(&evs, "oom_kill", &victims.path);
    assert_eq!(
        kills.len(),
        want,
        "every kill exactly once:\n{}",
        pretty(&kills.iter().map(|v| (*v).clone()).collect::<Vec<_>>())
    );
    for (pid, path) in &killed {
        let hits: Vec<_> = kills
            .iter()
            .filter(|e| e["victim"]["pid"] == *pid)
            .collect();
        assert_eq!(hits.len(), 1, "pid {pid} reported {} times", hits.len());
        assert_eq!(hits[0]["victim"]["cgroup"], path.as_str(), "{}", hits[0]);
        assert_eq!(hits[0]["oom_cgroup"]["path"], path.as_str(), "{}", hits[0]);
        let exits: Vec<_> = events_in(&evs, "victim_exit", path)
            .into_iter()
            .filter(|e| e["victim"]["tgid"] == *pid)
            .collect();
        assert_eq!(exits.len(), 1, "pid {pid}'s exit exactly once");
        assert_eq!(exits[0]["kill_seq"], hits[0]["seq"], "{}", exits[0]);
    }
    // The flood lost cgroup records, and said so in the stream; no kill or exit was lost.
    assert!(
        lost_total(&evs, "cgroup_mkdir") > 0,
        "the stopped daemon's flood must have overflowed the cgroup ring"
    );
    assert_eq!(
        lost_total(&evs, "oom_kill"),
        0,
        "{}",
        pretty(
            &evs.iter()
                .filter(|e| e["event"] == "lost")
                .cloned()
                .collect::<Vec<_>>()
        )
    );
    assert_eq!(lost_total(&evs, "victim_exit"), 0);
    // Each lost event counts what was lost since the previous one; the totals add up.
    let lost: Vec<&Value> = evs.iter().filter(|e| e["event"] == "lost").collect();
    let last = lost.last().unwrap();
    for kind in [
        "oom_kill",
        "memcg_oom",
        "victim_exit",
        "cgroup_mkdir",
        "cgroup_attach",
        "oom_decision",
        "oom_kill_skipped",
    ] {
        assert_eq!(
            last["lost_total"][kind].as_u64(),
            Some(lost_total(&evs, kind)),
            "{last}"
        );
    }
    // The same loss is in the log, as before.
    assert!(obs.stderr_text().contains("lost"), "{}", obs.stderr_text());
    // seq stays gap-free over everything written, lost events included.
    let seqs: Vec<u64> = evs.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
}
