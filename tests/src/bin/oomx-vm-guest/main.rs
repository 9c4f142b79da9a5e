//! `oomx-vm-guest`: the `/init` of the VM matrix's guests (`cargo xtask vm-test`).
//!
//! In a freshly booted Debian kernel with only an initramfs it mounts what the node needs,
//! asks `oom-observer check --programs` what this kernel supports, then for every hook
//! strategy, forced one at a time, runs real OOM kills (leaf cgroup, pod/container shape,
//! `memory.oom.group`, global) and checks the JSON the observer wrote against what that
//! strategy claims to see. Each verdict is one `OOMX {json}` line on the console, which the
//! xtask reads; then the guest powers off.
//!
//! It refuses to run unless it is PID 1: it mounts filesystems and creates cgroups at the
//! root of the cgroup tree, which is only acceptable inside its own VM.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "the VM guests' test runner: a panic fails the guest's run, which the host reports"
)]

mod daemon;
mod deaths;
mod expect;
mod forecast;
mod pods;
mod race;
mod scenarios;
mod sys;

use std::{collections::BTreeMap, process::Command, time::Instant};

use serde_json::{json, Value};

use crate::{
    daemon::{Daemon, OBSERVER},
    expect::Sees,
    sys::{emit, log},
};

const STRATEGIES: [&str; 4] = ["fentry", "kprobe", "tp_btf", "tracepoint"];

fn main() {
    if std::process::id() != 1 {
        eprintln!(
            "oomx-vm-guest is the /init of a test VM; refusing to run as pid {}",
            std::process::id()
        );
        std::process::exit(2);
    }
    let t0 = Instant::now();
    if let Err(e) = sys::setup() {
        emit(&json!({"type": "fatal", "error": e}));
        sys::power_off();
    }
    let (release, machine) = sys::uname();
    emit(&json!({"type": "boot", "kernel": release, "machine": machine}));
    if let Some(n) = race::kills_requested() {
        race::run(n);
        sys::power_off();
    }
    if let Some(n) = race::cmdline("kubelet").and_then(|v| v.parse().ok()) {
        race::run_kubelet(n);
        sys::power_off();
    }
    if race::cmdline("deaths").is_some() {
        deaths::run();
        sys::power_off();
    }
    if race::cmdline("forecast").is_some() {
        forecast::run();
        sys::power_off();
    }
    if race::cmdline("audit").is_some() {
        race::run_audit();
        sys::power_off();
    }

    let check = match Command::new(OBSERVER)
        .args(["check", "--programs"])
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            emit(&json!({"type": "fatal", "error": format!("running {OBSERVER} check: {e}")}));
            sys::power_off();
        }
    };
    let table = String::from_utf8_lossy(&check.stdout).into_owned();
    log(&table);
    log(&String::from_utf8_lossy(&check.stderr));
    let parsed = parse_check(&table);
    emit(&json!({"type": "object", "sha256": parsed.sha256}));
    // The classic tracepoint's record gained comm and uid in Linux 6.8.
    let tp_comm = sys::tracepoint_has_field("oom", "mark_victim", "comm");
    emit(&json!({"type": "facts", "mark_victim_record_has_comm": tp_comm}));

    for s in STRATEGIES {
        let supported = parsed
            .hooks
            .get(s)
            .cloned()
            .unwrap_or(Err("not listed by oom-observer check".to_string()));
        emit(&json!({
            "type": "strategy",
            "strategy": s,
            "supported": supported.is_ok(),
            "reason": supported.as_ref().err(),
            "insns": parsed.insns.get(s).cloned().unwrap_or_default(),
        }));
        match supported {
            Ok(_) => run_strategy(s, Sees::of(s, tp_comm)),
            Err(why) => {
                for sc in scenarios::ALL.iter().chain(["stream"].iter()) {
                    result(s, sc, "na", &why, 0.0);
                }
            }
        }
    }
    emit(&json!({"type": "done", "seconds": t0.elapsed().as_secs_f64()}));
    sys::power_off();
}

fn result(strategy: &str, scenario: &str, status: &str, detail: &str, seconds: f64) {
    emit(&json!({
        "type": "result",
        "strategy": strategy,
        "scenario": scenario,
        "status": status,
        "detail": detail,
        "seconds": (seconds * 10.0).round() / 10.0,
    }));
}

