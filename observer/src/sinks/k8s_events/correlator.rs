//! What to send: the Event requests a kill warrants, aggregated per pod container.

use std::{collections::HashMap, time::SystemTime};

use serde_json::{json, Value};

use crate::{
    event::{
        death::{Cause, ContainerExit},
        ContainerRef, Event, EventKind,
    },
    forecast::event::RiskEvent,
};

/// The Event reason (see the module comment for why this one).
pub const REASON: &str = "OOMKilling";
/// `source.component` and `reportingComponent`.
pub const COMPONENT: &str = "oom-observer";
/// The reason of an `oom_risk`'s Event: the warning's name in the style of
/// node-problem-detector's `OOMKilling`.
pub const RISK_REASON: &str = "OOMRisk";
/// At most this many aggregated Events are remembered (client-go's correlator keeps 4096).
pub const MAX_REMEMBERED: usize = 4096;

/// One request for the API server.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `POST /api/v1/namespaces/{namespace}/events` with `body` (a core/v1 Event).
    Create {
        /// The pod's namespace.
        namespace: String,
        /// The Event.
        body: Value,
    },
    /// `PATCH /api/v1/namespaces/{namespace}/events/{name}`, a strategic merge patch.
    Patch {
        /// The pod's namespace.
        namespace: String,
        /// The Event's name.
        name: String,
        /// The patch (`count`, `lastTimestamp`, `message`).
        body: Value,
    },
}

impl Request {
    /// The method and path it goes to.
    pub fn route(&self) -> (&'static str, String) {
        match self {
            Request::Create { namespace, .. } => {
                ("POST", format!("/api/v1/namespaces/{namespace}/events"))
            }
            Request::Patch {
                namespace, name, ..
            } => (
                "PATCH",
                format!("/api/v1/namespaces/{namespace}/events/{name}"),
            ),
        }
    }
}

/// What one container's aggregated Event is at.
#[derive(Debug, Clone)]
struct Aggregate {
    name: String,
    count: u64,
    first: String,
    last_used: u64,
}

/// Turns kills into Event requests, aggregating repeats per pod container.
#[derive(Debug)]
pub struct Correlator {
    node: String,
    seen: HashMap<(String, String, String), Aggregate>,
    tick: u64,
}

/// A pod's container hit by a kill: what the Event names.
pub(super) struct Target<'a> {
    pub(super) namespace: &'a str,
    pub(super) pod: &'a str,
    pub(super) uid: &'a str,
    pub(super) container: &'a str,
}

pub(super) fn target(c: &ContainerRef) -> Option<Target<'_>> {
    let pod = c.pod.as_ref()?;
    Some(Target {
        namespace: pod.namespace.as_deref()?,
        pod: pod.name.as_deref()?,
        uid: pod.uid.as_deref().unwrap_or_default(),
        container: c.name.as_deref()?,
    })
}

/// The Event reason of a container's end, in the style of the kubelet's own (`Killing`,
/// `BackOff`) and of the Pod-scoped OOM Events in the wild; `None` for ends that get none.
pub fn exit_reason(x: &ContainerExit) -> Option<&'static str> {
    if x.kubelet.wrong == Some("oomkilled_not_oom") {
        return Some("NotOOMKilled");
    }
    if x.kubelet.wrong == Some("error_for_oom") {
        return Some("OOMKilledNotError");
    }
    match x.cause {
        Cause::OomKillerUserspace => Some("KilledByUserspaceOOMKiller"),
        Cause::PodProcess => Some("KilledByPodProcess"),
        Cause::NodeProcess => Some("KilledByNodeProcess"),
        Cause::Crash => Some("ContainerCrashed"),
        Cause::UnknownSignal => Some("KilledBySignal"),
        Cause::OomKill | Cause::RuntimeStop | Cause::Exited => None,
    }
}

