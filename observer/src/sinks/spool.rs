//! A bounded on-disk queue of TaskOOM events containerd has not yet acknowledged, so that
//! neither a containerd restart nor an observer restart loses one.
//!
//! The file is an append-only log, one JSON object per line: an entry
//! (`{"id":7,"namespace":…,"container_id":…,"ktime_ns":…}`) when a TaskOOM has to wait, an
//! acknowledgement (`{"acked":7}`: every entry up to id 7 is done) when containerd took it or
//! it was dropped. Both are one small append, so filling and draining the spool costs O(n)
//! I/O; the file is rewritten (atomically, live entries only) when the dead lines outnumber
//! the live ones, which keeps it O(n) amortised, and removed when the queue is empty.
//!
//! The queue lives in memory, on the event thread; the file is written by a thread of its
//! own (`Writer`), which gets every change through a channel. So no write, fsync or
//! rewrite ever holds a kill's line back (a loaded disk can take seconds to sync). A kill's
//! entry is queued to the writer before its line is written, and appended and synced moments
//! later; entries queued together share one sync. Only an observer crash in the instant
//! between the two, or a kernel crash before the sync, could lose one.
//!
//! Any bytes are tolerated on open: a line that is not an entry or an acknowledgement (a torn
//! write, a disk error, an edit) is skipped, counted and logged, and the file is kept aside as
//! `taskoom-spool.jsonl.corrupt` before it is rewritten. A write that fails (a full or
//! read-only disk) never loses the entry: it stays in the queue, is retried to containerd, and
//! the file is rewritten from the queue once the disk takes writes again.

use std::{
    collections::VecDeque,
    fs, io,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    thread,
};

use serde::Deserialize;
use tracing::warn;

mod writer;

pub use writer::Pending;
use writer::{Op, Stored, Writer};

/// At most this many TaskOOMs wait; beyond it the oldest is dropped (counted and logged).
pub const MAX_ENTRIES: usize = 10_000;

/// The spool's file name inside the state directory.
pub const FILE_NAME: &str = "taskoom-spool.jsonl";

/// One line of the log.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Line {
    Ack { acked: u64 },
    Entry(Stored),
}

/// What opening found in the file (for tests and the start-up log).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    /// Entries waiting.
    pub entries: usize,
    /// Lines skipped as unreadable.
    pub corrupt: usize,
}

