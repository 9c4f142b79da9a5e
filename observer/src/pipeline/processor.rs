//! The processor: each kernel record becomes an event, its TaskOOM is handed to containerd
//! (the ordered step before the sinks), and the event goes to the sinks in kernel order. It
//! owns the event sequence, so kills, losses and audit findings share one gap-free `seq`.
//! Its rooms: the cgroup [`paths`], the open [`decisions`], the [`gap`] queue of kills made
//! while containerd was away, and the TaskOOM [`handoff`].

use std::{io, sync::Arc};

use observer_common::{valid, CgroupAttachRecord, OomKillRecord, RecordKind};
use tracing::warn;

use crate::{
    audit::{driver::AuditDriver, finding::FindingEvent},
    enrich::upkeep::{Containerd, TaskExited},
    event::{
        death::{self, ContainerExit},
        explain::explain,
        ContainerRef, Event, EventKind, LostEvent,
    },
    forecast::{event::RiskEvent, lead::Warnings},
    host::{oom_control::StallWatch, oomd, procfs::CmdlineReader},
    kernel::{
        clock::boot_ns,
        maps::LostCounts,
        record::{mkdir_path, Record},
    },
    query::history::{self, Answer, History, Kill, Query},
    scrub::CmdlinePolicy,
    sinks::{taskoom::SharedPublisher, Line, Sinks},
};

pub mod deaths;
pub mod decisions;
pub mod gap;
pub mod handoff;
pub mod paths;

use deaths::Deaths;
use decisions::{name_skip, OpenDecisions};
use gap::GapQueue;
use handoff::HandOff;
pub use handoff::{EnrichWork, Enrichment, TaskOomAt, TaskOomFor};
use paths::CgroupPaths;

/// What [`Processor::begin`] left to do.
pub enum Begun {
    /// The record is handled (its line, if any, is written).
    Done,
    /// The event waits for its container and TaskOOM: await the work, then
    /// [`Processor::finish`].
    Enrich(Box<Event>, EnrichWork),
}

/// Turns records into events, in order, and hands them to the sinks.
pub struct Processor {
    seq: u64,
    paths: CgroupPaths,
    malformed: u64,
    /// containerd's index and the TaskOOM publisher; `None` runs kernel-only.
    handoff: Option<HandOff>,
    history: History,
    audits: Option<AuditDriver>,
    gap: GapQueue,
    decisions: OpenDecisions,
    /// Every line goes to each, in this order.
    sinks: Sinks,
    taskoom_at: TaskOomAt,
    cmdlines: CmdlineReader,
    /// What becomes of the victims' command lines.
    cmdline_policy: CmdlinePolicy,
    /// Told of new memory cgroups (cgroup v1 `oom_kill_disable` stalls).
    stalls: Option<StallWatch>,
    /// Signaled exits, waiting for containerd to say whose init each was.
    deaths: Deaths,
    /// The forecast's open warnings (a kill's lead time); none with the forecast off.
    warnings: Option<Warnings>,
}

impl Processor {
    /// A processor naming cgroups from `paths` (scanned on a thread of its own: see
    /// [`CgroupPaths::start`]) and writing to `sinks`, in their order.
    pub fn new(paths: CgroupPaths, sinks: Sinks) -> Self {
        Processor {
            seq: 0,
            paths,
            malformed: 0,
            handoff: None,
            history: History::default(),
            audits: None,
            gap: GapQueue::default(),
            decisions: OpenDecisions::default(),
            sinks,
            taskoom_at: TaskOomAt::default(),
            cmdlines: CmdlineReader::start(),
            cmdline_policy: CmdlinePolicy::default(),
            stalls: None,
            deaths: Deaths::default(),
            warnings: None,
        }
    }

    /// Kills say how early the forecast warned (`warning_lead_s`).
    pub fn with_forecast(mut self) -> Self {
        self.warnings = Some(Warnings::default());
        self
    }

    /// Tells the `memory.oom_control` watcher of each new memory cgroup.
    pub fn with_stall_watch(mut self, w: StallWatch) -> Self {
        self.stalls = Some(w);
        self
    }

