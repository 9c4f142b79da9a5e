//! `cargo xtask systemd-guest`: a guest that is a real node. PID 1 is Debian 12's systemd
//! (with dbus and udev), Debian 12's containerd runs as its own `containerd.service` with
//! `SystemdCgroup = true`, and oom-observer runs as `packaging/oom-observer.service`, the
//! file as shipped plus one drop-in (pinning on, and a longer `RestartSec=`). A third
//! unit, `oomx-node-check.service` (the static `oomx-systemd-guest`), drives the CRI as a
//! kubelet with the systemd cgroup driver, OOM-kills pods, scores the unit's sandboxing and
//! kills the daemon to see `Restart=` bring it back; its checks come back as `OOMX {json}`
//! lines on the serial console.
//!
//! The root is the packages' closure unpacked with `dpkg-deb -x` (no maintainer scripts run;
//! dbus, containerd and the units above start without them), booted as the initramfs with
//! `/init -> /lib/systemd/systemd`.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::{build_guest_binaries, cpio::Cpio, debian, qemu, Arch, MATRIX};
use crate::{
    build::build_ebpf,
    command::{cache_dir, output, root, run},
};

/// The packages whose dependency closure is the guest's root: an init system and its bus,
/// udev (without it the boot waits 90 s for `dev-ttyS0.device`), busybox for a shell and the
/// containers' image, and the container runtime.
const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "udev",
    "busybox-static",
    "libc6",
    "containerd",
    "runc",
];

/// The kernel: Debian's 6.12 cloud kernel, as the cgroup v2 race and kubelet guests boot
/// (the matrix's `linux-6.12-<arch>` guest).
const GUEST_SERIES: &str = "linux-6.12";

/// The root filesystem lives in RAM, beside containerd, two pods and the daemon.
const GUEST_MIB: u32 = 1536;

/// systemd's first boot would ask on the console; the serial getty would wait for a login.
/// systemd's progress spinner would fill the console log: only its errors are shown.
/// `{console}`: the architecture's serial console.
const SYSTEMD_APPEND: &str = "systemd.show_status=error systemd.firstboot=0 \
     systemd.mask=systemd-firstboot.service \
     systemd.mask=serial-getty@{console}.service systemd.mask=getty.target";

/// The checks the guest must report, each passed.
const CHECKS: &[&str] = &[
    "daemon_runs_as_the_unit_in_its_sandbox",
    "systemd_made_the_scope",
    "cri_reads_oomkilled",
    "oom_kill_line_names_the_scope",
    "published",
    "security_scored",
    "kill_while_down_reported_once",
];

/// What the guest changes of `packaging/oom-observer.service`: only pinning, turned on so
/// that `Restart=` can be checked to lose no kill. systemd mounts the bpffs at /sys/fs/bpf
/// itself, but `ProtectKernelTunables=` makes it read-only, and neither
/// `ReadWritePaths=/sys/fs/bpf` (what the unit's comment said) nor `BindPaths=/sys/fs/bpf`
/// undo that (EROFS from the daemon's mkdir), and an `ExecStartPre=+mkdir` of a directory
/// below it fails in the unit's namespace set-up (226/NAMESPACE): all seen here under
/// systemd 252. So the directory is made at boot by systemd-tmpfiles ([`PIN_TMPFILES`]) and
/// only it is made writable. And a longer `RestartSec=`, for the restart check's timing.
const DROP_IN: &str = "\
# cargo xtask systemd-guest: pinning on (docs/pinning.md).
[Service]
ExecStart=
ExecStart=/usr/local/bin/oom-observer run --pin-dir /sys/fs/bpf/oom-observer
ReadWritePaths=/sys/fs/bpf/oom-observer
# The restart check's kill must land while no daemon runs: under TCG it came 0.6 to 2.6 s
# after the unit went down.
RestartSec=5s
";

/// The pin directory, made on the bpffs at boot (systemd-tmpfiles-setup.service runs before
/// basic.target, so before the unit).
const PIN_TMPFILES: &str = "d /sys/fs/bpf/oom-observer 0700 root root -\n";

