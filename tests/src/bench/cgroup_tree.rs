//! Scratch cgroups for the benchmarks: made by the test, removed by it, pass or fail.

use std::{fs, path::PathBuf, thread, time::Duration};

/// Scratch cgroups made under one top directory of a hierarchy; removed on drop, deepest
/// first (also when the test fails).
pub struct CgroupTree {
    pub top: PathBuf,
    /// The top's path in its hierarchy.
    pub path: String,
    /// What it made, in order.
    pub made: Vec<PathBuf>,
}

impl CgroupTree {
    pub fn new(mount: &str, tag: &str) -> CgroupTree {
        let name = format!("oomx-{}-{tag}", std::process::id());
        let top = PathBuf::from(mount).join(&name);
        fs::create_dir(&top).unwrap_or_else(|e| panic!("creating {}: {e}", top.display()));
        CgroupTree {
            top,
            path: format!("/{name}"),
            made: Vec::new(),
        }
    }

    /// Makes `rel` (its parent must exist); returns its directory.
    pub fn mkdir(&mut self, rel: &str) -> PathBuf {
        let d = self.top.join(rel);
        fs::create_dir(&d).unwrap_or_else(|e| panic!("creating {}: {e}", d.display()));
        self.made.push(d.clone());
        d
    }
}

impl Drop for CgroupTree {
    fn drop(&mut self) {
        for d in self.made.iter().rev().chain(std::iter::once(&self.top)) {
            for _ in 0..200 {
                if fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}
