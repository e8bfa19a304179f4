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
//! The high watermark is the log end, for every topic, as in Kafka with a
//! single in-sync replica (Kafka's high watermark never waits for an
//! fsync either). The alternative, the durable end for `flush.before.ack`
//! topics, was rejected: `flush.before.ack` is the default and
//! `flush.ms`/`flush.messages` are unset by default, so the data of an
//! acks=1 or acks=0 producer would stay invisible to consumers (and
//! long-poll fetches would not wake) until some other producer's acks=all
//! flush or the write buffer filling up. Durability is what acks=all
//! waits for instead: with `flush.before.ack` an acks=all producer is
//! acknowledged once its offsets are below both the high watermark and
//! the durable end ([`PartitionState::ack_end`]).
//!
//! # Replication (issue 14)
//!
//! The in-sync replicas are `{this node}` today (`isr_len` = 1). With
//! followers (`CLUSTER.md` §4) the state gains their log ends and the ISR;
//! the high watermark becomes the minimum log end over the ISR (set where
//! [`PartitionState::appended`] sets it now, and when a follower fetch
//! reports its end), and the acks=all waiters — already keyed by the
//! offset they wait for and released in offset order when the ack end
//! moves — complete together with one wake-up per move. A follower's
//! fetch reads to the log end, a consumer's to the high watermark
//! ([`PartitionState::read_limit`]).

use std::collections::VecDeque;

use fjord_schema::{ErrorCode, LeaderEpoch, NodeId, Offset};

use super::producer_state::{ProducerBatch, ProducerStates, SequenceError, Verdict};

/// The leader epoch every partition opens with. The metadata image
/// (issue 13) will give each partition its epoch instead; until then
/// nothing bumps it and this is its only source.
pub const INITIAL_LEADER_EPOCH: LeaderEpoch = LeaderEpoch(0);

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
}

impl PartitionError {
    pub fn code(&self) -> ErrorCode {
        match self {
            PartitionError::InvalidAcks { .. } => ErrorCode::InvalidRequiredAcks,
            PartitionError::NotEnoughReplicas { .. } => ErrorCode::NotEnoughReplicas,
            PartitionError::Sequence(error) => error.code(),
            PartitionError::FencedLeaderEpoch { .. } => ErrorCode::FencedLeaderEpoch,
            PartitionError::UnknownLeaderEpoch { .. } => ErrorCode::UnknownLeaderEpoch,
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

/// How to acknowledge a produce whose batches are in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckPlan {
    /// Flush the log, then report the durable end with
    /// [`PartitionState::durable`], before answering.
    pub flush: bool,
    /// Answer only once this waiter is released
    /// ([`PartitionState::is_released`]).
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
    leader_epoch: LeaderEpoch,
    policy: ProducePolicy,
    /// In-sync replicas including this leader: 1 until replication.
    isr_len: usize,
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
}

impl PartitionState {
    pub fn new(opened: Opened, policy: ProducePolicy, producers: ProducerStates) -> Self {
        assert!(opened.log_start <= opened.log_end);
        assert!(opened.durable_end <= opened.log_end);
        PartitionState {
            leader_epoch: opened.leader_epoch,
            policy,
            isr_len: 1,
            log_start: opened.log_start,
            log_end: opened.log_end,
            durable_end: opened.durable_end,
            high_watermark: opened.log_end,
            oldest_unflushed_ms: None,
            producers,
            waiters: VecDeque::new(),
            next_waiter: 0,
        }
    }

    pub fn leader_epoch(&self) -> LeaderEpoch {
        self.leader_epoch
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

    /// A topic config change, from the next produce on.
    pub fn set_policy(&mut self, policy: ProducePolicy) {
        self.policy = policy;
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

    /// The checks of a produce before any batch is looked at.
    pub fn begin_produce(&self, acks: i8) -> Result<Acks, PartitionError> {
        let acks = Acks::from_wire(acks)?;
        let min = self.policy.min_insync_replicas;
        if acks == Acks::All && self.isr_len < min as usize {
            return Err(PartitionError::NotEnoughReplicas {
                min_insync_replicas: min,
                in_sync: self.isr_len,
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

    /// The log appended a batch at `now_ms`.
    pub fn appended(&mut self, producer: Option<&ProducerBatch>, batch: Appended, now_ms: i64) {
        assert_eq!(batch.base_offset, self.log_end, "batches continue the log");
        assert!(batch.base_offset <= batch.last_offset && batch.last_offset < batch.next_offset);
        if let Some(producer) = producer {
            self.producers
                .apply(producer, batch.base_offset, batch.last_offset, now_ms);
        }
        self.log_end = batch.next_offset;
        // A single in-sync replica: the high watermark is the log end.
        self.high_watermark = self.log_end;
        self.oldest_unflushed_ms.get_or_insert(now_ms);
        self.durable(batch.durable_end);
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
    /// Releases the waiters the ack end now covers, oldest first; returns
    /// how many (the driver wakes them once, not once each).
    pub fn durable(&mut self, durable_end: Offset) -> usize {
        assert!(durable_end <= self.log_end, "durable past the log end");
        if durable_end > self.durable_end {
            self.durable_end = durable_end;
        }
        if self.durable_end == self.log_end {
            self.oldest_unflushed_ms = None;
        }
        self.release()
    }

    fn release(&mut self) -> usize {
        let ack_end = self.ack_end();
        let mut released = 0;
        while self.waiters.front().is_some_and(|w| w.end <= ack_end) {
            self.waiters.pop_front();
            released += 1;
        }
        released
    }

    /// Whether `waiter` was released (its offsets are acknowledged).
    pub fn is_released(&self, waiter: WaiterId) -> bool {
        self.waiters.front().is_none_or(|w| w.id > waiter)
    }

    /// Forgets a waiter whose produce failed (its flush failed).
    pub fn cancel(&mut self, waiter: WaiterId) {
        self.waiters.retain(|w| w.id != waiter);
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
