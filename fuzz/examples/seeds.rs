//! Writes seed corpora for the fuzz targets into `fuzz/corpus/<target>/`:
//! well-formed messages of every type, produce/fetch payloads with real
//! batches, batches of every codec, and frame streams; and for the Kafka
//! edge (see [`kafka`]): framed requests of every served api and version,
//! Kafka RecordBatch v2 of every codec, ConsumerProtocol bytes,
//! `__consumer_offsets` records and producer-state snapshots.
//!
//! ```text
//! cd fuzz && cargo +nightly run --example seeds
//! ```

use std::path::Path;

use bytes::BytesMut;
use fjord_fuzz::input_from_parts;
use fjord_schema::api::ApiKey;
use fjord_schema::batch::{BatchBuilder, BatchOptions, RecordInput};
use fjord_schema::frame::{encode_frame, FrameFlags};
use fjord_schema::{wire, Compression, CorrelationId};
use flatbuffers::FlatBufferBuilder;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
}

fn batch(codec: Compression, records: usize, headers: bool) -> Vec<u8> {
    let mut builder = BatchBuilder::new(BatchOptions {
        compression: codec,
        ..Default::default()
    });
    for i in 0..records {
        let key = format!("key-{i}");
        let value = vec![b'a' + (i % 26) as u8; 3 + i % 7];
        let h: &[(&[u8], Option<&[u8]>)] = if headers {
            &[(b"trace", Some(b"abc")), (b"null", None)]
        } else {
            &[]
        };
        builder.push(RecordInput {
            key: (i % 3 != 0).then_some(key.as_bytes()),
            value: (i % 5 != 4).then_some(&value[..]),
            headers: h,
            timestamp: 1_700_000_000_000 + i as i64,
            offset_delta: None,
        });
    }
    builder.finish().unwrap().to_vec()
}

fn finish<T>(mut fbb: FlatBufferBuilder<'_>, root: flatbuffers::WIPOffset<T>) -> Vec<u8> {
    fbb.finish_minimal(root);
    fbb.finished_data().to_vec()
}

