//! The work one shard asks of the shard that owns a partition (or of shard
//! 0, which owns the topic registry), and its results. Everything here is
//! `Send`: these values cross the shard mesh. Batches travel as
//! [`bytes::Bytes`] (reference-counted, never copied by a hop; a produce's
//! as [`VerifiedBatches`], one `Bytes` per batch).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fjord_schema::{ErrorCode, LeaderEpoch, NodeId, Offset, PartitionId};

use crate::batches::VerifiedBatches;
use crate::error::{PartitionsError, ShardUnavailable, TopicOpError};
use crate::group::ops::{GroupOp, GroupReply};
use crate::metadata::catalog::Catalog;
use crate::metadata::image::{PartitionEpoch, PartitionImage, TopicId};
use crate::topic::{ConfigAlter, TopicConfig};

/// A request to one shard.
#[derive(Debug)]
pub enum Op {
    /// Append `records` (verified where they entered the broker; the
    /// owning shard checks only `max.message.bytes`).
    Produce {
        topic: String,
        partition: PartitionId,
        records: VerifiedBatches,
        acks: i8,
        /// acks=all waits at most this (the request's `timeout_ms`).
        timeout: Duration,
    },
    /// Read whole batches from `offset`, up to the high watermark.
    Fetch {
        topic: String,
        partition: PartitionId,
        offset: i64,
        max_bytes: usize,
        /// The leader epoch the client believes current (`None`: not
        /// checked).
        current_leader_epoch: Option<LeaderEpoch>,
        /// The fetching follower (`None`: a consumer).
        replica_id: Option<NodeId>,
        /// The follower's durable end, when it reports one.
        replica_durable_end: Option<Offset>,
    },
    /// Where `leader_epoch` ends in this partition's log (the leader's
    /// leader-epoch cache): `OffsetForLeaderEpoch`.
    OffsetForLeaderEpoch {
        topic: String,
        partition: PartitionId,
        current_leader_epoch: Option<LeaderEpoch>,
        leader_epoch: LeaderEpoch,
    },
    /// Complete when the partition's high watermark passes `offset`, the
    /// partition goes away, or `deadline` passes (long-poll fetch).
    WaitForData {
        topic: String,
        partition: PartitionId,
        offset: i64,
        deadline: Instant,
        /// A follower's fetch: wait on the log end, not the high
        /// watermark.
        replica: bool,
    },
    ListOffsets {
        topic: String,
        partition: PartitionId,
        timestamp: i64,
        /// As in [`Op::Fetch`].
        current_leader_epoch: Option<LeaderEpoch>,
        replica_id: Option<NodeId>,
    },
    /// Open (create or recover) these partitions' logs on this shard, as
    /// leaders or followers as the metadata image says (one
    /// `PartitionImage` per partition).
    Open {
        topic: String,
        partitions: Vec<PartitionId>,
        leaderships: Vec<PartitionImage>,
        config: TopicConfig,
    },
    /// The metadata image changed these open partitions' leader, ISR,
    /// replicas or epochs.
    Leadership {
        topic: String,
        partitions: Vec<(PartitionId, PartitionImage)>,
    },
    /// Shard 0 only: a leader's ISR change for the controller
    /// (`AlterPartition`); answered with [`OpResult::Altered`].
    AlterPartition {
        topic: String,
        partition: PartitionId,
        leader_epoch: LeaderEpoch,
        partition_epoch: PartitionEpoch,
        new_isr: Vec<NodeId>,
    },
    /// Shard 0 only: a block of producer ids from the controller
    /// (`ProducerIdsBlock`), unique cluster-wide.
    ProducerIdBlock,
    /// Close these partitions' logs and delete their directories.
    Delete {
        topic: String,
        partitions: Vec<PartitionId>,
    },
    /// Apply a topic's changed config to these partitions' open logs.
    Reconfigure {
        topic: String,
        partitions: Vec<PartitionId>,
        config: TopicConfig,
    },
    /// Swap in a new catalog snapshot.
    SetCatalog(Arc<Catalog>),
    /// Shard 0 only: create topics in the registry.
    CreateTopics {
        topics: Vec<CreateSpec>,
        validate_only: bool,
    },
    /// Shard 0 only: delete topics from the registry.
    DeleteTopics { topics: Vec<String> },
    /// Shard 0 only: change topics' configs in the registry and on the
    /// owning shards.
    AlterTopicConfigs {
        topics: Vec<AlterSpec>,
        validate_only: bool,
    },
    /// Shard 0 only: grow topics to (name, partition count).
    CreatePartitions {
        topics: Vec<(String, u32)>,
        validate_only: bool,
    },
    /// Shard 0 only: leader elections through the controller (Kafka's
    /// ElectLeaders): these partitions by topic name (`None`: every
    /// partition); `preferred` or unclean.
    ElectLeaders {
        partitions: Option<Vec<(String, Vec<u32>)>>,
        preferred: bool,
    },
    /// A consumer-group request, for the shard that hosts the group.
    Group(GroupOp),
    /// Offline state and known damaged ranges of these partitions.
    Health {
        topic: String,
        partitions: Vec<PartitionId>,
    },
}

/// One topic of a CreateTopics request.
#[derive(Debug, Clone)]
pub struct CreateSpec {
    pub name: String,
    /// -1: the broker default.
    pub num_partitions: i32,
    /// -1 or 1 on a single node.
    pub replication_factor: i16,
    pub configs: Vec<(String, String)>,
    /// Explicit replica assignments (partition, broker ids); empty: none.
    /// Given only with `num_partitions` and `replication_factor` -1.
    pub assignments: Vec<(i32, Vec<i32>)>,
}

