//! What the kernel layer can fail with, each error with its process exit code: the daemon's
//! `ObserverError` wraps these and asks them for the code.

use std::{
    io,
    path::{Path, PathBuf},
};

use super::strategy::{Refusal, Strategy};
use crate::cause::chain;

/// A parse error from either BTF reader (aya's, for loading; btf-rs's, for offsets).
pub type BtfParseError = Box<dyn std::error::Error + Send + Sync>;

/// Why the kernel programs cannot be set up, loaded, attached or read.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
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
    /// A ring buffer could not be registered with the async runtime, so it cannot be read.
    #[error("event stream failed: the ring buffer cannot be read")]
    RingBuffer(#[source] io::Error),
    /// `--pin-dir` cannot be used (not a bpffs, taken by another daemon, cannot pin).
    #[error(transparent)]
    Pin(#[from] PinError),
}

impl KernelError {
    /// The process exit code for this error (see `ObserverError::exit_code`).
    pub fn exit_code(&self) -> u8 {
        match self {
            KernelError::NotPermitted(_) => 3,
            KernelError::NoHook(_) => 4,
            KernelError::Btf { .. } => 5,
            KernelError::TracefsMount { .. } | KernelError::TracefsEmpty(_) => 6,
            KernelError::NoObject => 7,
            KernelError::Load(_) | KernelError::MapMissing(_) | KernelError::Map { .. } => 8,
            KernelError::RingBuffer(_) => 10,
            KernelError::Pin(e) => e.exit_code(),
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

/// Why `--pin-dir` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// The directory (or its nearest existing parent) is not on a BPF filesystem.
    #[error("--pin-dir {}: not on a bpffs (mount one there: mount -t bpf bpf DIR)", .0.display())]
    NotBpffs(PathBuf),
    /// Another daemon holds the directory.
    #[error("--pin-dir {}: another oom-observer uses it", .0.display())]
    Busy(PathBuf),
    /// The kernel hands tracepoints no bpf_link (before Linux 5.15): they cannot be pinned.
    #[error("--pin-dir: this kernel cannot pin tracepoint links (needs Linux 5.15 or later)")]
    NoPerfLink,
    /// A file operation on the directory failed.
    #[error("--pin-dir {}", .path.display())]
    Io {
        /// What was being done to.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// Pinning a map or link failed.
    #[error("--pin-dir: cannot pin {}", .path.display())]
    Pin {
        /// The pin's path.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: aya::pin::PinError,
    },
}

impl PinError {
    /// The process exit code: every way `--pin-dir` fails is one code.
    pub fn exit_code(&self) -> u8 {
        13
    }

    /// Makes an [`io::Error`] on `path` a [`PinError::Io`].
    pub(super) fn io(path: &Path) -> impl FnOnce(io::Error) -> PinError + '_ {
        move |source| PinError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
