//! The messages between a group request's edge and the shard hosting the
//! group's coordinator: plain data (`Send`, they may cross the shard mesh),
//! no runtime. The cross-shard op list (`crate::ops`) carries them; the
//! host (`super::host`) answers them.

use fjord_schema::ErrorCode;

use super::coordinator::{
    CommitRequest, CommittedOffset, DescribedGroup, GroupState, HeartbeatRequest, JoinRequest,
    JoinResponse, LeaveResponse, LeavingMember, ListedGroup, SyncRequest, SyncResponse,
};
use super::offsets_log::OFFSETS_TOPIC;
use super::TopicPartition;

/// A group request for the shard that hosts the group (`Send`: it may
/// cross the mesh).
#[derive(Debug)]
pub enum GroupOp {
    Join(JoinRequest),
    Sync(SyncRequest),
    Heartbeat(HeartbeatRequest),
    Leave {
        group_id: String,
        members: Vec<LeavingMember>,
    },
    Commit(CommitRequest),
    Fetch {
        group_id: String,
        partitions: Option<Vec<TopicPartition>>,
    },
    List(Vec<GroupState>),
    Describe(String),
    /// DeleteGroups, one group.
    Delete(String),
}

impl GroupOp {
    /// The group the op is about (`None`: ListGroups, about every group of
    /// the shard).
    pub fn group_id(&self) -> Option<&str> {
        match self {
            GroupOp::Join(r) => Some(&r.group_id),
            GroupOp::Sync(r) => Some(&r.group_id),
            GroupOp::Heartbeat(r) => Some(&r.group_id),
            GroupOp::Commit(r) => Some(&r.group_id),
            GroupOp::Leave { group_id, .. }
            | GroupOp::Fetch { group_id, .. }
            | GroupOp::Describe(group_id)
            | GroupOp::Delete(group_id) => Some(group_id),
            GroupOp::List(_) => None,
        }
    }
}

/// The answer to a [`GroupOp`].
#[derive(Debug)]
pub enum GroupReply {
    Join(JoinResponse),
    Sync(SyncResponse),
    Heartbeat(ErrorCode),
    Leave(LeaveResponse),
    Commit(Vec<(TopicPartition, ErrorCode)>),
    Fetch(Vec<(TopicPartition, Option<CommittedOffset>)>),
    List(Vec<ListedGroup>),
    Describe(DescribedGroup),
    Delete(ErrorCode),
    /// Not answered: too many parked requests, or the shard is stopping.
    Unavailable(GroupUnavailable),
}

/// Why a group request was not answered by its coordinator. Clients
/// retry: every case is COORDINATOR_NOT_AVAILABLE on the wire, but
/// NOT_COORDINATOR and COORDINATOR_LOAD_IN_PROGRESS.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupUnavailable {
    /// The hosting shard is stopping and parks no new requests.
    #[error("the broker is stopping")]
    BrokerStopping,
    /// The hosting shard holds `parked_max` requests already.
    #[error("{parked_max} group requests are waiting on this shard")]
    Busy { parked_max: usize },
    /// The coordinator stopped while the request was parked.
    #[error("the coordinator is stopping")]
    CoordinatorStopping,
    /// No shard hosts the group (no offsets topic yet, or its offsets
    /// partition has no leader).
    #[error("no {OFFSETS_TOPIC} topic")]
    NoOffsetsTopic,
    /// Another node leads the group's offsets partition, or this shard
    /// stopped leading it while the request waited: the client finds the
    /// coordinator again (NOT_COORDINATOR on the wire).
    #[error("this node is not the group's coordinator")]
    NotCoordinator,
    /// This shard just became the leader of the group's offsets partition
    /// and is still loading its groups (COORDINATOR_LOAD_IN_PROGRESS on
    /// the wire: the client retries here).
    #[error("the group's offsets are still loading")]
    LoadInProgress,
    /// The hosting shard answered with something else (shown here).
    #[error("the coordinator shard did not answer: {0}")]
    NoAnswer(String),
}

impl GroupUnavailable {
    pub fn code(&self) -> ErrorCode {
        match self {
            GroupUnavailable::NotCoordinator => ErrorCode::NotCoordinator,
            GroupUnavailable::LoadInProgress => ErrorCode::CoordinatorLoadInProgress,
            _ => ErrorCode::CoordinatorNotAvailable,
        }
    }
}
