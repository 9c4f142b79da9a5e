//! `oom-observer check`: a preflight table of what this node offers and which hook
//! strategies load, and why the others do not.

use std::fmt::Write as _;

use crate::{
    error::ObserverError,
    hooks::{self, LoadParams},
    layout::BtfSource,
    setup,
};

/// The table, and whether anything can work.
pub struct Report {
    /// Human-readable lines.
    pub text: String,
    /// The best strategy that loaded, if any.
    pub best: Option<hooks::Strategy>,
}

/// Probes the node. Loading programs needs privilege; without it the error says so.
pub fn check(
    object: &[u8],
    btf_file: Option<&std::path::Path>,
    no_btf: bool,
    ring_bytes: u32,
) -> Result<Report, ObserverError> {
    let s = setup::prepare(btf_file, no_btf, true)?;
    let mut t = String::new();
    let uname = nix::sys::utsname::uname().ok();
    let kernel = uname
        .as_ref()
        .map(|u| {
            format!(
                "{} {}",
                u.release().to_string_lossy(),
                u.machine().to_string_lossy()
            )
        })
        .unwrap_or_else(|| "unknown".into());
    let row = |t: &mut String, k: &str, v: &str| {
        let _ = writeln!(t, "{k:<18} {v}");
    };
    row(&mut t, "kernel", &kernel);
    let btf = match (&s.btf_source, &s.btf_problem) {
        (_, Some(p)) => format!("missing: {p}"),
        (BtfSource::Kernel, None) => format!("ok ({})", crate::layout::SYS_BTF),
        (BtfSource::File(f), None) => format!("ok ({})", f.display()),
        (BtfSource::None, None) => "missing".into(),
    };
    row(&mut t, "btf", &btf);
    row(&mut t, "cgroups", &s.cgroups.describe());
    row(
        &mut t,
        "tracefs",
        &match &s.tracefs {
            Ok(p) => p.display().to_string(),
            Err(e) => format!("unavailable: {e}"),
        },
    );
    let euid = nix::unistd::geteuid();
    row(
        &mut t,
        "privileges",
        &if euid.is_root() {
            "root".to_string()
        } else {
            format!("uid {euid} (not root)")
        },
    );
    if let Some(false) = s.oom_kill_process_in_btf {
        row(
            &mut t,
            "oom_kill_process",
            "not in BTF (inlined or renamed): fentry/kprobe will be refused",
        );
    }
    let params = LoadParams {
        object,
        layout: s.layout,
        btf: s.aya_btf.as_ref(),
        ring_bytes,
        attach: s.attach,
    };
    let results = hooks::probe_all(&params)?;
    let mut best = None;
    for (strategy, outcome) in &results {
        let v = match outcome {
            Ok(victims) => {
                if best.is_none() {
                    best = Some(*strategy);
                }
                if matches!(strategy, hooks::Strategy::Fentry | hooks::Strategy::Kprobe) {
                    format!("ok (victims via {victims})")
                } else {
                    "ok".to_string()
                }
            }
            Err(why) => format!("no: {why}"),
        };
        row(&mut t, &format!("hook {strategy}"), &v);
    }
    if let Some(loss) = s.btf_loss() {
        row(&mut t, "note", &loss);
    }
    row(
        &mut t,
        "selected",
        &best
            .map(|b| b.to_string())
            .unwrap_or_else(|| "none: no strategy can run here".into()),
    );
    Ok(Report { text: t, best })
}
