//! `sched_process_exit` (tp_btf, else the classic tracepoint): a victim's exit, into the
//! same ring as its kill, so every consumer reads the kill first.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use observer_common::{valid, Hook, RecordKind};

use crate::{
    kernel::{layout, Task},
    maps::VICTIMS,
    record::{add_awaiting_exit, boot_ns, victim_awaits_exit, Slot},
    tracepoint::ExitTp,
};

/// A victim's exit, once [`victim_awaits_exit`] let it through: one map lookup says
/// whether this is one.
#[inline(always)]
fn on_exit(group_dead: Option<bool>) {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    let Some(v) = VICTIMS.get_ptr_mut(tgid) else {
        return;
    };
    let pid = id as u32;
    // The process is gone when its last thread exits; kernels that do not say which thread
    // that is get the leader's exit.
    let process_exit = match group_dead {
        Some(dead) => dead,
        None => pid == tgid,
    };
    if !process_exit {
        return;
    }
    let now = boot_ns();
    let code = Task::current().exit_code();
    // SAFETY: `v` is the map's pointer to this process's element, which the kernel keeps
    // alive (RCU) until the program returns; its fields are plain integers.
    let first = unsafe {
        let first = (*v).exit_ktime_ns == 0;
        (*v).exit_ktime_ns = now;
        (*v).exit_code = code.unwrap_or(0);
        first
    };
    if first {
        add_awaiting_exit(u64::MAX);
    }
    let Some(mut slot) = Slot::reserve(RecordKind::VictimExit, Hook::SchedProcessExit) else {
        return;
    };
    let rec = slot.rec();
    rec.ktime_ns = now;
    rec.victim_pid = pid;
    rec.victim_tgid = tgid;
    rec.valid |= valid::VICTIM_PID | valid::VICTIM_TGID;
    if let Ok(comm) = bpf_get_current_comm() {
        rec.victim_comm = comm;
        rec.valid |= valid::VICTIM_COMM;
    }
    // SAFETY: as above, the element outlives the program's run.
    let (memcg, dfl) = unsafe { ((*v).memcg_id, (*v).dfl_cgroup_id) };
    if memcg != 0 {
        rec.victim_memcg_id = memcg;
        rec.valid |= valid::VICTIM_MEMCG;
    }
    if dfl != 0 {
        rec.victim_dfl_cgroup_id = dfl;
        rec.valid |= valid::VICTIM_DFL_CGROUP;
    }
    if let Some(code) = code {
        rec.exit_code = code;
        rec.valid |= valid::EXIT_CODE;
    }
    // The daemon pairs the exit with its kill by tgid (the kill record came first).
    slot.submit();
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn exit_btf(ctx: BtfTracePointContext) -> i32 {
    // Every process exit on the node passes here: while no victim awaits its exit, this
    // one load is all it costs.
    if !victim_awaits_exit() {
        return 0;
    }
    // Linux 6.16+ passes `bool group_dead` after the task.
    let group_dead = if layout!(tp_btf_exit_has_group_dead) != 0 {
        let g: u64 = ctx.arg(1);
        Some(g & 1 != 0)
    } else {
        None
    };
    on_exit(group_dead);
    0
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn exit_tp(ctx: TracePointContext) -> u32 {
    if !victim_awaits_exit() {
        return 0;
    }
    let group_dead = ExitTp(&ctx).group_dead().map(|b| b != 0);
    on_exit(group_dead);
    0
}
