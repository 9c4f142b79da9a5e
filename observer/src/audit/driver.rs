//! The continuous audit inside the daemon: what to audit and when (containerd's index
//! changes, processes moving between memory cgroups, limits written by hand), the
//! observation handed to the [`worker`](super::worker), and its result turned into findings.

use std::{collections::HashSet, sync::Arc};

use tokio::{
    io::unix::AsyncFd,
    sync::mpsc::{self, UnboundedReceiver, UnboundedSender},
};
use tracing::warn;

use super::{
    assess::assess,
    finding::FindingEvent,
    limitwatch::{InotifyFd, LimitWatch},
    memory_fs::MemoryFs,
    observe::limit_dirs,
    state::Auditor,
    worker::{self, Observation},
};
use crate::{
    enrich::{
        container::{ContainerInfo, ContainerKey},
        upkeep::{Containerd, IndexChange},
    },
    host::procfs::ancestry,
};

/// The audit's state in the daemon, and its queue.
pub struct AuditDriver {
    containerd: Arc<Containerd>,
    memory_fs: MemoryFs,
    auditor: Auditor,
    limits: Option<LimitWatch>,
    jobs: UnboundedSender<ContainerInfo>,
    /// Audits asked for by kernel records, run after the batch they came in.
    pending: Vec<ContainerKey>,
}

impl AuditDriver {
    /// Starts the observation worker; its results come back through the returned channel,
    /// to [`AuditDriver::apply`].
    pub fn start(
        containerd: Arc<Containerd>,
        memory_fs: MemoryFs,
    ) -> (AuditDriver, UnboundedReceiver<Observation>) {
        let (job_tx, job_rx) = mpsc::unbounded_channel();
        let (obs_tx, obs_rx) = mpsc::unbounded_channel();
        tokio::spawn(worker::run(
            containerd.socket().to_path_buf(),
            memory_fs.clone(),
            job_rx,
            obs_tx,
        ));
        let limits = match LimitWatch::new() {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(error = %e, "no inotify: a memory limit changed by hand is seen only at the next containerd event");
                None
            }
        };
        let driver = AuditDriver {
            containerd,
            memory_fs,
            auditor: Auditor::default(),
            limits,
            jobs: job_tx,
            pending: Vec::new(),
        };
        (driver, obs_rx)
    }

    /// A process moved into a memory cgroup (`dst`, when its path is known): queue a
    /// re-audit of the containers it concerns (the one whose process it was, or one of its
    /// ancestors was, at the last audit; those whose processes belong where it went). No
    /// periodic scan is needed for moves.
    pub fn on_migration(&mut self, pid: u32, dst: Option<&str>) {
        if pid == 0 {
            return;
        }
        for key in self.auditor.affected_by_move(&ancestry(pid), dst) {
            if !self.pending.contains(&key) {
                self.pending.push(key);
            }
        }
    }

    /// Open findings: `limit_unenforced`, `sandbox_oversized`, `cgroup_misplaced`.
    pub fn open_findings(&self) -> (usize, usize, usize) {
        self.auditor.open()
    }

    /// Runs the audits kernel records asked for.
    pub fn run_pending(&mut self) {
        for key in std::mem::take(&mut self.pending) {
            self.audit_one(&key);
        }
    }

    /// containerd reported a change.
    pub fn on_index_change(&mut self, change: IndexChange) {
        match change {
            IndexChange::Relisted => self.audit_all(),
            IndexChange::Changed(key) => self.audit_one(&key),
            IndexChange::TaskGone(key) => self.forget(&key),
            // Its `TaskGone` follows.
            IndexChange::Exited(_) => {}
        }
    }

    /// The descriptor that becomes readable when a watched memory limit is written.
    pub fn limit_watch_fd(&self) -> Option<Arc<AsyncFd<InotifyFd>>> {
        self.limits.as_ref().map(|w| w.fd())
    }

    /// A watched memory limit was written: re-audit the containers that depend on it.
    pub fn on_limit_change(&mut self) {
        let keys = self.limits.as_mut().map(|w| w.drain()).unwrap_or_default();
        for key in keys {
            self.audit_one(&key);
        }
    }

    /// Turns one container's observation into findings (or their clearing).
    pub fn apply(&mut self, (c, result): Observation) -> Vec<FindingEvent> {
        let observed = match result {
            Ok(Some(o)) => o,
            Ok(None) => {
                self.forget(&c.key());
                return Vec::new();
            }
            Err(e) => {
                // A cgroup or process that vanished mid-audit, or containerd unreachable:
                // no verdict, no finding.
                tracing::debug!(container = %c.id, error = %e, "audit inconclusive");
                return Vec::new();
            }
        };
        if let Some(w) = self.limits.as_mut() {
            w.set(&c.key(), limit_dirs(&c, &observed, &self.memory_fs));
        }
        self.auditor.update(&c, &assess(&c, &observed))
    }

    fn forget(&mut self, key: &ContainerKey) {
        self.auditor.forget(key);
        if let Some(w) = self.limits.as_mut() {
            w.remove(key);
        }
    }

    fn audit_one(&mut self, key: &ContainerKey) {
        let target = self.containerd.container(key);
        if let Some(c) = target {
            self.observe(c);
        }
    }

    fn audit_all(&mut self) {
        let all = self.containerd.containers();
        // Containers that are gone since the last audit end without an event.
        let live: HashSet<ContainerKey> = all.iter().map(ContainerInfo::key).collect();
        for key in self.auditor.keys() {
            if !live.contains(&key) {
                self.forget(&key);
            }
        }
        for c in all {
            self.observe(c);
        }
    }

    fn observe(&mut self, c: ContainerInfo) {
        if c.deleted_at.is_some() || c.task_pid.is_none() {
            self.forget(&c.key());
            return;
        }
        // The worker lives as long as the driver; a send after it stopped is moot.
        let _ = self.jobs.send(c);
    }
}
