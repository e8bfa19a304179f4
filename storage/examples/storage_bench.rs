//! Storage benchmark (not a test; figures go to docs/BENCHMARKS.md).
//!
//! ```text
//! cargo run --release -p fjord-storage --example storage_bench -- <dir> [scenario]
//! ```
//! Scenarios: `seq1m` (1 MiB batches, flush after each), `small4k`
//! (4 KiB batch + flush, one writer: commit latency), `read` (tail reads
//! from the cache, cold reads from disk), `steps` (4 KiB commit latency and
//! 1 MiB throughput for several zero-fill step sizes), `all` (default).

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use fjord_schema::{BatchBuilder, BatchOptions, LeaderEpoch, Offset, PartitionId, RecordInput};
use fjord_storage::{
    BatchCache, CacheConfig, LogConfig, LogOptions, PartitionLog, ReadRequest, SystemClock,
};
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;

fn batch(len: usize) -> Bytes {
    let mut builder = BatchBuilder::new(BatchOptions::default());
    let value = vec![0x5a; len.saturating_sub(160)];
    builder.push(RecordInput {
        value: Some(&value),
        timestamp: 1,
        ..Default::default()
    });
    builder.finish().expect("batch")
}

fn config(step: u64, ahead: u64) -> LogConfig {
    LogConfig {
        segment_bytes_max: 1 << 30,
        segment_age_ms_max: None,
        retention_ms: None,
        batch_bytes_max: 2 << 20,
        write_buffer_bytes: 8 << 20,
        prepare_step_bytes: step,
        prepare_ahead_bytes: ahead,
        read_chunk_bytes: 1 << 20,
        ..LogConfig::default()
    }
}

async fn open(dir: &Path, topic: &str, config: LogConfig, cache_bytes: usize) -> PartitionLog {
    let cache = Rc::new(RefCell::new(BatchCache::new(CacheConfig {
        bytes_max: cache_bytes,
        batch_bytes_max: 2 << 20,
    })));
    PartitionLog::open(LogOptions {
        data_dir: dir.to_owned(),
        topic: topic.to_owned(),
        partition: PartitionId(0),
        config,
        cache,
        clock: Rc::new(SystemClock),
        initial_offset: Offset(0),
    })
    .await
    .expect("open log")
}

