//! Helpers shared by the integration tests: an executor with explicit
//! `io_memory`, deterministic batches, and log setup in a real ext4 temp
//! directory (tmpfs would accept unaligned direct I/O and hide bugs).
#![allow(dead_code)]

use std::cell::RefCell;
use std::future::Future;
use std::path::Path;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use fjord_schema::batch::assign_offset_and_epoch;
use fjord_schema::{BatchBuilder, BatchOptions, LeaderEpoch, Offset, PartitionId, RecordInput};
use fjord_storage::{BatchCache, CacheConfig, Clock, LogConfig, LogOptions, PartitionLog};
use glommio::{LocalExecutorBuilder, Placement};

pub fn run<T>(future: impl Future<Output = T>) -> T {
    let executor = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(64 << 20)
        .make()
        .expect("glommio executor (io_uring available?)");
    executor.run(future)
}

pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("fjord-storage-test")
        .tempdir_in(std::env::temp_dir())
        .expect("temp dir")
}

/// A batch whose content is a pure function of its base offset, so any
/// process can check what it reads back.
pub fn batch_for(base: Offset, max_value_len: usize) -> Bytes {
    let b = base.get();
    let records = 1 + (b % 4) as usize;
    let value_len = (b.wrapping_mul(7919) % max_value_len as u64) as usize;
    let mut builder = BatchBuilder::new(BatchOptions::default());
    for i in 0..records {
        let value: Vec<u8> = (0..value_len)
            .map(|j| (b as usize + i * 31 + j) as u8)
            .collect();
        let key = format!("k{b}-{i}");
        builder.push(RecordInput {
            key: Some(key.as_bytes()),
            value: Some(&value),
            timestamp: timestamp_of(base) + i as i64,
            ..Default::default()
        });
    }
    let mut bytes = BytesMut::from(&builder.finish().expect("batch")[..]);
    assign_offset_and_epoch(&mut bytes, base, LeaderEpoch(1));
    bytes.freeze()
}

pub fn timestamp_of(base: Offset) -> i64 {
    1_000_000 + base.get() as i64 * 10
}

pub fn next_of(batch: &[u8]) -> Offset {
    fjord_schema::BatchView::parse_header(batch)
        .expect("header")
        .next_offset()
}

pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 256 << 10,
        segment_age_ms_max: None,
        retention_ms: None,
        retention_bytes: None,
        index_interval_bytes: 2048,
        batch_bytes_max: 32 << 10,
        write_buffer_bytes: 64 << 10,
        prepare_step_bytes: 64 << 10,
        prepare_ahead_bytes: 128 << 10,
        read_chunk_bytes: 16 << 10,
        ..LogConfig::default()
    }
}

pub fn cache(bytes_max: usize) -> Rc<RefCell<BatchCache>> {
    Rc::new(RefCell::new(BatchCache::new(CacheConfig {
        bytes_max,
        batch_bytes_max: bytes_max,
    })))
}

pub async fn open(
    dir: &Path,
    config: LogConfig,
    cache: Rc<RefCell<BatchCache>>,
    clock: Rc<dyn Clock>,
) -> fjord_storage::Result<PartitionLog> {
    PartitionLog::open(LogOptions {
        data_dir: dir.to_owned(),
        topic: "t".to_owned(),
        partition: PartitionId(0),
        config,
        cache,
        clock,
        initial_offset: Offset(0),
    })
    .await
}

/// Reads every batch in `[from, until)`, asserting progress.
pub async fn read_all(
    log: &PartitionLog,
    from: Offset,
    until: Offset,
) -> fjord_storage::Result<Vec<Bytes>> {
    let mut out = Vec::new();
    let mut offset = from;
    while offset < until {
        let batches = log
            .read(fjord_storage::ReadRequest {
                offset,
                until,
                max_bytes: 50_000,
            })
            .await?;
        assert!(!batches.is_empty(), "read at {offset:?} made no progress");
        for b in batches {
            offset = next_of(&b);
            out.push(b);
        }
    }
    Ok(out)
}

/// A batch of `records` records of `value_len` bytes at `base`, record `i`
/// stamped `timestamp + i`.
pub fn batch_with(base: Offset, records: usize, value_len: usize, timestamp: i64) -> Bytes {
    let mut builder = BatchBuilder::new(BatchOptions::default());
    for i in 0..records {
        let value: Vec<u8> = (0..value_len)
            .map(|j| (base.get() as usize ^ j) as u8)
            .collect();
        builder.push(RecordInput {
            value: Some(&value),
            timestamp: timestamp + i as i64,
            ..Default::default()
        });
    }
    let mut bytes = BytesMut::from(&builder.finish().expect("batch")[..]);
    assign_offset_and_epoch(&mut bytes, base, LeaderEpoch(1));
    bytes.freeze()
}
