//! The Kafka admin apis against the `fjord` binary (2 shards): rdkafka's
//! AdminClient (describe / alter configs, create partitions), producing
//! and consuming on grown partitions, persistence across a restart, a
//! `max.message.bytes` change that grows then shrinks the logs' write
//! buffer followed by a SIGKILL, and raw `kafka-protocol` round trips at
//! every served version of DescribeConfigs, AlterConfigs,
//! IncrementalAlterConfigs, CreatePartitions and DescribeCluster. No timing assertions: deadlines
//! only keep a broken broker from hanging the suite.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::kafka::{call, connect};
use common::{Broker, PATIENCE};
use kafka_protocol::messages::create_partitions_request::{
    CreatePartitionsAssignment, CreatePartitionsTopic,
};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::{
    alter_configs_request, incremental_alter_configs_request, AlterConfigsRequest,
    AlterConfigsResponse, ApiKey, BrokerId, CreatePartitionsRequest, CreatePartitionsResponse,
    CreateTopicsRequest, CreateTopicsResponse, DescribeClusterRequest, DescribeClusterResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigResource, ConfigSource, NewPartitions, NewTopic,
    ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// Kafka's config resource types and sources, error codes.
const TOPIC: i8 = 2;
const BROKER: i8 = 4;
const DYNAMIC_TOPIC_CONFIG: i8 = 1;
const STATIC_BROKER_CONFIG: i8 = 4;
const DEFAULT_CONFIG: i8 = 5;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_PARTITIONS: i16 = 37;
const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
const INVALID_CONFIG: i16 = 40;
const INVALID_REQUEST: i16 = 42;
const POLICY_VIOLATION: i16 = 44;
const UNSUPPORTED_ENDPOINT_TYPE: i16 = 119;

fn client_config(kafka: SocketAddr) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", kafka.to_string())
        .set("broker.address.family", "v4");
    config
}

fn admin(kafka: SocketAddr) -> AdminClient<DefaultClientContext> {
    client_config(kafka).create().expect("admin client")
}

fn options() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(PATIENCE))
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    futures_lite::future::block_on(future)
}

fn describe(kafka: SocketAddr, resources: &[ResourceSpecifier<'_>]) -> Vec<ConfigResource> {
    block_on(admin(kafka).describe_configs(resources, &options()))
        .expect("describe_configs")
        .into_iter()
        .map(|r| r.expect("resource described"))
        .collect()
}

/// rdkafka's `ConfigSource` (not `Clone`) as Kafka's number.
fn source(source: &ConfigSource) -> i8 {
    match source {
        ConfigSource::DynamicTopic => DYNAMIC_TOPIC_CONFIG,
        ConfigSource::StaticBroker => STATIC_BROKER_CONFIG,
        ConfigSource::Default => DEFAULT_CONFIG,
        _ => 0,
    }
}

/// (value, source, read only) by config name.
fn entries(resource: &ConfigResource) -> HashMap<String, (Option<String>, i8, bool)> {
    resource
        .entries
        .iter()
        .map(|e| {
            (
                e.name.clone(),
                (e.value.clone(), source(&e.source), e.is_read_only),
            )
        })
        .collect()
}

fn produce(
    kafka: SocketAddr,
    topic: &str,
    partition: i32,
    value: &[u8],
) -> Result<i64, KafkaError> {
    let producer: FutureProducer = client_config(kafka)
        .set("message.timeout.ms", "60000")
        .create()
        .expect("producer");
    let record = FutureRecord::to(topic)
        .partition(partition)
        .key("k")
        .payload(value);
    block_on(producer.send(record, PATIENCE))
        .map(|delivery| delivery.offset)
        .map_err(|(error, _)| error)
}

fn consume_one(kafka: SocketAddr, topic: &str, partition: i32) -> (i64, Vec<u8>) {
    let consumer: BaseConsumer = client_config(kafka)
        .set("group.id", "unused")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, partition, Offset::Beginning)
        .expect("assign");
    consumer.assign(&assignment).expect("assign");
    let deadline = Instant::now() + PATIENCE;
    loop {
        assert!(
            Instant::now() < deadline,
            "nothing consumed from {topic}-{partition}"
        );
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message.expect("consume");
            assert_eq!(message.partition(), partition);
            return (
                message.offset(),
                message.payload().unwrap_or_default().to_vec(),
            );
        }
    }
}

