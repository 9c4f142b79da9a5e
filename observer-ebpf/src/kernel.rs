//! Typed views of the kernel structures the programs read, over the offsets in
//! [`crate::maps::LAYOUT`]: each newtype wraps a kernel pointer and each method reads one field, so a
//! read says what it reads (`task.css_set()?.dfl_cgroup()?.id()`). A method returns `None`
//! when the field is absent from this kernel (its offset is [`ABSENT`]) or unreadable.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel, bpf_probe_read_kernel_buf};
use observer_common::{ABSENT, COMM_LEN};

/// Reads one field of [`crate::maps::LAYOUT`]; volatile so the compiler cannot fold the loader's value away.
macro_rules! layout {
    ($field:ident) => {
        unsafe { core::ptr::read_volatile(&$crate::maps::LAYOUT.$field) }
    };
}
pub(crate) use layout;

/// Reads a `T` at `base + off` in kernel memory; `None` when the field is absent or unreadable.
#[inline(always)]
pub fn read_at<T>(base: u64, off: u32) -> Option<T> {
    if base == 0 || off == ABSENT {
        return None;
    }
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T).ok() }
}

/// Reads a kernel pointer at `base + off`; `None` also when it is NULL.
#[inline(always)]
fn read_ptr(base: u64, off: u32) -> Option<u64> {
    match read_at::<u64>(base, off) {
        Some(p) if p != 0 => Some(p),
        _ => None,
    }
}

/// `struct task_struct *`.
#[derive(Clone, Copy)]
pub struct Task(pub u64);

impl Task {
    /// The task running this program.
    #[inline(always)]
    pub fn current() -> Task {
        Task(unsafe { bpf_get_current_task() })
    }

    /// `task->pid` (the thread id).
    #[inline(always)]
    pub fn pid(self) -> Option<u32> {
        read_at(self.0, layout!(task_pid))
    }

    /// `task->tgid` (the process id).
    #[inline(always)]
    pub fn tgid(self) -> Option<u32> {
        read_at(self.0, layout!(task_tgid))
    }

    /// Copies `task->comm` into `out`; false when it could not be read.
    #[inline(always)]
    pub fn read_comm(self, out: &mut [u8; COMM_LEN]) -> bool {
        let off = layout!(task_comm);
        off != ABSENT
            && self.0 != 0
            && unsafe { bpf_probe_read_kernel_buf((self.0 + off as u64) as *const u8, out) }.is_ok()
    }

    /// `task->real_cred->uid`.
    #[inline(always)]
    pub fn real_uid(self) -> Option<u32> {
        let cred = read_ptr(self.0, layout!(task_real_cred))?;
        // kuid_t is `struct { uid_t val; }`: the uid is at the member's own offset.
        read_at(cred, layout!(cred_uid))
    }

    /// `task->cgroups`.
    #[inline(always)]
    pub fn css_set(self) -> Option<CssSet> {
        read_ptr(self.0, layout!(task_cgroups)).map(CssSet)
    }

    /// The task's memory-controller css (`task->cgroups->subsys[memory_cgrp_id]`).
    #[inline(always)]
    pub fn memory_css(self) -> Option<Css> {
        self.css_set()?.memory_css()
    }

    /// `task->exit_code`.
    #[inline(always)]
    pub fn exit_code(self) -> Option<i32> {
        read_at(self.0, layout!(task_exit_code))
    }

    /// `task->mm`; `None` for a kernel thread or a task past `exit_mm`.
    #[inline(always)]
    pub fn mm(self) -> Option<Mm> {
        read_ptr(self.0, layout!(task_mm)).map(Mm)
    }

    /// `task->flags` (`PF_*`).
    #[inline(always)]
    pub fn flags(self) -> Option<u32> {
        read_at(self.0, layout!(task_flags))
    }

    /// `task->signal->flags` (`SIGNAL_*`).
    #[inline(always)]
    pub fn signal_flags(self) -> Option<u32> {
        let signal = read_ptr(self.0, layout!(task_signal))?;
        read_at(signal, layout!(signal_flags))
    }

