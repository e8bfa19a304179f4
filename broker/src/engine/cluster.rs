//! What clients are told about the cluster, for both edges: the brokers
//! (from the catalog's metadata image), the active controller and the
//! metadata log position (from its quorum view), and where a partition's
//! leader and a group's coordinator are. Also the leadership check every
//! partition request passes ([`leader_check`]).
//!
//! Lives on: every shard, called per request on that shard's catalog
//! snapshot. Pure: no I/O.

use fjord_schema::{ErrorCode, NodeId, PartitionId, ShardId};

use crate::group::offsets_log::{partition_for, OFFSETS_TOPIC};
use crate::metadata::catalog::{Catalog, TopicMeta};
use crate::metadata::image::{BrokerImage, Endpoint, PartitionImage};

/// One broker as clients are told about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    pub node: NodeId,
    pub native: Option<Endpoint>,
    pub kafka: Option<Endpoint>,
    pub rack: Option<String>,
    pub fenced: bool,
}

impl ClusterNode {
    fn of(broker: &BrokerImage) -> ClusterNode {
        ClusterNode {
            node: broker.node,
            native: broker.endpoints.native.clone(),
            kafka: broker.endpoints.kafka.clone(),
            rack: broker.rack.clone(),
            fenced: broker.fenced,
        }
    }
}

/// The cluster as one Metadata answer shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// Every registered broker, fenced ones included, by node id.
    pub nodes: Vec<ClusterNode>,
    /// The active controller, if known.
    pub controller: Option<NodeId>,
    /// The metadata log index this node's image is at.
    pub applied_index: u64,
    /// The highest metadata log index this node knows committed.
    pub committed_index: u64,
}

impl ClusterView {
    /// The cluster as `catalog` shows it. A node serves clients only once
    /// registered and unfenced, so its own registration is in the image;
    /// a node fenced since (cut off from the controller) lists itself as
    /// fenced, as every other node does.
    pub fn of(catalog: &Catalog) -> ClusterView {
        let image = catalog.image();
        let quorum = catalog.quorum();
        ClusterView {
            nodes: image.brokers().map(ClusterNode::of).collect(),
            controller: quorum.controller,
            applied_index: quorum.applied_index,
            committed_index: quorum.committed_index,
        }
    }

    /// The brokers clients may connect to: the unfenced ones.
    pub fn live(&self) -> impl Iterator<Item = &ClusterNode> {
        self.nodes.iter().filter(|n| !n.fenced)
    }

    pub fn node(&self, node: NodeId) -> Option<&ClusterNode> {
        self.nodes.iter().find(|n| n.node == node)
    }

    /// Whether `node` is registered and fenced.
    pub fn is_fenced(&self, node: NodeId) -> bool {
        self.node(node).is_some_and(|n| n.fenced)
    }

    /// `partition`'s replicas not on a live broker (Kafka's offline
    /// replicas): on a fenced broker, or on one not registered (an
    /// assignment naming a node that has not joined, or left).
    pub fn offline_replicas(&self, partition: &PartitionImage) -> Vec<NodeId> {
        partition
            .replicas
            .iter()
            .copied()
            .filter(|n| !self.live().any(|live| live.node == *n))
            .collect()
    }

    /// The live node coordinating `group_id` in `catalog`
    /// (COORDINATOR_NOT_AVAILABLE while there is none, or it is fenced).
    pub fn coordinator(
        &self,
        catalog: &Catalog,
        group_id: &str,
    ) -> Result<&ClusterNode, ErrorCode> {
        let node = coordinator_node(catalog, group_id)?;
        self.live()
            .find(|n| n.node == node)
            .ok_or(ErrorCode::CoordinatorNotAvailable)
    }

    /// How many partitions of `catalog` each node leads, by node id.
    pub fn leader_counts(&self, catalog: &Catalog) -> Vec<(NodeId, usize)> {
        self.nodes
            .iter()
            .map(|n| {
                let led = catalog
                    .topics()
                    .flat_map(|t| &t.partitions)
                    .filter(|p| p.leader == Some(n.node))
                    .count();
                (n.node, led)
            })
            .collect()
    }
}

/// Why a partition request is not served by this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leadership {
    /// The topic does not exist.
    UnknownTopic,
    /// The topic has `partition_count` partitions, fewer than asked.
    OutOfRange { partition_count: u32 },
    /// Another node leads the partition (`Some`), or none does (`None`).
    NotLeader { leader: Option<NodeId> },
}

/// The local shard of `partition` of `topic` when `node` leads it: one
/// comparison with the image's leader on the catalog's topic, no
/// allocation.
pub fn leader_check(
    catalog: &Catalog,
    node: NodeId,
    topic: &str,
    partition: PartitionId,
) -> Result<ShardId, Leadership> {
    let meta = catalog.get(topic).ok_or(Leadership::UnknownTopic)?;
    leader_check_in(meta, node, partition)
}

