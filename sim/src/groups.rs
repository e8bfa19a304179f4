//! Consumer groups in the simulation: one node's group coordination
//! ([`NodeGroups`]), the workload's group members ([`GroupMember`], in
//! `member`), the messages between them ([`GroupMsg`]) and the rules the
//! checker holds the members' histories to ([`GroupChecker`], in `check`).
//!
//! [`NodeGroups`] re-creates, as synchronous steps, what the broker's
//! glommio host (`broker/src/group/host.rs`, with `group/offsets_log.rs`
//! and `engine/groups.rs`) does around the real sans-IO
//! [`Coordinator`]: one coordinator per `__consumer_offsets` partition the
//! node leads, loaded by replaying the node's own replica of that
//! partition with the broker's record decoding
//! (`offsets_log::decode` → `Coordinator::load_offset`), answering
//! COORDINATOR_LOAD_IN_PROGRESS while it loads and NOT_COORDINATOR once it
//! stops leading; commits appended with acks=all through an
//! [`OffsetsLog`] (the broker's record encoding,
//! `offsets_log::encode_key` / `encode_value`) and acknowledged only once
//! durable (`Coordinator::offsets_persisted`, which applies the broker's
//! `persist_error` mapping); the coordinators' timers run at
//! [`NodeGroups::next_deadline`].
//!
//! # Wiring (what the world calls, and when)
//!
//! Per node, next to its controller and its data plane (`NodeData`):
//! - **start / restart**: `NodeGroups::new(node, GroupsConfig::sim(),
//!   &mut node_rng, world_now)`; a crash drops it (parked requests die
//!   with it: their clients time out), and a restart makes a new one, so
//!   the member-id nonce and the loads are fresh, as in the broker.
//! - **every metadata image the node applies**: first `NodeData::apply_image`
//!   (the replicas take their roles), then [`NodeGroups::apply_image`]
//!   (as the broker's `Op::Leadership` then `Op::SetCatalog` →
//!   `follow_catalog`): partitions no longer led here unload at once,
//!   partitions led here (at a new leader epoch) start loading.
//! - **every wake of the node** (the world's poll, every few ms of its
//!   local clock): [`NodeGroups::poll`] — finishes due loads (the replay),
//!   runs the coordinators' timers, retries failed loads.
//! - **a [`GroupMsg::Request`] delivered from client `c`**:
//!   [`NodeGroups::handle`]`(c, req, sent_ms, body, ..)`; every
//!   [`GroupOut::Reply`] goes back to `Addr::Client(c)` as
//!   [`GroupMsg::Reply`].
//! - **a completed offsets append** (`data::Out::Produced` for a write
//!   this module started): [`NodeGroups::appended`]`(write_id, result)`,
//!   `Ok` once the high watermark passed it (acks=all), else the
//!   produce's error code.
//!
//! The [`OffsetsLog`] the calls take is the node's data plane seen as the
//! offsets topic: `append` is a produce to
//! `__consumer_offsets-{partition}` with acks = -1 and the given timeout
//! (its `id` remembered as this `write_id`), `bounds` / `read` read this
//! node's own replica (leader or follower) up to its log end.
//!
//! Per member (a workload client; [`group_workload`] makes the usual
//! set, with client ids from a given first one): [`GroupMember::step`]
//! at [`GroupMember::next_wake`] (or on every client tick; world time, no
//! skew) and [`GroupMember::on_reply`] for every [`GroupMsg::Reply`]
//! delivered to it; its [`MemberOut::Send`]s go on the network to
//! `Addr::Node(to)` as `Msg::Group(msg)`, its [`MemberOut::Event`]s go to
//! `Checker::group_event` at once, in the order they come out.
//!
//! At the end (after the quiet period): for every member's group and
//! partition, [`NodeGroups::committed`] on the node leading the group's
//! offsets partition, checked with [`GroupChecker::check_final`].
//!
//! The adapter from the data plane, in outline (`NodeData` is the node's
//! data plane, `data.rs`):
//!
//! ```text
//! struct DataOffsets<'a> { data: &'a mut NodeData, out: &'a mut Vec<data::Out>,
//!                          writes: &'a mut BTreeMap<u64 /* produce id */, u64 /* write id */> }
//! append(p, records, write_id, timeout_ms, now) → id = fresh produce id;
//!     writes.insert(id, write_id); data.produce(ProduceRequest { id,
//!     topic: OFFSETS_TOPIC, partition: p, acks: -1, producer: none, records,
//!     timeout_ms, .. }, now, out)
//! data::Out::Produced { id, result } with writes.remove(&id) == Some(w)
//!     → groups.appended(w, result.map(|_| ()), now, &mut adapter, &mut group_out)
//! bounds(p) / read(p, offset, max) → data.read_local(OFFSETS_TOPIC, p, ..)
//!     (the replica's log start and end; whole batches as bytes)
//! ```
//!
//! Two things the world must keep: produce completions from before a
//! crash never reach the restarted node's `NodeGroups` (its write ids
//! start again from 0), and client ids are unique among all clients
//! (the connection model is keyed by them). The world's link cuts are
//! between nodes; a partition that should also cut clients off a node
//! must drop their messages too.
//!
//! # The connection model
//!
//! Kafka clients speak to a broker over TCP: requests on one connection
//! are neither duplicated nor reordered, and a broker restart kills the
//! connection with whatever it had not read. The world's network drops,
//! duplicates and reorders single messages, so [`NodeGroups::handle`]
//! restores those guarantees at the node's edge: from each client it
//! serves only requests with a request id above the last one it served
//! (a member's ids only grow), and never one sent (`sent_ms`, world time)
//! before this `NodeGroups` started. Without it a duplicated old commit
//! arriving after a newer one would move the group's offset backwards —
//! a fault of the simulated network, not of Fjord.

