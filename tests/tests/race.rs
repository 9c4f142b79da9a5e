//! The race that makes Kubernetes say `Error` instead of `OOMKilled`: for N real OOM kills of
//! runc containers under a private containerd, does a TaskOOM reach containerd's event
//! stream before the container's TaskExit? Ours beside containerd's own (the shim's), from
//! one run. `cargo xtask race` runs it with N = 200 and writes the table; the README test
//! command runs a short version.
//!
//! OOMX_RACE_KILLS sets N (default 20); OOMX_RACE_REPORT names a markdown file to write.

use std::{
    collections::HashMap,
    fs,
    time::{Duration, SystemTime},
};

use serde_json::Value;
use tests::{
    containerd::{Containerd, Seen, Subscriber},
    stats::{ms, pct},
    Observer,
};

const PARALLEL: usize = 4;

#[derive(Default)]
struct PathStats {
    before_exit: usize,
    after_exit: usize,
    missing: usize,
    latency_ms: Vec<f64>,
}

impl PathStats {
    fn row(&mut self, name: &str, n: usize) -> String {
        self.latency_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
        format!(
            "| {name} | {n} | {:.1}% ({}) | {} | {} | {:.2} | {:.2} | {:.2} |",
            100.0 * self.before_exit as f64 / n as f64,
            self.before_exit,
            self.after_exit,
            self.missing,
            pct(&self.latency_ms, 50.0),
            pct(&self.latency_ms, 99.0),
            self.latency_ms.last().copied().unwrap_or(f64::NAN),
        )
    }
}

#[test]
fn our_task_oom_precedes_task_exit_in_every_kill() {
    let n: usize = std::env::var("OOMX_RACE_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let cd = Containerd::start();
    let sub = Subscriber::start(&cd.socket);
    let obs = Observer::start(&[
        "--containerd-socket",
        cd.socket.to_str().unwrap(),
        "--state-dir",
        cd.dir.join("state-observer").to_str().unwrap(),
    ]);
    obs.wait_log("connected to containerd", Duration::from_secs(30));
    cd.go();
    let ids: Vec<String> = (0..n).map(|i| format!("race-{i}")).collect();
    for chunk in ids.chunks(PARALLEL) {
        let mut running: Vec<_> = chunk.iter().map(|id| cd.run_hog(id, 24, &[])).collect();
        for c in &mut running {
            let status = c.wait().unwrap();
            assert_eq!(
                status.code(),
                Some(137),
                "every container must be OOM-killed"
            );
        }
    }
    // Everything has been published once every TaskExit is in.
    sub.wait_for("every TaskExit", Duration::from_secs(60), |s| {
        ids.iter().all(|id| {
            s.iter()
                .any(|e| e.topic == "/tasks/exit" && e.container_id.as_deref() == Some(id.as_str()))
        })
    });
    std::thread::sleep(Duration::from_secs(1));
    let seen = sub.seen();
    let evs = obs.events();
    let kill_time: HashMap<String, SystemTime> = evs
        .iter()
        .filter(|e| e["event"] == "oom_kill")
        .filter_map(|e: &Value| {
            let id = e["container"]["id"].as_str()?.to_string();
            let t = humantime::parse_rfc3339(e["time"].as_str()?).ok()?;
            Some((id, t))
        })
        .collect();

    let (mut ours, mut theirs, mut exit_lat) =
        (PathStats::default(), PathStats::default(), Vec::new());
    let mut ours_late = Vec::new();
    for id in &ids {
        let mine: Vec<(usize, &Seen)> = seen
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                e.namespace == cd.namespace && e.container_id.as_deref() == Some(id.as_str())
            })
            .collect();
        let exit = mine
            .iter()
            .find(|(_, e)| e.topic == "/tasks/exit")
            .map(|(i, e)| (*i, *e));
        let kill = kill_time.get(id).copied();
        assert!(kill.is_some(), "no oom_kill event named container {id}");
        if let (Some((_, e)), Some(k)) = (exit, kill) {
            exit_lat.push(ms(k, e.timestamp.unwrap()));
        }
        for (stats, want_ours) in [(&mut ours, true), (&mut theirs, false)] {
            let first = mine
                .iter()
                .find(|(_, e)| e.topic == "/tasks/oom" && e.ours == want_ours);
            match (first, exit) {
                (Some((i, e)), Some((xi, _))) => {
                    if *i < xi {
                        stats.before_exit += 1;
                    } else {
                        stats.after_exit += 1;
                        if want_ours {
                            ours_late.push(id.clone());
                        }
                    }
                    if let (Some(k), Some(ts)) = (kill, e.timestamp) {
                        stats.latency_ms.push(ms(k, ts));
                    }
                }
                (None, _) => {
                    stats.missing += 1;
                    if want_ours {
                        ours_late.push(id.clone());
                    }
                }
                (Some(_), None) => stats.after_exit += 1,
            }
        }
    }
    exit_lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let table = format!(
        "Race: {n} OOM kills of runc containers (private containerd 1.6, {PARALLEL} at a time), \
         Linux {}, cgroup v1 memory.\n\
         Latencies are from the kernel's kill (oom-observer's `time`) to containerd's envelope \
         timestamp of each event, in ms.\n\n\
         | path | kills | TaskOOM before TaskExit | after TaskExit | no TaskOOM | kill→TaskOOM p50 | p99 | max |\n\
         |---|---|---|---|---|---|---|---|\n{}\n{}\n\n\
         kill→TaskExit: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms.\n",
        kernel.trim(),
        ours.row("oom-observer", n),
        theirs.row("containerd's own (runc shim)", n),
        pct(&exit_lat, 50.0),
        pct(&exit_lat, 99.0),
        exit_lat.last().copied().unwrap_or(f64::NAN),
    );
    eprintln!("\n{table}");
    // With OOM_OBSERVER_LOG=observer::run=debug: where the slowest kills spent their time.
    let mut slow: Vec<String> = obs
        .stderr_text()
        .lines()
        .filter(|l| l.contains("kill handed"))
        .map(str::to_string)
        .collect();
    slow.sort_by_key(|l| {
        std::cmp::Reverse(
            l.split("attribute_us=")
                .nth(1)
                .and_then(|v| v.split(' ').next()?.parse::<u64>().ok())
                .unwrap_or(0),
        )
    });
    for l in slow.iter().take(8) {
        eprintln!("SLOW {l}");
    }
    if std::env::var_os("OOMX_DUMP_LOG").is_some() {
        eprintln!("DAEMON LOG\n{}", obs.stderr_text());
    }
    if let Ok(path) = std::env::var("OOMX_RACE_REPORT") {
        fs::write(&path, &table).unwrap();
    }
    assert!(ours_late.is_empty(), "our TaskOOM must precede TaskExit in every kill; late or missing for {ours_late:?}\n{table}");
}