fn partition_count(kafka: SocketAddr, topic: &str) -> usize {
    let consumer: BaseConsumer = client_config(kafka).create().expect("client");
    let metadata = consumer
        .fetch_metadata(Some(topic), PATIENCE)
        .expect("metadata");
    metadata.topics()[0].partitions().len()
}

#[test]
fn rdkafka_describes_and_alters_topic_and_broker_configs() {
    let broker = Broker::start(&["--shards", "2"]);
    let kafka = broker.kafka_addr();
    let topic =
        NewTopic::new("configs", 2, TopicReplication::Fixed(1)).set("retention.ms", "3600000");
    for result in block_on(admin(kafka).create_topics(&[topic], &options())).expect("create") {
        result.expect("topic created");
    }

    let described = describe(
        kafka,
        &[
            ResourceSpecifier::Topic("configs"),
            ResourceSpecifier::Broker(1),
        ],
    );
    let topic = entries(&described[0]);
    assert_eq!(
        topic["retention.ms"],
        (Some("3600000".to_owned()), DYNAMIC_TOPIC_CONFIG, false)
    );
    assert_eq!(
        topic["retention.bytes"],
        (Some("-1".to_owned()), DEFAULT_CONFIG, false)
    );
    assert_eq!(topic["cleanup.policy"].0.as_deref(), Some("delete"));
    assert!(described[0].entries.iter().all(|e| !e.is_sensitive));
    let broker_configs = entries(&described[1]);
    for (name, value) in [
        ("num.partitions", "1"),
        ("default.replication.factor", "1"),
        ("min.insync.replicas", "1"),
        ("offsets.topic.num.partitions", "8"),
        ("auto.create.topics.enable", "true"),
    ] {
        assert_eq!(
            broker_configs[name],
            (Some(value.to_owned()), STATIC_BROKER_CONFIG, true),
            "{name}"
        );
    }
    assert!(broker_configs.contains_key("log.retention.ms"));
    assert!(broker_configs.contains_key("message.max.bytes"));

    // Both partitions (one per shard) take 4 KiB records before the alter.
    let big = vec![7u8; 4096];
    for partition in 0..2 {
        produce(kafka, "configs", partition, &big).expect("4 KiB accepted");
    }

    // AlterConfigs replaces the set: retention.ms reverts to the default.
    let alter = AlterConfig::new(ResourceSpecifier::Topic("configs"))
        .set("retention.bytes", "1048576")
        .set("max.message.bytes", "2048");
    for result in block_on(admin(kafka).alter_configs(&[alter], &options())).expect("alter") {
        result.expect("altered");
    }
    let topic = entries(&describe(kafka, &[ResourceSpecifier::Topic("configs")])[0]);
    assert_eq!(topic["retention.ms"].1, DEFAULT_CONFIG);
    assert_ne!(topic["retention.ms"].0.as_deref(), Some("3600000"));
    assert_eq!(
        topic["retention.bytes"],
        (Some("1048576".to_owned()), DYNAMIC_TOPIC_CONFIG, false)
    );
    assert_eq!(topic["max.message.bytes"].0.as_deref(), Some("2048"));

    // The new max.message.bytes holds on both shards without a restart.
    for partition in 0..2 {
        let refused = produce(kafka, "configs", partition, &big).expect_err("over 2048 bytes");
        assert_eq!(
            refused,
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
            "partition {partition}"
        );
        produce(kafka, "configs", partition, b"small").expect("small accepted");
    }

    // validate_only changes nothing.
    let alter = AlterConfig::new(ResourceSpecifier::Topic("configs")).set("retention.ms", "5");
    let validated = block_on(admin(kafka).alter_configs(&[alter], &options().validate_only(true)))
        .expect("alter");
    assert!(validated[0].is_ok());
    let topic = entries(&describe(kafka, &[ResourceSpecifier::Topic("configs")])[0]);
    assert_eq!(topic["retention.ms"].1, DEFAULT_CONFIG);
    // rdkafka 0.39's alter_configs reports every resource as Ok (it never
    // reads the per-resource error; the raw test below checks the codes),
    // so check the refusal by its effect: nothing changed.
    let refused = AlterConfig::new(ResourceSpecifier::Topic("configs"))
        .set("retention.ms", "-5")
        .set("retention.bytes", "7");
    block_on(admin(kafka).alter_configs(&[refused], &options())).expect("alter");
    let topic = entries(&describe(kafka, &[ResourceSpecifier::Topic("configs")])[0]);
    assert_eq!(topic["retention.ms"].1, DEFAULT_CONFIG);
    assert_eq!(topic["retention.bytes"].0.as_deref(), Some("1048576"));
    // Same for describe_configs: an unknown topic comes back Ok and empty.
    let missing = describe(kafka, &[ResourceSpecifier::Topic("configs-missing")]);
    assert!(missing[0].entries.is_empty());
}