fn requests() -> Vec<(ApiKey, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();

    let mut fbb = FlatBufferBuilder::new();
    let name = fbb.create_string("fjord-client");
    let version = fbb.create_string("0.1.0");
    let root = wire::ApiVersionsRequest::create(
        &mut fbb,
        &wire::ApiVersionsRequestArgs {
            client_software_name: Some(name),
            client_software_version: Some(version),
        },
    );
    out.push((ApiKey::ApiVersions, finish(fbb, root), vec![]));

    let mut fbb = FlatBufferBuilder::new();
    let a = fbb.create_string("events");
    let b = fbb.create_string("logs");
    let topics = fbb.create_vector(&[a, b]);
    let root = wire::MetadataRequest::create(
        &mut fbb,
        &wire::MetadataRequestArgs {
            topics: Some(topics),
            allow_auto_topic_creation: true,
        },
    );
    out.push((ApiKey::Metadata, finish(fbb, root), vec![]));

    let mut fbb = FlatBufferBuilder::new();
    let key = fbb.create_string("retention.ms");
    let value = fbb.create_string("60000");
    let config = wire::ConfigEntry::create(
        &mut fbb,
        &wire::ConfigEntryArgs {
            key: Some(key),
            value: Some(value),
        },
    );
    let configs = fbb.create_vector(&[config]);
    let name = fbb.create_string("events");
    let topic = wire::CreatableTopic::create(
        &mut fbb,
        &wire::CreatableTopicArgs {
            name: Some(name),
            num_partitions: 3,
            replication_factor: 1,
            configs: Some(configs),
        },
    );
    let topics = fbb.create_vector(&[topic]);
    let root = wire::CreateTopicsRequest::create(
        &mut fbb,
        &wire::CreateTopicsRequestArgs {
            topics: Some(topics),
            timeout_ms: 1000,
            validate_only: false,
        },
    );
    out.push((ApiKey::CreateTopics, finish(fbb, root), vec![]));

    let mut fbb = FlatBufferBuilder::new();
    let a = fbb.create_string("events");
    let topics = fbb.create_vector(&[a]);
    let root = wire::DeleteTopicsRequest::create(
        &mut fbb,
        &wire::DeleteTopicsRequestArgs {
            topics: Some(topics),
            timeout_ms: 1000,
        },
    );
    out.push((ApiKey::DeleteTopics, finish(fbb, root), vec![]));

    for codec in Compression::ALL {
        let first = batch(codec, 3, true);
        let second = batch(Compression::None, 2, false);
        let payload = [&first[..], &second[..]].concat();
        let mut fbb = FlatBufferBuilder::new();
        let slices = [
            wire::PayloadSlice::new(0, payload.len() as u32),
            wire::PayloadSlice::new(first.len() as u32, second.len() as u32),
        ];
        let partitions: Vec<_> = slices
            .iter()
            .enumerate()
            .map(|(i, slice)| {
                wire::PartitionProduceData::create(
                    &mut fbb,
                    &wire::PartitionProduceDataArgs {
                        partition: i as u32,
                        records: Some(slice),
                    },
                )
            })
            .collect();
        let partitions = fbb.create_vector(&partitions);
        let name = fbb.create_string("events");
        let topic = wire::TopicProduceData::create(
            &mut fbb,
            &wire::TopicProduceDataArgs {
                name: Some(name),
                partitions: Some(partitions),
            },
        );
        let topics = fbb.create_vector(&[topic]);
        let tid = fbb.create_string("tx-1");
        let root = wire::ProduceRequest::create(
            &mut fbb,
            &wire::ProduceRequestArgs {
                transactional_id: Some(tid),
                acks: wire::Acks::All,
                timeout_ms: 1000,
                topics: Some(topics),
            },
        );
        out.push((ApiKey::Produce, finish(fbb, root), payload));
    }

    let mut fbb = FlatBufferBuilder::new();
    let partition = wire::FetchPartition::create(
        &mut fbb,
        &wire::FetchPartitionArgs {
            partition: 1,
            fetch_offset: 42,
            current_leader_epoch: 3,
            log_start_offset: -1,
            partition_max_bytes: 1 << 20,
        },
    );
    let partitions = fbb.create_vector(&[partition]);
    let name = fbb.create_string("events");
    let topic = wire::FetchTopic::create(
        &mut fbb,
        &wire::FetchTopicArgs {
            name: Some(name),
            partitions: Some(partitions),
        },
    );
    let topics = fbb.create_vector(&[topic]);
    let root = wire::FetchRequest::create(
        &mut fbb,
        &wire::FetchRequestArgs {
            replica_id: -1,
            max_wait_ms: 500,
            min_bytes: 1,
            max_bytes: 1 << 20,
            isolation_level: wire::IsolationLevel::ReadCommitted,
            topics: Some(topics),
        },
    );
    out.push((ApiKey::Fetch, finish(fbb, root), vec![]));

    let mut fbb = FlatBufferBuilder::new();
    let partition = wire::ListOffsetsPartition::create(
        &mut fbb,
        &wire::ListOffsetsPartitionArgs {
            partition: 0,
            timestamp: -2,
            current_leader_epoch: -1,
        },
    );
    let partitions = fbb.create_vector(&[partition]);
    let name = fbb.create_string("events");
    let topic = wire::ListOffsetsTopic::create(
        &mut fbb,
        &wire::ListOffsetsTopicArgs {
            name: Some(name),
            partitions: Some(partitions),
        },
    );
    let topics = fbb.create_vector(&[topic]);
    let root = wire::ListOffsetsRequest::create(
        &mut fbb,
        &wire::ListOffsetsRequestArgs {
            replica_id: -1,
            isolation_level: wire::IsolationLevel::ReadUncommitted,
            topics: Some(topics),
        },
    );
    out.push((ApiKey::ListOffsets, finish(fbb, root), vec![]));
    out
}

