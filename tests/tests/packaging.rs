//! The systemd unit is valid for systemd itself, pointing at the binary under test.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a panic is how a test fails"
)]

use std::{fs, path::Path, process::Command};

#[test]
fn systemd_unit_verifies() {
    let unit = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/oom-observer.service"),
    )
    .expect("packaging/oom-observer.service");
    assert!(unit.contains("ExecStart=/usr/local/bin/oom-observer run"));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let bin = tests::observer_bin();
    let path = dir.join("oom-observer.service");
    fs::write(
        &path,
        unit.replace("/usr/local/bin/oom-observer", bin.to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("THIS TEST NEEDS systemd-analyze (Debian package systemd)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "systemd-analyze verify: {err}"
    );
}

/// The unit's sandboxing scores at most 2.0 in `systemd-analyze security` (it was 3.9), and
/// it cannot wedge the daemon: no MemoryMax together with OOMScoreAdjust=-1000.
#[test]
fn systemd_unit_exposure_is_at_most_2() {
    let unit_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/oom-observer.service");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit_path)
        .output()
        .expect("THIS TEST NEEDS systemd-analyze (Debian package systemd)");
    let text = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = text
        .lines()
        .find_map(|l| l.split("exposure level for oom-observer.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure in: {text}"));
    println!("systemd-analyze security exposure: {exposure}");
    assert!(exposure <= 2.0, "exposure {exposure}:\n{text}");
    let unit = fs::read_to_string(&unit_path).unwrap();
    let value = |key: &str| {
        unit.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .find_map(|l| l.strip_prefix(key).map(str::trim).map(String::from))
    };
    assert!(
        !(value("MemoryMax=").is_some() && value("OOMScoreAdjust=").as_deref() == Some("-1000")),
        "MemoryMax with OOMScoreAdjust=-1000 can livelock the daemon at its own limit"
    );
}

/// The syscall names a `systemd-analyze syscall-filter` set expands to, recursively.
fn syscall_set(name: &str, out: &mut std::collections::BTreeSet<String>) {
    let o = Command::new("systemd-analyze")
        .args(["syscall-filter", name])
        .output()
        .expect("systemd-analyze syscall-filter");
    for l in String::from_utf8_lossy(&o.stdout).lines().skip(1) {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if l.starts_with('@') {
            syscall_set(l, out);
        } else {
            out.insert(l.to_string());
        }
    }
}

/// The daemon still works under the unit's system call filter: every system call it makes
/// from start through a real OOM kill, a query and SIGTERM (traced with strace) is one the
/// filter allows. (This machine's systemd is not PID 1, so the unit itself cannot be
/// started here; the filter is checked against the calls instead.)
#[test]
fn the_daemon_makes_only_system_calls_the_unit_allows() {
    let unit = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/oom-observer.service"),
    )
    .unwrap();
    let mut allowed = std::collections::BTreeSet::new();
    let mut denied = std::collections::BTreeSet::new();
    for l in unit.lines() {
        let Some(v) = l.strip_prefix("SystemCallFilter=") else {
            continue;
        };
        let (deny, v) = match v.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, v),
        };
        for item in v.split_whitespace() {
            let set = if deny { &mut denied } else { &mut allowed };
            if item.starts_with('@') {
                syscall_set(item, set);
            } else {
                set.insert(item.to_string());
            }
        }
    }
    assert!(!allowed.is_empty(), "the unit has an allow list");
    let dir = std::env::temp_dir().join(format!("oomx-strace-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("trace");
    let wrapper = dir.join("traced-observer");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec strace -f -qq -o {} {} \"$@\"\n",
            trace.display(),
            tests::observer_bin().display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    std::env::set_var("OOM_OBSERVER_BIN", &wrapper);
    let obs = tests::Observer::start(&["--state-dir", dir.join("state").to_str().unwrap()]);
    let cg = tests::Memcg::new("strace");
    cg.limit_mb(32);
    let st = tests::run_hog(&cg.dir, &[]);
    assert!(tests::was_sigkilled(&st));
    obs.wait_for("the kill", std::time::Duration::from_secs(30), |e| {
        !tests::events_in(e, "oom_kill", &cg.path).is_empty()
    });
    let a = obs.ask("{\"pid\":1}");
    assert_eq!(a["oom_killed"], false);
    // SIGTERM to the daemon itself (strace's child), so its shutdown is traced too.
    let strace_pid = obs.pid();
    let daemon: i32 = fs::read_to_string(format!("/proc/{strace_pid}/task/{strace_pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the traced daemon");
    // SAFETY: a signal to the daemon this test started.
    unsafe { libc::kill(daemon, libc::SIGTERM) };
    obs.wait_log("stopped", std::time::Duration::from_secs(10));
    let _ = obs.stop();
    let text = fs::read_to_string(&trace).unwrap();
    let mut used = std::collections::BTreeSet::new();
    for l in text.lines() {
        let rest = l.split_once(' ').map(|(_, r)| r.trim_start()).unwrap_or("");
        if let Some((name, _)) = rest.split_once('(') {
            if !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                used.insert(name.to_string());
            }
        }
    }
    let refused: Vec<&String> = used
        .iter()
        .filter(|s| !allowed.contains(*s) || denied.contains(*s))
        .collect();
    println!(
        "system calls made: {}, refused by the unit: {refused:?}",
        used.len()
    );
    let _ = fs::remove_dir_all(&dir);
    assert!(used.contains("bpf"), "the trace saw the daemon: {used:?}");
    assert!(
        refused.is_empty(),
        "the unit's filter would refuse {refused:?}"
    );
}
