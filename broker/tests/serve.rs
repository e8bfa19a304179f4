//! Starts the real `fjord` binary and talks to it over TCP. Tests find the
//! broker's address in `<data-dir>/broker.addr`. No timing assertions:
//! timeouts only keep a broken broker from hanging the suite.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use fjord_net::client::{broker_error, Client, ClientConfig, ClientError};
use fjord_schema::api::ApiKey;
use fjord_schema::frame::{encode_frame, FrameDecoder, FrameFlags, FrameHeader};
use fjord_schema::{CorrelationId, ErrorCode};
use tempfile::TempDir;
use zerocopy::IntoBytes;

/// Generous bound for anything the broker must do; only prevents hangs.
const PATIENCE: Duration = Duration::from_secs(60);

struct Broker {
    child: Child,
    dir: TempDir,
    addr: SocketAddr,
}

impl Broker {
    fn start(extra: &[&str]) -> Broker {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = spawn_fjord(
            &data_dir(dir.path()),
            &log_file(dir.path()),
            "127.0.0.1:0",
            extra,
        );
        let addr_file = data_dir(dir.path()).join("broker.addr");
        let deadline = Instant::now() + PATIENCE;
        let addr = loop {
            if let Ok(text) = std::fs::read_to_string(&addr_file) {
                if let Ok(addr) = text.trim().parse() {
                    break addr;
                }
            }
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!("fjord exited with {status}: {}", logs(dir.path()));
            }
            assert!(
                Instant::now() < deadline,
                "fjord did not start: {}",
                logs(dir.path())
            );
            thread::sleep(Duration::from_millis(20));
        };
        Broker { child, dir, addr }
    }

    fn data_dir(&self) -> PathBuf {
        data_dir(self.dir.path())
    }

    fn client(&self) -> Client {
        Client::connect(self.addr, client_config()).expect("connect")
    }

    fn assert_running(&mut self) {
        assert!(
            self.child.try_wait().expect("try_wait").is_none(),
            "fjord died: {}",
            logs(self.dir.path())
        );
    }

    fn terminate(&mut self) -> ExitStatus {
        // SAFETY: kill(2) with a pid we spawned and have not reaped; no
        // memory is involved.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill failed");
        wait_exit(&mut self.child)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn data_dir(root: &Path) -> PathBuf {
    root.join("data")
}

fn log_file(root: &Path) -> PathBuf {
    root.join("fjord.log")
}

fn logs(root: &Path) -> String {
    std::fs::read_to_string(log_file(root)).unwrap_or_default()
}

fn spawn_fjord(data_dir: &Path, log: &Path, listen: &str, extra: &[&str]) -> Child {
    let log = File::create(log).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_fjord"))
        .arg("start")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", listen, "--kafka-listen", "127.0.0.1:0"])
        .args(extra)
        .env("FJORD_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn fjord")
}

fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "fjord did not exit");
        thread::sleep(Duration::from_millis(20));
    }
}

fn client_config() -> ClientConfig {
    ClientConfig {
        timeout: PATIENCE,
        ..ClientConfig::default()
    }
}

fn raw(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, PATIENCE).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream.set_write_timeout(Some(PATIENCE)).expect("timeout");
    stream
}

fn frame(api_key: u16, version: u16, cid: u32, body: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_frame(
        &mut out,
        api_key,
        version,
        FrameFlags(0),
        CorrelationId(cid),
        body,
        &[],
    );
    out.to_vec()
}

fn empty_table() -> Vec<u8> {
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let start = fbb.start_table();
    let root = fbb.end_table(start);
    fbb.finish(root, None);
    fbb.finished_data().to_vec()
}

/// Reads until the broker closes the connection (EOF or reset). Panics if
/// it sends a frame's worth of data instead or keeps it open past PATIENCE.
fn assert_closed_by_broker(mut stream: TcpStream) {
    let mut buf = [0u8; 256];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("expected a close, got {n} bytes"),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("expected a close, got {e}"),
    }
}

