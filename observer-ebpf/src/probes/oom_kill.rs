//! `oom_kill_process` entry and exit (fentry/fexit, else kprobe/kretprobe): the OOM
//! killer's `struct oom_control`, stashed for this thread's `mark_victim`.

use aya_ebpf::{
    helpers::bpf_ktime_get_boot_ns,
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use observer_common::{Constraint, Hook, OomContext};

use crate::{
    kernel::{layout, read_at, OomControl},
    maps::OOM_CTX,
    record::current_tid,
};

/// Stores `oom_control`'s memcg, constraint and chosen task for this thread's `mark_victim`.
#[inline(always)]
fn stash_oom_control(oc: u64, hook: Hook) {
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
        incident_id: unsafe { bpf_ktime_get_boot_ns() },
    };
    let _ = OOM_CTX.insert(&current_tid(), &c, 0);
}

#[fentry(function = "oom_kill_process")]
pub fn oom_kill_fentry(ctx: FEntryContext) -> i32 {
    let oc: u64 = ctx.arg(0);
    stash_oom_control(oc, Hook::Fentry);
    0
}

#[fexit(function = "oom_kill_process")]
pub fn oom_kill_fexit(_ctx: FExitContext) -> i32 {
    let _ = OOM_CTX.remove(&current_tid());
    0
}

#[kprobe]
pub fn oom_kill_kprobe(ctx: ProbeContext) -> u32 {
    // Not `ctx.arg(0)`: aya-ebpf picks the argument register's place in pt_regs for the
    // architecture the object is *built* on, so on arm64 an x86_64-built object would read
    // x14 instead of x0. The daemon passes the running kernel's offset instead.
    if let Some(oc) = read_at::<u64>(ctx.regs as u64, layout!(kprobe_arg0)) {
        stash_oom_control(oc, Hook::Kprobe);
    }
    0
}

#[kretprobe]
pub fn oom_kill_kretprobe(_ctx: RetProbeContext) -> u32 {
    let _ = OOM_CTX.remove(&current_tid());
    0
}
