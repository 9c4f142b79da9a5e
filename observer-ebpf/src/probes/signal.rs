//! `signal_generate`: every fatal signal and its sender, and (tp_btf only) the SIGKILL's
//! target task for kernels whose `mark_victim` passes only a pid.
//!
//! Every signal generated on the node passes here (SIGCHLD at every exit, timers, ...), so
//! anything but a fatal signal leaves after one test of a bit mask.
//!
//! - **Fatal signals.** For each signal whose default action ends a process, the target
//!   process's entry in `SIGNALED` keeps the first and the last one, with the sender
//!   (`current`: the thread that called kill(2), wrote `cgroup.kill`, or faulted) and its
//!   cgroups. The exit hook joins them to the exit. A signal the target handles is kept too:
//!   a stop's SIGTERM that a process answers with its own exit is still who ended it.
//! - **The OOM killer's SIGKILL.** Before Linux 6.8 `mark_victim` passes only the victim's
//!   pid. The OOM killer sends the victim SIGKILL from the same thread right before it marks
//!   it (`__oom_kill_process`: `do_send_sig_info` then `mark_oom_victim`), and
//!   `signal_generate` hands over the target task: stash it so `mark_victim` can read the
//!   victim's cgroups, comm and uid when the pid matches. On the `oom_kill_process`
//!   strategies it also tells a kill from `task_will_free_mem`'s shortcut, which marks an
//!   exiting victim without any signal.
//!
//! Two programs: `tp_btf` (with BTF, every strategy but `tracepoint`) and the classic
//! tracepoint (the `tracepoint` strategy, which is also the one that works without BTF).
//! The classic record has the signal, its code, group and result, but of the target only
//! its thread id (`pid`), not the task. So the classic program:
//! - keys the target's process by that thread id: exact for a kill(2) or `cgroup.kill` to a
//!   process (the kernel names the thread of the pid given, the leader), and for a signal a
//!   thread raises in itself (a fault, abort(3): the sender's own tgid is taken). A signal
//!   sent by another process to one thread of a multi-threaded process that is not its
//!   leader (tgkill(2), or kill(2) given a thread's id) is kept under that thread's id and
//!   joins no exit;
//! - cannot see whether the target is already exiting (`PF_EXITING`). It makes no entry for
//!   a SIGKILL the kernel ignored (`result` 1), which is what a SIGKILL to an exiting
//!   process comes to (a runtime's `kill --all` over a dying container). Any other signal
//!   to an exiting process makes an entry that no exit joins: the exit count then errs
//!   upwards, as after an LRU eviction (one map lookup more per exit on the node);
//! - stashes no SIGKILL target: the `tracepoint` strategy's `mark_victim` passes the
//!   victim's pid and comm itself.

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_probe_read_kernel,
    },
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use observer_common::{is_fatal_signal, FatalSignal, SignalState, PF_EXITING};

use crate::{
    kernel::Task,
    maps::{KilledTask, KILLED, SIGNALED},
    record::{add_awaiting_exit, boot_ns, current_tid, ONE_SIGNALED},
    tracepoint::SignalTp,
};

const SIGKILL: u32 = 9;

/// `SEND_SIG_NOINFO` and `SEND_SIG_PRIV`: the two `info` values that are not pointers.
const SEND_SIG_NOINFO: u64 = 0;
const SEND_SIG_PRIV: u64 = 1;
/// `si_code` values the tracepoint itself substitutes for them.
const SI_USER: i32 = 0;
const SI_KERNEL: i32 = 0x80;
/// `kernel_siginfo.si_code`: after `si_signo` and `si_errno` on every architecture but MIPS,
/// a layout fixed by the user ABI of `siginfo_t`.
const SI_CODE_OFFSET: u64 = 8;
/// `TRACE_SIGNAL_IGNORED` of `enum trace_signal_deliver_result`.
const RESULT_IGNORED: u32 = 1;

#[btf_tracepoint(function = "signal_generate")]
pub fn kill_signal_btf(ctx: BtfTracePointContext) -> i32 {
    // (int sig, struct kernel_siginfo *info, struct task_struct *task, int group, int result)
    let sig: u64 = ctx.arg(0);
    let sig = sig as u32;
    if !is_fatal_signal(sig) {
        return 0;
    }
    let task: u64 = ctx.arg(2);
    if sig == SIGKILL {
        stash_kill(task);
    }
    let info: u64 = ctx.arg(1);
    let group: u64 = ctx.arg(3);
    let result: u64 = ctx.arg(4);
    let target = Task(task);
    let Some(tgid) = target.tgid() else {
        return 0;
    };
    let s = sent(
        sig,
        si_code(info),
        target.pid().unwrap_or(0),
        group as u32 & 1,
        result as u32,
    );
    record_fatal(tgid, s, Some(target));
    0
}

