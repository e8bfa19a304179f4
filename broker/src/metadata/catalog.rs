//! The catalog: what a shard routes with and answers Metadata from — the
//! metadata image (cluster facts) joined with this node's shard table
//! (which local shard holds each partition), immutable.
//!
//! Shard 0 owns the registry (`super::registry::TopicRegistry`, which
//! builds catalogs: the registry depends on the catalog, never back); after every topic
//! change it builds a new `Catalog` and sends an `Arc` of it to every
//! shard, which swaps it in. A snapshot never changes, so sharing it
//! across threads shares nothing mutable.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::Arc;

use fjord_schema::{PartitionId, ShardId};

use super::image::{MetadataImage, TopicImage};
use super::shard_table::ShardTable;

/// One topic as this node sees it: the image's topic (its fields and
/// methods through `Deref`) and the local shard of each partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicMeta {
    pub topic: Arc<TopicImage>,
    /// `shards[p]` owns partition `p` (one per partition of `topic`).
    pub shards: Vec<u16>,
}

impl TopicMeta {
    /// `topic` with its shards from `table`, which must have them.
    pub fn new(topic: Arc<TopicImage>, table: &ShardTable) -> TopicMeta {
        let shards = table.shards(topic.id).unwrap_or_default().to_vec();
        assert_eq!(
            shards.len(),
            topic.partitions.len(),
            "the shard table fits the image"
        );
        TopicMeta { topic, shards }
    }

    pub fn partition_count(&self) -> u32 {
        self.shards.len() as u32
    }

    /// Whether `node` holds a replica of `partition`.
    pub fn hosts(&self, partition: PartitionId, node: fjord_schema::NodeId) -> bool {
        self.topic
            .partition(partition)
            .is_some_and(|p| p.replicas.contains(&node))
    }

    pub fn shard_of(&self, partition: PartitionId) -> Option<ShardId> {
        self.shards
            .get(partition.get() as usize)
            .map(|s| ShardId(*s))
    }
}

impl Deref for TopicMeta {
    type Target = TopicImage;

    fn deref(&self) -> &TopicImage {
        &self.topic
    }
}

/// Topics by name, as of one registry change.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Catalog {
    image: Arc<MetadataImage>,
    topics: BTreeMap<String, TopicMeta>,
    /// The metadata quorum as this node last saw it.
    quorum: QuorumView,
}

/// What a node knows of the metadata quorum, published with the image.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct QuorumView {
    /// The active controller (Raft leader), if known.
    pub controller: Option<fjord_schema::NodeId>,
    /// The metadata log index this node has applied (its image's).
    pub applied_index: u64,
    /// The highest index this node knows to be committed.
    pub committed_index: u64,
}

impl Catalog {
    /// `image` joined with `table` (which fits it).
    pub fn new(image: Arc<MetadataImage>, table: &ShardTable) -> Catalog {
        let topics = image
            .topics()
            .map(|t| (t.name.clone(), TopicMeta::new(t.clone(), table)))
            .collect();
        Catalog {
            image,
            topics,
            quorum: QuorumView::default(),
        }
    }

    /// This catalog with the quorum view `quorum`.
    pub fn with_quorum(mut self, quorum: QuorumView) -> Catalog {
        self.quorum = quorum;
        self
    }

    pub fn quorum(&self) -> QuorumView {
        self.quorum
    }

    /// The cluster facts this catalog was built from.
    pub fn image(&self) -> &Arc<MetadataImage> {
        &self.image
    }

    pub fn get(&self, name: &str) -> Option<&TopicMeta> {
        self.topics.get(name)
    }

    pub fn topics(&self) -> impl Iterator<Item = &TopicMeta> {
        self.topics.values()
    }

    /// The shard owning `partition` of `topic`, if both exist.
    pub fn route(&self, topic: &str, partition: PartitionId) -> Option<ShardId> {
        self.get(topic)?.shard_of(partition)
    }

    /// Partitions of which `node` holds a replica on `shard`, by topic.
    pub fn placed_on(
        &self,
        shard: ShardId,
        node: fjord_schema::NodeId,
    ) -> Vec<(&TopicMeta, Vec<PartitionId>)> {
        self.topics
            .values()
            .filter_map(|topic| {
                let partitions: Vec<PartitionId> = (0..topic.partition_count())
                    .map(PartitionId)
                    .filter(|p| topic.shard_of(*p) == Some(shard) && topic.hosts(*p, node))
                    .collect();
                (!partitions.is_empty()).then_some((topic, partitions))
            })
            .collect()
    }
}
