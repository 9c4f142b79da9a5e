//! `deploy/kubernetes/`: the manifests validate against Kubernetes' own schema, agree with each
//! other (ports, selectors, image, RBAC), their alert rules parse with promtool, and the
//! DaemonSet's own container runs for real: the image from `cargo xtask image`, imported into a
//! private containerd, started with exactly the manifest's capabilities, mounts, host PID
//! namespace, args, env, read-only root and memory limit, sees a real OOM kill in another
//! container of that containerd and publishes its TaskOOM, and its `--k8s-events` sink posts
//! the kill's Event over TLS with the service account the kubelet would mount (to a stand-in
//! API server: no kube-apiserver runs on these machines, see tests/tests/k8s_events.rs).
//!
//! `cargo xtask test` provides what these need: OOMX_IMAGE_ARCHIVE and OOMX_IMAGE_NAME (the
//! image it builds), OOMX_KUBERNETES_VALIDATE (kubernetes-validate 1.37.0 in a venv under the
//! cache), and Debian's prometheus (promtool).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a panic is how a test fails"
)]

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use tests::{
    containerd::{Containerd, K8sLabels, Subscriber},
    deploy::{
        image::{arch_image, image_config},
        manifest::{
            cap_mask, daemonset, deploy_dir, env_path, objects, quantity_bytes, strs, yaml_docs,
            yaml_files,
        },
        run::{
            nix_hostname, pod_run, service_account, status_field, with_cgroup_namespace, API_HOST,
            API_PORT,
        },
    },
    fake_apiserver::FakeApiServer,
};

