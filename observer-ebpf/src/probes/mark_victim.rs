//! `mark_victim` (tp_btf, else the classic tracepoint): one kill record per victim.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel_str_bytes,
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
    EbpfContext,
};
use observer_common::{valid, Constraint, Hook, OomContext, RecordKind, ABSENT};

use crate::{
    kernel::{layout, Css, Task},
    maps::{KILLED, OOM_CTX},
    record::{current_tid, empty_record, fill_trigger, fill_victim, remember_victim, submit},
};

/// What a `mark_victim` hook was handed directly.
struct Victim {
    /// `struct task_struct *`, when the hook passes it (0 when not).
    task: u64,
    /// The victim's thread id.
    pid: u32,
}

/// On cgroup v1 the OOM killer locks the OOM memcg and its whole subtree (`oom_lock`) while
/// it picks and kills a victim, and two overlapping subtrees cannot both hold it. So the
/// highest locked memcg on the victim's path to the root is the one whose limit was hit.
/// Used only by hooks that cannot see `oom_control` itself.
#[inline(always)]
fn v1_locked_oom_memcg(task: Task) -> Option<u64> {
    if layout!(memcg_oom_lock) == ABSENT
        || layout!(memcg_css) == ABSENT
        || layout!(memory_on_dfl) != 0
    {
        return None;
    }
    let mut css = task.memory_css()?.0;
    let mut found = 0u64;
    for _ in 0..32 {
        if css == 0 {
            break;
        }
        let c = Css(css);
        if !c.mem_cgroup()?.oom_locked()? {
            break;
        }
        found = css;
        css = c.parent().map(|p| p.0).unwrap_or(0);
    }
    if found == 0 {
        return None;
    }
    Css(found).cgroup_id()
}

/// Emits one `oom_kill` record for a victim seen by `mark_victim`.
#[inline(always)]
fn on_mark_victim(victim_hook: Hook, victim: Victim, tp: Option<(&TracePointContext, u32, u32)>) {
    let mut rec = empty_record(RecordKind::OomKill, victim_hook);
    rec.victim_pid = victim.pid;
    rec.valid |= valid::VICTIM_PID;
    let tid = current_tid();
    // Every field is read into a plain local (no Option<struct> copies): the verifier rejects
    // the partially initialised registers LLVM may leave for an empty Option.
    let mut ctx = OomContext {
        oom_memcg_id: 0,
        chosen: 0,
        constraint: Constraint::UNSEEN,
        chosen_pid: 0,
        hook: 0,
        _pad: 0,
    };
    let mut has_ctx = false;
    if let Some(p) = OOM_CTX.get_ptr(&tid) {
        ctx = unsafe { *p };
        has_ctx = true;
    }

    // The task is read where the hook hands it over; otherwise from oom_control.chosen when
    // the pid matches, from the SIGKILL this thread just sent when its target's pid matches
    // (every victim of a `memory.oom.group` kill, also those that are not `chosen`), or from
    // current when the victim is the allocating task itself.
    let mut task = victim.task;
    if task == 0 && has_ctx && ctx.chosen_pid == victim.pid {
        task = ctx.chosen;
    }
    if task == 0 {
        if let Some(k) = unsafe { KILLED.get(&tid) } {
            if k.pid == victim.pid {
                task = k.task;
            }
        }
    }
    if task == 0 && tid == victim.pid {
        task = Task::current().0;
    }
    if task != 0 {
        fill_victim(&mut rec, Task(task));
    }
    // Fields the classic tracepoint carries in its own record.
    if let Some((tpctx, comm_off, uid_off)) = tp {
        if rec.valid & valid::VICTIM_COMM == 0 && comm_off != ABSENT {
            if let Ok(loc) = unsafe { tpctx.read_at::<u32>(comm_off as usize) } {
                let start = (loc & 0xffff) as usize;
                let src = unsafe { (tpctx.as_ptr() as *const u8).add(start) };
                if unsafe { bpf_probe_read_kernel_str_bytes(src, &mut rec.victim_comm) }.is_ok() {
                    rec.valid |= valid::VICTIM_COMM;
                }
            }
        }
        if rec.valid & valid::VICTIM_UID == 0 && uid_off != ABSENT {
            if let Ok(uid) = unsafe { tpctx.read_at::<u32>(uid_off as usize) } {
                rec.victim_uid = uid;
                rec.valid |= valid::VICTIM_UID;
            }
        }
    }

    if has_ctx {
        rec.hook = ctx.hook;
        rec.oom_memcg_id = ctx.oom_memcg_id;
        rec.constraint = ctx.constraint;
        rec.valid |= valid::OOM_MEMCG;
    } else if task != 0 {
        if let Some(id) = v1_locked_oom_memcg(Task(task)) {
            rec.oom_memcg_id = id;
            rec.constraint = Constraint::Memcg as u32;
            rec.valid |= valid::OOM_MEMCG;
        }
    }
    fill_trigger(&mut rec);
    remember_victim(&rec);
    submit(&rec, RecordKind::OomKill);
}

#[btf_tracepoint(function = "mark_victim")]
pub fn mark_victim_btf(ctx: BtfTracePointContext) -> i32 {
    // Linux 6.8 changed the prototype from (int pid) to (struct task_struct *, uid_t);
    // the daemon read which one this kernel has from its BTF.
    let victim = if layout!(tp_btf_victim_is_task) != 0 {
        let task: u64 = ctx.arg(0);
        let pid = Task(task).pid().unwrap_or(0);
        Victim { task, pid }
    } else {
        let pid: u64 = ctx.arg(0);
        Victim {
            task: 0,
            pid: pid as u32,
        }
    };
    on_mark_victim(Hook::TpBtf, victim, None);
    0
}

#[tracepoint(category = "oom", name = "mark_victim")]
pub fn mark_victim_tp(ctx: TracePointContext) -> u32 {
    let pid_off = layout!(tp_victim_pid);
    if pid_off == ABSENT {
        return 0;
    }
    let pid = match unsafe { ctx.read_at::<i32>(pid_off as usize) } {
        Ok(p) => p as u32,
        Err(_) => return 0,
    };
    let comm_off = layout!(tp_victim_comm);
    let uid_off = layout!(tp_victim_uid);
    on_mark_victim(
        Hook::Tracepoint,
        Victim { task: 0, pid },
        Some((&ctx, comm_off, uid_off)),
    );
    0
}
