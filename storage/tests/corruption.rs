//! Damaged segments: files cut at arbitrary bytes and bits flipped at
//! arbitrary places. Recovery keeps the valid prefix, never serves corrupt
//! data, and reports corruption in the middle of a segment as a typed
//! error instead of cutting valid data away.

mod common;

use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use common::*;
use fjord_schema::{BatchView, Offset};
use fjord_storage::layout::{segment_file_name, SegmentFile};
use fjord_storage::{LogConfig, ReadRequest, StorageError, SystemClock};

const WRITE_BUFFER: u64 = 16 << 10;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 128 << 10,
        batch_bytes_max: 8 << 10,
        write_buffer_bytes: WRITE_BUFFER as usize,
        prepare_step_bytes: 32 << 10,
        prepare_ahead_bytes: 64 << 10,
        read_chunk_bytes: 8 << 10,
        ..small_config()
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    batches: Vec<Bytes>,
    segments: Vec<Offset>,
}

impl Fixture {
    fn build() -> Fixture {
        let dir = temp_dir();
        let root = dir.path().to_owned();
        let (batches, segments) = run(async {
            let log = open(&root, config(), cache(1 << 20), Rc::new(SystemClock))
                .await
                .expect("open");
            let mut batches = Vec::new();
            while log.segment_bases().len() < 2 || log.size_bytes() < 200 << 10 {
                let batch = batch_for(log.log_end(), 1500);
                log.append(batch.clone()).await.expect("append");
                batches.push(batch);
            }
            log.flush().await.expect("flush");
            let segments = log.segment_bases();
            log.close().await.expect("close");
            (batches, segments)
        });
        Fixture {
            _dir: dir,
            root,
            batches,
            segments,
        }
    }

    /// A copy of the log directory to damage.
    fn copy(&self) -> (tempfile::TempDir, PathBuf) {
        let dir = temp_dir();
        let from = self.root.join("t-0");
        let to = dir.path().join("t-0");
        std::fs::create_dir_all(&to).expect("mkdir");
        for entry in std::fs::read_dir(&from).expect("read dir") {
            let entry = entry.expect("entry");
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
        }
        (dir, to)
    }

    /// (position in its segment, batch) for the batches of one segment.
    fn layout(&self, segment: usize) -> Vec<(u64, Bytes)> {
        let base = self.segments[segment];
        let next = self
            .segments
            .get(segment + 1)
            .copied()
            .unwrap_or(Offset(u64::MAX));
        let mut position = 0;
        let mut out = Vec::new();
        for batch in &self.batches {
            let b = BatchView::parse_header(batch).expect("h").base_offset();
            if b >= base && b < next {
                out.push((position, batch.clone()));
                position += batch.len() as u64;
            }
        }
        out
    }
}

fn segment_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(segment_file_name(base, SegmentFile::Log))
}

/// Opens the damaged copy; on success returns every batch it serves.
fn open_and_read(root: &Path) -> Result<Vec<Bytes>, StorageError> {
    run(async {
        let log = open(root, config(), cache(1 << 10), Rc::new(SystemClock)).await?;
        let end = log.log_end();
        let batches = read_all(&log, log.log_start(), end).await;
        log.close().await?;
        batches
    })
}

/// Bytes of a batch header the CRC does not cover and recovery cannot
/// check: the leader epoch (the base offset is checked for continuity).
fn uncovered(offset_in_batch: u64) -> bool {
    (12..16).contains(&offset_in_batch)
}

fn rng_positions(n: usize, below: u64, seed: u64) -> Vec<u64> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % below
        })
        .collect()
}

#[test]
fn cut_active_segment_anywhere_keeps_the_whole_batches_before_the_cut() {
    let fixture = Fixture::build();
    let last = fixture.segments.len() - 1;
    let layout = fixture.layout(last);
    let data_end = layout.last().map_or(0, |(p, b)| p + b.len() as u64);
    let mut cuts: Vec<u64> = layout
        .iter()
        .step_by(3)
        .flat_map(|(p, _)| [*p, p + 1, p + 63, p + 64])
        .collect();
    cuts.extend(rng_positions(25, data_end + 8192, 0x5eed));
    let before: Vec<Bytes> = (0..last)
        .flat_map(|s| fixture.layout(s))
        .map(|(_, b)| b)
        .collect();
    for cut in cuts {
        let (_guard, dir) = fixture.copy();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(segment_path(&dir, fixture.segments[last]))
            .expect("open segment");
        file.set_len(cut).expect("cut");
        let served =
            open_and_read(dir.parent().expect("root")).expect("a cut tail is not corruption");
        let kept = layout
            .iter()
            .filter(|(p, b)| p + b.len() as u64 <= cut)
            .count();
        let mut expected = before.clone();
        expected.extend(layout[..kept].iter().map(|(_, b)| b.clone()));
        assert_eq!(served, expected, "cut at {cut}");
    }
}