    /// `task->signal->oom_score_adj`.
    #[inline(always)]
    pub fn oom_score_adj(self) -> Option<i16> {
        let signal = read_ptr(self.0, layout!(task_signal))?;
        read_at(signal, layout!(signal_oom_score_adj))
    }

    /// `task->group_leader`: the task whose pid is the process id.
    #[inline(always)]
    pub fn group_leader(self) -> Option<Task> {
        read_ptr(self.0, layout!(task_group_leader)).map(Task)
    }

    /// The task's pid as its own pid namespace numbers it, and that namespace's depth:
    /// `thread_pid->numbers[thread_pid->level].nr`.
    #[inline(always)]
    pub fn ns_pid(self) -> Option<(u32, u32)> {
        let pid = read_ptr(self.0, layout!(task_thread_pid))?;
        let level: u32 = read_at(pid, layout!(pid_level))?;
        let (nr_off, stride) = (layout!(pid_numbers_nr), layout!(upid_size));
        // MAX_PID_NS_LEVEL is 32.
        if nr_off == ABSENT || stride == ABSENT || level >= 32 || stride > 64 {
            return None;
        }
        let nr: u32 = read_at(pid, nr_off + level * stride)?;
        Some((nr, level))
    }
}

/// `struct css_set *`.
#[derive(Clone, Copy)]
pub struct CssSet(u64);

impl CssSet {
    /// `cset->dfl_cgrp`: the task's cgroup in the unified hierarchy.
    #[inline(always)]
    pub fn dfl_cgroup(self) -> Option<Cgroup> {
        read_ptr(self.0, layout!(css_set_dfl_cgrp)).map(Cgroup)
    }

    /// `cset->subsys[memory_cgrp_id]`.
    #[inline(always)]
    pub fn memory_css(self) -> Option<Css> {
        let idx = layout!(memory_cgrp_id);
        let base = layout!(css_set_subsys);
        if idx == ABSENT || base == ABSENT || idx >= 64 {
            return None;
        }
        read_at::<u64>(self.0, base + idx * 8).map(Css)
    }
}

/// `struct cgroup_subsys_state *`.
#[derive(Clone, Copy)]
pub struct Css(pub u64);

impl Css {
    /// `css->cgroup`.
    #[inline(always)]
    pub fn cgroup(self) -> Option<Cgroup> {
        read_ptr(self.0, layout!(css_cgroup)).map(Cgroup)
    }

    /// `css->parent`, or `None` at the root.
    #[inline(always)]
    pub fn parent(self) -> Option<Css> {
        read_ptr(self.0, layout!(css_parent)).map(Css)
    }

    /// The id of the css's cgroup.
    #[inline(always)]
    pub fn cgroup_id(self) -> Option<u64> {
        self.cgroup()?.id()
    }

    /// The `struct mem_cgroup` a memory css is embedded in (`container_of`).
    #[inline(always)]
    pub fn mem_cgroup(self) -> Option<MemCgroup> {
        let off = layout!(memcg_css);
        if off == ABSENT || self.0 == 0 {
            return None;
        }
        Some(MemCgroup(self.0 - off as u64))
    }
}

/// `struct cgroup *`.
#[derive(Clone, Copy)]
pub struct Cgroup(u64);

impl Cgroup {
    /// The cgroup id: `cgrp->kn->id`, its directory's inode number.
    #[inline(always)]
    pub fn id(self) -> Option<u64> {
        let kn = read_ptr(self.0, layout!(cgroup_kn))?;
        read_at(kn, layout!(kn_id))
    }
}

/// `struct mem_cgroup *`.
#[derive(Clone, Copy)]
pub struct MemCgroup(pub u64);

