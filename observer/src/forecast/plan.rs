//! The cgroups the targets need, each once, in a vector, and each target's limits as
//! indexes into it. A tick walks vectors; paths are hashed only when the targets or a
//! target's limits change. (Hashing and comparing the paths of every target in five maps
//! each second was a third of the model's CPU at 1,000 containers, issue 24.)

use foldhash::HashMap;
use tracing::debug;

use super::{
    limits::{self, Levels, Limit},
    schedule::{spread, Slot, LIMITS_EVERY},
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
}

impl Plan {
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
                }
            })
            .collect();
        self.relink(mem);
    }

    /// Makes the slots again from the targets and their chains, keeping each cgroup's
    /// state, and sets each one's nearest limit.
    fn relink(&mut self, mem: &MemoryFs) {
        let mut old: HashMap<String, Slot> =
            self.slots.drain(..).map(|s| (s.path.clone(), s)).collect();
        let mut index: HashMap<String, usize> = HashMap::default();
        let slots = &mut self.slots;
        let mut slot_of = |path: &str| -> usize {
            if let Some(&i) = index.get(path) {
                return i;
            }
            let mut s = old.remove(path).unwrap_or_else(|| Slot::new(mem, path));
            s.nearest = u64::MAX;
            s.own = false;
            slots.push(s);
            index.insert(path.to_string(), slots.len() - 1);
            slots.len() - 1
        };
        for p in &mut self.targets {
            p.own = slot_of(&p.target.cgroup);
            p.chain_slots.clear();
            if let Some((_, chain)) = &p.chain {
                for l in chain {
                    // Every limit but the node's, which is not in a chain, has its cgroup.
                    let path = l.cgroup.as_deref().unwrap_or(&p.target.cgroup);
                    p.chain_slots.push(slot_of(path));
                }
            }
        }
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
        let live: HashMap<&str, ()> = self.slots.iter().map(|s| (s.path.as_str(), ())).collect();
        self.levels.retain(|p| live.contains_key(p));
    }

    /// Reads again the limits of the targets whose limits are [`LIMITS_EVERY`] old (each
    /// cgroup once in a pass); the slots are made again only when a chain changed.
    pub(super) fn refresh_chains(&mut self, mem: &MemoryFs, now: f64) {
        self.levels.next_pass();
        let mut changed = false;
        for p in &mut self.targets {
            if p.chain
                .as_ref()
                .is_some_and(|(at, _)| now - at < LIMITS_EVERY.as_secs_f64())
            {
                continue;
            }
            let t = &p.target;
            match limits::chain(mem, &t.cgroup, t.pod_cgroup.as_deref(), &mut self.levels) {
                Ok(c) => {
                    // The chains of containers that started together are spread over
                    // the period, not all read again on the same tick.
                    let at = match &p.chain {
                        Some(_) => now,
                        None => now - spread(&t.cgroup, LIMITS_EVERY.as_secs_f64()),
                    };
                    changed |= p.chain.as_ref().is_none_or(|(_, old)| *old != c);
                    p.chain = Some((at, c));
                }
                Err(e) => {
                    debug!(cgroup = %t.cgroup, error = %e, "forecast: limits not read");
                    changed |= p.chain.take().is_some();
                }
            }
        }
        if changed {
            self.relink(mem);
        }
    }
}
