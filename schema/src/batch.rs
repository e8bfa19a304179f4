//! The record batch: the unit producers send, the broker stores and consumers
//! read, byte for byte the same everywhere (the broker only fills in the base
//! offset and leader epoch, which the CRC does not cover).
//!
//! ```text
//! 0  base_offset        u64  assigned by the leader on append
//! 8  batch_len          u32  whole batch, header included
//! 12 leader_epoch       u32  assigned by the leader on append
//! 16 magic              u8   batch format version (BATCH_MAGIC)
//! 17 reserved           [u8; 3], zero
//! 20 crc32c             u32  over bytes 24..batch_len
//! 24 attributes         u16  bits 0-2 codec, 3 timestamp type,
//!                            4 transactional, 5 control (as Kafka)
//! 26 producer_epoch     i16
//! 28 last_offset_delta  u32
//! 32 first_timestamp    i64  ms
//! 40 max_timestamp      i64  ms
//! 48 producer_id        i64
//! 56 base_sequence      i32
//! 60 record_count       u32
//! 64 records body       flatbuffers `Records`, compressed as a whole when
//!                       the codec is not none
//! ```
//!
//! This carries everything a Kafka RecordBatch v2 carries, so the Kafka
//! listener converts both ways without loss.

use bytes::Bytes;
use flatbuffers::{FlatBufferBuilder, ForwardsUOffset, Vector, WIPOffset};
use zerocopy::little_endian::{I16, I32, I64, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::compression::{self, Compression};
use crate::ids::{LeaderEpoch, Offset, ProducerEpoch, ProducerId, Sequence};
use crate::wire;

pub const BATCH_HEADER_LEN: usize = 64;
pub const BATCH_MAGIC: u8 = 1;
/// Offset of the first byte the CRC covers.
pub const BATCH_CRC_START: usize = 24;
/// Offsets stay below this (Kafka offsets are non-negative `i64`s).
pub const OFFSET_MAX: u64 = i64::MAX as u64;
/// Hard upper bound of the format; brokers configure a lower one
/// (`message.max.bytes`).
pub const BATCH_LEN_MAX: usize = 1 << 30;

const _: () = assert!(size_of::<BatchHeader>() == BATCH_HEADER_LEN);
const _: () = assert!(BATCH_CRC_START == 20 + size_of::<u32>());

const ATTR_CODEC_MASK: u16 = 0b111;
const ATTR_LOG_APPEND_TIME: u16 = 1 << 3;
const ATTR_TRANSACTIONAL: u16 = 1 << 4;
const ATTR_CONTROL: u16 = 1 << 5;
/// Every attribute bit with a meaning (codec, timestamp type,
/// transactional, control). A produce setting any other is refused
/// (`fjord_broker::batches::VerifiedBatches::verify`): Kafka gives bit 6 a
/// meaning (delete horizon) that a native batch does not have.
pub const ATTRIBUTES_DEFINED: u16 =
    ATTR_CODEC_MASK | ATTR_LOG_APPEND_TIME | ATTR_TRANSACTIONAL | ATTR_CONTROL;

#[repr(C)]
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
pub struct BatchHeader {
    pub base_offset: U64,
    pub batch_len: U32,
    pub leader_epoch: U32,
    pub magic: u8,
    pub reserved: [u8; 3],
    pub crc32c: U32,
    pub attributes: U16,
    pub producer_epoch: I16,
    pub last_offset_delta: U32,
    pub first_timestamp: I64,
    pub max_timestamp: I64,
    pub producer_id: I64,
    pub base_sequence: I32,
    pub record_count: U32,
}

/// Whether record timestamps are the producer's or the broker's append time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TimestampType {
    #[default]
    CreateTime,
    LogAppendTime,
}

