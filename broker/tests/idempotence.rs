//! The idempotent producer against the real `fjord` binary: InitProducerId,
//! duplicates acknowledged with their original offset and written once,
//! gaps and fenced epochs refused, state that survives SIGKILL, and a
//! client `Producer` retrying through a proxy that cuts its connections.

mod common;

use bytes::Bytes;
use common::{idempotent_batch, Broker, Conn};
use fjord_schema::api::{decode_response, ApiKey, Response};
use fjord_schema::{wire, ErrorCode};
use flatbuffers::FlatBufferBuilder;

fn init_producer_id(conn: &mut Conn, id: i64, epoch: i16) -> (ErrorCode, i64, i16) {
    let mut fbb = FlatBufferBuilder::new();
    let root = wire::InitProducerIdRequest::create(
        &mut fbb,
        &wire::InitProducerIdRequestArgs {
            transactional_id: None,
            transaction_timeout_ms: -1,
            producer_id: id,
            producer_epoch: epoch,
        },
    );
    fbb.finish(root, None);
    let frame = conn.call(ApiKey::InitProducerId, fbb.finished_data(), &[]);
    let Ok(Response::InitProducerId(r)) = decode_response(&frame) else {
        panic!("not an InitProducerId response: {frame:?}");
    };
    (
        ErrorCode::from_code(r.error_code()),
        r.producer_id(),
        r.producer_epoch(),
    )
}

fn values(conn: &mut Conn, topic: &str) -> Vec<String> {
    conn.read_all(topic, 0, 0)
        .into_iter()
        .map(|(_, _, v)| String::from_utf8(v.expect("value")).expect("utf8"))
        .collect()
}

#[test]
fn duplicates_gaps_and_fencing_and_state_across_sigkill() {
    let mut broker = Broker::start(&["--shards", "1"]);
    let mut conn = broker.conn();
    assert_eq!(conn.create_topic("idem", 1, &[]), ErrorCode::None);

    let (code, id, epoch) = init_producer_id(&mut conn, -1, -1);
    assert_eq!((code, epoch), (ErrorCode::None, 0));
    assert!(id >= 0);
    let (code, other, _) = init_producer_id(&mut conn, -1, -1);
    assert_eq!(code, ErrorCode::None);
    assert_ne!(other, id, "ids are unique");

    let first = idempotent_batch(id, 0, 0, &["a", "b"]);
    assert_eq!(conn.produce("idem", 0, &first, -1), (ErrorCode::None, 0));
    // The same batch again (a retry whose ack was lost): its original
    // offset, not written again.
    assert_eq!(conn.produce("idem", 0, &first, -1), (ErrorCode::None, 0));
    let second = idempotent_batch(id, 0, 2, &["c"]);
    assert_eq!(conn.produce("idem", 0, &second, -1), (ErrorCode::None, 2));
    assert_eq!(conn.produce("idem", 0, &first, -1), (ErrorCode::None, 0));

    // A gap: sequence 4 after 2.
    let gap = idempotent_batch(id, 0, 4, &["x"]);
    assert_eq!(
        conn.produce("idem", 0, &gap, -1).0,
        ErrorCode::OutOfOrderSequenceNumber
    );

    // Re-init bumps the epoch; the old epoch is fenced from then on.
    let (code, same, bumped) = init_producer_id(&mut conn, id, 0);
    assert_eq!((code, same, bumped), (ErrorCode::None, id, 1));
    let new_epoch = idempotent_batch(id, 1, 0, &["d"]);
    assert_eq!(
        conn.produce("idem", 0, &new_epoch, -1),
        (ErrorCode::None, 3)
    );
    let zombie = idempotent_batch(id, 0, 3, &["zombie"]);
    assert_eq!(
        conn.produce("idem", 0, &zombie, -1).0,
        ErrorCode::InvalidProducerEpoch
    );
    assert_eq!(values(&mut conn, "idem"), ["a", "b", "c", "d"]);

    // SIGKILL: no snapshot is written, the state comes back from the log.
    drop(conn);
    broker.kill_and_restart();
    let mut conn = broker.conn();
    assert_eq!(
        conn.produce("idem", 0, &new_epoch, -1),
        (ErrorCode::None, 3)
    );
    assert_eq!(
        conn.produce("idem", 0, &zombie, -1).0,
        ErrorCode::InvalidProducerEpoch
    );
    let next = idempotent_batch(id, 1, 1, &["e"]);
    assert_eq!(conn.produce("idem", 0, &next, -1), (ErrorCode::None, 4));

    // Clean restart: from the snapshot written at shutdown.
    drop(conn);
    broker.terminate_and_restart();
    assert!(
        std::fs::read_dir(broker.data_dir().join("idem-0"))
            .expect("partition dir")
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".snapshot")),
        "a snapshot at clean shutdown"
    );
    let mut conn = broker.conn();
    assert_eq!(conn.produce("idem", 0, &next, -1), (ErrorCode::None, 4));
    assert_eq!(
        conn.produce("idem", 0, &new_epoch, -1),
        (ErrorCode::None, 3)
    );
    let (code, fresh, _) = init_producer_id(&mut conn, -1, -1);
    assert_eq!(code, ErrorCode::None);
    assert!(
        fresh != id && fresh != other,
        "no id repeats after restarts"
    );
    assert_eq!(values(&mut conn, "idem"), ["a", "b", "c", "d", "e"]);

    // A snapshot past the log end (as a truncation leaves) and a damaged
    // one are discarded; the state comes back from the log scan.
    drop(conn);
    assert!(broker.terminate().success());
    let dir = broker.data_dir().join("idem-0");
    let snapshot = std::fs::read_dir(&dir)
        .expect("partition dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "snapshot"))
        .expect("snapshot");
    let future = dir.join(format!("{:020}.snapshot", 1000));
    std::fs::copy(&snapshot, &future).expect("copy");
    std::fs::write(&snapshot, b"garbage").expect("damage");
    broker.kill_and_restart();
    let mut conn = broker.conn();
    assert_eq!(conn.produce("idem", 0, &next, -1), (ErrorCode::None, 4));
    // The partition answered, so it was opened (and its snapshots read).
    assert!(!future.exists(), "a snapshot past the log end is removed");
    assert_eq!(
        conn.produce("idem", 0, &zombie, -1).0,
        ErrorCode::InvalidProducerEpoch
    );
    assert_eq!(values(&mut conn, "idem"), ["a", "b", "c", "d", "e"]);
}

