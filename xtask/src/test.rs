//! `cargo xtask test`: unit, host integration and VM tests, leaving the tree as it found it.
//! The long runs behind the results pages are in [`crate::long`].

use std::{env, ffi::OsString, path::Path, process::Command};

use anyhow::{bail, Context, Result};

use crate::{
    build::{build_ebpf, IMAGE_FEATURES},
    command::root,
    command::run,
    containerd, image, kubelet,
    lint::Lint,
    packages::{ensure_kubernetes_validate, ensure_packages, BUILD_PACKAGES, TEST_PACKAGES},
    vm,
};

/// Container OOM kills per cgroup v2 guest in `cargo xtask test` (CI time: see README).
const CI_VM_RACE_KILLS: usize = 10;
/// Pods per kubelet row in each guest in `cargo xtask test`, in the two rows with oom-observer
/// (idle and loaded; all four rows took 4.6 minutes).
const CI_VM_KUBELET_PODS: usize = 2;
/// The containerd releases of the guests' kubelet rows in `cargo xtask test`: Debian 12's
/// in every cgroup v2 guest, and one 2.x in the x86_64 guest (the arm64 guest's is the
/// slower under emulation; the full rows of every release are `cargo xtask kubelet`).
const CI_VM_KUBELET_RUNS: &[(&str, Option<&str>)] =
    &[("1.6.20", None), ("2.1.9", Some("linux-6.12-x86_64"))];
/// The systemd guest's wall-clock limit in seconds: it ran in 76–115 s; a hung guest ends here.
const SYSTEMD_GUEST_LIMIT: u64 = 600;

/// `cargo xtask test`: the cargo tests, then (unless `no_vm`) the VM matrix and the short
/// guest runs, with the workspace's lints beside them ([`Lint`]). Every result goes under
/// `target/`: the run leaves the tree as it found it, which it checks at the end.
pub fn all(no_vm: bool, extra: &[OsString]) -> Result<()> {
    let root = root();
    let before = tree_status(&root);
    // The whole run lints the workspace too, beside the rest; a filtered run does not.
    let lint = if extra.is_empty() {
        ensure_packages(BUILD_PACKAGES)?;
        build_ebpf()?;
        Some(Lint::start()?)
    } else {
        None
    };
    test(extra)?;
    if !no_vm {
        // The matrix's page goes under target/: only `cargo xtask vm-test` writes
        // docs/vm-matrix.md.
        vm::vm_test(&vm::VmOptions {
            report: Some(root.join("target/vm/vm-matrix.md")),
            ..vm::VmOptions::default()
        })?;
        // The short containerd race in the cgroup v2 guests (the full one is
        // `cargo xtask race --vm`); its tables go under target/, not into docs/.
        vm::race_vm(
            CI_VM_RACE_KILLS,
            &root.join("target/vm/race-vm.md"),
            false,
            &vm::RaceRun::default(),
        )?;
        // The audit's runc scenarios in the same guests (about 90 s).
        vm::audit_vm(&root.join("target/vm/audit-vm.md"))?;
        // The kubelet rows in the same guests, CI_VM_KUBELET_PODS pods per row (the full
        // ones are `cargo xtask kubelet`).
        kubelet::quick_vm(CI_VM_KUBELET_PODS, CI_VM_KUBELET_RUNS)?;
        // The unit under a real systemd, in a guest that is a node (measured: at most 2.6 min
        // with the guests' binaries built; docs/reliability.md). Its results go under target/.
        // Then the same checks on arm64 (39 s for the guest, 13 s to build its image, once
        // its packages are cached).
        for arch in ["x86_64", "arm64"] {
            vm::systemd_guest(&vm::SystemdGuestOptions {
                timeout: Some(SYSTEMD_GUEST_LIMIT),
                append: None,
                // The checks only: the rows are the long command's.
                pods: 0,
                containerd: None,
                arch: Some(arch.to_string()),
            })?;
        }
    }
    if let Some(lint) = lint {
        lint.finish()?;
    }
    check_tree(&root, before.as_deref())
}

