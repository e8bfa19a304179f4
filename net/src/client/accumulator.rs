//! The producer's record accumulator: one open `BatchBuilder` per partition,
//! closed when it reaches `batch_size_bytes` or has lingered `linger`, then
//! queued for sending. Every byte it holds counts against
//! `buffer_memory_bytes`; appends beyond that are refused so the caller can
//! block or fail (Kafka's `buffer.memory`).
//!
//! Generic over `T`, whatever the caller uses to tell a record's sender the
//! outcome (a completion slot in the std driver, a plain number in tests),
//! and over the batch format `F` (native [`BatchBuilder`] by default; see
//! [`super::format`]). No clock: every call takes `now`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fjord_schema::{
    BatchBuilder, BatchError, BatchOptions, Compression, PartitionId, ProducerEpoch, ProducerId,
    RecordInput, Sequence,
};

use super::format::ProduceFormat;

/// A topic's partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: Arc<str>,
    pub partition: PartitionId,
}

/// Accumulator settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccumulatorConfig {
    /// A batch closes once its (uncompressed) size reaches this; a single
    /// larger record gets a batch of its own.
    pub batch_size_bytes: usize,
    /// How long an open batch waits for more records.
    pub linger: Duration,
    /// Bytes of records buffered or in flight, at most.
    pub buffer_memory_bytes: usize,
    /// Largest record (its batch alone) accepted.
    pub record_size_max_bytes: usize,
    pub compression: Compression,
    /// Idempotence-ready: with a producer id, batches carry it, the epoch
    /// and per-partition sequence numbers.
    pub producer_id: ProducerId,
    pub producer_epoch: ProducerEpoch,
}

impl Default for AccumulatorConfig {
    fn default() -> Self {
        AccumulatorConfig {
            batch_size_bytes: 16 * 1024,
            linger: Duration::from_millis(5),
            buffer_memory_bytes: 32 * 1024 * 1024,
            record_size_max_bytes: 1024 * 1024,
            compression: Compression::None,
            producer_id: ProducerId::NONE,
            producer_epoch: ProducerEpoch::NONE,
        }
    }
}

/// Why a record was not accepted; the token comes back to the caller.
#[derive(Debug)]
pub enum AppendError<T> {
    /// Buffered bytes would exceed `buffer_memory_bytes`; retry after
    /// batches complete.
    BufferFull(T),
    /// The record alone is over `record_size_max_bytes`.
    RecordTooLarge { token: T, size: usize, max: usize },
}

/// A closed batch waiting to be sent (again).
#[derive(Debug)]
pub struct ReadyBatch<T> {
    pub tp: TopicPartition,
    pub bytes: Bytes,
    /// One per record, in offset order.
    pub tokens: Vec<T>,
    /// When its first record was appended.
    pub created: Instant,
    /// Sends so far.
    pub attempts: u32,
    /// Not to be sent before this (retry backoff).
    pub retry_at: Option<Instant>,
    /// Bytes counted against the buffer memory until the batch completes.
    pub reserved_bytes: usize,
}

/// A batch that could not be closed (compression failed): its records fail.
#[derive(Debug)]
pub struct FailedBatch<T> {
    pub tp: TopicPartition,
    pub tokens: Vec<T>,
    pub error: BatchError,
    /// Still counted against the buffer memory: the caller releases them.
    pub reserved_bytes: usize,
}

#[derive(Debug)]
struct OpenBatch<T, F> {
    builder: F,
    tokens: Vec<T>,
    created: Instant,
    reserved_bytes: usize,
    base_sequence: Sequence,
}

#[derive(Debug)]
struct PartitionQueue<T, F> {
    open: Option<OpenBatch<T, F>>,
    closed: VecDeque<ReadyBatch<T>>,
    next_sequence: i32,
}

impl<T, F> Default for PartitionQueue<T, F> {
    fn default() -> Self {
        PartitionQueue {
            open: None,
            closed: VecDeque::new(),
            next_sequence: 0,
        }
    }
}

/// What happened to the partition's batches during an append or a close.
#[derive(Debug)]
pub struct Closed<T> {
    /// Partitions whose open batch was closed (the sticky partitioner moves on).
    pub closed: Vec<TopicPartition>,
    pub failed: Vec<FailedBatch<T>>,
}

