//! One replica fetcher's decisions, sans-IO: the partitions one local
//! shard follows on one leader node, each in a phase (reading its log's
//! position, finding its divergence point with the leader, fetching,
//! running a local operation, backing off), the next request to send, and
//! what to do with each answer (KIP-101/279, Kafka's
//! `AbstractFetcherThread`).
//!
//! Driven by [`super::driver`] (glommio, one task per (shard, leader))
//! and, in tests and issue 15's simulation, by a fake: the driver asks
//! [`Fetcher::next_step`] with the time, does what it says (local
//! operations on [`super::ReplicaLogs`], one request to the leader), and
//! feeds the outcomes back ([`Fetcher::local_done`],
//! [`Fetcher::fetched`], [`Fetcher::epochs_answered`],
//! [`Fetcher::request_failed`]). At most one request is in flight; local
//! operations come before the next request, so a partition whose topic
//! flushes before ack reports its durable end only after the flush of
//! what the previous response appended.
//!
//! Errors, per partition:
//! - `FENCED_LEADER_EPOCH` (the follower's epoch is older than the
//!   leader's), `NotFollowing` from the local log: dropped until its
//!   followed entry changes (the image brings the new epoch);
//! - `NOT_LEADER_OR_FOLLOWER`, `UNKNOWN_TOPIC_OR_PARTITION`,
//!   `UNKNOWN_LEADER_EPOCH` (the leader has not applied the image yet, or
//!   this follower is behind and its image will change): back off and
//!   retry, as Kafka's fetcher does — a drop would never end when it is
//!   the leader that is behind;
//! - `OFFSET_OUT_OF_RANGE`: restart the log at the leader's log start
//!   when that is past the follower's end, else find the divergence point
//!   again (backing off when that happens twice in a row);
//! - `Diverged` from the local append: find the divergence point again;
//!   storage errors and any other error code: back off;
//! - the request as a whole failing (network, timeout, an answer that
//!   does not decode): the whole fetcher backs off, exponentially from
//!   `backoff_ms` to `backoff_max_ms`.
//!
//! Pure: time is passed in (milliseconds of a steady clock).

use std::collections::BTreeMap;

use bytes::Bytes;
use fjord_schema::{ErrorCode, LeaderEpoch, NodeId, Offset, PartitionId};

use super::wire::{
    EpochQueryPartition, EpochsRequest, EpochsResponse, ReplicaFetchPartition, ReplicaFetchRequest,
    ReplicaFetchResponse, Topics,
};
use super::{Followed, FollowerError, FollowerPosition};
use crate::partition::epochs::{
    first_truncation_step, truncation_step, EpochEndOffset, FollowerLog, TruncationStep,
};

/// The replica fetchers' settings (Kafka's names in `fjord.toml`, added by
/// the config; the shard passes them in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaFetcherConfig {
    /// Bytes asked per partition (`replica_fetch_max_bytes`, Kafka's
    /// `replica.fetch.max.bytes`, 1 MiB); a larger first batch still comes.
    pub fetch_max_bytes: u32,
    /// Bytes asked per response, all partitions together
    /// (`replica_fetch_response_max_bytes`, 10 MiB).
    pub response_max_bytes: u32,
    /// How long the leader holds a fetch without new data
    /// (`replica_fetch_wait_max_ms`, 500).
    pub wait_max_ms: u32,
    /// Bytes the leader waits for before answering early
    /// (`replica_fetch_min_bytes`, 1).
    pub min_bytes: u32,
    /// Pause after a partition's error (`replica_fetch_backoff_ms`, 1000),
    /// and the first pause after a failed request.
    pub backoff_ms: u64,
    /// Longest pause after consecutive failed requests (doubling from
    /// `backoff_ms`).
    pub backoff_max_ms: u64,
    /// A request gets no answer within `wait_max_ms` plus this: failed
    /// (`replica_socket_timeout_ms`, 30 000).
    pub request_timeout_ms: u64,
}

