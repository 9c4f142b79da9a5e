//! The watcher's logic on a hierarchy and a `/proc` made of plain files: what it arms, which
//! threads it names, and the record it makes. (The kernel side, a real eventfd signalled by a
//! real stall, is `tests/tests/host.rs`' `oom_kill_disable_reports_memcg_oom_and_no_kill`.)

use std::{
    fs,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::PathBuf,
    time::Instant,
};

use observer_common::{valid, Constraint, Hook, OomKillRecord, RecordKind};
use tokio::sync::mpsc::UnboundedReceiver;

use super::control::*;
use super::watcher::{arm, stall_record, Seen, Watcher};
use crate::host::cgroupfs::Hierarchy;

const ON: &str = "oom_kill_disable 1\nunder_oom 0\noom_kill 0\n";
const OFF: &str = "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n";
const STALLED: &str = "oom_kill_disable 1\nunder_oom 1\noom_kill 0\n";

#[test]
fn oom_control_parses_the_kernels_text() {
    assert_eq!(
        OomControl::parse(STALLED),
        Some(OomControl {
            oom_kill_disable: true,
            under_oom: true
        })
    );
    assert_eq!(
        OomControl::parse(OFF),
        Some(OomControl {
            oom_kill_disable: false,
            under_oom: false
        })
    );
    // Kernels before 4.13 have no oom_kill line.
    assert!(
        OomControl::parse("oom_kill_disable 1\nunder_oom 0\n").is_some_and(|o| o.oom_kill_disable)
    );
    assert_eq!(OomControl::parse("under_oom 0\n"), None);
    assert_eq!(OomControl::parse(""), None);
    assert_eq!(OomControl::parse("oom_kill_disable\nunder_oom\n"), None);
}

#[test]
fn nothing_is_watched_on_cgroup_v2() {
    let why = hierarchy(None).unwrap_err();
    assert!(
        why.contains("cgroup v2") && why.contains("oom_kill_disable"),
        "{why}"
    );
    assert!(HOW.contains("eventfd") && HOW.contains("no kernel program"));
}

#[test]
fn repeat_sightings_are_one_stall() {
    let mut seen = Seen::default();
    let t0 = Instant::now();
    assert!(seen.is_new(7, 100, t0));
    assert!(!seen.is_new(7, 100, t0 + POLL_MAX));
    assert!(
        !seen.is_new(7, 100, t0 + 2 * POLL_MAX),
        "refreshed by each sighting"
    );
    assert!(
        seen.is_new(7, 200, t0 + 2 * POLL_MAX),
        "another memcg is another stall"
    );
    assert!(seen.is_new(7, 200, t0 + 2 * POLL_MAX + STALL_REPEAT));
    seen.expire(t0 + 4 * STALL_REPEAT);
    assert!(seen.threads.is_empty());
    assert!(
        POLL_MAX < STALL_REPEAT,
        "a thread that stays stalled must be seen again in time"
    );
}

/// A scratch hierarchy (`mount`) and `/proc` (`proc`).
struct Fake {
    _tmp: tempfile::TempDir,
    mount: PathBuf,
    proc: PathBuf,
}

impl Fake {
    fn new() -> Fake {
        let tmp = tempfile::tempdir().unwrap();
        let mount = tmp.path().join("memory");
        let proc = tmp.path().join("proc");
        fs::create_dir_all(&mount).unwrap();
        fs::create_dir_all(&proc).unwrap();
        Fake {
            _tmp: tmp,
            mount,
            proc,
        }
    }

    /// A cgroup with its `memory.oom_control`, its `tasks` and its event_control.
    fn cgroup(&self, path: &str, oom_control: &str, tasks: &[u32]) -> (u64, PathBuf) {
        let dir = self.mount.join(path.trim_start_matches('/'));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("memory.oom_control"), oom_control).unwrap();
        fs::write(dir.join("cgroup.event_control"), "").unwrap();
        let list: String = tasks.iter().map(|t| format!("{t}\n")).collect();
        fs::write(dir.join("tasks"), list).unwrap();
        (fs::metadata(&dir).unwrap().ino(), dir)
    }

    fn thread(&self, tid: u32, tgid: u32, comm: &str, wchan: &str) {
        let d = self.proc.join(tid.to_string());
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("wchan"), wchan).unwrap();
        fs::write(d.join("comm"), format!("{comm}\n")).unwrap();
        fs::write(
            d.join("status"),
            format!("Name:\t{comm}\nState:\tD (disk sleep)\nTgid:\t{tgid}\nPid:\t{tid}\n"),
        )
        .unwrap();
    }

    fn watcher(&self) -> (Watcher, StallWatch, UnboundedReceiver<OomKillRecord>) {
        let h = Hierarchy {
            id: 4,
            mount: self.mount.clone(),
            root: "/".into(),
        };
        Watcher::new(h, self.proc.clone()).unwrap()
    }
}

#[test]
fn arming_registers_an_eventfd_and_the_control_file() {
    let f = Fake::new();
    let (_, dir) = f.cgroup("/a", ON, &[]);
    let efd = arm(&dir).unwrap();
    let line = fs::read_to_string(dir.join("cgroup.event_control")).unwrap();
    let (e, c) = line.split_once(' ').unwrap();
    assert_eq!(e.parse::<i32>().unwrap(), efd.as_raw_fd());
    assert!(c.parse::<i32>().is_ok(), "{line}");
    let gone = arm(&f.mount.join("nope")).unwrap_err();
    assert!(gone.gone(), "{gone}");
}

