//! Two or three `NodeData`s driven by hand: a tiny world that delivers
//! their messages at once (or drops those of a cut node), steps time to
//! the next wake-up, and answers nothing to the controller unless a test
//! does. Images are hand-made.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use super::*;
use crate::disk::Crash;
use fjord_broker::metadata::image::TopicImage;
use fjord_storage::LogConfig;

const T: &str = "t";

fn config() -> DataConfig {
    config_with_lag(10_000)
}

fn config_with_lag(replica_lag_time_max_ms: u64) -> DataConfig {
    DataConfig {
        replica_lag_time_max_ms,
        fetcher: ReplicaFetcherConfig {
            wait_max_ms: 100,
            backoff_ms: 50,
            backoff_max_ms: 200,
            request_timeout_ms: 300,
            ..ReplicaFetcherConfig::default()
        },
        ack_timeout_ms: 30_000,
        flush_interval_ms: 100,
        producer_state: ProducerStateConfig::default(),
    }
}

fn topic_config(min_insync: u32, flush_before_ack: bool) -> TopicConfig {
    let mut config = TopicConfig::from_log_config(&LogConfig::default());
    config.min_insync_replicas = min_insync;
    config.flush_before_ack = flush_before_ack;
    config
}

fn n(id: u32) -> NodeId {
    NodeId(id)
}

/// A one-partition topic `t` as the controller would commit it.
fn image(
    replicas: &[u32],
    isr: &[u32],
    leader: Option<u32>,
    epoch: u32,
    partition_epoch: u32,
    config: &TopicConfig,
) -> MetadataImage {
    MetadataImage::default().with_topic(TopicImage {
        id: TopicId([7; 16]),
        name: T.to_owned(),
        config: config.clone(),
        created_ms: 0,
        overrides: None,
        partitions: vec![PartitionImage {
            replicas: replicas.iter().copied().map(NodeId).collect(),
            isr: isr.iter().copied().map(NodeId).collect(),
            leader: leader.map(NodeId),
            leader_epoch: LeaderEpoch(epoch),
            partition_epoch,
        }],
    })
}

#[derive(Debug)]
struct World {
    now: u64,
    nodes: BTreeMap<NodeId, NodeData>,
    down: BTreeMap<NodeId, NodeDisk>,
    queue: VecDeque<(NodeId, NodeId, ReplicaMsg)>,
    /// Nodes whose messages (both ways) are dropped.
    cut: BTreeSet<NodeId>,
    produced: BTreeMap<u64, Result<i64, ErrorCode>>,
    alters: Vec<(NodeId, u64, ControllerCommand)>,
    image: Arc<MetadataImage>,
    next_produce: u64,
    config: DataConfig,
}

impl World {
    fn new(nodes: &[u32]) -> World {
        World::with_config(nodes, config())
    }

    fn with_config(nodes: &[u32], config: DataConfig) -> World {
        World {
            config,
            now: 0,
            nodes: nodes
                .iter()
                .map(|&i| (n(i), NodeData::open(n(i), config, NodeDisk::new(), 0)))
                .collect(),
            down: BTreeMap::new(),
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            produced: BTreeMap::new(),
            alters: Vec::new(),
            image: Arc::new(MetadataImage::default()),
            next_produce: 0,
        }
    }

    fn node(&self, id: u32) -> &NodeData {
        &self.nodes[&n(id)]
    }

    fn node_mut(&mut self, id: u32) -> &mut NodeData {
        self.nodes.get_mut(&n(id)).expect("node up")
    }

    fn handle(&mut self, from: NodeId, outs: Vec<Out>) {
        for out in outs {
            match out {
                Out::Send { to, msg } => self.queue.push_back((from, to, msg)),
                Out::Produced { id, result } => {
                    assert!(
                        self.produced.insert(id, result).is_none(),
                        "produce {id} answered twice"
                    );
                }
                Out::Controller { id, command } => self.alters.push((from, id, command)),
            }
        }
    }

    fn deliver(&mut self) {
        let mut steps = 0;
        while let Some((from, to, msg)) = self.queue.pop_front() {
            steps += 1;
            assert!(steps < 100_000, "messages do not quiesce");
            if self.cut.contains(&from) || self.cut.contains(&to) {
                continue;
            }
            let now = self.now;
            let Some(node) = self.nodes.get_mut(&to) else {
                continue;
            };
            let mut out = Vec::new();
            node.on_message(from, msg, now, &mut out);
            self.handle(to, out);
        }
    }

