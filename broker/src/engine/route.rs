//! Routing: which shard owns each partition of a request (from the
//! shard's catalog snapshot), and running one [`Op`] per routed partition
//! on its owning shard, concurrently, locally or over the mesh.

use fjord_schema::{ErrorCode, PartitionId, ShardId};
use glommio::Task;

use super::types::TopicParts;
use super::Engine;
use crate::catalog::Catalog;
use crate::group::offsets_log::OFFSETS_TOPIC;
use crate::ops::{Op, OpResult};

/// Why a partition has no owning shard to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("unknown topic")]
    UnknownTopic,
    #[error("partition {partition} is out of range: the topic has {partition_count}")]
    PartitionOutOfRange {
        partition: u32,
        partition_count: u32,
    },
    /// Clients never write an internal topic (`__consumer_offsets`: only
    /// the group coordinators do).
    #[error("{OFFSETS_TOPIC} is written by the group coordinators only")]
    InternalTopic,
    /// Refused on this shard before any op ran (e.g. by recompression);
    /// its result is already made.
    #[error("refused: {0:?}")]
    Refused(ErrorCode),
}

impl RouteError {
    /// The code a client sees. Unknown topics and partitions out of range
    /// are both Kafka's UNKNOWN_TOPIC_OR_PARTITION (clients refresh their
    /// metadata on it).
    pub fn error_code(self) -> ErrorCode {
        match self {
            RouteError::UnknownTopic | RouteError::PartitionOutOfRange { .. } => {
                ErrorCode::UnknownTopicOrPartition
            }
            RouteError::InternalTopic => ErrorCode::InvalidTopicException,
            RouteError::Refused(code) => code,
        }
    }
}

/// The owning shard of `partition` of `topic` in `catalog`.
pub fn route(
    catalog: &Catalog,
    topic: &str,
    partition: PartitionId,
) -> Result<ShardId, RouteError> {
    let meta = catalog.get(topic).ok_or(RouteError::UnknownTopic)?;
    meta.shard_of(partition)
        .ok_or(RouteError::PartitionOutOfRange {
            partition: partition.get(),
            partition_count: meta.partition_count(),
        })
}

/// One partition of a request, routed.
#[derive(Debug)]
pub(crate) struct Part<T> {
    pub partition: PartitionId,
    /// The owning shard, or why there is none.
    pub route: Result<ShardId, RouteError>,
    pub input: T,
}

/// A request's partitions by topic, routed, in request order.
pub(crate) type Routed<T> = Vec<(String, Vec<Part<T>>)>;

impl Engine {
    /// Looks up the owning shard of every partition in the catalog.
    pub(crate) fn route<T>(&self, topics: TopicParts<T>) -> Routed<T> {
        let catalog = self.service.catalog();
        topics
            .into_iter()
            .map(|(name, parts)| {
                let parts = parts
                    .into_iter()
                    .map(|(partition, input)| Part {
                        partition,
                        route: route(&catalog, &name, partition),
                        input,
                    })
                    .collect();
                (name, parts)
            })
            .collect()
    }

    /// Runs one op per routed partition, concurrently; results in request
    /// order (`None` for unrouted partitions).
    pub(crate) async fn run_all<T>(
        &self,
        topics: &Routed<T>,
        op: impl Fn(&str, &Part<T>) -> Op,
    ) -> Vec<Vec<Option<OpResult>>> {
        let tasks: Vec<Vec<Option<Task<OpResult>>>> = topics
            .iter()
            .map(|(name, parts)| {
                parts
                    .iter()
                    .map(|part| {
                        let shard = part.route.ok()?;
                        Some(glommio::spawn_local(
                            self.service.execute(shard, op(name, part)),
                        ))
                    })
                    .collect()
            })
            .collect();
        let mut results = Vec::with_capacity(tasks.len());
        for topic in tasks {
            let mut parts = Vec::with_capacity(topic.len());
            for task in topic {
                parts.push(match task {
                    Some(task) => Some(task.await),
                    None => None,
                });
            }
            results.push(parts);
        }
        results
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topics::TopicRegistry;

    #[test]
    fn unknown_topics_and_partitions_out_of_range_are_told_apart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut registry = TopicRegistry::open(dir.path(), 2, 100).expect("registry");
        registry
            .create(
                "t",
                2,
                crate::topics::TopicConfig::from_log_config(&fjord_storage::LogConfig::default()),
                Default::default(),
                0,
            )
            .expect("created");
        let catalog = Catalog::from_registry(&registry);
        assert!(route(&catalog, "t", PartitionId(1)).is_ok());
        let out_of_range = route(&catalog, "t", PartitionId(2));
        assert_eq!(
            out_of_range,
            Err(RouteError::PartitionOutOfRange {
                partition: 2,
                partition_count: 2
            })
        );
        assert_eq!(
            route(&catalog, "u", PartitionId(0)),
            Err(RouteError::UnknownTopic)
        );
        // Both are what clients have always seen.
        for error in [out_of_range.unwrap_err(), RouteError::UnknownTopic] {
            assert_eq!(error.error_code(), ErrorCode::UnknownTopicOrPartition);
        }
        assert_eq!(
            RouteError::InternalTopic.error_code(),
            ErrorCode::InvalidTopicException
        );
    }
}
