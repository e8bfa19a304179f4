use super::*;
use fjord_schema::batch::TimestampType;
use fjord_schema::BatchView;
use proptest::prelude::*;

/// One Kafka batch, as the fields a client chooses.
#[derive(Clone, Debug, PartialEq)]
struct Model {
    base_offset: i64,
    leader_epoch: i32,
    codec: Compression,
    log_append_time: bool,
    transactional: bool,
    control: bool,
    base_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    records: Vec<ModelRecord>,
}

#[derive(Clone, Debug, PartialEq)]
struct ModelRecord {
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Model {
    fn attributes(&self) -> i16 {
        self.codec as i16
            | i16::from(self.log_append_time) << 3
            | i16::from(self.transactional) << 4
            | i16::from(self.control) << 5
    }
}

/// A writer independent of the module's: plain zigzag LEB128.
fn zigzag(out: &mut Vec<u8>, value: i64) {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    loop {
        let byte = (raw & 0x7f) as u8;
        raw >>= 7;
        if raw == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &Option<Vec<u8>>) {
    match bytes {
        None => zigzag(out, -1),
        Some(bytes) => {
            zigzag(out, bytes.len() as i64);
            out.extend_from_slice(bytes);
        }
    }
}

fn records_section(model: &Model) -> Vec<u8> {
    let mut section = Vec::new();
    for r in &model.records {
        let mut record = vec![0u8];
        zigzag(&mut record, r.timestamp_delta);
        zigzag(&mut record, i64::from(r.offset_delta));
        put_bytes(&mut record, &r.key);
        put_bytes(&mut record, &r.value);
        zigzag(&mut record, r.headers.len() as i64);
        for (key, value) in &r.headers {
            put_bytes(&mut record, &Some(key.clone()));
            put_bytes(&mut record, value);
        }
        zigzag(&mut section, record.len() as i64);
        section.extend_from_slice(&record);
    }
    section
}

/// Encodes with the given (already compressed) records section.
fn encode_with_section(model: &Model, section: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&model.base_offset.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&model.leader_epoch.to_be_bytes());
    out.push(2);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&model.attributes().to_be_bytes());
    let last = model.records.last().map_or(0, |r| r.offset_delta);
    out.extend_from_slice(&last.to_be_bytes());
    out.extend_from_slice(&model.base_timestamp.to_be_bytes());
    out.extend_from_slice(&model.max_timestamp.to_be_bytes());
    out.extend_from_slice(&model.producer_id.to_be_bytes());
    out.extend_from_slice(&model.producer_epoch.to_be_bytes());
    out.extend_from_slice(&model.base_sequence.to_be_bytes());
    out.extend_from_slice(&(model.records.len() as i32).to_be_bytes());
    out.extend_from_slice(section);
    let batch_length = (out.len() - start - 12) as i32;
    out[start + 8..start + 12].copy_from_slice(&batch_length.to_be_bytes());
    fix_crc(&mut out[start..]);
}

