//! Record batch benchmarks: build, CRC verify (`BatchView::parse`) and record
//! iteration for 1 MiB batches of 1 KiB records, uncompressed, lz4 and zstd.
//!
//! ```text
//! cargo bench -p fjord-bench --bench batch
//! ```
//!
//! Throughput is in bytes of the batch as it travels (`parse`: the bytes the
//! CRC covers) or of the uncompressed records (`build`, `records`,
//! `receive`), so criterion reports GB/s of logical data.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fjord_schema::batch::{BatchBuilder, BatchOptions, BatchView, RecordInput};
use fjord_schema::Compression;

const RECORDS: usize = 1024;
const KEY_LEN: usize = 16;
/// Key plus value is 1 KiB, so a batch holds 1 MiB of record data.
const VALUE_LEN: usize = 1024 - KEY_LEN;
const CODECS: [Compression; 3] = [Compression::None, Compression::Lz4, Compression::Zstd];
/// Generous decompression limit (the batch is about 1.1 MiB uncompressed).
const UNCOMPRESSED_MAX: usize = 4 << 20;

/// 1024 records of 1 KiB: a 16-byte key and a value of log-line-like text
/// (words from a small vocabulary chosen by a xorshift PRNG), so lz4 and zstd
/// see realistic, moderately compressible data rather than zeros or noise.
fn records() -> Vec<(Vec<u8>, Vec<u8>)> {
    const WORDS: [&str; 16] = [
        "GET",
        "/api/v1/orders",
        "200",
        "user=",
        "latency_ms=",
        "region=eu-west",
        "trace=",
        "POST",
        "404",
        "shard=",
        "ok",
        "cache=miss",
        "bytes=",
        "retry",
        "warn",
        "topic=events",
    ];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..RECORDS)
        .map(|i| {
            let key = format!("user-{i:011}").into_bytes();
            assert_eq!(key.len(), KEY_LEN);
            let mut value = Vec::with_capacity(VALUE_LEN + 32);
            while value.len() < VALUE_LEN {
                let r = next();
                value.extend_from_slice(WORDS[(r % 16) as usize].as_bytes());
                value.extend_from_slice(format!("{} ", (r >> 8) % 100_000).as_bytes());
            }
            value.truncate(VALUE_LEN);
            (key, value)
        })
        .collect()
}

fn build(records: &[(Vec<u8>, Vec<u8>)], codec: Compression) -> bytes::Bytes {
    let mut builder = BatchBuilder::with_capacity(
        BatchOptions {
            compression: codec,
            ..Default::default()
        },
        RECORDS * (KEY_LEN + VALUE_LEN + 64),
    );
    for (i, (key, value)) in records.iter().enumerate() {
        builder.push(RecordInput {
            key: Some(key),
            value: Some(value),
            headers: &[],
            timestamp: 1_700_000_000_000 + i as i64,
            offset_delta: None,
        });
    }
    builder.finish().expect("batch builds")
}

/// Reads every record the way a consumer or the broker's validation would:
/// key and value lengths, offsets.
fn iterate(view: &BatchView<'_>, scratch: &mut Vec<u8>) -> usize {
    let records = view
        .records(scratch, UNCOMPRESSED_MAX)
        .expect("records verify");
    let mut total = 0;
    for record in records.iter() {
        total += record.key().map_or(0, <[u8]>::len) + record.value().map_or(0, <[u8]>::len);
        total += record.offset.get() as usize & 1;
    }
    total
}

fn bench(c: &mut Criterion) {
    let records = records();
    let data_len: usize = records.iter().map(|(k, v)| k.len() + v.len()).sum();
    let batches: Vec<(Compression, bytes::Bytes)> = CODECS
        .iter()
        .map(|&codec| (codec, build(&records, codec)))
        .collect();
    for (codec, batch) in &batches {
        eprintln!(
            "{}: {} records, {data_len} bytes of keys and values, batch {} bytes",
            codec.name(),
            RECORDS,
            batch.len()
        );
    }

    let mut group = c.benchmark_group("batch/build");
    group.throughput(Throughput::Bytes(data_len as u64));
    for codec in CODECS {
        group.bench_function(BenchmarkId::from_parameter(codec.name()), |b| {
            b.iter(|| build(black_box(&records), codec))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("batch/parse");
    for (codec, batch) in &batches {
        group.throughput(Throughput::Bytes(batch.len() as u64));
        group.bench_function(BenchmarkId::from_parameter(codec.name()), |b| {
            b.iter(|| {
                BatchView::parse(black_box(batch))
                    .expect("batch parses")
                    .0
                    .header()
                    .record_count()
            })
        });
    }
    group.finish();

    // records() + iteration on an already parsed batch (decompression
    // included for the compressed codecs).
    let mut group = c.benchmark_group("batch/records");
    group.throughput(Throughput::Bytes(data_len as u64));
    for (codec, batch) in &batches {
        let (view, _) = BatchView::parse(batch).expect("batch parses");
        let mut scratch = Vec::new();
        group.bench_function(BenchmarkId::from_parameter(codec.name()), |b| {
            b.iter(|| iterate(black_box(&view), &mut scratch))
        });
    }
    group.finish();

    // The whole receive path: parse (CRC) + records() + iteration.
    let mut group = c.benchmark_group("batch/receive");
    group.throughput(Throughput::Bytes(data_len as u64));
    for (codec, batch) in &batches {
        let mut scratch = Vec::new();
        group.bench_function(BenchmarkId::from_parameter(codec.name()), |b| {
            b.iter(|| {
                let (view, _) = BatchView::parse(black_box(batch)).expect("batch parses");
                iterate(&view, &mut scratch)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
