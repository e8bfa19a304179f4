//! Test harness for the data-path tests: starts the real `fjord` binary
//! on 127.0.0.1:0 with a temporary data dir, and speaks the native protocol
//! directly (flatbuffers bodies + `encode_frame`, batches from
//! `BatchBuilder`), independent of the client library. No timing
//! assertions: timeouts only keep a broken broker from hanging the suite.

#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use fjord_schema::api::{decode_response, ApiKey, Response};
use fjord_schema::batch::{BatchBuilder, BatchOptions, BatchView, RecordInput};
use fjord_schema::frame::{encode_frame, Frame, FrameDecoder, FrameFlags};
use fjord_schema::{wire, CorrelationId, ErrorCode, ProducerEpoch, ProducerId, Sequence};
use flatbuffers::FlatBufferBuilder;
use tempfile::TempDir;

pub mod cluster;
pub mod kafka;
pub mod pressure;
pub mod script;

/// Generous bound for anything the broker must do; only prevents hangs.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// Small segment preparation so tests do not zero-fill 32 MiB per
/// partition; long-poll bound above any wait a test uses.
const ENV: [(&str, &str); 3] = [
    ("FJORD_LOG_PREPARE_STEP_BYTES", "262144"),
    ("FJORD_LOG_PREPARE_AHEAD_BYTES", "524288"),
    ("FJORD_FETCH_WAIT_MS_MAX", "600000"),
];

pub struct Broker {
    pub child: Child,
    pub dir: TempDir,
    pub addr: SocketAddr,
    pub args: Vec<String>,
}

impl Broker {
    pub fn start(args: &[&str]) -> Broker {
        Broker::start_with_data_in(None, args)
    }

