//! Partitions on their owning shard.
//!
//! - [`state`]: the sans-IO partition state machine: the decisions of a
//!   produce (acks, `min.insync.replicas`, idempotence, flush before ack),
//!   the offsets (log start, log end, durable end, high watermark), the
//!   leader epoch and the acks=all waiters. No glommio, no files, no clock
//!   reads: time is passed in.
//! - [`epochs`]: the leader-epoch cache (epoch → start offset), the
//!   `OffsetForLeaderEpoch` answer, the follower's truncation decision
//!   (KIP-101/279) and the checkpoint encoding (sans-IO).
//! - [`epochs_file`]: the `leader-epoch-checkpoint` file (blocking I/O, on
//!   glommio's blocking pool).
//! - [`replicas`]: the leader's followers (sans-IO): replica set, ISR,
//!   partition epoch, each follower's log end, durable end and last
//!   caught-up time, and the ISR shrink/expand proposals (`AlterPartition`)
//!   the state makes; owned by a [`state::PartitionState`].
//! - [`manager`]: `PartitionManager`, its glommio driver: opens partitions
//!   (or keeps them offline), runs the storage I/O the state asks for,
//!   waits for flushes, wakes long-poll fetches, closes.
//! - [`producer_state`]: the idempotent-producer table one state holds
//!   (sans-IO) and its snapshot encoding.
//! - [`snapshot`]: producer snapshot files (names, listing, load, write,
//!   pruning), with the blocking file I/O off the shard's executor.
//! - [`producer_ids`]: InitProducerId's id allocator (blocks of ids the
//!   controller allots).

pub mod epochs;
pub mod epochs_file;
pub mod follower;
pub mod manager;
pub mod producer_ids;
pub mod producer_state;
pub mod replicas;
pub mod snapshot;
pub mod state;
