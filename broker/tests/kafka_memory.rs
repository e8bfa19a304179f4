//! Hostile Kafka clients against the real broker (issue 11, "Memory and CPU
//! amplification on the Kafka port"): each attack runs while a
//! well-behaved acks=all producer keeps producing; afterwards every record
//! it was acknowledged is readable, and the broker's peak resident set
//! (`VmHWM`) stayed under a bound derived from the configured budgets.
//! The broker runs one shard with small budgets so the bound is tight;
//! before the fixes each attack took the broker far past it.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse,
    RequestHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use common::pressure::{rss_bytes, rss_peak_bytes, SteadyProducer};
use common::{batch, Broker, PATIENCE};
use fjord_schema::ErrorCode;

const MIB: u64 = 1 << 20;
const FRAME_BYTES_MAX: u64 = 4 * MIB;
const INFLIGHT_BYTES_MAX: u64 = 16 * MIB;
const REQUEST_BUFFER_BYTES_MAX: u64 = 12 * MIB;
const RESPONSE_BYTES_MAX: u64 = 8 * MIB;
const DECOMPRESSED_BYTES_MAX: u64 = 4 * MIB;
const FETCH_BYTES_MAX: u64 = 4 * MIB;
const REQUEST_ELEMENTS_MAX: u64 = 10_000;
/// What the broker's own allocations, allocator slack and a debug build's
/// bookkeeping may add to the budgets during an attack.
const SLACK_BYTES: u64 = 48 * MIB;
/// Per hostile connection: its socket, task and one read chunk beyond the
/// budgets.
const CONNECTION_BYTES: u64 = 64 * 1024;

fn start() -> Broker {
    let text = |n: u64| n.to_string();
    let args = [
        ("--shards", "1".to_owned()),
        ("--frame-bytes-max", text(FRAME_BYTES_MAX)),
        ("--inflight-bytes-max-per-shard", text(INFLIGHT_BYTES_MAX)),
        (
            "--request-buffer-bytes-max-per-shard",
            text(REQUEST_BUFFER_BYTES_MAX),
        ),
        ("--response-bytes-max-per-shard", text(RESPONSE_BYTES_MAX)),
        (
            "--decompressed-bytes-max-per-request",
            text(DECOMPRESSED_BYTES_MAX),
        ),
        ("--request-elements-max", text(REQUEST_ELEMENTS_MAX)),
        ("--fetch-bytes-max", text(FETCH_BYTES_MAX)),
        ("--message-max-bytes", text(MIB)),
        ("--log-write-buffer-bytes", text(2 * MIB)),
        ("--batch-cache-bytes-max-per-shard", text(4 * MIB)),
        ("--connections-max-per-shard", "4096".to_owned()),
    ];
    let args: Vec<String> = args
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_owned(), value])
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Broker::start(&args)
}

/// The broker with a `steady` topic being produced to, and its peak
/// resident set once settled: the baseline the budgets are added to.
fn start_with_steady_producer() -> (Broker, SteadyProducer, u64) {
    let broker = start();
    let mut conn = broker.conn();
    assert_eq!(conn.create_topic("steady", 1, &[]), ErrorCode::None);
    let producer = SteadyProducer::start(broker.addr, "steady", 0);
    thread::sleep(Duration::from_millis(500));
    let baseline = rss_peak_bytes(broker.child.id());
    (broker, producer, baseline)
}

/// The peak resident set the budgets allow for `connections` hostile
/// connections.
fn bound(baseline: u64, connections: u64) -> u64 {
    baseline
        + INFLIGHT_BYTES_MAX
        + REQUEST_BUFFER_BYTES_MAX
        + RESPONSE_BYTES_MAX
        + connections * CONNECTION_BYTES
        + SLACK_BYTES
}

fn assert_peak_within(broker: &Broker, baseline: u64, connections: u64, attack: &str) {
    let peak = rss_peak_bytes(broker.child.id());
    let bound = bound(baseline, connections);
    eprintln!(
        "{attack}: peak RSS {} MiB (baseline {} MiB, bound {} MiB)",
        peak / MIB,
        baseline / MIB,
        bound / MIB
    );
    assert!(
        peak <= bound,
        "{attack}: peak RSS {peak} bytes is over the {bound} bytes the budgets allow \
         (baseline {baseline})"
    );
}

/// A Kafka connection whose receive buffer is small, so a response it
/// does not read stays in the broker rather than in the kernel.
fn connect_small_receive_buffer(addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(&addr.into()).expect("connect");
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream
}

