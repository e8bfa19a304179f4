//! Kafka requests on the native machinery: each supported request is
//! decoded with `kafka-protocol`, split per partition and run through the
//! same [`Dispatcher`] paths (and so the same `ops::Op`s on the owning
//! shards) as the native protocol; records are converted with
//! [`kafka_to_native`] / [`native_to_kafka`].
//!
//! Only the apis and versions in [`KAFKA_APIS`] are answered; ApiVersions
//! lists exactly those. A request for anything else, or one that does not
//! decode, closes the connection (ApiVersions at an unknown version gets
//! Kafka's UNSUPPORTED_VERSION answer at v0, as clients expect).

use std::rc::Rc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use fjord_schema::{ErrorCode, PartitionId, ProducerEpoch, ProducerId};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, CreateTopicsRequest,
    CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, FetchRequest, FetchResponse,
    InitProducerIdRequest, InitProducerIdResponse, ListOffsetsRequest, ListOffsetsResponse,
    MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::records::{kafka_to_native, native_to_kafka, KafkaRecordsLimits};
use crate::dispatch::Dispatcher;
use crate::group::offsets_log::OFFSETS_TOPIC;
use crate::ops::CreateSpec;
use crate::topics::validate_topic_name;

/// The apis answered on the Kafka listener: (api, min version, max version).
pub const KAFKA_APIS: [(ApiKey, i16, i16); 8] = [
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 4),
];

/// Kafka's UNSUPPORTED_VERSION.
const UNSUPPORTED_VERSION: i16 = 35;

