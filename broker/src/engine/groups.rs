//! Consumer-group requests: each becomes a [`GroupOp`] run on the shard
//! that owns the group's `__consumer_offsets` partition (its
//! [`crate::group::host::GroupHost`]), locally or over the mesh;
//! ListGroups asks every hosting shard. Group placement is Kafka's
//! (`partition_for`), so both edges find the same coordinator; a group
//! whose offsets partition another node leads is NOT_COORDINATOR here
//! (see [`super::cluster::local_coordinator`]).

use fjord_schema::{ErrorCode, PartitionId, ShardId};

use super::cluster::{leader_check_in, local_coordinator, ClusterNode};
use super::Engine;
use super::{route, RouteError};
use crate::group::coordinator::{DescribedGroup, GroupState, ListedGroup};
use crate::group::offsets_log::OFFSETS_TOPIC;
use crate::group::ops::GroupUnavailable;
use crate::group::ops::{GroupOp, GroupReply};
use crate::ops::{Op, OpResult};

impl Engine {
    /// The shard hosting `group_id`'s coordinator, when this node is it
    /// (leads the group's offsets partition): NOT_COORDINATOR when another
    /// node is, COORDINATOR_NOT_AVAILABLE when none is.
    pub fn coordinator_shard(&self, group_id: &str) -> Result<ShardId, ErrorCode> {
        local_coordinator(&self.service.catalog(), self.broker.node_id, group_id)
    }

    /// The node coordinating `group_id` and its endpoints (FindCoordinator).
    pub fn coordinator_node(&self, group_id: &str) -> Result<ClusterNode, ErrorCode> {
        let catalog = self.service.catalog();
        self.cluster_view(&catalog)
            .coordinator(&catalog, group_id)
            .cloned()
    }

    async fn run_group(&self, shard: ShardId, op: GroupOp) -> GroupReply {
        match self.service.execute(shard, Op::Group(op)).await {
            OpResult::Group(reply) => reply,
            other => GroupReply::Unavailable(GroupUnavailable::NoAnswer(format!("{other:?}"))),
        }
    }

    /// Runs `op` for `group_id` on its coordinator's shard (both edges'
    /// group apis end here).
    pub async fn to_coordinator(&self, group_id: &str, op: GroupOp) -> GroupReply {
        match self.coordinator_shard(group_id) {
            Ok(shard) => self.run_group(shard, op).await,
            Err(ErrorCode::NotCoordinator) => {
                GroupReply::Unavailable(GroupUnavailable::NotCoordinator)
            }
            Err(_) => GroupReply::Unavailable(GroupUnavailable::NoOffsetsTopic),
        }
    }

    /// Whether `partition` of `topic` exists, for an offset commit (as
    /// Kafka: a partition the cluster does not have is refused, the rest
    /// are committed, whichever node leads them).
    pub fn partition_exists(&self, topic: &str, partition: PartitionId) -> Result<(), RouteError> {
        match route(
            &self.service.catalog(),
            self.broker.node_id,
            topic,
            partition,
        ) {
            Ok(_) | Err(RouteError::NotLeader { .. }) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// The groups of every shard that hosts an offsets partition, by id.
    pub async fn listed_groups(
        &self,
        states: Vec<GroupState>,
    ) -> Result<Vec<ListedGroup>, (ErrorCode, String)> {
        // The shards of the offsets partitions this node leads: the
        // coordinators it hosts.
        let catalog = self.service.catalog();
        let node = self.broker.node_id;
        let mut shards: Vec<u16> = catalog
            .get(OFFSETS_TOPIC)
            .map(|m| {
                (0..m.topic.partition_count())
                    .filter_map(|p| leader_check_in(m, node, PartitionId(p)).ok())
                    .map(|s| s.0)
                    .collect()
            })
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

    /// Each group as its coordinator describes it, with the error of its
    /// lookup: a group whose coordinator does not answer (or is another
    /// node: NOT_COORDINATOR) is Dead.
    pub async fn describe_groups(&self, ids: Vec<String>) -> Vec<(DescribedGroup, ErrorCode)> {
        let mut described = Vec::with_capacity(ids.len());
        for id in ids {
            match self
                .to_coordinator(&id, GroupOp::Describe(id.clone()))
                .await
            {
                GroupReply::Describe(group) => described.push((group, ErrorCode::None)),
                reply => {
                    let error = match reply {
                        GroupReply::Unavailable(e) => e.code(),
                        _ => ErrorCode::UnknownServerError,
                    };
                    let dead = DescribedGroup {
                        group_id: id,
                        state: GroupState::Dead,
                        protocol_type: String::new(),
                        protocol_name: String::new(),
                        members: Vec::new(),
                    };
                    described.push((dead, error));
                }
            }
        }
        described
    }
}
