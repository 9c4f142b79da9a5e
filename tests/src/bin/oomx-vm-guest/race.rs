//! Race mode (`oomx.race=N` on the kernel command line, from `cargo xtask race --vm`): the
//! containerd race of `tests::race` on this guest's cgroup v2, with Debian's containerd and
//! runc that the xtask packed into the initramfs. One `race` verdict line.

use std::{
    panic,
    time::{Duration, Instant},
};

use serde_json::json;
use tests::{
    containerd::{Containerd, Subscriber},
    cri::{markdown_rows, rows, CriNode, RowSpec},
    race::{ask_socket, run_kills, tally, ReadDelays, RECORD_TRACE, TABLE_HEAD},
    Observer,
};

use crate::{daemon::OBSERVER, sys::emit};

/// Containers at once, as on the host.
const PARALLEL: usize = 4;
/// The hog's `memory.max`.
const LIMIT_MB: u64 = 24;

/// The value of `oomx.<key>=` on the kernel command line.
pub fn cmdline(key: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/cmdline").ok()?;
    let prefix = format!("oomx.{key}=");
    text.split_whitespace()
        .find_map(|w| w.strip_prefix(prefix.as_str()).map(str::to_string))
}

/// `N` from `oomx.race=N`, if the guest was booted for the race.
pub fn kills_requested() -> Option<usize> {
    cmdline("race").and_then(|n| n.parse().ok())
}

/// The library's helpers find their tools on PATH and the observer through this variable;
/// the guest carries no gVisor.
pub fn containerd_env() {
    std::env::set_var("PATH", "/bin");
    std::env::set_var("OOM_OBSERVER_BIN", OBSERVER);
    std::env::set_var("OOMX_NO_RUNSC", "1");
    std::env::set_var("OOMX_NO_PIVOT", "1");
    if let Some(at) = cmdline("taskoom") {
        std::env::set_var("OOMX_TASKOOM_AT", at);
    }
    // `oomx.containerd=2.1.9`: the initramfs carries that release's binaries in /bin.
    if let Some(release) = cmdline("containerd") {
        std::env::set_var("OOMX_CONTAINERD", release);
        std::env::set_var("OOMX_CONTAINERD_DIR", "/bin");
    }
}

/// The library panics on what it cannot do (it is test code): a panic becomes an error
/// instead of killing PID 1.
pub fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match panic::catch_unwind(panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => Err(format!(
            "panicked: {}",
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "?".into())
        )),
    }
}

pub fn run(n: usize) {
    let t0 = Instant::now();
    containerd_env();
    match guarded(|| race(n)) {
        Ok(v) => emit(&v),
        Err(e) => emit(&json!({"type": "race", "problems": [e]})),
    }
    emit(&json!({"type": "done", "seconds": t0.elapsed().as_secs_f64()}));
}

/// `oomx.audit=1`: the audit scenarios of `tests::audit_v2`, one `audit` verdict each.
pub fn run_audit() {
    let t0 = Instant::now();
    containerd_env();
    for (name, scenario) in tests::audit_v2::ALL {
        let t = Instant::now();
        let r = guarded(scenario);
        emit(&json!({
            "type": "audit",
            "scenario": name,
            "status": if r.is_ok() { "pass" } else { "fail" },
            "detail": r.unwrap_or_else(|e| e),
            "seconds": t.elapsed().as_secs_f64(),
        }));
    }
    emit(&json!({"type": "done", "seconds": t0.elapsed().as_secs_f64()}));
}

/// `oomx.kubelet=N`: the kubelet rows of `tests::cri` (pods through containerd's CRI plugin,
/// with and without oom-observer, idle and loaded, N pods per row) on this guest's cgroup v2.
/// One `kubelet` verdict line.
pub fn run_kubelet(n: usize) {
    let t0 = Instant::now();
    containerd_env();
    // overlayfs is a module in Debian's cloud kernels; the initramfs carries none.
    std::env::set_var("OOMX_SNAPSHOTTER", "native");
    match guarded(|| kubelet(n)) {
        Ok(v) => emit(&v),
        Err(e) => emit(&json!({"type": "kubelet", "problems": [e]})),
    }
    emit(&json!({"type": "done", "seconds": t0.elapsed().as_secs_f64()}));
}

