//! The consumer-group apis: FindCoordinator answers from the catalog; the
//! others become a [`GroupOp`] run on the shard that owns the group's
//! `__consumer_offsets` partition (its [`crate::group::host::GroupHost`]),
//! locally or over the mesh. ListGroups asks every hosting shard.

use fjord_schema::api::Request;
use fjord_schema::{wire, ErrorCode, PartitionId, ShardId};
use flatbuffers::FlatBufferBuilder;

use super::{Dispatcher, Reply};
use crate::group::coordinator::{DescribedGroup, GroupState, ListedGroup};
use crate::group::host::{GroupOp, GroupReply};
use crate::group::offsets_log::{partition_for, OFFSETS_TOPIC};
use crate::group::ops::GroupUnavailable;
use crate::group::wire as group_wire;
use crate::ops::{Op, OpResult};

impl Dispatcher {
    /// The shard hosting `group_id`'s coordinator.
    pub(crate) fn coordinator_shard(&self, group_id: &str) -> Result<ShardId, ErrorCode> {
        let catalog = self.service.catalog();
        let meta = catalog
            .get(OFFSETS_TOPIC)
            .ok_or(ErrorCode::CoordinatorNotAvailable)?;
        let partition = PartitionId(partition_for(group_id, meta.partition_count()));
        meta.shard_of(partition)
            .ok_or(ErrorCode::CoordinatorNotAvailable)
    }

    async fn run_group(&self, shard: ShardId, op: GroupOp) -> GroupReply {
        match self.service.execute(shard, Op::Group(op)).await {
            OpResult::Group(reply) => reply,
            other => GroupReply::Unavailable(GroupUnavailable::NoAnswer(format!("{other:?}"))),
        }
    }

    /// Routes `op` for `group_id` to its coordinator's shard (both
    /// listeners' group apis end here).
    pub(crate) async fn to_coordinator(&self, group_id: &str, op: GroupOp) -> GroupReply {
        match self.coordinator_shard(group_id) {
            Ok(shard) => self.run_group(shard, op).await,
            Err(_) => GroupReply::Unavailable(GroupUnavailable::NoOffsetsTopic),
        }
    }

    /// Serves a group api request (api keys 10..=18).
    pub(super) async fn group_request(&self, request: Request<'_>) -> Reply {
        let (group_id, op) = match request {
            Request::FindCoordinator(r) => return self.find_coordinator(&r),
            Request::JoinGroup(r) => {
                let r = group_wire::join_request(&r);
                (r.group_id.clone(), GroupOp::Join(r))
            }
            Request::SyncGroup(r) => {
                let r = group_wire::sync_request(&r);
                (r.group_id.clone(), GroupOp::Sync(r))
            }
            Request::Heartbeat(r) => {
                let r = group_wire::heartbeat_request(&r);
                (r.group_id.clone(), GroupOp::Heartbeat(r))
            }
            Request::LeaveGroup(r) => {
                let (group_id, members) = group_wire::leave_request(&r);
                (group_id.clone(), GroupOp::Leave { group_id, members })
            }
            Request::OffsetCommit(r) => {
                let r = group_wire::commit_request(&r);
                (r.group_id.clone(), GroupOp::Commit(r))
            }
            Request::OffsetFetch(r) => {
                let (group_id, partitions) = group_wire::offset_fetch_request(&r);
                (
                    group_id.clone(),
                    GroupOp::Fetch {
                        group_id,
                        partitions,
                    },
                )
            }
            Request::ListGroups(r) => {
                let states: Vec<GroupState> = r
                    .states_filter()
                    .iter()
                    .flatten()
                    .filter_map(GroupState::from_name)
                    .collect();
                return self.list_groups(states).await;
            }
            Request::DescribeGroups(r) => {
                let ids: Vec<String> = r.groups().iter().flatten().map(str::to_owned).collect();
                return self.describe_groups(ids).await;
            }
            _ => unreachable!("group_request is only called for group apis"),
        };
        let body = match self.to_coordinator(&group_id, op).await {
            GroupReply::Join(r) => group_wire::join_response(&r),
            GroupReply::Sync(r) => group_wire::sync_response(&r),
            GroupReply::Heartbeat(error) => group_wire::heartbeat_response(error),
            GroupReply::Leave(r) => group_wire::leave_response(&r),
            GroupReply::Commit(results) => group_wire::offset_commit_response(&results),
            GroupReply::Fetch(offsets) => group_wire::offset_fetch_response(&offsets),
            GroupReply::Unavailable(e) => return Reply::error(e.code(), &e.to_string()),
            other => {
                return Reply::error(
                    ErrorCode::UnknownServerError,
                    &format!("unexpected coordinator reply {other:?}"),
                )
            }
        };
        Reply {
            error: false,
            body,
            payload: Vec::new(),
        }
    }

