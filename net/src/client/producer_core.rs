//! The producer's sans-IO core: partitioning, the accumulator, which batches
//! go in which request to which endpoint, in-flight limits and deadlines,
//! and what to do with each answer (complete, retry after backoff, fail).
//!
//! It takes events (`append`, `handle_response`, `handle_sent`,
//! `handle_failure`, `update_metadata`) with the current time and yields
//! work (`poll` → requests to send, completions to deliver). A driver owns
//! the sockets: the std-thread one in [`super::producer`], later one on the
//! thread-per-core runtime for `loadgen`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fjord_schema::{BatchBuilder, ErrorCode, Offset, PartitionId, RecordInput};

use super::accumulator::{
    Accumulator, AccumulatorConfig, AppendError, Closed, ReadyBatch, TopicPartition,
};
use super::cluster::{routes, Endpoint, TopicRoute, TopicState};
use super::format::ProduceFormat;
use super::partitioner::Partitioner;
use super::protocol::{Acks, EncodedProduce, ProducePartition, ProducePartitionResult};
use super::retry::{AttemptFailure, RetryDecision, RetryPolicy};
use super::Metadata;

/// Producer settings, named after Kafka's where Kafka has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerConfig {
    pub acks: Acks,
    /// `batch.size`, `linger.ms`, `buffer.memory`, `compression.type`,
    /// `max.request.size` (per record) and idempotence fields.
    pub accumulator: AccumulatorConfig,
    /// `max.in.flight.requests.per.connection`.
    pub in_flight_per_connection_max: usize,
    /// `request.timeout.ms`: an unanswered request fails (and is retried)
    /// after this; also the broker-side produce timeout.
    pub request_timeout: Duration,
    /// `retries`, `retry.backoff.ms`, `delivery.timeout.ms`.
    pub retry: RetryPolicy,
    /// Largest produce request payload; batches beyond it wait for the next
    /// request to the same endpoint.
    pub request_payload_max_bytes: usize,
    /// Send each partition to its leader's shard port when advertised.
    pub shard_aware: bool,
    /// Seed of the sticky partitioner's choices; random by default so
    /// producers started together spread keyless records.
    pub partitioner_seed: u64,
    /// `enable.idempotence`. `None` (the default) means on unless `acks`
    /// is not `all` or more than 5 requests may be in flight, as Kafka 3+;
    /// `Some(true)` with either of those is a configuration error.
    pub enable_idempotence: Option<bool>,
}

/// Most requests in flight per connection an idempotent producer allows
/// (the broker remembers this many batches per producer).
pub const IDEMPOTENT_IN_FLIGHT_MAX: usize = 5;

impl ProducerConfig {
    /// Whether the producer is idempotent, or why the settings conflict.
    pub fn idempotence(&self) -> Result<bool, String> {
        let compatible =
            self.acks == Acks::All && self.in_flight_per_connection_max <= IDEMPOTENT_IN_FLIGHT_MAX;
        match self.enable_idempotence {
            None => Ok(compatible),
            Some(false) => Ok(false),
            Some(true) if compatible => Ok(true),
            Some(true) => Err(format!(
                "enable_idempotence needs acks = all and at most {IDEMPOTENT_IN_FLIGHT_MAX} \
                 requests in flight (have acks = {:?}, {} in flight)",
                self.acks, self.in_flight_per_connection_max
            )),
        }
    }
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            accumulator: AccumulatorConfig::default(),
            in_flight_per_connection_max: 5,
            request_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            request_payload_max_bytes: 4 * 1024 * 1024,
            shard_aware: true,
            partitioner_seed: random_seed(),
            enable_idempotence: None,
        }
    }
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS once per process and varied per
    // instance: enough to spread producers, no extra dependency.
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// Where a record ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMetadata {
    pub partition: PartitionId,
    /// `None` with acks=0: the broker does not say.
    pub offset: Option<Offset>,
}

