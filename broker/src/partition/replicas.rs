//! The leader's view of its followers (sans-IO): the replica set, the
//! in-sync replicas (ISR) and the partition epoch the metadata image gave
//! it, each follower's progress as its fetches report it, and the ISR
//! changes the leader proposes to the controller (`CLUSTER.md` §4). No
//! glommio, no files, no clock reads: time is passed in.
//!
//! Lives on: the partition's owning shard, inside its
//! [`super::state::PartitionState`], which owns the high watermark and
//! asks this type for the bound the ISR puts on it
//! ([`Replicas::high_watermark_bound`]). Driven by the state's
//! `apply_leadership` (the committed image), `follower_fetched` (a
//! follower's fetch) and `tick` (the driver's timer).
//!
//! An ISR change is a *proposal* ([`IsrChange`], sent as `AlterPartition`,
//! a compare-and-set on the partition epoch): nothing here changes the ISR
//! until the committed image says so through [`Replicas::apply`]. One
//! proposal is in flight at a time; an image with another partition epoch
//! ends it (committed or superseded), a rejection
//! ([`Replicas::rejected`]) lets the next tick or fetch propose again.

use fjord_schema::{ErrorCode, LeaderEpoch, NodeId, Offset};

use crate::metadata::image::PartitionEpoch;

/// Kafka's default `replica.lag.time.max.ms`: a follower in the ISR that
/// has not caught up with the leader's log end for longer than this is
/// proposed out of it.
pub const DEFAULT_REPLICA_LAG_TIME_MAX_MS: u64 = 30_000;

/// What the committed metadata image says about a partition this node
/// leads (its `PartitionImage` with `leader` = this node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    /// This node, the leader.
    pub leader: NodeId,
    /// The nodes holding a replica, preferred leader first.
    pub replicas: Vec<NodeId>,
    /// The in-sync replicas, the leader among them.
    pub isr: Vec<NodeId>,
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: PartitionEpoch,
}

/// An ISR change the leader proposes to the controller (`AlterPartition`):
/// applied only if the partition's epoch is still `partition_epoch`, and
/// only by the committed image coming back through `apply_leadership`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    pub new_isr: Vec<NodeId>,
    /// The epoch the proposal is based on (the compare-and-set token).
    pub partition_epoch: PartitionEpoch,
}

/// Why a leadership or a follower's fetch is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaError {
    #[error("leader {leader} is not in the ISR {isr:?} or not in the replicas {replicas:?}")]
    LeaderNotInIsr {
        leader: NodeId,
        replicas: Vec<NodeId>,
        isr: Vec<NodeId>,
    },
    #[error("ISR {isr:?} is not a duplicate-free subset of replicas {replicas:?}")]
    IsrNotInReplicas {
        replicas: Vec<NodeId>,
        isr: Vec<NodeId>,
    },
    /// A fetch with a `replica_id` that is not a follower of this
    /// partition: refused, nothing is recorded (a stale replica after a
    /// reassignment, or a misconfigured node, must not move the HW).
    #[error("node {node} is not a follower of this partition")]
    NotAFollower { node: NodeId },
    #[error("follower {node} fetches at {fetch_offset}, past the log end {log_end}")]
    FetchPastLogEnd {
        node: NodeId,
        fetch_offset: Offset,
        log_end: Offset,
    },
    #[error(
        "follower {node} reports durable end {durable_end} past its fetch offset {fetch_offset}"
    )]
    DurablePastFetch {
        node: NodeId,
        durable_end: Offset,
        fetch_offset: Offset,
    },
}

impl ReplicaError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ReplicaError::LeaderNotInIsr { .. } | ReplicaError::IsrNotInReplicas { .. } => {
                ErrorCode::InvalidRequest
            }
            ReplicaError::NotAFollower { .. } => ErrorCode::NotLeaderOrFollower,
            ReplicaError::FetchPastLogEnd { .. } => ErrorCode::OffsetOutOfRange,
            ReplicaError::DurablePastFetch { .. } => ErrorCode::InvalidRequest,
        }
    }
}

/// One follower's progress, as its fetches report it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Follower {
    node: NodeId,
    /// Its log end (the offset it fetches from); `None` until its first
    /// fetch under this leadership.
    end: Option<Offset>,
    /// Its durable end (the topic flushes before ack); `None` until it
    /// reports one.
    durable_end: Option<Offset>,
    /// Kafka's `lastCaughtUpTimeMs`: the last time its log end was at the
    /// leader's.
    last_caught_up_ms: i64,
    /// Its previous fetch: when, and the leader's log end then.
    last_fetch_ms: i64,
    last_fetch_leader_end: Offset,
}

