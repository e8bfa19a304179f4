//! The bodies of the replication frames on the cluster transport
//! (`controller::transport`, opaque bodies matched by correlation id):
//! [`ClusterApiKey::ReplicaFetch`](fjord_schema::api::ClusterApiKey) (1002)
//! and `OffsetForLeaderEpoch` (1003), requests and responses.
//!
//! Hand-written, little-endian, in the style of `controller::wire` (whose
//! [`Reader`] and [`Writer`] it uses): a version byte first, then
//! fixed-width integers and length-prefixed strings and vectors. Every
//! count and length is checked against its limit and against the bytes
//! left before anything is allocated; malformed input is a
//! [`DecodeError`], never a panic.
//!
//! The batches of a fetch response are whole native batches as the
//! leader's log stores them. They travel in the frame's payload section
//! (as in native fetch responses), in order, the body giving each one's
//! length: the leader hands the batches it read (shared with its cache) to
//! the transport as they are, and [`ReplicaFetchResponse::decode`] returns
//! them as `Bytes` slices of the received payload. Neither side copies a
//! batch; the follower appends those slices verbatim.
//!
//! Pure: no I/O. Encoded by the fetchers ([`super::driver`]) and the
//! leader's service ([`super::server`]); fuzzed by
//! `fuzz/fuzz_targets/replication_wire.rs`.

use bytes::Bytes;
use fjord_schema::{ErrorCode, LeaderEpoch, NodeId, Offset, PartitionId};

pub use crate::controller::wire::DecodeError;
use crate::controller::wire::{Reader, Writer};

/// The version this node writes and reads (the first byte of every body).
pub const WIRE_VERSION: u8 = 0;
/// Most topics in one request or response.
pub const TOPICS_MAX: usize = 100_000;
/// Most partitions of one topic in one request or response.
pub const PARTITIONS_MAX: usize = 1_000_000;
/// Most batches of one partition in one fetch response.
pub const BATCHES_MAX: usize = 1_000_000;
/// Largest batch in a fetch response (the cluster frame's limit).
pub const BATCH_BYTES_MAX: usize = 64 << 20;

/// Bytes a fetch partition takes at least on the wire (partition 4,
/// fetch offset 8, epoch 4, durable flag 1, max bytes 4).
const FETCH_PARTITION_BYTES_MIN: usize = 21;
/// A fetch result: partition 4, error 2, hw 8, log start 8, count 4
/// (each batch adds its length, 4).
const FETCH_RESULT_BYTES_MIN: usize = 26;
/// An epoch query: partition 4, current epoch 4, epoch 4.
const EPOCH_QUERY_BYTES: usize = 12;
/// An epoch answer: partition 4, error 2, epoch 4, end offset 8.
const EPOCH_ANSWER_BYTES: usize = 18;
/// A topic entry: name length 4, partitions count 4.
const TOPIC_BYTES_MIN: usize = 8;

/// Topics, in order, each with its partitions' entries in order.
pub type Topics<T> = Vec<(String, Vec<T>)>;

/// A follower's long-polling fetch of every partition it follows on one
/// leader (one per fetcher, at most one in flight).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaFetchRequest {
    /// The follower node.
    pub replica_id: NodeId,
    pub max_wait_ms: u32,
    pub min_bytes: u32,
    pub max_bytes: u32,
    pub topics: Topics<ReplicaFetchPartition>,
}

/// One partition of a [`ReplicaFetchRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaFetchPartition {
    pub partition: PartitionId,
    /// The follower's log end: where to read from.
    pub fetch_offset: Offset,
    /// The epoch the follower follows at; the leader fences older ones.
    pub current_leader_epoch: LeaderEpoch,
    /// The follower's durable end, reported when the topic flushes before
    /// ack (the leader counts only this toward the high watermark).
    pub durable_end: Option<Offset>,
    pub partition_max_bytes: u32,
}

/// The leader's answer to a [`ReplicaFetchRequest`]: one result per
/// partition, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaFetchResponse {
    pub topics: Topics<ReplicaFetchResult>,
}

/// One partition of a [`ReplicaFetchResponse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaFetchResult {
    pub partition: PartitionId,
    pub error: ErrorCode,
    /// -1 when unknown (with an error).
    pub high_watermark: i64,
    /// -1 when unknown (with an error).
    pub log_start_offset: i64,
    /// Whole native batches as stored, contiguous from the fetch offset.
    pub batches: Vec<Bytes>,
}

