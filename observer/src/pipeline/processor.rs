//! The daemon: load, attach, then turn ring-buffer records into JSON lines until told to stop.

use std::{
    io::{self, Write},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use crate::index::ContainerInfo;
use aya::maps::{MapData, PerCpuArray, RingBuf};
use observer_common::VictimState;
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
};
use tracing::{info, warn};

use crate::{
    audit::{self, Auditor, MemoryFs},
    cgroups::{CgroupLayout, PathCache},
    containerd::{AuditRequest, Client, Containerd},
    error::ObserverError,
    event::{self, mkdir_path, ContainerRef, Event, Record, Resolve},
    hooks::{self, LoadParams, Strategy},
    limitwatch::{InotifyFd, LimitWatch},
    publish::Publisher,
    query::{self, Answer, History, Kill, Query},
    setup,
};

/// Options of `oom-observer run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Use exactly this strategy instead of the best one that works.
    pub hook: Option<Strategy>,
    /// BTF file to use instead of the kernel's own.
    pub btf: Option<PathBuf>,
    /// Use no BTF at all, as on a kernel built without it.
    pub no_btf: bool,
    /// Ring buffer size in bytes.
    pub ring_bytes: u32,
    /// containerd's socket; `None` runs kernel-only (no container names, no TaskOOM).
    pub containerd: Option<PathBuf>,
    /// Where undelivered TaskOOMs are kept across restarts; `None` keeps them in memory.
    pub state_dir: Option<PathBuf>,
    /// The query socket; `None` serves no queries.
    pub query_socket: Option<PathBuf>,
    /// Run at real-time priority (SCHED_FIFO 1) so a busy node cannot delay TaskOOM behind
    /// the container's exit.
    pub realtime: bool,
}

/// How often the lost-record counter is read when no events arrive.
const LOST_CHECK: Duration = Duration::from_secs(5);

/// Turns records into events and hands them to the sinks (containerd first, then the JSON
/// line); owns the sequence, the path cache and the sinks.
pub struct Processor<W: Write> {
    seq: u64,
    cache: PathCache,
    cgroups: CgroupLayout,
    out: W,
    malformed: u64,
    containerd: Option<Arc<Containerd>>,
    publisher: Option<Publisher>,
    history: History,
    auditor: Auditor,
    memory_fs: Option<MemoryFs>,
    /// Where audits are sent to be observed, off the event path (see [`audit_worker`]).
    observe_tx: Option<tokio::sync::mpsc::UnboundedSender<ContainerInfo>>,
    limits: Option<LimitWatch>,
    /// Audits asked for by kernel records, run after the batch they came in.
    pending_audits: Vec<AuditRequest>,
}

struct MemoryPaths<'a> {
    cache: &'a mut PathCache,
    cgroups: &'a CgroupLayout,
}

impl Resolve for MemoryPaths<'_> {
    fn memory_path(&mut self, id: u64) -> Option<String> {
        self.cache.resolve(self.cgroups.memory(), id)
    }
}

impl<W: Write> Processor<W> {
    /// A processor writing to `out`; scans the mounted hierarchies first.
    pub fn new(cgroups: CgroupLayout, out: W) -> Self {
        let mut cache = PathCache::default();
        for h in [cgroups.memory_v1.as_ref(), cgroups.unified.as_ref()]
            .into_iter()
            .flatten()
        {
            let n = cache.scan(h);
            info!(hierarchy = h.id, mount = %h.mount.display(), cgroups = n, "scanned cgroup hierarchy");
        }
        Processor {
            seq: 0,
            cache,
            memory_fs: MemoryFs::from_layout(&cgroups),
            cgroups,
            out,
            malformed: 0,
            containerd: None,
            publisher: None,
            history: History::default(),
            auditor: Auditor::default(),
            observe_tx: None,
            limits: None,
            pending_audits: Vec::new(),
        }
    }

