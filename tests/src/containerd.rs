//! A private containerd for the tests (own root, state and socket), a local root
//! filesystem, and a subscriber to containerd's own event stream that can tell our TaskOOM
//! (it carries oom-observer's marker field) from the runtime shim's.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

use containerd_client::{
    services::v1::{events_client::EventsClient, PublishRequest, SubscribeRequest},
    tonic::Request,
};
use observer::enrich::containerd::{proto_string_field, MARKER_FIELD, MARKER_PREFIX};
use prost::Message;

pub use crate::containerd_version::Version;

static N: AtomicUsize = AtomicUsize::new(0);

/// Everything a test needs installed; fails loudly when something is missing. The cgroup
/// v2 VM guests carry no gVisor (`runsc` under TCG emulation is impractical): they set
/// OOMX_NO_RUNSC.
pub fn require_tools() {
    let runsc = std::env::var_os("OOMX_NO_RUNSC").is_none();
    let version = Version::selected();
    let tools = ["containerd", "ctr", "runc", "busybox"]
        .into_iter()
        .chain(runsc.then_some("runsc"));
    for tool in tools {
        let found = (version.bin(tool).is_absolute() && version.bin(tool).is_file())
            || std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
                .unwrap_or(false)
            || Path::new("/bin").join(tool).exists();
        assert!(found, "THIS TEST NEEDS {tool} (Debian packages containerd, runc, runsc, busybox-static; `cargo xtask test` installs them)");
    }
}

/// A private containerd daemon.
pub struct Containerd {
    /// Its working directory (root, state, socket, config).
    pub dir: PathBuf,
    /// The gRPC socket.
    pub socket: PathBuf,
    /// The containerd namespace the tests use.
    pub namespace: String,
    /// A root filesystem with busybox.
    pub rootfs: PathBuf,
    /// The gVisor wrapper for `ctr run --runc-binary`.
    pub runsc_wrapper: PathBuf,
    /// Prefix for cgroups the containers get (`/oomx-cd-<pid>-<n>`), removed on drop.
    pub cgroup_parent: String,
    /// The gVisor wrapper for pods: like [`Containerd::runsc_wrapper`], but `runsc start`'s
    /// output goes to a file (the shim would otherwise wait forever on the application's
    /// stdout, which `runsc start` hands over).
    pub runsc_pod_wrapper: PathBuf,
    /// The release it runs (OOMX_CONTAINERD).
    pub version: &'static Version,
    /// `cgroup.procs` files the daemon is put into when it starts (one per hierarchy).
    join: Vec<PathBuf>,
    child: Option<Child>,
    /// Started here: on drop, its tasks, containers and shims go with it. `false`: the
    /// node's own daemon ([`Containerd::attach`]), which is left as it is.
    owned: bool,
}

impl Containerd {
    /// Starts a daemon.
    pub fn start() -> Containerd {
        Containerd::start_in(Vec::new())
    }

    /// Starts a daemon inside the cgroups whose `cgroup.procs` files are given (one per
    /// hierarchy): its shims, and the runtimes they run, create "relative" cgroups there.
    pub fn start_in(join: Vec<PathBuf>) -> Containerd {
        Containerd::start_with(join, None)
    }

