//! The engine: the broker's protocol-neutral request handling, one
//! instance per shard, shared (`Rc`) by every connection of that shard,
//! whichever listener it came in on.
//!
//! Both edges — the native flatbuffers protocol ([`crate::native`]) and
//! the Kafka wire protocol ([`crate::kafka`]) — only decode a request into
//! the engine's typed request ([`types`]), call the engine, and encode its
//! typed results. Everything between is here: routing each partition to
//! its owning shard through the catalog ([`route()`], [`RouteError`]) once
//! the image says this node leads it ([`cluster`], which also makes the
//! cluster view clients are told about), running the
//! per-partition [`Op`]s there (locally or over the mesh), the produce
//! policy this shard applies before the op (the offsets topic is the
//! coordinators' alone, valid `acks`, recompression for a topic's
//! `compression.type`, [`recompress`]), the fetch long-poll and which
//! batches fit a response ([`fetch`]), topic admin and Metadata through
//! the registry shard ([`admin`]), consumer-group requests to their
//! coordinator's shard ([`groups`]) and producer ids. Authorization will
//! live here too: one place for both protocols.
//!
//! What the engine never sees: frames, protocol versions, flatbuffers or
//! `kafka-protocol` types, record formats other than the native batch (the
//! Kafka edge converts), connections. Per-partition errors are
//! [`ErrorCode`]s (a routing failure is a typed [`RouteError`] first); a
//! request fails as a whole only with an [`EngineError`].
//!
//! The hot path: a produce's batches are the [`types::VerifiedBatches`]
//! the edge made (checked once there, one `Bytes` per batch), moved into
//! the owning shard's op; a fetch's batches are the `Bytes` the log
//! returned. Neither is copied or re-encoded here (except by
//! recompression); each partition is one `Op` on its owning shard, no
//! other hop.
//!
//! Lives on: every shard (one per glommio executor), created when the
//! shard starts serving. Owns: the shard's in-flight memory budget (a
//! semaphore of bytes: a request holds its frame size while it is handled,
//! a fetch also its response budget while it reads, a compressed Kafka
//! Produce its decompression reservation, a recompression its buffers),
//! and the Kafka listener's request-buffer and response budgets (see
//! [`Engine::request_buffers`]). Dropped with the last connection after
//! the shard stops.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use fjord_schema::{ErrorCode, NodeId, PartitionId, ProducerEpoch, ProducerId, ShardId};
use glommio::sync::Semaphore;
use glommio::Task;

use crate::group::offsets_log::OFFSETS_TOPIC;
use crate::metadata::catalog::Catalog;
use crate::ops::{Op, OpResult};
use crate::service::ShardService;

pub mod admin;
pub mod cluster;
pub mod fetch;
pub mod groups;
pub mod recompress;
#[cfg(test)]
pub(crate) mod testing;
pub mod types;

pub use fetch::{FetchReservation, NoReservation};
use types::{ProduceRequest, ProduceResult, ProducerIdResult, TopicParts, VerifiedBatches};

/// What Metadata says about this broker; fixed once every shard is bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerView {
    pub node_id: NodeId,
    pub host: String,
    pub port: u16,
    /// The Kafka listener's advertised host and port.
    pub kafka_host: String,
    pub kafka_port: u16,
    /// Per-shard ports indexed by shard id; empty when not exposed.
    pub shard_ports: Vec<u16>,
    /// The broker's settings under Kafka's config names (DescribeConfigs).
    pub kafka_configs: Vec<(&'static str, String)>,
}

