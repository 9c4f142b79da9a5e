//! The daemon's handles on the kernel programs' maps: the two ring buffers it reads (kills,
//! decisions and exits; cgroup mkdir and attach records apart, so a flood of those cannot
//! displace a kill), the lost-record counters, and the victim map the query socket falls
//! back to.

use aya::{
    maps::{HashMap, Map, MapData, PerCpuArray, RingBuf},
    Ebpf,
};
use observer_common::{map, RecordKind, VictimState, LOST_SLOTS};
use serde::Serialize;
use tokio::io::{unix::AsyncFd, Interest};
use tracing::warn;

use super::error::KernelError;

/// The maps the daemon reads while running.
pub struct KernelMaps {
    /// The ring buffer of kill, decision and exit records, registered with tokio.
    pub ring: AsyncFd<RingBuf<MapData>>,
    /// The ring buffer of cgroup mkdir and attach records, registered with tokio.
    pub cgroup_ring: AsyncFd<RingBuf<MapData>>,
    lost: Option<PerCpuArray<MapData, u64>>,
    lost_seen: LostCounts,
    /// The kernel's victim map.
    pub victims: Victims,
}

/// The kernel's own map of victims, for kills the daemon has not seen.
pub struct Victims(Option<HashMap<MapData, u32, VictimState>>);

impl KernelMaps {
    /// Takes the maps out of the loaded object.
    pub fn take(ebpf: &mut Ebpf) -> Result<KernelMaps, KernelError> {
        KernelMaps::from_maps(|name| ebpf.take_map(name))
    }

    /// The maps, each from `take` by name (the loaded object's, or pinned ones).
    pub fn from_maps(
        mut take: impl FnMut(&'static str) -> Option<Map>,
    ) -> Result<KernelMaps, KernelError> {
        let ring = take_ring(take(map::EVENTS), map::EVENTS)?;
        let cgroup_ring = take_ring(take(map::CGROUP_EVENTS), map::CGROUP_EVENTS)?;
        let lost = take(map::LOST).and_then(|m| PerCpuArray::try_from(m).ok());
        let victims = take(map::VICTIMS).and_then(|m| HashMap::try_from(m).ok());
        Ok(KernelMaps {
            ring,
            cgroup_ring,
            lost,
            lost_seen: LostCounts::default(),
            victims: Victims(victims),
        })
    }

    /// Takes `seen` as the losses already reported (by an earlier run on the same pinned
    /// counters), so that only later ones are reported.
    pub fn set_lost_seen(&mut self, seen: LostCounts) {
        self.lost_seen = seen;
    }

    /// The losses reported so far.
    pub fn lost_seen(&self) -> LostCounts {
        self.lost_seen
    }

    /// Reads the kernel's lost-record counters and logs any increase: no drop is silent.
    /// Returns what was lost since the last call and since the start, when anything was.
    pub fn check_lost(&mut self) -> Option<(LostCounts, LostCounts)> {
        let map = self.lost.as_ref()?;
        let mut total = LostCounts::default();
        for slot in 1..LOST_SLOTS {
            let Some(kind) = RecordKind::from_u32(slot) else {
                continue;
            };
            let Ok(values) = map.get(&slot, 0) else {
                continue;
            };
            *total.of(kind) = values.iter().sum();
        }
        let new = total.since(&self.lost_seen);
        if new.sum() == 0 {
            return None;
        }
        warn!(
            lost = new.sum(),
            lost_total = total.sum(),
            oom_kill = new.oom_kill,
            victim_exit = new.victim_exit,
            memcg_oom = new.memcg_oom,
            cgroup_mkdir = new.cgroup_mkdir,
            cgroup_attach = new.cgroup_attach,
            signaled_exit = new.signaled_exit,
            "ring buffer full: kernel records were lost"
        );
        self.lost_seen = total;
        Some((new, total))
    }

    /// Records lost so far, as last read.
    pub fn lost(&self) -> u64 {
        self.lost_seen.sum()
    }

    /// Records lost so far per kind, as last read.
    pub fn lost_by_kind(&self) -> Vec<(&'static str, u64)> {
        self.lost_seen.by_kind()
    }
}

/// A victim in the kernel's map: the process it is kept under, and what the kernel kept.
#[derive(Debug, Clone, Copy)]
pub struct Victim {
    /// The victim's process id (the map's key).
    pub tgid: u32,
    /// Its kill, and its exit once seen.
    pub state: VictimState,
}

impl Victims {
    /// A kill the daemon has not seen (an earlier run's, or one whose record was lost),
    /// from the kernel's own victim map.
    pub fn victim(&self, pid: u32) -> Option<Victim> {
        let state = self.0.as_ref()?.get(&pid, 0).ok()?;
        Some(Victim { tgid: pid, state })
    }
}

/// Records the kernel could not hand over (their ring was full), by record kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct LostCounts {
    /// Kill records.
    pub oom_kill: u64,
    /// Memcg OOM stall records (none since the stall watcher left the kernel; kept for
    /// pinned counters of an older object).
    pub memcg_oom: u64,
    /// Victim exit records.
    pub victim_exit: u64,
    /// Cgroup creation records.
    pub cgroup_mkdir: u64,
    /// Process migration records.
    pub cgroup_attach: u64,
    /// OOM killer decision records (the kill record still follows).
    pub oom_decision: u64,
    /// Skipped-kill records.
    pub oom_kill_skipped: u64,
    /// Exits of processes sent a fatal signal (their `container_exit` then has no sender).
    #[serde(default)]
    pub signaled_exit: u64,
}

