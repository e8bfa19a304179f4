//! The per-shard service that ties a shard's partitions, its view of the
//! catalog, the mesh to the other shards and (on shard 0) the topic
//! registry together. The dispatcher turns requests into [`Op`]s and runs
//! each on the shard that owns it with [`ShardService::execute`].

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fjord_schema::{
    ErrorCode, LeaderEpoch, NodeId, PartitionId, ProducerEpoch, ProducerId, ShardId,
};
use fjord_storage::LogConfig;

use crate::batches::VerifiedBatches;
use crate::controller::commands::{
    AlterTopicConfigs, ControllerCommand, ControllerReply, CreateTopicSpec, TopicResult,
};
use crate::controller::driver::{
    ClusterConfig, ControllerHandle, ControllerUnavailable, QuorumError, Recovered,
};
use crate::controller::records::MetadataRecord;
use crate::controller::transport::Notify;
use crate::datadir::MetaFile;
use crate::error::{BrokerError, Joined, PartitionsError, ShardUnavailable, TopicOpError};
use crate::group::host::{GroupHost, GroupShard, OffsetsWriteError};
use crate::group::offsets_log::OFFSETS_TOPIC;
use crate::mesh::{Mesh, OpHandler};
use crate::metadata::catalog::{Catalog, QuorumView, TopicMeta};
use crate::metadata::image::{MetadataImage, PartitionEpoch, PartitionImage, TopicId};
use crate::metadata::registry::AsyncRegistry;
use crate::metadata::registry::TopicRegistry;
use crate::ops::{AlterSpec, CreateSpec, ElectionOutcome, Op, OpResult, TopicOutcome};
use crate::partition::manager::PartitionManager;
use crate::partition::producer_ids::ProducerIds;
use crate::partition::state::Role;
use crate::topic::{partitions_from_assignments, TopicConfig, TopicError};

/// The shard that owns the topic registry.
pub const REGISTRY_SHARD: ShardId = ShardId(0);

/// Topic admin through the controller, and this node following the
/// metadata log.
///
/// Lives on: shard 0 only. Owns: this node's [`AsyncRegistry`] (the
/// followed image and the node's shard table, persisted), the handle to
/// the controller (set once it runs), and how far the published catalog
/// has applied the metadata log. Lifecycle: built from the registry the
/// main thread loaded at startup; [`ShardService::start_controller`]
/// attaches the controller after recovery; serves admin requests (each
/// a controller command, answered once committed and applied here) until
/// the shard stops. Shard table writes run on glommio's blocking pool.
#[derive(Debug)]
pub struct TopicAdmin {
    registry: AsyncRegistry,
    controller: OnceCell<ControllerHandle>,
    defaults: TopicConfig,
    base: LogConfig,
    default_partitions: u32,
    /// This node.
    node: NodeId,
    /// The metadata log index the catalog published to every shard has
    /// applied.
    published: Watermark,
    /// This node's replicas of a topic that failed to open or be deleted
    /// when the last image was applied, by topic id; reported to the admin
    /// request that asked for the change (then forgotten). Bounded by the
    /// topics of the last images.
    failures: RefCell<BTreeMap<TopicId, Vec<PartitionsError>>>,
}

impl TopicAdmin {
    pub fn new(
        registry: TopicRegistry,
        base: LogConfig,
        default_partitions: u32,
        node: NodeId,
    ) -> TopicAdmin {
        TopicAdmin {
            registry: AsyncRegistry::new(registry),
            controller: OnceCell::new(),
            defaults: TopicConfig::from_log_config(&base),
            base,
            default_partitions,
            node,
            published: Watermark::default(),
            failures: RefCell::new(BTreeMap::new()),
        }
    }

    /// Checks what this node can of a create request (counts, configs,
    /// assignments against the live brokers `live`); the controller checks
    /// the rest against the latest image.
    fn check(
        &self,
        spec: &CreateSpec,
        live: &[i32],
        validate_only: bool,
    ) -> Result<CreateTopicSpec, TopicOpError> {
        let mut assignments = None;
        let partitions = match spec.num_partitions {
            _ if !spec.assignments.is_empty() => {
                // Checked here for Kafka's messages; the count is the
                // assignments' (Kafka's -1).
                partitions_from_assignments(
                    spec.num_partitions,
                    spec.replication_factor,
                    &spec.assignments,
                    live,
                )?;
                let mut sorted = spec.assignments.clone();
                sorted.sort_by_key(|(p, _)| *p);
                assignments = Some(
                    sorted
                        .into_iter()
                        .map(|(_, nodes)| nodes.into_iter().map(|n| NodeId(n as u32)).collect())
                        .collect(),
                );
                None
            }
            -1 => None,
            n if n > 0 => Some(n as u32),
            n => return Err(TopicOpError::PartitionCount(n)),
        };
        let replication_factor = match spec.replication_factor {
            _ if assignments.is_some() => None,
            -1 => None,
            n if n > 0 => Some(n as u16),
            n => return Err(TopicOpError::ReplicationFactor(n)),
        };
        // Later duplicates win, as when applied in order.
        let overrides: BTreeMap<String, String> = spec.configs.iter().cloned().collect();
        self.config_from(&overrides)?;
        Ok(CreateTopicSpec {
            name: spec.name.clone(),
            partitions,
            replication_factor,
            assignments,
            configs: overrides,
            validate_only,
        })
    }

