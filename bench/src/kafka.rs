//! `--protocol kafka`: the Kafka wire protocol for loadgen's actors, spoken
//! with the `kafka-protocol` crate over glommio sockets, so W1–W4 can run
//! through the broker's Kafka listener with the same producer logic as the
//! native mode.
//!
//! - [`KafkaBatch`]: a RecordBatch v2 builder and the Produce v9 request
//!   encoding, plugged into the client's sans-IO `ProducerCore` as its
//!   [`ProduceFormat`]: batching, linger, buffer memory, partitioner,
//!   in-flight limit and retries stay the client library's.
//! - Requests are framed with a v2 (flexible) request header whose
//!   correlation id sits at a fixed place, so the producer patches it in
//!   after the core chose the request id ([`set_correlation_id`]).
//! - [`KafkaReader`] splits a socket into response frames; the `read_*`
//!   functions decode the answers the actors need; [`bootstrap`] is what a
//!   Kafka client does first (ApiVersions, then Metadata) and turns the
//!   answer into the client's `Metadata` so the core can route.
//!
//! A Kafka broker answers the requests of one connection strictly in order,
//! one at a time: where the native producer pipelines on one connection per
//! shard, the Kafka producer opens one connection per request in flight
//! (`producer.rs`).

use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use fjord_net::client::format::ProduceFormat;
use fjord_net::client::protocol::{Acks, EncodedProduce, ProducePartition, ProducePartitionResult};
use fjord_net::client::{BrokerInfo, Metadata, PartitionInfo, TopicInfo};
use fjord_schema::batch::TimestampType;
use fjord_schema::{BatchError, BatchOptions, Compression, ErrorCode, Offset, PartitionId};
use futures_lite::AsyncWriteExt;
use kafka_protocol::compression::{self as codecs, Compressor};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, FetchRequest, FetchResponse,
    MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::conn::{self, Reader, Writer};

pub const PRODUCE_VERSION: i16 = 9;
pub const FETCH_VERSION: i16 = 12;
const METADATA_VERSION: i16 = 12;
const API_VERSIONS_VERSION: i16 = 3;
const CLIENT_ID: &str = "loadgen";
/// Length prefix, api key and api version come before the correlation id.
const CORRELATION_ID_AT: usize = 4 + 2 + 2;
/// Bytes asked of the socket per read.
const READ_CHUNK_BYTES: usize = 256 * 1024;

/// The fixed RecordBatch v2 header (base offset to record count).
const BATCH_HEADER_LEN: usize = 61;
/// Base offset and batch length: Kafka's batch length counts what follows.
const LOG_OVERHEAD: usize = 12;
const CRC_AT: usize = 17;
/// The CRC-32C covers attributes to the end.
const ATTRIBUTES_AT: usize = 21;
const MAGIC_V2: u8 = 2;
/// Length, attributes, timestamp delta, offset delta, key, value, header
/// count: the varints of one record take at most this beside its bytes.
const RECORD_OVERHEAD_MAX: usize = 5 + 1 + 10 + 5 + 5 + 5 + 5;

const _: () = assert!(BATCH_HEADER_LEN == ATTRIBUTES_AT + 2 + 4 + 8 + 8 + 8 + 2 + 4 + 4);
const _: () = assert!(CRC_AT + 4 == ATTRIBUTES_AT);

/// One Kafka RecordBatch v2 being built: the 61-byte header is written by
/// `finish`, records are encoded into the records section as they come.
#[derive(Debug)]
pub struct KafkaBatch {
    options: BatchOptions,
    /// Header placeholder, then the uncompressed records section.
    bytes: Vec<u8>,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
}

impl ProduceFormat for KafkaBatch {
    const BATCH_OVERHEAD_BYTES: usize = BATCH_HEADER_LEN;

    fn with_capacity(options: BatchOptions, capacity_bytes: usize) -> Self {
        let mut bytes = Vec::with_capacity(capacity_bytes.max(BATCH_HEADER_LEN));
        bytes.resize(BATCH_HEADER_LEN, 0);
        KafkaBatch {
            options,
            bytes,
            count: 0,
            base_timestamp: 0,
            max_timestamp: i64::MIN,
        }
    }

