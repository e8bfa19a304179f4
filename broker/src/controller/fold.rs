//! The fold of committed metadata records into the
//! [`MetadataImage`] ([`MetadataImage::apply`]), and the image snapshot
//! codec built on it ([`MetadataImage::to_records`], [`encode_snapshot`],
//! [`decode_snapshot`]).
//!
//! It lives here rather than in `metadata/image.rs` because the records
//! name image types (`TopicId`, `BrokerEndpoints`): the image module
//! cannot use the controller's without an import cycle between the two
//! sibling modules. It is still `MetadataImage`'s own method (an inherent
//! impl may sit anywhere in the crate).
//!
//! The log is input: a record naming an unknown topic, partition or
//! broker (or a stale incarnation) is ignored with a warning, never a
//! panic. Every node folds the same records in the same order with the
//! same defaults, so every node gets the same image.
//!
//! Pure: no I/O.

use fjord_schema::NodeId;

use super::records::{decode_records, MetadataRecord, SNAPSHOT_RECORDS_MAX};
use super::records::{encode_batch, RECORD_VERSION};
use super::wire::DecodeError;
use crate::metadata::image::{BrokerImage, MetadataImage, PartitionImage, TopicImage};
use crate::topic::TopicConfig;

/// A topic's config: `defaults` with `overrides` applied by the parser
/// CreateTopics uses. A key this node refuses (a newer node's config, or
/// different defaults) is skipped with a warning: the record is committed
/// and must fold on every node.
pub fn topic_config(
    defaults: &TopicConfig,
    overrides: &std::collections::BTreeMap<String, String>,
    topic: &str,
) -> TopicConfig {
    let mut config = defaults.clone();
    if config
        .apply(overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .is_ok()
    {
        return config;
    }
    let mut config = defaults.clone();
    for (key, value) in overrides {
        let mut next = config.clone();
        match next.apply([(key.as_str(), value.as_str())]) {
            Ok(()) => config = next,
            Err(error) => {
                tracing::warn!(topic, key, value, %error, "a committed topic config is refused here; the default is used")
            }
        }
    }
    config
}

impl MetadataImage {
    /// This image with `record` folded in. Topics the record does not
    /// change stay shared with `self`.
    pub fn apply(&self, record: &MetadataRecord, defaults: &TopicConfig) -> MetadataImage {
        let mut next = self.clone();
        next.apply_mut(record, defaults);
        next
    }

    /// Folds `record` into this image in place (a changed topic is copied
    /// on write when shared).
    pub fn apply_mut(&mut self, record: &MetadataRecord, defaults: &TopicConfig) {
        match record {
            MetadataRecord::RegisterBroker {
                node,
                incarnation,
                endpoints,
                shards,
                rack,
            } => self.insert_broker(BrokerImage {
                node: *node,
                incarnation: *incarnation,
                endpoints: endpoints.clone(),
                shards: *shards,
                rack: rack.clone(),
                fenced: true,
            }),
            MetadataRecord::FenceBroker { node, incarnation }
            | MetadataRecord::UnfenceBroker { node, incarnation } => {
                let fence = matches!(record, MetadataRecord::FenceBroker { .. });
                match self.broker_mut(*node) {
                    Some(broker) if broker.incarnation == *incarnation => broker.fenced = fence,
                    Some(broker) => {
                        tracing::warn!(%node, incarnation, current = broker.incarnation, fence, "a (un)fence record of an old incarnation is ignored")
                    }
                    None => {
                        tracing::warn!(%node, fence, "a (un)fence record of an unregistered broker is ignored")
                    }
                }
            }
            MetadataRecord::Topic {
                id,
                name,
                created_ms,
                overrides,
            } => {
                if self.get(name).is_some() || self.by_id(*id).is_some() {
                    tracing::warn!(topic = %name, %id, "a topic record for an existing name or id is ignored");
                    return;
                }
                self.insert_topic(TopicImage {
                    id: *id,
                    name: name.clone(),
                    config: topic_config(defaults, overrides, name),
                    created_ms: *created_ms,
                    overrides: Some(overrides.clone()),
                    partitions: Vec::new(),
                });
            }
            MetadataRecord::Partition {
                topic,
                partition,
                replicas,
                isr,
                leader,
                leader_epoch,
                partition_epoch,
            } => {
                let Some(name) = self.by_id(*topic).map(|t| t.name.clone()) else {
                    tracing::warn!(%topic, partition, "a partition record of an unknown topic is ignored");
                    return;
                };
                let image = PartitionImage {
                    replicas: replicas.clone(),
                    isr: isr.clone(),
                    leader: *leader,
                    leader_epoch: *leader_epoch,
                    partition_epoch: *partition_epoch,
                };
                let Some(t) = self.topic_mut(&name) else {
                    return;
                };
                let index = *partition as usize;
                if index < t.partitions.len() {
                    t.partitions[index] = image;
                } else if index == t.partitions.len() {
                    t.partitions.push(image);
                } else {
                    tracing::warn!(topic = %name, partition, count = t.partitions.len(), "a partition record past the next partition id is ignored");
                }
            }
            MetadataRecord::PartitionChange {
                topic,
                partition,
                isr,
                leader,
                leader_epoch,
                partition_epoch,
            } => {
                let Some(name) = self.by_id(*topic).map(|t| t.name.clone()) else {
                    tracing::warn!(%topic, partition, "a partition change of an unknown topic is ignored");
                    return;
                };
                let Some(t) = self.topic_mut(&name) else {
                    return;
                };
                match t.partitions.get_mut(*partition as usize) {
                    Some(p) => {
                        p.isr.clone_from(isr);
                        p.leader = *leader;
                        p.leader_epoch = *leader_epoch;
                        p.partition_epoch = *partition_epoch;
                    }
                    None => {
                        tracing::warn!(topic = %name, partition, "a change of an unknown partition is ignored")
                    }
                }
            }
            MetadataRecord::RemoveTopic { id } => match self.by_id(*id).map(|t| t.name.clone()) {
                Some(name) => {
                    self.remove_topic(&name);
                }
                None => tracing::warn!(%id, "removing an unknown topic is ignored"),
            },
            MetadataRecord::ConfigChange { topic, overrides } => {
                let Some(name) = self.by_id(*topic).map(|t| t.name.clone()) else {
                    tracing::warn!(%topic, "a config change of an unknown topic is ignored");
                    return;
                };
                let config = topic_config(defaults, overrides, &name);
                if let Some(t) = self.topic_mut(&name) {
                    t.config = config;
                    t.overrides = Some(overrides.clone());
                }
            }
            MetadataRecord::ClusterId { id } => match self.cluster_id() {
                None => self.set_cluster_id(*id),
                Some(current) if current == *id => {}
                Some(_) => tracing::warn!("a second, different cluster id record is ignored"),
            },
            MetadataRecord::ProducerIdsBlock { node, first, size } => {
                let end = first.saturating_add(i64::from(*size));
                if *first < self.producer_id_next() {
                    tracing::warn!(%node, first, next = self.producer_id_next(), "a producer-id block overlaps earlier blocks");
                }
                if end > self.producer_id_next() {
                    self.set_producer_id_next(end);
                }
            }
        }
    }

    /// Records that fold, onto an empty image with the same defaults, into
    /// an image equal to this one: the cluster id, each broker's
    /// registration (and unfencing), the producer-id cursor (as one block
    /// given to node 0, a placeholder: the image does not keep who owns
    /// which block), then each topic and its partitions.
    pub fn to_records(&self) -> Vec<MetadataRecord> {
        let mut records = Vec::new();
        if let Some(id) = self.cluster_id() {
            records.push(MetadataRecord::ClusterId { id });
        }
        for broker in self.brokers() {
            records.push(MetadataRecord::RegisterBroker {
                node: broker.node,
                incarnation: broker.incarnation,
                endpoints: broker.endpoints.clone(),
                shards: broker.shards,
                rack: broker.rack.clone(),
            });
            if !broker.fenced {
                records.push(MetadataRecord::UnfenceBroker {
                    node: broker.node,
                    incarnation: broker.incarnation,
                });
            }
        }
        // The cursor only moves forward, by blocks of at most u32::MAX.
        let mut next = self.producer_id_next();
        let mut blocks = Vec::new();
        while next > 0 {
            let size = next.min(i64::from(u32::MAX));
            next -= size;
            blocks.push(MetadataRecord::ProducerIdsBlock {
                node: NodeId(0),
                first: next,
                size: size as u32,
            });
        }
        records.extend(blocks.into_iter().rev());
        for topic in self.topics() {
            records.push(MetadataRecord::Topic {
                id: topic.id,
                name: topic.name.clone(),
                created_ms: topic.created_ms,
                overrides: topic.overrides.clone().unwrap_or_default(),
            });
            for (index, p) in topic.partitions.iter().enumerate() {
                records.push(MetadataRecord::Partition {
                    topic: topic.id,
                    partition: index as u32,
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                    leader: p.leader,
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                });
            }
        }
        records
    }
}

/// An image snapshot: [`MetadataImage::to_records`] in the batch format
/// (version byte, count, records).
pub fn encode_snapshot(image: &MetadataImage) -> Vec<u8> {
    let bytes = encode_batch(&image.to_records());
    debug_assert_eq!(bytes.first(), Some(&RECORD_VERSION));
    bytes
}

/// The image a snapshot holds, folded onto an empty image with
/// `defaults`. Never panics.
pub fn decode_snapshot(bytes: &[u8], defaults: &TopicConfig) -> Result<MetadataImage, DecodeError> {
    let records = decode_records(bytes, SNAPSHOT_RECORDS_MAX)?;
    let mut image = MetadataImage::default();
    for record in &records {
        image.apply_mut(record, defaults);
    }
    Ok(image)
}

#[cfg(test)]
mod tests;
