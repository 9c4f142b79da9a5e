//! Helpers for the integration tests: scratch memory cgroups that clean up after
//! themselves, a running `oom-observer` whose JSON lines are collected, and the hog.
//!
//! These tests touch only cgroups they create (named `oomx-<pid>-...`) and remove them on
//! drop, pass or fail.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "the integration tests' harness: a panic is how a test fails"
)]

use std::{
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc, Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod audit_v2;
pub mod bench;
pub mod containerd;
pub mod containerd_version;
pub mod cri;
pub mod deploy;
pub mod fake_apiserver;
pub mod forecast_bench;
pub mod load;
pub mod pod;
pub mod procfs;
pub mod prometheus;
pub mod race;
pub mod stats;

/// The event schema docs/events.md documents, `docs/event.schema.json`.
pub const EVENT_SCHEMA: &str = include_str!("../../docs/event.schema.json");

/// Why `event` does not match [`EVENT_SCHEMA`]: one line per violation, empty when it does.
pub fn schema_violations(event: &Value) -> Vec<String> {
    static VALIDATOR: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    let v = VALIDATOR.get_or_init(|| {
        let schema: Value =
            serde_json::from_str(EVENT_SCHEMA).expect("docs/event.schema.json is JSON");
        jsonschema::validator_for(&schema).expect("docs/event.schema.json is a valid JSON Schema")
    });
    v.iter_errors(event)
        .map(|e| format!("{} at {}: {event}", e, e.instance_path()))
        .collect()
}

/// The oom-observer binary under test (`cargo xtask test` sets `OOM_OBSERVER_BIN`).
pub fn observer_bin() -> PathBuf {
    bin_from_env("OOM_OBSERVER_BIN", "oom-observer")
}

/// The cost benchmarks' workload binary, `oomx-loop` (next to the hog).
pub fn loop_bin() -> PathBuf {
    hog_bin().with_file_name("oomx-loop")
}

/// The hog binary (`cargo xtask test` sets `OOMX_HOG_BIN`).
pub fn hog_bin() -> PathBuf {
    bin_from_env("OOMX_HOG_BIN", "oomx-hog")
}

fn bin_from_env(var: &str, name: &str) -> PathBuf {
    let p = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/debug")
            .join(name)
    });
    assert!(
        p.exists(),
        "{} not found: run the tests with `cargo xtask test`, which builds it",
        p.display()
    );
    p
}

