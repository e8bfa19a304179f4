//! Metadata and topic admin: auto-creating topics a Metadata request names,
//! partition health from the owning shards, and CreateTopics /
//! DeleteTopics / CreatePartitions / config alters run on the registry
//! shard ([`REGISTRY_SHARD`]), which persists them, applies them on the
//! partitions' owning shards and sends every shard the new catalog.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use fjord_schema::{ErrorCode, PartitionId, ShardId};

use super::types::{AlterSpec, CreateSpec, PartitionHealth, TopicOutcome};
use super::Engine;
use crate::error::TopicOpError;
use crate::metadata::catalog::Catalog;
use crate::ops::{ElectionOutcome, Op, OpResult};
use crate::service::REGISTRY_SHARD;
use crate::topic::{is_internal_topic, validate_topic_name};

/// What a Metadata request sees: the catalog after auto-creation, and the
/// topics whose creation was refused.
#[derive(Debug)]
pub struct Metadata {
    pub catalog: Arc<Catalog>,
    /// By name: a request may name up to `request_elements_max` topics,
    /// each looked up once.
    refused: HashMap<String, ErrorCode>,
}

impl Metadata {
    /// Why `name` is not in the catalog: an invalid name, a refused
    /// auto-creation, or unknown.
    pub fn missing_topic_error(&self, name: &str) -> ErrorCode {
        if validate_topic_name(name).is_err() {
            return ErrorCode::InvalidTopicException;
        }
        self.refused
            .get(name)
            .copied()
            .unwrap_or(ErrorCode::UnknownTopicOrPartition)
    }
}

/// Why a CreatePartitions' replica assignments are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignmentError {
    #[error("assignment {replicas:?}: this single-node cluster has one replica per partition, on node {node}")]
    NotThisNode { replicas: Vec<i32>, node: u32 },
    #[error("{given} assignments for {added} new partitions")]
    WrongCount { given: usize, added: usize },
}

impl AssignmentError {
    pub fn error_code(&self) -> ErrorCode {
        ErrorCode::InvalidReplicaAssignment
    }
}

impl Engine {
    /// Checks the replicas (node ids) given for each new partition of
    /// `topic` grown to `count` partitions: one replica, this node, per
    /// new partition. (A topic that does not grow is refused by the
    /// registry.)
    pub fn check_assignments(
        &self,
        topic: &str,
        count: u32,
        replicas: &[Vec<i32>],
    ) -> Result<(), AssignmentError> {
        let node = self.broker.node_id.get();
        if let Some(bad) = replicas.iter().find(|r| r.as_slice() != [node as i32]) {
            return Err(AssignmentError::NotThisNode {
                replicas: bad.clone(),
                node,
            });
        }
        let current = self
            .service
            .catalog()
            .get(topic)
            .map(|m| m.partition_count());
        if let Some(current) = current.filter(|c| *c < count) {
            let added = (count - current) as usize;
            if replicas.len() != added {
                return Err(AssignmentError::WrongCount {
                    given: replicas.len(),
                    added,
                });
            }
        }
        Ok(())
    }

    /// The catalog for a Metadata request after auto-creating the named
    /// topics that are missing (when both the request and the broker
    /// allow it); internal topics are made by the broker itself, never on
    /// a client's Metadata request (Kafka's rule too).
    pub async fn metadata(&self, names: Option<&[String]>, allow_auto_create: bool) -> Metadata {
        let mut catalog = self.service.catalog();
        let mut refused = HashMap::new();
        if let (Some(names), true) = (names, allow_auto_create && self.limits.auto_create_topics) {
            let missing: Vec<CreateSpec> = names
                .iter()
                .filter(|name| catalog.get(name).is_none() && !is_internal_topic(name))
                .map(|name| CreateSpec {
                    name: name.clone(),
                    num_partitions: -1,
                    replication_factor: -1,
                    configs: Vec::new(),
                    assignments: Vec::new(),
                })
                .collect();
            if !missing.is_empty() {
                if let OpResult::Topics(outcomes) = self
                    .service
                    .execute(
                        REGISTRY_SHARD,
                        Op::CreateTopics {
                            topics: missing,
                            validate_only: false,
                        },
                    )
                    .await
                {
                    refused = outcomes
                        .into_iter()
                        .filter(|o| o.code() != ErrorCode::None)
                        .map(|o| {
                            let code = o.code();
                            (o.name, code)
                        })
                        .collect();
                }
                catalog = self.service.catalog();
            }
        }
        Metadata { catalog, refused }
    }

