use super::*;
use bytes::BytesMut;
use fjord_net::client::{decode_typed, ClientError};
use fjord_schema::api::Response;
use fjord_schema::frame::{FrameDecoder, FrameHeader};
use fjord_schema::CorrelationId;

/// Runs `frames` in order through one single-shard engine (with a
/// topic registry in a temporary data dir) and decodes each response.
fn answers(frames: Vec<Frame>) -> Vec<Option<Frame>> {
    crate::engine::testing::with_engine(|engine| async move {
        let mut responses = Vec::new();
        for frame in frames {
            let mut out = Vec::new();
            respond(&engine, frame, &mut out).await;
            responses.push(decode_one(out));
        }
        responses
    })
}

fn decode_one(out: Vec<Bytes>) -> Option<Frame> {
    if out.is_empty() {
        return None;
    }
    let mut bytes = BytesMut::new();
    for chunk in out {
        bytes.extend_from_slice(&chunk);
    }
    let response = FrameDecoder::new(1 << 20)
        .decode(&mut bytes)
        .expect("well-formed frame")
        .expect("whole frame");
    assert!(bytes.is_empty(), "exactly one frame");
    assert_eq!(response.header.correlation_id(), CorrelationId(41));
    assert!(response.header.flags().is_response());
    Some(response)
}

fn answer(frame: &Frame) -> Option<Frame> {
    answers(vec![frame.clone()]).pop().flatten()
}

fn request(api_key: u16, version: u16, flags: u16, body: &[u8]) -> Frame {
    let header = FrameHeader::new(
        api_key,
        version,
        FrameFlags(flags),
        CorrelationId(41),
        body.len() as u32,
        0,
    );
    Frame {
        header,
        body: Bytes::copy_from_slice(body),
        payload: Bytes::new(),
    }
}

fn metadata_body(topics: Option<&[&str]>) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let topics = topics.map(|topics| {
        let names: Vec<_> = topics.iter().map(|t| fbb.create_string(t)).collect();
        fbb.create_vector(&names)
    });
    let root = wire::MetadataRequest::create(
        &mut fbb,
        &wire::MetadataRequestArgs {
            topics,
            allow_auto_topic_creation: false,
        },
    );
    fbb.finish(root, None);
    fbb.finished_data().to_vec()
}

fn empty_table() -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let start = fbb.start_table();
    let root = fbb.end_table(start);
    fbb.finish(root, None);
    fbb.finished_data().to_vec()
}

fn broker_error(frame: &Frame) -> (ErrorCode, String) {
    match decode_typed(frame, ApiKey::ApiVersions) {
        Err(ClientError::Broker { code, message }) => (code, message),
        other => panic!("expected an error response, got {other:?}"),
    }
}

#[test]
fn api_versions_lists_exactly_the_served_apis() {
    let response = answer(&request(0, 0, 0, &empty_table())).expect("answered");
    let Ok(Response::ApiVersions(versions)) = decode_typed(&response, ApiKey::ApiVersions) else {
        panic!("not an ApiVersions response");
    };
    assert_eq!(versions.error_code(), 0);
    let listed: Vec<(u16, u16, u16)> = versions
        .api_versions()
        .iter()
        .flatten()
        .map(|r| (r.api_key(), r.min_version(), r.max_version()))
        .collect();
    let keys: Vec<u16> = listed.iter().map(|(k, _, _)| *k).collect();
    assert_eq!(keys, SERVED_APIS.map(|k| k as u16).to_vec());
    for (key, min, max) in &listed {
        assert!(SUPPORTED_VERSIONS
            .iter()
            .any(|(k, lo, hi)| *k as u16 == *key && lo == min && hi == max));
    }
}

#[test]
fn metadata_lists_this_broker_and_no_topics() {
    let response = answer(&request(1, 0, 0, &metadata_body(None))).expect("answered");
    let Ok(Response::Metadata(metadata)) = decode_typed(&response, ApiKey::Metadata) else {
        panic!("not a Metadata response");
    };
    let brokers: Vec<_> = metadata.brokers().iter().flatten().collect();
    assert_eq!(brokers.len(), 1);
    assert_eq!(brokers[0].node_id(), 7);
    assert_eq!(brokers[0].host(), "127.0.0.1");
    assert_eq!(brokers[0].port(), 9192);
    assert_eq!(
        brokers[0]
            .shard_ports()
            .iter()
            .flatten()
            .collect::<Vec<_>>(),
        vec![9193, 9194]
    );
    assert_eq!(metadata.controller_id(), 7);
    assert_eq!(metadata.topics().iter().flatten().count(), 0);
}

