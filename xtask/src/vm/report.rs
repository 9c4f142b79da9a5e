//! Reading a guest's console (the `OOMX {json}` lines of `oomx-vm-guest`), judging it, and
//! writing the results table.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use serde_json::Value;

/// The scenarios each strategy runs, in table order (`stream`: the run as a whole).
pub const SCENARIOS: [&str; 5] = ["single", "pod", "group", "global", "stream"];
pub const STRATEGIES: [&str; 4] = ["fentry", "kprobe", "tp_btf", "tracepoint"];

#[derive(Debug, Default, Clone)]
pub struct StrategyInfo {
    pub supported: bool,
    pub reason: Option<String>,
    /// Program name → verified instruction count (`None`: not reported).
    pub insns: BTreeMap<String, Option<u64>>,
}

#[derive(Debug, Clone)]
pub struct Row {
    pub status: String,
    pub detail: String,
    pub seconds: f64,
}

/// Everything a guest said.
#[derive(Debug, Default, Clone)]
pub struct Console {
    pub kernel: Option<String>,
    pub machine: Option<String>,
    pub sha256: Option<String>,
    pub mark_victim_has_comm: Option<bool>,
    pub strategies: BTreeMap<String, StrategyInfo>,
    /// (strategy, scenario) → result.
    pub rows: BTreeMap<(String, String), Row>,
    pub done_seconds: Option<f64>,
    pub fatal: Option<String>,
}

/// Parses the protocol lines; anything else on the console is ignored (kernel messages,
/// `OOMX-LOG` lines for people).
pub fn parse(console: &str) -> Console {
    let mut c = Console::default();
    for line in console.lines() {
        let Some(at) = line.find("OOMX {") else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(&line[at + 5..]) else {
            continue;
        };
        let s = |k: &str| v[k].as_str().map(str::to_string);
        match v["type"].as_str() {
            Some("boot") => {
                c.kernel = s("kernel");
                c.machine = s("machine");
            }
            Some("object") => c.sha256 = s("sha256"),
            Some("facts") => c.mark_victim_has_comm = v["mark_victim_record_has_comm"].as_bool(),
            Some("strategy") => {
                let insns = v["insns"]
                    .as_object()
                    .map(|m| m.iter().map(|(k, n)| (k.clone(), n.as_u64())).collect())
                    .unwrap_or_default();
                c.strategies.insert(
                    s("strategy").unwrap_or_default(),
                    StrategyInfo {
                        supported: v["supported"].as_bool().unwrap_or(false),
                        reason: s("reason"),
                        insns,
                    },
                );
            }
            Some("result") => {
                c.rows.insert(
                    (
                        s("strategy").unwrap_or_default(),
                        s("scenario").unwrap_or_default(),
                    ),
                    Row {
                        status: s("status").unwrap_or_default(),
                        detail: s("detail").unwrap_or_default(),
                        seconds: v["seconds"].as_f64().unwrap_or(0.0),
                    },
                );
            }
            Some("done") => c.done_seconds = v["seconds"].as_f64(),
            Some("fatal") => c.fatal = s("error"),
            _ => {}
        }
    }
    c
}

/// One guest of the matrix after its run.
pub struct GuestResult {
    pub name: String,
    pub arch: &'static str,
    pub package: String,
    pub version: String,
    pub console: Console,
    pub elapsed: Duration,
    /// Why this guest fails; empty when it passes.
    pub problems: Vec<String>,
}

/// What a guest must show.
pub struct Expect<'a> {
    /// `uname -m`.
    pub machine: &'a str,
    /// The eBPF object built on the host.
    pub sha256: &'a str,
    /// Strategies the kernel is known not to support (n/a allowed).
    pub unsupported: &'a [&'a str],
}