use std::collections::BTreeMap;

use bytes::Bytes;
use fjord_broker::group::coordinator::{
    Action, CommitRequest, CommittedOffset, Coordinator, GroupConfig, HeartbeatRequest,
    JoinRequest, JoinResponse, LeaveResponse, LeavingMember, Millis, ReplyId, SyncRequest,
    SyncResponse,
};
use fjord_broker::group::host::{
    LOAD_RETRY_MAX, LOAD_RETRY_MIN, REPLAY_BATCH_BYTES_MAX, REPLAY_READ_BYTES,
};
use fjord_broker::group::offsets_log::{self, OFFSETS_TOPIC, STRING_BYTES_MAX};
use fjord_broker::group::TopicPartition;
use fjord_broker::metadata::image::MetadataImage;
use fjord_broker::service::OFFSETS_COMMIT_TIMEOUT;
use fjord_schema::{BatchView, ErrorCode, LeaderEpoch, NodeId};

use crate::rng::SimRng;

mod check;
mod member;

pub use check::{GroupChecker, GroupEvent};
pub use member::{group_workload, GroupMember, MemberConfig, MemberOut};

/// A group request from a member to a node (the Kafka group APIs the
/// workload uses; plain values, cloned by the network's duplication).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRequest {
    /// FindCoordinator: the node answers from its own metadata image.
    FindCoordinator {
        group_id: String,
    },
    Join(JoinRequest),
    Sync(SyncRequest),
    Heartbeat(HeartbeatRequest),
    Leave {
        group_id: String,
        members: Vec<LeavingMember>,
    },
    Commit(CommitRequest),
    /// OffsetFetch of these partitions.
    Fetch {
        group_id: String,
        partitions: Vec<TopicPartition>,
    },
}

impl GroupRequest {
    pub fn group_id(&self) -> &str {
        match self {
            GroupRequest::FindCoordinator { group_id }
            | GroupRequest::Leave { group_id, .. }
            | GroupRequest::Fetch { group_id, .. } => group_id,
            GroupRequest::Join(r) => &r.group_id,
            GroupRequest::Sync(r) => &r.group_id,
            GroupRequest::Heartbeat(r) => &r.group_id,
            GroupRequest::Commit(r) => &r.group_id,
        }
    }
}

/// A node's answer to a [`GroupRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupResponse {
    /// The leader of the group's offsets partition in the node's image
    /// (COORDINATOR_NOT_AVAILABLE: no offsets topic, no leader, or the
    /// leader is not a live broker).
    Coordinator(Result<NodeId, ErrorCode>),
    Join(JoinResponse),
    Sync(SyncResponse),
    Heartbeat(ErrorCode),
    Leave(LeaveResponse),
    /// Per partition, in the request's order.
    Commit(Vec<(TopicPartition, ErrorCode)>),
    Fetch(Vec<(TopicPartition, Option<CommittedOffset>)>),
    /// The request did not reach a coordinator: NOT_COORDINATOR,
    /// COORDINATOR_LOAD_IN_PROGRESS or COORDINATOR_NOT_AVAILABLE (the
    /// broker's `GroupUnavailable::code`).
    Unavailable(ErrorCode),
}