fn run_strategy(strategy: &str, sees: Sees) {
    let t = Instant::now();
    let mut daemon = match Daemon::start(strategy) {
        Ok(d) => d,
        Err(why) => {
            for sc in scenarios::ALL.iter().chain(["stream"].iter()) {
                result(strategy, sc, "fail", &why, t.elapsed().as_secs_f64());
            }
            return;
        }
    };
    log(&format!(
        "{strategy}: observer ready after {:.1}s ({})",
        t.elapsed().as_secs_f64(),
        daemon.memory()
    ));
    let ctx = scenarios::Ctx {
        strategy,
        sees,
        daemon: &daemon,
    };
    for sc in scenarios::ALL {
        let t = Instant::now();
        match scenarios::run(sc, &ctx) {
            Ok(detail) => result(strategy, sc, "pass", &detail, t.elapsed().as_secs_f64()),
            Err(why) => {
                result(strategy, sc, "fail", &why, t.elapsed().as_secs_f64());
                log(&format!(
                    "observer stderr:\n{}\nkernel log:\n{}",
                    daemon.stderr_text(),
                    sys::kernel_log_tail(40)
                ));
            }
        }
    }
    // The stream as a whole: clean stop, only JSON on stdout, gap-free seq, nothing lost.
    log(&format!(
        "{strategy}: observer at its stop: {}",
        daemon.memory()
    ));
    let status = daemon.stop();
    let evs = daemon.events();
    let mut problems = Vec::new();
    if !status.is_some_and(|s| s.success()) {
        problems.push(format!("SIGTERM did not stop it cleanly: {status:?}"));
    }
    let bad = daemon.not_json();
    if !bad.is_empty() {
        problems.push(format!("stdout lines that are not JSON: {bad:?}"));
    }
    let seqs: Vec<u64> = evs.iter().map(|e| e["seq"].as_u64().unwrap_or(0)).collect();
    let gap_free: Vec<u64> = (1..=seqs.len() as u64).collect();
    if seqs != gap_free {
        problems.push(format!("seq is not 1, 2, 3, ...: {seqs:?}"));
    }
    let stderr = daemon.stderr_text();
    // The daemon's warning when the kernel could not reserve ring-buffer space.
    if stderr.contains("records were lost") {
        problems.push("the observer reports lost records".into());
    }
    if problems.is_empty() {
        result(
            strategy,
            "stream",
            "pass",
            &format!("{} events, seq 1..{}, clean stop", evs.len(), evs.len()),
            0.0,
        );
    } else {
        result(strategy, "stream", "fail", &problems.join("; "), 0.0);
        log(&format!("observer stderr:\n{stderr}"));
    }
}

/// What `oom-observer check --programs` says.
struct Check {
    sha256: Option<String>,
    hooks: BTreeMap<String, Result<String, String>>,
    insns: BTreeMap<String, BTreeMap<String, Value>>,
}

/// Reads the check table: `ebpf object  sha256:HEX (N bytes)`, `hook S  ok...|no: why`,
/// `insns S  name=N name=N`.
fn parse_check(table: &str) -> Check {
    let mut c = Check {
        sha256: None,
        hooks: BTreeMap::new(),
        insns: BTreeMap::new(),
    };
    for line in table.lines() {
        if let Some(rest) = line.strip_prefix("ebpf object") {
            c.sha256 = rest
                .trim()
                .strip_prefix("sha256:")
                .and_then(|r| r.split_whitespace().next())
                .map(str::to_string);
        } else if let Some(rest) = line.strip_prefix("hook ") {
            let mut it = rest.splitn(2, char::is_whitespace);
            let name = it.next().unwrap_or_default().to_string();
            let v = it.next().unwrap_or_default().trim();
            let outcome = match v.strip_prefix("no: ") {
                Some(why) => Err(why.to_string()),
                None => Ok(v.to_string()),
            };
            c.hooks.insert(name, outcome);
        } else if let Some(rest) = line.strip_prefix("insns ") {
            let mut it = rest.split_whitespace();
            let name = it.next().unwrap_or_default().to_string();
            let progs = it
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| {
                    let n = v.parse::<u64>().map(Value::from).unwrap_or(Value::Null);
                    (k.to_string(), n)
                })
                .collect();
            c.insns.insert(name, progs);
        }
    }
    c
}