/// Judges a guest: it must finish, run the very object the host built, and pass every
/// scenario of every strategy it is expected to support.
pub fn judge(
    c: &Console,
    want: &Expect<'_>,
    timed_out: bool,
    status: &str,
    console_tail: &str,
) -> Vec<String> {
    let (expect_machine, host_sha256) = (want.machine, want.sha256);
    let mut p = Vec::new();
    if timed_out {
        p.push(format!(
            "no verdict before the time limit (hung guest); console tail:\n{console_tail}"
        ));
    } else if c.done_seconds.is_none() {
        p.push(format!(
            "the guest stopped before finishing (kernel panic or crash; qemu: {status}); console tail:\n{console_tail}"
        ));
    }
    if let Some(f) = &c.fatal {
        p.push(format!("guest setup failed: {f}"));
    }
    if c.machine.is_some() && c.machine.as_deref() != Some(expect_machine) {
        p.push(format!(
            "guest machine is {:?}, expected {expect_machine}",
            c.machine
        ));
    }
    match &c.sha256 {
        Some(h) if h == host_sha256 => {}
        Some(h) => p.push(format!(
            "the guest's binary embeds eBPF object sha256:{h}, not the one built on the host (sha256:{host_sha256})"
        )),
        None if c.kernel.is_some() => p.push("the guest reported no eBPF object hash".into()),
        None => {}
    }
    if c.kernel.is_none() {
        return p;
    }
    for s in STRATEGIES {
        match c.strategies.get(s) {
            // A guest that did not finish has already failed for that reason.
            None if c.done_seconds.is_none() => {}
            None => p.push(format!("{s}: not reported")),
            Some(info) if !info.supported && want.unsupported.contains(&s) => {}
            Some(info) if !info.supported => p.push(format!(
                "{s}: expected to work on this kernel, but check says: {}",
                info.reason.as_deref().unwrap_or("?")
            )),
            Some(_) => {}
        }
        for sc in SCENARIOS {
            match c.rows.get(&(s.to_string(), sc.to_string())) {
                Some(r) if r.status == "pass" => {}
                Some(r) if r.status == "na" && want.unsupported.contains(&s) => {}
                Some(r) => p.push(format!("{s}/{sc}: {}", r.detail)),
                None if c.done_seconds.is_some() => p.push(format!("{s}/{sc}: no result")),
                None => {}
            }
        }
    }
    p
}

fn cell(c: &Console, s: &str, sc: &str) -> String {
    match c.rows.get(&(s.to_string(), sc.to_string())) {
        Some(r) if r.status == "pass" && sc != "stream" => format!("pass ({:.0} s)", r.seconds),
        Some(r) if r.status == "pass" => "pass".into(),
        Some(r) if r.status == "na" => "n/a".into(),
        Some(r) => format!("**{}**", r.status.to_uppercase()),
        None => "—".into(),
    }
}

pub struct Summary<'a> {
    pub date: String,
    pub host_sha256: &'a str,
    pub object_bytes: usize,
    pub qemu: String,
    pub wall: Duration,
    pub downloads: String,
}

fn mmss(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}m {:02}s", s / 60, s % 60)
}

