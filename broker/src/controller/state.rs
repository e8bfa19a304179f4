//! `ControllerState`: the controller's logic, sans-IO (no Raft, no files,
//! no clock reads: `now_ms` is passed in). Every node folds committed
//! records with [`ControllerState::replay`]; the active controller (the
//! Raft leader) also turns commands into records with
//! [`ControllerState::handle`] and fences silent brokers in
//! [`ControllerState::tick`].
//!
//! Replication (issue 14): leaders change a partition's ISR with
//! `AlterPartition` (compare-and-set on the leader epoch and partition
//! epoch); elections pick the first live ISR member in replica order, or,
//! where the topic sets `unclean.leader.election.enable`, the first live
//! replica alone in the ISR; `ElectLeaders` and the periodic rebalance
//! move leadership back to the preferred (first) replica.
//!
//! Commands are handled one at a time by the driver: a command's records
//! are proposed, committed and replayed before the next command is
//! handled, so `handle` always validates against the latest image.
//!
//! Contract with the driver (the Raft loop on shard 0):
//! - every node calls [`ControllerState::replay`] for each committed
//!   record, in log order (snapshots: [`ControllerState::new`] with the
//!   snapshot's image);
//! - on becoming the Raft leader it calls
//!   [`ControllerState::become_leader`] (and
//!   [`ControllerState::become_follower`] on losing it);
//! - the leader calls [`ControllerState::handle`] and
//!   [`ControllerState::tick`] one at a time, and proposes the records
//!   each returns as one entry ([`super::records::encode_batch`]); it
//!   waits until that entry is committed and replayed before the next
//!   `handle` or `tick`. Neither remembers what it returned: they read the
//!   image, so a record proposed but not yet replayed would be proposed
//!   again. If the entry is lost (leadership lost), the reply is
//!   `NotController` and the next leader starts from its own image.
//! - the reply of `handle` is sent once its records are committed, with
//!   the index of that entry ([`super::commands::Answer`]);
//!   `Registered { index }` is filled in by the driver.
//!
//! Soft state (not in the log, rebuilt by each new leader): each broker's
//! session, i.e. the time of the last heartbeat of its current
//! incarnation, started by `handle(RegisterBroker)`, by heartbeats, and
//! for every registered broker by `become_leader` (nobody is fenced for
//! the previous leader's silence).
//!
//! Randomness (topic ids, the cluster id) comes from an [`IdSource`], so
//! tests are deterministic.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use fjord_schema::{ErrorCode, LeaderEpoch, NodeId};
use fjord_storage::LogConfig;

use super::commands::{
    AlterTopicConfigs, ControllerCommand, ControllerReply, CreateTopicSpec, ElectionResult,
    PartitionLeadership, TopicResult,
};
use super::placement::{place, PlacementError};
use super::records::{MetadataRecord, BATCH_RECORDS_MAX};
use super::wire::{broker_fits, REPLICAS_MAX};
use crate::group::offsets_log::OFFSETS_TOPIC;
use crate::metadata::image::{MetadataImage, PartitionEpoch, PartitionImage, TopicId, TopicImage};
use crate::topic::{partitions_from_assignments, validate_topic_name, TopicConfig, TopicError};

/// The controller's settings (from the node's `Config`).
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// The voters of the metadata quorum (`controller_quorum_voters`).
    pub voters: Vec<NodeId>,
    /// Topic config defaults (the broker's `base_log_config`).
    pub defaults: TopicConfig,
    /// The broker's `base_log_config`: a topic config is checked by
    /// deriving its log config from it, as the single node did.
    pub base: LogConfig,
    /// `num_partitions` default of a topic created without a count.
    pub default_partitions: u32,
    /// `default_replication_factor`.
    pub default_replication_factor: u16,
    /// Partitions of `__consumer_offsets`.
    pub offsets_partitions: u32,
    /// `offsets_topic_replication_factor` (capped by live brokers).
    pub offsets_replication_factor: u16,
    /// Most partitions a topic may have (`partitions_max`).
    pub partitions_max: u32,
    /// `broker_session_timeout_ms`.
    pub session_timeout_ms: u64,
    /// Producer ids per `ProducerIdsBlock`.
    pub producer_id_block_size: u32,
    /// How often [`ControllerState::tick`] moves leaderships back to
    /// preferred replicas (Kafka's `auto.leader.rebalance.enable` with
    /// `leader.imbalance.check.interval.seconds`); 0: never.
    pub leader_rebalance_interval_ms: u64,
}

/// Where the controller's randomness comes from: topic ids and the
/// cluster id. [`RandomIds`] in production; tests pass a seeded one.
pub trait IdSource: fmt::Debug + Send {
    fn topic_id(&mut self) -> TopicId;
    fn cluster_id(&mut self) -> [u8; 16];
}

/// Random version 4 UUIDs from the kernel's CSPRNG.
#[derive(Debug, Default)]
pub struct RandomIds;

impl IdSource for RandomIds {
    fn topic_id(&mut self) -> TopicId {
        TopicId::random()
    }
    fn cluster_id(&mut self) -> [u8; 16] {
        TopicId::random().0
    }
}

/// Deterministic ids for tests and simulations: a counter from a seed,
/// shaped as version 4 UUIDs.
#[derive(Debug)]
pub struct SeededIds {
    next: u64,
}

impl SeededIds {
    pub fn new(seed: u64) -> SeededIds {
        SeededIds { next: seed }
    }

    fn take(&mut self) -> [u8; 16] {
        self.next = self.next.wrapping_add(1);
        let mut bytes = [0u8; 16];
        bytes[8..].copy_from_slice(&self.next.to_be_bytes());
        bytes[6] = 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        bytes
    }
}