/// The unit that runs the checks, once the node's services are up.
const CHECK_UNIT: &str = "\
[Unit]
Description=oom-observer under a real systemd: the checks of cargo xtask systemd-guest
Wants=containerd.service oom-observer.service dbus.service
After=containerd.service oom-observer.service dbus.service

[Service]
Type=oneshot
ExecStart=/usr/local/bin/oomx-systemd-guest
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
";

/// Debian 12's containerd 1.6.20 with the CRI plugin as a kubelet with the systemd cgroup
/// driver needs it: runc makes every container's cgroup a scope through systemd. The root is
/// the initramfs, which pivot_root(2) cannot leave; overlayfs is a module the initramfs does
/// not carry; the images are local.
const CONTAINERD_CONFIG: &str = r#"version = 2
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "oomx.local/pause:1"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = true
        NoPivotRoot = true
"#;

/// containerd 2.x's configuration (version 3: the CRI's runtime and image halves are plugins
/// of their own), with what [`CONTAINERD_CONFIG`] says for 1.6; `ctr images import` goes
/// through the transfer service, told to unpack into `native` too.
const CONTAINERD_CONFIG_V3: &str = r#"version = 3
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "native"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "oomx.local/pause:1"
[plugins."io.containerd.cri.v1.runtime"]
  enable_selinux = false
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        SystemdCgroup = true
        NoPivotRoot = true
[plugins."io.containerd.transfer.v1.local"]
  [[plugins."io.containerd.transfer.v1.local".unpack_config]]
    platform = "linux/{deb_arch}"
    snapshotter = "native"
"#;

/// Options of `cargo xtask systemd-guest`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SystemdGuestOptions {
    /// Wall-clock limit of the guest in seconds (default: 600; with --pods, 600 plus 80 s a
    /// pod of the four rows).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Instead of the checks, the kubelet rows with N pods each (idle and loaded, without
    /// oom-observer and with its unit running), merged into docs/kubelet.json and
    /// docs/kubelet.md as the systemd driver's rows. Not part of `cargo xtask test`.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub pods: usize,
    /// The containerd release of the node (1.6.20, Debian 12's own, the default; 1.7.24;
    /// 2.1.9): a later one's binaries replace the package's in the guest's /usr/bin.
    #[arg(long, value_name = "RELEASE")]
    pub containerd: Option<String>,
    /// More kernel command line (e.g. `systemd.log_level=debug`).
    #[arg(long)]
    pub append: Option<String>,
    /// The guest's architecture: x86_64 (the default) or arm64 (slower under emulation).
    #[arg(long, value_name = "ARCH")]
    pub arch: Option<String>,
}

