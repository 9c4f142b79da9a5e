//! The watcher's thread: its epoll set of armed cgroups, the walk, the polls of a stall and
//! the records it makes.

use std::{
    collections::HashMap,
    fs,
    os::{
        fd::AsRawFd,
        unix::fs::{DirEntryExt, MetadataExt},
    },
    path::{Path, PathBuf},
    sync::{mpsc, Arc},
    time::{Duration, Instant},
};

use nix::sys::{
    epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags},
    eventfd::{EfdFlags, EventFd},
};
use observer_common::{valid, Constraint, Hook, KillDetail, OomKillRecord, RecordKind, COMM_LEN};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tracing::{debug, info, warn};

use super::control::{
    Command, OomControl, OomControlError, StallWatch, BELL, CHECKS_AFTER_MKDIR, HOW, MIN_POLLS,
    OOM_WAIT, POLL_FIRST, POLL_MAX, RESCAN_EVERY, STALL_REPEAT,
};
use crate::host::cgroupfs::Hierarchy;

/// One armed cgroup.
pub(crate) struct Armed {
    dir: PathBuf,
    efd: EventFd,
}

/// A notified OOM being followed.
pub(crate) struct Stall {
    dir: PathBuf,
    next: Instant,
    every: Duration,
    polls: u32,
}

/// Stalled threads already reported, so that one stall is one event (what the kernel
/// program's map did): by thread id, the memcg and when it was last seen.
#[derive(Default)]
pub(crate) struct Seen {
    pub(crate) threads: HashMap<u32, (u64, Instant)>,
}

impl Seen {
    /// Whether `tid`, seen stalled on `memcg` at `now`, starts a new stall (to report).
    pub(crate) fn is_new(&mut self, tid: u32, memcg: u64, now: Instant) -> bool {
        let new = !matches!(self.threads.get(&tid),
            Some((m, last)) if *m == memcg && now.saturating_duration_since(*last) < STALL_REPEAT);
        self.threads.insert(tid, (memcg, now));
        new
    }

    /// Forgets threads not seen for longer than [`STALL_REPEAT`].
    pub(crate) fn expire(&mut self, now: Instant) {
        self.threads
            .retain(|_, (_, last)| now.saturating_duration_since(*last) < STALL_REPEAT);
    }
}

pub(crate) struct Watcher {
    memory: Hierarchy,
    proc: PathBuf,
    epoll: Epoll,
    bell: Arc<EventFd>,
    commands: mpsc::Receiver<Command>,
    out: UnboundedSender<OomKillRecord>,
    /// By cgroup id (the directory's inode number, the epoll token).
    pub(crate) armed: HashMap<u64, Armed>,
    /// New cgroups and when to read their setting.
    pub(crate) pending: HashMap<u64, (PathBuf, Vec<Instant>)>,
    /// By the OOM memcg's id.
    pub(crate) stalls: HashMap<u64, Stall>,
    seen: Seen,
    next_rescan: Instant,
}

/// Why the watcher stops.
pub(crate) struct Stop;

impl Watcher {
    /// The watcher of `memory`, reading threads from `proc`, with its handle and its records.
    pub(crate) fn new(
        memory: Hierarchy,
        proc: PathBuf,
    ) -> Result<(Watcher, StallWatch, UnboundedReceiver<OomKillRecord>), OomControlError> {
        let sys = |what| move |source| OomControlError::Sys { what, source };
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(sys("epoll_create1"))?;
        let bell = Arc::new(
            EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .map_err(sys("eventfd"))?,
        );
        epoll
            .add(&*bell, EpollEvent::new(EpollFlags::EPOLLIN, BELL))
            .map_err(sys("epoll_ctl"))?;
        let (tx, commands) = mpsc::channel();
        let (out, records) = tokio::sync::mpsc::unbounded_channel();
        let handle = StallWatch {
            tx,
            bell: bell.clone(),
            root: memory.id,
        };
        let w = Watcher {
            memory,
            proc,
            epoll,
            bell,
            commands,
            out,
            armed: HashMap::new(),
            pending: HashMap::new(),
            stalls: HashMap::new(),
            seen: Seen::default(),
            next_rescan: Instant::now(),
        };
        Ok((w, handle, records))
    }

