//! One simulated node's disk: what survives a crash (issue 15).
//!
//! Per partition replica it holds the log as the storage crate writes it
//! — one segment file of native batches laid back to back, from the
//! segment's base offset — with the prefix an fdatasync covered (the
//! durable length), the `leader-epoch-checkpoint` (written whole and
//! durable, as `durable_file::write_atomically` does) and the topic id the
//! replica belongs to (the broker deletes a topic's replicas by id).
//! There are no producer snapshot files: the broker writes them only on a
//! clean close and after a segment roll, neither of which happens in the
//! simulation (no shutdowns, one segment), so a restart rebuilds the
//! producer state from the whole log, as the broker does after a crash.
//!
//! Lives on: the simulated node; owned by its [`crate::data::NodeData`]
//! while the node runs ([`crate::data::NodeData::into_disk`] hands it back
//! on a crash) and by the world while the node is down. The world injects
//! the faults: [`NodeDisk::crash`] (unsynced bytes lost, kept or torn),
//! [`NodeDisk::set_sync_delay_ms`] (a slow disk: an fdatasync completes
//! that long after it is issued, in simulated time) and
//! [`NodeDisk::set_full`] (writes fail, as ENOSPC puts the storage crate's
//! log in write fault: KAFKA_STORAGE_ERROR).
//!
//! Recovery ([`NodeDisk::recover`]) runs the storage crate's own
//! [`SegmentScanner`] (header, offset continuity, length, CRC32C) over the
//! segment bytes and cuts the file where the scan stops, as
//! `PartitionLog::open` cuts a torn tail.

use std::collections::BTreeMap;

use bytes::Bytes;
use fjord_broker::metadata::image::TopicId;
use fjord_broker::replication::fetcher::Key;
use fjord_schema::batch::BatchView;
use fjord_schema::Offset;
use fjord_storage::log::{ScanLimit, ScanStep, SegmentScanner};

use crate::rng::SimRng;

/// A write refused by a full disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no space left on device (simulated)")]
pub struct DiskFull;

/// One replica's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDisk {
    /// The topic this replica belongs to (names may be reused after a
    /// delete).
    pub topic_id: TopicId,
    /// The segment's base offset: the log start.
    pub base: Offset,
    /// The segment file: batches back to back, possibly followed (after
    /// a crash) by a torn batch or zero padding.
    bytes: Vec<u8>,
    /// `bytes[..durable]` is on stable storage.
    durable: usize,
    /// Bumped by every truncation or reset, so an fdatasync issued before
    /// one does not mark bytes written after it durable.
    generation: u64,
    /// The leader-epoch checkpoint, if ever written (always durable).
    epochs: Option<Vec<u8>>,
}

impl PartitionDisk {
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn durable_len(&self) -> usize {
        self.durable
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn epochs_checkpoint(&self) -> Option<&[u8]> {
        self.epochs.as_deref()
    }
}

/// What recovery found in a replica's segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub topic_id: TopicId,
    pub log_start: Offset,
    /// The valid batches, in order (each CRC-verified).
    pub batches: Vec<Bytes>,
    /// Bytes cut off the end (a torn batch, zero padding).
    pub cut_bytes: usize,
    /// The checkpoint file's bytes, if any.
    pub epochs: Option<Vec<u8>>,
}

/// The node's disk (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct NodeDisk {
    partitions: BTreeMap<Key, PartitionDisk>,
    sync_delay_ms: u64,
    full: bool,
    /// Process starts on this disk ([`crate::data::NodeData::open`] counts
    /// them): request ids carry it, so an answer to a request of an
    /// earlier incarnation never matches a new one (a restarted broker has
    /// new connections, and correlation ids are per connection).
    pub boots: u64,
    /// Crashes (for the run's report).
    pub crashes: u64,
    pub torn_tails: u64,
}

impl NodeDisk {
    pub fn new() -> NodeDisk {
        NodeDisk::default()
    }

