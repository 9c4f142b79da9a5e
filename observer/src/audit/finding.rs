//! Finding events: the audit's verdicts as JSON lines and log lines.

use std::time::SystemTime;

use serde::Serialize;

use super::{
    assess::{reasons, Assessment, Declared, SandboxProcess},
    memory_fs::Effective,
};
use crate::{
    enrich::container::ContainerInfo,
    event::{ContainerRef, SCHEMA},
    kernel::clock::rfc3339,
};

/// Event names.
pub mod events {
    /// The node is at risk: the declared limit is not enforced.
    pub const LIMIT_UNENFORCED: &str = "limit_unenforced";
    /// Informational: a gVisor sandbox sized above its effective limit.
    pub const SANDBOX_OVERSIZED: &str = "sandbox_oversized";
    /// Processes outside the cgroup their spec or pod names, their declared limit still
    /// enforced where they are (the pod's accounting does not see them).
    pub const CGROUP_MISPLACED: &str = "cgroup_misplaced";
    /// A `limit_unenforced` container is enforced again.
    pub const LIMIT_ENFORCED: &str = "limit_enforced";
}

/// One finding (or its clearing), as a JSON line on the event stream.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FindingEvent {
    /// Always [`SCHEMA`].
    pub schema: u32,
    /// Shared with the kill events: gap-free per daemon run.
    pub seq: u64,
    /// `limit_unenforced`, `cgroup_misplaced`, `sandbox_oversized` or `limit_enforced`.
    pub event: &'static str,
    /// When the audit decided, RFC 3339.
    pub time: String,
    /// The container.
    pub container: ContainerRef,
    /// What it was promised.
    pub declared: Declared,
    /// What the kernel enforces on the cgroup it is placed in.
    pub effective: Effective,
    /// The cgroup its processes are in.
    pub placed_cgroup: String,
    /// The cgroup they belong in, when its cgroupsPath names one.
    pub expected_cgroup: Option<String>,
    /// The main reason code.
    pub reason: &'static str,
    /// Every reason code that applies.
    pub reasons: Vec<&'static str>,
    /// For gVisor: the sandbox process and its `--total-memory`.
    pub sandbox: Option<SandboxProcess>,
    /// The host pids that were looked at.
    pub pids: Vec<u32>,
}

impl FindingEvent {
    /// Builds the event for an assessment (seq is filled by the writer).
    pub fn new(
        event: &'static str,
        c: &ContainerInfo,
        a: &Assessment,
        declared: Declared,
    ) -> FindingEvent {
        let reasons: Vec<&'static str> = match event {
            events::LIMIT_UNENFORCED => a.unenforced.clone(),
            events::SANDBOX_OVERSIZED => vec![reasons::TOTAL_MEMORY_ABOVE_LIMIT],
            events::CGROUP_MISPLACED => vec![reasons::OUTSIDE_EXPECTED_CGROUP],
            _ => vec![reasons::ENFORCED],
        };
        FindingEvent {
            schema: SCHEMA,
            seq: 0,
            event,
            time: rfc3339(SystemTime::now()),
            container: ContainerRef::from(c),
            declared,
            effective: a.effective.clone(),
            placed_cgroup: a.placed_cgroup.clone(),
            expected_cgroup: a.expected_cgroup.clone(),
            reason: reasons.first().copied().unwrap_or(reasons::ENFORCED),
            reasons,
            sandbox: a.sandbox.clone(),
            pids: a.pids.clone(),
        }
    }

    /// The log line for it.
    pub fn log(&self) {
        let c = &self.container;
        let eff = self
            .effective
            .bytes
            .map(mib)
            .unwrap_or_else(|| "none".into());
        let exp = self.expected_cgroup.as_deref().unwrap_or("-");
        match self.event {
            events::LIMIT_UNENFORCED => tracing::warn!(
                container = %c.id, namespace = %c.namespace, reason = self.reason,
                declared = %mib(self.declared.bytes), effective = %eff,
                placed = %self.placed_cgroup, expected = %exp,
                "memory limit not enforced: this container can eat the node"
            ),
            events::CGROUP_MISPLACED => tracing::warn!(
                container = %c.id, namespace = %c.namespace,
                declared = %mib(self.declared.bytes), effective = %eff,
                placed = %self.placed_cgroup, expected = %exp,
                "container runs outside the cgroup it belongs in; its own limit still holds there"
            ),
            events::SANDBOX_OVERSIZED => tracing::info!(
                container = %c.id, namespace = %c.namespace,
                total_memory = %self.sandbox.as_ref().and_then(|s| s.total_memory).map(mib).unwrap_or_default(),
                effective = %eff, placed = %self.placed_cgroup,
                "gVisor sandbox sized above its effective limit: the host kernel, not the sandbox, will kill it"
            ),
            _ => tracing::info!(
                container = %c.id, namespace = %c.namespace,
                declared = %mib(self.declared.bytes), effective = %eff,
                placed = %self.placed_cgroup, "memory limit enforced again"
            ),
        }
    }
}

/// Bytes as MiB for logs and the table.
pub fn mib(b: u64) -> String {
    if b.is_multiple_of(1 << 20) {
        format!("{}MiB", b >> 20)
    } else {
        format!("{:.1}MiB", b as f64 / (1u64 << 20) as f64)
    }
}