/// Reads one response frame from a raw socket.
fn read_response(stream: &mut TcpStream) -> fjord_schema::frame::Frame {
    let mut decoder = FrameDecoder::new(1 << 20);
    let mut buffer = BytesMut::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(frame) = decoder.decode(&mut buffer).expect("valid response frame") {
            return frame;
        }
        let n = stream.read(&mut chunk).expect("read response");
        assert!(n > 0, "broker closed instead of answering");
        buffer.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn api_versions_and_metadata_round_trip() {
    let mut broker = Broker::start(&[]);
    let mut client = broker.client();

    let versions = client.api_versions().expect("api versions");
    let listed: Vec<(u16, u16, u16)> = versions
        .api_versions
        .iter()
        .map(|r| (r.api_key, r.min_version, r.max_version))
        .collect();
    let expected: Vec<(u16, u16, u16)> = fjord_broker::native::served_versions()
        .map(|(key, min, max)| (key as u16, min, max))
        .collect();
    assert_eq!(listed, expected);
    let keys: Vec<u16> = listed.iter().map(|(key, _, _)| *key).collect();
    assert_eq!(
        keys[..7],
        (0..=6).collect::<Vec<u16>>(),
        "ApiVersions, Metadata, CreateTopics, DeleteTopics, Produce, Fetch, ListOffsets"
    );
    for group_api in 10..=18u16 {
        assert!(keys.contains(&group_api), "group api {group_api} listed");
    }
    assert!(versions.broker_software_version.is_some());

    let metadata = client.metadata(None).expect("metadata");
    assert_eq!(metadata.brokers.len(), 1);
    let this = &metadata.brokers[0];
    assert_eq!(this.host, "127.0.0.1");
    assert_eq!(this.port, broker.addr.port());
    assert!(!this.shard_ports.is_empty());
    let names: Vec<&str> = metadata.topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["__consumer_offsets"], "only the internal topic");

    let named = client.metadata(Some(&["orders"])).expect("metadata");
    assert_eq!(named.topics.len(), 1);
    assert_eq!(named.topics[0].name, "orders");
    assert_eq!(named.topics[0].error, ErrorCode::UnknownTopicOrPartition);

    // Every advertised shard port serves too.
    for port in &this.shard_ports {
        let mut shard_client =
            Client::connect(("127.0.0.1", *port), client_config()).expect("shard port");
        let again = shard_client
            .metadata(Some(&[]))
            .expect("metadata on shard port");
        assert_eq!(again.brokers, metadata.brokers);
    }

    // Pipelined requests are answered and matched by correlation id.
    let body = empty_table();
    let first = client.send(ApiKey::Metadata, 0, &body, &[]).expect("send");
    let second = client
        .send(ApiKey::ApiVersions, 0, &body, &[])
        .expect("send");
    let second_frame = client.receive(second).expect("second");
    let first_frame = client.receive(first).expect("first");
    assert_eq!(
        second_frame.header.api_key.get(),
        ApiKey::ApiVersions as u16
    );
    assert_eq!(first_frame.header.api_key.get(), ApiKey::Metadata as u16);
    broker.assert_running();
}

#[test]
fn hostile_clients_do_not_disturb_a_good_one() {
    let mut broker = Broker::start(&["--idle-timeout-ms", "1500", "--frame-bytes-max", "65536"]);
    let addr = broker.addr;
    let done = Arc::new(AtomicBool::new(false));

    // The well-behaved client keeps making requests the whole time.
    let good = thread::spawn({
        let done = done.clone();
        move || {
            let mut client = Client::connect(addr, client_config()).expect("connect");
            let mut rounds = 0u64;
            while !done.load(Ordering::Acquire) || rounds == 0 {
                client
                    .api_versions()
                    .expect("api versions while under attack");
                client.metadata(None).expect("metadata while under attack");
                rounds += 1;
            }
            rounds
        }
    });

    let mut hostile = Vec::new();
    // Garbage bytes: bad magic closes the connection.
    hostile.push(thread::spawn(move || {
        let mut stream = raw(addr);
        stream.write_all(&[0xA5; 100]).expect("write");
        assert_closed_by_broker(stream);
    }));
    // A header announcing a 4 GiB frame closes the connection.
    hostile.push(thread::spawn(move || {
        let mut stream = raw(addr);
        let header = FrameHeader::new(0, 0, FrameFlags(0), CorrelationId(1), u32::MAX, 0);
        stream.write_all(header.as_bytes()).expect("write");
        assert_closed_by_broker(stream);
    }));
    // A truncated frame followed by EOF: closed, nothing answered.
    hostile.push(thread::spawn(move || {
        let mut stream = raw(addr);
        let whole = frame(0, 0, 1, &empty_table());
        stream.write_all(&whole[..whole.len() - 3]).expect("write");
        stream.shutdown(Shutdown::Write).expect("shutdown");
        assert_closed_by_broker(stream);
    }));
    // Wrong version: an ERROR response, and the connection stays usable.
    hostile.push(thread::spawn(move || {
        let mut client = Client::connect(addr, client_config()).expect("connect");
        let cid = client
            .send(ApiKey::ApiVersions, 9, &empty_table(), &[])
            .expect("send");
        let response = client.receive(cid).expect("answered");
        assert!(response.header.flags().is_error());
        match broker_error(&response).expect("ErrorResponse body") {
            ClientError::Broker { code, .. } => assert_eq!(code, ErrorCode::UnsupportedVersion),
            other => panic!("unexpected {other:?}"),
        }
        client.api_versions().expect("still usable after an error");
    }));
    // Unknown api key: an ERROR response with UNSUPPORTED_VERSION.
    hostile.push(thread::spawn(move || {
        let mut stream = raw(addr);
        stream.write_all(&frame(999, 0, 77, b"")).expect("write");
        let response = read_response(&mut stream);
        assert_eq!(response.header.correlation_id(), CorrelationId(77));
        assert!(response.header.flags().is_error());
        match broker_error(&response).expect("ErrorResponse body") {
            ClientError::Broker { code, .. } => assert_eq!(code, ErrorCode::UnsupportedVersion),
            other => panic!("unexpected {other:?}"),
        }
    }));
    // Slowloris: one byte at a time never completes a request, so the idle
    // timeout closes the connection.
    hostile.push(thread::spawn(move || {
        let mut stream = raw(addr);
        let whole = frame(0, 0, 1, &[0u8; 2000]);
        let deadline = Instant::now() + PATIENCE;
        for byte in &whole {
            if stream.write_all(std::slice::from_ref(byte)).is_err() {
                break;
            }
            assert!(Instant::now() < deadline, "slowloris was never closed");
            thread::sleep(Duration::from_millis(50));
        }
        assert_closed_by_broker(stream);
    }));

    for attacker in hostile {
        attacker.join().expect("hostile client's expectations hold");
    }
    done.store(true, Ordering::Release);
    let rounds = good.join().expect("good client was served throughout");
    assert!(rounds > 0);
    broker.assert_running();
    broker.client().api_versions().expect("still serving");
}

