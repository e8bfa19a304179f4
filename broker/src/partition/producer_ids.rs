//! Producer id allocation (InitProducerId): unique across shards and across
//! restarts, even after SIGKILL.
//!
//! `<data>/producer_ids` holds the first id no shard has claimed yet
//! (decimal text). A shard claims a block of [`BLOCK_IDS`] ids by advancing
//! that number under an exclusive `flock` on `<data>/producer_ids.lock`,
//! writing the file atomically (temp file, fdatasync, rename, directory
//! fsync) before handing out any id of the block. A crash loses at most the
//! unused rest of a block; an id is never handed out twice. The file is
//! touched once per block (and when an unknown id is re-initialised), and
//! that blocking I/O (`flock`, fdatasync) runs on glommio's blocking thread
//! pool, never on the shard's executor.

use std::cell::Cell;
use std::fs::{self, File};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use fjord_schema::{ErrorCode, ProducerEpoch, ProducerId};

use crate::durable_file::write_atomically;

/// Ids claimed per write of the allocator file.
pub const BLOCK_IDS: i64 = 1000;
const FILE: &str = "producer_ids";
const LOCK_FILE: &str = "producer_ids.lock";

/// Hands out producer ids. Lives on: every shard (one each), in its
/// `PartitionManager`. Owns: the shard's current block. Created at shard
/// start, claims blocks on demand.
#[derive(Debug)]
pub struct ProducerIds {
    data_dir: PathBuf,
    /// Next id to give and the end of the claimed block.
    next: Cell<i64>,
    end: Cell<i64>,
    /// Every id below this was issued (by some shard): the highest claimed
    /// end this shard has read or written. Spares re-reading the file for
    /// the re-initialisation of an id below it.
    issued: Cell<i64>,
}

impl ProducerIds {
    pub fn new(data_dir: PathBuf) -> ProducerIds {
        ProducerIds {
            data_dir,
            next: Cell::new(0),
            end: Cell::new(0),
            issued: Cell::new(0),
        }
    }

    /// Answers an InitProducerId: a fresh id at epoch 0, or for a known
    /// (`producer_id`, `epoch`) the same id at the next epoch (fencing the
    /// older instance); a new id once the epoch is exhausted, as Kafka.
    pub async fn init(
        &self,
        producer_id: ProducerId,
        epoch: ProducerEpoch,
    ) -> Result<(ProducerId, ProducerEpoch), (ErrorCode, String)> {
        if producer_id.0 >= 0 {
            if epoch.0 < 0 {
                return Err((
                    ErrorCode::InvalidRequest,
                    format!("producer id {producer_id} without an epoch"),
                ));
            }
            if producer_id.0 >= self.issued.get() {
                let dir = self.data_dir.clone();
                let issued = blocking(move || claimed_end(&dir))
                    .await
                    .map_err(storage_error)?;
                self.issued.set(self.issued.get().max(issued));
            }
            if producer_id.0 >= self.issued.get() {
                return Err((
                    ErrorCode::UnknownProducerId,
                    format!("producer id {producer_id} was never issued"),
                ));
            }
            if epoch.0 < i16::MAX - 1 {
                return Ok((producer_id, ProducerEpoch(epoch.0 + 1)));
            }
        }
        let id = self.next_id().await.map_err(storage_error)?;
        Ok((id, ProducerEpoch(0)))
    }

    async fn next_id(&self) -> std::io::Result<ProducerId> {
        if self.next.get() == self.end.get() {
            let dir = self.data_dir.clone();
            let start = blocking(move || claim_block(&dir)).await?;
            // Calls that ran out together each claim a block; the last to
            // finish wins and the rest of the others' blocks is skipped
            // (never handed out, as after a crash).
            self.next.set(start);
            self.end.set(start + BLOCK_IDS);
            self.issued.set(self.issued.get().max(start + BLOCK_IDS));
        }
        assert!(self.next.get() < self.end.get());
        let id = self.next.get();
        self.next.set(id + 1);
        Ok(ProducerId(id))
    }
}

/// Runs blocking file I/O on glommio's blocking thread pool.
async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<R> + Send + 'static,
) -> std::io::Result<R> {
    glommio::executor().spawn_blocking(f).await
}

