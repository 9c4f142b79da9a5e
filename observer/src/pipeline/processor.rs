//! The processor: each kernel record becomes an event, is enriched with its container, and
//! goes to the sinks in order (TaskOOM to containerd first, then the JSON line). It owns the
//! event sequence, so kills and audit findings share one gap-free `seq`.

use std::{io, io::Write, sync::Arc};

use observer_common::{valid, CgroupAttachRecord, CgroupMkdirRecord, OomKillRecord, RecordKind};
use tracing::{info, warn};

use super::event::{self, ContainerRef, Event, Resolve};
use super::explain::explain;
use crate::{
    audit::{driver::AuditDriver, finding::FindingEvent},
    enrich::{container::ContainerInfo, upkeep::Containerd},
    host::{cgroupfs::CgroupMounts, path_cache::PathCache},
    kernel::{
        clock::boot_ns,
        maps::LostCounts,
        record::{mkdir_path, Record},
    },
    query::history::{self, Answer, History, Kill, Query},
    sinks::{
        json::JsonLines,
        k8s_events::EventSink,
        metrics::{Metrics, Totals},
        taskoom::{self, SharedPublisher},
    },
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

/// A kill no container could be named for while containerd was out of reach.
#[derive(Debug, Clone)]
struct GapKill {
    seq: u64,
    victim: Option<String>,
    oom: Option<String>,
    ktime_ns: u64,
}

/// Kills kept for re-attribution after an outage (the oldest dropped beyond it).
const GAP_KILLS: usize = 1024;

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

/// OOM killer decisions waiting for their kill (or their skip), the oldest dropped beyond
/// this: each is settled within one invocation of the OOM killer, so only a lost record
/// leaves one behind.
const OPEN_DECISIONS: usize = 256;

/// What [`Processor::begin`] left to do.
pub enum Begun {
    /// The record is handled (its line, if any, is written).
    Done,
    /// The event waits for its container and TaskOOM: await the work, then
    /// [`Processor::finish`].
    Enrich(Box<Event>, EnrichWork),
}

/// Turns records into events and hands them to the sinks.
pub struct Processor<W: Write> {
    seq: u64,
    cache: PathCache,
    /// The start-up scan of the hierarchies, made on a thread of its own (see
    /// [`Processor::new`]); taken in before the first record that needs a path.
    scan: Option<std::thread::JoinHandle<PathCache>>,
    cgroups: CgroupMounts,
    out: JsonLines<W>,
    malformed: u64,
    containerd: Option<Arc<Containerd>>,
    publisher: Option<SharedPublisher>,
    history: History,
    audits: Option<AuditDriver>,
    gap: std::collections::VecDeque<GapKill>,
    metrics: Option<Metrics>,
    events: Option<EventSink>,
    /// Decisions by incident id (their time), with the container(s) and whether their
    /// TaskOOM went out: a skipped kill is reported from them.
    decisions: std::collections::BTreeMap<u64, Event>,
    taskoom_at: TaskOomAt,
    cmdlines: crate::host::procfs::CmdlineReader,
    /// Told of new memory cgroups (cgroup v1 `oom_kill_disable` stalls).
    stalls: Option<crate::host::oom_control::StallWatch>,
}

/// Paths in the memory controller's hierarchy, for [`event::build`].
struct MemoryPaths<'a> {
    cache: &'a mut PathCache,
    cgroups: &'a CgroupMounts,
}

impl Resolve for MemoryPaths<'_> {
    fn memory_path(&mut self, id: u64) -> Option<String> {
        self.cache.resolve(self.cgroups.memory(), id)
    }
}