/// The engine's limits (from the broker config).
#[derive(Debug, Clone)]
pub struct EngineLimits {
    /// In-flight request memory of this shard.
    pub inflight_bytes_max: usize,
    /// Largest fetch response.
    pub fetch_bytes_max: usize,
    /// Longest fetch long-poll.
    pub fetch_wait_max: Duration,
    pub auto_create_topics: bool,
    /// Kafka request bytes received and not yet handled, this shard's
    /// connections together.
    pub request_buffer_bytes_max: usize,
    /// Kafka response bytes made and not yet read by their clients, this
    /// shard's connections together.
    pub response_bytes_max: usize,
    /// Decompressed bytes of one Kafka Produce, all its batches together.
    pub decompressed_bytes_max_per_request: usize,
    /// Array elements of one Kafka request, all arrays together.
    pub request_elements_max: usize,
}

/// Why a request fails as a whole (per-partition failures are results).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("the shard is stopping")]
    Stopping,
}

impl EngineError {
    pub fn error_code(self) -> ErrorCode {
        match self {
            EngineError::Stopping => ErrorCode::BrokerBusy,
        }
    }
}

/// Answers requests on one shard, for both protocols (see the module
/// doc).
#[derive(Debug)]
pub struct Engine {
    broker: Arc<BrokerView>,
    service: Rc<ShardService>,
    limits: EngineLimits,
    inflight: Semaphore,
    request_buffers: Semaphore,
    responses: Semaphore,
}

impl Engine {
    pub fn new(broker: Arc<BrokerView>, service: Rc<ShardService>, limits: EngineLimits) -> Engine {
        let inflight = Semaphore::new(limits.inflight_bytes_max as u64);
        let request_buffers = Semaphore::new(limits.request_buffer_bytes_max as u64);
        let responses = Semaphore::new(limits.response_bytes_max as u64);
        Engine {
            broker,
            service,
            limits,
            inflight,
            request_buffers,
            responses,
        }
    }

    /// This shard.
    pub fn shard(&self) -> ShardId {
        self.service.shard
    }

    pub fn broker(&self) -> &BrokerView {
        &self.broker
    }

    pub fn limits(&self) -> &EngineLimits {
        &self.limits
    }

    /// This shard's catalog snapshot (topics, partitions, configs).
    pub fn catalog(&self) -> Arc<Catalog> {
        self.service.catalog()
    }

    /// The shard's in-flight budget (at most `inflight_bytes_max`): every
    /// request holds its memory of it while the engine handles it.
    pub fn inflight(&self) -> &Semaphore {
        &self.inflight
    }

    /// The Kafka connections' budget of received, not yet handled request
    /// bytes (at most `request_buffer_bytes_max`): a connection holds its
    /// read buffer's capacity and its frame being handled.
    pub fn request_buffers(&self) -> &Semaphore {
        &self.request_buffers
    }

    /// The Kafka connections' budget of made, not yet written response
    /// bytes (at most `response_bytes_max`).
    pub fn responses(&self) -> &Semaphore {
        &self.responses
    }

    /// Why a produce to `topic`/`partition` would be refused before any
    /// op runs (what [`Engine::produce`] checks first), so an edge can
    /// skip costly work (converting, decompressing) for it.
    pub fn produce_refusal(&self, topic: &str, partition: PartitionId) -> Result<(), RouteError> {
        if topic == OFFSETS_TOPIC {
            return Err(RouteError::InternalTopic);
        }
        route(
            &self.service.catalog(),
            self.broker.node_id,
            topic,
            partition,
        )
        .map(|_| ())
    }

    /// The cluster as `catalog` shows it to this node's clients.
    pub fn cluster_view(&self, catalog: &Catalog) -> cluster::ClusterView {
        cluster::ClusterView::of(catalog)
    }