mod proxy {
    //! A TCP proxy that cuts produce connections: after a random number of
    //! request bytes (a torn request) or of response bytes (often right
    //! after the broker wrote a batch whose ack the client then never
    //! sees). Other connections (bootstrap: InitProducerId, Metadata) pass.

    use std::io::{Read, Write};
    use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::thread;

    use fjord_schema::api::ApiKey;

    #[derive(Default)]
    pub struct Stats {
        pub cut_requests: AtomicUsize,
        pub cut_responses: AtomicUsize,
    }

    pub fn start(listen: SocketAddr, target: SocketAddr, seed: u64) -> Arc<Stats> {
        let listener = TcpListener::bind(listen).expect("proxy bind");
        let stats = Arc::new(Stats::default());
        let rng = Arc::new(Mutex::new(seed));
        let for_thread = stats.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(broker) = TcpStream::connect(target) else {
                    continue;
                };
                let (up, down) = {
                    let mut state = rng.lock().expect("rng");
                    let mut next = |bound: u64| {
                        // xorshift64: deterministic per seed.
                        *state ^= *state << 13;
                        *state ^= *state >> 7;
                        *state ^= *state << 17;
                        *state % bound
                    };
                    let up = if next(3) == 0 {
                        Some(1 + next(64 * 1024) as usize)
                    } else {
                        None
                    };
                    (up, next(1500) as usize)
                };
                let stats = for_thread.clone();
                thread::spawn(move || serve(client, broker, up, down, &stats));
            }
        });
        stats
    }

    fn serve(
        client: TcpStream,
        broker: TcpStream,
        up_budget: Option<usize>,
        down_budget: usize,
        stats: &Arc<Stats>,
    ) {
        let produce = Arc::new(AtomicBool::new(false));
        let mut client_r = client.try_clone().expect("clone");
        let mut broker_w = broker.try_clone().expect("clone");
        let (up_stats, up_produce) = (stats.clone(), produce.clone());
        let up = thread::spawn(move || {
            let mut head = Vec::new();
            let mut forwarded = 0usize;
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match client_r.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if head.len() < 6 {
                    head.extend_from_slice(&buf[..n]);
                    if head.len() >= 6 {
                        let api_key = u16::from_le_bytes([head[4], head[5]]);
                        // Set before the request reaches the broker, so
                        // before any of its responses comes back.
                        up_produce.store(api_key == ApiKey::Produce as u16, Ordering::SeqCst);
                    }
                }
                let limit = match up_budget {
                    Some(budget) if up_produce.load(Ordering::SeqCst) => {
                        budget.saturating_sub(forwarded).min(n)
                    }
                    _ => n,
                };
                if broker_w.write_all(&buf[..limit]).is_err() {
                    break;
                }
                forwarded += limit;
                if limit < n {
                    up_stats.cut_requests.fetch_add(1, Ordering::SeqCst);
                    break;
                }
            }
            let _ = broker_w.shutdown(Shutdown::Both);
            let _ = client_r.shutdown(Shutdown::Both);
        });
        let (mut broker_r, mut client_w) = (broker, client);
        let mut forwarded = 0usize;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match broker_r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let limit = if produce.load(Ordering::SeqCst) {
                down_budget.saturating_sub(forwarded).min(n)
            } else {
                n
            };
            if client_w.write_all(&buf[..limit]).is_err() {
                break;
            }
            forwarded += limit;
            if limit < n {
                stats.cut_responses.fetch_add(1, Ordering::SeqCst);
                break;
            }
        }
        let _ = client_w.shutdown(Shutdown::Both);
        let _ = broker_r.shutdown(Shutdown::Both);
        let _ = up.join();
    }
}

