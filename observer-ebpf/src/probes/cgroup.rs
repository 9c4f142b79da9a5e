//! `cgroup/cgroup_mkdir` and `cgroup/cgroup_attach_task` (classic tracepoints): a new
//! cgroup's path, learnt before it can vanish, and processes moved into memory cgroups. Both
//! go to their own ring, [`CGROUP_EVENTS`], so that a flood of them cannot displace a kill.
//!
//! Neither wakes the daemon, unless the ring is half full: waking a sleeping reader runs an
//! irq_work and an IPI inside the mkdir that made the record, about 16 µs of a mkdir from a
//! fresh process on a VM, against 3 µs without. The daemon reads this ring on a tick of its
//! own and before every kill or exit record, so a record is never later than that tick and
//! never later than the kill that needs it.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use observer_common::{CgroupAttachRecord, CgroupMkdirRecord, RecordKind, CGROUP_PATH_LEN};

use crate::{
    maps::CGROUP_EVENTS,
    record::cgroup_wakeup,
    record::count_lost,
    tracepoint::{AttachTp, MkdirTp},
};

#[tracepoint(category = "cgroup", name = "cgroup_mkdir")]
pub fn cgroup_mkdir_tp(ctx: TracePointContext) -> u32 {
    let tp = MkdirTp(&ctx);
    if !tp.has_fields() {
        return 0;
    }
    let Some(mut slot) = CGROUP_EVENTS.reserve::<CgroupMkdirRecord>(0) else {
        count_lost(RecordKind::CgroupMkdir);
        return 0;
    };
    let rec = slot.as_mut_ptr();
    // SAFETY: `rec` points to the reserved ring-buffer entry, a whole `CgroupMkdirRecord`
    // that this program owns until it submits it; every field is a plain integer (array).
    unsafe {
        (*rec).kind = RecordKind::CgroupMkdir as u32;
        (*rec).root = tp.root().unwrap_or(-1) as u32;
        (*rec).id = tp.id().unwrap_or(0);
        (*rec).level = tp.level().unwrap_or(0) as u32;
        (*rec).path_len = 0;
        if let Some(bytes) = tp.path(&mut (*rec).path) {
            // A path that filled the buffer may have been cut: say so.
            let n = bytes.len() as u32;
            (*rec).path_len = if n as usize >= CGROUP_PATH_LEN - 1 {
                CGROUP_PATH_LEN as u32
            } else {
                n
            };
        }
    }
    slot.submit(cgroup_wakeup());
    0
}

/// A process moved into a memory cgroup: the daemon re-audits its container's limit at once.
#[tracepoint(category = "cgroup", name = "cgroup_attach_task")]
pub fn cgroup_attach_tp(ctx: TracePointContext) -> u32 {
    let tp = AttachTp::new(&ctx);
    if !tp.has_fields() {
        return 0;
    }
    let Some(root) = tp.root() else {
        return 0;
    };
    let root = root as u32;
    // Every v1 hierarchy sees its own migration; only the memory one matters.
    if root != tp.memory_root() {
        return 0;
    }
    let rec = CgroupAttachRecord {
        kind: RecordKind::CgroupAttach as u32,
        root,
        id: tp.id().unwrap_or(0),
        pid: tp.pid().unwrap_or(0) as u32,
        level: tp.level().unwrap_or(0) as u32,
    };
    match CGROUP_EVENTS.reserve::<CgroupAttachRecord>(0) {
        Some(mut slot) => {
            slot.write(rec);
            slot.submit(cgroup_wakeup());
        }
        None => count_lost(RecordKind::CgroupAttach),
    }
    0
}