    fn apply(&mut self, image: MetadataImage) {
        self.image = Arc::new(image);
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            let mut out = Vec::new();
            let now = self.now;
            let image = self.image.clone();
            self.nodes
                .get_mut(&id)
                .expect("up")
                .apply_image(&image, now, &mut out);
            self.handle(id, out);
        }
        self.deliver();
    }

    /// Steps time to `until`, polling each node at its wake-ups.
    fn run_until(&mut self, until: u64) {
        loop {
            let next = self
                .nodes
                .values()
                .filter_map(NodeData::next_wakeup)
                .min()
                .unwrap_or(until);
            let at = next.max(self.now).min(until);
            self.now = at;
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                let mut out = Vec::new();
                self.nodes.get_mut(&id).expect("up").poll(at, &mut out);
                self.handle(id, out);
            }
            self.deliver();
            if at >= until {
                return;
            }
        }
    }

    fn run_for(&mut self, ms: u64) {
        self.run_until(self.now + ms);
    }

    fn produce(
        &mut self,
        to: u32,
        acks: i8,
        producer: Option<(i64, i16, i32)>,
        values: &[&str],
    ) -> u64 {
        self.next_produce += 1;
        let id = self.next_produce;
        let req = ProduceRequest {
            id,
            topic: T.to_owned(),
            partition: 0,
            acks,
            producer,
            records: values
                .iter()
                .map(|v| (Bytes::from(format!("k-{v}")), Bytes::from(v.to_string())))
                .collect(),
            timeout_ms: 5_000,
            current_leader_epoch: None,
        };
        let mut out = Vec::new();
        let now = self.now;
        self.node_mut(to).produce(req, now, &mut out);
        self.handle(n(to), out);
        self.deliver();
        id
    }

    fn crash(&mut self, id: u32, mode: Crash) {
        let data = self.nodes.remove(&n(id)).expect("up");
        let mut disk = data.into_disk();
        disk.crash_with(mode);
        self.down.insert(n(id), disk);
    }

    fn restart(&mut self, id: u32) {
        let disk = self.down.remove(&n(id)).expect("down");
        let mut data = NodeData::open(n(id), self.config, disk, self.now);
        let mut out = Vec::new();
        data.apply_image(&self.image, self.now, &mut out);
        self.nodes.insert(n(id), data);
        self.handle(n(id), out);
        self.deliver();
    }

    fn view(&self, id: u32) -> ReplicaView {
        self.node(id)
            .inspect()
            .into_iter()
            .find(|v| v.topic == T)
            .expect("replica")
    }

    fn values(&self, id: u32) -> Vec<(u64, String)> {
        self.view(id)
            .records
            .iter()
            .map(|r| {
                let value = r.value.as_ref().expect("value");
                (r.offset, String::from_utf8_lossy(value).into_owned())
            })
            .collect()
    }
}

fn strings(items: &[(u64, &str)]) -> Vec<(u64, String)> {
    items.iter().map(|(o, v)| (*o, v.to_string())).collect()
}

/// An acks=all produce is answered only once the follower fetched the
/// batch (and, the topic flushing before ack, made it durable): while the
/// follower is cut off it waits; the follower's request fails by its
/// timeout, it fetches again after the link heals, and the produce
/// completes with both replicas holding the same records.
#[test]
fn acks_all_completes_only_once_the_follower_fetched() {
    let mut w = World::new(&[1, 2]);
    let config = topic_config(1, true);
    w.apply(image(&[1, 2], &[1, 2], Some(1), 1, 0, &config));
    assert_eq!(w.view(2).role, Role::Follower { leader: Some(n(1)) });
    w.run_for(50);

    w.cut.insert(n(2));
    let id = w.produce(1, -1, None, &["a", "b"]);
    w.run_for(200);
    assert_eq!(w.produced.get(&id), None, "waits for the follower");
    assert_eq!(w.view(1).high_watermark, 0);
    assert_eq!(w.view(2).log_end, 0);

    w.cut.clear();
    w.run_for(1_000);
    assert_eq!(w.produced.get(&id), Some(&Ok(0)));
    let (leader, follower) = (w.view(1), w.view(2));
    assert_eq!((leader.high_watermark, leader.durable_end), (2, 2));
    assert_eq!((follower.log_end, follower.durable_end), (2, 2));
    assert_eq!(leader.records, follower.records);
    assert_eq!(w.values(2), strings(&[(0, "a"), (1, "b")]));
    assert_eq!(follower.records[0].leader_epoch, 1);
}

