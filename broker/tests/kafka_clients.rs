//! A real Kafka client (rdkafka, bundled librdkafka) against the `fjord`
//! binary's Kafka listener (2 shards): admin create topic, idempotent
//! producer with keys and headers, manual-assignment consumer, and
//! cross-protocol (rdkafka -> native consumer, native producer -> rdkafka).
//! No timing assertions: deadlines only keep a broken broker from hanging
//! the suite.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use fjord_net::client::consumer::{Consumer, ConsumerOptions, SeekTo};
use fjord_net::client::producer::{Producer, ProducerOptions, ProducerRecord};
use fjord_schema::PartitionId;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::{Offset, TopicPartitionList};
use tempfile::TempDir;

mod common;

const PATIENCE: Duration = Duration::from_secs(60);
const PARTITIONS: i32 = 3;

struct Broker {
    child: Child,
    dir: TempDir,
    native: SocketAddr,
    kafka: SocketAddr,
}

fn read_addr(path: &Path, child: &mut Child, dir: &Path) -> SocketAddr {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(addr) = text.trim().parse() {
                return addr;
            }
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("fjord exited with {status}: {}", logs(dir));
        }
        assert!(Instant::now() < deadline, "fjord did not start");
        thread::sleep(Duration::from_millis(20));
    }
}

fn logs(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("fjord.log")).unwrap_or_default()
}

impl Broker {
    fn start() -> Broker {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let log = File::create(dir.path().join("fjord.log")).expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_fjord"))
            .arg("start")
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", "127.0.0.1:0", "--kafka-listen", "127.0.0.1:0"])
            .args(["--shards", "2"])
            .env("FJORD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn fjord");
        // broker.addr is written last, after kafka.addr.
        let native = read_addr(&data.join("broker.addr"), &mut child, dir.path());
        let kafka = read_addr(&data.join("kafka.addr"), &mut child, dir.path());
        Broker {
            child,
            dir,
            native,
            kafka,
        }
    }

    fn config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", self.kafka.to_string())
            .set("broker.address.family", "v4");
        config
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("fjord log:\n{}", logs(self.dir.path()));
        }
    }
}

fn create_topic(broker: &Broker, name: &str) {
    let admin: AdminClient<DefaultClientContext> = broker.config().create().expect("admin client");
    let topic = NewTopic::new(name, PARTITIONS, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(PATIENCE));
    let results = futures_lite::future::block_on(admin.create_topics(&[topic], &options))
        .expect("create_topics");
    for result in results {
        result.expect("topic created");
    }
}

/// (partition, key, value, headers) as a consumer saw them.
type Seen = (i32, Vec<u8>, Vec<u8>, Vec<(String, Vec<u8>)>);

fn rdkafka_consume(broker: &Broker, topic: &str, expected: usize) -> Vec<Seen> {
    let consumer: BaseConsumer = broker
        .config()
        // librdkafka's assign() needs a group id; with auto-commit off and
        // manual assignment no group request is needed.
        .set("group.id", "kafka-clients-test")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .expect("add partition");
    }
    consumer.assign(&assignment).expect("assign");
    let mut seen = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while seen.len() < expected {
        assert!(
            Instant::now() < deadline,
            "consumed {} of {expected}",
            seen.len()
        );
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(error)) => eprintln!("consumer error (retrying): {error}"),
            Some(Ok(message)) => {
                let headers = message
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default();
                seen.push((
                    message.partition(),
                    message.key().unwrap_or_default().to_vec(),
                    message.payload().unwrap_or_default().to_vec(),
                    headers,
                ));
            }
        }
    }
    seen
}

