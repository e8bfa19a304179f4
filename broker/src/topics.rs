//! Topics: name rules, per-topic configuration (Kafka's topic config keys),
//! and the registry that records each topic's partitions and the shard that
//! owns each one.
//!
//! The registry is the placement table: it is written to
//! `<data>/topics.toml` (write to a temporary file, fdatasync, rename,
//! fsync the directory) before a create or delete is acknowledged, so a
//! restart puts every partition back on the shard that holds its log.
//! The temporary file is `<data>/topics.spare`, preallocated after each
//! write for the next one, so rewriting the registry needs no free block:
//! a topic can be deleted (its space given back) on a full disk.
//!
//! Lives on: shard 0 (the only writer); other shards receive copies of the
//! table by message. Owns: the registry file.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use fjord_schema::batch::TimestampType;
use fjord_schema::compression::Compression;
use fjord_schema::{ErrorCode, PartitionId, ShardId};
use fjord_storage::{FlushPolicy, LogConfig};
use serde::{Deserialize, Serialize};

/// Kafka's limit on topic name length.
pub const TOPIC_NAME_LEN_MAX: usize = 249;
pub const REGISTRY_FILE: &str = "topics.toml";
/// The next registry write goes into this preallocated file (never read).
pub const REGISTRY_SPARE_FILE: &str = "topics.spare";
/// The spare holds at least this much, and at least twice the registry.
const REGISTRY_SPARE_BYTES_MIN: u64 = 64 << 10;

/// Why a topic operation was refused; carries the wire error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TopicError {
    pub code: ErrorCode,
    pub message: String,
}

impl TopicError {
    fn new(code: ErrorCode, message: impl Into<String>) -> TopicError {
        TopicError {
            code,
            message: message.into(),
        }
    }
}

/// Kafka's internal topics: made by the broker itself, never auto-created
/// on a client's Metadata request (`__transaction_state` does not exist
/// until transactions do).
pub const INTERNAL_TOPICS: [&str; 2] = ["__consumer_offsets", "__transaction_state"];

pub fn is_internal_topic(name: &str) -> bool {
    INTERNAL_TOPICS.contains(&name)
}

/// The partition count a CreateTopics entry with explicit replica
/// assignments asks for, checked as Kafka's controller does
/// (`ReplicationControlManager`): the count and replication factor must
/// then be -1 (INVALID_REQUEST); each partition once, ids `0..n`, each with
/// a non-empty replica list naming only live brokers, none twice, and all
/// with the same number of replicas (INVALID_REPLICA_ASSIGNMENT). `live`
/// are the brokers that may hold replicas (this node, on a single node).
pub fn partitions_from_assignments(
    num_partitions: i32,
    replication_factor: i16,
    assignments: &[(i32, Vec<i32>)],
    live: &[i32],
) -> Result<u32, TopicError> {
    assert!(!assignments.is_empty());
    let invalid = |message: String| {
        Err(TopicError::new(
            ErrorCode::InvalidReplicaAssignment,
            message,
        ))
    };
    if replication_factor != -1 {
        return Err(TopicError::new(
            ErrorCode::InvalidRequest,
            "A manual partition assignment was specified, but replication factor was not set to -1.",
        ));
    }
    if num_partitions != -1 {
        return Err(TopicError::new(
            ErrorCode::InvalidRequest,
            "A manual partition assignment was specified, but numPartitions was not set to -1.",
        ));
    }
    let mut seen: BTreeMap<i32, usize> = BTreeMap::new();
    for (partition, replicas) in assignments {
        if seen.contains_key(partition) {
            return invalid(format!(
                "Found multiple manual partition assignments for partition {partition}"
            ));
        }
        if replicas.is_empty() {
            return invalid(
                "The manual partition assignment includes an empty replica list.".to_owned(),
            );
        }
        let mut sorted = replicas.clone();
        sorted.sort_unstable();
        for (i, broker) in sorted.iter().enumerate() {
            if !live.contains(broker) {
                return invalid(format!(
                    "The manual partition assignment includes broker {broker}, but no such broker is registered."
                ));
            }
            if i > 0 && sorted[i - 1] == *broker {
                return invalid(format!(
                    "The manual partition assignment includes the broker {broker} more than once."
                ));
            }
        }
        if let Some(first) = seen.values().next().filter(|n| **n != replicas.len()) {
            return invalid(format!(
                "The manual partition assignment includes a partition with {} replica(s), but this is \
                 not consistent with previous partitions, which have {first} replica(s).",
                replicas.len()
            ));
        }
        seen.insert(*partition, replicas.len());
    }
    let count = seen.len();
    if !seen.keys().copied().eq((0..count).map(|p| p as i32)) {
        return invalid("partitions should be a consecutive 0-based integer sequence".to_owned());
    }
    u32::try_from(count).or_else(|_| invalid(format!("{count} partitions")))
}

/// Kafka's rules: 1..=249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    let invalid = |why: &str| {
        Err(TopicError::new(
            ErrorCode::InvalidTopicException,
            format!("invalid topic name {name:?}: {why}"),
        ))
    };
    if name.is_empty() {
        return invalid("empty");
    }
    if name.len() > TOPIC_NAME_LEN_MAX {
        return invalid("longer than 249 characters");
    }
    if name == "." || name == ".." {
        return invalid("'.' and '..' are reserved");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return invalid("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// Per-topic configuration, with Kafka's key names. Values absent from a
/// create request take the broker's defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    /// `retention.ms`; `None` (-1 on the wire) keeps data forever.
    pub retention_ms: Option<u64>,
    /// `retention.bytes`; `None` (-1) has no size limit.
    pub retention_bytes: Option<u64>,
    /// `segment.bytes`.
    pub segment_bytes: u64,
    /// `segment.ms`.
    pub segment_ms: Option<u64>,
    /// `flush.messages`; `None`: no count trigger.
    pub flush_messages: Option<u64>,
    /// `flush.ms`; `None`: no time trigger.
    pub flush_ms: Option<u64>,
    /// `flush.before.ack` (Fjord): fdatasync before acknowledging acks=all.
    pub flush_before_ack: bool,
    /// `max.message.bytes`: largest batch accepted.
    pub max_message_bytes: u64,
    /// `message.timestamp.type`: CreateTime or LogAppendTime.
    pub log_append_time: bool,
    /// `min.insync.replicas`.
    pub min_insync_replicas: u32,
    /// `index.interval.bytes`.
    pub index_interval_bytes: u64,
    /// `compression.type`: the codec batches are stored with (the broker
    /// recompresses a batch that arrives with another), or `producer`.
    #[serde(default)]
    pub compression_type: CompressionType,
    /// Kafka topic configs accepted but without effect here (see
    /// [`OTHER_TOPIC_CONFIGS`]), as set; absent keys have their default.
    #[serde(default)]
    pub inert: BTreeMap<String, String>,
}

/// Kafka's `compression.type` topic config.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompressionType {
    /// Keep the codec the producer used (Kafka's default).
    #[default]
    Producer,
    Uncompressed,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl CompressionType {
    const NAMES: [(&'static str, CompressionType); 6] = [
        ("producer", CompressionType::Producer),
        ("uncompressed", CompressionType::Uncompressed),
        ("gzip", CompressionType::Gzip),
        ("snappy", CompressionType::Snappy),
        ("lz4", CompressionType::Lz4),
        ("zstd", CompressionType::Zstd),
    ];

    pub fn parse(value: &str) -> Option<CompressionType> {
        let value = value.trim();
        CompressionType::NAMES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(value))
            .map(|(_, c)| *c)
    }

    pub fn name(self) -> &'static str {
        CompressionType::NAMES
            .iter()
            .find(|(_, c)| *c == self)
            .map(|(name, _)| *name)
            .expect("every variant is named")
    }

    /// The codec stored batches must have; `None` keeps the producer's.
    pub fn target(self) -> Option<Compression> {
        match self {
            CompressionType::Producer => None,
            CompressionType::Uncompressed => Some(Compression::None),
            CompressionType::Gzip => Some(Compression::Gzip),
            CompressionType::Snappy => Some(Compression::Snappy),
            CompressionType::Lz4 => Some(Compression::Lz4),
            CompressionType::Zstd => Some(Compression::Zstd),
        }
    }
}

