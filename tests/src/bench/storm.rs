//! An OOM storm: many simultaneous kills across many cgroups, against one daemon.

use std::{
    collections::HashMap,
    fs,
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use crate::{events_in, spawn_hog, was_sigkilled, Memcg, Observer};

/// What the storm's daemon reported.
pub struct Storm {
    pub kills: usize,
    pub reported_once: usize,
    pub missing: usize,
    pub duplicated: usize,
    pub secs_to_last_kill: f64,
    pub secs_to_drain: f64,
    /// Kill-path records (kills, victims' exits, memcg OOMs) the daemon logged as lost.
    pub kill_path_lost: u64,
    /// mkdir/attach records logged as lost: any cgroup writer on the host can cause those,
    /// and they have a ring of their own so they cannot displace a kill.
    pub cgroup_lost: u64,
}

/// Sums the named counters over the daemon's "records were lost" warnings.
pub fn lost_counts(stderr: &str, keys: &[&str]) -> u64 {
    stderr
        .lines()
        .filter(|l| l.contains("kernel records were lost"))
        .flat_map(|l| l.split_whitespace())
        .filter_map(|w| w.split_once('='))
        .filter(|(k, _)| keys.contains(k))
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum()
}

pub fn storm(obs: &Observer, cgroups: usize, per: usize) -> Storm {
    let parent = Memcg::new("storm");
    let dirs: Vec<(PathBuf, String)> = (0..cgroups)
        .map(|i| parent.child(&format!("s{i}")))
        .collect();
    for (d, _) in &dirs {
        fs::write(d.join("memory.limit_in_bytes"), (8u64 << 20).to_string()).unwrap();
    }
    let start = Instant::now();
    let mut pids = Vec::new();
    for _ in 0..per {
        let mut hogs: Vec<_> = dirs.iter().map(|(d, _)| spawn_hog(d, &[])).collect();
        for h in &mut hogs {
            pids.push(h.id());
            assert!(was_sigkilled(&h.wait().unwrap()));
        }
    }
    let secs_to_last_kill = start.elapsed().as_secs_f64();
    let want = cgroups * per;
    let evs = obs.wait_for("every storm kill", Duration::from_secs(120), |e| {
        events_in(e, "oom_kill", &parent.path).len() >= want
    });
    let secs_to_drain = start.elapsed().as_secs_f64();
    thread::sleep(Duration::from_millis(500));
    let evs2 = obs.events();
    let _ = evs;
    let mine = events_in(&evs2, "oom_kill", &parent.path);
    let mut count: HashMap<u64, usize> = HashMap::new();
    for e in &mine {
        *count
            .entry(e["victim"]["pid"].as_u64().unwrap_or(0))
            .or_default() += 1;
    }
    let reported_once = pids
        .iter()
        .filter(|p| count.get(&(**p as u64)) == Some(&1))
        .count();
    let missing = pids
        .iter()
        .filter(|p| !count.contains_key(&(**p as u64)))
        .count();
    let duplicated = count.values().filter(|c| **c > 1).count();
    Storm {
        kills: want,
        reported_once,
        missing,
        duplicated,
        secs_to_last_kill,
        secs_to_drain,
        kill_path_lost: lost_counts(
            &obs.stderr_text(),
            &["oom_kill", "victim_exit", "memcg_oom"],
        ),
        cgroup_lost: lost_counts(&obs.stderr_text(), &["cgroup_mkdir", "cgroup_attach"]),
    }
}
