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
