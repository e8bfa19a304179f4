//! The per-shard service that ties a shard's partitions, its view of the
//! catalog, the mesh to the other shards and (on shard 0) the topic
//! registry together. The dispatcher turns requests into [`Op`]s and runs
//! each on the shard that owns it with [`ShardService::execute`].

use std::cell::{OnceCell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use fjord_schema::{ErrorCode, NodeId, PartitionId, ShardId};
use fjord_storage::LogConfig;
use glommio::sync::Semaphore;

use crate::batches::VerifiedBatches;
use crate::error::{Joined, PartitionsError, ShardUnavailable, TopicOpError};
use crate::group::host::{GroupHost, GroupShard, OffsetsWriteError};
use crate::group::offsets_log::OFFSETS_TOPIC;
use crate::mesh::{Mesh, OpHandler};
use crate::metadata::catalog::Catalog;
use crate::metadata::catalog::TopicMeta;
use crate::metadata::registry::AsyncRegistry;
use crate::metadata::registry::TopicRegistry;
use crate::ops::{AlterSpec, CreateSpec, Op, OpResult, TopicOutcome};
use crate::partition::manager::PartitionManager;
use crate::topic::{partitions_from_assignments, TopicConfig};

/// The shard that owns the topic registry.
pub const REGISTRY_SHARD: ShardId = ShardId(0);

/// Topic creation and deletion.
///
/// Lives on: shard 0 only. Owns: the [`TopicRegistry`] (the placement
/// table and its file). Lifecycle: built from the registry the main thread
/// loaded at startup; serves CreateTopics / DeleteTopics (one at a time)
/// until the shard stops. Registry writes (file writes + fsync) run on
/// glommio's blocking thread pool ([`AsyncRegistry`]); each is awaited
/// before the logs are opened / deleted, which keeps the order "registry
/// durable, then logs opened / deleted".
#[derive(Debug)]
pub struct TopicAdmin {
    registry: AsyncRegistry,
    lock: Semaphore,
    defaults: TopicConfig,
    base: LogConfig,
    default_partitions: u32,
    /// This node: the only broker replica assignments may name.
    node: NodeId,
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
            lock: Semaphore::new(1),
            defaults: TopicConfig::from_log_config(&base),
            base,
            default_partitions,
            node,
        }
    }

    /// Checks a create request; returns the partition count, the config
    /// and the keys the request set.
    fn check(
        &self,
        spec: &CreateSpec,
    ) -> Result<(u32, TopicConfig, BTreeMap<String, String>), TopicOpError> {
        let live = [self.node.get() as i32];
        let partitions = match spec.num_partitions {
            _ if !spec.assignments.is_empty() => partitions_from_assignments(
                spec.num_partitions,
                spec.replication_factor,
                &spec.assignments,
                &live,
            )?,
            -1 => self.default_partitions,
            n if n > 0 => n as u32,
            n => return Err(TopicOpError::PartitionCount(n)),
        };
        if !matches!(spec.replication_factor, -1 | 1) {
            return Err(TopicOpError::ReplicationFactor(spec.replication_factor));
        }
        // Later duplicates win, as when applied in order.
        let overrides: BTreeMap<String, String> = spec.configs.iter().cloned().collect();
        let config = self.config_from(&overrides)?;
        Ok((partitions, config, overrides))
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
    pub partitions: PartitionManager,
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

    fn hosted_offsets_partitions(&self) -> Vec<PartitionId> {
        let catalog = self.catalog();
        let Some(meta) = catalog.get(OFFSETS_TOPIC) else {
            return Vec::new();
        };
        (0..meta.partition_count())
            .map(PartitionId)
            .filter(|&p| meta.shard_of(p) == Some(self.shard))
            // An offline one's ERROR is logged already.
            .filter(|&p| self.partitions.offline(OFFSETS_TOPIC, p).is_none())
            .collect()
    }

    async fn offsets_log_start(&self, partition: PartitionId) -> Result<i64, ErrorCode> {
        let listed = self
            .partitions
            .list_offsets(OFFSETS_TOPIC, partition, -2, None)
            .await;
        match listed.error {
            ErrorCode::None => Ok(listed.offset),
            code => Err(code),
        }
    }

    async fn read_offsets(
        &self,
        partition: PartitionId,
        offset: i64,
        max_bytes: usize,
    ) -> Result<(Vec<Bytes>, i64), ErrorCode> {
        let read = self
            .partitions
            .fetch(OFFSETS_TOPIC, partition, offset, max_bytes, None, None)
            .await;
        match read.error {
            ErrorCode::None => Ok((read.batches, read.high_watermark)),
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
        // acks = -1: flush before ack (the topic keeps flush.before.ack =
        // true).
        let result = self
            .partitions
            .produce(OFFSETS_TOPIC, partition, batches, -1)
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
        partitions: PartitionManager,
        catalog: Arc<Catalog>,
        admin: Option<TopicAdmin>,
    ) -> ShardService {
        assert_eq!(admin.is_some(), shard == REGISTRY_SHARD);
        ShardService {
            shard,
            partitions,
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

    /// Opens the logs the catalog places on this shard (recovery).
    pub async fn open_placed(&self) -> Result<(), crate::error::OpenError> {
        let catalog = self.catalog();
        for (topic, partitions) in catalog.placed_on(self.shard) {
            self.partitions
                .open_or_offline(&topic.name, &partitions, &topic.config)
                .await?;
        }
        Ok(())
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
                } => OpResult::Produce(partitions.produce(&topic, partition, records, acks).await),
                Op::Fetch {
                    topic,
                    partition,
                    offset,
                    max_bytes,
                    current_leader_epoch,
                    replica_id,
                } => OpResult::Fetch(
                    partitions
                        .fetch(
                            &topic,
                            partition,
                            offset,
                            max_bytes,
                            current_leader_epoch,
                            replica_id,
                        )
                        .await,
                ),
                Op::WaitForData {
                    topic,
                    partition,
                    offset,
                    deadline,
                } => {
                    partitions
                        .wait_for_data(&topic, partition, offset, deadline)
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
                    config,
                } => OpResult::Done(
                    partitions
                        .open(&topic, &ids, &config)
                        .await
                        .map_err(PartitionsError::Open),
                ),
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
                    OpResult::Done(Ok(()))
                }
                Op::CreateTopics {
                    topics,
                    validate_only,
                } => OpResult::Topics(self.create_topics(topics, validate_only).await),
                Op::DeleteTopics { topics } => OpResult::Topics(self.delete_topics(topics).await),
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

    /// Shard 0: creates topics (registry first, durably), opens their logs
    /// on the owning shards, then publishes the new catalog to every shard.
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
        let Ok(_lock) = admin.lock.acquire_permit(1).await else {
            return TopicOutcome::refuse_all(specs.iter().map(|s| s.name.clone()), || {
                TopicOpError::Stopping
            });
        };
        let mut outcomes = Vec::with_capacity(specs.len());
        let mut created = false;
        for spec in specs {
            let outcome = |error: Option<TopicOpError>, partitions: i32| TopicOutcome {
                name: spec.name.clone(),
                error,
                num_partitions: partitions,
                topic_id: None,
            };
            let (partitions, config, overrides) = match admin.check(&spec) {
                Ok(checked) => checked,
                Err(e) => {
                    outcomes.push(outcome(Some(e), -1));
                    continue;
                }
            };
            let now = crate::clock::now_ms();
            let planned = if validate_only {
                admin
                    .registry
                    .plan_create(&spec.name, partitions, config, overrides, now)
            } else {
                admin
                    .registry
                    .create(&spec.name, partitions, config, overrides, now)
                    .await
            };
            let meta = match planned {
                Ok(meta) => meta,
                Err(e) => {
                    outcomes.push(outcome(Some(e.into()), -1));
                    continue;
                }
            };
            if validate_only {
                outcomes.push(outcome(None, partitions as i32));
                continue;
            }
            created = true;
            let errors = self.open_partitions(&meta, 0).await;
            if errors.is_empty() {
                tracing::info!(topic = %meta.name, partitions, shards = ?meta.shards, "topic created");
                outcomes.push(TopicOutcome {
                    topic_id: Some(meta.id),
                    ..outcome(None, partitions as i32)
                });
            } else {
                // The topic is registered; its logs open on the next start.
                outcomes.push(outcome(
                    Some(TopicOpError::Storage(Joined(errors))),
                    partitions as i32,
                ));
            }
        }
        if created {
            self.publish_catalog().await;
        }
        outcomes
    }

    /// Opens the logs of `meta`'s partitions from `first` on, each on its
    /// shard (after the registry is durable); returns the failures.
    async fn open_partitions(
        self: &Rc<Self>,
        meta: &TopicMeta,
        first: u32,
    ) -> Vec<PartitionsError> {
        let mut errors = Vec::new();
        for (shard, ids) in by_shard(meta, first) {
            let op = Op::Open {
                topic: meta.name.clone(),
                partitions: ids,
                config: meta.config.clone(),
            };
            if let Err(e) = done(self.execute(shard, op).await) {
                errors.push(e);
            }
        }
        errors
    }

    /// Shard 0: grows topics (CreatePartitions). The registry is durable
    /// first, then the new partitions' logs open on their shards (placed
    /// as at creation), then the catalog with the new count is published,
    /// so no request is routed to a partition before its log is open.
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
        let Ok(_lock) = admin.lock.acquire_permit(1).await else {
            return TopicOutcome::refuse_all(topics.into_iter().map(|t| t.0), || {
                TopicOpError::Stopping
            });
        };
        let mut outcomes = Vec::with_capacity(topics.len());
        let mut grown = false;
        for (name, count) in topics {
            let outcome = |error: Option<TopicOpError>| TopicOutcome {
                name: name.clone(),
                error,
                num_partitions: count as i32,
                topic_id: None,
            };
            if name == OFFSETS_TOPIC {
                outcomes.push(outcome(Some(TopicOpError::OffsetsTopicCannotGrow)));
                continue;
            }
            let before = admin
                .registry
                .get(&name)
                .map_or(0, |meta| meta.partition_count());
            let planned = if validate_only {
                admin.registry.plan_add_partitions(&name, count)
            } else {
                admin.registry.add_partitions(&name, count).await
            };
            let meta = match planned {
                Ok(meta) => meta,
                Err(e) => {
                    outcomes.push(outcome(Some(e.into())));
                    continue;
                }
            };
            if validate_only {
                outcomes.push(outcome(None));
                continue;
            }
            grown = true;
            let errors = self.open_partitions(&meta, before).await;
            if errors.is_empty() {
                tracing::info!(topic = %name, from = before, to = count, shards = ?meta.shards, "partitions added");
                outcomes.push(outcome(None));
            } else {
                // Registered; the logs open on the next start.
                outcomes.push(outcome(Some(TopicOpError::Storage(Joined(errors)))));
            }
        }
        if grown {
            self.publish_catalog().await;
        }
        outcomes
    }

    /// Shard 0: changes topics' configs (AlterConfigs replaces the set
    /// keys, IncrementalAlterConfigs edits them), checked by the parser
    /// CreateTopics uses, persisted in the registry and applied to the
    /// open logs on their shards; then publishes the catalog.
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
        let Ok(_lock) = admin.lock.acquire_permit(1).await else {
            return TopicOutcome::refuse_all(specs.into_iter().map(|s| s.name), || {
                TopicOpError::Stopping
            });
        };
        let mut outcomes = Vec::with_capacity(specs.len());
        let mut changed = false;
        for spec in specs {
            let error = match self.alter_topic_config(admin, &spec, validate_only).await {
                Ok(applied) => {
                    changed |= applied;
                    None
                }
                Err(e) => Some(e),
            };
            outcomes.push(TopicOutcome::of(spec.name, error));
        }
        if changed {
            self.publish_catalog().await;
        }
        outcomes
    }

    /// One topic of [`Self::alter_topic_configs`]; true when it changed.
    ///
    /// Order: a config whose log write buffer is not smaller is persisted
    /// first, then applied; a smaller write buffer is applied first (each
    /// log flushes before shrinking), then persisted. Either way, at any
    /// crash the registry's config allows at least as many unsynced bytes
    /// as a log had, which recovery relies on to tell a torn tail from
    /// corruption.
    async fn alter_topic_config(
        self: &Rc<Self>,
        admin: &TopicAdmin,
        spec: &AlterSpec,
        validate_only: bool,
    ) -> Result<bool, TopicOpError> {
        if spec.name == OFFSETS_TOPIC {
            return Err(TopicOpError::OffsetsTopicConfigsFixed);
        }
        let Some(meta) = admin.registry.get(&spec.name) else {
            return Err(TopicOpError::UnknownTopic(spec.name.clone()));
        };
        let current = meta.overrides.clone().unwrap_or_default();
        let overrides = spec.alter.overrides(&current, &meta.config)?;
        let config = admin.config_from(&overrides)?;
        if validate_only {
            return Ok(false);
        }
        let new_buffer = config.log_config(&admin.base)?.write_buffer_bytes;
        let shrinks = meta
            .config
            .log_config(&admin.base)
            .map_or(true, |old| new_buffer < old.write_buffer_bytes);
        if shrinks {
            if let Err(e) = self.reconfigure_partitions(&meta, &config).await {
                let _ = self.reconfigure_partitions(&meta, &meta.config).await;
                return Err(e);
            }
            let persisted = admin
                .registry
                .set_config(&spec.name, config, overrides)
                .await;
            if let Err(e) = persisted {
                let _ = self.reconfigure_partitions(&meta, &meta.config).await;
                return Err(e.into());
            }
        } else {
            admin
                .registry
                .set_config(&spec.name, config.clone(), overrides)
                .await?;
            // Persisted: a shard that failed gets the config at the next start.
            self.reconfigure_partitions(&meta, &config).await?;
        }
        tracing::info!(topic = %spec.name, "topic config changed");
        Ok(true)
    }

    /// Sends `config` to every shard holding a partition of `meta`.
    async fn reconfigure_partitions(
        self: &Rc<Self>,
        meta: &TopicMeta,
        config: &TopicConfig,
    ) -> Result<(), TopicOpError> {
        let mut errors = Vec::new();
        for (shard, ids) in by_shard(meta, 0) {
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

    /// Shard 0: removes topics from the registry (durably), publishes the
    /// catalog (new requests are refused), then closes and deletes the
    /// logs on their shards.
    async fn delete_topics(self: &Rc<Self>, names: Vec<String>) -> Vec<TopicOutcome> {
        let admin = match self.admin() {
            Ok(admin) => admin,
            Err(_) => {
                return TopicOutcome::refuse_all(names, || {
                    TopicOpError::NotRegistryShard(self.shard)
                })
            }
        };
        let Ok(_lock) = admin.lock.acquire_permit(1).await else {
            return TopicOutcome::refuse_all(names, || TopicOpError::Stopping);
        };
        let mut outcomes = Vec::with_capacity(names.len());
        let mut removed = Vec::new();
        for name in names {
            if name == OFFSETS_TOPIC {
                outcomes.push(TopicOutcome::of(
                    name,
                    Some(TopicOpError::OffsetsTopicUndeletable),
                ));
                continue;
            }
            let deleted = admin.registry.delete(&name).await;
            match deleted {
                Ok(meta) => {
                    outcomes.push(TopicOutcome {
                        name: name.clone(),
                        error: None,
                        num_partitions: meta.partition_count() as i32,
                        topic_id: None,
                    });
                    removed.push((outcomes.len() - 1, meta));
                }
                Err(e) => outcomes.push(TopicOutcome::of(name, Some(e.into()))),
            }
        }
        if removed.is_empty() {
            return outcomes;
        }
        self.publish_catalog().await;
        for (index, meta) in removed {
            let mut leftovers = Vec::new();
            for (shard, ids) in by_shard(&meta, 0) {
                let op = Op::Delete {
                    topic: meta.name.clone(),
                    partitions: ids,
                };
                if let Err(e) = done(self.execute(shard, op).await) {
                    // Unregistered already; leftover directories are
                    // harmless and reported.
                    tracing::warn!(topic = %meta.name, %shard, error = %e, "deleting partition logs failed");
                    leftovers.push(e);
                }
            }
            if !leftovers.is_empty() {
                outcomes[index].error = Some(TopicOpError::Leftovers(Joined(leftovers)));
            }
            tracing::info!(topic = %meta.name, "topic deleted");
        }
        outcomes
    }

    /// Sends the registry's current catalog to every shard (this one too)
    /// and waits until all swapped it in.
    async fn publish_catalog(self: &Rc<Self>) {
        let Ok(admin) = self.admin() else { return };
        let catalog = Arc::new(admin.registry.catalog());
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

/// `meta`'s partitions from `first` on, grouped by owning shard.
fn by_shard(meta: &TopicMeta, first: u32) -> Vec<(ShardId, Vec<PartitionId>)> {
    distinct_shards(&meta.shards[first as usize..])
        .into_iter()
        .map(|shard| {
            let ids = (first..meta.partition_count())
                .map(PartitionId)
                .filter(|p| meta.shard_of(*p) == Some(shard))
                .collect();
            (shard, ids)
        })
        .collect()
}

fn distinct_shards(shards: &[u16]) -> Vec<ShardId> {
    let mut distinct: Vec<u16> = shards.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    distinct.into_iter().map(ShardId).collect()
}

/// The result of an Open, Delete or Reconfigure sent to a shard.
fn done(result: OpResult) -> Result<(), PartitionsError> {
    match result {
        OpResult::Done(done) => done,
        OpResult::Unavailable(e) => Err(e.into()),
        other => Err(PartitionsError::UnexpectedReply(format!("{other:?}"))),
    }
}
