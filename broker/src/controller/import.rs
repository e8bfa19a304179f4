//! The metadata log's first records on a node that starts without one:
//! a data dir from before the cluster (its `topics.toml` topics, with
//! their ids, and its producer-id counter) and, on a one-node cluster,
//! `__consumer_offsets`, so a single `fjord start` serves groups at once,
//! as before. The first controller of the empty log proposes these right
//! after the cluster id (`ControllerHandle::start`'s `bootstrap`). Pure.

use fjord_schema::NodeId;

use super::records::MetadataRecord;
use crate::metadata::image::{MetadataImage, PartitionImage, TopicImage};

/// `image`'s topics as this node's (every replica here: a pre-cluster data
/// dir had one node, whatever id it called itself), plus the offsets topic
/// `offsets` if the image lacks it.
pub fn adopt(image: &MetadataImage, node: NodeId, offsets: Option<TopicImage>) -> MetadataImage {
    let mut adopted = MetadataImage::default();
    for topic in image.topics() {
        let mut mine = TopicImage::clone(topic);
        for partition in &mut mine.partitions {
            *partition = PartitionImage::single(node);
        }
        adopted = adopted.with_topic(mine);
    }
    if let Some(offsets) = offsets.filter(|t| image.get(&t.name).is_none()) {
        adopted = adopted.with_topic(offsets);
    }
    adopted
}

/// The records that fold into `image`'s topics, and the producer-id
/// counter `producer_ids_next` (ids below it were handed out before): the
/// image's own snapshot records (`MetadataImage::to_records`).
pub fn records(image: &MetadataImage, producer_ids_next: i64) -> Vec<MetadataRecord> {
    image.with_producer_id_next(producer_ids_next).to_records()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use fjord_schema::LeaderEpoch;

    use super::*;
    use crate::metadata::image::TopicId;
    use crate::topic::TopicConfig;

    fn topic(name: &str, partitions: usize, node: NodeId) -> TopicImage {
        TopicImage {
            id: TopicId::random(),
            name: name.to_owned(),
            config: TopicConfig::from_log_config(&fjord_storage::LogConfig::default()),
            created_ms: 7,
            overrides: Some(BTreeMap::from([(
                "retention.ms".to_owned(),
                "-1".to_owned(),
            )])),
            partitions: vec![PartitionImage::single(node); partitions],
        }
    }

    #[test]
    fn a_pre_cluster_data_dir_becomes_this_nodes_with_the_same_ids() {
        let legacy = MetadataImage::default().with_topic(topic("a", 2, NodeId(0)));
        let offsets = topic("__consumer_offsets", 3, NodeId(1));
        let adopted = adopt(&legacy, NodeId(1), Some(offsets.clone()));
        let a = adopted.get("a").unwrap();
        assert_eq!(a.id, legacy.get("a").unwrap().id);
        assert!(a.partitions.iter().all(|p| p.replicas == [NodeId(1)]
            && p.leader == Some(NodeId(1))
            && p.leader_epoch == LeaderEpoch(0)));
        assert_eq!(adopted.get("__consumer_offsets").unwrap().id, offsets.id);
        // An offsets topic the data dir has is kept, not replaced.
        let with_offsets = legacy.with_topic(topic("__consumer_offsets", 5, NodeId(0)));
        let kept = adopt(&with_offsets, NodeId(1), Some(offsets));
        assert_eq!(kept.get("__consumer_offsets").unwrap().partition_count(), 5);

        let records = records(&adopted, 2000);
        let topics = records
            .iter()
            .filter(|r| matches!(r, MetadataRecord::Topic { .. }))
            .count();
        let partitions = records
            .iter()
            .filter(|r| matches!(r, MetadataRecord::Partition { .. }))
            .count();
        assert_eq!((topics, partitions), (2, 5));
        let blocks: Vec<&MetadataRecord> = records
            .iter()
            .filter(|r| matches!(r, MetadataRecord::ProducerIdsBlock { .. }))
            .collect();
        assert_eq!(
            blocks,
            [&MetadataRecord::ProducerIdsBlock {
                node: NodeId(0),
                first: 0,
                size: 2000
            }]
        );
        assert!(!super::records(&MetadataImage::default(), 0)
            .iter()
            .any(|r| matches!(r, MetadataRecord::ProducerIdsBlock { .. })));
    }
}