#[test]
fn second_broker_on_the_same_data_dir_fails_clearly() {
    let broker = Broker::start(&[]);
    let root = tempfile::tempdir().expect("tempdir");
    let log = log_file(root.path());
    let mut second = spawn_fjord(&broker.data_dir(), &log, "127.0.0.1:0", &[]);
    let status = wait_exit(&mut second);
    assert!(!status.success());
    let stderr = std::fs::read_to_string(&log).expect("log");
    assert!(
        stderr.contains("locked by another fjord process"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("pid {}", broker.child.id())),
        "{stderr}"
    );
}

#[test]
fn a_data_dir_is_never_served_as_another_node() {
    let mut broker = Broker::start(&["--node-id", "4"]);
    let meta = std::fs::read_to_string(broker.data_dir().join("meta.properties")).expect("meta");
    assert!(meta.contains("node.id=4"), "{meta}");
    assert!(broker.terminate().success());
    let root = tempfile::tempdir().expect("tempdir");
    let log = log_file(root.path());
    let mut other = spawn_fjord(&broker.data_dir(), &log, "127.0.0.1:0", &["--node-id", "5"]);
    let status = wait_exit(&mut other);
    assert!(!status.success());
    let stderr = std::fs::read_to_string(&log).expect("log");
    assert!(stderr.contains("belongs to node 4"), "{stderr}");
    assert!(stderr.contains("--node-id 4"), "{stderr}");
    // The file is untouched by the refused start.
    let after = std::fs::read_to_string(broker.data_dir().join("meta.properties")).expect("meta");
    assert_eq!(after, meta);
}

#[test]
fn occupied_port_fails_clearly() {
    let squatter = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = squatter.local_addr().expect("addr").port();
    let root = tempfile::tempdir().expect("tempdir");
    let log = log_file(root.path());
    let listen = format!("127.0.0.1:{port}");
    let mut fjord = spawn_fjord(&data_dir(root.path()), &log, &listen, &[]);
    let status = wait_exit(&mut fjord);
    assert!(!status.success());
    let stderr = std::fs::read_to_string(&log).expect("log");
    assert!(stderr.contains("already in use"), "{stderr}");
}

#[test]
fn connections_over_the_limit_are_closed() {
    let mut broker = Broker::start(&[
        "--shards",
        "1",
        "--shard-ports",
        "false",
        "--connections-max-per-shard",
        "1",
    ]);
    let mut first = broker.client();
    first.api_versions().expect("first connection is served");
    assert_closed_by_broker(raw(broker.addr));
    first.metadata(None).expect("first connection unaffected");
    drop(first);
    // The slot frees when the first connection goes away.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut client = broker.client();
        if client.api_versions().is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed");
        thread::sleep(Duration::from_millis(20));
    }
    broker.assert_running();
}

#[test]
fn sigterm_exits_cleanly() {
    let mut broker = Broker::start(&[]);
    // A connected, idle client must not hold the shutdown up.
    let mut client = broker.client();
    client.api_versions().expect("served");
    let status = broker.terminate();
    assert!(
        status.success(),
        "exit status {status}: {}",
        logs(broker.dir.path())
    );
    assert!(!broker.data_dir().join("broker.addr").exists());
    assert!(matches!(
        client.api_versions(),
        Err(ClientError::Closed | ClientError::Io(_))
    ));
}