impl Default for ReplicaFetcherConfig {
    fn default() -> ReplicaFetcherConfig {
        ReplicaFetcherConfig {
            fetch_max_bytes: 1 << 20,
            response_max_bytes: 10 << 20,
            wait_max_ms: 500,
            min_bytes: 1,
            backoff_ms: 1_000,
            backoff_max_ms: 10_000,
            request_timeout_ms: 30_000,
        }
    }
}

/// A partition: topic and index.
pub type Key = (String, PartitionId);

/// A local operation on the follower's log, for the driver to run on
/// [`super::ReplicaLogs`] (each answered with [`Fetcher::local_done`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalOp {
    /// `ReplicaLogs::position`.
    Position { key: Key, epoch: LeaderEpoch },
    /// `ReplicaLogs::truncate` to `end`.
    Truncate {
        key: Key,
        epoch: LeaderEpoch,
        end: Offset,
    },
    /// `ReplicaLogs::append`.
    Append {
        key: Key,
        epoch: LeaderEpoch,
        batches: Vec<Bytes>,
        high_watermark: Offset,
        log_start: Offset,
    },
    /// `ReplicaLogs::flush`.
    Flush { key: Key, epoch: LeaderEpoch },
}

impl LocalOp {
    pub fn key(&self) -> &Key {
        match self {
            LocalOp::Position { key, .. }
            | LocalOp::Truncate { key, .. }
            | LocalOp::Append { key, .. }
            | LocalOp::Flush { key, .. } => key,
        }
    }

    pub fn epoch(&self) -> LeaderEpoch {
        match self {
            LocalOp::Position { epoch, .. }
            | LocalOp::Truncate { epoch, .. }
            | LocalOp::Append { epoch, .. }
            | LocalOp::Flush { epoch, .. } => *epoch,
        }
    }
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Run these (one per partition, any order) and report each.
    Local(Vec<LocalOp>),
    /// Send this fetch to the leader; report with [`Fetcher::fetched`] or
    /// [`Fetcher::request_failed`].
    Fetch(ReplicaFetchRequest),
    /// Send this `OffsetForLeaderEpoch`; report with
    /// [`Fetcher::epochs_answered`] or [`Fetcher::request_failed`].
    Epochs(EpochsRequest),
    /// Nothing to do until `until_ms` (a backoff ends) or, when `None`,
    /// until the followed set changes.
    Wait { until_ms: Option<u64> },
}

/// What a partition does after a local operation succeeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// Read the log's position, then [`Then::Decide`].
    Start,
    /// Decide from the position just read ([`first_truncation_step`]).
    Decide,
    /// Fetch (after a flush when the log holds unsynced records and the
    /// topic flushes before ack: `next_step` queues it).
    Fetch,
    /// Ask the leader where this epoch ends.
    Ask(LeaderEpoch),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// A local operation to issue.
    Queued(LocalOp, Then),
    /// Issued; waiting for [`Fetcher::local_done`].
    Running(Then),
    /// Ask the leader where this epoch ends (finding the divergence
    /// point).
    Ask(LeaderEpoch),
    /// In the epochs request in flight.
    Asking(LeaderEpoch),
    Fetching,
    /// Paused until `until_ms`, then `then`.
    Backoff {
        until_ms: u64,
        then: Then,
    },
    /// Not fetched until its followed entry changes.
    Dropped,
}

#[derive(Debug, Clone)]
struct Partition {
    epoch: LeaderEpoch,
    phase: Phase,
    /// The log as last read or returned by a local operation.
    position: Option<FollowerPosition>,
    /// Consecutive `OFFSET_OUT_OF_RANGE` answers without progress.
    out_of_range: u32,
}

impl Partition {
    /// Whether the log holds records its durable end does not cover while
    /// the topic reports durable ends (`flush.before.ack`).
    fn unsynced(&self) -> bool {
        self.position
            .as_ref()
            .is_some_and(|p| p.flush_before_ack && p.durable_end < p.log_end)
    }
}

/// A request sent and not answered yet: which partitions, at which epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
enum InFlight {
    Fetch(Vec<(Key, LeaderEpoch, Offset)>),
    Epochs(Vec<(Key, LeaderEpoch, LeaderEpoch)>),
}

