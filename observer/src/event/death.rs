//! `container_exit`: every container's end, with who ended it and what the kubelet will make
//! of it. The cause is decided here, from facts the processor gathered (the kernel's fatal
//! signals joined at the exit, the kills this run saw, the sender's cgroup); pure, so each
//! rule is tested on its own.

use observer_common::{DeathRecord, FatalSignal};
use serde::Serialize;

use super::schema::ContainerRef;
use crate::kernel::clock::boot_rfc3339;

/// Why a container ended: one closed list (docs/deaths.md says what each means).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The kernel's OOM killer killed its init.
    OomKill,
    /// A userspace OOM killer (earlyoom, systemd-oomd, oomd) sent the signal.
    OomKillerUserspace,
    /// The runtime (runc, a containerd shim) sent it, acting on a stop.
    RuntimeStop,
    /// A process of the same pod sent it.
    PodProcess,
    /// Any other process on the node sent it.
    NodeProcess,
    /// The kernel raised a crash signal in the process itself (a fault), or it raised one on
    /// itself (abort).
    Crash,
    /// It exited on its own.
    Exited,
    /// It died of a signal whose sender was not seen (sent before this daemon's programs
    /// ran, or its record was evicted or lost).
    UnknownSignal,
}

impl Cause {
    /// Every cause, for the metrics' label values.
    pub const ALL: &'static [Cause] = &[
        Cause::OomKill,
        Cause::OomKillerUserspace,
        Cause::RuntimeStop,
        Cause::PodProcess,
        Cause::NodeProcess,
        Cause::Crash,
        Cause::Exited,
        Cause::UnknownSignal,
    ];

    /// Its JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::OomKill => "oom_kill",
            Cause::OomKillerUserspace => "oom_killer_userspace",
            Cause::RuntimeStop => "runtime_stop",
            Cause::PodProcess => "pod_process",
            Cause::NodeProcess => "node_process",
            Cause::Crash => "crash",
            Cause::Exited => "exited",
            Cause::UnknownSignal => "unknown_signal",
        }
    }

    /// Whether a Pod Event is worth posting: not for a plain exit or the runtime's own stop
    /// (the kubelet already says both).
    pub fn worth_an_event(self) -> bool {
        !matches!(self, Cause::Exited | Cause::RuntimeStop)
    }
}

/// A signal's name (`SIGKILL`), or its number for one outside the list.
pub fn signal_name(sig: u32) -> String {
    let name = match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        31 => "SIGSYS",
        _ => return format!("signal {sig}"),
    };
    name.to_string()
}

/// `si_code` in words: who generated it.
pub fn code_name(code: i32) -> &'static str {
    match code {
        0 => "SI_USER",
        0x80 => "SI_KERNEL",
        -1 => "SI_QUEUE",
        -6 => "SI_TKILL",
        c if c > 0 => "fault",
        _ => "other",
    }
}

/// SIGKILL, the signal systemd-oomd and oomd kill with.
pub const SIGKILL: u32 = 9;
/// The crash signals: raised by the kernel in a faulting task, or by a task on itself.
const CRASH: &[u32] = &[4, 6, 7, 8, 11, 31];
/// The signals that ask a process to end (it may answer with its own exit).
const ASK_TO_END: &[u32] = &[1, 2, 3, 15];
/// How long before an exit a handled request to end still explains it.
const ASKED_WITHIN_NS: u64 = 120 * 1_000_000_000;

/// Userspace OOM killers, by the sender's `comm` (and executable's file name).
pub const USERSPACE_OOM_KILLERS: &[&str] = &["earlyoom", "systemd-oomd", "oomd", "nohang"];
/// Runtimes and shims that stop containers, by `comm` prefix (`comm` is cut at 15 bytes).
pub const RUNTIMES: &[&str] = &[
    "runc",
    "containerd-shim",
    "containerd",
    "runsc",
    "crun",
    "youki",
    "kata-runtime",
    "conmon",
];

