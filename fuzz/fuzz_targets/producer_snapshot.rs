//! Producer-state snapshots (`fjord_broker::partition::producer_state`), read back
//! from each partition's directory on open.
//!
//! Input layout:
//!
//! ```text
//! 0     mode  bit 0: append the CRC32C of the rest (so the fuzzer gets
//!             past the checksum to the entries); bits 1-4: n, the table
//!             holds at most 2^n producers
//! rest  the snapshot (with its CRC32C when bit 0 is clear)
//! ```
//!
//! Checks: never panics; a snapshot that decodes holds at most
//! `producers_max` producers, and every producer's last batch is ordered
//! (base offset at most last offset); its encoding decodes again, to a
//! table that encodes to the same bytes (encode ∘ decode is a fixpoint);
//! the decoded table then answers `check` and takes `apply` and `expire`
//! for the producers it names (without panicking on any stored value).
#![no_main]

use fjord_broker::partition::producer_state::{ProducerBatch, ProducerStateConfig, ProducerStates};
use fjord_schema::{Offset, ProducerEpoch, ProducerId, Sequence};
use libfuzzer_sys::fuzz_target;

/// Producer ids named in a snapshot body: each entry's first 8 bytes, if
/// the entries are laid out as the format says (magic 4, version 2,
/// count 4, then per entry id 8, epoch 2, last seen 8, n 1, n × 24).
fn ids(body: &[u8]) -> Vec<i64> {
    let mut out = Vec::new();
    let mut at = 10;
    while body.len() >= at + 19 {
        out.push(i64::from_le_bytes(body[at..at + 8].try_into().expect("8")));
        at += 19 + 24 * usize::from(body[at + 18]);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let config = ProducerStateConfig {
        producers_max: 1 << ((mode >> 1) & 0xf),
        expiration_ms: 86_400_000,
    };
    let mut bytes = rest.to_vec();
    if mode & 1 != 0 {
        bytes.extend_from_slice(&crc32c::crc32c(rest).to_le_bytes());
    }
    let Some(mut states) = ProducerStates::decode(config, &bytes) else {
        return;
    };
    assert!(states.len() <= config.producers_max);

    let encoded = states.encode();
    let again = ProducerStates::decode(config, &encoded).expect("an encoded snapshot decodes");
    assert_eq!(again.len(), states.len());
    assert_eq!(again.encode(), encoded, "encode(decode(encode)) differs");

    for id in ids(&bytes[..bytes.len() - 4]) {
        let producer_id = ProducerId(id);
        let Some((epoch, last)) = states.last_batch(producer_id) else {
            continue;
        };
        assert!(last.base_offset <= last.last_offset);
        // As a client would continue (sequences of a real batch are never
        // negative; the table must not hold one either).
        let first_seq = if last.last_seq.0 >= 0 {
            last.last_seq.wrapping_plus(1)
        } else {
            Sequence(0)
        };
        let next = ProducerBatch {
            producer_id,
            epoch,
            first_seq,
            last_seq: first_seq.wrapping_plus(2),
        };
        let _ = states.check(&next);
        let _ = states.check(&ProducerBatch {
            epoch: ProducerEpoch(epoch.0.wrapping_add(1)),
            first_seq: Sequence(0),
            ..next
        });
        let base = Offset(last.last_offset.0.saturating_add(1));
        states.apply(&next, base, Offset(base.0.saturating_add(2)), 0);
    }
    let before = states.len();
    let expired = states.expire(i64::MAX);
    assert_eq!(states.len(), before - expired);
});
