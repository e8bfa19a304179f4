//! How a producer's records become bytes on the wire: the batch format its
//! accumulator builds and the produce request the core puts batches in.
//! [`ProducerCore`](super::producer_core::ProducerCore) and the
//! [`Accumulator`](super::accumulator::Accumulator) are generic over it so
//! the same batching, linger, buffer, partitioning, in-flight and retry
//! logic can drive another wire protocol: the native format
//! ([`BatchBuilder`], the flatbuffers ProduceRequest with batches in the
//! frame payload) is the default; `loadgen` adds Kafka's RecordBatch v2 in
//! a Produce request to benchmark the broker's Kafka listener with the very
//! same producer logic.

use bytes::Bytes;
use fjord_schema::batch::BATCH_HEADER_LEN;
use fjord_schema::{BatchBuilder, BatchError, BatchOptions, RecordInput};

use super::protocol::{encode_produce, Acks, EncodedProduce, ProducePartition};

/// One batch being built, and how finished batches go in a request.
pub trait ProduceFormat: Sized {
    /// Bytes of a batch that are not records (counted once per batch).
    const BATCH_OVERHEAD_BYTES: usize;

    /// An empty batch with room for about `capacity_bytes`.
    fn with_capacity(options: BatchOptions, capacity_bytes: usize) -> Self;

    /// Bytes one more record would add (decided before pushing it).
    fn record_size_estimate(record: &RecordInput<'_>) -> usize;

    /// Adds a record (offset deltas chosen by the batch: previous + 1).
    fn push(&mut self, record: RecordInput<'_>);

    /// Bytes so far before compression, what `batch.size` is compared with.
    fn size_estimate(&self) -> usize;

    /// The finished batch: header, (compressed) records, checksum.
    fn finish(self) -> Result<Bytes, BatchError>;

    /// A produce request carrying these batches; `None` when it cannot be
    /// encoded (over the format's size limits).
    fn encode_produce(
        topics: &[(&str, Vec<ProducePartition>)],
        acks: Acks,
        timeout_ms: u32,
    ) -> Option<EncodedProduce>;
}

/// The native format.
impl ProduceFormat for BatchBuilder {
    const BATCH_OVERHEAD_BYTES: usize = BATCH_HEADER_LEN;

    fn with_capacity(options: BatchOptions, capacity_bytes: usize) -> Self {
        BatchBuilder::with_capacity(options, capacity_bytes)
    }

    fn record_size_estimate(record: &RecordInput<'_>) -> usize {
        BatchBuilder::record_size_estimate(record)
    }

    fn push(&mut self, record: RecordInput<'_>) {
        BatchBuilder::push(self, record);
    }

    fn size_estimate(&self) -> usize {
        BatchBuilder::size_estimate(self)
    }

    fn finish(self) -> Result<Bytes, BatchError> {
        BatchBuilder::finish(self)
    }

    fn encode_produce(
        topics: &[(&str, Vec<ProducePartition>)],
        acks: Acks,
        timeout_ms: u32,
    ) -> Option<EncodedProduce> {
        encode_produce(topics, acks, timeout_ms)
    }
}
