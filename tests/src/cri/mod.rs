//! A kubelet-shaped harness: containerd's own CRI plugin, driven through the CRI API
//! (`k8s-cri`) in the order the kubelet drives it, and the container status read back the
//! way the kubelet's PLEG reads it.
//!
//! A private containerd (own root, state, socket and config under `/tmp/oomx-cd-…`) runs in
//! the `sys` cgroup of a scratch tree ([`ScratchTree`]) whose top has a hard memory limit.
//! Each pod gets a pod cgroup in that tree holding the pod-level memory limit (as the
//! kubelet's cgroup manager writes it), passed to RunPodSandbox as the cgroup parent; then
//! CreateContainer with the container's own limit and StartContainer. The labels are the
//! ones the kubelet itself adds (pod name, namespace, uid, container name); annotations,
//! cgroupsPath and the containerd records are the CRI plugin's own. Host network: no CNI.
//!
//! Images are built here, with no registry: a pause image and a busybox image (the host's
//! static busybox) as OCI archives, imported into `k8s.io` with `ctr images import`.
//!
//! Reading a verdict: a pidfd on the container's init says the instant its exit is visible;
//! from then on ContainerStatus is read without pause until the CRI reports the container
//! EXITED ("at exit", what the kubelet's next relist sees), and once more a second later.
//! OOMX_CRI_DEBUG=1 prints each batch's create / kill / removal times.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant, SystemTime},
};

use containerd_client::tonic::{transport::Channel, Request};
use k8s_cri::v1::{
    image_service_client::ImageServiceClient, runtime_service_client::RuntimeServiceClient,
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatusRequest,
    CreateContainerRequest, ImageSpec, ImageStatusRequest, LinuxContainerConfig,
    LinuxContainerResources, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, Mount, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopContainerRequest, StopPodSandboxRequest, VersionRequest,
};

use crate::{containerd::Containerd, pod::ScratchTree, race::Pidfd};

mod render;
mod row;
pub mod systemd;

pub use render::markdown_rows;
pub use row::{arch, rows, Row, RowObserver, RowSpec, Tally};

/// The pause image the CRI plugin is configured with (`sandbox_image`).
pub const PAUSE_IMAGE: &str = "oomx.local/pause:1";
/// The application image: the host's static busybox.
pub const BUSYBOX_IMAGE: &str = "oomx.local/busybox:1";
/// Where every container sees the harness's gate directory.
pub const GATE_MOUNT: &str = "/oomx";

static N: AtomicUsize = AtomicUsize::new(0);

/// The CRI plugin's settings an offline, kubelet-less pod needs on these machines (see the
/// shared platform notes): no `oom_score_adj` below the caller's own, the local pause
/// image, runc's state and containerd's opt directory inside the work dir, CNI config that
/// does not exist (host-network pods need none); in the format of the release under test.
fn cri_config(dir: &Path) -> String {
    let d = dir.display();
    // In the VM guests the root filesystem is the initramfs, which pivot_root(2) cannot
    // leave (the guest sets OOMX_NO_PIVOT).
    let no_pivot = std::env::var_os("OOMX_NO_PIVOT").is_some();
    let snapshotter = snapshotter();
    if crate::containerd::Version::selected().config_v3() {
        // containerd 2.x: the CRI's runtime and image halves are plugins of their own; the
        // gRPC service keeps only the streaming server. `ctr images import` goes through the
        // transfer service, which unpacks into overlayfs unless told otherwise: without
        // overlayfs (the guests) it would have no platform to unpack for.
        return format!(
            r#"[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "{snapshotter}"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{PAUSE_IMAGE}"
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{d}/cni/bin"]
    conf_dir = "{d}/cni/conf"
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        Root = "{d}/runc"
        SystemdCgroup = false
        NoPivotRoot = {no_pivot}
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
[plugins."io.containerd.transfer.v1.local"]
  [[plugins."io.containerd.transfer.v1.local".unpack_config]]
    platform = "linux/{arch}"
    snapshotter = "{snapshotter}"
"#,
            arch = row::arch().replace("x86_64", "amd64"),
        );
    }
    format!(
        r#"[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni/bin"
    conf_dir = "{d}/cni/conf"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "{snapshotter}"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{d}/runc"
        SystemdCgroup = false
        NoPivotRoot = {no_pivot}
"#
    )
}