#[test]
fn grown_partitions_serve_and_survive_a_restart_with_altered_configs() {
    let mut broker = Broker::start(&["--shards", "2"]);
    let kafka = broker.kafka_addr();
    let topic = NewTopic::new("grow", 1, TopicReplication::Fixed(1));
    for result in block_on(admin(kafka).create_topics(&[topic], &options())).expect("create") {
        result.expect("topic created");
    }
    produce(kafka, "grow", 0, b"zero").expect("produce to partition 0");

    let grown =
        block_on(admin(kafka).create_partitions(&[NewPartitions::new("grow", 4)], &options()))
            .expect("create_partitions");
    assert_eq!(grown, [Ok("grow".to_owned())]);
    assert_eq!(partition_count(kafka, "grow"), 4);
    for partition in 1..4 {
        let value = format!("new-{partition}");
        assert_eq!(
            produce(kafka, "grow", partition, value.as_bytes()).expect("produce"),
            0
        );
        assert_eq!(
            consume_one(kafka, "grow", partition),
            (0, value.into_bytes())
        );
    }

    // Not larger, or only validated: nothing changes.
    let refused =
        block_on(admin(kafka).create_partitions(&[NewPartitions::new("grow", 2)], &options()))
            .expect("create_partitions");
    assert_eq!(
        refused,
        [Err((
            "grow".to_owned(),
            RDKafkaErrorCode::InvalidPartitions
        ))]
    );
    let validated = block_on(admin(kafka).create_partitions(
        &[NewPartitions::new("grow", 8)],
        &options().validate_only(true),
    ))
    .expect("create_partitions");
    assert_eq!(validated, [Ok("grow".to_owned())]);
    assert_eq!(partition_count(kafka, "grow"), 4);

    let alter = AlterConfig::new(ResourceSpecifier::Topic("grow")).set("retention.ms", "86400001");
    for result in block_on(admin(kafka).alter_configs(&[alter], &options())).expect("alter") {
        result.expect("altered");
    }

    broker.terminate_and_restart();
    let kafka = broker.kafka_addr();
    assert_eq!(partition_count(kafka, "grow"), 4);
    let topic = entries(&describe(kafka, &[ResourceSpecifier::Topic("grow")])[0]);
    assert_eq!(
        topic["retention.ms"],
        (Some("86400001".to_owned()), DYNAMIC_TOPIC_CONFIG, false)
    );
    assert_eq!(topic["segment.bytes"].1, DEFAULT_CONFIG);
    assert_eq!(consume_one(kafka, "grow", 3), (0, b"new-3".to_vec()));
    assert_eq!(produce(kafka, "grow", 3, b"after").expect("produce"), 1);
}

fn describe_request(topic: &str, keys: Option<&[&str]>) -> DescribeConfigsRequest {
    let mut request = DescribeConfigsRequest::default();
    let mut resource = DescribeConfigsResource::default();
    resource.resource_type = TOPIC;
    resource.resource_name = StrBytes::from_string(topic.to_owned());
    resource.configuration_keys = keys.map(|keys| {
        keys.iter()
            .map(|k| StrBytes::from_string((*k).to_owned()))
            .collect()
    });
    request.resources.push(resource);
    let mut resource = DescribeConfigsResource::default();
    resource.resource_type = BROKER;
    resource.resource_name = StrBytes::from_static_str("1");
    request.resources.push(resource);
    request
}

/// (value, source) by name of the topic resource, at DescribeConfigs v4.
fn raw_topic_configs(
    stream: &mut std::net::TcpStream,
    topic: &str,
) -> HashMap<String, (Option<String>, i8)> {
    let described: DescribeConfigsResponse = call(
        stream,
        ApiKey::DescribeConfigs,
        4,
        &describe_request(topic, None),
    );
    assert_eq!(described.results[0].error_code, 0);
    described.results[0]
        .configs
        .iter()
        .map(|c| {
            (
                c.name.to_string(),
                (c.value.as_ref().map(|v| v.to_string()), c.config_source),
            )
        })
        .collect()
}

