//! OffsetForLeaderEpoch and ElectLeaders: the conversions on their own,
//! and whole requests through a [`KafkaHandler`] on a one-node engine
//! (`engine::testing`), encoded and decoded as a client does.

use bytes::{Buf, Bytes, BytesMut};
use fjord_schema::{ErrorCode, LeaderEpoch, PartitionId};
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, ElectLeadersRequest, ElectLeadersResponse,
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, RequestHeader, ResponseHeader,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::leaders::*;
use fjord_schema::batch::{BatchBuilder, BatchOptions, RecordInput};

use crate::batches::VerifiedBatches;
use crate::engine::types::{CreateSpec, EpochEndResult, EpochQuery, ProduceRequest};
use crate::kafka::handler::KafkaHandler;
use crate::ops::ElectionOutcome;

fn name(text: &str) -> TopicName {
    TopicName(StrBytes::from_string(text.to_owned()))
}

/// (partition, current leader epoch, asked leader epoch).
type EpochAsk = (i32, i32, i32);

fn epoch_request(topics: &[(&str, &[EpochAsk])]) -> OffsetForLeaderEpochRequest {
    let mut request = OffsetForLeaderEpochRequest::default();
    request.replica_id = kafka_protocol::messages::BrokerId(-1);
    for (topic, parts) in topics {
        let mut t = OffsetForLeaderTopic::default();
        t.topic = name(topic);
        for &(partition, current, epoch) in *parts {
            let mut p = OffsetForLeaderPartition::default();
            p.partition = partition;
            p.current_leader_epoch = current;
            p.leader_epoch = epoch;
            t.partitions.push(p);
        }
        request.topics.push(t);
    }
    request
}

fn elect_request(election_type: i8, topics: Option<&[(&str, &[i32])]>) -> ElectLeadersRequest {
    let mut request = ElectLeadersRequest::default();
    request.election_type = election_type;
    request.timeout_ms = 30_000;
    request.topic_partitions = topics.map(|topics| {
        topics
            .iter()
            .map(|(topic, parts)| {
                let mut t = TopicPartitions::default();
                t.topic = name(topic);
                t.partitions = parts.to_vec();
                t
            })
            .collect()
    });
    request
}

#[test]
fn epoch_queries_keep_request_order_and_map_the_wire_sentinels() {
    let request = epoch_request(&[("a", &[(1, -1, 3), (0, 4, -1)]), ("b", &[(-5, 2, 2)])]);
    let queries = epoch_queries(request);
    assert_eq!(
        queries,
        vec![
            (
                "a".to_owned(),
                vec![
                    (
                        PartitionId(1),
                        EpochQuery {
                            current_leader_epoch: None,
                            leader_epoch: LeaderEpoch(3),
                        }
                    ),
                    (
                        PartitionId(0),
                        EpochQuery {
                            current_leader_epoch: Some(LeaderEpoch(4)),
                            leader_epoch: LeaderEpoch(0),
                        }
                    ),
                ]
            ),
            (
                "b".to_owned(),
                vec![(
                    PartitionId(u32::MAX),
                    EpochQuery {
                        current_leader_epoch: Some(LeaderEpoch(2)),
                        leader_epoch: LeaderEpoch(2),
                    }
                )]
            ),
        ]
    );
}

#[test]
fn epoch_response_encodes_every_served_version() {
    let results = vec![(
        "a".to_owned(),
        vec![
            (
                PartitionId(0),
                EpochEndResult {
                    error: ErrorCode::None,
                    leader_epoch: 3,
                    end_offset: 120,
                },
            ),
            (
                PartitionId(u32::MAX),
                EpochEndResult::error(ErrorCode::UnknownTopicOrPartition),
            ),
        ],
    )];
    for version in 2..=4 {
        let response = epoch_response(results.clone());
        let mut buf = BytesMut::new();
        response.encode(&mut buf, version).expect("encodes");
        let decoded =
            OffsetForLeaderEpochResponse::decode(&mut buf.freeze(), version).expect("decodes");
        let rows: Vec<(String, i32, i16, i32, i64)> = decoded
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| {
                    (
                        t.topic.0.to_string(),
                        p.partition,
                        p.error_code,
                        p.leader_epoch,
                        p.end_offset,
                    )
                })
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("a".to_owned(), 0, 0, 3, 120),
                (
                    "a".to_owned(),
                    -1,
                    ErrorCode::UnknownTopicOrPartition.code(),
                    -1,
                    -1
                ),
            ],
            "v{version}"
        );
    }
}

