//! The single-node data path against the real `fjord` binary: produce and
//! fetch across shards (the cross-shard forward path), long-poll, acks=all
//! durability across SIGKILL, hostile input, restart with topics and
//! placement. No timing assertions.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use common::{batch, error_response, Broker, Conn, Record};
use fjord_schema::api::ApiKey;
use fjord_schema::ErrorCode;

fn values(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|(_, _, v)| String::from_utf8(v.clone().expect("value")).expect("utf8"))
        .collect()
}

/// Partitions of `topic` owned by `shard`.
fn owned_by(conn: &mut Conn, topic: &str, shard: u16) -> Vec<u32> {
    let meta = conn.metadata(Some(&[topic]));
    meta.topics[0]
        .partitions
        .iter()
        .filter(|(_, s)| *s == shard)
        .map(|(p, _)| *p)
        .collect()
}

#[test]
fn produce_and_fetch_across_shards_keep_per_partition_order() {
    let broker = Broker::start(&["--shards", "2"]);
    let mut admin = broker.conn();
    assert_eq!(admin.create_topic("events", 4, &[]), ErrorCode::None);
    let meta = admin.metadata(Some(&["events"]));
    let shards: Vec<u16> = meta.topics[0].partitions.iter().map(|(_, s)| *s).collect();
    assert_eq!(shards, vec![0, 1, 0, 1], "least-loaded placement");
    assert_eq!(meta.shard_ports.len(), 2);

    // Shard 0's port gets requests for shard 1's partitions and the
    // reverse: every one of those is forwarded over the mesh.
    let mut via = [broker.shard_conn(0), broker.shard_conn(1)];
    let mut expected: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for round in 0..20 {
        for partition in 0..4u32 {
            let owner = shards[partition as usize];
            let conn = &mut via[usize::from(1 - owner)];
            let key = format!("key-{partition}");
            let values: Vec<String> = (0..3)
                .map(|i| format!("p{partition}-r{round}-{i}"))
                .collect();
            let records: Vec<(&[u8], &[u8])> = values
                .iter()
                .map(|v| (key.as_bytes(), v.as_bytes()))
                .collect();
            let acks = [1, -1, 0][round % 3];
            let (error, base) = conn.produce(
                "events",
                partition,
                &batch(&records, 1000 * round as i64),
                acks,
            );
            assert_eq!(error, ErrorCode::None);
            if acks != 0 {
                assert_eq!(base, 3 * round as i64, "offsets are dense per partition");
            }
            expected.entry(partition).or_default().extend(values);
        }
    }
    // acks=0 sends no response: a later request on the same connections
    // is answered in order, and the data is there.
    for conn in &mut via {
        conn.metadata(Some(&[]));
    }

    // One fetch for all four partitions through shard 1's port.
    let mut reader = broker.shard_conn(1);
    let mut offsets: BTreeMap<u32, i64> = (0..4).map(|p| (p, 0)).collect();
    let mut read: BTreeMap<u32, Vec<Record>> = BTreeMap::new();
    while offsets.values().any(|o| *o < 60) {
        let wanted: Vec<(u32, i64)> = offsets.iter().map(|(p, o)| (*p, *o)).collect();
        for ((partition, _), part) in wanted
            .iter()
            .zip(reader.fetch_many("events", &wanted, 0, 1, 4096))
        {
            assert_eq!(part.error, ErrorCode::None);
            assert_eq!(part.high_watermark, 60);
            if let Some((last, _, _)) = part.records.last() {
                offsets.insert(*partition, *last as i64 + 1);
            }
            read.entry(*partition).or_default().extend(part.records);
        }
    }
    for (partition, records) in &read {
        let offsets: Vec<u64> = records.iter().map(|(o, _, _)| *o).collect();
        assert_eq!(
            offsets,
            (0..60).collect::<Vec<u64>>(),
            "partition {partition}"
        );
        assert!(records
            .iter()
            .all(|(_, k, _)| k.as_deref() == Some(format!("key-{partition}").as_bytes())));
        assert_eq!(
            values(records),
            expected[partition],
            "order within partition {partition}"
        );
    }

    for partition in 0..4 {
        assert_eq!(
            reader.list_offset("events", partition, -2),
            (ErrorCode::None, 0)
        );
        assert_eq!(
            reader.list_offset("events", partition, -1),
            (ErrorCode::None, 60)
        );
        // Round 10's batch has timestamps 10000.. and starts at offset 30.
        assert_eq!(
            reader.list_offset("events", partition, 10_000),
            (ErrorCode::None, 30)
        );
        assert_eq!(
            reader.list_offset("events", partition, 10_001),
            (ErrorCode::None, 31)
        );
        assert_eq!(
            reader.list_offset("events", partition, 1 << 40),
            (ErrorCode::None, -1)
        );
    }
    assert_eq!(
        reader.list_offset("events", 9, -1).0,
        ErrorCode::UnknownTopicOrPartition
    );
}

