//! The kills this daemon run has seen, and the answers drawn from them.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::{
    event::{ContainerRef, Event, ExitInfo, Explained, VictimFacts},
    host::{
        cgroup_path::is_under,
        procfs::{clock_ticks, proc_start, ProcStart},
    },
    kernel::{clock::boot_rfc3339, maps::Victim},
};

/// Kills remembered for queries (the kernel's victim map holds more, by pid).
const HISTORY: usize = 16384;

/// What is asked.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Query {
    /// A process (thread or process id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// A container id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Restricts `container` to a containerd namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// A cgroup path (in the memory controller's hierarchy); kills in it or below it count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// With `pid`: the process's start time (field 22 of `/proc/<pid>/stat`, clock ticks
    /// since boot), which tells it from an earlier process with the same pid even after
    /// it is gone. Without it, a live process with that pid that started after the kill
    /// (or runs after the victim's exit) is not the victim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<u64>,
}

impl Query {
    fn is_valid(&self) -> bool {
        [
            self.pid.is_some(),
            self.container.is_some(),
            self.cgroup.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count()
            == 1
    }
}

/// The victim's exit, once seen.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExitSeen {
    /// When it exited (RFC 3339).
    pub time: String,
    /// `CLOCK_BOOTTIME` of the exit.
    pub ktime_ns: u64,
    /// The signal that ended it.
    pub signal: Option<i32>,
}

/// One remembered kill.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Kill {
    /// `seq` of its `oom_kill` event (0 when known only from the kernel's map).
    pub seq: u64,
    /// When (RFC 3339).
    pub time: String,
    /// `CLOCK_BOOTTIME` of the kill.
    pub ktime_ns: u64,
    /// Victim thread id.
    pub pid: Option<u32>,
    /// Victim process id.
    pub tgid: Option<u32>,
    /// Victim command.
    pub comm: Option<String>,
    /// Victim cgroup path.
    pub cgroup: Option<String>,
    /// The container it was attributed to.
    pub container: Option<ContainerRef>,
    /// The exit, once seen.
    pub exit: Option<ExitSeen>,
    /// The victim at its kill (memory, badness, what ran).
    #[serde(flatten, default)]
    pub facts: VictimFacts,
    /// Why it was killed, and what happens now.
    #[serde(flatten, default)]
    pub explained: Explained,
    /// The victim's start time (clock ticks since boot, as in `/proc/<pid>/stat`), read
    /// when the kill was handled; `null` if it was already gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<u64>,
}

impl Kill {
    /// A kill the daemon has not seen (an earlier run's, or one whose record was lost),
    /// from the kernel's own victim map.
    pub fn from_victim(v: Victim) -> Kill {
        let s = v.state;
        Kill {
            seq: 0,
            facts: Default::default(),
            explained: Default::default(),
            time: boot_rfc3339(s.kill_ktime_ns),
            ktime_ns: s.kill_ktime_ns,
            pid: Some(s.pid),
            tgid: Some(v.tgid),
            comm: None,
            cgroup: None,
            container: None,
            exit: (s.exit_ktime_ns != 0).then(|| ExitSeen {
                time: boot_rfc3339(s.exit_ktime_ns),
                ktime_ns: s.exit_ktime_ns,
                signal: ExitInfo::from_status(s.exit_code).signal,
            }),
            start_time: None,
        }
    }

    /// Whether the process `pid` asked about can be this kill's victim: not when its start
    /// time (given, or read now from a live process) says it is a later process that
    /// reused the pid.
    fn same_process(&self, asked: Option<u64>, live: Option<ProcStart>, hz: u64) -> bool {
        let tick_ns = 1_000_000_000 / hz.max(1);
        let start = asked.or(live.map(|l| l.ticks));
        if let (Some(s), Some(mine)) = (start, self.start_time) {
            return s == mine;
        }
        if let Some(s) = start {
            // Started after the kill (beyond the clock's resolution): someone else.
            if s.saturating_mul(tick_ns) > self.ktime_ns + tick_ns {
                return false;
            }
        }
        if let (None, Some(l), Some(_)) = (asked, live, &self.exit) {
            // The victim exited; a pid that is running again belongs to a new process.
            return l.zombie;
        }
        true
    }
}

