//! The watcher's vocabulary: its timings, its error, a cgroup's `memory.oom_control`, and
//! the handle the daemon holds.

use std::{
    fs, io,
    path::{Path, PathBuf},
    sync::{mpsc, Arc},
    time::Duration,
};

use nix::sys::eventfd::EventFd;

use crate::host::cgroupfs::Hierarchy;

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
