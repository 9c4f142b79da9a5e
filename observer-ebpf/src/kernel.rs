//! Typed views of the kernel structures the programs read, over the offsets in
//! [`crate::maps::LAYOUT`]: each newtype wraps a kernel pointer and each method reads one field, so a
//! read says what it reads (`task.css_set()?.dfl_cgroup()?.id()`). A method returns `None`
//! when the field is absent from this kernel (its offset is [`ABSENT`]: missing, or not as
//! wide as the read) or unreadable.
//!
//! The one-field methods are generated from the offsets table (`observer_common::kernel_offsets!`),
//! the row that also declares the layout field and the daemon's BTF lookup; the methods
//! written here combine them.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
use observer_common::{ABSENT, COMM_LEN};

/// Reads one field of [`crate::maps::LAYOUT`]; volatile so the compiler cannot fold the loader's value away.
macro_rules! layout {
    ($field:ident) => {
        // SAFETY: a reference to a field of a static is valid and aligned for its read; the
        // loader fills the static before the program runs and nothing writes it after.
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
    // SAFETY: `bpf_probe_read_kernel` copies with fault handling, so any address is sound to
    // pass; the table's resolver checked that the field is `size_of::<T>()` bytes, and every
    // `T` read here is a plain integer (or byte array), valid for any bits.
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

/// No array the programs index (`css_set.subsys[]`) has more elements than this.
const MAX_INDEX: u32 = 64;

/// One method per row of the offsets table's `members` (see `observer_common::kernel_offsets!`).
macro_rules! member_accessors {
    (
        flags { $($flags:tt)* }
        derived { $($derived:tt)* }
        members { $(
            $(#[$doc:meta])*
            $field:ident : $view:ident :: $method:ident =
                $strukt:ident $( . $($alt:ident)|+ )+ => $kind:ident $arg:tt ;
        )* }
        tracepoints { $($tracepoints:tt)* }
    ) => {
        $( member_accessor!($(#[$doc])* $field $view $method $kind $arg); )*
    };
}

/// The method of one row, by what the program does at the offset.
macro_rules! member_accessor {
    ($(#[$doc:meta])* $field:ident $view:ident $method:ident read $t:ty) => {
        impl $view {
            $(#[$doc])*
            #[inline(always)]
            pub fn $method(self) -> Option<$t> {
                read_at(self.0, layout!($field))
            }
        }
    };
    ($(#[$doc:meta])* $field:ident $view:ident $method:ident ptr $target:ident) => {
        impl $view {
            $(#[$doc])*
            #[inline(always)]
            pub fn $method(self) -> Option<$target> {
                read_ptr(self.0, layout!($field)).map($target)
            }
        }
    };
    ($(#[$doc:meta])* $field:ident $view:ident $method:ident nullable $target:ident) => {
        impl $view {
            $(#[$doc])*
            /// `Some(None)` when it is NULL.
            #[inline(always)]
            pub fn $method(self) -> Option<Option<$target>> {
                let p: u64 = read_at(self.0, layout!($field))?;
                Some((p != 0).then_some($target(p)))
            }
        }
    };
    ($(#[$doc:meta])* $field:ident $view:ident $method:ident embed $target:ident) => {
        impl $view {
            $(#[$doc])*
            #[inline(always)]
            pub fn $method(self) -> Option<$target> {
                let off = layout!($field);
                if off == ABSENT || self.0 == 0 {
                    return None;
                }
                Some($target(self.0 + off as u64))
            }
        }
    };
    ($(#[$doc:meta])* $field:ident $view:ident $method:ident elem $t:ty) => {
        impl $view {
            $(#[$doc])*
            #[inline(always)]
            pub fn $method(self, i: u32) -> Option<$t> {
                let base = layout!($field);
                if base == ABSENT || i >= MAX_INDEX {
                    return None;
                }
                read_at(self.0, base + i * core::mem::size_of::<$t>() as u32)
            }
        }
    };
    // Read at an offset the program computes itself (see the methods below).
    ($(#[$doc:meta])* $field:ident $view:ident $method:ident manual $t:ty) => {};
}

observer_common::kernel_offsets!(member_accessors);

/// `struct task_struct *`.
#[derive(Clone, Copy)]
pub struct Task(pub u64);

/// `struct cred *`.
#[derive(Clone, Copy)]
pub struct Cred(u64);

/// `struct signal_struct *`.
#[derive(Clone, Copy)]
pub struct Signal(u64);

/// `struct pid *`.
#[derive(Clone, Copy)]
pub struct Pid(u64);

/// `struct css_set *`.
#[derive(Clone, Copy)]
pub struct CssSet(u64);

/// `struct cgroup_subsys_state *`.
#[derive(Clone, Copy)]
pub struct Css(pub u64);

/// `struct cgroup *`.
#[derive(Clone, Copy)]
pub struct Cgroup(u64);

/// `struct kernfs_node *`.
#[derive(Clone, Copy)]
pub struct KernfsNode(u64);

/// `struct mem_cgroup *`.
#[derive(Clone, Copy)]
pub struct MemCgroup(pub u64);

/// `struct page_counter *`.
#[derive(Clone, Copy)]
pub struct PageCounter(u64);

/// `struct mm_struct *`.
#[derive(Clone, Copy)]
pub struct Mm(u64);

/// `struct oom_control *`, the OOM killer's argument.
#[derive(Clone, Copy)]
pub struct OomControl(pub u64);

/// `struct pt_regs *`, a kprobe's registers.
#[derive(Clone, Copy)]
pub struct PtRegs(pub u64);

impl Task {
    /// The task running this program.
    #[inline(always)]
    pub fn current() -> Task {
        // SAFETY: the helper takes no argument and returns an address, used only as a base
        // for probe reads.
        Task(unsafe { bpf_get_current_task() })
    }

    /// Copies `task->comm` into `out`; false when it could not be read.
    #[inline(always)]
    pub fn read_comm(self, out: &mut [u8; COMM_LEN]) -> bool {
        match self.comm() {
            Some(comm) => {
                *out = comm;
                true
            }
            None => false,
        }
    }

    /// `task->real_cred->uid`.
    #[inline(always)]
    pub fn real_uid(self) -> Option<u32> {
        self.real_cred()?.uid()
    }

    /// The task's memory-controller css (`task->cgroups->subsys[memory_cgrp_id]`).
    #[inline(always)]
    pub fn memory_css(self) -> Option<Css> {
        self.css_set()?.memory_css()
    }

    /// `task->signal->flags` (`SIGNAL_*`).
    #[inline(always)]
    pub fn signal_flags(self) -> Option<u32> {
        self.signal()?.flags()
    }

    /// `task->signal->oom_score_adj`.
    #[inline(always)]
    pub fn oom_score_adj(self) -> Option<i16> {
        self.signal()?.oom_score_adj()
    }

    /// The task's pid as its own pid namespace numbers it, and that namespace's depth:
    /// `thread_pid->numbers[thread_pid->level].nr`.
    #[inline(always)]
    pub fn ns_pid(self) -> Option<(u32, u32)> {
        let pid = self.thread_pid()?;
        let level = pid.level()?;
        let (nr_off, stride) = (layout!(pid_numbers_nr), layout!(upid_size));
        // MAX_PID_NS_LEVEL is 32.
        if nr_off == ABSENT || stride == ABSENT || level >= 32 || stride > 64 {
            return None;
        }
        let nr: u32 = read_at(pid.0, nr_off + level * stride)?;
        Some((nr, level))
    }
}

impl CssSet {
    /// `cset->subsys[memory_cgrp_id]`.
    #[inline(always)]
    pub fn memory_css(self) -> Option<Css> {
        let idx = layout!(memory_cgrp_id);
        if idx == ABSENT {
            return None;
        }
        self.subsys(idx).map(Css)
    }
}

impl Css {
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

impl Cgroup {
    /// The cgroup id: `cgrp->kn->id`, its directory's inode number.
    #[inline(always)]
    pub fn id(self) -> Option<u64> {
        self.kn()?.id()
    }
}

impl MemCgroup {
    /// The id of the memcg's cgroup.
    #[inline(always)]
    pub fn cgroup_id(self) -> Option<u64> {
        self.css()?.cgroup_id()
    }

    /// `memcg->memory`: (usage, max) of its page counter, in pages.
    #[inline(always)]
    pub fn memory_counter(self) -> Option<(u64, u64)> {
        self.memory()?.usage_max()
    }

    /// `memcg->swap`: (usage, max) of the swap page counter (cgroup v2), in pages.
    #[inline(always)]
    pub fn swap_counter(self) -> Option<(u64, u64)> {
        self.swap()?.usage_max()
    }

    /// `memcg->oom_lock` (cgroup v1): held on the OOM memcg's subtree while the OOM killer runs.
    #[inline(always)]
    pub fn oom_locked(self) -> Option<bool> {
        self.oom_lock().map(|b| b != 0)
    }
}

impl PageCounter {
    /// (usage, max), in pages.
    #[inline(always)]
    fn usage_max(self) -> Option<(u64, u64)> {
        Some((self.usage()?, self.max()?))
    }
}

impl Mm {
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
}

impl PtRegs {
    /// The probed function's first argument, from the register the running kernel's
    /// architecture passes it in.
    #[inline(always)]
    pub fn arg0(self) -> Option<u64> {
        read_at(self.0, layout!(kprobe_arg0))
    }
}
