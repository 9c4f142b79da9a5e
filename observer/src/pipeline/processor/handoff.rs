//! TaskOOM, the ordered step before the sinks: a kill's container is named and its TaskOOM
//! handed to containerd before its line is written, within one deadline counted from the
//! kill; the kills made while containerd was away get theirs once it is back.

use std::sync::Arc;

use tracing::info;

use super::gap::GapQueue;
use crate::{
    enrich::{container::ContainerInfo, upkeep::Containerd},
    event::{Event, EventKind},
    kernel::clock::boot_ns,
    sinks::taskoom::{self, SharedPublisher},
};

/// Names a kill's container(s) and hands its TaskOOM over; owns what it needs, so the
/// daemon can answer queries while it waits.
pub type EnrichWork = std::pin::Pin<Box<dyn std::future::Future<Output = Enrichment> + Send>>;

/// What [`EnrichWork`] found.
#[derive(Debug, Default)]
pub struct Enrichment {
    /// The container(s) the kill is attributed to (`None`: none).
    pub owners: Option<Vec<ContainerInfo>>,
    /// Whether containerd took a TaskOOM for every one of them.
    pub published: bool,
    /// No container, and containerd was out of reach: tried again once it is back.
    pub in_gap: bool,
}

/// When a kill's TaskOOM is handed to containerd.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TaskOomAt {
    /// At the OOM killer's decision (`oom_kill_process` entry), before the kernel prints
    /// its report and sends SIGKILL, unless the victim already looked as if exiting (then
    /// at the kill). The default; on the strategies that do not see the decision
    /// (`tp_btf`, `tracepoint`) it is the same as `kill`.
    #[default]
    Decision,
    /// Always at the kill (`mark_victim`), after the SIGKILL.
    Kill,
}

/// Which kills get a TaskOOM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TaskOomFor {
    /// Every kill in a container, a child's included (as the runc shim does). The default:
    /// containerd's CRI marks the container OOMKilled either way, since the shim sends its
    /// own TaskOOM for a child's kill (docs/deaths.md), and every other subscriber learns of
    /// the kill at once.
    #[default]
    All,
    /// Only the kill of a container's init, or of any process of a sandboxed runtime
    /// (gVisor, Kata: the sandbox goes with it): a kill the container survives gets none.
    Init,
}

/// containerd's index (container names) and the TaskOOM publisher.
pub struct HandOff {
    containerd: Arc<Containerd>,
    publisher: SharedPublisher,
    taskoom_for: TaskOomFor,
}

impl HandOff {
    /// The hand-off through `containerd`'s index and `publisher`.
    pub fn new(containerd: Arc<Containerd>, publisher: SharedPublisher) -> Self {
        HandOff {
            containerd,
            publisher,
            taskoom_for: TaskOomFor::default(),
        }
    }

    /// Which kills get a TaskOOM.
    pub fn with_taskoom_for(mut self, f: TaskOomFor) -> Self {
        self.taskoom_for = f;
        self
    }

    /// The TaskOOM publisher.
    pub fn publisher(&self) -> &SharedPublisher {
        &self.publisher
    }

    /// containerd's index.
    pub fn containerd(&self) -> &Containerd {
        &self.containerd
    }

    /// The work that names the container(s) and, with `publish` (a kill, or a decision
    /// whose kill is certain), hands TaskOOM to containerd before the JSON line is written.
    pub fn work(&self, ev: &Event, publish: bool) -> EnrichWork {
        let cd = self.containerd.clone();
        let publisher = self.publisher.clone();
        let oom = ev.oom_cgroup.as_ref().and_then(|c| c.path.clone());
        // A memcg OOM without a kill is attributed through the cgroup that hit its limit.
        let victim = match &ev.victim {
            Some(v) => v.cgroup.clone(),
            None => oom.clone(),
        };
        let is_kill = ev.event == EventKind::OomKill;
        let init_only = self.taskoom_for == TaskOomFor::Init;
        let victim_tgid = ev.victim.as_ref().and_then(|v| v.tgid.or(v.pid));
        let ns_init = ev.victim.as_ref().and_then(|v| v.facts.ns_pid) == Some(1);
        let (seq, ktime_ns, kind) = (ev.seq, ev.ktime_ns, ev.event.as_str());
        let incident = ev.decided_ktime_ns.flatten();
        Box::pin(async move {
            let t0 = std::time::Instant::now();
            let since_kill = std::time::Duration::from_nanos(boot_ns().saturating_sub(ktime_ns));
            let woke_us = since_kill.as_micros() as u64;
            // One deadline for naming the container and handing its TaskOOM over, counted
            // from the kill: however containerd (or the disk, or the kills queued ahead)
            // behaves, the line goes out about HANDOFF after the kill.
            let deadline = taskoom::handoff_deadline(since_kill);
            let owners = match tokio::time::timeout_at(
                deadline,
                cd.attribute(victim.as_deref(), oom.as_deref()),
            )
            .await
            {
                Ok(found) => found,
                Err(_) => cd.attribute_indexed(victim.as_deref(), oom.as_deref()),
            };
            let attributed = t0.elapsed();
            if owners.is_empty() {
                return Enrichment {
                    in_gap: is_kill && !cd.connected(),
                    ..Default::default()
                };
            }
            let mut published = false;
            // The container goes with the kill: its init, or a sandbox's process.
            let ends = |c: &ContainerInfo| {
                ns_init
                    || c.runtime_kind().is_sandboxed()
                    || (victim_tgid.is_some() && c.task_pid == victim_tgid)
            };
            let to: Vec<&ContainerInfo> = owners.iter().filter(|c| !init_only || ends(c)).collect();
            if publish && !to.is_empty() {
                let mut p = publisher.lock().await;
                published = true;
                for c in to {
                    published &= p
                        .oom(&c.namespace, &c.id, ktime_ns, incident, deadline)
                        .await;
                }
            }
            tracing::debug!(
                seq,
                kind,
                woke_us,
                since_kill_us = boot_ns().saturating_sub(ktime_ns) / 1000,
                attribute_us = attributed.as_micros() as u64,
                publish_us = (t0.elapsed() - attributed).as_micros() as u64,
                "kill handed to containerd"
            );
            Enrichment {
                owners: Some(owners),
                published,
                in_gap: false,
            }
        })
    }

    /// After containerd is back and listed again: the kills made while it was away whose
    /// cgroups now resolve get their TaskOOMs, oldest first (their lines were written with
    /// `container: null`; the log names each). Each hand-off is bounded like a live kill's.
    pub async fn attribute_gap(&self, gap: &mut GapQueue) {
        while let Some(k) = gap.pop_front() {
            let owners = self
                .containerd
                .attribute_indexed(k.victim.as_deref(), k.oom.as_deref());
            if owners.is_empty() {
                continue;
            }
            let mut p = self.publisher.lock().await;
            for c in &owners {
                let deadline = taskoom::handoff_deadline(std::time::Duration::ZERO);
                let published = p.oom(&c.namespace, &c.id, k.ktime_ns, None, deadline).await;
                info!(seq = k.seq, namespace = %c.namespace, container = %c.id, published,
                    "a kill made while containerd was out of reach is attributed now; TaskOOM handed over");
            }
        }
    }
}
