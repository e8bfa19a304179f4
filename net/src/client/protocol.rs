//! Request builders and response readers for the data and admin apis, with
//! no I/O: each `encode_*` returns a flatbuffers body (and for produce, the
//! payload pieces), each `read_*` turns a response frame into owned values.
//! The std-thread driver and a future thread-per-core driver share them.

use bytes::Bytes;
use fjord_schema::api::{payload_slice, ApiKey, Response};
use fjord_schema::frame::Frame;
use fjord_schema::{wire, ErrorCode, Offset, PartitionId, ProducerEpoch, ProducerId};
use flatbuffers::FlatBufferBuilder;

use super::{decode_typed, ClientError};

/// `ListOffsets` timestamp asking for the log start offset.
pub const LIST_OFFSETS_EARLIEST: i64 = -2;
/// `ListOffsets` timestamp asking for the log end offset.
pub const LIST_OFFSETS_LATEST: i64 = -1;

/// Produce acknowledgement level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Acks {
    /// Fire and forget: sent with the NO_RESPONSE flag, no offsets known.
    None,
    /// The leader appended the batch.
    Leader,
    /// Every in-sync replica has it, flushed per the topic policy.
    #[default]
    All,
}

impl Acks {
    fn wire(self) -> wire::Acks {
        match self {
            Acks::None => wire::Acks::None,
            Acks::Leader => wire::Acks::Leader,
            Acks::All => wire::Acks::All,
        }
    }

    /// Parses `0`, `1`, `all` or `-1`, the spellings Kafka tools accept.
    pub fn parse(text: &str) -> Option<Acks> {
        match text {
            "0" => Some(Acks::None),
            "1" => Some(Acks::Leader),
            "all" | "-1" => Some(Acks::All),
            _ => None,
        }
    }
}

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    /// `None`: the broker's default.
    pub partitions: Option<u32>,
    /// `None`: the broker's default.
    pub replication_factor: Option<u16>,
    pub configs: Vec<(String, String)>,
}

/// Outcome for one topic of CreateTopics or DeleteTopics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicResult {
    pub name: String,
    pub error: ErrorCode,
    pub message: Option<String>,
}

impl TopicResult {
    /// `Ok` when the broker reported no error.
    pub fn into_result(self) -> Result<String, ClientError> {
        if self.error == ErrorCode::None {
            Ok(self.name)
        } else {
            Err(ClientError::Broker {
                code: self.error,
                message: self
                    .message
                    .unwrap_or_else(|| format!("topic {}", self.name)),
            })
        }
    }
}

pub fn encode_create_topics(topics: &[NewTopic], timeout_ms: u32) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let topics: Vec<_> = topics
        .iter()
        .map(|topic| {
            let configs: Vec<_> = topic
                .configs
                .iter()
                .map(|(key, value)| {
                    let key = fbb.create_string(key);
                    let value = fbb.create_string(value);
                    wire::ConfigEntry::create(
                        &mut fbb,
                        &wire::ConfigEntryArgs {
                            key: Some(key),
                            value: Some(value),
                        },
                    )
                })
                .collect();
            let configs = fbb.create_vector(&configs);
            let name = fbb.create_string(&topic.name);
            wire::CreatableTopic::create(
                &mut fbb,
                &wire::CreatableTopicArgs {
                    name: Some(name),
                    num_partitions: topic
                        .partitions
                        .map_or(-1, |p| i32::try_from(p).unwrap_or(i32::MAX)),
                    replication_factor: topic
                        .replication_factor
                        .map_or(-1, |r| i16::try_from(r).unwrap_or(i16::MAX)),
                    configs: Some(configs),
                },
            )
        })
        .collect();
    let topics = fbb.create_vector(&topics);
    let request = wire::CreateTopicsRequest::create(
        &mut fbb,
        &wire::CreateTopicsRequestArgs {
            topics: Some(topics),
            timeout_ms,
            validate_only: false,
        },
    );
    fbb.finish(request, None);
    fbb.finished_data().to_vec()
}

