//! The Kafka edge: each supported request is decoded with
//! `kafka-protocol` into the engine's typed request, run by the same
//! [`crate::engine::Engine`] as the native protocol's, and its results
//! encoded; records are converted with [`kafka_to_native`] /
//! [`native_to_kafka`]. No routing here: the engine does it.
//!
//! Only the apis and versions in [`KAFKA_APIS`] are answered; ApiVersions
//! lists exactly those. A request for anything else, or one that does not
//! decode, closes the connection (ApiVersions at an unknown version gets
//! Kafka's UNSUPPORTED_VERSION answer at v0, as clients expect).

use std::rc::Rc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use fjord_net::driver::budget::BudgetHold;
use fjord_schema::{ErrorCode, NodeId, PartitionId, ProducerEpoch, ProducerId};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::fetch_response::{
    FetchableTopicResponse, LeaderIdAndEpoch, PartitionData,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, FetchRequest, FetchResponse, InitProducerIdRequest,
    InitProducerIdResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest,
    MetadataResponse, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::records::{
    any_compressed, kafka_to_native_one, native_to_kafka, KafkaRecordsError, KafkaRecordsLimits,
};
use super::{admin, leaders};
use crate::batches::VerifiedBatches;
use crate::config::REQUEST_ELEMENTS_MAX_DEFAULT;
use crate::engine::cluster::ClusterView;
use crate::engine::types::{
    leader_epoch_of, replica_of, CreateSpec, FetchPartition, FetchRequest as EngineFetch,
    IsolationLevel, ListOffsetsPartition, ListOffsetsRequest as EngineListOffsets,
    ProduceRequest as EngineProduce,
};
use crate::engine::Engine;
use crate::engine::FetchReservation;
use crate::group::offsets_log::OFFSETS_TOPIC;
use crate::metadata::catalog::Catalog;

mod apis;

pub use apis::{KafkaRequest, KAFKA_APIS};

/// Kafka's UNSUPPORTED_VERSION.
const UNSUPPORTED_VERSION: i16 = 35;

/// Why a request closes the connection.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    #[error("unsupported api {api_key} version {version}")]
    Unsupported { api_key: i16, version: i16 },
    #[error("undecodable {what}: {reason}")]
    Decode { what: &'static str, reason: String },
    #[error(
        "a request of {bytes} bytes does not fit the shard's in-flight budget of {budget_bytes}"
    )]
    OverInflightBudget { bytes: usize, budget_bytes: usize },
    #[error("cannot encode the response: {0}")]
    Encode(String),
    #[error("the shard is stopping")]
    Stopping,
}

fn decode_error(what: &'static str) -> impl Fn(anyhow_like::Error) -> HandleError {
    move |e| HandleError::Decode {
        what,
        reason: e.to_string(),
    }
}

/// `kafka-protocol` reports errors as `anyhow::Error`; only `Display` is
/// used here, so name it through the trait object.
mod anyhow_like {
    pub type Error = Box<dyn std::fmt::Display>;
}

fn boxed<E: std::fmt::Display + 'static>(e: E) -> anyhow_like::Error {
    Box::new(e)
}

/// Why a produce partition's records were not converted to native
/// batches: code and message.
type ConvertError = (ErrorCode, Option<String>);

/// A Kafka fetch's response budget, held of the shard's response budget:
/// grown to `bytes` before each read of the log (waiting while the budget
/// is full: the fetch does not run), given back while the fetch
/// long-polls; on return it covers the response.
struct ResponseReservation<'h, 'a> {
    hold: &'h mut BudgetHold<'a>,
    bytes: usize,
}

impl FetchReservation for ResponseReservation<'_, '_> {
    async fn reserve(&mut self) -> bool {
        self.hold.grow_to(self.bytes).await
    }

    fn release(&mut self) {
        self.hold.shrink_to(0);
    }
}

/// Kafka's isolation level (0 read uncommitted, 1 read committed).
fn isolation(level: i8) -> IsolationLevel {
    if level == 1 {
        IsolationLevel::ReadCommitted
    } else {
        IsolationLevel::ReadUncommitted
    }
}

/// A framed response, holding its bytes of the shard's response budget
/// until it is dropped (once written).
#[derive(Debug)]
pub struct KafkaResponse<'a> {
    bytes: BytesMut,
    _hold: BudgetHold<'a>,
}

impl<'a> KafkaResponse<'a> {
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes to queue, and the hold to keep until they are written.
    pub fn into_parts(self) -> (Bytes, BudgetHold<'a>) {
        (self.bytes.freeze(), self._hold)
    }
}