    /// As [`Broker::start`], with the data dir at `data` (e.g. on a small
    /// filesystem a test mounted; it must not exist yet) while the
    /// broker's log stays in the temporary directory, so it survives that
    /// filesystem filling up.
    pub fn start_with_data_in(data: Option<&Path>, args: &[&str]) -> Broker {
        let dir = tempfile::Builder::new()
            .prefix("fjord-data-path")
            .tempdir_in(std::env::temp_dir())
            .expect("tempdir");
        if let Some(data) = data {
            std::fs::create_dir(data).expect("data dir");
            std::os::unix::fs::symlink(data, dir.path().join("data")).expect("data dir link");
        }
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        let child = spawn(dir.path(), &args);
        let mut broker = Broker {
            child,
            dir,
            addr: "127.0.0.1:1".parse().expect("literal"),
            args,
        };
        broker.addr = broker.wait_addr();
        broker
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("fjord.log")).unwrap_or_default()
    }

    fn wait_addr(&mut self) -> SocketAddr {
        self.try_wait_addr()
            .unwrap_or_else(|logs| panic!("fjord exited: {logs}"))
    }

    /// The broker's address once it serves; its logs if it exited.
    fn try_wait_addr(&mut self) -> Result<SocketAddr, String> {
        let addr_file = self.data_dir().join("broker.addr");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(text) = std::fs::read_to_string(&addr_file) {
                if let Ok(addr) = text.trim().parse() {
                    return Ok(addr);
                }
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Err(format!("exit {status}: {}", self.logs()));
            }
            assert!(
                Instant::now() < deadline,
                "fjord did not start: {}",
                self.logs()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, then start again on the same data dir.
    pub fn kill_and_restart(&mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
        self.restart();
    }

    /// SIGKILL, reap, and start again at once on the same data dir and
    /// ports, as a supervisor with no restart delay does: no second try.
    /// The new broker's logs if it did not come up.
    pub fn kill_and_restart_at_once(&mut self) -> Result<(), String> {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
        let _ = std::fs::remove_file(self.data_dir().join("broker.addr"));
        self.child = spawn(self.dir.path(), &self.args);
        self.addr = self.try_wait_addr()?;
        Ok(())
    }

    /// SIGTERM (clean shutdown), then start again on the same data dir.
    pub fn terminate_and_restart(&mut self) {
        let status = self.terminate();
        assert!(status.success(), "unclean exit {status}: {}", self.logs());
        self.restart();
    }

    /// Starts again on the same data dir (after `terminate` or a kill).
    pub fn restart(&mut self) {
        // A killed broker leaves its address file behind.
        let _ = std::fs::remove_file(self.data_dir().join("broker.addr"));
        let log = self.dir.path().join("fjord.log");
        let previous = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::write(self.dir.path().join("fjord.previous.log"), previous);
        self.child = spawn(self.dir.path(), &self.args);
        // A pinned port may be taken for a moment by another process's
        // outgoing connection while the broker is down: try again.
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.try_wait_addr() {
                Ok(addr) => {
                    self.addr = addr;
                    return;
                }
                Err(logs) if logs.contains("already in use") && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(200));
                    self.child = spawn(self.dir.path(), &self.args);
                }
                Err(logs) => panic!("fjord did not restart: {logs}"),
            }
        }
    }

    pub fn terminate(&mut self) -> ExitStatus {
        // SAFETY: kill(2) on a child we spawned and have not reaped.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill failed");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "fjord did not exit");
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn assert_running(&mut self) {
        assert!(
            self.child.try_wait().expect("try_wait").is_none(),
            "fjord died: {}",
            self.logs()
        );
    }

    /// A free port below the ephemeral range (so no outgoing connection
    /// takes it while a broker pinned to it restarts).
    pub fn free_fixed_port() -> u16 {
        let seed = std::process::id() as u64 * 7919
            + std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .subsec_nanos() as u64;
        (0..1000u64)
            .map(|i| 20_000 + ((seed + i * 104_729) % 12_000) as u16)
            .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
            .expect("a free port in 20000..32000")
    }

    /// The Kafka listener's address (written before `broker.addr`, so
    /// current once `start` / `*_restart` returned).
    pub fn kafka_addr(&self) -> SocketAddr {
        let text = std::fs::read_to_string(self.data_dir().join("kafka.addr")).expect("kafka.addr");
        text.trim().parse().expect("kafka.addr holds an address")
    }

    pub fn conn(&self) -> Conn {
        Conn::connect(self.addr)
    }

    /// A connection to `shard`'s own port (from Metadata).
    pub fn shard_conn(&self, shard: u16) -> Conn {
        let meta = self.conn().metadata(Some(&[]));
        let port = meta.shard_ports[usize::from(shard)];
        Conn::connect(SocketAddr::new(self.addr.ip(), port))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("fjord log:\n{}", self.logs());
        }
    }
}

fn spawn(root: &Path, args: &[String]) -> Child {
    let log = File::options()
        .create(true)
        .append(true)
        .open(root.join("fjord.log"))
        .expect("log file");
    let mut listeners = Vec::new();
    for flag in ["--listen", "--kafka-listen"] {
        // Port 0 unless the test pins one (a restart keeping its port).
        if !args.iter().any(|a| a == flag) {
            listeners.extend([flag, "127.0.0.1:0"]);
        }
    }
    Command::new(env!("CARGO_BIN_EXE_fjord"))
        .arg("start")
        .arg("--data-dir")
        .arg(root.join("data"))
        .args(listeners)
        .args(args)
        .envs(ENV)
        .env("FJORD_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn fjord")
}

/// A produce's answer for one partition.
#[derive(Debug)]
pub struct ProduceOutcome {
    pub error: ErrorCode,
    pub message: Option<String>,
    pub base_offset: i64,
}

