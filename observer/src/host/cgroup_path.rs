//! Cgroup path algebra, in one place: paths are hierarchy paths as `/proc/<pid>/cgroup` shows
//! them (`/`, `/a`, `/a/b`), never filesystem paths; [`to_dir`] and [`from_dir`] convert to
//! and from a mount point's directories, [`from_spec`] reads an OCI `cgroupsPath`, and
//! [`memory_cgroup_of`] picks the memory controller's path out of `/proc/<pid>/cgroup`.

use std::path::{Path, PathBuf};

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

/// `path` and each of its ancestors, nearest first, ending at `/`.
pub fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(path).filter(|p| !p.is_empty()), |p| parent(p))
}

/// Whether `path` is `ancestor` or below it.
pub fn is_under(path: &str, ancestor: &str) -> bool {
    let a = ancestor.trim_end_matches('/');
    a.is_empty() || path == a || path.strip_prefix(a).is_some_and(|r| r.starts_with('/'))
}

/// The directory of hierarchy path `path` under a mount whose mount root is `root` (not `/`
/// inside a cgroup namespace); none for paths outside the mount or with `..`.
pub fn to_dir(mount: &Path, root: &str, path: &str) -> Option<PathBuf> {
    if path.split('/').any(|c| c == "..") {
        return None;
    }
    let base = root.trim_end_matches('/');
    let rel = if base.is_empty() {
        path
    } else if path == base {
        ""
    } else {
        path.strip_prefix(base).filter(|r| r.starts_with('/'))?
    };
    let rel = rel.trim_start_matches('/');
    Some(if rel.is_empty() {
        mount.to_path_buf()
    } else {
        mount.join(rel)
    })
}

/// The hierarchy path of a directory under a mount whose mount root is `root`.
pub fn from_dir(mount: &Path, root: &str, dir: &Path) -> Option<String> {
    let rel = dir.strip_prefix(mount).ok()?;
    let base = root.trim_end_matches('/');
    let rel = rel.to_string_lossy();
    Some(if rel.is_empty() {
        if base.is_empty() {
            "/".into()
        } else {
            base.to_string()
        }
    } else {
        format!("{base}/{rel}")
    })
}