/// `request` framed as `api` at `version`.
fn frame<Q: Encodable>(api: ApiKey, version: i16, correlation_id: i32, request: &Q) -> Bytes {
    let mut header = RequestHeader::default();
    header.request_api_key = api as i16;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(StrBytes::from_static_str("hostile"));
    let mut body = BytesMut::new();
    header
        .encode(&mut body, api.request_header_version(version))
        .expect("header");
    request.encode(&mut body, version).expect("body");
    let mut out = BytesMut::new();
    out.put_u32(body.len() as u32);
    out.extend_from_slice(&body);
    out.freeze()
}

/// Writes what the socket takes now; a broker applying backpressure
/// takes less.
fn write_some(stream: &mut TcpStream, bytes: &[u8]) {
    stream.set_nonblocking(true).expect("nonblocking");
    let mut at = 0;
    while at < bytes.len() {
        match stream.write(&bytes[at..]) {
            Ok(0) => break,
            Ok(n) => at += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    stream.set_nonblocking(false).expect("blocking");
}

/// One response frame (after its length prefix) of a Kafka round trip.
fn read_response(stream: &mut TcpStream) -> Option<Bytes> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).ok()?;
    Some(Bytes::from(body))
}

fn decode<R: Decodable>(mut response: Bytes, api: ApiKey, version: i16) -> R {
    kafka_protocol::messages::ResponseHeader::decode(
        &mut response,
        api.response_header_version(version),
    )
    .expect("response header");
    R::decode(&mut response, version).expect("response body")
}

/// Whether the broker closed the connection (EOF or reset) rather than
/// answering; an answer is read whole first.
fn closed_without_answer(stream: &mut TcpStream) -> bool {
    read_response(stream).is_none()
}

/// 200 connections announce a frame of `frame_bytes_max` and send only
/// the prefix; 40 more send 1 MiB of such a frame's body. Before: each
/// prefix allocated and zero-filled the whole announced frame (~800 MiB
/// here). Now buffers grow with what arrives, within the shard's request
/// buffer budget (the connections sending bodies stop being read), and
/// the memory is returned when they close.
#[test]
fn length_prefixes_without_bodies_stay_within_the_request_buffer_budget() {
    let (broker, producer, baseline) = start_with_steady_producer();
    let prefix = ((FRAME_BYTES_MAX - 1) as u32).to_be_bytes();
    let mut attackers: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut stream = TcpStream::connect(broker.kafka_addr()).expect("connect");
            stream.write_all(&prefix).expect("prefix");
            stream
        })
        .collect();
    let body = vec![7u8; MIB as usize];
    for _ in 0..40 {
        let mut stream = TcpStream::connect(broker.kafka_addr()).expect("connect");
        stream.write_all(&prefix).expect("prefix");
        write_some(&mut stream, &body);
        attackers.push(stream);
    }
    // Let the shard read what it will.
    thread::sleep(Duration::from_secs(2));
    let connections = attackers.len() as u64;
    assert_peak_within(&broker, baseline, connections, "length prefixes");
    drop(attackers);
    thread::sleep(Duration::from_millis(500));
    let now = rss_bytes(broker.child.id());
    assert!(
        now <= bound(baseline, 0),
        "{now} bytes still resident after the connections closed"
    );
    let acked = producer.stop_and_verify(broker.addr);
    assert!(acked > 0, "the steady producer was never acknowledged");
}

/// A zstd RecordBatch v2 of one record whose value is `value_len` zero
/// bytes: a few KiB that decompress to `value_len`.
fn zstd_bomb(value_len: usize) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, value: i64) {
        let mut v = ((value << 1) ^ (value >> 63)) as u64;
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let mut record = vec![0u8]; // attributes
    varint(&mut record, 0); // timestamp delta
    varint(&mut record, 0); // offset delta
    varint(&mut record, -1); // null key
    varint(&mut record, value_len as i64);
    record.resize(record.len() + value_len, 0);
    varint(&mut record, 0); // headers
    let mut section = Vec::new();
    varint(&mut section, record.len() as i64);
    section.extend_from_slice(&record);
    let compressed = zstd::bulk::compress(&section, 3).expect("zstd");

    let mut after_crc = Vec::new();
    after_crc.extend_from_slice(&4i16.to_be_bytes()); // attributes: zstd
    after_crc.extend_from_slice(&0i32.to_be_bytes()); // last offset delta
    after_crc.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
    after_crc.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
    after_crc.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    after_crc.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    after_crc.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    after_crc.extend_from_slice(&1i32.to_be_bytes()); // records
    after_crc.extend_from_slice(&compressed);
    let crc = crc32c::crc32c(&after_crc);
    let mut batch = Vec::new();
    batch.extend_from_slice(&0i64.to_be_bytes()); // base offset
    let batch_length = 4 + 1 + 4 + after_crc.len();
    batch.extend_from_slice(&(batch_length as i32).to_be_bytes());
    batch.extend_from_slice(&0i32.to_be_bytes()); // leader epoch
    batch.push(2); // magic
    batch.extend_from_slice(&crc.to_be_bytes());
    batch.extend_from_slice(&after_crc);
    batch
}

