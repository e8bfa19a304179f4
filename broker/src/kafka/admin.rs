//! Kafka's admin apis on the Kafka listener: DescribeConfigs, AlterConfigs,
//! IncrementalAlterConfigs, CreatePartitions and DescribeCluster, mapped
//! onto the broker's own state. Topic configs come from the engine's
//! catalog (the registry's snapshot every shard holds); changes go through
//! the engine ([`crate::engine::Engine::alter_topic_configs`],
//! [`crate::engine::Engine::create_partitions`]) to the registry shard,
//! which persists them and applies them on the partitions' owning shards. Broker configs are
//! the startup settings under Kafka's names (`BrokerView::kafka_configs`)
//! and cannot be altered at runtime.
//!
//! Errors are per resource (topic or broker), with Kafka's codes and a
//! message; a request is never refused as a whole.

use std::collections::BTreeMap;

use fjord_schema::ErrorCode;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, BrokerId, CreatePartitionsRequest, CreatePartitionsResponse,
    DescribeClusterRequest, DescribeClusterResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::engine::cluster::ClusterView;
use crate::engine::types::AlterSpec;
use crate::engine::Engine;
use crate::topic::{
    validate_topic_name, ConfigAlter, ConfigChange, ConfigOp, OtherConfig, ValueKind,
    OTHER_TOPIC_CONFIGS,
};

/// The cluster id Metadata and DescribeCluster report.
pub const CLUSTER_ID: &str = "fjord";

/// Kafka's `ConfigResource.Type`.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// Kafka's `ConfigSource`.
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// Kafka's `ConfigType` (DescribeConfigs v3+).
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_SHORT: i8 = 4;
const TYPE_LONG: i8 = 5;
const TYPE_DOUBLE: i8 = 6;
const TYPE_LIST: i8 = 7;

/// DescribeCluster v1's endpoint type for brokers (the only one served).
const ENDPOINT_BROKERS: i8 = 1;

/// Kafka's "authorized operations not requested".
const OPERATIONS_NOT_REQUESTED: i32 = i32::MIN;

/// Without an authorizer every cluster operation is allowed: CREATE (5),
/// ALTER (7), DESCRIBE (8), CLUSTER_ACTION (9), DESCRIBE_CONFIGS (10),
/// ALTER_CONFIGS (11), IDEMPOTENT_WRITE (12) as Kafka's bit field.
const CLUSTER_OPERATIONS: i32 =
    (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);

/// Topic config → the broker config that gives its default (Kafka's
/// synonyms). `flush.before.ack` is Fjord's and has none.
const BROKER_SYNONYMS: [(&str, &str); 12] = [
    ("compression.type", "compression.type"),
    ("cleanup.policy", "log.cleanup.policy"),
    ("retention.ms", "log.retention.ms"),
    ("retention.bytes", "log.retention.bytes"),
    ("segment.bytes", "log.segment.bytes"),
    ("segment.ms", "log.roll.ms"),
    ("flush.messages", "log.flush.interval.messages"),
    ("flush.ms", "log.flush.interval.ms"),
    ("max.message.bytes", "message.max.bytes"),
    ("message.timestamp.type", "log.message.timestamp.type"),
    ("min.insync.replicas", "min.insync.replicas"),
    ("index.interval.bytes", "log.index.interval.bytes"),
];

fn synonym(name: &str, value: &str, source: i8) -> DescribeConfigsSynonym {
    let mut synonym = DescribeConfigsSynonym::default();
    synonym.name = StrBytes::from_string(name.to_owned());
    synonym.value = Some(StrBytes::from_string(value.to_owned()));
    synonym.source = source;
    synonym
}

/// The Kafka type of a topic or broker config.
fn config_type(name: &str) -> i8 {
    match name {
        "cleanup.policy" | "log.cleanup.policy" => TYPE_LIST,
        "message.timestamp.type"
        | "log.message.timestamp.type"
        | "log.dirs"
        | "max.connections.per.ip.overrides" => TYPE_STRING,
        "offsets.topic.replication.factor" | "transaction.state.log.replication.factor" => {
            TYPE_SHORT
        }
        "flush.before.ack" | "auto.create.topics.enable" | "delete.topic.enable" => TYPE_BOOLEAN,
        "retention.ms"
        | "retention.bytes"
        | "segment.ms"
        | "flush.messages"
        | "flush.ms"
        | "log.retention.ms"
        | "log.retention.bytes"
        | "log.roll.ms"
        | "log.flush.interval.messages"
        | "log.flush.interval.ms"
        | "connections.max.idle.ms"
        | "replica.lag.time.max.ms" => TYPE_LONG,
        "compression.type" => TYPE_STRING,
        _ => other_config_type(name),
    }
}

