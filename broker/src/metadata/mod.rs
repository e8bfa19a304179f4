//! Metadata: what the broker knows about topics and where their partitions
//! live. [`catalog`]: the immutable snapshot every shard routes with;
//! [`registry`]: shard 0's mutable owner of it, persisted in the data dir.

pub mod catalog;
pub mod registry;
