//! `cargo xtask forecast-vm`: issue 24's forecast in the cgroup v2 guests (Debian's 6.12
//! kernels), where the model reads v2's `memory.stat`, `memory.events` and
//! `memory.pressure`. The guest's `/init` runs in forecast mode (`oomx.forecast=1`): each
//! workload in a pod through containerd's CRI, one `forecast` verdict per workload and one
//! for the Pod Events. This module prints them as a table, writes it under `target/vm/`, and
//! fails on any problem.

use std::{fmt::Write as _, fs, time::Instant};

use anyhow::{bail, Result};

use super::deaths::boot_pod_guests;
use crate::command::root;

/// Guest RAM: a node's memory is far from full when a few pods start. In 1 GiB, the five
/// hogs' start made the node's own domain fill at 12.7 MiB/s for a while, 42 s from full,
/// and the leaks' first warnings named the node rather than the limits that fired.
const GUEST_MIB: u32 = 4096;

/// The workloads each guest must report, and the Pod Events' verdict.
const VERDICTS: [&str; 6] = ["leak-2", "parent", "step", "saw", "steady95", "events"];

/// Boots the cgroup v2 guests (or `only` one) in forecast mode and fails unless every
/// verdict passed; the table goes to stderr and `target/vm/forecast-vm.md`.
pub fn forecast_vm(only: Option<&str>) -> Result<()> {
    let t0 = Instant::now();
    // Boot, containerd, five pods, 25 s of warm-up and 75 s of workloads under TCG.
    let (guests, mut failed) = boot_pod_guests(
        only,
        Some(GUEST_MIB),
        "oomx.forecast=1",
        "forecast",
        &VERDICTS,
    )?;
    let mut page = String::from(
        "| guest | workload | limit | killed after | oom_risk | limit named | lead | \
         baseline lead | baseline fired | status |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for g in &guests {
        let (name, kernel) = (&g.name, &g.kernel);
        for v in &g.verdicts {
            let w = v["scenario"].as_str().unwrap_or("?");
            if v["status"] != "pass" {
                failed.push(format!("{name} {w}: {}", v["detail"]));
            }
            if w == "events" {
                eprintln!("forecast-vm {name} Pod Events: {}", v["events"]);
                continue;
            }
            let secs = |k: &str| match v[k].as_f64() {
                Some(s) => format!("{s:.1} s"),
                None => "–".into(),
            };
            let _ = writeln!(
                page,
                "| {name} ({kernel}) | {w} | {} MiB | {} | {} | {} | {} | {} | {} | {} |",
                v["limit_mb"],
                secs("killed_after_s"),
                v["warnings"],
                v["limit_kind"].as_str().unwrap_or("–"),
                secs("lead_s"),
                secs("baseline_lead_s"),
                v["baseline_fired"],
                v["status"].as_str().unwrap_or("?"),
            );
            if !v["first_risk"].is_null() {
                eprintln!("forecast-vm {name} {w}: {}", v["first_risk"]);
            }
        }
    }
    eprint!("{page}");
    let out = root().join("target/vm/forecast-vm.md");
    fs::write(&out, &page)?;
    eprintln!(
        "forecast-vm: {} guest(s) in {:.0} s (table in {}, consoles beside it)",
        guests.len(),
        t0.elapsed().as_secs_f64(),
        out.display(),
    );
    if !failed.is_empty() {
        bail!(
            "the forecast in the v2 guests failed:\n{}",
            failed.join("\n")
        );
    }
    Ok(())
}