#[test]
fn metadata_for_named_topics_says_unknown() {
    let body = metadata_body(Some(&["orders", "payments"]));
    let response = answer(&request(1, 0, 0, &body)).expect("answered");
    let Ok(Response::Metadata(metadata)) = decode_typed(&response, ApiKey::Metadata) else {
        panic!("not a Metadata response");
    };
    let topics: Vec<(String, i16)> = metadata
        .topics()
        .iter()
        .flatten()
        .map(|t| (t.name().to_owned(), t.error_code()))
        .collect();
    let unknown = ErrorCode::UnknownTopicOrPartition.code();
    assert_eq!(
        topics,
        vec![("orders".into(), unknown), ("payments".into(), unknown)]
    );
}

#[test]
fn unserved_unknown_and_wrong_version_are_unsupported() {
    for (key, version) in [(999, 0), (0, 9), (1, 3), (4, 1)] {
        let response = answer(&request(key, version, 0, &empty_table())).expect("answered");
        assert!(response.header.flags().is_error());
        assert_eq!(response.header.api_key.get(), key);
        assert_eq!(response.header.api_version.get(), version);
        let (code, message) = broker_error(&response);
        assert_eq!(
            code,
            ErrorCode::UnsupportedVersion,
            "{key} v{version}: {message}"
        );
    }
}

#[test]
fn malformed_body_and_wrong_direction_are_invalid_request() {
    for frame in [
        request(1, 0, 0, b"\xff\xff\xff\x7fgarbage"),
        request(1, 0, 0, b""),
        request(0, 0, FrameFlags::RESPONSE, &empty_table()),
    ] {
        let response = answer(&frame).expect("answered");
        let (code, _) = broker_error(&response);
        assert_eq!(code, ErrorCode::InvalidRequest);
    }
}

#[test]
fn no_response_flag_is_honoured() {
    assert!(answer(&request(0, 0, FrameFlags::NO_RESPONSE, &empty_table())).is_none());
}

/// Topic name, partitions, configs.
type NewTopic<'a> = (&'a str, i32, &'a [(&'a str, &'a str)]);
/// Topic name, error code, (partition, leader shard).
type TopicRow = (String, i16, Vec<(u32, u16)>);

fn create_body(topics: &[NewTopic<'_>], validate_only: bool) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let topics: Vec<_> = topics
        .iter()
        .map(|(name, partitions, configs)| {
            let configs: Vec<_> = configs
                .iter()
                .map(|(k, v)| {
                    let key = fbb.create_string(k);
                    let value = fbb.create_string(v);
                    wire::ConfigEntry::create(
                        &mut fbb,
                        &wire::ConfigEntryArgs {
                            key: Some(key),
                            value: Some(value),
                        },
                    )
                })
                .collect();
            let configs = fbb.create_vector(&configs);
            let name = fbb.create_string(name);
            wire::CreatableTopic::create(
                &mut fbb,
                &wire::CreatableTopicArgs {
                    name: Some(name),
                    num_partitions: *partitions,
                    replication_factor: -1,
                    configs: Some(configs),
                },
            )
        })
        .collect();
    let topics = fbb.create_vector(&topics);
    let root = wire::CreateTopicsRequest::create(
        &mut fbb,
        &wire::CreateTopicsRequestArgs {
            topics: Some(topics),
            timeout_ms: 1000,
            validate_only,
        },
    );
    fbb.finish(root, None);
    fbb.finished_data().to_vec()
}

fn delete_body(names: &[&str]) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let names: Vec<_> = names.iter().map(|n| fbb.create_string(n)).collect();
    let names = fbb.create_vector(&names);
    let root = wire::DeleteTopicsRequest::create(
        &mut fbb,
        &wire::DeleteTopicsRequestArgs {
            topics: Some(names),
            timeout_ms: 1000,
        },
    );
    fbb.finish(root, None);
    fbb.finished_data().to_vec()
}