/// The sender of a signal, as the line prints it.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Sender {
    /// The signal, by name.
    pub signal: String,
    /// `si_code` in words (`SI_USER`, `SI_KERNEL`, `SI_TKILL`, `fault`, ...).
    pub code: &'static str,
    /// When it was sent, RFC 3339.
    pub time: String,
    /// `CLOCK_BOOTTIME` when it was sent.
    pub ktime_ns: u64,
    /// Whether the kernel queued it (`signal_generate`'s result: not ignored, not already
    /// pending, not lost).
    pub delivered: bool,
    /// The sending thread.
    pub pid: u32,
    /// The sending process.
    pub tgid: u32,
    /// Its `comm`.
    pub comm: String,
    /// `/proc/<tgid>/exe`, while it still runs.
    pub exe: Option<String>,
    /// Its command line, scrubbed as the victims' are; null when it is gone or not wanted.
    pub cmdline: Option<Vec<String>>,
    /// Its cgroup in the memory hierarchy.
    pub cgroup: Option<String>,
    /// The systemd unit its cgroup names (`*.service`, `*.scope`), if any.
    pub unit: Option<String>,
    /// The container it runs in, if any.
    pub container: Option<ContainerRef>,
}

impl Sender {
    /// The kernel's side of a sender; the processor adds what `/proc` and the index say.
    pub fn of(s: &FatalSignal) -> Sender {
        Sender {
            signal: signal_name(s.sig),
            code: code_name(s.code),
            time: boot_rfc3339(s.ktime_ns),
            ktime_ns: s.ktime_ns,
            delivered: s.result == 0,
            pid: s.sender_pid,
            tgid: s.sender_tgid,
            comm: comm_str(&s.sender_comm),
            ..Sender::default()
        }
    }
}

/// A NUL-padded `comm` as text.
pub fn comm_str(c: &[u8]) -> String {
    let end = c.iter().position(|b| *b == 0).unwrap_or(c.len());
    String::from_utf8_lossy(c.get(..end).unwrap_or_default()).into_owned()
}

/// An earlier OOM kill in the container while it lived on.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EarlierKill {
    /// `seq` of its `oom_kill` line.
    pub seq: u64,
    /// When, RFC 3339.
    pub time: String,
    /// The killed process.
    pub pid: Option<u32>,
    /// Its `comm`.
    pub comm: Option<String>,
}

/// What the kubelet will show for the container, and whether that is wrong.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct KubeletView {
    /// The reason containerd's CRI plugin gives: `OOMKilled` once it got any TaskOOM for
    /// the container (a child's kill included), else `Completed` for exit 0, else `Error`.
    pub reason: &'static str,
    /// `predicted` (from the TaskOOMs this run saw sent) or `cri` (read from containerd's
    /// CRI status).
    pub source: &'static str,
    /// `oomkilled_not_oom` when it says OOMKilled for a death that was no OOM kill,
    /// `error_for_oom` when it says Error for an OOM kill; null when it is right.
    pub wrong: Option<&'static str>,
}

/// One `container_exit` line.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ContainerExit {
    /// Always the event schema's version.
    pub schema: u32,
    /// In the same sequence as the kills.
    pub seq: u64,
    /// Always `container_exit`.
    pub event: &'static str,
    /// When the container's init exited (RFC 3339).
    pub time: String,
    /// The container.
    pub container: ContainerRef,
    /// Its init's host pid.
    pub pid: u32,
    /// The exit code the runtime reports (128 + the signal for a signal).
    pub exit_code: u32,
    /// The signal that ended it, if one did.
    pub signal: Option<String>,
    /// Whether it dumped core.
    pub core_dumped: bool,
    /// Why it ended.
    pub cause: Cause,
    /// Who sent the signal that ended it (or asked it to end); null for a plain exit or an
    /// unseen sender.
    pub sender: Option<Sender>,
    /// A different first signal, when one came before (a stop's SIGTERM before its
    /// SIGKILL).
    pub first_signal: Option<Sender>,
    /// `oom_kill` only: `seq` of the kill's line, and the limit that fired.
    pub oom_kill_seq: Option<u64>,
    /// `oom_kill` only: `container`, `pod`, `node` or `cgroup`.
    pub limit: Option<String>,
    /// OOM kills of other processes in the container while it lived on.
    pub earlier_oom_kills: Vec<EarlierKill>,
    /// What the kubelet will show.
    pub kubelet: KubeletView,
    /// A one-line summary.
    pub message: String,
}

