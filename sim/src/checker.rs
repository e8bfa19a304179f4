//! The invariants every run is held to, checked as the run goes (on every
//! metadata image a node applies, on every acknowledgement a client gets)
//! and at its end (after every fault healed and a quiet period).
//!
//! Metadata (the quorum and the controller):
//! - **one image per index**: two nodes that applied the metadata log up
//!   to the same index hold the same image (compared by its encoded
//!   snapshot) — Raft's log matching, through our fold;
//! - **one leader per partition epoch**: no two images, on any nodes,
//!   name different leaders for the same (topic id, partition, leader
//!   epoch);
//! - **convergence** (liveness, after the faults heal): every node
//!   applied the same image, every broker is registered and unfenced,
//!   every partition has a leader;
//! - **producer ids never handed out twice**: the blocks the controller
//!   answers `AllocateProducerIds` with are disjoint.
//!
//! Data (the partitions, replication, the producers):
//! - **no acknowledged acks=all write lost or moved**: every record of an
//!   acks=all produce answered with base offset `b` is, at the end, in the
//!   leader's log at `b + i`, below the high watermark, with its value;
//! - **offsets never reused**: no two acks=all acknowledgements name the
//!   same offset of a partition for different records, and no read below
//!   the high watermark ever returns a different record at an offset than
//!   an earlier read or acknowledgement put there;
//! - **replicas identical below the high watermark**: at the end, every
//!   in-sync replica holds the leader's records below the leader's high
//!   watermark, offset for offset;
//! - **one leader acknowledging per partition epoch**: every
//!   acknowledgement names the node and leader epoch that appended it; no
//!   (partition, leader epoch) is acknowledged by two nodes;
//! - **the idempotent producer never duplicates**: every value (unique
//!   per send) sent by an idempotent producer appears at most once in the
//!   final log; no value appears that was never sent (phantom).
//!
//! acks=1 acknowledgements may be lost when the leader fails before its
//! followers copy them (Kafka's contract): they are counted, not checked.
//!
//! Consumer groups: committed offsets never go backwards and are never
//! phantoms (`crate::groups::GroupChecker` states the rules exactly), on
//! every event of a group member ([`Checker::group_event`]).

use std::collections::BTreeMap;

use fjord_broker::controller::fold::encode_snapshot;
use fjord_broker::metadata::image::{MetadataImage, TopicId};
use fjord_schema::NodeId;

/// A produce acknowledged to a client: its records are at
/// `base_offset..`, appended by `node` leading at `leader_epoch`.
#[derive(Debug, Clone)]
pub struct Ack {
    pub topic: String,
    pub partition: u32,
    pub base_offset: u64,
    /// The records' values (unique per send), in order.
    pub values: Vec<Vec<u8>>,
    pub acks: i8,
    pub node: NodeId,
    pub leader_epoch: u32,
}

/// One partition's final state on one replica, for the end checks.
#[derive(Debug, Clone)]
pub struct FinalReplica {
    pub node: NodeId,
    pub leader: bool,
    pub in_sync: bool,
    pub high_watermark: u64,
    /// (offset, value) of every record, in offset order.
    pub records: Vec<(u64, Vec<u8>)>,
}

use crate::groups::{GroupChecker, GroupEvent};

