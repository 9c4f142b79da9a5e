//! What the model is given to watch: containerd's containers and the cgroups named by flag.

use std::sync::Arc;

use crate::{enrich::container::ContainerInfo, event::ContainerRef, host::cgroup_path};

/// One thing to model: a container's cgroup, or a cgroup named by flag.
#[derive(Debug, Clone)]
pub struct Target {
    /// The memory cgroup (hierarchy path; shared with the model's slot and limits: one
    /// copy of each path on a node of 10,000 containers, issue 24's memory).
    pub cgroup: Arc<str>,
    /// Its pod's cgroup, for a Kubernetes container.
    pub pod_cgroup: Option<Arc<str>>,
    /// The container, if it is one (shared: every tick's headroom names it).
    pub container: Option<Arc<ContainerRef>>,
}

impl Target {
    /// The target of a container from containerd's index; none for sandboxes, deleted
    /// containers and those without a cgroup.
    pub fn of(c: &ContainerInfo) -> Option<Target> {
        if c.is_sandbox() || c.deleted_at.is_some() {
            return None;
        }
        let cgroup: Arc<str> = Arc::from(c.cgroups().next()?);
        let pod_cgroup = (c.pod.is_some() || c.sandbox_id.is_some())
            .then(|| cgroup_path::parent(&cgroup).map(Arc::from))
            .flatten();
        Some(Target {
            cgroup,
            pod_cgroup,
            container: Some(Arc::new(ContainerRef::from(c))),
        })
    }

    /// A cgroup named by `--forecast-cgroup`.
    pub fn cgroup(path: &str) -> Target {
        Target {
            cgroup: Arc::from(path),
            pod_cgroup: None,
            container: None,
        }
    }

    /// The key its warnings are kept under: the container's id, else the cgroup.
    pub(super) fn key(&self) -> &str {
        self.container
            .as_ref()
            .map(|c| c.id.as_str())
            .unwrap_or(&self.cgroup)
    }
}
