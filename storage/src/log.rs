//! The sans-IO core of a partition log: segment bookkeeping, index
//! maintenance, roll / retention / truncation decisions, and the scans that
//! recovery and reads run over bytes the driver fetched. No files, no
//! clock: the driver passes bytes and `now_ms` in, and does what the core
//! decides. Everything here runs in plain unit and property tests.

use fjord_schema::batch::{BatchView, BATCH_MAGIC};
use fjord_schema::{BatchHeader, Offset};

use crate::config::LogConfig;
use crate::error::CorruptionKind;
use crate::index::{relative, OffsetIndex, TimeIndex};

/// What the log knows about one segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentMeta {
    pub base: Offset,
    /// Offset after the segment's last batch (`base` when empty).
    pub next: Offset,
    /// Bytes of valid batches; the data ends here.
    pub bytes: u64,
    /// Newest batch `max_timestamp` in the segment, `i64::MIN` when empty.
    pub max_timestamp: i64,
    pub offset_index: OffsetIndex,
    pub time_index: TimeIndex,
    /// Wall-clock ms of the first append since the segment became active in
    /// this process (drives `segment_age_ms_max`).
    pub active_since_ms: Option<i64>,
    /// Sealed segments are immutable and have index files on disk.
    pub sealed: bool,
    max_timestamp_offset: u32,
    offset_indexed_at: u64,
    time_indexed_at: u64,
}

impl SegmentMeta {
    pub fn empty(base: Offset) -> SegmentMeta {
        SegmentMeta {
            base,
            next: base,
            bytes: 0,
            max_timestamp: i64::MIN,
            offset_index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            active_since_ms: None,
            sealed: false,
            max_timestamp_offset: 0,
            offset_indexed_at: 0,
            time_indexed_at: 0,
        }
    }

