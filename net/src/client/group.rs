//! Typed calls for the consumer-group apis (FindCoordinator, JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, ListGroups,
//! DescribeGroups) on a [`Client`], with owned results. Protocol metadata
//! and assignments stay opaque bytes here; [`super::assignor`] and
//! [`super::consumer_protocol`] give them meaning.

use fjord_schema::api::{ApiKey, Response};
use fjord_schema::{wire, ErrorCode};
use flatbuffers::FlatBufferBuilder;

use super::{decode_typed, unexpected, Client, ClientError};

/// Where a group's coordinator is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorInfo {
    pub error: ErrorCode,
    pub node_id: i32,
    pub host: String,
    pub port: u16,
    pub shard: u16,
    /// The hosting shard's own port; 0 when not exposed.
    pub shard_port: u16,
}

/// A JoinGroup request.
#[derive(Debug, Clone)]
pub struct JoinGroup<'a> {
    pub group_id: &'a str,
    pub member_id: &'a str,
    pub instance_id: Option<&'a str>,
    pub client_id: &'a str,
    pub protocol_type: &'a str,
    /// (assignor name, subscription metadata), in preference order.
    pub protocols: &'a [(String, Vec<u8>)],
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub metadata: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinGroupResult {
    pub error: ErrorCode,
    pub generation_id: i32,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub skip_assignment: bool,
    pub member_id: String,
    /// Every member with its metadata, for the leader only.
    pub members: Vec<JoinedMember>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncGroupResult {
    pub error: ErrorCode,
    pub assignment: Vec<u8>,
}

/// A committed offset as OffsetFetch returns it (`offset` -1: none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedOffset {
    pub topic: String,
    pub partition: u32,
    pub error: ErrorCode,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedGroupInfo {
    pub group_id: String,
    pub protocol_type: String,
    pub state: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub metadata: Vec<u8>,
    pub assignment: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub error: ErrorCode,
    pub group_id: String,
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

/// One offset to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetToCommit {
    pub topic: String,
    pub partition: u32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
}

/// Who commits: a member of generation `generation_id`, or (generation -1,
/// empty member id) an admin / simple consumer of an empty group.
#[derive(Debug, Clone, Copy)]
pub struct Committer<'a> {
    pub generation_id: i32,
    pub member_id: &'a str,
    pub instance_id: Option<&'a str>,
}

impl Committer<'_> {
    pub const SIMPLE: Committer<'static> = Committer {
        generation_id: -1,
        member_id: "",
        instance_id: None,
    };
}

fn bytes(v: Option<flatbuffers::Vector<'_, u8>>) -> Vec<u8> {
    v.map(|v| v.bytes().to_vec()).unwrap_or_default()
}

/// Consecutive runs of the same topic.
fn by_topic<T>(items: &[T], topic: impl Fn(&T) -> &str) -> Vec<(&str, Vec<&T>)> {
    let mut out: Vec<(&str, Vec<&T>)> = Vec::new();
    for item in items {
        let name = topic(item);
        match out.last_mut() {
            Some((last, run)) if *last == name => run.push(item),
            _ => out.push((name, vec![item])),
        }
    }
    out
}

impl Client {
    fn typed(&mut self, api: ApiKey, body: &[u8]) -> Result<fjord_schema::Frame, ClientError> {
        self.call(api, 0, body)
    }