#[test]
fn the_walk_arms_only_oom_kill_disable_and_follows_changes() {
    let f = Fake::new();
    let (a, a_dir) = f.cgroup("/a", ON, &[]);
    let (b, _) = f.cgroup("/b", OFF, &[]);
    let (c, _) = f.cgroup("/b/c", ON, &[]);
    let (mut w, _h, _rx) = f.watcher();
    assert_eq!(w.rescan(), 3);
    let mut armed: Vec<u64> = w.armed.keys().copied().collect();
    armed.sort_unstable();
    let mut want = vec![a, c];
    want.sort_unstable();
    assert_eq!(armed, want);
    assert!(!w.armed.contains_key(&b));
    fs::write(a_dir.join("memory.oom_control"), OFF).unwrap();
    w.rescan();
    assert_eq!(w.armed.keys().copied().collect::<Vec<_>>(), vec![c]);
}

#[test]
fn a_new_cgroup_is_armed_at_its_first_attach_or_later_check() {
    let f = Fake::new();
    let (mut w, h, _rx) = f.watcher();
    w.rescan();
    assert!(w.armed.is_empty());
    // The runtime creates it, then sets the option, then moves a process in.
    let (id, dir) = f.cgroup("/pod/ctr", OFF, &[]);
    h.cgroup_created(4, id, Some("/pod/ctr".into()));
    h.cgroup_created(9, id + 1, Some("/elsewhere".into()));
    w.commands().ok().unwrap();
    assert_eq!(w.pending.len(), 1, "other hierarchies are not ours");
    fs::write(dir.join("memory.oom_control"), ON).unwrap();
    h.cgroup_attached(4, id);
    w.commands().ok().unwrap();
    assert!(w.armed.contains_key(&id));
    assert!(w.pending.is_empty());
    // One that gets the option only later is armed by a timed check.
    let (id2, dir2) = f.cgroup("/pod/late", OFF, &[]);
    h.cgroup_created(4, id2, Some("/pod/late".into()));
    w.commands().ok().unwrap();
    h.cgroup_attached(4, id2);
    w.commands().ok().unwrap();
    assert!(!w.armed.contains_key(&id2));
    fs::write(dir2.join("memory.oom_control"), ON).unwrap();
    let _ = w.due(Instant::now() + CHECKS_AFTER_MKDIR[1]);
    assert!(w.armed.contains_key(&id2));
    // The handle gone, the watcher stops.
    drop(h);
    assert!(w.commands().is_err());
}

#[test]
fn a_notification_names_each_stalled_thread_once_under_the_oom_memcg() {
    let f = Fake::new();
    let (p, p_dir) = f.cgroup("/p", ON, &[]);
    let (c, c_dir) = f.cgroup("/p/c", ON, &[10, 11]);
    f.thread(10, 10, "oomx-hog", "mem_cgroup_oom_synchronize");
    f.thread(11, 10, "worker", "do_epoll_wait");
    let (mut w, _h, mut rx) = f.watcher();
    w.rescan();
    // The parent's limit was hit: its whole subtree is under OOM, and both are notified.
    fs::write(p_dir.join("memory.oom_control"), STALLED).unwrap();
    fs::write(c_dir.join("memory.oom_control"), STALLED).unwrap();
    w.fired(c);
    w.fired(p);
    assert_eq!(w.stalls.keys().copied().collect::<Vec<_>>(), vec![p]);
    w.poll(p).ok().unwrap();
    let r = rx.try_recv().unwrap();
    assert!(rx.try_recv().is_err(), "only the thread in the OOM wait");
    assert_eq!(r.kind, RecordKind::MemcgOom as u32);
    assert_eq!(r.hook, Hook::OomControl as u32);
    assert_eq!(r.oom_memcg_id, p);
    assert_eq!(r.valid, valid::OOM_MEMCG);
    assert_eq!(r.constraint, Constraint::Memcg as u32);
    assert_eq!((r.trigger_pid, r.trigger_tgid), (10, 10));
    assert_eq!(&r.trigger_comm[..9], b"oomx-hog\0");
    assert_eq!(r.victim_pid, 0);
    assert!(r.ktime_ns > 0);
    // Polled again while it stays stalled: the same stall, no second record. A second
    // thread that stalls later (it signals nothing: the first holds the OOM lock) is named.
    f.thread(11, 10, "worker", "mem_cgroup_oom_synchronize");
    w.poll(p).ok().unwrap();
    let r2 = rx.try_recv().unwrap();
    assert_eq!(r2.trigger_pid, 11);
    assert!(rx.try_recv().is_err());
    // The OOM ends: followed a few more times, then dropped.
    fs::write(p_dir.join("memory.oom_control"), ON).unwrap();
    for _ in 0..=MIN_POLLS {
        w.poll(p).ok().unwrap();
    }
    assert!(w.stalls.is_empty());
    // Removing the cgroup signals its eventfd: it is disarmed.
    fs::remove_dir_all(&c_dir).unwrap();
    w.fired(c);
    assert!(!w.armed.contains_key(&c));
}

#[test]
fn a_thread_gone_makes_no_record() {
    let f = Fake::new();
    assert!(stall_record(&f.proc, 1, 42).is_none());
}