/// One fetcher's state: this node (`replica`) following `leader`.
#[derive(Debug)]
pub struct Fetcher {
    replica: NodeId,
    leader: NodeId,
    config: ReplicaFetcherConfig,
    partitions: BTreeMap<Key, Partition>,
    in_flight: Option<InFlight>,
    /// Consecutive failed requests, and the pause they impose.
    failures: u32,
    paused_until_ms: u64,
}

impl Fetcher {
    pub fn new(replica: NodeId, leader: NodeId, config: ReplicaFetcherConfig) -> Fetcher {
        Fetcher {
            replica,
            leader,
            config,
            partitions: BTreeMap::new(),
            in_flight: None,
            failures: 0,
            paused_until_ms: 0,
        }
    }

    pub fn leader(&self) -> NodeId {
        self.leader
    }

    pub fn config(&self) -> &ReplicaFetcherConfig {
        &self.config
    }

    /// Whether it follows nothing (the driver then stops it).
    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Whether the request in flight still names a partition followed at
    /// the epoch it was sent with (else its answer would be ignored: a
    /// driver abandons it, [`Fetcher::abandon`], rather than wait for a
    /// leader that may be stopped or partitioned away).
    pub fn in_flight_wanted(&self) -> bool {
        let still = |key: &Key, epoch: LeaderEpoch| {
            self.partitions.get(key).is_some_and(|p| p.epoch == epoch)
        };
        match &self.in_flight {
            None => false,
            Some(InFlight::Fetch(sent)) => sent.iter().any(|(k, e, _)| still(k, *e)),
            Some(InFlight::Epochs(sent)) => sent.iter().any(|(k, e, _)| still(k, *e)),
        }
    }

    /// The request in flight will not be answered (the driver dropped it):
    /// its partitions are asked again with the next request.
    pub fn abandon(&mut self) {
        if let Some(InFlight::Epochs(sent)) = self.in_flight.take() {
            for (key, epoch, asked) in sent {
                if let Some(p) = self.partitions.get_mut(&key) {
                    if p.epoch == epoch && p.phase == Phase::Asking(asked) {
                        p.phase = Phase::Ask(asked);
                    }
                }
            }
        }
    }

    /// The partitions it follows now and where their logs stand (for
    /// tests and metrics).
    pub fn positions(&self) -> impl Iterator<Item = (&Key, Option<&FollowerPosition>)> {
        self.partitions
            .iter()
            .map(|(k, p)| (k, p.position.as_ref()))
    }

    /// The partitions followed on this leader now (entries of other
    /// leaders are ignored). A new partition, or one whose epoch changed,
    /// starts over (read its position, find its divergence point); one
    /// gone is forgotten (an answer for it in flight is ignored).
    pub fn set_followed(&mut self, followed: &[Followed]) {
        let mut next = BTreeMap::new();
        for f in followed.iter().filter(|f| f.leader == self.leader) {
            let key = (f.topic.clone(), f.partition);
            let kept = self
                .partitions
                .remove(&key)
                .filter(|p| p.epoch == f.leader_epoch);
            let partition = kept.unwrap_or_else(|| Partition {
                epoch: f.leader_epoch,
                phase: read_position(&key, f.leader_epoch),
                position: None,
                out_of_range: 0,
            });
            next.insert(key, partition);
        }
        self.partitions = next;
    }

