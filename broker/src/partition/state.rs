//! The sans-IO state machine of one partition led by this node: every
//! decision of a produce and a fetch, and the offsets they depend on. No
//! glommio, no files, no clock reads: the driver
//! ([`super::manager::PartitionManager`]) feeds it what the log did and
//! the time, and runs the I/O it asks for.
//!
//! A produce, as the driver runs it:
//! 1. [`PartitionState::begin_produce`]: the acks value and
//!    `min.insync.replicas` against the in-sync replicas.
//! 2. Under the partition's append gate, per batch:
//!    [`PartitionState::check_batch`] (idempotence: append, or a duplicate
//!    answered with its original offset, or refused), the log append, then
//!    [`PartitionState::appended`] (log end, high watermark, producer
//!    state, flush bookkeeping).
//! 3. Still under the gate, [`PartitionState::ack_plan`]: whether the
//!    driver must flush before answering, and for acks=all a waiter keyed
//!    by the offset it waits for.
//! 4. After a flush, [`PartitionState::durable`] moves the durable end and
//!    releases the waiters it covers, in offset order.
//!
//! # High watermark
//!
//! With the leader alone in the ISR, the high watermark is the log end,
//! for every topic, as in Kafka with a single in-sync replica (Kafka's
//! high watermark never waits for an fsync either). The alternative, the
//! durable end for `flush.before.ack` topics, was rejected:
//! `flush.before.ack` is the default and `flush.ms`/`flush.messages` are
//! unset by default, so the data of an acks=1 or acks=0 producer would
//! stay invisible to consumers (and long-poll fetches would not wake)
//! until some other producer's acks=all flush or the write buffer filling
//! up. Durability is what acks=all waits for instead: with
//! `flush.before.ack` an acks=all producer is acknowledged once its
//! offsets are below both the high watermark and the durable end
//! ([`PartitionState::ack_end`]).
//!
//! # Replication (issue 14, `CLUSTER.md` §4)
//!
//! A leader with followers is given its replicas, ISR and epochs by the
//! committed metadata image ([`PartitionState::apply_leadership`]); each
//! follower's fetch reports its log end (and its durable end when the
//! topic flushes before ack: [`PartitionState::follower_fetched`]). The
//! followers' progress and the ISR proposals live in
//! [`super::replicas::Replicas`]; the high watermark stays here: the least
//! end over the maximal ISR — the followers' durable ends when the topic
//! flushes before ack, the leader's log end — never going back. So the ack
//! end (high watermark and the leader's durable end) is the least durable
//! end over the ISR: `CLUSTER.md` §0's promise. The acks=all waiters, keyed
//! by the offset they wait for, complete in offset order, all those one
//! move passes in one returned batch ([`Completion`]s; one wake-up per
//! move). ISR changes are proposed ([`super::replicas::IsrChange`]: shrink
//! from [`PartitionState::tick`], expand from a follower's fetch) and take
//! effect only when the committed image comes back. A follower's fetch
//! reads to the log end, a consumer's to the high watermark
//! ([`PartitionState::read_limit`]).

use std::collections::{BTreeMap, VecDeque};

use fjord_schema::{ErrorCode, LeaderEpoch, NodeId, Offset};

use super::epochs::{EpochEndOffset, LeaderEpochCache};
use super::producer_state::{ProducerBatch, ProducerStates, SequenceError, Verdict};
use super::replicas::{IsrChange, Leadership, ReplicaError, Replicas};
use crate::metadata::image::PartitionEpoch;

/// The leader epoch every partition opens with. The metadata image
/// (issue 13) will give each partition its epoch instead; until then
/// nothing bumps it and this is its only source.
pub const INITIAL_LEADER_EPOCH: LeaderEpoch = LeaderEpoch(0);

/// What this replica is for its partition, as the committed metadata
/// image says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// It leads: produces append here, consumers read here, followers
    /// fetch from here.
    Leader,
    /// It follows `leader` (`None`: the partition has no leader now): its
    /// log grows only by the leader's batches, appended verbatim.
    Follower { leader: Option<NodeId> },
}

/// The produce `acks` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// `0`: no response is awaited (the edge answers nothing).
    None,
    /// `1`: acknowledged once the leader appended.
    Leader,
    /// `-1`: acknowledged once every in-sync replica has the batch (and,
    /// with `flush.before.ack`, it is durable).
    All,
}

