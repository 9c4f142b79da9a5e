//! Reading the kernel's rings: every record to the processor, in order, each released only
//! once its line is out; queries answered while a kill waits for containerd.

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
/// asked for run.
pub async fn drain_all(
    proc: &mut Processor,
    maps: &mut KernelMaps,
    queries: &mut Option<tokio::sync::mpsc::Receiver<Request>>,
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
    queries: &mut Option<tokio::sync::mpsc::Receiver<Request>>,
    victims: &Victims,
    before: Option<u64>,
) -> Result<(), ObserverError> {
    while let Some(item) = rb.next() {
        if let (Some(cutoff), Ok(Record::Oom(r))) = (before, Record::parse(&item)) {
            if r.ktime_ns >= cutoff {
                continue;
            }
        }
        match proc.begin(&item).map_err(ObserverError::Output)? {
            Begun::Done => {}
            Begun::Enrich(ev, work) => {
                tokio::pin!(work);
                let found = loop {
                    tokio::select! {
                        found = &mut work => break found,
                        Some(req) = next_query(queries) => {
                            let answer = proc.answer(&req.query, |pid| victims.victim(pid).map(Kill::from_victim));
                            let _ = req.reply.send(answer);
                        }
                    }
                };
                proc.finish(*ev, found).map_err(ObserverError::Output)?;
            }
        }
        // The line is out before the record is released (when `item` drops).
        proc.flush().map_err(ObserverError::Output)?;
    }
    Ok(())
}

/// The next query; forever without the query socket.
pub async fn next_query(rx: &mut Option<tokio::sync::mpsc::Receiver<Request>>) -> Option<Request> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
