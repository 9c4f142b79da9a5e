//! The cost of being always on, two ways at once: paired rounds with and without the daemon
//! (A/B/B/A blocks, so drift in the machine's speed cancels within each block), and the
//! kernel's own statistics of every program that ran during the rounds with it.
//!
//! The paired ratio is what a user feels, but on a shared VM it moves by ±15–25 % from round
//! to round; its confidence interval says what it can and cannot see. The per-program ns
//! are the primary measure: they are exact, and their share of the operation's own cost is
//! given for this machine and for an assumed bare-metal node.

use std::{collections::BTreeMap, process::Command, thread, time::Duration};

use super::{
    cgroup_tree::CgroupTree,
    cost::{bpf_totals, cpu_ns_between, thread_cpu_ns},
    render::met,
};
use crate::loop_bin;

/// One operation on a kernel path our programs could sit on.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    /// `oomx-loop`'s mode.
    pub mode: &'static str,
    /// What one operation is.
    pub op: &'static str,
    /// Operations per run.
    pub n: u64,
    /// The operation's cost assumed for a bare-metal node, in ns, and where it comes from.
    pub bare_metal_ns: f64,
    pub bare_metal_source: &'static str,
}

/// The workloads of issue 23 (process exits, context switches and signals) and issue 21's
/// fatal signals.
pub fn workloads(scale: u64) -> [Workload; 4] {
    [
        Workload {
            mode: "fork",
            op: "fork + exit + wait",
            n: 2_000 * scale,
            bare_metal_ns: 50_000.0,
            bare_metal_source: "assumed: lmbench's `lat_proc fork` order on a current server \
                (tens of µs); a faster node raises the share, so read it as a scale",
        },
        Workload {
            mode: "pingpong",
            op: "pipe round trip between two processes on one CPU (2 context switches)",
            n: 5_000 * scale,
            bare_metal_ns: 4_000.0,
            bare_metal_source: "assumed: 2 × 2 µs, \"a few microseconds\" per context switch on \
                bare metal as issue 23 states it (lmbench's `lat_ctx` shape)",
        },
        Workload {
            mode: "signal",
            op: "kill(self, SIGUSR1) caught by a handler",
            n: 20_000 * scale,
            bare_metal_ns: 1_000.0,
            bare_metal_source: "assumed: 1 µs, lmbench's `lat_sig catch` order; a signal's \
                generate + deliver + sigreturn",
        },
        Workload {
            mode: "term",
            op: "kill(child, SIGTERM), taken with sigwaitinfo and acknowledged on a pipe (a \
                fatal signal: the signal hook's whole path)",
            n: 5_000 * scale,
            bare_metal_ns: 5_000.0,
            bare_metal_source: "assumed: a signal (1 µs) and a pipe round trip with two \
                context switches (4 µs), as above",
        },
    ]
}

/// Nanoseconds per operation of one run of `w`.
pub fn run_once(w: &Workload) -> f64 {
    let out = Command::new(loop_bin())
        .args([w.mode, &w.n.to_string()])
        .output()
        .expect("oomx-loop");
    assert!(
        out.status.success(),
        "oomx-loop {}: {}",
        w.mode,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse::<f64>()
        .unwrap()
        / w.n as f64
}

/// A program that ran during the rounds with the daemon.
#[derive(Clone, Debug)]
pub struct ProgramCost {
    pub name: String,
    /// Runs per operation.
    pub runs_per_op: f64,
    /// Mean ns per run, from the kernel's statistics.
    pub mean_ns: f64,
}

/// A workload's paired result.
#[derive(Clone, Debug)]
pub struct Paired {
    pub workload: Workload,
    /// Blocks of A/B/B/A.
    pub blocks: usize,
    /// Mean ns per operation without and with the daemon.
    pub without_ns: f64,
    pub with_ns: f64,
    /// Geometric mean of the blocks' with/without ratios, and its 95 % interval.
    pub ratio: f64,
    pub lo: f64,
    pub hi: f64,
    pub programs: Vec<ProgramCost>,
    /// The daemon's own CPU time (its threads' `schedstat`) during the rounds with it, ns
    /// per operation: the part of a slowdown that is its threads, not its programs.
    pub daemon_ns_per_op: f64,
}

impl Paired {
    /// Whether no slowdown shows: the interval holds 1.00, or the ratio is at most 1.02.
    pub fn no_slowdown_shows(&self) -> bool {
        self.lo <= 1.0 || self.ratio <= 1.02
    }

    /// Its row of a paired table, named `name`: blocks, the two means, the ratio, its interval
    /// and whether no slowdown shows.
    pub fn row(&self, name: &str) -> String {
        format!(
            "| {name} | {} | {:.0} ns | {:.0} ns | {:.4} | {:.4} – {:.4} | {} |",
            self.blocks,
            self.without_ns,
            self.with_ns,
            self.ratio,
            self.lo,
            self.hi,
            met(self.no_slowdown_shows()),
        )
    }
}

/// Student's t at 97.5 % for `df` degrees of freedom.
fn t975(df: usize) -> f64 {
    const T: [f64; 10] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    ];
    match df {
        0 => f64::INFINITY,
        d if d <= T.len() => T[d - 1],
        d if d <= 20 => 2.086,
        _ => 1.96,
    }
}

/// The geometric mean of `ratios` and its 95 % interval (t on the log ratios).
pub fn ratio_interval(ratios: &[f64]) -> (f64, f64, f64) {
    let logs: Vec<f64> = ratios.iter().map(|r| r.ln()).collect();
    let n = logs.len() as f64;
    let mean = logs.iter().sum::<f64>() / n;
    let var = logs.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    let half = t975(logs.len().saturating_sub(1)) * (var / n).sqrt();
    (mean.exp(), (mean - half).exp(), (mean + half).exp())
}

