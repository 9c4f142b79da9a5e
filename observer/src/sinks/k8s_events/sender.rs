//! How it is sent: the kill path's end queues the kill and never waits; a task of its own
//! posts the requests the [`Correlator`] decides, and counts what became of them.

#[cfg(feature = "k8s-events")]
use std::time::SystemTime;

#[cfg(feature = "k8s-events")]
use serde_json::Value;

use super::correlator::target;
#[cfg(feature = "k8s-events")]
use super::correlator::{Correlator, Request};
use crate::{
    event::{death::ContainerExit, ContainerRef, Event, EventKind},
    forecast::event::RiskEvent,
    sinks::{Line, Sink},
};

/// What waits for the sender: a kill, a warning before one, or a container's end.
#[derive(Debug)]
#[cfg_attr(
    not(feature = "k8s-events"),
    allow(
        dead_code,
        reason = "read by the sender, which only the feature builds"
    )
)]
pub enum Queued {
    /// An `oom_kill`.
    Kill(Box<Event>),
    /// An `oom_risk`.
    Risk(Box<RiskEvent>),
    /// A pod container's end that warrants an Event.
    Exit(Box<ContainerExit>),
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
    tx: tokio::sync::mpsc::Sender<Queued>,
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
            super::risk::RiskCorrelator::new(),
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
        if ev.event != EventKind::OomKill
            || !(ev.container.iter().any(in_pod) || ev.containers.iter().any(in_pod))
        {
            return;
        }
        if self
            .tx
            .try_send(Queued::Kill(Box::new(ev.clone())))
            .is_err()
        {
            crate::sinks::metrics::inc(&self.outcomes, "dropped");
            tracing::warn!(
                seq = ev.seq,
                "Kubernetes Event queue full: this kill gets no Event"
            );
        }
    }

    /// Queues a warning for its Event (only pod containers' make one; the correlator
    /// rate-limits them). A full queue drops it: kills come first.
    pub fn send_risk(&self, r: &RiskEvent) {
        if r.container.as_ref().and_then(target).is_none() {
            return;
        }
        if self.tx.try_send(Queued::Risk(Box::new(r.clone()))).is_err() {
            crate::sinks::metrics::inc(&self.outcomes, "dropped");
        }
    }

    /// Queues a pod container's end, when it warrants an Event.
    pub fn send_exit(&self, x: &ContainerExit) {
        if super::correlator::exit_reason(x).is_none() || target(&x.container).is_none() {
            return;
        }
        if self.tx.try_send(Queued::Exit(Box::new(x.clone()))).is_err() {
            crate::sinks::metrics::inc(&self.outcomes, "dropped");
            tracing::warn!(
                seq = x.seq,
                "Kubernetes Event queue full: this container's end gets no Event"
            );
        }
    }
}

/// Kills, warnings and notable ends of pod containers; the rest passes by.
impl Sink for EventSink {
    fn emit(&mut self, line: Line<'_>) -> std::io::Result<()> {
        match line {
            Line::Event(ev) => self.send(ev),
            Line::Risk(r) => self.send_risk(r),
            Line::Exit(x) => self.send_exit(x),
            _ => {}
        }
        Ok(())
    }
}

#[cfg(feature = "k8s-events")]
async fn send_loop(
    client: kube::Client,
    mut correlator: Correlator,
    mut risks: super::risk::RiskCorrelator,
    mut rx: tokio::sync::mpsc::Receiver<Queued>,
    outcomes: Outcomes,
) {
    use crate::sinks::metrics::inc;
    use k8s_openapi::api::core::v1::Event as K8sEvent;
    use kube::api::{Api, Patch, PatchParams, PostParams};
    let requests = |c: &mut Correlator, q: &Queued| match q {
        Queued::Kill(ev) => c.on_event(ev, SystemTime::now()),
        Queued::Exit(x) => c.on_exit(x, SystemTime::now()).into_iter().collect(),
        Queued::Risk(r) => c.on_risk(r, SystemTime::now()).into_iter().collect(),
    };
    while let Some(q) = rx.recv().await {
        // A warning's Event goes out at most every RISK_EVERY per container.
        if let Queued::Risk(r) = &q {
            if !risks.due(r, SystemTime::now()) {
                continue;
            }
        }
        for req in requests(&mut correlator, &q) {
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
                            match requests(&mut correlator, &q).into_iter().find(
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
