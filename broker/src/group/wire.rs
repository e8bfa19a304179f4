//! Between the native wire messages (`fjord_schema::wire`, already verified
//! by `decode_request`) and the coordinator's owned request and response
//! types. The Kafka listener will have its own twin of this module; the
//! coordinator types are the meeting point.

use fjord_schema::wire;
use flatbuffers::{FlatBufferBuilder, WIPOffset};

use super::coordinator::{
    CommitRequest, CommittedOffset, DescribedGroup, HeartbeatRequest, JoinRequest, JoinResponse,
    LeaveResponse, LeavingMember, ListedGroup, Protocol, SyncRequest, SyncResponse,
};
use super::TopicPartition;
use fjord_schema::ErrorCode;

fn owned(s: Option<&str>) -> String {
    s.unwrap_or_default().to_owned()
}

/// An absent or empty instance id means a dynamic member.
fn instance(s: Option<&str>) -> Option<String> {
    s.filter(|s| !s.is_empty()).map(str::to_owned)
}

fn bytes(v: Option<flatbuffers::Vector<'_, u8>>) -> Vec<u8> {
    v.map(|v| v.bytes().to_vec()).unwrap_or_default()
}

pub fn join_request(r: &wire::JoinGroupRequest<'_>) -> JoinRequest {
    JoinRequest {
        group_id: r.group_id().to_owned(),
        member_id: owned(r.member_id()),
        instance_id: instance(r.group_instance_id()),
        client_id: owned(r.client_id()),
        protocol_type: r.protocol_type().to_owned(),
        protocols: r
            .protocols()
            .iter()
            .flatten()
            .map(|p| Protocol {
                name: p.name().to_owned(),
                metadata: bytes(p.metadata()),
            })
            .collect(),
        session_timeout_ms: r.session_timeout_ms(),
        rebalance_timeout_ms: r.rebalance_timeout_ms(),
    }
}

pub fn sync_request(r: &wire::SyncGroupRequest<'_>) -> SyncRequest {
    SyncRequest {
        group_id: r.group_id().to_owned(),
        generation_id: r.generation_id(),
        member_id: r.member_id().to_owned(),
        instance_id: instance(r.group_instance_id()),
        protocol_type: r.protocol_type().map(str::to_owned),
        protocol_name: r.protocol_name().map(str::to_owned),
        assignments: r
            .assignments()
            .iter()
            .flatten()
            .map(|a| (a.member_id().to_owned(), bytes(a.assignment())))
            .collect(),
    }
}

pub fn heartbeat_request(r: &wire::HeartbeatRequest<'_>) -> HeartbeatRequest {
    HeartbeatRequest {
        group_id: r.group_id().to_owned(),
        generation_id: r.generation_id(),
        member_id: r.member_id().to_owned(),
        instance_id: instance(r.group_instance_id()),
    }
}

pub fn leave_request(r: &wire::LeaveGroupRequest<'_>) -> (String, Vec<LeavingMember>) {
    let members = r
        .members()
        .iter()
        .flatten()
        .map(|m| LeavingMember {
            member_id: owned(m.member_id()),
            instance_id: instance(m.group_instance_id()),
        })
        .collect();
    (r.group_id().to_owned(), members)
}

pub fn commit_request(r: &wire::OffsetCommitRequest<'_>) -> CommitRequest {
    let offsets = r
        .topics()
        .iter()
        .flatten()
        .flat_map(|t| {
            t.partitions().into_iter().flatten().map(move |p| {
                (
                    TopicPartition::new(t.name(), p.partition()),
                    CommittedOffset {
                        offset: p.committed_offset(),
                        leader_epoch: p.committed_leader_epoch(),
                        metadata: owned(p.committed_metadata()),
                    },
                )
            })
        })
        .collect();
    CommitRequest {
        group_id: r.group_id().to_owned(),
        generation_id: r.generation_id(),
        member_id: owned(r.member_id()),
        instance_id: instance(r.group_instance_id()),
        offsets,
    }
}

/// The group and the partitions asked for (`None`: all committed ones).
pub fn offset_fetch_request(
    r: &wire::OffsetFetchRequest<'_>,
) -> (String, Option<Vec<TopicPartition>>) {
    let partitions = r.topics().map(|topics| {
        topics
            .iter()
            .flat_map(|t| {
                t.partitions()
                    .into_iter()
                    .flatten()
                    .map(move |p| TopicPartition::new(t.name(), p))
            })
            .collect()
    });
    (r.group_id().to_owned(), partitions)
}

fn finish<T>(mut fbb: FlatBufferBuilder<'_>, root: WIPOffset<T>) -> Vec<u8> {
    fbb.finish(root, None);
    fbb.finished_data().to_vec()
}

