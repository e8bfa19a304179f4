//! Defaults and topic semantics a Kafka client suite expects (issue 11):
//! topics auto-created on a producer's Metadata request, CreateTopics with
//! explicit replica assignments, `compression.type` recompressing on
//! produce, and every Kafka topic config either accepted or refused with a
//! reason.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;
use fjord_net::client::producer::{Producer, ProducerOptions, ProducerRecord};
use fjord_schema::{BatchView, Compression, ErrorCode};
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, CreateTopicsResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, FetchRequest, FetchResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;
use rdkafka::producer::{FutureProducer, FutureRecord};

use common::kafka::{call, client_config, connect, encode_batch, plain_record};
use common::Broker;

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
const INVALID_CONFIG: i16 = 40;
const INVALID_REQUEST: i16 = 42;
/// Kafka's attribute codec bits for zstd.
const ZSTD: i16 = 4;

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_owned()))
}

/// Metadata v12 naming `topics`, asking for auto-creation.
fn metadata_creating(kafka: SocketAddr, topics: &[&str]) -> MetadataResponse {
    let mut request = MetadataRequest::default();
    request.allow_auto_topic_creation = true;
    request.topics = Some(
        topics
            .iter()
            .map(|t| {
                let mut wanted = MetadataRequestTopic::default();
                wanted.name = Some(name(t));
                wanted
            })
            .collect(),
    );
    call(&mut connect(kafka), ApiKey::Metadata, 12, &request)
}

/// (error code, partition count) per topic of a Metadata response.
fn topic_states(response: &MetadataResponse) -> HashMap<String, (i16, usize)> {
    response
        .topics
        .iter()
        .map(|t| {
            let topic = t
                .name
                .as_ref()
                .map_or_else(String::new, |n| n.0.to_string());
            (topic, (t.error_code, t.partitions.len()))
        })
        .collect()
}

/// The broker's configs as DescribeConfigs v4 gives them.
fn broker_configs(kafka: SocketAddr) -> HashMap<String, String> {
    described_configs(kafka, 4, "1")
}

fn topic_configs(kafka: SocketAddr, topic: &str) -> HashMap<String, String> {
    described_configs(kafka, 2, topic)
}

/// The configs of one resource (2: topic, 4: broker) as DescribeConfigs
/// v4 gives them.
fn described_configs(kafka: SocketAddr, resource_type: i8, name: &str) -> HashMap<String, String> {
    let mut request = DescribeConfigsRequest::default();
    let mut resource = DescribeConfigsResource::default();
    resource.resource_type = resource_type;
    resource.resource_name = StrBytes::from_string(name.to_owned());
    request.resources.push(resource);
    let response: DescribeConfigsResponse =
        call(&mut connect(kafka), ApiKey::DescribeConfigs, 4, &request);
    assert_eq!(response.results[0].error_code, 0, "{name}");
    response.results[0]
        .configs
        .iter()
        .map(|c| {
            (
                c.name.to_string(),
                c.value.as_ref().map_or_else(String::new, |v| v.to_string()),
            )
        })
        .collect()
}

fn rdkafka_send(broker: &Broker, topic: &str, extra: &[(&str, &str)]) -> Result<(), String> {
    let mut config = client_config(broker);
    config.set("acks", "all");
    for (key, value) in extra {
        config.set(*key, *value);
    }
    let producer: FutureProducer = config.create().expect("producer");
    let delivery = producer
        .send_result(FutureRecord::to(topic).key("k").payload("v"))
        .map_err(|(e, _)| e)
        .expect("queued");
    match futures_lite::future::block_on(delivery).expect("delivery future") {
        Ok(_) => Ok(()),
        Err((error, _)) => Err(error.to_string()),
    }
}