/// acks=all with fewer in-sync replicas than `min.insync.replicas` is
/// refused before anything is appended; acks=1 still appends.
#[test]
fn acks_all_with_too_small_an_isr_is_refused() {
    let mut w = World::new(&[1, 2]);
    let config = topic_config(2, true);
    w.apply(image(&[1, 2], &[1], Some(1), 1, 0, &config));
    let refused = w.produce(1, -1, None, &["a"]);
    assert_eq!(w.produced[&refused], Err(ErrorCode::NotEnoughReplicas));
    assert_eq!(w.view(1).log_end, 0);
    let acked = w.produce(1, 1, None, &["b"]);
    assert_eq!(w.produced[&acked], Ok(0));
    // A follower refuses produces and consumer fetches.
    let at_follower = w.produce(2, 1, None, &["c"]);
    assert_eq!(
        w.produced[&at_follower],
        Err(ErrorCode::NotLeaderOrFollower)
    );
    let fetched = w.node(2).fetch(&ConsumerFetch {
        topic: T.to_owned(),
        partition: 0,
        offset: 0,
        max_bytes: 1 << 20,
        current_leader_epoch: None,
    });
    assert_eq!(fetched.error, ErrorCode::NotLeaderOrFollower);
}

/// An idempotent producer's retry of a written batch is answered with its
/// original offset and appends nothing — on the leader that wrote it and,
/// after a leader change, on the follower that replicated the producer
/// state with the batches.
#[test]
fn an_idempotent_duplicate_returns_the_original_offset() {
    let mut w = World::new(&[1, 2]);
    let config = topic_config(1, true);
    w.apply(image(&[1, 2], &[1, 2], Some(1), 1, 0, &config));
    let first = w.produce(1, -1, Some((7, 0, 0)), &["a", "b"]);
    let second = w.produce(1, -1, Some((7, 0, 2)), &["c"]);
    assert_eq!(w.produced[&first], Ok(0));
    assert_eq!(w.produced[&second], Ok(2));
    let again = w.produce(1, -1, Some((7, 0, 0)), &["a", "b"]);
    assert_eq!(w.produced[&again], Ok(0));
    assert_eq!(w.view(1).log_end, 3);
    // A sequence gap is refused.
    let gap = w.produce(1, 1, Some((7, 0, 9)), &["x"]);
    assert_eq!(w.produced[&gap], Err(ErrorCode::OutOfOrderSequenceNumber));

    w.apply(image(&[1, 2], &[2, 1], Some(2), 2, 1, &config));
    let retry = w.produce(2, -1, Some((7, 0, 2)), &["c"]);
    assert_eq!(w.produced[&retry], Ok(2));
    let next = w.produce(2, -1, Some((7, 0, 3)), &["d"]);
    assert_eq!(w.produced[&next], Ok(3));
    assert_eq!(w.view(1).records, w.view(2).records);
    let seqs: Vec<_> = w.view(1).records.iter().map(|r| r.producer).collect();
    assert_eq!(
        seqs,
        vec![
            Some((7, 0, 0)),
            Some((7, 0, 1)),
            Some((7, 0, 2)),
            Some((7, 0, 3))
        ]
    );
}