#[test]
fn cut_sealed_segment_is_reported_not_hidden() {
    let fixture = Fixture::build();
    let layout = fixture.layout(0);
    let len = layout.last().map_or(0, |(p, b)| p + b.len() as u64);
    for cut in rng_positions(10, len, 0xc0ffee) {
        let (_guard, dir) = fixture.copy();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(segment_path(&dir, fixture.segments[0]))
            .expect("open segment");
        file.set_len(cut).expect("cut");
        // Refused at open, or (a cut after the last index entry) found by
        // the reads: never served as if whole.
        match open_and_read(dir.parent().expect("root")) {
            Err(
                StorageError::Corrupt { .. }
                | StorageError::Inconsistent { .. }
                | StorageError::Damaged { .. },
            ) => {}
            other => panic!(
                "cut of a sealed segment at {cut} gave {:?}",
                other.map(|b| b.len())
            ),
        }
    }
}

#[test]
fn flipped_bits_in_the_active_segment() {
    let fixture = Fixture::build();
    let last = fixture.segments.len() - 1;
    let layout = fixture.layout(last);
    let data_end = layout.last().map_or(0, |(p, b)| p + b.len() as u64);
    let before: Vec<Bytes> = (0..last)
        .flat_map(|s| fixture.layout(s))
        .map(|(_, b)| b)
        .collect();
    let mut reported = 0;
    for (i, position) in rng_positions(60, data_end + 2 * WRITE_BUFFER, 0xb17)
        .into_iter()
        .enumerate()
    {
        let Some(k) = layout.iter().rposition(|(p, _)| *p <= position) else {
            continue;
        };
        let in_batch = position - layout[k].0;
        if position < data_end && uncovered(in_batch) {
            continue;
        }
        let (_guard, dir) = fixture.copy();
        let path = segment_path(&dir, fixture.segments[last]);
        let mut bytes = std::fs::read(&path).expect("read segment");
        if position as usize >= bytes.len() {
            continue;
        }
        bytes[position as usize] ^= 1 << (i % 8);
        std::fs::write(&path, &bytes).expect("write segment");
        let result = open_and_read(dir.parent().expect("root"));
        let base_of = |k: usize| {
            BatchView::parse_header(&layout[k].1)
                .expect("h")
                .base_offset()
        };
        match result {
            Ok(served) => {
                // Only a torn tail may be cut: a flip in the last batch or
                // in the padding within the torn-write window.
                let kept = if position < data_end {
                    assert_eq!(
                        k,
                        layout.len() - 1,
                        "flip at {position} cut valid batches after it"
                    );
                    k
                } else {
                    assert!(
                        position < (data_end + WRITE_BUFFER).next_multiple_of(4096) + 4096,
                        "flip at {position} far past the data went unreported"
                    );
                    layout.len()
                };
                let mut expected = before.clone();
                expected.extend(layout[..kept].iter().map(|(_, b)| b.clone()));
                assert_eq!(
                    served, expected,
                    "flip at {position}: exactly the batches before it"
                );
            }
            Err(StorageError::Damaged { damage, .. }) => {
                assert!(position < data_end, "flip at {position} in the padding");
                assert_eq!(damage.bytes_start, layout[k].0, "flip at {position}");
                assert_eq!(damage.lost_from, base_of(k), "flip at {position}");
                assert!(damage.resume.is_some(), "flip at {position}");
                reported += 1;
            }
            Err(StorageError::Corrupt { position: at, .. }) => {
                assert!(
                    position >= data_end,
                    "flip at {position} inside the data reported as {at}"
                );
                assert!(at <= position.max(data_end), "reported at {at}");
            }
            Err(other) => panic!("flip at {position}: unexpected {other}"),
        }
    }
    assert!(
        reported > 0,
        "flips in batches followed by valid ones are reported"
    );
}

