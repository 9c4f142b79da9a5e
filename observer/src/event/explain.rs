//! The kill explained: which limit fired in words, whether the container lives on, what
//! ran, and the one-line summary (the kernel's own detail is in [`facts`](super::facts)).

use super::schema::Event;
use crate::{
    enrich::container::ContainerInfo,
    host::{cgroup_path, procfs},
    scrub::{scrub, CmdlinePolicy},
};

/// `12.3 MiB` or `1.5 GiB`.
pub fn human_bytes(b: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let mib = b as f64 / MIB;
    if mib >= 1024.0 {
        format!("{:.1} GiB", mib / 1024.0)
    } else {
        format!("{mib:.1} MiB")
    }
}

/// Whose limit fired, as the container's and pod's cgroups say, for [`Explained::limit`](super::schema::Explained::limit).
/// `container_cgroups`: the cgroups of the container the kill is attributed to (empty
/// without one); `pod_cgroup`: its pod's.
pub fn limit_in_words(
    ev: &Event,
    container_cgroups: &[&str],
    pod_cgroup: Option<&str>,
) -> Option<&'static str> {
    if ev.constraint == Some(observer_common::Constraint::Global.as_str()) {
        return Some("node");
    }
    let oom = ev.oom_cgroup.as_ref()?;
    let Some(path) = oom.path.as_deref() else {
        // Only the path can tell a container's cgroup from any other.
        return container_cgroups.is_empty().then_some("cgroup");
    };
    if container_cgroups.contains(&path) {
        Some("container")
    } else if pod_cgroup == Some(path) {
        Some("pod")
    } else {
        Some("cgroup")
    }
}

/// The one-line summary, from what the event already says.
pub fn message(ev: &Event) -> Option<String> {
    let v = ev.victim.as_ref()?;
    let x = ev.explained.as_ref()?;
    let comm = v.comm.as_deref().unwrap_or("a process");
    let mut m = match v.tgid.or(v.pid) {
        Some(pid) => format!("{comm} (pid {pid}) OOM-killed: "),
        None => format!("{comm} OOM-killed: "),
    };
    let domain = x.oom_domain.as_ref();
    let who = match (x.limit.as_deref(), &ev.container) {
        (Some("node"), _) => None,
        (Some("container"), Some(c)) => Some(match (&c.name, &c.pod) {
            (Some(n), Some(p)) => format!(
                "container {n} of pod {}/{}",
                p.namespace.as_deref().unwrap_or("?"),
                p.name.as_deref().unwrap_or("?")
            ),
            (Some(n), None) => format!("container {n}"),
            _ => format!("container {}", short_id(&c.id)),
        }),
        (Some("pod"), Some(c)) => Some(match &c.pod {
            Some(p) => format!(
                "pod {}/{}",
                p.namespace.as_deref().unwrap_or("?"),
                p.name.as_deref().unwrap_or("?")
            ),
            None => format!("the pod of container {}", short_id(&c.id)),
        }),
        _ => Some(
            match ev.oom_cgroup.as_ref().and_then(|c| c.path.as_deref()) {
                Some(p) => format!("cgroup {p}"),
                None => "its memory cgroup".to_string(),
            },
        ),
    };
    match who {
        None => {
            m.push_str("the node ran out of memory");
            if let Some(b) = domain.and_then(|d| d.limit_bytes) {
                m.push_str(&format!(" ({} of RAM and swap)", human_bytes(b)));
            }
        }
        Some(w) => {
            m.push_str(&w);
            match domain.and_then(|d| d.limit_bytes) {
                Some(l) => m.push_str(&format!(" reached its {} limit", human_bytes(l))),
                None => m.push_str(" reached its limit"),
            }
            if let Some(u) = domain.and_then(|d| d.usage_bytes) {
                m.push_str(&format!(" (usage {})", human_bytes(u)));
            }
        }
    }
    if let Some(anon) = v.facts.memory.as_ref().and_then(|mem| mem.anon_rss_bytes) {
        m.push_str(&format!("; {comm} held {} anon", human_bytes(anon)));
    }
    match x.container_exits {
        Some(true) => m.push_str("; the container exits"),
        Some(false) => m.push_str("; a process was killed and the container keeps running"),
        None => {}
    }
    Some(m)
}

fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Fills what explains a kill once its container is known: which limit fired, whether the
/// container lives on, what ran (from `/proc`, while it is still there; its command line
/// under `policy`) and the summary.
pub fn explain(
    ev: &mut Event,
    owners: &[ContainerInfo],
    cmdlines: &mut procfs::CmdlineReader,
    policy: &CmdlinePolicy,
) {
    if ev.explained.is_none() {
        return;
    }
    let owner = owners.first();
    let cgroups: Vec<&str> = owner.map(|c| c.cgroups().collect()).unwrap_or_default();
    // A Kubernetes container's cgroup sits directly in its pod's.
    let pod_cgroup = owner
        .filter(|c| c.pod.is_some() || c.sandbox_id.is_some())
        .and_then(|c| c.cgroups().next())
        .and_then(cgroup_path::parent);
    let limit = limit_in_words(ev, &cgroups, pod_cgroup);
    let exits = owner.and_then(|c| container_exits(ev, c));
    if let Some(v) = ev.victim.as_mut() {
        if let Some(pid) = v.tgid.or(v.pid) {
            // Only a kill confined to a cgroup leaves the node's memory to our read.
            let with_cmdline = policy.reads()
                && match ev.constraint {
                    Some(c) => c == observer_common::Constraint::Memcg.as_str(),
                    None => !procfs::node_short_of_memory(),
                };
            let (exe, cmdline) = cmdlines.exe_and_cmdline(
                pid,
                v.comm.as_deref(),
                with_cmdline,
                procfs::CMDLINE_BUDGET,
            );
            v.facts.exe = exe;
            v.facts.cmdline = cmdline.and_then(|args| scrub(args, policy));
        }
    }
    if let Some(x) = ev.explained.as_mut() {
        x.limit = limit.map(String::from);
        x.container_exits = exits;
    }
    let msg = message(ev);
    if let Some(x) = ev.explained.as_mut() {
        x.message = msg;
    }
}

/// Whether the victim was the container's init: its task's pid, or pid 1 of its namespace.
fn container_exits(ev: &Event, c: &ContainerInfo) -> Option<bool> {
    let v = ev.victim.as_ref()?;
    let tgid = v.tgid.or(v.pid)?;
    if c.task_pid == Some(tgid) || v.facts.ns_pid == Some(1) {
        return Some(true);
    }
    (c.task_pid.is_some() || v.facts.ns_pid.is_some()).then_some(false)
}
