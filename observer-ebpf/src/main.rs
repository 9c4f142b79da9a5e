//! oom-observer's kernel programs.
//!
//! Every kernel structure is read at an offset the daemon computed from the running
//! kernel's BTF and stored in [`LAYOUT`] before loading; no offset is compiled in, so this
//! one object serves every kernel (CO-RE by load-time offsets). A field whose offset is
//! unknown is reported as not seen, never guessed.
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_ktime_get_boot_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_buf,
        bpf_probe_read_kernel_str_bytes,
    },
    macros::{btf_tracepoint, fentry, fexit, kprobe, kretprobe, map, tracepoint},
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{
        BtfTracePointContext, FEntryContext, FExitContext, ProbeContext, RetProbeContext,
        TracePointContext,
    },
    EbpfContext,
};
use observer_common::{
    constraint, hook, kind, valid, CgroupMkdirRecord, KernelLayout, OomContext, OomKillRecord,
    StallState, VictimState, ABSENT, CGROUP_PATH_LEN, COMM_LEN, STALL_REPEAT_NS,
};

/// Filled by the daemon from the running kernel's BTF before load.
#[no_mangle]
static LAYOUT: KernelLayout = KernelLayout::unknown();

/// Every record for user space, in the order the kernel produced them.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Records that could not be reserved (ring buffer full), per CPU; the daemon sums them.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// OOM context stashed by the `oom_kill_process` hooks, by the thread running the OOM killer.
#[map]
static OOM_CTX: HashMap<u32, OomContext> = HashMap::with_max_entries(1024, 0);

/// OOM victims by process id (thread id when the hook could not see the process id), from
/// the kill until the LRU needs the room: the exit hook's single lookup, and the daemon's
/// fallback when asked about a kill it has not read yet.
#[map]
static VICTIMS: LruHashMap<u32, VictimState> = LruHashMap::with_max_entries(16384, 0);

/// The task each thread last sent SIGKILL to (see [`kill_signal_btf`]), by sending thread.
#[map]
static KILLED: LruHashMap<u32, KilledTask> = LruHashMap::with_max_entries(1024, 0);

/// A SIGKILL's target, as `signal_generate` saw it.
#[repr(C)]
#[derive(Clone, Copy)]
struct KilledTask {
    /// `struct task_struct *`.
    task: u64,
    /// Its thread id, to match `mark_victim`'s pid.
    pid: u32,
    _pad: u32,
}

/// Threads seen stalled in a memcg OOM, so that one stall is reported once.
#[map]
static STALLS: LruHashMap<u32, StallState> = LruHashMap::with_max_entries(4096, 0);

/// Reads one field of [`LAYOUT`]; volatile so the compiler cannot fold the loader's value away.
macro_rules! layout {
    ($field:ident) => {
        unsafe { core::ptr::read_volatile(&LAYOUT.$field) }
    };
}

/// Reads a `T` at `base + off` in kernel memory; `None` when the field is absent or unreadable.
#[inline(always)]
fn read_at<T>(base: u64, off: u32) -> Option<T> {
    if base == 0 || off == ABSENT {
        return None;
    }
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T).ok() }
}

/// The cgroup id (`cgroup->kn->id`) of a `struct cgroup *`.
#[inline(always)]
fn cgroup_id(cgrp: u64) -> Option<u64> {
    let kn: u64 = read_at(cgrp, layout!(cgroup_kn))?;
    read_at(kn, layout!(kn_id))
}

/// The cgroup id of a `struct cgroup_subsys_state *`.
#[inline(always)]
fn css_cgroup_id(css: u64) -> Option<u64> {
    cgroup_id(read_at(css, layout!(css_cgroup))?)
}

/// A task's memory-controller css (`task->cgroups->subsys[memory_cgrp_id]`).
#[inline(always)]
fn task_memory_css(task: u64) -> Option<u64> {
    let cset: u64 = read_at(task, layout!(task_cgroups))?;
    let idx = layout!(memory_cgrp_id);
    let base = layout!(css_set_subsys);
    if idx == ABSENT || base == ABSENT || idx >= 64 {
        return None;
    }
    read_at(cset, base + idx * 8)
}