/// A group message on the simulated network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupMsg {
    /// `req` grows with every request of a member; `sent_ms` is the
    /// world's time at sending (the connection model, module docs).
    Request {
        req: u64,
        sent_ms: u64,
        body: GroupRequest,
    },
    Reply {
        req: u64,
        body: GroupResponse,
    },
}

/// The offsets topic as one node's data plane holds it.
///
/// `append` starts a produce to `__consumer_offsets-{partition}` with
/// acks = all (-1) that waits at most `timeout_ms` for the in-sync
/// replicas; its outcome comes back later through
/// [`NodeGroups::appended`] with the same `write_id` (`Ok` once the high
/// watermark passed the records, else the produce's error:
/// NOT_LEADER_OR_FOLLOWER, NOT_ENOUGH_REPLICAS, REQUEST_TIMED_OUT, ...).
/// `bounds` and `read` read this node's own replica, leader or follower,
/// up to its log end (not the high watermark: see the broker's
/// `group/host.rs` decisions).
pub trait OffsetsLog {
    /// Records are (key, value) as `offsets_log::encode_key` /
    /// `encode_value` make them, in order, appended contiguously.
    fn append(
        &mut self,
        partition: u32,
        records: Vec<(Bytes, Bytes)>,
        write_id: u64,
        timeout_ms: u64,
        now_ms: u64,
    );

    /// The replica's log start and log end.
    fn bounds(&self, partition: u32) -> Result<(i64, i64), ErrorCode>;

    /// Whole batches from the one holding `offset`, below the log end,
    /// within `max_bytes` (the first batch always).
    fn read(&self, partition: u32, offset: i64, max_bytes: usize) -> Result<Vec<Bytes>, ErrorCode>;
}

/// One node's group settings.
#[derive(Debug, Clone)]
pub struct GroupsConfig {
    pub group: GroupConfig,
    /// Requests waiting for their coordinator's answer (the host's
    /// `parked_max`); beyond it COORDINATOR_NOT_AVAILABLE.
    pub parked_max: usize,
    /// Clients whose last request id the connection model remembers;
    /// requests of more clients are refused COORDINATOR_NOT_AVAILABLE.
    pub clients_max: usize,
    /// How long an offsets append waits for the in-sync replicas (the
    /// broker's `OFFSETS_COMMIT_TIMEOUT`).
    pub commit_timeout_ms: u64,
    /// From gaining a partition's leadership to its replay (the host's
    /// load task runs asynchronously: its groups answer
    /// COORDINATOR_LOAD_IN_PROGRESS meanwhile).
    pub load_delay_ms: u64,
    /// Backoff between attempts of a failed load (doubling).
    pub load_retry_min_ms: u64,
    pub load_retry_max_ms: u64,
    /// Bytes read per replay step.
    pub replay_read_bytes: usize,
}

/// The simulation runs about 35 s of simulated time per seed: the
/// broker's group timeouts are scaled down by this.
pub const TIME_SCALE: u64 = 10;

impl GroupsConfig {
    /// The broker's defaults (`GroupConfig::default()`, the host's and the
    /// service's constants), timeouts divided by [`TIME_SCALE`] except
    /// the commit timeout (divided by 5: it must outlast a few
    /// replication round trips of the simulated network).
    pub fn sim() -> GroupsConfig {
        let base = GroupConfig::default();
        let scale = TIME_SCALE as u32;
        let group = GroupConfig {
            session_timeout_min_ms: base.session_timeout_min_ms / scale,
            initial_rebalance_delay_ms: base.initial_rebalance_delay_ms / scale,
            ..base
        };
        GroupsConfig {
            group,
            parked_max: 1_024,
            clients_max: 256,
            commit_timeout_ms: OFFSETS_COMMIT_TIMEOUT.as_millis() as u64 / 5,
            load_delay_ms: 20,
            load_retry_min_ms: LOAD_RETRY_MIN.as_millis() as u64 / TIME_SCALE,
            load_retry_max_ms: LOAD_RETRY_MAX.as_millis() as u64 / TIME_SCALE,
            replay_read_bytes: REPLAY_READ_BYTES,
        }
    }
}

