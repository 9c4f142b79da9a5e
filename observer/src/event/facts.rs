//! The kernel's detail as facts: the victim's memory and badness, the OOM domain's counters,
//! in bytes.

use observer_common::{valid, OomKillRecord};

use super::schema::{OomDomain, VictimFacts, VictimMemory};

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

/// The victim's facts a kill or decision record carries.
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

/// The OOM domain a kill record carries, or `None` when the hook saw none of it.
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
