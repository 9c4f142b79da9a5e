//! Kernel records in, schema-1 events out.

use observer_common::{valid, Constraint, Hook, OomKillRecord, RecordKind};

use super::{
    facts::{oom_domain, victim_facts},
    kind::EventKind,
    schema::{
        CgroupRef, Event, ExitInfo, Explained, Incident, Trigger, Victim, VictimFacts, SCHEMA,
    },
};
use crate::kernel::clock::boot_rfc3339;

/// Resolves cgroup ids to paths for [`build`].
pub trait Resolve {
    /// Path of a cgroup id in the memory controller's hierarchy.
    fn memory_path(&mut self, id: u64) -> Option<String>;
}

/// Builds the JSON event for a kernel record. `memory_on_dfl` says which of the victim's
/// two cgroup ids is its cgroup in the memory controller's hierarchy.
pub fn build(r: &OomKillRecord, seq: u64, memory_on_dfl: bool, res: &mut dyn Resolve) -> Event {
    let has = |bit: u32| r.valid & bit != 0;
    let kind = RecordKind::from_u32(r.kind);
    let victim = matches!(
        kind,
        Some(
            RecordKind::OomKill
                | RecordKind::VictimExit
                | RecordKind::OomDecision
                | RecordKind::OomSkipped
        )
    )
    .then(|| {
        // On cgroup v2 a task's memory css can belong to an ancestor (where the controller is
        // not enabled below it); the task's own cgroup is the unified one.
        let cg = if memory_on_dfl {
            has(valid::VICTIM_DFL_CGROUP).then_some(r.victim_dfl_cgroup_id)
        } else {
            has(valid::VICTIM_MEMCG).then_some(r.victim_memcg_id)
        };
        Victim {
            pid: has(valid::VICTIM_PID).then_some(r.victim_pid),
            tgid: has(valid::VICTIM_TGID).then_some(r.victim_tgid),
            comm: has(valid::VICTIM_COMM).then(|| comm(&r.victim_comm)),
            uid: has(valid::VICTIM_UID).then_some(r.victim_uid),
            cgroup_id: cg,
            cgroup: cg.and_then(|id| res.memory_path(id)),
            unified_cgroup_id: (!memory_on_dfl && has(valid::VICTIM_DFL_CGROUP))
                .then_some(r.victim_dfl_cgroup_id),
            facts: if matches!(kind, Some(RecordKind::OomKill | RecordKind::OomDecision)) {
                victim_facts(r)
            } else {
                VictimFacts::default()
            },
        }
    });
    // The incident id is the decision's time; only the oom_kill_process hooks see it.
    let decided = matches!(
        kind,
        Some(RecordKind::OomKill | RecordKind::OomSkipped | RecordKind::OomDecision)
    )
    .then(|| has(valid::INCIDENT).then_some(r.detail.incident_id));
    let oom_cgroup = (has(valid::OOM_MEMCG) && r.oom_memcg_id != 0).then(|| CgroupRef {
        id: r.oom_memcg_id,
        path: res.memory_path(r.oom_memcg_id),
    });
    Event {
        schema: SCHEMA,
        seq,
        event: EventKind::of(kind),
        time: boot_rfc3339(r.ktime_ns),
        ktime_ns: r.ktime_ns,
        hook: Hook::from_u32(r.hook).map_or("unknown", Hook::as_str),
        victim,
        oom_cgroup,
        constraint: Constraint::from_u32(r.constraint).map(Constraint::as_str),
        trigger: (r.trigger_pid != 0 || r.trigger_comm[0] != 0).then(|| Trigger {
            pid: r.trigger_pid,
            tgid: r.trigger_tgid,
            comm: comm(&r.trigger_comm),
        }),
        container: None,
        containers: Vec::new(),
        published: false,
        exit: (kind == Some(RecordKind::VictimExit) && has(valid::EXIT_CODE))
            .then(|| ExitInfo::from_status(r.exit_code)),
        kill_seq: None,
        decided_at: decided.map(|d| d.map(boot_rfc3339)),
        decided_ktime_ns: decided,
        explained: (kind == Some(RecordKind::OomKill)).then(|| Explained {
            oom_domain: oom_domain(r),
            incident: has(valid::INCIDENT).then_some(Incident {
                id: r.detail.incident_id,
                victims: r.detail.incident_victims,
            }),
            ..Explained::default()
        }),
    }
}

fn comm(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}