/// A follower of a topic that does not flush before ack crashes: its
/// unsynced tail is lost; it recovers the durable prefix, fetches the rest
/// again, and ends identical to the leader.
#[test]
fn a_follower_crash_loses_its_unsynced_tail_and_fetches_it_again() {
    let mut w = World::new(&[1, 2]);
    let config = topic_config(1, false);
    w.apply(image(&[1, 2], &[1, 2], Some(1), 1, 0, &config));
    for v in ["a", "b", "c"] {
        let id = w.produce(1, -1, None, &[v]);
        assert!(w.produced[&id].is_ok());
    }
    assert_eq!(w.view(2).log_end, 3);
    assert_eq!(w.view(2).durable_end, 0, "nothing flushed");

    w.crash(2, Crash::LoseUnsynced);
    let disk = w.down[&n(2)].partitions().next().expect("on disk").1;
    assert_eq!(disk.len(), 0, "the unsynced tail is gone");
    w.cut.insert(n(2));
    w.restart(2);
    assert_eq!(w.view(2).log_end, 0, "recovered empty");
    w.cut.clear();
    w.run_for(1_000);
    assert_eq!(w.view(2).log_end, 3);
    assert_eq!(w.view(1).records, w.view(2).records);
}

/// A crash tears the last unsynced batch (and leaves zero padding):
/// recovery's verifying scan cuts the file where the valid batches end;
/// the durable batch survives, offsets continue after what is left.
#[test]
fn a_torn_tail_is_cut_at_recovery() {
    let mut w = World::new(&[1]);
    let config = topic_config(1, true);
    w.apply(image(&[1], &[1], Some(1), 1, 0, &config));
    let durable = w.produce(1, -1, None, &["a"]);
    assert_eq!(w.produced[&durable], Ok(0));
    w.produce(1, 1, None, &["b"]);
    w.produce(1, 1, None, &["c"]);
    let disk = w
        .node(1)
        .disk()
        .partitions()
        .next()
        .expect("on disk")
        .1
        .clone();
    let unsynced = disk.len() - disk.durable_len();
    assert!(unsynced > 0);
    // The second batch whole, the third cut in its middle, then zeros.
    let second_len = unsynced / 2;
    w.crash(
        1,
        Crash::Torn {
            keep: second_len + 30,
            zeros: 512,
        },
    );
    w.restart(1);
    assert_eq!(w.node(1).recovered_cut_bytes, 30 + 512);
    let view = w.view(1);
    assert_eq!(
        (view.log_end, view.high_watermark, view.durable_end),
        (2, 2, 2)
    );
    assert_eq!(w.values(1), strings(&[(0, "a"), (1, "b")]));
    let next = w.produce(1, 1, None, &["d"]);
    assert_eq!(w.produced[&next], Ok(2));
}

/// KIP-279: the old leader appended a batch no follower got; the other
/// replica is elected and writes its own at the same offset; the old
/// leader, now following, asks where epoch 1 ends, truncates its
/// divergent tail there and replicates the new leader's batch.
#[test]
fn a_leader_change_truncates_the_divergent_tail() {
    let mut w = World::new(&[1, 2]);
    let config = topic_config(1, true);
    w.apply(image(&[1, 2], &[1, 2], Some(1), 1, 0, &config));
    let committed = w.produce(1, -1, None, &["a"]);
    assert_eq!(w.produced[&committed], Ok(0));

    w.cut.insert(n(1));
    let lost = w.produce(1, 1, None, &["lost"]);
    assert_eq!(w.produced[&lost], Ok(1));
    w.apply(image(&[1, 2], &[2], Some(2), 2, 1, &config));
    let new = w.produce(2, 1, None, &["new"]);
    assert_eq!(w.produced[&new], Ok(1));
    assert_eq!(w.values(1), strings(&[(0, "a"), (1, "lost")]));

    w.cut.clear();
    w.run_for(1_000);
    assert_eq!(w.values(1), strings(&[(0, "a"), (1, "new")]));
    assert_eq!(w.view(1).records, w.view(2).records);
    assert_eq!(w.view(1).epochs, vec![(1, 0), (2, 1)]);
    // The truncation and the checkpoint are durable: a crash keeps them.
    w.crash(1, Crash::LoseUnsynced);
    w.restart(1);
    assert_eq!(w.values(1)[..1], strings(&[(0, "a")])[..]);
    w.run_for(500);
    assert_eq!(w.view(1).records, w.view(2).records);
}

