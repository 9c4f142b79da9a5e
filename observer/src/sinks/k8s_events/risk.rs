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

use serde_json::json;

use super::correlator::{target, Request, COMPONENT, MAX_REMEMBERED};
use crate::forecast::event::RiskEvent;

/// The Event reason.
pub const RISK_REASON: &str = "OOMRisk";
/// At most one request per pod container this often.
pub const RISK_EVERY: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Clone)]
struct Sent {
    name: String,
    count: u64,
    last: SystemTime,
}

/// Turns warnings into Event requests, rate-limited per pod container.
#[derive(Debug)]
pub struct RiskCorrelator {
    node: String,
    seen: HashMap<(String, String, String), Sent>,
}

impl RiskCorrelator {
    /// Reporting from node `node`.
    pub fn new(node: &str) -> RiskCorrelator {
        RiskCorrelator {
            node: node.to_string(),
            seen: HashMap::new(),
        }
    }

    /// The request a warning warrants: none outside a pod, none within [`RISK_EVERY`] of
    /// the container's last one.
    pub fn on_risk(&mut self, r: &RiskEvent, now: SystemTime) -> Option<Request> {
        let t = target(r.container.as_ref()?)?;
        let key = (
            t.namespace.to_string(),
            t.uid.to_string(),
            t.container.to_string(),
        );
        let now_s = humantime::format_rfc3339_seconds(now).to_string();
        if let Some(s) = self.seen.get_mut(&key) {
            if now.duration_since(s.last).unwrap_or_default() < RISK_EVERY {
                return None;
            }
            s.count += 1;
            s.last = now;
            return Some(Request::Patch {
                namespace: t.namespace.to_string(),
                name: s.name.clone(),
                body: json!({"count": s.count, "lastTimestamp": now_s, "message": r.message}),
            });
        }
        if self.seen.len() >= MAX_REMEMBERED {
            if let Some(oldest) = self
                .seen
                .iter()
                .min_by_key(|(_, s)| s.last)
                .map(|(k, _)| k.clone())
            {
                self.seen.remove(&oldest);
            }
        }
        let nanos = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let name = format!("{}.{nanos:x}", t.pod);
        let body = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": t.namespace},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "namespace": t.namespace,
                "name": t.pod,
                "uid": t.uid,
                "fieldPath": format!("spec.containers{{{}}}", t.container),
            },
            "reason": RISK_REASON,
            "message": r.message,
            "type": "Warning",
            "source": {"component": COMPONENT, "host": self.node},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.node,
            "firstTimestamp": now_s,
            "lastTimestamp": now_s,
            "count": 1,
        });
        self.seen.insert(
            key,
            Sent {
                name,
                count: 1,
                last: now,
            },
        );
        Some(Request::Create {
            namespace: t.namespace.to_string(),
            body,
        })
    }

    /// Forgets an Event the API server no longer has (a PATCH answered 404).
    pub fn forget(&mut self, namespace: &str, name: &str) {
        self.seen
            .retain(|(ns, _, _), s| !(ns == namespace && s.name == name));
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
        let mut c = RiskCorrelator::new("node-1");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let Some(Request::Create { namespace, body }) = c.on_risk(&risk(true), t0) else {
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
        assert_eq!(c.on_risk(&risk(true), t0 + Duration::from_secs(60)), None);
        let Some(Request::Patch { body, .. }) = c.on_risk(&risk(true), t0 + RISK_EVERY) else {
            panic!("a later warning patches the Event");
        };
        assert_eq!(body["count"], 2);
        assert_eq!(c.on_risk(&risk(false), t0), None, "no pod, no Event");
    }
}
