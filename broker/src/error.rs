//! Broker errors. Startup errors ([`BrokerError`]) are environment
//! failures with no local answer: each message says what to change. The
//! errors of ops that cross shards ([`ShardUnavailable`],
//! [`PartitionsError`], [`TopicOpError`]) are typed here, below `ops`,
//! and each maps to a wire [`ErrorCode`] with `code()` where an edge
//! encodes it (the message is its `Display`).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use fjord_schema::{ErrorCode, PartitionId, ShardId};
use fjord_storage::StorageError;

use crate::topic::TopicError;

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
        "data dir {path} belongs to node {found} (its meta.properties), but this is node \
         {configured}; start with --node-id {found}, or give node {configured} its own \
         --data-dir"
    )]
    DataDirOfAnotherNode {
        path: PathBuf,
        found: u32,
        configured: u32,
    },
    /// The metadata log could not be opened or recovered.
    #[error("{0}")]
    MetadataLog(#[from] crate::controller::driver::QuorumError),
    #[error(
        "data dir {path} belongs to cluster {found} (its meta.properties), but this node's \
         metadata log is of cluster {configured}; point --controller-quorum-voters at the \
         voters of cluster {found}, or give this node an empty --data-dir to join cluster \
         {configured}"
    )]
    DataDirOfAnotherCluster {
        path: PathBuf,
        found: String,
        configured: String,
    },
    #[error("{path} is not a valid meta.properties: {reason}; fix or restore it")]
    MetaPropertiesInvalid { path: PathBuf, reason: String },
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
    Registry(#[from] crate::metadata::registry::RegistryError),
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

/// Why an op did not run on its shard. Crosses the mesh (in
/// [`crate::ops::OpResult::Unavailable`]), so it is plain data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardUnavailable {
    /// A single-shard broker (no mesh) was asked to run an op elsewhere.
    #[error("shard {0} is not reachable")]
    NotReachable(ShardId),
    #[error("no shard {0}")]
    NoSuchShard(ShardId),
    /// The target stopped before answering.
    #[error("shard {0} is stopping")]
    Stopping(ShardId),
    /// The peer's end of the mesh closed with requests outstanding.
    #[error("peer shard stopped")]
    PeerStopped,
    /// A group op reached a shard without a group host.
    #[error("shard {0} hosts no groups")]
    NoGroups(ShardId),
}

impl ShardUnavailable {
    /// The code an admin reply carries. The data and group paths answer
    /// with their own retriable codes (e.g. COORDINATOR_NOT_AVAILABLE).
    pub fn code(&self) -> ErrorCode {
        ErrorCode::UnknownServerError
    }
}

/// Why opening a partition failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("partition {topic}-{partition}: {source}")]
    Storage {
        topic: String,
        partition: PartitionId,
        source: StorageError,
    },
    #[error("partition {topic}-{partition}: {message}")]
    Config {
        topic: String,
        partition: PartitionId,
        message: String,
    },
}

/// Why an Open, Delete or Reconfigure of partitions failed on the shard
/// that owns them (or did not reach it).
#[derive(Debug, thiserror::Error)]
pub enum PartitionsError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("{0}")]
    Reconfigure(Joined<ReconfigureError>),
    #[error("{0}")]
    Delete(Joined<RemoveDirError>),
    #[error(transparent)]
    Unavailable(#[from] ShardUnavailable),
    /// The shard answered with another kind of result (a bug).
    #[error("unexpected reply {0}")]
    UnexpectedReply(String),
}

impl PartitionsError {
    pub fn code(&self) -> ErrorCode {
        match self {
            PartitionsError::Unavailable(e) => e.code(),
            PartitionsError::UnexpectedReply(_) => ErrorCode::UnknownServerError,
            _ => ErrorCode::KafkaStorageError,
        }
    }
}

/// Several errors (of shards, or of partitions on one shard), shown
/// joined by "; ".
#[derive(Debug)]
pub struct Joined<E>(pub Vec<E>);

impl<E> Joined<E> {
    /// `Ok` when `errors` is empty, else all of them.
    pub fn result(errors: Vec<E>) -> Result<(), Joined<E>> {
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Joined(errors))
        }
    }
}

/// Several shards' [`PartitionsError`]s.
pub type PartitionsErrors = Joined<PartitionsError>;

