use super::*;
use proptest::prelude::*;

const LIMIT: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone)]
struct TestRecord {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    timestamp: i64,
}

fn build(records: &[TestRecord], options: BatchOptions) -> Bytes {
    let mut builder = BatchBuilder::new(options);
    for r in records {
        let headers: Vec<(&[u8], Option<&[u8]>)> = r
            .headers
            .iter()
            .map(|(k, v)| (&k[..], v.as_deref()))
            .collect();
        builder.push(RecordInput {
            key: r.key.as_deref(),
            value: r.value.as_deref(),
            headers: &headers,
            timestamp: r.timestamp,
            offset_delta: None,
        });
    }
    builder.finish().unwrap()
}

fn simple(n: usize) -> Vec<TestRecord> {
    (0..n)
        .map(|i| TestRecord {
            key: Some(format!("key-{i}").into_bytes()),
            value: Some(vec![i as u8; 100]),
            headers: vec![(b"h".to_vec(), Some(b"v".to_vec()))],
            timestamp: 1_700_000_000_000 + i as i64,
        })
        .collect()
}

/// Rewrites the CRC after a test edits covered bytes on purpose.
fn reseal(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[BATCH_CRC_START..]);
    batch[20..24].copy_from_slice(&crc.to_le_bytes());
}

fn arb_record() -> impl Strategy<Value = TestRecord> {
    (
        prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..200)),
        prop::collection::vec(
            (
                prop::collection::vec(any::<u8>(), 0..10),
                prop::option::of(prop::collection::vec(any::<u8>(), 0..10)),
            ),
            0..3,
        ),
        any::<i64>(),
    )
        .prop_map(|(key, value, headers, timestamp)| TestRecord {
            key,
            value,
            headers,
            timestamp,
        })
}

fn arb_compression() -> impl Strategy<Value = Compression> {
    prop::sample::select(Compression::ALL.to_vec())
}

proptest! {
    #[test]
    fn batches_round_trip(
        records in prop::collection::vec(arb_record(), 1..40),
        compression in arb_compression(),
        producer_id in any::<i64>(),
        producer_epoch in any::<i16>(),
        base_sequence in any::<i32>(),
        base_offset in 0u64..(1 << 62),
        epoch in any::<u32>(),
    ) {
        let options = BatchOptions {
            compression,
            producer_id: ProducerId(producer_id),
            producer_epoch: ProducerEpoch(producer_epoch),
            base_sequence: Sequence(base_sequence),
            ..BatchOptions::default()
        };
        let mut bytes = build(&records, options).to_vec();
        assign_offset_and_epoch(&mut bytes, Offset(base_offset), LeaderEpoch(epoch));

        let (view, rest) = BatchView::parse(&bytes).unwrap();
        prop_assert!(rest.is_empty());
        let header = view.header();
        prop_assert_eq!(header.base_offset(), Offset(base_offset));
        prop_assert_eq!(header.leader_epoch(), LeaderEpoch(epoch));
        prop_assert_eq!(header.compression().unwrap(), compression);
        prop_assert_eq!(header.producer_id(), ProducerId(producer_id));
        prop_assert_eq!(header.producer_epoch(), ProducerEpoch(producer_epoch));
        prop_assert_eq!(header.base_sequence(), Sequence(base_sequence));
        prop_assert_eq!(header.record_count() as usize, records.len());
        prop_assert_eq!(header.last_offset(), Offset(base_offset + records.len() as u64 - 1));
        prop_assert_eq!(header.first_timestamp.get(), records[0].timestamp);
        prop_assert_eq!(
            header.max_timestamp.get(),
            records.iter().map(|r| r.timestamp).max().unwrap()
        );

        let mut scratch = Vec::new();
        let decoded = view.records(&mut scratch, LIMIT).unwrap();
        prop_assert_eq!(decoded.len(), records.len());
        for (i, (got, want)) in decoded.iter().zip(&records).enumerate() {
            prop_assert_eq!(got.offset, Offset(base_offset + i as u64));
            prop_assert_eq!(got.timestamp, want.timestamp);
            prop_assert_eq!(got.key(), want.key.as_deref());
            prop_assert_eq!(got.value(), want.value.as_deref());
            let headers: Vec<_> = got.headers().map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec))).collect();
            prop_assert_eq!(&headers, &want.headers);
        }
    }

    /// Any change to a CRC-covered byte is caught; a batch never parses into
    /// different content.
    #[test]
    fn covered_bit_flips_are_detected(
        records in prop::collection::vec(arb_record(), 1..10),
        compression in arb_compression(),
        position in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let mut bytes = build(&records, BatchOptions { compression, ..BatchOptions::default() }).to_vec();
        let at = BATCH_CRC_START + position.index(bytes.len() - BATCH_CRC_START);
        bytes[at] ^= 1 << bit;
        prop_assert!(BatchView::parse(&bytes).is_err());
    }

    #[test]
    fn truncation_is_an_error(records in prop::collection::vec(arb_record(), 1..10), cut in any::<prop::sample::Index>()) {
        let bytes = build(&records, BatchOptions::default());
        let cut = cut.index(bytes.len());
        let result = BatchView::parse(&bytes[..cut]);
        prop_assert!(matches!(result, Err(BatchError::Truncated { .. })), "got {:?}", result);
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600), seal in any::<bool>()) {
        let mut bytes = bytes;
        if bytes.len() >= BATCH_HEADER_LEN {
            bytes[16] = BATCH_MAGIC;
            bytes[17..20].fill(0);
            let len = bytes.len() as u32;
            bytes[8..12].copy_from_slice(&len.to_le_bytes());
            if seal {
                reseal(&mut bytes);
            }
        }
        for batch in Batches::new(&bytes) {
            let Ok(batch) = batch else { break };
            let mut scratch = Vec::new();
            if let Ok(records) = batch.records(&mut scratch, 4096) {
                for r in records.iter() {
                    let _ = (r.key(), r.value(), r.headers().count());
                }
            }
        }
    }
}

