//! The native client library and the `fjord topic/produce/consume`
//! subcommands against a real `fjord` broker (2 shards, per-shard ports).
//! No timing assertions: deadlines only keep a broken broker from hanging
//! the suite.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use fjord_net::client::admin::Admin;
use fjord_net::client::consumer::{Consumer, ConsumerOptions, ConsumerRecord, OffsetReset, SeekTo};
use fjord_net::client::partitioner::partition_for_key;
use fjord_net::client::producer::{Producer, ProducerOptions, ProducerRecord};
use fjord_net::client::protocol::{Acks, NewTopic};
use fjord_net::client::ClientConfig;
use fjord_schema::{Compression, Offset, PartitionId};
use tempfile::TempDir;

/// Generous bound for anything the broker must do; only prevents hangs.
const PATIENCE: Duration = Duration::from_secs(60);

struct Broker {
    child: Child,
    dir: TempDir,
    addr: SocketAddr,
}

impl Broker {
    fn start() -> Broker {
        Broker::start_with_data_dir(true)
    }

    /// Without `--data-dir` the broker uses its default, the relative
    /// `./fjord-data`, in a temporary working directory.
    fn start_with_data_dir(explicit: bool) -> Broker {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = File::create(dir.path().join("fjord.log")).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_fjord"));
        command.current_dir(dir.path()).arg("start");
        let data = if explicit {
            let data = dir.path().join("data");
            command.arg("--data-dir").arg(&data);
            data
        } else {
            dir.path().join("fjord-data")
        };
        let mut child = command
            .args([
                "--listen",
                "127.0.0.1:0",
                "--kafka-listen",
                "127.0.0.1:0",
                "--shards",
                "2",
            ])
            .env("FJORD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn fjord");
        let deadline = Instant::now() + PATIENCE;
        let addr = loop {
            if let Ok(text) = std::fs::read_to_string(data.join("broker.addr")) {
                if let Ok(addr) = text.trim().parse() {
                    break addr;
                }
            }
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!("fjord exited with {status}: {}", logs(dir.path()));
            }
            assert!(Instant::now() < deadline, "fjord did not start");
            thread::sleep(Duration::from_millis(20));
        };
        Broker { child, dir, addr }
    }

    fn brokers(&self) -> String {
        self.addr.to_string()
    }

    fn admin(&self) -> Admin {
        Admin::connect(&self.brokers(), ClientConfig::default()).expect("admin connects")
    }

    fn create_topic(&self, name: &str, partitions: u32) {
        self.admin()
            .create_topic(NewTopic {
                name: name.into(),
                partitions: Some(partitions),
                replication_factor: None,
                configs: vec![],
            })
            .expect("topic created");
    }

    fn producer(&self, acks: Acks, compression: Compression) -> Producer {
        let mut options = ProducerOptions::new(self.brokers());
        options.producer.acks = acks;
        options.producer.accumulator.compression = compression;
        options.producer.accumulator.linger = Duration::from_millis(2);
        options.producer.accumulator.batch_size_bytes = 4 * 1024;
        Producer::new(options).expect("producer connects")
    }

    fn consumer(&self, topic: &str, partitions: &[PartitionId]) -> Consumer {
        let mut consumer =
            Consumer::new(ConsumerOptions::new(self.brokers())).expect("consumer connects");
        consumer.assign(topic, partitions);
        consumer
    }

    fn fjord(&self, args: &[&str], stdin: &[u8]) -> Output {
        run_fjord(args, stdin, &[("FJORD_BROKERS", &self.brokers())])
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("broker log:\n{}", logs(self.dir.path()));
        }
    }
}

fn logs(root: &Path) -> String {
    std::fs::read_to_string(root.join("fjord.log")).unwrap_or_default()
}

fn fjord_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fjord"))
}