/// Why a record was not written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProduceError {
    #[error("broker refused the batch: {code:?}{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Broker {
        code: ErrorCode,
        message: Option<String>,
    },
    #[error("record of {size} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge { size: usize, max: usize },
    #[error("producer buffer is full ({buffer_memory_bytes} bytes)")]
    BufferFull { buffer_memory_bytes: usize },
    #[error("not delivered within the delivery timeout of {0:?}")]
    DeliveryTimeout(Duration),
    #[error("topic {topic}: {code:?}")]
    Topic { topic: String, code: ErrorCode },
    #[error("cannot build the batch: {0}")]
    Batch(String),
    #[error("cannot reach the broker: {0}")]
    Connection(String),
    #[error("the producer is closed")]
    Closed,
}

/// The outcome for one record.
#[derive(Debug)]
pub struct Completion<T> {
    pub token: T,
    pub result: Result<RecordMetadata, ProduceError>,
}

/// Why `append` did not take a record.
#[derive(Debug)]
pub enum Refused<T> {
    /// No metadata for the topic yet: fetch it (see `wanted_topics`) and
    /// append again.
    NeedMetadata(T),
    /// Over `buffer_memory_bytes`: wait for completions and append again.
    BufferFull(T),
    /// Will never be accepted.
    Failed(Completion<T>),
}

/// A produce request to write to `endpoint`.
#[derive(Debug)]
pub struct Outgoing {
    /// Also the frame's correlation id.
    pub request_id: u32,
    pub endpoint: Endpoint,
    pub acks: Acks,
    pub timeout_ms: u32,
    pub request: EncodedProduce,
}

/// What `poll` asks the driver to do.
#[derive(Debug)]
pub struct Work<T> {
    pub requests: Vec<Outgoing>,
    pub completions: Vec<Completion<T>>,
}

#[derive(Debug)]
struct InFlight<T> {
    endpoint: Endpoint,
    batches: Vec<ReadyBatch<T>>,
    deadline: Instant,
}

/// The producer state machine. Lives in: one producer (behind the driver).
/// Owns: buffered and in-flight batches, routes, partitioner state.
/// Generic over the wire format `F` (native by default, [`super::format`]).
#[derive(Debug)]
pub struct ProducerCore<T, F = BatchBuilder> {
    config: ProducerConfig,
    accumulator: Accumulator<T, F>,
    partitioner: Partitioner,
    routes: HashMap<String, TopicState>,
    /// Topics appended to or wanted, to ask Metadata about.
    topics: HashSet<String>,
    in_flight: HashMap<u32, InFlight<T>>,
    in_flight_per_endpoint: HashMap<Endpoint, usize>,
    next_request_id: u32,
    metadata_stale: bool,
    /// Close every open batch on the next poll.
    flush_requested: bool,
    /// Records whose batch failed to close during `append`, reported by the
    /// next `poll`.
    pending_failures: Vec<Completion<T>>,
    /// Idempotent (a producer id is set): one batch per partition in
    /// flight, so a retried batch always goes before the later ones.
    idempotent: bool,
    in_flight_partitions: HashSet<TopicPartition>,
    /// A sequence or epoch error: the producer cannot continue (every
    /// record from then on fails with it).
    fatal: Option<ProduceError>,
}

impl<T> ProducerCore<T> {
    /// A producer of native batches and requests.
    pub fn new(config: ProducerConfig) -> ProducerCore<T> {
        ProducerCore::with_format(config)
    }
}

impl<T, F: ProduceFormat> ProducerCore<T, F> {
    pub fn with_format(config: ProducerConfig) -> ProducerCore<T, F> {
        assert!(config.in_flight_per_connection_max > 0);
        assert!(
            config.accumulator.record_size_max_bytes <= config.request_payload_max_bytes,
            "a record's batch must fit in a request"
        );
        ProducerCore {
            accumulator: Accumulator::with_format(config.accumulator),
            partitioner: Partitioner::new(config.partitioner_seed),
            routes: HashMap::new(),
            topics: HashSet::new(),
            in_flight: HashMap::new(),
            in_flight_per_endpoint: HashMap::new(),
            next_request_id: 0,
            metadata_stale: false,
            flush_requested: false,
            pending_failures: Vec::new(),
            idempotent: config.accumulator.producer_id.0 >= 0,
            in_flight_partitions: HashSet::new(),
            fatal: None,
            config,
        }
    }