#[test]
fn long_poll_fetch_returns_when_data_arrives() {
    let broker = Broker::start(&["--shards", "2"]);
    let mut admin = broker.conn();
    assert_eq!(admin.create_topic("tail", 2, &[]), ErrorCode::None);
    let remote = owned_by(&mut admin, "tail", 1)[0];
    let local = owned_by(&mut admin, "tail", 0)[0];
    let port0 = broker.shard_conn(0).stream.peer_addr().expect("addr");

    for round in 0..3i64 {
        // The consumer waits (up to 10 minutes: far past the test's own
        // patience) on shard 0 for a partition of shard 1 and one of its
        // own; only the produce can end the wait with data.
        let consumer = thread::spawn(move || {
            let mut conn = Conn::connect(port0);
            conn.fetch_many("tail", &[(local, 0), (remote, round)], 600_000, 1, 1 << 20)
        });
        thread::sleep(std::time::Duration::from_millis(200));
        let value = format!("wake-{round}");
        let mut producer = broker.shard_conn(1);
        let (error, base) =
            producer.produce("tail", remote, &batch(&[(b"k", value.as_bytes())], 0), 1);
        assert_eq!((error, base), (ErrorCode::None, round));
        let parts = consumer.join().expect("consumer");
        assert!(parts[0].records.is_empty());
        assert_eq!(values(&parts[1].records), vec![value]);
    }

    // min_bytes larger than one batch: the fetch keeps waiting through the
    // first append and returns both batches.
    let first = batch(&[(b"k", b"first")], 0);
    let needed = 2 * first.len() as u32;
    let consumer = thread::spawn(move || {
        let mut conn = Conn::connect(port0);
        conn.fetch("tail", remote, 3, 600_000, needed)
    });
    thread::sleep(std::time::Duration::from_millis(200));
    let mut producer = broker.shard_conn(1);
    assert_eq!(
        producer.produce("tail", remote, &first, -1).0,
        ErrorCode::None
    );
    thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(
        producer
            .produce("tail", remote, &batch(&[(b"k", b"second")], 0), -1)
            .0,
        ErrorCode::None
    );
    let part = consumer.join().expect("consumer");
    assert_eq!(
        values(&part.records),
        vec!["first".to_owned(), "second".to_owned()]
    );
}

#[test]
fn acknowledged_acks_all_messages_survive_sigkill() {
    let mut broker = Broker::start(&["--shards", "2"]);
    assert_eq!(
        broker.conn().create_topic("durable", 4, &[]),
        ErrorCode::None
    );
    // acked[round][partition] = last acknowledged sequence number.
    let mut acked: Vec<Vec<Option<u64>>> = Vec::new();
    for round in 0..3 {
        let stop = Arc::new(AtomicBool::new(false));
        let total = Arc::new(AtomicU64::new(0));
        let producers: Vec<_> = (0..4u32)
            .map(|partition| {
                let addr = broker.addr;
                let stop = stop.clone();
                let total = total.clone();
                thread::spawn(move || {
                    let mut conn = Conn::connect(addr);
                    let mut last = None;
                    let mut seq = 0u64;
                    while !stop.load(Ordering::Acquire) {
                        let count = 1 + (seq % 4) as usize;
                        let values: Vec<String> = (0..count)
                            .map(|i| format!("r{round}-p{partition}-{}", seq + i as u64))
                            .collect();
                        let records: Vec<(&[u8], &[u8])> =
                            values.iter().map(|v| (&b"key"[..], v.as_bytes())).collect();
                        match conn.try_produce("durable", partition, &batch(&records, 0), -1) {
                            Ok((ErrorCode::None, _)) => {
                                seq += count as u64;
                                last = Some(seq - 1);
                                total.fetch_add(1, Ordering::AcqRel);
                            }
                            // The broker died mid-request: not acknowledged.
                            _ => break,
                        }
                    }
                    last
                })
            })
            .collect();
        while total.load(Ordering::Acquire) < 200 {
            thread::sleep(std::time::Duration::from_millis(5));
        }
        broker.kill_and_restart();
        stop.store(true, Ordering::Release);
        acked.push(
            producers
                .into_iter()
                .map(|p| p.join().expect("producer"))
                .collect(),
        );

        // Everything acknowledged in every round so far is there, once,
        // in order; at most the unacknowledged tail of a round may be too.
        let mut conn = broker.conn();
        for partition in 0..4u32 {
            let records = conn.read_all("durable", partition, 0);
            let offsets: Vec<u64> = records.iter().map(|(o, _, _)| *o).collect();
            assert_eq!(offsets, (0..records.len() as u64).collect::<Vec<_>>());
            let values = values(&records);
            let mut at = 0;
            for (r, round_acked) in acked.iter().enumerate() {
                let prefix = format!("r{r}-p{partition}-");
                let seqs: Vec<u64> = values[at..]
                    .iter()
                    .take_while(|v| v.starts_with(&prefix))
                    .map(|v| v[prefix.len()..].parse().expect("seq"))
                    .collect();
                at += seqs.len();
                assert_eq!(
                    seqs,
                    (0..seqs.len() as u64).collect::<Vec<_>>(),
                    "round {r} partition {partition}: contiguous, no duplicates"
                );
                if let Some(last) = round_acked[partition as usize] {
                    assert!(
                        seqs.len() as u64 > last,
                        "round {r} partition {partition}: acked up to {last}, found {}",
                        seqs.len()
                    );
                }
            }
            assert_eq!(at, values.len(), "nothing but the producers' records");
        }
    }
}