/// A slow follower disk: the follower's flush holds its fetcher, so the
/// acks=all produce completes only once the fdatasync did.
#[test]
fn a_slow_follower_disk_delays_acks_all() {
    let mut w = World::new(&[1, 2]);
    let config = topic_config(1, true);
    w.apply(image(&[1, 2], &[1, 2], Some(1), 1, 0, &config));
    w.run_for(10);
    w.node_mut(2).disk_mut().set_sync_delay_ms(70);
    let id = w.produce(1, -1, None, &["a"]);
    w.run_for(60);
    assert_eq!(w.produced.get(&id), None);
    assert_eq!(w.view(2).durable_end, 0);
    w.run_for(200);
    assert_eq!(w.produced.get(&id), Some(&Ok(0)));
}

/// A full disk refuses the leader's append (KAFKA_STORAGE_ERROR) and
/// appends nothing; once space is back, produces go on.
#[test]
fn a_full_disk_refuses_appends() {
    let mut w = World::new(&[1]);
    let config = topic_config(1, true);
    w.apply(image(&[1], &[1], Some(1), 1, 0, &config));
    w.node_mut(1).disk_mut().set_full(true);
    let refused = w.produce(1, 1, None, &["a"]);
    assert_eq!(w.produced[&refused], Err(ErrorCode::KafkaStorageError));
    assert_eq!(w.view(1).log_end, 0);
    w.node_mut(1).disk_mut().set_full(false);
    let acked = w.produce(1, -1, None, &["b"]);
    assert_eq!(w.produced[&acked], Ok(0));
}

/// A follower that stops fetching is proposed out of the ISR after
/// `replica_lag_time_max_ms` (AlterPartition to the controller); a refusal
/// lets the leader propose again at a later tick; an acks=all produce
/// meanwhile times out (REQUEST_TIMED_OUT), and the committed shrink
/// releases the next one's waiter.
#[test]
fn a_lagging_follower_is_proposed_out_of_the_isr() {
    let mut w = World::new(&[1, 2]);
    let config = topic_config(1, true);
    w.apply(image(&[1, 2], &[1, 2], Some(1), 1, 0, &config));
    w.cut.insert(n(2));
    let id = w.produce(1, -1, None, &["a"]);
    w.run_for(9_000);
    assert!(w.alters.is_empty());
    // Ticks every 2.5 s: the one at 12.5 s finds it lagging > 10 s.
    w.run_for(4_000);
    let (from, alter, command) = w.alters.pop().expect("a shrink proposed");
    assert_eq!(from, n(1));
    let ControllerCommand::AlterPartition {
        new_isr,
        partition_epoch,
        leader_epoch,
        ..
    } = command
    else {
        panic!("not an AlterPartition: {command:?}");
    };
    assert_eq!(
        (new_isr, partition_epoch, leader_epoch),
        (vec![n(1)], 0, LeaderEpoch(1))
    );
    let mut out = Vec::new();
    let now = w.now;
    w.node_mut(1)
        .on_alter_partition_answer(alter, ErrorCode::RequestTimedOut, now, &mut out);
    w.handle(n(1), out);
    w.run_for(3_000);
    assert!(!w.alters.is_empty(), "proposed again after the refusal");
    // The first produce's 5 s ran out long ago; its record stays.
    assert_eq!(w.produced.get(&id), Some(&Err(ErrorCode::RequestTimedOut)));
    let waiting = w.produce(1, -1, None, &["b"]);
    assert_eq!(w.produced.get(&waiting), None);
    w.apply(image(&[1, 2], &[1], Some(1), 1, 1, &config));
    assert_eq!(w.produced.get(&waiting), Some(&Ok(1)));
}

