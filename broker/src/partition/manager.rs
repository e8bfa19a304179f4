//! The partitions a shard owns and the operations on them, as the glommio
//! driver of each partition's [`PartitionState`]: produce (verify, ask the
//! state, append, flush when it says so), fetch (to the read limit the
//! state gives), long-poll waits, offset lookups, the flush-policy timer
//! and housekeeping (retention, age rolls, producer snapshots). The
//! decisions (acks, `min.insync.replicas`, idempotence, flush before ack,
//! high watermark, leader epoch) are the state's; the high watermark is
//! the log end while a partition has one replica (see `partition::state`).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use fjord_schema::batch::BatchView;
use fjord_schema::{ErrorCode, LeaderEpoch, NodeId, Offset, PartitionId, ShardId};
use fjord_storage::layout::partition_dir_name;
use fjord_storage::notify::Notify;
use fjord_storage::{
    BatchCache, Clock, LogConfig, LogOptions, PartitionLog, ReadRequest, StorageError,
};
use futures_lite::future;
use glommio::sync::Semaphore;
use glommio::timer::sleep;

use super::epochs::LeaderEpochCache;
use super::epochs_file;
use super::follower::{Followed, FollowerError, FollowerPosition, ReplicaLogs};
use super::producer_state::{ProducerBatch, ProducerStateConfig};
use super::replicas::{IsrChange, Leadership, DEFAULT_REPLICA_LAG_TIME_MAX_MS};
use super::snapshot;
use super::state::{
    Appended, BatchPlan, Completion, Opened, PartitionState, ProducePolicy, Role,
    INITIAL_LEADER_EPOCH,
};
use crate::batches::{BatchesError, VerifiedBatches};
use crate::error::{Joined, OpenError, ReconfigureError, RemoveDirError};
use crate::lease::BrokerLease;
use crate::metadata::image::{PartitionEpoch, PartitionImage};
use crate::ops::{
    DamagedRange, EpochEndResult, FetchResult, ListOffsetsResult, PartitionHealth, ProduceResult,
};
use crate::topic::TopicConfig;
/// ListOffsets' special timestamps.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;

/// One partition on its owning shard.
#[derive(Debug)]
pub struct Partition {
    pub topic: String,
    pub id: PartitionId,
    /// Changed by a topic config alter (`PartitionManager::reconfigure`).
    config: RefCell<TopicConfig>,
    pub log: PartitionLog,
    /// Woken after every append (long-poll fetches wait here) and when the
    /// partition is closed.
    data: Notify,
    /// One produce request's batches are appended contiguously, and the
    /// state's check, the append and the state's update are one step.
    append_gate: Semaphore,
    /// The partition's decisions and offsets (sans-IO); its producer state
    /// changes only while holding `append_gate`. Never borrowed across an
    /// await.
    state: RefCell<PartitionState>,
    /// Log end of the newest producer snapshot (`None` before the first).
    snapshot_end: Cell<Option<Offset>>,
    closed: Cell<bool>,
    /// Housekeeping's view of the active segment: its base offset and when
    /// housekeeping first saw it (for `segment.ms` on idle partitions).
    active_seen: Cell<Option<(Offset, i64)>>,
}

/// A partition recovery could not open. Its files are left exactly as
/// found; produce, fetch and ListOffsets on it fail with `reason` until an
/// operator restores or repairs it (`fjord repair`) and restarts.
#[derive(Debug, Clone)]
pub struct Offline {
    pub reason: String,
    /// What a fetch answers: CORRUPT_MESSAGE for damaged data (librdkafka
    /// reports it to the application), else KAFKA_STORAGE_ERROR.
    pub fetch_error: ErrorCode,
}

/// The partitions of one shard.
///
/// Lives on: every shard. Owns: the logs of the partitions the placement
/// table gives this shard, and the shard's batch cache they share.
/// Lifecycle: created empty at shard start → `open` for every placed
/// partition (recovery) before the shard serves, and on CreateTopics →
/// produce / fetch / flush timer / housekeeping → `delete` on DeleteTopics
/// → `close_all` (flush + close) on clean shutdown.
pub struct PartitionManager {
    shard: ShardId,
    data_dir: PathBuf,
    base: LogConfig,
    cache: Rc<RefCell<BatchCache>>,
    clock: Rc<dyn Clock>,
    partitions: RefCell<BTreeMap<String, HashMap<PartitionId, Rc<Partition>>>>,
    /// Placed partitions recovery kept offline (bounded by the placement).
    offline: RefCell<BTreeMap<(String, PartitionId), Offline>>,
    producer_state: ProducerStateConfig,
    /// The partitions here that follow a leader (the replica fetchers'
    /// work, [`ReplicaLogs`]), with a version bumped on every change.
    followed: RefCell<BTreeMap<(String, PartitionId), Followed>>,
    followed_version: Cell<u64>,
    followed_changed: Notify,
    /// ISR changes the leaders here propose, for the shard's task that
    /// sends them to the controller (at most one per partition: a
    /// partition proposes again only once its proposal is answered).
    proposals: RefCell<VecDeque<IsrProposal>>,
    proposals_ready: Notify,
    /// How long an acks=all produce waits for the high watermark before
    /// REQUEST_TIMED_OUT.
    ack_timeout: Cell<Duration>,
    /// `replica_lag_time_max_ms` of every partition here.
    replica_lag_time_max_ms: Cell<u64>,
    /// The broker's lease (`controller::driver::lifecycle::BrokerLease`,
    /// shared by every shard): while it does not hold, no partition here
    /// acts as leader for clients ([`PartitionManager::leading`]). `None`:
    /// not in a cluster (tests of one shard), always leading.
    lease: Option<Arc<BrokerLease>>,
}

/// An ISR change a leader on this shard proposes (`AlterPartition`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrProposal {
    pub topic: String,
    pub partition: PartitionId,
    pub leader_epoch: LeaderEpoch,
    pub change: IsrChange,
}

/// How long an acks=all produce waits for its offsets to be replicated by
/// default (Kafka's producer `request.timeout.ms`).
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(30);

impl std::fmt::Debug for PartitionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionManager")
            .field("shard", &self.shard)
            .field("partitions", &self.count())
            .finish()
    }
}

impl PartitionManager {
    pub fn new(
        shard: ShardId,
        data_dir: PathBuf,
        base: LogConfig,
        cache: BatchCache,
        clock: Rc<dyn Clock>,
    ) -> PartitionManager {
        PartitionManager {
            shard,
            data_dir,
            base,
            cache: Rc::new(RefCell::new(cache)),
            clock,
            partitions: RefCell::new(BTreeMap::new()),
            offline: RefCell::new(BTreeMap::new()),
            producer_state: ProducerStateConfig::default(),
            followed: RefCell::new(BTreeMap::new()),
            followed_version: Cell::new(0),
            followed_changed: Notify::default(),
            proposals: RefCell::new(VecDeque::new()),
            proposals_ready: Notify::default(),
            ack_timeout: Cell::new(DEFAULT_ACK_TIMEOUT),
            replica_lag_time_max_ms: Cell::new(DEFAULT_REPLICA_LAG_TIME_MAX_MS),
            lease: None,
        }
    }

    /// The broker's lease this shard's partitions lead under (gap B of
    /// docs/CORRECTNESS.md); `None`: none needed.
    pub fn with_lease(mut self, lease: Option<Arc<BrokerLease>>) -> PartitionManager {
        self.lease = lease;
        self
    }

    /// Whether this node may act as a partition leader for clients now:
    /// its lease holds. A node cut off from the metadata quorum stops
    /// before the controller can fence it and elect another leader, so it
    /// never appends or serves reads as a deposed leader. Replica fetches
    /// and this node's own reads (`read_local`) are not gated: a follower
    /// fetching moves the high watermark only as far as the in-sync
    /// replicas, which the new leader is one of.
    pub fn leading(&self) -> bool {
        self.lease.as_ref().is_none_or(|lease| lease.holds())
    }

    /// Replication limits (before any `open`): an acks=all produce's wait
    /// for the high watermark, and `replica_lag_time_max_ms`.
    pub fn with_replication(mut self, ack_timeout: Duration, replica_lag_time_max_ms: u64) -> Self {
        assert_eq!(self.count(), 0, "set before partitions open");
        self.ack_timeout = Cell::new(ack_timeout);
        self.replica_lag_time_max_ms = Cell::new(replica_lag_time_max_ms);
        self
    }

    /// Bounds of every partition's producer state (before any `open`).
    pub fn with_producer_state(mut self, config: ProducerStateConfig) -> PartitionManager {
        assert_eq!(self.count(), 0, "set before partitions open");
        self.producer_state = config;
        self
    }

    pub fn get(&self, topic: &str, partition: PartitionId) -> Option<Rc<Partition>> {
        self.partitions
            .borrow()
            .get(topic)?
            .get(&partition)
            .cloned()
    }