    /// A sealed segment described by its index files, trusted without a
    /// scan (its batches are still CRC-checked whenever they are read).
    pub fn sealed_from_indexes(
        base: Offset,
        next: Offset,
        bytes: u64,
        offset_index: OffsetIndex,
        time_index: TimeIndex,
    ) -> SegmentMeta {
        let (max_timestamp, max_timestamp_offset) = time_index.last().unwrap_or((i64::MIN, 0));
        SegmentMeta {
            base,
            next,
            bytes,
            max_timestamp,
            offset_index,
            time_index,
            active_since_ms: None,
            sealed: true,
            max_timestamp_offset,
            offset_indexed_at: bytes,
            time_indexed_at: bytes,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// The last offset-index entry as `(offset, position)`: where a tail
    /// check starts.
    pub fn last_indexed(&self) -> (Offset, u64) {
        let (rel, position) = self.offset_index.lookup(u32::MAX);
        (self.base.plus(u64::from(rel)), u64::from(position))
    }

    /// Accounts for a verified batch placed at the segment's end.
    pub fn push_batch(&mut self, header: &BatchHeader, index_interval_bytes: u64) {
        assert!(!self.sealed, "append to a sealed segment");
        assert_eq!(
            header.base_offset(),
            self.next,
            "batch does not continue the segment"
        );
        let position = self.bytes;
        let len = header.batch_len() as u64;
        let rel = relative(self.base, header.base_offset());
        if position == 0 || position - self.offset_indexed_at >= index_interval_bytes {
            self.offset_index.push(rel, position as u32);
            self.offset_indexed_at = position;
        }
        let max_ts = header.max_timestamp.get();
        if max_ts > self.max_timestamp {
            if self.time_index.is_empty() || position - self.time_indexed_at >= index_interval_bytes
            {
                self.time_index.push(max_ts, rel);
                self.time_indexed_at = position;
            }
            self.max_timestamp = max_ts;
            self.max_timestamp_offset = rel;
        }
        self.bytes = position + len;
        self.next = header.next_offset();
    }

    /// Makes the segment immutable; the time index gets a final entry for
    /// the max timestamp so a reopened log knows it without a scan.
    pub fn seal(&mut self) {
        assert!(!self.sealed, "segment sealed twice");
        if let Some(timestamp) = (self.max_timestamp != i64::MIN).then_some(self.max_timestamp) {
            if self.time_index.last().is_none_or(|(t, _)| t < timestamp) {
                self.time_index.push(timestamp, self.max_timestamp_offset);
            }
        }
        self.sealed = true;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RollReason {
    Size,
    Age,
}

/// Where a read or a search starts: a segment and a batch start in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadStart {
    pub segment_base: Offset,
    pub position: u64,
    /// Base offset of the batch at `position`.
    pub offset: Offset,
    /// End of the segment's data.
    pub segment_bytes: u64,
}

/// What truncating to an offset does to the segments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TruncatePlan {
    /// Segments to delete whole, newest first (so a crash leaves a
    /// contiguous prefix).
    pub remove: Vec<Offset>,
    pub cut: Cut,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// Cut this segment at the first batch whose last offset is at or past
    /// `offset`; the scan for it starts at `scan_from`.
    Segment {
        base: Offset,
        scan_from: u64,
        offset: Offset,
    },
    /// Every segment goes; the log restarts empty at `base` (a follower
    /// truncating below the log start).
    Reset { base: Offset },
}

/// Segment bookkeeping of one partition log. Invariant: segments are sorted,
/// contiguous (`segments[i].next == segments[i + 1].base`), never empty as a
/// list, and only the last one is unsealed.
#[derive(Debug)]
pub struct LogCore {
    config: LogConfig,
    segments: Vec<SegmentMeta>,
}

impl LogCore {
    pub fn new(config: LogConfig, segments: Vec<SegmentMeta>) -> LogCore {
        assert!(!segments.is_empty(), "a log has at least one segment");
        for pair in segments.windows(2) {
            assert_eq!(pair[0].next, pair[1].base, "segments not contiguous");
            assert!(pair[0].sealed, "only the last segment may be active");
        }
        assert!(
            !segments[segments.len() - 1].sealed,
            "the last segment is active"
        );
        LogCore { config, segments }
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// New limits; they apply from the next roll / push / retention plan.
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    pub fn segments(&self) -> &[SegmentMeta] {
        &self.segments
    }

    pub fn active(&self) -> &SegmentMeta {
        &self.segments[self.segments.len() - 1]
    }

    /// First offset still in the log.
    pub fn log_start(&self) -> Offset {
        self.segments[0].base
    }

    /// Offset the next appended batch gets.
    pub fn log_end(&self) -> Offset {
        self.active().next
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    pub fn roll_needed(&self, batch_len: usize, now_ms: i64) -> Option<RollReason> {
        let active = self.active();
        if active.is_empty() {
            return None;
        }
        if active.bytes + batch_len as u64 > self.config.segment_bytes_max {
            return Some(RollReason::Size);
        }
        let age_max = self.config.segment_age_ms_max?;
        let since = active.active_since_ms?;
        (now_ms.saturating_sub(since) >= age_max as i64).then_some(RollReason::Age)
    }

    /// Seals the active segment and starts a new empty one at the log end;
    /// returns the new base offset.
    pub fn roll(&mut self) -> Offset {
        let base = self.log_end();
        let last = self.segments.len() - 1;
        assert!(!self.segments[last].is_empty(), "rolling an empty segment");
        self.segments[last].seal();
        self.segments.push(SegmentMeta::empty(base));
        base
    }

    /// Accounts for a batch appended to the active segment; returns its
    /// position there.
    pub fn push_batch(&mut self, header: &BatchHeader, now_ms: i64) -> u64 {
        let interval = self.config.index_interval_bytes;
        let last = self.segments.len() - 1;
        let active = &mut self.segments[last];
        let position = active.bytes;
        active.push_batch(header, interval);
        active.active_since_ms.get_or_insert(now_ms);
        position
    }

    fn segment_index(&self, offset: Offset) -> usize {
        self.segments.partition_point(|s| s.base <= offset) - 1
    }

    /// Where the batch holding `offset` starts to be searched; `None` when
    /// `offset` is outside `[log_start, log_end)`.
    pub fn read_start(&self, offset: Offset) -> Option<ReadStart> {
        if offset < self.log_start() || offset >= self.log_end() {
            return None;
        }
        let mut i = self.segment_index(offset);
        // Empty segments hold no offsets; the next non-empty one does.
        while self.segments[i].next <= offset {
            i += 1;
        }
        let segment = &self.segments[i];
        let (rel, position) = segment.offset_index.lookup(relative(segment.base, offset));
        Some(ReadStart {
            segment_base: segment.base,
            position: u64::from(position),
            offset: segment.base.plus(u64::from(rel)),
            segment_bytes: segment.bytes,
        })
    }

    /// The segment following the one based at `base`, for reads that
    /// continue across a segment boundary.
    pub fn next_segment_start(&self, base: Offset) -> Option<ReadStart> {
        let i = self.segments.iter().position(|s| s.base == base)?;
        let next = self.segments[i + 1..].iter().find(|s| !s.is_empty())?;
        Some(ReadStart {
            segment_base: next.base,
            position: 0,
            offset: next.base,
            segment_bytes: next.bytes,
        })
    }

    /// The offset from which a scan for the first batch with
    /// `max_timestamp >= timestamp` starts; `None` when no batch is that new.
    pub fn time_lookup_start(&self, timestamp: i64) -> Option<Offset> {
        let segment = self
            .segments
            .iter()
            .find(|s| !s.is_empty() && s.max_timestamp >= timestamp)?;
        Some(
            segment
                .base
                .plus(u64::from(segment.time_index.lookup(timestamp))),
        )
    }

    /// Sealed segments retention deletes now, oldest first. The active
    /// segment is never deleted (roll it first if it must go).
    pub fn retention_plan(&self, now_ms: i64) -> Vec<Offset> {
        let sealed = &self.segments[..self.segments.len() - 1];
        let mut remove = 0;
        if let Some(retention_ms) = self.config.retention_ms {
            let horizon = now_ms.saturating_sub(retention_ms as i64);
            remove = sealed
                .iter()
                .take_while(|s| s.max_timestamp < horizon)
                .count();
        }
        if let Some(bytes_max) = self.config.retention_bytes {
            let mut size: u64 = self.size_bytes();
            size -= sealed[..remove].iter().map(|s| s.bytes).sum::<u64>();
            while remove < sealed.len()
                && size > bytes_max
                && size - sealed[remove].bytes >= bytes_max
            {
                size -= sealed[remove].bytes;
                remove += 1;
            }
        }
        sealed[..remove].iter().map(|s| s.base).collect()
    }

    /// Forgets the oldest segment after the driver deleted its files.
    pub fn remove_oldest(&mut self, base: Offset) {
        assert!(self.segments.len() > 1, "removing the active segment");
        assert_eq!(
            self.segments[0].base, base,
            "retention removes the oldest segment"
        );
        self.segments.remove(0);
    }

    /// Plans truncation to `offset` (everything at or after it goes, whole
    /// batches: a batch holding `offset` goes entirely). `None` if there is
    /// nothing to cut.
    pub fn truncate_plan(&self, offset: Offset) -> Option<TruncatePlan> {
        if offset >= self.log_end() {
            return None;
        }
        if offset < self.log_start() {
            let remove = self.segments.iter().rev().map(|s| s.base).collect();
            return Some(TruncatePlan {
                remove,
                cut: Cut::Reset { base: offset },
            });
        }
        let keep = self.segment_index(offset);
        let remove = self.segments[keep + 1..]
            .iter()
            .rev()
            .map(|s| s.base)
            .collect();
        let segment = &self.segments[keep];
        let (_, position) = segment.offset_index.lookup(relative(segment.base, offset));
        Some(TruncatePlan {
            remove,
            cut: Cut::Segment {
                base: segment.base,
                scan_from: u64::from(position),
                offset,
            },
        })
    }

    /// A plan removing every segment and restarting the log empty at
    /// `offset`, which may be past the log end (a follower whose leader's
    /// log starts past everything it has). `None` when the log is empty at
    /// `offset` already.
    pub fn reset_plan(&self, offset: Offset) -> Option<TruncatePlan> {
        if self.log_start() == offset && self.log_end() == offset {
            return None;
        }
        Some(TruncatePlan {
            remove: self.segments.iter().rev().map(|s| s.base).collect(),
            cut: Cut::Reset { base: offset },
        })
    }

    /// Applies a truncation: the segments after the cut one are gone and
    /// `active` is the cut segment rebuilt by a scan (or a fresh empty one
    /// for [`Cut::Reset`]).
    pub fn apply_truncate(&mut self, active: SegmentMeta) {
        assert!(
            !active.sealed,
            "the truncated segment becomes the active one"
        );
        let keep = self.segments.partition_point(|s| s.base < active.base);
        self.segments.truncate(keep);
        if let Some(last) = self.segments.last() {
            assert_eq!(last.next, active.base, "truncation broke contiguity");
        }
        self.segments.push(active);
    }

    /// Applies a [`Cut::Reset`]: every segment is gone and `active` (empty)
    /// is the log.
    pub fn apply_reset(&mut self, active: SegmentMeta) {
        assert!(!active.sealed && active.bytes == 0, "a reset starts empty");
        self.segments.clear();
        self.segments.push(active);
    }

    /// Marks the active segment as active since `now_ms` (on open).
    pub fn set_active_since(&mut self, now_ms: i64) {
        let last = self.segments.len() - 1;
        self.segments[last].active_since_ms = Some(now_ms);
    }
}

/// Outcome of [`SegmentScanner::scan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanStep {
    /// The next batch needs bytes `[from, from + len)` of the file.
    NeedMore { from: u64, len: usize },
    /// Reached `limit` exactly: everything before it is valid.
    Limit,
    /// No valid batch at `position`. `kind` is `None` for zero padding.
    Stop {
        position: u64,
        kind: Option<CorruptionKind>,
    },
}

/// Rebuilds a segment's metadata by verifying its batches one by one
/// (header, base offset continuity, length, CRC32C): recovery on open,
/// segments with missing or bad index files, and truncation use it.
#[derive(Debug)]
pub struct SegmentScanner {
    meta: SegmentMeta,
    index_interval_bytes: u64,
}

impl SegmentScanner {
    pub fn new(base: Offset, index_interval_bytes: u64) -> SegmentScanner {
        SegmentScanner {
            meta: SegmentMeta::empty(base),
            index_interval_bytes,
        }
    }

    /// File position of the next batch to verify.
    pub fn position(&self) -> u64 {
        self.meta.bytes
    }

    /// Verifies whole batches in `window` (file bytes starting at
    /// `window_pos`, which must not be past [`Self::position`]) until the
    /// window runs out, a batch fails, or `limit` (a position or offset
    /// bound) is reached.
    pub fn scan(&mut self, window: &[u8], window_pos: u64, limit: ScanLimit) -> ScanStep {
        assert!(
            window_pos <= self.position(),
            "window starts after the scan position"
        );
        loop {
            let position = self.position();
            match limit {
                ScanLimit::Position(p) if position >= p => {
                    assert_eq!(position, p, "scan overshot its limit");
                    return ScanStep::Limit;
                }
                _ => {}
            }
            let start = (position - window_pos) as usize;
            let rest = window.get(start..).unwrap_or(&[]);
            let header_len = fjord_schema::batch::BATCH_HEADER_LEN;
            if rest.len() < header_len {
                return ScanStep::NeedMore {
                    from: position,
                    len: header_len,
                };
            }
            if rest[..header_len].iter().all(|&b| b == 0) {
                return ScanStep::Stop {
                    position,
                    kind: None,
                };
            }
            let header = match BatchView::parse_header(rest) {
                Ok(header) => header,
                Err(e) => {
                    return ScanStep::Stop {
                        position,
                        kind: Some(e.into()),
                    }
                }
            };
            if header.base_offset() != self.meta.next {
                return ScanStep::Stop {
                    position,
                    kind: Some(CorruptionKind::OffsetGap {
                        expected: self.meta.next,
                        found: header.base_offset(),
                    }),
                };
            }
            let len = header.batch_len();
            if let ScanLimit::Position(p) = limit {
                if position + len as u64 > p {
                    return ScanStep::Stop {
                        position,
                        kind: Some(CorruptionKind::PastEnd { len }),
                    };
                }
            }
            if rest.len() < len {
                return ScanStep::NeedMore {
                    from: position,
                    len,
                };
            }
            match BatchView::parse(&rest[..len]) {
                Ok((view, _)) => {
                    if let ScanLimit::Offset(o) = limit {
                        // Truncation: stop before the batch holding `o`.
                        if view.header().next_offset() > o {
                            return ScanStep::Limit;
                        }
                    }
                    self.meta
                        .push_batch(view.header(), self.index_interval_bytes);
                }
                Err(e) => {
                    return ScanStep::Stop {
                        position,
                        kind: Some(e.into()),
                    }
                }
            }
        }
    }

    pub fn finish(self) -> SegmentMeta {
        self.meta
    }
}

/// Where a scan stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanLimit {
    /// Known end of valid data (a sealed segment's file length).
    Position(u64),
    /// Stop before the batch whose last offset reaches this offset
    /// (truncation).
    Offset(Offset),
    /// Scan until the data stops (the active segment on recovery).
    None,
}

/// Verifies the batches of `window` (file bytes from `window_pos`) from
/// `position`, where a batch with base offset `expected` starts, up to
/// exactly `end`; returns the offset after the last batch, or where the
/// batch that failed starts and the base offset it should have had.
/// Opening a sealed segment checks its tail this way instead of trusting
/// the index alone.
pub fn verify_tail(
    window: &[u8],
    window_pos: u64,
    mut position: u64,
    mut expected: Offset,
    end: u64,
) -> Result<Offset, (u64, Offset, CorruptionKind)> {
    while position < end {
        let start = (position - window_pos) as usize;
        let rest = window
            .get(start..(end - window_pos) as usize)
            .unwrap_or(&[]);
        let (view, _) = BatchView::parse(rest).map_err(|e| (position, expected, e.into()))?;
        let found = view.header().base_offset();
        if found != expected {
            return Err((
                position,
                expected,
                CorruptionKind::OffsetGap { expected, found },
            ));
        }
        expected = view.header().next_offset();
        position += view.as_bytes().len() as u64;
    }
    Ok(expected)
}

/// Outcome of [`collect_batches`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Collect {
    /// Byte ranges (relative to the window) of whole verified batches, and
    /// whether the read is complete (budget or limit reached) or may
    /// continue at `next_position`, where the batch with base offset
    /// `next_offset` starts.
    Batches {
        ranges: Vec<std::ops::Range<usize>>,
        next_position: u64,
        next_offset: Offset,
        bytes: usize,
        done: bool,
    },
    /// The first wanted batch is not whole in the window: read
    /// `[from, from + len)` and call again with `offset`, the base offset
    /// of the batch at `from`.
    NeedMore {
        from: u64,
        len: usize,
        offset: Offset,
    },
    /// The batch at `position`, which should have base offset `expected`,
    /// fails verification.
    Corrupt {
        position: u64,
        expected: Offset,
        kind: CorruptionKind,
    },
}

/// What a read asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadRequest {
    /// Start at the batch holding this offset.
    pub offset: Offset,
    /// Stop before batches whose base offset is at or past this one (the
    /// high watermark, or the log end).
    pub until: Offset,
    /// Byte budget; the first batch is returned even when it is bigger, so
    /// a consumer always makes progress.
    pub max_bytes: usize,
}

