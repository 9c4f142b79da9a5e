//! The memory hierarchy as files: limits on a cgroup and its ancestors.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use serde::Serialize;

use super::AuditError;
use crate::host::{
    cgroup_path::parent,
    cgroupfs::{CgroupMounts, Hierarchy},
};

/// A cgroup v1 limit at or above this is "no limit" (the kernel reports
/// `PAGE_COUNTER_MAX * PAGE_SIZE`, just under 2^63, for an unset limit).
pub const V1_UNLIMITED: u64 = 1 << 62;
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
    hierarchy: Hierarchy,
    v2: bool,
}

pub(crate) fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}
impl MemoryFs {
    /// The memory hierarchy of this node's mounts.
    pub fn from_mounts(l: &CgroupMounts) -> Option<MemoryFs> {
        let h = l.memory()?;
        Some(MemoryFs::new(
            h.mount.clone(),
            h.root.clone(),
            l.memory_on_dfl(),
        ))
    }

    /// A hierarchy mounted at `mount` whose mount shows hierarchy path `root`.
    pub fn new(mount: PathBuf, root: String, v2: bool) -> MemoryFs {
        MemoryFs {
            hierarchy: Hierarchy { id: 0, mount, root },
            v2,
        }
    }

    /// Whether this is the unified (v2) hierarchy.
    pub fn is_v2(&self) -> bool {
        self.v2
    }

    /// The directory of a hierarchy path; none for paths outside the mount or with `..`.
    pub fn dir(&self, path: &str) -> Option<PathBuf> {
        self.hierarchy.dir(path)
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
            if self.dir(p).as_deref() == Some(self.hierarchy.mount.as_path()) {
                break;
            }
            cur = parent(p);
        }
        Ok(eff)
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn tree(v2: bool, levels: &[(&str, &str)]) -> (tempfile::TempDir, MemoryFs) {
        let d = tempfile::tempdir().unwrap();
        let file = if v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        for (path, limit) in levels {
            let dir = d.path().join(path.trim_start_matches('/'));
            fs::create_dir_all(&dir).unwrap();
            if !limit.is_empty() {
                fs::write(dir.join(file), format!("{limit}\n")).unwrap();
            }
        }
        let m = MemoryFs::new(d.path().to_path_buf(), "/".into(), v2);
        (d, m)
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
        fs::write(d.path().join("a/memory.swap.max"), "0\n").unwrap();
        fs::write(d.path().join("a/b/memory.swap.max"), "max\n").unwrap();
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
        fs::write(d.path().join("a/memory.use_hierarchy"), "0\n").unwrap();
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
