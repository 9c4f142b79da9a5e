//! Where events go: TaskOOM to containerd ([`taskoom`], with its on-disk [`spool`]) first,
//! then the JSON line ([`json`]).

pub mod json;
pub mod spool;
pub mod taskoom;