fn produce_request(partitions: &[(&str, Bytes)]) -> ProduceRequest {
    let mut request = ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 30_000;
    for (topic, records) in partitions {
        let mut data = PartitionProduceData::default();
        data.index = 0;
        data.records = Some(records.clone());
        let mut t = TopicProduceData::default();
        t.name = TopicName(StrBytes::from_string((*topic).to_owned()));
        t.partition_data = vec![data];
        request.topic_data.push(t);
    }
    request
}

/// A Produce of a few KiB holding 3 zstd batches per partition that each
/// expand to 60 MiB, to an existing topic and to one that does not exist. Before: every batch was decompressed (and rebuilt),
/// for the missing topic too, ~120 MiB at a time and seconds of one
/// shard's CPU per request. Now the missing topic is refused before
/// conversion, and the existing one gets MESSAGE_TOO_LARGE once the
/// request's batches pass `decompressed_bytes_max_per_request`.
#[test]
fn zstd_bombs_are_bounded_per_request_and_skipped_for_missing_topics() {
    let (broker, producer, baseline) = start_with_steady_producer();
    let mut conn = broker.conn();
    assert_eq!(conn.create_topic("bombed", 1, &[]), ErrorCode::None);
    let bomb = zstd_bomb(60 * MIB as usize);
    let records: Bytes = bomb.repeat(3).into();
    assert!(records.len() < FRAME_BYTES_MAX as usize / 2);
    let version = 9;
    let mut attackers: Vec<TcpStream> = (0..1)
        .map(|_| connect_small_receive_buffer(broker.kafka_addr()))
        .collect();
    for (i, stream) in attackers.iter_mut().enumerate() {
        let request = produce_request(&[("bombed", records.clone()), ("missing", records.clone())]);
        stream
            .write_all(&frame(ApiKey::Produce, version, i as i32, &request))
            .expect("produce");
    }
    let mut answers = Vec::new();
    for stream in &mut attackers {
        let response: ProduceResponse = decode(
            read_response(stream).expect("a produce response"),
            ApiKey::Produce,
            version,
        );
        let codes: Vec<(String, i16)> = response
            .responses
            .iter()
            .map(|t| (t.name.0.to_string(), t.partition_responses[0].error_code))
            .collect();
        answers.push(codes);
    }
    assert_peak_within(&broker, baseline, attackers.len() as u64, "zstd bombs");
    for codes in answers {
        assert_eq!(
            codes,
            vec![
                ("bombed".to_owned(), ErrorCode::MessageTooLarge.code()),
                (
                    "missing".to_owned(),
                    ErrorCode::UnknownTopicOrPartition.code()
                ),
            ]
        );
    }
    // A batch within the bound is taken.
    let mut stream = connect_small_receive_buffer(broker.kafka_addr());
    let small: Bytes = zstd_bomb(MIB as usize).into();
    let request = produce_request(&[("bombed", small)]);
    stream
        .write_all(&frame(ApiKey::Produce, version, 1, &request))
        .expect("produce");
    let response: ProduceResponse = decode(
        read_response(&mut stream).expect("a produce response"),
        ApiKey::Produce,
        version,
    );
    assert_eq!(
        response.responses[0].partition_responses[0].error_code,
        ErrorCode::None.code()
    );
    let acked = producer.stop_and_verify(broker.addr);
    assert!(acked > 0, "the steady producer was never acknowledged");
}