#[test]
fn header_layout_is_stable() {
    let mut bytes = build(&simple(3), BatchOptions::default()).to_vec();
    assign_offset_and_epoch(&mut bytes, Offset(0x0102), LeaderEpoch(7));
    assert_eq!(&bytes[0..8], &0x0102u64.to_le_bytes());
    assert_eq!(&bytes[8..12], &(bytes.len() as u32).to_le_bytes());
    assert_eq!(&bytes[12..16], &7u32.to_le_bytes());
    assert_eq!(bytes[16], BATCH_MAGIC);
    assert_eq!(&bytes[28..32], &2u32.to_le_bytes(), "last offset delta");
    assert_eq!(&bytes[60..64], &3u32.to_le_bytes(), "record count");
}

#[test]
fn leader_fields_are_outside_the_crc() {
    let bytes = build(&simple(5), BatchOptions::default());
    let mut moved = bytes.to_vec();
    assign_offset_and_epoch(&mut moved, Offset(1_000_000), LeaderEpoch(42));
    let (view, _) = BatchView::parse(&moved).unwrap();
    assert_eq!(
        view.header().crc32c.get(),
        BatchView::parse(&bytes).unwrap().0.header().crc32c.get()
    );
    let mut scratch = Vec::new();
    let offsets: Vec<_> = view
        .records(&mut scratch, LIMIT)
        .unwrap()
        .iter()
        .map(|r| r.offset)
        .collect();
    assert_eq!(
        offsets,
        (1_000_000..1_000_005).map(Offset).collect::<Vec<_>>()
    );
}

