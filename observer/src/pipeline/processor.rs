//! The processor: each kernel record becomes an event, is enriched with its container, and
//! goes to the sinks in order (TaskOOM to containerd first, then the JSON line). It owns the
//! event sequence, so kills and audit findings share one gap-free `seq`.

use std::{io, io::Write, sync::Arc};

use observer_common::{CgroupAttachRecord, CgroupMkdirRecord, RecordKind};
use tracing::{info, warn};

use super::event::{self, ContainerRef, Event, Resolve};
use crate::{
    audit::{driver::AuditDriver, finding::FindingEvent},
    enrich::container::ContainerInfo,
    enrich::upkeep::Containerd,
    host::{cgroup_path, procfs},
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
        taskoom::Publisher,
    },
};

/// Turns records into events and hands them to the sinks.
pub struct Processor<W: Write> {
    seq: u64,
    cache: PathCache,
    cgroups: CgroupMounts,
    out: JsonLines<W>,
    malformed: u64,
    containerd: Option<Arc<Containerd>>,
    publisher: Option<Publisher>,
    history: History,
    audits: Option<AuditDriver>,
    metrics: Option<Metrics>,
    events: Option<EventSink>,
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
    /// A processor writing to `out`; scans the mounted hierarchies first.
    pub fn new(cgroups: CgroupMounts, out: W) -> Self {
        let mut cache = PathCache::default();
        for h in cgroups.hierarchies() {
            let n = cache.scan(h);
            info!(hierarchy = h.id, mount = %h.mount.display(), cgroups = n, "scanned cgroup hierarchy");
        }
        Processor {
            seq: 0,
            cache,
            cgroups,
            out: JsonLines::new(out),
            malformed: 0,
            containerd: None,
            publisher: None,
            history: History::default(),
            audits: None,
            metrics: None,
            events: None,
        }
    }

