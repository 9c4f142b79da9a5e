//! The toolchain bootstrap. Every tool the build needs is bootstrapped here and cached, so a
//! fresh machine needs nothing but the Rust toolchains it comes with:
//! - nightly's `rust-src` (for `-Z build-std=core`),
//! - `bpf-linker`, built against the LLVM that ships inside the nightly toolchain (its
//!   major version must equal rustc's, and no distribution LLVM matches).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

use crate::command::{cache_dir, output, run};

/// bpf-linker release that builds with the machines' toolchains (see shared platform notes).
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Makes sure the nightly toolchain and its rust-src are there.
pub fn ensure_nightly() -> Result<()> {
    if Command::new("rustc")
        .args(["+nightly", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
    {
        let installed = output(Command::new("rustup").args([
            "component",
            "list",
            "--toolchain",
            "nightly",
            "--installed",
        ]))?;
        if !installed.lines().any(|l| l.starts_with("rust-src")) {
            eprintln!("xtask: adding rust-src to the nightly toolchain");
            run(Command::new("rustup").args([
                "component",
                "add",
                "rust-src",
                "--toolchain",
                "nightly",
            ]))?;
        }
        return Ok(());
    }
    eprintln!("xtask: installing the nightly toolchain with rust-src");
    run(Command::new("rustup").args([
        "toolchain",
        "install",
        "nightly",
        "--profile",
        "minimal",
        "--component",
        "rust-src",
    ]))
}

/// The LLVM major version of the nightly rustc and the path of its shared libLLVM.
fn nightly_llvm() -> Result<(u32, PathBuf)> {
    let v = output(Command::new("rustc").args(["+nightly", "--version", "--verbose"]))?;
    let major = v
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|s| s.split('.').next())
        .and_then(|s| s.trim().parse::<u32>().ok())
        .context("nightly rustc does not report its LLVM version")?;
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let lib = Path::new(sysroot.trim()).join("lib");
    let so = fs::read_dir(&lib)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let n = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            n.starts_with("libLLVM") && n.contains(".so")
        })
        .with_context(|| format!("no libLLVM shared library in {}", lib.display()))?;
    Ok((major, so))
}

/// Returns a bpf-linker built for the nightly's LLVM, building and caching it if needed.
pub fn ensure_bpf_linker() -> Result<PathBuf> {
    let (major, libllvm) = nightly_llvm()?;
    let cache = cache_dir();
    // bpf-linker links libLLVM through an rpath into this prefix: keep it where it is.
    let prefix = cache.join(format!("llvm-{major}"));
    fs::create_dir_all(prefix.join("lib"))?;
    // `libLLVM.so` for bpf-linker's build script; the library's own name (its soname) for
    // the dynamic loader when bpf-linker runs.
    let own_name = libllvm
        .file_name()
        .context("libLLVM path has no file name")?;
    for name in [std::ffi::OsStr::new("libLLVM.so"), own_name] {
        let link = prefix.join("lib").join(name);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&libllvm, &link)
            .with_context(|| format!("linking {} to {}", link.display(), libllvm.display()))?;
    }
    let root = cache.join(format!("bpf-linker-{BPF_LINKER_VERSION}-llvm{major}"));
    let bin = root.join("bin/bpf-linker");
    if Command::new(&bin)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
    {
        return Ok(bin);
    }
    eprintln!("xtask: building bpf-linker {BPF_LINKER_VERSION} against LLVM {major} (a few minutes, once)");
    run(Command::new("cargo")
        .args([
            "install",
            "--locked",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--no-default-features",
        ])
        .args(["--features", &format!("llvm-{major}")])
        .arg("--root")
        .arg(&root)
        .env("LLVM_PREFIX", &prefix))?;
    Ok(bin)
}
