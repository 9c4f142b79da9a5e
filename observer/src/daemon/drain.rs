//! Reading the kernel's rings: every record to the processor, in order, each released only
//! once its line is out; queries answered while a kill waits for containerd.

use tokio::sync::mpsc::Receiver;

use aya::maps::{MapData, RingBuf};

use super::lost::LostFile;
use crate::{
    error::ObserverError,
    kernel::{
        maps::{KernelMaps, Victims},
        record::Record,
    },
    pipeline::processor::{Begun, Processor},
    query::{history::Kill, socket::Request},
};

/// The query socket's requests, as the loop reads them.
pub struct Queries {
    rx: Option<Receiver<Request>>,
    /// A question the loop took before it read what the kernel had recorded: answered at
    /// the first wait for containerd, else once the rings are read. Never after a kill's
    /// hand-off: that wait is up to [`HANDOFF`](crate::sinks::taskoom::HANDOFF), and the
    /// kernel's victim map already knows the kill.
    held: Option<Request>,
}

impl Queries {
    /// The requests `rx` brings; none without the query socket.
    pub fn new(rx: Option<Receiver<Request>>) -> Self {
        Queries { rx, held: None }
    }

    /// The next request; forever without the query socket.
    pub async fn next(&mut self) -> Option<Request> {
        match &mut self.rx {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        }
    }

    /// Keeps `req` until the records read before it are begun (see [`drain_all`]).
    pub fn hold(&mut self, req: Request) {
        if let Some(earlier) = self.held.replace(req) {
            // One at a time, by construction; answered rather than dropped if not.
            let _ = earlier.reply.send(crate::query::history::Answer::error(
                "asked while another question was held",
            ));
        }
    }

    fn answer_held(&mut self, proc: &Processor, victims: &Victims) {
        if let Some(req) = self.held.take() {
            answer(proc, req, victims);
        }
    }
}

/// Answers from what is known: the history so far and the kernel's victim map.
fn answer(proc: &Processor, req: Request, victims: &Victims) {
    let answer = proc.answer(&req.query, |pid| victims.victim(pid).map(Kill::from_victim));
    let _ = req.reply.send(answer);
}

/// Writes a `lost` event when the kernel lost records since the last look.
pub fn report_lost(
    proc: &mut Processor,
    maps: &mut KernelMaps,
    file: Option<&LostFile>,
) -> Result<(), ObserverError> {
    match maps.check_lost() {
        Some((lost, total)) => {
            proc.write_lost(lost, total)
                .and_then(|()| proc.flush())
                .map_err(ObserverError::Output)?;
            if let Some(f) = file {
                f.write(maps.lost_seen());
            }
            Ok(())
        }
        None => Ok(()),
    }
}

/// Every record both ring buffers hold: the cgroup records first, so that a path learnt
/// from a mkdir is known before a kill of the same wake-up needs it. Then the audits they
/// asked for run, and a held question is answered if no kill's wait answered it.
pub async fn drain_all(
    proc: &mut Processor,
    maps: &mut KernelMaps,
    queries: &mut Queries,
) -> Result<(), ObserverError> {
    let KernelMaps {
        ring,
        cgroup_ring,
        victims,
        ..
    } = maps;
    drain(proc, cgroup_ring.get_mut(), queries, victims, None).await?;
    drain(proc, ring.get_mut(), queries, victims, None).await?;
    if let Some(a) = proc.audits() {
        a.run_pending();
    }
    queries.answer_held(proc, victims);
    Ok(())
}

/// Hands each record of one ring buffer to the processor, in order. A record is released
/// (the ring's consumer position, kept in the map, moves past it) only once its line is
/// written: a daemon killed while handling it leaves it to the next run, which, with
/// pinned maps, handles it again. While a kill waits for containerd (at most
/// [`HANDOFF`](crate::sinks::taskoom::HANDOFF) beyond attribution), queries are answered from what is known: the
/// history so far and the kernel's victim map. With `before`, OOM records from that
/// boot-clock time on are skipped (a replaced object's ring, whose later records the new
/// programs have too).
pub async fn drain(
    proc: &mut Processor,
    rb: &mut RingBuf<MapData>,
    queries: &mut Queries,
    victims: &Victims,
    before: Option<u64>,
) -> Result<(), ObserverError> {
    while let Some(item) = rb.next() {
        if let (Some(cutoff), Ok(Record::Oom(r))) = (before, Record::parse(&item)) {
            if r.ktime_ns >= cutoff {
                continue;
            }
        }
        handle(proc, &item, queries, victims).await?;
        // The line is out before the record is released (when `item` drops).
        proc.flush().map_err(ObserverError::Output)?;
    }
    Ok(())
}

/// Hands one record to the processor; while its kill waits for containerd, queries are
/// answered (a held one first).
pub async fn handle(
    proc: &mut Processor,
    record: &[u8],
    queries: &mut Queries,
    victims: &Victims,
) -> Result<(), ObserverError> {
    match proc.begin(record).map_err(ObserverError::Output)? {
        Begun::Done => Ok(()),
        Begun::Enrich(ev, work) => {
            queries.answer_held(proc, victims);
            tokio::pin!(work);
            let found = loop {
                tokio::select! {
                    found = &mut work => break found,
                    Some(req) = queries.next() => answer(proc, req, victims),
                }
            };
            proc.finish(*ev, found).map_err(ObserverError::Output)
        }
    }
}
