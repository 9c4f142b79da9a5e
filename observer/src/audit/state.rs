//! What the audit has reported so far, per container: one event per state change, and a
//! clearing event when a container is enforced again.

use std::collections::{HashMap, HashSet};

use super::{
    assess::Assessment,
    finding::{events, FindingEvent},
};
use crate::{
    enrich::container::{ContainerInfo, ContainerKey},
    host::cgroup_path::is_under,
};

/// What was last reported for a container.
#[derive(Debug, Default)]
struct Reported {
    /// Signature of the open `limit_unenforced`.
    unenforced: Option<String>,
    /// Signature of the open `sandbox_oversized`.
    oversized: Option<String>,
    /// Signature of the open `cgroup_misplaced`.
    misplaced: Option<String>,
    /// Pids of its last audit (for re-audit on migration).
    pids: Vec<u32>,
    /// Where its processes belong (a process moving in there re-audits it).
    expected: Option<String>,
}

/// The audit's memory: one event per container and state change.
#[derive(Debug, Default)]
pub struct Auditor {
    reported: HashMap<ContainerKey, Reported>,
}

fn signature(a: &Assessment, what: &str) -> String {
    serde_json::json!({
        "what": what,
        "reasons": a.unenforced,
        "declared": a.declared,
        "effective": a.effective,
        "placed": a.placed_cgroup,
        "expected": a.expected_cgroup,
        "sandbox": a.sandbox,
    })
    .to_string()
}

impl Auditor {
    /// Records an assessment; returns the events it warrants (none when nothing changed).
    pub fn update(&mut self, c: &ContainerInfo, a: &Assessment) -> Vec<FindingEvent> {
        let r = self.reported.entry(c.key()).or_default();
        r.pids = a.pids.clone();
        r.expected = a.expected_cgroup.clone();
        let mut out = Vec::new();
        let Some(declared) = a.declared.clone() else {
            // Nothing promised: nothing to report, and nothing open any more.
            r.unenforced = None;
            r.oversized = None;
            r.misplaced = None;
            return out;
        };
        if a.unenforced.is_empty() {
            if r.unenforced.take().is_some() {
                out.push(FindingEvent::new(
                    events::LIMIT_ENFORCED,
                    c,
                    a,
                    declared.clone(),
                ));
            }
        } else {
            let sig = signature(a, events::LIMIT_UNENFORCED);
            if r.unenforced.as_deref() != Some(sig.as_str()) {
                r.unenforced = Some(sig);
                out.push(FindingEvent::new(
                    events::LIMIT_UNENFORCED,
                    c,
                    a,
                    declared.clone(),
                ));
            }
        }
        // Informational findings: raised once per state, no clearing event.
        for (on, open, what) in [
            (a.misplaced, &mut r.misplaced, events::CGROUP_MISPLACED),
            (a.oversized, &mut r.oversized, events::SANDBOX_OVERSIZED),
        ] {
            if !on {
                *open = None;
                continue;
            }
            let sig = signature(a, what);
            if open.as_deref() != Some(sig.as_str()) {
                *open = Some(sig);
                out.push(FindingEvent::new(what, c, a, declared.clone()));
            }
        }
        out
    }

    /// Forgets a container that stopped (its findings end with it, without an event).
    pub fn forget(&mut self, key: &ContainerKey) {
        self.reported.remove(key);
    }

    /// Open findings: `limit_unenforced`, `sandbox_oversized`, `cgroup_misplaced`.
    pub fn open(&self) -> (usize, usize, usize) {
        let r = self.reported.values();
        (
            r.clone().filter(|r| r.unenforced.is_some()).count(),
            r.clone().filter(|r| r.oversized.is_some()).count(),
            r.filter(|r| r.misplaced.is_some()).count(),
        )
    }

    /// Containers audited so far.
    pub fn keys(&self) -> Vec<ContainerKey> {
        self.reported.keys().cloned().collect()
    }

    /// Containers to re-audit when `pid` moved into cgroup `dst`: those whose last audit saw
    /// `pid` or one of its ancestors (`ancestry`, nearest first), and those that expect
    /// their processes in `dst` or above it.
    pub fn affected_by_move(&self, ancestry: &[u32], dst: Option<&str>) -> Vec<ContainerKey> {
        let mut out: Vec<ContainerKey> = Vec::new();
        let wanted: HashSet<u32> = ancestry.iter().copied().collect();
        for (k, r) in &self.reported {
            let by_pid = r.pids.iter().any(|p| wanted.contains(p));
            let by_dst = match (dst, r.expected.as_deref()) {
                (Some(d), Some(e)) => is_under(d, e),
                _ => false,
            };
            if by_pid || by_dst {
                out.push(k.clone());
            }
        }
        out.sort();
        out
    }
}
