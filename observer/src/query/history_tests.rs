//! Unit tests of `history`.

use super::*;
use crate::event::{Event, EventKind, Victim};

fn ev(seq: u64, kind: EventKind, tgid: u32, cgroup: &str, container: Option<&str>) -> Event {
    Event {
        schema: 1,
        seq,
        event: kind,
        time: "t".into(),
        ktime_ns: seq * 10,
        hook: "tp_btf",
        victim: Some(Victim {
            pid: Some(tgid),
            tgid: Some(tgid),
            comm: Some("x".into()),
            uid: None,
            cgroup_id: Some(1),
            cgroup: Some(cgroup.into()),
            unified_cgroup_id: None,

            facts: Default::default(),
        }),
        oom_cgroup: None,
        constraint: None,
        trigger: None,
        container: container.map(|id| ContainerRef {
            id: id.into(),
            namespace: "k8s.io".into(),
            name: None,
            runtime: "r".into(),
            pod: None,
        }),
        containers: Vec::new(),
        published: false,
        exit: None,
        kill_seq: None,
        decided_at: None,
        decided_ktime_ns: None,

        explained: None,
    }
}

fn no_proc() -> History {
    History {
        live: |_| None,
        ..Default::default()
    }
}

#[test]
fn a_reused_pid_is_not_the_victim() {
    let mut h = no_proc();
    let mut kill = ev(1, EventKind::OomKill, 10, "/pod/a", Some("a"));
    kill.ktime_ns = 5_000_000_000; // 5 s after boot
    h.record_kill(&kill);
    h.kills[0].start_time = Some(300); // started 3 s after boot (100 Hz)
    let ask = |start: Option<u64>| Query {
        pid: Some(10),
        start_time: start,
        ..Default::default()
    };
    let none = |_| None;
    assert!(
        answer(&h, &ask(None), none).oom_killed,
        "no way to tell: the kill"
    );
    assert!(answer(&h, &ask(Some(300)), none).oom_killed, "the victim");
    assert!(
        !answer(&h, &ask(Some(900)), none).oom_killed,
        "a later process"
    );
    // A live process with the pid that started after the kill is not the victim.
    h.live = |_| {
        Some(ProcStart {
            ticks: 900,
            ns: 9_000_000_000,
            zombie: false,
        })
    };
    assert!(!answer(&h, &ask(None), none).oom_killed);
    // Unknown victim start (it was gone when handled), exit seen, the pid running:
    // someone else; still a zombie: the victim.
    h.kills[0].start_time = None;
    h.kills[0].exit = Some(ExitSeen {
        time: "t".into(),
        ktime_ns: 5_100_000_000,
        signal: Some(9),
    });
    h.live = |_| {
        Some(ProcStart {
            ticks: 300,
            ns: 3_000_000_000,
            zombie: false,
        })
    };
    assert!(!answer(&h, &ask(None), none).oom_killed);
    h.live = |_| {
        Some(ProcStart {
            ticks: 300,
            ns: 3_000_000_000,
            zombie: true,
        })
    };
    assert!(answer(&h, &ask(None), none).oom_killed);
}

#[test]
fn finds_by_pid_container_and_cgroup() {
    let mut h = no_proc();
    h.record_kill(&ev(1, EventKind::OomKill, 10, "/pod/a", Some("a")));
    h.record_kill(&ev(2, EventKind::OomKill, 11, "/pod/b", None));
    let none = |_| None;
    assert!(
        answer(
            &h,
            &Query {
                pid: Some(10),
                ..Default::default()
            },
            none
        )
        .oom_killed
    );
    assert!(
        !answer(
            &h,
            &Query {
                pid: Some(12),
                ..Default::default()
            },
            none
        )
        .oom_killed
    );
    let a = answer(
        &h,
        &Query {
            container: Some("a".into()),
            ..Default::default()
        },
        none,
    );
    assert_eq!(a.kills.len(), 1);
    assert_eq!(a.kills[0].seq, 1);
    let wrong_ns = Query {
        container: Some("a".into()),
        namespace: Some("other".into()),
        ..Default::default()
    };
    assert!(!answer(&h, &wrong_ns, none).oom_killed);
    assert_eq!(
        answer(
            &h,
            &Query {
                cgroup: Some("/pod".into()),
                ..Default::default()
            },
            none
        )
        .kills
        .len(),
        2
    );
    assert!(
        !answer(
            &h,
            &Query {
                cgroup: Some("/po".into()),
                ..Default::default()
            },
            none
        )
        .oom_killed
    );
    assert!(answer(&h, &Query::default(), none).error.is_some());
    let two = Query {
        pid: Some(1),
        cgroup: Some("/".into()),
        ..Default::default()
    };
    assert!(answer(&h, &two, none).error.is_some());
}

#[test]
fn exits_pair_with_their_kill_and_the_kernel_map_is_the_fallback() {
    let mut h = no_proc();
    h.record_kill(&ev(1, EventKind::OomKill, 10, "/a", None));
    let mut exit = ev(2, EventKind::VictimExit, 10, "/a", None);
    exit.exit = Some(crate::event::ExitInfo::from_status(9));
    assert_eq!(h.record_exit(&exit).map(|k| k.seq), Some(1));
    let a = answer(
        &h,
        &Query {
            pid: Some(10),
            ..Default::default()
        },
        |_| None,
    );
    assert_eq!(a.kills[0].exit.as_ref().unwrap().signal, Some(9));
    let k = |pid: u32| {
        (pid == 99).then(|| Kill {
            seq: 0,
            facts: Default::default(),
            explained: Default::default(),
            time: "t".into(),
            ktime_ns: 1,
            pid: Some(99),
            tgid: Some(99),
            comm: None,
            cgroup: None,
            container: None,
            exit: None,
            start_time: None,
        })
    };
    let a = answer(
        &h,
        &Query {
            pid: Some(99),
            ..Default::default()
        },
        k,
    );
    assert!(a.oom_killed);
    assert_eq!(a.source, "kernel");
}
