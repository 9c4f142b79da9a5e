//! The cgroup → container index, keyed by the cgroup paths each container's processes live in.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use super::container::{ContainerInfo, ContainerKey};

/// How long a deleted container stays known: its kill may be reported after containerd has
/// already torn it down.
pub const KEEP_DELETED: Duration = Duration::from_secs(300);

/// All known containers, and which cgroup paths lead to them.
#[derive(Debug, Default)]
pub struct ContainerIndex {
    containers: HashMap<ContainerKey, ContainerInfo>,
    by_cgroup: HashMap<String, Vec<ContainerKey>>,
    /// Bumped by every change, so a reader that copies the index (the forecast, each
    /// second) copies it only when it changed.
    generation: u64,
}

impl ContainerIndex {
    /// Adds or replaces a container (keeping what the old entry knew about its task).
    pub fn upsert(&mut self, mut c: ContainerInfo) {
        self.generation += 1;
        let key = c.key();
        if let Some(old) = self.containers.get(&key) {
            if c.task_cgroup.is_none() {
                c.task_cgroup = old.task_cgroup.clone();
                c.task_pid = old.task_pid;
            }
        }
        self.link(key, c);
    }

    /// Puts `c` under `key`, reachable by each of its cgroups (replacing what was there).
    fn link(&mut self, key: ContainerKey, c: ContainerInfo) {
        self.unlink(&key);
        for cg in c.cgroups() {
            self.by_cgroup
                .entry(cg.to_string())
                .or_default()
                .push(key.clone());
        }
        self.containers.insert(key, c);
    }

    fn unlink(&mut self, key: &ContainerKey) {
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

    /// Replaces what the index knows with a full listing: each container's task as listed
    /// (a task that is no longer running loses its pid, which may belong to another
    /// process by now; its cgroup stays known for a late kill), and containers missing
    /// from the listing (deleted while containerd was out of reach) marked deleted, so they
    /// are forgotten after [`KEEP_DELETED`].
    pub fn resync(&mut self, all: Vec<ContainerInfo>, now: Instant) {
        self.generation += 1;
        let listed: std::collections::HashSet<ContainerKey> =
            all.iter().map(ContainerInfo::key).collect();
        for mut c in all {
            let key = c.key();
            if let Some(old) = self.containers.get(&key) {
                if c.task_cgroup.is_none() {
                    c.task_cgroup = old.task_cgroup.clone();
                }
            }
            self.link(key, c);
        }
        for (k, c) in self.containers.iter_mut() {
            if !listed.contains(k) && c.deleted_at.is_none() {
                c.deleted_at = Some(now);
                c.task_pid = None;
            }
        }
        self.expire(now);
    }

    /// Records the cgroup a container's task process lives in.
    pub fn set_task(&mut self, namespace: &str, id: &str, pid: u32, cgroup: Option<String>) {
        let key = ContainerKey::new(namespace, id);
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
        self.generation += 1;
        if let Some(c) = self.containers.get_mut(&ContainerKey::new(namespace, id)) {
            c.task_pid = None;
        }
    }

    /// Marks a container deleted; it stays resolvable for [`KEEP_DELETED`].
    pub fn mark_deleted(&mut self, namespace: &str, id: &str, now: Instant) {
        self.generation += 1;
        if let Some(c) = self.containers.get_mut(&ContainerKey::new(namespace, id)) {
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
        if !old.is_empty() {
            self.generation += 1;
        }
        for k in old {
            self.unlink(&k);
            self.containers.remove(&k);
        }
    }

    /// Changes so far: equal numbers, an unchanged index.
    pub fn generation(&self) -> u64 {
        self.generation
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
        self.containers.get(&ContainerKey::new(namespace, id))
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
    fn a_resync_forgets_the_gap_s_deletions_and_stale_task_pids() {
        let mut idx = ContainerIndex::default();
        let c = |id: &str, pid: Option<u32>| ContainerInfo {
            namespace: "n".into(),
            id: id.into(),
            task_pid: pid,
            task_cgroup: Some(format!("/cg/{id}")),
            ..Default::default()
        };
        idx.upsert(c("stays", Some(10)));
        idx.upsert(c("gone", Some(11)));
        let t0 = Instant::now();
        let mut stopped = c("stays", None);
        stopped.task_cgroup = None;
        idx.resync(vec![stopped], t0);
        let stays = idx.get("n", "stays").unwrap();
        assert_eq!(stays.task_pid, None, "the listing says no running task");
        assert_eq!(
            stays.task_cgroup.as_deref(),
            Some("/cg/stays"),
            "its cgroup stays known"
        );
        assert!(idx.get("n", "gone").unwrap().deleted_at.is_some());
        idx.expire(t0 + KEEP_DELETED + Duration::from_secs(1));
        assert!(
            idx.get("n", "gone").is_none(),
            "forgotten after KEEP_DELETED"
        );
        assert!(idx.get("n", "stays").is_some());
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