impl<T> Default for Closed<T> {
    fn default() -> Self {
        Closed {
            closed: Vec::new(),
            failed: Vec::new(),
        }
    }
}

/// Per-partition batches. Lives in: one producer. Owns: records not yet
/// acknowledged, as batches.
#[derive(Debug)]
pub struct Accumulator<T, F = BatchBuilder> {
    config: AccumulatorConfig,
    queues: BTreeMap<TopicPartition, PartitionQueue<T, F>>,
    used_bytes: usize,
}

impl<T> Accumulator<T> {
    /// An accumulator of native batches.
    pub fn new(config: AccumulatorConfig) -> Accumulator<T> {
        Accumulator::with_format(config)
    }
}

impl<T, F: ProduceFormat> Accumulator<T, F> {
    pub fn with_format(config: AccumulatorConfig) -> Accumulator<T, F> {
        assert!(config.batch_size_bytes > 0, "batch size must be positive");
        assert!(
            config.record_size_max_bytes <= config.buffer_memory_bytes,
            "a record must fit in the buffer memory"
        );
        Accumulator {
            config,
            queues: BTreeMap::new(),
            used_bytes: 0,
        }
    }

    pub fn config(&self) -> &AccumulatorConfig {
        &self.config
    }

    /// Bytes held (open, queued and in-flight batches).
    pub fn used_bytes(&self) -> usize {
        self.used_bytes
    }

    /// Adds a record to `tp`'s open batch, closing it first if the record
    /// would overflow it, and after if it is now full.
    pub fn append(
        &mut self,
        tp: &TopicPartition,
        record: RecordInput<'_>,
        token: T,
        now: Instant,
    ) -> Result<Closed<T>, AppendError<T>> {
        let size = F::record_size_estimate(&record) + F::BATCH_OVERHEAD_BYTES;
        if size > self.config.record_size_max_bytes {
            return Err(AppendError::RecordTooLarge {
                token,
                size,
                max: self.config.record_size_max_bytes,
            });
        }
        if self.used_bytes + size > self.config.buffer_memory_bytes {
            return Err(AppendError::BufferFull(token));
        }
        let config = self.config;
        let queue = self.queues.entry(tp.clone()).or_default();
        let mut closed = Closed::default();
        if let Some(open) = &queue.open {
            if open.builder.size_estimate() + size > config.batch_size_bytes {
                close_open(tp, queue, &mut closed);
            }
        }
        let open = queue.open.get_or_insert_with(|| {
            let base_sequence = if config.producer_id == ProducerId::NONE {
                Sequence::NONE
            } else {
                Sequence(queue.next_sequence)
            };
            let options = BatchOptions {
                compression: config.compression,
                producer_id: config.producer_id,
                producer_epoch: config.producer_epoch,
                base_sequence,
                ..BatchOptions::default()
            };
            OpenBatch {
                builder: F::with_capacity(options, config.batch_size_bytes.max(size)),
                tokens: Vec::new(),
                created: now,
                reserved_bytes: 0,
                base_sequence,
            }
        });
        open.builder.push(record);
        open.tokens.push(token);
        open.reserved_bytes += size;
        self.used_bytes += size;
        if open.builder.size_estimate() >= config.batch_size_bytes {
            close_open(tp, queue, &mut closed);
        }
        Ok(closed)
    }

    /// Closes open batches that lingered long enough (all of them when
    /// `force`, as `flush` does).
    pub fn close_lingering(&mut self, now: Instant, force: bool) -> Closed<T> {
        let linger = self.config.linger;
        let mut closed = Closed::default();
        for (tp, queue) in &mut self.queues {
            let due = queue
                .open
                .as_ref()
                .is_some_and(|open| force || now >= open.created + linger);
            if due {
                close_open(tp, queue, &mut closed);
            }
        }
        closed
    }

    /// Partitions whose next queued batch may be sent at `now`, in a fixed
    /// order.
    pub fn sendable(&self, now: Instant) -> Vec<TopicPartition> {
        self.queues
            .iter()
            .filter(|(_, q)| {
                q.closed
                    .front()
                    .is_some_and(|b| b.retry_at.is_none_or(|at| at <= now))
            })
            .map(|(tp, _)| tp.clone())
            .collect()
    }

