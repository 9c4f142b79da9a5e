//! Who killed it: pods run through containerd's own CRI plugin, each ended a different way
//! by a real sender, with oom-observer running. Every container must get exactly one
//! `container_exit` line whose cause and sender are the ones a user would check, and the
//! kubelet's wrong `OOMKilled` (an earlier OOM kill of a child, then a stop: kubernetes
//! #140716) must be flagged, and read back from the CRI as the kubelet reads it.
//!
//! The Pod Events go to a loopback stand-in for the API server: none can run on these
//! machines (see tests/tests/k8s_events.rs, which says what that cannot check).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a panic is how a test fails"
)]

use std::{collections::BTreeSet, process::Command, thread, time::Duration};

use serde_json::Value;
use tests::{
    cri::{CriNode, CriPod, PodSpec},
    fake_apiserver::FakeApiServer,
    pretty, Observer,
};

fn spec(script: &str, shared_pid: bool) -> PodSpec {
    PodSpec {
        pod_limit_mb: 64,
        limit_mb: Some(32),
        script: script.into(),
        systemd_parent: false,
        shared_pid,
    }
}

/// The one `container_exit` line of `pod`'s container (panics on none or several).
fn exit_line(evs: &[Value], pod: &CriPod) -> Value {
    let lines: Vec<&Value> = evs
        .iter()
        .filter(|e| {
            e["event"] == "container_exit" && e["container"]["id"] == pod.container_id.as_str()
        })
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "exactly one container_exit for {}: {}",
        pod.container_id,
        pretty(evs)
    );
    lines[0].clone()
}

/// SIGKILLs `pid` with kill(1), as an operator would; returns the sender's pid.
fn kill_9(pid: u32) -> u32 {
    let kill = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .spawn()
        .unwrap();
    let sender = kill.id();
    assert!(kill.wait_with_output().unwrap().status.success());
    sender
}

/// Every line so far, once each of `pods` has its `container_exit` (within 30 s).
fn wait_for_exits(obs: &Observer, pods: &[&CriPod]) -> Vec<Value> {
    obs.wait_for(
        "a container_exit line for every pod",
        Duration::from_secs(30),
        |evs| {
            pods.iter().all(|p| {
                evs.iter().any(|e| {
                    e["event"] == "container_exit"
                        && e["container"]["id"] == p.container_id.as_str()
                })
            })
        },
    )
}

