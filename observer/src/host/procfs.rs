//! What `/proc` says about a process: its memory cgroup, its ancestry.

use std::fs;

use super::{cgroup_path::memory_cgroup_of, cgroupfs::from_namespace};

/// The memory cgroup a process lives in, named from the real root (also when the daemon runs
/// in a cgroup namespace, where `/proc` shows it relative to the namespace).
pub fn proc_memory_cgroup(pid: u32, memory_on_dfl: bool) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    memory_cgroup_of(&text, memory_on_dfl).map(|p| from_namespace(&p))
}

/// What `/proc/<pid>/stat` says about a live process: when it started (`CLOCK_BOOTTIME`,
/// in clock ticks as the file has it, and in ns) and whether it is a zombie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStart {
    /// Field 22, `starttime`: clock ticks since boot.
    pub ticks: u64,
    /// The same in ns.
    pub ns: u64,
    /// State `Z`: exited, not yet reaped (its pid is still its own).
    pub zombie: bool,
}

/// Clock ticks per second of `/proc/<pid>/stat`'s times.
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf reads a constant.
    let t = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// The start of process `pid`, if it exists now.
pub fn proc_start(pid: u32) -> Option<ProcStart> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start(&stat, clock_ticks())
}

fn parse_start(stat: &str, hz: u64) -> Option<ProcStart> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    // After the comm: state is field 3, starttime field 22.
    let state = f.next()?;
    let ticks: u64 = f.nth(18)?.parse().ok()?;
    Some(ProcStart {
        ticks,
        ns: ticks.saturating_mul(1_000_000_000 / hz.max(1)),
        zombie: state == "Z",
    })
}

/// `PF_EXITING` in `/proc/<pid>/stat`'s flags (field 9): the task has begun its exit.
const PF_EXITING: u64 = 0x4;

/// Whether process `pid` is gone, exiting or a zombie (also when its stat cannot be read).
/// From the moment its exit begins, cgroup v1 shows it in the root cgroup: its
/// `/proc/<pid>/cgroup` says `/`, whatever cgroup it ran in (v2 keeps the cgroup).
pub fn gone_or_exiting(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| parse_exiting(&stat))
        .unwrap_or(true)
}

fn parse_exiting(stat: &str) -> Option<bool> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    // After the comm: state is field 3, flags field 9.
    let state = f.next()?;
    let flags: u64 = f.nth(5)?.parse().ok()?;
    Some(matches!(state, "Z" | "X" | "x") || flags & PF_EXITING != 0)
}

/// [`proc_memory_cgroup`] of a process that is alive: `None` for one that is gone, exiting
/// or a zombie, whose cgroup v1 line names the root instead of its cgroup. Read after the
/// cgroup, so an exit that began before the read is always seen.
pub fn live_memory_cgroup(pid: u32, memory_on_dfl: bool) -> Option<String> {
    let cg = proc_memory_cgroup(pid, memory_on_dfl)?;
    (!gone_or_exiting(pid)).then_some(cg)
}

/// `pid` and its ancestors (parent, grandparent, …), from `/proc/<pid>/stat`: a process
/// forked after the last audit is found through the parent that was seen.
pub fn ancestry(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut cur = pid;
    for _ in 0..32 {
        let Ok(stat) = fs::read_to_string(format!("/proc/{cur}/stat")) else {
            break;
        };
        // The comm field is in parentheses and may hold spaces: read after the last ')'.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            break;
        };
        let Some(ppid) = rest
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<u32>().ok())
        else {
            break;
        };
        if ppid <= 1 || out.contains(&ppid) {
            break;
        }
        out.push(ppid);
        cur = ppid;
    }
    out
}

/// `/proc/<pid>/exe` and the arguments of `/proc/<pid>/cmdline`, when the process there is
/// still the one named `comm` (a reaped victim's pid may already be another process's);
/// `None` for what cannot be read (a process that is gone, a zombie). `with_cmdline: false`
/// leaves the arguments unread: see [`node_short_of_memory`] for why that matters.
pub fn exe_and_cmdline(
    pid: u32,
    comm: Option<&str>,
    with_cmdline: bool,
) -> (Option<String>, Option<Vec<String>>) {
    let now = fs::read_to_string(format!("/proc/{pid}/comm")).ok();
    if comm.is_none() || now.as_deref().map(str::trim_end) != comm {
        return (None, None);
    }
    let exe = fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    if !with_cmdline {
        return (exe, None);
    }
    (exe, cmdline(pid))
}

