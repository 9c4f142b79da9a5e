//! The daemon's cost: its CPU time and resident size, the
//! kernel's BPF statistics of our programs, and its footprint with metrics scraped.

use std::{
    collections::BTreeMap,
    fs, thread,
    time::{Duration, Instant},
};

use crate::{containerd::Containerd, procfs::ProcStatus, prometheus::Prometheus};

/// Our kernel programs, as the BPF statistics name them.
pub const PROGRAMS: [&str; 8] = [
    "mark_victim_btf",
    "mark_victim_tp",
    "cgroup_mkdir_tp",
    "cgroup_attach_tp",
    "exit_btf",
    "exit_tp",
    "kill_signal_btf",
    "kill_signal_tp",
];

/// The programs process `pid` holds (its program and link descriptors name them).
fn programs_of(pid: u32) -> Vec<u32> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut ids = Vec::new();
    for e in fs::read_dir(&dir).unwrap().flatten() {
        let Ok(info) = fs::read_to_string(e.path()) else {
            continue;
        };
        ids.extend(info.lines().filter_map(|l| {
            l.strip_prefix("prog_id:")
                .and_then(|v| v.trim().parse::<u32>().ok())
        }));
    }
    ids
}

/// Run count and total run time (ns) of the programs named in `names` that process `pid`
/// loaded, summed over programs of the same name. Only its own: other daemons on the machine
/// (other tests) run on the same events.
pub fn bpf_totals(pid: u32, names: &[&str]) -> BTreeMap<String, (u64, u128)> {
    let mine = programs_of(pid);
    let mut out: BTreeMap<String, (u64, u128)> = BTreeMap::new();
    for p in aya::programs::loaded_programs().flatten() {
        let Some(name) = p.name_as_str() else {
            continue;
        };
        if names.contains(&name) && mine.contains(&p.id()) {
            let e = out.entry(name.to_string()).or_default();
            e.0 += p.run_count();
            e.1 += p.run_time().as_nanos();
        }
    }
    out
}

/// User plus system time of `pid`, in clock ticks.
pub fn proc_cpu_ticks(pid: u32) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// The share of one core `pid` used over the next `secs` seconds, in % (its user plus
/// system ticks, at the 100 Hz of `/proc/<pid>/stat`): the daemon's idle CPU.
pub fn idle_cpu_pct(pid: u32, secs: u64) -> f64 {
    let t0 = proc_cpu_ticks(pid);
    std::thread::sleep(std::time::Duration::from_secs(secs));
    (proc_cpu_ticks(pid) - t0) as f64 / 100.0 / secs as f64 * 100.0
}

/// CPU time so far, in seconds, of `pid`'s thread named `comm`: the scheduler's nanosecond
/// count (`schedstat`), not the 100 Hz ticks of `stat`, so a thread that wakes once a second
/// for a few milliseconds still measures. (A whole process is [`proc_cpu_ticks`]: summing
/// its live threads would miss those that have exited.)
pub fn cpu_s(pid: u32, comm: &str) -> Option<f64> {
    for t in fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let dir = t.ok()?.path();
        if fs::read_to_string(dir.join("comm")).ok()?.trim() == comm {
            let s = fs::read_to_string(dir.join("schedstat")).ok()?;
            return Some(s.split_whitespace().next()?.parse::<f64>().ok()? / 1e9);
        }
    }
    None
}

/// CPU time so far, ns, of each live thread of `pid`, by thread id (`schedstat`, as in
/// [`cpu_s`]): a thread that wakes for a few microseconds at a time still measures.
pub fn thread_cpu_ns(pid: u32) -> BTreeMap<u32, u64> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return BTreeMap::new();
    };
    dir.flatten()
        .filter_map(|t| {
            let tid = t.file_name().to_str()?.parse::<u32>().ok()?;
            let s = fs::read_to_string(t.path().join("schedstat")).ok()?;
            Some((tid, s.split_whitespace().next()?.parse::<u64>().ok()?))
        })
        .collect()
}