impl IdSource for SeededIds {
    fn topic_id(&mut self) -> TopicId {
        TopicId(self.take())
    }
    fn cluster_id(&mut self) -> [u8; 16] {
        self.take()
    }
}

/// A broker's session on the active controller: its last heartbeat (or
/// registration, or this controller's start) for one incarnation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Session {
    incarnation: u64,
    last_ms: u64,
}

/// Why one topic of an admin command is refused (code and message as the
/// single-node admin paths gave them, see `crate::error::TopicOpError`).
fn refusal(code: ErrorCode, message: impl Into<String>) -> TopicError {
    TopicError::new(code, message)
}

fn unknown_topic(name: &str) -> TopicError {
    refusal(
        ErrorCode::UnknownTopicOrPartition,
        format!("topic {name:?} does not exist"),
    )
}

fn replication_refusal(error: PlacementError) -> TopicError {
    refusal(ErrorCode::InvalidReplicationFactor, error.to_string())
}

fn result(name: &str, outcome: Result<Option<TopicId>, TopicError>) -> TopicResult {
    match outcome {
        Ok(id) => TopicResult {
            name: name.to_owned(),
            error: ErrorCode::None,
            message: None,
            id,
        },
        Err(e) => TopicResult {
            name: name.to_owned(),
            error: e.code,
            message: Some(e.message),
            id: None,
        },
    }
}

/// The records of one command, checked against the image as it will be
/// once the earlier ones apply (a request naming a topic twice sees its
/// first change).
struct Proposal {
    image: MetadataImage,
    records: Vec<MetadataRecord>,
}

impl Proposal {
    fn new(image: &MetadataImage) -> Proposal {
        Proposal {
            image: image.clone(),
            records: Vec::new(),
        }
    }

    fn push(&mut self, record: MetadataRecord, defaults: &TopicConfig) {
        debug_assert!(record.fits(), "{record:?}");
        self.image.apply_mut(&record, defaults);
        self.records.push(record);
    }

    fn room(&self) -> usize {
        BATCH_RECORDS_MAX.saturating_sub(self.records.len())
    }
}

/// The controller's state machine (see the module docs).
///
/// Lives on: shard 0 of every node (the driver's), one instance.
#[derive(Debug)]
pub struct ControllerState {
    config: ControllerConfig,
    image: Arc<MetadataImage>,
    /// Sessions of brokers, by node (meaningful on the active controller).
    sessions: BTreeMap<NodeId, Session>,
    /// When this node became the active controller; `None` when it is not.
    active_since_ms: Option<u64>,
    /// When `tick` last moved leaderships to preferred replicas (or this
    /// node became the active controller).
    rebalanced_ms: u64,
    ids: Box<dyn IdSource>,
}

impl ControllerState {
    /// `image`: what the committed log folded to so far (a snapshot's, or
    /// empty). Ids are random ([`RandomIds`]).
    pub fn new(config: ControllerConfig, image: Arc<MetadataImage>) -> ControllerState {
        ControllerState::with_ids(config, image, Box::new(RandomIds))
    }

    /// As [`ControllerState::new`], with ids from `ids`.
    pub fn with_ids(
        config: ControllerConfig,
        image: Arc<MetadataImage>,
        ids: Box<dyn IdSource>,
    ) -> ControllerState {
        ControllerState {
            config,
            image,
            sessions: BTreeMap::new(),
            active_since_ms: None,
            rebalanced_ms: 0,
            ids,
        }
    }

    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// The image as of the last replayed record.
    pub fn image(&self) -> &Arc<MetadataImage> {
        &self.image
    }

    /// Whether this node acts as the active controller.
    pub fn is_active(&self) -> bool {
        self.active_since_ms.is_some()
    }

    /// Folds one committed record (every node, in log order).
    pub fn replay(&mut self, record: &MetadataRecord) {
        Arc::make_mut(&mut self.image).apply_mut(record, &self.config.defaults);
        if let MetadataRecord::RegisterBroker {
            node, incarnation, ..
        } = record
        {
            // A session of an older incarnation ends with it.
            if self
                .sessions
                .get(node)
                .is_some_and(|s| s.incarnation != *incarnation)
            {
                self.sessions.remove(node);
            }
        }
    }

    /// This node became the active controller at `now_ms`: every broker's
    /// session starts afresh (nobody is fenced for the old leader's view).
    pub fn become_leader(&mut self, now_ms: u64) {
        self.active_since_ms = Some(now_ms);
        self.rebalanced_ms = now_ms;
        self.sessions = self
            .image
            .brokers()
            .map(|b| {
                (
                    b.node,
                    Session {
                        incarnation: b.incarnation,
                        last_ms: now_ms,
                    },
                )
            })
            .collect();
    }

    /// This node is no longer the active controller: its sessions are
    /// dropped (the next leader starts its own).
    pub fn become_follower(&mut self) {
        self.active_since_ms = None;
        self.sessions.clear();
    }

