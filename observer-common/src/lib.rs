//! Types shared by the kernel programs (`observer-ebpf`) and the daemon (`observer`).
//!
//! Everything here is `#[repr(C)]` plain data: the kernel writes these records into the
//! ring buffer and the daemon reads them back byte for byte, so both sides must agree on
//! the layout. Nothing here allocates; the crate is `no_std`.
#![no_std]

/// Offset value meaning "this field does not exist in the running kernel".
pub const ABSENT: u32 = u32::MAX;

mod layout;
pub use layout::{KernelLayout, Member, Read, TracepointField};

/// Length of a task's `comm` in the kernel (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;

/// Longest cgroup path the kernel copies into a `cgroup_mkdir` record; longer ones are
/// cut and flagged, and the daemon then resolves them from the filesystem instead.
pub const CGROUP_PATH_LEN: usize = 256;

/// Defines a `#[repr(u32)]` enum whose values cross the kernel/user boundary as `u32`, with
/// its JSON name, and the checked conversion back from the raw value a record carries.
macro_rules! abi_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $value:expr => $str:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant = $value, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name used in logs and in the JSON events.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $str, )+
                }
            }

            /// The value a record carries for a raw `u32`, or `None` for one this build does
            /// not know (an object/daemon mismatch, or "not seen").
            pub const fn from_u32(v: u32) -> Option<Self> {
                match v {
                    $( x if x == $value => Some($name::$variant), )+
                    _ => None,
                }
            }
        }

        impl TryFrom<u32> for $name {
            type Error = u32;
            fn try_from(v: u32) -> Result<Self, u32> {
                Self::from_u32(v).ok_or(v)
            }
        }

        impl From<$name> for u32 {
            fn from(v: $name) -> u32 {
                v as u32
            }
        }
    };
}

abi_enum! {
    /// Record kinds, the first field of every ring-buffer record.
    pub enum RecordKind {
        /// A process chosen and killed by the OOM killer ([`OomKillRecord`]).
        OomKill = 1 => "oom_kill",
        /// A memory cgroup that hit OOM and is waiting instead of killing ([`OomKillRecord`]).
        MemcgOom = 2 => "memcg_oom",
        /// A cgroup was created ([`CgroupMkdirRecord`]).
        CgroupMkdir = 3 => "cgroup_mkdir",
        /// An OOM victim's process exited ([`OomKillRecord`] with `exit_code`).
        VictimExit = 4 => "victim_exit",
        /// A process moved into a cgroup of the memory hierarchy ([`CgroupAttachRecord`]).
        CgroupAttach = 5 => "cgroup_attach",
        /// The OOM killer chose a victim (`oom_kill_process` entry, fentry/kprobe only): before
        /// its report is printed and before any SIGKILL ([`OomKillRecord`], the victim is
        /// `oom_control.chosen`, `ktime_ns` is the incident id).
        OomDecision = 6 => "oom_decision",
        /// A decision the OOM killer did not carry out: the victim was already exiting
        /// (`task_will_free_mem`: marked without a signal) or had no memory left to kill for
        /// (`__oom_kill_process`' early return). [`OomKillRecord`]; from `oom_kill_process`'
        /// return only the hook, `victim_pid` and the incident are filled.
        OomSkipped = 7 => "oom_kill_skipped",
        /// A process that had been sent a fatal signal exited: the exit joined with the
        /// signals that ended it, and who sent them ([`DeathRecord`]).
        SignaledExit = 8 => "signaled_exit",
    }
}

/// Slots of the [`map::LOST`] per-CPU array: one per [`RecordKind`] value (slot 0 unused).
pub const LOST_SLOTS: u32 = 9;

