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
//!   every partition has a leader.
//!
//! Consumer groups: committed offsets never go backwards and are never
//! phantoms (`crate::groups::GroupChecker` states the rules exactly), on
//! every event of a group member ([`Checker::group_event`]).

use std::collections::BTreeMap;

use fjord_broker::controller::fold::encode_snapshot;
use fjord_broker::metadata::image::{MetadataImage, TopicId};
use fjord_schema::NodeId;

use crate::groups::{GroupChecker, GroupEvent};

/// What the checker saw and found. Lives in: the world of one run.
#[derive(Debug, Default)]
pub struct Checker {
    violations: Vec<String>,
    /// Applied index → (fingerprint of the image, first node seen at it).
    images: BTreeMap<u64, (u64, NodeId)>,
    /// (topic id, partition, leader epoch) → the leader named.
    leaders: BTreeMap<(TopicId, u32, u32), NodeId>,
    /// The consumer-group rules.
    pub groups: GroupChecker,
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

    /// A group member's observation (in the order the members make them).
    pub fn group_event(&mut self, now_ms: u64, event: &GroupEvent) {
        for what in self.groups.observe(event) {
            self.violation(now_ms, what);
        }
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
