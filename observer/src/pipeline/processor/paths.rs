//! The processor's cgroup paths: id → path in each mounted hierarchy, learnt from the
//! start-up scan (on a thread of its own), from mkdir records, and on a miss.

use observer_common::{CgroupMkdirRecord, OomKillRecord};
use tracing::{info, warn};

use crate::{
    event::{self, Event, Resolve},
    host::{cgroupfs::CgroupMounts, path_cache::PathCache},
    kernel::record::mkdir_path,
};

/// The cgroup paths the events name.
pub struct CgroupPaths {
    pub(super) cache: PathCache,
    /// The start-up scan of the hierarchies, made on a thread of its own (see
    /// [`CgroupPaths::start`]); taken in before the first record that needs a path.
    scan: Option<std::thread::JoinHandle<PathCache>>,
    cgroups: CgroupMounts,
}

impl CgroupPaths {
    /// Starts the scan of the mounted hierarchies on a thread of its own: on a node with
    /// 100,000 cgroups the walk takes seconds, and the programs record every kill meanwhile
    /// (the ring buffer holds them), so the daemon is ready without waiting for it. Only a
    /// record that needs a cgroup's path waits for the scan.
    pub fn start(cgroups: CgroupMounts) -> Self {
        let hierarchies: Vec<_> = cgroups.hierarchies().cloned().collect();
        let scan_all = move || {
            let mut cache = PathCache::default();
            for h in &hierarchies {
                let t = std::time::Instant::now();
                let n = cache.scan(h);
                info!(hierarchy = h.id, mount = %h.mount.display(), cgroups = n,
                    took_ms = t.elapsed().as_millis() as u64, "scanned cgroup hierarchy");
            }
            cache
        };
        let (cache, scan) = match std::thread::Builder::new()
            .name("cgroup-scan".into())
            .spawn({
                let scan_all = scan_all.clone();
                move || {
                    crate::host::priority::ordinary("cgroup-scan");
                    scan_all()
                }
            }) {
            Ok(t) => (PathCache::default(), Some(t)),
            Err(e) => {
                warn!(error = %e, "cannot start the cgroup scan's thread: scanning before the loop");
                (scan_all(), None)
            }
        };
        CgroupPaths {
            cache,
            scan,
            cgroups,
        }
    }

    /// Takes in the start-up scan, waiting for it if it is still running (once, at most the
    /// walk's time).
    pub fn scanned(&mut self) {
        if let Some(t) = self.scan.take() {
            match t.join() {
                Ok(scanned) => {
                    // The scan is the big one: what was learned meanwhile joins it.
                    let live = std::mem::replace(&mut self.cache, scanned);
                    self.cache.absorb(live);
                    // The walk's buffers were freed on its thread's heap.
                    crate::host::heap::release_freed_memory();
                }
                Err(_) => warn!("the cgroup scan's thread failed: paths are learned as cgroups appear and on a miss"),
            }
        }
    }

    /// The event of a kernel record, its cgroups named.
    pub fn build(&mut self, r: &OomKillRecord, seq: u64) -> Event {
        let memory_on_dfl = self.cgroups.memory_on_dfl();
        event::build(r, seq, memory_on_dfl, self)
    }

    /// A cgroup was created: its path, from the record, else from the filesystem while it
    /// exists.
    pub fn learn(&mut self, m: &CgroupMkdirRecord) {
        match mkdir_path(m) {
            Some(p) => self.cache.learn(m.root, m.id, p),
            None => {
                // Too long to carry: read it from the filesystem while it exists.
                self.scanned();
                if let Some(h) = self.cgroups.hierarchies().find(|h| h.id == m.root) {
                    self.cache.resolve(Some(h), m.id);
                }
            }
        }
    }
}

impl CgroupPaths {
    /// The node's cgroup mounts.
    pub fn mounts(&self) -> &CgroupMounts {
        &self.cgroups
    }

    /// Path of a cgroup in the memory controller's hierarchy, the start-up scan taken in
    /// first.
    pub fn memory_path_scanned(&mut self, id: u64) -> Option<String> {
        self.scanned();
        self.memory_path(id)
    }
}

/// Paths in the memory controller's hierarchy, for [`event::build()`].
impl Resolve for CgroupPaths {
    fn memory_path(&mut self, id: u64) -> Option<String> {
        self.cache.resolve(self.cgroups.memory(), id)
    }
}