/// What Fjord does with one of Kafka's topic configs it has no field for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtherConfig {
    /// Any well-formed value is accepted, kept and described; it has no
    /// effect here (the reason says why that is honest).
    Inert(ValueKind),
    /// Only Kafka's default is accepted: it is what Fjord does; any other
    /// value is refused with the reason.
    Fixed,
    /// Refused whatever the value, with the reason; not described.
    Refused,
}

/// How an inert config's value is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    Bool,
    /// An integer at least this.
    Long(i64),
    /// A number in 0..=1.
    Ratio,
    /// A comma-separated list (or empty).
    List,
    /// Any string.
    Text,
}

/// Kafka's topic configs (Kafka 4.x "Topic Configs", plus keys older
/// clients still send) that `TopicConfig` has no field for: key, Kafka's
/// default, what Fjord does, and why. Every other Kafka topic config is a
/// field of [`TopicConfig`]; anything else is "unknown".
pub const OTHER_TOPIC_CONFIGS: [(&str, &str, OtherConfig, &str); 24] = {
    use OtherConfig::{Fixed, Inert, Refused};
    use ValueKind::{Bool, List, Long, Ratio, Text};
    const COMPACTION: &str = "it applies to compacted topics only, and compaction is not built yet";
    const TIERED: &str = "tiered storage is not supported";
    const TIMESTAMPS: &str = "record timestamps are not validated against the broker clock yet";
    const LEVELS: &str = "compression levels are not configurable yet: the broker compresses gzip at level 1, lz4 at its default and zstd at level 1";
    [
        (
            "delete.retention.ms",
            "86400000",
            Inert(Long(0)),
            COMPACTION,
        ),
        ("min.compaction.lag.ms", "0", Inert(Long(0)), COMPACTION),
        (
            "max.compaction.lag.ms",
            "9223372036854775807",
            Inert(Long(1)),
            COMPACTION,
        ),
        ("min.cleanable.dirty.ratio", "0.5", Inert(Ratio), COMPACTION),
        (
            "file.delete.delay.ms",
            "60000",
            Inert(Long(0)),
            "segments are deleted at once, with no delay",
        ),
        (
            "segment.index.bytes",
            "10485760",
            Inert(Long(4)),
            "offset and time indexes grow with their segment",
        ),
        (
            "preallocate",
            "false",
            Inert(Bool),
            "the active segment is always zero-filled ahead of the writer",
        ),
        (
            "unclean.leader.election.enable",
            "false",
            Inert(Bool),
            "a single-node broker has one replica, so no leader election",
        ),
        (
            "leader.replication.throttled.replicas",
            "",
            Inert(List),
            "a single-node broker does not replicate",
        ),
        (
            "follower.replication.throttled.replicas",
            "",
            Inert(List),
            "a single-node broker does not replicate",
        ),
        (
            "message.downconversion.enable",
            "true",
            Inert(Bool),
            "records are always format v2 and only Fetch v4+ is served",
        ),
        (
            "message.format.version",
            "3.0-IV1",
            Inert(Text),
            "records are always format v2",
        ),
        (
            "segment.jitter.ms",
            "0",
            Fixed,
            "segments roll at segment.ms without jitter",
        ),
        (
            "message.timestamp.difference.max.ms",
            "9223372036854775807",
            Fixed,
            TIMESTAMPS,
        ),
        (
            "message.timestamp.before.max.ms",
            "9223372036854775807",
            Fixed,
            TIMESTAMPS,
        ),
        (
            "message.timestamp.after.max.ms",
            "9223372036854775807",
            Fixed,
            TIMESTAMPS,
        ),
        ("remote.storage.enable", "false", Fixed, TIERED),
        ("remote.log.copy.disable", "false", Fixed, TIERED),
        ("remote.log.delete.on.disable", "false", Fixed, TIERED),
        ("local.retention.ms", "-2", Fixed, TIERED),
        ("local.retention.bytes", "-2", Fixed, TIERED),
        ("compression.gzip.level", "-1", Refused, LEVELS),
        ("compression.lz4.level", "9", Refused, LEVELS),
        ("compression.zstd.level", "3", Refused, LEVELS),
    ]
};

fn other_config(key: &str) -> Option<(&'static str, OtherConfig, &'static str)> {
    OTHER_TOPIC_CONFIGS
        .iter()
        .find(|(k, ..)| *k == key)
        .map(|(_, default, kind, why)| (*default, *kind, *why))
}

/// Whether `value` is well formed for an inert config.
fn well_formed(kind: ValueKind, value: &str) -> bool {
    let value = value.trim();
    match kind {
        ValueKind::Bool => {
            value.eq_ignore_ascii_case("true") || value.eq_ignore_ascii_case("false")
        }
        ValueKind::Long(min) => value.parse::<i64>().is_ok_and(|v| v >= min),
        ValueKind::Ratio => value.parse::<f64>().is_ok_and(|v| (0.0..=1.0).contains(&v)),
        ValueKind::List | ValueKind::Text => true,
    }
}

/// Whether `value` means the same as `default` (numbers and booleans by
/// value, the rest as text).
fn same_value(value: &str, default: &str) -> bool {
    let value = value.trim();
    match (value.parse::<i64>(), default.parse::<i64>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => value.eq_ignore_ascii_case(default),
    }
}

impl TopicConfig {
    /// The broker-wide defaults, derived from the storage defaults so the
    /// two cannot drift apart.
    pub fn from_log_config(log: &LogConfig) -> TopicConfig {
        TopicConfig {
            retention_ms: log.retention_ms,
            retention_bytes: log.retention_bytes,
            segment_bytes: log.segment_bytes_max,
            segment_ms: log.segment_age_ms_max,
            flush_messages: log.flush.flush_messages,
            flush_ms: log.flush.flush_ms,
            flush_before_ack: log.flush.flush_before_ack,
            max_message_bytes: log.batch_bytes_max as u64,
            log_append_time: false,
            min_insync_replicas: 1,
            index_interval_bytes: log.index_interval_bytes,
            compression_type: CompressionType::Producer,
            inert: BTreeMap::new(),
        }
    }

