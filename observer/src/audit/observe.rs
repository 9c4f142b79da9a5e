//! What the audit reads about a running container: its processes' cgroups and the limits on
//! them, through containerd and `/proc`.

use std::{fs, path::PathBuf};

use super::{
    assess::{pod_cgroup, Observed, SandboxProcess},
    memory_fs::MemoryFs,
    AuditError,
};
use crate::{
    enrich::{
        container::{ContainerInfo, Runtime},
        containerd::Client,
    },
    host::{cgroup_path::ancestors, procfs::proc_memory_cgroup},
};

/// Reads what [`assess`] needs: the task's host pids (through containerd for runc-style
/// runtimes; the task's own pid, the sandbox process, for sandboxed ones, whose listed pids
/// are the sandbox's own), their memory cgroups, each one's effective limit, the pod's
/// limit and, for gVisor, the sandbox's `--total-memory`.
///
/// `Ok(None)`: the container has no running task (or its processes are gone).
pub async fn observe(
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
    let mut o = Observed::default();
    for pid in pids {
        // A process that exited in between is skipped: it holds no memory any more.
        let Some(cg) = proc_memory_cgroup(pid, mem.is_v2()) else {
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
    if c.runtime_kind() == Runtime::Gvisor {
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
