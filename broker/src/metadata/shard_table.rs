//! The node-local shard table: which shard of this node holds each local
//! partition replica, by topic id. A node fact, not a cluster fact (the
//! cluster's image says which *nodes* hold replicas, CLUSTER.md §2), so it
//! is kept apart from [`super::image::MetadataImage`] and persisted in its
//! own file, `<data>/shards.toml`, which the metadata log of issue 13 does
//! not replace.
//!
//! Lives on: shard 0 owns and writes it (in
//! [`super::registry::TopicRegistry`]); every shard reads the joined view in
//! its [`super::catalog::Catalog`]. Pure: encoding and decoding here, the
//! file writes in the registry.

use std::collections::BTreeMap;

use fjord_schema::ShardId;
use serde::{Deserialize, Serialize};

use super::image::{MetadataImage, TopicId};

pub const SHARD_TABLE_FILE: &str = "shards.toml";
/// The next shard table write goes into this preallocated file.
pub const SHARD_TABLE_SPARE_FILE: &str = "shards.spare";
const SHARD_TABLE_VERSION: u32 = 1;

/// Partition replicas of this node by topic id: `shards[p]` holds
/// partition `p`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardTable {
    topics: BTreeMap<TopicId, Vec<u16>>,
}

#[derive(Serialize, Deserialize)]
struct ShardTableFile {
    version: u32,
    #[serde(default)]
    topics: Vec<TopicShards>,
}

#[derive(Serialize, Deserialize)]
struct TopicShards {
    id: TopicId,
    shards: Vec<u16>,
}

impl ShardTable {
    pub fn shards(&self, id: TopicId) -> Option<&[u16]> {
        self.topics.get(&id).map(Vec::as_slice)
    }

    pub fn shard_of(&self, id: TopicId, partition: u32) -> Option<ShardId> {
        let shards = self.topics.get(&id)?;
        shards.get(partition as usize).map(|s| ShardId(*s))
    }

    /// Replicas placed on each of `shard_count` shards.
    fn load(&self, shard_count: u16) -> Vec<u64> {
        let mut load = vec![0u64; usize::from(shard_count)];
        for shard in self.topics.values().flatten() {
            load[usize::from(*shard)] += 1;
        }
        load
    }

    /// Shards for `partitions` new replicas: each on the least-loaded shard
    /// at that point (ties to the lowest shard id, so placement is
    /// deterministic). Topic creation and partition growth both use it.
    pub fn place(&self, shard_count: u16, partitions: u32) -> Vec<u16> {
        assert!(shard_count > 0);
        let mut load = self.load(shard_count);
        (0..partitions)
            .map(|_| {
                let (shard, _) = load
                    .iter()
                    .enumerate()
                    .min_by_key(|(shard, count)| (**count, *shard))
                    .expect("at least one shard");
                load[shard] += 1;
                shard as u16
            })
            .collect()
    }

    /// This table with `id`'s replicas grown to `count` partitions, the new
    /// ones placed by [`Self::place`].
    pub fn grown(&self, id: TopicId, count: u32, shard_count: u16) -> ShardTable {
        let have = self.topics.get(&id).map_or(0, Vec::len) as u32;
        assert!(count >= have);
        let added = self.place(shard_count, count - have);
        let mut next = self.clone();
        next.topics.entry(id).or_default().extend(added);
        next
    }

    /// This table without `id`.
    pub fn without(&self, id: TopicId) -> ShardTable {
        let mut next = self.clone();
        next.topics.remove(&id);
        next
    }

    /// This table made to fit `image` (after a crash between the two
    /// files' writes, see the registry): entries of topics the image does
    /// not have are dropped, lists longer than the topic are cut, missing
    /// replicas are placed. Returns whether anything changed.
    pub fn reconcile(&mut self, image: &MetadataImage, shard_count: u16) -> bool {
        let before = self.clone();
        self.topics.retain(|id, _| image.by_id(*id).is_some());
        for topic in image.topics() {
            if let Some(shards) = self.topics.get_mut(&topic.id) {
                shards.truncate(topic.partition_count() as usize);
            }
        }
        for topic in image.topics() {
            *self = self.grown(topic.id, topic.partition_count(), shard_count);
        }
        *self != before
    }

