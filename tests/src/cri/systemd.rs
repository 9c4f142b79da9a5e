//! A [`CriNode`](super::CriNode) on a node whose PID 1 is systemd: the node's own
//! `containerd.service` with `SystemdCgroup = true`, pods in slices as a kubelet with the
//! systemd cgroup driver makes them, and oom-observer as its unit
//! (`packaging/oom-observer.service`), started and stopped by systemd.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

/// The unit, and its output as the unit's `StandardOutput=append:` names it.
pub const UNIT: &str = "oom-observer.service";
pub const EVENTS: &str = "/var/log/oom-observer/events.jsonl";

/// The pod's cgroup parent as a kubelet with the systemd driver names it: a slice under
/// `kubepods-burstable.slice`, the uid's dashes as underscores (systemd reads a dash as a
/// level of the slice tree).
pub fn pod_slice(uid: &str) -> String {
    format!("kubepods-burstable-pod{}.slice", uid.replace('-', "_"))
}

/// The cgroup directory systemd makes for a container of the CRI (`cri-containerd-<id>.scope`).
pub fn scope_dir(slice: &str, container_id: &str) -> PathBuf {
    PathBuf::from(format!(
        "/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/{slice}/cri-containerd-{container_id}.scope"
    ))
}

/// The pod's memory limit on its slice, as the kubelet's systemd cgroup manager sets it:
/// through systemd (`MemoryMax=`), not by writing the cgroup, which systemd would undo.
pub fn set_slice_limit(slice: &str, mb: u64) {
    let status = Command::new("systemctl")
        .args(["set-property", "--runtime", slice])
        .arg(format!("MemoryMax={}", mb << 20))
        .status()
        .expect("running systemctl");
    assert!(status.success(), "systemctl set-property {slice}: {status}");
}

/// The CPU weight of `kubepods.slice` while the rows run: a tenth of the loaded rows'
/// starved CPU's scratch tree (`cpu.weight` 10000, tests::load), as the pods have a tenth of
/// the busy loops' weight when they share that tree on a node without systemd
/// (docs/kubelet.md, "loaded"). At systemd's default (100) the pods there would get a
/// hundredth of the CPU, and their kills would take minutes under emulation.
const KUBEPODS_WEIGHT: u32 = 1000;

/// Sets [`KUBEPODS_WEIGHT`] on `kubepods.slice`, as a kubelet sets that slice's CPU weight
/// from the node's allocatable CPU (no kubelet runs here).
pub fn weigh_kubepods() {
    systemctl(&[
        "set-property",
        "--runtime",
        "kubepods.slice",
        &format!("CPUWeight={KUBEPODS_WEIGHT}"),
    ]);
}

/// Memory charged to a cgroup directory now.
pub fn usage(dir: &Path) -> u64 {
    fs::read_to_string(dir.join("memory.current"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn systemctl(args: &[&str]) {
    let out = Command::new("systemctl")
        .args(args)
        .output()
        .expect("running systemctl");
    assert!(
        out.status.success(),
        "systemctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn journal() -> String {
    Command::new("journalctl")
        .args(["-u", UNIT, "-o", "cat", "--no-pager"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Stops the unit (a node's kubelet rows without oom-observer).
pub fn stop_unit() {
    systemctl(&["stop", UNIT]);
}

/// The unit, started for one row and stopped when this drops.
pub struct UnitRun {
    /// Where its output file was when it started: its events are the lines after it.
    from: u64,
}

impl UnitRun {
    /// `systemctl start`, then waits (within `ready`) for the new daemon's log to say it is
    /// connected to containerd.
    pub fn start(ready: Duration) -> UnitRun {
        let from = fs::metadata(EVENTS).map(|m| m.len()).unwrap_or(0);
        let connected = |j: &str| j.matches("connected to containerd").count();
        let before = connected(&journal());
        systemctl(&["start", UNIT]);
        let deadline = Instant::now() + ready;
        while connected(&journal()) <= before {
            assert!(
                Instant::now() < deadline,
                "{UNIT} not connected to containerd within {ready:?}; its journal:\n{}",
                journal()
            );
            thread::sleep(Duration::from_millis(200));
        }
        UnitRun { from }
    }

    /// The events the unit wrote since it started.
    pub fn events(&self) -> Vec<Value> {
        let text = fs::read(EVENTS).unwrap_or_default();
        let from = (self.from as usize).min(text.len());
        String::from_utf8_lossy(&text[from..])
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for UnitRun {
    fn drop(&mut self) {
        let _ = Command::new("systemctl").args(["stop", UNIT]).status();
    }
}
