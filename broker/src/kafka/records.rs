//! Kafka RecordBatch v2 ⇄ native batch, both ways without loss.
//!
//! A produce from a Kafka client arrives as back-to-back RecordBatch v2
//! (big-endian header, zigzag-varint records, the records section compressed
//! as a whole); [`kafka_to_native`] verifies each one (CRC-32C, lengths,
//! varints, counts, offset deltas, bounded decompression) and rebuilds it as
//! one native batch with every field kept: base offset, partition leader
//! epoch, attributes (codec, timestamp type, transactional, control),
//! baseTimestamp and maxTimestamp as given (not recomputed), producer id,
//! epoch and base sequence, offset-delta gaps, negative timestamp deltas,
//! null vs empty keys and values, headers in order (duplicates kept).
//! [`native_to_kafka`] writes the reverse for Fetch responses.
//!
//! Hand-written rather than `kafka_protocol::records`: that crate recomputes
//! base/max timestamps from the records and keeps headers in a map, so it
//! cannot round-trip. It serves as an independent oracle in the tests.
//!
//! The Kafka side uses Kafka's codec framings, which differ from the native
//! ones (`fjord_schema::compression`): snappy is xerial-framed when written
//! (the Java client's format) and read both framed and raw (librdkafka may
//! send either); lz4 is the LZ4 frame format with independent blocks (what
//! Java's `KafkaLZ4BlockInputStream` decodes); gzip and zstd are plain
//! streams. The codec ids are the same on both sides.

use bytes::Bytes;
use fjord_schema::batch::{assign_offset_and_epoch, Batches, TimestampType, OFFSET_MAX};
use fjord_schema::{
    BatchBuilder, BatchError, BatchOptions, Compression, ErrorCode, LeaderEpoch, Offset,
    ProducerEpoch, ProducerId, RecordInput, Sequence,
};

/// Bytes before the batchLength field ends; Kafka's batchLength counts the
/// bytes after it.
const LOG_OVERHEAD: usize = 12;
/// The fixed RecordBatch v2 header.
const HEADER_LEN: usize = 61;
const MAGIC_OFFSET: usize = 16;
const CRC_OFFSET: usize = 17;
/// The CRC-32C covers attributes to the end of the batch.
const ATTRIBUTES_OFFSET: usize = 21;
const MAGIC_V2: i8 = 2;
/// Codec (bits 0-2), timestamp type (3), transactional (4), control (5).
/// Bit 6 (delete horizon) is set only by Kafka's log cleaner, never by a
/// client, and the native batch has no meaning for it; such batches are
/// refused rather than silently changed.
const ATTRIBUTES_KNOWN: i16 = 0b11_1111;
const CODEC_MASK: i16 = 0b111;
/// The smallest record: length, attributes, timestamp delta, offset delta,
/// key length, value length, header count, one byte each.
const RECORD_LEN_MIN: usize = 7;
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
/// Magic, then version 1 and compatible version 1 (big-endian i32s).
const XERIAL_HEADER: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
/// The Java client's xerial block size.
const XERIAL_BLOCK_LEN: usize = 32 * 1024;

const _: () = assert!(HEADER_LEN == ATTRIBUTES_OFFSET + 2 + 4 + 8 + 8 + 8 + 2 + 4 + 4);
const _: () = assert!(CRC_OFFSET + 4 == ATTRIBUTES_OFFSET);

/// Bounds of one conversion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KafkaRecordsLimits {
    /// Largest Kafka batch accepted, all of it (Kafka's `message.max.bytes`
    /// counts the 12-byte log overhead too). Beyond: MESSAGE_TOO_LARGE.
    /// Only [`kafka_to_native`] applies it: fetched batches were bounded
    /// when they were produced.
    pub batch_bytes_max: usize,
    /// Largest records section after decompression, either side; a
    /// decompression bomb stops here. Beyond: RECORD_LIST_TOO_LARGE.
    pub uncompressed_bytes_max: usize,
}