abi_enum! {
    /// Which kernel program produced a record (the hook strategy, or the auxiliary program).
    pub enum Hook {
        /// fentry on `oom_kill_process` for the OOM context, victims from `mark_victim`.
        Fentry = 1 => "fentry",
        /// kprobe on `oom_kill_process` for the OOM context, victims from `mark_victim`.
        Kprobe = 2 => "kprobe",
        /// BTF-typed raw tracepoint `mark_victim`.
        TpBtf = 3 => "tp_btf",
        /// Classic tracepoint `oom/mark_victim`.
        Tracepoint = 4 => "tracepoint",
        /// `sched_switch`: the program that saw tasks stalled in a memcg OOM before the daemon
        /// watched `memory.oom_control` instead. No program records it any more; kept so that
        /// a record of an older object (pinned rings read once at an upgrade) still names it.
        SchedSwitch = 5 => "sched_switch",
        /// `sched_process_exit`, which reports an OOM victim's exit.
        SchedProcessExit = 6 => "sched_process_exit",
        /// Not a kernel program: cgroup v1's `memory.oom_control` notification (an eventfd),
        /// through which the daemon sees tasks stalled in a memcg OOM with `oom_kill_disable`.
        OomControl = 7 => "oom_control",
    }
}

abi_enum! {
    /// `enum oom_constraint` values as the kernel defines them. A record whose hook could
    /// not see the constraint carries [`Constraint::UNSEEN`] instead.
    pub enum Constraint {
        /// `CONSTRAINT_NONE`: a system-wide OOM.
        Global = 0 => "global",
        /// `CONSTRAINT_CPUSET`.
        Cpuset = 1 => "cpuset",
        /// `CONSTRAINT_MEMORY_POLICY`.
        Mempolicy = 2 => "mempolicy",
        /// `CONSTRAINT_MEMCG`.
        Memcg = 3 => "memcg",
    }
}

impl Constraint {
    /// The raw value of "the hook could not see the constraint" (JSON `null`).
    pub const UNSEEN: u32 = u32::MAX;
}

/// Names of the object's maps, as the kernel programs declare them (`#[map]` takes the
/// static's name) and the daemon looks them up. A unit test in `observer` checks each one is
/// in the embedded object.
pub mod map {
    /// Ring buffer of kill and exit records ([`crate::OomKillRecord`]).
    pub const EVENTS: &str = "EVENTS";
    /// Ring buffer of cgroup mkdir and attach records, kept apart so that a flood of them
    /// cannot displace a kill.
    pub const CGROUP_EVENTS: &str = "CGROUP_EVENTS";
    /// Per-CPU count of records that found their ring full, by [`crate::RecordKind`].
    pub const LOST: &str = "LOST";
    /// OOM context stashed by the `oom_kill_process` hooks.
    pub const OOM_CTX: &str = "OOM_CTX";
    /// OOM victims by process id ([`crate::VictimState`]).
    pub const VICTIMS: &str = "VICTIMS";
    /// The task each thread last sent SIGKILL to.
    pub const KILLED: &str = "KILLED";
    /// One `u32`, set to 1 by the daemon once `signal_generate` is attached: from then on a
    /// `mark_victim` without the OOM killer's SIGKILL is known not to be a kill.
    pub const KILL_SIGNAL_ON: &str = "KILL_SIGNAL_ON";
    /// Processes sent a fatal signal that have not exited yet, by process id
    /// ([`crate::SignalState`]).
    pub const SIGNALED: &str = "SIGNALED";
    /// Every map, for the check that the object has them.
    pub const ALL: &[&str] = &[
        EVENTS,
        CGROUP_EVENTS,
        LOST,
        OOM_CTX,
        VICTIMS,
        KILLED,
        KILL_SIGNAL_ON,
        SIGNALED,
    ];
}

