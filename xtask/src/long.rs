//! The long runs behind the results pages (`race`, `race --vm`, `bench`, `audit-vm`, and
//! `kubelet` through [`release_test`]): release builds, and they alone write `docs/`.

use std::{fs, path::PathBuf, process::Command};

use anyhow::Result;

use crate::{
    build::{build, EBPF_TARGET},
    command::{root, run},
    packages::{ensure_packages, BUILD_PACKAGES, TEST_PACKAGES},
    vm,
};

/// Runs one integration test against release builds, with extra environment.
pub fn release_test(test: &str, env: &[(&str, &std::ffi::OsStr)]) -> Result<()> {
    release_test_filtered(test, None, env)
}

/// [`release_test`], running only the tests whose name contains `filter`.
fn release_test_filtered(
    test: &str,
    filter: Option<&str>,
    env: &[(&str, &std::ffi::OsStr)],
) -> Result<()> {
    ensure_packages(BUILD_PACKAGES)?;
    ensure_packages(TEST_PACKAGES)?;
    let bin = build(true)?;
    let root = root();
    let obj = root
        .join("target/ebpf")
        .join(EBPF_TARGET)
        .join("release/observer-ebpf");
    run(Command::new("cargo")
        .current_dir(&root)
        .args(["build", "--release", "--package", "tests", "--bins"])
        .env("OOM_OBSERVER_EBPF_OBJ", &obj))?;
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&root)
        .args(["test", "--release", "--package", "tests", "--test", test])
        .args(filter)
        .args(["--", "--nocapture"])
        .env("OOM_OBSERVER_EBPF_OBJ", &obj)
        .env("OOM_OBSERVER_BIN", &bin)
        .env("OOMX_HOG_BIN", root.join("target/release/oomx-hog"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&mut cmd)
}

/// `cargo xtask race` on this host: writes docs/race-host.md.
pub fn race(kills: usize) -> Result<()> {
    let report = root().join("docs/race-host.md");
    fs::create_dir_all(root().join("docs"))?;
    let kills = kills.to_string();
    release_test(
        "race",
        &[
            ("OOMX_RACE_KILLS", kills.as_ref()),
            ("OOMX_RACE_REPORT", report.as_os_str()),
        ],
    )?;
    eprintln!("xtask: wrote {}", report.display());
    Ok(())
}

/// `cargo xtask race --vm`: only the full default run writes the results page,
/// docs/race-vm.md (issue 15 item 5); a partial one writes under target/vm/.
pub fn race_vm(
    kills: usize,
    report: Option<PathBuf>,
    rerender: bool,
    run: &vm::RaceRun,
) -> Result<()> {
    let report = report.unwrap_or_else(|| {
        if run.is_full() {
            root().join("docs/race-vm.md")
        } else {
            run.partial_report()
        }
    });
    vm::race_vm(kills, &report, rerender, run)
}

/// `cargo xtask audit-vm`: writes docs/audit-vm.md unless told where.
pub fn audit_vm(report: Option<PathBuf>) -> Result<()> {
    vm::audit_vm(&report.unwrap_or_else(|| root().join("docs/audit-vm.md")))
}

/// `cargo xtask bench`: the full benchmarks, written to docs/bench/.
pub fn bench(filter: Option<&str>) -> Result<()> {
    let dir = root().join("docs/bench");
    fs::create_dir_all(&dir)?;
    release_test_filtered(
        "bench",
        filter,
        &[
            ("OOMX_BENCH_FULL", "1".as_ref()),
            ("OOMX_BENCH_DIR", dir.as_os_str()),
        ],
    )?;
    eprintln!("xtask: wrote the reports under {}", dir.display());
    Ok(())
}
