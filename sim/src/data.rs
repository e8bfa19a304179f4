//! The simulated data plane of one node (issue 15): every partition
//! replica the node holds, its replica fetchers, the leader's side of
//! replication, acks=all waiters and long-polls — the glue the broker's
//! glommio drivers put around the real sans-IO state machines, re-created
//! synchronously, step for step:
//!
//! - `partition/manager.rs`: produce (`begin_produce`, epochs checkpoint
//!   before a new epoch's first batch, `check_batch`, append, `appended`,
//!   `ack_plan`, flush → `durable`, acks=all waiters `take_outcome` /
//!   `cancel` with a timeout), `apply_leaderships` (`apply_leadership` /
//!   `become_follower`, the followed set), the leader's side of a replica
//!   fetch (`check_leader`, `follower_fetched`, read to `read_limit`),
//!   `epoch_end`, `tick_replicas` → `IsrChange` proposals, `flush_due`,
//!   the `ReplicaLogs` impl (position, truncate, append, flush), consumer
//!   fetches below the high watermark and recovery on open (the log cut at
//!   its torn tail, producer state rebuilt from the log, the epochs
//!   checkpoint loaded or rebuilt, the high watermark at the log end);
//! - `engine/fetch.rs` for replica fetches: answered once `min_bytes`
//!   came back or a partition failed, else held until a followed
//!   partition's log end moves past the fetch offset, the partition is
//!   notified (role change, append), or `max_wait_ms`;
//! - `replication/driver.rs`: one real [`Fetcher`] per leader node named
//!   by the followed set, its local operations run in order (a slow
//!   fdatasync blocks the fetcher as the awaited flush does), one request
//!   in flight, abandoned when the followed set no longer wants it, failed
//!   after `wait_max_ms + request_timeout_ms` without an answer (tracked
//!   here, in [`NodeData::poll`]).
//!
//! Requests and responses are the real `replication::wire` structs,
//! passed as values (not encoded), tagged with a request id so a late,
//! duplicated or reordered answer is matched or discarded. Batches are
//! real native batches (`BatchBuilder`), stamped with offset and leader
//! epoch by the leader and appended verbatim by followers.
//!
//! Lives on: one simulated node of the world, which owns it while the node
//! runs and calls [`NodeData::poll`] at [`NodeData::next_wakeup`] and
//! after every message. Deterministic: no clock reads, no threads, no
//! hash-order iteration (every map is a `BTreeMap`).
//!
//! Differences from the broker, on purpose: a produce's
//! `max.message.bytes` check is not re-done (the workload's batches are
//! small); the epochs checkpoint write and truncation are durable at once
//! (no simulated delay); ISR proposals go out as soon as made rather than
//! one at a time through shard 0; the log never syncs by itself when its
//! write buffer fills (more data is unsynced at a crash, never less).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use fjord_broker::controller::commands::ControllerCommand;
use fjord_broker::metadata::image::{MetadataImage, PartitionEpoch, PartitionImage, TopicId};
use fjord_broker::partition::epochs::LeaderEpochCache;
use fjord_broker::partition::manager::produce_policy;
use fjord_broker::partition::producer_state::{ProducerBatch, ProducerStateConfig, ProducerStates};
use fjord_broker::partition::replicas::Leadership;
use fjord_broker::partition::state::{
    Appended, BatchPlan, Opened, PartitionState, Role, WaiterId, INITIAL_LEADER_EPOCH,
};
use fjord_broker::replication::fetcher::{Fetcher, Key, LocalOp, ReplicaFetcherConfig, Step};
use fjord_broker::replication::wire::{
    EpochAnswer, EpochsRequest, EpochsResponse, ReplicaFetchPartition, ReplicaFetchRequest,
    ReplicaFetchResponse, ReplicaFetchResult,
};
use fjord_broker::replication::{Followed, FollowerError, FollowerPosition};
use fjord_broker::topic::TopicConfig;
use fjord_schema::batch::{
    assign_offset_and_epoch, BatchBuilder, BatchOptions, BatchView, RecordInput,
};
use fjord_schema::{
    ErrorCode, LeaderEpoch, NodeId, Offset, PartitionId, ProducerEpoch, ProducerId, Sequence,
};

use crate::disk::{NodeDisk, SyncTicket};
use fjord_broker::engine::fetch::fit_batches;

/// The data plane's settings (the broker's `fjord.toml` equivalents).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataConfig {
    /// `replica_lag_time_max_ms`.
    pub replica_lag_time_max_ms: u64,
    /// The replica fetchers' settings (`request_timeout_ms` is how long an
    /// unanswered request waits past `wait_max_ms` before it fails).
    pub fetcher: ReplicaFetcherConfig,
    /// Cap of an acks=all wait (`DEFAULT_ACK_TIMEOUT`, 30 s).
    pub ack_timeout_ms: u64,
    /// The flush-policy timer's period (`flush_interval` of a shard).
    pub flush_interval_ms: u64,
    /// Bounds of every partition's producer state.
    pub producer_state: ProducerStateConfig,
}

impl Default for DataConfig {
    fn default() -> DataConfig {
        DataConfig {
            replica_lag_time_max_ms: 30_000,
            fetcher: ReplicaFetcherConfig::default(),
            ack_timeout_ms: 30_000,
            flush_interval_ms: 1_000,
            producer_state: ProducerStateConfig::default(),
        }
    }
}

impl DataConfig {
    /// The replication timer's period, as `shard.rs` computes it.
    pub fn replica_tick_ms(&self) -> u64 {
        (self.replica_lag_time_max_ms / 4).clamp(50, 5_000)
    }
}

/// A replication message between two nodes' data planes; `id` matches an
/// answer to its request (the requester's, unique per node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaMsg {
    Fetch {
        id: u64,
        request: ReplicaFetchRequest,
    },
    FetchReply {
        id: u64,
        response: ReplicaFetchResponse,
    },
    Epochs {
        id: u64,
        request: EpochsRequest,
    },
    EpochsReply {
        id: u64,
        response: EpochsResponse,
    },
}

/// What the data plane asks of the world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// Deliver `msg` to node `to` (subject to the network's faults).
    Send { to: NodeId, msg: ReplicaMsg },
    /// A produce's answer (also for acks=0, which the edge would not send).
    Produced {
        id: u64,
        result: Result<i64, ErrorCode>,
    },
    /// Submit `command` (an `AlterPartition`) to the active controller;
    /// answer with [`NodeData::on_alter_partition_answer`] and `id` —
    /// with an error code (e.g. REQUEST_TIMED_OUT) when it could not be
    /// submitted or its answer is lost, as `service.rs` does.
    Controller { id: u64, command: ControllerCommand },
}

/// A client's produce to this node (one batch built from `records`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceRequest {
    pub id: u64,
    pub topic: String,
    pub partition: u32,
    pub acks: i8,
    /// (producer id, producer epoch, base sequence) of an idempotent
    /// producer.
    pub producer: Option<(i64, i16, i32)>,
    /// (key, value) records.
    pub records: Vec<(Bytes, Bytes)>,
    pub timeout_ms: u64,
    /// Checked as a fetch's when given; the broker's produce path takes
    /// none (Kafka's produce has no leader epoch), so the workload should
    /// pass `None` to exercise the broker as it is.
    pub current_leader_epoch: Option<LeaderEpoch>,
}

