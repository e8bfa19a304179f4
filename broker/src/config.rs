//! Broker configuration: defaults, overridden by a TOML file, overridden by
//! `FJORD_*` environment variables and command-line flags (clap merges the
//! last two; a flag wins over its variable).
//!
//! Every key of the file is listed in [`Config`]; unknown keys are an error
//! so a typo never silently falls back to a default.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::BrokerError;

/// The native protocol's default port.
pub const DEFAULT_PORT: u16 = 9192;

/// Broker settings, as read from the TOML file (all keys optional).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This broker's id in the cluster.
    pub node_id: u32,
    /// Where partitions, the lock file and `broker.addr` live.
    pub data_dir: PathBuf,
    /// `HOST:PORT` of the shared native-protocol port; port 0 picks a free
    /// one.
    pub listen: String,
    /// Host advertised in Metadata; defaults to the listen host.
    pub advertised_host: Option<String>,
    /// Number of shards (executors, one per core); default: every online CPU.
    pub shards: Option<usize>,
    /// Whether each shard also listens on its own port (`port + 1 + shard`,
    /// or a free port when `listen` has port 0), advertised in Metadata so
    /// shard-aware clients skip the cross-shard hop.
    pub shard_ports: bool,
    /// Largest frame (body + payload) accepted; larger ones close the
    /// connection.
    pub frame_bytes_max: u32,
    /// Connections each shard serves at once; more are closed on accept.
    pub connections_max_per_shard: usize,
    /// Responses queued per connection before it stops reading requests.
    pub write_queue_bytes_max: usize,
    /// A connection that sends no complete request for this long is closed.
    pub idle_timeout_ms: u64,
    /// Memory each shard registers with io_uring for storage I/O.
    pub io_memory_bytes: usize,
    /// After SIGTERM, how long shards wait for in-flight requests.
    pub shutdown_grace_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: 0,
            data_dir: PathBuf::from("./fjord-data"),
            listen: format!("127.0.0.1:{DEFAULT_PORT}"),
            advertised_host: None,
            shards: None,
            shard_ports: true,
            frame_bytes_max: 16 * 1024 * 1024,
            connections_max_per_shard: 1024,
            write_queue_bytes_max: 4 * 1024 * 1024,
            idle_timeout_ms: 10 * 60 * 1000,
            // glommio's floor is 64 KiB and its default 10 MiB; the network
            // path uses none of it, storage sizes it for direct I/O.
            io_memory_bytes: 4 * 1024 * 1024,
            shutdown_grace_ms: 10_000,
        }
    }
}

/// Values from flags or the environment; `None` keeps the file's value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub node_id: Option<u32>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub advertised_host: Option<String>,
    pub shards: Option<usize>,
    pub shard_ports: Option<bool>,
    pub frame_bytes_max: Option<u32>,
    pub connections_max_per_shard: Option<usize>,
    pub idle_timeout_ms: Option<u64>,
    pub io_memory_bytes: Option<usize>,
}

impl Config {
    /// Defaults, then `file` (if any), then `overrides`; then validated.
    pub fn load(file: Option<&Path>, overrides: Overrides) -> Result<Config, BrokerError> {
        let mut config = match file {
            None => Config::default(),
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| BrokerError::ConfigRead {
                        path: path.to_owned(),
                        source,
                    })?;
                Config::parse(&text).map_err(|reason| BrokerError::ConfigInvalid {
                    path: path.to_owned(),
                    reason,
                })?
            }
        };
        config.apply(overrides);
        config.validate()?;
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    fn apply(&mut self, o: Overrides) {
        fn set<T>(slot: &mut T, value: Option<T>) {
            if let Some(value) = value {
                *slot = value;
            }
        }
        set(&mut self.node_id, o.node_id);
        set(&mut self.data_dir, o.data_dir);
        set(&mut self.listen, o.listen);
        set(&mut self.shard_ports, o.shard_ports);
        set(&mut self.frame_bytes_max, o.frame_bytes_max);
        set(
            &mut self.connections_max_per_shard,
            o.connections_max_per_shard,
        );
        set(&mut self.idle_timeout_ms, o.idle_timeout_ms);
        set(&mut self.io_memory_bytes, o.io_memory_bytes);
        if o.advertised_host.is_some() {
            self.advertised_host = o.advertised_host;
        }
        if o.shards.is_some() {
            self.shards = o.shards;
        }
    }

    fn validate(&self) -> Result<(), BrokerError> {
        let invalid = |reason: String| Err(BrokerError::InvalidSetting(reason));
        if self.shards == Some(0) {
            return invalid("shards must be at least 1".into());
        }
        if self.frame_bytes_max < 1024 {
            return invalid(format!(
                "frame_bytes_max = {} is below the 1024-byte minimum",
                self.frame_bytes_max
            ));
        }
        if self.connections_max_per_shard == 0 {
            return invalid("connections_max_per_shard must be at least 1".into());
        }
        if self.write_queue_bytes_max == 0 {
            return invalid("write_queue_bytes_max must be at least 1".into());
        }
        if self.idle_timeout_ms == 0 {
            return invalid("idle_timeout_ms must be at least 1".into());
        }
        self.listen_addr()?;
        Ok(())
    }

    /// The resolved listen address.
    pub fn listen_addr(&self) -> Result<SocketAddr, BrokerError> {
        let unresolvable = |reason: String| {
            BrokerError::InvalidSetting(format!(
                "listen = {:?} is not a usable HOST:PORT ({reason})",
                self.listen
            ))
        };
        self.listen
            .to_socket_addrs()
            .map_err(|e| unresolvable(e.to_string()))?
            .next()
            .ok_or_else(|| unresolvable("resolves to no address".into()))
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_work_with_no_file() {
        let config = Config::load(None, Overrides::default()).expect("defaults are valid");
        assert_eq!(config.data_dir, PathBuf::from("./fjord-data"));
        assert_eq!(
            config.listen_addr().expect("resolves"),
            "127.0.0.1:9192".parse::<SocketAddr>().expect("literal")
        );
        assert_eq!(config.shards, None);
    }

    #[test]
    fn file_then_overrides() {
        let mut config =
            Config::parse("listen = \"127.0.0.1:7000\"\nshards = 3\nidle_timeout_ms = 500\n")
                .expect("valid toml");
        assert_eq!(config.shards, Some(3));
        config.apply(Overrides {
            listen: Some("127.0.0.1:0".into()),
            ..Overrides::default()
        });
        assert_eq!(config.listen, "127.0.0.1:0");
        assert_eq!(config.idle_timeout_ms, 500);
        assert_eq!(config.shards, Some(3));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() {
        let error = Config::parse("idle_timeout = 5\n").expect_err("typo must fail");
        assert!(error.contains("idle_timeout"), "{error}");
        let mut config = Config::default();
        config.apply(Overrides {
            shards: Some(0),
            ..Overrides::default()
        });
        assert!(matches!(
            config.validate(),
            Err(BrokerError::InvalidSetting(_))
        ));
        config = Config {
            listen: "no-port-here".into(),
            ..Config::default()
        };
        assert!(config.validate().is_err());
    }
}