    fn find_coordinator(&self, r: &wire::FindCoordinatorRequest<'_>) -> Reply {
        let broker = &self.broker;
        let is_group = r.key_type() == wire::CoordinatorType::Group;
        let mut fbb = FlatBufferBuilder::new();
        let coordinators: Vec<_> = r
            .keys()
            .iter()
            .flatten()
            .map(|key| {
                let route = if is_group {
                    self.coordinator_shard(key)
                } else {
                    Err(ErrorCode::CoordinatorNotAvailable)
                };
                let key = fbb.create_string(key);
                let host = fbb.create_string(&broker.host);
                let message = route.err().map(|_| {
                    fbb.create_string(if is_group {
                        "the offsets topic is not available"
                    } else {
                        "transactions are not supported"
                    })
                });
                let shard = route.map_or(0, |s| s.get());
                wire::Coordinator::create(
                    &mut fbb,
                    &wire::CoordinatorArgs {
                        key: Some(key),
                        error_code: route.err().unwrap_or(ErrorCode::None).code(),
                        error_message: message,
                        node_id: if route.is_ok() {
                            broker.node_id.get() as i32
                        } else {
                            -1
                        },
                        host: Some(host),
                        port: broker.port,
                        shard,
                        shard_port: broker
                            .shard_ports
                            .get(usize::from(shard))
                            .copied()
                            .unwrap_or(0),
                    },
                )
            })
            .collect();
        let coordinators = fbb.create_vector(&coordinators);
        let root = wire::FindCoordinatorResponse::create(
            &mut fbb,
            &wire::FindCoordinatorResponseArgs {
                throttle_time_ms: 0,
                coordinators: Some(coordinators),
            },
        );
        fbb.finish(root, None);
        Reply::ok(fbb)
    }

    /// The groups of every shard that hosts an offsets partition, by id.
    pub(crate) async fn listed_groups(
        &self,
        states: Vec<GroupState>,
    ) -> Result<Vec<ListedGroup>, (ErrorCode, String)> {
        let mut shards: Vec<u16> = self
            .service
            .catalog()
            .get(OFFSETS_TOPIC)
            .map(|m| m.shards.clone())
            .unwrap_or_default();
        shards.sort_unstable();
        shards.dedup();
        let mut groups = Vec::new();
        for shard in shards {
            match self
                .run_group(ShardId(shard), GroupOp::List(states.clone()))
                .await
            {
                GroupReply::List(listed) => groups.extend(listed),
                GroupReply::Unavailable(e) => return Err((e.code(), e.to_string())),
                other => {
                    return Err((
                        ErrorCode::UnknownServerError,
                        format!("unexpected coordinator reply {other:?}"),
                    ))
                }
            }
        }
        groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(groups)
    }

    async fn list_groups(&self, states: Vec<GroupState>) -> Reply {
        match self.listed_groups(states).await {
            Ok(groups) => Reply {
                error: false,
                body: group_wire::list_groups_response(&groups),
                payload: Vec::new(),
            },
            Err((code, message)) => Reply::error(code, &message),
        }
    }

    async fn describe_groups(&self, ids: Vec<String>) -> Reply {
        let mut described = Vec::with_capacity(ids.len());
        for id in ids {
            match self
                .to_coordinator(&id, GroupOp::Describe(id.clone()))
                .await
            {
                GroupReply::Describe(group) => described.push(group),
                _ => described.push(DescribedGroup {
                    group_id: id,
                    state: GroupState::Dead,
                    protocol_type: String::new(),
                    protocol_name: String::new(),
                    members: Vec::new(),
                }),
            }
        }
        Reply {
            error: false,
            body: group_wire::describe_groups_response(&described),
            payload: Vec::new(),
        }
    }
}
