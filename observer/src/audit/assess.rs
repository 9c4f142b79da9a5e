//! Unenforced memory limits: for every running container, compare the memory limit it
//! declared with the limit the kernel actually enforces on the cgroup its processes live in.
//!
//! The incident this exists for: gVisor pods on cgroup v2 with systemd, `runsc` without its
//! systemd driver. runsc took the systemd-form cgroupsPath literally and made the sandbox's
//! cgroup under `system.slice`, not under the pod slice holding the 256 MiB limit; no
//! ancestor limited it, runsc sized the sandbox at the host's 503 GiB, and one pod ate the
//! node without a single OOM kill.
//!
//! Pure where it can be: [`assess`] decides from what was observed, [`Auditor`] keeps the
//! per-container state (one event per state change, a clearing event when fixed).
//! IO sits at the edges: [`MemoryFs`] reads cgroupfs, [`observe`] reads `/proc` and asks
//! containerd for the task's pids.

use std::{
    collections::{HashMap, HashSet},
    fs, io,
    path::{Path, PathBuf},
    time::SystemTime,
};

use serde::Serialize;

use crate::{
    cgroups::CgroupLayout,
    containerd::{proc_memory_cgroup, Client, ContainerdError},
    event::{ContainerRef, SCHEMA},
    index::ContainerInfo,
};

/// A cgroup v1 limit at or above this is "no limit" (the kernel reports
/// `PAGE_COUNTER_MAX * PAGE_SIZE`, just under 2^63, for an unset limit).
pub const V1_UNLIMITED: u64 = 1 << 62;

/// Slack before an effective limit counts as above the declared one: the kernel rounds
/// limits to pages, and runtimes add small overheads.
pub fn tolerance(declared: u64) -> u64 {
    (1 << 20) + declared / 100
}

/// Event names.
pub mod events {
    /// The node is at risk: the declared limit is not enforced.
    pub const LIMIT_UNENFORCED: &str = "limit_unenforced";
    /// Informational: a gVisor sandbox sized above its effective limit.
    pub const SANDBOX_OVERSIZED: &str = "sandbox_oversized";
    /// A `limit_unenforced` container is enforced again.
    pub const LIMIT_ENFORCED: &str = "limit_enforced";
}

/// Reason codes.
pub mod reasons {
    /// No limit on the processes' cgroup or any ancestor.
    pub const NO_LIMIT: &str = "no_limit";
    /// The smallest limit up the processes' cgroup ancestry is above the declared one.
    pub const LIMIT_ABOVE_DECLARED: &str = "limit_above_declared";
    /// The processes run outside the cgroup their spec or their pod names.
    pub const OUTSIDE_EXPECTED_CGROUP: &str = "outside_expected_cgroup";
    /// A gVisor sandbox's `--total-memory` is above its effective limit.
    pub const TOTAL_MEMORY_ABOVE_LIMIT: &str = "total_memory_above_limit";
    /// The declared limit is enforced again.
    pub const ENFORCED: &str = "enforced";
}

/// Why an audit could not finish. None of these is a finding: an audit that cannot read
/// what it needs says nothing about the container.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The cgroup went away while it was read (the container stopped mid-audit).
    #[error("cgroup {0} is gone")]
    Gone(String),
    /// A control file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A control file held something that is not a limit.
    #[error("{path} holds {text:?}, not a limit")]
    Parse {
        /// The file.
        path: String,
        /// What it held.
        text: String,
    },
    /// No hierarchy has the memory controller.
    #[error("no cgroup hierarchy with the memory controller is mounted")]
    NoHierarchy,
    /// containerd failed.
    #[error(transparent)]
    Containerd(#[from] ContainerdError),
}

/// Parses a memory limit file: `memory.max` / `memory.swap.max` on v2 (`max` is none),
/// `memory.limit_in_bytes` / `memory.memsw.limit_in_bytes` on v1 (huge is none).
pub fn parse_limit(text: &str, v2: bool) -> Option<Option<u64>> {
    let t = text.trim();
    if v2 && t == "max" {
        return Some(None);
    }
    let v: u64 = t.parse().ok()?;
    Some(if !v2 && v >= V1_UNLIMITED {
        None
    } else {
        Some(v)
    })
}

/// The limit the kernel enforces on a cgroup: the smallest on it and its ancestors.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Effective {
    /// Bytes, or null when no cgroup up the ancestry has a limit.
    pub bytes: Option<u64>,
    /// The cgroup whose limit that is.
    pub cgroup: Option<String>,
    /// cgroup v2: the smallest `memory.swap.max` up the ancestry (null: none, or v1).
    pub swap_bytes: Option<u64>,
    /// cgroup v1: the smallest `memory.memsw.limit_in_bytes` (memory plus swap) up the
    /// ancestry (null: none, no swap accounting, or v2).
    pub memsw_bytes: Option<u64>,
}

/// The hierarchy with the memory controller, as files.
#[derive(Debug, Clone)]
pub struct MemoryFs {
    mount: PathBuf,
    root: String,
    v2: bool,
}

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// `/a/b/c` → `/a/b`; `/a` → `/`; `/` → none.
pub fn parent(path: &str) -> Option<&str> {
    if path == "/" || path.is_empty() {
        return None;
    }
    match path.rfind('/') {
        Some(0) => Some("/"),
        Some(i) => Some(&path[..i]),
        None => None,
    }
}

/// Whether `path` is `ancestor` or below it.
pub fn is_under(path: &str, ancestor: &str) -> bool {
    let a = ancestor.trim_end_matches('/');
    a.is_empty() || path == a || path.strip_prefix(a).is_some_and(|r| r.starts_with('/'))
}