    /// Size of `tp`'s next queued batch.
    pub fn front_len(&self, tp: &TopicPartition) -> Option<usize> {
        self.queues
            .get(tp)
            .and_then(|q| q.closed.front())
            .map(|b| b.bytes.len())
    }

    /// Takes `tp`'s next queued batch for sending.
    pub fn take_front(&mut self, tp: &TopicPartition) -> Option<ReadyBatch<T>> {
        self.queues.get_mut(tp).and_then(|q| q.closed.pop_front())
    }

    /// Puts a batch to retry back at the head of its partition's queue, so
    /// it goes before anything appended after it.
    pub fn requeue_front(&mut self, batch: ReadyBatch<T>) {
        self.queues
            .entry(batch.tp.clone())
            .or_default()
            .closed
            .push_front(batch);
    }

    /// A batch left for good (acknowledged or failed): its bytes are free.
    pub fn release(&mut self, reserved_bytes: usize) {
        assert!(reserved_bytes <= self.used_bytes, "released more than held");
        self.used_bytes -= reserved_bytes;
    }

    /// Queued batches created before `cutoff` (delivery timeout): removed
    /// and returned, their bytes still reserved until `release`.
    pub fn take_expired(&mut self, cutoff: Instant) -> Vec<ReadyBatch<T>> {
        let mut expired = Vec::new();
        for queue in self.queues.values_mut() {
            while queue.closed.front().is_some_and(|b| b.created < cutoff) {
                if let Some(batch) = queue.closed.pop_front() {
                    expired.push(batch);
                }
            }
        }
        expired
    }

    /// Earliest time something becomes sendable without new records: an
    /// open batch's linger end or a queued batch's retry time. `None` when
    /// nothing waits; a time at or before `now` when something is ready.
    pub fn next_ready(&self) -> Option<Instant> {
        let linger = self.config.linger;
        self.queues
            .values()
            .flat_map(|q| {
                let open = q.open.as_ref().map(|o| o.created + linger);
                let front = q.closed.front().map(|b| b.retry_at.unwrap_or(b.created));
                open.into_iter().chain(front)
            })
            .min()
    }

    /// Whether no batch is open or queued (in-flight batches are the
    /// caller's).
    pub fn is_empty(&self) -> bool {
        self.queues
            .values()
            .all(|q| q.open.is_none() && q.closed.is_empty())
    }

    /// Removes every open and queued batch, for failing them on close.
    pub fn drain_all(&mut self) -> Vec<(TopicPartition, Vec<T>, usize)> {
        let mut out = Vec::new();
        for (tp, queue) in &mut self.queues {
            if let Some(open) = queue.open.take() {
                out.push((tp.clone(), open.tokens, open.reserved_bytes));
            }
            for batch in queue.closed.drain(..) {
                out.push((tp.clone(), batch.tokens, batch.reserved_bytes));
            }
        }
        out
    }
}