    /// The active controller handles `command` at `now_ms`: the records to
    /// propose (maybe none) and the reply to give once they are committed.
    /// Admin replies hold one [`TopicResult`] per topic, in request order,
    /// with the single node's error codes and messages. A node that is not
    /// the Raft leader must not call this (the driver answers
    /// `NotController` itself); called without `become_leader`, it starts
    /// the sessions at `now_ms` as `become_leader` would.
    ///
    /// `AllocateProducerIds` when the id space is exhausted answers
    /// `ProducerIds { first: -1, size: 0 }` and proposes nothing.
    pub fn handle(
        &mut self,
        now_ms: u64,
        command: &ControllerCommand,
    ) -> (Vec<MetadataRecord>, ControllerReply) {
        if self.active_since_ms.is_none() {
            self.become_leader(now_ms);
        }
        let mut proposal = Proposal::new(&self.image);
        if self.image.cluster_id().is_none() {
            // A command before the first tick: the cluster id still comes
            // first in the log.
            proposal.push(
                MetadataRecord::ClusterId {
                    id: self.ids.cluster_id(),
                },
                &self.config.defaults,
            );
        }
        let reply = match command {
            ControllerCommand::RegisterBroker {
                node,
                incarnation,
                endpoints,
                shards,
                rack,
            } => {
                let record = MetadataRecord::RegisterBroker {
                    node: *node,
                    incarnation: *incarnation,
                    endpoints: endpoints.clone(),
                    shards: *shards,
                    rack: rack.clone(),
                };
                if !broker_fits(endpoints, rack.as_deref()) {
                    // Answered as an unknown broker: fenced, it registers
                    // again (and its operator sees the warning).
                    tracing::warn!(%node, "a registration with an over-long host or rack is refused");
                    return (
                        Vec::new(),
                        ControllerReply::Heartbeat {
                            fenced: true,
                            shutdown_ready: false,
                        },
                    );
                }
                self.sessions.insert(
                    *node,
                    Session {
                        incarnation: *incarnation,
                        last_ms: now_ms,
                    },
                );
                // The old process of this node leads nothing any more.
                let was_registered = self.image.broker(*node).is_some();
                proposal.push(record, &self.config.defaults);
                if was_registered {
                    self.move_leaderships(&mut proposal, *node);
                }
                tracing::info!(%node, incarnation, "broker registered (fenced until caught up)");
                ControllerReply::Registered { index: 0 }
            }
            ControllerCommand::Heartbeat {
                node,
                incarnation,
                caught_up,
                shutting_down,
            } => self.heartbeat(
                &mut proposal,
                now_ms,
                *node,
                *incarnation,
                *caught_up,
                *shutting_down,
            ),
            ControllerCommand::CreateTopics(specs) => ControllerReply::Topics(
                specs
                    .iter()
                    .map(|spec| result(&spec.name, self.create_topic(&mut proposal, now_ms, spec)))
                    .collect(),
            ),
            ControllerCommand::DeleteTopics(names) => ControllerReply::Topics(
                names
                    .iter()
                    .map(|name| result(name, self.delete_topic(&mut proposal, name).map(|()| None)))
                    .collect(),
            ),
            ControllerCommand::CreatePartitions(topics)
            | ControllerCommand::ValidatePartitions(topics) => {
                let validate_only = matches!(command, ControllerCommand::ValidatePartitions(_));
                ControllerReply::Topics(
                    topics
                        .iter()
                        .map(|(name, count)| {
                            result(
                                name,
                                self.create_partitions(&mut proposal, name, *count, validate_only)
                                    .map(|()| None),
                            )
                        })
                        .collect(),
                )
            }
            ControllerCommand::AlterConfigs(alters) => ControllerReply::Topics(
                alters
                    .iter()
                    .map(|alter| {
                        result(
                            &alter.name,
                            self.alter_configs(&mut proposal, alter).map(|()| None),
                        )
                    })
                    .collect(),
            ),
            ControllerCommand::AllocateProducerIds { node } => {
                let first = self.image.producer_id_next();
                let size = self.config.producer_id_block_size;
                if first.checked_add(i64::from(size)).is_none() || size == 0 {
                    tracing::warn!(%node, first, size, "producer ids are exhausted");
                    ControllerReply::ProducerIds { first: -1, size: 0 }
                } else {
                    proposal.push(
                        MetadataRecord::ProducerIdsBlock {
                            node: *node,
                            first,
                            size,
                        },
                        &self.config.defaults,
                    );
                    ControllerReply::ProducerIds { first, size }
                }
            }
            ControllerCommand::AlterPartition {
                node,
                topic,
                partition,
                leader_epoch,
                partition_epoch,
                new_isr,
            } => self.alter_partition(
                &mut proposal,
                *node,
                (*topic, *partition),
                (*leader_epoch, *partition_epoch),
                new_isr,
            ),
            ControllerCommand::ElectLeaders {
                partitions,
                preferred,
            } => ControllerReply::Elections(self.elect_leaders(
                &mut proposal,
                partitions.as_deref(),
                *preferred,
            )),
        };
        (proposal.records, reply)
    }

    /// The active controller's periodic work at `now_ms`: the cluster id
    /// of an empty log, fencing brokers whose session expired (and moving
    /// their leaderships), unclean elections of leaderless partitions of
    /// topics allowing them, every `leader_rebalance_interval_ms` moving
    /// leaderships back to preferred replicas, `__consumer_offsets` once
    /// enough brokers are live. Records to propose, maybe none (see the
    /// module docs for why a tick never repeats a proposal). The cluster
    /// id of an empty log is proposed alone: it is the log's first record.
    pub fn tick(&mut self, now_ms: u64) -> Vec<MetadataRecord> {
        let Some(active_since_ms) = self.active_since_ms else {
            self.become_leader(now_ms);
            return self.tick(now_ms);
        };
        if self.image.cluster_id().is_none() {
            // The first record of every cluster, alone.
            return vec![MetadataRecord::ClusterId {
                id: self.ids.cluster_id(),
            }];
        }
        let mut proposal = Proposal::new(&self.image);
        let live: Vec<(NodeId, u64)> = self
            .image
            .live_brokers()
            .map(|b| (b.node, b.incarnation))
            .collect();
        for (node, incarnation) in live {
            let session = self.sessions.entry(node).or_insert(Session {
                incarnation,
                last_ms: now_ms,
            });
            if session.incarnation != incarnation {
                *session = Session {
                    incarnation,
                    last_ms: now_ms,
                };
            }
            let silent_ms = now_ms.saturating_sub(session.last_ms);
            if silent_ms > self.config.session_timeout_ms {
                tracing::warn!(%node, incarnation, silent_ms, "broker fenced: no heartbeat within the session timeout");
                self.fence(&mut proposal, node, incarnation);
            }
        }
        // A topic whose unclean.leader.election.enable was just set, or
        // whose last replica came back while it was already leaderless.
        self.elect_offline(&mut proposal, true);
        let interval = self.config.leader_rebalance_interval_ms;
        if interval > 0 && now_ms.saturating_sub(self.rebalanced_ms) >= interval {
            self.rebalanced_ms = now_ms;
            let before = proposal.records.len();
            self.elect_leaders(&mut proposal, None, true);
            let moved = proposal.records.len() - before;
            if moved > 0 {
                tracing::info!(moved, "leaderships moved back to preferred replicas");
            }
        }
        self.create_offsets_topic(&mut proposal, now_ms, active_since_ms);
        proposal.records
    }