    /// Applies `key=value` overrides in order. Unknown keys and bad values
    /// are `INVALID_CONFIG` with a message naming the key.
    pub fn apply<'a>(
        &mut self,
        entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(), TopicError> {
        for (key, value) in entries {
            self.set(key, value)?;
        }
        Ok(())
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), TopicError> {
        let bad = |why: &str| {
            TopicError::new(
                ErrorCode::InvalidConfig,
                format!("invalid value {value:?} for {key}: {why}"),
            )
        };
        // -1 means "no limit" for the optional limits, as in Kafka.
        let optional = || -> Result<Option<u64>, TopicError> {
            match value.trim().parse::<i64>() {
                Ok(-1) => Ok(None),
                Ok(v) if v >= 0 => Ok(Some(v as u64)),
                _ => Err(bad("expected a non-negative integer or -1")),
            }
        };
        let positive = || -> Result<u64, TopicError> {
            match value.trim().parse::<u64>() {
                Ok(v) if v > 0 => Ok(v),
                _ => Err(bad("expected a positive integer")),
            }
        };
        match key {
            "retention.ms" => self.retention_ms = optional()?,
            "retention.bytes" => self.retention_bytes = optional()?,
            "segment.bytes" => self.segment_bytes = positive()?,
            "segment.ms" => self.segment_ms = optional()?,
            // Kafka's "never" for flush.messages / flush.ms is Long.MAX_VALUE.
            "flush.messages" => self.flush_messages = optional()?.filter(|v| *v != i64::MAX as u64),
            "flush.ms" => self.flush_ms = optional()?.filter(|v| *v != i64::MAX as u64),
            "flush.before.ack" => {
                self.flush_before_ack = match value.trim() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(bad("expected true or false")),
                }
            }
            "max.message.bytes" => self.max_message_bytes = positive()?,
            "message.timestamp.type" => {
                self.log_append_time = match value.trim() {
                    "CreateTime" => false,
                    "LogAppendTime" => true,
                    _ => return Err(bad("expected CreateTime or LogAppendTime")),
                }
            }
            "min.insync.replicas" => {
                self.min_insync_replicas = u32::try_from(positive()?)
                    .map_err(|_| bad("expected a positive 32-bit integer"))?
            }
            "index.interval.bytes" => self.index_interval_bytes = positive()?,
            "cleanup.policy" => {
                if value.trim() != "delete" {
                    return Err(bad(
                        "only \"delete\" is supported (compaction is not built yet)",
                    ));
                }
            }
            "compression.type" => {
                self.compression_type = CompressionType::parse(value).ok_or_else(|| {
                    bad("expected producer, uncompressed, gzip, snappy, lz4 or zstd")
                })?
            }
            _ => match other_config(key) {
                Some((_, OtherConfig::Inert(kind), _)) => {
                    if !well_formed(kind, value) {
                        return Err(bad(match kind {
                            ValueKind::Bool => "expected true or false",
                            ValueKind::Long(0) => "expected a non-negative integer",
                            ValueKind::Long(_) => "expected a positive integer",
                            ValueKind::Ratio => "expected a number from 0 to 1",
                            ValueKind::List | ValueKind::Text => "malformed",
                        }));
                    }
                    self.inert.insert(key.to_owned(), value.trim().to_owned());
                }
                Some((default, OtherConfig::Fixed, why)) => {
                    if !same_value(value, default) {
                        return Err(bad(&format!("only {default} is supported: {why}")));
                    }
                }
                Some((_, OtherConfig::Refused, why)) => {
                    return Err(TopicError::new(
                        ErrorCode::InvalidConfig,
                        format!("{key} is not supported: {why}"),
                    ))
                }
                None => {
                    return Err(TopicError::new(
                        ErrorCode::InvalidConfig,
                        format!("unknown topic config {key:?}"),
                    ))
                }
            },
        }
        Ok(())
    }

    /// Whether `key` may be altered: described keys may; a refused Kafka
    /// config gets its reason, anything else is unknown.
    pub fn check_key(&self, key: &str) -> Result<(), TopicError> {
        match other_config(key) {
            Some((_, OtherConfig::Refused, why)) => Err(TopicError::new(
                ErrorCode::InvalidConfig,
                format!("{key} is not supported: {why}"),
            )),
            _ if self.entries().iter().any(|(k, _)| *k == key) => Ok(()),
            _ => Err(TopicError::new(
                ErrorCode::InvalidConfig,
                format!("unknown topic config {key:?}"),
            )),
        }
    }

    /// Every config as Kafka would describe it (`-1` for "no limit").
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        let optional = |v: Option<u64>| v.map_or("-1".to_owned(), |v| v.to_string());
        vec![
            ("cleanup.policy", "delete".to_owned()),
            ("retention.ms", optional(self.retention_ms)),
            ("retention.bytes", optional(self.retention_bytes)),
            ("segment.bytes", self.segment_bytes.to_string()),
            ("segment.ms", optional(self.segment_ms)),
            (
                "flush.messages",
                self.flush_messages
                    .map_or(i64::MAX.to_string(), |v| v.to_string()),
            ),
            (
                "flush.ms",
                self.flush_ms
                    .map_or(i64::MAX.to_string(), |v| v.to_string()),
            ),
            ("flush.before.ack", self.flush_before_ack.to_string()),
            ("max.message.bytes", self.max_message_bytes.to_string()),
            (
                "message.timestamp.type",
                if self.log_append_time {
                    "LogAppendTime"
                } else {
                    "CreateTime"
                }
                .to_owned(),
            ),
            ("min.insync.replicas", self.min_insync_replicas.to_string()),
            (
                "index.interval.bytes",
                self.index_interval_bytes.to_string(),
            ),
            ("compression.type", self.compression_type.name().to_owned()),
        ]
        .into_iter()
        .chain(
            OTHER_TOPIC_CONFIGS
                .iter()
                .filter(|(_, _, kind, _)| *kind != OtherConfig::Refused)
                .map(|(key, default, _, _)| {
                    let value = self.inert.get(*key).map_or(*default, String::as_str);
                    (*key, value.to_owned())
                }),
        )
        .collect()
    }

    pub fn timestamp_type(&self) -> TimestampType {
        if self.log_append_time {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    /// The storage limits of this topic's partition logs, on top of the
    /// broker's base (buffer and read sizes stay the broker's). Checked by
    /// `LogConfig::validate`.
    pub fn log_config(&self, base: &LogConfig) -> Result<LogConfig, TopicError> {
        let mut log = *base;
        log.retention_ms = self.retention_ms;
        log.retention_bytes = self.retention_bytes;
        log.segment_bytes_max = self.segment_bytes;
        log.segment_age_ms_max = self.segment_ms;
        log.index_interval_bytes = self.index_interval_bytes;
        log.batch_bytes_max = usize::try_from(self.max_message_bytes).unwrap_or(usize::MAX);
        // A larger batch needs a larger write buffer (one batch + 2 blocks).
        let needed = (log.batch_bytes_max + 2 * 4096).next_multiple_of(4096);
        log.write_buffer_bytes = log.write_buffer_bytes.max(needed);
        log.flush = FlushPolicy {
            flush_messages: self.flush_messages,
            flush_ms: self.flush_ms,
            flush_before_ack: self.flush_before_ack,
        };
        log.validate()
            .map_err(|e| TopicError::new(ErrorCode::InvalidConfig, e.to_string()))?;
        Ok(log)
    }
}

/// Kafka's list-typed topic configs: APPEND and SUBTRACT apply only to
/// these (comma-separated values).
pub const LIST_CONFIGS: [&str; 1] = ["cleanup.policy"];

/// One IncrementalAlterConfigs operation, Kafka's `OpType` numbering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigOp {
    Set,
    /// Revert to the broker default.
    Delete,
    Append,
    Subtract,
}

