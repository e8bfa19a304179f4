//! Arbitrary bytes as back-to-back record batches: `Batches::new`,
//! `BatchView::parse`, `records()` with a small decompression limit, then
//! every record, key, value and header.
//!
//! Input layout: byte 0 is a mode byte; the rest is the batch bytes.
//! Mode bit 0 set: before parsing, every batch whose header parses gets its
//! CRC32C recomputed, so that random bodies reach the decompressors and the
//! flatbuffers verifier instead of all stopping at the CRC check. Bits 1-3
//! choose the decompression limit (64 B << n).
#![no_main]

use std::hint::black_box;

use fjord_schema::batch::BatchView;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let mut bytes = bytes.to_vec();
    if mode & 1 != 0 {
        fjord_fuzz::fix_crcs(&mut bytes);
    }
    let limit = 64usize << ((mode >> 1) & 0b111);

    // The header check alone, as storage recovery uses it.
    if let Ok(header) = BatchView::parse_header(&bytes) {
        black_box(header.batch_len());
    }
    // One batch.
    match BatchView::parse(&bytes) {
        Ok((view, rest)) => {
            assert_eq!(view.as_bytes().len() + rest.len(), bytes.len());
            let mut scratch = Vec::new();
            fjord_fuzz::walk_batch(&view, &mut scratch, limit);
        }
        Err(error) => {
            black_box(error.to_string());
        }
    }
    // All of them.
    fjord_fuzz::walk_batches(&bytes, limit);
});