    /// A heartbeat of `node`'s `incarnation`.
    fn heartbeat(
        &mut self,
        proposal: &mut Proposal,
        now_ms: u64,
        node: NodeId,
        incarnation: u64,
        caught_up: bool,
        shutting_down: bool,
    ) -> ControllerReply {
        let Some(broker) = self.image.broker(node) else {
            return ControllerReply::Heartbeat {
                fenced: true,
                shutdown_ready: false,
            };
        };
        if broker.incarnation != incarnation {
            // An older process (or one whose registration is lost): it
            // registers again.
            return ControllerReply::Heartbeat {
                fenced: true,
                shutdown_ready: false,
            };
        }
        let fenced = broker.fenced;
        self.sessions.insert(
            node,
            Session {
                incarnation,
                last_ms: now_ms,
            },
        );
        if shutting_down {
            if !fenced {
                tracing::info!(%node, incarnation, "controlled shutdown: broker fenced, leaderships moved");
                self.fence(proposal, node, incarnation);
            }
            let leads = proposal
                .image
                .topics()
                .flat_map(|t| t.partitions.iter())
                .any(|p| p.leader == Some(node));
            return ControllerReply::Heartbeat {
                fenced: true,
                shutdown_ready: !leads,
            };
        }
        if fenced && caught_up {
            tracing::info!(%node, incarnation, "broker unfenced");
            proposal.push(
                MetadataRecord::UnfenceBroker { node, incarnation },
                &self.config.defaults,
            );
            self.elect_offline(proposal, false);
            return ControllerReply::Heartbeat {
                fenced: false,
                shutdown_ready: false,
            };
        }
        ControllerReply::Heartbeat {
            fenced,
            shutdown_ready: false,
        }
    }

    /// `FenceBroker` for `node` and its leaderships moved away.
    fn fence(&self, proposal: &mut Proposal, node: NodeId, incarnation: u64) {
        proposal.push(
            MetadataRecord::FenceBroker { node, incarnation },
            &self.config.defaults,
        );
        self.move_leaderships(proposal, node);
    }

    /// Every partition `node` leads gets a new leader: the first ISR member
    /// in replica order that is live and not `node`; none: if the topic
    /// allows unclean elections, the first live replica, alone in the ISR;
    /// else no leader, the ISR kept as it is (KIP-966: a returning member
    /// of the last ISR can lead without losing acknowledged writes).
    /// Either way the leader epoch and partition epoch are bumped. And, as
    /// KRaft does for a fenced broker, `node` leaves every ISR it is in
    /// unless it is the last member: the leaders' high watermarks no
    /// longer wait for it, and it rejoins once it caught up again (the
    /// leader's AlterPartition).
    fn move_leaderships(&self, proposal: &mut Proposal, node: NodeId) {
        let mut changes = Vec::new();
        for topic in proposal.image.topics() {
            let unclean = unclean_allowed(topic);
            for (index, p) in topic.partitions.iter().enumerate() {
                let in_isr = p.isr.contains(&node);
                if p.leader != Some(node) && !in_isr {
                    continue;
                }
                let without: Vec<NodeId> = p.isr.iter().copied().filter(|n| *n != node).collect();
                if p.leader != Some(node) {
                    if !without.is_empty() {
                        changes.push(MetadataRecord::PartitionChange {
                            topic: topic.id,
                            partition: index as u32,
                            isr: without,
                            leader: p.leader,
                            leader_epoch: p.leader_epoch,
                            partition_epoch: p.partition_epoch.wrapping_add(1),
                        });
                    }
                    continue;
                }
                let (leader, isr) = match choose_leader(&proposal.image, p, Some(node), unclean) {
                    Some(Choice::Clean(next)) => (Some(next), without),
                    Some(Choice::Unclean(next)) => {
                        warn_unclean(topic, index, next, &p.isr);
                        (Some(next), vec![next])
                    }
                    None => (None, p.isr.clone()),
                };
                changes.push(leader_change(topic.id, index as u32, p, leader, isr));
            }
        }
        for change in changes {
            proposal.push(change, &self.config.defaults);
        }
    }

