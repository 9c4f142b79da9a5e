//! Container identity: what containerd knows about one container, reduced to what
//! attribution and the audit need. Pure data and parsing.

use std::{collections::HashMap, fmt, time::Instant};

use serde::Serialize;
use serde_json::Value;

use crate::host::cgroup_path;

/// A container as containerd names it: an id within a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ContainerKey {
    /// containerd namespace (`k8s.io` for Kubernetes).
    pub namespace: String,
    /// Container id.
    pub id: String,
}

impl ContainerKey {
    /// The key of `id` in `namespace`.
    pub fn new(namespace: &str, id: &str) -> ContainerKey {
        ContainerKey {
            namespace: namespace.to_string(),
            id: id.to_string(),
        }
    }
}

impl fmt::Display for ContainerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.id)
    }
}

/// The OCI runtime behind a container, as far as what gets killed and what sizes it differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// runc or another runtime whose container processes are host processes.
    Runc,
    /// gVisor (`runsc`): one sandbox process per pod, sized with `--total-memory`.
    Gvisor,
    /// Kata Containers: a VM per pod.
    Kata,
    /// Anything else (treated like runc).
    Other,
}

impl Runtime {
    /// Decides from containerd's runtime name and, when the runc shim runs another binary
    /// (its `BinaryName` option), that binary's name.
    pub fn of(name: &str, binary: Option<&str>) -> Runtime {
        let classify = |s: &str| {
            let s = s.to_ascii_lowercase();
            if s.contains("runsc") || s.contains("gvisor") {
                Some(Runtime::Gvisor)
            } else if s.contains("kata") {
                Some(Runtime::Kata)
            } else if s.contains("runc") {
                Some(Runtime::Runc)
            } else {
                None
            }
        };
        // The binary says what actually runs: the runc shim may run runsc.
        binary
            .and_then(classify)
            .filter(|r| *r != Runtime::Runc)
            .or_else(|| classify(name))
            .unwrap_or(Runtime::Other)
    }

    /// Whether the workload runs inside a sandbox of its own, so the host processes that
    /// get killed are the sandbox's, not the workload's.
    pub fn is_sandboxed(self) -> bool {
        matches!(self, Runtime::Gvisor | Runtime::Kata)
    }
}

/// Kubernetes pod identity, from the labels the CRI sets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Pod {
    /// `io.kubernetes.pod.name`.
    pub name: Option<String>,
    /// `io.kubernetes.pod.namespace`.
    pub namespace: Option<String>,
    /// `io.kubernetes.pod.uid`.
    pub uid: Option<String>,
}

/// One container, as far as attribution needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    /// containerd namespace.
    pub namespace: String,
    /// Container id.
    pub id: String,
    /// Kubernetes container name (`io.kubernetes.container.name`), if any.
    pub name: Option<String>,
    /// containerd runtime name (e.g. `io.containerd.runc.v2`).
    pub runtime: String,
    /// The runtime binary, when the runtime's options name one (runc shim `BinaryName`).
    pub runtime_binary: Option<String>,
    /// Pod identity, when the labels carry it.
    pub pod: Option<Pod>,
    /// `io.kubernetes.cri.container-type`: `sandbox` or `container`.
    pub container_type: Option<String>,
    /// `io.kubernetes.cri.sandbox-id`: the pod sandbox this container belongs to.
    pub sandbox_id: Option<String>,
    /// `linux.cgroupsPath` exactly as in the OCI spec.
    pub cgroups_path: Option<String>,
    /// The memory-hierarchy path the spec names, when it can be derived without knowing the
    /// runtime's own cgroup (absolute cgroupfs paths and systemd `slice:prefix:name`).
    pub spec_cgroup: Option<String>,
    /// The memory-hierarchy path the task's process actually lives in.
    pub task_cgroup: Option<String>,
    /// The task's host pid.
    pub task_pid: Option<u32>,
    /// `linux.resources.memory.limit` from the spec, in bytes.
    pub memory_limit: Option<i64>,
    /// When containerd reported it deleted.
    pub deleted_at: Option<Instant>,
}

impl ContainerInfo {
    /// Its key.
    pub fn key(&self) -> ContainerKey {
        ContainerKey::new(&self.namespace, &self.id)
    }

    /// Which runtime runs it.
    pub fn runtime_kind(&self) -> Runtime {
        Runtime::of(&self.runtime, self.runtime_binary.as_deref())
    }