/// What [`NodeGroups`] asks the world to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupOut {
    /// Send `GroupMsg::Reply { req, body }` to client `client`.
    Reply {
        client: u32,
        req: u64,
        body: GroupResponse,
    },
}

/// Counters of one node's groups (for the run's stats; [`GroupStats::add`]
/// sums them over nodes and restarts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupStats {
    pub requests: u64,
    /// Dropped by the connection model (duplicates, reordered, from
    /// before this start).
    pub stale_requests: u64,
    pub loads: u64,
    pub load_failures: u64,
    pub records_replayed: u64,
    pub unloads: u64,
    pub appends: u64,
    pub appends_failed: u64,
    /// Group requests refused NOT_COORDINATOR because the node's lease
    /// did not hold.
    pub unleased: u64,
}

impl GroupStats {
    pub fn add(&mut self, other: &GroupStats) {
        self.requests += other.requests;
        self.stale_requests += other.stale_requests;
        self.loads += other.loads;
        self.load_failures += other.load_failures;
        self.records_replayed += other.records_replayed;
        self.unloads += other.unloads;
        self.appends += other.appends;
        self.appends_failed += other.appends_failed;
        self.unleased += other.unleased;
    }
}

/// Names one load of an offsets partition's groups (the host's `LoadId`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct LoadId(u64);

#[derive(Debug)]
enum Slot {
    /// Replayed at `at_ms`; requests answer COORDINATOR_LOAD_IN_PROGRESS.
    Loading {
        load: LoadId,
        leader_epoch: LeaderEpoch,
        at_ms: u64,
        backoff_ms: u64,
    },
    Loaded {
        load: LoadId,
        leader_epoch: LeaderEpoch,
        coordinator: Box<Coordinator>,
    },
}

impl Slot {
    fn leader_epoch(&self) -> LeaderEpoch {
        match self {
            Slot::Loading { leader_epoch, .. } | Slot::Loaded { leader_epoch, .. } => *leader_epoch,
        }
    }
}

/// A request waiting for its coordinator's answer.
#[derive(Debug)]
struct Parked {
    partition: u32,
    client: u32,
    req: u64,
}

/// An offsets append in flight.
#[derive(Debug)]
struct Write {
    partition: u32,
    load: LoadId,
    reply: ReplyId,
}

/// The offsets topic in the node's latest image.
#[derive(Debug, Clone)]
struct OffsetsView {
    /// Leader of each partition, if any.
    leaders: Vec<Option<NodeId>>,
    /// Registered, unfenced brokers.
    live: Vec<NodeId>,
}

/// One node's group coordination.
///
/// Lives in: the world's node, next to its controller and data plane;
/// dropped on a crash, new on a restart. Owns: one [`Coordinator`] per
/// `__consumer_offsets` partition this node leads (loading or loaded), the
/// requests parked on them (at most `parked_max`), the offsets appends in
/// flight, and the connection model's last request id per client.
#[derive(Debug)]
pub struct NodeGroups {
    node: NodeId,
    config: GroupsConfig,
    /// Mixed with each load's id into its coordinator's member-id nonce.
    nonce: u64,
    /// World time of this start: requests sent before it are dropped.
    started_ms: u64,
    view: Option<OffsetsView>,
    slots: BTreeMap<u32, Slot>,
    next_load: u64,
    waiting: BTreeMap<ReplyId, Parked>,
    next_reply: u64,
    writes: BTreeMap<u64, Write>,
    next_write: u64,
    /// Client → the last request id served (the connection model).
    last_req: BTreeMap<u32, u64>,
    stats: GroupStats,
    /// Whether the node's broker lease holds (`GroupHost::coordinating`):
    /// set by the world from the node's controller
    /// (`SimController::lease_holds`) before every call (true until then,
    /// for harnesses without a controller); while false every group
    /// request but FindCoordinator answers NOT_COORDINATOR.
    pub leased: bool,
}