    /// Every partition without a leader gets one if it can: the first live
    /// ISR member in replica order; none and the topic allows unclean
    /// elections: the first live replica, alone in the ISR (logged at
    /// warn: acknowledged writes may be lost). Called when a broker is
    /// unfenced, and by `tick` for the topics allowing unclean elections
    /// (`unclean_only`: a clean candidate appears only by an unfence).
    fn elect_offline(&self, proposal: &mut Proposal, unclean_only: bool) {
        let mut changes = Vec::new();
        for topic in proposal.image.topics() {
            let unclean = unclean_allowed(topic);
            if unclean_only && !unclean {
                continue;
            }
            for (index, p) in topic.partitions.iter().enumerate() {
                if p.leader.is_some() {
                    continue;
                }
                match choose_leader(&proposal.image, p, None, unclean) {
                    Some(Choice::Clean(next)) => {
                        changes.push(leader_change(
                            topic.id,
                            index as u32,
                            p,
                            Some(next),
                            p.isr.clone(),
                        ));
                    }
                    Some(Choice::Unclean(next)) => {
                        warn_unclean(topic, index, next, &p.isr);
                        changes.push(leader_change(
                            topic.id,
                            index as u32,
                            p,
                            Some(next),
                            vec![next],
                        ));
                    }
                    None => {}
                }
            }
        }
        for change in changes {
            proposal.push(change, &self.config.defaults);
        }
    }

    /// An AlterPartition of `node` (the leader asking) for `at`, knowing
    /// `epochs` (leader epoch, partition epoch): compare-and-set, checked
    /// in the order of Kafka's `ReplicationControlManager`:
    /// - epochs newer than the image: `NotController` (this controller is
    ///   behind, so deposed; the leader finds the new one);
    /// - an older leader epoch: `FencedLeaderEpoch`;
    /// - `node` not the leader (at the current epoch): `InvalidRequest`;
    /// - an older partition epoch: `InvalidUpdateVersion`;
    /// - an ISR empty, without the leader, naming a node twice or a node
    ///   that is no replica: `InvalidRequest`;
    /// - an ISR adding a node that is not registered or is fenced:
    ///   `IneligibleReplica` (members already in the ISR may stay: only
    ///   the leader decides when a silent follower leaves).
    ///
    /// Accepted: one `PartitionChange` with the new ISR and the partition
    /// epoch + 1 (leader and leader epoch unchanged); the same ISR again:
    /// nothing proposed. The reply holds the partition as it is after the
    /// request, refused or not, so the leader can catch up.
    fn alter_partition(
        &self,
        proposal: &mut Proposal,
        node: NodeId,
        at: (TopicId, u32),
        epochs: (LeaderEpoch, PartitionEpoch),
        new_isr: &[NodeId],
    ) -> ControllerReply {
        let (topic_id, partition) = at;
        let (leader_epoch, partition_epoch) = epochs;
        let Some(p) = proposal
            .image
            .by_id(topic_id)
            .and_then(|t| t.partitions.get(partition as usize))
        else {
            return ControllerReply::AlterPartition {
                error: ErrorCode::UnknownTopicOrPartition,
                partition: None,
            };
        };
        let current = p.leader_epoch.get();
        let error = if leader_epoch.get() > current || partition_epoch > p.partition_epoch {
            ErrorCode::NotController
        } else if leader_epoch.get() < current {
            ErrorCode::FencedLeaderEpoch
        } else if p.leader != Some(node) {
            ErrorCode::InvalidRequest
        } else if partition_epoch < p.partition_epoch {
            ErrorCode::InvalidUpdateVersion
        } else if !new_isr.contains(&node)
            || new_isr
                .iter()
                .enumerate()
                .any(|(i, n)| new_isr[..i].contains(n))
            || new_isr.iter().any(|n| !p.replicas.contains(n))
        {
            ErrorCode::InvalidRequest
        } else if new_isr
            .iter()
            .any(|n| !p.isr.contains(n) && proposal.image.broker(*n).is_none_or(|b| b.fenced))
        {
            ErrorCode::IneligibleReplica
        } else {
            ErrorCode::None
        };
        if error != ErrorCode::None {
            tracing::info!(%node, topic = %topic_id, partition, ?error, ?new_isr, "AlterPartition refused");
            return ControllerReply::AlterPartition {
                error,
                partition: Some(leadership(p)),
            };
        }
        if p.isr != new_isr {
            let change = MetadataRecord::PartitionChange {
                topic: topic_id,
                partition,
                isr: new_isr.to_vec(),
                leader: p.leader,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch.wrapping_add(1),
            };
            tracing::info!(%node, topic = %topic_id, partition, from = ?p.isr, to = ?new_isr, "ISR changed");
            proposal.push(change, &self.config.defaults);
        }
        ControllerReply::AlterPartition {
            error: ErrorCode::None,
            partition: proposal
                .image
                .by_id(topic_id)
                .and_then(|t| t.partitions.get(partition as usize))
                .map(leadership),
        }
    }

    /// An ElectLeaders (Kafka's api 43): one result per partition asked
    /// for, in request order; asked for every partition (`None`), the
    /// results of the partitions that needed an election (as Kafka).
    /// `preferred`: the first replica leads if it is live and in the ISR
    /// (`ElectionNotNeeded` if it leads already, else
    /// `PreferredLeaderNotAvailable`). Else (unclean) a partition without
    /// a leader gets the first live ISR member, or the first live replica
    /// alone in the ISR, whatever the topic config says: the operator
    /// asked (`ElectionNotNeeded` if it has a leader,
    /// `EligibleLeadersNotAvailable` if no replica is live). Unknown
    /// partitions: `UnknownTopicOrPartition`. Records: at most one per
    /// partition, so fewer than the topics' partitions (bounded by
    /// `partitions_max`) or the request's (bounded by the decoder).
    fn elect_leaders(
        &self,
        proposal: &mut Proposal,
        partitions: Option<&[(TopicId, u32)]>,
        preferred: bool,
    ) -> Vec<ElectionResult> {
        let names: BTreeMap<TopicId, String> = proposal
            .image
            .topics()
            .map(|t| (t.id, t.name.clone()))
            .collect();
        let all: Vec<(TopicId, u32)>;
        let targets = match partitions {
            Some(targets) => targets,
            None => {
                all = proposal
                    .image
                    .topics()
                    .flat_map(|t| (0..t.partition_count()).map(move |p| (t.id, p)))
                    .collect();
                &all
            }
        };
        let mut results = Vec::new();
        for &(topic, partition) in targets {
            let outcome = self.elect_one(proposal, &names, (topic, partition), preferred);
            let (error, message) = match outcome {
                Ok(()) => (ErrorCode::None, None),
                Err((error, message)) => (error, message),
            };
            if partitions.is_some() || error != ErrorCode::ElectionNotNeeded {
                results.push(ElectionResult {
                    topic,
                    partition,
                    error,
                    message,
                });
            }
        }
        results
    }