/// What the processor knows when a container's init exits.
#[derive(Debug, Clone, Default)]
pub struct ExitFacts {
    /// The init's host pid.
    pub pid: u32,
    /// containerd's `exit_status` (128 + signal for a signal).
    pub exit_status: u32,
    /// The kernel's record of the exit, when a fatal signal had been sent to it.
    pub death: Option<DeathRecord>,
    /// The kill of the init itself this run saw: its `seq` and limit.
    pub init_killed: Option<(u64, Option<String>)>,
    /// OOM kills in the container during its life (the init's excluded).
    pub earlier_kills: Vec<EarlierKill>,
    /// The sender's memory cgroup path.
    pub sender_cgroup: Option<String>,
    /// The container's pod cgroup, when it has a pod.
    pub pod_cgroup: Option<String>,
    /// The sender's executable's file name, while it runs.
    pub sender_exe_name: Option<String>,
    /// The container's cgroup, or an ancestor up to its pod's, carries systemd-oomd's or
    /// oomd's mark (`user.oomd_ooms`, `trusted.oomd_kill`, ...: `host::oomd`).
    pub oomd_marked: bool,
}

/// The signal the exit is blamed on: the one that killed it (the exit's signal), or a
/// request to end that the process answered with its own exit shortly after.
pub fn blamed(d: &DeathRecord) -> Option<&FatalSignal> {
    let killed_by = (d.exit_code & 0x7f) as u32;
    let recent = |s: &FatalSignal| d.ktime_ns.saturating_sub(s.ktime_ns) <= ASKED_WITHIN_NS;
    if killed_by != 0 {
        return [&d.last, &d.first]
            .into_iter()
            .find(|s| s.ktime_ns != 0 && s.sig == killed_by);
    }
    [&d.last, &d.first]
        .into_iter()
        .find(|s| s.ktime_ns != 0 && ASK_TO_END.contains(&s.sig) && recent(s))
}

/// The cause, from the facts.
pub fn classify(f: &ExitFacts) -> Cause {
    if f.init_killed.is_some() {
        return Cause::OomKill;
    }
    let signaled = f.exit_status > 128 || f.death.is_some_and(|d| d.exit_code & 0x7f != 0);
    let Some((d, s)) = f.death.as_ref().and_then(|d| Some((d, blamed(d)?))) else {
        return if signaled {
            Cause::UnknownSignal
        } else {
            Cause::Exited
        };
    };
    let comm = comm_str(&s.sender_comm);
    let named = |list: &[&str], exact: bool| {
        let names = [Some(comm.as_str()), f.sender_exe_name.as_deref()];
        names.into_iter().flatten().any(|n| {
            list.iter()
                .any(|k| if exact { n == *k } else { n.starts_with(k) })
        })
    };
    if CRASH.contains(&s.sig) && s.sender_tgid == d.tgid {
        return Cause::Crash;
    }
    if named(USERSPACE_OOM_KILLERS, true) {
        return Cause::OomKillerUserspace;
    }
    if named(RUNTIMES, false) {
        return Cause::RuntimeStop;
    }
    // After the runtime: a mark on the pod's cgroup outlives the container it was set for,
    // and a later stop's SIGKILL is the runtime's, whatever an earlier kill left there.
    if f.oomd_marked && s.sig == SIGKILL {
        return Cause::OomKillerUserspace;
    }
    if let (Some(sender), Some(pod)) = (&f.sender_cgroup, &f.pod_cgroup) {
        if crate::host::cgroup_path::is_under(sender, pod) {
            return Cause::PodProcess;
        }
    }
    Cause::NodeProcess
}

