use bytes::BytesMut;
use fjord_schema::api::{decode_request, decode_response, ApiKey, Request, Response};
use fjord_schema::frame::{encode_frame, FrameDecoder, FrameFlags};
use fjord_schema::{CorrelationId, Frame};

use super::*;
use crate::group::coordinator::{GroupState, JoinedMember};

fn frame(api_key: ApiKey, flags: u16, body: &[u8]) -> Frame {
    let mut out = BytesMut::new();
    encode_frame(
        &mut out,
        api_key as u16,
        0,
        FrameFlags(flags),
        CorrelationId(1),
        body,
        &[],
    );
    FrameDecoder::new(1 << 20)
        .decode(&mut out)
        .expect("valid frame")
        .expect("whole frame")
}

#[test]
fn join_group_request_converts_with_empty_ids_as_absent() {
    let mut fbb = FlatBufferBuilder::new();
    let group = fbb.create_string("g");
    let member = fbb.create_string("");
    let instance = fbb.create_string("");
    let protocol_type = fbb.create_string("consumer");
    let name = fbb.create_string("range");
    let metadata = fbb.create_vector(&[7u8]);
    let protocol = wire::JoinGroupProtocol::create(
        &mut fbb,
        &wire::JoinGroupProtocolArgs {
            name: Some(name),
            metadata: Some(metadata),
        },
    );
    let protocols = fbb.create_vector(&[protocol]);
    let root = wire::JoinGroupRequest::create(
        &mut fbb,
        &wire::JoinGroupRequestArgs {
            group_id: Some(group),
            session_timeout_ms: 10_000,
            member_id: Some(member),
            group_instance_id: Some(instance),
            protocol_type: Some(protocol_type),
            protocols: Some(protocols),
            ..Default::default()
        },
    );
    fbb.finish(root, None);
    let frame = frame(ApiKey::JoinGroup, 0, fbb.finished_data());
    let Ok(Request::JoinGroup(request)) = decode_request(&frame) else {
        panic!("not a join group request");
    };
    assert_eq!(
        join_request(&request),
        JoinRequest {
            group_id: "g".into(),
            member_id: String::new(),
            instance_id: None,
            client_id: String::new(),
            protocol_type: "consumer".into(),
            protocols: vec![Protocol {
                name: "range".into(),
                metadata: vec![7],
            }],
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: -1,
        }
    );
}

#[test]
fn join_response_encodes_and_decodes() {
    let response = JoinResponse {
        error: ErrorCode::None,
        generation_id: 3,
        protocol_type: Some("consumer".into()),
        protocol_name: Some("range".into()),
        leader: "a".into(),
        skip_assignment: true,
        member_id: "a".into(),
        members: vec![JoinedMember {
            member_id: "a".into(),
            instance_id: Some("i".into()),
            metadata: vec![1, 2],
        }],
    };
    let frame = frame(
        ApiKey::JoinGroup,
        FrameFlags::RESPONSE,
        &join_response(&response),
    );
    let Ok(Response::JoinGroup(r)) = decode_response(&frame) else {
        panic!("not a join group response");
    };
    assert_eq!(r.generation_id(), 3);
    assert_eq!(r.protocol_name(), Some("range"));
    assert_eq!(r.leader(), Some("a"));
    assert!(r.skip_assignment());
    let member = r.members().expect("members").get(0);
    assert_eq!(member.group_instance_id(), Some("i"));
    assert_eq!(member.metadata().expect("metadata").bytes(), &[1, 2]);
}

