//! A consumer actor: long-poll fetches on glommio sockets, one task and one
//! connection per (leader endpoint, topic) of its partitions, each sending
//! a fetch, reading the answer, verifying and walking the batches, and
//! fetching again from the new positions. With `--protocol kafka` the
//! fetches are Kafka Fetch v12 to the Kafka listener (one endpoint for
//! every partition) and the batches Kafka RecordBatch v2; the counting and
//! timing of records is shared.
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

use bytes::Bytes;
use fjord_net::client::cluster::{routes, Endpoint, TopicState};
use fjord_net::client::protocol::{
    encode_fetch, read_fetch, FetchParams, FetchPartitionRequest, FetchedPartition,
};
use fjord_net::client::Metadata;
use fjord_schema::api::ApiKey;
use fjord_schema::batch::Batches;
use fjord_schema::frame::FrameFlags;
use fjord_schema::{BatchError, CorrelationId, ErrorCode, Offset, PartitionId};
use futures_lite::{future, AsyncWriteExt};
use glommio::spawn_local;
use glommio::timer::sleep;
use kafka_protocol::messages::{ApiKey as KafkaApiKey, FetchResponse};
use kafka_protocol::records::RecordBatchDecoder;

use crate::conn::{self, FrameReader};
use crate::kafka::{self, KafkaReader};
use crate::payload::timestamp_of;
use crate::producer::{ActorResult, Wire};
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
    pub wire: Wire,
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
    let kafka_endpoint = match &spec.wire {
        Wire::Native => None,
        Wire::Kafka { addr, .. } => match parse_endpoint(addr) {
            Some(endpoint) => Some(endpoint),
            None => {
                shared
                    .borrow_mut()
                    .result
                    .error(format!("{addr} is not HOST:PORT"));
                Some(Endpoint {
                    host: addr.clone(),
                    port: 0,
                })
            }
        },
    };
    let mut groups: BTreeMap<(Endpoint, String), Vec<(PartitionId, Offset)>> = BTreeMap::new();
    for (topic, partition, offset) in &spec.assignment {
        let leader = match routes.get(topic) {
            // Kafka has one address for every partition: the listener.
            Some(TopicState::Routed(route)) => route
                .leader(*partition)
                .map(|native| kafka_endpoint.clone().unwrap_or_else(|| native.clone())),
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

/// `HOST:PORT` (a bracketed IPv6 host too).
pub fn parse_endpoint(addr: &str) -> Option<Endpoint> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some(Endpoint {
        host: host.to_owned(),
        port: port.parse().ok()?,
    })
}

fn caught_up(spec: &ConsumerSpec, counters: &Counters) -> bool {
    let consumed = Counters::get(&counters.consumed_messages);
    if spec.producers == 0 {
        return consumed >= Counters::get(&counters.consume_target);
    }
    counters.producers_done.load(Ordering::Relaxed) >= spec.producers
        && consumed >= Counters::get(&counters.acked_messages)
}

/// One connection's fetch requests and answers, in either protocol.
enum FetchConn {
    Native {
        reader: conn::Reader,
        writer: conn::Writer,
        frames: FrameReader,
        gather: Vec<u8>,
    },
    Kafka {
        reader: conn::Reader,
        writer: conn::Writer,
        frames: KafkaReader,
    },
}

impl FetchConn {
    async fn open(wire: &Wire, endpoint: &Endpoint, frame_bytes_max: u32) -> Result<Self, String> {
        let addr = endpoint.to_string();
        Ok(match wire {
            Wire::Native => {
                let (reader, writer) = conn::connect(&addr).await.map_err(|e| e.to_string())?;
                FetchConn::Native {
                    reader,
                    writer,
                    frames: FrameReader::new(frame_bytes_max),
                    gather: Vec::new(),
                }
            }
            Wire::Kafka { .. } => {
                let (reader, writer) = kafka::connect(&addr, frame_bytes_max).await?;
                FetchConn::Kafka {
                    reader,
                    writer,
                    frames: KafkaReader::new(frame_bytes_max),
                }
            }
        })
    }

    async fn send(
        &mut self,
        topic: &str,
        positions: &[FetchPartitionRequest],
        params: FetchParams,
        correlation_id: u32,
    ) -> Result<(), String> {
        let written = match self {
            FetchConn::Native { writer, gather, .. } => {
                let body = encode_fetch(topic, positions, params);
                conn::write_frame(
                    writer,
                    gather,
                    ApiKey::Fetch,
                    FrameFlags(0),
                    CorrelationId(correlation_id),
                    &body,
                    &[],
                )
                .await
            }
            FetchConn::Kafka { writer, .. } => {
                let at: Vec<(PartitionId, Offset)> =
                    positions.iter().map(|p| (p.partition, p.offset)).collect();
                let partition_max_bytes = positions.first().map_or(0, |p| p.max_bytes);
                let request = kafka::fetch_request(
                    topic,
                    &at,
                    partition_max_bytes,
                    params.max_wait_ms,
                    params.max_bytes,
                );
                let frame = kafka::encode_request(
                    KafkaApiKey::Fetch,
                    kafka::FETCH_VERSION,
                    correlation_id as i32,
                    &request,
                    0,
                )?;
                writer.write_all(&frame).await
            }
        };
        written.map_err(|e| format!("writing a fetch: {e}"))
    }

    /// The next answer: its correlation id and partitions.
    async fn receive(&mut self, topic: &str) -> Result<(u32, Vec<FetchedPartition>), String> {
        match self {
            FetchConn::Native { reader, frames, .. } => {
                let frame = frames.next(reader).await.map_err(|e| e.to_string())?;
                let fetched = read_fetch(&frame).map_err(|e| e.to_string())?;
                Ok((frame.header.correlation_id().0, fetched))
            }
            FetchConn::Kafka { reader, frames, .. } => {
                let frame = frames.next(reader).await.map_err(|e| e.to_string())?;
                let (id, response) = kafka::decode_response::<FetchResponse>(
                    frame,
                    KafkaApiKey::Fetch,
                    kafka::FETCH_VERSION,
                )?;
                let fetched = kafka::read_fetch(response)?
                    .into_iter()
                    .map(|p| FetchedPartition {
                        topic: topic.to_owned(),
                        partition: p.partition,
                        error: p.error,
                        high_watermark: None,
                        log_start_offset: None,
                        records: p.records,
                    })
                    .collect();
                Ok((id, fetched))
            }
        }
    }
}

async fn fetch_loop(
    spec: &ConsumerSpec,
    counters: &Counters,
    shared: &RefCell<Shared>,
    endpoint: &Endpoint,
    topic: &str,
    partitions: Vec<(PartitionId, Offset)>,
) -> Result<(), String> {
    let mut conn = FetchConn::open(&spec.wire, endpoint, spec.frame_bytes_max).await?;
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
    let mut scratch = Vec::new();
    let mut correlation_id: u32 = 0;
    loop {
        let now = now_ns();
        if caught_up(spec, counters) || now >= spec.drain_deadline_ns {
            return Ok(());
        }
        correlation_id = correlation_id.wrapping_add(1) & (i32::MAX as u32);
        conn.send(topic, &positions, params, correlation_id).await?;
        let wait = Duration::from_nanos(spec.drain_deadline_ns.saturating_sub(now))
            + Duration::from_millis(u64::from(FETCH_MAX_WAIT_MS));
        let answer = future::or(async { Some(conn.receive(topic).await) }, async {
            sleep(wait).await;
            None
        })
        .await;
        let Some(answer) = answer else {
            return Err("no fetch answer before the drain deadline".into());
        };
        let (id, fetched) = answer?;
        let received_ns = now_ns();
        if id != correlation_id {
            return Err("fetch answer for another request".into());
        }
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
    let mut tally = Tally {
        spec,
        received_ns,
        count: 0,
        bytes: 0,
    };
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
        let walked = match spec.wire {
            Wire::Native => walk_native(&partition.records, position, scratch, |value| {
                tally.record(result, progress, value)
            }),
            Wire::Kafka { .. } => walk_kafka(partition.records, position, |value| {
                tally.record(result, progress, value)
            }),
        };
        walked.map_err(|e| format!("{topic}-{}: {e}", partition.partition.0))?;
    }
    let (count, bytes) = (tally.count, tally.bytes);
    result.messages += count;
    result.bytes += bytes;
    progress.maybe_ship(received_ns, false);
    Ok(((count, bytes), backoff))
}

/// Counts and times the records of one answer (the same for both
/// protocols).
struct Tally<'a> {
    spec: &'a ConsumerSpec,
    received_ns: u64,
    count: u64,
    bytes: u64,
}