#[test]
fn elect_asks_each_partition_once_and_null_means_every_partition() {
    let request = elect_request(
        ELECTION_PREFERRED,
        Some(&[("a", &[0, 1, 0]), ("b", &[2]), ("a", &[1, 3])]),
    );
    assert_eq!(
        asked_partitions(&request),
        Some(vec![
            ("a".to_owned(), vec![0, 1, 3]),
            ("b".to_owned(), vec![2])
        ])
    );
    assert_eq!(
        asked_partitions(&elect_request(ELECTION_UNCLEAN, None)),
        None
    );
}

#[test]
fn elect_response_groups_outcomes_by_topic() {
    let outcome = |topic: &str, partition, error| ElectionOutcome {
        topic: topic.to_owned(),
        partition,
        error,
        message: None,
    };
    let response = elect_response(vec![
        outcome("a", 0, ErrorCode::None),
        outcome("b", 1, ErrorCode::ElectionNotNeeded),
        outcome("a", 2, ErrorCode::PreferredLeaderNotAvailable),
    ]);
    let topics: Vec<(String, Vec<(i32, i16)>)> = response
        .replica_election_results
        .iter()
        .map(|t| {
            (
                t.topic.0.to_string(),
                t.partition_result
                    .iter()
                    .map(|p| (p.partition_id, p.error_code))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        topics,
        [
            (
                "a".to_owned(),
                vec![(0, 0), (2, ErrorCode::PreferredLeaderNotAvailable.code())]
            ),
            (
                "b".to_owned(),
                vec![(1, ErrorCode::ElectionNotNeeded.code())]
            ),
        ]
    );
}

/// `request` framed as a client sends it (no length prefix: the serve
/// loop strips it).
fn frame<R: Encodable>(api: ApiKey, version: i16, request: &R) -> Bytes {
    let mut header = RequestHeader::default();
    header.request_api_key = api as i16;
    header.request_api_version = version;
    header.correlation_id = 9;
    header.client_id = Some(StrBytes::from_static_str("leaders-test"));
    let mut out = BytesMut::new();
    header
        .encode(&mut out, api.request_header_version(version))
        .expect("header encodes");
    request.encode(&mut out, version).expect("body encodes");
    out.freeze()
}

/// The handler's answer to `request`, decoded as a client does.
async fn ask<R: Encodable, A: Decodable>(
    handler: &KafkaHandler,
    api: ApiKey,
    version: i16,
    request: &R,
) -> A {
    let response = handler
        .handle(frame(api, version, request))
        .await
        .expect("handled")
        .expect("answered");
    let mut bytes = Bytes::copy_from_slice(response.bytes());
    let len = bytes.get_u32() as usize;
    assert_eq!(len, bytes.len());
    let header = ResponseHeader::decode(&mut bytes, api.response_header_version(version))
        .expect("response header");
    assert_eq!(header.correlation_id, 9);
    A::decode(&mut bytes, version).expect("body decodes")
}

/// (topic, partition, error) of an ElectLeaders answer.
fn elections(response: &ElectLeadersResponse) -> Vec<(String, i32, i16)> {
    response
        .replica_election_results
        .iter()
        .flat_map(|t| {
            t.partition_result
                .iter()
                .map(|p| (t.topic.0.to_string(), p.partition_id, p.error_code))
        })
        .collect()
}

/// On one node with one replica per partition, every partition already
/// has its only possible leader: ElectLeaders of named partitions says
/// ELECTION_NOT_NEEDED (preferred and unclean), unknown ones
/// UNKNOWN_TOPIC_OR_PARTITION, an unknown election type INVALID_REQUEST;
/// of every partition, nothing (no election was needed). OffsetForLeaderEpoch
/// answers where an epoch ends, fences a current epoch newer than the
/// partition's and refuses unknown partitions. Both are listed by ApiVersions.
#[test]
fn elect_leaders_and_offset_for_leader_epoch_through_the_handler() {
    crate::engine::testing::with_engine(|engine| async move {
        let created = engine
            .create_topics(
                vec![CreateSpec {
                    name: "t".into(),
                    num_partitions: 2,
                    replication_factor: 1,
                    configs: Vec::new(),
                    assignments: Vec::new(),
                }],
                false,
            )
            .await;
        assert!(created[0].error.is_none(), "{:?}", created[0].error);
        // Three records in partition 1 at leader epoch 0.
        let mut builder = BatchBuilder::new(BatchOptions::default());
        for i in 0..3u8 {
            builder.push(RecordInput {
                key: None,
                value: Some(&[i; 8]),
                headers: &[],
                timestamp: 1,
                offset_delta: None,
            });
        }
        let records = builder.finish().expect("builds");
        let produced = engine
            .produce(ProduceRequest {
                timeout: std::time::Duration::from_secs(30),
                acks: 1,
                topics: vec![(
                    "t".to_owned(),
                    vec![(PartitionId(1), VerifiedBatches::verify(&records))],
                )],
            })
            .await;
        assert_eq!(produced[0].1[0].1.error, ErrorCode::None, "{produced:?}");
        let handler = KafkaHandler::new(engine.clone(), 1 << 20);

        let versions: ApiVersionsResponse = ask(
            &handler,
            ApiKey::ApiVersions,
            3,
            &ApiVersionsRequest::default(),
        )
        .await;
        let listed = |api: ApiKey| {
            versions
                .api_keys
                .iter()
                .find(|k| k.api_key == api as i16)
                .map(|k| (k.min_version, k.max_version))
        };
        assert_eq!(listed(ApiKey::OffsetForLeaderEpoch), Some((2, 4)));
        assert_eq!(listed(ApiKey::ElectLeaders), Some((0, 2)));

        let not_needed = ErrorCode::ElectionNotNeeded.code();
        let unknown = ErrorCode::UnknownTopicOrPartition.code();
        for (version, election_type) in [
            (0, ELECTION_PREFERRED),
            (1, ELECTION_UNCLEAN),
            (2, ELECTION_PREFERRED),
            (2, ELECTION_UNCLEAN),
        ] {
            let request = elect_request(election_type, Some(&[("t", &[1, 0, 7]), ("nope", &[0])]));
            let response: ElectLeadersResponse =
                ask(&handler, ApiKey::ElectLeaders, version, &request).await;
            assert_eq!(response.error_code, 0, "v{version}");
            let mut got = elections(&response);
            got.sort();
            assert_eq!(
                got,
                [
                    ("nope".to_owned(), 0, unknown),
                    ("t".to_owned(), 0, not_needed),
                    ("t".to_owned(), 1, not_needed),
                    ("t".to_owned(), 7, unknown),
                ],
                "v{version}"
            );
        }
        let all: ElectLeadersResponse = ask(
            &handler,
            ApiKey::ElectLeaders,
            2,
            &elect_request(ELECTION_PREFERRED, None),
        )
        .await;
        assert_eq!((all.error_code, elections(&all)), (0, Vec::new()));
        let bad: ElectLeadersResponse = ask(
            &handler,
            ApiKey::ElectLeaders,
            1,
            &elect_request(5, Some(&[("t", &[0])])),
        )
        .await;
        let invalid = ErrorCode::InvalidRequest.code();
        assert_eq!(
            (bad.error_code, elections(&bad)),
            (invalid, vec![("t".to_owned(), 0, invalid)])
        );

        for version in 2..=4 {
            let request = epoch_request(&[
                ("t", &[(0, 9, 0), (1, 0, 0), (1, -1, 3), (5, -1, 0)]),
                ("nope", &[(0, -1, 0)]),
            ]);
            let response: OffsetForLeaderEpochResponse =
                ask(&handler, ApiKey::OffsetForLeaderEpoch, version, &request).await;
            let rows: Vec<(String, i32, i16, i32, i64)> = response
                .topics
                .iter()
                .flat_map(|t| {
                    t.partitions.iter().map(|p| {
                        (
                            t.topic.0.to_string(),
                            p.partition,
                            p.error_code,
                            p.leader_epoch,
                            p.end_offset,
                        )
                    })
                })
                .collect();
            assert_eq!(
                rows,
                [
                    (
                        "t".to_owned(),
                        0,
                        ErrorCode::UnknownLeaderEpoch.code(),
                        -1,
                        -1
                    ),
                    // Epoch 0 ends at the log end; an epoch later than
                    // any known is undefined (Kafka's endOffsetFor).
                    ("t".to_owned(), 1, 0, 0, 3),
                    ("t".to_owned(), 1, 0, -1, -1),
                    ("t".to_owned(), 5, unknown, -1, -1),
                    ("nope".to_owned(), 0, unknown, -1, -1),
                ],
                "v{version}"
            );
        }
    });
}
