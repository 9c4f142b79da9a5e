//! `oom-observer check`: a preflight table of what this node offers and which hook
//! strategies load, and why the others do not.

use std::fmt::Write as _;

use crate::{
    error::ObserverError,
    host::oom_control,
    kernel::{
        btf::BtfSource,
        hooks::{self, LoadParams},
        setup,
    },
};

/// The table, and whether anything can work.
pub struct Report {
    /// Human-readable lines.
    pub text: String,
    /// The best strategy that loaded, if any.
    pub best: Option<hooks::Strategy>,
}

/// The SHA-256 of the embedded eBPF object, in hex: the same object serves every kernel and
/// architecture, and this is how a node (or the VM matrix) tells which one it runs.
pub fn object_sha256(object: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(object)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Probes the node. Loading programs needs privilege; without it the error says so.
/// With `programs`, each strategy that works is loaded in full (with its auxiliary
/// programs) and the verifier's instruction count of every program is listed.
pub fn check(
    object: &[u8],
    btf_file: Option<&std::path::Path>,
    no_btf: bool,
    ring_bytes: u32,
    programs: bool,
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
    row(
        &mut t,
        "ebpf object",
        &format!("sha256:{} ({} bytes)", object_sha256(object), object.len()),
    );
    let btf = match (&s.btf_source, &s.btf_problem) {
        (_, Some(p)) => format!("missing: {p}"),
        (BtfSource::Kernel, None) => format!("ok ({})", crate::kernel::btf::SYS_BTF),
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
            // Seen on Debian's arm64 5.10: the function exists (kprobe attaches to its symbol)
            // but its BTF lacks it, and fentry needs it there.
            "not in BTF (inlined, renamed, or left out of the BTF): fentry cannot attach; kprobe can if the symbol exists",
        );
    }
    let params = LoadParams {
        object,
        layout: s.layout,
        btf: s.aya_btf.as_ref(),
        ring_bytes,
        attach: s.attach,
        keep_links: false,
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
    if programs {
        for (strategy, outcome) in &results {
            if outcome.is_err() {
                continue;
            }
            let v = match hooks::load(&params, Some(*strategy)) {
                Ok(loaded) => hooks::program_stats(&loaded.ebpf)
                    .iter()
                    .map(|(name, n)| match n {
                        Some(n) => format!("{name}={n}"),
                        None => format!("{name}=?"),
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
                Err(e) => format!("load failed: {e}"),
            };
            row(&mut t, &format!("insns {strategy}"), &v);
        }
    }
    row(
        &mut t,
        "memcg stalls",
        match oom_control::hierarchy(s.cgroups.memory_v1.as_ref()) {
            Ok(_) => oom_control::HOW,
            Err(why) => why,
        },
    );
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