    /// Adds the containerd index (container names), the TaskOOM sink and the limit audit.
    pub fn with_containerd(
        mut self,
        cd: Arc<Containerd>,
        publisher: Publisher,
        audits: Option<AuditDriver>,
    ) -> Self {
        self.containerd = Some(cd);
        self.publisher = Some(publisher);
        self.audits = audits;
        self
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
        if let Some(p) = &self.publisher {
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

    /// The TaskOOM sink, if any.
    pub fn publisher(&mut self) -> Option<&mut Publisher> {
        self.publisher.as_mut()
    }

    /// The limit audit, if any.
    pub fn audits(&mut self) -> Option<&mut AuditDriver> {
        self.audits.as_mut()
    }

    /// Handles one ring-buffer item.
    pub async fn handle(&mut self, bytes: &[u8]) -> io::Result<()> {
        match Record::parse(bytes) {
            Ok(Record::Oom(r)) => {
                let received_us = boot_ns().saturating_sub(r.ktime_ns) / 1000;
                tracing::trace!(received_us, kind = r.kind, "record read");
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
                } else {
                    let owners = self.enrich_and_publish(&mut ev).await;
                    // After the TaskOOM: what follows only explains the kill.
                    explain(&mut ev, &owners);
                    if r.kind == RecordKind::OomKill as u32 {
                        self.history.record_kill(&ev);
                    }
                }
                self.out.write(&ev)?;
                if let Some(m) = self.metrics.as_mut() {
                    m.on_event(&ev);
                }
                if let Some(k) = &self.events {
                    k.send(&ev);
                }
                Ok(())
            }
            Ok(Record::Mkdir(m)) => {
                self.learn_path(&m);
                Ok(())
            }
            Ok(Record::Attach(a)) => {
                self.on_migration(&a);
                Ok(())
            }
            Err(e) => {
                self.malformed += 1;
                warn!(error = %e, malformed_total = self.malformed, "dropped a malformed ring-buffer record");
                Ok(())
            }
        }
    }

    fn learn_path(&mut self, m: &CgroupMkdirRecord) {
        match mkdir_path(m) {
            Some(p) => self.cache.learn(m.root, m.id, p),
            None => {
                // Too long to carry: read it from the filesystem while it exists.
                if let Some(h) = self.cgroups.hierarchies().find(|h| h.id == m.root) {
                    self.cache.resolve(Some(h), m.id);
                }
            }
        }
    }

    /// A process moved into a memory cgroup: the audit decides whom it concerns.
    fn on_migration(&mut self, a: &CgroupAttachRecord) {
        let Some(audits) = self.audits.as_mut() else {
            return;
        };
        let dst = self.cache.resolve(self.cgroups.memory(), a.id);
        audits.on_migration(a.pid, dst.as_deref());
    }

    /// Names the container(s) and, for a kill, hands TaskOOM to containerd before the JSON
    /// line is written. Returns the owners.
    async fn enrich_and_publish(&mut self, ev: &mut Event) -> Vec<ContainerInfo> {
        let Some(cd) = &self.containerd else {
            return Vec::new();
        };
        let oom = ev.oom_cgroup.as_ref().and_then(|c| c.path.as_deref());
        // A memcg OOM without a kill is attributed through the cgroup that hit its limit.
        let victim = match &ev.victim {
            Some(v) => v.cgroup.as_deref(),
            None => oom,
        };
        let t0 = std::time::Instant::now();
        let woke_us = boot_ns().saturating_sub(ev.ktime_ns) / 1000;
        let owners = cd.attribute(victim, oom).await;
        let attributed = t0.elapsed();
        if owners.is_empty() {
            return owners;
        }
        ev.container = owners.first().map(ContainerRef::from);
        if owners.len() > 1 {
            ev.containers = owners.iter().map(ContainerRef::from).collect();
        }
        if ev.event != "oom_kill" {
            return owners;
        }
        let Some(publisher) = self.publisher.as_mut() else {
            return owners;
        };
        let mut all = true;
        for c in &owners {
            all &= publisher.oom(&c.namespace, &c.id, ev.ktime_ns).await;
        }
        ev.published = all;
        tracing::debug!(
            seq = ev.seq,
            woke_us,
            since_kill_us = boot_ns().saturating_sub(ev.ktime_ns) / 1000,
            attribute_us = attributed.as_micros() as u64,
            publish_us = (t0.elapsed() - attributed).as_micros() as u64,
            "kill handed to containerd"
        );
        owners
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

/// Fills what explains a kill once its container is known: which limit fired, whether the
/// container lives on, what ran (from `/proc`, while it is still there) and the summary.
fn explain(ev: &mut Event, owners: &[ContainerInfo]) {
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
    let limit = event::limit_in_words(ev, &cgroups, pod_cgroup);
    let exits = owner.and_then(|c| container_exits(ev, c));
    if let Some(v) = ev.victim.as_mut() {
        if let Some(pid) = v.tgid.or(v.pid) {
            let (exe, cmdline) = procfs::exe_and_cmdline(pid, v.comm.as_deref());
            v.facts.exe = exe;
            v.facts.cmdline = cmdline;
        }
    }
    if let Some(x) = ev.explained.as_mut() {
        x.limit = limit.map(String::from);
        x.container_exits = exits;
    }
    let msg = event::message(ev);
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

#[cfg(test)]
mod tests {
    use super::*;
    use observer_common::{Plain, CGROUP_PATH_LEN};

    #[tokio::test]
    async fn learns_paths_from_mkdir_records_and_counts_malformed() {
        let cg = CgroupMounts::from_texts(
            "30 25 0:27 / /nonexistent-for-test rw - cgroup cgroup rw,memory\n",
            "memory\t4\t1\t1\n",
        );
        let mut p = Processor::new(cg, Vec::new());
        let mut m = CgroupMkdirRecord {
            kind: RecordKind::CgroupMkdir as u32,
            root: 4,
            id: 99,
            level: 1,
            path_len: 3,
            path: [0; CGROUP_PATH_LEN],
        };
        m.path[..3].copy_from_slice(b"/xy");
        p.handle(m.as_bytes()).await.unwrap();
        assert_eq!(p.cache.get(4, 99), Some("/xy"));
        p.handle(&[200, 0, 0, 0]).await.unwrap();
        assert_eq!(p.malformed, 1);
        assert_eq!(p.seq(), 0, "mkdir and malformed records are not events");
    }
}
