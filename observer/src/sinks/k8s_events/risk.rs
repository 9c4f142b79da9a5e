//! The Pod Event for `oom_risk`: reason `OOMRisk` (the warning's name in the style of
//! node-problem-detector's `OOMKilling`, which this daemon's kill Events use), type
//! Warning, on the Pod and its container (`involvedObject.fieldPath`
//! `spec.containers{NAME}`). Rate-limited per pod container: the model repeats a warning
//! at most once a minute, and the API server gets at most one request per container per
//! [`RISK_EVERY`]; the first creates the Event, later ones PATCH its `count`,
//! `lastTimestamp` and `message`, as the kubelet aggregates its own.

use std::{
    collections::HashMap,
    time::{Duration, SystemTime},
};

use super::correlator::{target, Correlator, Request, MAX_REMEMBERED};
use crate::forecast::event::RiskEvent;

/// At most one request per pod container this often.
pub const RISK_EVERY: Duration = Duration::from_secs(5 * 60);

/// The rate limit of the warnings' Events: when each pod container's last went out. The
/// Event itself is the [`Correlator`]'s, aggregated like every other.
#[derive(Debug, Default)]
pub struct RiskCorrelator {
    last: HashMap<(String, String, String), SystemTime>,
}

impl RiskCorrelator {
    /// Nothing sent yet.
    pub fn new() -> RiskCorrelator {
        RiskCorrelator::default()
    }

    /// Whether a warning may go out now: not outside a pod, not within [`RISK_EVERY`] of
    /// the container's last one. A `true` counts as sent.
    pub fn due(&mut self, r: &RiskEvent, now: SystemTime) -> bool {
        let Some(t) = r.container.as_ref().and_then(target) else {
            return false;
        };
        let key = (
            t.namespace.to_string(),
            t.uid.to_string(),
            t.container.to_string(),
        );
        if let Some(last) = self.last.get(&key) {
            if now.duration_since(*last).unwrap_or_default() < RISK_EVERY {
                return false;
            }
        }
        if !self.last.contains_key(&key) && self.last.len() >= MAX_REMEMBERED {
            if let Some(oldest) = self
                .last
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(k, _)| k.clone())
            {
                self.last.remove(&oldest);
            }
        }
        self.last.insert(key, now);
        true
    }

    /// The request a warning warrants now, through `events`: none when not [`due`](Self::due).
    pub fn on_risk(
        &mut self,
        events: &mut Correlator,
        r: &RiskEvent,
        now: SystemTime,
    ) -> Option<Request> {
        if !self.due(r, now) {
            return None;
        }
        events.on_risk(r, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        enrich::container::Pod,
        event::ContainerRef,
        forecast::{
            event::{new_risk, RiskReason},
            limits::{Limit, LimitKind},
        },
    };

    fn risk(pod: bool) -> RiskEvent {
        let c = ContainerRef {
            id: "abc".into(),
            namespace: "k8s.io".into(),
            name: Some("app".into()),
            runtime: "io.containerd.runc.v2".into(),
            pod: pod.then(|| Pod {
                name: Some("web-1".into()),
                namespace: Some("shop".into()),
                uid: Some("u-1".into()),
            }),
        };
        new_risk(
            RiskReason::Growth,
            Some(c),
            "/kubepods/podu-1/abc".into(),
            Limit {
                kind: LimitKind::Pod,
                cgroup: Some("/kubepods/podu-1".into()),
                bytes: 256 << 20,
            },
            Some(30.0),
            200 << 20,
            Some(2.0 * 1024.0 * 1024.0),
            None,
            None,
            Vec::new(),
        )
    }

    #[test]
    fn a_warning_becomes_a_pod_event_then_is_rate_limited() {
        let mut c = RiskCorrelator::new();
        let mut events = Correlator::new("node-1");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let Some(Request::Create { namespace, body }) = c.on_risk(&mut events, &risk(true), t0)
        else {
            panic!("the first warning creates an Event");
        };
        assert_eq!(namespace, "shop");
        assert_eq!(body["reason"], "OOMRisk");
        assert_eq!(body["type"], "Warning");
        assert_eq!(body["involvedObject"]["kind"], "Pod");
        assert_eq!(body["involvedObject"]["name"], "web-1");
        assert_eq!(body["involvedObject"]["fieldPath"], "spec.containers{app}");
        assert!(body["message"]
            .as_str()
            .is_some_and(|m| m.contains("pod limit") && m.contains("in 30 s")));
        let later = t0 + Duration::from_secs(60);
        assert_eq!(c.on_risk(&mut events, &risk(true), later), None);
        let Some(Request::Patch { body, .. }) =
            c.on_risk(&mut events, &risk(true), t0 + RISK_EVERY)
        else {
            panic!("a later warning patches the Event");
        };
        assert_eq!(body["count"], 2);
        assert_eq!(
            c.on_risk(&mut events, &risk(false), t0),
            None,
            "no pod, no Event"
        );
    }
}