impl LostCounts {
    /// The count of one kind.
    pub fn of(&mut self, kind: RecordKind) -> &mut u64 {
        match kind {
            RecordKind::OomKill => &mut self.oom_kill,
            RecordKind::MemcgOom => &mut self.memcg_oom,
            RecordKind::VictimExit => &mut self.victim_exit,
            RecordKind::CgroupMkdir => &mut self.cgroup_mkdir,
            RecordKind::CgroupAttach => &mut self.cgroup_attach,
            RecordKind::OomDecision => &mut self.oom_decision,
            RecordKind::OomSkipped => &mut self.oom_kill_skipped,
            RecordKind::SignaledExit => &mut self.signaled_exit,
        }
    }

    /// Each kind's count, by the kind's JSON name (the `kind` label of the metrics).
    pub fn by_kind(&self) -> Vec<(&'static str, u64)> {
        let mut c = *self;
        RecordKind::ALL
            .iter()
            .map(|k| (k.as_str(), *c.of(*k)))
            .collect()
    }

    /// All kinds together.
    pub fn sum(&self) -> u64 {
        self.oom_kill
            + self.memcg_oom
            + self.victim_exit
            + self.cgroup_mkdir
            + self.cgroup_attach
            + self.oom_decision
            + self.oom_kill_skipped
            + self.signaled_exit
    }

    /// What was added since `earlier`.
    pub fn since(&self, earlier: &LostCounts) -> LostCounts {
        LostCounts {
            oom_kill: self.oom_kill.saturating_sub(earlier.oom_kill),
            memcg_oom: self.memcg_oom.saturating_sub(earlier.memcg_oom),
            victim_exit: self.victim_exit.saturating_sub(earlier.victim_exit),
            cgroup_mkdir: self.cgroup_mkdir.saturating_sub(earlier.cgroup_mkdir),
            cgroup_attach: self.cgroup_attach.saturating_sub(earlier.cgroup_attach),
            oom_decision: self.oom_decision.saturating_sub(earlier.oom_decision),
            oom_kill_skipped: self
                .oom_kill_skipped
                .saturating_sub(earlier.oom_kill_skipped),
            signaled_exit: self.signaled_exit.saturating_sub(earlier.signaled_exit),
        }
    }
}

/// Makes a map a ring buffer registered with tokio.
fn take_ring(m: Option<Map>, name: &'static str) -> Result<AsyncFd<RingBuf<MapData>>, KernelError> {
    let m = m.ok_or(KernelError::MapMissing(name))?;
    let rb = RingBuf::try_from(m).map_err(|source| KernelError::Map { name, source })?;
    // SAFETY: the RingBuf owns its map fd for as long as the AsyncFd owns the RingBuf, and
    // always returns that same fd.
    unsafe { AsyncFd::register_with_interest(rb, Interest::READABLE) }
        .map_err(|e| KernelError::RingBuffer(e.into()))
}
