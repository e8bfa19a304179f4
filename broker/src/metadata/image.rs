//! The metadata image: the cluster-wide facts about topics (id, name,
//! configs, and per partition its replicas, leader, leader epoch, ISR and
//! partition epoch), immutable and shared as `Arc<MetadataImage>`.
//!
//! Its shape is that of the image issue 13 folds from the committed
//! metadata log (`Topic` and `Partition` records, see CLUSTER.md §2). On a
//! single node every partition has one replica, this node, which leads it
//! at epoch 0. Which local shard holds a replica is not a cluster fact: see
//! [`super::shard_table::ShardTable`].
//!
//! Lives on: shard 0 builds a new image on every topic change (in
//! [`super::registry::TopicRegistry`]); every shard holds the latest one
//! inside its [`super::catalog::Catalog`]. Pure: no I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use fjord_schema::{LeaderEpoch, NodeId, PartitionId};

use crate::topic::TopicConfig;

/// A topic's id: a random (version 4) UUID given at creation and kept for
/// the topic's life, so a topic deleted and created again under the same
/// name is another topic (Kafka's topic ids, Metadata v10+).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicId(pub [u8; 16]);

impl TopicId {
    /// A fresh random version 4 UUID (RFC 9562), from the kernel's CSPRNG.
    pub fn random() -> TopicId {
        let mut bytes = [0u8; 16];
        let mut filled = 0;
        while filled < bytes.len() {
            let rest = &mut bytes[filled..];
            // SAFETY: `rest` is a valid writable buffer of `rest.len()` bytes
            // for the whole call.
            let got = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
            if got < 0 {
                let error = std::io::Error::last_os_error();
                // getrandom(2) without flags only fails on a signal, or on
                // kernels older than 3.17, which io_uring excludes anyway.
                assert_eq!(
                    error.kind(),
                    std::io::ErrorKind::Interrupted,
                    "getrandom: {error}"
                );
                continue;
            }
            filled += got as usize;
        }
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        TopicId(bytes)
    }

    /// Parses the hyphenated form `8-4-4-4-12` hex digits.
    pub fn parse(text: &str) -> Option<TopicId> {
        let groups: Vec<&str> = text.split('-').collect();
        let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        if lens != [8, 4, 4, 4, 12] {
            return None;
        }
        let hex: String = groups.concat();
        let mut bytes = [0u8; 16];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(TopicId(bytes))
    }
}

impl fmt::Display for TopicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl serde::Serialize for TopicId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for TopicId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<TopicId, D::Error> {
        let text = String::deserialize(deserializer)?;
        TopicId::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid topic id {text:?}")))
    }
}

/// Bumped on every change of a partition's replicas, ISR or leader (the
/// compare-and-set token of AlterPartition, CLUSTER.md §4).
pub type PartitionEpoch = u32;

/// One partition as the cluster knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionImage {
    /// The nodes holding a replica, preferred leader first.
    pub replicas: Vec<NodeId>,
    /// The in-sync replicas, a subset of `replicas`.
    pub isr: Vec<NodeId>,
    /// `None` while the partition is offline.
    pub leader: Option<NodeId>,
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: PartitionEpoch,
}

impl PartitionImage {
    /// A partition whose one replica is `node`, leading at epoch 0.
    pub fn single(node: NodeId) -> PartitionImage {
        PartitionImage {
            replicas: vec![node],
            isr: vec![node],
            leader: Some(node),
            leader_epoch: LeaderEpoch(0),
            partition_epoch: 0,
        }
    }
}

/// One topic as the cluster knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicImage {
    pub id: TopicId,
    pub name: String,
    pub config: TopicConfig,
    pub created_ms: i64,
    /// The configs set explicitly on the topic (at creation or by an
    /// alter), as given; the other keys of `config` are broker defaults.
    /// `None` only in registries written before this was tracked (see
    /// [`super::registry::TopicRegistry::adopt_untracked_overrides`]).
    pub overrides: Option<BTreeMap<String, String>>,
    /// Index = partition id.
    pub partitions: Vec<PartitionImage>,
}

