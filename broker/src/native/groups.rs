//! The consumer-group apis of the native edge: FindCoordinator answers
//! from the engine's coordinator placement; the others are decoded into
//! a [`GroupOp`] the engine runs on the group's coordinator shard
//! ([`Engine::to_coordinator`]), and its reply is encoded.

use fjord_schema::api::Request;
use fjord_schema::{wire, ErrorCode};
use flatbuffers::FlatBufferBuilder;

use super::Reply;
use crate::engine::Engine;
use crate::group::coordinator::GroupState;
use crate::group::ops::{GroupOp, GroupReply};
use crate::group::wire as group_wire;

/// Serves a group api request (api keys 10..=18).
pub(super) async fn group_request(engine: &Engine, request: Request<'_>) -> Reply {
    let (group_id, op) = match request {
        Request::FindCoordinator(r) => return find_coordinator(engine, &r),
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
            return list_groups(engine, states).await;
        }
        Request::DescribeGroups(r) => {
            let ids: Vec<String> = r.groups().iter().flatten().map(str::to_owned).collect();
            return describe_groups(engine, ids).await;
        }
        _ => unreachable!("group_request is only called for group apis"),
    };
    let body = match engine.to_coordinator(&group_id, op).await {
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

/// Each key's coordinator: the live node leading the group's offsets
/// partition, at its native listener; when it is this node, also the
/// hosting shard and its own port.
fn find_coordinator(engine: &Engine, r: &wire::FindCoordinatorRequest<'_>) -> Reply {
    let broker = engine.broker();
    let is_group = r.key_type() == wire::CoordinatorType::Group;
    let mut fbb = FlatBufferBuilder::new();
    let coordinators: Vec<_> = r
        .keys()
        .iter()
        .flatten()
        .map(|key| {
            let found = if is_group {
                engine.coordinator_node(key).and_then(|node| {
                    let native = node.native.ok_or(ErrorCode::CoordinatorNotAvailable)?;
                    if node.node != broker.node_id {
                        return Ok((node.node, native, None));
                    }
                    let shard = engine.coordinator_shard(key)?;
                    Ok((node.node, native, Some(shard)))
                })
            } else {
                Err(ErrorCode::CoordinatorNotAvailable)
            };
            let key = fbb.create_string(key);
            let message = found.as_ref().err().map(|_| {
                fbb.create_string(if is_group {
                    "the group's coordinator is not available"
                } else {
                    "transactions are not supported"
                })
            });
            let (error, node_id, host, port, shard) = match found {
                Ok((node, native, shard)) => (
                    ErrorCode::None,
                    node.get() as i32,
                    native.host,
                    native.port,
                    shard,
                ),
                Err(code) => (code, -1, broker.host.clone(), broker.port, None),
            };
            let host = fbb.create_string(&host);
            let shard_port = shard
                .and_then(|s| broker.shard_ports.get(usize::from(s.get())).copied())
                .unwrap_or(0);
            wire::Coordinator::create(
                &mut fbb,
                &wire::CoordinatorArgs {
                    key: Some(key),
                    error_code: error.code(),
                    error_message: message,
                    node_id,
                    host: Some(host),
                    port,
                    shard: shard.map_or(0, |s| s.get()),
                    shard_port,
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

async fn list_groups(engine: &Engine, states: Vec<GroupState>) -> Reply {
    match engine.listed_groups(states).await {
        Ok(groups) => Reply {
            error: false,
            body: group_wire::list_groups_response(&groups),
            payload: Vec::new(),
        },
        Err((code, message)) => Reply::error(code, &message),
    }
}

async fn describe_groups(engine: &Engine, ids: Vec<String>) -> Reply {
    let described = engine.describe_groups(ids).await;
    Reply {
        error: false,
        body: group_wire::describe_groups_response(&described),
        payload: Vec::new(),
    }
}