/// Runs `fjord` with `stdin`, killing it if it outlives PATIENCE.
fn run_fjord(args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(fjord_bin());
    command
        .args(args)
        .env_remove("FJORD_BROKERS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("spawn fjord");
    let mut input = child.stdin.take().expect("stdin");
    let stdin = stdin.to_vec();
    let writer = thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("fjord {args:?} did not finish");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let _ = writer.join();
    Output {
        status,
        stdout: out_reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}): {}",
        output.status,
        text(&output.stderr)
    );
}

/// Polls until `count` records arrived (or PATIENCE passed, a failure).
fn consume(consumer: &mut Consumer, count: usize) -> Vec<ConsumerRecord> {
    let deadline = Instant::now() + PATIENCE;
    let mut records = Vec::new();
    while records.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} records arrived",
            records.len()
        );
        records.extend(consumer.poll(Duration::from_millis(500)).expect("poll"));
    }
    records
}

fn all_partitions(count: u32) -> Vec<PartitionId> {
    (0..count).map(PartitionId).collect()
}

#[test]
fn keyed_records_round_trip_in_order_across_partitions() {
    let broker = Broker::start();
    let partitions = 6;
    broker.create_topic("keyed", partitions);
    let producer = broker.producer(Acks::All, Compression::None);

    let keys: Vec<String> = (0..12).map(|k| format!("user-{k}")).collect();
    let mut handles = Vec::new();
    for seq in 0..40 {
        for key in &keys {
            let value = format!("{key}#{seq}");
            let handle = producer
                .send(ProducerRecord::new(
                    "keyed",
                    Some(key.as_bytes()),
                    value.as_bytes(),
                ))
                .expect("accepted");
            handles.push((key.clone(), value, handle));
        }
    }
    producer.flush();

    let mut acked: HashMap<String, (PartitionId, Offset)> = HashMap::new();
    let mut last_offset: BTreeMap<PartitionId, Offset> = BTreeMap::new();
    for (key, value, handle) in &handles {
        let meta = handle.wait().expect("acknowledged");
        // Same key, same partition: Kafka's murmur2 mapping.
        assert_eq!(
            meta.partition,
            partition_for_key(key.as_bytes(), partitions)
        );
        let offset = meta.offset.expect("acks=all reports the offset");
        if let Some(previous) = last_offset.insert(meta.partition, offset) {
            assert!(offset > previous, "offsets grow in send order");
        }
        acked.insert(value.clone(), (meta.partition, offset));
    }
    producer.close();

    let mut consumer = broker.consumer("keyed", &all_partitions(partitions));
    let records = consume(&mut consumer, handles.len());
    assert_eq!(records.len(), handles.len());
    let mut next_seq: HashMap<String, u32> = HashMap::new();
    for record in &records {
        let key = text(record.key.as_deref().expect("keyed"));
        let value = text(record.value.as_deref().expect("value"));
        assert_eq!(acked[&value], (record.partition, record.offset));
        let seq: u32 = value
            .rsplit('#')
            .next()
            .and_then(|s| s.parse().ok())
            .expect("value ends with #seq");
        let expected = next_seq.entry(key.clone()).or_insert(0);
        assert_eq!(seq, *expected, "{key}: records in the order sent");
        *expected += 1;
    }
    for partition in all_partitions(partitions) {
        let end = last_offset.get(&partition).map_or(Offset(0), |o| o.plus(1));
        assert_eq!(consumer.position("keyed", partition), Some(end));
    }
}

