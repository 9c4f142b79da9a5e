//! The one table of kernel offsets, and the [`KernelLayout`] it generates.
//!
//! Every offset the kernel programs read is declared once, in [`kernel_offsets!`]. The
//! table is expanded three times, each time by a callback macro:
//! - here, into the [`KernelLayout`] fields and the lookup lists [`KernelLayout::MEMBERS`]
//!   and [`KernelLayout::TRACEPOINT_FIELDS`];
//! - in the daemon, whose resolver walks those lists over the running kernel's BTF (and
//!   tracefs), and checks that each member is as wide as the program's read;
//! - in the kernel programs, into one typed accessor per row (`Task::pid`, `Css::parent`,
//!   `MarkVictimTp::pid`, ...).
//!
//! A row of `members` reads:
//! `field: View::method = kernel_struct.member[.member...] => kind arg;`
//! where a member may list the names it had in other kernels (`parent | __parent`), a
//! `.`-path goes into an embedded structure or the first element of an array, and `kind`
//! says what the program does at the offset:
//! - `read T`: reads a `T`; the member must be exactly `size_of::<T>()` bytes;
//! - `ptr View`: reads a kernel pointer (8 bytes) and views it, NULL being `None`;
//! - `nullable View`: the same, but NULL is a value (`Some(None)`);
//! - `embed View`: reads nothing; the member is a structure viewed in place;
//! - `elem T`: reads one element of an array of `T`;
//! - `manual T`: reads a `T` at an offset the program computes by hand (no accessor).
//!
//! A row of `tracepoints` reads `field: View::method = category/event.field => kind;` with
//! `read T`, `manual T` or `data_loc str` (a `__data_loc` string: a `u32` whose low half is the string's
//! place in the record).

use crate::ABSENT;

/// How a kernel program reads at an offset: what the resolver checks the member against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// A value of this many bytes at the offset: the member must be exactly as wide.
    Value(u32),
    /// One element of an array of elements of this many bytes.
    Element(u32),
    /// Nothing at the offset itself: it is where an embedded structure starts.
    Embedded,
}

