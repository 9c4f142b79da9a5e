//! Real-time priority, so that a busy node cannot delay TaskOOM behind the container's exit.

use tracing::{info, warn};

/// The daemon sleeps until the kernel hands it a kill, then races the container's exit
/// through the runtime shim and containerd. At SCHED_FIFO priority 1 it runs the moment it
/// is woken, ahead of every ordinary task on a saturated node; it is idle otherwise, and the
/// kernel's real-time throttling bounds it should it ever spin.
pub fn raise() {
    // musl's sched_param has more fields than glibc's: start from zero on both.
    // SAFETY: sched_param is plain integers, for which all-zero is valid.
    let mut param: nix::libc::sched_param = unsafe { std::mem::zeroed() };
    param.sched_priority = 1;
    // The raw system call: musl's sched_setscheduler() is a stub that always fails with
    // ENOSYS (POSIX means the process, Linux the thread), which left the static builds at
    // ordinary priority.
    // SAFETY: plain syscall on this process with a valid parameter.
    let rc = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_sched_setscheduler,
            0,
            nix::libc::SCHED_FIFO,
            &param as *const nix::libc::sched_param,
        )
    };
    if rc == 0 {
        info!("running at real-time priority (SCHED_FIFO 1)");
    } else {
        warn!(
            error = %std::io::Error::last_os_error(),
            "cannot take real-time priority (needs CAP_SYS_NICE); a busy node may delay TaskOOM"
        );
    }
}