/// Fills the victim fields of `rec` from a `struct task_struct *`.
#[inline(always)]
fn fill_victim(rec: &mut OomKillRecord, task: u64) {
    if let Some(pid) = read_at::<u32>(task, layout!(task_pid)) {
        rec.victim_pid = pid;
        rec.valid |= valid::VICTIM_PID;
    }
    if let Some(tgid) = read_at::<u32>(task, layout!(task_tgid)) {
        rec.victim_tgid = tgid;
        rec.valid |= valid::VICTIM_TGID;
    }
    let off = layout!(task_comm);
    if off != ABSENT
        && unsafe {
            bpf_probe_read_kernel_buf((task + off as u64) as *const u8, &mut rec.victim_comm)
        }
        .is_ok()
    {
        rec.valid |= valid::VICTIM_COMM;
    }
    if let Some(cred) = read_at::<u64>(task, layout!(task_real_cred)) {
        if let Some(uid) = read_at::<u32>(cred, layout!(cred_uid)) {
            rec.victim_uid = uid;
            rec.valid |= valid::VICTIM_UID;
        }
    }
    if let Some(css) = task_memory_css(task) {
        if let Some(id) = css_cgroup_id(css) {
            rec.victim_memcg_id = id;
            rec.valid |= valid::VICTIM_MEMCG;
        }
    }
    if let Some(cset) = read_at::<u64>(task, layout!(task_cgroups)) {
        if let Some(cgrp) = read_at::<u64>(cset, layout!(css_set_dfl_cgrp)) {
            if let Some(id) = cgroup_id(cgrp) {
                rec.victim_dfl_cgroup_id = id;
                rec.valid |= valid::VICTIM_DFL_CGROUP;
            }
        }
    }
}

/// On cgroup v1 the OOM killer locks the OOM memcg and its whole subtree (`oom_lock`) while
/// it picks and kills a victim, and two overlapping subtrees cannot both hold it. So the
/// highest locked memcg on the victim's path to the root is the one whose limit was hit.
/// Used only by hooks that cannot see `oom_control` itself.
#[inline(always)]
fn v1_locked_oom_memcg(task: u64) -> Option<u64> {
    let lock_off = layout!(memcg_oom_lock);
    let css_off = layout!(memcg_css);
    if lock_off == ABSENT || css_off == ABSENT || layout!(memory_on_dfl) != 0 {
        return None;
    }
    let mut css = task_memory_css(task)?;
    let mut found = 0u64;
    for _ in 0..32 {
        if css == 0 {
            break;
        }
        let memcg = css - css_off as u64;
        let locked: u8 = read_at(memcg, lock_off)?;
        if locked == 0 {
            break;
        }
        found = css;
        css = read_at(css, layout!(css_parent)).unwrap_or(0);
    }
    if found == 0 {
        return None;
    }
    css_cgroup_id(found)
}

