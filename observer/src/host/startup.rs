//! Where the start-up's time and memory go: at debug level, one `start step` line per step
//! with the milliseconds since the process started its clock, the step's own milliseconds,
//! and the resident size (VmRSS) and its peak (VmHWM) right after it. The bench page reads
//! these lines; at the default level they cost one check of the log filter.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// When the clock started, and when the last step ended.
static CLOCK: Mutex<Option<(Instant, Instant)>> = Mutex::new(None);
/// From the exec to [`begin`], logged with the first step (and then taken).
static BEFORE_MAIN: Mutex<Option<Duration>> = Mutex::new(None);

/// Starts the clock (the first call wins; `main` calls it before anything else), and notes
/// how long after the exec that is (to the kernel's clock tick, 10 ms on most kernels).
pub fn begin() {
    let now = Instant::now();
    if let Ok(mut c) = CLOCK.lock() {
        if c.is_none() {
            *c = Some((now, now));
            if let Ok(mut b) = BEFORE_MAIN.lock() {
                *b = since_exec();
            }
        }
    }
}

/// Time since this process's exec: `CLOCK_BOOTTIME` now less its `starttime`.
fn since_exec() -> Option<Duration> {
    let start = super::procfs::proc_start(std::process::id())?;
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).ok()?;
    let now_ns =
        u64::try_from(now.tv_sec()).ok()? * 1_000_000_000 + u64::try_from(now.tv_nsec()).ok()?;
    Some(Duration::from_nanos(now_ns.saturating_sub(start.ns)))
}

/// Ends a step: logs its name, the time since [`begin`] and since the previous step, and the
/// memory after it. Steps done on another thread mark their own end; their `took_ms` then
/// counts from whichever step ended last.
pub fn step(name: &str) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    if let Some(before) = BEFORE_MAIN.lock().ok().and_then(|mut b| b.take()) {
        tracing::debug!(
            step = "exec → main (to the clock tick)",
            at_ms = 0.0,
            took_ms = ms(before),
            rss_kib = 0,
            hwm_kib = 0,
            "start step"
        );
    }
    let now = Instant::now();
    let (at, took) = match CLOCK.lock() {
        Ok(mut c) => {
            let (t0, last) = *c.get_or_insert((now, now));
            *c = Some((t0, now));
            (now - t0, now - last)
        }
        Err(_) => (Duration::ZERO, Duration::ZERO),
    };
    let (rss, hwm) = memory_kib();
    tracing::debug!(
        step = name,
        at_ms = ms(at),
        took_ms = ms(took),
        rss_kib = rss,
        hwm_kib = hwm,
        "start step"
    );
}

fn ms(d: Duration) -> f64 {
    // Two decimals: the short steps take tens of microseconds.
    (d.as_secs_f64() * 1e5).round() / 100.0
}

/// This process's VmRSS and VmHWM in KiB (0 where /proc does not say).
fn memory_kib() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    (field_kib(&text, "VmRSS:"), field_kib(&text, "VmHWM:"))
}

/// A `Key:   N kB` line's N.
fn field_kib(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_status_fields() {
        let s = "Name:\tx\nVmHWM:\t   61234 kB\nVmRSS:\t   12000 kB\n";
        assert_eq!(field_kib(s, "VmHWM:"), 61234);
        assert_eq!(field_kib(s, "VmRSS:"), 12000);
        assert_eq!(field_kib(s, "VmSwap:"), 0);
    }

    #[test]
    fn this_process_has_a_resident_size() {
        let (rss, hwm) = memory_kib();
        assert!(rss > 0 && hwm >= rss, "rss {rss} hwm {hwm}");
    }
}
