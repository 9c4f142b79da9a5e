//! The read schedule: what of a cgroup is read on a tick. A cgroup near a limit or growing
//! is read every tick; a quiet one seldom, its level carried in between; a pod with its
//! containers. Keeps the model's cost low on a node of 10,000 containers (issue 24).

use std::{
    hash::BuildHasher,
    os::fd::{AsFd, OwnedFd},
    sync::Arc,
    time::Duration,
};

use tracing::debug;

use super::{model, read, read::Stat};
use crate::audit::memory_fs::MemoryFs;
use model::Series;

/// A cgroup that is near a limit or growing is read in full at least this often.
pub const SWEEP: Duration = Duration::from_secs(10);
/// A quiet cgroup (far from its limits, its usage not grown by [`grew_much`] since its last
/// full read) gets its small read only this often, not every tick (issue 24's cost at
/// 10,000 containers). A leak is seen this much later at most: its warning came 2–4 s
/// later with a read every 5 s than with every tick's, in `cargo xtask bench forecast`.
pub const QUIET_EVERY: Duration = Duration::from_secs(2);
/// On a node of more than 1,000 targets the quiet read spreads out, up to
/// [`QUIET_EVERY_MAX`] (2,500 and more), so the reads stay near 500 a second.
pub(super) const QUIET_READS_PER_S: f64 = 500.0;
/// The longest wait for a quiet cgroup's small read (2,000 reads a second on a node of
/// 10,000 containers: the model cost 1.7–2.1 % of a core in all there, `cargo xtask bench`).
pub const QUIET_EVERY_MAX: Duration = Duration::from_secs(5);
/// A quiet cgroup's level is carried into its series this often between its reads, so one
/// that wakes has the history the model's warm-up asks for.
pub const CARRY_EVERY: Duration = Duration::from_secs(5);
/// A quiet cgroup is read in full this often (the slow sweep). Its headroom cannot be off
/// by more than [`grew_much`] in between: more growth wakes it.
pub const QUIET_SWEEP: Duration = Duration::from_secs(300);
/// An awake target's limits are read again this often (they change only when a pod is
/// resized); a quiet one's every [`QUIET_SWEEP`], and on the tick after it wakes.
pub const LIMITS_EVERY: Duration = Duration::from_secs(60);
/// A cgroup using at least this fraction of its nearest limit gets a full read every tick.
const NEAR: f64 = 0.5;
/// What the model holds of one cgroup between ticks.
#[derive(Debug, Default)]
pub(super) struct CgroupState {
    pub(super) series: Series,
    pub(super) usage: u64,
    pub(super) stat: Option<Stat>,
    pub(super) last_full: Option<f64>,
    pub(super) hits_rose: bool,
    /// A quiet cgroup's next small read (seconds on the model's clock).
    pub(super) next_read: f64,
    /// Whether it was quiet at its last read.
    pub(super) quiet: bool,
    /// When it was last read (its small read).
    pub(super) read_at: f64,
    /// It stays awake (read every tick, in full when its usage changed) until then: a leak
    /// slower than [`grew_much`] a tick keeps its series dense.
    pub(super) awake_until: f64,
}

/// Growth since the last full read that wakes a quiet cgroup: 1 % of its nearest limit, at
/// least 1 MiB (a page cache's wobble is not a leak), at most 64 MiB (the node's limit).
pub(super) fn grew_much(nearest: u64) -> u64 {
    (nearest / 100).clamp(1 << 20, 64 << 20)
}

/// A stable spread of `key` over `0..n` ticks, so a thousand cgroups made at once are not
/// all read again on the same tick.
pub(super) fn spread(key: &str, n: f64) -> f64 {
    // A fixed seed: a cgroup keeps its place in the period from tick to tick.
    let h = foldhash::fast::FixedState::with_seed(0).hash_one(key);
    (h % (n.max(1.0) as u64)) as f64
}

/// What one tick read.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Reads {
    /// Cgroups read at all.
    pub(super) reads: usize,
    /// Cgroups read in full.
    pub(super) full_reads: usize,
}

/// When a cgroup's small read is due.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Due {
    /// Every tick while awake, every this many seconds while quiet: a container's every
    /// [`QUIET_EVERY`] or so, a limit's above quiet containers every [`QUIET_SWEEP`].
    Every(f64),
    /// Now: a limit's above an awake container.
    Now,
}

/// One cgroup the model reads: its state, and what a tick needs to know of it without a
/// lookup by path.
#[derive(Debug)]
pub(super) struct Slot {
    /// Its hierarchy path (its target's or its limit's copy). The file paths are made
    /// when read by path; a target's own cgroup is read through [`Slot::dir_fd`].
    pub(super) path: Arc<str>,
    /// Its directory, held open while it is a target's own cgroup and the open-file limit
    /// allows ([`super::plan`]): the usage read is then an `openat` of one name.
    pub(super) dir_fd: Option<OwnedFd>,
    pub(super) state: CgroupState,
    /// The nearest limit it counts against, over every chain it is in.
    pub(super) nearest: u64,
    /// Some target's own cgroup: read on its container's schedule, not only as a limit's.
    pub(super) own: bool,
}

