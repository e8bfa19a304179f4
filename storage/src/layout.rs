//! On-disk naming and alignment: `<data>/<topic>-<partition>/` holding
//! segments `<20-digit base offset>.log` with `.index` and `.timeindex`
//! beside them, as Kafka operators expect.

use fjord_schema::{Offset, PartitionId};

/// Direct-I/O block: every write and read position and length is a multiple.
pub const BLOCK_BYTES: u64 = 4096;
const _: () = assert!(BLOCK_BYTES.is_power_of_two());

/// The three files of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SegmentFile {
    Log,
    Index,
    TimeIndex,
}

impl SegmentFile {
    pub fn extension(self) -> &'static str {
        match self {
            SegmentFile::Log => "log",
            SegmentFile::Index => "index",
            SegmentFile::TimeIndex => "timeindex",
        }
    }
}

/// `<topic>-<partition>`.
pub fn partition_dir_name(topic: &str, partition: PartitionId) -> String {
    assert!(!topic.is_empty(), "empty topic name");
    assert!(!topic.contains('/'), "topic name with a slash");
    format!("{topic}-{}", partition.get())
}

/// `00000000000000000042.log` for base offset 42.
pub fn segment_file_name(base: Offset, kind: SegmentFile) -> String {
    format!("{:020}.{}", base.get(), kind.extension())
}

/// The inverse of [`segment_file_name`]; `None` for any other file.
pub fn parse_segment_file_name(name: &str) -> Option<(Offset, SegmentFile)> {
    let (stem, extension) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let kind = match extension {
        "log" => SegmentFile::Log,
        "index" => SegmentFile::Index,
        "timeindex" => SegmentFile::TimeIndex,
        _ => return None,
    };
    Some((Offset(stem.parse().ok()?), kind))
}

pub fn align_down(value: u64) -> u64 {
    value & !(BLOCK_BYTES - 1)
}

pub fn align_up(value: u64) -> u64 {
    align_down(value + BLOCK_BYTES - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in [SegmentFile::Log, SegmentFile::Index, SegmentFile::TimeIndex] {
            let name = segment_file_name(Offset(42), kind);
            assert_eq!(name.len(), 21 + kind.extension().len());
            assert_eq!(parse_segment_file_name(&name), Some((Offset(42), kind)));
        }
        assert_eq!(
            segment_file_name(Offset(7), SegmentFile::Log),
            "00000000000000000007.log"
        );
        assert_eq!(parse_segment_file_name("0000000000000000007.log"), None);
        assert_eq!(parse_segment_file_name("00000000000000000007.tmp"), None);
        assert_eq!(parse_segment_file_name("0000000000000000000x.log"), None);
        assert_eq!(partition_dir_name("orders", PartitionId(3)), "orders-3");
    }

    #[test]
    fn alignment() {
        assert_eq!(align_down(4097), 4096);
        assert_eq!(align_up(4097), 8192);
        assert_eq!(align_up(4096), 4096);
        assert_eq!(align_up(0), 0);
    }
}
