//! A consumer-group member of the workload: a pure state machine that
//! finds its group's coordinator (asking any node), joins (with KIP-394's
//! MEMBER_ID_REQUIRED second step), syncs (its leader hands out trivial
//! assignments), heartbeats, commits strictly increasing offsets for its
//! own partitions, fetches the committed offsets after every (re)join,
//! and now and then leaves and comes back as a new member. One request in
//! flight at a time, each with a fresh request id and a timeout: lost,
//! late and duplicated answers are told apart by their id.
//!
//! The offsets it commits are synthetic (it consumes nothing): per
//! partition they only grow, and no other member commits that partition,
//! so the checker's rules can be exact (see `check`).

use std::collections::BTreeMap;

use fjord_broker::group::coordinator::{
    CommitRequest, CommittedOffset, HeartbeatRequest, JoinRequest, LeavingMember, Protocol,
    SyncRequest,
};
use fjord_broker::group::TopicPartition;
use fjord_schema::{ErrorCode, NodeId};

use super::{GroupEvent, GroupMsg, GroupRequest, GroupResponse, TIME_SCALE};
use crate::rng::SimRng;

/// A member's timeouts and pace (the Kafka consumer's defaults scaled by
/// [`TIME_SCALE`] where they matter).
#[derive(Debug, Clone)]
pub struct MemberConfig {
    /// `session.timeout.ms` (Kafka's 45 s scaled by [`TIME_SCALE`] and
    /// halved, so sessions expire within a run's pauses and cuts).
    pub session_timeout_ms: u32,
    /// `max.poll.interval.ms`: the rebalance timeout.
    pub rebalance_timeout_ms: u32,
    /// `heartbeat.interval.ms` (3 s).
    pub heartbeat_interval_ms: u64,
    /// Between commits (auto.commit.interval.ms is 5 s; faster here for
    /// more history).
    pub commit_interval_ms: u64,
    /// `request.timeout.ms` for every request but JoinGroup, which waits
    /// the rebalance timeout more (as the Kafka consumer).
    pub request_timeout_ms: u64,
    /// `retry.backoff.ms`.
    pub retry_backoff_ms: u64,
    /// Chance, at each commit, of leaving the group and rejoining later
    /// as a new member (a static member restarts instead: it rejoins
    /// with its instance id, sending no LeaveGroup).
    pub leave_chance: f64,
    /// A static member (`group.instance.id` = `i<client>`).
    pub static_member: bool,
}

impl Default for MemberConfig {
    fn default() -> MemberConfig {
        MemberConfig {
            session_timeout_ms: 45_000 / TIME_SCALE as u32 / 2,
            rebalance_timeout_ms: 3_000,
            heartbeat_interval_ms: 3_000 / TIME_SCALE,
            commit_interval_ms: 200,
            request_timeout_ms: 2_000,
            retry_backoff_ms: 100,
            leave_chance: 0.01,
            static_member: false,
        }
    }
}

/// The workload's group members: `groups` groups of `members_per_group`
/// members, clients `first_client..`, each committing two partitions of
/// a topic named after it (one writer per partition, as the checker's
/// rules require), asking any of `nodes` for its coordinator; every
/// second member of a group is static; each draws from its own fork of
/// `rng`.
pub fn group_workload(
    nodes: &[NodeId],
    first_client: u32,
    groups: u32,
    members_per_group: u32,
    rng: &mut SimRng,
) -> Vec<GroupMember> {
    let mut members = Vec::new();
    for g in 0..groups {
        for m in 0..members_per_group {
            let client = first_client + g * members_per_group + m;
            let topic = format!("committed-by-c{client}");
            members.push(GroupMember::new(
                client,
                format!("group-{g}"),
                nodes.to_vec(),
                vec![
                    TopicPartition::new(topic.clone(), 0),
                    TopicPartition::new(topic, 1),
                ],
                MemberConfig {
                    static_member: m % 2 == 1,
                    ..MemberConfig::default()
                },
                rng.fork("group member"),
            ));
        }
    }
    members
}

