//! Kubernetes Events on the Pod, one per kill, aggregated like the kubelet's.
//!
//! NO KUBERNETES API SERVER CAN RUN ON THESE MACHINES: Debian 12 packages no kube-apiserver
//! (`apt-cache search kube-apiserver` is empty) and none is on PyPI or npm. So this test runs
//! the real daemon (built with the `k8s-events` feature: kube-rs) against real OOM kills in
//! real containers, points its client at a loopback HTTP server through KUBECONFIG, and
//! checks the exact requests it sends: verbs and paths (what the RBAC Role must allow), the
//! bearer token, and the Event bodies against the core/v1 Event schema's fields. What it
//! cannot check: TLS to a real API server, the in-cluster service-account files, and the
//! API server's own validation and admission.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a panic is how a test fails"
)]

use std::{fs, thread, time::Duration};

use tests::{
    containerd::{Containerd, K8sLabels},
    fake_apiserver::FakeApiServer,
};

const READY: Duration = Duration::from_secs(30);

fn kill(cd: &Containerd, id: &str) {
    let app = K8sLabels {
        namespace: "shop",
        pod: "web-0",
        uid: Some("uid-web-0"),
        container: "app",
    };
    cd.oom_kill_pod_member(id, 24, &app);
}

#[test]
fn each_kill_is_an_event_on_its_pod_and_repeats_aggregate() {
    eprintln!(
        "NOTE: no Kubernetes API server can run on this machine; checking the exact requests \
         the client sends to a loopback stand-in instead (see the file's comment)"
    );
    let api = FakeApiServer::start();
    let cd = Containerd::start();
    let kubeconfig = cd.observer_state().with_extension("kubeconfig");
    api.write_kubeconfig(&kubeconfig, "oomx-test-token")
        .unwrap();
    // Inherited by the daemon; set before it is spawned (this file has one test).
    std::env::set_var("KUBECONFIG", &kubeconfig);
    let obs = cd.observer_with(READY, &["--k8s-events", "--node-name", "node-a"]);
    cd.go();
    kill(&cd, "app-1");
    kill(&cd, "app-2");
    for _ in 0..100 {
        if api.seen().len() >= 2 {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    thread::sleep(Duration::from_millis(500));
    let seen = api.seen();
    assert_eq!(
        seen.len(),
        2,
        "one create, one patch: {seen:#?}\n{}",
        obs.stderr_text()
    );

    // RBAC: the only verbs are create and patch on events in the pod's namespace.
    let (create, patch) = (&seen[0], &seen[1]);
    assert_eq!(create.method, "POST", "{create:?}");
    assert!(
        create.path.starts_with("/api/v1/namespaces/shop/events"),
        "{create:?}"
    );
    assert_eq!(
        create.authorization.as_deref(),
        Some("Bearer oomx-test-token")
    );
    assert_eq!(create.content_type.as_deref(), Some("application/json"));
    let e = &create.body;
    // core/v1 Event: metadata and involvedObject are required; the rest as the kubelet sets.
    assert_eq!(e["apiVersion"], "v1", "{e}");
    assert_eq!(e["kind"], "Event", "{e}");
    assert_eq!(e["metadata"]["namespace"], "shop", "{e}");
    let name = e["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(name.starts_with("web-0."), "{e}");
    let o = &e["involvedObject"];
    assert_eq!(o["apiVersion"], "v1", "{e}");
    assert_eq!(o["kind"], "Pod", "{e}");
    assert_eq!(o["namespace"], "shop", "{e}");
    assert_eq!(o["name"], "web-0", "{e}");
    assert_eq!(o["uid"], "uid-web-0", "{e}");
    assert_eq!(o["fieldPath"], "spec.containers{app}", "{e}");
    assert_eq!(e["reason"], "OOMKilling", "{e}");
    assert_eq!(e["type"], "Warning", "{e}");
    assert_eq!(e["count"], 1, "{e}");
    assert_eq!(e["source"]["component"], "oom-observer", "{e}");
    assert_eq!(e["source"]["host"], "node-a", "{e}");
    assert_eq!(e["reportingComponent"], "oom-observer", "{e}");
    assert_eq!(e["reportingInstance"], "node-a", "{e}");
    // The message is the kill's own one-line summary, as its JSON line carries it.
    let msg = e["message"].as_str().unwrap_or_default();
    let lines = obs.wait_for("the first kill's line", Duration::from_secs(10), |evs| {
        evs.iter()
            .any(|l| l["event"] == "oom_kill" && l["container"]["id"] == "app-1")
    });
    let line = lines
        .iter()
        .find(|l| l["event"] == "oom_kill" && l["container"]["id"] == "app-1")
        .unwrap();
    assert_eq!(msg, line["message"].as_str().unwrap_or("no message"), "{e}");
    assert!(
        msg.contains("OOM-killed: container app of pod shop/web-0"),
        "{e}"
    );
    for t in ["firstTimestamp", "lastTimestamp"] {
        let ts = e[t].as_str().unwrap_or_default();
        assert!(humantime::parse_rfc3339(ts).is_ok(), "{t}: {e}");
    }

    // The repeat: the same Event, count 2.
    assert_eq!(patch.method, "PATCH", "{patch:?}");
    assert!(
        patch
            .path
            .starts_with(&format!("/api/v1/namespaces/shop/events/{name}")),
        "{patch:?}"
    );
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/strategic-merge-patch+json")
    );
    assert_eq!(patch.body["count"], 2, "{patch:?}");
    assert!(patch.body["lastTimestamp"].is_string(), "{patch:?}");
    drop(obs);
    let _ = fs::remove_file(&kubeconfig);
}