impl Default for KafkaRecordsLimits {
    fn default() -> Self {
        KafkaRecordsLimits {
            // Kafka's default message.max.bytes.
            batch_bytes_max: 1_048_588,
            uncompressed_bytes_max: 64 << 20,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KafkaRecordsError {
    #[error("truncated record batch: needed {needed} bytes, got {got}")]
    Truncated { needed: usize, got: usize },
    #[error("record batch magic {0} is not supported (only v2)")]
    UnsupportedMagic(i8),
    #[error("record batch length {0} is smaller than the v2 header")]
    BatchLengthInvalid(i32),
    #[error("record batch of {len} bytes exceeds the limit of {len_max}")]
    BatchTooLarge { len: usize, len_max: usize },
    #[error(
        "record batch CRC-32C mismatch: header says {expected:#010x}, bytes give {actual:#010x}"
    )]
    CrcMismatch { expected: u32, actual: u32 },
    #[error("unsupported compression codec id {0}")]
    UnsupportedCompression(u8),
    #[error("record batch attributes {0:#06x} set bits this broker does not keep")]
    UnsupportedAttributes(i16),
    #[error("compression codec error: {0}")]
    Codec(String),
    #[error("records section decompresses to more than {len_max} bytes")]
    UncompressedTooLarge { len_max: usize },
    #[error(
        "the request's record batches decompress to more than the {len_max} bytes one request \
         may (decompressed_bytes_max_per_request); send smaller batches"
    )]
    RequestUncompressedTooLarge { len_max: usize },
    #[error("malformed varint in the records section")]
    BadVarint,
    #[error("malformed record: {0}")]
    MalformedRecord(&'static str),
    #[error("record attributes {0} are not zero")]
    RecordAttributesNotZero(i8),
    #[error("batch header says {header} records, the records section disagrees")]
    RecordCountMismatch { header: i32 },
    #[error("invalid offsets: {0}")]
    InvalidOffsets(&'static str),
    #[error("a record batch holds at least one record")]
    Empty,
    #[error("native batch: {0}")]
    Native(#[from] BatchError),
}

impl KafkaRecordsError {
    /// The error code a Produce (or Fetch) response carries for this error.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            KafkaRecordsError::UnsupportedCompression(_)
            | KafkaRecordsError::Native(BatchError::UnsupportedCompression(_)) => {
                ErrorCode::UnsupportedCompressionType
            }
            KafkaRecordsError::BatchTooLarge { .. }
            | KafkaRecordsError::Native(BatchError::TooLarge { .. }) => ErrorCode::MessageTooLarge,
            KafkaRecordsError::UncompressedTooLarge { .. } => ErrorCode::RecordListTooLarge,
            // MESSAGE_TOO_LARGE rather than RECORD_LIST_TOO_LARGE: the Java
            // producer answers it by splitting the batch and retrying the
            // halves, which is the way out; librdkafka fails the messages
            // with MSG_SIZE_TOO_LARGE. Neither retries the same bytes.
            KafkaRecordsError::RequestUncompressedTooLarge { .. } => ErrorCode::MessageTooLarge,
            _ => ErrorCode::CorruptMessage,
        }
    }
}

/// Converts back-to-back Kafka RecordBatch v2 (a Produce request's records)
/// into one native batch each, base offset and leader epoch included.
pub fn kafka_to_native(
    kafka_batches: &[u8],
    limits: &KafkaRecordsLimits,
) -> Result<Vec<Bytes>, KafkaRecordsError> {
    let mut natives = Vec::new();
    let mut scratch = Vec::new();
    let mut rest = kafka_batches;
    while !rest.is_empty() {
        let (native, _) = kafka_to_native_one(&mut rest, limits, &mut scratch)?;
        natives.push(native);
    }
    Ok(natives)
}

/// Whether any of back-to-back Kafka batches is compressed, from their
/// headers alone (no CRC check, no decompression): what a Produce must
/// reserve memory for before converting. Stops at the first header it
/// cannot read (the conversion then reports it).
pub fn any_compressed(kafka_batches: &[u8]) -> bool {
    let mut rest = kafka_batches;
    while rest.len() >= ATTRIBUTES_OFFSET + 2 {
        let attributes = i16::from_be_bytes([rest[ATTRIBUTES_OFFSET], rest[ATTRIBUTES_OFFSET + 1]]);
        if attributes & CODEC_MASK != 0 {
            return true;
        }
        let batch_length = i32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]);
        let Some(len) = usize::try_from(batch_length)
            .ok()
            .and_then(|l| l.checked_add(LOG_OVERHEAD))
            .filter(|l| *l >= HEADER_LEN && *l <= rest.len())
        else {
            return false;
        };
        rest = &rest[len..];
    }
    false
}