/// Names of the object's programs (the kernel side's function names).
pub mod program {
    /// fentry on `oom_kill_process`.
    pub const OOM_KILL_FENTRY: &str = "oom_kill_fentry";
    /// fexit on `oom_kill_process`.
    pub const OOM_KILL_FEXIT: &str = "oom_kill_fexit";
    /// kprobe on `oom_kill_process`.
    pub const OOM_KILL_KPROBE: &str = "oom_kill_kprobe";
    /// kretprobe on `oom_kill_process`.
    pub const OOM_KILL_KRETPROBE: &str = "oom_kill_kretprobe";
    /// `tp_btf/mark_victim`.
    pub const MARK_VICTIM_BTF: &str = "mark_victim_btf";
    /// `tracepoint/oom/mark_victim`.
    pub const MARK_VICTIM_TP: &str = "mark_victim_tp";
    /// `tp_btf/signal_generate`: fatal signals and their senders, and the SIGKILL's target
    /// before Linux 6.8.
    pub const KILL_SIGNAL_BTF: &str = "kill_signal_btf";
    /// `tracepoint/signal/signal_generate`: fatal signals and their senders, where the
    /// classic tracepoints are used (no target task: see `probes::signal`).
    pub const KILL_SIGNAL_TP: &str = "kill_signal_tp";
    /// `tp_btf/sched_process_exit`.
    pub const EXIT_BTF: &str = "exit_btf";
    /// `tracepoint/sched/sched_process_exit`.
    pub const EXIT_TP: &str = "exit_tp";
    /// `tracepoint/cgroup/cgroup_mkdir`.
    pub const CGROUP_MKDIR_TP: &str = "cgroup_mkdir_tp";
    /// `tracepoint/cgroup/cgroup_attach_task`.
    pub const CGROUP_ATTACH_TP: &str = "cgroup_attach_tp";
    /// Every program, for the check that the object has them.
    pub const ALL: &[&str] = &[
        OOM_KILL_FENTRY,
        OOM_KILL_FEXIT,
        OOM_KILL_KPROBE,
        OOM_KILL_KRETPROBE,
        MARK_VICTIM_BTF,
        MARK_VICTIM_TP,
        KILL_SIGNAL_BTF,
        KILL_SIGNAL_TP,
        EXIT_BTF,
        EXIT_TP,
        CGROUP_MKDIR_TP,
        CGROUP_ATTACH_TP,
    ];
}

/// Bits of [`OomKillRecord::valid`]: which fields the hook could actually see.
/// A field whose bit is clear is reported as `null`, never guessed.
pub mod valid {
    /// `victim_tgid`.
    pub const VICTIM_TGID: u32 = 1 << 0;
    /// `victim_comm`.
    pub const VICTIM_COMM: u32 = 1 << 1;
    /// `victim_uid`.
    pub const VICTIM_UID: u32 = 1 << 2;
    /// `victim_memcg_id` (the victim's cgroup in the memory controller's hierarchy).
    pub const VICTIM_MEMCG: u32 = 1 << 3;
    /// `victim_dfl_cgroup_id` (the victim's cgroup in the unified hierarchy).
    pub const VICTIM_DFL_CGROUP: u32 = 1 << 4;
    /// `oom_memcg_id`; with this bit set, an id of 0 means "no memory cgroup" (global OOM).
    pub const OOM_MEMCG: u32 = 1 << 5;
    /// `victim_pid`.
    pub const VICTIM_PID: u32 = 1 << 6;
    /// `exit_code` (victim exits only).
    pub const EXIT_CODE: u32 = 1 << 7;
    /// [`crate::KillDetail`]: `domain_usage_pages` and `domain_limit_pages` (the OOM memcg's
    /// page counter).
    pub const DOMAIN_MEMORY: u32 = 1 << 8;
    /// `domain_swap_usage_pages` and `domain_swap_limit_pages` (cgroup v2 only).
    pub const DOMAIN_SWAP: u32 = 1 << 9;
    /// `total_pages` (`oom_control.totalpages`, the OOM domain's size).
    pub const TOTAL_PAGES: u32 = 1 << 10;
    /// `chosen_points` (the victim was `oom_control.chosen`).
    pub const POINTS: u32 = 1 << 11;
    /// `incident_id` and `incident_victims`.
    pub const INCIDENT: u32 = 1 << 12;
    /// `total_vm_pages`.
    pub const TOTAL_VM: u32 = 1 << 13;
    /// `anon_rss_pages`, `file_rss_pages`, `shmem_rss_pages` and `swap_ents`.
    pub const RSS: u32 = 1 << 14;
    /// `pgtables_bytes`.
    pub const PGTABLES: u32 = 1 << 15;
    /// `oom_score_adj`.
    pub const OOM_SCORE_ADJ: u32 = 1 << 16;
    /// `ns_pid` and `ns_level`.
    pub const NS_PID: u32 = 1 << 17;
    /// `decision_doubt` (decisions only: the victim's state could be read).
    pub const DOUBT: u32 = 1 << 18;
}

