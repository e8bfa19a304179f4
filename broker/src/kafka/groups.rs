//! The consumer-group apis of the Kafka listener: each request becomes the
//! coordinator's owned request type (`crate::group::coordinator`) and runs
//! on the shard that owns the group's `__consumer_offsets` partition, the
//! same [`crate::group::host::GroupOp`] path the native listener takes
//! (`Engine::to_coordinator`). Group placement is Kafka's, so a group
//! has one coordinator whichever door its members came through.
//!
//! Versions differ only at the edge, here: JoinGroup v0-v3 predates
//! MEMBER_ID_REQUIRED, so a first join at those versions is completed by
//! joining again with the handed-out id before answering.

use bytes::Bytes;
use fjord_schema::{ErrorCode, PartitionId};
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{
    DescribedGroup as KafkaDescribedGroup, DescribedGroupMember,
};
use kafka_protocol::messages::find_coordinator_response::Coordinator as KafkaCoordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup as KafkaListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest,
    SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::handler::KafkaHandler;
use crate::engine::cluster::ClusterNode;
use crate::group::coordinator::{
    CommitRequest, CommittedOffset, DescribedGroup, GroupState, HeartbeatRequest as Heartbeat,
    JoinRequest, JoinResponse, LeavingMember, Protocol, SyncRequest,
};
use crate::group::ops::{GroupOp, GroupReply};
use crate::group::TopicPartition;

/// Kafka's "authorized operations not requested" sentinel.
const OPERATIONS_OMITTED: i32 = i32::MIN;
/// FindCoordinator key type of a consumer group (1 is a transaction).
const KEY_TYPE_GROUP: i8 = 0;

fn text(s: &StrBytes) -> String {
    s.to_string()
}

