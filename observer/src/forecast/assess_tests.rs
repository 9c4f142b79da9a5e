//! Whom a limit shared by many containers is blamed on, on a cgroup v2 tree of plain files:
//! an ancestor that fills fast warns the containers under it that grow, never one that
//! holds steady.

use super::{
    test_tree::{cgroup, MIB},
    *,
};

#[test]
fn a_filling_ancestor_warns_the_container_that_grows_not_the_one_that_holds_steady() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    // An ancestor of both pods, limited to 400 MiB, filling at 5 MiB/s from one of them.
    cgroup(root, "tree", 400 * MIB, 100 * MIB);
    cgroup(root, "tree/pod-a", 1024 * MIB, 10 * MIB);
    cgroup(root, "tree/pod-a/steady", 512 * MIB, 10 * MIB);
    cgroup(root, "tree/pod-b", 1024 * MIB, 10 * MIB);
    cgroup(root, "tree/pod-b/grower", 1024 * MIB, 10 * MIB);
    let mut f = Forecaster::new(
        MemoryFs::new(root.into(), "/".into(), true),
        Duration::from_secs(60),
    );
    f.set_targets(vec![
        Target {
            cgroup: "/tree/pod-a/steady".into(),
            pod_cgroup: Some("/tree/pod-a".into()),
            container: None,
        },
        Target {
            cgroup: "/tree/pod-b/grower".into(),
            pod_cgroup: Some("/tree/pod-b".into()),
            container: None,
        },
    ]);
    let mut risks = Vec::new();
    for t in 0..45u64 {
        let grown = 5 * MIB * t;
        cgroup(root, "tree", 400 * MIB, 100 * MIB + grown);
        cgroup(root, "tree/pod-b", 1024 * MIB, 10 * MIB + grown);
        cgroup(root, "tree/pod-b/grower", 1024 * MIB, 10 * MIB + grown);
        risks.extend(f.tick_at(t as f64).risks);
    }
    // By the end the ancestor is 75 s of growth from its limit, well within the 60 s
    // threshold for most of the run once the rate is known; the grower's own limits are
    // further.
    assert!(
        risks
            .iter()
            .any(|r| r.cgroup == "/tree/pod-b/grower" && r.limit.kind == LimitKind::Cgroup),
        "the grower is warned about the ancestor's limit: {risks:?}"
    );
    assert!(
        risks.iter().all(|r| r.cgroup != "/tree/pod-a/steady"),
        "the steady container is not blamed for the ancestor's growth: {risks:?}"
    );
}
