//! The leader's side of replication: the cluster listener's handler for
//! [`ClusterApiKey::ReplicaFetch`] and [`ClusterApiKey::OffsetForLeaderEpoch`]
//! (bodies in [`super::wire`]), answered through the shard's [`Engine`].
//!
//! Lives on: shard 0 of every node, registered on the controller driver's
//! cluster listener once shard 0's engine exists
//! (`ControllerHandle::serve_replication`, called from `shard.rs`); the
//! driver's service hands it these two keys and keeps every other.
//! A replica fetch is an [`Engine::fetch`] with `replica_id` set: the
//! engine reads each partition on its owning shard (which records the
//! follower's progress and its durable end, and reads to the log end for
//! replicas) and long-polls across shards. The batches go back as the
//! engine hands them (shared with the log's cache), as the answer's
//! payload chunks: the transport writes them to the socket without
//! copying them.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use fjord_schema::api::ClusterApiKey;

use super::wire::{
    EpochAnswer, EpochsRequest, EpochsResponse, ReplicaFetchRequest, ReplicaFetchResponse,
    ReplicaFetchResult,
};
use crate::controller::transport::{ClusterService, Reply};
use crate::engine::fetch::NoReservation;
use crate::engine::types::{EpochQuery, FetchPartition, FetchRequest, IsolationLevel};
use crate::engine::Engine;

/// The replication requests of the cluster listener, answered by `engine`
/// (shard 0's).
pub struct ReplicationService {
    engine: Rc<Engine>,
}

impl std::fmt::Debug for ReplicationService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationService").finish_non_exhaustive()
    }
}

impl ReplicationService {
    pub fn new(engine: Rc<Engine>) -> ReplicationService {
        ReplicationService { engine }
    }

    /// Whether `api` is served here (the driver's dispatch asks).
    pub fn serves(api: ClusterApiKey) -> bool {
        matches!(
            api,
            ClusterApiKey::ReplicaFetch | ClusterApiKey::OffsetForLeaderEpoch
        )
    }
}

impl ClusterService for ReplicationService {
    fn one_way(&self, api: ClusterApiKey, _body: Bytes) {
        tracing::debug!(?api, "replication: one-way frame ignored");
    }

    fn request(
        &self,
        api: ClusterApiKey,
        body: Bytes,
    ) -> Pin<Box<dyn Future<Output = Result<Reply, String>>>> {
        let engine = self.engine.clone();
        Box::pin(async move {
            match api {
                ClusterApiKey::ReplicaFetch => replica_fetch(&engine, body).await,
                ClusterApiKey::OffsetForLeaderEpoch => offsets_for_epochs(&engine, &body).await,
                other => Err(format!("{other:?} is not a replication request")),
            }
        })
    }
}

/// Refuses a request naming more partitions than the engine takes in one.
fn check_size(engine: &Engine, partitions: usize) -> Result<(), String> {
    let max = engine.limits().request_elements_max;
    if partitions > max {
        return Err(format!(
            "{partitions} partitions in one replication request, over the limit of {max}"
        ));
    }
    Ok(())
}

async fn replica_fetch(engine: &Engine, body: Bytes) -> Result<Reply, String> {
    let request = ReplicaFetchRequest::decode(&body).map_err(|e| e.to_string())?;
    check_size(engine, request.partitions())?;
    let topics = request
        .topics
        .into_iter()
        .map(|(name, parts)| {
            let parts = parts
                .into_iter()
                .map(|p| {
                    let input = FetchPartition {
                        fetch_offset: i64::try_from(p.fetch_offset.get()).unwrap_or(i64::MAX),
                        partition_max_bytes: p.partition_max_bytes as usize,
                        current_leader_epoch: Some(p.current_leader_epoch),
                        replica_durable_end: p.durable_end,
                    };
                    (p.partition, input)
                })
                .collect();
            (name, parts)
        })
        .collect();
    let fetch = FetchRequest {
        max_wait: Duration::from_millis(u64::from(request.max_wait_ms)),
        min_bytes: request.min_bytes as usize,
        max_bytes: request.max_bytes as usize,
        replica_id: Some(request.replica_id),
        isolation: IsolationLevel::ReadUncommitted,
        topics,
    };
    let results = engine
        .fetch(fetch, body.len(), &mut NoReservation)
        .await
        .map_err(|e| e.to_string())?;
    drop(body);
    let response = ReplicaFetchResponse {
        topics: results
            .into_iter()
            .map(|(name, parts)| {
                let parts = parts
                    .into_iter()
                    .map(|(partition, r)| ReplicaFetchResult {
                        partition,
                        error: r.error,
                        high_watermark: r.high_watermark,
                        log_start_offset: r.log_start_offset,
                        batches: r.batches,
                    })
                    .collect();
                (name, parts)
            })
            .collect(),
    };
    let (body, payload) = response.encode();
    Ok(Reply { body, payload })
}

async fn offsets_for_epochs(engine: &Engine, body: &[u8]) -> Result<Reply, String> {
    let request = EpochsRequest::decode(body).map_err(|e| e.to_string())?;
    let partitions = request.topics.iter().map(|(_, p)| p.len()).sum();
    check_size(engine, partitions)?;
    let topics = request
        .topics
        .into_iter()
        .map(|(name, parts)| {
            let parts = parts
                .into_iter()
                .map(|p| {
                    let query = EpochQuery {
                        current_leader_epoch: Some(p.current_leader_epoch),
                        leader_epoch: p.leader_epoch,
                    };
                    (p.partition, query)
                })
                .collect();
            (name, parts)
        })
        .collect();
    let results = engine.offsets_for_leader_epoch(topics).await;
    let response = EpochsResponse {
        topics: results
            .into_iter()
            .map(|(name, parts)| {
                let parts = parts
                    .into_iter()
                    .map(|(partition, r)| EpochAnswer {
                        partition,
                        error: r.error,
                        leader_epoch: r.leader_epoch,
                        end_offset: r.end_offset,
                    })
                    .collect();
                (name, parts)
            })
            .collect(),
    };
    Ok(Reply::from(response.encode()))
}

#[cfg(test)]
mod tests;
