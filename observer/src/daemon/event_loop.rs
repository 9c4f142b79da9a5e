//! The daemon's last step: ready, what the kernel recorded meanwhile read first, then the
//! select loop until told to stop.

use std::time::Duration;

use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
    sync::mpsc::UnboundedReceiver,
    time::MissedTickBehavior,
};
use tracing::info;

use super::{
    containerd::ContainerdLink,
    drain::{drain, drain_all, handle, report_lost, Queries},
    kernel::Kernel,
    options::RunOptions,
};
use crate::{
    audit::{limitwatch::InotifyFd, worker::Observation},
    enrich::{
        cri::Cri,
        upkeep::{Containerd, IndexChange},
    },
    error::ObserverError,
    event::death::{self, ContainerExit},
    host::startup,
    kernel::hooks::Strategy,
    pipeline::processor::{Processor, TaskOomAt},
    query::socket as query_socket,
    sinks::metrics::{Metrics, Totals},
};

/// How often the lost-record counter is read when no events arrive.
const LOST_CHECK: Duration = Duration::from_secs(5);

/// How often the cgroup ring is read: its records wake the daemon only once it is half full
/// (a wake-up costs each mkdir more than the rest of its hook), and every kill or exit
/// record reads it first anyway. Bounds how late a new cgroup's audit or stall watch starts
/// (an eventfd armed on a cgroup already in OOM fires at once; an audit that comes late
/// skips processes in their exit and re-reads a finding before it reports it). A second,
/// not less: each tick wakes an idle daemon, and 10 a second showed as 0.1 % of a core.
const CGROUP_READ: Duration = Duration::from_secs(1);

/// With `--pin-dir`, how long the first read of the rings waits for containerd's index.
const STARTUP_LISTING: Duration = Duration::from_secs(2);

/// Everything the loop runs on.
pub struct Running {
    /// The programs and their maps.
    pub kernel: Kernel,
    /// Records in, lines out.
    pub proc: Processor,
    /// containerd's index, its changes and the TaskOOM publisher; none without containerd.
    pub containerd: Option<ContainerdLink>,
    /// The audit worker's observations; none without the audit.
    pub observations: Option<UnboundedReceiver<Observation>>,
    /// Stalls seen by the `memory.oom_control` watcher (cgroup v1); none without it.
    pub stalls: Option<UnboundedReceiver<observer_common::OomKillRecord>>,
    /// The metrics that follow totals, brought up to date after each turn.
    pub metrics: Option<Metrics>,
    /// The memory model's reports; none with the forecast off.
    pub forecast: Option<UnboundedReceiver<crate::forecast::Report>>,
}

