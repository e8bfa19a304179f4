//! `NodeGroups` driven by hand and with `GroupMember`s over an in-memory
//! offsets log (appends that succeed, fail or wait), and the group
//! rules of the checker shown to fail.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use fjord_broker::group::coordinator::{CommitRequest, CommittedOffset};
use fjord_broker::group::offsets_log::OFFSETS_TOPIC;
use fjord_broker::group::TopicPartition;
use fjord_broker::metadata::image::{
    BrokerEndpoints, BrokerImage, MetadataImage, PartitionImage, TopicId, TopicImage,
};
use fjord_broker::topic::TopicConfig;
use fjord_schema::batch::assign_offset_and_epoch;
use fjord_schema::{
    BatchBuilder, BatchOptions, BatchView, ErrorCode, LeaderEpoch, NodeId, Offset, RecordInput,
};

use super::*;

/// What the fake log does with an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Written and acknowledged at the next settle.
    Ok,
    /// Refused with this code (nothing written).
    Fail(ErrorCode),
    /// Written at once (the leader's log), answered REQUEST_TIMED_OUT (the
    /// in-sync replicas did not confirm in time): an indeterminate commit.
    TimedOut,
    /// Kept pending until the mode changes.
    Hold,
}

/// An append waiting: (node index, partition, records, write id).
type PendingAppend = (usize, u32, Vec<(Bytes, Bytes)>, u64);

/// The offsets topic as every node sees it (one replicated log, which
/// each leader in turn appends to and replays).
#[derive(Debug)]
struct FakeLog {
    batches: BTreeMap<u32, Vec<Bytes>>,
    ends: BTreeMap<u32, i64>,
    pending: Vec<PendingAppend>,
    mode: Mode,
    /// Reads fail while this is set (a replica not yet readable).
    unreadable: bool,
    /// Settle only a random prefix of the pending appends each time (slow
    /// replication), drawing from this.
    slow: Option<SimRng>,
}

impl FakeLog {
    fn new() -> FakeLog {
        FakeLog {
            batches: BTreeMap::new(),
            ends: BTreeMap::new(),
            pending: Vec::new(),
            mode: Mode::Ok,
            unreadable: false,
            slow: None,
        }
    }

    fn write(&mut self, partition: u32, records: &[(Bytes, Bytes)]) {
        let mut builder = BatchBuilder::new(BatchOptions::default());
        for (key, value) in records {
            builder.push(RecordInput {
                key: Some(key),
                value: Some(value),
                headers: &[],
                timestamp: 0,
                offset_delta: None,
            });
        }
        let mut batch = builder.finish().expect("a batch").to_vec();
        let end = self.ends.entry(partition).or_insert(0);
        assign_offset_and_epoch(&mut batch, Offset(*end as u64), LeaderEpoch(0));
        *end += records.len() as i64;
        self.batches
            .entry(partition)
            .or_default()
            .push(Bytes::from(batch));
    }

    /// Completes the pending appends as the mode says: (node, write id,
    /// result).
    fn settle(&mut self) -> Vec<(usize, u64, Result<(), ErrorCode>)> {
        if self.mode == Mode::Hold {
            return Vec::new();
        }
        let settled = match &mut self.slow {
            Some(rng) => rng.below(self.pending.len() as u64 + 1) as usize,
            None => self.pending.len(),
        };
        let mut done = Vec::new();
        let pending: Vec<PendingAppend> = self.pending.drain(..settled).collect();
        for (node, partition, records, write_id) in pending {
            let result = match self.mode {
                Mode::Ok => {
                    self.write(partition, &records);
                    Ok(())
                }
                Mode::TimedOut => {
                    self.write(partition, &records);
                    Err(ErrorCode::RequestTimedOut)
                }
                Mode::Fail(code) => Err(code),
                Mode::Hold => unreachable!(),
            };
            done.push((node, write_id, result));
        }
        done
    }

    /// Keeps only the first `keep` batches of `partition` (a log that lost
    /// acknowledged records: what the checker must catch).
    fn truncate_batches(&mut self, partition: u32, keep: usize) {
        let batches = self.batches.entry(partition).or_default();
        batches.truncate(keep);
        let end = batches
            .last()
            .map(|b| {
                let (view, _) = BatchView::parse(b).expect("valid");
                view.header().next_offset().get() as i64
            })
            .unwrap_or(0);
        self.ends.insert(partition, end);
    }
}

/// One node's view of the fake log.
struct NodeLog<'a> {
    log: &'a mut FakeLog,
    node: usize,
}