fn responses() -> Vec<(ApiKey, bool, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();

    let mut fbb = FlatBufferBuilder::new();
    let message = fbb.create_string("unsupported version");
    let root = wire::ErrorResponse::create(
        &mut fbb,
        &wire::ErrorResponseArgs {
            error_code: 35,
            message: Some(message),
        },
    );
    out.push((ApiKey::Produce, true, finish(fbb, root), vec![]));

    let mut fbb = FlatBufferBuilder::new();
    let ranges = [
        wire::ApiVersionRange::new(0, 0, 0),
        wire::ApiVersionRange::new(4, 0, 1),
    ];
    let ranges = fbb.create_vector(&ranges);
    let version = fbb.create_string("fjord 0.1.0");
    let root = wire::ApiVersionsResponse::create(
        &mut fbb,
        &wire::ApiVersionsResponseArgs {
            error_code: 0,
            api_versions: Some(ranges),
            broker_software_version: Some(version),
        },
    );
    out.push((ApiKey::ApiVersions, false, finish(fbb, root), vec![]));

    let mut fbb = FlatBufferBuilder::new();
    let host = fbb.create_string("localhost");
    let rack = fbb.create_string("r1");
    let ports = fbb.create_vector(&[9093u16, 9094]);
    let broker = wire::BrokerMetadata::create(
        &mut fbb,
        &wire::BrokerMetadataArgs {
            node_id: 1,
            host: Some(host),
            port: 9092,
            shard_ports: Some(ports),
            rack: Some(rack),
            ..Default::default()
        },
    );
    let brokers = fbb.create_vector(&[broker]);
    let replicas = fbb.create_vector(&[1u32, 2, 3]);
    let isr = fbb.create_vector(&[1u32, 2]);
    let partition = wire::PartitionMetadata::create(
        &mut fbb,
        &wire::PartitionMetadataArgs {
            error_code: 0,
            partition: 0,
            leader: 1,
            leader_epoch: 4,
            leader_shard: 1,
            replicas: Some(replicas),
            isr: Some(isr),
            ..Default::default()
        },
    );
    let partitions = fbb.create_vector(&[partition]);
    let name = fbb.create_string("events");
    let topic = wire::TopicMetadata::create(
        &mut fbb,
        &wire::TopicMetadataArgs {
            error_code: 0,
            name: Some(name),
            is_internal: false,
            partitions: Some(partitions),
        },
    );
    let topics = fbb.create_vector(&[topic]);
    let cluster = fbb.create_string("cluster-1");
    let root = wire::MetadataResponse::create(
        &mut fbb,
        &wire::MetadataResponseArgs {
            throttle_time_ms: 0,
            cluster_id: Some(cluster),
            controller_id: 1,
            brokers: Some(brokers),
            topics: Some(topics),
            ..Default::default()
        },
    );
    out.push((ApiKey::Metadata, false, finish(fbb, root), vec![]));

    let mut fbb = FlatBufferBuilder::new();
    let name = fbb.create_string("events");
    let message = fbb.create_string("exists");
    let result = wire::CreatableTopicResult::create(
        &mut fbb,
        &wire::CreatableTopicResultArgs {
            name: Some(name),
            error_code: 36,
            error_message: Some(message),
            num_partitions: 3,
            replication_factor: 1,
        },
    );
    let topics = fbb.create_vector(&[result]);
    let root = wire::CreateTopicsResponse::create(
        &mut fbb,
        &wire::CreateTopicsResponseArgs {
            throttle_time_ms: 0,
            topics: Some(topics),
        },
    );
    out.push((ApiKey::CreateTopics, false, finish(fbb, root), vec![]));

    let mut fbb = FlatBufferBuilder::new();
    let name = fbb.create_string("events");
    let result = wire::DeletableTopicResult::create(
        &mut fbb,
        &wire::DeletableTopicResultArgs {
            name: Some(name),
            error_code: 0,
            error_message: None,
        },
    );
    let topics = fbb.create_vector(&[result]);
    let root = wire::DeleteTopicsResponse::create(
        &mut fbb,
        &wire::DeleteTopicsResponseArgs {
            throttle_time_ms: 0,
            topics: Some(topics),
        },
    );
    out.push((ApiKey::DeleteTopics, false, finish(fbb, root), vec![]));

    let mut fbb = FlatBufferBuilder::new();
    let message = fbb.create_string("ok");
    let partition = wire::PartitionProduceResponse::create(
        &mut fbb,
        &wire::PartitionProduceResponseArgs {
            partition: 0,
            error_code: 0,
            error_message: Some(message),
            base_offset: 100,
            log_append_time_ms: -1,
            log_start_offset: 0,
        },
    );
    let partitions = fbb.create_vector(&[partition]);
    let name = fbb.create_string("events");
    let topic = wire::TopicProduceResponse::create(
        &mut fbb,
        &wire::TopicProduceResponseArgs {
            name: Some(name),
            partitions: Some(partitions),
        },
    );
    let topics = fbb.create_vector(&[topic]);
    let root = wire::ProduceResponse::create(
        &mut fbb,
        &wire::ProduceResponseArgs {
            throttle_time_ms: 0,
            topics: Some(topics),
        },
    );
    out.push((ApiKey::Produce, false, finish(fbb, root), vec![]));

    for codec in Compression::ALL {
        let payload = batch(codec, 4, true);
        let mut fbb = FlatBufferBuilder::new();
        let slice = wire::PayloadSlice::new(0, payload.len() as u32);
        let partition = wire::FetchPartitionResponse::create(
            &mut fbb,
            &wire::FetchPartitionResponseArgs {
                partition: 0,
                error_code: 0,
                high_watermark: 10,
                last_stable_offset: 10,
                log_start_offset: 0,
                records: Some(&slice),
            },
        );
        let partitions = fbb.create_vector(&[partition]);
        let name = fbb.create_string("events");
        let topic = wire::FetchTopicResponse::create(
            &mut fbb,
            &wire::FetchTopicResponseArgs {
                name: Some(name),
                partitions: Some(partitions),
            },
        );
        let topics = fbb.create_vector(&[topic]);
        let root = wire::FetchResponse::create(
            &mut fbb,
            &wire::FetchResponseArgs {
                throttle_time_ms: 0,
                error_code: 0,
                topics: Some(topics),
            },
        );
        out.push((ApiKey::Fetch, false, finish(fbb, root), payload));
    }

    let mut fbb = FlatBufferBuilder::new();
    let partition = wire::ListOffsetsPartitionResponse::create(
        &mut fbb,
        &wire::ListOffsetsPartitionResponseArgs {
            partition: 0,
            error_code: 0,
            timestamp: -1,
            offset: 77,
            leader_epoch: 2,
        },
    );
    let partitions = fbb.create_vector(&[partition]);
    let name = fbb.create_string("events");
    let topic = wire::ListOffsetsTopicResponse::create(
        &mut fbb,
        &wire::ListOffsetsTopicResponseArgs {
            name: Some(name),
            partitions: Some(partitions),
        },
    );
    let topics = fbb.create_vector(&[topic]);
    let root = wire::ListOffsetsResponse::create(
        &mut fbb,
        &wire::ListOffsetsResponseArgs {
            throttle_time_ms: 0,
            topics: Some(topics),
        },
    );
    out.push((ApiKey::ListOffsets, false, finish(fbb, root), vec![]));
    out
}