impl Follower {
    fn new(node: NodeId, now_ms: i64, in_isr: bool) -> Follower {
        Follower {
            node,
            end: None,
            durable_end: None,
            // An ISR member gets a full lag period to fetch under a new
            // leader before it is proposed out (Kafka resets it the same
            // way); an outsider's time does not matter until it is in.
            last_caught_up_ms: if in_isr { now_ms } else { i64::MIN },
            last_fetch_ms: i64::MIN,
            last_fetch_leader_end: Offset(u64::MAX),
        }
    }

    /// The end that bounds the high watermark: the durable end when the
    /// topic flushes before ack (`CLUSTER.md` §0), else the log end.
    fn counted_end(&self, flush_before_ack: bool) -> Option<Offset> {
        if flush_before_ack {
            self.durable_end
        } else {
            self.end
        }
    }
}

/// The replica set, ISR and follower progress of a partition this node
/// leads. With no followers (one replica, or before the first
/// leadership) it bounds nothing and the ISR is the leader alone.
#[derive(Debug)]
pub struct Replicas {
    lag_time_max_ms: u64,
    leader: Option<NodeId>,
    /// The committed ISR, the leader among them (empty before the first
    /// leadership: the leader alone).
    isr: Vec<NodeId>,
    /// The leader epoch and partition epoch of the applied leadership.
    leader_epoch: Option<LeaderEpoch>,
    partition_epoch: PartitionEpoch,
    /// The leader's log end when it took this leader epoch: a follower
    /// joins the ISR only once it has at least this (Kafka's
    /// `leaderEpochStartOffset`), so it holds this leader's records.
    epoch_start: Offset,
    /// In replica order; bounded by the replica set.
    followers: Vec<Follower>,
    /// The ISR change sent and not yet answered by an image.
    pending: Option<IsrChange>,
}

impl Replicas {
    /// No followers: the leader alone, as with one replica.
    pub fn new(lag_time_max_ms: u64, log_end: Offset) -> Replicas {
        Replicas {
            lag_time_max_ms,
            leader: None,
            isr: Vec::new(),
            leader_epoch: None,
            partition_epoch: 0,
            epoch_start: log_end,
            followers: Vec::new(),
            pending: None,
        }
    }

    pub fn set_lag_time_max_ms(&mut self, lag_time_max_ms: u64) {
        self.lag_time_max_ms = lag_time_max_ms;
    }

    /// The committed ISR's size, the leader included.
    pub fn isr_len(&self) -> usize {
        self.isr.len().max(1)
    }

    /// The committed ISR (empty before the first leadership).
    pub fn isr(&self) -> &[NodeId] {
        &self.isr
    }

    pub fn partition_epoch(&self) -> PartitionEpoch {
        self.partition_epoch
    }

    /// The leader's log end when it took its current leader epoch (Kafka's
    /// `leaderEpochStartOffset`).
    pub fn epoch_start(&self) -> Offset {
        self.epoch_start
    }

    /// The proposal in flight, if any.
    pub fn pending(&self) -> Option<&IsrChange> {
        self.pending.as_ref()
    }

