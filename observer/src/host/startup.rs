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

/// Starts the clock (the first call wins; `main` calls it before anything else).
pub fn begin() {
    let now = Instant::now();
    if let Ok(mut c) = CLOCK.lock() {
        c.get_or_insert((now, now));
    }
}

/// Ends a step: logs its name, the time since [`begin`] and since the previous step, and the
/// memory after it. Steps done on another thread mark their own end; their `took_ms` then
/// counts from whichever step ended last.
pub fn step(name: &str) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
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
