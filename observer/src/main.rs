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
    },
    /// Check what this node supports and which hook strategies load; exit 0 if one works.
    Check {
        /// Read kernel BTF from this file instead of /sys/kernel/btf/vmlinux.
        #[arg(long, value_name = "FILE")]
        btf: Option<PathBuf>,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    if cfg!(ebpf_object_missing) || EBPF_OBJECT.is_empty() {
        return fail(&ObserverError::NoObject);
    }
    match cli.cmd {
        Command::Run {
            hook,
            btf,
            ring_kib,
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
            };
            match rt.block_on(run::run(opts, EBPF_OBJECT)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
        Command::Check { btf, programs } => {
            match check::check(EBPF_OBJECT, btf.as_deref(), 256 * 1024, programs) {
                Ok(report) => {
                    print!("{}", report.text);
                    if report.best.is_some() {
                        ExitCode::SUCCESS
                    } else {
                        fail(&ObserverError::NoHook("see the table above".into()))
                    }
                }
                Err(e) => fail(&e),
            }
        }
    }
}