pub fn join_response(r: &JoinResponse) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let members: Vec<_> = r
        .members
        .iter()
        .map(|m| {
            let member_id = fbb.create_string(&m.member_id);
            let instance = m.instance_id.as_deref().map(|i| fbb.create_string(i));
            let metadata = fbb.create_vector(&m.metadata);
            wire::JoinGroupResponseMember::create(
                &mut fbb,
                &wire::JoinGroupResponseMemberArgs {
                    member_id: Some(member_id),
                    group_instance_id: instance,
                    metadata: Some(metadata),
                },
            )
        })
        .collect();
    let members = fbb.create_vector(&members);
    let protocol_type = r.protocol_type.as_deref().map(|s| fbb.create_string(s));
    let protocol_name = r.protocol_name.as_deref().map(|s| fbb.create_string(s));
    let leader = fbb.create_string(&r.leader);
    let member_id = fbb.create_string(&r.member_id);
    let root = wire::JoinGroupResponse::create(
        &mut fbb,
        &wire::JoinGroupResponseArgs {
            throttle_time_ms: 0,
            error_code: r.error.code(),
            generation_id: r.generation_id,
            protocol_type,
            protocol_name,
            leader: Some(leader),
            skip_assignment: r.skip_assignment,
            member_id: Some(member_id),
            members: Some(members),
        },
    );
    finish(fbb, root)
}

pub fn sync_response(r: &SyncResponse) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let protocol_type = r.protocol_type.as_deref().map(|s| fbb.create_string(s));
    let protocol_name = r.protocol_name.as_deref().map(|s| fbb.create_string(s));
    let assignment = fbb.create_vector(&r.assignment);
    let root = wire::SyncGroupResponse::create(
        &mut fbb,
        &wire::SyncGroupResponseArgs {
            throttle_time_ms: 0,
            error_code: r.error.code(),
            protocol_type,
            protocol_name,
            assignment: Some(assignment),
        },
    );
    finish(fbb, root)
}

pub fn heartbeat_response(error: ErrorCode) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let root = wire::HeartbeatResponse::create(
        &mut fbb,
        &wire::HeartbeatResponseArgs {
            throttle_time_ms: 0,
            error_code: error.code(),
        },
    );
    finish(fbb, root)
}

pub fn leave_response(r: &LeaveResponse) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let members: Vec<_> = r
        .members
        .iter()
        .map(|(m, error)| {
            let member_id = fbb.create_string(&m.member_id);
            let instance = m.instance_id.as_deref().map(|i| fbb.create_string(i));
            wire::LeaveGroupMemberResponse::create(
                &mut fbb,
                &wire::LeaveGroupMemberResponseArgs {
                    member_id: Some(member_id),
                    group_instance_id: instance,
                    error_code: error.code(),
                },
            )
        })
        .collect();
    let members = fbb.create_vector(&members);
    let root = wire::LeaveGroupResponse::create(
        &mut fbb,
        &wire::LeaveGroupResponseArgs {
            throttle_time_ms: 0,
            error_code: r.error.code(),
            members: Some(members),
        },
    );
    finish(fbb, root)
}

/// Groups consecutive entries by topic, keeping the request's order.
fn by_topic<T>(items: &[(TopicPartition, T)]) -> Vec<(&str, Vec<(u32, &T)>)> {
    let mut topics: Vec<(&str, Vec<(u32, &T)>)> = Vec::new();
    for (tp, item) in items {
        match topics.last_mut() {
            Some((topic, parts)) if *topic == tp.topic => parts.push((tp.partition, item)),
            _ => topics.push((&tp.topic, vec![(tp.partition, item)])),
        }
    }
    topics
}

pub fn offset_commit_response(results: &[(TopicPartition, ErrorCode)]) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let topics: Vec<_> = by_topic(results)
        .into_iter()
        .map(|(topic, parts)| {
            let parts: Vec<_> = parts
                .into_iter()
                .map(|(partition, error)| {
                    wire::OffsetCommitResponsePartition::create(
                        &mut fbb,
                        &wire::OffsetCommitResponsePartitionArgs {
                            partition,
                            error_code: error.code(),
                        },
                    )
                })
                .collect();
            let parts = fbb.create_vector(&parts);
            let name = fbb.create_string(topic);
            wire::OffsetCommitResponseTopic::create(
                &mut fbb,
                &wire::OffsetCommitResponseTopicArgs {
                    name: Some(name),
                    partitions: Some(parts),
                },
            )
        })
        .collect();
    let topics = fbb.create_vector(&topics);
    let root = wire::OffsetCommitResponse::create(
        &mut fbb,
        &wire::OffsetCommitResponseArgs {
            throttle_time_ms: 0,
            topics: Some(topics),
        },
    );
    finish(fbb, root)
}

