//! The cgroup → container index: what containerd knows about each container, reduced to
//! what attribution needs, keyed by the cgroup paths its processes live in.
//!
//! Pure data and parsing; `containerd` fills it, `resolve` reads it.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use serde::Serialize;
use serde_json::Value;

/// How long a deleted container stays known: its kill may be reported after containerd has
/// already torn it down.
pub const KEEP_DELETED: Duration = Duration::from_secs(300);

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
    /// Key in the index.
    pub fn key(&self) -> (String, String) {
        (self.namespace.clone(), self.id.clone())
    }

    /// Whether the runtime runs the workload inside a sandbox of its own (gVisor, Kata), so
    /// the host processes that get killed are the sandbox's, not the workload's.
    pub fn sandboxed_runtime(&self) -> bool {
        let is = |s: &str| {
            let s = s.to_ascii_lowercase();
            s.contains("runsc") || s.contains("gvisor") || s.contains("kata")
        };
        is(&self.runtime) || self.runtime_binary.as_deref().is_some_and(is)
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
        self.spec_cgroup = self.cgroups_path.as_deref().and_then(cgroup_from_spec_path);
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

/// The cgroup path a spec's `linux.cgroupsPath` names, in the hierarchy's own terms.
///
/// - cgroupfs form: an absolute path is taken as is; a relative one is relative to the
///   runtime's own cgroup, which only the task's process can tell (`None`).
/// - systemd form `slice:prefix:name`: the slice expands to its parents
///   (`a-b-c.slice` → `/a.slice/a-b.slice/a-b-c.slice`) and the unit is `prefix-name.scope`.
pub fn cgroup_from_spec_path(p: &str) -> Option<String> {
    let parts: Vec<&str> = p.split(':').collect();
    if parts.len() == 3 {
        let (slice, prefix, name) = (parts[0], parts[1], parts[2]);
        let mut path = expand_slice(if slice.is_empty() {
            "system.slice"
        } else {
            slice
        })?;
        let unit = if name.ends_with(".slice") {
            name.to_string()
        } else if prefix.is_empty() {
            format!("{name}.scope")
        } else {
            format!("{prefix}-{name}.scope")
        };
        if path == "/" {
            path.clear();
        }
        return Some(format!("{path}/{unit}"));
    }
    if parts.len() != 1 || !p.starts_with('/') {
        return None;
    }
    let clean: Vec<&str> = p
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if clean.contains(&"..") {
        return None;
    }
    Some(format!("/{}", clean.join("/")))
}

/// systemd's slice naming: each dash-separated prefix is a parent slice.
fn expand_slice(slice: &str) -> Option<String> {
    let base = slice.strip_suffix(".slice")?;
    if base == "-" {
        return Some("/".into());
    }
    if base.is_empty()
        || base.starts_with('-')
        || base.ends_with('-')
        || base.contains("--")
        || base.contains('/')
    {
        return None;
    }
    let mut path = String::new();
    let mut acc = String::new();
    for (i, part) in base.split('-').enumerate() {
        if i > 0 {
            acc.push('-');
        }
        acc.push_str(part);
        path.push('/');
        path.push_str(&acc);
        path.push_str(".slice");
    }
    Some(path)
}

/// The memory-controller cgroup of a process, from the text of `/proc/<pid>/cgroup`.
pub fn memory_cgroup_of(proc_cgroup: &str, memory_on_dfl: bool) -> Option<String> {
    for line in proc_cgroup.lines() {
        let mut f = line.splitn(3, ':');
        let (id, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        let hit = if memory_on_dfl {
            id == "0" && ctrls.is_empty()
        } else {
            ctrls.split(',').any(|c| c == "memory")
        };
        if hit {
            return Some(path.to_string());
        }
    }
    None
}

/// All known containers, and which cgroup paths lead to them.
#[derive(Debug, Default)]
pub struct ContainerIndex {
    containers: HashMap<(String, String), ContainerInfo>,
    by_cgroup: HashMap<String, Vec<(String, String)>>,
}

impl ContainerIndex {
    /// Adds or replaces a container (keeping what the old entry knew about its task).
    pub fn upsert(&mut self, mut c: ContainerInfo) {
        let key = c.key();
        if let Some(old) = self.containers.get(&key) {
            if c.task_cgroup.is_none() {
                c.task_cgroup = old.task_cgroup.clone();
                c.task_pid = old.task_pid;
            }
        }
        self.unlink(&key);
        for cg in c.cgroups() {
            self.by_cgroup
                .entry(cg.to_string())
                .or_default()
                .push(key.clone());
        }
        self.containers.insert(key, c);
    }

    fn unlink(&mut self, key: &(String, String)) {
        if let Some(old) = self.containers.get(key) {
            for cg in old.cgroups() {
                if let Some(v) = self.by_cgroup.get_mut(cg) {
                    v.retain(|k| k != key);
                    if v.is_empty() {
                        self.by_cgroup.remove(cg);
                    }
                }
            }
        }
    }

    /// Records the cgroup a container's task process lives in.
    pub fn set_task(&mut self, namespace: &str, id: &str, pid: u32, cgroup: Option<String>) {
        let key = (namespace.to_string(), id.to_string());
        if let Some(mut c) = self.containers.get(&key).cloned() {
            c.task_pid = Some(pid);
            if cgroup.is_some() {
                c.task_cgroup = cgroup;
            }
            self.upsert(c);
        }
    }

    /// Records that a container's task is gone. Its cgroup stays known: a kill can be
    /// reported after the exit.
    pub fn clear_task(&mut self, namespace: &str, id: &str) {
        if let Some(c) = self
            .containers
            .get_mut(&(namespace.to_string(), id.to_string()))
        {
            c.task_pid = None;
        }
    }

    /// Marks a container deleted; it stays resolvable for [`KEEP_DELETED`].
    pub fn mark_deleted(&mut self, namespace: &str, id: &str, now: Instant) {
        if let Some(c) = self
            .containers
            .get_mut(&(namespace.to_string(), id.to_string()))
        {
            c.deleted_at = Some(now);
        }
        self.expire(now);
    }

    /// Forgets containers deleted longer ago than [`KEEP_DELETED`].
    pub fn expire(&mut self, now: Instant) {
        let old: Vec<_> = self
            .containers
            .iter()
            .filter(|(_, c)| {
                c.deleted_at
                    .is_some_and(|t| now.duration_since(t) > KEEP_DELETED)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in old {
            self.unlink(&k);
            self.containers.remove(&k);
        }
    }

    /// Containers whose cgroup is exactly `path`.
    pub fn at_cgroup(&self, path: &str) -> Vec<&ContainerInfo> {
        self.by_cgroup
            .get(path)
            .map(|keys| keys.iter().filter_map(|k| self.containers.get(k)).collect())
            .unwrap_or_default()
    }

    /// One container.
    pub fn get(&self, namespace: &str, id: &str) -> Option<&ContainerInfo> {
        self.containers
            .get(&(namespace.to_string(), id.to_string()))
    }

    /// Every container.
    pub fn all(&self) -> impl Iterator<Item = &ContainerInfo> {
        self.containers.values()
    }

    /// Number of containers known.
    pub fn len(&self) -> usize {
        self.containers.len()
    }

    /// Whether no container is known.
    pub fn is_empty(&self) -> bool {
        self.containers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_form_expands_slices() {
        assert_eq!(
            cgroup_from_spec_path("kubepods-burstable-pod1234.slice:cri-containerd:abc").as_deref(),
            Some("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-abc.scope")
        );
        assert_eq!(
            cgroup_from_spec_path("system.slice:docker:x").as_deref(),
            Some("/system.slice/docker-x.scope")
        );
        assert_eq!(
            cgroup_from_spec_path(":cri-containerd:x").as_deref(),
            Some("/system.slice/cri-containerd-x.scope")
        );
        assert_eq!(
            cgroup_from_spec_path("-.slice::x").as_deref(),
            Some("/x.scope")
        );
        assert_eq!(
            cgroup_from_spec_path("kubepods.slice::kubepods-pod1.slice").as_deref(),
            Some("/kubepods.slice/kubepods-pod1.slice")
        );
    }

    #[test]
    fn cgroupfs_form_absolute_and_relative() {
        assert_eq!(
            cgroup_from_spec_path("/kubepods/burstable/pod1/abc").as_deref(),
            Some("/kubepods/burstable/pod1/abc")
        );
        assert_eq!(cgroup_from_spec_path("//a/./b/").as_deref(), Some("/a/b"));
        assert_eq!(
            cgroup_from_spec_path("default/abc"),
            None,
            "relative: only the task can tell"
        );
    }

    #[test]
    fn malformed_cgroups_paths_are_rejected() {
        for bad in [
            "",
            "a:b",
            "a:b:c:d",
            "notaslice:p:n",
            "bad--x.slice:p:n",
            "-a.slice:p:n",
            "/a/../b",
            "x/.slice:p:n",
        ] {
            assert_eq!(cgroup_from_spec_path(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn proc_cgroup_memory_line() {
        let v1 = "12:pids:/x\n4:memory:/process_api/abc\n0::/\n";
        assert_eq!(
            memory_cgroup_of(v1, false).as_deref(),
            Some("/process_api/abc")
        );
        let v1multi = "5:cpu,memory:/p\n";
        assert_eq!(memory_cgroup_of(v1multi, false).as_deref(), Some("/p"));
        let v2 = "0::/kubepods.slice/x.scope\n";
        assert_eq!(
            memory_cgroup_of(v2, true).as_deref(),
            Some("/kubepods.slice/x.scope")
        );
        assert_eq!(memory_cgroup_of(v2, false), None);
        assert_eq!(memory_cgroup_of("garbage", true), None);
    }

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
    fn index_by_cgroup_follows_updates_and_deletes() {
        let mut idx = ContainerIndex::default();
        let c = ContainerInfo {
            namespace: "n".into(),
            id: "a".into(),
            spec_cgroup: Some("/x/a".into()),
            ..Default::default()
        };
        idx.upsert(c.clone());
        assert_eq!(idx.at_cgroup("/x/a").len(), 1);
        idx.set_task("n", "a", 42, Some("/real/a".into()));
        assert_eq!(idx.at_cgroup("/real/a")[0].task_pid, Some(42));
        // An update from containerd (no task info) keeps the task's cgroup.
        idx.upsert(c);
        assert_eq!(idx.at_cgroup("/real/a").len(), 1);
        let t0 = Instant::now();
        idx.mark_deleted("n", "a", t0);
        assert_eq!(
            idx.at_cgroup("/x/a").len(),
            1,
            "a deleted container stays known for a while"
        );
        idx.expire(t0 + KEEP_DELETED + Duration::from_secs(1));
        assert!(idx.at_cgroup("/x/a").is_empty());
        assert!(idx.is_empty());
    }
}