    fn record_size_estimate(record: &fjord_schema::RecordInput<'_>) -> usize {
        let headers: usize = record
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.map_or(0, |v| v.len()) + 10)
            .sum();
        record.key.map_or(0, |k| k.len())
            + record.value.map_or(0, |v| v.len())
            + headers
            + RECORD_OVERHEAD_MAX
    }

    fn push(&mut self, record: fjord_schema::RecordInput<'_>) {
        assert!(
            record.offset_delta.is_none(),
            "a producer's records are consecutive"
        );
        if self.count == 0 {
            self.base_timestamp = record.timestamp;
        }
        self.max_timestamp = self.max_timestamp.max(record.timestamp);
        let timestamp_delta = record.timestamp.wrapping_sub(self.base_timestamp);
        let offset_delta = i64::from(self.count);
        let mut len = 1 + varlong_len(timestamp_delta) + varlong_len(offset_delta);
        len += nullable_len(record.key) + nullable_len(record.value);
        len += varlong_len(record.headers.len() as i64);
        for (key, value) in record.headers {
            len += nullable_len(Some(key)) + nullable_len(*value);
        }
        let out = &mut self.bytes;
        put_varlong(out, len as i64);
        let start = out.len();
        out.push(0);
        put_varlong(out, timestamp_delta);
        put_varlong(out, offset_delta);
        put_nullable(out, record.key);
        put_nullable(out, record.value);
        put_varlong(out, record.headers.len() as i64);
        for (key, value) in record.headers {
            put_nullable(out, Some(key));
            put_nullable(out, *value);
        }
        assert_eq!(out.len() - start, len);
        self.count += 1;
    }

    fn size_estimate(&self) -> usize {
        self.bytes.len()
    }

    fn finish(self) -> Result<Bytes, BatchError> {
        if self.count == 0 {
            return Err(BatchError::Empty);
        }
        let codec = self.options.compression;
        let mut out = match codec {
            Compression::None => self.bytes,
            codec => {
                let mut out = Vec::with_capacity(self.bytes.len() / 2 + BATCH_HEADER_LEN);
                out.resize(BATCH_HEADER_LEN, 0);
                let section = &self.bytes[BATCH_HEADER_LEN..];
                let write = |buf: &mut BytesMut| {
                    buf.put_slice(section);
                    Ok(())
                };
                match codec {
                    Compression::None => unreachable!("handled above"),
                    Compression::Gzip => codecs::Gzip::compress(&mut out, write),
                    Compression::Snappy => codecs::Snappy::compress(&mut out, write),
                    Compression::Lz4 => codecs::Lz4::compress(&mut out, write),
                    Compression::Zstd => codecs::Zstd::compress(&mut out, write),
                }
                .map_err(|e| BatchError::Codec(e.to_string()))?;
                out
            }
        };
        let batch_length =
            i32::try_from(out.len() - LOG_OVERHEAD).map_err(|_| BatchError::TooLarge {
                len: out.len(),
                len_max: i32::MAX as usize,
            })?;
        let mut attributes = i16::from(codec as u8);
        if self.options.timestamp_type == TimestampType::LogAppendTime {
            attributes |= 1 << 3;
        }
        let mut header = &mut out[..BATCH_HEADER_LEN];
        header.put_i64(0);
        header.put_i32(batch_length);
        header.put_i32(-1);
        header.put_u8(MAGIC_V2);
        header.put_u32(0);
        header.put_i16(attributes);
        header.put_i32(self.count - 1);
        header.put_i64(self.base_timestamp);
        header.put_i64(self.max_timestamp);
        header.put_i64(self.options.producer_id.0);
        header.put_i16(self.options.producer_epoch.0);
        header.put_i32(self.options.base_sequence.0);
        header.put_i32(self.count);
        assert!(header.is_empty());
        let crc = crc32c::crc32c(&out[ATTRIBUTES_AT..]);
        out[CRC_AT..ATTRIBUTES_AT].copy_from_slice(&crc.to_be_bytes());
        Ok(Bytes::from(out))
    }

    /// The whole Produce v9 frame, length prefix included, with correlation
    /// id 0: the driver sets it with [`set_correlation_id`].
    fn encode_produce(
        topics: &[(&str, Vec<ProducePartition>)],
        acks: Acks,
        timeout_ms: u32,
    ) -> Option<EncodedProduce> {
        let mut request = ProduceRequest::default();
        request.acks = match acks {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        };
        request.timeout_ms = i32::try_from(timeout_ms).unwrap_or(i32::MAX);
        let mut bytes = 0usize;
        for (name, partitions) in topics {
            let mut topic = TopicProduceData::default();
            topic.name = TopicName(StrBytes::from_string((*name).to_owned()));
            for partition in partitions {
                let mut data = PartitionProduceData::default();
                data.index = i32::try_from(partition.partition.0).ok()?;
                let records = match partition.batches.as_slice() {
                    [one] => one.clone(),
                    many => Bytes::from(many.concat()),
                };
                bytes += records.len();
                data.records = Some(records);
                topic.partition_data.push(data);
            }
            request.topic_data.push(topic);
        }
        let frame = encode_request(ApiKey::Produce, PRODUCE_VERSION, 0, &request, bytes).ok()?;
        Some(EncodedProduce {
            body: Vec::from(frame),
            payload: Vec::new(),
        })
    }
}