fn target_for(key: ApiKey) -> &'static str {
    match key {
        ApiKey::ApiVersions => "api_versions_request",
        ApiKey::Metadata => "metadata_request",
        ApiKey::CreateTopics => "create_topics_request",
        ApiKey::DeleteTopics => "delete_topics_request",
        ApiKey::Produce => "produce_request",
        ApiKey::Fetch => "fetch_request",
        ApiKey::ListOffsets => "list_offsets_request",
        other => unreachable!("no native request target for {other:?}"),
    }
}

fn main() {
    let mut stream = BytesMut::new();
    for (i, (key, body, payload)) in requests().into_iter().enumerate() {
        write(
            target_for(key),
            &i.to_string(),
            &input_from_parts(0, &body, &payload),
        );
        encode_frame(
            &mut stream,
            key as u16,
            0,
            FrameFlags(0),
            CorrelationId(i as u32),
            &body,
            &payload,
        );
    }
    for (i, (key, error, body, payload)) in responses().into_iter().enumerate() {
        let flags = if error { FrameFlags::ERROR as u8 } else { 0 };
        let input = [&[key as u8][..], &input_from_parts(flags, &body, &payload)].concat();
        write("response_decoder", &i.to_string(), &input);
    }

    // frame_decoder: 1 MiB limit, pieces of 7, 1 and 100 bytes.
    let prefix = [20u8, 0, 3, 6, 0, 99];
    write(
        "frame_decoder",
        "stream",
        &[&prefix[..], &stream[..]].concat(),
    );
    write(
        "frame_decoder",
        "whole",
        &[&[20u8, 0, 0][..], &stream[..]].concat(),
    );

    for codec in Compression::ALL {
        let one = batch(codec, 5, true);
        let two = [&one[..], &batch(codec, 1, false)[..]].concat();
        // Mode 0b1111: fix CRCs, 8 KiB decompression limit.
        write(
            "batch_view",
            &format!("{}-1", codec.name()),
            &[&[0x0f][..], &one].concat(),
        );
        write(
            "batch_view",
            &format!("{}-2", codec.name()),
            &[&[0x0f][..], &two].concat(),
        );
    }

    kafka::seeds();
    replication::seeds();
}

