//! The read schedule on a cgroup v2 tree of plain files: quiet cgroups are read every
//! [`QUIET_EVERY`], their pod only on its sweep; a container that grows is read every tick,
//! and wakes its pod.

use std::{fs, path::Path};

use super::{
    test_tree::{cgroup, MIB},
    *,
};

/// A model over the v2 tree at `root`, warning 60 s ahead.
fn forecaster(root: &Path) -> Forecaster {
    Forecaster::new(
        MemoryFs::new(root.into(), "/".into(), true),
        Duration::from_secs(60),
    )
}

#[test]
fn quiet_cgroups_are_read_seldom_and_a_growing_one_every_tick_with_its_pod() {
    let d = tempfile::tempdir().unwrap();
    cgroup(d.path(), "pod", 256 * MIB, 10 * MIB);
    cgroup(d.path(), "pod/c", 128 * MIB, 10 * MIB);
    let mut f = forecaster(d.path());
    let target = Target {
        cgroup: "/pod/c".into(),
        pod_cgroup: Some("/pod".into()),
        container: None,
    };
    f.set_targets(vec![target]);
    let reads = |f: &mut Forecaster, t: u32| f.tick_at(f64::from(t)).reads;
    // Both are read (in full) at first, then are quiet: the container is read every
    // QUIET_EVERY, the pod once in its sweep (spread over it) at most.
    assert_eq!(reads(&mut f, 0), 2);
    let quiet: usize = (1..41).map(|t| reads(&mut f, t)).sum();
    assert!(
        (20..=21).contains(&quiet),
        "40 quiet ticks: {quiet} reads, not the container's 20 and at most one of the pod's"
    );
    // The container grows by more than 1 % of its nearest limit: within QUIET_EVERY it is
    // read, wakes, and its pod is read with it, then both every tick.
    cgroup(d.path(), "pod/c", 128 * MIB, 40 * MIB);
    let woke = (41..44)
        .find(|&t| reads(&mut f, t) == 2)
        .expect("the growth is seen within QUIET_EVERY");
    for t in woke + 1..woke + 9 {
        assert_eq!(reads(&mut f, t), 2, "tick {t}: awake, with its pod");
    }
}

#[test]
fn a_quiet_container_s_limits_are_read_again_when_it_wakes() {
    let d = tempfile::tempdir().unwrap();
    cgroup(d.path(), "pod", 256 * MIB, 10 * MIB);
    cgroup(d.path(), "pod/c", 128 * MIB, 10 * MIB);
    let mut f = forecaster(d.path());
    f.set_targets(vec![Target {
        cgroup: "/pod/c".into(),
        pod_cgroup: Some("/pod".into()),
        container: None,
    }]);
    let container_headroom = |f: &mut Forecaster, t: u32| {
        f.tick_at(f64::from(t))
            .headroom
            .iter()
            .find(|h| h.limit == LimitKind::Container)
            .map(|h| h.headroom_bytes)
    };
    assert_eq!(container_headroom(&mut f, 0), Some(118 * MIB));
    // The pod is resized while the container is quiet: its limit is not read again within
    // LIMITS_EVERY, nor for as long as it stays quiet.
    fs::write(d.path().join("pod/c/memory.max"), (64 * MIB).to_string()).unwrap();
    for t in 1..90 {
        assert_eq!(container_headroom(&mut f, t), Some(118 * MIB), "tick {t}");
    }
    // It grows: awake, its limits (old) are read again at once.
    cgroup(d.path(), "pod/c", 64 * MIB, 40 * MIB);
    let woke = (90..96)
        .find(|&t| container_headroom(&mut f, t) == Some(24 * MIB))
        .expect("the new limit read within the quiet read's period and a tick");
    assert!(woke <= 95);
}

#[test]
fn past_the_open_file_budget_a_cgroup_is_read_by_its_path_and_both_reads_agree() {
    let d = tempfile::tempdir().unwrap();
    cgroup(d.path(), "a", 128 * MIB, 10 * MIB);
    cgroup(d.path(), "b", 128 * MIB, 20 * MIB);
    let mut f = forecaster(d.path());
    // Room for one directory.
    f.plan = Plan::new(1);
    f.set_targets(vec![Target::cgroup("/a"), Target::cgroup("/b")]);
    f.tick_at(0.0);
    let usage = |f: &Forecaster, path: &str| {
        let s = f.plan.slots.iter().find(|s| &*s.path == path).unwrap();
        (s.dir_fd.is_some(), s.state.usage)
    };
    let (a, b) = (usage(&f, "/a"), usage(&f, "/b"));
    assert_eq!(
        u32::from(a.0) + u32::from(b.0),
        1,
        "one directory held, the budget: {a:?} {b:?}"
    );
    assert_eq!((a.1, b.1), (10 * MIB, 20 * MIB));
    // Both grow: each is read again within QUIET_EVERY, the held one through its
    // directory, the other by its path.
    cgroup(d.path(), "a", 128 * MIB, 30 * MIB);
    cgroup(d.path(), "b", 128 * MIB, 40 * MIB);
    for t in 1..=3 {
        f.tick_at(f64::from(t));
    }
    assert_eq!(usage(&f, "/a").1, 30 * MIB);
    assert_eq!(usage(&f, "/b").1, 40 * MIB);
}
