//! The systemd unit is valid for systemd itself, pointing at the binary under test.

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
