//! What a node asks of the active controller, and the answers. A node
//! sends a [`ControllerCommand`] (forwarded over `--cluster-listen` when
//! the controller is another node); the controller turns it into records,
//! proposes them, and answers once they are committed, with the Raft index
//! at which they were (so the asking node can wait until it has applied
//! that far before it answers its client).

use std::collections::BTreeMap;

use fjord_schema::{ErrorCode, NodeId};

use crate::metadata::image::{BrokerEndpoints, TopicId};

/// A topic to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateTopicSpec {
    pub name: String,
    /// `None`: `num_partitions` default of the controller.
    pub partitions: Option<u32>,
    /// `None`: `default_replication_factor` of the controller.
    pub replication_factor: Option<u16>,
    /// Explicit replica assignment (partition → nodes), if given.
    pub assignments: Option<Vec<Vec<NodeId>>>,
    pub configs: BTreeMap<String, String>,
    /// Validate only (Kafka's `validate_only`): nothing is proposed.
    pub validate_only: bool,
}

/// One config change of one topic (AlterConfigs replaces the set keys
/// whole; IncrementalAlterConfigs changes some).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlterTopicConfigs {
    pub name: String,
    /// The topic's overrides as they must be after the change.
    pub overrides: BTreeMap<String, String>,
    pub validate_only: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControllerCommand {
    RegisterBroker {
        node: NodeId,
        incarnation: u64,
        endpoints: BrokerEndpoints,
        shards: u16,
        rack: Option<String>,
    },
    /// `caught_up`: the broker has applied the metadata log up to the
    /// index its registration was committed at (it may be unfenced).
    /// `shutting_down`: controlled shutdown asked (SIGTERM).
    Heartbeat {
        node: NodeId,
        incarnation: u64,
        caught_up: bool,
        shutting_down: bool,
    },
    CreateTopics(Vec<CreateTopicSpec>),
    DeleteTopics(Vec<String>),
    /// (topic, new total partition count).
    CreatePartitions(Vec<(String, u32)>),
    AlterConfigs(Vec<AlterTopicConfigs>),
    AllocateProducerIds {
        node: NodeId,
    },
}

/// The outcome of one topic of an admin command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicResult {
    pub name: String,
    pub error: ErrorCode,
    pub message: Option<String>,
    /// The created topic's id (CreateTopics).
    pub id: Option<TopicId>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControllerReply {
    /// Registration committed at `index`: the broker is unfenced by a
    /// heartbeat with `caught_up` once it has applied up to `index`.
    Registered {
        index: u64,
    },
    Heartbeat {
        fenced: bool,
        shutdown_ready: bool,
    },
    /// One result per topic, in request order.
    Topics(Vec<TopicResult>),
    ProducerIds {
        first: i64,
        size: u32,
    },
    /// This node is not the active controller; `leader` is, if known.
    NotController {
        leader: Option<NodeId>,
    },
}

/// A reply and the Raft index of the last record it committed (0 when it
/// committed nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub reply: ControllerReply,
    pub index: u64,
}
