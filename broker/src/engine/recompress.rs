//! Kafka's `compression.type` topic config on the produce path: a batch
//! whose codec differs from the topic's is re-encoded before it goes to
//! the owning shard (native batches and Kafka batches converted to native
//! alike). The one place the broker re-encodes a batch; its CRC32C is
//! recomputed (`fjord_schema::batch::recompress`).
//!
//! Bounded: the memory a request's recompression needs (decompressed
//! bodies and the new batches, from the batches' own length prefixes)
//! comes out of the shard's in-flight budget, on top of the request frame,
//! and is held until the produce is answered. It is taken without
//! waiting (a request waiting for budget while holding its frame could
//! deadlock with others doing the same): when it is not free the
//! partition gets REQUEST_TIMED_OUT, which clients retry; a need larger
//! than the whole budget gets MESSAGE_TOO_LARGE. The shard yields between
//! batches, so one request cannot monopolise it.

use bytes::{Bytes, BytesMut};
use fjord_schema::batch::{recompress, BatchView, BATCH_HEADER_LEN};
use fjord_schema::{BatchError, Compression, ErrorCode};
use glommio::sync::Permit;

use super::types::TopicParts;
use super::Engine;
use super::{RouteError, Routed};
use crate::ops::ProduceResult;

/// Room a codec may need beyond its input (worst-case expansion of
/// incompressible data, framing, the length prefix).
fn compressed_bound_bytes(uncompressed: usize) -> usize {
    uncompressed + uncompressed / 64 + 1024
}

/// Memory recompressing `records` to `target` needs at its peak (every
/// new batch, plus the largest decompressed body), or `None` when no
/// batch changes. Batches that do not parse are left to the produce
/// path, which refuses them with the same checks as ever.
pub(crate) fn memory_needed_bytes(records: &[u8], target: Compression) -> Option<usize> {
    let mut rest = records;
    let mut outputs = 0usize;
    let mut scratch_max = 0usize;
    let mut changes = false;
    while let Ok((view, tail)) = BatchView::parse(rest) {
        rest = tail;
        if view.header().compression() == Ok(target) {
            outputs = outputs.saturating_add(view.as_bytes().len());
            continue;
        }
        let Ok(body) = view.uncompressed_len_claimed() else {
            return None;
        };
        changes = true;
        outputs = outputs.saturating_add(BATCH_HEADER_LEN + compressed_bound_bytes(body));
        scratch_max = scratch_max.max(body);
    }
    (changes && rest.is_empty()).then_some(outputs.saturating_add(scratch_max))
}

/// `records` with every batch in `target`'s codec; unchanged batches are
/// copied as they are. At most `uncompressed_len_max` bytes per body.
pub(crate) async fn recompress_batches(
    records: &[u8],
    target: Compression,
    uncompressed_len_max: usize,
) -> Result<Bytes, (ErrorCode, String)> {
    let mut out = BytesMut::with_capacity(records.len());
    let mut rest = records;
    while !rest.is_empty() {
        let at = records.len() - rest.len();
        let failed = |error: BatchError| {
            let code = match error {
                BatchError::TooLarge { .. } => ErrorCode::MessageTooLarge,
                BatchError::UnsupportedCompression(_) => ErrorCode::UnsupportedCompressionType,
                _ => ErrorCode::CorruptMessage,
            };
            (
                code,
                format!(
                    "batch at byte {at}: recompressing to {}: {error}",
                    target.name()
                ),
            )
        };
        let (view, tail) = BatchView::parse(rest).map_err(failed)?;
        if view.header().compression() == Ok(target) {
            out.extend_from_slice(view.as_bytes());
        } else {
            let batch =
                recompress(view.as_bytes(), target, uncompressed_len_max).map_err(failed)?;
            out.extend_from_slice(&batch);
            glommio::yield_if_needed().await;
        }
        rest = tail;
    }
    Ok(out.freeze())
}

impl Engine {
    /// `produce_routed` (`acks` valid), after recompressing for the topics'
    /// `compression.type`; the budget taken for it is held until every
    /// partition answered.
    pub(super) async fn produce_recompressed(
        &self,
        mut topics: Routed<Bytes>,
        acks: i8,
    ) -> TopicParts<ProduceResult> {
        let (_recompressed, refused) = self.recompress_for_topics(&mut topics).await;
        let mut results = self.produce_routed(topics, acks).await;
        // Refused partitions were unrouted; give them their own answer.
        for (t, p, result) in refused {
            results[t].1[p].1 = result;
        }
        results
    }

