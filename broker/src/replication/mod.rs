//! Replication (issue 14, `CLUSTER.md` §4): followers pull from leaders.
//!
//! - The local side, per shard: [`ReplicaLogs`], the partitions this shard
//!   follows and the operations a fetcher runs on them (implemented by
//!   `partition::manager::PartitionManager`; a fake in tests and in the
//!   simulation of issue 15).
//! - The fetchers: one per (local shard, leader node), long-polling the
//!   leader over `--cluster-listen`, appending its batches verbatim.
//! - The leader side: the cluster listener on shard 0 answers replica
//!   fetches and `OffsetForLeaderEpoch` through the engine (the owning
//!   shard's partition state records each follower's progress).

pub use crate::partition::follower::{Followed, FollowerError, FollowerPosition, ReplicaLogs};

pub mod driver;
pub mod fetcher;
pub mod server;
#[cfg(test)]
pub(crate) mod testing;
pub mod wire;
