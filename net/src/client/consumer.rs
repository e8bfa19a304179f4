//! The consumer: manual assignment, seek, and `poll` with long-poll Fetch
//! straight to each partition's shard. Blocking, single-threaded: a poll
//! sends one fetch per (endpoint, topic), then reads every answer, so
//! partitions on different shards are polled at once.
//!
//! Every batch is verified (`BatchView::parse`: CRC; `records()`: body and
//! header agreement) before a record leaves; records below the position
//! (a fetch starts at the batch holding it) are skipped.
//!
//! Lives in: the caller's thread. Owns: its connections and the records
//! fetched but not yet returned (bounded by one fetch).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fjord_schema::batch::Batches;
use fjord_schema::{BatchError, ErrorCode, Offset, PartitionId};

use super::cluster::{routes, Endpoint, TopicState};
use super::protocol::{
    read_fetch, FetchParams, FetchPartitionRequest, LIST_OFFSETS_EARLIEST, LIST_OFFSETS_LATEST,
};
use super::{Client, ClientConfig, ClientError};

/// What to do when there is no valid position (Kafka's `auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    #[default]
    Earliest,
    Latest,
    /// Report an error instead.
    None,
}

/// Where to move a partition's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    Offset(Offset),
    Earliest,
    Latest,
    /// First record with a timestamp at or after this (ms).
    Timestamp(i64),
}

/// Consumer settings, named after Kafka's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    /// `fetch.max.wait.ms`: how long the broker holds a fetch for data.
    pub fetch_max_wait: Duration,
    /// `fetch.min.bytes`.
    pub fetch_min_bytes: u32,
    /// `fetch.max.bytes`, per fetch response.
    pub fetch_max_bytes: u32,
    /// `max.partition.fetch.bytes`.
    pub partition_fetch_max_bytes: u32,
    pub auto_offset_reset: OffsetReset,
    /// Largest decompressed records body accepted (decompression bombs).
    pub uncompressed_batch_max_bytes: usize,
    /// `max.poll.records`.
    pub max_poll_records: usize,
    /// Wait before fetching again after a retriable error.
    pub retry_backoff: Duration,
    /// Fetch from each partition's shard port when advertised.
    pub shard_aware: bool,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            fetch_max_wait: Duration::from_millis(500),
            fetch_min_bytes: 1,
            fetch_max_bytes: 50 * 1024 * 1024,
            partition_fetch_max_bytes: 1024 * 1024,
            auto_offset_reset: OffsetReset::Earliest,
            uncompressed_batch_max_bytes: 64 * 1024 * 1024,
            max_poll_records: 500,
            retry_backoff: Duration::from_millis(100),
            shard_aware: true,
        }
    }
}

/// Consumer settings plus where to bootstrap.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    pub bootstrap: Vec<String>,
    pub consumer: ConsumerConfig,
    pub client: ClientConfig,
}

impl ConsumerOptions {
    pub fn new(bootstrap: impl Into<String>) -> ConsumerOptions {
        ConsumerOptions {
            bootstrap: vec![bootstrap.into()],
            consumer: ConsumerConfig::default(),
            client: ClientConfig::default(),
        }
    }
}

/// One record. Key, value and header bytes share the fetch response's
/// buffer for uncompressed batches (no copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    pub topic: Arc<str>,
    pub partition: PartitionId,
    pub offset: Offset,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// `None`: a null key (not the same as an empty one).
    pub key: Option<Bytes>,
    /// `None`: a null value (a tombstone).
    pub value: Option<Bytes>,
    pub headers: Vec<(Bytes, Option<Bytes>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{topic}-{partition}: offset {offset} is out of range and auto_offset_reset is none")]
    OffsetOutOfRange {
        topic: String,
        partition: PartitionId,
        offset: Offset,
    },
    #[error("{topic}-{partition}: corrupt batch: {error}")]
    Corrupt {
        topic: String,
        partition: PartitionId,
        error: BatchError,
    },
    #[error("topic {topic}: {code:?}")]
    Topic { topic: String, code: ErrorCode },
    #[error("{topic}-{partition}: {code:?}")]
    Partition {
        topic: String,
        partition: PartitionId,
        code: ErrorCode,
    },
    #[error("{topic}-{partition} is not assigned")]
    NotAssigned {
        topic: String,
        partition: PartitionId,
    },
}