/// A consumer that read to the old leader's high watermark fetches from
/// the new leader, whose high watermark (learned one fetch round late)
/// is still below that offset: the fetch is answered empty, not
/// OFFSET_OUT_OF_RANGE (which would make the consumer reset its
/// position: skip or re-read records).
#[test]
fn a_consumer_past_a_new_leaders_high_watermark_is_not_out_of_range() {
    let mut w = World::new(&[1, 2]);
    let config = topic_config(1, true);
    w.apply(image(&[1, 2], &[1, 2], Some(1), 1, 0, &config));
    let id = w.produce(1, -1, None, &["a"]);
    assert_eq!(w.produced[&id], Ok(0));
    let fetch = |w: &World, node: u32, offset: u64| {
        w.node(node).fetch(&ConsumerFetch {
            topic: T.to_owned(),
            partition: 0,
            offset,
            max_bytes: 1 << 20,
            current_leader_epoch: None,
        })
    };
    let read = fetch(&w, 1, 0);
    assert_eq!(
        (read.error, read.high_watermark, read.records.len()),
        (ErrorCode::None, 1, 1)
    );
    assert_eq!(
        w.view(2).high_watermark,
        0,
        "the follower learns it with its next fetch"
    );
    // Node 1 is cut off: it does not fetch from the new leader yet.
    w.cut.insert(n(1));
    w.apply(image(&[1, 2], &[2, 1], Some(2), 2, 1, &config));
    let read = fetch(&w, 2, 1);
    assert_eq!(
        (read.error, read.high_watermark, read.records.len()),
        (ErrorCode::None, 0, 0)
    );
    // Past the log end is out of range.
    assert_eq!(fetch(&w, 2, 2).error, ErrorCode::OffsetOutOfRange);
}

/// A follower that has a batch the ISR does not all have restarts, and is
/// elected before anyone fetched from it: its high watermark must not be
/// its log end (what it had on disk), or consumers read a record that the
/// other ISR member lacks — gone for good once that member leads.
#[test]
fn a_restarted_replica_elected_leader_does_not_expose_unreplicated_records() {
    let mut w = World::new(&[1, 2, 3]);
    let config = topic_config(1, true);
    w.apply(image(&[1, 2, 3], &[1, 2, 3], Some(1), 1, 0, &config));
    w.cut.insert(n(3));
    let id = w.produce(1, 1, None, &["x"]);
    assert_eq!(w.produced[&id], Ok(0));
    w.run_for(10);
    assert_eq!(w.view(2).log_end, 1, "node 2 has it");
    assert_eq!(w.view(1).high_watermark, 0, "node 3 does not");

    // Node 2 restarts; node 1 is lost; node 2 is elected from the ISR
    // before node 3 (still cut off) fetched from it.
    w.crash(2, Crash::KeepAll);
    w.cut.insert(n(1));
    w.restart(2);
    w.apply(image(&[1, 2, 3], &[2, 3], Some(2), 2, 1, &config));
    assert_eq!(w.view(2).role, Role::Leader);
    let read = w.node(2).fetch(&ConsumerFetch {
        topic: T.to_owned(),
        partition: 0,
        offset: 0,
        max_bytes: 1 << 20,
        current_leader_epoch: None,
    });
    assert_eq!(
        (read.high_watermark, read.records.len()),
        (0, 0),
        "x is not on node 3"
    );

    // Node 3 fetches: now it has x, and the high watermark passes it.
    w.cut.remove(&n(3));
    w.run_for(500);
    assert_eq!(w.view(2).high_watermark, 1);
    assert_eq!(w.view(2).records, w.view(3).records);
}

/// The test world as a tiny controller: commits an AlterPartition whose
/// partition epoch matches (the new ISR, partition epoch + 1) and refuses
/// others, and elects the first live ISR member when the leader is down.
fn control(w: &mut World, config: &TopicConfig, live: &BTreeSet<NodeId>) {
    let current = |w: &World| w.image.get(T).expect("topic").partitions[0].clone();
    for (from, id, command) in std::mem::take(&mut w.alters) {
        let ControllerCommand::AlterPartition {
            partition_epoch,
            leader_epoch,
            new_isr,
            ..
        } = command
        else {
            continue;
        };
        let p = current(w);
        let ok = p.partition_epoch == partition_epoch
            && p.leader_epoch == leader_epoch
            && p.leader == Some(from);
        if ok {
            let isr: Vec<u32> = new_isr.iter().map(|n| n.get()).collect();
            let replicas: Vec<u32> = p.replicas.iter().map(|n| n.get()).collect();
            w.apply(image(
                &replicas,
                &isr,
                p.leader.map(NodeId::get),
                p.leader_epoch.get(),
                p.partition_epoch + 1,
                config,
            ));
        }
        if let Some(node) = w.nodes.get_mut(&from) {
            let mut out = Vec::new();
            let error = if ok {
                ErrorCode::None
            } else {
                ErrorCode::InvalidRequest
            };
            node.on_alter_partition_answer(id, error, w.now, &mut out);
            w.handle(from, out);
        }
    }
    let p = current(w);
    if p.leader.is_none_or(|l| !live.contains(&l)) {
        let leader = p.isr.iter().find(|n| live.contains(n)).map(|n| n.get());
        if leader != p.leader.map(NodeId::get) {
            let isr: Vec<u32> = p.isr.iter().map(|n| n.get()).collect();
            let replicas: Vec<u32> = p.replicas.iter().map(|n| n.get()).collect();
            w.apply(image(
                &replicas,
                &isr,
                leader,
                p.leader_epoch.get() + 1,
                p.partition_epoch + 1,
                config,
            ));
        }
    }
}

