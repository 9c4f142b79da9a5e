//! Kernels and qemu from Debian's archive: resolved at run time through apt, downloaded
//! once and cached by package version.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use anyhow::{bail, Context, Result};

use crate::command::{output, run};

/// A kernel image from a Debian package.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The package, e.g. `linux-image-6.1.0-56-cloud-amd64`.
    pub package: String,
    /// Its Debian version, e.g. `6.1.192-2`.
    pub version: String,
    /// The unpacked `boot/vmlinuz-*`.
    pub vmlinuz: PathBuf,
}

/// How old apt's package lists may be before the run refreshes them.
const LISTS_MAX_AGE: Duration = Duration::from_secs(6 * 3600);

/// Which apt to ask: the machine's own configuration, or a private one for a suite the
/// machine does not use (an older release's security suite), whose lists live in the cache
/// and which leaves the machine's apt configuration untouched.
pub struct Apt {
    opts: Vec<String>,
}

impl Apt {
    /// The machine's apt, as configured.
    pub fn system() -> Apt {
        Apt { opts: Vec::new() }
    }

    /// A private apt for some `deb` lines (signed by keys the machine already trusts), for
    /// the given architectures; its lists are refreshed like the system's.
    pub fn private(cache: &Path, name: &str, deb_lines: &str, archs: &[&str]) -> Result<Apt> {
        let dir = cache.join(format!("apt-{name}"));
        for d in ["lists/partial", "archives/partial", "parts"] {
            fs::create_dir_all(dir.join(d))?;
        }
        fs::write(dir.join("sources.list"), format!("{deb_lines}\n"))?;
        let p = |k: &str, v: &Path| format!("{k}={}", v.display());
        let mut opts = vec![
            p("Dir::Etc::SourceList", &dir.join("sources.list")),
            p("Dir::Etc::SourceParts", &dir.join("parts")),
            p("Dir::State::Lists", &dir.join("lists")),
            p("Dir::Cache", &dir),
        ];
        opts.extend(archs.iter().map(|a| format!("APT::Architectures::={a}")));
        let apt = Apt { opts };
        if !is_fresh(&dir.join("updated")) {
            eprintln!("vm: apt-get update (private lists: {name})");
            match run(apt.cmd("apt-get").args(["update", "-qq"])) {
                Ok(()) => fs::write(dir.join("updated"), b"")?,
                Err(e) => eprintln!("vm: apt-get update failed ({e:#}); using the cache"),
            }
        }
        Ok(apt)
    }

    /// `tool` (apt-get, apt-cache) with this configuration.
    pub fn cmd(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        for o in &self.opts {
            c.arg("-o").arg(o);
        }
        c
    }
}

fn is_fresh(stamp: &Path) -> bool {
    fs::metadata(stamp)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age < LISTS_MAX_AGE)
}

/// Makes sure dpkg knows `arm64` (to download arm64 kernels) and apt's lists are fresh
/// enough to resolve the newest kernels. A failed refresh (no network) is not fatal: cached
/// kernels can still serve.
pub fn prepare_apt(cache: &Path, foreign_arch: &str) -> Result<()> {
    let archs = output(Command::new("dpkg").arg("--print-foreign-architectures"))?;
    let mut stale = !archs.lines().any(|a| a.trim() == foreign_arch);
    if stale {
        eprintln!("vm: adding the {foreign_arch} architecture to dpkg (for its kernel packages)");
        run(Command::new("dpkg").args(["--add-architecture", foreign_arch]))?;
    }
    let stamp = cache.join("apt-updated");
    stale |= !is_fresh(&stamp);
    if stale {
        eprintln!("vm: apt-get update");
        match run(Command::new("apt-get").args(["update", "-qq"])) {
            Ok(()) => fs::write(&stamp, b"")?,
            Err(e) => eprintln!(
                "vm: apt-get update failed ({e:#}); using the lists and cache as they are"
            ),
        }
    }
    Ok(())
}

