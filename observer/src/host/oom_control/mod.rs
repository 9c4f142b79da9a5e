//! Tasks stalled in a cgroup v1 memory OOM with the OOM killer disabled (`oom_kill_disable`),
//! seen through the memory controller's own OOM notification instead of a kernel program.
//!
//! With `oom_kill_disable`, a task whose charge fails parks in `mem_cgroup_oom_synchronize()`
//! at the end of its page fault until memory is freed or the limit raised; nothing is killed.
//! The first task to take the memcg's OOM lock signals every eventfd registered, through
//! `cgroup.event_control`, on `memory.oom_control` of that memcg and of its descendants,
//! right before it sleeps. Later tasks of the same OOM signal nothing (the first one holds the
//! lock while it sleeps), so a notified OOM is followed by polling its subtree until
//! `under_oom` reads 0.
//!
//! Which cgroups are armed: only those whose `memory.oom_control` says `oom_kill_disable 1`
//! (the only ones that can stall), found by a walk of the hierarchy at start and every
//! [`RESCAN_EVERY`], and by checking each new cgroup (the daemon's `cgroup_mkdir` records) at
//! its first process attach and at [`CHECKS_AFTER_MKDIR`]: runtimes write the setting just
//! after creating the cgroup. Registering on a memcg already under OOM signals at once, so a
//! cgroup armed late still reports its ongoing stall. The eventfd is also signalled when its
//! cgroup is removed; it is then closed, which unregisters it.
//!
//! Cost: nothing while no armed cgroup is in OOM. A walk reads one small file per cgroup
//! (about 10 µs each: some 10 ms a minute on a node with 1,000 cgroups). While an armed
//! cgroup stalls, its subtree's `tasks` and one `/proc/<tid>/wchan` per thread are read at
//! most every [`POLL_MAX`]. cgroup v2 has no `oom_kill_disable` (a memcg OOM there always
//! kills or fails the charge), so nothing is watched on it.

use std::{
    fs, io,
    path::{Path, PathBuf},
    sync::{mpsc, Arc},
    time::Duration,
};

use nix::sys::eventfd::EventFd;
use observer_common::OomKillRecord;
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::info;

use super::cgroupfs::Hierarchy;
use watcher::Watcher;

mod watcher;

/// A thread seen stalled again on the same memcg within this time is the same stall.
pub const STALL_REPEAT: Duration = Duration::from_secs(1);
/// How often the whole hierarchy is walked for cgroups whose setting changed.
pub const RESCAN_EVERY: Duration = Duration::from_secs(60);
/// When a new cgroup's `memory.oom_control` is read, counted from its mkdir record.
pub const CHECKS_AFTER_MKDIR: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_secs(1),
    Duration::from_secs(10),
];
/// First poll of a notified OOM: the eventfd is signalled just before the task sleeps.
pub(crate) const POLL_FIRST: Duration = Duration::from_millis(1);
/// Slowest poll of a stalled subtree; below [`STALL_REPEAT`], so a thread that stays stalled
/// is seen again before it would count as a new stall.
pub const POLL_MAX: Duration = Duration::from_millis(500);
/// Polls of a notified OOM even when `under_oom` already reads 0.
pub(crate) const MIN_POLLS: u32 = 4;
/// The function a stalled task sleeps in, as `/proc/<tid>/wchan` names it
/// (`mem_cgroup_oom_synchronize` up to at least Linux 6.18).
pub(crate) const OOM_WAIT: &str = "oom_synchronize";
/// The epoll token of the command doorbell (no cgroup has inode 0).
pub(crate) const BELL: u64 = 0;

/// Why the watcher could not start or arm a cgroup.
#[derive(Debug, thiserror::Error)]
pub enum OomControlError {
    /// An eventfd or the epoll set could not be made.
    #[error("{what}: {source}")]
    Sys {
        /// The call.
        what: &'static str,
        /// The kernel's answer.
        #[source]
        source: nix::Error,
    },
    /// A cgroup file could not be read or written.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// `memory.oom_control` did not say what it always says.
    #[error("{}: unexpected content {text:?}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What it said.
        text: String,
    },
    /// The watcher's thread could not be started.
    #[error("cannot start the stall watcher's thread: {0}")]
    Thread(#[source] io::Error),
}