/// Damage in the middle of the active segment keeps the log closed until
/// the operator accepts the loss; `repair_truncate` then cuts at the
/// damage and the log opens with its end there.
#[test]
fn damaged_active_segment_is_refused_until_repaired() {
    let fixture = Fixture::build();
    let last = fixture.segments.len() - 1;
    let layout = fixture.layout(last);
    assert!(layout.len() >= 3, "the active segment has a few batches");
    let (_guard, dir) = fixture.copy();
    let path = segment_path(&dir, fixture.segments[last]);
    let mut bytes = std::fs::read(&path).expect("read segment");
    let damaged = layout[1].0 as usize + 100;
    bytes[damaged..damaged + 16].fill(0xEE);
    std::fs::write(&path, &bytes).expect("write segment");
    let root = dir.parent().expect("root").to_owned();
    let lost_from = BatchView::parse_header(&layout[1].1)
        .expect("h")
        .base_offset();
    let end = fixture.batches.last().map(|b| next_of(b)).expect("batches");
    match open_and_read(&root) {
        Err(StorageError::Damaged { damage, .. }) => {
            assert_eq!(damage.lost_from, lost_from);
            assert_eq!(damage.resume.map(|(p, _)| p), Some(layout[2].0));
            assert_eq!(damage.valid_end, end, "every later batch is at stake");
        }
        other => panic!("damage in the middle gave {:?}", other.map(|b| b.len())),
    }
    // The file is untouched by the refused open.
    assert_eq!(std::fs::read(&path).expect("read"), bytes);
    let past = run(fjord_storage::repair_truncate(
        &dir,
        lost_from.plus(1),
        &config(),
    ));
    assert!(
        matches!(past, Err(StorageError::Inconsistent { .. })),
        "a truncation point past the damage is refused: {past:?}"
    );
    let repaired = run(fjord_storage::repair_truncate(&dir, lost_from, &config())).expect("repair");
    assert_eq!(repaired.log_end, lost_from);
    let served = open_and_read(&root).expect("opens after the repair");
    let mut expected: Vec<Bytes> = (0..last)
        .flat_map(|s| fixture.layout(s))
        .map(|(_, b)| b)
        .collect();
    expected.push(layout[0].1.clone());
    assert_eq!(served, expected);
}

#[test]
fn flipped_bits_in_a_sealed_segment_are_never_served() {
    let fixture = Fixture::build();
    let layout = fixture.layout(0);
    let len = layout.last().map_or(0, |(p, b)| p + b.len() as u64);
    for (i, position) in rng_positions(30, len, 0xfeed).into_iter().enumerate() {
        let Some(k) = layout.iter().rposition(|(p, _)| *p <= position) else {
            continue;
        };
        if uncovered(position - layout[k].0) {
            continue;
        }
        let (_guard, dir) = fixture.copy();
        let path = segment_path(&dir, fixture.segments[0]);
        let mut bytes = std::fs::read(&path).expect("read segment");
        bytes[position as usize] ^= 1 << (i % 8);
        std::fs::write(&path, &bytes).expect("write segment");
        let root = dir.parent().expect("root").to_owned();
        // Open may succeed (sealed segments are trusted through their index
        // and tail); then reading must stop with an error at the damaged
        // batch, having served only intact batches before it.
        let outcome = run(async {
            let log = match open(&root, config(), cache(1 << 10), Rc::new(SystemClock)).await {
                Ok(log) => log,
                Err(e) => return Err(e),
            };
            let mut offset = log.log_start();
            let mut served = Vec::new();
            let result = loop {
                if offset >= log.log_end() {
                    break Ok(served);
                }
                let request = ReadRequest {
                    offset,
                    until: log.log_end(),
                    max_bytes: 1,
                };
                match log.read(request).await {
                    Ok(batches) => {
                        for b in batches {
                            offset = next_of(&b);
                            served.push(b);
                        }
                    }
                    Err(e) => break Err((e, served)),
                }
            };
            log.close().await.expect("close");
            Ok(result)
        });
        match outcome {
            Err(StorageError::Corrupt { .. } | StorageError::Inconsistent { .. }) => {}
            Err(other) => panic!("flip at {position}: unexpected open error {other}"),
            Ok(Ok(_)) => panic!("flip at {position} in a sealed segment was served"),
            Ok(Err((e, served))) => {
                assert!(
                    matches!(e, StorageError::Damaged { .. }),
                    "flip at {position}: {e}"
                );
                assert_eq!(served.len(), k, "only the batches before the damaged one");
                for (got, (_, want)) in served.iter().zip(&layout) {
                    assert_eq!(got, want);
                }
            }
        }
    }
}