impl BatchHeader {
    pub fn base_offset(&self) -> Offset {
        Offset(self.base_offset.get())
    }
    /// Offset of the last record in the batch.
    pub fn last_offset(&self) -> Offset {
        self.base_offset()
            .plus(u64::from(self.last_offset_delta.get()))
    }
    /// The offset after this batch.
    pub fn next_offset(&self) -> Offset {
        self.last_offset().plus(1)
    }
    pub fn batch_len(&self) -> usize {
        self.batch_len.get() as usize
    }
    pub fn leader_epoch(&self) -> LeaderEpoch {
        LeaderEpoch(self.leader_epoch.get())
    }
    pub fn compression(&self) -> Result<Compression, BatchError> {
        Compression::from_id((self.attributes.get() & ATTR_CODEC_MASK) as u8)
    }
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes.get() & ATTR_LOG_APPEND_TIME != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes.get() & ATTR_TRANSACTIONAL != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes.get() & ATTR_CONTROL != 0
    }
    pub fn producer_id(&self) -> ProducerId {
        ProducerId(self.producer_id.get())
    }
    pub fn producer_epoch(&self) -> ProducerEpoch {
        ProducerEpoch(self.producer_epoch.get())
    }
    pub fn base_sequence(&self) -> Sequence {
        Sequence(self.base_sequence.get())
    }
    pub fn record_count(&self) -> u32 {
        self.record_count.get()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("truncated batch: needed {needed} bytes, got {got}")]
    Truncated { needed: usize, got: usize },
    #[error("unsupported batch format version {0} (this build reads version {BATCH_MAGIC})")]
    UnsupportedVersion(u8),
    #[error("batch header reserved bytes are not zero")]
    ReservedNotZero,
    #[error("batch length {0} is smaller than the batch header")]
    LengthTooSmall(usize),
    #[error("{len} bytes exceed the limit of {len_max} bytes")]
    TooLarge { len: usize, len_max: usize },
    #[error("batch CRC32C mismatch: header says {expected:#010x}, bytes give {actual:#010x}")]
    CrcMismatch { expected: u32, actual: u32 },
    #[error("unsupported compression codec id {0}")]
    UnsupportedCompression(u8),
    #[error("compression codec error: {0}")]
    Codec(String),
    #[error("malformed records body: {0}")]
    MalformedRecords(String),
    #[error("batch header says {header} records, body has {body}")]
    RecordCountMismatch { header: u32, body: usize },
    #[error("record offset deltas are not strictly increasing or do not end at last_offset_delta")]
    BadOffsetDeltas,
    #[error("batch offsets run past the largest offset")]
    OffsetOverflow,
    #[error("a batch holds at least one record")]
    Empty,
}

/// A validated batch: length, version and CRC32C were checked once in
/// [`BatchView::parse`]; records are read in place (after decompression for
/// compressed batches).
#[derive(Clone, Copy, Debug)]
pub struct BatchView<'a> {
    header: &'a BatchHeader,
    bytes: &'a [u8],
}

impl<'a> BatchView<'a> {
    /// Parses and verifies the batch at the start of `bytes`; returns it and
    /// the bytes after it.
    pub fn parse(bytes: &'a [u8]) -> Result<(BatchView<'a>, &'a [u8]), BatchError> {
        let header = BatchView::parse_header(bytes)?;
        let len = header.batch_len();
        if bytes.len() < len {
            return Err(BatchError::Truncated {
                needed: len,
                got: bytes.len(),
            });
        }
        let (bytes, rest) = bytes.split_at(len);
        let actual = crc32c::crc32c(&bytes[BATCH_CRC_START..]);
        if actual != header.crc32c.get() {
            return Err(BatchError::CrcMismatch {
                expected: header.crc32c.get(),
                actual,
            });
        }
        let view = BatchView { header, bytes };
        view.header.compression()?;
        Ok((view, rest))
    }

    /// Checks the fixed header alone (not the CRC): enough to know how long
    /// the batch claims to be. Storage recovery uses it to tell a batch from
    /// zero padding before it reads the rest.
    pub fn parse_header(bytes: &'a [u8]) -> Result<&'a BatchHeader, BatchError> {
        let (header, _) =
            BatchHeader::ref_from_prefix(bytes).map_err(|_| BatchError::Truncated {
                needed: BATCH_HEADER_LEN,
                got: bytes.len(),
            })?;
        if header.magic != BATCH_MAGIC {
            return Err(BatchError::UnsupportedVersion(header.magic));
        }
        if header.reserved != [0; 3] {
            return Err(BatchError::ReservedNotZero);
        }
        let len = header.batch_len();
        if len < BATCH_HEADER_LEN {
            return Err(BatchError::LengthTooSmall(len));
        }
        if len > BATCH_LEN_MAX {
            return Err(BatchError::TooLarge {
                len,
                len_max: BATCH_LEN_MAX,
            });
        }
        // Offsets are Kafka's non-negative i64: the batch's last offset and
        // the one after it must stay in that range.
        let last = header
            .base_offset
            .get()
            .checked_add(u64::from(header.last_offset_delta.get()));
        if last.is_none_or(|last| last >= OFFSET_MAX) {
            return Err(BatchError::OffsetOverflow);
        }
        Ok(header)
    }

    pub fn header(&self) -> &'a BatchHeader {
        self.header
    }