    fn all(&self) -> Vec<Rc<Partition>> {
        self.partitions
            .borrow()
            .values()
            .flat_map(|m| m.values().cloned())
            .collect()
    }

    pub fn count(&self) -> usize {
        self.partitions.borrow().values().map(HashMap::len).sum()
    }

    /// Why `partition` is offline, if recovery kept it so.
    pub fn offline(&self, topic: &str, partition: PartitionId) -> Option<Offline> {
        self.offline
            .borrow()
            .get(&(topic.to_owned(), partition))
            .cloned()
    }

    /// Recovery at shard start: opens the logs of `partitions`; a log that
    /// fails to open (damaged data, an unreadable file) takes only its own
    /// partition offline, with one ERROR saying what is at stake and how to
    /// proceed, and the shard serves the others.
    pub async fn open_or_offline(
        &self,
        topic: &str,
        partitions: &[PartitionId],
        config: &TopicConfig,
    ) -> Result<(), OpenError> {
        for &partition in partitions {
            match self.open(topic, &[partition], config).await {
                Ok(()) => {}
                Err(OpenError::Storage { source, .. }) => {
                    let offline = offline_for(&self.data_dir, topic, partition, &source);
                    tracing::error!(
                        shard = %self.shard,
                        topic,
                        %partition,
                        "partition {topic}-{partition} is OFFLINE: {}",
                        offline.reason
                    );
                    self.offline
                        .borrow_mut()
                        .insert((topic.to_owned(), partition), offline);
                }
                Err(other) => return Err(other),
            }
        }
        Ok(())
    }

    /// Offline state, damaged ranges, offsets and (where this replica
    /// leads) followers' progress of `partitions` here.
    pub fn health(&self, topic: &str, partitions: &[PartitionId]) -> Vec<PartitionHealth> {
        partitions
            .iter()
            .map(|&partition| {
                let open = self.get(topic, partition);
                let (offsets, followers) = open.as_ref().map_or((None, Vec::new()), |p| {
                    let state = p.state.borrow();
                    let offsets = crate::ops::ReplicaOffsets {
                        log_end: state.log_end(),
                        high_watermark: state.high_watermark(),
                    };
                    (Some(offsets), state.replicas().followers().collect())
                });
                PartitionHealth {
                    partition,
                    offline: self.offline(topic, partition).map(|o| o.reason),
                    damaged: open.map_or_else(Vec::new, |p| {
                        p.log
                            .damaged()
                            .into_iter()
                            .map(|(damage, offsets)| DamagedRange {
                                segment_base: damage.segment_base.get(),
                                bytes_start: damage.bytes_start,
                                bytes_end: damage.bytes_end,
                                first_offset: offsets.start.get(),
                                end_offset: offsets.end.get(),
                            })
                            .collect()
                    }),
                    offsets,
                    followers,
                }
            })
            .collect()
    }

    /// Opens (recovers, or creates empty) the logs of `partitions`.
    /// Partitions already open are left alone.
    pub async fn open(
        &self,
        topic: &str,
        partitions: &[PartitionId],
        config: &TopicConfig,
    ) -> Result<(), OpenError> {
        for &partition in partitions {
            if self.get(topic, partition).is_some() {
                continue;
            }
            let log_config = config
                .log_config(&self.base)
                .map_err(|e| OpenError::Config {
                    topic: topic.to_owned(),
                    partition,
                    message: e.message,
                })?;
            let log = PartitionLog::open(LogOptions {
                data_dir: self.data_dir.clone(),
                topic: topic.to_owned(),
                partition,
                config: log_config,
                cache: self.cache.clone(),
                clock: self.clock.clone(),
                initial_offset: Offset(0),
            })
            .await
            .map_err(|source| OpenError::Storage {
                topic: topic.to_owned(),
                partition,
                source,
            })?;
            let (producers, snapshot_end) = snapshot::load(&log, self.producer_state)
                .await
                .map_err(|source| OpenError::Storage {
                    topic: topic.to_owned(),
                    partition,
                    source,
                })?;
            tracing::info!(
                shard = %self.shard,
                topic,
                %partition,
                log_start = %log.log_start(),
                log_end = %log.log_end(),
                producers = producers.len(),
                "partition open"
            );
            let (epochs, rewrite) =
                load_epochs(&log)
                    .await
                    .map_err(|source| OpenError::Storage {
                        topic: topic.to_owned(),
                        partition,
                        source,
                    })?;
            let opened = Opened {
                leader_epoch: INITIAL_LEADER_EPOCH,
                log_start: log.log_start(),
                log_end: log.log_end(),
                durable_end: log.durable_end(),
            };
            let policy = produce_policy(config, self.replica_lag_time_max_ms.get());
            let state = PartitionState::new(opened, policy, producers).with_epochs(epochs, rewrite);
            let entry = Rc::new(Partition {
                topic: topic.to_owned(),
                id: partition,
                config: RefCell::new(config.clone()),
                log,
                data: Notify::default(),
                append_gate: Semaphore::new(1),
                state: RefCell::new(state),
                snapshot_end: Cell::new(snapshot_end),
                closed: Cell::new(false),
                active_seen: Cell::new(None),
            });
            self.partitions
                .borrow_mut()
                .entry(topic.to_owned())
                .or_default()
                .insert(partition, entry);
        }
        Ok(())
    }

    /// Applies what the committed metadata image says of these open
    /// partitions, at `now`: this node (`node`) leads them (replicas, ISR,
    /// epochs for the leader's state), or follows their leader (the
    /// replica fetchers of this shard pick them up; acks=all waiters fail
    /// with NOT_LEADER_OR_FOLLOWER). A stale image changes nothing.
    /// Partitions not open here are skipped. Returns the partitions whose
    /// role changed, with their new role.
    pub fn apply_leaderships(
        &self,
        topic: &str,
        node: NodeId,
        partitions: &[(PartitionId, PartitionImage)],
    ) -> Vec<(PartitionId, Role)> {
        let now = self.clock.now_ms();
        let mut changed = Vec::new();
        for (partition, image) in partitions {
            let Some(p) = self.get(topic, *partition) else {
                continue;
            };
            let before = p.state.borrow().role();
            let completed = if image.leader == Some(node) {
                let leadership = Leadership {
                    leader: node,
                    replicas: image.replicas.clone(),
                    isr: image.isr.clone(),
                    leader_epoch: image.leader_epoch,
                    partition_epoch: image.partition_epoch,
                };
                let applied = p.state.borrow_mut().apply_leadership(&leadership, now);
                applied.unwrap_or_else(|error| {
                    tracing::warn!(topic, %partition, %error, "leadership not applied");
                    Vec::new()
                })
            } else {
                p.state
                    .borrow_mut()
                    .become_follower(image.leader, image.leader_epoch)
            };
            let (role, epoch) = {
                let state = p.state.borrow();
                (state.role(), state.leader_epoch())
            };
            let key = (topic.to_owned(), *partition);
            match role {
                Role::Follower {
                    leader: Some(leader),
                } => self.follow(
                    key,
                    Followed {
                        topic: topic.to_owned(),
                        partition: *partition,
                        leader,
                        leader_epoch: epoch,
                    },
                ),
                _ => self.unfollow(&key),
            }
            if role != before {
                tracing::info!(topic, %partition, ?role, epoch = %epoch, "replica role");
                changed.push((*partition, role));
            }
            if !completed.is_empty() || role != before {
                p.data.notify_all();
            }
        }
        changed
    }

    fn follow(&self, key: (String, PartitionId), followed: Followed) {
        let mut map = self.followed.borrow_mut();
        if map.get(&key) == Some(&followed) {
            return;
        }
        map.insert(key, followed);
        drop(map);
        self.bump_followed();
    }

    fn unfollow(&self, key: &(String, PartitionId)) {
        if self.followed.borrow_mut().remove(key).is_some() {
            self.bump_followed();
        }
    }

    fn bump_followed(&self) {
        self.followed_version.set(self.followed_version.get() + 1);
        self.followed_changed.notify_all();
    }

    /// Queues an ISR change a leader here proposes.
    fn propose(&self, p: &Partition, change: IsrChange) {
        let leader_epoch = p.state.borrow().leader_epoch();
        self.proposals.borrow_mut().push_back(IsrProposal {
            topic: p.topic.clone(),
            partition: p.id,
            leader_epoch,
            change,
        });
        self.proposals_ready.notify_all();
    }

    /// The ISR changes proposed since the last call, waiting for one when
    /// there is none (the shard's AlterPartition task).
    pub async fn next_proposals(&self) -> Vec<IsrProposal> {
        loop {
            let notified = self.proposals_ready.notified();
            let taken: Vec<IsrProposal> = self.proposals.borrow_mut().drain(..).collect();
            if !taken.is_empty() {
                return taken;
            }
            notified.await;
        }
    }

