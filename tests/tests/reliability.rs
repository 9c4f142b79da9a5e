//! Fault injection (issue 13): the daemon under the faults a node will hit, checked as an
//! operator would: every kill reported exactly once, every TaskOOM delivered exactly once,
//! no wrong verdict, a bounded delay. Real mounts, real containerd, real OOM kills.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a panic is how a test fails"
)]

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use tests::{
    containerd::{Containerd, Subscriber},
    events_in, Observer,
};

const READY: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(30);

/// A filesystem this test mounted on a directory it created (a tmpfs, or a bpffs whose pins
/// go with it); unmounted and removed on drop.
struct ScratchMount {
    dir: PathBuf,
}

impl ScratchMount {
    /// `mount -t <fstype> [-o <opts>]` on `dir`, created first.
    fn mount(dir: &Path, fstype: &str, opts: Option<&str>) -> ScratchMount {
        fs::create_dir_all(dir).unwrap();
        let mut cmd = Command::new("mount");
        cmd.args(["-t", fstype]);
        if let Some(o) = opts {
            cmd.args(["-o", o]);
        }
        let st = cmd
            .arg(format!("oomx-{fstype}"))
            .arg(dir)
            .status()
            .expect("mount");
        assert!(
            st.success(),
            "mount -t {fstype} -o {opts:?} {}",
            dir.display()
        );
        ScratchMount {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for ScratchMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = fs::remove_dir(&self.dir);
    }
}

/// A state directory that is full, one that is read-only, one that is a file, and a spool
/// holding bytes that are not UTF-8: each daemon starts, says once what is wrong with its
/// state directory and what it costs, and every TaskOOM of a kill made while containerd is
/// down is delivered exactly once after containerd is back (from memory where the disk
/// refused it).
#[test]
fn unusable_state_dirs_and_a_corrupt_spool_lose_no_taskoom() {
    let mut cd = Containerd::start();
    let scratch = cd.dir.join("state-faults");
    fs::create_dir_all(&scratch).unwrap();
    // Full: a 64 KiB tmpfs filled to the last page.
    let full_dir = scratch.join("full");
    let _full = ScratchMount::mount(&full_dir, "tmpfs", Some("size=64k,mode=0755"));
    {
        use std::io::Write;
        let mut f = fs::File::create(full_dir.join("filler")).unwrap();
        while f.write_all(&[0u8; 4096]).is_ok() {}
    }
    // Read-only.
    let ro_dir = scratch.join("ro");
    let _ro = ScratchMount::mount(&ro_dir, "tmpfs", Some("ro,size=64k"));
    // A file where the directory should be.
    let file_dir = scratch.join("a-file");
    fs::write(&file_dir, b"not a directory").unwrap();
    // A spool with bytes no JSON reader takes, and one good entry from a previous run.
    let corrupt_dir = scratch.join("corrupt");
    fs::create_dir_all(&corrupt_dir).unwrap();
    let mut bytes = b"\xff\xfe\n".to_vec();
    bytes.extend_from_slice(
        format!(
            "{{\"namespace\":\"{}\",\"container_id\":\"ghost\",\"ktime_ns\":1}}\n",
            cd.namespace
        )
        .as_bytes(),
    );
    bytes.extend_from_slice(b"{\"namespace\":\"x\",\"conta\xc3");
    fs::write(corrupt_dir.join("taskoom-spool.jsonl"), &bytes).unwrap();

    let socket = cd.socket.to_str().unwrap().to_string();
    let dirs = [&full_dir, &ro_dir, &file_dir, &corrupt_dir];
    let observers: Vec<Observer> = dirs
        .iter()
        .map(|d| {
            let o = Observer::spawn(
                &[
                    "--containerd-socket",
                    &socket,
                    "--state-dir",
                    d.to_str().unwrap(),
                ],
                READY,
            );
            o.wait_log("connected to containerd", WAIT);
            o
        })
        .collect();
    for (o, d) in observers.iter().zip(dirs).take(3) {
        let log = o.stderr_text();
        let warned: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("state directory unusable"))
            .collect();
        assert_eq!(warned.len(), 1, "one warning at start:\n{log}");
        assert!(
            warned[0].contains(d.to_str().unwrap()) && warned[0].contains("kept in memory only"),
            "it names the directory and the cost: {}",
            warned[0]
        );
    }
    let corrupt = &observers[3];
    corrupt.wait_log("skipped unreadable lines in the TaskOOM spool", WAIT);
    assert!(corrupt.stderr_text().contains("skipped_lines=2"));
    // The good entry of the corrupt spool goes out at start, containerd being up.
    corrupt.wait_log("delivered a spooled TaskOOM", WAIT);