/// A consumer's fetch, answered at once (leader only, below the HW).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerFetch {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub max_bytes: usize,
    pub current_leader_epoch: Option<LeaderEpoch>,
}

/// A consumer fetch's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerFetchReply {
    pub error: ErrorCode,
    pub high_watermark: u64,
    pub log_start: u64,
    pub records: Vec<Record>,
}

/// One record as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: u64,
    /// The leader epoch stamped on its batch.
    pub leader_epoch: u32,
    /// (producer id, producer epoch, sequence of this record).
    pub producer: Option<(i64, i16, i32)>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
}

/// One replica as the checker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaView {
    pub node: NodeId,
    pub topic: String,
    pub partition: u32,
    pub topic_id: TopicId,
    pub role: Role,
    pub leader_epoch: LeaderEpoch,
    pub log_start: u64,
    pub log_end: u64,
    pub high_watermark: u64,
    pub durable_end: u64,
    /// The committed ISR as this replica applied it (leaders only).
    pub isr: Vec<NodeId>,
    /// The leader-epoch cache: (epoch, start offset).
    pub epochs: Vec<(u32, u64)>,
    pub records: Vec<Record>,
}

/// One batch of a replica's log, mirrored in memory.
#[derive(Debug, Clone)]
struct LogBatch {
    base: Offset,
    next: Offset,
    /// Its position in the segment file.
    pos: usize,
    bytes: Bytes,
}

/// One replica (`Partition` in `manager.rs`).
#[derive(Debug)]
struct Replica {
    topic_id: TopicId,
    config: TopicConfig,
    state: PartitionState,
    log_start: Offset,
    log: Vec<LogBatch>,
    /// The partition image last applied (`move_leaderships` applies only
    /// changed ones).
    image: Option<PartitionImage>,
}

impl Replica {
    fn log_end(&self) -> Offset {
        self.log.last().map_or(self.log_start, |b| b.next)
    }

    fn file_len(&self) -> usize {
        self.log.last().map_or(0, |b| b.pos + b.bytes.len())
    }

    fn position(&self) -> FollowerPosition {
        FollowerPosition {
            log_start: self.state.log_start(),
            log_end: self.state.log_end(),
            durable_end: self.state.durable_end(),
            high_watermark: self.state.high_watermark(),
            epochs: self.state.epochs().clone(),
            flush_before_ack: self.state.policy().flush_before_ack,
        }
    }

    /// `read_range` of `manager.rs`: whole batches from the one holding
    /// `offset`, below `limit`, within `max_bytes` (the first always);
    /// OFFSET_OUT_OF_RANGE outside the log (`check_fetch_offset`).
    fn read_range(
        &self,
        offset: u64,
        max_bytes: usize,
        limit: Offset,
    ) -> Result<Vec<Bytes>, ErrorCode> {
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let offset = self
            .state
            .check_fetch_offset(offset)
            .map_err(|e| e.code())?
            .get();
        if offset >= limit.get() {
            return Ok(Vec::new());
        }
        let first = self.log.partition_point(|b| b.next.get() <= offset);
        let mut out = Vec::new();
        let mut total = 0usize;
        for b in &self.log[first..] {
            if b.base >= limit {
                break;
            }
            if !out.is_empty() && total + b.bytes.len() > max_bytes {
                break;
            }
            total += b.bytes.len();
            out.push(b.bytes.clone());
        }
        Ok(out)
    }

    fn following(&self, epoch: LeaderEpoch) -> bool {
        matches!(self.state.role(), Role::Follower { leader: Some(_) })
            && self.state.leader_epoch() == epoch
    }
}

/// What an fdatasync in progress is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SyncFor {
    /// A produce's flush (`plan.flush`).
    Produce(u64),
    /// A follower's `ReplicaLogs::flush`, run by the fetcher of `leader`.
    Follower { leader: NodeId, epoch: LeaderEpoch },
    /// The flush-policy timer.
    Policy,
}

#[derive(Debug, Clone)]
struct PendingSync {
    key: Key,
    ticket: SyncTicket,
    /// The log end when it was issued: durable once it completes.
    end: Offset,
    purpose: SyncFor,
}

/// A produce not answered yet: flushing, or an acks=all waiter waiting.
#[derive(Debug, Clone)]
struct PendingProduce {
    id: u64,
    key: Key,
    base_offset: i64,
    waiter: Option<WaiterId>,
    flushing: bool,
    /// How long the waiter may wait once the flush is done.
    wait_ms: u64,
    deadline_ms: Option<u64>,
}

/// A replica fetch held by the leader (long poll).
#[derive(Debug, Clone)]
struct ParkedFetch {
    from: NodeId,
    id: u64,
    request: ReplicaFetchRequest,
    deadline_ms: u64,
}

/// One fetcher task of `driver.rs`.
#[derive(Debug)]
struct FetcherSlot {
    fetcher: Fetcher,
    seen: Option<u64>,
    /// The request in flight: its id and when it fails unanswered.
    in_flight: Option<(u64, u64)>,
    /// Local operations of the current step not run yet.
    ops: VecDeque<LocalOp>,
    /// An operation is waiting for an fdatasync.
    blocked: bool,
    wait_until: Option<u64>,
}

/// An ISR change sent to the controller, by proposal id.
#[derive(Debug, Clone)]
struct Proposal {
    key: Key,
    partition_epoch: PartitionEpoch,
}

/// Every partition replica on one node, its fetchers, pending long-polls
/// and acks=all waiters (see the module doc).
#[derive(Debug)]
pub struct NodeData {
    node: NodeId,
    config: DataConfig,
    disk: NodeDisk,
    replicas: BTreeMap<Key, Replica>,
    followed: BTreeMap<Key, Followed>,
    followed_version: u64,
    fetchers: BTreeMap<NodeId, FetcherSlot>,
    parked: Vec<ParkedFetch>,
    produces: Vec<PendingProduce>,
    syncs: Vec<PendingSync>,
    proposals: BTreeMap<u64, Proposal>,
    /// The last request or proposal id: this incarnation's (the disk's
    /// boot count) in the high bits.
    next_id: u64,
    /// Partitions notified (`p.data.notify_all()`) since the last settle.
    notified: BTreeSet<Key>,
    next_replica_tick_ms: u64,
    next_flush_tick_ms: u64,
    /// Bytes cut by recovery at open (torn tails), for the run's report.
    pub recovered_cut_bytes: u64,
    /// Whether the node's broker lease holds (`PartitionManager::leading`):
    /// set by the world from the node's controller
    /// (`SimController::lease_holds`) before every call (true until then,
    /// for harnesses without a controller); while false produces (the group coordinators' appends too), consumer fetches
    /// and ListOffsets answer NOT_LEADER_OR_FOLLOWER. Replica fetches are
    /// served.
    pub leased: bool,
    /// Client requests refused for want of the lease.
    pub unleased: u64,
}

fn key_of(topic: &str, partition: u32) -> Key {
    (topic.to_owned(), PartitionId(partition))
}