/// A fetch response's bytes beyond its records: the response, per topic
/// and per partition (headers, offsets, an empty aborted-transactions
/// list), generously.
const FETCH_RESPONSE_OVERHEAD_BYTES: usize = 1024;
const FETCH_TOPIC_OVERHEAD_BYTES: usize = 64;
const FETCH_PARTITION_OVERHEAD_BYTES: usize = 64;

/// Serves the Kafka requests of one connection.
///
/// Memory of one request, in the order it is taken (always this order, so
/// no two requests wait on each other): its frame is held of the shard's
/// request-buffer budget (by `serve`); a Fetch then holds its response
/// size of the response budget while it reads the log (and its records
/// of the in-flight budget); any other request holds its frame size of the
/// in-flight budget while it is handled (a Produce with a compressed batch
/// twice `decompressed_bytes_max_per_request` more), then its response's
/// size of the response budget until written.
#[derive(Debug)]
pub struct KafkaHandler {
    pub(super) engine: Rc<Engine>,
    limits: KafkaRecordsLimits,
}

impl KafkaHandler {
    /// `frame_bytes_max` is the listener's frame limit: a batch as large
    /// as a frame converts (the partition then applies the topic's
    /// `max.message.bytes`, as for native producers); decompression stops
    /// at twice that, but never below 64 MiB.
    pub fn new(engine: Rc<Engine>, frame_bytes_max: usize) -> KafkaHandler {
        KafkaHandler {
            engine,
            limits: KafkaRecordsLimits {
                batch_bytes_max: frame_bytes_max,
                uncompressed_bytes_max: frame_bytes_max
                    .saturating_mul(2)
                    .max(KafkaRecordsLimits::default().uncompressed_bytes_max),
            },
        }
    }

    /// The shard's request-buffer budget and its size, for the serve loop.
    pub fn request_buffers(&self) -> (&glommio::sync::Semaphore, usize) {
        (
            self.engine.request_buffers(),
            self.engine.limits().request_buffer_bytes_max,
        )
    }