#[tracepoint(category = "signal", name = "signal_generate")]
pub fn kill_signal_tp(ctx: TracePointContext) -> u32 {
    let tp = SignalTp(&ctx);
    let Some(sig) = tp.sig() else {
        return 0;
    };
    let sig = sig as u32;
    if !is_fatal_signal(sig) {
        return 0;
    }
    let Some(pid) = tp.pid() else {
        return 0;
    };
    let pid = pid as u32;
    let result = tp.result().unwrap_or(0) as u32;
    let s = sent(
        sig,
        tp.code().unwrap_or(SI_USER),
        pid,
        tp.group().unwrap_or(0) as u32 & 1,
        result,
    );
    // The record names the target thread only (see the module's doc): its process is the
    // sender's when a thread signals itself, else the thread id is taken for the process id.
    let tgid = if pid == s.sender_pid {
        s.sender_tgid
    } else {
        pid
    };
    // No task, so no `PF_EXITING` test (see `record_fatal`): a SIGKILL the kernel ignores
    // is one to a process already exiting (or to a pid namespace's init from inside, which
    // does not end it), and makes no entry. Other ignored signals are kept, as with tp_btf:
    // a stop's SIGTERM that the process ignores is the first of the stop's two signals.
    if sig == SIGKILL && result == RESULT_IGNORED && SIGNALED.get_ptr(tgid).is_none() {
        return 0;
    }
    record_fatal(tgid, s, None);
    0
}

/// The SIGKILL's target, for `mark_victim` (see the module's doc).
#[inline(always)]
fn stash_kill(task: u64) {
    let Some(pid) = Task(task).pid() else {
        return;
    };
    let k = KilledTask {
        task,
        pid,
        _pad: 0,
        ktime_ns: boot_ns(),
    };
    let _ = KILLED.insert(current_tid(), k, 0);
}

/// `si_code` as the tracepoint's own record would give it.
#[inline(always)]
fn si_code(info: u64) -> i32 {
    match info {
        SEND_SIG_NOINFO => SI_USER,
        SEND_SIG_PRIV => SI_KERNEL,
        // SAFETY: the tracepoint's `info` points to the kernel_siginfo being sent; the read
        // is fault-handled and an i32 is valid for any bits.
        p => unsafe { bpf_probe_read_kernel((p + SI_CODE_OFFSET) as *const i32) }.unwrap_or(0),
    }
}

/// The fatal signal `sig` as `current` sends it: the sender's ids, `comm` and cgroups.
#[inline(always)]
fn sent(sig: u32, code: i32, target_pid: u32, group: u32, result: u32) -> FatalSignal {
    let id = bpf_get_current_pid_tgid();
    let me = Task::current();
    let mut s = FatalSignal {
        ktime_ns: boot_ns(),
        sig,
        code,
        sender_pid: id as u32,
        sender_tgid: (id >> 32) as u32,
        target_pid,
        result,
        group,
        ..FatalSignal::default()
    };
    if let Some(cg) = me.memory_css().and_then(|css| css.cgroup_id()) {
        s.sender_memcg_id = cg;
    }
    if let Some(cg) = me
        .css_set()
        .and_then(|cset| cset.dfl_cgroup())
        .and_then(|cgrp| cgrp.id())
    {
        s.sender_dfl_cgroup_id = cg;
    } else {
        // No layout (no BTF, classic tracepoint): the helper gives the same unified-hierarchy
        // id. The memory hierarchy's has no helper, so it stays unknown there.
        // SAFETY: a helper without arguments, allowed for tracing programs since Linux 4.18.
        s.sender_dfl_cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    }
    if let Ok(comm) = bpf_get_current_comm() {
        s.sender_comm = comm;
    }
    s
}

/// Keeps `s` in [`SIGNALED`] under the target process `tgid`: the first and the latest per
/// process. `target` is its task when the hook hands it over.
#[inline(always)]
fn record_fatal(tgid: u32, s: FatalSignal, target: Option<Task>) {
    if tgid == 0 {
        return;
    }
    if let Some(old) = SIGNALED.get_ptr_mut(tgid) {
        // SAFETY: the map's pointer to this process's element, valid (RCU) while the program
        // runs; its fields are plain integers. Two signals at once can leave either one as
        // `last`, both real.
        let open = unsafe { (*old).exit_ktime_ns == 0 };
        if open {
            // SAFETY: as above.
            unsafe {
                (*old).last = s;
                (*old).signals = (*old).signals.saturating_add(1);
            }
            return;
        }
    }
    // A target already in `do_exit` (a zombie) will not reach the exit hook again: an entry
    // now would keep the exit count up for nothing. (`SIGNAL_GROUP_EXIT` cannot say it: the
    // tracepoint fires after `complete_signal` set it for this very signal.) The classic
    // tracepoint has no task; its caller drops the SIGKILLs the kernel ignored instead.
    if let Some(target) = target {
        if target.flags().is_some_and(|flags| flags & PF_EXITING != 0) {
            return;
        }
    }
    // Counted before it is visible, as victims are (see `record::remember_victim`).
    add_awaiting_exit(ONE_SIGNALED);
    let state = SignalState {
        first: s,
        last: s,
        exit_ktime_ns: 0,
        signals: 1,
        _pad: 0,
    };
    let _ = SIGNALED.insert(tgid, state, 0);
}
