use bytes::Bytes;
use fjord_schema::batch::assign_offset_and_epoch;
use fjord_schema::{BatchBuilder, BatchOptions, LeaderEpoch, Offset, RecordInput};

use super::*;

fn batch(base: u64, records: usize, timestamp: i64, value_len: usize) -> Bytes {
    let mut builder = BatchBuilder::new(BatchOptions::default());
    let value = vec![7u8; value_len];
    for i in 0..records {
        builder.push(RecordInput {
            value: Some(&value),
            timestamp: timestamp + i as i64,
            ..Default::default()
        });
    }
    let mut bytes = builder.finish().expect("batch").to_vec();
    assign_offset_and_epoch(&mut bytes, Offset(base), LeaderEpoch(1));
    Bytes::from(bytes)
}

/// `count` batches of 3 records back to back from offset 0.
fn segment(count: usize) -> (Vec<u8>, Vec<(u64, usize)>) {
    let mut out = Vec::new();
    let mut positions = Vec::new();
    for i in 0..count {
        let b = batch(i as u64 * 3, 3, 1000 + i as i64 * 10, 100);
        positions.push((out.len() as u64, b.len()));
        out.extend_from_slice(&b);
    }
    (out, positions)
}

fn config() -> LogConfig {
    LogConfig {
        index_interval_bytes: 500,
        segment_bytes_max: 1 << 20,
        ..LogConfig::default()
    }
}

#[test]
fn scan_stops_at_zero_padding_and_builds_indexes() {
    let (mut data, positions) = segment(20);
    let end = data.len() as u64;
    data.resize(data.len() + 8192, 0);
    let mut scanner = SegmentScanner::new(Offset(0), 500);
    let step = scanner.scan(&data, 0, ScanLimit::None);
    assert_eq!(
        step,
        ScanStep::Stop {
            position: end,
            kind: None
        }
    );
    let meta = scanner.finish();
    assert_eq!(meta.next, Offset(60));
    assert_eq!(meta.bytes, end);
    assert_eq!(meta.max_timestamp, 1000 + 19 * 10 + 2);
    assert!(
        meta.offset_index.len() > 1,
        "sparse entries every 500 bytes"
    );
    // Every index entry points at a batch start.
    for rel in 0..60 {
        let (_, position) = meta.offset_index.lookup(rel);
        assert!(positions.iter().any(|p| p.0 == u64::from(position)));
    }
}