#[derive(Debug, Clone)]
struct Assigned {
    /// The next offset to return; `None` until resolved.
    position: Option<Offset>,
    /// A seek to resolve with ListOffsets before fetching.
    pending: Option<SeekTo>,
    high_watermark: Option<Offset>,
    /// Records of this partition waiting in `buffer`.
    buffered: usize,
    /// Not fetched before this (after a retriable error).
    backoff_until: Option<Instant>,
}

type Key = (Arc<str>, PartitionId);

/// ListOffsets to send: per (leader, topic), the partitions and timestamps.
type Lookups = BTreeMap<(Endpoint, Arc<str>), Vec<(PartitionId, i64)>>;

/// A Kafka-style consumer with manual assignment.
#[derive(Debug)]
pub struct Consumer {
    options: ConsumerOptions,
    bootstrap: Option<Client>,
    conns: HashMap<Endpoint, Client>,
    routes: HashMap<String, TopicState>,
    metadata_stale: bool,
    assigned: BTreeMap<Key, Assigned>,
    buffer: VecDeque<ConsumerRecord>,
}

impl Consumer {
    /// Connects to a bootstrap broker.
    pub fn new(options: ConsumerOptions) -> Result<Consumer, ConsumerError> {
        let bootstrap = connect_any(&options)?;
        Ok(Consumer {
            options,
            bootstrap: Some(bootstrap),
            conns: HashMap::new(),
            routes: HashMap::new(),
            metadata_stale: true,
            assigned: BTreeMap::new(),
            buffer: VecDeque::new(),
        })
    }

    /// The topic's partitions, from fresh metadata.
    pub fn partitions_for(&mut self, topic: &str) -> Result<Vec<PartitionId>, ConsumerError> {
        self.refresh_metadata(&[topic])?;
        match self.routes.get(topic) {
            Some(TopicState::Routed(route)) => {
                Ok((0..route.partition_count()).map(PartitionId).collect())
            }
            Some(TopicState::Error(code)) => Err(ConsumerError::Topic {
                topic: topic.to_owned(),
                code: *code,
            }),
            None => Err(ConsumerError::Topic {
                topic: topic.to_owned(),
                code: ErrorCode::UnknownTopicOrPartition,
            }),
        }
    }

    /// Adds partitions to the assignment; their position starts per
    /// `auto_offset_reset` unless `seek` sets it.
    pub fn assign(&mut self, topic: &str, partitions: &[PartitionId]) {
        let topic: Arc<str> = Arc::from(topic);
        for partition in partitions {
            self.assigned
                .entry((topic.clone(), *partition))
                .or_insert(Assigned {
                    position: None,
                    pending: None,
                    high_watermark: None,
                    buffered: 0,
                    backoff_until: None,
                });
        }
        self.metadata_stale = true;
    }

    /// Removes partitions from the assignment, with their buffered records.
    pub fn unassign(&mut self, topic: &str, partitions: &[PartitionId]) {
        let topic: Arc<str> = Arc::from(topic);
        for partition in partitions {
            self.assigned.remove(&(topic.clone(), *partition));
        }
        self.buffer
            .retain(|r| !(r.topic == topic && partitions.contains(&r.partition)));
    }

    /// The assigned partitions, sorted.
    pub fn assignment(&self) -> Vec<(String, PartitionId)> {
        self.assigned
            .keys()
            .map(|(topic, partition)| (topic.to_string(), *partition))
            .collect()
    }