/// What a member step produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberOut {
    /// Put `msg` on the network to `to`.
    Send { to: NodeId, msg: GroupMsg },
    /// For the checker, now.
    Event(GroupEvent),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Find,
    Join,
    Sync,
    Fetch,
    Stable,
    Leave,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Find,
    Join,
    Sync,
    Fetch,
    Heartbeat,
    Commit,
    Leave,
}

#[derive(Debug)]
struct InFlight {
    req: u64,
    kind: Kind,
    deadline_ms: u64,
    /// A commit's offsets.
    offsets: Vec<(TopicPartition, i64)>,
}

const PROTOCOL_TYPE: &str = "consumer";
const PROTOCOL: &str = "range";

/// One member of a consumer group. Lives in: the world's workload, one
/// per group client, driven by [`GroupMember::step`] and
/// [`GroupMember::on_reply`].
#[derive(Debug)]
pub struct GroupMember {
    client: u32,
    group_id: String,
    nodes: Vec<NodeId>,
    partitions: Vec<TopicPartition>,
    config: MemberConfig,
    rng: SimRng,
    phase: Phase,
    coordinator: Option<NodeId>,
    member_id: String,
    generation: i32,
    /// Set after a JoinGroup made this member the leader: the members to
    /// assign in SyncGroup.
    led_members: Vec<String>,
    next_req: u64,
    in_flight: Option<InFlight>,
    /// Idle until then (backoff, a pause after leaving).
    wake_ms: u64,
    next_heartbeat_ms: u64,
    next_commit_ms: u64,
    /// The last offset put in a commit, per partition (only grows).
    last_offsets: BTreeMap<TopicPartition, i64>,
    /// Commits acknowledged, fetches answered, rejoins (for stats).
    pub acked: u64,
    pub fetched: u64,
    pub joins: u64,
}

impl GroupMember {
    /// Client `client` of `group_id` committing `partitions` (no other
    /// member may commit them), asking `nodes` for the coordinator.
    pub fn new(
        client: u32,
        group_id: String,
        nodes: Vec<NodeId>,
        partitions: Vec<TopicPartition>,
        config: MemberConfig,
        rng: SimRng,
    ) -> GroupMember {
        assert!(!nodes.is_empty());
        assert!(!partitions.is_empty());
        GroupMember {
            client,
            group_id,
            nodes,
            partitions,
            config,
            rng,
            phase: Phase::Find,
            coordinator: None,
            member_id: String::new(),
            generation: -1,
            led_members: Vec::new(),
            next_req: 0,
            in_flight: None,
            wake_ms: 0,
            next_heartbeat_ms: 0,
            next_commit_ms: 0,
            last_offsets: BTreeMap::new(),
            acked: 0,
            fetched: 0,
            joins: 0,
        }
    }

    fn instance_id(&self) -> Option<String> {
        self.config
            .static_member
            .then(|| format!("i{}", self.client))
    }

    pub fn client(&self) -> u32 {
        self.client
    }

    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    /// Joined, synced and fetched: heartbeating and committing.
    pub fn is_stable(&self) -> bool {
        self.phase == Phase::Stable
    }

    /// The last offset committed (acknowledged or not) per partition.
    pub fn last_offsets(&self) -> &BTreeMap<TopicPartition, i64> {
        &self.last_offsets
    }

    /// When [`GroupMember::step`] has something to do.
    pub fn next_wake(&self) -> u64 {
        if let Some(f) = &self.in_flight {
            return f.deadline_ms;
        }
        if self.phase == Phase::Stable {
            return self
                .wake_ms
                .max(self.next_heartbeat_ms.min(self.next_commit_ms));
        }
        self.wake_ms
    }