fn varlong_len(value: i64) -> usize {
    let raw = ((value << 1) ^ (value >> 63)) as u64;
    (64 - raw.max(1).leading_zeros() as usize).div_ceil(7)
}

fn nullable_len(bytes: Option<&[u8]>) -> usize {
    bytes.map_or(1, |b| varlong_len(b.len() as i64) + b.len())
}

fn put_varlong(out: &mut Vec<u8>, value: i64) {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    while raw >= 0x80 {
        out.push(raw as u8 | 0x80);
        raw >>= 7;
    }
    out.push(raw as u8);
}

fn put_nullable(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varlong(out, -1),
        Some(bytes) => {
            put_varlong(out, bytes.len() as i64);
            out.extend_from_slice(bytes);
        }
    }
}

/// Frames a request: length, request header, body.
pub fn encode_request<M: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &M,
    capacity_hint: usize,
) -> Result<BytesMut, String> {
    let mut header = RequestHeader::default();
    header.request_api_key = api as i16;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(StrBytes::from_static_str(CLIENT_ID));
    let mut out = BytesMut::with_capacity(capacity_hint + 256);
    out.put_u32(0);
    header
        .encode(&mut out, api.request_header_version(version))
        .map_err(|e| format!("encoding a {api:?} header: {e}"))?;
    body.encode(&mut out, version)
        .map_err(|e| format!("encoding a {api:?} request: {e}"))?;
    let len = u32::try_from(out.len() - 4).map_err(|_| format!("{api:?} request over 4 GiB"))?;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

/// Writes `id` into a frame from [`encode_request`].
pub fn set_correlation_id(frame: &mut [u8], id: u32) {
    frame[CORRELATION_ID_AT..CORRELATION_ID_AT + 4].copy_from_slice(&id.to_be_bytes());
}

/// Decodes a response frame (length prefix removed): its correlation id and
/// body.
pub fn decode_response<M: Decodable>(
    mut frame: Bytes,
    api: ApiKey,
    version: i16,
) -> Result<(u32, M), String> {
    let header = ResponseHeader::decode(&mut frame, api.response_header_version(version))
        .map_err(|e| format!("undecodable {api:?} response header: {e}"))?;
    let body =
        M::decode(&mut frame, version).map_err(|e| format!("undecodable {api:?} response: {e}"))?;
    Ok((header.correlation_id as u32, body))
}

/// A Produce answer as the producer core reads it.
pub fn read_produce(response: ProduceResponse) -> Vec<ProducePartitionResult> {
    let mut results = Vec::new();
    for topic in response.responses {
        let name = topic.name.0.to_string();
        for p in topic.partition_responses {
            results.push(ProducePartitionResult {
                topic: name.clone(),
                partition: PartitionId(p.index as u32),
                error: ErrorCode::from_code(p.error_code),
                message: p.error_message.map(|m| m.to_string()),
                base_offset: u64::try_from(p.base_offset).ok().map(Offset),
                log_append_time_ms: (p.log_append_time_ms >= 0).then_some(p.log_append_time_ms),
            });
        }
    }
    results
}

/// A Fetch v12 request for one topic's partitions at `positions`
/// (partition, offset).
pub fn fetch_request(
    topic: &str,
    positions: &[(PartitionId, Offset)],
    partition_max_bytes: u32,
    max_wait_ms: u32,
    max_bytes: u32,
) -> FetchRequest {
    let mut fetch_topic = FetchTopic::default();
    fetch_topic.topic = TopicName(StrBytes::from_string(topic.to_owned()));
    for (partition, offset) in positions {
        let mut p = FetchPartition::default();
        p.partition = partition.0 as i32;
        p.current_leader_epoch = -1;
        p.fetch_offset = offset.0 as i64;
        p.last_fetched_epoch = -1;
        p.log_start_offset = -1;
        p.partition_max_bytes = i32::try_from(partition_max_bytes).unwrap_or(i32::MAX);
        fetch_topic.partitions.push(p);
    }
    let mut request = FetchRequest::default();
    request.replica_id = BrokerId(-1);
    request.max_wait_ms = i32::try_from(max_wait_ms).unwrap_or(i32::MAX);
    request.min_bytes = 1;
    request.max_bytes = i32::try_from(max_bytes).unwrap_or(i32::MAX);
    request.session_id = 0;
    request.session_epoch = -1;
    request.topics = vec![fetch_topic];
    request
}

/// One partition of a Fetch answer: error and RecordBatch v2 bytes.
#[derive(Debug)]
pub struct FetchedKafka {
    pub partition: PartitionId,
    pub error: ErrorCode,
    pub records: Bytes,
}

pub fn read_fetch(response: FetchResponse) -> Result<Vec<FetchedKafka>, String> {
    if response.error_code != 0 {
        return Err(format!(
            "fetch refused: {:?}",
            ErrorCode::from_code(response.error_code)
        ));
    }
    Ok(response
        .responses
        .into_iter()
        .flat_map(|t| t.partitions)
        .map(|p| FetchedKafka {
            partition: PartitionId(p.partition_index as u32),
            error: ErrorCode::from_code(p.error_code),
            records: p.records.unwrap_or_default(),
        })
        .collect())
}

/// Splits whole RecordBatch v2 off `records`; `None` at the end or when
/// only part of a batch is left (a fetch may stop mid-batch).
pub fn next_batch(records: &mut Bytes) -> Option<Bytes> {
    if records.len() < LOG_OVERHEAD {
        return None;
    }
    let len = i32::from_be_bytes([records[8], records[9], records[10], records[11]]);
    let len = LOG_OVERHEAD + usize::try_from(len).ok()?;
    (records.len() >= len).then(|| records.split_to(len))
}

/// Reads whole Kafka frames (length prefix removed) off a connection.
#[derive(Debug)]
pub struct KafkaReader {
    buffer: BytesMut,
    frame_bytes_max: u32,
}

impl KafkaReader {
    pub fn new(frame_bytes_max: u32) -> KafkaReader {
        KafkaReader {
            buffer: BytesMut::with_capacity(READ_CHUNK_BYTES),
            frame_bytes_max,
        }
    }

    pub async fn next(&mut self, reader: &mut Reader) -> io::Result<Bytes> {
        loop {
            if self.buffer.len() >= 4 {
                let len = u32::from_be_bytes([
                    self.buffer[0],
                    self.buffer[1],
                    self.buffer[2],
                    self.buffer[3],
                ]);
                if len > self.frame_bytes_max {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("a {len}-byte Kafka frame from the broker"),
                    ));
                }
                let whole = 4 + len as usize;
                if self.buffer.len() >= whole {
                    self.buffer.advance(4);
                    return Ok(self.buffer.split_to(len as usize).freeze());
                }
                self.buffer.reserve(whole - self.buffer.len());
            }
            conn::read_more(&mut self.buffer, reader).await?;
        }
    }
}

