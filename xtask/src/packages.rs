//! The packages the build and the tests need: Debian's through apt, kubernetes-validate
//! through pip into a venv under the cache.

use std::{env, fs, path::PathBuf, process::Command};

use anyhow::{Context, Result};

use crate::command::{cache_dir, run};

/// Debian packages the build needs (containerd-client generates its gRPC code with protoc).
pub const BUILD_PACKAGES: &[&str] = &["protobuf-compiler"];
/// Debian packages the static musl builds need (the VM guests' and the image's): clang
/// compiles ring's C and assembly for x86_64 and aarch64 alike (see
/// `vm::build_guest_binaries`); protoc as for every build (a guest run may be the first build).
pub const CROSS_PACKAGES: &[&str] = &["clang", "protobuf-compiler"];
/// Debian packages the tests need: a real containerd with real runc and gVisor, busybox for
/// the containers' root filesystem, systemd-analyze for the unit file, Prometheus to scrape the
/// metrics and promtool for the alert rules, a Python venv for kubernetes-validate, openssl
/// for the DaemonSet test's service-account CA and qemu-user-static to run the image's arm64
/// binary.
pub const TEST_PACKAGES: &[&str] = &[
    "containerd",
    "runc",
    "runsc",
    "busybox-static",
    "systemd",
    "prometheus",
    "python3-venv",
    "openssl",
    "qemu-user-static",
];
/// Validates the manifests offline against this Kubernetes version's schema (PyPI).
pub const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

/// kubernetes-validate in a venv under the cache (installed with pip once); returns its path.
pub fn ensure_kubernetes_validate() -> Result<PathBuf> {
    let venv = cache_dir().join("venv");
    let bin = venv.join("bin/kubernetes-validate");
    let stamp = venv.join("oomx-installed");
    if bin.exists() && fs::read_to_string(&stamp).ok().as_deref() == Some(KUBERNETES_VALIDATE) {
        return Ok(bin);
    }
    eprintln!(
        "xtask: installing {KUBERNETES_VALIDATE} into {}",
        venv.display()
    );
    run(Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv))?;
    run(Command::new(venv.join("bin/pip")).args([
        "install",
        "-q",
        "--disable-pip-version-check",
        KUBERNETES_VALIDATE,
    ]))?;
    fs::write(&stamp, KUBERNETES_VALIDATE)?;
    Ok(bin)
}

/// Installs whichever of `pkgs` is missing, with apt. With `XTASK_APT_REINSTALL=1` it
/// reinstalls them all (xtask/tests/setup_output.rs: apt's and dpkg's output must not reach
/// stdout).
pub fn ensure_packages(pkgs: &[&str]) -> Result<()> {
    let reinstall = env::var_os("XTASK_APT_REINSTALL").is_some_and(|v| v == "1");
    let missing: Vec<&str> = pkgs
        .iter()
        .copied()
        .filter(|p| {
            reinstall
                || Command::new("dpkg-query")
                    .args(["-W", "-f=${Status}", p])
                    .output()
                    .map(|o| !String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                    .unwrap_or(true)
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    // Another apt on a shared machine may hold the lock for a while: wait for it.
    let lock = ["-o", "DPkg::Lock::Timeout=300"];
    run(Command::new("apt-get").args(lock).args(["update", "-qq"]))
        .context("apt-get update (installing packages needs root)")?;
    run(Command::new("apt-get")
        .args(lock)
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(reinstall.then_some("--reinstall"))
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}
