//! The maps and read-only globals the programs share with the daemon. Names are the ones in
//! `observer_common::map` (`#[map]` takes the static's name).

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use observer_common::{
    AttachLayout, KernelLayout, OomContext, SignalState, VictimState, LOST_SLOTS,
};

/// Filled by the daemon from the running kernel's BTF before load.
#[no_mangle]
pub static LAYOUT: KernelLayout = KernelLayout::unknown();

/// Filled by the daemon before load: where `cgroup_attach_task`'s fields are, and which
/// hierarchy to report (the memory controller's).
#[no_mangle]
pub static ATTACH: AttachLayout = AttachLayout::unknown();

/// Kill and exit records for user space, in the order the kernel produced them.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Cgroup mkdir and attach records: their own ring, so that any cgroup writer flooding them
/// cannot take the room a kill or an exit needs.
#[map]
pub static CGROUP_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Records that could not be reserved (ring buffer full), per CPU and per record kind; the
/// daemon sums them.
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOST_SLOTS, 0);

/// OOM context stashed by the `oom_kill_process` hooks, by the thread running the OOM killer.
#[map]
pub static OOM_CTX: HashMap<u32, OomContext> = HashMap::with_max_entries(1024, 0);

/// OOM victims by process id (thread id when the hook could not see the process id), from
/// the kill until the LRU needs the room: the exit hook's single lookup, and the daemon's
/// fallback when asked about a kill it has not read yet.
#[map]
pub static VICTIMS: LruHashMap<u32, VictimState> = LruHashMap::with_max_entries(16384, 0);

/// How many processes await their exit, never fewer (see `record::exits_awaited`): victims in
/// [`VICTIMS`] in the low 32 bits, processes in [`SIGNALED`] in the high 32. While it is 0,
/// every other exit on the node leaves the exit hook after this one load. Only the programs
/// use it; they keep it alive across restarts with `--pin-dir`, as they keep themselves.
#[map]
pub static AWAITING_EXIT: Array<u64> = Array::with_max_entries(1, 0);

/// The task each thread last sent SIGKILL to (see `probes::signal`), by sending thread.
#[map]
pub static KILLED: LruHashMap<u32, KilledTask> = LruHashMap::with_max_entries(1024, 0);

/// Set to 1 by the daemon once `signal_generate` is attached (see `observer_common::map`).
#[map]
pub static KILL_SIGNAL_ON: Array<u32> = Array::with_max_entries(1, 0);

/// Processes sent a fatal signal, by process id, until their exit reads the entry (see
/// `probes::signal`). A process that handles the signal and lives on keeps its entry until
/// the LRU needs the room.
#[map]
pub static SIGNALED: LruHashMap<u32, SignalState> = LruHashMap::with_max_entries(4096, 0);

/// A SIGKILL's target, as `signal_generate` saw it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct KilledTask {
    /// `struct task_struct *`.
    pub task: u64,
    /// Its thread id, to match `mark_victim`'s pid.
    pub pid: u32,
    pub _pad: u32,
    /// `bpf_ktime_get_boot_ns()` when it was sent: a SIGKILL older than the OOM killer's
    /// decision is not this kill's.
    pub ktime_ns: u64,
}