/// Kafka's types of the topic configs in [`OTHER_TOPIC_CONFIGS`].
fn other_config_type(name: &str) -> i8 {
    let Some((_, default, kind, _)) = OTHER_TOPIC_CONFIGS.iter().find(|(k, ..)| *k == name) else {
        return TYPE_INT;
    };
    match kind {
        OtherConfig::Inert(ValueKind::Bool) => TYPE_BOOLEAN,
        OtherConfig::Inert(ValueKind::Ratio) => TYPE_DOUBLE,
        OtherConfig::Inert(ValueKind::List) => TYPE_LIST,
        OtherConfig::Inert(ValueKind::Text) => TYPE_STRING,
        _ if name == "segment.index.bytes" || name.starts_with("compression.") => TYPE_INT,
        _ if *default == "true" || *default == "false" => TYPE_BOOLEAN,
        _ => TYPE_LONG,
    }
}

/// What one resource of a request resolved to.
enum Resource<T> {
    /// Answered here with an error.
    Refused(ErrorCode, String),
    /// Goes to the registry shard.
    Topic(T),
}

fn message(text: impl Into<String>) -> Option<StrBytes> {
    Some(StrBytes::from_string(text.into()))
}

pub(super) fn describe_configs(
    engine: &Engine,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let catalog = engine.catalog();
    let broker = engine.broker();
    let node = broker.node_id.get().to_string();
    let mut response = DescribeConfigsResponse::default();
    let include_synonyms = request.include_synonyms;
    for resource in request.resources {
        let mut result = DescribeConfigsResult::default();
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        let name = resource.resource_name.to_string();
        // No filter (or an empty one) lists every config.
        let keys: Option<Vec<String>> = resource
            .configuration_keys
            .filter(|keys| !keys.is_empty())
            .map(|keys| keys.iter().map(|k| k.to_string()).collect());
        let wanted = |key: &str| keys.as_ref().is_none_or(|k| k.iter().any(|w| w == key));
        let entry = |key: &str, value: String, read_only: bool, source: i8| {
            let mut config = DescribeConfigsResourceResult::default();
            config.name = StrBytes::from_string(key.to_owned());
            config.value = Some(StrBytes::from_string(value));
            config.read_only = read_only;
            config.config_source = source;
            config.is_sensitive = false;
            config.config_type = config_type(key);
            config.documentation = None;
            config
        };
        match resource.resource_type {
            RESOURCE_TOPIC => match catalog.get(&name) {
                Some(meta) => {
                    result.configs = meta
                        .config
                        .entries()
                        .into_iter()
                        .filter(|(key, _)| wanted(key))
                        .map(|(key, value)| {
                            let set = meta.is_override(key);
                            let source = if set {
                                SOURCE_DYNAMIC_TOPIC
                            } else {
                                SOURCE_DEFAULT
                            };
                            let mut config = entry(key, value.clone(), false, source);
                            if include_synonyms {
                                // Highest precedence first: the topic's own
                                // value, then the broker setting.
                                if set {
                                    config.synonyms.push(synonym(key, &value, source));
                                }
                                let broker_key = BROKER_SYNONYMS
                                    .iter()
                                    .find(|(topic_key, _)| *topic_key == key)
                                    .and_then(|(_, b)| {
                                        broker.kafka_configs.iter().find(|(n, _)| n == b)
                                    });
                                if let Some((name, value)) = broker_key {
                                    config.synonyms.push(synonym(
                                        name,
                                        value,
                                        SOURCE_STATIC_BROKER,
                                    ));
                                }
                            }
                            config
                        })
                        .collect();
                }
                None => {
                    let (code, text) = match validate_topic_name(&name) {
                        Err(e) => (e.code, e.message),
                        Ok(()) => (
                            ErrorCode::UnknownTopicOrPartition,
                            format!("topic {name:?} does not exist"),
                        ),
                    };
                    result.error_code = code.code();
                    result.error_message = message(text);
                }
            },
            RESOURCE_BROKER if name.is_empty() || name == node => {
                result.configs = broker
                    .kafka_configs
                    .iter()
                    .filter(|(key, _)| wanted(key))
                    .map(|(key, value)| {
                        let mut config = entry(key, value.clone(), true, SOURCE_STATIC_BROKER);
                        if include_synonyms {
                            config
                                .synonyms
                                .push(synonym(key, value, SOURCE_STATIC_BROKER));
                        }
                        config
                    })
                    .collect();
            }
            RESOURCE_BROKER => {
                result.error_code = ErrorCode::InvalidRequest.code();
                result.error_message =
                    message(format!("broker {name:?} is not this broker (node {node})"));
            }
            other => {
                result.error_code = ErrorCode::InvalidRequest.code();
                result.error_message = message(format!(
                    "config resource type {other} is not supported (topics: 2, brokers: 4)"
                ));
            }
        }
        response.results.push(result);
    }
    response
}

