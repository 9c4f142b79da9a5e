//! oom-observer: sees every OOM kill in the kernel, names its container, and reports it in
//! order.
//!
//! Data flows one way, and the folders follow it:
//!
//! 1. [`kernel`]: the kernel programs are loaded and attached ([`kernel::hooks`], with
//!    offsets from the running kernel's BTF in [`kernel::btf`]); ring-buffer items become
//!    typed [`kernel::record`]s.
//! 2. [`host`]: what the host says about them: cgroup mounts, id → path, `/proc`.
//! 3. [`enrich`]: which container a kill belongs to, from containerd.
//! 4. [`pipeline`]: the [`pipeline::processor`] builds each [`pipeline::event`] and hands it
//!    to the sinks in kernel order.
//! 5. [`sinks`]: TaskOOM to containerd (spooled while it is away), then the JSON line.
//!
//! Beside the stream: [`audit`] (declared vs enforced memory limits, findings into the same
//! stream) and [`query`] (the "was it OOM-killed?" socket). [`daemon`] wires it all and runs
//! the loop; [`cli`] holds the one-shot commands.

pub mod audit;
pub mod cli;
pub mod daemon;
pub mod enrich;
pub mod error;
pub mod host;
pub mod kernel;
pub mod pipeline;
pub mod query;
pub mod sinks;

/// The kernel programs, embedded at build time (empty when built without them).
pub static EBPF_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/observer.bpf.o"));