fn rdkafka_produce(broker: &Broker, topic: &str, count: usize) -> Vec<Seen> {
    let producer: FutureProducer = broker
        .config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let mut sent = Vec::new();
    let mut deliveries = Vec::new();
    for i in 0..count {
        let key = format!("key-{}", i % 7);
        let value = format!("value-{i}");
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "seq",
                value: Some(i.to_string().as_bytes()),
            })
            .insert(Header {
                key: "origin",
                value: Some("rdkafka".as_bytes()),
            });
        let record = FutureRecord::to(topic)
            .key(&key)
            .payload(&value)
            .headers(headers);
        let delivery = producer
            .send_result(record)
            .map_err(|(e, _)| e)
            .expect("queued");
        deliveries.push(delivery);
        sent.push((i, key, value));
    }
    let mut out = Vec::new();
    for (delivery, (i, key, value)) in deliveries.into_iter().zip(sent) {
        let delivered = futures_lite::future::block_on(delivery)
            .expect("delivery future")
            .expect("delivered");
        out.push((
            delivered.partition,
            key.into_bytes(),
            value.into_bytes(),
            vec![
                ("seq".to_owned(), i.to_string().into_bytes()),
                ("origin".to_owned(), b"rdkafka".to_vec()),
            ],
        ));
    }
    producer.flush(PATIENCE).expect("flush");
    out
}

/// Per-partition sequences, the order a consumer must preserve.
fn by_partition(records: &[Seen]) -> BTreeMap<i32, Vec<Seen>> {
    let mut map: BTreeMap<i32, Vec<Seen>> = BTreeMap::new();
    for r in records {
        map.entry(r.0).or_default().push(r.clone());
    }
    map
}

#[test]
fn rdkafka_round_trip_and_cross_protocol() {
    let broker = Broker::start();
    let topic = "kafka-clients";
    create_topic(&broker, topic);

    // rdkafka -> rdkafka.
    let produced = rdkafka_produce(&broker, topic, 60);
    assert!(
        by_partition(&produced).len() > 1,
        "keys spread over partitions"
    );
    let consumed = rdkafka_consume(&broker, topic, produced.len());
    assert_eq!(by_partition(&consumed), by_partition(&produced));

    // rdkafka -> native consumer.
    let mut native =
        Consumer::new(ConsumerOptions::new(broker.native.to_string())).expect("native consumer");
    let partitions: Vec<PartitionId> = (0..PARTITIONS as u32).map(PartitionId).collect();
    native.assign(topic, &partitions);
    for p in &partitions {
        native.seek(topic, *p, SeekTo::Earliest).expect("assigned");
    }
    let mut native_seen = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while native_seen.len() < produced.len() {
        assert!(Instant::now() < deadline, "native consumer stalled");
        for r in native.poll(Duration::from_millis(200)).expect("poll") {
            native_seen.push((
                r.partition.get() as i32,
                r.key.map(|k| k.to_vec()).unwrap_or_default(),
                r.value.map(|v| v.to_vec()).unwrap_or_default(),
                r.headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            String::from_utf8_lossy(k).into_owned(),
                            v.as_ref().map(|v| v.to_vec()).unwrap_or_default(),
                        )
                    })
                    .collect(),
            ));
        }
    }
    assert_eq!(by_partition(&native_seen), by_partition(&produced));

    // native producer -> rdkafka.
    let native_topic = "from-native";
    create_topic(&broker, native_topic);
    let producer =
        Producer::new(ProducerOptions::new(broker.native.to_string())).expect("native producer");
    let mut expected = Vec::new();
    let mut handles = Vec::new();
    for i in 0..30u32 {
        let key = format!("nk-{}", i % 5).into_bytes();
        let value = format!("nv-{i}").into_bytes();
        let seq = i.to_string().into_bytes();
        let headers: [(&[u8], Option<&[u8]>); 1] = [(b"seq", Some(&seq))];
        let handle = producer
            .send(ProducerRecord {
                topic: native_topic,
                key: Some(&key),
                value: Some(&value),
                headers: &headers,
                ..ProducerRecord::default()
            })
            .expect("send");
        handles.push((handle, key, value, seq));
    }
    producer.flush();
    for (handle, key, value, seq) in handles {
        let meta = handle.wait().expect("produced");
        expected.push((
            meta.partition.get() as i32,
            key,
            value,
            vec![("seq".to_owned(), seq)],
        ));
    }
    let consumed = rdkafka_consume(&broker, native_topic, expected.len());
    assert_eq!(by_partition(&consumed), by_partition(&expected));
}

