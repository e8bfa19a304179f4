//! Fjord networking: the sans-IO connection core ([`conn`]) and the framers
//! it splits a protocol's byte stream with ([`framer`]), the glommio TCP
//! driver that runs it ([`driver`], with the shard byte budgets a
//! connection holds, [`driver::budget`]), and the native client
//! ([`client`]).
//!
//! Architecture invariant: only `driver` imports glommio; `conn`, `stop`
//! and `client` are runtime-free.

pub mod client;
pub mod conn;
pub mod driver;
pub mod framer;
pub mod stop;

pub use conn::{Action, Connection, ConnectionConfig, ConnectionError};
pub use framer::{Framer, NativeFramer};
pub use stop::StopSignal;

#[cfg(test)]
mod invariants {
    /// The sans-IO core and the client stay runtime-free, so the runtime
    /// remains replaceable and the core testable without an executor.
    #[test]
    fn only_the_driver_imports_glommio() {
        for (file, text) in [
            ("conn.rs", include_str!("conn.rs")),
            ("conn/tests.rs", include_str!("conn/tests.rs")),
            ("framer.rs", include_str!("framer.rs")),
            ("stop.rs", include_str!("stop.rs")),
            ("client.rs", include_str!("client.rs")),
        ] {
            assert!(!text.contains("glommio"), "{file} mentions glommio");
        }
    }
}