/// Resolves the non-topic resources of an alter and duplicates here; the
/// topic ones become one `AlterSpec` each.
fn alter_resources<C>(
    resources: impl Iterator<Item = (i8, String, C)>,
    to_alter: impl Fn(C) -> Result<ConfigAlter, (ErrorCode, String)>,
) -> Vec<(i8, String, Resource<AlterSpec>)> {
    let resources: Vec<(i8, String, C)> = resources.collect();
    let mut topics: BTreeMap<String, usize> = BTreeMap::new();
    for (kind, name, _) in &resources {
        if *kind == RESOURCE_TOPIC {
            *topics.entry(name.clone()).or_default() += 1;
        }
    }
    resources
        .into_iter()
        .map(|(kind, name, configs)| {
            let resolved = match kind {
                RESOURCE_TOPIC if topics[&name] > 1 => Resource::Refused(
                    ErrorCode::InvalidRequest,
                    format!("topic {name:?} appears more than once in the request"),
                ),
                RESOURCE_TOPIC => match to_alter(configs) {
                    Ok(alter) => Resource::Topic(AlterSpec {
                        name: name.clone(),
                        alter,
                    }),
                    Err((code, text)) => Resource::Refused(code, text),
                },
                RESOURCE_BROKER => Resource::Refused(
                    ErrorCode::InvalidRequest,
                    "broker configs are static; edit fjord.toml".to_owned(),
                ),
                other => Resource::Refused(
                    ErrorCode::InvalidRequest,
                    format!("config resource type {other} cannot be altered (topics: 2)"),
                ),
            };
            (kind, name, resolved)
        })
        .collect()
}

/// Runs the topic resources on the registry shard; returns (type, name,
/// error, message) per resource, in request order.
async fn run_alters(
    engine: &Engine,
    resources: Vec<(i8, String, Resource<AlterSpec>)>,
    validate_only: bool,
) -> Vec<(i8, String, ErrorCode, Option<String>)> {
    let specs: Vec<AlterSpec> = resources
        .iter()
        .filter_map(|(_, _, r)| match r {
            Resource::Topic(spec) => Some(spec.clone()),
            Resource::Refused(..) => None,
        })
        .collect();
    let mut outcomes = engine
        .alter_topic_configs(specs, validate_only)
        .await
        .into_iter();
    resources
        .into_iter()
        .map(|(kind, name, resolved)| match resolved {
            Resource::Refused(code, text) => (kind, name, code, Some(text)),
            Resource::Topic(_) => match outcomes.next() {
                Some(o) => (kind, name, o.code(), o.message()),
                None => (
                    kind,
                    name,
                    ErrorCode::UnknownServerError,
                    Some("no outcome".to_owned()),
                ),
            },
        })
        .collect()
}