    /// Times out the request in flight, or sends the next one when due.
    pub fn step(&mut self, now_ms: u64, out: &mut Vec<MemberOut>) {
        if let Some(f) = &self.in_flight {
            if now_ms < f.deadline_ms {
                return;
            }
            let kind = f.kind;
            self.in_flight = None;
            match kind {
                // A lost answer or a node that is down: find the
                // coordinator again (it may have moved).
                Kind::Leave => self.left(now_ms),
                _ => self.rediscover(now_ms),
            }
        }
        if now_ms < self.wake_ms {
            return;
        }
        let Some(coordinator) = self.coordinator else {
            let to = *self.rng.pick(&self.nodes).expect("nodes");
            let body = GroupRequest::FindCoordinator {
                group_id: self.group_id.clone(),
            };
            return self.send(to, Kind::Find, body, Vec::new(), now_ms, out);
        };
        let group_id = self.group_id.clone();
        match self.phase {
            Phase::Find => {
                self.phase = Phase::Join;
                self.step(now_ms, out);
            }
            Phase::Join => {
                let body = GroupRequest::Join(JoinRequest {
                    group_id,
                    member_id: self.member_id.clone(),
                    instance_id: self.instance_id(),
                    client_id: format!("c{}", self.client),
                    protocol_type: PROTOCOL_TYPE.to_owned(),
                    protocols: vec![Protocol {
                        name: PROTOCOL.to_owned(),
                        metadata: Vec::new(),
                    }],
                    session_timeout_ms: self.config.session_timeout_ms as i32,
                    rebalance_timeout_ms: self.config.rebalance_timeout_ms as i32,
                });
                self.send(coordinator, Kind::Join, body, Vec::new(), now_ms, out);
            }
            Phase::Sync => {
                let assignments = self
                    .led_members
                    .iter()
                    .map(|m| (m.clone(), m.as_bytes().to_vec()))
                    .collect();
                let body = GroupRequest::Sync(SyncRequest {
                    group_id,
                    generation_id: self.generation,
                    member_id: self.member_id.clone(),
                    instance_id: self.instance_id(),
                    protocol_type: Some(PROTOCOL_TYPE.to_owned()),
                    protocol_name: Some(PROTOCOL.to_owned()),
                    assignments,
                });
                self.send(coordinator, Kind::Sync, body, Vec::new(), now_ms, out);
            }
            Phase::Fetch => {
                let body = GroupRequest::Fetch {
                    group_id: group_id.clone(),
                    partitions: self.partitions.clone(),
                };
                let req = self.next_req;
                out.push(MemberOut::Event(GroupEvent::FetchSent {
                    group: group_id,
                    client: self.client,
                    req,
                    at_ms: now_ms,
                }));
                self.send(coordinator, Kind::Fetch, body, Vec::new(), now_ms, out);
            }
            Phase::Leave => {
                let body = GroupRequest::Leave {
                    group_id,
                    members: vec![LeavingMember {
                        member_id: self.member_id.clone(),
                        instance_id: self.instance_id(),
                    }],
                };
                self.send(coordinator, Kind::Leave, body, Vec::new(), now_ms, out);
            }
            Phase::Stable if now_ms >= self.next_commit_ms => {
                if self.rng.chance(self.config.leave_chance) {
                    if self.config.static_member {
                        // A static member's restart: no LeaveGroup, it
                        // comes back with its instance id and no member
                        // id, taking over its slot (the old id is fenced).
                        self.left(now_ms);
                        return;
                    }
                    self.phase = Phase::Leave;
                    return self.step(now_ms, out);
                }
                let offsets: Vec<(TopicPartition, i64)> = self
                    .partitions
                    .clone()
                    .into_iter()
                    .map(|tp| {
                        let last = self.last_offsets.get(&tp).copied().unwrap_or(0);
                        let next = last + self.rng.range(1, 3) as i64;
                        self.last_offsets.insert(tp.clone(), next);
                        (tp, next)
                    })
                    .collect();
                let body = GroupRequest::Commit(CommitRequest {
                    group_id: group_id.clone(),
                    generation_id: self.generation,
                    member_id: self.member_id.clone(),
                    instance_id: self.instance_id(),
                    offsets: offsets
                        .iter()
                        .map(|(tp, o)| {
                            (
                                tp.clone(),
                                CommittedOffset {
                                    offset: *o,
                                    leader_epoch: -1,
                                    metadata: String::new(),
                                },
                            )
                        })
                        .collect(),
                });
                out.push(MemberOut::Event(GroupEvent::CommitSent {
                    group: group_id,
                    client: self.client,
                    req: self.next_req,
                    offsets: offsets.clone(),
                    at_ms: now_ms,
                }));
                self.send(coordinator, Kind::Commit, body, offsets, now_ms, out);
            }
            Phase::Stable if now_ms >= self.next_heartbeat_ms => {
                let body = GroupRequest::Heartbeat(HeartbeatRequest {
                    group_id,
                    generation_id: self.generation,
                    member_id: self.member_id.clone(),
                    instance_id: self.instance_id(),
                });
                self.send(coordinator, Kind::Heartbeat, body, Vec::new(), now_ms, out);
            }
            Phase::Stable => {}
        }
    }