/// Bits of [`KillDetail::decision_doubt`]: what, at the OOM killer's decision, says the
/// chosen victim may not be killed after all. `oom_kill_process` kills nobody when the victim
/// is already exiting (`task_will_free_mem`: a group exit, or a single-threaded task in
/// `do_exit`) or when no thread of it has an `mm` left (`__oom_kill_process`' early return).
pub mod doubt {
    /// `task->flags & PF_EXITING`: the chosen thread is in `do_exit`.
    pub const PF_EXITING: u32 = 1 << 0;
    /// `task->signal->flags & SIGNAL_GROUP_EXIT`: the process is exiting (also after a
    /// fatal signal from elsewhere).
    pub const GROUP_EXIT: u32 = 1 << 1;
    /// `task->mm` is NULL: the chosen thread is past `exit_mm`.
    pub const NO_MM: u32 = 1 << 2;
}

/// The kernel's `PF_EXITING` task flag (unchanged since Linux 2.6).
pub const PF_EXITING: u32 = 0x4;
/// The kernel's `SIGNAL_GROUP_EXIT` signal flag (unchanged since Linux 2.6).
pub const SIGNAL_GROUP_EXIT: u32 = 0x4;

/// What the kernel knows about a kill beyond who was killed: the OOM domain's page counter,
/// the victim's memory (the numbers of the kernel's own "Killed process" line), its badness
/// and its pid in its own namespace. Each group of fields has its [`valid`] bit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KillDetail {
    /// `oom_control.totalpages`: the size of the OOM domain, in pages.
    pub total_pages: u64,
    /// `oom_control.chosen_points`: the victim's badness.
    pub chosen_points: i64,
    /// One id per invocation of the OOM killer (`bpf_ktime_get_boot_ns()` at the entry of
    /// `oom_kill_process`), shared by every victim of a `memory.oom.group` kill. It is also
    /// the time of the OOM killer's decision.
    pub incident_id: u64,
    /// The OOM memcg's `memory.usage` page counter, in pages.
    pub domain_usage_pages: u64,
    /// The OOM memcg's `memory.max` (page counter limit), in pages.
    pub domain_limit_pages: u64,
    /// The OOM memcg's swap page counter usage, in pages (cgroup v2).
    pub domain_swap_usage_pages: u64,
    /// The OOM memcg's swap limit, in pages (cgroup v2).
    pub domain_swap_limit_pages: u64,
    /// `mm->total_vm`, in pages.
    pub total_vm_pages: u64,
    /// `MM_ANONPAGES` of `mm->rss_stat`, in pages (on Linux 6.2+ a per-CPU counter's central
    /// value, as `get_mm_counter()` and the kernel's own report read it).
    pub anon_rss_pages: i64,
    /// `MM_FILEPAGES`, in pages.
    pub file_rss_pages: i64,
    /// `MM_SHMEMPAGES`, in pages.
    pub shmem_rss_pages: i64,
    /// `MM_SWAPENTS`: swap entries, in pages.
    pub swap_ents: i64,
    /// `mm->pgtables_bytes`.
    pub pgtables_bytes: i64,
    /// `signal->oom_score_adj`.
    pub oom_score_adj: i32,
    /// Victims of this incident recorded so far, this one included (1 for the first).
    pub incident_victims: u32,
    /// The victim's process id in its own pid namespace.
    pub ns_pid: u32,
    /// Depth of that pid namespace (0: the node's own).
    pub ns_level: u32,
    /// Decisions only: [`doubt`] bits, 0 when nothing says the kill may not follow.
    pub decision_doubt: u32,
    /// Keeps the size a multiple of 8.
    pub _pad: u32,
}

