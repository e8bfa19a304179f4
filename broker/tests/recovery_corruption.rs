//! Damaged segments against the real broker (issue 11): recovery never
//! cuts valid batches after damage nor reuses their offsets, the damaged
//! partition goes offline alone while the others serve, `fjord repair`
//! accepts the loss explicitly; a damaged sealed segment serves every good
//! batch and gives a Kafka client a definite error instead of an endless
//! silent retry; `fjord topic describe` shows the damage.

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::kafka::client_config;
use common::pressure::SteadyProducer;
use common::{batch, Broker, Conn, PATIENCE};
use fjord_schema::ErrorCode;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};

const RECORDS_PER_BATCH: usize = 10;
/// Where the reproduction overwrites 16 bytes.
const DAMAGE_AT: u64 = 2000;
const LATEST: i64 = -1;

fn value(i: u64) -> Vec<u8> {
    format!("record-{i:06}-{}", "x".repeat(40)).into_bytes()
}

/// Produces records `from..from + count` with acks=all in batches of
/// [`RECORDS_PER_BATCH`]; asserts each batch lands at its record number.
fn produce_numbered(conn: &mut Conn, topic: &str, from: u64, count: u64) {
    let mut i = from;
    while i < from + count {
        let values: Vec<Vec<u8>> = (i..i + RECORDS_PER_BATCH as u64).map(value).collect();
        let records: Vec<(&[u8], &[u8])> = values
            .iter()
            .map(|v| (b"k".as_slice(), v.as_slice()))
            .collect();
        let (error, base) = conn.produce(topic, 0, &batch(&records, 1_700_000_000_000), -1);
        assert_eq!(error, ErrorCode::None, "produce {topic}@{i}");
        assert_eq!(base, i as i64, "{topic}: batch offset");
        i += RECORDS_PER_BATCH as u64;
    }
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("partition dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs
}

/// Overwrites 16 bytes at `at` of `path`, as the reproduction does.
fn damage(path: &Path, at: u64) {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open segment");
    file.seek(SeekFrom::Start(at)).expect("seek");
    file.write_all(&[0xA5; 16]).expect("overwrite");
    file.sync_all().expect("sync");
}

/// Runs the `fjord` binary; (success, stdout + stderr).
fn fjord(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_fjord"))
        .args(args)
        .env("FJORD_LOG", "warn")
        .output()
        .expect("run fjord");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn describe(broker: &Broker, topic: &str) -> String {
    let addr = broker.addr.to_string();
    let (ok, text) = fjord(&["topic", "describe", topic, "--brokers", &addr]);
    assert!(ok, "describe {topic}: {text}");
    text
}

/// The number after `marker` in `text`.
fn number_after(text: &str, marker: &str) -> u64 {
    let at = text
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} in {text}"));
    text[at + marker.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("a number after {marker:?} in {text}"))
}

/// The reproduction: 8,000 acks=all records to one partition on a
/// single shard, 16 bytes overwritten at byte 2000 of the active segment.
#[test]
fn damaged_active_segment_goes_offline_alone_until_repaired() {
    const RECORDS: u64 = 8000;
    let mut broker = Broker::start(&["--shards", "1"]);
    let mut conn = broker.conn();
    assert_eq!(conn.create_topic("orders", 1, &[]), ErrorCode::None);
    assert_eq!(conn.create_topic("other", 1, &[]), ErrorCode::None);
    produce_numbered(&mut conn, "orders", 0, RECORDS);
    drop(conn);
    let status = broker.terminate();
    assert!(status.success(), "clean stop: {}", broker.logs());

    let dir = broker.data_dir().join("orders-0");
    let segments = segment_files(&dir);
    assert_eq!(segments.len(), 1, "one (active) segment");
    damage(&segments[0], DAMAGE_AT);
    let damaged_bytes = std::fs::read(&segments[0]).expect("read segment");

    broker.restart();
    broker.assert_running();
    let logs = broker.logs();
    let error_line = logs
        .lines()
        .find(|l| l.contains("ERROR") && l.contains("orders-0 is OFFLINE"))
        .unwrap_or_else(|| panic!("one ERROR naming the partition: {logs}"));
    for what in [
        "00000000000000000000.log",
        "bytes ",
        "fjord repair",
        "--truncate-at",
    ] {
        assert!(error_line.contains(what), "{what:?} in {error_line}");
    }
    // The address is published only once recovery decided.
    let listening = logs.rfind("fjord listening").expect("listening logged");
    let offline = logs.rfind("orders-0 is OFFLINE").expect("offline logged");
    let recovered = logs.rfind("partitions recovered").expect("recovery logged");
    assert!(
        offline < listening && recovered < listening,
        "listening announced before recovery decided: {logs}"
    );
    let lost_from = number_after(error_line, "--truncate-at ");
    assert!(
        lost_from > 0 && lost_from < RECORDS,
        "damage at byte {DAMAGE_AT} is early in the log: {lost_from}"
    );
    assert!(
        error_line.contains(&format!("..{RECORDS} follow")),
        "the offsets at stake reach the old log end: {error_line}"
    );

    // Every other partition serves while the damaged one is offline.
    let steady = SteadyProducer::start(broker.addr, "other", 0);
    let mut conn = broker.conn();
    let (error, base) = conn.produce("orders", 0, &batch(&[(b"k", b"late")], 1), -1);
    assert_eq!(
        (error, base),
        (ErrorCode::KafkaStorageError, -1),
        "no produce to the damaged partition, so no offset is reused"
    );
    let (error, end) = conn.list_offset("orders", 0, LATEST);
    assert_eq!(
        error,
        ErrorCode::KafkaStorageError,
        "no dropped log end is reported (got {end})"
    );
    let fetched = conn.fetch("orders", 0, 0, 0, 1);
    assert_eq!(fetched.error, ErrorCode::CorruptMessage);
    assert!(fetched.records.is_empty());
    let text = describe(&broker, "orders");
    assert!(text.contains("OFFLINE"), "describe shows it: {text}");
    let (ok, text) = fjord(&[
        "repair",
        "--data-dir",
        broker.data_dir().to_str().expect("utf-8 path"),
        "--topic",
        "orders",
        "--partition",
        "0",
        "--truncate-at",
        &lost_from.to_string(),
    ]);
    assert!(!ok, "repair refuses while the broker runs: {text}");
    assert!(text.contains("locked"), "{text}");
    assert!(
        steady.stop_and_verify(broker.addr) > 0,
        "other kept serving"
    );
    drop(conn);
    let status = broker.terminate();
    assert!(status.success(), "clean stop: {}", broker.logs());
    assert_eq!(
        std::fs::read(&segments[0]).expect("read segment"),
        damaged_bytes,
        "nothing was cut from the damaged segment"
    );

    // The operator accepts the loss.
    let data_dir = broker.data_dir();
    let data_dir = data_dir.to_str().expect("utf-8 path");
    let repair = |at: u64| {
        fjord(&[
            "repair",
            "--data-dir",
            data_dir,
            "--topic",
            "orders",
            "--partition",
            "0",
            "--truncate-at",
            &at.to_string(),
        ])
    };
    let (ok, text) = repair(lost_from + RECORDS_PER_BATCH as u64);
    assert!(!ok, "a truncation point past the damage is refused: {text}");
    let (ok, text) = repair(lost_from);
    assert!(ok, "repair: {text}");
    assert!(
        text.contains(&format!("log end is now {lost_from}")),
        "{text}"
    );

    broker.restart();
    let mut conn = broker.conn();
    assert_eq!(
        conn.list_offset("orders", 0, LATEST),
        (ErrorCode::None, lost_from as i64)
    );
    let kept = conn.read_all("orders", 0, 0);
    assert_eq!(
        kept.len() as u64,
        lost_from,
        "every batch before the damage"
    );
    for (i, (offset, _, v)) in kept.iter().enumerate() {
        assert_eq!(*offset, i as u64);
        assert_eq!(v.as_deref(), Some(value(i as u64).as_slice()));
    }
    produce_numbered(&mut conn, "orders", lost_from, RECORDS_PER_BATCH as u64);
    assert!(!describe(&broker, "orders").contains("OFFLINE"));
}

/// 16 bytes overwritten in a sealed segment: the good batches before the
/// damage reach an rdkafka consumer, which then gets CORRUPT_MESSAGE (2,
/// `InvalidMessage` in rdkafka; a
/// definite error librdkafka hands to the application) instead of stalling.
#[test]
fn damaged_sealed_segment_serves_good_batches_and_a_definite_error() {
    const RECORDS: u64 = 3000;
    let mut broker = Broker::start(&["--shards", "1"]);
    let mut conn = broker.conn();
    let configs = [("segment.bytes", "65536"), ("max.message.bytes", "16384")];
    assert_eq!(conn.create_topic("sealed", 1, &configs), ErrorCode::None);
    produce_numbered(&mut conn, "sealed", 0, RECORDS);
    drop(conn);
    let status = broker.terminate();
    assert!(status.success(), "clean stop: {}", broker.logs());
    let segments = segment_files(&broker.data_dir().join("sealed-0"));
    assert!(segments.len() >= 3, "several segments: {segments:?}");
    damage(&segments[0], DAMAGE_AT);
    broker.restart();
    broker.assert_running();

    let consumer: BaseConsumer = client_config(&broker)
        .set("group.id", "recovery-corruption-test")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset("sealed", 0, Offset::Beginning)
        .expect("add partition");
    consumer.assign(&assignment).expect("assign");
    let mut seen = Vec::new();
    // Only keeps a stalled consumer (the bug) from hanging the suite.
    let deadline = Instant::now() + PATIENCE;
    let error = loop {
        assert!(
            Instant::now() < deadline,
            "no error surfaced after {} records",
            seen.len()
        );
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(message)) => seen.push((
                message.offset() as u64,
                message.payload().unwrap_or_default().to_vec(),
            )),
            Some(Err(error)) => break error,
        }
    };
    assert_eq!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::InvalidMessage),
        "{error}"
    );
    let lost_from = seen.len() as u64;
    assert!(lost_from > 0, "good batches before the damage are served");
    for (i, (offset, payload)) in seen.iter().enumerate() {
        assert_eq!(*offset, i as u64, "in order, none skipped");
        assert_eq!(payload, &value(i as u64));
    }

    let text = describe(&broker, "sealed");
    let first = number_after(&text, "DAMAGED: offsets ");
    let resume = number_after(&text, &format!("DAMAGED: offsets {first}.."));
    assert_eq!(first, lost_from, "{text}");
    assert!(resume > first && resume < RECORDS, "{text}");
    assert!(
        broker.logs().contains("damaged data in a segment"),
        "the broker log reports the range"
    );

    let mut conn = broker.conn();
    assert_eq!(
        conn.fetch("sealed", 0, first as i64, 0, 1).error,
        ErrorCode::CorruptMessage
    );
    // Past the damage the log serves again, to its end.
    let after = conn.read_all("sealed", 0, resume as i64);
    assert_eq!(after.len() as u64, RECORDS - resume);
    assert_eq!(after.first().map(|r| r.0), Some(resume));
    assert_eq!(
        conn.list_offset("sealed", 0, LATEST),
        (ErrorCode::None, RECORDS as i64)
    );
}
