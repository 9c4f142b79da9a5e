//! The daemon: set up, load and attach the kernel programs, wire the pipeline (kernel
//! records → processor → sinks), then run the select loop until told to stop.

use std::{io, net::SocketAddr, path::PathBuf, time::Duration};

use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

use crate::{
    audit::{driver::AuditDriver, limitwatch::InotifyFd, memory_fs::MemoryFs, worker::Observation},
    enrich::upkeep::{Containerd, IndexChange},
    error::ObserverError,
    host::oom_control,
    kernel::{
        hooks::{self, LoadParams, Strategy},
        maps::{KernelMaps, LostCounts, Victims},
        pins,
        record::Record,
        setup,
    },
    pipeline::processor::{Begun, Processor, TaskOomAt},
    query::socket::{self as query_socket, Request},
    sinks::{
        k8s_events::EventSink,
        metrics,
        taskoom::{self, Publisher},
    },
};
use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

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
    /// Serve Prometheus metrics on this address; `None` serves none.
    pub metrics_listen: Option<SocketAddr>,
    /// Post a Kubernetes Event on the Pod for each kill, reporting as this node.
    pub k8s_events: Option<String>,
    /// Keep the programs attached, and what they record, across restarts: pinned here (a
    /// directory on a bpffs).
    pub pin_dir: Option<PathBuf>,
    /// When TaskOOM is handed to containerd: at the kill, or at the OOM killer's decision.
    pub taskoom_at: TaskOomAt,
}

/// How often the lost-record counter is read when no events arrive.
const LOST_CHECK: Duration = Duration::from_secs(5);

/// With `--pin-dir`, how long the first read of the rings waits for containerd's index.
const STARTUP_LISTING: Duration = Duration::from_secs(2);