/// An OOM kill ([`RecordKind::OomKill`]), a memcg OOM without a kill ([`RecordKind::MemcgOom`])
/// or a victim's exit ([`RecordKind::VictimExit`]).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OomKillRecord {
    /// [`RecordKind`] value.
    pub kind: u32,
    /// [`Hook`] value of the program that saw it.
    pub hook: u32,
    /// `bpf_ktime_get_boot_ns()` when the program ran.
    pub ktime_ns: u64,
    /// Bitmask of [`valid`] bits.
    pub valid: u32,
    /// Victim thread id (`task->pid`).
    pub victim_pid: u32,
    /// Victim process id (`task->tgid`).
    pub victim_tgid: u32,
    /// Victim's real uid.
    pub victim_uid: u32,
    /// Victim's cgroup id in the hierarchy that holds the memory controller.
    pub victim_memcg_id: u64,
    /// Victim's cgroup id in the unified (v2) hierarchy.
    pub victim_dfl_cgroup_id: u64,
    /// Id of the memory cgroup whose limit was hit; 0 for a global OOM.
    pub oom_memcg_id: u64,
    /// [`Constraint`] value, or [`Constraint::UNSEEN`].
    pub constraint: u32,
    /// Thread id of the task that ran into the OOM (the allocating task).
    pub trigger_pid: u32,
    /// Process id of the triggering task.
    pub trigger_tgid: u32,
    /// For [`RecordKind::VictimExit`]: the exit status as the kernel keeps it (`task->exit_code`:
    /// signal in the low 7 bits, exit code in bits 8..16). Zero otherwise.
    pub exit_code: i32,
    /// Victim's `comm`, NUL padded.
    pub victim_comm: [u8; COMM_LEN],
    /// Triggering task's `comm`, NUL padded.
    pub trigger_comm: [u8; COMM_LEN],
    /// Kills only: what the kernel knew about the kill (zero for other kinds).
    pub detail: KillDetail,
}

/// A cgroup was created: lets the daemon learn id → path before the cgroup can vanish.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CgroupMkdirRecord {
    /// Always [`RecordKind::CgroupMkdir`].
    pub kind: u32,
    /// Hierarchy id (`cgroup_root->hierarchy_id`); 0 is the unified hierarchy.
    pub root: u32,
    /// The new cgroup's id.
    pub id: u64,
    /// Depth below the hierarchy's root.
    pub level: u32,
    /// Bytes of `path` used; `CGROUP_PATH_LEN` or more means it was cut.
    pub path_len: u32,
    /// Path below the hierarchy's root, starting with '/'.
    pub path: [u8; CGROUP_PATH_LEN],
}

/// A process was moved into a cgroup of the memory controller's hierarchy
/// (`cgroup/cgroup_attach_task`): the daemon re-audits the container it belonged to at once,
/// instead of scanning for moved processes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CgroupAttachRecord {
    /// Always [`RecordKind::CgroupAttach`].
    pub kind: u32,
    /// Hierarchy id of the destination; 0 is the unified hierarchy.
    pub root: u32,
    /// The destination cgroup's id.
    pub id: u64,
    /// The moved process (the thread-group leader when a whole process moved).
    pub pid: u32,
    /// Depth of the destination below the hierarchy's root.
    pub level: u32,
}

/// Offsets of the classic tracepoint `cgroup/cgroup_attach_task`'s record (from tracefs) and
/// the hierarchy to report, handed to the kernel program as the read-only global
/// [`ATTACH_GLOBAL`]. Kept apart from [`KernelLayout`] so the audit's kernel side stays
/// self-contained.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AttachLayout {
    /// Offset of `dst_root`.
    pub tp_root: u32,
    /// Offset of `dst_id`.
    pub tp_id: u32,
    /// Offset of `pid`.
    pub tp_pid: u32,
    /// Offset of `dst_level`.
    pub tp_level: u32,
    /// Only moves into this hierarchy are reported (the one with the memory controller).
    pub memory_root: u32,
    /// Keeps the size a multiple of 8.
    pub _pad: u32,
}

impl AttachLayout {
    /// Nothing known: the program reports nothing.
    pub const fn unknown() -> Self {
        AttachLayout {
            tp_root: ABSENT,
            tp_id: ABSENT,
            tp_pid: ABSENT,
            tp_level: ABSENT,
            memory_root: ABSENT,
            _pad: 0,
        }
    }
}

/// Name of the global the daemon fills with [`AttachLayout`].
pub const ATTACH_GLOBAL: &str = "ATTACH";

