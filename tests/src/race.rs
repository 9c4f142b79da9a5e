//! The race behind Kubernetes' `Error` instead of `OOMKilled`, as one library both the host
//! test (`tests/tests/race.rs`, cgroup v1) and the cgroup v2 VM guests (`oomx-vm-guest` in
//! race mode) run: N real OOM kills of runc containers under a private containerd; per kill,
//! the order of our TaskOOM, containerd's own TaskOOM and TaskExit on containerd's event
//! stream, kill→event latencies, and a waiter (a shim's view: wait for the victim's exit by
//! pidfd, ask the query socket at once) that must be right every time.

use std::{
    collections::HashMap,
    fs,
    process::ExitStatus,
    time::{Duration, Instant, SystemTime},
};

use serde_json::Value;

use crate::{
    containerd::{Containerd, Seen},
    stats::{ms, pct},
};

/// One container OOM kill as the runner saw it.
#[derive(Debug)]
pub struct Kill {
    pub id: String,
    /// The container's task (the hog shell) as the node's pid namespace sees it.
    pub pid: u32,
    /// `ctr run`'s exit status (137 for an OOM-killed task).
    pub ctr_exit: Option<i32>,
    /// The query socket's answer for `pid`, asked the moment its pidfd turned readable.
    pub answer: Result<Value, String>,
}

impl Kill {
    /// What a runtime shim needs: "yes, OOM-killed", naming this very process.
    pub fn waiter_right(&self) -> bool {
        self.answer
            .as_ref()
            .is_ok_and(|a| a["oom_killed"] == true && a["kills"][0]["tgid"] == self.pid)
    }
}

/// Runs `ctr run --rm` hogs `parallel` at a time: each chunk starts, waits until every task
/// runs, opens a pidfd on each task, then lets them all go (the hogs wait for `/go`), and
/// asks `ask(pid)` the instant each pidfd says the task exited.
pub fn run_kills(
    cd: &Containerd,
    ids: &[String],
    parallel: usize,
    limit_mb: u64,
    extra: &[&str],
    ask: &dyn Fn(u32) -> Result<Value, String>,
) -> Result<Vec<Kill>, String> {
    let go = cd.rootfs.join("go");
    let mut out = Vec::new();
    for chunk in ids.chunks(parallel.max(1)) {
        let _ = fs::remove_file(&go);
        let mut ctrs: Vec<_> = chunk
            .iter()
            .map(|id| cd.run_hog(id, limit_mb, extra))
            .collect();
        let mut tasks = Vec::new();
        for id in chunk {
            cd.wait_running(id);
            let pid = cd.task_pid(id);
            tasks.push((id.clone(), pid, Pidfd::open(pid)?));
        }
        cd.go();
        let answers = wait_and_ask(&tasks, Duration::from_secs(120), ask)?;
        for ((id, pid, _), answer) in tasks.into_iter().zip(answers) {
            out.push(Kill {
                id,
                pid,
                ctr_exit: None,
                answer,
            });
        }
        let base = out.len() - chunk.len();
        for (i, c) in ctrs.iter_mut().enumerate() {
            let status: ExitStatus = c.wait().map_err(|e| format!("waiting for ctr: {e}"))?;
            out[base + i].ctr_exit = status.code();
        }
    }
    let _ = fs::remove_file(&go);
    Ok(out)
}

/// A pidfd (pidfd_open(2)), closed on drop.
pub struct Pidfd(i32);

impl Pidfd {
    pub fn open(pid: u32) -> Result<Pidfd, String> {
        // SAFETY: pidfd_open takes a pid and flags; the fd is owned by the returned value.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) } as i32;
        if fd < 0 {
            return Err(format!(
                "pidfd_open({pid}): {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(Pidfd(fd))
    }

    /// Waits until the process has exited (the pidfd turns readable); false on timeout.
    pub fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut p = libc::pollfd {
                fd: self.0,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut p, 1, left.as_millis().min(1000) as i32) };
            if r > 0 {
                return true;
            }
            if left.is_zero()
                || (r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR))
            {
                return false;
            }
        }
    }
}

impl Drop for Pidfd {
    fn drop(&mut self) {
        // SAFETY: our own fd.
        unsafe { libc::close(self.0) };
    }
}

