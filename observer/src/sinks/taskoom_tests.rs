//! Unit tests of `taskoom`.

use super::*;

fn soon() -> tokio::time::Instant {
    handoff_deadline(Duration::ZERO)
}

/// No containerd at all: every TaskOOM is spooled, in order, once per kill.
#[tokio::test]
async fn one_taskoom_per_container_and_kill_spooled_in_order_without_containerd() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("no-containerd.sock");
    let mut p = Publisher::new(&socket, Some(dir.path()));
    assert!(
        !p.oom("k8s.io", "a", 1, None, soon()).await,
        "nothing can be published"
    );
    assert!(
        !p.oom("k8s.io", "a", 2, None, soon()).await,
        "same container within SAME_KILL"
    );
    assert!(!p.oom("k8s.io", "b", 3, None, soon()).await);
    assert!(
        !p.oom("k8s.io", "", 4, None, soon()).await,
        "an empty id is never published"
    );
    assert_eq!(p.pending(), 2, "one entry per container and kill");
    assert!(p.retry_at().is_some(), "a retry is scheduled");
    // The spool survives a restart, oldest first.
    drop(p);
    let p = Publisher::new(&socket, Some(dir.path()));
    assert_eq!(p.pending(), 2);
    assert_eq!(
        p.spool
            .front()
            .map(|e| (e.container_id.as_str(), e.ktime_ns)),
        Some(("a", 1))
    );
}

/// A decision's TaskOOM answers for its invocation's kill of the same container even
/// after SAME_KILL (the kernel's report can take that long on a serial console), and
/// only for that invocation.
#[tokio::test]
async fn one_taskoom_per_invocation_across_a_long_report() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("no-containerd.sock");
    let mut p = Publisher::new(&socket, None);
    p.oom("k8s.io", "a", 10, Some(10), soon()).await;
    assert_eq!(p.pending(), 1);
    // Instant::now() does not follow tokio's paused clock: age the entry by hand.
    if let Some(r) = p.recent.values_mut().next() {
        r.at -= SAME_KILL * 3;
    }
    p.oom("k8s.io", "a", 20, Some(10), soon()).await;
    assert_eq!(
        p.pending(),
        1,
        "the kill of the same invocation: no second TaskOOM"
    );
    p.oom("k8s.io", "a", 30, Some(30), soon()).await;
    assert_eq!(p.pending(), 2, "a later invocation's kill gets its own");
}
