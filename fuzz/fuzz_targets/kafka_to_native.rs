//! Kafka RecordBatch v2 → native (`kafka_to_native`, what every Kafka
//! Produce goes through), every codec, then back (`native_to_kafka`) and
//! forth again.
//!
//! Input layout:
//!
//! ```text
//! 0     mode  bit 0: recompute the CRC-32C of every batch whose length
//!             field fits, so random bodies reach the decompressors and the
//!             record parser instead of all stopping at the CRC check
//!             bit 1: "section" input (below) instead of whole batches
//!             bits 2-4: n, the decompression limit is 256 B << n
//! rest  back-to-back Kafka batches, or in section mode:
//!         codec u8 (% 5) | lastOffsetDelta i32 BE | recordCount i32 BE
//!         | the uncompressed records section
//!       which the target compresses with Kafka's framing for that codec
//!       (its own compressors, not the broker's) and wraps in a valid
//!       batch header (base offset 5, leader epoch 3, producer 1/0/0).
//! ```
//!
//! Checks: never panics; each converted batch is one valid native batch
//! (records within the limit, count and offsets as the Kafka header says);
//! the natives convert back to Kafka (`native_to_kafka`), and that
//! converts to byte-identical natives again (nothing is lost either way).
#![no_main]

use std::io::Write;

use fjord_broker::kafka::records::{kafka_to_native, native_to_kafka, KafkaRecordsLimits};
use fjord_schema::batch::BatchView;
use fjord_schema::Offset;
use libfuzzer_sys::fuzz_target;

/// Bytes before a batch's length field ends (Kafka's LOG_OVERHEAD).
const LOG_OVERHEAD: usize = 12;
const HEADER_LEN: usize = 61;
/// The CRC-32C covers the attributes to the end of the batch.
const ATTRIBUTES_OFFSET: usize = 21;

/// Rewrites the CRC of every batch whose length field fits the bytes.
fn fix_crcs(bytes: &mut [u8]) {
    let mut at = 0;
    while bytes.len() - at >= HEADER_LEN {
        let len = i32::from_be_bytes(bytes[at + 8..at + 12].try_into().expect("4 bytes"));
        let Some(end) = usize::try_from(len)
            .ok()
            .map(|l| at + LOG_OVERHEAD + l)
            .filter(|&end| end <= bytes.len() && end >= at + HEADER_LEN)
        else {
            return;
        };
        let crc = crc32c::crc32c(&bytes[at + ATTRIBUTES_OFFSET..end]);
        bytes[at + 17..at + 21].copy_from_slice(&crc.to_be_bytes());
        at = end;
    }
}

/// Compresses a records section as Kafka producers do.
fn compress(codec: u8, section: &[u8]) -> Vec<u8> {
    match codec {
        0 => section.to_vec(),
        1 => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(section).expect("gzip to memory");
            e.finish().expect("gzip to memory")
        }
        // Raw snappy (librdkafka's); the xerial framing comes with the seeds.
        2 => snap::raw::Encoder::new()
            .compress_vec(section)
            .expect("snappy to memory"),
        3 => {
            let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
            e.write_all(section).expect("lz4 to memory");
            e.finish().expect("lz4 to memory")
        }
        _ => zstd::bulk::compress(section, 1).expect("zstd to memory"),
    }
}

/// A valid batch around a fuzz-chosen records section.
fn batch_of_section(input: &[u8]) -> Option<Vec<u8>> {
    let codec = input.first()? % 5;
    let last_offset_delta = input.get(1..5)?;
    let record_count = input.get(5..9)?;
    let compressed = compress(codec, &input[9..]);
    let mut b = Vec::with_capacity(HEADER_LEN + compressed.len());
    b.extend_from_slice(&5i64.to_be_bytes());
    let batch_length = (HEADER_LEN - LOG_OVERHEAD + compressed.len()) as i32;
    b.extend_from_slice(&batch_length.to_be_bytes());
    b.extend_from_slice(&3i32.to_be_bytes());
    b.push(2);
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&i16::from(codec).to_be_bytes());
    b.extend_from_slice(last_offset_delta);
    b.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
    b.extend_from_slice(&1_700_000_000_100i64.to_be_bytes());
    b.extend_from_slice(&1i64.to_be_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.extend_from_slice(record_count);
    assert_eq!(b.len(), HEADER_LEN);
    b.extend_from_slice(&compressed);
    fix_crcs(&mut b);
    Some(b)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut kafka = if mode & 2 != 0 {
        match batch_of_section(rest) {
            Some(b) => b,
            None => return,
        }
    } else {
        rest.to_vec()
    };
    if mode & 1 != 0 {
        fix_crcs(&mut kafka);
    }
    let limits = KafkaRecordsLimits {
        batch_bytes_max: 1 << 20,
        uncompressed_bytes_max: 256 << ((mode >> 2) & 0b111),
    };
    let natives = match kafka_to_native(&kafka, &limits) {
        Ok(natives) => natives,
        Err(error) => {
            std::hint::black_box((error.to_string(), error.error_code()));
            return;
        }
    };

    // Each is one valid native batch, as the Kafka header says.
    let mut at = 0;
    let mut scratch = Vec::new();
    for native in &natives {
        let (view, tail) = BatchView::parse(native).expect("a converted batch parses");
        assert!(tail.is_empty());
        let header = view.header();
        let base_offset = i64::from_be_bytes(kafka[at..at + 8].try_into().expect("8"));
        let len = LOG_OVERHEAD
            + i32::from_be_bytes(kafka[at + 8..at + 12].try_into().expect("4")) as usize;
        let kafka_count = i32::from_be_bytes(kafka[at + 57..at + 61].try_into().expect("4"));
        let kafka_last_delta = i32::from_be_bytes(kafka[at + 23..at + 27].try_into().expect("4"));
        assert_eq!(header.base_offset(), Offset(base_offset as u64));
        assert_eq!(i64::from(header.record_count()), i64::from(kafka_count));
        assert_eq!(
            i64::from(header.last_offset_delta.get()),
            i64::from(kafka_last_delta)
        );
        // A native batch holds more framing than Kafka's; the records
        // section read back is bounded by what the limit let through.
        let records = view
            .records(&mut scratch, 1 << 24)
            .expect("a converted batch's records verify");
        assert_eq!(records.len(), kafka_count as usize);
        let mut last = None;
        for r in records.iter() {
            assert!(last.is_none_or(|l| r.offset > l), "offsets increase");
            last = Some(r.offset);
        }
        assert_eq!(last, Some(header.last_offset()));
        fjord_fuzz::walk_batch(&view, &mut scratch, 1 << 24);
        at += len;
    }
    assert_eq!(at, kafka.len());

    // Back to Kafka, and forth again: the same natives, byte for byte.
    let all: Vec<u8> = natives.iter().flat_map(|n| n.iter().copied()).collect();
    let wide = KafkaRecordsLimits {
        batch_bytes_max: 1 << 26,
        uncompressed_bytes_max: 1 << 26,
    };
    let mut back = Vec::new();
    native_to_kafka(&all, &wide, &mut back).expect("converted batches convert back");
    let again = kafka_to_native(&back, &wide).expect("fetched batches convert again");
    assert_eq!(again, natives);
});
