//! What a node asks of the active controller, and the answers. A node
//! sends a [`ControllerCommand`] (forwarded over `--cluster-listen` when
//! the controller is another node); the controller turns it into records,
//! proposes them, and answers once they are committed, with the Raft index
//! at which they were (so the asking node can wait until it has applied
//! that far before it answers its client).

use std::collections::BTreeMap;

use fjord_schema::{ErrorCode, LeaderEpoch, NodeId};

use super::wire::{
    DecodeError, Reader, Writer, ASSIGNMENT_PARTITIONS_MAX, COMMAND_NAME_LEN_MAX,
    COMMAND_TOPICS_MAX, MESSAGE_LEN_MAX, RACK_LEN_MAX,
};
use crate::metadata::image::{BrokerEndpoints, PartitionEpoch, TopicId};

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
    /// CreatePartitions with `validate_only`: checked as
    /// [`ControllerCommand::CreatePartitions`], nothing proposed.
    ValidatePartitions(Vec<(String, u32)>),
    AlterConfigs(Vec<AlterTopicConfigs>),
    AllocateProducerIds {
        node: NodeId,
    },
    /// A partition's leader asks to change its ISR (Kafka's AlterPartition,
    /// api 56): compare-and-set on the leader epoch and partition epoch
    /// it knows. Answered with [`ControllerReply::AlterPartition`].
    AlterPartition {
        /// The leader asking.
        node: NodeId,
        topic: TopicId,
        partition: u32,
        leader_epoch: LeaderEpoch,
        partition_epoch: PartitionEpoch,
        new_isr: Vec<NodeId>,
    },
    /// Leader elections (Kafka's ElectLeaders, api 43). `partitions`:
    /// `None` for every partition. `preferred`: move leadership to the
    /// first replica where it is live and in the ISR (PREFERRED); else
    /// elect a leader for partitions without one, from the ISR if a member
    /// is live, else the first live replica (UNCLEAN). Answered with
    /// [`ControllerReply::Elections`].
    ElectLeaders {
        partitions: Option<Vec<(TopicId, u32)>>,
        preferred: bool,
    },
}

/// A partition's leadership and ISR as the controller's image has them
/// (the answer to an AlterPartition).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionLeadership {
    pub leader: Option<NodeId>,
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: PartitionEpoch,
    pub isr: Vec<NodeId>,
}

/// The outcome of one partition of an ElectLeaders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElectionResult {
    pub topic: TopicId,
    pub partition: u32,
    pub error: ErrorCode,
    pub message: Option<String>,
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
    /// The answer to an AlterPartition: `error` is `None` when the new ISR
    /// is committed; `partition` is the partition as the controller has it
    /// after the request (refused or not), `None` for an unknown one.
    AlterPartition {
        error: ErrorCode,
        partition: Option<PartitionLeadership>,
    },
    /// One result per partition of an ElectLeaders (asked for all: the
    /// partitions whose election was needed).
    Elections(Vec<ElectionResult>),
}

/// A reply and the Raft index of the last record it committed (0 when it
/// committed nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub reply: ControllerReply,
    pub index: u64,
}

/// The format version of encoded commands, replies and answers (forwarded
/// between nodes over `--cluster-listen`). Unknown versions are refused.
pub const COMMAND_VERSION: u8 = 1;

const TAG_REGISTER: u8 = 1;
const TAG_HEARTBEAT: u8 = 2;
const TAG_CREATE_TOPICS: u8 = 3;
const TAG_DELETE_TOPICS: u8 = 4;
const TAG_CREATE_PARTITIONS: u8 = 5;
const TAG_ALTER_CONFIGS: u8 = 6;
const TAG_ALLOCATE_PRODUCER_IDS: u8 = 7;
const TAG_VALIDATE_PARTITIONS: u8 = 8;
const TAG_ALTER_PARTITION: u8 = 9;
const TAG_ELECT_LEADERS: u8 = 10;

const TAG_REGISTERED: u8 = 1;
const TAG_HEARTBEAT_REPLY: u8 = 2;
const TAG_TOPICS: u8 = 3;
const TAG_PRODUCER_IDS: u8 = 4;
const TAG_NOT_CONTROLLER: u8 = 5;
const TAG_ALTER_PARTITION_REPLY: u8 = 6;
const TAG_ELECTIONS: u8 = 7;

fn check_version(r: &mut Reader<'_>) -> Result<(), DecodeError> {
    match r.u8("format version")? {
        COMMAND_VERSION => Ok(()),
        found => Err(DecodeError::UnknownVersion {
            found,
            supported: COMMAND_VERSION,
        }),
    }
}