/// [`leader_check`] on a topic already looked up.
pub fn leader_check_in(
    meta: &TopicMeta,
    node: NodeId,
    partition: PartitionId,
) -> Result<ShardId, Leadership> {
    let Some(image) = meta.partition(partition) else {
        return Err(Leadership::OutOfRange {
            partition_count: meta.topic.partition_count(),
        });
    };
    if image.leader != Some(node) {
        return Err(Leadership::NotLeader {
            leader: image.leader,
        });
    }
    // A partition this node leads has a local replica; a catalog that
    // says otherwise is mid-change: the client retries after a refresh.
    meta.shard_of(partition).ok_or(Leadership::NotLeader {
        leader: image.leader,
    })
}

/// The `__consumer_offsets` partition holding `group_id`, and its image.
fn offsets_partition<'c>(
    catalog: &'c Catalog,
    group_id: &str,
) -> Result<(&'c TopicMeta, PartitionId), ErrorCode> {
    let meta = catalog
        .get(OFFSETS_TOPIC)
        .ok_or(ErrorCode::CoordinatorNotAvailable)?;
    let count = meta.topic.partition_count();
    if count == 0 {
        return Err(ErrorCode::CoordinatorNotAvailable);
    }
    Ok((meta, PartitionId(partition_for(group_id, count))))
}

/// The node coordinating `group_id`: the leader of its offsets partition
/// (COORDINATOR_NOT_AVAILABLE while there is none).
pub fn coordinator_node(catalog: &Catalog, group_id: &str) -> Result<NodeId, ErrorCode> {
    let (meta, partition) = offsets_partition(catalog, group_id)?;
    meta.partition(partition)
        .and_then(|p| p.leader)
        .ok_or(ErrorCode::CoordinatorNotAvailable)
}