impl NodeGroups {
    /// `started_ms` is the world's time now (not the node's clock).
    pub fn new(node: NodeId, config: GroupsConfig, rng: &mut SimRng, started_ms: u64) -> Self {
        config.group.check();
        assert!(config.parked_max > 0);
        assert!(config.clients_max > 0);
        assert!(config.load_retry_min_ms > 0);
        assert!(config.load_retry_min_ms <= config.load_retry_max_ms);
        NodeGroups {
            node,
            config,
            nonce: rng.next_u64(),
            started_ms,
            view: None,
            slots: BTreeMap::new(),
            next_load: 0,
            waiting: BTreeMap::new(),
            next_reply: 0,
            writes: BTreeMap::new(),
            next_write: 0,
            last_req: BTreeMap::new(),
            stats: GroupStats::default(),
            leased: true,
        }
    }

    pub fn stats(&self) -> &GroupStats {
        &self.stats
    }

    /// The offsets partitions with a slot here, and whether each is loaded.
    pub fn offsets_partitions(&self) -> Vec<(u32, bool)> {
        self.slots
            .iter()
            .map(|(p, s)| (*p, matches!(s, Slot::Loaded { .. })))
            .collect()
    }

    /// The committed offsets a loaded coordinator holds for `group_id`
    /// (`None` while the group's partition is not loaded here).
    pub fn committed(
        &self,
        group_id: &str,
        partitions: &[TopicPartition],
    ) -> Option<Vec<(TopicPartition, Option<CommittedOffset>)>> {
        let partition = self.partition_of(group_id).ok()?;
        match self.slots.get(&partition)? {
            Slot::Loaded { coordinator, .. } => {
                Some(coordinator.offset_fetch(group_id, Some(partitions)))
            }
            Slot::Loading { .. } => None,
        }
    }

    /// The node applied `image`: remembers where groups live (for
    /// FindCoordinator), drops the groups of offsets partitions no longer
    /// led here and starts loading those led here at a new leader epoch
    /// (the host's `follow_catalog`). Call after the data plane applied it.
    pub fn apply_image(&mut self, image: &MetadataImage, now_ms: u64, out: &mut Vec<GroupOut>) {
        let Some(topic) = image.get(OFFSETS_TOPIC) else {
            self.view = None;
            let held: Vec<u32> = self.slots.keys().copied().collect();
            for partition in held {
                self.offsets_leadership(partition, None, now_ms, out);
            }
            return;
        };
        self.view = Some(OffsetsView {
            leaders: topic.partitions.iter().map(|p| p.leader).collect(),
            live: image.live_brokers().map(|b| b.node).collect(),
        });
        let led: BTreeMap<u32, LeaderEpoch> = topic
            .partitions
            .iter()
            .enumerate()
            .filter(|(_, p)| p.leader == Some(self.node))
            .map(|(i, p)| (i as u32, p.leader_epoch))
            .collect();
        let held: Vec<u32> = self.slots.keys().copied().collect();
        for partition in held {
            if !led.contains_key(&partition) {
                self.offsets_leadership(partition, None, now_ms, out);
            }
        }
        for (partition, epoch) in led {
            self.offsets_leadership(partition, Some(epoch), now_ms, out);
        }
    }

    /// This node's leadership of `__consumer_offsets-{partition}` changed
    /// (the host's `offsets_leadership`): `Some(epoch)` — it leads at
    /// `epoch`; `None` — it does not. The same epoch again changes nothing;
    /// a new epoch reloads.
    pub fn offsets_leadership(
        &mut self,
        partition: u32,
        leader_epoch: Option<LeaderEpoch>,
        now_ms: u64,
        out: &mut Vec<GroupOut>,
    ) {
        let current = self.slots.get(&partition).map(Slot::leader_epoch);
        if current == leader_epoch {
            return;
        }
        if current.is_some() {
            self.unload(partition, out);
        }
        if let Some(leader_epoch) = leader_epoch {
            let load = LoadId(self.next_load);
            self.next_load += 1;
            self.slots.insert(
                partition,
                Slot::Loading {
                    load,
                    leader_epoch,
                    at_ms: now_ms + self.config.load_delay_ms,
                    backoff_ms: self.config.load_retry_min_ms,
                },
            );
        }
    }

    /// Drops `partition`'s groups: parked requests are answered
    /// NOT_COORDINATOR, appends in flight are forgotten (their completion
    /// is ignored).
    fn unload(&mut self, partition: u32, out: &mut Vec<GroupOut>) {
        if self.slots.remove(&partition).is_none() {
            return;
        }
        self.stats.unloads += 1;
        let parked: Vec<ReplyId> = self
            .waiting
            .iter()
            .filter(|(_, p)| p.partition == partition)
            .map(|(r, _)| *r)
            .collect();
        for reply in parked {
            if let Some(p) = self.waiting.remove(&reply) {
                out.push(GroupOut::Reply {
                    client: p.client,
                    req: p.req,
                    body: GroupResponse::Unavailable(ErrorCode::NotCoordinator),
                });
            }
        }
        self.writes.retain(|_, w| w.partition != partition);
    }

