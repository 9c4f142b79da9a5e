//! `mark_victim` (tp_btf, else the classic tracepoint): one kill record per victim. On the
//! `oom_kill_process` strategies, a victim marked without the OOM killer's SIGKILL (the
//! `task_will_free_mem` shortcut for a victim already exiting) is a skipped kill instead.

use aya_ebpf::{
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use observer_common::{valid, Constraint, Hook, OomContext, OomKillRecord, RecordKind, ABSENT};

use crate::{
    kernel::{layout, Css, MemCgroup, Task},
    maps::{KILLED, KILL_SIGNAL_ON, OOM_CTX},
    record::{
        boot_ns, current_tid, fill_trigger, fill_victim, remember_recorded_victim, remember_victim,
        Slot,
    },
    tracepoint::MarkVictimTp,
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
fn v1_locked_oom_memcg(task: Task) -> Option<Css> {
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
    Some(Css(found))
}

/// What the kernel knows about the kill beyond who was killed (see `KillDetail`).
#[inline(always)]
fn fill_detail(rec: &mut OomKillRecord, task: Task, memcg: Option<MemCgroup>) {
    if let Some(memcg) = memcg {
        if let Some((usage, max)) = memcg.memory_counter() {
            rec.detail.domain_usage_pages = usage;
            rec.detail.domain_limit_pages = max;
            rec.valid |= valid::DOMAIN_MEMORY;
        }
        // On cgroup v1 the same place holds memsw (memory + swap), not swap.
        if layout!(memory_on_dfl) != 0 {
            if let Some((usage, max)) = memcg.swap_counter() {
                rec.detail.domain_swap_usage_pages = usage;
                rec.detail.domain_swap_limit_pages = max;
                rec.valid |= valid::DOMAIN_SWAP;
            }
        }
    }
    if let Some(mm) = task.mm() {
        if let Some(vm) = mm.total_vm() {
            rec.detail.total_vm_pages = vm;
            rec.valid |= valid::TOTAL_VM;
        }
        if let Some((file, anon, swap, shmem)) = mm.rss() {
            rec.detail.file_rss_pages = file;
            rec.detail.anon_rss_pages = anon;
            rec.detail.swap_ents = swap;
            rec.detail.shmem_rss_pages = shmem;
            rec.valid |= valid::RSS;
        }
        if let Some(b) = mm.pgtables_bytes() {
            rec.detail.pgtables_bytes = b;
            rec.valid |= valid::PGTABLES;
        }
    }
    if let Some(adj) = task.oom_score_adj() {
        rec.detail.oom_score_adj = adj as i32;
        rec.valid |= valid::OOM_SCORE_ADJ;
    }
    let leader = task.group_leader().unwrap_or(task);
    if let Some((nr, level)) = leader.ns_pid() {
        rec.detail.ns_pid = nr;
        rec.detail.ns_level = level;
        rec.valid |= valid::NS_PID;
    }
}

/// Emits one `oom_kill` record for a victim seen by `mark_victim`.
#[inline(always)]
fn on_mark_victim(victim_hook: Hook, victim: Victim, tp: Option<&MarkVictimTp<'_>>) {
    let tid = current_tid();
    // Every field is read into a plain local (no Option<struct> copies): the verifier rejects
    // the partially initialised registers LLVM may leave for an empty Option.
    let mut ctx = OomContext {
        oom_memcg_id: 0,
        chosen: 0,
        constraint: Constraint::UNSEEN,
        chosen_pid: 0,
        hook: 0,
        victims: 0,
        memcg: 0,
        total_pages: 0,
        chosen_points: 0,
        incident_id: 0,
    };
    let mut has_ctx = false;
    if let Some(p) = OOM_CTX.get_ptr_mut(tid) {
        // SAFETY: `p` is the map's pointer to this thread's element, kept alive (RCU) until
        // the program returns; only this thread's programs write it.
        unsafe {
            (*p).victims += 1;
            ctx = *p;
        }
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
        // SAFETY: the element is read at once, while RCU keeps it; this thread's own
        // `signal_generate` is its only writer, and it is not running now.
        if let Some(k) = unsafe { KILLED.get(tid) } {
            if k.pid == victim.pid {
                task = k.task;
            }
        }
    }
    if task == 0 && tid == victim.pid {
        task = Task::current().0;
    }
    // Whether this is a kill: `__oom_kill_process` sends SIGKILL right before it marks the
    // victim; `task_will_free_mem`'s shortcut marks an exiting victim without any signal.
    // Known only where `signal_generate` runs (the daemon says so) and the decision was seen.
    let mut kind = RecordKind::OomKill;
    if has_ctx && KILL_SIGNAL_ON.get(0).copied().unwrap_or(0) != 0 {
        // SAFETY: as above.
        let signalled = match unsafe { KILLED.get(tid) } {
            Some(k) => k.pid == victim.pid && k.ktime_ns >= ctx.incident_id,
            None => false,
        };
        if !signalled {
            kind = RecordKind::OomSkipped;
        }
    }
    let Some(mut slot) = Slot::reserve(kind, victim_hook) else {
        if kind == RecordKind::OomSkipped {
            return;
        }
        // The kill is lost (and counted); its exit still finds it.
        let t = Task(task);
        remember_victim(t.tgid().unwrap_or(victim.pid), victim.pid, boot_ns(), 0, 0);
        return;
    };
    let rec = slot.rec();
    rec.victim_pid = victim.pid;
    rec.valid |= valid::VICTIM_PID;
    if task != 0 {
        fill_victim(rec, Task(task));
    }
    // Fields the classic tracepoint carries in its own record.
    if let Some(tp) = tp {
        if rec.valid & valid::VICTIM_COMM == 0 && tp.comm(&mut rec.victim_comm).is_some() {
            rec.valid |= valid::VICTIM_COMM;
        }
        if rec.valid & valid::VICTIM_UID == 0 {
            if let Some(uid) = tp.uid() {
                rec.victim_uid = uid;
                rec.valid |= valid::VICTIM_UID;
            }
        }
    }

    let mut oom_memcg = None;
    if has_ctx {
        rec.hook = ctx.hook;
        rec.oom_memcg_id = ctx.oom_memcg_id;
        rec.constraint = ctx.constraint;
        rec.valid |= valid::OOM_MEMCG;
        if ctx.memcg != 0 {
            oom_memcg = Some(MemCgroup(ctx.memcg));
        }
        if ctx.total_pages != u64::MAX {
            rec.detail.total_pages = ctx.total_pages;
            rec.valid |= valid::TOTAL_PAGES;
        }
        // The badness belongs to `chosen`, not to the other victims of a group kill.
        if ctx.chosen_points != i64::MIN
            && (ctx.chosen_pid == victim.pid || ctx.chosen_pid == rec.victim_tgid)
        {
            rec.detail.chosen_points = ctx.chosen_points;
            rec.valid |= valid::POINTS;
        }
        rec.detail.incident_id = ctx.incident_id;
        rec.detail.incident_victims = ctx.victims;
        rec.valid |= valid::INCIDENT;
    } else if task != 0 {
        if let Some(css) = v1_locked_oom_memcg(Task(task)) {
            if let Some(id) = css.cgroup_id() {
                rec.oom_memcg_id = id;
                rec.constraint = Constraint::Memcg as u32;
                rec.valid |= valid::OOM_MEMCG;
                oom_memcg = css.mem_cgroup();
            }
        }
    }
    if task != 0 {
        fill_detail(rec, Task(task), oom_memcg);
    }
    fill_trigger(rec);
    if kind == RecordKind::OomKill {
        remember_recorded_victim(rec);
    }
    slot.submit();
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
    let tp = MarkVictimTp(&ctx);
    let Some(pid) = tp.pid() else {
        return 0;
    };
    on_mark_victim(
        Hook::Tracepoint,
        Victim {
            task: 0,
            pid: pid as u32,
        },
        Some(&tp),
    );
    0
}
