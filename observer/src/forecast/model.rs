//! One cgroup's unreclaimable memory over time, and how fast it grows.
//!
//! The rate is the Theil–Sen slope (the median of the slopes between every pair of points)
//! of the series' running *minimum* over [`ENVELOPE_S`] (its floor), over the last
//! [`RECENT_S`], counted only when the floor rose at most of those ticks
//! ([`RISING_SHARE`]):
//! - A garbage collector's sawtooth rises and drops back: its floor stays flat once the
//!   window holds a whole tooth, so a sawtooth peaking just under its limit reads as not
//!   growing (a slope over the raw samples reads each rising edge as a leak).
//! - A leak raises the floor at every tick: the floor lags the series by [`ENVELOPE_S`] but
//!   climbs at the leak's rate.
//! - A step (one big allocation, then flat) or a start-up ramp raises the floor once,
//!   [`ENVELOPE_S`] late, over the few ticks the ramp took: a slope alone reads that as
//!   growth for [`RECENT_S`], the share of rising ticks does not.
//! - Theil–Sen, not least squares: one outlier moves the median of the slopes by little,
//!   where it would pull a fitted line. Its cost, O(n²) pairs for n ≤ 9 points, is nothing.
//! - Only the recent slope: a longer window mixes an earlier flat spell into the present.
//! - No rate before [`WARMUP_S`] of samples: a cgroup's first seconds are its start-up.
//!
//! How it got here, on this host (`tests/tests/forecast.rs`): the floor's slope over 30 s
//! read a 10 MiB/s leak after a flat spell as 4.7 MiB/s 16 s in; the floor's slope over 8 s
//! read a hog that took 95 % of its limit in its first second as growing 120 MiB/s ten
//! seconds later; the smaller of the floor's and the ceiling's slopes still warned on a
//! sawtooth starting in a cgroup already watched (its ceiling, sampled once a second, rose
//! whenever a sample caught a tooth nearer its peak).
//!
//! The price: a leak is seen [`ENVELOPE_S`] + 2 s after it starts at the earliest (a leak
//! filling its limit faster than that gets no warning); a cycle longer than [`ENVELOPE_S`]
//! looks like growth; a leak under a sawtooth raises the floor only when a trough leaves
//! the window, at too few ticks to count.

use std::{cell::Cell, collections::VecDeque};

/// How far back the running minimum looks: the longest GC cycle read as a sawtooth.
pub const ENVELOPE_S: f64 = 10.0;
/// How long samples are kept.
pub const WINDOW_S: f64 = 30.0;
/// How far back the slopes look.
pub const RECENT_S: f64 = 8.0;
/// No rate before a cgroup has this much history.
pub const WARMUP_S: f64 = 20.0;
/// The share of the last [`RECENT_S`]'s ticks at which the floor must have risen.
pub const RISING_SHARE: f64 = 0.6;
/// Growth slower than this is no growth (a page a second is noise).
pub const MIN_RATE: f64 = 16.0 * 1024.0;
/// Room made for a series' first samples: a quiet cgroup's level is carried in every 5 s
/// (`schedule::CARRY_EVERY`), 9 samples over the window. A deque left to grow by doubling
/// holds 16, and at 10,000 containers the spare room was 2 MiB.
const FIRST_ROOM: usize = 10;

/// A cgroup's samples: (seconds, bytes), oldest first.
#[derive(Debug, Clone, Default)]
pub struct Series {
    samples: VecDeque<(f64, u64)>,
    /// [`rate`](Self::rate) since the last push: a tick asks for it once per target that
    /// counts against the limit, and a quiet cgroup gets a sample every few seconds only.
    rate: Cell<Option<Option<f64>>>,
    /// The newest sample's time, beside the samples rather than behind a pointer: a tick
    /// asks it of every quiet cgroup (issue 24's cost at 10,000 containers).
    last_t: Option<f64>,
}

impl Series {
    /// Adds a sample taken at `t` seconds (monotonic) and forgets what no longer counts.
    pub fn push(&mut self, t: f64, bytes: u64) {
        if self.samples.back().is_some_and(|&(last, _)| t <= last) {
            return;
        }
        let (len, room) = (self.samples.len(), self.samples.capacity());
        if len == room {
            self.samples.reserve_exact(if room < FIRST_ROOM {
                FIRST_ROOM - len
            } else {
                len
            });
        }
        self.samples.push_back((t, bytes));
        self.rate.set(None);
        self.last_t = Some(t);
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

    /// The newest sample's time.
    pub fn last_time(&self) -> Option<f64> {
        self.last_t
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no sample is held.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The running minimum (`floor`; else the maximum) over the last [`ENVELOPE_S`], at each
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

    /// Bytes per second the series' floor grows at; 0 when it rose at too few of the
    /// recent ticks; `None` before [`WARMUP_S`] of samples.
    pub fn rate(&self) -> Option<f64> {
        if let Some(r) = self.rate.get() {
            return r;
        }
        let r = self.compute_rate();
        self.rate.set(Some(r));
        r
    }

    fn compute_rate(&self) -> Option<f64> {
        let (&(t0, _), &(tn, _)) = (self.samples.front()?, self.samples.back()?);
        if tn - t0 < WARMUP_S - 0.5 {
            return None;
        }
        let floor = self.envelope(true);
        let slope = theil_sen(&floor)?;
        let steps = floor.len().saturating_sub(1).max(1);
        let rose = floor.windows(2).filter(|w| w[1].1 > w[0].1).count();
        Some(if rose as f64 >= RISING_SHARE * steps as f64 {
            slope
        } else {
            slope.min(0.0)
        })
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
        // late, at the one tick its window passes the step.
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
    fn a_sawtooth_starting_in_a_watched_cgroup_does_not_grow() {
        // Idle for 25 s, then a climb to 185 MiB at 40 MiB/s and teeth between 100 and 185.
        let saw = |t: f64| {
            let x = (t - 25.0).max(0.0) * 40.0;
            let v = if x <= 185.0 {
                3.0 + x
            } else {
                100.0 + (x - 185.0) % 85.0
            };
            v * MIB
        };
        for end in 20..120 {
            let r = series(saw, end).rate().unwrap();
            assert!(r < MIN_RATE, "{} MiB/s at {end} s", r / MIB);
        }
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
}
