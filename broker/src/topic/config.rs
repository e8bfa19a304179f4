//! Per-topic configuration: [`TopicConfig`] (Kafka's topic config keys,
//! parsed, described and turned into the storage's `LogConfig`), the Kafka
//! configs without a field ([`OTHER_TOPIC_CONFIGS`]) and [`ConfigAlter`],
//! the pure computation of a topic's set keys for AlterConfigs and
//! IncrementalAlterConfigs.

use std::collections::BTreeMap;

use fjord_schema::batch::TimestampType;
use fjord_schema::compression::Compression;
use fjord_schema::ErrorCode;
use fjord_storage::{FlushPolicy, LogConfig};
use serde::{Deserialize, Serialize};

use super::TopicError;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> TopicConfig {
        TopicConfig::from_log_config(&LogConfig::default())
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
}
