//! Producer snapshot files: `<partition dir>/<log end:020>.snapshot` holds
//! the partition's [`ProducerStates`] as of that log end
//! ([`ProducerStates::encode`]). They bound the log scan that rebuilds the
//! state on open to the batches after the newest snapshot.
//!
//! Every file operation here (listing, reading, the atomic write with its
//! fdatasync and directory fsync, removing) runs on glommio's blocking
//! thread pool, never on the shard's executor; the log replay after the
//! snapshot reads the log through the storage layer (DMA).

use std::path::{Path, PathBuf};

use fjord_schema::batch::{BatchHeader, BatchView};
use fjord_schema::Offset;
use fjord_storage::{PartitionLog, ReadRequest, StorageError};

use super::epochs::LeaderEpochCache;
use super::producer_state::{ProducerBatch, ProducerStateConfig, ProducerStates};
use crate::durable_file::write_atomically;

/// Bytes the replay after the snapshot reads at once.
const REPLAY_READ_BYTES: usize = 1 << 20;

fn file_name(offset: Offset) -> String {
    format!("{:020}.snapshot", offset.get())
}

/// The producer snapshots in `dir`, newest first. Blocking.
fn files(dir: &Path) -> Vec<(Offset, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(Offset, PathBuf)> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let stem = name.to_str()?.strip_suffix(".snapshot")?;
            let offset = stem.parse::<u64>().ok()?;
            Some((Offset(offset), entry.path()))
        })
        .collect();
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    found
}

/// Writes the snapshot `bytes` taken at log end `end` into `dir`
/// atomically, then removes every other snapshot there. On the blocking
/// thread pool.
pub async fn write(dir: PathBuf, end: Offset, bytes: Vec<u8>) -> std::io::Result<()> {
    glommio::executor()
        .spawn_blocking(move || {
            write_atomically(&dir.join(file_name(end)), &bytes)?;
            for (offset, old) in files(&dir) {
                if offset != end {
                    let _ = std::fs::remove_file(old);
                }
            }
            Ok(())
        })
        .await
}

/// The newest valid snapshot in `dir` at or below `end` and its offset;
/// newer ones (left by a truncation) and damaged ones are removed.
/// Blocking.
fn newest_valid(
    dir: &Path,
    end: Offset,
    config: ProducerStateConfig,
) -> Option<(Offset, ProducerStates)> {
    let mut newest = None;
    for (offset, path) in files(dir) {
        let loaded = (offset <= end)
            .then(|| std::fs::read(&path).ok())
            .flatten()
            .and_then(|bytes| ProducerStates::decode(config, &bytes));
        match loaded {
            Some(loaded) if newest.is_none() => newest = Some((offset, loaded)),
            Some(_) => {}
            None => {
                tracing::info!(path = %path.display(), "discarding producer snapshot");
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    newest
}

/// Rebuilds a partition's producer state: the newest valid snapshot at or
/// below the log end (newer and damaged ones are removed), then the batch
/// headers of the log after it. Returns the state and the snapshot's offset
/// (`None` without one).
pub async fn load(
    log: &PartitionLog,
    config: ProducerStateConfig,
) -> Result<(ProducerStates, Option<Offset>), StorageError> {
    let end = log.log_end();
    let dir = log.dir().to_owned();
    let newest = glommio::executor()
        .spawn_blocking(move || newest_valid(&dir, end, config))
        .await;
    let mut from = log.log_start();
    let (mut states, snapshot_end) = match newest {
        Some((offset, states)) => {
            from = from.max(offset);
            (states, Some(offset))
        }
        None => (ProducerStates::new(config), None),
    };
    scan_headers(log, from, end, |header| {
        if let Some(producer) = ProducerBatch::of(header) {
            states.apply(
                &producer,
                header.base_offset(),
                header.last_offset(),
                header.max_timestamp.get(),
            );
        }
    })
    .await?;
    Ok((states, snapshot_end))
}

/// Rebuilds a partition's leader-epoch cache from its batch headers (a
/// data dir from before leader-epoch checkpoints, or a damaged one): reads
/// the whole log once.
pub async fn scan_epochs(log: &PartitionLog) -> Result<LeaderEpochCache, StorageError> {
    let mut epochs = LeaderEpochCache::new();
    scan_headers(log, log.log_start(), log.log_end(), |header| {
        epochs.assign(header.leader_epoch(), header.base_offset());
    })
    .await?;
    Ok(epochs)
}

/// Calls `each` with the header of every batch of `log` whose base offset
/// is in `[from, end)`, oldest first, reading through the storage layer.
async fn scan_headers(
    log: &PartitionLog,
    mut from: Offset,
    end: Offset,
    mut each: impl FnMut(&BatchHeader),
) -> Result<(), StorageError> {
    while from < end {
        let batches = log
            .read(ReadRequest {
                offset: from,
                until: end,
                max_bytes: REPLAY_READ_BYTES,
            })
            .await?;
        let Some(last) = batches.last() else { break };
        let last_end = BatchView::parse_header(last)
            .map_err(StorageError::InvalidBatch)?
            .next_offset();
        for bytes in &batches {
            let header = BatchView::parse_header(bytes).map_err(StorageError::InvalidBatch)?;
            // The read starts at the batch holding `from`, which the
            // caller covered already when `from` is inside it.
            if header.base_offset() < from {
                continue;
            }
            each(header);
        }
        assert!(last_end > from, "the scan moves forward");
        from = last_end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjord_schema::{ProducerEpoch, ProducerId, Sequence};

    fn states(producers: i64) -> ProducerStates {
        let mut states = ProducerStates::new(ProducerStateConfig::default());
        for id in 0..producers {
            let batch = ProducerBatch {
                producer_id: ProducerId(id),
                epoch: ProducerEpoch(0),
                first_seq: Sequence(0),
                last_seq: Sequence(0),
            };
            states.apply(&batch, Offset(id as u64), Offset(id as u64), 0);
        }
        states
    }

    #[test]
    fn write_keeps_only_the_newest_and_load_skips_newer_and_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let config = ProducerStateConfig::default();
        glommio::LocalExecutor::default().run(async move {
            write(path.clone(), Offset(3), states(1).encode())
                .await
                .unwrap();
            write(path.clone(), Offset(7), states(2).encode())
                .await
                .unwrap();
            assert_eq!(
                files(&path).into_iter().map(|f| f.0).collect::<Vec<_>>(),
                vec![Offset(7)]
            );
            // A snapshot past the log end (a truncation) and a damaged one
            // are removed; the valid one below the end is loaded.
            std::fs::write(path.join(file_name(Offset(9))), states(3).encode()).unwrap();
            std::fs::write(path.join(file_name(Offset(5))), b"not a snapshot").unwrap();
            let (offset, loaded) = newest_valid(&path, Offset(8), config).expect("one valid");
            assert_eq!((offset, loaded), (Offset(7), states(2)));
            assert_eq!(
                files(&path).into_iter().map(|f| f.0).collect::<Vec<_>>(),
                vec![Offset(7)]
            );
        });
    }
}
