//! The daemon's errors, each with its own process exit code and the cause it came from.

use std::{io, path::PathBuf};

use crate::{
    kernel::hooks::{Refusal, Strategy},
    query::socket::QueryError,
};

/// A parse error from either BTF reader (aya's, for loading; btf-rs's, for offsets).
pub type BtfParseError = Box<dyn std::error::Error + Send + Sync>;

/// Everything that stops `oom-observer` from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum ObserverError {
    /// The kernel refused to create maps or load programs for lack of privilege.
    #[error("not permitted to load eBPF programs ({}): run as root, or with CAP_BPF, CAP_PERFMON and CAP_SYS_RESOURCE", first_line(.0))]
    NotPermitted(#[source] Box<aya::EbpfError>),
    /// No hook strategy could be loaded and attached.
    #[error("no usable OOM hook on this kernel: {}", refusals(.0))]
    NoHook(Vec<(Strategy, Refusal)>),
    /// A BTF file was named but could not be read or parsed.
    #[error("cannot use BTF from {}", .path.display())]
    Btf {
        /// The file that was tried.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: BtfParseError,
    },
    /// Neither tracefs nor debugfs tracing is mounted, and mounting tracefs failed.
    #[error("tracefs is not available: mounting it on {} failed", .target.display())]
    TracefsMount {
        /// Where it was to be mounted.
        target: PathBuf,
        /// Why the mount failed.
        #[source]
        source: nix::Error,
    },
    /// tracefs was mounted but shows no tracepoints.
    #[error("tracefs is not available: mounted on {} but it has no events", .0.display())]
    TracefsEmpty(PathBuf),
    /// The binary was built without the kernel programs.
    #[error(
        "this oom-observer was built without its eBPF object: build it with `cargo xtask build`"
    )]
    NoObject,
    /// The eBPF object could not be parsed or relocated.
    #[error("cannot load the eBPF object")]
    Load(#[source] Box<aya::EbpfError>),
    /// The object lacks a map the daemon reads.
    #[error("cannot load the eBPF object: map {0} is missing from it")]
    MapMissing(&'static str),
    /// A map of the object is not of the type the daemon reads it as.
    #[error("cannot load the eBPF object: map {name}")]
    Map {
        /// The map.
        name: &'static str,
        /// Why it cannot be used.
        #[source]
        source: aya::maps::MapError,
    },
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
    /// `--pin-dir` cannot be used (not a bpffs, taken by another daemon, cannot pin).
    #[error(transparent)]
    Pin(#[from] crate::kernel::pins::PinError),
}

impl ObserverError {
    /// The process exit code for this error; 2 is reserved for usage errors (clap).
    pub fn exit_code(&self) -> u8 {
        match self {
            ObserverError::NotPermitted(_) => 3,
            ObserverError::NoHook(_) => 4,
            ObserverError::Btf { .. } => 5,
            ObserverError::TracefsMount { .. } | ObserverError::TracefsEmpty(_) => 6,
            ObserverError::NoObject => 7,
            ObserverError::Load(_) | ObserverError::MapMissing(_) | ObserverError::Map { .. } => 8,
            ObserverError::Output(_) => 9,
            ObserverError::RingBuffer(_)
            | ObserverError::Runtime(_)
            | ObserverError::Signals(_)
            | ObserverError::Query(_) => 10,
            ObserverError::MetricsListen { .. } => 11,
            ObserverError::K8sEvents(_) => 12,
            ObserverError::Pin(_) => 13,
        }
    }
}

fn first_line(e: &aya::EbpfError) -> String {
    chain(e).lines().next().unwrap_or_default().to_string()
}

fn refusals(r: &[(Strategy, Refusal)]) -> String {
    if r.is_empty() {
        return "see the table above".into();
    }
    r.iter()
        .map(|(s, why)| format!("{s}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The errno behind an error, looking through its chain of sources.
pub fn errno_of(err: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if let Some(code) = io.raw_os_error() {
                return Some(code);
            }
        }
        cur = e.source();
    }
    None
}

/// One line: the error and its sources, joined, so logs and the terminal get the cause.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let e = ObserverError::NoHook(vec![(
            Strategy::Tracepoint,
            Refusal::Unavailable {
                what: "tracepoint oom/mark_victim".into(),
                why: "not in tracefs",
            },
        )]);
        assert_eq!(
            e.to_string(),
            "no usable OOM hook on this kernel: tracepoint: tracepoint oom/mark_victim: not in tracefs"
        );
        assert_eq!(
            ObserverError::NoHook(Vec::new()).to_string(),
            "no usable OOM hook on this kernel: see the table above"
        );
        assert_eq!(e.exit_code(), 4);
    }
}