fn alter_request(topic: &str, pairs: &[(&str, &str)], validate_only: bool) -> AlterConfigsRequest {
    let mut request = AlterConfigsRequest::default();
    let mut resource = alter_configs_request::AlterConfigsResource::default();
    resource.resource_type = TOPIC;
    resource.resource_name = StrBytes::from_string(topic.to_owned());
    for (name, value) in pairs {
        let mut config = alter_configs_request::AlterableConfig::default();
        config.name = StrBytes::from_string((*name).to_owned());
        config.value = Some(StrBytes::from_string((*value).to_owned()));
        resource.configs.push(config);
    }
    request.resources.push(resource);
    request.validate_only = validate_only;
    request
}

fn incremental_request(
    resource_type: i8,
    name: &str,
    ops: &[(&str, i8, Option<&str>)],
    validate_only: bool,
) -> IncrementalAlterConfigsRequest {
    let mut request = IncrementalAlterConfigsRequest::default();
    let mut resource = incremental_alter_configs_request::AlterConfigsResource::default();
    resource.resource_type = resource_type;
    resource.resource_name = StrBytes::from_string(name.to_owned());
    for (key, op, value) in ops {
        let mut config = incremental_alter_configs_request::AlterableConfig::default();
        config.name = StrBytes::from_string((*key).to_owned());
        config.config_operation = *op;
        config.value = value.map(|v| StrBytes::from_string(v.to_owned()));
        resource.configs.push(config);
    }
    request.resources.push(resource);
    request.validate_only = validate_only;
    request
}

fn grow_request(
    topic: &str,
    count: i32,
    assignments: Option<Vec<Vec<i32>>>,
) -> CreatePartitionsRequest {
    let mut request = CreatePartitionsRequest::default();
    let mut grow = CreatePartitionsTopic::default();
    grow.name = TopicName(StrBytes::from_string(topic.to_owned()));
    grow.count = count;
    grow.assignments = assignments.map(|all| {
        all.into_iter()
            .map(|ids| {
                let mut assignment = CreatePartitionsAssignment::default();
                assignment.broker_ids = ids.into_iter().map(BrokerId).collect();
                assignment
            })
            .collect()
    });
    request.topics.push(grow);
    request.timeout_ms = 30_000;
    request
}

