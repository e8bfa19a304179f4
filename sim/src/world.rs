//! The simulated world: time, the network between nodes and clients,
//! the nodes (crashed, paused, running), the nemesis that injects faults,
//! the workload's clients, and the checker's observations — one event
//! queue ordered by (time, sequence), one seeded generator per purpose.
//! Nothing here reads the wall clock, spawns a thread or iterates a
//! `HashMap`: a run is a function of its [`SimConfig`].

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use fjord_broker::controller::commands::{
    Answer, ControllerCommand, ControllerReply, CreateTopicSpec,
};
use fjord_broker::controller::driver::ELECTION_TICKS;
use fjord_broker::controller::quorum::WriteFault;
use fjord_broker::controller::state::ControllerConfig;
use fjord_broker::group::offsets_log::OFFSETS_TOPIC;
use fjord_broker::metadata::image::MetadataImage;
use fjord_broker::partition::state::Role;
use fjord_broker::topic::TopicConfig;
use fjord_schema::{ErrorCode, NodeId};
use fjord_storage::LogConfig;

use crate::checker::{Ack, Checker, FinalReplica};
use crate::client::{Client, ClientOut, ClientReply, ClientRequest, Kind};
use crate::controller::{CtlConfig, CtlMsg, CtlOut, Origin, SimController, Unavailable};
use crate::data::{ConsumerFetch, DataConfig, NodeData, Out, ProduceRequest, ReplicaMsg};
use crate::disk::NodeDisk;
use crate::groups::{
    group_workload, GroupMember, GroupMsg, GroupOut, GroupResponse, GroupsConfig, MemberOut,
    NodeGroups, OffsetsLog,
};
use crate::rng::SimRng;
use fjord_broker::group::offsets_log::partition_for;

/// How one run is set up. Every field has a default ([`SimConfig::new`]);
/// the seed decides the rest.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    /// Simulated nodes (3–5); the first three vote in the metadata
    /// quorum, the others are learners.
    pub nodes: u32,
    /// Simulated time with faults and workload, in ms; then every fault
    /// heals and the cluster gets `quiet_ms` to converge before the final
    /// checks.
    pub duration_ms: u64,
    pub quiet_ms: u64,
    /// Inject faults (off: a fault-free run, the baseline).
    pub faults: bool,
    /// Raft tick (the broker's `raft_tick_ms`).
    pub tick_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub session_timeout_ms: u64,
    /// The broker's `broker_lease_margin_ms` (one election timeout, as
    /// the broker's default is for its 100 ms tick).
    pub lease_margin_ms: u64,
    /// A deliberate bug, to show the checker catches it (never set by a
    /// campaign).
    pub mutant: Option<Mutant>,
}

/// Deliberate bugs the checker must catch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutant {
    /// Every acks=all produce reaches the broker as acks=1: acknowledged
    /// before the followers have it.
    AcksAllAsLeaderOnly,
    /// No broker lease: a node leads and coordinates by its image alone,
    /// cut off from the quorum or not (the broker before gap B was fixed).
    NoBrokerLease,
}

impl SimConfig {
    /// The defaults for `seed`: 3–5 nodes (from the seed), 20 s of faults
    /// and load, 15 s of quiet.
    pub fn new(seed: u64) -> SimConfig {
        let mut rng = SimRng::new(seed).fork("config");
        SimConfig {
            seed,
            nodes: rng.range(3, 5) as u32,
            duration_ms: 20_000,
            quiet_ms: 15_000,
            faults: true,
            tick_ms: 50,
            heartbeat_interval_ms: 250,
            session_timeout_ms: 1_500,
            lease_margin_ms: ELECTION_TICKS as u64 * 50,
            mutant: None,
        }
    }
}

/// Who sends or receives a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Addr {
    Node(NodeId),
    Client(u32),
}

/// A message on the simulated network.
#[derive(Debug, Clone)]
pub enum Msg {
    Ctl(CtlMsg),
    /// Replication between two nodes' data planes.
    Data(ReplicaMsg),
    /// A group member's request to a node, or the node's answer.
    Group(GroupMsg),
    /// An admin client's command to a node (which submits it).
    Admin {
        req: u64,
        command: ControllerCommand,
    },
    AdminReply {
        req: u64,
        result: Result<Answer, Unavailable>,
    },
    /// A data client's request to a node, and the node's answer.
    Client {
        req: u64,
        request: ClientRequest,
    },
    ClientReply {
        req: u64,
        reply: ClientReply,
    },
}

/// Faults in force and counted.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub events: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub duplicated: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    pub admin_ok: u64,
    pub admin_failed: u64,
    /// Metadata images applied (over all nodes).
    pub images: u64,
    /// Elections of partition leaders seen (distinct (partition, epoch)).
    pub leader_epochs: u64,
    /// Produce batches acknowledged, by acks.
    pub acked_all: u64,
    pub acked_leader: u64,
    /// Batches producers gave up on (indeterminate).
    pub gave_up: u64,
    /// Records read by consumers.
    pub read: u64,
    /// acks=1 records acknowledged and missing at the end (allowed).
    pub leader_only_lost: u64,
    /// Group offset commits acknowledged.
    pub group_commits: u64,
    /// OffsetFetch answers of a coordinator the metadata had deposed
    /// (held to every rule: gap B is fixed by the broker lease).
    pub deposed_group_answers: u64,
    /// Metadata-log writes that failed on a full disk, and reopens of
    /// the log after one (over all nodes and starts).
    pub metadata_log_write_failures: u64,
    pub metadata_log_reopens: u64,
    /// Client and group requests a node refused because its broker lease
    /// did not hold.
    pub unleased_refusals: u64,
}

impl Stats {
    /// The counters other than faults and messages, by name (for the
    /// campaign's summary).
    pub fn totals(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("admin commands answered", self.admin_ok),
            ("admin commands failed or unanswered", self.admin_failed),
            ("metadata images applied", self.images),
            ("partition leader epochs", self.leader_epochs),
            ("acks=all batches acknowledged", self.acked_all),
            ("acks=1 batches acknowledged", self.acked_leader),
            ("acks=1 records lost (allowed)", self.leader_only_lost),
            ("batches given up (indeterminate)", self.gave_up),
            ("records read by consumers", self.read),
            ("group offset commits acknowledged", self.group_commits),
            (
                "group fetches answered by a deposed coordinator",
                self.deposed_group_answers,
            ),
            (
                "metadata log writes failed (full disk)",
                self.metadata_log_write_failures,
            ),
            ("metadata logs reopened", self.metadata_log_reopens),
            (
                "requests refused without a broker lease",
                self.unleased_refusals,
            ),
        ]
    }
}

