//! `cargo xtask vm-test`: the VM matrix. Debian's own kernels (from its package archive,
//! cached) boot under qemu TCG with a generated initramfs holding the static guest binaries
//! (`oomx-vm-guest` as `/init`, `oom-observer`, `oomx-hog`); each guest runs real OOM kills
//! for every hook strategy and prints verdicts on its console; this module reads them, checks
//! that every guest ran the very eBPF object built here, and writes `docs/vm-matrix.md`.

mod cpio;
mod deaths;
pub mod debian;
mod forecast;
mod qemu;
mod race;
mod report;
mod systemd;
pub mod systemd_rows;
mod userland;

use std::{
    collections::VecDeque,
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

pub(crate) use self::qemu::Arch;
use self::report::{GuestResult, Summary};
use crate::{
    build::build_ebpf,
    command::{cache_dir, output, root, run},
};

pub use self::deaths::deaths_vm;
pub use self::forecast::forecast_vm;
pub use self::qemu::ConsoleLevel;
pub use self::race::{audit_vm, kubelet_vm, race_vm, RaceRun};
pub use self::systemd::{systemd_guest, SystemdGuestOptions};

/// One row group of the matrix: a kernel series on an architecture.
struct GuestDef {
    name: &'static str,
    arch: Arch,
    /// The Debian meta-package whose dependency is the newest kernel of the series.
    meta: &'static str,
    series: &'static str,
    /// Where the package comes from: `None` for the machine's own apt sources, else an apt
    /// source line for a private apt (a suite this machine's release does not use).
    suite: Option<(&'static str, &'static str)>,
    /// Strategies this kernel is known not to support: they must be refused by `check`, with
    /// its reason, and are reported as n/a. Every other strategy must pass.
    unsupported: &'static [&'static str],
}

/// Debian 11 (its last point release), signed by a key Debian 12 already trusts: Linux 5.10,
/// whose `mark_victim` passes only a pid, so the victim's task comes from `signal_generate`,
/// and whose arm64 build has no BPF trampolines (no fentry: kprobe carries the load). Its
/// security suite has newer 5.10 builds, but their arm64 packages cannot be fetched here.
const BULLSEYE: (&str, &str) = ("bullseye", "deb http://deb.debian.org/debian bullseye main");

const MATRIX: [GuestDef; 5] = [
    GuestDef {
        name: "linux-6.1-x86_64",
        arch: Arch::X86_64,
        meta: "linux-image-cloud-amd64",
        series: "6.1",
        suite: None,
        unsupported: &[],
    },
    GuestDef {
        name: "linux-6.12-x86_64",
        arch: Arch::X86_64,
        meta: "linux-image-6.12-cloud-amd64",
        series: "6.12",
        suite: None,
        unsupported: &[],
    },
    GuestDef {
        name: "linux-6.12-arm64",
        arch: Arch::Aarch64,
        meta: "linux-image-6.12-cloud-arm64",
        series: "6.12",
        suite: None,
        unsupported: &[],
    },
    GuestDef {
        name: "linux-5.10-x86_64",
        arch: Arch::X86_64,
        meta: "linux-image-cloud-amd64",
        series: "5.10",
        suite: Some(BULLSEYE),
        unsupported: &[],
    },
    GuestDef {
        name: "linux-5.10-arm64",
        arch: Arch::Aarch64,
        meta: "linux-image-cloud-arm64",
        series: "5.10",
        suite: Some(BULLSEYE),
        unsupported: &["fentry"],
    },
];

/// Guest RAM: small, so the global scenario's OOM comes quickly.
const GUEST_MIB: u32 = 256;
/// Emulated CPUs per guest: two, so the OOM killer, its victims and the observer really run
/// concurrently, as on a node.
const GUEST_CPUS: u32 = 2;
/// A guest that has not powered off by then is hung: kill it and fail. A guest takes about
/// 30 s; with two at a time even a matrix of hung guests ends well inside CI's 20 minutes.
const GUEST_LIMIT: Duration = Duration::from_secs(4 * 60);
/// Guests at once on a 2-core machine (measured there: the five guests take about two
/// minutes this way).
const PARALLEL: usize = 2;

/// Options of `cargo xtask vm-test`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct VmOptions {
    /// Run only the guests whose name contains this (e.g. `arm64`, `6.1-`).
    #[arg(long)]
    pub only: Option<String>,
    /// Write the results page somewhere else than docs/vm-matrix.md (a run with --only
    /// writes target/vm/vm-matrix-only-<text>.md unless this is given).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Wall-clock limit per guest in seconds (default 240).
    #[arg(long, value_name = "SECS")]
    pub guest_timeout: Option<u64>,
    /// Extra kernel command line for every guest (e.g. `loglevel=7` to see the kernel's
    /// messages on the console).
    #[arg(long, value_name = "ARGS")]
    pub append: Option<String>,
}