/// One seeded run: three replicas, an idempotent acks=all producer and
/// an acks=1 one writing to whoever leads, followers and leaders crashing
/// (unsynced bytes lost, kept or torn) and restarting, links cut and
/// healed, slow disks; then every fault healed. Returns the run's
/// transcript (every answer and every replica at the end).
fn random_run(seed: u64, config: &TopicConfig) -> String {
    let mut rng = crate::rng::SimRng::new(seed);
    let mut faults = rng.fork("faults");
    // A short lag time: ISR shrinks and expansions happen within a run.
    let mut w = World::with_config(&[1, 2, 3], config_with_lag(1_000));
    w.apply(image(&[1, 2, 3], &[1, 2, 3], Some(1), 1, 0, config));
    let mut live: BTreeSet<NodeId> = [n(1), n(2), n(3)].into();
    let mut transcript = String::new();
    // The idempotent producer: one batch in flight, retried with the same
    // sequence and value until acknowledged, as a client does.
    let mut all_sent: BTreeMap<u64, String> = BTreeMap::new();
    let mut in_flight: Option<u64> = None;
    let mut current = (0i32, String::from("v0"));
    for step in 0..300u64 {
        match rng.below(10) {
            0 if live.len() > 1 => {
                let victim = *faults
                    .pick(&live.iter().copied().collect::<Vec<_>>())
                    .expect("live");
                live.remove(&victim);
                let data = w.nodes.remove(&victim).expect("up");
                let mut disk = data.into_disk();
                disk.crash(&mut faults);
                w.down.insert(victim, disk);
                transcript.push_str(&format!("{step}: crash {victim}\n"));
            }
            1 if !w.down.is_empty() => {
                let back = *w.down.keys().next().expect("down");
                live.insert(back);
                w.restart(back.get());
                transcript.push_str(&format!("{step}: restart {back}\n"));
            }
            2 => {
                let node = n(faults.range(1, 3) as u32);
                if !w.cut.remove(&node) {
                    w.cut.insert(node);
                }
            }
            3 => {
                let node = n(faults.range(1, 3) as u32);
                if let Some(data) = w.nodes.get_mut(&node) {
                    data.disk_mut().set_sync_delay_ms(faults.below(3) * 40);
                }
            }
            _ => {
                let leader = w.image.get(T).expect("topic").partitions[0].leader;
                if let Some(leader) = leader.filter(|l| w.nodes.contains_key(l)) {
                    let value = format!("v{step}");
                    if rng.chance(0.5) {
                        match in_flight.map(|id| w.produced.get(&id)) {
                            Some(None) => {}
                            answered => {
                                if let Some(Some(Ok(_))) = answered {
                                    current = (current.0 + 1, value);
                                }
                                let (seq, value) = current.clone();
                                let id = w.produce(leader.get(), -1, Some((1, 0, seq)), &[&value]);
                                all_sent.insert(id, value);
                                in_flight = Some(id);
                            }
                        }
                    } else {
                        w.produce(leader.get(), 1, None, &[&value]);
                    }
                }
            }
        }
        w.run_for(rng.range(1, 300));
        control(&mut w, config, &live);
    }
    // Heal: every node back, every link up, fast disks.
    w.cut.clear();
    let down: Vec<NodeId> = w.down.keys().copied().collect();
    for node in down {
        live.insert(node);
        w.restart(node.get());
    }
    for data in w.nodes.values_mut() {
        data.disk_mut().set_sync_delay_ms(0);
    }
    for _ in 0..20 {
        w.run_for(1_000);
        control(&mut w, config, &live);
    }
    for (id, result) in &w.produced {
        transcript.push_str(&format!("#{id} {result:?}\n"));
    }
    // Every replica holds the same records, the leader's HW at its end.
    let views: Vec<ReplicaView> = w.nodes.values().map(|d| d.inspect().remove(0)).collect();
    for v in &views[1..] {
        assert_eq!(v.records, views[0].records, "seed {seed}: replicas differ");
    }
    let leader = views
        .iter()
        .find(|v| v.role == Role::Leader)
        .expect("a leader");
    assert_eq!(leader.high_watermark, leader.log_end, "seed {seed}");
    let mut seqs = BTreeSet::new();
    for r in &leader.records {
        if let Some((_, _, seq)) = r.producer {
            assert!(seqs.insert(seq), "seed {seed}: sequence {seq} twice");
        }
    }
    if config.flush_before_ack {
        // Acknowledged acks=all records are durable on every ISR member:
        // none lost or moved.
        for (id, value) in &all_sent {
            if let Some(Ok(base)) = w.produced.get(id) {
                let at = leader.records.iter().find(|r| r.offset == *base as u64);
                let found = at.and_then(|r| r.value.clone());
                assert_eq!(
                    found.as_deref(),
                    Some(value.as_bytes()),
                    "seed {seed}: produce #{id} acknowledged at {base}"
                );
            }
        }
    }
    for node in w.nodes.values() {
        for v in node.inspect() {
            transcript.push_str(&format!("{v:?}\n"));
        }
    }
    transcript
}

