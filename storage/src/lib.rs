//! fjord-storage: the partition log.
//!
//! A partition is a directory of segments named by base offset
//! (`<20 digits>.log` + `.index` + `.timeindex`). Producers' batches are
//! stored byte for byte (the broker only assigns the base offset and leader
//! epoch, which the CRC does not cover), appended with direct I/O, indexed
//! sparsely, rolled by size and age, deleted by retention, cut by follower
//! truncation and verified by CRC32C on recovery and on every disk read.
//!
//! Layers:
//! - sans-IO core, no glommio, no clock: [`log`] (segment bookkeeping,
//!   recovery scan, read collection, roll / retention / truncation
//!   decisions), [`index`], [`layout`], [`cache`] (the per-shard batch
//!   cache), [`config`];
//! - [`driver`]: the glommio driver ([`PartitionLog`]), the only module that
//!   imports glommio.
//!
//! Durability contract: after [`PartitionLog::append`] the batch is in
//! memory; after [`PartitionLog::flush`] everything appended before it is on
//! stable storage. [`FlushPolicy`] tells the broker when to flush.

pub mod cache;
pub mod clock;
pub mod config;
pub mod driver;
pub mod error;
pub mod index;
pub mod layout;
pub mod log;
pub mod notify;

pub use cache::{BatchCache, CacheLogId, CacheStats};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{CacheConfig, FlushPolicy, LogConfig};
pub use driver::{repair_truncate, AppendInfo, LogOptions, PartitionLog, Repaired};
pub use error::{CorruptionKind, Result, StorageError};
pub use log::{Damage, ReadRequest};
