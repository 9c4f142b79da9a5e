//! `oom_observer_memory_headroom_bytes` and `oom_observer_time_to_oom_seconds`: the memory
//! model's view of each container, replaced at each of its ticks. A container gone from the
//! model loses its series at once; `time_to_oom` is absent while the container does not
//! grow. Bounded like the kill counter: at most [`MAX_HEADROOM_SERIES`] label sets; beyond
//! that, further containers are left out (a gauge summed into `overflow` would mean nothing).

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, gauge::Gauge},
};
use tracing::warn;

use crate::forecast::Headroom;

/// At most this many label sets in each of the two families.
pub const MAX_HEADROOM_SERIES: usize = 2000;

/// The labels of one container's limit.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HeadroomLabels {
    /// The pod's Kubernetes namespace, else the containerd namespace; empty for a cgroup.
    pub namespace: String,
    /// The pod's name; empty outside a pod.
    pub pod: String,
    /// The Kubernetes container name, else the container id; the cgroup's path for a
    /// cgroup named by `--forecast-cgroup`.
    pub container: String,
    /// `container`, `pod`, `cgroup` or `node`.
    pub limit: String,
}

impl HeadroomLabels {
    fn of(h: &Headroom) -> HeadroomLabels {
        let c = h.container.as_ref();
        let pod = c.and_then(|c| c.pod.as_ref());
        HeadroomLabels {
            namespace: pod
                .and_then(|p| p.namespace.clone())
                .or_else(|| c.map(|c| c.namespace.clone()))
                .unwrap_or_default(),
            pod: pod.and_then(|p| p.name.clone()).unwrap_or_default(),
            container: c
                .map(|c| c.name.clone().unwrap_or_else(|| c.id.clone()))
                .unwrap_or_else(|| h.cgroup.to_string()),
            limit: h.limit.as_str().to_string(),
        }
    }
}

/// The two gauge families and the label sets they hold now.
pub struct HeadroomSeries {
    headroom: Family<HeadroomLabels, Gauge>,
    time_to_oom: Family<HeadroomLabels, Gauge<f64, AtomicU64>>,
    held: HashSet<HeadroomLabels>,
    timed: HashSet<HeadroomLabels>,
    warned: bool,
}

impl HeadroomSeries {
    /// Over the two registered families.
    pub fn new(
        headroom: Family<HeadroomLabels, Gauge>,
        time_to_oom: Family<HeadroomLabels, Gauge<f64, AtomicU64>>,
    ) -> Self {
        HeadroomSeries {
            headroom,
            time_to_oom,
            held: HashSet::new(),
            timed: HashSet::new(),
            warned: false,
        }
    }