/// One test at a time: each runs its own containerd and CRI pods.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn every_container_s_end_names_its_cause_and_its_sender() {
    let _one = serial();
    eprintln!(
        "NOTE: the Pod Events go to a loopback stand-in: no Kubernetes API server can run on \
         this machine (see tests/tests/k8s_events.rs)"
    );
    let api = FakeApiServer::start();
    let mut node = CriNode::start();
    let kubeconfig = node.cd.observer_state().with_extension("kubeconfig");
    api.write_kubeconfig(&kubeconfig, "t").unwrap();
    // Inherited by the daemon; set before it is spawned (the file's other test posts no Events).
    std::env::set_var("KUBECONFIG", &kubeconfig);
    let obs = node.cd.observer_with(
        Duration::from_secs(30),
        &["--k8s-events", "--node-name", "node-a"],
    );
    // A plain non-zero exit.
    let exited = node.run_pod_spec(&spec("sleep 1; exit 3", false));
    // A SIGKILL from a named process of the node.
    let killed = node.run_pod_spec(&spec("while :; do sleep 1; done", false));
    // A stop whose SIGTERM is ignored: the runtime SIGKILLs after the grace period.
    let stopped = node.run_pod_spec(&spec("trap '' TERM; while :; do sleep 1; done", false));
    // A process of the pod kills the container's init (one pid namespace for the pod, so
    // the init is no namespace init that ignores its own namespace's signals).
    let pod_kill = node.run_pod_spec(&spec(
        "(sleep 1; kill -KILL $$) & while :; do sleep 1; done",
        true,
    ));
    // A self-inflicted SIGSEGV.
    let segv = node.run_pod_spec(&spec("sleep 1; kill -SEGV $$", true));
    // The init itself allocates past its limit.
    let oom = node.run_pod_spec(&spec("x=a; while :; do x=$x$x; done", false));
    // kubernetes #140716: a child is OOM-killed while the container lives on, then the
    // container is stopped and answers its SIGTERM with exit 143.
    let child_oom = node.run_pod_spec(&spec(
        "trap 'exit 143' TERM; (x=a; while :; do x=$x$x; done) & while :; do sleep 0.2; done",
        false,
    ));

    let kill_pid = kill_9(killed.pid);
    node.stop_container(&stopped.container_id, 2);
    obs.wait_for(
        "the child's OOM kill in the #140716 pod",
        Duration::from_secs(20),
        |evs| {
            evs.iter().any(|e| {
                e["event"] == "oom_kill"
                    && e["container"]["id"] == child_oom.container_id.as_str()
                    && e["victim"]["tgid"] != child_oom.pid
            })
        },
    );
    // The child is gone, the container lives on: now the kubelet's stop.
    thread::sleep(Duration::from_millis(300));
    node.stop_container(&child_oom.container_id, 10);
    let cri_140716 = node.exited_status(&child_oom.container_id, Duration::from_secs(10));

    let pods = [
        &exited, &killed, &stopped, &pod_kill, &segv, &oom, &child_oom,
    ];
    let evs = wait_for_exits(&obs, &pods);
    let all = pretty(&evs);
    let check = |pod: &CriPod, cause: &str| {
        let x = exit_line(&evs, pod);
        assert_eq!(x["cause"], cause, "{x}\nall events:\n{all}");
        assert_eq!(x["pid"], pod.pid, "{x}");
        assert_eq!(x["container"]["name"], pod.container.as_str(), "{x}");
        assert_eq!(x["container"]["pod"]["name"], pod.name.as_str(), "{x}");
        assert_eq!(
            x["kubelet"]["source"], "cri",
            "the kubelet's reason as containerd's CRI reported it: {x}"
        );
        eprintln!(
            "row: {} | exit {} {} | CRI reason {} (wrong: {}) | cause {} | sender {} {}",
            pod.name,
            x["exit_code"],
            x["signal"],
            x["kubelet"]["reason"],
            x["kubelet"]["wrong"],
            x["cause"],
            x["sender"]["comm"],
            x["sender"]["code"]
        );
        eprintln!("{}: {}", pod.name, x["message"]);
        x
    };

    let x = check(&exited, "exited");
    assert_eq!(
        (x["exit_code"].clone(), x["signal"].clone()),
        (3.into(), Value::Null)
    );
    assert_eq!(x["sender"], Value::Null, "{x}");
    assert_eq!(x["kubelet"]["reason"], "Error", "{x}");
    assert_eq!(x["kubelet"]["wrong"], Value::Null, "{x}");

    let x = check(&killed, "node_process");
    assert_eq!(x["signal"], "SIGKILL", "{x}");
    assert_eq!(x["exit_code"], 137, "{x}");
    assert_eq!(x["sender"]["comm"], "kill", "{x}");
    assert_eq!(x["sender"]["tgid"], kill_pid, "{x}");
    assert_eq!(x["sender"]["code"], "SI_USER", "{x}");
    assert_eq!(x["sender"]["container"], Value::Null, "{x}");

    let x = check(&stopped, "runtime_stop");
    assert_eq!(x["signal"], "SIGKILL", "{x}");
    assert_eq!(x["first_signal"]["signal"], "SIGTERM", "{x}");
    let runtime = x["sender"]["comm"].as_str().unwrap_or_default();
    assert!(
        runtime == "runc" || runtime.starts_with("containerd-shim"),
        "the stop's SIGKILL comes from the runtime: {x}"
    );
    assert!(
        x["sender"]["ktime_ns"].as_u64().unwrap()
            >= x["first_signal"]["ktime_ns"].as_u64().unwrap() + 1_500_000_000,
        "the SIGKILL came after the 2 s grace period: {x}"
    );

    let x = check(&pod_kill, "pod_process");
    assert_eq!(x["signal"], "SIGKILL", "{x}");
    assert_eq!(x["sender"]["comm"], "sh", "{x}");
    assert_eq!(
        x["sender"]["container"]["id"],
        pod_kill.container_id.as_str(),
        "the sender runs in the same container: {x}"
    );

    let x = check(&segv, "crash");
    assert_eq!(x["signal"], "SIGSEGV", "{x}");
    assert_eq!(x["sender"]["tgid"], segv.pid, "raised by itself: {x}");

    let x = check(&oom, "oom_kill");
    assert_eq!(x["signal"], "SIGKILL", "{x}");
    assert_eq!(x["limit"], "container", "{x}");
    let kill_seq = evs
        .iter()
        .find(|e| e["event"] == "oom_kill" && e["victim"]["tgid"] == oom.pid)
        .map(|e| e["seq"].clone())
        .unwrap_or_else(|| panic!("no oom_kill line for {}: {all}", oom.pid));
    assert_eq!(x["oom_kill_seq"], kill_seq, "{x}");
    assert_eq!(x["kubelet"]["wrong"], Value::Null, "{x}");
    assert_eq!(x["kubelet"]["reason"], "OOMKilled", "{x}");

    let x = check(&child_oom, "runtime_stop");
    eprintln!("line: {x}");
    assert_eq!(
        (x["exit_code"].clone(), x["signal"].clone()),
        (143.into(), Value::Null),
        "{x}"
    );
    assert_eq!(x["first_signal"], Value::Null, "{x}");
    assert_eq!(x["sender"]["signal"], "SIGTERM", "{x}");
    assert!(
        !x["earlier_oom_kills"].as_array().unwrap().is_empty(),
        "the child's kill is listed: {x}"
    );
    assert_eq!(x["kubelet"]["reason"], "OOMKilled", "{x}");
    assert_eq!(x["kubelet"]["wrong"], "oomkilled_not_oom", "{x}");
    // One Pod Event per death the kubelet cannot name or misnames, none for a plain exit or
    // the runtime's own stop; the OOM kills keep their own.
    let want: BTreeSet<(String, String)> = [
        (&killed, "KilledByNodeProcess"),
        (&pod_kill, "KilledByPodProcess"),
        (&segv, "ContainerCrashed"),
        (&oom, "OOMKilling"),
        (&child_oom, "OOMKilling"),
        (&child_oom, "NotOOMKilled"),
    ]
    .into_iter()
    .map(|(p, r)| (p.name.clone(), r.to_string()))
    .collect();
    let posted = || -> BTreeSet<(String, String)> {
        api.seen()
            .iter()
            .filter(|r| r.method == "POST")
            .map(|r| {
                (
                    r.body["involvedObject"]["name"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    r.body["reason"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    for _ in 0..100 {
        if posted().len() >= want.len() {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    thread::sleep(Duration::from_millis(300));
    assert_eq!(posted(), want, "Pod Events: {:#?}", api.seen());
    let not_oom = api
        .seen()
        .into_iter()
        .find(|r| r.body["reason"] == "NotOOMKilled")
        .unwrap();
    assert_eq!(
        not_oom.body["message"],
        exit_line(&evs, &child_oom)["message"],
        "the Event says what the line says"
    );
    assert_eq!(
        not_oom.body["involvedObject"]["fieldPath"],
        "spec.containers{hog}"
    );

    // What the kubelet reads through the CRI, as the line said it would.
    assert_eq!(
        (cri_140716.reason.as_str(), cri_140716.exit_code),
        ("OOMKilled", 143),
        "the CRI status of the #140716 container: {cri_140716:?}"
    );
}

/// The classic tracepoint (`--hook tracepoint`, the strategy of a kernel without BTF) records
/// the sender too: its `signal/signal_generate` program runs in the sender's context, and
/// keys the target by the pid its record names. A SIGKILL from a named host process, the
/// runtime's SIGKILL after an ignored SIGTERM (two signals, first and last), and a signal
/// the init raises in itself must each name their sender, as with tp_btf.
#[test]
fn the_classic_tracepoint_names_the_sender() {
    classic_tracepoint_senders(&["--hook", "tracepoint"]);
}

/// The same without BTF (`--no-btf`, as on a kernel built without it): the programs get no
/// kernel structure offsets, only the tracepoints' own records and the helpers.
#[test]
fn the_classic_tracepoint_names_the_sender_without_btf() {
    classic_tracepoint_senders(&["--no-btf"]);
}

fn classic_tracepoint_senders(args: &[&str]) {
    let _one = serial();
    let mut node = CriNode::start();
    let obs = node.cd.observer_with(Duration::from_secs(30), args);
    let log = obs.stderr_text();
    assert!(
        log.lines()
            .any(|l| l.contains("kill_signal") && l.contains("tracepoint")),
        "the classic signal_generate program is attached: {log}"
    );
    let killed = node.run_pod_spec(&spec("while :; do sleep 1; done", false));
    let stopped = node.run_pod_spec(&spec("trap '' TERM; while :; do sleep 1; done", false));
    let segv = node.run_pod_spec(&spec("sleep 1; kill -SEGV $$", true));
    let kill_pid = kill_9(killed.pid);
    node.stop_container(&stopped.container_id, 2);
    let pods = [&killed, &stopped, &segv];
    let evs = wait_for_exits(&obs, &pods);
    let all = pretty(&evs);
    let x = exit_line(&evs, &killed);
    eprintln!("tracepoint: {}", x["message"]);
    assert_eq!(x["cause"], "node_process", "{x}\nall events:\n{all}");
    assert_eq!(x["signal"], "SIGKILL", "{x}");
    assert_eq!(x["sender"]["comm"], "kill", "{x}");
    assert_eq!(x["sender"]["tgid"], kill_pid, "{x}");
    assert_eq!(x["sender"]["code"], "SI_USER", "{x}");

    let x = exit_line(&evs, &stopped);
    eprintln!("tracepoint: {}", x["message"]);
    assert_eq!(x["cause"], "runtime_stop", "{x}\nall events:\n{all}");
    assert_eq!(x["signal"], "SIGKILL", "{x}");
    assert_eq!(x["first_signal"]["signal"], "SIGTERM", "{x}");
    let runtime = x["sender"]["comm"].as_str().unwrap_or_default();
    assert!(
        runtime == "runc" || runtime.starts_with("containerd-shim"),
        "the stop's SIGKILL comes from the runtime: {x}"
    );

    let x = exit_line(&evs, &segv);
    eprintln!("tracepoint: {}", x["message"]);
    assert_eq!(x["cause"], "crash", "{x}\nall events:\n{all}");
    assert_eq!(x["signal"], "SIGSEGV", "{x}");
    assert_eq!(x["sender"]["tgid"], segv.pid, "raised by itself: {x}");
}

/// The directory of `pid`'s cgroup where systemd-oomd would mark it: the unified
/// hierarchy's, else (a v1 node whose unified hierarchy holds no container) the memory
/// hierarchy's.
fn oomd_dir_of(pid: u32) -> std::path::PathBuf {
    let mounts = observer::host::cgroupfs::CgroupMounts::discover().unwrap();
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let unified = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .filter(|p| *p != "/")
        .and_then(|p| mounts.unified.as_ref()?.dir(p))
        .filter(|d| d.is_dir());
    let memory = || {
        let p = own
            .lines()
            .find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, ctl, path) = (f.next()?, f.next()?, f.next()?);
                ctl.split(',').any(|c| c == "memory").then_some(path)
            })
            .unwrap();
        mounts.memory_v1.as_ref().unwrap().dir(p).unwrap()
    };
    unified.unwrap_or_else(memory)
}

/// Sets the xattr `name` on `dir`, as a userspace OOM killer marks the cgroup it acted on.
fn set_xattr(dir: &std::path::Path, name: &str, value: &str) {
    use std::{ffi::CString, os::unix::ffi::OsStrExt};
    let path = CString::new(dir.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: both strings are NUL-terminated and outlive the call; the value is read for
    // exactly its length.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "setxattr {name} on {}: {}",
        dir.display(),
        std::io::Error::last_os_error()
    );
}

/// systemd-oomd's mark (`user.oomd_ooms`) on a container's cgroup makes a SIGKILL from an
/// unnamed sender a userspace OOM killer's. STAND-IN: systemd-oomd does not run on this
/// machine (cgroup v1 host, no systemd in charge of these cgroups), so the test itself sets
/// the xattr on the container's cgroup, as systemd-oomd does on the cgroup it kills, and
/// `kill -KILL` sends the SIGKILL. It checks the daemon's read of a real cgroup's xattr and
/// the cause it gives, not systemd-oomd.
#[test]
fn an_oomd_mark_on_the_cgroup_names_a_userspace_oom_killer() {
    let _one = serial();
    eprintln!(
        "NOTE: STAND-IN FOR systemd-oomd, which does not run here: the test sets \
         user.oomd_ooms on the container's cgroup itself, then kill(1) sends the SIGKILL"
    );
    let mut node = CriNode::start();
    let obs = node.cd.observer_with(Duration::from_secs(30), &[]);
    let marked = node.run_pod_spec(&spec("while :; do sleep 1; done", false));
    let plain = node.run_pod_spec(&spec("while :; do sleep 1; done", false));
    let dir = oomd_dir_of(marked.pid);
    eprintln!("marking {} (standing in for systemd-oomd)", dir.display());
    set_xattr(&dir, "user.oomd_ooms", "1");
    let mut senders = Vec::new();
    for p in [&marked, &plain] {
        senders.push(kill_9(p.pid));
    }
    let pods = [&marked, &plain];
    let evs = wait_for_exits(&obs, &pods);
    let x = exit_line(&evs, &marked);
    eprintln!("marked: {}", x["message"]);
    assert_eq!(x["cause"], "oom_killer_userspace", "{x}");
    assert_eq!(x["signal"], "SIGKILL", "{x}");
    assert_eq!(x["sender"]["comm"], "kill", "{x}");
    assert_eq!(x["sender"]["tgid"], senders[0], "{x}");
    // The same kill without the mark is a node process's.
    let x = exit_line(&evs, &plain);
    eprintln!("unmarked: {}", x["message"]);
    assert_eq!(x["cause"], "node_process", "{x}");
    assert_eq!(x["sender"]["tgid"], senders[1], "{x}");
}

/// The CRI is read over one connection the daemon keeps, made anew when containerd went
/// away: an end after a containerd restart still carries the CRI's reason, not a prediction.
#[test]
fn the_cri_is_still_read_after_containerd_restarts() {
    let _one = serial();
    let mut node = CriNode::start();
    let obs = node.cd.observer_with(Duration::from_secs(30), &[]);
    let before = node.run_pod_spec(&spec("while :; do sleep 1; done", false));
    let after = node.run_pod_spec(&spec("while :; do sleep 1; done", false));
    let line_of = |pod: &CriPod| {
        let evs = obs.wait_for("the pod's container_exit", Duration::from_secs(30), |evs| {
            evs.iter().any(|e| {
                e["event"] == "container_exit" && e["container"]["id"] == pod.container_id.as_str()
            })
        });
        exit_line(&evs, pod)
    };
    let kill = |pod: &CriPod| {
        let st = Command::new("kill")
            .args(["-KILL", &pod.pid.to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    };
    kill(&before);
    let x = line_of(&before);
    assert_eq!(x["kubelet"]["source"], "cri", "{x}");
    // The held connection dies with this containerd.
    node.cd.restart();
    let connected = || obs.stderr_text().matches("connected to containerd").count();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while connected() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon never reconnected: {}",
            obs.stderr_text()
        );
        thread::sleep(Duration::from_millis(100));
    }
    kill(&after);
    let x = line_of(&after);
    eprintln!(
        "after the restart: {} (kubelet {})",
        x["message"], x["kubelet"]
    );
    assert_eq!(
        x["kubelet"]["source"],
        "cri",
        "read through a new connection: {x}\n{}",
        obs.stderr_text()
    );
    assert_eq!(x["kubelet"]["reason"], "Error", "{x}");
}

/// The TaskOOM a kill the container survives gets (issue's step 3): with
/// `--taskoom-for init` none of ours goes out for the child's kill, and containerd's CRI
/// still marks the container OOMKilled, from the runc shim's own TaskOOM; the init's own
/// kill still gets ours. So the choice cannot set the kubelet's reason right, and the
/// `container_exit` line is where the truth is.
#[test]
fn a_child_s_kill_marks_the_container_oomkilled_whichever_kills_get_our_taskoom() {
    let _one = serial();
    let mut node = CriNode::start();
    let obs = node
        .cd
        .observer_with(Duration::from_secs(30), &["--taskoom-for", "init"]);
    let child_oom = node.run_pod_spec(&spec(
        "trap 'exit 143' TERM; (x=a; while :; do x=$x$x; done) & while :; do sleep 0.2; done",
        false,
    ));
    let init_oom = node.run_pod_spec(&spec("x=a; while :; do x=$x$x; done", false));
    let kill_of = |evs: &[Value], pod: &CriPod, init: bool| {
        evs.iter()
            .find(|e| {
                e["event"] == "oom_kill"
                    && e["container"]["id"] == pod.container_id.as_str()
                    && (e["victim"]["tgid"] == pod.pid) == init
            })
            .cloned()
    };
    let evs = obs.wait_for("both kills", Duration::from_secs(20), |evs| {
        kill_of(evs, &child_oom, false).is_some() && kill_of(evs, &init_oom, true).is_some()
    });
    let child = kill_of(&evs, &child_oom, false).unwrap();
    assert_eq!(
        child["published"], false,
        "no TaskOOM of ours for a child: {child}"
    );
    let init = kill_of(&evs, &init_oom, true).unwrap();
    assert_eq!(init["published"], true, "the init's kill gets ours: {init}");
    thread::sleep(Duration::from_millis(300));
    node.stop_container(&child_oom.container_id, 10);
    let cri = node.exited_status(&child_oom.container_id, Duration::from_secs(10));
    let evs = obs.wait_for(
        "the stopped container's end",
        Duration::from_secs(20),
        |evs| {
            evs.iter().any(|e| {
                e["event"] == "container_exit"
                    && e["container"]["id"] == child_oom.container_id.as_str()
            })
        },
    );
    let x = exit_line(&evs, &child_oom);
    eprintln!(
        "--taskoom-for init: the CRI says {} {} after a child's kill and a stop; the line: {}",
        cri.reason, cri.exit_code, x["message"]
    );
    assert_eq!(
        (cri.reason.as_str(), cri.exit_code),
        ("OOMKilled", 143),
        "the shim's own TaskOOM marks it: {cri:?}"
    );
    assert_eq!(x["cause"], "runtime_stop", "{x}");
    assert_eq!(x["kubelet"]["wrong"], "oomkilled_not_oom", "{x}");
}
