//! The `oom-observer` command line.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use observer::{
    cause::chain,
    cli,
    daemon::{self, RunOptions},
    error::ObserverError,
    kernel::{error::KernelError, hooks::Strategy},
    pipeline::processor::{TaskOomAt, TaskOomFor},
    scrub::{CmdlineMode, CmdlinePolicy},
    EBPF_OBJECT,
};

/// `--version`: the version and the optional features this binary was built with, so a node
/// (and the image's test) can tell whether it can post Kubernetes Events.
const VERSION: &str = if cfg!(feature = "k8s-events") {
    concat!(env!("CARGO_PKG_VERSION"), " (features: k8s-events)")
} else {
    concat!(env!("CARGO_PKG_VERSION"), " (features: none)")
};

/// Sees every OOM kill in the kernel and reports it, with its cgroup, as JSON lines.
#[derive(Parser)]
#[command(name = "oom-observer", version = VERSION, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Observe OOM kills and write one JSON object per line to stdout (logs go to stderr).
    Run {
        /// Use only this hook strategy (default: the best one the kernel supports).
        #[arg(long, value_enum)]
        hook: Option<Strategy>,
        /// Read kernel BTF from this file instead of /sys/kernel/btf/vmlinux.
        #[arg(long, value_name = "FILE", conflicts_with = "no_btf")]
        btf: Option<PathBuf>,
        /// Use no BTF, as on a kernel built without it (only the classic tracepoint works).
        #[arg(long)]
        no_btf: bool,
        /// Size of each of the two ring buffers (kills and exits; cgroup records) in KiB (a
        /// power of two, 4 to 16384).
        #[arg(long, default_value_t = 256, value_parser = parse_ring_kib)]
        ring_kib: u32,
        /// containerd's socket (also from CONTAINERD_ADDRESS).
        #[arg(long, env = "CONTAINERD_ADDRESS", default_value = observer::enrich::containerd::DEFAULT_SOCKET)]
        containerd_socket: PathBuf,
        /// Do not talk to containerd: no container names, no TaskOOM.
        #[arg(long)]
        no_containerd: bool,
        /// Directory for state that must survive restarts (undelivered TaskOOMs).
        #[arg(long, default_value = "/var/lib/oom-observer")]
        state_dir: PathBuf,
        /// Unix socket answering "was it OOM-killed?" (root-only).
        #[arg(long, default_value = observer::query::socket::DEFAULT_SOCKET)]
        query_socket: PathBuf,
        /// Serve no queries.
        #[arg(long)]
        no_query: bool,
        /// Stay at ordinary scheduling priority instead of SCHED_FIFO 1.
        #[arg(long)]
        no_realtime: bool,
        /// Serve Prometheus metrics on http://ADDR/metrics (e.g. 127.0.0.1:9695; off when
        /// not given).
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<std::net::SocketAddr>,
        /// Post a Kubernetes Event (reason OOMKilling) on the Pod of each kill, through the
        /// in-cluster service account (or KUBECONFIG). Needs the node's name.
        #[arg(long)]
        k8s_events: bool,
        /// This node's name, the Events' source host (also from NODE_NAME).
        #[arg(long, env = "NODE_NAME")]
        node_name: Option<String>,
        /// Pin the programs and their ring buffers in this directory on a bpffs (e.g.
        /// /sys/fs/bpf/oom-observer): they stay attached while the daemon is stopped, and the
        /// next start reports what they recorded meanwhile. `rm -r DIR` detaches them.
        #[arg(long, value_name = "DIR")]
        pin_dir: Option<PathBuf>,
        /// When to hand TaskOOM to containerd: at the OOM killer's decision (before the
        /// kernel's report and its SIGKILL; fentry/kprobe strategies, elsewhere at the kill),
        /// or always at the kill.
        #[arg(long, value_enum, default_value_t = TaskOomAt::Decision)]
        taskoom_at: TaskOomAt,
        /// Which kills get a TaskOOM: every kill in a container, or only the kills the
        /// container does not survive (its init's; any of a gVisor or Kata sandbox's).
        #[arg(long, value_enum, default_value_t = TaskOomFor::All)]
        taskoom_for: TaskOomFor,
        /// The victims' command lines in the events: with the values of credential-like
        /// arguments hidden (scrub), as they are (full), or none (drop: the field is null).
        #[arg(long, value_enum, default_value_t = CmdlineMode::Scrub)]
        cmdline: CmdlineMode,
        /// One more word whose arguments' values are hidden, added to the default list
        /// (repeatable; `*` matches any run of letters, digits, `_`, `-`, `.`).
        #[arg(long, value_name = "WORD", value_parser = observer::scrub::parse_word)]
        scrub_word: Vec<String>,
        /// How often the memory model reads each container's cgroup (e.g. 1s, 500ms).
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        forecast_interval: std::time::Duration,
        /// Write `oom_risk` when a container's unreclaimable memory will reach one of its
        /// limits (container, pod, ancestor, node) sooner than this (e.g. 60s).
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        forecast_threshold: std::time::Duration,
        /// Also model this memory cgroup (a path in the memory hierarchy, e.g.
        /// /system.slice/app.service); repeatable. containerd's containers are modelled anyway.
        #[arg(long, value_name = "PATH")]
        forecast_cgroup: Vec<String>,
        /// No memory model: no `oom_risk`, and kills carry no `warning_lead_s`.
        #[arg(long)]
        no_forecast: bool,
    },
    /// Ask a running oom-observer whether a container, cgroup or process was OOM-killed.
    /// Exit status: 0 OOM-killed, 1 not, 2 error.
    #[command(group = clap::ArgGroup::new("what").required(true).multiple(false))]
    Query {
        /// A process id (or thread id).
        #[arg(long, group = "what")]
        pid: Option<u32>,
        /// A container id.
        #[arg(long, group = "what")]
        container: Option<String>,
        /// With --pid: the process's start time (field 22 of /proc/<pid>/stat, clock ticks
        /// since boot), so an earlier process that had the pid is never taken for it.
        #[arg(long, requires = "pid")]
        start_time: Option<u64>,
        /// With --container: only this containerd namespace.
        #[arg(long, requires = "container")]
        namespace: Option<String>,
        /// A cgroup path in the memory controller's hierarchy (kills in it or below it).
        #[arg(long, group = "what")]
        cgroup: Option<String>,
        /// The daemon's query socket.
        #[arg(long, default_value = observer::query::socket::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Print the daemon's JSON answer instead of a sentence.
        #[arg(long)]
        json: bool,
    },
    /// Audit every running container once: is its declared memory limit enforced by the
    /// cgroup its processes are in? Exit 0 clean, 1 findings, 2 error.
    Audit {
        /// containerd's socket (also from CONTAINERD_ADDRESS).
        #[arg(long, env = "CONTAINERD_ADDRESS", default_value = observer::enrich::containerd::DEFAULT_SOCKET)]
        containerd_socket: PathBuf,
        /// Audit only this containerd namespace (default: every namespace).
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        /// One JSON object per finding (the event stream's schema) instead of the table.
        #[arg(long)]
        json: bool,
        /// Count `cgroup_misplaced` and `sandbox_oversized` (informational) as findings for
        /// the exit status too.
        #[arg(long)]
        strict: bool,
    },
    /// Check what this node supports and which hook strategies load; exit 0 if one works.
    Check {
        /// Read kernel BTF from this file instead of /sys/kernel/btf/vmlinux.
        #[arg(long, value_name = "FILE", conflicts_with = "no_btf")]
        btf: Option<PathBuf>,
        /// Use no BTF, as on a kernel built without it.
        #[arg(long)]
        no_btf: bool,
        /// Also load each working strategy in full and list the verifier's instruction
        /// count for every program (`insns <strategy> name=N ...`).
        #[arg(long)]
        programs: bool,
    },
}

