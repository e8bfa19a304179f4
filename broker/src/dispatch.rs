//! Request dispatch: turns one decoded request frame into one response
//! frame. Requests that do not decode get an ERROR-flagged frame with an
//! `ErrorResponse` body; requests that decode get their own response type
//! with errors per topic or partition.
//!
//! Partition requests are split into one [`Op`] per partition, run
//! concurrently on the owning shards ([`ShardService::execute`]: locally or
//! over the mesh), and answered on this shard. Fetch responses carry the
//! stored batches in the frame payload as the `Bytes` the log returned —
//! they are handed to the connection as separate chunks, never copied into
//! the flatbuffer.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fjord_net::driver::Service;
use fjord_schema::api::{decode_request, ApiKey, Request, SUPPORTED_VERSIONS};
use fjord_schema::frame::{Frame, FrameFlags, FrameHeader};
use fjord_schema::{wire, ErrorCode, NodeId, PartitionId, ProducerEpoch, ProducerId, ShardId};
use flatbuffers::{FlatBufferBuilder, WIPOffset};
use futures_lite::future;
use glommio::sync::Semaphore;
use glommio::Task;
use zerocopy::IntoBytes;

use crate::error::TopicOpError;
use crate::group::offsets_log::OFFSETS_TOPIC;
use crate::kafka::budget::BudgetHold;
use crate::ops::{
    CreateSpec, FetchResult, ListOffsetsResult, Op, OpResult, PartitionHealth, ProduceResult,
    TopicOutcome,
};
use crate::service::{ShardService, REGISTRY_SHARD};
use crate::topics::{is_internal_topic, validate_topic_name};

/// Apis this broker answers. ApiVersions lists only these, so a client
/// never sees an api it would be refused.
pub const SERVED_APIS: [ApiKey; 17] = [
    ApiKey::ApiVersions,
    ApiKey::Metadata,
    ApiKey::CreateTopics,
    ApiKey::DeleteTopics,
    ApiKey::Produce,
    ApiKey::Fetch,
    ApiKey::ListOffsets,
    ApiKey::FindCoordinator,
    ApiKey::JoinGroup,
    ApiKey::SyncGroup,
    ApiKey::Heartbeat,
    ApiKey::LeaveGroup,
    ApiKey::OffsetCommit,
    ApiKey::OffsetFetch,
    ApiKey::ListGroups,
    ApiKey::DescribeGroups,
    ApiKey::InitProducerId,
];

/// Versions answered, per served api: `SUPPORTED_VERSIONS` restricted to
/// [`SERVED_APIS`].
pub fn served_versions() -> impl Iterator<Item = (ApiKey, u16, u16)> {
    SUPPORTED_VERSIONS
        .into_iter()
        .filter(|(key, _, _)| SERVED_APIS.contains(key))
}

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

/// The dispatcher's limits (from the broker config).
#[derive(Debug, Clone)]
pub struct DispatchLimits {
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

/// Answers requests on one shard.
///
/// Lives on: every shard, one instance shared by that shard's connections.
/// Owns: the shard's in-flight memory budget (a semaphore of bytes: a
/// request holds its frame size while it is handled, a fetch also its
/// response budget while it reads, a compressed Kafka Produce its
/// decompression reservation), and the Kafka listener's request-buffer and
/// response budgets (see [`Dispatcher::request_buffers`]). Lifecycle:
/// created when the shard starts serving, dropped with the last connection
/// after the shard stops.
#[derive(Debug)]
pub struct Dispatcher {
    broker: Arc<BrokerView>,
    service: Rc<ShardService>,
    limits: DispatchLimits,
    budget: Semaphore,
    request_buffers: Semaphore,
    responses: Semaphore,
}

impl Service for Dispatcher {
    async fn call(&self, frame: Frame, out: &mut Vec<Bytes>) {
        self.respond(frame, out).await;
    }
}

/// A response before framing.
#[derive(Debug)]
struct Reply {
    error: bool,
    body: Vec<u8>,
    payload: Vec<Bytes>,
}

impl Reply {
    fn ok(fbb: FlatBufferBuilder<'_>) -> Reply {
        Reply {
            error: false,
            body: fbb.finished_data().to_vec(),
            payload: Vec::new(),
        }
    }

    fn error(code: ErrorCode, message: &str) -> Reply {
        let mut fbb = FlatBufferBuilder::new();
        let message = fbb.create_string(message);
        let body = wire::ErrorResponse::create(
            &mut fbb,
            &wire::ErrorResponseArgs {
                error_code: code.code(),
                message: Some(message),
            },
        );
        fbb.finish(body, None);
        Reply {
            error: true,
            ..Reply::ok(fbb)
        }
    }
}

/// One partition of a produce / fetch / list-offsets request, routed.
#[derive(Debug)]
struct Part<T> {
    partition: PartitionId,
    /// The owning shard, or why there is none.
    route: Result<ShardId, ErrorCode>,
    input: T,
}

type Topics<T> = Vec<(String, Vec<Part<T>>)>;

impl Dispatcher {
    pub fn new(
        broker: Arc<BrokerView>,
        service: Rc<ShardService>,
        limits: DispatchLimits,
    ) -> Dispatcher {
        let budget = Semaphore::new(limits.inflight_bytes_max as u64);
        let request_buffers = Semaphore::new(limits.request_buffer_bytes_max as u64);
        let responses = Semaphore::new(limits.response_bytes_max as u64);
        Dispatcher {
            broker,
            service,
            limits,
            budget,
            request_buffers,
            responses,
        }
    }