    /// The whole batch, header included, as it is on the wire and on disk.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The records body as stored (compressed or not).
    pub fn body(&self) -> &'a [u8] {
        &self.bytes[BATCH_HEADER_LEN..]
    }

    /// The records. Uncompressed batches are read in place; compressed ones
    /// are decompressed into `scratch` (at most `uncompressed_len_max`
    /// bytes). Verifies the flatbuffers body and that the records agree with
    /// the header (count and offset deltas).
    pub fn records<'b>(
        &self,
        scratch: &'b mut Vec<u8>,
        uncompressed_len_max: usize,
    ) -> Result<RecordsView<'b>, BatchError>
    where
        'a: 'b,
    {
        let body: &'b [u8] = match self.header.compression()? {
            Compression::None => self.body(),
            codec => {
                compression::decompress(codec, self.body(), uncompressed_len_max, scratch)?;
                scratch.as_slice()
            }
        };
        let options = flatbuffers::VerifierOptions {
            max_depth: 8,
            // Each record is at most a handful of tables (record, headers).
            max_tables: body.len() / 4 + 8,
            max_apparent_size: body.len() * 2 + 64,
            ..Default::default()
        };
        let records = flatbuffers::root_with_opts::<wire::Records>(&options, body)
            .map_err(|e| BatchError::MalformedRecords(e.to_string()))?;
        let list = records.records().unwrap_or_default();
        let count = self.header.record_count();
        if list.len() != count as usize {
            return Err(BatchError::RecordCountMismatch {
                header: count,
                body: list.len(),
            });
        }
        if count == 0 {
            return Err(BatchError::Empty);
        }
        let mut previous: Option<u32> = None;
        for record in list.iter() {
            let delta = record.offset_delta();
            if previous.is_some_and(|p| delta <= p) {
                return Err(BatchError::BadOffsetDeltas);
            }
            previous = Some(delta);
        }
        if previous != Some(self.header.last_offset_delta.get()) {
            return Err(BatchError::BadOffsetDeltas);
        }
        Ok(RecordsView {
            list,
            base_offset: self.header.base_offset(),
            first_timestamp: self.header.first_timestamp.get(),
        })
    }
}

impl BatchView<'_> {
    /// Bytes the records body has uncompressed, as the batch claims (the
    /// compressed body's length prefix; checked when it is decompressed).
    pub fn uncompressed_len_claimed(&self) -> Result<usize, BatchError> {
        match self.header.compression()? {
            Compression::None => Ok(self.body().len()),
            _ => {
                let prefix = self
                    .body()
                    .first_chunk::<{ compression::LENGTH_PREFIX_LEN }>();
                let prefix = prefix.ok_or(BatchError::Truncated {
                    needed: BATCH_HEADER_LEN + compression::LENGTH_PREFIX_LEN,
                    got: self.bytes.len(),
                })?;
                Ok(u32::from_le_bytes(*prefix) as usize)
            }
        }
    }
}