    fn send(
        &mut self,
        to: NodeId,
        kind: Kind,
        body: GroupRequest,
        offsets: Vec<(TopicPartition, i64)>,
        now_ms: u64,
        out: &mut Vec<MemberOut>,
    ) {
        assert!(self.in_flight.is_none(), "one request at a time");
        let req = self.next_req;
        self.next_req += 1;
        let timeout = match kind {
            Kind::Join => {
                self.config.request_timeout_ms + u64::from(self.config.rebalance_timeout_ms)
            }
            _ => self.config.request_timeout_ms,
        };
        self.in_flight = Some(InFlight {
            req,
            kind,
            deadline_ms: now_ms + timeout,
            offsets,
        });
        out.push(MemberOut::Send {
            to,
            msg: GroupMsg::Request {
                req,
                sent_ms: now_ms,
                body,
            },
        });
    }

    fn backoff(&mut self, now_ms: u64) {
        self.wake_ms = now_ms + self.config.retry_backoff_ms;
    }

    /// The coordinator is unknown (moved, down, or not answering): find it,
    /// then rejoin (the new one may not know this member) and fetch.
    fn rediscover(&mut self, now_ms: u64) {
        self.coordinator = None;
        self.phase = Phase::Find;
        self.backoff(now_ms);
    }

    /// Rejoin the group with the current member id (or none).
    fn rejoin(&mut self, now_ms: u64, forget_id: bool) {
        if forget_id {
            self.member_id.clear();
            self.generation = -1;
        }
        self.phase = Phase::Join;
        self.backoff(now_ms);
    }

    /// Left (or gave up leaving): come back later as a new member.
    fn left(&mut self, now_ms: u64) {
        self.member_id.clear();
        self.generation = -1;
        self.phase = Phase::Join;
        self.wake_ms = now_ms + self.rng.range(0, 2_000);
    }

    /// Errors every group answer may carry; returns whether it was one.
    fn common_error(&mut self, code: ErrorCode, now_ms: u64) -> bool {
        match code {
            ErrorCode::None => return false,
            ErrorCode::NotCoordinator | ErrorCode::CoordinatorNotAvailable => {
                self.rediscover(now_ms)
            }
            // Same coordinator, same request, a little later.
            ErrorCode::CoordinatorLoadInProgress | ErrorCode::BrokerBusy => self.backoff(now_ms),
            ErrorCode::UnknownMemberId => self.rejoin(now_ms, true),
            ErrorCode::RebalanceInProgress | ErrorCode::IllegalGeneration => {
                self.rejoin(now_ms, false)
            }
            other => {
                tracing::debug!(client = self.client, ?other, "group request failed");
                self.rejoin(now_ms, true);
            }
        }
        true
    }

