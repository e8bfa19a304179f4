//! The `__consumer_offsets` topic: where a group lives and how committed
//! offsets are written to and read back from its partitions. Pure: the
//! host (`super::host`) does the appends and the reads.
//!
//! Placement: group G belongs to partition
//! `abs(javaStringHashCode(G)) % offsets_topic_partitions` (Kafka's
//! `Utils.abs(groupId.hashCode) % groupMetadataTopicPartitionCount`), so a
//! Kafka client and the future Kafka listener find the same coordinator;
//! the group's coordinator runs on the shard that owns that partition.
//!
//! Record format (all integers big-endian, strings UTF-8 with a u16 length):
//!
//! ```text
//! key   v1: version i16 = 1 | group string | topic string | partition u32
//! value v1: version i16 = 1 | offset i64 | leader_epoch i32
//!           | metadata string | commit_timestamp_ms i64
//! ```
//!
//! A record with a null value (a tombstone) deletes the key. Replay feeds
//! records in log order, so the latest record per key wins. Readers skip
//! keys and values of versions they do not know (with a warning) rather
//! than fail: a downgrade keeps the broker up, losing only those commits.

use fjord_schema::{BatchBuilder, BatchError, BatchOptions, RecordInput};

use super::coordinator::CommittedOffset;
use super::TopicPartition;

/// The internal topic's name (Kafka's).
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

const KEY_VERSION: i16 = 1;
const VALUE_VERSION: i16 = 1;

/// Java's `String.hashCode` (over UTF-16 code units).
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

/// The `__consumer_offsets` partition that holds `group_id`.
pub fn partition_for(group_id: &str, partitions: u32) -> u32 {
    assert!(partitions > 0);
    let hash = java_string_hash(group_id);
    // Kafka's Utils.abs: abs(i32::MIN) is 0, not an overflow.
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs as u32 % partitions
}

/// One decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetRecord {
    pub group_id: String,
    pub partition: TopicPartition,
    /// `None`: a tombstone.
    pub offset: Option<CommittedOffset>,
    pub commit_timestamp_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record is truncated")]
    Truncated,
    #[error("string is not UTF-8")]
    NotUtf8,
    #[error("unknown record version {0}")]
    UnknownVersion(i16),
    #[error("record has no key")]
    NoKey,
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

/// Why a commit's records could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("a string is longer than {STRING_BYTES_MAX} bytes")]
    StringTooLong,
    #[error(transparent)]
    Batch(#[from] BatchError),
}

/// Longest group id, topic name or metadata a record holds.
pub const STRING_BYTES_MAX: usize = u16::MAX as usize;

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = u16::try_from(s.len()).expect("callers check STRING_BYTES_MAX");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

pub fn encode_key(group_id: &str, tp: &TopicPartition) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + 2 + group_id.len() + 2 + tp.topic.len() + 4);
    out.extend_from_slice(&KEY_VERSION.to_be_bytes());
    put_str(&mut out, group_id);
    put_str(&mut out, &tp.topic);
    out.extend_from_slice(&tp.partition.to_be_bytes());
    out
}

pub fn encode_value(offset: &CommittedOffset, commit_timestamp_ms: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + 8 + 4 + 2 + offset.metadata.len() + 8);
    out.extend_from_slice(&VALUE_VERSION.to_be_bytes());
    out.extend_from_slice(&offset.offset.to_be_bytes());
    out.extend_from_slice(&offset.leader_epoch.to_be_bytes());
    put_str(&mut out, &offset.metadata);
    out.extend_from_slice(&commit_timestamp_ms.to_be_bytes());
    out
}

/// A cursor over untrusted bytes (read back from disk).
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let bytes = self.take(N)?;
        Ok(bytes.try_into().expect("take returned N bytes"))
    }

    fn string(&mut self) -> Result<String, RecordError> {
        let len = u16::from_be_bytes(self.array()?);
        let bytes = self.take(usize::from(len))?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| RecordError::NotUtf8)
    }

    fn end(self) -> Result<(), RecordError> {
        match self.0.len() {
            0 => Ok(()),
            n => Err(RecordError::Trailing(n)),
        }
    }
}