fn created(frame: &Frame) -> Vec<(String, i16, i32)> {
    let Ok(Response::CreateTopics(response)) = decode_typed(frame, ApiKey::CreateTopics) else {
        panic!("not a CreateTopics response");
    };
    response
        .topics()
        .iter()
        .flatten()
        .map(|t| (t.name().to_owned(), t.error_code(), t.num_partitions()))
        .collect()
}

fn metadata_topics(frame: &Frame) -> Vec<TopicRow> {
    let Ok(Response::Metadata(metadata)) = decode_typed(frame, ApiKey::Metadata) else {
        panic!("not a Metadata response");
    };
    metadata
        .topics()
        .iter()
        .flatten()
        .map(|t| {
            let partitions = t
                .partitions()
                .iter()
                .flatten()
                .map(|p| (p.partition(), p.leader_shard()))
                .collect();
            (t.name().to_owned(), t.error_code(), partitions)
        })
        .collect()
}

#[test]
fn create_describe_and_delete_topics() {
    let ok = ErrorCode::None.code();
    let responses = answers(vec![
        request(2, 0, 0, &create_body(&[("dry", 3, &[])], true)),
        request(
            2,
            0,
            0,
            &create_body(
                &[
                    ("orders", -1, &[("retention.ms", "1000")]),
                    ("bad name", 1, &[]),
                    ("cfg", 1, &[("no.such.key", "1")]),
                    ("zero", 0, &[]),
                ],
                false,
            ),
        ),
        request(2, 0, 0, &create_body(&[("orders", 1, &[])], false)),
        request(1, 0, 0, &metadata_body(None)),
        request(3, 0, 0, &delete_body(&["orders", "ghost"])),
        request(1, 0, 0, &metadata_body(Some(&["orders", "dry"]))),
    ]);
    let responses: Vec<Frame> = responses
        .into_iter()
        .map(|r| r.expect("answered"))
        .collect();
    assert_eq!(created(&responses[0]), vec![("dry".into(), ok, 3)]);
    assert_eq!(
        created(&responses[1]),
        vec![
            ("orders".into(), ok, 2),
            (
                "bad name".into(),
                ErrorCode::InvalidTopicException.code(),
                -1
            ),
            ("cfg".into(), ErrorCode::InvalidConfig.code(), -1),
            ("zero".into(), ErrorCode::InvalidPartitions.code(), -1),
        ]
    );
    assert_eq!(
        created(&responses[2]),
        vec![("orders".into(), ErrorCode::TopicAlreadyExists.code(), -1)]
    );
    // validate_only created nothing; "orders" got the default 2 partitions.
    assert_eq!(
        metadata_topics(&responses[3]),
        vec![("orders".into(), ok, vec![(0, 0), (1, 0)])]
    );
    let Ok(Response::DeleteTopics(deleted)) = decode_typed(&responses[4], ApiKey::DeleteTopics)
    else {
        panic!("not a DeleteTopics response");
    };
    let deleted: Vec<(String, i16)> = deleted
        .topics()
        .iter()
        .flatten()
        .map(|t| (t.name().to_owned(), t.error_code()))
        .collect();
    let unknown = ErrorCode::UnknownTopicOrPartition.code();
    assert_eq!(
        deleted,
        vec![("orders".into(), ok), ("ghost".into(), unknown)]
    );
    assert_eq!(
        metadata_topics(&responses[5]),
        vec![
            ("orders".into(), unknown, vec![]),
            ("dry".into(), unknown, vec![])
        ]
    );
}

