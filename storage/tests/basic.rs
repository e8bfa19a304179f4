//! Scenario tests of the partition log on a real ext4 directory.

mod common;

use std::rc::Rc;

use bytes::BytesMut;
use common::*;
use fjord_schema::{LeaderEpoch, Offset};
use fjord_storage::{LogConfig, ManualClock, ReadRequest, StorageError, SystemClock};

#[test]
fn append_flush_read_reopen_round_trip() {
    let dir = temp_dir();
    run(async {
        let clock = Rc::new(SystemClock);
        let log = open(dir.path(), small_config(), cache(1 << 20), clock.clone())
            .await
            .expect("open");
        let mut written = Vec::new();
        for _ in 0..200 {
            let batch = batch_for(log.log_end(), 3000);
            let info = log.append(batch.clone()).await.expect("append");
            assert_eq!(info.next_offset, next_of(&batch));
            written.push(batch);
            if written.len() % 7 == 0 {
                log.flush().await.expect("flush");
                assert_eq!(log.durable_end(), log.log_end());
            }
        }
        let end = log.log_end();
        assert!(log.segment_bases().len() > 1, "rolled by size");
        // Hot: served from the cache and the unwritten batches.
        assert_eq!(read_all(&log, Offset(0), end).await.expect("read"), written);
        log.close().await.expect("close");

        // Cold: a fresh cache, everything from disk through the indexes.
        let log = open(dir.path(), small_config(), cache(1 << 10), clock)
            .await
            .expect("reopen");
        assert_eq!(log.log_end(), end);
        assert_eq!(read_all(&log, Offset(0), end).await.expect("read"), written);
        // A read from the middle of a batch starts at that batch.
        let third = &written[3];
        let base = fjord_schema::BatchView::parse_header(third)
            .expect("h")
            .base_offset();
        let got = log
            .read(ReadRequest {
                offset: Offset(base.get() + 1),
                until: end,
                max_bytes: 1,
            })
            .await
            .expect("read");
        if next_of(third) > Offset(base.get() + 1) {
            assert_eq!(got, vec![third.clone()]);
        }
        assert!(log
            .read(ReadRequest {
                offset: end,
                until: end,
                max_bytes: 10
            })
            .await
            .expect("tail")
            .is_empty());
        assert!(matches!(
            log.read(ReadRequest {
                offset: Offset(end.get() + 1),
                until: end,
                max_bytes: 10
            })
            .await,
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        log.close().await.expect("close");
    });
}

#[test]
fn leader_append_assigns_offsets_and_follower_append_checks_them() {
    let dir = temp_dir();
    run(async {
        let log = open(
            dir.path(),
            small_config(),
            cache(1 << 20),
            Rc::new(SystemClock),
        )
        .await
        .expect("open");
        let batch = batch_for(Offset(40), 100);
        let info = log
            .append_leader(BytesMut::from(&batch[..]), LeaderEpoch(7))
            .await
            .expect("leader append");
        assert_eq!(info.base_offset, Offset(0));
        let stored = log
            .read(ReadRequest {
                offset: Offset(0),
                until: log.log_end(),
                max_bytes: 1,
            })
            .await
            .expect("read");
        let header = fjord_schema::BatchView::parse(&stored[0])
            .expect("valid")
            .0
            .header()
            .to_owned();
        assert_eq!(header.base_offset(), Offset(0));
        assert_eq!(header.leader_epoch(), LeaderEpoch(7));
        assert!(matches!(
            log.append(batch_for(Offset(40), 100)).await,
            Err(StorageError::OffsetMismatch { .. })
        ));
        let huge = batch_for(log.log_end(), 100);
        let config = LogConfig {
            batch_bytes_max: 63,
            ..small_config()
        };
        assert!(
            config.validate().is_err(),
            "a batch limit below one header is refused"
        );
        assert!(matches!(
            log.append(huge.slice(..huge.len() - 1)).await,
            Err(StorageError::InvalidBatch(_))
        ));
        log.close().await.expect("close");
    });
}

#[test]
fn concurrent_appenders_share_flushes() {
    let dir = temp_dir();
    run(async {
        let log = Rc::new(
            open(
                dir.path(),
                small_config(),
                cache(1 << 20),
                Rc::new(SystemClock),
            )
            .await
            .expect("open"),
        );
        let mut tasks = Vec::new();
        for task in 0..8 {
            let log = log.clone();
            tasks.push(glommio::spawn_local(async move {
                for _ in 0..20 {
                    let info = log
                        .append_leader(
                            BytesMut::from(&batch_for(Offset(task), 500)[..]),
                            LeaderEpoch(1),
                        )
                        .await
                        .expect("append");
                    let durable = log.flush().await.expect("flush");
                    assert!(
                        durable >= info.next_offset,
                        "flush covers the caller's append"
                    );
                }
            }));
        }
        for task in tasks {
            task.await;
        }
        assert_eq!(log.durable_end(), log.log_end());
        let end = log.log_end();
        let all = read_all(&log, Offset(0), end).await.expect("read");
        assert_eq!(all.len(), 160);
        log.close().await.expect("close");
    });
}

#[test]
fn roll_retention_and_timestamp_lookup() {
    let dir = temp_dir();
    run(async {
        let clock = Rc::new(ManualClock::new(timestamp_of(Offset(0))));
        let config = LogConfig {
            retention_ms: Some(5_000),
            segment_age_ms_max: Some(1_000),
            ..small_config()
        };
        let log = open(dir.path(), config, cache(1 << 16), clock.clone())
            .await
            .expect("open");
        let mut bases = Vec::new();
        for _ in 0..300 {
            let base = log.log_end();
            clock.set(timestamp_of(base));
            log.append(batch_for(base, 2000)).await.expect("append");
            bases.push(base);
        }
        log.flush().await.expect("flush");
        let segments = log.segment_bases();
        assert!(segments.len() > 3, "rolled by age every ~100 offsets");
        // Timestamp lookups: exact record granularity.
        let target = bases[150];
        assert_eq!(
            log.offset_for_timestamp(timestamp_of(target))
                .await
                .expect("lookup"),
            Some(target)
        );
        assert_eq!(
            log.offset_for_timestamp(timestamp_of(target) + 1)
                .await
                .expect("lookup"),
            Some(Offset(target.get() + 1))
        );
        assert_eq!(
            log.offset_for_timestamp(0).await.expect("lookup"),
            Some(Offset(0))
        );
        assert_eq!(
            log.offset_for_timestamp(i64::MAX).await.expect("lookup"),
            None
        );
        // Retention: everything older than 5 s before "now" goes, whole segments.
        clock.set(timestamp_of(log.log_end()) + 1_000);
        let removed = log.apply_retention().await.expect("retention");
        assert!(!removed.is_empty());
        let start = log.log_start();
        assert!(segments.contains(&start));
        assert!(start.get() as i64 * 10 + 1_000_000 >= clock_now(&clock) - 5_000 - 1_000 * 10);
        assert!(matches!(
            log.read(ReadRequest {
                offset: Offset(0),
                until: log.log_end(),
                max_bytes: 1
            })
            .await,
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        let end = log.log_end();
        let rest = read_all(&log, start, end).await.expect("read");
        assert_eq!(
            rest.first()
                .map(|b| fjord_schema::BatchView::parse_header(b)
                    .expect("h")
                    .base_offset()),
            Some(start)
        );
        log.close().await.expect("close");
        for base in removed {
            let name = fjord_storage::layout::segment_file_name(
                base,
                fjord_storage::layout::SegmentFile::Log,
            );
            assert!(!log.dir().join(name).exists());
        }
    });
}

fn clock_now(clock: &ManualClock) -> i64 {
    fjord_storage::Clock::now_ms(clock)
}

#[test]
fn truncation_within_and_across_segments_survives_reopen() {
    let dir = temp_dir();
    run(async {
        let clock = Rc::new(SystemClock);
        let log = open(dir.path(), small_config(), cache(1 << 20), clock.clone())
            .await
            .expect("open");
        let mut written = Vec::new();
        for _ in 0..300 {
            let batch = batch_for(log.log_end(), 3000);
            log.append(batch.clone()).await.expect("append");
            written.push(batch);
        }
        let segments = log.segment_bases();
        assert!(segments.len() > 2);
        // Into the middle of a batch in the first segment: that batch goes.
        let cut_batch = &written[10];
        let cut_base = fjord_schema::BatchView::parse_header(cut_batch)
            .expect("h")
            .base_offset();
        log.truncate(Offset(cut_base.get() + 1))
            .await
            .expect("truncate");
        assert_eq!(
            log.log_end(),
            if next_of(cut_batch) > Offset(cut_base.get() + 1) {
                cut_base
            } else {
                next_of(cut_batch)
            }
        );
        let end = log.log_end();
        written.retain(|b| next_of(b) <= end);
        assert_eq!(log.segment_bases(), vec![Offset(0)]);
        // The log continues after the cut, and survives a reopen.
        for _ in 0..20 {
            let batch = batch_for(log.log_end(), 3000);
            log.append(batch.clone()).await.expect("append");
            written.push(batch);
        }
        log.close().await.expect("close");
        let log = open(dir.path(), small_config(), cache(1 << 10), clock.clone())
            .await
            .expect("reopen");
        let end = log.log_end();
        assert_eq!(read_all(&log, Offset(0), end).await.expect("read"), written);
        // Below the log start: the log restarts empty there.
        log.truncate(Offset(0)).await.expect("truncate to start");
        assert_eq!(log.log_end(), Offset(0));
        log.append(batch_for(Offset(0), 100))
            .await
            .expect("append after reset");
        log.close().await.expect("close");
    });
}

/// The zero-fill ahead of the writer follows the traffic a log has seen: a
/// log that was never written pre-writes nothing (a shard may hold
/// thousands of idle partitions), and a written one stays within twice what
/// it was given, capped by `prepare_ahead_bytes`.
#[test]
fn zero_fill_ahead_follows_the_traffic() {
    let dir = temp_dir();
    run(async {
        let config = LogConfig {
            segment_bytes_max: 64 << 20,
            prepare_step_bytes: 1 << 20,
            prepare_ahead_bytes: 8 << 20,
            ..small_config()
        };
        let active_file = |dir: &std::path::Path| {
            std::fs::read_dir(dir.join("t-0"))
                .expect("partition dir")
                .map(|e| e.expect("entry").path())
                .find(|p| p.extension().is_some_and(|e| e == "log"))
                .expect("a segment file")
        };
        let settle = || glommio::timer::sleep(std::time::Duration::from_millis(300));
        let log = open(dir.path(), config, cache(1 << 20), Rc::new(SystemClock))
            .await
            .expect("open");
        settle().await;
        let len = std::fs::metadata(active_file(dir.path()))
            .expect("stat")
            .len();
        assert_eq!(len, 0, "an unwritten log pre-wrote {len} bytes");

        let mut appended = 0u64;
        for _ in 0..4 {
            let batch = batch_for(log.log_end(), 1000);
            appended += batch.len() as u64;
            log.append(batch).await.expect("append");
        }
        log.flush().await.expect("flush");
        settle().await;
        let len = std::fs::metadata(active_file(dir.path()))
            .expect("stat")
            .len();
        let bound = (3 * appended).next_multiple_of(4096) + 4096;
        assert!(len <= bound, "{len} bytes on disk for {appended} appended");
        log.close().await.expect("close");
    });
}

/// A topic config change on a live log: retention, the largest batch, the
/// flush policy and the segment size apply without a reopen; a smaller
/// write buffer is taken only after a flush; the runtime sizes are fixed.
#[test]
fn reconfigure_applies_new_limits_to_a_live_log() {
    let dir = temp_dir();
    run(async {
        let clock = Rc::new(SystemClock);
        let log = open(dir.path(), small_config(), cache(1 << 20), clock.clone())
            .await
            .expect("open");
        for _ in 0..200 {
            log.append(batch_for(log.log_end(), 3000))
                .await
                .expect("append");
        }
        let segments = log.segment_bases().len();
        assert!(segments > 2, "rolled by size");
        assert!(log.apply_retention().await.expect("retention").is_empty());
        assert!(!log.flush_due(0), "no flush policy yet");

        // Retention by size and a flush trigger; a smaller largest batch.
        let config = LogConfig {
            retention_bytes: Some(300 << 10),
            batch_bytes_max: 2048,
            flush: fjord_storage::FlushPolicy {
                flush_messages: Some(1),
                ..small_config().flush
            },
            ..small_config()
        };
        log.reconfigure(config).await.expect("reconfigure");
        assert_eq!(log.config(), config);
        assert!(
            log.flush_due(0),
            "flush.messages = 1 with unflushed records"
        );
        let removed = log.apply_retention().await.expect("retention");
        assert!(!removed.is_empty(), "retention.bytes applied live");
        assert!(log.log_start() > Offset(0));
        assert!(log.segment_bases().len() < segments);
        assert!(matches!(
            log.append(batch_for(log.log_end(), 3000)).await,
            Err(StorageError::BatchTooLarge { .. })
        ));

        // Smaller segments from the next roll on.
        let config = LogConfig {
            segment_bytes_max: 64 << 10,
            ..config
        };
        log.reconfigure(config).await.expect("reconfigure");
        let before = log.segment_bases().len();
        for _ in 0..400 {
            log.append(batch_for(log.log_end(), 300))
                .await
                .expect("append");
        }
        assert!(log.segment_bases().len() > before + 1, "rolled at 64 KiB");

        // A smaller write buffer: everything appended is durable first.
        let smaller = LogConfig {
            write_buffer_bytes: 32 << 10,
            ..config
        };
        assert!(log.durable_end() < log.log_end());
        log.reconfigure(smaller).await.expect("reconfigure");
        assert_eq!(log.durable_end(), log.log_end());

        let refused = LogConfig {
            read_chunk_bytes: 32 << 10,
            ..smaller
        };
        assert!(matches!(
            log.reconfigure(refused).await,
            Err(StorageError::Config(_))
        ));
        let invalid = LogConfig {
            batch_bytes_max: 1 << 20,
            ..smaller
        };
        assert!(log.reconfigure(invalid).await.is_err());
        assert_eq!(log.config(), smaller);
        log.close().await.expect("close");
    });
}