    /// Moves a partition's position; takes effect at the next `poll`
    /// (records already fetched for it are dropped).
    pub fn seek(
        &mut self,
        topic: &str,
        partition: PartitionId,
        to: SeekTo,
    ) -> Result<(), ConsumerError> {
        let state = self
            .assigned
            .get_mut(&(Arc::from(topic), partition))
            .ok_or_else(|| ConsumerError::NotAssigned {
                topic: topic.to_owned(),
                partition,
            })?;
        match to {
            SeekTo::Offset(offset) => {
                state.position = Some(offset);
                state.pending = None;
            }
            other => state.pending = Some(other),
        }
        state.buffered = 0;
        self.buffer
            .retain(|r| !(*r.topic == *topic && r.partition == partition));
        Ok(())
    }

    /// The next offset `poll` returns for the partition, once known.
    pub fn position(&self, topic: &str, partition: PartitionId) -> Option<Offset> {
        let state = self.assigned.get(&(Arc::from(topic), partition))?;
        if state.pending.is_some() {
            return None;
        }
        // Buffered records are not returned yet: the position is the first.
        self.buffer
            .iter()
            .find(|r| *r.topic == *topic && r.partition == partition)
            .map(|r| r.offset)
            .or(state.position)
    }

    /// The partition's high watermark as of the last fetch.
    pub fn high_watermark(&self, topic: &str, partition: PartitionId) -> Option<Offset> {
        self.assigned
            .get(&(Arc::from(topic), partition))
            .and_then(|s| s.high_watermark)
    }

    /// Returns fetched records, long-polling up to `timeout` for some to
    /// arrive; an empty vector when none did.
    pub fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>, ConsumerError> {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.buffer.is_empty() {
                return Ok(self.take_buffered());
            }
            if self.metadata_stale || self.routes_missing() {
                let topics: Vec<String> = self.assigned_topics();
                let names: Vec<&str> = topics.iter().map(String::as_str).collect();
                self.refresh_metadata(&names)?;
            }
            self.resolve_positions()?;
            let now = Instant::now();
            let remaining = deadline.saturating_duration_since(now);
            let fetched_any = self.fetch_once(remaining)?;
            if !self.buffer.is_empty() {
                return Ok(self.take_buffered());
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            if !fetched_any {
                // Nothing could be fetched (no leader, backoff): wait a bit
                // rather than spin.
                let pause = self.options.consumer.retry_backoff.min(deadline - now);
                thread::sleep(pause);
            }
        }
    }

    fn take_buffered(&mut self) -> Vec<ConsumerRecord> {
        let count = self
            .buffer
            .len()
            .min(self.options.consumer.max_poll_records);
        let records: Vec<ConsumerRecord> = self.buffer.drain(..count).collect();
        for record in &records {
            if let Some(state) = self
                .assigned
                .get_mut(&(record.topic.clone(), record.partition))
            {
                state.buffered -= 1;
                state.position = Some(record.offset.plus(1));
            }
        }
        records
    }