impl Acks {
    pub fn from_wire(acks: i8) -> Result<Acks, PartitionError> {
        match acks {
            0 => Ok(Acks::None),
            1 => Ok(Acks::Leader),
            -1 => Ok(Acks::All),
            other => Err(PartitionError::InvalidAcks { acks: other }),
        }
    }
}

/// The topic configuration the state decides with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducePolicy {
    /// `min.insync.replicas`: acks=all needs at least this many in-sync
    /// replicas.
    pub min_insync_replicas: u32,
    /// `flush.before.ack`: acks=all waits for the durable end.
    pub flush_before_ack: bool,
    /// `flush.messages`: flush once this many offsets are not durable.
    pub flush_messages: Option<u64>,
    /// `flush.ms`: flush once the oldest non-durable append is this old.
    pub flush_ms: Option<u64>,
    /// `replica_lag_time_max_ms` (a broker setting, `CLUSTER.md` §6): an
    /// ISR follower not caught up for longer is proposed out of the ISR.
    /// The driver gives [`super::replicas::DEFAULT_REPLICA_LAG_TIME_MAX_MS`]
    /// until `fjord.toml` carries it (issue 14, with the fetchers).
    pub replica_lag_time_max_ms: u64,
}

/// Why a produce or a fetch is refused by the partition's state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartitionError {
    #[error("acks = {acks}: must be -1, 0 or 1")]
    InvalidAcks { acks: i8 },
    #[error(
        "min.insync.replicas = {min_insync_replicas} but only {in_sync} replica(s) are in sync"
    )]
    NotEnoughReplicas {
        min_insync_replicas: u32,
        in_sync: usize,
    },
    #[error(
        "appended, but min.insync.replicas = {min_insync_replicas} and only {in_sync} replica(s) are in sync"
    )]
    NotEnoughReplicasAfterAppend {
        min_insync_replicas: u32,
        in_sync: usize,
    },
    #[error(transparent)]
    Sequence(#[from] SequenceError),
    #[error("leader epoch {given} is older than the partition's {current}")]
    FencedLeaderEpoch {
        given: LeaderEpoch,
        current: LeaderEpoch,
    },
    #[error("leader epoch {given} is newer than the partition's {current}")]
    UnknownLeaderEpoch {
        given: LeaderEpoch,
        current: LeaderEpoch,
    },
    #[error("this replica is not the leader (leader: {leader:?}); refresh metadata")]
    NotLeader { leader: Option<NodeId> },
    #[error("offset {offset} is outside the log [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start: Offset,
        log_end: Offset,
    },
    #[error(
        "the high watermark {high_watermark} has not reached the start {epoch_start} of this \
         leader's epoch yet; retry"
    )]
    OffsetNotAvailable {
        high_watermark: Offset,
        epoch_start: Offset,
    },
}

impl PartitionError {
    pub fn code(&self) -> ErrorCode {
        match self {
            PartitionError::InvalidAcks { .. } => ErrorCode::InvalidRequiredAcks,
            PartitionError::NotEnoughReplicas { .. } => ErrorCode::NotEnoughReplicas,
            PartitionError::NotEnoughReplicasAfterAppend { .. } => {
                ErrorCode::NotEnoughReplicasAfterAppend
            }
            PartitionError::Sequence(error) => error.code(),
            PartitionError::FencedLeaderEpoch { .. } => ErrorCode::FencedLeaderEpoch,
            PartitionError::UnknownLeaderEpoch { .. } => ErrorCode::UnknownLeaderEpoch,
            PartitionError::NotLeader { .. } => ErrorCode::NotLeaderOrFollower,
            PartitionError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            PartitionError::OffsetNotAvailable { .. } => ErrorCode::OffsetNotAvailable,
        }
    }
}

/// What to do with one batch of a produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchPlan {
    /// Append it, then report it with [`PartitionState::appended`].
    Append,
    /// Written before: answer with this base offset, do not append.
    Duplicate { base_offset: Offset },
}

/// What the log reported for one appended batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: Offset,
    pub last_offset: Offset,
    /// The log end after the batch.
    pub next_offset: Offset,
    /// The log's durable end when the append returned (an append may
    /// write out the buffer to make room).
    pub durable_end: Offset,
}

/// An acks=all producer waiting for its offsets to be acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct WaiterId(u64);

/// An acks=all waiter the ack end passed, and how it ends: acknowledged,
/// or `NOT_ENOUGH_REPLICAS_AFTER_APPEND` when the committed ISR was
/// smaller than `min.insync.replicas` then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub waiter: WaiterId,
    pub outcome: Result<(), PartitionError>,
}