impl<W: Write> Processor<W> {
    /// A processor writing to `out`. The mounted hierarchies are scanned on a thread of
    /// their own: on a node with 100,000 cgroups the walk takes seconds, and the programs
    /// record every kill meanwhile (the ring buffer holds them), so the daemon is ready
    /// without waiting for it. Only a record that needs a cgroup's path waits for the scan.
    pub fn new(cgroups: CgroupMounts, out: W) -> Self {
        let hierarchies: Vec<_> = cgroups.hierarchies().cloned().collect();
        let scan_all = move || {
            let mut cache = PathCache::default();
            for h in &hierarchies {
                let t = std::time::Instant::now();
                let n = cache.scan(h);
                info!(hierarchy = h.id, mount = %h.mount.display(), cgroups = n,
                    took_ms = t.elapsed().as_millis() as u64, "scanned cgroup hierarchy");
            }
            cache
        };
        let (cache, scan) = match std::thread::Builder::new()
            .name("cgroup-scan".into())
            .spawn(scan_all.clone())
        {
            Ok(t) => (PathCache::default(), Some(t)),
            Err(e) => {
                warn!(error = %e, "cannot start the cgroup scan's thread: scanning before the loop");
                (scan_all(), None)
            }
        };
        Processor {
            seq: 0,
            cache,
            scan,
            cgroups,
            out: JsonLines::new(out),
            malformed: 0,
            containerd: None,
            publisher: None,
            history: History::default(),
            audits: None,
            gap: Default::default(),
            metrics: None,
            events: None,
            decisions: Default::default(),
            taskoom_at: TaskOomAt::default(),
            cmdlines: crate::host::procfs::CmdlineReader::start(),
            stalls: None,
        }
    }

    /// Tells the `memory.oom_control` watcher of each new memory cgroup.
    pub fn with_stall_watch(mut self, w: crate::host::oom_control::StallWatch) -> Self {
        self.stalls = Some(w);
        self
    }

    /// When TaskOOM is handed over: at the kill, or at the OOM killer's decision.
    pub fn with_taskoom_at(mut self, at: TaskOomAt) -> Self {
        self.taskoom_at = at;
        self
    }

    /// Adds the containerd index (container names), the TaskOOM sink and the limit audit.
    pub fn with_containerd(
        mut self,
        cd: Arc<Containerd>,
        publisher: SharedPublisher,
        audits: Option<AuditDriver>,
    ) -> Self {
        self.containerd = Some(cd);
        self.publisher = Some(publisher);
        self.audits = audits;
        self
    }

    /// The TaskOOM sink, if any.
    pub fn publisher(&self) -> Option<&SharedPublisher> {
        self.publisher.as_ref()
    }

    /// The limit audit, if any.
    pub fn audits(&mut self) -> Option<&mut AuditDriver> {
        self.audits.as_mut()
    }

    /// Adds the Prometheus sink, counted after each line is written.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Adds the Kubernetes Event sink (queued, never waited for).
    pub fn with_k8s_events(mut self, events: EventSink) -> Self {
        self.events = Some(events);
        self
    }

