//! One cgroup's unreclaimable memory over time, and how fast it grows.
//!
//! The rate is the Theil–Sen slope (the median of the slopes between every pair of points)
//! of the series' *running minimum* over the last [`ENVELOPE_S`] seconds, across the last
//! [`WINDOW_S`] seconds:
//! - A garbage collector's sawtooth rises and drops back to its floor: the running minimum
//!   over a window longer than one tooth follows the floor, which does not rise, so a
//!   sawtooth peaking just under its limit reads as not growing (a plain slope over the raw
//!   samples reads each rising edge as a leak).
//! - A leak raises the floor: the running minimum lags the series by at most
//!   [`ENVELOPE_S`] but climbs at the leak's rate.
//! - Theil–Sen, not least squares: a single outlier (a burst freed a second later, a GC
//!   longer than the envelope) moves the median of the slopes by little, where it would pull
//!   a fitted line. Its cost, O(n²) pairs for n ≤ 40 points, is a few microseconds.
//!
//! The price: a leak is seen only once [`ENVELOPE_S`] + 2 s of samples exist, and a cycle
//! longer than [`ENVELOPE_S`] still looks like growth on its rising edge.

use std::collections::VecDeque;

/// How far back the running minimum looks: the longest GC cycle read as a sawtooth.
pub const ENVELOPE_S: f64 = 10.0;
/// How far back the slope looks.
pub const WINDOW_S: f64 = 30.0;
/// Growth slower than this is no growth (a page a second is noise).
pub const MIN_RATE: f64 = 16.0 * 1024.0;
/// At most this many envelope points enter the slope (the newest).
const MAX_POINTS: usize = 40;

/// A cgroup's samples: (seconds, bytes), oldest first.
#[derive(Debug, Clone, Default)]
pub struct Series {
    samples: VecDeque<(f64, u64)>,
}

impl Series {
    /// Adds a sample taken at `t` seconds (monotonic) and forgets what no longer counts.
    pub fn push(&mut self, t: f64, bytes: u64) {
        if self.samples.back().is_some_and(|&(last, _)| t <= last) {
            return;
        }
        self.samples.push_back((t, bytes));
        while self
            .samples
            .front()
            .is_some_and(|&(t0, _)| t - t0 > WINDOW_S + ENVELOPE_S)
        {
            self.samples.pop_front();
        }
    }

