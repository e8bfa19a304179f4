//! Sparse per-segment indexes, Kafka's layout:
//! - offset index: 8-byte entries `(relative offset u32, position u32)`,
//!   little-endian; the first batch of a segment is always entry 0 and
//!   another entry follows every `index_interval_bytes` of batches;
//! - time index: 12-byte entries `(max timestamp so far i64, relative
//!   offset u32)`, added when the segment's max timestamp grew and an
//!   interval passed, so timestamps are strictly increasing.
//!
//! Entries always point at batch starts. The active segment keeps its
//! indexes in memory only (recovery rebuilds them from the data); a segment
//! writes both files when it is sealed.

use fjord_schema::Offset;

pub const OFFSET_ENTRY_BYTES: usize = 8;
pub const TIME_ENTRY_BYTES: usize = 12;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OffsetIndex {
    entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn push(&mut self, relative_offset: u32, position: u32) {
        if let Some(&(last_offset, last_position)) = self.entries.last() {
            assert!(relative_offset > last_offset, "offset index not increasing");
            assert!(
                position > last_position,
                "offset index positions not increasing"
            );
        } else {
            assert_eq!(position, 0, "first index entry must be the first batch");
        }
        self.entries.push((relative_offset, position));
    }

    /// Position of the last indexed batch whose base is at or below
    /// `relative_offset`: where a scan for it starts.
    pub fn lookup(&self, relative_offset: u32) -> (u32, u32) {
        let after = self.entries.partition_point(|&(o, _)| o <= relative_offset);
        match after {
            0 => (0, 0),
            n => self.entries[n - 1],
        }
    }

    /// Drops entries at or past `position` (the data there was cut).
    pub fn truncate_to_position(&mut self, position: u32) {
        let keep = self.entries.partition_point(|&(_, p)| p < position);
        self.entries.truncate(keep);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * OFFSET_ENTRY_BYTES);
        for &(offset, position) in &self.entries {
            out.extend_from_slice(&offset.to_le_bytes());
            out.extend_from_slice(&position.to_le_bytes());
        }
        out
    }

    /// Decodes an index file and checks it against the segment it belongs
    /// to; `None` means "do not trust it, rebuild from the data".
    pub fn decode(bytes: &[u8], segment_bytes: u64) -> Option<OffsetIndex> {
        if bytes.len() % OFFSET_ENTRY_BYTES != 0 || (bytes.is_empty() && segment_bytes > 0) {
            return None;
        }
        let mut index = OffsetIndex::default();
        for chunk in bytes.chunks_exact(OFFSET_ENTRY_BYTES) {
            let offset = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let position = u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
            let valid = match index.entries.last() {
                None => position == 0,
                Some(&(o, p)) => offset > o && position > p,
            };
            if !valid || u64::from(position) >= segment_bytes {
                return None;
            }
            index.entries.push((offset, position));
        }
        Some(index)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimeIndex {
    entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn last(&self) -> Option<(i64, u32)> {
        self.entries.last().copied()
    }

    pub fn push(&mut self, timestamp: i64, relative_offset: u32) {
        if let Some(&(last_ts, last_offset)) = self.entries.last() {
            assert!(timestamp > last_ts, "time index not increasing");
            assert!(
                relative_offset > last_offset,
                "time index offsets not increasing"
            );
        }
        self.entries.push((timestamp, relative_offset));
    }

    /// Relative offset of the batch from which a scan for the first batch
    /// with `max_timestamp >= timestamp` must start: the last entry whose
    /// timestamp is strictly below it (every batch before that entry has a
    /// smaller max timestamp), or the segment start.
    pub fn lookup(&self, timestamp: i64) -> u32 {
        let below = self.entries.partition_point(|&(t, _)| t < timestamp);
        match below {
            0 => 0,
            n => self.entries[n - 1].1,
        }
    }

    pub fn truncate_to_offset(&mut self, relative_offset: u32) {
        let keep = self.entries.partition_point(|&(_, o)| o < relative_offset);
        self.entries.truncate(keep);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * TIME_ENTRY_BYTES);
        for &(timestamp, offset) in &self.entries {
            out.extend_from_slice(&timestamp.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
        }
        out
    }

    /// `None` means "do not trust it, rebuild from the data". `next` is the
    /// segment's end offset (relative), which every entry must be below.
    pub fn decode(bytes: &[u8], relative_next: u64) -> Option<TimeIndex> {
        if bytes.len() % TIME_ENTRY_BYTES != 0 || (bytes.is_empty() && relative_next > 0) {
            return None;
        }
        let mut index = TimeIndex::default();
        for chunk in bytes.chunks_exact(TIME_ENTRY_BYTES) {
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&chunk[..8]);
            let timestamp = i64::from_le_bytes(ts);
            let offset = u32::from_le_bytes([chunk[8], chunk[9], chunk[10], chunk[11]]);
            let valid = index
                .entries
                .last()
                .is_none_or(|&(t, o)| timestamp > t && offset > o);
            if !valid || u64::from(offset) >= relative_next {
                return None;
            }
            index.entries.push((timestamp, offset));
        }
        Some(index)
    }
}

/// Relative offset of `offset` within a segment based at `base`.
pub fn relative(base: Offset, offset: Offset) -> u32 {
    assert!(offset >= base, "offset below segment base");
    let delta = offset.get() - base.get();
    assert!(
        delta <= u64::from(u32::MAX),
        "segment spans more than 2^32 offsets"
    );
    delta as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_index_lookup_and_round_trip() {
        let mut index = OffsetIndex::default();
        index.push(0, 0);
        index.push(10, 4096);
        index.push(25, 9000);
        assert_eq!(index.lookup(0), (0, 0));
        assert_eq!(index.lookup(9), (0, 0));
        assert_eq!(index.lookup(10), (10, 4096));
        assert_eq!(index.lookup(1000), (25, 9000));
        let decoded = OffsetIndex::decode(&index.encode(), 10_000);
        assert_eq!(decoded.as_ref(), Some(&index));
        assert_eq!(
            OffsetIndex::decode(&index.encode(), 9000),
            None,
            "position past data"
        );
        assert_eq!(OffsetIndex::decode(&index.encode()[..7], 10_000), None);
        index.truncate_to_position(4096);
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn offset_index_rejects_unordered_entries() {
        let mut bytes = Vec::new();
        for (o, p) in [(0u32, 0u32), (5, 100), (4, 200)] {
            bytes.extend_from_slice(&o.to_le_bytes());
            bytes.extend_from_slice(&p.to_le_bytes());
        }
        assert_eq!(OffsetIndex::decode(&bytes, 1000), None);
    }

    #[test]
    fn time_index_lookup_and_round_trip() {
        let mut index = TimeIndex::default();
        index.push(100, 0);
        index.push(200, 5);
        index.push(300, 9);
        assert_eq!(index.lookup(50), 0);
        assert_eq!(index.lookup(100), 0);
        assert_eq!(index.lookup(201), 5);
        assert_eq!(index.lookup(200), 0);
        assert_eq!(index.lookup(10_000), 9);
        assert_eq!(
            TimeIndex::decode(&index.encode(), 10).as_ref(),
            Some(&index)
        );
        assert_eq!(TimeIndex::decode(&index.encode(), 9), None);
        index.truncate_to_offset(5);
        assert_eq!(index.last(), Some((100, 0)));
    }
}