/// Advances the file by one block; returns the block's first id. Blocking.
fn claim_block(data_dir: &Path) -> std::io::Result<i64> {
    let _lock = Lock::take(&data_dir.join(LOCK_FILE))?;
    let path = data_dir.join(FILE);
    let start = read_next(&path)?;
    let end = start
        .checked_add(BLOCK_IDS)
        .ok_or_else(|| std::io::Error::other("producer ids exhausted"))?;
    write_atomically(&path, format!("{end}\n").as_bytes())?;
    Ok(start)
}

/// Every id below this may have been handed out. Blocking.
fn claimed_end(data_dir: &Path) -> std::io::Result<i64> {
    let _lock = Lock::take(&data_dir.join(LOCK_FILE))?;
    read_next(&data_dir.join(FILE))
}

fn storage_error(error: std::io::Error) -> (ErrorCode, String) {
    (
        ErrorCode::KafkaStorageError,
        format!("producer id allocator: {error}"),
    )
}

fn read_next(path: &Path) -> std::io::Result<i64> {
    match fs::read_to_string(path) {
        Ok(text) => text.trim().parse::<i64>().map_err(|e| {
            std::io::Error::new(ErrorKind::InvalidData, format!("{}: {e}", path.display()))
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// An exclusive `flock`, released on drop (closing the file).
struct Lock(#[allow(dead_code)] File);

impl Lock {
    fn take(path: &Path) -> std::io::Result<Lock> {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Lock(file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a test on a glommio executor (`spawn_blocking` needs one).
    fn run<F: std::future::Future<Output = ()> + 'static>(test: impl FnOnce(PathBuf) -> F) {
        let dir = tempfile::tempdir().unwrap();
        let test = test(dir.path().to_owned());
        glommio::LocalExecutor::default().run(test);
    }

    #[test]
    fn ids_are_unique_across_allocators_and_restarts() {
        run(unique_across_allocators_and_restarts);
    }

    async fn unique_across_allocators_and_restarts(dir: PathBuf) {
        let a = ProducerIds::new(dir.clone());
        let b = ProducerIds::new(dir.clone());
        let mut seen = std::collections::HashSet::new();
        for _ in 0..(BLOCK_IDS + 5) {
            for ids in [&a, &b] {
                let (id, epoch) = ids
                    .init(ProducerId::NONE, ProducerEpoch::NONE)
                    .await
                    .unwrap();
                assert_eq!(epoch, ProducerEpoch(0));
                assert!(seen.insert(id), "{id} handed out twice");
            }
        }
        // A restart (new allocator, same dir) continues after every block.
        let c = ProducerIds::new(dir);
        let (id, _) = c.init(ProducerId::NONE, ProducerEpoch::NONE).await.unwrap();
        assert!(seen.iter().all(|s| s.0 < id.0));
    }

    #[test]
    fn reinit_bumps_the_epoch_of_a_known_id_only() {
        run(reinit_bumps_the_epoch);
    }

    async fn reinit_bumps_the_epoch(dir: PathBuf) {
        let ids = ProducerIds::new(dir.clone());
        let (id, epoch) = ids
            .init(ProducerId::NONE, ProducerEpoch::NONE)
            .await
            .unwrap();
        assert_eq!(ids.init(id, epoch).await.unwrap(), (id, ProducerEpoch(1)));
        let (code, _) = ids
            .init(ProducerId(BLOCK_IDS * 10), ProducerEpoch(0))
            .await
            .unwrap_err();
        assert_eq!(code, ErrorCode::UnknownProducerId);
        let (fresh, epoch) = ids.init(id, ProducerEpoch(i16::MAX - 1)).await.unwrap();
        assert_ne!(fresh, id);
        assert_eq!(epoch, ProducerEpoch(0));
        // An id another shard issued after this one last read the file.
        let other = ProducerIds::new(dir);
        let (theirs, _) = other
            .init(ProducerId::NONE, ProducerEpoch::NONE)
            .await
            .unwrap();
        assert_eq!(
            ids.init(theirs, ProducerEpoch(0)).await.unwrap(),
            (theirs, ProducerEpoch(1))
        );
    }
}
