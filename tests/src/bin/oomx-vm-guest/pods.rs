//! What the guest modes that run pods through containerd's CRI share: the environment, a CRI
//! node whose daemon posts Pod Events to a loopback stand-in, and the pods' cgroups.

use std::fs;

use tests::{cri::CriNode, cri::PodSpec, fake_apiserver::FakeApiServer};

use crate::race::{containerd_env, cri_node_files};

/// The environment of the tests' library in a guest that runs pods.
pub fn cri_env() {
    containerd_env();
    // overlayfs is a module in Debian's cloud kernels; the initramfs carries none.
    std::env::set_var("OOMX_SNAPSHOTTER", "native");
    std::env::set_var("OOMX_HOG_BIN", "/bin/oomx-hog");
}

/// containerd with its CRI plugin (the whole test under `limit_mb`), and the stand-in for the
/// API server the daemon it starts next will post Pod Events to (as on the host: no
/// Kubernetes API server runs in a guest).
pub fn node_with_events(limit_mb: u64) -> Result<(CriNode, FakeApiServer), String> {
    cri_node_files()?;
    let node = CriNode::start_within(limit_mb);
    let api = FakeApiServer::start();
    let kubeconfig = node.cd.observer_state().with_extension("kubeconfig");
    api.write_kubeconfig(&kubeconfig, "t")
        .map_err(|e| format!("{}: {e}", kubeconfig.display()))?;
    // Inherited by the daemon, spawned next; the trust store is a throwaway the xtask
    // packed (the client wants one, though the stand-in speaks plain HTTP).
    std::env::set_var("KUBECONFIG", &kubeconfig);
    std::env::set_var("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt");
    Ok((node, api))
}

/// A pod under `pod_limit_mb` whose container (under `limit_mb`, or only the pod's) runs
/// `script`.
pub fn spec(script: &str, pod_limit_mb: u64, limit_mb: Option<u64>) -> PodSpec {
    PodSpec {
        pod_limit_mb,
        limit_mb,
        script: script.into(),
        systemd_parent: false,
        shared_pid: false,
    }
}

/// The container's cgroup v2 directory, from its init's `/proc/<pid>/cgroup` (`0::/path`).
pub fn cgroup_dir(pid: u32) -> Result<String, String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(|e| format!("/proc/{pid}/cgroup: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| format!("/sys/fs/cgroup{}", p.trim()))
        .ok_or_else(|| format!("no cgroup v2 line in /proc/{pid}/cgroup: {text}"))
}