impl Tally<'_> {
    fn record(&mut self, result: &mut ActorResult, progress: &mut ProgressSender, value: &[u8]) {
        let (spec, received_ns) = (self.spec, self.received_ns);
        let len = value.len() as u64;
        self.count += 1;
        self.bytes += len;
        let sent_ns = timestamp_of(value);
        if let Some(sent_ns) = sent_ns {
            result.timestamp_sum = result.timestamp_sum.wrapping_add(sent_ns);
        }
        let sent_ns = sent_ns.filter(|t| *t <= received_ns);
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
}

/// Native batches: CRC and flatbuffers verified, records read in place.
fn walk_native(
    records: &[u8],
    position: &mut Offset,
    scratch: &mut Vec<u8>,
    mut seen: impl FnMut(&[u8]),
) -> Result<(), String> {
    for batch in Batches::new(records) {
        let batch = match batch {
            Ok(batch) => batch,
            // The broker stops at max_bytes, possibly mid-batch.
            Err(BatchError::Truncated { .. }) => break,
            Err(error) => return Err(error.to_string()),
        };
        let header = batch.header();
        if header.next_offset() <= *position {
            continue;
        }
        scratch.clear();
        let records = batch
            .records(scratch, UNCOMPRESSED_BATCH_BYTES_MAX)
            .map_err(|e| e.to_string())?;
        for record in records.iter() {
            if record.offset >= *position {
                seen(record.value().unwrap_or_default());
            }
        }
        *position = header.next_offset();
    }
    Ok(())
}

/// Kafka RecordBatch v2: decoded (CRC-32C checked, decompressed) by the
/// `kafka-protocol` crate.
fn walk_kafka(
    mut records: Bytes,
    position: &mut Offset,
    mut seen: impl FnMut(&[u8]),
) -> Result<(), String> {
    while let Some(mut batch) = kafka::next_batch(&mut records) {
        let set = RecordBatchDecoder::decode(&mut batch).map_err(|e| e.to_string())?;
        for record in &set.records {
            let offset = u64::try_from(record.offset)
                .map_err(|_| format!("negative offset {}", record.offset))?;
            if offset >= position.0 {
                seen(record.value.as_deref().unwrap_or_default());
                *position = Offset(offset + 1);
            }
        }
    }
    Ok(())
}
