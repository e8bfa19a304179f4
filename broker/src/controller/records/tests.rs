//! The record codec: every record round-trips, alone and in batches, and
//! no input (random bytes, truncations, corrupted encodings) panics.

use proptest::prelude::*;

use super::*;
use crate::metadata::image::Endpoint;

pub(crate) fn arb_node() -> impl Strategy<Value = NodeId> {
    (0u32..8).prop_map(NodeId)
}

pub(crate) fn arb_nodes() -> impl Strategy<Value = Vec<NodeId>> {
    proptest::collection::vec(arb_node(), 0..5)
}

pub(crate) fn arb_topic_id() -> impl Strategy<Value = TopicId> {
    any::<[u8; 16]>().prop_map(TopicId)
}

pub(crate) fn arb_configs() -> impl Strategy<Value = BTreeMap<String, String>> {
    proptest::collection::btree_map("[a-z.]{1,20}", "[ -~é]{0,20}", 0..4)
}

fn arb_endpoint() -> impl Strategy<Value = Option<Endpoint>> {
    proptest::option::of(
        ("[a-z0-9.-]{0,30}", any::<u16>()).prop_map(|(host, port)| Endpoint { host, port }),
    )
}

pub(crate) fn arb_endpoints() -> impl Strategy<Value = BrokerEndpoints> {
    (arb_endpoint(), arb_endpoint(), arb_endpoint()).prop_map(|(native, kafka, cluster)| {
        BrokerEndpoints {
            native,
            kafka,
            cluster,
        }
    })
}

pub(crate) fn arb_record() -> impl Strategy<Value = MetadataRecord> {
    prop_oneof![
        (
            arb_node(),
            any::<u64>(),
            arb_endpoints(),
            any::<u16>(),
            proptest::option::of("[a-z0-9]{0,10}")
        )
            .prop_map(|(node, incarnation, endpoints, shards, rack)| {
                MetadataRecord::RegisterBroker {
                    node,
                    incarnation,
                    endpoints,
                    shards,
                    rack,
                }
            }),
        (arb_node(), any::<u64>())
            .prop_map(|(node, incarnation)| MetadataRecord::FenceBroker { node, incarnation }),
        (arb_node(), any::<u64>())
            .prop_map(|(node, incarnation)| MetadataRecord::UnfenceBroker { node, incarnation }),
        (
            arb_topic_id(),
            "[a-zA-Z0-9._-]{1,249}",
            any::<i64>(),
            arb_configs()
        )
            .prop_map(|(id, name, created_ms, overrides)| MetadataRecord::Topic {
                id,
                name,
                created_ms,
                overrides,
            }),
        (
            arb_topic_id(),
            any::<u32>(),
            arb_nodes(),
            arb_nodes(),
            proptest::option::of(arb_node()),
            any::<u32>(),
            any::<u32>()
        )
            .prop_map(|(topic, partition, replicas, isr, leader, epoch, pe)| {
                MetadataRecord::Partition {
                    topic,
                    partition,
                    replicas,
                    isr,
                    leader,
                    leader_epoch: LeaderEpoch(epoch),
                    partition_epoch: pe,
                }
            }),
        (
            arb_topic_id(),
            any::<u32>(),
            arb_nodes(),
            proptest::option::of(arb_node()),
            any::<u32>(),
            any::<u32>()
        )
            .prop_map(|(topic, partition, isr, leader, epoch, pe)| {
                MetadataRecord::PartitionChange {
                    topic,
                    partition,
                    isr,
                    leader,
                    leader_epoch: LeaderEpoch(epoch),
                    partition_epoch: pe,
                }
            }),
        arb_topic_id().prop_map(|id| MetadataRecord::RemoveTopic { id }),
        (arb_topic_id(), arb_configs())
            .prop_map(|(topic, overrides)| MetadataRecord::ConfigChange { topic, overrides }),
        any::<[u8; 16]>().prop_map(|id| MetadataRecord::ClusterId { id }),
        (arb_node(), any::<i64>(), any::<u32>())
            .prop_map(|(node, first, size)| MetadataRecord::ProducerIdsBlock { node, first, size }),
    ]
}

proptest! {
    #[test]
    fn every_record_round_trips(record in arb_record()) {
        prop_assert!(record.fits());
        let mut bytes = Vec::new();
        record.encode(&mut bytes);
        prop_assert_eq!(MetadataRecord::decode(&bytes), Ok(record.clone()));
        // Every strict prefix is refused (never a panic, never a record).
        for cut in 0..bytes.len() {
            prop_assert!(MetadataRecord::decode(&bytes[..cut]).is_err());
        }
        bytes.push(0);
        prop_assert_eq!(MetadataRecord::decode(&bytes), Err(DecodeError::Trailing(1)));
    }

    #[test]
    fn batches_round_trip(records in proptest::collection::vec(arb_record(), 0..8)) {
        let bytes = encode_batch(&records);
        prop_assert_eq!(decode_batch(&bytes), Ok(records));
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = MetadataRecord::decode(&bytes);
        let _ = decode_batch(&bytes);
    }

    #[test]
    fn corrupted_encodings_never_panic(
        records in proptest::collection::vec(arb_record(), 1..4),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = encode_batch(&records);
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        let _ = decode_batch(&bytes);
        let _ = MetadataRecord::decode(&bytes[1..]);
    }
}

#[test]
fn unknown_versions_and_tags_are_typed_errors() {
    let mut bytes = Vec::new();
    MetadataRecord::RemoveTopic {
        id: TopicId([7; 16]),
    }
    .encode(&mut bytes);
    bytes[0] = 2;
    assert_eq!(
        MetadataRecord::decode(&bytes),
        Err(DecodeError::UnknownVersion {
            found: 2,
            supported: RECORD_VERSION
        })
    );
    bytes[0] = RECORD_VERSION;
    bytes[1] = 200;
    assert_eq!(
        MetadataRecord::decode(&bytes),
        Err(DecodeError::UnknownTag {
            what: "record",
            tag: 200
        })
    );
    assert_eq!(
        decode_batch(&[9, 0, 0, 0, 0]),
        Err(DecodeError::UnknownVersion {
            found: 9,
            supported: RECORD_VERSION
        })
    );
}

#[test]
fn lengths_over_their_limits_are_refused_before_allocating() {
    // A batch claiming 4 billion records in a few bytes.
    let bytes = [RECORD_VERSION, 0xff, 0xff, 0xff, 0xff, TAG_REMOVE_TOPIC];
    assert!(matches!(
        decode_batch(&bytes),
        Err(DecodeError::TooLong { .. })
    ));
    // A topic name one byte over Kafka's limit.
    let long = MetadataRecord::Topic {
        id: TopicId([1; 16]),
        name: "x".repeat(TOPIC_NAME_LEN_MAX + 1),
        created_ms: 0,
        overrides: BTreeMap::new(),
    };
    assert!(!long.fits());
    let mut bytes = Vec::new();
    long.encode(&mut bytes);
    assert!(matches!(
        MetadataRecord::decode(&bytes),
        Err(DecodeError::TooLong {
            what: "topic name",
            ..
        })
    ));
}

#[test]
fn the_encoding_is_stable() {
    // A change of the format must bump RECORD_VERSION: this pins it.
    let mut bytes = Vec::new();
    MetadataRecord::ProducerIdsBlock {
        node: NodeId(2),
        first: 1000,
        size: 1000,
    }
    .encode(&mut bytes);
    assert_eq!(
        bytes,
        [1, 10, 2, 0, 0, 0, 0xe8, 3, 0, 0, 0, 0, 0, 0, 0xe8, 3, 0, 0]
    );
}
