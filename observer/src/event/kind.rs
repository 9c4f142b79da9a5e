//! What an event is: its kind, named as the kernel's record kind names it.

use observer_common::RecordKind;
use serde::{Serialize, Serializer};

/// The kind of an event: its `event` field. Serialized as the
/// name of its record kind ([`RecordKind::as_str`]), so the JSON says exactly what the
/// kernel side calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// `oom_kill`: the OOM killer killed a process.
    OomKill,
    /// `oom_kill_skipped`: the OOM killer chose a victim and killed nobody.
    OomKillSkipped,
    /// `memcg_oom`: a memory cgroup hit OOM and waits instead of killing.
    MemcgOom,
    /// `victim_exit`: an OOM victim's process exited.
    VictimExit,
    /// `oom_decision`: the OOM killer chose a victim. Internal: it hands TaskOOM over and
    /// writes no line.
    OomDecision,
}

impl EventKind {
    /// The event a record of `kind` becomes (a kill unless the kind says otherwise).
    pub fn of(kind: Option<RecordKind>) -> EventKind {
        match kind {
            Some(RecordKind::MemcgOom) => EventKind::MemcgOom,
            Some(RecordKind::VictimExit) => EventKind::VictimExit,
            Some(RecordKind::OomDecision) => EventKind::OomDecision,
            Some(RecordKind::OomSkipped) => EventKind::OomKillSkipped,
            _ => EventKind::OomKill,
        }
    }

    /// The record kind it comes from.
    pub fn record(self) -> RecordKind {
        match self {
            EventKind::OomKill => RecordKind::OomKill,
            EventKind::OomKillSkipped => RecordKind::OomSkipped,
            EventKind::MemcgOom => RecordKind::MemcgOom,
            EventKind::VictimExit => RecordKind::VictimExit,
            EventKind::OomDecision => RecordKind::OomDecision,
        }
    }

    /// Its JSON name.
    pub fn as_str(self) -> &'static str {
        self.record().as_str()
    }
}

impl Serialize for EventKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
