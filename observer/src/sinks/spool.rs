//! A bounded on-disk queue of TaskOOM events containerd has not yet acknowledged, so that
//! neither a containerd restart nor an observer restart loses one.
//!
//! The file holds one JSON object per line, oldest first, and always mirrors the queue:
//! appends are synced before the caller moves on; removals rewrite it atomically.

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io::{self, BufRead, BufReader, Write},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// At most this many TaskOOMs wait; beyond it the oldest is dropped (counted and logged).
pub const MAX_ENTRIES: usize = 10_000;

/// One TaskOOM to deliver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// containerd namespace.
    pub namespace: String,
    /// Container id (never empty).
    pub container_id: String,
    /// `CLOCK_BOOTTIME` of the kill, which also marks our TaskOOM (see `publish`).
    pub ktime_ns: u64,
}

/// The queue and its file.
#[derive(Debug)]
pub struct Spool {
    path: Option<PathBuf>,
    queue: VecDeque<Pending>,
    dropped: u64,
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`, loading what a previous run left.
    /// `None` keeps the queue in memory only.
    pub fn open(dir: Option<&Path>) -> io::Result<Spool> {
        let Some(dir) = dir else {
            return Ok(Spool {
                path: None,
                queue: VecDeque::new(),
                dropped: 0,
            });
        };
        let path = dir.join("taskoom-spool.jsonl");
        let mut queue = VecDeque::new();
        let mut bad = 0usize;
        // Nothing is written until something has to wait: a healthy node never touches disk.
        let existed = path.exists();
        if let Ok(f) = File::open(&path) {
            for line in BufReader::new(f).lines() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<Pending>(&line) {
                    Ok(p) if !p.container_id.is_empty() => queue.push_back(p),
                    _ => bad += 1,
                }
            }
        }
        if bad > 0 {
            tracing::warn!(path = %path.display(), lines = bad, "skipped unreadable spool lines");
        }
        let mut s = Spool {
            path: Some(path),
            queue,
            dropped: 0,
        };
        while s.queue.len() > MAX_ENTRIES {
            s.drop_oldest();
        }
        if existed {
            s.rewrite()?;
        }
        Ok(s)
    }

    /// Entries waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The oldest entry.
    pub fn front(&self) -> Option<&Pending> {
        self.queue.front()
    }

    /// Entries dropped because the spool was full, this run.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    fn drop_oldest(&mut self) {
        if let Some(old) = self.queue.pop_front() {
            self.dropped += 1;
            tracing::warn!(
                namespace = %old.namespace,
                container = %old.container_id,
                dropped_total = self.dropped,
                "TaskOOM spool full: dropped the oldest undelivered TaskOOM"
            );
        }
    }

    /// Appends an entry, durably.
    pub fn push(&mut self, p: Pending) -> io::Result<()> {
        if self.queue.len() >= MAX_ENTRIES {
            self.drop_oldest();
            self.queue.push_back(p);
            return self.rewrite();
        }
        if let Some(path) = &self.path {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir)?;
            }
            let mut f = OpenOptions::new().create(true).append(true).open(path)?;
            let mut line = serde_json::to_vec(&p).map_err(io::Error::other)?;
            line.push(b'\n');
            f.write_all(&line)?;
            f.sync_data()?;
        }
        self.queue.push_back(p);
        Ok(())
    }

    /// Removes the oldest entry (it was delivered).
    pub fn pop_front(&mut self) -> io::Result<Option<Pending>> {
        let p = self.queue.pop_front();
        self.rewrite()?;
        Ok(p)
    }

    fn rewrite(&self) -> io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("jsonl.tmp");
        {
            let mut f = File::create(&tmp)?;
            for p in &self.queue {
                let mut line = serde_json::to_vec(p).map_err(io::Error::other)?;
                line.push(b'\n');
                f.write_all(&line)?;
            }
            f.sync_data()?;
        }
        fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: &str, t: u64) -> Pending {
        Pending {
            namespace: "n".into(),
            container_id: id.into(),
            ktime_ns: t,
        }
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("oomx-spool-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn survives_a_restart_in_order() {
        let d = tmpdir("restart");
        {
            let mut s = Spool::open(Some(&d)).unwrap();
            s.push(p("a", 1)).unwrap();
            s.push(p("b", 2)).unwrap();
            s.push(p("c", 3)).unwrap();
            assert_eq!(s.pop_front().unwrap().unwrap().container_id, "a");
        }
        let mut s = Spool::open(Some(&d)).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s.pop_front().unwrap().unwrap(), p("b", 2));
        assert_eq!(s.pop_front().unwrap().unwrap(), p("c", 3));
        assert!(s.is_empty());
        let s = Spool::open(Some(&d)).unwrap();
        assert!(s.is_empty());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn bounded_dropping_oldest_and_counting() {
        let mut s = Spool::open(None).unwrap();
        for i in 0..(MAX_ENTRIES as u64 + 3) {
            s.push(p("x", i)).unwrap();
        }
        assert_eq!(s.len(), MAX_ENTRIES);
        assert_eq!(s.dropped(), 3);
        assert_eq!(s.front().unwrap().ktime_ns, 3);
    }

    #[test]
    fn corrupt_lines_are_skipped_not_fatal() {
        let d = tmpdir("corrupt");
        fs::create_dir_all(&d).unwrap();
        fs::write(
            d.join("taskoom-spool.jsonl"),
            "{\"namespace\":\"n\",\"container_id\":\"a\",\"ktime_ns\":1}\nnot json\n{\"namespace\":\"n\",\"container_id\":\"\",\"ktime_ns\":2}\n",
        )
        .unwrap();
        let s = Spool::open(Some(&d)).unwrap();
        assert_eq!(s.len(), 1, "the empty id and the garbage line are dropped");
        fs::remove_dir_all(&d).unwrap();
    }
}