impl OffsetsLog for NodeLog<'_> {
    fn append(
        &mut self,
        partition: u32,
        records: Vec<(Bytes, Bytes)>,
        write_id: u64,
        timeout_ms: u64,
        _now_ms: u64,
    ) {
        assert!(timeout_ms > 0);
        self.log
            .pending
            .push((self.node, partition, records, write_id));
    }

    fn bounds(&self, partition: u32) -> Result<(i64, i64), ErrorCode> {
        if self.log.unreadable {
            return Err(ErrorCode::NotLeaderOrFollower);
        }
        Ok((0, self.log.ends.get(&partition).copied().unwrap_or(0)))
    }

    fn read(&self, partition: u32, offset: i64, max_bytes: usize) -> Result<Vec<Bytes>, ErrorCode> {
        if self.log.unreadable {
            return Err(ErrorCode::NotLeaderOrFollower);
        }
        let mut out: Vec<Bytes> = Vec::new();
        let mut bytes = 0;
        for batch in self.log.batches.get(&partition).into_iter().flatten() {
            let (view, _) = BatchView::parse(batch).expect("valid");
            if (view.header().next_offset().get() as i64) <= offset {
                continue;
            }
            if !out.is_empty() && bytes + batch.len() > max_bytes {
                break;
            }
            bytes += batch.len();
            out.push(batch.clone());
        }
        Ok(out)
    }
}

fn broker(node: u32) -> BrokerImage {
    BrokerImage {
        node: NodeId(node),
        incarnation: 1,
        endpoints: BrokerEndpoints::default(),
        shards: 1,
        rack: None,
        fenced: false,
    }
}

/// Three live brokers and `__consumer_offsets` with `partitions`
/// partitions, all led by `leader` at `epoch`.
fn image(partitions: u32, leader: u32, epoch: u32) -> MetadataImage {
    image_of(&vec![(leader, epoch); partitions as usize])
}

/// Three live brokers and `__consumer_offsets` whose partitions are led
/// by these (leader, epoch).
fn image_of(leaders: &[(u32, u32)]) -> MetadataImage {
    let mut image = MetadataImage::default();
    for n in 1..=3 {
        image.insert_broker(broker(n));
    }
    let replicas: Vec<NodeId> = (1..=3).map(NodeId).collect();
    image.insert_topic(TopicImage {
        id: TopicId([7; 16]),
        name: OFFSETS_TOPIC.to_owned(),
        config: TopicConfig::from_log_config(&fjord_storage::LogConfig::default()),
        created_ms: 1,
        overrides: Some(BTreeMap::new()),
        partitions: leaders
            .iter()
            .map(|&(leader, epoch)| PartitionImage {
                replicas: replicas.clone(),
                isr: replicas.clone(),
                leader: Some(NodeId(leader)),
                leader_epoch: LeaderEpoch(epoch),
                partition_epoch: epoch,
            })
            .collect(),
    });
    image
}

fn tp(topic: &str, partition: u32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}

enum Envelope {
    ToNode {
        node: usize,
        client: u32,
        msg: GroupMsg,
    },
    ToClient {
        client: u32,
        msg: GroupMsg,
    },
}

/// A tiny world: three `NodeGroups`, members, one offsets log, a FIFO
/// network that may lose and duplicate (a duplicate goes to the back of
/// the queue: reordered).
struct Harness {
    now: u64,
    nodes: Vec<NodeGroups>,
    log: FakeLog,
    members: Vec<GroupMember>,
    checker: GroupChecker,
    violations: Vec<String>,
    events: Vec<GroupEvent>,
    wire: VecDeque<Envelope>,
    rng: SimRng,
    loss: f64,
    duplicate: f64,
}

impl Harness {
    fn new(seed: u64) -> Harness {
        let mut rng = SimRng::new(seed);
        let nodes = (1..=3)
            .map(|n| NodeGroups::new(NodeId(n), GroupsConfig::sim(), &mut rng, 0))
            .collect();
        Harness {
            now: 0,
            nodes,
            log: FakeLog::new(),
            members: Vec::new(),
            checker: GroupChecker::default(),
            violations: Vec::new(),
            events: Vec::new(),
            wire: VecDeque::new(),
            rng,
            loss: 0.0,
            duplicate: 0.0,
        }
    }

    fn add_member(&mut self, client: u32, group: &str, partitions: Vec<TopicPartition>) {
        let rng = self.rng.fork("member");
        self.members.push(GroupMember::new(
            client,
            group.to_owned(),
            (1..=3).map(NodeId).collect(),
            partitions,
            MemberConfig {
                leave_chance: 0.0,
                ..MemberConfig::default()
            },
            rng,
        ));
    }

    fn apply_image(&mut self, image: &MetadataImage) {
        for i in 0..self.nodes.len() {
            let mut out = Vec::new();
            self.nodes[i].apply_image(image, self.now, &mut out);
            self.node_out(out);
        }
    }

    fn node_out(&mut self, out: Vec<GroupOut>) {
        for GroupOut::Reply { client, req, body } in out {
            self.put(Envelope::ToClient {
                client,
                msg: GroupMsg::Reply { req, body },
            });
        }
    }

