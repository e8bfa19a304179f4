//! The Fjord broker: the composition root. Starts one shard per CPU, each
//! owning the partitions the placement table gives it and serving the
//! native protocol on the shared port (forwarding requests for other
//! shards' partitions over the shard mesh); owns configuration, the topic
//! registry and the data directory.

pub mod batches;
// issue-12 merge shim: the catalog moved to `metadata::catalog`.
pub mod catalog {
    pub use crate::metadata::catalog::*;
}
pub mod clock;
pub mod config;
pub mod connection_limits;
pub mod datadir;
/// The old home of the engine and the native codec.
// issue-12 merge shim
pub mod dispatch {
    pub use crate::engine::{BrokerView, Engine as Dispatcher, EngineLimits as DispatchLimits};
    pub use crate::native::{served_versions, SERVED_APIS};
}
pub mod durable_file;
pub mod engine;
pub mod error;
pub mod group;
pub mod kafka;
pub mod mesh;
pub mod metadata;
pub mod native;
pub mod ops;
pub mod partition;
// issue-12 merge shim: the old paths of `partition::{manager, producer_ids,
// producer_state}`; the lead removes these after merging.
pub mod partitions {
    pub use crate::partition::manager::*;
}
pub use partition::producer_ids;
pub use partition::producer_state;
pub mod repair;
pub mod server;
pub mod service;
pub mod shard;
pub mod signals;
pub mod topic;
pub mod topics;

pub use config::{Config, Overrides};
pub use error::BrokerError;