/// `kcat -P -t newtopic` against a fresh broker: librdkafka's producer asks
/// Metadata to create the topic; it gets the default partition count. The
/// native producer does the same. Invalid and internal names are not
/// created, and the broker view says what it does.
#[test]
fn producers_auto_create_never_created_topics_with_the_default_partition_count() {
    let broker = Broker::start(&["--shards", "2", "--default-partitions", "3"]);
    let kafka = broker.kafka_addr();

    rdkafka_send(&broker, "newtopic", &[]).expect("delivered to an auto-created topic");
    let states = topic_states(&metadata_creating(kafka, &["newtopic"]));
    assert_eq!(states["newtopic"], (0, 3));

    let producer =
        Producer::new(ProducerOptions::new(broker.addr.to_string())).expect("native producer");
    let handle = producer
        .send(ProducerRecord {
            topic: "native-new",
            key: None,
            value: Some(b"v"),
            ..ProducerRecord::default()
        })
        .expect("queued");
    producer.flush();
    handle.wait().expect("delivered to an auto-created topic");
    let mut conn = broker.conn();
    let native = conn.metadata(Some(&["native-new"]));
    assert_eq!(native.topics[0].error, ErrorCode::None);
    assert_eq!(native.topics[0].partitions.len(), 3);
    // A consumer's (or admin's) Metadata never creates.
    let plain = conn.metadata(Some(&["only-looked-at"]));
    assert_eq!(plain.topics[0].error, ErrorCode::UnknownTopicOrPartition);

    let states = topic_states(&metadata_creating(
        kafka,
        &["bad name!", "__transaction_state", "__consumer_offsets"],
    ));
    assert_eq!(states["bad name!"].0, INVALID_TOPIC_EXCEPTION);
    assert_eq!(states["__transaction_state"].0, UNKNOWN_TOPIC_OR_PARTITION);
    assert_eq!(states["__consumer_offsets"].0, 0);
    let all = conn.metadata(None);
    assert!(
        !all.topics.iter().any(|t| t.name == "__transaction_state"),
        "internal topics are never auto-created"
    );

    let configs = broker_configs(kafka);
    assert_eq!(configs["auto.create.topics.enable"], "true");
    assert_eq!(configs["num.partitions"], "3");
    assert_eq!(configs["compression.type"], "producer");
}

/// With the switch off, the topic stays unknown and the producer fails.
#[test]
fn with_auto_create_off_a_producer_gets_unknown_topic_or_partition() {
    let broker = Broker::start(&["--auto-create-topics", "false"]);
    let kafka = broker.kafka_addr();
    let states = topic_states(&metadata_creating(kafka, &["nowhere"]));
    assert_eq!(states["nowhere"].0, UNKNOWN_TOPIC_OR_PARTITION);
    let error = rdkafka_send(
        &broker,
        "nowhere",
        &[
            ("message.timeout.ms", "3000"),
            ("topic.metadata.propagation.max.ms", "1000"),
        ],
    )
    .expect_err("no topic, no delivery");
    assert!(
        error.contains("Unknown topic") || error.contains("timed out"),
        "{error}"
    );
    let states = topic_states(&metadata_creating(kafka, &["nowhere"]));
    assert_eq!(states["nowhere"].0, UNKNOWN_TOPIC_OR_PARTITION);
    assert_eq!(broker_configs(kafka)["auto.create.topics.enable"], "false");
}

fn creatable(
    topic: &str,
    partitions: i32,
    factor: i16,
    assignments: &[(i32, &[i32])],
) -> CreatableTopic {
    let mut t = CreatableTopic::default();
    t.name = name(topic);
    t.num_partitions = partitions;
    t.replication_factor = factor;
    t.assignments = assignments
        .iter()
        .map(|(partition, brokers)| {
            let mut a = CreatableReplicaAssignment::default();
            a.partition_index = *partition;
            a.broker_ids = brokers.iter().map(|b| BrokerId(*b)).collect();
            a
        })
        .collect();
    t
}

fn create(kafka: SocketAddr, topics: Vec<CreatableTopic>) -> Vec<(i16, Option<String>)> {
    let mut request = CreateTopicsRequest::default();
    request.timeout_ms = 10_000;
    request.topics = topics;
    let response: CreateTopicsResponse =
        call(&mut connect(kafka), ApiKey::CreateTopics, 7, &request);
    response
        .topics
        .iter()
        .map(|t| {
            (
                t.error_code,
                t.error_message.as_ref().map(|m| m.to_string()),
            )
        })
        .collect()
}

