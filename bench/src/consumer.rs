//! A consumer actor: long-poll fetches on glommio sockets, one task and one
//! connection per (leader endpoint, topic) of its partitions, each sending
//! a fetch, reading the answer, verifying and walking the batches, and
//! fetching again from the new positions.
//!
//! Lives on: its own pinned executor. Owns: its connections, positions and
//! histograms. run → stop when producers are done and every acknowledged
//! record was seen (or the drain deadline passes) → result.
//!
//! End-to-end latency of a record = receipt time (when the response frame
//! is complete) − the intended send time the producer wrote into the
//! value, both on the process clock.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use fjord_net::client::cluster::{routes, Endpoint, TopicState};
use fjord_net::client::protocol::{
    encode_fetch, read_fetch, FetchParams, FetchPartitionRequest, FetchedPartition,
};
use fjord_net::client::Metadata;
use fjord_schema::api::ApiKey;
use fjord_schema::batch::Batches;
use fjord_schema::frame::FrameFlags;
use fjord_schema::{BatchError, CorrelationId, ErrorCode, Offset, PartitionId};
use futures_lite::future;
use glommio::spawn_local;
use glommio::timer::sleep;

use crate::conn::{self, FrameReader};
use crate::payload::timestamp_of;
use crate::producer::ActorResult;
use crate::stats::{now_ns, Counters, Metric, ProgressSender};

/// How long the broker may hold a fetch with no data.
const FETCH_MAX_WAIT_MS: u32 = 100;
/// Pause after a retriable partition error.
const RETRY_BACKOFF: Duration = Duration::from_millis(50);
/// Decompressed records body accepted per batch, at most.
const UNCOMPRESSED_BATCH_BYTES_MAX: usize = 64 * 1024 * 1024;

/// What one consumer does.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    /// (topic, partition, first offset to read).
    pub assignment: Vec<(String, PartitionId, Offset)>,
    pub metadata: Metadata,
    pub partition_max_bytes: u32,
    pub fetch_max_bytes: u32,
    pub frame_bytes_max: u32,
    /// Record end-to-end latency (values carry this run's timestamps).
    pub end_to_end: bool,
    pub warmup_end_ns: u64,
    /// Producers in the run: stop once all are done and caught up.
    pub producers: usize,
    pub drain_deadline_ns: u64,
}

struct Shared {
    result: ActorResult,
    progress: ProgressSender,
}

/// Runs one consumer to the end; the result is its measurements.
pub async fn run(
    spec: ConsumerSpec,
    counters: Arc<Counters>,
    progress: ProgressSender,
) -> ActorResult {
    let shared = Rc::new(RefCell::new(Shared {
        result: ActorResult::new(),
        progress,
    }));
    let routes = routes(&spec.metadata, true);
    let mut groups: BTreeMap<(Endpoint, String), Vec<(PartitionId, Offset)>> = BTreeMap::new();
    for (topic, partition, offset) in &spec.assignment {
        let leader = match routes.get(topic) {
            Some(TopicState::Routed(route)) => route.leader(*partition).cloned(),
            _ => None,
        };
        match leader {
            Some(endpoint) => groups
                .entry((endpoint, topic.clone()))
                .or_default()
                .push((*partition, *offset)),
            None => shared.borrow_mut().result.error(format!(
                "{topic}-{}: no leader in the metadata",
                partition.0
            )),
        }
    }
    let spec = Rc::new(spec);
    let tasks: Vec<_> = groups
        .into_iter()
        .map(|((endpoint, topic), partitions)| {
            let spec = spec.clone();
            let counters = counters.clone();
            let shared = shared.clone();
            spawn_local(async move {
                let outcome =
                    fetch_loop(&spec, &counters, &shared, &endpoint, &topic, partitions).await;
                if let Err(error) = outcome {
                    shared
                        .borrow_mut()
                        .result
                        .error(format!("{endpoint} {topic}: {error}"));
                }
            })
        })
        .collect();
    for task in tasks {
        task.await;
    }
    let mut shared = match Rc::try_unwrap(shared) {
        Ok(shared) => shared.into_inner(),
        Err(_) => unreachable!("every fetch task has finished"),
    };
    shared.progress.maybe_ship(now_ns(), true);
    shared.result
}

fn caught_up(spec: &ConsumerSpec, counters: &Counters) -> bool {
    let consumed = Counters::get(&counters.consumed_messages);
    if spec.producers == 0 {
        return consumed >= Counters::get(&counters.consume_target);
    }
    counters.producers_done.load(Ordering::Relaxed) >= spec.producers
        && consumed >= Counters::get(&counters.acked_messages)
}