    /// A topic's config from its explicitly set keys, the rest the broker
    /// defaults; CreateTopics and the config alters check values here.
    fn config_from(
        &self,
        overrides: &BTreeMap<String, String>,
    ) -> Result<TopicConfig, TopicOpError> {
        let mut config = self.defaults.clone();
        config.apply(overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        if config.log_append_time {
            return Err(TopicOpError::LogAppendTime);
        }
        config.log_config(&self.base)?;
        Ok(config)
    }

    /// The overrides `spec` leaves on its topic, checked.
    fn check_alter(&self, spec: &AlterSpec) -> Result<BTreeMap<String, String>, TopicOpError> {
        if spec.name == OFFSETS_TOPIC {
            return Err(TopicOpError::OffsetsTopicConfigsFixed);
        }
        let image = self.registry.image();
        let Some(topic) = image.get(&spec.name) else {
            return Err(TopicOpError::UnknownTopic(spec.name.clone()));
        };
        let current = topic.overrides.clone().unwrap_or_default();
        let overrides = spec.alter.overrides(&current, &topic.config)?;
        self.config_from(&overrides)?;
        Ok(overrides)
    }

    /// The error of one topic's controller result, with this node's local
    /// failures to open its replicas (a topic created, its logs not open
    /// here: they open at the next start).
    fn outcome_error(&self, result: &TopicResult) -> Option<TopicOpError> {
        if result.error != ErrorCode::None {
            return Some(TopicOpError::Refused(TopicError::new(
                result.error,
                result.message.clone().unwrap_or_default(),
            )));
        }
        let failures = result
            .id
            .map(|id| self.take_failures(id))
            .unwrap_or_default();
        (!failures.is_empty()).then_some(TopicOpError::Storage(Joined(failures)))
    }

    fn record(&self, id: TopicId, errors: Vec<PartitionsError>) {
        let mut failures = self.failures.borrow_mut();
        if errors.is_empty() {
            failures.remove(&id);
        } else {
            // Bounded: one entry per topic that failed, dropped when read
            // or when a later image applies cleanly.
            failures.insert(id, errors);
        }
    }

    fn take_failures(&self, id: TopicId) -> Vec<PartitionsError> {
        self.failures.borrow_mut().remove(&id).unwrap_or_default()
    }
}

/// How far the catalog published to every shard has applied the metadata
/// log, and the tasks waiting for it to reach an index (on the coalescing
/// [`Notify`] the controller driver uses too). Lives on shard 0.
#[derive(Debug, Default)]
struct Watermark {
    value: Cell<u64>,
    advanced: Notify,
}

impl Watermark {
    fn get(&self) -> u64 {
        self.value.get()
    }

    fn advance(&self, value: u64) {
        if value > self.value.get() {
            self.value.set(value);
            self.advanced.notify();
        }
    }

    async fn wait_for(&self, value: u64) {
        loop {
            let seen = self.advanced.version();
            if self.value.get() >= value {
                return;
            }
            self.advanced.wait_past(seen).await;
        }
    }
}

/// Everything one shard serves with.
///
/// Lives on: every shard, one instance shared by the dispatcher, the mesh
/// tasks and the shard's timers. Owns: the shard's [`PartitionManager`],
/// its catalog snapshot, its side of the [`Mesh`], and on shard 0 the
/// [`TopicAdmin`]. Lifecycle: created at shard start → partitions opened
/// (recovery) → mesh started → serve → `partitions.close_all()` after the
/// connections drained.
#[derive(Debug)]
pub struct ShardService {
    pub shard: ShardId,
    /// This node.
    pub node: NodeId,
    pub partitions: PartitionManager,
    /// This shard's block of producer ids.
    producer_ids: ProducerIds,
    catalog: RefCell<Arc<Catalog>>,
    mesh: OnceCell<Rc<Mesh>>,
    admin: Option<TopicAdmin>,
    groups: OnceCell<GroupHost>,
}

type LocalFuture<T> = Pin<Box<dyn Future<Output = T>>>;

impl OpHandler for ShardService {
    fn handle(self: Rc<Self>, op: Op) -> LocalFuture<OpResult> {
        self.run_local(op)
    }
}

impl GroupShard for ShardService {
    fn group_host(&self) -> Option<&GroupHost> {
        self.groups.get()
    }

    fn offsets_partition_count(&self) -> Option<u32> {
        self.catalog()
            .get(OFFSETS_TOPIC)
            .map(TopicMeta::partition_count)
    }

    fn led_offsets_partitions(&self) -> Vec<(PartitionId, LeaderEpoch)> {
        let catalog = self.catalog();
        let Some(meta) = catalog.get(OFFSETS_TOPIC) else {
            return Vec::new();
        };
        (0..meta.partition_count())
            .map(PartitionId)
            .filter(|&p| meta.shard_of(p) == Some(self.shard))
            .filter_map(|p| {
                let image = meta.partition(p)?;
                (image.leader == Some(self.node)).then_some((p, image.leader_epoch))
            })
            // An offline one's ERROR is logged already.
            .filter(|&(p, _)| self.partitions.offline(OFFSETS_TOPIC, p).is_none())
            .collect()
    }

    async fn offsets_log_bounds(&self, partition: PartitionId) -> Result<(i64, i64), ErrorCode> {
        // This node's own replica, leader or follower: an offset past its
        // end answers OFFSET_OUT_OF_RANGE with the start and the end.
        let read = self
            .partitions
            .read_local(OFFSETS_TOPIC, partition, i64::MAX, 0)
            .await;
        match read.error {
            ErrorCode::None | ErrorCode::OffsetOutOfRange => {
                Ok((read.log_start_offset, read.high_watermark))
            }
            code => Err(code),
        }
    }

    async fn read_offsets(
        &self,
        partition: PartitionId,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Vec<Bytes>, ErrorCode> {
        // The local log up to its end, as a follower's fetch reads it (a
        // consumer's fetch stops at the high watermark, which a new
        // leader's may trail: see `group::host`).
        let read = self
            .partitions
            .read_local(OFFSETS_TOPIC, partition, offset, max_bytes)
            .await;
        match read.error {
            ErrorCode::None => Ok(read.batches),
            code => Err(code),
        }
    }

    async fn append_offsets(
        &self,
        partition: PartitionId,
        batch: Bytes,
    ) -> Result<(), OffsetsWriteError> {
        // The coordinator's encoding, back to back: checked as a native
        // request's batches are (not a client's hot path).
        let batches = VerifiedBatches::verify(&batch).map_err(|error| OffsetsWriteError {
            code: error.error_code(),
            message: Some(error.to_string()),
        })?;
        // acks = -1: acknowledged once the high watermark passed the batch,
        // fdatasynced on every ISR member (the topic keeps
        // flush.before.ack = true); the coordinator maps the refusals
        // (`group::coordinator::persist_error`).
        let result = self
            .partitions
            .produce(
                OFFSETS_TOPIC,
                partition,
                batches,
                -1,
                OFFSETS_COMMIT_TIMEOUT,
            )
            .await;
        match result.error {
            ErrorCode::None => Ok(()),
            code => Err(OffsetsWriteError {
                code,
                message: result.message,
            }),
        }
    }
}

impl ShardService {
    pub fn new(
        shard: ShardId,
        node: NodeId,
        partitions: PartitionManager,
        catalog: Arc<Catalog>,
        admin: Option<TopicAdmin>,
    ) -> ShardService {
        assert_eq!(admin.is_some(), shard == REGISTRY_SHARD);
        ShardService {
            shard,
            node,
            partitions,
            producer_ids: ProducerIds::new(),
            catalog: RefCell::new(catalog),
            mesh: OnceCell::new(),
            admin,
            groups: OnceCell::new(),
        }
    }

