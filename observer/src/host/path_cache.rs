//! Kernel cgroup ids → paths.
//!
//! Ids are learned twice over: a scan of the mounted hierarchies at start-up, and every
//! `cgroup_mkdir` the kernel reports afterwards. A cgroup removed right after its OOM kill
//! (containers are torn down fast) is still known by the time its kill is reported.

use std::{
    collections::{HashMap, VecDeque},
    fs,
    os::unix::fs::{DirEntryExt, MetadataExt},
    time::{Duration, Instant},
};

use super::cgroupfs::Hierarchy;

/// How many removed cgroups' paths are kept after their removal is noticed.
const MAX_ENTRIES: usize = 1 << 18;
/// A miss triggers at most one filesystem rescan per this interval.
const RESCAN_EVERY: Duration = Duration::from_secs(1);

/// Cgroup id → path, per hierarchy.
#[derive(Debug, Default)]
pub struct PathCache {
    paths: HashMap<(u32, u64), String>,
    order: VecDeque<(u32, u64)>,
    last_rescan: Option<Instant>,
}

impl PathCache {
    /// Records a path for an id; the oldest entries go first once the cache is full.
    pub fn learn(&mut self, hierarchy: u32, id: u64, path: String) {
        if self.paths.insert((hierarchy, id), path).is_none() {
            self.order.push_back((hierarchy, id));
            while self.order.len() > MAX_ENTRIES {
                if let Some(old) = self.order.pop_front() {
                    self.paths.remove(&old);
                }
            }
        }
    }

    /// Takes in what another cache learned (the start-up scan, made beside the loop), keeping
    /// what this one learned meanwhile.
    pub fn absorb(&mut self, other: PathCache) {
        let PathCache {
            mut paths, order, ..
        } = other;
        for k in order {
            if let Some(p) = paths.remove(&k) {
                if !self.paths.contains_key(&k) {
                    self.learn(k.0, k.1, p);
                }
            }
        }
    }

    /// The path of a cgroup id, if known.
    pub fn get(&self, hierarchy: u32, id: u64) -> Option<&str> {
        self.paths.get(&(hierarchy, id)).map(String::as_str)
    }

    /// Number of known ids.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Whether no id is known.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Walks a mounted hierarchy and learns every directory's id (its inode number).
    pub fn scan(&mut self, h: &Hierarchy) -> usize {
        let Ok(top) = fs::metadata(&h.mount) else {
            return 0;
        };
        let mut n = 0;
        let mut stack = vec![(h.mount.clone(), top.ino())];
        while let Some((dir, ino)) = stack.pop() {
            if let Some(p) = h.path_of(&dir) {
                self.learn(h.id, ino, p);
                n += 1;
            }
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                // The listing carries each entry's type and inode (kernfs fills both, and a
                // cgroup's inode is its id): no stat per cgroup, which on a node with
                // 100,000 cgroups is most of the start-up.
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push((e.path(), e.ino()));
                }
            }
        }
        n
    }

    /// Looks an id up, rescanning the hierarchy once (rate-limited) on a miss: a cgroup
    /// whose creation record was lost or whose path was too long to carry.
    pub fn resolve(&mut self, h: Option<&Hierarchy>, id: u64) -> Option<String> {
        let h = h?;
        if let Some(p) = self.get(h.id, id) {
            return Some(p.to_string());
        }
        let due = self.last_rescan.is_none_or(|t| t.elapsed() >= RESCAN_EVERY);
        if !due {
            return None;
        }
        self.last_rescan = Some(Instant::now());
        let t = Instant::now();
        let n = self.scan(h);
        tracing::debug!(
            id,
            hierarchy = h.id,
            cgroups = n,
            took_us = t.elapsed().as_micros() as u64,
            "cgroup id not known: rescanned the hierarchy"
        );
        self.get(h.id, id).map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keeps_hierarchies_apart_and_evicts_oldest() {
        let mut c = PathCache::default();
        c.learn(0, 7, "/a".into());
        c.learn(4, 7, "/b".into());
        assert_eq!(c.get(0, 7), Some("/a"));
        assert_eq!(c.get(4, 7), Some("/b"));
        for i in 0..(MAX_ENTRIES as u64 + 1) {
            c.learn(9, 100 + i, format!("/x{i}"));
        }
        assert_eq!(c.get(0, 7), None, "oldest entry evicted");
        assert_eq!(c.len(), MAX_ENTRIES);
    }
}
