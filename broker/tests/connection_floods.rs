//! Connection floods (issue 11): thousands of connections that never send
//! a request, from one client address, on both ports, while a well-behaved
//! producer keeps producing. Fresh clients from other addresses are served
//! on both listeners; a flooded address holds at most its
//! `connections_max_per_ip` (or its override); a listener that is full
//! leaves the other one alone; connections that send no whole request are
//! closed at the first-request deadline; the broker's peak RSS stays under a
//! bound derived from the configured limits.
//!
//! Client addresses: every 127.0.0.0/8 address is local on Linux, so a
//! socket bound to 127.0.0.2 before connecting is another "client address"
//! to the broker. No timing assertions: the first-request deadline (5 s) is
//! far below `PATIENCE` and the idle timeout (10 min, the default) far
//! above it, so a close seen within `PATIENCE` can only be the deadline.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use common::pressure::{rss_bytes, rss_peak_bytes, SteadyProducer};
use common::{Broker, Conn, PATIENCE};
use fjord_schema::api::{decode_response, ApiKey, Response};
use fjord_schema::{wire, ErrorCode};
use flatbuffers::FlatBufferBuilder;
use kafka_protocol::messages::{ApiVersionsRequest, RequestHeader};
use kafka_protocol::protocol::{Encodable, StrBytes};

const SHARDS: usize = 2;
const CONNECTIONS_MAX_PER_SHARD: usize = 1000;
const NATIVE_CONNECTIONS_MAX: usize = 400;
const KAFKA_CONNECTIONS_MAX: usize = 400;
const PER_IP_MAX: usize = 100;
/// 127.0.0.2's override.
const OVERRIDE_MAX: usize = 250;
/// Idle connections the flood opens on each port from 127.0.0.1: more than
/// the shards held on both ports together before the limits were split
/// per listener and per address.
const FLOOD_PER_PORT: usize = 1100;
const _: () = assert!(2 * FLOOD_PER_PORT > SHARDS * CONNECTIONS_MAX_PER_SHARD);
/// Memory budgets the broker runs with (small, so the bound is tight).
const INFLIGHT_BYTES_MAX_PER_SHARD: usize = 4 << 20;
const BATCH_CACHE_BYTES_MAX_PER_SHARD: usize = 4 << 20;
/// What one open connection may cost the broker at most: the native
/// core's read buffer or the Kafka framer's read space (64 KiB each, both
/// sized by a read before any byte arrived), glommio's receive buffer,
/// the task and the connection state.
const CONNECTION_BYTES_MAX: u64 = 96 << 10;
/// Allocator and thread-stack slack over the baseline.
const SLACK_BYTES: u64 = 64 << 20;

fn ip(text: &str) -> IpAddr {
    text.parse().expect("literal address")
}

/// Raises this process's open-file limit to its hard limit: the test holds
/// a few thousand sockets, and the broker (a child) inherits the limit.
fn raise_nofile_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    let needed = (2 * FLOOD_PER_PORT + 2 * KAFKA_CONNECTIONS_MAX + 1000) as u64;
    assert!(
        limit.rlim_cur >= needed,
        "RLIMIT_NOFILE hard limit {} is below the {needed} sockets this test holds",
        limit.rlim_cur
    );
}

/// A TCP connection to `to` from the local address `from`.
fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    socket
        .bind(&SockAddr::from(SocketAddr::new(from, 0)))
        .expect("bind a loopback source address");
    socket
        .connect_timeout(&SockAddr::from(to), PATIENCE)
        .expect("connect");
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream.set_write_timeout(Some(PATIENCE)).expect("timeout");
    stream
}

fn metadata_body() -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let root = wire::MetadataRequest::create(
        &mut fbb,
        &wire::MetadataRequestArgs {
            topics: None,
            allow_auto_topic_creation: false,
        },
    );
    fbb.finish(root, None);
    fbb.finished_data().to_vec()
}

/// Sends a native Metadata request; `true` if it was answered, `false` if
/// the broker closed the connection instead (refused it).
fn native_served(stream: TcpStream) -> (bool, Conn) {
    let mut conn = Conn::from_stream(stream);
    let cid = {
        let body = metadata_body();
        let mut out = BytesMut::new();
        fjord_schema::frame::encode_frame(
            &mut out,
            ApiKey::Metadata as u16,
            0,
            fjord_schema::frame::FrameFlags(0),
            fjord_schema::CorrelationId(1),
            &body,
            &[],
        );
        if conn.stream.write_all(&out).is_err() {
            return (false, conn);
        }
        1
    };
    match conn.try_receive() {
        Ok(frame) => {
            assert_eq!(frame.header.correlation_id().get(), cid);
            assert!(matches!(decode_response(&frame), Ok(Response::Metadata(_))));
            (true, conn)
        }
        Err(error) => {
            assert_closed_error(&error);
            (false, conn)
        }
    }
}