#[test]
fn every_codec_and_acks_level_round_trips() {
    let broker = Broker::start();
    broker.create_topic("codecs", 2);
    let mut sent = BTreeSet::new();
    for compression in Compression::ALL {
        for acks in [Acks::None, Acks::Leader, Acks::All] {
            let producer = broker.producer(acks, compression);
            let mut handles = Vec::new();
            for i in 0..50 {
                let value = format!("{}-{acks:?}-{i}-{}", compression.name(), "x".repeat(i));
                handles.push(
                    producer
                        .send(ProducerRecord::new("codecs", None, value.as_bytes()))
                        .expect("accepted"),
                );
                sent.insert(value);
            }
            producer.flush();
            for handle in handles {
                let meta = handle.wait().expect("written");
                assert_eq!(meta.offset.is_none(), acks == Acks::None, "{acks:?}");
            }
            producer.close();
        }
    }
    let mut consumer = broker.consumer("codecs", &all_partitions(2));
    let records = consume(&mut consumer, sent.len());
    let received: BTreeSet<String> = records
        .iter()
        .map(|r| text(r.value.as_deref().expect("value")))
        .collect();
    assert_eq!(records.len(), sent.len(), "no duplicates");
    assert_eq!(received, sent);
}

#[test]
fn consumer_seeks_and_resets_out_of_range_offsets() {
    let broker = Broker::start();
    broker.create_topic("seek", 1);
    let producer = broker.producer(Acks::Leader, Compression::Lz4);
    for i in 0..10 {
        producer
            .send(ProducerRecord {
                partition: Some(PartitionId(0)),
                ..ProducerRecord::new("seek", None, format!("v{i}").as_bytes())
            })
            .expect("accepted");
    }
    producer.close();
    let p0 = PartitionId(0);

    let mut consumer = broker.consumer("seek", &[p0]);
    consumer
        .seek("seek", p0, SeekTo::Offset(Offset(7)))
        .expect("assigned");
    let records = consume(&mut consumer, 3);
    let offsets: Vec<u64> = records.iter().map(|r| r.offset.0).collect();
    assert_eq!(
        offsets,
        [7, 8, 9],
        "starts inside the batch at the position"
    );

    // Past the end: OFFSET_OUT_OF_RANGE, reset to earliest.
    consumer
        .seek("seek", p0, SeekTo::Offset(Offset(1_000)))
        .expect("assigned");
    let records = consume(&mut consumer, 10);
    assert_eq!(records[0].offset, Offset(0));
    assert_eq!(text(records[0].value.as_deref().expect("value")), "v0");

    // Latest resolves to the log end.
    let mut latest = broker.consumer("seek", &[p0]);
    latest.seek("seek", p0, SeekTo::Latest).expect("assigned");
    assert!(latest
        .poll(Duration::from_millis(200))
        .expect("poll")
        .is_empty());
    assert_eq!(latest.position("seek", p0), Some(Offset(10)));

    // With reset "none", out of range is an error.
    let mut options = ConsumerOptions::new(broker.brokers());
    options.consumer.auto_offset_reset = OffsetReset::None;
    let mut strict = Consumer::new(options).expect("connects");
    strict.assign("seek", &[p0]);
    strict
        .seek("seek", p0, SeekTo::Offset(Offset(1_000)))
        .expect("assigned");
    let deadline = Instant::now() + PATIENCE;
    let error = loop {
        match strict.poll(Duration::from_millis(200)) {
            Err(error) => break error,
            Ok(records) => assert!(records.is_empty()),
        }
        assert!(Instant::now() < deadline, "no out-of-range error");
    };
    assert!(error.to_string().contains("out of range"), "{error}");
}

