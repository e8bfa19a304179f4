//! Fetch and ListOffsets: the one long-poll loop and the one rule for
//! which batches fit a response, for both edges.
//!
//! A fetch reads every partition on its owning shard; if fewer than
//! `min_bytes` came back and no partition failed, it waits until one of
//! them gets data (woken by its append, on whichever shard) or the
//! deadline, and reads again. The response gets whole batches: each
//! partition's, in request order, while they fit in what is left of the
//! response's byte budget — the first batch of the response always, so a
//! consumer makes progress past a batch larger than its limit (Kafka's
//! rule).

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Instant;

use bytes::Bytes;
use futures_lite::future;
use glommio::Task;

use super::types::{
    EpochEndResult, EpochQuery, FetchPartition, FetchRequest, FetchResult, ListOffsetsPartition,
    ListOffsetsRequest, ListOffsetsResult, TopicParts,
};
use super::Routed;
use super::{with_names, Engine, EngineError};
use crate::ops::{Op, OpResult};
use fjord_schema::ErrorCode;

/// Memory a fetch's response holds outside the engine's in-flight budget
/// (the Kafka edge's response budget): reserved before each read of the
/// log, given back while the fetch long-polls.
///
/// Single-threaded like [`fjord_net::driver::Service`] (shards share
/// nothing), hence no `Send` bound on the returned future.
pub trait FetchReservation {
    /// Reserves the response's memory, waiting for it; `false` when the
    /// shard is stopping.
    fn reserve(&mut self) -> impl std::future::Future<Output = bool>;
    /// Gives the reservation back (a long poll holds no response memory
    /// while it waits).
    fn release(&mut self);
}

/// A fetch whose response needs no memory beyond the in-flight budget.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReservation;

impl FetchReservation for NoReservation {
    async fn reserve(&mut self) -> bool {
        true
    }

    fn release(&mut self) {}
}

impl Engine {
    /// The response budget of a fetch asking for `max_bytes`, by a request
    /// already holding `held_bytes` of the in-flight budget.
    pub fn fetch_budget(&self, max_bytes: usize, held_bytes: usize) -> usize {
        max_bytes
            .min(self.limits.fetch_bytes_max)
            .min(self.limits.inflight_bytes_max.saturating_sub(held_bytes))
            .max(1)
    }

    /// Fetches (see the module doc). `held_bytes`: what the request
    /// already holds of the in-flight budget (its frame); the response
    /// budget comes out of the rest. Each partition's `batches` are those
    /// that fit the response.
    pub async fn fetch(
        &self,
        request: FetchRequest,
        held_bytes: usize,
        reservation: &mut impl FetchReservation,
    ) -> Result<TopicParts<FetchResult>, EngineError> {
        let max_wait = request.max_wait.min(self.limits.fetch_wait_max);
        let max_bytes = self.fetch_budget(request.max_bytes, held_bytes);
        let replica_id = request.replica_id;
        let topics = self.route(request.topics);
        let deadline = Instant::now() + max_wait;
        loop {
            if !reservation.reserve().await {
                return Err(EngineError::Stopping);
            }
            let results = {
                let Ok(_permit) = self.inflight.acquire_permit(max_bytes as u64).await else {
                    return Err(EngineError::Stopping);
                };
                self.fetch_once(&topics, max_bytes, replica_id).await
            };
            let flat = || results.iter().flatten();
            let total: usize = flat().map(FetchResult::bytes).sum();
            let failed = flat().any(|r| r.error != ErrorCode::None);
            if total >= request.min_bytes || failed || Instant::now() >= deadline {
                let mut results = with_names(topics, results);
                fit(&mut results, max_bytes);
                return Ok(results);
            }
            let waits: Vec<Task<OpResult>> = topics
                .iter()
                .zip(&results)
                .flat_map(|((name, parts), results)| {
                    parts.iter().zip(results).filter_map(|(part, result)| {
                        let shard = part.route.ok()?;
                        // A follower waits for the log end to pass what it
                        // has, a consumer for the high watermark to move.
                        let offset = match replica_id {
                            Some(_) => part.input.fetch_offset,
                            None => result.high_watermark,
                        };
                        let op = Op::WaitForData {
                            topic: name.clone(),
                            partition: part.partition,
                            offset,
                            deadline,
                            replica: replica_id.is_some(),
                        };
                        Some(glommio::spawn_local(self.service.execute(shard, op)))
                    })
                })
                .collect();
            reservation.release();
            first_of(waits).await;
        }
    }

    async fn fetch_once(
        &self,
        topics: &Routed<FetchPartition>,
        max_bytes: usize,
        replica_id: Option<fjord_schema::NodeId>,
    ) -> Vec<Vec<FetchResult>> {
        self.run_all(topics, |name, part| Op::Fetch {
            topic: name.to_owned(),
            partition: part.partition,
            offset: part.input.fetch_offset,
            max_bytes: part.input.partition_max_bytes.min(max_bytes),
            current_leader_epoch: part.input.current_leader_epoch,
            replica_id,
            replica_durable_end: part.input.replica_durable_end,
        })
        .await
        .into_iter()
        .zip(topics)
        .map(|(results, (_, parts))| {
            results
                .into_iter()
                .zip(parts)
                .map(|(result, part)| match (result, part.route) {
                    (Some(OpResult::Fetch(r)), _) => r,
                    (_, Err(error)) => FetchResult::error(error.error_code()),
                    _ => FetchResult::error(ErrorCode::NotLeaderOrFollower),
                })
                .collect()
        })
        .collect()
    }