/// One topic of an AlterConfigs / IncrementalAlterConfigs request.
#[derive(Debug, Clone)]
pub struct AlterSpec {
    pub name: String,
    pub alter: ConfigAlter,
}

/// The result of an [`Op`].
#[derive(Debug)]
pub enum OpResult {
    Produce(ProduceResult),
    Fetch(FetchResult),
    Waited,
    ListOffsets(ListOffsetsResult),
    EpochEnd(EpochEndResult),
    /// The controller's answer to an AlterPartition (NONE: committed).
    Altered(ErrorCode),
    /// Open, Delete, Reconfigure, SetCatalog.
    Done(Result<(), PartitionsError>),
    Topics(Vec<TopicOutcome>),
    Group(GroupReply),
    Health(Vec<PartitionHealth>),
    /// One outcome per partition of an ElectLeaders, or why the
    /// controller gave none.
    Elections(Result<Vec<ElectionOutcome>, TopicOpError>),
    /// Producer ids `[first, first + size)`, or why none.
    ProducerIdBlock(Result<(i64, u32), TopicOpError>),
    /// The op could not reach its shard (stopping) or was sent to the
    /// wrong one.
    Unavailable(ShardUnavailable),
}

/// The outcome of one partition of an ElectLeaders (Kafka's
/// `PartitionResult`): NONE when a leader was elected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionOutcome {
    pub topic: String,
    pub partition: u32,
    pub error: ErrorCode,
    pub message: Option<String>,
}

/// What `describe` shows about a partition's replica on this node: its
/// storage, its offsets, and (when this replica leads) its followers'
/// progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionHealth {
    pub partition: PartitionId,
    /// Why recovery kept the partition offline.
    pub offline: Option<String>,
    pub damaged: Vec<DamagedRange>,
    /// The replica's log end and high watermark; `None` when it is not
    /// open here.
    pub offsets: Option<ReplicaOffsets>,
    /// Each follower's fetch offset (its log end) as the leader's state
    /// last saw it, `None` before its first fetch under this leadership;
    /// in replica order. Empty unless this replica leads with followers.
    pub followers: Vec<(NodeId, Option<Offset>)>,
}

/// A replica's log end and high watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaOffsets {
    pub log_end: Offset,
    pub high_watermark: Offset,
}

/// Bytes of a segment that fail verification and the offsets
/// `[first_offset, end_offset)` they make unreadable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DamagedRange {
    pub segment_base: u64,
    pub bytes_start: u64,
    pub bytes_end: u64,
    pub first_offset: u64,
    pub end_offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceResult {
    pub error: ErrorCode,
    pub message: Option<String>,
    pub base_offset: i64,
    pub log_start_offset: i64,
}

impl ProduceResult {
    pub fn error(error: ErrorCode, message: impl Into<String>) -> ProduceResult {
        ProduceResult {
            error,
            message: Some(message.into()),
            base_offset: -1,
            log_start_offset: -1,
        }
    }
}

#[derive(Debug, Clone)]
pub struct FetchResult {
    pub error: ErrorCode,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    /// Whole batches, as stored (shared with the cache, not copied).
    pub batches: Vec<Bytes>,
}

impl FetchResult {
    pub fn error(error: ErrorCode) -> FetchResult {
        FetchResult {
            error,
            high_watermark: -1,
            log_start_offset: -1,
            batches: Vec::new(),
        }
    }

    pub fn bytes(&self) -> usize {
        self.batches.iter().map(Bytes::len).sum()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListOffsetsResult {
    pub error: ErrorCode,
    pub offset: i64,
    pub timestamp: i64,
}

impl ListOffsetsResult {
    pub fn error(error: ErrorCode) -> ListOffsetsResult {
        ListOffsetsResult {
            error,
            offset: -1,
            timestamp: -1,
        }
    }
}

/// The outcome for one topic of a CreateTopics, DeleteTopics,
/// CreatePartitions or config alter request.
#[derive(Debug)]
pub struct TopicOutcome {
    pub name: String,
    /// `None`: done.
    pub error: Option<TopicOpError>,
    pub num_partitions: i32,
    /// A created topic's id (CreateTopics v7+ answers it).
    pub topic_id: Option<TopicId>,
}

impl TopicOutcome {
    /// The wire error code (NONE when done).
    pub fn code(&self) -> ErrorCode {
        self.error
            .as_ref()
            .map_or(ErrorCode::None, TopicOpError::code)
    }

    /// The error message the edges send, if any.
    pub fn message(&self) -> Option<String> {
        self.error.as_ref().map(ToString::to_string)
    }

    /// An outcome without partitions or an id: `error`, or done (`None`)
    /// for a config change.
    pub fn of(name: String, error: Option<TopicOpError>) -> TopicOutcome {
        TopicOutcome {
            name,
            error,
            num_partitions: -1,
            topic_id: None,
        }
    }

    /// The same error for every topic of a request.
    pub fn refuse_all(
        names: impl IntoIterator<Item = String>,
        error: impl Fn() -> TopicOpError,
    ) -> Vec<TopicOutcome> {
        names
            .into_iter()
            .map(|name| TopicOutcome::of(name, Some(error())))
            .collect()
    }
}

/// The answer for one [`EpochQuery`]: the largest epoch at or below the
/// asked one and the offset where it ends (the next epoch's start, or the
/// log end); -1 and -1 when undefined (Kafka's UNDEFINED_EPOCH and
/// UNDEFINED_EPOCH_OFFSET).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEndResult {
    pub error: ErrorCode,
    pub leader_epoch: i32,
    pub end_offset: i64,
}

impl EpochEndResult {
    pub fn error(error: ErrorCode) -> EpochEndResult {
        EpochEndResult {
            error,
            leader_epoch: -1,
            end_offset: -1,
        }
    }
}