/// Reads report every damaged range; the log remembers at most
/// `damaged_ranges_max` of them.
#[test]
fn remembered_damage_is_bounded() {
    let fixture = Fixture::build();
    let layout = fixture.layout(0);
    assert!(layout.len() >= 6, "segment 0 has a few batches");
    let (_guard, dir) = fixture.copy();
    let path = segment_path(&dir, fixture.segments[0]);
    let mut bytes = std::fs::read(&path).expect("read segment");
    for k in [1, 4] {
        bytes[layout[k].0 as usize + 100] ^= 0x40;
    }
    std::fs::write(&path, &bytes).expect("write segment");
    let root = dir.parent().expect("root").to_owned();
    let config = LogConfig {
        damaged_ranges_max: 1,
        ..config()
    };
    run(async {
        let log = open(&root, config, cache(1 << 10), Rc::new(SystemClock))
            .await
            .expect("sealed damage is found by reads, not on open");
        for k in [1, 4] {
            let offset = BatchView::parse_header(&layout[k].1)
                .expect("h")
                .base_offset();
            let request = ReadRequest {
                offset,
                until: log.log_end(),
                max_bytes: 1 << 20,
            };
            match log.read(request).await {
                Err(StorageError::Damaged { damage, .. }) => {
                    assert_eq!(damage.lost_from, offset);
                    assert_eq!(damage.resume.map(|(p, _)| p), Some(layout[k + 1].0));
                }
                other => panic!("read at {offset}: {:?}", other.map(|b| b.len())),
            }
        }
        let damaged = log.damaged();
        assert_eq!(damaged.len(), 1, "bounded by damaged_ranges_max");
        log.close().await.expect("close");
    });
}

/// Damage in the part of a sealed segment that open checks (from the last
/// index entry on): the log opens, lists the damage at once, and reads
/// serve around it.
#[test]
fn damage_in_a_sealed_tail_keeps_the_log_online() {
    let fixture = Fixture::build();
    let layout = fixture.layout(0);
    let base = fixture.segments[0];
    let (_guard, dir) = fixture.copy();
    let index =
        std::fs::read(dir.join(segment_file_name(base, SegmentFile::Index))).expect("index");
    let file_len = layout.last().map_or(0, |(p, b)| p + b.len() as u64);
    let (_, last_indexed) = fjord_storage::index::OffsetIndex::decode(&index, file_len)
        .expect("index decodes")
        .lookup(u32::MAX);
    let k = layout
        .iter()
        .position(|(p, _)| *p >= u64::from(last_indexed))
        .expect("a batch at the last index entry");
    let next = fixture.segments[1];
    let path = segment_path(&dir, base);
    let mut bytes = std::fs::read(&path).expect("read segment");
    bytes[layout[k].0 as usize + 100] ^= 0x08;
    std::fs::write(&path, &bytes).expect("write segment");
    let root = dir.parent().expect("root").to_owned();
    let base_of = |k: usize| {
        layout.get(k).map_or(next, |(_, b)| {
            BatchView::parse_header(b).expect("h").base_offset()
        })
    };
    run(async {
        let log = open(&root, config(), cache(1 << 10), Rc::new(SystemClock))
            .await
            .expect("damage inside a sealed segment does not stop the log");
        let damaged = log.damaged();
        assert_eq!(damaged.len(), 1, "found by the open's tail check");
        assert_eq!(damaged[0].1, base_of(k)..base_of(k + 1));
        let read = |offset| ReadRequest {
            offset,
            until: log.log_end(),
            max_bytes: 1,
        };
        assert!(matches!(
            log.read(read(base_of(k))).await,
            Err(StorageError::Damaged { .. })
        ));
        let after = log
            .read(read(base_of(k + 1)))
            .await
            .expect("after the damage");
        assert_eq!(after.len(), 1, "the batch after the damage");
        assert!(next_of(&after[0]) > base_of(k + 1));
        if k > 0 {
            let before = log.read(read(base_of(k - 1))).await.expect("before");
            assert_eq!(before, vec![layout[k - 1].1.clone()]);
        }
        log.close().await.expect("close");
    });
}