/// Where a run's results page goes unless `--report` says: the full matrix writes
/// `docs/vm-matrix.md`; a partial run (`--only`) writes under `target/vm/`, so it can never
/// overwrite the full matrix's page with a few guests' "all rows pass".
fn default_report(root: &Path, only: Option<&str>) -> PathBuf {
    match only {
        None => root.join("docs/vm-matrix.md"),
        Some(o) => {
            let tag: String = o
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            root.join(format!("target/vm/vm-matrix-only-{tag}.md"))
        }
    }
}

pub fn vm_test(opts: &VmOptions) -> Result<()> {
    let t0 = Instant::now();
    let root = root();
    let cache = cache_dir().join("vm");
    fs::create_dir_all(&cache)?;
    let guests: Vec<&GuestDef> = MATRIX
        .iter()
        .filter(|g| {
            opts.only
                .as_ref()
                .is_none_or(|o| g.name.contains(o.as_str()))
        })
        .collect();
    if guests.is_empty() {
        bail!("no guest matches --only {:?}", opts.only);
    }
    let mut archs: Vec<Arch> = guests.iter().map(|g| g.arch).collect();
    archs.sort_by_key(|a| a.name());
    archs.dedup();

    // Tools and kernels from Debian's archive.
    debian::ensure_qemu(&cache, &archs.iter().map(|a| a.qemu()).collect::<Vec<_>>())?;
    debian::prepare_apt(&cache, Arch::Aarch64.deb())?;
    let mut downloaded = false;
    let mut kernels = Vec::new();
    for g in &guests {
        let apt = match g.suite {
            None => debian::Apt::system(),
            Some((name, line)) => debian::Apt::private(
                &cache,
                name,
                line,
                &[Arch::X86_64.deb(), Arch::Aarch64.deb()],
            )?,
        };
        let before = cache
            .join("kernels")
            .read_dir()
            .map(|d| d.count())
            .unwrap_or(0);
        kernels.push(debian::kernel(
            &apt,
            &cache,
            g.meta,
            g.arch.deb(),
            g.series,
        )?);
        downloaded |= cache
            .join("kernels")
            .read_dir()
            .map(|d| d.count())
            .unwrap_or(0)
            != before;
    }

    // One eBPF object for every guest: built once, hashed, embedded in each architecture's binary.
    let obj = build_ebpf()?;
    let obj_bytes = fs::read(&obj)?;
    let sha = hex(&Sha256::digest(&obj_bytes));
    let work = root.join("target/vm");
    fs::create_dir_all(&work)?;
    let mut initrds = Vec::new();
    for (a, bins) in archs.iter().zip(build_guests(&archs, &obj)?) {
        let img = work.join(format!("initramfs-{}.cpio", a.name()));
        write_initramfs(&bins, &userland::Files::new(), &img)?;
        initrds.push((*a, img));
    }

    if opts.only.is_none() {
        prune_kernels(&cache, &kernels);
    }

    // Boot the guests, PARALLEL at a time, arm64 first: emulating it is the slowest, and
    // starting the long ones first ends the matrix sooner.
    let mut order: Vec<usize> = (0..guests.len()).collect();
    order.sort_by_key(|&i| guests[i].arch != Arch::Aarch64);
    let queue: Mutex<VecDeque<usize>> = Mutex::new(order.into_iter().collect());
    let results: Mutex<Vec<Option<GuestResult>>> =
        Mutex::new((0..guests.len()).map(|_| None).collect());
    thread::scope(|s| {
        for _ in 0..PARALLEL.min(guests.len()) {
            s.spawn(|| loop {
                let Some(i) = queue.lock().map(|mut q| q.pop_front()).unwrap_or(None) else {
                    return;
                };
                let g = guests[i];
                let initrd = &initrds.iter().find(|(a, _)| *a == g.arch).expect("built").1;
                let r = run_guest(g, &kernels[i], initrd, &work, &sha, opts);
                if let Ok(mut rs) = results.lock() {
                    rs[i] = Some(r);
                }
            });
        }
    });
    let results: Vec<GuestResult> = results
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a guest runner panicked"))?
        .into_iter()
        .flatten()
        .collect();

    let wall = t0.elapsed();
    let summary = Summary {
        date: output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?
            .trim()
            .to_string(),
        host_sha256: &sha,
        object_bytes: obj_bytes.len(),
        qemu: output(Command::new(Arch::X86_64.qemu().0).arg("--version"))
            .map(|v| v.lines().next().unwrap_or_default().to_string())
            .unwrap_or_default(),
        wall,
        downloads: if downloaded {
            "kernels downloaded in this run".into()
        } else {
            "kernels from the cache".into()
        },
    };
    let mut page = report::markdown(&results, &summary);
    let out = opts
        .report
        .clone()
        .unwrap_or_else(|| default_report(&root, opts.only.as_deref()));
    if let Some(only) = &opts.only {
        // A partial run says so on its own page, never passes for the matrix.
        page = format!(
            "> **Partial run** (`--only {only}`): {} of {} guests. The full matrix is \
             `docs/vm-matrix.md`.\n\n{page}",
            results.len(),
            MATRIX.len()
        );
    }
    if let Some(d) = out.parent() {
        fs::create_dir_all(d)?;
    }
    fs::write(&out, &page)?;

    eprintln!(
        "\nvm matrix ({:.0} s), written to {}:",
        wall.as_secs_f64(),
        out.display()
    );
    let mut failed = 0;
    for r in &results {
        if r.problems.is_empty() {
            eprintln!("  PASS {} ({} {})", r.name, r.package, r.version);
        } else {
            failed += 1;
            eprintln!("  FAIL {} ({} {}):", r.name, r.package, r.version);
            for p in &r.problems {
                for l in p.lines() {
                    eprintln!("       {l}");
                }
            }
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} guests failed (details above and in {})",
            results.len(),
            out.display()
        );
    }
    Ok(())
}

