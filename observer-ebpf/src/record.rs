//! Building kill records and handing them to the daemon.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns},
    maps::ring_buf::RingBufEntry,
};
use observer_common::{valid, Constraint, Hook, OomKillRecord, RecordKind, VictimState};

use crate::{
    kernel::Task,
    maps::{AWAITING_EXIT, CGROUP_EVENTS, EVENTS, LOST, VICTIMS},
};

/// `bpf_ktime_get_boot_ns()`: the boot clock, which the daemon's records are stamped with.
#[inline(always)]
pub fn boot_ns() -> u64 {
    // SAFETY: the helper takes no argument and only reads the clock.
    unsafe { bpf_ktime_get_boot_ns() }
}

/// The thread running this program.
#[inline(always)]
pub fn current_tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

/// `bpf_ringbuf_query` flags and `bpf_ringbuf_submit` flags (`uapi/linux/bpf.h`).
const BPF_RB_AVAIL_DATA: u64 = 0;
const BPF_RB_RING_SIZE: u64 = 1;
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;

/// The submit flags of a cgroup record: no wake-up (the daemon reads the ring on its own
/// tick) until the ring is half full, then a wake-up with every record, so a burst is read
/// before it can fill the ring.
#[inline(always)]
pub fn cgroup_wakeup() -> u64 {
    let size = CGROUP_EVENTS.query(BPF_RB_RING_SIZE);
    if CGROUP_EVENTS.query(BPF_RB_AVAIL_DATA) >= size / 2 {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// Counts a record of `kind` that found its ring full.
#[inline(always)]
pub fn count_lost(kind: RecordKind) {
    if let Some(p) = LOST.get_ptr_mut(kind as u32) {
        // SAFETY: `p` is this CPU's slot of the array, valid while the program runs; a
        // nested program's increment lost in between is a miscount, not unsoundness.
        unsafe { *p += 1 };
    }
}

/// A kill, stall or exit record being filled in place in [`EVENTS`] (the record is too big
/// for the programs' 512-byte stack with everything else they hold).
pub struct Slot(RingBufEntry<OomKillRecord>);

impl Slot {
    /// Reserves a record of `kind` from `hook`, stamped now, with nothing seen yet; counts it
    /// lost when the ring is full.
    #[inline(always)]
    pub fn reserve(kind: RecordKind, hook: Hook) -> Option<Slot> {
        let Some(mut entry) = EVENTS.reserve::<OomKillRecord>(0) else {
            count_lost(kind);
            return None;
        };
        let rec = entry.as_mut_ptr();
        // SAFETY: `rec` is the reserved entry: `size_of::<OomKillRecord>()` writable bytes
        // that this program owns until it submits or discards them; zeroed first, so every
        // field (plain integers) is initialised.
        unsafe {
            core::ptr::write_bytes(rec, 0, 1);
            (*rec).kind = kind as u32;
            (*rec).hook = hook as u32;
            (*rec).ktime_ns = boot_ns();
            (*rec).constraint = Constraint::UNSEEN;
        }
        Some(Slot(entry))
    }

    /// The record.
    #[inline(always)]
    pub fn rec(&mut self) -> &mut OomKillRecord {
        // SAFETY: the entry is a whole record, initialised by `reserve`, owned by this `Slot`
        // until `submit`; the borrow of `self` keeps it the only reference.
        unsafe { &mut *self.0.as_mut_ptr() }
    }

    /// Hands the record to the daemon.
    #[inline(always)]
    pub fn submit(self) {
        self.0.submit(0);
    }
}

/// Fills the victim fields of `rec` from its task.
#[inline(always)]
pub fn fill_victim(rec: &mut OomKillRecord, task: Task) {
    if let Some(pid) = task.pid() {
        rec.victim_pid = pid;
        rec.valid |= valid::VICTIM_PID;
    }
    if let Some(tgid) = task.tgid() {
        rec.victim_tgid = tgid;
        rec.valid |= valid::VICTIM_TGID;
    }
    if task.read_comm(&mut rec.victim_comm) {
        rec.valid |= valid::VICTIM_COMM;
    }
    if let Some(uid) = task.real_uid() {
        rec.victim_uid = uid;
        rec.valid |= valid::VICTIM_UID;
    }
    if let Some(id) = task.memory_css().and_then(|css| css.cgroup_id()) {
        rec.victim_memcg_id = id;
        rec.valid |= valid::VICTIM_MEMCG;
    }
    if let Some(id) = task
        .css_set()
        .and_then(|cset| cset.dfl_cgroup())
        .and_then(|cgrp| cgrp.id())
    {
        rec.victim_dfl_cgroup_id = id;
        rec.valid |= valid::VICTIM_DFL_CGROUP;
    }
}

/// Fills the triggering task (the one that ran into the OOM: `current`).
#[inline(always)]
pub fn fill_trigger(rec: &mut OomKillRecord) {
    let id = bpf_get_current_pid_tgid();
    rec.trigger_pid = id as u32;
    rec.trigger_tgid = (id >> 32) as u32;
    if let Ok(comm) = bpf_get_current_comm() {
        rec.trigger_comm = comm;
    }
}

/// Records the victim before its kill record is submitted, so its exit (which cannot come
/// earlier: the SIGKILL is only being delivered) always finds it. `key` is its process id
/// (its thread id when the hook could not see the process id); cgroup ids are 0 when unknown.
#[inline(always)]
pub fn remember_victim(key: u32, pid: u32, kill_ktime_ns: u64, memcg_id: u64, dfl_cgroup_id: u64) {
    // Already counted: a victim still on its way out (marked twice).
    let counted = match VICTIMS.get_ptr(key) {
        // SAFETY: the map's pointer to `key`'s element, valid while the program runs; a
        // concurrent update of it can only make the count one too high, never too low.
        Some(old) => unsafe { (*old).exit_ktime_ns == 0 },
        None => false,
    };
    // Counted before the victim is visible: an exit that sees the victim always sees the
    // count (an exit that sees the count but not yet the victim leaves it one too high).
    if !counted {
        add_awaiting_exit(ONE_VICTIM);
    }
    let v = VictimState {
        kill_ktime_ns,
        memcg_id,
        dfl_cgroup_id,
        exit_ktime_ns: 0,
        pid,
        exit_code: 0,
    };
    let _ = VICTIMS.insert(key, v, 0);
}

/// The [`AWAITING_EXIT`] count of victims (low 32 bits) and of signaled processes (high 32
/// bits) that may still be on their way out; 0 when none is.
#[inline(always)]
pub fn exits_awaited() -> u64 {
    AWAITING_EXIT.get(0).copied().unwrap_or(0)
}

/// One victim in [`AWAITING_EXIT`] (its low half).
pub const ONE_VICTIM: u64 = 1;
/// One signaled process in [`AWAITING_EXIT`] (its high half).
pub const ONE_SIGNALED: u64 = 1 << 32;

/// Adds `delta` (wrapping: `ONE_VICTIM.wrapping_neg()` is −1 victim) to [`AWAITING_EXIT`],
/// atomically: kills, signals and exits run on any CPU at once. Each half is only taken
/// from after it was added to, so neither borrows from the other. The count errs only
/// upwards (an evicted entry never exits through its map), which costs a map lookup per
/// exit, never a missed one.
#[inline(always)]
pub fn add_awaiting_exit(delta: u64) {
    if let Some(p) = AWAITING_EXIT.get_ptr_mut(0) {
        // SAFETY: `p` is the array's only element, valid while the program runs, 8-byte
        // aligned; it is only ever changed through atomic adds. The result is unused, so
        // this is the BPF atomic add every kernel supports.
        unsafe {
            core::intrinsics::atomic_xadd::<
                u64,
                u64,
                { core::intrinsics::AtomicOrdering::Relaxed },
            >(p, delta);
        }
    }
}

/// [`remember_victim`] for a filled kill record.
#[inline(always)]
pub fn remember_recorded_victim(rec: &OomKillRecord) {
    let has = |bit: u32| rec.valid & bit != 0;
    remember_victim(
        if has(valid::VICTIM_TGID) {
            rec.victim_tgid
        } else {
            rec.victim_pid
        },
        rec.victim_pid,
        rec.ktime_ns,
        if has(valid::VICTIM_MEMCG) {
            rec.victim_memcg_id
        } else {
            0
        },
        if has(valid::VICTIM_DFL_CGROUP) {
            rec.victim_dfl_cgroup_id
        } else {
            0
        },
    );
}