/// The CPU time `pid`'s threads ran between two [`thread_cpu_ns`] reads, ns (a thread that
/// ended between them is not counted; one that started counts from 0).
pub fn cpu_ns_between(before: &BTreeMap<u32, u64>, after: &BTreeMap<u32, u64>) -> u64 {
    after
        .iter()
        .map(|(tid, ns)| ns.saturating_sub(before.get(tid).copied().unwrap_or(0)))
        .sum()
}

/// The resident size of `pid` in KiB (`VmRSS`); the process must be alive.
pub fn rss_kib(pid: u32) -> u64 {
    ProcStatus::read(pid).unwrap().number("VmRSS").unwrap_or(0)
}

/// The run counts and mean ns of the programs named in `names` that process `pid` loaded
/// (see [`bpf_totals`]).
pub fn bpf_stats(pid: u32, names: &[&str]) -> Vec<(String, u64, f64)> {
    bpf_totals(pid, names)
        .into_iter()
        .filter(|(_, (c, _))| *c > 0)
        .map(|(name, (c, t))| (name, c, t as f64 / c as f64))
        .collect()
}

/// One daemon's footprint over a window of container OOM kills.
pub struct Footprint {
    pub cpu_pct: f64,
    pub rss_kib: u64,
    pub scrapes: f64,
    pub counted: f64,
}

/// Runs a daemon against a private containerd for `secs`, with `kills` container OOM kills
/// spread evenly over the window (each a new container name: one more kill series); with
/// `scrape = Some(interval)` it serves metrics and a real Prometheus scrapes it at that
/// interval.
pub fn footprint(scrape: Option<&str>, secs: u64, kills: usize, tag: &str) -> Footprint {
    let cd = Containerd::start();
    let obs = match scrape {
        Some(_) => cd.observer_with(
            Duration::from_secs(30),
            &["--metrics-listen", "127.0.0.1:0"],
        ),
        None => cd.observer(Duration::from_secs(30)),
    };
    let prom = scrape.map(|interval| {
        let log = obs.stderr_text();
        let addr = log
            .lines()
            .find(|l| l.contains("serving Prometheus metrics"))
            .and_then(|l| l.split("addr=").nth(1))
            .and_then(|a| a.split_whitespace().next())
            .unwrap_or_else(|| panic!("no metrics address logged:\n{log}"))
            .to_string();
        Prometheus::start(&addr, interval)
    });
    cd.go();
    let hz = 100.0;
    let start = Instant::now();
    let t0 = proc_cpu_ticks(obs.pid());
    for i in 0..kills {
        let at = Duration::from_secs_f64(secs as f64 * i as f64 / kills as f64);
        if let Some(wait) = at.checked_sub(start.elapsed()) {
            thread::sleep(wait);
        }
        let name = format!("io.kubernetes.container.name=c{i}");
        let mut c = cd.run_hog(
            &format!("{tag}-{i}"),
            24,
            &[
                "--label",
                "io.kubernetes.pod.namespace=bench",
                "--label",
                "io.kubernetes.pod.name=p",
                "--label",
                &name,
            ],
        );
        assert_eq!(c.wait().unwrap().code(), Some(137), "must be OOM-killed");
    }
    if let Some(rest) = Duration::from_secs(secs).checked_sub(start.elapsed()) {
        thread::sleep(rest);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_pct = (proc_cpu_ticks(obs.pid()) - t0) as f64 / hz / elapsed * 100.0;
    let rss_kib = rss_kib(obs.pid());
    let value = |p: &Prometheus, q: &str| {
        p.query(q)
            .first()
            .and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let (scrapes, counted) = match &prom {
        Some(p) => {
            // The last kill's scrape may still be due.
            let deadline = Instant::now() + Duration::from_secs(30);
            let q = "sum(oom_observer_oom_kills_total{namespace=\"bench\"})";
            while value(p, q) < kills as f64 && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(500));
            }
            (
                value(p, "count_over_time(up{job=\"oom-observer\"}[1h])"),
                value(p, q),
            )
        }
        None => (0.0, 0.0),
    };
    Footprint {
        cpu_pct,
        rss_kib,
        scrapes,
        counted,
    }
}