    fn put(&mut self, envelope: Envelope) {
        if self.rng.chance(self.loss) {
            return;
        }
        if self.rng.chance(self.duplicate) {
            let copy = match &envelope {
                Envelope::ToNode { node, client, msg } => Envelope::ToNode {
                    node: *node,
                    client: *client,
                    msg: msg.clone(),
                },
                Envelope::ToClient { client, msg } => Envelope::ToClient {
                    client: *client,
                    msg: msg.clone(),
                },
            };
            self.wire.push_back(copy);
        }
        self.wire.push_back(envelope);
    }

    fn member_out(&mut self, client: u32, out: Vec<MemberOut>) {
        for o in out {
            match o {
                MemberOut::Send { to, msg } => self.put(Envelope::ToNode {
                    node: (to.0 - 1) as usize,
                    client,
                    msg,
                }),
                MemberOut::Event(event) => {
                    self.violations.extend(self.checker.observe(&event));
                    self.events.push(event);
                }
            }
        }
    }

    fn deliver(&mut self) {
        while let Some(envelope) = self.wire.pop_front() {
            match envelope {
                Envelope::ToNode { node, client, msg } => {
                    let GroupMsg::Request { req, sent_ms, body } = msg else {
                        continue;
                    };
                    let mut out = Vec::new();
                    let mut log = NodeLog {
                        log: &mut self.log,
                        node,
                    };
                    self.nodes[node]
                        .handle(client, req, sent_ms, body, self.now, &mut log, &mut out);
                    self.node_out(out);
                }
                Envelope::ToClient { client, msg } => {
                    let Some(i) = self.members.iter().position(|m| m.client() == client) else {
                        continue;
                    };
                    let mut out = Vec::new();
                    self.members[i].on_reply(msg, self.now, &mut out);
                    self.member_out(client, out);
                }
            }
        }
    }

    /// One 10 ms step: nodes poll, appends settle, members act, messages
    /// are delivered.
    fn step(&mut self) {
        self.now += 10;
        for node in 0..self.nodes.len() {
            let mut out = Vec::new();
            let mut log = NodeLog {
                log: &mut self.log,
                node,
            };
            self.nodes[node].poll(self.now, &mut log, &mut out);
            self.node_out(out);
        }
        for (node, write_id, result) in self.log.settle() {
            let mut out = Vec::new();
            let mut log = NodeLog {
                log: &mut self.log,
                node,
            };
            self.nodes[node].appended(write_id, result, self.now, &mut log, &mut out);
            self.node_out(out);
        }
        self.deliver();
        for i in 0..self.members.len() {
            let mut out = Vec::new();
            self.members[i].step(self.now, &mut out);
            let client = self.members[i].client();
            self.member_out(client, out);
        }
        self.deliver();
    }

    fn run(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.step();
        }
    }

    /// The largest acknowledged offset per (group, partition) so far.
    fn acked_max(&self) -> BTreeMap<(String, TopicPartition), i64> {
        let mut max = BTreeMap::new();
        for event in &self.events {
            if let GroupEvent::CommitAcked {
                group, tp, offset, ..
            } = event
            {
                let m = max.entry((group.clone(), tp.clone())).or_insert(*offset);
                *m = (*m).max(*offset);
            }
        }
        max
    }

    /// Fetch answers after `since_ms`.
    fn fetched_since(&self, since_ms: u64) -> Vec<(String, TopicPartition, Option<i64>)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                GroupEvent::Fetched {
                    group,
                    tp,
                    offset,
                    at_ms,
                    ..
                } if *at_ms > since_ms => Some((group.clone(), tp.clone(), *offset)),
                _ => None,
            })
            .collect()
    }

    /// A request straight to node `node` from client 99 (no member).
    fn call(&mut self, node: usize, req: u64, body: GroupRequest) -> Vec<GroupOut> {
        let mut out = Vec::new();
        let mut log = NodeLog {
            log: &mut self.log,
            node,
        };
        self.nodes[node].handle(99, req, self.now, body, self.now, &mut log, &mut out);
        out
    }

    /// Settles the log and returns the replies the completions produced.
    fn settle(&mut self) -> Vec<GroupOut> {
        let mut all = Vec::new();
        for (node, write_id, result) in self.log.settle() {
            let mut log = NodeLog {
                log: &mut self.log,
                node,
            };
            self.nodes[node].appended(write_id, result, self.now, &mut log, &mut all);
        }
        all
    }
}

fn simple_commit(group: &str, offsets: &[(TopicPartition, i64)]) -> GroupRequest {
    GroupRequest::Commit(CommitRequest {
        group_id: group.to_owned(),
        generation_id: -1,
        member_id: String::new(),
        instance_id: None,
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
    })
}

fn fetch(group: &str, partition: &TopicPartition) -> GroupRequest {
    GroupRequest::Fetch {
        group_id: group.to_owned(),
        partitions: vec![partition.clone()],
    }
}