/// Every served version of every admin api, with `kafka-protocol`'s
/// encoders (which refuse fields a version lacks).
#[test]
fn raw_admin_round_trips_at_every_served_version() {
    let broker = Broker::start(&["--shards", "2"]);
    let kafka = broker.kafka_addr();
    let mut stream = connect(kafka);
    let mut create = CreateTopicsRequest::default();
    let mut topic = kafka_protocol::messages::create_topics_request::CreatableTopic::default();
    topic.name = TopicName(StrBytes::from_static_str("raw"));
    topic.num_partitions = 1;
    topic.replication_factor = 1;
    create.topics.push(topic);
    let created: CreateTopicsResponse = call(&mut stream, ApiKey::CreateTopics, 7, &create);
    assert_eq!(created.topics[0].error_code, 0);

    // DescribeConfigs 1-4: the topic (filtered by key) and the broker.
    for version in 1..=4 {
        let mut request =
            describe_request("raw", Some(&["retention.ms", "cleanup.policy", "nope"]));
        request.include_synonyms = true;
        let described: DescribeConfigsResponse =
            call(&mut stream, ApiKey::DescribeConfigs, version, &request);
        let topic = &described.results[0];
        assert_eq!(
            (topic.error_code, topic.resource_type),
            (0, TOPIC),
            "v{version}"
        );
        let names: Vec<String> = topic.configs.iter().map(|c| c.name.to_string()).collect();
        assert_eq!(names, ["cleanup.policy", "retention.ms"], "v{version}");
        for config in &topic.configs {
            assert_eq!(config.config_source, DEFAULT_CONFIG, "v{version}");
            assert!(!config.read_only && !config.is_sensitive, "v{version}");
            if version >= 3 {
                assert_eq!(config.documentation, None, "v{version}");
            }
            // LIST = 7, LONG = 5 from v3; older versions have no type.
            let expected = match (version >= 3, config.name.as_str()) {
                (false, _) => 0,
                (true, "cleanup.policy") => 7,
                (true, _) => 5,
            };
            assert_eq!(
                config.config_type,
                expected,
                "v{version} {}",
                config.name.as_str()
            );
            // A default: its synonym is the broker setting, same value.
            let synonyms: Vec<(String, Option<String>, i8)> = config
                .synonyms
                .iter()
                .map(|s| {
                    (
                        s.name.to_string(),
                        s.value.as_ref().map(|v| v.to_string()),
                        s.source,
                    )
                })
                .collect();
            let broker_key = format!("log.{}", config.name.as_str());
            assert_eq!(
                synonyms,
                [(
                    broker_key,
                    config.value.as_ref().map(|v| v.to_string()),
                    STATIC_BROKER_CONFIG
                )],
                "v{version}"
            );
        }
        let broker_result = &described.results[1];
        assert_eq!(broker_result.error_code, 0, "v{version}");
        assert!(broker_result
            .configs
            .iter()
            .all(|c| c.read_only && c.config_source == STATIC_BROKER_CONFIG));
    }
    let mut unknown = describe_request("raw-missing", None);
    unknown.resources[1].resource_name = StrBytes::from_static_str("5");
    unknown.resources.push(DescribeConfigsResource::default());
    unknown.resources[2].resource_type = 3; // GROUP
    let described: DescribeConfigsResponse =
        call(&mut stream, ApiKey::DescribeConfigs, 4, &unknown);
    let codes: Vec<i16> = described.results.iter().map(|r| r.error_code).collect();
    assert_eq!(
        codes,
        [UNKNOWN_TOPIC_OR_PARTITION, INVALID_REQUEST, INVALID_REQUEST]
    );
    assert!(described.results.iter().all(|r| r.error_message.is_some()));

    // AlterConfigs 0-2: each version replaces the set.
    for version in 0..=2i16 {
        let value = format!("{}", 1_000_000 + i64::from(version));
        let key = if version == 1 {
            "retention.bytes"
        } else {
            "retention.ms"
        };
        let altered: AlterConfigsResponse = call(
            &mut stream,
            ApiKey::AlterConfigs,
            version,
            &alter_request("raw", &[(key, &value)], false),
        );
        assert_eq!(altered.responses[0].error_code, 0, "v{version}");
        let configs = raw_topic_configs(&mut stream, "raw");
        assert_eq!(
            configs[key],
            (Some(value), DYNAMIC_TOPIC_CONFIG),
            "v{version}"
        );
        let other = if version == 1 {
            "retention.ms"
        } else {
            "retention.bytes"
        };
        assert_eq!(configs[other].1, DEFAULT_CONFIG, "v{version}");
    }
    let refused: AlterConfigsResponse = call(
        &mut stream,
        ApiKey::AlterConfigs,
        2,
        &alter_request("raw", &[("segment.bytes", "10")], false),
    );
    assert_eq!(refused.responses[0].error_code, INVALID_CONFIG);

    // IncrementalAlterConfigs 0-1: SET, DELETE (revert), APPEND on a list.
    for version in 0..=1i16 {
        let value = format!("{}", 2_000_000 + i64::from(version));
        let altered: IncrementalAlterConfigsResponse = call(
            &mut stream,
            ApiKey::IncrementalAlterConfigs,
            version,
            &incremental_request(
                TOPIC,
                "raw",
                &[
                    ("retention.bytes", 0, Some(&value)),
                    ("retention.ms", 1, None),
                    ("cleanup.policy", 2, Some("delete")),
                ],
                false,
            ),
        );
        assert_eq!(altered.responses[0].error_code, 0, "v{version}");
        let configs = raw_topic_configs(&mut stream, "raw");
        assert_eq!(
            configs["retention.bytes"],
            (Some(value), DYNAMIC_TOPIC_CONFIG),
            "v{version}"
        );
        assert_eq!(configs["retention.ms"].1, DEFAULT_CONFIG, "v{version}");
        assert_eq!(
            configs["cleanup.policy"],
            (Some("delete".to_owned()), DYNAMIC_TOPIC_CONFIG),
            "v{version}"
        );
    }
    for (resource_type, name, ops, code) in [
        (
            TOPIC,
            "raw",
            [("retention.ms", 2, Some("5"))],
            INVALID_CONFIG,
        ),
        (
            TOPIC,
            "raw",
            [("cleanup.policy", 2, Some("compact"))],
            INVALID_CONFIG,
        ),
        (
            TOPIC,
            "raw",
            [("retention.ms", 9, Some("5"))],
            INVALID_REQUEST,
        ),
        (
            TOPIC,
            "raw-missing",
            [("retention.ms", 0, Some("5"))],
            UNKNOWN_TOPIC_OR_PARTITION,
        ),
        (
            BROKER,
            "1",
            [("num.partitions", 0, Some("5"))],
            INVALID_REQUEST,
        ),
        (
            TOPIC,
            "__consumer_offsets",
            [("retention.ms", 0, Some("5"))],
            POLICY_VIOLATION,
        ),
    ] {
        let refused: IncrementalAlterConfigsResponse = call(
            &mut stream,
            ApiKey::IncrementalAlterConfigs,
            1,
            &incremental_request(resource_type, name, &ops, false),
        );
        assert_eq!(refused.responses[0].error_code, code, "{name} {ops:?}");
    }
    let validated: IncrementalAlterConfigsResponse = call(
        &mut stream,
        ApiKey::IncrementalAlterConfigs,
        1,
        &incremental_request(TOPIC, "raw", &[("retention.ms", 0, Some("5"))], true),
    );
    assert_eq!(validated.responses[0].error_code, 0);
    assert_eq!(
        raw_topic_configs(&mut stream, "raw")["retention.ms"].1,
        DEFAULT_CONFIG
    );

    // CreatePartitions 0-3: one more partition per version.
    for version in 0..=3i16 {
        let count = 2 + i32::from(version);
        let assignments = (version == 3).then(|| vec![vec![1]]);
        let grown: CreatePartitionsResponse = call(
            &mut stream,
            ApiKey::CreatePartitions,
            version,
            &grow_request("raw", count, assignments),
        );
        assert_eq!(grown.results[0].error_code, 0, "v{version}");
    }
    let refused: CreatePartitionsResponse = call(
        &mut stream,
        ApiKey::CreatePartitions,
        0,
        &grow_request("__consumer_offsets", 100, None),
    );
    assert_eq!(refused.results[0].error_code, POLICY_VIOLATION);
    for (count, assignments, code) in [
        (5, None, INVALID_PARTITIONS),
        (0, None, INVALID_PARTITIONS),
        (6, Some(vec![vec![3]]), INVALID_REPLICA_ASSIGNMENT),
        (7, Some(vec![vec![0]]), INVALID_REPLICA_ASSIGNMENT),
    ] {
        let refused: CreatePartitionsResponse = call(
            &mut stream,
            ApiKey::CreatePartitions,
            3,
            &grow_request("raw", count, assignments),
        );
        assert_eq!(refused.results[0].error_code, code, "to {count}");
    }
    let mut metadata = MetadataRequest::default();
    let mut wanted = kafka_protocol::messages::metadata_request::MetadataRequestTopic::default();
    wanted.name = Some(TopicName(StrBytes::from_static_str("raw")));
    metadata.topics = Some(vec![wanted]);
    let meta: MetadataResponse = call(&mut stream, ApiKey::Metadata, 12, &metadata);
    assert_eq!(meta.topics[0].partitions.len(), 5);

    // DescribeCluster 0-1: the same cluster id and broker as Metadata.
    for version in 0..=1i16 {
        let described: DescribeClusterResponse = call(
            &mut stream,
            ApiKey::DescribeCluster,
            version,
            &DescribeClusterRequest::default(),
        );
        assert_eq!(described.error_code, 0, "v{version}");
        assert_eq!(
            Some(described.cluster_id.clone()),
            meta.cluster_id,
            "v{version}"
        );
        assert_eq!(described.controller_id, BrokerId(1));
        assert_eq!(described.cluster_authorized_operations, i32::MIN);
        assert_eq!(described.brokers.len(), 1);
        assert_eq!(described.brokers[0].broker_id, BrokerId(1));
        assert_eq!(described.brokers[0].host, meta.brokers[0].host);
        assert_eq!(described.brokers[0].port, i32::from(kafka.port()));
    }
    let mut controllers = DescribeClusterRequest::default();
    controllers.endpoint_type = 2;
    controllers.include_cluster_authorized_operations = true;
    let described: DescribeClusterResponse =
        call(&mut stream, ApiKey::DescribeCluster, 1, &controllers);
    assert_eq!(described.error_code, UNSUPPORTED_ENDPOINT_TYPE);
    controllers.endpoint_type = 1;
    let described: DescribeClusterResponse =
        call(&mut stream, ApiKey::DescribeCluster, 1, &controllers);
    assert_eq!(described.error_code, 0);
    assert!(described.cluster_authorized_operations > 0);
}