    /// Attaches the group coordinator host (before serving).
    pub fn set_groups(&self, host: GroupHost) {
        let attached = self.groups.set(host).is_ok();
        assert!(attached, "group host attached twice");
    }

    pub fn groups(&self) -> Option<&GroupHost> {
        self.groups.get()
    }

    /// Attaches the mesh (multi-shard brokers) and starts its tasks.
    pub fn start_mesh(self: &Rc<Self>, mesh: Mesh) {
        let mesh = Rc::new(mesh);
        mesh.start(Rc::downgrade(self));
        let attached = self.mesh.set(mesh).is_ok();
        assert!(attached, "mesh started twice");
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.borrow().clone()
    }

    /// Opens this node's replicas the catalog places on this shard
    /// (recovery), as leaders or followers as the image says.
    pub async fn open_placed(&self) -> Result<(), crate::error::OpenError> {
        let catalog = self.catalog();
        for (topic, partitions) in catalog.placed_on(self.shard, self.node) {
            self.partitions
                .open_or_offline(&topic.name, &partitions, &topic.config)
                .await?;
            self.apply_leaderships(&topic.name, &leaderships(topic, &partitions));
        }
        Ok(())
    }

    /// The image's leadership of these open partitions of `topic` here.
    /// Returns the partitions whose role changed.
    fn apply_leaderships(
        &self,
        topic: &str,
        partitions: &[(PartitionId, PartitionImage)],
    ) -> Vec<(PartitionId, Role)> {
        self.partitions
            .apply_leaderships(topic, self.node, partitions)
    }

    /// Shard 0: a leader's ISR change, through the controller
    /// (compare-and-set); NONE once committed. The change applies when
    /// the committed image comes back.
    async fn alter_partition(
        &self,
        topic: &str,
        partition: PartitionId,
        leader_epoch: LeaderEpoch,
        partition_epoch: PartitionEpoch,
        new_isr: Vec<NodeId>,
    ) -> ErrorCode {
        let Ok(admin) = self.admin() else {
            return ErrorCode::NotController;
        };
        let Some(controller) = admin.controller.get() else {
            return ErrorCode::NotController;
        };
        let Some(topic_id) = self.catalog().get(topic).map(|t| t.id) else {
            return ErrorCode::UnknownTopicOrPartition;
        };
        let command = ControllerCommand::AlterPartition {
            node: admin.node,
            topic: topic_id,
            partition: partition.get(),
            leader_epoch,
            partition_epoch,
            new_isr,
        };
        match controller.submit(command).await {
            Ok(answer) => match answer.reply {
                ControllerReply::AlterPartition { error, .. } => error,
                other => {
                    tracing::warn!(?other, "unexpected AlterPartition reply");
                    ErrorCode::UnknownServerError
                }
            },
            Err(error) => {
                tracing::debug!(%error, "AlterPartition not sent");
                ErrorCode::RequestTimedOut
            }
        }
    }

    /// Every shard, for its life: sends the ISR changes its leaders
    /// propose to the controller (through shard 0), one at a time; a
    /// refused one lets its partition propose again.
    pub async fn send_isr_changes(self: Rc<Self>) {
        loop {
            let proposals = self.partitions.next_proposals().await;
            for proposal in proposals {
                let op = Op::AlterPartition {
                    topic: proposal.topic.clone(),
                    partition: proposal.partition,
                    leader_epoch: proposal.leader_epoch,
                    partition_epoch: proposal.change.partition_epoch,
                    new_isr: proposal.change.new_isr.clone(),
                };
                let error = match self.execute(REGISTRY_SHARD, op).await {
                    OpResult::Altered(error) => error,
                    _ => ErrorCode::UnknownServerError,
                };
                if error == ErrorCode::None {
                    tracing::info!(topic = %proposal.topic, partition = %proposal.partition, isr = ?proposal.change.new_isr, "ISR change committed");
                } else {
                    tracing::info!(topic = %proposal.topic, partition = %proposal.partition, isr = ?proposal.change.new_isr, ?error, "ISR change refused");
                    self.partitions.isr_change_rejected(
                        &proposal.topic,
                        proposal.partition,
                        proposal.change.partition_epoch,
                    );
                }
            }
        }
    }

    /// Runs `op` on shard `target`: here, or across the mesh.
    pub fn execute(self: &Rc<Self>, target: ShardId, op: Op) -> LocalFuture<OpResult> {
        if target == self.shard {
            return self.clone().run_local(op);
        }
        match self.mesh.get() {
            Some(mesh) => {
                let mesh = mesh.clone();
                Box::pin(async move { mesh.call(target, op).await })
            }
            None => {
                Box::pin(
                    async move { OpResult::Unavailable(ShardUnavailable::NotReachable(target)) },
                )
            }
        }
    }