/// One request, one answer (for the handshake calls).
async fn call<Q: Encodable, A: Decodable>(
    (reader, writer): (&mut Reader, &mut Writer),
    frames: &mut KafkaReader,
    api: ApiKey,
    version: i16,
    request: &Q,
) -> Result<A, String> {
    let frame = encode_request(api, version, 1, request, 0)?;
    writer
        .write_all(&frame)
        .await
        .map_err(|e| format!("sending {api:?}: {e}"))?;
    let answer = frames
        .next(reader)
        .await
        .map_err(|e| format!("reading the {api:?} answer: {e}"))?;
    let (correlation_id, body) = decode_response(answer, api, version)?;
    if correlation_id != 1 {
        return Err(format!("{api:?} answer for another request"));
    }
    Ok(body)
}

/// A new connection, checked with ApiVersions (as Kafka clients open every
/// connection): the broker must serve the Produce and Fetch versions used.
pub async fn connect(addr: &str, frame_bytes_max: u32) -> Result<(Reader, Writer), String> {
    let (mut reader, mut writer) = conn::connect(addr).await.map_err(|e| e.to_string())?;
    let mut frames = KafkaReader::new(frame_bytes_max);
    let mut request = ApiVersionsRequest::default();
    request.client_software_name = StrBytes::from_static_str(CLIENT_ID);
    request.client_software_version = StrBytes::from_static_str(env!("CARGO_PKG_VERSION"));
    let answer: ApiVersionsResponse = call(
        (&mut reader, &mut writer),
        &mut frames,
        ApiKey::ApiVersions,
        API_VERSIONS_VERSION,
        &request,
    )
    .await?;
    if answer.error_code != 0 {
        return Err(format!("ApiVersions refused: {}", answer.error_code));
    }
    for (api, version) in [
        (ApiKey::Produce, PRODUCE_VERSION),
        (ApiKey::Fetch, FETCH_VERSION),
        (ApiKey::Metadata, METADATA_VERSION),
    ] {
        let served = answer.api_keys.iter().any(|k| {
            k.api_key == api as i16 && k.min_version <= version && version <= k.max_version
        });
        if !served {
            return Err(format!("{addr} does not serve {api:?} v{version}"));
        }
    }
    Ok((reader, writer))
}

