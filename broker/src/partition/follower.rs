//! The follower side of a partition replica as the replica fetchers see
//! it (issue 14): [`ReplicaLogs`], implemented by
//! [`super::manager::PartitionManager`] and driven by
//! `crate::replication` (which re-exports these items), so replication
//! depends on the partitions and never the other way round.

use std::future::Future;

use bytes::Bytes;
use fjord_schema::{LeaderEpoch, NodeId, Offset, PartitionId};

use super::epochs::LeaderEpochCache;

/// A partition this shard holds as a follower of `leader` at
/// `leader_epoch` (from the committed metadata image).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Followed {
    pub topic: String,
    pub partition: PartitionId,
    pub leader: NodeId,
    pub leader_epoch: LeaderEpoch,
}

/// A follower's log, as a fetcher needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowerPosition {
    pub log_start: Offset,
    /// The offset to fetch from.
    pub log_end: Offset,
    /// Offsets below this are on stable storage.
    pub durable_end: Offset,
    /// What the leader last said (capped by `log_end`).
    pub high_watermark: Offset,
    /// The follower's leader-epoch cache (for `epochs::truncation_step`).
    pub epochs: LeaderEpochCache,
    /// The topic flushes before ack: the follower flushes what it appended
    /// and reports its durable end with its next fetch.
    pub flush_before_ack: bool,
}

/// Why a follower operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FollowerError {
    /// The partition is gone from this shard, or no longer follows that
    /// leader at that epoch: drop it and wait for the followed set to
    /// change.
    #[error("{topic}-{partition} is not followed at epoch {leader_epoch} here")]
    NotFollowing {
        topic: String,
        partition: PartitionId,
        leader_epoch: LeaderEpoch,
    },
    /// The leader's batches do not continue the log or fail verification:
    /// find the divergence point again (`OffsetForLeaderEpoch`).
    #[error("the leader's batches do not fit the log: {0}")]
    Diverged(String),
    /// Storage failed (a full disk, an I/O error): retry with backoff.
    #[error("storage: {0}")]
    Storage(String),
}

/// The local side of replication on one shard: what the replica fetchers
/// of this shard read and change. Single-threaded (the shard's).
#[allow(async_fn_in_trait)]
pub trait ReplicaLogs {
    /// The partitions this shard follows, and the version of that set.
    fn followed(&self) -> (u64, Vec<Followed>);
    /// Returns once the followed set changed past version `seen`.
    fn followed_changed(&self, seen: u64) -> impl Future<Output = ()>;
    /// Where the follower's log stands.
    fn position(
        &self,
        topic: &str,
        partition: PartitionId,
        leader_epoch: LeaderEpoch,
    ) -> Result<FollowerPosition, FollowerError>;
    /// Cuts the log to end at `end` (whole batches; durably, with its
    /// leader-epoch cache). `end` past the log end (the leader's log start
    /// is past everything here) restarts the log empty at `end`.
    async fn truncate(
        &self,
        topic: &str,
        partition: PartitionId,
        leader_epoch: LeaderEpoch,
        end: Offset,
    ) -> Result<FollowerPosition, FollowerError>;
    /// Appends the leader's `batches` verbatim (same bytes, offsets and
    /// epochs; each must continue the log), updates the producer state and
    /// the epoch cache from their headers, and takes the leader's high
    /// watermark and log start.
    async fn append(
        &self,
        topic: &str,
        partition: PartitionId,
        leader_epoch: LeaderEpoch,
        batches: Vec<Bytes>,
        leader_high_watermark: Offset,
        leader_log_start: Offset,
    ) -> Result<FollowerPosition, FollowerError>;
    /// Makes everything appended durable (flush-before-ack topics, before
    /// the next fetch reports the durable end).
    async fn flush(
        &self,
        topic: &str,
        partition: PartitionId,
        leader_epoch: LeaderEpoch,
    ) -> Result<FollowerPosition, FollowerError>;
}