impl TopicImage {
    /// Whether `key` was set on the topic (Kafka's DYNAMIC_TOPIC_CONFIG)
    /// rather than taken from the broker's defaults.
    pub fn is_override(&self, key: &str) -> bool {
        self.overrides.as_ref().is_some_and(|o| o.contains_key(key))
    }

    pub fn partition_count(&self) -> u32 {
        self.partitions.len() as u32
    }

    pub fn partition(&self, partition: PartitionId) -> Option<&PartitionImage> {
        self.partitions.get(partition.get() as usize)
    }
}

/// A host and port as advertised to others (`host:port`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Where a broker is reached, per protocol.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BrokerEndpoints {
    /// The native listener (`--listen`, advertised).
    pub native: Option<Endpoint>,
    /// The Kafka listener (`--kafka-listen`, advertised), if on.
    pub kafka: Option<Endpoint>,
    /// The inter-node listener (`--cluster-listen`).
    pub cluster: Option<Endpoint>,
}

/// One broker as the cluster knows it (its last registration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerImage {
    pub node: NodeId,
    /// New on every process start (`RegisterBroker`).
    pub incarnation: u64,
    pub endpoints: BrokerEndpoints,
    pub shards: u16,
    pub rack: Option<String>,
    /// Fenced: not listed to clients, leads nothing, gets no new replicas.
    pub fenced: bool,
}

/// Every topic, by name, and every registered broker, as of one metadata
/// change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetadataImage {
    topics: BTreeMap<String, Arc<TopicImage>>,
    brokers: BTreeMap<NodeId, BrokerImage>,
    /// The first producer id not yet given to any node in a block.
    producer_id_next: i64,
    /// Set by the first record of the log (`ClusterId`).
    cluster_id: Option<[u8; 16]>,
}

impl MetadataImage {
    /// Registered brokers, fenced or not, by node id.
    pub fn brokers(&self) -> impl Iterator<Item = &BrokerImage> {
        self.brokers.values()
    }

    pub fn broker(&self, node: NodeId) -> Option<&BrokerImage> {
        self.brokers.get(&node)
    }

    /// Registered brokers not fenced, by node id: what clients are told.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerImage> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// This image with `broker` added or replaced (by node id).
    pub fn with_broker(&self, broker: BrokerImage) -> MetadataImage {
        let mut next = self.clone();
        next.brokers.insert(broker.node, broker);
        next
    }

    pub fn cluster_id(&self) -> Option<[u8; 16]> {
        self.cluster_id
    }

    pub fn with_cluster_id(&self, id: [u8; 16]) -> MetadataImage {
        let mut next = self.clone();
        next.cluster_id = Some(id);
        next
    }

    /// The first producer id no block has given out yet.
    pub fn producer_id_next(&self) -> i64 {
        self.producer_id_next
    }

    /// This image with the next producer-id block starting at `next`.
    pub fn with_producer_id_next(&self, next: i64) -> MetadataImage {
        let mut next_image = self.clone();
        next_image.producer_id_next = next;
        next_image
    }

    pub fn get(&self, name: &str) -> Option<&Arc<TopicImage>> {
        self.topics.get(name)
    }

    /// Topics in name order.
    pub fn topics(&self) -> impl Iterator<Item = &Arc<TopicImage>> {
        self.topics.values()
    }

    pub fn by_id(&self, id: TopicId) -> Option<&Arc<TopicImage>> {
        self.topics.values().find(|t| t.id == id)
    }

    pub fn partition_total(&self) -> u64 {
        self.topics
            .values()
            .map(|t| u64::from(t.partition_count()))
            .sum()
    }

    /// This image with `topic` added or replaced (by name).
    pub fn with_topic(&self, topic: TopicImage) -> MetadataImage {
        let mut next = self.clone();
        next.topics.insert(topic.name.clone(), Arc::new(topic));
        next
    }