/// The one reply in `out`, to request `req`.
fn only_reply(out: Vec<GroupOut>, req: u64) -> GroupResponse {
    assert_eq!(out.len(), 1, "{out:?}");
    let GroupOut::Reply { req: r, body, .. } = out.into_iter().next().expect("one");
    assert_eq!(r, req);
    body
}

fn fetched_offset(body: GroupResponse) -> Option<i64> {
    let GroupResponse::Fetch(offsets) = body else {
        panic!("not a fetch answer: {body:?}");
    };
    assert_eq!(offsets.len(), 1);
    offsets[0].1.as_ref().map(|o| o.offset)
}

#[test]
fn members_join_sync_commit_and_fetch_their_offsets() {
    let mut h = Harness::new(1);
    h.apply_image(&image(3, 1, 0));
    h.add_member(1, "g", vec![tp("t", 0), tp("t", 1)]);
    h.add_member(2, "g", vec![tp("t", 2)]);
    h.run(5_000);
    assert_eq!(h.violations, Vec::<String>::new());
    for m in &h.members {
        assert!(m.is_stable(), "client {} is not stable", m.client());
        assert!(m.acked > 5, "client {} acked {}", m.client(), m.acked);
        assert!(m.fetched >= 1);
        assert!(m.joins >= 1);
    }
    // Only node 1 coordinates, and it holds what was acknowledged.
    assert!(!h.nodes[0].offsets_partitions().is_empty());
    assert!(h.nodes[1].offsets_partitions().is_empty());
    h.log.mode = Mode::Hold;
    let acked = h.acked_max();
    let tps = [tp("t", 0), tp("t", 1), tp("t", 2)];
    let held = h.nodes[0].committed("g", &tps).expect("loaded on node 1");
    for (tp, offset) in held {
        let floor = acked[&("g".to_owned(), tp.clone())];
        assert!(offset.expect("committed").offset >= floor, "{tp}");
    }
    assert!(h.checker.commits_acked > 10);
}

#[test]
fn offsets_survive_a_coordinator_moving_to_another_node() {
    let mut h = Harness::new(2);
    h.apply_image(&image(1, 1, 0));
    h.add_member(1, "g1", vec![tp("t", 0)]);
    h.add_member(2, "g2", vec![tp("u", 0), tp("u", 1)]);
    h.run(3_000);
    let before = h.acked_max();
    assert_eq!(before.len(), 3);
    let moved_at = h.now;
    // Node 2 now leads the offsets partition: node 1 drops its groups,
    // node 2 replays the log.
    h.apply_image(&image(1, 2, 1));
    assert!(h.nodes[0].offsets_partitions().is_empty());
    assert_eq!(h.nodes[1].offsets_partitions(), vec![(0, false)]);
    h.run(4_000);
    assert_eq!(h.violations, Vec::<String>::new());
    assert_eq!(h.nodes[1].offsets_partitions(), vec![(0, true)]);
    assert!(h.nodes[1].stats().records_replayed > 0);
    assert!(h.members.iter().all(|m| m.is_stable() && m.joins >= 2));
    // The first fetch from the new coordinator saw every commit
    // acknowledged by the old one.
    let after = h.fetched_since(moved_at);
    for ((group, tp), floor) in &before {
        let first = after
            .iter()
            .find(|(g, t, _)| g == group && t == tp)
            .expect("fetched after the move");
        assert!(first.2.expect("an offset") >= *floor, "{group}/{tp}");
    }
    // And the members kept committing there.
    let later = h.acked_max();
    assert!(before.iter().all(|(k, v)| later[k] > *v));
}

