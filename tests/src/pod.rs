//! Kubernetes-shaped pods without a kubelet, inside a scratch cgroup tree of the test's own.
//!
//! The tree exists in every mounted hierarchy (so a runtime that creates "relative" cgroups
//! under its caller's own cgroup creates them inside it, never under a cgroup the test does
//! not own), and its top has a hard memory limit in the memory hierarchy: a container that
//! escapes its pod's limit is still bounded by the test. Its name is a systemd slice
//! (`oomx_<pid>_<n>.slice`), so systemd-form cgroupsPaths can name a pod slice inside it.
//! Everything in it is killed and removed on drop, pass or fail.

use serde_json::Value;

use crate::containerd::{Containerd, RunOpts};

use std::{
    fs,
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
    thread,
    time::Duration,
};

static N: AtomicUsize = AtomicUsize::new(0);

/// A scratch cgroup tree in every hierarchy, with a hard memory limit at its top.
pub struct ScratchTree {
    /// Slice base name: the top is `<base>.slice`.
    pub base: String,
    /// The top's directory name (`<base>.slice`).
    pub name: String,
    /// The hierarchies' mount points.
    hierarchies: Vec<PathBuf>,
    memory: PathBuf,
    /// cgroup v2 (the VM guests): one hierarchy, `memory.max`, controllers enabled per level.
    v2: bool,
}

/// Whether /sys/fs/cgroup is the unified (v2) hierarchy.
pub fn unified() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

fn is_cgroup_mount(p: &Path) -> bool {
    p.join("cgroup.procs").exists()
}

fn copy_cpuset(dir: &Path) {
    // A v1 cpuset cgroup takes no task until its cpus and mems are set: inherit them.
    for f in ["cpuset.cpus", "cpuset.mems"] {
        if let Some(parent) = dir.parent() {
            if let Ok(v) = fs::read_to_string(parent.join(f)) {
                let _ = fs::write(dir.join(f), v.trim());
            }
        }
    }
}

impl ScratchTree {
    /// Creates `oomx_<pid>_<n>.slice` at the top of every hierarchy, with `limit_mb` as the
    /// memory (and memory+swap) limit of the whole test.
    pub fn new(limit_mb: u64) -> ScratchTree {
        let v2 = unified();
        let memory = if v2 {
            PathBuf::from("/sys/fs/cgroup")
        } else {
            crate::v1_memory_root()
        };
        let n = N.fetch_add(1, Ordering::SeqCst);
        let base = format!("oomx_{}_{n}", std::process::id());
        let name = format!("{base}.slice");
        let mut hierarchies = Vec::new();
        if v2 {
            hierarchies.push(memory.clone());
        } else {
            for e in fs::read_dir("/sys/fs/cgroup")
                .expect("/sys/fs/cgroup")
                .flatten()
            {
                let h = e.path();
                if is_cgroup_mount(&h) {
                    hierarchies.push(h);
                }
            }
        }
        let t = ScratchTree {
            base,
            name,
            hierarchies,
            memory,
            v2,
        };
        t.mkdir_all_hierarchies("");
        let top = t.memory_dir("");
        let bytes = (limit_mb << 20).to_string();
        if v2 {
            fs::write(top.join("memory.max"), &bytes).expect("outer limit");
            let _ = fs::write(top.join("memory.swap.max"), "0");
        } else {
            fs::write(top.join("memory.limit_in_bytes"), &bytes).expect("outer limit");
            let _ = fs::write(top.join("memory.memsw.limit_in_bytes"), &bytes);
        }
        t
    }

    /// On v2 a child gets a memory limit only if its parent delegates the controller; a
    /// cgroup that will hold processes (containerd's `sys`) must not delegate it (no
    /// internal processes), so only the top and pod cgroups do.
    fn delegate_memory(&self, dir: &Path) {
        if self.v2 {
            let f = dir.join("cgroup.subtree_control");
            fs::write(&f, "+memory").unwrap_or_else(|e| panic!("writing {}: {e}", f.display()));
        }
    }

    /// The top's hierarchy path (`/<base>.slice`).
    pub fn path(&self) -> String {
        format!("/{}", self.name)
    }

