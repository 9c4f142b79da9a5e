//! The kubelet rows: the same pods with and without oom-observer, idle and loaded, on a
//! [`CriNode`], tallied by what the CRI reported.

use std::{
    thread,
    time::{Duration, Instant},
};

use super::{CriNode, Outcome, Verdict, Workload};

/// Tally of outcomes for one row of the report.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub kills: usize,
    pub oomkilled_at_exit: usize,
    pub oomkilled_later: usize,
    pub error: usize,
    pub other: usize,
}

impl Tally {
    /// Counts: `error`/`other` classify the reading at exit.
    pub fn of(outcomes: &[Outcome]) -> Tally {
        let mut t = Tally::default();
        for o in outcomes {
            t.kills += 1;
            match o.at_exit.verdict() {
                Verdict::OomKilled => t.oomkilled_at_exit += 1,
                Verdict::Error => t.error += 1,
                Verdict::Other => t.other += 1,
            }
            if o.later.verdict() == Verdict::OomKilled {
                t.oomkilled_later += 1;
            }
        }
        t
    }
}

/// The comparison rows: the same pods with and without oom-observer, idle and loaded.
#[derive(Debug, Clone)]
pub struct RowSpec {
    /// Pods per row.
    pub kills: usize,
    /// Pods at once.
    pub parallel: usize,
    /// The pods' limit and their containers'.
    pub pod_limit_mb: u64,
    pub limit_mb: u64,
    /// Busy loops on the starved CPU (kernel.md: 8 lose containerd's own path reliably in
    /// the cgroup v2 guests).
    pub starve_loops: usize,
    /// How long a loaded row waits for each kill after it lets the pods go
    /// ([`CriNode::kill_bound`]); idle rows wait [`super::KILL_BOUND`].
    pub loaded_kill_bound: Duration,
    /// The rows without oom-observer too: containerd alone, the baseline the pages compare
    /// against. Only the rows with it can fail on the kubelet's reason.
    pub baseline: bool,
}

impl RowSpec {
    /// The sizes the host and the guests use.
    pub fn new(kills: usize) -> RowSpec {
        RowSpec {
            kills,
            parallel: 2,
            pod_limit_mb: 128,
            limit_mb: 64,
            starve_loops: 8,
            loaded_kill_bound: super::KILL_BOUND,
            baseline: true,
        }
    }
}

/// oom-observer while a row runs ([`CriNode::observer`]).
pub enum RowObserver {
    /// `oom-observer run`, started by the harness.
    Process(crate::Observer),
    /// The node's unit, started by systemd.
    Unit(super::systemd::UnitRun),
}

impl RowObserver {
    /// Its events so far.
    pub fn events(&self) -> Vec<serde_json::Value> {
        match self {
            RowObserver::Process(o) => o.events(),
            RowObserver::Unit(u) => u.events(),
        }
    }
}

/// One row of `docs/kubelet.json`.
#[derive(Debug, Clone)]
pub struct Row {
    /// The node's cgroup driver (`cgroupfs`, `systemd`).
    pub cgroup_driver: &'static str,
    /// `idle` or `loaded`.
    pub load: &'static str,
    /// Whether oom-observer ran.
    pub observer: bool,
    pub tally: Tally,
    /// With the observer: kills whose published kill line named the container's init.
    pub named: Option<usize>,
    /// Exit visible → first EXITED status: p50, p90, p99, max (ms).
    pub read_ms: [f64; 4],
    /// Containers whose status did not end with exit code 137.
    pub not_137: usize,
    /// Containers the CRI did not report EXITED within the harness's bound after their
    /// init's exit (the "at exit" read is then a RUNNING one).
    pub not_exited: usize,
    /// Containers whose first EXITED read had an exit code other than 137. containerd's CRI
    /// sets `FinishedAt` and `ExitCode` in one locked update, so a RUNNING read whose reason
    /// the TaskOOM already set (OOMKilled, exit code 0) is never an EXITED one
    /// (docs/compat.md).
    pub at_exit_not_137: usize,
    /// Wall time of the row, s.
    pub seconds: f64,
    /// For each container not read as OOMKilled at exit: containerd's events for it, in
    /// stream order, in ms relative to that first EXITED read.
    pub misread: Vec<String>,
}