    /// This table made to fit `image` for node `node`, which holds a
    /// replica of only some partitions (the cluster's placement): entries
    /// of topics the image lacks are dropped, lists cut to the topic's
    /// length, and new partitions placed — the ones `node` holds on the
    /// shard with the fewest held replicas (ties to the lowest shard), the
    /// others on shard 0 (a partition held elsewhere is never opened here;
    /// its entry only keeps `shards[p]` indexable). Returns whether
    /// anything changed.
    pub fn reconcile_hosted(
        &mut self,
        image: &MetadataImage,
        shard_count: u16,
        node: fjord_schema::NodeId,
    ) -> bool {
        assert!(shard_count > 0);
        let before = self.clone();
        self.topics.retain(|id, _| image.by_id(*id).is_some());
        let mut load = vec![0u64; usize::from(shard_count)];
        for topic in image.topics() {
            let Some(shards) = self.topics.get_mut(&topic.id) else {
                continue;
            };
            shards.truncate(topic.partition_count() as usize);
            for (partition, shard) in topic.partitions.iter().zip(shards.iter()) {
                if partition.replicas.contains(&node) {
                    if let Some(count) = load.get_mut(usize::from(*shard)) {
                        *count += 1;
                    }
                }
            }
        }
        for topic in image.topics() {
            let shards = self.topics.entry(topic.id).or_default();
            for partition in &topic.partitions[shards.len()..] {
                if !partition.replicas.contains(&node) {
                    shards.push(0);
                    continue;
                }
                let (shard, _) = load
                    .iter()
                    .enumerate()
                    .min_by_key(|(shard, count)| (**count, *shard))
                    .expect("shard_count > 0");
                load[shard] += 1;
                shards.push(shard as u16);
            }
        }
        *self != before
    }

    /// The highest shard a partition of `image` that `node` holds a
    /// replica of is on (entries of partitions held elsewhere are never
    /// opened here, so their shard does not matter).
    pub fn held_shard_max(
        &self,
        image: &MetadataImage,
        node: fjord_schema::NodeId,
    ) -> Option<(TopicId, u16)> {
        image
            .topics()
            .filter_map(|t| Some((t, self.topics.get(&t.id)?)))
            .flat_map(|(t, shards)| {
                t.partitions
                    .iter()
                    .zip(shards)
                    .filter(|(p, _)| p.replicas.contains(&node))
                    .map(move |(_, s)| (t.id, *s))
            })
            .max_by_key(|(_, s)| *s)
    }

    /// The highest shard any replica is on.
    pub fn shard_max(&self) -> Option<(TopicId, u16)> {
        self.topics
            .iter()
            .flat_map(|(id, shards)| shards.iter().map(move |s| (*id, *s)))
            .max_by_key(|(_, s)| *s)
    }

    pub(crate) fn insert(&mut self, id: TopicId, shards: Vec<u16>) {
        self.topics.insert(id, shards);
    }

    pub fn encode(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(&ShardTableFile {
            version: SHARD_TABLE_VERSION,
            topics: self
                .topics
                .iter()
                .map(|(id, shards)| TopicShards {
                    id: *id,
                    shards: shards.clone(),
                })
                .collect(),
        })
    }

    pub fn decode(text: &str) -> Result<ShardTable, String> {
        let file: ShardTableFile = toml::from_str(text).map_err(|e| e.to_string())?;
        if file.version != SHARD_TABLE_VERSION {
            return Err(format!(
                "version {} (this broker reads version {SHARD_TABLE_VERSION})",
                file.version
            ));
        }
        let mut topics = BTreeMap::new();
        for entry in file.topics {
            if topics.insert(entry.id, entry.shards).is_some() {
                return Err(format!("topic id {} is listed twice", entry.id));
            }
        }
        Ok(ShardTable { topics })
    }
}

