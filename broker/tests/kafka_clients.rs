//! A real Kafka client (rdkafka, bundled librdkafka) against the `fjord`
//! binary's Kafka listener (2 shards): admin create topic, idempotent
//! producer with keys and headers, manual-assignment consumer, and
//! cross-protocol (rdkafka -> native consumer, native producer -> rdkafka).
//! No timing assertions: deadlines only keep a broken broker from hanging
//! the suite.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fjord_net::client::consumer::{Consumer, ConsumerOptions, SeekTo};
use fjord_net::client::producer::{Producer, ProducerOptions, ProducerRecord};
use fjord_schema::PartitionId;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::{Offset, TopicPartitionList};

mod common;

use common::kafka::client_config;
use common::{Broker, PATIENCE};

const PARTITIONS: i32 = 3;

fn start() -> Broker {
    Broker::start(&["--shards", "2"])
}

fn create_topic(broker: &Broker, name: &str) {
    let admin: AdminClient<DefaultClientContext> =
        client_config(broker).create().expect("admin client");
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
    let consumer: BaseConsumer = client_config(broker)
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
    let producer: FutureProducer = client_config(broker)
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
    let broker = start();
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
        Consumer::new(ConsumerOptions::new(broker.addr.to_string())).expect("native consumer");
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
        Producer::new(ProducerOptions::new(broker.addr.to_string())).expect("native producer");
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
    let broker = start();
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
    assert!(raw::closed_after(broker.kafka_addr(), &frame));
    // A length over the frame limit, a negative one, an api we do not serve.
    assert!(raw::closed_after(
        broker.kafka_addr(),
        &0x7fff_ffffu32.to_be_bytes()
    ));
    assert!(raw::closed_after(
        broker.kafka_addr(),
        &[0xff, 0xff, 0xff, 0xfe]
    ));
    let mut group = vec![0, 0, 0, 10];
    group.extend_from_slice(&[0, 11, 0, 5, 0, 0, 0, 1, 0xff, 0xff]);
    assert!(raw::closed_after(broker.kafka_addr(), &group));

    // The broker still answers, with exactly the apis it serves.
    let expected: Vec<(i16, i16, i16)> = fjord_broker::kafka::handler::KAFKA_APIS
        .iter()
        .map(|&(key, min, max)| (key as i16, min, max))
        .collect();
    for version in [0, 1, 2, 3] {
        assert_eq!(
            raw::api_versions(broker.kafka_addr(), version),
            (0, expected.clone())
        );
    }
    // An ApiVersions version we do not serve: UNSUPPORTED_VERSION at v0.
    assert_eq!(raw::api_versions(broker.kafka_addr(), 4), (35, expected));
}