/// Decodes one record of the offsets topic.
pub fn decode(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<OffsetRecord, RecordError> {
    let mut k = Reader(key.ok_or(RecordError::NoKey)?);
    let version = i16::from_be_bytes(k.array()?);
    if version != KEY_VERSION {
        return Err(RecordError::UnknownVersion(version));
    }
    let group_id = k.string()?;
    let topic = k.string()?;
    let partition = u32::from_be_bytes(k.array()?);
    k.end()?;
    let (offset, commit_timestamp_ms) = match value {
        None => (None, -1),
        Some(value) => {
            let mut v = Reader(value);
            let version = i16::from_be_bytes(v.array()?);
            if version != VALUE_VERSION {
                return Err(RecordError::UnknownVersion(version));
            }
            let offset = i64::from_be_bytes(v.array()?);
            let leader_epoch = i32::from_be_bytes(v.array()?);
            let metadata = v.string()?;
            let timestamp = i64::from_be_bytes(v.array()?);
            v.end()?;
            (
                Some(CommittedOffset {
                    offset,
                    leader_epoch,
                    metadata,
                }),
                timestamp,
            )
        }
    };
    Ok(OffsetRecord {
        group_id,
        partition: TopicPartition::new(topic, partition),
        offset,
        commit_timestamp_ms,
    })
}

/// Bytes per batch a commit is split at, far below any `max.message.bytes`
/// the broker accepts, so a commit of many partitions is still written.
pub const COMMIT_BATCH_BYTES_TARGET: usize = 256 << 10;

/// The records of one commit, a record per committed partition, as
/// back-to-back batches of about [`COMMIT_BATCH_BYTES_TARGET`] (one
/// produce appends them contiguously); an error when a string is longer
/// than [`STRING_BYTES_MAX`] or a batch cannot be built.
pub fn commit_batch(
    group_id: &str,
    offsets: &[(TopicPartition, CommittedOffset)],
    now_ms: i64,
) -> Result<bytes::Bytes, EncodeError> {
    records_batch(
        group_id,
        offsets.iter().map(|(tp, o)| (tp, Some(o))),
        now_ms,
    )
}

/// The tombstones that delete `partitions`' committed offsets of
/// `group_id` (DeleteGroups), batched like [`commit_batch`].
pub fn tombstone_batch(
    group_id: &str,
    partitions: &[TopicPartition],
    now_ms: i64,
) -> Result<bytes::Bytes, EncodeError> {
    records_batch(group_id, partitions.iter().map(|tp| (tp, None)), now_ms)
}

fn records_batch<'a>(
    group_id: &str,
    records: impl Iterator<Item = (&'a TopicPartition, Option<&'a CommittedOffset>)> + Clone,
    now_ms: i64,
) -> Result<bytes::Bytes, EncodeError> {
    let too_long = |s: &str| s.len() > STRING_BYTES_MAX;
    if too_long(group_id)
        || records
            .clone()
            .any(|(tp, o)| too_long(&tp.topic) || o.is_some_and(|o| too_long(&o.metadata)))
    {
        return Err(EncodeError::StringTooLong);
    }
    let mut out = bytes::BytesMut::new();
    let mut builder = BatchBuilder::new(BatchOptions::default());
    for (tp, offset) in records {
        let key = encode_key(group_id, tp);
        let value = offset.map(|o| encode_value(o, now_ms));
        let record = RecordInput {
            key: Some(&key),
            value: value.as_deref(),
            headers: &[],
            timestamp: now_ms,
            offset_delta: None,
        };
        if !builder.is_empty()
            && builder.size_estimate() + BatchBuilder::record_size_estimate(&record)
                > COMMIT_BATCH_BYTES_TARGET
        {
            let full = std::mem::replace(&mut builder, BatchBuilder::new(BatchOptions::default()));
            out.extend_from_slice(&full.finish()?);
        }
        builder.try_push(record)?;
    }
    assert!(!builder.is_empty(), "a batch of no records");
    out.extend_from_slice(&builder.finish()?);
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_hash_matches_java() {
        // Values from `"...".hashCode()` on a JVM.
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("test"), 3_556_498);
        assert_eq!(java_string_hash("hello"), 99_162_322);
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        assert_eq!(partition_for("polygenelubricants", 50), 0);
        assert_eq!(partition_for("test", 50), 3_556_498 % 50);
    }

    #[test]
    fn records_round_trip() {
        let tp = TopicPartition::new("orders", 7);
        let offset = CommittedOffset {
            offset: 42,
            leader_epoch: 3,
            metadata: "mé".to_owned(),
        };
        let key = encode_key("g", &tp);
        let value = encode_value(&offset, 1_700);
        let record = decode(Some(&key), Some(&value)).expect("valid");
        assert_eq!(record.group_id, "g");
        assert_eq!(record.partition, tp);
        assert_eq!(record.offset, Some(offset));
        assert_eq!(record.commit_timestamp_ms, 1_700);
        let tombstone = decode(Some(&key), None).expect("valid");
        assert_eq!(tombstone.offset, None);
    }

    #[test]
    fn damaged_records_are_errors_not_panics() {
        let key = encode_key("group", &TopicPartition::new("t", 1));
        let value = encode_value(
            &CommittedOffset {
                offset: 1,
                leader_epoch: -1,
                metadata: String::new(),
            },
            0,
        );
        for cut in 0..key.len() {
            assert!(decode(Some(&key[..cut]), None).is_err());
        }
        for cut in 0..value.len() {
            assert!(decode(Some(&key), Some(&value[..cut])).is_err());
        }
        let mut long = value.clone();
        long.push(0);
        assert_eq!(
            decode(Some(&key), Some(&long)),
            Err(RecordError::Trailing(1))
        );
        let mut future = key.clone();
        future[1] = 9;
        assert_eq!(
            decode(Some(&future), None),
            Err(RecordError::UnknownVersion(9))
        );
        assert_eq!(decode(None, Some(&value)), Err(RecordError::NoKey));
    }

    #[test]
    fn a_large_commit_is_split_into_batches_that_keep_every_record() {
        use fjord_schema::batch::Batches;

        let offsets: Vec<(TopicPartition, CommittedOffset)> = (0..5_000)
            .map(|p| {
                (
                    TopicPartition::new("a-topic-with-a-longish-name", p),
                    CommittedOffset {
                        offset: i64::from(p),
                        leader_epoch: -1,
                        metadata: "m".repeat(100),
                    },
                )
            })
            .collect();
        let bytes = commit_batch("g", &offsets, 7).expect("encodable");
        let mut scratch = Vec::new();
        let mut decoded = Vec::new();
        let mut batches = 0;
        for batch in Batches::new(&bytes) {
            let batch = batch.expect("valid batch");
            assert!(batch.as_bytes().len() <= COMMIT_BATCH_BYTES_TARGET + 4096);
            batches += 1;
            for record in batch
                .records(&mut scratch, 1 << 20)
                .expect("records")
                .iter()
            {
                decoded.push(decode(record.key(), record.value()).expect("record"));
            }
        }
        assert!(batches > 1);
        assert_eq!(decoded.len(), offsets.len());
        for (record, (tp, offset)) in decoded.iter().zip(&offsets) {
            assert_eq!(&record.partition, tp);
            assert_eq!(record.offset.as_ref(), Some(offset));
        }
    }
}