/// Lets the zero-fill task get ahead of the writer, as it is in steady
/// state (it runs between commits).
async fn settle() {
    let ms = std::env::var("SETTLE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    glommio::timer::sleep(Duration::from_millis(ms)).await;
}

async fn seq1m(dir: &Path, topic: &str, step: u64, count: usize) -> f64 {
    let template = batch(1 << 20);
    let copies: Vec<BytesMut> = (0..count).map(|_| BytesMut::from(&template[..])).collect();
    let ahead = std::env::var("AHEAD_MB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(4 * step.max(8 << 20), |mb| mb << 20);
    let log = open(dir, topic, config(step, ahead), 64 << 20).await;
    settle().await;
    let start = Instant::now();
    for copy in copies {
        log.append_leader(copy, LeaderEpoch(1))
            .await
            .expect("append");
        log.flush().await.expect("flush");
    }
    let elapsed = start.elapsed();
    log.close().await.expect("close");
    (count * template.len()) as f64 / elapsed.as_secs_f64() / 1e9
}

async fn small4k(dir: &Path, topic: &str, step: u64, ahead: u64, count: usize) -> Histogram<u64> {
    let template = batch(4096);
    let log = open(dir, topic, config(step, ahead), 64 << 20).await;
    settle().await;
    let mut histogram = Histogram::<u64>::new(3).expect("histogram");
    for i in 0..count {
        let copy = BytesMut::from(&template[..]);
        let start = Instant::now();
        log.append_leader(copy, LeaderEpoch(1))
            .await
            .expect("append");
        log.flush().await.expect("flush");
        histogram
            .record(start.elapsed().as_nanos() as u64)
            .expect("record");
        if i % 256 == 255 {
            // Steady state: the background zero-fill runs between bursts.
            glommio::yield_if_needed().await;
        }
    }
    log.close().await.expect("close");
    histogram
}

async fn reads(dir: &Path) {
    let topic = "read";
    let template = batch(64 << 10);
    let count = 16 * 1024; // 1 GiB of 64 KiB batches
    let log = open(dir, topic, config(8 << 20, 32 << 20), 256 << 20).await;
    for _ in 0..count {
        log.append_leader(BytesMut::from(&template[..]), LeaderEpoch(1))
            .await
            .expect("append");
    }
    log.flush().await.expect("flush");
    let end = log.log_end();
    // Tail: the last 128 MiB are in the cache; read them 16 times.
    let tail_from = Offset(end.get() - 2048);
    let start = Instant::now();
    let mut bytes = 0usize;
    for _ in 0..16 {
        let mut offset = tail_from;
        while offset < end {
            let got = log
                .read(ReadRequest {
                    offset,
                    until: end,
                    max_bytes: 1 << 20,
                })
                .await
                .expect("read");
            for b in &got {
                bytes += b.len();
            }
            offset = Offset(offset.get() + got.len() as u64);
        }
    }
    let hot = bytes as f64 / start.elapsed().as_secs_f64() / 1e9;
    log.close().await.expect("close");

    // Cold: a fresh instance with a 1 MiB cache reads everything from disk.
    let log = open(dir, topic, config(8 << 20, 32 << 20), 1 << 20).await;
    let start = Instant::now();
    let mut bytes = 0usize;
    let mut offset = Offset(0);
    while offset < end {
        let got = log
            .read(ReadRequest {
                offset,
                until: end,
                max_bytes: 1 << 20,
            })
            .await
            .expect("read");
        for b in &got {
            bytes += b.len();
        }
        offset = Offset(offset.get() + got.len() as u64);
    }
    let cold = bytes as f64 / start.elapsed().as_secs_f64() / 1e9;
    log.close().await.expect("close");
    println!("read: tail from cache {hot:.2} GB/s (128 MiB x16, 1 MiB fetches); cold from disk {cold:.2} GB/s (1 GiB, 1 MiB fetches, CRC-checked)");
}

/// The runtime's own floor: glommio DMA write + fdatasync on a pre-written
/// file, no log at all. Separates the log's overhead from the runtime's.
async fn raw(dir: &Path, block: usize, count: usize) -> (Histogram<u64>, f64) {
    let path = dir.join(format!("raw-{block}"));
    let file = glommio::io::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .dma_open(&path)
        .await
        .expect("raw file");
    let total = (block * count) as u64;
    let step = 8 << 20;
    let mut position = 0;
    while position < total {
        let mut zeros = file.alloc_dma_buffer(step);
        zeros.as_bytes_mut().fill(0);
        file.write_at(zeros, position).await.expect("prewrite");
        position += step as u64;
    }
    file.fdatasync().await.expect("sync");
    let mut histogram = Histogram::<u64>::new(3).expect("histogram");
    let start = Instant::now();
    for i in 0..count {
        let mut buffer = file.alloc_dma_buffer(block);
        buffer.as_bytes_mut().fill(0x5a);
        let t = Instant::now();
        file.write_at(buffer, (i * block) as u64)
            .await
            .expect("write");
        file.fdatasync().await.expect("sync");
        histogram
            .record(t.elapsed().as_nanos() as u64)
            .expect("record");
    }
    let gbps = total as f64 / start.elapsed().as_secs_f64() / 1e9;
    file.close().await.expect("close");
    std::fs::remove_file(&path).ok();
    (histogram, gbps)
}

fn print_latency(label: &str, h: &Histogram<u64>) {
    println!(
        "{label}: commit latency p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, mean {:.3} ms ({} commits)",
        h.value_at_quantile(0.50) as f64 / 1e6,
        h.value_at_quantile(0.99) as f64 / 1e6,
        h.value_at_quantile(0.999) as f64 / 1e6,
        h.mean() / 1e6,
        h.len()
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("usage: storage_bench <dir> [scenario]"));
    let scenario = args.next().unwrap_or_else(|| "all".to_owned());
    std::fs::create_dir_all(&dir).expect("bench dir");
    let executor = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(128 << 20)
        .make()
        .expect("executor");
    let root = dir.clone();
    executor.run(async move {
        let all = scenario == "all";
        if all || scenario == "seq1m" {
            let gbps = seq1m(&dir, "seq1m", 8 << 20, 1024).await;
            println!("seq1m: 1 MiB batches, append + flush each: {gbps:.3} GB/s (1 GiB)");
        }
        if all || scenario == "small4k" {
            let h = small4k(&dir, "small4k", 8 << 20, 32 << 20, 20_000).await;
            print_latency("small4k", &h);
        }
        if all || scenario == "raw" {
            let (_, gbps) = raw(&dir, 1 << 20, 1024).await;
            println!("raw glommio 1 MiB write + fdatasync, pre-written file: {gbps:.3} GB/s");
            let (h, _) = raw(&dir, 4096, 20_000).await;
            print_latency("raw glommio 4 KiB write + fdatasync", &h);
        }
        if all || scenario == "read" {
            reads(&dir).await;
        }
        if all || scenario == "steps" {
            for (step, ahead) in [
                (4096, 4096),
                (256 << 10, 1 << 20),
                (1 << 20, 4 << 20),
                (8 << 20, 32 << 20),
                (32 << 20, 128 << 20),
            ] {
                let topic = format!("steps-{step}");
                let h = small4k(&dir, &topic, step, ahead, 10_000).await;
                print_latency(
                    &format!("step {} KiB ahead {} KiB, 4 KiB", step >> 10, ahead >> 10),
                    &h,
                );
                let topic = format!("steps1m-{step}");
                let gbps = seq1m(&dir, &topic, step.max(1 << 20), 512).await;
                println!(
                    "step {} KiB, 1 MiB batches: {gbps:.3} GB/s",
                    step.max(1 << 20) >> 10
                );
            }
        }
    });
    std::fs::remove_dir_all(&root).ok();
}