    /// An answer from a node: ignored unless it answers the request in
    /// flight.
    pub fn on_reply(&mut self, msg: GroupMsg, now_ms: u64, out: &mut Vec<MemberOut>) {
        let GroupMsg::Reply { req, body } = msg else {
            return;
        };
        if self.in_flight.as_ref().is_none_or(|f| f.req != req) {
            return;
        }
        let f = self.in_flight.take().expect("checked");
        match (f.kind, body) {
            (_, GroupResponse::Unavailable(code)) => {
                if f.kind == Kind::Leave {
                    self.left(now_ms);
                } else if !self.common_error(code, now_ms) {
                    self.backoff(now_ms);
                }
            }
            (Kind::Find, GroupResponse::Coordinator(Ok(node))) => {
                self.coordinator = Some(node);
                self.phase = Phase::Join;
                self.wake_ms = now_ms;
            }
            (Kind::Find, GroupResponse::Coordinator(Err(_))) => self.backoff(now_ms),
            (Kind::Join, GroupResponse::Join(response)) => match response.error {
                ErrorCode::None => {
                    self.joins += 1;
                    self.member_id = response.member_id;
                    self.generation = response.generation_id;
                    self.led_members = if response.leader == self.member_id {
                        response.members.into_iter().map(|m| m.member_id).collect()
                    } else {
                        Vec::new()
                    };
                    self.phase = Phase::Sync;
                    self.wake_ms = now_ms;
                }
                ErrorCode::MemberIdRequired => {
                    self.member_id = response.member_id;
                    self.wake_ms = now_ms;
                }
                code => {
                    self.common_error(code, now_ms);
                }
            },
            (Kind::Sync, GroupResponse::Sync(response)) => {
                if !self.common_error(response.error, now_ms) {
                    self.phase = Phase::Fetch;
                    self.wake_ms = now_ms;
                }
            }
            (Kind::Fetch, GroupResponse::Fetch(offsets)) => {
                self.fetched += 1;
                for (tp, offset) in offsets {
                    out.push(MemberOut::Event(GroupEvent::Fetched {
                        group: self.group_id.clone(),
                        client: self.client,
                        req,
                        tp,
                        offset: offset.map(|o| o.offset),
                        at_ms: now_ms,
                    }));
                }
                self.phase = Phase::Stable;
                self.next_heartbeat_ms = now_ms + self.config.heartbeat_interval_ms;
                self.next_commit_ms = now_ms + self.config.commit_interval_ms;
            }
            (Kind::Heartbeat, GroupResponse::Heartbeat(code)) => {
                if !self.common_error(code, now_ms) {
                    self.next_heartbeat_ms = now_ms + self.config.heartbeat_interval_ms;
                }
            }
            (Kind::Commit, GroupResponse::Commit(results)) => {
                let mut failed = ErrorCode::None;
                for (tp, code) in results {
                    if code != ErrorCode::None {
                        failed = code;
                        continue;
                    }
                    let Some((_, offset)) = f.offsets.iter().find(|(t, _)| *t == tp) else {
                        continue;
                    };
                    self.acked += 1;
                    out.push(MemberOut::Event(GroupEvent::CommitAcked {
                        group: self.group_id.clone(),
                        client: self.client,
                        req,
                        tp,
                        offset: *offset,
                        at_ms: now_ms,
                    }));
                }
                self.next_commit_ms = now_ms + self.config.commit_interval_ms;
                self.common_error(failed, now_ms);
            }
            (Kind::Leave, GroupResponse::Leave(_)) => self.left(now_ms),
            // An answer of another kind to this request id: a node bug.
            (kind, body) => panic!("client {}: {body:?} answers a {kind:?}", self.client),
        }
    }
}