/// One native-protocol connection.
pub struct Conn {
    pub stream: TcpStream,
    decoder: FrameDecoder,
    buffer: BytesMut,
    next_cid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub error: ErrorCode,
    /// (partition, leader shard)
    pub partitions: Vec<(u32, u16)>,
    pub is_internal: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataInfo {
    pub shard_ports: Vec<u16>,
    pub topics: Vec<TopicInfo>,
}

/// One record read back: offset, key, value.
pub type Record = (u64, Option<Vec<u8>>, Option<Vec<u8>>);

#[derive(Debug, Clone)]
pub struct FetchedPartition {
    pub error: ErrorCode,
    pub high_watermark: i64,
    pub log_start: i64,
    /// Records at or after the fetch offset, CRC-verified.
    pub records: Vec<Record>,
    pub bytes: usize,
    /// The batches as served.
    pub batches: Vec<u8>,
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> Conn {
        Conn::from_stream(TcpStream::connect_timeout(&addr, PATIENCE).expect("connect"))
    }

    /// A connection over an already connected stream (e.g. one bound to a
    /// chosen source address).
    pub fn from_stream(stream: TcpStream) -> Conn {
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        stream.set_write_timeout(Some(PATIENCE)).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Conn {
            stream,
            decoder: FrameDecoder::new(1 << 30),
            buffer: BytesMut::new(),
            next_cid: 1,
        }
    }

    /// Sends a request frame; returns its correlation id.
    pub fn send(
        &mut self,
        api: ApiKey,
        version: u16,
        flags: u16,
        body: &[u8],
        payload: &[u8],
    ) -> u32 {
        let cid = self.next_cid;
        self.next_cid += 1;
        let mut out = BytesMut::new();
        encode_frame(
            &mut out,
            api as u16,
            version,
            FrameFlags(flags),
            CorrelationId(cid),
            body,
            payload,
        );
        self.stream.write_all(&out).expect("write request");
        cid
    }