/// A follower asking where its epochs end in the leader's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochsRequest {
    pub replica_id: NodeId,
    pub topics: Topics<EpochQueryPartition>,
}

/// One partition of an [`EpochsRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochQueryPartition {
    pub partition: PartitionId,
    pub current_leader_epoch: LeaderEpoch,
    /// The epoch whose end is asked.
    pub leader_epoch: LeaderEpoch,
}

/// The leader's answer to an [`EpochsRequest`], in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochsResponse {
    pub topics: Topics<EpochAnswer>,
}

/// One partition of an [`EpochsResponse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochAnswer {
    pub partition: PartitionId,
    pub error: ErrorCode,
    /// -1: undefined.
    pub leader_epoch: i32,
    /// -1: undefined.
    pub end_offset: i64,
}

fn version(r: &mut Reader<'_>) -> Result<(), DecodeError> {
    let found = r.u8("version")?;
    if found != WIRE_VERSION {
        return Err(DecodeError::UnknownVersion {
            found,
            supported: WIRE_VERSION,
        });
    }
    Ok(())
}

fn write_topics<T>(w: &mut Writer<'_>, topics: &Topics<T>, mut each: impl FnMut(&mut Writer, &T)) {
    w.len(topics.len());
    for (name, parts) in topics {
        w.str(name);
        w.len(parts.len());
        for part in parts {
            each(w, part);
        }
    }
}

fn read_topics<'a, T>(
    r: &mut Reader<'a>,
    part_min: usize,
    mut each: impl FnMut(&mut Reader<'a>) -> Result<T, DecodeError>,
) -> Result<Topics<T>, DecodeError> {
    let count = r.len(TOPICS_MAX, TOPIC_BYTES_MIN, "topics")?;
    let mut topics = Vec::with_capacity(count);
    for _ in 0..count {
        let name = r.topic_name()?;
        let parts = r.len(PARTITIONS_MAX, part_min, "partitions")?;
        let mut out = Vec::with_capacity(parts);
        for _ in 0..parts {
            out.push(each(r)?);
        }
        topics.push((name, out));
    }
    Ok(topics)
}

fn offset(r: &mut Reader<'_>, what: &'static str) -> Result<Offset, DecodeError> {
    let value = r.u64(what)?;
    if value > i64::MAX as u64 {
        return Err(DecodeError::Invalid { what, value });
    }
    Ok(Offset(value))
}

fn epoch(r: &mut Reader<'_>, what: &'static str) -> Result<LeaderEpoch, DecodeError> {
    let value = r.u32(what)?;
    if value > i32::MAX as u32 {
        return Err(DecodeError::Invalid {
            what,
            value: u64::from(value),
        });
    }
    Ok(LeaderEpoch(value))
}

impl ReplicaFetchRequest {
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::new();
        let mut w = Writer(&mut out);
        w.u8(WIRE_VERSION);
        w.node(self.replica_id);
        w.u32(self.max_wait_ms);
        w.u32(self.min_bytes);
        w.u32(self.max_bytes);
        write_topics(&mut w, &self.topics, |w, p| {
            w.u32(p.partition.get());
            w.u64(p.fetch_offset.get());
            w.u32(p.current_leader_epoch.get());
            match p.durable_end {
                None => w.u8(0),
                Some(end) => {
                    w.u8(1);
                    w.u64(end.get());
                }
            }
            w.u32(p.partition_max_bytes);
        });
        Bytes::from(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<ReplicaFetchRequest, DecodeError> {
        let mut r = Reader::new(bytes);
        version(&mut r)?;
        let replica_id = r.node("replica id")?;
        let max_wait_ms = r.u32("max wait")?;
        let min_bytes = r.u32("min bytes")?;
        let max_bytes = r.u32("max bytes")?;
        let topics = read_topics(&mut r, FETCH_PARTITION_BYTES_MIN, |r| {
            let partition = PartitionId(r.u32("partition")?);
            let fetch_offset = offset(r, "fetch offset")?;
            let current_leader_epoch = epoch(r, "current leader epoch")?;
            let durable_end = if r.bool("durable end")? {
                Some(offset(r, "durable end")?)
            } else {
                None
            };
            Ok(ReplicaFetchPartition {
                partition,
                fetch_offset,
                current_leader_epoch,
                durable_end,
                partition_max_bytes: r.u32("partition max bytes")?,
            })
        })?;
        r.finish()?;
        Ok(ReplicaFetchRequest {
            replica_id,
            max_wait_ms,
            min_bytes,
            max_bytes,
            topics,
        })
    }

    /// Partitions asked, all topics together.
    pub fn partitions(&self) -> usize {
        self.topics.iter().map(|(_, p)| p.len()).sum()
    }
}

impl ReplicaFetchResponse {
    /// The frame's body and payload: the batches themselves (shared, not
    /// copied) are the payload's chunks, in order.
    pub fn encode(&self) -> (Bytes, Vec<Bytes>) {
        let mut out = Vec::new();
        let mut payload = Vec::new();
        let mut w = Writer(&mut out);
        w.u8(WIRE_VERSION);
        write_topics(&mut w, &self.topics, |w, p| {
            w.u32(p.partition.get());
            w.error_code(p.error);
            w.i64(p.high_watermark);
            w.i64(p.log_start_offset);
            w.len(p.batches.len());
            for batch in &p.batches {
                w.len(batch.len());
                payload.push(batch.clone());
            }
        });
        (Bytes::from(out), payload)
    }

