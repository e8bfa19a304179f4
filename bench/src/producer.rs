//! A producer actor: the glommio driver of the client's sans-IO
//! [`ProducerCore`]. One task generates records (at a fixed rate or as fast
//! as the buffer allows), feeds them to the core, and writes the requests
//! the core yields; one reader task per broker connection decodes the
//! answers and hands them back over a bounded local channel. Only the
//! generating task touches the core, so no locks. The [`Wire`] decides the
//! protocol: native frames to shard ports, or Kafka (the core then builds
//! Kafka batches and requests, see `kafka.rs`) to the Kafka listener.
//!
//! Lives on: its own pinned executor. Owns: its core, its connections and
//! its histograms. run → drain (acks for everything sent) → result.
//!
//! Latency is measured from each record's *intended* send time: in
//! fixed-rate mode record k is due at `start + k × interval` whether or not
//! the producer keeps up, so a stall shows as latency of every record it
//! delays (no coordinated omission). The same time is written into the
//! record's value for the consumers' end-to-end latency.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fjord_net::client::cluster::Endpoint;
use fjord_net::client::format::ProduceFormat;
use fjord_net::client::producer_core::{
    Completion, Outgoing, ProduceError, ProducerConfig, ProducerCore, Refused,
};
use fjord_net::client::protocol::{read_produce, Acks, ProducePartitionResult};
use fjord_net::client::retry::AttemptFailure;
use fjord_net::client::{broker_error, ClientError, Metadata};
use fjord_schema::api::ApiKey;
use fjord_schema::frame::FrameFlags;
use fjord_schema::{CorrelationId, ErrorCode, Frame, RecordInput};
use futures_lite::{future, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::timer::sleep;
use glommio::{spawn_local, Task};
use hdrhistogram::Histogram;
use kafka_protocol::messages::{ApiKey as KafkaApiKey, ProduceResponse};

use crate::cli::PayloadKind;
use crate::conn::{self, FrameReader, Writer};
use crate::kafka::{self, KafkaBatch, KafkaReader};
use crate::stats::{new_histogram, now_ns, Counters, Metric, ProgressSender};

/// Records appended between two looks at the network, at most.
const APPEND_BURST_MAX: u32 = 1024;
/// Longest sleep of an idle producer (keeps the progress line fresh).
const IDLE_WAIT_NS_MAX: u64 = 100_000_000;
/// Error messages kept per actor.
const ERRORS_KEPT_MAX: usize = 4;

/// What one producer does.
#[derive(Debug, Clone)]
pub struct ProducerSpec {
    pub id: usize,
    pub topics: Vec<String>,
    pub metadata: Metadata,
    pub config: ProducerConfig,
    pub payload: PayloadKind,
    pub message_bytes: usize,
    pub keys: Option<u64>,
    /// This producer's share of `--messages`.
    pub messages: Option<u64>,
    /// Fixed-rate mode: nanoseconds between intended sends.
    pub interval_ns: Option<f64>,
    pub start_ns: u64,
    /// Records intended before this are not measured.
    pub warmup_end_ns: u64,
    /// No record is intended at or after this.
    pub stop_ns: u64,
    /// Whatever is still unacknowledged now fails.
    pub drain_deadline_ns: u64,
    pub frame_bytes_max: u32,
    /// Distinct endpoints the metadata names (bounds the response channel).
    pub endpoints: usize,
    pub wire: Wire,
}

/// What one actor measured.
#[derive(Debug)]
pub struct ActorResult {
    pub publish: Histogram<u64>,
    pub request: Histogram<u64>,
    pub end_to_end: Histogram<u64>,
    /// Records appended (producers) or received (consumers).
    pub messages: u64,
    /// Records acknowledged without error (producers).
    pub acked: u64,
    pub failed: u64,
    /// Value bytes acknowledged (producers) or received (consumers).
    pub bytes: u64,
    pub measured: Window,
    /// Wrapping sum of the send timestamps the values carry, over the
    /// records acknowledged (producers) or received (consumers): equal
    /// sums say every acknowledged record came back once.
    pub timestamp_sum: u64,
    pub errors: Vec<String>,
}

impl ActorResult {
    pub fn new() -> ActorResult {
        ActorResult {
            publish: new_histogram(),
            request: new_histogram(),
            end_to_end: new_histogram(),
            messages: 0,
            acked: 0,
            failed: 0,
            bytes: 0,
            measured: Window::default(),
            timestamp_sum: 0,
            errors: Vec::new(),
        }
    }

    pub fn error(&mut self, error: String) {
        if self.errors.len() < ERRORS_KEPT_MAX {
            self.errors.push(error);
        }
    }
}

/// Records and bytes counted after the warm-up, and when.
#[derive(Debug, Default, Clone, Copy)]
pub struct Window {
    pub messages: u64,
    pub bytes: u64,
    pub first_ns: Option<u64>,
    pub last_ns: Option<u64>,
}

impl Window {
    pub fn add(&mut self, first_ns: u64, last_ns: u64, bytes: u64) {
        self.messages += 1;
        self.bytes += bytes;
        self.first_ns = Some(self.first_ns.map_or(first_ns, |f| f.min(first_ns)));
        self.last_ns = Some(self.last_ns.map_or(last_ns, |l| l.max(last_ns)));
    }

    pub fn merge(&mut self, other: &Window) {
        self.messages += other.messages;
        self.bytes += other.bytes;
        self.first_ns = match (self.first_ns, other.first_ns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last_ns = match (self.last_ns, other.last_ns) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

/// What a connection's reader hands the producer task.
enum Event {
    /// The answer to request `id`: per-partition results, or why the
    /// request as a whole failed.
    Answer {
        conn_id: u64,
        id: u32,
        answer: Result<Vec<ProducePartitionResult>, (AttemptFailure, ProduceError)>,
    },
    Closed {
        conn_id: u64,
        reason: String,
    },
}

struct Conn {
    id: u64,
    writer: Writer,
    /// Requests written and not answered yet.
    in_flight: usize,
    /// Dropping it cancels the reader.
    _reader: Task<()>,
}

/// How requests travel: the wire protocol's connection rules.
#[derive(Debug, Clone)]
pub enum Wire {
    /// One connection per shard endpoint, requests pipelined on it (the
    /// core bounds them per endpoint).
    Native,
    /// The Kafka listener at `addr`. A broker answers one request per
    /// connection at a time, in order: by default one connection per
    /// request in flight; with `pipelined_max`, up to that many requests
    /// pipelined per connection (what the native mode and the Java client
    /// do), a new connection only when all are full.
    Kafka {
        addr: String,
        pipelined_max: Option<usize>,
    },
}

impl Wire {
    fn requests_per_connection_max(&self) -> usize {
        match self {
            Wire::Native => usize::MAX,
            Wire::Kafka { pipelined_max, .. } => pipelined_max.unwrap_or(1),
        }
    }
}

struct Driver<F> {
    spec: ProducerSpec,
    core: ProducerCore<u64, F>,
    events_tx: Rc<LocalSender<Event>>,
    conns: HashMap<Endpoint, Vec<Conn>>,
    next_conn_id: u64,
    /// Request id → (connection, when it was written).
    sent: HashMap<u32, (u64, u64)>,
    gather: Vec<u8>,
    result: ActorResult,
    counters: Arc<Counters>,
    progress: ProgressSender,
    /// Acked records and bytes not yet added to `counters`.
    unreported: (u64, u64, u64),
}

/// Runs one producer to the end; the result is its measurements.
pub async fn run(
    spec: ProducerSpec,
    counters: Arc<Counters>,
    progress: ProgressSender,
) -> ActorResult {
    match spec.wire.clone() {
        Wire::Native => {
            let metadata = spec.metadata.clone();
            drive(
                ProducerCore::new(spec.config.clone()),
                &metadata,
                spec,
                counters,
                progress,
            )
            .await
        }
        Wire::Kafka { addr, .. } => {
            // What a Kafka client does first: ApiVersions, then Metadata.
            match kafka::bootstrap(&addr, &spec.topics, spec.frame_bytes_max).await {
                Ok(metadata) => {
                    let core = ProducerCore::<u64, KafkaBatch>::with_format(spec.config.clone());
                    drive(core, &metadata, spec, counters, progress).await
                }
                Err(error) => {
                    let mut result = ActorResult::new();
                    result.error(format!("Kafka bootstrap at {addr}: {error}"));
                    result
                }
            }
        }
    }
}

async fn drive<F: ProduceFormat>(
    mut core: ProducerCore<u64, F>,
    metadata: &Metadata,
    spec: ProducerSpec,
    counters: Arc<Counters>,
    progress: ProgressSender,
) -> ActorResult {
    core.update_metadata(metadata);
    // Each request written gets at most one answer back and each connection
    // one close: the in-flight limit per endpoint bounds what can queue.
    let capacity = (spec.config.in_flight_per_connection_max + 1) * spec.endpoints.max(1) * 2;
    let (events_tx, events_rx) = local_channel::new_bounded(capacity);
    let mut driver = Driver {
        core,
        events_tx: Rc::new(events_tx),
        conns: HashMap::new(),
        next_conn_id: 0,
        sent: HashMap::new(),
        gather: Vec::with_capacity(64 * 1024),
        result: ActorResult::new(),
        counters,
        progress,
        unreported: (0, 0, 0),
        spec,
    };
    driver.run(&events_rx).await;
    driver.conns.clear();
    driver.progress.maybe_ship(now_ns(), true);
    driver.result
}

impl<F: ProduceFormat> Driver<F> {
    async fn run(&mut self, events: &LocalReceiver<Event>) {
        let mut payloads = crate::payload::Payloads::new(
            self.spec.payload,
            self.spec.message_bytes,
            0x10ad_0000 + self.spec.id as u64,
        );
        let mut keys = crate::payload::Keys::new(self.spec.keys, self.spec.id);
        let wall_base_ms = wall_ms() - (now_ns() / 1_000_000) as i64;
        let now = now_ns();
        if self.spec.start_ns > now {
            sleep(Duration::from_nanos(self.spec.start_ns - now)).await;
        }
        let mut appended: u64 = 0;
        let mut generating = true;
        loop {
            while let Some(Some(event)) = future::poll_once(events.recv()).await {
                self.handle_event(event);
            }
            self.expire_requests();

            let mut blocked = false;
            if generating {
                let mut burst = 0;
                let instant = Instant::now();
                loop {
                    if self.spec.messages.is_some_and(|m| appended >= m) {
                        generating = false;
                        break;
                    }
                    let now = now_ns();
                    let intended = match self.spec.interval_ns {
                        Some(interval) => self.spec.start_ns + (appended as f64 * interval) as u64,
                        None => now,
                    };
                    if intended >= self.spec.stop_ns {
                        generating = false;
                        break;
                    }
                    if intended > now || burst >= APPEND_BURST_MAX {
                        break;
                    }
                    burst += 1;
                    let topic =
                        &self.spec.topics[(appended % self.spec.topics.len() as u64) as usize];
                    let record = RecordInput {
                        key: keys.next(),
                        value: Some(payloads.next(intended)),
                        headers: &[],
                        timestamp: wall_base_ms + (intended / 1_000_000) as i64,
                        offset_delta: None,
                    };
                    match self.core.append(topic, None, record, intended, instant) {
                        Ok(_) => appended += 1,
                        Err(Refused::BufferFull(_)) => {
                            blocked = true;
                            break;
                        }
                        Err(Refused::NeedMetadata(_)) => {
                            self.result
                                .error(format!("no metadata for topic {topic}; stopping"));
                            generating = false;
                            break;
                        }
                        Err(Refused::Failed(completion)) => {
                            appended += 1;
                            self.complete(vec![completion]);
                        }
                    }
                }
                if !generating {
                    self.core.flush();
                }
            }
            self.result.messages = appended;

            let work = self.core.poll(Instant::now());
            self.complete(work.completions);
            // A poll takes at most one batch per partition: when it yielded
            // requests, poll again before waiting for anything.
            let sent_any = !work.requests.is_empty();
            for outgoing in work.requests {
                self.send(outgoing).await;
            }
            self.report();

            let now = now_ns();
            if !generating && self.core.is_idle() {
                break;
            }
            if now >= self.spec.drain_deadline_ns {
                let completions =
                    self.core
                        .abort(ProduceError::DeliveryTimeout(Duration::from_nanos(
                            self.spec.drain_deadline_ns - self.spec.stop_ns,
                        )));
                self.complete(completions);
                self.report();
                break;
            }
            if sent_any {
                future::yield_now().await;
                continue;
            }
            let next_intended = match (generating, blocked, self.spec.interval_ns) {
                (true, false, None) => {
                    // Max throughput and room in the buffer: keep going,
                    // but let the readers run.
                    future::yield_now().await;
                    continue;
                }
                (true, false, Some(interval)) => {
                    Some(self.spec.start_ns + (appended as f64 * interval) as u64)
                }
                _ => None,
            };
            let mut wake_ns = (now + IDLE_WAIT_NS_MAX).min(self.spec.drain_deadline_ns);
            if let Some(at) = next_intended {
                wake_ns = wake_ns.min(at);
            }
            // A wake-up time already past means batches are ready but held
            // by the in-flight limit (poll just ran): only an answer helps.
            if let Some(at) = self.core.next_wakeup().map(crate::stats::instant_ns) {
                if at > now {
                    wake_ns = wake_ns.min(at);
                }
            }
            if wake_ns <= now {
                future::yield_now().await;
                continue;
            }
            let wait = Duration::from_nanos(wake_ns - now);
            let event = future::or(async { events.recv().await }, async {
                sleep(wait).await;
                None
            })
            .await;
            if let Some(event) = event {
                self.handle_event(event);
            }
        }
    }

    /// Adds what was acknowledged since the last call to the shared
    /// counters and ships the progress sample when due.
    fn report(&mut self) {
        let (acked, bytes, failed) = std::mem::take(&mut self.unreported);
        Counters::add(&self.counters.acked_messages, acked);
        Counters::add(&self.counters.acked_bytes, bytes);
        Counters::add(&self.counters.failed_messages, failed);
        self.progress.maybe_ship(now_ns(), false);
    }

    fn complete(&mut self, completions: Vec<Completion<u64>>) {
        if completions.is_empty() {
            return;
        }
        let now = now_ns();
        let bytes = self.spec.message_bytes as u64;
        for completion in completions {
            let intended = completion.token;
            match completion.result {
                Ok(_) => {
                    self.result.acked += 1;
                    self.result.timestamp_sum = self.result.timestamp_sum.wrapping_add(intended);
                    self.result.bytes += bytes;
                    self.unreported.0 += 1;
                    self.unreported.1 += bytes;
                    if intended >= self.spec.warmup_end_ns {
                        let latency = now.saturating_sub(intended).max(1);
                        self.result.publish.saturating_record(latency);
                        self.progress.record(Metric::Publish, latency);
                        self.result.measured.add(intended, now, bytes);
                    }
                }
                Err(error) => {
                    self.result.failed += 1;
                    self.unreported.2 += 1;
                    self.result.error(error.to_string());
                }
            }
        }
    }

    fn expire_requests(&mut self) {
        let now = Instant::now();
        for (id, _) in self.core.timed_out(now) {
            let conn_id = self.sent.remove(&id).map(|(conn_id, _)| conn_id);
            let completions = self.core.handle_failure(
                id,
                AttemptFailure::TimedOut,
                ProduceError::Broker {
                    code: ErrorCode::RequestTimedOut,
                    message: Some("no answer within the request timeout".into()),
                },
                now,
            );
            self.complete(completions);
            // Answers may be stuck behind the lost one: start afresh.
            if let Some(conn_id) = conn_id {
                self.drop_conn(conn_id);
            }
        }
    }

    fn drop_conn(&mut self, conn_id: u64) {
        for conns in self.conns.values_mut() {
            conns.retain(|c| c.id != conn_id);
        }
        self.conns.retain(|_, conns| !conns.is_empty());
    }

    fn handle_event(&mut self, event: Event) {
        let now = Instant::now();
        match event {
            Event::Answer {
                conn_id,
                id,
                answer,
            } => {
                let Some((sent_conn, written_ns)) = self.sent.remove(&id) else {
                    // Timed out already: nothing waits for it.
                    return;
                };
                debug_assert_eq!(sent_conn, conn_id);
                if let Some(conn) = self.conns.values_mut().flatten().find(|c| c.id == conn_id) {
                    conn.in_flight -= 1;
                }
                let received = now_ns();
                if written_ns >= self.spec.warmup_end_ns {
                    let latency = received.saturating_sub(written_ns).max(1);
                    self.result.request.saturating_record(latency);
                    self.progress.record(Metric::Request, latency);
                }
                let completions = match answer {
                    Ok(results) => self.core.handle_response(id, &results, now),
                    Err((failure, error)) => self.core.handle_failure(id, failure, error, now),
                };
                self.complete(completions);
            }
            Event::Closed { conn_id, reason } => {
                self.drop_conn(conn_id);
                let lost: Vec<u32> = self
                    .sent
                    .iter()
                    .filter(|(_, (c, _))| *c == conn_id)
                    .map(|(id, _)| *id)
                    .collect();
                for id in lost {
                    self.sent.remove(&id);
                    let completions = self.core.handle_failure(
                        id,
                        AttemptFailure::Disconnected,
                        ProduceError::Connection(reason.clone()),
                        now,
                    );
                    self.complete(completions);
                }
            }
        }
    }

    /// A connection to `endpoint` that may take one more request: an
    /// existing one, or a new one (the core's in-flight limit per endpoint
    /// bounds how many a Kafka producer opens).
    async fn connection(&mut self, endpoint: &Endpoint) -> Result<&mut Conn, String> {
        let per_conn_max = self.spec.wire.requests_per_connection_max();
        let free = self
            .conns
            .get(endpoint)
            .and_then(|conns| conns.iter().position(|c| c.in_flight < per_conn_max));
        let index = match free {
            Some(index) => index,
            None => {
                let conn = self.open(endpoint).await?;
                let conns = self.conns.entry(endpoint.clone()).or_default();
                conns.push(conn);
                conns.len() - 1
            }
        };
        self.conns
            .get_mut(endpoint)
            .and_then(|conns| conns.get_mut(index))
            .ok_or_else(|| "connection vanished".to_owned())
    }

    async fn open(&mut self, endpoint: &Endpoint) -> Result<Conn, String> {
        let id = self.next_conn_id;
        self.next_conn_id += 1;
        let events = self.events_tx.clone();
        let frame_bytes_max = self.spec.frame_bytes_max;
        let (task, writer) = match &self.spec.wire {
            Wire::Native => {
                let (mut reader, writer) = conn::connect(&endpoint.to_string())
                    .await
                    .map_err(|e| e.to_string())?;
                let task = spawn_local(async move {
                    let mut frames = FrameReader::new(frame_bytes_max);
                    loop {
                        let event = match frames.next(&mut reader).await {
                            Ok(frame) => native_answer(id, &frame),
                            Err(error) => Event::Closed {
                                conn_id: id,
                                reason: error.to_string(),
                            },
                        };
                        let closed = matches!(event, Event::Closed { .. });
                        if events.send(event).await.is_err() || closed {
                            return;
                        }
                    }
                });
                (task, writer)
            }
            Wire::Kafka { .. } => {
                let (mut reader, writer) =
                    kafka::connect(&endpoint.to_string(), frame_bytes_max).await?;
                let task = spawn_local(async move {
                    let mut frames = KafkaReader::new(frame_bytes_max);
                    loop {
                        let event = match frames.next(&mut reader).await {
                            Ok(frame) => kafka_answer(id, frame),
                            Err(error) => Event::Closed {
                                conn_id: id,
                                reason: error.to_string(),
                            },
                        };
                        let closed = matches!(event, Event::Closed { .. });
                        if events.send(event).await.is_err() || closed {
                            return;
                        }
                    }
                });
                (task, writer)
            }
        };
        Ok(Conn {
            id,
            writer,
            in_flight: 0,
            _reader: task,
        })
    }

    async fn send(&mut self, mut outgoing: Outgoing) {
        let id = outgoing.request_id;
        let no_response = outgoing.acks == Acks::None;
        let flags = FrameFlags(if no_response {
            FrameFlags::NO_RESPONSE
        } else {
            0
        });
        let mut gather = std::mem::take(&mut self.gather);
        let written_ns = now_ns();
        let kafka = matches!(self.spec.wire, Wire::Kafka { .. });
        let result = match self.connection(&outgoing.endpoint).await {
            Ok(conn) => {
                let written = if kafka {
                    // The core encoded the whole frame; only the
                    // correlation id is ours to set.
                    kafka::set_correlation_id(&mut outgoing.request.body, id);
                    conn.writer.write_all(&outgoing.request.body).await
                } else {
                    conn::write_frame(
                        &mut conn.writer,
                        &mut gather,
                        ApiKey::Produce,
                        flags,
                        CorrelationId(id),
                        &outgoing.request.body,
                        &outgoing.request.payload,
                    )
                    .await
                };
                if written.is_ok() && !no_response {
                    conn.in_flight += 1;
                }
                written.map(|()| conn.id).map_err(|e| e.to_string())
            }
            Err(error) => Err(error),
        };
        self.gather = gather;
        let completions = match result {
            Ok(_) if no_response => self.core.handle_sent(id),
            Ok(conn_id) => {
                self.sent.insert(id, (conn_id, written_ns));
                Vec::new()
            }
            Err(error) => {
                self.conns.remove(&outgoing.endpoint);
                self.core.handle_failure(
                    id,
                    AttemptFailure::Disconnected,
                    ProduceError::Connection(format!("{}: {error}", outgoing.endpoint)),
                    Instant::now(),
                )
            }
        };
        self.complete(completions);
    }
}

/// A native response frame as the producer task wants it.
fn native_answer(conn_id: u64, frame: &Frame) -> Event {
    let id = frame.header.correlation_id().0;
    let answer = if frame.header.flags().is_error() {
        let (code, message) = match broker_error(frame) {
            Ok(ClientError::Broker { code, message }) => (code, message),
            Ok(other) | Err(other) => (ErrorCode::UnknownServerError, other.to_string()),
        };
        Err((
            AttemptFailure::Broker(code),
            ProduceError::Broker {
                code,
                message: Some(message),
            },
        ))
    } else {
        read_produce(frame).map_err(|error| {
            (
                AttemptFailure::Broker(ErrorCode::UnknownServerError),
                ProduceError::Connection(format!("bad produce response: {error}")),
            )
        })
    };
    Event::Answer {
        conn_id,
        id,
        answer,
    }
}

/// A Kafka Produce answer; one that does not decode closes the connection
/// (its correlation id cannot be trusted).
fn kafka_answer(conn_id: u64, frame: Bytes) -> Event {
    match kafka::decode_response::<ProduceResponse>(
        frame,
        KafkaApiKey::Produce,
        kafka::PRODUCE_VERSION,
    ) {
        Ok((id, response)) => Event::Answer {
            conn_id,
            id,
            answer: Ok(kafka::read_produce(response)),
        },
        Err(reason) => Event::Closed { conn_id, reason },
    }
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
