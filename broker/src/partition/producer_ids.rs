//! Producer id allocation (InitProducerId): unique across shards, nodes
//! and restarts, even after SIGKILL.
//!
//! The controller hands out blocks of ids (`ProducerIdsBlock` records of
//! the metadata log, CLUSTER.md §2): a block is committed to the Raft log
//! before any of its ids is given, and the next block starts after it, so
//! no id is ever given twice in the cluster. A crash loses at most the
//! unused rest of a block. Every shard holds its own block and asks shard
//! 0 (which asks the controller) for a new one when it runs out.
//!
//! A data dir from before the cluster kept the next free id in
//! `<data>/producer_ids`; [`legacy_next`] reads it once, to import it into
//! the metadata log (ids below it stay "issued").

use std::cell::Cell;
use std::fs;
use std::future::Future;
use std::io::ErrorKind;
use std::path::Path;

use fjord_schema::{ErrorCode, ProducerEpoch, ProducerId};

/// The pre-cluster allocator file.
const LEGACY_FILE: &str = "producer_ids";

/// Hands out producer ids from the blocks the controller allots. Lives on:
/// every shard (one each), in its `ShardService`. Owns: the shard's current
/// block. Sans-IO: the caller passes how to claim a block.
#[derive(Debug, Default)]
pub struct ProducerIds {
    /// Next id to give and the end of the current block.
    next: Cell<i64>,
    end: Cell<i64>,
}

/// Why no id was given: the error code and message for the client.
pub type InitError = (ErrorCode, String);

impl ProducerIds {
    pub fn new() -> ProducerIds {
        ProducerIds::default()
    }

    /// Answers an InitProducerId: a fresh id at epoch 0, or for a known
    /// (`producer_id`, `epoch`) the same id at the next epoch (fencing the
    /// older instance); a new id once the epoch is exhausted, as Kafka.
    /// `issued_end`: every id below it was given out by some node (the
    /// metadata image's next block start). `claim`: a new block
    /// `(first, size)` from the controller.
    pub async fn init<C, F>(
        &self,
        producer_id: ProducerId,
        epoch: ProducerEpoch,
        issued_end: i64,
        claim: C,
    ) -> Result<(ProducerId, ProducerEpoch), InitError>
    where
        C: FnOnce() -> F,
        F: Future<Output = Result<(i64, u32), InitError>>,
    {
        if producer_id.0 >= 0 {
            if epoch.0 < 0 {
                return Err((
                    ErrorCode::InvalidRequest,
                    format!("producer id {producer_id} without an epoch"),
                ));
            }
            if producer_id.0 >= issued_end.max(self.end.get()) {
                return Err((
                    ErrorCode::UnknownProducerId,
                    format!("producer id {producer_id} was never issued"),
                ));
            }
            if epoch.0 < i16::MAX - 1 {
                return Ok((producer_id, ProducerEpoch(epoch.0 + 1)));
            }
        }
        if self.next.get() == self.end.get() {
            let (first, size) = claim().await?;
            if size == 0 || first < 0 {
                return Err((
                    ErrorCode::UnknownServerError,
                    format!("the controller gave an empty producer id block at {first}"),
                ));
            }
            // Calls that ran out together each claim a block; the last to
            // finish wins and the rest of the others' blocks is skipped
            // (never handed out, as after a crash).
            self.next.set(first);
            self.end.set(first + i64::from(size));
        }
        assert!(self.next.get() < self.end.get());
        let id = self.next.get();
        self.next.set(id + 1);
        Ok((ProducerId(id), ProducerEpoch(0)))
    }
}