#[test]
fn a_commit_is_acknowledged_and_visible_only_once_durable() {
    let mut h = Harness::new(3);
    h.apply_image(&image(1, 1, 0));
    let p = tp("t", 0);
    h.run(100);
    let out = h.call(0, 1, simple_commit("s", &[(p.clone(), 5)]));
    assert!(out.is_empty(), "answered only once written: {out:?}");
    let body = only_reply(h.settle(), 1);
    assert_eq!(
        body,
        GroupResponse::Commit(vec![(p.clone(), ErrorCode::None)])
    );

    // A failed append: not acknowledged (persist_error's mapping), not
    // visible, nothing in the log.
    h.log.mode = Mode::Fail(ErrorCode::NotEnoughReplicas);
    assert!(h
        .call(0, 2, simple_commit("s", &[(p.clone(), 7)]))
        .is_empty());
    let body = only_reply(h.settle(), 2);
    assert_eq!(
        body,
        GroupResponse::Commit(vec![(p.clone(), ErrorCode::CoordinatorNotAvailable)])
    );
    assert_eq!(
        fetched_offset(only_reply(h.call(0, 3, fetch("s", &p)), 3)),
        Some(5)
    );
    assert_eq!(h.log.ends[&0], 1);

    // A slow append: invisible until it completes.
    h.log.mode = Mode::Hold;
    assert!(h
        .call(0, 4, simple_commit("s", &[(p.clone(), 9)]))
        .is_empty());
    assert_eq!(
        fetched_offset(only_reply(h.call(0, 5, fetch("s", &p)), 5)),
        Some(5)
    );
    h.log.mode = Mode::Ok;
    let body = only_reply(h.settle(), 4);
    assert_eq!(
        body,
        GroupResponse::Commit(vec![(p.clone(), ErrorCode::None)])
    );
    assert_eq!(
        fetched_offset(only_reply(h.call(0, 6, fetch("s", &p)), 6)),
        Some(9)
    );

    // Leadership lost during an append: answered NOT_COORDINATOR at once;
    // the append landing later is not answered again, and the next
    // leader (replaying the log) serves it: an indeterminate commit.
    h.log.mode = Mode::Hold;
    assert!(h
        .call(0, 7, simple_commit("s", &[(p.clone(), 11)]))
        .is_empty());
    let mut out = Vec::new();
    h.nodes[0].apply_image(&image(1, 2, 1), h.now, &mut out);
    assert_eq!(
        only_reply(out, 7),
        GroupResponse::Unavailable(ErrorCode::NotCoordinator)
    );
    h.log.mode = Mode::Ok;
    assert!(h.settle().is_empty());
    assert_eq!(
        only_reply(h.call(0, 8, fetch("s", &p)), 8),
        GroupResponse::Unavailable(ErrorCode::NotCoordinator)
    );
    let mut out = Vec::new();
    h.nodes[1].apply_image(&image(1, 2, 1), h.now, &mut out);
    assert!(out.is_empty());
    h.run(100);
    assert_eq!(
        fetched_offset(only_reply(h.call(1, 9, fetch("s", &p)), 9)),
        Some(11)
    );
}

#[test]
fn a_loading_coordinator_answers_load_in_progress_and_retries_failed_loads() {
    let mut h = Harness::new(4);
    let p = tp("t", 0);
    h.log.write(
        0,
        &[(
            Bytes::from(fjord_broker::group::offsets_log::encode_key("s", &p)),
            Bytes::from(fjord_broker::group::offsets_log::encode_value(
                &CommittedOffset {
                    offset: 3,
                    leader_epoch: -1,
                    metadata: String::new(),
                },
                0,
            )),
        )],
    );
    h.log.unreadable = true;
    h.apply_image(&image(1, 1, 0));
    assert_eq!(
        only_reply(h.call(0, 1, fetch("s", &p)), 1),
        GroupResponse::Unavailable(ErrorCode::CoordinatorLoadInProgress)
    );
    h.run(200);
    assert!(h.nodes[0].stats().load_failures >= 2);
    assert_eq!(
        only_reply(h.call(0, 2, fetch("s", &p)), 2),
        GroupResponse::Unavailable(ErrorCode::CoordinatorLoadInProgress)
    );
    h.log.unreadable = false;
    h.run(GroupsConfig::sim().load_retry_max_ms + 10);
    assert_eq!(
        fetched_offset(only_reply(h.call(0, 3, fetch("s", &p)), 3)),
        Some(3)
    );
    // Another node: not the coordinator; FindCoordinator names node 1.
    assert_eq!(
        only_reply(h.call(1, 1, fetch("s", &p)), 1),
        GroupResponse::Unavailable(ErrorCode::NotCoordinator)
    );
    let find = GroupRequest::FindCoordinator {
        group_id: "s".to_owned(),
    };
    assert_eq!(
        only_reply(h.call(1, 2, find), 2),
        GroupResponse::Coordinator(Ok(NodeId(1)))
    );
}

/// Gap B, as `GroupHost::coordinating`: without its broker lease a node
/// answers its loaded groups' requests NOT_COORDINATOR (still naming
/// itself in FindCoordinator: its image does), and serves them again as
/// they were once the lease is back.
#[test]
fn a_node_without_its_lease_answers_not_coordinator() {
    let mut h = Harness::new(5);
    h.apply_image(&image(1, 1, 0));
    h.run(100);
    let p = tp("t", 0);
    assert!(h
        .call(0, 1, simple_commit("s", &[(p.clone(), 5)]))
        .is_empty());
    assert_eq!(
        only_reply(h.settle(), 1),
        GroupResponse::Commit(vec![(p.clone(), ErrorCode::None)])
    );
    h.nodes[0].leased = false;
    assert_eq!(
        only_reply(h.call(0, 2, fetch("s", &p)), 2),
        GroupResponse::Unavailable(ErrorCode::NotCoordinator)
    );
    assert_eq!(
        only_reply(h.call(0, 3, simple_commit("s", &[(p.clone(), 6)])), 3),
        GroupResponse::Unavailable(ErrorCode::NotCoordinator)
    );
    let find = GroupRequest::FindCoordinator {
        group_id: "s".to_owned(),
    };
    assert_eq!(
        only_reply(h.call(0, 4, find), 4),
        GroupResponse::Coordinator(Ok(NodeId(1)))
    );
    assert_eq!(h.nodes[0].stats().unleased, 2);
    h.nodes[0].leased = true;
    assert_eq!(
        fetched_offset(only_reply(h.call(0, 5, fetch("s", &p)), 5)),
        Some(5)
    );
}