/// The oldest served versions, spoken with `kafka-protocol`'s encoders:
/// CreateTopics v2, Metadata v1, Produce v3, Fetch v4, ListOffsets v1.
#[test]
fn oldest_versions_round_trip_with_kafka_protocol_encoders() {
    use bytes::Bytes;
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
    use kafka_protocol::records::{Compression, Record, RecordBatchDecoder};

    let broker = start();
    let mut stream = raw::connect(broker.kafka_addr());
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
    assert_eq!(meta.brokers[0].port, i32::from(broker.kafka_addr().port()));
    assert_eq!(meta.topics[0].error_code, 0);
    assert_eq!(meta.topics[0].partitions.len(), 2);

    let records: Vec<Record> = (0..5i64)
        .map(|i| {
            common::kafka::plain_record(
                i,
                1_700_000_000_000 + i,
                Some(Bytes::from(format!("k{i}"))),
                Some(Bytes::from(format!("v{i}"))),
            )
        })
        .collect();
    let encoded = common::kafka::encode_batch(&records, Compression::Lz4);
    let mut produce = ProduceRequest::default();
    produce.acks = -1;
    produce.timeout_ms = 10_000;
    let mut data = TopicProduceData::default();
    data.name = name.clone();
    let mut part = PartitionProduceData::default();
    part.index = 1;
    part.records = Some(encoded);
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

/// Every codec a Kafka producer may use (none, gzip, snappy, lz4, zstd)
/// is accepted, converted losslessly, and read back by rdkafka and by the
/// native protocol alike.
#[test]
fn every_compression_codec_round_trips() {
    use std::collections::BTreeSet;

    let broker = start();
    create_topic(&broker, "codecs");
    let mut sent = BTreeSet::new();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let producer: FutureProducer = client_config(&broker)
            .set("compression.type", codec)
            .set("linger.ms", "20")
            .set("acks", "all")
            .create()
            .expect("producer");
        let deliveries: Vec<_> = (0..100)
            .map(|i| {
                let key = format!("{codec}-key-{}", i % 5);
                // Compressible, so the codec really shrinks the batch.
                let value = format!("{codec}-value-{i}-{}", "x".repeat(200));
                sent.insert((key.clone().into_bytes(), value.clone().into_bytes()));
                let headers = OwnedHeaders::new().insert(Header {
                    key: "codec",
                    value: Some(codec.as_bytes()),
                });
                producer
                    .send_result(
                        FutureRecord::to("codecs")
                            .key(&key)
                            .payload(&value)
                            .headers(headers),
                    )
                    .map_err(|(e, _)| e)
                    .expect("queued")
            })
            .collect();
        for delivery in deliveries {
            futures_lite::future::block_on(delivery)
                .expect("delivery future")
                .unwrap_or_else(|(e, _)| panic!("{codec}: not acknowledged: {e}"));
        }
    }

    let seen = rdkafka_consume(&broker, "codecs", sent.len());
    let got: BTreeSet<(Vec<u8>, Vec<u8>)> = seen
        .iter()
        .map(|(_, k, v, _)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(got, sent, "rdkafka reads back every record once");
    for (_, key, _, headers) in &seen {
        let codec = String::from_utf8_lossy(key)
            .split('-')
            .next()
            .unwrap()
            .to_owned();
        assert_eq!(headers, &vec![("codec".to_owned(), codec.into_bytes())]);
    }

    let mut conn = broker.conn();
    let mut native = BTreeSet::new();
    for partition in 0..PARTITIONS as u32 {
        for (_, key, value) in conn.read_all("codecs", partition, 0) {
            native.insert((key.expect("key"), value.expect("value")));
        }
    }
    assert_eq!(native, sent, "the native protocol reads the same records");
}

/// A Kafka producer's batch is bounded by the topic's max.message.bytes
/// (as for native producers), not by a fixed edge limit: 2 MiB passes the
/// 4 MiB default, 6 MiB is MESSAGE_TOO_LARGE, and the broker carries on.
#[test]
fn batch_size_follows_max_message_bytes() {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};

    let broker = start();
    create_topic(&broker, "large");
    let producer: FutureProducer = client_config(&broker)
        .set("message.max.bytes", "16000000")
        .set("acks", "all")
        .create()
        .expect("producer");
    let send = |size: usize| {
        let value = vec![7u8; size];
        let delivery = producer
            .send_result(
                FutureRecord::<(), _>::to("large")
                    .partition(0)
                    .payload(&value),
            )
            .map_err(|(e, _)| e)
            .expect("queued");
        futures_lite::future::block_on(delivery)
            .expect("delivery future")
            .map_err(|(error, _)| error)
    };
    let first = send(2 << 20).expect("a 2 MiB record is accepted");
    assert_eq!((first.partition, first.offset), (0, 0));
    match send(6 << 20) {
        Err(KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)) => {}
        other => panic!("expected MESSAGE_TOO_LARGE, got {other:?}"),
    }
    let next = send(1024).expect("the broker carries on");
    assert_eq!(next.offset, 1);
    let records = broker.conn().read_all("large", 0, 0);
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].2.as_ref().map(Vec::len), Some(2 << 20));
}

/// Admin: create, describe (Metadata) and delete a topic; the name can be
/// used again afterwards.
#[test]
fn admin_creates_describes_and_deletes_topics() {
    let broker = start();
    let admin: AdminClient<DefaultClientContext> =
        client_config(&broker).create().expect("admin client");
    let options = AdminOptions::new().operation_timeout(Some(PATIENCE));
    create_topic(&broker, "short-lived");
    let metadata = admin
        .inner()
        .fetch_metadata(Some("short-lived"), PATIENCE)
        .expect("metadata");
    let topic = &metadata.topics()[0];
    assert_eq!(topic.name(), "short-lived");
    assert!(topic.error().is_none());
    assert_eq!(topic.partitions().len(), PARTITIONS as usize);
    for p in topic.partitions() {
        assert_eq!(p.leader(), metadata.orig_broker_id());
        assert_eq!(p.isr(), [metadata.orig_broker_id()]);
    }
    let deleted = futures_lite::future::block_on(admin.delete_topics(&["short-lived"], &options))
        .expect("delete_topics");
    assert_eq!(deleted, vec![Ok("short-lived".to_owned())]);
    let missing = futures_lite::future::block_on(admin.delete_topics(&["short-lived"], &options))
        .expect("delete_topics");
    assert!(
        matches!(
            &missing[0],
            Err((_, rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition))
        ),
        "{missing:?}"
    );
    let names: Vec<String> = admin
        .inner()
        .fetch_metadata(None, PATIENCE)
        .expect("metadata")
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .collect();
    assert!(!names.contains(&"short-lived".to_owned()), "{names:?}");
    create_topic(&broker, "short-lived");
}