/// Serves queries, says it is ready, reads what waits, and runs until SIGTERM or SIGINT
/// (SIGHUP is logged and ignored).
pub async fn run(opts: &RunOptions, r: Running) -> Result<(), ObserverError> {
    let Running {
        mut kernel,
        mut proc,
        mut containerd,
        mut observations,
        mut stalls,
        mut metrics,
        mut forecast,
    } = r;
    let limit_fd = proc.audits().and_then(|a| a.limit_watch_fd());
    let mut term = signal(SignalKind::terminate()).map_err(ObserverError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ObserverError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(ObserverError::Signals)?;
    let mut tick = tokio::time::interval(LOST_CHECK);
    let mut cgroup_tick = tokio::time::interval(CGROUP_READ);
    cgroup_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut queries = Queries::new(match &opts.query_socket {
        Some(path) => {
            let rx = query_socket::serve(path).await?;
            info!(socket = %path.display(), "answering queries");
            Some(rx)
        }
        None => None,
    });
    startup::step("query socket");
    ready(opts, &kernel);
    let index = containerd.as_ref().map(|c| &*c.index);
    catch_up(&mut proc, &mut kernel, &mut queries, index).await?;
    let lost_file = kernel.lost_file.take();
    let maps = &mut kernel.maps;
    let (exits_tx, mut exits_rx) = tokio::sync::mpsc::unbounded_channel();
    // One CRI connection for every container's end, not one per end.
    let cri = opts
        .containerd
        .clone()
        .map(|socket| std::sync::Arc::new(Cri::new(socket)));
    loop {
        tokio::select! {
            guard = maps.ring.readable_mut() => {
                // Cleared before draining: a record submitted meanwhile wakes the loop again.
                guard.map_err(ObserverError::RingBuffer)?.clear_ready();
                drain_all(&mut proc, maps, &mut queries).await?;
                report_lost(&mut proc, maps, lost_file.as_ref())?;
            }
            guard = maps.cgroup_ring.readable_mut() => {
                guard.map_err(ObserverError::RingBuffer)?.clear_ready();
                drain_all(&mut proc, maps, &mut queries).await?;
                report_lost(&mut proc, maps, lost_file.as_ref())?;
            }
            _ = cgroup_tick.tick() => {
                drain_all(&mut proc, maps, &mut queries).await?;
            }
            Some(rec) = super::stalls::next(&mut stalls) => {
                // What the kernel recorded before it first (a new cgroup's path), then the
                // stall, as a record of the kernel's own format.
                drain_all(&mut proc, maps, &mut queries).await?;
                let record = observer_common::Plain::as_bytes(&rec);
                handle(&mut proc, record, &mut queries, &maps.victims).await?;
                proc.flush().map_err(ObserverError::Output)?;
            }
            Some(req) = queries.next() => {
                // Everything the kernel recorded before this moment is read first, so a
                // kill can never be missed by a question asked right after it; the answer
                // waits for no kill's hand-off (the kernel's victim map knows the kill).
                queries.hold(req);
                drain_all(&mut proc, maps, &mut queries).await?;
            }
            _ = limits_ready(limit_fd.as_deref()) => {
                if let Some(a) = proc.audits() {
                    a.on_limit_change();
                }
            }
            Some(change) = next_change(&mut containerd) => {
                if change == IndexChange::Relisted {
                    proc.attribute_gap().await;
                }
                if let IndexChange::Exited(x) = &change {
                    // The kernel saw the exit before the shim reaped it: its record (and any
                    // kill of the init) is read first, so the line can name the cause.
                    drain_all(&mut proc, maps, &mut queries).await?;
                    let ev = proc.container_exit(x);
                    match &cri {
                        // The kubelet's reason, read off the event path.
                        Some(cri) if ev.container.namespace == CRI_NAMESPACE => {
                            tokio::spawn(read_kubelet_view(cri.clone(), ev, exits_tx.clone()));
                        }
                        _ => proc.write_exit(ev).map_err(ObserverError::Output)?,
                    }
                }
                if let Some(a) = proc.audits() {
                    a.on_index_change(change);
                }
            }
            Some(ev) = exits_rx.recv() => {
                proc.write_exit(ev).map_err(ObserverError::Output)?;
            }
            Some(report) = next_forecast(&mut forecast) => {
                if let Some(m) = metrics.as_mut() {
                    m.forecast(&report.headroom);
                }
                proc.write_risks(report.risks).map_err(ObserverError::Output)?;
            }
            Some(obs) = next_observation(&mut observations) => {
                let findings = proc.audits().map(|a| a.apply(obs)).unwrap_or_default();
                proc.write_findings(findings).map_err(ObserverError::Output)?;
            }
            _ = tick.tick() => {
                report_lost(&mut proc, maps, lost_file.as_ref())?;
                proc.upkeep();
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
        if let Some(m) = metrics.as_mut() {
            let publisher = containerd.as_ref().map(|c| &c.publisher);
            let totals = Totals::of(publisher, proc.audits().map(|a| &*a));
            m.sync(totals, &maps.lost_by_kind());
        }
    }
    report_lost(&mut proc, maps, lost_file.as_ref())?;
    // The ends whose CRI read is done; one still reading is lost with the run (logged).
    while let Ok(ev) = exits_rx.try_recv() {
        proc.write_exit(ev).map_err(ObserverError::Output)?;
    }
    proc.flush().map_err(ObserverError::Output)?;
    if let Some(a) = &kernel.pinned {
        info!(pins = %a.dir.display(), "the programs stay attached, pinned: the next start reads on from here");
    }
    info!(events = proc.seq(), lost = kernel.maps.lost(), "stopped");
    Ok(())
}

/// The containerd namespace of the CRI plugin's containers.
const CRI_NAMESPACE: &str = "k8s.io";

/// How long a container's end waits for the CRI to record it: containerd 1.6's CRI, loaded
/// under emulation, took 3–10 s (docs/kubelet.md).
const CRI_EXIT_WAIT: Duration = Duration::from_secs(10);

/// Reads what the kubelet will show for `ev`'s container and hands the event back to the
/// loop; the prediction stays when the CRI cannot say.
async fn read_kubelet_view(
    cri: std::sync::Arc<Cri>,
    mut ev: ContainerExit,
    back: tokio::sync::mpsc::UnboundedSender<ContainerExit>,
) {
    match cri.exited(&ev.container.id, CRI_EXIT_WAIT).await {
        Ok(Some(cri)) => ev.kubelet = death::kubelet_from_cri(ev.cause, &cri.reason),
        Ok(None) => {
            tracing::warn!(container = %ev.container.id, "the CRI did not report the container EXITED in time: its container_exit predicts the kubelet's reason")
        }
        Err(e) => {
            tracing::debug!(container = %ev.container.id, error = %e, "no CRI status: the container_exit predicts the kubelet's reason")
        }
    }
    // The loop lives as long as the daemon; after it stopped the line is moot.
    let _ = back.send(ev);
}

/// The one line that says the daemon is ready, and how it runs.
fn ready(opts: &RunOptions, kernel: &Kernel) {
    info!(
        strategy = %kernel.strategy,
        victim_hook = kernel.victim_hook,
        cgroups = %kernel.setup.cgroups.describe(),
        btf = ?kernel.setup.btf_source,
        taskoom_at = if opts.taskoom_at == TaskOomAt::Decision
            && matches!(kernel.strategy, Strategy::Fentry | Strategy::Kprobe)
        {
            "decision"
        } else {
            // The strategy sees no decision.
            "kill"
        },
        "ready"
    );
}

/// What the kernel recorded while no daemon ran (pinned rings, and a replaced object's),
/// and anything already waiting, before the first wait.
async fn catch_up(
    proc: &mut Processor,
    kernel: &mut Kernel,
    queries: &mut Queries,
    containerd: Option<&Containerd>,
) -> Result<(), ObserverError> {
    if let (Some(cd), Some(_)) = (containerd, &kernel.pinned) {
        // The kills recorded while no daemon ran are about to be read: they are named and
        // handed over best with containerd's index listed (if it is not in time, they are
        // attributed once it is, like any kill made while containerd is away).
        let deadline = tokio::time::Instant::now() + STARTUP_LISTING;
        while !cd.connected() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    if let Some(a) = kernel.pinned.as_mut() {
        // A replaced object's rings: what they recorded before the new programs ran, oldest
        // first (from then on, the new rings have it too).
        let cutoff = a.replaced_at;
        for rb in &mut a.replaced {
            drain(proc, rb, queries, &kernel.maps.victims, Some(cutoff)).await?;
        }
        a.replaced.clear();
    }
    drain_all(proc, &mut kernel.maps, queries).await?;
    report_lost(proc, &mut kernel.maps, kernel.lost_file.as_ref())
}

/// The next change of containerd's index; forever without containerd.
async fn next_change(containerd: &mut Option<ContainerdLink>) -> Option<IndexChange> {
    match containerd {
        Some(c) => c.changes.recv().await,
        None => std::future::pending().await,
    }
}

/// The next audit observation; forever without the audit.
async fn next_observation(rx: &mut Option<UnboundedReceiver<Observation>>) -> Option<Observation> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The memory model's next report; forever with the forecast off.
async fn next_forecast(
    rx: &mut Option<UnboundedReceiver<crate::forecast::Report>>,
) -> Option<crate::forecast::Report> {
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
