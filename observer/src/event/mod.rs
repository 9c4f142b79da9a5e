//! The event schema: what a kernel record becomes, below the processor and the sinks that
//! read it. [`schema`] holds the JSON events ([`Event`], [`SCHEMA`]), [`kind`] their kind,
//! [`build`](mod@build) turns a kernel record into one, [`facts`] reads the kernel's detail, and
//! [`explain`] says why a kill happened and what follows.

pub mod build;
pub mod death;
pub mod explain;
pub mod facts;
pub mod kind;
pub mod schema;

pub use build::{build, Resolve};
pub use kind::EventKind;
pub use schema::{
    CgroupRef, ContainerRef, Event, ExitInfo, Explained, Incident, LeadSeconds, LostEvent,
    OomDomain, Trigger, Victim, VictimFacts, VictimMemory, SCHEMA,
};

#[cfg(test)]
mod tests;
