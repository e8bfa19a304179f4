//! `__consumer_offsets` records (`fjord_broker::group::offsets_log`), read
//! back from disk on every start (`GroupHost::replay`).
//!
//! Input layout:
//!
//! ```text
//! 0      mode  bit 0: batch mode (below); else one record:
//!              bit 1: null value (a tombstone); bit 2: null key
//! 1..3   key length, u16 LE (clamped to what is left)
//! 3..    key, then the value (the rest)
//! ```
//!
//! Batch mode: the rest is native batches as a replay reads them from the
//! offsets partition (bit 1: recompute each batch's CRC32C first), and
//! every record of every batch that verifies is decoded.
//!
//! Checks: never panics; a record that decodes re-encodes to exactly its
//! bytes (the format has one encoding per record: fixed-size integers,
//! length-prefixed strings, no trailing bytes); its group maps to a
//! partition below the partition count.
#![no_main]

use fjord_broker::group::offsets_log::{decode, encode_key, encode_value, partition_for};
use fjord_schema::batch::Batches;
use libfuzzer_sys::fuzz_target;

fn check(key: Option<&[u8]>, value: Option<&[u8]>) {
    let Ok(record) = decode(key, value) else {
        return;
    };
    let key = key.expect("a decoded record has a key");
    assert_eq!(encode_key(&record.group_id, &record.partition), key);
    match (&record.offset, value) {
        (Some(offset), Some(value)) => {
            assert_eq!(encode_value(offset, record.commit_timestamp_ms), value);
        }
        (None, None) => {}
        (offset, value) => panic!("offset {offset:?} decoded from value {value:?}"),
    }
    for partitions in [1, 50, u32::MAX] {
        assert!(partition_for(&record.group_id, partitions) < partitions);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 != 0 {
        let mut bytes = rest.to_vec();
        if mode & 2 != 0 {
            fjord_fuzz::fix_crcs(&mut bytes);
        }
        let mut scratch = Vec::new();
        for batch in Batches::new(&bytes) {
            let Ok(batch) = batch else { break };
            let Ok(records) = batch.records(&mut scratch, 1 << 20) else {
                continue;
            };
            for record in records.iter() {
                check(record.key(), record.value());
            }
        }
        return;
    }
    let Some(len) = rest.get(..2) else {
        return;
    };
    let body = &rest[2..];
    let key_len = usize::from(u16::from_le_bytes([len[0], len[1]])).min(body.len());
    let (key, value) = body.split_at(key_len);
    let key = (mode & 4 == 0).then_some(key);
    let value = (mode & 2 == 0).then_some(value);
    check(key, value);
});
