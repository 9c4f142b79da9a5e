//! `oomx-hog`: the test workload. Joins a cgroup, optionally waits for a go signal, then
//! allocates and touches memory 1 MiB at a time until it is killed (or reaches `--max-mb`).
//!
//! With `--hold` it keeps what it reached (`--max-mb`) and sleeps until killed, announcing
//! `holding N MiB` on stdout: a bystander in a `memory.oom.group` cgroup.
//!
//! `--oom-score-adj N` writes its own `/proc/self/oom_score_adj` first.
//!
//! `--rate-mb N` paces the allocation at N MiB a second (a steady leak); with `--max-mb`,
//! `--sawtooth-mb LOW` frees back down to LOW MiB each time it reaches the maximum and
//! climbs again, forever (a garbage collector's sawtooth).
//!
//! Whatever follows `--` is ignored: it is there to be read in `/proc/<pid>/cmdline` (the
//! command-line scrubbing test gives it credentials).
//!
//! Usage: oomx-hog [--join CGROUP_DIR] [--wait-for FILE] [--max-mb N] [--hold] [--oom-score-adj N]
//! [--rate-mb N] [--sawtooth-mb LOW] [-- ARG...]

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test helper process: a panic fails the test that started it"
)]

use std::{env, fs, path::Path, thread, time::Duration};

fn main() {
    let args: Vec<String> = env::args().skip(1).collect();
    let mut join = None;
    let mut wait_for = None;
    let mut max_mb: Option<usize> = None;
    let mut hold = false;
    let mut score_adj = None;
    let mut rate_mb: Option<f64> = None;
    let mut sawtooth_mb: Option<usize> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--join" => join = it.next().cloned(),
            "--wait-for" => wait_for = it.next().cloned(),
            "--max-mb" => max_mb = it.next().and_then(|v| v.parse().ok()),
            "--hold" => hold = true,
            "--oom-score-adj" => score_adj = it.next().cloned(),
            "--rate-mb" => rate_mb = it.next().and_then(|v| v.parse().ok()),
            "--sawtooth-mb" => sawtooth_mb = it.next().and_then(|v| v.parse().ok()),
            "--" => break,
            other => {
                eprintln!("oomx-hog: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    if let Some(adj) = score_adj {
        if let Err(e) = fs::write("/proc/self/oom_score_adj", &adj) {
            eprintln!("oomx-hog: setting oom_score_adj {adj}: {e}");
            std::process::exit(3);
        }
    }
    if let Some(dir) = join {
        // Joining from inside the process: every byte it allocates is charged there.
        let procs = Path::new(&dir).join("cgroup.procs");
        if let Err(e) = fs::write(&procs, std::process::id().to_string()) {
            eprintln!("oomx-hog: joining {}: {e}", procs.display());
            std::process::exit(3);
        }
    }
    if let Some(f) = wait_for {
        while !Path::new(&f).exists() {
            thread::sleep(Duration::from_millis(5));
        }
    }
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let start = std::time::Instant::now();
    let mut paced_mb = 0usize;
    loop {
        if let (Some(low), Some(m)) = (sawtooth_mb, max_mb) {
            if chunks.len() >= m {
                chunks.truncate(low);
            }
        }
        if max_mb.is_some_and(|m| chunks.len() >= m) {
            if hold {
                use std::io::Write;
                println!("holding {} MiB", chunks.len());
                let _ = std::io::stdout().flush();
                loop {
                    thread::sleep(Duration::from_secs(3600));
                }
            }
            println!("reached {} MiB", chunks.len());
            return;
        }
        if let Some(r) = rate_mb {
            // The n-th MiB is due n/r seconds after the start: steady, with no drift.
            paced_mb += 1;
            let due = Duration::from_secs_f64(paced_mb as f64 / r);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                thread::sleep(wait);
            }
        }
        let mut v = vec![0u8; 1 << 20];
        // Touch every page so the memory is really charged.
        for i in (0..v.len()).step_by(4096) {
            v[i] = 1;
        }
        chunks.push(v);
    }
}
