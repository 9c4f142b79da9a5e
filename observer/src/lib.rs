//! oom-observer: sees every OOM kill in the kernel, names its cgroup, and reports it in order.
//!
//! Data flows one way: kernel record ([`event::Record`]) → enrichment (cgroup paths from
//! [`cgroups`], containers from [`containerd`] via [`resolve`]) → sinks (TaskOOM to
//! containerd through [`publish`], then the JSON line on stdout).

pub mod audit;
pub mod cgroups;
pub mod check;
pub mod containerd;
pub mod error;
pub mod event;
pub mod hooks;
pub mod index;
pub mod layout;
pub mod limitwatch;
pub mod publish;
pub mod query;
pub mod resolve;
pub mod run;
pub mod setup;
pub mod spool;
pub mod tracefs;

/// The kernel programs, embedded at build time (empty when built without them).
pub static EBPF_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/observer.bpf.o"));