    /// Handles one frame (length prefix removed); returns the framed
    /// response, or `None` when none is due (acks = 0).
    pub async fn handle(&self, frame: Bytes) -> Result<Option<KafkaResponse<'_>>, HandleError> {
        let limits = self.engine.limits();
        let frame_len = frame.len();
        let mut cost = frame_len;
        let (header, version, request) =
            decode_request_bounded(frame, limits.request_elements_max)?;
        let mut response_hold = BudgetHold::new(self.engine.responses(), limits.response_bytes_max);
        let fetch = matches!(request, KafkaRequest::Fetch(_));
        match &request {
            // Its frame is held of the request buffers already; holding it
            // of the in-flight budget too while waiting for the response
            // budget would break the order above.
            KafkaRequest::Fetch(_) => cost = 0,
            KafkaRequest::Produce(request)
                if request
                    .topic_data
                    .iter()
                    .flat_map(|t| &t.partition_data)
                    .any(|p| p.records.as_deref().is_some_and(any_compressed)) =>
            {
                // The decompressed section and the batch rebuilt from it;
                // given back once converted, before the write.
                cost += 2 * limits.decompressed_bytes_max_per_request;
            }
            _ => {}
        }
        if cost > limits.inflight_bytes_max {
            return Err(HandleError::OverInflightBudget {
                bytes: cost,
                budget_bytes: limits.inflight_bytes_max,
            });
        }
        // One acquisition for all of it: a request never holds part of the
        // budget while it waits for more.
        let mut inflight = BudgetHold::new(self.engine.inflight(), limits.inflight_bytes_max);
        if !inflight.grow_to(cost).await {
            return Err(HandleError::Stopping);
        }
        let mut context = apis::Context {
            header: &header,
            version,
            frame_len,
            inflight: &mut inflight,
            response_hold: &mut response_hold,
        };
        let response = self.answer(request, &mut context).await?;
        drop(inflight);
        let Some(bytes) = response else {
            return Ok(None);
        };
        // A response larger than the whole budget holds all of it.
        let len = bytes.len().min(limits.response_bytes_max);
        if len <= response_hold.held() {
            response_hold.shrink_to(len);
        } else if fetch {
            // Reserved before the read; a first batch above the fetch's
            // max_bytes (always returned, as Kafka does) takes more if the
            // shard has it now: waiting here, holding the reservation,
            // could wait on another fetch doing the same.
            response_hold.try_grow_to(len);
        } else if !response_hold.grow_to(len).await {
            return Err(HandleError::Stopping);
        }
        Ok(Some(KafkaResponse {
            bytes,
            _hold: response_hold,
        }))
    }

    fn api_versions_response(&self, error_code: i16) -> ApiVersionsResponse {
        let mut response = ApiVersionsResponse::default();
        response.error_code = error_code;
        response.api_keys = KAFKA_APIS
            .iter()
            .map(|&(key, min, max)| {
                let mut v = ApiVersion::default();
                v.api_key = key as i16;
                v.min_version = min;
                v.max_version = max;
                v
            })
            .collect();
        response
    }

    async fn metadata(&self, request: MetadataRequest, version: i16) -> MetadataResponse {
        let names: Option<Vec<String>> = request.topics.map(|topics| {
            topics
                .into_iter()
                .map(|t| t.name.map_or_else(String::new, |n| n.0.to_string()))
                .collect()
        });
        // v0-v3 had no auto-create flag: it was always on.
        let allow = version < 4 || request.allow_auto_topic_creation;
        let metadata = self.engine.metadata(names.as_deref(), allow).await;
        let view = self.engine.cluster_view(&metadata.catalog);
        metadata_response(&metadata.catalog, &view, names, |name| {
            metadata.missing_topic_error(name)
        })
    }

    /// `inflight` holds the frame (`frame_len`) and, for compressed
    /// batches, the decompression reservation, which is given back once
    /// every partition is converted.
    async fn produce(
        &self,
        request: ProduceRequest,
        inflight: &mut BudgetHold<'_>,
        frame_len: usize,
    ) -> ProduceResponse {
        let timeout = Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0));
        // Partitions that will be refused anyway are not converted: a
        // request's batches are decompressed only for partitions the
        // engine would route, and only with valid acks.
        let acks = i8::try_from(request.acks).unwrap_or(i8::MIN);
        let mut decompressed_left = self.engine.limits().decompressed_bytes_max_per_request;
        let mut scratch = Vec::new();
        // Per topic: each partition's index and why it was not converted
        // (the converted ones go to the engine, in the same order).
        let mut refused: Vec<Vec<(i32, Option<ConvertError>)>> = Vec::new();
        let mut topics = Vec::with_capacity(request.topic_data.len());
        for topic in request.topic_data {
            let name = topic.name.0.to_string();
            let mut answers = Vec::with_capacity(topic.partition_data.len());
            let mut parts = Vec::with_capacity(topic.partition_data.len());
            for p in topic.partition_data {
                let partition = PartitionId(p.index as u32);
                let native = match self.engine.produce_refusal(&name, partition) {
                    Err(error) => Err((error.error_code(), None)),
                    Ok(()) if !matches!(acks, -1..=1) => Ok(VerifiedBatches::default()),
                    Ok(()) => {
                        let records = p.records.unwrap_or_default();
                        self.convert(&records, &mut decompressed_left, &mut scratch)
                            .await
                            .map_err(|e| (e.error_code(), Some(e.to_string())))
                    }
                };
                match native {
                    Ok(batches) => {
                        parts.push((partition, Ok(batches)));
                        answers.push((p.index, None));
                    }
                    Err(error) => answers.push((p.index, Some(error))),
                }
            }
            topics.push((name, parts));
            refused.push(answers);
        }
        drop(scratch);
        inflight.shrink_to(frame_len);
        let results = self
            .engine
            .produce(EngineProduce {
                acks,
                timeout,
                topics,
            })
            .await;
        tracing::trace!(acks, ?results, "kafka produce");
        let mut response = ProduceResponse::default();
        for ((name, results), answers) in results.into_iter().zip(refused) {
            let mut results = results.into_iter();
            let mut topic = TopicProduceResponse::default();
            topic.name = TopicName(StrBytes::from_string(name));
            for (index, refusal) in answers {
                let mut p = PartitionProduceResponse::default();
                p.index = index;
                p.log_append_time_ms = -1;
                match refusal {
                    Some((code, message)) => {
                        p.error_code = code.code();
                        p.error_message = message.map(StrBytes::from_string);
                        p.base_offset = -1;
                        p.log_start_offset = -1;
                    }
                    None => match results.next() {
                        Some((_, r)) => {
                            p.error_code = r.error.code();
                            p.error_message = r.message.map(StrBytes::from_string);
                            p.base_offset = r.base_offset;
                            p.log_start_offset = r.log_start_offset;
                        }
                        None => {
                            p.error_code = ErrorCode::UnknownServerError.code();
                            p.base_offset = -1;
                            p.log_start_offset = -1;
                        }
                    },
                }
                topic.partition_responses.push(p);
            }
            response.responses.push(topic);
        }
        response
    }

    /// Converts one partition's Kafka batches to native ones, one batch at
    /// a time, yielding to the shard's other tasks between batches; all
    /// the request's batches together decompress to at most
    /// `decompressed_left` bytes (taken from it).
    async fn convert(
        &self,
        records: &[u8],
        decompressed_left: &mut usize,
        scratch: &mut Vec<u8>,
    ) -> Result<VerifiedBatches, KafkaRecordsError> {
        let request_max = self.engine.limits().decompressed_bytes_max_per_request;
        let mut rest = records;
        let mut batches = Vec::new();
        while !rest.is_empty() {
            glommio::yield_if_needed().await;
            let limits = KafkaRecordsLimits {
                uncompressed_bytes_max: self.limits.uncompressed_bytes_max.min(*decompressed_left),
                ..self.limits
            };
            let (native, decompressed_len) = kafka_to_native_one(&mut rest, &limits, scratch)
                .map_err(|e| match e {
                    KafkaRecordsError::UncompressedTooLarge { .. }
                        if limits.uncompressed_bytes_max < self.limits.uncompressed_bytes_max =>
                    {
                        KafkaRecordsError::RequestUncompressedTooLarge {
                            len_max: request_max,
                        }
                    }
                    e => e,
                })?;
            *decompressed_left -= decompressed_len;
            batches.push(native);
        }
        // Built here (CRC computed by the builder), so not verified again;
        // one `Bytes` per batch, never concatenated to be split again.
        Ok(VerifiedBatches::built(batches))
    }

    /// What a fetch's response may take: its records budget plus headers.
    fn fetch_response_bytes(&self, request: &FetchRequest) -> usize {
        let max_bytes = usize::try_from(request.max_bytes).unwrap_or(0);
        let overhead: usize = request
            .topics
            .iter()
            .map(|t| {
                FETCH_TOPIC_OVERHEAD_BYTES
                    + t.topic.0.len()
                    + t.partitions.len() * FETCH_PARTITION_OVERHEAD_BYTES
            })
            .sum();
        self.engine
            .fetch_budget(max_bytes, 0)
            .saturating_add(FETCH_RESPONSE_OVERHEAD_BYTES + overhead)
            .min(self.engine.limits().response_bytes_max)
    }

    async fn fetch(
        &self,
        request: FetchRequest,
        version: i16,
        response_hold: &mut BudgetHold<'_>,
    ) -> Result<FetchResponse, HandleError> {
        let reserve = self.fetch_response_bytes(&request);
        let topics = request
            .topics
            .into_iter()
            .map(|t| {
                let parts = t
                    .partitions
                    .into_iter()
                    .map(|p| {
                        let partition = FetchPartition {
                            fetch_offset: p.fetch_offset,
                            partition_max_bytes: usize::try_from(p.partition_max_bytes)
                                .unwrap_or(0),
                            current_leader_epoch: leader_epoch_of(p.current_leader_epoch),
                            replica_durable_end: None,
                        };
                        (PartitionId(p.partition as u32), partition)
                    })
                    .collect();
                (t.topic.0.to_string(), parts)
            })
            .collect();
        let request = EngineFetch {
            max_wait: Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0)),
            min_bytes: usize::try_from(request.min_bytes).unwrap_or(0),
            max_bytes: usize::try_from(request.max_bytes).unwrap_or(0),
            replica_id: replica_of(request.replica_id.0),
            isolation: isolation(request.isolation_level),
            topics,
        };
        // Its frame is held of the request buffers, not the in-flight
        // budget (see `handle`).
        let mut reservation = ResponseReservation {
            hold: response_hold,
            bytes: reserve,
        };
        let results = self
            .engine
            .fetch(request, 0, &mut reservation)
            .await
            .map_err(|_| HandleError::Stopping)?;
        let mut response = FetchResponse::default();
        // Only for a partition led elsewhere (KIP-951, v12+): where to go.
        let catalog = (version >= 12).then(|| self.engine.catalog());
        for (name, parts) in results {
            let mut topic = FetchableTopicResponse::default();
            for (partition, result) in parts {
                let mut p = PartitionData::default();
                p.partition_index = partition.get() as i32;
                p.error_code = result.error.code();
                if let (ErrorCode::NotLeaderOrFollower, Some(catalog)) = (result.error, &catalog) {
                    if let Some(leader) = current_leader(catalog, &name, partition) {
                        p.current_leader = leader;
                    }
                }
                p.high_watermark = result.high_watermark;
                p.last_stable_offset = result.high_watermark;
                p.log_start_offset = result.log_start_offset;
                p.aborted_transactions = Some(Vec::new());
                let mut records = Vec::new();
                // The batches that fit the response (the engine's rule).
                for batch in &result.batches {
                    let before = records.len();
                    if let Err(error) = native_to_kafka(batch, &self.limits, &mut records) {
                        tracing::warn!(%error, topic = %name, partition = partition.get(), "stored batch does not convert to Kafka");
                        records.truncate(before);
                        if records.is_empty() {
                            p.error_code = error.error_code().code();
                        }
                        break;
                    }
                }
                p.records = Some(Bytes::from(records));
                topic.partitions.push(p);
            }
            topic.topic = TopicName(StrBytes::from_string(name));
            response.responses.push(topic);
        }
        Ok(response)
    }

    async fn list_offsets(&self, request: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
        let topics = request
            .topics
            .into_iter()
            .map(|t| {
                let parts = t
                    .partitions
                    .into_iter()
                    .map(|p| {
                        let partition = ListOffsetsPartition {
                            timestamp: p.timestamp,
                            current_leader_epoch: leader_epoch_of(p.current_leader_epoch),
                        };
                        (PartitionId(p.partition_index as u32), partition)
                    })
                    .collect();
                (t.name.0.to_string(), parts)
            })
            .collect();
        let request = EngineListOffsets {
            replica_id: replica_of(request.replica_id.0),
            isolation: isolation(request.isolation_level),
            topics,
        };
        let results = self.engine.list_offsets(request).await;
        let mut response = ListOffsetsResponse::default();
        for (name, parts) in results {
            let mut topic = ListOffsetsTopicResponse::default();
            topic.name = TopicName(StrBytes::from_string(name));
            for (partition, r) in parts {
                let mut p = ListOffsetsPartitionResponse::default();
                p.partition_index = partition.get() as i32;
                p.error_code = r.error.code();
                p.timestamp = r.timestamp;
                p.offset = r.offset;
                // leader_epoch exists from v4; the encoder refuses it set
                // on older versions.
                if version >= 4 && r.error == ErrorCode::None {
                    p.leader_epoch = 0;
                }
                topic.partitions.push(p);
            }
            response.topics.push(topic);
        }
        response
    }

    async fn create_topics(&self, request: CreateTopicsRequest) -> CreateTopicsResponse {
        let specs = request
            .topics
            .into_iter()
            .map(|t| CreateSpec {
                name: t.name.0.to_string(),
                num_partitions: t.num_partitions,
                replication_factor: t.replication_factor,
                configs: t
                    .configs
                    .into_iter()
                    .filter_map(|c| Some((c.name.to_string(), c.value?.to_string())))
                    .collect(),
                assignments: t
                    .assignments
                    .into_iter()
                    .map(|a| {
                        (
                            a.partition_index,
                            a.broker_ids.iter().map(|b| b.0).collect(),
                        )
                    })
                    .collect(),
            })
            .collect();
        let outcomes = self
            .engine
            .create_topics(specs, request.validate_only)
            .await;
        let mut response = CreateTopicsResponse::default();
        for o in outcomes {
            let mut t = CreatableTopicResult::default();
            t.error_code = o.code().code();
            t.error_message = o.message().map(StrBytes::from_string);
            t.num_partitions = o.num_partitions;
            t.replication_factor = if o.code() == ErrorCode::None { 1 } else { -1 };
            if let Some(id) = o.topic_id {
                t.topic_id = uuid::Uuid::from_bytes(id.0);
            }
            t.name = TopicName(StrBytes::from_string(o.name));
            response.topics.push(t);
        }
        response
    }

    async fn delete_topics(&self, request: DeleteTopicsRequest) -> DeleteTopicsResponse {
        // v0-v5 name topics in topic_names, v6 in topics (by name; ids are
        // not supported: such entries come back unknown).
        let mut names: Vec<String> = request
            .topic_names
            .iter()
            .map(|n| n.0.to_string())
            .collect();
        names.extend(request.topics.iter().map(|t| {
            t.name
                .as_ref()
                .map_or_else(String::new, |n| n.0.to_string())
        }));
        let outcomes = self.engine.delete_topics(names).await;
        let mut response = DeleteTopicsResponse::default();
        for o in outcomes {
            let mut t = DeletableTopicResult::default();
            t.error_code = o.code().code();
            t.error_message = o.message().map(StrBytes::from_string);
            t.name = Some(TopicName(StrBytes::from_string(o.name)));
            response.responses.push(t);
        }
        response
    }

    async fn init_producer_id(&self, request: InitProducerIdRequest) -> InitProducerIdResponse {
        let answer = self
            .engine
            .init_producer_id(
                request.transactional_id.as_ref().map(|t| t.as_str()),
                ProducerId(request.producer_id.0),
                ProducerEpoch(request.producer_epoch),
            )
            .await;
        let mut response = InitProducerIdResponse::default();
        match answer {
            Ok((id, epoch)) => {
                response.producer_id = kafka_protocol::messages::ProducerId(id.0);
                response.producer_epoch = epoch.0;
            }
            Err((code, message)) => {
                tracing::debug!(%message, "InitProducerId refused");
                response.error_code = code.code();
                response.producer_id = kafka_protocol::messages::ProducerId(-1);
                response.producer_epoch = -1;
            }
        }
        response
    }
}

