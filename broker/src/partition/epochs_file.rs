//! The `leader-epoch-checkpoint` file in a partition's directory: the
//! durable copy of its [`LeaderEpochCache`] (encoding in
//! [`super::epochs`]). Blocking `std::fs` + fsync: the partition manager
//! calls these on glommio's blocking pool (`spawn_blocking`), never on the
//! shard's executor thread.
//!
//! Written with [`write_atomically`] (temporary file, fdatasync, rename,
//! directory fsync), not through a `SparedFile`: a spare costs 64 KiB per
//! partition, and the checkpoint only changes with the log (a new leader
//! epoch before its first append, a truncation, retention), so a disk too
//! full to write a few bytes cannot take appends either; a truncation that
//! cannot write the checkpoint leaves an older one, which the next open
//! corrects with `clamp_to_log`.

use std::path::{Path, PathBuf};

use super::epochs::{CheckpointError, LeaderEpochCache};
use crate::durable_file::write_atomically;

/// The checkpoint's file name in the partition directory (Kafka's too).
pub const FILE_NAME: &str = "leader-epoch-checkpoint";

/// A checkpoint larger than this is not read (one line per leader change
/// of the retained log is far smaller).
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// Why the checkpoint cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum EpochsFileError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is {len} bytes, more than {MAX_FILE_BYTES}")]
    TooLarge { path: PathBuf, len: u64 },
    #[error("{path} is damaged: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: CheckpointError,
    },
}

/// The checkpoint path in partition directory `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// Reads the cache checkpointed in `dir`; a missing file is an empty cache
/// (a new partition). A damaged one is an error: the caller rebuilds the
/// cache from the log's batch headers. Blocking.
pub fn read(dir: &Path) -> Result<LeaderEpochCache, EpochsFileError> {
    let path = path(dir);
    let io = |source| EpochsFileError::Io {
        path: path.clone(),
        source,
    };
    let len = match std::fs::metadata(&path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LeaderEpochCache::new()),
        Err(e) => return Err(io(e)),
    };
    if len > MAX_FILE_BYTES {
        return Err(EpochsFileError::TooLarge { path, len });
    }
    let bytes = std::fs::read(&path).map_err(io)?;
    LeaderEpochCache::decode(&bytes).map_err(|source| EpochsFileError::Corrupt { path, source })
}

/// Replaces the checkpoint in `dir` with `cache` atomically (a crash leaves
/// the old or the new one). Blocking.
pub fn write(dir: &Path, cache: &LeaderEpochCache) -> std::io::Result<()> {
    write_atomically(&path(dir), &cache.encode())
}

#[cfg(test)]
mod tests {
    use fjord_schema::{LeaderEpoch, Offset};

    use super::*;

    fn cache() -> LeaderEpochCache {
        LeaderEpochCache::rebuild_from_batches([
            (Offset(0), LeaderEpoch(0)),
            (Offset(40), LeaderEpoch(2)),
            (Offset(75), LeaderEpoch(5)),
        ])
    }

    #[test]
    fn a_written_checkpoint_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &cache()).unwrap();
        assert_eq!(read(dir.path()).unwrap(), cache());
        assert_eq!(
            std::fs::read_to_string(path(dir.path())).unwrap(),
            "0\n3\n0 0\n2 40\n5 75\n"
        );
        // Rewritten in place, no temporary file left.
        let mut shorter = cache();
        shorter.truncate_from_end(Offset(50));
        write(dir.path(), &shorter).unwrap();
        assert_eq!(read(dir.path()).unwrap(), shorter);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_missing_checkpoint_is_an_empty_cache() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), LeaderEpochCache::new());
    }

    #[test]
    fn a_torn_or_garbage_checkpoint_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let full = cache().encode();
        // Torn: cut inside the last line (no final newline), or a whole
        // line missing (the count disagrees).
        for torn in [&full[..full.len() - 2], &full[..full.len() - 5]] {
            std::fs::write(path(dir.path()), torn).unwrap();
            assert!(
                matches!(
                    read(dir.path()),
                    Err(EpochsFileError::Corrupt {
                        source: CheckpointError::BadLine { .. } | CheckpointError::Count { .. },
                        ..
                    })
                ),
                "{:?}",
                read(dir.path())
            );
        }
        std::fs::write(path(dir.path()), [0xff, 0x00, 0x13]).unwrap();
        assert!(matches!(
            read(dir.path()),
            Err(EpochsFileError::Corrupt {
                source: CheckpointError::NotText,
                ..
            })
        ));
    }

    #[test]
    fn an_oversized_checkpoint_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(path(dir.path())).unwrap();
        file.set_len(MAX_FILE_BYTES + 1).unwrap();
        assert!(matches!(
            read(dir.path()),
            Err(EpochsFileError::TooLarge { .. })
        ));
    }

    #[test]
    fn an_unreadable_checkpoint_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(path(dir.path())).unwrap();
        assert!(matches!(read(dir.path()), Err(EpochsFileError::Io { .. })));
    }
}