fn run_guest(
    g: &GuestDef,
    k: &debian::Kernel,
    initrd: &Path,
    work: &Path,
    sha: &str,
    opts: &VmOptions,
) -> GuestResult {
    eprintln!("vm: {} booting {} {}", g.name, k.package, k.version);
    let log = work.join(format!("{}.console.log", g.name));
    let mut r = GuestResult {
        name: g.name.to_string(),
        arch: g.arch.name(),
        package: k.package.clone(),
        version: k.version.clone(),
        console: Default::default(),
        elapsed: Duration::ZERO,
        problems: Vec::new(),
    };
    let spec = qemu::BootSpec {
        arch: g.arch,
        vmlinuz: &k.vmlinuz,
        initrd,
        memory_mib: GUEST_MIB,
        cpus: GUEST_CPUS,
        extra_append: opts.append.as_deref(),
        console_level: qemu::ConsoleLevel::Emergencies,
        log: &log,
        limit: opts
            .guest_timeout
            .map(Duration::from_secs)
            .unwrap_or(GUEST_LIMIT),
    };
    match qemu::boot(&spec) {
        Ok(b) => {
            r.console = report::parse(&b.console);
            r.elapsed = b.elapsed;
            let tail: Vec<&str> = b.console.lines().rev().take(25).collect();
            let tail = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
            let machine = match g.arch {
                Arch::X86_64 => "x86_64",
                Arch::Aarch64 => "aarch64",
            };
            r.problems = report::judge(
                &r.console,
                &report::Expect {
                    machine,
                    sha256: sha,
                    unsupported: g.unsupported,
                },
                b.timed_out,
                &b.status,
                &tail,
            );
            eprintln!(
                "vm: {} {} in {:.0} s (console: {})",
                g.name,
                if r.problems.is_empty() {
                    "passed"
                } else {
                    "FAILED"
                },
                b.elapsed.as_secs_f64(),
                b.log.display()
            );
        }
        Err(e) => r.problems.push(format!("could not boot: {e:#}")),
    }
    r
}

/// The static binaries a guest needs, cross-built for its architecture.
pub(crate) struct GuestBins {
    pub init: PathBuf,
    pub observer: PathBuf,
    pub hog: PathBuf,
}

/// Cross-builds the guests' static musl binaries for `arch` (release, each embedding `obj`,
/// with [`crate::build::IMAGE_FEATURES`]). `cargo xtask image` takes its `oom-observer` from here
/// too: one build, one cache, and the VM matrix boots the very binary the image ships.
pub(crate) fn build_guest_binaries(arch: Arch, obj: &Path) -> Result<GuestBins> {
    let mut bins = build_guests(&[arch], obj)?;
    bins.pop()
        .ok_or_else(|| anyhow::anyhow!("no {} build", arch.rust_target()))
}