    /// A hierarchy path inside the tree.
    pub fn sub(&self, rel: &str) -> String {
        if rel.is_empty() {
            self.path()
        } else {
            format!("/{}/{rel}", self.name)
        }
    }

    /// Directory of `rel` in the memory hierarchy.
    pub fn memory_dir(&self, rel: &str) -> PathBuf {
        let d = self.memory.join(&self.name);
        if rel.is_empty() {
            d
        } else {
            d.join(rel)
        }
    }

    /// Creates `rel` in every hierarchy.
    pub fn mkdir_all_hierarchies(&self, rel: &str) {
        for h in &self.hierarchies {
            let d = h.join(&self.name).join(rel);
            if !d.exists() {
                fs::create_dir(&d).unwrap_or_else(|e| panic!("creating {}: {e}", d.display()));
            }
            if h.ends_with("cpuset") {
                copy_cpuset(&d);
            }
        }
        if rel.is_empty() {
            self.delegate_memory(&self.memory_dir(""));
        }
    }

    /// Creates `rel` in the memory hierarchy only, with a memory limit if given.
    pub fn mkdir_memory(&self, rel: &str, limit_mb: Option<u64>) -> PathBuf {
        let d = self.memory_dir(rel);
        fs::create_dir_all(&d).unwrap_or_else(|e| panic!("creating {}: {e}", d.display()));
        // Pod-level cgroups hold no process themselves: their children get limits.
        if limit_mb.is_some() {
            self.delegate_memory(&d);
        }
        if let Some(mb) = limit_mb {
            self.set_limit(rel, mb);
        }
        d
    }

    /// Sets `rel`'s memory limit in MiB.
    pub fn set_limit(&self, rel: &str, mb: u64) {
        let file = if self.v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        let f = self.memory_dir(rel).join(file);
        fs::write(&f, (mb << 20).to_string())
            .unwrap_or_else(|e| panic!("writing {}: {e}", f.display()));
    }

    /// Sets `rel`'s CPU weight, as cgroup v1 `cpu.shares` (2–262144); on v2 `cpu.weight`
    /// by runc's conversion (1 + (shares − 2) · 9999 / 262142), enabling the cpu controller
    /// on the way down from the tree's top.
    pub fn set_cpu_shares(&self, rel: &str, shares: u64) {
        let (dir, file, value) = if self.v2 {
            let mut d = self.memory_dir("");
            for part in rel.split('/').filter(|p| !p.is_empty()) {
                let _ = fs::write(d.join("cgroup.subtree_control"), "+cpu");
                d = d.join(part);
            }
            let weight = 1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142;
            (d, "cpu.weight", weight)
        } else {
            let cpu = self
                .hierarchies
                .iter()
                .find(|h| h.join("cpu.shares").exists())
                .expect("a cgroup v1 cpu hierarchy");
            (cpu.join(&self.name).join(rel), "cpu.shares", shares)
        };
        let f = dir.join(file);
        fs::write(&f, value.to_string())
            .unwrap_or_else(|e| panic!("writing {value} to {}: {e}", f.display()));
    }

    /// The `cgroup.procs` files of `rel` in every hierarchy (to put a process there).
    pub fn procs_files(&self, rel: &str) -> Vec<PathBuf> {
        self.hierarchies
            .iter()
            .map(|h| h.join(&self.name).join(rel).join("cgroup.procs"))
            .collect()
    }

    /// Moves a process into `rel` in the memory hierarchy.
    pub fn move_memory(&self, rel: &str, pid: u32) {
        let f = self.memory_dir(rel).join("cgroup.procs");
        fs::write(&f, pid.to_string())
            .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", f.display()));
    }

    /// Memory charged to `rel` now.
    pub fn usage(&self, rel: &str) -> u64 {
        let file = if self.v2 {
            "memory.current"
        } else {
            "memory.usage_in_bytes"
        };
        fs::read_to_string(self.memory_dir(rel).join(file))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }
}

fn subdirs_deepest_first(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                subdirs_deepest_first(&e.path(), out);
            }
        }
    }
    out.push(dir.to_path_buf());
}