fn kafka_str(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// An absent or empty instance id means a dynamic member.
fn instance(s: &Option<StrBytes>) -> Option<String> {
    s.as_ref().filter(|s| !s.is_empty()).map(text)
}

/// The error of a reply that is not the expected kind.
fn unavailable(reply: GroupReply) -> ErrorCode {
    match reply {
        GroupReply::Unavailable(e) => {
            tracing::debug!(code = ?e.code(), message = %e, "group request not served");
            e.code()
        }
        other => {
            tracing::warn!(?other, "unexpected coordinator reply");
            ErrorCode::UnknownServerError
        }
    }
}

impl KafkaHandler {
    pub(super) fn find_coordinator(
        &self,
        request: FindCoordinatorRequest,
        version: i16,
    ) -> FindCoordinatorResponse {
        find_coordinator_response(&request, version, |group| {
            self.engine.coordinator_node(group)
        })
    }

    async fn join(&self, request: JoinRequest) -> JoinResponse {
        let group_id = request.group_id.clone();
        match self
            .engine
            .to_coordinator(&group_id, GroupOp::Join(request.clone()))
            .await
        {
            GroupReply::Join(response) => response,
            reply => JoinResponse {
                error: unavailable(reply),
                generation_id: -1,
                protocol_type: None,
                protocol_name: None,
                leader: String::new(),
                skip_assignment: false,
                member_id: request.member_id,
                members: Vec::new(),
            },
        }
    }

    pub(super) async fn join_group(
        &self,
        request: JoinGroupRequest,
        version: i16,
        client_id: String,
    ) -> JoinGroupResponse {
        let mut join = JoinRequest {
            group_id: text(&request.group_id.0),
            member_id: text(&request.member_id),
            instance_id: instance(&request.group_instance_id),
            client_id,
            protocol_type: text(&request.protocol_type),
            protocols: request
                .protocols
                .iter()
                .map(|p| Protocol {
                    name: text(&p.name),
                    metadata: p.metadata.to_vec(),
                })
                .collect(),
            session_timeout_ms: request.session_timeout_ms,
            // v0 has no rebalance timeout: the session timeout serves.
            rebalance_timeout_ms: if version >= 1 {
                request.rebalance_timeout_ms
            } else {
                -1
            },
        };
        let mut joined = self.join(join.clone()).await;
        if version < 4 && joined.error == ErrorCode::MemberIdRequired {
            // These clients cannot be told to rejoin with an id: do it
            // for them.
            join.member_id = joined.member_id.clone();
            joined = self.join(join).await;
        }
        let mut response = JoinGroupResponse::default();
        response.error_code = joined.error.code();
        response.generation_id = joined.generation_id;
        if version >= 7 {
            response.protocol_type = joined.protocol_type.map(kafka_str);
            response.protocol_name = joined.protocol_name.map(kafka_str);
        } else {
            response.protocol_name = Some(kafka_str(joined.protocol_name.unwrap_or_default()));
        }
        response.leader = kafka_str(joined.leader);
        response.skip_assignment = version >= 9 && joined.skip_assignment;
        response.member_id = kafka_str(joined.member_id);
        response.members = joined
            .members
            .into_iter()
            .map(|m| {
                let mut member = JoinGroupResponseMember::default();
                member.member_id = kafka_str(m.member_id);
                if version >= 5 {
                    member.group_instance_id = m.instance_id.map(kafka_str);
                }
                member.metadata = Bytes::from(m.metadata);
                member
            })
            .collect();
        response
    }

    pub(super) async fn sync_group(
        &self,
        request: SyncGroupRequest,
        version: i16,
    ) -> SyncGroupResponse {
        let sync = SyncRequest {
            group_id: text(&request.group_id.0),
            generation_id: request.generation_id,
            member_id: text(&request.member_id),
            instance_id: instance(&request.group_instance_id),
            protocol_type: request.protocol_type.as_ref().map(text),
            protocol_name: request.protocol_name.as_ref().map(text),
            assignments: request
                .assignments
                .iter()
                .map(|a| (text(&a.member_id), a.assignment.to_vec()))
                .collect(),
        };
        let group_id = sync.group_id.clone();
        let mut response = SyncGroupResponse::default();
        match self
            .engine
            .to_coordinator(&group_id, GroupOp::Sync(sync))
            .await
        {
            GroupReply::Sync(synced) => {
                response.error_code = synced.error.code();
                if version >= 5 {
                    response.protocol_type = synced.protocol_type.map(kafka_str);
                    response.protocol_name = synced.protocol_name.map(kafka_str);
                }
                response.assignment = Bytes::from(synced.assignment);
            }
            reply => response.error_code = unavailable(reply).code(),
        }
        response
    }

    pub(super) async fn heartbeat(&self, request: HeartbeatRequest) -> HeartbeatResponse {
        let heartbeat = Heartbeat {
            group_id: text(&request.group_id.0),
            generation_id: request.generation_id,
            member_id: text(&request.member_id),
            instance_id: instance(&request.group_instance_id),
        };
        let group_id = heartbeat.group_id.clone();
        let mut response = HeartbeatResponse::default();
        response.error_code = match self
            .engine
            .to_coordinator(&group_id, GroupOp::Heartbeat(heartbeat))
            .await
        {
            GroupReply::Heartbeat(error) => error.code(),
            reply => unavailable(reply).code(),
        };
        response
    }

    pub(super) async fn leave_group(
        &self,
        request: LeaveGroupRequest,
        version: i16,
    ) -> LeaveGroupResponse {
        let group_id = text(&request.group_id.0);
        // v0-v2 name one member; v3+ a batch (static members by instance).
        let members: Vec<LeavingMember> = if version >= 3 {
            request
                .members
                .iter()
                .map(|m| LeavingMember {
                    member_id: text(&m.member_id),
                    instance_id: instance(&m.group_instance_id),
                })
                .collect()
        } else {
            vec![LeavingMember {
                member_id: text(&request.member_id),
                instance_id: None,
            }]
        };
        let mut response = LeaveGroupResponse::default();
        let op = GroupOp::Leave {
            group_id: group_id.clone(),
            members,
        };
        match self.engine.to_coordinator(&group_id, op).await {
            GroupReply::Leave(left) => {
                if version >= 3 {
                    response.error_code = left.error.code();
                    response.members = left
                        .members
                        .into_iter()
                        .map(|(m, error)| {
                            let mut r = MemberResponse::default();
                            r.member_id = kafka_str(m.member_id);
                            r.group_instance_id = m.instance_id.map(kafka_str);
                            r.error_code = error.code();
                            r
                        })
                        .collect();
                } else {
                    // One member: its own error is the answer.
                    let member = left.members.first().map(|(_, e)| *e);
                    response.error_code = match (left.error, member) {
                        (ErrorCode::None, Some(error)) => error.code(),
                        (error, _) => error.code(),
                    };
                }
            }
            reply => response.error_code = unavailable(reply).code(),
        }
        response
    }

    pub(super) async fn offset_commit(
        &self,
        request: OffsetCommitRequest,
        version: i16,
    ) -> OffsetCommitResponse {
        // As Kafka: a partition the broker does not have is refused, the
        // rest are committed.
        let known = |topic: &TopicName, partition: i32| {
            u32::try_from(partition).is_ok_and(|p| {
                self.engine
                    .partition_exists(&topic.0, PartitionId(p))
                    .is_ok()
            })
        };
        let commit = CommitRequest {
            group_id: text(&request.group_id.0),
            generation_id: request.generation_id_or_member_epoch,
            member_id: text(&request.member_id),
            instance_id: instance(&request.group_instance_id),
            offsets: request
                .topics
                .iter()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .filter(|p| known(&t.name, p.partition_index))
                        .map(|p| {
                            (
                                TopicPartition::new(text(&t.name.0), p.partition_index as u32),
                                CommittedOffset {
                                    offset: p.committed_offset,
                                    // v6+ carries it; -1 is Kafka's "unknown".
                                    leader_epoch: if version >= 6 {
                                        p.committed_leader_epoch
                                    } else {
                                        -1
                                    },
                                    metadata: p
                                        .committed_metadata
                                        .as_ref()
                                        .map_or_else(String::new, text),
                                },
                            )
                        })
                })
                .collect(),
        };
        // The answer lists the request's partitions, in its order.
        let asked: Vec<(TopicName, Vec<i32>)> = request
            .topics
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    t.partitions.iter().map(|p| p.partition_index).collect(),
                )
            })
            .collect();
        let group_id = commit.group_id.clone();
        let committed = commit.offsets.len();
        let results: Vec<ErrorCode> = if commit.offsets.is_empty() {
            Vec::new()
        } else {
            match self
                .engine
                .to_coordinator(&group_id, GroupOp::Commit(commit))
                .await
            {
                GroupReply::Commit(results) => results.into_iter().map(|(_, e)| e).collect(),
                reply => vec![unavailable(reply); committed],
            }
        };
        let mut results = results.into_iter();
        let mut response = OffsetCommitResponse::default();
        for (name, partitions) in asked {
            let mut topic = OffsetCommitResponseTopic::default();
            topic.name = name;
            for index in partitions {
                let mut p = OffsetCommitResponsePartition::default();
                p.partition_index = index;
                p.error_code = if known(&topic.name, index) {
                    results.next().unwrap_or(ErrorCode::UnknownServerError)
                } else {
                    ErrorCode::UnknownTopicOrPartition
                }
                .code();
                topic.partitions.push(p);
            }
            response.topics.push(topic);
        }
        response
    }

    /// The committed offsets of one group: `None` asks for all of them.
    async fn committed(
        &self,
        group_id: &str,
        partitions: Option<Vec<TopicPartition>>,
    ) -> Result<Vec<(TopicPartition, Option<CommittedOffset>)>, ErrorCode> {
        let op = GroupOp::Fetch {
            group_id: group_id.to_owned(),
            partitions,
        };
        match self.engine.to_coordinator(group_id, op).await {
            GroupReply::Fetch(offsets) => Ok(offsets),
            reply => Err(unavailable(reply)),
        }
    }

    pub(super) async fn offset_fetch(
        &self,
        request: OffsetFetchRequest,
        version: i16,
    ) -> OffsetFetchResponse {
        let mut response = OffsetFetchResponse::default();
        if version >= 8 {
            for group in &request.groups {
                let group_id = text(&group.group_id.0);
                let wanted = group.topics.as_ref().map(|topics| {
                    partitions_of(topics.iter().map(|t| (&t.name, &t.partition_indexes[..])))
                });
                let mut answer = OffsetFetchResponseGroup::default();
                answer.group_id = group.group_id.clone();
                match self.committed(&group_id, wanted).await {
                    Ok(offsets) => {
                        for (name, partitions) in by_topic(offsets) {
                            let mut topic = OffsetFetchResponseTopics::default();
                            topic.name = TopicName(kafka_str(name));
                            topic.partitions = partitions
                                .into_iter()
                                .map(|(index, offset)| {
                                    let mut p = OffsetFetchResponsePartitions::default();
                                    p.partition_index = index;
                                    fill(
                                        offset,
                                        &mut p.committed_offset,
                                        &mut p.committed_leader_epoch,
                                        &mut p.metadata,
                                    );
                                    p
                                })
                                .collect();
                            answer.topics.push(topic);
                        }
                    }
                    Err(error) => answer.error_code = error.code(),
                }
                response.groups.push(answer);
            }
            return response;
        }
        let group_id = text(&request.group_id.0);
        // v1 always names partitions; v2+ may ask for all (null).
        let wanted = request.topics.as_ref().map(|topics| {
            partitions_of(topics.iter().map(|t| (&t.name, &t.partition_indexes[..])))
        });
        match self.committed(&group_id, wanted).await {
            Ok(offsets) => {
                for (name, partitions) in by_topic(offsets) {
                    let mut topic = OffsetFetchResponseTopic::default();
                    topic.name = TopicName(kafka_str(name));
                    topic.partitions = partitions
                        .into_iter()
                        .map(|(index, offset)| {
                            let mut p = OffsetFetchResponsePartition::default();
                            p.partition_index = index;
                            fill(
                                offset,
                                &mut p.committed_offset,
                                &mut p.committed_leader_epoch,
                                &mut p.metadata,
                            );
                            if version < 5 {
                                // Not on the wire before v5.
                                p.committed_leader_epoch = -1;
                            }
                            p
                        })
                        .collect();
                    response.topics.push(topic);
                }
            }
            Err(error) => {
                if version >= 2 {
                    response.error_code = error.code();
                } else if let Some(topics) = &request.topics {
                    // v1 has no group-level error: every partition has it.
                    for t in topics {
                        let mut topic = OffsetFetchResponseTopic::default();
                        topic.name = t.name.clone();
                        for &index in &t.partition_indexes {
                            let mut p = OffsetFetchResponsePartition::default();
                            p.partition_index = index;
                            p.committed_offset = -1;
                            p.committed_leader_epoch = -1;
                            p.error_code = error.code();
                            topic.partitions.push(p);
                        }
                        response.topics.push(topic);
                    }
                }
            }
        }
        response
    }

    pub(super) async fn list_groups(&self, request: ListGroupsRequest) -> ListGroupsResponse {
        let states: Vec<GroupState> = request
            .states_filter
            .iter()
            .filter_map(|s| GroupState::from_name(s))
            .collect();
        let mut response = ListGroupsResponse::default();
        if !request.states_filter.is_empty() && states.is_empty() {
            // Only states we never report were asked for.
            return response;
        }
        match self.engine.listed_groups(states).await {
            Ok(groups) => {
                response.groups = groups
                    .into_iter()
                    .map(|g| {
                        let mut listed = KafkaListedGroup::default();
                        listed.group_id = GroupId(kafka_str(g.group_id));
                        listed.protocol_type = kafka_str(g.protocol_type);
                        listed.group_state = StrBytes::from_static_str(g.state.name());
                        listed
                    })
                    .collect();
            }
            Err((code, message)) => {
                tracing::debug!(?code, %message, "ListGroups not served");
                response.error_code = code.code();
            }
        }
        response
    }

    pub(super) async fn describe_groups(
        &self,
        request: DescribeGroupsRequest,
        version: i16,
    ) -> DescribeGroupsResponse {
        let mut response = DescribeGroupsResponse::default();
        for id in &request.groups {
            let group_id = text(&id.0);
            let mut described = KafkaDescribedGroup::default();
            described.group_id = id.clone();
            described.authorized_operations = OPERATIONS_OMITTED;
            match self
                .engine
                .to_coordinator(&group_id, GroupOp::Describe(group_id.clone()))
                .await
            {
                GroupReply::Describe(group) => describe(group, version, &mut described),
                reply => {
                    described.error_code = unavailable(reply).code();
                    described.group_state = StrBytes::from_static_str(GroupState::Dead.name());
                }
            }
            response.groups.push(described);
        }
        response
    }

    pub(super) async fn delete_groups(&self, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
        let mut response = DeleteGroupsResponse::default();
        for id in &request.groups_names {
            let group_id = text(&id.0);
            let mut result = DeletableGroupResult::default();
            result.group_id = id.clone();
            result.error_code = if group_id.is_empty() {
                ErrorCode::InvalidGroupId
            } else {
                match self
                    .engine
                    .to_coordinator(&group_id, GroupOp::Delete(group_id.clone()))
                    .await
                {
                    GroupReply::Delete(error) => error,
                    reply => unavailable(reply),
                }
            }
            .code();
            response.results.push(result);
        }
        response
    }
}

