//! The command line's one-shot commands: `check`, `audit`, `query` (what they print, and
//! their exit codes). `run` is the [`daemon`](crate::daemon).

use std::process::ExitCode;

pub mod audit;
pub mod check;
pub mod query;

/// The single-threaded runtime every command runs on.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
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
