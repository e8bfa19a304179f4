//! The broker's wall clock, in one place. Record timestamps (the offsets
//! records a group commit writes), topic creation times and the producer
//! state's expiry read the time here or through the [`Clock`] seam the
//! storage crate defines, so sans-IO cores take time as input and a test
//! can substitute a `fjord_storage::ManualClock`. Deadlines and timers use the
//! monotonic `Instant` of the driver that owns them (e.g. the group host),
//! never this clock.

pub use fjord_storage::{Clock, SystemClock};

/// Milliseconds since the Unix epoch (0 if the system clock is before it).
pub fn now_ms() -> i64 {
    SystemClock.now_ms()
}

/// Milliseconds on a clock that never jumps: the wall clock as read at
/// this process's first call, plus the monotonic time since. Timeouts
/// measured on it (the controller's broker sessions) survive steps of the
/// wall clock (NTP, a VM resumed), which would otherwise fence live
/// brokers; its values stay close to wall time, so records may carry them
/// as timestamps.
pub fn steady_ms() -> i64 {
    static ANCHOR: std::sync::OnceLock<(std::time::Instant, i64)> = std::sync::OnceLock::new();
    let (instant, wall) = ANCHOR.get_or_init(|| (std::time::Instant::now(), now_ms()));
    wall.saturating_add(i64::try_from(instant.elapsed().as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_steady_clock_starts_at_the_wall_clock_and_never_goes_back() {
        let first = super::steady_ms();
        assert!((first - super::now_ms()).abs() < 60_000);
        let mut last = first;
        for _ in 0..1000 {
            let now = super::steady_ms();
            assert!(now >= last);
            last = now;
        }
    }
}
