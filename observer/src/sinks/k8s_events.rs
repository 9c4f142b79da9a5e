//! Kubernetes Events on the Pod, one per kill: what to send. The reason is
//! `OOMKilling`, the reason node-problem-detector gives its kernel OOM events (on the Node),
//! so filters and event exporters that already look for it find these too, now on the Pod
//! and its container (`involvedObject.fieldPath` `spec.containers{NAME}`, as the kubelet
//! writes container events). Repeated kills of one container aggregate like the kubelet's
//! own events (client-go's event correlator): the first is created, each repeat PATCHes
//! `count`, `lastTimestamp` and `message` of that Event.
//!
//! This module decides the requests; sending them is the transport's job, off the kill path.

use std::{collections::HashMap, time::SystemTime};

use serde_json::{json, Value};

use crate::pipeline::event::{ContainerRef, Event};

/// The Event reason (see the module comment for why this one).
pub const REASON: &str = "OOMKilling";
/// `source.component` and `reportingComponent`.
pub const COMPONENT: &str = "oom-observer";
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
struct Target<'a> {
    namespace: &'a str,
    pod: &'a str,
    uid: &'a str,
    container: &'a str,
}

fn target(c: &ContainerRef) -> Option<Target<'_>> {
    let pod = c.pod.as_ref()?;
    Some(Target {
        namespace: pod.namespace.as_deref()?,
        pod: pod.name.as_deref()?,
        uid: pod.uid.as_deref().unwrap_or_default(),
        container: c.name.as_deref()?,
    })
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
        if ev.event != "oom_kill" {
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

    /// Forgets an Event the API server no longer has (a PATCH answered 404: events expire,
    /// after an hour by default), so the next kill creates a new one.
    pub fn forget(&mut self, namespace: &str, name: &str) {
        self.seen
            .retain(|(ns, _, _), a| !(ns == namespace && a.name == name));
    }

    fn request(&mut self, ev: &Event, t: &Target<'_>, now: SystemTime) -> Request {
        self.tick += 1;
        let now_s = rfc3339(now);
        // The kill's own one-line summary; a sentence of ours where it has none.
        let message = ev
            .explained
            .as_ref()
            .and_then(|x| x.message.clone())
            .unwrap_or_else(|| summary(ev, t.container));
        let key = (
            t.namespace.to_string(),
            t.uid.to_string(),
            t.container.to_string(),
        );
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
            "reason": REASON,
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
mod tests {
    use super::*;
    use crate::{
        enrich::container::Pod,
        pipeline::event::{CgroupRef, Victim},
    };
    use std::time::Duration;

    fn kill(c: Option<ContainerRef>) -> Event {
        Event {
            schema: 1,
            seq: 1,
            event: "oom_kill",
            time: String::new(),
            ktime_ns: 1,
            hook: "tp_btf",
            victim: Some(Victim {
                pid: Some(7),
                tgid: Some(7),
                comm: Some("python3".into()),
                uid: Some(0),
                cgroup_id: Some(1),
                cgroup: Some("/kubepods/pod-u/c1".into()),
                unified_cgroup_id: None,
                facts: Default::default(),
            }),
            oom_cgroup: Some(CgroupRef {
                id: 1,
                path: Some("/kubepods/pod-u/c1".into()),
            }),
            constraint: Some("memcg"),
            trigger: None,
            container: c,
            containers: Vec::new(),
            published: true,
            explained: None,
            exit: None,
            kill_seq: None,
            decided_at: None,
            decided_ktime_ns: None,
        }
    }

    fn app() -> ContainerRef {
        ContainerRef {
            id: "c1".into(),
            namespace: "k8s.io".into(),
            name: Some("app".into()),
            runtime: "io.containerd.runc.v2".into(),
            pod: Some(Pod {
                name: Some("web-0".into()),
                namespace: Some("shop".into()),
                uid: Some("u-1".into()),
            }),
        }
    }

    #[test]
    fn first_kill_creates_a_pod_event_repeats_patch_its_count() {
        let mut c = Correlator::new("node-a");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let r = c.on_event(&kill(Some(app())), t0);
        assert_eq!(r.len(), 1);
        let Request::Create { namespace, body } = &r[0] else {
            panic!("{r:?}")
        };
        assert_eq!(namespace, "shop");
        assert_eq!(
            r[0].route(),
            ("POST", "/api/v1/namespaces/shop/events".into())
        );
        let o = &body["involvedObject"];
        assert_eq!(o["kind"], "Pod");
        assert_eq!(o["name"], "web-0");
        assert_eq!(o["uid"], "u-1");
        assert_eq!(o["fieldPath"], "spec.containers{app}");
        assert_eq!(body["reason"], REASON);
        assert_eq!(body["type"], "Warning");
        assert_eq!(body["source"]["host"], "node-a");
        assert_eq!(body["count"], 1);
        assert_eq!(
            body["message"],
            "Container app was OOM-killed: the kernel killed process 7 (python3) at the memory limit of cgroup /kubepods/pod-u/c1"
        );
        let name = body["metadata"]["name"].as_str().unwrap().to_string();
        assert!(name.starts_with("web-0."), "{name}");

        let r = c.on_event(&kill(Some(app())), t0 + Duration::from_secs(30));
        assert_eq!(
            r,
            vec![Request::Patch {
                namespace: "shop".into(),
                name: name.clone(),
                body: json!({"count": 2, "lastTimestamp": "2027-01-15T08:00:30Z", "message": body["message"]}),
            }]
        );
        // The API server lost it (expired): the next kill creates a new Event.
        c.forget("shop", &name);
        let r = c.on_event(&kill(Some(app())), t0 + Duration::from_secs(60));
        assert!(matches!(r[0], Request::Create { .. }), "{r:?}");
    }

    #[test]
    fn kills_outside_pods_make_no_event() {
        let mut c = Correlator::new("n");
        assert!(c.on_event(&kill(None), SystemTime::now()).is_empty());
        let mut plain = app();
        plain.pod = None;
        assert!(c.on_event(&kill(Some(plain)), SystemTime::now()).is_empty());
    }
}

/// What became of each Event request: `created`, `patched`, `failed`, `dropped` (the queue
/// to the sender was full).
pub type Outcomes = prometheus_client::metrics::family::Family<
    crate::sinks::metrics::ResultLabels,
    prometheus_client::metrics::counter::Counter,
>;

/// Kills waiting for the sender; beyond this the kill is dropped (counted) rather than
/// waited for.
pub const QUEUE: usize = 256;

/// Why the Event sink cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The binary was built without the `k8s-events` feature.
    #[error("this build has no Kubernetes Events (build with the `k8s-events` feature)")]
    NotBuilt,
    /// Neither `KUBECONFIG` nor the in-cluster service account gave a configuration.
    #[cfg(feature = "k8s-events")]
    #[error("no Kubernetes API configuration (in-cluster service account or KUBECONFIG)")]
    Config(#[source] kube::config::InferConfigError),
    /// The client could not be built from it.
    #[cfg(feature = "k8s-events")]
    #[error("cannot build the Kubernetes client")]
    Client(#[source] kube::Error),
}

/// The kill path's end of the Event sink: never waits.
pub struct EventSink {
    tx: tokio::sync::mpsc::Sender<Event>,
    outcomes: Outcomes,
}

impl EventSink {
    /// Connects to the API server (the in-cluster service account, or `KUBECONFIG` when set)
    /// and starts the sender task on the current runtime.
    #[cfg(feature = "k8s-events")]
    pub async fn start(node: &str, outcomes: Outcomes) -> Result<EventSink, SinkError> {
        let config = kube::Config::infer().await.map_err(SinkError::Config)?;
        let client = kube::Client::try_from(config).map_err(SinkError::Client)?;
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
        tokio::spawn(send_loop(
            client,
            Correlator::new(node),
            rx,
            outcomes.clone(),
        ));
        Ok(EventSink { tx, outcomes })
    }

    /// Without the feature there is no client.
    #[cfg(not(feature = "k8s-events"))]
    pub async fn start(_node: &str, _outcomes: Outcomes) -> Result<EventSink, SinkError> {
        Err(SinkError::NotBuilt)
    }

    /// Queues a kill for its Event (only kills of pod containers make one).
    pub fn send(&self, ev: &Event) {
        let in_pod = |c: &ContainerRef| target(c).is_some();
        if ev.event != "oom_kill"
            || !(ev.container.iter().any(in_pod) || ev.containers.iter().any(in_pod))
        {
            return;
        }
        if self.tx.try_send(ev.clone()).is_err() {
            crate::sinks::metrics::inc(&self.outcomes, "dropped");
            tracing::warn!(
                seq = ev.seq,
                "Kubernetes Event queue full: this kill gets no Event"
            );
        }
    }
}

#[cfg(feature = "k8s-events")]
async fn send_loop(
    client: kube::Client,
    mut correlator: Correlator,
    mut rx: tokio::sync::mpsc::Receiver<Event>,
    outcomes: Outcomes,
) {
    use crate::sinks::metrics::inc;
    use k8s_openapi::api::core::v1::Event as K8sEvent;
    use kube::api::{Api, Patch, PatchParams, PostParams};
    while let Some(ev) = rx.recv().await {
        for req in correlator.on_event(&ev, SystemTime::now()) {
            let result = match &req {
                Request::Create { namespace, body } => {
                    create(&client, namespace, body).await.map(|_| "created")
                }
                Request::Patch {
                    namespace,
                    name,
                    body,
                } => {
                    let api: Api<K8sEvent> = Api::namespaced(client.clone(), namespace);
                    match api
                        .patch(name, &PatchParams::default(), &Patch::Strategic(body))
                        .await
                    {
                        Ok(_) => Ok("patched"),
                        // Expired on the server: start a new Event.
                        Err(kube::Error::Api(s)) if s.code == 404 => {
                            correlator.forget(namespace, name);
                            match correlator.on_event(&ev, SystemTime::now()).into_iter().find(
                                |r| matches!(r, Request::Create { namespace: n, .. } if n == namespace),
                            ) {
                                Some(Request::Create { namespace, body }) => {
                                    create(&client, &namespace, &body).await.map(|_| "created")
                                }
                                _ => Ok("patched"),
                            }
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            match result {
                Ok(r) => inc(&outcomes, r),
                Err(e) => {
                    inc(&outcomes, "failed");
                    let (method, path) = req.route();
                    tracing::warn!(error = %e, method, path, "Kubernetes Event not sent");
                }
            }
        }
    }

    async fn create(
        client: &kube::Client,
        namespace: &str,
        body: &Value,
    ) -> Result<(), kube::Error> {
        let event: K8sEvent =
            serde_json::from_value(body.clone()).map_err(kube::Error::SerdeError)?;
        Api::<K8sEvent>::namespaced(client.clone(), namespace)
            .create(&PostParams::default(), &event)
            .await
            .map(|_| ())
    }
}
