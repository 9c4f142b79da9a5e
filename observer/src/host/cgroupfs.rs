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
    /// Reads `/proc/self/mountinfo` and `/proc/cgroups`.
    pub fn discover() -> std::io::Result<Self> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
        let proc_cgroups = fs::read_to_string("/proc/cgroups").unwrap_or_default();
        Ok(Self::from_texts(&mountinfo, &proc_cgroups))
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