impl MemoryFs {
    /// The memory hierarchy of this node's layout.
    pub fn from_layout(l: &CgroupLayout) -> Option<MemoryFs> {
        let h = l.memory()?;
        Some(MemoryFs::new(
            h.mount.clone(),
            h.root.clone(),
            l.memory_on_dfl(),
        ))
    }

    /// A hierarchy mounted at `mount` whose mount shows hierarchy path `root`.
    pub fn new(mount: PathBuf, root: String, v2: bool) -> MemoryFs {
        MemoryFs { mount, root, v2 }
    }

    /// Whether this is the unified (v2) hierarchy.
    pub fn is_v2(&self) -> bool {
        self.v2
    }

    /// The directory of a hierarchy path; none for paths outside the mount or with `..`.
    pub fn dir(&self, path: &str) -> Option<PathBuf> {
        if path.split('/').any(|c| c == "..") {
            return None;
        }
        let base = self.root.trim_end_matches('/');
        let rel = if base.is_empty() {
            path
        } else if path == base {
            ""
        } else {
            path.strip_prefix(base).filter(|r| r.starts_with('/'))?
        };
        let rel = rel.trim_start_matches('/');
        Some(if rel.is_empty() {
            self.mount.clone()
        } else {
            self.mount.join(rel)
        })
    }

    /// Reads a control file; `Ok(None)` when the cgroup exists but has no such file
    /// (the v2 root has no `memory.max`; v1 without swap accounting has no `memsw`).
    fn read(&self, path: &str, dir: &Path, file: &str) -> Result<Option<String>, AuditError> {
        let f = dir.join(file);
        match fs::read_to_string(&f) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if dir.is_dir() {
                    Ok(None)
                } else {
                    Err(AuditError::Gone(path.to_string()))
                }
            }
            // A cgroup removed while its file is open reads as ENODEV.
            Err(e) if e.raw_os_error() == Some(nix::libc::ENODEV) => {
                Err(AuditError::Gone(path.to_string()))
            }
            Err(e) => Err(AuditError::Read {
                path: f.display().to_string(),
                source: e,
            }),
        }
    }

    fn limit_file(&self, path: &str, dir: &Path, file: &str) -> Result<Option<u64>, AuditError> {
        match self.read(path, dir, file)? {
            None => Ok(None),
            Some(t) => parse_limit(&t, self.v2).ok_or_else(|| AuditError::Parse {
                path: dir.join(file).display().to_string(),
                text: t.trim().to_string(),
            }),
        }
    }

    fn memory_file(&self) -> &'static str {
        if self.v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        }
    }

    /// The cgroup's own memory limit (not its ancestors'); `Gone` if it does not exist.
    pub fn own_limit(&self, path: &str) -> Result<Option<u64>, AuditError> {
        let dir = self
            .dir(path)
            .ok_or_else(|| AuditError::Gone(path.into()))?;
        if !dir.is_dir() {
            return Err(AuditError::Gone(path.into()));
        }
        self.limit_file(path, &dir, self.memory_file())
    }

    /// The effective limit of a cgroup: the smallest on it and every ancestor that charges
    /// it (v1: up to the first ancestor with `memory.use_hierarchy` 0, on old kernels).
    pub fn effective(&self, path: &str) -> Result<Effective, AuditError> {
        let mut eff = Effective::default();
        let mut cur = Some(path);
        let mut first = true;
        while let Some(p) = cur {
            let dir = self.dir(p).ok_or_else(|| AuditError::Gone(p.into()))?;
            if !dir.is_dir() {
                return Err(AuditError::Gone(p.into()));
            }
            if !first && !self.v2 {
                if let Some(h) = self.read(p, &dir, "memory.use_hierarchy")? {
                    if h.trim() == "0" {
                        break;
                    }
                }
            }
            first = false;
            if let Some(l) = self.limit_file(p, &dir, self.memory_file())? {
                if eff.bytes.is_none_or(|b| l < b) {
                    eff.bytes = Some(l);
                    eff.cgroup = Some(p.to_string());
                }
            }
            if self.v2 {
                eff.swap_bytes =
                    min_opt(eff.swap_bytes, self.limit_file(p, &dir, "memory.swap.max")?);
            } else {
                eff.memsw_bytes = min_opt(
                    eff.memsw_bytes,
                    self.limit_file(p, &dir, "memory.memsw.limit_in_bytes")?,
                );
            }
            if self.dir(p).as_deref() == Some(self.mount.as_path()) {
                break;
            }
            cur = parent(p);
        }
        Ok(eff)
    }
}

/// What a container was promised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Declared {
    /// The limit the effective one is held to: for a container of a sandboxed runtime (the
    /// sandbox shares one host cgroup) its pod's limit when there is one; otherwise the
    /// smaller of its own and its pod's.
    pub bytes: u64,
    /// The OCI spec's `linux.resources.memory.limit`.
    pub container: Option<u64>,
    /// The limit on the pod's cgroup (the parent its cgroupsPath names).
    pub pod: Option<u64>,
    /// The pod's cgroup, when the container belongs to a pod.
    pub pod_cgroup: Option<String>,
}

/// A gVisor sandbox's host process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SandboxProcess {
    /// The host pid (the `runsc-sandbox` process, the task's pid).
    pub pid: u32,
    /// `--total-memory` from its command line, in bytes.
    pub total_memory: Option<u64>,
}

