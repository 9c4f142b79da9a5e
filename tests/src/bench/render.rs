//! The benchmarks' results pages: tables, the SVG chart and the cgroup v2 guests' section.

use std::{fs, process::Command, thread, time::SystemTime};

use crate::{
    bench::{kills::KillRun, storm::Storm, Sizes},
    stats::{pct, summary},
};

/// The latencies of one batch as a markdown table.
pub fn latency_table(r: &mut KillRun) -> String {
    let mut out = String::from(
        "| path | n | p50 ms | p90 ms | p99 ms | max ms |\n|---|---|---|---|---|---|\n",
    );
    for (name, v) in [
        ("kill → our JSON line", &mut r.json),
        ("kill → our TaskOOM (containerd's stream)", &mut r.ours),
        ("kill → containerd's own TaskOOM", &mut r.theirs),
        ("kill → TaskExit", &mut r.exit),
    ] {
        let n = v.len();
        let [p50, p90, p99, max] = summary(v);
        out += &format!("| {name} | {n} | {p50:.2} | {p90:.2} | {p99:.2} | {max:.2} |\n");
    }
    out
}

/// One row of the ordering table.
pub fn ordering_row(name: &str, r: &KillRun) -> String {
    let pc = |k: usize| 100.0 * k as f64 / r.kills as f64;
    format!(
        "| {name} | {} | {:.1}% | {:.1}% | {} |\n",
        r.kills,
        pc(r.ours_before_exit),
        pc(r.theirs_before_exit),
        r.theirs_missing
    )
}

/// A horizontal bar chart.
pub fn bar_svg(title: &str, rows: &[(String, f64)], unit: &str) -> String {
    let max = rows.iter().map(|r| r.1).fold(0.0f64, f64::max).max(1e-9);
    let h = 30 * rows.len() + 40;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"760\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <text x=\"10\" y=\"18\" font-weight=\"bold\">{title}</text>\n"
    );
    for (i, (label, v)) in rows.iter().enumerate() {
        let y = 30 + i * 30;
        let w = (v / max * 380.0).max(1.0);
        s += &format!(
            "<text x=\"10\" y=\"{}\">{label}</text><rect x=\"330\" y=\"{y}\" width=\"{w:.1}\" height=\"18\" fill=\"#4a7bd0\"/>\
             <text x=\"{:.1}\" y=\"{}\">{v:.2} {unit}</text>\n",
            y + 14,
            335.0 + w,
            y + 14
        );
    }
    s + "</svg>\n"
}

/// The cgroup v2 guests' latencies, from `cargo xtask race --vm` (docs/race-vm.json): the
/// host is cgroup v1, so containerd's own v2 path is only measured there.
fn v2_summaries() -> Vec<serde_json::Value> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/race-vm.json");
    fs::read_to_string(p)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

/// The cgroup v2 guests' latencies as a section of the page.
pub fn v2_section() -> String {
    let rows = v2_summaries();
    if rows.is_empty() {
        return String::new();
    }
    let mut r = String::from(
        "## Latency in the cgroup v2 guests\n\nFrom the last `cargo xtask race --vm` \
         ([docs/race-vm.md](../race-vm.md)): Debian's 6.12 kernels under qemu TCG (emulated, \
         so every number is many times a real node's), containerd 1.6 and runc 1.1 from Debian, \
         4 containers at a time, both guests at once on 2 cores. ms from the kill.\n\n\
         | guest | path | n | p50 | p90 | p99 | max |\n|---|---|---|---|---|---|---|\n",
    );
    for g in &rows {
        for (label, key) in [
            ("kill → our TaskOOM", "ours"),
            ("kill → containerd's own TaskOOM", "theirs"),
            ("kill → TaskExit", "exit"),
        ] {
            let q = |i: usize| g[key][i].as_f64().unwrap_or(f64::NAN);
            r += &format!(
                "| {} | {label} | {} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
                g["guest"].as_str().unwrap_or("?"),
                g["n"][key],
                q(0),
                q(1),
                q(2),
                q(3)
            );
        }
    }
    r + "\n"
}