/// Runs `blocks` A/B/B/A blocks of `w`: A without the daemon, B with one that `start`
/// returns with its pid (dropped after the block's two B runs). `names` are the programs to
/// account.
pub fn paired<D>(
    w: &Workload,
    blocks: usize,
    names: &[&str],
    start: impl Fn() -> (D, u32),
) -> Paired {
    // Warm the binary and the page cache once.
    run_once(&Workload { n: w.n / 10, ..*w });
    let mut ratios = Vec::new();
    let (mut a_all, mut b_all) = (Vec::new(), Vec::new());
    let mut runs: BTreeMap<String, (u64, u128)> = BTreeMap::new();
    let mut daemon_ns = 0u64;
    for _ in 0..blocks {
        let a1 = run_once(w);
        let (daemon, pid) = start();
        // Let start-up's own work (the cgroup scan, its exits) settle.
        thread::sleep(Duration::from_millis(300));
        let before = bpf_totals(pid, names);
        let cpu_before = thread_cpu_ns(pid);
        let b1 = run_once(w);
        let b2 = run_once(w);
        daemon_ns += cpu_ns_between(&cpu_before, &thread_cpu_ns(pid));
        let after = bpf_totals(pid, names);
        drop(daemon);
        let a2 = run_once(w);
        for (name, (c, t)) in after {
            let (c0, t0) = before.get(&name).copied().unwrap_or_default();
            let e = runs.entry(name).or_default();
            e.0 += c.saturating_sub(c0);
            e.1 += t.saturating_sub(t0);
        }
        ratios.push((b1 + b2) / (a1 + a2));
        a_all.extend([a1, a2]);
        b_all.extend([b1, b2]);
    }
    let (ratio, lo, hi) = ratio_interval(&ratios);
    let ops = (2 * blocks) as f64 * w.n as f64;
    let programs = runs
        .into_iter()
        .filter(|(_, (c, _))| *c > 0)
        .map(|(name, (c, t))| ProgramCost {
            name,
            runs_per_op: c as f64 / ops,
            mean_ns: t as f64 / c as f64,
        })
        .collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    Paired {
        workload: *w,
        blocks,
        without_ns: mean(&a_all),
        with_ns: mean(&b_all),
        ratio,
        lo,
        hi,
        programs,
        daemon_ns_per_op: daemon_ns as f64 / ops,
    }
}

/// The paired results as a markdown table, then each workload's programs with their share of
/// the operation's cost here and on the assumed bare-metal node.
pub fn paired_page(results: &[Paired]) -> String {
    let mut s = String::from(
        "| workload | blocks (A/B/B/A) | without | with | ratio | 95 % interval | no slowdown shows | the daemon's own CPU per op |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for p in results {
        s += &format!("{} {:.0} ns |\n", p.row(p.workload.op), p.daemon_ns_per_op);
    }
    s += "\nThe programs that ran during the rounds with the daemon (kernel BPF statistics):\n\n\
          | workload | program | runs per op | mean ns per run | share of the op here | share on bare metal |\n\
          |---|---|---|---|---|---|\n";
    for p in results {
        if p.programs.is_empty() {
            s += &format!("| {} | none ran | | | 0 | 0 |\n", p.workload.mode);
        }
        for c in &p.programs {
            let per_op = c.runs_per_op * c.mean_ns;
            s += &format!(
                "| {} | `{}` | {:.3} | {:.0} | {:.3} % | {:.3} % |\n",
                p.workload.mode,
                c.name,
                c.runs_per_op,
                c.mean_ns,
                per_op / p.without_ns * 100.0,
                per_op / p.workload.bare_metal_ns * 100.0,
            );
        }
    }
    s += "\nBare-metal costs assumed per operation:\n\n";
    for p in results {
        s += &format!(
            "- {}: {:.0} ns ({}).\n",
            p.workload.op, p.workload.bare_metal_ns, p.workload.bare_metal_source
        );
    }
    s
}

/// `cgroup_mkdir_tp`'s mean ns over `n` mkdirs in the memory hierarchy, `gap` apart (with a
/// gap, the daemon sleeps between them and every record is the first in an empty ring).
/// `pid` is the running daemon's.
pub fn mkdir_cost(pid: u32, n: usize, gap: Duration, tag: &str) -> (u64, f64) {
    let root = if crate::pod::unified() {
        "/sys/fs/cgroup"
    } else {
        "/sys/fs/cgroup/memory"
    };
    let mut scratch = CgroupTree::new(root, &format!("mkdir-{tag}"));
    let name = ["cgroup_mkdir_tp"];
    let before = bpf_totals(pid, &name);
    for i in 0..n {
        scratch.mkdir(&format!("c{i}"));
        if !gap.is_zero() {
            thread::sleep(gap);
        }
    }
    let after = bpf_totals(pid, &name);
    drop(scratch);
    let (c0, t0) = before.get(name[0]).copied().unwrap_or_default();
    let (c1, t1) = after.get(name[0]).copied().unwrap_or_default();
    let c = c1.saturating_sub(c0);
    (c, t1.saturating_sub(t0) as f64 / c.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_holds_the_ratio_and_narrows_with_agreement() {
        let (r, lo, hi) = ratio_interval(&[1.0, 1.1, 0.9, 1.05]);
        assert!(lo < r && r < hi, "{lo} {r} {hi}");
        let (r2, lo2, hi2) = ratio_interval(&[1.01, 1.01, 1.01, 1.01]);
        assert!((r2 - 1.01).abs() < 1e-9 && (hi2 - lo2) < 1e-9);
        assert!(hi - lo > hi2 - lo2);
    }
}