#[cfg(test)]
mod tests {
    use fjord_schema::NodeId;

    use super::*;
    use crate::metadata::image::{PartitionImage, TopicImage};
    use crate::topic::TopicConfig;

    fn topic(name: &str, partitions: usize) -> TopicImage {
        TopicImage {
            id: TopicId::random(),
            name: name.to_owned(),
            config: TopicConfig::from_log_config(&fjord_storage::LogConfig::default()),
            created_ms: 1,
            overrides: None,
            partitions: vec![PartitionImage::single(NodeId(1)); partitions],
        }
    }

    #[test]
    fn placement_goes_to_the_least_loaded_shard_lowest_first() {
        let a = TopicId::random();
        let b = TopicId::random();
        let table = ShardTable::default().grown(a, 4, 3);
        assert_eq!(table.shards(a), Some(&[0, 1, 2, 0][..]));
        let table = table.grown(b, 2, 3);
        assert_eq!(table.shards(b), Some(&[1, 2][..]));
        let table = table.grown(a, 6, 3);
        // Loads [2, 2, 2]: the two new ones go to 0 and 1.
        assert_eq!(table.shards(a), Some(&[0, 1, 2, 0, 0, 1][..]));
        assert_eq!(table.shard_of(b, 1), Some(ShardId(2)));
        assert_eq!(table.shard_of(b, 2), None);
        assert_eq!(table.without(a).shards(a), None);
        assert_eq!(table.shard_max().map(|(_, s)| s), Some(2));
        let decoded = ShardTable::decode(&table.encode().unwrap()).unwrap();
        assert_eq!(decoded, table);
    }

    #[test]
    fn only_held_partitions_count_for_the_shards_a_node_needs() {
        // Partition 0 is held here (node 1), partition 1 elsewhere.
        let mut mixed = topic("mixed", 2);
        mixed.partitions[1] = PartitionImage::single(NodeId(2));
        let image = MetadataImage::default().with_topic(mixed.clone());
        let mut table = ShardTable::default();
        table.insert(mixed.id, vec![3, 5]);
        assert_eq!(table.shard_max(), Some((mixed.id, 5)));
        assert_eq!(table.held_shard_max(&image, NodeId(1)), Some((mixed.id, 3)));
        assert_eq!(table.held_shard_max(&image, NodeId(2)), Some((mixed.id, 5)));
        assert_eq!(table.held_shard_max(&image, NodeId(3)), None);
    }

    #[test]
    fn reconcile_fits_the_table_to_the_image() {
        let kept = topic("kept", 2);
        let grown = topic("grown", 3);
        let image = MetadataImage::default()
            .with_topic(kept.clone())
            .with_topic(grown.clone());
        let gone = TopicId::random();
        let mut table = ShardTable::default();
        table.insert(kept.id, vec![1, 1, 0]);
        table.insert(grown.id, vec![0]);
        table.insert(gone, vec![0, 1]);
        assert!(table.reconcile(&image, 2));
        assert_eq!(
            table.shards(kept.id),
            Some(&[1, 1][..]),
            "cut, kept in place"
        );
        assert_eq!(table.shards(grown.id), Some(&[0, 0, 0][..]), "placed");
        assert_eq!(table.shards(gone), None);
        assert!(!table.clone().reconcile(&image, 2), "already fits");
    }

    #[test]
    fn a_bad_table_file_is_refused() {
        for text in [
            "version = 2",
            "topics = 7",
            "version = 1\n[[topics]]\nid = \"nope\"\nshards = [0]\n",
        ] {
            assert!(ShardTable::decode(text).is_err(), "{text}");
        }
        let id = TopicId::random();
        let twice = format!(
            "version = 1\n[[topics]]\nid = \"{id}\"\nshards = [0]\n[[topics]]\nid = \"{id}\"\nshards = [1]\n"
        );
        assert!(ShardTable::decode(&twice).unwrap_err().contains("twice"));
    }
}