/// Explicit assignments decide the partition count; bad ones are refused
/// as Kafka's controller refuses them, and nothing is created for them.
#[test]
fn create_topics_honours_explicit_replica_assignments() {
    let broker = Broker::start(&["--shards", "2", "--node-id", "5"]);
    let kafka = broker.kafka_addr();
    let outcomes = create(
        kafka,
        vec![
            creatable("assigned", -1, -1, &[(0, &[5]), (2, &[5]), (1, &[5])]),
            creatable("elsewhere", -1, -1, &[(0, &[1])]),
            creatable("gap", -1, -1, &[(0, &[5]), (2, &[5])]),
            creatable("twice", -1, -1, &[(0, &[5, 5])]),
            creatable("empty", -1, -1, &[(0, &[])]),
            creatable("both", 3, -1, &[(0, &[5])]),
        ],
    );
    let codes: Vec<i16> = outcomes.iter().map(|o| o.0).collect();
    assert_eq!(
        codes,
        [
            0,
            INVALID_REPLICA_ASSIGNMENT,
            INVALID_REPLICA_ASSIGNMENT,
            INVALID_REPLICA_ASSIGNMENT,
            INVALID_REPLICA_ASSIGNMENT,
            INVALID_REQUEST
        ],
        "{outcomes:?}"
    );
    assert!(
        outcomes[1]
            .1
            .as_deref()
            .unwrap_or_default()
            .contains("broker 1"),
        "{outcomes:?}"
    );
    let mut request = MetadataRequest::default();
    request.topics = None;
    let all: MetadataResponse = call(&mut connect(kafka), ApiKey::Metadata, 12, &request);
    let states = topic_states(&all);
    assert_eq!(states["assigned"], (0, 3));
    for refused in ["elsewhere", "gap", "twice", "empty", "both"] {
        assert!(!states.contains_key(refused), "{refused} was created");
    }
    for p in &all
        .topics
        .iter()
        .find(|t| t.partitions.len() == 3)
        .expect("assigned")
        .partitions
    {
        assert_eq!(p.replica_nodes, [BrokerId(5)]);
    }
}

fn create_with_configs(
    kafka: SocketAddr,
    topic: &str,
    configs: &[(&str, &str)],
    validate_only: bool,
) -> (i16, Option<String>) {
    let mut t = creatable(topic, 1, 1, &[]);
    t.configs = configs
        .iter()
        .map(|(k, v)| {
            let mut c = CreatableTopicConfig::default();
            c.name = StrBytes::from_string((*k).to_owned());
            c.value = Some(StrBytes::from_string((*v).to_owned()));
            c
        })
        .collect();
    let mut request = CreateTopicsRequest::default();
    request.timeout_ms = 10_000;
    request.validate_only = validate_only;
    request.topics = vec![t];
    let response: CreateTopicsResponse =
        call(&mut connect(kafka), ApiKey::CreateTopics, 7, &request);
    let t = &response.topics[0];
    (
        t.error_code,
        t.error_message.as_ref().map(|m| m.to_string()),
    )
}

/// Kafka RecordBatch v2 batches of a Fetch v12 of partition 0 from 0.
fn kafka_fetch(kafka: SocketAddr, topic: &str) -> Bytes {
    let mut request = FetchRequest::default();
    request.max_wait_ms = 100;
    request.min_bytes = 1;
    request.max_bytes = 1 << 20;
    let mut t = FetchTopic::default();
    t.topic = name(topic);
    let mut p = FetchPartition::default();
    p.fetch_offset = 0;
    p.partition_max_bytes = 1 << 20;
    t.partitions.push(p);
    request.topics.push(t);
    let response: FetchResponse = call(&mut connect(kafka), ApiKey::Fetch, 12, &request);
    let data = &response.responses[0].partitions[0];
    assert_eq!(data.error_code, 0);
    data.records.clone().expect("records")
}

/// Attributes' codec bits of every Kafka batch in `records`.
fn kafka_codecs(records: &[u8]) -> Vec<i16> {
    let mut codecs = Vec::new();
    let mut rest = records;
    while rest.len() >= 61 {
        let len = i32::from_be_bytes(rest[8..12].try_into().expect("4 bytes")) as usize + 12;
        codecs.push(i16::from_be_bytes([rest[21], rest[22]]) & 0b111);
        rest = &rest[len..];
    }
    codecs
}