/// Runs the daemon until SIGTERM or SIGINT (SIGHUP is logged and ignored).
pub async fn run(opts: RunOptions, object: &[u8]) -> Result<(), ObserverError> {
    // Bound first: a taken or forbidden address fails the start before anything loads.
    let metrics_listener = match opts.metrics_listen {
        Some(addr) => Some(
            metrics::bind(addr).map_err(|source| ObserverError::MetricsListen { addr, source })?,
        ),
        None => None,
    };
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
        keep_links: opts.pin_dir.is_some(),
    };
    let (mut maps, strategy, victim_hook, refused, extras, mut pinned, _kernel) =
        match &opts.pin_dir {
            None => {
                let mut loaded = hooks::load(&params, opts.hook)?;
                let maps = KernelMaps::take(&mut loaded.ebpf)?;
                (
                    maps,
                    loaded.strategy,
                    loaded.victim_hook,
                    loaded.refused.clone(),
                    loaded.extras.clone(),
                    None,
                    Some(loaded),
                )
            }
            Some(dir) => {
                let (maps, a) = pins::start(dir, &params, opts.hook)?;
                let (refused, extras) = (pins::refused_of(&a), pins::extras_of(&a));
                (
                    maps,
                    a.strategy,
                    a.victim_hook,
                    refused,
                    extras,
                    Some(a),
                    None,
                )
            }
        };
    // The kernel's BTF (tens of MiB parsed) is needed only to load: give it back.
    drop(setup.aya_btf.take());
    crate::host::heap::release_freed_memory();
    for (s, why) in &refused {
        info!(strategy = %s, reason = %why, "strategy refused");
    }
    for (name, outcome) in &extras {
        match outcome {
            Ok(how) => info!(program = name, via = how, "attached"),
            Err(why) => warn!(program = name, reason = %why, "not attached"),
        }
    }
    let lost_file = match (&pinned, &opts.state_dir) {
        (Some(a), Some(state)) => Some(LostFile::new(state, &a.dir)),
        _ => None,
    };
    if let (Some(f), Some(a)) = (&lost_file, &pinned) {
        if a.loaded.is_none() {
            if let Some(seen) = f.read() {
                maps.set_lost_seen(seen);
            }
        }
    }

    let stdout = io::stdout();
    let mut proc = Processor::new(setup.cgroups.clone(), io::BufWriter::new(stdout.lock()))
        .with_taskoom_at(opts.taskoom_at);
    let mut stalls = None;
    if let Ok(memory) = oom_control::hierarchy(setup.cgroups.memory_v1.as_ref()) {
        match oom_control::start(memory) {
            Ok((watch, rx)) => {
                proc = proc.with_stall_watch(watch);
                stalls = Some(rx);
            }
            Err(e) => warn!(error = %e, "memcg OOM stalls (oom_kill_disable) are not watched"),
        }
    }
    let (change_tx, mut changes) = tokio::sync::mpsc::unbounded_channel::<IndexChange>();
    let mut observations = None;
    let mut containerd = None;
    if let Some(socket) = &opts.containerd {
        let cd = Containerd::new(socket.clone(), setup.cgroups.memory_on_dfl());
        containerd = Some(cd.clone());
        cd.subscribe_changes(change_tx);
        tokio::spawn(cd.clone().watch());
        let mut publisher = Publisher::new(socket, opts.state_dir.as_deref());
        publisher.warm_up().await;
        let wake = publisher.waker();
        let publisher = std::sync::Arc::new(tokio::sync::Mutex::new(publisher));
        // The spool is delivered beside the loop: a containerd that hangs holds back no
        // kill for longer than the hand-off bound.
        tokio::spawn(taskoom::retry_task(publisher.clone(), wake));
        let audits = MemoryFs::from_mounts(&setup.cgroups).map(|mem| {
            let (driver, rx) = AuditDriver::start(cd.clone(), mem);
            observations = Some(rx);
            driver
        });
        proc = proc.with_containerd(cd, publisher, audits);
    } else {
        info!("containerd disabled: kernel-only mode");
    }
    if let (Some(listener), Some(addr)) = (metrics_listener, opts.metrics_listen) {
        let m = metrics::Metrics::new(env!("CARGO_PKG_VERSION"), &strategy.to_string());
        m.serve(listener)
            .map_err(|source| ObserverError::MetricsListen { addr, source })?;
        proc = proc.with_metrics(m);
    }
    if let Some(node) = &opts.k8s_events {
        let outcomes = proc.metrics().map(|m| m.k8s_events()).unwrap_or_default();
        let sink = EventSink::start(node, outcomes)
            .await
            .map_err(ObserverError::K8sEvents)?;
        info!(node = %node, "posting a Kubernetes Event on the Pod of each kill");
        proc = proc.with_k8s_events(sink);
    }
    let limit_fd = proc.audits().and_then(|a| a.limit_watch_fd());
    let mut term = signal(SignalKind::terminate()).map_err(ObserverError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ObserverError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(ObserverError::Signals)?;
    let mut tick = tokio::time::interval(LOST_CHECK);
    let mut queries = match &opts.query_socket {
        Some(path) => {
            let rx = query_socket::serve(path).await?;
            info!(socket = %path.display(), "answering queries");
            Some(rx)
        }
        None => None,
    };

    info!(
        strategy = %strategy,
        victim_hook,
        cgroups = %setup.cgroups.describe(),
        btf = ?setup.btf_source,
        taskoom_at = if opts.taskoom_at == TaskOomAt::Decision
            && matches!(strategy, Strategy::Fentry | Strategy::Kprobe)
        {
            "decision"
        } else {
            // The strategy sees no decision.
            "kill"
        },
        "ready"
    );
    if let (Some(cd), Some(_)) = (&containerd, &pinned) {
        // The kills recorded while no daemon ran are about to be read: they are named and
        // handed over best with containerd's index listed (if it is not in time, they are
        // attributed once it is, like any kill made while containerd is away).
        let deadline = tokio::time::Instant::now() + STARTUP_LISTING;
        while !cd.connected() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    if let Some(a) = pinned.as_mut() {
        // A replaced object's rings: what they recorded before the new programs ran, oldest
        // first (from then on, the new rings have it too).
        let cutoff = a.replaced_at;
        for rb in &mut a.replaced {
            drain(&mut proc, rb, &mut queries, &maps.victims, Some(cutoff)).await?;
        }
        a.replaced.clear();
    }
    // What the kernel recorded while no daemon ran (pinned rings), and anything already
    // waiting, before the first wait.
    drain_all(&mut proc, &mut maps, &mut queries).await?;
    report_lost(&mut proc, &mut maps, lost_file.as_ref())?;
    loop {
        tokio::select! {
            guard = maps.ring.readable_mut() => {
                // Cleared before draining: a record submitted meanwhile wakes the loop again.
                guard.map_err(ObserverError::RingBuffer)?.clear_ready();
                drain_all(&mut proc, &mut maps, &mut queries).await?;
                report_lost(&mut proc, &mut maps, lost_file.as_ref())?;
            }
            guard = maps.cgroup_ring.readable_mut() => {
                guard.map_err(ObserverError::RingBuffer)?.clear_ready();
                drain_all(&mut proc, &mut maps, &mut queries).await?;
                report_lost(&mut proc, &mut maps, lost_file.as_ref())?;
            }
            Some(rec) = next_stall(&mut stalls) => {
                // What the kernel recorded before it first (a new cgroup's path), then the
                // stall, as a record of the kernel's own format.
                drain_all(&mut proc, &mut maps, &mut queries).await?;
                proc.handle(observer_common::Plain::as_bytes(&rec))
                    .await
                    .and_then(|()| proc.flush())
                    .map_err(ObserverError::Output)?;
            }
            Some(req) = next_query(&mut queries) => {
                // Everything the kernel recorded before this moment is read first, so a
                // kill can never be missed by a question asked right after it.
                drain_all(&mut proc, &mut maps, &mut queries).await?;
                let answer = proc.answer(&req.query, |pid| maps.victims.victim(pid));
                let _ = req.reply.send(answer);
            }
            _ = limits_ready(limit_fd.as_deref()) => {
                if let Some(a) = proc.audits() {
                    a.on_limit_change();
                }
            }
            Some(change) = changes.recv() => {
                if change == IndexChange::Relisted {
                    proc.attribute_gap().await;
                }
                if let Some(a) = proc.audits() {
                    a.on_index_change(change);
                }
            }
            Some(obs) = next_observation(&mut observations) => {
                apply_observation(&mut proc, obs)?;
            }
            _ = tick.tick() => {
                report_lost(&mut proc, &mut maps, lost_file.as_ref())?;
                proc.expire_metrics();
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                // Everything comes from flags and the kernel, and the output streams are
                // inherited descriptors: nothing to reload or reopen. Ending here would
                // leave the node blind until something restarts the daemon.
                info!(events = proc.seq(), lost = maps.lost(), "SIGHUP: nothing to reload; still running");
            }
        }
        // Counted after the turn's events went out: the scrape never waits for a kill.
        proc.sync_metrics(&maps.lost_by_kind());
    }
    report_lost(&mut proc, &mut maps, lost_file.as_ref())?;
    proc.flush().map_err(ObserverError::Output)?;
    if let Some(a) = &pinned {
        info!(pins = %a.dir.display(), "the programs stay attached, pinned: the next start reads on from here");
    }
    info!(events = proc.seq(), lost = maps.lost(), "stopped");
    Ok(())
}

/// Writes a `lost` event when the kernel lost records since the last look.
fn report_lost<W: io::Write>(
    proc: &mut Processor<W>,
    maps: &mut KernelMaps,
    file: Option<&LostFile>,
) -> Result<(), ObserverError> {
    match maps.check_lost() {
        Some((lost, total)) => {
            proc.write_lost(lost, total)
                .and_then(|()| proc.flush())
                .map_err(ObserverError::Output)?;
            if let Some(f) = file {
                f.write(maps.lost_seen());
            }
            Ok(())
        }
        None => Ok(()),
    }
}

/// Every record both ring buffers hold: the cgroup records first, so that a path learnt
/// from a mkdir is known before a kill of the same wake-up needs it. Then the audits they
/// asked for run.
async fn drain_all<W: io::Write>(
    proc: &mut Processor<W>,
    maps: &mut KernelMaps,
    queries: &mut Option<tokio::sync::mpsc::Receiver<Request>>,
) -> Result<(), ObserverError> {
    let KernelMaps {
        ring,
        cgroup_ring,
        victims,
        ..
    } = maps;
    drain(proc, cgroup_ring.get_mut(), queries, victims, None).await?;
    drain(proc, ring.get_mut(), queries, victims, None).await?;
    if let Some(a) = proc.audits() {
        a.run_pending();
    }
    Ok(())
}

/// Hands each record of one ring buffer to the processor, in order. A record is released
/// (the ring's consumer position, kept in the map, moves past it) only once its line is
/// written: a daemon killed while handling it leaves it to the next run, which, with
/// pinned maps, handles it again. While a kill waits for containerd (at most
/// [`taskoom::HANDOFF`] beyond attribution), queries are answered from what is known: the
/// history so far and the kernel's victim map. With `before`, OOM records from that
/// boot-clock time on are skipped (a replaced object's ring, whose later records the new
/// programs have too).
async fn drain<W: io::Write>(
    proc: &mut Processor<W>,
    rb: &mut RingBuf<MapData>,
    queries: &mut Option<tokio::sync::mpsc::Receiver<Request>>,
    victims: &Victims,
    before: Option<u64>,
) -> Result<(), ObserverError> {
    while let Some(item) = rb.next() {
        if let (Some(cutoff), Ok(Record::Oom(r))) = (before, Record::parse(&item)) {
            if r.ktime_ns >= cutoff {
                continue;
            }
        }
        match proc.begin(&item).map_err(ObserverError::Output)? {
            Begun::Done => {}
            Begun::Enrich(ev, work) => {
                tokio::pin!(work);
                let found = loop {
                    tokio::select! {
                        found = &mut work => break found,
                        Some(req) = next_query(queries) => {
                            let answer = proc.answer(&req.query, |pid| victims.victim(pid));
                            let _ = req.reply.send(answer);
                        }
                    }
                };
                proc.finish(*ev, found).map_err(ObserverError::Output)?;
            }
        }
        // The line is out before the record is released (when `item` drops).
        proc.flush().map_err(ObserverError::Output)?;
    }
    Ok(())
}

/// Where a daemon with `--pin-dir` keeps the losses it has reported (in the state
/// directory: a bpffs holds no files): the next run on the same pinned counters reports only
/// what was lost after them.
struct LostFile {
    path: PathBuf,
    pins: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct LostReported {
    pins: String,
    reported: LostCounts,
}

impl LostFile {
    fn new(state_dir: &std::path::Path, pins: &std::path::Path) -> LostFile {
        LostFile {
            path: state_dir.join("pinned-lost.json"),
            pins: pins.display().to_string(),
        }
    }

    fn read(&self) -> Option<LostCounts> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        let r: LostReported = serde_json::from_str(&text).ok()?;
        (r.pins == self.pins).then_some(r.reported)
    }

    fn write(&self, reported: LostCounts) {
        let r = LostReported {
            pins: self.pins.clone(),
            reported,
        };
        let tmp = self.path.with_extension("tmp");
        let ok = serde_json::to_vec(&r)
            .map_err(io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = ok {
            warn!(error = %e, path = %self.path.display(),
                "cannot record the losses reported: a restart may report them again");
        }
    }
}

fn apply_observation<W: io::Write>(
    proc: &mut Processor<W>,
    obs: Observation,
) -> Result<(), ObserverError> {
    let findings = proc.audits().map(|a| a.apply(obs)).unwrap_or_default();
    proc.write_findings(findings).map_err(ObserverError::Output)
}

/// The next query; forever without the query socket.
async fn next_query(rx: &mut Option<tokio::sync::mpsc::Receiver<Request>>) -> Option<Request> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The next stall the `memory.oom_control` watcher saw; forever without it.
async fn next_stall(
    rx: &mut Option<tokio::sync::mpsc::UnboundedReceiver<observer_common::OomKillRecord>>,
) -> Option<observer_common::OomKillRecord> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The next audit observation; forever without the audit.
async fn next_observation(
    rx: &mut Option<tokio::sync::mpsc::UnboundedReceiver<Observation>>,
) -> Option<Observation> {
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