    pub(crate) fn run(&mut self) {
        let mut events = [EpollEvent::empty(); 16];
        loop {
            if self.due(Instant::now()).is_err() {
                return;
            }
            let wait = self
                .next_deadline()
                .saturating_duration_since(Instant::now());
            let ms = u16::try_from(wait.as_millis().saturating_add(1)).unwrap_or(u16::MAX);
            let n = match self.epoll.wait(&mut events, ms) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    warn!(error = %e, "epoll_wait failed: memcg OOM stalls are no longer watched");
                    return;
                }
            };
            for ev in events.iter().take(n) {
                let handled = match ev.data() {
                    BELL => self.commands(),
                    id => {
                        self.fired(id);
                        Ok(())
                    }
                };
                if handled.is_err() {
                    return;
                }
            }
        }
    }

    fn next_deadline(&self) -> Instant {
        let pending = self
            .pending
            .values()
            .filter_map(|(_, t)| t.first().copied());
        let stalls = self.stalls.values().map(|s| s.next);
        pending.chain(stalls).fold(self.next_rescan, std::cmp::min)
    }

    pub(crate) fn commands(&mut self) -> Result<(), Stop> {
        let _ = self.bell.read();
        loop {
            match self.commands.try_recv() {
                Ok(Command::Created(id, path)) => {
                    let Some(dir) = self.memory.dir(&path) else {
                        continue;
                    };
                    let now = Instant::now();
                    let checks = CHECKS_AFTER_MKDIR.iter().map(|d| now + *d).collect();
                    self.pending.insert(id, (dir, checks));
                }
                Ok(Command::Attached(id)) => {
                    if let Some((dir, _)) = self.pending.get(&id) {
                        let dir = dir.clone();
                        self.check_new(id, &dir);
                    }
                }
                Err(mpsc::TryRecvError::Empty) => return Ok(()),
                Err(mpsc::TryRecvError::Disconnected) => return Err(Stop),
            }
        }
    }

    /// Runs what is due: new cgroups' checks, polls of stalls, the periodic walk.
    pub(crate) fn due(&mut self, now: Instant) -> Result<(), Stop> {
        let checks: Vec<(u64, PathBuf)> = self
            .pending
            .iter_mut()
            .filter_map(|(id, (dir, t))| {
                let n = t.iter().take_while(|at| **at <= now).count();
                (n > 0).then(|| {
                    t.drain(..n);
                    (*id, dir.clone())
                })
            })
            .collect();
        for (id, dir) in checks {
            self.check_new(id, &dir);
        }
        self.pending.retain(|_, (_, t)| !t.is_empty());
        let polls: Vec<u64> = self
            .stalls
            .iter()
            .filter(|(_, s)| s.next <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in polls {
            self.poll(id)?;
        }
        self.seen.expire(now);
        if self.next_rescan <= now {
            let t = Instant::now();
            let n = self.rescan();
            debug!(
                cgroups = n,
                armed = self.armed.len(),
                took_us = t.elapsed().as_micros() as u64,
                "walked the memory hierarchy for oom_kill_disable"
            );
            self.next_rescan = Instant::now() + RESCAN_EVERY;
        }
        Ok(())
    }

    /// A new cgroup's setting: armed once it says `oom_kill_disable 1`.
    fn check_new(&mut self, id: u64, dir: &Path) {
        match OomControl::read(dir) {
            Ok(oc) if oc.oom_kill_disable => {
                self.pending.remove(&id);
                self.arm(id, dir);
            }
            Ok(_) => {}
            Err(e) if e.gone() => {
                self.pending.remove(&id);
            }
            Err(e) => debug!(error = %e, "cannot read a new cgroup's OOM setting"),
        }
    }

    /// Walks the hierarchy: arms what has `oom_kill_disable`, disarms what no longer has it.
    /// Returns the number of cgroups read.
    pub(crate) fn rescan(&mut self) -> usize {
        let mut n = 0;
        let mut stack: Vec<PathBuf> = subdirs(&self.memory.mount)
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        let mut found = Vec::new();
        while let Some(dir) = stack.pop() {
            let Ok(ino) = fs::metadata(&dir).map(|m| m.ino()) else {
                continue;
            };
            n += 1;
            if let Ok(oc) = OomControl::read(&dir) {
                found.push((ino, dir.clone(), oc.oom_kill_disable));
            }
            stack.extend(subdirs(&dir).into_iter().map(|(d, _)| d));
        }
        for (id, dir, disable) in found {
            match (disable, self.armed.contains_key(&id)) {
                (true, false) => self.arm(id, &dir),
                (false, true) => self.disarm(id),
                _ => {}
            }
        }
        n
    }

    fn arm(&mut self, id: u64, dir: &Path) {
        if self.armed.contains_key(&id) {
            return;
        }
        match arm(dir).and_then(|efd| {
            self.epoll
                .add(&efd, EpollEvent::new(EpollFlags::EPOLLIN, id))
                .map_err(|source| OomControlError::Sys {
                    what: "epoll_ctl",
                    source,
                })
                .map(|()| efd)
        }) {
            Ok(efd) => {
                debug!(cgroup = %dir.display(), "oom_kill_disable: armed its OOM notification");
                self.armed.insert(
                    id,
                    Armed {
                        dir: dir.to_path_buf(),
                        efd,
                    },
                );
            }
            Err(e) if e.gone() => {}
            Err(e) => warn!(error = %e, "cannot watch a cgroup with oom_kill_disable for stalls"),
        }
    }

    /// Closing the eventfd unregisters it in the kernel.
    fn disarm(&mut self, id: u64) {
        if let Some(a) = self.armed.remove(&id) {
            let _ = self.epoll.delete(&a.efd);
            debug!(cgroup = %a.dir.display(), "disarmed its OOM notification");
        }
    }

    /// An armed cgroup's eventfd was signalled: an OOM in it or above it, or its removal.
    pub(crate) fn fired(&mut self, id: u64) {
        let Some(a) = self.armed.get(&id) else {
            return;
        };
        let _ = a.efd.read();
        let dir = a.dir.clone();
        match OomControl::read(&dir) {
            Ok(oc) if oc.oom_kill_disable => {
                let (oom_id, oom_dir) = self.oom_domain(id, &dir);
                let now = Instant::now();
                let s = self.stalls.entry(oom_id).or_insert(Stall {
                    dir: oom_dir,
                    next: now,
                    every: POLL_FIRST,
                    polls: 0,
                });
                s.next = now;
                s.every = POLL_FIRST;
                s.polls = 0;
            }
            _ => self.disarm(id),
        }
    }

    /// The memcg whose OOM a notification of `id` is: the topmost armed cgroup on its path
    /// that is under OOM (an OOM marks its whole subtree), else `id` itself.
    fn oom_domain(&self, id: u64, dir: &Path) -> (u64, PathBuf) {
        let mut best = (id, dir.to_path_buf());
        for up in dir.ancestors().skip(1) {
            if !up.starts_with(&self.memory.mount) || up == self.memory.mount {
                break;
            }
            let Ok(up_id) = fs::metadata(up).map(|m| m.ino()) else {
                break;
            };
            if self.armed.contains_key(&up_id) && OomControl::read(up).is_ok_and(|oc| oc.under_oom)
            {
                best = (up_id, up.to_path_buf());
            }
        }
        best
    }

    /// Looks for the stalled threads of a followed OOM and reports the new ones.
    pub(crate) fn poll(&mut self, id: u64) -> Result<(), Stop> {
        let Some(s) = self.stalls.get_mut(&id) else {
            return Ok(());
        };
        let dir = s.dir.clone();
        let under_oom = match OomControl::read(&dir) {
            Ok(oc) => oc.under_oom,
            Err(_) => {
                self.stalls.remove(&id);
                return Ok(());
            }
        };
        s.polls += 1;
        if !under_oom && s.polls > MIN_POLLS {
            self.stalls.remove(&id);
            return Ok(());
        }
        s.next = Instant::now() + s.every;
        s.every = (s.every * 2).min(POLL_MAX);
        let now = Instant::now();
        for tid in stalled_threads(&dir, &self.proc) {
            if !self.seen.is_new(tid, id, now) {
                continue;
            }
            let Some(rec) = stall_record(&self.proc, id, tid) else {
                continue;
            };
            debug!(tid, cgroup = %dir.display(), "a thread stalls in a memcg OOM");
            if self.out.send(rec).is_err() {
                return Err(Stop);
            }
        }
        Ok(())
    }
}

