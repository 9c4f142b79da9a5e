//! The command line's behaviour on bad input and on what the kernel cannot do: one line,
//! a distinct exit code, no panic.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a panic is how a test fails"
)]

use std::{os::unix::process::CommandExt, process::Command};

use tests::{observer_bin, Observer};

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(observer_bin())
        .args(args)
        .output()
        .expect("running oom-observer");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_no_panic(stderr: &str) {
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{stderr}"
    );
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let (code, _, err) = run(&["run", "--no-such-flag"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--no-such-flag"), "{err}");
    assert_no_panic(&err);
}

#[test]
fn unknown_hook_is_a_usage_error_naming_the_choices() {
    let (code, _, err) = run(&["run", "--hook", "uprobe"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("fentry") && err.contains("tracepoint"),
        "{err}"
    );
}

#[test]
fn bad_ring_size_is_a_usage_error() {
    let (code, _, err) = run(&["run", "--ring-kib", "3"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("power of two"), "{err}");
    // 1 GiB used to be accepted (2.1 GB resident): the bound is 16 MiB.
    let (code, _, err) = run(&["run", "--ring-kib", "1048576"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("16384 KiB"), "{err}");
}

#[test]
fn bad_cmdline_flags_are_usage_errors() {
    let (code, _, err) = run(&["run", "--cmdline", "hide"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("scrub") && err.contains("full") && err.contains("drop"),
        "{err}"
    );
    // `*` alone would hide every value; a space is no word.
    for bad in ["*", "pass word"] {
        let (code, _, err) = run(&["run", "--scrub-word", bad]);
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(err.contains("scrub word"), "{err}");
        assert_no_panic(&err);
    }
    // Words to scrub with, while nothing is scrubbed: a mistake said at once.
    let (code, _, err) = run(&["run", "--cmdline", "full", "--scrub-word", "token"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--scrub-word needs --cmdline scrub"), "{err}");
    assert_no_panic(&err);
}

#[test]
fn unreadable_btf_file_exits_5_with_one_line() {
    let (code, _, err) = run(&["run", "--btf", "/nonexistent/vmlinux.btf"]);
    assert_eq!(code, 5, "{err}");
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with("oom-observer: cannot use BTF from /nonexistent/vmlinux.btf"),
        "{err}"
    );
    assert_no_panic(&err);
}

#[test]
fn garbage_btf_file_exits_5() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("bad.btf");
    std::fs::write(&f, b"this is not BTF").unwrap();
    let (code, _, err) = run(&["check", "--btf", f.to_str().unwrap()]);
    assert_eq!(code, 5, "{err}");
    assert_no_panic(&err);
}

#[test]
fn btf_file_given_explicitly_is_used() {
    tests::v1_memory_root();
    let (code, out, err) = run(&["check", "--btf", "/sys/kernel/btf/vmlinux"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok (/sys/kernel/btf/vmlinux)"), "{out}");
}

#[test]
fn not_root_exits_3_with_one_line() {
    let out = Command::new(observer_bin())
        .arg("run")
        .uid(65534)
        .gid(65534)
        .output()
        .expect("running oom-observer as nobody");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.lines().last().unwrap_or("").contains("not permitted"),
        "{err}"
    );
    assert_no_panic(&err);
}

/// `check` and `run --hook` must agree: every strategy check calls usable runs, every
/// refused one fails with exit 4 and the reason.
#[test]
fn check_table_matches_what_run_can_attach() {
    tests::v1_memory_root();
    let (code, out, err) = run(&["check"]);
    assert_eq!(code, 0, "{out}{err}");
    for key in ["kernel", "btf", "cgroups", "privileges", "selected"] {
        assert!(
            out.lines().any(|l| l.starts_with(key)),
            "check lacks {key}:\n{out}"
        );
    }
    let mut seen = 0;
    for strategy in ["fentry", "kprobe", "tp_btf", "tracepoint"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("hook {strategy} ")))
            .unwrap_or_else(|| panic!("no row for {strategy}:\n{out}"));
        seen += 1;
        if line.contains(" ok") {
            let obs = Observer::start(&["--hook", strategy]);
            assert!(obs.stop().success());
        } else {
            assert!(line.contains("no: "), "{line}");
            let (code, _, err) = run(&["run", "--hook", strategy]);
            assert_eq!(code, 4, "forcing refused {strategy}: {err}");
            let last = err.lines().last().unwrap_or("");
            assert!(
                last.starts_with("oom-observer: no usable OOM hook") && last.contains(strategy),
                "{err}"
            );
        }
    }
    assert_eq!(seen, 4);
}

#[test]
fn check_without_btf_names_what_still_works() {
    tests::v1_memory_root();
    let (code, out, err) = run(&["check", "--no-btf"]);
    assert_eq!(code, 0, "the classic tracepoint still works: {out}{err}");
    assert!(out.contains("hook tracepoint    ok"), "{out}");
    assert!(
        out.contains("hook fentry        no: fentry: needs kernel BTF"),
        "{out}"
    );
    assert!(out.contains("selected           tracepoint"), "{out}");
    let (code, _, err) = run(&["check", "--no-btf", "--btf", "/x"]);
    assert_eq!(code, 2, "--btf and --no-btf conflict: {err}");
}

#[test]
fn audit_without_containerd_exits_2_with_one_line_naming_the_socket() {
    let (code, out, err) = run(&["audit", "--containerd-socket", "/nonexistent/cd.sock"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.lines().last().unwrap_or("").starts_with(
            "oom-observer: audit failed: cannot connect to containerd at /nonexistent/cd.sock"
        ),
        "{err}"
    );
    assert_no_panic(&err);
    // Like ctr, the socket comes from CONTAINERD_ADDRESS when no flag names one.
    let out = Command::new(observer_bin())
        .arg("audit")
        .env("CONTAINERD_ADDRESS", "/nonexistent/from-env.sock")
        .output()
        .expect("running oom-observer");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("/nonexistent/from-env.sock"), "{err}");
}

/// `--pin-dir` off a bpffs (here under a tmpfs or disk directory): exit 13, one line that
/// says what to do, and nothing created there.
#[test]
fn pin_dir_not_on_a_bpffs_exits_13_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pins");
    let (code, _, err) = run(&[
        "run",
        "--no-containerd",
        "--no-query",
        "--pin-dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 13, "{err}");
    let last = err.lines().last().unwrap_or("");
    assert_eq!(
        last,
        format!(
            "oom-observer: --pin-dir {}: not on a bpffs (mount one there: mount -t bpf bpf DIR)",
            dir.display()
        ),
        "{err}"
    );
    assert!(!dir.exists(), "nothing created off the bpffs");
    assert_no_panic(&err);
}