#[test]
fn hostile_input_gets_errors_and_a_good_client_is_served_meanwhile() {
    let mut broker = Broker::start(&["--shards", "2", "--frame-bytes-max", "1048576"]);
    let mut admin = broker.conn();
    assert_eq!(
        admin.create_topic("t", 2, &[("max.message.bytes", "2048")]),
        ErrorCode::None
    );
    let addr = broker.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let good = thread::spawn({
        let stop = stop.clone();
        move || {
            let mut conn = Conn::connect(addr);
            let mut sent = Vec::new();
            while !stop.load(Ordering::Acquire) || sent.is_empty() {
                let value = format!("good-{}", sent.len());
                let (error, base) = conn.produce("t", 0, &batch(&[(b"g", value.as_bytes())], 0), 1);
                assert_eq!(error, ErrorCode::None);
                assert_eq!(base, sent.len() as i64);
                let part = conn.fetch("t", 0, base, 0, 1);
                assert_eq!(values(&part.records), vec![value.clone()]);
                sent.push(value);
            }
            sent
        }
    });

    let mut bad = broker.conn();
    let good_batch = batch(&[(b"k", b"v")], 0);
    // Bad CRC.
    let mut corrupt = good_batch.to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x55;
    assert_eq!(
        bad.produce("t", 1, &corrupt, 1).0,
        ErrorCode::CorruptMessage
    );
    // A good batch followed by a corrupt one: nothing of the request is
    // appended.
    let mut mixed = good_batch.to_vec();
    mixed.extend_from_slice(&corrupt);
    assert_eq!(bad.produce("t", 1, &mixed, -1).0, ErrorCode::CorruptMessage);
    // Garbage and a cut batch.
    assert_eq!(
        bad.produce("t", 1, &[0xAB; 100], 1).0,
        ErrorCode::CorruptMessage
    );
    assert_eq!(
        bad.produce("t", 1, &good_batch[..good_batch.len() - 1], 1)
            .0,
        ErrorCode::CorruptMessage
    );
    // Over max.message.bytes.
    let big = vec![7u8; 4096];
    assert_eq!(
        bad.produce("t", 1, &batch(&[(b"k", &big)], 0), 1).0,
        ErrorCode::MessageTooLarge
    );
    // Unknown topic and partition.
    assert_eq!(
        bad.produce("nope", 0, &good_batch, 1).0,
        ErrorCode::UnknownTopicOrPartition
    );
    assert_eq!(
        bad.produce("t", 7, &good_batch, 1).0,
        ErrorCode::UnknownTopicOrPartition
    );
    assert_eq!(
        bad.fetch("t", 7, 0, 0, 1).error,
        ErrorCode::UnknownTopicOrPartition
    );
    // Bad acks, out-of-range offsets.
    assert_eq!(
        bad.produce("t", 1, &good_batch, 5).0,
        ErrorCode::InvalidRequiredAcks
    );
    assert_eq!(
        bad.fetch("t", 1, 42, 0, 1).error,
        ErrorCode::OffsetOutOfRange
    );
    assert_eq!(
        bad.fetch("t", 1, -3, 0, 1).error,
        ErrorCode::OffsetOutOfRange
    );
    // Wrong version: an ERROR frame; the connection stays usable.
    let body = Conn::produce_body("t", 1, good_batch.len(), 1);
    let cid = bad.send(ApiKey::Produce, 7, 0, &body, &good_batch);
    assert_eq!(
        error_response(&bad.receive(cid)),
        ErrorCode::UnsupportedVersion
    );
    // A payload slice outside the payload: INVALID_REQUEST.
    let body = Conn::produce_body("t", 1, good_batch.len() + 10, 1);
    let cid = bad.send(ApiKey::Produce, 0, 0, &body, &good_batch);
    assert_eq!(error_response(&bad.receive(cid)), ErrorCode::InvalidRequest);
    assert_eq!(bad.metadata(Some(&["t"])).topics[0].error, ErrorCode::None);
    // A frame over frame_bytes_max closes the connection.
    let huge = vec![0u8; 2 << 20];
    let body = Conn::produce_body("t", 1, huge.len(), 1);
    let mut frame = bytes::BytesMut::new();
    fjord_schema::frame::encode_frame(
        &mut frame,
        ApiKey::Produce as u16,
        0,
        fjord_schema::frame::FrameFlags(0),
        fjord_schema::CorrelationId(1),
        &body,
        &huge,
    );
    // The broker may close after the header, before all of it is written.
    let _ = std::io::Write::write_all(&mut bad.stream, &frame);
    assert!(bad.try_receive().is_err(), "connection closed");

    stop.store(true, Ordering::Release);
    let sent = good.join().expect("good client served throughout");
    broker.assert_running();
    let mut check = broker.conn();
    assert_eq!(values(&check.read_all("t", 0, 0)), sent);
    // Nothing hostile reached partition 1.
    assert_eq!(check.list_offset("t", 1, -1), (ErrorCode::None, 0));
}