/// The cgroup v1 memory hierarchy's mount point. These host tests need it: the project's
/// build and CI machines mount memory on cgroup v1 (cgroup v2 is covered in VMs).
pub fn v1_memory_root() -> PathBuf {
    let p = PathBuf::from("/sys/fs/cgroup/memory");
    assert!(
        p.join("memory.limit_in_bytes").exists(),
        "THIS TEST NEEDS a cgroup v1 memory hierarchy at {} (and root); this machine has none",
        p.display()
    );
    assert!(
        nix_is_root(),
        "THIS TEST NEEDS root to load eBPF programs and create cgroups"
    );
    p
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid(2) takes nothing and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A scratch memory cgroup (and any children made through it), removed on drop.
pub struct Memcg {
    /// Directory of the cgroup.
    pub dir: PathBuf,
    /// Path in the memory hierarchy, as the observer reports it.
    pub path: String,
    children: Mutex<Vec<PathBuf>>,
    root: PathBuf,
}

impl Memcg {
    /// Creates `oomx-<pid>-<n>-<tag>` at the top of the v1 memory hierarchy.
    pub fn new(tag: &str) -> Memcg {
        let root = v1_memory_root();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("oomx-{}-{n}-{tag}", std::process::id());
        let dir = root.join(&name);
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        Memcg {
            path: format!("/{name}"),
            dir,
            children: Mutex::new(Vec::new()),
            root,
        }
    }

    /// Creates exactly `name` at the top of the v1 memory hierarchy (a test whose cgroups
    /// must carry its own prefix, e.g. `oomx-forecast-`). Removed on drop like any other.
    pub fn named(name: &str) -> Memcg {
        let root = v1_memory_root();
        let dir = root.join(name);
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        Memcg {
            path: format!("/{name}"),
            dir,
            children: Mutex::new(Vec::new()),
            root,
        }
    }

    /// Creates a child cgroup; returns its directory and hierarchy path.
    pub fn child(&self, name: &str) -> (PathBuf, String) {
        let d = self.dir.join(name);
        fs::create_dir(&d).unwrap_or_else(|e| panic!("creating {}: {e}", d.display()));
        self.children.lock().unwrap().push(d.clone());
        (d, format!("{}/{name}", self.path))
    }

    /// Writes a control file of this cgroup (or of a child, by relative path).
    pub fn set(&self, file: &str, value: &str) {
        let f = self.dir.join(file);
        fs::write(&f, value).unwrap_or_else(|e| panic!("writing {value} to {}: {e}", f.display()));
    }

    /// Sets `memory.limit_in_bytes` in MiB.
    pub fn limit_mb(&self, mb: u64) {
        self.set("memory.limit_in_bytes", &(mb << 20).to_string());
    }

    /// Removes the cgroup now (killing what is left in it); used by tests that remove a
    /// cgroup right after its kill.
    pub fn remove_now(&self) {
        cleanup(&self.dir, &self.children.lock().unwrap());
    }

    /// The hierarchy root the cgroup was created in.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

fn kill_all(dir: &Path) {
    for _ in 0..200 {
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        let pids: Vec<i32> = procs
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        if pids.is_empty() {
            return;
        }
        for p in pids {
            // SAFETY: kill(2) takes plain integers and touches none of our memory.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        // A stalled (oom_kill_disable) task needs room to die.
        let _ = fs::write(dir.join("memory.limit_in_bytes"), "-1");
        thread::sleep(Duration::from_millis(10));
    }
}

fn cleanup(dir: &Path, children: &[PathBuf]) {
    for c in children.iter().rev() {
        if c.exists() {
            kill_all(c);
            rmdir_retry(c);
        }
    }
    if dir.exists() {
        kill_all(dir);
        rmdir_retry(dir);
    }
}

fn rmdir_retry(d: &Path) {
    for _ in 0..200 {
        if fs::remove_dir(d).is_ok() || !d.exists() {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
    eprintln!("WARNING: could not remove scratch cgroup {}", d.display());
}

/// Removes `path` (ours: an `oomx-` scratch cgroup) and what lies below it from every other
/// mounted cgroup hierarchy. runc with the cgroupfs driver creates a container's cgroup, and
/// so its parents, in every hierarchy it finds (the v1 controllers and the unified one),
/// and containerd removes only the container's own.
fn cleanup_other_hierarchies(path: &str, memory_root: &Path) {
    let Ok(mounts) = fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 || !(f[2] == "cgroup" || f[2] == "cgroup2") {
            continue;
        }
        let mount = Path::new(f[1]);
        if mount == memory_root {
            continue;
        }
        let dir = mount.join(path.trim_start_matches('/'));
        if dir.is_dir() {
            remove_tree(&dir);
        }
    }
}

/// Removes a cgroup directory and its descendants, deepest first.
fn remove_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    rmdir_retry(dir);
}

impl Drop for Memcg {
    fn drop(&mut self) {
        let children = std::mem::take(&mut *self.children.lock().unwrap());
        cleanup(&self.dir, &children);
        cleanup_other_hierarchies(&self.path, &self.root);
    }
}

/// Runs the hog in `cgroup_dir` and waits for it; returns its exit status.
pub fn run_hog(cgroup_dir: &Path, extra: &[&str]) -> ExitStatus {
    spawn_hog(cgroup_dir, extra)
        .wait()
        .expect("waiting for the hog")
}

/// Starts the hog in `cgroup_dir`.
pub fn spawn_hog(cgroup_dir: &Path, extra: &[&str]) -> Child {
    Command::new(hog_bin())
        .arg("--join")
        .arg(cgroup_dir)
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .expect("starting oomx-hog")
}

/// Killed by SIGKILL (what the OOM killer sends).
pub fn was_sigkilled(s: &ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    s.signal() == Some(libc::SIGKILL)
}

/// A running `oom-observer run`, collecting its JSON lines.
pub struct Observer {
    /// Its query socket.
    pub query_socket: PathBuf,
    /// Holds the query socket; removed with the observer.
    _scratch: tempfile::TempDir,
    child: Child,
    events: Arc<Mutex<Vec<Value>>>,
    arrivals: Arc<Mutex<Vec<std::time::SystemTime>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Lines that broke `docs/event.schema.json`; every read of the events fails on them.
    invalid: Arc<Mutex<Vec<String>>>,
    /// The threads reading stdout and stderr (joined by [`Observer::end`]).
    readers: Vec<thread::JoinHandle<()>>,
}

impl Observer {
    /// Starts `oom-observer run` with extra arguments and waits until it is ready.
    pub fn start(args: &[&str]) -> Observer {
        v1_memory_root();
        Observer::spawn(args, Duration::from_secs(30))
    }

    /// Starts `oom-observer run` without the host's cgroup v1 checks (the cgroup v2 VM
    /// guests use it), waiting up to `ready_timeout`: loading is slow under emulation.
    pub fn spawn(args: &[&str], ready_timeout: Duration) -> Observer {
        Observer::spawn_env(args, ready_timeout, &[])
    }

    /// [`Observer::spawn`], with variables added to its environment (`OOM_OBSERVER_LOG`).
    pub fn spawn_env(args: &[&str], ready_timeout: Duration, env: &[(&str, &str)]) -> Observer {
        // Kernel-only unless a test names a containerd: the machine's own containerd socket
        // (if any) is not the tests' business.
        let kernel_only = !args.contains(&"--containerd-socket");
        let scratch = tempfile::Builder::new()
            .prefix("oomx-q-")
            .tempdir()
            .expect("a scratch directory for the query socket");
        let query_socket = scratch.path().join("query.sock");
        // A run's choice of when TaskOOM goes out (`cargo xtask race --vm --append
        // oomx.taskoom=decision` sets it in the guests), unless the test names one itself.
        let taskoom_at: Vec<String> = match std::env::var("OOMX_TASKOOM_AT") {
            Ok(at) if !args.contains(&"--taskoom-at") => vec!["--taskoom-at".into(), at],
            _ => Vec::new(),
        };
        let mut child = Command::new(observer_bin())
            .arg("run")
            .args(args)
            .args(&taskoom_at)
            .args(if kernel_only {
                &["--no-containerd"][..]
            } else {
                &[][..]
            })
            .arg("--query-socket")
            .arg(&query_socket)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting oom-observer");
        let events = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let ev = events.clone();
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let arr = arrivals.clone();
        let invalid = Arc::new(Mutex::new(Vec::new()));
        let inv = invalid.clone();
        let out_reader = thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let at = std::time::SystemTime::now();
                let v: Value = match serde_json::from_str(&line) {
                    Ok(v) => v,
                    Err(e) => {
                        inv.lock()
                            .unwrap()
                            .push(format!("stdout line is not JSON ({e}): {line}"));
                        continue;
                    }
                };
                inv.lock().unwrap().extend(schema_violations(&v));
                // Both under one lock order: events first, then arrivals, same index.
                let mut e = ev.lock().unwrap();
                arr.lock().unwrap().push(at);
                e.push(v);
            }
        });
        let err = child.stderr.take().unwrap();
        let se = stderr.clone();
        let (ready_tx, ready_rx) = mpsc::channel();
        let err_reader = thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let ready = line.contains(" ready ") || line.ends_with(" ready");
                // Stored before "ready" is signalled, so a test sees every line up to it.
                se.lock().unwrap().push(line);
                if ready {
                    let _ = ready_tx.send(());
                }
            }
        });
        let mut obs = Observer {
            query_socket,
            _scratch: scratch,
            child,
            events,
            arrivals,
            stderr,
            invalid,
            readers: vec![out_reader, err_reader],
        };
        if ready_rx.recv_timeout(ready_timeout).is_err() {
            let status = obs.child.try_wait().ok().flatten();
            panic!(
                "oom-observer did not become ready (exit: {status:?}); stderr:\n{}",
                obs.stderr_text()
            );
        }
        obs
    }

    /// Everything the daemon logged so far.
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits until the daemon has logged a line containing `text`.
    pub fn wait_log(&self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.stderr_text().contains(text) {
            if Instant::now() > deadline {
                panic!(
                    "oom-observer never logged {text:?}; stderr:\n{}",
                    self.stderr_text()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Panics on any line that broke the documented schema.
    fn assert_schema(&self) {
        let bad = self.invalid.lock().unwrap();
        assert!(
            bad.is_empty(),
            "events that do not match docs/event.schema.json:\n{}",
            bad.join("\n")
        );
    }

    /// Events so far, each with the moment its line was read from the daemon's stdout.
    pub fn events_timed(&self) -> Vec<(Value, std::time::SystemTime)> {
        self.assert_schema();
        let e = self.events.lock().unwrap();
        let a = self.arrivals.lock().unwrap();
        e.iter().cloned().zip(a.iter().copied()).collect()
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Events so far (each checked against the schema).
    pub fn events(&self) -> Vec<Value> {
        self.assert_schema();
        self.events.lock().unwrap().clone()
    }

    /// Waits until `pred` holds for the events seen so far, or panics after `timeout`.
    pub fn wait_for<F: Fn(&[Value]) -> bool>(
        &self,
        what: &str,
        timeout: Duration,
        pred: F,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let evs = self.events();
            if pred(&evs) {
                return evs;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; events:\n{}\nstderr:\n{}",
                    pretty(&evs),
                    self.stderr_text()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asks the daemon's query socket directly (no extra process: as fast as a shim would).
    pub fn ask(&self, request: &str) -> Value {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&self.query_socket)
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.query_socket.display()));
        s.write_all(request.as_bytes()).unwrap();
        s.write_all(b"\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("answer {out:?}: {e}"))
    }

    /// Stops the daemon with SIGTERM and returns its exit status.
    pub fn stop(mut self) -> ExitStatus {
        self.terminate()
    }

    /// Sends `sig` and waits for the daemon to end; returns its exit status with every line
    /// it wrote (stdout and stderr read to their end).
    pub fn end(mut self, sig: i32) -> (ExitStatus, Vec<Value>, String) {
        // SAFETY: kill(2) takes plain integers and touches none of our memory.
        unsafe { libc::kill(self.child.id() as i32, sig) };
        let status = self.terminate();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        (status, self.events(), self.stderr_text())
    }

    fn terminate(&mut self) -> ExitStatus {
        // SAFETY: kill(2) takes plain integers and touches none of our memory.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return self.child.wait().expect("wait");
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

/// Events of a kind whose victim is in `cgroup_prefix` or below it (for `memcg_oom`, whose
/// OOM cgroup is).
pub fn events_in<'a>(evs: &'a [Value], kind: &str, cgroup_prefix: &str) -> Vec<&'a Value> {
    evs.iter()
        .filter(|e| e["event"] == kind)
        .filter(|e| {
            let victim = e["victim"]["cgroup"].as_str().unwrap_or("");
            let oom = e["oom_cgroup"]["path"].as_str().unwrap_or("");
            let under = |p: &str| p == cgroup_prefix || p.starts_with(&format!("{cgroup_prefix}/"));
            under(victim) || (victim.is_empty() && under(oom))
        })
        .collect()
}

/// Pretty-prints events for a failure message.
pub fn pretty(evs: &[Value]) -> String {
    evs.iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}