    /// What to do now (`now_ms` on the driver's steady clock): local
    /// operations first, then (with nothing in flight and no pause) an
    /// epochs request, then a fetch; else wait.
    pub fn next_step(&mut self, now_ms: u64) -> Step {
        let mut ops = Vec::new();
        let mut wake: Option<u64> = None;
        for (key, partition) in &mut self.partitions {
            if let Phase::Backoff { until_ms, then } = partition.phase {
                if until_ms <= now_ms {
                    partition.phase = resume(key, partition, then);
                } else {
                    wake = Some(wake.map_or(until_ms, |w| w.min(until_ms)));
                }
            }
            if partition.phase == Phase::Fetching && partition.unsynced() {
                // The follower reports its durable end with each fetch
                // (flush.before.ack): whatever led here (an append, a
                // re-read position after a failed flush, a truncation),
                // it flushes first. A follower whose flush hit a full disk
                // otherwise reported its old durable end until the leader
                // sent something new, which a leader refusing acks=all
                // produces (its ISR below min.insync.replicas, waiting for
                // this very follower) never does: found by the
                // overlapping nemesis.
                partition.phase = Phase::Queued(
                    LocalOp::Flush {
                        key: key.clone(),
                        epoch: partition.epoch,
                    },
                    Then::Fetch,
                );
            }
            if matches!(partition.phase, Phase::Queued(..)) {
                if let Phase::Queued(op, then) =
                    std::mem::replace(&mut partition.phase, Phase::Dropped)
                {
                    partition.phase = Phase::Running(then);
                    ops.push(op);
                }
            }
        }
        if !ops.is_empty() {
            return Step::Local(ops);
        }
        if self.in_flight.is_some() {
            return Step::Wait { until_ms: None };
        }
        if self.paused_until_ms > now_ms {
            return Step::Wait {
                until_ms: Some(self.paused_until_ms),
            };
        }
        if let Some(request) = self.epochs_request() {
            return Step::Epochs(request);
        }
        if let Some(request) = self.fetch_request() {
            return Step::Fetch(request);
        }
        Step::Wait { until_ms: wake }
    }

    fn epochs_request(&mut self) -> Option<EpochsRequest> {
        let mut sent = Vec::new();
        let mut topics: Topics<EpochQueryPartition> = Vec::new();
        for ((topic, partition), state) in &mut self.partitions {
            let Phase::Ask(asked) = state.phase else {
                continue;
            };
            state.phase = Phase::Asking(asked);
            sent.push(((topic.clone(), *partition), state.epoch, asked));
            push_grouped(
                &mut topics,
                topic,
                EpochQueryPartition {
                    partition: *partition,
                    current_leader_epoch: state.epoch,
                    leader_epoch: asked,
                },
            );
        }
        if sent.is_empty() {
            return None;
        }
        self.in_flight = Some(InFlight::Epochs(sent));
        Some(EpochsRequest {
            replica_id: self.replica,
            topics,
        })
    }

    fn fetch_request(&mut self) -> Option<ReplicaFetchRequest> {
        let mut sent = Vec::new();
        let mut topics: Topics<ReplicaFetchPartition> = Vec::new();
        for ((topic, partition), state) in &self.partitions {
            if state.phase != Phase::Fetching {
                continue;
            }
            let Some(position) = &state.position else {
                continue;
            };
            sent.push(((topic.clone(), *partition), state.epoch, position.log_end));
            push_grouped(
                &mut topics,
                topic,
                ReplicaFetchPartition {
                    partition: *partition,
                    fetch_offset: position.log_end,
                    current_leader_epoch: state.epoch,
                    durable_end: position.flush_before_ack.then_some(position.durable_end),
                    partition_max_bytes: self.config.fetch_max_bytes,
                },
            );
        }
        if sent.is_empty() {
            return None;
        }
        self.in_flight = Some(InFlight::Fetch(sent));
        Some(ReplicaFetchRequest {
            replica_id: self.replica,
            max_wait_ms: self.config.wait_max_ms,
            min_bytes: self.config.min_bytes,
            max_bytes: self.config.response_max_bytes,
            topics,
        })
    }

    /// A local operation `op` ended with `result`.
    pub fn local_done(
        &mut self,
        now_ms: u64,
        key: &Key,
        epoch: LeaderEpoch,
        result: Result<FollowerPosition, FollowerError>,
    ) {
        let backoff_ms = self.config.backoff_ms;
        let Some(partition) = self.partitions.get_mut(key) else {
            return;
        };
        let Phase::Running(then) = partition.phase else {
            return;
        };
        if partition.epoch != epoch {
            return;
        }
        match result {
            Ok(position) => {
                partition.position = Some(position);
                // A flush follows an append when it is needed: `next_step`
                // queues it before the next fetch.
                partition.phase = resume(key, partition, then);
            }
            Err(FollowerError::NotFollowing { .. }) => partition.phase = Phase::Dropped,
            Err(FollowerError::Diverged(_)) => partition.phase = read_position(key, epoch),
            Err(FollowerError::Storage(_)) => {
                // Where the log stands after a failed write is unknown:
                // read it again once the pause ends.
                partition.phase = Phase::Backoff {
                    until_ms: now_ms + backoff_ms,
                    then: Then::Start,
                };
            }
        }
    }