    /// When TaskOOM is handed over: at the kill, or at the OOM killer's decision.
    pub fn with_taskoom_at(mut self, at: TaskOomAt) -> Self {
        self.taskoom_at = at;
        self
    }

    /// What becomes of the victims' command lines (default: scrubbed with the default words).
    pub fn with_cmdline_policy(mut self, policy: CmdlinePolicy) -> Self {
        self.cmdline_policy = policy;
        self
    }

    /// Adds the containerd index (container names) and the TaskOOM hand-off, for the kills
    /// `taskoom_for` says.
    pub fn with_containerd(
        mut self,
        cd: Arc<Containerd>,
        publisher: SharedPublisher,
        taskoom_for: TaskOomFor,
    ) -> Self {
        self.handoff = Some(HandOff::new(cd, publisher).with_taskoom_for(taskoom_for));
        self
    }

    /// Adds the limit audit (it sees the processes that move between cgroups).
    pub fn with_audit(mut self, audits: AuditDriver) -> Self {
        self.audits = Some(audits);
        self
    }

    /// The TaskOOM publisher, if any.
    pub fn publisher(&self) -> Option<&SharedPublisher> {
        self.handoff.as_ref().map(HandOff::publisher)
    }

    /// The limit audit, if any.
    pub fn audits(&mut self) -> Option<&mut AuditDriver> {
        self.audits.as_mut()
    }

    /// The sinks' upkeep, off the kill path (the daemon calls it every few seconds).
    pub fn upkeep(&mut self) {
        for s in &mut self.sinks {
            s.upkeep();
        }
    }

    /// Handles one ring-buffer item.
    pub async fn handle(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self.begin(bytes)? {
            Begun::Done => Ok(()),
            Begun::Enrich(ev, work) => {
                let e = work.await;
                self.finish(*ev, e)
            }
        }
    }

    /// First half of [`Processor::handle`]: everything but containerd. A kill or memcg OOM
    /// that may belong to a container comes back with the work that names it and hands its
    /// TaskOOM over (`'static`: the caller awaits it while it answers queries, and passes
    /// the result to [`Processor::finish`] before it begins the next record).
    pub fn begin(&mut self, bytes: &[u8]) -> io::Result<Begun> {
        match Record::parse(bytes) {
            Ok(Record::Oom(r)) => {
                self.paths.scanned();
                let received_us = boot_ns().saturating_sub(r.ktime_ns) / 1000;
                tracing::trace!(received_us, kind = r.kind, "record read");
                match RecordKind::from_u32(r.kind) {
                    Some(RecordKind::OomDecision) => return Ok(self.begin_decision(&r)),
                    Some(RecordKind::OomSkipped) => return self.begin_skipped(&r),
                    _ => {}
                }
                self.seq += 1;
                let mut ev = self.paths.build(&r, self.seq);
                if ev.event == EventKind::VictimExit {
                    // The exit belongs to the container its kill was attributed to.
                    let kill = self.history.record_exit(&ev);
                    ev.kill_seq = Some(kill.map(|k| k.seq));
                    ev.container = kill.and_then(|k| k.container.clone());
                    self.emit(&ev)?;
                    return Ok(Begun::Done);
                }
                // Its decision, if any, is settled: the kill came.
                self.decisions.settle(&ev);
                let publish = ev.event == EventKind::OomKill;
                match self.enrichment(&ev, publish) {
                    Some(work) => Ok(Begun::Enrich(Box::new(ev), work)),
                    None => {
                        self.finish(ev, Enrichment::default())?;
                        Ok(Begun::Done)
                    }
                }
            }
            Ok(Record::Mkdir(m)) => {
                if let Some(s) = &self.stalls {
                    s.cgroup_created(m.root, m.id, mkdir_path(&m));
                }
                self.paths.learn(&m);
                Ok(Begun::Done)
            }
            Ok(Record::Death(d)) => {
                self.deaths.insert(d);
                Ok(Begun::Done)
            }
            Ok(Record::Attach(a)) => {
                if let Some(s) = &self.stalls {
                    s.cgroup_attached(a.root, a.id);
                }
                self.on_migration(&a);
                Ok(Begun::Done)
            }
            Err(e) => {
                self.malformed += 1;
                warn!(error = %e, malformed_total = self.malformed, "dropped a malformed ring-buffer record");
                Ok(Begun::Done)
            }
        }
    }

