//! The forecast's measurement (issue 24): lead time and false alarms of `oom_risk` against
//! the `predict_linear(working_set[5m], 60) > limit` baseline, on real scratch cgroups
//! (`oomx-forecast-*`, removed on drop) and real OOM kills.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "the tests' harness: a panic is how a test fails"
)]

use std::{
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{bench::cost::cpu_s, hog_bin, was_sigkilled, Memcg, Observer};

const MIB: u64 = 1 << 20;

fn risks_for<'a>(evs: &'a [Value], cgroup: &str) -> Vec<&'a Value> {
    evs.iter()
        .filter(|e| e["event"] == "oom_risk" && e["cgroup"] == cgroup)
        .collect()
}

/// One workload of the measurement.
struct Workload {
    name: &'static str,
    cg: Memcg,
    /// Where the hog runs (the cgroup itself, or a child of it).
    run_in: std::path::PathBuf,
    /// The limit that fires: bytes, and its path.
    limit: u64,
    proc_: Option<std::process::Child>,
    killed_at: Option<f64>,
    /// Working set samples (s since start, bytes) of the modelled cgroup.
    ws: Vec<(f64, f64)>,
    baseline_at: Option<f64>,
    /// The modelled cgroup's path when it is a child of `cg` (the pod-limit case).
    child_path: Option<String>,
}