/// The outcome of one run.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub seed: u64,
    pub nodes: u32,
    /// What the checker found; empty when the run held every invariant.
    pub violations: Vec<String>,
    pub stats: Stats,
}

#[derive(Debug)]
enum Event {
    Deliver {
        from: Addr,
        to: Addr,
        msg: Msg,
    },
    /// A node's periodic poll.
    Wake(usize),
    /// The nemesis decides the next fault.
    Nemesis,
    Heal(Heal),
    /// A client's next action.
    Client(u32),
}

#[derive(Debug, Clone)]
enum Heal {
    /// Restore the cut links.
    Links(Vec<(NodeId, NodeId)>),
    Restart(usize),
    Resume(usize),
    /// The node's disk is fast and has room again.
    Disk(usize),
}

#[derive(Debug)]
struct Node {
    id: NodeId,
    dir: PathBuf,
    ctl: Option<SimController>,
    /// The data plane, while the node runs.
    data: Option<NodeData>,
    /// The data plane's disk while the node is down.
    disk: Option<NodeDisk>,
    /// The metadata log's side of a full disk (the log lives in the same
    /// data dir): its writes fail while on. Kept across restarts.
    metadata_full: WriteFault,
    /// The group coordinators, while the node runs.
    groups: Option<NodeGroups>,
    /// Paused (SIGSTOP): neither timers nor messages run until then.
    paused_until: Option<u64>,
    /// Its steady clock runs ahead of the world's by this (forward jumps).
    skew_ms: u64,
    /// The image last seen applied here (by pointer).
    seen: Option<Arc<MetadataImage>>,
    /// The data plane follows images and serves (this start).
    data_started: bool,
    restarts: u64,
}

/// Network behaviour for the nemesis to change.
#[derive(Debug, Clone)]
struct Net {
    /// Directed links that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    loss: f64,
    duplicate: f64,
    delay_min_ms: u64,
    delay_max_ms: u64,
}

/// Poll period of every node (timers are checked this often).
const POLL_MS: u64 = 10;

/// The world of one run.
#[derive(Debug)]
pub struct World {
    config: SimConfig,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Event>,
    nodes: Vec<Node>,
    net: Net,
    net_rng: SimRng,
    nemesis_rng: SimRng,
    node_rng: SimRng,
    client_rng: SimRng,
    /// The run's Raft log directories (tmpfs when there is one).
    _dir: tempfile::TempDir,
    ctl_config: ControllerConfig,
    data_config: DataConfig,
    /// Produces in a node's data plane: its id there → (client, request,
    /// topic, partition, the leader epoch the node had when it took the
    /// request: the epoch it appends in, and so acknowledges in, however
    /// late the answer comes).
    produces: BTreeMap<u64, (u32, u64, String, u32, u32)>,
    /// Offsets appends of a node's group coordinators: produce id →
    /// (node index, write id).
    group_writes: BTreeMap<u64, (usize, u64)>,
    next_produce: u64,
    members: Vec<GroupMember>,
    admin: AdminClient,
    clients: Vec<Client>,
    checker: Checker,
    stats: Stats,
    /// Faults stop and heal from here on.
    quiet: bool,
}

/// The admin workload: topics created and deleted, elections asked.
#[derive(Debug, Default)]
struct AdminClient {
    next_req: u64,
    in_flight: BTreeMap<u64, ControllerCommand>,
    topics: u32,
}

const ADMIN: u32 = 0;

fn controller_config(config: &SimConfig) -> ControllerConfig {
    let base = LogConfig::default();
    ControllerConfig {
        voters: (1..=config.nodes.min(3)).map(NodeId).collect(),
        defaults: TopicConfig::from_log_config(&base),
        base,
        default_partitions: 2,
        default_replication_factor: 3,
        offsets_partitions: 3,
        offsets_replication_factor: 3,
        partitions_max: 64,
        session_timeout_ms: config.session_timeout_ms,
        producer_id_block_size: 100,
        leader_rebalance_interval_ms: 5_000,
    }
}

/// The data plane's settings: the broker's, with the lag time the
/// real-process tests use (a follower gone for 2 s leaves the ISR).
fn data_config() -> DataConfig {
    let mut config = DataConfig {
        replica_lag_time_max_ms: 2_000,
        ..DataConfig::default()
    };
    config.fetcher.request_timeout_ms = 5_000;
    config.fetcher.backoff_ms = 200;
    config.fetcher.backoff_max_ms = 2_000;
    config
}

