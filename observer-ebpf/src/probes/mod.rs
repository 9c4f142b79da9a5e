//! The programs, one module per hook.

mod cgroup;
mod exit;
mod mark_victim;
mod oom_kill;
mod signal;
