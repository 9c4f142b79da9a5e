//! The kubelet rows as the results pages show them: a markdown table and JSON.

use std::fs;

use super::{arch, Row, RowSpec};

/// The rows as a markdown table, headed by where they ran.
pub fn markdown_rows(rows: &[Row], spec: &RowSpec, where_: &str) -> String {
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cgroup = if crate::pod::unified() { "v2" } else { "v1" };
    let driver = rows.first().map_or("cgroupfs", |r| r.cgroup_driver);
    let mut s = format!(
        "{where_}: Linux {}, cgroup {cgroup}, {}, containerd {} (CRI plugin, {driver} driver) + \
         runc, {} pods per row, {} at a time.\n\n\
         | load | observer | kills | OOMKilled at exit | OOMKilled 1 s later | Error | other | \
         exit → first EXITED read, p50 / p99 / max ms | row time, s |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        kernel.trim(),
        arch(),
        crate::containerd::Version::selected().name,
        spec.kills,
        spec.parallel,
    );
    for r in rows {
        let t = &r.tally;
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.0} / {:.0} / {:.0} | {:.0} |\n",
            r.load,
            if r.observer { "yes" } else { "no" },
            t.kills,
            t.oomkilled_at_exit,
            t.oomkilled_later,
            t.error,
            t.other,
            r.read_ms[0],
            r.read_ms[2],
            r.read_ms[3],
            r.seconds
        );
    }
    let misread: Vec<String> = rows
        .iter()
        .flat_map(|r| {
            r.misread.iter().map(move |m| {
                format!(
                    "- {} row, observer {}: {m}",
                    r.load,
                    if r.observer { "yes" } else { "no" }
                )
            })
        })
        .collect();
    if !misread.is_empty() {
        s += &format!(
            "\nContainers not read as OOMKilled at exit, with containerd's events for each \
             (ms from the read that said EXITED; negative: before it):\n\n{}\n",
            misread.join("\n")
        );
    }
    s
}

impl Row {
    /// The row as `docs/kubelet.json` has it.
    pub fn json(&self, where_: &str) -> serde_json::Value {
        let t = &self.tally;
        serde_json::json!({
            "runtime": "runc",
            "containerd": crate::containerd::Version::selected().name,
            // runc's SystemdCgroup: false in the private nodes' config (tests::cri), true on
            // a systemd node.
            "cgroup_driver": self.cgroup_driver,
            "cgroup": if crate::pod::unified() { "v2" } else { "v1" },
            "arch": arch(),
            "where": where_,
            "load": self.load,
            "observer": self.observer,
            "kills": t.kills,
            "oomkilled_at_exit": t.oomkilled_at_exit,
            "oomkilled_later": t.oomkilled_later,
            "error": t.error,
            "other": t.other,
        })
    }
}