/// Seeds of `replication_wire`: one body of each kind.
mod replication {
    use bytes::Bytes;
    use fjord_broker::replication::wire::*;
    use fjord_schema::{ErrorCode, LeaderEpoch, NodeId, Offset, PartitionId};

    use super::write;

    pub fn seeds() {
        let fetch = ReplicaFetchRequest {
            replica_id: NodeId(2),
            max_wait_ms: 500,
            min_bytes: 1,
            max_bytes: 10 << 20,
            topics: vec![(
                "orders".to_string(),
                vec![ReplicaFetchPartition {
                    partition: PartitionId(0),
                    fetch_offset: Offset(42),
                    current_leader_epoch: LeaderEpoch(3),
                    durable_end: Some(Offset(40)),
                    partition_max_bytes: 1 << 20,
                }],
            )],
        };
        write(
            "replication_wire",
            "fetch_request",
            &[&[0u8][..], &fetch.encode()].concat(),
        );
        let response = ReplicaFetchResponse {
            topics: vec![(
                "orders".to_string(),
                vec![ReplicaFetchResult {
                    partition: PartitionId(0),
                    error: ErrorCode::None,
                    high_watermark: 40,
                    log_start_offset: 0,
                    batches: vec![Bytes::from_static(b"batch one"), Bytes::from_static(b"two")],
                }],
            )],
        };
        let (body, payload) = response.encode();
        let len = u16::try_from(body.len()).expect("a small body").to_le_bytes();
        write(
            "replication_wire",
            "fetch_response",
            &[&[1u8][..], &len, &body, &payload.concat()].concat(),
        );
        let epochs = EpochsRequest {
            replica_id: NodeId(2),
            topics: vec![(
                "orders".to_string(),
                vec![EpochQueryPartition {
                    partition: PartitionId(0),
                    current_leader_epoch: LeaderEpoch(3),
                    leader_epoch: LeaderEpoch(2),
                }],
            )],
        };
        write(
            "replication_wire",
            "epochs_request",
            &[&[2u8][..], &epochs.encode()].concat(),
        );
        let answer = EpochsResponse {
            topics: vec![(
                "orders".to_string(),
                vec![EpochAnswer {
                    partition: PartitionId(0),
                    error: ErrorCode::None,
                    leader_epoch: 2,
                    end_offset: 37,
                }],
            )],
        };
        write(
            "replication_wire",
            "epochs_response",
            &[&[3u8][..], &answer.encode()].concat(),
        );
    }
}

/// Seeds of the Kafka-edge targets (`kafka_*`, `native_to_kafka`,
/// `consumer_protocol`, `offsets_record`, `producer_snapshot`).
mod kafka {
    use bytes::{BufMut, Bytes, BytesMut};
    use fjord_broker::group::offsets_log;
    use fjord_broker::kafka::handler::KAFKA_APIS;
    use fjord_broker::kafka::records::{native_to_kafka, KafkaRecordsLimits};
    use fjord_broker::partition::producer_state::{
        ProducerBatch, ProducerStateConfig, ProducerStates,
    };
    use fjord_net::client::assignor::{Subscription, TopicPartition};
    use fjord_net::client::consumer_protocol::{encode_assignment, encode_subscription};
    use fjord_schema::batch::assign_offset_and_epoch;
    use fjord_schema::{Compression, LeaderEpoch, Offset, ProducerEpoch, ProducerId, Sequence};
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    use super::{batch, write};

    /// Kafka batches: the native seed batch of `codec`, through the
    /// broker's own writer (xerial snappy, lz4 frames).
    fn kafka_batch(codec: Compression, records: usize, base_offset: u64) -> Vec<u8> {
        let mut native = batch(codec, records, true);
        assign_offset_and_epoch(&mut native, Offset(base_offset), LeaderEpoch(0));
        let mut out = Vec::new();
        native_to_kafka(&native, &KafkaRecordsLimits::default(), &mut out)
            .expect("seed batches convert");
        out
    }