pub fn offset_fetch_response(offsets: &[(TopicPartition, Option<CommittedOffset>)]) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let topics: Vec<_> = by_topic(offsets)
        .into_iter()
        .map(|(topic, parts)| {
            let parts: Vec<_> = parts
                .into_iter()
                .map(|(partition, committed)| {
                    let metadata = committed.as_ref().map(|c| fbb.create_string(&c.metadata));
                    wire::OffsetFetchResponsePartition::create(
                        &mut fbb,
                        &wire::OffsetFetchResponsePartitionArgs {
                            partition,
                            committed_offset: committed.as_ref().map_or(-1, |c| c.offset),
                            committed_leader_epoch: committed
                                .as_ref()
                                .map_or(-1, |c| c.leader_epoch),
                            metadata,
                            error_code: ErrorCode::None.code(),
                        },
                    )
                })
                .collect();
            let parts = fbb.create_vector(&parts);
            let name = fbb.create_string(topic);
            wire::OffsetFetchResponseTopic::create(
                &mut fbb,
                &wire::OffsetFetchResponseTopicArgs {
                    name: Some(name),
                    partitions: Some(parts),
                },
            )
        })
        .collect();
    let topics = fbb.create_vector(&topics);
    let root = wire::OffsetFetchResponse::create(
        &mut fbb,
        &wire::OffsetFetchResponseArgs {
            throttle_time_ms: 0,
            error_code: ErrorCode::None.code(),
            topics: Some(topics),
        },
    );
    finish(fbb, root)
}

pub fn list_groups_response(groups: &[ListedGroup]) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let listed: Vec<_> = groups
        .iter()
        .map(|g| {
            let id = fbb.create_string(&g.group_id);
            let protocol_type = fbb.create_string(&g.protocol_type);
            let state = fbb.create_string(g.state.name());
            wire::ListedGroup::create(
                &mut fbb,
                &wire::ListedGroupArgs {
                    group_id: Some(id),
                    protocol_type: Some(protocol_type),
                    group_state: Some(state),
                },
            )
        })
        .collect();
    let listed = fbb.create_vector(&listed);
    let root = wire::ListGroupsResponse::create(
        &mut fbb,
        &wire::ListGroupsResponseArgs {
            throttle_time_ms: 0,
            error_code: ErrorCode::None.code(),
            groups: Some(listed),
        },
    );
    finish(fbb, root)
}

/// Each group as described, with the error its coordinator lookup
/// ended in (NOT_COORDINATOR: another node coordinates it; the group is
/// then described as Dead).
pub fn describe_groups_response(groups: &[(DescribedGroup, ErrorCode)]) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let described: Vec<_> = groups
        .iter()
        .map(|(g, error)| {
            let members: Vec<_> = g
                .members
                .iter()
                .map(|m| {
                    let member_id = fbb.create_string(&m.member_id);
                    let instance = m.instance_id.as_deref().map(|i| fbb.create_string(i));
                    let client_id = fbb.create_string(&m.client_id);
                    let metadata = fbb.create_vector(&m.metadata);
                    let assignment = fbb.create_vector(&m.assignment);
                    wire::DescribedGroupMember::create(
                        &mut fbb,
                        &wire::DescribedGroupMemberArgs {
                            member_id: Some(member_id),
                            group_instance_id: instance,
                            client_id: Some(client_id),
                            client_host: None,
                            member_metadata: Some(metadata),
                            member_assignment: Some(assignment),
                        },
                    )
                })
                .collect();
            let members = fbb.create_vector(&members);
            let id = fbb.create_string(&g.group_id);
            let state = fbb.create_string(g.state.name());
            let protocol_type = fbb.create_string(&g.protocol_type);
            let protocol = fbb.create_string(&g.protocol_name);
            wire::DescribedGroup::create(
                &mut fbb,
                &wire::DescribedGroupArgs {
                    error_code: error.code(),
                    group_id: Some(id),
                    group_state: Some(state),
                    protocol_type: Some(protocol_type),
                    protocol_data: Some(protocol),
                    members: Some(members),
                },
            )
        })
        .collect();
    let described = fbb.create_vector(&described);
    let root = wire::DescribeGroupsResponse::create(
        &mut fbb,
        &wire::DescribeGroupsResponseArgs {
            throttle_time_ms: 0,
            groups: Some(described),
        },
    );
    finish(fbb, root)
}

#[cfg(test)]
mod tests;