/// The Markdown results page (`docs/vm-matrix.md`).
pub fn markdown(results: &[GuestResult], sum: &Summary<'_>) -> String {
    let mut t = String::new();
    let passed = results.iter().all(|r| r.problems.is_empty());
    let _ = writeln!(t, "# VM matrix results\n");
    let _ = writeln!(
        t,
        "Written by `cargo xtask vm-test` (which `cargo xtask test` runs) — do not edit; the next \
         run rewrites it. What each scenario asserts, per hook strategy, is described below the tables.\n"
    );
    let _ = writeln!(
        t,
        "- run: {} — **{}**",
        sum.date,
        if passed { "all rows pass" } else { "FAILURES" }
    );
    let _ = writeln!(
        t,
        "- wall time of the whole matrix: {} on the build machine (2 cores; qemu TCG, guests two at a time; {}; cross builds included)",
        mmss(sum.wall),
        sum.downloads
    );
    let _ = writeln!(t, "- emulator: {}", sum.qemu);
    let _ = writeln!(
        t,
        "- eBPF object: `sha256:{}` ({} bytes) — one file, embedded in both the x86_64 and the \
         arm64 binary; every guest reported this hash from the binary it ran.\n",
        sum.host_sha256, sum.object_bytes
    );

    let _ = writeln!(t, "## Results\n");
    let _ = writeln!(
        t,
        "| kernel | arch | strategy | single | pod | group | global | stream |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|");
    for r in results {
        let kernel = r.console.kernel.as_deref().unwrap_or(&r.package);
        for s in STRATEGIES {
            let cells: Vec<String> = if r.console.kernel.is_none() {
                vec!["**NO BOOT**".into(); SCENARIOS.len()]
            } else {
                SCENARIOS.iter().map(|sc| cell(&r.console, s, sc)).collect()
            };
            let _ = writeln!(t, "| {kernel} | {} | {s} | {} |", r.arch, cells.join(" | "));
        }
    }
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "Guests (Debian package and version; time inside the guest, and qemu's wall time):\n"
    );
    for r in results {
        let _ = writeln!(
            t,
            "- {}: `{}` {} — {} inside, {} wall{}",
            r.name,
            r.package,
            r.version,
            r.console
                .done_seconds
                .map(|s| format!("{s:.0} s"))
                .unwrap_or_else(|| "no end".into()),
            mmss(r.elapsed),
            if r.problems.is_empty() {
                ""
            } else {
                " — FAILED"
            }
        );
    }
    let na: Vec<String> = results
        .iter()
        .flat_map(|r| {
            r.console
                .strategies
                .iter()
                .filter(|(_, i)| !i.supported)
                .map(move |(s, i)| {
                    format!(
                        "- {} {s}: n/a — `oom-observer check` says: {}",
                        r.name,
                        i.reason.as_deref().unwrap_or("?")
                    )
                })
        })
        .collect();
    if !na.is_empty() {
        let _ = writeln!(
            t,
            "\nStrategies a kernel does not support (expected for these kernels):\n"
        );
        for l in na {
            let _ = writeln!(t, "{l}");
        }
    }

    let mut programs: Vec<String> = results
        .iter()
        .flat_map(|r| r.console.strategies.values())
        .flat_map(|i| i.insns.keys().cloned())
        .collect();
    programs.sort();
    programs.dedup();
    let _ = writeln!(t, "\n## Verifier instruction counts\n");
    let _ = writeln!(
        t,
        "Instructions the kernel's verifier processed per program (`verified_insns` from \
         `BPF_OBJ_GET_INFO_BY_FD`), as `oom-observer check --programs` reports them in each guest \
         with every program of the strategy loaded. — : not loaded by that strategy; n/r: not \
         reported (the kernel reports `verified_insns` since Linux 5.16).\n"
    );
    let _ = writeln!(t, "| kernel | arch | strategy | {} |", programs.join(" | "));
    let _ = writeln!(t, "|---|---|---|{}", "---|".repeat(programs.len()));
    for r in results {
        for s in STRATEGIES {
            let Some(info) = r.console.strategies.get(s) else {
                continue;
            };
            let cells: Vec<String> = programs
                .iter()
                .map(|p| match info.insns.get(p) {
                    Some(Some(n)) => n.to_string(),
                    Some(None) => "n/r".into(),
                    None => "—".into(),
                })
                .collect();
            let _ = writeln!(
                t,
                "| {} | {} | {s} | {} |",
                r.console.kernel.as_deref().unwrap_or("?"),
                r.arch,
                cells.join(" | ")
            );
        }
    }

    let failures: Vec<&GuestResult> = results.iter().filter(|r| !r.problems.is_empty()).collect();
    if !failures.is_empty() {
        let _ = writeln!(t, "\n## Failures\n");
        for r in failures {
            let _ = writeln!(t, "### {}\n", r.name);
            for p in &r.problems {
                let _ = writeln!(t, "```\n{}\n```", p.trim());
            }
        }
    }
    t.push_str(SCENARIO_TEXT);
    t
}

const SCENARIO_TEXT: &str = r#"
## What is asserted

Each guest boots a Debian cloud kernel with only an initramfs (`oomx-vm-guest` as `/init`, the
static `oom-observer` and `oomx-hog`), mounts cgroup v2 with the memory controller, and for each
hook strategy starts `oom-observer run --hook <strategy>` and causes real OOM kills:

| scenario | what happens | asserted |
|---|---|---|
| single | a hog exceeds `memory.max` (32 MiB) of a leaf cgroup | one event; victim pid/tgid/comm/uid, victim cgroup, OOM cgroup = the leaf, constraint `memcg`, trigger = the hog |
| pod | limit (48 MiB) on a parent, the hog in a child made after the observer started | OOM cgroup = the parent, victim cgroup = the child |
| group | `memory.oom.group=1`, three processes holding 12 MiB each, a fourth runs into 64 MiB | one event per killed process (4), each with its pid, all in that cgroup, trigger = the fourth |
| global | no cgroup limit; the guest's 256 MiB run out (a 1 MiB ballast process waits in its own cgroup, so that a second kill has a victim) | one event for the hog; OOM cgroup null; constraint `global` (and one for the ballast, if the kernel kills it too) |
| stream | the run as a whole | stdout is only JSON, `seq` is 1, 2, 3, … without gaps, no lost records, exit 0 on SIGTERM |

Per strategy, exactly what it claims (docs/hooks.md) — a claimed field must be right,
an unclaimed one must be `null`:

- fentry, kprobe: everything, including OOM cgroup and constraint (`memcg`/`global`), and the victim's
  task for every victim (from the tracepoint on 6.8+, else `oom_control.chosen` or the SIGKILL the OOM
  killer sent, seen by `tp_btf/signal_generate`).