/// `compression.type = zstd`: batches produced uncompressed through both
/// ports are stored, and served to both, as zstd, with the same records;
/// a `producer` topic keeps what arrived.
#[test]
fn a_zstd_topic_stores_what_both_ports_produce_as_zstd() {
    let broker = Broker::start(&["--shards", "2"]);
    let kafka = broker.kafka_addr();
    assert_eq!(
        create_with_configs(kafka, "squeezed", &[("compression.type", "zstd")], false).0,
        0
    );
    assert_eq!(create_with_configs(kafka, "as-sent", &[], false).0, 0);
    assert_eq!(topic_configs(kafka, "squeezed")["compression.type"], "zstd");

    let kafka_records: Vec<_> = (0..5i64)
        .map(|i| {
            plain_record(
                i,
                1_700_000_000_000 + i,
                Some(Bytes::from(format!("k{i}"))),
                Some(Bytes::from(vec![b'x'; 200 + i as usize])),
            )
        })
        .collect();
    let native_batch = common::batch(&[(b"nk0", b"nv0"), (b"nk1", b"nv1")], 1_700_000_000_100);
    let mut conn = broker.conn();
    for topic in ["squeezed", "as-sent"] {
        let mut produce = ProduceRequest::default();
        produce.acks = -1;
        produce.timeout_ms = 10_000;
        let mut data = TopicProduceData::default();
        data.name = name(topic);
        let mut part = PartitionProduceData::default();
        part.records = Some(encode_batch(
            &kafka_records,
            kafka_protocol::records::Compression::None,
        ));
        data.partition_data.push(part);
        produce.topic_data.push(data);
        let produced: ProduceResponse = call(&mut connect(kafka), ApiKey::Produce, 9, &produce);
        let answer = &produced.responses[0].partition_responses[0];
        assert_eq!((answer.error_code, answer.base_offset), (0, 0), "{topic}");
        assert_eq!(
            conn.produce(topic, 0, &native_batch, -1),
            (ErrorCode::None, 5)
        );
    }

    for (topic, codec, kafka_codec) in [
        ("squeezed", Compression::Zstd, ZSTD),
        ("as-sent", Compression::None, 0),
    ] {
        // The Kafka port: attributes name the codec; records as produced.
        let mut fetched = kafka_fetch(kafka, topic);
        // kafka-protocol's encoder writes a batch per record here.
        assert_eq!(kafka_codecs(&fetched), vec![kafka_codec; 6], "{topic}");
        let batches = RecordBatchDecoder::decode_all(&mut fetched).expect("decode");
        let values: Vec<Option<Bytes>> = batches
            .iter()
            .flat_map(|b| b.records.iter().map(|r| r.value.clone()))
            .collect();
        let mut expected: Vec<Option<Bytes>> =
            kafka_records.iter().map(|r| r.value.clone()).collect();
        expected.extend([
            Some(Bytes::from_static(b"nv0")),
            Some(Bytes::from_static(b"nv1")),
        ]);
        assert_eq!(values, expected, "{topic}");

        // The native port: the stored batches themselves.
        let native = conn.fetch(topic, 0, 0, 100, 1);
        let mut rest = &native.batches[..];
        let mut codecs = Vec::new();
        while !rest.is_empty() {
            let (view, tail) = BatchView::parse(rest).expect("stored batch verifies");
            codecs.push(view.header().compression().expect("codec"));
            rest = tail;
        }
        assert_eq!(codecs, vec![codec; 6], "{topic}");
        let native_values: Vec<Option<Vec<u8>>> =
            native.records.iter().map(|r| r.2.clone()).collect();
        let expected: Vec<Option<Vec<u8>>> = expected
            .iter()
            .map(|v| v.as_ref().map(|b| b.to_vec()))
            .collect();
        assert_eq!(native_values, expected, "{topic}");
    }

    // An alter takes effect for the next produce: gzip from now on, and
    // a compression.type that is not Kafka's is refused.
    let alter = |value: &str| -> i16 {
        use kafka_protocol::messages::incremental_alter_configs_request::{
            AlterConfigsResource, AlterableConfig,
        };
        use kafka_protocol::messages::{
            IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
        };
        let mut request = IncrementalAlterConfigsRequest::default();
        let mut resource = AlterConfigsResource::default();
        resource.resource_type = 2;
        resource.resource_name = StrBytes::from_static_str("as-sent");
        let mut config = AlterableConfig::default();
        config.name = StrBytes::from_static_str("compression.type");
        config.value = Some(StrBytes::from_string(value.to_owned()));
        resource.configs.push(config);
        request.resources.push(resource);
        let response: IncrementalAlterConfigsResponse = call(
            &mut connect(kafka),
            ApiKey::IncrementalAlterConfigs,
            1,
            &request,
        );
        response.responses[0].error_code
    };
    assert_eq!(alter("brotli"), INVALID_CONFIG);
    assert_eq!(alter("gzip"), 0);
    assert_eq!(topic_configs(kafka, "as-sent")["compression.type"], "gzip");
    assert_eq!(
        conn.produce("as-sent", 0, &native_batch, -1),
        (ErrorCode::None, 7)
    );
    let after = conn.fetch("as-sent", 0, 7, 100, 1);
    let (view, _) = BatchView::parse(&after.batches).expect("stored batch");
    assert_eq!(view.header().compression(), Ok(Compression::Gzip));
    assert_eq!(after.records.len(), 2);
}