    /// Like [`Containerd::start_in`], with the CRI plugin on: `cri` makes its config
    /// sections from the daemon's working directory, and the daemon's namespace is the CRI's
    /// own, `k8s.io`.
    pub fn start_with(join: Vec<PathBuf>, cri: Option<&dyn Fn(&Path) -> String>) -> Containerd {
        require_tools();
        let n = N.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let dir = PathBuf::from(format!("/tmp/oomx-cd-{pid}-{n}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("containerd.sock");
        let version = Version::selected();
        let plugins = cri.map(|sections| sections(&dir));
        fs::write(
            dir.join("config.toml"),
            version.config(&dir, &socket, plugins.as_deref()),
        )
        .unwrap();
        let rootfs = dir.join("rootfs");
        for d in ["bin", "proc", "sys", "dev", "tmp", "etc"] {
            fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copying /bin/busybox");
        for a in ["sh", "sleep", "cat", "test", "ls"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(a)).unwrap();
        }
        let runsc_wrapper = dir.join("runsc-wrapper");
        fs::write(
            &runsc_wrapper,
            "#!/bin/sh\nexec runsc --network=none --platform=ptrace \"$@\"\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&runsc_wrapper, fs::Permissions::from_mode(0o755)).unwrap();
        let runsc_pod_wrapper = dir.join("runsc-pod-wrapper");
        fs::write(
            &runsc_pod_wrapper,
            format!(
                "#!/bin/sh\nfor a in \"$@\"; do\n  if [ \"$a\" = start ]; then\n                     exec runsc --network=none --platform=ptrace \"$@\" >>{log} 2>&1 </dev/null\n  fi\n                 done\nexec runsc --network=none --platform=ptrace \"$@\"\n",
                log = dir.join("runsc-start.log").display()
            ),
        )
        .unwrap();
        fs::set_permissions(&runsc_pod_wrapper, fs::Permissions::from_mode(0o755)).unwrap();
        let mut cd = Containerd {
            dir,
            socket,
            namespace: if cri.is_some() {
                "k8s.io".to_string()
            } else {
                format!("oomx-{pid}-{n}")
            },
            rootfs,
            runsc_wrapper,
            runsc_pod_wrapper,
            cgroup_parent: format!("/oomx-cd-{pid}-{n}"),
            version,
            join,
            child: None,
            owned: true,
        };
        cd.spawn();
        cd
    }

    /// The node's own containerd (a `containerd.service`), on `socket`, with its CRI's
    /// namespace `k8s.io`; `dir` is a working directory of the caller's (the pods' gate and
    /// log files). Nothing of the daemon is changed when it drops.
    pub fn attach(socket: &Path, dir: &Path) -> Containerd {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        Containerd {
            dir: dir.to_path_buf(),
            socket: socket.to_path_buf(),
            namespace: "k8s.io".into(),
            rootfs: dir.join("rootfs"),
            runsc_wrapper: dir.join("runsc-wrapper"),
            runsc_pod_wrapper: dir.join("runsc-pod-wrapper"),
            cgroup_parent: String::new(),
            version: Version::selected(),
            join: Vec::new(),
            child: None,
            owned: false,
        }
    }

    fn spawn(&mut self) {
        let log = fs::File::create(self.dir.join("containerd.log")).unwrap();
        let mut cmd = Command::new(self.version.bin("containerd"));
        if let Some(path) = self.version.path_env() {
            cmd.env("PATH", path);
        }
        let child = cmd
            .arg("--config")
            .arg(self.dir.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting containerd");
        // Before it starts any shim (nothing runs until the tests ask it to).
        for f in &self.join {
            fs::write(f, child.id().to_string())
                .unwrap_or_else(|e| panic!("moving containerd into {}: {e}", f.display()));
        }
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.ctr(&["version"]).status.success() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!("containerd did not come up; log:\n{}", self.log());
    }

    /// Stops the daemon (the shims and their containers keep running, as in production).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) takes plain integers and touches none of our memory.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    /// The daemon's pid (to stop and continue it: a containerd that hangs).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Starts it again on the same root, state and socket.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// containerd's log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// Where the observer started by [`Containerd::observer`] keeps its TaskOOM spool.
    pub fn observer_state(&self) -> PathBuf {
        self.dir.join("observer-state")
    }

    /// Starts `oom-observer run` against this daemon and waits until it is ready (within
    /// `ready`) and connected to containerd.
    pub fn observer(&self, ready: Duration) -> crate::Observer {
        self.observer_with(ready, &[])
    }

    /// [`Containerd::observer`] with extra arguments for `oom-observer run`.
    pub fn observer_with(&self, ready: Duration, extra: &[&str]) -> crate::Observer {
        self.observer_with_env(ready, extra, &[])
    }

    /// [`Containerd::observer_with`], with variables added to the daemon's environment
    /// (`KUBECONFIG`): set for the whole test binary, they would reach the daemons of the
    /// tests that run beside it.
    pub fn observer_with_env(
        &self,
        ready: Duration,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> crate::Observer {
        let state = self.observer_state();
        let mut args = vec![
            "--containerd-socket",
            self.socket.to_str().unwrap_or_default(),
            "--state-dir",
            state.to_str().unwrap_or_default(),
        ];
        args.extend_from_slice(extra);
        let obs = crate::Observer::spawn_env(&args, ready, env);
        obs.wait_log(
            "connected to containerd",
            Duration::from_secs(30).max(ready),
        );
        obs
    }

    /// Creates containers in the test namespace through containerd's own API (what the CRI
    /// calls), each with the labels and OCI spec (JSON) `make(i)` gives and the runc
    /// runtime, but no snapshot and no task: they are listed, watched and indexed like any
    /// other, and cost no process. 16 requests in flight. Returns how long it took.
    pub fn create_containers<F>(&self, n: usize, make: F) -> Duration
    where
        F: Fn(usize) -> (String, std::collections::HashMap<String, String>, Vec<u8>)
            + Send
            + Sync
            + 'static,
    {
        use containerd_client::services::v1::{
            container::Runtime, containers_client::ContainersClient, Container,
            CreateContainerRequest,
        };
        let t0 = Instant::now();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let make = Arc::new(make);
        let (socket, namespace) = (self.socket.clone(), self.namespace.clone());
        rt.block_on(async move {
            let ch = containerd_client::connect(&socket)
                .await
                .expect("connecting to the test containerd");
            let next = Arc::new(AtomicUsize::new(0));
            let mut workers = tokio::task::JoinSet::new();
            for _ in 0..16 {
                let (ch, next, make, ns) =
                    (ch.clone(), next.clone(), make.clone(), namespace.clone());
                workers.spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= n {
                            return;
                        }
                        let (id, labels, spec) = make(i);
                        let mut req = Request::new(CreateContainerRequest {
                            container: Some(Container {
                                id: id.clone(),
                                labels,
                                runtime: Some(Runtime {
                                    name: "io.containerd.runc.v2".into(),
                                    options: None,
                                }),
                                spec: Some(prost_types::Any {
                                    type_url:
                                        "types.containerd.io/opencontainers/runtime-spec/1/Spec"
                                            .into(),
                                    value: spec,
                                }),
                                ..Default::default()
                            }),
                        });
                        req.metadata_mut()
                            .insert("containerd-namespace", ns.parse().unwrap());
                        ContainersClient::new(ch.clone())
                            .create(req)
                            .await
                            .unwrap_or_else(|e| panic!("creating container {id}: {e}"));
                    }
                });
            }
            while let Some(r) = workers.join_next().await {
                r.expect("a container-creating task failed");
            }
        });
        t0.elapsed()
    }

    /// Deletes containers (without tasks) through containerd's API, 16 at a time.
    fn delete_containers(&self, ids: &[String]) {
        use containerd_client::services::v1::{
            containers_client::ContainersClient, DeleteContainerRequest,
        };
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        let (socket, namespace) = (self.socket.clone(), self.namespace.clone());
        rt.block_on(async move {
            let Ok(ch) = containerd_client::connect(&socket).await else {
                return;
            };
            for chunk in ids.chunks(16) {
                let mut calls = tokio::task::JoinSet::new();
                for id in chunk {
                    let mut req = Request::new(DeleteContainerRequest { id: id.clone() });
                    if let Ok(ns) = namespace.parse() {
                        req.metadata_mut().insert("containerd-namespace", ns);
                    }
                    let ch = ch.clone();
                    calls.spawn(async move { ContainersClient::new(ch).delete(req).await });
                }
                while calls.join_next().await.is_some() {}
            }
        });
    }

    /// Runs `ctr` against this daemon in the test namespace.
    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new(self.version.bin("ctr"))
            .arg("--address")
            .arg(&self.socket)
            .arg("-n")
            .arg(&self.namespace)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running ctr")
    }

    /// The cgroup path a container gets (`--cgroup`).
    pub fn cgroup_of(&self, id: &str) -> String {
        format!("{}/{id}", self.cgroup_parent)
    }

    /// Starts `ctr run --rm` of a memory hog under a memory limit; returns the ctr process.
    /// [`Containerd::run_hog`] for a container of a Kubernetes pod, labelled as the kubelet
    /// labels it.
    /// Runs a pod member's hog to its OOM kill; panics unless it ends SIGKILLed (137).
    pub fn oom_kill_pod_member(&self, id: &str, limit_mb: u64, k8s: &K8sLabels<'_>) {
        let status = self.run_pod_hog(id, limit_mb, k8s).wait().unwrap();
        assert_eq!(status.code(), Some(137), "{id} must be OOM-killed");
    }

    pub fn run_pod_hog(&self, id: &str, limit_mb: u64, k8s: &K8sLabels<'_>) -> Child {
        let labels = k8s.args();
        let args: Vec<&str> = labels.iter().map(String::as_str).collect();
        self.run_hog(id, limit_mb, &args)
    }

    pub fn run_hog(&self, id: &str, limit_mb: u64, extra: &[&str]) -> Child {
        let limit = (limit_mb << 20).to_string();
        let cg = self.cgroup_of(id);
        let mut args: Vec<&str> = vec!["run", "--rm", "--memory-limit", &limit, "--cgroup", &cg];
        args.extend_from_slice(extra);
        let rootfs = self.rootfs.to_str().unwrap();
        // Waits for /go in the rootfs, so a test can hold the kill back.
        let script = "while [ ! -e /go ]; do sleep 0.05; done; x=a; while :; do x=$x$x; done";
        args.extend_from_slice(&["--rootfs", rootfs, id, "/bin/sh", "-c", script]);
        Command::new(self.version.bin("ctr"))
            .arg("--address")
            .arg(&self.socket)
            .arg("-n")
            .arg(&self.namespace)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ctr run")
    }

    /// `ctr run -d`: starts a container in the background with the given spec cgroupsPath,
    /// annotations, labels, runtime binary and memory limit; panics with ctr's output when
    /// it fails.
    pub fn run_detached(&self, id: &str, opts: &RunOpts<'_>, cmd: &[&str]) {
        let mut args: Vec<String> = vec!["run".into(), "-d".into()];
        // In the VM guests the root filesystem is the initramfs, which pivot_root(2) cannot
        // leave: runc chroots instead (the guest sets OOMX_NO_PIVOT).
        if std::env::var_os("OOMX_NO_PIVOT").is_some() {
            args.push("--no-pivot".into());
        }
        if let Some(cg) = opts.cgroup {
            args.extend(["--cgroup".into(), cg.to_string()]);
        }
        for (k, v) in opts.annotations {
            args.extend(["--annotation".into(), format!("{k}={v}")]);
        }
        for (k, v) in opts.labels {
            args.extend(["--label".into(), format!("{k}={v}")]);
        }
        if let Some(b) = opts.runc_binary {
            args.extend(["--runc-binary".into(), b.display().to_string()]);
        }
        if let Some(mb) = opts.memory_limit_mb {
            args.extend(["--memory-limit".into(), (mb << 20).to_string()]);
        }
        args.push("--rootfs".into());
        args.push(self.rootfs.display().to_string());
        args.push(id.into());
        args.extend(cmd.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.ctr(&refs);
        assert!(
            out.status.success(),
            "ctr {args:?} failed: {}{}\ncontainerd log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// The host pid of a container's task (`ctr task ls`).
    pub fn task_pid(&self, id: &str) -> u32 {
        let out = self.ctr(&["tasks", "ls"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no task pid for {id}"))
    }

    /// Lets every waiting hog go.
    pub fn go(&self) {
        fs::write(self.rootfs.join("go"), b"").unwrap();
    }

    /// Waits for the task of a container to be RUNNING.
    pub fn wait_running(&self, id: &str) {
        // Generous: four runc containers starting at once under TCG emulation take seconds.
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            let out = self.ctr(&["tasks", "ls"]);
            let text = String::from_utf8_lossy(&out.stdout);
            if text
                .lines()
                .any(|l| l.starts_with(id) && l.contains("RUNNING"))
            {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!("container {id} never ran; containerd log:\n{}", self.log());
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if !self.owned {
            let _ = fs::remove_dir_all(&self.dir);
            return;
        }
        // Kill what is left, then the daemon, then the shims of this daemon.
        let out = self.ctr(&["tasks", "ls", "-q"]);
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = self.ctr(&["tasks", "kill", "-s", "SIGKILL", id]);
        }
        thread::sleep(Duration::from_millis(200));
        let out = self.ctr(&["tasks", "ls", "-q"]);
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = self.ctr(&["tasks", "delete", "-f", id]);
        }
        let out = self.ctr(&["containers", "ls", "-q"]);
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        if ids.len() > 100 {
            // Thousands (the memory bench's): one connection, not one ctr each.
            self.delete_containers(&ids);
        } else {
            for id in &ids {
                let _ = self.ctr(&["containers", "delete", id]);
            }
        }
        self.stop();
        let _ = Command::new("pkill")
            .arg("-KILL")
            .arg("-f")
            .arg(self.socket.to_str().unwrap())
            .status();
        // A killed shim leaves its socket in /run/containerd/s (whatever containerd's
        // state directory): the ones of our containers' shims, by their names.
        for id in &ids {
            let _ = fs::remove_file(shim_socket(&self.socket, &self.namespace, id));
        }
        // The parent cgroups runc made for our --cgroup paths, in every hierarchy.
        if let Ok(hs) = fs::read_dir("/sys/fs/cgroup") {
            for h in hs.flatten() {
                let d = h.path().join(self.cgroup_parent.trim_start_matches('/'));
                if d.is_dir() {
                    if let Ok(children) = fs::read_dir(&d) {
                        for c in children.flatten() {
                            if c.path().is_dir() {
                                let _ = fs::remove_dir(c.path());
                            }
                        }
                    }
                    let _ = fs::remove_dir(&d);
                }
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Where the runc v2 shim of a container (or of a pod, by its sandbox id) listens:
/// `/run/containerd/s/<sha256 of "<containerd address>/<namespace>/<id>">`, as containerd
/// 1.6's `shim.SocketAddress` names it.
pub fn shim_socket(address: &Path, namespace: &str, id: &str) -> PathBuf {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(
        address
            .join(namespace)
            .join(id)
            .as_os_str()
            .as_encoded_bytes(),
    );
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    PathBuf::from("/run/containerd/s").join(hex)
}

/// Options of [`Containerd::run_detached`].
#[derive(Default)]
pub struct RunOpts<'a> {
    /// The spec's `linux.cgroupsPath`.
    pub cgroup: Option<&'a str>,
    /// OCI annotations.
    pub annotations: &'a [(&'a str, &'a str)],
    /// containerd labels.
    pub labels: &'a [(&'a str, &'a str)],
    /// The runc shim's runtime binary (a runsc wrapper for gVisor).
    pub runc_binary: Option<&'a Path>,
    /// `linux.resources.memory.limit`, in MiB.
    pub memory_limit_mb: Option<u64>,
}

/// One event from containerd's stream.
#[derive(Debug, Clone)]
pub struct Seen {
    /// containerd namespace.
    pub namespace: String,
    /// Topic, e.g. `/tasks/oom`.
    pub topic: String,
    /// `container_id` of a task event (field 1 of every task event).
    pub container_id: Option<String>,
    /// Whether it carries oom-observer's marker.
    pub ours: bool,
    /// containerd's timestamp of the envelope.
    pub timestamp: Option<SystemTime>,
    /// When the subscriber received it.
    pub received: SystemTime,
}

/// Subscribes to a containerd's events in a thread of its own.
pub struct Subscriber {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Subscriber {
    /// Subscribes and waits until the stream is live (a ping of our own went through).
    pub fn start(socket: &Path) -> Subscriber {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let socket = socket.to_path_buf();
        thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let Ok(ch) = containerd_client::connect(&socket).await else {
                    return;
                };
                let sub_ch = ch.clone();
                let sub = tokio::spawn(async move {
                    EventsClient::new(sub_ch)
                        .subscribe(SubscribeRequest::default())
                        .await
                });
                // containerd answers the subscription with its first event: send one.
                for _ in 0..50 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let mut req = Request::new(PublishRequest {
                        topic: "/oomx/ping".into(),
                        event: Some(prost_types::Any {
                            type_url: "containerd.events.TaskOOM".into(),
                            value: containerd_client::events::TaskOom {
                                container_id: "ping".into(),
                            }
                            .encode_to_vec(),
                        }),
                    });
                    req.metadata_mut()
                        .insert("containerd-namespace", "oomx-ping".parse().unwrap());
                    let _ = EventsClient::new(ch.clone()).publish(req).await;
                    if sub.is_finished() {
                        break;
                    }
                }
                let Ok(Ok(resp)) = sub.await else { return };
                let mut stream = resp.into_inner();
                while let Ok(Some(env)) = stream.message().await {
                    let raw = env
                        .event
                        .as_ref()
                        .map(|a| a.value.clone())
                        .unwrap_or_default();
                    let ts = env.timestamp.map(|t| {
                        SystemTime::UNIX_EPOCH + Duration::new(t.seconds as u64, t.nanos as u32)
                    });
                    s2.lock().unwrap().push(Seen {
                        namespace: env.namespace,
                        topic: env.topic,
                        container_id: proto_string_field(&raw, 1),
                        ours: proto_string_field(&raw, MARKER_FIELD)
                            .is_some_and(|m| m.starts_with(MARKER_PREFIX)),
                        timestamp: ts,
                        received: SystemTime::now(),
                    });
                }
            });
        });
        let sub = Subscriber { seen };
        sub.wait_for(
            "the subscription to go live",
            Duration::from_secs(20),
            |s| s.iter().any(|e| e.topic == "/oomx/ping"),
        );
        sub
    }

    /// Events so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits for a condition on the events seen.
    pub fn wait_for<F: Fn(&[Seen]) -> bool>(
        &self,
        what: &str,
        timeout: Duration,
        pred: F,
    ) -> Vec<Seen> {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.seen();
            if pred(&s) {
                return s;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; containerd events:\n{s:#?}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `/tasks/oom` events for a container: (ours, theirs).
    pub fn task_ooms(&self, namespace: &str, id: &str) -> (Vec<Seen>, Vec<Seen>) {
        self.seen()
            .into_iter()
            .filter(|e| {
                e.topic == "/tasks/oom"
                    && e.namespace == namespace
                    && e.container_id.as_deref() == Some(id)
            })
            .partition(|e| e.ours)
    }
}

/// A pod member's identity, as the kubelet's labels on its container carry it.
pub struct K8sLabels<'a> {
    /// `io.kubernetes.pod.namespace`.
    pub namespace: &'a str,
    /// `io.kubernetes.pod.name`.
    pub pod: &'a str,
    /// `io.kubernetes.pod.uid`, when the test sets one.
    pub uid: Option<&'a str>,
    /// `io.kubernetes.container.name`.
    pub container: &'a str,
}

impl K8sLabels<'_> {
    /// `ctr run` arguments: `--label K=V` for each.
    pub fn args(&self) -> Vec<String> {
        let mut kv = vec![
            ("io.kubernetes.pod.namespace", self.namespace),
            ("io.kubernetes.pod.name", self.pod),
            ("io.kubernetes.container.name", self.container),
        ];
        if let Some(uid) = self.uid {
            kv.push(("io.kubernetes.pod.uid", uid));
        }
        kv.into_iter()
            .flat_map(|(k, v)| ["--label".to_string(), format!("{k}={v}")])
            .collect()
    }
}