    /// A slow disk: an fdatasync issued at `t` completes at `t + ms`.
    pub fn set_sync_delay_ms(&mut self, ms: u64) {
        self.sync_delay_ms = ms;
    }

    pub fn sync_delay_ms(&self) -> u64 {
        self.sync_delay_ms
    }

    /// A full disk: appends, fdatasyncs, truncations and checkpoint writes
    /// fail until it is set back.
    pub fn set_full(&mut self, full: bool) {
        self.full = full;
    }

    pub fn is_full(&self) -> bool {
        self.full
    }

    pub fn partitions(&self) -> impl Iterator<Item = (&Key, &PartitionDisk)> {
        self.partitions.iter()
    }

    pub fn partition(&self, key: &Key) -> Option<&PartitionDisk> {
        self.partitions.get(key)
    }

    /// Creates an empty replica (a new partition) starting at offset 0.
    pub fn create(&mut self, key: &Key, topic_id: TopicId) {
        self.partitions.insert(
            key.clone(),
            PartitionDisk {
                topic_id,
                base: Offset(0),
                bytes: Vec::new(),
                durable: 0,
                generation: 0,
                epochs: None,
            },
        );
    }

    /// Deletes a replica's directory.
    pub fn remove(&mut self, key: &Key) {
        self.partitions.remove(key);
    }

    /// Appends a batch's bytes (not durable until an fdatasync covers it).
    pub fn append(&mut self, key: &Key, batch: &[u8]) -> Result<(), DiskFull> {
        if self.full {
            return Err(DiskFull);
        }
        let p = self.get_mut(key);
        p.bytes.extend_from_slice(batch);
        Ok(())
    }

    /// Starts an fdatasync: what it will cover (the file's length now, in
    /// this generation) and when it completes, or `DiskFull`.
    pub fn start_sync(&self, key: &Key, now_ms: u64) -> Result<SyncTicket, DiskFull> {
        if self.full {
            return Err(DiskFull);
        }
        let p = self.partitions.get(key).expect("sync of a replica on disk");
        Ok(SyncTicket {
            len: p.bytes.len(),
            generation: p.generation,
            done_ms: now_ms + self.sync_delay_ms,
        })
    }

    /// An fdatasync completed: its bytes are durable (unless a truncation
    /// came between, which made everything before it durable itself).
    /// Returns whether it still applied.
    pub fn finish_sync(&mut self, key: &Key, ticket: SyncTicket) -> bool {
        let Some(p) = self.partitions.get_mut(key) else {
            return false;
        };
        if p.generation != ticket.generation {
            return false;
        }
        p.durable = p.durable.max(ticket.len.min(p.bytes.len()));
        true
    }

    /// Cuts the file to `len` bytes, durably (the storage crate flushes,
    /// then truncates and syncs, before returning).
    pub fn truncate(&mut self, key: &Key, len: usize) -> Result<(), DiskFull> {
        if self.full {
            return Err(DiskFull);
        }
        let p = self.get_mut(key);
        p.bytes.truncate(len);
        p.durable = p.bytes.len();
        p.generation += 1;
        Ok(())
    }

    /// Restarts the log empty at `base`, durably.
    pub fn reset(&mut self, key: &Key, base: Offset) -> Result<(), DiskFull> {
        if self.full {
            return Err(DiskFull);
        }
        let p = self.get_mut(key);
        p.bytes.clear();
        p.durable = 0;
        p.base = base;
        p.generation += 1;
        Ok(())
    }

    /// Replaces the leader-epoch checkpoint atomically and durably.
    pub fn write_epochs(&mut self, key: &Key, bytes: Vec<u8>) -> Result<(), DiskFull> {
        if self.full {
            return Err(DiskFull);
        }
        self.get_mut(key).epochs = Some(bytes);
        Ok(())
    }