/// Seeded runs replay bit for bit, and after healing every replica holds
/// the same records, the leader's high watermark at its log end, the
/// idempotent producer's sequences once each and — the topic flushing
/// before ack — every acknowledged acks=all record at its offset.
/// `FJORD_SIM_DATA_SEEDS=N` runs N seeds per topic config (12 by default).
#[test]
fn seeded_runs_replay_and_converge() {
    let seeds: u64 = std::env::var("FJORD_SIM_DATA_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    for (min_insync, flush_before_ack) in [(1, true), (2, true), (1, false)] {
        let config = topic_config(min_insync, flush_before_ack);
        for seed in 0..seeds {
            let first = random_run(seed, &config);
            assert_eq!(first, random_run(seed, &config), "seed {seed} replays");
        }
    }
}

/// A follower's request from before its crash is answered after its
/// restart: the answer carries the old incarnation's id and is dropped,
/// never taken for the new fetcher's request.
#[test]
fn an_answer_to_a_request_of_an_earlier_incarnation_is_dropped() {
    let mut w = World::new(&[1, 2]);
    let config = topic_config(1, true);
    w.apply(image(&[1, 2], &[1, 2], Some(1), 1, 0, &config));
    w.run_for(10);
    // Node 2's long-poll is held by node 1; node 2 crashes meanwhile.
    w.crash(2, Crash::KeepAll);
    let mut out = Vec::new();
    let req = ProduceRequest {
        id: 99,
        topic: T.to_owned(),
        partition: 0,
        acks: 1,
        producer: None,
        records: vec![(Bytes::from("k"), Bytes::from("a"))],
        timeout_ms: 1_000,
        current_leader_epoch: None,
    };
    let now = w.now;
    w.node_mut(1).produce(req, now, &mut out);
    w.handle(n(1), out);
    assert_eq!(w.produced[&99], Ok(0));
    let stale: Vec<_> = w.queue.drain(..).collect();
    assert_eq!(stale.len(), 1, "the held fetch answered: {stale:?}");
    w.cut.insert(n(1));
    w.restart(2);
    let (from, to, msg) = stale.into_iter().next().expect("one");
    let ReplicaMsg::FetchReply { id: old, .. } = &msg else {
        panic!("not a fetch reply: {msg:?}");
    };
    assert!(*old < 2 << 40, "an id of the first incarnation");
    let mut out = Vec::new();
    let now = w.now;
    w.node_mut(to.get()).on_message(from, msg, now, &mut out);
    assert_eq!(w.view(2).log_end, 0, "the stale answer is not applied");
    w.cut.clear();
    w.run_for(1_000);
    assert_eq!(w.view(2).records, w.view(1).records);
}