/// 60 connections each ask for a ~4 MiB Fetch and never read the answer.
/// Before: every response sat in the broker (~240 MiB here). Now they
/// share the shard's response budget: fetches past it do not run.
#[test]
fn unread_fetch_responses_stay_within_the_response_budget() {
    let (broker, producer, baseline) = start_with_steady_producer();
    let mut conn = broker.conn();
    assert_eq!(conn.create_topic("big", 1, &[]), ErrorCode::None);
    let value = vec![3u8; 900 * 1024];
    for _ in 0..5 {
        let records = batch(&[(b"k", &value)], 1_700_000_000_000);
        assert_eq!(conn.produce("big", 0, &records, -1).0, ErrorCode::None);
    }
    let version = 12;
    let mut request = FetchRequest::default();
    request.replica_id = kafka_protocol::messages::BrokerId(-1);
    request.max_wait_ms = 0;
    request.min_bytes = 1;
    request.max_bytes = FETCH_BYTES_MAX as i32;
    let mut partition = FetchPartition::default();
    partition.partition = 0;
    partition.fetch_offset = 0;
    partition.partition_max_bytes = FETCH_BYTES_MAX as i32;
    let mut topic = FetchTopic::default();
    topic.topic = TopicName(StrBytes::from_static_str("big"));
    topic.partitions = vec![partition];
    request.topics = vec![topic];
    let fetch = frame(ApiKey::Fetch, version, 1, &request);
    let attackers: Vec<TcpStream> = (0..60)
        .map(|_| {
            let mut stream = connect_small_receive_buffer(broker.kafka_addr());
            stream.write_all(&fetch).expect("fetch");
            stream
        })
        .collect();
    thread::sleep(Duration::from_secs(3));
    assert_peak_within(
        &broker,
        baseline,
        attackers.len() as u64,
        "unread fetch responses",
    );
    drop(attackers);
    // The shard serves fetches again once they are gone.
    let mut stream = connect_small_receive_buffer(broker.kafka_addr());
    stream.write_all(&fetch).expect("fetch");
    let response = read_response(&mut stream).expect("a fetch response");
    assert!(response.len() > MIB as usize);
    let acked = producer.stop_and_verify(broker.addr);
    assert!(acked > 0, "the steady producer was never acknowledged");
}

fn metadata_frame(names: impl Iterator<Item = String>) -> Bytes {
    let mut request = MetadataRequest::default();
    request.allow_auto_topic_creation = false;
    request.topics = Some(
        names
            .map(|name| {
                let mut topic = MetadataRequestTopic::default();
                topic.name = Some(TopicName(StrBytes::from_string(name)));
                topic
            })
            .collect(),
    );
    frame(ApiKey::Metadata, 4, 1, &request)
}

/// Metadata requests naming ~2M topics (a 4 MiB frame of empty names) and
/// one claiming 2^31-1 topics. Before: each decoded element and response
/// topic took ~100 times its wire bytes (hundreds of MiB per request).
/// Now a request with more than `request_elements_max` elements is refused
/// while it is decoded, before they are allocated (the connection
/// closes); one within it is answered.
#[test]
fn huge_metadata_requests_are_refused_before_allocating() {
    let (broker, producer, baseline) = start_with_steady_producer();
    let huge = metadata_frame((0..2_000_000).map(|_| String::new()));
    assert!(huge.len() as u64 <= FRAME_BYTES_MAX);
    let mut attackers: Vec<TcpStream> = (0..3)
        .map(|_| connect_small_receive_buffer(broker.kafka_addr()))
        .collect();
    for stream in &mut attackers {
        stream.write_all(&huge).expect("metadata");
    }
    // The topics array of a v1 Metadata request claiming 2^31-1 entries.
    let mut claim = BytesMut::new();
    let mut header = RequestHeader::default();
    header.request_api_key = ApiKey::Metadata as i16;
    header.request_api_version = 1;
    header.encode(&mut claim, 1).expect("header");
    claim.put_i32(i32::MAX);
    claim.put_i16(1);
    claim.put_u8(b'a');
    let mut framed = BytesMut::new();
    framed.put_u32(claim.len() as u32);
    framed.extend_from_slice(&claim);
    let mut claimer = connect_small_receive_buffer(broker.kafka_addr());
    claimer.write_all(&framed).expect("metadata");
    attackers.push(claimer);
    let closed: Vec<bool> = attackers.iter_mut().map(closed_without_answer).collect();
    assert_peak_within(&broker, baseline, 4, "huge metadata requests");
    assert_eq!(
        closed,
        vec![true; 4],
        "refused requests close the connection"
    );
    // Within the bound: answered, every topic unknown.
    let mut stream = connect_small_receive_buffer(broker.kafka_addr());
    let names = (0..1000).map(|i| format!("absent-{i}"));
    stream.write_all(&metadata_frame(names)).expect("metadata");
    let response: MetadataResponse = decode(
        read_response(&mut stream).expect("a metadata response"),
        ApiKey::Metadata,
        4,
    );
    assert_eq!(response.topics.len(), 1000);
    assert!(response
        .topics
        .iter()
        .all(|t| t.error_code == ErrorCode::UnknownTopicOrPartition.code()));
    let acked = producer.stop_and_verify(broker.addr);
    assert!(acked > 0, "the steady producer was never acknowledged");
}
