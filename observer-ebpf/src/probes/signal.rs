//! `tp_btf/signal_generate`: every fatal signal and its sender, and the SIGKILL's target
//! task for kernels whose `mark_victim` passes only a pid.
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

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use observer_common::{is_fatal_signal, FatalSignal, SignalState, PF_EXITING};

use crate::{
    kernel::Task,
    maps::{KilledTask, KILLED, SIGNALED},
    record::{add_awaiting_exit, boot_ns, current_tid, ONE_SIGNALED},
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
    record_fatal(Task(task), sig, info, group as u32 & 1, result as u32);
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

/// Keeps `sig` to `target` in [`SIGNALED`]: the first and the latest per process.
#[inline(always)]
fn record_fatal(target: Task, sig: u32, info: u64, group: u32, result: u32) {
    let Some(tgid) = target.tgid() else {
        return;
    };
    if tgid == 0 {
        return;
    }
    let id = bpf_get_current_pid_tgid();
    let me = Task::current();
    let mut s = FatalSignal {
        ktime_ns: boot_ns(),
        sig,
        code: si_code(info),
        sender_pid: id as u32,
        sender_tgid: (id >> 32) as u32,
        target_pid: target.pid().unwrap_or(0),
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
    }
    if let Ok(comm) = bpf_get_current_comm() {
        s.sender_comm = comm;
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
    // tracepoint fires after `complete_signal` set it for this very signal.)
    if target.flags().is_some_and(|flags| flags & PF_EXITING != 0) {
        return;
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
