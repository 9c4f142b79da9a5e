//! The kill explained: the kernel's detail as facts (the victim's memory, the OOM domain),
//! which limit fired in words, whether the container lives on, and the one-line summary.

use observer_common::{valid, OomKillRecord};

use super::event::{Event, OomDomain, VictimFacts, VictimMemory};
use crate::{
    enrich::container::ContainerInfo,
    host::{cgroup_path, procfs},
};

/// The system's page size (the unit of the kernel's counters).
pub fn page_size() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .map_or(4096, |v| v as u64)
    })
}

/// A counter in pages as bytes; per-CPU counters can read slightly negative, which the kernel
/// reports as 0 (`percpu_counter_read_positive`).
fn pages(n: i64) -> u64 {
    (n.max(0) as u64).saturating_mul(page_size())
}

/// A page counter limit in bytes; `None` when it is the "no limit" value (`PAGE_COUNTER_MAX`,
/// `LONG_MAX / PAGE_SIZE`).
pub(super) fn limit(pages_: u64) -> Option<u64> {
    (pages_ < i64::MAX as u64 / page_size()).then(|| pages_ * page_size())
}

pub(super) fn victim_facts(r: &OomKillRecord) -> VictimFacts {
    let has = |bit: u32| r.valid & bit != 0;
    let d = &r.detail;
    let rss = has(valid::RSS);
    let memory = VictimMemory {
        total_vm_bytes: has(valid::TOTAL_VM).then(|| pages(d.total_vm_pages as i64)),
        anon_rss_bytes: rss.then(|| pages(d.anon_rss_pages)),
        file_rss_bytes: rss.then(|| pages(d.file_rss_pages)),
        shmem_rss_bytes: rss.then(|| pages(d.shmem_rss_pages)),
        swap_bytes: rss.then(|| pages(d.swap_ents)),
        pgtables_bytes: has(valid::PGTABLES).then(|| d.pgtables_bytes.max(0) as u64),
    };
    VictimFacts {
        ns_pid: has(valid::NS_PID).then_some(d.ns_pid),
        oom_score_adj: has(valid::OOM_SCORE_ADJ).then_some(d.oom_score_adj),
        points: has(valid::POINTS).then_some(d.chosen_points),
        memory: (memory != VictimMemory::default()).then_some(memory),
        exe: None,
        cmdline: None,
    }
}

pub(super) fn oom_domain(r: &OomKillRecord) -> Option<OomDomain> {
    let has = |bit: u32| r.valid & bit != 0;
    let d = &r.detail;
    let mem = has(valid::DOMAIN_MEMORY);
    let swap = has(valid::DOMAIN_SWAP);
    let total_pages = has(valid::TOTAL_PAGES).then_some(d.total_pages);
    let global = has(valid::OOM_MEMCG) && r.oom_memcg_id == 0;
    let dom = OomDomain {
        usage_bytes: mem.then(|| d.domain_usage_pages.saturating_mul(page_size())),
        limit_bytes: if mem {
            limit(d.domain_limit_pages)
        } else if global {
            // A global OOM's domain is the node: all of RAM and swap.
            total_pages.map(|p| p.saturating_mul(page_size()))
        } else {
            None
        },
        swap_usage_bytes: swap.then(|| d.domain_swap_usage_pages.saturating_mul(page_size())),
        swap_limit_bytes: if swap {
            limit(d.domain_swap_limit_pages)
        } else {
            None
        },
        total_pages,
    };
    (dom != OomDomain::default()).then_some(dom)
}

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

/// Whose limit fired, as the container's and pod's cgroups say, for [`Explained::limit`].
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
/// container lives on, what ran (from `/proc`, while it is still there) and the summary.
pub fn explain(ev: &mut Event, owners: &[ContainerInfo], cmdlines: &mut procfs::CmdlineReader) {
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
            let with_cmdline = match ev.constraint {
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
            v.facts.cmdline = cmdline;
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
