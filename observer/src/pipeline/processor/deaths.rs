//! A container's end: the kernel's records of signaled exits, kept until containerd says
//! whose container's init each was, and the `container_exit` event that joins one to the
//! kills this run saw. The kernel's exit comes first (the shim reaps the init after it), so
//! the container's `/tasks/exit` finds its record here; records of processes that were no
//! container's init age out.

use std::{collections::HashMap, path::PathBuf};

use observer_common::{DeathRecord, EXIT_CODE_UNKNOWN};

use crate::{
    enrich::{container::ContainerInfo, upkeep::TaskExited},
    event::{
        death::{self, ContainerExit, EarlierKill, ExitFacts, Sender},
        ContainerRef, SCHEMA,
    },
    host::{cgroup_path, procfs},
    kernel::clock::boot_ns,
    query::history::Kill,
    scrub::{scrub, CmdlinePolicy},
};

/// How long a record waits for its container's exit: containerd reports it within
/// milliseconds of the reap, seconds on a starved node.
const KEEP_NS: u64 = 120 * 1_000_000_000;
/// At most this many records wait (a node where thousands of signaled processes exit in two
/// minutes keeps the newest).
const MAX: usize = 4096;

/// Signaled exits by process id.
#[derive(Debug, Default)]
pub struct Deaths {
    by_tgid: HashMap<u32, DeathRecord>,
}

impl Deaths {
    /// Keeps a record.
    pub fn insert(&mut self, d: DeathRecord) {
        if self.by_tgid.len() >= MAX {
            let now = boot_ns();
            self.by_tgid
                .retain(|_, r| now.saturating_sub(r.ktime_ns) < KEEP_NS);
            if self.by_tgid.len() >= MAX {
                // All recent: the oldest goes.
                if let Some(oldest) = self
                    .by_tgid
                    .iter()
                    .min_by_key(|(_, r)| r.ktime_ns)
                    .map(|(k, _)| *k)
                {
                    self.by_tgid.remove(&oldest);
                }
            }
        }
        self.by_tgid.insert(d.tgid, d);
    }

    /// Takes the record of `tgid`'s exit, if one waits and is recent.
    pub fn take(&mut self, tgid: u32) -> Option<DeathRecord> {
        let d = self.by_tgid.remove(&tgid)?;
        (boot_ns().saturating_sub(d.ktime_ns) < KEEP_NS).then_some(d)
    }
}

/// What a container's end is joined with, besides the kernel's record of it.
pub struct Join<'a, P, O, C> {
    /// The kills this run saw in the container.
    pub kills: Vec<Kill>,
    /// What becomes of the sender's command line.
    pub policy: &'a CmdlinePolicy,
    /// A memory cgroup's path, by id.
    pub path_of: P,
    /// The userspace OOM killers' mark on a cgroup (by hierarchy path), if it carries one:
    /// the attribute and the directory (see `host::oomd`).
    pub oomd_mark: O,
    /// The container a memory cgroup belongs to.
    pub container_of: C,
}

