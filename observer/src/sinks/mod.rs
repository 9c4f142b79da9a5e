//! Where events go. TaskOOM to containerd ([`taskoom`], with its on-disk [`spool`]) is not
//! a sink: the processor hands it over before any sink sees the event. Then every line goes
//! to the sinks, each behind one [`Sink`] trait, in the order the daemon lists them: the JSON
//! line ([`json`]), the Prometheus counters ([`metrics`]), the Kubernetes Events
//! ([`k8s_events`]).

use std::io;

use crate::{
    audit::finding::FindingEvent,
    event::{death::ContainerExit, Event, LostEvent},
    forecast::event::RiskEvent,
};

pub mod json;
pub mod k8s_events;
pub mod metrics;
pub mod spool;
pub mod taskoom;

/// One line of the event stream, as the sinks get it.
#[derive(Debug, Clone, Copy)]
pub enum Line<'a> {
    /// A kernel event: a kill, a skipped kill, a memcg OOM, a victim's exit.
    Event(&'a Event),
    /// An audit finding (or its clearing).
    Finding(&'a FindingEvent),
    /// Records the kernel could not hand over.
    Lost(&'a LostEvent),
    /// A container's end, and who ended it.
    Exit(&'a ContainerExit),
    /// The memory model's warning before a kill.
    Risk(&'a RiskEvent),
}

impl serde::Serialize for Line<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Line::Event(e) => e.serialize(s),
            Line::Finding(f) => f.serialize(s),
            Line::Lost(l) => l.serialize(s),
            Line::Exit(x) => x.serialize(s),
            Line::Risk(r) => r.serialize(s),
        }
    }
}

/// Where the event stream goes, in the spirit of Tetragon's `Listener`: each sink is told
/// every line, in sequence, after the sinks listed before it, and takes what concerns it.
pub trait Sink {
    /// Takes one line. An error stops the stream: the lines after it would be out of order.
    fn emit(&mut self, line: Line<'_>) -> io::Result<()>;

    /// Hands what was emitted to its reader (the JSON lines to stdout).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Upkeep off the kill path, every few seconds.
    fn upkeep(&mut self) {}
}

/// The sinks, in the order each line reaches them.
pub type Sinks = Vec<Box<dyn Sink>>;
