//! Unit tests of `metrics`.

use std::time::{Duration, Instant};

use super::*;
use crate::{
    enrich::{container::Pod, index::KEEP_DELETED},
    event::{ContainerRef, Event, EventKind},
};

fn kill(seq: u64, ktime_ns: u64, c: Option<ContainerRef>) -> Event {
    Event {
        schema: 1,
        seq,
        event: EventKind::OomKill,
        time: String::new(),
        ktime_ns,
        hook: "tp_btf",
        victim: None,
        oom_cgroup: None,
        constraint: None,
        trigger: None,
        container: c,
        containers: Vec::new(),
        published: false,
        exit: None,
        kill_seq: None,
        decided_at: None,
        decided_ktime_ns: None,
        explained: None,
    }
}

fn app(id: &str, pod: Option<(&str, &str)>) -> ContainerRef {
    ContainerRef {
        id: id.into(),
        namespace: "k8s.io".into(),
        name: pod.map(|_| "app".to_string()),
        runtime: "io.containerd.runc.v2".into(),
        pod: pod.map(|(ns, name)| Pod {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            uid: Some("u".into()),
        }),
    }
}

const S: u64 = 1_000_000_000;

#[test]
fn kills_are_counted_per_container_one_per_kill_and_expire_after_deletion() {
    let m = Metrics::new("0.1.0", "tp_btf");
    let mut k = m.kill_series();
    let a = app("a", Some(("shop", "web-0")));
    k.on_event(&kill(1, 10 * S, Some(a.clone())));
    // A second victim of the same kill (a sandbox's processes): not a second kill.
    k.on_event(&kill(2, 10 * S + S / 2, Some(a.clone())));
    k.on_event(&kill(3, 20 * S, Some(a.clone())));
    k.on_event(&kill(4, 20 * S, Some(app("plain", None))));
    k.on_event(&kill(5, 21 * S, None));
    let text = m.render();
    assert!(
        text.contains(r#"oom_observer_oom_kills_total{namespace="shop",pod="web-0",container="app",limit="unknown",container_exits="unknown"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"oom_observer_oom_kills_total{namespace="k8s.io",pod="",container="plain",limit="unknown",container_exits="unknown"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"oom_observer_oom_kills_total{namespace="",pod="",container="",limit="unknown",container_exits="unknown"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"oom_observer_build_info{version="0.1.0",strategy="tp_btf"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("oom_observer_last_kill_timestamp_seconds "),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");

    // "a" deleted just now stays; "plain" is unknown to containerd and goes; the kill
    // outside containers has no container and stays.
    let now = Instant::now();
    k.expire(|k| (k.id == "a").then_some(Some(now)));
    let text = m.render();
    assert!(text.contains(r#"container="app""#), "{text}");
    assert!(!text.contains(r#"container="plain""#), "{text}");
    assert!(text.contains(r#"container="""#), "{text}");
    // Once deleted for longer than the index keeps it, "a" goes too.
    let long_ago = now.checked_sub(KEEP_DELETED + Duration::from_secs(1));
    k.expire(|_| Some(long_ago));
    let text = m.render();
    assert!(!text.contains(r#"container="app""#), "{text}");
}

#[test]
fn series_are_capped_with_an_overflow_series() {
    let m = Metrics::new("0", "tp_btf");
    let mut k = m.kill_series();
    for i in 0..MAX_KILL_SERIES + 5 {
        k.on_event(&kill(
            i as u64,
            i as u64 * 2 * S,
            Some(app(&format!("c{i}"), None)),
        ));
    }
    assert_eq!(k.series.len(), MAX_KILL_SERIES + 1);
    let text = m.render();
    assert!(
        text.contains(r#"oom_observer_oom_kills_total{namespace="overflow",pod="overflow",container="overflow",limit="unknown",container_exits="unknown"} 5"#),
        "{text}"
    );
}

#[test]
fn sync_follows_the_sinks_totals_and_lost_records() {
    let mut m = Metrics::new("0", "tp_btf");
    let text = m.render();
    assert!(
        text.contains(r#"oom_observer_taskoom_total{result="dropped"} 0"#),
        "{text}"
    );
    let mut t = Totals {
        published: 3,
        spooled: 1,
        dropped: 0,
        limit_unenforced: 2,
        sandbox_oversized: 0,
        cgroup_misplaced: 0,
    };
    m.sync(t, &[("oom_kill", 4)]);
    t.published = 5;
    t.limit_unenforced = 1;
    m.sync(t, &[("oom_kill", 4)]);
    let text = m.render();
    for line in [
        r#"oom_observer_taskoom_total{result="published"} 5"#,
        r#"oom_observer_taskoom_total{result="spooled"} 1"#,
        r#"oom_observer_audit_findings{kind="limit_unenforced"} 1"#,
        r#"oom_observer_records_lost_total{kind="oom_kill"} 4"#,
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
}