    fn body<M: Encodable>(message: &M, version: i16) -> Option<Vec<u8>> {
        let mut out = BytesMut::new();
        message.encode(&mut out, version).ok()?;
        Some(out.to_vec())
    }

    fn name(s: &'static str) -> StrBytes {
        StrBytes::from_static_str(s)
    }

    /// Requests with content, per api: (api, message encoder).
    fn rich(api: ApiKey, version: i16) -> Option<Vec<u8>> {
        match api {
            ApiKey::Produce => {
                let mut p = produce_request::PartitionProduceData::default();
                p.index = 0;
                p.records = Some(Bytes::from(
                    [
                        kafka_batch(Compression::None, 3, 0),
                        kafka_batch(Compression::Zstd, 2, 3),
                    ]
                    .concat(),
                ));
                let mut t = produce_request::TopicProduceData::default();
                t.name = TopicName(name("events"));
                t.partition_data = vec![p];
                let mut r = ProduceRequest::default();
                r.acks = -1;
                r.timeout_ms = 1000;
                r.topic_data = vec![t];
                body(&r, version)
            }
            ApiKey::Fetch => {
                let mut p = fetch_request::FetchPartition::default();
                p.fetch_offset = 5;
                p.partition_max_bytes = 1 << 20;
                let mut t = fetch_request::FetchTopic::default();
                t.topic = TopicName(name("events"));
                t.partitions = vec![p];
                let mut r = FetchRequest::default();
                r.max_wait_ms = 500;
                r.max_bytes = 1 << 20;
                r.topics = vec![t];
                body(&r, version)
            }
            ApiKey::Metadata => {
                let mut t = metadata_request::MetadataRequestTopic::default();
                t.name = Some(TopicName(name("events")));
                let mut r = MetadataRequest::default();
                r.topics = Some(vec![t]);
                body(&r, version)
            }
            ApiKey::JoinGroup => {
                let mut p = join_group_request::JoinGroupRequestProtocol::default();
                p.name = name("range");
                p.metadata = Bytes::from(encode_subscription(&subscription()));
                let mut r = JoinGroupRequest::default();
                r.group_id = GroupId(name("g"));
                r.session_timeout_ms = 10_000;
                r.rebalance_timeout_ms = 10_000;
                r.protocol_type = name("consumer");
                r.protocols = vec![p];
                body(&r, version)
            }
            ApiKey::SyncGroup => {
                let mut a = sync_group_request::SyncGroupRequestAssignment::default();
                a.member_id = name("m-1");
                a.assignment = Bytes::from(encode_assignment(&subscription().owned));
                let mut r = SyncGroupRequest::default();
                r.group_id = GroupId(name("g"));
                r.generation_id = 1;
                r.member_id = name("m-1");
                r.assignments = vec![a];
                body(&r, version)
            }
            ApiKey::OffsetCommit => {
                let mut p = offset_commit_request::OffsetCommitRequestPartition::default();
                p.partition_index = 2;
                p.committed_offset = 42;
                p.committed_metadata = Some(name("meta"));
                let mut t = offset_commit_request::OffsetCommitRequestTopic::default();
                t.name = TopicName(name("events"));
                t.partitions = vec![p];
                let mut r = OffsetCommitRequest::default();
                r.group_id = GroupId(name("g"));
                r.generation_id_or_member_epoch = -1;
                r.topics = vec![t];
                body(&r, version)
            }
            ApiKey::CreateTopics => {
                let mut c = create_topics_request::CreatableTopicConfig::default();
                c.name = name("retention.ms");
                c.value = Some(name("60000"));
                let mut t = create_topics_request::CreatableTopic::default();
                t.name = TopicName(name("events"));
                t.num_partitions = 3;
                t.replication_factor = 1;
                t.configs = vec![c];
                let mut r = CreateTopicsRequest::default();
                r.topics = vec![t];
                r.timeout_ms = 1000;
                body(&r, version)
            }
            _ => None,
        }
    }