mod raw {
    //! The Kafka listener spoken to directly, with `kafka-protocol`'s
    //! encoders: hostile frames close only their own connection.

    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};

    use bytes::{BufMut, Bytes, BytesMut};
    use kafka_protocol::messages::{
        ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
    };
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

    use super::PATIENCE;

    pub fn connect(addr: SocketAddr) -> TcpStream {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        stream
    }

    /// Sends raw bytes; true if the broker then closed the connection.
    pub fn closed_after(addr: SocketAddr, bytes: &[u8]) -> bool {
        let mut stream = connect(addr);
        stream.write_all(bytes).expect("write");
        let mut buf = [0u8; 64];
        matches!(stream.read(&mut buf), Ok(0) | Err(_))
    }

    pub fn api_versions(addr: SocketAddr, version: i16) -> (i16, Vec<(i16, i16, i16)>) {
        let mut header = RequestHeader::default();
        header.request_api_key = ApiKey::ApiVersions as i16;
        header.request_api_version = version;
        header.correlation_id = 42;
        header.client_id = Some(StrBytes::from_static_str("raw-test"));
        let mut request = ApiVersionsRequest::default();
        request.client_software_name = StrBytes::from_static_str("raw");
        request.client_software_version = StrBytes::from_static_str("1");
        let mut body = BytesMut::new();
        let known = version.min(4);
        header
            .encode(&mut body, ApiKey::ApiVersions.request_header_version(known))
            .expect("encode header");
        request.encode(&mut body, known).expect("encode body");
        let mut frame = BytesMut::new();
        frame.put_u32(body.len() as u32);
        frame.extend_from_slice(&body);
        let mut stream = connect(addr);
        stream.write_all(&frame).expect("write");
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).expect("response length");
        let mut response = vec![0u8; u32::from_be_bytes(len) as usize];
        stream.read_exact(&mut response).expect("response");
        let mut response = Bytes::from(response);
        // ApiVersions responses always use header v0; an unsupported
        // version is answered at v0.
        let answered = if version > 3 { 0 } else { version };
        let header = ResponseHeader::decode(&mut response, 0).expect("response header");
        assert_eq!(header.correlation_id, 42);
        let body = ApiVersionsResponse::decode(&mut response, answered).expect("response body");
        let apis = body
            .api_keys
            .iter()
            .map(|a| (a.api_key, a.min_version, a.max_version))
            .collect();
        (body.error_code, apis)
    }
}

#[test]
fn hostile_kafka_frames_close_only_their_connection() {
    let broker = Broker::start();
    // Metadata v1 whose topics array claims 2^31-1 entries (once made the
    // decoder reserve ~150 GB and abort the broker).
    let mut body = Vec::new();
    body.extend_from_slice(&3i16.to_be_bytes());
    body.extend_from_slice(&1i16.to_be_bytes());
    body.extend_from_slice(&7i32.to_be_bytes());
    body.extend_from_slice(&1i16.to_be_bytes());
    body.push(b'x');
    body.extend_from_slice(&i32::MAX.to_be_bytes());
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    assert!(raw::closed_after(broker.kafka, &frame));
    // A length over the frame limit, a negative one, an api we do not serve.
    assert!(raw::closed_after(
        broker.kafka,
        &0x7fff_ffffu32.to_be_bytes()
    ));
    assert!(raw::closed_after(broker.kafka, &[0xff, 0xff, 0xff, 0xfe]));
    let mut group = vec![0, 0, 0, 10];
    group.extend_from_slice(&[0, 11, 0, 5, 0, 0, 0, 1, 0xff, 0xff]);
    assert!(raw::closed_after(broker.kafka, &group));

    // The broker still answers, with exactly the apis it serves.
    let expected: Vec<(i16, i16, i16)> = fjord_broker::kafka::handler::KAFKA_APIS
        .iter()
        .map(|&(key, min, max)| (key as i16, min, max))
        .collect();
    for version in [0, 1, 2, 3] {
        assert_eq!(
            raw::api_versions(broker.kafka, version),
            (0, expected.clone())
        );
    }
    // An ApiVersions version we do not serve: UNSUPPORTED_VERSION at v0.
    assert_eq!(raw::api_versions(broker.kafka, 4), (35, expected));
}

