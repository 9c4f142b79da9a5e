//! Kubernetes-shaped pods without a kubelet, inside a scratch cgroup tree of the test's own.
//!
//! The tree exists in every mounted hierarchy (so a runtime that creates "relative" cgroups
//! under its caller's own cgroup creates them inside it, never under a cgroup the test does
//! not own), and its top has a hard memory limit in the memory hierarchy: a container that
//! escapes its pod's limit is still bounded by the test. Its name is a systemd slice
//! (`oomx_<pid>_<n>.slice`), so systemd-form cgroupsPaths can name a pod slice inside it.
//! Everything in it is killed and removed on drop, pass or fail.

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
        let memory = crate::v1_memory_root();
        let n = N.fetch_add(1, Ordering::SeqCst);
        let base = format!("oomx_{}_{n}", std::process::id());
        let name = format!("{base}.slice");
        let mut hierarchies = Vec::new();
        for e in fs::read_dir("/sys/fs/cgroup")
            .expect("/sys/fs/cgroup")
            .flatten()
        {
            let h = e.path();
            if is_cgroup_mount(&h) {
                hierarchies.push(h);
            }
        }
        let t = ScratchTree {
            base,
            name,
            hierarchies,
            memory,
        };
        t.mkdir_all_hierarchies("");
        let top = t.memory_dir("");
        let bytes = (limit_mb << 20).to_string();
        fs::write(top.join("memory.limit_in_bytes"), &bytes).expect("outer limit");
        let _ = fs::write(top.join("memory.memsw.limit_in_bytes"), &bytes);
        t
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
    }

    /// Creates `rel` in the memory hierarchy only, with a memory limit if given.
    pub fn mkdir_memory(&self, rel: &str, limit_mb: Option<u64>) -> PathBuf {
        let d = self.memory_dir(rel);
        fs::create_dir_all(&d).unwrap_or_else(|e| panic!("creating {}: {e}", d.display()));
        if let Some(mb) = limit_mb {
            self.set_limit(rel, mb);
        }
        d
    }

    /// Sets `rel`'s memory limit in MiB.
    pub fn set_limit(&self, rel: &str, mb: u64) {
        let f = self.memory_dir(rel).join("memory.limit_in_bytes");
        fs::write(&f, (mb << 20).to_string())
            .unwrap_or_else(|e| panic!("writing {}: {e}", f.display()));
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
        fs::read_to_string(self.memory_dir(rel).join("memory.usage_in_bytes"))
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
