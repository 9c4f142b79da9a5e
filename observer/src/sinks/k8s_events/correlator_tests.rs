//! Unit tests of `correlator`.

use super::*;
use crate::{
    enrich::container::Pod,
    event::{CgroupRef, Victim},
};
use std::time::Duration;

fn kill(c: Option<ContainerRef>) -> Event {
    Event {
        schema: 1,
        seq: 1,
        event: EventKind::OomKill,
        time: String::new(),
        ktime_ns: 1,
        hook: "tp_btf",
        victim: Some(Victim {
            pid: Some(7),
            tgid: Some(7),
            comm: Some("python3".into()),
            uid: Some(0),
            cgroup_id: Some(1),
            cgroup: Some("/kubepods/pod-u/c1".into()),
            unified_cgroup_id: None,
            facts: Default::default(),
        }),
        oom_cgroup: Some(CgroupRef {
            id: 1,
            path: Some("/kubepods/pod-u/c1".into()),
        }),
        constraint: Some("memcg"),
        trigger: None,
        container: c,
        containers: Vec::new(),
        published: true,
        explained: None,
        exit: None,
        kill_seq: None,
        decided_at: None,
        decided_ktime_ns: None,
    }
}

fn app() -> ContainerRef {
    ContainerRef {
        id: "c1".into(),
        namespace: "k8s.io".into(),
        name: Some("app".into()),
        runtime: "io.containerd.runc.v2".into(),
        pod: Some(Pod {
            name: Some("web-0".into()),
            namespace: Some("shop".into()),
            uid: Some("u-1".into()),
        }),
    }
}

#[test]
fn first_kill_creates_a_pod_event_repeats_patch_its_count() {
    let mut c = Correlator::new("node-a");
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let r = c.on_event(&kill(Some(app())), t0);
    assert_eq!(r.len(), 1);
    let Request::Create { namespace, body } = &r[0] else {
        panic!("{r:?}")
    };
    assert_eq!(namespace, "shop");
    assert_eq!(
        r[0].route(),
        ("POST", "/api/v1/namespaces/shop/events".into())
    );
    let o = &body["involvedObject"];
    assert_eq!(o["kind"], "Pod");
    assert_eq!(o["name"], "web-0");
    assert_eq!(o["uid"], "u-1");
    assert_eq!(o["fieldPath"], "spec.containers{app}");
    assert_eq!(body["reason"], REASON);
    assert_eq!(body["type"], "Warning");
    assert_eq!(body["source"]["host"], "node-a");
    assert_eq!(body["count"], 1);
    assert_eq!(
        body["message"],
        "Container app was OOM-killed: the kernel killed process 7 (python3) at the memory limit of cgroup /kubepods/pod-u/c1"
    );
    let name = body["metadata"]["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("web-0."), "{name}");

    let r = c.on_event(&kill(Some(app())), t0 + Duration::from_secs(30));
    assert_eq!(
        r,
        vec![Request::Patch {
            namespace: "shop".into(),
            name: name.clone(),
            body: json!({"count": 2, "lastTimestamp": "2027-01-15T08:00:30Z", "message": body["message"]}),
        }]
    );
    // The API server lost it (expired): the next kill creates a new Event.
    c.forget("shop", &name);
    let r = c.on_event(&kill(Some(app())), t0 + Duration::from_secs(60));
    assert!(matches!(r[0], Request::Create { .. }), "{r:?}");
}

#[test]
fn kills_outside_pods_make_no_event() {
    let mut c = Correlator::new("n");
    assert!(c.on_event(&kill(None), SystemTime::now()).is_empty());
    let mut plain = app();
    plain.pod = None;
    assert!(c.on_event(&kill(Some(plain)), SystemTime::now()).is_empty());
}