    /// Appends each partition's batches on its owning shard, concurrently;
    /// results per partition, in request order. A partition is refused,
    /// first reason first, for: invalid `acks` (every partition), no
    /// owning shard or the internal topic, batches its edge found invalid
    /// (the request's `Err`), recompression (budget, codec); the owning
    /// shard then refuses for its own reasons (not open, leadership,
    /// `max.message.bytes`, producer state).
    pub async fn produce(&self, request: ProduceRequest) -> TopicParts<ProduceResult> {
        let (acks, timeout) = (request.acks, request.timeout);
        let mut topics = self.route(request.topics);
        // Only the group coordinators write the offsets topic.
        for (name, parts) in topics.iter_mut() {
            if name == OFFSETS_TOPIC {
                for part in parts {
                    part.route = Err(RouteError::InternalTopic);
                }
            }
        }
        if matches!(acks, -1..=1) {
            return self.produce_recompressed(topics, acks, timeout).await;
        }
        let refused = || {
            ProduceResult::error(
                ErrorCode::InvalidRequiredAcks,
                format!("acks = {acks}: must be -1, 0 or 1"),
            )
        };
        topics
            .into_iter()
            .map(|(name, parts)| {
                let parts = parts.into_iter().map(|p| (p.partition, refused()));
                (name, parts.collect())
            })
            .collect()
    }

    /// `topics` (routed, recompressed) to their owning shards, each
    /// partition's batches moved into its op (not shared: the owning shard
    /// appends a batch without copying it when it is its only reference);
    /// the request's names and partitions move into the answer.
    async fn produce_routed(
        &self,
        mut topics: Routed<VerifiedBatches>,
        acks: i8,
        timeout: Duration,
    ) -> TopicParts<ProduceResult> {
        let tasks = topics
            .iter_mut()
            .map(|(name, parts)| {
                parts
                    .iter_mut()
                    .map(|part| self.spawn_op(part.route, || produce_op(name, part, acks, timeout)))
                    .collect()
            })
            .collect();
        let results = join_all(tasks).await;
        topics
            .into_iter()
            .zip(results)
            .map(|((name, parts), results)| {
                let parts = parts
                    .into_iter()
                    .zip(results)
                    .map(|(part, result)| {
                        let result = match (result, part.route) {
                            (Some(OpResult::Produce(r)), _) => r,
                            (_, Err(error)) => {
                                ProduceResult::error(error.error_code(), error.to_string())
                            }
                            (other, _) => ProduceResult::error(
                                ErrorCode::NotLeaderOrFollower,
                                format!("owning shard did not answer: {other:?}"),
                            ),
                        };
                        (part.partition, result)
                    })
                    .collect();
                (name, parts)
            })
            .collect()
    }

    /// An id (and epoch) for an idempotent producer, served by this shard:
    /// each shard allocates from its own block of ids, which the
    /// controller allots (see `partition::producer_ids`). Transactional producers are refused.
    pub async fn init_producer_id(
        &self,
        transactional_id: Option<&str>,
        producer_id: ProducerId,
        epoch: ProducerEpoch,
    ) -> ProducerIdResult {
        if transactional_id.is_some() {
            return Err((
                ErrorCode::InvalidRequest,
                "transactions are not supported yet".to_owned(),
            ));
        }
        self.service.init_producer_id(producer_id, epoch).await
    }
}

/// The op appending `part`'s batches on its owning shard. The batches move
/// into it, leaving `part` none: a clone would share each batch's buffer
/// and cost the owning shard a copy to append it (see
/// [`VerifiedBatches::into_appendable`]).
pub(crate) fn produce_op(
    topic: &str,
    part: &mut Part<VerifiedBatches>,
    acks: i8,
    timeout: Duration,
) -> Op {
    Op::Produce {
        topic: topic.to_owned(),
        partition: part.partition,
        records: std::mem::take(&mut part.input),
        acks,
        timeout,
    }
}

/// Pairs routed partitions with their results: the request's names and
/// partitions moved into the answer.
fn with_names<T, R>(topics: Routed<T>, results: Vec<Vec<R>>) -> TopicParts<R> {
    topics
        .into_iter()
        .zip(results)
        .map(|((name, parts), results)| {
            let parts = parts
                .into_iter()
                .zip(results)
                .map(|(part, result)| (part.partition, result))
                .collect();
            (name, parts)
        })
        .collect()
}