/// Kafka's topic configs (Kafka 4.x docs, "Topic Configs", plus
/// `message.format.version` / `message.downconversion.enable` /
/// `message.timestamp.difference.max.ms`, which 3.x clients still send)
/// with Kafka's default values: this list is the test's own, not the
/// broker's table, so a key the broker forgets fails here.
const KAFKA_TOPIC_CONFIGS: [(&str, &str); 36] = [
    ("cleanup.policy", "delete"),
    ("compression.gzip.level", "-1"),
    ("compression.lz4.level", "9"),
    ("compression.type", "producer"),
    ("compression.zstd.level", "3"),
    ("delete.retention.ms", "86400000"),
    ("file.delete.delay.ms", "60000"),
    ("flush.messages", "9223372036854775807"),
    ("flush.ms", "9223372036854775807"),
    ("follower.replication.throttled.replicas", ""),
    ("index.interval.bytes", "4096"),
    ("leader.replication.throttled.replicas", ""),
    ("local.retention.bytes", "-2"),
    ("local.retention.ms", "-2"),
    ("max.compaction.lag.ms", "9223372036854775807"),
    ("max.message.bytes", "1048588"),
    ("message.downconversion.enable", "true"),
    ("message.format.version", "3.0-IV1"),
    ("message.timestamp.after.max.ms", "9223372036854775807"),
    ("message.timestamp.before.max.ms", "9223372036854775807"),
    ("message.timestamp.difference.max.ms", "9223372036854775807"),
    ("message.timestamp.type", "CreateTime"),
    ("min.cleanable.dirty.ratio", "0.5"),
    ("min.compaction.lag.ms", "0"),
    ("min.insync.replicas", "1"),
    ("preallocate", "false"),
    ("remote.log.copy.disable", "false"),
    ("remote.log.delete.on.disable", "false"),
    ("remote.storage.enable", "false"),
    ("retention.bytes", "-1"),
    ("retention.ms", "604800000"),
    ("segment.bytes", "1073741824"),
    ("segment.index.bytes", "10485760"),
    ("segment.jitter.ms", "0"),
    ("segment.ms", "604800000"),
    ("unclean.leader.election.enable", "false"),
];

/// Every Kafka topic config at its Kafka default is accepted at creation
/// (and then described with that value), or refused with INVALID_CONFIG
/// and a message naming the key and why, never as "unknown". Values Fjord
/// cannot honour are refused the same way.
#[test]
fn every_kafka_topic_config_is_accepted_or_refused_with_a_reason() {
    let mut broker = Broker::start(&[]);
    let kafka = broker.kafka_addr();
    let mut accepted = Vec::new();
    for (key, value) in KAFKA_TOPIC_CONFIGS {
        match create_with_configs(kafka, "probe", &[(key, value)], true) {
            (0, _) => accepted.push((key, value)),
            (INVALID_CONFIG, Some(message)) => {
                assert!(message.contains(key), "{key}: {message}");
                assert!(!message.contains("unknown"), "{key}: {message}");
                assert!(message.contains("not supported"), "{key}: {message}");
            }
            other => panic!("{key}={value}: {other:?}"),
        }
    }
    // At least everything but the compression levels.
    assert!(
        accepted.len() >= KAFKA_TOPIC_CONFIGS.len() - 3,
        "{accepted:?}"
    );

    assert_eq!(
        create_with_configs(kafka, "everything", &accepted, false).0,
        0
    );
    // What was set survives a restart (the registry keeps it).
    broker.terminate_and_restart();
    let kafka = broker.kafka_addr();
    let described = topic_configs(kafka, "everything");
    for (key, value) in &accepted {
        let got = described
            .get(*key)
            .unwrap_or_else(|| panic!("{key} not described"));
        let same = match (got.parse::<f64>(), value.parse::<f64>()) {
            (Ok(a), Ok(b)) => a == b,
            _ => got == value,
        };
        assert!(same, "{key}: described {got:?}, set {value:?}");
    }

    for (key, value) in [
        ("cleanup.policy", "compact"),
        ("message.timestamp.type", "LogAppendTime"),
        ("segment.jitter.ms", "1000"),
        ("remote.storage.enable", "true"),
        ("message.timestamp.after.max.ms", "3600000"),
        ("compression.zstd.level", "9"),
    ] {
        let (code, message) = create_with_configs(kafka, "probe", &[(key, value)], true);
        let message = message.unwrap_or_default();
        assert_eq!(code, INVALID_CONFIG, "{key}={value}: {message}");
        assert!(
            message.contains(key) && !message.contains("unknown"),
            "{message}"
        );
    }
    // Still unknown: a key Kafka does not have.
    let (code, message) = create_with_configs(kafka, "probe", &[("no.such.config", "1")], true);
    assert_eq!(code, INVALID_CONFIG);
    assert!(message.unwrap_or_default().contains("unknown"));
}