    /// Power loss: of each replica's bytes past its durable length, all
    /// are lost, all survive, a random prefix survives (often ending in a
    /// partial batch), or a random prefix survives followed by zero
    /// padding (the storage crate's preallocated blocks). Durable bytes and
    /// checkpoints always survive.
    pub fn crash(&mut self, rng: &mut SimRng) {
        let keys: Vec<Key> = self.partitions.keys().cloned().collect();
        let mut modes = Vec::with_capacity(keys.len());
        for key in &keys {
            let p = &self.partitions[key];
            let unsynced = (p.bytes.len() - p.durable) as u64;
            let mode = match rng.below(4) {
                0 => Crash::LoseUnsynced,
                1 => Crash::KeepAll,
                2 => Crash::Torn {
                    keep: rng.below(unsynced + 1) as usize,
                    zeros: 0,
                },
                _ => Crash::Torn {
                    keep: rng.below(unsynced + 1) as usize,
                    zeros: rng.range(1, 4096) as usize,
                },
            };
            modes.push(mode);
        }
        self.crashes += 1;
        for (key, mode) in keys.iter().zip(modes) {
            self.crash_partition(key, mode);
        }
    }

    /// Power loss with `mode` for every replica (tests choose the outcome).
    pub fn crash_with(&mut self, mode: Crash) {
        self.crashes += 1;
        let keys: Vec<Key> = self.partitions.keys().cloned().collect();
        for key in &keys {
            self.crash_partition(key, mode);
        }
    }

    fn crash_partition(&mut self, key: &Key, mode: Crash) {
        let Some(p) = self.partitions.get_mut(key) else {
            return;
        };
        let unsynced = p.bytes.len() - p.durable;
        p.generation += 1;
        if unsynced == 0 {
            return;
        }
        match mode {
            Crash::LoseUnsynced => p.bytes.truncate(p.durable),
            Crash::KeepAll => {}
            Crash::Torn { keep, zeros } => {
                p.bytes.truncate(p.durable + keep.min(unsynced));
                p.bytes.resize(p.bytes.len() + zeros, 0);
                self.torn_tails += 1;
            }
        }
    }

    /// Opens a replica after a start: scans its segment with the storage
    /// crate's verifying scanner, cuts the file where the valid batches
    /// end (a torn tail, zero padding) and returns them. `None`: not on
    /// this disk.
    pub fn recover(&mut self, key: &Key) -> Option<Recovered> {
        let p = self.partitions.get_mut(key)?;
        let mut scanner = SegmentScanner::new(p.base, 4096);
        match scanner.scan(&p.bytes, 0, ScanLimit::None) {
            // The window is the whole file: needing more is the torn end.
            ScanStep::NeedMore { .. } | ScanStep::Stop { .. } | ScanStep::Limit => {}
        }
        let meta = scanner.finish();
        let valid = meta.bytes as usize;
        let cut_bytes = p.bytes.len() - valid;
        p.bytes.truncate(valid);
        p.durable = valid;
        p.generation += 1;
        let mut batches = Vec::new();
        let mut rest: &[u8] = &p.bytes;
        while !rest.is_empty() {
            let (view, after) = BatchView::parse(rest).expect("the scanner verified it");
            batches.push(Bytes::copy_from_slice(view.as_bytes()));
            rest = after;
        }
        Some(Recovered {
            topic_id: p.topic_id,
            log_start: p.base,
            batches,
            cut_bytes,
            epochs: p.epochs.clone(),
        })
    }

    fn get_mut(&mut self, key: &Key) -> &mut PartitionDisk {
        self.partitions
            .get_mut(key)
            .expect("a write to a replica on disk")
    }
}

/// What a crash does to a replica's unsynced bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    /// All lost: the file ends at its durable length.
    LoseUnsynced,
    /// All survive (the page cache was written back in time).
    KeepAll,
    /// The first `keep` unsynced bytes survive (a partial batch when that
    /// is not a batch boundary), then `zeros` zero bytes (preallocated
    /// blocks).
    Torn { keep: usize, zeros: usize },
}

/// An fdatasync in progress ([`NodeDisk::start_sync`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncTicket {
    /// The file length it covers.
    pub len: usize,
    pub generation: u64,
    /// When it completes (simulated ms).
    pub done_ms: u64,
}
