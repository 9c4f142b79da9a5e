//! `tp_btf/signal_generate`: the SIGKILL's target task, for kernels whose `mark_victim`
//! passes only a pid.
//!
//! Before Linux 6.8 `mark_victim` passes only the victim's pid. The OOM killer sends the
//! victim SIGKILL from the same thread right before it marks it (`__oom_kill_process`:
//! `do_send_sig_info` then `mark_oom_victim`), and `signal_generate` hands over the target
//! task: stash it so `mark_victim` can read the victim's cgroups, comm and uid when the pid
//! matches. On the `oom_kill_process` strategies it also tells a kill (`__oom_kill_process`:
//! SIGKILL, then `mark_victim`) from `task_will_free_mem`'s shortcut, which marks an exiting
//! victim without any signal.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::{
    kernel::Task,
    maps::{KilledTask, KILLED},
    record::{boot_ns, current_tid},
};

const SIGKILL: i32 = 9;

#[btf_tracepoint(function = "signal_generate")]
pub fn kill_signal_btf(ctx: BtfTracePointContext) -> i32 {
    // (int sig, struct kernel_siginfo *info, struct task_struct *task, int group, int result)
    let sig: u64 = ctx.arg(0);
    if sig as i32 != SIGKILL {
        return 0;
    }
    let task: u64 = ctx.arg(2);
    let Some(pid) = Task(task).pid() else {
        return 0;
    };
    let k = KilledTask {
        task,
        pid,
        _pad: 0,
        ktime_ns: boot_ns(),
    };
    let _ = KILLED.insert(current_tid(), k, 0);
    0
}
