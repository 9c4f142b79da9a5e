//! `sched_switch` (tp_btf, else the classic tracepoint), cgroup v1 only: threads stalled in a
//! memcg OOM with the OOM killer disabled.
//!
//! Such a thread does not die: it parks `current->memcg_in_oom` and sleeps at the end of its
//! page fault. It is seen here, as it is switched out.

use aya_ebpf::{
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use observer_common::{valid, Constraint, Hook, RecordKind, StallState, STALL_REPEAT_NS};

use crate::{
    kernel::Task,
    maps::STALLS,
    record::{boot_ns, current_tid, fill_trigger, Slot},
};

#[inline(always)]
fn on_switch_out() {
    let Some(memcg) = Task::current().memcg_in_oom() else {
        return;
    };
    let Some(memcg_id) = memcg.cgroup_id() else {
        return;
    };
    let tid = current_tid();
    let now = boot_ns();
    let seen = StallState {
        memcg_id,
        last_seen_ns: now,
    };
    // SAFETY: the element is read at once, while RCU keeps it; only this thread's programs
    // write it.
    if let Some(prev) = unsafe { STALLS.get(tid) } {
        if prev.memcg_id == memcg_id && now.wrapping_sub(prev.last_seen_ns) < STALL_REPEAT_NS {
            let _ = STALLS.insert(tid, seen, 0);
            return;
        }
    }
    let _ = STALLS.insert(tid, seen, 0);
    let Some(mut slot) = Slot::reserve(RecordKind::MemcgOom, Hook::SchedSwitch) else {
        return;
    };
    let rec = slot.rec();
    rec.oom_memcg_id = memcg_id;
    rec.constraint = Constraint::Memcg as u32;
    rec.valid |= valid::OOM_MEMCG;
    fill_trigger(rec);
    slot.submit();
}

#[btf_tracepoint(function = "sched_switch")]
pub fn stall_btf(_ctx: BtfTracePointContext) -> i32 {
    on_switch_out();
    0
}

#[tracepoint(category = "sched", name = "sched_switch")]
pub fn stall_tp(_ctx: TracePointContext) -> u32 {
    on_switch_out();
    0
}