/// The leader and leader epoch of `partition` of `topic` (KIP-951's
/// `CurrentLeader`), if the partition exists.
pub(super) fn current_leader(
    catalog: &Catalog,
    topic: &str,
    partition: PartitionId,
) -> Option<LeaderIdAndEpoch> {
    let image = catalog.get(topic)?.partition(partition)?;
    let mut leader = LeaderIdAndEpoch::default();
    leader.leader_id = broker_id(image.leader);
    leader.leader_epoch = image.leader_epoch.0 as i32;
    Some(leader)
}

/// A wire broker id (`-1`: none).
fn broker_id(node: Option<NodeId>) -> BrokerId {
    BrokerId(node.map_or(-1, |n| n.get() as i32))
}

/// The Metadata answer for `names` (`None`: every topic) from `catalog`
/// as `view` shows the cluster: the unfenced brokers with their Kafka
/// listener, the active controller, and per partition its leader (-1 and
/// LEADER_NOT_AVAILABLE when it has none), replicas, ISR, the replicas on
/// fenced brokers (offline) and the leader epoch. `missing` says why a
/// named topic is not in the catalog. Fields a version lacks are skipped
/// by the encoder.
pub(super) fn metadata_response(
    catalog: &Catalog,
    view: &ClusterView,
    names: Option<Vec<String>>,
    missing: impl Fn(&str) -> ErrorCode,
) -> MetadataResponse {
    let mut response = MetadataResponse::default();
    response.brokers = view
        .live()
        .filter_map(|n| {
            // A broker without a Kafka listener cannot be reached by Kafka
            // clients: not listed to them.
            let kafka = n.kafka.as_ref()?;
            let mut b = MetadataResponseBroker::default();
            b.node_id = broker_id(Some(n.node));
            b.host = StrBytes::from_string(kafka.host.clone());
            b.port = i32::from(kafka.port);
            b.rack = n.rack.clone().map(StrBytes::from_string);
            Some(b)
        })
        .collect();
    response.cluster_id = Some(StrBytes::from_static_str(admin::CLUSTER_ID));
    response.controller_id = broker_id(view.controller);
    let wanted: Vec<String> = match names {
        Some(names) => names,
        None => catalog.topics().map(|t| t.name.clone()).collect(),
    };
    let brokers =
        |nodes: &[NodeId]| -> Vec<BrokerId> { nodes.iter().map(|n| broker_id(Some(*n))).collect() };
    for name in wanted {
        let mut topic = MetadataResponseTopic::default();
        topic.name = Some(TopicName(StrBytes::from_string(name.clone())));
        topic.is_internal = name == OFFSETS_TOPIC;
        match catalog.get(&name) {
            None => topic.error_code = missing(&name).code(),
            Some(meta) => {
                // Metadata v10+ carries it; older versions skip it.
                topic.topic_id = uuid::Uuid::from_bytes(meta.id.0);
                topic.partitions = meta
                    .partitions
                    .iter()
                    .enumerate()
                    .map(|(index, image)| {
                        let mut p = MetadataResponsePartition::default();
                        p.partition_index = index as i32;
                        p.leader_id = broker_id(image.leader);
                        if image.leader.is_none() {
                            p.error_code = ErrorCode::LeaderNotAvailable.code();
                        }
                        p.leader_epoch = image.leader_epoch.0 as i32;
                        p.replica_nodes = brokers(&image.replicas);
                        p.isr_nodes = brokers(&image.isr);
                        p.offline_replicas = brokers(&view.offline_replicas(image));
                        p
                    })
                    .collect();
            }
        }
        response.topics.push(topic);
    }
    response
}