/// Builds the root, boots it, and checks the guest's verdicts; writes
/// `target/vm/systemd-guest.json` (every line the guest reported).
pub fn systemd_guest(opts: &SystemdGuestOptions) -> Result<()> {
    let t0 = Instant::now();
    let cache = cache_dir().join("vm");
    fs::create_dir_all(&cache)?;
    let arch = opts.arch.as_deref().unwrap_or("x86_64");
    let guest = format!("{GUEST_SERIES}-{arch}");
    let g = MATRIX
        .iter()
        .find(|g| g.name == guest)
        .with_context(|| format!("--arch {arch}: no {guest} guest (x86_64 or arm64)"))?;
    // The x86_64 guest's files keep their names; the other's say their architecture.
    let sfx = if arch == "x86_64" {
        String::new()
    } else {
        format!("-{arch}")
    };
    debian::ensure_qemu(&cache, &[g.arch.qemu()])?;
    debian::prepare_apt(&cache, Arch::Aarch64.deb())?;
    let k = debian::kernel(
        &debian::Apt::system(),
        &cache,
        g.meta,
        g.arch.deb(),
        g.series,
    )?;
    // The packages first: their download needs no CPU, the build after it does.
    let pkgs = packages_root(&cache, g.arch.deb())?;
    let obj = build_ebpf()?;
    let bins = build_guest_binaries(g.arch, &obj)?;
    let driver = bins
        .init
        .parent()
        .context("binary directory")?
        .join("oomx-systemd-guest");
    let work = root().join("target/vm");
    fs::create_dir_all(&work)?;
    let img = work.join(format!("initramfs-systemd-{}.cpio", g.arch.name()));
    // The rows run the unit as shipped: pinned programs would stay attached through the
    // rows without oom-observer.
    let release = crate::containerd::release(
        opts.containerd
            .as_deref()
            .unwrap_or(crate::containerd::default_name()),
    )?;
    // The project's cache, where every other command keeps the releases (not its vm/).
    let later = crate::containerd::unpacked(&cache_dir(), release, g.arch.deb())?
        .map(|root| (release.name, root.join("usr/bin")));
    write_image(
        &Image {
            pkgs: &pkgs,
            observer: &bins.observer,
            driver: &driver,
            pin: opts.pods == 0,
            containerd: later.as_ref().map(|(n, d)| (*n, d.as_path())),
            deb_arch: g.arch.deb(),
        },
        &img,
    )?;
    let built = t0.elapsed();

    let rows = opts.pods > 0;
    let log = work.join(if rows {
        format!("systemd-kubelet{sfx}.console.log")
    } else {
        format!("systemd-guest{sfx}.console.log")
    });
    let mut append = SYSTEMD_APPEND.replace("{console}", g.arch.console());
    if rows {
        append += &format!(" oomx.kubelet={}", opts.pods);
    }
    if let Some(a) = &opts.append {
        append += &format!(" {a}");
    }
    let timeout = opts.timeout.unwrap_or(600 + 4 * 80 * opts.pods as u64);
    eprintln!("systemd-guest: booting {} {}", k.package, k.version);
    let b = qemu::boot(&qemu::BootSpec {
        arch: g.arch,
        vmlinuz: &k.vmlinuz,
        initrd: &img,
        memory_mib: GUEST_MIB,
        cpus: super::GUEST_CPUS,
        extra_append: Some(&append),
        console_level: qemu::ConsoleLevel::Emergencies,
        log: &log,
        limit: Duration::from_secs(timeout),
    })?;
    let lines: Vec<Value> = b
        .console
        .lines()
        .filter_map(|l| {
            l.find("OOMX {")
                .and_then(|i| serde_json::from_str::<Value>(&l[i + 5..]).ok())
        })
        .collect();
    let date = output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?;
    let report = serde_json::json!({
        "date": date.trim(),
        "kernel": format!("{} {}", k.package, k.version),
        "build_seconds": built.as_secs_f64(),
        "guest_seconds": b.elapsed.as_secs_f64(),
        "timed_out": b.timed_out,
        "lines": lines,
    });
    let out = work.join(if rows {
        format!("systemd-kubelet{sfx}.json")
    } else {
        format!("systemd-guest{sfx}.json")
    });
    fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    if rows {
        let mut cmd = format!("cargo xtask systemd-guest --pods {}", opts.pods);
        if later.is_some() {
            cmd += &format!(" --containerd {}", release.name);
        }
        if arch != "x86_64" {
            cmd += &format!(" --arch {arch}");
        }
        return kubelet_rows(&cmd, &lines, &report, &b, &log);
    }

    let mut problems = Vec::new();
    eprintln!(
        "\nsystemd-guest: guest ran {:.0} s (build {:.0} s; console {}, lines {}):",
        b.elapsed.as_secs_f64(),
        built.as_secs_f64(),
        log.display(),
        out.display()
    );
    for v in &lines {
        match v["type"].as_str() {
            Some("check") => eprintln!(
                "  {} {}: {}",
                if v["ok"] == true { "PASS" } else { "FAIL" },
                v["name"].as_str().unwrap_or("?"),
                v["detail"]
            ),
            Some("security") => eprintln!("  {}", v["overall"].as_str().unwrap_or("?")),
            Some("finding") => eprintln!(
                "  finding {} ({}): {}",
                v["name"].as_str().unwrap_or("?"),
                if v["holds"] == true {
                    "holds"
                } else {
                    "does not hold"
                },
                v["detail"]
            ),
            Some("not_attached") => eprintln!("  not attached: {}", v["lines"]),
            _ => {}
        }
    }
    for name in CHECKS {
        match lines
            .iter()
            .find(|v| v["type"] == "check" && v["name"] == *name)
        {
            Some(v) if v["ok"] == true => {}
            Some(v) => problems.push(format!("{name}: {}", v["detail"])),
            None => problems.push(format!("{name}: not reported")),
        }
    }
    for v in lines
        .iter()
        .filter(|v| v["type"] == "check" && v["ok"] != true)
    {
        if !CHECKS.contains(&v["name"].as_str().unwrap_or("")) {
            problems.push(format!("{}: {}", v["name"], v["detail"]));
        }
    }
    if !lines.iter().any(|v| v["type"] == "done") {
        problems.push(format!(
            "the guest did not finish (timed out: {}, {}); console tail:\n{}",
            b.timed_out,
            b.status,
            b.tail(40)
        ));
    }
    if !problems.is_empty() {
        bail!("systemd guest failed:\n{}", problems.join("\n"));
    }
    eprintln!("systemd-guest: all {} checks passed", CHECKS.len());
    Ok(())
}