fn command_name(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    r.str(COMMAND_NAME_LEN_MAX, "topic name")
}

impl ControllerCommand {
    /// Appends this command's encoding (version, tag, fields; see
    /// [`super::wire`]) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut w = Writer(out);
        w.u8(COMMAND_VERSION);
        match self {
            ControllerCommand::RegisterBroker {
                node,
                incarnation,
                endpoints,
                shards,
                rack,
            } => {
                w.u8(TAG_REGISTER);
                w.node(*node);
                w.u64(*incarnation);
                w.endpoints(endpoints);
                w.u16(*shards);
                w.opt_str(rack.as_deref());
            }
            ControllerCommand::Heartbeat {
                node,
                incarnation,
                caught_up,
                shutting_down,
            } => {
                w.u8(TAG_HEARTBEAT);
                w.node(*node);
                w.u64(*incarnation);
                w.bool(*caught_up);
                w.bool(*shutting_down);
            }
            ControllerCommand::CreateTopics(specs) => {
                w.u8(TAG_CREATE_TOPICS);
                w.len(specs.len());
                for spec in specs {
                    w.str(&spec.name);
                    match spec.partitions {
                        None => w.u8(0),
                        Some(p) => {
                            w.u8(1);
                            w.u32(p);
                        }
                    }
                    match spec.replication_factor {
                        None => w.u8(0),
                        Some(f) => {
                            w.u8(1);
                            w.u16(f);
                        }
                    }
                    match &spec.assignments {
                        None => w.u8(0),
                        Some(assignments) => {
                            w.u8(1);
                            w.len(assignments.len());
                            for nodes in assignments {
                                w.nodes(nodes);
                            }
                        }
                    }
                    w.configs(&spec.configs);
                    w.bool(spec.validate_only);
                }
            }
            ControllerCommand::DeleteTopics(names) => {
                w.u8(TAG_DELETE_TOPICS);
                w.len(names.len());
                for name in names {
                    w.str(name);
                }
            }
            ControllerCommand::CreatePartitions(topics)
            | ControllerCommand::ValidatePartitions(topics) => {
                w.u8(match self {
                    ControllerCommand::CreatePartitions(_) => TAG_CREATE_PARTITIONS,
                    _ => TAG_VALIDATE_PARTITIONS,
                });
                w.len(topics.len());
                for (name, count) in topics {
                    w.str(name);
                    w.u32(*count);
                }
            }
            ControllerCommand::AlterConfigs(alters) => {
                w.u8(TAG_ALTER_CONFIGS);
                w.len(alters.len());
                for alter in alters {
                    w.str(&alter.name);
                    w.configs(&alter.overrides);
                    w.bool(alter.validate_only);
                }
            }
            ControllerCommand::AllocateProducerIds { node } => {
                w.u8(TAG_ALLOCATE_PRODUCER_IDS);
                w.node(*node);
            }
            ControllerCommand::AlterPartition {
                node,
                topic,
                partition,
                leader_epoch,
                partition_epoch,
                new_isr,
            } => {
                w.u8(TAG_ALTER_PARTITION);
                w.node(*node);
                w.topic_id(*topic);
                w.u32(*partition);
                w.u32(leader_epoch.get());
                w.u32(*partition_epoch);
                w.nodes(new_isr);
            }
            ControllerCommand::ElectLeaders {
                partitions,
                preferred,
            } => {
                w.u8(TAG_ELECT_LEADERS);
                w.bool(*preferred);
                match partitions {
                    None => w.u8(0),
                    Some(partitions) => {
                        w.u8(1);
                        w.len(partitions.len());
                        for (topic, partition) in partitions {
                            w.topic_id(*topic);
                            w.u32(*partition);
                        }
                    }
                }
            }
        }
    }

    /// Decodes exactly `bytes` as a command; never panics.
    pub fn decode(bytes: &[u8]) -> Result<ControllerCommand, DecodeError> {
        let mut r = Reader::new(bytes);
        check_version(&mut r)?;
        let command = match r.u8("command tag")? {
            TAG_REGISTER => ControllerCommand::RegisterBroker {
                node: r.node("node")?,
                incarnation: r.u64("incarnation")?,
                endpoints: r.endpoints()?,
                shards: r.u16("shards")?,
                rack: r.opt_str(RACK_LEN_MAX, "rack")?,
            },
            TAG_HEARTBEAT => ControllerCommand::Heartbeat {
                node: r.node("node")?,
                incarnation: r.u64("incarnation")?,
                caught_up: r.bool("caught_up")?,
                shutting_down: r.bool("shutting_down")?,
            },
            TAG_CREATE_TOPICS => {
                let count = r.len(COMMAND_TOPICS_MAX, 12, "topics")?;
                let mut specs = Vec::with_capacity(count);
                for _ in 0..count {
                    let name = command_name(&mut r)?;
                    let partitions = if r.bool("partitions")? {
                        Some(r.u32("partitions")?)
                    } else {
                        None
                    };
                    let replication_factor = if r.bool("replication factor")? {
                        Some(r.u16("replication factor")?)
                    } else {
                        None
                    };
                    let assignments = if r.bool("assignments")? {
                        let n = r.len(ASSIGNMENT_PARTITIONS_MAX, 4, "assignments")?;
                        Some(
                            (0..n)
                                .map(|_| r.nodes("assigned replicas"))
                                .collect::<Result<_, _>>()?,
                        )
                    } else {
                        None
                    };
                    specs.push(CreateTopicSpec {
                        name,
                        partitions,
                        replication_factor,
                        assignments,
                        configs: r.configs()?,
                        validate_only: r.bool("validate_only")?,
                    });
                }
                ControllerCommand::CreateTopics(specs)
            }
            TAG_DELETE_TOPICS => {
                let count = r.len(COMMAND_TOPICS_MAX, 4, "topics")?;
                ControllerCommand::DeleteTopics(
                    (0..count)
                        .map(|_| command_name(&mut r))
                        .collect::<Result<_, _>>()?,
                )
            }
            tag @ (TAG_CREATE_PARTITIONS | TAG_VALIDATE_PARTITIONS) => {
                let count = r.len(COMMAND_TOPICS_MAX, 8, "topics")?;
                let mut topics = Vec::with_capacity(count);
                for _ in 0..count {
                    topics.push((command_name(&mut r)?, r.u32("partition count")?));
                }
                if tag == TAG_CREATE_PARTITIONS {
                    ControllerCommand::CreatePartitions(topics)
                } else {
                    ControllerCommand::ValidatePartitions(topics)
                }
            }
            TAG_ALTER_CONFIGS => {
                let count = r.len(COMMAND_TOPICS_MAX, 9, "topics")?;
                let mut alters = Vec::with_capacity(count);
                for _ in 0..count {
                    alters.push(AlterTopicConfigs {
                        name: command_name(&mut r)?,
                        overrides: r.configs()?,
                        validate_only: r.bool("validate_only")?,
                    });
                }
                ControllerCommand::AlterConfigs(alters)
            }
            TAG_ALLOCATE_PRODUCER_IDS => ControllerCommand::AllocateProducerIds {
                node: r.node("node")?,
            },
            TAG_ALTER_PARTITION => ControllerCommand::AlterPartition {
                node: r.node("node")?,
                topic: r.topic_id()?,
                partition: r.u32("partition")?,
                leader_epoch: LeaderEpoch(r.u32("leader epoch")?),
                partition_epoch: r.u32("partition epoch")?,
                new_isr: r.nodes("new isr")?,
            },
            TAG_ELECT_LEADERS => {
                let preferred = r.bool("preferred")?;
                let partitions = if r.bool("partitions")? {
                    let count = r.len(ASSIGNMENT_PARTITIONS_MAX, 20, "partitions")?;
                    let mut partitions = Vec::with_capacity(count);
                    for _ in 0..count {
                        partitions.push((r.topic_id()?, r.u32("partition")?));
                    }
                    Some(partitions)
                } else {
                    None
                };
                ControllerCommand::ElectLeaders {
                    partitions,
                    preferred,
                }
            }
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "command",
                    tag,
                })
            }
        };
        r.finish()?;
        Ok(command)
    }
}

