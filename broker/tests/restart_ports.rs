//! A supervisor that restarts a SIGKILLed broker at once, on the same
//! ports, must not trip over the dead broker's listeners: they linger (and
//! even accept) for a few milliseconds after the process is reaped while
//! io_uring tears down, and the start's port check used to fail with
//! "already in use" (issue 11). The data dir lock was free, so the start
//! waits a little (`port_wait_ms`) for the ports instead.

mod common;

use common::pressure::assert_acked_readable;
use common::{batch, Broker};
use fjord_schema::ErrorCode;

#[test]
fn immediate_restart_after_sigkill_gets_its_ports_back() {
    let port = Broker::free_fixed_port();
    let kafka_port = Broker::free_fixed_port();
    let listen = format!("127.0.0.1:{port}");
    let kafka = format!("127.0.0.1:{kafka_port}");
    let mut broker = Broker::start(&[
        "--shards",
        "1",
        "--listen",
        &listen,
        "--kafka-listen",
        &kafka,
    ]);
    let mut conn = broker.conn();
    assert_eq!(conn.create_topic("restarts", 1, &[]), ErrorCode::None);
    let mut acked = Vec::new();
    for round in 0..8u32 {
        // Open connections on both ports so the dying process holds
        // accepted sockets as well as listeners.
        let value = format!("round-{round}");
        let (error, offset) =
            broker
                .conn()
                .produce("restarts", 0, &batch(&[(b"k", value.as_bytes())], 1), -1);
        assert_eq!(error, ErrorCode::None);
        acked.push((offset, value.into_bytes()));
        let _kafka_conn = std::net::TcpStream::connect(broker.kafka_addr()).expect("kafka port");
        if let Err(logs) = broker.kill_and_restart_at_once() {
            panic!("restart {round} failed: {logs}");
        }
        assert_eq!(broker.addr.port(), port, "same native port");
        assert_eq!(broker.kafka_addr().port(), kafka_port, "same Kafka port");
    }
    assert_acked_readable(broker.addr, "restarts", 0, &acked);
}
