//! The cgroups the targets need, each once, in a vector, and each target's limits as
//! indexes into it. A tick walks vectors; paths are hashed only when the targets or a
//! target's limits change. (Hashing and comparing the paths of every target in five maps
//! each second was a third of the model's CPU at 1,000 containers, issue 24.)

use std::sync::Arc;

use foldhash::HashMap;
use tracing::debug;

use super::{
    limits::{self, Levels, Limit},
    read,
    schedule::{read_cgroup, spread, Due, Reads, Slot, LIMITS_EVERY, QUIET_SWEEP},
    target::Target,
};
use crate::audit::memory_fs::MemoryFs;

/// One target, and where its cgroups are in [`Plan::slots`].
#[derive(Debug)]
pub(super) struct Planned {
    pub(super) target: Target,
    /// Its own cgroup's slot.
    pub(super) own: usize,
    /// Its limits, nearest first, and when they were read; none until read.
    pub(super) chain: Option<(f64, Vec<Limit>)>,
    /// The slot of each limit of `chain`, in its order.
    pub(super) chain_slots: Vec<usize>,
    /// Its last warning (the repeat bound).
    pub(super) warned_at: Option<f64>,
    /// When it was last put on a tick's list to assess (once per tick).
    pub(super) touched_at: f64,
}

/// The targets and their cgroups.
#[derive(Debug, Default)]
pub(super) struct Plan {
    /// Every cgroup a target reads: its own, and those that hold its limits.
    pub(super) slots: Vec<Slot>,
    /// The targets.
    pub(super) targets: Vec<Planned>,
    /// The limits read in earlier passes (v1 `use_hierarchy` never changes under a child).
    levels: Levels,
    /// How many directories may be held open ([`dir_fd_budget`]).
    dir_fds_max: usize,
    /// The targets that read each slot (own cgroup or limit), slot `i`'s at
    /// `readers[reader_start[i]..reader_start[i + 1]]`.
    readers: Vec<u32>,
    reader_start: Vec<u32>,
    /// What a tick looks at for every target and slot, apart from the rest (a quiet node's
    /// tick touches these few arrays, not 30,000 structs):
    /// each target's own slot ([`NONE`] until its limits are read);
    own_of: Vec<u32>,
    /// when its limits were read;
    chain_at: Vec<f64>,
    /// each slot's next visit ([`Slot::next_visit`]), whether it is some target's own,
    /// and when a container below last woke it (it is read at once then);
    due_at: Vec<f64>,
    is_own: Vec<bool>,
    woken_at: Vec<f64>,
    /// The targets with a warning out, assessed every tick.
    warned: Vec<u32>,
}

/// No slot.
const NONE: u32 = u32::MAX;
/// The `due_at` of an awake slot: every tick.
const AWAKE: f64 = f64::MIN;

/// Half the open-file limit (the rest is the daemon's): a node of 10,000 containers holds
/// 10,000 directories, a few MiB of the kernel's memory (an open file and the pinned
/// directory entry each), against a third of the model's CPU spent walking their paths.
/// Past the budget a cgroup is read by its path.
pub(super) fn dir_fd_budget() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let soft = limit.current.unwrap_or(1 << 21);
    usize::try_from(soft / 2).unwrap_or(usize::MAX)
}

/// Raises the soft open-file limit to the hard one, as Go's runtime does at start: the
/// soft default (1,024 under many service managers) is a compatibility setting for
/// `select(2)`, which this daemon does not use. A failure leaves the limit as it was.
pub(super) fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        return;
    }
    limit.current = limit.maximum;
    if let Err(e) = setrlimit(Resource::Nofile, limit) {
        debug!(error = %e, "forecast: the open-file limit was not raised");
    }
}

impl Plan {
    /// No targets yet; at most `dir_fds_max` directories held open.
    pub(super) fn new(dir_fds_max: usize) -> Plan {
        Plan {
            dir_fds_max,
            ..Plan::default()
        }
    }

    /// New targets. The state of a cgroup still read, and a target's limits and last
    /// warning, carry over.
    pub(super) fn set_targets(&mut self, mem: &MemoryFs, targets: Vec<Target>) {
        let mut old: HashMap<String, Planned> = self
            .targets
            .drain(..)
            .map(|p| (p.target.key().to_string(), p))
            .collect();
        self.targets = targets
            .into_iter()
            .map(|target| {
                let (chain, warned_at) = match old.remove(target.key()) {
                    Some(p) if p.target.cgroup == target.cgroup => (p.chain, p.warned_at),
                    Some(p) => (None, p.warned_at),
                    None => (None, None),
                };
                Planned {
                    target,
                    own: 0,
                    chain,
                    chain_slots: Vec::new(),
                    warned_at,
                    touched_at: f64::MIN,
                }
            })
            .collect();
        self.relink(mem);
    }

