//! `oomx-forker N`: forks N children that exit at once, reaping each; prints the elapsed
//! nanoseconds. The process-exit path is what the observer's exit hook taxes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test helper process: a panic fails the test that started it"
)]

use std::time::Instant;

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let start = Instant::now();
    for _ in 0..n {
        // SAFETY: the child only calls _exit, which is async-signal-safe.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: _exit is async-signal-safe; this child of fork runs nothing else.
            unsafe { libc::_exit(0) };
        }
        if pid < 0 {
            eprintln!("oomx-forker: fork: {}", std::io::Error::last_os_error());
            std::process::exit(1);
        }
        let mut status = 0;
        // SAFETY: `status` is a live i32 for waitpid(2) to write; `pid` is our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
    }
    println!("{}", start.elapsed().as_nanos());
}