/// Records of `len` bytes as a Kafka RecordBatch v2 (uncompressed).
fn kafka_batch(len: usize) -> bytes::Bytes {
    let record = common::kafka::plain_record(
        0,
        1_700_000_000_000,
        None,
        Some(bytes::Bytes::from(vec![0x5a; len])),
    );
    common::kafka::encode_batch(&[record], kafka_protocol::records::Compression::None)
}

fn raw_produce(stream: &mut std::net::TcpStream, topic: &str, records: bytes::Bytes) -> i16 {
    common::kafka::produce_v9(stream, topic, records).error_code
}

/// `max.message.bytes` above the write buffer grows the live log's buffer
/// (persisted first); reverting it shrinks the buffer (applied first,
/// after a flush); a SIGKILL afterwards recovers the large batch.
#[test]
fn large_batches_follow_max_message_bytes_across_buffer_changes_and_a_kill() {
    const MESSAGE_TOO_LARGE: i16 = 10;
    // A 256 KiB default limit and a 512 KiB write buffer (the listener
    // takes Kafka batches up to 1 MiB).
    let mut broker = Broker::start(&[
        "--shards",
        "2",
        "--message-max-bytes",
        "262144",
        "--log-write-buffer-bytes",
        "524288",
    ]);
    let mut stream = connect(broker.kafka_addr());
    let mut create = CreateTopicsRequest::default();
    let mut topic = kafka_protocol::messages::create_topics_request::CreatableTopic::default();
    topic.name = TopicName(StrBytes::from_static_str("large"));
    topic.num_partitions = 1;
    topic.replication_factor = 1;
    create.topics.push(topic);
    let created: CreateTopicsResponse = call(&mut stream, ApiKey::CreateTopics, 7, &create);
    assert_eq!(created.topics[0].error_code, 0);

    // 800 KiB: over the default limit and the write buffer.
    let large = kafka_batch(800 << 10);
    assert_eq!(
        raw_produce(&mut stream, "large", large.clone()),
        MESSAGE_TOO_LARGE
    );
    let altered: IncrementalAlterConfigsResponse = call(
        &mut stream,
        ApiKey::IncrementalAlterConfigs,
        1,
        &incremental_request(
            TOPIC,
            "large",
            &[("max.message.bytes", 0, Some("921600"))],
            false,
        ),
    );
    assert_eq!(altered.responses[0].error_code, 0);
    assert_eq!(raw_produce(&mut stream, "large", large.clone()), 0);
    assert_eq!(raw_produce(&mut stream, "large", kafka_batch(100)), 0);

    let reverted: IncrementalAlterConfigsResponse = call(
        &mut stream,
        ApiKey::IncrementalAlterConfigs,
        1,
        &incremental_request(TOPIC, "large", &[("max.message.bytes", 1, None)], false),
    );
    assert_eq!(reverted.responses[0].error_code, 0);
    assert_eq!(
        raw_produce(&mut stream, "large", large.clone()),
        MESSAGE_TOO_LARGE
    );
    assert_eq!(raw_produce(&mut stream, "large", kafka_batch(100)), 0);

    broker.kill_and_restart();
    let mut stream = connect(broker.kafka_addr());
    let mut fetch = kafka_protocol::messages::FetchRequest::default();
    fetch.max_wait_ms = 0;
    fetch.max_bytes = 4 << 20;
    let mut ft = kafka_protocol::messages::fetch_request::FetchTopic::default();
    ft.topic = TopicName(StrBytes::from_static_str("large"));
    let mut fp = kafka_protocol::messages::fetch_request::FetchPartition::default();
    fp.partition_max_bytes = 4 << 20;
    ft.partitions.push(fp);
    fetch.topics.push(ft);
    let fetched: kafka_protocol::messages::FetchResponse =
        call(&mut stream, ApiKey::Fetch, 12, &fetch);
    let data = &fetched.responses[0].partitions[0];
    assert_eq!((data.error_code, data.high_watermark), (0, 3));
    let mut records = data.records.clone().expect("records");
    let batches =
        kafka_protocol::records::RecordBatchDecoder::decode_all(&mut records).expect("decode");
    let first = &batches[0].records[0];
    assert_eq!(first.value.as_ref().map(|v| v.len()), Some(800 << 10));
}