/// The snapshotter the CRI unpacks images into: overlayfs, or what OOMX_SNAPSHOTTER names
/// (the VM guests: `native`; their kernels have overlayfs as a module, and the initramfs
/// carries no modules).
fn snapshotter() -> String {
    std::env::var("OOMX_SNAPSHOTTER").unwrap_or_else(|_| "overlayfs".into())
}

/// A root filesystem of the host's static busybox, with the applets the pods use.
fn busybox_entries() -> Vec<oci_archive::Entry> {
    use oci_archive::Entry;
    let busybox = fs::read("/bin/busybox").expect("reading /bin/busybox (busybox-static)");
    let mut e: Vec<Entry> = ["bin", "dev", "etc", "proc", "sys", "tmp", "oomx"]
        .into_iter()
        .map(Entry::dir)
        .collect();
    e.push(Entry::file("bin/busybox", busybox, 0o755));
    for a in ["sh", "sleep", "cat", "test", "taskset", "true", "kill"] {
        e.push(Entry::symlink(format!("bin/{a}"), "busybox"));
    }
    e
}

fn image(entrypoint: &[&str]) -> oci_archive::Image {
    oci_archive::Image {
        platform: oci_archive::Platform::host(),
        entries: busybox_entries(),
        entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
        cmd: Vec::new(),
        env: vec!["PATH=/bin".into()],
    }
}

/// What the CRI said about a container at one read.
#[derive(Debug, Clone)]
pub struct Reading {
    /// `CONTAINER_RUNNING`, `CONTAINER_EXITED`, … (the enum's name).
    pub state: String,
    /// The CRI's reason (`OOMKilled`, `Error`, `Completed`, …).
    pub reason: String,
    /// The container's exit code.
    pub exit_code: i32,
    /// Time since the init's exit was visible (its pidfd readable).
    pub after_exit: Duration,
    /// When the read returned.
    pub at: SystemTime,
}

/// How a kubelet would classify a reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// `reason: OOMKilled`.
    OomKilled,
    /// `reason: Error` (the race lost: a plain crash with exit 137).
    Error,
    /// Anything else (not exited, no reason, `Completed`, …).
    Other,
}

impl Reading {
    /// The kubelet's view of this reading.
    pub fn verdict(&self) -> Verdict {
        match (self.state.as_str(), self.reason.as_str()) {
            ("CONTAINER_EXITED", "OOMKilled") => Verdict::OomKilled,
            ("CONTAINER_EXITED", "Error") => Verdict::Error,
            _ => Verdict::Other,
        }
    }
}

/// How a pod is asked for.
#[derive(Debug, Clone)]
pub struct PodSpec {
    /// The limit on the pod's cgroup (the cgroup parent), as the kubelet writes it.
    pub pod_limit_mb: u64,
    /// The container's own limit; `None`: the pod's alone.
    pub limit_mb: Option<u64>,
    /// What the container's shell runs.
    pub script: String,
    /// Name the pod's cgroup as a kubelet with the systemd cgroup driver does (a slice),
    /// while runc runs without the systemd driver: runc then takes the CRI's systemd-form
    /// cgroupsPath as a path relative to its caller's cgroup, outside the pod's.
    pub systemd_parent: bool,
    /// One pid namespace for the whole pod (`shareProcessNamespace`): the pause process is
    /// its init, so the container's own init can be signaled from inside the pod.
    pub shared_pid: bool,
}

/// One pod's container, created and started through the CRI.
#[derive(Debug)]
pub struct CriPod {
    /// The CRI's sandbox id.
    pub sandbox_id: String,
    /// The CRI's container id.
    pub container_id: String,
    /// Pod metadata: name, namespace, uid.
    pub name: String,
    pub namespace: String,
    pub uid: String,
    /// The container's name (metadata).
    pub container: String,
    /// The pod's cgroup, relative to the scratch tree.
    pub pod_cgroup: String,
    /// The container's init, as the node's pid namespace sees it.
    pub pid: u32,
}

/// A pod's outcome: the CRI's status at the first EXITED read and a second later.
#[derive(Debug)]
pub struct Outcome {
    pub pod: CriPod,
    pub at_exit: Reading,
    pub later: Reading,
}