/// What the kubelet will show: `OOMKilled` once containerd got a TaskOOM for the container
/// (this daemon hands one over for every kill in it, and the runc shim sends one for every
/// OOM event of its cgroup), else by the exit code.
pub fn kubelet_view(cause: Cause, exit_code: u32, taskoom_seen: bool) -> KubeletView {
    let reason = if taskoom_seen {
        "OOMKilled"
    } else if exit_code == 0 {
        "Completed"
    } else {
        "Error"
    };
    let wrong = match (reason, cause) {
        ("OOMKilled", c) if c != Cause::OomKill => Some("oomkilled_not_oom"),
        ("Error", Cause::OomKill) => Some("error_for_oom"),
        _ => None,
    };
    KubeletView {
        reason,
        source: "predicted",
        wrong,
    }
}

/// The one-line summary.
pub fn message(x: &ContainerExit) -> String {
    let c = &x.container;
    let who = match (&c.name, &c.pod) {
        (Some(n), Some(p)) => format!(
            "container {n} of pod {}/{}",
            p.namespace.as_deref().unwrap_or("?"),
            p.name.as_deref().unwrap_or("?")
        ),
        _ => format!("container {}", c.id),
    };
    let how = match &x.signal {
        Some(sig) => format!("killed by {sig}"),
        None => format!("exited with code {}", x.exit_code),
    };
    let by = match (&x.sender, x.cause) {
        (_, Cause::OomKill) => format!(
            " from the kernel's OOM killer ({} limit)",
            x.limit.as_deref().unwrap_or("unknown")
        ),
        (Some(s), Cause::Crash) if s.code == "fault" => " raised by its own fault".to_string(),
        (_, Cause::Crash) => " raised by itself".to_string(),
        (Some(s), _) => {
            let place = match (&s.container, &s.unit) {
                (Some(c), _) => format!(" in container {}", c.name.as_deref().unwrap_or(&c.id)),
                (None, Some(u)) => format!(" in {u}"),
                _ => String::new(),
            };
            let verb = if x.signal.is_some() {
                "sent by".to_string()
            } else {
                format!("after {} from", s.signal)
            };
            format!(" {verb} {} (pid {}){place}", s.comm, s.tgid)
        }
        (None, _) => String::new(),
    };
    let mut m = format!("{who} {how}{by}: {}", x.cause.as_str());
    if let Some(w) = x.kubelet.wrong {
        let why = match w {
            "oomkilled_not_oom" => {
                "an earlier OOM kill in the container left containerd's OOMKilled mark"
            }
            _ => "containerd's TaskOOM did not come in time",
        };
        let shows = if x.kubelet.source == "cri" {
            "shows"
        } else {
            "will show"
        };
        m.push_str(&format!(
            "; the kubelet {shows} {}, which is wrong: {why}",
            x.kubelet.reason
        ));
    }
    m
}

/// The kubelet's view as containerd's CRI reported it: whether `reason` is wrong for
/// `cause`.
pub fn kubelet_from_cri(cause: Cause, reason: &str) -> KubeletView {
    let wrong = match (reason, cause) {
        ("OOMKilled", c) if c != Cause::OomKill => Some("oomkilled_not_oom"),
        (r, Cause::OomKill) if r != "OOMKilled" => Some("error_for_oom"),
        _ => None,
    };
    let reason = match reason {
        "OOMKilled" => "OOMKilled",
        "Completed" => "Completed",
        "Error" => "Error",
        // Any other (ContainerCannotRun, StartError, ...): what the kubelet shows too.
        _ => "Other",
    };
    KubeletView {
        reason,
        source: "cri",
        wrong,
    }
}

/// The systemd unit a cgroup path names (its last `*.service` or `*.scope` component).
pub fn unit_of(cgroup: &str) -> Option<String> {
    cgroup
        .rsplit('/')
        .find(|c| c.ends_with(".service") || c.ends_with(".scope"))
        .map(String::from)
}

#[cfg(test)]
#[path = "death_tests.rs"]
mod tests;
