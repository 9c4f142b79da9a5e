//! The daemon: `run` reads top to bottom as its steps. The [`kernel`] programs are loaded
//! and attached; the [`outputs`] (the sinks) are lined up; [`containerd`] is connected, with
//! the TaskOOM publisher; the limit [`audit`] starts; then the [`event_loop`] runs until
//! told to stop.

use crate::{
    error::ObserverError,
    host::startup,
    pipeline::processor::{paths::CgroupPaths, Processor},
    sinks::metrics,
};

pub mod audit;
pub mod containerd;
pub mod drain;
pub mod event_loop;
pub mod kernel;
pub mod lost;
pub mod options;
pub mod outputs;
pub mod stalls;

pub use options::RunOptions;

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
        crate::host::priority::raise();
    }
    let kernel = kernel::start(&opts, object)?;
    startup::step("kernel programs");
    // Scanned on a thread of its own while the rest starts.
    let paths = CgroupPaths::start(kernel.setup.cgroups.clone());
    startup::step("cgroup scan started");
    let mut outputs = outputs::start(&opts, metrics_listener, kernel.strategy).await?;
    startup::step("outputs");
    let containerd = containerd::start(&opts, &kernel.setup.cgroups).await;
    startup::step("containerd");
    let audit = audit::start(containerd.as_ref(), &kernel.setup.cgroups);
    startup::step("limit audit");

    let metrics = outputs.metrics.take();
    let sinks = outputs.line_up(containerd.as_ref().map(|c| &c.index));
    let mut proc = Processor::new(paths, sinks)
        .with_taskoom_at(opts.taskoom_at)
        .with_cmdline_policy(opts.cmdline.clone());
    if let Some(c) = &containerd {
        proc = proc.with_containerd(c.index.clone(), c.publisher.clone(), opts.taskoom_for);
    }
    let mut stall_records = None;
    if let Some((watch, rx)) = stalls::start(&kernel.setup.cgroups) {
        proc = proc.with_stall_watch(watch);
        stall_records = Some(rx);
    }
    startup::step("stall watcher");
    let forecast = start_forecast(&opts, &kernel.setup.cgroups, containerd.as_ref());
    if forecast.is_some() {
        proc = proc.with_forecast();
    }
    startup::step("forecast");
    let mut observations = None;
    if let Some(a) = audit {
        proc = proc.with_audit(a.driver);
        observations = Some(a.observations);
    }
    let running = event_loop::Running {
        kernel,
        proc,
        containerd,
        observations,
        stalls: stall_records,
        metrics,
        forecast,
    };
    event_loop::run(&opts, running).await
}

/// The memory model on its thread; none when turned off or without a memory hierarchy.
fn start_forecast(
    opts: &RunOptions,
    cgroups: &crate::host::cgroupfs::CgroupMounts,
    containerd: Option<&containerd::ContainerdLink>,
) -> Option<tokio::sync::mpsc::UnboundedReceiver<crate::forecast::Report>> {
    let f = opts.forecast.clone()?;
    let Some(mem) = crate::audit::memory_fs::MemoryFs::from_mounts(cgroups) else {
        tracing::warn!("forecast off: no hierarchy has the memory controller");
        return None;
    };
    match crate::forecast::start(f, mem, containerd.map(|c| c.index.clone())) {
        Ok(rx) => Some(rx),
        Err(e) => {
            tracing::warn!(error = %e, "forecast off: its thread did not start");
            None
        }
    }
}