/// ApiVersions then Metadata for `topics`, as the client's [`Metadata`]
/// (Kafka has no shard ports: every partition routes to the broker's Kafka
/// address).
pub async fn bootstrap(
    addr: &str,
    topics: &[String],
    frame_bytes_max: u32,
) -> Result<Metadata, String> {
    let (mut reader, mut writer) = connect(addr, frame_bytes_max).await?;
    let mut frames = KafkaReader::new(frame_bytes_max);
    let mut request = MetadataRequest::default();
    request.topics = Some(
        topics
            .iter()
            .map(|t| {
                let mut topic = MetadataRequestTopic::default();
                topic.name = Some(TopicName(StrBytes::from_string(t.clone())));
                topic
            })
            .collect(),
    );
    request.allow_auto_topic_creation = false;
    let answer: MetadataResponse = call(
        (&mut reader, &mut writer),
        &mut frames,
        ApiKey::Metadata,
        METADATA_VERSION,
        &request,
    )
    .await?;
    let brokers = answer
        .brokers
        .iter()
        .map(|b| BrokerInfo {
            node_id: b.node_id.0 as u32,
            host: b.host.to_string(),
            port: u16::try_from(b.port).unwrap_or(0),
            shard_ports: Vec::new(),
            rack: b.rack.as_ref().map(|r| r.to_string()),
            // `host`/`port` are the Kafka listener already.
            kafka: None,
            // Kafka's Metadata lists unfenced brokers only.
            fenced: false,
        })
        .collect();
    let topics = answer
        .topics
        .iter()
        .map(|t| TopicInfo {
            error: ErrorCode::from_code(t.error_code),
            name: t
                .name
                .as_ref()
                .map_or_else(String::new, |n| n.0.to_string()),
            partitions: t
                .partitions
                .iter()
                .map(|p| PartitionInfo {
                    error: ErrorCode::from_code(p.error_code),
                    partition: p.partition_index as u32,
                    leader: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                    leader_shard: 0,
                    replicas: p.replica_nodes.iter().map(|n| n.0 as u32).collect(),
                    isr: p.isr_nodes.iter().map(|n| n.0 as u32).collect(),
                })
                .collect(),
        })
        .collect();
    Ok(Metadata {
        cluster_id: answer.cluster_id.map(|c| c.to_string()),
        controller_id: answer.controller_id.0,
        // Kafka's Metadata does not carry the metadata log position.
        metadata_applied_index: 0,
        metadata_committed_index: 0,
        brokers,
        topics,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjord_schema::RecordInput;
    use kafka_protocol::records::RecordBatchDecoder;

    /// What the builder writes, the crate's decoder reads back (it checks
    /// the CRC), for every codec.
    #[test]
    fn batches_decode_with_the_kafka_protocol_crate() {
        for compression in Compression::ALL {
            let options = BatchOptions {
                compression,
                ..BatchOptions::default()
            };
            let mut batch = KafkaBatch::with_capacity(options, 1024);
            let values: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; 100 + usize::from(i)]).collect();
            for (i, value) in values.iter().enumerate() {
                let record = RecordInput {
                    key: (i % 2 == 0).then_some(&b"key"[..]),
                    value: Some(value),
                    headers: &[(b"h", Some(b"v"))],
                    timestamp: 1_000 + i as i64,
                    offset_delta: None,
                };
                let before = batch.size_estimate();
                batch.push(record);
                assert!(
                    batch.size_estimate() - before <= KafkaBatch::record_size_estimate(&record)
                );
            }
            let mut bytes = batch.finish().expect("finishes");
            let set = RecordBatchDecoder::decode(&mut bytes).expect("valid v2 batch");
            assert!(bytes.is_empty());
            assert_eq!(set.records.len(), values.len());
            for (i, (record, value)) in set.records.iter().zip(&values).enumerate() {
                assert_eq!(record.offset, i as i64);
                assert_eq!(record.timestamp, 1_000 + i as i64);
                assert_eq!(record.value.as_deref(), Some(&value[..]));
                assert_eq!(record.key.is_some(), i % 2 == 0);
            }
        }
    }

    #[test]
    fn varint_lengths_match_the_encoding() {
        for value in [0i64, 1, -1, 63, 64, -65, 1 << 20, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            put_varlong(&mut out, value);
            assert_eq!(out.len(), varlong_len(value), "{value}");
        }
    }

    #[test]
    fn a_produce_frame_carries_its_correlation_id() {
        let batch = {
            let mut b = KafkaBatch::with_capacity(BatchOptions::default(), 256);
            b.push(RecordInput {
                value: Some(b"v"),
                ..RecordInput::default()
            });
            b.finish().expect("finishes")
        };
        let partitions = vec![ProducePartition {
            partition: PartitionId(3),
            batches: vec![batch.clone()],
        }];
        let mut frame = KafkaBatch::encode_produce(&[("t", partitions)], Acks::All, 500)
            .expect("encodes")
            .body;
        set_correlation_id(&mut frame, 77);
        let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        assert_eq!(len, frame.len() - 4);
        let mut body = Bytes::from(frame).slice(4..);
        let header =
            RequestHeader::decode(&mut body, ApiKey::Produce.request_header_version(9)).unwrap();
        assert_eq!(header.correlation_id, 77);
        let request = ProduceRequest::decode(&mut body, 9).expect("decodes");
        assert_eq!(request.acks, -1);
        let data = &request.topic_data[0].partition_data[0];
        assert_eq!(data.index, 3);
        assert_eq!(data.records.as_ref(), Some(&batch));
    }
}