/// Converts the first Kafka batch of `rest` and moves `rest` past it; also
/// returns how many bytes its records section decompressed to (0 when it
/// was not compressed). One batch
/// at a time, for a caller that bounds the decompressed bytes of many or
/// yields between them. `scratch` is reused across calls.
pub fn kafka_to_native_one(
    rest: &mut &[u8],
    limits: &KafkaRecordsLimits,
    scratch: &mut Vec<u8>,
) -> Result<(Bytes, usize), KafkaRecordsError> {
    let (native, decompressed_len, tail) = convert_one(rest, limits, scratch)?;
    *rest = tail;
    Ok((native, decompressed_len))
}

fn convert_one<'a>(
    bytes: &'a [u8],
    limits: &KafkaRecordsLimits,
    scratch: &mut Vec<u8>,
) -> Result<(Bytes, usize, &'a [u8]), KafkaRecordsError> {
    let mut head = Reader::new(bytes);
    let base_offset = head.i64()?;
    let batch_length = head.i32()?;
    let Some(len) = usize::try_from(batch_length)
        .ok()
        .and_then(|l| l.checked_add(LOG_OVERHEAD))
        .filter(|l| *l >= HEADER_LEN)
    else {
        return Err(KafkaRecordsError::BatchLengthInvalid(batch_length));
    };
    if len > limits.batch_bytes_max {
        return Err(KafkaRecordsError::BatchTooLarge {
            len,
            len_max: limits.batch_bytes_max,
        });
    }
    if bytes.len() < MAGIC_OFFSET + 1 {
        return Err(truncated(MAGIC_OFFSET + 1, bytes.len()));
    }
    let magic = bytes[MAGIC_OFFSET] as i8;
    if magic != MAGIC_V2 {
        return Err(KafkaRecordsError::UnsupportedMagic(magic));
    }
    if bytes.len() < len {
        return Err(truncated(len, bytes.len()));
    }
    let (batch, tail) = bytes.split_at(len);

    let mut header = Reader::new(&batch[LOG_OVERHEAD..HEADER_LEN]);
    let leader_epoch = header.i32()?;
    header.take(1)?;
    let crc = header.u32()?;
    let attributes = header.i16()?;
    let last_offset_delta = header.i32()?;
    let base_timestamp = header.i64()?;
    let max_timestamp = header.i64()?;
    let producer_id = header.i64()?;
    let producer_epoch = header.i16()?;
    let base_sequence = header.i32()?;
    let record_count = header.i32()?;

    let actual = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]);
    if actual != crc {
        return Err(KafkaRecordsError::CrcMismatch {
            expected: crc,
            actual,
        });
    }
    if attributes & !ATTRIBUTES_KNOWN != 0 {
        return Err(KafkaRecordsError::UnsupportedAttributes(attributes));
    }
    let codec_id = (attributes & CODEC_MASK) as u8;
    let codec = Compression::from_id(codec_id)
        .map_err(|_| KafkaRecordsError::UnsupportedCompression(codec_id))?;
    if base_offset < 0 {
        return Err(KafkaRecordsError::InvalidOffsets("negative base offset"));
    }
    let last_offset_delta = u32::try_from(last_offset_delta)
        .map_err(|_| KafkaRecordsError::InvalidOffsets("negative last offset delta"))?;
    if (base_offset as u64).saturating_add(u64::from(last_offset_delta)) >= OFFSET_MAX {
        return Err(KafkaRecordsError::InvalidOffsets(
            "last offset past the largest offset",
        ));
    }
    if record_count < 0 {
        return Err(KafkaRecordsError::RecordCountMismatch {
            header: record_count,
        });
    }
    if record_count == 0 {
        return Err(KafkaRecordsError::Empty);
    }

    let compressed = &batch[HEADER_LEN..];
    let section: &[u8] = match codec {
        Compression::None => {
            if compressed.len() > limits.uncompressed_bytes_max {
                return Err(KafkaRecordsError::UncompressedTooLarge {
                    len_max: limits.uncompressed_bytes_max,
                });
            }
            compressed
        }
        codec => {
            decompress(codec, compressed, limits.uncompressed_bytes_max, scratch)?;
            scratch
        }
    };
    // Refuses a count the bytes cannot hold before any per-record work.
    if record_count as usize > section.len() / RECORD_LEN_MIN {
        return Err(KafkaRecordsError::RecordCountMismatch {
            header: record_count,
        });
    }

    let timestamp_type = if attributes & (1 << 3) != 0 {
        TimestampType::LogAppendTime
    } else {
        TimestampType::CreateTime
    };
    let options = BatchOptions {
        compression: codec,
        timestamp_type,
        producer_id: ProducerId(producer_id),
        producer_epoch: ProducerEpoch(producer_epoch),
        base_sequence: Sequence(base_sequence),
        transactional: attributes & (1 << 4) != 0,
        control: attributes & (1 << 5) != 0,
        base_timestamp: Some(base_timestamp),
        max_timestamp: Some(max_timestamp),
    };
    let mut builder = BatchBuilder::with_capacity(options, builder_capacity(section.len()));
    let mut records = Reader::new(section);
    let mut headers: Vec<(&[u8], Option<&[u8]>)> = Vec::new();
    let mut last_delta = None;
    for _ in 0..record_count {
        if records.is_empty() {
            return Err(KafkaRecordsError::RecordCountMismatch {
                header: record_count,
            });
        }
        let record_len = usize::try_from(records.varint()?)
            .map_err(|_| KafkaRecordsError::MalformedRecord("negative record length"))?;
        let mut record = Reader::new(records.take(record_len)?);
        let record_attributes = record.i8()?;
        if record_attributes != 0 {
            return Err(KafkaRecordsError::RecordAttributesNotZero(
                record_attributes,
            ));
        }
        let timestamp_delta = record.varlong()?;
        let offset_delta = u32::try_from(record.varint()?)
            .map_err(|_| KafkaRecordsError::InvalidOffsets("negative record offset delta"))?;
        let key = record.nullable_bytes()?;
        let value = record.nullable_bytes()?;
        let header_count = usize::try_from(record.varint()?)
            .map_err(|_| KafkaRecordsError::MalformedRecord("negative header count"))?;
        headers.clear();
        for _ in 0..header_count {
            let key = record
                .nullable_bytes()?
                .ok_or(KafkaRecordsError::MalformedRecord("null header key"))?;
            let value = record.nullable_bytes()?;
            headers.push((key, value));
        }
        if !record.is_empty() {
            return Err(KafkaRecordsError::MalformedRecord(
                "record length exceeds its fields",
            ));
        }
        builder
            .try_push(RecordInput {
                key,
                value,
                headers: &headers,
                timestamp: base_timestamp.wrapping_add(timestamp_delta),
                offset_delta: Some(offset_delta),
            })
            .map_err(|_| KafkaRecordsError::InvalidOffsets("offset deltas do not increase"))?;
        last_delta = Some(offset_delta);
    }
    if !records.is_empty() {
        return Err(KafkaRecordsError::RecordCountMismatch {
            header: record_count,
        });
    }
    if last_delta != Some(last_offset_delta) {
        return Err(KafkaRecordsError::InvalidOffsets(
            "the last record's offset delta differs from lastOffsetDelta",
        ));
    }
    let (mut native, start) = builder.finish_in_place()?;
    assign_offset_and_epoch(
        &mut native[start..],
        Offset(base_offset as u64),
        LeaderEpoch(leader_epoch as u32),
    );
    let decompressed_len = if codec == Compression::None {
        0
    } else {
        section.len()
    };
    Ok((tight(native, start), decompressed_len, tail))
}