/// The proxy's loopback address: one no other test uses. (It was
/// 127.0.0.2, where `connection_floods` binds hundreds of client sockets
/// at once; one of their ephemeral ports could be the broker's port, and
/// the proxy's bind then failed with "Address already in use".)
const PROXY_HOST: &str = "127.0.0.42";

#[test]
fn the_producer_retries_through_cut_connections_and_writes_every_record_once() {
    use fjord_net::client::producer::{Producer, ProducerOptions, ProducerRecord};
    use std::time::Duration;

    let broker = Broker::start(&[
        "--shards",
        "1",
        "--shard-ports",
        "false",
        "--advertised-host",
        PROXY_HOST,
    ]);
    let mut conn = broker.conn();
    const PARTITIONS: u32 = 3;
    assert_eq!(
        conn.create_topic("cut", PARTITIONS as i32, &[]),
        ErrorCode::None
    );
    // Metadata advertises PROXY_HOST:<broker port>: the proxy's address, so
    // every connection of the producer goes through it.
    let listen: std::net::SocketAddr = format!("{PROXY_HOST}:{}", broker.addr.port())
        .parse()
        .expect("address");
    let stats = proxy::start(listen, broker.addr, 0x9e37_79b9_7f4a_7c15);

    let mut options = ProducerOptions::new(listen.to_string());
    options.producer.accumulator.batch_size_bytes = 512;
    options.producer.accumulator.linger = Duration::from_millis(1);
    options.producer.retry.backoff = Duration::from_millis(5);
    options.producer.retry.backoff_max = Duration::from_millis(50);
    options.producer.request_timeout = Duration::from_secs(10);
    let producer = Producer::new(options).expect("producer");

    const RECORDS: usize = 3000;
    let mut handles = Vec::new();
    for i in 0..RECORDS {
        let partition = fjord_schema::PartitionId(i as u32 % PARTITIONS);
        let value = format!("{i:06}");
        let record = ProducerRecord {
            partition: Some(partition),
            ..ProducerRecord::new("cut", None, value.as_bytes())
        };
        handles.push(producer.send(record).expect("queued"));
    }
    producer.flush();
    for (i, handle) in handles.iter().enumerate() {
        let metadata = handle.wait().unwrap_or_else(|e| panic!("record {i}: {e}"));
        assert_eq!(metadata.partition.0, i as u32 % PARTITIONS);
    }
    producer.close();
    let cut = stats.cut_requests.load(std::sync::atomic::Ordering::SeqCst)
        + stats
            .cut_responses
            .load(std::sync::atomic::Ordering::SeqCst);
    assert!(cut > 0, "the proxy cut no connection");

    // Every record exactly once, in send order per partition.
    for partition in 0..PARTITIONS {
        let got: Vec<String> = conn
            .read_all("cut", partition, 0)
            .into_iter()
            .map(|(_, _, v)| String::from_utf8(v.expect("value")).expect("utf8"))
            .collect();
        let want: Vec<String> = (0..RECORDS)
            .filter(|i| *i as u32 % PARTITIONS == partition)
            .map(|i| format!("{i:06}"))
            .collect();
        assert_eq!(got.len(), want.len(), "partition {partition}: count");
        assert_eq!(got, want, "partition {partition}");
    }
}

#[test]
fn housekeeping_snapshots_after_a_roll_and_a_killed_broker_resumes_from_it() {
    let mut broker = Broker::start(&["--shards", "1", "--housekeeping-interval-ms", "20"]);
    let mut conn = broker.conn();
    let configs = [("segment.bytes", "8192"), ("max.message.bytes", "4096")];
    assert_eq!(conn.create_topic("rolls", 1, &configs), ErrorCode::None);
    let (_, id, epoch) = init_producer_id(&mut conn, -1, -1);
    let batches: Vec<Bytes> = (0..200)
        .map(|i| idempotent_batch(id, epoch, i, &[&format!("value-{i:04}")]))
        .collect();
    for (i, b) in batches.iter().enumerate() {
        assert_eq!(conn.produce("rolls", 0, b, -1), (ErrorCode::None, i as i64));
    }
    let dir = broker.data_dir().join("rolls-0");
    let deadline = std::time::Instant::now() + common::PATIENCE;
    while !std::fs::read_dir(&dir)
        .expect("partition dir")
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".snapshot"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no snapshot after rolls"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(conn);
    broker.kill_and_restart();
    let mut conn = broker.conn();
    assert_eq!(
        conn.produce("rolls", 0, &batches[199], -1),
        (ErrorCode::None, 199)
    );
    assert_eq!(
        conn.produce("rolls", 0, &batches[196], -1),
        (ErrorCode::None, 196)
    );
    let next = idempotent_batch(id, epoch, 200, &["last"]);
    assert_eq!(conn.produce("rolls", 0, &next, -1), (ErrorCode::None, 200));
    assert_eq!(conn.read_all("rolls", 0, 0).len(), 201);
}