/// [`decode_request_bounded`] with the default element bound.
pub fn decode_request(frame: Bytes) -> Result<(RequestHeader, i16, KafkaRequest), HandleError> {
    decode_request_bounded(frame, REQUEST_ELEMENTS_MAX_DEFAULT)
}

/// Decodes one frame (length prefix removed): the trust boundary of the
/// Kafka listener. Apis and versions outside [`KAFKA_APIS`] are refused
/// before their body is looked at; a request holding more than
/// `elements_max` array elements (all arrays together) is refused while it
/// is decoded, before they are allocated: a decoded element takes far more
/// memory than its smallest wire form, so the frame size alone would not
/// bound what a request makes the broker allocate.
pub fn decode_request_bounded(
    frame: Bytes,
    elements_max: usize,
) -> Result<(RequestHeader, i16, KafkaRequest), HandleError> {
    kafka_protocol::protocol::types::with_elements_max(elements_max, || decode_unbounded(frame))
}

fn decode_unbounded(frame: Bytes) -> Result<(RequestHeader, i16, KafkaRequest), HandleError> {
    if frame.len() < 4 {
        return Err(HandleError::Decode {
            what: "request header",
            reason: "shorter than 4 bytes".into(),
        });
    }
    let api_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let unsupported = HandleError::Unsupported { api_key, version };
    let Ok(api) = ApiKey::try_from(api_key) else {
        return Err(unsupported);
    };
    let Some(&(_, min, max)) = KAFKA_APIS.iter().find(|(k, _, _)| *k == api) else {
        return Err(unsupported);
    };
    let served = (min..=max).contains(&version);
    if !served && api != ApiKey::ApiVersions {
        return Err(unsupported);
    }
    let mut buf = frame;
    let header = RequestHeader::decode(&mut buf, api.request_header_version(version))
        .map_err(boxed)
        .map_err(decode_error("request header"))?;
    if !served {
        return Ok((header, version, KafkaRequest::UnsupportedApiVersions));
    }
    let request = KafkaRequest::decode(api, &mut buf, version)?;
    Ok((header, version, request))
}