pub fn read_create_topics(frame: &Frame) -> Result<Vec<TopicResult>, ClientError> {
    let Response::CreateTopics(response) = decode_typed(frame, ApiKey::CreateTopics)? else {
        return Err(super::unexpected(ApiKey::CreateTopics, frame));
    };
    Ok(response
        .topics()
        .iter()
        .flatten()
        .map(|t| TopicResult {
            name: t.name().to_owned(),
            error: ErrorCode::from_code(t.error_code()),
            message: t.error_message().map(str::to_owned),
        })
        .collect())
}

pub fn encode_delete_topics(names: &[&str], timeout_ms: u32) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let names: Vec<_> = names.iter().map(|n| fbb.create_string(n)).collect();
    let topics = fbb.create_vector(&names);
    let request = wire::DeleteTopicsRequest::create(
        &mut fbb,
        &wire::DeleteTopicsRequestArgs {
            topics: Some(topics),
            timeout_ms,
        },
    );
    fbb.finish(request, None);
    fbb.finished_data().to_vec()
}

pub fn read_delete_topics(frame: &Frame) -> Result<Vec<TopicResult>, ClientError> {
    let Response::DeleteTopics(response) = decode_typed(frame, ApiKey::DeleteTopics)? else {
        return Err(super::unexpected(ApiKey::DeleteTopics, frame));
    };
    Ok(response
        .topics()
        .iter()
        .flatten()
        .map(|t| TopicResult {
            name: t.name().to_owned(),
            error: ErrorCode::from_code(t.error_code()),
            message: t.error_message().map(str::to_owned),
        })
        .collect())
}

/// InitProducerId for an idempotent producer: `ProducerId::NONE` /
/// `ProducerEpoch::NONE` for a new id, a current id and epoch to bump it.
pub fn encode_init_producer_id(producer_id: ProducerId, epoch: ProducerEpoch) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let request = wire::InitProducerIdRequest::create(
        &mut fbb,
        &wire::InitProducerIdRequestArgs {
            transactional_id: None,
            transaction_timeout_ms: -1,
            producer_id: producer_id.0,
            producer_epoch: epoch.0,
        },
    );
    fbb.finish(request, None);
    fbb.finished_data().to_vec()
}

pub fn read_init_producer_id(frame: &Frame) -> Result<(ProducerId, ProducerEpoch), ClientError> {
    let Response::InitProducerId(response) = decode_typed(frame, ApiKey::InitProducerId)? else {
        return Err(super::unexpected(ApiKey::InitProducerId, frame));
    };
    let code = ErrorCode::from_code(response.error_code());
    if code != ErrorCode::None {
        return Err(ClientError::Broker {
            code,
            message: response.error_message().unwrap_or_default().to_owned(),
        });
    }
    let id = ProducerId(response.producer_id());
    let epoch = ProducerEpoch(response.producer_epoch());
    if id.0 < 0 || epoch.0 < 0 {
        return Err(ClientError::MalformedError(format!(
            "InitProducerId answered producer id {id} epoch {epoch}"
        )));
    }
    Ok((id, epoch))
}

/// One partition's batches in a produce request.
#[derive(Debug, Clone)]
pub struct ProducePartition {
    pub partition: PartitionId,
    /// Whole batches, back to back.
    pub batches: Vec<Bytes>,
}

/// A produce request: the flatbuffers body and the payload pieces, in order
/// (written vectored, never concatenated).
#[derive(Debug, Clone)]
pub struct EncodedProduce {
    pub body: Vec<u8>,
    pub payload: Vec<Bytes>,
}

impl EncodedProduce {
    pub fn payload_len(&self) -> usize {
        self.payload.iter().map(Bytes::len).sum()
    }
}