    pub fn config(&self) -> &ProducerConfig {
        &self.config
    }

    /// Takes a record. `partition` overrides the partitioner.
    pub fn append(
        &mut self,
        topic: &str,
        partition: Option<PartitionId>,
        record: RecordInput<'_>,
        token: T,
        now: Instant,
    ) -> Result<PartitionId, Refused<T>> {
        if let Some(error) = &self.fatal {
            return Err(Refused::Failed(Completion {
                token,
                result: Err(error.clone()),
            }));
        }
        let route = match self.routes.get(topic) {
            None => {
                self.topics.insert(topic.to_owned());
                return Err(Refused::NeedMetadata(token));
            }
            Some(TopicState::Error(code)) => {
                return Err(Refused::Failed(Completion {
                    token,
                    result: Err(ProduceError::Topic {
                        topic: topic.to_owned(),
                        code: *code,
                    }),
                }))
            }
            Some(TopicState::Routed(route)) => route,
        };
        let count = route.partition_count();
        if count == 0 {
            return Err(Refused::Failed(Completion {
                token,
                result: Err(ProduceError::Topic {
                    topic: topic.to_owned(),
                    code: ErrorCode::LeaderNotAvailable,
                }),
            }));
        }
        let partition = match partition {
            Some(p) if p.0 >= count => {
                return Err(Refused::Failed(Completion {
                    token,
                    result: Err(ProduceError::Topic {
                        topic: topic.to_owned(),
                        code: ErrorCode::UnknownTopicOrPartition,
                    }),
                }))
            }
            Some(p) => p,
            None => self.partitioner.partition(topic, record.key, count),
        };
        let tp = TopicPartition {
            topic: Arc::from(topic),
            partition,
        };
        match self.accumulator.append(&tp, record, token, now) {
            Ok(closed) => {
                let failed = self.after_close(closed);
                // Compression of the *previous* batch failed: report through
                // the next poll rather than lose it.
                self.pending_failures.extend(failed);
                Ok(partition)
            }
            Err(AppendError::BufferFull(token)) => Err(Refused::BufferFull(token)),
            Err(AppendError::RecordTooLarge { token, size, max }) => {
                Err(Refused::Failed(Completion {
                    token,
                    result: Err(ProduceError::RecordTooLarge { size, max }),
                }))
            }
        }
    }

    fn after_close(&mut self, closed: Closed<T>) -> Vec<Completion<T>> {
        for tp in &closed.closed {
            let count = self.partition_count(&tp.topic);
            if count > 0 {
                self.partitioner
                    .batch_closed(&tp.topic, tp.partition, count);
            }
        }
        let mut completions = Vec::new();
        for failed in closed.failed {
            self.accumulator.release(failed.reserved_bytes);
            let message = failed.error.to_string();
            completions.extend(failed.tokens.into_iter().map(|token| Completion {
                token,
                result: Err(ProduceError::Batch(message.clone())),
            }));
        }
        completions
    }

    fn partition_count(&self, topic: &str) -> u32 {
        match self.routes.get(topic) {
            Some(TopicState::Routed(route)) => route.partition_count(),
            _ => 0,
        }
    }

    /// Closes every open batch at the next `poll` (Kafka's `flush()`).
    pub fn flush(&mut self) {
        self.flush_requested = true;
    }