impl Drop for ScratchTree {
    fn drop(&mut self) {
        // Kill everything in the tree (memory hierarchy holds every process of the test's
        // containers, the containerd and its shims), then remove it in every hierarchy.
        let top = self.memory_dir("");
        for _ in 0..300 {
            let mut dirs = Vec::new();
            subdirs_deepest_first(&top, &mut dirs);
            let mut any = false;
            for d in &dirs {
                let procs = fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
                for p in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    any = true;
                    // SAFETY: kill(2) takes plain integers and touches none of our memory.
                    unsafe { libc::kill(p, libc::SIGKILL) };
                }
            }
            if !any {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        for h in &self.hierarchies {
            let mut dirs = Vec::new();
            subdirs_deepest_first(&h.join(&self.name), &mut dirs);
            for d in dirs {
                for _ in 0..100 {
                    if fs::remove_dir(&d).is_ok() || !d.exists() {
                        break;
                    }
                    thread::sleep(Duration::from_millis(20));
                }
                if d.exists() {
                    eprintln!("WARNING: could not remove scratch cgroup {}", d.display());
                }
            }
        }
    }
}

/// A slow memory hog in busybox sh: 1 MiB more every 50 ms, its progress (MiB held) in
/// `/progress-<id>` of the rootfs; sleeps `delay_s` first. (A go-file gate would not do:
/// gVisor does not see files the host adds to its rootfs after the sandbox started.)
pub fn hog_script(id: &str, delay_s: u32) -> String {
    let gate = format!("sleep {delay_s}; ");
    format!(
        "{gate}y=a; i=0; while [ $i -lt 20 ]; do y=$y$y; i=$((i+1)); done; \
         n=0; while :; do n=$((n+1)); eval \"v$n=\\$y\"; echo $n > /progress-{id}; sleep 0.05; done"
    )
}

pub fn progress(cd: &Containerd, id: &str) -> u64 {
    fs::read_to_string(cd.rootfs.join(format!("progress-{id}")))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// A Kubernetes-shaped pod: a sandbox container and an application container.
pub struct Pod<'a> {
    pub sandbox: &'a str,
    pub app: &'a str,
    pub uid: &'a str,
}

impl Pod<'_> {
    fn labels(&self, container: &str) -> Vec<(&'static str, String)> {
        vec![
            ("io.kubernetes.pod.name", format!("pod-{}", self.uid)),
            ("io.kubernetes.pod.namespace", "audit".into()),
            ("io.kubernetes.pod.uid", self.uid.into()),
            ("io.kubernetes.container.name", container.into()),
        ]
    }

    /// Starts the sandbox (a sleeping pause stand-in) and the application container with
    /// `app_cmd`, each with the cgroupsPath `cgroup_of(id)`.
    pub fn start(
        &self,
        cd: &Containerd,
        cgroup_of: &dyn Fn(&str) -> String,
        gvisor: bool,
        app_limit_mb: Option<u64>,
        app_cmd: &str,
    ) {
        let wrapper = cd.runsc_pod_wrapper.clone();
        let binary = gvisor.then_some(wrapper.as_path());
        for (id, kind, cmd, limit) in [
            (self.sandbox, "sandbox", "sleep 3600".to_string(), None),
            (self.app, "container", app_cmd.to_string(), app_limit_mb),
        ] {
            let cg = cgroup_of(id);
            let labels = self.labels(if kind == "sandbox" { "POD" } else { "app" });
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let ann = [
                ("io.kubernetes.cri.container-type", kind),
                ("io.kubernetes.cri.sandbox-id", self.sandbox),
            ];
            cd.run_detached(
                id,
                &RunOpts {
                    cgroup: Some(&cg),
                    annotations: &ann,
                    labels: &labels,
                    runc_binary: binary,
                    memory_limit_mb: limit,
                },
                &["/bin/sh", "-c", &cmd],
            );
            cd.wait_running(id);
        }
    }
}

/// Findings (`limit_unenforced`, ...) of one container.
pub fn findings<'a>(evs: &'a [Value], kind: &str, id: &str) -> Vec<&'a Value> {
    evs.iter()
        .filter(|e| e["event"] == kind && e["container"]["id"] == id)
        .collect()
}