    /// Makes the slots again from the targets and their chains, keeping each cgroup's
    /// state, and sets each one's nearest limit.
    fn relink(&mut self, mem: &MemoryFs) {
        // The old slots stay where they are, found by an index of their paths, and are
        // moved once into the new vector: a node of 10,000 containers has 20,000 of them,
        // and a map of the slots themselves was a peak of several MiB at every relink.
        let mut old: Vec<Option<Slot>> = std::mem::take(&mut self.slots)
            .into_iter()
            .map(Some)
            .collect();
        let by_path: HashMap<Arc<str>, usize> = old
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((s.as_ref()?.path.clone(), i)))
            .collect();
        let mut index: HashMap<Arc<str>, usize> = HashMap::default();
        index.reserve(old.len());
        let slots = &mut self.slots;
        slots.reserve(old.len());
        let mut slot_of = |path: &Arc<str>| -> usize {
            if let Some(&i) = index.get(path) {
                return i;
            }
            let mut s = by_path
                .get(path)
                .and_then(|&i| old[i].take())
                .unwrap_or_else(|| Slot::new(path.clone()));
            s.nearest = u64::MAX;
            s.own = false;
            index.insert(s.path.clone(), slots.len());
            slots.push(s);
            slots.len() - 1
        };
        for p in &mut self.targets {
            p.own = slot_of(&p.target.cgroup);
            p.chain_slots.clear();
            if let Some((_, chain)) = &p.chain {
                for l in chain {
                    // Every limit but the node's, which is not in a chain, has its cgroup.
                    let path = l.cgroup.as_ref().unwrap_or(&p.target.cgroup);
                    p.chain_slots.push(slot_of(path));
                }
            }
        }
        // A first relink grew the vector by doubling: up to 45 % of it spare, at 10,000
        // containers some 3 MiB.
        self.slots.shrink_to_fit();
        // Each cgroup read once, however many targets share it (a pod's), against the
        // nearest limit it counts against.
        for p in &self.targets {
            self.slots[p.own].own = true;
            let Some((_, chain)) = &p.chain else { continue };
            let nearest = chain.iter().map(|l| l.bytes).min().unwrap_or(u64::MAX);
            let own = &mut self.slots[p.own].nearest;
            *own = (*own).min(nearest);
            for (l, &s) in chain.iter().zip(&p.chain_slots) {
                let n = &mut self.slots[s].nearest;
                *n = (*n).min(l.bytes);
            }
        }
        self.link_readers();
        self.own_of = self
            .targets
            .iter()
            .map(|p| match p.chain {
                Some(_) => p.own as u32,
                None => NONE,
            })
            .collect();
        self.chain_at = self
            .targets
            .iter()
            .map(|p| p.chain.as_ref().map_or(f64::MIN, |(at, _)| *at))
            .collect();
        self.is_own = self.slots.iter().map(|s| s.own).collect();
        // Carried over: a relink (a pod made or gone) neither wakes every cgroup nor makes
        // every limit due.
        self.due_at = self
            .slots
            .iter()
            .map(|s| {
                if s.state.read_at < s.state.awake_until {
                    AWAKE
                } else {
                    s.next_visit()
                }
            })
            .collect();
        self.woken_at = vec![f64::MIN; self.slots.len()];
        self.warned = (0..self.targets.len() as u32)
            .filter(|&t| self.targets[t as usize].warned_at.is_some())
            .collect();
        // A target's own cgroup, read every few seconds, is read through its directory held
        // open; a limit's, read on the slow sweep, by its path.
        let mut held = 0;
        for s in &mut self.slots {
            if !s.own {
                s.dir_fd = None;
            } else if s.dir_fd.is_some() {
                held += 1;
            }
        }
        for s in self
            .slots
            .iter_mut()
            .filter(|s| s.own && s.dir_fd.is_none())
        {
            if held >= self.dir_fds_max {
                break;
            }
            let Some(dir) = mem.dir(&s.path) else {
                continue;
            };
            match read::open_dir(&dir) {
                Ok(fd) => {
                    s.dir_fd = Some(fd);
                    held += 1;
                }
                Err(e) => debug!(cgroup = %s.path, error = %e, "forecast: directory not held"),
            }
        }
        let live: HashMap<&str, ()> = self.slots.iter().map(|s| (&*s.path, ())).collect();
        self.levels.retain(|p| live.contains_key(p));
    }

    /// Who reads each slot: a tick marks the targets of every cgroup it read, without a
    /// look at every target's chain.
    fn link_readers(&mut self) {
        let n = self.slots.len();
        let mut count = vec![0u32; n];
        fn each(p: &Planned) -> impl Iterator<Item = usize> + '_ {
            let own = p.own;
            std::iter::once(own).chain(p.chain_slots.iter().copied().filter(move |&s| s != own))
        }
        for p in &self.targets {
            for s in each(p) {
                count[s] += 1;
            }
        }
        self.reader_start = Vec::with_capacity(n + 1);
        let mut at = 0u32;
        for c in &count {
            self.reader_start.push(at);
            at += c;
        }
        self.reader_start.push(at);
        self.readers = vec![0; at as usize];
        let mut next: Vec<u32> = self.reader_start[..n].to_vec();
        for (t, p) in self.targets.iter().enumerate() {
            for s in each(p) {
                self.readers[next[s] as usize] = t as u32;
                next[s] += 1;
            }
        }
    }

    /// One tick's reads: the containers' own cgroups that are due (one that is awake
    /// wakes the limits above it), then the limits' cgroups that are due or woken (a pod's
    /// usage is its containers'). Returns the targets to assess: those with a cgroup read,
    /// and those with a warning out.
    pub(super) fn read_due(
        &mut self,
        mem: &MemoryFs,
        now: f64,
        quiet_every: f64,
        reads: &mut Reads,
    ) -> Vec<u32> {
        let mut read = Vec::new();
        for (t, &s) in self.own_of.iter().enumerate() {
            if s == NONE {
                continue;
            }
            let s = s as usize;
            let Some(due) = self.due(s, now, quiet_every) else {
                continue;
            };
            let slot = &mut self.slots[s];
            let awake = read_cgroup(mem, slot, now, due, reads);
            self.due_at[s] = if awake { AWAKE } else { slot.next_visit() };
            if slot.state.read_at >= now {
                read.push(s);
            }
            if awake {
                for &c in &self.targets[t].chain_slots {
                    self.woken_at[c] = now;
                }
            }
        }
        for s in 0..self.slots.len() {
            if self.is_own[s] {
                continue;
            }
            let Some(due) = self.due(s, now, QUIET_SWEEP.as_secs_f64()) else {
                continue;
            };
            let slot = &mut self.slots[s];
            read_cgroup(mem, slot, now, due, reads);
            self.due_at[s] = slot.next_visit();
            if slot.state.read_at >= now {
                read.push(s);
            }
        }
        let mut assess = Vec::new();
        let targets = &mut self.targets;
        let mut mark = |t: u32| {
            let p = &mut targets[t as usize];
            if p.touched_at < now {
                p.touched_at = now;
                assess.push(t);
            }
        };
        for s in read {
            let (a, b) = (
                self.reader_start[s] as usize,
                self.reader_start[s + 1] as usize,
            );
            self.readers[a..b].iter().for_each(|&t| mark(t));
        }
        self.warned.iter().for_each(|&t| mark(t));
        assess
    }

    /// How slot `s` is read this tick: at once when a container below woke it, on its own
    /// schedule (every `every` seconds while quiet) once its next visit has come; else not.
    fn due(&self, s: usize, now: f64, every: f64) -> Option<Due> {
        if self.woken_at[s] >= now {
            Some(Due::Now)
        } else if now >= self.due_at[s] {
            Some(Due::Every(every))
        } else {
            None
        }
    }

    /// Target `t` was warned about at `now`.
    pub(super) fn warned(&mut self, t: usize, now: f64) {
        if self.targets[t].warned_at.replace(now).is_none() {
            self.warned.push(t as u32);
        }
    }

    /// Reads again the limits of the targets whose limits are old (each cgroup once in a
    /// pass): [`LIMITS_EVERY`] for an awake container, [`QUIET_SWEEP`] for a quiet one (its
    /// limits matter once it grows, and then they are read on the tick after it wakes). The
    /// slots are made again only when a chain changed.
    pub(super) fn refresh_chains(&mut self, mem: &MemoryFs, now: f64) {
        self.levels.next_pass();
        let mut changed = false;
        for (i, p) in self.targets.iter_mut().enumerate() {
            let age = now - self.chain_at[i];
            let awake = self.own_of[i] != NONE && self.due_at[self.own_of[i] as usize] == AWAKE;
            if age < LIMITS_EVERY.as_secs_f64() || (!awake && age < QUIET_SWEEP.as_secs_f64()) {
                continue;
            }
            let t = &p.target;
            match limits::chain(mem, &t.cgroup, t.pod_cgroup.as_ref(), &mut self.levels) {
                Ok(c) => {
                    // The chains of containers that started together are spread over
                    // the period, not all read again on the same tick.
                    let at = match &p.chain {
                        Some(_) => now,
                        None => now - spread(&t.cgroup, QUIET_SWEEP.as_secs_f64()),
                    };
                    self.chain_at[i] = at;
                    changed |= p.chain.as_ref().is_none_or(|(_, old)| *old != c);
                    p.chain = Some((at, c));
                }
                Err(e) => {
                    debug!(cgroup = %t.cgroup, error = %e, "forecast: limits not read");
                    self.chain_at[i] = f64::MIN;
                    changed |= p.chain.take().is_some();
                }
            }
        }
        if changed {
            self.relink(mem);
        }
    }
}