/// Polls every pidfd together; each exit is answered by `ask` as soon as it is seen, as a
/// shim reaping its container would.
fn wait_and_ask(
    tasks: &[(String, u32, Pidfd)],
    timeout: Duration,
    ask: &dyn Fn(u32) -> Result<Value, String>,
) -> Result<Vec<Result<Value, String>>, String> {
    let mut answers: Vec<Option<Result<Value, String>>> = tasks.iter().map(|_| None).collect();
    let deadline = Instant::now() + timeout;
    while answers.iter().any(Option::is_none) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let ids: Vec<&str> = tasks
                .iter()
                .zip(&answers)
                .filter(|(_, a)| a.is_none())
                .map(|(t, _)| t.0.as_str())
                .collect();
            return Err(format!("tasks never exited: {ids:?}"));
        }
        let mut fds: Vec<libc::pollfd> = tasks
            .iter()
            .zip(&answers)
            .filter(|(_, a)| a.is_none())
            .map(|(t, _)| libc::pollfd {
                fd: t.2 .0,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: a valid array of pollfd for its length.
        let r = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                left.as_millis().min(1000) as i32,
            )
        };
        if r < 0 {
            return Err(format!("poll: {}", std::io::Error::last_os_error()));
        }
        for p in fds.iter().filter(|p| p.revents != 0) {
            if let Some(i) = tasks.iter().position(|t| t.2 .0 == p.fd) {
                answers[i] = Some(ask(tasks[i].1));
            }
        }
    }
    Ok(answers.into_iter().flatten().collect())
}

/// Asks a query socket (no extra process: as fast as a shim would).
pub fn ask_socket(socket: &std::path::Path, request: &str) -> Result<Value, String> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|e| format!("connecting to {}: {e}", socket.display()))?;
    s.write_all(format!("{request}\n").as_bytes())
        .map_err(|e| format!("writing the request: {e}"))?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| format!("reading the answer: {e}"))?;
    serde_json::from_str(out.trim()).map_err(|e| format!("answer {out:?}: {e}"))
}

/// Per path (ours or containerd's own TaskOOM): ordering against TaskExit and latency.
#[derive(Debug, Default)]
pub struct PathStats {
    pub before_exit: usize,
    pub after_exit: usize,
    pub missing: usize,
    /// Kill → containerd's envelope timestamp, ms.
    pub latency_ms: Vec<f64>,
}

/// The race's outcome over all kills.
#[derive(Debug, Default)]
pub struct Tally {
    pub n: usize,
    pub ours: PathStats,
    pub theirs: PathStats,
    /// Kill → TaskExit, ms.
    pub exit_ms: Vec<f64>,
    /// The OOM killer's decision → its kill (`decided_at` → `time`), ms, for the kills whose
    /// hook sees the decision (fentry, kprobe).
    pub decided_ms: Vec<f64>,
    /// Kills whose first TaskOOM from us reached containerd before the kill itself
    /// (`mark_victim`): published at the decision.
    pub ours_before_kill: usize,
    /// The OOM killer's decision → our TaskOOM's envelope timestamp, ms: how long the daemon
    /// took to hear of the decision and publish (the time the kernel's report gives it).
    pub decided_to_ours_ms: Vec<f64>,
    /// The kernel's stamp of each record → the daemon's read of it, ms, from the daemon's
    /// `record read` trace lines (see [`RECORD_TRACE`]): kill records (stamped at
    /// `mark_victim`, right before the kernel prints "Killed process"), victim exit records
    /// (no printk near them) and decisions (stamped before the OOM report is printed).
    pub read_ms: ReadDelays,
    /// Kills for which containerd got more than one TaskOOM from us.
    pub ours_twice: Vec<String>,
    /// Kills whose TaskOOM from us came after TaskExit or never.
    pub ours_late: Vec<String>,
    /// Kills no `oom_kill` event of ours named the container of.
    pub unnamed: Vec<String>,
    /// Kills the waiter got a wrong answer for (id, answer).
    pub waiter_wrong: Vec<(String, String)>,
    /// Kills whose `ctr run` did not exit 137.
    pub not_oom_killed: Vec<String>,
}

/// The log filter under which the daemon traces each record's read (`OOM_OBSERVER_LOG`):
/// what [`ReadDelays::from_log`] reads.
pub const RECORD_TRACE: &str = "info,observer::pipeline::processor=trace";

