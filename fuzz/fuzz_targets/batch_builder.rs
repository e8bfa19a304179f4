//! Structured batch fuzzing: build a valid batch with `BatchBuilder` from
//! fuzz-chosen records and options (every codec), check that it reads back
//! exactly, then mutate its bytes, optionally recompute the CRC32C so the
//! mutation gets past the checksum into the decompressors and the
//! flatbuffers verifier, and read it again (must not panic).
#![no_main]

use arbitrary::Arbitrary;
use fjord_schema::batch::{
    assign_offset_and_epoch, BatchBuilder, BatchOptions, BatchView, RecordInput, TimestampType,
    OFFSET_MAX,
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
struct Input {
    codec: u8,
    log_append_time: bool,
    transactional: bool,
    control: bool,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    base_timestamp: Option<i64>,
    max_timestamp: Option<i64>,
    first_delta: Option<u16>,
    records: Vec<Record>,
    base_offset: u64,
    leader_epoch: u32,
    mutations: Vec<fjord_fuzz::Mutation>,
    fix_crc: bool,
    limit_shift: u8,
}

fuzz_target!(|input: Input| {
    if input.records.is_empty() {
        return;
    }
    let codec = Compression::ALL[usize::from(input.codec) % Compression::ALL.len()];
    let options = BatchOptions {
        compression: codec,
        timestamp_type: if input.log_append_time {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        },
        producer_id: ProducerId(input.producer_id),
        producer_epoch: ProducerEpoch(input.producer_epoch),
        base_sequence: Sequence(input.base_sequence),
        transactional: input.transactional,
        control: input.control,
        base_timestamp: input.base_timestamp,
        max_timestamp: input.max_timestamp,
    };
    let mut builder = BatchBuilder::new(options);
    let mut deltas = Vec::with_capacity(input.records.len());
    let mut next = input.first_delta.map_or(0, u32::from);
    for record in &input.records {
        let headers: Vec<(&[u8], Option<&[u8]>)> = record
            .headers
            .iter()
            .map(|(k, v)| (&k[..], v.as_deref()))
            .collect();
        let delta = next + record.gap.map_or(0, u32::from);
        let explicit = (deltas.is_empty() && input.first_delta.is_some()) || record.gap.is_some();
        builder.push(RecordInput {
            key: record.key.as_deref(),
            value: record.value.as_deref(),
            headers: &headers,
            timestamp: record.timestamp,
            offset_delta: explicit.then_some(delta),
        });
        deltas.push(delta);
        next = delta + 1;
    }
    let mut bytes = builder.finish().expect("a non-empty batch builds").to_vec();
    let last_delta = u64::from(*deltas.last().unwrap());
    // The leader never assigns offsets past OFFSET_MAX (asserted); readers
    // must refuse such batches, which the mutations below can produce.
    let base_offset = input.base_offset % (OFFSET_MAX - last_delta);
    assign_offset_and_epoch(
        &mut bytes,
        Offset(base_offset),
        LeaderEpoch(input.leader_epoch),
    );

    // The batch reads back exactly (the leader's fields are outside the CRC).
    {
        let (view, rest) = BatchView::parse(&bytes).expect("a built batch parses");
        assert!(rest.is_empty());
        let header = view.header();
        assert_eq!(header.compression(), Ok(codec));
        assert_eq!(header.base_offset(), Offset(base_offset));
        assert_eq!(header.leader_epoch(), LeaderEpoch(input.leader_epoch));
        assert_eq!(header.record_count() as usize, input.records.len());
        assert_eq!(header.is_transactional(), input.transactional);
        assert_eq!(header.is_control(), input.control);
        assert_eq!(header.producer_id(), options.producer_id);
        assert_eq!(header.producer_epoch(), options.producer_epoch);
        assert_eq!(header.base_sequence(), options.base_sequence);
        if let Some(max) = input.max_timestamp {
            assert_eq!(header.max_timestamp.get(), max);
        } else {
            let max = input.records.iter().map(|r| r.timestamp).max();
            assert_eq!(Some(header.max_timestamp.get()), max);
        }
        assert_eq!(header.last_offset_delta.get(), *deltas.last().unwrap());
        let mut scratch = Vec::new();
        let records = view
            .records(&mut scratch, 1 << 24)
            .expect("a built batch's records verify");
        assert_eq!(records.len(), input.records.len());
        for ((got, want), delta) in records.iter().zip(&input.records).zip(&deltas) {
            assert_eq!(got.offset, Offset(base_offset + u64::from(*delta)));
            assert_eq!(got.timestamp, want.timestamp);
            assert_eq!(got.key(), want.key.as_deref());
            assert_eq!(got.value(), want.value.as_deref());
            let headers: Vec<_> = got.headers().collect();
            assert_eq!(headers.len(), want.headers.len());
            for ((gk, gv), (wk, wv)) in headers.iter().zip(&want.headers) {
                assert_eq!(*gk, &wk[..]);
                assert_eq!(*gv, wv.as_deref());
            }
        }
        fjord_fuzz::walk_batch(&view, &mut scratch, 1 << 24);
    }

    if input.mutations.is_empty() {
        return;
    }
    for mutation in &input.mutations {
        fjord_fuzz::apply_mutation(&mut bytes, mutation);
    }
    if input.fix_crc {
        fjord_fuzz::fix_first_crc(&mut bytes);
    }
    let limit = 64usize << (input.limit_shift % 16);
    fjord_fuzz::walk_batches(&bytes, limit);
});