const WAIT: Duration = Duration::from_secs(30);
#[test]
fn manifests_validate_against_the_kubernetes_schema() {
    let kv = env_path(
        "OOMX_KUBERNETES_VALIDATE",
        "kubernetes-validate 1.37.0, installed by cargo xtask test",
    );
    let files = yaml_files(&deploy_dir());
    assert!(files.len() >= 5, "the manifests: {files:?}");
    let out = Command::new(&kv)
        .args(["--strict", "-k", "1.37.0"])
        .args(&files)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubernetes-validate failed:\n{text}");
    // Every object was checked against a schema, none merely skipped.
    let objects: usize = files.iter().map(|f| yaml_docs(f).len()).sum();
    assert_eq!(
        text.matches(" passed for resource ").count(),
        objects,
        "every object passes:\n{text}"
    );
    assert!(!text.contains("Couldn't find schema"), "{text}");

    // The validator does reject what Kubernetes would: a DaemonSet with capabilities as a
    // string, and one with a field the schema does not know.
    let dir = std::env::temp_dir().join(format!("oomx-kv-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let mut wrong_type = daemonset();
    wrong_type["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]
        ["add"] = json!("BPF");
    let mut unknown = daemonset();
    unknown["spec"]["template"]["spec"]["hostPIDs"] = json!(true);
    for (name, bad) in [("wrong-type", wrong_type), ("unknown-field", unknown)] {
        let f = dir.join(format!("{name}.yaml"));
        fs::write(&f, serde_norway::to_string(&bad).unwrap()).unwrap();
        let out = Command::new(&kv).arg("--strict").arg(&f).output().unwrap();
        assert!(
            !out.status.success(),
            "kubernetes-validate accepted the {name} DaemonSet: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let _ = fs::remove_dir_all(&dir);
}

/// The metrics the daemon serves (names fixed with the metrics sink).
const METRICS: &[&str] = &[
    "oom_observer_oom_kills_total",
    "oom_observer_taskoom_total",
    "oom_observer_records_lost_total",
    "oom_observer_audit_findings",
    "oom_observer_build_info",
    "oom_observer_last_kill_timestamp_seconds",
];

#[test]
fn alert_rules_parse_with_promtool_and_use_the_daemons_metrics() {
    let rule = objects()
        .remove("PrometheusRule/oom-observer")
        .expect("prometheus-operator/prometheusrule.yaml");
    // A PrometheusRule's spec is a Prometheus rules file.
    let dir = std::env::temp_dir().join(format!("oomx-rules-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let file = dir.join("rules.yml");
    fs::write(&file, serde_norway::to_string(&rule["spec"]).unwrap()).unwrap();
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect(
            "THIS TEST NEEDS promtool (Debian package prometheus; cargo xtask test installs it)",
        );
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool check rules:\n{text}");
    let rules = rule["spec"]["groups"][0]["rules"].as_array().unwrap();
    assert!(
        text.contains(&format!("SUCCESS: {} rules found", rules.len())),
        "{text}"
    );
    // Every oom_observer_ name in an expression is one the daemon serves.
    for r in rules {
        let expr = r["expr"].as_str().unwrap();
        for name in expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("oom_observer_"))
        {
            assert!(
                METRICS.contains(&name),
                "{}: unknown metric {name}",
                r["alert"]
            );
        }
    }
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn manifests_agree_with_each_other_and_with_the_image() {
    let objs = objects();
    let ds = &objs["DaemonSet/oom-observer"];
    let pod = &ds["spec"]["template"];
    let spec = &pod["spec"];
    let c = &spec["containers"][0];
    let labels = &pod["metadata"]["labels"];
    let ns = ds["metadata"]["namespace"].as_str().unwrap();
    assert!(objs.contains_key(&format!("Namespace/{ns}")));

    // The image is the one `cargo xtask image` writes.
    let image = std::env::var("OOMX_IMAGE_NAME")
        .expect("THIS TEST NEEDS OOMX_IMAGE_NAME: run it with `cargo xtask test`");
    assert_eq!(c["image"], image.as_str());

    // The selector picks the template's pods; the Service and ServiceMonitor pick them too.
    for (k, v) in ds["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "DaemonSet selector {k}");
    }
    let svc = &objs["Service/oom-observer"];
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "Service selector {k}");
    }
    let sm = &objs["ServiceMonitor/oom-observer"];
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            &svc["metadata"]["labels"][k], v,
            "ServiceMonitor selector {k}"
        );
    }
    assert_eq!(sm["spec"]["namespaceSelector"]["matchNames"], json!([ns]));

    // One metrics port everywhere: --metrics-listen, containerPort, annotation, Service,
    // ServiceMonitor.
    let args = strs(&c["args"]);
    let listen = args
        .iter()
        .find_map(|a| a.strip_prefix("--metrics-listen="))
        .expect("--metrics-listen=ADDR in the args");
    let port: u64 = listen.rsplit(':').next().unwrap().parse().unwrap();
    let cport = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["containerPort"] == port)
        .expect("a containerPort for the metrics");
    let pname = cport["name"].as_str().unwrap();
    let ann = &pod["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["prometheus.io/port"], port.to_string().as_str());
    let sport = &svc["spec"]["ports"][0];
    assert_eq!(sport["targetPort"], pname);
    assert_eq!(sm["spec"]["endpoints"][0]["port"], sport["name"]);

    // Kubernetes Events on the Pod are on: `--k8s-events`, with the node's name (below) and
    // the service account's token mounted.
    assert!(
        args.iter().any(|a| a == "--k8s-events"),
        "the DaemonSet posts Events: --k8s-events in {args:?}"
    );
    // RBAC: core/v1 Events create/patch (what the sink sends: tests/tests/k8s_events.rs),
    // nothing else, bound to the pod's ServiceAccount, whose token is mounted.
    let sa = spec["serviceAccountName"].as_str().unwrap();
    let sa_obj = &objs[&format!("ServiceAccount/{sa}")];
    assert_ne!(sa_obj["automountServiceAccountToken"], false);
    assert_ne!(spec["automountServiceAccountToken"], false);
    let role = &objs["ClusterRole/oom-observer"];
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]}])
    );
    let binding = &objs["ClusterRoleBinding/oom-observer"];
    assert_eq!(binding["roleRef"]["name"], "oom-observer");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": sa, "namespace": ns}])
    );

    // Every node, critical, the node's name from the downward API.
    assert_eq!(spec["tolerations"], json!([{"operator": "Exists"}]));
    assert_eq!(spec["priorityClassName"], "system-node-critical");
    assert_eq!(spec["hostPID"], true);
    let node = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "NODE_NAME")
        .expect("NODE_NAME");
    assert_eq!(node["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
    // The memory limit holds the request; no CPU limit (throttling would delay TaskOOM).
    let res = &c["resources"];
    assert!(
        quantity_bytes(res["limits"]["memory"].as_str().unwrap())
            >= quantity_bytes(res["requests"]["memory"].as_str().unwrap())
    );
    assert!(res["limits"]["cpu"].is_null());
}

#[test]
fn image_holds_the_static_binary_for_each_architecture() {
    let archive = env_path("OOMX_IMAGE_ARCHIVE", "the archive of `cargo xtask image`");
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    // ELF e_machine: x86_64 62, AArch64 183.
    for (arch, triple, machine) in [
        ("amd64", "x86_64-unknown-linux-musl", 62u16),
        ("arm64", "aarch64-unknown-linux-musl", 183),
    ] {
        let img = arch_image(&archive, arch);
        assert_eq!(img.config["architecture"], arch);
        assert_eq!(img.config["os"], "linux");
        assert_eq!(
            strs(&img.config["config"]["Entrypoint"]),
            ["/usr/bin/oom-observer"]
        );
        assert_eq!(strs(&img.config["config"]["Cmd"]), ["run"]);
        let bin = img
            .files
            .get("usr/bin/oom-observer")
            .unwrap_or_else(|| panic!("{arch}: no /usr/bin/oom-observer"));
        assert_eq!(&bin[..4], b"\x7fELF", "{arch}");
        assert_eq!(
            u16::from_le_bytes([bin[18], bin[19]]),
            machine,
            "{arch}: ELF machine"
        );
        // Static: no PT_INTERP program header (no dynamic loader), so it runs on any node,
        // whatever its libc. ELF64: e_phoff at 32, e_phentsize at 54, e_phnum at 56.
        let u16_at = |o: usize| u16::from_le_bytes([bin[o], bin[o + 1]]) as usize;
        let phoff = u64::from_le_bytes(bin[32..40].try_into().unwrap()) as usize;
        let (phentsize, phnum) = (u16_at(54), u16_at(56));
        assert!(phnum > 0, "{arch}: no program headers");
        for i in 0..phnum {
            let o = phoff + i * phentsize;
            let p_type = u32::from_le_bytes(bin[o..o + 4].try_into().unwrap());
            assert_ne!(p_type, 3, "{arch}: PT_INTERP, a dynamically linked binary");
        }
        // The very file the VM matrix boots on that architecture's kernels.
        let built = target.join(triple).join("release/oom-observer");
        assert!(
            fs::read(&built).unwrap() == *bin,
            "{arch}: the image's binary is not {}",
            built.display()
        );
        // It runs on its architecture (arm64 under Debian's qemu-user-static) and was built
        // with Kubernetes Events, which the DaemonSet turns on.
        let mut cmd = if arch == oci_archive::Platform::host().architecture {
            Command::new(&built)
        } else {
            let qemu = format!("qemu-{}-static", triple.split('-').next().unwrap());
            let mut c = Command::new(&qemu);
            c.arg(&built);
            c
        };
        let out = cmd.arg("--version").output().unwrap_or_else(|e| {
            panic!(
                "{arch}: running {cmd:?}: {e} (THIS TEST NEEDS qemu-user-static for arm64; \
                 cargo xtask test installs it)"
            )
        });
        assert!(out.status.success(), "{arch}: {cmd:?}: {out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            concat!(
                "oom-observer ",
                env!("CARGO_PKG_VERSION"),
                " (features: k8s-events)"
            ),
            "{arch}: the image's binary"
        );
    }
}