    /// Adds the containerd index (container names) and the TaskOOM sink.
    pub fn with_containerd(mut self, cd: Arc<Containerd>, publisher: Publisher) -> Self {
        self.containerd = Some(cd);
        self.publisher = Some(publisher);
        self.limits = match LimitWatch::new() {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(error = %e, "no inotify: a memory limit changed by hand is seen only at the next containerd event");
                None
            }
        };
        self
    }

    /// The TaskOOM sink, if any.
    pub fn publisher(&mut self) -> Option<&mut Publisher> {
        self.publisher.as_mut()
    }

    /// Handles one ring-buffer item.
    pub async fn handle(&mut self, bytes: &[u8]) -> io::Result<()> {
        match Record::parse(bytes) {
            Ok(Record::Oom(r)) => {
                let received_us = event::boot_ns().saturating_sub(r.ktime_ns) / 1000;
                tracing::trace!(received_us, kind = r.kind, "record read");
                self.seq += 1;
                let memory_on_dfl = self.cgroups.memory_on_dfl();
                let mut paths = MemoryPaths {
                    cache: &mut self.cache,
                    cgroups: &self.cgroups,
                };
                let mut ev = event::build(&r, self.seq, memory_on_dfl, &mut paths);
                if r.kind == observer_common::kind::VICTIM_EXIT {
                    // The exit belongs to the container its kill was attributed to.
                    let kill = self.history.record_exit(&ev);
                    ev.kill_seq = Some(kill.map(|k| k.seq));
                    ev.container = kill.and_then(|k| k.container.clone());
                } else {
                    self.enrich_and_publish(&mut ev).await;
                    if r.kind == observer_common::kind::OOM_KILL {
                        self.history.record_kill(&ev);
                    }
                }
                serde_json::to_writer(&mut self.out, &ev).map_err(io::Error::other)?;
                self.out.write_all(b"\n")
            }
            Ok(Record::Mkdir(m)) => {
                match mkdir_path(&m) {
                    Some(p) => self.cache.learn(m.root, m.id, p),
                    None => {
                        // Too long to carry: read it from the filesystem while it exists.
                        let h = [
                            self.cgroups.memory_v1.as_ref(),
                            self.cgroups.unified.as_ref(),
                        ]
                        .into_iter()
                        .flatten()
                        .find(|h| h.id == m.root)
                        .cloned();
                        if let Some(h) = h {
                            self.cache.resolve(Some(&h), m.id);
                        }
                    }
                }
                Ok(())
            }
            Ok(Record::Attach(a)) => {
                self.on_migration(a);
                Ok(())
            }
            Err(e) => {
                self.malformed += 1;
                warn!(error = %e, malformed_total = self.malformed, "dropped a malformed ring-buffer record");
                Ok(())
            }
        }
    }

    /// Names the container(s) and, for a kill, hands TaskOOM to containerd before the JSON
    /// line is written.
    async fn enrich_and_publish(&mut self, ev: &mut Event) {
        let Some(cd) = &self.containerd else { return };
        let oom = ev.oom_cgroup.as_ref().and_then(|c| c.path.as_deref());
        // A memcg OOM without a kill is attributed through the cgroup that hit its limit.
        let victim = match &ev.victim {
            Some(v) => v.cgroup.as_deref(),
            None => oom,
        };
        let t0 = std::time::Instant::now();
        let woke_us = event::boot_ns().saturating_sub(ev.ktime_ns) / 1000;
        let owners = cd.attribute(victim, oom).await;
        let attributed = t0.elapsed();
        if owners.is_empty() {
            return;
        }
        ev.container = owners.first().map(ContainerRef::from);
        if owners.len() > 1 {
            ev.containers = owners.iter().map(ContainerRef::from).collect();
        }
        if ev.event != "oom_kill" {
            return;
        }
        let Some(publisher) = self.publisher.as_mut() else {
            return;
        };
        let mut all = true;
        for c in &owners {
            all &= publisher.oom(&c.namespace, &c.id, ev.ktime_ns).await;
        }
        ev.published = all;
        tracing::debug!(
            seq = ev.seq,
            woke_us,
            since_kill_us = event::boot_ns().saturating_sub(ev.ktime_ns) / 1000,
            attribute_us = attributed.as_micros() as u64,
            publish_us = (t0.elapsed() - attributed).as_micros() as u64,
            "kill handed to containerd"
        );
    }

    /// Answers a query from what this run has seen, else from the kernel's victim map.
    pub fn answer(&self, q: &Query, kernel: impl Fn(u32) -> Option<Kill>) -> Answer {
        query::answer(&self.history, q, kernel)
    }

    /// A process moved into a memory cgroup: queue a re-audit of the containers it concerns
    /// (the one whose process it was, or one of its ancestors was, at the last audit; those
    /// whose processes belong where it went). No periodic scan is needed for moves.
    fn on_migration(&mut self, a: observer_common::CgroupAttachRecord) {
        if self.containerd.is_none() || a.pid == 0 {
            return;
        }
        let dst = self.cache.resolve(self.cgroups.memory(), a.id);
        let keys = self
            .auditor
            .affected_by_move(&audit::ancestry(a.pid), dst.as_deref());
        for (namespace, id) in keys {
            let req = AuditRequest::One { namespace, id };
            if !self.pending_audits.contains(&req) {
                self.pending_audits.push(req);
            }
        }
    }

    /// The descriptor that becomes readable when a watched memory limit is written.
    pub fn limit_watch_fd(&self) -> Option<Arc<AsyncFd<InotifyFd>>> {
        self.limits.as_ref().map(|w| w.fd())
    }

    /// A watched memory limit was written: re-audit the containers that depend on it.
    pub async fn on_limit_change(&mut self) -> io::Result<()> {
        let keys = self.limits.as_mut().map(|w| w.drain()).unwrap_or_default();
        for (namespace, id) in keys {
            self.audit(AuditRequest::One { namespace, id }).await?;
        }
        Ok(())
    }

    fn forget(&mut self, namespace: &str, id: &str) {
        self.auditor.forget(namespace, id);
        if let Some(w) = self.limits.as_mut() {
            w.remove(&(namespace.to_string(), id.to_string()));
        }
    }

    /// Runs the audits kernel records asked for.
    pub async fn run_pending_audits(&mut self) -> io::Result<()> {
        for req in std::mem::take(&mut self.pending_audits) {
            self.audit(req).await?;
        }
        Ok(())
    }

    /// Audits what a request names and writes any finding (or clearing) as an event.
    pub async fn audit(&mut self, req: AuditRequest) -> io::Result<()> {
        let Some(cd) = self.containerd.clone() else {
            return Ok(());
        };
        if self.memory_fs.is_none() {
            return Ok(());
        }
        let targets: Vec<ContainerInfo> = {
            let idx = cd.index.lock().unwrap_or_else(|p| p.into_inner());
            match &req {
                AuditRequest::Forget { namespace, id } => {
                    let (ns, id) = (namespace.clone(), id.clone());
                    drop(idx);
                    self.forget(&ns, &id);
                    return Ok(());
                }
                AuditRequest::All => idx.all().cloned().collect(),
                AuditRequest::One { namespace, id } => {
                    idx.get(namespace, id).cloned().into_iter().collect()
                }
            }
        };
        if req == AuditRequest::All {
            // Containers that are gone since the last audit end without an event.
            let live: std::collections::HashSet<_> = targets.iter().map(|c| c.key()).collect();
            for (ns, id) in self.auditor.keys() {
                if !live.contains(&(ns.clone(), id.clone())) {
                    self.forget(&ns, &id);
                }
            }
        }
        let Some(tx) = self.observe_tx.clone() else {
            return Ok(());
        };
        for c in targets {
            if c.deleted_at.is_some() || c.task_pid.is_none() {
                self.forget(&c.namespace, &c.id);
                continue;
            }
            // Reading pids and limits takes containerd calls: done by the audit worker, so
            // that a kill arriving meanwhile is never held behind an audit.
            let _ = tx.send(c);
        }
        Ok(())
    }

    /// Starts the worker that observes audited containers; its results come back through
    /// the returned channel, to [`Processor::apply_observation`].
    pub fn start_audit_worker(
        &mut self,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<Observation>> {
        let cd = self.containerd.clone()?;
        let mem = self.memory_fs.clone()?;
        let (job_tx, job_rx) = tokio::sync::mpsc::unbounded_channel();
        let (obs_tx, obs_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(audit_worker(cd.socket().to_path_buf(), mem, job_rx, obs_tx));
        self.observe_tx = Some(job_tx);
        Some(obs_rx)
    }

    /// Turns one container's observation into findings (or their clearing).
    pub fn apply_observation(&mut self, obs: Observation) -> io::Result<()> {
        let (c, result) = obs;
        let Some(mem) = self.memory_fs.clone() else {
            return Ok(());
        };
        let observed = match result {
            Ok(Some(o)) => o,
            Ok(None) => {
                self.forget(&c.namespace, &c.id);
                return Ok(());
            }
            Err(e) => {
                // A cgroup or process that vanished mid-audit, or containerd unreachable:
                // no verdict, no finding.
                tracing::debug!(container = %c.id, error = %e, "audit inconclusive");
                return Ok(());
            }
        };
        if let Some(w) = self.limits.as_mut() {
            w.set(&c.key(), audit::limit_dirs(&c, &observed, &mem));
        }
        let assessment = audit::assess(&c, &observed);
        for mut ev in self.auditor.update(&c, &assessment) {
            self.seq += 1;
            ev.seq = self.seq;
            ev.log();
            serde_json::to_writer(&mut self.out, &ev).map_err(io::Error::other)?;
            self.out.write_all(b"\n")?;
        }
        self.out.flush()
    }

    /// Flushes what was written.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Events written so far.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(opts: RunOptions, object: &[u8]) -> Result<(), ObserverError> {
    if opts.realtime {
        raise_priority();
    }
    let mut setup = setup::prepare(opts.btf.as_deref(), opts.no_btf, true)?;
    if let Err(e) = &setup.tracefs {
        warn!(error = %e, "no tracefs: classic tracepoints (oom/mark_victim, cgroup_mkdir) cannot attach");
    }
    if let Some(loss) = setup.btf_loss() {
        warn!("{loss}");
    }
    let params = LoadParams {
        object,
        layout: setup.layout,
        btf: setup.aya_btf.as_ref(),
        ring_bytes: opts.ring_bytes,
        attach: setup.attach,
    };
    let mut loaded = hooks::load(&params, opts.hook, setup.wants_stall_watcher())?;
    // The kernel's BTF (tens of MiB parsed) is needed only to load: give it back.
    drop(setup.aya_btf.take());
    release_freed_memory();
    for (s, why) in &loaded.refused {
        info!(strategy = %s, reason = %why, "strategy refused");
    }
    for (name, outcome) in &loaded.extras {
        match outcome {
            Ok(how) => info!(program = name, via = how, "attached"),
            Err(why) => warn!(program = name, reason = %why, "not attached"),
        }
    }

    let ring = loaded
        .ebpf
        .take_map("EVENTS")
        .ok_or_else(|| ObserverError::Load("map EVENTS missing from the object".into()))?;
    let ring = RingBuf::try_from(ring).map_err(|e| ObserverError::Load(e.to_string()))?;
    let lost: Option<PerCpuArray<MapData, u64>> = loaded
        .ebpf
        .take_map("LOST")
        .and_then(|m| PerCpuArray::try_from(m).ok());
    // SAFETY: the RingBuf owns its map fd for as long as the AsyncFd owns the RingBuf, and
    // always returns that same fd.
    let mut afd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| ObserverError::Stream(format!("ring buffer fd: {e}")))?;

    let stdout = io::stdout();
    let mut proc = Processor::new(setup.cgroups.clone(), io::BufWriter::new(stdout.lock()));
    let (audit_tx, mut audit_rx) = tokio::sync::mpsc::unbounded_channel::<AuditRequest>();
    if let Some(socket) = &opts.containerd {
        let cd = Containerd::new(socket.clone(), setup.cgroups.memory_on_dfl());
        cd.set_audit_sink(audit_tx.clone());
        tokio::spawn(cd.clone().watch());
        let mut publisher = Publisher::new(socket, opts.state_dir.as_deref())
            .map_err(|e| ObserverError::Stream(format!("TaskOOM spool: {e}")))?;
        publisher.warm_up().await;
        proc = proc.with_containerd(cd, publisher);
    } else {
        info!("containerd disabled: kernel-only mode");
    }
    let limit_fd = proc.limit_watch_fd();
    let mut observations = proc.start_audit_worker();
    let mut lost_seen = 0u64;
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| ObserverError::Stream(e.to_string()))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| ObserverError::Stream(e.to_string()))?;
    let mut tick = tokio::time::interval(LOST_CHECK);
    let victims: Option<aya::maps::HashMap<MapData, u32, VictimState>> = loaded
        .ebpf
        .take_map("VICTIMS")
        .and_then(|m| aya::maps::HashMap::try_from(m).ok());
    let mut queries = match &opts.query_socket {
        Some(path) => {
            let rx = query::serve(path)
                .await
                .map_err(|e| ObserverError::Stream(e.to_string()))?;
            info!(socket = %path.display(), "answering queries");
            Some(rx)
        }
        None => None,
    };

    info!(
        strategy = %loaded.strategy,
        victim_hook = loaded.victim_hook,
        cgroups = %setup.cgroups.describe(),
        btf = ?setup.btf_source,
        "ready"
    );
    loop {
        tokio::select! {
            guard = afd.readable_mut() => {
                let mut guard = guard.map_err(|e| ObserverError::Stream(e.to_string()))?;
                let batch = take_batch(guard.get_inner_mut());
                guard.clear_ready();
                process_batch(&mut proc, &batch).await?;
                check_lost(lost.as_ref(), &mut lost_seen);
            }
            Some(req) = next_query(&mut queries) => {
                // Everything the kernel recorded before this moment is read first, so a
                // kill can never be missed by a question asked right after it.
                let batch = take_batch(afd.get_mut());
                process_batch(&mut proc, &batch).await?;
                let answer = proc.answer(&req.query, |pid| kernel_victim(victims.as_ref(), pid));
                let _ = req.reply.send(answer);
            }
            _ = retry_due(proc.publisher().and_then(|p| p.retry_at())) => {
                if let Some(p) = proc.publisher() {
                    p.retry().await;
                }
            }
            _ = limits_ready(limit_fd.as_deref()) => {
                proc.on_limit_change().await.map_err(ObserverError::Output)?;
            }
            Some(req) = audit_rx.recv() => {
                proc.audit(req).await.map_err(ObserverError::Output)?;
            }
            Some(obs) = next_observation(&mut observations) => {
                proc.apply_observation(obs).map_err(ObserverError::Output)?;
            }
            _ = tick.tick() => check_lost(lost.as_ref(), &mut lost_seen),
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    check_lost(lost.as_ref(), &mut lost_seen);
    proc.flush().map_err(ObserverError::Output)?;
    info!(events = proc.seq(), lost = lost_seen, "stopped");
    Ok(())
}

/// A container and what was read about it (or why nothing could be).
pub type Observation = (
    ContainerInfo,
    Result<Option<audit::Observed>, audit::AuditError>,
);

/// Observes audited containers one after another, in the order they were asked for, and
/// hands the results back to the main loop.
async fn audit_worker(
    socket: PathBuf,
    mem: MemoryFs,
    mut jobs: tokio::sync::mpsc::UnboundedReceiver<ContainerInfo>,
    results: tokio::sync::mpsc::UnboundedSender<Observation>,
) {
    let mut client: Option<Client> = None;
    while let Some(c) = jobs.recv().await {
        if client.is_none() {
            client = Client::connect(&socket).await.ok();
        }
        let r = audit::observe(client.as_ref(), &c, &mem).await;
        if matches!(r, Err(audit::AuditError::Containerd(_))) {
            // Reconnect next time.
            client = None;
        }
        if results.send((c, r)).is_err() {
            return;
        }
    }
}

/// Returns freed heap to the kernel, so the resident size reflects what the daemon keeps.
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// The daemon sleeps until the kernel hands it a kill, then races the container's exit
/// through the runtime shim and containerd. At SCHED_FIFO priority 1 it runs the moment it
/// is woken, ahead of every ordinary task on a saturated node; it is idle otherwise, and the
/// kernel's real-time throttling bounds it should it ever spin.
fn raise_priority() {
    // musl's sched_param has more fields than glibc's: start from zero on both.
    // SAFETY: sched_param is plain integers, for which all-zero is valid.
    let mut param: nix::libc::sched_param = unsafe { std::mem::zeroed() };
    param.sched_priority = 1;
    // The raw system call: musl's sched_setscheduler() is a stub that always fails with
    // ENOSYS (POSIX means the process, Linux the thread), which left the static builds at
    // ordinary priority.
    // SAFETY: plain syscall on this process with a valid parameter.
    let rc = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_sched_setscheduler,
            0,
            nix::libc::SCHED_FIFO,
            &param as *const nix::libc::sched_param,
        )
    };
    if rc == 0 {
        info!("running at real-time priority (SCHED_FIFO 1)");
    } else {
        warn!(
            error = %std::io::Error::last_os_error(),
            "cannot take real-time priority (needs CAP_SYS_NICE); a busy node may delay TaskOOM"
        );
    }
}

