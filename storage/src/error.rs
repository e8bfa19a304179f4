//! The crate's expected errors (STYLE.md class 3). Programmer errors are
//! `assert!`s instead; the broker maps these to wire error codes at the edge.

use std::path::PathBuf;

use fjord_schema::{BatchError, Offset};

use crate::log::Damage;

/// Why a byte range of a segment could not be accepted as batches.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorruptionKind {
    #[error("batch failed verification: {0}")]
    Batch(#[from] BatchError),
    #[error("batch base offset {found} where {expected} was expected")]
    OffsetGap { expected: Offset, found: Offset },
    #[error("batch of {len} bytes runs past the end of the segment data")]
    PastEnd { len: usize },
    #[error("non-zero bytes after the end of the data")]
    DataAfterPadding,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("glommio I/O error: {0}")]
    Runtime(String),
    /// Bytes in the middle of a segment (valid-looking data after them) fail
    /// verification: not a torn tail, so recovery refuses to cut silently
    /// and a read refuses to serve them. An operator must restore the
    /// replica (re-replicate the partition) or truncate it explicitly.
    #[error("corrupt data in segment {segment} at byte {position}: {kind}")]
    Corrupt {
        segment: PathBuf,
        position: u64,
        kind: CorruptionKind,
    },
    /// A batch fails verification and valid batches follow it: the data
    /// of acknowledged writes is damaged (not a torn tail). Neither the
    /// damaged nor the following batches may be cut or their offsets
    /// reused without an operator's decision; reads inside the damage
    /// fail with this.
    #[error("damaged data in {}: {damage}", segment.display())]
    Damaged { segment: PathBuf, damage: Damage },
    /// Segment files that do not form a contiguous log.
    #[error("inconsistent log directory {dir}: {reason}")]
    Inconsistent { dir: PathBuf, reason: String },
    #[error("offset {offset} is out of range [{log_start}, {log_end})")]
    OffsetOutOfRange {
        offset: Offset,
        log_start: Offset,
        log_end: Offset,
    },
    /// A replicated (pre-assigned) batch does not continue the log.
    #[error("batch base offset {found} does not continue the log at {expected}")]
    OffsetMismatch { expected: Offset, found: Offset },
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] BatchError),
    #[error("batch of {len} bytes exceeds the log's limit of {len_max} bytes")]
    BatchTooLarge { len: usize, len_max: usize },
    #[error("the log is closed")]
    Closed,
    /// Writing the log failed: the disk is full (ENOSPC / EDQUOT) or
    /// another I/O error. The log keeps what was appended in memory and
    /// serves it; it refuses appends and flushes while a background task
    /// rewrites what is not known durable, with backoff, and takes them
    /// again once a rewrite and its fdatasync succeeded.
    #[error(
        "{}the partition's log cannot be written ({cause}); {}",
        if *.disk_full { "disk full: " } else { "" },
        if *.disk_full {
            "it takes writes again by itself once space is freed"
        } else {
            "it takes writes again by itself once a retry succeeds"
        }
    )]
    WriteFault { disk_full: bool, cause: String },
    #[error("invalid storage configuration: {0}")]
    Config(String),
}

impl StorageError {
    /// The filesystem is out of space (or quota) for this write.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StorageError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ),
            StorageError::WriteFault { disk_full, .. } => *disk_full,
            _ => false,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> StorageError {
        StorageError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
