//! `oom-observer audit`: one pass over every running container, as a table or JSON lines.

use std::{path::Path, process::ExitCode};

use crate::{
    audit::{
        assess::{assess, Assessment},
        finding::{events, mib},
        memory_fs::MemoryFs,
        observe::observe,
        state::Auditor,
        AuditError,
    },
    enrich::{container::ContainerInfo, containerd::Client},
    host::cgroupfs::CgroupMounts,
};

/// `oom-observer audit`: 0 clean, 1 findings, 2 error (the audit could not be done).
pub fn run(socket: &Path, namespace: Option<&str>, json: bool, strict: bool) -> ExitCode {
    let rt = match super::client_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let rows = match rt.block_on(one_shot(socket, namespace)) {
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
        // The same events the daemon would raise for a container seen for the first time.
        let evs = Auditor::default().update(&r.container, a);
        findings += evs
            .iter()
            .filter(|e| strict || e.event == events::LIMIT_UNENFORCED)
            .count();
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
        out = table(&rows);
    }
    print!("{out}");
    if errors > 0 {
        eprintln!("oom-observer: {errors} container(s) could not be audited");
        return ExitCode::from(2);
    }
    ExitCode::from(u8::from(findings > 0))
}

/// One row of `oom-observer audit`.
#[derive(Debug, Clone)]
pub struct Row {
    /// The container.
    pub container: ContainerInfo,
    /// Its verdict; none when it has no running task.
    pub assessment: Option<Assessment>,
    /// Why it could not be audited, if it could not.
    pub error: Option<String>,
}

/// The one-shot audit behind `oom-observer audit`: every container (of one namespace, or
/// all) with a running task.
pub async fn one_shot(socket: &Path, namespace: Option<&str>) -> Result<Vec<Row>, AuditError> {
    let layout = CgroupMounts::discover().map_err(|e| AuditError::Read {
        path: "/proc/self/mountinfo".into(),
        source: e,
    })?;
    let mem = MemoryFs::from_mounts(&layout).ok_or(AuditError::NoHierarchy)?;
    let client = Client::connect(socket).await?;
    let mut all = client.snapshot(layout.memory_on_dfl()).await?;
    all.retain(|c| namespace.is_none_or(|n| c.namespace == n));
    all.sort_by_key(|c| c.key());
    let mut rows = Vec::new();
    for c in all {
        let (assessment, error) = match observe(Some(&client), &c, &mem).await {
            Ok(Some(o)) => (Some(assess(&c, &o)), None),
            Ok(None) => (None, None),
            Err(AuditError::Gone(_)) => (None, None),
            Err(e) => (None, Some(e.to_string())),
        };
        rows.push(Row {
            container: c,
            assessment,
            error,
        });
    }
    Ok(rows)
}

/// The table for people.
pub fn table(rows: &[Row]) -> String {
    let mut lines = vec![[
        "NAMESPACE".to_string(),
        "CONTAINER".into(),
        "RUNTIME".into(),
        "DECLARED".into(),
        "EFFECTIVE".into(),
        "PLACED".into(),
        "EXPECTED".into(),
        "STATUS".into(),
    ]];
    for r in rows {
        let c = &r.container;
        let runtime = c
            .runtime_binary
            .as_deref()
            .and_then(|b| b.rsplit('/').next())
            .unwrap_or(&c.runtime)
            .to_string();
        let (declared, effective, placed, expected, status) = match (&r.assessment, &r.error) {
            (_, Some(e)) => (
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                format!("error: {e}"),
            ),
            (None, None) => (
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "not running".into(),
            ),
            (Some(a), None) => {
                let mut status = match (&a.declared, a.unenforced.first()) {
                    (None, _) => "no limit declared".to_string(),
                    (Some(_), Some(reason)) => format!("{} ({reason})", events::LIMIT_UNENFORCED),
                    (Some(_), None) => "ok".to_string(),
                };
                for (on, what) in [
                    (a.misplaced, events::CGROUP_MISPLACED),
                    (a.oversized, events::SANDBOX_OVERSIZED),
                ] {
                    if on {
                        status.push_str(", ");
                        status.push_str(what);
                    }
                }
                (
                    a.declared
                        .as_ref()
                        .map(|d| mib(d.bytes))
                        .unwrap_or_else(|| "-".into()),
                    a.effective.bytes.map(mib).unwrap_or_else(|| "none".into()),
                    a.placed_cgroup.clone(),
                    a.expected_cgroup.clone().unwrap_or_else(|| "-".into()),
                    status,
                )
            }
        };
        lines.push([
            c.namespace.clone(),
            c.id.clone(),
            runtime,
            declared,
            effective,
            placed,
            expected,
            status,
        ]);
    }
    let mut widths = [0usize; 8];
    for l in &lines {
        for (i, f) in l.iter().enumerate() {
            widths[i] = widths[i].max(f.len());
        }
    }
    let mut out = String::new();
    for l in &lines {
        let mut line = String::new();
        for (i, f) in l.iter().enumerate() {
            if i == 7 {
                line.push_str(f);
            } else {
                line.push_str(&format!("{f:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
