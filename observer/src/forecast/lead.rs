//! How early the warning came: the first `oom_risk` of a container (or modelled cgroup),
//! kept until its kill, so the kill's line can say how many seconds it was foreseen.

use std::collections::HashMap;

use super::event::{RiskEvent, RiskReason};
use crate::event::{Event, EventKind, LeadSeconds};

/// A warning older than this (since its last repeat) no longer counts for a kill: the
/// container calmed down, and a later kill was not foreseen by it.
const STALE_NS: u64 = 5 * 60 * 1_000_000_000;

/// A stall read this soon after a kill at the same cgroup is that kill, seen by the model's
/// next tick: the memory stays charged, at the limit, until the victim has exited. (In the
/// arm64 guest, a step's kill was followed by a `stall` warning about the limit that had
/// just fired.)
const STALL_AT_KILL_NS: u64 = 10 * 1_000_000_000;

/// `warning` when the kill was foreseen.
pub const WARNED: &str = "oom_risk";
/// `warning` when it was not.
pub const NONE: &str = "none";

#[derive(Debug, Clone, Copy)]
struct Warned {
    first_ns: u64,
    last_ns: u64,
}

/// The open warnings, by container id and by cgroup path; the recent kills, by the same.
#[derive(Debug, Default)]
pub struct Warnings {
    open: HashMap<String, Warned>,
    killed: HashMap<String, u64>,
}

/// What a warning is remembered by: its cgroup, its container, the cgroup of its limit.
fn keys(r: &RiskEvent) -> Vec<String> {
    let mut keys = vec![r.cgroup.clone()];
    if let Some(c) = &r.container {
        keys.push(c.id.clone());
    }
    if let Some(l) = &r.limit.cgroup {
        keys.push(l.to_string());
    }
    keys
}

impl Warnings {
    /// Whether `r` is a stall at a cgroup whose OOM kill was reported within
    /// [`STALL_AT_KILL_NS`]: the kill itself, seen late, and no warning.
    pub fn is_the_kill(&self, r: &RiskEvent) -> bool {
        r.reason == RiskReason::Stall
            && keys(r).iter().any(|k| {
                self.killed
                    .get(k)
                    .is_some_and(|&at| r.ktime_ns.saturating_sub(at) <= STALL_AT_KILL_NS)
            })
    }

    /// Remembers a warning (the first of a run of them is the one that counts).
    pub fn warned(&mut self, r: &RiskEvent) {
        for k in keys(r) {
            let w = self.open.entry(k).or_insert(Warned {
                first_ns: r.ktime_ns,
                last_ns: r.ktime_ns,
            });
            if r.ktime_ns.saturating_sub(w.last_ns) > STALE_NS {
                w.first_ns = r.ktime_ns;
            }
            w.last_ns = r.ktime_ns;
        }
        // Bounded: warnings that went stale are dropped as new ones come.
        if self.open.len() > 4096 {
            let now = r.ktime_ns;
            self.open
                .retain(|_, w| now.saturating_sub(w.last_ns) <= STALE_NS);
        }
    }