    /// Recompresses the routed partitions of topics whose
    /// `compression.type` names a codec. Returns the budget permits to
    /// hold until the produce is answered, and the partitions refused
    /// (topic index, partition index, result); those are unrouted.
    pub(super) async fn recompress_for_topics(
        &self,
        topics: &mut Routed<Bytes>,
    ) -> (Vec<Permit<'_>>, Vec<(usize, usize, ProduceResult)>) {
        let catalog = self.service.catalog();
        let mut permits = Vec::new();
        let mut refused = Vec::new();
        for (t, (name, parts)) in topics.iter_mut().enumerate() {
            let target = catalog
                .get(name)
                .and_then(|meta| meta.config.compression_type.target());
            let Some(target) = target else {
                continue;
            };
            for (p, part) in parts.iter_mut().enumerate() {
                if part.route.is_err() {
                    continue;
                }
                let Some(need) = memory_needed_bytes(&part.input, target) else {
                    continue;
                };
                let mut refuse = |code: ErrorCode, message: String| {
                    part.route = Err(RouteError::Refused(code));
                    refused.push((t, p, ProduceResult::error(code, message)));
                };
                if need > self.limits.inflight_bytes_max {
                    refuse(
                        ErrorCode::MessageTooLarge,
                        format!(
                            "recompressing to {} needs {need} bytes, more than this shard's in-flight budget of {} bytes",
                            target.name(),
                            self.limits.inflight_bytes_max
                        ),
                    );
                    continue;
                }
                let Ok(permit) = self.inflight.try_acquire_permit(need as u64) else {
                    refuse(
                        ErrorCode::RequestTimedOut,
                        format!(
                            "recompressing to {} needs {need} bytes of this shard's in-flight budget, which is in use; retry",
                            target.name()
                        ),
                    );
                    continue;
                };
                match recompress_batches(&part.input, target, self.limits.inflight_bytes_max).await
                {
                    Ok(records) => {
                        part.input = records;
                        permits.push(permit);
                    }
                    Err((code, message)) => refuse(code, message),
                }
            }
        }
        (permits, refused)
    }
}

#[cfg(test)]
mod tests {
    use fjord_schema::batch::{BatchBuilder, BatchOptions, RecordInput};

    use super::*;

    fn batch(codec: Compression, values: usize) -> Bytes {
        let mut builder = BatchBuilder::new(BatchOptions {
            compression: codec,
            ..BatchOptions::default()
        });
        for i in 0..values {
            builder.push(RecordInput {
                value: Some(&[7u8; 300]),
                timestamp: i as i64,
                ..RecordInput::default()
            });
        }
        builder.finish().expect("batch")
    }

    #[test]
    fn memory_is_counted_only_for_batches_that_change() {
        let zstd = batch(Compression::Zstd, 20);
        assert_eq!(memory_needed_bytes(&zstd, Compression::Zstd), None);
        let plain = batch(Compression::None, 20);
        let need = memory_needed_bytes(&plain, Compression::Zstd).expect("changes");
        let body = plain.len() - BATCH_HEADER_LEN;
        assert!(need >= 2 * body, "{need} for a {body}-byte body");
        // Garbage is left for the produce path to refuse.
        assert_eq!(memory_needed_bytes(&plain[..100], Compression::Zstd), None);
    }

    #[test]
    fn every_batch_ends_in_the_target_codec_with_unchanged_ones_copied() {
        let mut records = BytesMut::new();
        records.extend_from_slice(&batch(Compression::Gzip, 5));
        records.extend_from_slice(&batch(Compression::Zstd, 3));
        records.extend_from_slice(&batch(Compression::None, 4));
        let out = glommio::LocalExecutor::default()
            .run(recompress_batches(&records, Compression::Zstd, 1 << 20))
            .expect("recompressed");
        let mut rest = &out[..];
        let mut counts = Vec::new();
        while !rest.is_empty() {
            let (view, tail) = BatchView::parse(rest).expect("valid batch");
            assert_eq!(view.header().compression(), Ok(Compression::Zstd));
            counts.push(view.header().record_count());
            rest = tail;
        }
        assert_eq!(counts, [5, 3, 4]);
    }
}
