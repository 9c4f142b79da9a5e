//! The daemon's errors, each with its own process exit code and the cause it came from.
//!
//! Each layer fails with its own error ([`KernelError`], with
//! [`PinError`](crate::kernel::error::PinError) inside it, [`QueryError`], …), which knows
//! its exit code; [`ObserverError`] wraps them and asks them (the pattern of
//! aya's `EbpfError`). What fails only here, in the daemon's loop, is said here.

use std::io;

use crate::{kernel::error::KernelError, query::socket::QueryError};

/// Everything that stops `oom-observer` from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum ObserverError {
    /// Setting up, loading, attaching or reading the kernel programs failed.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// Writing the event stream failed (for example, stdout was closed).
    #[error("cannot write events")]
    Output(#[source] io::Error),
    /// Waiting on the ring buffer failed.
    #[error("event stream failed: the ring buffer cannot be read")]
    RingBuffer(#[source] io::Error),
    /// The async runtime could not be built.
    #[error("event stream failed: cannot start the async runtime")]
    Runtime(#[source] io::Error),
    /// SIGTERM/SIGINT/SIGHUP handlers could not be installed.
    #[error("event stream failed: cannot handle signals")]
    Signals(#[source] io::Error),
    /// The query socket could not be served.
    #[error("event stream failed: {0}")]
    Query(#[from] QueryError),
    /// The metrics address could not be bound (in use, not local, not permitted).
    #[error("cannot serve metrics on {addr}")]
    MetricsListen {
        /// The `--metrics-listen` address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `--k8s-events` was asked for and cannot work.
    #[error("Kubernetes Events")]
    K8sEvents(#[source] crate::sinks::k8s_events::SinkError),
}

impl ObserverError {
    /// The process exit code for this error; 2 is reserved for usage errors (clap).
    pub fn exit_code(&self) -> u8 {
        match self {
            ObserverError::Kernel(e) => e.exit_code(),
            ObserverError::Output(_) => 9,
            ObserverError::RingBuffer(_)
            | ObserverError::Runtime(_)
            | ObserverError::Signals(_)
            | ObserverError::Query(_) => 10,
            ObserverError::MetricsListen { .. } => 11,
            ObserverError::K8sEvents(_) => 12,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::{
        cause::chain,
        kernel::strategy::{Refusal, Strategy},
    };

    #[test]
    fn the_line_names_what_failed_and_why() {
        let e = ObserverError::Query(QueryError::InUse("/run/oom-observer/query.sock".into()));
        assert_eq!(e.exit_code(), 10);
        assert!(
            chain(&e)
                .contains("another oom-observer already answers on /run/oom-observer/query.sock"),
            "{}",
            chain(&e)
        );
        let e = ObserverError::from(KernelError::NoHook(vec![(
            Strategy::Tracepoint,
            Refusal::Unavailable {
                what: "tracepoint oom/mark_victim".into(),
                why: "not in tracefs",
            },
        )]));
        assert_eq!(
            e.to_string(),
            "no usable OOM hook on this kernel: tracepoint: tracepoint oom/mark_victim: not in tracefs"
        );
        assert_eq!(
            ObserverError::from(KernelError::NoHook(Vec::new())).to_string(),
            "no usable OOM hook on this kernel: see the table above"
        );
        assert_eq!(e.exit_code(), 4);
    }

    /// Every code as it was when these variants were `ObserverError`'s own: the exit codes
    /// are part of the interface.
    #[test]
    fn wrapped_errors_keep_their_exit_codes_and_lines() {
        let io = || io::Error::other("x");
        let kernel = |k: KernelError| ObserverError::from(k);
        assert_eq!(kernel(KernelError::NoObject).exit_code(), 7);
        assert_eq!(
            kernel(KernelError::NoObject).to_string(),
            "this oom-observer was built without its eBPF object: build it with `cargo xtask build`"
        );
        let btf = kernel(KernelError::Btf {
            path: PathBuf::from("/nonexistent/vmlinux.btf"),
            source: "bad".into(),
        });
        assert_eq!(btf.exit_code(), 5);
        assert_eq!(
            chain(&btf),
            "cannot use BTF from /nonexistent/vmlinux.btf: bad"
        );
        assert_eq!(
            kernel(KernelError::TracefsEmpty("/sys/kernel/tracing".into())).exit_code(),
            6
        );
        assert_eq!(kernel(KernelError::MapMissing("EVENTS")).exit_code(), 8);
        assert_eq!(
            kernel(KernelError::MapMissing("EVENTS")).to_string(),
            "cannot load the eBPF object: map EVENTS is missing from it"
        );
        assert_eq!(kernel(KernelError::RingBuffer(io())).exit_code(), 10);
        assert_eq!(ObserverError::RingBuffer(io()).exit_code(), 10);
        assert_eq!(ObserverError::Output(io()).exit_code(), 9);
        let line = "--pin-dir /tmp/pins: not on a bpffs (mount one there: mount -t bpf bpf DIR)";
        let pin = kernel(KernelError::from(crate::kernel::error::PinError::NotBpffs(
            "/tmp/pins".into(),
        )));
        assert_eq!(pin.exit_code(), 13);
        assert_eq!(chain(&pin), line);
    }
}