/// The batch at the start of `batch` re-encoded with `codec` (the broker's
/// `compression.type`): the same records body, decompressed (at most
/// `uncompressed_len_max` bytes, verified as [`BatchView::records`] does)
/// and compressed again; codec bits, `batch_len` and the CRC32C are
/// rewritten, every other header field (base offset and epoch too) is
/// kept. The one place a batch is re-encoded.
pub fn recompress(
    batch: &[u8],
    codec: Compression,
    uncompressed_len_max: usize,
) -> Result<Vec<u8>, BatchError> {
    let (view, _) = BatchView::parse(batch)?;
    let source = view.header().compression()?;
    let claimed = view.uncompressed_len_claimed()?;
    if claimed > uncompressed_len_max {
        return Err(BatchError::TooLarge {
            len: claimed,
            len_max: uncompressed_len_max,
        });
    }
    let mut scratch = Vec::new();
    view.records(&mut scratch, uncompressed_len_max)?;
    let body = match source {
        Compression::None => view.body(),
        _ => scratch.as_slice(),
    };
    let mut out = Vec::with_capacity(BATCH_HEADER_LEN + body.len());
    out.extend_from_slice(&view.as_bytes()[..BATCH_HEADER_LEN]);
    match codec {
        Compression::None => out.extend_from_slice(body),
        _ => compression::compress(codec, body, &mut out)?,
    }
    if out.len() > BATCH_LEN_MAX {
        return Err(BatchError::TooLarge {
            len: out.len(),
            len_max: BATCH_LEN_MAX,
        });
    }
    let len = out.len() as u32;
    let (header, _) = BatchHeader::mut_from_prefix(&mut out).expect("header copied above");
    let attributes = header.attributes.get();
    header.attributes = U16::new((attributes & !ATTR_CODEC_MASK) | codec as u16);
    header.batch_len = U32::new(len);
    let crc = crc32c::crc32c(&out[BATCH_CRC_START..]);
    out[20..24].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Sets the fields the leader owns (not covered by the CRC) in place.
pub fn assign_offset_and_epoch(batch: &mut [u8], base_offset: Offset, epoch: LeaderEpoch) {
    let (header, _) = BatchHeader::mut_from_prefix(batch).expect("batch shorter than its header");
    let last = base_offset
        .get()
        .checked_add(u64::from(header.last_offset_delta.get()));
    assert!(
        last.is_some_and(|last| last < OFFSET_MAX),
        "offset past OFFSET_MAX"
    );
    header.base_offset.set(base_offset.0);
    header.leader_epoch.set(epoch.0);
}

/// Iterates over whole batches laid back to back (a produce request's
/// records, a fetch response, a segment file region).
#[derive(Debug, Clone)]
pub struct Batches<'a> {
    rest: &'a [u8],
}

impl<'a> Batches<'a> {
    pub fn new(bytes: &'a [u8]) -> Batches<'a> {
        Batches { rest: bytes }
    }
}

impl<'a> Iterator for Batches<'a> {
    type Item = Result<BatchView<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match BatchView::parse(self.rest) {
            Ok((view, rest)) => {
                self.rest = rest;
                Some(Ok(view))
            }
            Err(error) => {
                self.rest = &[];
                Some(Err(error))
            }
        }
    }
}

/// The verified records of one batch.
#[derive(Clone, Copy, Debug)]
pub struct RecordsView<'a> {
    list: Vector<'a, ForwardsUOffset<wire::Record<'a>>>,
    base_offset: Offset,
    first_timestamp: i64,
}

impl<'a> RecordsView<'a> {
    pub fn len(&self) -> usize {
        self.list.len()
    }
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
    pub fn get(&self, index: usize) -> RecordView<'a> {
        self.record(self.list.get(index))
    }
    pub fn iter(&self) -> impl ExactSizeIterator<Item = RecordView<'a>> + '_ {
        self.list.iter().map(|r| self.record(r))
    }
    fn record(&self, record: wire::Record<'a>) -> RecordView<'a> {
        RecordView {
            offset: self.base_offset.plus(u64::from(record.offset_delta())),
            timestamp: self.first_timestamp.wrapping_add(record.timestamp_delta()),
            record,
        }
    }
}

/// One record, borrowed from the batch (or its decompressed body).
#[derive(Clone, Copy, Debug)]
pub struct RecordView<'a> {
    pub offset: Offset,
    pub timestamp: i64,
    record: wire::Record<'a>,
}

impl<'a> RecordView<'a> {
    /// `None` is a null key (distinct from an empty one).
    pub fn key(&self) -> Option<&'a [u8]> {
        self.record.key().map(|v| v.bytes())
    }
    /// `None` is a null value: a tombstone.
    pub fn value(&self) -> Option<&'a [u8]> {
        self.record.value().map(|v| v.bytes())
    }
    pub fn header_count(&self) -> usize {
        self.record.headers().map_or(0, |h| h.len())
    }
    /// Headers as (key, value); a header key is never null, a value may be.
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a {
        self.record.headers().into_iter().flat_map(|headers| {
            headers.iter().map(|h| {
                (
                    h.key().map_or(&[][..], |k| k.bytes()),
                    h.value().map(|v| v.bytes()),
                )
            })
        })
    }
}

