//! Building kill records and handing them to the daemon.

use aya_ebpf::helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns};
use observer_common::{
    valid, Constraint, Hook, OomKillRecord, RecordKind, VictimState, COMM_LEN,
};

use crate::{
    kernel::Task,
    maps::{EVENTS, LOST, VICTIMS},
};

/// The thread running this program.
#[inline(always)]
pub fn current_tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

/// Counts a record of `kind` that found its ring full.
#[inline(always)]
pub fn count_lost(kind: RecordKind) {
    if let Some(p) = LOST.get_ptr_mut(kind as u32) {
        unsafe { *p += 1 };
    }
}

/// A record of `kind` from `hook`, stamped now, with nothing seen yet.
#[inline(always)]
pub fn empty_record(kind: RecordKind, hook: Hook) -> OomKillRecord {
    OomKillRecord {
        kind: kind as u32,
        hook: hook as u32,
        ktime_ns: unsafe { bpf_ktime_get_boot_ns() },
        valid: 0,
        victim_pid: 0,
        victim_tgid: 0,
        victim_uid: 0,
        victim_memcg_id: 0,
        victim_dfl_cgroup_id: 0,
        oom_memcg_id: 0,
        constraint: Constraint::UNSEEN,
        trigger_pid: 0,
        trigger_tgid: 0,
        exit_code: 0,
        victim_comm: [0; COMM_LEN],
        trigger_comm: [0; COMM_LEN],
    }
}

/// Submits a kill, stall or exit record to [`EVENTS`], or counts it lost.
#[inline(always)]
pub fn submit(rec: &OomKillRecord, kind: RecordKind) {
    match EVENTS.reserve::<OomKillRecord>(0) {
        Some(mut slot) => {
            slot.write(*rec);
            slot.submit(0);
        }
        None => count_lost(kind),
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
/// earlier: the SIGKILL is only being delivered) always finds it.
#[inline(always)]
pub fn remember_victim(rec: &OomKillRecord) {
    let key = if rec.valid & valid::VICTIM_TGID != 0 {
        rec.victim_tgid
    } else {
        rec.victim_pid
    };
    let v = VictimState {
        kill_ktime_ns: rec.ktime_ns,
        memcg_id: if rec.valid & valid::VICTIM_MEMCG != 0 {
            rec.victim_memcg_id
        } else {
            0
        },
        dfl_cgroup_id: if rec.valid & valid::VICTIM_DFL_CGROUP != 0 {
            rec.victim_dfl_cgroup_id
        } else {
            0
        },
        exit_ktime_ns: 0,
        pid: rec.victim_pid,
        exit_code: 0,
    };
    let _ = VICTIMS.insert(&key, &v, 0);
}