#[test]
fn wrong_version_reserved_and_length_are_typed_errors() {
    let bytes = build(&simple(1), BatchOptions::default()).to_vec();

    let mut wrong = bytes.clone();
    wrong[16] = 9;
    assert_eq!(
        BatchView::parse(&wrong).unwrap_err(),
        BatchError::UnsupportedVersion(9)
    );
    // Zero padding, as found after the last batch of a pre-written segment.
    assert_eq!(
        BatchView::parse(&[0; 128]).unwrap_err(),
        BatchError::UnsupportedVersion(0)
    );

    let mut wrong = bytes.clone();
    wrong[18] = 1;
    assert_eq!(
        BatchView::parse(&wrong).unwrap_err(),
        BatchError::ReservedNotZero
    );

    let mut wrong = bytes.clone();
    wrong[8..12].copy_from_slice(&10u32.to_le_bytes());
    assert_eq!(
        BatchView::parse(&wrong).unwrap_err(),
        BatchError::LengthTooSmall(10)
    );

    let mut wrong = bytes.clone();
    wrong[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        BatchView::parse(&wrong),
        Err(BatchError::TooLarge { .. })
    ));

    let mut wrong = bytes.clone();
    wrong[24] |= 0b111;
    reseal(&mut wrong);
    assert_eq!(
        BatchView::parse(&wrong).unwrap_err(),
        BatchError::UnsupportedCompression(7)
    );
}

#[test]
fn records_must_agree_with_the_header() {
    let bytes = build(&simple(4), BatchOptions::default()).to_vec();
    let mut scratch = Vec::new();

    let mut wrong = bytes.clone();
    wrong[60..64].copy_from_slice(&5u32.to_le_bytes());
    reseal(&mut wrong);
    let (view, _) = BatchView::parse(&wrong).unwrap();
    assert_eq!(
        view.records(&mut scratch, LIMIT).unwrap_err(),
        BatchError::RecordCountMismatch { header: 5, body: 4 }
    );

    let mut wrong = bytes.clone();
    wrong[28..32].copy_from_slice(&9u32.to_le_bytes());
    reseal(&mut wrong);
    let (view, _) = BatchView::parse(&wrong).unwrap();
    assert_eq!(
        view.records(&mut scratch, LIMIT).unwrap_err(),
        BatchError::BadOffsetDeltas
    );

    // A body that is not a flatbuffer.
    let mut wrong = bytes.clone();
    wrong[BATCH_HEADER_LEN..].fill(0xff);
    reseal(&mut wrong);
    let (view, _) = BatchView::parse(&wrong).unwrap();
    assert!(matches!(
        view.records(&mut scratch, LIMIT),
        Err(BatchError::MalformedRecords(_))
    ));
}

#[test]
fn compressed_batches_respect_the_decompression_limit() {
    let records = simple(200);
    for compression in [
        Compression::Lz4,
        Compression::Zstd,
        Compression::Gzip,
        Compression::Snappy,
    ] {
        let bytes = build(
            &records,
            BatchOptions {
                compression,
                ..BatchOptions::default()
            },
        );
        let plain = build(&records, BatchOptions::default());
        assert!(
            bytes.len() < plain.len(),
            "{compression:?} did not compress"
        );
        let (view, _) = BatchView::parse(&bytes).unwrap();
        let mut scratch = Vec::new();
        assert!(matches!(
            view.records(&mut scratch, 1024),
            Err(BatchError::TooLarge { .. })
        ));
        assert_eq!(view.records(&mut scratch, LIMIT).unwrap().len(), 200);
    }
}

#[test]
fn offset_gaps_and_null_fields_survive() {
    let mut builder = BatchBuilder::new(BatchOptions::default());
    for (delta, key, value) in [
        (0, None, Some(&b""[..])),
        (3, Some(&b""[..]), None),
        (10, Some(&b"k"[..]), Some(&b"v"[..])),
    ] {
        builder.push(RecordInput {
            key,
            value,
            headers: &[],
            timestamp: 5,
            offset_delta: Some(delta),
        });
    }
    let bytes = builder.finish().unwrap();
    let (view, _) = BatchView::parse(&bytes).unwrap();
    assert_eq!(view.header().last_offset_delta.get(), 10);
    let mut scratch = Vec::new();
    let records = view.records(&mut scratch, LIMIT).unwrap();
    let got: Vec<_> = records
        .iter()
        .map(|r| (r.offset.get(), r.key(), r.value()))
        .collect();
    assert_eq!(
        got,
        vec![
            (0, None, Some(&b""[..])),
            (3, Some(&b""[..]), None),
            (10, Some(&b"k"[..]), Some(&b"v"[..])),
        ]
    );
}