/// Producer-side batch settings.
#[derive(Clone, Copy, Debug)]
pub struct BatchOptions {
    pub compression: Compression,
    pub timestamp_type: TimestampType,
    pub producer_id: ProducerId,
    pub producer_epoch: ProducerEpoch,
    pub base_sequence: Sequence,
    pub transactional: bool,
    pub control: bool,
    /// Timestamp the record deltas are relative to; default: the first
    /// record's. The Kafka listener sets Kafka's `baseTimestamp` here so a
    /// converted batch keeps it exactly.
    pub base_timestamp: Option<i64>,
    /// Overrides the batch max timestamp (default: the largest record
    /// timestamp); Kafka sets it to the append time under LogAppendTime.
    pub max_timestamp: Option<i64>,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            compression: Compression::None,
            timestamp_type: TimestampType::CreateTime,
            producer_id: ProducerId::NONE,
            producer_epoch: ProducerEpoch::NONE,
            base_sequence: Sequence::NONE,
            transactional: false,
            control: false,
            base_timestamp: None,
            max_timestamp: None,
        }
    }
}

/// One record to add to a batch.
#[derive(Clone, Copy, Debug, Default)]
pub struct RecordInput<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [(&'a [u8], Option<&'a [u8]>)],
    pub timestamp: i64,
    /// Offset delta of this record; `None` means "next" (previous + 1).
    /// Only compacted or converted batches have gaps.
    pub offset_delta: Option<u32>,
}

/// Builds one batch. Records are encoded into the flatbuffer as they are
/// pushed; `finish` compresses (if asked), writes the header and the CRC.
pub struct BatchBuilder {
    options: BatchOptions,
    fbb: FlatBufferBuilder<'static>,
    records: Vec<WIPOffset<wire::Record<'static>>>,
    first_timestamp: i64,
    max_timestamp: i64,
    last_offset_delta: Option<u32>,
}

impl std::fmt::Debug for BatchBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchBuilder")
            .field("options", &self.options)
            .field("records", &self.records.len())
            .field("bytes", &self.fbb.unfinished_data().len())
            .finish()
    }
}

impl BatchBuilder {
    pub fn new(options: BatchOptions) -> BatchBuilder {
        BatchBuilder::with_capacity(options, 16 * 1024)
    }

    pub fn with_capacity(options: BatchOptions, bytes: usize) -> BatchBuilder {
        BatchBuilder {
            options,
            fbb: FlatBufferBuilder::with_capacity(bytes),
            records: Vec::new(),
            first_timestamp: options.base_timestamp.unwrap_or(0),
            max_timestamp: i64::MIN,
            last_offset_delta: None,
        }
    }

    pub fn record_count(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Bytes the batch takes so far, before compression; what a producer
    /// compares with its `batch.size`.
    pub fn size_estimate(&self) -> usize {
        BATCH_HEADER_LEN + self.fbb.unfinished_data().len() + 4 * self.records.len() + 16
    }

    /// Bytes one more record would add, for deciding before pushing it.
    pub fn record_size_estimate(record: &RecordInput<'_>) -> usize {
        let headers: usize = record
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.map_or(0, |v| v.len()) + 24)
            .sum();
        record.key.map_or(0, |k| k.len()) + record.value.map_or(0, |v| v.len()) + headers + 48
    }

    /// Adds a record. Panics if its offset delta does not increase (a
    /// programmer error for callers that choose deltas; converters of
    /// untrusted input use [`BatchBuilder::try_push`]).
    pub fn push(&mut self, record: RecordInput<'_>) {
        self.try_push(record)
            .expect("record offset deltas must increase and fit in u32");
    }

    /// Adds a record, or refuses it (`BadOffsetDeltas`, nothing added) when
    /// its offset delta does not increase or would overflow.
    pub fn try_push(&mut self, record: RecordInput<'_>) -> Result<(), BatchError> {
        let offset_delta = match (record.offset_delta, self.last_offset_delta) {
            (Some(delta), None) => delta,
            (Some(delta), Some(last)) if delta > last => delta,
            (Some(_), Some(_)) => return Err(BatchError::BadOffsetDeltas),
            (None, None) => 0,
            (None, Some(last)) => last.checked_add(1).ok_or(BatchError::BadOffsetDeltas)?,
        };
        if self.records.is_empty() && self.options.base_timestamp.is_none() {
            self.first_timestamp = record.timestamp;
        }
        self.last_offset_delta = Some(offset_delta);
        self.max_timestamp = self.max_timestamp.max(record.timestamp);

        let fbb = &mut self.fbb;
        let headers = if record.headers.is_empty() {
            None
        } else {
            let headers: Vec<_> = record
                .headers
                .iter()
                .map(|(key, value)| {
                    let key = Some(fbb.create_vector(key));
                    let value = value.map(|v| fbb.create_vector(v));
                    wire::RecordHeader::create(fbb, &wire::RecordHeaderArgs { key, value })
                })
                .collect();
            Some(fbb.create_vector(&headers))
        };
        let key = record.key.map(|k| fbb.create_vector(k));
        let value = record.value.map(|v| fbb.create_vector(v));
        let args = wire::RecordArgs {
            offset_delta,
            timestamp_delta: record.timestamp.wrapping_sub(self.first_timestamp),
            key,
            value,
            headers,
        };
        let offset = wire::Record::create(fbb, &args);
        self.records.push(offset);
        Ok(())
    }

