//! The Kafka listener spoken to directly with `kafka-protocol`'s encoders
//! (request and response types of any version), independent of rdkafka.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::{Broker, PATIENCE};

pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream
}

/// One request/response round trip of `api` at `version`.
pub fn call<Q: Encodable, R: Decodable>(
    stream: &mut TcpStream,
    api: ApiKey,
    version: i16,
    request: &Q,
) -> R {
    let mut header = RequestHeader::default();
    header.request_api_key = api as i16;
    header.request_api_version = version;
    header.correlation_id = 9;
    header.client_id = Some(StrBytes::from_static_str("raw-test"));
    let mut body = BytesMut::new();
    header
        .encode(&mut body, api.request_header_version(version))
        .expect("header");
    request.encode(&mut body, version).expect("body");
    let mut frame = BytesMut::new();
    frame.put_u32(body.len() as u32);
    frame.extend_from_slice(&body);
    stream.write_all(&frame).expect("write");
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).expect("length");
    let mut response = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut response).expect("response");
    let mut response = Bytes::from(response);
    let header = ResponseHeader::decode(&mut response, api.response_header_version(version))
        .expect("response header");
    assert_eq!(header.correlation_id, 9);
    R::decode(&mut response, version).expect("response body")
}

/// An rdkafka client configuration for `broker`'s Kafka listener.
pub fn client_config(broker: &Broker) -> rdkafka::config::ClientConfig {
    let mut config = rdkafka::config::ClientConfig::new();
    config
        .set("bootstrap.servers", broker.kafka_addr().to_string())
        .set("broker.address.family", "v4");
    config
}

/// A plain (non-transactional, no producer id) record for
/// `kafka_protocol`'s batch encoder.
pub fn plain_record(
    offset: i64,
    timestamp: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
) -> kafka_protocol::records::Record {
    kafka_protocol::records::Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: kafka_protocol::records::TimestampType::Creation,
        offset,
        sequence: -1,
        timestamp,
        key,
        value,
        headers: Default::default(),
    }
}

/// `records` as one Kafka RecordBatch v2, encoded by `kafka_protocol`.
pub fn encode_batch(
    records: &[kafka_protocol::records::Record],
    compression: kafka_protocol::records::Compression,
) -> Bytes {
    use kafka_protocol::records::{RecordBatchEncoder, RecordEncodeOptions};
    let mut encoded = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut encoded,
        records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encode records");
    encoded.freeze()
}

/// A Produce v9 (acks=all) of `records` to partition 0 of `topic` on
/// `stream`: the partition's response.
pub fn produce_v9(
    stream: &mut TcpStream,
    topic: &str,
    records: Bytes,
) -> kafka_protocol::messages::produce_response::PartitionProduceResponse {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
    let mut produce = ProduceRequest::default();
    produce.acks = -1;
    produce.timeout_ms = 30_000;
    let mut data = TopicProduceData::default();
    data.name = TopicName(StrBytes::from_string(topic.to_owned()));
    let mut part = PartitionProduceData::default();
    part.records = Some(records);
    data.partition_data.push(part);
    produce.topic_data.push(data);
    let mut produced: ProduceResponse = call(stream, ApiKey::Produce, 9, &produce);
    produced.responses.remove(0).partition_responses.remove(0)
}