/// What each pod's container runs, and how its kill comes about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// The init allocates past its limit itself (kill and exit on one CPU).
    Alloc,
    /// The init grows to half its limit and sleeps on `victim_cpu`; a child pinned on
    /// `trigger_cpu` allocates past the limit, so the OOM killer runs there (a starved CPU in
    /// the loaded rows) and picks the init (the biggest), which exits on the other CPU.
    Starved {
        trigger_cpu: usize,
        victim_cpu: usize,
    },
}

impl Workload {
    /// 4 MiB strings the starved pods' init holds: 5/8 of the limit.
    fn init_chunks(limit_mb: u64) -> u64 {
        (limit_mb * 5 / 8 / 4).max(1)
    }

    /// Memory the init holds before it waits at the gate.
    fn init_bytes(&self, limit_mb: u64) -> u64 {
        match self {
            Workload::Alloc => 0,
            Workload::Starved { .. } => (Workload::init_chunks(limit_mb) + 1) * (4 << 20),
        }
    }

    fn script(&self, limit_mb: u64) -> String {
        let gate = format!("while [ ! -e {GATE_MOUNT}/go ]; do sleep 0.02; done; ");
        match self {
            Workload::Alloc => format!("{gate}x=a; while :; do x=$x$x; done"),
            Workload::Starved {
                trigger_cpu,
                victim_cpu,
            } => {
                // 4 MiB strings (built by doubling: at most 12 MiB for a moment), each
                // variable a copy: the init holds 5/8 of the limit; the child, pinned
                // elsewhere, then adds 4 MiB at a time, never outgrowing the init.
                let chunks = Workload::init_chunks(limit_mb);
                let mib4 = "y=a; i=0; while [ $i -lt 22 ]; do y=$y$y; i=$((i+1)); done";
                format!(
                    "taskset -p -c {victim_cpu} $$ >/dev/null; {mib4}; j=0; \
                     while [ $j -lt {chunks} ]; do eval \"x$j=\\$y\"; j=$((j+1)); done; {gate}\
                     taskset -c {trigger_cpu} sh -c '{mib4}; j=0; \
                     while :; do eval \"z$j=\\$y\"; j=$((j+1)); done' & while :; do sleep 1; done"
                )
            }
        }
    }
}

/// The labels the kubelet itself puts on every pod sandbox and container it asks the CRI
/// for (`kuberuntime`'s `newPodLabels` / `newContainerLabels`), beside the pod's own; the
/// CRI plugin copies them onto containerd's container records, where the observer reads
/// them.
fn kubelet_labels(
    pod: &str,
    namespace: &str,
    uid: &str,
    container: Option<&str>,
) -> HashMap<String, String> {
    let mut l = HashMap::from([
        ("app".to_string(), "oomx-hog".to_string()),
        ("io.kubernetes.pod.name".into(), pod.into()),
        ("io.kubernetes.pod.namespace".into(), namespace.into()),
        ("io.kubernetes.pod.uid".into(), uid.into()),
    ]);
    if let Some(c) = container {
        l.remove("app");
        l.insert("io.kubernetes.container.name".into(), c.into());
    }
    l
}

/// A private containerd with its CRI plugin, its scratch cgroup tree and CRI clients.
pub struct CriNode {
    /// The daemon (namespace `k8s.io`).
    pub cd: Containerd,
    /// The scratch cgroup tree (containerd in `sys`, pods beside it).
    pub tree: ScratchTree,
    rt: tokio::runtime::Runtime,
    runtime: RuntimeServiceClient<Channel>,
    gate: PathBuf,
    log_dir: PathBuf,
    pods: Vec<String>,
    n: usize,
    /// The node's own containerd with `SystemdCgroup = true` and oom-observer as its unit
    /// ([`CriNode::systemd`]): pods in slices systemd makes.
    systemd: bool,
    /// How long [`CriNode::run_kills`] waits, after it opens the gate, for a container's init
    /// to be killed ([`KILL_BOUND`] unless a row sets another). A container whose init still
    /// runs at the bound is never read: it counts as not EXITED, not as right.
    pub kill_bound: Duration,
}

/// The default of [`CriNode::kill_bound`].
pub const KILL_BOUND: Duration = Duration::from_secs(30);

impl CriNode {
    /// Starts containerd with the CRI plugin, imports the pause and busybox images and
    /// waits until the CRI sees both.
    pub fn start() -> CriNode {
        CriNode::start_within(768)
    }