/// A native zstd batch of one record holding `value_bytes` zero bytes
/// (a few KiB on the wire).
fn zstd_zeros(value_bytes: usize) -> Bytes {
    use fjord_schema::batch::{BatchBuilder, BatchOptions, RecordInput};
    let value = vec![0u8; value_bytes];
    let mut builder = BatchBuilder::new(BatchOptions {
        compression: Compression::Zstd,
        ..BatchOptions::default()
    });
    builder.push(RecordInput {
        value: Some(&value),
        timestamp: 1_700_000_000_000,
        ..RecordInput::default()
    });
    builder.finish().expect("batch")
}

/// Recompression to `uncompressed` of small zstd batches that expand to
/// 40 MiB (a bomb) or 6 MiB, from 8 connections at once: the memory each
/// needs comes out of the 16 MiB in-flight budget before anything is
/// decompressed, so the broker's peak memory stays within that budget
/// (plus slack) and a steady producer on another topic loses nothing.
/// A batch that fits is stored uncompressed.
#[test]
fn recompression_memory_is_bounded_by_the_in_flight_budget() {
    const BUDGET_BYTES: u64 = 16 << 20;
    let broker = Broker::start(&[
        "--shards",
        "1",
        "--inflight-bytes-max-per-shard",
        &BUDGET_BYTES.to_string(),
        // Room in the budget for the Kafka edge's decompression allowance
        // (twice it plus one frame); the batches here are small on the wire.
        "--frame-bytes-max",
        "4194304",
    ]);
    let kafka = broker.kafka_addr();
    let flat = [("compression.type", "uncompressed")];
    assert_eq!(create_with_configs(kafka, "flat", &flat, false).0, 0);
    assert_eq!(create_with_configs(kafka, "steady", &[], false).0, 0);
    let steady = common::pressure::SteadyProducer::start(broker.addr, "steady", 0);
    // Warm up: the partitions' buffers exist before the baseline.
    let mut conn = broker.conn();
    assert_eq!(
        conn.produce("flat", 0, &zstd_zeros(1000), -1),
        (ErrorCode::None, 0)
    );
    let pid = broker.child.id();
    let baseline = common::pressure::rss_peak_bytes(pid);

    let (bomb, large) = (zstd_zeros(40 << 20), zstd_zeros(6 << 20));
    let attackers: Vec<_> = (0..8)
        .map(|_| {
            let addr = broker.addr;
            let batches = [bomb.clone(), large.clone(), bomb.clone(), large.clone()];
            std::thread::spawn(move || {
                let mut conn = common::Conn::connect(addr);
                batches
                    .iter()
                    .map(|batch| conn.produce("flat", 0, batch, -1).0)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for attacker in attackers {
        for answer in attacker.join().expect("attacker") {
            assert!(
                matches!(
                    answer,
                    ErrorCode::MessageTooLarge | ErrorCode::RequestTimedOut
                ),
                "{answer:?}"
            );
        }
    }
    let peak = common::pressure::rss_peak_bytes(pid);
    eprintln!("peak RSS {peak} bytes, {baseline} before the attack");
    let slack = 32 << 20;
    assert!(
        peak <= baseline + BUDGET_BYTES + slack,
        "peak RSS {peak} over baseline {baseline} + budget {BUDGET_BYTES} + {slack}"
    );

    // A batch whose recompression fits is taken, and stored uncompressed.
    let fits = zstd_zeros(3 << 20);
    let answer = loop {
        match conn.produce("flat", 0, &fits, -1) {
            (ErrorCode::RequestTimedOut, _) => {
                std::thread::sleep(std::time::Duration::from_millis(50))
            }
            other => break other,
        }
    };
    assert_eq!(answer, (ErrorCode::None, 1));
    let fetched = conn.fetch("flat", 0, 1, 100, 1);
    let (view, _) = BatchView::parse(&fetched.batches).expect("stored batch");
    assert_eq!(view.header().compression(), Ok(Compression::None));
    assert_eq!(fetched.records[0].2.as_ref().map(Vec::len), Some(3 << 20));
    assert!(steady.stop_and_verify(broker.addr) > 0);
}