    /// The storage health of the named topics' partitions, asked of their
    /// owning shards (the native edge asks only when a request names its
    /// topics, as `fjord topic describe` does, so a broad Metadata stays
    /// local).
    pub async fn partition_health(
        &self,
        names: &[String],
        catalog: &Catalog,
    ) -> HashMap<(String, u32), PartitionHealth> {
        let mut out = HashMap::new();
        for name in names {
            let Some(meta) = catalog.get(name) else {
                continue;
            };
            let mut by_shard: BTreeMap<u16, Vec<PartitionId>> = BTreeMap::new();
            for (partition, shard) in meta.shards.iter().enumerate() {
                by_shard
                    .entry(*shard)
                    .or_default()
                    .push(PartitionId(partition as u32));
            }
            for (shard, partitions) in by_shard {
                let op = Op::Health {
                    topic: name.clone(),
                    partitions,
                };
                if let OpResult::Health(health) = self.service.execute(ShardId(shard), op).await {
                    for h in health {
                        out.insert((name.clone(), h.partition.get()), h);
                    }
                }
            }
        }
        out
    }

    /// CreateTopics through the registry shard.
    pub async fn create_topics(
        &self,
        specs: Vec<CreateSpec>,
        validate_only: bool,
    ) -> Vec<TopicOutcome> {
        let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
        let op = Op::CreateTopics {
            topics: specs,
            validate_only,
        };
        topic_outcomes(self.service.execute(REGISTRY_SHARD, op).await, names)
    }

    /// DeleteTopics through the registry shard.
    pub async fn delete_topics(&self, names: Vec<String>) -> Vec<TopicOutcome> {
        let op = Op::DeleteTopics {
            topics: names.clone(),
        };
        topic_outcomes(self.service.execute(REGISTRY_SHARD, op).await, names)
    }

    /// Alters topic configs through the registry shard; one outcome per
    /// spec, in order.
    pub async fn alter_topic_configs(
        &self,
        specs: Vec<AlterSpec>,
        validate_only: bool,
    ) -> Vec<TopicOutcome> {
        if specs.is_empty() {
            return Vec::new();
        }
        let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
        let op = Op::AlterTopicConfigs {
            topics: specs,
            validate_only,
        };
        outcomes_of(self.service.execute(REGISTRY_SHARD, op).await, names)
    }

    /// Grows topics to the given partition counts through the registry
    /// shard; one outcome per topic, in order.
    pub async fn create_partitions(
        &self,
        topics: Vec<(String, u32)>,
        validate_only: bool,
    ) -> Vec<TopicOutcome> {
        if topics.is_empty() {
            return Vec::new();
        }
        let names: Vec<String> = topics.iter().map(|t| t.0.clone()).collect();
        let op = Op::CreatePartitions {
            topics,
            validate_only,
        };
        outcomes_of(self.service.execute(REGISTRY_SHARD, op).await, names)
    }

    /// Leader elections (Kafka's ElectLeaders) through the registry
    /// shard, which asks the controller: one outcome per partition named
    /// (`None`: every partition; the outcomes of those whose election was
    /// needed), or why the controller answered none.
    pub async fn elect_leaders(
        &self,
        partitions: Option<Vec<(String, Vec<u32>)>>,
        preferred: bool,
    ) -> Result<Vec<ElectionOutcome>, TopicOpError> {
        let op = Op::ElectLeaders {
            partitions,
            preferred,
        };
        match self.service.execute(REGISTRY_SHARD, op).await {
            OpResult::Elections(outcomes) => outcomes,
            OpResult::Unavailable(e) => Err(TopicOpError::Unavailable(e)),
            other => Err(TopicOpError::UnexpectedReply(format!("{other:?}"))),
        }
    }
}

/// The per-topic outcomes of a create or delete, or the same failure for
/// every topic when the registry shard did not answer.
fn topic_outcomes(result: OpResult, names: Vec<String>) -> Vec<TopicOutcome> {
    match result {
        OpResult::Topics(outcomes) => outcomes,
        other => TopicOutcome::refuse_all(names, || TopicOpError::NoAnswer(format!("{other:?}"))),
    }
}

/// The registry shard's answer (one outcome per name), or the same error
/// for every name.
fn outcomes_of(result: OpResult, names: Vec<String>) -> Vec<TopicOutcome> {
    match result {
        OpResult::Topics(outcomes) if outcomes.len() == names.len() => outcomes,
        other => {
            let error = || match &other {
                OpResult::Unavailable(e) => TopicOpError::Unavailable(e.clone()),
                other => TopicOpError::UnexpectedReply(format!("{other:?}")),
            };
            TopicOutcome::refuse_all(names, error)
        }
    }
}
