//! The fold: records change the image as documented, bad records are
//! ignored, and an image's snapshot folds back to an equal image.

use std::collections::BTreeMap;
use std::sync::Arc;

use fjord_schema::{LeaderEpoch, NodeId};
use proptest::prelude::*;

use super::*;
use crate::metadata::image::{BrokerEndpoints, TopicId};

fn defaults() -> TopicConfig {
    TopicConfig::from_log_config(&fjord_storage::LogConfig::default())
}

fn fold(records: &[MetadataRecord]) -> MetadataImage {
    let defaults = defaults();
    records.iter().fold(MetadataImage::default(), |image, r| {
        image.apply(r, &defaults)
    })
}

fn topic(id: u8, name: &str, overrides: &[(&str, &str)]) -> MetadataRecord {
    MetadataRecord::Topic {
        id: TopicId([id; 16]),
        name: name.to_owned(),
        created_ms: 5,
        overrides: overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn partition(id: u8, partition: u32, replicas: &[u32]) -> MetadataRecord {
    let replicas: Vec<NodeId> = replicas.iter().copied().map(NodeId).collect();
    MetadataRecord::Partition {
        topic: TopicId([id; 16]),
        partition,
        isr: replicas.clone(),
        leader: replicas.first().copied(),
        replicas,
        leader_epoch: LeaderEpoch(0),
        partition_epoch: 0,
    }
}

fn register(node: u32, incarnation: u64) -> MetadataRecord {
    MetadataRecord::RegisterBroker {
        node: NodeId(node),
        incarnation,
        endpoints: BrokerEndpoints::default(),
        shards: 2,
        rack: None,
    }
}

#[test]
fn records_build_topics_brokers_and_cursors() {
    let image = fold(&[
        MetadataRecord::ClusterId { id: [9; 16] },
        register(1, 10),
        MetadataRecord::UnfenceBroker {
            node: NodeId(1),
            incarnation: 10,
        },
        register(2, 20),
        topic(1, "a", &[("retention.ms", "1000")]),
        partition(1, 0, &[1, 2]),
        partition(1, 1, &[2, 1]),
        MetadataRecord::ProducerIdsBlock {
            node: NodeId(1),
            first: 0,
            size: 1000,
        },
    ]);
    assert_eq!(image.cluster_id(), Some([9; 16]));
    assert!(!image.broker(NodeId(1)).unwrap().fenced);
    assert!(image.broker(NodeId(2)).unwrap().fenced);
    assert_eq!(image.producer_id_next(), 1000);
    let a = image.get("a").unwrap();
    assert_eq!(a.config.retention_ms, Some(1000));
    assert_eq!(a.config.segment_bytes, defaults().segment_bytes);
    assert_eq!(a.partition_count(), 2);
    assert_eq!(a.partitions[1].leader, Some(NodeId(2)));

    let changed = image.apply(
        &MetadataRecord::PartitionChange {
            topic: TopicId([1; 16]),
            partition: 1,
            isr: vec![NodeId(2), NodeId(1)],
            leader: None,
            leader_epoch: LeaderEpoch(1),
            partition_epoch: 1,
        },
        &defaults(),
    );
    let p = &changed.get("a").unwrap().partitions[1];
    assert_eq!(
        (p.leader, p.leader_epoch, p.partition_epoch),
        (None, LeaderEpoch(1), 1)
    );
    assert_eq!(
        image.get("a").unwrap().partitions[1].leader,
        Some(NodeId(2)),
        "the old image is unchanged"
    );

    let altered = changed.apply(
        &MetadataRecord::ConfigChange {
            topic: TopicId([1; 16]),
            overrides: BTreeMap::new(),
        },
        &defaults(),
    );
    assert_eq!(altered.get("a").unwrap().config, defaults());
    assert_eq!(altered.get("a").unwrap().overrides, Some(BTreeMap::new()));
    let removed = altered.apply(
        &MetadataRecord::RemoveTopic {
            id: TopicId([1; 16]),
        },
        &defaults(),
    );
    assert!(removed.get("a").is_none());
}

#[test]
fn records_naming_unknown_things_are_ignored() {
    let image = fold(&[register(1, 10), topic(1, "a", &[]), partition(1, 0, &[1])]);
    let defaults = defaults();
    for record in [
        partition(2, 0, &[1]),
        partition(1, 5, &[1]),
        MetadataRecord::PartitionChange {
            topic: TopicId([1; 16]),
            partition: 3,
            isr: vec![],
            leader: None,
            leader_epoch: LeaderEpoch(1),
            partition_epoch: 1,
        },
        MetadataRecord::RemoveTopic {
            id: TopicId([7; 16]),
        },
        MetadataRecord::ConfigChange {
            topic: TopicId([7; 16]),
            overrides: BTreeMap::new(),
        },
        MetadataRecord::UnfenceBroker {
            node: NodeId(1),
            incarnation: 9,
        },
        MetadataRecord::FenceBroker {
            node: NodeId(3),
            incarnation: 1,
        },
        topic(1, "b", &[]),
        topic(2, "a", &[]),
    ] {
        assert_eq!(image.apply(&record, &defaults), image, "{record:?}");
    }
    // A config this node refuses falls back to the default for that key.
    let odd = fold(&[topic(
        1,
        "a",
        &[("retention.ms", "soon"), ("segment.ms", "5000")],
    )]);
    let a = odd.get("a").unwrap();
    assert_eq!(a.config.retention_ms, defaults.retention_ms);
    assert_eq!(a.config.segment_ms, Some(5000));
}

#[test]
fn untouched_topics_stay_shared() {
    let image = fold(&[
        topic(1, "a", &[]),
        partition(1, 0, &[1]),
        topic(2, "b", &[]),
    ]);
    let next = image.apply(&partition(2, 0, &[1]), &defaults());
    assert!(Arc::ptr_eq(image.get("a").unwrap(), next.get("a").unwrap()));
    assert!(!Arc::ptr_eq(
        image.get("b").unwrap(),
        next.get("b").unwrap()
    ));
}

fn arb_record() -> impl Strategy<Value = MetadataRecord> {
    let id = (1u8..4).prop_map(|i| TopicId([i; 16]));
    let node = (1u32..4).prop_map(NodeId);
    let nodes = proptest::collection::vec(node.clone(), 0..4);
    let overrides = proptest::collection::btree_map(
        prop::sample::select(vec!["retention.ms", "segment.ms", "bogus.key"])
            .prop_map(String::from),
        prop::sample::select(vec!["1000", "-1", "x"]).prop_map(String::from),
        0..3,
    );
    prop_oneof![
        (node.clone(), 0u64..3).prop_map(|(n, i)| register(n.get(), i)),
        (node.clone(), 0u64..3)
            .prop_map(|(node, incarnation)| MetadataRecord::FenceBroker { node, incarnation }),
        (node.clone(), 0u64..3)
            .prop_map(|(node, incarnation)| MetadataRecord::UnfenceBroker { node, incarnation }),
        (
            id.clone(),
            prop::sample::select(vec!["a", "b", "c"]),
            overrides.clone()
        )
            .prop_map(|(id, name, overrides)| MetadataRecord::Topic {
                id,
                name: name.to_owned(),
                created_ms: 1,
                overrides,
            }),
        (
            id.clone(),
            0u32..3,
            nodes.clone(),
            nodes.clone(),
            proptest::option::of(node.clone()),
            any::<u32>()
        )
            .prop_map(|(topic, partition, replicas, isr, leader, e)| {
                MetadataRecord::Partition {
                    topic,
                    partition,
                    replicas,
                    isr,
                    leader,
                    leader_epoch: LeaderEpoch(e),
                    partition_epoch: e / 2,
                }
            }),
        (
            id.clone(),
            0u32..3,
            nodes,
            proptest::option::of(node.clone()),
            any::<u32>()
        )
            .prop_map(|(topic, partition, isr, leader, e)| {
                MetadataRecord::PartitionChange {
                    topic,
                    partition,
                    isr,
                    leader,
                    leader_epoch: LeaderEpoch(e),
                    partition_epoch: e / 3,
                }
            }),
        id.clone().prop_map(|id| MetadataRecord::RemoveTopic { id }),
        (id, overrides)
            .prop_map(|(topic, overrides)| MetadataRecord::ConfigChange { topic, overrides }),
        any::<[u8; 16]>().prop_map(|id| MetadataRecord::ClusterId { id }),
        (node, 0i64..1 << 40, any::<u32>())
            .prop_map(|(node, first, size)| MetadataRecord::ProducerIdsBlock { node, first, size }),
    ]
}

proptest! {
    #[test]
    fn a_snapshot_folds_back_to_an_equal_image(
        records in proptest::collection::vec(arb_record(), 0..40),
    ) {
        let image = fold(&records);
        prop_assert_eq!(&fold(&image.to_records()), &image);
        let bytes = encode_snapshot(&image);
        prop_assert_eq!(&decode_snapshot(&bytes, &defaults()), &Ok(image));
    }

    #[test]
    fn any_record_sequence_folds_without_panicking(
        records in proptest::collection::vec(super::super::records::tests::arb_record(), 0..30),
    ) {
        let _ = fold(&records);
    }

    #[test]
    fn snapshot_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_snapshot(&bytes, &defaults());
    }
}