impl Slot {
    /// A cgroup not read yet.
    pub(super) fn new(path: Arc<str>) -> Slot {
        Slot {
            path,
            dir_fd: None,
            state: CgroupState::default(),
            nearest: u64::MAX,
            own: false,
        }
    }
}

impl Slot {
    /// When a tick must look at it next, unless a container below wakes it: its next read
    /// or the next carry of its level into its series, whichever comes first.
    pub(super) fn next_visit(&self) -> f64 {
        let st = &self.state;
        let read = st.next_read - 0.5;
        match (st.stat, st.series.last_time()) {
            (Some(_), Some(t)) => read.min(t + CARRY_EVERY.as_secs_f64() - 0.5),
            _ => read,
        }
    }
}

/// One tick's reads of one cgroup: the small read when due, the full one when it is near
/// its limit, grows or is stale. Returns whether it is awake (read again next tick).
pub(super) fn read_cgroup(
    mem: &MemoryFs,
    slot: &mut Slot,
    now: f64,
    due: Due,
    report: &mut Reads,
) -> bool {
    let v2 = mem.is_v2();
    let (path, nearest, st) = (&*slot.path, slot.nearest, &mut slot.state);
    if due != Due::Now && now < st.next_read - 0.5 {
        // Quiet, and not due: its floor holds at the last full read's level, in its series
        // too (every CARRY_EVERY, no read), so a pod woken by a growing container has
        // the history the model's warm-up asks for.
        if let (Some(s), Some(t)) = (st.stat, st.series.last_time()) {
            if now - t >= CARRY_EVERY.as_secs_f64() - 0.5 {
                st.series.push(now, s.unreclaimable);
            }
        }
        return false;
    }
    let read = match &slot.dir_fd {
        Some(fd) => read::usage_in(fd.as_fd(), v2, path),
        None => match mem.dir(path) {
            Some(mut file) => {
                file.push(read::usage_name(v2));
                read::usage_at(&file)
            }
            // A path outside the mount.
            None => return false,
        },
    };
    let usage = match read {
        Ok(u) => u,
        Err(e) => {
            debug!(cgroup = path, error = %e, "forecast: not read");
            return false;
        }
    };
    report.reads += 1;
    st.read_at = now;
    // A fall is read in full as a rise is: a series that took only the rises would miss a
    // sawtooth's troughs and read its teeth as growth. The x86_64 guest's sawtooth was
    // warned about its pod's limit so (the pod, under 50 % of its limit, was read in full
    // only when it rose; the container, near its own, every tick).
    let moved = usage != st.usage;
    st.usage = usage;
    let near = usage as f64 >= NEAR * nearest as f64;
    // A cgroup seen for the first time is read in full (stale), but wakes only if near:
    // a daemon starting on a node of 10,000 containers reads each once, not for 10 s.
    let grew = st
        .stat
        .is_some_and(|s| usage > s.usage.saturating_add(grew_much(nearest)));
    if near || grew {
        st.awake_until = now + model::ENVELOPE_S;
    }
    let quiet = now >= st.awake_until && due != Due::Now;
    let since_full = st.last_full.map_or(f64::MAX, |t| now - t);
    let sweep = if quiet { QUIET_SWEEP } else { SWEEP };
    let stale = since_full >= sweep.as_secs_f64() - 0.5;
    st.next_read = if quiet {
        // Cgroups that quieten together (started together) are spread over the
        // period.
        // A cgroup read because it is due now is never quiet: only `Every` gets here.
        let q = match due {
            Due::Every(s) => s,
            Due::Now => 0.0,
        };
        now + q - if st.quiet { 0.0 } else { spread(path, q) }
    } else {
        now
    };
    st.quiet = quiet;
    if quiet && !stale {
        // Its usage has not grown past the last full read's: neither has what it
        // cannot give back, and the floor carries on at that level.
        if let Some(s) = st.stat {
            st.series.push(now, s.unreclaimable);
        }
        return false;
    }
    if !(stale || moved || near || grew) {
        return true;
    }
    let Some(dir) = mem.dir(path) else {
        return false;
    };
    match read::full(&dir, v2) {
        Ok(stat) => {
            report.full_reads += 1;
            st.hits_rose = st
                .stat
                .is_some_and(|p| stat.pressure.limit_hits > p.pressure.limit_hits);
            st.series.push(now, stat.unreclaimable);
            st.stat = Some(stat);
            // The first full reads of cgroups seen together are spread over the sweep.
            st.last_full = Some(match st.last_full {
                Some(_) => now,
                None => now - spread(path, QUIET_SWEEP.as_secs_f64()),
            });
        }
        Err(e) => debug!(cgroup = path, error = %e, "forecast: stat not read"),
    }
    !quiet
}