/// Sends a Kafka ApiVersions v0 request; `true` if it was answered, `false`
/// if the broker closed the connection instead.
fn kafka_served(stream: &mut TcpStream) -> bool {
    let mut header = RequestHeader::default();
    header.request_api_key = kafka_protocol::messages::ApiKey::ApiVersions as i16;
    header.request_api_version = 0;
    header.correlation_id = 7;
    header.client_id = Some(StrBytes::from_static_str("flood-test"));
    let mut body = BytesMut::new();
    header.encode(&mut body, 1).expect("header");
    ApiVersionsRequest::default()
        .encode(&mut body, 0)
        .expect("body");
    let mut frame = BytesMut::new();
    frame.put_u32(body.len() as u32);
    frame.extend_from_slice(&body);
    if stream.write_all(&frame).is_err() {
        return false;
    }
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len) {
        Ok(()) => {}
        Err(error) => {
            assert_closed_error(&error);
            return false;
        }
    }
    let mut response = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut response).expect("whole response");
    assert_eq!(&response[..4], &7i32.to_be_bytes(), "correlation id");
    true
}

fn assert_closed_error(error: &std::io::Error) {
    assert!(
        matches!(
            error.kind(),
            ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
        ),
        "expected the broker to close the connection, got {error}"
    );
}

/// Waits (at most `PATIENCE`) for the broker to close `stream`.
fn assert_closed_by_broker(stream: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 256];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("{what}: expected a close, got {n} bytes"),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{what}: expected a close, got {e}"),
    }
}

/// Opens `attempts` connections from `from`, alternately to the native and
/// the Kafka listener, each making one request, all held open until every
/// attempt was made; returns how many were served.
fn served_from(from: IpAddr, attempts: usize, native: SocketAddr, kafka: SocketAddr) -> usize {
    let mut held_native = Vec::new();
    let mut held_kafka = Vec::new();
    let mut served = 0;
    for i in 0..attempts {
        if i % 2 == 0 {
            let (ok, conn) = native_served(connect_from(from, native));
            served += usize::from(ok);
            held_native.push(conn);
        } else {
            let mut stream = connect_from(from, kafka);
            served += usize::from(kafka_served(&mut stream));
            held_kafka.push(stream);
        }
    }
    served
}