/// The `container_exit` event of `x`, the cause joined from the kernel's record of the exit
/// (`death`) and what `join` says; its `seq` is set when it is written.
pub fn container_exit<P, O, C>(
    x: &TaskExited,
    death: Option<DeathRecord>,
    join: Join<'_, P, O, C>,
) -> ContainerExit
where
    P: FnMut(u64) -> Option<String>,
    O: Fn(&str) -> Option<(&'static str, PathBuf)>,
    C: Fn(&str) -> Option<ContainerRef>,
{
    let Join {
        kills,
        policy,
        mut path_of,
        oomd_mark,
        container_of,
    } = join;
    let death = death.map(|d| with_exit_code(d, x.exit_status));
    let c = &x.container;
    let init_kill = kills
        .iter()
        .rev()
        .find(|k| k.tgid == Some(x.pid) || (k.tgid.is_none() && k.pid == Some(x.pid)));
    let earlier_kills = kills
        .iter()
        .filter(|k| init_kill.is_none_or(|i| i.seq != k.seq))
        .map(|k| EarlierKill {
            seq: k.seq,
            time: k.time.clone(),
            pid: k.tgid.or(k.pid),
            comm: k.comm.clone(),
        })
        .collect();
    let blamed = death.as_ref().and_then(|d| death::blamed(d).copied());
    let sender_cgroup = blamed
        .filter(|s| s.sender_memcg_id != 0)
        .and_then(|s| path_of(s.sender_memcg_id));
    let sender_proc = blamed.map(|s| {
        let (exe, cmdline) = procfs::exe_and_cmdline(
            s.sender_tgid,
            Some(death::comm_str(&s.sender_comm).as_str()),
            policy.reads(),
        );
        // The sender's arguments carry secrets as often as a victim's: the same policy.
        (exe, cmdline.and_then(|a| scrub(a, policy)))
    });
    // A Kubernetes container's cgroup sits directly in its pod's.
    let pod_cgroup = Some(c)
        .filter(|c| c.pod.is_some() || c.sandbox_id.is_some())
        .and_then(|c| c.cgroups().next())
        .and_then(cgroup_path::parent)
        .map(String::from);
    let facts = ExitFacts {
        pid: x.pid,
        exit_status: x.exit_status,
        death,
        init_killed: init_kill.map(|k| (k.seq, k.explained.limit.clone())),
        earlier_kills,
        sender_cgroup: sender_cgroup.clone(),
        pod_cgroup: pod_cgroup.clone(),
        sender_exe_name: sender_proc
            .as_ref()
            .and_then(|(exe, _)| exe.as_deref())
            .and_then(|e| e.rsplit('/').next())
            .map(String::from),
        // Read now: the runtime removes the cgroup soon after the exit (then: no mark).
        // Only a SIGKILL can be theirs, so no other death pays the reads.
        oomd_marked: blamed.is_some_and(|s| s.sig == death::SIGKILL)
            && oomd_marked(c, pod_cgroup.as_deref(), &oomd_mark),
    };
    let cause = death::classify(&facts);
    let sender = blamed.map(|s| {
        let mut out = Sender::of(&s);
        if let Some((exe, cmdline)) = sender_proc.clone() {
            out.exe = exe;
            out.cmdline = cmdline;
        }
        out.unit = sender_cgroup.as_deref().and_then(death::unit_of);
        out.container = sender_cgroup.as_deref().and_then(&container_of);
        out.cgroup = sender_cgroup.clone();
        out
    });
    let first_signal = facts
        .death
        .as_ref()
        .filter(|d| d.first.ktime_ns != d.last.ktime_ns && d.first.ktime_ns != 0)
        .map(|d| Sender::of(&d.first));
    let (exit_code, signal, core_dumped) = match &facts.death {
        Some(d) if d.exit_code & 0x7f != 0 => {
            let sig = (d.exit_code & 0x7f) as u32;
            (
                128 + sig,
                Some(death::signal_name(sig)),
                d.exit_code & 0x80 != 0,
            )
        }
        Some(d) => (((d.exit_code >> 8) & 0xff) as u32, None, false),
        None if x.exit_status > 128 => (
            x.exit_status,
            Some(death::signal_name(x.exit_status - 128)),
            false,
        ),
        None => (x.exit_status, None, false),
    };
    // This daemon hands containerd a TaskOOM for every kill it saw in the container.
    let kubelet = death::kubelet_view(cause, exit_code, !kills.is_empty());
    let mut ev = ContainerExit {
        schema: SCHEMA,
        seq: 0,
        event: "container_exit",
        time: humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
        container: ContainerRef::from(c),
        pid: x.pid,
        exit_code,
        signal,
        core_dumped,
        cause,
        sender,
        first_signal,
        oom_kill_seq: facts.init_killed.as_ref().map(|k| k.0),
        limit: facts.init_killed.and_then(|k| k.1),
        earlier_oom_kills: facts.earlier_kills,
        kubelet,
        message: String::new(),
    };
    ev.message = death::message(&ev);
    ev
}

/// `d` with an exit code: the kernel's, else (no BTF: the program could not read it) the one
/// containerd's status gives, 128 + the signal or the code, without the core-dump bit.
fn with_exit_code(mut d: DeathRecord, exit_status: u32) -> DeathRecord {
    if d.exit_code == EXIT_CODE_UNKNOWN {
        d.exit_code = match exit_status {
            s @ 129..=192 => (s - 128) as i32,
            s => ((s & 0xff) << 8) as i32,
        };
    }
    d
}

/// Whether systemd-oomd or oomd marked the container's cgroup, or an ancestor up to its pod's
/// (they act on the cgroup they chose, which may be the pod's). Without a pod, the
/// container's own cgroup only.
fn oomd_marked<O>(c: &ContainerInfo, pod: Option<&str>, mark: &O) -> bool
where
    O: Fn(&str) -> Option<(&'static str, PathBuf)>,
{
    for cg in c.cgroups() {
        for p in cgroup_path::ancestors(cg) {
            if let Some((name, dir)) = mark(p) {
                tracing::debug!(xattr = name, cgroup = %dir.display(), container = %c.id, "a userspace OOM killer's mark");
                return true;
            }
            if pod.is_none_or(|pod| p == pod || !cgroup_path::is_under(p, pod)) {
                break;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// The paths a check asks about, in order, with a mark on `marked`.
    fn asked(c: &ContainerInfo, pod: Option<&str>, marked: &str) -> (bool, Vec<String>) {
        let seen = RefCell::new(Vec::new());
        let hit = oomd_marked(c, pod, &|p: &str| {
            seen.borrow_mut().push(p.to_string());
            (p == marked).then(|| ("user.oomd_ooms", PathBuf::from(p)))
        });
        (hit, seen.into_inner())
    }

    #[test]
    fn an_unknown_exit_code_is_containerd_s() {
        let d = |exit_code| DeathRecord {
            kind: 0,
            hook: 0,
            ktime_ns: 1,
            pid: 50,
            tgid: 50,
            exit_code,
            signals: 1,
            memcg_id: 0,
            dfl_cgroup_id: 0,
            comm: [0; 16],
            first: Default::default(),
            last: Default::default(),
        };
        assert_eq!(with_exit_code(d(EXIT_CODE_UNKNOWN), 137).exit_code, 9);
        assert_eq!(with_exit_code(d(EXIT_CODE_UNKNOWN), 3).exit_code, 3 << 8);
        assert_eq!(with_exit_code(d(EXIT_CODE_UNKNOWN), 0).exit_code, 0);
        // The kernel's own wins (here a core dump containerd cannot tell).
        assert_eq!(with_exit_code(d(0x80 | 11), 139).exit_code, 0x80 | 11);
    }

    #[test]
    fn the_marks_are_read_from_the_container_up_to_its_pod() {
        let c = ContainerInfo {
            task_cgroup: Some("/kubepods/burstable/podabc/c1".into()),
            ..ContainerInfo::default()
        };
        let pod = Some("/kubepods/burstable/podabc");
        let (hit, seen) = asked(&c, pod, "none");
        assert!(!hit);
        assert_eq!(
            seen,
            [
                "/kubepods/burstable/podabc/c1",
                "/kubepods/burstable/podabc"
            ]
        );
        assert!(asked(&c, pod, "/kubepods/burstable/podabc").0);
        // Above the pod is other pods' business.
        assert!(!asked(&c, pod, "/kubepods/burstable").0);
        // No pod: the container's own cgroup only.
        let (hit, seen) = asked(&c, None, "/kubepods/burstable/podabc");
        assert!(!hit);
        assert_eq!(seen, ["/kubepods/burstable/podabc/c1"]);
    }
}