    /// One partition of [`ControllerState::elect_leaders`].
    fn elect_one(
        &self,
        proposal: &mut Proposal,
        names: &BTreeMap<TopicId, String>,
        at: (TopicId, u32),
        preferred: bool,
    ) -> Result<(), (ErrorCode, Option<String>)> {
        let (topic_id, partition) = at;
        let Some(topic) = names.get(&topic_id).and_then(|n| proposal.image.get(n)) else {
            return Err((
                ErrorCode::UnknownTopicOrPartition,
                Some(format!("no topic has id {topic_id}")),
            ));
        };
        let Some(p) = topic.partitions.get(partition as usize) else {
            return Err((
                ErrorCode::UnknownTopicOrPartition,
                Some(format!(
                    "topic {:?} has no partition {partition}",
                    topic.name
                )),
            ));
        };
        let change = if preferred {
            let Some(&first) = p.replicas.first() else {
                return Err((ErrorCode::PreferredLeaderNotAvailable, None));
            };
            if p.leader == Some(first) {
                return Err((ErrorCode::ElectionNotNeeded, None));
            }
            let live = proposal.image.broker(first).is_some_and(|b| !b.fenced);
            if !live || !p.isr.contains(&first) {
                return Err((
                    ErrorCode::PreferredLeaderNotAvailable,
                    Some(format!(
                        "the preferred leader {first} is {}",
                        if live { "not in the ISR" } else { "not live" }
                    )),
                ));
            }
            tracing::info!(topic = %topic.name, partition, leader = %first, "preferred leader elected");
            leader_change(topic.id, partition, p, Some(first), p.isr.clone())
        } else {
            if p.leader.is_some() {
                return Err((ErrorCode::ElectionNotNeeded, None));
            }
            match choose_leader(&proposal.image, p, None, true) {
                Some(Choice::Clean(next)) => {
                    leader_change(topic.id, partition, p, Some(next), p.isr.clone())
                }
                Some(Choice::Unclean(next)) => {
                    warn_unclean(topic, partition as usize, next, &p.isr);
                    leader_change(topic.id, partition, p, Some(next), vec![next])
                }
                None => {
                    return Err((
                        ErrorCode::EligibleLeadersNotAvailable,
                        Some("no replica is live".to_owned()),
                    ))
                }
            }
        };
        proposal.push(change, &self.config.defaults);
        Ok(())
    }

    /// Unfenced brokers, by node id, as of the proposal.
    fn live(proposal: &Proposal) -> Vec<NodeId> {
        proposal.image.live_brokers().map(|b| b.node).collect()
    }