#[test]
fn cli_topic_create_list_describe_delete() {
    let broker = Broker::start();
    let created = broker.fjord(
        &[
            "topic",
            "create",
            "events",
            "--partitions",
            "3",
            "--config",
            "retention.ms=3600000",
        ],
        b"",
    );
    assert_success(&created, "topic create");
    assert_eq!(
        text(&created.stdout),
        "created topic events (3 partitions)\n"
    );

    let again = broker.fjord(&["topic", "create", "events", "--partitions", "3"], b"");
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).starts_with("fjord: topic events already exists"),
        "{}",
        text(&again.stderr)
    );

    let list = broker.fjord(&["topic", "list"], b"");
    assert_success(&list, "topic list");
    let rows: Vec<Vec<String>> = text(&list.stdout)
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    assert_eq!(rows[0], ["NAME", "PARTITIONS"]);
    assert!(
        rows.contains(&vec!["events".to_owned(), "3".to_owned()]),
        "{rows:?}"
    );

    let describe = broker.fjord(&["topic", "describe", "events"], b"");
    assert_success(&describe, "topic describe");
    let out = text(&describe.stdout);
    let partition_rows: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("PARTITION "))
        .skip(1)
        .collect();
    assert_eq!(partition_rows.len(), 3, "{out}");
    assert!(
        out.lines().any(|l| l.split_whitespace().eq([
            "PARTITION",
            "LEADER",
            "EPOCH",
            "REPLICAS",
            "ISR",
            "LOG-END",
            "HW",
            "LAG",
            "SHARD",
            "ENDPOINT",
            "ERROR"
        ])),
        "{out}"
    );
    for (i, row) in partition_rows.iter().enumerate() {
        assert!(row.starts_with(&i.to_string()), "{row}");
        assert!(row.contains("127.0.0.1:"), "{row}");
        // Empty, one replica: log end and HW 0, no followers to lag.
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[5..8], ["0", "0", "-"], "{row}");
    }

    let delete = broker.fjord(&["topic", "delete", "events"], b"");
    assert_success(&delete, "topic delete");
    assert_eq!(text(&delete.stdout), "deleted topic events\n");
    let gone = broker.fjord(&["topic", "describe", "events"], b"");
    assert!(!gone.status.success());
    assert_eq!(text(&gone.stderr), "fjord: topic events does not exist\n");
}

#[test]
fn cli_produce_from_stdin_and_consume_with_count() {
    let broker = Broker::start();
    let create = broker.fjord(&["topic", "create", "lines", "--partitions", "4"], b"");
    assert_success(&create, "topic create");

    let mut input = String::new();
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in 0..60 {
        let key = format!("k{}", i % 5);
        let value = format!("value {i}: has spaces, and a : colon");
        input.push_str(&format!("{key}\t{value}\n"));
        expected.entry(key).or_default().push(value);
    }
    let produced = broker.fjord(
        &[
            "produce",
            "lines",
            "--key-separator",
            "\t",
            "--acks",
            "1",
            "--compression",
            "zstd",
        ],
        input.as_bytes(),
    );
    assert_success(&produced, "produce");

    let consumed = broker.fjord(
        &["consume", "lines", "--count", "60", "--format", "%p|%k|%v"],
        b"",
    );
    assert_success(&consumed, "consume");
    let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text(&consumed.stdout).lines() {
        let mut fields = line.splitn(3, '|');
        let partition: u32 = fields
            .next()
            .and_then(|p| p.parse().ok())
            .expect("partition");
        let key = fields.next().expect("key").to_owned();
        let value = fields.next().expect("value").to_owned();
        assert_eq!(PartitionId(partition), partition_for_key(key.as_bytes(), 4));
        got.entry(key).or_default().push(value);
    }
    assert_eq!(got, expected, "every line once, in order per key");

    // Default format: the value alone; --partition and --from an offset.
    let one = broker.fjord(
        &[
            "consume",
            "lines",
            "--partition",
            "0",
            "--from",
            "0",
            "--count",
            "1",
        ],
        b"",
    );
    assert_success(&one, "consume --partition");
    assert_eq!(text(&one.stdout).lines().count(), 1);

    let json = broker.fjord(
        &["consume", "lines", "--count", "1", "--format", "json"],
        b"",
    );
    assert_success(&json, "consume --format json");
    let line = text(&json.stdout);
    assert!(
        line.starts_with("{\"topic\":\"lines\",\"partition\":"),
        "{line}"
    );
    assert!(line.contains("\"key\":\"k"), "{line}");

    // Like `kcat -P`, producing creates a topic that does not exist yet
    // (auto_create_topics is on by default); internal topics never are.
    let fresh = broker.fjord(&["produce", "fresh"], b"x\n");
    assert_success(&fresh, "produce to a new topic");
    let missing = broker.fjord(&["produce", "__transaction_state"], b"x\n");
    assert!(!missing.status.success());
    assert_eq!(
        text(&missing.stderr),
        "fjord: topic __transaction_state does not exist\n"
    );
}