    /// Decodes a frame's `body` and `payload`; the batches are slices of
    /// the payload (no copy), which they must use up exactly.
    pub fn decode(body: &[u8], payload: &Bytes) -> Result<ReplicaFetchResponse, DecodeError> {
        let mut r = Reader::new(body);
        let mut at = 0usize;
        version(&mut r)?;
        let topics = read_topics(&mut r, FETCH_RESULT_BYTES_MIN, |r| {
            let partition = PartitionId(r.u32("partition")?);
            let error = r.error_code()?;
            let high_watermark = r.i64("high watermark")?;
            let log_start_offset = r.i64("log start offset")?;
            let count = r.len(BATCHES_MAX, 4, "batches")?;
            let mut batches = Vec::with_capacity(count);
            for _ in 0..count {
                let len = r.u32("batch length")? as usize;
                if len > BATCH_BYTES_MAX {
                    return Err(DecodeError::TooLong {
                        what: "batch",
                        len,
                        max: BATCH_BYTES_MAX,
                    });
                }
                let end = at
                    .checked_add(len)
                    .filter(|end| *end <= payload.len())
                    .ok_or(DecodeError::Truncated { what: "payload" })?;
                batches.push(payload.slice(at..end));
                at = end;
            }
            Ok(ReplicaFetchResult {
                partition,
                error,
                high_watermark,
                log_start_offset,
                batches,
            })
        })?;
        r.finish()?;
        if at != payload.len() {
            return Err(DecodeError::Trailing(payload.len() - at));
        }
        Ok(ReplicaFetchResponse { topics })
    }
}

impl EpochsRequest {
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::new();
        let mut w = Writer(&mut out);
        w.u8(WIRE_VERSION);
        w.node(self.replica_id);
        write_topics(&mut w, &self.topics, |w, p| {
            w.u32(p.partition.get());
            w.u32(p.current_leader_epoch.get());
            w.u32(p.leader_epoch.get());
        });
        Bytes::from(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<EpochsRequest, DecodeError> {
        let mut r = Reader::new(bytes);
        version(&mut r)?;
        let replica_id = r.node("replica id")?;
        let topics = read_topics(&mut r, EPOCH_QUERY_BYTES, |r| {
            Ok(EpochQueryPartition {
                partition: PartitionId(r.u32("partition")?),
                current_leader_epoch: epoch(r, "current leader epoch")?,
                leader_epoch: epoch(r, "leader epoch")?,
            })
        })?;
        r.finish()?;
        Ok(EpochsRequest { replica_id, topics })
    }
}

impl EpochsResponse {
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::new();
        let mut w = Writer(&mut out);
        w.u8(WIRE_VERSION);
        write_topics(&mut w, &self.topics, |w, p| {
            w.u32(p.partition.get());
            w.error_code(p.error);
            w.u32(p.leader_epoch as u32);
            w.i64(p.end_offset);
        });
        Bytes::from(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<EpochsResponse, DecodeError> {
        let mut r = Reader::new(bytes);
        version(&mut r)?;
        let topics = read_topics(&mut r, EPOCH_ANSWER_BYTES, |r| {
            Ok(EpochAnswer {
                partition: PartitionId(r.u32("partition")?),
                error: r.error_code()?,
                leader_epoch: r.u32("leader epoch")? as i32,
                end_offset: r.i64("end offset")?,
            })
        })?;
        r.finish()?;
        Ok(EpochsResponse { topics })
    }
}

#[cfg(test)]
mod tests;