    /// Appends the response to `frame` to `out` (nothing if the request
    /// asked for none).
    pub async fn respond(&self, frame: Frame, out: &mut Vec<Bytes>) {
        let header = frame.header;
        let cost = frame.body.len() + frame.payload.len();
        let reply = if cost > self.limits.inflight_bytes_max {
            Reply::error(
                ErrorCode::BrokerBusy,
                &format!(
                    "a {cost}-byte request exceeds this shard's in-flight budget of {} bytes",
                    self.limits.inflight_bytes_max
                ),
            )
        } else {
            match self.budget.acquire_permit(cost as u64).await {
                Ok(_permit) => self.handle(&frame, cost).await,
                Err(_) => Reply::error(ErrorCode::BrokerBusy, "the shard is stopping"),
            }
        };
        if header.flags().no_response() {
            return;
        }
        encode_reply(&header, reply, out);
    }

    async fn handle(&self, frame: &Frame, cost: usize) -> Reply {
        let request = match decode_request(frame) {
            Ok(request) => request,
            Err(error) => {
                tracing::debug!(shard = %self.service.shard, %error, "undecodable request");
                return Reply::error(error.error_code(), &error.to_string());
            }
        };
        match request {
            Request::ApiVersions(_) => self.api_versions(),
            Request::Metadata(request) => {
                let topics = request
                    .topics()
                    .map(|names| names.iter().map(str::to_owned).collect::<Vec<_>>());
                self.metadata(topics, request.allow_auto_topic_creation())
                    .await
            }
            Request::CreateTopics(request) => {
                let specs = request
                    .topics()
                    .iter()
                    .flatten()
                    .map(|t| CreateSpec {
                        name: t.name().to_owned(),
                        num_partitions: t.num_partitions(),
                        replication_factor: t.replication_factor(),
                        configs: t
                            .configs()
                            .iter()
                            .flatten()
                            // A null value means "the default": no override.
                            .filter_map(|c| Some((c.key().to_owned(), c.value()?.to_owned())))
                            .collect(),
                        // The native CreateTopics has no assignments.
                        assignments: Vec::new(),
                    })
                    .collect();
                self.create_topics(specs, request.validate_only()).await
            }
            Request::DeleteTopics(request) => {
                let names = request
                    .topics()
                    .iter()
                    .flatten()
                    .map(str::to_owned)
                    .collect();
                self.delete_topics(names).await
            }
            Request::Produce(request) => {
                let acks = request.acks().0;
                let topics = self.route(request.topics().iter().flatten().map(|t| {
                    let partitions = t.partitions();
                    let parts = partitions.iter().flatten().map(|p| {
                        let slice = p.records();
                        let records = match slice {
                            Some(s) => {
                                let start = s.offset() as usize;
                                frame.payload.slice(start..start + s.len() as usize)
                            }
                            None => Bytes::new(),
                        };
                        (PartitionId(p.partition()), records)
                    });
                    (t.name().to_owned(), parts.collect::<Vec<_>>())
                }));
                self.produce(topics, acks).await
            }
            Request::Fetch(request) => {
                let topics = self.route(request.topics().iter().flatten().map(|t| {
                    let partitions = t.partitions();
                    let parts = partitions.iter().flatten().map(|p| {
                        (
                            PartitionId(p.partition()),
                            (p.fetch_offset(), p.partition_max_bytes() as usize),
                        )
                    });
                    (t.name().to_owned(), parts.collect::<Vec<_>>())
                }));
                let wait = Duration::from_millis(u64::from(request.max_wait_ms()));
                self.fetch(
                    topics,
                    wait.min(self.limits.fetch_wait_max),
                    request.min_bytes() as usize,
                    request.max_bytes() as usize,
                    cost,
                )
                .await
            }
            Request::ListOffsets(request) => {
                let topics = self.route(request.topics().iter().flatten().map(|t| {
                    let partitions = t.partitions();
                    let parts = partitions
                        .iter()
                        .flatten()
                        .map(|p| (PartitionId(p.partition()), p.timestamp()));
                    (t.name().to_owned(), parts.collect::<Vec<_>>())
                }));
                self.list_offsets(topics).await
            }
            request @ (Request::FindCoordinator(_)
            | Request::JoinGroup(_)
            | Request::SyncGroup(_)
            | Request::Heartbeat(_)
            | Request::LeaveGroup(_)
            | Request::OffsetCommit(_)
            | Request::OffsetFetch(_)
            | Request::ListGroups(_)
            | Request::DescribeGroups(_)) => self.group_request(request).await,
            Request::InitProducerId(request) => self.init_producer_id(request),
        }
    }