/// What a follower's fetch changed: the waiters it completed (in offset
/// order, all of one high-watermark move: the driver wakes them once) and
/// an ISR expansion to propose to the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowerFetched {
    pub completed: Vec<Completion>,
    pub isr_change: Option<IsrChange>,
}

/// How to acknowledge a produce whose batches are in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckPlan {
    /// Flush the log, then report the durable end with
    /// [`PartitionState::durable`], before answering.
    pub flush: bool,
    /// Answer only once this waiter is released
    /// ([`PartitionState::is_released`]), with its outcome
    /// ([`PartitionState::take_outcome`]).
    pub waiter: Option<WaiterId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Waiter {
    /// Acknowledged once the ack end reaches this.
    end: Offset,
    id: WaiterId,
}

/// Offsets of a partition as opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    pub leader_epoch: LeaderEpoch,
    pub log_start: Offset,
    pub log_end: Offset,
    pub durable_end: Offset,
}

/// The state of one partition. Lives on: the partition's owning shard,
/// inside its `Partition` (a `RefCell`, never borrowed across an await).
/// Created when the partition opens, fed by its driver until it closes.
#[derive(Debug)]
pub struct PartitionState {
    role: Role,
    leader_epoch: LeaderEpoch,
    /// Which leader epoch wrote which range of the log (`epochs.rs`).
    epochs: LeaderEpochCache,
    /// Bumped by every change of `epochs`; the driver writes the
    /// checkpoint when it differs from `epochs_written` — before appending
    /// a batch (so the checkpoint always covers the epochs of the log) and
    /// after a truncation.
    epochs_version: u64,
    epochs_written: u64,
    policy: ProducePolicy,
    /// The replica set, the ISR and the followers' progress: the leader
    /// alone until a leadership with followers is applied.
    replicas: Replicas,
    log_start: Offset,
    log_end: Offset,
    /// Offsets below this are on stable storage.
    durable_end: Offset,
    /// Consumers read below this (see the module doc).
    high_watermark: Offset,
    /// When the oldest offset at or past `durable_end` was appended.
    oldest_unflushed_ms: Option<i64>,
    producers: ProducerStates,
    /// acks=all waiters in offset order (registered under the append gate,
    /// so in the order their offsets were assigned). Bounded by the
    /// produce requests in flight, which the edges' budgets bound.
    waiters: VecDeque<Waiter>,
    next_waiter: u64,
    /// Released waiters that failed, until their produce takes the outcome
    /// ([`Self::take_outcome`]) or is cancelled: bounded like `waiters`.
    failed: BTreeMap<WaiterId, PartitionError>,
}

impl PartitionState {
    /// A replica as opened from its log. Its high watermark starts at the
    /// log start, not the log end: nothing on disk says which of its
    /// records the ISR had when the node stopped, and a leader that counted
    /// its whole log as committed acknowledged and served records the
    /// partition's real leader had truncated. It moves as the leadership
    /// applied says: at once to the log end for a leader alone in its ISR
    /// (a single node), as the followers fetch for a leader with an ISR,
    /// from the leader's answers for a follower. Found by the simulation:
    /// a follower holding batches the rest of the ISR lacked restarted,
    /// was elected before they fetched, and served those batches as
    /// committed (sim data test
    /// `a_restarted_replica_elected_leader_does_not_expose_unreplicated_records`);
    /// and an idempotent retry was acknowledged at an offset another record
    /// held on the partition's leader (seed 34).
    pub fn new(opened: Opened, policy: ProducePolicy, producers: ProducerStates) -> Self {
        assert!(opened.log_start <= opened.log_end);
        assert!(opened.durable_end <= opened.log_end);
        PartitionState {
            role: Role::Leader,
            leader_epoch: opened.leader_epoch,
            epochs: LeaderEpochCache::new(),
            epochs_version: 0,
            epochs_written: 0,
            policy,
            replicas: Replicas::new(policy.replica_lag_time_max_ms, opened.log_end),
            log_start: opened.log_start,
            log_end: opened.log_end,
            durable_end: opened.durable_end,
            high_watermark: opened.log_start,
            oldest_unflushed_ms: None,
            producers,
            waiters: VecDeque::new(),
            next_waiter: 0,
            failed: BTreeMap::new(),
        }
    }