impl OomControlError {
    pub(crate) fn file(path: &Path) -> impl FnOnce(io::Error) -> Self + '_ {
        move |source| OomControlError::File {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Whether the cgroup is gone.
    pub(crate) fn gone(&self) -> bool {
        matches!(self, OomControlError::File { source, .. }
            if matches!(source.raw_os_error(), Some(nix::libc::ENOENT | nix::libc::ENODEV)))
    }
}

/// What `memory.oom_control` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OomControl {
    /// `oom_kill_disable`: the memcg's tasks wait instead of one being killed.
    pub oom_kill_disable: bool,
    /// `under_oom`: the memcg, or an ancestor it is part of, is in OOM now.
    pub under_oom: bool,
}

impl OomControl {
    /// Parses the file's text (`oom_kill_disable 1\nunder_oom 0\noom_kill 0\n`).
    pub fn parse(text: &str) -> Option<OomControl> {
        let field = |name: &str| {
            text.lines().find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == name).then(|| v.trim() != "0")
            })
        };
        Some(OomControl {
            oom_kill_disable: field("oom_kill_disable")?,
            under_oom: field("under_oom")?,
        })
    }

    /// Reads `dir/memory.oom_control`.
    pub fn read(dir: &Path) -> Result<OomControl, OomControlError> {
        let path = dir.join("memory.oom_control");
        let text = fs::read_to_string(&path).map_err(OomControlError::file(&path))?;
        OomControl::parse(&text).ok_or(OomControlError::Malformed { path, text })
    }
}

/// The cgroup v1 memory hierarchy to watch, or why there is none (for `check` and the log).
pub fn hierarchy(memory_v1: Option<&Hierarchy>) -> Result<&Hierarchy, &'static str> {
    memory_v1.ok_or(
        "not needed: the memory controller is on cgroup v2, which has no oom_kill_disable \
         (a memcg OOM there always kills or fails the charge)",
    )
}

/// How `check` describes the watcher.
pub const HOW: &str = "memory.oom_control eventfd (cgroup v1), armed only for cgroups with \
                       oom_kill_disable set; no kernel program";

/// The daemon's handle on the watcher: tells it about new cgroups. Dropping it stops the
/// watcher.
pub struct StallWatch {
    pub(crate) tx: mpsc::Sender<Command>,
    pub(crate) bell: Arc<EventFd>,
    pub(crate) root: u32,
}

pub(crate) enum Command {
    Created(u64, String),
    Attached(u64),
}

impl StallWatch {
    /// A cgroup was created (a `cgroup_mkdir` record): its setting is read soon.
    pub fn cgroup_created(&self, root: u32, id: u64, path: Option<String>) {
        if let (true, Some(p)) = (root == self.root, path) {
            self.send(Command::Created(id, p));
        }
    }

    /// A process moved into a memory cgroup (a `cgroup_attach_task` record): a new cgroup's
    /// setting is read now.
    pub fn cgroup_attached(&self, root: u32, id: u64) {
        if root == self.root {
            self.send(Command::Attached(id));
        }
    }

    fn send(&self, c: Command) {
        // A watcher that stopped has said why in the log.
        if self.tx.send(c).is_ok() {
            let _ = self.bell.write(1);
        }
    }
}

/// Starts the watcher on its own thread: it arms the hierarchy's cgroups with
/// `oom_kill_disable` and sends one `memcg_oom` record per stalled thread and stall.
pub fn start(
    memory: &Hierarchy,
) -> Result<(StallWatch, UnboundedReceiver<OomKillRecord>), OomControlError> {
    let (mut w, handle, records) = Watcher::new(memory.clone(), PathBuf::from("/proc"))?;
    std::thread::Builder::new()
        .name("oom-control".into())
        .spawn(move || w.run())
        .map_err(OomControlError::Thread)?;
    info!(via = HOW, "watching memcg OOM stalls");
    Ok((handle, records))
}

#[cfg(test)]
mod tests;
