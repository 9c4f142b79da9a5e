//! The daemon's handles on the kernel programs' maps: the ring buffer it reads, the
//! lost-record counter, and the victim map the query socket falls back to.

use aya::{
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    Ebpf,
};
use observer_common::VictimState;
use tokio::io::{unix::AsyncFd, Interest};
use tracing::warn;

use super::clock::boot_rfc3339;
use crate::{
    error::ObserverError,
    pipeline::event::ExitInfo,
    query::history::{ExitSeen, Kill},
};

/// The maps the daemon reads while running.
pub struct KernelMaps {
    /// The ring buffer, registered with tokio.
    pub ring: AsyncFd<RingBuf<MapData>>,
    lost: Option<PerCpuArray<MapData, u64>>,
    lost_seen: u64,
    victims: Option<HashMap<MapData, u32, VictimState>>,
}

impl KernelMaps {
    /// Takes the maps out of the loaded object.
    pub fn take(ebpf: &mut Ebpf) -> Result<KernelMaps, ObserverError> {
        let ring = ebpf
            .take_map("EVENTS")
            .ok_or(ObserverError::MapMissing("EVENTS"))?;
        let ring = RingBuf::try_from(ring).map_err(|source| ObserverError::Map {
            name: "EVENTS",
            source,
        })?;
        // SAFETY: the RingBuf owns its map fd for as long as the AsyncFd owns the RingBuf, and
        // always returns that same fd.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| ObserverError::RingBuffer(e.into()))?;
        let lost = ebpf
            .take_map("LOST")
            .and_then(|m| PerCpuArray::try_from(m).ok());
        let victims = ebpf
            .take_map("VICTIMS")
            .and_then(|m| HashMap::try_from(m).ok());
        Ok(KernelMaps {
            ring,
            lost,
            lost_seen: 0,
            victims,
        })
    }

    /// Copies out every record the ring buffer holds (the sinks await, and items borrow it).
    pub fn take_batch(&mut self) -> Vec<Vec<u8>> {
        take_batch(self.ring.get_mut())
    }

    /// Reads the kernel's lost-record counter and logs any increase: no drop is silent.
    pub fn check_lost(&mut self) {
        let Some(map) = &self.lost else { return };
        let Ok(values) = map.get(&0, 0) else { return };
        let total: u64 = values.iter().sum();
        if total > self.lost_seen {
            warn!(
                lost = total - self.lost_seen,
                lost_total = total,
                "ring buffer full: kernel records were lost"
            );
            self.lost_seen = total;
        }
    }

    /// Records lost so far, as last read.
    pub fn lost(&self) -> u64 {
        self.lost_seen
    }

    /// A kill the daemon has not seen (an earlier run's, or one whose record was lost),
    /// from the kernel's own victim map.
    pub fn victim(&self, pid: u32) -> Option<Kill> {
        let v = self.victims.as_ref()?.get(&pid, 0).ok()?;
        Some(Kill {
            seq: 0,
            time: boot_rfc3339(v.kill_ktime_ns),
            ktime_ns: v.kill_ktime_ns,
            pid: Some(v.pid),
            tgid: Some(pid),
            comm: None,
            cgroup: None,
            container: None,
            exit: (v.exit_ktime_ns != 0).then(|| ExitSeen {
                time: boot_rfc3339(v.exit_ktime_ns),
                ktime_ns: v.exit_ktime_ns,
                signal: ExitInfo::from_status(v.exit_code).signal,
            }),
            start_time: None,
        })
    }
}

/// Every record the ring buffer holds now.
pub fn take_batch(rb: &mut RingBuf<MapData>) -> Vec<Vec<u8>> {
    let mut batch = Vec::new();
    while let Some(item) = rb.next() {
        batch.push(item.to_vec());
    }
    batch
}
