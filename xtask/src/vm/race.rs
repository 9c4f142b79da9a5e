//! `cargo xtask race --vm`: the containerd race (`tests::race`) inside the cgroup v2 guests
//! (Debian's 6.12 kernels, x86_64 and arm64) with Debian's containerd and runc packed into
//! the initramfs. The guest's `/init` runs in race mode (`oomx.race=N` on the command line)
//! and prints one `race` verdict; this module checks it and writes the tables.

use std::{
    fs,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::{
    build_guest_binaries, debian, qemu,
    qemu::{Arch, ConsoleLevel},
    userland, write_initramfs, GuestDef, MATRIX,
};
use crate::{
    build::build_ebpf,
    command::{cache_dir, output, root},
};

/// containerd, its shims and four containers at once need more than the matrix's 256 MiB.
const GUEST_MIB: u32 = 1024;
/// Boot, BPF load and containerd start under TCG, with margin.
pub(super) const BASE_LIMIT: Duration = Duration::from_secs(300);
/// Per kill: measured about 5.5 s per kill in both guests (4 at a time, both guests at
/// once on 2 cores), so a hung guest still ends; this is not a target.
const PER_KILL: Duration = Duration::from_secs(12);
/// Per pod of the kubelet rows (see [`kubelet_vm`]).
const PER_POD: Duration = Duration::from_secs(36);

/// Which race run: the guests' console level, and one guest only (a partial run).
#[derive(Debug, Clone, Default)]
pub struct RaceRun {
    /// Which kernel messages reach the guests' consoles.
    pub console: ConsoleLevel,
    /// Only this guest (`linux-6.12-x86_64`, …); every cgroup v2 guest when `None`.
    pub only: Option<String>,
    /// More kernel command line for the guests (e.g. `preempt=full`).
    pub append: Option<String>,
    /// The containerd release in the guests; Debian 12's (the default) when `None`.
    pub containerd: Option<&'static crate::containerd::Release>,
    /// Guest RAM in MiB; [`GUEST_MIB`] when `None`.
    pub memory_mib: Option<u32>,
}

impl RaceRun {
    /// Whether this is the full default run, the only one that may write `docs/`.
    pub fn is_full(&self) -> bool {
        self.console == ConsoleLevel::Emergencies
            && self.only.is_none()
            && self.append.is_none()
            && self.containerd.is_none()
    }

    /// The guests' command line for the containerd release (`oomx.containerd=2.1.9`; the
    /// guest runs the tests with OOMX_CONTAINERD set to it), empty for the default.
    fn containerd_append(&self) -> String {
        self.containerd
            .map(|r| format!(" oomx.containerd={}", r.name))
            .unwrap_or_default()
    }

    /// Where a run that is not the full one writes its page: under `target/`.
    pub fn partial_report(&self) -> PathBuf {
        let mut name = format!("race-vm-{}{}", self.console.name(), self.append_suffix());
        if let Some(r) = self.containerd {
            name.push_str(&format!("-containerd-{}", r.name));
        }
        if let Some(g) = &self.only {
            name.push('-');
            name.push_str(g);
        }
        root().join("target/vm").join(format!("{name}.md"))
    }

    pub(super) fn guests(&self) -> impl Iterator<Item = &'static GuestDef> + '_ {
        MATRIX
            .iter()
            .filter(|g| g.series == "6.12")
            .filter(|g| self.only.as_deref().is_none_or(|o| o == g.name))
    }

    /// The console log of a guest's race boot.
    fn log(&self, work: &Path, guest: &str) -> PathBuf {
        work.join(format!("{guest}.race{}.console.log", self.suffix()))
    }

    fn suffix(&self) -> String {
        let console = match self.console {
            ConsoleLevel::Emergencies => String::new(),
            c => format!("-{}", c.name()),
        };
        let containerd = self
            .containerd
            .map(|r| format!("-containerd-{}", r.name))
            .unwrap_or_default();
        format!("{console}{}{containerd}", self.append_suffix())
    }

    /// The extra command line as a file-name part (`-preempt=full`).
    fn append_suffix(&self) -> String {
        match &self.append {
            Some(a) => format!(
                "-{}",
                a.split_whitespace()
                    .collect::<Vec<_>>()
                    .join("-")
                    .replace(['/', ' '], "_")
            ),
            None => String::new(),
        }
    }
}

/// Runs N kills in each cgroup v2 guest; writes the tables to `report`. With `rerender`, no
/// guest boots: the tables are written again from the consoles the last run left in
/// `target/vm/` (after a change to the page's layout).
pub fn race_vm(kills: usize, report: &Path, rerender: bool, run: &RaceRun) -> Result<()> {
    let t0 = Instant::now();
    let work = root().join("target/vm");
    fs::create_dir_all(&work)?;
    if run.guests().next().is_none() {
        bail!("no cgroup v2 guest is called {:?}", run.only);
    }
    let results = if rerender {
        from_consoles(&work, run)?
    } else {
        boot_all(kills, &work, run)?
    };
    let kills = results
        .iter()
        .find_map(|(_, r)| r.as_ref().ok()?["kills"].as_u64())
        .unwrap_or(kills as u64);
    let wall = if rerender {
        // The guests' own time from the consoles (they ran at once).
        results
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok()?["guest_seconds"].as_f64())
            .fold(0.0, f64::max)
    } else {
        t0.elapsed().as_secs_f64()
    };
    let date = if rerender {
        let first = run.guests().next().map(|g| g.name).unwrap_or_default();
        let log = run.log(&work, first);
        let modified = fs::metadata(&log)?.modified()?;
        let secs = modified.duration_since(std::time::UNIX_EPOCH)?.as_secs();
        output(std::process::Command::new("date").args([
            "-u",
            "-d",
            &format!("@{secs}"),
            "+%Y-%m-%d %H:%M UTC",
        ]))?
    } else {
        output(std::process::Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?
    };
    write_race_page(kills, report, &results, &date, wall, run)
}

/// The verdicts from the consoles of the last run.
fn from_consoles(work: &Path, run: &RaceRun) -> Result<Vec<(String, Result<Value>)>> {
    let mut out = Vec::new();
    for g in run.guests() {
        let log = run.log(work, g.name);
        let text = fs::read(&log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .with_context(|| format!("reading {}", log.display()))?;
        let (kernel, lines) = parse_console(&text);
        out.push((g.name.to_string(), race_verdict(kernel, lines)));
    }
    Ok(out)
}

/// The guest's `race` verdict, with its kernel and its own run time.
fn race_verdict(kernel: String, lines: Vec<Value>) -> Result<Value> {
    let seconds = lines
        .iter()
        .find(|v| v["type"] == "done")
        .and_then(|v| v["seconds"].as_f64());
    let mut v = lines
        .into_iter()
        .find(|v| v["type"] == "race")
        .context("no race verdict")?;
    v["kernel"] = Value::from(kernel);
    v["guest_seconds"] = seconds.into();
    Ok(v)
}

fn boot_all(kills: usize, work: &Path, run: &RaceRun) -> Result<Vec<(String, Result<Value>)>> {
    let cache = cache_dir().join("vm");
    fs::create_dir_all(&cache)?;
    let boots = prepare(&cache, work, run)?;
    let limit = BASE_LIMIT + PER_KILL * kills as u32;
    let mut append = format!("oomx.race={kills}");
    if let Some(extra) = &run.append {
        append.push(' ');
        append.push_str(extra);
    }
    let results = boot_each(&boots, work, &append, limit, run, |(kernel, lines)| {
        race_verdict(kernel, lines)
    });
    Ok(results)
}

fn write_race_page(
    kills: u64,
    report: &Path,
    results: &[(String, Result<Value>)],
    date: &str,
    wall: f64,
    run: &RaceRun,
) -> Result<()> {
    let mut flags = format!("--kills {kills}");
    if run.console != ConsoleLevel::Emergencies {
        flags.push_str(&format!(" --console {}", run.console.name()));
    }
    if let Some(g) = &run.only {
        flags.push_str(&format!(" --only {g}"));
    }
    if let Some(a) = &run.append {
        flags.push_str(&format!(" --append '{a}'"));
    }
    if let Some(r) = run.containerd {
        flags.push_str(&format!(" --containerd {}", r.name));
    }
    let console = match run.console {
        ConsoleLevel::Emergencies => {
            "Guest console: `loglevel=1` (only emergencies are printed)".to_string()
        }
        ConsoleLevel::Quiet => "Guest console: `quiet` (of an OOM kill, only the kernel's \
             \"Killed process\" line is printed, after `mark_victim`)"
            .to_string(),
        ConsoleLevel::Talkative => "Guest console: the kernel's default log level (no \
             `quiet`, no `loglevel=`), as a cloud node with `console=ttyS0` runs: the OOM \
             killer's whole report is printed to the serial console before its SIGKILL"
            .to_string(),
    };
    let mut page = format!(
        "# The containerd race in cgroup v2 guests\n\n\
         Written by `cargo xtask race --vm {flags}` — do not edit. Run: {} — wall time \
         {:.0} s (2 cores, qemu TCG, {} at once). {console}.{}\n\n\
         Each guest boots Debian's 6.12 cloud kernel with an initramfs holding Debian's \
         containerd, runc and busybox-static (with the shared libraries they need) and \
         oom-observer; `/init` mounts cgroup v2 with the memory controller, starts a private \
         containerd, and runs `tests::race` (the same code as the host's `tests/tests/race.rs`): \
         N `ctr run --rm --no-pivot --memory-limit 24MiB` busybox hogs, 4 at a time, each \
         OOM-killed. \
         Latencies are from the kernel's kill (oom-observer's `time`) to containerd's envelope \
         timestamp of each event, in ms. The waiter polls a pidfd of every container's task \
         and asks the query socket the moment it exits.\n",
        date.trim(),
        wall,
        if run.only.is_some() {
            "one guest"
        } else {
            "both guests"
        },
        match &run.append {
            Some(a) => format!(" Also on the guests' command line: `{a}`."),
            None => String::new(),
        },
    );
    let mut failed = Vec::new();
    let mut summaries = Vec::new();
    for (name, r) in results {
        match r {
            Ok(v) => {
                if v["problems"].is_null() {
                    failed.push(format!("{name}: verdict without problems: {v}"));
                }
                page.push_str(&format!(
                    "\n## {name}: {}, containerd {}, {}\n\n{}\n{}\n\n{}\n",
                    v["kernel"].as_str().unwrap_or("?"),
                    v["containerd"].as_str().unwrap_or("?"),
                    v["runc"].as_str().unwrap_or("?"),
                    v["head"].as_str().unwrap_or_default(),
                    v["rows"].as_str().unwrap_or_default(),
                    v["exit_and_waiter"].as_str().unwrap_or_default(),
                ));
                let (table, summary) = latency(name, v);
                page.push_str(&table);
                summaries.push(summary);
                let problems = v["problems"].as_array().cloned().unwrap_or_default();
                if !problems.is_empty() {
                    failed.push(format!("{name}: {problems:?}"));
                }
            }
            Err(e) => failed.push(format!("{name}: {e:#}")),
        }
    }
    if let Some(d) = report.parent() {
        fs::create_dir_all(d)?;
    }
    fs::write(report, &page)?;
    // For the benchmark page (`cargo xtask bench` reads docs/race-vm.json).
    fs::write(
        report.with_extension("json"),
        serde_json::to_string_pretty(&Value::from(summaries))?,
    )?;
    eprintln!("\n{page}\nwritten to {}", report.display());
    if !failed.is_empty() {
        bail!("race in the v2 guests failed:\n{}", failed.join("\n"));
    }
    Ok(())
}

/// Nearest-rank percentiles of a sorted sample: p50, p90, p99, max.
fn summary(sorted: &[f64]) -> [f64; 4] {
    let p = |q: f64| {
        if sorted.is_empty() {
            return f64::NAN;
        }
        let i = ((q / 100.0) * (sorted.len() - 1) as f64).round() as usize;
        sorted[i.min(sorted.len() - 1)]
    };
    [p(50.0), p(90.0), p(99.0), p(100.0)]
}

/// Issue 6's latency rows for one guest (kill → our TaskOOM, containerd's own TaskOOM,
/// TaskExit), as markdown and as JSON for the benchmark page.
fn latency(name: &str, v: &Value) -> (String, Value) {
    let sample = |k: &str| -> Vec<f64> {
        let mut s: Vec<f64> = v[k]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        s.sort_by(|a, b| a.total_cmp(b));
        s
    };
    let (ours, theirs, exit) = (sample("ours_ms"), sample("theirs_ms"), sample("exit_ms"));
    let decided = sample("decided_ms");
    let decided_to_ours = sample("decided_to_ours_ms");
    let (o, t, x) = (summary(&ours), summary(&theirs), summary(&exit));
    let d = summary(&decided);
    let mut md = String::from(
        "\nLatency, ms from the kill:\n\n| path | n | p50 | p90 | p99 | max |\n|---|---|---|---|---|---|\n",
    );
    let mut rows = vec![
        ("kill → our TaskOOM", ours.len(), o),
        ("kill → containerd's own TaskOOM", theirs.len(), t),
        ("kill → TaskExit", exit.len(), x),
    ];
    if !decided.is_empty() {
        rows.push(("OOM killer's decision → kill", decided.len(), d));
    }
    if !decided_to_ours.is_empty() {
        rows.push((
            "OOM killer's decision → our TaskOOM",
            decided_to_ours.len(),
            summary(&decided_to_ours),
        ));
    }
    // How long each kind of record waited in the ring buffer before the daemon read it:
    // the kill record's wake-up waits behind the kernel's printk of "Killed process".
    for (label, key) in [
        (
            "kill record (mark_victim) → read by the daemon",
            "kill_read_ms",
        ),
        ("victim exit record → read by the daemon", "exit_read_ms"),
        ("decision record → read by the daemon", "decision_read_ms"),
    ] {
        let s = sample(key);
        if !s.is_empty() {
            rows.push((label, s.len(), summary(&s)));
        }
    }
    for (label, n, s) in rows {
        md.push_str(&format!(
            "| {label} | {n} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            s[0], s[1], s[2], s[3]
        ));
    }
    let ahead = o[0] < t[0] && o[2] < t[2];
    md.push_str(&format!(
        "\nAhead of containerd's own cgroup v2 path (p50 and p99 both lower): **{}**.\n",
        if ahead { "yes" } else { "no" }
    ));
    let kills_n = v["kills"].as_u64().unwrap_or(0);
    let before = v["ours_before_kill"].as_u64();
    if let Some(b) = before {
        md.push_str(&format!(
            "\nOur TaskOOM reached containerd before the kill itself (`mark_victim`, the \
             event's `time`): **{b} of {kills_n}** ({:.1}%). A negative kill → our TaskOOM is \
             such a kill: the TaskOOM was handed over at the OOM killer's decision \
             (`decided_at`).\n",
            100.0 * b as f64 / kills_n.max(1) as f64
        ));
    }
    // The server's version as `ctr version` gives it (`1.6.20~ds1`, `2.1.9+unknown`): the
    // release's name, as crate::containerd pins it.
    let containerd = v["containerd"].as_str().map(|s| {
        s.trim_start_matches('v')
            .split(['~', '+', '-'])
            .next()
            .unwrap_or(s)
    });
    let json = serde_json::json!({
        "guest": name,
        "kernel": v["kernel"],
        "containerd": containerd,
        // The guests' containerd runs runc without its systemd driver.
        "cgroup_driver": "cgroupfs",
        "kills": v["kills"],
        "ours": o, "theirs": t, "exit": x,
        "decided": (!decided.is_empty()).then_some(d),
        "decided_to_ours": (!decided_to_ours.is_empty()).then(|| summary(&decided_to_ours)),
        "ours_before_kill": before,
        // Sample sizes: containerd may send no TaskOOM of its own for a kill.
        "n": {"ours": ours.len(), "theirs": theirs.len(), "exit": exit.len()},
        // The first row is ours: "| oom-observer | N | 100.0% (N) | ...".
        "ours_before_exit_all": v["rows"].as_str().and_then(|r| r.lines().next()).map(|l| l.contains("| 100.0% (")),
        "ahead": ahead,
    });
    (md, json)
}

/// The cgroup v2 guests, each with its kernel and an initramfs holding the containerd stack.
fn prepare(
    cache: &Path,
    work: &Path,
    run: &RaceRun,
) -> Result<Vec<(&'static GuestDef, debian::Kernel, PathBuf)>> {
    let guests: Vec<&GuestDef> = run.guests().collect();
    debian::ensure_qemu(
        cache,
        &guests.iter().map(|g| g.arch.qemu()).collect::<Vec<_>>(),
    )?;
    debian::prepare_apt(cache, Arch::Aarch64.deb())?;
    let obj = build_ebpf()?;
    let mut boots = Vec::new();
    for g in guests {
        let k = debian::kernel(
            &debian::Apt::system(),
            cache,
            g.meta,
            g.arch.deb(),
            g.series,
        )?;
        let bins = build_guest_binaries(g.arch, &obj)?;
        let stack = userland::containerd_stack(cache, g.arch.deb(), run.containerd)?;
        let img = work.join(format!(
            "initramfs-containerd-{}{}.cpio",
            g.arch.name(),
            run.containerd
                .map(|r| format!("-{}", r.name))
                .unwrap_or_default()
        ));
        write_initramfs(&bins, &stack, &img)?;
        boots.push((g, k, img));
    }
    Ok(boots)
}

/// A guest's kernel release and its verdict lines.
pub(super) type Verdicts = (String, Vec<Value>);

/// Boots one guest with `append` on its command line; returns its kernel release and its
/// verdict lines (`OOMX {json}`).
/// Boots every prepared guest at once with `append` and judges each one's verdicts.
pub(super) fn boot_each<T: Send>(
    boots: &[(&'static GuestDef, debian::Kernel, PathBuf)],
    work: &Path,
    append: &str,
    limit: Duration,
    run: &RaceRun,
    judge: impl Fn(Verdicts) -> Result<T> + Sync,
) -> Vec<(String, Result<T>)> {
    thread::scope(|s| {
        let handles: Vec<_> = boots
            .iter()
            .map(|(g, k, img)| {
                let judge = &judge;
                s.spawn(move || {
                    let r = boot(g, k, img, work, append, limit, run).and_then(judge);
                    (g.name.to_string(), r)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| ("?".into(), Err(anyhow::anyhow!("runner panicked"))))
            })
            .collect()
    })
}

/// The work and cache directories of a run in the cgroup v2 guests, made; fails when `run`
/// names no such guest.
pub(super) fn v2_dirs(run: &RaceRun) -> Result<(PathBuf, PathBuf)> {
    if run.guests().next().is_none() {
        bail!("no cgroup v2 guest is called {:?}", run.only);
    }
    let work = root().join("target/vm");
    fs::create_dir_all(&work)?;
    let cache = cache_dir().join("vm");
    fs::create_dir_all(&cache)?;
    Ok((work, cache))
}

fn boot(
    g: &GuestDef,
    k: &debian::Kernel,
    initrd: &Path,
    work: &Path,
    append: &str,
    limit: Duration,
    run: &RaceRun,
) -> Result<Verdicts> {
    let mode = append.split(['.', '=']).nth(1).unwrap_or("run");
    let log: PathBuf = work.join(format!("{}.{mode}{}.console.log", g.name, run.suffix()));
    eprintln!(
        "vm {mode}: {} booting {} {} (console: {})",
        g.name,
        k.package,
        k.version,
        run.console.name()
    );
    let append = format!("{append}{}", run.containerd_append());
    let b = qemu::boot(&qemu::BootSpec {
        arch: g.arch,
        vmlinuz: &k.vmlinuz,
        initrd,
        memory_mib: run.memory_mib.unwrap_or(GUEST_MIB),
        cpus: super::GUEST_CPUS,
        extra_append: Some(&append),
        console_level: run.console,
        log: &log,
        limit,
    })?;
    eprintln!(
        "vm {mode}: {} ended after {:.0} s (console: {})",
        g.name,
        b.elapsed.as_secs_f64(),
        log.display()
    );
    let (kernel, lines) = parse_console(&b.console);
    if !lines.iter().any(|v| v["type"] == "done") {
        bail!(
            "the guest did not finish (timed out: {}, {}); console tail:\n{}",
            b.timed_out,
            b.status,
            b.tail(30)
        );
    }
    Ok((kernel, lines))
}

/// The verdict lines (`OOMX {json}`) of a console and the kernel release the guest named.
fn parse_console(console: &str) -> Verdicts {
    let mut kernel = String::new();
    let mut lines = Vec::new();
    for line in console.lines() {
        let Some(v) = line
            .find("OOMX {")
            .and_then(|i| serde_json::from_str::<Value>(&line[i + 5..]).ok())
        else {
            continue;
        };
        if v["type"] == "boot" {
            kernel = v["kernel"].as_str().unwrap_or_default().to_string();
        }
        lines.push(v);
    }
    (kernel, lines)
}

/// `cargo xtask kubelet`'s guest rows: `tests::cri::rows` (pods through containerd's CRI
/// plugin, with and without oom-observer, idle and loaded, `kills` pods per row) in each
/// cgroup v2 guest; returns each guest's `kubelet` verdict (its `rows` and `table`).
/// Without `at_exit` (the README's test command), a row only fails on a container not read
/// as OOMKilled a second after its exit, not at the exit itself, and only the rows with
/// oom-observer run.
pub fn kubelet_vm(
    kills: usize,
    only: Option<&str>,
    at_exit: bool,
    containerd: &'static crate::containerd::Release,
) -> Result<Vec<(String, Result<Value>)>> {
    let run = RaceRun {
        only: only.map(str::to_string),
        containerd: (containerd.name != crate::containerd::default_name()).then_some(containerd),
        ..RaceRun::default()
    };
    let (work, cache) = v2_dirs(&run)?;
    let boots = prepare(&cache, &work, &run)?;
    // Up to four rows of `kills` pods each; a pod took 7.5 s (idle) to 14 s (loaded) with one
    // guest alone, so both at once get more than twice that per pod before a hung guest is
    // stopped (a bound, not a target).
    let limit = BASE_LIMIT + PER_POD * (4 * kills) as u32;
    Ok(boot_each(
        &boots,
        &work,
        &format!(
            "oomx.kubelet={kills}{}",
            if at_exit {
                ""
            } else {
                // The README's test command: the rows with oom-observer, held to their
                // reason a second after the exit.
                " oomx.kubelet_at_exit=0 oomx.kubelet_baseline=0"
            }
        ),
        limit,
        &run,
        |(kernel, lines)| {
            let mut v = lines
                .into_iter()
                .find(|v| v["type"] == "kubelet")
                .context("no kubelet verdict")?;
            v["kernel"] = Value::from(kernel);
            Ok(v)
        },
    ))
}

/// `cargo xtask audit-vm`: the audit scenarios of `tests::audit_v2` (runc) in the cgroup v2
/// guests; writes the results to `report`.
pub fn audit_vm(report: &Path) -> Result<()> {
    let t0 = Instant::now();
    let cache = cache_dir().join("vm");
    fs::create_dir_all(&cache)?;
    let work = root().join("target/vm");
    fs::create_dir_all(&work)?;
    let run = RaceRun::default();
    let boots = prepare(&cache, &work, &run)?;
    let results = boot_each(&boots, &work, "oomx.audit=1", BASE_LIMIT * 2, &run, Ok);
    let date = output(std::process::Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?;
    let mut page = format!(
        "# Unenforced memory limits in cgroup v2 guests (runc)\n\n\
         Written by `cargo xtask audit-vm` — do not edit. Run: {} — wall time {:.0} s (2 cores, \
         qemu TCG, both guests at once). The scenarios are `tests::audit_v2` with Debian's \
         containerd and runc in the initramfs (gVisor's runsc is not in the guests: under TCG \
         its ptrace platform is impractical; the host's cgroup v1 tests cover it).\n\n\
         | guest | kernel | scenario | result | detail |\n|---|---|---|---|---|\n",
        date.trim(),
        t0.elapsed().as_secs_f64()
    );
    let mut failed = Vec::new();
    for (name, r) in &results {
        match r {
            Ok((kernel, lines)) => {
                let verdicts: Vec<&Value> = lines.iter().filter(|v| v["type"] == "audit").collect();
                if verdicts.len() != 3 {
                    failed.push(format!("{name}: {} verdicts, not 3", verdicts.len()));
                }
                for v in verdicts {
                    let status = v["status"].as_str().unwrap_or("?");
                    if status != "pass" {
                        failed.push(format!("{name} {}: {}", v["scenario"], v["detail"]));
                    }
                    page.push_str(&format!(
                        "| {name} | {kernel} | {} | {status} ({:.0} s) | {} |\n",
                        v["scenario"].as_str().unwrap_or("?"),
                        v["seconds"].as_f64().unwrap_or(0.0),
                        v["detail"].as_str().unwrap_or("").replace('|', "/"),
                    ));
                }
            }
            Err(e) => failed.push(format!("{name}: {e:#}")),
        }
    }
    if let Some(d) = report.parent() {
        fs::create_dir_all(d)?;
    }
    fs::write(report, &page)?;
    eprintln!("\n{page}\nwritten to {}", report.display());
    if !failed.is_empty() {
        bail!("audit in the v2 guests failed:\n{}", failed.join("\n"));
    }
    Ok(())
}