/// How long records waited in the ring buffer before the daemon read them, ms, sorted.
#[derive(Debug, Default, Clone)]
pub struct ReadDelays {
    /// Kill records (`mark_victim`).
    pub kill: Vec<f64>,
    /// Victim exit records.
    pub exit: Vec<f64>,
    /// OOM killer decisions (fentry/kprobe).
    pub decision: Vec<f64>,
}

impl ReadDelays {
    /// From the daemon's stderr under [`RECORD_TRACE`]: lines `... record read
    /// received_us=N kind=K`.
    pub fn from_log(stderr: &str) -> ReadDelays {
        let mut d = ReadDelays::default();
        for line in stderr.lines().filter(|l| l.contains("record read")) {
            let field = |k: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(k)?.parse::<u64>().ok())
            };
            let (Some(us), Some(kind)) = (field("received_us="), field("kind=")) else {
                continue;
            };
            let ms = us as f64 / 1000.0;
            match kind {
                1 => d.kill.push(ms),
                4 => d.exit.push(ms),
                6 => d.decision.push(ms),
                _ => {}
            }
        }
        for v in [&mut d.kill, &mut d.exit, &mut d.decision] {
            v.sort_by(|a, b| a.total_cmp(b));
        }
        d
    }
}

/// Reads the event stream (`seen`, in arrival order) and our JSON lines against the kills.
pub fn tally(namespace: &str, kills: &[Kill], seen: &[Seen], obs_events: &[Value]) -> Tally {
    // One of the kill lines' times (`time`, `decided_at`) by container id.
    let by_container = |field: &str| -> HashMap<String, SystemTime> {
        obs_events
            .iter()
            .filter(|e| e["event"] == "oom_kill")
            .filter_map(|e| {
                let id = e["container"]["id"].as_str()?.to_string();
                let t = humantime::parse_rfc3339(e[field].as_str()?).ok()?;
                Some((id, t))
            })
            .collect()
    };
    let kill_time = by_container("time");
    let decided_at = by_container("decided_at");
    let decided_ms: Vec<f64> = obs_events
        .iter()
        .filter(|e| e["event"] == "oom_kill")
        .filter_map(|e| {
            let k = humantime::parse_rfc3339(e["time"].as_str()?).ok()?;
            let d = humantime::parse_rfc3339(e["decided_at"].as_str()?).ok()?;
            Some(ms(d, k))
        })
        .collect();
    let mut t = Tally {
        n: kills.len(),
        decided_ms,
        ..Tally::default()
    };
    for k in kills {
        let id = k.id.as_str();
        if k.ctr_exit != Some(137) {
            t.not_oom_killed
                .push(format!("{id} (ctr exit {:?})", k.ctr_exit));
        }
        if !k.waiter_right() {
            let a = match &k.answer {
                Ok(v) => v.to_string(),
                Err(e) => e.clone(),
            };
            t.waiter_wrong.push((id.to_string(), a));
        }
        let mine: Vec<(usize, &Seen)> = seen
            .iter()
            .enumerate()
            .filter(|(_, e)| e.namespace == namespace && e.container_id.as_deref() == Some(id))
            .collect();
        let exit = mine
            .iter()
            .find(|(_, e)| e.topic == "/tasks/exit")
            .map(|(i, e)| (*i, *e));
        let kill = kill_time.get(id).copied();
        if kill.is_none() {
            t.unnamed.push(id.to_string());
        }
        if let (Some((_, e)), Some(k)) = (exit, kill) {
            if let Some(ts) = e.timestamp {
                t.exit_ms.push(ms(k, ts));
            }
        }
        let ours: Vec<&Seen> = mine
            .iter()
            .filter(|(_, e)| e.topic == "/tasks/oom" && e.ours)
            .map(|(_, e)| *e)
            .collect();
        if ours.len() > 1 {
            t.ours_twice.push(id.to_string());
        }
        if let (Some(first), Some(k)) = (ours.first().and_then(|e| e.timestamp), kill) {
            if first < k {
                t.ours_before_kill += 1;
            }
        }
        if let (Some(first), Some(d)) = (ours.first().and_then(|e| e.timestamp), decided_at.get(id))
        {
            t.decided_to_ours_ms.push(ms(*d, first));
        }
        for want_ours in [true, false] {
            let stats = if want_ours {
                &mut t.ours
            } else {
                &mut t.theirs
            };
            let first = mine
                .iter()
                .find(|(_, e)| e.topic == "/tasks/oom" && e.ours == want_ours);
            let late = match (first, exit) {
                (Some((i, e)), Some((xi, _))) => {
                    if let (Some(k), Some(ts)) = (kill, e.timestamp) {
                        stats.latency_ms.push(ms(k, ts));
                    }
                    if *i < xi {
                        stats.before_exit += 1;
                        false
                    } else {
                        stats.after_exit += 1;
                        true
                    }
                }
                (Some(_), None) => {
                    stats.after_exit += 1;
                    true
                }
                (None, _) => {
                    stats.missing += 1;
                    true
                }
            };
            if late && want_ours {
                t.ours_late.push(id.to_string());
            }
        }
    }
    for v in [
        &mut t.ours.latency_ms,
        &mut t.theirs.latency_ms,
        &mut t.exit_ms,
        &mut t.decided_ms,
        &mut t.decided_to_ours_ms,
    ] {
        v.sort_by(|a, b| a.total_cmp(b));
    }
    t
}