    /// [`CriNode::start`] with `limit_mb` on the whole test's scratch tree (containerd and
    /// every pod), the outer limit that keeps a failing test off the node's memory.
    pub fn start_within(limit_mb: u64) -> CriNode {
        let tree = ScratchTree::new(limit_mb);
        tree.mkdir_all_hierarchies("sys");
        let cd = Containerd::start_with(tree.procs_files("sys"), Some(&cri_config));
        CriNode::on(cd, tree, false)
    }

    /// The node's own containerd on `socket` (a `containerd.service` whose runc runs with
    /// `SystemdCgroup = true`), under systemd as PID 1: pods get the slices a kubelet with the
    /// systemd cgroup driver asks for, and [`CriNode::observer`] is the node's unit. The
    /// scratch tree only holds the loaded rows' busy loops.
    pub fn systemd(socket: &Path) -> CriNode {
        let tree = ScratchTree::new(768);
        let cd = Containerd::attach(socket, Path::new("/run/oomx-cri"));
        systemd::stop_unit();
        CriNode::on(cd, tree, true)
    }

    /// The node's cgroup driver, as the kubelet names it.
    pub fn cgroup_driver(&self) -> &'static str {
        if self.systemd {
            "systemd"
        } else {
            "cgroupfs"
        }
    }

    /// oom-observer for one row, ready (within `ready`) and connected to containerd: a
    /// private `oom-observer run`, or on a systemd node its unit, started by systemd.
    pub fn observer(&self, ready: Duration) -> RowObserver {
        if self.systemd {
            RowObserver::Unit(systemd::UnitRun::start(ready))
        } else {
            RowObserver::Process(self.cd.observer(ready))
        }
    }

    /// Imports the pause and busybox images into `cd` and connects the CRI clients.
    fn on(cd: Containerd, tree: ScratchTree, systemd: bool) -> CriNode {
        let gate = cd.dir.join("gate");
        let log_dir = cd.dir.join("pod-logs");
        fs::create_dir_all(&gate).unwrap();
        fs::create_dir_all(&log_dir).unwrap();
        for (name, archive, entrypoint) in [
            (PAUSE_IMAGE, "pause.tar", &["/bin/sleep", "2147483647"][..]),
            (BUSYBOX_IMAGE, "busybox.tar", &["/bin/sh"][..]),
        ] {
            let path = cd.dir.join(archive);
            oci_archive::write_oci_archive(&path, name, &[image(entrypoint)])
                .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
            let out = cd.ctr(&[
                "images",
                "import",
                "--snapshotter",
                &snapshotter(),
                path.to_str().unwrap(),
            ]);
            assert!(
                out.status.success(),
                "ctr images import {}: {}{}",
                path.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let socket = cd.socket.clone();
        let channel = rt
            .block_on(containerd_client::connect(&socket))
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", socket.display()));
        let mut runtime = RuntimeServiceClient::new(channel.clone());
        let mut images = ImageServiceClient::new(channel);
        let version = rt
            .block_on(runtime.version(VersionRequest::default()))
            .unwrap_or_else(|e| panic!("CRI Version: {e}\ncontainerd log:\n{}", cd.log()))
            .into_inner();
        eprintln!(
            "cri: {} {} (CRI {})",
            version.runtime_name, version.runtime_version, version.runtime_api_version
        );
        // The CRI learns imported images from containerd's image events: wait until it
        // knows both, so a missing image never starts a pull.
        for name in [PAUSE_IMAGE, BUSYBOX_IMAGE] {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let st = rt
                    .block_on(images.image_status(ImageStatusRequest {
                        image: Some(ImageSpec {
                            image: name.into(),
                            ..Default::default()
                        }),
                        verbose: false,
                    }))
                    .map(|r| r.into_inner().image.is_some());
                if st.as_ref().is_ok_and(|&b| b) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the CRI never saw image {name} ({st:?}); containerd log:\n{}",
                    cd.log()
                );
                thread::sleep(Duration::from_millis(50));
            }
        }
        CriNode {
            cd,
            tree,
            rt,
            runtime,
            gate,
            log_dir,
            pods: Vec::new(),
            n: N.fetch_add(1, Ordering::SeqCst) * 100_000,
            systemd,
            kill_bound: KILL_BOUND,
        }
    }

    /// RunPodSandbox (its cgroup parent with `pod_limit_mb`), CreateContainer (with
    /// `limit_mb` and `workload`), StartContainer; returns when the container runs.
    pub fn run_pod(&mut self, pod_limit_mb: u64, limit_mb: u64, workload: Workload) -> CriPod {
        self.run_pod_spec(&PodSpec {
            pod_limit_mb,
            limit_mb: Some(limit_mb),
            script: workload.script(limit_mb),
            systemd_parent: false,
            shared_pid: false,
        })
    }

    /// RunPodSandbox, CreateContainer and StartContainer of one pod as `spec` says.
    pub fn run_pod_spec(&mut self, spec: &PodSpec) -> CriPod {
        self.n += 1;
        let n = self.n;
        let uid = format!("oomx-{}-{n}", std::process::id());
        let name = format!("hog-{n}");
        let namespace = "oomx".to_string();
        let container = "hog".to_string();
        // A kubelet with the cgroupfs driver names the pod's cgroup `.../pod<uid>`; with the
        // systemd driver a slice, `<parent>-pod<uid, '-' as '_'>.slice`, from which the CRI
        // makes the systemd-form cgroupsPath `<slice>:cri-containerd:<id>`.
        let pod_cgroup = if self.systemd {
            systemd::pod_slice(&uid)
        } else if spec.systemd_parent {
            format!("{}-pod{}.slice", self.tree.base, uid.replace('-', "_"))
        } else {
            format!("pod{uid}")
        };
        let pod_limit_mb = spec.pod_limit_mb;
        // On a systemd node the slice is systemd's, made when the sandbox's scope asks for it.
        let cgroup_parent = if self.systemd {
            pod_cgroup.clone()
        } else {
            self.tree.mkdir_memory(&pod_cgroup, Some(pod_limit_mb));
            self.tree.sub(&pod_cgroup)
        };
        let pid_ns = if spec.shared_pid {
            NamespaceMode::Pod
        } else {
            NamespaceMode::Container
        };
        let node_ns = || NamespaceOption {
            network: NamespaceMode::Node as i32,
            pid: pid_ns as i32,
            ipc: NamespaceMode::Pod as i32,
            ..Default::default()
        };
        let sandbox_config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.clone(),
                uid: uid.clone(),
                namespace: namespace.clone(),
                attempt: 0,
            }),
            log_directory: self.log_dir.join(&uid).display().to_string(),
            labels: kubelet_labels(&name, &namespace, &uid, None),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent,
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(node_ns()),
                    ..Default::default()
                }),
                resources: Some(LinuxContainerResources {
                    memory_limit_in_bytes: (pod_limit_mb << 20) as i64,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut rs = self.runtime.clone();
        let sandbox_id = self
            .rt
            .block_on(rs.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(sandbox_config.clone()),
                runtime_handler: String::new(),
            }))
            .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\ncontainerd log:\n{}", self.cd.log()))
            .into_inner()
            .pod_sandbox_id;
        self.pods.push(sandbox_id.clone());
        if self.systemd {
            systemd::set_slice_limit(&pod_cgroup, pod_limit_mb);
            // Once the first pod has made kubepods.slice.
            if self.n % 100_000 == 1 {
                systemd::weigh_kubepods();
            }
        }
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: container.clone(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: BUSYBOX_IMAGE.into(),
                ..Default::default()
            }),
            command: vec!["/bin/sh".into(), "-c".into(), spec.script.clone()],
            mounts: vec![Mount {
                container_path: GATE_MOUNT.into(),
                host_path: self.gate.display().to_string(),
                readonly: true,
                ..Default::default()
            }],
            log_path: format!("{container}.log"),
            labels: kubelet_labels(&name, &namespace, &uid, Some(&container)),
            annotations: HashMap::from([
                ("io.kubernetes.container.restartCount".into(), "0".into()),
                (
                    "io.kubernetes.container.terminationMessagePolicy".into(),
                    "File".into(),
                ),
            ]),
            linux: Some(LinuxContainerConfig {
                resources: Some(LinuxContainerResources {
                    memory_limit_in_bytes: spec.limit_mb.map_or(0, |mb| (mb << 20) as i64),
                    ..Default::default()
                }),
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(node_ns()),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        let container_id = self
            .rt
            .block_on(rs.create_container(CreateContainerRequest {
                pod_sandbox_id: sandbox_id.clone(),
                config: Some(config),
                sandbox_config: Some(sandbox_config),
            }))
            .unwrap_or_else(|e| panic!("CreateContainer: {e}\ncontainerd log:\n{}", self.cd.log()))
            .into_inner()
            .container_id;
        self.rt
            .block_on(rs.start_container(StartContainerRequest {
                container_id: container_id.clone(),
            }))
            .unwrap_or_else(|e| panic!("StartContainer: {e}\ncontainerd log:\n{}", self.cd.log()));
        let pid = self.container_pid(&container_id);
        CriPod {
            sandbox_id,
            container_id,
            name,
            namespace,
            uid,
            container,
            pod_cgroup,
            pid,
        }
    }

    /// The init's host pid, from ContainerStatus's verbose info (as `crictl inspect`).
    fn container_pid(&self, id: &str) -> u32 {
        let mut rs = self.runtime.clone();
        let resp = self
            .rt
            .block_on(rs.container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            }))
            .unwrap_or_else(|e| panic!("ContainerStatus {id}: {e}"))
            .into_inner();
        let info: serde_json::Value = resp
            .info
            .get("info")
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        info["pid"]
            .as_u64()
            .filter(|&p| p > 0)
            .unwrap_or_else(|| panic!("no pid in ContainerStatus info of {id}: {:?}", resp.info))
            as u32
    }

    /// StopContainer with `timeout_s`, as the kubelet stops a container: the runtime sends
    /// SIGTERM, then SIGKILL once the timeout has passed.
    pub fn stop_container(&mut self, id: &str, timeout_s: i64) {
        let mut rs = self.runtime.clone();
        self.rt
            .block_on(rs.stop_container(StopContainerRequest {
                container_id: id.into(),
                timeout: timeout_s,
            }))
            .unwrap_or_else(|e| {
                panic!(
                    "StopContainer {id}: {e}\ncontainerd log:\n{}",
                    self.cd.log()
                )
            });
    }

    /// The container's status once the CRI reports it EXITED (within `within`), as the
    /// kubelet's relist reads it.
    pub fn exited_status(&self, id: &str, within: Duration) -> Reading {
        let since = Instant::now();
        loop {
            match self.read(id, since) {
                Ok(r) if r.state == "CONTAINER_EXITED" => return r,
                r if since.elapsed() > within => {
                    panic!("{id}: not EXITED after {within:?}: {r:?}")
                }
                _ => thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// One ContainerStatus read.
    fn read(&self, id: &str, since: Instant) -> Result<Reading, String> {
        let mut rs = self.runtime.clone();
        let st = self
            .rt
            .block_on(rs.container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            }))
            .map_err(|e| format!("ContainerStatus {id}: {e}"))?
            .into_inner()
            .status
            .ok_or_else(|| format!("ContainerStatus {id}: no status"))?;
        Ok(Reading {
            state: ContainerState::try_from(st.state)
                .map(|s| s.as_str_name().to_string())
                .unwrap_or_else(|_| st.state.to_string()),
            reason: st.reason,
            exit_code: st.exit_code,
            after_exit: since.elapsed(),
            at: SystemTime::now(),
        })
    }

    /// Runs `count` pods `parallel` at a time: creates them (each waiting at the gate),
    /// opens a pidfd on each init, lets them go, and reads each container's status the
    /// instant its exit is visible until the CRI reports it EXITED, and again 1 s later;
    /// `during` runs once the pods wait at the gate (e.g. to pin or load CPUs). The pods are
    /// removed through the CRI afterwards.
    pub fn run_kills(
        &mut self,
        count: usize,
        parallel: usize,
        pod_limit_mb: u64,
        limit_mb: u64,
        workload: Workload,
    ) -> Vec<Outcome> {
        let mut out = Vec::new();
        let go = self.gate.join("go");
        while out.len() < count {
            let k = parallel.max(1).min(count - out.len());
            let _ = fs::remove_file(&go);
            let mut batch = Vec::new();
            let t0 = Instant::now();
            for _ in 0..k {
                let pod = self.run_pod(pod_limit_mb, limit_mb, workload);
                let fd = Pidfd::open(pod.pid)
                    .unwrap_or_else(|e| panic!("pidfd of {}: {e}", pod.container_id));
                batch.push((pod, fd));
            }
            if let Workload::Starved { .. } = workload {
                // Until each init holds its half and waits at the gate.
                for (pod, _) in &batch {
                    let deadline = Instant::now() + Duration::from_secs(20);
                    while self.usage(pod) < workload.init_bytes(limit_mb)
                        && Instant::now() < deadline
                        && Path::new(&format!("/proc/{}", pod.pid)).exists()
                    {
                        thread::sleep(Duration::from_millis(10));
                    }
                }
            }
            let t1 = Instant::now();
            fs::write(&go, b"").unwrap();
            let this = &*self;
            let results: Vec<(Reading, Reading)> = thread::scope(|s| {
                let hs: Vec<_> = batch
                    .iter()
                    .map(|(pod, fd)| s.spawn(move || this.watch(pod, fd)))
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let t2 = Instant::now();
            for ((pod, _), (at_exit, later)) in batch.into_iter().zip(results) {
                self.remove_pod(&pod.sandbox_id);
                out.push(Outcome {
                    pod,
                    at_exit,
                    later,
                });
            }
            if std::env::var_os("OOMX_CRI_DEBUG").is_some() {
                eprintln!(
                    "cri: batch of {k}: create+ready {:?}, kills+reads {:?}, removal {:?}",
                    t1 - t0,
                    t2 - t1,
                    t2.elapsed()
                );
            }
        }
        let _ = fs::remove_file(&go);
        out
    }

    /// Memory charged to a pod's container now.
    fn usage(&self, pod: &CriPod) -> u64 {
        if self.systemd {
            systemd::usage(&systemd::scope_dir(&pod.pod_cgroup, &pod.container_id))
        } else {
            self.tree
                .usage(&format!("{}/{}", pod.pod_cgroup, pod.container_id))
        }
    }

    fn watch(&self, pod: &CriPod, fd: &Pidfd) -> (Reading, Reading) {
        let exited = fd.wait(self.kill_bound);
        let since = Instant::now();
        let not_exited = |why: &str| Reading {
            state: format!("NOT_EXITED ({why})"),
            reason: String::new(),
            exit_code: -1,
            after_exit: since.elapsed(),
            at: SystemTime::now(),
        };
        if !exited {
            let r = not_exited(&format!(
                "init still running after {} s",
                self.kill_bound.as_secs()
            ));
            return (r.clone(), r);
        }
        // As the kubelet's relist would, as early as it could: the first EXITED status. A
        // kubelet keeps reading; the bound only ends a read that never comes. containerd
        // 1.7's CRI, loaded under emulation, still said RUNNING 10 s after TaskExit.
        let deadline = since + Duration::from_secs(30);
        let at_exit = loop {
            match self.read(&pod.container_id, since) {
                Ok(r) if r.state == "CONTAINER_EXITED" => break r,
                Ok(r) if Instant::now() > deadline => break r,
                Err(e) if Instant::now() > deadline => break not_exited(&e),
                _ => {}
            }
        };
        thread::sleep(Duration::from_secs(1));
        let later = self
            .read(&pod.container_id, since)
            .unwrap_or_else(|e| not_exited(&e));
        (at_exit, later)
    }

    /// StopPodSandbox and RemovePodSandbox, as the kubelet tears a pod down.
    pub fn remove_pod(&mut self, sandbox_id: &str) {
        let mut rs = self.runtime.clone();
        let stop = self.rt.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(20),
                rs.stop_pod_sandbox(Request::new(StopPodSandboxRequest {
                    pod_sandbox_id: sandbox_id.into(),
                })),
            )
            .await
        });
        let remove = self.rt.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(20),
                rs.remove_pod_sandbox(Request::new(RemovePodSandboxRequest {
                    pod_sandbox_id: sandbox_id.into(),
                })),
            )
            .await
        });
        if !matches!(stop, Ok(Ok(_))) || !matches!(remove, Ok(Ok(_))) {
            eprintln!("cri: removing pod {sandbox_id}: stop {stop:?}, remove {remove:?}");
        }
        self.pods.retain(|p| p != sandbox_id);
    }
}

impl Drop for CriNode {
    fn drop(&mut self) {
        // Through the CRI first (its own bookkeeping), then the daemon's and the tree's own
        // clean-up (fields drop in order: containerd, then the cgroup tree).
        for id in self.pods.clone() {
            self.remove_pod(&id);
        }
    }
}