    fn assigned_topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self.assigned.keys().map(|(t, _)| t.to_string()).collect();
        topics.dedup();
        topics
    }

    fn routes_missing(&self) -> bool {
        self.assigned
            .keys()
            .any(|(topic, _)| !self.routes.contains_key(&**topic))
    }

    fn refresh_metadata(&mut self, topics: &[&str]) -> Result<(), ConsumerError> {
        let result = match self.bootstrap.as_mut() {
            Some(client) => client.metadata(Some(topics)),
            None => Err(ClientError::Closed),
        };
        let metadata = match result {
            Ok(metadata) => metadata,
            Err(_) => {
                self.bootstrap = None;
                let mut client = connect_any(&self.options)?;
                let metadata = client.metadata(Some(topics))?;
                self.bootstrap = Some(client);
                metadata
            }
        };
        for (topic, state) in routes(&metadata, self.options.consumer.shard_aware) {
            self.routes.insert(topic, state);
        }
        self.metadata_stale = false;
        for topic in topics {
            if let Some(TopicState::Error(code)) = self.routes.get(*topic) {
                if !code.is_retriable() {
                    return Err(ConsumerError::Topic {
                        topic: (*topic).to_owned(),
                        code: *code,
                    });
                }
            }
        }
        Ok(())
    }

    fn leader(&self, topic: &str, partition: PartitionId) -> Option<Endpoint> {
        match self.routes.get(topic) {
            Some(TopicState::Routed(route)) => route.leader(partition).cloned(),
            _ => None,
        }
    }

    fn conn(&mut self, endpoint: &Endpoint) -> Result<&mut Client, ClientError> {
        if !self.conns.contains_key(endpoint) {
            let client = Client::connect(
                (endpoint.host.as_str(), endpoint.port),
                self.options.client.clone(),
            )?;
            self.conns.insert(endpoint.clone(), client);
        }
        self.conns.get_mut(endpoint).ok_or(ClientError::Closed)
    }

    /// Turns pending seeks (and missing positions, per `auto_offset_reset`)
    /// into offsets with ListOffsets.
    fn resolve_positions(&mut self) -> Result<(), ConsumerError> {
        let reset = self.options.consumer.auto_offset_reset;
        let mut lookups: Lookups = BTreeMap::new();
        for ((topic, partition), state) in &mut self.assigned {
            let seek = match (state.pending, state.position) {
                (Some(seek), _) => seek,
                (None, Some(_)) => continue,
                (None, None) => match reset {
                    OffsetReset::Earliest => SeekTo::Earliest,
                    OffsetReset::Latest => SeekTo::Latest,
                    OffsetReset::None => {
                        return Err(ConsumerError::OffsetOutOfRange {
                            topic: topic.to_string(),
                            partition: *partition,
                            offset: Offset(0),
                        })
                    }
                },
            };
            let timestamp = match seek {
                SeekTo::Offset(offset) => {
                    state.position = Some(offset);
                    state.pending = None;
                    continue;
                }
                SeekTo::Earliest => LIST_OFFSETS_EARLIEST,
                SeekTo::Latest => LIST_OFFSETS_LATEST,
                SeekTo::Timestamp(ts) => ts,
            };
            state.pending = Some(seek);
            let Some(endpoint) = (match self.routes.get(&**topic) {
                Some(TopicState::Routed(route)) => route.leader(*partition).cloned(),
                _ => None,
            }) else {
                self.metadata_stale = true;
                continue;
            };
            lookups
                .entry((endpoint, topic.clone()))
                .or_default()
                .push((*partition, timestamp));
        }
        for ((endpoint, topic), partitions) in lookups {
            let answers = match self.conn(&endpoint)?.list_offsets(&topic, &partitions) {
                Ok(answers) => answers,
                Err(error) => {
                    self.conns.remove(&endpoint);
                    return Err(error.into());
                }
            };
            for answer in answers {
                let Some(state) = self.assigned.get_mut(&(topic.clone(), answer.partition)) else {
                    continue;
                };
                match answer.error {
                    ErrorCode::None => {
                        let offset = match (answer.offset, state.pending) {
                            (Some(offset), _) => offset,
                            // No record at or after the timestamp: the end.
                            (None, Some(SeekTo::Timestamp(_))) => {
                                state.pending = Some(SeekTo::Latest);
                                continue;
                            }
                            (None, _) => Offset(0),
                        };
                        state.position = Some(offset);
                        state.pending = None;
                    }
                    code if code.is_retriable() => {
                        self.metadata_stale = true;
                    }
                    code => {
                        return Err(ConsumerError::Partition {
                            topic: topic.to_string(),
                            partition: answer.partition,
                            code,
                        })
                    }
                }
            }
        }
        Ok(())
    }

    /// One round: a fetch per (endpoint, topic) for partitions with a
    /// position and nothing buffered, sent together, then every answer.
    /// Returns whether any fetch was sent.
    fn fetch_once(&mut self, remaining: Duration) -> Result<bool, ConsumerError> {
        let config = self.options.consumer.clone();
        let now = Instant::now();
        let mut groups: BTreeMap<(Endpoint, Arc<str>), Vec<FetchPartitionRequest>> =
            BTreeMap::new();
        for ((topic, partition), state) in &self.assigned {
            let (Some(position), None, 0) = (state.position, state.pending, state.buffered) else {
                continue;
            };
            if state.backoff_until.is_some_and(|t| t > now) {
                continue;
            }
            let Some(endpoint) = self.leader(topic, *partition) else {
                continue;
            };
            groups
                .entry((endpoint, topic.clone()))
                .or_default()
                .push(FetchPartitionRequest {
                    partition: *partition,
                    offset: position,
                    max_bytes: config.partition_fetch_max_bytes,
                });
        }
        if groups.is_empty() {
            if self.assigned.values().any(|s| s.position.is_some())
                && self
                    .assigned
                    .keys()
                    .any(|(t, p)| self.leader(t, *p).is_none())
            {
                self.metadata_stale = true;
            }
            return Ok(false);
        }
        let max_wait = remaining.min(config.fetch_max_wait);
        let params = FetchParams {
            max_wait_ms: u32::try_from(max_wait.as_millis()).unwrap_or(u32::MAX),
            min_bytes: config.fetch_min_bytes,
            max_bytes: config.fetch_max_bytes,
        };
        let mut sent = Vec::with_capacity(groups.len());
        let mut first_error = None;
        for ((endpoint, topic), partitions) in groups {
            let result = self
                .conn(&endpoint)
                .and_then(|c| c.send_fetch(&topic, &partitions, params));
            match result {
                Ok(id) => sent.push((endpoint, id)),
                Err(error) => {
                    self.conns.remove(&endpoint);
                    self.metadata_stale = true;
                    first_error.get_or_insert(error);
                }
            }
        }
        for (endpoint, id) in sent {
            let frame = match self.conns.get_mut(&endpoint).map(|c| c.receive(id)) {
                Some(Ok(frame)) => frame,
                Some(Err(error)) => {
                    self.conns.remove(&endpoint);
                    self.metadata_stale = true;
                    first_error.get_or_insert(error);
                    continue;
                }
                None => continue,
            };
            let partitions = match read_fetch(&frame) {
                Ok(partitions) => partitions,
                Err(error) => {
                    first_error.get_or_insert(error);
                    continue;
                }
            };
            for fetched in partitions {
                self.handle_fetched(fetched, &config)?;
            }
        }
        match first_error {
            Some(error) if self.buffer.is_empty() => Err(error.into()),
            _ => Ok(true),
        }
    }

    fn handle_fetched(
        &mut self,
        fetched: super::protocol::FetchedPartition,
        config: &ConsumerConfig,
    ) -> Result<(), ConsumerError> {
        let topic: Arc<str> = Arc::from(fetched.topic.as_str());
        let key = (topic.clone(), fetched.partition);
        let Some(state) = self.assigned.get_mut(&key) else {
            return Ok(());
        };
        let Some(position) = state.position else {
            return Ok(());
        };
        match fetched.error {
            ErrorCode::None => {
                state.high_watermark = fetched.high_watermark.or(state.high_watermark);
                let mut records = Vec::new();
                let next = decode_records(
                    &topic,
                    fetched.partition,
                    &fetched.records,
                    position,
                    config.uncompressed_batch_max_bytes,
                    &mut records,
                )
                .map_err(|error| ConsumerError::Corrupt {
                    topic: topic.to_string(),
                    partition: fetched.partition,
                    error,
                })?;
                state.buffered += records.len();
                if records.is_empty() {
                    // Only records below the position (or a compacted gap):
                    // move past them.
                    if let Some(next) = next {
                        state.position = Some(next.max(position));
                    }
                }
                self.buffer.extend(records);
            }
            ErrorCode::OffsetOutOfRange => match config.auto_offset_reset {
                OffsetReset::Earliest => state.pending = Some(SeekTo::Earliest),
                OffsetReset::Latest => state.pending = Some(SeekTo::Latest),
                OffsetReset::None => {
                    return Err(ConsumerError::OffsetOutOfRange {
                        topic: topic.to_string(),
                        partition: fetched.partition,
                        offset: position,
                    })
                }
            },
            code if code.is_retriable() => {
                state.backoff_until = Some(Instant::now() + config.retry_backoff);
                if matches!(
                    code,
                    ErrorCode::NotLeaderOrFollower
                        | ErrorCode::UnknownTopicOrPartition
                        | ErrorCode::LeaderNotAvailable
                ) {
                    self.metadata_stale = true;
                }
            }
            code => {
                return Err(ConsumerError::Partition {
                    topic: topic.to_string(),
                    partition: fetched.partition,
                    code,
                })
            }
        }
        Ok(())
    }
}