/// A TCP listener on `API_HOST:port` inside the network namespace of process `pid` (a
/// container's), with that namespace's loopback brought up (runc leaves it down). The
/// namespace is the test's own container's; the test's other threads stay in theirs. Not in
/// the tests' library, which is also built for musl (the VM guests, the image), where ioctl's
/// request is a c_int and not glibc's c_ulong.
fn listen_in_netns(pid: u32, port: u16) -> std::net::TcpListener {
    use std::os::fd::AsRawFd;
    let ns = fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
    thread::spawn(move || {
        // setns(2) moves only this thread, which ends here; its socket stays in the namespace.
        assert_eq!(
            // SAFETY: `ns` is an open namespace file, alive until this thread ends.
            unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
            0,
            "setns: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `ifr` is zeroed plain data that the ioctls read and write in place, and
        // `fd` is the socket opened here, closed once at the end.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0);
            let mut ifr: libc::ifreq = std::mem::zeroed();
            for (d, c) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
                *d = *c as libc::c_char;
            }
            assert_eq!(
                libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr as *mut libc::ifreq),
                0
            );
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            assert_eq!(
                libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr as *const libc::ifreq),
                0,
                "lo up: {}",
                std::io::Error::last_os_error()
            );
            libc::close(fd);
        }
        std::net::TcpListener::bind((API_HOST, port)).unwrap()
    })
    .join()
    .unwrap()
}

#[test]
fn daemonset_container_runs_in_containerd_and_publishes_task_oom_for_a_kill() {
    run_daemonset_container(false);
}

/// On cgroup v2 nodes the CRI gives every unprivileged container a cgroup namespace of its
/// own (`/proc` then shows cgroups relative to the container's): the same run with one.
#[test]
fn daemonset_container_in_its_own_cgroup_namespace_names_cgroups_from_the_real_root() {
    run_daemonset_container(true);
}