/// The builder's first buffer for a batch whose Kafka records take
/// `section_len` bytes: a flatbuffers record costs a few dozen bytes more
/// than Kafka's varint-framed one, so 1/8 more covers records of a few
/// hundred bytes and up without the builder doubling its buffer. Bounded by
/// the input's size, never by a count the input claims.
fn builder_capacity(section_len: usize) -> usize {
    section_len + section_len / 8 + 1024
}

/// The built batch `native[start..]` as the `Bytes` the log will keep (in
/// its batch cache, until durable): the builder writes back to front, so
/// `native[..start]` is unused room the batch would keep allocated. Past
/// 1/8 of the buffer (small records made the builder double it), the
/// batch is copied to a buffer of its own size, so what the cache holds is
/// what it counts; otherwise it is kept in place, uncopied.
fn tight(native: Vec<u8>, start: usize) -> Bytes {
    if start > native.len() / 8 {
        Bytes::copy_from_slice(&native[start..])
    } else {
        Bytes::from(native).slice(start..)
    }
}

/// Appends the native batches as Kafka RecordBatch v2 (a Fetch response's
/// records). Every native batch is verified first (CRC32C, records body).
/// Records are encoded straight into `out` when the batch is uncompressed
/// (into a scratch section to compress otherwise): each record's length is
/// computed before it is written, so no per-record buffer is copied.
pub fn native_to_kafka(
    native_batches: &[u8],
    limits: &KafkaRecordsLimits,
    out: &mut Vec<u8>,
) -> Result<(), KafkaRecordsError> {
    let mut scratch = Vec::new();
    let mut section = Vec::new();
    // About what uncompressed batches take again as Kafka batches.
    out.reserve(native_batches.len());
    for view in Batches::new(native_batches) {
        let view = view?;
        let header = view.header();
        let codec = header.compression()?;
        // Kafka's offset deltas are i32s; the native ones u32s. Every
        // record's delta is at most the last one, so one check covers all.
        let last_offset_delta = i32::try_from(header.last_offset_delta.get()).map_err(|_| {
            KafkaRecordsError::InvalidOffsets("last offset delta beyond Kafka's i32")
        })?;
        let records = view.records(&mut scratch, limits.uncompressed_bytes_max)?;
        let base_offset = header.base_offset();
        let first_timestamp = header.first_timestamp.get();

        let start = out.len();
        out.extend_from_slice(&(base_offset.get() as i64).to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&(header.leader_epoch.get() as i32).to_be_bytes());
        out.push(MAGIC_V2 as u8);
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&header.attributes.get().to_be_bytes());
        out.extend_from_slice(&last_offset_delta.to_be_bytes());
        out.extend_from_slice(&first_timestamp.to_be_bytes());
        out.extend_from_slice(&header.max_timestamp.get().to_be_bytes());
        out.extend_from_slice(&header.producer_id.get().to_be_bytes());
        out.extend_from_slice(&header.producer_epoch.get().to_be_bytes());
        out.extend_from_slice(&header.base_sequence.get().to_be_bytes());
        out.extend_from_slice(&header.record_count().to_be_bytes());
        assert_eq!(out.len() - start, HEADER_LEN);

        let dst: &mut Vec<u8> = match codec {
            Compression::None => &mut *out,
            _ => {
                section.clear();
                &mut section
            }
        };
        let section_start = dst.len();
        for r in records.iter() {
            let timestamp_delta = r.timestamp.wrapping_sub(first_timestamp);
            // Offsets come from a verified batch: at or after its base offset
            // and within its u32 last offset delta.
            let offset_delta = r.offset.get() - base_offset.get();
            assert!(offset_delta <= u64::from(header.last_offset_delta.get()));
            let (key, value) = (r.key(), r.value());
            let mut len = 1 + varlong_len(timestamp_delta) + varlong_len(offset_delta as i64);
            len += nullable_bytes_len(key) + nullable_bytes_len(value);
            len += varlong_len(r.header_count() as i64);
            for (key, value) in r.headers() {
                len += nullable_bytes_len(Some(key)) + nullable_bytes_len(value);
            }
            put_len(dst, len)?;
            let record_start = dst.len();
            dst.push(0);
            put_varlong(dst, timestamp_delta);
            put_varlong(dst, offset_delta as i64);
            put_nullable_bytes(dst, key)?;
            put_nullable_bytes(dst, value)?;
            put_len(dst, r.header_count())?;
            for (key, value) in r.headers() {
                put_nullable_bytes(dst, Some(key))?;
                put_nullable_bytes(dst, value)?;
            }
            assert_eq!(dst.len() - record_start, len);
            if dst.len() - section_start > limits.uncompressed_bytes_max {
                return Err(KafkaRecordsError::UncompressedTooLarge {
                    len_max: limits.uncompressed_bytes_max,
                });
            }
        }
        if codec != Compression::None {
            compress(codec, &section, out)?;
        }
        let batch_length = i32::try_from(out.len() - start - LOG_OVERHEAD).map_err(|_| {
            KafkaRecordsError::BatchTooLarge {
                len: out.len() - start,
                len_max: i32::MAX as usize,
            }
        })?;
        out[start + 8..start + 12].copy_from_slice(&batch_length.to_be_bytes());
        let crc = crc32c::crc32c(&out[start + ATTRIBUTES_OFFSET..]);
        out[start + CRC_OFFSET..start + ATTRIBUTES_OFFSET].copy_from_slice(&crc.to_be_bytes());
    }
    Ok(())
}

