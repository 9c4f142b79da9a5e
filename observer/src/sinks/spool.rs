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
//! own ([`Writer`]), which gets every change through a channel. So no write, fsync or
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
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    thread,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

/// At most this many TaskOOMs wait; beyond it the oldest is dropped (counted and logged).
pub const MAX_ENTRIES: usize = 10_000;

/// The spool's file name inside the state directory.
pub const FILE_NAME: &str = "taskoom-spool.jsonl";

/// Dead lines tolerated before a rewrite, beyond the live ones.
const COMPACT_SLACK: usize = 64;

/// A disk that refused a write is tried again at most this often.
const PERSIST_EVERY: Duration = Duration::from_secs(1);

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

/// An entry as stored: the TaskOOM and its position in the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    /// Absent in files written before acknowledgements existed; numbered on load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    #[serde(flatten)]
    p: Pending,
}

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

/// A change of the queue, for the [`Writer`].
enum Op {
    /// An entry was queued.
    Append(u64, Pending),
    /// Every entry up to this id is done (delivered or dropped).
    Ack(u64),
    /// Make the acknowledgements so far durable.
    Sync,
    /// Answer once everything before is written and synced.
    Barrier(mpsc::Sender<()>),
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

/// The queue; its file is kept by the [`Writer`] thread.
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
        let writer = Writer {
            dir: dir.to_path_buf(),
            path,
            mirror: s.queue.clone(),
            file_lines,
            dirty: rewrite,
            failed: false,
            last_persist: None,
            unsynced: false,
            shared_dirty: dirty.clone(),
        };
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

/// The spool's file, on a thread of its own: mirrors the queue from the [`Op`]s it gets.
struct Writer {
    /// The state directory, checked first.
    dir: PathBuf,
    path: PathBuf,
    /// The queue as far as the ops got (for rewrites).
    mirror: VecDeque<(u64, Pending)>,
    /// Lines in the file (entries and acknowledgements), to decide when to rewrite.
    file_lines: usize,
    /// The file does not mirror the queue (a write failed): no appends until a rewrite
    /// succeeds.
    dirty: bool,
    /// A write failed and no rewrite has succeeded since (for the recovery log line).
    failed: bool,
    last_persist: Option<Instant>,
    /// Lines appended since the last sync.
    unsynced: bool,
    shared_dirty: Arc<AtomicBool>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Op>) {
        // Here, not at start-up: the check is a synced write, which a loaded disk can hold
        // for a second.
        if let Err(e) = check_dir(&self.dir) {
            warn!(
                state_dir = %self.dir.display(),
                error = %e,
                "state directory unusable: TaskOOMs that wait for containerd are kept in memory only, and lost if the observer restarts before containerd is back"
            );
        }
        if self.dirty {
            self.persist_now();
        }
        loop {
            // A disk that refused a write is tried again on its own, without a new op.
            let first = if self.dirty {
                match rx.recv_timeout(PERSIST_EVERY) {
                    Ok(op) => Some(op),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match rx.recv() {
                    Ok(op) => Some(op),
                    Err(_) => break,
                }
            };
            // Everything queued meanwhile goes in one go, with one sync for its entries.
            let mut appended = false;
            for op in first.into_iter().chain(rx.try_iter()) {
                match op {
                    Op::Append(id, p) => appended |= self.append_entry(id, p),
                    Op::Ack(id) => self.ack(id),
                    Op::Sync => self.sync(),
                    Op::Barrier(done) => {
                        if appended {
                            self.sync();
                            appended = false;
                        }
                        let _ = done.send(());
                    }
                }
            }
            if appended {
                self.sync();
            }
            self.persist();
            self.shared_dirty.store(self.dirty, Ordering::Relaxed);
        }
        // The observer stops: what it queued last is made durable.
        self.persist_now_if_dirty();
        self.sync();
    }

    /// Appends one entry; whether it went into the file (to be synced).
    fn append_entry(&mut self, id: u64, p: Pending) -> bool {
        let line = encode(&Stored {
            id: Some(id),
            p: p.clone(),
        });
        self.mirror.push_back((id, p));
        if self.dirty {
            // Written with the rest by the next rewrite.
            self.persist();
            if self.dirty {
                self.warn_kept_in_memory(&self.mirror[self.mirror.len() - 1].1, None);
            }
            return false;
        }
        match append(&self.path, &line) {
            Ok(()) => {
                self.file_lines += 1;
                self.unsynced = true;
                true
            }
            Err(e) => {
                self.fail();
                self.warn_kept_in_memory(&self.mirror[self.mirror.len() - 1].1, Some(&e));
                false
            }
        }
    }

    fn warn_kept_in_memory(&self, p: &Pending, e: Option<&io::Error>) {
        let error = match e {
            Some(e) => e.to_string(),
            None => "the spool's disk refused an earlier write".into(),
        };
        warn!(error, namespace = %p.namespace, container = %p.container_id, waiting = self.mirror.len(),
            "cannot write the TaskOOM spool: this TaskOOM waits in memory (lost if the observer restarts first), is retried to containerd, and written to disk when the disk takes it");
    }

    fn fail(&mut self) {
        self.dirty = true;
        self.failed = true;
        self.shared_dirty.store(true, Ordering::Relaxed);
    }

    fn dead_lines(&self) -> usize {
        self.file_lines.saturating_sub(self.mirror.len())
    }

    fn ack(&mut self, id: u64) {
        while self.mirror.front().is_some_and(|(i, _)| *i <= id) {
            self.mirror.pop_front();
        }
        if self.dirty {
            return;
        }
        if self.mirror.is_empty() {
            // Nothing waits: no file, as on a node where containerd always answered.
            match fs::remove_file(&self.path) {
                Ok(()) => {
                    self.file_lines = 0;
                    self.unsynced = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.file_lines = 0;
                    return;
                }
                Err(_) => {}
            }
        }
        let mut line = format!("{{\"acked\":{id}}}").into_bytes();
        line.push(b'\n');
        match append(&self.path, &line) {
            Ok(()) => {
                self.file_lines += 1;
                self.unsynced = true;
            }
            Err(_) => self.fail(),
        }
        if !self.dirty && self.dead_lines() > self.mirror.len().max(COMPACT_SLACK) {
            self.dirty = true;
            self.persist_now();
        }
    }

    fn sync(&mut self) {
        if !self.unsynced || self.dirty {
            return;
        }
        self.unsynced = false;
        if let Err(e) = File::open(&self.path).and_then(|f| f.sync_data()) {
            if e.kind() != io::ErrorKind::NotFound {
                self.fail();
            }
        }
    }

    /// Rewrites the file from the queue if an earlier write failed; at most every
    /// [`PERSIST_EVERY`].
    fn persist(&mut self) {
        if !self.dirty
            || self
                .last_persist
                .is_some_and(|t| t.elapsed() < PERSIST_EVERY)
        {
            return;
        }
        self.persist_now();
    }

    fn persist_now_if_dirty(&mut self) {
        if self.dirty {
            self.persist_now();
        }
    }

    fn persist_now(&mut self) {
        self.last_persist = Some(Instant::now());
        let r = if self.mirror.is_empty() {
            match fs::remove_file(&self.path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        } else {
            rewrite(&self.path, &self.mirror)
        };
        match r {
            Ok(()) => {
                if self.failed {
                    info!(path = %self.path.display(), entries = self.mirror.len(), "TaskOOM spool written to disk again");
                }
                self.failed = false;
                self.dirty = false;
                self.unsynced = false;
                self.file_lines = self.mirror.len();
            }
            Err(e) => {
                self.failed = true;
                tracing::debug!(path = %self.path.display(), error = %e, entries = self.mirror.len(), "TaskOOM spool still not written");
            }
        }
        self.shared_dirty.store(self.dirty, Ordering::Relaxed);
    }
}

fn encode(s: &Stored) -> Vec<u8> {
    // Serialising these plain fields cannot fail; an empty line would be skipped on load.
    let mut line = serde_json::to_vec(s).unwrap_or_default();
    line.push(b'\n');
    line
}

/// Opens `path` to append, creating its directory the first time something has to wait.
fn open_append(path: &Path) -> io::Result<File> {
    let open = || OpenOptions::new().create(true).append(true).open(path);
    match open() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir)?;
            }
            open()
        }
        r => r,
    }
}