    /// The controller refused a proposal made at `partition_epoch`: the
    /// partition may propose again.
    pub fn isr_change_rejected(
        &self,
        topic: &str,
        partition: PartitionId,
        partition_epoch: PartitionEpoch,
    ) {
        if let Some(p) = self.get(topic, partition) {
            p.state.borrow_mut().isr_change_rejected(partition_epoch);
        }
    }

    pub fn replica_lag_time_max_ms(&self) -> u64 {
        self.replica_lag_time_max_ms.get()
    }

    /// The replication timer: leaders propose removing followers that lag
    /// more than `replica_lag_time_max_ms` from their ISR.
    pub fn tick_replicas(&self) {
        let now = self.clock.now_ms();
        for p in self.all() {
            let change = p.state.borrow_mut().tick(now);
            if let Some(change) = change {
                self.propose(&p, change);
            }
        }
    }

    /// Writes the partition's leader-epoch checkpoint if its cache changed
    /// (under the append gate: before a batch of a new epoch is appended).
    async fn write_epochs(&self, p: &Partition) -> Result<(), StorageError> {
        let Some((version, cache)) = p.state.borrow().epochs_to_write() else {
            return Ok(());
        };
        let dir = p.log.dir().to_owned();
        glommio::executor()
            .spawn_blocking(move || epochs_file::write(&dir, &cache))
            .await
            .map_err(|source| StorageError::Io {
                path: epochs_file::path(p.log.dir()),
                source,
            })?;
        p.state.borrow_mut().epochs_written(version);
        Ok(())
    }

    /// Applies a topic's new config to its open partitions here: the log
    /// limits (retention, flush policy, segment size from the next roll,
    /// largest batch) and the produce checks, from the next request on.
    /// Partitions not open here are skipped (they open with the registry's
    /// config).
    pub async fn reconfigure(
        &self,
        topic: &str,
        partitions: &[PartitionId],
        config: &TopicConfig,
    ) -> Result<(), Joined<ReconfigureError>> {
        let log_config = config
            .log_config(&self.base)
            .map_err(|e| Joined(vec![e.into()]))?;
        let mut errors = Vec::new();
        for &partition in partitions {
            let Some(p) = self.get(topic, partition) else {
                continue;
            };
            // Produce checks and log limits change together: the gate keeps
            // a produce from seeing the new `max.message.bytes` with the
            // old log limit.
            let Ok(_gate) = p.append_gate.acquire_permit(1).await else {
                continue;
            };
            match p.log.reconfigure(log_config).await {
                Ok(()) => {
                    *p.config.borrow_mut() = config.clone();
                    let policy = produce_policy(config, self.replica_lag_time_max_ms.get());
                    p.state.borrow_mut().set_policy(policy);
                }
                Err(source) => errors.push(ReconfigureError::Storage {
                    topic: topic.to_owned(),
                    partition,
                    source,
                }),
            }
        }
        tracing::info!(shard = %self.shard, topic, partitions = partitions.len(), "topic config applied");
        Joined::result(errors)
    }

    /// Closes the logs of `partitions` and deletes their directories.
    pub async fn delete(
        &self,
        topic: &str,
        partitions: &[PartitionId],
    ) -> Result<(), Joined<RemoveDirError>> {
        let mut errors = Vec::new();
        for &partition in partitions {
            let removed = {
                let mut map = self.partitions.borrow_mut();
                let removed = map.get_mut(topic).and_then(|m| m.remove(&partition));
                if map.get(topic).is_some_and(HashMap::is_empty) {
                    map.remove(topic);
                }
                removed
            };
            if let Some(p) = removed {
                // No producer snapshot and no flush: the directory goes,
                // and on a full disk writing would only fail.
                p.close_log(false).await;
            }
            self.offline
                .borrow_mut()
                .remove(&(topic.to_owned(), partition));
            let dir = self.data_dir.join(partition_dir_name(topic, partition));
            // Blocking (a directory tree): on glommio's blocking pool.
            let removing = dir.clone();
            let removed = glommio::executor()
                .spawn_blocking(move || std::fs::remove_dir_all(removing))
                .await;
            match removed {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => errors.push(RemoveDirError { dir, source }),
            }
        }
        Joined::result(errors)
    }

    /// Flushes and closes every log (clean shutdown).
    pub async fn close_all(&self) {
        let all = std::mem::take(&mut *self.partitions.borrow_mut());
        for p in all.into_values().flat_map(HashMap::into_values) {
            p.close().await;
        }
    }

