//! The builds: the kernel programs (nightly, bpf target) and the `oom-observer` binary that
//! embeds them.

use std::{env, path::PathBuf, process::Command};

use anyhow::{bail, Result};

use crate::{
    command::{root, run},
    packages::{ensure_packages, BUILD_PACKAGES},
    toolchain::{ensure_bpf_linker, ensure_nightly},
};

/// The kernel programs' target.
pub const EBPF_TARGET: &str = "bpfel-unknown-none";
/// The features of the static musl builds: the image posts Kubernetes Events
/// (`run --k8s-events`, deploy/kubernetes/30-daemonset.yaml).
pub const IMAGE_FEATURES: &str = "observer/k8s-events";

/// Builds the kernel programs; returns the object's path.
pub fn build_ebpf() -> Result<PathBuf> {
    ensure_nightly()?;
    let linker = ensure_bpf_linker()?;
    let root = root();
    let target_dir = root.join("target/ebpf");
    let path = env::join_paths(
        std::iter::once(linker.parent().expect("bin dir").to_path_buf())
            .chain(env::split_paths(&env::var_os("PATH").unwrap_or_default())),
    )?;
    run(Command::new("cargo")
        .current_dir(root.join("observer-ebpf"))
        .args([
            "+nightly",
            "build",
            "--release",
            "--target",
            EBPF_TARGET,
            "-Z",
            "build-std=core",
        ])
        .env("CARGO_TARGET_DIR", &target_dir)
        // BTF for the maps and for aya's fentry/tp_btf loading.
        .env("RUSTFLAGS", "-C debuginfo=2 -C link-arg=--btf")
        .env("PATH", path)
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER"))?;
    let obj = target_dir.join(EBPF_TARGET).join("release/observer-ebpf");
    if !obj.exists() {
        bail!("the eBPF build produced no {}", obj.display());
    }
    Ok(obj)
}

/// Builds the daemon (embedding the kernel programs); returns the binary's path.
pub fn build(release: bool) -> Result<PathBuf> {
    ensure_packages(BUILD_PACKAGES)?;
    let obj = build_ebpf()?;
    let root = root();
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&root)
        .args(["build", "--package", "observer", "--bin", "oom-observer"]);
    if release {
        cmd.arg("--release");
    }
    run(cmd.env("OOM_OBSERVER_EBPF_OBJ", &obj))?;
    Ok(root
        .join("target")
        .join(if release { "release" } else { "debug" })
        .join("oom-observer"))
}