/// Picks whole, CRC-verified batches out of `window` (segment bytes from
/// `window_pos`, starting at a batch boundary `position` where the batch
/// with base offset `expected` starts) for a read. `already` is the byte
/// count earlier calls of the same read returned.
pub fn collect_batches(
    window: &[u8],
    window_pos: u64,
    mut position: u64,
    mut expected: Offset,
    data_end: u64,
    request: &ReadRequest,
    already: usize,
) -> Collect {
    let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
    let mut bytes = already;
    // The good batches before damage are served first; the next read
    // starts at the damage and reports it.
    let corrupt = |ranges: Vec<std::ops::Range<usize>>, bytes, position, expected, kind| {
        if ranges.is_empty() {
            Collect::Corrupt {
                position,
                expected,
                kind,
            }
        } else {
            Collect::Batches {
                ranges,
                next_position: position,
                next_offset: expected,
                bytes,
                done: true,
            }
        }
    };
    loop {
        if position >= data_end {
            return Collect::Batches {
                ranges,
                next_position: position,
                next_offset: expected,
                bytes,
                done: false,
            };
        }
        let start = (position - window_pos) as usize;
        let rest = window.get(start..).unwrap_or(&[]);
        let header = match BatchView::parse_header(rest) {
            Ok(header) => header,
            Err(fjord_schema::BatchError::Truncated { .. }) => {
                return need_more(
                    ranges,
                    position,
                    expected,
                    bytes,
                    fjord_schema::batch::BATCH_HEADER_LEN,
                )
            }
            Err(e) => return corrupt(ranges, bytes, position, expected, e.into()),
        };
        let len = header.batch_len();
        if header.base_offset() != expected {
            let found = header.base_offset();
            return corrupt(
                ranges,
                bytes,
                position,
                expected,
                CorruptionKind::OffsetGap { expected, found },
            );
        }
        if position + len as u64 > data_end {
            return corrupt(
                ranges,
                bytes,
                position,
                expected,
                CorruptionKind::PastEnd { len },
            );
        }
        if header.base_offset() >= request.until {
            return Collect::Batches {
                ranges,
                next_position: position,
                next_offset: expected,
                bytes,
                done: true,
            };
        }
        let wanted = header.next_offset() > request.offset;
        if wanted && bytes > 0 && bytes + len > request.max_bytes {
            return Collect::Batches {
                ranges,
                next_position: position,
                next_offset: expected,
                bytes,
                done: true,
            };
        }
        if rest.len() < len {
            return need_more(ranges, position, expected, bytes, len);
        }
        let next_offset = header.next_offset();
        if let Err(e) = BatchView::parse(&rest[..len]) {
            return corrupt(ranges, bytes, position, expected, e.into());
        }
        if wanted {
            ranges.push(start..start + len);
            bytes += len;
        }
        position += len as u64;
        expected = next_offset;
    }
}

