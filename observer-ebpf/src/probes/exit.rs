//! `sched_process_exit` (tp_btf, else the classic tracepoint): a victim's exit, into the
//! same ring as its kill, so every consumer reads the kill first; and the exit of a process
//! that was sent a fatal signal, joined with that signal and its sender.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use observer_common::{valid, DeathRecord, Hook, RecordKind, EXIT_CODE_UNKNOWN};

use crate::{
    kernel::{layout, Task},
    maps::{EVENTS, SIGNALED, VICTIMS},
    record::{
        add_awaiting_exit, boot_ns, count_lost, exits_awaited, ONE_SIGNALED, ONE_VICTIM,
    },
    record::Slot,
    tracepoint::ExitTp,
};

/// An exit that [`exits_awaited`] let through: a victim's, a signaled process's, or neither
/// (one map lookup for each kind the count says may be waiting).
#[inline(always)]
fn on_exit(group_dead: Option<bool>, awaited: u64) {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
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
    if awaited & 0xffff_ffff != 0 {
        victim_exit(pid, tgid);
    }
    if awaited >> 32 != 0 {
        signaled_exit(pid, tgid);
    }
}

/// A victim's exit, reported in the kill's ring.
#[inline(always)]
fn victim_exit(pid: u32, tgid: u32) {
    let Some(v) = VICTIMS.get_ptr_mut(tgid) else {
        return;
    };
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
        add_awaiting_exit(ONE_VICTIM.wrapping_neg());
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

/// The exit of a process in [`SIGNALED`]: one record with the exit and its signals. The
/// entry stays, marked exited, so a query can still find it until the LRU needs the room.
#[inline(always)]
fn signaled_exit(pid: u32, tgid: u32) {
    let Some(st) = SIGNALED.get_ptr_mut(tgid) else {
        return;
    };
    let now = boot_ns();
    // SAFETY: the map's pointer to this process's element, valid (RCU) while the program
    // runs; plain integers.
    let open = unsafe {
        let open = (*st).exit_ktime_ns == 0;
        (*st).exit_ktime_ns = now;
        open
    };
    if !open {
        return;
    }
    add_awaiting_exit(ONE_SIGNALED.wrapping_neg());
    let Some(mut entry) = EVENTS.reserve::<DeathRecord>(0) else {
        count_lost(RecordKind::SignaledExit);
        return;
    };
    let rec = entry.as_mut_ptr();
    let me = Task::current();
    // SAFETY: `rec` is the reserved entry, owned by this program until submitted; zeroed
    // first so every field (plain integers) is initialised. `st` as above.
    unsafe {
        core::ptr::write_bytes(rec, 0, 1);
        (*rec).kind = RecordKind::SignaledExit as u32;
        (*rec).hook = Hook::SchedProcessExit as u32;
        (*rec).ktime_ns = now;
        (*rec).pid = pid;
        (*rec).tgid = tgid;
        (*rec).exit_code = me.exit_code().unwrap_or(EXIT_CODE_UNKNOWN);
        (*rec).signals = (*st).signals;
        (*rec).first = (*st).first;
        (*rec).last = (*st).last;
        if let Some(cg) = me.memory_css().and_then(|css| css.cgroup_id()) {
            (*rec).memcg_id = cg;
        }
        if let Some(cg) = me
            .css_set()
            .and_then(|cset| cset.dfl_cgroup())
            .and_then(|cgrp| cgrp.id())
        {
            (*rec).dfl_cgroup_id = cg;
        }
        if let Ok(comm) = bpf_get_current_comm() {
            (*rec).comm = comm;
        }
    }
    entry.submit(0);
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn exit_btf(ctx: BtfTracePointContext) -> i32 {
    // Every process exit on the node passes here: while no victim and no signaled process
    // awaits its exit, this one load is all it costs.
    let awaited = exits_awaited();
    if awaited == 0 {
        return 0;
    }
    // Linux 6.16+ passes `bool group_dead` after the task.
    let group_dead = if layout!(tp_btf_exit_has_group_dead) != 0 {
        let g: u64 = ctx.arg(1);
        Some(g & 1 != 0)
    } else {
        None
    };
    on_exit(group_dead, awaited);
    0
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn exit_tp(ctx: TracePointContext) -> u32 {
    let awaited = exits_awaited();
    if awaited == 0 {
        return 0;
    }
    let group_dead = ExitTp(&ctx).group_dead().map(|b| b != 0);
    on_exit(group_dead, awaited);
    0
}