impl Tally {
    /// Everything a user would check: every container OOM-killed and named, our TaskOOM
    /// before TaskExit every time, the waiter right every time.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !self.not_oom_killed.is_empty() {
            p.push(format!("not OOM-killed: {:?}", self.not_oom_killed));
        }
        if !self.unnamed.is_empty() {
            p.push(format!("no oom_kill event named: {:?}", self.unnamed));
        }
        if !self.ours_late.is_empty() {
            p.push(format!(
                "our TaskOOM after TaskExit or missing: {:?}",
                self.ours_late
            ));
        }
        if !self.waiter_wrong.is_empty() {
            p.push(format!("waiter wrong: {:?}", self.waiter_wrong));
        }
        if !self.ours_twice.is_empty() {
            p.push(format!(
                "more than one TaskOOM of ours for one kill: {:?}",
                self.ours_twice
            ));
        }
        p
    }

    fn row(&self, name: &str, s: &PathStats) -> String {
        let l = &s.latency_ms;
        format!(
            "| {name} | {} | {:.1}% ({}) | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            self.n,
            100.0 * s.before_exit as f64 / self.n.max(1) as f64,
            s.before_exit,
            s.after_exit,
            s.missing,
            pct(l, 50.0),
            pct(l, 90.0),
            pct(l, 99.0),
            l.last().copied().unwrap_or(f64::NAN),
        )
    }

    /// The two rows (ours, containerd's own) of the race table.
    pub fn rows(&self) -> String {
        format!(
            "{}\n{}",
            self.row("oom-observer", &self.ours),
            self.row("containerd's own (runc shim)", &self.theirs)
        )
    }

    /// How long kill and exit records waited for the daemon, one line (empty without
    /// trace lines).
    pub fn read_line(&self) -> String {
        let r = &self.read_ms;
        if r.kill.is_empty() {
            return String::new();
        }
        let one = |name: &str, v: &[f64]| {
            format!(
                "{name} (n {}): p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
                v.len(),
                pct(v, 50.0),
                pct(v, 90.0),
                pct(v, 99.0),
                v.last().copied().unwrap_or(f64::NAN)
            )
        };
        let mut s = format!(
            "Record stamped → read by the daemon: {}; {}",
            one("kill records", &r.kill),
            one("victim exit records", &r.exit)
        );
        if !r.decision.is_empty() {
            s += &format!("; {}", one("decisions", &r.decision));
        }
        s + "."
    }

    /// Kill → TaskExit and the waiter, one line.
    pub fn exit_and_waiter(&self) -> String {
        let e = &self.exit_ms;
        format!(
            "kill→TaskExit: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms. \
             Waiter (pidfd exit → query socket): {}/{} right.",
            pct(e, 50.0),
            pct(e, 90.0),
            pct(e, 99.0),
            e.last().copied().unwrap_or(f64::NAN),
            self.n - self.waiter_wrong.len(),
            self.n
        )
    }
}

/// Header of the race table.
pub const TABLE_HEAD: &str = "| path | kills | TaskOOM before TaskExit | after TaskExit | no TaskOOM | kill→TaskOOM p50 | p90 | p99 | max |\n|---|---|---|---|---|---|---|---|---|";
