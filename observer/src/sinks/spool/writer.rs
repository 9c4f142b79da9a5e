//! The spool's file, kept by a thread of its own ([`Writer`]): appends, acknowledgements,
//! syncs and rewrites, so that no disk write ever holds a kill's line back.

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

/// Dead lines tolerated before a rewrite, beyond the live ones.
pub(super) const COMPACT_SLACK: usize = 64;

/// A disk that refused a write is tried again at most this often.
pub(super) const PERSIST_EVERY: Duration = Duration::from_secs(1);

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
pub(super) struct Stored {
    /// Absent in files written before acknowledgements existed; numbered on load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) id: Option<u64>,
    /// The TaskOOM.
    #[serde(flatten)]
    pub(super) p: Pending,
}

/// A change of the queue, for the [`Writer`].
pub(super) enum Op {
    /// An entry was queued.
    Append(u64, Pending),
    /// Every entry up to this id is done (delivered or dropped).
    Ack(u64),
    /// Make the acknowledgements so far durable.
    Sync,
    /// Answer once everything before is written and synced.
    Barrier(mpsc::Sender<()>),
}

/// The spool's file, on a thread of its own: mirrors the queue from the [`Op`]s it gets.
pub(super) struct Writer {
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
    /// A writer for the spool file `path` in the state directory `dir`, whose file holds
    /// `file_lines` lines and mirrors `mirror` unless `dirty` (then it is rewritten first);
    /// `shared_dirty` tells the spool whether the file mirrors the queue.
    pub(super) fn new(
        dir: PathBuf,
        path: PathBuf,
        mirror: VecDeque<(u64, Pending)>,
        file_lines: usize,
        dirty: bool,
        shared_dirty: Arc<AtomicBool>,
    ) -> Writer {
        Writer {
            dir,
            path,
            mirror,
            file_lines,
            dirty,
            failed: false,
            last_persist: None,
            unsynced: false,
            shared_dirty,
        }
    }

    /// Mirrors the queue from `rx` until the spool drops its end.
    pub(super) fn run(mut self, rx: mpsc::Receiver<Op>) {
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
