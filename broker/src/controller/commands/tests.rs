//! The command codec: every command, reply and answer round-trips, and
//! no input panics.

use proptest::prelude::*;

use super::*;
use crate::controller::records::tests::{
    arb_configs, arb_endpoints, arb_node, arb_nodes, arb_topic_id,
};

fn arb_spec() -> impl Strategy<Value = CreateTopicSpec> {
    (
        "[a-z._-]{0,30}",
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u16>()),
        proptest::option::of(proptest::collection::vec(arb_nodes(), 0..4)),
        arb_configs(),
        any::<bool>(),
    )
        .prop_map(
            |(name, partitions, replication_factor, assignments, configs, validate_only)| {
                CreateTopicSpec {
                    name,
                    partitions,
                    replication_factor,
                    assignments,
                    configs,
                    validate_only,
                }
            },
        )
}

fn arb_command() -> impl Strategy<Value = ControllerCommand> {
    prop_oneof![
        (
            arb_node(),
            any::<u64>(),
            arb_endpoints(),
            any::<u16>(),
            proptest::option::of("[a-z]{0,5}")
        )
            .prop_map(|(node, incarnation, endpoints, shards, rack)| {
                ControllerCommand::RegisterBroker {
                    node,
                    incarnation,
                    endpoints,
                    shards,
                    rack,
                }
            }),
        (arb_node(), any::<u64>(), any::<bool>(), any::<bool>()).prop_map(
            |(node, incarnation, caught_up, shutting_down)| ControllerCommand::Heartbeat {
                node,
                incarnation,
                caught_up,
                shutting_down,
            }
        ),
        proptest::collection::vec(arb_spec(), 0..4).prop_map(ControllerCommand::CreateTopics),
        proptest::collection::vec("[a-z]{0,10}", 0..4).prop_map(ControllerCommand::DeleteTopics),
        proptest::collection::vec(("[a-z]{0,10}", any::<u32>()), 0..4)
            .prop_map(ControllerCommand::CreatePartitions),
        proptest::collection::vec(("[a-z]{0,10}", any::<u32>()), 0..4)
            .prop_map(ControllerCommand::ValidatePartitions),
        proptest::collection::vec(
            ("[a-z]{0,10}", arb_configs(), any::<bool>()).prop_map(
                |(name, overrides, validate_only)| AlterTopicConfigs {
                    name,
                    overrides,
                    validate_only,
                }
            ),
            0..4
        )
        .prop_map(ControllerCommand::AlterConfigs),
        arb_node().prop_map(|node| ControllerCommand::AllocateProducerIds { node }),
        (
            arb_node(),
            arb_topic_id(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            arb_nodes()
        )
            .prop_map(
                |(node, topic, partition, leader_epoch, partition_epoch, new_isr)| {
                    ControllerCommand::AlterPartition {
                        node,
                        topic,
                        partition,
                        leader_epoch: LeaderEpoch(leader_epoch),
                        partition_epoch,
                        new_isr,
                    }
                }
            ),
        (
            proptest::option::of(proptest::collection::vec(
                (arb_topic_id(), any::<u32>()),
                0..4
            )),
            any::<bool>()
        )
            .prop_map(|(partitions, preferred)| ControllerCommand::ElectLeaders {
                partitions,
                preferred
            }),
    ]
}

fn arb_code() -> impl Strategy<Value = ErrorCode> {
    prop::sample::select(vec![
        ErrorCode::None,
        ErrorCode::FencedLeaderEpoch,
        ErrorCode::InvalidUpdateVersion,
        ErrorCode::IneligibleReplica,
        ErrorCode::ElectionNotNeeded,
        ErrorCode::PreferredLeaderNotAvailable,
        ErrorCode::EligibleLeadersNotAvailable,
        ErrorCode::NotController,
    ])
}

fn arb_reply() -> impl Strategy<Value = ControllerReply> {
    prop_oneof![
        any::<u64>().prop_map(|index| ControllerReply::Registered { index }),
        (any::<bool>(), any::<bool>()).prop_map(|(fenced, shutdown_ready)| {
            ControllerReply::Heartbeat {
                fenced,
                shutdown_ready,
            }
        }),
        proptest::collection::vec(
            (
                "[a-z]{0,10}",
                prop::sample::select(vec![
                    ErrorCode::None,
                    ErrorCode::TopicAlreadyExists,
                    ErrorCode::InvalidReplicationFactor
                ]),
                proptest::option::of("[ -~]{0,30}"),
                proptest::option::of(any::<[u8; 16]>().prop_map(TopicId)),
            )
                .prop_map(|(name, error, message, id)| TopicResult {
                    name,
                    error,
                    message,
                    id
                }),
            0..4
        )
        .prop_map(ControllerReply::Topics),
        (any::<i64>(), any::<u32>())
            .prop_map(|(first, size)| ControllerReply::ProducerIds { first, size }),
        proptest::option::of(arb_node())
            .prop_map(|leader| ControllerReply::NotController { leader }),
        (
            arb_code(),
            proptest::option::of(
                (
                    proptest::option::of(arb_node()),
                    any::<u32>(),
                    any::<u32>(),
                    arb_nodes()
                )
                    .prop_map(|(leader, leader_epoch, partition_epoch, isr)| {
                        PartitionLeadership {
                            leader,
                            leader_epoch: LeaderEpoch(leader_epoch),
                            partition_epoch,
                            isr,
                        }
                    })
            )
        )
            .prop_map(|(error, partition)| ControllerReply::AlterPartition { error, partition }),
        proptest::collection::vec(
            (
                arb_topic_id(),
                any::<u32>(),
                arb_code(),
                proptest::option::of("[ -~]{0,30}")
            )
                .prop_map(|(topic, partition, error, message)| ElectionResult {
                    topic,
                    partition,
                    error,
                    message
                }),
            0..4
        )
        .prop_map(ControllerReply::Elections),
    ]
}

proptest! {
    #[test]
    fn every_command_round_trips(command in arb_command()) {
        let mut bytes = Vec::new();
        command.encode(&mut bytes);
        prop_assert_eq!(ControllerCommand::decode(&bytes), Ok(command));
        for cut in 0..bytes.len() {
            prop_assert!(ControllerCommand::decode(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn every_answer_round_trips(reply in arb_reply(), index in any::<u64>()) {
        let mut bytes = Vec::new();
        reply.encode(&mut bytes);
        prop_assert_eq!(ControllerReply::decode(&bytes), Ok(reply.clone()));
        let answer = Answer { reply, index };
        let mut bytes = Vec::new();
        answer.encode(&mut bytes);
        prop_assert_eq!(Answer::decode(&bytes), Ok(answer));
        for cut in 0..bytes.len() {
            prop_assert!(Answer::decode(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = ControllerCommand::decode(&bytes);
        let _ = ControllerReply::decode(&bytes);
        let _ = Answer::decode(&bytes);
        // With a valid version byte the tags and fields are exercised.
        let mut versioned = vec![COMMAND_VERSION];
        versioned.extend_from_slice(&bytes);
        let _ = ControllerCommand::decode(&versioned);
        let _ = ControllerReply::decode(&versioned);
        let _ = Answer::decode(&versioned);
    }
}

#[test]
fn unknown_versions_and_tags_are_typed_errors() {
    assert_eq!(
        ControllerCommand::decode(&[7, TAG_HEARTBEAT]),
        Err(DecodeError::UnknownVersion {
            found: 7,
            supported: COMMAND_VERSION
        })
    );
    assert_eq!(
        ControllerCommand::decode(&[COMMAND_VERSION, 99]),
        Err(DecodeError::UnknownTag {
            what: "command",
            tag: 99
        })
    );
    assert_eq!(
        ControllerReply::decode(&[COMMAND_VERSION, 0]),
        Err(DecodeError::UnknownTag {
            what: "reply",
            tag: 0
        })
    );
}