/// Installs Debian's qemu packages if a binary is missing.
///
/// From the release's backports suite when it has them: Debian 12's own qemu-system (7.2)
/// would replace the newer `qemu-utils` (from backports) that the project's machine image
/// ships, so a test run would silently remove the machine's `qemu-img`. The backports build
/// matches it. Without backports, the release's own packages are used.
pub fn ensure_qemu(cache: &Path, binaries: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = binaries
        .iter()
        .filter(|(bin, _)| which(bin).is_none())
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let install = |apt: &Apt, extra: &[&str]| {
        run(apt
            .cmd("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(extra)
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    let from_backports = os_codename().and_then(|c| {
        let mirror = "http://deb.debian.org/debian";
        let lines = format!(
            "deb {mirror} {c} main\ndeb {mirror} {c}-updates main\n\
             deb {mirror}-security {c}-security main\ndeb {mirror} {c}-backports main"
        );
        let host = output(Command::new("dpkg").arg("--print-architecture"))?;
        let apt = Apt::private(
            cache,
            &format!("{c}-with-backports"),
            &lines,
            &[host.trim()],
        )?;
        eprintln!("vm: installing {} from {c}-backports", missing.join(" "));
        install(&apt, &["-t", &format!("{c}-backports")])
    });
    if let Err(e) = from_backports {
        eprintln!(
            "vm: {e:#}; installing {} from the machine's apt sources",
            missing.join(" ")
        );
        install(&Apt::system(), &[])?;
    }
    for (bin, pkg) in binaries {
        if which(bin).is_none() {
            bail!("{bin} still missing after installing {pkg}");
        }
    }
    Ok(())
}

/// The Debian release's code name (`bookworm`), from /etc/os-release.
fn os_codename() -> Result<String> {
    let text = fs::read_to_string("/etc/os-release")?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
        .context("/etc/os-release names no VERSION_CODENAME")
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

/// Resolves a meta-package (e.g. `linux-image-6.12-cloud-arm64`) to the kernel image it
/// currently depends on, which must belong to `series` (e.g. `6.12`), and returns that
/// kernel, downloading and unpacking it unless this version is cached.
pub fn kernel(apt: &Apt, cache: &Path, meta: &str, arch: &str, series: &str) -> Result<Kernel> {
    let q = |name: &str| format!("{name}:{arch}");
    let resolved = resolve(apt, &q(meta), series);
    let (package, version) = match resolved {
        Ok(pv) => pv,
        Err(e) => {
            // Offline or the archive moved: the newest cached kernel of the series still serves.
            let cached = newest_cached(cache, series, arch)
                .with_context(|| format!("resolving {meta} for {arch}: {e:#}"))?;
            eprintln!("vm: {e:#}; using cached {}", cached.0);
            cached
        }
    };
    let dir = cache.join("kernels").join(format!("{package}_{version}"));
    let vmlinuz = dir.join("vmlinuz");
    if vmlinuz.is_file() {
        return Ok(Kernel {
            package,
            version,
            vmlinuz,
        });
    }
    eprintln!("vm: downloading {package} {version} ({arch})");
    let work = cache.join("download");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    let fetched = run(apt
        .cmd("apt-get")
        .current_dir(&work)
        // Running as root into a directory _apt cannot write: do not drop privileges.
        .args(["-qq", "-o", "APT::Sandbox::User=root", "download"])
        .arg(format!("{}={version}", q(&package))));
    if let Err(e) = fetched {
        // The archive lists a build it does not serve (yet): an older cached one of the
        // same series still proves the point, and the report names the one used.
        let (p, v) = newest_cached(cache, series, arch)
            .with_context(|| format!("downloading {package} {version}: {e:#}"))?;
        eprintln!("vm: downloading {package} {version} failed ({e:#}); using cached {p} {v}");
        let vmlinuz = cache
            .join("kernels")
            .join(format!("{p}_{v}"))
            .join("vmlinuz");
        return Ok(Kernel {
            package: p,
            version: v,
            vmlinuz,
        });
    }
    let deb = fs::read_dir(&work)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("apt-get download left no .deb")?;
    let unpacked = work.join("x");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    let boot = unpacked.join("boot");
    let image = fs::read_dir(&boot)
        .with_context(|| format!("{} has no boot/", deb.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .with_context(|| format!("no boot/vmlinuz-* in {}", deb.display()))?;
    let tmp = cache
        .join("kernels")
        .join(format!(".{package}_{version}.tmp"));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    fs::copy(&image, tmp.join("vmlinuz"))?;
    if let Some(cfg) = fs::read_dir(&boot)?.flatten().map(|e| e.path()).find(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("config-"))
    }) {
        fs::copy(cfg, tmp.join("config"))?;
    }
    fs::write(tmp.join("arch"), arch)?;
    // Renamed into place only when complete: an interrupted download is never used.
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&tmp, &dir)?;
    let _ = fs::remove_dir_all(&work);
    Ok(Kernel {
        package,
        version,
        vmlinuz,
    })
}

/// The kernel package a meta-package depends on, and its candidate version.
fn resolve(apt: &Apt, meta: &str, series: &str) -> Result<(String, String)> {
    let deps = output(apt.cmd("apt-cache").args(["depends", meta]))?;
    let package = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .map(|d| d.split(':').next().unwrap_or(d).trim().to_string())
        .find(|d| d.starts_with("linux-image-"))
        .with_context(|| format!("{meta} depends on no linux-image package"))?;
    if !package.starts_with(&format!("linux-image-{series}.")) {
        bail!("{meta} now points at {package}, not a Linux {series} kernel");
    }
    let arch = meta.split_once(':').map(|(_, a)| a).unwrap_or("");
    let show = output(apt.cmd("apt-cache").args([
        "show",
        "--no-all-versions",
        &format!("{package}:{arch}"),
    ]))?;
    let version = show
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .map(|v| v.trim().to_string())
        .with_context(|| format!("apt-cache show {package} gives no version"))?;
    Ok((package, version))
}

/// The newest cached kernel of a series, by directory name (`<package>_<version>`).
fn newest_cached(cache: &Path, series: &str, arch: &str) -> Result<(String, String)> {
    let mut found: Vec<(String, String)> = fs::read_dir(cache.join("kernels"))
        .context("no kernel cache")?
        .flatten()
        .filter(|e| e.path().join("vmlinuz").is_file())
        .filter(|e| fs::read_to_string(e.path().join("arch")).is_ok_and(|a| a.trim() == arch))
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let (p, v) = n.split_once('_')?;
            p.starts_with(&format!("linux-image-{series}."))
                .then(|| (p.to_string(), v.to_string()))
        })
        .collect();
    found.sort_by(|a, b| {
        let newer = Command::new("dpkg")
            .args(["--compare-versions", &a.1, "gt", &b.1])
            .status()
            .is_ok_and(|s| s.success());
        if newer {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Less
        }
    });
    found.pop().context("no cached kernel of this series")
}