/// Registers an eventfd on `dir/memory.oom_control` through `dir/cgroup.event_control`.
pub(crate) fn arm(dir: &Path) -> Result<EventFd, OomControlError> {
    let efd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .map_err(|source| OomControlError::Sys {
            what: "eventfd",
            source,
        })?;
    let ctl_path = dir.join("memory.oom_control");
    // The kernel takes what it needs from this descriptor while registering.
    let ctl = fs::File::open(&ctl_path).map_err(OomControlError::file(&ctl_path))?;
    let ec = dir.join("cgroup.event_control");
    fs::write(&ec, format!("{} {}", efd.as_raw_fd(), ctl.as_raw_fd()))
        .map_err(OomControlError::file(&ec))?;
    Ok(efd)
}

/// The subdirectories of `dir`, with their inode numbers.
fn subdirs(dir: &Path) -> Vec<(PathBuf, u64)> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| (e.path(), e.ino()))
        .collect()
}

/// Threads of `dir`'s subtree sleeping in the memcg OOM wait.
fn stalled_threads(dir: &Path, proc: &Path) -> Vec<u32> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let tasks = fs::read_to_string(d.join("tasks")).unwrap_or_default();
        for tid in tasks.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
            let wchan = fs::read_to_string(proc.join(tid.to_string()).join("wchan"));
            if wchan.is_ok_and(|w| w.contains(OOM_WAIT)) {
                out.push(tid);
            }
        }
        stack.extend(subdirs(&d).into_iter().map(|(p, _)| p));
    }
    out
}

