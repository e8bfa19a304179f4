//! The engine's typed requests and results: what an edge decodes its wire
//! request into, and what it encodes its response from. No protocol type
//! appears here; every per-partition error is an [`ErrorCode`] (with a
//! message where the partition can say more).
//!
//! Topics and partitions keep the request's order: a result vector has
//! one entry per topic, each with one entry per partition, in the order
//! they were asked, so an edge zips its own request with the results.

use std::time::Duration;

use fjord_schema::{
    ErrorCode, LeaderEpoch, NodeId, Offset, PartitionId, ProducerEpoch, ProducerId,
};

pub use crate::batches::{BatchesError, VerifiedBatches};
pub use crate::ops::{
    AlterSpec, CreateSpec, EpochEndResult, FetchResult, ListOffsetsResult, PartitionHealth,
    ProduceResult, TopicOutcome,
};

/// Partitions by topic name, in request order, each with its input.
pub type TopicParts<T> = Vec<(String, Vec<(PartitionId, T)>)>;

/// Results by topic and partition, in request order.
pub type TopicResults<R> = Vec<Vec<R>>;

/// Append whole native batches to partitions.
#[derive(Debug, Clone)]
pub struct ProduceRequest {
    /// -1 (all in-sync replicas), 0 (none: the client wants no answer) or
    /// 1 (the leader); anything else is refused per partition.
    pub acks: i8,
    /// How long acks=all may wait for the in-sync replicas (Kafka's
    /// `timeout_ms`; the owning shard caps it at its ack timeout): then
    /// REQUEST_TIMED_OUT.
    pub timeout: Duration,
    /// Each partition's batches, verified where they entered the broker
    /// (one `Bytes` per batch, moved to the owning shard as they are;
    /// recompressed only for a topic whose `compression.type` names
    /// another codec), or why they are not valid batches: the engine
    /// answers that partition with it (after the checks that come first:
    /// `acks`, routing, the internal topic), the others are appended.
    pub topics: TopicParts<Result<VerifiedBatches, BatchesError>>,
}

/// Read batches from partitions, long-polling until `min_bytes` are there
/// or `max_wait` passes.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    /// Capped by the engine's `fetch_wait_max`.
    pub max_wait: Duration,
    pub min_bytes: usize,
    /// Bytes of batches in the response, all partitions together (capped
    /// by the engine's `fetch_bytes_max` and in-flight budget); the first
    /// batch always goes, so a consumer makes progress.
    pub max_bytes: usize,
    /// The fetching broker for a follower fetch; `None` for a consumer
    /// (the wire's -1).
    pub replica_id: Option<NodeId>,
    pub isolation: IsolationLevel,
    pub topics: TopicParts<FetchPartition>,
}

/// One partition of a [`FetchRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchPartition {
    pub fetch_offset: i64,
    pub partition_max_bytes: usize,
    /// The leader epoch the client believes current; `None` (the wire's
    /// -1): not checked.
    pub current_leader_epoch: Option<LeaderEpoch>,
    /// A follower's durable end (it has the log below this on stable
    /// storage), reported with its fetch when the topic flushes before
    /// ack; `None` for consumers and when not reported.
    pub replica_durable_end: Option<Offset>,
}

/// One partition of an `OffsetForLeaderEpoch` (Kafka api 23, and the
/// followers' native one): where `leader_epoch` ends in the leader's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochQuery {
    /// As in [`FetchPartition::current_leader_epoch`].
    pub current_leader_epoch: Option<LeaderEpoch>,
    pub leader_epoch: LeaderEpoch,
}

/// Which records a fetch or list-offsets may see. Without transactions
/// both read up to the high watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IsolationLevel {
    #[default]
    ReadUncommitted,
    ReadCommitted,
}

/// Look up offsets by timestamp (-1 latest, -2 earliest, -3 max timestamp).
#[derive(Debug, Clone)]
pub struct ListOffsetsRequest {
    /// As in [`FetchRequest::replica_id`].
    pub replica_id: Option<NodeId>,
    pub isolation: IsolationLevel,
    pub topics: TopicParts<ListOffsetsPartition>,
}

/// One partition of a [`ListOffsetsRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListOffsetsPartition {
    pub timestamp: i64,
    /// As in [`FetchPartition::current_leader_epoch`].
    pub current_leader_epoch: Option<LeaderEpoch>,
}

/// An idempotent producer's id and epoch, or why there is none.
pub type ProducerIdResult = Result<(ProducerId, ProducerEpoch), (ErrorCode, String)>;

/// A wire leader epoch or replica id: `None` for a negative value (the
/// wire's "not given").
pub fn leader_epoch_of(wire: i32) -> Option<LeaderEpoch> {
    u32::try_from(wire).ok().map(LeaderEpoch)
}

/// As [`leader_epoch_of`], for a replica id.
pub fn replica_of(wire: i32) -> Option<NodeId> {
    u32::try_from(wire).ok().map(NodeId)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// -1 on either wire means "not given"; a real value is carried.
    #[test]
    fn wire_epochs_and_replica_ids_map_negative_to_none() {
        assert_eq!(leader_epoch_of(-1), None);
        assert_eq!(leader_epoch_of(0), Some(LeaderEpoch(0)));
        assert_eq!(leader_epoch_of(7), Some(LeaderEpoch(7)));
        assert_eq!(replica_of(-1), None);
        assert_eq!(replica_of(i32::MIN), None);
        assert_eq!(replica_of(3), Some(NodeId(3)));
    }
}