    pub fn leader_epoch(&self) -> LeaderEpoch {
        self.leader_epoch
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The leader-epoch cache as recovered at open (its checkpoint clamped
    /// to the log, or rebuilt from the log: `rewrite`, the checkpoint is
    /// written again).
    pub fn with_epochs(mut self, epochs: LeaderEpochCache, rewrite: bool) -> PartitionState {
        self.epochs = epochs;
        if rewrite {
            self.epochs_changed();
        }
        self
    }

    pub fn epochs(&self) -> &LeaderEpochCache {
        &self.epochs
    }

    /// The epoch cache to checkpoint and its version, when it changed
    /// since the last [`Self::epochs_written`].
    pub fn epochs_to_write(&self) -> Option<(u64, LeaderEpochCache)> {
        (self.epochs_version != self.epochs_written)
            .then(|| (self.epochs_version, self.epochs.clone()))
    }

    /// The driver wrote the checkpoint of version `version`.
    pub fn epochs_written(&mut self, version: u64) {
        self.epochs_written = self.epochs_written.max(version);
    }

    fn epochs_changed(&mut self) {
        self.epochs_version += 1;
    }

    /// `OffsetForLeaderEpoch` on this replica: where `epoch` ends
    /// ([`LeaderEpochCache::end_offset_for`]); `None`: undefined.
    pub fn epoch_end(&self, epoch: LeaderEpoch) -> Option<EpochEndOffset> {
        self.epochs.end_offset_for(epoch, self.log_end)
    }

    /// The controller elected a leader at `epoch` (the metadata image's):
    /// requests naming an older epoch are fenced from now on. Epochs only
    /// grow: an older one (a stale image) is ignored.
    pub fn set_leader_epoch(&mut self, epoch: LeaderEpoch) {
        self.leader_epoch = self.leader_epoch.max(epoch);
    }

    pub fn log_start(&self) -> Offset {
        self.log_start
    }

    pub fn log_end(&self) -> Offset {
        self.log_end
    }

    pub fn durable_end(&self) -> Offset {
        self.durable_end
    }

    pub fn high_watermark(&self) -> Offset {
        self.high_watermark
    }

    pub fn policy(&self) -> ProducePolicy {
        self.policy
    }

    pub fn producers(&self) -> &ProducerStates {
        &self.producers
    }

    /// The replica set, ISR and followers' progress.
    pub fn replicas(&self) -> &Replicas {
        &self.replicas
    }

    /// A topic config change, from the next produce on.
    pub fn set_policy(&mut self, policy: ProducePolicy) {
        self.policy = policy;
        self.replicas
            .set_lag_time_max_ms(policy.replica_lag_time_max_ms);
    }

    /// The committed metadata image says this node leads the partition
    /// with these replicas, ISR and epochs (on becoming leader, and on
    /// every image that changes them, e.g. a committed [`IsrChange`]), at
    /// `now_ms`. A stale image (older epochs) is ignored. A shrink moves the
    /// high watermark when the members left are ahead of those removed; the
    /// waiters it passes complete, failing if the ISR is now smaller than
    /// `min.insync.replicas`. An invalid leadership changes nothing.
    pub fn apply_leadership(
        &mut self,
        leadership: &Leadership,
        now_ms: i64,
    ) -> Result<Vec<Completion>, ReplicaError> {
        if leadership.leader_epoch < self.leader_epoch {
            return Ok(Vec::new());
        }
        if let Role::Follower { .. } = self.role {
            // A follower taking over: the followers' progress starts
            // afresh at this epoch.
            self.replicas = Replicas::new(self.policy.replica_lag_time_max_ms, self.log_end);
        }
        if self.replicas.apply(leadership, self.log_end, now_ms)? {
            self.set_leader_epoch(leadership.leader_epoch);
            self.role = Role::Leader;
            // Kafka assigns the new epoch at the log end when a replica
            // becomes leader, so `OffsetForLeaderEpoch` answers followers
            // before the first append of the epoch.
            if self.epochs.assign(leadership.leader_epoch, self.log_end) {
                self.epochs_changed();
            }
        }
        self.move_high_watermark();
        Ok(self.release())
    }

    /// The committed image says this replica follows `leader` (`None`: no
    /// leader now) at `epoch`. A stale image (an older epoch) is ignored.
    /// Every acks=all waiter fails (NOT_LEADER_OR_FOLLOWER: its producer
    /// retries at the new leader; the records may still be committed
    /// there, which an idempotent producer's retry finds as a duplicate).
    /// The high watermark stays (capped by the log end) until the new
    /// leader's fetch responses move it.
    pub fn become_follower(
        &mut self,
        leader: Option<NodeId>,
        epoch: LeaderEpoch,
    ) -> Vec<Completion> {
        if epoch < self.leader_epoch {
            return Vec::new();
        }
        self.set_leader_epoch(epoch);
        self.role = Role::Follower { leader };
        self.replicas = Replicas::new(self.policy.replica_lag_time_max_ms, self.log_end);
        let error = PartitionError::NotLeader { leader };
        let mut failed = Vec::with_capacity(self.waiters.len());
        for waiter in std::mem::take(&mut self.waiters) {
            self.failed.insert(waiter.id, error.clone());
            failed.push(Completion {
                waiter: waiter.id,
                outcome: Err(error.clone()),
            });
        }
        failed
    }

    /// A follower appended the leader's batch (verbatim: `batch` as the
    /// log reported it, written by leader epoch `epoch`) at `now_ms`.
    /// Producer state and epoch cache follow the leader's, so this replica
    /// can take over with both.
    pub fn follower_appended(
        &mut self,
        producer: Option<&ProducerBatch>,
        batch: Appended,
        epoch: LeaderEpoch,
        now_ms: i64,
    ) {
        assert_eq!(batch.base_offset, self.log_end, "batches continue the log");
        assert!(batch.base_offset <= batch.last_offset && batch.last_offset < batch.next_offset);
        if let Some(producer) = producer {
            self.producers
                .apply(producer, batch.base_offset, batch.last_offset, now_ms);
        }
        self.log_end = batch.next_offset;
        self.oldest_unflushed_ms.get_or_insert(now_ms);
        if self.epochs.assign(epoch, batch.base_offset) {
            self.epochs_changed();
        }
        self.durable(batch.durable_end);
    }

    /// Whether appending a batch of leader epoch `epoch` at the log end
    /// changes the epoch cache (the driver then writes the checkpoint
    /// first).
    pub fn epoch_is_new(&self, epoch: LeaderEpoch) -> bool {
        self.epochs
            .latest()
            .is_none_or(|latest| latest.epoch != epoch)
    }

    /// Records a batch's epoch in the cache ahead of its append (see
    /// [`Self::epoch_is_new`]).
    pub fn assign_epoch(&mut self, epoch: LeaderEpoch, start_offset: Offset) {
        if self.epochs.assign(epoch, start_offset) {
            self.epochs_changed();
        }
    }

    /// A follower learned the leader's high watermark: its own is that,
    /// capped by its log end (it may go back after a truncation).
    pub fn follower_high_watermark(&mut self, leader_high_watermark: Offset) {
        self.high_watermark = leader_high_watermark.min(self.log_end);
    }

    /// The log was cut to `[log_start, log_end)` (a follower's truncation
    /// of a divergent tail, or a restart at the leader's log start), the
    /// producer state rebuilt from what is left.
    pub fn truncated(
        &mut self,
        log_start: Offset,
        log_end: Offset,
        durable_end: Offset,
        producers: ProducerStates,
    ) {
        assert!(log_start <= log_end && durable_end <= log_end);
        self.log_start = log_start;
        self.log_end = log_end;
        self.durable_end = durable_end;
        self.high_watermark = self.high_watermark.min(log_end);
        self.producers = producers;
        self.oldest_unflushed_ms = None;
        self.epochs.clamp_to_log(log_start, log_end);
        self.epochs_changed();
        self.replicas = Replicas::new(self.policy.replica_lag_time_max_ms, log_end);
    }

    /// A follower's fetch at `now_ms`: it has the log below `fetch_offset`,
    /// and below `durable_end` on stable storage (reported when the topic
    /// flushes before ack). Moves the high watermark, completes the waiters
    /// it passes, and proposes adding the follower to the ISR once it
    /// caught up. A node that is not a follower of this leadership, or an
    /// impossible position, is refused and changes nothing (the driver
    /// answers the fetch with the error's code).
    pub fn follower_fetched(
        &mut self,
        node: NodeId,
        fetch_offset: Offset,
        durable_end: Option<Offset>,
        now_ms: i64,
    ) -> Result<FollowerFetched, ReplicaError> {
        self.replicas
            .fetched(node, fetch_offset, durable_end, self.log_end, now_ms)?;
        self.move_high_watermark();
        let completed = self.release();
        let isr_change =
            self.replicas
                .propose_expand(node, self.high_watermark, self.policy.flush_before_ack);
        Ok(FollowerFetched {
            completed,
            isr_change,
        })
    }

    /// The driver's timer at `now_ms`: proposes removing the ISR followers
    /// that have lagged for more than `replica_lag_time_max_ms` (none while
    /// a proposal is in flight).
    pub fn tick(&mut self, now_ms: i64) -> Option<IsrChange> {
        self.replicas.propose_shrink(self.log_end, now_ms)
    }

    /// The controller refused the ISR change based on `partition_epoch`:
    /// the next tick or fetch may propose again.
    pub fn isr_change_rejected(&mut self, partition_epoch: PartitionEpoch) {
        self.replicas.rejected(partition_epoch);
    }

    /// The high watermark: the least end over the maximal ISR (see
    /// [`Replicas::high_watermark_bound`]), the leader's own log end
    /// included, never going back. The leader counts with its log end even
    /// when the topic flushes before ack, for the module doc's reason (data
    /// of acks=1 producers visible without waiting for a flush); its
    /// durable end bounds the ack end instead ([`Self::ack_end`]), so
    /// acks=all is acknowledged below the durable end of every ISR member
    /// (`CLUSTER.md` §0), and a consumer sees only records every other ISR
    /// member has on stable storage.
    fn move_high_watermark(&mut self) {
        let bound = self
            .replicas
            .high_watermark_bound(self.policy.flush_before_ack);
        let candidate = bound.map_or(self.log_end, |b| b.min(self.log_end));
        if candidate > self.high_watermark {
            self.high_watermark = candidate;
        }
    }

    /// Retention removed segments: the log starts at `log_start` now.
    pub fn log_start_moved(&mut self, log_start: Offset) {
        assert!(log_start >= self.log_start && log_start <= self.log_end);
        self.log_start = log_start;
    }

    /// Forgets producers not seen for `producer.id.expiration.ms`.
    pub fn expire_producers(&mut self, now_ms: i64) -> usize {
        self.producers.expire(now_ms)
    }

    /// What every request served by the leader checks: this replica leads
    /// (NOT_LEADER_OR_FOLLOWER otherwise), and `current`, the request's
    /// leader epoch, is this one ([`Self::check_leader_epoch`]).
    pub fn check_leader(&self, current: Option<LeaderEpoch>) -> Result<(), PartitionError> {
        if let Role::Follower { leader } = self.role {
            return Err(PartitionError::NotLeader { leader });
        }
        self.check_leader_epoch(current)
    }

    /// The request's leader epoch against the partition's: older is
    /// fenced, newer is unknown (this leader has not caught up with the
    /// metadata). `None` (not given; Kafka's -1) is not checked.
    pub fn check_leader_epoch(&self, current: Option<LeaderEpoch>) -> Result<(), PartitionError> {
        match current {
            Some(given) if given < self.leader_epoch => Err(PartitionError::FencedLeaderEpoch {
                given,
                current: self.leader_epoch,
            }),
            Some(given) if given > self.leader_epoch => Err(PartitionError::UnknownLeaderEpoch {
                given,
                current: self.leader_epoch,
            }),
            _ => Ok(()),
        }
    }

    /// Offsets a fetch may return are below this: the high watermark for
    /// consumers, the log end for a replica (`replica_id`).
    pub fn read_limit(&self, replica_id: Option<NodeId>) -> Offset {
        match replica_id {
            Some(_) => self.log_end,
            None => self.high_watermark,
        }
    }

    /// Whether a fetch may start at `offset`: inside the log, `[log_start,
    /// log_end]` — not only below its read limit ([`Self::read_limit`]).
    /// As Kafka, an offset between the high watermark and the log end is
    /// valid and answered with no records (a consumer long-polls there
    /// until the high watermark passes it): a new leader's high watermark
    /// lags the old leader's by up to one fetch round (a follower learns
    /// it from the next fetch response), so a consumer that read up to the
    /// old leader's high watermark fetches past the new leader's, and
    /// OFFSET_OUT_OF_RANGE there would make it reset its position —
    /// re-reading or skipping records (found by issue 15's simulation).
    pub fn check_fetch_offset(&self, offset: i64) -> Result<Offset, PartitionError> {
        u64::try_from(offset)
            .ok()
            .map(Offset)
            .filter(|o| *o >= self.log_start && *o <= self.log_end)
            .ok_or(PartitionError::OffsetOutOfRange {
                offset,
                log_start: self.log_start,
                log_end: self.log_end,
            })
    }

    /// Whether this leader may answer a client's ListOffsets. As Kafka
    /// (`Partition.fetchOffsetForTimestamp`): not while its high watermark
    /// is below the start offset of its leader epoch (the log end when it
    /// took the epoch, the same bound ISR expansion uses:
    /// [`Replicas::epoch_start`]), which is where a
    /// just-elected leader (its high watermark is the last one it learned
    /// as a follower) or a just-reopened replica (its high watermark starts
    /// at its log start, see [`Self::new`]) stands until its followers
    /// fetch. Answering then would give a LATEST lower than one already
    /// given, and a consumer resetting to "latest" would start in the
    /// middle of the log. OFFSET_NOT_AVAILABLE is retriable.
    pub fn check_offsets_available(&self) -> Result<(), PartitionError> {
        let epoch_start = self.replicas.epoch_start();
        if self.high_watermark < epoch_start {
            return Err(PartitionError::OffsetNotAvailable {
                high_watermark: self.high_watermark,
                epoch_start,
            });
        }
        Ok(())
    }

    /// The checks of a produce at `now_ms` before any batch is looked at.
    /// acks=all needs `min.insync.replicas` in the committed ISR, and also
    /// among the ISR members that have not lagged for more than
    /// `replica_lag_time_max_ms` (the ISR the pending shrink will commit):
    /// so while the controller cannot commit the shrink (no quorum), a
    /// leader whose followers are gone refuses (NOT_ENOUGH_REPLICAS,
    /// retriable) instead of appending records that no follower can
    /// acknowledge and that a producer, after its timeout, sends again.
    pub fn begin_produce(&self, acks: i8, now_ms: i64) -> Result<Acks, PartitionError> {
        let acks = Acks::from_wire(acks)?;
        self.check_leader(None)?;
        if acks != Acks::All {
            return Ok(acks);
        }
        let min = self.policy.min_insync_replicas;
        let in_sync = self.replicas.live_isr_len(self.log_end, now_ms);
        if in_sync < min as usize {
            return Err(PartitionError::NotEnoughReplicas {
                min_insync_replicas: min,
                in_sync,
            });
        }
        Ok(acks)
    }

    /// Whether a batch with these producer fields (`None`: not idempotent)
    /// may be appended. Changes nothing; the driver holds the append gate
    /// from here to [`Self::appended`].
    pub fn check_batch(
        &self,
        producer: Option<&ProducerBatch>,
    ) -> Result<BatchPlan, PartitionError> {
        let Some(producer) = producer else {
            return Ok(BatchPlan::Append);
        };
        match self.producers.check(producer)? {
            Verdict::Append => Ok(BatchPlan::Append),
            Verdict::Duplicate { base_offset } => Ok(BatchPlan::Duplicate { base_offset }),
        }
    }

    /// A batch of this leader was refused unwritten with `code`. For the
    /// retriable "not written" refusals (storage failure, not enough
    /// in-sync replicas, not the leader) the producer state remembers it,
    /// so the batches its client sent behind it get the same answer instead
    /// of OUT_OF_ORDER_SEQUENCE ([`ProducerStates::refused`]).
    pub fn refused(&mut self, producer: Option<&ProducerBatch>, code: ErrorCode) {
        let retriable = matches!(
            code,
            ErrorCode::KafkaStorageError
                | ErrorCode::NotEnoughReplicas
                | ErrorCode::NotLeaderOrFollower
        );
        if let (Some(producer), true) = (producer, retriable) {
            self.producers.refused(producer, code);
        }
    }

    /// The log appended a batch at `now_ms`. Returns the waiters completed
    /// (the append may have moved the durable end, or the high watermark
    /// when the ISR is this leader alone).
    pub fn appended(
        &mut self,
        producer: Option<&ProducerBatch>,
        batch: Appended,
        now_ms: i64,
    ) -> Vec<Completion> {
        assert_eq!(batch.base_offset, self.log_end, "batches continue the log");
        assert!(batch.base_offset <= batch.last_offset && batch.last_offset < batch.next_offset);
        if let Some(producer) = producer {
            self.producers
                .apply(producer, batch.base_offset, batch.last_offset, now_ms);
        }
        self.log_end = batch.next_offset;
        if self.epochs.assign(self.leader_epoch, batch.base_offset) {
            self.epochs_changed();
        }
        // With the leader alone in the ISR the high watermark follows the
        // log end; with followers their fetches move it.
        self.move_high_watermark();
        self.oldest_unflushed_ms.get_or_insert(now_ms);
        self.durable(batch.durable_end)
    }

    /// How to acknowledge a produce whose appends left the log at
    /// [`Self::log_end`]. Called under the append gate, so waiters are
    /// registered in offset order.
    pub fn ack_plan(&mut self, acks: Acks) -> AckPlan {
        // `flush.messages` reached: this produce flushes before its answer,
        // whatever its acks (`flush.ms` is the timer's, `Self::flush_due`).
        let count_due = self.unflushed_offsets_due();
        let end = self.log_end;
        let waiter = (acks == Acks::All && end > self.ack_end()).then(|| {
            let id = WaiterId(self.next_waiter);
            self.next_waiter += 1;
            self.waiters.push_back(Waiter { end, id });
            id
        });
        let durable_wait = waiter.is_some() && self.policy.flush_before_ack;
        AckPlan {
            flush: count_due || durable_wait,
            waiter,
        }
    }

    /// acks=all producers are acknowledged below this offset.
    pub fn ack_end(&self) -> Offset {
        if self.policy.flush_before_ack {
            self.high_watermark.min(self.durable_end)
        } else {
            self.high_watermark
        }
    }

    /// The log is durable below `durable_end` (a flush returned it).
    /// Releases the waiters the ack end now covers, oldest first, and
    /// returns them (the driver wakes them once, not once each).
    pub fn durable(&mut self, durable_end: Offset) -> Vec<Completion> {
        assert!(durable_end <= self.log_end, "durable past the log end");
        if durable_end > self.durable_end {
            self.durable_end = durable_end;
        }
        if self.durable_end == self.log_end {
            self.oldest_unflushed_ms = None;
        }
        self.release()
    }

    /// Completes the waiters the ack end passed, in offset order. As in
    /// Kafka, `min.insync.replicas` is checked against the committed ISR
    /// when the waiter's offsets are passed, not when the ISR shrinks: an
    /// ISR that shrank and grew back while the waiter waited acknowledges
    /// it.
    fn release(&mut self) -> Vec<Completion> {
        let ack_end = self.ack_end();
        let min = self.policy.min_insync_replicas;
        let in_sync = self.replicas.isr_len();
        let mut completed = Vec::new();
        while let Some(waiter) = self.waiters.front().filter(|w| w.end <= ack_end).copied() {
            self.waiters.pop_front();
            let outcome = if in_sync >= min as usize {
                Ok(())
            } else {
                let error = PartitionError::NotEnoughReplicasAfterAppend {
                    min_insync_replicas: min,
                    in_sync,
                };
                self.failed.insert(waiter.id, error.clone());
                Err(error)
            };
            completed.push(Completion {
                waiter: waiter.id,
                outcome,
            });
        }
        completed
    }

    /// Whether `waiter` was released (its outcome is decided).
    pub fn is_released(&self, waiter: WaiterId) -> bool {
        self.waiters.front().is_none_or(|w| w.id > waiter)
    }

    /// A released waiter's outcome, once (`None` while it waits): its
    /// produce calls this after the wake-up that released it.
    pub fn take_outcome(&mut self, waiter: WaiterId) -> Option<Result<(), PartitionError>> {
        if !self.is_released(waiter) {
            return None;
        }
        Some(self.failed.remove(&waiter).map_or(Ok(()), Err))
    }

    /// Forgets a waiter whose produce failed (its flush failed).
    pub fn cancel(&mut self, waiter: WaiterId) {
        self.waiters.retain(|w| w.id != waiter);
        self.failed.remove(&waiter);
    }

    /// acks=all producers waiting.
    pub fn waiting(&self) -> usize {
        self.waiters.len()
    }

    /// Whether the flush policy wants a flush at `now_ms`: `flush.messages`
    /// offsets are not durable, or the oldest of them was appended
    /// `flush.ms` ago (the flush timer asks).
    pub fn flush_due(&self, now_ms: i64) -> bool {
        let by_time = match (self.policy.flush_ms, self.oldest_unflushed_ms) {
            (Some(ms), Some(since)) => now_ms.saturating_sub(since) >= ms as i64,
            _ => false,
        };
        self.log_end > self.durable_end && (self.unflushed_offsets_due() || by_time)
    }

    /// As Kafka, `flush.messages` counts offsets past the durable end.
    fn unflushed_offsets_due(&self) -> bool {
        let unflushed = self.log_end.get() - self.durable_end.get();
        unflushed > 0 && self.policy.flush_messages.is_some_and(|n| unflushed >= n)
    }
}

#[cfg(test)]
mod tests;
