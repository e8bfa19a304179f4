//! Per-partition idempotent-producer state (sans-IO, clock passed in): for
//! each producer id its epoch and the sequences and offsets of its last
//! [`BATCHES_CACHED`] batches, as Kafka's `ProducerStateManager` keeps them.
//!
//! The produce path asks [`ProducerStates::check`] before appending a batch
//! and calls [`ProducerStates::apply`] after the append succeeded; the
//! partition's append gate makes the pair atomic. The same `apply` rebuilds
//! the state from batch headers read back from the log on open, and
//! [`ProducerStates::encode`] / [`ProducerStates::decode`] are the snapshot
//! file format that bounds that scan.

use std::collections::{BTreeMap, HashMap, VecDeque};

use fjord_schema::batch::BatchHeader;
use fjord_schema::{ErrorCode, Offset, ProducerEpoch, ProducerId, Sequence};

/// Batches remembered per producer for duplicate detection; the client keeps
/// at most this many in flight per partition.
pub const BATCHES_CACHED: usize = 5;

/// Bounds of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerStateConfig {
    /// Producer ids tracked per partition; the least recently used goes
    /// first beyond it.
    pub producers_max: usize,
    /// `producer.id.expiration.ms`: a producer not seen for this long is
    /// forgotten.
    pub expiration_ms: i64,
}

impl Default for ProducerStateConfig {
    fn default() -> Self {
        ProducerStateConfig {
            producers_max: 10_000,
            // Kafka's default: one day.
            expiration_ms: 86_400_000,
        }
    }
}

/// One appended batch as the state remembers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: Sequence,
    pub last_seq: Sequence,
    pub base_offset: Offset,
    pub last_offset: Offset,
}

/// The producer fields of a batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    pub producer_id: ProducerId,
    pub epoch: ProducerEpoch,
    pub first_seq: Sequence,
    pub last_seq: Sequence,
}

impl ProducerBatch {
    /// `None` for batches without a producer id (not idempotent).
    pub fn of(header: &BatchHeader) -> Option<ProducerBatch> {
        let producer_id = header.producer_id();
        if producer_id.0 < 0 || header.base_sequence().0 < 0 {
            return None;
        }
        let first_seq = header.base_sequence();
        let delta = header.record_count().saturating_sub(1);
        Some(ProducerBatch {
            producer_id,
            epoch: header.producer_epoch(),
            first_seq,
            last_seq: first_seq.wrapping_plus(delta),
        })
    }
}

/// What to do with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write it, then `apply` it.
    Append,
    /// Already written: acknowledge with this base offset, do not write.
    Duplicate { base_offset: Offset },
}

/// Why a batch is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error("producer {producer_id} epoch {epoch} is fenced by epoch {current}")]
    Fenced {
        producer_id: ProducerId,
        epoch: ProducerEpoch,
        current: ProducerEpoch,
    },
    #[error("producer {producer_id}: sequence {first_seq} out of order, expected {expected}")]
    OutOfOrder {
        producer_id: ProducerId,
        first_seq: Sequence,
        expected: Sequence,
    },
    /// The gap before this batch is a batch this partition refused
    /// unwritten (see [`ProducerStates::refused`]): answered with that
    /// refusal's retriable error, not as out of order.
    #[error(
        "producer {producer_id}: sequence {first_seq} follows {expected}, which was refused \
         unwritten ({code:?}); it must be retried first"
    )]
    AfterRefused {
        producer_id: ProducerId,
        first_seq: Sequence,
        expected: Sequence,
        code: ErrorCode,
    },
}

impl SequenceError {
    pub fn code(&self) -> ErrorCode {
        match self {
            SequenceError::Fenced { .. } => ErrorCode::InvalidProducerEpoch,
            SequenceError::OutOfOrder { .. } => ErrorCode::OutOfOrderSequenceNumber,
            SequenceError::AfterRefused { code, .. } => *code,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    epoch: ProducerEpoch,
    /// Oldest first, at most `BATCHES_CACHED`, never empty.
    batches: VecDeque<BatchMeta>,
    /// Clock of the last append (or the batch timestamp when rebuilt).
    last_seen_ms: i64,
    /// Key in `by_use`.
    used: u64,
}

/// A batch refused unwritten, with a retriable error, while it was next in
/// its producer's sequence (see [`ProducerStates::refused`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Refusal {
    epoch: ProducerEpoch,
    first_seq: Sequence,
    code: ErrorCode,
}

/// The state of one partition. Lives on: the partition's owning shard,
/// inside its `Partition`. Rebuilt on open, updated by every idempotent
/// append, snapshotted on close and periodically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerStates {
    config: ProducerStateConfig,
    producers: HashMap<ProducerId, Entry>,
    /// Least recently used first.
    by_use: BTreeMap<u64, ProducerId>,
    next_use: u64,
    /// The last refusal of each producer's next batch, until a batch of
    /// that producer is appended. Not in the snapshot: it only matters to
    /// requests in flight. At most `producers_max`, the lowest producer id
    /// going first (ordered, so the simulation replays the same choice).
    refusals: BTreeMap<ProducerId, Refusal>,
}