/// The largest ring buffer `--ring-kib` accepts (16 MiB).
const MAX_RING_KIB: u32 = 16 * 1024;

fn parse_ring_kib(s: &str) -> Result<u32, String> {
    let v: u32 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    // 16 MiB holds tens of thousands of records, far beyond any OOM storm between two
    // reads; larger rings only spend the node's memory (the whole ring can become resident).
    if v < 4 || !v.is_power_of_two() || v > MAX_RING_KIB {
        return Err(format!(
            "{v} KiB: the ring buffer must be a power of two between 4 and {MAX_RING_KIB} KiB"
        ));
    }
    Ok(v)
}

fn init_logging() {
    use tracing_subscriber::{fmt, EnvFilter};
    let filter =
        EnvFilter::try_from_env("OOM_OBSERVER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .init();
}

fn fail(e: &ObserverError) -> ExitCode {
    // One line, no backtrace: the cause and what to do.
    eprintln!("oom-observer: {}", chain(e));
    ExitCode::from(e.exit_code())
}

fn main() -> ExitCode {
    observer::host::startup::begin();
    observer::host::heap::share_one_arena();
    let cli = Cli::parse();
    init_logging();
    let needs_object = !matches!(cli.cmd, Command::Audit { .. } | Command::Query { .. });
    if needs_object && (cfg!(ebpf_object_missing) || EBPF_OBJECT.is_empty()) {
        return fail(&KernelError::NoObject.into());
    }
    match cli.cmd {
        Command::Audit {
            containerd_socket,
            namespace,
            json,
            strict,
        } => cli::audit::run(&containerd_socket, namespace.as_deref(), json, strict),
        Command::Run {
            hook,
            btf,
            no_btf,
            ring_kib,
            containerd_socket,
            no_containerd,
            state_dir,
            query_socket,
            no_query,
            no_realtime,
            metrics_listen,
            k8s_events,
            node_name,
            pin_dir,
            taskoom_at,
            taskoom_for,
            cmdline,
            scrub_word,
            forecast_interval,
            forecast_threshold,
            forecast_cgroup,
            no_forecast,
        } => {
            if forecast_interval.is_zero() {
                eprintln!("oom-observer: --forecast-interval must be above 0");
                return ExitCode::from(2);
            }
            if k8s_events && node_name.is_none() {
                eprintln!(
                    "oom-observer: --k8s-events needs the node's name: --node-name or NODE_NAME"
                );
                return ExitCode::from(2);
            }
            if !scrub_word.is_empty() && cmdline != CmdlineMode::Scrub {
                eprintln!("oom-observer: --scrub-word needs --cmdline scrub");
                return ExitCode::from(2);
            }
            let cmdline = match CmdlinePolicy::new(cmdline, &scrub_word) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("oom-observer: {e}");
                    return ExitCode::from(2);
                }
            };
            let rt = match cli::runtime() {
                Ok(rt) => rt,
                Err(e) => return fail(&ObserverError::Runtime(e)),
            };
            let opts = RunOptions {
                hook,
                btf,
                no_btf,
                ring_bytes: ring_kib * 1024,
                containerd: (!no_containerd).then_some(containerd_socket),
                state_dir: Some(state_dir),
                query_socket: (!no_query).then_some(query_socket),
                realtime: !no_realtime,
                metrics_listen,
                k8s_events: k8s_events.then_some(node_name).flatten(),
                pin_dir,
                taskoom_at,
                taskoom_for,
                cmdline,
                forecast: (!no_forecast).then_some(observer::forecast::ForecastOptions {
                    interval: forecast_interval,
                    threshold: forecast_threshold,
                    cgroups: forecast_cgroup,
                    headroom: metrics_listen.is_some(),
                }),
            };
            match rt.block_on(daemon::run(opts, EBPF_OBJECT)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
        Command::Query {
            pid,
            start_time,
            container,
            namespace,
            cgroup,
            socket,
            json,
        } => cli::query::run(
            observer::query::history::Query {
                pid,
                container,
                namespace,
                cgroup,
                start_time,
            },
            &socket,
            json,
        ),
        Command::Check {
            btf,
            no_btf,
            programs,
        } => match cli::check::check(EBPF_OBJECT, btf.as_deref(), no_btf, 256 * 1024, programs) {
            Ok(report) => {
                print!("{}", report.text);
                if report.best.is_some() {
                    ExitCode::SUCCESS
                } else {
                    fail(&KernelError::NoHook(Vec::new()).into())
                }
            }
            Err(e) => fail(&e),
        },
    }
}
