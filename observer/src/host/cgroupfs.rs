//! The node's cgroup mounts: which hierarchy holds the memory controller, and where it is
//! mounted (from `/proc/self/mountinfo` and `/proc/cgroups`).

use std::{
    fs,
    path::{Path, PathBuf},
};

use super::cgroup_path;

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// Kernel hierarchy id (`/proc/cgroups`); 0 for the unified (v2) hierarchy.
    pub id: u32,
    /// Where it is mounted.
    pub mount: PathBuf,
    /// The hierarchy path at the mount point (not `/` inside a cgroup namespace).
    pub root: String,
}

impl Hierarchy {
    /// The directory of a hierarchy path under this mount (see [`cgroup_path::to_dir`]).
    pub fn dir(&self, path: &str) -> Option<PathBuf> {
        cgroup_path::to_dir(&self.mount, &self.root, path)
    }

    /// The hierarchy path of a directory under this mount.
    pub fn path_of(&self, dir: &Path) -> Option<String> {
        cgroup_path::from_dir(&self.mount, &self.root, dir)
    }
}

/// Which hierarchies exist and which one has the memory controller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupMounts {
    /// The unified (v2) hierarchy, if mounted.
    pub unified: Option<Hierarchy>,
    /// The cgroup v1 hierarchy with the memory controller, if any.
    pub memory_v1: Option<Hierarchy>,
    /// Whether `/proc/cgroups` lists the memory controller as enabled.
    pub memory_enabled: bool,
}

impl CgroupMounts {
    /// Reads `/proc/self/mountinfo` and `/proc/cgroups`; inside a cgroup namespace, names the
    /// hierarchies from the real root (see [`namespace_root`]).
    pub fn discover() -> std::io::Result<Self> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
        let proc_cgroups = fs::read_to_string("/proc/cgroups").unwrap_or_default();
        let mut layout = Self::from_texts(&mountinfo, &proc_cgroups);
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let memory_v1 = layout.memory_v1.is_some();
        for (h, v2) in [(&mut layout.memory_v1, false), (&mut layout.unified, true)] {
            let Some(h) = h.as_mut() else { continue };
            if !h.root.split('/').any(|c| c == "..") {
                continue;
            }
            match namespace_root(h, &own, v2, std::process::id()) {
                Some(ns) => {
                    tracing::info!(
                        mount = %h.mount.display(),
                        namespace_root = %ns,
                        "in a cgroup namespace: cgroups are named from the real root"
                    );
                    h.root = "/".into();
                    // /proc/<pid>/cgroup is read for the memory hierarchy only.
                    if v2 != memory_v1 {
                        let _ = NAMESPACE_ROOT.set(ns);
                    }
                }
                None => tracing::warn!(
                    mount = %h.mount.display(),
                    root = %h.root,
                    "in a cgroup namespace whose root could not be placed: cgroup paths are \
                     relative to it (mount the node's whole cgroup tree at this mount point)"
                ),
            }
        }
        Ok(layout)
    }

    /// Builds the layout from the texts of `/proc/self/mountinfo` and `/proc/cgroups`.
    pub fn from_texts(mountinfo: &str, proc_cgroups: &str) -> Self {
        let (memory_hier, memory_enabled) = parse_proc_cgroups(proc_cgroups);
        let mut layout = CgroupMounts {
            memory_enabled,
            ..Default::default()
        };
        for m in mountinfo.lines().filter_map(parse_mountinfo_line) {
            match m.fstype.as_str() {
                "cgroup2" if layout.unified.is_none() => {
                    layout.unified = Some(Hierarchy {
                        id: 0,
                        mount: m.mount_point.into(),
                        root: m.root,
                    })
                }
                "cgroup"
                    if layout.memory_v1.is_none()
                        && m.super_options.split(',').any(|o| o == "memory") =>
                {
                    layout.memory_v1 = Some(Hierarchy {
                        id: memory_hier.unwrap_or(u32::MAX),
                        mount: m.mount_point.into(),
                        root: m.root,
                    })
                }
                _ => {}
            }
        }
        layout
    }

    /// Whether the memory controller is on the unified hierarchy (pure cgroup v2).
    pub fn memory_on_dfl(&self) -> bool {
        self.memory_v1.is_none()
    }

    /// The hierarchy that holds the memory controller.
    pub fn memory(&self) -> Option<&Hierarchy> {
        self.memory_v1.as_ref().or(self.unified.as_ref())
    }

    /// Every mounted hierarchy this daemon reads (the v1 memory one, the unified one).
    pub fn hierarchies(&self) -> impl Iterator<Item = &Hierarchy> {
        [self.memory_v1.as_ref(), self.unified.as_ref()]
            .into_iter()
            .flatten()
    }

    /// A one-word description for `check` and the start-up log.
    pub fn describe(&self) -> String {
        match (&self.memory_v1, &self.unified) {
            (Some(m), Some(u)) => format!(
                "hybrid: memory on v1 at {}, unified at {}",
                m.mount.display(),
                u.mount.display()
            ),
            (Some(m), None) => format!("v1: memory at {}", m.mount.display()),
            (None, Some(u)) => format!("v2: unified at {}", u.mount.display()),
            (None, None) => "none mounted".into(),
        }
    }
}