fn fix_crc(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

fn encode(model: &Model, out: &mut Vec<u8>) {
    let section = records_section(model);
    let mut compressed = Vec::new();
    compress(model.codec, &section, &mut compressed).unwrap();
    encode_with_section(model, &compressed, out);
}

fn encode_all(models: &[Model]) -> Vec<u8> {
    let mut out = Vec::new();
    for model in models {
        encode(model, &mut out);
    }
    out
}

/// Checks a native batch against the model through the native reader only.
fn assert_native_matches(native: &[u8], model: &Model) {
    let (view, rest) = BatchView::parse(native).unwrap();
    assert!(rest.is_empty());
    let h = view.header();
    assert_eq!(h.base_offset.get(), model.base_offset as u64);
    assert_eq!(h.leader_epoch.get(), model.leader_epoch as u32);
    assert_eq!(h.compression().unwrap(), model.codec);
    let timestamp_type = if model.log_append_time {
        TimestampType::LogAppendTime
    } else {
        TimestampType::CreateTime
    };
    assert_eq!(h.timestamp_type(), timestamp_type);
    assert_eq!(h.is_transactional(), model.transactional);
    assert_eq!(h.is_control(), model.control);
    assert_eq!(h.first_timestamp.get(), model.base_timestamp);
    assert_eq!(h.max_timestamp.get(), model.max_timestamp);
    assert_eq!(h.producer_id.get(), model.producer_id);
    assert_eq!(h.producer_epoch.get(), model.producer_epoch);
    assert_eq!(h.base_sequence.get(), model.base_sequence);
    assert_eq!(h.record_count() as usize, model.records.len());
    let mut scratch = Vec::new();
    let records = view.records(&mut scratch, usize::MAX).unwrap();
    assert_eq!(records.len(), model.records.len());
    for (got, want) in records.iter().zip(&model.records) {
        assert_eq!(
            got.offset.get(),
            model.base_offset as u64 + want.offset_delta as u64
        );
        assert_eq!(
            got.timestamp,
            model.base_timestamp.wrapping_add(want.timestamp_delta)
        );
        assert_eq!(got.key(), want.key.as_deref());
        assert_eq!(got.value(), want.value.as_deref());
        let headers: Vec<_> = got.headers().collect();
        let want_headers: Vec<_> = want
            .headers
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
            .collect();
        assert_eq!(headers, want_headers);
    }
}

/// Splits back-to-back Kafka batches (trusted test input).
fn split_kafka(mut bytes: &[u8]) -> Vec<&[u8]> {
    let mut batches = Vec::new();
    while !bytes.is_empty() {
        let len = 12 + i32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize;
        let (batch, rest) = bytes.split_at(len);
        batches.push(batch);
        bytes = rest;
    }
    batches
}

fn limits() -> KafkaRecordsLimits {
    KafkaRecordsLimits {
        batch_bytes_max: 16 << 20,
        uncompressed_bytes_max: 16 << 20,
    }
}

fn simple_model(codec: Compression) -> Model {
    Model {
        base_offset: 0,
        leader_epoch: -1,
        codec,
        log_append_time: false,
        transactional: false,
        control: false,
        base_timestamp: 1_700_000_000_000,
        max_timestamp: 1_700_000_000_005,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        records: (0..3)
            .map(|i| ModelRecord {
                timestamp_delta: i * 2,
                offset_delta: i as i32,
                key: Some(format!("key-{i}").into_bytes()),
                value: Some(vec![b'v'; 100]),
                headers: vec![(b"h".to_vec(), Some(b"x".to_vec()))],
            })
            .collect(),
    }
}

fn bytes_strategy() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(Vec::new())),
        4 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(Some),
    ]
}

fn codec_strategy() -> impl Strategy<Value = Compression> {
    proptest::sample::select(Compression::ALL.to_vec())
}

fn record_strategy() -> impl Strategy<Value = (ModelRecord, i32)> {
    (
        prop_oneof![
            any::<i64>(),
            -1_000_000i64..1_000_000,
            Just(i64::MIN),
            Just(i64::MAX)
        ],
        1i32..5,
        bytes_strategy(),
        bytes_strategy(),
        proptest::collection::vec(
            (
                proptest::collection::vec(any::<u8>(), 0..8),
                bytes_strategy(),
            ),
            0..4,
        ),
    )
        .prop_map(|(timestamp_delta, gap, key, value, headers)| {
            (
                ModelRecord {
                    timestamp_delta,
                    offset_delta: 0,
                    key,
                    value,
                    headers,
                },
                gap,
            )
        })
}