async fn fetch_loop(
    spec: &ConsumerSpec,
    counters: &Counters,
    shared: &RefCell<Shared>,
    endpoint: &Endpoint,
    topic: &str,
    partitions: Vec<(PartitionId, Offset)>,
) -> Result<(), String> {
    let (mut reader, mut writer) = conn::connect(&endpoint.to_string())
        .await
        .map_err(|e| e.to_string())?;
    let mut frames = FrameReader::new(spec.frame_bytes_max);
    let mut positions: Vec<FetchPartitionRequest> = partitions
        .iter()
        .map(|(partition, offset)| FetchPartitionRequest {
            partition: *partition,
            offset: *offset,
            max_bytes: spec.partition_max_bytes,
        })
        .collect();
    let index: HashMap<PartitionId, usize> = positions
        .iter()
        .enumerate()
        .map(|(i, p)| (p.partition, i))
        .collect();
    let params = FetchParams {
        max_wait_ms: FETCH_MAX_WAIT_MS,
        min_bytes: 1,
        max_bytes: spec.fetch_max_bytes,
    };
    let mut gather = Vec::new();
    let mut scratch = Vec::new();
    let mut correlation_id: u32 = 0;
    loop {
        let now = now_ns();
        if caught_up(spec, counters) || now >= spec.drain_deadline_ns {
            return Ok(());
        }
        let body = encode_fetch(topic, &positions, params);
        correlation_id = correlation_id.wrapping_add(1);
        conn::write_frame(
            &mut writer,
            &mut gather,
            ApiKey::Fetch,
            FrameFlags(0),
            CorrelationId(correlation_id),
            &body,
            &[],
        )
        .await
        .map_err(|e| format!("writing a fetch: {e}"))?;
        let wait = Duration::from_nanos(spec.drain_deadline_ns.saturating_sub(now))
            + Duration::from_millis(u64::from(FETCH_MAX_WAIT_MS));
        let frame = future::or(async { Some(frames.next(&mut reader).await) }, async {
            sleep(wait).await;
            None
        })
        .await;
        let Some(frame) = frame else {
            return Err("no fetch answer before the drain deadline".into());
        };
        let frame = frame.map_err(|e| e.to_string())?;
        let received_ns = now_ns();
        if frame.header.correlation_id().0 != correlation_id {
            return Err("fetch answer for another request".into());
        }
        let fetched = read_fetch(&frame).map_err(|e| e.to_string())?;
        let (count, backoff) = absorb(
            spec,
            topic,
            &mut shared.borrow_mut(),
            fetched,
            &index,
            &mut positions,
            &mut scratch,
            received_ns,
        )?;
        Counters::add(&counters.consumed_messages, count.0);
        Counters::add(&counters.consumed_bytes, count.1);
        if backoff {
            sleep(RETRY_BACKOFF).await;
        }
    }
}

/// Walks one fetch answer: verifies the batches, counts and times the
/// records at or past each position, moves the positions. Returns
/// ((records, value bytes), whether a partition asked to back off).
#[allow(clippy::too_many_arguments)]
fn absorb(
    spec: &ConsumerSpec,
    topic: &str,
    state: &mut Shared,
    fetched: Vec<FetchedPartition>,
    index: &HashMap<PartitionId, usize>,
    positions: &mut [FetchPartitionRequest],
    scratch: &mut Vec<u8>,
    received_ns: u64,
) -> Result<((u64, u64), bool), String> {
    let mut count = 0u64;
    let mut bytes = 0u64;
    let mut backoff = false;
    let Shared { result, progress } = state;
    for partition in fetched {
        let Some(&i) = index.get(&partition.partition) else {
            continue;
        };
        match partition.error {
            ErrorCode::None => {}
            code if code.is_retriable() => {
                backoff = true;
                continue;
            }
            code => {
                return Err(format!("{topic}-{}: {code:?}", partition.partition.0));
            }
        }
        let position = &mut positions[i].offset;
        for batch in Batches::new(&partition.records) {
            let batch = match batch {
                Ok(batch) => batch,
                // The broker stops at max_bytes, possibly mid-batch.
                Err(BatchError::Truncated { .. }) => break,
                Err(error) => return Err(format!("{topic}-{}: {error}", partition.partition.0)),
            };
            let header = batch.header();
            if header.next_offset() <= *position {
                continue;
            }
            scratch.clear();
            let records = batch
                .records(scratch, UNCOMPRESSED_BATCH_BYTES_MAX)
                .map_err(|e| format!("{topic}-{}: {e}", partition.partition.0))?;
            for record in records.iter() {
                if record.offset < *position {
                    continue;
                }
                let value = record.value().unwrap_or_default();
                let len = value.len() as u64;
                count += 1;
                bytes += len;
                let sent_ns = timestamp_of(value).filter(|t| *t <= received_ns);
                match sent_ns {
                    Some(sent_ns) if spec.end_to_end && sent_ns >= spec.warmup_end_ns => {
                        let latency = (received_ns - sent_ns).max(1);
                        result.end_to_end.saturating_record(latency);
                        progress.record(Metric::EndToEnd, latency);
                        result.measured.add(received_ns, received_ns, len);
                    }
                    _ if !spec.end_to_end && received_ns >= spec.warmup_end_ns => {
                        result.measured.add(received_ns, received_ns, len);
                    }
                    _ => {}
                }
            }
            *position = header.next_offset();
        }
    }
    result.messages += count;
    result.bytes += bytes;
    progress.maybe_ship(received_ns, false);
    Ok(((count, bytes), backoff))
}