    pub fn try_receive(&mut self) -> std::io::Result<Frame> {
        loop {
            if let Some(frame) = self
                .decoder
                .decode(&mut self.buffer)
                .expect("well-formed response")
            {
                return Ok(frame);
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }

    pub fn receive(&mut self, cid: u32) -> Frame {
        let frame = self.try_receive().expect("response");
        assert_eq!(
            frame.header.correlation_id(),
            CorrelationId(cid),
            "responses in order"
        );
        frame
    }

    pub fn call(&mut self, api: ApiKey, body: &[u8], payload: &[u8]) -> Frame {
        let cid = self.send(api, 0, 0, body, payload);
        self.receive(cid)
    }

    pub fn metadata(&mut self, topics: Option<&[&str]>) -> MetadataInfo {
        let mut fbb = FlatBufferBuilder::new();
        let topics = topics.map(|t| {
            let names: Vec<_> = t.iter().map(|n| fbb.create_string(n)).collect();
            fbb.create_vector(&names)
        });
        let root = wire::MetadataRequest::create(
            &mut fbb,
            &wire::MetadataRequestArgs {
                topics,
                allow_auto_topic_creation: false,
            },
        );
        fbb.finish(root, None);
        let frame = self.call(ApiKey::Metadata, fbb.finished_data(), &[]);
        let Ok(Response::Metadata(m)) = decode_response(&frame) else {
            panic!("not a metadata response");
        };
        let broker = m.brokers().expect("brokers").get(0);
        MetadataInfo {
            shard_ports: broker.shard_ports().iter().flatten().collect(),
            topics: m
                .topics()
                .iter()
                .flatten()
                .map(|t| TopicInfo {
                    name: t.name().to_owned(),
                    error: ErrorCode::from_code(t.error_code()),
                    partitions: t
                        .partitions()
                        .iter()
                        .flatten()
                        .map(|p| (p.partition(), p.leader_shard()))
                        .collect(),
                    is_internal: t.is_internal(),
                })
                .collect(),
        }
    }

    pub fn create_topic(
        &mut self,
        name: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) -> ErrorCode {
        let mut fbb = FlatBufferBuilder::new();
        let configs: Vec<_> = configs
            .iter()
            .map(|(k, v)| {
                let key = fbb.create_string(k);
                let value = fbb.create_string(v);
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
        let name = fbb.create_string(name);
        let topic = wire::CreatableTopic::create(
            &mut fbb,
            &wire::CreatableTopicArgs {
                name: Some(name),
                num_partitions: partitions,
                replication_factor: -1,
                configs: Some(configs),
            },
        );
        let topics = fbb.create_vector(&[topic]);
        let root = wire::CreateTopicsRequest::create(
            &mut fbb,
            &wire::CreateTopicsRequestArgs {
                topics: Some(topics),
                timeout_ms: 10_000,
                validate_only: false,
            },
        );
        fbb.finish(root, None);
        let frame = self.call(ApiKey::CreateTopics, fbb.finished_data(), &[]);
        let Ok(Response::CreateTopics(r)) = decode_response(&frame) else {
            panic!("not a CreateTopics response");
        };
        ErrorCode::from_code(r.topics().expect("topics").get(0).error_code())
    }

    pub fn delete_topic(&mut self, name: &str) -> ErrorCode {
        let body = fjord_net::client::protocol::encode_delete_topics(&[name], 10_000);
        let frame = self.call(ApiKey::DeleteTopics, &body, &[]);
        let Ok(Response::DeleteTopics(r)) = decode_response(&frame) else {
            panic!("not a DeleteTopics response");
        };
        ErrorCode::from_code(r.topics().expect("topics").get(0).error_code())
    }

    /// Produce body for one partition whose batches fill the whole payload.
    pub fn produce_body(topic: &str, partition: u32, records_len: usize, acks: i8) -> Vec<u8> {
        Conn::produce_body_within(topic, partition, records_len, acks, 30_000)
    }

    /// [`Conn::produce_body`] with the request's `timeout_ms`.
    pub fn produce_body_within(
        topic: &str,
        partition: u32,
        records_len: usize,
        acks: i8,
        timeout_ms: u32,
    ) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::new();
        let slice = wire::PayloadSlice::new(0, records_len as u32);
        let part = wire::PartitionProduceData::create(
            &mut fbb,
            &wire::PartitionProduceDataArgs {
                partition,
                records: Some(&slice),
            },
        );
        let parts = fbb.create_vector(&[part]);
        let name = fbb.create_string(topic);
        let topic = wire::TopicProduceData::create(
            &mut fbb,
            &wire::TopicProduceDataArgs {
                name: Some(name),
                partitions: Some(parts),
            },
        );
        let topics = fbb.create_vector(&[topic]);
        let root = wire::ProduceRequest::create(
            &mut fbb,
            &wire::ProduceRequestArgs {
                transactional_id: None,
                acks: wire::Acks(acks),
                timeout_ms,
                topics: Some(topics),
            },
        );
        fbb.finish(root, None);
        fbb.finished_data().to_vec()
    }

    /// Produces `records` (whole batches) to one partition; returns the
    /// error and base offset. `acks = 0` sends NO_RESPONSE and returns
    /// `(None, -1)` without waiting.
    pub fn try_produce(
        &mut self,
        topic: &str,
        partition: u32,
        records: &[u8],
        acks: i8,
    ) -> std::io::Result<(ErrorCode, i64)> {
        if acks == 0 {
            let body = Conn::produce_body(topic, partition, records.len(), acks);
            self.send(ApiKey::Produce, 0, FrameFlags::NO_RESPONSE, &body, records);
            return Ok((ErrorCode::None, -1));
        }
        let outcome = self.produce_outcome(topic, partition, records, acks)?;
        Ok((outcome.error, outcome.base_offset))
    }

    /// Produces `records` (acks 1 or -1); the partition's answer with the
    /// broker's error message.
    pub fn produce_outcome(
        &mut self,
        topic: &str,
        partition: u32,
        records: &[u8],
        acks: i8,
    ) -> std::io::Result<ProduceOutcome> {
        self.produce_outcome_within(topic, partition, records, acks, 30_000)
    }

    /// [`Conn::produce_outcome`] with the request's `timeout_ms` (how long
    /// the broker waits for acks=all, or for a log in write fault).
    pub fn produce_outcome_within(
        &mut self,
        topic: &str,
        partition: u32,
        records: &[u8],
        acks: i8,
        timeout_ms: u32,
    ) -> std::io::Result<ProduceOutcome> {
        assert_ne!(acks, 0, "acks=0 has no answer");
        let body = Conn::produce_body_within(topic, partition, records.len(), acks, timeout_ms);
        let cid = self.send(ApiKey::Produce, 0, 0, &body, records);
        let frame = self.try_receive()?;
        assert_eq!(frame.header.correlation_id(), CorrelationId(cid));
        let Ok(Response::Produce(r)) = decode_response(&frame) else {
            panic!("not a produce response: {frame:?}");
        };
        let p = r
            .topics()
            .expect("topics")
            .get(0)
            .partitions()
            .expect("partitions")
            .get(0);
        Ok(ProduceOutcome {
            error: ErrorCode::from_code(p.error_code()),
            message: p.error_message().map(str::to_owned),
            base_offset: p.base_offset(),
        })
    }

    pub fn produce(
        &mut self,
        topic: &str,
        partition: u32,
        records: &[u8],
        acks: i8,
    ) -> (ErrorCode, i64) {
        self.try_produce(topic, partition, records, acks)
            .expect("produce response")
    }

    /// Fetches several partitions of one topic in one request.
    pub fn fetch_many(
        &mut self,
        topic: &str,
        partitions: &[(u32, i64)],
        max_wait_ms: u32,
        min_bytes: u32,
        max_bytes: u32,
    ) -> Vec<FetchedPartition> {
        let mut fbb = FlatBufferBuilder::new();
        let parts: Vec<_> = partitions
            .iter()
            .map(|(partition, offset)| {
                wire::FetchPartition::create(
                    &mut fbb,
                    &wire::FetchPartitionArgs {
                        partition: *partition,
                        fetch_offset: *offset,
                        current_leader_epoch: -1,
                        log_start_offset: -1,
                        partition_max_bytes: 1 << 20,
                    },
                )
            })
            .collect();
        let parts = fbb.create_vector(&parts);
        let name = fbb.create_string(topic);
        let t = wire::FetchTopic::create(
            &mut fbb,
            &wire::FetchTopicArgs {
                name: Some(name),
                partitions: Some(parts),
            },
        );
        let topics = fbb.create_vector(&[t]);
        let root = wire::FetchRequest::create(
            &mut fbb,
            &wire::FetchRequestArgs {
                replica_id: -1,
                max_wait_ms,
                min_bytes,
                max_bytes,
                isolation_level: wire::IsolationLevel::ReadUncommitted,
                topics: Some(topics),
            },
        );
        fbb.finish(root, None);
        let frame = self.call(ApiKey::Fetch, fbb.finished_data(), &[]);
        let Ok(Response::Fetch(r)) = decode_response(&frame) else {
            panic!("not a fetch response: {frame:?}");
        };
        let topic = r.topics().expect("topics").get(0);
        topic
            .partitions()
            .iter()
            .flatten()
            .zip(partitions)
            .map(|(p, (_, offset))| {
                let bytes = fjord_schema::api::payload_slice(&frame.payload, p.records());
                FetchedPartition {
                    error: ErrorCode::from_code(p.error_code()),
                    high_watermark: p.high_watermark(),
                    log_start: p.log_start_offset(),
                    records: records_from(bytes, *offset),
                    bytes: bytes.len(),
                    batches: bytes.to_vec(),
                }
            })
            .collect()
    }

    pub fn fetch(
        &mut self,
        topic: &str,
        partition: u32,
        offset: i64,
        max_wait_ms: u32,
        min_bytes: u32,
    ) -> FetchedPartition {
        self.fetch_many(
            topic,
            &[(partition, offset)],
            max_wait_ms,
            min_bytes,
            1 << 20,
        )
        .pop()
        .expect("one partition")
    }

    /// Every record of a partition from `offset` to the high watermark.
    pub fn read_all(&mut self, topic: &str, partition: u32, mut offset: i64) -> Vec<Record> {
        let mut all = Vec::new();
        loop {
            let part = self.fetch(topic, partition, offset, 0, 1);
            assert_eq!(
                part.error,
                ErrorCode::None,
                "fetch {topic}-{partition}@{offset}"
            );
            if let Some((last, _, _)) = part.records.last() {
                offset = *last as i64 + 1;
            }
            all.extend(part.records);
            if offset >= part.high_watermark {
                return all;
            }
        }
    }

    pub fn list_offset(&mut self, topic: &str, partition: u32, timestamp: i64) -> (ErrorCode, i64) {
        let body = fjord_net::client::protocol::encode_list_offsets(
            topic,
            &[(fjord_schema::PartitionId(partition), timestamp)],
        );
        let frame = self.call(ApiKey::ListOffsets, &body, &[]);
        let Ok(Response::ListOffsets(r)) = decode_response(&frame) else {
            panic!("not a list offsets response");
        };
        let p = r
            .topics()
            .expect("topics")
            .get(0)
            .partitions()
            .expect("partitions")
            .get(0);
        (ErrorCode::from_code(p.error_code()), p.offset())
    }
}

/// One batch of `(key, value)` records with timestamps from `timestamp`.
pub fn batch(records: &[(&[u8], &[u8])], timestamp: i64) -> Bytes {
    let mut builder = BatchBuilder::new(BatchOptions::default());
    for (i, (key, value)) in records.iter().enumerate() {
        builder.push(RecordInput {
            key: Some(key),
            value: Some(value),
            timestamp: timestamp + i as i64,
            ..RecordInput::default()
        });
    }
    builder.finish().expect("valid batch")
}

/// Records of CRC-verified batches at or after `offset`.
pub fn records_from(bytes: &[u8], offset: i64) -> Vec<Record> {
    let mut out = Vec::new();
    let mut scratch = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (view, tail) = BatchView::parse(rest).expect("fetched batch verifies (CRC)");
        let records = view.records(&mut scratch, 1 << 24).expect("records verify");
        for r in records.iter() {
            if r.offset.get() as i64 >= offset {
                out.push((
                    r.offset.get(),
                    r.key().map(<[u8]>::to_vec),
                    r.value().map(<[u8]>::to_vec),
                ));
            }
        }
        rest = tail;
    }
    out
}

/// A batch of an idempotent producer: `values` with sequences from
/// `first_seq`, timestamped now.
pub fn idempotent_batch(id: i64, epoch: i16, first_seq: i32, values: &[&str]) -> Bytes {
    let mut builder = BatchBuilder::new(BatchOptions {
        producer_id: ProducerId(id),
        producer_epoch: ProducerEpoch(epoch),
        base_sequence: Sequence(first_seq),
        ..BatchOptions::default()
    });
    for (i, value) in values.iter().enumerate() {
        builder.push(RecordInput {
            value: Some(value.as_bytes()),
            // Now: producer state expires by the batches' timestamps.
            timestamp: now_ms() + i as i64,
            ..RecordInput::default()
        });
    }
    builder.finish().expect("valid batch")
}

/// Wall-clock milliseconds.
pub fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    i64::try_from(since.as_millis()).expect("in range")
}

/// The code of an ERROR frame's `ErrorResponse` body (decoded directly: an
/// error for an unsupported version carries that version in its header).
pub fn error_response(frame: &Frame) -> ErrorCode {
    assert!(frame.header.flags().is_error(), "expected an ERROR frame");
    let body = flatbuffers::root::<wire::ErrorResponse>(&frame.body).expect("ErrorResponse body");
    ErrorCode::from_code(body.error_code())
}