fn need_more(
    ranges: Vec<std::ops::Range<usize>>,
    position: u64,
    offset: Offset,
    bytes: usize,
    len: usize,
) -> Collect {
    if ranges.is_empty() {
        Collect::NeedMore {
            from: position,
            len,
            offset,
        }
    } else {
        Collect::Batches {
            ranges,
            next_position: position,
            next_offset: offset,
            bytes,
            done: false,
        }
    }
}

/// Damaged bytes in a segment and what they put at stake: the batches from
/// `lost_from` on fail verification, and `resume` (when some) is the first
/// valid batch after them — acknowledged data that must not be cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Damage {
    /// Base offset of the segment.
    pub segment_base: Offset,
    /// First damaged byte (where the last good batch ends).
    pub bytes_start: u64,
    /// First byte after the damage: the position of `resume`'s batch, or
    /// the end of the scanned data when nothing valid follows.
    pub bytes_end: u64,
    /// First offset whose batch is damaged.
    pub lost_from: Offset,
    /// Position and base offset of the first valid batch after the damage.
    pub resume: Option<(u64, Offset)>,
    /// Offset after the last valid batch found after the damage
    /// (`lost_from` when there is none).
    pub valid_end: Offset,
}

impl Damage {
    /// Offsets that cannot be served: `[lost_from, end)` where `end` is the
    /// resume offset, or `segment_next` (the next segment's base, or the
    /// log end) when nothing valid follows.
    pub fn lost_offsets(&self, segment_next: Offset) -> std::ops::Range<Offset> {
        let end = self.resume.map_or(segment_next, |(_, offset)| offset);
        self.lost_from..end.max(self.lost_from)
    }
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "bytes {}..{} of segment {} fail verification from offset {}",
            self.bytes_start, self.bytes_end, self.segment_base, self.lost_from
        )?;
        match self.resume {
            Some((position, offset)) => write!(
                f,
                "; valid batches follow at byte {position} (offsets {offset}..{})",
                self.valid_end
            ),
            None => write!(f, "; no valid batch follows"),
        }
    }
}

