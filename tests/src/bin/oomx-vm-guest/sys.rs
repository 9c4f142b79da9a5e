//! The guest as a machine: mounts, the console protocol, the kernel log, power-off.

use std::{ffi::CString, fs, io::Write, path::Path};

use serde_json::Value;

/// Prefix of every line the xtask reads from the console; the payload is one JSON object.
pub const PREFIX: &str = "OOMX ";
/// Prefix of lines that are only for people reading the console log.
pub const LOG_PREFIX: &str = "OOMX-LOG ";

/// Writes one protocol line in a single write, so kernel messages cannot split it.
pub fn emit(v: &Value) {
    let line = format!("{PREFIX}{v}\n");
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}

/// Writes a human-readable line (command output, failure context).
pub fn log(text: &str) {
    let mut buf = String::new();
    for l in text.lines() {
        buf.push_str(LOG_PREFIX);
        buf.push_str(l);
        buf.push('\n');
    }
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(buf.as_bytes());
    let _ = out.flush();
}

fn mount(src: &str, target: &str, fstype: &str) -> Result<(), String> {
    let _ = fs::create_dir_all(target);
    let c = |s: &str| CString::new(s).map_err(|e| e.to_string());
    let (s, t, f) = (c(src)?, c(target)?, c(fstype)?);
    // SAFETY: plain mount(2) with NUL-terminated strings that outlive the call.
    let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        // devtmpfs may already be mounted by the kernel (CONFIG_DEVTMPFS_MOUNT).
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(format!("mount {fstype} on {target}: {e}"));
        }
    }
    Ok(())
}

/// Mounts what a bare initramfs lacks and gives the memory controller to the whole tree.
/// The observer mounts tracefs itself (that path is under test); cgroup2 is the node's.
pub fn setup() -> Result<(), String> {
    mount("proc", "/proc", "proc")?;
    mount("sysfs", "/sys", "sysfs")?;
    mount("devtmpfs", "/dev", "devtmpfs")?;
    mount("tmpfs", "/tmp", "tmpfs")?;
    mount("cgroup2", "/sys/fs/cgroup", "cgroup2")?;
    fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+memory")
        .map_err(|e| format!("enabling +memory at the cgroup root: {e}"))?;
    Ok(())
}

/// `uname -r` and `uname -m`.
pub fn uname() -> (String, String) {
    // SAFETY: utsname is plain data; uname(2) fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable utsname for uname(2) to fill.
    unsafe { libc::uname(&mut u) };
    let s = |f: &[libc::c_char]| {
        let b: Vec<u8> = f
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        String::from_utf8_lossy(&b).into_owned()
    };
    (s(&u.release), s(&u.machine))
}

/// The last `n` lines of the kernel log, for failure context.
pub fn kernel_log_tail(n: usize) -> String {
    const SYSLOG_ACTION_READ_ALL: libc::c_int = 3;
    let mut buf = vec![0u8; 1 << 17];
    // SAFETY: the buffer is valid for its length.
    let got = unsafe {
        libc::klogctl(
            SYSLOG_ACTION_READ_ALL,
            buf.as_mut_ptr().cast(),
            buf.len() as libc::c_int,
        )
    };
    if got <= 0 {
        return String::new();
    }
    let text = String::from_utf8_lossy(&buf[..got as usize]).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Whether a tracepoint's record has a field (read from its tracefs `format`).
pub fn tracepoint_has_field(category: &str, name: &str, field: &str) -> bool {
    let f = Path::new("/sys/kernel/tracing/events")
        .join(category)
        .join(name)
        .join("format");
    fs::read_to_string(f)
        .map(|t| {
            t.lines().any(|l| {
                l.trim_start().starts_with("field:")
                    && l.split(';')
                        .next()
                        .and_then(|d| d.split_whitespace().last())
                        .map(|w| w.split('[').next() == Some(field))
                        .unwrap_or(false)
            })
        })
        .unwrap_or(false)
}

/// Powers the machine off (the xtask sees qemu exit). Falls back to a reboot, which qemu's
/// `-no-reboot` also turns into an exit.
pub fn power_off() -> ! {
    // SAFETY: tcdrain, sync and reboot take no pointers; as PID 1 we are allowed to.
    unsafe {
        // The console's last lines are still in the tty's buffer: on an emulated arm64
        // UART a power-off right after them lost the `done` line (CI, 2026-12-07), and the
        // run failed as unfinished. Wait until they are sent (not a tty: returns at once).
        libc::tcdrain(1);
        libc::tcdrain(2);
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
        libc::reboot(libc::RB_AUTOBOOT);
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}