/// What was read about one running container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Host pids whose cgroups were read.
    pub pids: Vec<u32>,
    /// Each distinct cgroup holding them, with its effective limit.
    pub placed: Vec<(String, Effective)>,
    /// The limit on the pod's cgroup, when it exists and has one.
    pub pod_limit: Option<u64>,
    /// For gVisor, the sandbox process.
    pub sandbox: Option<SandboxProcess>,
}

/// The verdict on one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    /// What was promised; none when nothing was (then there is no finding).
    pub declared: Option<Declared>,
    /// The reported cgroup's effective limit.
    pub effective: Effective,
    /// The cgroup reported as placed (the first outside the expected one, else the one with
    /// the largest effective limit).
    pub placed_cgroup: String,
    /// Where the processes belong: the spec's cgroup, or for a container inside a gVisor or
    /// Kata sandbox, its pod's cgroup.
    pub expected_cgroup: Option<String>,
    /// `limit_unenforced` reasons, most serious first; empty when enforced.
    pub unenforced: Vec<&'static str>,
    /// Whether a gVisor sandbox's `--total-memory` is above the effective limit.
    pub oversized: bool,
    /// The sandbox process, for gVisor.
    pub sandbox: Option<SandboxProcess>,
    /// Host pids read.
    pub pids: Vec<u32>,
}

/// Whether the container belongs to a Kubernetes-shaped pod.
pub fn is_pod_member(c: &ContainerInfo) -> bool {
    c.container_type.is_some() || c.sandbox_id.is_some() || c.pod.is_some()
}

/// The pod's cgroup: the parent of the one the container's cgroupsPath names.
pub fn pod_cgroup(c: &ContainerInfo) -> Option<String> {
    if !is_pod_member(c) {
        return None;
    }
    parent(c.spec_cgroup.as_deref()?)
        .filter(|p| *p != "/")
        .map(str::to_string)
}

/// Whether a container runs inside a sandbox it does not own: its host processes are its
/// pod sandbox's, in the sandbox's cgroup.
fn inside_foreign_sandbox(c: &ContainerInfo) -> bool {
    c.sandboxed_runtime() && !c.is_sandbox() && c.sandbox_id.is_some()
}

/// Where the container's processes belong.
pub fn expected_cgroup(c: &ContainerInfo) -> Option<String> {
    if inside_foreign_sandbox(c) {
        return pod_cgroup(c);
    }
    c.spec_cgroup.clone()
}

/// Whether the runtime is gVisor (its sandbox carries `--total-memory`).
pub fn is_gvisor(c: &ContainerInfo) -> bool {
    let is = |s: &str| {
        let s = s.to_ascii_lowercase();
        s.contains("runsc") || s.contains("gvisor")
    };
    is(&c.runtime) || c.runtime_binary.as_deref().is_some_and(is)
}

/// `--total-memory` from a NUL-separated command line (`--total-memory=N` or `--total-memory N`).
pub fn parse_total_memory(cmdline: &[u8]) -> Option<u64> {
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    for (i, a) in args.iter().enumerate() {
        let a = std::str::from_utf8(a).ok()?;
        let a = a.strip_prefix("--").or_else(|| a.strip_prefix('-'));
        let Some(a) = a else { continue };
        if let Some(v) = a.strip_prefix("total-memory=") {
            return v.parse().ok();
        }
        if a == "total-memory" {
            return std::str::from_utf8(args.get(i + 1)?).ok()?.parse().ok();
        }
    }
    None
}

/// Decides, from what was observed, whether the container's declared limit is enforced.
pub fn assess(c: &ContainerInfo, o: &Observed) -> Assessment {
    let container = c.memory_limit.filter(|l| *l > 0).map(|l| l as u64);
    let pod_cg = pod_cgroup(c);
    let pod = pod_cg.as_ref().and(o.pod_limit);
    let bytes = if inside_foreign_sandbox(c) {
        pod.or(container)
    } else {
        min_opt(container, pod)
    };
    let declared = bytes.map(|bytes| Declared {
        bytes,
        container,
        pod,
        pod_cgroup: pod_cg.clone(),
    });
    let expected = expected_cgroup(c);
    let outside = |p: &str| expected.as_deref().is_some_and(|e| !is_under(p, e));
    // Report the worst placement: a cgroup outside the expected one, else the loosest limit.
    let worst = o
        .placed
        .iter()
        .max_by_key(|(p, e)| (outside(p), e.bytes.is_none(), e.bytes.unwrap_or(0)));
    let (placed_cgroup, effective) = worst
        .map(|(p, e)| (p.clone(), e.clone()))
        .unwrap_or_default();
    let mut unenforced = Vec::new();
    let mut oversized = false;
    if let Some(d) = &declared {
        match effective.bytes {
            None => unenforced.push(reasons::NO_LIMIT),
            Some(e) if e > d.bytes.saturating_add(tolerance(d.bytes)) => {
                unenforced.push(reasons::LIMIT_ABOVE_DECLARED)
            }
            Some(_) => {}
        }
        if o.placed.iter().any(|(p, _)| outside(p)) {
            unenforced.push(reasons::OUTSIDE_EXPECTED_CGROUP);
        }
        if let (Some(t), Some(e)) = (
            o.sandbox.as_ref().and_then(|s| s.total_memory),
            effective.bytes,
        ) {
            oversized = t > e.saturating_add(tolerance(e));
        }
    }
    Assessment {
        declared,
        effective,
        placed_cgroup,
        expected_cgroup: expected,
        unenforced,
        oversized,
        sandbox: o.sandbox.clone(),
        pids: o.pids.clone(),
    }
}