/// Bytes `put_varlong(value)` writes.
fn varlong_len(value: i64) -> usize {
    let raw = ((value << 1) ^ (value >> 63)) as u64;
    (64 - raw.max(1).leading_zeros() as usize).div_ceil(7)
}

/// Bytes `put_nullable_bytes(bytes)` writes (when the length fits an i32).
fn nullable_bytes_len(bytes: Option<&[u8]>) -> usize {
    bytes.map_or(1, |b| varlong_len(b.len() as i64) + b.len())
}

fn truncated(needed: usize, got: usize) -> KafkaRecordsError {
    KafkaRecordsError::Truncated { needed, got }
}

/// A big-endian / zigzag-varint cursor that never reads past its slice.
struct Reader<'a> {
    bytes: &'a [u8],
    consumed: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, consumed: 0 }
    }
    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    fn take(&mut self, len: usize) -> Result<&'a [u8], KafkaRecordsError> {
        if self.bytes.len() < len {
            return Err(truncated(
                self.consumed + len,
                self.consumed + self.bytes.len(),
            ));
        }
        let (taken, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        self.consumed += len;
        Ok(taken)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], KafkaRecordsError> {
        let bytes = self.take(N)?;
        let mut array = [0; N];
        array.copy_from_slice(bytes);
        Ok(array)
    }
    fn i8(&mut self) -> Result<i8, KafkaRecordsError> {
        Ok(i8::from_be_bytes(self.array()?))
    }
    fn i16(&mut self) -> Result<i16, KafkaRecordsError> {
        Ok(i16::from_be_bytes(self.array()?))
    }
    fn i32(&mut self) -> Result<i32, KafkaRecordsError> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, KafkaRecordsError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, KafkaRecordsError> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    /// An unsigned LEB128 of at most `bytes_max` bytes.
    fn unsigned_varint(&mut self, bytes_max: usize) -> Result<u64, KafkaRecordsError> {
        let mut value = 0u64;
        for i in 0..bytes_max {
            let [byte] = self.array().map_err(|_| KafkaRecordsError::BadVarint)?;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(KafkaRecordsError::BadVarint)
    }
    /// A zigzag varint (Kafka's `varint`, an i32).
    fn varint(&mut self) -> Result<i32, KafkaRecordsError> {
        let raw =
            u32::try_from(self.unsigned_varint(5)?).map_err(|_| KafkaRecordsError::BadVarint)?;
        Ok((raw >> 1) as i32 ^ -((raw & 1) as i32))
    }
    /// A zigzag varlong (Kafka's `varlong`, an i64).
    fn varlong(&mut self) -> Result<i64, KafkaRecordsError> {
        let raw = self.unsigned_varint(10)?;
        Ok((raw >> 1) as i64 ^ -((raw & 1) as i64))
    }
    /// Varint length then bytes; length -1 is null.
    fn nullable_bytes(&mut self) -> Result<Option<&'a [u8]>, KafkaRecordsError> {
        match self.varint()? {
            -1 => Ok(None),
            len if len < 0 => Err(KafkaRecordsError::MalformedRecord("negative length")),
            len => Ok(Some(self.take(len as usize)?)),
        }
    }
}

