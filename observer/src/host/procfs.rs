//! What `/proc` says about a process: its memory cgroup, its ancestry.

use std::fs;

/// The memory cgroup a process lives in, named from the real root (also when the daemon runs
/// in a cgroup namespace, where `/proc` shows it relative to the namespace).
pub fn proc_memory_cgroup(pid: u32, memory_on_dfl: bool) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    memory_cgroup_of(&text, memory_on_dfl).map(|p| super::cgroupfs::from_namespace(&p))
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

/// The memory-controller cgroup of a process, from the text of `/proc/<pid>/cgroup`.
pub fn memory_cgroup_of(proc_cgroup: &str, memory_on_dfl: bool) -> Option<String> {
    for line in proc_cgroup.lines() {
        let mut f = line.splitn(3, ':');
        let (id, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        let hit = if memory_on_dfl {
            id == "0" && ctrls.is_empty()
        } else {
            ctrls.split(',').any(|c| c == "memory")
        };
        if hit {
            return Some(path.to_string());
        }
    }
    None
}

/// `/proc/<pid>/exe` and the arguments of `/proc/<pid>/cmdline`, when the process there is
/// still the one named `comm` (a reaped victim's pid may already be another process's);
/// `None` for what cannot be read (a process that is gone, a zombie).
pub fn exe_and_cmdline(pid: u32, comm: Option<&str>) -> (Option<String>, Option<Vec<String>>) {
    let now = fs::read_to_string(format!("/proc/{pid}/comm")).ok();
    if comm.is_none() || now.as_deref().map(str::trim_end) != comm {
        return (None, None);
    }
    let exe = fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .filter(|b| !b.is_empty())
        .map(|b| {
            b.strip_suffix(&[0])
                .unwrap_or(&b)
                .split(|c| *c == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        });
    (exe, cmdline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_cgroup_memory_line() {
        let v1 = "12:pids:/x\n4:memory:/process_api/abc\n0::/\n";
        assert_eq!(
            memory_cgroup_of(v1, false).as_deref(),
            Some("/process_api/abc")
        );
        let v1multi = "5:cpu,memory:/p\n";
        assert_eq!(memory_cgroup_of(v1multi, false).as_deref(), Some("/p"));
        let v2 = "0::/kubepods.slice/x.scope\n";
        assert_eq!(
            memory_cgroup_of(v2, true).as_deref(),
            Some("/kubepods.slice/x.scope")
        );
        assert_eq!(memory_cgroup_of(v2, false), None);
        assert_eq!(memory_cgroup_of("garbage", true), None);
    }
}