/// What a node has and a bare initramfs lacks for the CRI: the files a host-network pod's
/// sandbox copies, loopback up (the CRI's streaming server listens on 127.0.0.1), and the
/// cpu controller for the loaded rows' starved CPU.
pub fn cri_node_files() -> Result<(), String> {
    std::fs::create_dir_all("/etc").map_err(|e| format!("/etc: {e}"))?;
    for (f, text) in [
        ("/etc/hosts", "127.0.0.1 localhost\n"),
        ("/etc/resolv.conf", ""),
        ("/etc/hostname", "oomx-guest\n"),
    ] {
        if !std::path::Path::new(f).exists() {
            std::fs::write(f, text).map_err(|e| format!("{f}: {e}"))?;
        }
    }
    let up = std::process::Command::new("/bin/busybox")
        .args(["ip", "link", "set", "lo", "up"])
        .status()
        .map_err(|e| format!("ip link set lo up: {e}"))?;
    if !up.success() {
        return Err(format!("ip link set lo up: {up}"));
    }
    std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+cpu")
        .map_err(|e| format!("enabling +cpu at the cgroup root: {e}"))
}

fn kubelet(n: usize) -> Result<serde_json::Value, String> {
    cri_node_files()?;
    let mut node = CriNode::start();
    let mut spec = RowSpec::new(n);
    // `oomx.kubelet_baseline=0` (the README's test command): the rows with oom-observer
    // only; containerd alone is the long command's comparison, and fails nothing.
    spec.baseline = cmdline("kubelet_baseline").as_deref() != Some("0");
    let rows = rows(&mut node, &spec, Duration::from_secs(240));
    drop(node);
    // `oomx.kubelet_at_exit=0` (the README's test command): hold the containers to their
    // reason a second later only, as the host's quick test does (see `Row::problems`).
    let at_exit = cmdline("kubelet_at_exit").as_deref() != Some("0");
    Ok(json!({
        "type": "kubelet",
        "rows": rows.iter().map(|r| r.json("guest")).collect::<Vec<_>>(),
        "table": markdown_rows(&rows, &spec, "guest"),
        "problems": rows.iter().flat_map(|r| r.problems(at_exit)).collect::<Vec<_>>(),
    }))
}

fn race(n: usize) -> Result<serde_json::Value, String> {
    let t0 = Instant::now();
    let cd = Containerd::start();
    let sub = Subscriber::start(&cd.socket);
    // Each record's read is traced: how long kill records wait behind the kernel's printk.
    std::env::set_var("OOM_OBSERVER_LOG", RECORD_TRACE);
    let state = cd.dir.join("state-observer");
    let obs = Observer::spawn(
        &[
            "--containerd-socket",
            cd.socket.to_str().ok_or("socket path")?,
            "--state-dir",
            state.to_str().ok_or("state path")?,
        ],
        Duration::from_secs(240),
    );
    obs.wait_log("connected to containerd", Duration::from_secs(120));
    let ready_s = t0.elapsed().as_secs_f64();
    let ids: Vec<String> = (0..n).map(|i| format!("race-{i}")).collect();
    let ask = |pid: u32| ask_socket(&obs.query_socket, &format!("{{\"pid\":{pid}}}"));
    // The initramfs is the root filesystem, which pivot_root(2) cannot leave: runc chroots.
    let kills = run_kills(&cd, &ids, PARALLEL, LIMIT_MB, &["--no-pivot"], &ask)?;
    sub.wait_for("every TaskExit", Duration::from_secs(120), |s| {
        ids.iter().all(|id| {
            s.iter()
                .any(|e| e.topic == "/tasks/exit" && e.container_id.as_deref() == Some(id.as_str()))
        })
    });
    std::thread::sleep(Duration::from_secs(1));
    let mut t = tally(&cd.namespace, &kills, &sub.seen(), &obs.events());
    t.read_ms = ReadDelays::from_log(&obs.stderr_text());
    let version = cd.ctr(&["version"]);
    let server = String::from_utf8_lossy(&version.stdout)
        .lines()
        .skip_while(|l| !l.starts_with("Server"))
        .find_map(|l| {
            l.trim()
                .strip_prefix("Version:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    let runc = std::process::Command::new("runc")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .unwrap_or_default();
    let problems = t.problems();
    if !problems.is_empty() {
        crate::sys::log(&format!(
            "observer stderr:\n{}\ncontainerd log tail:\n{}",
            obs.stderr_text(),
            cd.log()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    Ok(json!({
        "type": "race",
        "kills": n,
        "parallel": PARALLEL,
        "containerd": server,
        "runc": runc,
        "head": TABLE_HEAD,
        "rows": t.rows(),
        "exit_and_waiter": t.exit_and_waiter(),
        "ours_ms": t.ours.latency_ms,
        "theirs_ms": t.theirs.latency_ms,
        "exit_ms": t.exit_ms,
        "decided_ms": t.decided_ms,
        "decided_to_ours_ms": t.decided_to_ours_ms,
        "kill_read_ms": t.read_ms.kill,
        "exit_read_ms": t.read_ms.exit,
        "decision_read_ms": t.read_ms.decision,
        "ours_before_kill": t.ours_before_kill,
        "ready_seconds": ready_s,
        "problems": problems,
    }))
}