/// Where the format version byte sits in a batch header.
const MAGIC_AT: usize = std::mem::offset_of!(BatchHeader, magic);
const _: () = assert!(MAGIC_AT < fjord_schema::batch::BATCH_HEADER_LEN);

/// Outcome of [`SalvageScanner::scan`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SalvageStep {
    /// Bytes `[from, from + len)` are needed next.
    NeedMore { from: u64, len: usize },
    /// Reached the end of the data.
    Done,
}

/// After a batch fails verification, looks byte by byte for valid batches
/// behind it: a batch header, a base offset at or past the lost one (the
/// log's offsets only grow) and a good CRC32C. Finding one tells
/// corruption of acknowledged data from a torn tail, which has nothing
/// valid after it.
#[derive(Debug)]
pub struct SalvageScanner {
    damage: Damage,
    position: u64,
    expected: Offset,
}

impl SalvageScanner {
    /// The batch at `position` in segment `segment_base`, which should have
    /// had base offset `lost_from`, failed verification.
    pub fn new(segment_base: Offset, position: u64, lost_from: Offset) -> SalvageScanner {
        SalvageScanner {
            damage: Damage {
                segment_base,
                bytes_start: position,
                bytes_end: position,
                lost_from,
                resume: None,
                valid_end: lost_from,
            },
            position,
            expected: lost_from,
        }
    }