    let id = "spool-fault";
    let mut ctr = cd.run_hog(id, 32, &[]);
    cd.wait_running(id);
    cd.stop();
    cd.go();
    let cg = cd.cgroup_of(id);
    for o in &observers {
        let evs = o.wait_for("the kill while containerd is down", WAIT, |e| {
            !events_in(e, "oom_kill", &cg).is_empty()
        });
        let kills = events_in(&evs, "oom_kill", &cg);
        assert_eq!(kills.len(), 1, "reported once");
        assert_eq!(kills[0]["container"]["id"], id);
        assert_eq!(kills[0]["published"], false, "containerd was down");
    }
    for o in &observers[..3] {
        o.wait_log("this TaskOOM waits in memory", WAIT);
    }
    let t0 = Instant::now();
    cd.restart();
    let sub = Subscriber::start(&cd.socket);
    for o in &observers {
        let deadline = Instant::now() + WAIT;
        while !o
            .stderr_text()
            .lines()
            .any(|l| l.contains("delivered a spooled TaskOOM") && l.contains(id))
        {
            assert!(
                Instant::now() < deadline,
                "never delivered:\n{}",
                o.stderr_text()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
    let delivered_after = t0.elapsed();
    // Give a duplicate time to show.
    thread::sleep(Duration::from_secs(2));
    for o in &observers {
        let log = o.stderr_text();
        let n = log
            .lines()
            .filter(|l| l.contains("delivered a spooled TaskOOM") && l.contains(id))
            .count();
        assert_eq!(n, 1, "delivered exactly once by each daemon:\n{log}");
    }
    let (ours, _) = sub.task_ooms(&cd.namespace, id);
    assert!(
        ours.len() <= observers.len(),
        "no duplicate reached containerd: {ours:#?}"
    );
    let (ghost, _) = sub.task_ooms(&cd.namespace, "ghost");
    assert!(
        ghost.is_empty(),
        "the ghost went out once, before: {ghost:#?}"
    );
    println!(
        "state-dir faults: {} daemons, every TaskOOM delivered once, {:.1} s after containerd returned",
        observers.len(),
        delivered_after.as_secs_f64()
    );
    drop(observers);
    let _ = ctr.kill();
    let _ = ctr.wait();
}

fn rfc3339(s: &str) -> std::time::SystemTime {
    humantime::parse_rfc3339(s).unwrap_or_else(|e| panic!("bad time {s:?}: {e}"))
}

/// containerd stopped (SIGSTOP: it accepts connections and never answers) while containers
/// are OOM-killed: the query socket answers at once the whole time, every kill's line comes
/// within the hand-off bound with `published: false`, and once containerd runs again every
/// TaskOOM reaches it.
#[test]
fn a_hung_containerd_delays_no_line_beyond_the_bound_and_no_query() {
    let cd = Containerd::start();
    let obs = cd.observer(READY);
    let sub = Subscriber::start(&cd.socket);
    let ids: Vec<String> = (0..3).map(|i| format!("hung-{i}")).collect();
    let mut ctrs: Vec<_> = ids.iter().map(|id| cd.run_hog(id, 32, &[])).collect();
    for id in &ids {
        cd.wait_running(id);
    }
    let cd_pid = cd.pid();
    signal(cd_pid, libc::SIGSTOP);
    let stopped = Instant::now();
    cd.go();
    // Ask all along, until every kill is on the stream.
    let mut worst_query = Duration::ZERO;
    let mut asked = 0;
    let deadline = Instant::now() + WAIT;
    loop {
        let t = Instant::now();
        let a = obs.ask("{\"pid\":1}");
        worst_query = worst_query.max(t.elapsed());
        asked += 1;
        assert_eq!(a["oom_killed"], false, "pid 1 was never OOM-killed: {a}");
        let evs = obs.events();
        if ids
            .iter()
            .all(|id| !events_in(&evs, "oom_kill", &cd.cgroup_of(id)).is_empty())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "kills missing:\n{}",
            obs.stderr_text()
        );
        // Asked often: a question that comes while a kill's record waits in the ring is
        // the one that once waited for the kill's hand-off (2.5 s in CI).
        thread::sleep(Duration::from_millis(2));
    }
    let mut worst_line = Duration::ZERO;
    for id in &ids {
        let cg = cd.cgroup_of(id);
        let timed = obs.events_timed();
        let kills: Vec<_> = timed
            .iter()
            .filter(|(e, _)| {
                e["event"] == "oom_kill"
                    && e["victim"]["cgroup"]
                        .as_str()
                        .is_some_and(|c| c.starts_with(&cg))
            })
            .collect();
        assert_eq!(kills.len(), 1, "reported once: {kills:?}");
        let (e, at) = kills[0];
        assert_eq!(e["container"]["id"], id.as_str(), "{e}");
        assert_eq!(e["published"], false, "containerd never answered: {e}");
        let delay = at
            .duration_since(rfc3339(e["time"].as_str().unwrap()))
            .unwrap_or_default();
        worst_line = worst_line.max(delay);
    }
    signal(cd_pid, libc::SIGCONT);
    let stalled = stopped.elapsed();
    for id in &ids {
        sub.wait_for("our TaskOOM once containerd runs", WAIT, |s| {
            s.iter().any(|x| {
                x.ours && x.topic == "/tasks/oom" && x.container_id.as_deref() == Some(id.as_str())
            })
        });
    }
    thread::sleep(Duration::from_secs(2));
    let mut duplicates = 0;
    for id in &ids {
        let (ours, _) = sub.task_ooms(&cd.namespace, id);
        duplicates += ours.len() - 1;
    }
    println!(
        "hung containerd: {} kills, {asked} queries, slowest answer {:.1} ms, slowest line {:.2} s after its kill, containerd stopped {:.1} s, duplicate TaskOOMs {duplicates}",
        ids.len(),
        worst_query.as_secs_f64() * 1e3,
        worst_line.as_secs_f64(),
        stalled.as_secs_f64()
    );
    assert!(
        worst_query < Duration::from_millis(500),
        "a query waited {worst_query:?}; daemon log:\n{}",
        obs.stderr_text()
    );
    // HANDOFF (2 s, counted from the kill) for the first kill, the others spooled at once,
    // and no disk write on the event thread: a line comes at most about 2 s after its kill.
    // 1 s of margin for a loaded 2-core machine (the test reads the lines at ordinary
    // priority). Before: up to 4.47 s under the full suite (the spool's fsyncs on the event
    // thread, and a wait counted from each kill's turn, not from the kill), and before that
    // each kill waited for containerd in turn (3 x 2 s and more) with queries blocked.
    assert!(
        worst_line < Duration::from_secs(3),
        "a line waited {worst_line:?}; daemon log:\n{}",
        obs.stderr_text()
    );
    // Only the first kill tried containerd (the others went straight to the spool). Its
    // publish timed out, and containerd took it when it ran again: the daemon waits for that
    // late answer before sending the entry again, so it arrives once. (Before: resent at
    // once, and taken twice in 5 of 6 runs.)
    assert_eq!(duplicates, 0, "duplicate TaskOOMs");
    for c in &mut ctrs {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn signal(pid: u32, sig: i32) {
    assert!(pid > 0);
    // SAFETY: a signal to the private containerd this test started.
    unsafe { libc::kill(pid as i32, sig) };
}

/// `--query-socket` naming a regular file, a directory or a symlink: the daemon refuses to
/// replace it (exit 10, one line naming the path) and the thing is still there.
#[test]
fn a_query_socket_path_holding_a_file_is_refused_not_removed() {
    let d = std::env::temp_dir().join(format!("oomx-qpath-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    let file = d.join("precious.txt");
    fs::write(&file, b"keep me").unwrap();
    let dir = d.join("a-dir");
    fs::create_dir(&dir).unwrap();
    for p in [&file, &dir] {
        let out = Command::new(tests::observer_bin())
            .args(["run", "--no-containerd", "--query-socket"])
            .arg(p)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(10), "{err}");
        let last = err.lines().last().unwrap_or("");
        assert!(
            last.contains(p.to_str().unwrap()) && last.contains("not a socket"),
            "one line naming it: {last}"
        );
    }
    assert_eq!(
        fs::read(&file).unwrap(),
        b"keep me",
        "the file is untouched"
    );
    assert!(dir.is_dir());
    fs::remove_dir_all(&d).unwrap();
}

/// 1,100 idle connections on the query socket (more than the daemon's descriptor limit):
/// a real query is still answered at once, and correctly.
#[test]
fn a_flood_of_idle_query_connections_holds_no_real_query_back() {
    let obs = Observer::start(&[]);
    let mut idle = Vec::new();
    let mut refused = 0;
    for _ in 0..1100 {
        match std::os::unix::net::UnixStream::connect(&obs.query_socket) {
            Ok(s) => idle.push(s),
            Err(_) => refused += 1,
        }
    }
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        let a = obs.ask("{\"pid\":1}");
        worst = worst.max(t.elapsed());
        assert_eq!(a["oom_killed"], false, "{a}");
    }
    println!(
        "query flood: {} idle connections opened ({refused} refused), slowest of 20 real queries {:.1} ms",
        idle.len(),
        worst.as_secs_f64() * 1e3
    );
    assert!(
        worst < Duration::from_millis(500),
        "a real query waited {worst:?}"
    );
    drop(idle);
    let st = obs.stop();
    assert_eq!(st.code(), Some(0), "still healthy, stopped cleanly");
}

/// SIGHUP is logged and the daemon keeps reporting kills (it used to exit 129).
#[test]
fn sighup_is_logged_and_the_daemon_keeps_running() {
    let obs = Observer::start(&[]);
    // SAFETY: a signal to the daemon this test started.
    unsafe { libc::kill(obs.pid() as i32, libc::SIGHUP) };
    obs.wait_log("SIGHUP: nothing to reload; still running", WAIT);
    let cg = tests::Memcg::new("hup");
    cg.limit_mb(32);
    let st = tests::run_hog(&cg.dir, &[]);
    assert!(tests::was_sigkilled(&st), "the hog was OOM-killed: {st:?}");
    let prefix = cg.path.clone();
    let evs = obs.wait_for("the kill after SIGHUP", WAIT, |e| {
        !events_in(e, "oom_kill", &prefix).is_empty()
    });
    assert_eq!(events_in(&evs, "oom_kill", &prefix).len(), 1);
    assert_eq!(obs.stop().code(), Some(0), "SIGTERM still stops it, exit 0");
}

/// Starts `/bin/sh -c <script>` with exactly host pid `pid` (clone3 with set_tid: what
/// checkpoint/restore uses; no sysctl is touched). Returns false if the pid is taken.
fn spawn_with_pid(pid: u32, script: &str) -> bool {
    #[repr(C)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    let tid: [i32; 1] = [pid as i32];
    let sh = std::ffi::CString::new("/bin/sh").unwrap();
    let c = std::ffi::CString::new("-c").unwrap();
    let s = std::ffi::CString::new(script).unwrap();
    let argv = [sh.as_ptr(), c.as_ptr(), s.as_ptr(), std::ptr::null()];
    let args = CloneArgs {
        flags: 0,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: tid.as_ptr() as u64,
        set_tid_size: 1,
        cgroup: 0,
    };
    // SAFETY: clone3 without CLONE_VM forks; the child only calls execv and _exit.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r == 0 {
        // SAFETY: in the clone3 child: `argv` is a NULL-terminated array of C strings that
        // outlive the call, and _exit is async-signal-safe.
        unsafe {
            libc::execv(sh.as_ptr(), argv.as_ptr());
            libc::_exit(127);
        }
    }
    r == pid as i64
}

fn start_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap()
}

/// An OOM-killed process's pid taken by a new process that exits normally: the query
/// never calls the new one OOM-killed — while it runs (its start time is read), and after
/// it is gone when the asker gives its start time; the victim itself still is.
#[test]
fn a_reused_pid_is_never_answered_oom_killed() {
    let obs = Observer::start(&[]);
    let cg = tests::Memcg::new("reuse");
    cg.limit_mb(32);
    let mut hog = tests::spawn_hog(&cg.dir, &[]);
    let victim = hog.id();
    let victim_start = start_ticks(victim);
    let st = hog.wait().unwrap();
    assert!(tests::was_sigkilled(&st), "{st:?}");
    obs.wait_for("the kill", WAIT, |e| {
        !events_in(e, "oom_kill", &cg.path).is_empty()
    });
    let a = obs.ask(&format!("{{\"pid\":{victim}}}"));
    assert_eq!(a["oom_killed"], true, "the victim: {a}");
    let a = obs.ask(&format!(
        "{{\"pid\":{victim},\"start_time\":{victim_start}}}"
    ));
    assert_eq!(a["oom_killed"], true, "the victim by its start time: {a}");
    // Let the clock tick past the kill, then a new process takes the victim's pid.
    thread::sleep(Duration::from_millis(50));
    assert!(
        spawn_with_pid(victim, "sleep 0.5; exit 0"),
        "pid {victim} taken again"
    );
    let new_start = start_ticks(victim);
    assert!(new_start > victim_start);
    let a = obs.ask(&format!("{{\"pid\":{victim}}}"));
    assert_eq!(a["oom_killed"], false, "the new process, running: {a}");
    let mut status = 0;
    // SAFETY: waits for the child this test started.
    unsafe { libc::waitpid(victim as i32, &mut status, 0) };
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    let a = obs.ask(&format!("{{\"pid\":{victim},\"start_time\":{new_start}}}"));
    assert_eq!(
        a["oom_killed"], false,
        "the new process, gone, by its start time: {a}"
    );
    let a = obs.ask(&format!(
        "{{\"pid\":{victim},\"start_time\":{victim_start}}}"
    ));
    assert_eq!(a["oom_killed"], true, "the victim still is: {a}");
}

/// containerd restarted in the middle of an OOM storm: three containers killed while it runs,
/// three while it is down. Every kill is reported once, in order; the first three are
/// published at once, the others delivered exactly once after it is back.
#[test]
fn a_containerd_restart_mid_storm_loses_and_repeats_nothing() {
    let mut cd = Containerd::start();
    let obs = cd.observer(READY);
    let sub = Subscriber::start(&cd.socket);
    let before: Vec<String> = (0..3).map(|i| format!("storm-a{i}")).collect();
    let during: Vec<String> = (0..3).map(|i| format!("storm-b{i}")).collect();
    let mut ctrs: Vec<_> = before.iter().map(|id| cd.run_hog(id, 32, &[])).collect();
    for id in &before {
        cd.wait_running(id);
    }
    cd.go();
    let parent = cd.cgroup_parent.clone();
    let seen_all = |ids: &[String]| {
        let cgs: Vec<String> = ids.iter().map(|id| format!("{parent}/{id}")).collect();
        move |e: &[serde_json::Value]| {
            cgs.iter()
                .all(|cg| !events_in(e, "oom_kill", cg).is_empty())
        }
    };
    obs.wait_for("the first three kills", WAIT, seen_all(&before));
    fs::remove_file(cd.rootfs.join("go")).unwrap();
    ctrs.extend(during.iter().map(|id| cd.run_hog(id, 32, &[])));
    for id in &during {
        cd.wait_running(id);
    }
    cd.stop();
    cd.go();
    obs.wait_for(
        "the three kills while containerd is down",
        WAIT,
        seen_all(&during),
    );
    cd.restart();
    for id in &during {
        let deadline = Instant::now() + WAIT;
        while !obs.stderr_text().lines().any(|l| {
            l.contains("delivered a spooled TaskOOM") && l.contains(&format!("container={id}"))
        }) {
            assert!(
                Instant::now() < deadline,
                "{id} never delivered:\n{}",
                obs.stderr_text()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
    thread::sleep(Duration::from_secs(2));
    let evs = obs.events();
    let mut seqs = Vec::new();
    for id in before.iter().chain(&during) {
        let kills = events_in(&evs, "oom_kill", &cd.cgroup_of(id));
        assert_eq!(kills.len(), 1, "{id} reported once");
        let k = kills[0];
        assert_eq!(k["container"]["id"], id.as_str());
        assert_eq!(k["published"], before.contains(id), "{k}");
        seqs.push(k["seq"].as_u64().unwrap());
    }
    let mut sorted = seqs.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        6,
        "six distinct kills in one sequence: {seqs:?}"
    );
    let log = obs.stderr_text();
    for id in &during {
        let n = log
            .lines()
            .filter(|l| {
                l.contains("delivered a spooled TaskOOM") && l.contains(&format!("container={id}"))
            })
            .count();
        assert_eq!(n, 1, "{id} delivered exactly once");
    }
    for id in &before {
        let (ours, _) = sub.task_ooms(&cd.namespace, id);
        assert_eq!(ours.len(), 1, "{id}: one TaskOOM: {ours:#?}");
    }
    println!("restart mid-storm: 6 kills, 6 lines, 3 published at once, 3 delivered once after the restart");
    for c in &mut ctrs {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A kill while containerd is away, in a container the daemon has never heard of (it
/// started while containerd was down): the line says `container: null`; once containerd is
/// back and listed, the kill is attributed and its TaskOOM delivered, once.
#[test]
fn a_kill_in_the_gap_is_attributed_once_containerd_is_back() {
    let mut cd = Containerd::start();
    let id = "gap-kill";
    let cg = cd.cgroup_of(id);
    // Detached (no `--rm`): the container outlives its kill in containerd's records.
    cd.run_detached(
        id,
        &tests::containerd::RunOpts {
            cgroup: Some(&cg),
            memory_limit_mb: Some(32),
            ..Default::default()
        },
        &[
            "/bin/sh",
            "-c",
            "while [ ! -e /go ]; do sleep 0.05; done; x=a; while :; do x=$x$x; done",
        ],
    );
    cd.wait_running(id);
    cd.stop();
    let socket = cd.socket.to_str().unwrap().to_string();
    let state = cd.observer_state();
    let obs = Observer::spawn(
        &[
            "--containerd-socket",
            &socket,
            "--state-dir",
            state.to_str().unwrap(),
        ],
        READY,
    );
    obs.wait_log("containerd unreachable", WAIT);
    cd.go();
    let evs = obs.wait_for("the kill in the gap", WAIT, |e| {
        !events_in(e, "oom_kill", &cg).is_empty()
    });
    let k = events_in(&evs, "oom_kill", &cg)[0].clone();
    assert!(
        k["container"].is_null(),
        "nothing knew the container yet: {k}"
    );
    cd.restart();
    obs.wait_log("connected to containerd", WAIT);
    obs.wait_log("attributed now", WAIT);
    let deadline = Instant::now() + WAIT;
    let delivered = |log: &str| {
        log.lines()
            .filter(|l| {
                (l.contains("delivered a spooled TaskOOM") || l.contains("published=true"))
                    && l.contains(&format!("container={id}"))
            })
            .count()
    };
    while delivered(&obs.stderr_text()) == 0 {
        assert!(
            Instant::now() < deadline,
            "never delivered:\n{}",
            obs.stderr_text()
        );
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(Duration::from_secs(2));
    assert_eq!(
        delivered(&obs.stderr_text()),
        1,
        "once:\n{}",
        obs.stderr_text()
    );
}

/// The memory hog every container of the restart test runs: `/go` is there from the start,
/// so it is killed at once.
const HOG: &str = "while [ ! -e /go ]; do sleep 0.05; done; x=a; while :; do x=$x$x; done";

/// A daemon restart during kills, with `--pin-dir` on a bpffs: stopped with SIGTERM while a
/// container is being killed, then two kills while it is down; restarted, one live kill,
/// then SIGKILLed and two more kills while it is down; started a third time (a second daemon
/// on the same pins is refused), stopped, a kill while down; started with another ring size
/// (another object identity: it replaces the pins), a live kill. Across the four runs' JSON
/// lines every kill is reported exactly once, in the order the kernel made them, each with
/// its container and `published: true`; containerd receives every TaskOOM exactly once, in
/// the same order; runs 2 and 3 found the programs attached instead of loading.
#[test]
fn a_daemon_restart_during_kills_loses_and_repeats_nothing() {
    let t0 = Instant::now();
    let cd = Containerd::start();
    let bpffs = ScratchMount::mount(&cd.dir.join("bpffs"), "bpf", None);
    let pins = bpffs.dir.join("oom-observer");
    let pin_args = ["--pin-dir", pins.to_str().unwrap()];
    let sub = Subscriber::start(&cd.socket);
    cd.go();
    let parent = cd.cgroup_parent.clone();
    let start = |id: &str| {
        let cg = cd.cgroup_of(id);
        cd.run_detached(
            id,
            &tests::containerd::RunOpts {
                cgroup: Some(&cg),
                memory_limit_mb: Some(32),
                ..Default::default()
            },
            &["/bin/sh", "-c", HOG],
        );
    };
    let wait_killed = |id: &str| {
        let deadline = Instant::now() + WAIT;
        loop {
            let out = cd.ctr(&["tasks", "ls"]);
            if String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.split_whitespace().next() == Some(id) && l.contains("STOPPED"))
            {
                return;
            }
            assert!(Instant::now() < deadline, "{id} was never killed");
            thread::sleep(Duration::from_millis(20));
        }
    };
    let kills_in = |evs: &[serde_json::Value]| -> Vec<String> {
        events_in(evs, "oom_kill", &parent)
            .iter()
            .map(|e| {
                assert_eq!(e["published"], true, "TaskOOM handed over at once: {e}");
                e["container"]["id"].as_str().unwrap_or("?").to_string()
            })
            .collect()
    };
    let saw = |ids: &'static [&'static str]| {
        let kills_in = &kills_in;
        move |evs: &[serde_json::Value]| {
            let k = kills_in(evs);
            ids.iter().all(|id| k.iter().any(|x| x == id))
        }
    };

    // Run 1: a live kill, then SIGTERM while the next container is being killed.
    let obs = cd.observer_with(READY, &pin_args);
    obs.wait_log("programs and maps pinned", WAIT);
    start("a0");
    obs.wait_for("a0's kill", WAIT, saw(&["a0"]));
    start("b0");
    let (status, evs1, log1) = obs.end(libc::SIGTERM);
    assert!(
        status.success(),
        "SIGTERM: a clean stop: {status:?}\n{log1}"
    );
    assert!(log1.contains("the programs stay attached"), "{log1}");
    let linked: Vec<String> = fs::read_dir(&pins)
        .unwrap()
        .flatten()
        .filter_map(|d| fs::read_dir(d.path().join("links")).ok())
        .flat_map(|d| d.flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        linked.iter().any(|l| l.starts_with("mark_victim")),
        "the links stay pinned after SIGTERM: {linked:?}"
    );
    // Down: b0's kill (if run 1 did not see it) and b1's.
    wait_killed("b0");
    start("b1");
    wait_killed("b1");

    // Run 2: finds the programs attached, reports what they recorded; a live kill; SIGKILL.
    let restarted = std::time::SystemTime::now();
    let obs = cd.observer_with(READY, &pin_args);
    obs.wait_log("reusing the programs pinned by an earlier run", WAIT);
    obs.wait_for("the kills made while down", WAIT, saw(&["b0", "b1"]));
    // From the start of run 2 to the arrival of its line for b1.
    let caught_up = obs
        .events_timed()
        .iter()
        .find(|(e, _)| e["container"]["id"] == "b1")
        .map(|(_, at)| at.duration_since(restarted).unwrap())
        .unwrap();
    start("c0");
    obs.wait_for("c0's kill", WAIT, saw(&["c0"]));
    let (status, evs2, log2) = obs.end(libc::SIGKILL);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{log2}");
    // Down again, after a death with no goodbye.
    for id in ["d0", "d1"] {
        start(id);
        wait_killed(id);
    }

    // Run 3.
    let obs = cd.observer_with(READY, &pin_args);
    obs.wait_log("reusing the programs pinned by an earlier run", WAIT);
    obs.wait_for("the kills made while down", WAIT, saw(&["d0", "d1"]));
    // A second daemon on the same pins would steal records from the first: refused.
    let second = Command::new(tests::observer_bin())
        .args(["run", "--no-containerd", "--no-query"])
        .args(pin_args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(13), "{err}");
    assert!(err.contains("another oom-observer uses it"), "{err}");
    // Anything repeated would have come right behind.
    thread::sleep(Duration::from_millis(500));
    let (_, evs3, log3) = obs.end(libc::SIGTERM);
    start("e0");
    wait_killed("e0");

    // Run 4, another ring size: another object identity. It loads and pins afresh, reads the
    // old rings for what they recorded before, and removes the old pins.
    let mut other = pin_args.to_vec();
    other.extend(["--ring-kib", "128"]);
    let obs = cd.observer_with(READY, &other);
    obs.wait_log("replacing the pins of another object", WAIT);
    obs.wait_for("the kill made while down", WAIT, saw(&["e0"]));
    start("f0");
    obs.wait_for("f0's kill", WAIT, saw(&["f0"]));
    let ids: Vec<_> = fs::read_dir(&pins).unwrap().flatten().collect();
    assert_eq!(ids.len(), 1, "only the new pins are left: {ids:?}");
    let (_, evs4, log4) = obs.end(libc::SIGTERM);

    let order = ["a0", "b0", "b1", "c0", "d0", "d1", "e0", "f0"];
    let runs = [
        kills_in(&evs1),
        kills_in(&evs2),
        kills_in(&evs3),
        kills_in(&evs4),
    ];
    let all: Vec<&str> = runs.iter().flatten().map(String::as_str).collect();
    assert_eq!(
        all, order,
        "every kill once, in order, across the runs ({runs:?})\nrun 1:\n{log1}\nrun 2:\n{log2}\nrun 3:\n{log3}\nrun 4:\n{log4}"
    );
    assert_eq!(
        runs[2],
        ["d0", "d1"],
        "run 3 reports exactly the kills made while down"
    );
    // In the kernel's order, by the kill's own clock.
    let ktimes: Vec<u64> = [&evs1, &evs2, &evs3, &evs4]
        .iter()
        .flat_map(|evs| events_in(evs, "oom_kill", &parent))
        .map(|e| e["ktime_ns"].as_u64().unwrap())
        .collect();
    assert!(ktimes.windows(2).all(|w| w[0] < w[1]), "{ktimes:?}");
    // containerd got each TaskOOM once, in the same order.
    thread::sleep(Duration::from_millis(300));
    let ooms: Vec<String> = sub
        .seen()
        .into_iter()
        .filter(|e| e.topic == "/tasks/oom" && e.ours && e.namespace == cd.namespace)
        .filter_map(|e| e.container_id)
        .collect();
    assert_eq!(ooms, order, "our TaskOOMs, in the order received");
    let took = t0.elapsed();
    println!(
        "daemon restart during kills: 8 kills over 4 runs (SIGTERM mid-kill, SIGKILL, SIGTERM, \
         another object), 8 lines, 8 TaskOOMs, in order; per run {runs:?}; run 2 wrote the line of the last \
         kill made while it was down {} ms after it was started; test took {:.1} s",
        caught_up.as_millis(),
        took.as_secs_f64()
    );
}
