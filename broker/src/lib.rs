//! The Fjord broker: the composition root. Starts one shard per CPU, each
//! owning the partitions the placement table gives it and serving the
//! native protocol on the shared port (forwarding requests for other
//! shards' partitions over the shard mesh); owns configuration, the topic
//! registry and the data directory.

pub mod batches;
pub mod clock;
pub mod config;
pub mod connection_limits;
pub mod controller;
pub mod datadir;
pub mod durable_file;
pub mod engine;
pub mod error;
pub mod group;
pub mod kafka;
pub mod lease;
pub mod mesh;
pub mod metadata;
pub mod native;
pub mod ops;
pub mod partition;
pub mod repair;
pub mod replication;
pub mod server;
pub mod service;
pub mod shard;
pub mod signals;
pub mod topic;

pub use config::{Config, Overrides};
pub use error::BrokerError;
