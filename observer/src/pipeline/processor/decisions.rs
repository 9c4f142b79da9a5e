//! The OOM killer's decisions waiting for their kill or their skip (fentry/kprobe): each is
//! settled within one invocation of the OOM killer; a skip is named from its decision.

use std::collections::BTreeMap;

use tracing::warn;

use crate::event::Event;

/// OOM killer decisions waiting for their kill (or their skip), the oldest dropped beyond
/// this: each is settled within one invocation of the OOM killer, so only a lost record
/// leaves one behind.
const OPEN_DECISIONS: usize = 256;

/// Decisions by incident id (their time), with the container(s) and whether their TaskOOM
/// went out: a skipped kill is reported from them.
#[derive(Debug, Default)]
pub struct OpenDecisions {
    open: BTreeMap<u64, Event>,
}

impl OpenDecisions {
    /// Keeps a decision until its kill or its skip settles it.
    pub fn open(&mut self, ev: Event) {
        let Some(incident) = ev.decided_ktime_ns.flatten() else {
            return;
        };
        if self.open.len() >= OPEN_DECISIONS {
            self.open.pop_first();
        }
        self.open.insert(incident, ev);
    }

    /// The decision of `ev`'s incident, settled by it (`None`: none seen, or its record
    /// was lost).
    pub fn settle(&mut self, ev: &Event) -> Option<Event> {
        ev.decided_ktime_ns
            .flatten()
            .and_then(|i| self.open.remove(&i))
    }

    /// Whether no decision waits.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

/// Names a skipped kill from its decision: from oom_kill_process' return only the pid is
/// known, the decision knew the rest. Should the decision's TaskOOM already be out (the
/// victim began to exit after the decision), the line says `published: true` and the log
/// says why.
pub fn name_skip(ev: &mut Event, d: Event) {
    if ev.victim.as_ref().is_none_or(|v| v.cgroup_id.is_none()) {
        ev.victim = d.victim;
    }
    ev.oom_cgroup = d.oom_cgroup;
    ev.constraint = d.constraint;
    ev.container = d.container;
    ev.containers = d.containers;
    ev.published = d.published;
    if ev.published {
        warn!(
            seq = ev.seq,
            pid = ?ev.victim.as_ref().and_then(|v| v.pid),
            container = ?ev.container.as_ref().map(|c| c.id.as_str()),
            "the OOM killer chose this victim but did not kill it (it began to exit after the decision); the TaskOOM handed over at the decision cannot be taken back"
        );
    }
}