impl ProducerStates {
    pub fn new(config: ProducerStateConfig) -> ProducerStates {
        assert!(config.producers_max > 0);
        ProducerStates {
            config,
            producers: HashMap::new(),
            by_use: BTreeMap::new(),
            next_use: 0,
            refusals: BTreeMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// The epoch and last batch of a producer, if tracked.
    pub fn last_batch(&self, producer_id: ProducerId) -> Option<(ProducerEpoch, BatchMeta)> {
        let entry = self.producers.get(&producer_id)?;
        Some((entry.epoch, *entry.batches.back()?))
    }

    /// Whether `batch` may be appended. Changes nothing.
    pub fn check(&self, batch: &ProducerBatch) -> Result<Verdict, SequenceError> {
        self.check_sequence(batch)
            .map_err(|error| self.after_refused(batch, error))
    }

    /// An out-of-order answer for a batch whose gap is a refused batch
    /// becomes that refusal again.
    ///
    /// Why: a client with several requests in flight sends R2 before it
    /// learns that R1 was refused. Were R2 answered OUT_OF_ORDER_SEQUENCE,
    /// librdkafka would take it as a lost sequence and bump its producer
    /// epoch, renumbering every unacknowledged message of every partition,
    /// including ones it holds as "possibly persisted" (a timed-out
    /// request): those would then be written twice (N3 in
    /// docs/CORRECTNESS.md). Answered with R1's retriable "not written"
    /// error, R2 is retried after R1, in order, under the same epoch, as
    /// Kafka's clients do when a leader refuses all its in-flight requests.
    fn after_refused(&self, batch: &ProducerBatch, error: SequenceError) -> SequenceError {
        let SequenceError::OutOfOrder { expected, .. } = error else {
            return error;
        };
        match self.refusals.get(&batch.producer_id) {
            Some(refusal)
                if refusal.epoch == batch.epoch
                    && refusal.first_seq == expected
                    && batch.first_seq.0 > expected.0 =>
            {
                SequenceError::AfterRefused {
                    producer_id: batch.producer_id,
                    first_seq: batch.first_seq,
                    expected,
                    code: refusal.code,
                }
            }
            _ => error,
        }
    }

    /// Records that `batch` was refused unwritten with `code`, a retriable
    /// error (the caller's to choose: storage failure, not enough replicas,
    /// not the leader). Only a batch that was next in its producer's
    /// sequence is remembered: the batches its client already sent behind
    /// it are then answered `code` too ([`Self::check`]) instead of out of
    /// order. Forgotten when the producer's next batch is appended.
    pub fn refused(&mut self, batch: &ProducerBatch, code: ErrorCode) {
        if self.check_sequence(batch) != Ok(Verdict::Append) {
            return;
        }
        if !self.refusals.contains_key(&batch.producer_id)
            && self.refusals.len() >= self.config.producers_max
        {
            self.refusals.pop_first();
        }
        self.refusals.insert(
            batch.producer_id,
            Refusal {
                epoch: batch.epoch,
                first_seq: batch.first_seq,
                code,
            },
        );
    }

    fn check_sequence(&self, batch: &ProducerBatch) -> Result<Verdict, SequenceError> {
        let Some(entry) = self.producers.get(&batch.producer_id) else {
            // Unknown producer (new, expired or evicted): only a first batch.
            return expect_first(batch);
        };
        if batch.epoch.0 < entry.epoch.0 {
            return Err(SequenceError::Fenced {
                producer_id: batch.producer_id,
                epoch: batch.epoch,
                current: entry.epoch,
            });
        }
        if batch.epoch != entry.epoch {
            // A bumped epoch starts its sequences again.
            return expect_first(batch);
        }
        if let Some(dup) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == batch.first_seq && b.last_seq == batch.last_seq)
        {
            return Ok(Verdict::Duplicate {
                base_offset: dup.base_offset,
            });
        }
        let last = entry.batches.back().expect("entries hold a batch").last_seq;
        let expected = last.wrapping_plus(1);
        if batch.first_seq == expected {
            Ok(Verdict::Append)
        } else {
            Err(SequenceError::OutOfOrder {
                producer_id: batch.producer_id,
                first_seq: batch.first_seq,
                expected,
            })
        }
    }

    /// Records an appended batch at `base_offset..=last_offset`, seen at
    /// `now_ms`. Evicts the least recently used producer beyond the bound.
    pub fn apply(
        &mut self,
        batch: &ProducerBatch,
        base_offset: Offset,
        last_offset: Offset,
        now_ms: i64,
    ) {
        assert!(base_offset <= last_offset);
        let meta = BatchMeta {
            first_seq: batch.first_seq,
            last_seq: batch.last_seq,
            base_offset,
            last_offset,
        };
        let used = self.next_use;
        self.next_use += 1;
        self.refusals.remove(&batch.producer_id);
        match self.producers.get_mut(&batch.producer_id) {
            Some(entry) => {
                self.by_use.remove(&entry.used);
                if entry.epoch != batch.epoch {
                    entry.epoch = batch.epoch;
                    entry.batches.clear();
                }
                entry.batches.push_back(meta);
                if entry.batches.len() > BATCHES_CACHED {
                    entry.batches.pop_front();
                }
                entry.last_seen_ms = entry.last_seen_ms.max(now_ms);
                entry.used = used;
            }
            None => {
                self.producers.insert(
                    batch.producer_id,
                    Entry {
                        epoch: batch.epoch,
                        batches: VecDeque::from([meta]),
                        last_seen_ms: now_ms,
                        used,
                    },
                );
            }
        }
        self.by_use.insert(used, batch.producer_id);
        while self.producers.len() > self.config.producers_max {
            let (_, oldest) = self.by_use.pop_first().expect("one entry per producer");
            self.producers.remove(&oldest);
        }
        assert_eq!(self.by_use.len(), self.producers.len());
    }

    /// Forgets producers not seen for `expiration_ms` before `now_ms`.
    /// Returns how many.
    pub fn expire(&mut self, now_ms: i64) -> usize {
        let cutoff = now_ms.saturating_sub(self.config.expiration_ms);
        let expired: Vec<(ProducerId, u64)> = self
            .producers
            .iter()
            .filter(|(_, e)| e.last_seen_ms < cutoff)
            .map(|(id, e)| (*id, e.used))
            .collect();
        for (id, used) in &expired {
            self.producers.remove(id);
            self.by_use.remove(used);
            self.refusals.remove(id);
        }
        expired.len()
    }

    /// The snapshot body: magic, version, entries in least-recently-used
    /// order, CRC32C over everything before it. Little-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        out.extend_from_slice(&(self.producers.len() as u32).to_le_bytes());
        for id in self.by_use.values() {
            let entry = &self.producers[id];
            out.extend_from_slice(&id.0.to_le_bytes());
            out.extend_from_slice(&entry.epoch.0.to_le_bytes());
            out.extend_from_slice(&entry.last_seen_ms.to_le_bytes());
            out.push(entry.batches.len() as u8);
            for b in &entry.batches {
                out.extend_from_slice(&b.first_seq.0.to_le_bytes());
                out.extend_from_slice(&b.last_seq.0.to_le_bytes());
                out.extend_from_slice(&b.base_offset.0.to_le_bytes());
                out.extend_from_slice(&b.last_offset.0.to_le_bytes());
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads a snapshot body; `None` if it is damaged or not a snapshot.
    pub fn decode(config: ProducerStateConfig, bytes: &[u8]) -> Option<ProducerStates> {
        let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
        if crc32c::crc32c(body).to_le_bytes() != crc {
            return None;
        }
        let mut r = Reader(body);
        if r.take(4)? != SNAPSHOT_MAGIC || r.u16()? != SNAPSHOT_VERSION {
            return None;
        }
        let mut states = ProducerStates::new(config);
        let count = r.u32()?;
        for _ in 0..count {
            let producer_id = ProducerId(r.i64()?);
            let epoch = ProducerEpoch(r.i16()?);
            let last_seen_ms = r.i64()?;
            let batches = r.take(1)?[0];
            if batches == 0 || usize::from(batches) > BATCHES_CACHED {
                return None;
            }
            for _ in 0..batches {
                let first_seq = Sequence(r.i32()?);
                let last_seq = Sequence(r.i32()?);
                let base_offset = Offset(r.u64()?);
                let last_offset = Offset(r.u64()?);
                // What `apply` is ever given: a producer id, sequences
                // (`ProducerBatch::of` has none negative; `check` advances
                // them and asserts so) and ordered offsets.
                if producer_id.0 < 0
                    || first_seq.0 < 0
                    || last_seq.0 < 0
                    || base_offset > last_offset
                {
                    return None;
                }
                let batch = ProducerBatch {
                    producer_id,
                    epoch,
                    first_seq,
                    last_seq,
                };
                states.apply(&batch, base_offset, last_offset, last_seen_ms);
            }
        }
        r.0.is_empty().then_some(states)
    }
}

const SNAPSHOT_MAGIC: &[u8; 4] = b"FJPS";
const SNAPSHOT_VERSION: u16 = 1;

fn expect_first(batch: &ProducerBatch) -> Result<Verdict, SequenceError> {
    if batch.first_seq == Sequence(0) {
        Ok(Verdict::Append)
    } else {
        Err(SequenceError::OutOfOrder {
            producer_id: batch.producer_id,
            first_seq: batch.first_seq,
            expected: Sequence(0),
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.0.split_at_checked(n)?;
        self.0 = tail;
        Some(head)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests;
