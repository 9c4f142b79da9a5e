//! Load for the benchmarks: a busy node ([`Load`]: busy loops on every core and cgroup
//! churn, the bench's "loaded node") and a starved CPU ([`Starve`]: busy processes pinned on
//! one CPU in a scratch cgroup whose CPU weight outranks the kernel's workers and every
//! container there), where an OOM kill, and the notification containerd waits for, queue.

use std::{
    fs,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
};

use crate::pod::ScratchTree;

/// Load that keeps every core busy at ordinary priority and churns scratch cgroups (the
/// bench's "loaded node").
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
    churned: Arc<std::sync::atomic::AtomicU64>,
}

impl Load {
    pub fn start(busy_per_core: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let churned = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut threads = Vec::new();
        let cores = thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        for _ in 0..cores * busy_per_core {
            let s = stop.clone();
            threads.push(thread::spawn(move || {
                let mut x = 0u64;
                while !s.load(Ordering::Relaxed) {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    std::hint::black_box(x);
                }
            }));
        }
        // Cgroup churn: scratch cgroups created and removed as fast as the kernel allows.
        let s = stop.clone();
        let c = churned.clone();
        threads.push(thread::spawn(move || {
            // The memory hierarchy: v1 on the hosts, the unified tree in the VM guests.
            let root = if crate::pod::unified() {
                std::path::PathBuf::from("/sys/fs/cgroup")
            } else {
                crate::v1_memory_root()
            };
            let base = root.join(format!("oomx-churn-{}", std::process::id()));
            let _ = fs::create_dir(&base);
            let mut i = 0u64;
            while !s.load(Ordering::Relaxed) {
                let d = base.join(format!("c{}", i % 64));
                if fs::create_dir(&d).is_ok() {
                    let _ = fs::remove_dir(&d);
                    c.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
            for j in 0..64 {
                let _ = fs::remove_dir(base.join(format!("c{j}")));
            }
            let _ = fs::remove_dir(&base);
        }));
        Load {
            stop,
            threads,
            churned,
        }
    }

    /// Stops the load; returns how many cgroups the churn made and removed.
    pub fn stop(mut self) -> u64 {
        self.halt();
        self.churned.load(Ordering::Relaxed)
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Load {
    /// Also when a test fails mid-load: the churn thread removes its scratch cgroups.
    fn drop(&mut self) {
        self.halt();
    }
}

/// CPU shares of the starved CPU's busy loops, 10× a container's default (1024): a
/// container's task on that CPU gets about a tenth of it.
const STARVE_SHARES: u64 = 10 * 1024;
/// The scratch tree's own share against the root cgroup's tasks (the kernel's workers, at
/// the weight of a nice-0 task, 1024): the maximum, so a kworker queued on the starved CPU
/// waits behind the tree.
const TREE_SHARES: u64 = 262_144;

/// Busy processes pinned on one CPU, in the scratch tree's `load` cgroup; killed on drop
/// (and with the tree, whatever happens).
pub struct Starve {
    children: Vec<Child>,
}

impl Starve {
    /// Starts `loops` busy loops on `cpu`.
    pub fn start(tree: &ScratchTree, cpu: usize, loops: usize) -> Starve {
        tree.mkdir_all_hierarchies("load");
        tree.set_cpu_shares("", TREE_SHARES);
        tree.set_cpu_shares("load", STARVE_SHARES);
        let procs = tree.procs_files("load");
        let mut children = Vec::new();
        for _ in 0..loops {
            let child = Command::new("/bin/busybox")
                .args(["sh", "-c", "while :; do :; done"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .expect("starting a busy loop");
            pin(child.id(), cpu);
            for f in &procs {
                fs::write(f, child.id().to_string())
                    .unwrap_or_else(|e| panic!("moving a busy loop into {}: {e}", f.display()));
            }
            children.push(child);
        }
        Starve { children }
    }
}

impl Drop for Starve {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Pins a process (all of it: a fresh busybox has one thread) on one CPU.
pub fn pin(pid: u32, cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one bit set, passed with its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let r = libc::sched_setaffinity(
            pid as libc::pid_t,
            std::mem::size_of::<libc::cpu_set_t>(),
            &set,
        );
        assert_eq!(
            r,
            0,
            "sched_setaffinity({pid}, cpu {cpu}): {}",
            std::io::Error::last_os_error()
        );
    }
}