fn connect_any(options: &ConsumerOptions) -> Result<Client, ClientError> {
    let mut last = None;
    for addr in &options.bootstrap {
        match Client::connect(addr.as_str(), options.client.clone()) {
            Ok(client) => return Ok(client),
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| ClientError::Resolve("no bootstrap brokers given".into())))
}

/// `part` as a slice of `whole` when it lies inside it (no copy), else
/// copied.
fn share(whole: &Bytes, part: &[u8]) -> Bytes {
    let start = whole.as_ptr() as usize;
    let at = part.as_ptr() as usize;
    if !part.is_empty() && at >= start && at + part.len() <= start + whole.len() {
        whole.slice_ref(part)
    } else {
        Bytes::copy_from_slice(part)
    }
}

/// Verifies and decodes the batches of a fetch answer, appending records at
/// or after `position` to `out`. Returns the offset after the last batch
/// (`None` when there was no whole batch). A batch cut off at the end (the
/// broker stops at `max_bytes`) ends decoding without error once at least
/// one batch was read.
pub fn decode_records(
    topic: &Arc<str>,
    partition: PartitionId,
    bytes: &Bytes,
    position: Offset,
    uncompressed_max: usize,
    out: &mut Vec<ConsumerRecord>,
) -> Result<Option<Offset>, BatchError> {
    let mut next = None;
    let mut scratch = Vec::new();
    for batch in Batches::new(bytes) {
        let batch = match batch {
            Ok(batch) => batch,
            Err(BatchError::Truncated { .. }) if next.is_some() => break,
            Err(error) => return Err(error),
        };
        let header = batch.header();
        next = Some(header.next_offset());
        if header.next_offset() <= position {
            continue;
        }
        scratch.clear();
        let records = batch.records(&mut scratch, uncompressed_max)?;
        // Uncompressed fields are shared with the response buffer;
        // decompressed ones (in `scratch`) are copied out.
        for record in records.iter() {
            if record.offset < position {
                continue;
            }
            out.push(ConsumerRecord {
                topic: topic.clone(),
                partition,
                offset: record.offset,
                timestamp: record.timestamp,
                key: record.key().map(|k| share(bytes, k)),
                value: record.value().map(|v| share(bytes, v)),
                headers: record
                    .headers()
                    .map(|(k, v)| (share(bytes, k), v.map(|v| share(bytes, v))))
                    .collect(),
            });
        }
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjord_schema::batch::assign_offset_and_epoch;
    use fjord_schema::{BatchBuilder, BatchOptions, Compression, LeaderEpoch, RecordInput};

    fn batch(base: u64, values: &[&str], compression: Compression) -> Vec<u8> {
        let mut builder = BatchBuilder::new(BatchOptions {
            compression,
            ..BatchOptions::default()
        });
        for (i, value) in values.iter().enumerate() {
            let key = format!("k{i}");
            let header_value = b"hv";
            let headers: [(&[u8], Option<&[u8]>); 1] = [(b"h", Some(header_value))];
            builder.push(RecordInput {
                key: Some(key.as_bytes()),
                value: Some(value.as_bytes()),
                headers: &headers,
                timestamp: 1_000 + i as i64,
                offset_delta: None,
            });
        }
        let mut bytes = builder.finish().expect("batch").to_vec();
        assign_offset_and_epoch(&mut bytes, Offset(base), LeaderEpoch(0));
        bytes
    }

    fn decode(
        bytes: Vec<u8>,
        position: u64,
    ) -> Result<(Vec<ConsumerRecord>, Option<Offset>), BatchError> {
        let mut out = Vec::new();
        let next = decode_records(
            &Arc::from("t"),
            PartitionId(3),
            &Bytes::from(bytes),
            Offset(position),
            1 << 20,
            &mut out,
        )?;
        Ok((out, next))
    }

    fn values(records: &[ConsumerRecord]) -> Vec<String> {
        records
            .iter()
            .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
            .collect()
    }

    #[test]
    fn records_below_the_position_are_skipped_inside_the_first_batch() {
        for compression in Compression::ALL {
            let mut bytes = batch(10, &["a", "b", "c"], compression);
            bytes.extend(batch(13, &["d", "e"], compression));
            let (records, next) = decode(bytes, 11).expect("valid");
            assert_eq!(values(&records), ["b", "c", "d", "e"], "{compression:?}");
            let offsets: Vec<u64> = records.iter().map(|r| r.offset.0).collect();
            assert_eq!(offsets, [11, 12, 13, 14]);
            assert_eq!(next, Some(Offset(15)));
            let first = &records[0];
            assert_eq!(first.partition, PartitionId(3));
            assert_eq!(first.timestamp, 1_001);
            assert_eq!(first.key.as_deref(), Some(&b"k1"[..]));
            assert_eq!(
                first.headers,
                vec![(Bytes::from_static(b"h"), Some(Bytes::from_static(b"hv")))]
            );
        }
    }

    #[test]
    fn whole_batches_below_the_position_yield_nothing_but_advance() {
        let (records, next) = decode(batch(0, &["a", "b"], Compression::None), 2).expect("valid");
        assert!(records.is_empty());
        assert_eq!(next, Some(Offset(2)));
    }

    #[test]
    fn a_cut_off_last_batch_ends_the_fetch_quietly() {
        let mut bytes = batch(0, &["a"], Compression::None);
        let second = batch(1, &["b"], Compression::None);
        bytes.extend_from_slice(&second[..second.len() - 3]);
        let (records, next) = decode(bytes, 0).expect("valid prefix");
        assert_eq!(values(&records), ["a"]);
        assert_eq!(next, Some(Offset(1)));

        // Alone, a cut-off batch is an error: the broker must send one whole.
        let cut = second[..second.len() - 3].to_vec();
        assert!(matches!(decode(cut, 0), Err(BatchError::Truncated { .. })));
    }

    #[test]
    fn corrupt_batches_are_refused() {
        let mut bytes = batch(0, &["a", "b"], Compression::None);
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        assert!(matches!(
            decode(bytes, 0),
            Err(BatchError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn decompression_is_bounded() {
        let big = "x".repeat(64 * 1024);
        let bytes = batch(0, &[&big], Compression::Zstd);
        let mut out = Vec::new();
        let result = decode_records(
            &Arc::from("t"),
            PartitionId(0),
            &Bytes::from(bytes),
            Offset(0),
            1024,
            &mut out,
        );
        assert!(result.is_err(), "{result:?}");
        assert!(out.is_empty());
    }
}