/// The oldest served versions, spoken with `kafka-protocol`'s encoders:
/// CreateTopics v2, Metadata v1, Produce v3, Fetch v4, ListOffsets v1.
#[test]
fn oldest_versions_round_trip_with_kafka_protocol_encoders() {
    use bytes::{Bytes, BytesMut};
    use common::kafka::call;
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{
        ApiKey, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest,
        DeleteTopicsResponse, FetchRequest, FetchResponse, InitProducerIdRequest,
        InitProducerIdResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest,
        MetadataResponse, ProduceRequest, ProduceResponse, TopicName,
    };
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType,
    };

    let broker = Broker::start();
    let mut stream = raw::connect(broker.kafka);
    let name = TopicName(StrBytes::from_static_str("oldest"));

    let mut create = CreateTopicsRequest::default();
    let mut topic = CreatableTopic::default();
    topic.name = name.clone();
    topic.num_partitions = 2;
    topic.replication_factor = 1;
    create.topics.push(topic);
    create.timeout_ms = 10_000;
    let created: CreateTopicsResponse = call(&mut stream, ApiKey::CreateTopics, 2, &create);
    assert_eq!(created.topics[0].error_code, 0);

    let mut metadata = MetadataRequest::default();
    let mut wanted = MetadataRequestTopic::default();
    wanted.name = Some(name.clone());
    metadata.topics = Some(vec![wanted]);
    let meta: MetadataResponse = call(&mut stream, ApiKey::Metadata, 1, &metadata);
    assert_eq!(meta.brokers.len(), 1);
    assert_eq!(meta.brokers[0].port, i32::from(broker.kafka.port()));
    assert_eq!(meta.topics[0].error_code, 0);
    assert_eq!(meta.topics[0].partitions.len(), 2);

    let records: Vec<Record> = (0..5i64)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i,
            sequence: -1,
            timestamp: 1_700_000_000_000 + i,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(format!("v{i}"))),
            headers: Default::default(),
        })
        .collect();
    let mut encoded = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut encoded,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::Lz4,
        },
    )
    .expect("encode records");
    let mut produce = ProduceRequest::default();
    produce.acks = -1;
    produce.timeout_ms = 10_000;
    let mut data = TopicProduceData::default();
    data.name = name.clone();
    let mut part = PartitionProduceData::default();
    part.index = 1;
    part.records = Some(encoded.freeze());
    data.partition_data.push(part);
    produce.topic_data.push(data);
    let produced: ProduceResponse = call(&mut stream, ApiKey::Produce, 3, &produce);
    let answer = &produced.responses[0].partition_responses[0];
    assert_eq!(
        (answer.index, answer.error_code, answer.base_offset),
        (1, 0, 0)
    );

    let mut fetch = FetchRequest::default();
    fetch.max_wait_ms = 100;
    fetch.min_bytes = 1;
    fetch.max_bytes = 1 << 20;
    let mut ft = FetchTopic::default();
    ft.topic = name.clone();
    let mut fp = FetchPartition::default();
    fp.partition = 1;
    fp.fetch_offset = 0;
    fp.partition_max_bytes = 1 << 20;
    ft.partitions.push(fp);
    fetch.topics.push(ft);
    let fetched: FetchResponse = call(&mut stream, ApiKey::Fetch, 4, &fetch);
    let data = &fetched.responses[0].partitions[0];
    assert_eq!((data.error_code, data.high_watermark), (0, 5));
    let mut bytes = data.records.clone().expect("records");
    let batches = RecordBatchDecoder::decode_all(&mut bytes).expect("decode fetched");
    let back: Vec<(Option<Bytes>, Option<Bytes>)> = batches
        .iter()
        .flat_map(|b| b.records.iter().map(|r| (r.key.clone(), r.value.clone())))
        .collect();
    let sent: Vec<(Option<Bytes>, Option<Bytes>)> = records
        .iter()
        .map(|r| (r.key.clone(), r.value.clone()))
        .collect();
    assert_eq!(back, sent);

    let mut list = ListOffsetsRequest::default();
    list.replica_id = kafka_protocol::messages::BrokerId(-1);
    let mut lt = ListOffsetsTopic::default();
    lt.name = name;
    let mut lp = ListOffsetsPartition::default();
    lp.partition_index = 1;
    lp.timestamp = -1; // latest
    lt.partitions.push(lp);
    list.topics.push(lt);
    let listed: ListOffsetsResponse = call(&mut stream, ApiKey::ListOffsets, 1, &list);
    let p = &listed.topics[0].partitions[0];
    assert_eq!((p.error_code, p.offset), (0, 5));

    // Every served version of every api answers (the encoder refuses
    // fields a version lacks, so this catches version-gated fields).
    for version in 1..=12 {
        let meta: MetadataResponse = call(&mut stream, ApiKey::Metadata, version, &metadata);
        assert_eq!(meta.topics[0].partitions.len(), 2, "Metadata v{version}");
    }
    let mut produce = produce;
    for version in 3..=9 {
        // Each version appends the same 5 records again.
        let produced: ProduceResponse = call(&mut stream, ApiKey::Produce, version, &produce);
        let answer = &produced.responses[0].partition_responses[0];
        assert_eq!(answer.error_code, 0, "Produce v{version}");
    }
    produce.acks = 1;
    let _: ProduceResponse = call(&mut stream, ApiKey::Produce, 9, &produce);
    for version in 4..=12 {
        let fetched: FetchResponse = call(&mut stream, ApiKey::Fetch, version, &fetch);
        let data = &fetched.responses[0].partitions[0];
        assert_eq!(data.error_code, 0, "Fetch v{version}");
        assert_eq!(data.high_watermark, 45, "Fetch v{version}");
    }
    for version in 1..=7 {
        let listed: ListOffsetsResponse = call(&mut stream, ApiKey::ListOffsets, version, &list);
        let p = &listed.topics[0].partitions[0];
        assert_eq!((p.error_code, p.offset), (0, 45), "ListOffsets v{version}");
    }
    for version in 2..=7 {
        let mut create = CreateTopicsRequest::default();
        let mut topic = CreatableTopic::default();
        topic.name = TopicName(StrBytes::from_string(format!("created-v{version}")));
        topic.num_partitions = 1;
        topic.replication_factor = 1;
        create.topics.push(topic);
        let created: CreateTopicsResponse =
            call(&mut stream, ApiKey::CreateTopics, version, &create);
        assert_eq!(created.topics[0].error_code, 0, "CreateTopics v{version}");
    }
    for version in 1..=6i16 {
        let created = TopicName(StrBytes::from_string(format!("created-v{}", version + 1)));
        let mut delete = DeleteTopicsRequest::default();
        if version >= 6 {
            let mut state = DeleteTopicState::default();
            state.name = Some(created);
            delete.topics.push(state);
        } else {
            delete.topic_names.push(created);
        }
        let deleted: DeleteTopicsResponse =
            call(&mut stream, ApiKey::DeleteTopics, version, &delete);
        assert_eq!(
            deleted.responses[0].error_code, 0,
            "DeleteTopics v{version}"
        );
    }
    for version in 0..=4 {
        let mut init = InitProducerIdRequest::default();
        init.transactional_id = None;
        init.transaction_timeout_ms = 60_000;
        let answer: InitProducerIdResponse =
            call(&mut stream, ApiKey::InitProducerId, version, &init);
        assert_eq!(answer.error_code, 0, "InitProducerId v{version}");
        assert!(answer.producer_id.0 >= 0, "InitProducerId v{version}");
    }
}