    /// Whether its runtime runs the workload inside a sandbox of its own (gVisor, Kata).
    pub fn sandboxed_runtime(&self) -> bool {
        self.runtime_kind().is_sandboxed()
    }

    /// Whether this is a pod sandbox (pause) container.
    pub fn is_sandbox(&self) -> bool {
        self.container_type.as_deref() == Some("sandbox")
    }

    /// The cgroup paths this container is known by.
    pub fn cgroups(&self) -> impl Iterator<Item = &str> {
        self.task_cgroup
            .iter()
            .chain(self.spec_cgroup.iter())
            .map(String::as_str)
    }

    /// Fills labels-derived fields.
    pub fn apply_labels(&mut self, labels: &HashMap<String, String>) {
        let get = |k: &str| labels.get(k).filter(|v| !v.is_empty()).cloned();
        self.name = get("io.kubernetes.container.name");
        let pod = Pod {
            name: get("io.kubernetes.pod.name"),
            namespace: get("io.kubernetes.pod.namespace"),
            uid: get("io.kubernetes.pod.uid"),
        };
        self.pod = (pod != Pod::default()).then_some(pod);
        // The CRI puts these in both labels and annotations; labels win when present.
        if let Some(t) = get("io.kubernetes.cri.container-type") {
            self.container_type = Some(t);
        }
        if let Some(s) = get("io.kubernetes.cri.sandbox-id") {
            self.sandbox_id = Some(s);
        }
    }

    /// Fills spec-derived fields from the OCI runtime spec (JSON).
    pub fn apply_spec(&mut self, spec: &Value) {
        let linux = &spec["linux"];
        self.cgroups_path = linux["cgroupsPath"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        self.spec_cgroup = self
            .cgroups_path
            .as_deref()
            .and_then(cgroup_path::from_spec);
        self.memory_limit = linux["resources"]["memory"]["limit"].as_i64();
        let ann = &spec["annotations"];
        if self.container_type.is_none() {
            self.container_type = ann["io.kubernetes.cri.container-type"]
                .as_str()
                .map(str::to_string);
        }
        if self.sandbox_id.is_none() {
            self.sandbox_id = ann["io.kubernetes.cri.sandbox-id"]
                .as_str()
                .map(str::to_string);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_spec() {
        let mut c = ContainerInfo {
            namespace: "k8s.io".into(),
            id: "c1".into(),
            ..Default::default()
        };
        let labels: HashMap<String, String> = [
            ("io.kubernetes.pod.name", "web-0"),
            ("io.kubernetes.pod.namespace", "default"),
            ("io.kubernetes.pod.uid", "u-1"),
            ("io.kubernetes.container.name", "app"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        c.apply_labels(&labels);
        let spec: Value = serde_json::json!({
            "linux": {"cgroupsPath": "/kubepods/pod-u-1/c1", "resources": {"memory": {"limit": 67108864}}},
            "annotations": {"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": "s1"}
        });
        c.apply_spec(&spec);
        assert_eq!(c.name.as_deref(), Some("app"));
        assert_eq!(c.pod.as_ref().unwrap().name.as_deref(), Some("web-0"));
        assert_eq!(c.spec_cgroup.as_deref(), Some("/kubepods/pod-u-1/c1"));
        assert_eq!(c.memory_limit, Some(64 << 20));
        assert_eq!(c.sandbox_id.as_deref(), Some("s1"));
        assert!(!c.is_sandbox());
        let mut s = c.clone();
        s.runtime_binary = Some("/usr/local/bin/runsc-wrapper".into());
        assert!(s.sandboxed_runtime());
        assert!(!c.sandboxed_runtime());
    }

    #[test]
    fn runtime_is_decided_from_the_name_or_the_shims_binary() {
        assert_eq!(Runtime::of("io.containerd.runc.v2", None), Runtime::Runc);
        assert_eq!(Runtime::of("io.containerd.runsc.v1", None), Runtime::Gvisor);
        assert_eq!(Runtime::of("io.containerd.kata.v2", None), Runtime::Kata);
        assert_eq!(
            Runtime::of("io.containerd.runc.v2", Some("/usr/bin/runsc")),
            Runtime::Gvisor
        );
        assert_eq!(
            Runtime::of("io.containerd.runc.v2", Some("/usr/bin/runc")),
            Runtime::Runc
        );
        assert_eq!(Runtime::of("crun", None), Runtime::Other);
        assert!(Runtime::Gvisor.is_sandboxed() && !Runtime::Runc.is_sandboxed());
    }
}