    /// A default (empty) request of `api` at `version`.
    fn empty(api: ApiKey, version: i16) -> Option<Vec<u8>> {
        match api {
            ApiKey::Produce => body(&ProduceRequest::default(), version),
            ApiKey::Fetch => body(&FetchRequest::default(), version),
            ApiKey::ListOffsets => body(&ListOffsetsRequest::default(), version),
            ApiKey::Metadata => body(&MetadataRequest::default(), version),
            ApiKey::OffsetCommit => body(&OffsetCommitRequest::default(), version),
            ApiKey::OffsetFetch => body(&OffsetFetchRequest::default(), version),
            ApiKey::FindCoordinator => body(&FindCoordinatorRequest::default(), version),
            ApiKey::JoinGroup => body(&JoinGroupRequest::default(), version),
            ApiKey::Heartbeat => body(&HeartbeatRequest::default(), version),
            ApiKey::LeaveGroup => body(&LeaveGroupRequest::default(), version),
            ApiKey::SyncGroup => body(&SyncGroupRequest::default(), version),
            ApiKey::DescribeGroups => body(&DescribeGroupsRequest::default(), version),
            ApiKey::ListGroups => body(&ListGroupsRequest::default(), version),
            ApiKey::ApiVersions => body(&ApiVersionsRequest::default(), version),
            ApiKey::CreateTopics => body(&CreateTopicsRequest::default(), version),
            ApiKey::DeleteTopics => body(&DeleteTopicsRequest::default(), version),
            ApiKey::DeleteGroups => body(&DeleteGroupsRequest::default(), version),
            ApiKey::InitProducerId => body(&InitProducerIdRequest::default(), version),
            ApiKey::DescribeConfigs => body(&DescribeConfigsRequest::default(), version),
            ApiKey::AlterConfigs => body(&AlterConfigsRequest::default(), version),
            ApiKey::IncrementalAlterConfigs => {
                body(&IncrementalAlterConfigsRequest::default(), version)
            }
            ApiKey::CreatePartitions => body(&CreatePartitionsRequest::default(), version),
            ApiKey::DescribeCluster => body(&DescribeClusterRequest::default(), version),
            _ => None,
        }
    }

    fn subscription() -> Subscription {
        Subscription {
            topics: vec!["events".into(), "logs".into()],
            owned: vec![
                TopicPartition::new("events", 0),
                TopicPartition::new("events", 3),
                TopicPartition::new("logs", 1),
            ],
            generation: 4,
        }
    }

    /// A whole framed request: length, header, body.
    fn framed(api: ApiKey, version: i16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
        let mut header = RequestHeader::default();
        header.request_api_key = api as i16;
        header.request_api_version = version;
        header.correlation_id = correlation_id;
        header.client_id = Some(name("fuzz"));
        let mut frame = BytesMut::new();
        frame.put_u32(0);
        header
            .encode(&mut frame, api.request_header_version(version))
            .expect("headers encode");
        frame.put_slice(body);
        let len = (frame.len() - 4) as u32;
        frame[..4].copy_from_slice(&len.to_be_bytes());
        frame.to_vec()
    }