    /// The newest sample.
    pub fn last(&self) -> Option<(f64, u64)> {
        self.samples.back().copied()
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no sample is held.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The running minimum over the last [`ENVELOPE_S`], at each sample that has that much
    /// history behind it.
    fn envelope(&self) -> Vec<(f64, f64)> {
        let Some(&(t0, _)) = self.samples.front() else {
            return Vec::new();
        };
        let s = &self.samples;
        let mut out = Vec::new();
        for (i, &(t, _)) in s.iter().enumerate() {
            // A 1 s tick lands a little early or late: half a second of slack.
            if t - t0 < ENVELOPE_S - 0.5 {
                continue;
            }
            let min = s
                .iter()
                .take(i + 1)
                .filter(|&&(tj, _)| t - tj <= ENVELOPE_S + 0.5)
                .map(|&(_, v)| v)
                .min()
                .unwrap_or(0);
            out.push((t, min as f64));
        }
        let skip = out.len().saturating_sub(MAX_POINTS);
        out.drain(..skip);
        out
    }

    /// Bytes per second the floor of the series grows at; `None` until there are three
    /// envelope points.
    pub fn rate(&self) -> Option<f64> {
        theil_sen(&self.envelope())
    }
}

/// The median of the slopes between every pair of points; `None` under three points.
pub fn theil_sen(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 3 {
        return None;
    }
    let mut slopes = Vec::with_capacity(points.len() * (points.len() - 1) / 2);
    for (i, &(ti, vi)) in points.iter().enumerate() {
        for &(tj, vj) in &points[i + 1..] {
            let dt = tj - ti;
            if dt > 1e-3 {
                slopes.push((vj - vi) / dt);
            }
        }
    }
    if slopes.is_empty() {
        return None;
    }
    slopes.sort_by(f64::total_cmp);
    let n = slopes.len();
    Some(if n % 2 == 1 {
        slopes[n / 2]
    } else {
        (slopes[n / 2 - 1] + slopes[n / 2]) / 2.0
    })
}

/// Seconds until `bytes` growing at `rate` reach `limit`: `None` while not growing, 0 when
/// at or over it.
pub fn time_to(limit: u64, bytes: u64, rate: Option<f64>) -> Option<f64> {
    let r = rate.filter(|r| *r >= MIN_RATE)?;
    Some(limit.saturating_sub(bytes) as f64 / r)
}

/// The `predict_linear(x[range], horizon)` of Prometheus over the same samples: the least
/// squares line through the last `range` seconds, extended `horizon` seconds past the newest.
/// The baseline alert (`predict_linear(working_set[5m], 60) > limit`) the docs compare with.
pub fn predict_linear(samples: &[(f64, f64)], range: f64, horizon: f64) -> Option<f64> {
    let &(tn, _) = samples.last()?;
    let pts: Vec<_> = samples.iter().filter(|(t, _)| tn - t <= range).collect();
    if pts.len() < 2 {
        return None;
    }
    let n = pts.len() as f64;
    let mt = pts.iter().map(|(t, _)| t).sum::<f64>() / n;
    let mv = pts.iter().map(|(_, v)| v).sum::<f64>() / n;
    let sxx: f64 = pts.iter().map(|(t, _)| (t - mt) * (t - mt)).sum();
    let sxy: f64 = pts.iter().map(|(t, v)| (t - mt) * (v - mv)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    Some(mv + slope * (tn + horizon - mt))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: f64 = 1024.0 * 1024.0;

    fn series(f: impl Fn(f64) -> f64, secs: u32) -> Series {
        let mut s = Series::default();
        for i in 0..=secs {
            let t = f64::from(i);
            s.push(t, f(t) as u64);
        }
        s
    }

    #[test]
    fn a_steady_leak_reads_at_its_rate() {
        let s = series(|t| 50.0 * MIB + 10.0 * MIB * t, 40);
        let r = s.rate().unwrap();
        assert!((r - 10.0 * MIB).abs() < 0.01 * MIB, "{}", r / MIB);
        assert!(s.len() <= (WINDOW_S + ENVELOPE_S) as usize + 1);
    }

    #[test]
    fn a_leak_is_seen_soon_after_the_envelope_fills() {
        let s = series(|t| 10.0 * MIB * t, 11);
        assert!(s.rate().is_none(), "two envelope points are not a slope");
        let s = series(|t| 10.0 * MIB * t, 12);
        assert!(s.rate().is_some_and(|r| r > 9.0 * MIB));
    }

    #[test]
    fn a_gc_sawtooth_does_not_grow() {
        // Rises 20 MiB/s for 4 s, then drops back: a tooth every 5 s, peaking at 180 MiB.
        let saw = |t: f64| 100.0 * MIB + 20.0 * MIB * (t % 5.0);
        let s = series(saw, 60);
        let r = s.rate().unwrap();
        assert!(r.abs() < MIN_RATE, "a sawtooth read as {} MiB/s", r / MIB);
        assert_eq!(time_to(190 << 20, 180 << 20, Some(r)), None);
        // A least-squares slope over its last 4 s (one rising edge) would call it a leak.
        let raw: Vec<(f64, f64)> = (56..=59).map(|t| (f64::from(t), saw(f64::from(t)))).collect();
        assert!(theil_sen(&raw).unwrap() > 10.0 * MIB);
    }

    #[test]
    fn flat_and_noisy_is_not_growing() {
        let s = series(
            |t| 95.0 * MIB + if (t as u32).is_multiple_of(2) { 4096.0 } else { 0.0 },
            40,
        );
        assert_eq!(time_to(100 << 20, 95 << 20, s.rate()), None);
    }

    #[test]
    fn time_to_the_limit() {
        assert_eq!(time_to(100, 40, Some(MIN_RATE)), Some(60.0 / MIN_RATE));
        assert_eq!(time_to(100, 140, Some(MIN_RATE)), Some(0.0));
        assert_eq!(time_to(100, 40, Some(1.0)), None);
        assert_eq!(time_to(100, 40, None), None);
    }

    #[test]
    fn predict_linear_extends_the_fitted_line() {
        let pts: Vec<(f64, f64)> = (0..=300).map(|t| (f64::from(t), 2.0 * f64::from(t))).collect();
        let p = predict_linear(&pts, 300.0, 60.0).unwrap();
        assert!((p - 720.0).abs() < 1e-6, "{p}");
    }
}
