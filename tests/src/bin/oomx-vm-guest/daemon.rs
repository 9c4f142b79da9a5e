//! A running `oom-observer run --hook S` in the guest, its JSON lines collected.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{mpsc, Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

pub const OBSERVER: &str = "/bin/oom-observer";

/// Loading parses the kernel's BTF and runs the verifier, both slow under emulation.
const READY_TIMEOUT: Duration = Duration::from_secs(180);

pub struct Daemon {
    child: Child,
    events: Arc<Mutex<Vec<Value>>>,
    not_json: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts the daemon with one forced strategy and waits for its `ready` log line.
    pub fn start(strategy: &str) -> Result<Daemon, String> {
        let mut child = Command::new(OBSERVER)
            .args(["run", "--hook", strategy])
            .env("OOM_OBSERVER_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting {OBSERVER}: {e}"))?;
        // The observer must outlive every OOM it reports, global ones included, as a node's
        // service unit would arrange.
        let _ = std::fs::write(format!("/proc/{}/oom_score_adj", child.id()), "-1000");
        let events = Arc::new(Mutex::new(Vec::new()));
        let not_json = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().ok_or("no stdout pipe")?;
        let (ev, bad) = (events.clone(), not_json.clone());
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => lock(&ev).push(v),
                    Err(_) => lock(&bad).push(line),
                }
            }
        });
        let err = child.stderr.take().ok_or("no stderr pipe")?;
        let se = stderr.clone();
        let (ready_tx, ready_rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if line.contains(" ready ") {
                    let _ = ready_tx.send(());
                }
                lock(&se).push(line);
            }
        });
        let mut d = Daemon {
            child,
            events,
            not_json,
            stderr,
        };
        if ready_rx.recv_timeout(READY_TIMEOUT).is_err() {
            let status = d.child.try_wait().ok().flatten();
            let why = format!(
                "oom-observer --hook {strategy} did not become ready (exit: {status:?}): {}",
                d.stderr_tail(6)
            );
            d.stop();
            return Err(why);
        }
        Ok(d)
    }

    /// The observer's resident and peak memory (`VmRSS`, `VmHWM` from its `status`), for the
    /// console: a guest has 256 MiB, and a global OOM with nothing killable panics it.
    pub fn memory(&self) -> String {
        tests::procfs::ProcStatus::read_or_empty(self.child.id())
            .lines_of(&["VmRSS", "VmHWM"])
            .join(", ")
    }

    pub fn events(&self) -> Vec<Value> {
        lock(&self.events).clone()
    }

    /// Stdout lines that were not JSON: each one is a schema violation.
    pub fn not_json(&self) -> Vec<String> {
        lock(&self.not_json).clone()
    }

    pub fn stderr_text(&self) -> String {
        lock(&self.stderr).join("\n")
    }

    pub fn stderr_tail(&self, n: usize) -> String {
        let s = lock(&self.stderr);
        s[s.len().saturating_sub(n)..].join(" | ")
    }

    /// Waits until `pred` holds for the events so far.
    pub fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&[Value]) -> bool,
    ) -> Result<Vec<Value>, Vec<Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            let evs = self.events();
            if pred(&evs) {
                return Ok(evs);
            }
            if Instant::now() > deadline {
                return Err(evs);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then SIGKILL after 20 s; returns how it ended.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if let Ok(Some(s)) = self.child.try_wait() {
            return Some(s);
        }
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                // Let the reader threads drain the pipes.
                thread::sleep(Duration::from_millis(100));
                return Some(s);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A poisoned lock only means a reader thread panicked; the data is still what it read.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
