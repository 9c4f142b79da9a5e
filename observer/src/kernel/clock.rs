//! The kernel's clock (`CLOCK_BOOTTIME`, what `bpf_ktime_get_boot_ns` reads) and wall time.

use std::time::{Duration, SystemTime};

/// `CLOCK_BOOTTIME` now, in nanoseconds (the clock of every record's `ktime_ns`).
pub fn boot_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Converts `CLOCK_BOOTTIME` nanoseconds to wall-clock time.
pub fn boot_to_wall(ktime_ns: u64) -> SystemTime {
    let now_wall = SystemTime::now();
    let now_boot = boot_ns();
    match now_boot.checked_sub(ktime_ns) {
        Some(ago) => now_wall - Duration::from_nanos(ago),
        None => now_wall + Duration::from_nanos(ktime_ns - now_boot),
    }
}

/// A wall-clock time as the events write it (RFC 3339, nanoseconds, UTC).
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

/// A `CLOCK_BOOTTIME` instant as the events write it.
pub fn boot_rfc3339(ktime_ns: u64) -> String {
    rfc3339(boot_to_wall(ktime_ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_time_maps_to_now() {
        let wall = boot_to_wall(boot_ns());
        let off = SystemTime::now()
            .duration_since(wall)
            .unwrap_or_else(|e| e.duration());
        assert!(off < Duration::from_secs(1), "{off:?}");
        assert!(boot_rfc3339(boot_ns()).ends_with('Z'));
    }
}