/// Builds a produce request for partitions of one or more topics.
/// Returns `None` if the payload would exceed `u32` offsets.
pub fn encode_produce(
    topics: &[(&str, Vec<ProducePartition>)],
    acks: Acks,
    timeout_ms: u32,
) -> Option<EncodedProduce> {
    let mut fbb = FlatBufferBuilder::new();
    let mut payload = Vec::new();
    let mut offset: u32 = 0;
    let mut wire_topics = Vec::with_capacity(topics.len());
    for (name, partitions) in topics {
        let mut wire_partitions = Vec::with_capacity(partitions.len());
        for partition in partitions {
            let start = offset;
            for batch in &partition.batches {
                offset = offset.checked_add(u32::try_from(batch.len()).ok()?)?;
                payload.push(batch.clone());
            }
            let slice = wire::PayloadSlice::new(start, offset - start);
            wire_partitions.push(wire::PartitionProduceData::create(
                &mut fbb,
                &wire::PartitionProduceDataArgs {
                    partition: partition.partition.0,
                    records: Some(&slice),
                },
            ));
        }
        let partitions = fbb.create_vector(&wire_partitions);
        let name = fbb.create_string(name);
        wire_topics.push(wire::TopicProduceData::create(
            &mut fbb,
            &wire::TopicProduceDataArgs {
                name: Some(name),
                partitions: Some(partitions),
            },
        ));
    }
    let topics = fbb.create_vector(&wire_topics);
    let request = wire::ProduceRequest::create(
        &mut fbb,
        &wire::ProduceRequestArgs {
            transactional_id: None,
            acks: acks.wire(),
            timeout_ms,
            topics: Some(topics),
        },
    );
    fbb.finish(request, None);
    Some(EncodedProduce {
        body: fbb.finished_data().to_vec(),
        payload,
    })
}

/// Outcome for one partition of a produce request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducePartitionResult {
    pub topic: String,
    pub partition: PartitionId,
    pub error: ErrorCode,
    pub message: Option<String>,
    /// Offset of the first record of the (first) batch, when accepted.
    pub base_offset: Option<Offset>,
    pub log_append_time_ms: Option<i64>,
}

pub fn read_produce(frame: &Frame) -> Result<Vec<ProducePartitionResult>, ClientError> {
    let Response::Produce(response) = decode_typed(frame, ApiKey::Produce)? else {
        return Err(super::unexpected(ApiKey::Produce, frame));
    };
    let mut results = Vec::new();
    for topic in response.topics().iter().flatten() {
        for p in topic.partitions().iter().flatten() {
            results.push(ProducePartitionResult {
                topic: topic.name().to_owned(),
                partition: PartitionId(p.partition()),
                error: ErrorCode::from_code(p.error_code()),
                message: p.error_message().map(str::to_owned),
                base_offset: u64::try_from(p.base_offset()).ok().map(Offset),
                log_append_time_ms: (p.log_append_time_ms() >= 0).then(|| p.log_append_time_ms()),
            });
        }
    }
    Ok(results)
}

/// One partition to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchPartitionRequest {
    pub partition: PartitionId,
    pub offset: Offset,
    pub max_bytes: u32,
}

/// Fetch request settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchParams {
    pub max_wait_ms: u32,
    pub min_bytes: u32,
    pub max_bytes: u32,
}

pub fn encode_fetch(
    topic: &str,
    partitions: &[FetchPartitionRequest],
    params: FetchParams,
) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let wire_partitions: Vec<_> = partitions
        .iter()
        .map(|p| {
            wire::FetchPartition::create(
                &mut fbb,
                &wire::FetchPartitionArgs {
                    partition: p.partition.0,
                    fetch_offset: i64::try_from(p.offset.0).unwrap_or(i64::MAX),
                    current_leader_epoch: -1,
                    log_start_offset: -1,
                    partition_max_bytes: p.max_bytes,
                },
            )
        })
        .collect();
    let wire_partitions = fbb.create_vector(&wire_partitions);
    let name = fbb.create_string(topic);
    let wire_topic = wire::FetchTopic::create(
        &mut fbb,
        &wire::FetchTopicArgs {
            name: Some(name),
            partitions: Some(wire_partitions),
        },
    );
    let topics = fbb.create_vector(&[wire_topic]);
    let request = wire::FetchRequest::create(
        &mut fbb,
        &wire::FetchRequestArgs {
            replica_id: -1,
            max_wait_ms: params.max_wait_ms,
            min_bytes: params.min_bytes,
            max_bytes: params.max_bytes,
            isolation_level: wire::IsolationLevel::ReadUncommitted,
            topics: Some(topics),
        },
    );
    fbb.finish(request, None);
    fbb.finished_data().to_vec()
}

/// One partition of a fetch response; `records` shares the frame's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedPartition {
    pub topic: String,
    pub partition: PartitionId,
    pub error: ErrorCode,
    pub high_watermark: Option<Offset>,
    pub log_start_offset: Option<Offset>,
    pub records: Bytes,
}

