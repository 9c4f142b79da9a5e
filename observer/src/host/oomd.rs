//! The marks userspace OOM killers leave on a cgroup they acted on: systemd-oomd sets
//! `user.oomd_ooms` (and `user.oomd_kill`), Meta's oomd `trusted.oomd_ooms` and
//! `trusted.oomd_kill`. A container whose cgroup (or its pod's) carries one was killed by one
//! of them, whichever process the kernel saw send the SIGKILL.
//!
//! `trusted.*` is readable only with `CAP_SYS_ADMIN`: without it the kernel answers as if the
//! attribute were not set (ENODATA), so with the daemon's documented capabilities only
//! systemd-oomd's `user.*` marks are seen.

use std::{
    io,
    path::{Path, PathBuf},
};

use rustix::io::Errno;

use super::cgroupfs::CgroupMounts;

/// The attributes, in the order they are tried.
pub const XATTRS: [&str; 4] = [
    "user.oomd_ooms",
    "user.oomd_kill",
    "trusted.oomd_ooms",
    "trusted.oomd_kill",
];

/// A read that failed for another reason than the attribute or the cgroup being absent.
#[derive(Debug, thiserror::Error)]
#[error("reading the xattr {name} of {}", dir.display())]
pub struct XattrError {
    /// The cgroup's directory.
    pub dir: PathBuf,
    /// The attribute.
    pub name: &'static str,
    /// What the kernel said.
    #[source]
    pub source: io::Error,
}

/// The first of [`XATTRS`] set on `dir`. `Ok(None)` when none is, when the cgroup is gone
/// (its runtime removes it right after the exit), or when the filesystem keeps no xattrs.
pub fn mark(dir: &Path) -> Result<Option<&'static str>, XattrError> {
    // The values are counters and ids; only whether one is set matters (ERANGE: it is, and
    // longer than the buffer).
    let mut buf = [0u8; 64];
    for name in XATTRS {
        match rustix::fs::getxattr(dir, name, &mut buf[..]) {
            Ok(_) | Err(Errno::RANGE) => return Ok(Some(name)),
            Err(Errno::NODATA) => {}
            Err(Errno::NOENT | Errno::NOTSUP) => return Ok(None),
            Err(e) => {
                return Err(XattrError {
                    dir: dir.to_path_buf(),
                    name,
                    source: e.into(),
                })
            }
        }
    }
    Ok(None)
}

/// The first mark on hierarchy path `path` in any mounted hierarchy, the unified one first
/// (where systemd-oomd and oomd act): the attribute and the directory that carries it. A
/// failed read is logged and counts as no mark.
pub fn mark_in(mounts: &CgroupMounts, path: &str) -> Option<(&'static str, PathBuf)> {
    let hierarchies = [mounts.unified.as_ref(), mounts.memory_v1.as_ref()];
    for dir in hierarchies
        .into_iter()
        .flatten()
        .filter_map(|h| h.dir(path))
    {
        match mark(&dir) {
            Ok(Some(name)) => return Some((name, dir)),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %crate::cause::chain(&e), "cannot read a cgroup's oomd marks")
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "unit tests")]

    use super::*;

    /// A scratch directory on tmpfs (`/dev/shm`), which keeps `user.*` xattrs (Linux 6.6+)
    /// and `trusted.*` ones (with `CAP_SYS_ADMIN`), as cgroupfs does; `None` where it cannot.
    fn tmpfs_dir() -> Option<tempfile::TempDir> {
        tempfile::tempdir_in("/dev/shm").ok()
    }

    #[test]
    fn finds_each_mark_and_none_on_a_plain_dir() {
        let Some(d) = tmpfs_dir() else {
            eprintln!("NOTE: no /dev/shm here; the reader is not exercised");
            return;
        };
        assert_eq!(mark(d.path()).unwrap(), None);
        for name in XATTRS {
            let d = tmpfs_dir().unwrap();
            match rustix::fs::setxattr(d.path(), name, b"1", rustix::fs::XattrFlags::empty()) {
                Ok(()) => assert_eq!(mark(d.path()).unwrap(), Some(name), "{name}"),
                Err(e) => eprintln!("NOTE: tmpfs here cannot keep {name} ({e}); not checked"),
            }
        }
    }

    #[test]
    fn a_long_value_is_a_mark() {
        let Some(d) = tmpfs_dir() else {
            return;
        };
        let long = [b'7'; 200];
        if rustix::fs::setxattr(d.path(), XATTRS[0], &long, rustix::fs::XattrFlags::empty())
            .is_err()
        {
            eprintln!("NOTE: tmpfs here keeps no user xattrs; not checked");
            return;
        }
        assert_eq!(mark(d.path()).unwrap(), Some(XATTRS[0]));
    }

    #[test]
    fn a_removed_cgroup_is_quietly_unmarked() {
        let d = tempfile::tempdir().unwrap();
        let gone = d.path().join("removed");
        assert_eq!(mark(&gone).unwrap(), None);
    }
}
