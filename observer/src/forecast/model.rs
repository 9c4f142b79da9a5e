//! One cgroup's unreclaimable memory over time, and how fast it grows.
//!
//! The rate is the smaller of two Theil–Sen slopes (the median of the slopes between every
//! pair of points) over the last [`RECENT_S`]: the slope of the series' running *minimum*
//! over [`ENVELOPE_S`] (its floor) and of its running *maximum* (its ceiling).
//! - A garbage collector's sawtooth rises and drops back: its floor and its ceiling stay
//!   flat once a window holds a whole tooth, so a sawtooth peaking just under its limit
//!   reads as not growing (a slope over the raw samples reads each rising edge as a leak).
//! - A leak raises both: the floor lags the series by [`ENVELOPE_S`] but climbs at the
//!   leak's rate.
//! - A step (one big allocation, then flat) raises the floor [`ENVELOPE_S`] late, while the
//!   ceiling is flat by then: the smaller slope is ~0. Same for the end of a start-up ramp.
//! - Theil–Sen, not least squares: one outlier moves the median of the slopes by little,
//!   where it would pull a fitted line. Its cost, O(n²) pairs for n ≤ 9 points, is nothing.
//! - Only the recent slope: a slope over a longer window mixes an earlier flat spell (or a
//!   start-up ramp) into the present.
//! - No rate before [`WARMUP_S`] of samples: a cgroup's first seconds are its start-up.
//!
//! Tried on the host first with the floor alone over 30 s: a leak of 10 MiB/s after a flat
//! spell read 4.7 MiB/s 16 s in, and a hog holding 95 % of its limit from its first second
//! read as growing 120 MiB/s ten seconds later (its floor caught up with the step). Both are
//! the integration test's workloads (`tests/tests/forecast.rs`).
//!
//! The price: a leak is seen only [`WARMUP_S`] after its cgroup is first read and
//! [`ENVELOPE_S`] + 2 s after it starts, and a cycle longer than [`ENVELOPE_S`] looks like
//! growth on its rising edge.

use std::collections::VecDeque;

/// How far back the running minimum looks: the longest GC cycle read as a sawtooth.
pub const ENVELOPE_S: f64 = 10.0;
/// How long samples are kept.
pub const WINDOW_S: f64 = 30.0;
/// How far back the slopes look.
pub const RECENT_S: f64 = 8.0;
/// No rate before a cgroup has this much history.
pub const WARMUP_S: f64 = 20.0;
/// Growth slower than this is no growth (a page a second is noise).
pub const MIN_RATE: f64 = 16.0 * 1024.0;

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

    /// The running minimum (`floor`) or maximum over the last [`ENVELOPE_S`], at each
    /// sample of the last [`RECENT_S`] that has that much history behind it.
    fn envelope(&self, floor: bool) -> Vec<(f64, f64)> {
        let (Some(&(t0, _)), Some(&(tn, _))) = (self.samples.front(), self.samples.back()) else {
            return Vec::new();
        };
        let s = &self.samples;
        let mut out = Vec::new();
        for (i, &(t, _)) in s.iter().enumerate() {
            // A 1 s tick lands a little early or late: half a second of slack.
            if t - t0 < ENVELOPE_S - 0.5 || tn - t > RECENT_S + 0.5 {
                continue;
            }
            let win = s
                .iter()
                .take(i + 1)
                .filter(|&&(tj, _)| t - tj <= ENVELOPE_S + 0.5)
                .map(|&(_, v)| v);
            let v = if floor { win.min() } else { win.max() };
            out.push((t, v.unwrap_or(0) as f64));
        }
        out
    }

    /// Bytes per second the series grows at (the smaller of its floor's and its ceiling's
    /// slopes); `None` before [`WARMUP_S`] of samples.
    pub fn rate(&self) -> Option<f64> {
        let (&(t0, _), &(tn, _)) = (self.samples.front()?, self.samples.back()?);
        if tn - t0 < WARMUP_S - 0.5 {
            return None;
        }
        let floor = theil_sen(&self.envelope(true))?;
        let ceiling = theil_sen(&self.envelope(false))?;
        Some(floor.min(ceiling))
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
    fn no_rate_during_the_warm_up() {
        let s = series(|t| 10.0 * MIB * t, 18);
        assert!(
            s.rate().is_none(),
            "a cgroup's first seconds are its start-up"
        );
        let s = series(|t| 10.0 * MIB * t, 20);
        assert!(s.rate().is_some_and(|r| r > 9.0 * MIB));
    }

    #[test]
    fn a_leak_after_a_flat_spell_reads_at_its_rate_once_the_floor_rises() {
        // Flat for 20 s, then 10 MiB/s: the floor (10 s behind) rises from t = 30.
        let s = series(|t| 10.0 * MIB * (t - 20.0).max(0.0), 30);
        assert!(s.rate().is_some_and(|r| r < MIN_RATE), "not yet");
        let s = series(|t| 10.0 * MIB * (t - 20.0).max(0.0), 38);
        let r = s.rate().unwrap();
        assert!((r - 10.0 * MIB).abs() < 0.5 * MIB, "{} MiB/s", r / MIB);
    }

    #[test]
    fn a_step_then_flat_does_not_grow() {
        // 245 MiB at once in the first second, then nothing: the floor catches up 10 s
        // late, the ceiling is flat by then.
        for end in 20..60 {
            let s = series(|t| if t < 1.0 { 3.0 * MIB } else { 245.0 * MIB }, end);
            assert!(
                s.rate().is_none_or(|r| r < MIN_RATE),
                "at {end} s: {:?}",
                s.rate()
            );
        }
    }

    #[test]
    fn a_gc_sawtooth_does_not_grow() {
        // Rises 20 MiB/s for 4 s, then drops back: a tooth every 5 s, peaking at 180 MiB.
        let saw = |t: f64| 100.0 * MIB + 20.0 * MIB * (t % 5.0);
        for end in 20..90 {
            let r = series(saw, end).rate().unwrap();
            assert!(
                r < MIN_RATE,
                "a sawtooth read as {} MiB/s at {end} s",
                r / MIB
            );
        }
        let r = series(saw, 60).rate().unwrap();
        assert_eq!(time_to(190 << 20, 180 << 20, Some(r)), None);
        // A least-squares slope over its last 4 s (one rising edge) would call it a leak.
        let raw: Vec<(f64, f64)> = (56..=59)
            .map(|t| (f64::from(t), saw(f64::from(t))))
            .collect();
        assert!(theil_sen(&raw).unwrap() > 10.0 * MIB);
    }

    #[test]
    fn flat_and_noisy_is_not_growing() {
        let s = series(
            |t| {
                95.0 * MIB
                    + if (t as u32).is_multiple_of(2) {
                        4096.0
                    } else {
                        0.0
                    }
            },
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
        let pts: Vec<(f64, f64)> = (0..=300)
            .map(|t| (f64::from(t), 2.0 * f64::from(t)))
            .collect();
        let p = predict_linear(&pts, 300.0, 60.0).unwrap();
        assert!((p - 720.0).abs() < 1e-6, "{p}");
    }
}