    /// Finds the coordinator of `group_id`.
    pub fn find_coordinator(&mut self, group_id: &str) -> Result<CoordinatorInfo, ClientError> {
        let mut fbb = FlatBufferBuilder::new();
        let key = fbb.create_string(group_id);
        let keys = fbb.create_vector(&[key]);
        let root = wire::FindCoordinatorRequest::create(
            &mut fbb,
            &wire::FindCoordinatorRequestArgs {
                key_type: wire::CoordinatorType::Group,
                keys: Some(keys),
            },
        );
        fbb.finish(root, None);
        let frame = self.typed(ApiKey::FindCoordinator, fbb.finished_data())?;
        let Response::FindCoordinator(r) = decode_typed(&frame, ApiKey::FindCoordinator)? else {
            return Err(unexpected(ApiKey::FindCoordinator, &frame));
        };
        let c = r
            .coordinators()
            .iter()
            .flatten()
            .next()
            .ok_or(ClientError::ErrorCode {
                api_key: ApiKey::FindCoordinator,
                code: ErrorCode::CoordinatorNotAvailable,
            })?;
        Ok(CoordinatorInfo {
            error: ErrorCode::from_code(c.error_code()),
            node_id: c.node_id(),
            host: c.host().unwrap_or_default().to_owned(),
            port: c.port(),
            shard: c.shard(),
            shard_port: c.shard_port(),
        })
    }

    /// Joins (or rejoins) a group; blocks until the rebalance completes.
    pub fn join_group(&mut self, request: &JoinGroup<'_>) -> Result<JoinGroupResult, ClientError> {
        let mut fbb = FlatBufferBuilder::new();
        let protocols: Vec<_> = request
            .protocols
            .iter()
            .map(|(name, metadata)| {
                let name = fbb.create_string(name);
                let metadata = fbb.create_vector(metadata);
                wire::JoinGroupProtocol::create(
                    &mut fbb,
                    &wire::JoinGroupProtocolArgs {
                        name: Some(name),
                        metadata: Some(metadata),
                    },
                )
            })
            .collect();
        let protocols = fbb.create_vector(&protocols);
        let group_id = fbb.create_string(request.group_id);
        let member_id = fbb.create_string(request.member_id);
        let instance = request.instance_id.map(|i| fbb.create_string(i));
        let protocol_type = fbb.create_string(request.protocol_type);
        let client_id = fbb.create_string(request.client_id);
        let root = wire::JoinGroupRequest::create(
            &mut fbb,
            &wire::JoinGroupRequestArgs {
                group_id: Some(group_id),
                session_timeout_ms: request.session_timeout_ms,
                rebalance_timeout_ms: request.rebalance_timeout_ms,
                member_id: Some(member_id),
                group_instance_id: instance,
                protocol_type: Some(protocol_type),
                protocols: Some(protocols),
                client_id: Some(client_id),
                reason: None,
            },
        );
        fbb.finish(root, None);
        let frame = self.typed(ApiKey::JoinGroup, fbb.finished_data())?;
        let Response::JoinGroup(r) = decode_typed(&frame, ApiKey::JoinGroup)? else {
            return Err(unexpected(ApiKey::JoinGroup, &frame));
        };
        Ok(JoinGroupResult {
            error: ErrorCode::from_code(r.error_code()),
            generation_id: r.generation_id(),
            protocol_name: r.protocol_name().map(str::to_owned),
            leader: r.leader().unwrap_or_default().to_owned(),
            skip_assignment: r.skip_assignment(),
            member_id: r.member_id().unwrap_or_default().to_owned(),
            members: r
                .members()
                .iter()
                .flatten()
                .map(|m| JoinedMember {
                    member_id: m.member_id().to_owned(),
                    instance_id: m.group_instance_id().map(str::to_owned),
                    metadata: bytes(m.metadata()),
                })
                .collect(),
        })
    }