    /// A topic's config from its explicitly set keys, the rest the
    /// defaults (as the single node's `TopicAdmin::config_from`), and the
    /// keys and values within what a record carries.
    fn config_from(&self, overrides: &BTreeMap<String, String>) -> Result<TopicConfig, TopicError> {
        let mut config = self.config.defaults.clone();
        config.apply(overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        if config.log_append_time {
            return Err(refusal(
                ErrorCode::InvalidConfig,
                "message.timestamp.type = LogAppendTime is not supported yet",
            ));
        }
        config.log_config(&self.config.base)?;
        let probe = MetadataRecord::ConfigChange {
            topic: TopicId::default(),
            overrides: overrides.clone(),
        };
        if !probe.fits() {
            return Err(refusal(
                ErrorCode::InvalidConfig,
                "a topic config key or value is too long",
            ));
        }
        Ok(config)
    }

    fn room_for(&self, proposal: &Proposal, partitions: u32) -> bool {
        proposal.image.partition_total() + u64::from(partitions)
            <= u64::from(self.config.partitions_max)
    }

    /// One topic of a CreateTopics: checked in the order of the single
    /// node's `TopicAdmin::check` then `TopicRegistry::plan_create`.
    fn create_topic(
        &mut self,
        proposal: &mut Proposal,
        now_ms: u64,
        spec: &CreateTopicSpec,
    ) -> Result<Option<TopicId>, TopicError> {
        let live = Self::live(proposal);
        let assignments = spec.assignments.as_ref().filter(|a| !a.is_empty());
        let (partitions, placed) = match assignments {
            Some(assignments) => {
                let numbered: Vec<(i32, Vec<i32>)> = assignments
                    .iter()
                    .enumerate()
                    .map(|(p, nodes)| (p as i32, nodes.iter().map(|n| n.get() as i32).collect()))
                    .collect();
                let live_ids: Vec<i32> = live.iter().map(|n| n.get() as i32).collect();
                let partitions = partitions_from_assignments(
                    spec.partitions
                        .map_or(-1, |p| i32::try_from(p).unwrap_or(i32::MAX)),
                    spec.replication_factor
                        .map_or(-1, |f| i16::try_from(f).unwrap_or(i16::MAX)),
                    &numbered,
                    &live_ids,
                )?;
                (partitions, Some(assignments.clone()))
            }
            None => {
                let partitions = match spec.partitions {
                    None => self.config.default_partitions,
                    Some(0) => {
                        return Err(refusal(
                            ErrorCode::InvalidPartitions,
                            "num_partitions = 0: must be positive or -1",
                        ))
                    }
                    Some(n) => n,
                };
                let factor = spec
                    .replication_factor
                    .unwrap_or(self.config.default_replication_factor);
                if factor == 0 {
                    return Err(replication_refusal(PlacementError::ZeroReplicationFactor));
                }
                if usize::from(factor) > live.len() {
                    return Err(replication_refusal(PlacementError::NotEnoughBrokers {
                        factor,
                        live: live.len(),
                    }));
                }
                (partitions, None)
            }
        };
        self.config_from(&spec.configs)?;
        validate_topic_name(&spec.name)?;
        if proposal.image.get(&spec.name).is_some() {
            return Err(refusal(
                ErrorCode::TopicAlreadyExists,
                format!("topic {:?} already exists", spec.name),
            ));
        }
        if !self.room_for(proposal, partitions) || partitions as usize >= proposal.room() {
            return Err(refusal(
                ErrorCode::PolicyViolation,
                format!(
                    "creating {partitions} partitions would exceed the broker's limit of {} partitions",
                    self.config.partitions_max
                ),
            ));
        }
        let placed = match placed {
            Some(placed) => placed,
            None => {
                let factor = spec
                    .replication_factor
                    .unwrap_or(self.config.default_replication_factor);
                place(&proposal.image, &live, partitions, factor).map_err(replication_refusal)?
            }
        };
        if placed.iter().any(|r| r.len() > REPLICAS_MAX) {
            return Err(refusal(
                ErrorCode::InvalidReplicationFactor,
                format!("a partition may have at most {REPLICAS_MAX} replicas"),
            ));
        }
        if spec.validate_only {
            return Ok(None);
        }
        let id = self.fresh_topic_id(proposal);
        self.propose_topic(
            proposal,
            id,
            &spec.name,
            now_ms,
            spec.configs.clone(),
            placed,
        );
        tracing::info!(topic = %spec.name, %id, partitions, "topic created");
        Ok(Some(id))
    }

    fn fresh_topic_id(&mut self, proposal: &Proposal) -> TopicId {
        loop {
            let id = self.ids.topic_id();
            if id != TopicId::default() && proposal.image.by_id(id).is_none() {
                return id;
            }
        }
    }

    fn propose_topic(
        &self,
        proposal: &mut Proposal,
        id: TopicId,
        name: &str,
        now_ms: u64,
        overrides: BTreeMap<String, String>,
        placed: Vec<Vec<NodeId>>,
    ) {
        proposal.push(
            MetadataRecord::Topic {
                id,
                name: name.to_owned(),
                created_ms: i64::try_from(now_ms).unwrap_or(i64::MAX),
                overrides,
            },
            &self.config.defaults,
        );
        for (index, replicas) in placed.into_iter().enumerate() {
            proposal.push(
                MetadataRecord::Partition {
                    topic: id,
                    partition: index as u32,
                    isr: replicas.clone(),
                    leader: replicas.first().copied(),
                    replicas,
                    leader_epoch: LeaderEpoch(0),
                    partition_epoch: 0,
                },
                &self.config.defaults,
            );
        }
    }

    fn delete_topic(&self, proposal: &mut Proposal, name: &str) -> Result<(), TopicError> {
        if name == OFFSETS_TOPIC {
            return Err(refusal(
                ErrorCode::InvalidTopicException,
                "the consumer offsets topic cannot be deleted",
            ));
        }
        let Some(topic) = proposal.image.get(name) else {
            return Err(unknown_topic(name));
        };
        let id = topic.id;
        proposal.push(MetadataRecord::RemoveTopic { id }, &self.config.defaults);
        tracing::info!(topic = %name, %id, "topic deleted");
        Ok(())
    }

    fn create_partitions(
        &self,
        proposal: &mut Proposal,
        name: &str,
        count: u32,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        if name == OFFSETS_TOPIC {
            return Err(refusal(
                ErrorCode::PolicyViolation,
                "the consumer offsets topic cannot grow: groups would move and lose their offsets",
            ));
        }
        let Some(topic) = proposal.image.get(name) else {
            return Err(unknown_topic(name));
        };
        let current = topic.partition_count();
        if count <= current {
            return Err(refusal(
                ErrorCode::InvalidPartitions,
                format!(
                    "topic {name:?} has {current} partitions; the new count {count} must be larger"
                ),
            ));
        }
        let added = count - current;
        if !self.room_for(proposal, added) || added as usize > proposal.room() {
            return Err(refusal(
                ErrorCode::InvalidPartitions,
                format!(
                    "adding {added} partitions would exceed the broker's limit of {} partitions",
                    self.config.partitions_max
                ),
            ));
        }
        let factor = topic.partitions.first().map_or(1, |p| {
            u16::try_from(p.replicas.len()).unwrap_or(u16::MAX).max(1)
        });
        let id = topic.id;
        let placed = place(&proposal.image, &Self::live(proposal), added, factor)
            .map_err(replication_refusal)?;
        if validate_only {
            return Ok(());
        }
        for (offset, replicas) in placed.into_iter().enumerate() {
            proposal.push(
                MetadataRecord::Partition {
                    topic: id,
                    partition: current + offset as u32,
                    isr: replicas.clone(),
                    leader: replicas.first().copied(),
                    replicas,
                    leader_epoch: LeaderEpoch(0),
                    partition_epoch: 0,
                },
                &self.config.defaults,
            );
        }
        tracing::info!(topic = %name, from = current, to = count, "partitions added");
        Ok(())
    }

    fn alter_configs(
        &self,
        proposal: &mut Proposal,
        alter: &AlterTopicConfigs,
    ) -> Result<(), TopicError> {
        if alter.name == OFFSETS_TOPIC {
            return Err(refusal(
                ErrorCode::PolicyViolation,
                "the consumer offsets topic's configs are fixed (its retention must stay off until \
                 compaction exists)",
            ));
        }
        let Some(topic) = proposal.image.get(&alter.name) else {
            return Err(unknown_topic(&alter.name));
        };
        let id = topic.id;
        self.config_from(&alter.overrides)?;
        if alter.validate_only {
            return Ok(());
        }
        proposal.push(
            MetadataRecord::ConfigChange {
                topic: id,
                overrides: alter.overrides.clone(),
            },
            &self.config.defaults,
        );
        tracing::info!(topic = %alter.name, "topic config changed");
        Ok(())
    }

    /// `__consumer_offsets`, once it does not exist and either every voter
    /// is registered and unfenced, or at least one broker is and this
    /// controller has been active for longer than the session timeout
    /// (voters that never come must not keep groups from working). Its
    /// configs are those the single node gave it (`server.rs`): retention
    /// off until compaction exists, flush before ack, Kafka's segment
    /// size. Not counted against `partitions_max`: it must exist.
    fn create_offsets_topic(&mut self, proposal: &mut Proposal, now_ms: u64, active_since_ms: u64) {
        if proposal.image.get(OFFSETS_TOPIC).is_some() {
            return;
        }
        let live = Self::live(proposal);
        if live.is_empty() {
            return;
        }
        let voters_live = self.config.voters.iter().all(|v| live.contains(v));
        let waited = now_ms.saturating_sub(active_since_ms) > self.config.session_timeout_ms;
        if !voters_live && !waited {
            return;
        }
        let overrides = offsets_topic_overrides(&self.config.defaults);
        if let Err(error) = self.config_from(&overrides) {
            tracing::warn!(%error, "cannot create {OFFSETS_TOPIC}");
            return;
        }
        let factor = self
            .config
            .offsets_replication_factor
            .clamp(1, u16::try_from(live.len()).unwrap_or(u16::MAX));
        let placed = match place(
            &proposal.image,
            &live,
            self.config.offsets_partitions,
            factor,
        ) {
            Ok(placed) => placed,
            Err(error) => {
                tracing::warn!(%error, "cannot place {OFFSETS_TOPIC}");
                return;
            }
        };
        let id = self.fresh_topic_id(proposal);
        self.propose_topic(proposal, id, OFFSETS_TOPIC, now_ms, overrides, placed);
        tracing::info!(%id, partitions = self.config.offsets_partitions, factor, "{OFFSETS_TOPIC} created");
    }
}

/// Kafka's topic config allowing an out-of-sync replica to lead.
const UNCLEAN_LEADER_ELECTION: &str = "unclean.leader.election.enable";

/// Whether `topic` allows unclean leader elections (its config, from its
/// overrides and the broker defaults; an inert key to the log itself).
fn unclean_allowed(topic: &TopicImage) -> bool {
    topic
        .config
        .inert
        .get(UNCLEAN_LEADER_ELECTION)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// A leader chosen by [`choose_leader`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Choice {
    /// A live ISR member: nothing acknowledged is lost.
    Clean(NodeId),
    /// A live replica outside the ISR: it leads alone.
    Unclean(NodeId),
}

/// The leader `p` gets in an election (`gone`: a node leaving, never
/// chosen): the first live ISR member in replica order; none and
/// `unclean`: the first live replica.
fn choose_leader(
    image: &MetadataImage,
    p: &PartitionImage,
    gone: Option<NodeId>,
    unclean: bool,
) -> Option<Choice> {
    let live = |r: &NodeId| Some(*r) != gone && image.broker(*r).is_some_and(|b| !b.fenced);
    if let Some(next) = p
        .replicas
        .iter()
        .copied()
        .find(|r| p.isr.contains(r) && live(r))
    {
        return Some(Choice::Clean(next));
    }
    if unclean {
        return p.replicas.iter().copied().find(live).map(Choice::Unclean);
    }
    None
}

fn warn_unclean(topic: &TopicImage, partition: usize, leader: NodeId, isr: &[NodeId]) {
    tracing::warn!(
        topic = %topic.name,
        partition,
        %leader,
        last_isr = ?isr,
        "unclean leader election: no ISR member is live, an out-of-sync replica leads \
         (acknowledged records may be lost)"
    );
}

/// A `PartitionChange` giving `p` `leader` and `isr`, both epochs bumped.
fn leader_change(
    topic: TopicId,
    partition: u32,
    p: &PartitionImage,
    leader: Option<NodeId>,
    isr: Vec<NodeId>,
) -> MetadataRecord {
    MetadataRecord::PartitionChange {
        topic,
        partition,
        isr,
        leader,
        leader_epoch: LeaderEpoch(p.leader_epoch.get().wrapping_add(1)),
        partition_epoch: p.partition_epoch.wrapping_add(1),
    }
}

/// What an AlterPartition answers of `p`.
fn leadership(p: &PartitionImage) -> PartitionLeadership {
    PartitionLeadership {
        leader: p.leader,
        leader_epoch: p.leader_epoch,
        partition_epoch: p.partition_epoch,
        isr: p.isr.clone(),
    }
}

/// The overrides of `__consumer_offsets`, given the broker defaults: as
/// the single node's `server.rs::create_offsets_topic` sets them.
pub fn offsets_topic_overrides(defaults: &TopicConfig) -> BTreeMap<String, String> {
    // Kafka's offsets.topic.segment.bytes.
    let segment_bytes = defaults.segment_bytes.min(100 << 20).to_string();
    [
        ("retention.ms", "-1"),
        ("retention.bytes", "-1"),
        ("flush.before.ack", "true"),
        ("segment.bytes", segment_bytes.as_str()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value.to_owned()))
    .collect()
}

#[cfg(test)]
mod tests;