/// `base` + `rel` with `.` and `..` resolved (never above `/`).
pub fn join_resolved(base: &str, rel: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in base.split('/').chain(rel.split('/')) {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    format!("/{}", out.join("/"))
}

/// The cgroup path a spec's `linux.cgroupsPath` names, in the hierarchy's own terms.
///
/// - cgroupfs form: an absolute path is taken as is; a relative one is relative to the
///   runtime's own cgroup, which only the task's process can tell (`None`).
/// - systemd form `slice:prefix:name`: the slice expands to its parents
///   (`a-b-c.slice` → `/a.slice/a-b.slice/a-b-c.slice`) and the unit is `prefix-name.scope`.
pub fn from_spec(p: &str) -> Option<String> {
    let parts: Vec<&str> = p.split(':').collect();
    if parts.len() == 3 {
        let (slice, prefix, name) = (parts[0], parts[1], parts[2]);
        let mut path = expand_slice(if slice.is_empty() {
            "system.slice"
        } else {
            slice
        })?;
        let unit = if name.ends_with(".slice") {
            name.to_string()
        } else if prefix.is_empty() {
            format!("{name}.scope")
        } else {
            format!("{prefix}-{name}.scope")
        };
        if path == "/" {
            path.clear();
        }
        return Some(format!("{path}/{unit}"));
    }
    if parts.len() != 1 || !p.starts_with('/') {
        return None;
    }
    let clean: Vec<&str> = p
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if clean.contains(&"..") {
        return None;
    }
    Some(format!("/{}", clean.join("/")))
}

/// systemd's slice naming: each dash-separated prefix is a parent slice.
fn expand_slice(slice: &str) -> Option<String> {
    let base = slice.strip_suffix(".slice")?;
    if base == "-" {
        return Some("/".into());
    }
    if base.is_empty()
        || base.starts_with('-')
        || base.ends_with('-')
        || base.contains("--")
        || base.contains('/')
    {
        return None;
    }
    let mut path = String::new();
    let mut acc = String::new();
    for (i, part) in base.split('-').enumerate() {
        if i > 0 {
            acc.push('-');
        }
        acc.push_str(part);
        path.push('/');
        path.push_str(&acc);
        path.push_str(".slice");
    }
    Some(path)
}

/// The memory-controller cgroup of a process, from the text of `/proc/<pid>/cgroup`.
pub fn memory_cgroup_of(proc_cgroup: &str, memory_on_dfl: bool) -> Option<String> {
    for line in proc_cgroup.lines() {
        let mut f = line.splitn(3, ':');
        let (id, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        let hit = if memory_on_dfl {
            id == "0" && ctrls.is_empty()
        } else {
            ctrls.split(',').any(|c| c == "memory")
        };
        if hit {
            return Some(path.to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_form_expands_slices() {
        assert_eq!(
            from_spec("kubepods-burstable-pod1234.slice:cri-containerd:abc").as_deref(),
            Some("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-abc.scope")
        );
        assert_eq!(
            from_spec("system.slice:docker:x").as_deref(),
            Some("/system.slice/docker-x.scope")
        );
        assert_eq!(
            from_spec(":cri-containerd:x").as_deref(),
            Some("/system.slice/cri-containerd-x.scope")
        );
        assert_eq!(from_spec("-.slice::x").as_deref(), Some("/x.scope"));
        assert_eq!(
            from_spec("kubepods.slice::kubepods-pod1.slice").as_deref(),
            Some("/kubepods.slice/kubepods-pod1.slice")
        );
    }

    #[test]
    fn cgroupfs_form_absolute_and_relative() {
        assert_eq!(
            from_spec("/kubepods/burstable/pod1/abc").as_deref(),
            Some("/kubepods/burstable/pod1/abc")
        );
        assert_eq!(from_spec("//a/./b/").as_deref(), Some("/a/b"));
        assert_eq!(
            from_spec("default/abc"),
            None,
            "relative: only the task can tell"
        );
    }

    #[test]
    fn malformed_cgroups_paths_are_rejected() {
        for bad in [
            "",
            "a:b",
            "a:b:c:d",
            "notaslice:p:n",
            "bad--x.slice:p:n",
            "-a.slice:p:n",
            "/a/../b",
            "x/.slice:p:n",
        ] {
            assert_eq!(from_spec(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn parents_ancestors_and_under() {
        assert_eq!(parent("/a/b"), Some("/a"));
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/"), None);
        assert_eq!(ancestors("/a/b").collect::<Vec<_>>(), ["/a/b", "/a", "/"]);
        assert!(is_under("/a/b", "/a") && is_under("/a", "/a") && is_under("/x", "/"));
        assert!(!is_under("/ab", "/a"));
    }

    #[test]
    fn mount_roots_map_both_ways() {
        let m = Path::new("/mnt/cg");
        assert_eq!(to_dir(m, "/kubepods", "/kubepods/x").unwrap(), m.join("x"));
        assert_eq!(to_dir(m, "/kubepods", "/kubepods").unwrap(), m);
        assert!(to_dir(m, "/kubepods", "/kubepodsX").is_none());
        assert!(to_dir(m, "/", "/a/../b").is_none());
        assert_eq!(
            from_dir(m, "/kubepods", &m.join("x")).as_deref(),
            Some("/kubepods/x")
        );
        assert_eq!(from_dir(m, "/", m).as_deref(), Some("/"));
    }

    #[test]
    fn proc_cgroup_memory_line() {
        let v1 = "12:pids:/x\n4:memory:/process_api/abc\n0::/\n";
        assert_eq!(
            memory_cgroup_of(v1, false).as_deref(),
            Some("/process_api/abc")
        );
        let v1multi = "5:cpu,memory:/p\n";
        assert_eq!(memory_cgroup_of(v1multi, false).as_deref(), Some("/p"));
        let v2 = "0::/kubepods.slice/x.scope\n";
        assert_eq!(
            memory_cgroup_of(v2, true).as_deref(),
            Some("/kubepods.slice/x.scope")
        );
        assert_eq!(memory_cgroup_of(v2, false), None);
        assert_eq!(memory_cgroup_of("garbage", true), None);
    }
}