impl NodeData {
    /// Opens the node's data plane over its disk: a fresh node or a
    /// restart after a crash. Replicas open (recover) when the first image
    /// places them here ([`Self::apply_image`]), as `open_placed` does.
    pub fn open(node: NodeId, config: DataConfig, mut disk: NodeDisk, now_ms: u64) -> NodeData {
        disk.boots += 1;
        let next_id = disk.boots << 40;
        NodeData {
            node,
            config,
            disk,
            replicas: BTreeMap::new(),
            followed: BTreeMap::new(),
            followed_version: 0,
            fetchers: BTreeMap::new(),
            parked: Vec::new(),
            produces: Vec::new(),
            syncs: Vec::new(),
            proposals: BTreeMap::new(),
            next_id,
            notified: BTreeSet::new(),
            next_replica_tick_ms: now_ms + config.replica_tick_ms(),
            next_flush_tick_ms: now_ms + config.flush_interval_ms,
            recovered_cut_bytes: 0,
            leased: true,
            unleased: 0,
        }
    }

    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The node crashes: memory is gone, the disk is what survives (the
    /// world then calls [`NodeDisk::crash`] on it). In-flight fdatasyncs
    /// never complete.
    pub fn into_disk(self) -> NodeDisk {
        self.disk
    }

    pub fn disk(&self) -> &NodeDisk {
        &self.disk
    }

    /// The world's fault switches on the running node's disk.
    pub fn disk_mut(&mut self) -> &mut NodeDisk {
        &mut self.disk
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    // ---- metadata ----------------------------------------------------

    /// The committed metadata image changed: replicas of topics gone (by
    /// id) are deleted, new ones open (recovering what the disk has),
    /// config changes apply, and changed leaderships apply (leader:
    /// `apply_leadership`; else `become_follower`, the followed set
    /// follows), as `service.rs::apply_image` and `apply_leaderships`.
    pub fn apply_image(&mut self, image: &MetadataImage, now_ms: u64, out: &mut Vec<Out>) {
        let mut placed: BTreeMap<Key, (TopicId, TopicConfig, PartitionImage)> = BTreeMap::new();
        for topic in image.topics() {
            for (i, p) in topic.partitions.iter().enumerate() {
                if p.replicas.contains(&self.node) {
                    placed.insert(
                        (topic.name.clone(), PartitionId(i as u32)),
                        (topic.id, topic.config.clone(), p.clone()),
                    );
                }
            }
        }
        let gone: Vec<Key> = self
            .replicas
            .iter()
            .filter(|(k, r)| placed.get(*k).is_none_or(|(id, _, _)| *id != r.topic_id))
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            self.delete(&key);
        }
        let stale: Vec<Key> = self
            .disk
            .partitions()
            .filter(|(k, d)| {
                !self.replicas.contains_key(*k)
                    && placed.get(*k).is_none_or(|(id, _, _)| *id != d.topic_id)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            self.disk.remove(&key);
        }
        for (key, (topic_id, config, partition)) in placed {
            if !self.replicas.contains_key(&key) {
                let replica = self.open_replica(&key, topic_id, &config);
                self.replicas.insert(key.clone(), replica);
            }
            let Some(r) = self.replicas.get_mut(&key) else {
                continue;
            };
            if r.config != config {
                let policy = produce_policy(&config, self.config.replica_lag_time_max_ms);
                r.state.set_policy(policy);
                r.config = config;
            }
            if r.image.as_ref() != Some(&partition) {
                self.apply_leadership(&key, &partition, now_ms);
            }
        }
        self.settle(now_ms, out);
    }

    /// `PartitionManager::open` for one partition: the log recovered
    /// (torn tail cut), producer state rebuilt from it, epochs loaded or
    /// rebuilt (`load_epochs`), offsets as opened (HW = log end).
    fn open_replica(&mut self, key: &Key, topic_id: TopicId, config: &TopicConfig) -> Replica {
        if self
            .disk
            .partition(key)
            .is_some_and(|d| d.topic_id != topic_id)
        {
            self.disk.remove(key);
        }
        if self.disk.partition(key).is_none() {
            self.disk.create(key, topic_id);
        }
        let recovered = self.disk.recover(key).expect("created above");
        self.recovered_cut_bytes += recovered.cut_bytes as u64;
        let log_start = recovered.log_start;
        let mut log = Vec::with_capacity(recovered.batches.len());
        let mut pos = 0;
        for bytes in recovered.batches {
            let header = BatchView::parse_header(&bytes).expect("recovered batches parse");
            log.push(LogBatch {
                base: header.base_offset(),
                next: header.next_offset(),
                pos,
                bytes: bytes.clone(),
            });
            pos += bytes.len();
        }
        let log_end = log.last().map_or(log_start, |b: &LogBatch| b.next);
        let producers = rebuild_producers(self.config.producer_state, &log);
        let read = match &recovered.epochs {
            None => Ok(LeaderEpochCache::new()),
            Some(bytes) => LeaderEpochCache::decode(bytes),
        };
        let (epochs, rewrite) = match read {
            Ok(mut cache) if !cache.is_empty() || log_start == log_end => {
                cache.clamp_to_log(log_start, log_end);
                (cache, false)
            }
            _ => (
                LeaderEpochCache::rebuild_from_batches(log.iter().map(|b| {
                    let header = BatchView::parse_header(&b.bytes).expect("parsed above");
                    (header.base_offset(), header.leader_epoch())
                })),
                true,
            ),
        };
        let opened = Opened {
            leader_epoch: INITIAL_LEADER_EPOCH,
            log_start,
            log_end,
            durable_end: log_end,
        };
        let policy = produce_policy(config, self.config.replica_lag_time_max_ms);
        let state = PartitionState::new(opened, policy, producers).with_epochs(epochs, rewrite);
        Replica {
            topic_id,
            config: config.clone(),
            state,
            log_start,
            log,
            image: None,
        }
    }

    /// `apply_leaderships` for one partition.
    fn apply_leadership(&mut self, key: &Key, image: &PartitionImage, now_ms: u64) {
        let node = self.node;
        let Some(r) = self.replicas.get_mut(key) else {
            return;
        };
        r.image = Some(image.clone());
        let before = r.state.role();
        let completed = if image.leader == Some(node) {
            let leadership = Leadership {
                leader: node,
                replicas: image.replicas.clone(),
                isr: image.isr.clone(),
                leader_epoch: image.leader_epoch,
                partition_epoch: image.partition_epoch,
            };
            r.state
                .apply_leadership(&leadership, now_ms as i64)
                .unwrap_or_default()
        } else {
            r.state.become_follower(image.leader, image.leader_epoch)
        };
        let (role, epoch) = (r.state.role(), r.state.leader_epoch());
        match role {
            Role::Follower {
                leader: Some(leader),
            } => {
                let followed = Followed {
                    topic: key.0.clone(),
                    partition: key.1,
                    leader,
                    leader_epoch: epoch,
                };
                if self.followed.get(key) != Some(&followed) {
                    self.followed.insert(key.clone(), followed);
                    self.followed_version += 1;
                }
            }
            _ => {
                if self.followed.remove(key).is_some() {
                    self.followed_version += 1;
                }
            }
        }
        if !completed.is_empty() || role != before {
            self.notified.insert(key.clone());
        }
    }

    /// `PartitionManager::delete`: the replica closes (its waiting
    /// produces time out, as on a closed partition) and its files go.
    fn delete(&mut self, key: &Key) {
        self.replicas.remove(key);
        self.disk.remove(key);
        if self.followed.remove(key).is_some() {
            self.followed_version += 1;
        }
        self.notified.insert(key.clone());
    }

    /// The controller's answer to the AlterPartition sent as `id`: a
    /// refusal (any error) lets the partition propose again
    /// (`send_isr_changes`).
    pub fn on_alter_partition_answer(
        &mut self,
        id: u64,
        error: ErrorCode,
        now_ms: u64,
        out: &mut Vec<Out>,
    ) {
        let Some(proposal) = self.proposals.remove(&id) else {
            return;
        };
        if error != ErrorCode::None {
            if let Some(r) = self.replicas.get_mut(&proposal.key) {
                r.state.isr_change_rejected(proposal.partition_epoch);
            }
        }
        self.settle(now_ms, out);
    }

    fn propose(
        &mut self,
        key: &Key,
        change: fjord_broker::partition::replicas::IsrChange,
        out: &mut Vec<Out>,
    ) {
        let Some(r) = self.replicas.get(key) else {
            return;
        };
        let command = ControllerCommand::AlterPartition {
            node: self.node,
            topic: r.topic_id,
            partition: key.1.get(),
            leader_epoch: r.state.leader_epoch(),
            partition_epoch: change.partition_epoch,
            new_isr: change.new_isr,
        };
        let id = self.next_id();
        self.proposals.insert(
            id,
            Proposal {
                key: key.clone(),
                partition_epoch: change.partition_epoch,
            },
        );
        out.push(Out::Controller { id, command });
    }

    // ---- produce -----------------------------------------------------

    /// A client's produce: one batch built from the request's records
    /// (with its producer fields), then [`Self::produce_batches`].
    pub fn produce(&mut self, req: ProduceRequest, now_ms: u64, out: &mut Vec<Out>) {
        let batch = build_batch(req.producer, &req.records, now_ms as i64);
        if let Some(current) = req.current_leader_epoch {
            let key = key_of(&req.topic, req.partition);
            if let Some(r) = self.replicas.get(&key) {
                if let Err(error) = r.state.check_leader(Some(current)) {
                    out.push(Out::Produced {
                        id: req.id,
                        result: Err(error.code()),
                    });
                    return;
                }
            }
        }
        self.produce_batches(
            req.id,
            &req.topic,
            req.partition,
            req.acks,
            vec![batch],
            req.timeout_ms,
            now_ms,
            out,
        );
    }

    /// `PartitionManager::produce` of `batches` (native batches; a group
    /// coordinator's internal writes come in here too), answered with
    /// `Out::Produced { id, .. }` now or later.
    #[allow(clippy::too_many_arguments)]
    pub fn produce_batches(
        &mut self,
        id: u64,
        topic: &str,
        partition: u32,
        acks: i8,
        batches: Vec<Bytes>,
        timeout_ms: u64,
        now_ms: u64,
        out: &mut Vec<Out>,
    ) {
        let key = key_of(topic, partition);
        match self.produce_inner(id, &key, acks, batches, timeout_ms, now_ms) {
            Ok(Some(base)) => out.push(Out::Produced {
                id,
                result: Ok(base),
            }),
            Ok(None) => {}
            Err(code) => out.push(Out::Produced {
                id,
                result: Err(code),
            }),
        }
        self.settle(now_ms, out);
    }

    /// `Ok(Some(base))`: answered; `Ok(None)`: pending.
    fn produce_inner(
        &mut self,
        id: u64,
        key: &Key,
        acks: i8,
        batches: Vec<Bytes>,
        timeout_ms: u64,
        now_ms: u64,
    ) -> Result<Option<i64>, ErrorCode> {
        if !self.leased && self.replicas.contains_key(key) {
            self.unleased += 1;
            return Err(ErrorCode::NotLeaderOrFollower);
        }
        let Some(r) = self.replicas.get_mut(key) else {
            return Err(ErrorCode::NotLeaderOrFollower);
        };
        let acks = r
            .state
            .begin_produce(acks, now_ms as i64)
            .map_err(|e| e.code())?;
        if batches.is_empty() {
            return Err(ErrorCode::InvalidRequest);
        }
        let leader_epoch = r.state.leader_epoch();
        // The checkpoint covers a new epoch before its first batch.
        write_epochs(&mut self.disk, key, r).map_err(|_| ErrorCode::KafkaStorageError)?;
        let mut base_offset: Option<i64> = None;
        for batch in batches {
            let header = BatchView::parse_header(&batch).map_err(|_| ErrorCode::CorruptMessage)?;
            let producer = ProducerBatch::of(header);
            match r.state.check_batch(producer.as_ref()) {
                Ok(BatchPlan::Append) => {}
                Ok(BatchPlan::Duplicate { base_offset: first }) => {
                    base_offset.get_or_insert(first.get() as i64);
                    continue;
                }
                Err(error) => {
                    self.notified.insert(key.clone());
                    return Err(error.code());
                }
            }
            let at = r.state.log_end();
            let mut bytes = batch.to_vec();
            assign_offset_and_epoch(&mut bytes, at, leader_epoch);
            if self.disk.append(key, &bytes).is_err() {
                self.notified.insert(key.clone());
                return Err(ErrorCode::KafkaStorageError);
            }
            let header = *BatchView::parse_header(&bytes).expect("parsed above");
            let pos = r.file_len();
            r.log.push(LogBatch {
                base: header.base_offset(),
                next: header.next_offset(),
                pos,
                bytes: Bytes::from(bytes),
            });
            base_offset.get_or_insert(at.get() as i64);
            let appended = Appended {
                base_offset: header.base_offset(),
                last_offset: header.last_offset(),
                next_offset: header.next_offset(),
                durable_end: r.state.durable_end(),
            };
            r.state.appended(producer.as_ref(), appended, now_ms as i64);
        }
        let plan = r.state.ack_plan(acks);
        self.notified.insert(key.clone());
        let base = base_offset.unwrap_or(-1);
        let wait_ms = timeout_ms.min(self.config.ack_timeout_ms);
        if plan.flush {
            match self.disk.start_sync(key, now_ms) {
                Err(_) => {
                    if let Some(waiter) = plan.waiter {
                        r.state.cancel(waiter);
                    }
                    return Err(ErrorCode::KafkaStorageError);
                }
                Ok(ticket) => {
                    let sync = PendingSync {
                        key: key.clone(),
                        ticket,
                        end: r.state.log_end(),
                        purpose: SyncFor::Produce(id),
                    };
                    self.produces.push(PendingProduce {
                        id,
                        key: key.clone(),
                        base_offset: base,
                        waiter: plan.waiter,
                        flushing: true,
                        wait_ms,
                        deadline_ms: None,
                    });
                    self.syncs.push(sync);
                    if ticket.done_ms <= now_ms {
                        self.complete_syncs(now_ms);
                    }
                    return Ok(None);
                }
            }
        }
        match plan.waiter {
            None => Ok(Some(base)),
            Some(waiter) => {
                self.produces.push(PendingProduce {
                    id,
                    key: key.clone(),
                    base_offset: base,
                    waiter: Some(waiter),
                    flushing: false,
                    wait_ms,
                    deadline_ms: Some(now_ms + wait_ms),
                });
                Ok(None)
            }
        }
    }

    /// Completes the fdatasyncs due by `now_ms`, in the order they
    /// complete.
    fn complete_syncs(&mut self, now_ms: u64) {
        let mut due: Vec<PendingSync> = Vec::new();
        let mut left = Vec::new();
        for s in std::mem::take(&mut self.syncs) {
            if s.ticket.done_ms <= now_ms {
                due.push(s);
            } else {
                left.push(s);
            }
        }
        self.syncs = left;
        due.sort_by_key(|s| s.ticket.done_ms);
        for s in due {
            let applied = self.disk.finish_sync(&s.key, s.ticket);
            if let Some(r) = self.replicas.get_mut(&s.key) {
                if applied {
                    let end = s.end.min(r.state.log_end());
                    if !r.state.durable(end).is_empty() {
                        self.notified.insert(s.key.clone());
                    }
                }
            }
            match s.purpose {
                SyncFor::Produce(id) => {
                    if let Some(p) = self.produces.iter_mut().find(|p| p.id == id) {
                        p.flushing = false;
                        p.deadline_ms = Some(now_ms + p.wait_ms);
                    }
                }
                SyncFor::Follower { leader, epoch } => {
                    let result = match self.replicas.get(&s.key) {
                        Some(r) => Ok(r.position()),
                        None => Err(FollowerError::NotFollowing {
                            topic: s.key.0.clone(),
                            partition: s.key.1,
                            leader_epoch: epoch,
                        }),
                    };
                    if let Some(slot) = self.fetchers.get_mut(&leader) {
                        slot.fetcher.local_done(now_ms, &s.key, epoch, result);
                        slot.blocked = false;
                    }
                }
                SyncFor::Policy => {}
            }
        }
    }

    /// Answers the produces whose flush is done and whose waiter was
    /// released, or whose wait ran out (REQUEST_TIMED_OUT).
    fn resolve_produces(&mut self, now_ms: u64, out: &mut Vec<Out>) {
        let mut left = Vec::new();
        for p in std::mem::take(&mut self.produces) {
            if p.flushing {
                left.push(p);
                continue;
            }
            let Some(waiter) = p.waiter else {
                out.push(Out::Produced {
                    id: p.id,
                    result: Ok(p.base_offset),
                });
                continue;
            };
            let Some(r) = self.replicas.get_mut(&p.key) else {
                // Closed while it waited.
                out.push(Out::Produced {
                    id: p.id,
                    result: Err(ErrorCode::RequestTimedOut),
                });
                continue;
            };
            match r.state.take_outcome(waiter) {
                Some(Ok(())) => out.push(Out::Produced {
                    id: p.id,
                    result: Ok(p.base_offset),
                }),
                Some(Err(error)) => out.push(Out::Produced {
                    id: p.id,
                    result: Err(error.code()),
                }),
                None if p.deadline_ms.is_some_and(|d| now_ms >= d) => {
                    r.state.cancel(waiter);
                    out.push(Out::Produced {
                        id: p.id,
                        result: Err(ErrorCode::RequestTimedOut),
                    });
                }
                None => left.push(p),
            }
        }
        self.produces = left;
    }

    // ---- reads -------------------------------------------------------

    /// A consumer's fetch: leader only, below the high watermark.
    pub fn fetch(&self, req: &ConsumerFetch) -> ConsumerFetchReply {
        let error = |code| ConsumerFetchReply {
            error: code,
            high_watermark: 0,
            log_start: 0,
            records: Vec::new(),
        };
        let Some(r) = self.replicas.get(&key_of(&req.topic, req.partition)) else {
            return error(ErrorCode::NotLeaderOrFollower);
        };
        if !self.leased {
            return error(ErrorCode::NotLeaderOrFollower);
        }
        if let Err(e) = r.state.check_leader(req.current_leader_epoch) {
            return error(e.code());
        }
        let hw = r.state.high_watermark();
        match r.read_range(req.offset, req.max_bytes, r.state.read_limit(None)) {
            Err(code) => ConsumerFetchReply {
                error: code,
                high_watermark: hw.get(),
                log_start: r.state.log_start().get(),
                records: Vec::new(),
            },
            Ok(batches) => ConsumerFetchReply {
                error: ErrorCode::None,
                high_watermark: hw.get(),
                log_start: r.state.log_start().get(),
                records: batches.iter().flat_map(records_of).collect(),
            },
        }
    }

    /// This node's replica's log start and log end, leader or follower
    /// (the group coordinator's replay bounds).
    pub fn bounds(&self, topic: &str, partition: u32) -> Result<(u64, u64), ErrorCode> {
        let r = self
            .replicas
            .get(&key_of(topic, partition))
            .ok_or(ErrorCode::NotLeaderOrFollower)?;
        Ok((r.state.log_start().get(), r.state.log_end().get()))
    }

    /// ListOffsets: (log start, high watermark) on the leader.
    pub fn list_offsets(&self, topic: &str, partition: u32) -> Result<(u64, u64), ErrorCode> {
        let r = self
            .replicas
            .get(&key_of(topic, partition))
            .ok_or(ErrorCode::NotLeaderOrFollower)?;
        if !self.leased {
            return Err(ErrorCode::NotLeaderOrFollower);
        }
        r.state.check_leader(None).map_err(|e| e.code())?;
        Ok((r.state.log_start().get(), r.state.high_watermark().get()))
    }

    /// `read_local`: whole batches from `offset` up to the log end, on any
    /// replica (the group coordinator replaying `__consumer_offsets`).
    pub fn read_local(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> Result<Vec<Bytes>, ErrorCode> {
        let r = self
            .replicas
            .get(&key_of(topic, partition))
            .ok_or(ErrorCode::NotLeaderOrFollower)?;
        r.read_range(offset, max_bytes, r.state.log_end())
    }

    /// This replica's role and leader epoch, if it holds the partition.
    pub fn role(&self, topic: &str, partition: u32) -> Option<(Role, LeaderEpoch)> {
        let r = self.replicas.get(&key_of(topic, partition))?;
        Some((r.state.role(), r.state.leader_epoch()))
    }

    /// For the checker: every replica with its offsets and records.
    pub fn inspect(&self) -> Vec<ReplicaView> {
        self.replicas
            .iter()
            .map(|(key, r)| ReplicaView {
                node: self.node,
                topic: key.0.clone(),
                partition: key.1.get(),
                topic_id: r.topic_id,
                role: r.state.role(),
                leader_epoch: r.state.leader_epoch(),
                log_start: r.state.log_start().get(),
                log_end: r.state.log_end().get(),
                high_watermark: r.state.high_watermark().get(),
                durable_end: r.state.durable_end().get(),
                isr: r.state.replicas().isr().to_vec(),
                epochs: r
                    .state
                    .epochs()
                    .entries()
                    .iter()
                    .map(|e| (e.epoch.get(), e.start_offset.get()))
                    .collect(),
                records: r.log.iter().flat_map(|b| records_of(&b.bytes)).collect(),
            })
            .collect()
    }

    // ---- replication messages ---------------------------------------

    /// A replication message from node `from`: a request served as the
    /// leader (`replication/server.rs` + `engine/fetch.rs`), or the answer
    /// to this node's fetcher's request (matched by id; others dropped).
    pub fn on_message(&mut self, from: NodeId, msg: ReplicaMsg, now_ms: u64, out: &mut Vec<Out>) {
        match msg {
            ReplicaMsg::Fetch { id, request } => {
                let deadline_ms = now_ms + u64::from(request.max_wait_ms);
                let parked = ParkedFetch {
                    from,
                    id,
                    request,
                    deadline_ms,
                };
                if let Some(parked) = self.try_answer(parked, now_ms, out) {
                    self.parked.push(parked);
                }
            }
            ReplicaMsg::Epochs { id, request } => {
                let response = self.answer_epochs(&request);
                out.push(Out::Send {
                    to: from,
                    msg: ReplicaMsg::EpochsReply { id, response },
                });
            }
            ReplicaMsg::FetchReply { id, response } => {
                if let Some(slot) = self.fetchers.get_mut(&from) {
                    if slot.in_flight.is_some_and(|(sent, _)| sent == id) {
                        slot.in_flight = None;
                        slot.fetcher.fetched(now_ms, response);
                    }
                }
            }
            ReplicaMsg::EpochsReply { id, response } => {
                if let Some(slot) = self.fetchers.get_mut(&from) {
                    if slot.in_flight.is_some_and(|(sent, _)| sent == id) {
                        slot.in_flight = None;
                        slot.fetcher.epochs_answered(now_ms, response);
                    }
                }
            }
        }
        self.settle(now_ms, out);
    }

    /// `OffsetForLeaderEpoch` as the leader answers it (`epoch_end`).
    fn answer_epochs(&self, request: &EpochsRequest) -> EpochsResponse {
        let topics = request
            .topics
            .iter()
            .map(|(topic, parts)| {
                let answers = parts
                    .iter()
                    .map(|q| {
                        let answer = |error, leader_epoch, end_offset| EpochAnswer {
                            partition: q.partition,
                            error,
                            leader_epoch,
                            end_offset,
                        };
                        let Some(r) = self.replicas.get(&(topic.clone(), q.partition)) else {
                            return answer(ErrorCode::NotLeaderOrFollower, -1, -1);
                        };
                        if let Err(e) = r.state.check_leader(Some(q.current_leader_epoch)) {
                            return answer(e.code(), -1, -1);
                        }
                        match r.state.epoch_end(q.leader_epoch) {
                            Some(end) => answer(
                                ErrorCode::None,
                                end.epoch.get() as i32,
                                end.end_offset.get() as i64,
                            ),
                            None => answer(ErrorCode::None, -1, -1),
                        }
                    })
                    .collect();
                (topic.clone(), answers)
            })
            .collect();
        EpochsResponse { topics }
    }

    /// One pass of `Engine::fetch` for a replica fetch: answers it (and
    /// returns `None`) when `min_bytes` came back, a partition failed or
    /// its deadline passed; else returns it to hold.
    fn try_answer(
        &mut self,
        parked: ParkedFetch,
        now_ms: u64,
        out: &mut Vec<Out>,
    ) -> Option<ParkedFetch> {
        let request = &parked.request;
        let node = request.replica_id;
        let mut total = 0usize;
        let mut failed = false;
        let mut topics = Vec::with_capacity(request.topics.len());
        let mut proposals = Vec::new();
        for (topic, parts) in &request.topics {
            let mut results = Vec::with_capacity(parts.len());
            for p in parts {
                let key = (topic.clone(), p.partition);
                let result = match self.replicas.get_mut(&key) {
                    None => Err(ErrorCode::NotLeaderOrFollower),
                    Some(r) => serve_replica_fetch(
                        r,
                        p,
                        node,
                        (p.partition_max_bytes as usize).min(request.max_bytes as usize),
                        now_ms,
                    ),
                };
                let result = match result {
                    Ok((result, notify, change)) => {
                        if notify {
                            self.notified.insert(key.clone());
                        }
                        if let Some(change) = change {
                            proposals.push((key.clone(), change));
                        }
                        result
                    }
                    Err(error) => ReplicaFetchResult {
                        partition: p.partition,
                        error,
                        high_watermark: -1,
                        log_start_offset: -1,
                        batches: Vec::new(),
                    },
                };
                failed |= result.error != ErrorCode::None;
                total += result.batches.iter().map(Bytes::len).sum::<usize>();
                results.push(result);
            }
            topics.push((topic.clone(), results));
        }
        for (key, change) in proposals {
            self.propose(&key, change, out);
        }
        if total >= request.min_bytes as usize || failed || now_ms >= parked.deadline_ms {
            fit(&mut topics, request.max_bytes as usize);
            out.push(Out::Send {
                to: parked.from,
                msg: ReplicaMsg::FetchReply {
                    id: parked.id,
                    response: ReplicaFetchResponse { topics },
                },
            });
            return None;
        }
        Some(parked)
    }

    /// Whether a held replica fetch wakes: a partition of it was notified,
    /// is gone, or has a log end past the fetch offset
    /// (`wait_for_data` with `replica`), or its deadline passed.
    fn wakes(&self, parked: &ParkedFetch, now_ms: u64) -> bool {
        if now_ms >= parked.deadline_ms {
            return true;
        }
        parked.request.topics.iter().any(|(topic, parts)| {
            parts.iter().any(|p| {
                let key = (topic.clone(), p.partition);
                self.notified.contains(&key)
                    || self
                        .replicas
                        .get(&key)
                        .is_none_or(|r| r.state.log_end() != p.fetch_offset)
            })
        })
    }

    // ---- time --------------------------------------------------------

    /// Time passes to `now_ms`: fdatasyncs complete, unanswered requests
    /// fail, the replication timer proposes ISR shrinks, the flush timer
    /// flushes, fetchers take their next steps, long-polls and acks=all
    /// waits that ran out are answered.
    pub fn poll(&mut self, now_ms: u64, out: &mut Vec<Out>) {
        self.complete_syncs(now_ms);
        for slot in self.fetchers.values_mut() {
            if slot
                .in_flight
                .is_some_and(|(_, deadline)| now_ms >= deadline)
            {
                slot.in_flight = None;
                slot.fetcher.request_failed(now_ms);
            }
        }
        if now_ms >= self.next_replica_tick_ms {
            self.next_replica_tick_ms = now_ms + self.config.replica_tick_ms();
            let keys: Vec<Key> = self.replicas.keys().cloned().collect();
            for key in keys {
                let change = self
                    .replicas
                    .get_mut(&key)
                    .and_then(|r| r.state.tick(now_ms as i64));
                if let Some(change) = change {
                    self.propose(&key, change, out);
                }
            }
        }
        if now_ms >= self.next_flush_tick_ms {
            self.next_flush_tick_ms = now_ms + self.config.flush_interval_ms;
            let keys: Vec<Key> = self
                .replicas
                .iter()
                .filter(|(_, r)| r.state.flush_due(now_ms as i64))
                .map(|(k, _)| k.clone())
                .collect();
            for key in keys {
                let Some(r) = self.replicas.get(&key) else {
                    continue;
                };
                let end = r.state.log_end();
                // A failed timed flush is retried by the next tick.
                if let Ok(ticket) = self.disk.start_sync(&key, now_ms) {
                    self.syncs.push(PendingSync {
                        key,
                        ticket,
                        end,
                        purpose: SyncFor::Policy,
                    });
                }
            }
            self.complete_syncs(now_ms);
        }
        self.settle(now_ms, out);
    }

    /// When [`Self::poll`] next has something to do.
    pub fn next_wakeup(&self) -> Option<u64> {
        let mut at: Option<u64> = None;
        let mut take = |t: u64| at = Some(at.map_or(t, |a| a.min(t)));
        for s in &self.syncs {
            take(s.ticket.done_ms);
        }
        for slot in self.fetchers.values() {
            if let Some((_, deadline)) = slot.in_flight {
                take(deadline);
            }
            if let Some(until) = slot.wait_until {
                take(until);
            }
        }
        for p in &self.parked {
            take(p.deadline_ms);
        }
        for p in &self.produces {
            if let Some(d) = p.deadline_ms {
                take(d);
            }
        }
        if !self.replicas.is_empty() {
            take(self.next_replica_tick_ms);
            take(self.next_flush_tick_ms);
        }
        at
    }

    /// After every event: fetchers step, held fetches woken re-run,
    /// produces resolved — until nothing changes.
    fn settle(&mut self, now_ms: u64, out: &mut Vec<Out>) {
        for _ in 0..1_000 {
            self.drive_fetchers(now_ms, out);
            let mut woken = Vec::new();
            let mut held = Vec::new();
            for parked in std::mem::take(&mut self.parked) {
                if self.wakes(&parked, now_ms) {
                    woken.push(parked);
                } else {
                    held.push(parked);
                }
            }
            // The notifications are consumed by the wake-ups; a re-run
            // fetch that moves the high watermark notifies again.
            self.notified.clear();
            for parked in woken {
                if let Some(again) = self.try_answer(parked, now_ms, out) {
                    held.push(again);
                }
            }
            self.parked = held;
            self.resolve_produces(now_ms, out);
            if self.notified.is_empty() {
                return;
            }
        }
        panic!("node {}: data plane does not settle", self.node);
    }

    // ---- the follower side ---------------------------------------------

    /// `driver.rs`: a fetcher per leader the followed set names, each run
    /// until it waits (a request in flight, a pause, an fdatasync).
    fn drive_fetchers(&mut self, now_ms: u64, out: &mut Vec<Out>) {
        let leaders: BTreeSet<NodeId> = self
            .followed
            .values()
            .map(|f| f.leader)
            .filter(|l| *l != self.node)
            .collect();
        for leader in leaders {
            self.fetchers.entry(leader).or_insert_with(|| FetcherSlot {
                fetcher: Fetcher::new(self.node, leader, self.config.fetcher),
                seen: None,
                in_flight: None,
                ops: VecDeque::new(),
                blocked: false,
                wait_until: None,
            });
        }
        let leaders: Vec<NodeId> = self.fetchers.keys().copied().collect();
        for leader in leaders {
            let Some(mut slot) = self.fetchers.remove(&leader) else {
                continue;
            };
            let keep = self.drive_one(leader, &mut slot, now_ms, out);
            if keep {
                self.fetchers.insert(leader, slot);
            }
        }
    }

    /// `run_fetcher`'s loop for one fetcher; `false`: it ended.
    fn drive_one(
        &mut self,
        leader: NodeId,
        slot: &mut FetcherSlot,
        now_ms: u64,
        out: &mut Vec<Out>,
    ) -> bool {
        for _ in 0..10_000 {
            if slot.blocked {
                return true;
            }
            if let Some(op) = slot.ops.pop_front() {
                let key = op.key().clone();
                let epoch = op.epoch();
                match self.run_op(leader, op, now_ms) {
                    Some(result) => slot.fetcher.local_done(now_ms, &key, epoch, result),
                    None => slot.blocked = true,
                }
                continue;
            }
            if slot.seen != Some(self.followed_version) {
                let followed: Vec<Followed> = self.followed.values().cloned().collect();
                slot.fetcher.set_followed(&followed);
                slot.seen = Some(self.followed_version);
                if slot.in_flight.is_some() && !slot.fetcher.in_flight_wanted() {
                    slot.fetcher.abandon();
                    slot.in_flight = None;
                }
            }
            if slot.fetcher.is_empty() {
                return false;
            }
            if slot.in_flight.is_some() {
                return true;
            }
            slot.wait_until = None;
            let timeout = u64::from(self.config.fetcher.wait_max_ms)
                .saturating_add(self.config.fetcher.request_timeout_ms);
            match slot.fetcher.next_step(now_ms) {
                Step::Local(ops) => slot.ops.extend(ops),
                Step::Fetch(request) => {
                    let id = self.next_id();
                    slot.in_flight = Some((id, now_ms + timeout));
                    out.push(Out::Send {
                        to: leader,
                        msg: ReplicaMsg::Fetch { id, request },
                    });
                    return true;
                }
                Step::Epochs(request) => {
                    let id = self.next_id();
                    slot.in_flight = Some((id, now_ms + timeout));
                    out.push(Out::Send {
                        to: leader,
                        msg: ReplicaMsg::Epochs { id, request },
                    });
                    return true;
                }
                Step::Wait { until_ms } => {
                    slot.wait_until = until_ms;
                    return true;
                }
            }
        }
        panic!(
            "node {}: the fetcher of leader {leader} does not settle",
            self.node
        );
    }

    /// One `ReplicaLogs` operation; `None`: an fdatasync is in progress
    /// (completed later through `local_done`).
    fn run_op(
        &mut self,
        leader: NodeId,
        op: LocalOp,
        now_ms: u64,
    ) -> Option<Result<FollowerPosition, FollowerError>> {
        let not_following = |key: &Key, epoch| FollowerError::NotFollowing {
            topic: key.0.clone(),
            partition: key.1,
            leader_epoch: epoch,
        };
        let key = op.key().clone();
        let epoch = op.epoch();
        let Some(r) = self.replicas.get_mut(&key).filter(|r| r.following(epoch)) else {
            return Some(Err(not_following(&key, epoch)));
        };
        match op {
            LocalOp::Position { .. } => Some(Ok(r.position())),
            LocalOp::Truncate { end, .. } => Some(truncate(
                &mut self.disk,
                self.config.producer_state,
                &key,
                r,
                end,
            )),
            LocalOp::Append {
                batches,
                high_watermark,
                ..
            } => {
                let result =
                    follower_append(&mut self.disk, &key, r, batches, high_watermark, now_ms);
                self.notified.insert(key);
                Some(result)
            }
            LocalOp::Flush { .. } => match self.disk.start_sync(&key, now_ms) {
                Err(e) => Some(Err(FollowerError::Storage(e.to_string()))),
                Ok(ticket) => {
                    let end = r.state.log_end();
                    if ticket.done_ms <= now_ms {
                        if self.disk.finish_sync(&key, ticket) {
                            r.state.durable(end);
                        }
                        return Some(Ok(r.position()));
                    }
                    self.syncs.push(PendingSync {
                        key,
                        ticket,
                        end,
                        purpose: SyncFor::Follower { leader, epoch },
                    });
                    None
                }
            },
        }
    }
}

/// The leader's side of one partition of a replica fetch
/// (`PartitionManager::fetch` with `replica`): the epoch check, the
/// follower's progress (`follower_fetched`: HW, waiters, ISR expansion),
/// then the read to the log end. Also returns whether the partition was
/// notified and an ISR change to propose.
#[allow(clippy::type_complexity)]
fn serve_replica_fetch(
    r: &mut Replica,
    p: &ReplicaFetchPartition,
    node: NodeId,
    max_bytes: usize,
    now_ms: u64,
) -> Result<
    (
        ReplicaFetchResult,
        bool,
        Option<fjord_broker::partition::replicas::IsrChange>,
    ),
    ErrorCode,
> {
    let (partition, fetch_offset) = (p.partition, p.fetch_offset);
    r.state
        .check_leader(Some(p.current_leader_epoch))
        .map_err(|e| e.code())?;
    let before = r.state.high_watermark();
    let fetched = r
        .state
        .follower_fetched(node, fetch_offset, p.durable_end, now_ms as i64)
        .map_err(|e| e.code())?;
    let notify = r.state.high_watermark() != before || !fetched.completed.is_empty();
    let hw = r.state.high_watermark();
    let limit = r.state.read_limit(Some(node));
    let result = match r.read_range(fetch_offset.get(), max_bytes, limit) {
        Ok(batches) => ReplicaFetchResult {
            partition,
            error: ErrorCode::None,
            high_watermark: hw.get() as i64,
            log_start_offset: r.state.log_start().get() as i64,
            batches,
        },
        Err(error) => ReplicaFetchResult {
            partition,
            error,
            high_watermark: hw.get() as i64,
            log_start_offset: r.state.log_start().get() as i64,
            batches: Vec::new(),
        },
    };
    Ok((result, notify, fetched.isr_change))
}

/// `engine::fetch::fit` over a replica-fetch answer: whole batches in
/// request order while they fit the response's byte budget (the first
/// always).
fn fit(topics: &mut [(String, Vec<ReplicaFetchResult>)], max_bytes: usize) {
    fit_batches(
        topics
            .iter_mut()
            .flat_map(|(_, parts)| parts.iter_mut().map(|result| &mut result.batches)),
        max_bytes,
    );
}

/// `write_epochs`: the checkpoint, when the cache changed since it was
/// last written.
fn write_epochs(
    disk: &mut NodeDisk,
    key: &Key,
    r: &mut Replica,
) -> Result<(), crate::disk::DiskFull> {
    let Some((version, cache)) = r.state.epochs_to_write() else {
        return Ok(());
    };
    disk.write_epochs(key, cache.encode())?;
    r.state.epochs_written(version);
    Ok(())
}

/// The producer state of a log, from its batch headers (`snapshot::load`
/// with no snapshot).
fn rebuild_producers(config: ProducerStateConfig, log: &[LogBatch]) -> ProducerStates {
    let mut states = ProducerStates::new(config);
    for b in log {
        let header = BatchView::parse_header(&b.bytes).expect("batches in the log parse");
        if let Some(producer) = ProducerBatch::of(header) {
            states.apply(
                &producer,
                header.base_offset(),
                header.last_offset(),
                header.max_timestamp.get(),
            );
        }
    }
    states
}

/// `ReplicaLogs::truncate`: cut to `end` (whole batches), or restart empty
/// at `end` outside the log; producer state rebuilt, epochs checkpointed.
fn truncate(
    disk: &mut NodeDisk,
    producer_state: ProducerStateConfig,
    key: &Key,
    r: &mut Replica,
    end: Offset,
) -> Result<FollowerPosition, FollowerError> {
    let storage = |e: crate::disk::DiskFull| FollowerError::Storage(e.to_string());
    let (log_start, log_end) = (r.state.log_start(), r.state.log_end());
    if end == log_end {
        return Ok(r.position());
    }
    if end < log_start || end > log_end {
        disk.reset(key, end).map_err(storage)?;
        r.log.clear();
        r.log_start = end;
    } else {
        let keep = r.log.partition_point(|b| b.next <= end);
        let len = r.log.get(keep).map_or(r.file_len(), |b| b.pos);
        disk.truncate(key, len).map_err(storage)?;
        r.log.truncate(keep);
    }
    let producers = rebuild_producers(producer_state, &r.log);
    let new_end = r.log_end();
    r.state.truncated(r.log_start, new_end, new_end, producers);
    write_epochs(disk, key, r).map_err(storage)?;
    Ok(r.position())
}

/// `ReplicaLogs::append`: the leader's batches verbatim, each verified
/// and continuing the log, the epochs checkpoint written before a new
/// epoch's first batch, then the leader's high watermark.
fn follower_append(
    disk: &mut NodeDisk,
    key: &Key,
    r: &mut Replica,
    batches: Vec<Bytes>,
    leader_high_watermark: Offset,
    now_ms: u64,
) -> Result<FollowerPosition, FollowerError> {
    for batch in batches {
        let (epoch, base, last, next) = match BatchView::parse(&batch) {
            Ok((view, _)) => {
                let h = view.header();
                (
                    h.leader_epoch(),
                    h.base_offset(),
                    h.last_offset(),
                    h.next_offset(),
                )
            }
            Err(error) => return Err(FollowerError::Diverged(error.to_string())),
        };
        let producer = BatchView::parse_header(&batch)
            .ok()
            .and_then(ProducerBatch::of);
        if base != r.state.log_end() {
            return Err(FollowerError::Diverged(format!(
                "batch at {base}, the log ends at {}",
                r.state.log_end()
            )));
        }
        if r.state.epoch_is_new(epoch) {
            r.state.assign_epoch(epoch, base);
            write_epochs(disk, key, r).map_err(|e| FollowerError::Storage(e.to_string()))?;
        }
        disk.append(key, &batch)
            .map_err(|e| FollowerError::Storage(e.to_string()))?;
        let pos = r.file_len();
        r.log.push(LogBatch {
            base,
            next,
            pos,
            bytes: batch,
        });
        let appended = Appended {
            base_offset: base,
            last_offset: last,
            next_offset: next,
            durable_end: r.state.durable_end(),
        };
        r.state
            .follower_appended(producer.as_ref(), appended, epoch, now_ms as i64);
    }
    r.state.follower_high_watermark(leader_high_watermark);
    Ok(r.position())
}

/// A native batch of `records` as a producer builds it (timestamps
/// `timestamp_ms`), with its idempotent-producer fields.
pub fn build_batch(
    producer: Option<(i64, i16, i32)>,
    records: &[(Bytes, Bytes)],
    timestamp_ms: i64,
) -> Bytes {
    let mut options = BatchOptions::default();
    if let Some((id, epoch, seq)) = producer {
        options.producer_id = ProducerId(id);
        options.producer_epoch = ProducerEpoch(epoch);
        options.base_sequence = Sequence(seq);
    }
    let mut builder = BatchBuilder::new(options);
    for (key, value) in records {
        builder.push(RecordInput {
            key: Some(key),
            value: Some(value),
            timestamp: timestamp_ms,
            ..RecordInput::default()
        });
    }
    builder.finish().expect("a batch of small records builds")
}

/// The records of a stored batch.
pub fn records_of(batch: &Bytes) -> Vec<Record> {
    let Ok((view, _)) = BatchView::parse(batch) else {
        return Vec::new();
    };
    let header = view.header();
    let producer = ProducerBatch::of(header);
    let base = header.base_offset().get();
    let mut scratch = Vec::new();
    let Ok(records) = view.records(&mut scratch, 64 << 20) else {
        return Vec::new();
    };
    records
        .iter()
        .map(|rec| {
            let offset = rec.offset.get();
            Record {
                offset,
                leader_epoch: header.leader_epoch().get(),
                producer: producer.map(|p| {
                    (
                        p.producer_id.0,
                        p.epoch.0,
                        p.first_seq.0.wrapping_add((offset - base) as i32),
                    )
                }),
                key: rec.key().map(Bytes::copy_from_slice),
                value: rec.value().map(Bytes::copy_from_slice),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