    /// File position the scan looks at next.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Scans `window` (file bytes from `window_pos`, not past
    /// [`Self::position`]) up to `end`, the end of the data.
    pub fn scan(&mut self, window: &[u8], window_pos: u64, end: u64) -> SalvageStep {
        assert!(
            window_pos <= self.position,
            "window starts after the salvage position"
        );
        let header_len = fjord_schema::batch::BATCH_HEADER_LEN;
        loop {
            let position = self.position;
            if position + header_len as u64 > end {
                return SalvageStep::Done;
            }
            let start = (position - window_pos) as usize;
            let rest = window.get(start..).unwrap_or(&[]);
            if rest.len() < header_len {
                return SalvageStep::NeedMore {
                    from: position,
                    len: header_len,
                };
            }
            // A batch starts `MAGIC_AT` bytes before a magic byte: jump
            // to the next such candidate, so zero padding and garbage cost
            // one byte comparison each.
            let candidates = &rest[MAGIC_AT..];
            match candidates.iter().position(|&b| b == BATCH_MAGIC) {
                Some(0) => {}
                Some(skip) => {
                    self.position += skip as u64;
                    continue;
                }
                None => {
                    self.position += candidates.len() as u64;
                    continue;
                }
            }
            if let Ok(header) = BatchView::parse_header(rest) {
                let len = header.batch_len();
                let plausible =
                    header.base_offset() >= self.expected && position + len as u64 <= end;
                if plausible {
                    if rest.len() < len {
                        return SalvageStep::NeedMore {
                            from: position,
                            len,
                        };
                    }
                    if let Ok((view, _)) = BatchView::parse(&rest[..len]) {
                        let base = view.header().base_offset();
                        if self.damage.resume.is_none() {
                            self.damage.resume = Some((position, base));
                            self.damage.bytes_end = position;
                        }
                        self.expected = view.header().next_offset();
                        self.damage.valid_end = self.expected;
                        self.position += len as u64;
                        continue;
                    }
                }
            }
            self.position += 1;
        }
    }

    /// The damage found; `end` is where the scan stopped (the end of the
    /// data), the damaged range's end when nothing valid follows.
    pub fn finish(mut self, end: u64) -> Damage {
        if self.damage.resume.is_none() {
            self.damage.bytes_end = end.max(self.damage.bytes_start);
        }
        self.damage
    }
}

#[cfg(test)]
mod tests;
