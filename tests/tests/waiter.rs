//! A runtime shim's view: wait for the victim's exit (pidfd), ask the daemon at once, get
//! the right answer — every time. OOMX_WAITER_KILLS sets how many kills (default 200).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a panic is how a test fails"
)]

use std::{
    process::Command,
    time::{Duration, Instant},
};

use tests::{hog_bin, observer_bin, spawn_hog, was_sigkilled, Memcg, Observer};

fn pidfd_wait(pid: u32, timeout: Duration) -> bool {
    // SAFETY: pidfd_open(2) takes plain integers and returns a descriptor we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) } as i32;
    assert!(
        fd >= 0,
        "pidfd_open({pid}): {}",
        std::io::Error::last_os_error()
    );
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `p` is a live pollfd, the one entry poll(2) is told of.
    let r = unsafe { libc::poll(&mut p, 1, timeout.as_millis() as i32) };
    // SAFETY: `fd` is the pidfd opened above, closed once.
    unsafe { libc::close(fd) };
    r == 1
}

#[test]
fn waiter_asking_the_instant_the_victim_exits_is_always_right() {
    let kills: usize = std::env::var("OOMX_WAITER_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let obs = Observer::start(&[]);
    let cg = Memcg::new("waiter");
    cg.limit_mb(24);
    let started = Instant::now();
    let mut right = 0;
    let mut wrong = Vec::new();
    for i in 0..kills {
        let mut hog = spawn_hog(&cg.dir, &[]);
        let pid = hog.id();
        assert!(
            pidfd_wait(pid, Duration::from_secs(20)),
            "kill {i}: the hog never exited"
        );
        // The instant its exit is visible: ask.
        let a = obs.ask(&format!("{{\"pid\":{pid}}}"));
        if a["oom_killed"] == true && a["kills"][0]["tgid"] == pid {
            right += 1;
        } else {
            wrong.push((i, pid, a));
        }
        assert!(
            was_sigkilled(&hog.wait().unwrap()),
            "kill {i}: the hog was not OOM-killed"
        );
    }
    eprintln!(
        "WAITER {right}/{kills} right in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        wrong.is_empty(),
        "{} of {kills} answers wrong: {wrong:#?}",
        wrong.len()
    );
}

#[test]
fn a_process_that_exits_normally_was_not_oom_killed() {
    let obs = Observer::start(&[]);
    let cg = Memcg::new("clean-exit");
    cg.limit_mb(64);
    let mut hog = spawn_hog(&cg.dir, &["--max-mb", "8"]);
    let pid = hog.id();
    assert!(hog.wait().unwrap().success());
    let a = obs.ask(&format!("{{\"pid\":{pid}}}"));
    assert_eq!(a["oom_killed"], false, "{a}");
    let a = obs.ask(&format!("{{\"cgroup\":\"{}\"}}", cg.path));
    assert_eq!(a["oom_killed"], false, "{a}");
}

#[test]
fn query_command_exit_codes() {
    let obs = Observer::start(&[]);
    let cg = Memcg::new("query-cli");
    cg.limit_mb(24);
    let mut hog = spawn_hog(&cg.dir, &[]);
    let pid = hog.id();
    assert!(was_sigkilled(&hog.wait().unwrap()));
    let sock = obs.query_socket.to_str().unwrap().to_string();
    let q = |args: &[&str]| {
        Command::new(observer_bin())
            .arg("query")
            .args(args)
            .args(["--socket", &sock])
            .output()
            .unwrap()
    };
    let out = q(&["--pid", &pid.to_string()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&cg.path));
    let out = q(&["--cgroup", &cg.path, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kills"][0]["tgid"], pid);
    assert_eq!(
        v["kills"][0]["exit"]["signal"], 9,
        "the exit is paired with the kill: {v}"
    );
    let out = q(&["--pid", "1"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let out = q(&["--container", "no-such-container"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // Errors: no daemon on the socket; no question.
    let out = Command::new(observer_bin())
        .args(["query", "--pid", "1", "--socket", "/nonexistent.sock"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = Command::new(observer_bin())
        .args(["query", "--socket", &sock])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let _ = hog_bin();
}