#[test]
fn the_connection_model_drops_duplicated_reordered_and_pre_start_requests() {
    let mut h = Harness::new(5);
    h.apply_image(&image(1, 1, 0));
    h.run(100);
    let p = tp("t", 0);
    assert!(h
        .call(0, 5, simple_commit("s", &[(p.clone(), 5)]))
        .is_empty());
    assert_eq!(
        only_reply(h.settle(), 5),
        GroupResponse::Commit(vec![(p.clone(), ErrorCode::None)])
    );
    // The same request again, and an older one: not served.
    assert!(h
        .call(0, 5, simple_commit("s", &[(p.clone(), 5)]))
        .is_empty());
    assert!(h
        .call(0, 4, simple_commit("s", &[(p.clone(), 1)]))
        .is_empty());
    assert!(h.settle().is_empty());
    assert_eq!(h.nodes[0].stats().stale_requests, 2);
    assert_eq!(
        fetched_offset(only_reply(h.call(0, 6, fetch("s", &p)), 6)),
        Some(5)
    );
    // A request sent before this NodeGroups started (before a restart).
    let mut rng = SimRng::new(9);
    h.nodes[0] = NodeGroups::new(NodeId(1), GroupsConfig::sim(), &mut rng, h.now);
    let mut out = Vec::new();
    h.nodes[0].apply_image(&image(1, 1, 0), h.now, &mut out);
    h.run(100);
    let mut log = NodeLog {
        log: &mut h.log,
        node: 0,
    };
    h.nodes[0].handle(
        99,
        7,
        h.now - 150,
        fetch("s", &p),
        h.now,
        &mut log,
        &mut out,
    );
    assert!(out.is_empty());
    assert_eq!(
        fetched_offset(only_reply(h.call(0, 8, fetch("s", &p)), 8)),
        Some(5)
    );
}

#[test]
fn members_make_progress_through_loss_duplication_and_failovers() {
    let mut h = Harness::new(6);
    h.loss = 0.02;
    h.duplicate = 0.05;
    h.apply_image(&image(2, 1, 0));
    for c in 1..=4 {
        let group = if c <= 2 { "a" } else { "b" };
        h.add_member(
            c,
            group,
            vec![tp(&format!("t{c}"), 0), tp(&format!("t{c}"), 1)],
        );
    }
    for (round, leader) in [2, 3, 1, 2].into_iter().enumerate() {
        h.run(3_000);
        h.apply_image(&image(2, leader, round as u32 + 1));
    }
    let before_last: Vec<u64> = h.members.iter().map(|m| m.acked).collect();
    h.run(8_000);
    assert_eq!(h.violations, Vec::<String>::new());
    // A lost JoinGroup or FindCoordinator costs its whole timeout, so not
    // every member made it through every move; all rejoined several times
    // and commit at the last coordinator.
    let seen: Vec<(u64, u64)> = h.members.iter().map(|m| (m.joins, m.acked)).collect();
    assert!(h.members.iter().all(|m| m.joins >= 3), "{seen:?}");
    assert!(
        h.members
            .iter()
            .zip(&before_last)
            .all(|(m, b)| m.acked > *b),
        "{seen:?} {before_last:?}"
    );
    assert!(
        h.nodes
            .iter()
            .map(|n| n.stats().stale_requests)
            .sum::<u64>()
            > 0
    );
}

#[test]
fn the_checker_catches_acknowledged_commits_a_new_coordinator_lost() {
    let mut h = Harness::new(7);
    h.apply_image(&image(1, 1, 0));
    h.add_member(1, "g", vec![tp("t", 0)]);
    h.run(2_000);
    assert_eq!(h.violations, Vec::<String>::new());
    assert!(h.members[0].acked > 3);
    // The log loses every commit but the first (a replication bug), and
    // the coordinator moves.
    h.log.truncate_batches(0, 1);
    h.apply_image(&image(1, 2, 1));
    h.run(2_000);
    assert!(
        h.violations
            .iter()
            .any(|v| v.contains("committed offset went backwards: g/t-0")),
        "{:?}",
        h.violations
    );
}

fn sent(req: u64, offset: i64) -> GroupEvent {
    GroupEvent::CommitSent {
        group: "g".to_owned(),
        client: 1,
        req,
        offsets: vec![(tp("t", 0), offset)],
        at_ms: req,
    }
}