/// Per-thread OOM context stashed by the `oom_kill_process` hooks for `mark_victim`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OomContext {
    /// Id of `oom_control.memcg`'s cgroup, 0 for a global OOM.
    pub oom_memcg_id: u64,
    /// `oom_control.chosen` (kernel address), to read the victim on kernels whose
    /// `mark_victim` passes only a pid.
    pub chosen: u64,
    /// `oom_control.constraint`.
    pub constraint: u32,
    /// `chosen->pid`.
    pub chosen_pid: u32,
    /// [`Hook`] value of the program that stored it.
    pub hook: u32,
    /// Victims marked so far in this invocation (`mark_victim` counts them).
    pub victims: u32,
    /// `struct mem_cgroup *` of `oom_control.memcg` (0 for a global OOM).
    pub memcg: u64,
    /// `oom_control.totalpages`, or `u64::MAX` when unseen.
    pub total_pages: u64,
    /// `oom_control.chosen_points`.
    pub chosen_points: i64,
    /// `bpf_ktime_get_boot_ns()` at the entry of `oom_kill_process`: the incident id.
    pub incident_id: u64,
}

/// An OOM victim, remembered in the kernel from its kill until long after its exit: the
/// exit hook finds it with one lookup, and the daemon's query falls back to it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct VictimState {
    /// `bpf_ktime_get_boot_ns()` at the kill.
    pub kill_ktime_ns: u64,
    /// Victim's cgroup in the memory controller's hierarchy (0 if unknown).
    pub memcg_id: u64,
    /// Victim's cgroup in the unified hierarchy (0 if unknown).
    pub dfl_cgroup_id: u64,
    /// `bpf_ktime_get_boot_ns()` at the exit, 0 while it has not exited.
    pub exit_ktime_ns: u64,
    /// The thread the OOM killer marked.
    pub pid: u32,
    /// Exit status (`task->exit_code`), valid once exited.
    pub exit_code: i32,
}

/// The signals whose default action ends a process, as bits (`1 << signo`, the numbers x86_64
/// and arm64 share): SIGHUP, SIGINT, SIGQUIT, SIGILL, SIGABRT, SIGBUS, SIGFPE, SIGKILL,
/// SIGSEGV, SIGTERM and SIGSYS. `signal_generate` records only these, with one test.
pub const FATAL_SIGNALS: u32 = (1 << 1)
    | (1 << 2)
    | (1 << 3)
    | (1 << 4)
    | (1 << 6)
    | (1 << 7)
    | (1 << 8)
    | (1 << 9)
    | (1 << 11)
    | (1 << 15)
    | (1 << 31);

/// Whether `sig` is one of [`FATAL_SIGNALS`].
#[inline(always)]
pub const fn is_fatal_signal(sig: u32) -> bool {
    sig < 32 && FATAL_SIGNALS & (1 << sig) != 0
}

/// One fatal signal as `signal_generate` saw it: what, to whom, from whom.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FatalSignal {
    /// `bpf_ktime_get_boot_ns()` when it was generated; 0: no signal.
    pub ktime_ns: u64,
    /// The sender's cgroup in the memory controller's hierarchy (0 if unknown).
    pub sender_memcg_id: u64,
    /// The sender's cgroup in the unified hierarchy (0 if unknown).
    pub sender_dfl_cgroup_id: u64,
    /// The signal number.
    pub sig: u32,
    /// `si_code`: `SI_USER` (0) for kill(2) and `cgroup.kill`, `SI_KERNEL` (0x80) for the
    /// kernel's own (the OOM killer's SIGKILL), `SI_TKILL` (-6) for tgkill(2), a positive
    /// code for a fault (`SEGV_MAPERR`, ...).
    pub code: i32,
    /// The sending thread (`current`); for a fault, the faulting thread itself.
    pub sender_pid: u32,
    /// The sending process.
    pub sender_tgid: u32,
    /// The thread the signal was generated for.
    pub target_pid: u32,
    /// `enum trace_signal_deliver_result`: 0 delivered, 1 ignored, 2 already pending, 3 and
    /// 4 lost to overflow.
    pub result: u32,
    /// 1 when sent to the whole thread group.
    pub group: u32,
    /// Keeps the size a multiple of 8.
    pub _pad: u32,
    /// The sender's `comm`, NUL padded.
    pub sender_comm: [u8; COMM_LEN],
}

