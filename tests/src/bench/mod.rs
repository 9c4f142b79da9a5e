//! The benchmarks' harness (`tests/tests/bench.rs`): container OOM kills timed on every
//! path, an OOM storm, the daemon's cost when nothing goes wrong and its footprint, and the
//! rendering of their results pages.

pub mod cgroup_tree;
pub mod cost;
pub mod kills;
pub mod paired;
pub mod render;
pub mod startup;
pub mod storm;

/// How much each benchmark does: the full run (`cargo xtask bench`) or the quick one inside
/// `cargo xtask test`.
pub struct Sizes {
    pub latency_kills: usize,
    pub loaded_kills: usize,
    pub storm_cgroups: usize,
    pub storm_per_cgroup: usize,
    /// Operations per cost run, in units of the workloads' base counts, and A/B/B/A blocks.
    pub cost_scale: u64,
    pub cost_blocks: usize,
    /// mkdirs in the memory hierarchy whose hook cost is measured.
    pub mkdirs: usize,
    pub idle_secs: u64,
}

/// `cargo xtask bench`.
pub const FULL: Sizes = Sizes {
    latency_kills: 200,
    loaded_kills: 200,
    storm_cgroups: 100,
    storm_per_cgroup: 10,
    cost_scale: 10,
    cost_blocks: 8,
    mkdirs: 200,
    idle_secs: 60,
};
/// Inside `cargo xtask test`: a broken harness fails CI.
pub const QUICK: Sizes = Sizes {
    latency_kills: 8,
    loaded_kills: 8,
    storm_cgroups: 10,
    storm_per_cgroup: 3,
    cost_scale: 1,
    cost_blocks: 2,
    mkdirs: 50,
    idle_secs: 3,
};
