//! `cargo xtask deaths-vm`: the two senders of issue 21 that the cgroup v1 host cannot run
//! (`cgroup.kill`, and Debian's earlyoom acting on node-wide pressure), in the cgroup v2
//! guests (Debian's 6.12 kernels) with Debian's containerd, runc and earlyoom packed into
//! the initramfs. The guest's `/init` runs in deaths mode (`oomx.deaths=1`) and prints one
//! `death` verdict per scenario; this module checks them and fails on any problem.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Result};
use serde_json::Value;

use super::{
    build_guests, debian,
    race::{boot_each, v2_dirs, RaceRun, BASE_LIMIT},
    userland, write_initramfs, GuestDef,
};
use crate::{build::build_ebpf, command::run};

/// The scenarios each guest must report, all passing.
const SCENARIOS: [&str; 3] = ["cgroup_kill", "earlyoom", "events"];

/// Boots the cgroup v2 guests (or `only` one) in deaths mode; prints each scenario's
/// `container_exit` cause, sender and message, and fails unless every one passed.
pub fn deaths_vm(only: Option<&str>, append: Option<&str>) -> Result<()> {
    let t0 = Instant::now();
    let mut cmdline = "oomx.deaths=1".to_string();
    if let Some(extra) = append {
        cmdline.push(' ');
        cmdline.push_str(extra);
    }
    // Boot, BPF load, containerd and the CRI, then two pods: one guest alone took about
    // four minutes under TCG.
    let (guests, mut failed) = boot_pod_guests(only, None, &cmdline, "death", &SCENARIOS)?;
    for g in &guests {
        let (name, kernel) = (&g.name, &g.kernel);
        for v in &g.verdicts {
            let sc = v["scenario"].as_str().unwrap_or("?");
            eprintln!(
                "deaths-vm {name} ({kernel}) {sc}: {} ({:.0} s) | cause {} | exit {} {} | \
                 sender {} pid {} {} {} | kubelet {} | {}",
                v["status"].as_str().unwrap_or("?"),
                v["seconds"].as_f64().unwrap_or(0.0),
                v["cause"],
                v["exit_code"],
                v["signal"],
                v["sender"]["comm"],
                v["sender"]["tgid"],
                v["sender"]["signal"],
                v["sender"]["code"],
                v["kubelet"]["reason"],
                v["message"],
            );
            if let Some(evs) = v["events"].as_array() {
                for e in evs {
                    eprintln!("deaths-vm {name} Pod Event: {e}");
                }
            }
            if !v["line"].is_null() {
                eprintln!("deaths-vm {name} {sc} line: {}", v["line"]);
            }
            if v["status"] != "pass" {
                failed.push(format!("{name} {sc}: {}", v["detail"]));
            }
        }
    }
    eprintln!(
        "deaths-vm: {} guest(s) in {:.0} s (consoles in target/vm/)",
        guests.len(),
        t0.elapsed().as_secs_f64(),
    );
    if !failed.is_empty() {
        bail!("deaths in the v2 guests failed:\n{}", failed.join("\n"));
    }
    Ok(())
}

/// One guest's verdict lines of one type, and the kernel release it named.
pub(super) struct GuestVerdicts {
    pub name: String,
    pub kernel: String,
    pub verdicts: Vec<Value>,
}

/// Boots the cgroup v2 guests (or `only` one) at once, with the pods' initramfs, `cmdline`
/// and `memory_mib` of RAM (the race's when `None`); returns each finished guest's `kind`
/// verdict lines, and the problems found so far: a guest that did not finish, a scenario of
/// `expected` with no verdict.
pub(super) fn boot_pod_guests(
    only: Option<&str>,
    memory_mib: Option<u32>,
    cmdline: &str,
    kind: &str,
    expected: &[&str],
) -> Result<(Vec<GuestVerdicts>, Vec<String>)> {
    let run = RaceRun {
        only: only.map(str::to_string),
        memory_mib,
        ..RaceRun::default()
    };
    let (work, cache) = v2_dirs(&run)?;
    let boots = prepare(&cache, &work, &run)?;
    // The limit only ends a hung guest.
    let results = boot_each(&boots, &work, cmdline, BASE_LIMIT * 2, &run, Ok);
    let mut guests = Vec::new();
    let mut failed = Vec::new();
    for (name, r) in results {
        let (kernel, lines) = match r {
            Ok(v) => v,
            Err(e) => {
                failed.push(format!("{name}: {e:#}"));
                continue;
            }
        };
        let verdicts: Vec<Value> = lines.into_iter().filter(|v| v["type"] == kind).collect();
        for sc in expected {
            if !verdicts.iter().any(|v| v["scenario"] == *sc) {
                failed.push(format!("{name}: no verdict for {sc}"));
            }
        }
        guests.push(GuestVerdicts {
            name,
            kernel,
            verdicts,
        });
    }
    Ok((guests, failed))
}

