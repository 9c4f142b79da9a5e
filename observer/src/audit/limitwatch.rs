//! Limits changed by hand: inotify on the cgroup directories an audited container's limit
//! depends on (its cgroups and their ancestors, its pod's cgroup). A write to a memory
//! limit file there re-audits the containers that depend on it at once; nothing is polled.
//!
//! cgroupfs reports writes to its control files as `IN_MODIFY` like any filesystem does
//! (the VFS sends it after every successful write), so a watch on the directory sees
//! `echo … > memory.max` from anyone.

use std::{
    collections::{HashMap, HashSet},
    io,
    os::fd::{AsFd, AsRawFd, RawFd},
    path::PathBuf,
    sync::Arc,
};

use nix::{
    errno::Errno,
    sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor},
};
use tokio::io::unix::AsyncFd;

/// The files whose change can change a container's effective limit.
pub const LIMIT_FILES: [&str; 5] = [
    "memory.max",
    "memory.swap.max",
    "memory.limit_in_bytes",
    "memory.memsw.limit_in_bytes",
    "memory.use_hierarchy",
];

/// The inotify descriptor, in the form tokio can wait on.
pub struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

use crate::enrich::container::ContainerKey as Key;

/// The watches, and which containers each one concerns.
pub struct LimitWatch {
    fd: Arc<AsyncFd<InotifyFd>>,
    dirs: HashMap<PathBuf, (WatchDescriptor, HashSet<Key>)>,
    by_wd: HashMap<WatchDescriptor, PathBuf>,
    of_key: HashMap<Key, Vec<PathBuf>>,
}

impl LimitWatch {
    /// A watcher with no watches; needs a tokio runtime.
    pub fn new() -> io::Result<LimitWatch> {
        let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(io::Error::from)?;
        // SAFETY: the InotifyFd owns the descriptor for as long as the AsyncFd owns it, and
        // always returns that same descriptor.
        let fd = unsafe { AsyncFd::register(InotifyFd(ino)) }.map_err(io::Error::from)?;
        Ok(LimitWatch {
            fd: Arc::new(fd),
            dirs: HashMap::new(),
            by_wd: HashMap::new(),
            of_key: HashMap::new(),
        })
    }

    /// The descriptor to wait on.
    pub fn fd(&self) -> Arc<AsyncFd<InotifyFd>> {
        self.fd.clone()
    }

    /// Number of directories watched.
    pub fn len(&self) -> usize {
        self.dirs.len()
    }

    /// Whether nothing is watched.
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    /// Makes `key` depend on exactly `dirs`.
    pub fn set(&mut self, key: &Key, dirs: Vec<PathBuf>) {
        if self.of_key.get(key) == Some(&dirs) {
            return;
        }
        self.remove(key);
        let mut kept = Vec::new();
        for d in dirs {
            if let Some((_, keys)) = self.dirs.get_mut(&d) {
                keys.insert(key.clone());
                kept.push(d);
                continue;
            }
            // A directory that is already gone needs no watch: its removal re-audits anyway.
            match self
                .fd
                .get_ref()
                .0
                .add_watch(&d, AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_ONLYDIR)
            {
                Ok(wd) => {
                    self.by_wd.insert(wd, d.clone());
                    self.dirs
                        .insert(d.clone(), (wd, HashSet::from([key.clone()])));
                    kept.push(d);
                }
                Err(e) => tracing::debug!(dir = %d.display(), error = %e, "cannot watch cgroup"),
            }
        }
        self.of_key.insert(key.clone(), kept);
    }

    /// Drops `key`'s watches (those no other container needs).
    pub fn remove(&mut self, key: &Key) {
        for d in self.of_key.remove(key).unwrap_or_default() {
            let empty = match self.dirs.get_mut(&d) {
                Some((_, keys)) => {
                    keys.remove(key);
                    keys.is_empty()
                }
                None => false,
            };
            if empty {
                if let Some((wd, _)) = self.dirs.remove(&d) {
                    self.by_wd.remove(&wd);
                    // Fails harmlessly when the directory (and so the watch) is gone.
                    let _ = self.fd.get_ref().0.rm_watch(wd);
                }
            }
        }
    }

    /// Reads every pending event; returns the containers a limit change concerns.
    pub fn drain(&mut self) -> Vec<Key> {
        let mut out: HashSet<Key> = HashSet::new();
        loop {
            let events = match self.fd.get_ref().0.read_events() {
                Ok(e) if !e.is_empty() => e,
                Ok(_) | Err(Errno::EAGAIN) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "reading inotify events");
                    break;
                }
            };
            for ev in events {
                if ev.mask.contains(AddWatchFlags::IN_IGNORED) {
                    // The directory went away: forget the watch.
                    if let Some(d) = self.by_wd.remove(&ev.wd) {
                        if let Some((_, keys)) = self.dirs.remove(&d) {
                            for k in keys {
                                if let Some(v) = self.of_key.get_mut(&k) {
                                    v.retain(|x| *x != d);
                                }
                            }
                        }
                    }
                    continue;
                }
                let is_limit = ev
                    .name
                    .as_ref()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| LIMIT_FILES.contains(&n));
                if !is_limit {
                    continue;
                }
                if let Some((_, keys)) = self.by_wd.get(&ev.wd).and_then(|d| self.dirs.get(d)) {
                    out.extend(keys.iter().cloned());
                }
            }
        }
        let mut v: Vec<Key> = out.into_iter().collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[tokio::test]
    async fn a_limit_write_names_the_containers_that_depend_on_it() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path();
        let pod = base.join("pod");
        fs::create_dir_all(pod.join("c1")).unwrap();
        let mut w = LimitWatch::new().unwrap();
        let k1 = Key::new("ns", "c1");
        let k2 = Key::new("ns", "c2");
        w.set(&k1, vec![pod.join("c1"), pod.clone()]);
        w.set(&k2, vec![pod.clone(), base.join("missing")]);
        assert_eq!(w.len(), 2, "shared directories are watched once");
        fs::write(pod.join("memory.max"), "max\n").unwrap();
        fs::write(pod.join("cgroup.procs"), "1\n").unwrap();
        assert_eq!(w.drain(), vec![k1.clone(), k2.clone()]);
        fs::write(pod.join("c1/memory.max"), "1\n").unwrap();
        assert_eq!(w.drain(), vec![k1.clone()]);
        fs::write(pod.join("c1/cgroup.procs"), "1\n").unwrap();
        assert!(w.drain().is_empty(), "not a limit file");
        w.remove(&k1);
        assert_eq!(w.len(), 1);
        fs::write(pod.join("memory.max"), "5\n").unwrap();
        assert_eq!(w.drain(), vec![k2.clone()]);
        w.remove(&k2);
        assert!(w.is_empty());
    }
}
