//! `oomx-loop MODE N`: one of the kernel paths the observer's programs sit on, N times in a
//! tight loop; prints the elapsed nanoseconds.
//!
//! - `fork`: fork a child that exits at once, reap it (the process-exit path);
//! - `pingpong`: two processes pinned to the same CPU bounce a byte over two pipes, so every
//!   message is a context switch (lmbench's `lat_ctx` shape);
//! - `signal`: send this process SIGUSR1, caught by a handler (every signal passes
//!   `signal_generate`);
//! - `term`: send a child SIGTERM, which it takes with sigwaitinfo: a fatal signal by
//!   default, so each takes the signal hook's whole path (the sender's cgroups, a map
//!   update), and the child lives on with its entry open until it exits at the end.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test helper process: a panic fails the test that started it"
)]

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Instant,
};

static CAUGHT: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_usr1(_: libc::c_int) {
    CAUGHT.fetch_add(1, Ordering::Relaxed);
}

fn fail(what: &str) -> ! {
    panic!("oomx-loop: {what}: {}", std::io::Error::last_os_error());
}

fn fork_exit(n: u64) {
    for _ in 0..n {
        // SAFETY: the child only calls _exit, which is async-signal-safe.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: _exit is async-signal-safe; this child of fork runs nothing else.
            unsafe { libc::_exit(0) };
        }
        if pid < 0 {
            fail("fork");
        }
        let mut status = 0;
        // SAFETY: `status` is a live i32 for waitpid(2) to write; `pid` is our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
    }
}

/// Pins the calling process to CPU 0.
fn pin_cpu0() {
    // SAFETY: `set` is a zeroed cpu_set_t, a plain bitmask, filled by CPU_SET before use.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            fail("sched_setaffinity");
        }
    }
}

fn pipe() -> [libc::c_int; 2] {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        fail("pipe");
    }
    fds
}

/// Moves one byte from `from` to `to`; false at end of file or on error.
fn relay(from: libc::c_int, to: libc::c_int) -> bool {
    let mut b = 0u8;
    // SAFETY: `b` is one writable byte for read(2), then one readable byte for write(2).
    unsafe {
        libc::read(from, (&mut b as *mut u8).cast(), 1) == 1
            && libc::write(to, (&b as *const u8).cast(), 1) == 1
    }
}

fn ping_pong(n: u64) {
    pin_cpu0();
    let (there, back) = (pipe(), pipe());
    // SAFETY: the child only reads and writes its pipes, then _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        fail("fork");
    }
    if pid == 0 {
        // SAFETY: closing this process's copies of the parent's ends, so that the parent's
        // close of `there[1]` is the end of file that stops this loop.
        unsafe {
            libc::close(there[1]);
            libc::close(back[0]);
        }
        while relay(there[0], back[1]) {}
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: the child's ends, not used by this process.
    unsafe {
        libc::close(there[0]);
        libc::close(back[1]);
    }
    let b = 1u8;
    for _ in 0..n {
        let mut r = 0u8;
        // SAFETY: one readable byte for write(2), one writable byte for read(2).
        let ok = unsafe {
            libc::write(there[1], (&b as *const u8).cast(), 1) == 1
                && libc::read(back[0], (&mut r as *mut u8).cast(), 1) == 1
        };
        if !ok {
            fail("pipe ping-pong");
        }
    }
    // SAFETY: closing our own write end ends the child's loop; `status` is a live i32.
    unsafe {
        libc::close(there[1]);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
    }
}

fn signals(n: u64) {
    // SAFETY: the handler only does an atomic add, which is async-signal-safe.
    unsafe {
        if libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) == libc::SIG_ERR
        {
            fail("signal");
        }
    }
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    for _ in 0..n {
        // SAFETY: a signal to ourselves, which the handler above catches.
        if unsafe { libc::kill(me, libc::SIGUSR1) } != 0 {
            fail("kill");
        }
    }
    assert_eq!(CAUGHT.load(Ordering::Relaxed), n, "every SIGUSR1 caught");
}

fn terms(n: u64) {
    // The child takes each SIGTERM with sigwaitinfo (blocked, so none is lost between two
    // waits) and acknowledges it on a pipe; SIGUSR2 ends it. The parent waits for each
    // acknowledgement before the next, so none merges with a pending one.
    let ack = pipe();
    // SAFETY: a zeroed sigset_t, filled by the libc calls before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live sigset_t; blocking is inherited by the child.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    // SAFETY: the child only waits for signals and writes its pipe, then _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        fail("fork");
    }
    if pid == 0 {
        // SAFETY: async-signal-safe calls on this child's own descriptors and `set`.
        unsafe {
            libc::close(ack[0]);
            let b = 1u8;
            libc::write(ack[1], (&b as *const u8).cast(), 1);
            loop {
                let sig = libc::sigwaitinfo(&set, std::ptr::null_mut());
                if sig == libc::SIGUSR2 {
                    libc::_exit(0);
                }
                if sig == libc::SIGTERM {
                    libc::write(ack[1], (&b as *const u8).cast(), 1);
                }
            }
        }
    }
    // SAFETY: the child's end, not used here; each read waits for one acknowledgement;
    // `status` is a live i32.
    unsafe {
        libc::close(ack[1]);
        let mut r = 0u8;
        if libc::read(ack[0], (&mut r as *mut u8).cast(), 1) != 1 {
            fail("child ready");
        }
        for _ in 0..n {
            if libc::kill(pid, libc::SIGTERM) != 0 {
                fail("kill");
            }
            if libc::read(ack[0], (&mut r as *mut u8).cast(), 1) != 1 {
                fail("child's acknowledgement");
            }
        }
        libc::kill(pid, libc::SIGUSR2);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let n: u64 = args.next().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let start = Instant::now();
    match mode.as_str() {
        "fork" => fork_exit(n),
        "pingpong" => ping_pong(n),
        "signal" => signals(n),
        "term" => terms(n),
        _ => {
            eprintln!("usage: oomx-loop fork|pingpong|signal|term N");
            std::process::exit(2);
        }
    }
    println!("{}", start.elapsed().as_nanos());
}