/// Retries `served` until it returns true, at most `PATIENCE` (the broker
/// gives a slot back once it has seen the connection end).
fn eventually(what: &str, mut served: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !served() {
        assert!(Instant::now() < deadline, "{what}: never served");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_connection_flood_leaves_room_for_other_clients_and_is_closed_at_the_first_request_deadline() {
    raise_nofile_limit();
    let mut broker = Broker::start(&[
        "--shards",
        &SHARDS.to_string(),
        "--shard-ports",
        "false",
        "--connections-max-per-shard",
        &CONNECTIONS_MAX_PER_SHARD.to_string(),
        "--native-connections-max",
        &NATIVE_CONNECTIONS_MAX.to_string(),
        "--kafka-connections-max",
        &KAFKA_CONNECTIONS_MAX.to_string(),
        "--connections-max-per-ip",
        &PER_IP_MAX.to_string(),
        "--connections-max-per-ip-overrides",
        &format!("127.0.0.2:{OVERRIDE_MAX}"),
        "--connection-first-request-timeout-ms",
        "5000",
        "--frame-bytes-max",
        "1048576",
        "--message-max-bytes",
        "1048576",
        "--log-write-buffer-bytes",
        "2097152",
        "--inflight-bytes-max-per-shard",
        &INFLIGHT_BYTES_MAX_PER_SHARD.to_string(),
        "--batch-cache-bytes-max-per-shard",
        &BATCH_CACHE_BYTES_MAX_PER_SHARD.to_string(),
    ]);
    let native = broker.addr;
    let kafka = broker.kafka_addr();
    let pid = broker.child.id();
    assert_eq!(
        broker.conn().create_topic("steady", 1, &[]),
        ErrorCode::None
    );
    let producer = SteadyProducer::start(native, "steady", 0);
    let baseline = rss_bytes(pid);

    // The flood: idle connections from 127.0.0.1 on both ports, as many as
    // the kernel completes (the broker closes those over the limits).
    let mut flood: Vec<TcpStream> = (0..FLOOD_PER_PORT)
        .flat_map(|_| [native, kafka])
        .map(|to| connect_from(ip("127.0.0.1"), to))
        .collect();

    // Fresh clients from another address are served on both listeners.
    let (served, _fresh_native) = native_served(connect_from(ip("127.0.0.3"), native));
    assert!(
        served,
        "a native client from 127.0.0.3 was refused during the flood"
    );
    let mut fresh_kafka = connect_from(ip("127.0.0.3"), kafka);
    assert!(
        kafka_served(&mut fresh_kafka),
        "a Kafka client from 127.0.0.3 was refused during the flood"
    );

    // Connections admitted but silent, or sending only part of a request,
    // are closed at the first-request deadline on both ports.
    let mut silent_native = connect_from(ip("127.0.0.4"), native);
    let mut partial_native = connect_from(ip("127.0.0.4"), native);
    partial_native
        .write_all(b"FJRD\x00\x00")
        .expect("partial native frame");
    let mut silent_kafka = connect_from(ip("127.0.0.4"), kafka);
    let mut partial_kafka = connect_from(ip("127.0.0.4"), kafka);
    partial_kafka
        .write_all(&[0, 0, 0, 100, 0, 18])
        .expect("partial kafka frame");
    assert_closed_by_broker(&mut silent_native, "silent native connection");
    assert_closed_by_broker(&mut partial_native, "partial native request");
    assert_closed_by_broker(&mut silent_kafka, "silent kafka connection");
    assert_closed_by_broker(&mut partial_kafka, "partial kafka request");
    // Every flood connection is closed: over the limit at once, the
    // admitted ones at the deadline.
    for (i, stream) in flood.iter_mut().enumerate() {
        assert_closed_by_broker(stream, &format!("flood connection {i}"));
    }
    drop(flood);
    // The flooded address got its slots back.
    eventually("a native client from 127.0.0.1 after the flood", || {
        native_served(connect_from(ip("127.0.0.1"), native)).0
    });

    // An address holds at most PER_IP_MAX connections, both listeners
    // together; the override gives 127.0.0.2 OVERRIDE_MAX.
    assert_eq!(
        served_from(ip("127.0.0.6"), PER_IP_MAX + 10, native, kafka),
        PER_IP_MAX
    );
    assert_eq!(
        served_from(ip("127.0.0.2"), OVERRIDE_MAX + 10, native, kafka),
        OVERRIDE_MAX
    );

    // A full Kafka listener: connections that each made a request, from
    // many addresses, until one is refused although its address has room.
    // The native listener keeps serving meanwhile.
    let mut filled: Vec<TcpStream> = Vec::new();
    let mut full_at = None;
    'fill: for host in 1..=(2 * KAFKA_CONNECTIONS_MAX / PER_IP_MAX) as u8 {
        let from = IpAddr::from([127, 0, 1, host]);
        for _ in 0..PER_IP_MAX {
            let mut stream = connect_from(from, kafka);
            if !kafka_served(&mut stream) {
                full_at = Some(from);
                break 'fill;
            }
            filled.push(stream);
        }
    }
    let full_at = full_at.expect("the Kafka listener never filled");
    assert!(
        filled.len() <= KAFKA_CONNECTIONS_MAX,
        "{} Kafka connections served at once",
        filled.len()
    );
    let (served, _native_during) = native_served(connect_from(full_at, native));
    assert!(served, "a full Kafka listener refused a native client");
    filled.pop();
    eventually("a Kafka client once the listener has room", || {
        kafka_served(&mut connect_from(ip("127.0.0.5"), kafka))
    });
    drop(filled);

    let acked = producer.stop_and_verify(native);
    assert!(acked > 0, "the steady producer got nothing acknowledged");
    broker.assert_running();
    let peak = rss_peak_bytes(pid);
    let connections = (NATIVE_CONNECTIONS_MAX + KAFKA_CONNECTIONS_MAX) as u64;
    let budgets =
        (SHARDS * (INFLIGHT_BYTES_MAX_PER_SHARD + BATCH_CACHE_BYTES_MAX_PER_SHARD)) as u64;
    let bound = baseline + connections * CONNECTION_BYTES_MAX + budgets + SLACK_BYTES;
    eprintln!(
        "rss: baseline {} MiB, peak {} MiB, bound {} MiB",
        baseline >> 20,
        peak >> 20,
        bound >> 20
    );
    assert!(
        peak <= bound,
        "peak RSS {peak} over the bound {bound} (baseline {baseline})"
    );
}