    fn run_local(self: Rc<Self>, op: Op) -> LocalFuture<OpResult> {
        Box::pin(async move {
            let partitions = &self.partitions;
            match op {
                Op::Produce {
                    topic,
                    partition,
                    records,
                    acks,
                    timeout,
                } => OpResult::Produce(
                    partitions
                        .produce(&topic, partition, records, acks, timeout)
                        .await,
                ),
                Op::Fetch {
                    topic,
                    partition,
                    offset,
                    max_bytes,
                    current_leader_epoch,
                    replica_id,
                    replica_durable_end,
                } => OpResult::Fetch(
                    partitions
                        .fetch(
                            &topic,
                            partition,
                            offset,
                            max_bytes,
                            current_leader_epoch,
                            replica_id.map(|node| (node, replica_durable_end)),
                        )
                        .await,
                ),
                Op::OffsetForLeaderEpoch {
                    topic,
                    partition,
                    current_leader_epoch,
                    leader_epoch,
                } => OpResult::EpochEnd(partitions.epoch_end(
                    &topic,
                    partition,
                    current_leader_epoch,
                    leader_epoch,
                )),
                Op::WaitForData {
                    topic,
                    partition,
                    offset,
                    deadline,
                    replica,
                } => {
                    partitions
                        .wait_for_data(&topic, partition, offset, deadline, replica)
                        .await;
                    OpResult::Waited
                }
                Op::ListOffsets {
                    topic,
                    partition,
                    timestamp,
                    current_leader_epoch,
                    replica_id,
                } => {
                    // Replicas list offsets as consumers do until issue 14
                    // gives them the log end.
                    let _ = replica_id;
                    OpResult::ListOffsets(
                        partitions
                            .list_offsets(&topic, partition, timestamp, current_leader_epoch)
                            .await,
                    )
                }
                Op::Open {
                    topic,
                    partitions: ids,
                    leaderships,
                    config,
                } => {
                    let opened = partitions
                        .open(&topic, &ids, &config)
                        .await
                        .map_err(PartitionsError::Open);
                    let leaderships: Vec<_> = ids.iter().copied().zip(leaderships).collect();
                    self.apply_leaderships(&topic, &leaderships);
                    OpResult::Done(opened)
                }
                Op::Leadership {
                    topic,
                    partitions: changed,
                } => {
                    let moved = self.apply_leaderships(&topic, &changed);
                    if topic == OFFSETS_TOPIC {
                        // A replica that stops leading unloads its groups at
                        // once (the catalog swap that follows loads the
                        // groups of partitions led here).
                        if let Some(host) = self.groups() {
                            for (partition, role) in moved {
                                if let Role::Follower { .. } = role {
                                    host.offsets_leadership(&self, partition, None);
                                }
                            }
                        }
                    }
                    OpResult::Done(Ok(()))
                }
                Op::AlterPartition {
                    topic,
                    partition,
                    leader_epoch,
                    partition_epoch,
                    new_isr,
                } => OpResult::Altered(
                    self.alter_partition(&topic, partition, leader_epoch, partition_epoch, new_isr)
                        .await,
                ),
                Op::ProducerIdBlock => OpResult::ProducerIdBlock(self.producer_id_block().await),
                Op::Delete {
                    topic,
                    partitions: ids,
                } => OpResult::Done(
                    partitions
                        .delete(&topic, &ids)
                        .await
                        .map_err(PartitionsError::Delete),
                ),
                Op::Health {
                    topic,
                    partitions: ids,
                } => OpResult::Health(partitions.health(&topic, &ids)),
                Op::Reconfigure {
                    topic,
                    partitions: ids,
                    config,
                } => OpResult::Done(
                    partitions
                        .reconfigure(&topic, &ids, &config)
                        .await
                        .map_err(PartitionsError::Reconfigure),
                ),
                Op::AlterTopicConfigs {
                    topics,
                    validate_only,
                } => OpResult::Topics(self.alter_topic_configs(topics, validate_only).await),
                Op::CreatePartitions {
                    topics,
                    validate_only,
                } => OpResult::Topics(self.create_partitions(topics, validate_only).await),
                Op::SetCatalog(catalog) => {
                    *self.catalog.borrow_mut() = catalog;
                    // The offsets partitions led here load their groups,
                    // those no longer led here drop them.
                    if let Some(host) = self.groups() {
                        host.follow_catalog(&self);
                    }
                    OpResult::Done(Ok(()))
                }
                Op::CreateTopics {
                    topics,
                    validate_only,
                } => OpResult::Topics(self.create_topics(topics, validate_only).await),
                Op::DeleteTopics { topics } => OpResult::Topics(self.delete_topics(topics).await),
                Op::ElectLeaders {
                    partitions,
                    preferred,
                } => OpResult::Elections(self.elect_leaders(partitions, preferred).await),
                Op::Group(op) => match self.groups() {
                    Some(host) => OpResult::Group(host.call(&self, op).await),
                    None => OpResult::Unavailable(ShardUnavailable::NoGroups(self.shard)),
                },
            }
        })
    }

    fn admin(&self) -> Result<&TopicAdmin, TopicOpError> {
        self.admin
            .as_ref()
            .ok_or(TopicOpError::NotRegistryShard(self.shard))
    }

    /// Shard 0: starts the controller driver (the metadata quorum, this
    /// broker's registration) and the task that follows the metadata log;
    /// returns once the controller runs. The node serves clients once
    /// [`Self::wait_unfenced`] returns.
    pub fn start_controller(
        self: &Rc<Self>,
        config: ClusterConfig,
        recovered: Recovered,
        bootstrap: Vec<MetadataRecord>,
    ) -> Result<(), QuorumError> {
        let Ok(admin) = self.admin() else {
            return Ok(());
        };
        let handle = ControllerHandle::start(config, recovered, bootstrap)?;
        let started = admin.controller.set(handle).is_ok();
        assert!(started, "controller started twice");
        glommio::spawn_local(self.clone().follow_metadata()).detach();
        Ok(())
    }