fn describe(group: DescribedGroup, version: i16, out: &mut KafkaDescribedGroup) {
    out.group_state = StrBytes::from_static_str(group.state.name());
    out.protocol_type = kafka_str(group.protocol_type);
    out.protocol_data = kafka_str(group.protocol_name);
    out.members = group
        .members
        .into_iter()
        .map(|m| {
            let mut member = DescribedGroupMember::default();
            member.member_id = kafka_str(m.member_id);
            if version >= 4 {
                member.group_instance_id = m.instance_id.map(kafka_str);
            }
            member.client_id = kafka_str(m.client_id);
            member.client_host = StrBytes::from_static_str("/127.0.0.1");
            member.member_metadata = Bytes::from(m.metadata);
            member.member_assignment = Bytes::from(m.assignment);
            member
        })
        .collect();
}

/// The partitions an OffsetFetch names (its topic types differ by version).
fn partitions_of<'a>(
    topics: impl Iterator<Item = (&'a TopicName, &'a [i32])>,
) -> Vec<TopicPartition> {
    topics
        .flat_map(|(name, indexes)| {
            indexes
                .iter()
                .map(|&p| TopicPartition::new(text(&name.0), p as u32))
        })
        .collect()
}

/// One topic's partitions and their committed offsets (`None`: none).
type TopicOffsets = (String, Vec<(i32, Option<CommittedOffset>)>);

