//! Consumer-group requests: each becomes a [`GroupOp`] run on the shard
//! that owns the group's `__consumer_offsets` partition (its
//! [`crate::group::host::GroupHost`]), locally or over the mesh;
//! ListGroups asks every hosting shard. Group placement is Kafka's
//! (`partition_for`), so both edges find the same coordinator.

use fjord_schema::{ErrorCode, PartitionId, ShardId};

use super::Engine;
use super::{route, RouteError};
use crate::group::coordinator::{DescribedGroup, GroupState, ListedGroup};
use crate::group::offsets_log::{partition_for, OFFSETS_TOPIC};
use crate::group::ops::GroupUnavailable;
use crate::group::ops::{GroupOp, GroupReply};
use crate::ops::{Op, OpResult};

impl Engine {
    /// The shard hosting `group_id`'s coordinator.
    pub fn coordinator_shard(&self, group_id: &str) -> Result<ShardId, ErrorCode> {
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

    /// Runs `op` for `group_id` on its coordinator's shard (both edges'
    /// group apis end here).
    pub async fn to_coordinator(&self, group_id: &str, op: GroupOp) -> GroupReply {
        match self.coordinator_shard(group_id) {
            Ok(shard) => self.run_group(shard, op).await,
            Err(_) => GroupReply::Unavailable(GroupUnavailable::NoOffsetsTopic),
        }
    }

    /// Whether `partition` of `topic` exists, for an offset commit (as
    /// Kafka: a partition the broker does not have is refused, the rest
    /// are committed).
    pub fn partition_exists(&self, topic: &str, partition: PartitionId) -> Result<(), RouteError> {
        route(&self.service.catalog(), topic, partition).map(|_| ())
    }

    /// The groups of every shard that hosts an offsets partition, by id.
    pub async fn listed_groups(
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

    /// Each group as its coordinator describes it; a group whose
    /// coordinator does not answer is Dead.
    pub async fn describe_groups(&self, ids: Vec<String>) -> Vec<DescribedGroup> {
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
        described
    }
}
