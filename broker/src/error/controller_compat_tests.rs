//! The controller refuses admin requests with the codes and messages the
//! single-node admin paths give ([`crate::error::TopicOpError`]): the
//! existing admin tests check both. Not a pure file (it names the error
//! type the shard service uses), so it lives with that type.

use std::collections::BTreeMap;
use std::sync::Arc;

use fjord_schema::NodeId;
use fjord_storage::LogConfig;

use crate::controller::commands::{
    AlterTopicConfigs, ControllerCommand, ControllerReply, CreateTopicSpec,
};
use crate::controller::state::{ControllerConfig, ControllerState, SeededIds};
use crate::error::TopicOpError;
use crate::group::offsets_log::OFFSETS_TOPIC;
use crate::metadata::image::{BrokerEndpoints, MetadataImage};
use crate::topic::TopicConfig;

fn controller() -> ControllerState {
    let base = LogConfig::default();
    let mut state = ControllerState::with_ids(
        ControllerConfig {
            voters: vec![NodeId(1)],
            defaults: TopicConfig::from_log_config(&base),
            base,
            default_partitions: 1,
            default_replication_factor: 1,
            offsets_partitions: 2,
            offsets_replication_factor: 1,
            partitions_max: 100,
            session_timeout_ms: 9_000,
            producer_id_block_size: 10,
            leader_rebalance_interval_ms: 0,
        },
        Arc::new(MetadataImage::default()),
        Box::new(SeededIds::new(1)),
    );
    state.become_leader(0);
    let run = |state: &mut ControllerState, command: Option<ControllerCommand>| {
        let records = match command {
            Some(command) => state.handle(0, &command).0,
            None => state.tick(0),
        };
        for record in records {
            state.replay(&record);
        }
    };
    run(&mut state, None);
    run(
        &mut state,
        Some(ControllerCommand::RegisterBroker {
            node: NodeId(1),
            incarnation: 1,
            endpoints: BrokerEndpoints::default(),
            shards: 1,
            rack: None,
        }),
    );
    run(
        &mut state,
        Some(ControllerCommand::Heartbeat {
            node: NodeId(1),
            incarnation: 1,
            caught_up: true,
            shutting_down: false,
        }),
    );
    run(&mut state, None);
    assert!(state.image().get(OFFSETS_TOPIC).is_some());
    state
}

/// The one result of `command`: code and message.
fn refusal(state: &mut ControllerState, command: ControllerCommand) -> (i16, String) {
    let (records, reply) = state.handle(0, &command);
    assert!(records.is_empty(), "{records:?}");
    let ControllerReply::Topics(results) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(results.len(), 1);
    (
        results[0].error.code(),
        results[0].message.clone().unwrap_or_default(),
    )
}

fn expected(error: TopicOpError) -> (i16, String) {
    (error.code().code(), error.to_string())
}

#[test]
fn refusals_match_the_single_node_admin_errors() {
    let mut state = controller();
    let create = |partitions: Option<u32>, configs: &[(&str, &str)]| {
        ControllerCommand::CreateTopics(vec![CreateTopicSpec {
            name: "t".to_owned(),
            partitions,
            replication_factor: None,
            assignments: None,
            configs: configs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            validate_only: false,
        }])
    };
    assert_eq!(
        refusal(&mut state, create(Some(0), &[])),
        expected(TopicOpError::PartitionCount(0))
    );
    assert_eq!(
        refusal(
            &mut state,
            create(None, &[("message.timestamp.type", "LogAppendTime")])
        ),
        expected(TopicOpError::LogAppendTime)
    );
    assert_eq!(
        refusal(
            &mut state,
            ControllerCommand::CreatePartitions(vec![(OFFSETS_TOPIC.to_owned(), 5)])
        ),
        expected(TopicOpError::OffsetsTopicCannotGrow)
    );
    assert_eq!(
        refusal(
            &mut state,
            ControllerCommand::DeleteTopics(vec![OFFSETS_TOPIC.to_owned()])
        ),
        expected(TopicOpError::OffsetsTopicUndeletable)
    );
    let alter = |name: &str| {
        ControllerCommand::AlterConfigs(vec![AlterTopicConfigs {
            name: name.to_owned(),
            overrides: BTreeMap::new(),
            validate_only: false,
        }])
    };
    assert_eq!(
        refusal(&mut state, alter(OFFSETS_TOPIC)),
        expected(TopicOpError::OffsetsTopicConfigsFixed)
    );
    assert_eq!(
        refusal(&mut state, alter("missing")),
        expected(TopicOpError::UnknownTopic("missing".to_owned()))
    );
    assert_eq!(
        refusal(
            &mut state,
            ControllerCommand::DeleteTopics(vec!["missing".to_owned()])
        ),
        expected(TopicOpError::UnknownTopic("missing".to_owned()))
    );
}