#[test]
fn batches_iterate_back_to_back_and_stop_at_the_first_error() {
    let a = build(&simple(2), BatchOptions::default());
    let b = build(
        &simple(3),
        BatchOptions {
            compression: Compression::Lz4,
            ..BatchOptions::default()
        },
    );
    let mut joined = [&a[..], &b[..]].concat();
    let counts: Vec<u32> = Batches::new(&joined)
        .map(|b| b.unwrap().header().record_count())
        .collect();
    assert_eq!(counts, vec![2, 3]);

    let last = joined.len() - 1;
    joined[last] ^= 1;
    let results: Vec<_> = Batches::new(&joined).collect();
    assert_eq!(results.len(), 2);
    assert!(results[0].is_ok());
    assert!(matches!(results[1], Err(BatchError::CrcMismatch { .. })));
}

#[test]
fn an_empty_batch_cannot_be_built() {
    assert_eq!(
        BatchBuilder::new(BatchOptions::default())
            .finish()
            .unwrap_err(),
        BatchError::Empty
    );
}

#[test]
fn header_bits_round_trip() {
    let options = BatchOptions {
        timestamp_type: TimestampType::LogAppendTime,
        transactional: true,
        control: true,
        ..BatchOptions::default()
    };
    let bytes = build(&simple(1), options);
    let (view, _) = BatchView::parse(&bytes).unwrap();
    let header = view.header();
    assert_eq!(header.timestamp_type(), TimestampType::LogAppendTime);
    assert!(header.is_transactional());
    assert!(header.is_control());
}

#[test]
fn offsets_past_the_largest_are_refused() {
    let mut bytes = build(&simple(3), BatchOptions::default()).to_vec();
    bytes[0..8].copy_from_slice(&(OFFSET_MAX - 2).to_le_bytes());
    assert_eq!(
        BatchView::parse(&bytes).unwrap_err(),
        BatchError::OffsetOverflow
    );
    bytes[0..8].copy_from_slice(&(OFFSET_MAX - 3).to_le_bytes());
    assert!(BatchView::parse(&bytes).is_ok());
}

/// Everything a Kafka RecordBatch v2 carries has a place, including a base
/// timestamp that is not the first record's (negative deltas) and a max
/// timestamp set by the broker under LogAppendTime.
#[test]
fn kafka_batch_fields_are_kept_exactly() {
    let options = BatchOptions {
        compression: Compression::Zstd,
        timestamp_type: TimestampType::LogAppendTime,
        producer_id: ProducerId(4242),
        producer_epoch: ProducerEpoch(3),
        base_sequence: Sequence(77),
        transactional: true,
        control: false,
        base_timestamp: Some(1_000),
        max_timestamp: Some(9_999),
    };
    let mut builder = BatchBuilder::new(options);
    for (delta, timestamp) in [(0, 1_005), (1, 990), (5, 1_001)] {
        builder.push(RecordInput {
            key: Some(b"k"),
            value: None,
            headers: &[(b"", None), (b"trace", Some(b"\xff\x00"))],
            timestamp,
            offset_delta: Some(delta),
        });
    }
    let bytes = builder.finish().unwrap();
    let (view, _) = BatchView::parse(&bytes).unwrap();
    let header = view.header();
    assert_eq!(header.first_timestamp.get(), 1_000);
    assert_eq!(header.max_timestamp.get(), 9_999);
    assert_eq!(header.timestamp_type(), TimestampType::LogAppendTime);
    assert!(header.is_transactional());
    assert_eq!(header.base_sequence(), Sequence(77));
    let mut scratch = Vec::new();
    let records = view.records(&mut scratch, LIMIT).unwrap();
    let got: Vec<_> = records
        .iter()
        .map(|r| (r.offset.get(), r.timestamp))
        .collect();
    assert_eq!(got, vec![(0, 1_005), (1, 990), (5, 1_001)]);
    let headers: Vec<_> = records.get(2).headers().collect();
    assert_eq!(
        headers,
        vec![(&b""[..], None), (&b"trace"[..], Some(&b"\xff\x00"[..]))]
    );
}