/// One kernel structure member the programs read (a row of [`kernel_offsets!`]).
#[derive(Clone, Copy, Debug)]
pub struct Member {
    /// Name of its [`KernelLayout`] field.
    pub field: &'static str,
    /// The kernel structure (`struct NAME`).
    pub strukt: &'static str,
    /// The path from the structure to the member: each step lists the names the member has
    /// had in the kernels supported, first match wins.
    pub path: &'static [&'static [&'static str]],
    /// What the program reads there.
    pub read: Read,
    /// Its [`KernelLayout`] field.
    pub slot: fn(&mut KernelLayout) -> &mut u32,
}

/// One field of a classic tracepoint's record, whose offset comes from tracefs.
#[derive(Clone, Copy, Debug)]
pub struct TracepointField {
    /// Name of its [`KernelLayout`] field.
    pub field: &'static str,
    /// The tracepoint's category (`events/<category>/`).
    pub category: &'static str,
    /// The tracepoint's name.
    pub event: &'static str,
    /// The field's name in the tracepoint's `format`.
    pub name: &'static str,
    /// What the program reads there.
    pub read: Read,
    /// Its [`KernelLayout`] field.
    pub slot: fn(&mut KernelLayout) -> &mut u32,
}

/// Calls `$callback! { flags {..} derived {..} members {..} tracepoints {..} }` with the
/// table of every kernel offset the programs read (see the module's documentation for the
/// rows' grammar).
///
/// - `flags`: facts about the kernel, nonzero when true (0 when unknown).
/// - `derived`: values the daemon computes by hand (enumerators, the architecture's
///   registers, sums over several members), [`ABSENT`] when unknown.
/// - `members`: structure members, each resolved from BTF and checked against its read.
/// - `tracepoints`: classic tracepoints' record fields, from tracefs.
#[macro_export]
macro_rules! kernel_offsets {
    ($callback:ident) => {
        $callback! {
            flags {
                /// Nonzero when the offsets below were resolved (BTF was available).
                have_btf,
                /// Nonzero when the memory controller is on the unified (v2) hierarchy.
                memory_on_dfl,
                /// Nonzero when `tp_btf/sched_process_exit` passes `group_dead` as its second
                /// argument.
                tp_btf_exit_has_group_dead,
                /// Nonzero when `tp_btf/mark_victim` passes `struct task_struct *` (Linux 6.8+),
                /// zero when it passes only `int pid`.
                tp_btf_victim_is_task,
            }
            derived {
                /// `memory_cgrp_id`: index of the memory controller in `css_set.subsys[]`.
                memory_cgrp_id,
                /// Offset in `struct pt_regs` of the register that carries a function's first
                /// argument (kprobes): `di` on x86_64, `regs[0]` on arm64. It depends on the
                /// kernel's architecture, which one object file for every architecture cannot
                /// know when it is built.
                kprobe_arg0,
                /// `sizeof(struct upid)`, the stride of `pid.numbers[]`.
                upid_size,
                /// The counter of `MM_FILEPAGES` in `mm_struct.rss_stat` (the `atomic_long_t` of
                /// 5.x's `count[]`, or the `.count` of 6.2+'s `percpu_counter`).
                mm_file_rss,
                /// The counter of `MM_ANONPAGES`.
                mm_anon_rss,
                /// The counter of `MM_SWAPENTS`.
                mm_swap_ents,
                /// The counter of `MM_SHMEMPAGES`.
                mm_shmem_rss,
            }
            members {
                /// `oom_control.memcg`: NULL for a global OOM.
                oc_memcg: OomControl::memcg = oom_control.memcg => nullable MemCgroup;
                /// `oom_control.chosen`: the victim.
                oc_chosen: OomControl::chosen = oom_control.chosen => ptr Task;
                /// `oom_control.constraint`.
                oc_constraint: OomControl::constraint = oom_control.constraint => read u32;
                /// `oom_control.totalpages`: the OOM domain's size, in pages.
                oc_totalpages: OomControl::total_pages = oom_control.totalpages => read u64;
                /// `oom_control.chosen_points`: the chosen victim's badness.
                oc_chosen_points: OomControl::chosen_points = oom_control.chosen_points => read i64;
                /// `task_struct.pid` (the thread id).
                task_pid: Task::pid = task_struct.pid => read u32;
                /// `task_struct.tgid` (the process id).
                task_tgid: Task::tgid = task_struct.tgid => read u32;
                /// `task_struct.comm`.
                task_comm: Task::comm = task_struct.comm => read [u8; 16];
                /// `task_struct.real_cred`.
                task_real_cred: Task::real_cred = task_struct.real_cred => ptr Cred;
                /// `task_struct.cgroups` (RCU).
                task_cgroups: Task::css_set = task_struct.cgroups => ptr CssSet;
                /// `task_struct.exit_code`.
                task_exit_code: Task::exit_code = task_struct.exit_code => read i32;
                /// `task_struct.mm`: NULL for a kernel thread or a task past `exit_mm`.
                task_mm: Task::mm = task_struct.mm => ptr Mm;
                /// `task_struct.signal`.
                task_signal: Task::signal = task_struct.signal => ptr Signal;
                /// `task_struct.group_leader`: the task whose pid is the process id.
                task_group_leader: Task::group_leader = task_struct.group_leader => ptr Task;
                /// `task_struct.thread_pid` (`struct pid *`).
                task_thread_pid: Task::thread_pid = task_struct.thread_pid => ptr Pid;
                /// `task_struct.flags` (`PF_*`).
                task_flags: Task::flags = task_struct.flags => read u32;
                /// `cred.uid`: `kuid_t` is `struct { uid_t val; }`, the uid is at its start.
                cred_uid: Cred::uid = cred.uid => read u32;
                /// `css_set.dfl_cgrp`: the task's cgroup in the unified hierarchy.
                css_set_dfl_cgrp: CssSet::dfl_cgroup = css_set.dfl_cgrp => ptr Cgroup;
                /// `css_set.subsys[]` (`struct cgroup_subsys_state *`, by controller id).
                css_set_subsys: CssSet::subsys = css_set.subsys => elem u64;
                /// `cgroup_subsys_state.cgroup`.
                css_cgroup: Css::cgroup = cgroup_subsys_state.cgroup => ptr Cgroup;
                /// `cgroup_subsys_state.parent`: NULL at the root.
                css_parent: Css::parent = cgroup_subsys_state.parent => ptr Css;
                /// `mem_cgroup.css`.
                memcg_css: MemCgroup::css = mem_cgroup.css => embed Css;
                /// `mem_cgroup.oom_lock` (`bool`, cgroup v1): held on the OOM memcg's subtree
                /// while the OOM killer runs.
                memcg_oom_lock: MemCgroup::oom_lock = mem_cgroup.oom_lock => read u8;
                /// `mem_cgroup.memory` (`struct page_counter`).
                memcg_memory: MemCgroup::memory = mem_cgroup.memory => embed PageCounter;
                /// `mem_cgroup.swap` (`struct page_counter`; memory + swap on cgroup v1).
                memcg_swap: MemCgroup::swap = mem_cgroup.swap => embed PageCounter;
                /// `page_counter.usage` (`atomic_long_t`), in pages.
                page_counter_usage: PageCounter::usage = page_counter.usage => read u64;
                /// `page_counter.max`, in pages.
                page_counter_max: PageCounter::max = page_counter.max => read u64;
                /// `cgroup.kn`.
                cgroup_kn: Cgroup::kn = cgroup.kn => ptr KernfsNode;
                /// `kernfs_node.id`: a cgroup's id, its directory's inode number.
                kn_id: KernfsNode::id = kernfs_node.id => read u64;
                /// `signal_struct.oom_score_adj` (`short`).
                signal_oom_score_adj: Signal::oom_score_adj = signal_struct.oom_score_adj => read i16;
                /// `signal_struct.flags` (`SIGNAL_*`).
                signal_flags: Signal::flags = signal_struct.flags => read u32;
                /// `pid.level`: the depth of the pid's namespace.
                pid_level: Pid::level = pid.level => read u32;
                /// `pid.numbers[0].nr`; the program adds `level * upid_size`.
                pid_numbers_nr: Pid::numbers_nr = pid.numbers.nr => manual u32;
                /// `mm_struct.total_vm`, in pages.
                mm_total_vm: Mm::total_vm = mm_struct.total_vm => read u64;
                /// `mm_struct.pgtables_bytes` (`atomic_long_t`).
                mm_pgtables_bytes: Mm::pgtables_bytes = mm_struct.pgtables_bytes => read i64;
            }
            tracepoints {
                /// Classic tracepoint `oom/mark_victim`: offset of `pid`.
                tp_victim_pid: MarkVictimTp::pid = oom/mark_victim.pid => read i32;
                /// Classic tracepoint `oom/mark_victim`: offset of `__data_loc comm`, or ABSENT.
                tp_victim_comm: MarkVictimTp::comm = oom/mark_victim.comm => data_loc str;
                /// Classic tracepoint `oom/mark_victim`: offset of `uid`, or ABSENT.
                tp_victim_uid: MarkVictimTp::uid = oom/mark_victim.uid => read u32;
                /// Classic tracepoint `sched/sched_process_exit`: offset of `pid` (the program
                /// takes the pid from the helper; kept for the record's layout).
                tp_exit_pid: ExitTp::pid = sched/sched_process_exit.pid => manual i32;
                /// Classic tracepoint `sched/sched_process_exit`: offset of `group_dead`, or
                /// ABSENT.
                tp_exit_group_dead: ExitTp::group_dead = sched/sched_process_exit.group_dead => read u8;
                /// Classic tracepoint `cgroup/cgroup_mkdir`: offset of `root`.
                tp_mkdir_root: MkdirTp::root = cgroup/cgroup_mkdir.root => read i32;
                /// Classic tracepoint `cgroup/cgroup_mkdir`: offset of `id`.
                tp_mkdir_id: MkdirTp::id = cgroup/cgroup_mkdir.id => read u64;
                /// Classic tracepoint `cgroup/cgroup_mkdir`: offset of `level`.
                tp_mkdir_level: MkdirTp::level = cgroup/cgroup_mkdir.level => read i32;
                /// Classic tracepoint `cgroup/cgroup_mkdir`: offset of `__data_loc path`.
                tp_mkdir_path: MkdirTp::path = cgroup/cgroup_mkdir.path => data_loc str;
                /// Classic tracepoint `signal/signal_generate`: offset of `sig`.
                tp_signal_sig: SignalTp::sig = signal/signal_generate.sig => read i32;
                /// Classic tracepoint `signal/signal_generate`: offset of `code` (the
                /// `si_code`, with `SI_USER` and `SI_KERNEL` for the kernel's two non-pointers).
                tp_signal_code: SignalTp::code = signal/signal_generate.code => read i32;
                /// Classic tracepoint `signal/signal_generate`: offset of `pid`, the target
                /// thread's id (the record has no process id).
                tp_signal_pid: SignalTp::pid = signal/signal_generate.pid => read i32;
                /// Classic tracepoint `signal/signal_generate`: offset of `group`.
                tp_signal_group: SignalTp::group = signal/signal_generate.group => read i32;
                /// Classic tracepoint `signal/signal_generate`: offset of `result`.
                tp_signal_result: SignalTp::result = signal/signal_generate.result => read i32;
            }
        }
    };
}

/// The [`Read`] of a row's kind.
macro_rules! read_of {
    (read $t:ty) => {
        Read::Value(::core::mem::size_of::<$t>() as u32)
    };
    (manual $t:ty) => {
        Read::Value(::core::mem::size_of::<$t>() as u32)
    };
    (ptr $view:ident) => {
        Read::Value(::core::mem::size_of::<u64>() as u32)
    };
    (nullable $view:ident) => {
        Read::Value(::core::mem::size_of::<u64>() as u32)
    };
    (elem $t:ty) => {
        Read::Element(::core::mem::size_of::<$t>() as u32)
    };
    (embed $view:ident) => {
        Read::Embedded
    };
    (data_loc str) => {
        Read::Value(::core::mem::size_of::<u32>() as u32)
    };
}

/// The callback that turns the table into [`KernelLayout`] and its lookup lists.
macro_rules! define_kernel_layout {
    (
        flags { $( $(#[$fdoc:meta])* $flag:ident, )* }
        derived { $( $(#[$ddoc:meta])* $derived:ident, )* }
        members { $(
            $(#[$mdoc:meta])*
            $member:ident : $mview:ident :: $mmethod:ident =
                $strukt:ident $( . $($alt:ident)|+ )+ => $mkind:ident $marg:tt ;
        )* }
        tracepoints { $(
            $(#[$tdoc:meta])*
            $tp:ident : $tview:ident :: $tmethod:ident =
                $category:ident / $event:ident . $tfield:ident => $tkind:ident $targ:tt ;
        )* }
    ) => {
        /// Kernel structure layout, computed by the daemon from the running kernel's BTF when
        /// the programs load, and handed to them as a read-only global. This is how one object
        /// file serves every kernel: no offset here comes from a header of one kernel.
        /// Every offset is in bytes; [`ABSENT`] means the field does not exist, or is not as
        /// wide as the program's read (the program then does not read it).
        #[repr(C)]
        #[derive(Clone, Copy, Debug)]
        pub struct KernelLayout {
            $( $(#[$fdoc])* pub $flag: u32, )*
            $( $(#[$ddoc])* pub $derived: u32, )*
            $( $(#[$mdoc])* pub $member: u32, )*
            $( $(#[$tdoc])* pub $tp: u32, )*
        }

        impl KernelLayout {
            /// A layout that knows nothing: every field absent. Programs then report only what
            /// their hook hands them directly.
            pub const fn unknown() -> Self {
                KernelLayout {
                    $( $flag: 0, )*
                    $( $derived: ABSENT, )*
                    $( $member: ABSENT, )*
                    $( $tp: ABSENT, )*
                }
            }

            /// Every structure member of the table, for the BTF resolver.
            pub const MEMBERS: &'static [Member] = &[ $(
                Member {
                    field: stringify!($member),
                    strukt: stringify!($strukt),
                    path: &[ $( &[ $( stringify!($alt) ),+ ] ),+ ],
                    read: read_of!($mkind $marg),
                    slot: |l| &mut l.$member,
                },
            )* ];

            /// Every tracepoint record field of the table, for the tracefs resolver.
            pub const TRACEPOINT_FIELDS: &'static [TracepointField] = &[ $(
                TracepointField {
                    field: stringify!($tp),
                    category: stringify!($category),
                    event: stringify!($event),
                    name: stringify!($tfield),
                    read: read_of!($tkind $targ),
                    slot: |l| &mut l.$tp,
                },
            )* ];
        }
    };
}

kernel_offsets!(define_kernel_layout);
