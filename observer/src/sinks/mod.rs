//! Where events go: TaskOOM to containerd ([`taskoom`], with its on-disk [`spool`]) first,
//! then the JSON line ([`json`]); [`metrics`] counts what was written.

pub mod json;
pub mod k8s_events;
pub mod metrics;
pub mod spool;
pub mod taskoom;