/// The `memcg_oom` record a kernel program used to write for a stalled thread: the OOM memcg,
/// the constraint and the thread as the trigger. `None` once the thread is gone.
pub(crate) fn stall_record(proc: &Path, memcg_id: u64, tid: u32) -> Option<OomKillRecord> {
    let task = proc.join(tid.to_string());
    let status = fs::read_to_string(task.join("status")).ok()?;
    let tgid = status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())?;
    let comm_text = fs::read_to_string(task.join("comm")).unwrap_or_default();
    let mut comm = [0u8; COMM_LEN];
    for (d, s) in comm
        .iter_mut()
        .zip(comm_text.trim_end_matches('\n').bytes().take(COMM_LEN - 1))
    {
        *d = s;
    }
    Some(OomKillRecord {
        kind: RecordKind::MemcgOom as u32,
        hook: Hook::OomControl as u32,
        ktime_ns: boot_ns(),
        valid: valid::OOM_MEMCG,
        victim_pid: 0,
        victim_tgid: 0,
        victim_uid: 0,
        victim_memcg_id: 0,
        victim_dfl_cgroup_id: 0,
        oom_memcg_id: memcg_id,
        constraint: Constraint::Memcg as u32,
        trigger_pid: tid,
        trigger_tgid: tgid,
        exit_code: 0,
        victim_comm: [0; COMM_LEN],
        trigger_comm: comm,
        detail: KillDetail::default(),
    })
}

/// `CLOCK_BOOTTIME` in ns, the clock of the kernel's records.
fn boot_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
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
