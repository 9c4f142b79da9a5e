//! `cargo xtask clippy-ebpf`: clippy over the kernel programs, for the target they are built
//! for. `observer-ebpf` is its own workspace (nightly, `bpfel-unknown-none`, build-std), so
//! `cargo clippy --workspace` never sees it; its lints are in its own Cargo.toml.

use std::{env, process::Command};

use anyhow::{Context, Result};

use crate::{
    build::EBPF_TARGET,
    command::{root, run},
    toolchain::{ensure_bpf_linker, ensure_nightly},
};

/// Runs clippy on `observer-ebpf` with the eBPF build's toolchain, target and flags;
/// any warning fails it.
pub fn clippy_ebpf() -> Result<()> {
    ensure_nightly()?;
    ensure_clippy()?;
    // Not needed to check, but the same PATH and flags as the build keep their shared
    // dependencies (core, aya-ebpf) from being rebuilt between the two.
    let linker = ensure_bpf_linker()?;
    let root = root();
    let bin_dir = linker
        .parent()
        .context("bpf-linker has no parent directory")?
        .to_path_buf();
    let path = env::join_paths(
        std::iter::once(bin_dir).chain(env::split_paths(&env::var_os("PATH").unwrap_or_default())),
    )?;
    run(Command::new("cargo")
        .current_dir(root.join("observer-ebpf"))
        .args([
            "+nightly",
            "clippy",
            "--release",
            "--target",
            EBPF_TARGET,
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ])
        .env("CARGO_TARGET_DIR", root.join("target/ebpf"))
        .env("RUSTFLAGS", "-C debuginfo=2 -C link-arg=--btf")
        .env("PATH", path)
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER"))
}

/// Adds clippy to the nightly toolchain when its minimal profile left it out.
fn ensure_clippy() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output()
        .context("running rustup")?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.starts_with("clippy"))
    {
        return Ok(());
    }
    eprintln!("xtask: adding clippy to the nightly toolchain");
    run(Command::new("rustup").args(["component", "add", "clippy", "--toolchain", "nightly"]))
}
