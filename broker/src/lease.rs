//! The broker lease (gap B of docs/CORRECTNESS.md): whether this node may
//! act as a partition leader and group coordinator now. Its own module, not
//! the lifecycle's that sets it, so the partition and group layers read it
//! without depending on the controller.

use std::sync::atomic::{AtomicU64, Ordering};

/// Whether this node may act as partition leader and group coordinator
/// now: until a steady-clock deadline (`clock::steady_ms`) that only the
/// lifecycle moves.
///
/// Lives in: one `Arc` per broker process, built by `server::run` before
/// any shard starts; shard 0's controller driver holds it in
/// `controller::driver::ClusterConfig::lease` and its lifecycle
/// (`controller/driver/lifecycle.rs`, `LeaseRule`) is its only writer;
/// every shard reads it through `ShardSpec::lease`, in its
/// `PartitionManager` (produce, consumer fetches, ListOffsets) and its
/// `GroupHost` (every group request). A read is one atomic load and one
/// monotonic clock read.
#[derive(Debug, Default)]
pub struct BrokerLease {
    /// The lease holds while `steady_ms < until_ms`: 0 = not held (the
    /// start state: a node serves nothing before its first acknowledged
    /// heartbeat), `u64::MAX` = held for good (see
    /// [`BrokerLease::hold_for_good`]).
    until_ms: AtomicU64,
}

impl BrokerLease {
    /// A lease not held yet.
    pub fn new() -> BrokerLease {
        BrokerLease::default()
    }

    /// Whether the lease holds now.
    pub fn holds(&self) -> bool {
        self.holds_at(steady_now_ms())
    }

    /// Whether the lease holds at `now_ms` (steady clock).
    pub fn holds_at(&self, now_ms: u64) -> bool {
        now_ms < self.until_ms.load(Ordering::Acquire)
    }

    /// The steady-clock time the lease ends at (0: not held).
    pub fn until_ms(&self) -> u64 {
        self.until_ms.load(Ordering::Acquire)
    }

    /// Moves the end of the lease to `until_ms` unless it already ends
    /// later: an answer to an older heartbeat, arriving after a newer one,
    /// never shortens it.
    pub fn extend_to(&self, until_ms: u64) {
        self.until_ms.fetch_max(until_ms, Ordering::AcqRel);
    }

    /// Ends the lease now (a `fenced` answer, a new registration).
    pub fn revoke(&self) {
        self.until_ms.store(0, Ordering::Release);
    }

    /// The node is the only voter of the metadata quorum: no controller
    /// elsewhere can fence it or move its leaderships (every change to
    /// them is a record it commits and applies itself), so it needs no
    /// lease, and a stalled shard 0 must not cost a one-node broker its
    /// partitions.
    pub fn hold_for_good(&self) {
        self.until_ms.store(u64::MAX, Ordering::Release);
    }
}

/// The steady clock, in the lease's unit.
pub fn steady_now_ms() -> u64 {
    u64::try_from(crate::clock::steady_ms()).unwrap_or(0)
}