impl<E: fmt::Display> fmt::Display for Joined<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Why a topic's new config was not applied to a partition of it.
#[derive(Debug, thiserror::Error)]
pub enum ReconfigureError {
    /// The config does not make a valid log config.
    #[error(transparent)]
    Config(#[from] TopicError),
    #[error("{topic}-{partition}: {source}")]
    Storage {
        topic: String,
        partition: PartitionId,
        source: StorageError,
    },
}

/// A deleted partition's directory that could not be removed.
#[derive(Debug, thiserror::Error)]
#[error("cannot remove {}: {source}", dir.display())]
pub struct RemoveDirError {
    pub dir: PathBuf,
    pub source: io::Error,
}

/// Why a topic admin op (create, delete, grow, alter configs) failed for
/// one topic. `code()` is the wire error code; the message is `Display`.
#[derive(Debug, thiserror::Error)]
pub enum TopicOpError {
    /// Refused by the registry or the config parser.
    #[error("{0}")]
    Refused(#[from] TopicError),
    #[error("num_partitions = {0}: must be positive or -1")]
    PartitionCount(i32),
    #[error("replication_factor = {0}: must be positive or -1")]
    ReplicationFactor(i16),
    #[error("message.timestamp.type = LogAppendTime is not supported yet")]
    LogAppendTime,
    #[error("topic {0:?} does not exist")]
    UnknownTopic(String),
    #[error("the consumer offsets topic cannot grow: groups would move and lose their offsets")]
    OffsetsTopicCannotGrow,
    #[error(
        "the consumer offsets topic's configs are fixed (its retention must stay off until \
         compaction exists)"
    )]
    OffsetsTopicConfigsFixed,
    #[error("the consumer offsets topic cannot be deleted")]
    OffsetsTopicUndeletable,
    /// Registered, but some logs did not open or take the config (they
    /// do at the next start).
    #[error("{0}")]
    Storage(PartitionsErrors),
    /// Deleted from the registry, but some directories were not removed
    /// (harmless leftovers): success, reported with this message.
    #[error("{0}")]
    Leftovers(PartitionsErrors),
    #[error("shard {0} does not own the topic registry")]
    NotRegistryShard(ShardId),
    /// The controller did not answer (no quorum, timeout, stopping).
    #[error("{0}")]
    Controller(crate::controller::driver::ControllerUnavailable),
    /// The registry shard is stopping.
    #[error("stopping")]
    Stopping,
    #[error(transparent)]
    Unavailable(#[from] ShardUnavailable),
    /// The registry shard answered with another kind of result (a bug).
    #[error("unexpected reply {0}")]
    UnexpectedReply(String),
    /// The native edge's name for [`TopicOpError::UnexpectedReply`].
    #[error("the registry shard did not answer: {0}")]
    NoAnswer(String),
}

impl TopicOpError {
    pub fn code(&self) -> ErrorCode {
        match self {
            TopicOpError::Refused(e) => e.code,
            TopicOpError::PartitionCount(_) => ErrorCode::InvalidPartitions,
            TopicOpError::ReplicationFactor(_) => ErrorCode::InvalidReplicationFactor,
            TopicOpError::LogAppendTime => ErrorCode::InvalidConfig,
            TopicOpError::UnknownTopic(_) => ErrorCode::UnknownTopicOrPartition,
            TopicOpError::OffsetsTopicCannotGrow | TopicOpError::OffsetsTopicConfigsFixed => {
                ErrorCode::PolicyViolation
            }
            TopicOpError::OffsetsTopicUndeletable => ErrorCode::InvalidTopicException,
            TopicOpError::Storage(_) => ErrorCode::KafkaStorageError,
            TopicOpError::Leftovers(_) => ErrorCode::None,
            TopicOpError::Unavailable(e) => e.code(),
            TopicOpError::Controller(_) => ErrorCode::RequestTimedOut,
            TopicOpError::NotRegistryShard(_)
            | TopicOpError::Stopping
            | TopicOpError::UnexpectedReply(_)
            | TopicOpError::NoAnswer(_) => ErrorCode::UnknownServerError,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What clients see for each refusal: the code and message the admin
    /// paths sent before these errors were typed.
    #[test]
    fn topic_op_errors_keep_their_wire_code_and_message() {
        let storage = || {
            Joined(vec![
                PartitionsError::Delete(Joined(vec![RemoveDirError {
                    dir: PathBuf::from("/d/t-0"),
                    source: io::Error::new(io::ErrorKind::PermissionDenied, "denied"),
                }])),
                PartitionsError::Unavailable(ShardUnavailable::Stopping(ShardId(2))),
            ])
        };
        let cases = [
            (
                TopicOpError::Refused(TopicError {
                    code: ErrorCode::TopicAlreadyExists,
                    message: "topic \"t\" already exists".to_owned(),
                }),
                ErrorCode::TopicAlreadyExists,
                "topic \"t\" already exists",
            ),
            (
                TopicOpError::PartitionCount(0),
                ErrorCode::InvalidPartitions,
                "num_partitions = 0: must be positive or -1",
            ),
            (
                TopicOpError::ReplicationFactor(0),
                ErrorCode::InvalidReplicationFactor,
                "replication_factor = 0: must be positive or -1",
            ),
            (
                TopicOpError::LogAppendTime,
                ErrorCode::InvalidConfig,
                "message.timestamp.type = LogAppendTime is not supported yet",
            ),
            (
                TopicOpError::UnknownTopic("t".to_owned()),
                ErrorCode::UnknownTopicOrPartition,
                "topic \"t\" does not exist",
            ),
            (
                TopicOpError::OffsetsTopicCannotGrow,
                ErrorCode::PolicyViolation,
                "the consumer offsets topic cannot grow: groups would move and lose their offsets",
            ),
            (
                TopicOpError::OffsetsTopicConfigsFixed,
                ErrorCode::PolicyViolation,
                "the consumer offsets topic's configs are fixed (its retention must stay off \
                 until compaction exists)",
            ),
            (
                TopicOpError::OffsetsTopicUndeletable,
                ErrorCode::InvalidTopicException,
                "the consumer offsets topic cannot be deleted",
            ),
            (
                TopicOpError::Storage(storage()),
                ErrorCode::KafkaStorageError,
                "cannot remove /d/t-0: denied; shard 2 is stopping",
            ),
            (
                TopicOpError::Leftovers(storage()),
                ErrorCode::None,
                "cannot remove /d/t-0: denied; shard 2 is stopping",
            ),
            (
                TopicOpError::NotRegistryShard(ShardId(1)),
                ErrorCode::UnknownServerError,
                "shard 1 does not own the topic registry",
            ),
            (
                TopicOpError::Stopping,
                ErrorCode::UnknownServerError,
                "stopping",
            ),
            (
                TopicOpError::Unavailable(ShardUnavailable::NotReachable(ShardId(0))),
                ErrorCode::UnknownServerError,
                "shard 0 is not reachable",
            ),
        ];
        for (error, code, message) in cases {
            assert_eq!(error.code(), code, "{error:?}");
            assert_eq!(error.to_string(), message, "{error:?}");
        }
    }
}

#[cfg(test)]
mod controller_compat_tests;