impl Row {
    /// What is wrong with the row: a pod not SIGKILLed; with oom-observer, a container not
    /// read as OOMKilled a second after its exit, or a kill line missing; with `at_exit`, also
    /// a container not read as OOMKilled at its exit.
    ///
    /// At exit is a goal, not a guarantee, on containerd 1.6: its CRI records an exit from
    /// `task.Wait()` in a goroutine of its own while TaskOOMs queue in its single event loop,
    /// so a TaskOOM that reached containerd first can still be applied second (measured:
    /// docs/kubelet.md). The README's test command checks the guarantee; `cargo xtask
    /// kubelet` reports the goal and fails when it is missed.
    pub fn problems(&self, at_exit: bool) -> Vec<String> {
        let mut p = Vec::new();
        let name = format!("{} observer={}", self.load, self.observer);
        if self.not_exited > 0 {
            p.push(format!(
                "{name}: {} containers were not EXITED in the CRI within the bound after their exit",
                self.not_exited
            ));
        }
        if self.at_exit_not_137 > 0 {
            p.push(format!(
                "{name}: {} containers' first EXITED read had an exit code other than 137",
                self.at_exit_not_137
            ));
        }
        if self.not_137 > 0 {
            p.push(format!(
                "{name}: {} containers did not end with exit code 137",
                self.not_137
            ));
        }
        if self.observer {
            if self.tally.oomkilled_later != self.tally.kills {
                p.push(format!(
                    "{name}: {:?}: not every container read OOMKilled a second after its exit",
                    self.tally
                ));
            }
            if at_exit && self.tally.oomkilled_at_exit != self.tally.kills {
                p.push(format!(
                    "{name}: {:?}: not every container read OOMKilled at exit",
                    self.tally
                ));
            }
            if self.named != Some(self.tally.kills) {
                p.push(format!(
                    "{name}: {:?} of {} kills had a published kill line naming the init",
                    self.named, self.tally.kills
                ));
            }
        }
        p
    }
}

/// The architecture as the docs name it.
pub fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        a => a,
    }
}

