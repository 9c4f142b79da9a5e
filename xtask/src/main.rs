//! `cargo xtask`: the project's build and test entry points.
//!
//! Every tool the build needs is bootstrapped here and cached, so a fresh machine needs
//! nothing but the Rust toolchains it comes with:
//! - nightly's `rust-src` (for `-Z build-std=core`),
//! - `bpf-linker`, built against the LLVM that ships inside the nightly toolchain (its
//!   major version must equal rustc's, and no distribution LLVM matches).

use std::{
    env,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

mod clippy_ebpf;
mod image;
mod kubelet;
mod vm;

/// bpf-linker release that builds with the machines' toolchains (see shared platform notes).
const BPF_LINKER_VERSION: &str = "0.13.0";
const EBPF_TARGET: &str = "bpfel-unknown-none";
/// Container OOM kills per cgroup v2 guest in `cargo xtask test` (CI time: see README).
const CI_VM_RACE_KILLS: usize = 10;

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the kernel programs (bootstrapping rust-src and bpf-linker if needed).
    BuildEbpf,
    /// Clippy over the kernel programs, for their bpf target (warnings fail it).
    ClippyEbpf,
    /// Build the kernel programs and the `oom-observer` binary that embeds them.
    Build {
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Build (release) and run `oom-observer`; arguments after `--` go to it (default: `run`).
    Run {
        /// Arguments for oom-observer.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Race our TaskOOM against containerd's own and TaskExit over N real container OOM
    /// kills (release build); writes docs/race-host.md, or with --vm runs it in the cgroup
    /// v2 guests (Linux 6.12, x86_64 and arm64) and writes docs/race-vm.md.
    Race {
        /// How many OOM kills (per guest with --vm).
        #[arg(long, default_value_t = 200)]
        kills: usize,
        /// In the cgroup v2 VM guests instead of on this host.
        #[arg(long)]
        vm: bool,
        /// With --vm: write the tables somewhere else than docs/race-vm.md.
        #[arg(long)]
        report: Option<PathBuf>,
        /// With --vm: boot nothing, write the tables again from the consoles of the last run
        /// (target/vm/*.race.console.log).
        #[arg(long)]
        rerender: bool,
        /// With --vm: which kernel messages reach the guests' serial consoles. Any but the
        /// default is not the results page's run: its page goes under target/vm/.
        #[arg(long, value_enum, default_value_t = vm::ConsoleLevel::Emergencies)]
        console: vm::ConsoleLevel,
        /// With --vm: one guest only (e.g. linux-6.12-x86_64); a partial run, whose page goes
        /// under target/vm/.
        #[arg(long)]
        only: Option<String>,
        /// With --vm: more kernel command line for the guests (e.g. `preempt=full`); a run
        /// whose page goes under target/vm/.
        #[arg(long)]
        append: Option<String>,
    },
    /// The unenforced-limit audit scenarios (runc) in the cgroup v2 VM guests; writes
    /// docs/audit-vm.md.
    AuditVm {
        /// Write the results somewhere else.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Benchmarks (release build): latency, ordering on a loaded node, OOM storm, cost,
    /// metrics, memory and start-up on a big node; writes docs/bench/.
    Bench {
        /// Run only the benchmarks whose test name contains this (e.g. `memory`).
        filter: Option<String>,
    },
    /// What the kubelet reads (release build): pods through containerd's CRI plugin
    /// OOM-killed with and without oom-observer, idle and loaded; writes docs/kubelet.md
    /// and docs/kubelet.json.
    Kubelet {
        /// OOM-killed pods per row on this host.
        #[arg(long, default_value_t = 200)]
        kills: usize,
        /// OOM-killed pods per row in each cgroup v2 guest (0: no guests).
        #[arg(long, default_value_t = 20)]
        vm_kills: usize,
        /// One guest only (e.g. linux-6.12-x86_64). A partial run (this, `--kills 0` or
        /// `--vm-kills 0`) writes its page under target/kubelet/, never docs/.
        #[arg(long)]
        only: Option<String>,
        /// Run nothing: write docs/kubelet.md again from the host and guest rows of the last
        /// run (target/kubelet/).
        #[arg(long)]
        rerender: bool,
    },
    /// Build everything and run every test: unit tests, the host integration tests against
    /// real OOM kills on this machine's kernel, then the VM matrix (`vm-test`).
    Test {
        /// Skip the VM matrix (a quick local loop; CI never sets it).
        #[arg(long)]
        no_vm: bool,
        /// Extra arguments for `cargo test` (for example a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// The container image: static musl builds for x86_64 and arm64, with Kubernetes Events
    /// (feature k8s-events), in one OCI archive (multi-arch index),
    /// target/oom-observer-image.oci.tar; offline, no registry.
    Image,
    /// The VM matrix: Debian kernels × architectures × hook strategies, real OOM kills in
    /// qemu guests; writes docs/vm-matrix.md.
    VmTest(vm::VmOptions),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::BuildEbpf => build_ebpf().map(|_| ()),
        Cmd::ClippyEbpf => clippy_ebpf::clippy_ebpf(),
        Cmd::Build { release } => build(release).map(|_| ()),
        Cmd::Run { args } => {
            let bin = build(true)?;
            let args = if args.is_empty() {
                vec![OsString::from("run")]
            } else {
                args
            };
            run_daemon(Command::new(&bin).args(&args))
        }
        Cmd::Test { no_vm, args } => {
            test(&args)?;
            if no_vm {
                return Ok(());
            }
            vm::vm_test(&vm::VmOptions::default())?;
            // The short containerd race in the cgroup v2 guests (the full one is
            // `cargo xtask race --vm`); its tables go under target/, not into docs/.
            vm::race_vm(
                CI_VM_RACE_KILLS,
                &root().join("target/vm/race-vm.md"),
                false,
                &vm::RaceRun::default(),
            )?;
            // The audit's runc scenarios in the same guests (about 90 s).
            vm::audit_vm(&root().join("target/vm/audit-vm.md"))?;
            // The kubelet rows in the same guests, CI_VM_KUBELET_PODS pods per row (the full
            // ones are `cargo xtask kubelet`).
            kubelet::quick_vm(CI_VM_KUBELET_PODS)
        }
        Cmd::VmTest(opts) => vm::vm_test(&opts),
        Cmd::Image => image::image().map(|_| ()),
        Cmd::Race {
            kills,
            vm: true,
            report,
            rerender,
            console,
            only,
            append,
        } => {
            let run = vm::RaceRun {
                console,
                only,
                append,
            };
            // Only the full default run writes the results page (issue 15 item 5).
            let report = report.unwrap_or_else(|| {
                if run.is_full() {
                    root().join("docs/race-vm.md")
                } else {
                    run.partial_report()
                }
            });
            vm::race_vm(kills, &report, rerender, &run)
        }
        Cmd::Race { kills, .. } => race(kills),
        Cmd::Bench { filter } => bench(filter.as_deref()),
        Cmd::Kubelet {
            kills,
            vm_kills,
            only,
            rerender,
        } => kubelet::kubelet(kills, vm_kills, only.as_deref(), rerender),
        Cmd::AuditVm { report } => {
            vm::audit_vm(&report.unwrap_or_else(|| root().join("docs/audit-vm.md")))
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cache_dir() -> PathBuf {
    if let Some(d) = env::var_os("OOM_OBSERVER_CACHE") {
        return PathBuf::from(d);
    }
    let base = env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("oom-observer")
}

/// Runs a setup, build or test step. Its stdout goes to our stderr (apt-get and dpkg print
/// there): xtask's own stdout is the daemon's, so `cargo xtask run` writes JSON lines only.
fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .stdout(std::io::stderr())
        .status()
        .with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Runs the daemon with our stdout (its JSON lines) and exits with its exit code (see the
/// README's table), or 128 + the signal that ended it.
fn run_daemon(cmd: &mut Command) -> Result<()> {
    use std::os::unix::process::ExitStatusExt;
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    std::process::exit(
        status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .unwrap_or(1),
    )
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Makes sure the nightly toolchain and its rust-src are there.
fn ensure_nightly() -> Result<()> {
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
fn ensure_bpf_linker() -> Result<PathBuf> {
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

/// Builds the kernel programs; returns the object's path.
fn build_ebpf() -> Result<PathBuf> {
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

/// Debian packages the build needs (containerd-client generates its gRPC code with protoc).
const BUILD_PACKAGES: &[&str] = &["protobuf-compiler"];
/// Debian packages the static musl builds need (the VM guests' and the image's): clang
/// compiles ring's C and assembly for x86_64 and aarch64 alike (see
/// `vm::build_guest_binaries`); protoc as for every build (a guest run may be the first build).
pub(crate) const CROSS_PACKAGES: &[&str] = &["clang", "protobuf-compiler"];
/// The features of the static musl builds: the image posts Kubernetes Events
/// (`run --k8s-events`, deploy/kubernetes/30-daemonset.yaml).
pub(crate) const IMAGE_FEATURES: &str = "observer/k8s-events";
/// Debian packages the tests need: a real containerd with real runc and gVisor, busybox for
/// the containers' root filesystem, systemd-analyze for the unit file, Prometheus to scrape the
/// metrics and promtool for the alert rules, a Python venv for kubernetes-validate, openssl
/// for the DaemonSet test's service-account CA and qemu-user-static to run the image's arm64
/// binary.
const TEST_PACKAGES: &[&str] = &[
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
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

/// kubernetes-validate in a venv under the cache (installed with pip once); returns its path.
fn ensure_kubernetes_validate() -> Result<PathBuf> {
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
pub(crate) fn ensure_packages(pkgs: &[&str]) -> Result<()> {
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

/// Builds the daemon (embedding the kernel programs); returns the binary's path.
fn build(release: bool) -> Result<PathBuf> {
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

fn test(extra: &[OsString]) -> Result<()> {
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
    run(Command::new("cargo")
        .current_dir(&root)
        // The same features as the binaries, or cargo would rebuild them without.
        .args(["test", "--workspace", "--features", TEST_FEATURES])
        .args(extra)
        .env("OOMX_IMAGE_ARCHIVE", &archive)
        .env("OOMX_IMAGE_NAME", image::IMAGE_NAME)
        .env("OOMX_KUBERNETES_VALIDATE", &kubernetes_validate)
        .env("OOM_OBSERVER_EBPF_OBJ", &obj)
        .env("OOM_OBSERVER_BIN", bin_dir.join("oom-observer"))
        .env("OOMX_HOG_BIN", bin_dir.join("oomx-hog")))
}

/// Runs one integration test against release builds, with extra environment.
pub(crate) fn release_test(test: &str, env: &[(&str, &std::ffi::OsStr)]) -> Result<()> {
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

/// Pods per kubelet row in each guest in `cargo xtask test` (about 2 minutes).
const CI_VM_KUBELET_PODS: usize = 2;

fn race(kills: usize) -> Result<()> {
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

fn bench(filter: Option<&str>) -> Result<()> {
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
