//! The cluster controller (issue 13, CLUSTER.md §1–3): the metadata log
//! replicated by a Raft group (tikv `raft`) over the voters' shard 0, the
//! records it holds, and the pure state machine that turns admin commands
//! into records and folds committed records into the
//! [`crate::metadata::image::MetadataImage`].
//!
//! - [`records`]: `MetadataRecord`, the entries of the metadata log, and
//!   their encoding.
//! - [`commands`]: what nodes ask of the controller (register, heartbeat,
//!   admin, producer-id blocks) and its replies, and their encoding.
//! - [`fold`]: `MetadataImage::apply`, the fold of committed records,
//!   and the image snapshot codec.
//! - [`wire`]: the bounded little-endian primitives both encodings use.
//! - [`placement`]: which nodes hold the replicas of new partitions.
//! - [`state`]: `ControllerState`, sans-IO: commands + clock → records;
//!   committed records → image. Transcript tests.
//! - [`quorum`]: the Raft group, sans-IO around `raft::RawNode`, with its
//!   durable storage.
//! - [`transport`]: native frames over `--cluster-listen` (glommio).
//! - [`driver`]: the Raft group and the controller on shard 0, forwarding
//!   commands; `driver::lifecycle`: this broker's registration and heartbeats.

pub mod commands;
pub mod driver;
pub mod fold;
pub mod import;
pub mod placement;
pub mod quorum;
pub mod records;
pub mod state;
pub mod transport;
pub mod wire;