/// Metadata v10+ names each topic by the id the metadata image gave it at
/// creation: stable across a restart, distinct per topic, new for a
/// re-created topic; older versions carry none.
#[test]
fn metadata_reports_topic_ids_that_survive_a_restart() {
    let mut broker = Broker::start(&[]);
    let create = |stream: &mut std::net::TcpStream, name: &'static str| {
        let mut create = CreateTopicsRequest::default();
        let mut topic = kafka_protocol::messages::create_topics_request::CreatableTopic::default();
        topic.name = TopicName(StrBytes::from_static_str(name));
        topic.num_partitions = 2;
        topic.replication_factor = 1;
        create.topics.push(topic);
        let created: CreateTopicsResponse = call(stream, ApiKey::CreateTopics, 7, &create);
        assert_eq!(created.topics[0].error_code, 0, "{name}");
        created.topics[0].topic_id
    };
    let ids = |kafka: SocketAddr, version: i16| -> HashMap<String, uuid::Uuid> {
        let mut stream = connect(kafka);
        let mut metadata = MetadataRequest::default();
        metadata.topics = None;
        let meta: MetadataResponse = call(&mut stream, ApiKey::Metadata, version, &metadata);
        meta.topics
            .iter()
            .map(|t| {
                let name = t.name.as_ref().expect("name").0.to_string();
                if name != "__consumer_offsets" {
                    assert_eq!(t.partitions.len(), 2, "{name}");
                }
                for p in &t.partitions {
                    assert_eq!(p.leader_id, BrokerId(1));
                    assert_eq!(p.replica_nodes, vec![BrokerId(1)]);
                    assert_eq!(p.isr_nodes, vec![BrokerId(1)]);
                }
                (name, t.topic_id)
            })
            .collect()
    };
    let mut stream = connect(broker.kafka_addr());
    let created_a = create(&mut stream, "ids-a");
    let created_b = create(&mut stream, "ids-b");
    let before = ids(broker.kafka_addr(), 12);
    let a = before["ids-a"];
    assert!(!a.is_nil());
    assert_ne!(a, before["ids-b"]);
    // CreateTopics v7 answers the id Metadata then reports.
    assert_eq!(created_a, a);
    assert_eq!(created_b, before["ids-b"]);
    assert!(ids(broker.kafka_addr(), 9).values().all(uuid::Uuid::is_nil));

    // Leader epochs: 0 as created; the restarted broker leads again at a
    // newer epoch (its old incarnation was fenced), the same everywhere.
    let epochs = |kafka: SocketAddr| -> Vec<i32> {
        let mut stream = connect(kafka);
        let mut metadata = MetadataRequest::default();
        metadata.topics = None;
        let meta: MetadataResponse = call(&mut stream, ApiKey::Metadata, 12, &metadata);
        let mut epochs: Vec<i32> = meta
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.leader_epoch))
            .collect();
        epochs.dedup();
        epochs
    };
    assert_eq!(epochs(broker.kafka_addr()), vec![0]);
    broker.terminate_and_restart();
    assert_eq!(ids(broker.kafka_addr(), 12), before);
    let restarted = epochs(broker.kafka_addr());
    assert_eq!(restarted.len(), 1, "{restarted:?}");
    assert!(restarted[0] > 0, "{restarted:?}");

    // Deleted and created again: a new topic, a new id.
    let mut stream = connect(broker.kafka_addr());
    let mut delete = kafka_protocol::messages::DeleteTopicsRequest::default();
    delete.topic_names = vec![TopicName(StrBytes::from_static_str("ids-a"))];
    let deleted: kafka_protocol::messages::DeleteTopicsResponse =
        call(&mut stream, ApiKey::DeleteTopics, 5, &delete);
    assert_eq!(deleted.responses[0].error_code, 0);
    let recreated = create(&mut stream, "ids-a");
    let after = ids(broker.kafka_addr(), 12);
    assert_ne!(after["ids-a"], a);
    assert_eq!(after["ids-a"], recreated);
    assert_eq!(after["ids-b"], before["ids-b"]);
}