/// What the checker saw and found. Lives in: the world of one run.
#[derive(Debug, Default)]
pub struct Checker {
    violations: Vec<String>,
    /// Every value sent, and whether its producer was idempotent.
    sent: BTreeMap<Vec<u8>, bool>,
    /// (topic, partition, offset) → the value acknowledged there (acks=all).
    settled: BTreeMap<(String, u32, u64), Vec<u8>>,
    /// acks=all acknowledgements: (topic, partition) → offset → value.
    acked: BTreeMap<(String, u32), BTreeMap<u64, Vec<u8>>>,
    /// (topic, partition, leader epoch) → the node acknowledging in it.
    acking: BTreeMap<(String, u32, u32), NodeId>,
    /// acks=1 acknowledgements (offset, value), checked only for counts.
    acked_leader_only: BTreeMap<(String, u32), BTreeMap<u64, Vec<u8>>>,
    /// Producer id blocks handed out: first → size.
    producer_ids: BTreeMap<i64, u32>,
    /// acks=1 records acknowledged and not in the final log.
    pub leader_only_lost: u64,
    /// Records acknowledged (acks=all), and read by consumers.
    pub acked_records: u64,
    pub read_records: u64,
    /// Applied index → (fingerprint of the image, first node seen at it).
    images: BTreeMap<u64, (u64, NodeId)>,
    /// (topic id, partition, leader epoch) → the leader named.
    leaders: BTreeMap<(TopicId, u32, u32), NodeId>,
    /// Topic name → the id last seen for it: a new id is the name deleted
    /// and created again (an admin's retried CreateTopics may do that),
    /// and what was acknowledged under the old one is no longer promised.
    topic_ids: BTreeMap<String, TopicId>,
    /// Topics created again under a name seen before.
    pub topics_recreated: u64,
    /// The consumer-group rules.
    pub groups: GroupChecker,
}

/// A record's value for a report.
fn show(value: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(value))
}

