//! Metadata: what the broker knows about topics and where their partitions
//! live, with cluster facts and node facts apart.
//! - [`image`]: the `MetadataImage` (cluster facts: topics, ids, configs,
//!   partitions with replicas / leader / leader epoch / ISR), immutable.
//! - [`shard_table`]: this node's `ShardTable` (which local shard holds
//!   each partition replica).
//! - [`catalog`]: the two joined, the immutable snapshot every shard
//!   routes with.
//! - [`registry`]: shard 0's owner of both, persisted in the data dir.

pub mod catalog;
pub mod image;
pub mod registry;
pub mod shard_table;