    /// Builds the requests that may go now and reports records that
    /// completed without a response (expired in the queue).
    pub fn poll(&mut self, now: Instant) -> Work<T> {
        let closed = self
            .accumulator
            .close_lingering(now, std::mem::take(&mut self.flush_requested));
        let mut completions = self.after_close(closed);
        completions.append(&mut self.pending_failures);
        if let Some(error) = self.fatal.clone() {
            completions.extend(self.abort(error));
            return Work {
                requests: Vec::new(),
                completions,
            };
        }

        let delivery_timeout = self.config.retry.delivery_timeout;
        if let Some(cutoff) = now.checked_sub(delivery_timeout) {
            for batch in self.accumulator.take_expired(cutoff) {
                self.fail_batch(
                    batch,
                    ProduceError::DeliveryTimeout(delivery_timeout),
                    &mut completions,
                );
            }
        }

        let mut per_endpoint: BTreeMap<Endpoint, Vec<ReadyBatch<T>>> = BTreeMap::new();
        let mut payload_bytes: HashMap<Endpoint, usize> = HashMap::new();
        for tp in self.accumulator.sendable(now) {
            let endpoint = match self.routes.get(&*tp.topic) {
                Some(TopicState::Routed(route)) => route.leader(tp.partition).cloned(),
                _ => None,
            };
            if self.idempotent && self.in_flight_partitions.contains(&tp) {
                continue;
            }
            let Some(endpoint) = endpoint else {
                // Leader unknown: ask again; the batch waits (bounded by the
                // delivery timeout).
                self.metadata_stale = true;
                self.topics.insert(tp.topic.to_string());
                continue;
            };
            let busy = self
                .in_flight_per_endpoint
                .get(&endpoint)
                .copied()
                .unwrap_or(0);
            if busy >= self.config.in_flight_per_connection_max {
                continue;
            }
            let len = self.accumulator.front_len(&tp).unwrap_or(0);
            let used = payload_bytes.entry(endpoint.clone()).or_insert(0);
            if *used > 0 && *used + len > self.config.request_payload_max_bytes {
                continue;
            }
            *used += len;
            if let Some(batch) = self.accumulator.take_front(&tp) {
                if self.idempotent {
                    self.in_flight_partitions.insert(tp.clone());
                }
                per_endpoint.entry(endpoint).or_default().push(batch);
            }
        }

        let mut requests = Vec::new();
        let timeout_ms = u32::try_from(self.config.request_timeout.as_millis()).unwrap_or(u32::MAX);
        for (endpoint, mut batches) in per_endpoint {
            let mut by_topic: BTreeMap<Arc<str>, Vec<ProducePartition>> = BTreeMap::new();
            for batch in &mut batches {
                batch.attempts += 1;
                batch.retry_at = None;
                by_topic
                    .entry(batch.tp.topic.clone())
                    .or_default()
                    .push(ProducePartition {
                        partition: batch.tp.partition,
                        batches: vec![batch.bytes.clone()],
                    });
            }
            let topics: Vec<(&str, Vec<ProducePartition>)> = by_topic
                .iter()
                .map(|(topic, partitions)| (&**topic, partitions.clone()))
                .collect();
            let Some(request) = F::encode_produce(&topics, self.config.acks, timeout_ms) else {
                // Bounded by request_payload_max_bytes, far below 4 GiB.
                unreachable!("produce payload over 4 GiB");
            };
            let request_id = self.next_request_id;
            self.next_request_id = self.next_request_id.wrapping_add(1);
            *self
                .in_flight_per_endpoint
                .entry(endpoint.clone())
                .or_insert(0) += 1;
            self.in_flight.insert(
                request_id,
                InFlight {
                    endpoint: endpoint.clone(),
                    batches,
                    deadline: now + self.config.request_timeout,
                },
            );
            requests.push(Outgoing {
                request_id,
                endpoint,
                acks: self.config.acks,
                timeout_ms,
                request,
            });
        }
        Work {
            requests,
            completions,
        }
    }

    fn take_in_flight(&mut self, request_id: u32) -> Option<InFlight<T>> {
        let in_flight = self.in_flight.remove(&request_id)?;
        for batch in &in_flight.batches {
            self.in_flight_partitions.remove(&batch.tp);
        }
        if let Some(count) = self.in_flight_per_endpoint.get_mut(&in_flight.endpoint) {
            *count -= 1;
            if *count == 0 {
                self.in_flight_per_endpoint.remove(&in_flight.endpoint);
            }
        }
        Some(in_flight)
    }

