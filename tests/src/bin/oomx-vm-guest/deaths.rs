//! Deaths mode (`oomx.deaths=1` on the kernel command line, from `cargo xtask deaths-vm`):
//! the two senders of issue 21 that only a cgroup v2 guest can run, each against a pod run
//! through containerd's CRI plugin with oom-observer running:
//!
//! - `cgroup_kill`: a node process writes `1` to the container's `cgroup.kill`; the kernel
//!   SIGKILLs the container from the writer's context, so the writer is the sender.
//! - `earlyoom`: Debian's earlyoom (packed into the initramfs by the xtask) runs with a
//!   threshold just below the guest's available memory; a pod without a container limit
//!   allocates, and earlyoom signals it.
//!
//! One `death` verdict line per scenario: the `container_exit` line's cause, signal, sender
//! and message, and what is wrong with them.

use std::{
    collections::BTreeSet,
    fs,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use tests::{
    cri::{CriNode, CriPod},
    fake_apiserver::FakeApiServer,
    pretty, Observer,
};

use crate::{
    pods::{self, cgroup_dir, spec},
    race::guarded,
    sys::{emit, log},
};

/// earlyoom acts once this much more memory is in use than when it started.
const EARLYOOM_MARGIN_MB: u64 = 160;

pub fn run() {
    let t0 = Instant::now();
    pods::cri_env();
    if let Err(e) = guarded(deaths) {
        emit(&json!({"type": "death", "scenario": "setup", "status": "fail", "detail": e}));
    }
    emit(&json!({"type": "done", "seconds": t0.elapsed().as_secs_f64()}));
}

fn deaths() -> Result<(), String> {
    let (mut node, api) = pods::node_with_events(768)?;
    // `oomx.deaths_hook=tracepoint`: the classic tracepoints, whose `signal_generate`
    // program keys its target by pid (no task); `oomx.deaths_hook` also takes any other
    // strategy.
    let hook = crate::race::cmdline("deaths_hook");
    let mut args = vec!["--k8s-events", "--node-name", "node-a"];
    if let Some(h) = hook.as_deref() {
        args.extend(["--hook", h]);
    }
    let obs = node.cd.observer_with(Duration::from_secs(240), &args);
    let mut pods = Vec::new();
    for (name, scenario) in [
        (
            "cgroup_kill",
            cgroup_kill as fn(&mut CriNode, &Observer) -> Result<Value, String>,
        ),
        ("earlyoom", earlyoom),
    ] {
        let t = Instant::now();
        let r = guarded(|| scenario(&mut node, &obs));
        let mut v = match r {
            Ok(v) => {
                pods.push((v["pod"].as_str().unwrap_or_default().to_string(), name));
                v
            }
            Err(e) => {
                log(&format!(
                    "{name} failed: {e}\nobserver stderr:\n{}\nkernel log:\n{}",
                    obs.stderr_text(),
                    crate::sys::kernel_log_tail(40)
                ));
                json!({"status": "fail", "detail": e})
            }
        };
        v["type"] = "death".into();
        v["scenario"] = name.into();
        v["seconds"] = t.elapsed().as_secs_f64().into();
        emit(&v);
    }
    let t = Instant::now();
    let mut v = events(&api, &pods);
    v["type"] = "death".into();
    v["scenario"] = "events".into();
    v["seconds"] = t.elapsed().as_secs_f64().into();
    emit(&v);
    Ok(())
}

/// The Pod Events posted for the scenarios' pods: `KilledByNodeProcess` for the
/// `cgroup.kill`, `KilledByUserspaceOOMKiller` for earlyoom's kill, nothing else but the
/// forecast's `OOMRisk` warning, which the growing pod may earn before earlyoom acts.
fn events(api: &FakeApiServer, pods: &[(String, &str)]) -> Value {
    let want: BTreeSet<(String, String)> = pods
        .iter()
        .map(|(pod, sc)| {
            let reason = match *sc {
                "cgroup_kill" => "KilledByNodeProcess",
                _ => "KilledByUserspaceOOMKiller",
            };
            (pod.clone(), reason.to_string())
        })
        .collect();
    let posted = || -> Vec<(String, String, String)> {
        api.seen()
            .iter()
            .filter(|r| r.method == "POST")
            .map(|r| {
                let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
                (
                    s(&r.body["involvedObject"]["name"]),
                    s(&r.body["reason"]),
                    s(&r.body["message"]),
                )
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let deaths_posted = || posted().iter().filter(|(_, r, _)| r != "OOMRisk").count();
    while deaths_posted() < want.len() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    thread::sleep(Duration::from_millis(500));
    let got = posted();
    let got_set: BTreeSet<(String, String)> = got
        .iter()
        .filter(|(_, r, _)| r != "OOMRisk")
        .map(|(p, r, _)| (p.clone(), r.clone()))
        .collect();
    let mut problems = Vec::new();
    if pods.len() != 2 {
        problems.push(format!(
            "only {} scenario(s) passed to post an Event",
            pods.len()
        ));
    }
    if got_set != want {
        problems.push(format!("Pod Events {got_set:?}, not {want:?}"));
    }
    json!({
        "status": if problems.is_empty() { "pass" } else { "fail" },
        "detail": problems.join("; "),
        "events": got
            .iter()
            .map(|(p, r, m)| json!({"pod": p, "reason": r, "message": m}))
            .collect::<Vec<_>>(),
    })
}

/// Waits for the pod's one `container_exit` line; panics (fails the scenario) on none
/// within `within` or on more than one.
fn exit_line(obs: &Observer, pod: &CriPod, within: Duration) -> Value {
    let id = pod.container_id.as_str();
    let is_it = |e: &Value| e["event"] == "container_exit" && e["container"]["id"] == id;
    obs.wait_for("the pod's container_exit line", within, |evs| {
        evs.iter().any(is_it)
    });
    // A second one would come at once: the reap is one event.
    thread::sleep(Duration::from_secs(2));
    let evs = obs.events();
    let lines: Vec<&Value> = evs.iter().filter(|e| is_it(e)).collect();
    assert_eq!(
        lines.len(),
        1,
        "exactly one container_exit for {id}: {}",
        pretty(&evs)
    );
    lines[0].clone()
}

/// The verdict's common part, and the checks every scenario makes: the container and pod
/// named, the exit as the CRI read it.
fn verdict(x: &Value, pod: &CriPod, problems: &mut Vec<String>) -> Value {
    if x["pid"] != pod.pid {
        problems.push(format!("pid {} is not the init {}", x["pid"], pod.pid));
    }
    if x["container"]["pod"]["name"] != pod.name.as_str() {
        problems.push(format!(
            "pod {} is not {}",
            x["container"]["pod"]["name"], pod.name
        ));
    }
    json!({
        "pod": pod.name,
        "cause": x["cause"],
        "exit_code": x["exit_code"],
        "signal": x["signal"],
        "sender": {
            "comm": x["sender"]["comm"],
            "tgid": x["sender"]["tgid"],
            "signal": x["sender"]["signal"],
            "code": x["sender"]["code"],
            "container": x["sender"]["container"],
        },
        "kubelet": x["kubelet"],
        "message": x["message"],
        "line": x,
    })
}

fn finish(mut v: Value, problems: Vec<String>) -> Result<Value, String> {
    v["status"] = if problems.is_empty() { "pass" } else { "fail" }.into();
    v["detail"] = problems.join("; ").into();
    Ok(v)
}

/// `echo 1 > cgroup.kill` by a shell of the node: cause `node_process`, the shell as the
/// sender, SIGKILL, SI_USER.
fn cgroup_kill(node: &mut CriNode, obs: &Observer) -> Result<Value, String> {
    let pod = node.run_pod_spec(&spec("while :; do sleep 1; done", 64, Some(32)));
    let dir = cgroup_dir(pod.pid)?;
    if !dir.contains(&pod.container_id) {
        return Err(format!(
            "{dir} is not the container {}'s own cgroup",
            pod.container_id
        ));
    }
    let kill_file = format!("{dir}/cgroup.kill");
    // The initramfs has busybox alone; as `sh` the writer's comm is `sh`, not `busybox`.
    if !std::path::Path::new("/bin/sh").exists() {
        std::os::unix::fs::symlink("busybox", "/bin/sh").map_err(|e| format!("/bin/sh: {e}"))?;
    }
    let writer = Command::new("/bin/sh")
        .args(["-c", &format!("echo 1 > {kill_file}")])
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("sh writing {kill_file}: {e}"))?;
    let writer_pid = writer.id();
    let out = writer
        .wait_with_output()
        .map_err(|e| format!("waiting for the writer: {e}"))?;
    if !out.status.success() {
        return Err(format!("writing {kill_file}: {}", out.status));
    }
    let x = exit_line(obs, &pod, Duration::from_secs(60));
    let mut problems = Vec::new();
    let mut v = verdict(&x, &pod, &mut problems);
    v["writer"] = json!({"comm": "sh", "tgid": writer_pid, "file": kill_file});
    for (what, got, want) in [
        ("cause", &x["cause"], json!("node_process")),
        ("signal", &x["signal"], json!("SIGKILL")),
        ("exit_code", &x["exit_code"], json!(137)),
        ("sender.comm", &x["sender"]["comm"], json!("sh")),
        ("sender.tgid", &x["sender"]["tgid"], json!(writer_pid)),
        ("sender.code", &x["sender"]["code"], json!("SI_USER")),
        ("sender.container", &x["sender"]["container"], Value::Null),
    ] {
        if *got != want {
            problems.push(format!("{what} is {got}, not {want}"));
        }
    }
    finish(v, problems)
}

/// MemAvailable and MemTotal in MiB.
fn meminfo() -> Result<(u64, u64), String> {
    let text = fs::read_to_string("/proc/meminfo").map_err(|e| format!("/proc/meminfo: {e}"))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .map(|kib| kib / 1024)
            .ok_or_else(|| format!("no {name} in /proc/meminfo"))
    };
    Ok((field("MemAvailable:")?, field("MemTotal:")?))
}

/// Node-wide pressure from a pod with no container limit; earlyoom, told to act once
/// [`EARLYOOM_MARGIN_MB`] more is used, signals the biggest process, the pod's allocator:
/// cause `oom_killer_userspace`, sender `earlyoom`.
fn earlyoom(node: &mut CriNode, obs: &Observer) -> Result<Value, String> {
    // 4 MiB strings, one more every 0.1 s, once the gate opens: earlyoom's poll (at most
    // every 100 ms when close to its threshold) sees the pressure rise steadily.
    let mib4 = "y=a; i=0; while [ $i -lt 22 ]; do y=$y$y; i=$((i+1)); done";
    let gate = format!("{}/go", tests::cri::GATE_MOUNT);
    let script = format!(
        "while [ ! -e {gate} ]; do sleep 0.05; done; {mib4}; j=0; \
         while :; do eval \"z$j=\\$y\"; j=$((j+1)); sleep 0.1; done"
    );
    // The pod's limit is far above what earlyoom lets it reach: the pressure is the node's.
    let pod = node.run_pod_spec(&spec(&script, 700, None));
    let (avail, total) = meminfo()?;
    let threshold_mb = avail.saturating_sub(EARLYOOM_MARGIN_MB);
    let percent = (threshold_mb * 100 / total.max(1)).max(1);
    log(&format!(
        "earlyoom: MemAvailable {avail} MiB of {total} MiB; acting below {percent}%"
    ));
    let log_path = node.cd.dir.join("earlyoom.log");
    let log_file = fs::File::create(&log_path).map_err(|e| format!("earlyoom log: {e}"))?;
    let mut eo = Command::new("/bin/earlyoom")
        .args([
            "-m",
            &percent.to_string(),
            "-s",
            "100",
            "-r",
            "0",
            "--prefer",
            "^sh$",
            "--avoid",
            "^(containerd.*|runc|oom-observer|oomx-vm-guest|earlyoom|sleep)$",
        ])
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
        .stderr(log_file)
        .spawn()
        .map_err(|e| format!("starting /bin/earlyoom: {e}"))?;
    let eo_pid = eo.id();
    thread::sleep(Duration::from_secs(3));
    if let Ok(Some(st)) = eo.try_wait() {
        return Err(format!(
            "earlyoom ended at its start: {st}: {}",
            fs::read_to_string(&log_path).unwrap_or_default()
        ));
    }
    fs::write(node.cd.dir.join("gate/go"), "").map_err(|e| format!("opening the gate: {e}"))?;
    let x = guarded(|| Ok(exit_line(obs, &pod, Duration::from_secs(180))));
    let _ = eo.kill();
    let _ = eo.wait();
    let eo_log = fs::read_to_string(&log_path).unwrap_or_default();
    log(&format!("earlyoom's log:\n{eo_log}"));
    let x = x?;
    let mut problems = Vec::new();
    let mut v = verdict(&x, &pod, &mut problems);
    v["earlyoom"] =
        json!({"pid": eo_pid, "percent": percent, "avail_mb": avail, "total_mb": total});
    for (what, got, want) in [
        ("cause", &x["cause"], json!("oom_killer_userspace")),
        ("sender.comm", &x["sender"]["comm"], json!("earlyoom")),
        ("sender.tgid", &x["sender"]["tgid"], json!(eo_pid)),
        ("sender.code", &x["sender"]["code"], json!("SI_USER")),
    ] {
        if *got != want {
            problems.push(format!("{what} is {got}, not {want}"));
        }
    }
    if x["signal"] != "SIGTERM" && x["signal"] != "SIGKILL" {
        problems.push(format!(
            "signal is {}, not earlyoom's SIGTERM or SIGKILL",
            x["signal"]
        ));
    }
    if !eo_log.contains("sending") {
        problems.push("earlyoom's log names no signal it sent".into());
    }
    finish(v, problems)
}