/// Metadata on a hand-built cluster (three brokers, node 3 fenced, seen
/// from node 1): every broker with both listeners and its fencing, the
/// controller, the metadata log position, per partition the image's
/// leader, epoch, replicas and ISR; only this node's shard ports and
/// shards.
#[test]
fn metadata_shows_the_whole_cluster() {
    use crate::engine::cluster::tests::three_nodes;
    use crate::engine::cluster::ClusterView;

    let (catalog, this) = three_nodes();
    let view = ClusterView::of(&catalog);
    let broker = BrokerView {
        node_id: this,
        host: "n1".into(),
        port: 9001,
        kafka_host: "n1".into(),
        kafka_port: 9101,
        shard_ports: vec![9301, 9302],
        kafka_configs: Vec::new(),
    };
    let reply = metadata_reply(
        &broker,
        &view,
        &catalog,
        Some(vec!["t".to_owned()]),
        |_| ErrorCode::UnknownTopicOrPartition,
        &HashMap::new(),
    );
    assert!(!reply.error);
    let metadata = flatbuffers::root::<wire::MetadataResponse>(&reply.body).expect("decodes");
    assert_eq!(metadata.controller_id(), 2);
    assert_eq!(
        (
            metadata.metadata_applied_index(),
            metadata.metadata_committed_index()
        ),
        (41, 42)
    );
    let brokers: Vec<_> = metadata
        .brokers()
        .iter()
        .flatten()
        .map(|b| {
            (
                b.node_id(),
                b.host().to_owned(),
                b.port(),
                b.kafka_host().map(str::to_owned),
                b.kafka_port(),
                b.fenced(),
                b.shard_ports().iter().flatten().collect::<Vec<_>>(),
            )
        })
        .collect();
    let some = |h: &str| Some(h.to_owned());
    assert_eq!(
        brokers,
        vec![
            (
                1,
                "n1".into(),
                9001,
                some("n1"),
                9101,
                false,
                vec![9301, 9302]
            ),
            (2, "n2".into(), 9002, some("n2"), 9102, false, vec![]),
            (3, "n3".into(), 9003, some("n3"), 9103, true, vec![]),
        ]
    );
    let topic = metadata.topics().expect("topics").get(0);
    let partitions: Vec<_> = topic
        .partitions()
        .iter()
        .flatten()
        .map(|p| {
            (
                p.error_code(),
                p.leader(),
                p.leader_epoch(),
                p.replicas().iter().flatten().collect::<Vec<_>>(),
                p.isr().iter().flatten().collect::<Vec<_>>(),
            )
        })
        .collect();
    let leaderless = ErrorCode::LeaderNotAvailable.code();
    assert_eq!(
        partitions,
        vec![
            (0, 1, 4, vec![1], vec![1]),
            (0, 2, 5, vec![2], vec![2]),
            (leaderless, -1, 6, vec![3], vec![3]),
            (0, 1, 7, vec![1, 3], vec![1, 3]),
        ]
    );
}

/// A Metadata request naming a topic reports each local replica's log
/// end and high watermark (an empty log: 0 and 0) and no followers (one
/// replica); one for every topic stays local to the catalog (-1).
#[test]
fn metadata_for_named_topics_reports_the_replicas_offsets() {
    let responses = answers(vec![
        request(2, 0, 0, &create_body(&[("t", 2, &[])], false)),
        request(1, 0, 0, &metadata_body(Some(&["t"]))),
        request(1, 0, 0, &metadata_body(None)),
    ]);
    let offsets = |frame: &Frame| -> Vec<(u32, i64, i64, usize)> {
        let Ok(Response::Metadata(metadata)) = decode_typed(frame, ApiKey::Metadata) else {
            panic!("not a Metadata response");
        };
        metadata
            .topics()
            .iter()
            .flatten()
            .flat_map(|t| {
                t.partitions().into_iter().flatten().map(|p| {
                    (
                        p.partition(),
                        p.log_end(),
                        p.high_watermark(),
                        p.followers().map_or(0, |f| f.len()),
                    )
                })
            })
            .collect()
    };
    let named = responses[1].as_ref().expect("answered");
    assert_eq!(offsets(named), [(0, 0, 0, 0), (1, 0, 0, 0)]);
    let all = responses[2].as_ref().expect("answered");
    assert_eq!(offsets(all), [(0, -1, -1, 0), (1, -1, -1, 0)]);
}

/// As in Kafka, `min.insync.replicas` above the replication factor is
/// accepted at creation: acks=all then fails with NOT_ENOUGH_REPLICAS
/// while the ISR is smaller (`partition::state`), other acks still work.
#[test]
fn min_insync_replicas_above_the_replication_factor_is_accepted() {
    let responses = answers(vec![request(
        2,
        0,
        0,
        &create_body(&[("strict", 1, &[("min.insync.replicas", "3")])], false),
    )]);
    let created_topics = created(responses[0].as_ref().expect("answered"));
    assert_eq!(
        created_topics,
        vec![("strict".into(), ErrorCode::None.code(), 1)]
    );
}
