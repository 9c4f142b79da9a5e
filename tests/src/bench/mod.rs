//! The benchmarks' harness (`tests/tests/bench.rs`): container OOM kills timed on every
//! path, an OOM storm, the daemon's cost when nothing goes wrong and its footprint, and the
//! rendering of their results pages.

pub mod cost;
pub mod kills;
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
    pub exits: u64,
    pub rounds: usize,
    pub idle_secs: u64,
}

/// `cargo xtask bench`.
pub const FULL: Sizes = Sizes {
    latency_kills: 200,
    loaded_kills: 200,
    storm_cgroups: 100,
    storm_per_cgroup: 10,
    exits: 100_000,
    rounds: 5,
    idle_secs: 60,
};
/// Inside `cargo xtask test`: a broken harness fails CI.
pub const QUICK: Sizes = Sizes {
    latency_kills: 8,
    loaded_kills: 8,
    storm_cgroups: 10,
    storm_per_cgroup: 3,
    exits: 5_000,
    rounds: 1,
    idle_secs: 3,
};
