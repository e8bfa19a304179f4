//! The Fjord broker: the composition root. Starts one shard per CPU, each
//! serving the native protocol on the shared port, dispatches requests,
//! and owns configuration and the data directory.

pub mod config;
pub mod datadir;
pub mod dispatch;
pub mod error;
pub mod server;
pub mod shard;
pub mod signals;

pub use config::{Config, Overrides};
pub use error::BrokerError;