pub fn read_fetch(frame: &Frame) -> Result<Vec<FetchedPartition>, ClientError> {
    let Response::Fetch(response) = decode_typed(frame, ApiKey::Fetch)? else {
        return Err(super::unexpected(ApiKey::Fetch, frame));
    };
    let code = ErrorCode::from_code(response.error_code());
    if code != ErrorCode::None {
        return Err(ClientError::ErrorCode {
            api_key: ApiKey::Fetch,
            code,
        });
    }
    let mut results = Vec::new();
    for topic in response.topics().iter().flatten() {
        for p in topic.partitions().iter().flatten() {
            // decode_response checked the slice lies inside the payload.
            let bytes = payload_slice(&frame.payload, p.records());
            let start = bytes.as_ptr() as usize - frame.payload.as_ptr() as usize;
            let records = if bytes.is_empty() {
                Bytes::new()
            } else {
                frame.payload.slice(start..start + bytes.len())
            };
            results.push(FetchedPartition {
                topic: topic.name().to_owned(),
                partition: PartitionId(p.partition()),
                error: ErrorCode::from_code(p.error_code()),
                high_watermark: u64::try_from(p.high_watermark()).ok().map(Offset),
                log_start_offset: u64::try_from(p.log_start_offset()).ok().map(Offset),
                records,
            });
        }
    }
    Ok(results)
}

pub fn encode_list_offsets(topic: &str, partitions: &[(PartitionId, i64)]) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let wire_partitions: Vec<_> = partitions
        .iter()
        .map(|(partition, timestamp)| {
            wire::ListOffsetsPartition::create(
                &mut fbb,
                &wire::ListOffsetsPartitionArgs {
                    partition: partition.0,
                    timestamp: *timestamp,
                    current_leader_epoch: -1,
                },
            )
        })
        .collect();
    let wire_partitions = fbb.create_vector(&wire_partitions);
    let name = fbb.create_string(topic);
    let wire_topic = wire::ListOffsetsTopic::create(
        &mut fbb,
        &wire::ListOffsetsTopicArgs {
            name: Some(name),
            partitions: Some(wire_partitions),
        },
    );
    let topics = fbb.create_vector(&[wire_topic]);
    let request = wire::ListOffsetsRequest::create(
        &mut fbb,
        &wire::ListOffsetsRequestArgs {
            replica_id: -1,
            isolation_level: wire::IsolationLevel::ReadUncommitted,
            topics: Some(topics),
        },
    );
    fbb.finish(request, None);
    fbb.finished_data().to_vec()
}

/// One partition of a ListOffsets answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedOffset {
    pub topic: String,
    pub partition: PartitionId,
    pub error: ErrorCode,
    /// `None` when no record matches the timestamp.
    pub offset: Option<Offset>,
    pub timestamp: Option<i64>,
}