fn run_daemonset_container(private_cgroupns: bool) {
    tests::v1_memory_root();
    let archive = env_path("OOMX_IMAGE_ARCHIVE", "the archive of `cargo xtask image`");
    let ds = daemonset();
    let image = ds["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_string();
    let cd = Containerd::start();
    let sub = Subscriber::start(&cd.socket);

    let out = cd.ctr(&["images", "import", archive.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "ctr images import {}: {}{}",
        archive.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ls = String::from_utf8_lossy(&cd.ctr(&["images", "ls"]).stdout).into_owned();
    let line = ls
        .lines()
        .find(|l| l.split_whitespace().next() == Some(image.as_str()))
        .unwrap_or_else(|| panic!("the manifest's image {image} is not in the archive:\n{ls}"));
    assert!(
        line.contains("linux/amd64") && line.contains("linux/arm64"),
        "a multi-arch image: {line}"
    );

    let substitute: BTreeMap<&str, PathBuf> = [
        // The private containerd's socket directory stands for /run/containerd.
        ("containerd", cd.dir.clone()),
        ("state", cd.dir.join("node-var-lib-oom-observer")),
        ("query", cd.dir.join("node-run-oom-observer")),
    ]
    .into_iter()
    .collect();
    let sa = service_account(&cd.dir);
    let run = pod_run(&ds, &cd, &substitute, &sa);
    let log = cd.dir.join("observer-container.log");
    let cgroup = cd.cgroup_of("oom-observer");
    let mut argv: Vec<String> = vec![
        "run".into(),
        "-d".into(),
        format!("--log-uri=file://{}", log.display()),
        format!("--cgroup={cgroup}"),
    ];
    argv.extend(run.flags.iter().cloned());
    argv.push(image.clone());
    argv.push("oom-observer".into());
    // Kubernetes runs the image's Entrypoint with the container's `args` (no `command` here);
    // ctr's own positional arguments replace both, so the test puts the Entrypoint first.
    assert!(
        ds["spec"]["template"]["spec"]["containers"][0]["command"].is_null(),
        "the manifest keeps the image's entrypoint"
    );
    let (entrypoint, _) = image_config(&archive);
    assert_eq!(entrypoint, ["/usr/bin/oom-observer"]);
    argv.extend(entrypoint);
    argv.extend(run.args.iter().cloned());
    if private_cgroupns {
        argv = with_cgroup_namespace(&cd, &argv, &image);
    }
    eprintln!("deploy test: ctr {}", argv.join(" "));
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = cd.ctr(&refs);
    assert!(
        out.status.success(),
        "ctr run of the DaemonSet's container: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        cd.log()
    );
    let read_log = || fs::read_to_string(&log).unwrap_or_default();
    let wait_log = |text: &str| {
        let deadline = Instant::now() + WAIT;
        while !read_log().contains(text) {
            let tasks = String::from_utf8_lossy(&cd.ctr(&["tasks", "ls"]).stdout).into_owned();
            assert!(
                Instant::now() < deadline && !tasks.contains("STOPPED"),
                "the containerized observer never logged {text:?}; tasks:\n{tasks}\nits output:\n{}",
                read_log()
            );
            thread::sleep(Duration::from_millis(100));
        }
    };
    wait_log(" ready");
    wait_log("connected to containerd");
    let pid = cd.task_pid("oom-observer");
    // The API server its in-cluster client was told of, over TLS with the CA's certificate,
    // where the container reaches it.
    let api = FakeApiServer::start_on(
        listen_in_netns(pid, API_PORT),
        Some(FakeApiServer::tls_acceptor(&sa.server_cert, &sa.server_key)),
    );

    // It runs with exactly the manifest's capabilities, no new privileges, in the node's PID
    // namespace, under the manifest's memory limit.
    let want = cap_mask(&run.caps);
    for f in ["CapEff", "CapPrm", "CapBnd"] {
        let have = u64::from_str_radix(&status_field(pid, f), 16).unwrap();
        assert_eq!(
            have, want,
            "{f} {have:#x}, manifest {want:#x} ({:?})",
            run.caps
        );
    }
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap(),
        fs::read_link("/proc/self/ns/pid").unwrap(),
        "hostPID: the node's PID namespace"
    );
    let own_cgroupns = fs::read_link(format!("/proc/{pid}/ns/cgroup")).unwrap()
        != fs::read_link("/proc/self/ns/cgroup").unwrap();
    assert_eq!(own_cgroupns, private_cgroupns, "its cgroup namespace");
    if private_cgroupns {
        wait_log("in a cgroup namespace: cgroups are named from the real root");
    }
    let memcg = tests::v1_memory_root().join(cgroup.trim_start_matches('/'));
    let limit: u64 = fs::read_to_string(memcg.join("memory.limit_in_bytes"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(limit, run.memory_limit);

    // A kill in another container of the same containerd.
    let id = "deploy-hog";
    let mut hog = cd.run_pod_hog(
        id,
        32,
        &K8sLabels {
            namespace: "shop",
            pod: "web-0",
            uid: None,
            container: "app",
        },
    );
    cd.wait_running(id);
    let rss_idle = status_field(pid, "VmRSS");
    cd.go();
    assert_eq!(
        hog.wait().unwrap().code(),
        Some(137),
        "the hog must be OOM-killed"
    );
    sub.wait_for("the containerized observer's TaskOOM", WAIT, |s| {
        s.iter()
            .any(|e| e.ours && e.topic == "/tasks/oom" && e.container_id.as_deref() == Some(id))
    });
    let (ours, _) = sub.task_ooms(&cd.namespace, id);
    assert!(!ours.is_empty());
    // Its JSON line names the container and says it was published.
    let deadline = Instant::now() + WAIT;
    let kill = loop {
        let found = read_log().lines().find_map(|l| {
            serde_json::from_str::<Value>(l.trim())
                .ok()
                .filter(|v| v["event"] == "oom_kill" && v["container"]["id"] == id)
        });
        if let Some(v) = found {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "no oom_kill line for {id}:\n{}",
            read_log()
        );
        thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(kill["published"], true, "{kill}");
    assert_eq!(kill["container"]["pod"]["name"], "web-0", "{kill}");
    assert_eq!(
        kill["victim"]["cgroup"],
        cd.cgroup_of(id).as_str(),
        "{kill}"
    );
    // Its Event on the Pod: sent with the mounted token, over TLS verified against the
    // mounted CA, from the node named by the downward API.
    let deadline = Instant::now() + WAIT;
    while api.seen().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the containerized observer sent no Event to {}:\n{}",
            api.url,
            read_log()
        );
        thread::sleep(Duration::from_millis(100));
    }
    let seen = api.seen();
    let post = &seen[0];
    assert_eq!(seen.len(), 1, "one kill, one request: {seen:#?}");
    assert_eq!(post.method, "POST", "{post:?}");
    assert_eq!(post.path, "/api/v1/namespaces/shop/events", "{post:?}");
    assert_eq!(
        post.authorization.as_deref(),
        Some(format!("Bearer {}", sa.token).as_str()),
        "the mounted service-account token"
    );
    let ev = &post.body;
    assert_eq!(ev["reason"], "OOMKilling", "{ev}");
    assert_eq!(ev["involvedObject"]["kind"], "Pod", "{ev}");
    assert_eq!(ev["involvedObject"]["name"], "web-0", "{ev}");
    assert_eq!(
        ev["involvedObject"]["fieldPath"], "spec.containers{app}",
        "{ev}"
    );
    assert_eq!(
        ev["source"]["host"],
        nix_hostname().as_str(),
        "NODE_NAME: {ev}"
    );
    eprintln!(
        "deploy test: containerized observer VmRSS {rss_idle} before the kill, {} after, VmHWM {}",
        status_field(pid, "VmRSS"),
        status_field(pid, "VmHWM")
    );
    // The query socket answers on the node side of the volume.
    let query = run.host_dirs["query"].join("query.sock");
    assert!(
        query.exists(),
        "the query socket in the node's {}",
        query.display()
    );

    // It stops cleanly on SIGTERM (what the kubelet sends), exit 0.
    let out = cd.ctr(&["tasks", "kill", "-s", "SIGTERM", "oom-observer"]);
    assert!(out.status.success());
    let deadline = Instant::now() + WAIT;
    loop {
        let tasks = String::from_utf8_lossy(&cd.ctr(&["tasks", "ls"]).stdout).into_owned();
        if tasks
            .lines()
            .any(|l| l.starts_with("oom-observer") && l.contains("STOPPED"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still running after SIGTERM:\n{tasks}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    let info = cd.ctr(&["tasks", "delete", "oom-observer"]);
    let text =
        String::from_utf8_lossy(&info.stdout).into_owned() + &String::from_utf8_lossy(&info.stderr);
    assert!(
        !text.contains("exit status") || text.contains("exit status 0"),
        "{text}"
    );
    assert!(read_log().contains("stopped"), "{}", read_log());
}
