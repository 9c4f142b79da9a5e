//! Where the daemon's start-up spends its time and memory, from its own `start step` lines
//! (logged at debug level by `observer::host::startup`; the bench asks for them with
//! [`STEPS_LOG`]).

/// The log filter that adds the step lines and nothing else to the default `info`.
pub const STEPS_LOG: &str = "info,observer::host::startup=debug";

/// One step as the daemon logged it.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// What was done.
    pub name: String,
    /// ms from the daemon's first instruction in `main` to the end of the step.
    pub at_ms: f64,
    /// ms the step took.
    pub took_ms: f64,
    /// Resident size right after it, KiB.
    pub rss_kib: u64,
    /// Peak resident size so far, KiB.
    pub hwm_kib: u64,
}

/// The steps in the order they were logged.
pub fn parse_steps(log: &str) -> Vec<Step> {
    log.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Step> {
    let rest = &line[line.find(" start step ")? + " start step ".len()..];
    let rest = rest.strip_prefix("step=\"")?;
    let end = rest.find('"')?;
    let name = rest[..end].to_string();
    let field = |key: &str| {
        rest[end..]
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
    };
    Some(Step {
        name,
        at_ms: field("at_ms")?.parse().ok()?,
        took_ms: field("took_ms")?.parse().ok()?,
        rss_kib: field("rss_kib")?.parse().ok()?,
        hwm_kib: field("hwm_kib")?.parse().ok()?,
    })
}

/// exec → the `ready` line written, on the daemon's own clock: its time before `main` (from
/// its start time, which the kernel keeps to the clock tick and rounds down, so this is an
/// upper bound) plus its clock at the last step, which `ready` follows at once. `None`
/// without steps or without the time before `main`.
pub fn ready_written_ms(steps: &[Step]) -> Option<f64> {
    let before_main = steps.iter().find(|s| s.name.starts_with("exec → main"))?;
    Some(before_main.took_ms + steps.last()?.at_ms)
}

/// The table of steps, with the time before `main` (exec → ready as the bench measured it,
/// less the daemon's own clock at its last step) and the peak at `ready`.
pub fn steps_table(steps: &[Step], exec_to_ready_ms: f64, hwm_ready_kib: u64) -> String {
    let mib = |k: u64| k as f64 / 1024.0;
    let mut out = String::from(
        "| step | ends at ms | took ms | VmRSS after, MiB | VmHWM after, MiB |\n|---|---|---|---|---|\n",
    );
    // Memory unknown (the exec → main line): a dash, not 0.
    let kib = |k: u64| {
        if k == 0 {
            "–".to_string()
        } else {
            format!("{:.1}", mib(k))
        }
    };
    for s in steps {
        out += &format!(
            "| {} | {:.1} | {:.1} | {} | {} |\n",
            s.name,
            s.at_ms,
            s.took_ms,
            kib(s.rss_kib),
            kib(s.hwm_kib)
        );
    }
    if let Some(last) = steps.last() {
        let before_main: f64 = steps
            .iter()
            .filter(|s| s.name.starts_with("exec → main"))
            .map(|s| s.took_ms)
            .sum();
        let what = if before_main > 0.0 {
            "the bench's spawn, and the `ready` line's way back to it"
        } else {
            "exec, before `main`, and the `ready` line's way to the bench"
        };
        out += &format!(
            "| {what} | – | {:.1} | – | – |\n",
            (exec_to_ready_ms - last.at_ms - before_main).max(0.0)
        );
    }
    out += &format!(
        "| **exec → `ready`** | **{exec_to_ready_ms:.1}** | | | **{:.1}** (VmHWM at `ready`) |\n",
        mib(hwm_ready_kib)
    );
    out
}

/// The step that raised the peak the most, and by how much (KiB): where to cut next.
pub fn peak_step(steps: &[Step]) -> Option<(&Step, u64)> {
    let mut before = 0;
    let mut best: Option<(&Step, u64)> = None;
    for s in steps {
        let rise = s.hwm_kib.saturating_sub(before);
        if best.is_none_or(|(_, r)| rise > r) {
            best = Some((s, rise));
        }
        before = before.max(s.hwm_kib);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
2026-12-06T10:32:20.522000Z  INFO running at real-time priority (SCHED_FIFO 1)
2026-12-06T10:32:20.542400Z DEBUG start step step=\"exec → main (to the clock tick)\" at_ms=0.0 took_ms=3.0 rss_kib=0 hwm_kib=0
2026-12-06T10:32:20.542452Z DEBUG start step step=\"aya's loader made\" at_ms=22.36 took_ms=22.36 rss_kib=4932 hwm_kib=23292
2026-12-06T10:32:20.544441Z DEBUG start step step=\"kernel BTF mapped\" at_ms=24.07 took_ms=1.71 rss_kib=6500 hwm_kib=23292
2026-12-06T10:32:20.560156Z DEBUG start step step=\"query socket\" at_ms=73.51 took_ms=0.04 rss_kib=7964 hwm_kib=23292
2026-12-06T10:32:20.560200Z  INFO ready strategy=tp_btf
";

    #[test]
    fn reads_each_step_line_and_nothing_else() {
        let steps = parse_steps(LOG);
        assert_eq!(steps.len(), 4);
        assert_eq!(steps[0].name, "exec → main (to the clock tick)");
        assert_eq!(
            steps[1],
            Step {
                name: "aya's loader made".into(),
                at_ms: 22.36,
                took_ms: 22.36,
                rss_kib: 4932,
                hwm_kib: 23292,
            }
        );
        assert_eq!(steps[3].name, "query socket");
    }

    #[test]
    fn the_table_has_a_row_per_step_and_the_time_before_main() {
        let t = steps_table(&parse_steps(LOG), 79.1, 23292);
        assert!(
            t.contains("| aya's loader made | 22.4 | 22.4 | 4.8 | 22.7 |"),
            "{t}"
        );
        assert!(
            t.contains("| exec → main (to the clock tick) | 0.0 | 3.0 | – | – |"),
            "{t}"
        );
        // 79.1 ms measured from the spawn, 73.51 ms on the daemon's clock, 3 ms before it.
        assert!(t.contains("way back to it | – | 2.6 | – | – |"), "{t}");
        assert!(
            t.contains("**79.1**") && t.contains("**22.7** (VmHWM at `ready`)"),
            "{t}"
        );
        assert_eq!(t.lines().count(), 2 + 4 + 2);
    }

    #[test]
    fn the_peak_is_blamed_on_the_step_that_raised_it() {
        let steps = parse_steps(LOG);
        let (s, rise) = peak_step(&steps).unwrap();
        assert_eq!((s.name.as_str(), rise), ("aya's loader made", 23292));
    }

    #[test]
    fn no_step_lines_is_an_empty_table() {
        assert!(parse_steps("2026 INFO ready\n").is_empty());
        assert_eq!(steps_table(&[], 80.0, 1024).lines().count(), 3);
    }
}
