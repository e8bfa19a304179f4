//! Which nodes hold the replicas of new partitions (CLUSTER.md §2): a
//! cluster fact, decided by the controller (which shard of a node holds a
//! replica is that node's choice, [`crate::metadata::shard_table`]).
//!
//! Replicas go round-robin over the live brokers in node-id order; each
//! new partition's leader (its first replica, the preferred leader) is
//! the live broker leading the fewest partitions so far (counted from the
//! image, plus those placed by this call), ties going to the next broker
//! in ring order after the previous leader. On a balanced cluster that is
//! plain round-robin; on an unbalanced one the least-loaded nodes fill
//! first. The followers are the brokers after the leader in ring order.
//! Deterministic for a given image and input.
//!
//! Pure: no I/O.

use std::collections::BTreeMap;

use fjord_schema::NodeId;

use crate::metadata::image::MetadataImage;

/// Why replicas cannot be placed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("Replication factor must be larger than 0, or -1 to use the default value.")]
    ZeroReplicationFactor,
    #[error(
        "Unable to replicate the partition {factor} time(s): The target replication factor of \
         {factor} cannot be reached because only {live} broker(s) are registered and unfenced."
    )]
    NotEnoughBrokers { factor: u16, live: usize },
}

/// How many partitions each node leads in `image`.
pub fn leader_counts(image: &MetadataImage) -> BTreeMap<NodeId, u64> {
    let mut counts = BTreeMap::new();
    for topic in image.topics() {
        for partition in &topic.partitions {
            if let Some(leader) = partition.leader {
                *counts.entry(leader).or_insert(0) += 1;
            }
        }
    }
    counts
}

/// The replica lists of `partitions` new partitions with `factor`
/// replicas each, over the `live` brokers (any order; duplicates
/// ignored), given the leaders `image` counts already.
pub fn place(
    image: &MetadataImage,
    live: &[NodeId],
    partitions: u32,
    factor: u16,
) -> Result<Vec<Vec<NodeId>>, PlacementError> {
    let mut ring: Vec<NodeId> = live.to_vec();
    ring.sort_unstable();
    ring.dedup();
    if factor == 0 {
        return Err(PlacementError::ZeroReplicationFactor);
    }
    if usize::from(factor) > ring.len() {
        return Err(PlacementError::NotEnoughBrokers {
            factor,
            live: ring.len(),
        });
    }
    let existing = leader_counts(image);
    let mut led: Vec<u64> = ring
        .iter()
        .map(|n| existing.get(n).copied().unwrap_or(0))
        .collect();
    let n = ring.len();
    // Where the ring order starts for the next tie: after the last leader.
    let mut cursor = 0;
    let mut placed = Vec::with_capacity(partitions as usize);
    for _ in 0..partitions {
        let leader = (0..n)
            .map(|step| (cursor + step) % n)
            .min_by_key(|&i| led[i])
            .unwrap_or(0);
        led[leader] += 1;
        cursor = (leader + 1) % n;
        placed.push(
            (0..usize::from(factor))
                .map(|j| ring[(leader + j) % n])
                .collect(),
        );
    }
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::image::{PartitionImage, TopicId, TopicImage};
    use crate::topic::TopicConfig;

    fn nodes(ids: &[u32]) -> Vec<NodeId> {
        ids.iter().copied().map(NodeId).collect()
    }

    fn leaders(placed: &[Vec<NodeId>]) -> BTreeMap<NodeId, usize> {
        let mut counts = BTreeMap::new();
        for replicas in placed {
            *counts.entry(replicas[0]).or_insert(0) += 1;
        }
        counts
    }

    fn with_placed(image: &MetadataImage, name: &str, placed: &[Vec<NodeId>]) -> MetadataImage {
        let config = TopicConfig::from_log_config(&fjord_storage::LogConfig::default());
        image.with_topic(TopicImage {
            id: TopicId([name.len() as u8; 16]),
            name: name.to_owned(),
            config,
            created_ms: 0,
            overrides: Some(BTreeMap::new()),
            partitions: placed
                .iter()
                .map(|r| PartitionImage {
                    replicas: r.clone(),
                    isr: r.clone(),
                    leader: Some(r[0]),
                    leader_epoch: Default::default(),
                    partition_epoch: 0,
                })
                .collect(),
        })
    }

    #[test]
    fn single_replicas_spread_evenly() {
        let image = MetadataImage::default();
        let placed = place(&image, &nodes(&[3, 1, 2]), 12, 1).unwrap();
        assert_eq!(placed.len(), 12);
        assert!(placed.iter().all(|r| r.len() == 1));
        assert_eq!(
            leaders(&placed),
            BTreeMap::from([(NodeId(1), 4), (NodeId(2), 4), (NodeId(3), 4)])
        );
        // Round-robin in node-id order.
        assert_eq!(
            placed[..4],
            [nodes(&[1]), nodes(&[2]), nodes(&[3]), nodes(&[1])]
        );
    }

    #[test]
    fn full_replication_puts_every_node_in_every_set_and_spreads_leaders() {
        let placed = place(&MetadataImage::default(), &nodes(&[1, 2, 3]), 12, 3).unwrap();
        for replicas in &placed {
            let mut sorted = replicas.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, nodes(&[1, 2, 3]));
        }
        assert_eq!(
            leaders(&placed),
            BTreeMap::from([(NodeId(1), 4), (NodeId(2), 4), (NodeId(3), 4)])
        );
        assert_eq!(placed[0], nodes(&[1, 2, 3]));
        assert_eq!(placed[1], nodes(&[2, 3, 1]));
    }

    #[test]
    fn an_unbalanced_cluster_fills_the_least_loaded_nodes_first() {
        // Nodes 1 and 2 lead 3 partitions each; node 3 just joined.
        let image = with_placed(
            &MetadataImage::default(),
            "old",
            &[
                nodes(&[1]),
                nodes(&[2]),
                nodes(&[1]),
                nodes(&[2]),
                nodes(&[1]),
                nodes(&[2]),
            ],
        );
        let placed = place(&image, &nodes(&[1, 2, 3]), 6, 1).unwrap();
        assert_eq!(
            placed,
            [
                nodes(&[3]),
                nodes(&[3]),
                nodes(&[3]),
                nodes(&[1]),
                nodes(&[2]),
                nodes(&[3])
            ]
        );
        let image = with_placed(&image, "new", &placed);
        assert_eq!(
            leader_counts(&image),
            BTreeMap::from([(NodeId(1), 4), (NodeId(2), 4), (NodeId(3), 4)])
        );
        // Deterministic.
        assert_eq!(
            place(&image, &nodes(&[2, 3, 1]), 5, 2),
            place(&image, &nodes(&[1, 2, 3]), 5, 2)
        );
    }

    #[test]
    fn a_factor_over_the_live_brokers_or_zero_is_refused() {
        let image = MetadataImage::default();
        let error = place(&image, &nodes(&[1, 2]), 1, 3).unwrap_err();
        assert_eq!(
            error,
            PlacementError::NotEnoughBrokers { factor: 3, live: 2 }
        );
        assert!(error.to_string().contains("only 2 broker(s)"), "{error}");
        assert_eq!(
            place(&image, &[], 1, 1).unwrap_err(),
            PlacementError::NotEnoughBrokers { factor: 1, live: 0 }
        );
        assert_eq!(
            place(&image, &nodes(&[1]), 1, 0),
            Err(PlacementError::ZeroReplicationFactor)
        );
        // Duplicates in `live` count once.
        assert!(place(&image, &nodes(&[1, 1]), 1, 2).is_err());
    }
}
