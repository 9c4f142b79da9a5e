//! `--pin-dir`: the programs' links and the maps the daemon reads, pinned in a bpffs, so
//! that a restart loses nothing. The programs stay attached while no daemon runs and keep
//! writing into the pinned ring buffers; the next daemon opens the same maps, does not
//! attach again, and reads on from where the previous one stopped (the ring buffers'
//! consumer position lives in the map, not in the process).
//!
//! Layout: `DIR/<id>/maps/<MAP>` and `DIR/<id>/links/<program>`, where `<id>` names the
//! object and what it was loaded with (its bytes, the kernel layout, the ring size, the
//! forced hook). A daemon whose `<id>` differs (another build, other flags) loads afresh and
//! then replaces the old pins. Pins are made under `DIR/<id>-partial` and renamed into
//! place, so a daemon killed half-way leaves nothing that looks complete (bpffs refuses names
//! with a dot). Only entries named like ours are ever removed.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Map, MapData, RingBuf},
    programs::links::PinnedLink,
};
use nix::{
    fcntl::{Flock, FlockArg},
    sys::statfs::{statfs, BPF_FS_MAGIC},
};
use observer_common::{map, program};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

pub use super::error::PinError;
use super::{
    clock::boot_ns,
    error::KernelError,
    hooks::{self, LoadParams, Loaded, Outcome, Refusal, Strategy},
    maps::KernelMaps,
};
use crate::cause::chain;

/// The maps a later daemon must find: the two ring buffers, the lost-record counters and the
/// victim map (the query socket's fallback).
const PINNED_MAPS: [&str; 4] = [map::EVENTS, map::CGROUP_EVENTS, map::LOST, map::VICTIMS];

/// The suffix of pins being made.
const PARTIAL: &str = "-partial";

/// The kernel side as a run starts with `--pin-dir`.
pub struct Attached {
    /// The strategy the programs were attached with.
    pub strategy: Strategy,
    /// Which `mark_victim` program carries the victims.
    pub victim_hook: &'static str,
    /// What this run loaded (`None`: it found the programs of an earlier run attached).
    pub loaded: Option<Loaded>,
    /// The ring buffers of replaced pins (another object), to be read once before the new
    /// ones, for the records written before `replaced_at`.
    pub replaced: Vec<RingBuf<MapData>>,
    /// When the new programs were attached (boot-clock ns): the replaced rings' records from
    /// then on are in the new rings too.
    pub replaced_at: u64,
    /// The pins' directory, `DIR/<id>`.
    pub dir: PathBuf,
    /// The pinned links, open (they stay pinned when closed).
    _links: Vec<PinnedLink>,
    /// Held for the run: a second daemon on the same directory would share the ring's reader.
    _lock: Flock<fs::File>,
}