impl ConfigOp {
    pub fn from_kafka(op: i8) -> Option<ConfigOp> {
        match op {
            0 => Some(ConfigOp::Set),
            1 => Some(ConfigOp::Delete),
            2 => Some(ConfigOp::Append),
            3 => Some(ConfigOp::Subtract),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigChange {
    pub key: String,
    pub op: ConfigOp,
    pub value: Option<String>,
}

/// How a topic's explicitly set configs change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigAlter {
    /// AlterConfigs: exactly these keys are set; every other key reverts
    /// to the broker default.
    Replace(Vec<(String, String)>),
    /// IncrementalAlterConfigs: each key changes alone.
    Incremental(Vec<ConfigChange>),
}

impl ConfigAlter {
    /// The topic's explicit configs after this change, given the current
    /// ones and the effective config (list operations on a key that is not
    /// set start from its default value). Keys must be known topic configs
    /// and appear once; values are checked afterwards by
    /// [`TopicConfig::apply`], the parser CreateTopics uses.
    pub fn overrides(
        &self,
        current: &BTreeMap<String, String>,
        effective: &TopicConfig,
    ) -> Result<BTreeMap<String, String>, TopicError> {
        let described: BTreeMap<&str, String> = effective.entries().into_iter().collect();
        let mut seen: Vec<String> = Vec::new();
        let mut check_key = |key: &str| -> Result<(), TopicError> {
            effective.check_key(key)?;
            if seen.iter().any(|k| k == key) {
                return Err(TopicError::new(
                    ErrorCode::InvalidRequest,
                    format!("topic config {key:?} appears more than once"),
                ));
            }
            seen.push(key.to_owned());
            Ok(())
        };
        match self {
            ConfigAlter::Replace(entries) => {
                let mut next = BTreeMap::new();
                for (key, value) in entries {
                    check_key(key)?;
                    next.insert(key.clone(), value.clone());
                }
                Ok(next)
            }
            ConfigAlter::Incremental(changes) => {
                let mut next = current.clone();
                for change in changes {
                    let key = change.key.as_str();
                    check_key(key)?;
                    let value = || {
                        change.value.clone().ok_or_else(|| {
                            TopicError::new(
                                ErrorCode::InvalidConfig,
                                format!("{:?} of {key} needs a value", change.op),
                            )
                        })
                    };
                    match change.op {
                        ConfigOp::Set => {
                            next.insert(key.to_owned(), value()?);
                        }
                        ConfigOp::Delete => {
                            next.remove(key);
                        }
                        ConfigOp::Append | ConfigOp::Subtract => {
                            if !LIST_CONFIGS.contains(&key) {
                                return Err(TopicError::new(
                                    ErrorCode::InvalidConfig,
                                    format!(
                                        "{:?} applies to list configs only; {key} is not one",
                                        change.op
                                    ),
                                ));
                            }
                            let mut items = list_items(&described[key]);
                            let given = list_items(&value()?);
                            if change.op == ConfigOp::Append {
                                for item in given {
                                    if !items.contains(&item) {
                                        items.push(item);
                                    }
                                }
                            } else {
                                items.retain(|item| !given.contains(item));
                            }
                            next.insert(key.to_owned(), items.join(","));
                        }
                    }
                }
                Ok(next)
            }
        }
    }
}

fn list_items(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

/// One topic: its partitions' shards (index = partition id) and config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    /// `shards[p]` owns partition `p`.
    pub shards: Vec<u16>,
    pub config: TopicConfig,
    pub created_ms: i64,
    /// The configs set explicitly on the topic (at creation or by an
    /// alter), as given; the other keys of `config` are broker defaults.
    /// `None` only in registries written before this was tracked (see
    /// [`TopicRegistry::adopt_untracked_overrides`]).
    #[serde(default)]
    pub overrides: Option<BTreeMap<String, String>>,
}

impl TopicMeta {
    /// Whether `key` was set on the topic (Kafka's DYNAMIC_TOPIC_CONFIG)
    /// rather than taken from the broker's defaults.
    pub fn is_override(&self, key: &str) -> bool {
        self.overrides.as_ref().is_some_and(|o| o.contains_key(key))
    }

    pub fn partition_count(&self) -> u32 {
        self.shards.len() as u32
    }

    pub fn shard_of(&self, partition: PartitionId) -> Option<ShardId> {
        self.shards
            .get(partition.get() as usize)
            .map(|s| ShardId(*s))
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RegistryFile {
    #[serde(default)]
    topics: Vec<TopicMeta>,
}

/// The topic registry and placement table, persisted in the data dir.
#[derive(Debug)]
pub struct TopicRegistry {
    path: PathBuf,
    shard_count: u16,
    topics: BTreeMap<String, TopicMeta>,
    partitions_max: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot read the topic registry {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the topic registry {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the topic registry {path} is not valid: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

impl TopicRegistry {
    /// Loads `<data_dir>/topics.toml` (an absent file is an empty
    /// registry). Partitions placed on shards this process does not have
    /// (the broker was restarted with fewer `--shards`) are an error: their
    /// logs would be orphaned.
    pub fn open(
        data_dir: &Path,
        shard_count: u16,
        partitions_max: u32,
    ) -> Result<TopicRegistry, RegistryError> {
        assert!(shard_count > 0);
        let path = data_dir.join(REGISTRY_FILE);
        let file = match fs::read_to_string(&path) {
            Ok(text) => {
                toml::from_str::<RegistryFile>(&text).map_err(|e| RegistryError::Invalid {
                    path: path.clone(),
                    reason: e.to_string(),
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => RegistryFile::default(),
            Err(source) => return Err(RegistryError::Read { path, source }),
        };
        let mut topics = BTreeMap::new();
        for topic in file.topics {
            let invalid = |reason: String| RegistryError::Invalid {
                path: path.clone(),
                reason,
            };
            validate_topic_name(&topic.name).map_err(|e| invalid(e.message))?;
            if let Some(shard) = topic.shards.iter().find(|s| **s >= shard_count) {
                return Err(invalid(format!(
                    "topic {} has a partition on shard {shard}, but the broker runs {shard_count} shards: \
                     start it with --shards {} or more",
                    topic.name,
                    shard + 1
                )));
            }
            if topics.insert(topic.name.clone(), topic).is_some() {
                return Err(invalid("a topic is listed twice".to_owned()));
            }
        }
        let registry = TopicRegistry {
            path,
            shard_count,
            topics,
            partitions_max,
        };
        let len = fs::metadata(&registry.path).map_or(0, |m| m.len());
        if !spare_holds(&registry.spare_path(), spare_bytes(len)) {
            reserve_spare(&registry.spare_path(), spare_bytes(len));
        }
        Ok(registry)
    }

    fn spare_path(&self) -> PathBuf {
        self.path.with_file_name(REGISTRY_SPARE_FILE)
    }

    pub fn get(&self, name: &str) -> Option<&TopicMeta> {
        self.topics.get(name)
    }

    pub fn topics(&self) -> impl Iterator<Item = &TopicMeta> {
        self.topics.values()
    }

    pub fn partition_total(&self) -> u64 {
        self.topics.values().map(|t| t.shards.len() as u64).sum()
    }

    /// Places a new topic's partitions on the least-loaded shards (ties to
    /// the lowest shard id, so placement is deterministic) and persists the
    /// registry before returning.
    pub fn create(
        &mut self,
        name: &str,
        partitions: u32,
        config: TopicConfig,
        overrides: BTreeMap<String, String>,
        now_ms: i64,
    ) -> Result<&TopicMeta, TopicError> {
        let meta = self.plan_create(name, partitions, config, overrides, now_ms)?;
        self.topics.insert(name.to_owned(), meta);
        if let Err(e) = self.persist() {
            self.topics.remove(name);
            return Err(TopicError::new(ErrorCode::KafkaStorageError, e.to_string()));
        }
        Ok(&self.topics[name])
    }

    /// Everything `create` checks, without changing anything (also serves
    /// `validate_only`).
    pub fn plan_create(
        &self,
        name: &str,
        partitions: u32,
        config: TopicConfig,
        overrides: BTreeMap<String, String>,
        now_ms: i64,
    ) -> Result<TopicMeta, TopicError> {
        validate_topic_name(name)?;
        if self.topics.contains_key(name) {
            return Err(TopicError::new(
                ErrorCode::TopicAlreadyExists,
                format!("topic {name:?} already exists"),
            ));
        }
        if partitions == 0 {
            return Err(TopicError::new(
                ErrorCode::InvalidPartitions,
                "a topic needs at least one partition",
            ));
        }
        if !self.room_for(partitions) {
            return Err(TopicError::new(
                ErrorCode::PolicyViolation,
                format!(
                    "creating {partitions} partitions would exceed the broker's limit of {} partitions",
                    self.partitions_max
                ),
            ));
        }
        Ok(TopicMeta {
            name: name.to_owned(),
            shards: self.place(partitions),
            config,
            created_ms: now_ms,
            overrides: Some(overrides),
        })
    }

    fn room_for(&self, partitions: u32) -> bool {
        self.partition_total() + u64::from(partitions) <= u64::from(self.partitions_max)
    }

    /// Shards for `partitions` new partitions: each on the least-loaded
    /// shard at that point (ties to the lowest shard id, so placement is
    /// deterministic). Topic creation and partition growth both use it.
    fn place(&self, partitions: u32) -> Vec<u16> {
        let mut load = vec![0u64; usize::from(self.shard_count)];
        for topic in self.topics.values() {
            for shard in &topic.shards {
                load[usize::from(*shard)] += 1;
            }
        }
        (0..partitions)
            .map(|_| {
                let (shard, _) = load
                    .iter()
                    .enumerate()
                    .min_by_key(|(shard, count)| (**count, *shard))
                    .expect("at least one shard");
                load[shard] += 1;
                shard as u16
            })
            .collect()
    }

    /// Grows `name` to `count` partitions (CreatePartitions): the new ones
    /// are placed as at creation; persisted before returning. Returns the
    /// new meta; the caller opens the new partitions' logs afterwards.
    pub fn add_partitions(&mut self, name: &str, count: u32) -> Result<&TopicMeta, TopicError> {
        let grown = self.plan_add_partitions(name, count)?;
        let old = self
            .topics
            .insert(name.to_owned(), grown)
            .expect("planned on an existing topic");
        if let Err(e) = self.persist() {
            self.topics.insert(name.to_owned(), old);
            return Err(TopicError::new(ErrorCode::KafkaStorageError, e.to_string()));
        }
        Ok(&self.topics[name])
    }

    /// Everything `add_partitions` checks, without changing anything (also
    /// serves `validate_only`).
    pub fn plan_add_partitions(&self, name: &str, count: u32) -> Result<TopicMeta, TopicError> {
        let Some(meta) = self.topics.get(name) else {
            return Err(TopicError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic {name:?} does not exist"),
            ));
        };
        let current = meta.partition_count();
        if count <= current {
            return Err(TopicError::new(
                ErrorCode::InvalidPartitions,
                format!(
                    "topic {name:?} has {current} partitions; the new count {count} must be larger"
                ),
            ));
        }
        let added = count - current;
        if !self.room_for(added) {
            return Err(TopicError::new(
                ErrorCode::InvalidPartitions,
                format!(
                    "adding {added} partitions would exceed the broker's limit of {} partitions",
                    self.partitions_max
                ),
            ));
        }
        let mut grown = meta.clone();
        grown.shards.extend(self.place(added));
        assert_eq!(grown.partition_count(), count);
        Ok(grown)
    }

    /// Replaces a topic's config and its explicitly set keys; persisted
    /// before returning. Returns the previous meta.
    pub fn set_config(
        &mut self,
        name: &str,
        config: TopicConfig,
        overrides: BTreeMap<String, String>,
    ) -> Result<TopicMeta, TopicError> {
        let Some(meta) = self.topics.get_mut(name) else {
            return Err(TopicError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic {name:?} does not exist"),
            ));
        };
        let old = meta.clone();
        meta.config = config;
        meta.overrides = Some(overrides);
        if let Err(e) = self.persist() {
            self.topics.insert(name.to_owned(), old);
            return Err(TopicError::new(ErrorCode::KafkaStorageError, e.to_string()));
        }
        Ok(old)
    }

    /// Registries written before explicit keys were tracked: takes the
    /// keys whose value differs from the broker's `defaults` as set on the
    /// topic (what was given at creation, as far as it can be told). Kept
    /// in memory; written with the next registry change.
    pub fn adopt_untracked_overrides(&mut self, defaults: &TopicConfig) {
        let default_entries: BTreeMap<&str, String> = defaults.entries().into_iter().collect();
        for meta in self.topics.values_mut() {
            if meta.overrides.is_some() {
                continue;
            }
            let differing = meta
                .config
                .entries()
                .into_iter()
                .filter(|(key, value)| default_entries.get(key) != Some(value))
                .map(|(key, value)| (key.to_owned(), value))
                .collect();
            meta.overrides = Some(differing);
        }
    }

    /// Removes a topic from the registry (persisted before returning). The
    /// caller deletes its partition directories afterwards: a crash in
    /// between leaves orphan directories, never a registered topic with
    /// missing logs.
    pub fn delete(&mut self, name: &str) -> Result<TopicMeta, TopicError> {
        let Some(meta) = self.topics.remove(name) else {
            return Err(TopicError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic {name:?} does not exist"),
            ));
        };
        if let Err(e) = self.persist() {
            self.topics.insert(name.to_owned(), meta);
            return Err(TopicError::new(ErrorCode::KafkaStorageError, e.to_string()));
        }
        Ok(meta)
    }

    fn persist(&self) -> Result<(), RegistryError> {
        let file = RegistryFile {
            topics: self.topics.values().cloned().collect(),
        };
        let text = toml::to_string(&file).map_err(|e| RegistryError::Invalid {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        write_through_spare(&self.path, &self.spare_path(), text.as_bytes()).map_err(|source| {
            RegistryError::Write {
                path: self.path.clone(),
                source,
            }
        })
    }
}

/// Size of the spare for a registry of `len` bytes.
fn spare_bytes(len: u64) -> u64 {
    REGISTRY_SPARE_BYTES_MIN.max(len.saturating_mul(2))
}

/// Whether `spare` has `len` bytes allocated (by `reserve_spare`).
fn spare_holds(spare: &Path, len: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(spare).is_ok_and(|m| m.is_file() && m.len() >= len && m.blocks() * 512 >= len)
}

/// Preallocates `spare` (best effort: a full disk leaves none, and the
/// next registry write then needs free space as any file does).
fn reserve_spare(spare: &Path, len: u64) {
    use std::os::fd::AsRawFd;
    let reserved = fs::File::create(spare).and_then(|file| {
        let len = libc::off_t::try_from(len).map_err(std::io::Error::other)?;
        // SAFETY: posix_fallocate on a descriptor we own; no memory passed.
        match unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) } {
            0 => Ok(()),
            errno => Err(std::io::Error::from_raw_os_error(errno)),
        }
    });
    if let Err(error) = reserved {
        tracing::warn!(
            path = %spare.display(),
            %error,
            "cannot preallocate the topic registry's spare file; deleting a topic on a full disk may fail until it can be"
        );
        let _ = fs::remove_file(spare);
    }
}

/// [`write_atomically`] through the preallocated `spare` when it holds
/// `bytes`: writing inside allocated blocks and cutting the file needs no
/// free space, and the rename frees the old registry's blocks. Then a new
/// spare is preallocated for the next write.
fn write_through_spare(path: &Path, spare: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let len = bytes.len() as u64;
    if spare_holds(spare, len) {
        let mut file = fs::OpenOptions::new().write(true).open(spare)?;
        file.write_all(bytes)?;
        file.set_len(len)?;
        file.sync_data()?;
        drop(file);
        fs::rename(spare, path)?;
        fs::File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()?;
    } else {
        write_atomically(path, bytes)?;
    }
    reserve_spare(spare, spare_bytes(len));
    Ok(())
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or
/// the new content: write a temporary file, fdatasync it, rename it over
/// `path`, fsync the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_data()?;
    }
    fs::rename(&tmp, path)?;
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> TopicConfig {
        TopicConfig::from_log_config(&LogConfig::default())
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        for good in ["a", "orders.v1", "A_b-c", &"x".repeat(249)] {
            assert!(validate_topic_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a b", "a/b", "ü", &"x".repeat(250)] {
            let error = validate_topic_name(bad).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidTopicException, "{bad}");
        }
    }

    #[test]
    fn configs_parse_describe_and_reject() {
        let mut config = defaults();
        config
            .apply([
                ("retention.ms", "-1"),
                ("retention.bytes", "1048576"),
                ("segment.bytes", "16777216"),
                ("flush.messages", "1"),
                ("flush.ms", "9223372036854775807"),
                ("message.timestamp.type", "LogAppendTime"),
                ("min.insync.replicas", "2"),
                ("cleanup.policy", "delete"),
            ])
            .unwrap();
        assert_eq!(config.retention_ms, None);
        assert_eq!(config.retention_bytes, Some(1 << 20));
        assert_eq!(config.flush_messages, Some(1));
        assert_eq!(config.flush_ms, None);
        assert_eq!(config.timestamp_type(), TimestampType::LogAppendTime);
        let described: BTreeMap<_, _> = config.entries().into_iter().collect();
        assert_eq!(described["retention.ms"], "-1");
        assert_eq!(described["segment.bytes"], "16777216");
        assert_eq!(described["min.insync.replicas"], "2");

        let log = config.log_config(&LogConfig::default()).unwrap();
        assert_eq!(log.segment_bytes_max, 16 << 20);
        assert_eq!(log.flush.flush_messages, Some(1));

        for (key, value) in [
            ("retention.ms", "-2"),
            ("segment.bytes", "0"),
            ("flush.before.ack", "yes"),
            ("cleanup.policy", "compact"),
            ("no.such.key", "1"),
        ] {
            let error = defaults().apply([(key, value)]).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidConfig, "{key}={value}");
            assert!(error.message.contains(key), "{}", error.message);
        }
        // Values the storage layer refuses are refused at create time.
        let mut tiny = defaults();
        tiny.apply([("segment.bytes", "100")]).unwrap();
        assert_eq!(
            tiny.log_config(&LogConfig::default()).unwrap_err().code,
            ErrorCode::InvalidConfig
        );
    }

    #[test]
    fn kafka_configs_without_a_field_are_inert_fixed_or_refused_with_a_reason() {
        for (key, default, kind, why) in OTHER_TOPIC_CONFIGS {
            let mut config = defaults();
            let described: BTreeMap<_, _> = config.entries().into_iter().collect();
            match kind {
                OtherConfig::Refused => {
                    let error = config.apply([(key, default)]).unwrap_err();
                    assert!(error.message.contains(why), "{key}: {}", error.message);
                    assert!(!described.contains_key(key), "{key}");
                    assert!(config.check_key(key).is_err());
                }
                OtherConfig::Fixed | OtherConfig::Inert(_) => {
                    config.apply([(key, default)]).unwrap();
                    assert_eq!(described[key], default, "{key}");
                    config.check_key(key).unwrap();
                }
            }
        }
        let mut config = defaults();
        config
            .apply([("segment.jitter.ms", "0"), ("preallocate", "true")])
            .unwrap();
        let described: BTreeMap<_, _> = config.entries().into_iter().collect();
        assert_eq!(described["preallocate"], "true");
        for (key, value, reason) in [
            ("segment.jitter.ms", "5", "without jitter"),
            ("remote.storage.enable", "true", "tiered storage"),
            ("preallocate", "maybe", "true or false"),
            ("min.cleanable.dirty.ratio", "2", "from 0 to 1"),
            ("cleanup.policy", "compact", "compaction is not built yet"),
            ("compression.type", "brotli", "zstd"),
        ] {
            let error = defaults().apply([(key, value)]).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidConfig);
            assert!(error.message.contains(reason), "{key}: {}", error.message);
        }
    }

    #[test]
    fn compression_type_names_a_target_codec_or_keeps_the_producers() {
        let mut config = defaults();
        assert_eq!(config.compression_type.target(), None);
        config.apply([("compression.type", "zstd")]).unwrap();
        assert_eq!(config.compression_type.target(), Some(Compression::Zstd));
        config
            .apply([("compression.type", "uncompressed")])
            .unwrap();
        assert_eq!(config.compression_type.target(), Some(Compression::None));
        let described: BTreeMap<_, _> = config.entries().into_iter().collect();
        assert_eq!(described["compression.type"], "uncompressed");
    }

    #[test]
    fn replica_assignments_follow_kafkas_controller_rules() {
        let live = [1];
        let a = |list: &[(i32, &[i32])]| -> Vec<(i32, Vec<i32>)> {
            list.iter().map(|(p, r)| (*p, r.to_vec())).collect()
        };
        assert_eq!(
            partitions_from_assignments(-1, -1, &a(&[(1, &[1]), (0, &[1]), (2, &[1])]), &live),
            Ok(3)
        );
        type Assignments = Vec<(i32, Vec<i32>)>;
        let cases: [(i32, i16, Assignments, ErrorCode, &str); 8] = [
            (
                3,
                -1,
                a(&[(0, &[1])]),
                ErrorCode::InvalidRequest,
                "numPartitions",
            ),
            (
                -1,
                1,
                a(&[(0, &[1])]),
                ErrorCode::InvalidRequest,
                "replication factor",
            ),
            (
                -1,
                -1,
                a(&[(0, &[])]),
                ErrorCode::InvalidReplicaAssignment,
                "empty replica list",
            ),
            (
                -1,
                -1,
                a(&[(0, &[2])]),
                ErrorCode::InvalidReplicaAssignment,
                "broker 2, but no such broker",
            ),
            (
                -1,
                -1,
                a(&[(0, &[1, 1])]),
                ErrorCode::InvalidReplicaAssignment,
                "broker 1 more than once",
            ),
            (
                -1,
                -1,
                a(&[(0, &[1]), (0, &[1])]),
                ErrorCode::InvalidReplicaAssignment,
                "multiple",
            ),
            (
                -1,
                -1,
                a(&[(0, &[1]), (2, &[1])]),
                ErrorCode::InvalidReplicaAssignment,
                "consecutive 0-based",
            ),
            (
                -1,
                -1,
                a(&[(-1, &[1])]),
                ErrorCode::InvalidReplicaAssignment,
                "consecutive 0-based",
            ),
        ];
        for (count, factor, assignments, code, text) in cases {
            let error =
                partitions_from_assignments(count, factor, &assignments, &live).unwrap_err();
            assert_eq!(error.code, code, "{assignments:?}");
            assert!(error.message.contains(text), "{}", error.message);
        }
    }

    #[test]
    fn registry_writes_go_through_a_preallocated_spare() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let spare = dir.path().join(REGISTRY_SPARE_FILE);
        let allocated = |path: &Path| fs::metadata(path).map_or(0, |m| m.blocks() * 512);
        let mut registry = TopicRegistry::open(dir.path(), 1, 100).unwrap();
        assert!(
            allocated(&spare) >= REGISTRY_SPARE_BYTES_MIN,
            "reserved at open"
        );
        let spare_inode = fs::metadata(&spare).unwrap().ino();
        registry
            .create("a", 1, defaults(), BTreeMap::new(), 1)
            .unwrap();
        // The write went into the spare (now the registry), and a new
        // spare was reserved for the next one.
        let registry_file = dir.path().join(REGISTRY_FILE);
        assert_eq!(fs::metadata(&registry_file).unwrap().ino(), spare_inode);
        assert!(
            allocated(&spare) >= REGISTRY_SPARE_BYTES_MIN,
            "reserved again"
        );
        let text = fs::read_to_string(&registry_file).unwrap();
        assert_eq!(
            fs::metadata(&registry_file).unwrap().len(),
            text.len() as u64
        );
        registry.delete("a").unwrap();
        let reopened = TopicRegistry::open(dir.path(), 1, 100).unwrap();
        assert!(reopened.get("a").is_none());
        // A spare too small (or missing) is not used; writes still work.
        fs::remove_file(&spare).unwrap();
        registry
            .create("b", 1, defaults(), BTreeMap::new(), 2)
            .unwrap();
        assert!(TopicRegistry::open(dir.path(), 1, 100)
            .unwrap()
            .get("b")
            .is_some());
    }

    #[test]
    fn placement_balances_shards_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = TopicRegistry::open(dir.path(), 3, 100).unwrap();
        let a = registry
            .create("a", 4, defaults(), BTreeMap::new(), 1)
            .unwrap()
            .shards
            .clone();
        assert_eq!(a, vec![0, 1, 2, 0]);
        let b = registry
            .create("b", 2, defaults(), BTreeMap::new(), 2)
            .unwrap()
            .shards
            .clone();
        assert_eq!(b, vec![1, 2]);
        assert_eq!(
            registry
                .create("a", 1, defaults(), BTreeMap::new(), 3)
                .unwrap_err()
                .code,
            ErrorCode::TopicAlreadyExists
        );
        assert_eq!(
            registry
                .create("c", 0, defaults(), BTreeMap::new(), 3)
                .unwrap_err()
                .code,
            ErrorCode::InvalidPartitions
        );
        assert_eq!(
            registry
                .create("c", 95, defaults(), BTreeMap::new(), 3)
                .unwrap_err()
                .code,
            ErrorCode::PolicyViolation
        );

        let reopened = TopicRegistry::open(dir.path(), 3, 100).unwrap();
        assert_eq!(reopened.get("a").unwrap().shards, a);
        assert_eq!(
            reopened.get("b").unwrap().shard_of(PartitionId(1)),
            Some(ShardId(2))
        );
        assert_eq!(reopened.get("b").unwrap().shard_of(PartitionId(2)), None);

        let error = TopicRegistry::open(dir.path(), 2, 100).unwrap_err();
        assert!(error.to_string().contains("--shards 3"), "{error}");

        let mut registry = reopened;
        registry.delete("a").unwrap();
        assert_eq!(
            registry.delete("a").unwrap_err().code,
            ErrorCode::UnknownTopicOrPartition
        );
        let reopened = TopicRegistry::open(dir.path(), 3, 100).unwrap();
        assert!(reopened.get("a").is_none());
        assert_eq!(reopened.topics().count(), 1);
    }

    fn set(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn change(key: &str, op: ConfigOp, value: Option<&str>) -> ConfigChange {
        ConfigChange {
            key: key.to_owned(),
            op,
            value: value.map(str::to_owned),
        }
    }

    #[test]
    fn alter_configs_replaces_the_whole_set() {
        let current = set(&[("retention.ms", "1000"), ("segment.bytes", "1048576")]);
        let alter = ConfigAlter::Replace(vec![("retention.bytes".into(), "4096".into())]);
        // retention.ms and segment.bytes were not given: back to defaults.
        assert_eq!(
            alter.overrides(&current, &defaults()).unwrap(),
            set(&[("retention.bytes", "4096")])
        );
        let empty = ConfigAlter::Replace(Vec::new());
        assert!(empty.overrides(&current, &defaults()).unwrap().is_empty());

        let unknown = ConfigAlter::Replace(vec![("no.such.key".into(), "1".into())]);
        let error = unknown.overrides(&current, &defaults()).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidConfig);
        assert!(error.message.contains("no.such.key"), "{}", error.message);
        let twice = ConfigAlter::Replace(vec![
            ("retention.ms".into(), "1".into()),
            ("retention.ms".into(), "2".into()),
        ]);
        assert_eq!(
            twice.overrides(&current, &defaults()).unwrap_err().code,
            ErrorCode::InvalidRequest
        );
    }

    #[test]
    fn incremental_alters_set_delete_append_subtract() {
        let current = set(&[("retention.ms", "1000"), ("segment.bytes", "1048576")]);
        let alter = ConfigAlter::Incremental(vec![
            change("retention.ms", ConfigOp::Set, Some("2000")),
            change("segment.bytes", ConfigOp::Delete, None),
            // Deleting a key that is not set is a no-op, as in Kafka.
            change("flush.ms", ConfigOp::Delete, None),
            change("max.message.bytes", ConfigOp::Set, Some("65536")),
        ]);
        assert_eq!(
            alter.overrides(&current, &defaults()).unwrap(),
            set(&[("max.message.bytes", "65536"), ("retention.ms", "2000")])
        );

        // APPEND starts from the effective (default) value and skips items
        // already there; SUBTRACT removes items.
        let append = ConfigAlter::Incremental(vec![change(
            "cleanup.policy",
            ConfigOp::Append,
            Some("delete"),
        )]);
        let appended = append.overrides(&BTreeMap::new(), &defaults()).unwrap();
        assert_eq!(appended, set(&[("cleanup.policy", "delete")]));
        let append = ConfigAlter::Incremental(vec![change(
            "cleanup.policy",
            ConfigOp::Append,
            Some("compact"),
        )]);
        let appended = append.overrides(&BTreeMap::new(), &defaults()).unwrap();
        assert_eq!(appended, set(&[("cleanup.policy", "delete,compact")]));
        // ... which the value parser then refuses (no compaction yet).
        let error = defaults()
            .apply(appended.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidConfig);
        let subtract = ConfigAlter::Incremental(vec![change(
            "cleanup.policy",
            ConfigOp::Subtract,
            Some("delete"),
        )]);
        assert_eq!(
            subtract.overrides(&BTreeMap::new(), &defaults()).unwrap(),
            set(&[("cleanup.policy", "")])
        );

        // Refused: list operations on non-list keys, SET without a value,
        // unknown keys, a key twice.
        for (changes, code) in [
            (
                vec![change("retention.ms", ConfigOp::Append, Some("1"))],
                ErrorCode::InvalidConfig,
            ),
            (
                vec![change("segment.bytes", ConfigOp::Subtract, Some("1"))],
                ErrorCode::InvalidConfig,
            ),
            (
                vec![change("retention.ms", ConfigOp::Set, None)],
                ErrorCode::InvalidConfig,
            ),
            (
                vec![change("no.such.key", ConfigOp::Delete, None)],
                ErrorCode::InvalidConfig,
            ),
            (
                vec![
                    change("retention.ms", ConfigOp::Set, Some("1")),
                    change("retention.ms", ConfigOp::Delete, None),
                ],
                ErrorCode::InvalidRequest,
            ),
        ] {
            let error = ConfigAlter::Incremental(changes.clone())
                .overrides(&current, &defaults())
                .unwrap_err();
            assert_eq!(error.code, code, "{changes:?}: {}", error.message);
        }
        assert_eq!(ConfigOp::from_kafka(2), Some(ConfigOp::Append));
        assert_eq!(ConfigOp::from_kafka(4), None);
    }

    #[test]
    fn partitions_grow_with_the_create_placement_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = TopicRegistry::open(dir.path(), 3, 10).unwrap();
        registry
            .create("a", 2, defaults(), BTreeMap::new(), 1)
            .unwrap();
        registry
            .create("b", 1, defaults(), BTreeMap::new(), 1)
            .unwrap();
        // Loads [1, 1, 1]: the new partitions go to shards 0, 1, 2, 0.
        let plan = registry.plan_add_partitions("a", 6).unwrap();
        assert_eq!(plan.shards, vec![0, 1, 0, 1, 2, 0]);
        assert_eq!(
            registry.get("a").unwrap().partition_count(),
            2,
            "a plan only"
        );
        assert_eq!(
            registry.add_partitions("a", 6).unwrap().shards,
            vec![0, 1, 0, 1, 2, 0]
        );
        for (name, count, code) in [
            ("a", 6, ErrorCode::InvalidPartitions),
            ("a", 3, ErrorCode::InvalidPartitions),
            ("a", 10, ErrorCode::InvalidPartitions),
            ("nope", 3, ErrorCode::UnknownTopicOrPartition),
        ] {
            let error = registry.add_partitions(name, count).unwrap_err();
            assert_eq!(error.code, code, "{name} to {count}: {}", error.message);
        }

        let mut config = defaults();
        config.apply([("retention.ms", "1000")]).unwrap();
        registry
            .set_config("b", config.clone(), set(&[("retention.ms", "1000")]))
            .unwrap();
        assert_eq!(
            registry
                .set_config("nope", config.clone(), BTreeMap::new())
                .unwrap_err()
                .code,
            ErrorCode::UnknownTopicOrPartition
        );

        let reopened = TopicRegistry::open(dir.path(), 3, 10).unwrap();
        assert_eq!(reopened.get("a").unwrap().shards, vec![0, 1, 0, 1, 2, 0]);
        let b = reopened.get("b").unwrap();
        assert_eq!(b.config, config);
        assert!(b.is_override("retention.ms"));
        assert!(!b.is_override("retention.bytes"));
    }

    #[test]
    fn untracked_overrides_are_inferred_from_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = defaults();
        config.apply([("retention.bytes", "4096")]).unwrap();
        let text = toml::to_string(&RegistryFile {
            topics: vec![TopicMeta {
                name: "old".into(),
                shards: vec![0],
                config,
                created_ms: 1,
                overrides: None,
            }],
        })
        .unwrap();
        fs::write(dir.path().join(REGISTRY_FILE), text).unwrap();
        let mut registry = TopicRegistry::open(dir.path(), 1, 10).unwrap();
        assert!(!registry.get("old").unwrap().is_override("retention.bytes"));
        registry.adopt_untracked_overrides(&defaults());
        let old = registry.get("old").unwrap();
        assert_eq!(old.overrides, Some(set(&[("retention.bytes", "4096")])));
    }

    #[test]
    fn a_corrupt_registry_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(REGISTRY_FILE), "topics = 7").unwrap();
        let error = TopicRegistry::open(dir.path(), 1, 10).unwrap_err();
        assert!(matches!(error, RegistryError::Invalid { .. }), "{error}");
    }
}