fn close_open<T, F: ProduceFormat>(
    tp: &TopicPartition,
    queue: &mut PartitionQueue<T, F>,
    closed: &mut Closed<T>,
) {
    let Some(open) = queue.open.take() else {
        return;
    };
    let count = open.tokens.len();
    closed.closed.push(tp.clone());
    match open.builder.finish() {
        Ok(bytes) => {
            if open.base_sequence != Sequence::NONE {
                // Sequences wrap at i32::MAX, as in Kafka.
                queue.next_sequence = open.base_sequence.wrapping_plus(count as u32).0;
            }
            queue.closed.push_back(ReadyBatch {
                tp: tp.clone(),
                bytes,
                tokens: open.tokens,
                created: open.created,
                attempts: 0,
                retry_at: None,
                reserved_bytes: open.reserved_bytes,
            });
        }
        Err(error) => closed.failed.push(FailedBatch {
            tp: tp.clone(),
            tokens: open.tokens,
            error,
            reserved_bytes: open.reserved_bytes,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjord_schema::BatchView;

    fn tp(partition: u32) -> TopicPartition {
        TopicPartition {
            topic: Arc::from("t"),
            partition: PartitionId(partition),
        }
    }

    fn record(value: &[u8]) -> RecordInput<'_> {
        RecordInput {
            value: Some(value),
            timestamp: 1_000,
            ..RecordInput::default()
        }
    }

    fn config() -> AccumulatorConfig {
        AccumulatorConfig {
            batch_size_bytes: 1024,
            linger: Duration::from_millis(10),
            buffer_memory_bytes: 64 * 1024,
            record_size_max_bytes: 8 * 1024,
            ..AccumulatorConfig::default()
        }
    }

    fn values_of(batch: &ReadyBatch<u32>) -> Vec<Vec<u8>> {
        let (view, rest) = BatchView::parse(&batch.bytes).expect("valid batch");
        assert!(rest.is_empty());
        let mut scratch = Vec::new();
        let records = view.records(&mut scratch, 1 << 20).expect("records");
        records
            .iter()
            .map(|r| r.value().unwrap_or_default().to_vec())
            .collect()
    }

    #[test]
    fn a_batch_waits_for_linger_then_is_sendable() {
        let mut acc = Accumulator::new(config());
        let t0 = Instant::now();
        let closed = acc.append(&tp(0), record(b"a"), 1, t0).expect("fits");
        assert!(closed.closed.is_empty());
        acc.append(&tp(0), record(b"b"), 2, t0).expect("fits");
        assert!(acc
            .close_lingering(t0 + Duration::from_millis(9), false)
            .closed
            .is_empty());
        assert!(acc.sendable(t0).is_empty());
        assert_eq!(acc.next_ready(), Some(t0 + Duration::from_millis(10)));

        let closed = acc.close_lingering(t0 + Duration::from_millis(10), false);
        assert_eq!(closed.closed, vec![tp(0)]);
        assert_eq!(acc.sendable(t0), vec![tp(0)]);
        let batch = acc.take_front(&tp(0)).expect("queued");
        assert_eq!(batch.tokens, vec![1, 2]);
        assert_eq!(values_of(&batch), vec![b"a".to_vec(), b"b".to_vec()]);
        assert!(acc.is_empty());
    }

    #[test]
    fn a_full_batch_closes_without_waiting_for_linger() {
        let mut acc = Accumulator::new(config());
        let t0 = Instant::now();
        let value = [7u8; 100];
        let mut closed_after = None;
        for i in 0..20u32 {
            let closed = acc.append(&tp(0), record(&value), i, t0).expect("fits");
            if !closed.closed.is_empty() && closed_after.is_none() {
                closed_after = Some(i);
            }
        }
        let first = closed_after.expect("a 1 KiB batch fills within 20 records of 100 bytes");
        assert!(first > 1, "closed after {first} records");
        let batch = acc.take_front(&tp(0)).expect("a full batch is queued");
        // Never over the configured batch size (one record alone may be).
        assert!(batch.bytes.len() <= 1024, "{} bytes", batch.bytes.len());
        assert!(values_of(&batch).iter().all(|v| v == &value));
        let mut tokens = batch.tokens.clone();
        // Later batches continue the token sequence in order.
        acc.close_lingering(t0, true);
        while let Some(next) = acc.take_front(&tp(0)) {
            tokens.extend(next.tokens);
        }
        assert_eq!(tokens, (0..20).collect::<Vec<_>>());
    }

    #[test]
    fn a_record_larger_than_the_batch_size_gets_its_own_batch() {
        let mut acc = Accumulator::new(config());
        let t0 = Instant::now();
        acc.append(&tp(0), record(b"small"), 0, t0).expect("fits");
        let big = vec![1u8; 4000];
        let closed = acc.append(&tp(0), record(&big), 1, t0).expect("fits");
        // The small one's batch closed before, the big one's after.
        assert_eq!(closed.closed, vec![tp(0), tp(0)]);
        assert_eq!(acc.take_front(&tp(0)).expect("first").tokens, vec![0]);
        assert_eq!(acc.take_front(&tp(0)).expect("second").tokens, vec![1]);
    }

    #[test]
    fn oversized_records_and_a_full_buffer_are_refused() {
        let mut acc = Accumulator::new(AccumulatorConfig {
            buffer_memory_bytes: 10 * 1024,
            ..config()
        });
        let t0 = Instant::now();
        let huge = vec![0u8; 9 * 1024];
        match acc.append(&tp(0), record(&huge), 9, t0) {
            Err(AppendError::RecordTooLarge { token, .. }) => assert_eq!(token, 9),
            other => panic!("expected RecordTooLarge, got {other:?}"),
        }
        let value = vec![0u8; 1000];
        let mut accepted = 0;
        let refused = loop {
            match acc.append(&tp(accepted % 3), record(&value), accepted, t0) {
                Ok(_) => accepted += 1,
                Err(AppendError::BufferFull(token)) => break token,
                Err(other) => panic!("unexpected {other:?}"),
            }
            assert!(accepted < 100, "the buffer never filled");
        };
        assert_eq!(refused, accepted);
        assert!(acc.used_bytes() <= 10 * 1024);

        // Completing a batch frees its bytes for new records.
        acc.close_lingering(t0, true);
        let batch = acc.take_front(&tp(0)).expect("queued");
        acc.release(batch.reserved_bytes);
        acc.append(&tp(0), record(&value), 1000, t0)
            .expect("room after release");
    }

    #[test]
    fn retried_batches_go_first_and_wait_for_their_backoff() {
        let mut acc = Accumulator::new(config());
        let t0 = Instant::now();
        acc.append(&tp(1), record(b"first"), 1, t0).expect("fits");
        acc.close_lingering(t0, true);
        let mut first = acc.take_front(&tp(1)).expect("queued");
        acc.append(&tp(1), record(b"second"), 2, t0).expect("fits");
        acc.close_lingering(t0, true);

        first.attempts = 1;
        first.retry_at = Some(t0 + Duration::from_millis(100));
        acc.requeue_front(first);
        assert!(acc.sendable(t0 + Duration::from_millis(99)).is_empty());
        assert_eq!(acc.next_ready(), Some(t0 + Duration::from_millis(100)));
        assert_eq!(acc.sendable(t0 + Duration::from_millis(100)), vec![tp(1)]);
        assert_eq!(acc.take_front(&tp(1)).expect("retry").tokens, vec![1]);
        assert_eq!(acc.take_front(&tp(1)).expect("next").tokens, vec![2]);
    }

    #[test]
    fn expired_batches_are_taken_out() {
        let mut acc = Accumulator::new(config());
        let t0 = Instant::now();
        acc.append(&tp(0), record(b"old"), 1, t0).expect("fits");
        acc.close_lingering(t0, true);
        acc.append(&tp(0), record(b"new"), 2, t0 + Duration::from_secs(5))
            .expect("fits");
        acc.close_lingering(t0 + Duration::from_secs(5), true);
        let expired = acc.take_expired(t0 + Duration::from_secs(1));
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].tokens, vec![1]);
        assert_eq!(acc.take_front(&tp(0)).expect("young").tokens, vec![2]);
    }

    #[test]
    fn idempotent_batches_carry_consecutive_sequences() {
        let mut acc = Accumulator::new(AccumulatorConfig {
            producer_id: ProducerId(17),
            producer_epoch: ProducerEpoch(2),
            ..config()
        });
        let t0 = Instant::now();
        for i in 0..3 {
            acc.append(&tp(0), record(b"x"), i, t0).expect("fits");
        }
        acc.close_lingering(t0, true);
        acc.append(&tp(0), record(b"y"), 3, t0).expect("fits");
        acc.close_lingering(t0, true);
        let sequences: Vec<_> = (0..2)
            .map(|_| {
                let batch = acc.take_front(&tp(0)).expect("queued");
                let (view, _) = BatchView::parse(&batch.bytes).expect("valid");
                assert_eq!(view.header().producer_id(), ProducerId(17));
                assert_eq!(view.header().producer_epoch(), ProducerEpoch(2));
                view.header().base_sequence()
            })
            .collect();
        assert_eq!(sequences, vec![Sequence(0), Sequence(3)]);
    }

    #[test]
    fn compressed_batches_hold_the_same_records() {
        for compression in Compression::ALL {
            let mut acc = Accumulator::new(AccumulatorConfig {
                compression,
                ..config()
            });
            let t0 = Instant::now();
            acc.append(&tp(0), record(b"hello"), 0, t0).expect("fits");
            acc.append(&tp(0), record(b"world"), 1, t0).expect("fits");
            acc.close_lingering(t0, true);
            let batch = acc.take_front(&tp(0)).expect("queued");
            let (view, _) = BatchView::parse(&batch.bytes).expect("valid");
            assert_eq!(view.header().compression(), Ok(compression));
            assert_eq!(
                values_of(&batch),
                vec![b"hello".to_vec(), b"world".to_vec()]
            );
        }
    }
}
