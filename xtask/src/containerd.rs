//! containerd's version as a dimension of the tests: the releases are pinned here, once,
//! each from its Debian suite. 1.6.20 is Debian 12's own (the machine's apt installs it);
//! the later ones come from trixie and sid through a private apt whose sources, lists and
//! cache live under the project's cache, so the machine's apt sources never see those
//! suites (an upgrade would replace the system's packages). Their `.deb`s are unpacked with
//! `dpkg-deb -x` into the cache; the tests take the unpacked `usr/bin` (OOMX_CONTAINERD_DIR)
//! and Debian 12's runc 1.1.5, which serves every version (sid's runc needs a newer glibc).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::{command::run, vm::debian::Apt};

/// One containerd release the tests run against.
#[derive(Debug, Clone, Copy)]
pub struct Release {
    /// What the tests and the results pages call it (OOMX_CONTAINERD), e.g. `2.1.9`.
    pub name: &'static str,
    /// The Debian suite it comes from.
    pub suite: &'static str,
    /// The exact Debian version, or `None` for the machine's own (Debian 12's), which its
    /// apt installs as one of the test packages and the guests take as apt's candidate.
    pub debian: Option<&'static str>,
}

/// The releases, oldest first: the first is the default (the machine's own).
pub const RELEASES: &[Release] = &[
    Release {
        name: "1.6.20",
        suite: "bookworm",
        debian: None,
    },
    Release {
        name: "1.7.24",
        suite: "trixie",
        debian: Some("1.7.24~ds1-6+deb13u1"),
    },
    Release {
        name: "2.1.9",
        suite: "sid",
        debian: Some("2.1.9+ds1-5"),
    },
];

/// The architectures the later releases are fetched for (the host's and the guests').
const ARCHS: &[&str] = &["amd64", "arm64"];

/// The Debian mirror of the private sources (the machine's own, as Debian configures it).
const MIRROR: &str = "http://deb.debian.org/debian";

/// The release called `name`.
pub fn release(name: &str) -> Result<&'static Release> {
    RELEASES.iter().find(|r| r.name == name).with_context(|| {
        let known: Vec<&str> = RELEASES.iter().map(|r| r.name).collect();
        format!("no containerd release {name} (known: {})", known.join(", "))
    })
}

/// The default release's name (Debian 12's containerd).
pub fn default_name() -> &'static str {
    RELEASES[0].name
}

/// The host's Debian architecture.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    }
}

/// The unpacked package of `release` for Debian architecture `arch`: a root holding
/// `usr/bin/containerd`, `ctr` and `containerd-shim-runc-v2`; downloaded and unpacked once
/// into the cache. `None` for the machine's own release (its binaries are the system's).
pub fn unpacked(cache: &Path, release: &Release, arch: &str) -> Result<Option<PathBuf>> {
    let Some(debian) = release.debian else {
        return Ok(None);
    };
    let dir = cache
        .join("containerd")
        .join(format!("{}_{arch}", release.name));
    let root = dir.join("root");
    let stamp = dir.join("debian-version");
    if fs::read_to_string(&stamp).ok().as_deref() == Some(debian) {
        return Ok(Some(root));
    }
    eprintln!(
        "xtask: fetching containerd {debian} ({arch}) from Debian {}",
        release.suite
    );
    let _ = fs::remove_dir_all(&dir);
    let debs = dir.join("debs");
    fs::create_dir_all(&debs)?;
    let apt = private_apt(cache)?;
    run(apt
        .cmd("apt-get")
        .current_dir(&debs)
        // Running as root into a directory _apt cannot write: do not drop privileges.
        .args(["-qq", "-o", "APT::Sandbox::User=root", "download"])
        .arg(format!("containerd:{arch}={debian}")))
    .with_context(|| {
        // sid moves on: the archive serves only the versions its suites list today.
        format!(
            "downloading containerd {debian} ({arch}) from {}: if the suite no longer \
             lists it, pin the release it carries now in RELEASES (xtask/src/containerd.rs)",
            release.suite
        )
    })?;
    let deb = fs::read_dir(&debs)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("apt-get download left no .deb")?;
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    for bin in ["containerd", "ctr", "containerd-shim-runc-v2"] {
        if !root.join("usr/bin").join(bin).is_file() {
            bail!("{} has no usr/bin/{bin}", deb.display());
        }
    }
    let _ = fs::remove_file(&deb);
    // Written last: an interrupted download is fetched again.
    fs::write(&stamp, debian)?;
    Ok(Some(root))
}

/// The directory of `release`'s binaries on this host (OOMX_CONTAINERD_DIR for the tests),
/// fetched if need be; `None` for the machine's own release.
pub fn host_bin_dir(cache: &Path, release: &Release) -> Result<Option<PathBuf>> {
    Ok(unpacked(cache, release, host_arch())?.map(|root| root.join("usr/bin")))
}

/// Fetches every later release for every architecture (a run that will use them all).
pub fn fetch_all(cache: &Path) -> Result<()> {
    for r in RELEASES {
        for arch in ARCHS {
            unpacked(cache, r, arch)?;
        }
    }
    Ok(())
}

/// The environment that makes the tests run against `release` on this host.
pub fn test_env(cache: &Path, release: &Release) -> Result<Vec<(&'static str, PathBuf)>> {
    let mut env = vec![("OOMX_CONTAINERD", PathBuf::from(release.name))];
    if let Some(dir) = host_bin_dir(cache, release)? {
        env.push(("OOMX_CONTAINERD_DIR", dir));
    }
    Ok(env)
}

/// A private apt for trixie and sid (amd64 and arm64), its lists refreshed as the guests'
/// are.
fn private_apt(cache: &Path) -> Result<Apt> {
    let suites: Vec<&str> = RELEASES
        .iter()
        .filter(|r| r.debian.is_some())
        .map(|r| r.suite)
        .collect();
    let lines: String = suites
        .iter()
        .map(|s| {
            format!(
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {MIRROR} {s} main\n"
            )
        })
        .collect();
    Apt::private(
        &cache.join("containerd"),
        &suites.join("-"),
        lines.trim_end(),
        ARCHS,
    )
}