    /// Fills a kill's `warning_lead_s` and `warning`, and closes its warning (a restarted
    /// container's next kill needs a new one).
    pub fn on_kill(&mut self, ev: &mut Event) {
        if ev.event != EventKind::OomKill {
            return;
        }
        let Some(x) = ev.explained.as_mut() else {
            return;
        };
        let mut keys: Vec<String> = Vec::new();
        if let Some(c) = &ev.container {
            keys.push(c.id.clone());
        }
        for c in &ev.containers {
            keys.push(c.id.clone());
        }
        if let Some(p) = ev.oom_cgroup.as_ref().and_then(|c| c.path.clone()) {
            keys.push(p);
        }
        if let Some(p) = ev.victim.as_ref().and_then(|v| v.cgroup.clone()) {
            keys.push(p);
        }
        let kill = ev.ktime_ns;
        let first = keys
            .iter()
            .filter_map(|k| self.open.get(k))
            .filter(|w| kill.saturating_sub(w.last_ns) <= STALE_NS && w.first_ns <= kill)
            .map(|w| w.first_ns)
            .min();
        for k in &keys {
            self.open.remove(k);
        }
        if self.killed.len() > 4096 {
            self.killed
                .retain(|_, at| kill.saturating_sub(*at) <= STALL_AT_KILL_NS);
        }
        self.killed.extend(keys.into_iter().map(|k| (k, kill)));
        x.warning_lead_s = first.map(|f| LeadSeconds::from_ns(kill - f));
        x.warning = Some(if first.is_some() { WARNED } else { NONE }.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        event::{CgroupRef, Explained},
        forecast::{
            event::{new_risk, RiskReason},
            limits::{Limit, LimitKind},
        },
    };

    fn kill(cgroup: &str, ktime_ns: u64) -> Event {
        Event {
            schema: 2,
            seq: 9,
            event: EventKind::OomKill,
            time: String::new(),
            ktime_ns,
            hook: "tp_btf",
            victim: None,
            oom_cgroup: Some(CgroupRef {
                id: 1,
                path: Some(cgroup.into()),
            }),
            constraint: Some("memcg"),
            trigger: None,
            container: None,
            containers: Vec::new(),
            published: false,
            exit: None,
            kill_seq: None,
            decided_at: None,
            decided_ktime_ns: None,
            explained: Some(Explained::default()),
        }
    }

    fn risk(cgroup: &str, ktime_ns: u64) -> RiskEvent {
        risk_for(RiskReason::Growth, cgroup, ktime_ns)
    }

    fn risk_for(reason: RiskReason, cgroup: &str, ktime_ns: u64) -> RiskEvent {
        let mut r = new_risk(
            reason,
            None,
            cgroup.into(),
            Limit {
                kind: LimitKind::Container,
                cgroup: Some(cgroup.into()),
                bytes: 100,
            },
            Some(10.0),
            50,
            Some(5.0),
            None,
            None,
            Vec::new(),
        );
        r.ktime_ns = ktime_ns;
        r
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn the_kill_carries_the_first_warnings_lead_then_the_warning_closes() {
        let mut w = Warnings::default();
        w.warned(&risk("/a", 100 * S));
        w.warned(&risk("/a", 160 * S));
        let mut k = kill("/a", 172 * S + 500_000_000);
        w.on_kill(&mut k);
        let x = k.explained.as_ref().unwrap();
        assert_eq!(x.warning.as_deref(), Some(WARNED));
        assert_eq!(x.warning_lead_s, Some(LeadSeconds(72_500)));
        let mut again = kill("/a", 200 * S);
        w.on_kill(&mut again);
        let x = again.explained.as_ref().unwrap();
        assert_eq!(
            x.warning.as_deref(),
            Some(NONE),
            "a restart's kill needs a new warning"
        );
        assert_eq!(x.warning_lead_s, None);
        assert_eq!(
            serde_json::to_value(&k).unwrap()["warning_lead_s"],
            serde_json::json!(72.5)
        );
    }

    #[test]
    fn a_stale_warning_does_not_count() {
        let mut w = Warnings::default();
        w.warned(&risk("/a", 100 * S));
        let mut k = kill("/a", 100 * S + STALE_NS + S);
        w.on_kill(&mut k);
        assert_eq!(k.explained.unwrap().warning.as_deref(), Some(NONE));
        let mut other = kill("/b", 101 * S);
        w.on_kill(&mut other);
        assert_eq!(other.explained.unwrap().warning.as_deref(), Some(NONE));
    }

    #[test]
    fn a_stall_right_after_the_kill_at_its_cgroup_is_that_kill_not_a_warning() {
        let mut w = Warnings::default();
        let mut k = kill("/a", 100 * S);
        w.on_kill(&mut k);
        // Read just before the kill but handed over after it, or read after it: the kill.
        assert!(w.is_the_kill(&risk_for(RiskReason::Stall, "/a", 99 * S)));
        assert!(w.is_the_kill(&risk_for(RiskReason::Stall, "/a", 105 * S)));
        // A growth warning after a kill is about the next one (a restarted worker leaks on).
        assert!(!w.is_the_kill(&risk_for(RiskReason::Growth, "/a", 105 * S)));
        // Later, or elsewhere, a stall is a stall.
        assert!(!w.is_the_kill(&risk_for(RiskReason::Stall, "/a", 111 * S)));
        assert!(!w.is_the_kill(&risk_for(RiskReason::Stall, "/b", 101 * S)));
    }
}