fn append(path: &Path, line: &[u8]) -> io::Result<()> {
    open_append(path)?.write_all(line)
}

fn rewrite(path: &Path, queue: &VecDeque<(u64, Pending)>) -> io::Result<()> {
    let tmp = path.with_extension("jsonl.tmp");
    let r = (|| {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let mut f = io::BufWriter::new(File::create(&tmp)?);
        for (id, p) in queue {
            f.write_all(&encode(&Stored {
                id: Some(*id),
                p: p.clone(),
            }))?;
        }
        f.into_inner().map_err(|e| e.into_error())?.sync_data()?;
        fs::rename(&tmp, path)
    })();
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r
}

/// The state directory can take the spool: an existing one takes a synced write (a probe
/// file, removed at once); a missing one is not created (nothing is written while
/// containerd answers), but its nearest existing ancestor must be a writable directory on a
/// writable filesystem with room.
fn check_dir(dir: &Path) -> io::Result<()> {
    match fs::metadata(dir) {
        Ok(m) if !m.is_dir() => return Err(io::Error::other("not a directory")),
        Ok(_) => {
            let probe = dir.join(".oom-observer-probe");
            let r = append(&probe, b"x").and_then(|()| File::open(&probe)?.sync_data());
            let _ = fs::remove_file(&probe);
            return r;
        }
        Err(e)
            if e.kind() != io::ErrorKind::NotFound
                && e.raw_os_error() != Some(nix::libc::ENOTDIR) =>
        {
            return Err(e)
        }
        Err(_) => {}
    }
    let mut up = dir.parent();
    while let Some(a) = up {
        if let Ok(m) = fs::metadata(a) {
            if !m.is_dir() {
                return Err(io::Error::other(format!(
                    "{} is not a directory",
                    a.display()
                )));
            }
            let st = nix::sys::statvfs::statvfs(a).map_err(io::Error::from)?;
            if st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY) {
                return Err(io::Error::from_raw_os_error(nix::libc::EROFS));
            }
            if st.blocks_available() == 0 {
                return Err(io::Error::from_raw_os_error(nix::libc::ENOSPC));
            }
            return nix::unistd::access(a, nix::unistd::AccessFlags::W_OK).map_err(io::Error::from);
        }
        up = a.parent();
    }
    Ok(())
}

#[cfg(test)]
#[path = "spool_tests.rs"]
mod tests;