    /// Every follower with its log end as last reported (`None` before
    /// its first fetch under this leadership), in replica order; what
    /// `fjord topic describe` shows as lag.
    pub fn followers(&self) -> impl Iterator<Item = (NodeId, Option<Offset>)> + '_ {
        self.followers.iter().map(|f| (f.node, f.end))
    }

    /// A follower's log end and durable end as last reported.
    pub fn follower(&self, node: NodeId) -> Option<(Option<Offset>, Option<Offset>)> {
        self.followers
            .iter()
            .find(|f| f.node == node)
            .map(|f| (f.end, f.durable_end))
    }

    /// Applies a committed leadership at `now_ms`, the leader's log end
    /// being `log_end`. Returns whether it was applied: an older one (a
    /// lower leader epoch, or the same leader epoch with a lower partition
    /// epoch) is stale and ignored. A new leader epoch starts every
    /// follower's progress afresh; any other image keeps the progress of
    /// the followers still in the replica set. Either way it ends the
    /// proposal in flight if its partition epoch moved.
    pub fn apply(
        &mut self,
        leadership: &Leadership,
        log_end: Offset,
        now_ms: i64,
    ) -> Result<bool, ReplicaError> {
        let Leadership {
            leader,
            replicas,
            isr,
            leader_epoch,
            partition_epoch,
        } = leadership;
        if !isr.contains(leader) || !replicas.contains(leader) {
            return Err(ReplicaError::LeaderNotInIsr {
                leader: *leader,
                replicas: replicas.clone(),
                isr: isr.clone(),
            });
        }
        let unique = |nodes: &[NodeId]| {
            nodes
                .iter()
                .enumerate()
                .all(|(i, n)| !nodes[..i].contains(n))
        };
        if !unique(replicas) || !unique(isr) || !isr.iter().all(|n| replicas.contains(n)) {
            return Err(ReplicaError::IsrNotInReplicas {
                replicas: replicas.clone(),
                isr: isr.clone(),
            });
        }
        if let Some(current) = self.leader_epoch {
            let stale = *leader_epoch < current
                || (*leader_epoch == current && *partition_epoch < self.partition_epoch);
            if stale {
                return Ok(false);
            }
        }
        let new_epoch = self.leader_epoch != Some(*leader_epoch);
        if new_epoch {
            self.epoch_start = log_end;
        }
        let mut followers = Vec::with_capacity(replicas.len().saturating_sub(1));
        for &node in replicas.iter().filter(|n| *n != leader) {
            let kept = self
                .followers
                .iter()
                .find(|f| f.node == node && !new_epoch)
                .cloned();
            followers
                .push(kept.unwrap_or_else(|| Follower::new(node, now_ms, isr.contains(&node))));
        }
        self.followers = followers;
        self.leader = Some(*leader);
        self.isr = isr.clone();
        self.leader_epoch = Some(*leader_epoch);
        if self
            .pending
            .as_ref()
            .is_some_and(|p| p.partition_epoch != *partition_epoch || new_epoch)
        {
            self.pending = None;
        }
        self.partition_epoch = *partition_epoch;
        Ok(true)
    }

    /// The committed ISR members (followers) that have not caught up with
    /// the leader's end `leader_end` for more than `replica_lag_time_max_ms`
    /// at `now_ms`: those a shrink proposes out.
    fn lagging(&self, leader_end: Offset, now_ms: i64) -> impl Iterator<Item = NodeId> + '_ {
        let lag_max = i64::try_from(self.lag_time_max_ms).unwrap_or(i64::MAX);
        self.followers
            .iter()
            .filter(|f| self.isr.contains(&f.node))
            .filter(move |f| f.end != Some(leader_end))
            .filter(move |f| now_ms.saturating_sub(f.last_caught_up_ms) > lag_max)
            .map(|f| f.node)
    }

    /// The committed ISR's size without the members that lag (see
    /// [`Self::lagging`]): what the ISR becomes once the leader's shrink is
    /// committed — which cannot happen while the controller is
    /// unreachable.
    pub fn live_isr_len(&self, leader_end: Offset, now_ms: i64) -> usize {
        self.isr_len() - self.lagging(leader_end, now_ms).count()
    }

    /// The controller refused the proposal based on `partition_epoch` (the
    /// compare-and-set failed, or the request did): the next tick or fetch
    /// may propose again.
    pub fn rejected(&mut self, partition_epoch: PartitionEpoch) {
        if self
            .pending
            .as_ref()
            .is_some_and(|p| p.partition_epoch == partition_epoch)
        {
            self.pending = None;
        }
    }

    /// A follower fetched at `fetch_offset` (it has everything below) at
    /// `now_ms`, reporting `durable_end` (when the topic flushes before
    /// ack), while the leader's log ended at `leader_end`. The fetch offset
    /// is taken as given even when it went back (a follower that restarted
    /// or truncated): the high watermark, which never goes back, is the
    /// state's.
    pub fn fetched(
        &mut self,
        node: NodeId,
        fetch_offset: Offset,
        durable_end: Option<Offset>,
        leader_end: Offset,
        now_ms: i64,
    ) -> Result<(), ReplicaError> {
        let Some(follower) = self.followers.iter_mut().find(|f| f.node == node) else {
            return Err(ReplicaError::NotAFollower { node });
        };
        if fetch_offset > leader_end {
            return Err(ReplicaError::FetchPastLogEnd {
                node,
                fetch_offset,
                log_end: leader_end,
            });
        }
        if let Some(durable_end) = durable_end.filter(|d| *d > fetch_offset) {
            return Err(ReplicaError::DurablePastFetch {
                node,
                durable_end,
                fetch_offset,
            });
        }
        // Kafka's rule: caught up now if it has the leader's whole log;
        // else caught up as of its previous fetch if it now has what the
        // leader had then (under steady produce a follower is never at the
        // leader's end exactly, one fetch behind at most).
        if fetch_offset >= leader_end {
            follower.last_caught_up_ms = follower.last_caught_up_ms.max(now_ms);
        } else if fetch_offset >= follower.last_fetch_leader_end {
            follower.last_caught_up_ms = follower.last_caught_up_ms.max(follower.last_fetch_ms);
        }
        follower.last_fetch_ms = now_ms;
        follower.last_fetch_leader_end = leader_end;
        follower.end = Some(fetch_offset);
        follower.durable_end = match durable_end {
            Some(durable_end) => Some(durable_end),
            // Not reported: what it had, but never past what it has now.
            None => follower.durable_end.map(|d| d.min(fetch_offset)),
        };
        Ok(())
    }

    /// The members the high watermark waits for: the committed ISR plus a
    /// pending proposal's members. While an expansion is pending its new
    /// member may already be in the ISR the controller elects from; while
    /// a shrink is pending the member leaving still is. Either may become
    /// leader before this leader hears back, so the high watermark (what
    /// consumers saw and acks=all acknowledged) must be below its end too
    /// — Kafka's "maximal ISR" (KIP-497) for the same reason.
    fn in_maximal_isr(&self, node: NodeId) -> bool {
        self.isr.contains(&node)
            || self
                .pending
                .as_ref()
                .is_some_and(|p| p.new_isr.contains(&node))
    }

    /// The highest high watermark the followers of the maximal ISR allow:
    /// the least of their ends (durable ends when the topic flushes before
    /// ack); `None` when none of them bounds it. A member that has not
    /// fetched yet bounds it at zero (the state's high watermark never goes
    /// back, so it stays where it is).
    pub fn high_watermark_bound(&self, flush_before_ack: bool) -> Option<Offset> {
        self.followers
            .iter()
            .filter(|f| self.in_maximal_isr(f.node))
            .map(|f| f.counted_end(flush_before_ack).unwrap_or(Offset(0)))
            .min()
    }

    /// Whether `node`'s fetch qualifies it to join the ISR: it is a follower
    /// outside the maximal ISR whose end reached the high watermark and the
    /// start of this leader's epoch. Proposes adding it, unless a proposal
    /// is in flight.
    pub fn propose_expand(
        &mut self,
        node: NodeId,
        high_watermark: Offset,
        flush_before_ack: bool,
    ) -> Option<IsrChange> {
        if self.pending.is_some() || self.in_maximal_isr(node) {
            return None;
        }
        let follower = self.followers.iter().find(|f| f.node == node)?;
        let end = follower.counted_end(flush_before_ack)?;
        if end < high_watermark || end < self.epoch_start {
            return None;
        }
        let mut new_isr = self.isr.clone();
        new_isr.push(node);
        Some(self.propose(new_isr))
    }

    /// Proposes removing the ISR followers that have not caught up with
    /// the leader's log end `leader_end` for more than
    /// `replica_lag_time_max_ms` at `now_ms`, unless a proposal is in
    /// flight. A follower at the leader's end is in sync however long ago
    /// it fetched (an idle partition; the controller removes fenced
    /// brokers, `CLUSTER.md` §3).
    pub fn propose_shrink(&mut self, leader_end: Offset, now_ms: i64) -> Option<IsrChange> {
        if self.pending.is_some() {
            return None;
        }
        let lagging: Vec<NodeId> = self.lagging(leader_end, now_ms).collect();
        if lagging.is_empty() {
            return None;
        }
        let new_isr = self
            .isr
            .iter()
            .copied()
            .filter(|n| !lagging.contains(n))
            .collect();
        Some(self.propose(new_isr))
    }

    fn propose(&mut self, new_isr: Vec<NodeId>) -> IsrChange {
        let change = IsrChange {
            new_isr,
            partition_epoch: self.partition_epoch,
        };
        self.pending = Some(change.clone());
        change
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `fjord topic describe` shows as lag: every follower in
    /// replica order, without an end until its first fetch under this
    /// leadership, then the offset it fetches from.
    #[test]
    fn followers_lists_each_follower_with_its_last_fetch_offset() {
        let mut replicas = Replicas::new(DEFAULT_REPLICA_LAG_TIME_MAX_MS, Offset(0));
        assert_eq!(replicas.followers().count(), 0, "no leadership yet");
        let (n1, n2, n3) = (NodeId(1), NodeId(2), NodeId(3));
        let leadership = Leadership {
            leader: n2,
            replicas: vec![n3, n2, n1],
            isr: vec![n2, n3, n1],
            leader_epoch: LeaderEpoch(1),
            partition_epoch: 1,
        };
        assert_eq!(replicas.apply(&leadership, Offset(10), 0), Ok(true));
        let listed: Vec<_> = replicas.followers().collect();
        assert_eq!(listed, [(n3, None), (n1, None)]);
        replicas
            .fetched(n1, Offset(4), None, Offset(10), 5)
            .expect("a follower's fetch");
        let listed: Vec<_> = replicas.followers().collect();
        assert_eq!(listed, [(n3, None), (n1, Some(Offset(4)))]);
    }
}