    /// An acks=0 request was written: its records are done, offsets unknown.
    pub fn handle_sent(&mut self, request_id: u32) -> Vec<Completion<T>> {
        let Some(in_flight) = self.take_in_flight(request_id) else {
            return Vec::new();
        };
        let mut completions = Vec::new();
        for batch in in_flight.batches {
            self.accumulator.release(batch.reserved_bytes);
            let partition = batch.tp.partition;
            completions.extend(batch.tokens.into_iter().map(|token| Completion {
                token,
                result: Ok(RecordMetadata {
                    partition,
                    offset: None,
                }),
            }));
        }
        completions
    }

    /// The broker answered request `request_id`. Answers to requests that
    /// already timed out are ignored.
    pub fn handle_response(
        &mut self,
        request_id: u32,
        results: &[ProducePartitionResult],
        now: Instant,
    ) -> Vec<Completion<T>> {
        let Some(in_flight) = self.take_in_flight(request_id) else {
            return Vec::new();
        };
        let mut completions = Vec::new();
        for batch in in_flight.batches {
            let result = results
                .iter()
                .find(|r| *r.topic == *batch.tp.topic && r.partition == batch.tp.partition);
            match result {
                // DUPLICATE_SEQUENCE_NUMBER: written before, as Kafka.
                Some(r)
                    if r.error == ErrorCode::None
                        || (self.idempotent && r.error == ErrorCode::DuplicateSequenceNumber) =>
                {
                    self.accumulator.release(batch.reserved_bytes);
                    let partition = batch.tp.partition;
                    let base = r.base_offset;
                    completions.extend(batch.tokens.into_iter().enumerate().map(|(i, token)| {
                        Completion {
                            token,
                            result: Ok(RecordMetadata {
                                partition,
                                offset: base.map(|b| b.plus(i as u64)),
                            }),
                        }
                    }));
                }
                Some(r) if self.idempotent && is_fatal_for_idempotence(r.error) => {
                    let error = ProduceError::Broker {
                        code: r.error,
                        message: r.message.clone(),
                    };
                    self.fatal.get_or_insert(error.clone());
                    self.fail_batch(batch, error, &mut completions);
                }
                Some(r) => {
                    let error = ProduceError::Broker {
                        code: r.error,
                        message: r.message.clone(),
                    };
                    self.retry_or_fail(
                        batch,
                        AttemptFailure::Broker(r.error),
                        error,
                        now,
                        &mut completions,
                    );
                }
                None => {
                    // The broker left the partition out: a broker bug, not
                    // worth retrying.
                    let error = ProduceError::Broker {
                        code: ErrorCode::UnknownServerError,
                        message: Some("partition missing from the produce response".into()),
                    };
                    self.fail_batch(batch, error, &mut completions);
                }
            }
        }
        completions
    }

    /// Request `request_id` got no answer: the connection failed or the
    /// whole request was refused (an ERROR frame carries `Broker`).
    pub fn handle_failure(
        &mut self,
        request_id: u32,
        failure: AttemptFailure,
        error: ProduceError,
        now: Instant,
    ) -> Vec<Completion<T>> {
        let Some(in_flight) = self.take_in_flight(request_id) else {
            return Vec::new();
        };
        let mut completions = Vec::new();
        // Requeued in reverse so the partition's order survives.
        for batch in in_flight.batches.into_iter().rev() {
            self.retry_or_fail(batch, failure, error.clone(), now, &mut completions);
        }
        completions
    }

