//! Native → Kafka RecordBatch v2 (`native_to_kafka`, what every Kafka Fetch
//! response goes through), structured: native batches built with
//! `BatchBuilder` from fuzz-chosen records and options (every codec,
//! offset-delta gaps, negative timestamp deltas, null/empty keys, values
//! and headers, producer fields, control/transactional), then converted.
//! Then the batches' bytes are mutated (CRC recomputed or not) and
//! converted again, as a damaged log would be served.
//!
//! Checks: a valid native batch always converts; the Kafka bytes convert
//! back (`kafka_to_native`) to byte-identical native batches; every Kafka
//! header field is the native one; a mutated native batch converts or is
//! refused, never panics, and when it converts a batch the produce path
//! lets in (`VerifiedBatches::verify`), the client gets batches the
//! broker itself accepts.
#![no_main]

use arbitrary::Arbitrary;
use fjord_broker::kafka::records::{kafka_to_native, native_to_kafka, KafkaRecordsLimits};
use fjord_broker::batches::VerifiedBatches;
use fjord_schema::batch::{
    assign_offset_and_epoch, BatchBuilder, BatchOptions, BatchView, RecordInput, TimestampType,
};
use fjord_schema::{Compression, LeaderEpoch, Offset, ProducerEpoch, ProducerId, Sequence};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Record {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    timestamp: i64,
    /// Offset delta gap before this record (compacted batches).
    gap: Option<u8>,
}

#[derive(Arbitrary, Debug)]
struct Batch {
    codec: u8,
    log_append_time: bool,
    transactional: bool,
    control: bool,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    base_timestamp: Option<i64>,
    max_timestamp: Option<i64>,
    records: Vec<Record>,
    leader_epoch: u32,
}

#[derive(Arbitrary, Debug)]
struct Input {
    base_offset: u32,
    batches: Vec<Batch>,
    mutations: Vec<fjord_fuzz::Mutation>,
    fix_crc: bool,
    limit_shift: u8,
}

/// Builds the native batch of `batch` at `base_offset`; `None` if it has
/// no records.
fn build(batch: &Batch, base_offset: u64) -> Option<Vec<u8>> {
    if batch.records.is_empty() {
        return None;
    }
    let options = BatchOptions {
        compression: Compression::ALL[usize::from(batch.codec) % Compression::ALL.len()],
        timestamp_type: if batch.log_append_time {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        },
        producer_id: ProducerId(batch.producer_id),
        producer_epoch: ProducerEpoch(batch.producer_epoch),
        base_sequence: Sequence(batch.base_sequence),
        transactional: batch.transactional,
        control: batch.control,
        base_timestamp: batch.base_timestamp,
        max_timestamp: batch.max_timestamp,
    };
    let mut builder = BatchBuilder::new(options);
    let mut next = 0u32;
    for record in &batch.records {
        let headers: Vec<(&[u8], Option<&[u8]>)> = record
            .headers
            .iter()
            .map(|(k, v)| (&k[..], v.as_deref()))
            .collect();
        let delta = next + record.gap.map_or(0, u32::from);
        builder.push(RecordInput {
            key: record.key.as_deref(),
            value: record.value.as_deref(),
            headers: &headers,
            timestamp: record.timestamp,
            offset_delta: record.gap.is_some().then_some(delta),
        });
        next = delta + 1;
    }
    let mut bytes = builder.finish().expect("a non-empty batch builds").to_vec();
    assign_offset_and_epoch(
        &mut bytes,
        Offset(base_offset),
        LeaderEpoch(batch.leader_epoch),
    );
    Some(bytes)
}

/// Checks the Kafka header fields of the batch at the start of `kafka`
/// against the native batch; returns the Kafka batch's length.
fn check_header(kafka: &[u8], native: &BatchView<'_>) -> usize {
    let be64 = |at: usize| i64::from_be_bytes(kafka[at..at + 8].try_into().expect("8"));
    let be32 = |at: usize| i32::from_be_bytes(kafka[at..at + 4].try_into().expect("4"));
    let be16 = |at: usize| i16::from_be_bytes(kafka[at..at + 2].try_into().expect("2"));
    let h = native.header();
    assert_eq!(be64(0), h.base_offset().get() as i64);
    assert_eq!(be32(12), h.leader_epoch().get() as i32);
    assert_eq!(kafka[16], 2, "magic");
    assert_eq!(be16(21) as u16, h.attributes.get());
    assert_eq!(i64::from(be32(23)), i64::from(h.last_offset_delta.get()));
    assert_eq!(be64(27), h.first_timestamp.get());
    assert_eq!(be64(35), h.max_timestamp.get());
    assert_eq!(be64(43), h.producer_id().0);
    assert_eq!(be16(51), h.producer_epoch().0);
    assert_eq!(be32(53), h.base_sequence().0);
    assert_eq!(i64::from(be32(57)), i64::from(h.record_count()));
    12 + be32(8) as usize
}

fuzz_target!(|input: Input| {
    let mut natives = Vec::new();
    let mut offset = u64::from(input.base_offset);
    for batch in &input.batches {
        if let Some(native) = build(batch, offset) {
            let (view, _) = BatchView::parse(&native).expect("a built batch parses");
            offset = view.header().next_offset().get();
            natives.push(native);
        }
    }
    let all: Vec<u8> = natives.concat();
    let wide = KafkaRecordsLimits {
        batch_bytes_max: 1 << 26,
        uncompressed_bytes_max: 1 << 26,
    };
    let mut kafka = Vec::new();
    native_to_kafka(&all, &wide, &mut kafka).expect("valid native batches convert");
    let mut at = 0;
    for native in &natives {
        let (view, _) = BatchView::parse(native).expect("a built batch parses");
        at += check_header(&kafka[at..], &view);
    }
    assert_eq!(at, kafka.len());
    let back = kafka_to_native(&kafka, &wide).expect("converted batches convert back");
    assert_eq!(back.len(), natives.len());
    for (back, native) in back.iter().zip(&natives) {
        assert_eq!(&back[..], &native[..], "the round trip changed a batch");
    }

    if input.mutations.is_empty() {
        return;
    }
    let mut bytes = all;
    for mutation in &input.mutations {
        fjord_fuzz::apply_mutation(&mut bytes, mutation);
    }
    if input.fix_crc {
        fjord_fuzz::fix_first_crc(&mut bytes);
    }
    let limits = KafkaRecordsLimits {
        batch_bytes_max: 1 << 26,
        uncompressed_bytes_max: 64 << (input.limit_shift % 16),
    };
    let mut out = Vec::new();
    match native_to_kafka(&bytes, &limits, &mut out) {
        Ok(()) => {
            // What a client fetched, the broker would take back, if the
            // produce path let it into the log (logs hold nothing else).
            if VerifiedBatches::verify(&bytes::Bytes::copy_from_slice(&bytes)).is_ok() {
                kafka_to_native(&out, &wide).expect("served batches are valid Kafka batches");
            }
        }
        Err(error) => {
            std::hint::black_box((error.to_string(), error.error_code()));
        }
    }
});