/// Names the object and what it was loaded with: a restart with anything else loads afresh.
pub fn identity(p: &LoadParams<'_>, forced: Option<Strategy>) -> String {
    let mut h = Sha256::new();
    h.update(p.object);
    // Debug of plain `repr(C)` integers: stable for one build, which is all that must match.
    h.update(format!("{:?}", p.layout).as_bytes());
    h.update(format!("{:?}", p.attach).as_bytes());
    h.update(p.ring_bytes.to_le_bytes());
    h.update(forced.map(Strategy::name).unwrap_or("best").as_bytes());
    h.update([u8::from(p.btf.is_some())]);
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `name` is one of our pin directories (`<id>` or `<id>-partial`).
fn is_ours(name: &str) -> bool {
    let id = name.strip_suffix(PARTIAL).unwrap_or(name);
    id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Checks that `dir` is on a bpffs (before creating anything), creates it and locks it.
fn open_dir(dir: &Path) -> Result<Flock<fs::File>, PinError> {
    let mut probe = dir;
    while !probe.exists() {
        probe = probe.parent().unwrap_or(Path::new("/"));
    }
    let st = statfs(probe).map_err(|e| PinError::io(probe)(e.into()))?;
    if st.filesystem_type() != BPF_FS_MAGIC {
        return Err(PinError::NotBpffs(dir.to_path_buf()));
    }
    fs::create_dir_all(dir).map_err(PinError::io(dir))?;
    let f = fs::File::open(dir).map_err(PinError::io(dir))?;
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(l),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(PinError::Busy(dir.to_path_buf())),
        Err((_, e)) => Err(PinError::io(dir)(e.into())),
    }
}

/// Loads and pins, or finds what an earlier run pinned for this same object: the maps to
/// read, and what holds the rest.
pub fn start(
    root: &Path,
    p: &LoadParams<'_>,
    forced: Option<Strategy>,
) -> Result<(KernelMaps, Attached), KernelError> {
    let lock = open_dir(root)?;
    let id = identity(p, forced);
    let dir = root.join(&id);
    // A daemon killed while pinning: its programs are detached with the pins.
    for (name, path) in ours(root)? {
        if name.ends_with(PARTIAL) {
            warn!(pins = %path.display(), "removing pins a daemon left half-made");
            remove(&path);
        }
    }
    if dir.is_dir() {
        match reopen(&dir) {
            Ok(found) => {
                info!(pins = %dir.display(), strategy = %found.strategy, programs = found.links.len(),
                    "reusing the programs pinned by an earlier run: still attached, nothing missed");
                return Ok((
                    found.maps,
                    Attached {
                        strategy: found.strategy,
                        victim_hook: found.victim_hook,
                        loaded: None,
                        replaced: Vec::new(),
                        replaced_at: 0,
                        dir,
                        _links: found.links,
                        _lock: lock,
                    },
                ));
            }
            Err(e) => {
                warn!(pins = %dir.display(), error = %chain(&e), "pins unusable: loading afresh");
                remove(&dir);
            }
        }
    }
    if !aya::features().bpf_perf_link() {
        return Err(PinError::NoPerfLink.into());
    }
    let mut loaded = hooks::load(p, forced)?;
    let replaced_at = boot_ns();
    let partial = root.join(format!("{id}{PARTIAL}"));
    let links = pin_all(&partial, &mut loaded)?;
    fs::rename(&partial, &dir).map_err(PinError::io(&dir))?;
    let maps = KernelMaps::take(&mut loaded.ebpf)?;
    // Older pins (another object): their programs still run until unpinned. Their rings are
    // read once, for what they hold from before the new programs ran.
    let mut replaced = Vec::new();
    for (name, path) in ours(root)? {
        if name == id {
            continue;
        }
        for ring in [map::CGROUP_EVENTS, map::EVENTS] {
            match open_map(&path, ring)
                .and_then(|m| RingBuf::try_from(m).map_err(|e| io::Error::other(e.to_string())))
            {
                Ok(rb) => replaced.push(rb),
                Err(e) => {
                    warn!(pins = %path.display(), map = ring, error = %e, "cannot read a replaced ring buffer")
                }
            }
        }
        info!(pins = %path.display(), "replacing the pins of another object");
        remove(&path);
    }
    info!(pins = %dir.display(), programs = links.len(), "programs and maps pinned: they stay attached across restarts");
    Ok((
        maps,
        Attached {
            strategy: loaded.strategy,
            victim_hook: loaded.victim_hook,
            loaded: Some(loaded),
            replaced,
            replaced_at,
            dir,
            _links: links,
            _lock: lock,
        },
    ))
}

/// Our entries in `root`: name and path.
fn ours(root: &Path) -> Result<Vec<(String, PathBuf)>, PinError> {
    let mut out = Vec::new();
    for e in fs::read_dir(root).map_err(PinError::io(root))?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if is_ours(&name) {
            out.push((name, e.path()));
        }
    }
    Ok(out)
}

/// Unpins (the programs of pinned links detach unless something else holds them).
fn remove(path: &Path) {
    if let Err(e) = fs::remove_dir_all(path) {
        warn!(pins = %path.display(), error = %e, "cannot remove pins");
    }
}