/// Copies out every record the ring buffer holds (the sinks await, and items borrow it).
fn take_batch(rb: &mut RingBuf<MapData>) -> Vec<Vec<u8>> {
    let mut batch = Vec::new();
    while let Some(item) = rb.next() {
        batch.push(item.to_vec());
    }
    batch
}

async fn process_batch<W: Write>(
    proc: &mut Processor<W>,
    batch: &[Vec<u8>],
) -> Result<(), ObserverError> {
    for item in batch {
        proc.handle(item).await.map_err(ObserverError::Output)?;
    }
    proc.flush().map_err(ObserverError::Output)?;
    proc.run_pending_audits()
        .await
        .map_err(ObserverError::Output)
}

async fn next_observation(
    rx: &mut Option<tokio::sync::mpsc::UnboundedReceiver<Observation>>,
) -> Option<Observation> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_query(
    rx: &mut Option<tokio::sync::mpsc::Receiver<query::Request>>,
) -> Option<query::Request> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Waits until a watched limit file was written; forever without a watch.
async fn limits_ready(fd: Option<&AsyncFd<InotifyFd>>) {
    match fd {
        Some(fd) => match fd.readable().await {
            // Cleared before the events are read, so none written after is missed.
            Ok(mut g) => g.clear_ready(),
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// A kill the daemon has not seen (an earlier run's, or one whose record was lost), from the
/// kernel's own victim map.
fn kernel_victim(
    map: Option<&aya::maps::HashMap<MapData, u32, VictimState>>,
    pid: u32,
) -> Option<Kill> {
    let v = map?.get(&pid, 0).ok()?;
    let time = |ns: u64| humantime::format_rfc3339_nanos(event::boot_to_wall(ns)).to_string();
    Some(Kill {
        seq: 0,
        time: time(v.kill_ktime_ns),
        ktime_ns: v.kill_ktime_ns,
        pid: Some(v.pid),
        tgid: Some(pid),
        comm: None,
        cgroup: None,
        container: None,
        exit: (v.exit_ktime_ns != 0).then(|| query::ExitSeen {
            time: time(v.exit_ktime_ns),
            ktime_ns: v.exit_ktime_ns,
            signal: event::ExitInfo::from_status(v.exit_code).signal,
        }),
    })
}

/// Sleeps until the spool's retry is due; forever when nothing waits.
async fn retry_due(at: Option<std::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// Reads the kernel's lost-record counter and logs any increase: no drop is silent.
fn check_lost(map: Option<&PerCpuArray<MapData, u64>>, seen: &mut u64) {
    let Some(map) = map else { return };
    let Ok(values) = map.get(&0, 0) else { return };
    let total: u64 = values.iter().sum();
    if total > *seen {
        warn!(
            lost = total - *seen,
            lost_total = total,
            "ring buffer full: kernel records were lost"
        );
        *seen = total;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use observer_common::{kind, CgroupMkdirRecord, CGROUP_PATH_LEN};

    fn bytes<T>(v: &T) -> &[u8] {
        unsafe {
            std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>())
        }
    }

    #[tokio::test]
    async fn learns_paths_from_mkdir_records_and_counts_malformed() {
        let cg = CgroupLayout::from_texts(
            "30 25 0:27 / /nonexistent-for-test rw - cgroup cgroup rw,memory\n",
            "memory\t4\t1\t1\n",
        );
        let mut p = Processor::new(cg, Vec::new());
        let mut m = CgroupMkdirRecord {
            kind: kind::CGROUP_MKDIR,
            root: 4,
            id: 99,
            level: 1,
            path_len: 3,
            path: [0; CGROUP_PATH_LEN],
        };
        m.path[..3].copy_from_slice(b"/xy");
        p.handle(bytes(&m)).await.unwrap();
        assert_eq!(p.cache.get(4, 99), Some("/xy"));
        p.handle(&[200, 0, 0, 0]).await.unwrap();
        assert_eq!(p.malformed, 1);
        assert_eq!(p.seq(), 0, "mkdir and malformed records are not events");
    }
}
