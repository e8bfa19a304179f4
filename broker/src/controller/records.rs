//! The records of the metadata log (CLUSTER.md §2). Every node folds the
//! committed records, in log order, into its `MetadataImage`
//! (`MetadataImage::apply`). A record is self-contained: replaying the log
//! from a snapshot gives the same image on every node.
//!
//! Encoding: see [`MetadataRecord::encode`] (versioned; unknown versions
//! are refused, never guessed).

use std::collections::BTreeMap;

use fjord_schema::{LeaderEpoch, NodeId};

pub use super::wire::DecodeError;
use super::wire::{
    broker_fits, Reader, Writer, CONFIGS_MAX, CONFIG_KEY_LEN_MAX, CONFIG_VALUE_LEN_MAX,
    RACK_LEN_MAX, REPLICAS_MAX,
};
use crate::metadata::image::{BrokerEndpoints, PartitionEpoch, TopicId};
use crate::topic::TOPIC_NAME_LEN_MAX;

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

/// The format version of every encoded record and batch this node writes
/// and reads. A new field or variant bumps it; a node refuses versions it
/// does not know (typed [`DecodeError::UnknownVersion`]) rather than
/// guessing.
pub const RECORD_VERSION: u8 = 1;
/// Most records of one Raft entry (one command's records: a topic
/// creation has one per partition, so this also bounds `partitions_max`
/// per command).
pub const BATCH_RECORDS_MAX: usize = 1 << 20;
/// Most records of one image snapshot (every topic, partition and broker).
pub const SNAPSHOT_RECORDS_MAX: usize = 1 << 24;

const TAG_REGISTER_BROKER: u8 = 1;
const TAG_FENCE_BROKER: u8 = 2;
const TAG_UNFENCE_BROKER: u8 = 3;
const TAG_TOPIC: u8 = 4;
const TAG_PARTITION: u8 = 5;
const TAG_PARTITION_CHANGE: u8 = 6;
const TAG_REMOVE_TOPIC: u8 = 7;
const TAG_CONFIG_CHANGE: u8 = 8;
const TAG_CLUSTER_ID: u8 = 9;
const TAG_PRODUCER_IDS_BLOCK: u8 = 10;

/// The smallest encoded record: version + tag + `FenceBroker`'s node (4)
/// and incarnation (8). A batch's count is checked against the bytes
/// left with it.
const RECORD_BYTES_MIN: usize = 2 + 12;