    /// The metrics, if served.
    pub fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_ref()
    }

    /// Brings the metrics up to the sinks' totals, the audit's open findings and the
    /// kernel's lost records (per kind). Off the kill path: the daemon calls it after each
    /// turn of its loop.
    pub fn sync_metrics(&mut self, lost: &[(&str, u64)]) {
        let Some(m) = self.metrics.as_mut() else {
            return;
        };
        let mut t = Totals::default();
        // Never waits: a publisher busy with a kill is counted at the next turn.
        if let Some(p) = self.publisher.as_ref().and_then(|p| p.try_lock().ok()) {
            t.published = p.delivered();
            t.spooled = p.spooled();
            t.dropped = p.dropped();
        }
        if let Some(a) = &self.audits {
            let (unenforced, oversized, misplaced) = a.open_findings();
            t.limit_unenforced = unenforced as u64;
            t.sandbox_oversized = oversized as u64;
            t.cgroup_misplaced = misplaced as u64;
        }
        m.sync(t, lost);
    }

    /// Drops the kill series of containers deleted longer ago than the index keeps them.
    pub fn expire_metrics(&mut self) {
        if let (Some(m), Some(cd)) = (self.metrics.as_mut(), &self.containerd) {
            m.expire(|k| cd.container(k).map(|c| c.deleted_at));
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
                self.scanned();
                let received_us = boot_ns().saturating_sub(r.ktime_ns) / 1000;
                tracing::trace!(received_us, kind = r.kind, "record read");
                match RecordKind::from_u32(r.kind) {
                    Some(RecordKind::OomDecision) => return Ok(self.begin_decision(&r)),
                    Some(RecordKind::OomSkipped) => return self.begin_skipped(&r),
                    _ => {}
                }
                self.seq += 1;
                let memory_on_dfl = self.cgroups.memory_on_dfl();
                let mut paths = MemoryPaths {
                    cache: &mut self.cache,
                    cgroups: &self.cgroups,
                };
                let mut ev = event::build(&r, self.seq, memory_on_dfl, &mut paths);
                if r.kind == RecordKind::VictimExit as u32 {
                    // The exit belongs to the container its kill was attributed to.
                    let kill = self.history.record_exit(&ev);
                    ev.kill_seq = Some(kill.map(|k| k.seq));
                    ev.container = kill.and_then(|k| k.container.clone());
                    self.emit(&ev)?;
                    return Ok(Begun::Done);
                }
                if let Some(incident) = ev.decided_ktime_ns.flatten() {
                    // Its decision is settled: the kill came.
                    self.decisions.remove(&incident);
                }
                let publish = ev.event == "oom_kill";
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
                self.learn_path(&m);
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
        let memory_on_dfl = self.cgroups.memory_on_dfl();
        let mut paths = MemoryPaths {
            cache: &mut self.cache,
            cgroups: &self.cgroups,
        };
        let ev = event::build(r, 0, memory_on_dfl, &mut paths);
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
                self.open_decision(ev);
                Begun::Done
            }
        }
    }

    /// Keeps a decision until its kill or its skip settles it.
    fn open_decision(&mut self, ev: Event) {
        let Some(incident) = ev.decided_ktime_ns.flatten() else {
            return;
        };
        if self.decisions.len() >= OPEN_DECISIONS {
            self.decisions.pop_first();
        }
        self.decisions.insert(incident, ev);
    }

    /// The OOM killer chose a victim and then killed nobody (the victim was already
    /// exiting). No TaskOOM; the line says so, named after the decision's victim and
    /// container. Should the decision's TaskOOM already be out (the victim began to exit
    /// after the decision), the line says `published: true` and the log says why.
    fn begin_skipped(&mut self, r: &OomKillRecord) -> io::Result<Begun> {
        self.seq += 1;
        let memory_on_dfl = self.cgroups.memory_on_dfl();
        let mut paths = MemoryPaths {
            cache: &mut self.cache,
            cgroups: &self.cgroups,
        };
        let mut ev = event::build(r, self.seq, memory_on_dfl, &mut paths);
        let decision = ev
            .decided_ktime_ns
            .flatten()
            .and_then(|i| self.decisions.remove(&i));
        let Some(d) = decision else {
            // The decision's record was lost: named from this one, never published.
            return Ok(match self.enrichment(&ev, false) {
                Some(work) => Begun::Enrich(Box::new(ev), work),
                None => {
                    self.finish(ev, Enrichment::default())?;
                    Begun::Done
                }
            });
        };
        // From oom_kill_process' return only the pid is known: the decision knew the rest.
        if ev.victim.as_ref().is_none_or(|v| v.cgroup_id.is_none()) {
            ev.victim = d.victim;
        }
        ev.oom_cgroup = d.oom_cgroup;
        ev.constraint = d.constraint;
        ev.container = d.container;
        ev.containers = d.containers;
        ev.published = d.published;
        if ev.published {
            warn!(
                seq = ev.seq,
                pid = ?ev.victim.as_ref().and_then(|v| v.pid),
                container = ?ev.container.as_ref().map(|c| c.id.as_str()),
                "the OOM killer chose this victim but did not kill it (it began to exit after the decision); the TaskOOM handed over at the decision cannot be taken back"
            );
        }
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
        if ev.event == RecordKind::OomDecision.as_str() {
            self.open_decision(ev);
            return Ok(());
        }
        // After the TaskOOM: what follows only explains the kill.
        explain(
            &mut ev,
            e.owners.as_deref().unwrap_or_default(),
            &mut self.cmdlines,
        );
        if ev.event == "oom_kill" {
            self.history.record_kill(&ev);
            if e.in_gap {
                if self.gap.len() >= GAP_KILLS {
                    self.gap.pop_front();
                }
                self.gap.push_back(GapKill {
                    seq: ev.seq,
                    victim: ev.victim.as_ref().and_then(|v| v.cgroup.clone()),
                    oom: ev.oom_cgroup.as_ref().and_then(|c| c.path.clone()),
                    ktime_ns: ev.ktime_ns,
                });
            }
        }
        self.emit(&ev)
    }

    /// The line, then the sinks that only count or forward it.
    fn emit(&mut self, ev: &Event) -> io::Result<()> {
        self.out.write(ev)?;
        if let Some(m) = self.metrics.as_mut() {
            m.on_event(ev);
        }
        if let Some(k) = &self.events {
            k.send(ev);
        }
        Ok(())
    }

    fn learn_path(&mut self, m: &CgroupMkdirRecord) {
        match mkdir_path(m) {
            Some(p) => self.cache.learn(m.root, m.id, p),
            None => {
                // Too long to carry: read it from the filesystem while it exists.
                self.scanned();
                if let Some(h) = self.cgroups.hierarchies().find(|h| h.id == m.root) {
                    self.cache.resolve(Some(h), m.id);
                }
            }
        }
    }

    /// A process moved into a memory cgroup: the audit decides whom it concerns.
    fn on_migration(&mut self, a: &CgroupAttachRecord) {
        if self.audits.is_none() {
            return;
        }
        self.scanned();
        let Some(audits) = self.audits.as_mut() else {
            return;
        };
        let dst = self.cache.resolve(self.cgroups.memory(), a.id);
        audits.on_migration(a.pid, dst.as_deref());
    }

    /// Takes in the start-up scan, waiting for it if it is still running (once, at most the
    /// walk's time).
    fn scanned(&mut self) {
        if let Some(t) = self.scan.take() {
            match t.join() {
                Ok(scanned) => {
                    // The scan is the big one: what was learned meanwhile joins it.
                    let live = std::mem::replace(&mut self.cache, scanned);
                    self.cache.absorb(live);
                    // The walk's buffers were freed on its thread's heap.
                    crate::host::heap::release_freed_memory();
                }
                Err(_) => warn!("the cgroup scan's thread failed: paths are learned as cgroups appear and on a miss"),
            }
        }
    }

    /// The work that names the container(s) and, with `publish` (a kill, or a decision whose
    /// kill is certain), hands TaskOOM to containerd before the JSON line is written; `None`
    /// without containerd.
    fn enrichment(&self, ev: &Event, publish: bool) -> Option<EnrichWork> {
        let cd = self.containerd.clone()?;
        let publisher = self.publisher.clone();
        let oom = ev.oom_cgroup.as_ref().and_then(|c| c.path.clone());
        // A memcg OOM without a kill is attributed through the cgroup that hit its limit.
        let victim = match &ev.victim {
            Some(v) => v.cgroup.clone(),
            None => oom.clone(),
        };
        let is_kill = ev.event == "oom_kill";
        let (seq, ktime_ns, kind) = (ev.seq, ev.ktime_ns, ev.event);
        let incident = ev.decided_ktime_ns.flatten();
        Some(Box::pin(async move {
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
            if let (true, Some(publisher)) = (publish, publisher) {
                let mut p = publisher.lock().await;
                published = true;
                for c in &owners {
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
        }))
    }

    /// After containerd is back and listed again: the kills made while it was away whose
    /// cgroups now resolve get their TaskOOMs, oldest first (their lines were written with
    /// `container: null`; the log names each). Each hand-off is bounded like a live kill's.
    pub async fn attribute_gap(&mut self) {
        let (Some(cd), Some(publisher)) = (self.containerd.clone(), self.publisher.clone()) else {
            return;
        };
        while let Some(k) = self.gap.pop_front() {
            let owners = cd.attribute_indexed(k.victim.as_deref(), k.oom.as_deref());
            if owners.is_empty() {
                continue;
            }
            let mut p = publisher.lock().await;
            for c in &owners {
                let deadline = taskoom::handoff_deadline(std::time::Duration::ZERO);
                let published = p.oom(&c.namespace, &c.id, k.ktime_ns, None, deadline).await;
                info!(seq = k.seq, namespace = %c.namespace, container = %c.id, published,
                    "a kill made while containerd was out of reach is attributed now; TaskOOM handed over");
            }
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
            self.out.write(&ev)?;
        }
        self.out.flush()
    }

    /// Writes a `lost` event: what the kernel could not hand over since the last one.
    pub fn write_lost(&mut self, lost: LostCounts, total: LostCounts) -> io::Result<()> {
        self.seq += 1;
        self.out
            .write(&event::LostEvent::new(self.seq, lost, total))?;
        self.out.flush()
    }

    /// Hands what was written to the reader.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Events written so far.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use observer_common::Plain;

    #[tokio::test]
    async fn learns_paths_from_mkdir_records_and_counts_malformed() {
        let cg = CgroupMounts::from_texts(
            "30 25 0:27 / /nonexistent-for-test rw - cgroup cgroup rw,memory\n",
            "memory\t4\t1\t1\n",
        );
        let mut p = Processor::new(cg, Vec::new());
        let m = crate::kernel::record::mkdir_record(4, 99, b"/xy");
        p.handle(m.as_bytes()).await.unwrap();
        assert_eq!(p.cache.get(4, 99), Some("/xy"));
        p.handle(&[200, 0, 0, 0]).await.unwrap();
        assert_eq!(p.malformed, 1);
        assert_eq!(p.seq(), 0, "mkdir and malformed records are not events");
    }

    fn record(kind: RecordKind, incident: u64) -> OomKillRecord {
        let mut r: OomKillRecord = OomKillRecord::read_from(&[0u8; 256]).unwrap();
        r.kind = kind as u32;
        r.hook = observer_common::Hook::Fentry as u32;
        r.ktime_ns = incident + 1000;
        r.valid = valid::VICTIM_PID
            | valid::VICTIM_TGID
            | valid::VICTIM_COMM
            | valid::INCIDENT
            | valid::DOUBT;
        r.victim_pid = 4242;
        r.victim_tgid = 4242;
        r.victim_comm[..3].copy_from_slice(b"hog");
        r.detail.incident_id = incident;
        r
    }

    fn lines(p: &Processor<Vec<u8>>) -> Vec<serde_json::Value> {
        String::from_utf8_lossy(p.out.get_ref())
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// A decision writes no line; its kill's line carries its time; a decision the kernel
    /// did not carry out is one `oom_kill_skipped` line, named from the decision (the record
    /// from oom_kill_process' return carries only the pid), in the same gap-free sequence.
    #[tokio::test]
    async fn decisions_settle_into_one_kill_line_or_one_skipped_line() {
        let cg = CgroupMounts::from_texts(
            "30 25 0:27 / /nonexistent-for-test rw - cgroup2 cgroup2 rw\n",
            "",
        );
        let mut p = Processor::new(cg, Vec::new());
        p.handle(record(RecordKind::OomDecision, 100).as_bytes())
            .await
            .unwrap();
        assert!(lines(&p).is_empty(), "a decision alone writes nothing");
        p.handle(record(RecordKind::OomKill, 100).as_bytes())
            .await
            .unwrap();
        let v = lines(&p);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0]["event"], "oom_kill");
        assert_eq!(v[0]["decided_ktime_ns"], 100);
        assert!(p.decisions.is_empty(), "the kill settled its decision");

        p.handle(record(RecordKind::OomDecision, 200).as_bytes())
            .await
            .unwrap();
        let mut ret = record(RecordKind::OomSkipped, 200);
        ret.valid = valid::VICTIM_PID | valid::INCIDENT;
        ret.victim_comm = [0; observer_common::COMM_LEN];
        p.handle(ret.as_bytes()).await.unwrap();
        let v = lines(&p);
        assert_eq!(v.len(), 2);
        assert_eq!(v[1]["event"], "oom_kill_skipped");
        assert_eq!(v[1]["seq"], 2);
        assert_eq!(v[1]["victim"]["comm"], "hog", "named from the decision");
        assert_eq!(v[1]["decided_ktime_ns"], 200);
        assert_eq!(v[1]["published"], false);
        assert!(p.decisions.is_empty());
    }
}