    /// This image without the topic `name`.
    pub fn without_topic(&self, name: &str) -> MetadataImage {
        let mut next = self.clone();
        next.topics.remove(name);
        next
    }

    // In-place changes, for folding many records into one new image (see
    // `crate::controller::fold`): a topic changed is copied on write
    // (`Arc::make_mut`), the others stay shared with older images.

    /// The topic `name`, to change in place (copied first if another
    /// image shares it).
    pub fn topic_mut(&mut self, name: &str) -> Option<&mut TopicImage> {
        self.topics.get_mut(name).map(Arc::make_mut)
    }

    /// Adds or replaces (by name) `topic`.
    pub fn insert_topic(&mut self, topic: TopicImage) {
        self.topics.insert(topic.name.clone(), Arc::new(topic));
    }

    /// Removes the topic `name`; returns it.
    pub fn remove_topic(&mut self, name: &str) -> Option<Arc<TopicImage>> {
        self.topics.remove(name)
    }

    pub fn broker_mut(&mut self, node: NodeId) -> Option<&mut BrokerImage> {
        self.brokers.get_mut(&node)
    }

    /// Adds or replaces (by node id) `broker`.
    pub fn insert_broker(&mut self, broker: BrokerImage) {
        self.brokers.insert(broker.node, broker);
    }

    pub fn set_cluster_id(&mut self, id: [u8; 16]) {
        self.cluster_id = Some(id);
    }

    pub fn set_producer_id_next(&mut self, next: i64) {
        self.producer_id_next = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_ids_are_random_v4_uuids_that_round_trip_as_text() {
        let a = TopicId::random();
        let b = TopicId::random();
        assert_ne!(a, b);
        let text = a.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(&text[14..15], "4", "version 4: {text}");
        assert!("89ab".contains(&text[19..20]), "RFC variant: {text}");
        assert_eq!(TopicId::parse(&text), Some(a));
        let known = "0123abcd-4567-489a-bcde-f0123456789a";
        assert_eq!(TopicId::parse(known).unwrap().to_string(), known);
        for bad in [
            "",
            "0123abcd4567489abcdef0123456789a",
            "0123abcd-4567-489a-bcde-f0123456789",
            "0123abcd-4567-489a-bcde-f0123456789g",
        ] {
            assert_eq!(TopicId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_image_changes_only_by_making_a_new_one() {
        let config = TopicConfig::from_log_config(&fjord_storage::LogConfig::default());
        let topic = |name: &str, partitions: usize| TopicImage {
            id: TopicId::random(),
            name: name.to_owned(),
            config: config.clone(),
            created_ms: 1,
            overrides: Some(BTreeMap::new()),
            partitions: vec![PartitionImage::single(NodeId(1)); partitions],
        };
        let empty = MetadataImage::default();
        let one = empty.with_topic(topic("a", 2));
        let two = one.with_topic(topic("b", 3));
        assert_eq!(empty.partition_total(), 0);
        assert_eq!(one.partition_total(), 2);
        assert_eq!(two.partition_total(), 5);
        let b = two.get("b").unwrap();
        assert_eq!(two.by_id(b.id).unwrap().name, "b");
        let p = b.partition(PartitionId(2)).unwrap();
        assert_eq!(
            (p.leader, p.leader_epoch),
            (Some(NodeId(1)), LeaderEpoch(0))
        );
        assert_eq!(p.isr, p.replicas);
        assert!(b.partition(PartitionId(3)).is_none());
        let removed = two.without_topic("a");
        assert!(removed.get("a").is_none());
        assert!(two.get("a").is_some(), "the old image is unchanged");
        // Topics not changed are shared, not copied.
        assert!(Arc::ptr_eq(
            removed.get("b").unwrap(),
            two.get("b").unwrap()
        ));
    }
}