    /// Looks up the owning shard of every partition in the catalog.
    fn route<T>(&self, topics: impl Iterator<Item = (String, Vec<(PartitionId, T)>)>) -> Topics<T> {
        let catalog = self.service.catalog();
        topics
            .map(|(name, parts)| {
                let parts = parts
                    .into_iter()
                    .map(|(partition, input)| Part {
                        partition,
                        route: catalog
                            .route(&name, partition)
                            .ok_or(ErrorCode::UnknownTopicOrPartition),
                        input,
                    })
                    .collect();
                (name, parts)
            })
            .collect()
    }

    /// Runs one op per routed partition, concurrently; results in request
    /// order (`None` for unrouted partitions).
    async fn run_all<T>(
        &self,
        topics: &Topics<T>,
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

    /// Served by the receiving shard: each shard allocates from its own
    /// block of the durable id counter (see `producer_ids`).
    fn init_producer_id(&self, request: wire::InitProducerIdRequest<'_>) -> Reply {
        let answer = if request.transactional_id().is_some() {
            Err((
                ErrorCode::InvalidRequest,
                "transactions are not supported yet".to_owned(),
            ))
        } else {
            self.service.partitions.init_producer_id(
                ProducerId(request.producer_id()),
                ProducerEpoch(request.producer_epoch()),
            )
        };
        let (error, message, (producer_id, epoch)) = match answer {
            Ok(ids) => (ErrorCode::None, None, ids),
            Err((code, message)) => {
                let none = (ProducerId::NONE, ProducerEpoch::NONE);
                (code, Some(message), none)
            }
        };
        let mut fbb = FlatBufferBuilder::new();
        let error_message = message.map(|m| fbb.create_string(&m));
        let response = wire::InitProducerIdResponse::create(
            &mut fbb,
            &wire::InitProducerIdResponseArgs {
                throttle_time_ms: 0,
                error_code: error.code(),
                error_message,
                producer_id: producer_id.0,
                producer_epoch: epoch.0,
            },
        );
        fbb.finish(response, None);
        Reply::ok(fbb)
    }

    fn api_versions(&self) -> Reply {
        let mut fbb = FlatBufferBuilder::new();
        let ranges: Vec<wire::ApiVersionRange> = served_versions()
            .map(|(key, min, max)| wire::ApiVersionRange::new(key as u16, min, max))
            .collect();
        let api_versions = fbb.create_vector(&ranges);
        let version = fbb.create_string(env!("CARGO_PKG_VERSION"));
        let response = wire::ApiVersionsResponse::create(
            &mut fbb,
            &wire::ApiVersionsResponseArgs {
                error_code: ErrorCode::None.code(),
                api_versions: Some(api_versions),
                broker_software_version: Some(version),
            },
        );
        fbb.finish(response, None);
        Reply::ok(fbb)
    }

    async fn metadata(&self, names: Option<Vec<String>>, allow_auto_create: bool) -> Reply {
        let (catalog, refused) = self.metadata_catalog(&names, allow_auto_create).await;
        let health = match &names {
            Some(names) => self.partition_health(names, &catalog).await,
            None => HashMap::new(),
        };
        self.metadata_reply(names, &catalog, &refused, &health)
    }

    /// The storage health of the named topics' partitions, asked of their
    /// owning shards (only when a request names its topics, as `fjord
    /// topic describe` does, so a broad Metadata stays local).
    async fn partition_health(
        &self,
        names: &[String],
        catalog: &crate::catalog::Catalog,
    ) -> HashMap<(String, u32), PartitionHealth> {
        let mut out = HashMap::new();
        for name in names {
            let Some(meta) = catalog.get(name) else {
                continue;
            };
            let mut by_shard: BTreeMap<u16, Vec<PartitionId>> = BTreeMap::new();
            for (partition, shard) in meta.shards.iter().enumerate() {
                by_shard
                    .entry(*shard)
                    .or_default()
                    .push(PartitionId(partition as u32));
            }
            for (shard, partitions) in by_shard {
                let op = Op::Health {
                    topic: name.clone(),
                    partitions,
                };
                if let OpResult::Health(health) = self.service.execute(ShardId(shard), op).await {
                    for h in health {
                        out.insert((name.clone(), h.partition.get()), h);
                    }
                }
            }
        }
        out
    }

    /// The catalog for a Metadata request after auto-creating missing
    /// topics (when allowed), and the topics whose creation was refused.
    pub(crate) async fn metadata_catalog(
        &self,
        names: &Option<Vec<String>>,
        allow_auto_create: bool,
    ) -> (Arc<crate::catalog::Catalog>, Vec<TopicOutcome>) {
        let mut catalog = self.service.catalog();
        let mut refused: Vec<TopicOutcome> = Vec::new();
        if let (Some(names), true) = (&names, allow_auto_create && self.limits.auto_create_topics) {
            // Internal topics are made by the broker itself, never on a
            // client's Metadata request (Kafka's rule too).
            let missing: Vec<CreateSpec> = names
                .iter()
                .filter(|name| catalog.get(name).is_none() && !is_internal_topic(name))
                .map(|name| CreateSpec {
                    name: name.clone(),
                    num_partitions: -1,
                    replication_factor: -1,
                    configs: Vec::new(),
                    assignments: Vec::new(),
                })
                .collect();
            if !missing.is_empty() {
                if let OpResult::Topics(outcomes) = self
                    .service
                    .execute(
                        REGISTRY_SHARD,
                        Op::CreateTopics {
                            topics: missing,
                            validate_only: false,
                        },
                    )
                    .await
                {
                    refused = outcomes
                        .into_iter()
                        .filter(|o| o.code() != ErrorCode::None)
                        .collect();
                }
                catalog = self.service.catalog();
            }
        }
        (catalog, refused)
    }

    fn metadata_reply(
        &self,
        names: Option<Vec<String>>,
        catalog: &crate::catalog::Catalog,
        refused: &[TopicOutcome],
        health: &HashMap<(String, u32), PartitionHealth>,
    ) -> Reply {
        let broker = &self.broker;
        let node = broker.node_id.get();
        let mut fbb = FlatBufferBuilder::new();
        let host = fbb.create_string(&broker.host);
        let shard_ports = fbb.create_vector(&broker.shard_ports);
        let this = wire::BrokerMetadata::create(
            &mut fbb,
            &wire::BrokerMetadataArgs {
                node_id: node,
                host: Some(host),
                port: broker.port,
                shard_ports: Some(shard_ports),
                rack: None,
            },
        );
        let brokers = fbb.create_vector(&[this]);
        let wanted: Vec<String> = match &names {
            Some(names) => names.clone(),
            None => catalog.topics().map(|t| t.name.clone()).collect(),
        };
        let mut topics = Vec::with_capacity(wanted.len());
        for name in &wanted {
            let fb_name = fbb.create_string(name);
            let Some(meta) = catalog.get(name) else {
                let error = refused
                    .iter()
                    .find(|o| &o.name == name)
                    .map_or(ErrorCode::UnknownTopicOrPartition, TopicOutcome::code);
                let error = if validate_topic_name(name).is_err() {
                    ErrorCode::InvalidTopicException
                } else {
                    error
                };
                topics.push(wire::TopicMetadata::create(
                    &mut fbb,
                    &wire::TopicMetadataArgs {
                        error_code: error.code(),
                        name: Some(fb_name),
                        is_internal: false,
                        partitions: None,
                    },
                ));
                continue;
            };
            let partitions: Vec<_> = meta
                .shards
                .iter()
                .enumerate()
                .map(|(partition, shard)| {
                    let replicas = fbb.create_vector(&[node]);
                    let isr = fbb.create_vector(&[node]);
                    let health = health.get(&(name.clone(), partition as u32));
                    let offline = health.and_then(|h| h.offline.as_deref());
                    let offline_reason = offline.map(|r| fbb.create_string(r));
                    let damaged = health.filter(|h| !h.damaged.is_empty()).map(|h| {
                        let ranges: Vec<wire::DamagedRange> = h
                            .damaged
                            .iter()
                            .map(|d| {
                                wire::DamagedRange::new(
                                    d.segment_base,
                                    d.bytes_start,
                                    d.bytes_end,
                                    d.first_offset,
                                    d.end_offset,
                                )
                            })
                            .collect();
                        fbb.create_vector(&ranges)
                    });
                    let error = if offline.is_some() {
                        ErrorCode::KafkaStorageError
                    } else {
                        ErrorCode::None
                    };
                    wire::PartitionMetadata::create(
                        &mut fbb,
                        &wire::PartitionMetadataArgs {
                            error_code: error.code(),
                            partition: partition as u32,
                            leader: node as i32,
                            leader_epoch: 0,
                            leader_shard: *shard,
                            replicas: Some(replicas),
                            isr: Some(isr),
                            offline_reason,
                            damaged,
                        },
                    )
                })
                .collect();
            let partitions = fbb.create_vector(&partitions);
            topics.push(wire::TopicMetadata::create(
                &mut fbb,
                &wire::TopicMetadataArgs {
                    error_code: ErrorCode::None.code(),
                    name: Some(fb_name),
                    is_internal: name == OFFSETS_TOPIC,
                    partitions: Some(partitions),
                },
            ));
        }
        let topics = fbb.create_vector(&topics);
        let response = wire::MetadataResponse::create(
            &mut fbb,
            &wire::MetadataResponseArgs {
                throttle_time_ms: 0,
                cluster_id: None,
                // A single node is its own controller.
                controller_id: node as i32,
                brokers: Some(brokers),
                topics: Some(topics),
            },
        );
        fbb.finish(response, None);
        Reply::ok(fbb)
    }

    /// CreateTopics through the registry shard (native and Kafka).
    pub(crate) async fn create_topic_outcomes(
        &self,
        specs: Vec<CreateSpec>,
        validate_only: bool,
    ) -> Vec<TopicOutcome> {
        let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
        let op = Op::CreateTopics {
            topics: specs,
            validate_only,
        };
        topic_outcomes(self.service.execute(REGISTRY_SHARD, op).await, names)
    }

    /// DeleteTopics through the registry shard (native and Kafka).
    pub(crate) async fn delete_topic_outcomes(&self, names: Vec<String>) -> Vec<TopicOutcome> {
        let op = Op::DeleteTopics {
            topics: names.clone(),
        };
        topic_outcomes(self.service.execute(REGISTRY_SHARD, op).await, names)
    }

    pub(crate) fn service(&self) -> &Rc<ShardService> {
        &self.service
    }

    pub(crate) fn broker(&self) -> &BrokerView {
        &self.broker
    }

    pub(crate) fn limits(&self) -> &DispatchLimits {
        &self.limits
    }

    /// The Kafka connections' budget of received, not yet handled request
    /// bytes (at most `request_buffer_bytes_max`): a connection holds its
    /// read buffer's capacity and its frame being handled.
    pub(crate) fn request_buffers(&self) -> &Semaphore {
        &self.request_buffers
    }

    /// The Kafka connections' budget of made, not yet written response
    /// bytes (at most `response_bytes_max`).
    pub(crate) fn responses(&self) -> &Semaphore {
        &self.responses
    }

    /// The shard's in-flight budget (at most `inflight_bytes_max`), for
    /// the Kafka handler to hold a request's memory of.
    pub(crate) fn inflight(&self) -> &Semaphore {
        &self.budget
    }

    async fn create_topics(&self, specs: Vec<CreateSpec>, validate_only: bool) -> Reply {
        let outcomes = self.create_topic_outcomes(specs, validate_only).await;
        let mut fbb = FlatBufferBuilder::new();
        let results: Vec<_> = outcomes
            .iter()
            .map(|o| {
                let name = fbb.create_string(&o.name);
                let message = o.message().map(|m| fbb.create_string(&m));
                wire::CreatableTopicResult::create(
                    &mut fbb,
                    &wire::CreatableTopicResultArgs {
                        name: Some(name),
                        error_code: o.code().code(),
                        error_message: message,
                        num_partitions: o.num_partitions,
                        replication_factor: if o.code() == ErrorCode::None { 1 } else { -1 },
                    },
                )
            })
            .collect();
        let topics = fbb.create_vector(&results);
        let response = wire::CreateTopicsResponse::create(
            &mut fbb,
            &wire::CreateTopicsResponseArgs {
                throttle_time_ms: 0,
                topics: Some(topics),
            },
        );
        fbb.finish(response, None);
        Reply::ok(fbb)
    }

    async fn delete_topics(&self, names: Vec<String>) -> Reply {
        let outcomes = self.delete_topic_outcomes(names).await;
        let mut fbb = FlatBufferBuilder::new();
        let results: Vec<_> = outcomes
            .iter()
            .map(|o| {
                let name = fbb.create_string(&o.name);
                let message = o.message().map(|m| fbb.create_string(&m));
                wire::DeletableTopicResult::create(
                    &mut fbb,
                    &wire::DeletableTopicResultArgs {
                        name: Some(name),
                        error_code: o.code().code(),
                        error_message: message,
                    },
                )
            })
            .collect();
        let topics = fbb.create_vector(&results);
        let response = wire::DeleteTopicsResponse::create(
            &mut fbb,
            &wire::DeleteTopicsResponseArgs {
                throttle_time_ms: 0,
                topics: Some(topics),
            },
        );
        fbb.finish(response, None);
        Reply::ok(fbb)
    }

    async fn produce(&self, mut topics: Topics<Bytes>, acks: i8) -> Reply {
        let results = self.produce_recompressed(&mut topics, acks).await;
        produce_reply(&topics, &results)
    }

    /// Produce for the Kafka listener: results per topic and partition, in
    /// request order.
    /// Why a produce to `topic`/`partition` would be refused before any
    /// op runs (what [`Dispatcher::produce_results`] checks first), so a
    /// caller can skip costly work (converting, decompressing) for it.
    pub(crate) fn produce_route(
        &self,
        topic: &str,
        partition: PartitionId,
    ) -> Result<(), ErrorCode> {
        if topic == OFFSETS_TOPIC {
            return Err(ErrorCode::InvalidTopicException);
        }
        self.service
            .catalog()
            .route(topic, partition)
            .map(|_| ())
            .ok_or(ErrorCode::UnknownTopicOrPartition)
    }

    pub(crate) async fn produce_results(
        &self,
        topics: impl Iterator<Item = (String, Vec<(PartitionId, Bytes)>)>,
        acks: i8,
    ) -> Vec<Vec<ProduceResult>> {
        let mut topics = self.route(topics);
        self.produce_recompressed(&mut topics, acks).await
    }

    async fn produce_routed(
        &self,
        topics: &mut Topics<Bytes>,
        acks: i8,
    ) -> Vec<Vec<ProduceResult>> {
        // Only the group coordinators write the offsets topic.
        for (name, parts) in topics.iter_mut() {
            if name == OFFSETS_TOPIC {
                for part in parts {
                    part.route = Err(ErrorCode::InvalidTopicException);
                }
            }
        }
        if matches!(acks, -1..=1) {
            self.run_all(topics, |name, part| Op::Produce {
                topic: name.to_owned(),
                partition: part.partition,
                records: part.input.clone(),
                acks,
            })
            .await
            .into_iter()
            .zip(topics.iter())
            .map(|(results, (_, parts))| {
                results
                    .into_iter()
                    .zip(parts)
                    .map(|(result, part)| match (result, part.route) {
                        (Some(OpResult::Produce(r)), _) => r,
                        (_, Err(code)) => ProduceResult::error(code, "unknown topic or partition"),
                        (other, _) => ProduceResult::error(
                            ErrorCode::NotLeaderOrFollower,
                            format!("owning shard did not answer: {other:?}"),
                        ),
                    })
                    .collect()
            })
            .collect()
        } else {
            topics
                .iter()
                .map(|(_, parts)| {
                    parts
                        .iter()
                        .map(|_| {
                            ProduceResult::error(
                                ErrorCode::InvalidRequiredAcks,
                                format!("acks = {acks}: must be -1, 0 or 1"),
                            )
                        })
                        .collect()
                })
                .collect()
        }
    }
}

fn produce_reply(topics: &Topics<Bytes>, results: &[Vec<ProduceResult>]) -> Reply {
    let mut fbb = FlatBufferBuilder::new();
    let topic_offsets: Vec<_> = topics
        .iter()
        .zip(results)
        .map(|((name, parts), results)| {
            let partitions: Vec<_> = parts
                .iter()
                .zip(results)
                .map(|(part, r)| {
                    let message = r.message.as_deref().map(|m| fbb.create_string(m));
                    wire::PartitionProduceResponse::create(
                        &mut fbb,
                        &wire::PartitionProduceResponseArgs {
                            partition: part.partition.get(),
                            error_code: r.error.code(),
                            error_message: message,
                            base_offset: r.base_offset,
                            log_append_time_ms: -1,
                            log_start_offset: r.log_start_offset,
                        },
                    )
                })
                .collect();
            let partitions = fbb.create_vector(&partitions);
            let name = fbb.create_string(name);
            wire::TopicProduceResponse::create(
                &mut fbb,
                &wire::TopicProduceResponseArgs {
                    name: Some(name),
                    partitions: Some(partitions),
                },
            )
        })
        .collect();
    let topics = fbb.create_vector(&topic_offsets);
    let response = wire::ProduceResponse::create(
        &mut fbb,
        &wire::ProduceResponseArgs {
            throttle_time_ms: 0,
            topics: Some(topics),
        },
    );
    fbb.finish(response, None);
    Reply::ok(fbb)
}

impl Dispatcher {
    /// Fetch for the Kafka listener (same long-poll as native); `Err` when
    /// the shard is stopping. With `response = Some((hold, bytes))`, each
    /// read of the log first grows `hold` to `bytes` (waiting while the
    /// shard's response budget is full: the fetch does not run), and a
    /// long-poll wait gives it back; on return `hold` covers the response.
    pub(crate) async fn fetch_results(
        &self,
        topics: impl Iterator<Item = (String, Vec<(PartitionId, (i64, usize))>)>,
        max_wait: Duration,
        min_bytes: usize,
        max_bytes: usize,
        response: Option<(&mut BudgetHold<'_>, usize)>,
    ) -> Result<Vec<Vec<FetchResult>>, ErrorCode> {
        let topics = self.route(topics);
        let max_wait = max_wait.min(self.limits.fetch_wait_max);
        self.fetch_routed(&topics, max_wait, min_bytes, max_bytes, 0, response)
            .await
    }

    /// Reads every partition; if fewer than `min_bytes` came back and no
    /// partition failed, waits until one of them gets data (woken by its
    /// append, on whichever shard) or the deadline, and reads again.
    async fn fetch(
        &self,
        topics: Topics<(i64, usize)>,
        max_wait: Duration,
        min_bytes: usize,
        max_bytes: usize,
        cost: usize,
    ) -> Reply {
        match self
            .fetch_routed(&topics, max_wait, min_bytes, max_bytes, cost, None)
            .await
        {
            Ok(results) => {
                let max_bytes = self.fetch_budget(max_bytes, cost);
                fetch_reply(&topics, results, max_bytes)
            }
            Err(_) => Reply::error(ErrorCode::BrokerBusy, "the shard is stopping"),
        }
    }

    /// The response budget of a fetch asking for `max_bytes`, by a request
    /// already holding `cost` bytes of the in-flight budget.
    pub(crate) fn fetch_budget(&self, max_bytes: usize, cost: usize) -> usize {
        max_bytes
            .min(self.limits.fetch_bytes_max)
            .min(self.limits.inflight_bytes_max.saturating_sub(cost))
            .max(1)
    }

    async fn fetch_routed(
        &self,
        topics: &Topics<(i64, usize)>,
        max_wait: Duration,
        min_bytes: usize,
        max_bytes: usize,
        cost: usize,
        mut response: Option<(&mut BudgetHold<'_>, usize)>,
    ) -> Result<Vec<Vec<FetchResult>>, ErrorCode> {
        let deadline = Instant::now() + max_wait;
        // The response budget comes out of the in-flight budget too (minus
        // the request itself, which already holds its share).
        let max_bytes = self.fetch_budget(max_bytes, cost);
        loop {
            if let Some((hold, bytes)) = response.as_mut() {
                if !hold.grow_to(*bytes).await {
                    return Err(ErrorCode::BrokerBusy);
                }
            }
            let results = {
                let Ok(_permit) = self.budget.acquire_permit(max_bytes as u64).await else {
                    return Err(ErrorCode::BrokerBusy);
                };
                self.fetch_once(topics, max_bytes).await
            };
            let flat = || results.iter().flatten();
            let total: usize = flat().map(FetchResult::bytes).sum();
            let failed = flat().any(|r| r.error != ErrorCode::None);
            if total >= min_bytes || failed || Instant::now() >= deadline {
                return Ok(results);
            }
            let waits: Vec<Task<OpResult>> = topics
                .iter()
                .zip(&results)
                .flat_map(|((name, parts), results)| {
                    parts.iter().zip(results).filter_map(|(part, result)| {
                        let shard = part.route.ok()?;
                        let op = Op::WaitForData {
                            topic: name.clone(),
                            partition: part.partition,
                            offset: result.high_watermark,
                            deadline,
                        };
                        Some(glommio::spawn_local(self.service.execute(shard, op)))
                    })
                })
                .collect();
            // A long poll holds no response memory while it waits.
            if let Some((hold, _)) = response.as_mut() {
                hold.shrink_to(0);
            }
            first_of(waits).await;
        }
    }

    async fn fetch_once(
        &self,
        topics: &Topics<(i64, usize)>,
        max_bytes: usize,
    ) -> Vec<Vec<FetchResult>> {
        self.run_all(topics, |name, part| Op::Fetch {
            topic: name.to_owned(),
            partition: part.partition,
            offset: part.input.0,
            max_bytes: part.input.1.min(max_bytes),
        })
        .await
        .into_iter()
        .zip(topics)
        .map(|(results, (_, parts))| {
            results
                .into_iter()
                .zip(parts)
                .map(|(result, part)| match (result, part.route) {
                    (Some(OpResult::Fetch(r)), _) => r,
                    (_, Err(code)) => FetchResult::error(code),
                    _ => FetchResult::error(ErrorCode::NotLeaderOrFollower),
                })
                .collect()
        })
        .collect()
    }

    /// ListOffsets for the Kafka listener.
    pub(crate) async fn list_offsets_results(
        &self,
        topics: impl Iterator<Item = (String, Vec<(PartitionId, i64)>)>,
    ) -> Vec<Vec<ListOffsetsResult>> {
        let topics = self.route(topics);
        self.list_offsets_routed(&topics).await
    }

    async fn list_offsets(&self, topics: Topics<i64>) -> Reply {
        let results = self.list_offsets_routed(&topics).await;
        list_offsets_reply(&topics, &results)
    }

    async fn list_offsets_routed(&self, topics: &Topics<i64>) -> Vec<Vec<ListOffsetsResult>> {
        self.run_all(topics, |name, part| Op::ListOffsets {
            topic: name.to_owned(),
            partition: part.partition,
            timestamp: part.input,
        })
        .await
        .into_iter()
        .zip(topics.iter())
        .map(|(results, (_, parts))| {
            results
                .into_iter()
                .zip(parts)
                .map(|(result, part)| match (result, part.route) {
                    (Some(OpResult::ListOffsets(r)), _) => r,
                    (_, Err(code)) => ListOffsetsResult::error(code),
                    _ => ListOffsetsResult::error(ErrorCode::NotLeaderOrFollower),
                })
                .collect()
        })
        .collect()
    }
}

fn list_offsets_reply(topics: &Topics<i64>, results: &[Vec<ListOffsetsResult>]) -> Reply {
    let mut fbb = FlatBufferBuilder::new();
    let topic_offsets: Vec<_> = topics
        .iter()
        .zip(results)
        .map(|((name, parts), results)| {
            let partitions: Vec<_> = parts
                .iter()
                .zip(results)
                .map(|(part, r)| {
                    wire::ListOffsetsPartitionResponse::create(
                        &mut fbb,
                        &wire::ListOffsetsPartitionResponseArgs {
                            partition: part.partition.get(),
                            error_code: r.error.code(),
                            timestamp: r.timestamp,
                            offset: r.offset,
                            leader_epoch: if r.error == ErrorCode::None { 0 } else { -1 },
                        },
                    )
                })
                .collect();
            let partitions = fbb.create_vector(&partitions);
            let name = fbb.create_string(name);
            wire::ListOffsetsTopicResponse::create(
                &mut fbb,
                &wire::ListOffsetsTopicResponseArgs {
                    name: Some(name),
                    partitions: Some(partitions),
                },
            )
        })
        .collect();
    let topics = fbb.create_vector(&topic_offsets);
    let response = wire::ListOffsetsResponse::create(
        &mut fbb,
        &wire::ListOffsetsResponseArgs {
            throttle_time_ms: 0,
            topics: Some(topics),
        },
    );
    fbb.finish(response, None);
    Reply::ok(fbb)
}

/// The per-topic outcomes of an admin op, or the same failure for every
/// topic when shard 0 did not answer.
fn topic_outcomes(result: OpResult, names: Vec<String>) -> Vec<TopicOutcome> {
    match result {
        OpResult::Topics(outcomes) => outcomes,
        other => names
            .into_iter()
            .map(|name| TopicOutcome {
                name,
                error: Some(TopicOpError::NoAnswer(format!("{other:?}"))),
                num_partitions: -1,
            })
            .collect(),
    }
}

/// Builds the fetch response: batches go to the payload in request order
/// while they fit in `max_bytes` (the first batch always, so a consumer
/// makes progress); each partition names its slice of the payload.
fn fetch_reply(
    topics: &Topics<(i64, usize)>,
    results: Vec<Vec<FetchResult>>,
    max_bytes: usize,
) -> Reply {
    let mut fbb = FlatBufferBuilder::new();
    let mut payload: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    let mut full = false;
    let mut topic_offsets: Vec<WIPOffset<wire::FetchTopicResponse>> = Vec::new();
    for ((name, parts), results) in topics.iter().zip(results) {
        let mut partitions = Vec::with_capacity(parts.len());
        for (part, result) in parts.iter().zip(results) {
            let start = total;
            for batch in result.batches {
                if full || (total > 0 && total + batch.len() > max_bytes) {
                    full = true;
                    break;
                }
                total += batch.len();
                payload.push(batch);
            }
            let slice = wire::PayloadSlice::new(start as u32, (total - start) as u32);
            partitions.push(wire::FetchPartitionResponse::create(
                &mut fbb,
                &wire::FetchPartitionResponseArgs {
                    partition: part.partition.get(),
                    error_code: result.error.code(),
                    high_watermark: result.high_watermark,
                    last_stable_offset: result.high_watermark,
                    log_start_offset: result.log_start_offset,
                    records: Some(&slice),
                },
            ));
        }
        let partitions = fbb.create_vector(&partitions);
        let name = fbb.create_string(name);
        topic_offsets.push(wire::FetchTopicResponse::create(
            &mut fbb,
            &wire::FetchTopicResponseArgs {
                name: Some(name),
                partitions: Some(partitions),
            },
        ));
    }
    let topics = fbb.create_vector(&topic_offsets);
    let response = wire::FetchResponse::create(
        &mut fbb,
        &wire::FetchResponseArgs {
            throttle_time_ms: 0,
            error_code: ErrorCode::None.code(),
            topics: Some(topics),
        },
    );
    fbb.finish(response, None);
    Reply {
        payload,
        ..Reply::ok(fbb)
    }
}

/// Frames `reply`: one chunk with the header and body, then the payload
/// chunks as they are.
fn encode_reply(request: &FrameHeader, reply: Reply, out: &mut Vec<Bytes>) {
    let mut flags = FrameFlags::RESPONSE;
    if reply.error {
        flags |= FrameFlags::ERROR;
    }
    let payload_len: usize = reply.payload.iter().map(Bytes::len).sum();
    // Bounded: the body is small and the payload by fetch_bytes_max (u32).
    let header = FrameHeader::new(
        request.api_key.get(),
        request.api_version.get(),
        FrameFlags(flags),
        request.correlation_id(),
        u32::try_from(reply.body.len()).expect("response body over 4 GiB"),
        u32::try_from(payload_len).expect("response payload over 4 GiB"),
    );
    let mut head = Vec::with_capacity(header.as_bytes().len() + reply.body.len());
    head.extend_from_slice(header.as_bytes());
    head.extend_from_slice(&reply.body);
    out.push(Bytes::from(head));
    out.extend(reply.payload);
}

/// Completes when the first of `tasks` does (the others are cancelled when
/// dropped).
async fn first_of(tasks: Vec<Task<OpResult>>) {
    if tasks.is_empty() {
        return;
    }
    let mut tasks: Vec<Pin<Box<Task<OpResult>>>> = tasks.into_iter().map(Box::pin).collect();
    future::poll_fn(|cx| {
        if tasks.iter_mut().any(|t| t.as_mut().poll(cx).is_ready()) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
}

mod groups;
mod recompress;

#[cfg(test)]
mod tests;