/// FNV-1a: a stable fingerprint (no per-process hasher keys).
pub fn fingerprint(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Checker {
    pub fn violation(&mut self, now_ms: u64, what: String) {
        // One report per distinct finding is enough to replay it.
        if self.violations.len() < 50 {
            self.violations.push(format!("@{now_ms}ms: {what}"));
        }
    }

    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// A value a producer sends (unique per send).
    pub fn sent(&mut self, value: &[u8], idempotent: bool) {
        self.sent.insert(value.to_vec(), idempotent);
    }

    /// A block of producer ids the controller handed out.
    pub fn producer_ids(&mut self, now_ms: u64, first: i64, size: u32) {
        if first < 0 || size == 0 {
            return;
        }
        let end = first + i64::from(size);
        let before = self.producer_ids.range(..end).next_back();
        if let Some((&f, &s)) = before {
            if f + i64::from(s) > first {
                self.violation(
                    now_ms,
                    format!(
                        "producer ids {first}..{end} overlap a block handed out before ({f}..{})",
                        f + i64::from(s)
                    ),
                );
            }
        }
        self.producer_ids.insert(first, size);
    }

    /// A produce was acknowledged.
    pub fn acked(&mut self, now_ms: u64, ack: &Ack) {
        if ack.acks != -1 {
            let log = self
                .acked_leader_only
                .entry((ack.topic.clone(), ack.partition))
                .or_default();
            for (i, value) in ack.values.iter().enumerate() {
                log.insert(ack.base_offset + i as u64, value.clone());
            }
            return;
        }
        let key = (ack.topic.clone(), ack.partition, ack.leader_epoch);
        match self.acking.get(&key) {
            Some(&node) if node != ack.node => self.violation(
                now_ms,
                format!(
                    "{}-{} leader epoch {}: acknowledged by node {} and by node {}",
                    ack.topic, ack.partition, ack.leader_epoch, node.0, ack.node.0
                ),
            ),
            Some(_) => {}
            None => {
                self.acking.insert(key, ack.node);
            }
        }
        for (i, value) in ack.values.iter().enumerate() {
            let offset = ack.base_offset + i as u64;
            self.acked_records += 1;
            self.acked
                .entry((ack.topic.clone(), ack.partition))
                .or_default()
                .insert(offset, value.clone());
            self.settle(now_ms, &ack.topic, ack.partition, offset, value);
        }
    }

    /// A consumer read `value` at `offset`, below the high watermark. It
    /// must not contradict an acks=all acknowledgement of that offset
    /// (before or after it). A read alone settles nothing: a record below
    /// the high watermark that no acks=all producer was told about can
    /// still be lost when every in-sync replica that had it is gone (the
    /// last one crashing with it unsynced; Kafka's KIP-966 case), and the
    /// offset then holds another record.
    pub fn read(&mut self, now_ms: u64, topic: &str, partition: u32, offset: u64, value: &[u8]) {
        self.read_records += 1;
        if !self.sent.contains_key(value) {
            self.violation(
                now_ms,
                format!("{topic}-{partition}@{offset}: read a record never sent (phantom)"),
            );
        }
        let key = (topic.to_owned(), partition, offset);
        match self.settled.get(&key) {
            Some(acked) if acked.as_slice() != value => {
                let acked = show(acked);
                self.violation(
                    now_ms,
                    format!(
                        "{topic}-{partition}@{offset}: read {} but {acked} was acknowledged there (offset reused)",
                        show(value)
                    ),
                );
            }
            // A read before the acknowledgement is checked by the
            // final log: an acknowledged record must be at its offset.
            _ => {}
        }
    }

    /// An acks=all acknowledgement put `value` at `offset`: an earlier
    /// one of another record there is a reused offset.
    fn settle(&mut self, now_ms: u64, topic: &str, partition: u32, offset: u64, value: &[u8]) {
        let key = (topic.to_owned(), partition, offset);
        match self.settled.get(&key) {
            Some(seen) if seen.as_slice() != value => {
                let seen = show(seen);
                self.violation(
                    now_ms,
                    format!(
                        "{topic}-{partition}@{offset}: acknowledged {} but acknowledged {seen} before (offset reused)",
                        show(value)
                    ),
                );
            }
            Some(_) => {}
            None => {
                self.settled.insert(key, value.to_vec());
            }
        }
    }

    /// The end of the run: each partition's replicas (the topic still
    /// exists: deleted topics are skipped by the caller, and a name created
    /// again forgot what the old topic acknowledged, `topic_recreated`).
    pub fn final_partition(&mut self, topic: &str, partition: u32, replicas: &[FinalReplica]) {
        let now = u64::MAX;
        let Some(leader) = replicas.iter().find(|r| r.leader) else {
            self.violation(
                now,
                format!("liveness: {topic}-{partition} has no leader replica at the end"),
            );
            return;
        };
        let log: BTreeMap<u64, &Vec<u8>> = leader.records.iter().map(|(o, v)| (*o, v)).collect();
        let key = (topic.to_owned(), partition);
        if let Some(acked) = self.acked.get(&key) {
            let mut missing = Vec::new();
            for (offset, value) in acked {
                match log.get(offset) {
                    Some(found) if *found == value && *offset < leader.high_watermark => {}
                    Some(found) if *found == value => missing.push(format!(
                        "@{offset} {} above the high watermark {}",
                        show(value),
                        leader.high_watermark
                    )),
                    Some(found) => missing.push(format!(
                        "@{offset} {} replaced by {}",
                        show(value),
                        show(found)
                    )),
                    None => missing.push(format!("@{offset} {} missing", show(value))),
                }
            }
            if !missing.is_empty() {
                self.violation(
                    now,
                    format!(
                        "{topic}-{partition}: {} acknowledged acks=all record(s) lost or moved (leader node {}): {}",
                        missing.len(),
                        leader.node.0,
                        missing.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
                    ),
                );
            }
        }
        if let Some(acked) = self.acked_leader_only.get(&key) {
            let lost = acked
                .iter()
                .filter(|(offset, value)| log.get(offset) != Some(value))
                .count();
            self.leader_only_lost += lost as u64;
        }
        for replica in replicas.iter().filter(|r| !r.leader && r.in_sync) {
            let theirs: BTreeMap<u64, &Vec<u8>> =
                replica.records.iter().map(|(o, v)| (*o, v)).collect();
            let differ = log
                .range(..leader.high_watermark)
                .find(|(offset, value)| theirs.get(offset) != Some(*value));
            if let Some((offset, _)) = differ {
                self.violation(
                    now,
                    format!(
                        "{topic}-{partition}: in-sync replica on node {} differs from the leader (node {}) at offset {offset}, below the high watermark {}",
                        replica.node.0, leader.node.0, leader.high_watermark
                    ),
                );
            }
        }
        let mut seen: BTreeMap<&Vec<u8>, u64> = BTreeMap::new();
        for (offset, value) in &leader.records {
            match self.sent.get(value) {
                None => self.violation(
                    now,
                    format!(
                        "{topic}-{partition}@{offset}: a record never sent is in the log (phantom)"
                    ),
                ),
                Some(true) => {
                    if let Some(first) = seen.insert(value, *offset) {
                        self.violation(
                            now,
                            format!(
                                "{topic}-{partition}: idempotent producer's {} written twice, at {first} and {offset}",
                                show(value)
                            ),
                        );
                    }
                }
                Some(false) => {}
            }
        }
    }

    /// A group member's observation (in the order the members make them).
    pub fn group_event(&mut self, now_ms: u64, event: &GroupEvent) {
        for what in self.groups.observe(event) {
            self.violation(now_ms, what);
        }
    }

    /// `topic` was deleted and created again: its acknowledgements are
    /// no longer promised, its offsets start again.
    fn topic_recreated(&mut self, topic: &str) {
        self.topics_recreated += 1;
        self.acked.retain(|(t, _), _| t != topic);
        self.acked_leader_only.retain(|(t, _), _| t != topic);
        self.settled.retain(|(t, _, _), _| t != topic);
        self.acking.retain(|(t, _, _), _| t != topic);
    }

    /// Distinct partition leader epochs seen.
    pub fn leader_epochs(&self) -> u64 {
        self.leaders.len() as u64
    }

    /// `node` applied the metadata log up to `applied`, giving `image`.
    pub fn image_applied(
        &mut self,
        now_ms: u64,
        node: NodeId,
        applied: u64,
        image: &MetadataImage,
    ) {
        let print = fingerprint(&encode_snapshot(image));
        match self.images.get(&applied) {
            Some(&(seen, first)) if seen != print => self.violation(
                now_ms,
                format!(
                    "nodes {} and {} applied the metadata log to index {applied} and hold different images",
                    first.0, node.0
                ),
            ),
            Some(_) => {}
            None => {
                self.images.insert(applied, (print, node));
            }
        }
        for topic in image.topics() {
            match self.topic_ids.insert(topic.name.clone(), topic.id) {
                Some(old) if old != topic.id => self.topic_recreated(&topic.name),
                _ => {}
            }
            for (index, partition) in topic.partitions.iter().enumerate() {
                let Some(leader) = partition.leader else {
                    continue;
                };
                let key = (topic.id, index as u32, partition.leader_epoch.0);
                match self.leaders.get(&key) {
                    Some(&named) if named != leader => self.violation(
                        now_ms,
                        format!(
                            "two leaders for {}-{index} at leader epoch {}: node {} and node {} (image of node {} at index {applied})",
                            topic.name, partition.leader_epoch.0, named.0, leader.0, node.0
                        ),
                    ),
                    Some(_) => {}
                    None => {
                        self.leaders.insert(key, leader);
                    }
                }
            }
        }
    }

    /// After the quiet period: every node's (id, applied index, image,
    /// unfenced) agree and the cluster is whole.
    pub fn converged(&mut self, nodes: &[(NodeId, u64, std::sync::Arc<MetadataImage>, bool)]) {
        let now = u64::MAX;
        let Some((first, applied, image, _)) = nodes.first() else {
            return;
        };
        let print = fingerprint(&encode_snapshot(image));
        for (node, at, other, unfenced) in nodes {
            if fingerprint(&encode_snapshot(other)) != print {
                self.violation(
                    now,
                    format!(
                        "liveness: after the quiet period node {} (applied {at}) and node {} (applied {applied}) hold different images",
                        node.0, first.0
                    ),
                );
            }
            if !unfenced {
                self.violation(
                    now,
                    format!(
                        "liveness: after the quiet period node {} is not registered and unfenced",
                        node.0
                    ),
                );
            }
        }
        for topic in image.topics() {
            for (index, partition) in topic.partitions.iter().enumerate() {
                if partition.leader.is_none() {
                    self.violation(
                        now,
                        format!(
                            "liveness: after the quiet period {}-{index} has no leader",
                            topic.name
                        ),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