/// The cgroup v2 guests, each with its kernel and an initramfs holding the containerd
/// stack, earlyoom (as `bin/earlyoom`, with its libraries) and a trust store for the
/// daemon's Kubernetes client: every guest mode that runs pods with Pod Events on.
fn prepare(
    cache: &Path,
    work: &Path,
    run: &RaceRun,
) -> Result<Vec<(&'static GuestDef, debian::Kernel, PathBuf)>> {
    let guests: Vec<&GuestDef> = run.guests().collect();
    debian::ensure_qemu(
        cache,
        &guests.iter().map(|g| g.arch.qemu()).collect::<Vec<_>>(),
    )?;
    debian::prepare_apt(cache, super::Arch::Aarch64.deb())?;
    let obj = build_ebpf()?;
    let archs: Vec<_> = guests.iter().map(|g| g.arch).collect();
    let mut boots = Vec::new();
    for (g, bins) in guests.into_iter().zip(build_guests(&archs, &obj)?) {
        let k = debian::kernel(
            &debian::Apt::system(),
            cache,
            g.meta,
            g.arch.deb(),
            g.series,
        )?;
        let mut files = userland::containerd_stack(cache, g.arch.deb(), None)?;
        let libs_root = cache.join("userland").join(g.arch.deb()).join("root");
        let earlyoom = earlyoom(cache, g.arch.deb())?;
        files.insert("bin/earlyoom".into(), earlyoom.clone());
        userland::add_libraries(&libs_root, &earlyoom, &mut files)?;
        files.insert(
            "etc/ssl/certs/ca-certificates.crt".into(),
            trust_store(work)?,
        );
        let img = work.join(format!("initramfs-deaths-{}.cpio", g.arch.name()));
        write_initramfs(&bins, &files, &img)?;
        boots.push((g, k, img));
    }
    Ok(boots)
}

/// A trust store for the guest: the observer's Kubernetes client will not start without
/// one, though the Event stand-in it talks to is plain HTTP on loopback. One throwaway
/// self-signed certificate (made once with openssl, its key discarded), trusted by nothing
/// but the guest.
fn trust_store(work: &Path) -> Result<PathBuf> {
    let pem = work.join("deaths-guest-ca.pem");
    if !pem.is_file() {
        run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "/dev/null",
                "-subj",
                "/CN=oomx deaths guest",
                "-days",
                "3650",
                "-out",
            ])
            .arg(&pem))?;
    }
    Ok(pem)
}

/// Debian's earlyoom for `arch`: downloaded with `apt-get download` into the project's cache
/// (by version; the machine's apt sources are only read) and unpacked; its binary's path.
fn earlyoom(cache: &Path, arch: &str) -> Result<PathBuf> {
    let version = userland::candidate(&format!("earlyoom:{arch}"))?;
    let dir = cache.join("userland").join(format!("{arch}-earlyoom"));
    let root = dir.join("root");
    let bin = root.join("usr/bin/earlyoom");
    if fs::read_to_string(dir.join("version")).ok().as_deref() != Some(version.as_str()) {
        eprintln!("vm: downloading earlyoom {version} ({arch})");
        let _ = fs::remove_dir_all(&dir);
        let debs = dir.join("debs");
        fs::create_dir_all(&debs)?;
        run(Command::new("apt-get").current_dir(&debs).args([
            "-qq",
            "-o",
            "APT::Sandbox::User=root",
            "download",
            &format!("earlyoom:{arch}={version}"),
        ]))?;
        for e in fs::read_dir(&debs)?.flatten() {
            run(Command::new("dpkg-deb").arg("-x").arg(e.path()).arg(&root))?;
        }
        // Written last: an interrupted download is fetched again.
        fs::write(dir.join("version"), &version)?;
    }
    if !bin.is_file() {
        bail!("{} is not in the unpacked package", bin.display());
    }
    Ok(bin)
}