fn model_strategy() -> impl Strategy<Value = Model> {
    (
        (
            0i64..1 << 40,
            any::<i32>(),
            codec_strategy(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        ),
        (
            any::<i64>(),
            any::<i64>(),
            any::<i64>(),
            any::<i16>(),
            any::<i32>(),
        ),
        0i32..3,
        proptest::collection::vec(record_strategy(), 1..8),
    )
        .prop_map(
            |(
                (base_offset, leader_epoch, codec, log_append_time, transactional, control),
                (base_timestamp, max_timestamp, producer_id, producer_epoch, base_sequence),
                first_delta,
                records,
            )| {
                let mut delta = first_delta;
                let records = records
                    .into_iter()
                    .enumerate()
                    .map(|(i, (mut record, gap))| {
                        if i > 0 {
                            delta += gap;
                        }
                        record.offset_delta = delta;
                        record
                    })
                    .collect();
                Model {
                    base_offset,
                    leader_epoch,
                    codec,
                    log_append_time,
                    transactional,
                    control,
                    base_timestamp,
                    max_timestamp,
                    producer_id,
                    producer_epoch,
                    base_sequence,
                    records,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn kafka_to_native_to_kafka_keeps_everything(
        models in proptest::collection::vec(model_strategy(), 1..4),
    ) {
        let kafka = encode_all(&models);
        let natives = kafka_to_native(&kafka, &limits()).unwrap();
        prop_assert_eq!(natives.len(), models.len());
        for (native, model) in natives.iter().zip(&models) {
            assert_native_matches(native, model);
        }

        let native_bytes = natives.concat();
        let mut back = Vec::new();
        native_to_kafka(&native_bytes, &limits(), &mut back).unwrap();
        let originals = split_kafka(&kafka);
        let converted = split_kafka(&back);
        prop_assert_eq!(converted.len(), originals.len());
        for ((original, converted), model) in originals.iter().zip(&converted).zip(&models) {
            if model.codec == Compression::None {
                prop_assert_eq!(original, converted);
            } else {
                // Header fields other than batchLength and the CRC agree;
                // the compressed bytes may differ.
                prop_assert_eq!(&original[..8], &converted[..8]);
                prop_assert_eq!(&original[12..17], &converted[12..17]);
                prop_assert_eq!(&original[21..61], &converted[21..61]);
            }
        }
        // The content survives the second conversion: the native batches
        // built from the converted bytes are byte-identical.
        let again = kafka_to_native(&back, &limits()).unwrap();
        prop_assert_eq!(again, natives);
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = kafka_to_native(&bytes, &limits());
        let mut out = Vec::new();
        let _ = native_to_kafka(&bytes, &limits(), &mut out);
    }

    /// Mutations with the CRC fixed up reach the header checks, the codecs
    /// and the record parser; whatever they accept is a valid native batch.
    #[test]
    fn crc_fixed_mutations_never_panic(
        model in model_strategy(),
        mutations in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut kafka = encode_all(std::slice::from_ref(&model));
        for (index, byte) in mutations {
            let at = 21 + index.index(kafka.len() - 21);
            kafka[at] = byte;
        }
        fix_crc(&mut kafka);
        if let Ok(natives) = kafka_to_native(&kafka, &limits()) {
            for native in natives {
                let (view, _) = BatchView::parse(&native).unwrap();
                view.records(&mut Vec::new(), usize::MAX).unwrap();
            }
        }
    }

    #[test]
    fn bit_flips_and_truncations_are_typed_errors(
        model in model_strategy(),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
        cut in any::<prop::sample::Index>(),
    ) {
        let kafka = encode_all(std::slice::from_ref(&model));
        let mut flipped = kafka.clone();
        let at = flip.index(kafka.len());
        flipped[at] ^= 1 << bit;
        let result = kafka_to_native(&flipped, &limits());
        // Base offset (0..8) and leader epoch (12..16) are outside the CRC,
        // as in Kafka: a flip there may convert.
        if (8..12).contains(&at) || at >= 16 {
            prop_assert!(result.is_err(), "flip at {}", at);
        }
        let cut = 1 + cut.index(kafka.len() - 1);
        let result = kafka_to_native(&kafka[..cut], &limits());
        prop_assert!(result.is_err(), "cut at {}", cut);
    }
}

#[test]
fn empty_input_is_no_batches() {
    assert_eq!(kafka_to_native(&[], &limits()), Ok(Vec::new()));
    let mut out = Vec::new();
    native_to_kafka(&[], &limits(), &mut out).unwrap();
    assert!(out.is_empty());
}

#[test]
fn typed_errors_map_to_kafka_error_codes() {
    let good = encode_all(&[simple_model(Compression::None)]);

    let mut bad_magic = good.clone();
    bad_magic[16] = 1;
    let error = kafka_to_native(&bad_magic, &limits()).unwrap_err();
    assert_eq!(error, KafkaRecordsError::UnsupportedMagic(1));
    assert_eq!(error.error_code(), ErrorCode::CorruptMessage);

    let mut bad_crc = good.clone();
    *bad_crc.last_mut().unwrap() ^= 1;
    let error = kafka_to_native(&bad_crc, &limits()).unwrap_err();
    assert!(matches!(error, KafkaRecordsError::CrcMismatch { .. }));
    assert_eq!(error.error_code(), ErrorCode::CorruptMessage);

    let mut codec_7 = good.clone();
    codec_7[22] |= 0b111;
    fix_crc(&mut codec_7);
    let error = kafka_to_native(&codec_7, &limits()).unwrap_err();
    assert_eq!(error, KafkaRecordsError::UnsupportedCompression(7));
    assert_eq!(error.error_code(), ErrorCode::UnsupportedCompressionType);

    let mut delete_horizon = good.clone();
    delete_horizon[22] |= 1 << 6;
    fix_crc(&mut delete_horizon);
    let error = kafka_to_native(&delete_horizon, &limits()).unwrap_err();
    assert!(matches!(error, KafkaRecordsError::UnsupportedAttributes(_)));

    let small = KafkaRecordsLimits {
        batch_bytes_max: good.len() - 1,
        ..limits()
    };
    let error = kafka_to_native(&good, &small).unwrap_err();
    assert!(matches!(error, KafkaRecordsError::BatchTooLarge { .. }));
    assert_eq!(error.error_code(), ErrorCode::MessageTooLarge);

    let error = kafka_to_native(&good[..good.len() - 1], &limits()).unwrap_err();
    assert!(matches!(error, KafkaRecordsError::Truncated { .. }));

    let mut short_length = good.clone();
    short_length[8..12].copy_from_slice(&48i32.to_be_bytes());
    let error = kafka_to_native(&short_length, &limits()).unwrap_err();
    assert_eq!(error, KafkaRecordsError::BatchLengthInvalid(48));

    // One record more in the header than in the section, and one fewer.
    for count in [2i32, 4] {
        let mut wrong_count = good.clone();
        wrong_count[57..61].copy_from_slice(&count.to_be_bytes());
        fix_crc(&mut wrong_count);
        let error = kafka_to_native(&wrong_count, &limits()).unwrap_err();
        assert_eq!(
            error,
            KafkaRecordsError::RecordCountMismatch { header: count },
            "{count}"
        );
    }

    let mut bad_last_delta = good.clone();
    bad_last_delta[23..27].copy_from_slice(&5i32.to_be_bytes());
    fix_crc(&mut bad_last_delta);
    let error = kafka_to_native(&bad_last_delta, &limits()).unwrap_err();
    assert!(matches!(error, KafkaRecordsError::InvalidOffsets(_)));

    let mut negative_base = good.clone();
    negative_base[..8].copy_from_slice(&(-5i64).to_be_bytes());
    let error = kafka_to_native(&negative_base, &limits()).unwrap_err();
    assert!(matches!(error, KafkaRecordsError::InvalidOffsets(_)));

    // A varint that never ends: the first record's length.
    let mut model = simple_model(Compression::None);
    model.records.truncate(1);
    let mut bad_varint = Vec::new();
    encode_with_section(&model, &[0xff; 12], &mut bad_varint);
    let error = kafka_to_native(&bad_varint, &limits()).unwrap_err();
    assert_eq!(error, KafkaRecordsError::BadVarint);

    // Offset deltas must increase.
    let mut model = simple_model(Compression::None);
    model.records[1].offset_delta = 0;
    model.records[2].offset_delta = 0;
    let error = kafka_to_native(&encode_all(&[model]), &limits()).unwrap_err();
    assert!(matches!(error, KafkaRecordsError::InvalidOffsets(_)));
}

#[test]
fn decompression_bombs_are_refused_for_every_codec() {
    for codec in Compression::ALL {
        let mut model = simple_model(codec);
        model.records.truncate(1);
        model.records[0].value = Some(vec![0; 4 << 20]);
        let kafka = encode_all(&[model]);
        let tight = KafkaRecordsLimits {
            batch_bytes_max: 16 << 20,
            uncompressed_bytes_max: 1 << 20,
        };
        let error = kafka_to_native(&kafka, &tight).unwrap_err();
        assert_eq!(
            error,
            KafkaRecordsError::UncompressedTooLarge { len_max: 1 << 20 },
            "{codec:?}"
        );
        assert_eq!(error.error_code(), ErrorCode::RecordListTooLarge);
        assert_eq!(kafka_to_native(&kafka, &limits()).unwrap().len(), 1);
    }
}

/// One batch at a time: each call moves past one batch and says how many
/// bytes it decompressed to (0 uncompressed); `any_compressed` sees a
/// codec in any batch from the headers alone.
#[test]
fn batches_convert_one_at_a_time_with_their_decompressed_size() {
    let plain = simple_model(Compression::None);
    let zstd = simple_model(Compression::Zstd);
    assert!(!any_compressed(&encode_all(&[
        plain.clone(),
        plain.clone()
    ])));
    assert!(!any_compressed(&[0u8; 30]), "a short header is not a codec");
    let kafka = encode_all(&[plain.clone(), zstd.clone()]);
    assert!(any_compressed(&kafka));
    let mut rest = &kafka[..];
    let mut scratch = Vec::new();
    let (native, decompressed) =
        kafka_to_native_one(&mut rest, &limits(), &mut scratch).expect("plain converts");
    assert_native_matches(&native, &plain);
    assert_eq!(decompressed, 0);
    let (native, decompressed) =
        kafka_to_native_one(&mut rest, &limits(), &mut scratch).expect("zstd converts");
    assert_native_matches(&native, &zstd);
    assert_eq!(decompressed, records_section(&zstd).len());
    assert!(rest.is_empty());
    assert_eq!(
        KafkaRecordsError::RequestUncompressedTooLarge { len_max: 1 }.error_code(),
        ErrorCode::MessageTooLarge
    );
}

#[test]
fn snappy_is_read_raw_and_xerial_framed() {
    let model = simple_model(Compression::Snappy);
    let section = records_section(&model);

    let raw = snap::raw::Encoder::new().compress_vec(&section).unwrap();
    let mut kafka = Vec::new();
    encode_with_section(&model, &raw, &mut kafka);
    assert_native_matches(&kafka_to_native(&kafka, &limits()).unwrap()[0], &model);

    // xerial with several blocks, as the Java client writes long sections.
    let mut xerial = XERIAL_HEADER.to_vec();
    for block in section.chunks(50) {
        let compressed = snap::raw::Encoder::new().compress_vec(block).unwrap();
        xerial.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
        xerial.extend_from_slice(&compressed);
    }
    let mut kafka = Vec::new();
    encode_with_section(&model, &xerial, &mut kafka);
    assert_native_matches(&kafka_to_native(&kafka, &limits()).unwrap()[0], &model);

    // What we write is xerial-framed, like the Java client.
    let mut out = Vec::new();
    compress(Compression::Snappy, &section, &mut out).unwrap();
    assert!(out.starts_with(XERIAL_HEADER));
}

#[test]
fn gzip_with_several_members_is_read() {
    let model = simple_model(Compression::Gzip);
    let section = records_section(&model);
    let (first, second) = section.split_at(section.len() / 2);
    let mut members = Vec::new();
    compress(Compression::Gzip, first, &mut members).unwrap();
    compress(Compression::Gzip, second, &mut members).unwrap();
    let mut kafka = Vec::new();
    encode_with_section(&model, &members, &mut kafka);
    assert_native_matches(&kafka_to_native(&kafka, &limits()).unwrap()[0], &model);
}

mod oracle {
    //! `kafka_protocol`'s record codec as an independent implementation.
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Compression as KCompression, Record, RecordBatchDecoder, RecordBatchEncoder,
        RecordEncodeOptions, TimestampType as KTimestampType,
    };

    fn kcodec(codec: Compression) -> KCompression {
        match codec {
            Compression::None => KCompression::None,
            Compression::Gzip => KCompression::Gzip,
            Compression::Snappy => KCompression::Snappy,
            Compression::Lz4 => KCompression::Lz4,
            Compression::Zstd => KCompression::Zstd,
        }
    }

    /// Records the crate's encoder puts in one batch: same batch fields,
    /// sequences following the offsets.
    fn records_strategy() -> impl Strategy<Value = Vec<Record>> {
        (
            (
                0i64..1 << 40,
                any::<i32>(),
                any::<bool>(),
                any::<bool>(),
                -1i64..1 << 20,
                any::<i16>(),
                any::<i32>(),
            ),
            proptest::collection::vec(
                (
                    1i64..4,
                    -1_000_000i64..1_000_000_000_000,
                    bytes_strategy(),
                    bytes_strategy(),
                    proptest::collection::btree_map("[a-z]{0,6}", bytes_strategy(), 0..3),
                ),
                1..10,
            ),
        )
            .prop_map(
                |(
                    (base_offset, epoch, transactional, control, producer_id, producer_epoch, seq),
                    records,
                )| {
                    let mut offset = base_offset;
                    records
                        .into_iter()
                        .enumerate()
                        .map(|(i, (gap, timestamp, key, value, headers))| {
                            if i > 0 {
                                offset += gap;
                            }
                            Record {
                                transactional,
                                control,
                                delete_horizon: false,
                                partition_leader_epoch: epoch,
                                producer_id,
                                producer_epoch,
                                timestamp_type: KTimestampType::Creation,
                                offset,
                                sequence: seq.wrapping_add((offset - base_offset) as i32),
                                timestamp,
                                key: key.map(Bytes::from),
                                value: value.map(Bytes::from),
                                headers: headers
                                    .into_iter()
                                    .map(|(k, v)| (StrBytes::from_string(k), v.map(Bytes::from)))
                                    .collect::<IndexMap<_, _>>(),
                            }
                        })
                        .collect()
                },
            )
    }

    /// Sections larger than one lz4 (64 KiB) or xerial (32 KiB) block.
    #[test]
    fn large_sections_span_codec_blocks() {
        let records: Vec<Record> = (0..40i64)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 3,
                producer_id: 7,
                producer_epoch: 1,
                timestamp_type: KTimestampType::Creation,
                offset: i,
                sequence: i as i32,
                timestamp: 1_700_000_000_000 + i,
                key: Some(Bytes::from(i.to_be_bytes().to_vec())),
                value: Some(Bytes::from(
                    (0..10_000u32)
                        .map(|j| (j.wrapping_mul(2_654_435_761) >> 24) as u8 ^ i as u8)
                        .collect::<Vec<u8>>(),
                )),
                headers: IndexMap::new(),
            })
            .collect();
        for codec in Compression::ALL {
            let mut encoded = BytesMut::new();
            let options = RecordEncodeOptions {
                version: 2,
                compression: kcodec(codec),
            };
            RecordBatchEncoder::encode(&mut encoded, &records, &options).unwrap();
            let natives = kafka_to_native(&encoded, &limits()).unwrap();
            let mut back = Vec::new();
            native_to_kafka(&natives[0], &limits(), &mut back).unwrap();
            let decoded = RecordBatchDecoder::decode_all(&mut Bytes::from(back)).unwrap();
            assert_eq!(decoded[0].records, records, "{codec:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// The crate's encoder → native → Kafka → the crate's decoder gives
        /// the same records; the native batch has them too.
        #[test]
        fn crate_encoded_batches_round_trip(
            records in records_strategy(),
            codec in codec_strategy(),
        ) {
            let mut encoded = BytesMut::new();
            let options = RecordEncodeOptions { version: 2, compression: kcodec(codec) };
            RecordBatchEncoder::encode(&mut encoded, &records, &options).unwrap();

            let natives = kafka_to_native(&encoded, &limits()).unwrap();
            prop_assert_eq!(natives.len(), 1);
            let (view, _) = BatchView::parse(&natives[0]).unwrap();
            prop_assert_eq!(view.header().compression().unwrap(), codec);
            let mut scratch = Vec::new();
            let native_records = view.records(&mut scratch, usize::MAX).unwrap();
            prop_assert_eq!(native_records.len(), records.len());
            for (got, want) in native_records.iter().zip(&records) {
                prop_assert_eq!(got.offset.get() as i64, want.offset);
                prop_assert_eq!(got.timestamp, want.timestamp);
                prop_assert_eq!(got.key(), want.key.as_deref());
                prop_assert_eq!(got.value(), want.value.as_deref());
                let headers: Vec<_> = got.headers().collect();
                let want_headers: Vec<_> = want
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_bytes(), v.as_deref()))
                    .collect();
                prop_assert_eq!(headers, want_headers);
            }

            let mut back = Vec::new();
            native_to_kafka(&natives[0], &limits(), &mut back).unwrap();
            if codec == Compression::None {
                prop_assert_eq!(&back[..], &encoded[..]);
            }
            let decoded = RecordBatchDecoder::decode_all(&mut Bytes::from(back)).unwrap();
            prop_assert_eq!(decoded.len(), 1);
            prop_assert_eq!(decoded[0].compression, kcodec(codec));
            prop_assert_eq!(&decoded[0].records, &records);
        }
    }
}

#[test]
fn a_built_batch_keeps_its_buffer_only_when_the_unused_front_is_small() {
    // Front room up to 1/8 of the buffer: kept in place, no copy.
    let mut vec = vec![0u8; 800];
    vec[100..].fill(7);
    let batch_at = vec.as_ptr() as usize + 100;
    let kept = tight(vec, 100);
    assert_eq!(kept.as_ptr() as usize, batch_at);
    assert_eq!(kept.len(), 700);
    // More: the batch is copied out, and the big buffer is freed (the
    // batch cache would otherwise hold twice what it counts).
    let mut vec = vec![0u8; 800];
    vec[400..].fill(7);
    let buffer = vec.as_ptr() as usize..vec.as_ptr() as usize + 800;
    let copied = tight(vec, 400);
    assert!(!buffer.contains(&(copied.as_ptr() as usize)));
    assert_eq!(&copied[..], &[7u8; 400][..]);
    let mut exact = copied.try_into_mut().expect("the only reference");
    assert_eq!(exact.capacity(), 400);
    exact.clear();
}

#[test]
fn the_first_builder_buffer_fits_kilobyte_records() {
    // 1,000 records of 1 KiB: converted without the builder doubling its
    // buffer, so `tight` keeps the batch where it was built.
    let mut builder = BatchBuilder::new(BatchOptions::default());
    for i in 0..1000u32 {
        builder.push(RecordInput {
            key: Some(&i.to_be_bytes()),
            value: Some(&[(i % 251) as u8; 1024]),
            timestamp: 1,
            ..RecordInput::default()
        });
    }
    let native = builder.finish().expect("builds");
    let limits = KafkaRecordsLimits::default();
    let mut kafka = Vec::new();
    native_to_kafka(&native, &limits, &mut kafka).expect("to kafka");
    let section = kafka.len() - 61;
    let (converted, _) =
        kafka_to_native_one(&mut &kafka[..], &limits, &mut Vec::new()).expect("converts");
    assert!(converted.len() <= builder_capacity(section));
    assert!(builder_capacity(section) - converted.len() <= builder_capacity(section) / 8);
}
