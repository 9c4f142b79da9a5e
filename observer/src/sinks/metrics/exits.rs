//! `oom_observer_container_exits_total{namespace,pod,container,cause}`: each container's end,
//! counted after its line is written. Bounded as the kill counter is: a container's series
//! expire once containerd has deleted it for longer than the index keeps deleted
//! containers, and beyond [`MAX_EXIT_SERIES`] label sets exits go to one `overflow` series.

use std::{collections::HashMap, time::Instant};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};
use tracing::warn;

use super::kills::{gone_for_good, DeletedAt};
use crate::{
    enrich::container::ContainerKey,
    event::death::ContainerExit,
    sinks::{Line, Sink},
};

/// At most this many label sets of `oom_observer_container_exits_total`.
pub const MAX_EXIT_SERIES: usize = 2000;

const OVERFLOW: &str = "overflow";

/// The labels of one exit series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExitLabels {
    /// The pod's Kubernetes namespace, else the containerd namespace.
    pub namespace: String,
    /// The pod's name; empty outside a pod.
    pub pod: String,
    /// The Kubernetes container name, else the containerd container id.
    pub container: String,
    /// The `container_exit` line's `cause`.
    pub cause: String,
}

impl ExitLabels {
    fn of(x: &ContainerExit) -> ExitLabels {
        let c = &x.container;
        let pod = c.pod.as_ref();
        ExitLabels {
            namespace: pod
                .and_then(|p| p.namespace.clone())
                .unwrap_or_else(|| c.namespace.clone()),
            pod: pod.and_then(|p| p.name.clone()).unwrap_or_default(),
            container: c.name.clone().unwrap_or_else(|| c.id.clone()),
            cause: x.cause.as_str().into(),
        }
    }
}

/// The exit counters and their series' upkeep.
pub struct ExitSeries {
    exits: Family<ExitLabels, Counter>,
    series: HashMap<ExitLabels, Option<ContainerKey>>,
    deleted_at: Option<DeletedAt>,
}

impl ExitSeries {
    /// The sink of the exit counters (registered by `Metrics::new`).
    pub(super) fn new(exits: Family<ExitLabels, Counter>) -> Self {
        ExitSeries {
            exits,
            series: HashMap::new(),
            deleted_at: None,
        }
    }

    /// Expires series at each upkeep, asking `deleted_at` (containerd's index).
    pub fn expiring(mut self, deleted_at: DeletedAt) -> Self {
        self.deleted_at = Some(deleted_at);
        self
    }

    fn count(&mut self, x: &ContainerExit) {
        let mut labels = ExitLabels::of(x);
        let mut key = Some(ContainerKey::new(&x.container.namespace, &x.container.id));
        if !self.series.contains_key(&labels) && self.series.len() >= MAX_EXIT_SERIES {
            labels = ExitLabels {
                namespace: OVERFLOW.into(),
                pod: OVERFLOW.into(),
                container: OVERFLOW.into(),
                ..labels
            };
            key = None;
            if !self.series.contains_key(&labels) {
                warn!(
                    max = MAX_EXIT_SERIES,
                    "too many container exit series: further containers are counted as `overflow`"
                );
            }
        }
        self.series.entry(labels.clone()).or_insert(key);
        self.exits.get_or_create(&labels).inc();
    }
}

impl Sink for ExitSeries {
    fn emit(&mut self, line: Line<'_>) -> std::io::Result<()> {
        if let Line::Exit(x) = line {
            self.count(x);
        }
        Ok(())
    }

    /// Drops the series of containers deleted longer ago than the index keeps them.
    fn upkeep(&mut self) {
        let Some(deleted_at) = &self.deleted_at else {
            return;
        };
        let now = Instant::now();
        let gone: Vec<ExitLabels> = self
            .series
            .iter()
            .filter(|(_, k)| {
                k.as_ref()
                    .is_some_and(|k| gone_for_good(deleted_at(k), now))
            })
            .map(|(l, _)| l.clone())
            .collect();
        for l in gone {
            self.exits.remove(&l);
            self.series.remove(&l);
        }
    }
}
