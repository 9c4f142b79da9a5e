//! `oom_kill_process` entry and exit (fentry/fexit, else kprobe/kretprobe): the OOM
//! killer's decision, as a record of its own (before the kernel prints its report and before
//! any SIGKILL), and its `struct oom_control`, stashed for this thread's `mark_victim`. At the
//! return, a decision that marked nobody is reported as skipped.

use aya_ebpf::{
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use observer_common::{
    doubt, valid, Constraint, Hook, OomContext, RecordKind, PF_EXITING, SIGNAL_GROUP_EXIT,
};

use crate::{
    kernel::{OomControl, PtRegs, Task},
    maps::OOM_CTX,
    record::{boot_ns, current_tid, fill_trigger, fill_victim, Slot},
};

/// Stores `oom_control`'s memcg, constraint and chosen task for this thread's `mark_victim`,
/// and reports the decision.
#[inline(always)]
fn on_decision(oc: u64, hook: Hook) {
    if oc == 0 {
        return;
    }
    let oc = OomControl(oc);
    let memcg = oc.memcg().unwrap_or(None);
    let oom_memcg_id = match memcg {
        None => 0,
        Some(memcg) => match memcg.cgroup_id() {
            Some(id) => id,
            None => return,
        },
    };
    let (chosen, chosen_pid) = match oc.chosen() {
        Some(t) => (t.0, t.pid().unwrap_or(0)),
        None => (0, 0),
    };
    let c = OomContext {
        oom_memcg_id,
        chosen,
        constraint: oc.constraint().unwrap_or(Constraint::UNSEEN),
        chosen_pid,
        hook: hook as u32,
        victims: 0,
        memcg: memcg.map(|m| m.0).unwrap_or(0),
        total_pages: oc.total_pages().unwrap_or(u64::MAX),
        chosen_points: oc.chosen_points().unwrap_or(i64::MIN),
        incident_id: boot_ns(),
    };
    let _ = OOM_CTX.insert(current_tid(), c, 0);
    if chosen != 0 {
        report_decision(&c, Task(chosen), hook);
    }
}

/// What, at the decision, says the kernel may kill nobody (see [`doubt`]); `None` when the
/// victim's state cannot be read.
#[inline(always)]
fn decision_doubt(task: Task) -> Option<u32> {
    let mut d = 0;
    if task.flags()? & PF_EXITING != 0 {
        d |= doubt::PF_EXITING;
    }
    if task.signal_flags()? & SIGNAL_GROUP_EXIT != 0 {
        d |= doubt::GROUP_EXIT;
    }
    if task.mm().is_none() {
        d |= doubt::NO_MM;
    }
    Some(d)
}

/// The decision record: the chosen victim and the OOM domain, stamped with the incident id.
#[inline(always)]
fn report_decision(c: &OomContext, chosen: Task, hook: Hook) {
    let Some(mut slot) = Slot::reserve(RecordKind::OomDecision, hook) else {
        // Lost (and counted): the kill record still follows, only later.
        return;
    };
    let rec = slot.rec();
    rec.ktime_ns = c.incident_id;
    fill_victim(rec, chosen);
    rec.oom_memcg_id = c.oom_memcg_id;
    rec.constraint = c.constraint;
    rec.valid |= valid::OOM_MEMCG;
    if c.total_pages != u64::MAX {
        rec.detail.total_pages = c.total_pages;
        rec.valid |= valid::TOTAL_PAGES;
    }
    if c.chosen_points != i64::MIN {
        rec.detail.chosen_points = c.chosen_points;
        rec.valid |= valid::POINTS;
    }
    rec.detail.incident_id = c.incident_id;
    rec.valid |= valid::INCIDENT;
    if let Some(d) = decision_doubt(chosen) {
        rec.detail.decision_doubt = d;
        rec.valid |= valid::DOUBT;
    }
    fill_trigger(rec);
    slot.submit();
}

/// At `oom_kill_process`' return: a decision that marked no victim at all (the chosen had
/// no `mm` left, and no group kill followed) is reported as skipped. Only what the daemon
/// needs to find its decision is filled: the task may be gone by now.
#[inline(always)]
fn on_return() {
    let tid = current_tid();
    // SAFETY: the element is copied at once, while RCU keeps it; only this thread's
    // programs write it, and they are not running now.
    let Some(c) = (unsafe { OOM_CTX.get(tid) }).copied() else {
        return;
    };
    let _ = OOM_CTX.remove(tid);
    if c.victims != 0 || c.chosen == 0 {
        return;
    }
    let Some(mut slot) = Slot::reserve(
        RecordKind::OomSkipped,
        Hook::from_u32(c.hook).unwrap_or(Hook::Fentry),
    ) else {
        return;
    };
    let rec = slot.rec();
    rec.hook = c.hook;
    rec.victim_pid = c.chosen_pid;
    rec.valid |= valid::VICTIM_PID | valid::INCIDENT;
    rec.detail.incident_id = c.incident_id;
    fill_trigger(rec);
    slot.submit();
}

#[fentry(function = "oom_kill_process")]
pub fn oom_kill_fentry(ctx: FEntryContext) -> i32 {
    let oc: u64 = ctx.arg(0);
    on_decision(oc, Hook::Fentry);
    0
}

#[fexit(function = "oom_kill_process")]
pub fn oom_kill_fexit(_ctx: FExitContext) -> i32 {
    on_return();
    0
}

#[kprobe]
pub fn oom_kill_kprobe(ctx: ProbeContext) -> u32 {
    // Not `ctx.arg(0)`: aya-ebpf picks the argument register's place in pt_regs for the
    // architecture the object is *built* on, so on arm64 an x86_64-built object would read
    // x14 instead of x0. The daemon passes the running kernel's offset instead.
    if let Some(oc) = PtRegs(ctx.regs as u64).arg0() {
        on_decision(oc, Hook::Kprobe);
    }
    0
}

#[kretprobe]
pub fn oom_kill_kretprobe(_ctx: RetProbeContext) -> u32 {
    on_return();
    0
}