/// [`build_guest_binaries`] for every architecture of `archs`, with one cargo: its jobs
/// keep both cores busy where one target's build would wait on a single large crate
/// (`observer`, `tests`) compiling alone. The same flags per target as a build of that
/// target alone, so either finds the other's build up to date.
pub(crate) fn build_guests(archs: &[Arch], obj: &Path) -> Result<Vec<GuestBins>> {
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    for a in archs {
        let target = a.rust_target();
        if !installed.lines().any(|l| l.trim() == target) {
            eprintln!("vm: rustup target add {target}");
            run(Command::new("rustup").args(["target", "add", target]))?;
        }
    }
    crate::packages::ensure_packages(crate::packages::CROSS_PACKAGES)?;
    let root = root();
    // Static musl binaries linked by the toolchain's own rust-lld. The one C dependency,
    // ring (kube-rs's TLS, for the k8s-events feature), is compiled by Debian's clang for
    // both architectures: ring supports clang without a target sysroot on musl
    // (`-nostdlibinc`), so one compiler serves both targets, with no cross gcc or musl
    // toolchain (cc-rs's default, `<arch>-linux-musl-gcc`, is not installed).
    // Every build embeds the same object file (OOM_OBSERVER_EBPF_OBJ).
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&root)
        .args(["build", "--release"])
        .args(["--package", "observer", "--package", "tests", "--bins"])
        .args(["--features", crate::build::IMAGE_FEATURES])
        .env("OOM_OBSERVER_EBPF_OBJ", obj);
    let mut targets: Vec<&str> = archs.iter().map(|a| a.rust_target()).collect();
    targets.dedup();
    for target in targets {
        cmd.args(["--target", target])
            .args(["--config", &format!("target.{target}.linker=\"rust-lld\"")])
            .env(format!("CC_{}", target.replace('-', "_")), "clang");
    }
    run(&mut cmd)?;
    let mut all = Vec::new();
    for a in archs {
        let target = a.rust_target();
        let dir = root.join("target").join(target).join("release");
        let bins = GuestBins {
            init: dir.join("oomx-vm-guest"),
            observer: dir.join("oom-observer"),
            hog: dir.join("oomx-hog"),
        };
        for b in [&bins.init, &bins.observer, &bins.hog] {
            if !b.is_file() {
                bail!("the {target} build produced no {}", b.display());
            }
        }
        all.push(bins);
    }
    Ok(all)
}

/// The initramfs: the guest binaries, plus `extra` files (guest path → host file; their
/// parent directories are added).
fn write_initramfs(bins: &GuestBins, extra: &userland::Files, out: &Path) -> Result<()> {
    let mut c = cpio::Cpio::default();
    let mut dirs: std::collections::BTreeSet<String> = ["dev", "proc", "sys", "tmp", "bin"]
        .into_iter()
        .map(String::from)
        .collect();
    for guest in extra.keys() {
        let mut p = Path::new(guest).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.to_string_lossy().into_owned());
            p = d.parent();
        }
    }
    // Sorted, so every parent comes before its children.
    for d in &dirs {
        c.dir(d);
    }
    // The kernel opens /dev/console for init's stdio before anything is mounted.
    c.char_dev("dev/console", 5, 1);
    let read = |p: &Path| fs::read(p).with_context(|| format!("reading {}", p.display()));
    c.file("init", 0o755, &read(&bins.init)?);
    c.file("bin/oom-observer", 0o755, &read(&bins.observer)?);
    c.file("bin/oomx-hog", 0o755, &read(&bins.hog)?);
    for (guest, host) in extra {
        c.file(guest, 0o755, &read(host)?);
    }
    fs::write(out, c.finish()).with_context(|| format!("writing {}", out.display()))
}

/// Removes cached kernels the matrix no longer uses (older builds of each series).
fn prune_kernels(cache: &Path, used: &[debian::Kernel]) {
    let Ok(dir) = cache.join("kernels").read_dir() else {
        return;
    };
    for e in dir.flatten() {
        let p = e.path();
        if !used.iter().any(|k| k.vmlinuz.parent() == Some(p.as_path())) {
            eprintln!("vm: removing unused cached kernel {}", p.display());
            let _ = fs::remove_dir_all(&p);
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_full_run_writes_the_docs_page() {
        let root = Path::new("/r");
        assert_eq!(
            default_report(root, None),
            Path::new("/r/docs/vm-matrix.md")
        );
        let partial = default_report(root, Some("linux-6.12-arm64"));
        assert_eq!(
            partial,
            Path::new("/r/target/vm/vm-matrix-only-linux-6.12-arm64.md")
        );
        // Whatever the filter's text, the page stays under target/vm.
        let odd = default_report(root, Some("../../docs/x y"));
        assert!(odd.starts_with("/r/target/vm/"), "{}", odd.display());
        assert_eq!(odd.parent(), Some(Path::new("/r/target/vm")));
    }
}