    /// Checks every batch of `batches` against `max.message.bytes` (the
    /// rest was verified where they entered the broker), then appends them
    /// in order (one request's batches stay contiguous in the log) and
    /// acknowledges per `acks`, as the partition's state decides.
    pub async fn produce(
        &self,
        topic: &str,
        partition: PartitionId,
        batches: VerifiedBatches,
        acks: i8,
        timeout: Duration,
    ) -> ProduceResult {
        let Some(p) = self.get(topic, partition) else {
            if let Some(offline) = self.offline(topic, partition) {
                return ProduceResult::error(ErrorCode::KafkaStorageError, offline.reason);
            }
            return not_here(topic, partition);
        };
        if !self.leading() {
            refused(&p, &batches, ErrorCode::NotLeaderOrFollower);
            return ProduceResult::error(
                ErrorCode::NotLeaderOrFollower,
                "this broker's lease expired: it lost touch with the controller",
            );
        }
        let begun = p.state.borrow().begin_produce(acks, self.clock.now_ms());
        let acks = match begun {
            Ok(acks) => acks,
            Err(error) => {
                tracing::debug!(topic, %partition, %error, "produce refused");
                refused(&p, &batches, error.code());
                return ProduceResult::error(error.code(), error.to_string());
            }
        };
        let max_message_bytes = p.config.borrow().max_message_bytes;
        if let Err((code, message)) = check_batch_sizes(&batches, max_message_bytes) {
            return ProduceResult::error(code, message);
        }
        let Ok(gate) = p.append_gate.acquire_permit(1).await else {
            return not_here(topic, partition);
        };
        let leader_epoch = p.state.borrow().leader_epoch();
        // The checkpoint covers a new epoch before its first batch is in
        // the log.
        if let Err(error) = self.write_epochs(&p).await {
            refused(&p, &batches, storage_code(&error));
            return ProduceResult::error(storage_code(&error), error.to_string());
        }
        // One clock read per request: the producer state's last-seen time
        // and the flush policy's append time of every batch.
        let now_ms = self.clock.now_ms();
        let mut base_offset = None;
        for batch in batches {
            let producer = producer_of(&batch);
            // Checked under the gate, so no other append of this partition
            // runs between this check and `appended` below.
            let plan = p.state.borrow().check_batch(producer.as_ref());
            match plan {
                Ok(BatchPlan::Append) => {}
                Ok(BatchPlan::Duplicate { base_offset: first }) => {
                    // Written before: answer with its original offset
                    // (acks=all still waits as for an append).
                    base_offset.get_or_insert(first);
                    continue;
                }
                Err(error) => {
                    p.data.notify_all();
                    return ProduceResult::error(error.code(), error.to_string());
                }
            }
            // The log needs the batch to itself to stamp its offsets in
            // place: a batch the Kafka edge converted (or recompression
            // rewrote) is its buffer's only reference and is not copied; a
            // slice of a native request's buffer is (the only copy on the
            // native produce path).
            let batch = VerifiedBatches::into_appendable(batch);
            match p.log.append_leader(batch, leader_epoch).await {
                Ok(info) => {
                    base_offset.get_or_insert(info.base_offset);
                    let appended = Appended {
                        base_offset: info.base_offset,
                        last_offset: info.last_offset,
                        next_offset: info.next_offset,
                        durable_end: p.log.durable_end(),
                    };
                    let completed =
                        p.state
                            .borrow_mut()
                            .appended(producer.as_ref(), appended, now_ms);
                    wake(&p, &completed);
                }
                Err(error) => {
                    p.data.notify_all();
                    // Unwritten: the client's requests behind it get the
                    // same answer, not "out of order" (N3).
                    p.state
                        .borrow_mut()
                        .refused(producer.as_ref(), storage_code(&error));
                    if base_offset.is_some() {
                        // An earlier batch of this request is in the log
                        // (and stays there): not "not written".
                        return ProduceResult::error(
                            ErrorCode::RequestTimedOut,
                            format!("partly appended, the rest failed: {error}"),
                        );
                    }
                    return ProduceResult::error(storage_code(&error), error.to_string());
                }
            }
        }
        // Under the gate: acks=all waiters register in offset order.
        let plan = p.state.borrow_mut().ack_plan(acks);
        drop(gate);
        p.data.notify_all();
        let wait = timeout.min(self.ack_timeout.get());
        let deadline = Instant::now() + wait;
        if plan.flush {
            if let Err((code, message)) = flush_appended(&p, deadline).await {
                if let Some(waiter) = plan.waiter {
                    p.state.borrow_mut().cancel(waiter);
                }
                return ProduceResult::error(code, message);
            }
        }
        if let Some(waiter) = plan.waiter {
            // Released when the ack end passes its offsets: by its own
            // flush above (one replica), or by the followers' fetches
            // moving the high watermark (the wake-up of `data` per move).
            loop {
                let notified = p.data.notified();
                let outcome = p.state.borrow_mut().take_outcome(waiter);
                match outcome {
                    Some(Ok(())) => break,
                    // `min.insync.replicas` above the ISR when passed, or
                    // leadership lost while it waited.
                    Some(Err(error)) => {
                        return ProduceResult::error(error.code(), error.to_string());
                    }
                    None => {}
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || p.closed.get() {
                    p.state.borrow_mut().cancel(waiter);
                    return ProduceResult::error(
                        ErrorCode::RequestTimedOut,
                        format!(
                            "appended, but not replicated to the in-sync replicas within {} ms",
                            wait.as_millis()
                        ),
                    );
                }
                future::or(notified, sleep(left)).await;
            }
        }
        ProduceResult {
            error: ErrorCode::None,
            message: None,
            base_offset: base_offset.map_or(-1, |o| o.get() as i64),
            log_start_offset: p.log.log_start().get() as i64,
        }
    }

    /// Whole batches from the one holding `offset`, below the read limit
    /// (the high watermark for consumers, the log end for a replica), within
    /// `max_bytes` (the first batch always). `current_leader_epoch` is
    /// `None` when the request does not give it; `replica` is the fetching
    /// follower and the durable end it reports (`None`: a consumer).
    pub async fn fetch(
        &self,
        topic: &str,
        partition: PartitionId,
        offset: i64,
        max_bytes: usize,
        current_leader_epoch: Option<LeaderEpoch>,
        replica: Option<(NodeId, Option<Offset>)>,
    ) -> FetchResult {
        let replica_id = replica.map(|(node, _)| node);
        let Some(p) = self.get(topic, partition) else {
            if let Some(offline) = self.offline(topic, partition) {
                return FetchResult::error(offline.fetch_error);
            }
            return FetchResult::error(ErrorCode::NotLeaderOrFollower);
        };
        if replica.is_none() && !self.leading() {
            return FetchResult::error(ErrorCode::NotLeaderOrFollower);
        }
        if let Err(error) = p.state.borrow().check_leader(current_leader_epoch) {
            return FetchResult::error(error.code());
        }
        if let Some((node, durable_end)) = replica {
            // The follower has everything below its fetch offset: its
            // progress moves the high watermark (waking the acks=all
            // producers and consumers it releases) and may grow the ISR.
            let Ok(fetch_offset) = u64::try_from(offset) else {
                return FetchResult::error(ErrorCode::OffsetOutOfRange);
            };
            let now = self.clock.now_ms();
            let before = p.state.borrow().high_watermark();
            let fetched =
                p.state
                    .borrow_mut()
                    .follower_fetched(node, Offset(fetch_offset), durable_end, now);
            match fetched {
                Ok(fetched) => {
                    tracing::trace!(topic, %partition, %node, offset, hw = %p.state.borrow().high_watermark(), "replica fetch");
                    if p.state.borrow().high_watermark() != before || !fetched.completed.is_empty()
                    {
                        p.data.notify_all();
                    }
                    if let Some(change) = fetched.isr_change {
                        self.propose(&p, change);
                    }
                }
                Err(error) => {
                    tracing::debug!(topic, %partition, %node, %error, "replica fetch refused");
                    return FetchResult::error(error.code());
                }
            }
        }
        let (high_watermark, limit) = {
            let state = p.state.borrow();
            (state.high_watermark(), state.read_limit(replica_id))
        };
        read_range(&p, offset, max_bytes, limit, high_watermark).await
    }

    /// Whole batches from the one holding `offset` up to the log end, on
    /// any replica (leader or follower): this node's own reads of its log
    /// (the group coordinator replaying `__consumer_offsets`).
    pub async fn read_local(
        &self,
        topic: &str,
        partition: PartitionId,
        offset: i64,
        max_bytes: usize,
    ) -> FetchResult {
        let Some(p) = self.get(topic, partition) else {
            if let Some(offline) = self.offline(topic, partition) {
                return FetchResult::error(offline.fetch_error);
            }
            return FetchResult::error(ErrorCode::NotLeaderOrFollower);
        };
        let end = p.state.borrow().log_end();
        read_range(&p, offset, max_bytes, end, end).await
    }

    /// Where `leader_epoch` ends in this partition's log, from its
    /// leader-epoch cache (`OffsetForLeaderEpoch`), after checking
    /// `current_leader_epoch` as a fetch does.
    pub fn epoch_end(
        &self,
        topic: &str,
        partition: PartitionId,
        current_leader_epoch: Option<LeaderEpoch>,
        leader_epoch: LeaderEpoch,
    ) -> EpochEndResult {
        let Some(p) = self.get(topic, partition) else {
            if let Some(offline) = self.offline(topic, partition) {
                return EpochEndResult::error(offline.fetch_error);
            }
            return EpochEndResult::error(ErrorCode::NotLeaderOrFollower);
        };
        let state = p.state.borrow();
        if let Err(error) = state.check_leader(current_leader_epoch) {
            return EpochEndResult::error(error.code());
        }
        match state.epoch_end(leader_epoch) {
            Some(end) => EpochEndResult {
                error: ErrorCode::None,
                leader_epoch: end.epoch.get() as i32,
                end_offset: end.end_offset.get() as i64,
            },
            None => EpochEndResult {
                error: ErrorCode::None,
                leader_epoch: -1,
                end_offset: -1,
            },
        }
    }

    /// Returns once the high watermark (a follower's fetch, `replica`: the
    /// log end) is past `offset`, the partition is gone, or `deadline`
    /// passed — woken by the append, not by polling.
    pub async fn wait_for_data(
        &self,
        topic: &str,
        partition: PartitionId,
        offset: i64,
        deadline: Instant,
        replica: bool,
    ) {
        let Some(p) = self.get(topic, partition) else {
            return;
        };
        let notified = p.data.notified();
        let end = {
            let state = p.state.borrow();
            if replica {
                state.log_end()
            } else {
                state.high_watermark()
            }
        };
        let end = end.get() as i64;
        // Data past `offset` already, or `offset` is not the end (the
        // fetch will answer OFFSET_OUT_OF_RANGE): nothing to wait for.
        if end != offset || p.closed.get() {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        future::or(notified, sleep(left)).await;
    }

    /// The offset for `timestamp` (or `LATEST`: the high watermark,
    /// `EARLIEST`: the log start), after checking `current_leader_epoch`
    /// (`None` when the request does not give it).
    pub async fn list_offsets(
        &self,
        topic: &str,
        partition: PartitionId,
        timestamp: i64,
        current_leader_epoch: Option<LeaderEpoch>,
    ) -> ListOffsetsResult {
        let Some(p) = self.get(topic, partition) else {
            if self.offline(topic, partition).is_some() {
                return ListOffsetsResult::error(ErrorCode::KafkaStorageError);
            }
            return ListOffsetsResult::error(ErrorCode::NotLeaderOrFollower);
        };
        if !self.leading() {
            return ListOffsetsResult::error(ErrorCode::NotLeaderOrFollower);
        }
        let checked = {
            let state = p.state.borrow();
            state
                .check_leader(current_leader_epoch)
                .and_then(|()| state.check_offsets_available())
        };
        if let Err(error) = checked {
            return ListOffsetsResult::error(error.code());
        }
        let found = |offset: Offset| ListOffsetsResult {
            error: ErrorCode::None,
            offset: offset.get() as i64,
            timestamp: -1,
        };
        match timestamp {
            LATEST => found(p.state.borrow().high_watermark()),
            EARLIEST => found(p.state.borrow().log_start()),
            t if t < 0 => ListOffsetsResult::error(ErrorCode::InvalidRequest),
            t => match p.log.offset_for_timestamp(t).await {
                Ok(Some(offset)) => ListOffsetsResult {
                    timestamp: t,
                    ..found(offset)
                },
                Ok(None) => ListOffsetsResult {
                    error: ErrorCode::None,
                    offset: -1,
                    timestamp: -1,
                },
                Err(error) => ListOffsetsResult::error(storage_code(&error)),
            },
        }
    }

    /// Flushes the logs whose `flush.ms` / `flush.messages` say so.
    pub async fn flush_due(&self) {
        let now = self.clock.now_ms();
        for p in self.all() {
            if p.state.borrow().flush_due(now) {
                match p.log.flush().await {
                    Ok(durable_end) => {
                        let completed = p.state.borrow_mut().durable(durable_end);
                        wake(&p, &completed);
                    }
                    // The log reported its fault once, when it started.
                    Err(StorageError::WriteFault { .. }) => {}
                    Err(error) => {
                        tracing::warn!(topic = %p.topic, partition = %p.id, %error, "timed flush failed")
                    }
                }
            }
        }
    }

    /// Retention (`retention.ms`, `retention.bytes`) and `segment.ms` rolls
    /// of idle partitions (busy ones roll on append).
    pub async fn housekeeping(&self) {
        for p in self.all() {
            p.state.borrow_mut().expire_producers(self.clock.now_ms());
            // As Kafka, a snapshot per segment roll bounds the scan on open
            // to about the active segment without writing one per interval.
            let rolled = p.log.segment_bases().last().copied();
            let snapshot_end = p.snapshot_end.get();
            if rolled.is_some_and(|base| snapshot_end.is_none_or(|end| base > end)) {
                p.snapshot_producers().await;
            }
            let retained = p.log.apply_retention().await;
            // Also after a failure: it may have removed some segments.
            p.state.borrow_mut().log_start_moved(p.log.log_start());
            match retained {
                Ok(removed) if !removed.is_empty() => {
                    tracing::info!(topic = %p.topic, partition = %p.id, segments = removed.len(), "retention removed segments")
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(topic = %p.topic, partition = %p.id, %error, "retention failed")
                }
            }
            let Some(segment_ms) = p.config.borrow().segment_ms else {
                continue;
            };
            let now = self.clock.now_ms();
            let Some(active) = p.log.segment_bases().last().copied() else {
                continue;
            };
            match p.active_seen.get() {
                Some((base, since)) if base == active => {
                    let old = now.saturating_sub(since) >= segment_ms as i64;
                    if old && p.log.log_end() > active {
                        match p.log.roll().await {
                            Ok(()) | Err(StorageError::WriteFault { .. }) => {}
                            Err(error) => {
                                tracing::warn!(topic = %p.topic, partition = %p.id, %error, "age roll failed")
                            }
                        }
                        p.active_seen.set(None);
                    }
                }
                _ => p.active_seen.set(Some((active, now))),
            }
        }
    }
}

/// The local side of replication: the replica fetchers of this shard
/// drive the follower partitions through it.
impl ReplicaLogs for PartitionManager {
    fn followed(&self) -> (u64, Vec<Followed>) {
        (
            self.followed_version.get(),
            self.followed.borrow().values().cloned().collect(),
        )
    }

    async fn followed_changed(&self, seen: u64) {
        loop {
            let notified = self.followed_changed.notified();
            if self.followed_version.get() != seen {
                return;
            }
            notified.await;
        }
    }

    fn position(
        &self,
        topic: &str,
        partition: PartitionId,
        leader_epoch: LeaderEpoch,
    ) -> Result<FollowerPosition, FollowerError> {
        let p = self.following(topic, partition, leader_epoch)?;
        Ok(position_of(&p))
    }

    async fn truncate(
        &self,
        topic: &str,
        partition: PartitionId,
        leader_epoch: LeaderEpoch,
        end: Offset,
    ) -> Result<FollowerPosition, FollowerError> {
        let p = self.following(topic, partition, leader_epoch)?;
        let Ok(_gate) = p.append_gate.acquire_permit(1).await else {
            return Err(not_following(topic, partition, leader_epoch));
        };
        let p = self.following(topic, partition, leader_epoch)?;
        let (log_start, log_end) = (p.log.log_start(), p.log.log_end());
        if end == log_end {
            return Ok(position_of(&p));
        }
        let cut = if end < log_start || end > log_end {
            p.log.reset(end).await
        } else {
            p.log.truncate(end).await
        };
        cut.map_err(|e| FollowerError::Storage(e.to_string()))?;
        // The producer state of the tail that is gone goes with it.
        let (producers, snapshot_end) = snapshot::load(&p.log, self.producer_state)
            .await
            .map_err(|e| FollowerError::Storage(e.to_string()))?;
        p.snapshot_end.set(snapshot_end);
        p.state.borrow_mut().truncated(
            p.log.log_start(),
            p.log.log_end(),
            p.log.durable_end(),
            producers,
        );
        self.write_epochs(&p)
            .await
            .map_err(|e| FollowerError::Storage(e.to_string()))?;
        tracing::info!(topic, %partition, from = %log_end, to = %p.log.log_end(), "follower truncated");
        Ok(position_of(&p))
    }

    async fn append(
        &self,
        topic: &str,
        partition: PartitionId,
        leader_epoch: LeaderEpoch,
        batches: Vec<Bytes>,
        leader_high_watermark: Offset,
        leader_log_start: Offset,
    ) -> Result<FollowerPosition, FollowerError> {
        let _ = leader_log_start;
        let p = self.following(topic, partition, leader_epoch)?;
        let Ok(_gate) = p.append_gate.acquire_permit(1).await else {
            return Err(not_following(topic, partition, leader_epoch));
        };
        let p = self.following(topic, partition, leader_epoch)?;
        let now_ms = self.clock.now_ms();
        for batch in batches {
            // Verified here (length, version, CRC) as where any batch
            // enters the broker; the log checks it continues the log.
            let (epoch, base) = match BatchView::parse(&batch) {
                Ok((view, _)) => (view.header().leader_epoch(), view.header().base_offset()),
                Err(error) => return Err(FollowerError::Diverged(error.to_string())),
            };
            let producer = producer_of(&batch);
            if base != p.state.borrow().log_end() {
                return Err(FollowerError::Diverged(format!(
                    "batch at {base}, the log ends at {}",
                    p.state.borrow().log_end()
                )));
            }
            if p.state.borrow().epoch_is_new(epoch) {
                p.state.borrow_mut().assign_epoch(epoch, base);
                self.write_epochs(&p)
                    .await
                    .map_err(|e| FollowerError::Storage(e.to_string()))?;
            }
            match p.log.append(batch).await {
                Ok(info) => {
                    let appended = Appended {
                        base_offset: info.base_offset,
                        last_offset: info.last_offset,
                        next_offset: info.next_offset,
                        durable_end: p.log.durable_end(),
                    };
                    p.state.borrow_mut().follower_appended(
                        producer.as_ref(),
                        appended,
                        epoch,
                        now_ms,
                    );
                }
                Err(StorageError::OffsetMismatch { expected, found }) => {
                    return Err(FollowerError::Diverged(format!(
                        "batch at {found}, the log ends at {expected}"
                    )));
                }
                Err(error) => return Err(FollowerError::Storage(error.to_string())),
            }
        }
        p.state
            .borrow_mut()
            .follower_high_watermark(leader_high_watermark);
        Ok(position_of(&p))
    }

    async fn flush(
        &self,
        topic: &str,
        partition: PartitionId,
        leader_epoch: LeaderEpoch,
    ) -> Result<FollowerPosition, FollowerError> {
        let p = self.following(topic, partition, leader_epoch)?;
        let durable_end = p
            .log
            .flush()
            .await
            .map_err(|e| FollowerError::Storage(e.to_string()))?;
        p.state.borrow_mut().durable(durable_end);
        Ok(position_of(&p))
    }
}

impl PartitionManager {
    /// `partition` of `topic`, if it follows a leader at `leader_epoch`
    /// here.
    fn following(
        &self,
        topic: &str,
        partition: PartitionId,
        leader_epoch: LeaderEpoch,
    ) -> Result<Rc<Partition>, FollowerError> {
        self.get(topic, partition)
            .filter(|p| {
                let state = p.state.borrow();
                matches!(state.role(), Role::Follower { leader: Some(_) })
                    && state.leader_epoch() == leader_epoch
                    && !p.closed.get()
            })
            .ok_or_else(|| not_following(topic, partition, leader_epoch))
    }
}

fn not_following(topic: &str, partition: PartitionId, leader_epoch: LeaderEpoch) -> FollowerError {
    FollowerError::NotFollowing {
        topic: topic.to_owned(),
        partition,
        leader_epoch,
    }
}

fn position_of(p: &Partition) -> FollowerPosition {
    let state = p.state.borrow();
    FollowerPosition {
        log_start: state.log_start(),
        log_end: state.log_end(),
        durable_end: state.durable_end(),
        high_watermark: state.high_watermark(),
        epochs: state.epochs().clone(),
        flush_before_ack: state.policy().flush_before_ack,
    }
}

impl Partition {
    /// Writes a snapshot of the producer state when the log grew since the
    /// last one (at close, and from housekeeping after a segment roll);
    /// `snapshot::write` removes the older ones. Taken under the append
    /// gate so the state matches the log end exactly; the file I/O runs on
    /// the blocking thread pool.
    async fn snapshot_producers(&self) {
        let Ok(_gate) = self.append_gate.acquire_permit(1).await else {
            return;
        };
        let (end, bytes) = {
            let state = self.state.borrow();
            (state.log_end(), state.producers().encode())
        };
        if Some(end) == self.snapshot_end.get() {
            return;
        }
        let dir = self.log.dir().to_owned();
        if let Err(error) = snapshot::write(dir, end, bytes).await {
            tracing::warn!(topic = %self.topic, partition = %self.id, %error, "producer snapshot failed");
            return;
        }
        self.snapshot_end.set(Some(end));
    }

    async fn close(&self) {
        self.snapshot_producers().await;
        self.close_log(true).await;
    }

    async fn close_log(&self, flush: bool) {
        self.closed.set(true);
        let closed = if flush {
            self.log.close().await
        } else {
            self.log.close_discarding().await
        };
        if let Err(error) = closed {
            tracing::warn!(topic = %self.topic, partition = %self.id, %error, "close failed");
        }
        self.data.notify_all();
    }
}

/// Whole batches of `p` from the one holding `offset`, below `limit`,
/// within `max_bytes` (the first batch always), answered with
/// `high_watermark`: a fetch's read, and this node's own (`read_local`).
async fn read_range(
    p: &Partition,
    offset: i64,
    max_bytes: usize,
    limit: Offset,
    high_watermark: Offset,
) -> FetchResult {
    let (log_start, in_range) = {
        let state = p.state.borrow();
        (state.log_start(), state.check_fetch_offset(offset))
    };
    let mut result = FetchResult {
        error: ErrorCode::None,
        high_watermark: high_watermark.get() as i64,
        log_start_offset: log_start.get() as i64,
        batches: Vec::new(),
    };
    // Out of range only outside the log; at or past the read limit (a
    // consumer past a new leader's high watermark) nothing to read yet.
    let offset = match in_range {
        Ok(offset) => offset,
        Err(error) => {
            result.error = error.code();
            return result;
        }
    };
    if offset >= limit {
        return result;
    }
    let request = ReadRequest {
        offset,
        until: limit,
        max_bytes,
    };
    match p.log.read(request).await {
        Ok(batches) => result.batches = batches,
        Err(error) => {
            // Damage is logged once, as an ERROR, when first found; a
            // consumer retrying at it must not flood the log.
            let (topic, partition) = (&p.topic, p.id);
            if matches!(error, StorageError::Damaged { .. }) {
                tracing::debug!(topic, %partition, offset = offset.get(), %error, "fetch inside damaged data");
            } else {
                tracing::warn!(topic, %partition, offset = offset.get(), %error, "fetch failed");
            }
            result.error = storage_code(&error);
        }
    }
    result
}

/// The state's view of a topic's config (public for issue 15's
/// simulation, which drives the same states).
pub fn produce_policy(config: &TopicConfig, replica_lag_time_max_ms: u64) -> ProducePolicy {
    ProducePolicy {
        min_insync_replicas: config.min_insync_replicas,
        flush_before_ack: config.flush_before_ack,
        flush_messages: config.flush_messages,
        flush_ms: config.flush_ms,
        replica_lag_time_max_ms,
    }
}

/// The flush of a produce whose batches are in the log (appended, offsets
/// assigned), driven by [`PartitionManager::produce`]. Several producers
/// flushing share one fdatasync (group commit in the log).
///
/// A log in write fault (a full disk) keeps what was appended and writes
/// it itself once a retry succeeds (`fjord_storage::driver`, "Write
/// faults"), so the produce waits for that, asking again at the log's
/// first retry backoff, until `deadline`, and then answers
/// REQUEST_TIMED_OUT ("possibly written"): KAFKA_STORAGE_ERROR would tell a
/// Kafka client the batch was *not* written, and librdkafka's idempotent
/// producer, after an epoch bump (a sequence gap from a batch the full
/// disk refused), sends such a batch again under the new epoch: a
/// duplicate in the log. Found by the nemesis harness (issue 15,
/// docs/CORRECTNESS.md; `scripts/chaos --kinds disk-full`).
/// The idempotent-producer fields of a batch (`None`: not idempotent; the
/// batches given here were verified where they entered, so they parse).
fn producer_of(batch: &[u8]) -> Option<ProducerBatch> {
    BatchView::parse_header(batch)
        .ok()
        .and_then(ProducerBatch::of)
}

/// Tells the partition state that `batches` were refused unwritten with
/// `code` (before any was checked), so the requests their clients sent
/// behind them get the same answer ([`PartitionState::refused`]).
fn refused(p: &Partition, batches: &VerifiedBatches, code: ErrorCode) {
    let mut state = p.state.borrow_mut();
    for batch in batches.iter() {
        state.refused(producer_of(batch).as_ref(), code);
    }
}

async fn flush_appended(p: &Partition, deadline: Instant) -> Result<(), (ErrorCode, String)> {
    loop {
        match p.log.flush().await {
            Ok(durable_end) => {
                let completed = p.state.borrow_mut().durable(durable_end);
                wake(p, &completed);
                return Ok(());
            }
            Err(error @ StorageError::WriteFault { .. }) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || p.closed.get() {
                    return Err((
                        ErrorCode::RequestTimedOut,
                        format!(
                            "appended, but not written by the produce's timeout ({error}); \
                             the log writes it once the fault clears"
                        ),
                    ));
                }
                let poll = Duration::from_millis(p.log.config().write_retry_backoff_ms_min);
                sleep(left.min(poll)).await;
            }
            Err(error) => return Err((storage_code(&error), error.to_string())),
        }
    }
}

/// Wakes the producers (and long-polls) of `p` when waiters completed:
/// once per high-watermark or durable-end move, not once per waiter.
fn wake(p: &Partition, completed: &[Completion]) {
    if !completed.is_empty() {
        p.data.notify_all();
    }
}

/// The partition's leader-epoch cache on open: its checkpoint clamped to
/// the log; rebuilt from the batch headers (and to be rewritten: `true`)
/// when the checkpoint is missing for a non-empty log (a data dir from
/// before checkpoints) or unreadable.
async fn load_epochs(log: &PartitionLog) -> Result<(LeaderEpochCache, bool), StorageError> {
    let dir = log.dir().to_owned();
    let read = glommio::executor()
        .spawn_blocking(move || epochs_file::read(&dir))
        .await;
    let (log_start, log_end) = (log.log_start(), log.log_end());
    match read {
        Ok(mut cache) if !cache.is_empty() || log_start == log_end => {
            cache.clamp_to_log(log_start, log_end);
            Ok((cache, false))
        }
        Ok(_) => Ok((snapshot::scan_epochs(log).await?, true)),
        Err(error) => {
            tracing::warn!(dir = %log.dir().display(), %error, "rebuilding the leader-epoch cache from the log");
            Ok((snapshot::scan_epochs(log).await?, true))
        }
    }
}

/// The operator-facing account of why a partition could not be opened:
/// what is damaged, which offsets are at stake, how to proceed.
fn offline_for(
    data_dir: &std::path::Path,
    topic: &str,
    partition: PartitionId,
    error: &StorageError,
) -> Offline {
    let repair = |at: &dyn std::fmt::Display| {
        format!(
            "fjord repair --data-dir {} --topic {topic} --partition {partition} --truncate-at {at}",
            data_dir.display()
        )
    };
    match error {
        StorageError::Damaged { segment, damage } => {
            let (resume, valid_end) = (
                damage.resume.map_or(damage.lost_from, |(_, o)| o),
                damage.valid_end,
            );
            Offline {
                reason: format!(
                    "acknowledged data is damaged: bytes {}..{} of {} fail verification \
                     (offsets {}..{resume} unreadable) and valid batches with offsets \
                     {resume}..{valid_end} follow them. Nothing was cut and no offset will \
                     be reused. To proceed, restore the partition directory from a copy, or \
                     accept the loss of offsets {}..{valid_end}: stop the broker and run `{}`, \
                     then start it again",
                    damage.bytes_start,
                    damage.bytes_end,
                    segment.display(),
                    damage.lost_from,
                    damage.lost_from,
                    repair(&damage.lost_from),
                ),
                fetch_error: ErrorCode::CorruptMessage,
            }
        }
        StorageError::Corrupt {
            segment, position, ..
        } => Offline {
            reason: format!(
                "{error}. Nothing was cut. To proceed, restore the partition directory from \
                 a copy, or stop the broker, find the offset of the batch at byte {position} \
                 of {} and accept the loss from it with `{}`",
                segment.display(),
                repair(&"OFFSET"),
            ),
            fetch_error: ErrorCode::CorruptMessage,
        },
        other => Offline {
            reason: format!("{other}; fix the cause and restart the broker"),
            fetch_error: ErrorCode::KafkaStorageError,
        },
    }
}

fn not_here(topic: &str, partition: PartitionId) -> ProduceResult {
    ProduceResult::error(
        ErrorCode::NotLeaderOrFollower,
        format!("{topic}-{partition} is not open on this shard; refresh metadata"),
    )
}

/// What the owning shard checks of a produce's batches, all before any is
/// appended: there is at least one, and none exceeds the topic's
/// `max.message.bytes` (the rest was verified where they entered the
/// broker, [`VerifiedBatches`]).
fn check_batch_sizes(
    batches: &VerifiedBatches,
    max_message_bytes: u64,
) -> Result<(), (ErrorCode, String)> {
    if batches.is_empty() {
        let error = BatchesError::Empty;
        return Err((error.error_code(), error.to_string()));
    }
    for batch in batches.iter() {
        let len = batch.len();
        if len as u64 > max_message_bytes {
            return Err((
                ErrorCode::MessageTooLarge,
                format!("batch of {len} bytes exceeds max.message.bytes = {max_message_bytes}"),
            ));
        }
    }
    Ok(())
}

/// The wire code of a storage error.
pub fn storage_code(error: &StorageError) -> ErrorCode {
    match error {
        StorageError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        // CORRUPT_MESSAGE, not KAFKA_STORAGE_ERROR: librdkafka retries the
        // latter silently forever but reports the former to the
        // application (ARCHITECTURE.md, "Damaged data").
        StorageError::InvalidBatch(_) | StorageError::Damaged { .. } => ErrorCode::CorruptMessage,
        StorageError::BatchTooLarge { .. } => ErrorCode::MessageTooLarge,
        StorageError::Closed => ErrorCode::NotLeaderOrFollower,
        // Retriable for Kafka clients; the message says when the disk is full.
        StorageError::WriteFault { .. }
        | StorageError::Io { .. }
        | StorageError::Runtime(_)
        | StorageError::Corrupt { .. }
        | StorageError::Inconsistent { .. } => ErrorCode::KafkaStorageError,
        StorageError::OffsetMismatch { .. } | StorageError::Config(_) => {
            ErrorCode::UnknownServerError
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::epochs;
    use fjord_schema::batch::{BatchBuilder, BatchOptions, RecordInput};

    /// Runs `body` on a fresh executor (1 MiB of io memory).
    fn run(body: impl std::future::Future<Output = ()>) {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(1 << 20)
            .make()
            .expect("executor")
            .run(body);
    }

    /// Logs whose segments are prepared 64 KiB at a time.
    fn small_logs() -> LogConfig {
        LogConfig {
            prepare_step_bytes: 64 * 1024,
            prepare_ahead_bytes: 64 * 1024,
            ..LogConfig::default()
        }
    }

    /// Shard 0's manager of `dir`, on the system clock.
    fn manager_in(dir: PathBuf, base: LogConfig) -> PartitionManager {
        PartitionManager::new(
            ShardId(0),
            dir,
            base,
            BatchCache::new(fjord_storage::CacheConfig::default()),
            Rc::new(fjord_storage::SystemClock),
        )
    }

    fn batch(values: &[&[u8]]) -> Vec<u8> {
        let mut builder = BatchBuilder::new(BatchOptions::default());
        for (i, value) in values.iter().enumerate() {
            builder.push(RecordInput {
                value: Some(value),
                timestamp: i as i64,
                ..RecordInput::default()
            });
        }
        builder.finish().expect("valid batch").to_vec()
    }

    /// The owning shard refuses a request with no batches, or with one
    /// larger than the topic's `max.message.bytes`, before appending any.
    #[test]
    fn sizes_are_checked_against_max_message_bytes() {
        let (a, b) = (
            Bytes::from(batch(&[b"a", b"b"])),
            Bytes::from(batch(&[b"c"])),
        );
        let batches = VerifiedBatches::built(vec![a.clone(), b]);
        assert_eq!(check_batch_sizes(&batches, 1 << 20), Ok(()));
        let (code, message) = check_batch_sizes(&batches, a.len() as u64 - 1).expect_err("large");
        assert_eq!(code, ErrorCode::MessageTooLarge);
        assert!(message.contains("max.message.bytes"), "{message}");
        let (code, message) =
            check_batch_sizes(&VerifiedBatches::default(), 1 << 20).expect_err("empty");
        assert_eq!(code, ErrorCode::InvalidRequest);
        assert_eq!(message, "no record batches");
    }

    /// The driver feeds the state: acks=1 data is readable at once (the
    /// high watermark is the log end) though not durable, acks=all is
    /// answered durable, `min.insync.replicas` above one refuses acks=all,
    /// and a fetch's leader epoch is checked against the partition's.
    #[test]
    fn the_driver_runs_the_states_decisions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().to_owned();
        run(async move {
            let base = small_logs();
            let manager = manager_in(data_dir, base);
            let mut config = TopicConfig::from_log_config(&base);
            let p0 = PartitionId(0);
            manager.open("t", &[p0], &config).await.expect("open");
            let records =
                VerifiedBatches::verify(&Bytes::from(batch(&[b"a", b"b"]))).expect("valid");

            let acked = manager
                .produce("t", p0, records.clone(), 1, DEFAULT_ACK_TIMEOUT)
                .await;
            assert_eq!((acked.error, acked.base_offset), (ErrorCode::None, 0));
            let p = manager.get("t", p0).expect("open");
            assert_eq!(p.state.borrow().high_watermark(), Offset(2));
            assert_eq!(p.state.borrow().durable_end(), Offset(0));
            let read = manager.fetch("t", p0, 0, 1 << 20, None, None).await;
            assert_eq!((read.error, read.high_watermark), (ErrorCode::None, 2));
            assert_eq!(read.batches.len(), 1);

            let acked = manager
                .produce("t", p0, records.clone(), -1, DEFAULT_ACK_TIMEOUT)
                .await;
            assert_eq!((acked.error, acked.base_offset), (ErrorCode::None, 2));
            assert_eq!(p.state.borrow().durable_end(), Offset(4));
            assert_eq!(p.log.durable_end(), Offset(4));
            assert_eq!(p.state.borrow().waiting(), 0);

            for (epoch, code) in [
                (Some(LeaderEpoch(0)), ErrorCode::None),
                (Some(LeaderEpoch(1)), ErrorCode::UnknownLeaderEpoch),
            ] {
                let read = manager.fetch("t", p0, 2, 1 << 20, epoch, None).await;
                assert_eq!(read.error, code, "{epoch:?}");
            }

            let listed = manager
                .list_offsets("t", p0, LATEST, Some(LeaderEpoch(0)))
                .await;
            assert_eq!((listed.error, listed.offset), (ErrorCode::None, 4));
            let listed = manager
                .list_offsets("t", p0, LATEST, Some(LeaderEpoch(9)))
                .await;
            assert_eq!(listed.error, ErrorCode::UnknownLeaderEpoch);

            config.min_insync_replicas = 2;
            manager
                .reconfigure("t", &[p0], &config)
                .await
                .expect("alter");
            let refused = manager
                .produce("t", p0, records.clone(), -1, DEFAULT_ACK_TIMEOUT)
                .await;
            assert_eq!(refused.error, ErrorCode::NotEnoughReplicas);
            let acked = manager
                .produce("t", p0, records, 1, DEFAULT_ACK_TIMEOUT)
                .await;
            assert_eq!((acked.error, acked.base_offset), (ErrorCode::None, 4));
            manager.close_all().await;
        });
    }

    /// Gap B: while the broker's lease does not hold (cut off from the
    /// controller), the leader refuses produces, consumer fetches and
    /// ListOffsets with NOT_LEADER_OR_FOLLOWER (clients refresh their
    /// metadata and retry), appends nothing, still answers replica
    /// fetches, and leads again once the lease is regained.
    #[test]
    fn a_leader_without_its_lease_serves_no_client() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().to_owned();
        run(async move {
            let base = small_logs();
            let lease = Arc::new(BrokerLease::new());
            lease.extend_to(u64::MAX - 1);
            let manager = manager_in(data_dir, base).with_lease(Some(lease.clone()));
            let config = TopicConfig::from_log_config(&base);
            let p0 = PartitionId(0);
            manager.open("t", &[p0], &config).await.expect("open");
            let records =
                VerifiedBatches::verify(&Bytes::from(batch(&[b"a", b"b"]))).expect("valid");
            let acked = manager
                .produce("t", p0, records.clone(), 1, DEFAULT_ACK_TIMEOUT)
                .await;
            assert_eq!((acked.error, acked.base_offset), (ErrorCode::None, 0));

            lease.revoke();
            assert!(!manager.leading());
            let refused = manager
                .produce("t", p0, records.clone(), 1, DEFAULT_ACK_TIMEOUT)
                .await;
            assert_eq!(refused.error, ErrorCode::NotLeaderOrFollower);
            let p = manager.get("t", p0).expect("open");
            assert_eq!(p.state.borrow().log_end(), Offset(2), "nothing appended");
            let read = manager.fetch("t", p0, 0, 1 << 20, None, None).await;
            assert_eq!(read.error, ErrorCode::NotLeaderOrFollower);
            assert!(read.batches.is_empty());
            let listed = manager.list_offsets("t", p0, LATEST, None).await;
            assert_eq!(listed.error, ErrorCode::NotLeaderOrFollower);
            // This node's own reads (a coordinator's replay) still work.
            let local = manager.read_local("t", p0, 0, 1 << 20).await;
            assert_eq!((local.error, local.batches.len()), (ErrorCode::None, 1));

            lease.extend_to(u64::MAX - 1);
            let acked = manager
                .produce("t", p0, records, 1, DEFAULT_ACK_TIMEOUT)
                .await;
            assert_eq!((acked.error, acked.base_offset), (ErrorCode::None, 2));
            let read = manager.fetch("t", p0, 0, 1 << 20, None, None).await;
            assert_eq!((read.error, read.high_watermark), (ErrorCode::None, 4));
            manager.close_all().await;
        });
    }

    /// Two managers in one executor stand in for a leader and a follower
    /// node: the leader's acks=all produce waits until the follower's
    /// fetch reports the batch (durable: the topic flushes before ack),
    /// the follower appends the leader's bytes verbatim (same offsets and
    /// epochs), a follower refuses produces and consumer fetches, and
    /// after a leader change the old leader truncates its divergent tail
    /// where `OffsetForLeaderEpoch` says the logs part.
    #[test]
    fn a_leader_and_a_follower_replicate_and_truncate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
        run(async move {
            let base = small_logs();
            let manager = |dir: PathBuf| Rc::new(manager_in(dir, base));
            let (a, b) = (manager(dir_a), manager(dir_b));
            let config = TopicConfig::from_log_config(&base);
            let p0 = PartitionId(0);
            let (n1, n2) = (NodeId(1), NodeId(2));
            let image = |leader: NodeId, isr: &[NodeId], epoch: u32, pe: u32| PartitionImage {
                replicas: vec![n1, n2],
                isr: isr.to_vec(),
                leader: Some(leader),
                leader_epoch: LeaderEpoch(epoch),
                partition_epoch: pe,
            };
            for m in [&a, &b] {
                m.open("t", &[p0], &config).await.expect("open");
            }
            a.apply_leaderships("t", n1, &[(p0, image(n1, &[n1, n2], 1, 0))]);
            b.apply_leaderships("t", n2, &[(p0, image(n1, &[n1, n2], 1, 0))]);
            assert_eq!(b.followed().1.len(), 1, "b follows node 1");
            let records =
                || VerifiedBatches::verify(&Bytes::from(batch(&[b"a", b"b"]))).expect("valid");

            // acks=all waits for the follower; the follower catches up.
            let produce = glommio::spawn_local({
                let a = a.clone();
                async move { a.produce("t", p0, records(), -1, DEFAULT_ACK_TIMEOUT).await }
            });
            // The follower's fetch, once the produce appended (it runs as
            // its own task: poll, bounded, instead of guessing a delay).
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            let read = loop {
                let read = a
                    .fetch(
                        "t",
                        p0,
                        0,
                        1 << 20,
                        Some(LeaderEpoch(1)),
                        Some((n2, Some(Offset(0)))),
                    )
                    .await;
                if !read.batches.is_empty() || std::time::Instant::now() >= deadline {
                    break read;
                }
                glommio::timer::sleep(Duration::from_millis(5)).await;
            };
            assert_eq!((read.error, read.batches.len()), (ErrorCode::None, 1));
            let at = b
                .append(
                    "t",
                    p0,
                    LeaderEpoch(1),
                    read.batches.clone(),
                    Offset(read.high_watermark as u64),
                    Offset(0),
                )
                .await
                .expect("appended");
            assert_eq!(at.log_end, Offset(2));
            let at = ReplicaLogs::flush(&*b, "t", p0, LeaderEpoch(1))
                .await
                .expect("flushed");
            assert_eq!(at.durable_end, Offset(2));
            let read = a
                .fetch(
                    "t",
                    p0,
                    2,
                    1 << 20,
                    Some(LeaderEpoch(1)),
                    Some((n2, Some(Offset(2)))),
                )
                .await;
            assert_eq!((read.error, read.high_watermark), (ErrorCode::None, 2));
            let acked = produce.await;
            assert_eq!((acked.error, acked.base_offset), (ErrorCode::None, 0));
            // Same bytes on both replicas.
            let on_b = b.read_local("t", p0, 0, 1 << 20).await;
            let on_a = a.read_local("t", p0, 0, 1 << 20).await;
            assert_eq!(on_a.batches, on_b.batches);
            // A follower is not produced to or read by consumers.
            assert_eq!(
                b.produce("t", p0, records(), 1, DEFAULT_ACK_TIMEOUT)
                    .await
                    .error,
                ErrorCode::NotLeaderOrFollower
            );
            assert_eq!(
                b.fetch("t", p0, 0, 1 << 20, None, None).await.error,
                ErrorCode::NotLeaderOrFollower
            );

            // The leader appends an acks=1 batch the follower never gets,
            // then node 2 takes over at epoch 2 and writes its own.
            assert_eq!(
                a.produce("t", p0, records(), 1, DEFAULT_ACK_TIMEOUT)
                    .await
                    .base_offset,
                2
            );
            b.apply_leaderships("t", n2, &[(p0, image(n2, &[n2], 2, 1))]);
            a.apply_leaderships("t", n1, &[(p0, image(n2, &[n2], 2, 1))]);
            assert_eq!(
                b.produce("t", p0, records(), 1, DEFAULT_ACK_TIMEOUT)
                    .await
                    .base_offset,
                2
            );
            let answer = b.epoch_end("t", p0, None, LeaderEpoch(1));
            assert_eq!((answer.leader_epoch, answer.end_offset), (1, 2));
            // The old leader finds where the logs part and truncates there.
            let own = a.position("t", p0, LeaderEpoch(2)).expect("following");
            let asked = epochs::first_truncation_step(epochs::FollowerLog {
                cache: &own.epochs,
                log_end: own.log_end,
                high_watermark: own.high_watermark,
            });
            assert_eq!(asked, epochs::TruncationStep::Ask(LeaderEpoch(1)));
            let step = epochs::truncation_step(
                epochs::FollowerLog {
                    cache: &own.epochs,
                    log_end: own.log_end,
                    high_watermark: own.high_watermark,
                },
                LeaderEpoch(1),
                Some(epochs::EpochEndOffset {
                    epoch: LeaderEpoch(answer.leader_epoch as u32),
                    end_offset: Offset(answer.end_offset as u64),
                }),
            )
            .expect("a valid answer");
            assert_eq!(step, epochs::TruncationStep::TruncateTo(Offset(2)));
            let cut = a
                .truncate("t", p0, LeaderEpoch(2), Offset(2))
                .await
                .expect("truncated");
            assert_eq!(cut.log_end, Offset(2));
            let read = b
                .fetch(
                    "t",
                    p0,
                    2,
                    1 << 20,
                    Some(LeaderEpoch(2)),
                    Some((n1, Some(Offset(2)))),
                )
                .await;
            a.append("t", p0, LeaderEpoch(2), read.batches, Offset(4), Offset(0))
                .await
                .expect("appended");
            let (on_a, on_b) = (
                a.read_local("t", p0, 0, 1 << 20).await,
                b.read_local("t", p0, 0, 1 << 20).await,
            );
            assert_eq!(
                on_a.batches, on_b.batches,
                "the replicas agree after truncation"
            );
            // With node 1 back in the ISR, an acks=all produce whose
            // request allows 50 ms gets REQUEST_TIMED_OUT when no follower
            // fetches meanwhile (its records stay, unacknowledged).
            b.apply_leaderships("t", n2, &[(p0, image(n2, &[n2, n1], 2, 2))]);
            let timed_out = b
                .produce("t", p0, records(), -1, Duration::from_millis(50))
                .await;
            assert_eq!(timed_out.error, ErrorCode::RequestTimedOut, "{timed_out:?}");
            assert_eq!(b.get("t", p0).expect("open").state.borrow().waiting(), 0);
            let epochs_a: Vec<_> = a
                .position("t", p0, LeaderEpoch(2))
                .expect("following")
                .epochs
                .entries()
                .to_vec();
            assert_eq!(
                epochs_a
                    .iter()
                    .map(|e| (e.epoch.get(), e.start_offset.get()))
                    .collect::<Vec<_>>(),
                vec![(1, 0), (2, 2)]
            );
            a.close_all().await;
            b.close_all().await;
        });
    }
}
