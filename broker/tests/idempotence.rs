//! The idempotent producer against the real `fjord` binary: InitProducerId,
//! duplicates acknowledged with their original offset and written once,
//! gaps and fenced epochs refused, state that survives SIGKILL, and a
//! client `Producer` retrying through a proxy that cuts its connections.

mod common;

use bytes::Bytes;
use common::{Broker, Conn};
use fjord_schema::api::{decode_response, ApiKey, Response};
use fjord_schema::batch::{BatchBuilder, BatchOptions, RecordInput};
use fjord_schema::{wire, ErrorCode, ProducerEpoch, ProducerId, Sequence};
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

fn idempotent_batch(id: i64, epoch: i16, first_seq: i32, values: &[&str]) -> Bytes {
    let mut builder = BatchBuilder::new(BatchOptions {
        producer_id: ProducerId(id),
        producer_epoch: ProducerEpoch(epoch),
        base_sequence: Sequence(first_seq),
        ..BatchOptions::default()
    });
    for (i, value) in values.iter().enumerate() {
        builder.push(RecordInput {
            value: Some(value.as_bytes()),
            timestamp: i as i64,
            ..RecordInput::default()
        });
    }
    builder.finish().expect("valid batch")
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
}