/// AlterConfigs: the given keys become the topic's whole set of explicit
/// configs; every other key reverts to the broker default.
pub(super) async fn alter_configs(
    engine: &Engine,
    request: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let resources = request
        .resources
        .into_iter()
        .map(|r| (r.resource_type, r.resource_name.to_string(), r.configs));
    let resolved = alter_resources(resources, |configs| {
        let mut entries = Vec::with_capacity(configs.len());
        for c in configs {
            let Some(value) = c.value else {
                return Err((
                    ErrorCode::InvalidRequest,
                    format!(
                        "null value for {}: AlterConfigs sets values",
                        c.name.as_str()
                    ),
                ));
            };
            entries.push((c.name.to_string(), value.to_string()));
        }
        Ok(ConfigAlter::Replace(entries))
    });
    let mut response = AlterConfigsResponse::default();
    for (kind, name, code, text) in run_alters(engine, resolved, request.validate_only).await {
        let mut r = alter_configs_response::AlterConfigsResourceResponse::default();
        r.resource_type = kind;
        r.resource_name = StrBytes::from_string(name);
        r.error_code = code.code();
        r.error_message = text.map(StrBytes::from_string);
        response.responses.push(r);
    }
    response
}

/// IncrementalAlterConfigs: SET / DELETE (back to the default) / APPEND /
/// SUBTRACT (list configs only) per key.
pub(super) async fn incremental_alter_configs(
    engine: &Engine,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let resources = request
        .resources
        .into_iter()
        .map(|r| (r.resource_type, r.resource_name.to_string(), r.configs));
    let resolved = alter_resources(resources, |configs| {
        let mut changes = Vec::with_capacity(configs.len());
        for c in configs {
            let Some(op) = ConfigOp::from_kafka(c.config_operation) else {
                return Err((
                    ErrorCode::InvalidRequest,
                    format!(
                        "unknown config operation {} for {}",
                        c.config_operation,
                        c.name.as_str()
                    ),
                ));
            };
            changes.push(ConfigChange {
                key: c.name.to_string(),
                op,
                value: c.value.map(|v| v.to_string()),
            });
        }
        Ok(ConfigAlter::Incremental(changes))
    });
    let mut response = IncrementalAlterConfigsResponse::default();
    for (kind, name, code, text) in run_alters(engine, resolved, request.validate_only).await {
        let mut r = incremental_alter_configs_response::AlterConfigsResourceResponse::default();
        r.resource_type = kind;
        r.resource_name = StrBytes::from_string(name);
        r.error_code = code.code();
        r.error_message = text.map(StrBytes::from_string);
        response.responses.push(r);
    }
    response
}

/// CreatePartitions: grows topics; replica assignments may only name this
/// broker (one replica per partition).
pub(super) async fn create_partitions(
    engine: &Engine,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for topic in &request.topics {
        *seen.entry(topic.name.to_string()).or_default() += 1;
    }
    let resolved: Vec<(String, Resource<u32>)> = request
        .topics
        .into_iter()
        .map(|topic| {
            let name = topic.name.to_string();
            let refuse = |code, text: String| (name.clone(), Resource::Refused(code, text));
            if seen[&name] > 1 {
                return refuse(
                    ErrorCode::InvalidRequest,
                    format!("topic {name:?} appears more than once in the request"),
                );
            }
            let Ok(count) = u32::try_from(topic.count) else {
                return refuse(
                    ErrorCode::InvalidPartitions,
                    format!("partition count {} must be positive", topic.count),
                );
            };
            if let Some(assignments) = &topic.assignments {
                let replicas: Vec<Vec<i32>> = assignments
                    .iter()
                    .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
                    .collect();
                if let Err(error) = engine.check_assignments(&name, count, &replicas) {
                    return refuse(error.error_code(), error.to_string());
                }
            }
            (name, Resource::Topic(count))
        })
        .collect();
    let topics: Vec<(String, u32)> = resolved
        .iter()
        .filter_map(|(name, r)| match r {
            Resource::Topic(count) => Some((name.clone(), *count)),
            Resource::Refused(..) => None,
        })
        .collect();
    let mut outcomes = engine
        .create_partitions(topics, request.validate_only)
        .await
        .into_iter();
    let mut response = CreatePartitionsResponse::default();
    for (name, resolved) in resolved {
        let (code, text) = match resolved {
            Resource::Refused(code, text) => (code, Some(text)),
            Resource::Topic(_) => outcomes.next().map_or(
                (ErrorCode::UnknownServerError, Some("no outcome".to_owned())),
                |o| (o.code(), o.message()),
            ),
        };
        let mut result = CreatePartitionsTopicResult::default();
        result.name = TopicName(StrBytes::from_string(name));
        result.error_code = code.code();
        result.error_message = text.map(StrBytes::from_string);
        response.results.push(result);
    }
    response
}

