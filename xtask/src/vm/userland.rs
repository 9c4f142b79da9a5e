//! Debian's containerd, runc and busybox for a guest architecture: downloaded with
//! `apt-get download pkg:arch` (cached by version), unpacked with `dpkg-deb -x`, and turned
//! into the list of files the race guest's initramfs needs: the binaries, every shared
//! library they need (followed through `readelf -d`), and the architecture's dynamic loader
//! at the path the binaries name as their interpreter.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::command::{output, run};

/// The packages: the container runtime stack and the C libraries its binaries link.
const PACKAGES: &[&str] = &[
    "containerd",
    "runc",
    "busybox-static",
    "libc6",
    "libseccomp2",
];

/// Binaries (path inside the packages) and where the guest wants them.
const BINARIES: &[(&str, &str)] = &[
    ("usr/bin/containerd", "bin/containerd"),
    (
        "usr/bin/containerd-shim-runc-v2",
        "bin/containerd-shim-runc-v2",
    ),
    ("usr/bin/ctr", "bin/ctr"),
    ("usr/sbin/runc", "bin/runc"),
    ("bin/busybox", "bin/busybox"),
];

/// Guest path → host file.
pub type Files = BTreeMap<String, PathBuf>;

/// Downloads (unless cached) and unpacks the packages for Debian architecture `arch`
/// (`amd64`, `arm64`), returning the files for the initramfs. With a later containerd
/// `release`, its `containerd`, `ctr` and shim replace Debian 12's (they link only libc,
/// whose Debian 12 build serves them); runc stays Debian 12's.
pub fn containerd_stack(
    cache: &Path,
    arch: &str,
    release: Option<&crate::containerd::Release>,
) -> Result<Files> {
    let versions: Vec<String> = PACKAGES
        .iter()
        .map(|p| candidate(&format!("{p}:{arch}")))
        .collect::<Result<_>>()?;
    let key: String = PACKAGES
        .iter()
        .zip(&versions)
        .map(|(p, v)| format!("{p}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let dir = cache.join("userland").join(arch);
    let root = dir.join("root");
    if fs::read_to_string(dir.join("versions")).ok().as_deref() != Some(key.as_str()) {
        eprintln!("vm: downloading {key} ({arch})");
        let _ = fs::remove_dir_all(&dir);
        let debs = dir.join("debs");
        fs::create_dir_all(&debs)?;
        let mut cmd = Command::new("apt-get");
        cmd.current_dir(&debs)
            .args(["-qq", "-o", "APT::Sandbox::User=root", "download"]);
        for (p, v) in PACKAGES.iter().zip(&versions) {
            cmd.arg(format!("{p}:{arch}={v}"));
        }
        run(&mut cmd)?;
        for e in fs::read_dir(&debs)?.flatten() {
            run(Command::new("dpkg-deb").arg("-x").arg(e.path()).arg(&root))?;
        }
        // Written last: an interrupted download is fetched again.
        fs::write(dir.join("versions"), &key)?;
    }
    let mut files = Files::new();
    for (from, to) in BINARIES {
        let p = root.join(from);
        if !p.is_file() {
            bail!("{} is not in the unpacked packages", p.display());
        }
        files.insert(to.to_string(), p.clone());
        add_libraries(&root, &p, &mut files)?;
    }
    // The project cache's root: the vm cache is its `vm/` folder.
    let project_cache = cache.parent().unwrap_or(cache);
    if let Some(later) = release
        .map(|r| crate::containerd::unpacked(project_cache, r, arch))
        .transpose()?
        .flatten()
    {
        for (from, to) in BINARIES
            .iter()
            .filter(|(f, _)| f.contains("containerd") || *f == "usr/bin/ctr")
        {
            let p = later.join(from);
            if !p.is_file() {
                bail!("{} is not in the unpacked package", p.display());
            }
            files.insert(to.to_string(), p.clone());
            add_libraries(&root, &p, &mut files)?;
        }
    }
    Ok(files)
}

/// The candidate version apt would download.
pub(super) fn candidate(pkg: &str) -> Result<String> {
    let show = output(Command::new("apt-cache").args(["show", "--no-all-versions", pkg]))?;
    show.lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .map(|v| v.trim().to_string())
        .with_context(|| format!("apt-cache show {pkg} gives no version"))
}

/// Adds the interpreter and every NEEDED library of `elf` (recursively), found in the
/// unpacked packages' library directories, at the same path in the guest.
pub(super) fn add_libraries(root: &Path, elf: &Path, files: &mut Files) -> Result<()> {
    let headers = output(Command::new("readelf").arg("-lW").arg(elf))?;
    if let Some(interp) = headers
        .lines()
        .find_map(|l| l.split("program interpreter: ").nth(1))
        .map(|s| s.trim_end_matches(']').trim().trim_start_matches('/'))
    {
        // /lib64/ld-linux-x86-64.so.2 is a symlink in libc6: the guest gets the file.
        let host = find_lib(root, Path::new(interp).file_name().unwrap_or_default())?;
        files.insert(interp.to_string(), host);
    }
    let dynamic = output(Command::new("readelf").arg("-dW").arg(elf))?;
    for lib in dynamic
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1).map(|s| s.trim_end_matches(']')))
    {
        let host = find_lib(root, lib.as_ref())?;
        let guest = host
            .strip_prefix(root)
            .context("library outside the packages")?
            .to_string_lossy()
            .into_owned();
        if files.insert(guest, host.clone()).is_none() {
            add_libraries(root, &host, files)?;
        }
    }
    Ok(())
}

/// A library by file name in `lib/<triplet>` or `usr/lib/<triplet>` of the unpacked tree.
fn find_lib(root: &Path, name: &std::ffi::OsStr) -> Result<PathBuf> {
    for base in ["lib", "usr/lib"] {
        let Ok(dirs) = fs::read_dir(root.join(base)) else {
            continue;
        };
        for d in dirs.flatten() {
            let p = d.path().join(name);
            // exists() and the later read follow the packages' relative symlinks
            // (libseccomp.so.2 -> libseccomp.so.2.5.4) inside the tree.
            if p.exists() {
                return Ok(p);
            }
        }
    }
    bail!(
        "{} not found in the unpacked packages",
        name.to_string_lossy()
    )
}
