//! `oom-observer query`: asks the running daemon, prints a sentence or its JSON answer.

use std::{path::Path, process::ExitCode};

use crate::query::{history::Query, socket::ask};

/// `oom-observer query`: 0 OOM-killed, 1 not, 2 error.
pub fn run(q: Query, socket: &Path, json: bool) -> ExitCode {
    let rt = match super::client_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let answer = match rt.block_on(ask(socket, &q)) {
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
