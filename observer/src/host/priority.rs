//! The daemon's scheduling: real-time for the kill path, so that a busy node cannot delay
//! TaskOOM behind the container's exit; ordinary for the threads that only do bulk work.

use tracing::{debug, info, warn};

/// The daemon sleeps until the kernel hands it a kill, then races the container's exit
/// through the runtime shim and containerd. At SCHED_FIFO priority 1 it runs the moment it
/// is woken, ahead of every ordinary task on a saturated node; it is idle otherwise, and the
/// kernel's real-time throttling bounds it should it ever spin. Threads inherit it: those
/// that do bulk work call [`ordinary`] first.
pub fn raise() {
    match set_scheduler(nix::libc::SCHED_FIFO, 1) {
        Ok(()) => info!("running at real-time priority (SCHED_FIFO 1)"),
        Err(error) => warn!(
            %error,
            "cannot take real-time priority (needs CAP_SYS_NICE); a busy node may delay TaskOOM"
        ),
    }
}

/// Drops the calling thread to ordinary priority (SCHED_OTHER). For the threads whose work is
/// bulk, not the kill path: the start-up's cgroup scan, the forecast's ticks, the scrape
/// server. At SCHED_FIFO, a scan of 100,000 cgroups and the forecast's first tick over
/// 10,000 containers held both cores of a 2-core node for over a second, and every ordinary
/// task on it waited (the memory bench's `ready` line took 820 ms to reach its reader).
pub fn ordinary(thread: &str) {
    if let Err(error) = set_scheduler(nix::libc::SCHED_OTHER, 0) {
        debug!(thread, %error, "cannot drop to ordinary priority");
    }
}

/// `sched_setscheduler` on the calling thread (tid 0: Linux means the thread, POSIX the
/// process), by the raw system call: musl's `sched_setscheduler()` is a stub that always
/// fails with ENOSYS, which left the static builds at ordinary priority.
fn set_scheduler(policy: i32, priority: i32) -> std::io::Result<()> {
    // musl's sched_param has more fields than glibc's: start from zero on both.
    // SAFETY: sched_param is plain integers, for which all-zero is valid.
    let mut param: nix::libc::sched_param = unsafe { std::mem::zeroed() };
    param.sched_priority = priority;
    // SAFETY: plain syscall on this thread with a valid parameter.
    let rc = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_sched_setscheduler,
            0,
            policy,
            &param as *const nix::libc::sched_param,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
