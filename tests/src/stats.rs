//! Small statistics for the race and the benchmarks.

use std::time::SystemTime;

/// Milliseconds from `a` to `b` (negative when `b` is earlier).
pub fn ms(a: SystemTime, b: SystemTime) -> f64 {
    match b.duration_since(a) {
        Ok(d) => d.as_secs_f64() * 1e3,
        Err(e) => -e.duration().as_secs_f64() * 1e3,
    }
}

/// The `p`th percentile (nearest rank) of a sorted sample; NaN when empty.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Sorts a sample in place; returns p50, p90, p99 and max.
pub fn summary(v: &mut [f64]) -> [f64; 4] {
    v.sort_by(|a, b| a.total_cmp(b));
    [
        pct(v, 50.0),
        pct(v, 90.0),
        pct(v, 99.0),
        v.last().copied().unwrap_or(f64::NAN),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn percentiles_and_signed_ms() {
        let mut v = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(summary(&mut v), [3.0, 5.0, 5.0, 5.0]);
        assert!(pct(&[], 50.0).is_nan());
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(10);
        assert_eq!(ms(t, t + Duration::from_millis(2)), 2.0);
        assert_eq!(ms(t + Duration::from_millis(2), t), -2.0);
    }
}