    /// The OOM killer's decision (fentry/kprobe): its TaskOOM is handed over now, before the
    /// kernel prints its report and sends SIGKILL, unless the victim looked already exiting
    /// (then the kernel may kill nobody, and only a kill publishes). It writes no line: the
    /// kill's line follows, with the decision's time; a skipped kill's line uses it.
    fn begin_decision(&mut self, r: &OomKillRecord) -> Begun {
        let ev = self.paths.build(r, 0);
        let certain = self.taskoom_at == TaskOomAt::Decision
            && r.valid & valid::DOUBT != 0
            && r.detail.decision_doubt == 0;
        if !certain {
            tracing::debug!(
                doubt = r.detail.decision_doubt,
                pid = r.victim_pid,
                "the OOM killer chose a victim that may not be killed: its TaskOOM waits for the kill"
            );
        }
        match self.enrichment(&ev, certain) {
            Some(work) => Begun::Enrich(Box::new(ev), work),
            None => {
                self.decisions.open(ev);
                Begun::Done
            }
        }
    }

    /// The OOM killer chose a victim and then killed nobody (the victim was already
    /// exiting). No TaskOOM; the line says so, named after the decision's victim and
    /// container (see [`name_skip`]).
    fn begin_skipped(&mut self, r: &OomKillRecord) -> io::Result<Begun> {
        self.seq += 1;
        let mut ev = self.paths.build(r, self.seq);
        let Some(d) = self.decisions.settle(&ev) else {
            // The decision's record was lost: named from this one, never published.
            return Ok(match self.enrichment(&ev, false) {
                Some(work) => Begun::Enrich(Box::new(ev), work),
                None => {
                    self.finish(ev, Enrichment::default())?;
                    Begun::Done
                }
            });
        };
        name_skip(&mut ev, d);
        self.emit(&ev)?;
        Ok(Begun::Done)
    }

    /// Second half: the event gets its container(s), enters the history, and its line is
    /// written.
    pub fn finish(&mut self, mut ev: Event, e: Enrichment) -> io::Result<()> {
        if let Some(owners) = &e.owners {
            ev.container = owners.first().map(ContainerRef::from);
            if owners.len() > 1 {
                ev.containers = owners.iter().map(ContainerRef::from).collect();
            }
        }
        ev.published = e.published;
        if ev.event == EventKind::OomDecision {
            self.decisions.open(ev);
            return Ok(());
        }
        // After the TaskOOM: what follows only explains the kill.
        explain(
            &mut ev,
            e.owners.as_deref().unwrap_or_default(),
            &mut self.cmdlines,
            &self.cmdline_policy,
        );
        if let Some(w) = self.warnings.as_mut() {
            w.on_kill(&mut ev);
        }
        if ev.event == EventKind::OomKill {
            self.history.record_kill(&ev);
            if e.in_gap {
                self.gap.push(&ev);
            }
        }
        self.emit(&ev)
    }

    /// A container's init exited: its `container_exit` event, the cause joined from the
    /// kernel's record of the exit (read before this is called) and the kills this run saw.
    /// [`Processor::write_exit`] writes it, once the kubelet's view is read or predicted.
    pub fn container_exit(&mut self, x: &TaskExited) -> ContainerExit {
        let kills = self.history.find(&Query {
            container: Some(x.container.id.clone()),
            namespace: Some(x.container.namespace.clone()),
            ..Query::default()
        });
        let handoff = self.handoff.as_ref();
        let mounts = self.paths.mounts().clone();
        let paths = &mut self.paths;
        let join = deaths::Join {
            kills,
            policy: &self.cmdline_policy,
            path_of: |id| paths.memory_path_scanned(id),
            oomd_mark: |cg: &str| oomd::mark_in(&mounts, cg),
            container_of: |cg: &str| {
                handoff?
                    .containerd()
                    .attribute_indexed(Some(cg), None)
                    .first()
                    .map(ContainerRef::from)
            },
        };
        deaths::container_exit(x, self.deaths.take(x.pid), join)
    }