/// `git status --porcelain` of the workspace (untracked files included), or `None` outside
/// a git checkout (a source tarball).
fn tree_status(root: &Path) -> Option<String> {
    Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["status", "--porcelain", "--untracked-files=all"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Fails when a run that started on a clean tree left it changed: results belong under
/// `target/`. On a tree that already had changes it only says what changed since the start,
/// since some of that may be the developer's own editing during the run.
fn check_tree(root: &Path, before: Option<&str>) -> Result<()> {
    let (Some(before), Some(after)) = (before, tree_status(root)) else {
        return Ok(());
    };
    let changed: Vec<&str> = after
        .lines()
        .filter(|l| !before.lines().any(|b| b == *l))
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    let changed = changed.join("\n");
    if before.is_empty() {
        bail!("the test run changed the tree (its results belong under target/):\n{changed}");
    }
    eprintln!("xtask: the tree changed during the run (the run's or your own edits?):\n{changed}");
    Ok(())
}

/// What `cargo xtask run` does before it starts the daemon, checked: `xtask build` (the same
/// setup: apt-get, rustup, bpf-linker, the builds) with apt forced to reinstall the build
/// packages must print nothing on stdout, and dpkg's output must show on stderr.
fn check_setup_output() -> Result<()> {
    let t0 = std::time::Instant::now();
    let out = Command::new(env::current_exe()?)
        .arg("build")
        .env("XTASK_APT_REINSTALL", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .context("running xtask build")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!(
            "xtask build (setup output check) failed: {}\n{stderr}",
            out.status
        );
    }
    if !out.stdout.is_empty() {
        bail!(
            "setup output reached stdout, where `cargo xtask run` writes the daemon's JSON lines:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let pkg = BUILD_PACKAGES[0];
    if !stderr.contains(&format!("Setting up {pkg}")) {
        bail!("the forced reinstall of {pkg} did not run (no dpkg output on stderr):\n{stderr}");
    }
    eprintln!(
        "xtask: setup output goes to stderr, stdout stays empty ({:.1} s)",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The tests run the daemon with everything it can do, Kubernetes Events included: the
/// image's features.
const TEST_FEATURES: &str = IMAGE_FEATURES;

/// The cargo tests: unit tests and the host integration tests against real OOM kills.
pub fn test(extra: &[OsString]) -> Result<()> {
    ensure_packages(BUILD_PACKAGES)?;
    ensure_packages(TEST_PACKAGES)?;
    let obj = build_ebpf()?;
    let root = root();
    // Before the tests' build: `xtask build` builds the binary without TEST_FEATURES, and
    // the tests must run the one built with them.
    check_setup_output()?;
    run(Command::new("cargo")
        .current_dir(&root)
        .args([
            "build",
            "--package",
            "observer",
            "--package",
            "tests",
            "--bins",
            "--features",
            TEST_FEATURES,
        ])
        .env("OOM_OBSERVER_EBPF_OBJ", &obj))?;
    // The container image and the manifest validator for tests/tests/deploy.rs.
    let archive = image::image()?;
    let kubernetes_validate = ensure_kubernetes_validate()?;
    let bin_dir = root.join("target/debug");
    let mut cargo_test = || {
        let mut cmd = Command::new("cargo");
        cmd.current_dir(&root)
            // The same features as the binaries, or cargo would rebuild them without.
            .args(["test", "--features", TEST_FEATURES])
            .env("OOMX_IMAGE_ARCHIVE", &archive)
            .env("OOMX_IMAGE_NAME", image::IMAGE_NAME)
            .env("OOMX_KUBERNETES_VALIDATE", &kubernetes_validate)
            .env("OOM_OBSERVER_EBPF_OBJ", &obj)
            .env("OOM_OBSERVER_BIN", bin_dir.join("oom-observer"))
            .env("OOMX_HOG_BIN", bin_dir.join("oomx-hog"));
        cmd
    };
    run(cargo_test().arg("--workspace").args(extra))?;
    if extra.is_empty() {
        compat_rows(&mut cargo_test)?;
    }
    Ok(())
}

/// The host tests `cargo xtask test` also runs against the later containerd releases
/// (everything above runs Debian 12's 1.6.20): against 2.1.9 the kubelet-shaped CRI tests
/// (OOMKilled read back through the CRI with and without oom-observer, idle and loaded; the
/// kill lines' attribution; the audit through the CRI), the race with its query socket, and
/// the spool across a containerd restart; against 1.7.24 the CRI's quick test; against both,
/// who killed each container (`deaths`, about 10 s each). 51 s together before `deaths`,
/// measured on a loaded 2-core machine. The full rows are `cargo xtask kubelet
/// --containerd <release>`.
const CI_CONTAINERD_ROWS: &[(&str, &str, Option<&str>)] = &[
    ("2.1.9", "kubelet", None),
    ("2.1.9", "race", None),
    (
        "2.1.9",
        "containerd",
        Some("containerd_down_during_the_kill_gets_task_oom_after_restart_exactly_once"),
    ),
    (
        "1.7.24",
        "kubelet",
        Some("every_cri_container_reads_oomkilled_and_the_observer_names_it"),
    ),
    ("2.1.9", "deaths", None),
    ("1.7.24", "deaths", None),
];

fn compat_rows(cargo_test: &mut dyn FnMut() -> Command) -> Result<()> {
    let cache = crate::command::cache_dir();
    let t0 = std::time::Instant::now();
    for (name, test, filter) in CI_CONTAINERD_ROWS {
        let release = containerd::release(name)?;
        let t1 = std::time::Instant::now();
        let mut cmd = cargo_test();
        // --workspace as above: the same features, so nothing is built again.
        cmd.args(["--workspace", "--test", test]).args(filter);
        for (k, v) in containerd::test_env(&cache, release)? {
            cmd.env(k, v);
        }
        run(&mut cmd)
            .with_context(|| format!("tests/tests/{test}.rs against containerd {name}"))?;
        eprintln!(
            "xtask: tests/tests/{test}.rs {} against containerd {name}: {:.0} s",
            filter.unwrap_or("(all)"),
            t1.elapsed().as_secs_f64()
        );
    }
    eprintln!(
        "xtask: the later containerd releases' host tests: {:.0} s",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