#[test]
fn offset_commit_round_trips_grouped_by_topic_in_request_order() {
    let mut fbb = FlatBufferBuilder::new();
    let mut topics = Vec::new();
    for (name, parts) in [("b", [(1u32, 10i64), (0, 5)]), ("a", [(0, 1), (2, 3)])] {
        let parts: Vec<_> = parts
            .iter()
            .map(|(p, o)| {
                wire::OffsetCommitRequestPartition::create(
                    &mut fbb,
                    &wire::OffsetCommitRequestPartitionArgs {
                        partition: *p,
                        committed_offset: *o,
                        committed_leader_epoch: 4,
                        committed_metadata: None,
                    },
                )
            })
            .collect();
        let parts = fbb.create_vector(&parts);
        let name = fbb.create_string(name);
        topics.push(wire::OffsetCommitRequestTopic::create(
            &mut fbb,
            &wire::OffsetCommitRequestTopicArgs {
                name: Some(name),
                partitions: Some(parts),
            },
        ));
    }
    let topics = fbb.create_vector(&topics);
    let group = fbb.create_string("g");
    let root = wire::OffsetCommitRequest::create(
        &mut fbb,
        &wire::OffsetCommitRequestArgs {
            group_id: Some(group),
            topics: Some(topics),
            ..Default::default()
        },
    );
    fbb.finish(root, None);
    let frame_in = frame(ApiKey::OffsetCommit, 0, fbb.finished_data());
    let Ok(Request::OffsetCommit(request)) = decode_request(&frame_in) else {
        panic!("not an offset commit");
    };
    let commit = commit_request(&request);
    assert_eq!(commit.generation_id, -1);
    assert_eq!(commit.member_id, "");
    let order: Vec<String> = commit
        .offsets
        .iter()
        .map(|(tp, _)| tp.to_string())
        .collect();
    assert_eq!(order, ["b-1", "b-0", "a-0", "a-2"]);
    assert_eq!(commit.offsets[0].1.leader_epoch, 4);

    let results: Vec<_> = commit
        .offsets
        .iter()
        .map(|(tp, _)| (tp.clone(), ErrorCode::None))
        .collect();
    let frame_out = frame(
        ApiKey::OffsetCommit,
        FrameFlags::RESPONSE,
        &offset_commit_response(&results),
    );
    let Ok(Response::OffsetCommit(response)) = decode_response(&frame_out) else {
        panic!("not an offset commit response");
    };
    let topics: Vec<(String, Vec<u32>)> = response
        .topics()
        .iter()
        .flatten()
        .map(|t| {
            let parts = t
                .partitions()
                .iter()
                .flatten()
                .map(|p| p.partition())
                .collect();
            (t.name().to_owned(), parts)
        })
        .collect();
    assert_eq!(
        topics,
        vec![("b".to_owned(), vec![1, 0]), ("a".to_owned(), vec![0, 2])]
    );
}

#[test]
fn offset_fetch_response_marks_missing_offsets() {
    let offsets = vec![
        (
            TopicPartition::new("t", 0),
            Some(CommittedOffset {
                offset: 9,
                leader_epoch: 2,
                metadata: "m".into(),
            }),
        ),
        (TopicPartition::new("t", 1), None),
    ];
    let frame = frame(
        ApiKey::OffsetFetch,
        FrameFlags::RESPONSE,
        &offset_fetch_response(&offsets),
    );
    let Ok(Response::OffsetFetch(response)) = decode_response(&frame) else {
        panic!("not an offset fetch response");
    };
    let topic = response.topics().expect("topics").get(0);
    let parts: Vec<(i64, i32, Option<&str>)> = topic
        .partitions()
        .iter()
        .flatten()
        .map(|p| {
            (
                p.committed_offset(),
                p.committed_leader_epoch(),
                p.metadata(),
            )
        })
        .collect();
    assert_eq!(parts, vec![(9, 2, Some("m")), (-1, -1, None)]);
}

#[test]
fn list_and_describe_responses_carry_kafka_state_names() {
    let listed = [ListedGroup {
        group_id: "g".into(),
        protocol_type: "consumer".into(),
        state: GroupState::CompletingRebalance,
    }];
    let frame_out = frame(
        ApiKey::ListGroups,
        FrameFlags::RESPONSE,
        &list_groups_response(&listed),
    );
    let Ok(Response::ListGroups(response)) = decode_response(&frame_out) else {
        panic!("not a list groups response");
    };
    let group = response.groups().expect("groups").get(0);
    assert_eq!(group.group_state(), Some("CompletingRebalance"));

    let described = DescribedGroup {
        group_id: "gone".into(),
        state: GroupState::Dead,
        protocol_type: String::new(),
        protocol_name: String::new(),
        members: Vec::new(),
    };
    let frame_out = frame(
        ApiKey::DescribeGroups,
        FrameFlags::RESPONSE,
        &describe_groups_response(&[(described, ErrorCode::NotCoordinator)]),
    );
    let Ok(Response::DescribeGroups(response)) = decode_response(&frame_out) else {
        panic!("not a describe groups response");
    };
    let group = response.groups().expect("groups").get(0);
    assert_eq!(group.group_id(), "gone");
    assert_eq!(group.error_code(), ErrorCode::NotCoordinator.code());
    assert_eq!(group.group_state(), Some("Dead"));
}
