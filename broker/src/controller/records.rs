//! The records of the metadata log (CLUSTER.md §2). Every node folds the
//! committed records, in log order, into its `MetadataImage`
//! (`MetadataImage::apply`). A record is self-contained: replaying the log
//! from a snapshot gives the same image on every node.
//!
//! Encoding: see [`MetadataRecord::encode`] (versioned; unknown versions
//! are refused, never guessed).

use std::collections::BTreeMap;

use fjord_schema::{LeaderEpoch, NodeId};

use crate::metadata::image::{BrokerEndpoints, PartitionEpoch, TopicId};

/// One entry of the metadata log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataRecord {
    /// A node (re)started: `incarnation` is new on every process start, so
    /// a record from an older process is told apart. The broker starts
    /// fenced; an `UnfenceBroker` follows once it has caught up.
    RegisterBroker {
        node: NodeId,
        incarnation: u64,
        endpoints: BrokerEndpoints,
        shards: u16,
        rack: Option<String>,
    },
    /// No heartbeat within `broker_session_timeout_ms` (or a controlled
    /// shutdown): the broker is not listed to clients and leads nothing.
    FenceBroker {
        node: NodeId,
        incarnation: u64,
    },
    UnfenceBroker {
        node: NodeId,
        incarnation: u64,
    },
    /// A topic created: its configs are the overrides given (the rest are
    /// the defaults of whoever folds the record).
    Topic {
        id: TopicId,
        name: String,
        created_ms: i64,
        overrides: BTreeMap<String, String>,
    },
    /// A partition created (at topic creation or CreatePartitions).
    Partition {
        topic: TopicId,
        partition: u32,
        replicas: Vec<NodeId>,
        isr: Vec<NodeId>,
        leader: Option<NodeId>,
        leader_epoch: LeaderEpoch,
        partition_epoch: PartitionEpoch,
    },
    /// A partition's leader and/or ISR changed (election, fencing,
    /// AlterPartition). Fields are the new values, whole.
    PartitionChange {
        topic: TopicId,
        partition: u32,
        isr: Vec<NodeId>,
        leader: Option<NodeId>,
        leader_epoch: LeaderEpoch,
        partition_epoch: PartitionEpoch,
    },
    RemoveTopic {
        id: TopicId,
    },
    /// A topic's overrides, whole, after an AlterConfigs.
    ConfigChange {
        topic: TopicId,
        overrides: BTreeMap<String, String>,
    },
    /// The cluster's id, chosen once by the first controller of an empty
    /// log (the first record of every cluster). A node whose
    /// `meta.properties` names another cluster refuses to serve.
    ClusterId {
        id: [u8; 16],
    },
    /// Producer ids `[first, first + size)` belong to `node`; the next
    /// block starts at `first + size`.
    ProducerIdsBlock {
        node: NodeId,
        first: i64,
        size: u32,
    },
}
