//! Every limit that can fire on a cgroup: its own, its pod's, any ancestor's that charges it,
//! and the node's.

use std::{path::Path, sync::Arc};

use foldhash::HashMap;

use serde::Serialize;

use super::{error::ForecastError, read::read_file};
use crate::{
    audit::memory_fs::{parse_limit, MemoryFs},
    host::cgroup_path::parent,
};

/// Whose limit it is, in the words of the kill's `limit` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitKind {
    /// The container's own cgroup (or the cgroup named by `--forecast-cgroup`).
    Container,
    /// The pod's cgroup, right above a Kubernetes container's.
    Pod,
    /// Any other ancestor's.
    Cgroup,
    /// The node: RAM and swap.
    Node,
}

impl LimitKind {
    /// Its JSON name (and metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Container => "container",
            LimitKind::Pod => "pod",
            LimitKind::Cgroup => "cgroup",
            LimitKind::Node => "node",
        }
    }
}

/// One limit that can fire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Limit {
    /// `container`, `pod`, `cgroup` or `node`.
    pub kind: LimitKind,
    /// The cgroup that holds it (hierarchy path; shared with [`Levels`]); null for the node.
    pub cgroup: Option<Arc<str>>,
    /// Its bytes.
    pub bytes: u64,
}

/// What one cgroup's level of a chain read: its own limit (in pass `pass`), and (read only
/// for an ancestor) whether it passes its children's charges up (v1 `memory.use_hierarchy`,
/// which cannot change once the cgroup has children: read once).
#[derive(Debug, Clone)]
struct Level {
    /// Its path, the map's key too: every limit read from it shares it.
    path: Arc<str>,
    own: Option<u64>,
    pass: u64,
    hierarchical: Option<bool>,
}

/// The levels read by passes over many chains: a node's pods share every ancestor, whose
/// limit is then read once per pass, not once per container.
#[derive(Debug, Default)]
pub struct Levels {
    levels: HashMap<Arc<str>, Level>,
    pass: u64,
}

impl Levels {
    /// A new pass: every limit is read again when next asked for.
    pub fn next_pass(&mut self) {
        self.pass += 1;
    }

    /// Forgets the cgroups `keep` says no.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.levels.retain(|p, _| keep(p));
    }
}

/// The limits set on `path` and its ancestors that charge it, nearest (innermost) first.
/// `pod`: the pod's cgroup, if the cgroup is a Kubernetes container's. The node's limit is
/// not in it (it is read from `/proc/meminfo` once for all).
/// Each ancestor's limit is read at most once per pass of `levels`; a new level keeps
/// `path`'s or `pod`'s copy of its path.
pub fn chain(
    mem: &MemoryFs,
    path: &Arc<str>,
    pod: Option<&Arc<str>>,
    levels: &mut Levels,
) -> Result<Vec<Limit>, ForecastError> {
    let v2 = mem.is_v2();
    let mut out = Vec::with_capacity(2);
    // The cgroup's own limit, read each time: only the levels above are shared by many
    // chains (a level kept per container was 1 MiB at 10,000 containers).
    let own_dir = mem
        .dir(path)
        .ok_or_else(|| ForecastError::Gone(path.to_string()))?;
    if let Some(bytes) = own_limit(&own_dir, v2)? {
        out.push(Limit {
            kind: LimitKind::Container,
            cgroup: Some(path.clone()),
            bytes,
        });
    }
    let mut cur = parent(path);
    while let Some(p) = cur {
        let dir = || mem.dir(p).ok_or_else(|| ForecastError::Gone(p.into()));
        let pass = levels.pass;
        if !levels.levels.contains_key(p) {
            let key = match pod {
                Some(q) if **q == *p => q.clone(),
                _ => Arc::from(p),
            };
            let own = own_limit(&dir()?, v2)?;
            levels.levels.insert(
                key.clone(),
                Level {
                    path: key,
                    own,
                    pass,
                    hierarchical: None,
                },
            );
        }
        let Some(level) = levels.levels.get_mut(p) else {
            // Inserted just above.
            break;
        };
        if level.pass != pass {
            level.own = own_limit(&dir()?, v2)?;
            level.pass = pass;
        }
        if !v2 {
            let hierarchical = match level.hierarchical {
                Some(h) => h,
                None => *level.hierarchical.insert(use_hierarchy(&dir()?)?),
            };
            if !hierarchical {
                break;
            }
        }
        if let Some(bytes) = level.own {
            let kind = if pod.is_some_and(|q| **q == *p) {
                LimitKind::Pod
            } else {
                LimitKind::Cgroup
            };
            out.push(Limit {
                kind,
                cgroup: Some(level.path.clone()),
                bytes,
            });
        }
        cur = parent(p);
    }
    out.shrink_to_fit();
    Ok(out)
}