impl MemCgroup {
    /// `&memcg->css`.
    #[inline(always)]
    pub fn css(self) -> Option<Css> {
        let off = layout!(memcg_css);
        if off == ABSENT || self.0 == 0 {
            return None;
        }
        Some(Css(self.0 + off as u64))
    }

    /// The id of the memcg's cgroup.
    #[inline(always)]
    pub fn cgroup_id(self) -> Option<u64> {
        self.css()?.cgroup_id()
    }

    /// `memcg->memory`: (usage, max) of its page counter, in pages.
    #[inline(always)]
    pub fn memory_counter(self) -> Option<(u64, u64)> {
        page_counter(self.0, layout!(memcg_memory))
    }

    /// `memcg->swap`: (usage, max) of the swap page counter (cgroup v2), in pages.
    #[inline(always)]
    pub fn swap_counter(self) -> Option<(u64, u64)> {
        page_counter(self.0, layout!(memcg_swap))
    }

    /// `memcg->oom_lock` (cgroup v1): held on the OOM memcg's subtree while the OOM killer runs.
    #[inline(always)]
    pub fn oom_locked(self) -> Option<bool> {
        read_at::<u8>(self.0, layout!(memcg_oom_lock)).map(|b| b != 0)
    }
}

/// (usage, max) of the `struct page_counter` at `base + off`.
#[inline(always)]
fn page_counter(base: u64, off: u32) -> Option<(u64, u64)> {
    if off == ABSENT || base == 0 {
        return None;
    }
    let pc = base + off as u64;
    Some((
        read_at(pc, layout!(page_counter_usage))?,
        read_at(pc, layout!(page_counter_max))?,
    ))
}

/// `struct mm_struct *`.
#[derive(Clone, Copy)]
pub struct Mm(u64);

impl Mm {
    /// `mm->total_vm`, in pages.
    #[inline(always)]
    pub fn total_vm(self) -> Option<u64> {
        read_at(self.0, layout!(mm_total_vm))
    }

    /// (file, anon, swap entries, shmem) of `mm->rss_stat`, in pages, as `get_mm_counter()`
    /// reads them (on 6.2+ the per-CPU counters' central value).
    #[inline(always)]
    pub fn rss(self) -> Option<(i64, i64, i64, i64)> {
        Some((
            read_at(self.0, layout!(mm_file_rss))?,
            read_at(self.0, layout!(mm_anon_rss))?,
            read_at(self.0, layout!(mm_swap_ents))?,
            read_at(self.0, layout!(mm_shmem_rss))?,
        ))
    }

    /// `mm->pgtables_bytes`.
    #[inline(always)]
    pub fn pgtables_bytes(self) -> Option<i64> {
        read_at(self.0, layout!(mm_pgtables_bytes))
    }
}

/// `struct oom_control *`, the OOM killer's argument.
#[derive(Clone, Copy)]
pub struct OomControl(pub u64);

impl OomControl {
    /// `oc->memcg`: the memcg whose limit was hit; `Some(None)` for a global OOM.
    #[inline(always)]
    pub fn memcg(self) -> Option<Option<MemCgroup>> {
        let p: u64 = read_at(self.0, layout!(oc_memcg))?;
        Some((p != 0).then_some(MemCgroup(p)))
    }

    /// `oc->chosen`: the victim.
    #[inline(always)]
    pub fn chosen(self) -> Option<Task> {
        read_ptr(self.0, layout!(oc_chosen)).map(Task)
    }

    /// `oc->totalpages`: the OOM domain's size, in pages.
    #[inline(always)]
    pub fn total_pages(self) -> Option<u64> {
        read_at(self.0, layout!(oc_totalpages))
    }

    /// `oc->chosen_points`: the chosen victim's badness.
    #[inline(always)]
    pub fn chosen_points(self) -> Option<i64> {
        read_at(self.0, layout!(oc_chosen_points))
    }

    /// `oc->constraint`.
    #[inline(always)]
    pub fn constraint(self) -> Option<u32> {
        read_at(self.0, layout!(oc_constraint))
    }
}