/// The goal "ahead of containerd's own cgroup v2 path", from the guests' latencies.
pub fn v2_goal() -> (&'static str, bool, String) {
    let rows = v2_summaries();
    let what = "ahead of containerd's own cgroup v2 path";
    if rows.is_empty() {
        return (
            what,
            false,
            "not measured: run `cargo xtask race --vm`".into(),
        );
    }
    let ahead = rows.iter().all(|g| g["ahead"] == true);
    let measured = rows
        .iter()
        .map(|g| {
            format!(
                "{}: p50 {:.1} vs {:.1} ms, p99 {:.1} vs {:.1} ms",
                g["guest"].as_str().unwrap_or("?"),
                g["ours"][0].as_f64().unwrap_or(f64::NAN),
                g["theirs"][0].as_f64().unwrap_or(f64::NAN),
                g["ours"][2].as_f64().unwrap_or(f64::NAN),
                g["theirs"][2].as_f64().unwrap_or(f64::NAN)
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    (
        what,
        ahead,
        format!("guests (ours vs containerd's): {measured}"),
    )
}

/// What `bench` measured, for its page.
pub struct BenchRun {
    /// The full run, or the quick one.
    pub full: bool,
    pub sz: Sizes,
    /// Kills one at a time on an idle node, and 8 at a time on a loaded one.
    pub idle: KillRun,
    pub loaded: KillRun,
    /// Scratch cgroups the load created and removed.
    pub churned: u64,
    pub st: Storm,
    /// BPF statistics after the storm.
    pub stats_after_storm: Vec<(String, u64, f64)>,
    /// The idle daemon's CPU (%) and resident size (KiB).
    pub idle_cpu_pct: f64,
    pub rss: u64,
}

/// The page `docs/bench/README.md`.
pub fn bench_page(run: &mut BenchRun) -> String {
    let (full, churned, idle_cpu_pct, rss) = (run.full, run.churned, run.idle_cpu_pct, run.rss);
    let (sz, st) = (&run.sz, &run.st);
    let stats_after_storm = &run.stats_after_storm;
    let (idle, loaded) = (&mut run.idle, &mut run.loaded);
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_gib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map(|k| k / 1048576.0)
        .unwrap_or(0.0);
    let mut r = format!(
        "# oom-observer benchmarks\n\n{} run, {}. Machine: {cores} cores, {mem_gib:.0} GiB, Linux {} (cgroup v1 memory), commit `{commit}`. \
         Reproduce: `cargo xtask bench`.\n\n",
        if full { "Full" } else { "Quick" },
        humantime::format_rfc3339_seconds(SystemTime::now()),
        kernel.trim()
    );
    r += &format!("## Latency (idle node, host cgroup v1)\n\n{} OOM kills of runc containers under a private containerd 1.6, one at a time. \
        Times from the kernel's kill (the event's `time`) to: the JSON line read from the daemon's stdout; containerd's envelope timestamp of each event.\n\n", idle.kills);
    r += &latency_table(idle);
    r += "\n![latency](latency.svg)\n\n";
    r += &format!("## Ordering on a loaded node\n\nThe same kills while every core runs 2 busy loops at ordinary priority, a thread churns scratch cgroups \
        ({churned} created and removed during the run), and 8 containers are OOM-killed at a time.\n\n\
        | setting | kills | our TaskOOM before TaskExit | containerd's own before TaskExit | containerd sent none |\n|---|---|---|---|---|\n");
    r += &ordering_row("idle", idle);
    r += &ordering_row("loaded", loaded);
    r += "\nLatency under load:\n\n";
    r += &latency_table(loaded);
    r += &format!("\n## Storm\n\n{} OOM kills across {} cgroups ({} rounds of {} simultaneous hogs, 8 MiB limits), one kernel-only daemon.\n\n\
        | kills | reported exactly once | missing | duplicated | kill-path records lost | mkdir/attach records lost | last kill after | all reported after |\n|---|---|---|---|---|---|---|---|\n\
        | {} | {} | {} | {} | {} | {} | {:.2} s | {:.2} s |\n\n",
        st.kills, sz.storm_cgroups, sz.storm_per_cgroup, sz.storm_cgroups, st.kills, st.reported_once, st.missing, st.duplicated,
        st.kill_path_lost, st.cgroup_lost, st.secs_to_last_kill, st.secs_to_drain);
    r += "## Cost when nothing goes wrong\n\nPer-program run time from the kernel's BPF statistics (BPF_ENABLE_STATS) of the storm's daemon:\n\n\
        | program | runs | mean ns per run |\n|---|---|---|\n";
    for (name, n, avg) in stats_after_storm {
        r += &format!("| {name} | {n} | {avg:.0} |\n");
    }
    r += &format!("\nThe cost of each exit, context switch, signal and cgroup mkdir, in paired rounds and per program: \
        [below](#the-cost-of-being-always-on).\n\n\
        Daemon: idle CPU over {} s **{idle_cpu_pct:.3}%**, RSS **{:.1} MiB**.\n\n",
        sz.idle_secs, rss as f64 / 1024.0);
    let ours_p99 = pct(&idle.ours, 99.0);
    let goals = [
        (
            "kill → our TaskOOM p99 ≤ 1 ms (host)",
            ours_p99 <= 1.0,
            format!("{ours_p99:.2} ms"),
        ),
        v2_goal(),
        (
            "100% ours-before-TaskExit on the loaded node",
            loaded.ours_before_exit == loaded.kills,
            format!("{}/{}", loaded.ours_before_exit, loaded.kills),
        ),
        (
            "0 drops in the storm",
            st.kill_path_lost == 0 && st.reported_once == st.kills,
            format!(
                "{}/{} once, kill-path records lost: {}",
                st.reported_once, st.kills, st.kill_path_lost
            ),
        ),
        (
            "idle CPU ≈ 0",
            idle_cpu_pct < 0.1,
            format!("{idle_cpu_pct:.3}%"),
        ),
        (
            "RSS ≤ 20 MiB",
            rss <= 20 * 1024,
            format!("{:.1} MiB", rss as f64 / 1024.0),
        ),
    ];
    r += "## Where kill → TaskOOM time goes on this machine\n\n\
        With `OOM_OBSERVER_LOG=observer::pipeline::processor=trace` the daemon logs, per kill, when it read the record and how long \
        attribution and publication took. On this host (Firecracker guest, `PREEMPT(none)`, serial console) the kill \
        record is usually read ~1.9 ms after the kill, while a victim's exit record is read 40–80 µs after the exit: \
        right after `mark_victim` the kernel prints its own \"Killed process\" report to the console, and the ring \
        buffer's wake-up (an irq_work on the killing CPU) waits for that printk. Attribution takes ~10 µs, publication \
        to containerd 0.3–0.6 ms (release build). A node whose console is quiet does not pay the 1.9 ms. The race \
        harness now measures this per record, on this host and in the cgroup v2 guests, with what a node operator \
        can do about it: [printk.md](printk.md).\n\n";
    r += &v2_section();
    r += "## Metrics\n\nThe daemon's CPU and RSS with `--metrics-listen` on and a real Prometheus scraping every 15 s: [metrics.md](metrics.md) (its own test, `metrics_footprint`).\n\n";
    r += "## Start-up and memory\n\nexec → `ready`, the start-up's peak RSS (issue 23's goals: ≤ 200 ms, ≤ 24 MiB) and the memory on a node of 10,000 containers: [memory.md](memory.md) (its own test, `memory_bound_on_a_big_node`).\n\n";
    r += "## Goals\n\n| goal | met | measured |\n|---|---|---|\n";
    for (g, ok, m) in &goals {
        r += &format!("| {g} | {} | {m} |\n", met(*ok));
    }
    r
}

/// The idle latencies as a bar chart, `docs/bench/latency.svg`.
pub fn latency_svg(idle: &KillRun) -> String {
    let rows: Vec<(String, f64)> = [
        ("our JSON line", &idle.json),
        ("our TaskOOM", &idle.ours),
        ("containerd's TaskOOM", &idle.theirs),
        ("TaskExit", &idle.exit),
    ]
    .iter()
    .flat_map(|(n, v)| {
        [
            (format!("{n} p50"), pct(v, 50.0)),
            (format!("{n} p99"), pct(v, 99.0)),
        ]
    })
    .collect();
    bar_svg("kill → event, idle host (ms)", &rows, "ms")
}

/// A goal's "met" cell: `yes`, or a bold `no` that stands out in the table.
pub fn met(ok: bool) -> &'static str {
    if ok {
        "yes"
    } else {
        "**no**"
    }
}