fn put_varlong(out: &mut Vec<u8>, value: i64) {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    while raw >= 0x80 {
        out.push(raw as u8 | 0x80);
        raw >>= 7;
    }
    out.push(raw as u8);
}

fn put_len(out: &mut Vec<u8>, len: usize) -> Result<(), KafkaRecordsError> {
    let len = i32::try_from(len).map_err(|_| KafkaRecordsError::BatchTooLarge {
        len,
        len_max: i32::MAX as usize,
    })?;
    put_varlong(out, i64::from(len));
    Ok(())
}

fn put_nullable_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) -> Result<(), KafkaRecordsError> {
    match bytes {
        None => put_varlong(out, -1),
        Some(bytes) => {
            put_len(out, bytes.len())?;
            out.extend_from_slice(bytes);
        }
    }
    Ok(())
}

/// Appends `input` compressed the way Kafka clients expect it.
pub(crate) fn compress(
    codec: Compression,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), KafkaRecordsError> {
    use std::io::Write;
    match codec {
        Compression::None => out.extend_from_slice(input),
        Compression::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
            encoder.write_all(input).map_err(codec_error)?;
            encoder.finish().map_err(codec_error)?;
        }
        Compression::Snappy => {
            out.extend_from_slice(XERIAL_HEADER);
            let mut encoder = snap::raw::Encoder::new();
            for block in input.chunks(XERIAL_BLOCK_LEN) {
                let compressed = encoder.compress_vec(block).map_err(codec_error)?;
                out.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
                out.extend_from_slice(&compressed);
            }
        }
        Compression::Lz4 => {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_mode(lz4_flex::frame::BlockMode::Independent)
                .block_size(lz4_flex::frame::BlockSize::Max64KB);
            let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(info, out);
            encoder.write_all(input).map_err(codec_error)?;
            encoder.finish().map_err(codec_error)?;
        }
        Compression::Zstd => {
            let compressed = zstd::bulk::compress(input, 3).map_err(codec_error)?;
            out.extend_from_slice(&compressed);
        }
    }
    Ok(())
}