    pub(super) fn seeds() {
        // kafka_request: every served api and version, empty and (where
        // written above) with content; kafka_framer: streams of them.
        let mut stream = Vec::new();
        for (i, &(api, min, max)) in KAFKA_APIS.iter().enumerate() {
            for version in min..=max {
                let offset = (version - min) as u8;
                for (kind, bytes) in [("empty", empty(api, version)), ("rich", rich(api, version))]
                {
                    let Some(bytes) = bytes else { continue };
                    let input = [&[i as u8, offset][..], &bytes].concat();
                    write(
                        "kafka_request",
                        &format!("{api:?}-v{version}-{kind}"),
                        &input,
                    );
                    if version == max {
                        stream.extend(framed(api, version, i as i32, &bytes));
                    }
                }
            }
        }
        // 1 MiB limit; pieces of 7, 1 and 100 bytes, fed / read into the
        // framer; all at once.
        write(
            "kafka_framer",
            "pieces-feed",
            &[&[20u8, 0, 3 << 1, 6, 0, 99][..], &stream].concat(),
        );
        write(
            "kafka_framer",
            "pieces-space",
            &[&[20u8, 0, 3 << 1 | 1, 6, 0, 99][..], &stream].concat(),
        );
        write(
            "kafka_framer",
            "whole",
            &[&[20u8, 0, 0][..], &stream].concat(),
        );

        // kafka_to_native: mode bit 0 fixes CRCs, bits 2-4 = 7: 32 KiB.
        let mode = 1 | 7 << 2;
        for codec in Compression::ALL {
            let one = kafka_batch(codec, 5, 0);
            let two = [&one[..], &kafka_batch(codec, 1, 5)[..]].concat();
            write(
                "kafka_to_native",
                &format!("{}-1", codec.name()),
                &[&[mode][..], &one].concat(),
            );
            write(
                "kafka_to_native",
                &format!("{}-2", codec.name()),
                &[&[mode][..], &two].concat(),
            );
        }
        // Section mode: the uncompressed records section of a 5-record
        // batch, for each codec.
        let plain = kafka_batch(Compression::None, 5, 0);
        let last_delta = &plain[23..27];
        let count = &plain[57..61];
        for codec in 0..5u8 {
            let input = [&[2 | 7 << 2, codec][..], last_delta, count, &plain[61..]].concat();
            write("kafka_to_native", &format!("section-{codec}"), &input);
        }

        // consumer_protocol.
        write(
            "consumer_protocol",
            "subscription-v2",
            &[&[0u8][..], &encode_subscription(&subscription())].concat(),
        );
        // Java's v0 subscription of ["t"], null user data.
        write(
            "consumer_protocol",
            "subscription-v0",
            &[0, 0, 0, 0, 0, 0, 1, 0, 1, b't', 0xff, 0xff, 0xff, 0xff],
        );
        write(
            "consumer_protocol",
            "assignment",
            &[&[1u8][..], &encode_assignment(&subscription().owned)].concat(),
        );

        // A consumer owning 2,000 partitions of a topic with Kafka's
        // longest name.
        let long: Vec<_> = (0..2_000)
            .map(|p| TopicPartition::new("t".repeat(249), p))
            .collect();
        write(
            "consumer_protocol",
            "assignment-large",
            &[&[1u8][..], &encode_assignment(&long)].concat(),
        );
        let large = Subscription {
            topics: vec!["t".repeat(249)],
            owned: long,
            generation: 9,
        };
        write(
            "consumer_protocol",
            "subscription-large",
            &[&[0u8][..], &encode_subscription(&large)].concat(),
        );

        // offsets_record: one record, a tombstone, and a commit's batches.
        let tp = TopicPartition::new("events", 7);
        let offset = fjord_broker::group::coordinator::CommittedOffset {
            offset: 42,
            leader_epoch: 3,
            metadata: "meta".to_owned(),
        };
        let key = offsets_log::encode_key("group", &tp);
        let value = offsets_log::encode_value(&offset, 1_700_000_000_000);
        let record = |mode: u8, value: &[u8]| {
            [&[mode][..], &(key.len() as u16).to_le_bytes(), &key, value].concat()
        };
        write("offsets_record", "record", &record(0, &value));
        write("offsets_record", "tombstone", &record(2, &[]));
        let offsets: Vec<_> = (0..3)
            .map(|p| (TopicPartition::new("events", p), offset.clone()))
            .collect();
        let batches = offsets_log::commit_batch("group", &offsets, 1_700_000_000_000)
            .expect("a commit batch");
        write(
            "offsets_record",
            "batch",
            &[&[1u8 | 2][..], &batches].concat(),
        );

        // producer_snapshot: three producers, one with a full cache; mode
        // 4 << 1: at most 16 producers, CRC as written.
        let mut states = ProducerStates::new(ProducerStateConfig::default());
        let mut offset = 0;
        for (id, batches) in [(1, 1), (2, 5), (3, 2)] {
            for b in 0..batches {
                let batch = ProducerBatch {
                    producer_id: ProducerId(id),
                    epoch: ProducerEpoch(0),
                    first_seq: Sequence(b * 3),
                    last_seq: Sequence(b * 3 + 2),
                };
                states.apply(
                    &batch,
                    Offset(offset),
                    Offset(offset + 2),
                    1_700_000_000_000,
                );
                offset += 3;
            }
        }
        write(
            "producer_snapshot",
            "three",
            &[&[4u8 << 1][..], &states.encode()].concat(),
        );
    }
}