    /// When [`NodeGroups::poll`] must next run (a load due or a
    /// coordinator's timer), if anything is timed.
    pub fn next_deadline(&self) -> Option<u64> {
        self.slots
            .values()
            .filter_map(|slot| match slot {
                Slot::Loading { at_ms, .. } => Some(*at_ms),
                Slot::Loaded { coordinator, .. } => coordinator.next_deadline().map(|m| m.0),
            })
            .min()
    }

    /// Runs what is due at `now_ms`: loads (replays) and the coordinators'
    /// timers.
    pub fn poll(&mut self, now_ms: u64, log: &mut impl OffsetsLog, out: &mut Vec<GroupOut>) {
        let due: Vec<u32> = self
            .slots
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Loading { at_ms, .. } if *at_ms <= now_ms))
            .map(|(p, _)| *p)
            .collect();
        for partition in due {
            self.load(partition, now_ms, log);
        }
        let ticking: Vec<u32> = self
            .slots
            .iter_mut()
            .filter_map(|(p, slot)| match slot {
                Slot::Loaded { coordinator, .. }
                    if coordinator.next_deadline().is_some_and(|at| at.0 <= now_ms) =>
                {
                    coordinator.handle_tick(Millis(now_ms));
                    Some(*p)
                }
                _ => None,
            })
            .collect();
        for partition in ticking {
            self.drain(partition, now_ms, log, out);
        }
    }

    /// Replays `partition`'s log into a new coordinator and serves it; on
    /// an error retries later with backoff (the host's `load_task`).
    fn load(&mut self, partition: u32, now_ms: u64, log: &impl OffsetsLog) {
        let Some(Slot::Loading {
            load,
            leader_epoch,
            backoff_ms,
            ..
        }) = self.slots.get(&partition)
        else {
            return;
        };
        let (load, leader_epoch, backoff_ms) = (*load, *leader_epoch, *backoff_ms);
        let nonce = self.nonce.wrapping_add(load.0);
        match replay(&self.config, nonce, partition, log) {
            Ok((coordinator, records)) => {
                self.stats.loads += 1;
                self.stats.records_replayed += records;
                self.slots.insert(
                    partition,
                    Slot::Loaded {
                        load,
                        leader_epoch,
                        coordinator: Box::new(coordinator),
                    },
                );
            }
            Err(error) => {
                tracing::debug!(node = self.node.0, partition, %error, "offsets load failed; retrying");
                self.stats.load_failures += 1;
                self.slots.insert(
                    partition,
                    Slot::Loading {
                        load,
                        leader_epoch,
                        at_ms: now_ms + backoff_ms,
                        backoff_ms: (backoff_ms * 2).min(self.config.load_retry_max_ms),
                    },
                );
            }
        }
    }

    fn partition_of(&self, group_id: &str) -> Result<u32, ErrorCode> {
        match &self.view {
            Some(view) if !view.leaders.is_empty() => Ok(offsets_log::partition_for(
                group_id,
                view.leaders.len() as u32,
            )),
            _ => Err(ErrorCode::CoordinatorNotAvailable),
        }
    }

    /// FindCoordinator from this node's image (the engine's
    /// `ClusterView::coordinator`): the live leader of the group's
    /// offsets partition.
    pub fn find_coordinator(&self, group_id: &str) -> Result<NodeId, ErrorCode> {
        let partition = self.partition_of(group_id)?;
        let view = self
            .view
            .as_ref()
            .ok_or(ErrorCode::CoordinatorNotAvailable)?;
        let leader = view
            .leaders
            .get(partition as usize)
            .copied()
            .flatten()
            .ok_or(ErrorCode::CoordinatorNotAvailable)?;
        if view.live.contains(&leader) {
            Ok(leader)
        } else {
            Err(ErrorCode::CoordinatorNotAvailable)
        }
    }

    /// A request from client `client` (module docs: the connection model
    /// drops duplicates, reordered and pre-start requests).
    #[allow(clippy::too_many_arguments)]
    pub fn handle(
        &mut self,
        client: u32,
        req: u64,
        sent_ms: u64,
        body: GroupRequest,
        now_ms: u64,
        log: &mut impl OffsetsLog,
        out: &mut Vec<GroupOut>,
    ) {
        if sent_ms < self.started_ms || self.last_req.get(&client).is_some_and(|l| req <= *l) {
            self.stats.stale_requests += 1;
            return;
        }
        let reply = |body| GroupOut::Reply { client, req, body };
        if !self.last_req.contains_key(&client) && self.last_req.len() >= self.config.clients_max {
            out.push(reply(GroupResponse::Unavailable(
                ErrorCode::CoordinatorNotAvailable,
            )));
            return;
        }
        self.last_req.insert(client, req);
        self.stats.requests += 1;
        if let GroupRequest::FindCoordinator { group_id } = &body {
            out.push(reply(GroupResponse::Coordinator(
                self.find_coordinator(group_id),
            )));
            return;
        }
        let partition = match self.partition_of(body.group_id()) {
            Ok(p) => p,
            Err(code) => return out.push(reply(GroupResponse::Unavailable(code))),
        };
        if !self.leased {
            self.stats.unleased += 1;
            return out.push(reply(GroupResponse::Unavailable(ErrorCode::NotCoordinator)));
        }
        let coordinator = match self.slots.get_mut(&partition) {
            None => return out.push(reply(GroupResponse::Unavailable(ErrorCode::NotCoordinator))),
            Some(Slot::Loading { .. }) => {
                return out.push(reply(GroupResponse::Unavailable(
                    ErrorCode::CoordinatorLoadInProgress,
                )))
            }
            Some(Slot::Loaded { coordinator, .. }) => coordinator,
        };
        if let GroupRequest::Fetch {
            group_id,
            partitions,
        } = &body
        {
            let fetched = coordinator.offset_fetch(group_id, Some(partitions));
            return out.push(reply(GroupResponse::Fetch(fetched)));
        }
        if self.waiting.len() >= self.config.parked_max {
            return out.push(reply(GroupResponse::Unavailable(
                ErrorCode::CoordinatorNotAvailable,
            )));
        }
        let id = ReplyId(self.next_reply);
        self.next_reply += 1;
        self.waiting.insert(
            id,
            Parked {
                partition,
                client,
                req,
            },
        );
        let now = Millis(now_ms);
        match body {
            GroupRequest::Join(r) => coordinator.handle_join(now, id, r),
            GroupRequest::Sync(r) => coordinator.handle_sync(now, id, r),
            GroupRequest::Heartbeat(r) => coordinator.handle_heartbeat(now, id, r),
            GroupRequest::Leave { group_id, members } => {
                coordinator.handle_leave(now, id, &group_id, members)
            }
            GroupRequest::Commit(r) => coordinator.handle_offset_commit(now, id, r),
            GroupRequest::FindCoordinator { .. } | GroupRequest::Fetch { .. } => {
                unreachable!("answered above")
            }
        }
        self.drain(partition, now_ms, log, out);
    }

    /// The offsets append `write_id` completed: `Ok` durable (acks=all),
    /// or the produce's error. Ignored when its partition was unloaded or
    /// reloaded meanwhile (its request was answered NOT_COORDINATOR then).
    pub fn appended(
        &mut self,
        write_id: u64,
        result: Result<(), ErrorCode>,
        now_ms: u64,
        log: &mut impl OffsetsLog,
        out: &mut Vec<GroupOut>,
    ) {
        let Some(write) = self.writes.remove(&write_id) else {
            return;
        };
        if result.is_err() {
            self.stats.appends_failed += 1;
        }
        let Some(Slot::Loaded {
            load, coordinator, ..
        }) = self.slots.get_mut(&write.partition)
        else {
            return;
        };
        if *load != write.load {
            return;
        }
        coordinator.offsets_persisted(write.reply, result);
        self.drain(write.partition, now_ms, log, out);
    }

    /// Carries out the actions of `partition`'s coordinator (the host's
    /// `drain`).
    fn drain(
        &mut self,
        partition: u32,
        now_ms: u64,
        log: &mut impl OffsetsLog,
        out: &mut Vec<GroupOut>,
    ) {
        loop {
            let Some(Slot::Loaded {
                coordinator, load, ..
            }) = self.slots.get_mut(&partition)
            else {
                return;
            };
            let load = *load;
            let Some(action) = coordinator.poll_action() else {
                return;
            };
            let (reply, body) = match action {
                Action::Join { reply, response } => (reply, GroupResponse::Join(response)),
                Action::Sync { reply, response } => (reply, GroupResponse::Sync(response)),
                Action::Heartbeat { reply, error } => (reply, GroupResponse::Heartbeat(error)),
                Action::Leave { reply, response } => (reply, GroupResponse::Leave(response)),
                Action::OffsetCommit { reply, results } => (reply, GroupResponse::Commit(results)),
                Action::PersistOffsets {
                    reply,
                    group_id,
                    offsets,
                } => {
                    let too_long = |s: &str| s.len() > STRING_BYTES_MAX;
                    if too_long(&group_id)
                        || offsets
                            .iter()
                            .any(|(tp, o)| too_long(&tp.topic) || too_long(&o.metadata))
                    {
                        // As the host when `commit_batch` refuses.
                        coordinator
                            .offsets_persisted(reply, Err(ErrorCode::InvalidCommitOffsetSize));
                        continue;
                    }
                    let records = offsets
                        .iter()
                        .map(|(tp, o)| {
                            (
                                Bytes::from(offsets_log::encode_key(&group_id, tp)),
                                Bytes::from(offsets_log::encode_value(o, now_ms as i64)),
                            )
                        })
                        .collect();
                    let write_id = self.next_write;
                    self.next_write += 1;
                    self.writes.insert(
                        write_id,
                        Write {
                            partition,
                            load,
                            reply,
                        },
                    );
                    self.stats.appends += 1;
                    log.append(
                        partition,
                        records,
                        write_id,
                        self.config.commit_timeout_ms,
                        now_ms,
                    );
                    continue;
                }
                Action::PersistTombstones { .. } | Action::DeleteGroup { .. } => {
                    unreachable!("the simulation sends no DeleteGroups")
                }
            };
            if let Some(p) = self.waiting.remove(&reply) {
                out.push(GroupOut::Reply {
                    client: p.client,
                    req: p.req,
                    body,
                });
            }
        }
    }
}