impl World {
    pub fn new(config: SimConfig) -> World {
        let mut root = SimRng::new(config.seed);
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::Builder::new()
                .prefix("fjord-sim-")
                .tempdir_in(shm)
        } else {
            tempfile::Builder::new().prefix("fjord-sim-").tempdir()
        }
        .expect("a temporary directory for the simulated Raft logs");
        let nodes = (1..=config.nodes)
            .map(|n| Node {
                id: NodeId(n),
                dir: dir.path().join(format!("n{n}")),
                ctl: None,
                data: None,
                disk: Some(NodeDisk::new()),
                metadata_full: WriteFault::default(),
                groups: None,
                paused_until: None,
                skew_ms: 0,
                seen: None,
                data_started: false,
                restarts: 0,
            })
            .collect();
        let mut world = World {
            ctl_config: controller_config(&config),
            data_config: data_config(),
            produces: BTreeMap::new(),
            group_writes: BTreeMap::new(),
            next_produce: 1,
            members: Vec::new(),
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            nodes,
            net: Net {
                cut: BTreeSet::new(),
                loss: 0.0,
                duplicate: 0.0,
                delay_min_ms: 1,
                delay_max_ms: 5,
            },
            net_rng: root.fork("net"),
            nemesis_rng: root.fork("nemesis"),
            node_rng: root.fork("nodes"),
            client_rng: root.fork("clients"),
            _dir: dir,
            admin: AdminClient::default(),
            clients: Vec::new(),
            checker: Checker::default(),
            stats: Stats::default(),
            quiet: false,
            config,
        };
        for i in 0..world.nodes.len() {
            world.start_node(i);
            let first = world.node_rng.range(0, POLL_MS);
            world.schedule(first, Event::Wake(i));
        }
        if world.config.faults {
            let first = world.nemesis_rng.range(500, 3_000);
            world.schedule(first, Event::Nemesis);
        }
        world.schedule(1_000, Event::Client(ADMIN));
        let kinds = [
            Kind::IdempotentAllAcks,
            Kind::IdempotentAllAcks,
            Kind::AllAcks,
            Kind::LeaderAck,
            Kind::Consumer,
            Kind::Consumer,
        ];
        for (n, kind) in kinds.into_iter().enumerate() {
            let id = n as u32 + 1;
            let rng = world.client_rng.fork(&format!("client {id}"));
            world
                .clients
                .push(Client::new(id, kind, world.config.nodes, rng));
            let first = world.client_rng.range(1_500, 3_000);
            world.schedule(first, Event::Client(id));
        }
        // Two consumer groups of three members, client ids after the data
        // clients'.
        let first_member = world.clients.len() as u32 + 1;
        let node_ids = world.node_ids();
        world.members = group_workload(&node_ids, first_member, 2, 3, &mut world.client_rng);
        for n in 0..world.members.len() {
            let first = world.client_rng.range(1_500, 3_000);
            world.schedule(first, Event::Client(first_member + n as u32));
        }
        world
    }

    fn schedule(&mut self, after_ms: u64, event: Event) {
        let seq = self.seq;
        self.seq += 1;
        self.queue.push(Reverse((self.now + after_ms, seq)));
        self.events.insert(seq, event);
    }

    /// Whether node `i` serves clients and replication (see
    /// `SimController::serving`); the first time it does, its data plane
    /// takes the image it has.
    fn serving(&mut self, i: usize) -> bool {
        let Some(ctl) = self.nodes[i].ctl.as_mut() else {
            return false;
        };
        if !ctl.serving() {
            return false;
        }
        if !self.nodes[i].data_started {
            tracing::info!(node = i + 1, t = self.now, "sim: serving");
            self.nodes[i].data_started = true;
            self.nodes[i].seen = None;
            self.observe(i);
        }
        true
    }

    /// Hands node `i`'s broker lease (its controller's, on its clock) to
    /// its data plane and group coordinators, before any call on them (as
    /// every shard reads the broker's `BrokerLease`). Always held under
    /// [`Mutant::NoBrokerLease`].
    fn sync_lease(&mut self, i: usize) {
        let now = self.local_now(i);
        let node = &mut self.nodes[i];
        let leased = self.config.mutant == Some(Mutant::NoBrokerLease)
            || node.ctl.as_ref().is_some_and(|c| c.lease_holds(now));
        if let Some(data) = node.data.as_mut() {
            data.leased = leased;
        }
        if let Some(groups) = node.groups.as_mut() {
            groups.leased = leased;
        }
    }

    /// Adds node `i`'s refusals for want of a lease to the run's stats
    /// (before a crash drops its data plane and coordinators, and at the
    /// end).
    fn retire_counters(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(data) = node.data.as_mut() {
            self.stats.unleased_refusals += std::mem::take(&mut data.unleased);
        }
        if let Some(groups) = node.groups.as_ref() {
            self.stats.unleased_refusals += groups.stats().unleased;
        }
    }

    fn local_now(&self, i: usize) -> u64 {
        self.now + self.nodes[i].skew_ms
    }

    fn start_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        std::fs::create_dir_all(&node.dir).expect("the simulated node's directory");
        let config = CtlConfig {
            node: node.id,
            voters: self.ctl_config.voters.clone(),
            controller: self.ctl_config.clone(),
            tick_ms: self.config.tick_ms,
            heartbeat_interval_ms: self.config.heartbeat_interval_ms,
            metadata_write_fault: node.metadata_full.clone(),
            lease_margin_ms: self.config.lease_margin_ms,
        };
        let now = self.now + node.skew_ms;
        let disk = node.disk.take().unwrap_or_default();
        node.data = Some(NodeData::open(node.id, self.data_config, disk, now));
        node.groups = Some(NodeGroups::new(
            node.id,
            GroupsConfig::sim(),
            &mut self.node_rng,
            self.now,
        ));
        match SimController::open(config, &node.dir, now, &mut self.node_rng) {
            Ok(ctl) => node.ctl = Some(ctl),
            Err(error) => {
                self.checker.violation(
                    self.now,
                    format!("node {} cannot reopen: {error}", node.id.0),
                );
            }
        }
        node.seen = None;
        node.data_started = false;
    }

    /// Runs to the end and checks.
    pub fn run(mut self) -> Outcome {
        let end = self.config.duration_ms + self.config.quiet_ms;
        while let Some(Reverse((at, seq))) = self.queue.pop() {
            if at > end {
                break;
            }
            self.now = at;
            if !self.quiet && at >= self.config.duration_ms {
                self.quiet = true;
                self.heal_everything();
            }
            let Some(event) = self.events.remove(&seq) else {
                continue;
            };
            self.stats.events += 1;
            self.handle(event);
        }
        self.now = end;
        self.final_checks();
        Outcome {
            seed: self.config.seed,
            nodes: self.config.nodes,
            violations: self.checker.violations().to_vec(),
            stats: self.stats,
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Wake(i) => {
                self.schedule(POLL_MS, Event::Wake(i));
                let _span = tracing::info_span!("node", n = i + 1, t = self.now).entered();
                if self.nodes[i].paused_until.is_some() {
                    return;
                }
                let now = self.local_now(i);
                let mut out = Vec::new();
                if let Some(ctl) = self.nodes[i].ctl.as_mut() {
                    ctl.poll(now, &mut out);
                }
                self.node_out(i, out);
                if !self.serving(i) {
                    return;
                }
                self.data_step(i, |data, out| data.poll(now, out));
                self.groups_step(i, |groups, log, out| groups.poll(now, log, out));
            }
            Event::Deliver { from, to, msg } => self.deliver(from, to, msg),
            Event::Nemesis => {
                if !self.quiet {
                    self.nemesis();
                    let next = self.nemesis_rng.range(300, 2_500);
                    self.schedule(next, Event::Nemesis);
                }
            }
            Event::Heal(heal) => self.heal(heal),
            Event::Client(ADMIN) => self.admin_step(),
            Event::Client(id) => {
                let next = self.client_rng.range(5, 40);
                self.schedule(next, Event::Client(id));
                if self.quiet {
                    return;
                }
                if let Some(m) = self.member_index(id) {
                    let mut out = Vec::new();
                    self.members[m].step(self.now, &mut out);
                    self.member_out(id, out);
                    return;
                }
                let mut out = Vec::new();
                self.clients[id as usize - 1].step(self.now, &mut out);
                self.client_out(id, out);
            }
        }
    }

    fn deliver(&mut self, from: Addr, to: Addr, msg: Msg) {
        if let (Addr::Node(a), Addr::Node(b)) = (from, to) {
            if self.net.cut.contains(&(a, b)) {
                self.stats.dropped += 1;
                return;
            }
        }
        match to {
            Addr::Node(node) => {
                let i = (node.0 - 1) as usize;
                let _span = tracing::info_span!("node", n = node.0, t = self.now).entered();
                if let Some(until) = self.nodes[i].paused_until {
                    // Held in the socket buffers until it runs again.
                    let after = until.saturating_sub(self.now) + self.net_rng.range(0, 3);
                    self.schedule(after, Event::Deliver { from, to, msg });
                    return;
                }
                if self.nodes[i].ctl.is_none() {
                    self.stats.dropped += 1;
                    return;
                }
                self.stats.delivered += 1;
                let now = self.local_now(i);
                let mut out = Vec::new();
                match msg {
                    Msg::Ctl(msg) => {
                        let Addr::Node(from) = from else { return };
                        if let CtlMsg::Raft(batch) = &msg {
                            for m in batch {
                                tracing::trace!(from = from.0, kind = ?m.get_msg_type(), term = m.term, index = m.index, commit = m.commit, reject = m.reject, "sim: raft message");
                            }
                        }
                        if let Some(ctl) = self.nodes[i].ctl.as_mut() {
                            ctl.on_message(from, msg, now, &mut out);
                        }
                    }
                    Msg::Admin { req, command } => {
                        if let Some(ctl) = self.nodes[i].ctl.as_mut() {
                            ctl.submit(command, Origin::Client(req), now);
                            ctl.poll(now, &mut out);
                        }
                    }
                    Msg::Client { req, request } => {
                        let Addr::Client(client) = from else { return };
                        if !self.serving(i) {
                            // Not listening yet: the request is lost.
                            return;
                        }
                        self.client_request(i, client, req, request, &mut out);
                    }
                    Msg::Group(GroupMsg::Request { req, sent_ms, body }) => {
                        let Addr::Client(client) = from else { return };
                        tracing::debug!(client, req, ?body, "sim: group request");
                        if !self.serving(i) {
                            return;
                        }
                        self.groups_step(i, |groups, log, out| {
                            groups.handle(client, req, sent_ms, body, now, log, out)
                        });
                    }
                    Msg::Group(GroupMsg::Reply { .. }) => {}
                    Msg::Data(msg) => {
                        let Addr::Node(from) = from else { return };
                        if !self.serving(i) {
                            return;
                        }
                        self.data_step(i, |data, out| data.on_message(from, msg, now, out));
                    }
                    Msg::AdminReply { .. } | Msg::ClientReply { .. } => {}
                }
                self.node_out(i, out);
            }
            Addr::Client(ADMIN) => {
                self.stats.delivered += 1;
                if let Msg::AdminReply { req, result } = msg {
                    self.admin_answered(req, result);
                }
            }
            Addr::Client(id) => {
                self.stats.delivered += 1;
                if let (Msg::Group(msg), Some(m)) = (&msg, self.member_index(id)) {
                    let mut out = Vec::new();
                    self.members[m].on_reply(msg.clone(), self.now, &mut out);
                    self.member_out(id, out);
                    return;
                }
                let (Msg::ClientReply { req, reply }, Addr::Node(node)) = (msg, from) else {
                    return;
                };
                let mut out = Vec::new();
                self.clients[id as usize - 1].on_reply(self.now, node, req, reply, &mut out);
                self.client_out(id, out);
            }
        }
    }

    /// A data client's request reached node `i`.
    fn client_request(
        &mut self,
        i: usize,
        client: u32,
        req: u64,
        request: ClientRequest,
        out: &mut Vec<CtlOut>,
    ) {
        let node = self.nodes[i].id;
        let now = self.local_now(i);
        let reply = match request {
            ClientRequest::Metadata => {
                let Some(ctl) = self.nodes[i].ctl.as_ref() else {
                    return;
                };
                Some(ClientReply::Metadata(ctl.image().clone()))
            }
            ClientRequest::InitProducerId => {
                // Answered when the controller allocates a block
                // (`node_out`, `Origin::Client`).
                if let Some(ctl) = self.nodes[i].ctl.as_mut() {
                    ctl.submit(
                        ControllerCommand::AllocateProducerIds { node },
                        Origin::Client(req),
                        now,
                    );
                    ctl.poll(now, out);
                }
                None
            }
            ClientRequest::Produce(_) | ClientRequest::Fetch(_) => {
                self.data_request(i, client, req, request)
            }
        };
        if let Some(reply) = reply {
            self.send(
                Addr::Node(node),
                Addr::Client(client),
                Msg::ClientReply { req, reply },
            );
        }
    }

    /// A produce or fetch reached node `i`'s data plane; `None` when the
    /// answer comes later (`data_out`, `Out::Produced`).
    fn data_request(
        &mut self,
        i: usize,
        client: u32,
        req: u64,
        request: ClientRequest,
    ) -> Option<ClientReply> {
        let now = self.local_now(i);
        self.sync_lease(i);
        let data = self.nodes[i].data.as_mut()?;
        match request {
            ClientRequest::Produce(produce) => {
                let id = self.next_produce;
                self.next_produce += 1;
                let epoch = data
                    .role(&produce.topic, produce.partition)
                    .map_or(0, |(_, epoch)| epoch.0);
                self.produces.insert(
                    id,
                    (client, req, produce.topic.clone(), produce.partition, epoch),
                );
                let request = ProduceRequest {
                    id,
                    topic: produce.topic,
                    partition: produce.partition,
                    acks: match self.config.mutant {
                        Some(Mutant::AcksAllAsLeaderOnly) => 1,
                        Some(Mutant::NoBrokerLease) | None => produce.acks,
                    },
                    producer: produce.producer,
                    records: produce
                        .records
                        .into_iter()
                        .map(|(k, v)| (Bytes::from(k), Bytes::from(v)))
                        .collect(),
                    timeout_ms: produce.timeout_ms,
                    current_leader_epoch: None,
                };
                let mut out = Vec::new();
                data.produce(request, now, &mut out);
                self.data_out(i, out);
                None
            }
            ClientRequest::Fetch(fetch) => {
                let (fetch_topic, fetch_partition, fetch_offset) =
                    (fetch.topic.clone(), fetch.partition, fetch.offset);
                let reply = data.fetch(&ConsumerFetch {
                    topic: fetch.topic,
                    partition: fetch.partition,
                    offset: fetch.offset,
                    max_bytes: fetch.max_bytes,
                    current_leader_epoch: None,
                });
                tracing::debug!(
                    node = i + 1,
                    partition = %format!("{}-{}", fetch_topic, fetch_partition),
                    offset = fetch_offset,
                    hw = reply.high_watermark,
                    records = reply.records.len(),
                    error = ?reply.error,
                    "sim: consumer fetch"
                );
                let result = if reply.error == ErrorCode::None {
                    Ok(reply
                        .records
                        .into_iter()
                        .map(|r| (r.offset, r.value.map_or_else(Vec::new, |v| v.to_vec())))
                        .collect())
                } else {
                    Err(reply.error)
                };
                Some(ClientReply::Fetched(result))
            }
            ClientRequest::Metadata | ClientRequest::InitProducerId => None,
        }
    }

    /// What node `i`'s data plane produced.
    fn data_out(&mut self, i: usize, out: Vec<Out>) {
        let me = self.nodes[i].id;
        let now = self.local_now(i);
        for o in out {
            match o {
                Out::Send { to, msg } => self.send(Addr::Node(me), Addr::Node(to), Msg::Data(msg)),
                Out::Produced { id, result } => {
                    if let Some((node, write_id)) = self.group_writes.remove(&id) {
                        if node == i {
                            let result = result.map(|_| ());
                            self.groups_step(i, |groups, log, out| {
                                groups.appended(write_id, result, now, log, out)
                            });
                        }
                        continue;
                    }
                    let Some((client, req, topic, partition, epoch)) = self.produces.remove(&id)
                    else {
                        continue;
                    };
                    tracing::debug!(node = me.0, partition = %format!("{topic}-{partition}"), ?result, epoch, "sim: produced");
                    let result = result.map(|base| (base as u64, epoch));
                    let reply = ClientReply::Produced(result);
                    self.send(
                        Addr::Node(me),
                        Addr::Client(client),
                        Msg::ClientReply { req, reply },
                    );
                }
                Out::Controller { id, command } => {
                    let mut ctl_out = Vec::new();
                    if let Some(ctl) = self.nodes[i].ctl.as_mut() {
                        ctl.submit(command, Origin::Data(id), now);
                        ctl.poll(now, &mut ctl_out);
                    }
                    self.node_out(i, ctl_out);
                }
            }
        }
    }

    fn client_out(&mut self, id: u32, out: Vec<ClientOut>) {
        for o in out {
            match o {
                ClientOut::Send { to, req, request } => self.send(
                    Addr::Client(id),
                    Addr::Node(to),
                    Msg::Client { req, request },
                ),
                ClientOut::Sent { value, idempotent } => self.checker.sent(&value, idempotent),
                ClientOut::Acked {
                    topic,
                    partition,
                    base_offset,
                    values,
                    acks,
                    node,
                    leader_epoch,
                } => {
                    if acks == -1 {
                        self.stats.acked_all += 1;
                    } else {
                        self.stats.acked_leader += 1;
                    }
                    let ack = Ack {
                        topic,
                        partition,
                        base_offset,
                        values,
                        acks,
                        node,
                        leader_epoch,
                    };
                    self.checker.acked(self.now, &ack);
                }
                ClientOut::GaveUp { .. } => self.stats.gave_up += 1,
                ClientOut::Read {
                    topic,
                    partition,
                    records,
                } => {
                    for (offset, value) in records {
                        self.stats.read += 1;
                        self.checker
                            .read(self.now, &topic, partition, offset, &value);
                    }
                }
            }
        }
    }

    fn send(&mut self, from: Addr, to: Addr, msg: Msg) {
        if let (Addr::Node(a), Addr::Node(b)) = (from, to) {
            if self.net.cut.contains(&(a, b)) {
                self.stats.dropped += 1;
                return;
            }
        }
        if self.net_rng.chance(self.net.loss) {
            self.stats.dropped += 1;
            return;
        }
        let delay = self
            .net_rng
            .range(self.net.delay_min_ms, self.net.delay_max_ms);
        if self.net_rng.chance(self.net.duplicate) {
            self.stats.duplicated += 1;
            let again = self
                .net_rng
                .range(self.net.delay_min_ms, self.net.delay_max_ms * 4);
            self.schedule(
                again,
                Event::Deliver {
                    from,
                    to,
                    msg: msg.clone(),
                },
            );
        }
        self.schedule(delay, Event::Deliver { from, to, msg });
    }

    fn node_out(&mut self, i: usize, out: Vec<CtlOut>) {
        let me = Addr::Node(self.nodes[i].id);
        for o in out {
            match o {
                CtlOut::Send { to, msg } => self.send(me, Addr::Node(to), Msg::Ctl(msg)),
                CtlOut::Answered {
                    origin: Origin::Client(req),
                    result,
                    ..
                } if req >> 40 == 0 => {
                    self.send(me, Addr::Client(ADMIN), Msg::AdminReply { req, result })
                }
                CtlOut::Answered {
                    origin: Origin::Client(req),
                    result,
                    ..
                } => {
                    // A data client's InitProducerId.
                    let id = match result {
                        Ok(Answer {
                            reply: ControllerReply::ProducerIds { first, size },
                            ..
                        }) if first >= 0 => {
                            self.checker.producer_ids(self.now, first, size);
                            Ok(first)
                        }
                        _ => Err(ErrorCode::CoordinatorNotAvailable),
                    };
                    let reply = ClientReply::InitProducerId(id);
                    self.send(
                        me,
                        Addr::Client((req >> 40) as u32),
                        Msg::ClientReply { req, reply },
                    );
                }
                CtlOut::Answered {
                    origin: Origin::Data(id),
                    result,
                    ..
                } => {
                    let error = match result {
                        Ok(Answer {
                            reply: ControllerReply::AlterPartition { error, .. },
                            ..
                        }) => error,
                        Ok(_) => ErrorCode::UnknownServerError,
                        Err(_) => ErrorCode::RequestTimedOut,
                    };
                    let now = self.local_now(i);
                    self.data_step(i, |data, out| {
                        data.on_alter_partition_answer(id, error, now, out)
                    });
                }
                CtlOut::Answered { .. } => {}
            }
        }
        self.observe(i);
    }

    /// The checker looks at a node's image when it changed.
    fn observe(&mut self, i: usize) {
        let Some(ctl) = self.nodes[i].ctl.as_ref() else {
            return;
        };
        let image = ctl.image().clone();
        if self.nodes[i]
            .seen
            .as_ref()
            .is_some_and(|seen| Arc::ptr_eq(seen, &image))
        {
            return;
        }
        self.stats.images += 1;
        let applied = ctl.applied();
        let node = self.nodes[i].id;
        self.checker.image_applied(self.now, node, applied, &image);
        self.nodes[i].seen = Some(image.clone());
        if !self.nodes[i].data_started {
            return;
        }
        let now = self.local_now(i);
        self.data_step(i, |data, out| data.apply_image(&image, now, out));
        let mut out = Vec::new();
        if let Some(groups) = self.nodes[i].groups.as_mut() {
            groups.apply_image(&image, now, &mut out);
        }
        self.group_out(i, out);
    }

    /// Runs `f` on node `i`'s data plane (if it runs), then sends what it
    /// produced.
    fn data_step(&mut self, i: usize, f: impl FnOnce(&mut NodeData, &mut Vec<Out>)) {
        self.sync_lease(i);
        let Some(data) = self.nodes[i].data.as_mut() else {
            return;
        };
        let mut out = Vec::new();
        f(data, &mut out);
        self.data_out(i, out);
    }

    /// Runs `f` on node `i`'s group coordinators with its data plane as
    /// their offsets log, then sends what they produced.
    fn groups_step(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut NodeGroups, &mut DataOffsets<'_>, &mut Vec<GroupOut>),
    ) {
        self.sync_lease(i);
        let node = &mut self.nodes[i];
        let (Some(groups), Some(data)) = (node.groups.as_mut(), node.data.as_mut()) else {
            return;
        };
        let mut data_out = Vec::new();
        let mut group_out = Vec::new();
        let mut log = DataOffsets {
            data,
            out: &mut data_out,
            writes: &mut self.group_writes,
            next_id: &mut self.next_produce,
            node: i,
            now_ms: self.now + node.skew_ms,
        };
        f(groups, &mut log, &mut group_out);
        self.data_out(i, data_out);
        self.group_out(i, group_out);
    }

    fn group_out(&mut self, i: usize, out: Vec<GroupOut>) {
        let me = self.nodes[i].id;
        for GroupOut::Reply { client, req, body } in out {
            if matches!(body, GroupResponse::Fetch(_)) && !self.coordinates(me, client) {
                let ctl = self.nodes[i].ctl.as_ref();
                let newest = self
                    .nodes
                    .iter()
                    .filter_map(|n| n.ctl.as_ref())
                    .map(|c| c.applied())
                    .max();
                tracing::info!(
                    node = me.0,
                    client,
                    req,
                    t = self.now,
                    applied = ctl.map(|c| c.applied()),
                    newest,
                    unfenced = ctl.map(|c| c.unfenced()),
                    "sim: a deposed coordinator answered OffsetFetch"
                );
                self.checker.groups.deposed_answer(client, req);
            }
            tracing::debug!(node = me.0, client, req, ?body, "sim: group reply");
            self.send(
                Addr::Node(me),
                Addr::Client(client),
                Msg::Group(GroupMsg::Reply { req, body }),
            );
        }
    }

    /// Whether `node` leads the offsets partition of `client`'s group in
    /// the committed metadata (the most advanced image of any node).
    fn coordinates(&self, node: NodeId, client: u32) -> bool {
        let Some(m) = self.member_index(client) else {
            return true;
        };
        let image = self
            .nodes
            .iter()
            .filter_map(|n| n.ctl.as_ref())
            .max_by_key(|c| c.applied())
            .map(|c| c.image().clone());
        let Some(topic) = image.as_ref().and_then(|i| i.get(OFFSETS_TOPIC)) else {
            return true;
        };
        let count = topic.partitions.len() as u32;
        if count == 0 {
            return true;
        }
        let p = partition_for(self.members[m].group_id(), count);
        topic.partitions[p as usize].leader == Some(node)
    }

    fn member_index(&self, client: u32) -> Option<usize> {
        let first = self.clients.len() as u32 + 1;
        let m = client.checked_sub(first)? as usize;
        (m < self.members.len()).then_some(m)
    }

    fn member_out(&mut self, client: u32, out: Vec<MemberOut>) {
        for o in out {
            match o {
                MemberOut::Send { to, msg } => {
                    self.send(Addr::Client(client), Addr::Node(to), Msg::Group(msg))
                }
                MemberOut::Event(event) => self.checker.group_event(self.now, &event),
            }
        }
    }

    fn admin_step(&mut self) {
        let next = self.client_rng.range(500, 3_000);
        self.schedule(next, Event::Client(ADMIN));
        if self.quiet || self.admin.in_flight.len() >= 4 {
            return;
        }
        let command = match self.client_rng.below(10) {
            0..=4 => {
                self.admin.topics += 1;
                let partitions = self.client_rng.range(1, 4) as u32;
                let mut configs = BTreeMap::new();
                configs.insert("min.insync.replicas".to_owned(), "2".to_owned());
                ControllerCommand::CreateTopics(vec![CreateTopicSpec {
                    name: format!("t{}", self.admin.topics),
                    partitions: Some(partitions),
                    replication_factor: Some(3.min(self.config.nodes as u16)),
                    assignments: None,
                    configs,
                    validate_only: false,
                }])
            }
            5 => {
                let n = self
                    .client_rng
                    .range(1, u64::from(self.admin.topics.max(1)));
                ControllerCommand::DeleteTopics(vec![format!("t{n}")])
            }
            // Preferred elections only: an unclean one (a replica outside
            // the ISR) may lose acknowledged records by definition; the
            // controller never elects uncleanly by itself.
            _ => ControllerCommand::ElectLeaders {
                partitions: None,
                preferred: true,
            },
        };
        let req = self.admin.next_req;
        self.admin.next_req += 1;
        self.admin.in_flight.insert(req, command.clone());
        let to = NodeId(self.client_rng.range(1, u64::from(self.config.nodes)) as u32);
        self.send(
            Addr::Client(ADMIN),
            Addr::Node(to),
            Msg::Admin { req, command },
        );
        // A lost request or answer: forgotten after the submit deadline.
        self.admin.in_flight.retain(|r, _| req - *r < 16);
    }

    fn admin_answered(&mut self, req: u64, result: Result<Answer, Unavailable>) {
        if self.admin.in_flight.remove(&req).is_none() {
            return;
        }
        match result {
            Ok(Answer {
                reply: ControllerReply::NotController { .. },
                ..
            })
            | Err(_) => self.stats.admin_failed += 1,
            Ok(Answer {
                reply: ControllerReply::ProducerIds { first, size },
                ..
            }) => {
                self.stats.admin_ok += 1;
                self.checker.producer_ids(self.now, first, size);
            }
            Ok(_) => self.stats.admin_ok += 1,
        }
    }

    fn count_log_failures(&mut self, ctl: &SimController) {
        self.stats.metadata_log_write_failures += ctl.log_write_failures;
        self.stats.metadata_log_reopens += ctl.log_reopens;
    }

    fn count(&mut self, kind: &'static str) {
        *self.stats.faults.entry(kind).or_default() += 1;
    }

    fn node_ids(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// One fault, healed later.
    fn nemesis(&mut self) {
        let n = self.nodes.len();
        let heal_after = self.nemesis_rng.range(500, 6_000);
        match self.nemesis_rng.below(11) {
            0 => {
                // Isolate one node both ways (often the controller).
                let i = self.pick_victim();
                let victim = self.nodes[i].id;
                let links = self.isolate(&[victim]);
                self.count("partition: isolate a node");
                self.schedule(heal_after, Event::Heal(Heal::Links(links)));
            }
            1 => {
                // A majority/minority split.
                let mut ids = self.node_ids();
                let k = self.nemesis_rng.range(1, (n as u64 - 1) / 2 + 1) as usize;
                let mut minority = Vec::new();
                for _ in 0..k {
                    let j = self.nemesis_rng.below(ids.len() as u64) as usize;
                    minority.push(ids.remove(j));
                }
                let links = self.isolate(&minority);
                self.count("partition: majority/minority");
                self.schedule(heal_after, Event::Heal(Heal::Links(links)));
            }
            2 => {
                // One-way: a cannot reach b (b still reaches a).
                let a = self.nemesis_rng.below(n as u64) as usize;
                let b = (a + 1 + self.nemesis_rng.below(n as u64 - 1) as usize) % n;
                let link = (self.nodes[a].id, self.nodes[b].id);
                if self.net.cut.insert(link) {
                    self.count("partition: one-way");
                    self.schedule(heal_after, Event::Heal(Heal::Links(vec![link])));
                }
            }
            3 => {
                let i = self.pick_victim();
                if self.nodes[i].ctl.is_some() && self.nodes[i].paused_until.is_none() {
                    tracing::info!(node = i + 1, t = self.now, "sim: crash");
                    self.retire_counters(i);
                    if let Some(ctl) = self.nodes[i].ctl.take() {
                        self.count_log_failures(&ctl);
                    }
                    self.nodes[i].groups = None;
                    self.group_writes.retain(|_, (node, _)| *node != i);
                    if let Some(data) = self.nodes[i].data.take() {
                        let mut disk = data.into_disk();
                        disk.crash(&mut self.nemesis_rng);
                        self.nodes[i].disk = Some(disk);
                    }
                    self.count("crash");
                    let after = self.nemesis_rng.range(200, 4_000);
                    self.schedule(after, Event::Heal(Heal::Restart(i)));
                }
            }
            4 => {
                let i = self.pick_victim();
                if self.nodes[i].ctl.is_some() && self.nodes[i].paused_until.is_none() {
                    let until = self.now + heal_after;
                    self.nodes[i].paused_until = Some(until);
                    self.count("pause (SIGSTOP)");
                    self.schedule(heal_after, Event::Heal(Heal::Resume(i)));
                }
            }
            5 => {
                // A forward jump of one node's steady clock.
                let i = self.nemesis_rng.below(n as u64) as usize;
                self.nodes[i].skew_ms += self.nemesis_rng.range(50, 2_000);
                self.count("clock jump");
            }
            6 => {
                self.net.loss = [0.0, 0.01, 0.05, 0.2][self.nemesis_rng.below(4) as usize];
                self.count("network: loss rate change");
            }
            7 => {
                self.net.duplicate = [0.0, 0.01, 0.05][self.nemesis_rng.below(3) as usize];
                self.count("network: duplication rate change");
            }
            9 => {
                // A slow disk: every fdatasync of one node takes long.
                let i = self.nemesis_rng.below(n as u64) as usize;
                if let Some(data) = self.nodes[i].data.as_mut() {
                    let delay = self.nemesis_rng.range(20, 1_500);
                    data.disk_mut().set_sync_delay_ms(delay);
                    self.count("disk: slow fdatasync");
                    self.schedule(heal_after, Event::Heal(Heal::Disk(i)));
                }
            }
            10 => {
                let i = self.nemesis_rng.below(n as u64) as usize;
                if let Some(data) = self.nodes[i].data.as_mut() {
                    // One data dir: the partitions' logs and the metadata
                    // log fill together.
                    data.disk_mut().set_full(true);
                    self.nodes[i].metadata_full.set(true);
                    self.count("disk: full");
                    self.schedule(heal_after, Event::Heal(Heal::Disk(i)));
                }
            }
            _ => {
                // Delay and reordering: a wider delay spread reorders.
                let (lo, hi) =
                    [(1, 5), (1, 50), (5, 200), (0, 500)][self.nemesis_rng.below(4) as usize];
                self.net.delay_min_ms = lo;
                self.net.delay_max_ms = hi;
                self.count("network: delay/reorder change");
            }
        }
    }

    /// A node to hit: the active controller half the time.
    fn pick_victim(&mut self) -> usize {
        if self.nemesis_rng.chance(0.5) {
            if let Some(i) = self
                .nodes
                .iter()
                .position(|n| n.ctl.as_ref().is_some_and(|c| c.is_active_controller()))
            {
                return i;
            }
        }
        self.nemesis_rng.below(self.nodes.len() as u64) as usize
    }

    /// Cuts every link between `group` and the other nodes, both ways;
    /// returns the links cut now (to heal).
    fn isolate(&mut self, group: &[NodeId]) -> Vec<(NodeId, NodeId)> {
        let mut cut = Vec::new();
        for a in self.node_ids() {
            for b in self.node_ids() {
                if group.contains(&a) != group.contains(&b) && self.net.cut.insert((a, b)) {
                    cut.push((a, b));
                }
            }
        }
        cut
    }

    fn heal(&mut self, heal: Heal) {
        match heal {
            Heal::Links(links) => {
                for link in links {
                    self.net.cut.remove(&link);
                }
            }
            Heal::Restart(i) => {
                if self.nodes[i].ctl.is_none() {
                    tracing::info!(node = i + 1, t = self.now, "sim: restart");
                    self.nodes[i].restarts += 1;
                    self.start_node(i);
                }
            }
            Heal::Resume(i) => self.nodes[i].paused_until = None,
            Heal::Disk(i) => self.heal_disk(i),
        }
    }

    fn heal_disk(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.metadata_full.set(false);
        let disk = match (node.data.as_mut(), node.disk.as_mut()) {
            (Some(data), _) => data.disk_mut(),
            (None, Some(disk)) => disk,
            (None, None) => return,
        };
        disk.set_sync_delay_ms(0);
        disk.set_full(false);
    }

    fn heal_everything(&mut self) {
        self.net.cut.clear();
        self.net.loss = 0.0;
        self.net.duplicate = 0.0;
        self.net.delay_min_ms = 1;
        self.net.delay_max_ms = 5;
        for i in 0..self.nodes.len() {
            self.nodes[i].paused_until = None;
            self.heal_disk(i);
            if self.nodes[i].ctl.is_none() {
                self.start_node(i);
            }
        }
    }

    fn final_checks(&mut self) {
        for i in 0..self.nodes.len() {
            if let Some(ctl) = self.nodes[i].ctl.take() {
                self.count_log_failures(&ctl);
                self.nodes[i].ctl = Some(ctl);
            }
        }
        let images: Vec<(NodeId, u64, Arc<MetadataImage>, bool)> = self
            .nodes
            .iter()
            .filter_map(|n| {
                n.ctl
                    .as_ref()
                    .map(|c| (n.id, c.applied(), c.image().clone(), c.unfenced()))
            })
            .collect();
        self.checker.converged(&images);
        self.stats.leader_epochs = self.checker.leader_epochs();
        // Every partition of the final image, over every replica.
        let Some((_, _, image, _)) = images.first() else {
            return;
        };
        let views: Vec<_> = self
            .nodes
            .iter()
            .filter_map(|n| n.data.as_ref())
            .flat_map(|d| d.inspect())
            .collect();
        let dump = std::env::var("FJORD_SIM_DUMP").ok();
        for topic in image.topics().filter(|t| t.name != OFFSETS_TOPIC) {
            for (index, partition) in topic.partitions.iter().enumerate() {
                if dump.as_deref() == Some(&format!("{}-{index}", topic.name)) {
                    for v in views
                        .iter()
                        .filter(|v| v.topic_id == topic.id && v.partition == index as u32)
                    {
                        eprintln!(
                            "node {} {:?} epoch {} start {} end {} hw {} durable {} isr {:?} epochs {:?}",
                            v.node.0, v.role, v.leader_epoch.0, v.log_start, v.log_end,
                            v.high_watermark, v.durable_end, v.isr, v.epochs
                        );
                        for r in &v.records {
                            let value = r
                                .value
                                .as_ref()
                                .map(|v| String::from_utf8_lossy(v).into_owned());
                            eprintln!(
                                "  {} e{} {:?} {:?}",
                                r.offset, r.leader_epoch, r.producer, value
                            );
                        }
                    }
                }
                let replicas: Vec<FinalReplica> = views
                    .iter()
                    .filter(|v| v.topic_id == topic.id && v.partition == index as u32)
                    .map(|v| FinalReplica {
                        node: v.node,
                        leader: partition.leader == Some(v.node) && v.role == Role::Leader,
                        in_sync: partition.isr.contains(&v.node),
                        high_watermark: v.high_watermark,
                        records: v
                            .records
                            .iter()
                            .map(|r| {
                                (
                                    r.offset,
                                    r.value.as_ref().map_or_else(Vec::new, |v| v.to_vec()),
                                )
                            })
                            .collect(),
                    })
                    .collect();
                self.checker
                    .final_partition(&topic.name, index as u32, &replicas);
            }
        }
        self.stats.leader_only_lost = self.checker.leader_only_lost;
        self.stats.deposed_group_answers = self.checker.groups.deposed_answers;
        for i in 0..self.nodes.len() {
            self.retire_counters(i);
        }
        // Every member's committed offsets, at the coordinator that holds
        // its group now.
        for m in 0..self.members.len() {
            let group = self.members[m].group_id().to_owned();
            let partitions: Vec<_> = self.members[m].last_offsets().keys().cloned().collect();
            if partitions.is_empty() {
                continue;
            }
            let held = self
                .nodes
                .iter()
                .filter_map(|n| n.groups.as_ref())
                .find_map(|g| g.committed(&group, &partitions));
            let Some(held) = held else {
                self.checker.violation(
                    u64::MAX,
                    format!("liveness: after the quiet period no node coordinates {group}"),
                );
                continue;
            };
            for (tp, committed) in held {
                let offset = committed.map(|c| c.offset);
                if let Some(what) = self.checker.groups.check_final(&group, &tp, offset) {
                    self.checker.violation(u64::MAX, what);
                }
            }
            self.stats.group_commits += self.members[m].acked;
        }
    }
}

