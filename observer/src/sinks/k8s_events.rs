//! Kubernetes Events on the Pod, one per kill. The reason is
//! `OOMKilling`, the reason node-problem-detector gives its kernel OOM events (on the Node),
//! so filters and event exporters that already look for it find these too, now on the Pod
//! and its container (`involvedObject.fieldPath` `spec.containers{NAME}`, as the kubelet
//! writes container events). Repeated kills of one container aggregate like the kubelet's
//! own events (client-go's event correlator): the first is created, each repeat PATCHes
//! `count`, `lastTimestamp` and `message` of that Event.
//!
//! The [`Correlator`] decides the requests; sending them is the [`EventSink`]'s job, off the
//! kill path.

mod correlator;
mod risk;
mod sender;

pub use correlator::{
    summary, Correlator, Request, COMPONENT, MAX_REMEMBERED, REASON, RISK_REASON,
};
pub use risk::{RiskCorrelator, RISK_EVERY};
pub use sender::{EventSink, Outcomes, SinkError, QUEUE};
