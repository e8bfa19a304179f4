//! The catalog: an immutable snapshot of the topic registry (topics, their
//! partitions' shards and configs) that every shard reads to route
//! requests and answer Metadata.
//!
//! Shard 0 owns the registry (see [`TopicRegistry`]); after
//! every create or delete it builds a new `Catalog` and sends an `Arc` of it
//! to every shard, which swaps it in. A snapshot never changes, so sharing
//! it across threads shares nothing mutable.

use std::collections::BTreeMap;

use fjord_schema::{PartitionId, ShardId};

use crate::metadata::registry::{TopicMeta, TopicRegistry};

/// Topics by name, as of one registry change.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Catalog {
    topics: BTreeMap<String, TopicMeta>,
}

impl Catalog {
    pub fn from_registry(registry: &TopicRegistry) -> Catalog {
        Catalog {
            topics: registry
                .topics()
                .map(|t| (t.name.clone(), t.clone()))
                .collect(),
        }
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

    /// Partitions placed on `shard`, by topic.
    pub fn placed_on(&self, shard: ShardId) -> Vec<(&TopicMeta, Vec<PartitionId>)> {
        self.topics
            .values()
            .filter_map(|topic| {
                let partitions: Vec<PartitionId> = (0..topic.partition_count())
                    .map(PartitionId)
                    .filter(|p| topic.shard_of(*p) == Some(shard))
                    .collect();
                (!partitions.is_empty()).then_some((topic, partitions))
            })
            .collect()
    }
}