/// The writer thread's end, owned by the [`Spool`].
#[derive(Debug)]
struct Disk {
    tx: Option<mpsc::Sender<Op>>,
    /// The file does not mirror the queue (a write failed and no rewrite has succeeded).
    dirty: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Disk {
    fn send(&self, op: Op) {
        if let Some(tx) = &self.tx {
            // The writer ends only when this end is dropped.
            let _ = tx.send(op);
        }
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        // What was queued is written before the observer exits.
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The queue; its file is kept by the writer thread.
#[derive(Debug)]
pub struct Spool {
    queue: VecDeque<(u64, Pending)>,
    next_id: u64,
    /// `None` keeps the queue in memory only (no state dir, or one that could not be read:
    /// it is then never overwritten).
    disk: Option<Disk>,
    dropped: u64,
    loaded: Loaded,
    /// [`MAX_ENTRIES`], smaller in tests.
    cap: usize,
}

impl Spool {
    /// Opens the spool in `dir`, loading what a previous run left; `None` keeps the queue in
    /// memory only. Never fails: an unusable directory or file is one warning naming it and
    /// what it costs, and the daemon goes on with the queue in memory.
    pub fn open(dir: Option<&Path>) -> Spool {
        Spool::open_with_cap(dir, MAX_ENTRIES)
    }

    fn open_with_cap(dir: Option<&Path>, cap: usize) -> Spool {
        let mut s = Spool {
            cap,
            queue: VecDeque::new(),
            next_id: 1,
            disk: None,
            dropped: 0,
            loaded: Loaded::default(),
        };
        let Some(dir) = dir else { return s };
        let path = dir.join(FILE_NAME);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            // No file yet, or a state path that is not a directory (warned about above).
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(nix::libc::ENOTDIR) =>
            {
                Vec::new()
            }
            Err(e) => {
                // Overwriting what we cannot read could destroy TaskOOMs a later run could
                // deliver: leave the file alone.
                warn!(path = %path.display(), error = %e, "cannot read the TaskOOM spool: left untouched, TaskOOMs of this run are kept in memory only");
                return s;
            }
        };
        let mut legacy = false;
        let mut first_bad: Vec<usize> = Vec::new();
        let mut file_lines = 0;
        for (n, raw) in bytes.split(|b| *b == b'\n').enumerate() {
            if raw.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            file_lines += 1;
            match serde_json::from_slice::<Line>(raw) {
                Ok(Line::Ack { acked }) => {
                    while s.queue.front().is_some_and(|(id, _)| *id <= acked) {
                        s.queue.pop_front();
                    }
                    s.next_id = s.next_id.max(acked + 1);
                }
                Ok(Line::Entry(e)) if !e.p.container_id.is_empty() => {
                    let id = match e.id {
                        Some(id) if id >= s.next_id => id,
                        _ => {
                            legacy = true;
                            s.next_id
                        }
                    };
                    s.next_id = id + 1;
                    s.queue.push_back((id, e.p));
                }
                _ => {
                    s.loaded.corrupt += 1;
                    if first_bad.len() < 5 {
                        first_bad.push(n + 1);
                    }
                }
            }
        }
        drop(bytes);
        while s.queue.len() > s.cap {
            s.drop_oldest_in_memory();
        }
        s.loaded.entries = s.queue.len();
        if s.loaded.corrupt > 0 {
            let aside = path.with_extension("jsonl.corrupt");
            let kept = fs::copy(&path, &aside).is_ok();
            warn!(
                path = %path.display(),
                skipped_lines = s.loaded.corrupt,
                first_lines = ?first_bad,
                kept_entries = s.queue.len(),
                copy = %if kept { aside.display().to_string() } else { "not kept".into() },
                "skipped unreadable lines in the TaskOOM spool"
            );
        }
        let rewrite = s.loaded.corrupt > 0 || legacy || s.dropped > 0 || file_lines > s.queue.len();
        let dirty = Arc::new(AtomicBool::new(rewrite));
        let writer = Writer::new(
            dir.to_path_buf(),
            path,
            s.queue.clone(),
            file_lines,
            rewrite,
            dirty.clone(),
        );
        let (tx, rx) = mpsc::channel();
        match thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer.run(rx))
        {
            Ok(t) => {
                s.disk = Some(Disk {
                    tx: Some(tx),
                    dirty,
                    thread: Some(t),
                })
            }
            Err(e) => {
                warn!(error = %e, "cannot start the TaskOOM spool's writer: TaskOOMs of this run are kept in memory only")
            }
        }
        s
    }

    /// What [`Spool::open`] found.
    pub fn loaded(&self) -> Loaded {
        self.loaded
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
        self.queue.front().map(|(_, p)| p)
    }

    /// Entries dropped because the spool was full, this run.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Whether the file mirrors the queue as far as the writer got (always true without a
    /// state dir).
    pub fn on_disk(&self) -> bool {
        self.disk
            .as_ref()
            .is_none_or(|d| !d.dirty.load(Ordering::Relaxed))
    }

    fn drop_oldest_in_memory(&mut self) -> Option<u64> {
        let (id, old) = self.queue.pop_front()?;
        self.dropped += 1;
        warn!(
            namespace = %old.namespace,
            container = %old.container_id,
            dropped_total = self.dropped,
            "TaskOOM spool full: dropped the oldest undelivered TaskOOM"
        );
        Some(id)
    }

    /// Queues an entry; the writer appends and syncs it (a disk that refuses it is logged
    /// there, and the entry is written with the rest once the disk takes writes again).
    /// Never waits for the disk.
    pub fn push(&mut self, p: Pending) {
        if self.queue.len() >= self.cap {
            if let Some(id) = self.drop_oldest_in_memory() {
                self.send(Op::Ack(id));
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        self.queue.push_back((id, p.clone()));
        self.send(Op::Append(id, p));
    }

    /// Removes the oldest entry (containerd took it). The acknowledgement is appended by the
    /// writer and synced after [`Spool::sync`]: a crash in between delivers it again, never
    /// loses one.
    pub fn pop_front(&mut self) -> Option<Pending> {
        let (id, p) = self.queue.pop_front()?;
        self.send(Op::Ack(id));
        Some(p)
    }

    /// Makes the acknowledgements appended so far durable (after a delivery run).
    pub fn sync(&mut self) {
        self.send(Op::Sync);
    }

    /// Waits until the writer has written (and synced) everything queued before.
    pub fn settle(&self) {
        let (tx, rx) = mpsc::channel();
        self.send(Op::Barrier(tx));
        let _ = rx.recv();
    }

    fn send(&self, op: Op) {
        if let Some(d) = &self.disk {
            d.send(op);
        }
    }
}

#[cfg(test)]
#[path = "spool_tests.rs"]
mod tests;
