//! The verdict: is a container's declared memory limit enforced where its processes are?

use serde::Serialize;

use super::memory_fs::{min_opt, Effective};
use crate::{
    enrich::container::ContainerInfo,
    host::cgroup_path::{is_under, parent},
};

/// Reason codes: why a verdict is what it is (the findings' `reason` and `reasons`).
pub mod reasons {
    /// No limit on the processes' cgroup or any ancestor.
    pub const NO_LIMIT: &str = "no_limit";
    /// The smallest limit up the processes' cgroup ancestry is above the declared one.
    pub const LIMIT_ABOVE_DECLARED: &str = "limit_above_declared";
    /// The processes run outside the cgroup their spec or their pod names.
    pub const OUTSIDE_EXPECTED_CGROUP: &str = "outside_expected_cgroup";
    /// A gVisor sandbox's `--total-memory` is above its effective limit.
    pub const TOTAL_MEMORY_ABOVE_LIMIT: &str = "total_memory_above_limit";
    /// The declared limit is enforced again.
    pub const ENFORCED: &str = "enforced";
}

/// Slack before an effective limit counts as above the declared one: the kernel rounds
/// limits to pages, and runtimes add small overheads.
pub fn tolerance(declared: u64) -> u64 {
    (1 << 20) + declared / 100
}

/// What a container was promised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Declared {
    /// The limit the effective one is held to: for a container of a sandboxed runtime (the
    /// sandbox shares one host cgroup) its pod's limit when there is one; otherwise the
    /// smaller of its own and its pod's.
    pub bytes: u64,
    /// The OCI spec's `linux.resources.memory.limit`.
    pub container: Option<u64>,
    /// The limit on the pod's cgroup (the parent its cgroupsPath names).
    pub pod: Option<u64>,
    /// The pod's cgroup, when the container belongs to a pod.
    pub pod_cgroup: Option<String>,
}

/// A gVisor sandbox's host process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SandboxProcess {
    /// The host pid (the `runsc-sandbox` process, the task's pid).
    pub pid: u32,
    /// `--total-memory` from its command line, in bytes.
    pub total_memory: Option<u64>,
}

/// What was read about one running container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Host pids whose cgroups were read.
    pub pids: Vec<u32>,
    /// Each distinct cgroup holding them, with its effective limit.
    pub placed: Vec<(String, Effective)>,
    /// The limit on the pod's cgroup, when it exists and has one.
    pub pod_limit: Option<u64>,
    /// For gVisor, the sandbox process.
    pub sandbox: Option<SandboxProcess>,
}

/// The verdict on one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    /// What was promised; none when nothing was (then there is no finding).
    pub declared: Option<Declared>,
    /// The reported cgroup's effective limit.
    pub effective: Effective,
    /// The cgroup reported as placed (the first outside the expected one, else the one with
    /// the largest effective limit).
    pub placed_cgroup: String,
    /// Where the processes belong: the spec's cgroup, or for a container inside a gVisor or
    /// Kata sandbox, its pod's cgroup.
    pub expected_cgroup: Option<String>,
    /// `limit_unenforced` reasons, most serious first; empty when enforced.
    pub unenforced: Vec<&'static str>,
    /// Whether a gVisor sandbox's `--total-memory` is above the effective limit.
    pub oversized: bool,
    /// Whether processes run outside the expected cgroup while the declared limit still
    /// holds where they are.
    pub misplaced: bool,
    /// The sandbox process, for gVisor.
    pub sandbox: Option<SandboxProcess>,
    /// Host pids read.
    pub pids: Vec<u32>,
}

/// Whether the container belongs to a Kubernetes-shaped pod.
pub fn is_pod_member(c: &ContainerInfo) -> bool {
    c.container_type.is_some() || c.sandbox_id.is_some() || c.pod.is_some()
}

/// The pod's cgroup: the parent of the one the container's cgroupsPath names.
pub fn pod_cgroup(c: &ContainerInfo) -> Option<String> {
    if !is_pod_member(c) {
        return None;
    }
    parent(c.spec_cgroup.as_deref()?)
        .filter(|p| *p != "/")
        .map(str::to_string)
}

/// Whether a container runs inside a sandbox it does not own: its host processes are its
/// pod sandbox's, in the sandbox's cgroup.
fn inside_foreign_sandbox(c: &ContainerInfo) -> bool {
    c.sandboxed_runtime() && !c.is_sandbox() && c.sandbox_id.is_some()
}

/// Where the container's processes belong.
pub fn expected_cgroup(c: &ContainerInfo) -> Option<String> {
    if inside_foreign_sandbox(c) {
        return pod_cgroup(c);
    }
    c.spec_cgroup.clone()
}

/// Decides, from what was observed, whether the container's declared limit is enforced.
pub fn assess(c: &ContainerInfo, o: &Observed) -> Assessment {
    let container = c.memory_limit.filter(|l| *l > 0).map(|l| l as u64);
    let pod_cg = pod_cgroup(c);
    let pod = pod_cg.as_ref().and(o.pod_limit);
    let bytes = if inside_foreign_sandbox(c) {
        pod.or(container)
    } else {
        min_opt(container, pod)
    };
    let declared = bytes.map(|bytes| Declared {
        bytes,
        container,
        pod,
        pod_cgroup: pod_cg.clone(),
    });
    let expected = expected_cgroup(c);
    let outside = |p: &str| expected.as_deref().is_some_and(|e| !is_under(p, e));
    // Report the worst placement: a cgroup outside the expected one, else the loosest limit.
    let worst = o
        .placed
        .iter()
        .max_by_key(|(p, e)| (outside(p), e.bytes.is_none(), e.bytes.unwrap_or(0)));
    let (placed_cgroup, effective) = worst
        .map(|(p, e)| (p.clone(), e.clone()))
        .unwrap_or_default();
    let mut unenforced = Vec::new();
    let mut oversized = false;
    let mut misplaced = false;
    if let Some(d) = &declared {
        match effective.bytes {
            None => unenforced.push(reasons::NO_LIMIT),
            Some(e) if e > d.bytes.saturating_add(tolerance(d.bytes)) => {
                unenforced.push(reasons::LIMIT_ABOVE_DECLARED)
            }
            Some(_) => {}
        }
        if o.placed.iter().any(|(p, _)| outside(p)) {
            // Outside its cgroup but held to its declared limit where it landed: the node is
            // not at risk, so this is not `limit_unenforced`; it gets its own finding.
            if unenforced.is_empty() {
                misplaced = true;
            } else {
                unenforced.push(reasons::OUTSIDE_EXPECTED_CGROUP);
            }
        }
        if let (Some(t), Some(e)) = (
            o.sandbox.as_ref().and_then(|s| s.total_memory),
            effective.bytes,
        ) {
            oversized = t > e.saturating_add(tolerance(e));
        }
    }
    Assessment {
        declared,
        effective,
        placed_cgroup,
        expected_cgroup: expected,
        unenforced,
        oversized,
        misplaced,
        sandbox: o.sandbox.clone(),
        pids: o.pids.clone(),
    }
}

#[cfg(test)]
#[path = "assess_tests.rs"]
mod tests;