/// Reads what [`assess`] needs: the task's host pids (through containerd for runc-style
/// runtimes; the task's own pid, the sandbox process, for sandboxed ones, whose listed pids
/// are the sandbox's own), their memory cgroups, each one's effective limit, the pod's
/// limit and, for gVisor, the sandbox's `--total-memory`.
///
/// `Ok(None)`: the container has no running task (or its processes are gone).
pub async fn observe(
    client: Option<&Client>,
    c: &ContainerInfo,
    mem: &MemoryFs,
) -> Result<Option<Observed>, AuditError> {
    let Some(task_pid) = c.task_pid.filter(|p| *p > 0) else {
        return Ok(None);
    };
    let mut pids = vec![task_pid];
    if !c.sandboxed_runtime() {
        if let Some(client) = client {
            for p in client.list_pids(&c.namespace, &c.id).await? {
                if p > 0 && !pids.contains(&p) {
                    pids.push(p);
                }
            }
        }
    }
    let mut o = Observed::default();
    for pid in pids {
        // A process that exited in between is skipped: it holds no memory any more.
        let Some(cg) = proc_memory_cgroup(pid, mem.is_v2()) else {
            continue;
        };
        o.pids.push(pid);
        if !o.placed.iter().any(|(p, _)| *p == cg) {
            let eff = mem.effective(&cg)?;
            o.placed.push((cg, eff));
        }
    }
    if o.placed.is_empty() {
        return Ok(None);
    }
    if let Some(pod) = pod_cgroup(c) {
        o.pod_limit = match mem.own_limit(&pod) {
            Ok(l) => l,
            // No pod cgroup: nothing declared at pod level.
            Err(AuditError::Gone(_)) => None,
            Err(e) => return Err(e),
        };
    }
    if is_gvisor(c) {
        let cmdline = fs::read(format!("/proc/{task_pid}/cmdline")).unwrap_or_default();
        o.sandbox = Some(SandboxProcess {
            pid: task_pid,
            total_memory: parse_total_memory(&cmdline),
        });
    }
    Ok(Some(o))
}

/// The cgroup directories a container's verdict depends on: each cgroup holding its
/// processes and every ancestor, and its pod's cgroup (watched for limit changes).
pub fn limit_dirs(c: &ContainerInfo, o: &Observed, mem: &MemoryFs) -> Vec<PathBuf> {
    let mut paths: Vec<String> = Vec::new();
    for (p, _) in &o.placed {
        let mut cur = Some(p.as_str());
        while let Some(x) = cur {
            if !paths.iter().any(|y| y == x) {
                paths.push(x.to_string());
            }
            cur = parent(x);
        }
    }
    if let Some(pod) = pod_cgroup(c) {
        if !paths.contains(&pod) {
            paths.push(pod);
        }
    }
    paths.iter().filter_map(|p| mem.dir(p)).collect()
}

/// One finding (or its clearing), as a JSON line on the event stream.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FindingEvent {
    /// Always [`SCHEMA`].
    pub schema: u32,
    /// Shared with the kill events: gap-free per daemon run.
    pub seq: u64,
    /// `limit_unenforced`, `sandbox_oversized` or `limit_enforced`.
    pub event: &'static str,
    /// When the audit decided, RFC 3339.
    pub time: String,
    /// The container.
    pub container: ContainerRef,
    /// What it was promised.
    pub declared: Declared,
    /// What the kernel enforces on the cgroup it is placed in.
    pub effective: Effective,
    /// The cgroup its processes are in.
    pub placed_cgroup: String,
    /// The cgroup they belong in, when its cgroupsPath names one.
    pub expected_cgroup: Option<String>,
    /// The main reason code.
    pub reason: &'static str,
    /// Every reason code that applies.
    pub reasons: Vec<&'static str>,
    /// For gVisor: the sandbox process and its `--total-memory`.
    pub sandbox: Option<SandboxProcess>,
    /// The host pids that were looked at.
    pub pids: Vec<u32>,
}

impl FindingEvent {
    /// Builds the event for an assessment (seq is filled by the writer).
    pub fn new(
        event: &'static str,
        c: &ContainerInfo,
        a: &Assessment,
        declared: Declared,
    ) -> FindingEvent {
        let reasons: Vec<&'static str> = match event {
            events::LIMIT_UNENFORCED => a.unenforced.clone(),
            events::SANDBOX_OVERSIZED => vec![reasons::TOTAL_MEMORY_ABOVE_LIMIT],
            _ => vec![reasons::ENFORCED],
        };
        FindingEvent {
            schema: SCHEMA,
            seq: 0,
            event,
            time: humantime::format_rfc3339_nanos(SystemTime::now()).to_string(),
            container: ContainerRef::from(c),
            declared,
            effective: a.effective.clone(),
            placed_cgroup: a.placed_cgroup.clone(),
            expected_cgroup: a.expected_cgroup.clone(),
            reason: reasons.first().copied().unwrap_or(reasons::ENFORCED),
            reasons,
            sandbox: a.sandbox.clone(),
            pids: a.pids.clone(),
        }
    }

    /// The log line for it.
    pub fn log(&self) {
        let c = &self.container;
        let eff = self
            .effective
            .bytes
            .map(mib)
            .unwrap_or_else(|| "none".into());
        let exp = self.expected_cgroup.as_deref().unwrap_or("-");
        match self.event {
            events::LIMIT_UNENFORCED => tracing::warn!(
                container = %c.id, namespace = %c.namespace, reason = self.reason,
                declared = %mib(self.declared.bytes), effective = %eff,
                placed = %self.placed_cgroup, expected = %exp,
                "memory limit not enforced: this container can eat the node"
            ),
            events::SANDBOX_OVERSIZED => tracing::info!(
                container = %c.id, namespace = %c.namespace,
                total_memory = %self.sandbox.as_ref().and_then(|s| s.total_memory).map(mib).unwrap_or_default(),
                effective = %eff, placed = %self.placed_cgroup,
                "gVisor sandbox sized above its effective limit: the host kernel, not the sandbox, will kill it"
            ),
            _ => tracing::info!(
                container = %c.id, namespace = %c.namespace,
                declared = %mib(self.declared.bytes), effective = %eff,
                placed = %self.placed_cgroup, "memory limit enforced again"
            ),
        }
    }
}

