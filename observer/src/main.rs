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
        #[arg(long, value_name = "FILE")]
        btf: Option<PathBuf>,
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
        #[arg(long, value_name = "FILE")]
        btf: Option<PathBuf>,
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

/// `oom-observer audit`: 0 clean, 1 findings, 2 error (the audit could not be done).
fn audit(socket: &std::path::Path, namespace: Option<&str>, json: bool, strict: bool) -> ExitCode {
    use observer::audit::{self, events, FindingEvent};
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("oom-observer: tokio runtime: {e}");
            return ExitCode::from(2);
        }
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
    let needs_object = !matches!(cli.cmd, Command::Audit { .. });
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
            ring_kib,
            containerd_socket,
            no_containerd,
            state_dir,
        } => {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return fail(&ObserverError::Stream(format!("tokio runtime: {e}"))),
            };
            let opts = RunOptions {
                hook,
                btf,
                ring_bytes: ring_kib * 1024,
                containerd: (!no_containerd).then_some(containerd_socket),
                state_dir: Some(state_dir),
            };
            match rt.block_on(run::run(opts, EBPF_OBJECT)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
        Command::Check { btf } => match check::check(EBPF_OBJECT, btf.as_deref(), 256 * 1024) {
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