fn acked(req: u64, offset: i64) -> GroupEvent {
    GroupEvent::CommitAcked {
        group: "g".to_owned(),
        client: 1,
        req,
        tp: tp("t", 0),
        offset,
        at_ms: req,
    }
}

fn fetch_sent(req: u64) -> GroupEvent {
    GroupEvent::FetchSent {
        group: "g".to_owned(),
        client: 1,
        req,
        at_ms: req,
    }
}

fn fetched(req: u64, offset: Option<i64>) -> GroupEvent {
    GroupEvent::Fetched {
        group: "g".to_owned(),
        client: 1,
        req,
        tp: tp("t", 0),
        offset,
        at_ms: req,
    }
}

fn check(events: &[GroupEvent]) -> (Vec<String>, GroupChecker) {
    let mut checker = GroupChecker::default();
    let violations = events.iter().flat_map(|e| checker.observe(e)).collect();
    (violations, checker)
}

#[test]
fn the_group_rules_accept_good_histories_and_flag_bad_ones() {
    // Good: the latest acknowledged offset comes back.
    let (v, _) = check(&[sent(1, 5), acked(1, 5), fetch_sent(2), fetched(2, Some(5))]);
    assert!(v.is_empty(), "{v:?}");
    // Good: a commit acknowledged after the fetch was sent is no floor.
    let (v, _) = check(&[
        sent(1, 5),
        acked(1, 5),
        sent(2, 7),
        fetch_sent(3),
        acked(2, 7),
        fetched(3, Some(5)),
    ]);
    assert!(v.is_empty(), "{v:?}");
    // Good: an indeterminate commit (never acknowledged) may surface.
    let (v, checker) = check(&[
        sent(1, 5),
        acked(1, 5),
        sent(2, 6),
        sent(3, 7),
        acked(3, 7),
        fetch_sent(4),
        fetched(4, Some(6)),
    ]);
    assert!(v.is_empty(), "{v:?}");
    assert_eq!(checker.indeterminate_seen, 1);
    // Bad: an acknowledged offset went backwards.
    let (v, _) = check(&[
        sent(1, 5),
        acked(1, 5),
        sent(2, 7),
        acked(2, 7),
        fetch_sent(3),
        fetched(3, Some(5)),
    ]);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("went backwards"), "{v:?}");
    // Bad: acknowledged offsets lost altogether.
    let (v, _) = check(&[sent(1, 5), acked(1, 5), fetch_sent(2), fetched(2, None)]);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("lost"), "{v:?}");
    // Bad: an offset nobody committed.
    let (v, _) = check(&[sent(1, 5), fetch_sent(2), fetched(2, Some(42))]);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("phantom"), "{v:?}");
    // At the end: what the coordinator holds, by the same rules.
    let (_, checker) = check(&[sent(1, 5), acked(1, 5), sent(2, 6), sent(3, 7), acked(3, 7)]);
    let t = tp("t", 0);
    assert_eq!(checker.check_final("g", &t, Some(7)), None);
    assert_eq!(checker.check_final("g", &t, Some(6)), None, "indeterminate");
    let backwards = checker.check_final("g", &t, Some(5)).expect("a violation");
    assert!(backwards.contains("went backwards"), "{backwards}");
    let lost = checker.check_final("g", &t, None).expect("a violation");
    assert!(lost.contains("lost"), "{lost}");
    let phantom = checker.check_final("g", &t, Some(8)).expect("a violation");
    assert!(phantom.contains("phantom"), "{phantom}");
    // Bad since the broker lease (gap B): a deposed coordinator's stale
    // answer is held to the rule like any other (it used to be exempt).
    let mut checker = GroupChecker::default();
    let mut v = Vec::new();
    for e in [
        sent(1, 5),
        acked(1, 5),
        sent(2, 7),
        acked(2, 7),
        fetch_sent(3),
    ] {
        v.extend(checker.observe(&e));
    }
    checker.deposed_answer(1, 3);
    v.extend(checker.observe(&fetched(3, Some(5))));
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("went backwards"), "{v:?}");
    assert!(v[0].contains("deposed coordinator"), "{v:?}");
    assert_eq!(checker.deposed_answers, 1);
    // A deposed coordinator that answers what the real one holds: counted,
    // not a violation.
    let mut checker = GroupChecker::default();
    for e in [sent(1, 5), acked(1, 5), fetch_sent(2)] {
        assert!(checker.observe(&e).is_empty());
    }
    checker.deposed_answer(1, 2);
    assert!(checker.observe(&fetched(2, Some(5))).is_empty());
    assert_eq!(checker.deposed_answers, 1);
    // Harness sanity: two writers of one partition.
    let mut other = sent(2, 9);
    if let GroupEvent::CommitSent { client, .. } = &mut other {
        *client = 2;
    }
    let (v, _) = check(&[sent(1, 5), other]);
    assert!(v[0].contains("both commit"), "{v:?}");
}

