//! `oomx.kubelet=N` on the guest's command line: instead of the checks, the kubelet rows of
//! `tests::cri` on this node (N pods per row, idle and loaded, without oom-observer and with
//! its unit running), the pods in systemd's slices and scopes. One `kubelet` line.

use std::{panic, path::Path, time::Duration};

use serde_json::{json, Value};
use tests::cri::{markdown_rows, rows, CriNode, RowSpec};

use crate::{emit, SOCKET};

/// How long a loaded row waits for each kill ([`RowSpec::loaded_kill_bound`]).
const LOADED_KILL_BOUND: Duration = Duration::from_secs(90);

/// N from `oomx.kubelet=N`, if the guest was booted for the rows.
pub fn requested() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/cmdline").ok()?;
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("oomx.kubelet="))
        .and_then(|n| n.parse().ok())
}

/// Runs the rows and reports them; a panic of the harness is the verdict's problem.
pub fn run(n: usize, ready: Duration) {
    let verdict = match panic::catch_unwind(panic::AssertUnwindSafe(|| kubelet(n, ready))) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => json!({"type": "kubelet", "problems": [e]}),
        Err(p) => {
            let what = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "?".into());
            json!({"type": "kubelet", "problems": [format!("panicked: {what}")]})
        }
    };
    emit(&verdict);
}

fn kubelet(n: usize, ready: Duration) -> Result<Value, String> {
    // The CRI unpacks into `native` (the guest's containerd config: no overlayfs module).
    std::env::set_var("OOMX_SNAPSHOTTER", "native");
    // The loaded rows' starved CPU weighs its busy loops against the node's cgroups.
    std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+cpu")
        .map_err(|e| format!("enabling +cpu at the cgroup root: {e}"))?;
    let mut node = CriNode::systemd(Path::new(SOCKET));
    let mut spec = RowSpec::new(n);
    // Under TCG, on the starved CPU, with pods at a tenth of its weight, a loaded kill came up
    // to about 35 s after the gate opened (1.6.20, 20 pods): the default 30 s left three
    // containers unread. A kill not come at 90 s is still reported as not read.
    spec.loaded_kill_bound = LOADED_KILL_BOUND;
    let rows = rows(&mut node, &spec, ready);
    drop(node);
    Ok(json!({
        "type": "kubelet",
        "rows": rows.iter().map(|r| r.json("guest")).collect::<Vec<_>>(),
        "table": markdown_rows(&rows, &spec, "guest"),
        "problems": rows.iter().flat_map(|r| r.problems(true)).collect::<Vec<_>>(),
    }))
}