/// Bytes as MiB for logs and the table.
pub fn mib(b: u64) -> String {
    if b.is_multiple_of(1 << 20) {
        format!("{}MiB", b >> 20)
    } else {
        format!("{:.1}MiB", b as f64 / (1u64 << 20) as f64)
    }
}

/// What was last reported for a container.
#[derive(Debug, Default)]
struct Reported {
    /// Signature of the open `limit_unenforced`.
    unenforced: Option<String>,
    /// Signature of the open `sandbox_oversized`.
    oversized: Option<String>,
    /// Pids of its last audit (for re-audit on migration).
    pids: Vec<u32>,
    /// Where its processes belong (a process moving in there re-audits it).
    expected: Option<String>,
}

type Key = (String, String);

/// The audit's memory: one event per container and state change.
#[derive(Debug, Default)]
pub struct Auditor {
    reported: HashMap<Key, Reported>,
}

fn signature(a: &Assessment, what: &str) -> String {
    serde_json::json!({
        "what": what,
        "reasons": a.unenforced,
        "declared": a.declared,
        "effective": a.effective,
        "placed": a.placed_cgroup,
        "expected": a.expected_cgroup,
        "sandbox": a.sandbox,
    })
    .to_string()
}

impl Auditor {
    /// Records an assessment; returns the events it warrants (none when nothing changed).
    pub fn update(&mut self, c: &ContainerInfo, a: &Assessment) -> Vec<FindingEvent> {
        let r = self.reported.entry(c.key()).or_default();
        r.pids = a.pids.clone();
        r.expected = a.expected_cgroup.clone();
        let mut out = Vec::new();
        let Some(declared) = a.declared.clone() else {
            // Nothing promised: nothing to report, and nothing open any more.
            r.unenforced = None;
            r.oversized = None;
            return out;
        };
        if a.unenforced.is_empty() {
            if r.unenforced.take().is_some() {
                out.push(FindingEvent::new(
                    events::LIMIT_ENFORCED,
                    c,
                    a,
                    declared.clone(),
                ));
            }
        } else {
            let sig = signature(a, events::LIMIT_UNENFORCED);
            if r.unenforced.as_deref() != Some(sig.as_str()) {
                r.unenforced = Some(sig);
                out.push(FindingEvent::new(
                    events::LIMIT_UNENFORCED,
                    c,
                    a,
                    declared.clone(),
                ));
            }
        }
        if a.oversized {
            let sig = signature(a, events::SANDBOX_OVERSIZED);
            if r.oversized.as_deref() != Some(sig.as_str()) {
                r.oversized = Some(sig);
                out.push(FindingEvent::new(events::SANDBOX_OVERSIZED, c, a, declared));
            }
        } else {
            r.oversized = None;
        }
        out
    }

    /// Forgets a container that stopped (its findings end with it, without an event).
    pub fn forget(&mut self, namespace: &str, id: &str) {
        self.reported
            .remove(&(namespace.to_string(), id.to_string()));
    }

    /// Containers audited so far.
    pub fn keys(&self) -> Vec<Key> {
        self.reported.keys().cloned().collect()
    }

    /// Containers to re-audit when `pid` moved into cgroup `dst`: those whose last audit saw
    /// `pid` or one of its ancestors (`ancestry`, nearest first), and those that expect
    /// their processes in `dst` or above it.
    pub fn affected_by_move(&self, ancestry: &[u32], dst: Option<&str>) -> Vec<Key> {
        let mut out: Vec<Key> = Vec::new();
        let wanted: HashSet<u32> = ancestry.iter().copied().collect();
        for (k, r) in &self.reported {
            let by_pid = r.pids.iter().any(|p| wanted.contains(p));
            let by_dst = match (dst, r.expected.as_deref()) {
                (Some(d), Some(e)) => is_under(d, e),
                _ => false,
            };
            if by_pid || by_dst {
                out.push(k.clone());
            }
        }
        out.sort();
        out
    }
}

/// `pid` and its ancestors (parent, grandparent, …), from `/proc/<pid>/stat`: a process
/// forked after the last audit is found through the parent that was seen.
pub fn ancestry(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut cur = pid;
    for _ in 0..32 {
        let Ok(stat) = fs::read_to_string(format!("/proc/{cur}/stat")) else {
            break;
        };
        // The comm field is in parentheses and may hold spaces: read after the last ')'.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            break;
        };
        let Some(ppid) = rest
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<u32>().ok())
        else {
            break;
        };
        if ppid <= 1 || out.contains(&ppid) {
            break;
        }
        out.push(ppid);
        cur = ppid;
    }
    out
}

/// One row of `oom-observer audit`.
#[derive(Debug, Clone)]
pub struct Row {
    /// The container.
    pub container: ContainerInfo,
    /// Its verdict; none when it has no running task.
    pub assessment: Option<Assessment>,
    /// Why it could not be audited, if it could not.
    pub error: Option<String>,
}