    /// Writes a `container_exit` line, in the same sequence as the kills.
    pub fn write_exit(&mut self, mut ev: ContainerExit) -> io::Result<()> {
        self.seq += 1;
        ev.seq = self.seq;
        ev.message = death::message(&ev);
        self.emit_line(Line::Exit(&ev))?;
        self.flush()
    }

    /// The event to every sink, in their order.
    fn emit(&mut self, ev: &Event) -> io::Result<()> {
        self.emit_line(Line::Event(ev))
    }

    fn emit_line(&mut self, line: Line<'_>) -> io::Result<()> {
        for s in &mut self.sinks {
            s.emit(line)?;
        }
        Ok(())
    }

    /// A process moved into a memory cgroup: the audit decides whom it concerns.
    fn on_migration(&mut self, a: &CgroupAttachRecord) {
        let Some(audits) = self.audits.as_mut() else {
            return;
        };
        let dst = self.paths.memory_path_scanned(a.id);
        audits.on_migration(a.pid, dst.as_deref());
    }

    /// The hand-off's work for `ev` (see [`HandOff::work`]); `None` without containerd.
    fn enrichment(&self, ev: &Event, publish: bool) -> Option<EnrichWork> {
        self.handoff.as_ref().map(|h| h.work(ev, publish))
    }

    /// After containerd is back and listed again: the kills made while it was away get
    /// their TaskOOMs (see [`HandOff::attribute_gap`]).
    pub async fn attribute_gap(&mut self) {
        if let Some(h) = &self.handoff {
            h.attribute_gap(&mut self.gap).await;
        }
    }

    /// Answers a query from what this run has seen, else from the kernel's victim map.
    pub fn answer(&self, q: &Query, kernel: impl Fn(u32) -> Option<Kill>) -> Answer {
        history::answer(&self.history, q, kernel)
    }

    /// Writes audit findings as events, in the same sequence as the kills.
    pub fn write_findings(&mut self, findings: Vec<FindingEvent>) -> io::Result<()> {
        if findings.is_empty() {
            return Ok(());
        }
        for mut ev in findings {
            self.seq += 1;
            ev.seq = self.seq;
            ev.log();
            self.emit_line(Line::Finding(&ev))?;
        }
        self.flush()
    }

    /// Writes the forecast's `oom_risk` events, in the same sequence as the kills.
    pub fn write_risks(&mut self, risks: Vec<RiskEvent>) -> io::Result<()> {
        if risks.is_empty() {
            return Ok(());
        }
        for mut ev in risks {
            if self.warnings.as_ref().is_some_and(|w| w.is_the_kill(&ev)) {
                tracing::debug!(cgroup = %ev.cgroup, "a stall at a cgroup whose OOM kill was just reported: that kill, not a warning");
                continue;
            }
            self.seq += 1;
            ev.seq = self.seq;
            ev.log();
            if let Some(w) = self.warnings.as_mut() {
                w.warned(&ev);
            }
            self.emit_line(Line::Risk(&ev))?;
        }
        self.flush()
    }

    /// Writes a `lost` event: what the kernel could not hand over since the last one.
    pub fn write_lost(&mut self, lost: LostCounts, total: LostCounts) -> io::Result<()> {
        self.seq += 1;
        self.emit_line(Line::Lost(&LostEvent::new(self.seq, lost, total)))?;
        self.flush()
    }

    /// Hands what was written to the reader.
    pub fn flush(&mut self) -> io::Result<()> {
        for s in &mut self.sinks {
            s.flush()?;
        }
        Ok(())
    }

    /// Events written so far.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

#[cfg(test)]
#[path = "processor_tests.rs"]
mod tests;