    /// The leader answered the fetch in flight.
    pub fn fetched(&mut self, now_ms: u64, response: ReplicaFetchResponse) {
        let Some(InFlight::Fetch(sent)) = self.in_flight.take() else {
            return;
        };
        self.failures = 0;
        let backoff = now_ms + self.config.backoff_ms;
        let mut results: BTreeMap<Key, _> = BTreeMap::new();
        for (topic, parts) in response.topics {
            for result in parts {
                results.insert((topic.clone(), result.partition), result);
            }
        }
        for (key, epoch, fetch_offset) in sent {
            let Some(partition) = self.partitions.get_mut(&key) else {
                continue;
            };
            if partition.epoch != epoch || partition.phase != Phase::Fetching {
                continue;
            }
            let Some(result) = results.remove(&key) else {
                continue;
            };
            let Some(position) = &partition.position else {
                continue;
            };
            if position.log_end != fetch_offset {
                continue;
            }
            match result.error {
                ErrorCode::None => {
                    partition.out_of_range = 0;
                    let high_watermark = offset_of(result.high_watermark);
                    let log_start = offset_of(result.log_start_offset);
                    // Batches, or a high watermark the follower has not
                    // seen; the leader's log start alone rides along with
                    // the next of those (an idle follower runs no local
                    // operation per long-poll).
                    let news = !result.batches.is_empty()
                        || high_watermark
                            .is_some_and(|hw| hw.min(position.log_end) != position.high_watermark);
                    if news {
                        partition.phase = Phase::Queued(
                            LocalOp::Append {
                                key: key.clone(),
                                epoch,
                                batches: result.batches,
                                high_watermark: high_watermark.unwrap_or(position.high_watermark),
                                log_start: log_start.unwrap_or(position.log_start),
                            },
                            Then::Fetch,
                        );
                    }
                }
                ErrorCode::OffsetOutOfRange => {
                    partition.out_of_range += 1;
                    let leader_start = offset_of(result.log_start_offset);
                    match leader_start {
                        Some(start) if start > position.log_end => {
                            partition.phase = Phase::Queued(
                                LocalOp::Truncate {
                                    key: key.clone(),
                                    epoch,
                                    end: start,
                                },
                                Then::Fetch,
                            );
                        }
                        _ if partition.out_of_range > 1 => {
                            partition.phase = Phase::Backoff {
                                until_ms: backoff,
                                then: Then::Start,
                            };
                        }
                        _ => partition.phase = read_position(&key, epoch),
                    }
                }
                error => partition.phase = after_error(error, backoff, Then::Fetch),
            }
        }
    }

    /// The leader answered the epochs request in flight.
    pub fn epochs_answered(&mut self, now_ms: u64, response: EpochsResponse) {
        let Some(InFlight::Epochs(sent)) = self.in_flight.take() else {
            return;
        };
        self.failures = 0;
        let backoff = now_ms + self.config.backoff_ms;
        let mut answers: BTreeMap<Key, _> = BTreeMap::new();
        for (topic, parts) in response.topics {
            for answer in parts {
                answers.insert((topic.clone(), answer.partition), answer);
            }
        }
        for (key, epoch, asked) in sent {
            let Some(partition) = self.partitions.get_mut(&key) else {
                continue;
            };
            if partition.epoch != epoch || partition.phase != Phase::Asking(asked) {
                continue;
            }
            let Some(answer) = answers.remove(&key) else {
                // Not answered: ask again.
                partition.phase = Phase::Ask(asked);
                continue;
            };
            if answer.error != ErrorCode::None {
                partition.phase = after_error(answer.error, backoff, Then::Ask(asked));
                continue;
            }
            let Some(position) = &partition.position else {
                partition.phase = Phase::Backoff {
                    until_ms: backoff,
                    then: Then::Start,
                };
                continue;
            };
            let end = match (
                u32::try_from(answer.leader_epoch),
                offset_of(answer.end_offset),
            ) {
                (Ok(epoch), Some(end_offset)) => Some(EpochEndOffset {
                    epoch: LeaderEpoch(epoch),
                    end_offset,
                }),
                _ => None,
            };
            let log = FollowerLog {
                cache: &position.epochs,
                log_end: position.log_end,
                high_watermark: position.high_watermark,
            };
            partition.phase = match truncation_step(log, asked, end) {
                Ok(step) => after_truncation_step(&key, epoch, position, step),
                Err(error) => {
                    tracing::warn!(topic = %key.0, partition = %key.1, %error,
                        "replica fetcher: the leader's epoch answer is impossible; retrying");
                    Phase::Backoff {
                        until_ms: backoff,
                        then: Then::Start,
                    }
                }
            };
        }
    }