struct MountInfo {
    root: String,
    mount_point: String,
    fstype: String,
    super_options: String,
}

/// One line of `/proc/self/mountinfo`:
/// `id parent maj:min root mount-point options [optional fields] - fstype source super-options`.
fn parse_mountinfo_line(line: &str) -> Option<MountInfo> {
    let (left, right) = line.split_once(" - ")?;
    let l: Vec<&str> = left.split(' ').collect();
    let r: Vec<&str> = right.split(' ').collect();
    if l.len() < 5 || r.len() < 3 {
        return None;
    }
    Some(MountInfo {
        root: unescape_mountinfo(l[3]),
        mount_point: unescape_mountinfo(l[4]),
        fstype: r[0].to_string(),
        super_options: r[2].to_string(),
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `/proc/cgroups`: `#subsys_name hierarchy num_cgroups enabled`. Returns the memory
/// controller's hierarchy id and whether it is enabled.
fn parse_proc_cgroups(text: &str) -> (Option<u32>, bool) {
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 4 && f[0] == "memory" {
            return (f[1].parse().ok(), f[3] == "1");
        }
    }
    (None, false)
}

/// The root of this process's cgroup namespace in the memory hierarchy, named from the real
/// root (`/kubepods/burstable/pod…/<id>`); unset outside a namespace.
static NAMESPACE_ROOT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Inside a cgroup namespace (on cgroup v2 the CRI gives every unprivileged container one),
/// mountinfo and `/proc/<pid>/cgroup` show cgroups relative to the namespace's root
/// (`/../../kubepods/…`), while the kernel's records name them from the real root. When the
/// hierarchy mounted at `h.mount` is the node's whole tree (its root shows as `..` only, and
/// the mount point is a hierarchy's root), this finds the namespace's root from the real one:
/// the directory below the mount whose `cgroup.procs` lists `pid`, less the process's own
/// path in `proc_self_cgroup`. `v2`: `h` is the unified hierarchy.
pub fn namespace_root(h: &Hierarchy, proc_self_cgroup: &str, v2: bool, pid: u32) -> Option<String> {
    let ups = h.root.split('/').filter(|c| !c.is_empty()).count();
    if ups == 0 || h.root.split('/').any(|c| !c.is_empty() && c != "..") {
        return None;
    }
    // Only a hierarchy's root has these: the mount is the whole tree, not a subtree.
    let is_root = if v2 {
        !h.mount.join("cgroup.type").exists() && h.mount.join("cgroup.procs").exists()
    } else {
        h.mount.join("release_agent").exists()
    };
    if !is_root {
        return None;
    }
    let own = cgroup_path::memory_cgroup_of(proc_self_cgroup, v2)?;
    let own: Vec<&str> = own.split('/').filter(|c| !c.is_empty()).collect();
    if own.contains(&"..") {
        return None;
    }
    // The process's cgroup is `ups` levels below the mount's root plus its own depth.
    let depth = ups + own.len();
    let pid = pid.to_string();
    let mut level = vec![h.mount.clone()];
    for _ in 0..depth {
        level = level
            .iter()
            .filter_map(|d| fs::read_dir(d).ok())
            .flat_map(|rd| rd.flatten())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
    }
    let found = level.into_iter().find(|d| {
        fs::read_to_string(d.join("cgroup.procs")).is_ok_and(|t| t.lines().any(|l| l.trim() == pid))
    })?;
    let rel = found
        .strip_prefix(&h.mount)
        .ok()?
        .to_string_lossy()
        .into_owned();
    let comps: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    if !comps.ends_with(&own) {
        return None;
    }
    Some(format!("/{}", comps[..comps.len() - own.len()].join("/")))
}

/// A memory-hierarchy path as `/proc/<pid>/cgroup` shows it, named from the real root: the
/// same inside no namespace; inside one, joined to the namespace's root (`..` resolved).
pub fn from_namespace(path: &str) -> String {
    match NAMESPACE_ROOT.get() {
        Some(root) => cgroup_path::join_resolved(root, path),
        None => path.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::cgroup_path::join_resolved;

    const HYBRID: &str = "\
25 1 0:23 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
30 25 0:27 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory
31 25 0:28 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
35 25 0:32 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const PROC_CGROUPS: &str = "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t1\t1\t1\nmemory\t4\t70\t1\npids\t8\t1\t1\n";

    #[test]
    fn hybrid_host_has_memory_on_v1() {
        let l = CgroupMounts::from_texts(HYBRID, PROC_CGROUPS);
        let m = l.memory_v1.as_ref().unwrap();
        assert_eq!(m.id, 4);
        assert_eq!(m.mount, PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(
            l.unified.as_ref().unwrap().mount,
            PathBuf::from("/sys/fs/cgroup/unified")
        );
        assert!(!l.memory_on_dfl());
        assert!(l.memory_enabled);
        assert!(l.describe().starts_with("hybrid"));
    }

    #[test]
    fn pure_v2_has_memory_on_unified() {
        let mi = "29 1 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let pc = "#subsys_name\thierarchy\tnum_cgroups\tenabled\nmemory\t0\t90\t1\n";
        let l = CgroupMounts::from_texts(mi, pc);
        assert!(l.memory_on_dfl());
        assert_eq!(l.memory().unwrap().id, 0);
        assert_eq!(l.memory().unwrap().mount, PathBuf::from("/sys/fs/cgroup"));
    }

    #[test]
    fn mountinfo_escapes_and_namespaced_roots() {
        let mi =
            "40 1 0:30 /kubepods/pod\\040a /mnt/cg\\040x rw - cgroup cgroup rw,memory,nosuid\n";
        let l = CgroupMounts::from_texts(mi, PROC_CGROUPS);
        let m = l.memory_v1.unwrap();
        assert_eq!(m.mount, PathBuf::from("/mnt/cg x"));
        assert_eq!(m.root, "/kubepods/pod a");
        let h = Hierarchy {
            id: 4,
            mount: "/mnt/cg x".into(),
            root: "/kubepods/pod a".into(),
        };
        assert_eq!(
            h.path_of(Path::new("/mnt/cg x/c1")).unwrap(),
            "/kubepods/pod a/c1"
        );
        assert_eq!(
            h.path_of(Path::new("/mnt/cg x")).unwrap(),
            "/kubepods/pod a"
        );
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let l = CgroupMounts::from_texts("garbage\n1 2 3\n - \n", "memory x");
        assert_eq!(l, CgroupMounts::default());
    }

    /// A fake hierarchy mounted at a temporary directory: `dirs` below it, `procs` listing
    /// pid 4242 in `at`, and the root's marker file for v1 or v2.
    fn fake_tree(tag: &str, dirs: &[&str], at: &str, v2: bool, is_root: bool) -> PathBuf {
        let m = std::env::temp_dir().join(format!("oomx-nsroot-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&m);
        fs::create_dir_all(&m).unwrap();
        fs::write(m.join("cgroup.procs"), "1\n").unwrap();
        if v2 && !is_root {
            fs::write(m.join("cgroup.type"), "domain\n").unwrap();
        }
        if !v2 && is_root {
            fs::write(m.join("release_agent"), "").unwrap();
        }
        for d in dirs {
            fs::create_dir_all(m.join(d)).unwrap();
            let procs = if *d == at { "17\n4242\n" } else { "17\n" };
            fs::write(m.join(d).join("cgroup.procs"), procs).unwrap();
        }
        m
    }

    #[test]
    fn namespace_root_is_found_from_the_real_root() {
        let dirs = [
            "kubepods",
            "kubepods/pod1",
            "kubepods/pod1/ctr",
            "kubepods/pod2",
            "kubepods/pod2/ctr",
        ];
        // A container in its own cgroup namespace, at its root (the CRI's way): v2 shows
        // `0::/` for itself and `/../../..` for the mount of the node's tree.
        let m = fake_tree("v2", &dirs, "kubepods/pod2/ctr", true, true);
        let h = Hierarchy {
            id: 0,
            mount: m.clone(),
            root: "/../../..".into(),
        };
        assert_eq!(
            namespace_root(&h, "0::/\n", true, 4242).as_deref(),
            Some("/kubepods/pod2/ctr")
        );
        // Moved below the namespace's root after it was made.
        let h2 = Hierarchy {
            root: "/../..".into(),
            ..h.clone()
        };
        assert_eq!(
            namespace_root(&h2, "0::/ctr\n", true, 4242).as_deref(),
            Some("/kubepods/pod2")
        );
        // Not listed anywhere at that depth: unplaced.
        assert_eq!(namespace_root(&h, "0::/\n", true, 999), None);
        // A mount of a subtree (a cgroup.type file: not a hierarchy's root) cannot be placed.
        let sub = fake_tree("v2sub", &dirs, "kubepods/pod2/ctr", true, false);
        let hs = Hierarchy {
            mount: sub.clone(),
            ..h.clone()
        };
        assert_eq!(namespace_root(&hs, "0::/\n", true, 4242), None);
        // Not in a namespace, or a root naming real directories: nothing to do.
        let plain = Hierarchy {
            root: "/".into(),
            ..h.clone()
        };
        assert_eq!(namespace_root(&plain, "0::/\n", true, 4242), None);
        let named = Hierarchy {
            root: "/../kubepods".into(),
            ..h
        };
        assert_eq!(namespace_root(&named, "0::/\n", true, 4242), None);
        // v1: the memory line, and release_agent marks the root.
        let v1 = fake_tree("v1", &dirs, "kubepods/pod1/ctr", false, true);
        let h1 = Hierarchy {
            id: 4,
            mount: v1.clone(),
            root: "/../../..".into(),
        };
        assert_eq!(
            namespace_root(&h1, "5:pids:/\n4:memory:/\n0::/\n", false, 4242).as_deref(),
            Some("/kubepods/pod1/ctr")
        );
        for d in [m, sub, v1] {
            let _ = fs::remove_dir_all(d);
        }
    }

    #[test]
    fn namespace_paths_join_the_namespace_root() {
        assert_eq!(
            join_resolved("/kubepods/pod2/ctr", "/"),
            "/kubepods/pod2/ctr"
        );
        assert_eq!(
            join_resolved("/kubepods/pod2/ctr", "/../../pod1/ctr"),
            "/kubepods/pod1/ctr"
        );
        assert_eq!(join_resolved("/a", "/../../../x"), "/x");
        assert_eq!(
            join_resolved("/", "/system.slice/./containerd.service"),
            "/system.slice/containerd.service"
        );
    }
}