    /// Sends the leader's assignments (empty for followers) and gets this
    /// member's; blocks until the leader's arrive.
    #[allow(clippy::too_many_arguments)]
    pub fn sync_group(
        &mut self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        instance_id: Option<&str>,
        protocol_type: &str,
        protocol_name: &str,
        assignments: &[(String, Vec<u8>)],
    ) -> Result<SyncGroupResult, ClientError> {
        let mut fbb = FlatBufferBuilder::new();
        let assignments: Vec<_> = assignments
            .iter()
            .map(|(member, assignment)| {
                let member = fbb.create_string(member);
                let assignment = fbb.create_vector(assignment);
                wire::SyncGroupAssignment::create(
                    &mut fbb,
                    &wire::SyncGroupAssignmentArgs {
                        member_id: Some(member),
                        assignment: Some(assignment),
                    },
                )
            })
            .collect();
        let assignments = fbb.create_vector(&assignments);
        let group_id = fbb.create_string(group_id);
        let member_id = fbb.create_string(member_id);
        let instance = instance_id.map(|i| fbb.create_string(i));
        let protocol_type = fbb.create_string(protocol_type);
        let protocol_name = fbb.create_string(protocol_name);
        let root = wire::SyncGroupRequest::create(
            &mut fbb,
            &wire::SyncGroupRequestArgs {
                group_id: Some(group_id),
                generation_id,
                member_id: Some(member_id),
                group_instance_id: instance,
                protocol_type: Some(protocol_type),
                protocol_name: Some(protocol_name),
                assignments: Some(assignments),
            },
        );
        fbb.finish(root, None);
        let frame = self.typed(ApiKey::SyncGroup, fbb.finished_data())?;
        let Response::SyncGroup(r) = decode_typed(&frame, ApiKey::SyncGroup)? else {
            return Err(unexpected(ApiKey::SyncGroup, &frame));
        };
        Ok(SyncGroupResult {
            error: ErrorCode::from_code(r.error_code()),
            assignment: bytes(r.assignment()),
        })
    }