    /// Looks up each partition's offset for its timestamp on its owning
    /// shard; results in request order.
    pub async fn list_offsets(&self, request: ListOffsetsRequest) -> TopicParts<ListOffsetsResult> {
        let replica_id = request.replica_id;
        let topics = self.route(request.topics);
        let results = self
            .run_all(&topics, |name, part: &super::Part<ListOffsetsPartition>| {
                Op::ListOffsets {
                    topic: name.to_owned(),
                    partition: part.partition,
                    timestamp: part.input.timestamp,
                    current_leader_epoch: part.input.current_leader_epoch,
                    replica_id,
                }
            })
            .await
            .into_iter()
            .zip(topics.iter())
            .map(|(results, (_, parts))| {
                results
                    .into_iter()
                    .zip(parts)
                    .map(|(result, part)| match (result, part.route) {
                        (Some(OpResult::ListOffsets(r)), _) => r,
                        (_, Err(error)) => ListOffsetsResult::error(error.error_code()),
                        _ => ListOffsetsResult::error(ErrorCode::NotLeaderOrFollower),
                    })
                    .collect()
            })
            .collect();
        with_names(topics, results)
    }
}

impl Engine {
    /// Where each partition's asked leader epoch ends, on its owning
    /// shard (Kafka's `OffsetForLeaderEpoch`, api 23, and the followers'
    /// native one); results in request order.
    pub async fn offsets_for_leader_epoch(
        &self,
        topics: TopicParts<EpochQuery>,
    ) -> TopicParts<EpochEndResult> {
        let topics = self.route(topics);
        let results = self
            .run_all(&topics, |name, part: &super::Part<EpochQuery>| {
                Op::OffsetForLeaderEpoch {
                    topic: name.to_owned(),
                    partition: part.partition,
                    current_leader_epoch: part.input.current_leader_epoch,
                    leader_epoch: part.input.leader_epoch,
                }
            })
            .await
            .into_iter()
            .zip(topics.iter())
            .map(|(results, (_, parts))| {
                results
                    .into_iter()
                    .zip(parts)
                    .map(|(result, part)| match (result, part.route) {
                        (Some(OpResult::EpochEnd(r)), _) => r,
                        (_, Err(error)) => EpochEndResult::error(error.error_code()),
                        _ => EpochEndResult::error(ErrorCode::NotLeaderOrFollower),
                    })
                    .collect()
            })
            .collect();
        with_names(topics, results)
    }
}

/// Keeps, of each partition's batches in request order, those that fit in
/// what is left of `max_bytes`; the first batch of the response always.
/// A partition stops at its first batch that does not fit (its batches
/// must stay contiguous); a later partition may still fit a smaller one.
pub fn fit(results: &mut TopicParts<FetchResult>, max_bytes: usize) {
    fit_batches(
        results
            .iter_mut()
            .flat_map(|(_, parts)| parts.iter_mut().map(|(_, result)| &mut result.batches)),
        max_bytes,
    );
}

/// [`fit`] over any response's batch lists, in response order (the
/// replica-fetch answer and the simulation's use it too).
pub fn fit_batches<'a>(lists: impl IntoIterator<Item = &'a mut Vec<Bytes>>, max_bytes: usize) {
    let mut total = 0usize;
    for batches in lists {
        let fits = batches
            .iter()
            .take_while(|batch| {
                let fits = total == 0 || total + batch.len() <= max_bytes;
                if fits {
                    total += batch.len();
                }
                fits
            })
            .count();
        batches.truncate(fits);
    }
}

/// Completes when the first of `tasks` does (the others are cancelled when
/// dropped).
async fn first_of(tasks: Vec<Task<OpResult>>) {
    if tasks.is_empty() {
        return;
    }
    let mut tasks: Vec<Pin<Box<Task<OpResult>>>> = tasks.into_iter().map(Box::pin).collect();
    future::poll_fn(|cx| {
        if tasks.iter_mut().any(|t| t.as_mut().poll(cx).is_ready()) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use fjord_schema::PartitionId;

    use super::*;

    fn result(batches: &[usize]) -> FetchResult {
        FetchResult {
            error: ErrorCode::None,
            high_watermark: 10,
            log_start_offset: 0,
            batches: batches
                .iter()
                .map(|len| Bytes::from(vec![0u8; *len]))
                .collect(),
        }
    }

    fn lens(results: &TopicParts<FetchResult>) -> Vec<Vec<usize>> {
        results
            .iter()
            .flat_map(|(_, parts)| parts)
            .map(|(_, r)| r.batches.iter().map(Bytes::len).collect())
            .collect()
    }

    #[test]
    fn batches_go_while_they_fit_the_first_always() {
        let mut results = vec![(
            "t".to_owned(),
            vec![
                (PartitionId(0), result(&[700, 100])),
                (PartitionId(1), result(&[50])),
            ],
        )];
        fit(&mut results, 500);
        // 700 alone is over the limit but first, so it goes; nothing
        // else fits after it.
        assert_eq!(lens(&results), [vec![700], vec![]]);

        let mut results = vec![
            (
                "a".to_owned(),
                vec![(PartitionId(0), result(&[200, 200, 200]))],
            ),
            ("b".to_owned(), vec![(PartitionId(0), result(&[50, 10]))]),
        ];
        fit(&mut results, 500);
        assert_eq!(lens(&results), [vec![200, 200], vec![50, 10]]);
    }
}