/// Runs the four rows (idle and loaded, each without and with oom-observer) on `node`. The
/// pods' kill runs on CPU 0 and their victim exits on CPU 1 ([`Workload::Starved`]);
/// "loaded" is the bench's loaded node ([`Load`]) plus CPU 0 starved ([`Starve`]).
pub fn rows(node: &mut CriNode, spec: &RowSpec, observer_ready: Duration) -> Vec<Row> {
    use crate::load::{Load, Starve};
    let cpus = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    assert!(
        cpus >= 2,
        "THIS NEEDS 2 CPUs (a starved one and the victim's)"
    );
    let workload = Workload::Starved {
        trigger_cpu: 0,
        victim_cpu: 1,
    };
    // containerd's event stream, to tell a late TaskOOM from a CRI that read the exit first.
    let sub = crate::containerd::Subscriber::start(&node.cd.socket);
    let mut rows = Vec::new();
    for load in ["idle", "loaded"] {
        for observer in [false, true].into_iter().filter(|o| *o || spec.baseline) {
            let busy = (load == "loaded").then(|| {
                (
                    Load::start(2),
                    Starve::start(&node.tree, 0, spec.starve_loops),
                )
            });
            let obs = observer.then(|| node.observer(observer_ready));
            node.kill_bound = if load == "loaded" {
                spec.loaded_kill_bound
            } else {
                super::KILL_BOUND
            };
            let t0 = Instant::now();
            let outcomes = node.run_kills(
                spec.kills,
                spec.parallel,
                spec.pod_limit_mb,
                spec.limit_mb,
                workload,
            );
            let seconds = t0.elapsed().as_secs_f64();
            node.kill_bound = super::KILL_BOUND;
            let named = obs.as_ref().map(|o| {
                // The kill line precedes our TaskOOM, which precedes the exit's handling:
                // every one is out by now; a moment for the last lines to be read.
                thread::sleep(Duration::from_millis(500));
                let evs = o.events();
                outcomes
                    .iter()
                    .filter(|oc| {
                        evs.iter().any(|e| {
                            e["event"] == "oom_kill"
                                && e["container"]["id"] == oc.pod.container_id.as_str()
                                && e["victim"]["tgid"] == oc.pod.pid
                                && e["published"] == true
                        })
                    })
                    .count()
            });
            drop(obs);
            if let Some((l, s)) = busy {
                drop(s);
                l.stop();
            }
            let tally = Tally::of(&outcomes);
            let mut read_ms: Vec<f64> = outcomes
                .iter()
                .map(|o| o.at_exit.after_exit.as_secs_f64() * 1e3)
                .collect();
            eprintln!(
                "kubelet row: {load} observer={observer}: {tally:?}, named {named:?}, {seconds:.1} s"
            );
            thread::sleep(Duration::from_millis(200));
            let seen = sub.seen();
            let mut misread = Vec::new();
            for o in outcomes
                .iter()
                .filter(|o| o.at_exit.verdict() != Verdict::OomKilled)
            {
                let line = misread_line(o, &seen);
                eprintln!("  {line}\n    at exit {:?}, later {:?}", o.at_exit, o.later);
                misread.push(line);
            }
            rows.push(Row {
                cgroup_driver: node.cgroup_driver(),
                load,
                observer,
                tally,
                named,
                read_ms: crate::stats::summary(&mut read_ms),
                not_137: outcomes.iter().filter(|o| o.later.exit_code != 137).count(),
                not_exited: outcomes
                    .iter()
                    .filter(|o| o.at_exit.state != "CONTAINER_EXITED")
                    .count(),
                at_exit_not_137: outcomes
                    .iter()
                    .filter(|o| o.at_exit.state == "CONTAINER_EXITED" && o.at_exit.exit_code != 137)
                    .count(),
                seconds,
                misread,
            });
        }
    }
    rows
}

/// One misread container: its status at exit and containerd's events for it (TaskOOM ours or
/// the shim's, TaskExit), in stream order, in ms from containerd's envelope timestamp to the
/// status read that said EXITED.
fn misread_line(o: &Outcome, seen: &[crate::containerd::Seen]) -> String {
    // Runs of one kind, in stream order: (kind, count, first ms, last ms).
    let mut ev: Vec<(&str, usize, f64, f64)> = Vec::new();
    for e in seen.iter().filter(|e| {
        e.namespace == "k8s.io"
            && e.container_id.as_deref() == Some(o.pod.container_id.as_str())
            && (e.topic == "/tasks/oom" || e.topic == "/tasks/exit")
    }) {
        let what = match (e.topic.as_str(), e.ours) {
            ("/tasks/oom", true) => "our TaskOOM",
            ("/tasks/oom", false) => "shim's TaskOOM",
            _ => "TaskExit",
        };
        let ms = e
            .timestamp
            .map(|t| crate::stats::ms(o.at_exit.at, t))
            .unwrap_or(f64::NAN);
        match ev.last_mut() {
            Some(last) if last.0 == what => {
                last.1 += 1;
                last.3 = ms;
            }
            _ => ev.push((what, 1, ms, ms)),
        }
    }
    let ev: Vec<String> = ev
        .into_iter()
        .map(|(what, n, a, b)| {
            if n == 1 {
                format!("{what} {a:+.1} ms")
            } else {
                format!("{n}× {what} {a:+.1} … {b:+.1} ms")
            }
        })
        .collect();
    format!(
        "{} read {} {} ({}) at exit, {} 1 s later; events from that read: {}",
        o.pod.name,
        o.at_exit.state,
        o.at_exit.reason,
        o.at_exit.exit_code,
        o.later.reason,
        if ev.is_empty() {
            "none".to_string()
        } else {
            ev.join(", ")
        }
    )
}
