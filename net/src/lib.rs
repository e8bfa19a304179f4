//! Fjord networking: the sans-IO connection core ([`conn`]), the glommio TCP
//! driver that runs it ([`driver`]), and the native client
//! ([`client`]).
//!
//! Architecture invariant: only `driver` imports glommio; `conn`, `stop`
//! and `client` are runtime-free.

pub mod client;
pub mod conn;
pub mod driver;
pub mod stop;

pub use conn::{Action, Connection, ConnectionConfig, ConnectionError};
pub use stop::StopSignal;
