//! What the audit reads about a running container: its processes' cgroups and the limits on
//! them, through containerd and `/proc`.

use std::{fs, path::PathBuf};

use super::{
    assess::{assess, pod_cgroup, Assessment, Observed, SandboxProcess},
    memory_fs::MemoryFs,
    AuditError,
};
use crate::{
    enrich::{
        container::{ContainerInfo, Runtime},
        containerd::Client,
    },
    host::{cgroup_path::ancestors, procfs::live_memory_cgroup},
};

/// Reads what [`assess`] needs: the task's host pids (through containerd for runc-style
/// runtimes; the task's own pid, the sandbox process, for sandboxed ones, whose listed pids
/// are the sandbox's own), their memory cgroups, each one's effective limit, the pod's
/// limit and, for gVisor, the sandbox's `--total-memory`.
///
/// A reading that would make a finding is read again before it is returned: the same
/// processes, their cgroups and limits ([`read`]), and the second reading is the one that
/// counts. A process caught moving or exiting during the first never makes a finding, in the
/// daemon (where a late cgroup record can start an audit just after a kill) and in
/// `oom-observer audit`.
///
/// `Ok(None)`: the container has no running task (or its processes are gone).
pub async fn observe(
    client: Option<&Client>,
    c: &ContainerInfo,
    mem: &MemoryFs,
) -> Result<Option<Observed>, AuditError> {
    let first = observe_once(client, c, mem).await?;
    match first {
        Some(o) if finds(&assess(c, &o)) => read(c, &o.pids, mem),
        other => Ok(other),
    }
}

/// Whether an assessment raises (or keeps open) a finding of any kind.
fn finds(a: &Assessment) -> bool {
    a.declared.is_some() && (!a.unenforced.is_empty() || a.misplaced || a.oversized)
}

/// One reading: the task's pids from containerd, then [`read`].
async fn observe_once(
    client: Option<&Client>,
    c: &ContainerInfo,
    mem: &MemoryFs,
) -> Result<Option<Observed>, AuditError> {
    let Some(task_pid) = c.task_pid.filter(|p| *p > 0) else {
        return Ok(None);
    };
    let mut pids = vec![task_pid];
    if !c.sandboxed_runtime() {
        if let Some(client) = client {
            for p in client.list_pids(&c.namespace, &c.id).await? {
                if p > 0 && !pids.contains(&p) {
                    pids.push(p);
                }
            }
        }
    }
    read(c, &pids, mem)
}

/// What `/proc` and cgroupfs say now about the container's processes `pids`: [`observe`]'s
/// reading without containerd, and the re-check of a finding before it is reported (the
/// same pids, read again).
///
/// A process that is gone, exiting or a zombie is skipped: it holds no memory any more, and
/// on cgroup v1 its `/proc/<pid>/cgroup` names the root cgroup from the moment its exit
/// begins. Read then, an OOM-killed container's init looked like a process with no limit
/// outside its cgroup (a false `limit_unenforced`, when a late cgroup record re-audited the
/// container just after the kill).
pub fn read(
    c: &ContainerInfo,
    pids: &[u32],
    mem: &MemoryFs,
) -> Result<Option<Observed>, AuditError> {
    let mut o = Observed::default();
    for &pid in pids {
        let Some(cg) = live_memory_cgroup(pid, mem.is_v2()) else {
            continue;
        };
        o.pids.push(pid);
        if !o.placed.iter().any(|(p, _)| *p == cg) {
            let eff = mem.effective(&cg)?;
            o.placed.push((cg, eff));
        }
    }
    if o.placed.is_empty() {
        return Ok(None);
    }
    if let Some(pod) = pod_cgroup(c) {
        o.pod_limit = match mem.own_limit(&pod) {
            Ok(l) => l,
            // No pod cgroup: nothing declared at pod level.
            Err(AuditError::Gone(_)) => None,
            Err(e) => return Err(e),
        };
    }
    if let (Runtime::Gvisor, Some(task_pid)) = (c.runtime_kind(), c.task_pid) {
        let cmdline = fs::read(format!("/proc/{task_pid}/cmdline")).unwrap_or_default();
        o.sandbox = Some(SandboxProcess {
            pid: task_pid,
            total_memory: parse_total_memory(&cmdline),
        });
    }
    Ok(Some(o))
}

/// The cgroup directories a container's verdict depends on: each cgroup holding its
/// processes and every ancestor, and its pod's cgroup (watched for limit changes).
pub fn limit_dirs(c: &ContainerInfo, o: &Observed, mem: &MemoryFs) -> Vec<PathBuf> {
    let mut paths: Vec<String> = Vec::new();
    for (p, _) in &o.placed {
        for x in ancestors(p) {
            if !paths.iter().any(|y| y == x) {
                paths.push(x.to_string());
            }
        }
    }
    if let Some(pod) = pod_cgroup(c) {
        if !paths.contains(&pod) {
            paths.push(pod);
        }
    }
    paths.iter().filter_map(|p| mem.dir(p)).collect()
}

/// `--total-memory` from a NUL-separated command line (`--total-memory=N` or `--total-memory N`).
pub fn parse_total_memory(cmdline: &[u8]) -> Option<u64> {
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    for (i, a) in args.iter().enumerate() {
        let a = std::str::from_utf8(a).ok()?;
        let a = a.strip_prefix("--").or_else(|| a.strip_prefix('-'));
        let Some(a) = a else { continue };
        if let Some(v) = a.strip_prefix("total-memory=") {
            return v.parse().ok();
        }
        if a == "total-memory" {
            return std::str::from_utf8(args.get(i + 1)?).ok()?.parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_memory_from_runsc_command_lines() {
        let c = b"runsc-sandbox\0--root=/r\0boot\0--total-memory=536870912\0--cpu-num\x002\0id\0";
        assert_eq!(parse_total_memory(c), Some(512 << 20));
        let c = b"runsc\x00boot\x00--total-memory\x001024\x00";
        assert_eq!(parse_total_memory(c), Some(1024));
        assert_eq!(parse_total_memory(b"sleep\x00100\x00"), None);
    }
}
