//! Attribution: which container(s) an OOM kill belongs to.
//!
//! Rules (also in docs/taskoom.md):
//! 1. A victim in a container's own cgroup is that container's. A victim in a cgroup below a
//!    container's cgroup belongs to the nearest such container.
//! 2. A victim in a pod sandbox's cgroup under a sandboxed runtime (gVisor `runsc`, Kata)
//!    belongs to the application container(s) of that sandbox: the killed host processes
//!    are the sandbox's, the workload is theirs.
//! 3. The OOM cgroup (the limit that was hit) decides between pod and container level: if it
//!    is one application container's own cgroup, that container alone; if it is the pod's,
//!    every application container of the sandbox.
//! 4. Anything else is unknown: no container, and nothing is published.

use super::{container::ContainerInfo, index::ContainerIndex};
use crate::host::cgroup_path;

/// The containers an OOM kill is attributed to (empty when unknown), most specific first.
pub fn attribute(
    idx: &ContainerIndex,
    victim_cgroup: Option<&str>,
    oom_cgroup: Option<&str>,
) -> Vec<ContainerInfo> {
    let Some(victim) = victim_cgroup else {
        return Vec::new();
    };
    // The nearest cgroup up the victim's path that is some container's; the root never is.
    let owners = cgroup_path::ancestors(victim)
        .filter(|p| *p != "/")
        .map(|p| idx.at_cgroup(p))
        .find(|found| !found.is_empty())
        .unwrap_or_default();
    let mut out: Vec<ContainerInfo> = Vec::new();
    for owner in owners {
        if owner.is_sandbox() && owner.sandboxed_runtime() {
            let mut apps: Vec<&ContainerInfo> = idx
                .all()
                .filter(|c| {
                    c.namespace == owner.namespace
                        && c.sandbox_id.as_deref() == Some(owner.id.as_str())
                        && !c.is_sandbox()
                })
                .collect();
            if let Some(oom) = oom_cgroup {
                let own: Vec<&ContainerInfo> = apps
                    .iter()
                    .copied()
                    .filter(|c| c.cgroups().any(|p| p == oom))
                    .collect();
                if !own.is_empty() {
                    apps = own;
                }
            }
            if apps.is_empty() {
                push_unique(&mut out, owner);
            } else {
                apps.sort_by(|a, b| a.id.cmp(&b.id));
                for a in apps {
                    push_unique(&mut out, a);
                }
            }
        } else {
            push_unique(&mut out, owner);
        }
    }
    out
}

fn push_unique(out: &mut Vec<ContainerInfo>, c: &ContainerInfo) {
    if !out
        .iter()
        .any(|o| o.namespace == c.namespace && o.id == c.id)
    {
        out.push(c.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctr(id: &str, cg: &str) -> ContainerInfo {
        ContainerInfo {
            namespace: "k8s.io".into(),
            id: id.into(),
            runtime: "io.containerd.runc.v2".into(),
            task_cgroup: Some(cg.into()),
            ..Default::default()
        }
    }

    fn ids(v: &[ContainerInfo]) -> Vec<&str> {
        v.iter().map(|c| c.id.as_str()).collect()
    }

    #[test]
    fn victim_in_container_cgroup_or_below() {
        let mut idx = ContainerIndex::default();
        idx.upsert(ctr("a", "/pod1/a"));
        assert_eq!(ids(&attribute(&idx, Some("/pod1/a"), Some("/pod1"))), ["a"]);
        assert_eq!(ids(&attribute(&idx, Some("/pod1/a/sub/x"), None)), ["a"]);
        assert!(
            attribute(&idx, Some("/pod1"), None).is_empty(),
            "a parent is not the container"
        );
        assert!(attribute(&idx, Some("/other"), None).is_empty());
        assert!(attribute(&idx, None, Some("/pod1")).is_empty());
    }

    fn gvisor_pod() -> ContainerIndex {
        let mut idx = ContainerIndex::default();
        let mut sb = ctr("sb", "/pod/sb");
        sb.container_type = Some("sandbox".into());
        sb.runtime_binary = Some("runsc".into());
        idx.upsert(sb);
        for app in ["app1", "app2"] {
            let mut c = ctr(app, &format!("/pod/{app}"));
            c.container_type = Some("container".into());
            c.sandbox_id = Some("sb".into());
            c.runtime_binary = Some("runsc".into());
            idx.upsert(c);
        }
        idx
    }

    #[test]
    fn sandboxed_runtime_kill_goes_to_the_application_containers() {
        let idx = gvisor_pod();
        // Pod-level limit: every application container of the sandbox.
        assert_eq!(
            ids(&attribute(&idx, Some("/pod/sb"), Some("/pod"))),
            ["app1", "app2"]
        );
        // Container-level limit: that container alone.
        assert_eq!(
            ids(&attribute(&idx, Some("/pod/sb"), Some("/pod/app2"))),
            ["app2"]
        );
    }

    #[test]
    fn runc_sandbox_stays_the_sandbox() {
        let mut idx = ContainerIndex::default();
        let mut sb = ctr("pause", "/pod/pause");
        sb.container_type = Some("sandbox".into());
        idx.upsert(sb);
        let mut app = ctr("app", "/pod/app");
        app.sandbox_id = Some("pause".into());
        idx.upsert(app);
        assert_eq!(
            ids(&attribute(&idx, Some("/pod/pause"), Some("/pod"))),
            ["pause"]
        );
    }

    #[test]
    fn sandbox_without_known_apps_keeps_the_sandbox() {
        let mut idx = ContainerIndex::default();
        let mut sb = ctr("solo", "/solo");
        sb.container_type = Some("sandbox".into());
        sb.runtime = "io.containerd.runsc.v1".into();
        idx.upsert(sb);
        assert_eq!(
            ids(&attribute(&idx, Some("/solo"), Some("/solo"))),
            ["solo"]
        );
    }
}