#[test]
fn try_push_refuses_bad_offset_deltas() {
    let mut builder = BatchBuilder::new(BatchOptions::default());
    let record = |offset_delta| RecordInput {
        value: Some(b"v"),
        offset_delta,
        ..RecordInput::default()
    };
    builder.try_push(record(Some(u32::MAX))).unwrap();
    assert_eq!(
        builder.try_push(record(None)),
        Err(BatchError::BadOffsetDeltas)
    );
    assert_eq!(
        builder.try_push(record(Some(3))),
        Err(BatchError::BadOffsetDeltas)
    );
    assert_eq!(builder.record_count(), 1);
    let bytes = builder.finish().unwrap();
    let (view, _) = BatchView::parse(&bytes).unwrap();
    assert_eq!(view.header().last_offset_delta.get(), u32::MAX);
}

#[test]
fn recompress_changes_only_the_codec_length_and_crc() {
    let records = simple(50);
    let options = BatchOptions {
        producer_id: ProducerId(7),
        producer_epoch: ProducerEpoch(2),
        base_sequence: Sequence(40),
        ..BatchOptions::default()
    };
    for from in Compression::ALL {
        let original = build(
            &records,
            BatchOptions {
                compression: from,
                ..options
            },
        );
        let mut stamped = original.to_vec();
        assign_offset_and_epoch(&mut stamped, Offset(1000), LeaderEpoch(3));
        for to in Compression::ALL {
            let out = recompress(&stamped, to, LIMIT).unwrap();
            let (view, rest) = BatchView::parse(&out).unwrap();
            assert!(rest.is_empty());
            let (before, _) = BatchView::parse(&stamped).unwrap();
            let (h, b) = (view.header(), before.header());
            assert_eq!(h.compression().unwrap(), to);
            assert_eq!(h.batch_len(), out.len());
            assert_eq!(
                (
                    h.base_offset(),
                    h.leader_epoch(),
                    h.producer_id(),
                    h.base_sequence()
                ),
                (
                    b.base_offset(),
                    b.leader_epoch(),
                    b.producer_id(),
                    b.base_sequence()
                )
            );
            assert_eq!(
                (
                    h.first_timestamp,
                    h.max_timestamp,
                    h.record_count,
                    h.last_offset_delta
                ),
                (
                    b.first_timestamp,
                    b.max_timestamp,
                    b.record_count,
                    b.last_offset_delta
                )
            );
            let (mut s1, mut s2) = (Vec::new(), Vec::new());
            let got = view.records(&mut s1, LIMIT).unwrap();
            let want = before.records(&mut s2, LIMIT).unwrap();
            let key = |r: RecordView<'_>| {
                (
                    r.key().map(<[u8]>::to_vec),
                    r.value().map(<[u8]>::to_vec),
                    r.headers()
                        .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
                        .collect::<Vec<_>>(),
                )
            };
            assert!(
                got.iter().map(key).eq(want.iter().map(key)),
                "{from:?} -> {to:?}"
            );
        }
    }
}

#[test]
fn recompress_refuses_bodies_over_the_limit_and_damaged_batches() {
    let batch = build(&simple(50), BatchOptions::default());
    let body_len = batch.len() - BATCH_HEADER_LEN;
    assert!(matches!(
        recompress(&batch, Compression::Zstd, body_len - 1),
        Err(BatchError::TooLarge { .. })
    ));
    let zstd = recompress(&batch, Compression::Zstd, body_len).unwrap();
    assert!(matches!(
        recompress(&zstd, Compression::None, body_len - 1),
        Err(BatchError::TooLarge { .. })
    ));
    let mut damaged = batch.to_vec();
    damaged[100] ^= 1;
    assert!(matches!(
        recompress(&damaged, Compression::Zstd, LIMIT),
        Err(BatchError::CrcMismatch { .. })
    ));
}