/// The one-shot audit behind `oom-observer audit`: every container (of one namespace, or
/// all) with a running task.
pub async fn one_shot(socket: &Path, namespace: Option<&str>) -> Result<Vec<Row>, AuditError> {
    let layout = CgroupLayout::discover().map_err(|e| AuditError::Read {
        path: "/proc/self/mountinfo".into(),
        source: e,
    })?;
    let mem = MemoryFs::from_layout(&layout).ok_or(AuditError::NoHierarchy)?;
    let client = Client::connect(socket).await?;
    let mut all = client.snapshot(layout.memory_on_dfl()).await?;
    all.retain(|c| namespace.is_none_or(|n| c.namespace == n));
    all.sort_by_key(|c| c.key());
    let mut rows = Vec::new();
    for c in all {
        let (assessment, error) = match observe(Some(&client), &c, &mem).await {
            Ok(Some(o)) => (Some(assess(&c, &o)), None),
            Ok(None) => (None, None),
            Err(AuditError::Gone(_)) => (None, None),
            Err(e) => (None, Some(e.to_string())),
        };
        rows.push(Row {
            container: c,
            assessment,
            error,
        });
    }
    Ok(rows)
}

/// The table for people.
pub fn table(rows: &[Row]) -> String {
    let mut lines = vec![[
        "NAMESPACE".to_string(),
        "CONTAINER".into(),
        "RUNTIME".into(),
        "DECLARED".into(),
        "EFFECTIVE".into(),
        "PLACED".into(),
        "EXPECTED".into(),
        "STATUS".into(),
    ]];
    for r in rows {
        let c = &r.container;
        let runtime = c
            .runtime_binary
            .as_deref()
            .and_then(|b| b.rsplit('/').next())
            .unwrap_or(&c.runtime)
            .to_string();
        let (declared, effective, placed, expected, status) = match (&r.assessment, &r.error) {
            (_, Some(e)) => (
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                format!("error: {e}"),
            ),
            (None, None) => (
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "not running".into(),
            ),
            (Some(a), None) => {
                let mut status = match (&a.declared, a.unenforced.first()) {
                    (None, _) => "no limit declared".to_string(),
                    (Some(_), Some(reason)) => format!("{} ({reason})", events::LIMIT_UNENFORCED),
                    (Some(_), None) => "ok".to_string(),
                };
                if a.oversized {
                    status.push_str(", ");
                    status.push_str(events::SANDBOX_OVERSIZED);
                }
                (
                    a.declared
                        .as_ref()
                        .map(|d| mib(d.bytes))
                        .unwrap_or_else(|| "-".into()),
                    a.effective.bytes.map(mib).unwrap_or_else(|| "none".into()),
                    a.placed_cgroup.clone(),
                    a.expected_cgroup.clone().unwrap_or_else(|| "-".into()),
                    status,
                )
            }
        };
        lines.push([
            c.namespace.clone(),
            c.id.clone(),
            runtime,
            declared,
            effective,
            placed,
            expected,
            status,
        ]);
    }
    let mut widths = [0usize; 8];
    for l in &lines {
        for (i, f) in l.iter().enumerate() {
            widths[i] = widths[i].max(f.len());
        }
    }
    let mut out = String::new();
    for l in &lines {
        let mut line = String::new();
        for (i, f) in l.iter().enumerate() {
            if i == 7 {
                line.push_str(f);
            } else {
                line.push_str(&format!("{f:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(v2: bool, levels: &[(&str, &str)]) -> (tempdir::Dir, MemoryFs) {
        let d = tempdir::Dir::new();
        let file = if v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        for (path, limit) in levels {
            let dir = d.path.join(path.trim_start_matches('/'));
            fs::create_dir_all(&dir).unwrap();
            if !limit.is_empty() {
                fs::write(dir.join(file), format!("{limit}\n")).unwrap();
            }
        }
        let m = MemoryFs::new(d.path.clone(), "/".into(), v2);
        (d, m)
    }

    /// A scratch directory removed on drop (standing in for a cgroupfs mount: same files).
    mod tempdir {
        use std::path::PathBuf;
        pub struct Dir {
            pub path: PathBuf,
        }
        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicUsize, Ordering};
                static N: AtomicUsize = AtomicUsize::new(0);
                let path = std::env::temp_dir().join(format!(
                    "oomx-audit-unit-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::SeqCst)
                ));
                let _ = std::fs::remove_dir_all(&path);
                std::fs::create_dir_all(&path).unwrap();
                Dir { path }
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.path);
            }
        }
    }

    #[test]
    fn limits_parse_on_v1_and_v2() {
        assert_eq!(parse_limit("max\n", true), Some(None));
        assert_eq!(parse_limit("67108864\n", true), Some(Some(64 << 20)));
        assert_eq!(parse_limit("9223372036854771712\n", false), Some(None));
        assert_eq!(parse_limit("67108864", false), Some(Some(64 << 20)));
        assert_eq!(parse_limit("max", false), None, "v1 never says max");
        assert_eq!(parse_limit("garbage", true), None);
    }

    #[test]
    fn v2_effective_is_the_smallest_up_the_ancestry() {
        // The v2 root has no memory.max; "max" means none at that level.
        let (_d, m) = tree(
            true,
            &[
                ("/", ""),
                ("/kubepods.slice", "max"),
                ("/kubepods.slice/pod.slice", "268435456"),
                ("/kubepods.slice/pod.slice/sb.scope", "max"),
                ("/system.slice", "max"),
                ("/system.slice/sb", "max"),
            ],
        );
        let e = m.effective("/kubepods.slice/pod.slice/sb.scope").unwrap();
        assert_eq!(e.bytes, Some(256 << 20));
        assert_eq!(e.cgroup.as_deref(), Some("/kubepods.slice/pod.slice"));
        let e = m.effective("/system.slice/sb").unwrap();
        assert_eq!(e.bytes, None, "no limit anywhere up system.slice");
        assert_eq!(
            m.own_limit("/kubepods.slice/pod.slice").unwrap(),
            Some(256 << 20)
        );
    }

    #[test]
    fn v2_swap_is_read_where_present() {
        let (d, m) = tree(true, &[("/a", "max"), ("/a/b", "1048576")]);
        fs::write(d.path.join("a/memory.swap.max"), "0\n").unwrap();
        fs::write(d.path.join("a/b/memory.swap.max"), "max\n").unwrap();
        let e = m.effective("/a/b").unwrap();
        assert_eq!(e.swap_bytes, Some(0));
        assert_eq!(e.memsw_bytes, None);
    }

    #[test]
    fn v1_effective_stops_at_use_hierarchy_0() {
        let (d, m) = tree(
            false,
            &[
                ("/", "9223372036854771712"),
                ("/a", "1048576"),
                ("/a/b", "9223372036854771712"),
            ],
        );
        assert_eq!(m.effective("/a/b").unwrap().bytes, Some(1 << 20));
        fs::write(d.path.join("a/memory.use_hierarchy"), "0\n").unwrap();
        assert_eq!(m.effective("/a/b").unwrap().bytes, None);
    }

    #[test]
    fn a_cgroup_that_is_gone_is_an_error_not_a_finding() {
        let (_d, m) = tree(false, &[("/a", "1048576")]);
        assert!(matches!(
            m.effective("/a/vanished"),
            Err(AuditError::Gone(_))
        ));
        assert!(matches!(m.own_limit("/nope"), Err(AuditError::Gone(_))));
        assert!(m.dir("/a/../etc").is_none());
    }

    #[test]
    fn namespaced_mount_roots_map_to_directories() {
        let m = MemoryFs::new("/mnt/cg".into(), "/kubepods".into(), true);
        assert_eq!(m.dir("/kubepods/x").unwrap(), PathBuf::from("/mnt/cg/x"));
        assert_eq!(m.dir("/kubepods").unwrap(), PathBuf::from("/mnt/cg"));
        assert!(m.dir("/other").is_none());
        assert!(m.dir("/kubepodsX").is_none());
    }

    #[test]
    fn total_memory_from_runsc_command_lines() {
        let c = b"runsc-sandbox\0--root=/r\0boot\0--total-memory=536870912\0--cpu-num\x002\0id\0";
        assert_eq!(parse_total_memory(c), Some(512 << 20));
        let c = b"runsc\x00boot\x00--total-memory\x001024\x00";
        assert_eq!(parse_total_memory(c), Some(1024));
        assert_eq!(parse_total_memory(b"sleep\x00100\x00"), None);
    }

    fn pod_ctr(id: &str, kind: &str, path: &str, runsc: bool) -> ContainerInfo {
        let mut c = ContainerInfo {
            namespace: "k8s.io".into(),
            id: id.into(),
            runtime: "io.containerd.runc.v2".into(),
            container_type: Some(kind.into()),
            sandbox_id: (kind == "container").then(|| "sb".to_string()),
            cgroups_path: Some(path.into()),
            spec_cgroup: crate::index::cgroup_from_spec_path(path),
            task_pid: Some(100),
            ..Default::default()
        };
        if runsc {
            c.runtime_binary = Some("/usr/bin/runsc".into());
        }
        c
    }

    fn placed(p: &str, bytes: Option<u64>) -> (String, Effective) {
        (
            p.into(),
            Effective {
                bytes,
                cgroup: bytes.map(|_| p.to_string()),
                ..Default::default()
            },
        )
    }

    const POD: &str = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice";

    #[test]
    fn the_incident_gvisor_sandbox_under_system_slice() {
        let app = pod_ctr(
            "app",
            "container",
            "kubepods-burstable-pod1.slice:cri-containerd:app",
            true,
        );
        assert_eq!(pod_cgroup(&app).as_deref(), Some(POD));
        assert_eq!(expected_cgroup(&app).as_deref(), Some(POD));
        let o = Observed {
            pids: vec![100],
            placed: vec![placed(
                "/system.slice/kubepods-burstable-pod1.slice:cri-containerd:sb",
                None,
            )],
            pod_limit: Some(256 << 20),
            sandbox: Some(SandboxProcess {
                pid: 100,
                total_memory: Some(503 << 30),
            }),
        };
        let a = assess(&app, &o);
        assert_eq!(a.declared.as_ref().unwrap().bytes, 256 << 20);
        assert_eq!(
            a.unenforced,
            vec![reasons::NO_LIMIT, reasons::OUTSIDE_EXPECTED_CGROUP]
        );
        assert!(!a.oversized, "no effective limit to be above");
    }

    #[test]
    fn gvisor_sandbox_in_its_pod_is_enforced_but_maybe_oversized() {
        let sb = pod_ctr(
            "sb",
            "sandbox",
            "kubepods-burstable-pod1.slice:cri-containerd:sb",
            true,
        );
        let app = pod_ctr(
            "app",
            "container",
            "kubepods-burstable-pod1.slice:cri-containerd:app",
            true,
        );
        let o = Observed {
            pids: vec![100],
            placed: vec![placed(
                &format!("{POD}/cri-containerd-sb.scope"),
                Some(256 << 20),
            )],
            pod_limit: Some(256 << 20),
            sandbox: Some(SandboxProcess {
                pid: 100,
                total_memory: Some(24 << 30),
            }),
        };
        for c in [&sb, &app] {
            let a = assess(c, &o);
            assert!(a.unenforced.is_empty(), "{}: {:?}", c.id, a.unenforced);
            assert!(a.oversized, "old runsc sizes at the host's memory");
        }
    }

    #[test]
    fn runc_container_limits_compare_with_tolerance() {
        let mut c = pod_ctr("app", "container", "/kubepods/pod1/app", false);
        c.memory_limit = Some(64 << 20);
        let at = |bytes| Observed {
            pids: vec![100, 101],
            placed: vec![placed("/kubepods/pod1/app", bytes)],
            pod_limit: Some(128 << 20),
            sandbox: None,
        };
        let a = assess(&c, &at(Some((64 << 20) + 4096)));
        assert!(a.unenforced.is_empty(), "page rounding is tolerated");
        assert_eq!(a.declared.as_ref().unwrap().container, Some(64 << 20));
        assert_eq!(a.declared.as_ref().unwrap().pod, Some(128 << 20));
        let a = assess(&c, &at(Some(128 << 20)));
        assert_eq!(a.unenforced, vec![reasons::LIMIT_ABOVE_DECLARED]);
        let a = assess(&c, &at(None));
        assert_eq!(a.unenforced, vec![reasons::NO_LIMIT]);
        // A process in a sub-cgroup of its own cgroup is where it belongs.
        let mut o = at(Some(64 << 20));
        o.placed
            .push(placed("/kubepods/pod1/app/sub", Some(64 << 20)));
        assert!(assess(&c, &o).unenforced.is_empty());
        // One process outside is enough.
        o.placed.push(placed("/elsewhere", Some(64 << 20)));
        let a = assess(&c, &o);
        assert_eq!(a.unenforced, vec![reasons::OUTSIDE_EXPECTED_CGROUP]);
        assert_eq!(a.placed_cgroup, "/elsewhere");
    }

    #[test]
    fn nothing_declared_nothing_found() {
        let c = ContainerInfo {
            namespace: "default".into(),
            id: "plain".into(),
            spec_cgroup: Some("/default/plain".into()),
            task_pid: Some(5),
            ..Default::default()
        };
        let o = Observed {
            pids: vec![5],
            placed: vec![placed("/elsewhere", None)],
            ..Default::default()
        };
        let a = assess(&c, &o);
        assert!(a.declared.is_none());
        assert!(a.unenforced.is_empty() && !a.oversized);
        let mut au = Auditor::default();
        assert!(au.update(&c, &a).is_empty());
    }

    #[test]
    fn one_event_per_state_change_and_a_clearing_event() {
        let mut c = pod_ctr("app", "container", "/kubepods/pod1/app", false);
        c.memory_limit = Some(64 << 20);
        let mut o = Observed {
            pids: vec![100],
            placed: vec![placed("/system/app", None)],
            pod_limit: None,
            sandbox: None,
        };
        let mut au = Auditor::default();
        let ev = au.update(&c, &assess(&c, &o));
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].event, events::LIMIT_UNENFORCED);
        assert_eq!(ev[0].reason, reasons::NO_LIMIT);
        assert_eq!(ev[0].declared.bytes, 64 << 20);
        assert_eq!(ev[0].placed_cgroup, "/system/app");
        assert_eq!(ev[0].expected_cgroup.as_deref(), Some("/kubepods/pod1/app"));
        assert!(
            au.update(&c, &assess(&c, &o)).is_empty(),
            "same state: silent"
        );
        assert_eq!(
            au.affected_by_move(&[7, 100], None),
            vec![("k8s.io".to_string(), "app".to_string())]
        );
        assert_eq!(
            au.affected_by_move(&[7], Some("/kubepods/pod1/app")),
            vec![("k8s.io".to_string(), "app".to_string())]
        );
        assert!(au.affected_by_move(&[7], Some("/other")).is_empty());
        o.placed = vec![placed("/kubepods/pod1/app", Some(64 << 20))];
        let ev = au.update(&c, &assess(&c, &o));
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].event, events::LIMIT_ENFORCED);
        assert!(au.update(&c, &assess(&c, &o)).is_empty());
        let v = serde_json::to_value(&ev[0]).unwrap();
        for k in [
            "schema",
            "seq",
            "event",
            "time",
            "container",
            "declared",
            "effective",
            "placed_cgroup",
            "expected_cgroup",
            "reason",
            "reasons",
            "sandbox",
        ] {
            assert!(v.get(k).is_some(), "missing {k}: {v}");
        }
    }

    #[test]
    fn real_scratch_cgroup_removed_mid_audit_is_gone() {
        // Real cgroupfs, where the machine has a v1 memory hierarchy and we are root.
        let root = Path::new("/sys/fs/cgroup/memory");
        if !root.join("memory.limit_in_bytes").exists() || !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: no writable cgroup v1 memory hierarchy");
            return;
        }
        let name = format!("oomx-{}-unit-audit", std::process::id());
        let dir = root.join(&name);
        let _ = fs::remove_dir(&dir);
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("memory.limit_in_bytes"), (32u64 << 20).to_string()).unwrap();
        let m = MemoryFs::new(root.into(), "/".into(), false);
        let path = format!("/{name}");
        let got = m.effective(&path);
        fs::remove_dir(&dir).unwrap();
        let e = got.unwrap();
        assert_eq!(e.bytes, Some(32 << 20));
        assert_eq!(e.cgroup.as_deref(), Some(path.as_str()));
        assert!(matches!(m.effective(&path), Err(AuditError::Gone(_))));
    }
}
