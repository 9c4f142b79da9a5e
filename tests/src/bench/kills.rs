//! Container OOM kills under a private containerd, timed on every path: our JSON line, our
//! TaskOOM, containerd's own, the TaskExit.

use std::{
    collections::HashMap,
    thread,
    time::{Duration, SystemTime},
};

use crate::{
    containerd::{Containerd, Subscriber},
    stats::ms,
};

/// Per-kill timings of one batch of container OOM kills.
#[derive(Default)]
pub struct KillRun {
    pub kills: usize,
    pub json: Vec<f64>,
    pub ours: Vec<f64>,
    pub theirs: Vec<f64>,
    pub exit: Vec<f64>,
    pub ours_before_exit: usize,
    pub theirs_before_exit: usize,
    pub theirs_missing: usize,
}

/// Runs `n` container OOM kills, `parallel` at a time, and measures each path.
pub fn container_kills(n: usize, parallel: usize, tag: &str) -> KillRun {
    let cd = Containerd::start();
    let sub = Subscriber::start(&cd.socket);
    let obs = cd.observer(Duration::from_secs(30));
    cd.go();
    let ids: Vec<String> = (0..n).map(|i| format!("{tag}-{i}")).collect();
    for chunk in ids.chunks(parallel) {
        let mut running: Vec<_> = chunk.iter().map(|id| cd.run_hog(id, 24, &[])).collect();
        for c in &mut running {
            assert_eq!(
                c.wait().unwrap().code(),
                Some(137),
                "every container must be OOM-killed"
            );
        }
    }
    sub.wait_for("every TaskExit", Duration::from_secs(120), |s| {
        ids.iter().all(|id| {
            s.iter()
                .any(|e| e.topic == "/tasks/exit" && e.container_id.as_deref() == Some(id))
        })
    });
    thread::sleep(Duration::from_secs(1));
    let seen = sub.seen();
    let mut kill_at: HashMap<String, (SystemTime, SystemTime)> = HashMap::new();
    for (e, arrived) in obs.events_timed() {
        if e["event"] != "oom_kill" {
            continue;
        }
        let (Some(id), Some(t)) = (e["container"]["id"].as_str(), e["time"].as_str()) else {
            continue;
        };
        let t = humantime::parse_rfc3339(t).unwrap();
        kill_at.entry(id.to_string()).or_insert((t, arrived));
    }
    let mut r = KillRun {
        kills: n,
        ..Default::default()
    };
    for id in &ids {
        let (kill, json_at) = *kill_at
            .get(id)
            .unwrap_or_else(|| panic!("no oom_kill named {id}"));
        r.json.push(ms(kill, json_at));
        let mine: Vec<(usize, &crate::containerd::Seen)> = seen
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                e.namespace == cd.namespace && e.container_id.as_deref() == Some(id.as_str())
            })
            .collect();
        let exit = mine.iter().find(|(_, e)| e.topic == "/tasks/exit").copied();
        let ours = mine
            .iter()
            .find(|(_, e)| e.topic == "/tasks/oom" && e.ours)
            .copied();
        let theirs = mine
            .iter()
            .find(|(_, e)| e.topic == "/tasks/oom" && !e.ours)
            .copied();
        let xi = exit.map(|(i, e)| {
            r.exit.push(ms(kill, e.timestamp.unwrap()));
            i
        });
        if let Some((i, e)) = ours {
            r.ours.push(ms(kill, e.timestamp.unwrap()));
            if xi.is_some_and(|x| i < x) {
                r.ours_before_exit += 1;
            }
        }
        match theirs {
            Some((i, e)) => {
                r.theirs.push(ms(kill, e.timestamp.unwrap()));
                if xi.is_some_and(|x| i < x) {
                    r.theirs_before_exit += 1;
                }
            }
            None => r.theirs_missing += 1,
        }
    }
    r
}