/// The arguments of `/proc/<pid>/cmdline`. The read goes through the process's memory
/// (`access_remote_vm`), which for an OOM victim the kernel is tearing down: it can block.
fn cmdline(pid: u32) -> Option<Vec<String>> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .filter(|b| !b.is_empty())
        .map(|b| {
            b.strip_suffix(&[0])
                .unwrap_or(&b)
                .split(|c| *c == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
}

/// How long the record path waits for a victim's `/proc/<pid>/cmdline`: the records behind
/// it (the next kill's decision among them) wait as long. A bound, not a measured cost: the
/// slow-console runs (docs/bench/printk.md) show the same long waits with and without it,
/// so no cmdline read was seen to block; the read goes through memory the kernel is freeing.
pub const CMDLINE_BUDGET: std::time::Duration = std::time::Duration::from_millis(20);

/// Reads victims' command lines on a thread of its own, so that a read that waits in the
/// kernel holds the record path back by at most a budget. One read at a time: while one is
/// still waiting, later victims go without their arguments (`None`) instead of piling up
/// threads behind the same lock.
pub struct CmdlineReader {
    requests: Option<std::sync::mpsc::Sender<(u64, u32)>>,
    answers: std::sync::mpsc::Receiver<(u64, Option<Vec<String>>)>,
    next: u64,
    /// The read that ran past its budget and has not answered yet.
    waiting: Option<u64>,
    /// Command lines left unread because a read ran past its budget.
    pub unread: u64,
}

impl CmdlineReader {
    /// Starts the reading thread (without it, no command line is read).
    pub fn start() -> CmdlineReader {
        CmdlineReader::with(cmdline)
    }

    /// The same, reading with `read` (the tests' slow reader).
    fn with(read: fn(u32) -> Option<Vec<String>>) -> CmdlineReader {
        let (req_tx, req_rx) = std::sync::mpsc::channel::<(u64, u32)>();
        let (ans_tx, answers) = std::sync::mpsc::channel();
        let started = std::thread::Builder::new()
            .name("cmdline".into())
            .spawn(move || {
                for (id, pid) in req_rx {
                    if ans_tx.send((id, read(pid))).is_err() {
                        break;
                    }
                }
            });
        if let Err(e) = &started {
            tracing::warn!(error = %e, "cannot start the cmdline reader's thread: kill lines carry no cmdline");
        }
        CmdlineReader {
            requests: started.ok().map(|_| req_tx),
            answers,
            next: 0,
            waiting: None,
            unread: 0,
        }
    }

    /// `exe_and_cmdline`, the command line read within `budget` (else `None`).
    pub fn exe_and_cmdline(
        &mut self,
        pid: u32,
        comm: Option<&str>,
        with_cmdline: bool,
        budget: std::time::Duration,
    ) -> (Option<String>, Option<Vec<String>>) {
        let (exe, _) = exe_and_cmdline(pid, comm, false);
        if !with_cmdline || exe.is_none() {
            return (exe, None);
        }
        if let Some(id) = self.waiting {
            // The late answer, if it came, is for a kill already written.
            while let Ok((got, _)) = self.answers.try_recv() {
                if got == id {
                    self.waiting = None;
                }
            }
            if self.waiting.is_some() {
                self.unread += 1;
                return (exe, None);
            }
        }
        let Some(tx) = &self.requests else {
            return (exe, None);
        };
        self.next += 1;
        let id = self.next;
        if tx.send((id, pid)).is_err() {
            return (exe, None);
        }
        match self.answers.recv_timeout(budget) {
            Ok((got, args)) if got == id => (exe, args),
            _ => {
                self.waiting = Some(id);
                self.unread += 1;
                tracing::debug!(pid, unread = self.unread, budget_ms = budget.as_millis() as u64,
                    "the victim's cmdline did not answer within its budget: the line goes without it");
                (exe, None)
            }
        }
    }
}

/// Whether the node itself is short of memory: `MemAvailable` under 1/16 of `MemTotal`
/// (`/proc/meminfo`). Reading an OOM victim's `/proc/<pid>/cmdline` takes a reference on its
/// memory and then allocates a page: in a system-wide OOM that allocation waits for memory
/// the reference itself keeps from being freed. Where nothing else is killable the kernel
/// panics ("System is deadlocked on memory", seen in the arm64 6.12 guest); on a node it
/// kills a second process. `true` also when the file cannot be read.
pub fn node_short_of_memory() -> bool {
    let Ok(text) = fs::read_to_string("/proc/meminfo") else {
        return true;
    };
    meminfo_short(&text).unwrap_or(true)
}

fn meminfo_short(text: &str) -> Option<bool> {
    let kib = |key: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key))?
            .trim_start_matches(':')
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some(kib("MemAvailable")? < kib("MemTotal")? / 16)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cmdline_reader_reads_a_live_process_and_names_no_other() {
        let me = std::process::id();
        let comm = std::fs::read_to_string(format!("/proc/{me}/comm")).unwrap_or_default();
        let mut r = super::CmdlineReader::start();
        let budget = std::time::Duration::from_secs(5);
        let (exe, args) = r.exe_and_cmdline(me, Some(comm.trim_end()), true, budget);
        assert_eq!(
            exe,
            std::env::current_exe()
                .ok()
                .map(|p| p.display().to_string())
        );
        let want: Vec<String> = std::env::args().collect();
        assert_eq!(args.as_ref(), Some(&want));
        // Another process's name: nothing is taken from a pid that is not the victim's.
        assert_eq!(
            r.exe_and_cmdline(me, Some("not-this"), true, budget),
            (None, None)
        );
        // Without the arguments asked for, none are read.
        assert!(r
            .exe_and_cmdline(me, Some(comm.trim_end()), false, budget)
            .1
            .is_none());
        assert_eq!(r.unread, 0);
    }

    #[test]
    fn a_cmdline_read_past_its_budget_holds_back_no_kill() {
        fn slow(pid: u32) -> Option<Vec<String>> {
            std::thread::sleep(std::time::Duration::from_millis(300));
            super::cmdline(pid)
        }
        let me = std::process::id();
        let comm = std::fs::read_to_string(format!("/proc/{me}/comm")).unwrap_or_default();
        let comm = Some(comm.trim_end());
        let mut r = super::CmdlineReader::with(slow);
        let budget = std::time::Duration::from_millis(20);
        let t = std::time::Instant::now();
        let (exe, args) = r.exe_and_cmdline(me, comm, true, budget);
        assert!(exe.is_some() && args.is_none(), "{exe:?} {args:?}");
        // While that read still waits, the next kill does not wait at all.
        assert!(r.exe_and_cmdline(me, comm, true, budget).1.is_none());
        assert!(
            t.elapsed() < std::time::Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(r.unread, 2);
        // Once it has answered, reads are made again (and this one has a long budget).
        std::thread::sleep(std::time::Duration::from_millis(400));
        let long = std::time::Duration::from_secs(5);
        assert!(r.exe_and_cmdline(me, comm, true, long).1.is_some());
    }

    #[test]
    fn meminfo_short_compares_available_with_a_sixteenth_of_total() {
        let m =
            |avail: u64| format!("MemTotal: 1600 kB\nMemFree: 10 kB\nMemAvailable: {avail} kB\n");
        assert_eq!(super::meminfo_short(&m(99)), Some(true));
        assert_eq!(super::meminfo_short(&m(100)), Some(false));
        assert_eq!(super::meminfo_short("MemTotal: 1600 kB\n"), None);
    }

    use super::*;

    #[test]
    fn exiting_is_read_from_the_state_and_the_flags() {
        // A live task (flags 0x400000, PF_FORKNOEXEC), a zombie, a task in its exit
        // (PF_EXITING 0x4, still running), and a comm with `) ` in it.
        let live = "12895 (a) b) S 12849 12849 10917 0 -1 4194560 128 0 0 0 0 0 0 0 20 0 1 0 329301 3133440 383";
        assert_eq!(parse_exiting(live), Some(false));
        assert_eq!(parse_exiting(&live.replace(" S ", " Z ")), Some(true));
        assert_eq!(
            parse_exiting(&live.replace(" 4194560 ", " 4194564 ")),
            Some(true)
        );
        assert_eq!(parse_exiting("garbage"), None);
        assert!(!gone_or_exiting(std::process::id()));
        assert!(gone_or_exiting(u32::MAX));
    }

    /// A real zombie: its cgroup is still read by `proc_memory_cgroup` (on cgroup v1 as `/`,
    /// the root), never by `live_memory_cgroup`.
    #[test]
    fn a_zombie_has_no_live_memory_cgroup() {
        let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let dfl = !text.lines().any(|l| l.split(':').nth(1) == Some("memory"));
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let pid = child.id();
        let live = live_memory_cgroup(pid, dfl).expect("a live process has its cgroup");
        child.kill().expect("kill");
        // Unreaped: a zombie until wait().
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while proc_start(pid).is_some_and(|s| !s.zombie) {
            assert!(std::time::Instant::now() < deadline, "no zombie");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if !dfl && live != "/" {
            // Why the zombie must not be read: cgroup v1 names the root, not its cgroup.
            assert_eq!(proc_memory_cgroup(pid, dfl).as_deref(), Some("/"), "{live}");
        }
        assert!(gone_or_exiting(pid));
        assert_eq!(live_memory_cgroup(pid, dfl), None);
        child.wait().expect("wait");
    }

    #[test]
    fn start_time_and_state_after_a_comm_with_spaces() {
        let stat = "12895 (a b) c) Z 12849 12849 10917 0 -1 4194304 128 0 0 0 0 0 0 0 20 0 1 0 329301 3133440 383";
        assert_eq!(
            parse_start(stat, 100),
            Some(ProcStart {
                ticks: 329301,
                ns: 3_293_010_000_000,
                zombie: true
            })
        );
        assert_eq!(parse_start("garbage", 100), None);
        assert!(proc_start(std::process::id()).is_some_and(|s| !s.zombie));
    }
}