/// The next free id of a pre-cluster data dir's allocator file (0 when it
/// has none). Blocking; read once at startup.
pub fn legacy_next(data_dir: &Path) -> std::io::Result<i64> {
    let path = data_dir.join(LEGACY_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => text.trim().parse::<i64>().map_err(|e| {
            std::io::Error::new(ErrorKind::InvalidData, format!("{}: {e}", path.display()))
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// A controller stand-in: blocks of `size` ids, one after another.
    struct Blocks {
        next: Cell<i64>,
        size: u32,
        claims: Cell<u32>,
    }

    impl Blocks {
        fn new(size: u32) -> Blocks {
            Blocks {
                next: Cell::new(0),
                size,
                claims: Cell::new(0),
            }
        }

        async fn claim(&self) -> Result<(i64, u32), InitError> {
            self.claims.set(self.claims.get() + 1);
            let first = self.next.get();
            self.next.set(first + i64::from(self.size));
            Ok((first, self.size))
        }
    }

    fn run<F: Future<Output = ()>>(future: F) {
        futures_lite::future::block_on(future);
    }

    #[test]
    fn ids_are_unique_across_allocators_sharing_the_controller() {
        run(async {
            let blocks = Blocks::new(10);
            let a = ProducerIds::new();
            let b = ProducerIds::new();
            let seen = RefCell::new(std::collections::HashSet::new());
            for _ in 0..25 {
                for ids in [&a, &b] {
                    let (id, epoch) = ids
                        .init(
                            ProducerId::NONE,
                            ProducerEpoch::NONE,
                            blocks.next.get(),
                            || blocks.claim(),
                        )
                        .await
                        .unwrap();
                    assert_eq!(epoch, ProducerEpoch(0));
                    assert!(seen.borrow_mut().insert(id), "{id} handed out twice");
                }
            }
            // 50 ids from blocks of 10: each allocator claimed only when
            // its block ran out.
            assert_eq!(blocks.claims.get(), 6);
            // A restarted allocator (new, same controller) continues after
            // every block.
            let c = ProducerIds::new();
            let (id, _) = c
                .init(
                    ProducerId::NONE,
                    ProducerEpoch::NONE,
                    blocks.next.get(),
                    || blocks.claim(),
                )
                .await
                .unwrap();
            assert!(seen.borrow().iter().all(|s| s.0 < id.0));
        });
    }

    #[test]
    fn reinit_bumps_the_epoch_of_an_issued_id_only() {
        run(async {
            let blocks = Blocks::new(10);
            let ids = ProducerIds::new();
            let init = |id, epoch| ids.init(id, epoch, blocks.next.get(), || blocks.claim());
            let (id, epoch) = init(ProducerId::NONE, ProducerEpoch::NONE).await.unwrap();
            assert_eq!(init(id, epoch).await.unwrap(), (id, ProducerEpoch(1)));
            let (code, _) = init(ProducerId(1_000), ProducerEpoch(0)).await.unwrap_err();
            assert_eq!(code, ErrorCode::UnknownProducerId);
            let (code, _) = init(id, ProducerEpoch(-1)).await.unwrap_err();
            assert_eq!(code, ErrorCode::InvalidRequest);
            let (fresh, epoch) = init(id, ProducerEpoch(i16::MAX - 1)).await.unwrap();
            assert_ne!(fresh, id);
            assert_eq!(epoch, ProducerEpoch(0));
            // An id another node issued from a later block: known, since
            // the image says it was issued.
            let other = ProducerIds::new();
            let (theirs, _) = other
                .init(
                    ProducerId::NONE,
                    ProducerEpoch::NONE,
                    blocks.next.get(),
                    || blocks.claim(),
                )
                .await
                .unwrap();
            assert!(theirs.0 >= 10);
            assert_eq!(
                init(theirs, ProducerEpoch(0)).await.unwrap(),
                (theirs, ProducerEpoch(1))
            );
        });
    }

    #[test]
    fn the_legacy_file_is_read_once_for_the_import() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(legacy_next(dir.path()).unwrap(), 0);
        fs::write(dir.path().join(LEGACY_FILE), "3000\n").unwrap();
        assert_eq!(legacy_next(dir.path()).unwrap(), 3000);
        fs::write(dir.path().join(LEGACY_FILE), "x\n").unwrap();
        assert!(legacy_next(dir.path()).is_err());
    }
}