#[test]
fn cli_without_a_broker_says_how_to_start_one() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let addr = format!("127.0.0.1:{port}");
    for args in [
        vec!["topic", "list", "--brokers", addr.as_str()],
        vec!["consume", "t", "--brokers", addr.as_str()],
    ] {
        let output = run_fjord(&args, b"", &[]);
        assert!(!output.status.success(), "{args:?}");
        assert_eq!(
            text(&output.stderr),
            format!(
                "fjord: cannot connect to {addr}: connection refused — is a broker running? \
                 start one with `fjord start`\n"
            )
        );
    }
    let output = run_fjord(
        &["produce", "t"],
        b"x\n",
        &[("FJORD_BROKERS", addr.as_str())],
    );
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).starts_with(&format!("fjord: cannot connect to {addr}")),
        "{}",
        text(&output.stderr)
    );
}

/// The README's start command uses the default, relative data dir; topics
/// must work there as with an absolute one.
#[test]
fn default_relative_data_dir_serves_topics() {
    let broker = Broker::start_with_data_dir(false);
    let created = broker.fjord(&["topic", "create", "rel", "--partitions", "2"], b"");
    assert_success(&created, "topic create");
    let produced = broker.fjord(&["produce", "rel", "--acks", "all"], b"one\ntwo\n");
    assert_success(&produced, "produce");
    let consumed = broker.fjord(&["consume", "rel", "--count", "2"], b"");
    assert_success(&consumed, "consume");
    let mut lines: Vec<String> = text(&consumed.stdout).lines().map(str::to_owned).collect();
    lines.sort();
    assert_eq!(lines, vec!["one", "two"]);
    assert!(broker
        .dir
        .path()
        .join("fjord-data")
        .join("__cluster_metadata-0")
        .exists());
}

/// `fjord topic elect-leaders` reaches the controller through the node's
/// Kafka listener (ElectLeaders): on one node every partition already has
/// its only possible leader, so elections are not needed; unknown
/// partitions fail the command with Kafka's code.
#[test]
fn cli_elect_leaders_reports_each_partition() {
    let broker = Broker::start();
    let created = broker.fjord(&["topic", "create", "events", "--partitions", "2"], b"");
    assert_success(&created, "topic create");

    let preferred = broker.fjord(&["topic", "elect-leaders", "--topic", "events"], b"");
    assert_success(&preferred, "elect-leaders --topic");
    assert_eq!(
        text(&preferred.stdout),
        "events 0 ELECTION_NOT_NEEDED\nevents 1 ELECTION_NOT_NEEDED\n"
    );

    let all = broker.fjord(&["topic", "elect-leaders", "--type", "unclean"], b"");
    assert_success(&all, "elect-leaders --type unclean");
    assert_eq!(
        text(&all.stdout),
        "no partition needed an election (UNCLEAN)\n"
    );

    let missing = broker.fjord(
        &[
            "topic",
            "elect-leaders",
            "--topic",
            "events",
            "--partition",
            "9",
        ],
        b"",
    );
    assert!(!missing.status.success());
    assert!(
        text(&missing.stdout).starts_with("events 9 UNKNOWN_TOPIC_OR_PARTITION"),
        "{}",
        text(&missing.stdout)
    );
    assert_eq!(text(&missing.stderr), "fjord: some elections failed\n");

    let unknown = broker.fjord(&["topic", "elect-leaders", "--topic", "nope"], b"");
    assert!(!unknown.status.success());
    assert_eq!(text(&unknown.stderr), "fjord: topic nope does not exist\n");
}
