//! The kills made while containerd was out of reach that no container could be named for:
//! kept until containerd is back and listed again, then attributed (and given their
//! TaskOOMs) oldest first.

use std::collections::VecDeque;

use crate::event::Event;

/// Kills kept for re-attribution after an outage (the oldest dropped beyond it).
const GAP_KILLS: usize = 1024;

/// A kill no container could be named for while containerd was out of reach.
#[derive(Debug, Clone)]
pub struct GapKill {
    /// `seq` of its line.
    pub seq: u64,
    /// The victim's cgroup path.
    pub victim: Option<String>,
    /// The OOM cgroup's path.
    pub oom: Option<String>,
    /// `CLOCK_BOOTTIME` of the kill.
    pub ktime_ns: u64,
}

/// The kills waiting for containerd, oldest first.
#[derive(Debug, Default)]
pub struct GapQueue {
    kills: VecDeque<GapKill>,
}

impl GapQueue {
    /// Keeps a kill written while containerd was away.
    pub fn push(&mut self, ev: &Event) {
        if self.kills.len() >= GAP_KILLS {
            self.kills.pop_front();
        }
        self.kills.push_back(GapKill {
            seq: ev.seq,
            victim: ev.victim.as_ref().and_then(|v| v.cgroup.clone()),
            oom: ev.oom_cgroup.as_ref().and_then(|c| c.path.clone()),
            ktime_ns: ev.ktime_ns,
        });
    }

    /// The oldest kill waiting.
    pub fn pop_front(&mut self) -> Option<GapKill> {
        self.kills.pop_front()
    }
}
