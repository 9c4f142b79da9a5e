//! What `oom-observer run` is asked to do.

use std::{net::SocketAddr, path::PathBuf};

use crate::{
    forecast::ForecastOptions,
    kernel::hooks::Strategy,
    pipeline::processor::{TaskOomAt, TaskOomFor},
    scrub::CmdlinePolicy,
};

/// Options of `oom-observer run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Use exactly this strategy instead of the best one that works.
    pub hook: Option<Strategy>,
    /// BTF file to use instead of the kernel's own.
    pub btf: Option<PathBuf>,
    /// Use no BTF at all, as on a kernel built without it.
    pub no_btf: bool,
    /// Ring buffer size in bytes.
    pub ring_bytes: u32,
    /// containerd's socket; `None` runs kernel-only (no container names, no TaskOOM).
    pub containerd: Option<PathBuf>,
    /// Where undelivered TaskOOMs are kept across restarts; `None` keeps them in memory.
    pub state_dir: Option<PathBuf>,
    /// The query socket; `None` serves no queries.
    pub query_socket: Option<PathBuf>,
    /// Run at real-time priority (SCHED_FIFO 1) so a busy node cannot delay TaskOOM behind
    /// the container's exit.
    pub realtime: bool,
    /// Serve Prometheus metrics on this address; `None` serves none.
    pub metrics_listen: Option<SocketAddr>,
    /// Post a Kubernetes Event on the Pod for each kill, reporting as this node.
    pub k8s_events: Option<String>,
    /// Keep the programs attached, and what they record, across restarts: pinned here (a
    /// directory on a bpffs).
    pub pin_dir: Option<PathBuf>,
    /// When TaskOOM is handed to containerd: at the kill, or at the OOM killer's decision.
    pub taskoom_at: TaskOomAt,
    /// Which kills get a TaskOOM: all, or only those the container does not survive.
    pub taskoom_for: TaskOomFor,
    /// What becomes of the command lines the events carry (`--cmdline`, `--scrub-word`).
    pub cmdline: CmdlinePolicy,
    /// The memory model that warns before a kill (`oom_risk`); none with `--no-forecast`.
    pub forecast: Option<ForecastOptions>,
}