/// Committed offsets grouped by topic, in first-seen order.
fn by_topic(offsets: Vec<(TopicPartition, Option<CommittedOffset>)>) -> Vec<TopicOffsets> {
    let mut topics: Vec<TopicOffsets> = Vec::new();
    for (tp, offset) in offsets {
        let index = tp.partition as i32;
        match topics.iter_mut().find(|(name, _)| *name == tp.topic) {
            Some((_, parts)) => parts.push((index, offset)),
            None => topics.push((tp.topic, vec![(index, offset)])),
        }
    }
    topics
}

/// Kafka's answer for a partition: -1 / -1 / "" when nothing is committed.
fn fill(
    offset: Option<CommittedOffset>,
    committed_offset: &mut i64,
    leader_epoch: &mut i32,
    metadata: &mut Option<StrBytes>,
) {
    match offset {
        Some(o) => {
            *committed_offset = o.offset;
            *leader_epoch = o.leader_epoch;
            *metadata = Some(kafka_str(o.metadata));
        }
        None => {
            *committed_offset = -1;
            *leader_epoch = -1;
            *metadata = Some(StrBytes::default());
        }
    }
}

/// FindCoordinator's answer: each key's coordinator as `lookup` finds it
/// (the live node leading the group's offsets partition), reached on its
/// Kafka listener.
pub(super) fn find_coordinator_response(
    request: &FindCoordinatorRequest,
    version: i16,
    lookup: impl Fn(&str) -> Result<ClusterNode, ErrorCode>,
) -> FindCoordinatorResponse {
    let locate = |key: &StrBytes| -> KafkaCoordinator {
        let mut c = KafkaCoordinator::default();
        c.key = key.clone();
        let found = if request.key_type == KEY_TYPE_GROUP {
            lookup(key).map_err(|code| (code, "the group's coordinator is not available"))
        } else {
            Err((
                ErrorCode::CoordinatorNotAvailable,
                "transactions are not supported",
            ))
        };
        let found = found.and_then(|node| match node.kafka {
            Some(kafka) => Ok((node.node, kafka)),
            None => Err((
                ErrorCode::CoordinatorNotAvailable,
                "the coordinator has no Kafka listener",
            )),
        });
        match found {
            Ok((node, kafka)) => {
                c.node_id = BrokerId(node.get() as i32);
                c.host = kafka_str(kafka.host);
                c.port = i32::from(kafka.port);
                c.error_message = None;
            }
            Err((code, message)) => {
                c.error_code = code.code();
                c.error_message = Some(StrBytes::from_static_str(message));
                c.node_id = BrokerId(-1);
                c.host = StrBytes::default();
                c.port = -1;
            }
        }
        c
    };
    let mut response = FindCoordinatorResponse::default();
    if version >= 4 {
        response.coordinators = request.coordinator_keys.iter().map(locate).collect();
        response.error_message = None;
    } else {
        let c = locate(&request.key);
        response.error_code = c.error_code;
        response.error_message = if version >= 1 { c.error_message } else { None };
        response.node_id = c.node_id;
        response.host = c.host;
        response.port = c.port;
    }
    response
}
