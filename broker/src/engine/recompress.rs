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

use bytes::Bytes;
use fjord_schema::batch::{recompress, BatchView, BATCH_HEADER_LEN};
use fjord_schema::{BatchError, Compression, ErrorCode};
use glommio::sync::Permit;

use super::types::{BatchesError, TopicParts, VerifiedBatches};
use super::Engine;
use super::{RouteError, Routed};
use crate::ops::ProduceResult;

/// Room a codec may need beyond its input (worst-case expansion of
/// incompressible data, framing, the length prefix).
fn compressed_bound_bytes(uncompressed: usize) -> usize {
    uncompressed + uncompressed / 64 + 1024
}

/// The codec of a verified batch and the bytes its records body has
/// uncompressed, as it claims (the compressed body's length prefix,
/// checked when it is decompressed); read off the header and body without
/// another CRC pass.
fn codec_and_body_claimed(batch: &[u8]) -> Option<(Compression, usize)> {
    let codec = BatchView::parse_header(batch).ok()?.compression().ok()?;
    let body = batch.get(BATCH_HEADER_LEN..)?;
    let claimed = match codec {
        Compression::None => body.len(),
        _ => u32::from_le_bytes(*body.first_chunk::<4>()?) as usize,
    };
    Some((codec, claimed))
}

/// Memory recompressing `batches` to `target` needs at its peak (every
/// new batch, plus the largest decompressed body), or `None` when no
/// batch changes. A batch whose body claims no length is left as it is
/// (with the partition's other batches).
pub(crate) fn memory_needed_bytes(batches: &VerifiedBatches, target: Compression) -> Option<usize> {
    let mut outputs = 0usize;
    let mut scratch_max = 0usize;
    let mut changes = false;
    for batch in batches.iter() {
        let (codec, body) = codec_and_body_claimed(batch)?;
        if codec == target {
            // Passed through, not copied: no memory of its own.
            continue;
        }
        changes = true;
        outputs = outputs.saturating_add(BATCH_HEADER_LEN + compressed_bound_bytes(body));
        scratch_max = scratch_max.max(body);
    }
    changes.then_some(outputs.saturating_add(scratch_max))
}

/// `batches` with every batch in `target`'s codec: unchanged batches are
/// passed through as they are (not copied), the others re-encoded. At
/// most `uncompressed_len_max` bytes per body.
pub(crate) async fn recompress_batches(
    batches: VerifiedBatches,
    target: Compression,
    uncompressed_len_max: usize,
) -> Result<VerifiedBatches, (ErrorCode, String)> {
    let mut out = Vec::with_capacity(batches.len());
    let mut at = 0;
    for batch in batches {
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
        let len = batch.len();
        let header = BatchView::parse_header(&batch).map_err(failed)?;
        if header.compression() == Ok(target) {
            out.push(batch);
        } else {
            let rewritten = recompress(&batch, target, uncompressed_len_max).map_err(failed)?;
            out.push(Bytes::from(rewritten));
            glommio::yield_if_needed().await;
        }
        at += len;
    }
    Ok(VerifiedBatches::built(out))
}

impl Engine {
    /// `produce_routed` (`acks` valid), after refusing the partitions
    /// whose batches are invalid and recompressing for the topics'
    /// `compression.type`; the budget taken for it is held until every
    /// partition answered.
    pub(super) async fn produce_recompressed(
        &self,
        topics: Routed<Result<VerifiedBatches, BatchesError>>,
        acks: i8,
        timeout: std::time::Duration,
    ) -> TopicParts<ProduceResult> {
        let mut refused = Vec::new();
        let mut topics: Routed<VerifiedBatches> = topics
            .into_iter()
            .enumerate()
            .map(|(t, (name, parts))| {
                let parts = parts
                    .into_iter()
                    .enumerate()
                    .map(|(p, mut part)| {
                        let input = match part.input {
                            Ok(batches) => batches,
                            Err(error) => {
                                if part.route.is_ok() {
                                    let code = error.error_code();
                                    part.route = Err(RouteError::Refused(code));
                                    refused.push((
                                        t,
                                        p,
                                        ProduceResult::error(code, error.to_string()),
                                    ));
                                }
                                VerifiedBatches::default()
                            }
                        };
                        super::Part {
                            partition: part.partition,
                            route: part.route,
                            input,
                        }
                    })
                    .collect();
                (name, parts)
            })
            .collect();
        let (_recompressed, recompress_refused) = self.recompress_for_topics(&mut topics).await;
        refused.extend(recompress_refused);
        let mut results = self.produce_routed(topics, acks, timeout).await;
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
        topics: &mut Routed<VerifiedBatches>,
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
                let batches = std::mem::take(&mut part.input);
                match recompress_batches(batches, target, self.limits.inflight_bytes_max).await {
                    Ok(batches) => {
                        part.input = batches;
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

    fn verified(batches: Vec<Bytes>) -> VerifiedBatches {
        VerifiedBatches::built(batches)
    }

    #[test]
    fn memory_is_counted_only_for_batches_that_change() {
        let zstd = batch(Compression::Zstd, 20);
        assert_eq!(
            memory_needed_bytes(&verified(vec![zstd.clone()]), Compression::Zstd),
            None
        );
        let plain = batch(Compression::None, 20);
        let need = memory_needed_bytes(&verified(vec![plain.clone()]), Compression::Zstd)
            .expect("changes");
        let body = plain.len() - BATCH_HEADER_LEN;
        assert!(need >= 2 * body, "{need} for a {body}-byte body");
        // A batch already in the target codec is passed through: it needs
        // no memory of its own.
        let both = memory_needed_bytes(&verified(vec![plain, zstd]), Compression::Zstd);
        assert_eq!(both, Some(need));
    }

    #[test]
    fn every_batch_ends_in_the_target_codec_with_unchanged_ones_passed_through() {
        let unchanged = batch(Compression::Zstd, 3);
        let batches = verified(vec![
            batch(Compression::Gzip, 5),
            unchanged.clone(),
            batch(Compression::None, 4),
        ]);
        let out = glommio::LocalExecutor::default()
            .run(recompress_batches(batches, Compression::Zstd, 1 << 20))
            .expect("recompressed");
        let mut counts = Vec::new();
        for batch in out.iter() {
            let (view, tail) = BatchView::parse(batch).expect("valid batch");
            assert!(tail.is_empty(), "one batch per Bytes");
            assert_eq!(view.header().compression(), Ok(Compression::Zstd));
            counts.push(view.header().record_count());
        }
        assert_eq!(counts, [5, 3, 4]);
        let passed = out.iter().nth(1).expect("three batches");
        assert_eq!(passed.as_ptr(), unchanged.as_ptr(), "not copied");
    }
}