impl ControllerReply {
    fn encode_body(&self, w: &mut Writer<'_>) {
        match self {
            ControllerReply::Registered { index } => {
                w.u8(TAG_REGISTERED);
                w.u64(*index);
            }
            ControllerReply::Heartbeat {
                fenced,
                shutdown_ready,
            } => {
                w.u8(TAG_HEARTBEAT_REPLY);
                w.bool(*fenced);
                w.bool(*shutdown_ready);
            }
            ControllerReply::Topics(results) => {
                w.u8(TAG_TOPICS);
                w.len(results.len());
                for result in results {
                    w.str(&result.name);
                    w.error_code(result.error);
                    w.opt_str(result.message.as_deref());
                    match result.id {
                        None => w.u8(0),
                        Some(id) => {
                            w.u8(1);
                            w.topic_id(id);
                        }
                    }
                }
            }
            ControllerReply::ProducerIds { first, size } => {
                w.u8(TAG_PRODUCER_IDS);
                w.i64(*first);
                w.u32(*size);
            }
            ControllerReply::NotController { leader } => {
                w.u8(TAG_NOT_CONTROLLER);
                w.opt_node(*leader);
            }
            ControllerReply::AlterPartition { error, partition } => {
                w.u8(TAG_ALTER_PARTITION_REPLY);
                w.error_code(*error);
                match partition {
                    None => w.u8(0),
                    Some(p) => {
                        w.u8(1);
                        w.opt_node(p.leader);
                        w.u32(p.leader_epoch.get());
                        w.u32(p.partition_epoch);
                        w.nodes(&p.isr);
                    }
                }
            }
            ControllerReply::Elections(results) => {
                w.u8(TAG_ELECTIONS);
                w.len(results.len());
                for result in results {
                    w.topic_id(result.topic);
                    w.u32(result.partition);
                    w.error_code(result.error);
                    w.opt_str(result.message.as_deref());
                }
            }
        }
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<ControllerReply, DecodeError> {
        Ok(match r.u8("reply tag")? {
            TAG_REGISTERED => ControllerReply::Registered {
                index: r.u64("index")?,
            },
            TAG_HEARTBEAT_REPLY => ControllerReply::Heartbeat {
                fenced: r.bool("fenced")?,
                shutdown_ready: r.bool("shutdown_ready")?,
            },
            TAG_TOPICS => {
                let count = r.len(COMMAND_TOPICS_MAX, 8, "topic results")?;
                let mut results = Vec::with_capacity(count);
                for _ in 0..count {
                    results.push(TopicResult {
                        name: command_name(r)?,
                        error: r.error_code()?,
                        message: r.opt_str(MESSAGE_LEN_MAX, "message")?,
                        id: if r.bool("topic id")? {
                            Some(r.topic_id()?)
                        } else {
                            None
                        },
                    });
                }
                ControllerReply::Topics(results)
            }
            TAG_PRODUCER_IDS => ControllerReply::ProducerIds {
                first: r.i64("first producer id")?,
                size: r.u32("block size")?,
            },
            TAG_NOT_CONTROLLER => ControllerReply::NotController {
                leader: r.opt_node("leader")?,
            },
            TAG_ALTER_PARTITION_REPLY => ControllerReply::AlterPartition {
                error: r.error_code()?,
                partition: if r.bool("partition")? {
                    Some(PartitionLeadership {
                        leader: r.opt_node("leader")?,
                        leader_epoch: LeaderEpoch(r.u32("leader epoch")?),
                        partition_epoch: r.u32("partition epoch")?,
                        isr: r.nodes("isr")?,
                    })
                } else {
                    None
                },
            },
            TAG_ELECTIONS => {
                let count = r.len(ASSIGNMENT_PARTITIONS_MAX, 23, "election results")?;
                let mut results = Vec::with_capacity(count);
                for _ in 0..count {
                    results.push(ElectionResult {
                        topic: r.topic_id()?,
                        partition: r.u32("partition")?,
                        error: r.error_code()?,
                        message: r.opt_str(MESSAGE_LEN_MAX, "message")?,
                    });
                }
                ControllerReply::Elections(results)
            }
            tag => return Err(DecodeError::UnknownTag { what: "reply", tag }),
        })
    }

    /// Appends this reply's encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut w = Writer(out);
        w.u8(COMMAND_VERSION);
        self.encode_body(&mut w);
    }

    /// Decodes exactly `bytes` as a reply; never panics.
    pub fn decode(bytes: &[u8]) -> Result<ControllerReply, DecodeError> {
        let mut r = Reader::new(bytes);
        check_version(&mut r)?;
        let reply = ControllerReply::decode_body(&mut r)?;
        r.finish()?;
        Ok(reply)
    }
}

impl Answer {
    /// Appends this answer's encoding (version, index, reply) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut w = Writer(out);
        w.u8(COMMAND_VERSION);
        w.u64(self.index);
        self.reply.encode_body(&mut w);
    }

    /// Decodes exactly `bytes` as an answer; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Answer, DecodeError> {
        let mut r = Reader::new(bytes);
        check_version(&mut r)?;
        let index = r.u64("index")?;
        let reply = ControllerReply::decode_body(&mut r)?;
        r.finish()?;
        Ok(Answer { reply, index })
    }
}

#[cfg(test)]
mod tests;