pub fn read_list_offsets(frame: &Frame) -> Result<Vec<ListedOffset>, ClientError> {
    let Response::ListOffsets(response) = decode_typed(frame, ApiKey::ListOffsets)? else {
        return Err(super::unexpected(ApiKey::ListOffsets, frame));
    };
    let mut results = Vec::new();
    for topic in response.topics().iter().flatten() {
        for p in topic.partitions().iter().flatten() {
            results.push(ListedOffset {
                topic: topic.name().to_owned(),
                partition: PartitionId(p.partition()),
                error: ErrorCode::from_code(p.error_code()),
                offset: u64::try_from(p.offset()).ok().map(Offset),
                timestamp: (p.timestamp() >= 0).then(|| p.timestamp()),
            });
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use fjord_schema::api::decode_request;
    use fjord_schema::api::Request;
    use fjord_schema::frame::{encode_frame, FrameDecoder, FrameFlags};
    use fjord_schema::CorrelationId;

    fn as_request_frame(api_key: ApiKey, body: &[u8], payload: &[u8]) -> Frame {
        let mut out = BytesMut::new();
        encode_frame(
            &mut out,
            api_key as u16,
            0,
            FrameFlags(0),
            CorrelationId(7),
            body,
            payload,
        );
        FrameDecoder::new(u32::MAX)
            .decode(&mut out)
            .expect("valid frame")
            .expect("whole frame")
    }

    #[test]
    fn produce_request_slices_name_each_partitions_batches() {
        let a = Bytes::from_static(b"aaaa");
        let b = Bytes::from_static(b"bbbbbb");
        let c = Bytes::from_static(b"cc");
        let encoded = encode_produce(
            &[(
                "t",
                vec![
                    ProducePartition {
                        partition: PartitionId(0),
                        batches: vec![a, b],
                    },
                    ProducePartition {
                        partition: PartitionId(3),
                        batches: vec![c],
                    },
                ],
            )],
            Acks::Leader,
            1000,
        )
        .expect("small payload");
        assert_eq!(encoded.payload_len(), 12);
        let payload: Vec<u8> = encoded.payload.iter().flat_map(|b| b.to_vec()).collect();
        let frame = as_request_frame(ApiKey::Produce, &encoded.body, &payload);
        let Request::Produce(request) = decode_request(&frame).expect("decodes") else {
            panic!("not a produce request");
        };
        assert_eq!(request.acks(), wire::Acks::Leader);
        assert_eq!(request.timeout_ms(), 1000);
        let topic = request.topics().expect("topics").get(0);
        assert_eq!(topic.name(), "t");
        let partitions = topic.partitions().expect("partitions");
        assert_eq!(partitions.len(), 2);
        assert_eq!(
            payload_slice(&frame.payload, partitions.get(0).records()),
            b"aaaabbbbbb"
        );
        assert_eq!(partitions.get(1).partition(), 3);
        assert_eq!(
            payload_slice(&frame.payload, partitions.get(1).records()),
            b"cc"
        );
    }

    #[test]
    fn create_topics_request_carries_partitions_and_configs() {
        let body = encode_create_topics(
            &[NewTopic {
                name: "orders".into(),
                partitions: Some(6),
                replication_factor: None,
                configs: vec![("retention.ms".into(), "1000".into())],
            }],
            5000,
        );
        let frame = as_request_frame(ApiKey::CreateTopics, &body, &[]);
        let Request::CreateTopics(request) = decode_request(&frame).expect("decodes") else {
            panic!("not a create topics request");
        };
        let topic = request.topics().expect("topics").get(0);
        assert_eq!(topic.name(), "orders");
        assert_eq!(topic.num_partitions(), 6);
        assert_eq!(topic.replication_factor(), -1);
        let config = topic.configs().expect("configs").get(0);
        assert_eq!(config.key(), "retention.ms");
        assert_eq!(config.value(), Some("1000"));
    }

    #[test]
    fn fetch_and_list_offsets_requests_round_trip() {
        let body = encode_fetch(
            "t",
            &[FetchPartitionRequest {
                partition: PartitionId(2),
                offset: Offset(42),
                max_bytes: 1024,
            }],
            FetchParams {
                max_wait_ms: 100,
                min_bytes: 1,
                max_bytes: 4096,
            },
        );
        let frame = as_request_frame(ApiKey::Fetch, &body, &[]);
        let Request::Fetch(request) = decode_request(&frame).expect("decodes") else {
            panic!("not a fetch request");
        };
        assert_eq!(request.max_wait_ms(), 100);
        let partition = request.topics().expect("topics").get(0).partitions();
        let partition = partition.expect("partitions").get(0);
        assert_eq!(partition.partition(), 2);
        assert_eq!(partition.fetch_offset(), 42);
        assert_eq!(partition.partition_max_bytes(), 1024);

        let body = encode_list_offsets("t", &[(PartitionId(1), LIST_OFFSETS_EARLIEST)]);
        let frame = as_request_frame(ApiKey::ListOffsets, &body, &[]);
        let Request::ListOffsets(request) = decode_request(&frame).expect("decodes") else {
            panic!("not a list offsets request");
        };
        let partition = request.topics().expect("topics").get(0).partitions();
        assert_eq!(partition.expect("partitions").get(0).timestamp(), -2);
    }

    #[test]
    fn acks_spellings() {
        assert_eq!(Acks::parse("0"), Some(Acks::None));
        assert_eq!(Acks::parse("1"), Some(Acks::Leader));
        assert_eq!(Acks::parse("all"), Some(Acks::All));
        assert_eq!(Acks::parse("-1"), Some(Acks::All));
        assert_eq!(Acks::parse("2"), None);
    }
}