/// Decompresses a Kafka records section into `out` (cleared first), refusing
/// to produce more than `len_max` bytes.
pub(crate) fn decompress(
    codec: Compression,
    input: &[u8],
    len_max: usize,
    out: &mut Vec<u8>,
) -> Result<(), KafkaRecordsError> {
    use std::io::Read;
    out.clear();
    let too_large = KafkaRecordsError::UncompressedTooLarge { len_max };
    // One byte past the limit tells "exactly at the limit" from "over it".
    let read_max = len_max as u64 + 1;
    match codec {
        Compression::None => unreachable!("uncompressed sections are read in place"),
        Compression::Gzip => {
            // Java producers may write several gzip members.
            flate2::read::MultiGzDecoder::new(input)
                .take(read_max)
                .read_to_end(out)
                .map_err(codec_error)?;
        }
        Compression::Snappy => {
            if input.starts_with(XERIAL_MAGIC) {
                let mut reader =
                    Reader::new(input.get(XERIAL_HEADER.len()..).ok_or_else(|| {
                        KafkaRecordsError::Codec("truncated xerial snappy header".to_owned())
                    })?);
                while !reader.is_empty() {
                    let block_len = reader.u32()? as usize;
                    let block = reader.take(block_len)?;
                    snappy_raw(block, len_max, out)?;
                }
            } else {
                snappy_raw(input, len_max, out)?;
            }
        }
        Compression::Lz4 => {
            lz4_flex::frame::FrameDecoder::new(input)
                .take(read_max)
                .read_to_end(out)
                .map_err(codec_error)?;
        }
        Compression::Zstd => {
            let mut decoder =
                zstd::stream::read::Decoder::with_buffer(input).map_err(codec_error)?;
            // A frame may ask for a window of up to 2^27 bytes before it
            // produces anything; no window need exceed the output allowed.
            let window_log = usize::BITS - len_max.max(1).leading_zeros();
            decoder
                .window_log_max(window_log.clamp(20, 27))
                .map_err(codec_error)?;
            decoder
                .take(read_max)
                .read_to_end(out)
                .map_err(codec_error)?;
        }
    }
    if out.len() > len_max {
        return Err(too_large);
    }
    Ok(())
}

/// Appends one raw snappy block to `out`, keeping `out` within `len_max`.
fn snappy_raw(block: &[u8], len_max: usize, out: &mut Vec<u8>) -> Result<(), KafkaRecordsError> {
    let len = snap::raw::decompress_len(block).map_err(codec_error)?;
    if out.len().saturating_add(len) > len_max {
        return Err(KafkaRecordsError::UncompressedTooLarge { len_max });
    }
    let start = out.len();
    out.resize(start + len, 0);
    let written = snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(codec_error)?;
    out.truncate(start + written);
    Ok(())
}

fn codec_error(error: impl std::fmt::Display) -> KafkaRecordsError {
    KafkaRecordsError::Codec(error.to_string())
}

#[cfg(test)]
mod tests;