/// The kill's one-line summary.
pub fn summary(ev: &Event, container: &str) -> String {
    let who = ev
        .victim
        .as_ref()
        .map(|v| {
            format!(
                "process {} ({})",
                v.tgid
                    .or(v.pid)
                    .map(|p| p.to_string())
                    .unwrap_or("?".into()),
                v.comm.as_deref().unwrap_or("?")
            )
        })
        .unwrap_or_else(|| "a process".into());
    let limit = match (
        ev.constraint,
        ev.oom_cgroup.as_ref().and_then(|c| c.path.as_deref()),
    ) {
        (Some("global"), _) => " (the node ran out of memory)".to_string(),
        (_, Some(p)) => format!(" at the memory limit of cgroup {p}"),
        _ => String::new(),
    };
    format!("Container {container} was OOM-killed: the kernel killed {who}{limit}")
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

impl Correlator {
    /// A correlator reporting from node `node` (the `NODE_NAME` the DaemonSet sets).
    pub fn new(node: &str) -> Correlator {
        Correlator {
            node: node.to_string(),
            seen: HashMap::new(),
            tick: 0,
        }
    }

    /// The requests one event warrants: one per pod container of an `oom_kill` (none for
    /// a kill outside Kubernetes). `now` is when it is sent.
    pub fn on_event(&mut self, ev: &Event, now: SystemTime) -> Vec<Request> {
        if ev.event != EventKind::OomKill {
            return Vec::new();
        }
        let owners: Vec<&ContainerRef> = if ev.containers.is_empty() {
            ev.container.iter().collect()
        } else {
            ev.containers.iter().collect()
        };
        owners
            .into_iter()
            .filter_map(|c| target(c).map(|t| self.request(ev, &t, now)))
            .collect()
    }

    /// The request a container's end warrants: one for a death the kubelet cannot name (a
    /// userspace OOM killer, a process of the pod or of the node, a crash, an unseen sender),
    /// or one the kubelet will misname; none for a plain exit, the runtime's own stop or an
    /// OOM kill (its kill already has its Event). Repeats aggregate per container and reason.
    pub fn on_exit(&mut self, x: &ContainerExit, now: SystemTime) -> Option<Request> {
        let reason = exit_reason(x)?;
        let t = target(&x.container)?;
        Some(self.request_with(&t, reason, &x.message, now))
    }

    /// The request an `oom_risk` warrants (the caller rate-limits them, with `risk.rs`'s
    /// `RiskCorrelator`): aggregated per container like the others, reason [`RISK_REASON`].
    pub fn on_risk(&mut self, r: &RiskEvent, now: SystemTime) -> Option<Request> {
        let t = target(r.container.as_ref()?)?;
        Some(self.request_with(&t, RISK_REASON, &r.message, now))
    }

    /// Forgets an Event the API server no longer has (a PATCH answered 404: events expire,
    /// after an hour by default), so the next kill creates a new one.
    pub fn forget(&mut self, namespace: &str, name: &str) {
        self.seen
            .retain(|(ns, _, _), a| !(ns == namespace && a.name == name));
    }

    fn request(&mut self, ev: &Event, t: &Target<'_>, now: SystemTime) -> Request {
        // The kill's own one-line summary; a sentence of ours where it has none.
        let message = ev
            .explained
            .as_ref()
            .and_then(|x| x.message.clone())
            .unwrap_or_else(|| summary(ev, t.container));
        self.request_with(t, REASON, &message, now)
    }

    fn request_with(
        &mut self,
        t: &Target<'_>,
        reason: &str,
        message: &str,
        now: SystemTime,
    ) -> Request {
        self.tick += 1;
        let now_s = rfc3339(now);
        // The kill Event's key stays the container alone, as it always was.
        let container = if reason == REASON {
            t.container.to_string()
        } else {
            format!("{}/{reason}", t.container)
        };
        let key = (t.namespace.to_string(), t.uid.to_string(), container);
        if let Some(a) = self.seen.get_mut(&key) {
            a.count += 1;
            a.last_used = self.tick;
            return Request::Patch {
                namespace: t.namespace.to_string(),
                name: a.name.clone(),
                body: json!({"count": a.count, "lastTimestamp": now_s, "message": message}),
            };
        }
        if self.seen.len() >= MAX_REMEMBERED {
            if let Some(oldest) = self
                .seen
                .iter()
                .min_by_key(|(_, a)| a.last_used)
                .map(|(k, _)| k.clone())
            {
                self.seen.remove(&oldest);
            }
        }
        // As the kubelet names its events: the object's name and the time in hex nanoseconds.
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
            "reason": reason,
            "message": message,
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
            Aggregate {
                name,
                count: 1,
                first: now_s,
                last_used: self.tick,
            },
        );
        Request::Create {
            namespace: t.namespace.to_string(),
            body,
        }
    }

    /// When the aggregated Event of a pod container was first sent (for tests and logs).
    pub fn first_sent(&self, namespace: &str, uid: &str, container: &str) -> Option<&str> {
        self.seen
            .get(&(namespace.into(), uid.into(), container.into()))
            .map(|a| a.first.as_str())
    }
}

#[cfg(test)]
#[path = "correlator_tests.rs"]
mod tests;