/// DescribeCluster: the active controller and the unfenced brokers.
pub(super) fn describe_cluster(
    engine: &Engine,
    request: DescribeClusterRequest,
    version: i16,
) -> DescribeClusterResponse {
    let catalog = engine.catalog();
    describe_cluster_response(&engine.cluster_view(&catalog), request, version)
}

/// [`describe_cluster`]'s answer from `view`: every unfenced broker with a
/// Kafka listener (Kafka's brokers list only live ones), the controller
/// (-1 while none is known).
pub(super) fn describe_cluster_response(
    view: &ClusterView,
    request: DescribeClusterRequest,
    version: i16,
) -> DescribeClusterResponse {
    let mut response = DescribeClusterResponse::default();
    response.cluster_id = StrBytes::from_static_str(CLUSTER_ID);
    response.controller_id = BrokerId(view.controller.map_or(-1, |n| n.get() as i32));
    response.cluster_authorized_operations = if request.include_cluster_authorized_operations {
        CLUSTER_OPERATIONS
    } else {
        OPERATIONS_NOT_REQUESTED
    };
    // v0 has no endpoint type (brokers); v1 may ask for controllers, which
    // a broker does not answer (as Kafka's brokers).
    if version >= 1 {
        response.endpoint_type = request.endpoint_type;
    }
    if version >= 1 && request.endpoint_type != ENDPOINT_BROKERS {
        response.error_code = ErrorCode::UnsupportedEndpointType.code();
        response.error_message = message(format!(
            "endpoint type {} is not served; brokers ({ENDPOINT_BROKERS}) are",
            request.endpoint_type
        ));
        return response;
    }
    response.brokers = view
        .live()
        .filter_map(|n| {
            let kafka = n.kafka.as_ref()?;
            let mut b = DescribeClusterBroker::default();
            b.broker_id = BrokerId(n.node.get() as i32);
            b.host = StrBytes::from_string(kafka.host.clone());
            b.port = i32::from(kafka.port);
            b.rack = n.rack.clone().map(StrBytes::from_string);
            Some(b)
        })
        .collect();
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::topic::TopicConfig;

    /// Every topic config's synonym is a described broker config with the
    /// same default value, so DescribeConfigs cannot contradict itself.
    #[test]
    fn topic_defaults_match_their_broker_synonyms() {
        let config = Config::default();
        let broker: BTreeMap<&str, String> = config.kafka_broker_configs().into_iter().collect();
        let topic = TopicConfig::from_log_config(&config.base_log_config());
        for (key, value) in topic.entries() {
            let Some((_, broker_key)) = BROKER_SYNONYMS.iter().find(|(k, _)| *k == key) else {
                // Fjord's own key, and the Kafka keys without effect here
                // (no broker setting stands behind them).
                assert!(
                    key == "flush.before.ack"
                        || OTHER_TOPIC_CONFIGS.iter().any(|(k, ..)| *k == key),
                    "{key} has no broker synonym"
                );
                continue;
            };
            assert_eq!(broker.get(broker_key), Some(&value), "{key} / {broker_key}");
            assert_eq!(
                config_type(key),
                config_type(broker_key),
                "{key} / {broker_key}"
            );
        }
        assert_eq!(config_type("retention.ms"), TYPE_LONG);
        assert_eq!(config_type("replica.lag.time.max.ms"), TYPE_LONG);
        assert_eq!(config_type("replica.fetch.max.bytes"), TYPE_INT);
        assert_eq!(config_type("segment.bytes"), TYPE_INT);
        assert_eq!(config_type("cleanup.policy"), TYPE_LIST);
        assert_eq!(config_type("compression.type"), TYPE_STRING);
        assert_eq!(config_type("preallocate"), TYPE_BOOLEAN);
        assert_eq!(config_type("min.cleanable.dirty.ratio"), TYPE_DOUBLE);
        assert_eq!(config_type("remote.storage.enable"), TYPE_BOOLEAN);
        assert_eq!(config_type("local.retention.ms"), TYPE_LONG);
    }
}
