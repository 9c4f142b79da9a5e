//! The daemon's second step: the sinks every line goes to, lined up in one place.

use std::{io, sync::Arc};

use tracing::info;

use super::options::RunOptions;
use crate::{
    enrich::upkeep::Containerd,
    error::ObserverError,
    kernel::hooks::Strategy,
    sinks::{
        json::JsonLines,
        k8s_events::EventSink,
        metrics::{ExitSeries, KillSeries, Metrics},
        Sinks,
    },
};

/// The sinks, before they are lined up.
pub struct Outputs {
    json: JsonLines<io::BufWriter<io::StdoutLock<'static>>>,
    /// The metrics, when served: their kill counters are a sink, the rest follows totals.
    pub metrics: Option<Metrics>,
    kills: Option<KillSeries>,
    exits: Option<ExitSeries>,
    k8s_events: Option<EventSink>,
}

/// Opens the event stream (stdout), serves the metrics on the listener bound at the start,
/// and connects to the Kubernetes API.
pub async fn start(
    opts: &RunOptions,
    metrics_listener: Option<std::net::TcpListener>,
    strategy: Strategy,
) -> Result<Outputs, ObserverError> {
    let json = JsonLines::new(io::BufWriter::new(io::stdout().lock()));
    let metrics = match (metrics_listener, opts.metrics_listen) {
        (Some(listener), Some(addr)) => {
            let m = Metrics::new(env!("CARGO_PKG_VERSION"), &strategy.to_string());
            m.serve(listener)
                .map_err(|source| ObserverError::MetricsListen { addr, source })?;
            Some(m)
        }
        _ => None,
    };
    let k8s_events = match &opts.k8s_events {
        Some(node) => {
            let outcomes = metrics
                .as_ref()
                .map(Metrics::k8s_events)
                .unwrap_or_default();
            let sink = EventSink::start(node, outcomes)
                .await
                .map_err(ObserverError::K8sEvents)?;
            info!(node = %node, "posting a Kubernetes Event on the Pod of each kill");
            Some(sink)
        }
        None => None,
    };
    Ok(Outputs {
        json,
        kills: metrics.as_ref().map(Metrics::kill_series),
        exits: metrics.as_ref().map(Metrics::exit_series),
        metrics,
        k8s_events,
    })
}

impl Outputs {
    /// The sinks in the order each line reaches them: the JSON line first (an error there
    /// stops the stream before anything counts it), then the kill and exit counters, then the
    /// Kubernetes Events. With containerd, a container's kill series expire once its
    /// container is long gone.
    pub fn line_up(self, containerd: Option<&Arc<Containerd>>) -> Sinks {
        let mut sinks: Sinks = vec![Box::new(self.json)];
        if let Some(kills) = self.kills {
            sinks.push(Box::new(match containerd {
                Some(cd) => {
                    let cd = cd.clone();
                    kills.expiring(Box::new(move |k| cd.container(k).map(|c| c.deleted_at)))
                }
                None => kills,
            }));
        }
        if let Some(exits) = self.exits {
            sinks.push(Box::new(match containerd {
                Some(cd) => {
                    let cd = cd.clone();
                    exits.expiring(Box::new(move |k| cd.container(k).map(|c| c.deleted_at)))
                }
                None => exits,
            }));
        }
        if let Some(k) = self.k8s_events {
            sinks.push(Box::new(k));
        }
        sinks
    }
}