/// `predict_linear(x[range], horizon)`: the least-squares line through the samples of the
/// last `range` seconds, extended `horizon` seconds past the newest (as Prometheus does).
pub fn predict_linear(samples: &[(f64, f64)], range: f64, horizon: f64) -> Option<f64> {
    let &(tn, _) = samples.last()?;
    let pts: Vec<_> = samples.iter().filter(|(t, _)| tn - t <= range).collect();
    if pts.len() < 2 {
        return None;
    }
    let n = pts.len() as f64;
    let mt = pts.iter().map(|(t, _)| t).sum::<f64>() / n;
    let mv = pts.iter().map(|(_, v)| v).sum::<f64>() / n;
    let sxx: f64 = pts.iter().map(|(t, _)| (t - mt) * (t - mt)).sum();
    let sxy: f64 = pts.iter().map(|(t, v)| (t - mt) * (v - mv)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    Some(mv + slope * (tn + horizon - mt))
}

/// cAdvisor's working set of a v1 cgroup: usage less `total_inactive_file`.
fn working_set(dir: &std::path::Path) -> Option<f64> {
    working_set_of(dir, "memory.usage_in_bytes", "total_inactive_file")
}

/// cAdvisor's working set: the cgroup's usage (`usage_file`) less its inactive page cache
/// (the `inactive` field of `memory.stat`).
pub fn working_set_of(dir: &std::path::Path, usage_file: &str, inactive: &str) -> Option<f64> {
    let usage: f64 = std::fs::read_to_string(dir.join(usage_file))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(dir.join("memory.stat")).ok()?;
    let inactive: f64 = stat
        .lines()
        .find_map(|l| l.strip_prefix(inactive)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    Some((usage - inactive).max(0.0))
}

/// Every workload of issue 24 that this host can run without containerd, at once, under one
/// daemon; the `predict_linear` baseline from the same cgroups' working set, sampled every
/// second here. About 2 minutes. Returns the page: the table and the model's cost. Panics
/// when the harness fails: a leak not killed, a never-killed workload killed.
///
/// `quick` (the README's test command) runs three of them for 45 s, a leak, a step and a
/// holder at 95 %: enough to fail when the harness breaks. The leaks, the sawtooth and the
/// holder are tested for their own sake in tests/tests/forecast.rs.
pub fn measure(quick: bool) -> String {
    let tag = std::process::id();
    let mk = |name: &'static str, limit_mb: u64| {
        let cg = Memcg::named(&format!("oomx-forecast-{tag}-{name}"));
        cg.limit_mb(limit_mb);
        Workload {
            name,
            run_in: cg.dir.clone(),
            cg,
            limit: limit_mb * MIB,
            proc_: None,
            killed_at: None,
            ws: Vec::new(),
            baseline_at: None,
            child_path: None,
        }
    };
    let mut ws = vec![
        mk("leak-1", 64),
        mk("leak-10", 400),
        mk("leak-100", 1024),
        mk("step", 256),
        mk("parent", 200),
        mk("saw", 200),
        mk("steady95", 256),
        mk("cache", 100),
    ];
    if quick {
        ws.retain(|w| matches!(w.name, "leak-10" | "step" | "steady95"));
    }
    // A leak under a parent whose limit (200 MiB) is below the child's (400 MiB): the
    // parent's fires first, as a pod's would.
    if let Some(parent) = ws.iter_mut().find(|w| w.name == "parent") {
        let (child_dir, child_path) = parent.cg.child("c");
        parent
            .cg
            .set("c/memory.limit_in_bytes", &(400 * MIB).to_string());
        parent.run_in = child_dir;
        parent.child_path = Some(child_path);
    }
    let paths: Vec<String> = ws
        .iter()
        .map(|w| w.child_path.clone().unwrap_or_else(|| w.cg.path.clone()))
        .collect();
    let mut args: Vec<&str> = Vec::new();
    for p in &paths {
        args.extend(["--forecast-cgroup", p.as_str()]);
    }
    let obs = Observer::start(&args);
    let t0 = Instant::now();
    let cpu0 = cpu_s(obs.pid(), "forecast").expect("the daemon's forecast thread");
    // The model's warm-up (20 s) is part of every cgroup's life: workloads start after 25 s,
    // as if the containers had been running.
    let spawn = |w: &Workload, args: &[&str]| {
        Command::new(hog_bin())
            .arg("--join")
            .arg(&w.run_in)
            .args(args)
            .env("MALLOC_MMAP_THRESHOLD_", "65536")
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };
    let file = tempfile::NamedTempFile::new_in("/var/tmp").unwrap();
    let fpath = file.path().display().to_string();
    let mut started = false;
    // The slowest leak (64 MiB at 1 MiB/s) dies about 65 s in; the quick run's, 40 s in.
    let end = 25.0 + if quick { 45.0 } else { 100.0 };
    while t0.elapsed().as_secs_f64() < end {
        let now = t0.elapsed().as_secs_f64();
        if !started && now >= 25.0 {
            started = true;
            for w in ws.iter_mut() {
                let a: &[&str] = match w.name {
                    "leak-1" => &["--rate-mb", "1"],
                    "leak-10" => &["--rate-mb", "10"],
                    "leak-100" => &["--rate-mb", "100"],
                    "step" => &[],
                    "parent" => &["--rate-mb", "5"],
                    "saw" => &["--max-mb", "185", "--sawtooth-mb", "100", "--rate-mb", "40"],
                    "steady95" => &["--max-mb", "240", "--hold"],
                    _ => {
                        // Fills its 100 MiB with the page cache of a 150 MiB file, read again
                        // and again (written from inside, so it is charged there).
                        let sh = format!(
                            "echo $$ > {}/cgroup.procs && dd if=/dev/zero of={fpath} bs=1M count=150 2>/dev/null && while :; do cat {fpath} > /dev/null; done",
                            w.run_in.display()
                        );
                        w.proc_ = Some(
                            Command::new("sh")
                                .args(["-c", &sh])
                                .stdout(Stdio::null())
                                .spawn()
                                .unwrap(),
                        );
                        continue;
                    }
                };
                w.proc_ = Some(spawn(w, a));
            }
        }
        for (w, path) in ws.iter_mut().zip(&paths) {
            if let Some(p) = w.proc_.as_mut() {
                if w.killed_at.is_none() {
                    if let Ok(Some(s)) = p.try_wait() {
                        assert!(was_sigkilled(&s), "{}: {s:?}", w.name);
                        w.killed_at = Some(now);
                    }
                }
            }
            let dir = w.cg.root().join(path.trim_start_matches('/'));
            if w.killed_at.is_none() {
                if let Some(v) = working_set(&dir) {
                    w.ws.push((now, v));
                    if w.baseline_at.is_none()
                        && predict_linear(&w.ws, 300.0, 60.0).is_some_and(|p| p > w.limit as f64)
                    {
                        w.baseline_at = Some(now);
                    }
                }
            }
        }
        thread::sleep(Duration::from_millis(1000));
    }
    let cpu = cpu_s(obs.pid(), "forecast").expect("the daemon's forecast thread") - cpu0;
    let elapsed = t0.elapsed().as_secs_f64();
    let evs = obs.events();
    let ticks = elapsed; // one tick a second
    let mut table = String::from(
        "| workload | limit | killed after | oom_risk lead | false alarms | baseline lead | baseline false alarms |\n|---|---|---|---|---|---|---|\n",
    );
    for (w, path) in ws.iter_mut().zip(&paths) {
        if let Some(p) = w.proc_.as_mut() {
            let _ = p.kill();
            let _ = p.wait();
        }
        let kill = evs
            .iter()
            .find(|e| e["event"] == "oom_kill" && e["victim"]["cgroup"] == path.as_str());
        let risks = risks_for(&evs, path);
        let lead = kill.and_then(|k| k["warning_lead_s"].as_f64());
        let killed = w.killed_at.is_some();
        let fmt = |v: Option<f64>| v.map_or("none".to_string(), |v| format!("{v:.1} s"));
        let base_lead = match (w.killed_at, w.baseline_at) {
            (Some(k), Some(b)) => Some(k - b),
            _ => None,
        };
        table.push_str(&format!(
            "| {} | {} MiB | {} | {} | {} | {} | {} |\n",
            w.name,
            w.limit / MIB,
            w.killed_at
                .map_or("not killed".into(), |k| format!("{:.1} s", k - 25.0)),
            if killed { fmt(lead) } else { "–".into() },
            if killed { 0 } else { risks.len() },
            if killed { fmt(base_lead) } else { "–".into() },
            if killed {
                0
            } else {
                usize::from(w.baseline_at.is_some())
            },
        ));
        if let Some(r) = risks.first() {
            eprintln!("{}: first oom_risk {r}", w.name);
        }
        if let Some(k) = kill {
            eprintln!(
                "{}: kill warning={} lead={}",
                w.name, k["warning"], k["warning_lead_s"]
            );
        }
    }
    let cost = format!(
        "forecast thread: {cpu:.2} s CPU over {elapsed:.0} s and {} cgroups: {:.1} µs per cgroup per tick ({:.3} % of a core)\n",
        paths.len(),
        cpu / ticks / paths.len() as f64 * 1e6,
        cpu / elapsed * 100.0
    );
    for w in &ws {
        let should_die = !matches!(w.name, "saw" | "steady95" | "cache");
        assert_eq!(
            w.killed_at.is_some(),
            should_die,
            "{}: the workload did not behave",
            w.name
        );
    }
    format!("{table}\n{cost}")
}