// Routing: which shard owns each partition of a request (from the
// shard's catalog snapshot), and running one `Op` per routed partition on
// its owning shard, concurrently, locally or over the mesh.

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
    /// Another node leads the partition (`Some`), or none does (`None`):
    /// the client refreshes its metadata and goes to the leader.
    #[error("this node does not lead the partition (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
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
            RouteError::NotLeader { .. } => ErrorCode::NotLeaderOrFollower,
            RouteError::Refused(code) => code,
        }
    }
}

/// The owning shard of `partition` of `topic` in `catalog`, when `node`
/// (this node) leads it ([`cluster::leader_check`]): a partition another
/// node leads is NOT_LEADER_OR_FOLLOWER even when this node has no replica
/// of it, so the client refreshes its metadata.
pub fn route(
    catalog: &Catalog,
    node: NodeId,
    topic: &str,
    partition: PartitionId,
) -> Result<ShardId, RouteError> {
    cluster::leader_check(catalog, node, topic, partition).map_err(|e| match e {
        cluster::Leadership::UnknownTopic => RouteError::UnknownTopic,
        cluster::Leadership::OutOfRange { partition_count } => RouteError::PartitionOutOfRange {
            partition: partition.get(),
            partition_count,
        },
        cluster::Leadership::NotLeader { leader } => RouteError::NotLeader { leader },
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
        let node = self.broker.node_id;
        topics
            .into_iter()
            .map(|(name, parts)| {
                let parts = parts
                    .into_iter()
                    .map(|(partition, input)| Part {
                        partition,
                        route: route(&catalog, node, &name, partition),
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
        let tasks = topics
            .iter()
            .map(|(name, parts)| {
                parts
                    .iter()
                    .map(|part| self.spawn_op(part.route, || op(name, part)))
                    .collect()
            })
            .collect();
        join_all(tasks).await
    }

    /// `op` on the owning shard `route`, as a task of this shard; `None`
    /// for an unrouted partition.
    fn spawn_op(
        &self,
        route: Result<ShardId, RouteError>,
        op: impl FnOnce() -> Op,
    ) -> Option<Task<OpResult>> {
        let shard = route.ok()?;
        Some(glommio::spawn_local(self.service.execute(shard, op())))
    }
}

/// The results of [`Engine::spawn_op`]'s tasks, in the same shape.
async fn join_all(tasks: Vec<Vec<Option<Task<OpResult>>>>) -> Vec<Vec<Option<OpResult>>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::registry::TopicRegistry;

    #[test]
    fn unknown_topics_and_partitions_out_of_range_are_told_apart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut registry = TopicRegistry::open(dir.path(), NodeId(0), 2, 100).expect("registry");
        registry
            .create(
                "t",
                2,
                crate::topic::TopicConfig::from_log_config(&fjord_storage::LogConfig::default()),
                Default::default(),
                0,
            )
            .expect("created");
        let catalog = registry.catalog();
        assert!(route(&catalog, NodeId(0), "t", PartitionId(1)).is_ok());
        let out_of_range = route(&catalog, NodeId(0), "t", PartitionId(2));
        assert_eq!(
            out_of_range,
            Err(RouteError::PartitionOutOfRange {
                partition: 2,
                partition_count: 2
            })
        );
        assert_eq!(
            route(&catalog, NodeId(0), "u", PartitionId(0)),
            Err(RouteError::UnknownTopic)
        );
        // A partition another node leads: NOT_LEADER_OR_FOLLOWER.
        let elsewhere = route(&catalog, NodeId(9), "t", PartitionId(0));
        assert_eq!(
            elsewhere,
            Err(RouteError::NotLeader {
                leader: Some(NodeId(0))
            })
        );
        assert_eq!(
            elsewhere.unwrap_err().error_code(),
            ErrorCode::NotLeaderOrFollower
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