/// The local shard coordinating `group_id`, when `node` is its
/// coordinator: NOT_COORDINATOR when another node is (the client looks it
/// up again), COORDINATOR_NOT_AVAILABLE when none is.
pub fn local_coordinator(
    catalog: &Catalog,
    node: NodeId,
    group_id: &str,
) -> Result<ShardId, ErrorCode> {
    let (meta, partition) = offsets_partition(catalog, group_id)?;
    match leader_check_in(meta, node, partition) {
        Ok(shard) => Ok(shard),
        Err(Leadership::NotLeader { leader: Some(_) }) => Err(ErrorCode::NotCoordinator),
        Err(_) => Err(ErrorCode::CoordinatorNotAvailable),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use fjord_schema::LeaderEpoch;

    use super::*;
    use crate::metadata::catalog::QuorumView;
    use crate::metadata::image::{BrokerEndpoints, MetadataImage, TopicId, TopicImage};
    use crate::metadata::shard_table::ShardTable;
    use crate::topic::TopicConfig;

    pub(crate) fn endpoint(host: &str, port: u16) -> Endpoint {
        Endpoint {
            host: host.to_owned(),
            port,
        }
    }

    fn broker(node: u32, fenced: bool) -> BrokerImage {
        BrokerImage {
            node: NodeId(node),
            incarnation: 7,
            endpoints: BrokerEndpoints {
                native: Some(endpoint(&format!("n{node}"), 9000 + node as u16)),
                kafka: Some(endpoint(&format!("n{node}"), 9100 + node as u16)),
                cluster: Some(endpoint(&format!("n{node}"), 9200 + node as u16)),
            },
            shards: 2,
            rack: (node == 2).then(|| "r2".to_owned()),
            fenced,
        }
    }

    fn partition(leader: Option<u32>, replicas: &[u32], epoch: u32) -> PartitionImage {
        PartitionImage {
            replicas: replicas.iter().map(|n| NodeId(*n)).collect(),
            isr: replicas.iter().map(|n| NodeId(*n)).collect(),
            leader: leader.map(NodeId),
            leader_epoch: LeaderEpoch(epoch),
            partition_epoch: epoch,
        }
    }

    fn topic(name: &str, partitions: Vec<PartitionImage>) -> TopicImage {
        TopicImage {
            id: TopicId::random(),
            name: name.to_owned(),
            config: TopicConfig::from_log_config(&fjord_storage::LogConfig::default()),
            created_ms: 1,
            overrides: Some(BTreeMap::new()),
            partitions,
        }
    }

    /// Node 1 (this node), 2 and 3 (fenced). Topic `t`: partition 0 led
    /// by 1, 1 by 2, 2 leaderless (its replica is on fenced 3), 3 by 1
    /// with a replica on 3. `__consumer_offsets`: 2 partitions, 0 led by
    /// 1, 1 by 2.
    /// Three brokers (node 3 fenced) and the node the tests run as (1).
    pub(crate) fn three_nodes() -> (Catalog, NodeId) {
        let image = MetadataImage::default()
            .with_broker(broker(1, false))
            .with_broker(broker(2, false))
            .with_broker(broker(3, true))
            .with_topic(topic(
                "t",
                vec![
                    partition(Some(1), &[1], 4),
                    partition(Some(2), &[2], 5),
                    partition(None, &[3], 6),
                    partition(Some(1), &[1, 3], 7),
                ],
            ))
            .with_topic(topic(
                OFFSETS_TOPIC,
                vec![partition(Some(1), &[1], 0), partition(Some(2), &[2], 0)],
            ));
        let mut table = ShardTable::default();
        table.reconcile(&image, 2);
        let catalog = Catalog::new(Arc::new(image), &table).with_quorum(QuorumView {
            controller: Some(NodeId(2)),
            applied_index: 41,
            committed_index: 42,
        });
        (catalog, NodeId(1))
    }

    /// A group id whose offsets partition (of 2) is `want`.
    pub(crate) fn group_on(want: u32) -> String {
        (0..)
            .map(|i| format!("g{i}"))
            .find(|g| partition_for(g, 2) == want)
            .expect("some group hashes there")
    }

    #[test]
    fn the_view_lists_every_broker_with_the_quorums_controller() {
        let (catalog, _) = three_nodes();
        let view = ClusterView::of(&catalog);
        let ids: Vec<u32> = view.nodes.iter().map(|n| n.node.get()).collect();
        assert_eq!(ids, [1, 2, 3]);
        let live: Vec<u32> = view.live().map(|n| n.node.get()).collect();
        assert_eq!(live, [1, 2]);
        assert_eq!(view.controller, Some(NodeId(2)));
        assert_eq!((view.applied_index, view.committed_index), (41, 42));
        assert_eq!(view.node(NodeId(2)).unwrap().rack.as_deref(), Some("r2"));
        let t = catalog.get("t").unwrap();
        assert_eq!(view.offline_replicas(&t.partitions[3]), [NodeId(3)]);
        assert!(view.offline_replicas(&t.partitions[0]).is_empty());
        // A replica on a node that never registered is offline too.
        let unknown = partition(Some(1), &[1, 9, 3, 2], 1);
        assert_eq!(view.offline_replicas(&unknown), [NodeId(9), NodeId(3)]);
        assert_eq!(
            view.leader_counts(&catalog),
            [(NodeId(1), 3), (NodeId(2), 2), (NodeId(3), 0)]
        );
    }

    #[test]
    fn a_fenced_node_is_not_offered_to_clients_even_by_itself() {
        let image = MetadataImage::default()
            .with_broker(broker(1, true))
            .with_broker(broker(2, false));
        let catalog = Catalog::new(Arc::new(image), &ShardTable::default());
        let view = ClusterView::of(&catalog);
        let ids: Vec<u32> = view.nodes.iter().map(|n| n.node.get()).collect();
        assert_eq!(ids, [1, 2]);
        let live: Vec<u32> = view.live().map(|n| n.node.get()).collect();
        assert_eq!(live, [2]);
        assert!(view.is_fenced(NodeId(1)));
        assert_eq!(view.controller, None, "no controller known, none invented");
    }

    #[test]
    fn only_the_leader_serves_a_partition() {
        let (catalog, this) = three_nodes();
        let check = |topic: &str, p: u32| leader_check(&catalog, this, topic, PartitionId(p));
        assert!(check("t", 0).is_ok());
        assert!(check("t", 3).is_ok());
        assert_eq!(
            check("t", 1),
            Err(Leadership::NotLeader {
                leader: Some(NodeId(2))
            })
        );
        assert_eq!(check("t", 2), Err(Leadership::NotLeader { leader: None }));
        assert_eq!(
            check("t", 4),
            Err(Leadership::OutOfRange { partition_count: 4 })
        );
        assert_eq!(check("u", 0), Err(Leadership::UnknownTopic));
        // Node 2 is served where node 1 is not.
        assert!(leader_check(&catalog, NodeId(2), "t", PartitionId(1)).is_ok());
    }

    #[test]
    fn a_group_is_coordinated_by_its_offsets_partitions_leader() {
        let (catalog, this) = three_nodes();
        let here = group_on(0);
        let there = group_on(1);
        assert_eq!(coordinator_node(&catalog, &here), Ok(NodeId(1)));
        assert_eq!(coordinator_node(&catalog, &there), Ok(NodeId(2)));
        assert!(local_coordinator(&catalog, this, &here).is_ok());
        assert_eq!(
            local_coordinator(&catalog, this, &there),
            Err(ErrorCode::NotCoordinator)
        );
        let empty = Catalog::default();
        assert_eq!(
            coordinator_node(&empty, &here),
            Err(ErrorCode::CoordinatorNotAvailable)
        );
        assert_eq!(
            local_coordinator(&empty, this, &here),
            Err(ErrorCode::CoordinatorNotAvailable)
        );
    }
}