    /// One heartbeat; the error says whether to rejoin.
    pub fn heartbeat(
        &mut self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<ErrorCode, ClientError> {
        let mut fbb = FlatBufferBuilder::new();
        let group_id = fbb.create_string(group_id);
        let member_id = fbb.create_string(member_id);
        let instance = instance_id.map(|i| fbb.create_string(i));
        let root = wire::HeartbeatRequest::create(
            &mut fbb,
            &wire::HeartbeatRequestArgs {
                group_id: Some(group_id),
                generation_id,
                member_id: Some(member_id),
                group_instance_id: instance,
            },
        );
        fbb.finish(root, None);
        let frame = self.typed(ApiKey::Heartbeat, fbb.finished_data())?;
        let Response::Heartbeat(r) = decode_typed(&frame, ApiKey::Heartbeat)? else {
            return Err(unexpected(ApiKey::Heartbeat, &frame));
        };
        Ok(ErrorCode::from_code(r.error_code()))
    }

    /// Leaves the group (one member).
    pub fn leave_group(
        &mut self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<ErrorCode, ClientError> {
        let mut fbb = FlatBufferBuilder::new();
        let member = fbb.create_string(member_id);
        let instance = instance_id.map(|i| fbb.create_string(i));
        let member = wire::LeaveGroupMember::create(
            &mut fbb,
            &wire::LeaveGroupMemberArgs {
                member_id: Some(member),
                group_instance_id: instance,
                reason: None,
            },
        );
        let members = fbb.create_vector(&[member]);
        let group_id = fbb.create_string(group_id);
        let root = wire::LeaveGroupRequest::create(
            &mut fbb,
            &wire::LeaveGroupRequestArgs {
                group_id: Some(group_id),
                members: Some(members),
            },
        );
        fbb.finish(root, None);
        let frame = self.typed(ApiKey::LeaveGroup, fbb.finished_data())?;
        let Response::LeaveGroup(r) = decode_typed(&frame, ApiKey::LeaveGroup)? else {
            return Err(unexpected(ApiKey::LeaveGroup, &frame));
        };
        let code = ErrorCode::from_code(r.error_code());
        if code != ErrorCode::None {
            return Ok(code);
        }
        Ok(r.members()
            .iter()
            .flatten()
            .map(|m| ErrorCode::from_code(m.error_code()))
            .find(|c| *c != ErrorCode::None)
            .unwrap_or(ErrorCode::None))
    }

    /// Commits offsets; one error per partition, in request order.
    pub fn offset_commit(
        &mut self,
        group_id: &str,
        committer: Committer<'_>,
        offsets: &[OffsetToCommit],
    ) -> Result<Vec<(String, u32, ErrorCode)>, ClientError> {
        let body = encode_offset_commit(group_id, committer, offsets);
        let frame = self.typed(ApiKey::OffsetCommit, &body)?;
        read_offset_commit(&frame)
    }

    /// Committed offsets of `partitions` (`None`: every committed one).
    pub fn offset_fetch(
        &mut self,
        group_id: &str,
        partitions: Option<&[(String, u32)]>,
    ) -> Result<Vec<FetchedOffset>, ClientError> {
        let mut fbb = FlatBufferBuilder::new();
        let topics = partitions.map(|partitions| {
            let topics: Vec<_> = by_topic(partitions, |p| &p.0)
                .into_iter()
                .map(|(topic, run)| {
                    let ids: Vec<u32> = run.iter().map(|p| p.1).collect();
                    let ids = fbb.create_vector(&ids);
                    let name = fbb.create_string(topic);
                    wire::OffsetFetchRequestTopic::create(
                        &mut fbb,
                        &wire::OffsetFetchRequestTopicArgs {
                            name: Some(name),
                            partitions: Some(ids),
                        },
                    )
                })
                .collect();
            fbb.create_vector(&topics)
        });
        let group_id = fbb.create_string(group_id);
        let root = wire::OffsetFetchRequest::create(
            &mut fbb,
            &wire::OffsetFetchRequestArgs {
                group_id: Some(group_id),
                topics,
            },
        );
        fbb.finish(root, None);
        let frame = self.typed(ApiKey::OffsetFetch, fbb.finished_data())?;
        let Response::OffsetFetch(r) = decode_typed(&frame, ApiKey::OffsetFetch)? else {
            return Err(unexpected(ApiKey::OffsetFetch, &frame));
        };
        let code = ErrorCode::from_code(r.error_code());
        if code != ErrorCode::None {
            return Err(ClientError::ErrorCode {
                api_key: ApiKey::OffsetFetch,
                code,
            });
        }
        Ok(r.topics()
            .iter()
            .flatten()
            .flat_map(|t| {
                t.partitions()
                    .into_iter()
                    .flatten()
                    .map(move |p| FetchedOffset {
                        topic: t.name().to_owned(),
                        partition: p.partition(),
                        error: ErrorCode::from_code(p.error_code()),
                        offset: p.committed_offset(),
                        leader_epoch: p.committed_leader_epoch(),
                        metadata: p.metadata().map(str::to_owned),
                    })
            })
            .collect())
    }

    /// Every group of the broker.
    pub fn list_groups(&mut self) -> Result<Vec<ListedGroupInfo>, ClientError> {
        let mut fbb = FlatBufferBuilder::new();
        let root = wire::ListGroupsRequest::create(
            &mut fbb,
            &wire::ListGroupsRequestArgs {
                states_filter: None,
            },
        );
        fbb.finish(root, None);
        let frame = self.typed(ApiKey::ListGroups, fbb.finished_data())?;
        let Response::ListGroups(r) = decode_typed(&frame, ApiKey::ListGroups)? else {
            return Err(unexpected(ApiKey::ListGroups, &frame));
        };
        Ok(r.groups()
            .iter()
            .flatten()
            .map(|g| ListedGroupInfo {
                group_id: g.group_id().to_owned(),
                protocol_type: g.protocol_type().unwrap_or_default().to_owned(),
                state: g.group_state().unwrap_or_default().to_owned(),
            })
            .collect())
    }

    pub fn describe_groups(
        &mut self,
        group_ids: &[&str],
    ) -> Result<Vec<GroupDescription>, ClientError> {
        let mut fbb = FlatBufferBuilder::new();
        let ids: Vec<_> = group_ids.iter().map(|g| fbb.create_string(g)).collect();
        let ids = fbb.create_vector(&ids);
        let root = wire::DescribeGroupsRequest::create(
            &mut fbb,
            &wire::DescribeGroupsRequestArgs { groups: Some(ids) },
        );
        fbb.finish(root, None);
        let frame = self.typed(ApiKey::DescribeGroups, fbb.finished_data())?;
        let Response::DescribeGroups(r) = decode_typed(&frame, ApiKey::DescribeGroups)? else {
            return Err(unexpected(ApiKey::DescribeGroups, &frame));
        };
        Ok(r.groups()
            .iter()
            .flatten()
            .map(|g| GroupDescription {
                error: ErrorCode::from_code(g.error_code()),
                group_id: g.group_id().to_owned(),
                state: g.group_state().unwrap_or_default().to_owned(),
                protocol_type: g.protocol_type().unwrap_or_default().to_owned(),
                protocol: g.protocol_data().unwrap_or_default().to_owned(),
                members: g
                    .members()
                    .iter()
                    .flatten()
                    .map(|m| MemberDescription {
                        member_id: m.member_id().to_owned(),
                        instance_id: m.group_instance_id().map(str::to_owned),
                        client_id: m.client_id().unwrap_or_default().to_owned(),
                        metadata: bytes(m.member_metadata()),
                        assignment: bytes(m.member_assignment()),
                    })
                    .collect(),
            })
            .collect())
    }
}

/// An OffsetCommit request body (for pipelined commits: send it with
/// [`Client::send`], read the answer with [`read_offset_commit`]).
pub fn encode_offset_commit(
    group_id: &str,
    committer: Committer<'_>,
    offsets: &[OffsetToCommit],
) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let topics: Vec<_> = by_topic(offsets, |o| &o.topic)
        .into_iter()
        .map(|(topic, run)| {
            let parts: Vec<_> = run
                .into_iter()
                .map(|o| {
                    let metadata = fbb.create_string(&o.metadata);
                    wire::OffsetCommitRequestPartition::create(
                        &mut fbb,
                        &wire::OffsetCommitRequestPartitionArgs {
                            partition: o.partition,
                            committed_offset: o.offset,
                            committed_leader_epoch: o.leader_epoch,
                            committed_metadata: Some(metadata),
                        },
                    )
                })
                .collect();
            let parts = fbb.create_vector(&parts);
            let name = fbb.create_string(topic);
            wire::OffsetCommitRequestTopic::create(
                &mut fbb,
                &wire::OffsetCommitRequestTopicArgs {
                    name: Some(name),
                    partitions: Some(parts),
                },
            )
        })
        .collect();
    let topics = fbb.create_vector(&topics);
    let group_id = fbb.create_string(group_id);
    let member_id = fbb.create_string(committer.member_id);
    let instance = committer.instance_id.map(|i| fbb.create_string(i));
    let root = wire::OffsetCommitRequest::create(
        &mut fbb,
        &wire::OffsetCommitRequestArgs {
            group_id: Some(group_id),
            generation_id: committer.generation_id,
            member_id: Some(member_id),
            group_instance_id: instance,
            topics: Some(topics),
        },
    );
    fbb.finish(root, None);
    fbb.finished_data().to_vec()
}

/// One error per partition of an OffsetCommit response.
pub fn read_offset_commit(
    frame: &fjord_schema::Frame,
) -> Result<Vec<(String, u32, ErrorCode)>, ClientError> {
    let Response::OffsetCommit(r) = decode_typed(frame, ApiKey::OffsetCommit)? else {
        return Err(unexpected(ApiKey::OffsetCommit, frame));
    };
    Ok(r.topics()
        .iter()
        .flatten()
        .flat_map(|t| {
            t.partitions().into_iter().flatten().map(move |p| {
                (
                    t.name().to_owned(),
                    p.partition(),
                    ErrorCode::from_code(p.error_code()),
                )
            })
        })
        .collect())
}
