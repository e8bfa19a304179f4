//! What the Kafka-edge fuzz targets (`fuzz/`, docs/fuzzing.md) found,
//! against the real `fjord` binary: a producer-state snapshot holding a
//! negative sequence (it loaded, and the producer's next batch panicked
//! the shard), and a native batch with attribute bits the format does not
//! define (stored, then served to Kafka consumers in batches the Kafka
//! produce path itself refuses).

mod common;

use common::{batch, idempotent_batch, now_ms, Broker};
use fjord_schema::batch::BATCH_CRC_START;
use fjord_schema::ErrorCode;

/// A snapshot file body (`ProducerStates::encode`'s format) of one
/// producer whose one cached batch has sequences `first..=last`.
fn snapshot(id: i64, first: i32, last: i32, base_offset: u64, last_offset: u64) -> Vec<u8> {
    let mut out = b"FJPS".to_vec();
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&0i16.to_le_bytes());
    out.extend_from_slice(&now_ms().to_le_bytes());
    out.push(1);
    out.extend_from_slice(&first.to_le_bytes());
    out.extend_from_slice(&last.to_le_bytes());
    out.extend_from_slice(&base_offset.to_le_bytes());
    out.extend_from_slice(&last_offset.to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// A CRC-valid snapshot with a negative sequence is refused and the state
/// is rebuilt from the log: the producer's next batch is appended, and
/// its resend is a duplicate, instead of the shard panicking.
#[test]
fn a_snapshot_holding_a_negative_sequence_is_refused_and_the_log_rebuilds_the_state() {
    let mut broker = Broker::start(&["--shards", "1"]);
    let mut conn = broker.conn();
    assert_eq!(conn.create_topic("snap", 1, &[]), ErrorCode::None);
    let id = 7;
    let first = idempotent_batch(id, 0, 0, &["a", "b"]);
    assert_eq!(conn.produce("snap", 0, &first, -1), (ErrorCode::None, 0));
    drop(conn);
    assert!(broker.terminate().success());

    let dir = broker.data_dir().join("snap-0");
    let written = std::fs::read_dir(&dir)
        .expect("partition dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "snapshot"))
        .expect("a snapshot at clean shutdown");
    std::fs::write(&written, snapshot(id, -5, -5, 0, 1)).expect("overwrite the snapshot");
    broker.kill_and_restart();

    let mut conn = broker.conn();
    let next = idempotent_batch(id, 0, 2, &["c"]);
    assert_eq!(conn.produce("snap", 0, &next, -1), (ErrorCode::None, 2));
    assert_eq!(conn.produce("snap", 0, &first, -1), (ErrorCode::None, 0));
    assert_eq!(conn.produce("snap", 0, &next, -1), (ErrorCode::None, 2));
    let values: Vec<_> = conn
        .read_all("snap", 0, 0)
        .into_iter()
        .map(|(_, _, v)| v.expect("value"))
        .collect();
    assert_eq!(values, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    broker.assert_running();
}

/// A native produce of a batch with undefined attribute bits (bit 6 is
/// Kafka's delete-horizon flag) is refused as corrupt; the partition
/// stays writable and holds only the good batch.
#[test]
fn a_native_batch_with_undefined_attribute_bits_is_refused() {
    let mut broker = Broker::start(&["--shards", "1"]);
    let mut conn = broker.conn();
    assert_eq!(conn.create_topic("attrs", 1, &[]), ErrorCode::None);
    for bits in [1u16 << 6, 0xff00] {
        let mut bad = batch(&[(b"k", b"bad")], now_ms()).to_vec();
        let attributes = u16::from_le_bytes([bad[24], bad[25]]) | bits;
        bad[24..26].copy_from_slice(&attributes.to_le_bytes());
        let crc = crc32c::crc32c(&bad[BATCH_CRC_START..]);
        bad[20..24].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            conn.produce("attrs", 0, &bad, -1).0,
            ErrorCode::CorruptMessage,
            "attribute bits {bits:#06x}"
        );
    }
    let good = batch(&[(b"k", b"good")], now_ms());
    assert_eq!(conn.produce("attrs", 0, &good, -1), (ErrorCode::None, 0));
    let values: Vec<_> = conn
        .read_all("attrs", 0, 0)
        .into_iter()
        .map(|(_, _, v)| v.expect("value"))
        .collect();
    assert_eq!(values, [b"good".to_vec()]);
    broker.assert_running();
}
