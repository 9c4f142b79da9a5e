//! `oomx-systemd-guest`: the checks of `cargo xtask systemd-guest`, run as a oneshot unit
//! (`oomx-node-check.service`) in a guest whose PID 1 is Debian's systemd, next to Debian's
//! `containerd.service` (`SystemdCgroup = true`) and `packaging/oom-observer.service`.
//!
//! It drives containerd's CRI plugin as a kubelet with the systemd cgroup driver does (pod
//! cgroup parents are slices, so systemd makes the slices and `cri-containerd-<id>.scope`),
//! OOM-kills containers, and reads what the unit's daemon wrote to the unit's own output file
//! (`/var/log/oom-observer/events.jsonl`, `StandardOutput=append:` in the unit: the very file
//! a node's log pipeline reads; the journal only holds its logs). Each check is one
//! `OOMX {json}` line on `/dev/console` (the serial port), which the xtask reads; then the
//! guest powers off.
//!
//! It refuses to run unless PID 1 is systemd and it runs in its own unit: it kills and
//! restarts a system service, which is only acceptable inside its own VM.

use std::{
    collections::HashMap,
    fs,
    io::Write,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use containerd_client::tonic::transport::Channel;
use k8s_cri::v1::{
    runtime_service_client::RuntimeServiceClient, ContainerConfig, ContainerMetadata,
    ContainerState, ContainerStatusRequest, CreateContainerRequest, ImageSpec,
    LinuxContainerConfig, LinuxContainerResources, LinuxContainerSecurityContext,
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, Mount, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata, RunPodSandboxRequest, StartContainerRequest,
};
use serde_json::{json, Value};

mod kubelet;

/// The unit under test, and its output.
use tests::cri::systemd::{EVENTS, UNIT};
pub(crate) const SOCKET: &str = "/run/containerd/containerd.sock";
const PAUSE_IMAGE: &str = "oomx.local/pause:1";
const BUSYBOX_IMAGE: &str = "oomx.local/busybox:1";
/// Where the pods' gate files are, on the node and in every container.
const GATE: &str = "/run/oomx-gate";
/// The container's own memory limit.
const LIMIT_MB: i64 = 32;
/// Loading and verifying the programs under TCG, and containerd's start, with margin.
const READY: Duration = Duration::from_secs(240);

/// One protocol line on the serial console, in one write.
pub(crate) fn emit(v: &Value) {
    let line = format!("OOMX {v}\n");
    if let Ok(mut c) = fs::OpenOptions::new().write(true).open("/dev/console") {
        let _ = c.write_all(line.as_bytes());
    }
    // Also in the journal, for whoever reads the guest's log.
    print!("{line}");
}

/// A human-readable line for the console log.
fn log(text: &str) {
    for l in text.lines() {
        emit(&json!({"type": "log", "line": l}));
    }
}

/// A measurement that is reported, not required (what the guest found).
fn finding(name: &str, holds: bool, detail: Value) {
    emit(&json!({"type": "finding", "name": name, "holds": holds, "detail": detail}));
}

/// One check's verdict.
fn check(name: &str, ok: bool, detail: impl Into<Value>) -> bool {
    emit(&json!({"type": "check", "name": name, "ok": ok, "detail": detail.into()}));
    ok
}

fn sh(cmd: &str, args: &[&str]) -> Result<String, String> {
    let o = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    if o.status.success() {
        Ok(text)
    } else {
        Err(format!("{cmd} {args:?}: {}: {text}", o.status))
    }
}

/// `systemctl show -P <property> <unit>`.
fn prop(unit: &str, p: &str) -> String {
    sh("systemctl", &["show", "-P", p, unit])
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn journal(unit: &str) -> String {
    sh("journalctl", &["-u", unit, "-o", "cat", "--no-pager"]).unwrap_or_default()
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while !f() {
        if Instant::now() > deadline {
            return Err(format!("timed out after {limit:?} waiting for {what}"));
        }
        thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// Every `oom_kill` line the daemon wrote.
fn all_kill_lines() -> Vec<Value> {
    fs::read_to_string(EVENTS)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "oom_kill")
        .collect()
}

/// The daemon's `oom_kill` lines of a pod's kill: naming its container, or its victim (a
/// line whose container could not be named still counts, so a duplicate cannot hide).
fn kill_lines(pod: &Pod) -> Vec<Value> {
    all_kill_lines()
        .into_iter()
        .filter(|v| v["container"]["id"] == pod.id.as_str() || v["victim"]["tgid"] == pod.pid)
        .collect()
}

fn main() {
    let t0 = Instant::now();
    let pid1 = fs::read_to_string("/proc/1/comm").unwrap_or_default();
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    if pid1.trim() != "systemd" || !own.contains("/oomx-node-check.service") {
        eprintln!("oomx-systemd-guest runs only as oomx-node-check.service in its test VM");
        std::process::exit(2);
    }
    let mut u = String::new();
    if let Ok(r) = fs::read_to_string("/proc/sys/kernel/osrelease") {
        u = r.trim().to_string();
    }
    emit(&json!({"type": "boot", "kernel": u, "pid1": pid1.trim(), "cgroup": own.trim()}));
    let result = match kubelet::requested() {
        Some(n) => node_ready().map(|()| kubelet::run(n, READY)),
        None => run(),
    };
    if let Err(e) = result {
        check("run", false, e);
        // What the units said, for the console log.
        for unit in [UNIT, "containerd.service"] {
            log(&sh("systemctl", &["status", "--no-pager", "-l", unit]).unwrap_or_else(|e| e));
            log(&journal(unit));
        }
    }
    emit(&json!({"type": "done", "seconds": t0.elapsed().as_secs_f64()}));
    // At once, as `poweroff -ff`: a clean shutdown waits out the pause containers' `sleep`
    // (PID 1 of its namespace, deaf to SIGTERM), and the root is in RAM, with nothing to save.
    let _ = sh("systemctl", &["--force", "--force", "poweroff"]);
}

/// A CRI client on containerd's socket.
struct Cri {
    rt: tokio::runtime::Runtime,
    rs: RuntimeServiceClient<Channel>,
}

/// One pod's container, waiting at its gate.
struct Pod {
    uid: String,
    id: String,
    gate: String,
    /// The container's init, the OOM killer's victim.
    pid: u64,
}

impl Cri {
    fn connect() -> Result<Cri, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let ch = rt
            .block_on(containerd_client::connect(SOCKET))
            .map_err(|e| format!("connecting to {SOCKET}: {e}"))?;
        Ok(Cri {
            rt,
            rs: RuntimeServiceClient::new(ch),
        })
    }

    /// A burstable pod as a kubelet with the systemd cgroup driver asks for it: its cgroup
    /// parent is the pod's slice (`kubepods-burstable-pod<uid>.slice`, the uid's dashes as
    /// underscores), which runc's systemd driver expands to
    /// `kubepods.slice/kubepods-burstable.slice/…` and systemd creates.
    fn pod(&mut self, n: u32) -> Result<Pod, String> {
        let uid = format!("0a0b0c0d-0000-4000-8000-00000000000{n}");
        let name = format!("hog-{n}");
        let slice = format!("kubepods-burstable-pod{}.slice", uid.replace('-', "_"));
        let gate = format!("go-{n}");
        let labels = |c: Option<&str>| {
            let mut l = HashMap::from([
                ("io.kubernetes.pod.name".to_string(), name.clone()),
                ("io.kubernetes.pod.namespace".into(), "oomx".into()),
                ("io.kubernetes.pod.uid".into(), uid.clone()),
            ]);
            if let Some(c) = c {
                l.insert("io.kubernetes.container.name".into(), c.into());
            }
            l
        };
        let ns = || NamespaceOption {
            network: NamespaceMode::Node as i32,
            pid: NamespaceMode::Container as i32,
            ipc: NamespaceMode::Pod as i32,
            ..Default::default()
        };
        // The kubelet makes the pod's log directory; the CRI writes into it.
        fs::create_dir_all(format!("/var/log/pods/{uid}")).map_err(|e| e.to_string())?;
        let sandbox = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.clone(),
                uid: uid.clone(),
                namespace: "oomx".into(),
                attempt: 0,
            }),
            log_directory: format!("/var/log/pods/{uid}"),
            labels: labels(None),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: slice,
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(ns()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let sandbox_id = self
            .rt
            .block_on(self.rs.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(sandbox.clone()),
                runtime_handler: String::new(),
            }))
            .map_err(|e| format!("RunPodSandbox: {e}"))?
            .into_inner()
            .pod_sandbox_id;
        // Half the limit before the gate (16 MiB; a doubling's copy peaks at 24), so the next
        // doubling is the kill: it comes within moments of the gate, as the restart check
        // needs (before RestartSec=1s has passed).
        let script = format!(
            "x=a; i=0; while [ $i -lt 24 ]; do x=$x$x; i=$((i+1)); done; \
             while [ ! -e /oomx/{gate} ]; do sleep 0.05; done; while :; do x=$x$x; done"
        );
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: "hog".into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: BUSYBOX_IMAGE.into(),
                ..Default::default()
            }),
            command: vec!["/bin/sh".into(), "-c".into(), script],
            mounts: vec![Mount {
                container_path: "/oomx".into(),
                host_path: GATE.into(),
                readonly: true,
                ..Default::default()
            }],
            log_path: "hog.log".into(),
            labels: labels(Some("hog")),
            linux: Some(LinuxContainerConfig {
                resources: Some(LinuxContainerResources {
                    memory_limit_in_bytes: LIMIT_MB << 20,
                    ..Default::default()
                }),
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(ns()),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        let id = self
            .rt
            .block_on(self.rs.create_container(CreateContainerRequest {
                pod_sandbox_id: sandbox_id,
                config: Some(config),
                sandbox_config: Some(sandbox),
            }))
            .map_err(|e| format!("CreateContainer: {e}"))?
            .into_inner()
            .container_id;
        self.rt
            .block_on(self.rs.start_container(StartContainerRequest {
                container_id: id.clone(),
            }))
            .map_err(|e| format!("StartContainer: {e}"))?;
        let pid = self.pid(&id)?;
        Ok(Pod { uid, id, gate, pid })
    }

    /// The container's init as the node sees it (ContainerStatus's verbose info, as
    /// `crictl inspect` shows it).
    fn pid(&mut self, id: &str) -> Result<u64, String> {
        let resp = self
            .rt
            .block_on(self.rs.container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            }))
            .map_err(|e| format!("ContainerStatus {id}: {e}"))?
            .into_inner();
        resp.info
            .get("info")
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
            .and_then(|v| v["pid"].as_u64())
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("no pid in the verbose status of {id}"))
    }

    /// State, reason, exit code and finish time (ns since the epoch) of a container.
    fn status(&mut self, id: &str) -> Result<(String, String, i32, i64), String> {
        let st = self
            .rt
            .block_on(self.rs.container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            }))
            .map_err(|e| format!("ContainerStatus {id}: {e}"))?
            .into_inner()
            .status
            .ok_or("ContainerStatus: no status")?;
        let state = ContainerState::try_from(st.state)
            .map(|s| s.as_str_name().to_string())
            .unwrap_or_else(|_| st.state.to_string());
        Ok((state, st.reason, st.exit_code, st.finished_at))
    }

    /// Opens the pod's gate and waits until the CRI reports its container EXITED.
    fn kill(&mut self, pod: &Pod) -> Result<(String, i32), String> {
        fs::write(Path::new(GATE).join(&pod.gate), b"").map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (state, reason, code, _) = self.status(&pod.id)?;
            if state == "CONTAINER_EXITED" {
                // As the kubelet's later relists read it.
                thread::sleep(Duration::from_secs(1));
                let (_, reason2, code2, _) = self.status(&pod.id)?;
                log(&format!(
                    "{}: first EXITED read {reason}/{code}, a second later {reason2}/{code2}",
                    pod.id
                ));
                return Ok((reason2, code2));
            }
            if Instant::now() > deadline {
                return Err(format!("{} still {state} after 120 s", pod.id));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The pause and busybox images, as OCI archives from the guest's static busybox, imported
/// into `k8s.io` (no registry: the CRI must never pull).
fn images() -> Result<(), String> {
    use oci_archive::Entry;
    let busybox = fs::read("/bin/busybox").map_err(|e| format!("/bin/busybox: {e}"))?;
    let mut entries: Vec<Entry> = ["bin", "dev", "etc", "proc", "sys", "tmp", "oomx"]
        .into_iter()
        .map(Entry::dir)
        .collect();
    entries.push(Entry::file("bin/busybox", busybox, 0o755));
    for a in ["sh", "sleep", "test"] {
        entries.push(Entry::symlink(format!("bin/{a}"), "busybox"));
    }
    for (name, file, entry) in [
        (
            PAUSE_IMAGE,
            "/run/oomx-pause.tar",
            vec!["/bin/sleep", "2147483647"],
        ),
        (BUSYBOX_IMAGE, "/run/oomx-busybox.tar", vec!["/bin/sh"]),
    ] {
        let image = oci_archive::Image {
            platform: oci_archive::Platform::host(),
            entries: entries.clone(),
            entrypoint: entry.iter().map(|s| s.to_string()).collect(),
            cmd: Vec::new(),
            env: vec!["PATH=/bin".into()],
        };
        oci_archive::write_oci_archive(Path::new(file), name, &[image])
            .map_err(|e| format!("writing {file}: {e}"))?;
        sh(
            "ctr",
            &[
                "-n",
                "k8s.io",
                "images",
                "import",
                "--snapshotter",
                "native",
                file,
            ],
        )?;
    }
    Ok(())
}

/// The daemon's sandbox as the kernel sees it: its cgroup, capabilities, no_new_privs and
/// seccomp mode.
fn sandbox_facts(pid: &str) -> Value {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
    };
    json!({
        "cgroup": fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default().trim(),
        "CapEff": field("CapEff:"),
        "NoNewPrivs": field("NoNewPrivs:"),
        "Seccomp": field("Seccomp:"),
        "oom_score_adj": fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap_or_default().trim(),
    })
}

/// containerd's socket is there and the unit's daemon has started, ready and connected to
/// containerd, without a restart.
fn node_ready() -> Result<(), String> {
    wait_for("containerd's socket", READY, || Path::new(SOCKET).exists())?;
    wait_for("the daemon's `ready` log line", READY, || {
        let j = journal(UNIT);
        // A unit that gave up (its start limit) will not get there.
        j.contains(" ready") && j.contains("connected to containerd")
            || prop(UNIT, "ActiveState") == "failed"
            || prop(UNIT, "NRestarts") != "0"
    })?;
    // Nothing has killed it yet: a restart is a failed start.
    if prop(UNIT, "ActiveState") == "failed" || prop(UNIT, "NRestarts") != "0" {
        return Err(format!(
            "{UNIT} failed to start ({} restarts)",
            prop(UNIT, "NRestarts")
        ));
    }
    Ok(())
}

/// CAP_SYS_NICE (23), CAP_SYS_RESOURCE (24), CAP_PERFMON (38), CAP_BPF (39): the unit's
/// `AmbientCapabilities=`, and nothing else.
const UNIT_CAPS: &str = "000000c001800000";

fn run() -> Result<(), String> {
    fs::create_dir_all(GATE).map_err(|e| e.to_string())?;
    let bpffs: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" - bpf "))
        .map(str::to_string)
        .collect();
    emit(&json!({"type": "bpffs", "mounts": bpffs}));
    node_ready()?;
    let pid = prop(UNIT, "MainPID");
    // Only through a bpf(2) link, not perf_event_open(2), where Debian's kernels (at
    // perf_event_paranoid 3) want CAP_SYS_ADMIN: say which programs did not attach.
    let not_attached: Vec<String> = journal(UNIT)
        .lines()
        .filter(|l| l.contains("not attached"))
        .map(str::to_string)
        .collect();
    emit(&json!({"type": "not_attached", "lines": not_attached}));
    let facts = sandbox_facts(&pid);
    let in_unit = facts["cgroup"] == "0::/system.slice/oom-observer.service";
    let sandboxed = facts["CapEff"] == UNIT_CAPS
        && facts["NoNewPrivs"] == "1"
        && facts["Seccomp"] == "2"
        && facts["oom_score_adj"] == "-999";
    check(
        "daemon_runs_as_the_unit_in_its_sandbox",
        in_unit && sandboxed,
        facts,
    );
    log(&sh("systemctl", &["cat", UNIT]).unwrap_or_else(|e| e));
    images()?;
    let mut cri = Cri::connect()?;
    let t = Instant::now();
    let a = cri.pod(1)?;
    let pod_s = t.elapsed().as_secs_f64();
    let scope = format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{}.scope",
        a.uid.replace('-', "_"),
        a.id
    );
    let unit = format!("cri-containerd-{}.scope", a.id);
    let active = prop(&unit, "ActiveState");
    check(
        "systemd_made_the_scope",
        active == "active" && Path::new(&format!("/sys/fs/cgroup{scope}")).is_dir(),
        json!({"unit": unit, "ActiveState": active, "cgroup": scope, "pod_seconds": pod_s}),
    );
    let (reason, code) = cri.kill(&a)?;
    check(
        "cri_reads_oomkilled",
        reason == "OOMKilled" && code == 137,
        json!({"reason": reason, "exit_code": code}),
    );
    wait_for(
        "the daemon's oom_kill line",
        Duration::from_secs(60),
        || !kill_lines(&a).is_empty(),
    )?;
    let lines = kill_lines(&a);
    let first = lines.first().cloned().unwrap_or_default();
    check(
        "oom_kill_line_names_the_scope",
        lines.len() == 1 && first["victim"]["cgroup"] == scope.as_str(),
        json!({"lines": lines.len(), "cgroup": first["victim"]["cgroup"], "container": first["container"], "hook": first["hook"]}),
    );
    check(
        "published",
        first["published"] == true,
        first["published"].clone(),
    );

    // The score of the unit as it runs (its drop-in included), not of the file alone.
    match sh("systemd-analyze", &["security", UNIT, "--no-pager"]) {
        Ok(text) | Err(text) => {
            let overall = text
                .lines()
                .find(|l| l.contains("Overall exposure level"))
                .unwrap_or_default()
                .trim()
                .to_string();
            emit(&json!({"type": "security", "overall": overall, "text": text}));
            // "→ Overall exposure level for oom-observer.service: 1.5 OK :-)"; at most 2, the
            // bound tests/tests/packaging.rs holds the file to offline.
            let score = overall
                .rsplit(": ")
                .next()
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse::<f64>().ok());
            check(
                "security_scored",
                score.is_some_and(|s| s <= 2.0),
                json!({"overall": overall, "score": score}),
            );
        }
    }

    restart(&mut cri)
}