- tp_btf: every victim in full the same way; on cgroup v2 `oom_cgroup` and `constraint` are null.
- tracepoint: the record's own fields (pid; comm and uid where the kernel's record has them, 6.8+);
  tgid and cgroups only when the victim is the task that ran into the OOM; `oom_cgroup` and
  `constraint` null. In the group scenario the three bystanders therefore have null cgroups.

Any guest that hangs or panics ends at once (`panic=-1`, `-no-reboot`) or at its time limit, and
fails with its console tail.
"#;

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "ab12";

    /// A console as `oomx-vm-guest` prints it, kernel noise included.
    fn console(fentry_supported: bool, single: &str) -> String {
        let mut c = String::from(
            "[    1.0] random kernel line\n\
             OOMX {\"type\":\"boot\",\"kernel\":\"6.1.0-56-cloud-amd64\",\"machine\":\"x86_64\"}\n\
             OOMX-LOG hook fentry        ok\n\
             OOMX {\"type\":\"object\",\"sha256\":\"ab12\"}\n",
        );
        for s in STRATEGIES {
            let supported = s != "fentry" || fentry_supported;
            c.push_str(&format!(
                "OOMX {{\"type\":\"strategy\",\"strategy\":\"{s}\",\"supported\":{supported},\
                 \"reason\":{},\"insns\":{{\"mark_victim_btf\":120,\"old\":null}}}}\n",
                if supported {
                    "null"
                } else {
                    "\"no trampolines\""
                }
            ));
            for sc in SCENARIOS {
                let status = if !supported {
                    "na"
                } else if sc == "single" && s == "kprobe" {
                    single
                } else {
                    "pass"
                };
                // A kernel message glued in front must not hide the verdict.
                c.push_str(&format!(
                    "[ 2.0] x OOMX {{\"type\":\"result\",\"strategy\":\"{s}\",\"scenario\":\"{sc}\",\
                     \"status\":\"{status}\",\"detail\":\"d\",\"seconds\":1.5}}\n"
                ));
            }
        }
        c.push_str("OOMX {\"type\":\"done\",\"seconds\":20.0}\n");
        c
    }

    fn expect(unsupported: &'static [&'static str]) -> Expect<'static> {
        Expect {
            machine: "x86_64",
            sha256: SHA,
            unsupported,
        }
    }

    #[test]
    fn a_complete_passing_console_passes() {
        let c = parse(&console(true, "pass"));
        assert_eq!(c.kernel.as_deref(), Some("6.1.0-56-cloud-amd64"));
        assert_eq!(c.rows.len(), STRATEGIES.len() * SCENARIOS.len());
        assert_eq!(c.strategies["tp_btf"].insns["mark_victim_btf"], Some(120));
        assert_eq!(c.strategies["tp_btf"].insns["old"], None);
        assert!(judge(&c, &expect(&[]), false, "exit 0", "").is_empty());
    }

    #[test]
    fn a_failed_scenario_or_another_object_fails() {
        let c = parse(&console(true, "fail"));
        let p = judge(&c, &expect(&[]), false, "exit 0", "");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("kprobe/single"));
        let c = parse(&console(true, "pass"));
        let other = Expect {
            sha256: "ffff",
            ..expect(&[])
        };
        assert!(judge(&c, &other, false, "exit 0", "")[0].contains("not the one built"));
    }

    #[test]
    fn n_a_passes_only_where_expected() {
        let c = parse(&console(false, "pass"));
        assert!(judge(&c, &expect(&["fentry"]), false, "exit 0", "").is_empty());
        let p = judge(&c, &expect(&[]), false, "exit 0", "");
        assert!(p.iter().any(|l| l.contains("no trampolines")), "{p:?}");
    }

    #[test]
    fn a_guest_that_never_finishes_fails_once_with_its_console() {
        let full = console(true, "pass");
        let cut: String = full.lines().take(6).collect::<Vec<_>>().join("\n");
        let c = parse(&cut);
        let p = judge(&c, &expect(&[]), false, "exit 0", "Kernel panic");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("Kernel panic"));
        let p = judge(&c, &expect(&[]), true, "killed", "tail");
        assert!(p[0].contains("hung"), "{p:?}");
        let md = markdown(
            &[GuestResult {
                name: "g".into(),
                arch: "x86_64",
                package: "linux-image-x".into(),
                version: "1".into(),
                console: c,
                elapsed: Duration::from_secs(3),
                problems: p,
            }],
            &Summary {
                date: "today".into(),
                host_sha256: SHA,
                object_bytes: 1,
                qemu: "qemu".into(),
                wall: Duration::from_secs(61),
                downloads: "cached".into(),
            },
        );
        assert!(md.contains("FAILURES") && md.contains("1m 01s"), "{md}");
    }
}