    fn retry_or_fail(
        &mut self,
        mut batch: ReadyBatch<T>,
        failure: AttemptFailure,
        error: ProduceError,
        now: Instant,
        completions: &mut Vec<Completion<T>>,
    ) {
        match self
            .config
            .retry
            .decide(failure, batch.attempts, batch.created, now)
        {
            RetryDecision::Retry {
                at,
                refresh_metadata,
            } => {
                self.metadata_stale |= refresh_metadata;
                batch.retry_at = Some(at);
                self.accumulator.requeue_front(batch);
            }
            RetryDecision::Fail { refresh_metadata } => {
                self.metadata_stale |= refresh_metadata;
                self.fail_batch(batch, error, completions);
            }
        }
    }

    fn fail_batch(
        &mut self,
        batch: ReadyBatch<T>,
        error: ProduceError,
        completions: &mut Vec<Completion<T>>,
    ) {
        self.accumulator.release(batch.reserved_bytes);
        completions.extend(batch.tokens.into_iter().map(|token| Completion {
            token,
            result: Err(error.clone()),
        }));
    }

    /// Requests past their deadline: the driver should call
    /// `handle_failure(TimedOut)` for each and drop the connection (its other
    /// answers may be stuck behind).
    pub fn timed_out(&self, now: Instant) -> Vec<(u32, Endpoint)> {
        self.in_flight
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(id, f)| (*id, f.endpoint.clone()))
            .collect()
    }

    /// When `poll` or `timed_out` next has something to do, absent new
    /// events.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let deadlines = self.in_flight.values().map(|f| f.deadline);
        let ready = self.accumulator.next_ready();
        deadlines.chain(ready).min()
    }

    /// Whether metadata should be fetched (for `wanted_topics`).
    pub fn metadata_wanted(&self) -> bool {
        self.metadata_stale || self.topics.iter().any(|t| !self.routes.contains_key(t))
    }

    pub fn wanted_topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self.topics.iter().cloned().collect();
        topics.sort();
        topics
    }

    /// New routes from a Metadata answer for `wanted_topics`.
    pub fn update_metadata(&mut self, metadata: &Metadata) {
        for (topic, state) in routes(metadata, self.config.shard_aware) {
            self.routes.insert(topic, state);
        }
        self.metadata_stale = false;
    }

    /// The route of a topic, if known.
    pub fn route(&self, topic: &str) -> Option<&TopicRoute> {
        match self.routes.get(topic) {
            Some(TopicState::Routed(route)) => Some(route),
            _ => None,
        }
    }

    /// The error that stopped an idempotent producer, if any.
    pub fn fatal_error(&self) -> Option<&ProduceError> {
        self.fatal.as_ref()
    }

    /// Nothing buffered, queued or in flight.
    pub fn is_idle(&self) -> bool {
        self.accumulator.is_empty() && self.in_flight.is_empty() && self.pending_failures.is_empty()
    }

    pub fn buffered_bytes(&self) -> usize {
        self.accumulator.used_bytes()
    }

    /// Fails everything buffered and in flight (closing without waiting).
    pub fn abort(&mut self, error: ProduceError) -> Vec<Completion<T>> {
        let mut completions = std::mem::take(&mut self.pending_failures);
        let ids: Vec<u32> = self.in_flight.keys().copied().collect();
        for id in ids {
            if let Some(in_flight) = self.take_in_flight(id) {
                for batch in in_flight.batches {
                    self.fail_batch(batch, error.clone(), &mut completions);
                }
            }
        }
        for (_, tokens, reserved) in self.accumulator.drain_all() {
            self.accumulator.release(reserved);
            completions.extend(tokens.into_iter().map(|token| Completion {
                token,
                result: Err(error.clone()),
            }));
        }
        completions
    }
}

/// Errors after which an idempotent producer's sequences can no longer be
/// trusted: a gap, or another instance took over the producer id.
fn is_fatal_for_idempotence(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::OutOfOrderSequenceNumber
            | ErrorCode::InvalidProducerEpoch
            | ErrorCode::ProducerFenced
            | ErrorCode::UnknownProducerId
            | ErrorCode::InvalidProducerIdMapping
    )
}

#[cfg(test)]
mod tests;
