//! oom-observer: sees every OOM kill in the kernel, names its cgroup, and reports it in order.
//!
//! Data flows one way: kernel record ([`event::Record`]) → enrichment (cgroup paths from
//! [`cgroups`]) → sinks (JSON lines on stdout).

pub mod cgroups;
pub mod check;
pub mod error;
pub mod event;
pub mod hooks;
pub mod layout;
pub mod run;
pub mod setup;
pub mod tracefs;

/// The kernel programs, embedded at build time (empty when built without them).
pub static EBPF_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/observer.bpf.o"));
