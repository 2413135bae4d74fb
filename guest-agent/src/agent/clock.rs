//! Guest uptime.

use nix::time::{clock_gettime, ClockId};

/// Milliseconds since boot (CLOCK_BOOTTIME), 0 if the clock cannot be read.
pub fn boottime_ms() -> u64 {
    let Ok(now) = clock_gettime(ClockId::CLOCK_BOOTTIME) else {
        return 0;
    };
    let secs = u64::try_from(now.tv_sec()).unwrap_or(0);
    let nanos = u64::try_from(now.tv_nsec()).unwrap_or(0);
    secs.saturating_mul(1000).saturating_add(nanos / 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boottime_is_positive_and_monotonic() {
        let a = boottime_ms();
        let b = boottime_ms();
        assert!(a > 0);
        assert!(b >= a);
    }
}