    /// Replaces the series with one tick's view.
    pub fn update(&mut self, view: &[Headroom]) {
        let mut held = HashSet::new();
        let mut timed = HashSet::new();
        for h in view {
            if held.len() >= MAX_HEADROOM_SERIES {
                // The view has one entry per label set: the rest are left out, without
                // making their labels (at 10,000 containers, 28,000 label sets a tick).
                if !self.warned {
                    warn!(
                        max = MAX_HEADROOM_SERIES,
                        "too many headroom series: further containers are left out"
                    );
                    self.warned = true;
                }
                break;
            }
            let l = HeadroomLabels::of(h);
            self.headroom
                .get_or_create(&l)
                .set(i64::try_from(h.headroom_bytes).unwrap_or(i64::MAX));
            if let Some(t) = h.time_to_oom_s {
                self.time_to_oom.get_or_create(&l).set(t);
                timed.insert(l.clone());
            }
            held.insert(l);
        }
        for gone in self.held.difference(&held) {
            self.headroom.remove(gone);
        }
        for gone in self.timed.difference(&timed) {
            self.time_to_oom.remove(gone);
        }
        self.held = held;
        self.timed = timed;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use prometheus_client::{
        encoding::text::encode,
        metrics::{family::Family, gauge::Gauge},
        registry::{Registry, Unit},
    };

    use super::{HeadroomLabels, HeadroomSeries};
    use crate::{
        enrich::container::Pod,
        event::ContainerRef,
        forecast::{limits::LimitKind, Headroom},
    };

    /// The two families registered as the daemon's `Metrics::new` registers them.
    fn series() -> (Registry, HeadroomSeries) {
        let mut r = Registry::default();
        let headroom = Family::<HeadroomLabels, Gauge>::default();
        r.register_with_unit(
            "oom_observer_memory_headroom",
            "h",
            Unit::Bytes,
            headroom.clone(),
        );
        let ttl = Family::<HeadroomLabels, Gauge<f64, AtomicU64>>::default();
        r.register_with_unit("oom_observer_time_to_oom", "t", Unit::Seconds, ttl.clone());
        (r, HeadroomSeries::new(headroom, ttl))
    }

    fn render(r: &Registry) -> String {
        let mut s = String::new();
        encode(&mut s, r).unwrap_or_default();
        s
    }

    fn h(limit: LimitKind, ttl: Option<f64>) -> Headroom {
        Headroom {
            container: Some(std::sync::Arc::new(ContainerRef {
                id: "abc".into(),
                namespace: "k8s.io".into(),
                name: Some("app".into()),
                runtime: "io.containerd.runc.v2".into(),
                pod: Some(Pod {
                    name: Some("web-1".into()),
                    namespace: Some("shop".into()),
                    uid: Some("u".into()),
                }),
            })),
            cgroup: "/kubepods/pod-u/abc".into(),
            limit,
            headroom_bytes: 1 << 20,
            time_to_oom_s: ttl,
        }
    }

    #[test]
    fn headroom_and_time_to_oom_follow_the_latest_tick() {
        let (r, mut m) = series();
        m.update(&[
            h(LimitKind::Container, Some(42.5)),
            h(LimitKind::Node, None),
        ]);
        let text = render(&r);
        assert!(
            text.contains(r#"oom_observer_memory_headroom_bytes{namespace="shop",pod="web-1",container="app",limit="container"} 1048576"#),
            "{text}"
        );
        assert!(text.contains(r#"limit="node"} 1048576"#), "{text}");
        assert!(
            text.contains(r#"oom_observer_time_to_oom_seconds{namespace="shop",pod="web-1",container="app",limit="container"} 42.5"#),
            "{text}"
        );
        assert!(
            !text.contains(r#"oom_observer_time_to_oom_seconds{namespace="shop",pod="web-1",container="app",limit="node"}"#),
            "absent while not growing: {text}"
        );
        // Not growing any more, then gone from the model: its series go.
        m.update(&[h(LimitKind::Container, None)]);
        let text = render(&r);
        assert!(
            !text.contains("oom_observer_time_to_oom_seconds{"),
            "{text}"
        );
        assert!(!text.contains(r#"limit="node""#), "{text}");
        m.update(&[]);
        assert!(!render(&r).contains("oom_observer_memory_headroom_bytes{"));
    }

    #[test]
    fn past_the_bound_further_containers_are_left_out() {
        let (r, mut m) = series();
        let view: Vec<Headroom> = (0..super::MAX_HEADROOM_SERIES + 5)
            .map(|i| {
                let mut e = h(LimitKind::Container, Some(1.0));
                e.container = None;
                e.cgroup = format!("/c{i}").into();
                e
            })
            .collect();
        m.update(&view);
        let text = render(&r);
        let count = |name: &str| text.lines().filter(|l| l.starts_with(name)).count();
        assert_eq!(
            count("oom_observer_memory_headroom_bytes{"),
            super::MAX_HEADROOM_SERIES
        );
        assert_eq!(
            count("oom_observer_time_to_oom_seconds{"),
            super::MAX_HEADROOM_SERIES
        );
        // The first ones are in, those past the bound are not.
        assert!(text.contains(r#"container="/c0",limit="container"} 1048576"#));
        let last = format!(r#"container="/c{}","#, super::MAX_HEADROOM_SERIES);
        assert!(!text.contains(&last), "{last} is past the bound");
    }
}