/// Why a request closes the connection.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    #[error("unsupported api {api_key} version {version}")]
    Unsupported { api_key: i16, version: i16 },
    #[error("undecodable {what}: {reason}")]
    Decode { what: &'static str, reason: String },
    #[error("cannot encode the response: {0}")]
    Encode(String),
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

/// One produce partition: its index and its records converted to native
/// batches (or why they do not convert).
type Converted = (i32, Result<Bytes, ErrorCode>);
/// One fetch partition: fetch offset and partition byte limit.
type FetchPart = (PartitionId, (i64, usize));

/// Serves the Kafka requests of one connection.
#[derive(Debug)]
pub struct KafkaHandler {
    dispatcher: Rc<Dispatcher>,
    limits: KafkaRecordsLimits,
}

impl KafkaHandler {
    pub fn new(dispatcher: Rc<Dispatcher>) -> KafkaHandler {
        KafkaHandler {
            dispatcher,
            limits: KafkaRecordsLimits::default(),
        }
    }

    /// Handles one frame (length prefix removed); returns the framed
    /// response, or `None` when none is due (acks = 0).
    pub async fn handle(&self, frame: Bytes) -> Result<Option<BytesMut>, HandleError> {
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
        let mut buf = frame;
        let header_version = api.request_header_version(version);
        let header = RequestHeader::decode(&mut buf, header_version)
            .map_err(boxed)
            .map_err(decode_error("request header"))?;
        if version < min || version > max {
            if api == ApiKey::ApiVersions {
                // The client retries with the version this names.
                let response = self.api_versions_response(UNSUPPORTED_VERSION);
                return encode(&header, ApiKey::ApiVersions, 0, &response).map(Some);
            }
            return Err(unsupported);
        }
        let cost = buf.len();
        let dispatcher = self.dispatcher.clone();
        let work = async {
            match api {
                ApiKey::ApiVersions => {
                    ApiVersionsRequest::decode(&mut buf, version)
                        .map_err(boxed)
                        .map_err(decode_error("ApiVersions"))?;
                    let response = self.api_versions_response(0);
                    encode(&header, api, version, &response).map(Some)
                }
                ApiKey::Metadata => {
                    let request = MetadataRequest::decode(&mut buf, version)
                        .map_err(boxed)
                        .map_err(decode_error("Metadata"))?;
                    let response = self.metadata(request, version).await;
                    encode(&header, api, version, &response).map(Some)
                }
                ApiKey::Produce => {
                    let request = ProduceRequest::decode(&mut buf, version)
                        .map_err(boxed)
                        .map_err(decode_error("Produce"))?;
                    let acks = request.acks;
                    let response = self.produce(request).await;
                    if acks == 0 {
                        return Ok(None);
                    }
                    encode(&header, api, version, &response).map(Some)
                }
                ApiKey::Fetch => {
                    let request = FetchRequest::decode(&mut buf, version)
                        .map_err(boxed)
                        .map_err(decode_error("Fetch"))?;
                    let response = self.fetch(request).await;
                    encode(&header, api, version, &response).map(Some)
                }
                ApiKey::ListOffsets => {
                    let request = ListOffsetsRequest::decode(&mut buf, version)
                        .map_err(boxed)
                        .map_err(decode_error("ListOffsets"))?;
                    let response = self.list_offsets(request).await;
                    encode(&header, api, version, &response).map(Some)
                }
                ApiKey::CreateTopics => {
                    let request = CreateTopicsRequest::decode(&mut buf, version)
                        .map_err(boxed)
                        .map_err(decode_error("CreateTopics"))?;
                    let response = self.create_topics(request).await;
                    encode(&header, api, version, &response).map(Some)
                }
                ApiKey::DeleteTopics => {
                    let request = DeleteTopicsRequest::decode(&mut buf, version)
                        .map_err(boxed)
                        .map_err(decode_error("DeleteTopics"))?;
                    let response = self.delete_topics(request).await;
                    encode(&header, api, version, &response).map(Some)
                }
                ApiKey::InitProducerId => {
                    let request = InitProducerIdRequest::decode(&mut buf, version)
                        .map_err(boxed)
                        .map_err(decode_error("InitProducerId"))?;
                    let response = self.init_producer_id(request);
                    encode(&header, api, version, &response).map(Some)
                }
                _ => Err(HandleError::Unsupported { api_key, version }),
            }
        };
        match dispatcher.budgeted(cost, work).await {
            Some(result) => result,
            None => Err(HandleError::Decode {
                what: "request",
                reason: format!("{cost} bytes do not fit the shard's in-flight budget"),
            }),
        }
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
        let (catalog, refused) = self.dispatcher.metadata_catalog(&names, allow).await;
        let broker = self.dispatcher.broker();
        let node = broker.node_id.get() as i32;
        let mut response = MetadataResponse::default();
        let mut this = MetadataResponseBroker::default();
        this.node_id = BrokerId(node);
        this.host = StrBytes::from_string(broker.kafka_host.clone());
        this.port = i32::from(broker.kafka_port);
        response.brokers = vec![this];
        response.cluster_id = Some(StrBytes::from_static_str("fjord"));
        response.controller_id = BrokerId(node);
        let wanted: Vec<String> = match names {
            Some(names) => names,
            None => catalog.topics().map(|t| t.name.clone()).collect(),
        };
        for name in wanted {
            let mut topic = MetadataResponseTopic::default();
            topic.name = Some(TopicName(StrBytes::from_string(name.clone())));
            topic.is_internal = name == OFFSETS_TOPIC;
            match catalog.get(&name) {
                None => {
                    let error = refused
                        .iter()
                        .find(|o| o.name == name)
                        .map_or(ErrorCode::UnknownTopicOrPartition, |o| o.error);
                    topic.error_code = if validate_topic_name(&name).is_err() {
                        ErrorCode::InvalidTopicException.code()
                    } else {
                        error.code()
                    };
                }
                Some(meta) => {
                    topic.partitions = (0..meta.shards.len())
                        .map(|index| {
                            let mut p = MetadataResponsePartition::default();
                            p.partition_index = index as i32;
                            p.leader_id = BrokerId(node);
                            p.leader_epoch = 0;
                            p.replica_nodes = vec![BrokerId(node)];
                            p.isr_nodes = vec![BrokerId(node)];
                            p
                        })
                        .collect();
                }
            }
            response.topics.push(topic);
        }
        response
    }

    async fn produce(&self, request: ProduceRequest) -> ProduceResponse {
        // Convert first; a partition whose records do not convert fails
        // alone, with the conversion's error code.
        let mut converted: Vec<(String, Vec<Converted>)> = Vec::new();
        for topic in request.topic_data {
            let parts = topic
                .partition_data
                .into_iter()
                .map(|p| {
                    let records = p.records.unwrap_or_default();
                    let native = kafka_to_native(&records, &self.limits)
                        .map(|batches| {
                            let mut all =
                                BytesMut::with_capacity(batches.iter().map(Bytes::len).sum());
                            for b in &batches {
                                all.extend_from_slice(b);
                            }
                            all.freeze()
                        })
                        .map_err(|e| e.error_code());
                    (p.index, native)
                })
                .collect();
            converted.push((topic.name.0.to_string(), parts));
        }
        let acks = i8::try_from(request.acks).unwrap_or(i8::MIN);
        let routed = converted.iter().map(|(name, parts)| {
            let ok = parts
                .iter()
                .filter_map(|(index, r)| {
                    Some((PartitionId(*index as u32), r.as_ref().ok()?.clone()))
                })
                .collect();
            (name.clone(), ok)
        });
        let results = self.dispatcher.produce_results(routed, acks).await;
        let mut response = ProduceResponse::default();
        for ((name, parts), results) in converted.iter().zip(results) {
            let mut results = results.into_iter();
            let mut topic = TopicProduceResponse::default();
            topic.name = TopicName(StrBytes::from_string(name.clone()));
            for (index, converted) in parts {
                let mut p = PartitionProduceResponse::default();
                p.index = *index;
                p.log_append_time_ms = -1;
                match converted {
                    Err(code) => {
                        p.error_code = code.code();
                        p.base_offset = -1;
                        p.log_start_offset = -1;
                    }
                    Ok(_) => match results.next() {
                        Some(r) => {
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

    async fn fetch(&self, request: FetchRequest) -> FetchResponse {
        let topics: Vec<(String, Vec<FetchPart>)> = request
            .topics
            .iter()
            .map(|t| {
                let parts = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let max = usize::try_from(p.partition_max_bytes).unwrap_or(0);
                        (PartitionId(p.partition as u32), (p.fetch_offset, max))
                    })
                    .collect();
                (t.topic.0.to_string(), parts)
            })
            .collect();
        let wait = Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0));
        let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
        let max_bytes = usize::try_from(request.max_bytes).unwrap_or(0);
        let results = self
            .dispatcher
            .fetch_results(topics.iter().cloned(), wait, min_bytes, max_bytes)
            .await;
        let mut response = FetchResponse::default();
        let results = match results {
            Ok(results) => results,
            Err(code) => {
                response.error_code = code.code();
                return response;
            }
        };
        for ((name, parts), results) in topics.iter().zip(results) {
            let mut topic = FetchableTopicResponse::default();
            topic.topic = TopicName(StrBytes::from_string(name.clone()));
            for ((partition, _), result) in parts.iter().zip(results) {
                let mut p = PartitionData::default();
                p.partition_index = partition.get() as i32;
                p.error_code = result.error.code();
                p.high_watermark = result.high_watermark;
                p.last_stable_offset = result.high_watermark;
                p.log_start_offset = result.log_start_offset;
                p.aborted_transactions = Some(Vec::new());
                let mut records = Vec::new();
                for batch in &result.batches {
                    if let Err(error) = native_to_kafka(batch, &self.limits, &mut records) {
                        tracing::warn!(%error, topic = %name, partition = partition.get(), "stored batch does not convert to Kafka");
                        if records.is_empty() {
                            p.error_code = error.error_code().code();
                        }
                        break;
                    }
                }
                p.records = Some(Bytes::from(records));
                topic.partitions.push(p);
            }
            response.responses.push(topic);
        }
        response
    }

    async fn list_offsets(&self, request: ListOffsetsRequest) -> ListOffsetsResponse {
        let topics: Vec<(String, Vec<(PartitionId, i64)>)> = request
            .topics
            .iter()
            .map(|t| {
                let parts = t
                    .partitions
                    .iter()
                    .map(|p| (PartitionId(p.partition_index as u32), p.timestamp))
                    .collect();
                (t.name.0.to_string(), parts)
            })
            .collect();
        let results = self
            .dispatcher
            .list_offsets_results(topics.iter().cloned())
            .await;
        let mut response = ListOffsetsResponse::default();
        for ((name, parts), results) in topics.iter().zip(results) {
            let mut topic = ListOffsetsTopicResponse::default();
            topic.name = TopicName(StrBytes::from_string(name.clone()));
            for ((partition, _), r) in parts.iter().zip(results) {
                let mut p = ListOffsetsPartitionResponse::default();
                p.partition_index = partition.get() as i32;
                p.error_code = r.error.code();
                p.timestamp = r.timestamp;
                p.offset = r.offset;
                p.leader_epoch = if r.error == ErrorCode::None { 0 } else { -1 };
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
            })
            .collect();
        let outcomes = self
            .dispatcher
            .create_topic_outcomes(specs, request.validate_only)
            .await;
        let mut response = CreateTopicsResponse::default();
        for o in outcomes {
            let mut t = CreatableTopicResult::default();
            t.name = TopicName(StrBytes::from_string(o.name));
            t.error_code = o.error.code();
            t.error_message = o.message.map(StrBytes::from_string);
            t.num_partitions = o.num_partitions;
            t.replication_factor = if o.error == ErrorCode::None { 1 } else { -1 };
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
        let outcomes = self.dispatcher.delete_topic_outcomes(names).await;
        let mut response = DeleteTopicsResponse::default();
        for o in outcomes {
            let mut t = DeletableTopicResult::default();
            t.name = Some(TopicName(StrBytes::from_string(o.name)));
            t.error_code = o.error.code();
            t.error_message = o.message.map(StrBytes::from_string);
            response.responses.push(t);
        }
        response
    }

    fn init_producer_id(&self, request: InitProducerIdRequest) -> InitProducerIdResponse {
        let answer = if request.transactional_id.is_some() {
            Err((
                ErrorCode::InvalidRequest,
                "transactions are not supported yet".to_owned(),
            ))
        } else {
            self.dispatcher.service().partitions.init_producer_id(
                ProducerId(request.producer_id.0),
                ProducerEpoch(request.producer_epoch),
            )
        };
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
