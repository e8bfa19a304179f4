//! Broker errors. Startup errors are environment failures with no local
//! answer: each message says what to change.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot read config file {path}: {source}")]
    ConfigRead { path: PathBuf, source: io::Error },
    #[error("config file {path} is invalid: {reason}")]
    ConfigInvalid { path: PathBuf, reason: String },
    #[error("invalid setting: {0}")]
    InvalidSetting(String),
    #[error(
        "data dir {path} is not usable: {source}; create it and make it writable by this \
         user, or pass --data-dir / FJORD_DATA_DIR"
    )]
    DataDirUnusable { path: PathBuf, source: io::Error },
    #[error(
        "data dir {path} is locked by another fjord process{holder}; stop that broker or \
         use another --data-dir"
    )]
    DataDirLocked { path: PathBuf, holder: String },
    #[error(
        "{addr} is already in use{what}; stop whatever listens there or choose another \
         --listen (port 0 picks a free one)"
    )]
    PortInUse { addr: SocketAddr, what: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error(
        "--shards {shards} but only {cpus} CPUs are available to this process; use at most {cpus}"
    )]
    TooManyShards { shards: usize, cpus: usize },
    #[error(
        "cannot start shard {shard} executor: {reason}. glommio needs io_uring: Linux 5.8 or \
         newer, `sysctl kernel.io_uring_disabled=0`, a seccomp profile that allows io_uring \
         (containers), and a memlock limit above io_memory_bytes (`ulimit -l`)"
    )]
    Executor { shard: usize, reason: String },
    #[error("shard {shard} stopped during startup: {reason}")]
    ShardStartup { shard: usize, reason: String },
    #[error("shard {shard} failed: {reason}")]
    ShardFailed { shard: usize, reason: String },
    #[error("cannot install signal handling: {0}")]
    Signals(io::Error),
    #[error("{0}; fix or restore the file, or start with an empty data dir")]
    Registry(#[from] crate::topics::RegistryError),
    #[error(
        "shard {shard} cannot open its partitions: {reason}; restore the partition from a \
         replica or backup, or move its directory aside to start without it"
    )]
    Recovery { shard: usize, reason: String },
    #[error("repair failed: {0}")]
    Repair(String),
    #[error("cannot write {path}: {source}")]
    AddrFile { path: PathBuf, source: io::Error },
}