/// The `kubelet` line of a guest booted with `oomx.kubelet=N`: its table printed, its rows
/// written into docs/ (also when a row broke its promise: a result to publish, then a
/// failure).
fn kubelet_rows(
    cmd: &str,
    lines: &[Value],
    report: &Value,
    b: &qemu::Boot,
    log: &Path,
) -> Result<()> {
    let Some(v) = lines.iter().find(|v| v["type"] == "kubelet") else {
        bail!(
            "the systemd guest reported no kubelet rows (timed out: {}, {}; console {}); tail:\n{}",
            b.timed_out,
            b.status,
            log.display(),
            b.tail(40)
        );
    };
    eprintln!("{}", v["table"].as_str().unwrap_or("no table"));
    let problems: Vec<&str> = v["problems"]
        .as_array()
        .map(|p| p.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(release) = v["rows"][0]["containerd"].as_str() {
        let intro = format!(
            "`{cmd}` ({}, {:.0} s for the guest, release builds, {}).",
            report["date"].as_str().unwrap_or("?"),
            b.elapsed.as_secs_f64(),
            report["kernel"].as_str().unwrap_or("?"),
        );
        super::systemd_rows::write_docs(v, release, &intro)?;
    }
    if !problems.is_empty() {
        bail!("systemd guest kubelet rows:\n{}", problems.join("\n"));
    }
    Ok(())
}

/// The closure of [`PACKAGES`] for Debian architecture `arch` (Debian 12, the machine's own
/// apt), downloaded and unpacked once into the cache, keyed by every package's version.
fn packages_root(cache: &Path, arch: &str) -> Result<PathBuf> {
    let deps = output(
        Command::new("apt-cache")
            .args(["depends", "--recurse", "--no-recommends", "--no-suggests"])
            .args(["--no-conflicts", "--no-breaks", "--no-replaces"])
            .args(["--no-enhances", "--no-pre-depends"])
            .args(PACKAGES),
    )?;
    // The real packages: lines that start with a letter and name no architecture or
    // virtual package (`<...>`), dependency lines are indented.
    let mut names: Vec<&str> = deps
        .lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_alphanumeric()) && !l.contains(':'))
        .collect();
    names.sort_unstable();
    names.dedup();
    let versions_of = |specs: Vec<String>| -> Result<BTreeMap<String, String>> {
        let show = output(
            Command::new("apt-cache")
                .args(["show", "--no-all-versions"])
                .args(specs),
        )?;
        let mut versions = BTreeMap::new();
        let mut current = None;
        for l in show.lines() {
            if let Some(p) = l.strip_prefix("Package: ") {
                current = Some(p.trim().to_string());
            } else if let Some(v) = l.strip_prefix("Version: ") {
                if let Some(p) = current.take() {
                    versions.insert(p, v.trim().to_string());
                }
            }
        }
        Ok(versions)
    };
    let mut versions = versions_of(names.iter().map(|n| format!("{n}:{arch}")).collect())?;
    // `Architecture: all` packages answer to `name:<arch>` only for the machine's own
    // architecture: for a foreign one (arm64 here) they are asked for, and downloaded, by
    // name alone.
    let missing: Vec<String> = names
        .iter()
        .filter(|n| !versions.contains_key(**n))
        .map(|n| n.to_string())
        .collect();
    let arch_all = if missing.is_empty() {
        BTreeMap::new()
    } else {
        versions_of(missing)?
    };
    versions.extend(arch_all.iter().map(|(p, v)| (p.clone(), v.clone())));
    if versions.len() != names.len() {
        bail!(
            "apt-cache show gave {} versions for {} packages",
            versions.len(),
            names.len()
        );
    }
    let key: String = versions.iter().map(|(p, v)| format!("{p}={v}\n")).collect();
    let dir = cache.join("systemd-root").join(arch);
    let root = dir.join("root");
    if fs::read_to_string(dir.join("versions")).ok().as_deref() == Some(key.as_str()) {
        return Ok(root);
    }
    eprintln!(
        "systemd-guest: downloading {} packages ({arch})",
        versions.len()
    );
    let _ = fs::remove_dir_all(&dir);
    let debs = dir.join("debs");
    fs::create_dir_all(&debs)?;
    run(Command::new("apt-get")
        .current_dir(&debs)
        // Running as root into a directory _apt cannot write: do not drop privileges.
        .args(["-qq", "-o", "APT::Sandbox::User=root", "download"])
        .args(versions.iter().map(|(p, v)| {
            if arch_all.contains_key(p) {
                format!("{p}={v}")
            } else {
                format!("{p}:{arch}={v}")
            }
        })))?;
    for e in fs::read_dir(&debs)?.flatten() {
        run(Command::new("dpkg-deb").arg("-x").arg(e.path()).arg(&root))?;
    }
    let _ = fs::remove_dir_all(&debs);
    // Written last: an interrupted download is fetched again.
    fs::write(dir.join("versions"), &key)?;
    Ok(root)
}