    /// Shard 0: waits until this broker is registered, unfenced, and has
    /// applied the metadata log at least as far as its registration (its
    /// catalog is the cluster's). Once the log names its cluster, `meta`
    /// must agree (a data dir of another cluster is an error). Returns
    /// false when `stop` ends the wait.
    pub async fn wait_unfenced(
        &self,
        stop: &std::sync::atomic::AtomicBool,
        meta: &MetaFile,
    ) -> Result<bool, BrokerError> {
        let Ok(admin) = self.admin() else {
            return Ok(true);
        };
        let Some(controller) = admin.controller.get() else {
            return Ok(true);
        };
        let mut last_log = std::time::Instant::now();
        let mut cluster_checked = false;
        loop {
            if !cluster_checked {
                if let Some(id) = controller.image().cluster_id() {
                    meta.check_cluster(id)?;
                    cluster_checked = true;
                }
            }
            if cluster_checked && controller.unfenced() {
                let applied = controller.quorum_view().applied_index;
                if admin.published.get() >= applied {
                    return Ok(true);
                }
            }
            if stop.load(std::sync::atomic::Ordering::Acquire) {
                return Ok(false);
            }
            if last_log.elapsed() >= UNFENCE_WAIT_LOG_INTERVAL {
                last_log = std::time::Instant::now();
                let view = controller.quorum_view();
                tracing::warn!(
                    controller = ?view.controller,
                    applied = view.applied_index,
                    "not serving yet: waiting to be registered and unfenced by the controller \
                     (is a majority of controller_quorum_voters up and reachable?)"
                );
            }
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Shard 0: the metadata quorum's handle, once started.
    pub fn controller(&self) -> Option<ControllerHandle> {
        self.admin().ok().and_then(|a| a.controller.get().cloned())
    }

    /// Shard 0, at a clean stop: asks the controller to fence this broker
    /// and move its leaderships away (returns when confirmed or after
    /// `deadline`), then leaves the metadata quorum.
    pub async fn controlled_shutdown(&self, deadline: Duration) {
        let Some(controller) = self.admin().ok().and_then(|a| a.controller.get()) else {
            return;
        };
        controller.shutdown(deadline.as_millis() as u64).await;
        controller.stop();
    }

    /// Shard 0, for the life of the shard: applies every new metadata
    /// image to this node (open / delete / reconfigure local replicas,
    /// shard table) and publishes the catalog to every shard.
    async fn follow_metadata(self: Rc<Self>) {
        let Ok(admin) = self.admin() else { return };
        let Some(controller) = admin.controller.get().cloned() else {
            return;
        };
        let mut seen = 0;
        loop {
            let (image, view) = controller.changed(seen).await;
            seen = view.applied_index;
            // An image without a cluster id is the empty log's: nothing is
            // known yet (a data dir being imported keeps its topics).
            if image.cluster_id().is_some() && !Arc::ptr_eq(&image, &admin.registry.image()) {
                self.apply_image(image).await;
            }
            self.publish_catalog(view).await;
            admin.published.advance(view.applied_index);
        }
    }

    /// Makes this node's replicas what `image` says (see
    /// [`Self::follow_metadata`]). Order: topics gone (or recreated under
    /// their name) leave the catalog first, then their logs are deleted;
    /// the shard table is made durable; then new replicas open, changed
    /// configs and leader epochs apply; the caller publishes the catalog.
    async fn apply_image(self: &Rc<Self>, image: Arc<MetadataImage>) {
        let Ok(admin) = self.admin() else { return };
        let old = self.catalog();
        let removed: Vec<TopicMeta> = old
            .topics()
            .filter(|t| image.by_id(t.id).is_none())
            .cloned()
            .collect();
        if !removed.is_empty() {
            let mut interim = MetadataImage::clone(old.image());
            for meta in &removed {
                interim = interim.without_topic(&meta.name);
            }
            let catalog = Catalog::new(Arc::new(interim), &admin.registry.shard_table())
                .with_quorum(old.quorum());
            self.send_catalog(Arc::new(catalog)).await;
            for meta in &removed {
                let errors = self.delete_local(meta).await;
                admin.record(meta.id, errors);
                tracing::info!(topic = %meta.name, id = %meta.id, "topic deleted");
            }
        }
        if let Err(error) = admin.registry.follow(image.clone()).await {
            // The table is re-fitted at the next start; the replicas
            // placed in memory open now.
            tracing::error!(%error, "writing the shard table failed");
        }
        let table = admin.registry.shard_table();
        for topic in image.topics() {
            let meta = TopicMeta::new(topic.clone(), &table);
            let before = old.get(&topic.name).filter(|t| t.id == topic.id);
            let first = before.map_or(0, |b| b.partition_count());
            let mut errors = self.open_partitions(&meta, first, admin.node).await;
            if let Some(before) = before {
                if before.config != topic.config {
                    if let Err(TopicOpError::Storage(Joined(failed))) =
                        self.reconfigure_partitions(&meta, &topic.config).await
                    {
                        errors.extend(failed);
                    }
                    tracing::info!(topic = %topic.name, "topic config changed");
                }
                self.move_leaderships(before, &meta, admin.node).await;
            } else {
                tracing::info!(topic = %topic.name, id = %topic.id, partitions = topic.partition_count(), "topic created");
            }
            if first < meta.partition_count() || !errors.is_empty() {
                admin.record(topic.id, errors);
            }
        }
    }

    /// Closes and deletes this node's replicas of `meta`; the failures.
    async fn delete_local(self: &Rc<Self>, meta: &TopicMeta) -> Vec<PartitionsError> {
        let Ok(admin) = self.admin() else {
            return Vec::new();
        };
        let mut errors = Vec::new();
        for (shard, ids) in by_shard(meta, 0, admin.node) {
            let op = Op::Delete {
                topic: meta.name.clone(),
                partitions: ids,
            };
            if let Err(e) = done(self.execute(shard, op).await) {
                // Leftover directories are harmless and reported.
                tracing::warn!(topic = %meta.name, %shard, error = %e, "deleting partition logs failed");
                errors.push(e);
            }
        }
        errors
    }

    /// Sends the leaderships (leader, replicas, ISR, epochs) of `meta`'s
    /// replicas here that changed since `before` to their shards.
    async fn move_leaderships(self: &Rc<Self>, before: &TopicMeta, meta: &TopicMeta, node: NodeId) {
        for (shard, ids) in by_shard(meta, 0, node) {
            let changed: Vec<(PartitionId, PartitionImage)> = ids
                .into_iter()
                .filter_map(|p| {
                    let now = meta.partition(p)?;
                    (before.partition(p) != Some(now)).then(|| (p, now.clone()))
                })
                .collect();
            if changed.is_empty() {
                continue;
            }
            let op = Op::Leadership {
                topic: meta.name.clone(),
                partitions: changed,
            };
            if let Err(e) = done(self.execute(shard, op).await) {
                tracing::warn!(topic = %meta.name, %shard, error = %e, "leadership not applied");
            }
        }
    }

    /// Shard 0: creates topics through the controller; answers once the
    /// records are committed and this node has applied them (its own
    /// replicas open).
    async fn create_topics(
        self: &Rc<Self>,
        specs: Vec<CreateSpec>,
        validate_only: bool,
    ) -> Vec<TopicOutcome> {
        let admin = match self.admin() {
            Ok(admin) => admin,
            Err(_) => {
                return TopicOutcome::refuse_all(specs.iter().map(|s| s.name.clone()), || {
                    TopicOpError::NotRegistryShard(self.shard)
                })
            }
        };
        let image = admin.registry.image();
        let live: Vec<i32> = image.live_brokers().map(|b| b.node.get() as i32).collect();
        let mut outcomes: Vec<TopicOutcome> = Vec::with_capacity(specs.len());
        let mut sent = Vec::new();
        let mut slots = Vec::new();
        for spec in specs {
            match admin.check(&spec, &live, validate_only) {
                Ok(checked) => {
                    slots.push(outcomes.len());
                    outcomes.push(TopicOutcome::of(spec.name.clone(), None));
                    sent.push(checked);
                }
                Err(e) => outcomes.push(TopicOutcome {
                    name: spec.name.clone(),
                    error: Some(e),
                    num_partitions: -1,
                    topic_id: None,
                }),
            }
        }
        if sent.is_empty() {
            return outcomes;
        }
        let asked: Vec<Option<u32>> = sent.iter().map(|s| s.partitions).collect();
        let results = self
            .run_admin(ControllerCommand::CreateTopics(sent), slots.len())
            .await;
        let image = admin.registry.image();
        for ((slot, result), asked) in slots.into_iter().zip(results).zip(asked) {
            let outcome = &mut outcomes[slot];
            match result {
                Ok(result) => {
                    let topic = image.get(&outcome.name).filter(|t| Some(t.id) == result.id);
                    outcome.num_partitions = match (&result.error, topic) {
                        (ErrorCode::None, Some(topic)) => topic.partition_count() as i32,
                        (ErrorCode::None, None) => {
                            asked.map_or(admin.default_partitions as i32, |n| n as i32)
                        }
                        _ => -1,
                    };
                    outcome.topic_id = result.id;
                    outcome.error = admin.outcome_error(&result);
                }
                Err(e) => outcome.error = Some(e),
            }
        }
        outcomes
    }

    /// Opens the logs of this node's replicas of `meta` from partition
    /// `first` on, each on its shard, at the image's leader epochs; the
    /// failures.
    async fn open_partitions(
        self: &Rc<Self>,
        meta: &TopicMeta,
        first: u32,
        node: NodeId,
    ) -> Vec<PartitionsError> {
        let mut errors = Vec::new();
        for (shard, ids) in by_shard(meta, first, node) {
            let leaderships = ids
                .iter()
                .map(|p| {
                    meta.partition(*p)
                        .cloned()
                        .unwrap_or_else(|| PartitionImage::single(node))
                })
                .collect();
            let op = Op::Open {
                topic: meta.name.clone(),
                partitions: ids,
                leaderships,
                config: meta.config.clone(),
            };
            if let Err(e) = done(self.execute(shard, op).await) {
                errors.push(e);
            }
        }
        errors
    }

    /// Shard 0: grows topics (CreatePartitions) through the controller;
    /// answers once committed and applied here (`validate_only`: once the
    /// controller checked it).
    async fn create_partitions(
        self: &Rc<Self>,
        topics: Vec<(String, u32)>,
        validate_only: bool,
    ) -> Vec<TopicOutcome> {
        let admin = match self.admin() {
            Ok(admin) => admin,
            Err(_) => {
                return TopicOutcome::refuse_all(topics.into_iter().map(|t| t.0), || {
                    TopicOpError::NotRegistryShard(self.shard)
                })
            }
        };
        let mut outcomes = Vec::with_capacity(topics.len());
        let mut sent = Vec::new();
        let mut slots = Vec::new();
        for (name, count) in topics {
            let mut outcome = TopicOutcome::of(name.clone(), None);
            outcome.num_partitions = count as i32;
            if name == OFFSETS_TOPIC {
                outcome.error = Some(TopicOpError::OffsetsTopicCannotGrow);
            } else {
                slots.push(outcomes.len());
                sent.push((name, count));
            }
            outcomes.push(outcome);
        }
        if sent.is_empty() {
            return outcomes;
        }
        // The controller checks against the latest image either way.
        let command = if validate_only {
            ControllerCommand::ValidatePartitions(sent)
        } else {
            ControllerCommand::CreatePartitions(sent)
        };
        let results = self.run_admin(command, slots.len()).await;
        for (slot, result) in slots.into_iter().zip(results) {
            outcomes[slot].error = match result {
                Ok(result) => admin.outcome_error(&result),
                Err(e) => Some(e),
            };
        }
        outcomes
    }

    /// Shard 0: changes topics' configs (AlterConfigs replaces the set
    /// keys, IncrementalAlterConfigs edits them), checked here by the
    /// parser CreateTopics uses, committed through the controller; every
    /// node hosting a replica applies them to its logs when it applies the
    /// record.
    async fn alter_topic_configs(
        self: &Rc<Self>,
        specs: Vec<AlterSpec>,
        validate_only: bool,
    ) -> Vec<TopicOutcome> {
        let admin = match self.admin() {
            Ok(admin) => admin,
            Err(_) => {
                return TopicOutcome::refuse_all(specs.into_iter().map(|s| s.name), || {
                    TopicOpError::NotRegistryShard(self.shard)
                })
            }
        };
        let mut outcomes = Vec::with_capacity(specs.len());
        let mut sent = Vec::new();
        let mut slots = Vec::new();
        for spec in specs {
            match admin.check_alter(&spec) {
                Ok(overrides) if !validate_only => {
                    slots.push(outcomes.len());
                    sent.push(AlterTopicConfigs {
                        name: spec.name.clone(),
                        overrides,
                        validate_only,
                    });
                    outcomes.push(TopicOutcome::of(spec.name, None));
                }
                Ok(_) => outcomes.push(TopicOutcome::of(spec.name, None)),
                Err(e) => outcomes.push(TopicOutcome::of(spec.name, Some(e))),
            }
        }
        if sent.is_empty() {
            return outcomes;
        }
        let results = self
            .run_admin(ControllerCommand::AlterConfigs(sent), slots.len())
            .await;
        for (slot, result) in slots.into_iter().zip(results) {
            outcomes[slot].error = match result {
                Ok(result) => admin.outcome_error(&result),
                Err(e) => Some(e),
            };
        }
        outcomes
    }

    /// Sends `config` to every shard holding a replica of `meta` here.
    async fn reconfigure_partitions(
        self: &Rc<Self>,
        meta: &TopicMeta,
        config: &TopicConfig,
    ) -> Result<(), TopicOpError> {
        let node = self.admin()?.node;
        let mut errors = Vec::new();
        for (shard, ids) in by_shard(meta, 0, node) {
            let op = Op::Reconfigure {
                topic: meta.name.clone(),
                partitions: ids,
                config: config.clone(),
            };
            if let Err(e) = done(self.execute(shard, op).await) {
                errors.push(e);
            }
        }
        Joined::result(errors).map_err(TopicOpError::Storage)
    }

    /// Shard 0: deletes topics through the controller; answers once
    /// committed and applied here (this node's replicas deleted).
    async fn delete_topics(self: &Rc<Self>, names: Vec<String>) -> Vec<TopicOutcome> {
        let admin = match self.admin() {
            Ok(admin) => admin,
            Err(_) => {
                return TopicOutcome::refuse_all(names, || {
                    TopicOpError::NotRegistryShard(self.shard)
                })
            }
        };
        let image = admin.registry.image();
        let mut outcomes = Vec::with_capacity(names.len());
        let mut sent = Vec::new();
        let mut slots = Vec::new();
        for name in names {
            let mut outcome = TopicOutcome::of(name.clone(), None);
            if name == OFFSETS_TOPIC {
                outcome.error = Some(TopicOpError::OffsetsTopicUndeletable);
            } else {
                outcome.num_partitions =
                    image.get(&name).map_or(-1, |t| t.partition_count() as i32);
                slots.push(outcomes.len());
                sent.push(name);
            }
            outcomes.push(outcome);
        }
        if sent.is_empty() {
            return outcomes;
        }
        let ids: Vec<Option<TopicId>> = sent.iter().map(|n| image.get(n).map(|t| t.id)).collect();
        let results = self
            .run_admin(ControllerCommand::DeleteTopics(sent), slots.len())
            .await;
        for ((slot, result), id) in slots.into_iter().zip(results).zip(ids) {
            outcomes[slot].error = match result {
                Ok(result) => admin.outcome_error(&result).or_else(|| {
                    let leftovers = id.map(|id| admin.take_failures(id)).unwrap_or_default();
                    (!leftovers.is_empty()).then_some(TopicOpError::Leftovers(Joined(leftovers)))
                }),
                Err(e) => Some(e),
            };
        }
        outcomes
    }

    /// Runs an admin command through the controller and waits until this
    /// node applied what it committed; one result per topic sent
    /// (`expected`), or the reason none came.
    async fn run_admin(
        self: &Rc<Self>,
        command: ControllerCommand,
        expected: usize,
    ) -> Vec<Result<TopicResult, TopicOpError>> {
        let refuse = |e: &dyn Fn() -> TopicOpError| (0..expected).map(|_| Err(e())).collect();
        let admin = match self.admin() {
            Ok(admin) => admin,
            Err(_) => return refuse(&|| TopicOpError::NotRegistryShard(self.shard)),
        };
        let Some(controller) = admin.controller.get() else {
            return refuse(&|| TopicOpError::Controller(ControllerUnavailable::NoQuorum));
        };
        let answer = match controller.submit(command).await {
            Ok(answer) => answer,
            Err(e) => return refuse(&|| TopicOpError::Controller(e.clone())),
        };
        let ControllerReply::Topics(results) = answer.reply else {
            let reply = format!("{:?}", answer.reply);
            return refuse(&|| TopicOpError::UnexpectedReply(reply.clone()));
        };
        if results.len() != expected {
            let got = results.len();
            return refuse(&|| {
                TopicOpError::UnexpectedReply(format!("{got} results for {expected} topics"))
            });
        }
        let applied = glommio::timer::timeout(APPLY_WAIT, async {
            admin.published.wait_for(answer.index).await;
            Ok(())
        })
        .await;
        if applied.is_err() {
            return refuse(&|| TopicOpError::Controller(ControllerUnavailable::Timeout));
        }
        results.into_iter().map(Ok).collect()
    }

    /// Shard 0: leader elections (Kafka's ElectLeaders) through the
    /// controller: the named partitions (`None`: every partition, and the
    /// controller answers those whose election was needed), preferred or
    /// unclean. A topic this node does not know is answered
    /// UNKNOWN_TOPIC_OR_PARTITION here; the controller checks the rest
    /// against its latest image. Answers once this node applied the new
    /// leaders, so a Metadata right after shows them.
    async fn elect_leaders(
        self: &Rc<Self>,
        partitions: Option<Vec<(String, Vec<u32>)>>,
        preferred: bool,
    ) -> Result<Vec<ElectionOutcome>, TopicOpError> {
        let admin = self.admin()?;
        let image = admin.registry.image();
        let mut outcomes = Vec::new();
        let targets = partitions.map(|topics| {
            let mut targets = Vec::new();
            for (name, ids) in topics {
                match image.get(&name) {
                    Some(topic) => targets.extend(ids.into_iter().map(|p| (topic.id, p))),
                    None => outcomes.extend(ids.into_iter().map(|partition| ElectionOutcome {
                        topic: name.clone(),
                        partition,
                        error: ErrorCode::UnknownTopicOrPartition,
                        message: Some(format!("no topic {name:?}")),
                    })),
                }
            }
            targets
        });
        if targets.as_ref().is_some_and(Vec::is_empty) {
            return Ok(outcomes);
        }
        let controller = admin
            .controller
            .get()
            .ok_or(TopicOpError::Controller(ControllerUnavailable::NoQuorum))?;
        let answer = controller
            .submit(ControllerCommand::ElectLeaders {
                partitions: targets,
                preferred,
            })
            .await
            .map_err(TopicOpError::Controller)?;
        let ControllerReply::Elections(results) = answer.reply else {
            return Err(TopicOpError::UnexpectedReply(format!("{:?}", answer.reply)));
        };
        glommio::timer::timeout(APPLY_WAIT, async {
            admin.published.wait_for(answer.index).await;
            Ok(())
        })
        .await
        .map_err(|_| TopicOpError::Controller(ControllerUnavailable::Timeout))?;
        // Names from the image the controller answered from, else the one
        // asked against (a topic deleted meanwhile keeps its asked name).
        let applied = admin.registry.image();
        let name_of = |id: TopicId| {
            applied
                .by_id(id)
                .or_else(|| image.by_id(id))
                .map_or_else(|| id.to_string(), |t| t.name.clone())
        };
        outcomes.extend(results.into_iter().map(|r| ElectionOutcome {
            topic: name_of(r.topic),
            partition: r.partition,
            error: r.error,
            message: r.message,
        }));
        Ok(outcomes)
    }

    /// Shard 0: a block of producer ids from the controller.
    async fn producer_id_block(&self) -> Result<(i64, u32), TopicOpError> {
        let admin = self.admin()?;
        let controller = admin
            .controller
            .get()
            .ok_or(TopicOpError::Controller(ControllerUnavailable::NoQuorum))?;
        let answer = controller
            .submit(ControllerCommand::AllocateProducerIds { node: admin.node })
            .await
            .map_err(TopicOpError::Controller)?;
        match answer.reply {
            ControllerReply::ProducerIds { first, size } => Ok((first, size)),
            other => Err(TopicOpError::UnexpectedReply(format!("{other:?}"))),
        }
    }

    /// InitProducerId on this shard: from the shard's block of ids (a new
    /// block from the controller, through shard 0, when it runs out).
    pub async fn init_producer_id(
        self: &Rc<Self>,
        producer_id: ProducerId,
        epoch: ProducerEpoch,
    ) -> Result<(ProducerId, ProducerEpoch), (ErrorCode, String)> {
        let issued_end = self.catalog().image().producer_id_next();
        self.producer_ids
            .init(producer_id, epoch, issued_end, || async {
                match self.execute(REGISTRY_SHARD, Op::ProducerIdBlock).await {
                    OpResult::ProducerIdBlock(Ok(block)) => Ok(block),
                    OpResult::ProducerIdBlock(Err(e)) => Err((e.code(), e.to_string())),
                    OpResult::Unavailable(e) => Err((e.code(), e.to_string())),
                    other => Err((
                        ErrorCode::UnknownServerError,
                        format!("unexpected reply {other:?}"),
                    )),
                }
            })
            .await
    }

    /// Sends the registry's current catalog, with the quorum view `view`,
    /// to every shard (this one too) and waits until all swapped it in.
    async fn publish_catalog(self: &Rc<Self>, view: QuorumView) {
        let Ok(admin) = self.admin() else { return };
        let catalog = Arc::new(admin.registry.catalog().with_quorum(view));
        self.send_catalog(catalog).await;
    }

    async fn send_catalog(self: &Rc<Self>, catalog: Arc<Catalog>) {
        let shards = self.mesh.get().map_or(1, |_| self.shard_count());
        for shard in 0..shards {
            let result = self
                .execute(ShardId(shard), Op::SetCatalog(catalog.clone()))
                .await;
            if !matches!(result, OpResult::Done(Ok(()))) {
                tracing::warn!(shard, ?result, "catalog update not applied");
            }
        }
    }

    fn shard_count(&self) -> u16 {
        self.mesh.get().map_or(1, |m| m.shards() as u16)
    }
}

/// How long an admin request waits for this node to apply what the
/// controller committed before it answers REQUEST_TIMED_OUT.
const APPLY_WAIT: Duration = Duration::from_secs(30);

/// How long an offsets write waits for the in-sync replicas (Kafka's
/// `offsets.commit.timeout.ms` default).
pub const OFFSETS_COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a node not yet serving says why.
const UNFENCE_WAIT_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// The image's leadership of `partitions` of `topic`.
fn leaderships(
    topic: &TopicMeta,
    partitions: &[PartitionId],
) -> Vec<(PartitionId, PartitionImage)> {
    partitions
        .iter()
        .filter_map(|p| Some((*p, topic.partition(*p)?.clone())))
        .collect()
}

/// `meta`'s partitions from `first` on of which `node` holds a replica,
/// grouped by owning shard.
fn by_shard(meta: &TopicMeta, first: u32, node: NodeId) -> Vec<(ShardId, Vec<PartitionId>)> {
    let mut grouped: BTreeMap<ShardId, Vec<PartitionId>> = BTreeMap::new();
    for p in (first..meta.partition_count()).map(PartitionId) {
        if !meta.hosts(p, node) {
            continue;
        }
        if let Some(shard) = meta.shard_of(p) {
            grouped.entry(shard).or_default().push(p);
        }
    }
    grouped.into_iter().collect()
}

/// The result of an Open, Delete or Reconfigure sent to a shard.
fn done(result: OpResult) -> Result<(), PartitionsError> {
    match result {
        OpResult::Done(done) => done,
        OpResult::Unavailable(e) => Err(e.into()),
        other => Err(PartitionsError::UnexpectedReply(format!("{other:?}"))),
    }
}