/// Pins the maps the daemon reads and every link, under `dir`.
fn pin_all(dir: &Path, loaded: &mut Loaded) -> Result<Vec<PinnedLink>, PinError> {
    let maps = dir.join("maps");
    let links = dir.join("links");
    for d in [&maps, &links] {
        fs::create_dir_all(d).map_err(PinError::io(d))?;
    }
    for name in PINNED_MAPS {
        let path = maps.join(name);
        let Some(m) = loaded.ebpf.map(name) else {
            return Err(PinError::Io {
                path,
                source: io::Error::other("the object has no such map"),
            });
        };
        m.pin(&path)
            .map_err(|source| PinError::Pin { path, source })?;
    }
    let mut pinned = Vec::new();
    for (name, link) in loaded.links.drain(..) {
        let path = links.join(name);
        pinned.push(
            link.pin(&path)
                .map_err(|source| PinError::Pin { path, source })?,
        );
    }
    Ok(pinned)
}

fn open_map(dir: &Path, name: &str) -> io::Result<Map> {
    let path = dir.join("maps").join(name);
    let data = MapData::from_pin(&path)
        .map_err(|e| io::Error::other(format!("{}: {}", path.display(), chain(&e))))?;
    Map::from_map_data(data)
        .map_err(|e| io::Error::other(format!("{}: {}", path.display(), chain(&e))))
}

/// What an earlier run pinned, open again.
struct Reopened {
    /// Its maps.
    maps: KernelMaps,
    /// The strategy, read from which programs are linked.
    strategy: Strategy,
    /// Which `mark_victim` program carries the victims.
    victim_hook: &'static str,
    /// Its links, open.
    links: Vec<PinnedLink>,
}

/// Opens what an earlier run pinned in `dir`: its maps and links; the strategy is read from
/// which programs are linked.
fn reopen(dir: &Path) -> io::Result<Reopened> {
    let mut links = Vec::new();
    let mut names = Vec::new();
    for e in fs::read_dir(dir.join("links"))?.flatten() {
        let link = PinnedLink::from_pin(e.path())
            .map_err(|err| io::Error::other(format!("{}: {}", e.path().display(), chain(&err))))?;
        links.push(link);
        names.push(e.file_name().to_string_lossy().into_owned());
    }
    let has = |n: &str| names.iter().any(|x| x == n);
    let strategy = if has(program::OOM_KILL_FENTRY) {
        Strategy::Fentry
    } else if has(program::OOM_KILL_KPROBE) {
        Strategy::Kprobe
    } else if has(program::MARK_VICTIM_BTF) {
        Strategy::TpBtf
    } else if has(program::MARK_VICTIM_TP) {
        Strategy::Tracepoint
    } else {
        return Err(io::Error::other("no mark_victim link among the pins"));
    };
    let victim_hook = if has(program::MARK_VICTIM_BTF) {
        "tp_btf"
    } else {
        "tracepoint"
    };
    let mut maps = Vec::new();
    for name in PINNED_MAPS {
        maps.push((name, open_map(dir, name)?));
    }
    let maps = KernelMaps::from_maps(|want| {
        let i = maps.iter().position(|(n, _)| *n == want)?;
        Some(maps.swap_remove(i).1)
    })
    .map_err(|e| io::Error::other(chain(&e)))?;
    Ok(Reopened {
        maps,
        strategy,
        victim_hook,
        links,
    })
}

/// What `start` found attached (for the start-up log), in the shape [`hooks::load`] gives.
pub fn extras_of(a: &Attached) -> Vec<(&'static str, Outcome)> {
    a.loaded
        .as_ref()
        .map(|l| l.extras.clone())
        .unwrap_or_default()
}

/// Why better strategies were refused, when this run loaded.
pub fn refused_of(a: &Attached) -> Vec<(Strategy, Refusal)> {
    a.loaded
        .as_ref()
        .map(|l| l.refused.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_names_are_ours() {
        assert!(is_ours("0123456789abcdef"));
        assert!(is_ours("0123456789abcdef-partial"));
        assert!(!is_ours(".0123456789abcdef.partial"));
        assert!(!is_ours("maps.debug"));
        assert!(!is_ours("progs.debug"));
        assert!(!is_ours("0123456789abcdeg"));
        assert!(!is_ours("my-other-tool"));
    }
}