/// Frames a response: length, response header, body.
fn encode<M: Encodable>(
    request: &RequestHeader,
    api: ApiKey,
    version: i16,
    body: &M,
) -> Result<BytesMut, HandleError> {
    let mut header = ResponseHeader::default();
    header.correlation_id = request.correlation_id;
    let mut out = BytesMut::new();
    out.put_u32(0);
    header
        .encode(&mut out, api.response_header_version(version))
        .map_err(|e| HandleError::Encode(e.to_string()))?;
    body.encode(&mut out, version)
        .map_err(|e| HandleError::Encode(e.to_string()))?;
    let len = u32::try_from(out.len() - 4)
        .map_err(|_| HandleError::Encode("response over 4 GiB".into()))?;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A served api and version, then arbitrary bytes: header and body.
    fn frames() -> impl Strategy<Value = Vec<u8>> {
        let served = (0..KAFKA_APIS.len(), 0i16..16).prop_map(|(i, offset)| {
            let (api, min, max) = KAFKA_APIS[i];
            (api as i16, min + offset % (max - min + 1))
        });
        (served, proptest::collection::vec(any::<u8>(), 0..256)).prop_map(
            |((api, version), rest)| {
                let mut frame = api.to_be_bytes().to_vec();
                frame.extend_from_slice(&version.to_be_bytes());
                frame.extend(rest);
                frame
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Garbage never panics (or aborts on a huge reservation): it
        /// decodes or is refused.
        #[test]
        fn arbitrary_frames_decode_or_are_refused(frame in frames()) {
            let _ = decode_request(Bytes::from(frame));
        }

        /// Array counts near i32::MAX right after a valid header.
        #[test]
        fn huge_array_counts_are_refused(
            (api, version) in (0..KAFKA_APIS.len()).prop_map(|i| (KAFKA_APIS[i].0, KAFKA_APIS[i].2)),
            count in (i32::MAX - 1024)..=i32::MAX,
            tail in proptest::collection::vec(any::<u8>(), 0..32),
        ) {
            let mut header = RequestHeader::default();
            header.request_api_key = api as i16;
            header.request_api_version = version;
            let mut frame = BytesMut::new();
            header
                .encode(&mut frame, api.request_header_version(version))
                .expect("header encodes");
            for _ in 0..4 {
                frame.put_i32(count);
                frame.extend_from_slice(&tail);
            }
            let _ = decode_request(frame.freeze());
        }
    }

    fn metadata_frame(topics: usize) -> Bytes {
        let version = 4;
        let mut header = RequestHeader::default();
        header.request_api_key = ApiKey::Metadata as i16;
        header.request_api_version = version;
        let mut request = MetadataRequest::default();
        request.topics = Some(
            (0..topics)
                .map(|_| {
                    let mut t =
                        kafka_protocol::messages::metadata_request::MetadataRequestTopic::default();
                    t.name = Some(TopicName(StrBytes::from_static_str("t")));
                    t
                })
                .collect(),
        );
        let mut frame = BytesMut::new();
        header
            .encode(&mut frame, ApiKey::Metadata.request_header_version(version))
            .expect("header encodes");
        request.encode(&mut frame, version).expect("body encodes");
        frame.freeze()
    }

    /// A request with more array elements than the bound is refused while
    /// it decodes; one at the bound decodes, and the bound does not leak
    /// into the next decode.
    #[test]
    fn request_elements_are_bounded() {
        let decoded = decode_request_bounded(metadata_frame(10), 10);
        assert!(matches!(decoded, Ok((_, _, KafkaRequest::Metadata(_)))));
        match decode_request_bounded(metadata_frame(11), 10) {
            Err(HandleError::Decode { reason, .. }) => {
                assert!(reason.contains("more than 10 array elements"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert!(decode_request_bounded(metadata_frame(1000), 1000).is_ok());
    }

    #[test]
    fn short_and_unserved_frames_are_refused() {
        assert!(decode_request(Bytes::from_static(&[0, 3])).is_err());
        // JoinGroup v10: not served.
        let frame = Bytes::from_static(&[0, 11, 0, 10, 0, 0, 0, 1, 0xff, 0xff]);
        assert!(matches!(
            decode_request(frame),
            Err(HandleError::Unsupported {
                api_key: 11,
                version: 10
            })
        ));
        // AddPartitionsToTxn: never served.
        let frame = Bytes::from_static(&[0, 24, 0, 1, 0, 0, 0, 1, 0xff, 0xff]);
        assert!(matches!(
            decode_request(frame),
            Err(HandleError::Unsupported { api_key: 24, .. })
        ));
    }

    /// A Kafka producer's batch, converted, goes through the engine's
    /// types (its produce request, the routed partition, the op the
    /// owning shard runs) as its buffer's only reference, so the log
    /// stamps its offsets in place without a copy; a batch recompressed
    /// for a topic's `compression.type` too.
    #[test]
    fn a_converted_batch_reaches_the_log_without_a_copy() {
        use fjord_schema::batch::{BatchBuilder, BatchOptions, RecordInput};
        use fjord_schema::{Compression, ShardId};

        use crate::engine::recompress::recompress_batches;
        use crate::engine::types::ProduceRequest;
        use crate::engine::{produce_op, Part};
        use crate::ops::Op;

        // Records of a realistic size: the conversion's first buffer
        // fits them (small records make it copy the batch to a tight
        // buffer instead, see `records::tight`).
        let mut builder = BatchBuilder::new(BatchOptions::default());
        for i in 0..100 {
            builder.push(RecordInput {
                value: Some(&[i; 1000]),
                timestamp: 1,
                ..RecordInput::default()
            });
        }
        let native = builder.finish().expect("builds");
        let limits = KafkaRecordsLimits::default();
        let mut kafka = Vec::new();
        native_to_kafka(&native, &limits, &mut kafka).expect("to kafka");

        // Through the engine to the owning shard's op, as `Engine::produce`
        // moves it (route, then `produce_op`), and out as the log takes it.
        let appended = |batches: VerifiedBatches| -> Vec<BytesMut> {
            let request = ProduceRequest {
                acks: 1,
                timeout: Duration::from_secs(30),
                topics: vec![("t".to_owned(), vec![(PartitionId(0), Ok(batches))])],
            };
            let (name, mut parts) = request.topics.into_iter().next().expect("a topic");
            let (partition, input) = parts.pop().expect("a partition");
            let mut part = Part {
                partition,
                route: Ok(ShardId(0)),
                input: input.expect("valid"),
            };
            let op = produce_op(&name, &mut part, 1, Duration::from_secs(30));
            assert!(part.input.is_empty(), "moved, not shared");
            let Op::Produce { records, .. } = op else {
                panic!("{op:?}")
            };
            records
                .into_iter()
                .map(VerifiedBatches::into_appendable)
                .collect()
        };

        let mut rest = &kafka[..];
        let (converted, _) =
            kafka_to_native_one(&mut rest, &limits, &mut Vec::new()).expect("converts");
        assert!(rest.is_empty());
        assert_eq!(converted, native);
        let at = converted.as_ptr();
        let batches = appended(VerifiedBatches::built(vec![converted]));
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].as_ptr(), at, "not copied");

        // A topic with compression.type = zstd: the rewritten batch is its
        // buffer's only reference as well.
        let mut rest = &kafka[..];
        let (converted, _) =
            kafka_to_native_one(&mut rest, &limits, &mut Vec::new()).expect("converts");
        let recompressed = glommio::LocalExecutor::default()
            .run(recompress_batches(
                VerifiedBatches::built(vec![converted]),
                Compression::Zstd,
                1 << 20,
            ))
            .expect("recompressed");
        let at = recompressed.iter().next().expect("a batch").as_ptr();
        let batches = appended(recompressed);
        assert_eq!(batches[0].as_ptr(), at, "not copied");
    }
}
