//! The `oom-observer` command line.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use observer::{
    check,
    error::ObserverError,
    hooks::Strategy,
    run::{self, RunOptions},
    EBPF_OBJECT,
};

/// Sees every OOM kill in the kernel and reports it, with its cgroup, as JSON lines.
#[derive(Parser)]
#[command(name = "oom-observer", version, about)]
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
        /// Ring buffer size in KiB (a power of two, at least 4).
        #[arg(long, default_value_t = 256, value_parser = parse_ring_kib)]
        ring_kib: u32,
        /// containerd's socket (also from CONTAINERD_ADDRESS).
        #[arg(long, env = "CONTAINERD_ADDRESS", default_value = observer::containerd::DEFAULT_SOCKET)]
        containerd_socket: PathBuf,
        /// Do not talk to containerd: no container names, no TaskOOM.
        #[arg(long)]
        no_containerd: bool,
        /// Directory for state that must survive restarts (undelivered TaskOOMs).
        #[arg(long, default_value = "/var/lib/oom-observer")]
        state_dir: PathBuf,
        /// Unix socket answering "was it OOM-killed?" (root-only).
        #[arg(long, default_value = observer::query::DEFAULT_SOCKET)]
        query_socket: PathBuf,
        /// Serve no queries.
        #[arg(long)]
        no_query: bool,
        /// Stay at ordinary scheduling priority instead of SCHED_FIFO 1.
        #[arg(long)]
        no_realtime: bool,
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
        /// With --container: only this containerd namespace.
        #[arg(long, requires = "container")]
        namespace: Option<String>,
        /// A cgroup path in the memory controller's hierarchy (kills in it or below it).
        #[arg(long, group = "what")]
        cgroup: Option<String>,
        /// The daemon's query socket.
        #[arg(long, default_value = observer::query::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Print the daemon's JSON answer instead of a sentence.
        #[arg(long)]
        json: bool,
    },
    /// Audit every running container once: is its declared memory limit enforced by the
    /// cgroup its processes are in? Exit 0 clean, 1 findings, 2 error.
    Audit {
        /// containerd's socket (also from CONTAINERD_ADDRESS).
        #[arg(long, env = "CONTAINERD_ADDRESS", default_value = observer::containerd::DEFAULT_SOCKET)]
        containerd_socket: PathBuf,
        /// Audit only this containerd namespace (default: every namespace).
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        /// One JSON object per finding (the event stream's schema) instead of the table.
        #[arg(long)]
        json: bool,
        /// Count `sandbox_oversized` (informational) as a finding for the exit status too.
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

fn parse_ring_kib(s: &str) -> Result<u32, String> {
    let v: u32 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if v < 4 || !v.is_power_of_two() || v > 1 << 20 {
        return Err(format!(
            "{v} KiB: the ring buffer must be a power of two between 4 KiB and 1 GiB"
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
    eprintln!("oom-observer: {e}");
    ExitCode::from(e.exit_code() as u8)
}

/// The single-threaded runtime every command runs on.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// The runtime for the client commands (`query`, `audit`), whose errors exit with 2.
fn client_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    runtime().map_err(|e| {
        eprintln!("oom-observer: tokio runtime: {e}");
        ExitCode::from(2)
    })
}

/// `oom-observer audit`: 0 clean, 1 findings, 2 error (the audit could not be done).
fn audit(socket: &std::path::Path, namespace: Option<&str>, json: bool, strict: bool) -> ExitCode {
    use observer::audit::{self, events, FindingEvent};
    let rt = match client_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let rows = match rt.block_on(audit::one_shot(socket, namespace)) {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("oom-observer: audit failed: {e}");
            return ExitCode::from(2);
        }
    };
    let mut findings = 0usize;
    let mut errors = 0usize;
    let mut seq = 0u64;
    let mut out = String::new();
    for r in &rows {
        if r.error.is_some() {
            errors += 1;
        }
        let Some(a) = &r.assessment else { continue };
        let Some(d) = &a.declared else { continue };
        let mut evs = Vec::new();
        if !a.unenforced.is_empty() {
            findings += 1;
            evs.push(FindingEvent::new(
                events::LIMIT_UNENFORCED,
                &r.container,
                a,
                d.clone(),
            ));
        }
        if a.oversized {
            if strict {
                findings += 1;
            }
            evs.push(FindingEvent::new(
                events::SANDBOX_OVERSIZED,
                &r.container,
                a,
                d.clone(),
            ));
        }
        for mut e in evs {
            seq += 1;
            e.seq = seq;
            if json {
                match serde_json::to_string(&e) {
                    Ok(line) => {
                        out.push_str(&line);
                        out.push('\n');
                    }
                    Err(err) => {
                        eprintln!("oom-observer: {err}");
                        return ExitCode::from(2);
                    }
                }
            }
        }
    }
    if !json {
        out = audit::table(&rows);
    }
    print!("{out}");
    if errors > 0 {
        eprintln!("oom-observer: {errors} container(s) could not be audited");
        return ExitCode::from(2);
    }
    ExitCode::from(u8::from(findings > 0))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let needs_object = !matches!(cli.cmd, Command::Audit { .. } | Command::Query { .. });
    if needs_object && (cfg!(ebpf_object_missing) || EBPF_OBJECT.is_empty()) {
        return fail(&ObserverError::NoObject);
    }
    match cli.cmd {
        Command::Audit {
            containerd_socket,
            namespace,
            json,
            strict,
        } => audit(&containerd_socket, namespace.as_deref(), json, strict),
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
        } => {
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(e) => return fail(&ObserverError::Stream(format!("tokio runtime: {e}"))),
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
            };
            match rt.block_on(run::run(opts, EBPF_OBJECT)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
        Command::Query {
            pid,
            container,
            namespace,
            cgroup,
            socket,
            json,
        } => query(
            observer::query::Query {
                pid,
                container,
                namespace,
                cgroup,
            },
            &socket,
            json,
        ),
        Command::Check {
            btf,
            no_btf,
            programs,
        } => match check::check(EBPF_OBJECT, btf.as_deref(), no_btf, 256 * 1024, programs) {
            Ok(report) => {
                print!("{}", report.text);
                if report.best.is_some() {
                    ExitCode::SUCCESS
                } else {
                    fail(&ObserverError::NoHook("see the table above".into()))
                }
            }
            Err(e) => fail(&e),
        },
    }
}

/// `oom-observer query`: 0 OOM-killed, 1 not, 2 error.
fn query(q: observer::query::Query, socket: &std::path::Path, json: bool) -> ExitCode {
    let rt = match client_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let answer = match rt.block_on(observer::query::ask(socket, &q)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("oom-observer: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(err) = &answer.error {
        eprintln!("oom-observer: {err}");
        return ExitCode::from(2);
    }
    if json {
        println!("{}", serde_json::to_string(&answer).unwrap_or_default());
    } else if answer.oom_killed {
        for k in &answer.kills {
            println!(
                "OOM-killed at {} (pid {}, {}{}){}",
                k.time,
                k.tgid
                    .or(k.pid)
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "?".into()),
                k.comm.as_deref().unwrap_or("?"),
                k.cgroup
                    .as_deref()
                    .map(|c| format!(", cgroup {c}"))
                    .unwrap_or_default(),
                k.container
                    .as_ref()
                    .map(|c| format!(", container {}/{}", c.namespace, c.id))
                    .unwrap_or_default(),
            );
        }
    } else {
        println!("not OOM-killed");
    }
    ExitCode::from(if answer.oom_killed { 0 } else { 1 })
}