/// A node's data plane as its group coordinators' offsets log: appends are
/// acks=all produces to `__consumer_offsets` (their completions come back
/// through `World::data_out`), reads go to this node's own replica.
struct DataOffsets<'a> {
    data: &'a mut NodeData,
    out: &'a mut Vec<Out>,
    writes: &'a mut BTreeMap<u64, (usize, u64)>,
    next_id: &'a mut u64,
    node: usize,
    now_ms: u64,
}

impl OffsetsLog for DataOffsets<'_> {
    fn append(
        &mut self,
        partition: u32,
        records: Vec<(Bytes, Bytes)>,
        write_id: u64,
        timeout_ms: u64,
        _now_ms: u64,
    ) {
        let id = *self.next_id;
        *self.next_id += 1;
        self.writes.insert(id, (self.node, write_id));
        let request = ProduceRequest {
            id,
            topic: OFFSETS_TOPIC.to_owned(),
            partition,
            acks: -1,
            producer: None,
            records,
            timeout_ms,
            current_leader_epoch: None,
        };
        self.data.produce(request, self.now_ms, self.out);
    }

    fn bounds(&self, partition: u32) -> Result<(i64, i64), ErrorCode> {
        self.data
            .bounds(OFFSETS_TOPIC, partition)
            .map(|(start, end)| (start as i64, end as i64))
    }

    fn read(&self, partition: u32, offset: i64, max_bytes: usize) -> Result<Vec<Bytes>, ErrorCode> {
        let offset = u64::try_from(offset).map_err(|_| ErrorCode::OffsetOutOfRange)?;
        self.data
            .read_local(OFFSETS_TOPIC, partition, offset, max_bytes)
    }
}
