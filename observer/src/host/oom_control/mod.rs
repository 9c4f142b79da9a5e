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

mod control;
#[cfg(test)]
mod tests;
mod watcher;

pub use control::{
    hierarchy, OomControl, OomControlError, StallWatch, CHECKS_AFTER_MKDIR, HOW, POLL_MAX,
    RESCAN_EVERY, STALL_REPEAT,
};
pub use watcher::start;
