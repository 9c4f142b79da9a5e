//! The kernel's records of signaled exits, kept until containerd says whose container's init
//! each was. The kernel's exit comes first (the shim reaps the init after it), so the
//! container's `/tasks/exit` finds its record here; records of processes that were no
//! container's init age out.

use std::collections::HashMap;

use observer_common::DeathRecord;

use crate::kernel::clock::boot_ns;

/// How long a record waits for its container's exit: containerd reports it within
/// milliseconds of the reap, seconds on a starved node.
const KEEP_NS: u64 = 120 * 1_000_000_000;
/// At most this many records wait (a node where thousands of signaled processes exit in two
/// minutes keeps the newest).
const MAX: usize = 4096;

/// Signaled exits by process id.
#[derive(Debug, Default)]
pub struct Deaths {
    by_tgid: HashMap<u32, DeathRecord>,
}

impl Deaths {
    /// Keeps a record.
    pub fn insert(&mut self, d: DeathRecord) {
        if self.by_tgid.len() >= MAX {
            let now = boot_ns();
            self.by_tgid
                .retain(|_, r| now.saturating_sub(r.ktime_ns) < KEEP_NS);
            if self.by_tgid.len() >= MAX {
                // All recent: the oldest goes.
                if let Some(oldest) = self
                    .by_tgid
                    .iter()
                    .min_by_key(|(_, r)| r.ktime_ns)
                    .map(|(k, _)| *k)
                {
                    self.by_tgid.remove(&oldest);
                }
            }
        }
        self.by_tgid.insert(d.tgid, d);
    }

    /// Takes the record of `tgid`'s exit, if one waits and is recent.
    pub fn take(&mut self, tgid: u32) -> Option<DeathRecord> {
        let d = self.by_tgid.remove(&tgid)?;
        (boot_ns().saturating_sub(d.ktime_ns) < KEEP_NS).then_some(d)
    }
}
