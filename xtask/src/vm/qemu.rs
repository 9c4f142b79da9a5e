//! Booting one guest under qemu's TCG emulation (KVM does not work on the project's
//! machines), its console going to a file, with a hard wall-clock limit.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

/// A guest architecture: how qemu boots it and where its console is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// Debian's architecture name.
    pub fn deb(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// The Rust target of the guest's static binaries.
    pub fn rust_target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-musl",
            Arch::Aarch64 => "aarch64-unknown-linux-musl",
        }
    }

    /// The qemu binary and the Debian package that has it.
    pub fn qemu(self) -> (&'static str, &'static str) {
        match self {
            Arch::X86_64 => ("qemu-system-x86_64", "qemu-system-x86"),
            Arch::Aarch64 => ("qemu-system-aarch64", "qemu-system-arm"),
        }
    }

    fn machine_args(self) -> &'static [&'static str] {
        match self {
            Arch::X86_64 => &["-cpu", "max"],
            // pauth-impdef: qemu's own pointer-authentication algorithm, far cheaper to
            // emulate than the architected one, and invisible to the guest's correctness.
            Arch::Aarch64 => &["-M", "virt", "-cpu", "max,pauth-impdef=on"],
        }
    }

    /// The serial console's device name.
    pub fn console(self) -> &'static str {
        match self {
            Arch::X86_64 => "ttyS0",
            Arch::Aarch64 => "ttyAMA0",
        }
    }
}

/// How a guest run ended.
pub struct Boot {
    /// The console output (also left in the log file).
    pub console: String,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
    /// Whether the wall-clock limit killed it.
    pub timed_out: bool,
    /// qemu's exit status, as text.
    pub status: String,
    pub log: PathBuf,
}

impl Boot {
    /// The console's last `n` lines, for a run that did not finish.
    pub fn tail(&self, n: usize) -> String {
        let tail: Vec<&str> = self.console.lines().rev().take(n).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        tail.join("\n")
    }
}

/// Which kernel messages reach the guest's console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ConsoleLevel {
    /// `loglevel=1`: only emergencies (a panic), so the kernel's OOM reports do not bury the
    /// verdict lines. The matrix and the default race run this way.
    #[default]
    #[value(name = "emergencies")]
    Emergencies,
    /// `quiet`: warnings and worse stay off the console; of an OOM kill only the
    /// "Killed process" line (an error, printed after `mark_victim`) is printed.
    #[value(name = "quiet")]
    Quiet,
    /// Neither: the kernel's default console log level (7 on Debian's kernels), as a cloud
    /// node booted with `console=ttyS0` runs. The OOM killer's whole report goes to the
    /// console before its SIGKILL.
    #[value(name = "default")]
    Talkative,
}

impl ConsoleLevel {
    /// Its kernel command-line word, if any.
    pub fn append(self) -> Option<&'static str> {
        match self {
            ConsoleLevel::Emergencies => Some("loglevel=1"),
            ConsoleLevel::Quiet => Some("quiet"),
            ConsoleLevel::Talkative => None,
        }
    }

    /// The name used in flags, file names and reports.
    pub fn name(self) -> &'static str {
        match self {
            ConsoleLevel::Emergencies => "emergencies",
            ConsoleLevel::Quiet => "quiet",
            ConsoleLevel::Talkative => "default",
        }
    }
}

/// How to boot a guest.
pub struct BootSpec<'a> {
    pub arch: Arch,
    pub vmlinuz: &'a Path,
    pub initrd: &'a Path,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Extra kernel command line, after the matrix's own (later settings win).
    pub extra_append: Option<&'a str>,
    /// Which kernel messages reach the console.
    pub console_level: ConsoleLevel,
    /// Where the console goes.
    pub log: &'a Path,
    /// Wall-clock limit: a guest still running then is killed and reported hung.
    pub limit: Duration,
}

/// Boots the guest, waits for it to power off (or for the limit), and returns its console.
pub fn boot(spec: &BootSpec<'_>) -> Result<Boot> {
    let BootSpec {
        arch,
        vmlinuz,
        initrd,
        memory_mib,
        cpus,
        extra_append,
        console_level,
        log,
        limit,
    } = *spec;
    let _ = fs::remove_file(log);
    // panic=-1 and oops=panic turn any kernel crash into an immediate reboot, which
    // -no-reboot turns into qemu exiting: never a hung run.
    let mut append = format!("console={}", arch.console());
    if let Some(level) = console_level.append() {
        append.push(' ');
        append.push_str(level);
    }
    append.push_str(" panic=-1 oops=panic rdinit=/init");
    if let Some(extra) = extra_append {
        append.push(' ');
        append.push_str(extra);
    }
    let mut cmd = Command::new(arch.qemu().0);
    cmd.args(["-accel", "tcg"])
        .args(arch.machine_args())
        .args(["-m", &format!("{memory_mib}M")])
        .args(["-smp", &cpus.to_string()])
        .args(["-nodefaults", "-display", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", &append])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if start.elapsed() > limit {
            timed_out = true;
            // Only the qemu process this function started.
            let _ = child.kill();
            break child.wait()?;
        }
        thread::sleep(Duration::from_millis(200));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    let console = fs::read(log)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    Ok(Boot {
        console,
        elapsed: start.elapsed(),
        timed_out,
        status: if stderr.trim().is_empty() {
            status.to_string()
        } else {
            format!("{status}; qemu: {}", stderr.trim())
        },
        log: log.to_path_buf(),
    })
}
