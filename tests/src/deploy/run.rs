//! The DaemonSet's container under a private containerd: its `ctr` arguments, the service
//! account the kubelet would mount and a cgroup namespace of its own.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::{json, Value};

use crate::{
    containerd::Containerd,
    deploy::manifest::{cap_mask, quantity_bytes, strs},
    procfs::ProcStatus,
};

/// The DaemonSet's container turned into `ctr run` flags, the way the kubelet and the CRI turn
/// it into an OCI spec. Host paths the test must not touch (the node's containerd socket
/// directory, the state and query directories) are replaced by ones of the test's own,
/// loudly; everything else is the manifest's.
pub struct PodRun {
    pub flags: Vec<String>,
    pub args: Vec<String>,
    pub caps: Vec<String>,
    pub memory_limit: u64,
    /// Volume name → host directory used.
    pub host_dirs: BTreeMap<String, PathBuf>,
}

/// [`PodRun`] of the DaemonSet `ds` against `cd`.
pub fn pod_run(
    ds: &Value,
    cd: &Containerd,
    substitute: &BTreeMap<&str, PathBuf>,
    service_account: &ServiceAccount,
) -> PodRun {
    let spec = &ds["spec"]["template"]["spec"];
    let c = &spec["containers"][0];
    let sc = &c["securityContext"];
    let mut flags: Vec<String> = Vec::new();
    assert_eq!(
        sc["privileged"], false,
        "the DaemonSet must not be privileged"
    );
    if spec["hostPID"] == true {
        // The node's PID namespace. This machine's PID 1 (its supervisor) refuses to show its
        // namespace links; the test's own PID namespace is the machine's.
        flags.push(format!("--with-ns=pid:/proc/{}/ns/pid", std::process::id()));
    }
    if spec["hostNetwork"] == true {
        flags.push("--net-host".into());
    }
    if sc["readOnlyRootFilesystem"] == true {
        flags.push("--read-only".into());
    }
    if sc["allowPrivilegeEscalation"] != false {
        flags.push("--allow-new-privs".into());
    }
    assert_eq!(sc["runAsUser"], 0, "ctr runs as root; so does the manifest");
    match sc["seccompProfile"]["type"].as_str() {
        // ctr's --seccomp is containerd's default profile, the CRI's RuntimeDefault.
        Some("RuntimeDefault") => flags.push("--seccomp".into()),
        Some("Unconfined") | None => {}
        Some(other) => panic!("seccompProfile {other} not supported by this test"),
    }
    // drop: [ALL] = drop every capability of containerd's default spec; then add.
    let own_bounding = u64::from_str_radix(&status_field(std::process::id(), "CapBnd"), 16)
        .expect("CapBnd of the test");
    let caps: Vec<String> = strs(&sc["capabilities"]["add"])
        .iter()
        .map(|c| format!("CAP_{c}"))
        .filter(|c| {
            // What the machine withholds from every process, runc cannot grant either.
            let have = cap_mask(std::slice::from_ref(c)) & own_bounding != 0;
            if !have {
                eprintln!(
                    "deploy test: NOT GRANTED: {c} is outside this machine's bounding set \
                     (the supervisor withholds it from every process): the container runs \
                     without it"
                );
            }
            have
        })
        .collect();
    assert_eq!(strs(&sc["capabilities"]["drop"]), ["ALL"]);
    let default_spec: Value = serde_json::from_slice(&cd.ctr(&["oci", "spec"]).stdout).unwrap();
    for cap in strs(&default_spec["process"]["capabilities"]["bounding"]) {
        if !caps.contains(&cap) {
            flags.push(format!("--cap-drop={cap}"));
        }
    }
    for cap in &caps {
        flags.push(format!("--cap-add={cap}"));
    }
    // Volumes: hostPath only, bound where the container mounts them.
    let mut host_dirs = BTreeMap::new();
    let volumes = spec["volumes"].as_array().unwrap();
    for m in c["volumeMounts"].as_array().unwrap() {
        let name = m["name"].as_str().unwrap();
        let vol = volumes
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"));
        let hp = &vol["hostPath"];
        let path = hp["path"].as_str().expect("hostPath volumes only");
        let src = match substitute.get(name) {
            Some(p) => {
                eprintln!(
                    "deploy test: volume {name}: {path} on the node is {} here",
                    p.display()
                );
                p.clone()
            }
            None => PathBuf::from(path),
        };
        match hp["type"].as_str() {
            Some("Directory") => assert!(src.is_dir(), "hostPath {path} must exist"),
            Some("DirectoryOrCreate") => fs::create_dir_all(&src).unwrap(),
            other => panic!("hostPath type {other:?} not supported by this test"),
        }
        let mode = if m["readOnly"] == true { "ro" } else { "rw" };
        flags.push(format!(
            "--mount=type=bind,src={},dst={},options=rbind:{mode}",
            src.display(),
            m["mountPath"].as_str().unwrap()
        ));
        host_dirs.insert(name.to_string(), src);
    }
    for e in c["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        let value = if let Some(v) = e["value"].as_str() {
            v.to_string()
        } else {
            assert_eq!(e["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
            // What the kubelet puts there: the node's name.
            nix_hostname()
        };
        flags.push(format!("--env={name}={value}"));
    }
    if spec["automountServiceAccountToken"] != false {
        // What the kubelet adds to every container of a pod with a mounted token: the
        // account's token, CA and namespace, and the API server's service address.
        eprintln!(
            "deploy test: service account: the test's own token and CA from {}; API server \
             {API_HOST}:{API_PORT} in the container's network namespace (a stand-in)",
            service_account.dir.display()
        );
        flags.push(format!(
            "--mount=type=bind,src={},dst={SA_MOUNT},options=rbind:ro",
            service_account.dir.display()
        ));
        flags.push(format!("--env=KUBERNETES_SERVICE_HOST={API_HOST}"));
        flags.push(format!("--env=KUBERNETES_SERVICE_PORT={API_PORT}"));
    }
    let memory_limit = quantity_bytes(c["resources"]["limits"]["memory"].as_str().unwrap());
    flags.push(format!("--memory-limit={memory_limit}"));
    let mut args = strs(&c["args"]);
    let help = Command::new(crate::observer_bin())
        .args(["run", "--help"])
        .output()
        .unwrap();
    if !String::from_utf8_lossy(&help.stdout).contains("--metrics-listen") {
        // Until the metrics sink is in this tree (issue 16): the binary would refuse the flag.
        eprintln!(
            "deploy test: NOT TESTED: this build has no --metrics-listen; running without it"
        );
        args.retain(|a| !a.starts_with("--metrics-listen"));
    }
    PodRun {
        flags,
        args,
        caps,
        memory_limit,
        host_dirs,
    }
}

/// Where the kubelet mounts a pod's service account (kube-rs reads it there in-cluster).
pub const SA_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The API server's address as the container sees it: the stand-in listens there, inside the
/// container's own network namespace (the manifest has no hostNetwork), so nothing of the
/// node's network is used.
pub const API_HOST: &str = "127.0.0.1";
pub const API_PORT: u16 = 6443;

/// A service account as the kubelet mounts it (token, ca.crt, namespace), with a CA made
/// for the test and the stand-in API server's certificate and key signed by it.
pub struct ServiceAccount {
    pub dir: PathBuf,
    pub token: String,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// Makes a [`ServiceAccount`] under `parent`.
pub fn service_account(parent: &Path) -> ServiceAccount {
    let dir = parent.join("serviceaccount");
    let pki = parent.join("pki");
    fs::create_dir_all(&dir).unwrap();
    fs::create_dir_all(&pki).unwrap();
    let openssl = |args: &str| {
        let out = Command::new("openssl")
            .current_dir(&pki)
            .args(args.split_whitespace())
            .output()
            .expect(
                "THIS TEST NEEDS openssl (Debian package openssl; cargo xtask test installs it)",
            );
        assert!(
            out.status.success(),
            "openssl {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    openssl(&format!(
        "req -x509 {ec} -keyout ca.key -out ca.crt -days 1 -subj /CN=oomx-test-ca"
    ));
    openssl(&format!(
        "req {ec} -keyout server.key -out server.csr -subj /CN=kube-apiserver"
    ));
    fs::write(
        pki.join("server.ext"),
        format!(
            "subjectAltName=IP:{API_HOST}\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
        ),
    )
    .unwrap();
    openssl(
        "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 \
         -extfile server.ext -out server.crt",
    );
    let token = format!("oomx-deploy-token-{}", std::process::id());
    fs::write(dir.join("token"), &token).unwrap();
    fs::write(dir.join("namespace"), "oom-observer").unwrap();
    fs::copy(pki.join("ca.crt"), dir.join("ca.crt")).unwrap();
    ServiceAccount {
        dir,
        token,
        server_cert: pki.join("server.crt"),
        server_key: pki.join("server.key"),
    }
}

/// `ctr run` has no flag for a new cgroup namespace: the container is made by
/// `ctr containers create` with the same flags, its spec given a cgroup namespace through
/// containerd's API (Containers.Update), and its task started with `ctr tasks start`. Returns
/// those `ctr` arguments.
pub fn with_cgroup_namespace(cd: &Containerd, run_argv: &[String], image: &str) -> Vec<String> {
    use containerd_client::{
        services::v1::{
            containers_client::ContainersClient, GetContainerRequest, UpdateContainerRequest,
        },
        tonic::Request,
    };
    let id = "oom-observer";
    let mut create: Vec<String> = vec!["containers".into(), "create".into()];
    let mut log_uri = String::new();
    let mut cgroup = String::new();
    let mut rest = run_argv[2..].iter();
    for a in rest.by_ref() {
        // `run`'s own flags; the cgroup goes into the spec.
        if a.starts_with("--log-uri=") {
            log_uri = a.clone();
        } else if let Some(cg) = a.strip_prefix("--cgroup=") {
            cgroup = cg.to_string();
        } else if a == image {
            break;
        } else {
            create.push(a.clone());
        }
    }
    create.push(image.into());
    create.extend(rest.cloned());
    let refs: Vec<&str> = create.iter().map(String::as_str).collect();
    let out = cd.ctr(&refs);
    assert!(
        out.status.success(),
        "ctr {create:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ch = containerd_client::connect(&cd.socket).await.unwrap();
        let mut client = ContainersClient::new(ch);
        fn with_ns<T>(ns: &str, r: T) -> Request<T> {
            let mut r = Request::new(r);
            r.metadata_mut()
                .insert("containerd-namespace", ns.parse().unwrap());
            r
        }
        let mut c = client
            .get(with_ns(
                &cd.namespace,
                GetContainerRequest { id: id.into() },
            ))
            .await
            .unwrap()
            .into_inner()
            .container
            .unwrap();
        let any = c.spec.as_mut().unwrap();
        let mut spec: Value = serde_json::from_slice(&any.value).unwrap();
        spec["linux"]["cgroupsPath"] = json!(cgroup);
        let nss = spec["linux"]["namespaces"]
            .as_array_mut()
            .expect("namespaces in the spec");
        assert!(!nss.iter().any(|n| n["type"] == "cgroup"));
        nss.push(json!({"type": "cgroup"}));
        any.value = serde_json::to_vec(&spec).unwrap();
        client
            .update(with_ns(
                &cd.namespace,
                UpdateContainerRequest {
                    container: Some(c),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["spec".into()],
                    }),
                },
            ))
            .await
            .unwrap();
    });
    vec![
        "tasks".into(),
        "start".into(),
        "-d".into(),
        log_uri,
        id.into(),
    ]
}

/// This machine's hostname.
pub fn nix_hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// A field of `/proc/<pid>/status`, trimmed; empty when absent.
pub fn status_field(pid: u32, field: &str) -> String {
    ProcStatus::read_or_empty(pid)
        .field(field)
        .unwrap_or_default()
        .to_string()
}
