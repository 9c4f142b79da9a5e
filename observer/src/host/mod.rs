//! The host's own view: cgroupfs mounts, cgroup path algebra, the id → path cache, `/proc`,
//! the userspace OOM killers' marks on cgroups.

pub mod cgroup_path;
pub mod cgroupfs;
pub mod heap;
pub mod oom_control;
pub mod oomd;
pub mod path_cache;
pub mod priority;
pub mod procfs;
pub mod startup;