/// `Restart=` with `--pin-dir`: SIGKILL the daemon, OOM-kill a pod while no daemon runs, and
/// check the restarted daemon reports that kill exactly once.
fn restart(cri: &mut Cri) -> Result<(), String> {
    let b = cri.pod(2)?;
    let before = prop(UNIT, "MainPID");
    let restarts = prop(UNIT, "NRestarts");
    sh("systemctl", &["kill", "-s", "KILL", UNIT])?;
    // At once: the kill must come before RestartSec=1s has passed and the new daemon runs.
    let (reason, code) = cri.kill(&b)?;
    wait_for("the restarted daemon", READY, || {
        let pid = prop(UNIT, "MainPID");
        pid != before && pid != "0" && prop(UNIT, "ActiveState") == "active"
    })?;
    wait_for(
        "the restarted daemon's oom_kill line",
        Duration::from_secs(120),
        || !kill_lines(&b).is_empty(),
    )
    .inspect_err(|_| log(&format!("oom_kill lines: {:?}", all_kill_lines())))?;
    // Duplicates would come right after the first.
    thread::sleep(Duration::from_secs(3));
    let lines = kill_lines(&b);
    let first = lines.first().cloned().unwrap_or_default();
    let ktime_us = first["ktime_ns"].as_u64().unwrap_or(0) / 1000;
    let down_us: u64 = prop(UNIT, "ActiveExitTimestampMonotonic")
        .parse()
        .unwrap_or(0);
    let up_us: u64 = prop(UNIT, "ExecMainStartTimestampMonotonic")
        .parse()
        .unwrap_or(0);
    let after = prop(UNIT, "MainPID");
    let restarts_after = prop(UNIT, "NRestarts");
    let j = journal(UNIT);
    let reused = j.contains("reusing the programs pinned");
    let scope = format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{}.scope",
        b.uid.replace('-', "_"),
        b.id
    );
    // Measured, not required: a kill made while no daemon ran is named only if its cgroup
    // still exists when the restarted daemon reads the record, and systemd removes a
    // container's scope as soon as its last process exits.
    finding(
        "kill_while_down_attributed",
        first["container"]["id"] == b.id.as_str()
            && first["victim"]["cgroup"] == scope.as_str()
            && first["published"] == true,
        json!({"container": first["container"], "cgroup": first["victim"]["cgroup"], "published": first["published"]}),
    );
    check(
        "kill_while_down_reported_once",
        lines.len() == 1 && down_us < ktime_us && ktime_us < up_us && after != before && reused,
        json!({
            "lines": lines.len(),
            "cgroup": first["victim"]["cgroup"],
            "published": first["published"],
            "kill_ktime_us": ktime_us,
            "daemon_down_at_us": down_us,
            "daemon_restarted_at_us": up_us,
            "main_pid": [before, after],
            "n_restarts": [restarts, restarts_after],
            "reused_pins": reused,
            "cri": {"reason": reason, "exit_code": code},
        }),
    );
    if !reused {
        log(&j);
    }
    Ok(())
}