/// The answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Answer {
    /// Whether anything matched.
    pub oom_killed: bool,
    /// The matching kills, oldest first.
    pub kills: Vec<Kill>,
    /// `events` (the daemon's record) or `kernel` (the kernel's victim map).
    pub source: String,
    /// Set instead of the rest when the request could not be answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Answer {
    pub(crate) fn error(msg: impl Into<String>) -> Answer {
        Answer {
            error: Some(msg.into()),
            ..Default::default()
        }
    }
}

/// Kills seen by this daemon run, newest last.
#[derive(Debug)]
pub struct History {
    kills: VecDeque<Kill>,
    /// Reads a live process's start ([`proc_start`]; replaced in tests).
    live: fn(u32) -> Option<ProcStart>,
}

impl Default for History {
    fn default() -> Self {
        History {
            kills: VecDeque::new(),
            live: proc_start,
        }
    }
}

impl History {
    /// Remembers a kill event.
    pub fn record_kill(&mut self, ev: &Event) {
        let Some(v) = &ev.victim else { return };
        self.kills.push_back(Kill {
            seq: ev.seq,
            time: ev.time.clone(),
            ktime_ns: ev.ktime_ns,
            pid: v.pid,
            tgid: v.tgid,
            comm: v.comm.clone(),
            cgroup: v.cgroup.clone(),
            container: ev.container.clone(),
            exit: None,
            facts: v.facts.clone(),
            explained: ev.explained.clone().unwrap_or_default(),
            start_time: v
                .tgid
                .or(v.pid)
                .and_then(|p| victim_start((self.live)(p)?, ev.ktime_ns)),
        });
        while self.kills.len() > HISTORY {
            self.kills.pop_front();
        }
    }

    /// Pairs an exit with its kill (newest kill of that process); returns the kill.
    pub fn record_exit(&mut self, ev: &Event) -> Option<&Kill> {
        let v = ev.victim.as_ref()?;
        let tgid = v.tgid.or(v.pid)?;
        let k = self
            .kills
            .iter_mut()
            .rev()
            .find(|k| k.exit.is_none() && (k.tgid == Some(tgid) || k.pid == Some(tgid)))?;
        k.exit = Some(ExitSeen {
            time: ev.time.clone(),
            ktime_ns: ev.ktime_ns,
            signal: ev.exit.as_ref().and_then(|e| e.signal),
        });
        Some(k)
    }

    /// Kills matching a query.
    pub fn find(&self, q: &Query) -> Vec<Kill> {
        let live = q.pid.and_then(self.live);
        let hz = clock_ticks();
        self.kills
            .iter()
            .filter(|k| {
                if let Some(pid) = q.pid {
                    // Start times are the process's: compared when the process is asked
                    // about (a thread's own start differs).
                    return k.tgid == Some(pid) && k.same_process(q.start_time, live, hz)
                        || k.pid == Some(pid) && k.tgid != Some(pid);
                }
                if let Some(id) = &q.container {
                    return k.container.as_ref().is_some_and(|c| {
                        &c.id == id && q.namespace.as_ref().is_none_or(|ns| &c.namespace == ns)
                    });
                }
                if let Some(cg) = &q.cgroup {
                    return k.cgroup.as_deref().is_some_and(|p| is_under(p, cg));
                }
                false
            })
            .cloned()
            .collect()
    }
}

/// The victim's start time, if the process now holding its pid is the one that existed at
/// the kill (it started before it).
fn victim_start(s: ProcStart, kill_ktime_ns: u64) -> Option<u64> {
    (s.ns <= kill_ktime_ns).then_some(s.ticks)
}

/// Answers from the history, else (for a pid) from the kernel's victim map via `kernel`.
pub fn answer(history: &History, q: &Query, kernel: impl Fn(u32) -> Option<Kill>) -> Answer {
    if !q.is_valid() {
        return Answer::error("ask about exactly one of pid, container, cgroup");
    }
    let kills = history.find(q);
    if !kills.is_empty() {
        return Answer {
            oom_killed: true,
            kills,
            source: "events".into(),
            error: None,
        };
    }
    if let Some(k) = q
        .pid
        .and_then(kernel)
        .filter(|k| k.same_process(q.start_time, q.pid.and_then(history.live), clock_ticks()))
    {
        return Answer {
            oom_killed: true,
            kills: vec![k],
            source: "kernel".into(),
            error: None,
        };
    }
    Answer {
        oom_killed: false,
        kills: Vec::new(),
        source: "events".into(),
        error: None,
    }
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;