    /// Finishes the batch: base offset 0 and leader epoch 0 until the broker
    /// assigns them. Fails only if the batch is empty or too large.
    pub fn finish(self) -> Result<Bytes, BatchError> {
        let (vec, start) = self.finish_in_place()?;
        Ok(Bytes::from(vec).slice(start..))
    }

    /// [`BatchBuilder::finish`], as the buffer the batch was built in and
    /// where in it the batch starts (`vec[start..]`): an uncompressed batch
    /// is not moved to the front, and the caller may still edit it (the
    /// Kafka listener sets the producer's base offset and epoch).
    pub fn finish_in_place(mut self) -> Result<(Vec<u8>, usize), BatchError> {
        let Some(last_offset_delta) = self.last_offset_delta else {
            return Err(BatchError::Empty);
        };
        let records = self.fbb.create_vector(&self.records);
        let root = wire::Records::create(
            &mut self.fbb,
            &wire::RecordsArgs {
                records: Some(records),
            },
        );
        self.fbb.finish_minimal(root);
        let count = self.records.len() as u32;

        let (mut vec, start) = match self.options.compression {
            Compression::None => {
                // The flatbuffer is built back to front at the tail of the
                // builder's vector: write the header just before it when
                // there is room, saving a copy of the whole body.
                let (vec, head) = self.fbb.collapse();
                if head >= BATCH_HEADER_LEN {
                    (vec, head - BATCH_HEADER_LEN)
                } else {
                    let mut out = Vec::with_capacity(BATCH_HEADER_LEN + vec.len() - head);
                    out.resize(BATCH_HEADER_LEN, 0);
                    out.extend_from_slice(&vec[head..]);
                    (out, 0)
                }
            }
            codec => {
                let body = self.fbb.finished_data();
                let mut out = Vec::with_capacity(BATCH_HEADER_LEN + body.len() / 2);
                out.resize(BATCH_HEADER_LEN, 0);
                compression::compress(codec, body, &mut out)?;
                (out, 0)
            }
        };
        let out = &mut vec[start..];
        if out.len() > BATCH_LEN_MAX {
            return Err(BatchError::TooLarge {
                len: out.len(),
                len_max: BATCH_LEN_MAX,
            });
        }

        let options = self.options;
        let mut attributes = options.compression as u16;
        if options.timestamp_type == TimestampType::LogAppendTime {
            attributes |= ATTR_LOG_APPEND_TIME;
        }
        if options.transactional {
            attributes |= ATTR_TRANSACTIONAL;
        }
        if options.control {
            attributes |= ATTR_CONTROL;
        }
        let header = BatchHeader {
            base_offset: U64::new(0),
            batch_len: U32::new(out.len() as u32),
            leader_epoch: U32::new(0),
            magic: BATCH_MAGIC,
            reserved: [0; 3],
            crc32c: U32::new(0),
            attributes: U16::new(attributes),
            producer_epoch: I16::new(options.producer_epoch.0),
            last_offset_delta: U32::new(last_offset_delta),
            first_timestamp: I64::new(self.first_timestamp),
            max_timestamp: I64::new(options.max_timestamp.unwrap_or(self.max_timestamp)),
            producer_id: I64::new(options.producer_id.0),
            base_sequence: I32::new(options.base_sequence.0),
            record_count: U32::new(count),
        };
        out[..BATCH_HEADER_LEN].copy_from_slice(header.as_bytes());
        let crc = crc32c::crc32c(&out[BATCH_CRC_START..]);
        out[20..24].copy_from_slice(&crc.to_le_bytes());
        Ok((vec, start))
    }
}

#[cfg(test)]
mod tests;