#[inline(always)]
fn count_lost() {
    if let Some(p) = LOST.get_ptr_mut(0) {
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn current_tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

/// Fills the triggering task (the one that ran into the OOM: `current`).
#[inline(always)]
fn fill_trigger(rec: &mut OomKillRecord) {
    let id = bpf_get_current_pid_tgid();
    rec.trigger_pid = id as u32;
    rec.trigger_tgid = (id >> 32) as u32;
    if let Ok(comm) = bpf_get_current_comm() {
        rec.trigger_comm = comm;
    }
}

fn empty_record(kind: u32, hook: u32) -> OomKillRecord {
    OomKillRecord {
        kind,
        hook,
        ktime_ns: unsafe { bpf_ktime_get_boot_ns() },
        valid: 0,
        victim_pid: 0,
        victim_tgid: 0,
        victim_uid: 0,
        victim_memcg_id: 0,
        victim_dfl_cgroup_id: 0,
        oom_memcg_id: 0,
        constraint: constraint::UNKNOWN,
        trigger_pid: 0,
        trigger_tgid: 0,
        exit_code: 0,
        victim_comm: [0; COMM_LEN],
        trigger_comm: [0; COMM_LEN],
    }
}

fn submit(rec: &OomKillRecord) {
    match EVENTS.reserve::<OomKillRecord>(0) {
        Some(mut slot) => {
            slot.write(*rec);
            slot.submit(0);
        }
        None => count_lost(),
    }
}

/// What a `mark_victim` hook was handed directly.
struct Victim {
    /// `struct task_struct *`, when the hook passes it.
    task: u64,
    /// The victim's thread id.
    pid: u32,
}

/// Emits one `oom_kill` record for a victim seen by `mark_victim`.
#[inline(always)]
fn on_mark_victim(victim_hook: u32, victim: Victim, tp: Option<(&TracePointContext, u32, u32)>) {
    let mut rec = empty_record(kind::OOM_KILL, victim_hook);
    rec.victim_pid = victim.pid;
    rec.valid |= valid::VICTIM_PID;
    let tid = current_tid();
    // Every field is read into a plain local (no Option<struct> copies): the verifier rejects
    // the partially initialised registers LLVM may leave for an empty Option.
    let mut ctx = OomContext {
        oom_memcg_id: 0,
        chosen: 0,
        constraint: constraint::UNKNOWN,
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
        task = unsafe { bpf_get_current_task() };
    }
    if task != 0 {
        fill_victim(&mut rec, task);
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
        if let Some(id) = v1_locked_oom_memcg(task) {
            rec.oom_memcg_id = id;
            rec.constraint = constraint::MEMCG;
            rec.valid |= valid::OOM_MEMCG;
        }
    }
    fill_trigger(&mut rec);
    remember_victim(&rec);
    submit(&rec);
}

/// Records the victim before its kill record is submitted, so its exit (which cannot come
/// earlier: the SIGKILL is only being delivered) always finds it.
#[inline(always)]
fn remember_victim(rec: &OomKillRecord) {
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

/// Every process exit on the node passes here: one map lookup decides it is not a victim.
#[inline(always)]
fn on_exit(group_dead: Option<bool>) {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    let Some(v) = VICTIMS.get_ptr_mut(&tgid) else {
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
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let task = unsafe { bpf_get_current_task() };
    let mut rec = empty_record(kind::VICTIM_EXIT, hook::SCHED_PROCESS_EXIT);
    rec.ktime_ns = now;
    rec.victim_pid = pid;
    rec.victim_tgid = tgid;
    rec.valid |= valid::VICTIM_PID | valid::VICTIM_TGID;
    if let Ok(comm) = bpf_get_current_comm() {
        rec.victim_comm = comm;
        rec.valid |= valid::VICTIM_COMM;
    }
    let (memcg, dfl) = unsafe { ((*v).memcg_id, (*v).dfl_cgroup_id) };
    if memcg != 0 {
        rec.victim_memcg_id = memcg;
        rec.valid |= valid::VICTIM_MEMCG;
    }
    if dfl != 0 {
        rec.victim_dfl_cgroup_id = dfl;
        rec.valid |= valid::VICTIM_DFL_CGROUP;
    }
    if let Some(code) = read_at::<i32>(task, layout!(task_exit_code)) {
        rec.exit_code = code;
        rec.valid |= valid::EXIT_CODE;
    }
    unsafe {
        (*v).exit_ktime_ns = now;
        (*v).exit_code = rec.exit_code;
    }
    // The daemon pairs the exit with its kill by tgid (the kill record came first).
    submit(&rec);
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn exit_btf(ctx: BtfTracePointContext) -> i32 {
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
    let off = layout!(tp_exit_group_dead);
    let group_dead = if off == ABSENT {
        None
    } else {
        unsafe { ctx.read_at::<u8>(off as usize) }
            .ok()
            .map(|b| b != 0)
    };
    on_exit(group_dead);
    0
}

/// Stores `oom_control`'s memcg, constraint and chosen task for this thread's `mark_victim`.
#[inline(always)]
fn stash_oom_control(oc: u64, hook_id: u32) {
    if oc == 0 {
        return;
    }
    let memcg: u64 = read_at(oc, layout!(oc_memcg)).unwrap_or(0);
    let oom_memcg_id = if memcg == 0 {
        0
    } else {
        let css_off = layout!(memcg_css);
        if css_off == ABSENT {
            return;
        }
        match css_cgroup_id(memcg + css_off as u64) {
            Some(id) => id,
            None => return,
        }
    };
    let chosen: u64 = read_at(oc, layout!(oc_chosen)).unwrap_or(0);
    let chosen_pid: u32 = read_at(chosen, layout!(task_pid)).unwrap_or(0);
    let cons: u32 = read_at(oc, layout!(oc_constraint)).unwrap_or(constraint::UNKNOWN);
    let c = OomContext {
        oom_memcg_id,
        chosen,
        constraint: cons,
        chosen_pid,
        hook: hook_id,
        _pad: 0,
    };
    let _ = OOM_CTX.insert(&current_tid(), &c, 0);
}

#[fentry(function = "oom_kill_process")]
pub fn oom_kill_fentry(ctx: FEntryContext) -> i32 {
    let oc: u64 = ctx.arg(0);
    stash_oom_control(oc, hook::FENTRY);
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
        stash_oom_control(oc, hook::KPROBE);
    }
    0
}

#[kretprobe]
pub fn oom_kill_kretprobe(_ctx: RetProbeContext) -> u32 {
    let _ = OOM_CTX.remove(&current_tid());
    0
}

#[btf_tracepoint(function = "mark_victim")]
pub fn mark_victim_btf(ctx: BtfTracePointContext) -> i32 {
    // Linux 6.8 changed the prototype from (int pid) to (struct task_struct *, uid_t);
    // the daemon read which one this kernel has from its BTF.
    let victim = if layout!(tp_btf_victim_is_task) != 0 {
        let task: u64 = ctx.arg(0);
        let pid = read_at::<u32>(task, layout!(task_pid)).unwrap_or(0);
        Victim { task, pid }
    } else {
        let pid: u64 = ctx.arg(0);
        Victim {
            task: 0,
            pid: pid as u32,
        }
    };
    on_mark_victim(hook::TP_BTF, victim, None);
    0
}

/// Before Linux 6.8 `mark_victim` passes only the victim's pid. The OOM killer sends the
/// victim SIGKILL from the same thread right before it marks it (`__oom_kill_process`:
/// `do_send_sig_info` then `mark_oom_victim`), and `signal_generate` hands over the target
/// task: stash it so `mark_victim` can read the victim's cgroups, comm and uid when the pid
/// matches. Attached only on kernels whose `mark_victim` lacks the task.
#[btf_tracepoint(function = "signal_generate")]
pub fn kill_signal_btf(ctx: BtfTracePointContext) -> i32 {
    // (int sig, struct kernel_siginfo *info, struct task_struct *task, int group, int result)
    let sig: u64 = ctx.arg(0);
    if sig as i32 != SIGKILL {
        return 0;
    }
    let task: u64 = ctx.arg(2);
    let Some(pid) = read_at::<u32>(task, layout!(task_pid)) else {
        return 0;
    };
    let _ = KILLED.insert(&current_tid(), &KilledTask { task, pid, _pad: 0 }, 0);
    0
}

const SIGKILL: i32 = 9;

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
        hook::TRACEPOINT,
        Victim { task: 0, pid },
        Some((&ctx, comm_off, uid_off)),
    );
    0
}

#[tracepoint(category = "cgroup", name = "cgroup_mkdir")]
pub fn cgroup_mkdir_tp(ctx: TracePointContext) -> u32 {
    let (root_off, id_off, level_off, path_off) = (
        layout!(tp_mkdir_root),
        layout!(tp_mkdir_id),
        layout!(tp_mkdir_level),
        layout!(tp_mkdir_path),
    );
    if root_off == ABSENT || id_off == ABSENT || path_off == ABSENT {
        return 0;
    }
    let Some(mut slot) = EVENTS.reserve::<CgroupMkdirRecord>(0) else {
        count_lost();
        return 0;
    };
    let rec = slot.as_mut_ptr();
    unsafe {
        (*rec).kind = kind::CGROUP_MKDIR;
        (*rec).root = ctx.read_at::<i32>(root_off as usize).unwrap_or(-1) as u32;
        (*rec).id = ctx.read_at::<u64>(id_off as usize).unwrap_or(0);
        (*rec).level = if level_off == ABSENT {
            0
        } else {
            ctx.read_at::<i32>(level_off as usize).unwrap_or(0) as u32
        };
        (*rec).path_len = 0;
        let loc = ctx.read_at::<u32>(path_off as usize).unwrap_or(0);
        let src = (ctx.as_ptr() as *const u8).add((loc & 0xffff) as usize);
        if let Ok(bytes) = bpf_probe_read_kernel_str_bytes(src, &mut (*rec).path) {
            // A path that filled the buffer may have been cut: say so.
            let n = bytes.len() as u32;
            (*rec).path_len = if n as usize >= CGROUP_PATH_LEN - 1 {
                CGROUP_PATH_LEN as u32
            } else {
                n
            };
        }
    }
    slot.submit(0);
    0
}

/// A thread that hit a cgroup v1 memcg OOM with the OOM killer disabled does not die: it
/// parks `current->memcg_in_oom` and sleeps at the end of its page fault. It is seen here,
/// as it is switched out.
#[inline(always)]
fn on_switch_out(hook_id: u32) {
    let off = layout!(task_memcg_in_oom);
    if off == ABSENT {
        return;
    }
    let task = unsafe { bpf_get_current_task() };
    let memcg: u64 = match read_at(task, off) {
        Some(m) if m != 0 => m,
        _ => return,
    };
    let css_off = layout!(memcg_css);
    if css_off == ABSENT {
        return;
    }
    let Some(memcg_id) = css_cgroup_id(memcg + css_off as u64) else {
        return;
    };
    let tid = current_tid();
    let now = unsafe { bpf_ktime_get_boot_ns() };
    if let Some(prev) = unsafe { STALLS.get(&tid) } {
        if prev.memcg_id == memcg_id && now.wrapping_sub(prev.last_seen_ns) < STALL_REPEAT_NS {
            let _ = STALLS.insert(
                &tid,
                &StallState {
                    memcg_id,
                    last_seen_ns: now,
                },
                0,
            );
            return;
        }
    }
    let _ = STALLS.insert(
        &tid,
        &StallState {
            memcg_id,
            last_seen_ns: now,
        },
        0,
    );
    let mut rec = empty_record(kind::MEMCG_OOM, hook_id);
    rec.oom_memcg_id = memcg_id;
    rec.constraint = constraint::MEMCG;
    rec.valid |= valid::OOM_MEMCG;
    fill_trigger(&mut rec);
    submit(&rec);
}

#[btf_tracepoint(function = "sched_switch")]
pub fn stall_btf(_ctx: BtfTracePointContext) -> i32 {
    on_switch_out(hook::SCHED_SWITCH);
    0
}

#[tracepoint(category = "sched", name = "sched_switch")]
pub fn stall_tp(_ctx: TracePointContext) -> u32 {
    on_switch_out(hook::SCHED_SWITCH);
    0
}

/// Filled by the daemon before load: where `cgroup_attach_task`'s fields are, and which
/// hierarchy to report (the memory controller's).
#[no_mangle]
static ATTACH: observer_common::AttachLayout = observer_common::AttachLayout::unknown();

/// A process moved into a memory cgroup: the daemon re-audits its container's limit at once.
#[tracepoint(category = "cgroup", name = "cgroup_attach_task")]
pub fn cgroup_attach_tp(ctx: TracePointContext) -> u32 {
    let l = unsafe { core::ptr::read_volatile(&ATTACH) };
    if l.tp_root == ABSENT || l.tp_id == ABSENT || l.tp_pid == ABSENT {
        return 0;
    }
    let root = match unsafe { ctx.read_at::<i32>(l.tp_root as usize) } {
        Ok(r) => r as u32,
        Err(_) => return 0,
    };
    // Every v1 hierarchy sees its own migration; only the memory one matters.
    if root != l.memory_root {
        return 0;
    }
    let rec = observer_common::CgroupAttachRecord {
        kind: kind::CGROUP_ATTACH,
        root,
        id: unsafe { ctx.read_at::<u64>(l.tp_id as usize) }.unwrap_or(0),
        pid: unsafe { ctx.read_at::<i32>(l.tp_pid as usize) }.unwrap_or(0) as u32,
        level: if l.tp_level == ABSENT {
            0
        } else {
            unsafe { ctx.read_at::<i32>(l.tp_level as usize) }.unwrap_or(0) as u32
        },
    };
    match EVENTS.reserve::<observer_common::CgroupAttachRecord>(0) {
        Some(mut slot) => {
            slot.write(rec);
            slot.submit(0);
        }
        None => count_lost(),
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