/// Replays `partition`'s log from its start to its end into a new
/// coordinator (the host's `replay`): the latest record per key wins,
/// tombstones delete, undecodable records are skipped. Returns the
/// records loaded.
fn replay(
    config: &GroupsConfig,
    nonce: u64,
    partition: u32,
    log: &impl OffsetsLog,
) -> Result<(Coordinator, u64), String> {
    let mut coordinator = Coordinator::new(config.group.clone(), nonce);
    let mut loaded = 0u64;
    let mut scratch = Vec::new();
    let (mut offset, _) = log
        .bounds(partition)
        .map_err(|code| format!("{OFFSETS_TOPIC}-{partition} bounds: {code:?}"))?;
    loop {
        let (_, end) = log
            .bounds(partition)
            .map_err(|code| format!("{OFFSETS_TOPIC}-{partition} bounds: {code:?}"))?;
        if offset >= end {
            break;
        }
        let batches = log
            .read(partition, offset, config.replay_read_bytes)
            .map_err(|code| format!("{OFFSETS_TOPIC}-{partition} at {offset}: {code:?}"))?;
        if batches.is_empty() {
            return Err(format!(
                "{OFFSETS_TOPIC}-{partition} at {offset}: nothing read before the log end {end}"
            ));
        }
        for bytes in &batches {
            let (batch, _) = BatchView::parse(bytes).map_err(|e| e.to_string())?;
            let next = batch.header().next_offset().get() as i64;
            if next <= offset {
                return Err(format!(
                    "{OFFSETS_TOPIC}-{partition}: a read at {offset} returned a batch ending at {next}"
                ));
            }
            offset = next;
            let records = batch
                .records(&mut scratch, REPLAY_BATCH_BYTES_MAX)
                .map_err(|e| e.to_string())?;
            for record in records.iter() {
                match offsets_log::decode(record.key(), record.value()) {
                    Ok(r) => {
                        coordinator.load_offset(&r.group_id, r.partition, r.offset);
                        loaded += 1;
                    }
                    Err(error) => tracing::warn!(partition, %error, "skipping an offsets record"),
                }
            }
        }
    }
    Ok((coordinator, loaded))
}

#[cfg(test)]
mod tests;
