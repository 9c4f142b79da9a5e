//! The unit tests' cgroup v2 trees of plain files.

use std::{fs, path::Path};

/// A mebibyte.
pub const MIB: u64 = 1 << 20;

/// A cgroup with its limit and `current` bytes, all of it anon (unreclaimable).
pub fn cgroup(root: &Path, path: &str, max: u64, current: u64) {
    let d = root.join(path);
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join("memory.max"), max.to_string()).unwrap();
    fs::write(d.join("memory.current"), current.to_string()).unwrap();
    fs::write(
        d.join("memory.stat"),
        format!("anon {current}\nactive_anon {current}\n"),
    )
    .unwrap();
}