impl MetadataRecord {
    /// Appends this record's encoding (version byte, tag byte, fields,
    /// little-endian, strings and vectors length-prefixed) to `out`.
    /// Values over the decoder's limits ([`super::wire`]) are never
    /// produced by the controller, which checks them before proposing.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut w = Writer(out);
        w.u8(RECORD_VERSION);
        self.encode_body(&mut w);
    }

    fn encode_body(&self, w: &mut Writer<'_>) {
        match self {
            MetadataRecord::RegisterBroker {
                node,
                incarnation,
                endpoints,
                shards,
                rack,
            } => {
                w.u8(TAG_REGISTER_BROKER);
                w.node(*node);
                w.u64(*incarnation);
                w.endpoints(endpoints);
                w.u16(*shards);
                w.opt_str(rack.as_deref());
            }
            MetadataRecord::FenceBroker { node, incarnation } => {
                w.u8(TAG_FENCE_BROKER);
                w.node(*node);
                w.u64(*incarnation);
            }
            MetadataRecord::UnfenceBroker { node, incarnation } => {
                w.u8(TAG_UNFENCE_BROKER);
                w.node(*node);
                w.u64(*incarnation);
            }
            MetadataRecord::Topic {
                id,
                name,
                created_ms,
                overrides,
            } => {
                w.u8(TAG_TOPIC);
                w.topic_id(*id);
                w.str(name);
                w.i64(*created_ms);
                w.configs(overrides);
            }
            MetadataRecord::Partition {
                topic,
                partition,
                replicas,
                isr,
                leader,
                leader_epoch,
                partition_epoch,
            } => {
                w.u8(TAG_PARTITION);
                w.topic_id(*topic);
                w.u32(*partition);
                w.nodes(replicas);
                w.nodes(isr);
                w.opt_node(*leader);
                w.u32(leader_epoch.get());
                w.u32(*partition_epoch);
            }
            MetadataRecord::PartitionChange {
                topic,
                partition,
                isr,
                leader,
                leader_epoch,
                partition_epoch,
            } => {
                w.u8(TAG_PARTITION_CHANGE);
                w.topic_id(*topic);
                w.u32(*partition);
                w.nodes(isr);
                w.opt_node(*leader);
                w.u32(leader_epoch.get());
                w.u32(*partition_epoch);
            }
            MetadataRecord::RemoveTopic { id } => {
                w.u8(TAG_REMOVE_TOPIC);
                w.topic_id(*id);
            }
            MetadataRecord::ConfigChange { topic, overrides } => {
                w.u8(TAG_CONFIG_CHANGE);
                w.topic_id(*topic);
                w.configs(overrides);
            }
            MetadataRecord::ClusterId { id } => {
                w.u8(TAG_CLUSTER_ID);
                w.bytes16(id);
            }
            MetadataRecord::ProducerIdsBlock { node, first, size } => {
                w.u8(TAG_PRODUCER_IDS_BLOCK);
                w.node(*node);
                w.i64(*first);
                w.u32(*size);
            }
        }
    }

    /// Decodes one record from exactly `bytes` (left-over bytes are an
    /// error). Never panics.
    pub fn decode(bytes: &[u8]) -> Result<MetadataRecord, DecodeError> {
        let mut r = Reader::new(bytes);
        check_version(&mut r)?;
        let record = MetadataRecord::decode_body(&mut r)?;
        r.finish()?;
        Ok(record)
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<MetadataRecord, DecodeError> {
        let tag = r.u8("record tag")?;
        Ok(match tag {
            TAG_REGISTER_BROKER => MetadataRecord::RegisterBroker {
                node: r.node("node")?,
                incarnation: r.u64("incarnation")?,
                endpoints: r.endpoints()?,
                shards: r.u16("shards")?,
                rack: r.opt_str(RACK_LEN_MAX, "rack")?,
            },
            TAG_FENCE_BROKER => MetadataRecord::FenceBroker {
                node: r.node("node")?,
                incarnation: r.u64("incarnation")?,
            },
            TAG_UNFENCE_BROKER => MetadataRecord::UnfenceBroker {
                node: r.node("node")?,
                incarnation: r.u64("incarnation")?,
            },
            TAG_TOPIC => MetadataRecord::Topic {
                id: r.topic_id()?,
                name: r.topic_name()?,
                created_ms: r.i64("created_ms")?,
                overrides: r.configs()?,
            },
            TAG_PARTITION => MetadataRecord::Partition {
                topic: r.topic_id()?,
                partition: r.u32("partition")?,
                replicas: r.nodes("replicas")?,
                isr: r.nodes("isr")?,
                leader: r.opt_node("leader")?,
                leader_epoch: LeaderEpoch(r.u32("leader epoch")?),
                partition_epoch: r.u32("partition epoch")?,
            },
            TAG_PARTITION_CHANGE => MetadataRecord::PartitionChange {
                topic: r.topic_id()?,
                partition: r.u32("partition")?,
                isr: r.nodes("isr")?,
                leader: r.opt_node("leader")?,
                leader_epoch: LeaderEpoch(r.u32("leader epoch")?),
                partition_epoch: r.u32("partition epoch")?,
            },
            TAG_REMOVE_TOPIC => MetadataRecord::RemoveTopic { id: r.topic_id()? },
            TAG_CONFIG_CHANGE => MetadataRecord::ConfigChange {
                topic: r.topic_id()?,
                overrides: r.configs()?,
            },
            TAG_CLUSTER_ID => MetadataRecord::ClusterId {
                id: r.bytes16("cluster id")?,
            },
            TAG_PRODUCER_IDS_BLOCK => MetadataRecord::ProducerIdsBlock {
                node: r.node("node")?,
                first: r.i64("first producer id")?,
                size: r.u32("block size")?,
            },
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "record",
                    tag,
                })
            }
        })
    }

    /// Whether this record's strings and vectors fit the decoder's limits
    /// (the controller checks before proposing: a record that does not
    /// decode would stop every node's replay).
    pub fn fits(&self) -> bool {
        let configs_fit = |c: &BTreeMap<String, String>| {
            c.len() <= CONFIGS_MAX
                && c.iter()
                    .all(|(k, v)| k.len() <= CONFIG_KEY_LEN_MAX && v.len() <= CONFIG_VALUE_LEN_MAX)
        };
        match self {
            MetadataRecord::RegisterBroker {
                endpoints, rack, ..
            } => broker_fits(endpoints, rack.as_deref()),
            MetadataRecord::Topic {
                name, overrides, ..
            } => name.len() <= TOPIC_NAME_LEN_MAX && configs_fit(overrides),
            MetadataRecord::Partition { replicas, isr, .. } => {
                replicas.len() <= REPLICAS_MAX && isr.len() <= REPLICAS_MAX
            }
            MetadataRecord::PartitionChange { isr, .. } => isr.len() <= REPLICAS_MAX,
            MetadataRecord::ConfigChange { overrides, .. } => configs_fit(overrides),
            MetadataRecord::FenceBroker { .. }
            | MetadataRecord::UnfenceBroker { .. }
            | MetadataRecord::RemoveTopic { .. }
            | MetadataRecord::ClusterId { .. }
            | MetadataRecord::ProducerIdsBlock { .. } => true,
        }
    }
}

fn check_version(r: &mut Reader<'_>) -> Result<(), DecodeError> {
    match r.u8("format version")? {
        RECORD_VERSION => Ok(()),
        found => Err(DecodeError::UnknownVersion {
            found,
            supported: RECORD_VERSION,
        }),
    }
}

/// One Raft entry: the records of one command or tick, applied together
/// (version byte, record count, then each record's tag and fields).
pub fn encode_batch(records: &[MetadataRecord]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = Writer(&mut out);
    w.u8(RECORD_VERSION);
    w.len(records.len());
    for record in records {
        record.encode_body(&mut w);
    }
    out
}

/// Decodes an entry written by [`encode_batch`]; never panics.
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<MetadataRecord>, DecodeError> {
    decode_records(bytes, BATCH_RECORDS_MAX)
}

pub(crate) fn decode_records(bytes: &[u8], max: usize) -> Result<Vec<MetadataRecord>, DecodeError> {
    let mut r = Reader::new(bytes);
    check_version(&mut r)?;
    // Each record is at least a tag and a few bytes.
    let count = r.len(max, RECORD_BYTES_MIN - 1, "record count")?;
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        records.push(MetadataRecord::decode_body(&mut r)?);
    }
    r.finish()?;
    Ok(records)
}

#[cfg(test)]
pub(crate) mod tests;