/// One entry of the image.
enum Node {
    Dir(u32),
    File(PathBuf, u32),
    Data(Vec<u8>, u32),
    Link(String),
    CharDev(u32, u32),
}

/// The unpacked packages, walked into `nodes` under their guest paths.
fn walk(dir: &Path, rel: &str, nodes: &mut BTreeMap<String, Node>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for e in fs::read_dir(dir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let guest = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let md = fs::symlink_metadata(e.path())?;
        let mode = md.permissions().mode() & 0o7777;
        if md.file_type().is_symlink() {
            let target = fs::read_link(e.path())?;
            nodes.insert(guest, Node::Link(target.to_string_lossy().into_owned()));
        } else if md.is_dir() {
            nodes.insert(guest.clone(), Node::Dir(mode));
            walk(&e.path(), &guest, nodes)?;
        } else if md.is_file() {
            nodes.insert(guest, Node::File(e.path(), mode));
        }
    }
    Ok(())
}

/// What goes into the guest's image.
struct Image<'a> {
    /// The packages' unpacked root.
    pkgs: &'a Path,
    /// The static `oom-observer` and `oomx-systemd-guest`.
    observer: &'a Path,
    driver: &'a Path,
    /// The pinning drop-in ([`DROP_IN`]): the checks' `Restart=` with `--pin-dir`.
    pin: bool,
    /// A later containerd release than the package's: its name and its binaries.
    containerd: Option<(&'a str, &'a Path)>,
    /// Debian's name of the guest's architecture (the images' platform).
    deb_arch: &'a str,
}