fn use_hierarchy(dir: &Path) -> Result<bool, ForecastError> {
    match read_file(dir, "memory.use_hierarchy") {
        Ok(t) => Ok(t.trim() != "0"),
        // Kernels that dropped the knob always charge up the tree.
        Err(ForecastError::Missing(_)) => Ok(true),
        Err(e) => Err(e),
    }
}

fn own_limit(dir: &Path, v2: bool) -> Result<Option<u64>, ForecastError> {
    let file = if v2 {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    match read_file(dir, file) {
        Ok(t) => parse_limit(&t, v2).ok_or_else(|| ForecastError::Parse {
            path: dir.join(file).display().to_string(),
            text: t.trim().to_string(),
        }),
        // The v2 root has no memory.max.
        Err(ForecastError::Missing(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn every_limit_up_the_tree_nearest_first() {
        let d = tempfile::tempdir().unwrap();
        for (p, l) in [
            ("", None),
            ("kubepods", Some("max")),
            ("kubepods/pod1", Some("268435456")),
            ("kubepods/pod1/c1", Some("134217728")),
            ("kubepods/pod1/c2", Some("max")),
        ] {
            let dir = d.path().join(p);
            fs::create_dir_all(&dir).unwrap();
            if let Some(l) = l {
                fs::write(dir.join("memory.max"), l).unwrap();
            }
        }
        let mem = MemoryFs::new(d.path().into(), "/".into(), true);
        let c = chain(
            &mem,
            &"/kubepods/pod1/c1".into(),
            Some(&"/kubepods/pod1".into()),
            &mut Levels::default(),
        )
        .unwrap();
        assert_eq!(
            c,
            vec![
                Limit {
                    kind: LimitKind::Container,
                    cgroup: Some("/kubepods/pod1/c1".into()),
                    bytes: 128 << 20
                },
                Limit {
                    kind: LimitKind::Pod,
                    cgroup: Some("/kubepods/pod1".into()),
                    bytes: 256 << 20
                },
            ]
        );
        let c = chain(
            &mem,
            &"/kubepods/pod1/c2".into(),
            None,
            &mut Levels::default(),
        )
        .unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(
            c[0].kind,
            LimitKind::Cgroup,
            "not named a pod: just a cgroup"
        );
        assert!(matches!(
            chain(&mem, &"/kubepods/gone".into(), None, &mut Levels::default()),
            Err(ForecastError::Gone(_))
        ));
    }

    #[test]
    fn v1_stops_where_use_hierarchy_is_0() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        fs::create_dir_all(a.join("b")).unwrap();
        fs::write(a.join("memory.limit_in_bytes"), "1048576").unwrap();
        fs::write(a.join("b/memory.limit_in_bytes"), "9223372036854771712").unwrap();
        let mem = MemoryFs::new(d.path().into(), "/".into(), false);
        assert_eq!(
            chain(&mem, &"/a/b".into(), None, &mut Levels::default())
                .unwrap()
                .len(),
            1
        );
        fs::write(a.join("memory.use_hierarchy"), "0").unwrap();
        assert!(chain(&mem, &"/a/b".into(), None, &mut Levels::default())
            .unwrap()
            .is_empty());
    }
}