#[test]
fn scan_reports_torn_batch_and_offset_gap() {
    let (data, positions) = segment(5);
    let cut = positions[4].0 as usize + 70;
    let mut scanner = SegmentScanner::new(Offset(0), 500);
    let step = scanner.scan(&data[..cut], 0, ScanLimit::None);
    assert_eq!(
        step,
        ScanStep::NeedMore {
            from: positions[4].0,
            len: positions[4].1
        }
    );
    let mut flipped = data.clone();
    flipped[positions[2].0 as usize + 100] ^= 1;
    let mut scanner = SegmentScanner::new(Offset(0), 500);
    match scanner.scan(&flipped, 0, ScanLimit::None) {
        ScanStep::Stop {
            position,
            kind: Some(CorruptionKind::Batch(_)),
        } => {
            assert_eq!(position, positions[2].0)
        }
        other => panic!("unexpected {other:?}"),
    }
    let mut gap = data.clone();
    gap[positions[3].0 as usize] ^= 1; // base offset is not CRC-covered
    let mut scanner = SegmentScanner::new(Offset(0), 500);
    match scanner.scan(&gap, 0, ScanLimit::None) {
        ScanStep::Stop {
            kind: Some(CorruptionKind::OffsetGap { expected, .. }),
            ..
        } => {
            assert_eq!(expected, Offset(9))
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn scan_to_offset_limit_stops_before_the_batch_holding_it() {
    let (data, positions) = segment(6);
    let mut scanner = SegmentScanner::new(Offset(0), 500);
    assert_eq!(
        scanner.scan(&data, 0, ScanLimit::Offset(Offset(10))),
        ScanStep::Limit
    );
    let meta = scanner.finish();
    assert_eq!(
        meta.next,
        Offset(9),
        "batch 9..12 holds offset 10 and goes whole"
    );
    assert_eq!(meta.bytes, positions[3].0);
}

#[test]
fn collect_returns_whole_batches_within_budget() {
    let (data, positions) = segment(6);
    let end = data.len() as u64;
    let request = ReadRequest {
        offset: Offset(4),
        until: Offset(100),
        max_bytes: positions[1].1 * 2,
    };
    match collect_batches(&data, 0, 0, Offset(0), end, &request, 0) {
        Collect::Batches { ranges, done, .. } => {
            assert!(done);
            assert_eq!(ranges.len(), 2);
            assert_eq!(
                ranges[0].start as u64, positions[1].0,
                "starts at the batch holding 4"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    let tiny = ReadRequest {
        max_bytes: 1,
        ..request
    };
    match collect_batches(&data, 0, 0, Offset(0), end, &tiny, 0) {
        Collect::Batches { ranges, .. } => assert_eq!(ranges.len(), 1, "first batch always"),
        other => panic!("unexpected {other:?}"),
    }
    let bounded = ReadRequest {
        until: Offset(6),
        max_bytes: 1 << 20,
        ..request
    };
    match collect_batches(&data, 0, 0, Offset(0), end, &bounded, 0) {
        Collect::Batches { ranges, .. } => assert_eq!(ranges.len(), 1, "until stops at 6"),
        other => panic!("unexpected {other:?}"),
    }
    let mut corrupt = data.clone();
    corrupt[positions[2].0 as usize + 80] ^= 0x10;
    let all = ReadRequest {
        offset: Offset(0),
        until: Offset(100),
        max_bytes: 1 << 20,
    };
    // The good batches before the damage come first, then the damage.
    match collect_batches(&corrupt, 0, 0, Offset(0), end, &all, 0) {
        Collect::Batches {
            ranges,
            next_position,
            next_offset,
            done,
            ..
        } => {
            assert_eq!(ranges.len(), 2);
            assert_eq!((next_position, next_offset), (positions[2].0, Offset(6)));
            assert!(done);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        collect_batches(&corrupt, 0, positions[2].0, Offset(6), end, &all, 0),
        Collect::Corrupt { position, expected: Offset(6), .. } if position == positions[2].0
    ));
    match collect_batches(&data[..100], 0, 0, Offset(0), end, &all, 0) {
        Collect::NeedMore {
            from: 0,
            len,
            offset: Offset(0),
        } => assert_eq!(len, positions[0].1),
        other => panic!("unexpected {other:?}"),
    }
}

fn core_with(batches: &[(u64, usize, i64)], config: LogConfig) -> LogCore {
    let mut core = LogCore::new(config, vec![SegmentMeta::empty(Offset(0))]);
    for &(records, value_len, ts) in batches {
        let b = batch(core.log_end().get(), records as usize, ts, value_len);
        let header = BatchView::parse_header(&b).expect("header");
        if core.roll_needed(b.len(), ts).is_some() {
            core.roll();
        }
        core.push_batch(header, ts);
    }
    core
}

#[test]
fn roll_by_size_and_age() {
    let config = LogConfig {
        segment_bytes_max: 1500,
        segment_age_ms_max: Some(1000),
        ..config()
    };
    let core = core_with(
        &[(1, 500, 0), (1, 500, 10), (1, 500, 20), (1, 500, 30)],
        config,
    );
    assert_eq!(
        core.segments().len(),
        2,
        "third batch would pass 1500 bytes"
    );
    assert_eq!(
        core.roll_needed(10, 20 + 999),
        None,
        "active since its first append at 20"
    );
    assert_eq!(core.roll_needed(10, 20 + 1000), Some(RollReason::Age));
}

#[test]
fn retention_by_time_and_size_keeps_the_active_segment() {
    let config = LogConfig {
        segment_bytes_max: 1500,
        retention_ms: Some(1000),
        retention_bytes: None,
        segment_age_ms_max: None,
        ..config()
    };
    let core = core_with(
        &[
            (1, 500, 0),
            (1, 500, 100),
            (1, 500, 2000),
            (1, 500, 3000),
            (1, 500, 3100),
        ],
        config,
    );
    let bases: Vec<_> = core.segments().iter().map(|s| s.base).collect();
    assert_eq!(bases.len(), 3);
    assert_eq!(core.retention_plan(2500), vec![bases[0]]);
    assert_eq!(
        core.retention_plan(100_000),
        vec![bases[0], bases[1]],
        "never the active"
    );
    let by_size = LogCore::new(
        LogConfig {
            retention_ms: None,
            retention_bytes: Some(1300),
            ..config
        },
        core.segments().to_vec(),
    );
    assert_eq!(by_size.retention_plan(0), vec![bases[0]]);
}

#[test]
fn truncate_plans() {
    let config = LogConfig {
        segment_bytes_max: 1200,
        segment_age_ms_max: None,
        ..config()
    };
    let core = core_with(
        &[(2, 500, 0), (2, 500, 1), (2, 500, 2), (2, 500, 3)],
        config,
    );
    assert_eq!(core.log_end(), Offset(8));
    assert_eq!(core.truncate_plan(Offset(8)), None);
    let plan = core.truncate_plan(Offset(3)).expect("plan");
    assert_eq!(plan.remove, vec![Offset(6), Offset(4)]);
    assert!(matches!(
        plan.cut,
        Cut::Segment {
            base: Offset(2),
            offset: Offset(3),
            ..
        }
    ));
    let plan = core.truncate_plan(Offset(0)).expect("plan");
    assert!(matches!(
        plan.cut,
        Cut::Segment {
            base: Offset(0),
            ..
        }
    ));
}

#[test]
fn read_start_skips_to_the_segment_holding_the_offset() {
    let config = LogConfig {
        segment_bytes_max: 1200,
        segment_age_ms_max: None,
        ..config()
    };
    let core = core_with(&[(2, 500, 0), (2, 500, 1), (2, 500, 2)], config);
    let start = core.read_start(Offset(3)).expect("in range");
    assert_eq!(start.segment_base, Offset(2));
    assert_eq!(core.read_start(Offset(6)), None);
    assert_eq!(
        core.time_lookup_start(2),
        Some(Offset(2)),
        "batch 2..4 has max timestamp 2"
    );
    assert_eq!(core.time_lookup_start(100), None);
}

/// Runs a [`SalvageScanner`] over all of `data` (one window).
fn salvage(data: &[u8], position: u64, lost_from: Offset) -> Damage {
    let mut scanner = SalvageScanner::new(Offset(0), position, lost_from);
    assert_eq!(
        scanner.scan(data, 0, data.len() as u64),
        SalvageStep::Done,
        "the whole data is in the window"
    );
    scanner.finish(data.len() as u64)
}

/// Recovery's scan stops at the first bad batch; what it finds behind it
/// tells a torn tail from corruption of acknowledged data.
#[test]
fn salvage_finds_valid_batches_after_damage_in_the_middle() {
    let (mut data, positions) = segment(6);
    let damaged = positions[2].0 as usize;
    data[damaged + 80..damaged + 96].fill(0xAB);
    let mut scanner = SegmentScanner::new(Offset(0), 500);
    let step = scanner.scan(&data, 0, ScanLimit::None);
    assert!(
        matches!(step, ScanStep::Stop { position, kind: Some(_) } if position == damaged as u64)
    );
    let meta = scanner.finish();
    let damage = salvage(&data, meta.bytes, meta.next);
    assert_eq!(damage.lost_from, Offset(6));
    assert_eq!(damage.bytes_start, positions[2].0);
    assert_eq!(damage.bytes_end, positions[3].0, "the next batch is valid");
    assert_eq!(damage.resume, Some((positions[3].0, Offset(9))));
    assert_eq!(damage.valid_end, Offset(18), "every later batch is counted");
    assert_eq!(damage.lost_offsets(Offset(18)), Offset(6)..Offset(9));
}

#[test]
fn salvage_finds_nothing_after_a_torn_tail() {
    let (data, positions) = segment(4);
    // The last batch was cut mid-write; zero padding follows.
    let mut torn = data[..positions[3].0 as usize + 70].to_vec();
    torn.resize(torn.len() + 4096, 0);
    let mut scanner = SegmentScanner::new(Offset(0), 500);
    assert!(matches!(
        scanner.scan(&torn, 0, ScanLimit::None),
        ScanStep::NeedMore { .. } | ScanStep::Stop { .. }
    ));
    let meta = scanner.finish();
    assert_eq!(meta.next, Offset(9));
    let damage = salvage(&torn, meta.bytes, meta.next);
    assert_eq!(
        damage.resume, None,
        "a torn tail has nothing valid after it"
    );
    assert_eq!(damage.valid_end, Offset(9));
    assert_eq!(damage.bytes_end, torn.len() as u64);
}

#[test]
fn salvage_ignores_valid_batches_with_older_offsets() {
    // A stale copy of batch 0..3 after the damage does not count: offsets
    // only grow, so it cannot be acknowledged data of this log.
    let (data, positions) = segment(3);
    let mut bytes = data[..positions[2].0 as usize].to_vec();
    bytes.extend_from_slice(&[0x55; 200]);
    bytes.extend_from_slice(&data[..positions[0].1]);
    let damage = salvage(&bytes, positions[2].0, Offset(6));
    assert_eq!(damage.resume, None);
}

#[test]
fn salvage_asks_for_the_bytes_of_a_batch_it_cannot_see_whole() {
    let (mut data, positions) = segment(3);
    data[positions[0].0 as usize + 100] ^= 1;
    let mut scanner = SalvageScanner::new(Offset(0), 0, Offset(0));
    let cut = positions[1].0 as usize + fjord_schema::batch::BATCH_HEADER_LEN + 10;
    assert_eq!(
        scanner.scan(&data[..cut], 0, data.len() as u64),
        SalvageStep::NeedMore {
            from: positions[1].0,
            len: positions[1].1
        }
    );
    assert_eq!(scanner.scan(&data, 0, data.len() as u64), SalvageStep::Done);
    let damage = scanner.finish(data.len() as u64);
    assert_eq!(damage.resume, Some((positions[1].0, Offset(3))));
}