/// The initramfs: the packages' root, the static binaries, the units and the node's config.
fn write_image(img: &Image<'_>, out: &Path) -> Result<()> {
    let Image {
        pkgs,
        observer,
        driver,
        pin,
        containerd,
        deb_arch,
    } = *img;
    let mut nodes = BTreeMap::new();
    walk(pkgs, "", &mut nodes)?;
    let (config, check_unit) = match containerd {
        None => (CONTAINERD_CONFIG.to_string(), CHECK_UNIT.to_string()),
        Some((name, bin)) => {
            for b in ["containerd", "ctr", "containerd-shim-runc-v2"] {
                nodes.insert(format!("usr/bin/{b}"), Node::File(bin.join(b), 0o755));
            }
            let config = if name.starts_with('1') {
                CONTAINERD_CONFIG.to_string()
            } else {
                CONTAINERD_CONFIG_V3.replace("{deb_arch}", deb_arch)
            };
            // tests::containerd::Version: the release, checked against `containerd --version`.
            let env = format!(
                "[Service]\nEnvironment=OOMX_CONTAINERD={name} OOMX_CONTAINERD_DIR=/usr/bin"
            );
            (config, CHECK_UNIT.replacen("[Service]", &env, 1))
        }
    };
    let unit = root().join("packaging/oom-observer.service");
    let text = |s: &str| Node::Data(s.as_bytes().to_vec(), 0o644);
    let wants = "etc/systemd/system/multi-user.target.wants";
    let overlay: Vec<(String, Node)> = vec![
        ("init".into(), Node::Link("/lib/systemd/systemd".into())),
        ("bin/sh".into(), Node::Link("busybox".into())),
        ("dev".into(), Node::Dir(0o755)),
        ("dev/console".into(), Node::CharDev(5, 1)),
        ("proc".into(), Node::Dir(0o555)),
        ("sys".into(), Node::Dir(0o555)),
        ("run".into(), Node::Dir(0o755)),
        ("root".into(), Node::Dir(0o700)),
        ("tmp".into(), Node::Dir(0o1777)),
        ("var/tmp".into(), Node::Dir(0o1777)),
        ("var/log".into(), Node::Dir(0o755)),
        // The install step of docs/systemd.md: systemd opens the unit's
        // `StandardOutput=append:` file before it makes `LogsDirectory=` (systemd #27591),
        // so without it the unit fails at every start with 209/STDOUT (seen here first).
        ("var/log/oom-observer".into(), Node::Dir(0o755)),
        ("var/lib".into(), Node::Dir(0o755)),
        (
            "etc/os-release".into(),
            text("ID=debian\nPRETTY_NAME=\"oom-observer systemd guest\"\n"),
        ),
        ("etc/hostname".into(), text("oomx-node\n")),
        ("etc/hosts".into(), text("127.0.0.1 localhost oomx-node\n")),
        ("etc/resolv.conf".into(), text("")),
        ("etc/containerd/config.toml".into(), text(&config)),
        (
            "usr/local/bin/oom-observer".into(),
            Node::File(observer.to_path_buf(), 0o755),
        ),
        (
            "usr/local/bin/oomx-systemd-guest".into(),
            Node::File(driver.to_path_buf(), 0o755),
        ),
        (
            "etc/systemd/system/oom-observer.service".into(),
            Node::File(unit, 0o644),
        ),
        (
            "etc/systemd/system/oomx-node-check.service".into(),
            text(&check_unit),
        ),
        (
            format!("{wants}/containerd.service"),
            Node::Link("/lib/systemd/system/containerd.service".into()),
        ),
        (
            format!("{wants}/oom-observer.service"),
            Node::Link("/etc/systemd/system/oom-observer.service".into()),
        ),
        (
            format!("{wants}/oomx-node-check.service"),
            Node::Link("/etc/systemd/system/oomx-node-check.service".into()),
        ),
    ];
    let pinning: Vec<(String, Node)> = vec![
        (
            "etc/systemd/system/oom-observer.service.d/guest.conf".into(),
            text(DROP_IN),
        ),
        (
            "etc/tmpfiles.d/oom-observer-pins.conf".into(),
            text(PIN_TMPFILES),
        ),
    ];
    let pinning = pinning.into_iter().filter(|_| pin);
    for (guest, node) in overlay.into_iter().chain(pinning) {
        // Every parent directory first (the map's order puts a parent before its children).
        let mut p = Path::new(&guest).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            nodes
                .entry(d.to_string_lossy().into_owned())
                .or_insert(Node::Dir(0o755));
            p = d.parent();
        }
        // A package's own /bin/sh (none in this closure) is kept.
        if guest == "bin/sh" && nodes.contains_key(&guest) {
            continue;
        }
        nodes.insert(guest, node);
    }
    let mut c = Cpio::default();
    for (guest, node) in &nodes {
        match node {
            Node::Dir(mode) => c.dir_mode(guest, *mode),
            Node::File(host, mode) => c.file(
                guest,
                *mode,
                &fs::read(host).with_context(|| format!("reading {}", host.display()))?,
            ),
            Node::Data(data, mode) => c.file(guest, *mode, data),
            Node::Link(target) => c.symlink(guest, target),
            Node::CharDev(major, minor) => c.char_dev(guest, *major, *minor),
        }
    }
    fs::write(out, c.finish()).with_context(|| format!("writing {}", out.display()))
}