#[test]
fn restart_keeps_topics_placement_and_data() {
    let mut broker = Broker::start(&["--shards", "2"]);
    let mut conn = broker.conn();
    assert_eq!(
        conn.create_topic(
            "a",
            3,
            &[("segment.bytes", "65536"), ("max.message.bytes", "16384")]
        ),
        ErrorCode::None
    );
    assert_eq!(conn.create_topic("b", 2, &[]), ErrorCode::None);
    assert_eq!(conn.create_topic("gone", 1, &[]), ErrorCode::None);
    assert_eq!(
        conn.create_topic("a", 1, &[]),
        ErrorCode::TopicAlreadyExists
    );
    for partition in 0..3 {
        for i in 0..50 {
            let value = format!("a{partition}-{i}-{}", "x".repeat(2000));
            assert_eq!(
                conn.produce("a", partition, &batch(&[(b"k", value.as_bytes())], i), 1)
                    .0,
                ErrorCode::None
            );
        }
    }
    assert_eq!(
        conn.produce("b", 1, &batch(&[(b"k", b"b1")], 0), -1).0,
        ErrorCode::None
    );
    assert_eq!(conn.delete_topic("gone"), ErrorCode::None);
    assert!(
        !broker.data_dir().join("gone-0").exists(),
        "deleted topic's directory removed"
    );
    let before = conn.metadata(None);
    let data_before: Vec<Vec<Record>> = (0..3).map(|p| conn.read_all("a", p, 0)).collect();
    drop(conn);

    broker.terminate_and_restart();
    let mut conn = broker.conn();
    assert_eq!(
        conn.metadata(None),
        MetadataWithoutPorts::strip(before.clone(), &conn.metadata(None))
    );
    for partition in 0..3 {
        assert_eq!(
            conn.read_all("a", partition, 0),
            data_before[partition as usize]
        );
    }
    assert_eq!(values(&conn.read_all("b", 1, 0)), vec!["b1".to_owned()]);
    assert_eq!(
        conn.metadata(Some(&["gone"])).topics[0].error,
        ErrorCode::UnknownTopicOrPartition
    );

    // After a SIGKILL too, and new appends continue the logs.
    broker.kill_and_restart();
    let mut conn = broker.conn();
    assert_eq!(conn.metadata(None).topics, before.topics);
    assert_eq!(
        conn.produce("a", 2, &batch(&[(b"k", b"after")], 0), -1),
        (ErrorCode::None, 50)
    );
    assert_eq!(conn.create_topic("gone", 1, &[]), ErrorCode::None);
    assert_eq!(conn.list_offset("gone", 0, -1), (ErrorCode::None, 0));
}

/// Per-shard ports change across restarts (port 0); compare the rest.
struct MetadataWithoutPorts;

impl MetadataWithoutPorts {
    fn strip(mut before: common::MetadataInfo, now: &common::MetadataInfo) -> common::MetadataInfo {
        before.shard_ports = now.shard_ports.clone();
        before
    }
}