#[test]
fn find_coordinator_names_the_live_leader_of_the_groups_partition() {
    let image = image(2, 1, 0);
    let mut rng = SimRng::new(1);
    let mut groups = NodeGroups::new(NodeId(2), GroupsConfig::sim(), &mut rng, 0);
    let mut out = Vec::new();
    groups.apply_image(&image, 0, &mut out);
    assert!(out.is_empty());
    assert!(groups.offsets_partitions().is_empty());
    assert_eq!(groups.find_coordinator("g"), Ok(NodeId(1)));
    // A fenced leader is no coordinator.
    let mut fenced = image.clone();
    fenced.insert_broker(BrokerImage {
        fenced: true,
        ..broker(1)
    });
    groups.apply_image(&fenced, 0, &mut out);
    assert_eq!(
        groups.find_coordinator("g"),
        Err(ErrorCode::CoordinatorNotAvailable)
    );
}

#[test]
fn chaos_moves_restarts_and_failing_slow_appends_keep_the_group_rules() {
    let seeds: u64 = std::env::var("CHAOS_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    // Over all seeds, of the nodes' last starts: the faults happened.
    let mut exercised = GroupStats::default();
    for seed in 1..=seeds {
        let mut h = Harness::new(100 + seed);
        h.loss = 0.02;
        h.duplicate = 0.05;
        h.log.slow = Some(SimRng::new(seed).fork("slow"));
        let mut rng = SimRng::new(seed).fork("chaos");
        let mut leaders = vec![(1, 0), (2, 0), (3, 0)];
        h.apply_image(&image_of(&leaders));
        let nodes: Vec<NodeId> = (1..=3).map(NodeId).collect();
        h.members = group_workload(&nodes, 1, 3, 2, &mut rng);
        for _ in 0..250 {
            h.run(100);
            match rng.below(30) {
                0 | 1 => {
                    let p = rng.below(leaders.len() as u64) as usize;
                    leaders[p] = (rng.range(1, 3) as u32, leaders[p].1 + 1);
                    h.apply_image(&image_of(&leaders));
                }
                2 => h.log.mode = Mode::Ok,
                3 => h.log.mode = Mode::Fail(ErrorCode::NotEnoughReplicas),
                4 => h.log.mode = Mode::TimedOut,
                5 => h.log.mode = Mode::Hold,
                6 => {
                    // A crash and restart: its appends in flight die with it.
                    let i = rng.below(3) as usize;
                    h.log.pending.retain(|(node, ..)| *node != i);
                    let mut nonce = rng.fork("restart");
                    h.nodes[i] = NodeGroups::new(
                        NodeId(i as u32 + 1),
                        GroupsConfig::sim(),
                        &mut nonce,
                        h.now,
                    );
                    let mut out = Vec::new();
                    h.nodes[i].apply_image(&image_of(&leaders), h.now, &mut out);
                    assert!(out.is_empty());
                }
                _ => {}
            }
        }
        h.log.mode = Mode::Ok;
        h.log.slow = None;
        h.loss = 0.0;
        let before: Vec<u64> = h.members.iter().map(|m| m.acked).collect();
        h.run(10_000);
        assert_eq!(h.violations, Vec::<String>::new(), "seed {seed}");
        for node in &h.nodes {
            exercised.add(node.stats());
        }
        if std::env::var("CHAOS_STATS").is_ok() {
            let stats: Vec<&GroupStats> = h.nodes.iter().map(|n| n.stats()).collect();
            eprintln!(
                "seed {seed}: acked {} fetched {} indeterminate {} joins {:?} {stats:?}",
                h.checker.commits_acked,
                h.checker.fetches_answered,
                h.checker.indeterminate_seen,
                h.members.iter().map(|m| m.joins).collect::<Vec<_>>()
            );
        }
        assert!(
            h.members.iter().zip(&before).all(|(m, b)| m.acked > *b),
            "seed {seed}: every member commits again once the faults stop"
        );
        // Every acknowledged commit is held by the group's coordinator.
        for m in &h.members {
            let tps: Vec<TopicPartition> = m.last_offsets().keys().cloned().collect();
            let held = h
                .nodes
                .iter()
                .find_map(|n| n.committed(m.group_id(), &tps))
                .expect("the group's coordinator is loaded");
            for (tp, offset) in held {
                let found = h
                    .checker
                    .check_final(m.group_id(), &tp, offset.map(|o| o.offset));
                assert_eq!(found, None, "seed {seed}");
            }
        }
    }
    assert!(exercised.unloads > 0, "{exercised:?}");
    assert!(exercised.appends_failed > 0, "{exercised:?}");
    assert!(exercised.stale_requests > 0, "{exercised:?}");
    assert!(exercised.records_replayed > 0, "{exercised:?}");
}