/// A process that was sent a fatal signal and has not exited yet ([`map::SIGNALED`]): the
/// first and the last such signal (a stop's SIGTERM, then its SIGKILL).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SignalState {
    /// The first fatal signal since the entry was made.
    pub first: FatalSignal,
    /// The latest one (the same as `first` when only one came).
    pub last: FatalSignal,
    /// `bpf_ktime_get_boot_ns()` at the process's exit; 0 while it has not exited.
    pub exit_ktime_ns: u64,
    /// Fatal signals recorded for it.
    pub signals: u32,
    /// Keeps the size a multiple of 8.
    pub _pad: u32,
}

/// A process that had been sent a fatal signal exited ([`RecordKind::SignaledExit`]): its
/// exit and the signals that led to it, joined in the kernel at the exit.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DeathRecord {
    /// Always [`RecordKind::SignaledExit`].
    pub kind: u32,
    /// [`Hook::SchedProcessExit`].
    pub hook: u32,
    /// `bpf_ktime_get_boot_ns()` at the exit.
    pub ktime_ns: u64,
    /// The thread whose exit ended the process.
    pub pid: u32,
    /// The process.
    pub tgid: u32,
    /// `task->exit_code`: the signal in the low 7 bits, 0x80 for a core dump, the exit
    /// status in bits 8..16; [`EXIT_CODE_UNKNOWN`] when the program cannot read it (no
    /// BTF: no `task_struct` layout).
    pub exit_code: i32,
    /// Fatal signals recorded for it.
    pub signals: u32,
    /// Its cgroup in the memory controller's hierarchy (0 if unknown).
    pub memcg_id: u64,
    /// Its cgroup in the unified hierarchy (0 if unknown).
    pub dfl_cgroup_id: u64,
    /// Its `comm`, NUL padded.
    pub comm: [u8; COMM_LEN],
    /// The first fatal signal it was sent.
    pub first: FatalSignal,
    /// The last one.
    pub last: FatalSignal,
}

/// [`DeathRecord::exit_code`] when the kernel's exit code could not be read (never a real
/// one: the kernel's is at most 16 bits).
pub const EXIT_CODE_UNKNOWN: i32 = -1;

/// Name of the global the daemon fills with [`KernelLayout`].
pub const LAYOUT_GLOBAL: &str = "LAYOUT";

/// Plain-data records that cross the kernel/user boundary byte for byte.
///
/// # Safety
/// Implemented (by [`plain!`]) only for `#[repr(C)]` types made of integers and integer
/// arrays with no implicit padding (the size asserts below check that), so every byte is
/// initialised and every bit pattern is a valid value.
pub unsafe trait Plain: Copy + Sized {
    /// The record as the bytes the kernel writes.
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: `Plain` types have no padding, so all `size_of::<Self>()` bytes are
        // initialised.
        unsafe {
            core::slice::from_raw_parts((self as *const Self).cast::<u8>(), size_of::<Self>())
        }
    }

    /// Reads the record from the start of `bytes`; `None` when they are too short.
    fn read_from(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < size_of::<Self>() {
            return None;
        }
        // SAFETY: the length was checked, any bit pattern is valid, and the read is unaligned.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }
}

/// Implements [`Plain`] for a type and asserts its size, at compile time, so both sides and
/// any change to a record agree on the bytes.
macro_rules! plain {
    ($($t:ty = $size:expr;)+) => {
        $(
            const _: () = assert!(size_of::<$t>() == $size);
            // SAFETY: repr(C), integers only, and the size assert leaves no room for padding.
            unsafe impl Plain for $t {}
        )+
    };
}

plain! {
    KillDetail = 13 * 8 + 6 * 4;
    OomKillRecord = 104 + size_of::<KillDetail>();
    CgroupMkdirRecord = 24 + CGROUP_PATH_LEN;
    CgroupAttachRecord = 24;
    AttachLayout = 24;
    KernelLayout = 60 * 4;
    OomContext = 64;
    VictimState = 40;
    FatalSignal = 72;
    SignalState = 2 * 72 + 16;
    DeathRecord = 64 + 2 * 72;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY (each impl): a `Plain` type (see `plain!`): repr(C) integers only, with no
    // implicit padding, so any bytes are a valid value, as aya's `Pod` requires.
    // SAFETY: see above.
    unsafe impl aya::Pod for super::KernelLayout {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::OomContext {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::VictimState {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::AttachLayout {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::SignalState {}
}