    /// The request in flight failed as a whole (network, timeout, a body
    /// that does not decode): its partitions are asked again after a
    /// pause that doubles with each failure in a row.
    pub fn request_failed(&mut self, now_ms: u64) {
        self.abandon();
        self.failures = self.failures.saturating_add(1);
        let shift = self.failures.saturating_sub(1).min(20);
        let pause = self
            .config
            .backoff_ms
            .saturating_mul(1 << shift)
            .min(self.config.backoff_max_ms.max(self.config.backoff_ms));
        self.paused_until_ms = now_ms + pause;
    }
}

/// Read the log's position, then decide where to start.
fn read_position(key: &Key, epoch: LeaderEpoch) -> Phase {
    Phase::Queued(
        LocalOp::Position {
            key: key.clone(),
            epoch,
        },
        Then::Decide,
    )
}

/// The phase after a local operation (or a pause) leads to `then`.
fn resume(key: &Key, partition: &Partition, then: Then) -> Phase {
    match then {
        Then::Fetch => Phase::Fetching,
        Then::Ask(epoch) => Phase::Ask(epoch),
        Then::Start => read_position(key, partition.epoch),
        Then::Decide => match &partition.position {
            None => read_position(key, partition.epoch),
            Some(position) => {
                let log = FollowerLog {
                    cache: &position.epochs,
                    log_end: position.log_end,
                    high_watermark: position.high_watermark,
                };
                let step = first_truncation_step(log);
                after_truncation_step(key, partition.epoch, position, step)
            }
        },
    }
}

/// The phase a truncation step leads to; a truncation to the log end is
/// skipped (nothing to cut).
fn after_truncation_step(
    key: &Key,
    epoch: LeaderEpoch,
    position: &FollowerPosition,
    step: TruncationStep,
) -> Phase {
    match step {
        TruncationStep::Ask(asked) => Phase::Ask(asked),
        TruncationStep::TruncateTo(end) if end >= position.log_end => Phase::Fetching,
        TruncationStep::TruncateTo(end) => Phase::Queued(
            LocalOp::Truncate {
                key: key.clone(),
                epoch,
                end,
            },
            Then::Fetch,
        ),
        TruncationStep::AskAgain {
            truncate_to,
            epoch: asked,
        } => Phase::Queued(
            LocalOp::Truncate {
                key: key.clone(),
                epoch,
                end: truncate_to,
            },
            Then::Ask(asked),
        ),
    }
}

/// The phase after an error code for a partition (not `NONE`, not
/// `OFFSET_OUT_OF_RANGE`): see the module doc.
fn after_error(error: ErrorCode, until_ms: u64, then: Then) -> Phase {
    match error {
        ErrorCode::FencedLeaderEpoch => Phase::Dropped,
        _ => Phase::Backoff { until_ms, then },
    }
}

/// A wire offset: `None` when negative (unknown).
fn offset_of(wire: i64) -> Option<Offset> {
    u64::try_from(wire).ok().map(Offset)
}

/// Appends `entry` to the last topic of `topics` when it is `topic`, else
/// to a new one (keys come sorted, so each topic appears once).
fn push_grouped<T>(topics: &mut Topics<T>, topic: &str, entry: T) {
    match topics.last_mut() {
        Some((name, parts)) if name == topic => parts.push(entry),
        _ => topics.push((topic.to_owned(), vec![entry])),
    }
}

#[cfg(test)]
mod tests;
