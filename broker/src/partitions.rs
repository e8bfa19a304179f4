//! The partitions a shard owns and the operations on them: produce (verify,
//! assign offsets, append, flush per policy), fetch, long-poll waits, offset
//! lookups, the flush-policy timer and housekeeping (retention, age rolls).
//!
//! High watermark: a single node is the only replica of every partition,
//! so, as in Kafka with one in-sync replica, the high watermark is the log
//! end offset. Consumers may therefore read an acks=1 batch before it is
//! fdatasynced; acks=all producers are acknowledged only once it is (with
//! `flush.before.ack`, the default).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use fjord_schema::batch::{BatchView, ATTRIBUTES_DEFINED};
use fjord_schema::{
    BatchError, ErrorCode, LeaderEpoch, Offset, PartitionId, ProducerEpoch, ProducerId, ShardId,
};
use fjord_storage::layout::partition_dir_name;
use fjord_storage::notify::Notify;
use fjord_storage::{
    BatchCache, Clock, LogConfig, LogOptions, PartitionLog, ReadRequest, StorageError,
};
use futures_lite::future;
use glommio::sync::Semaphore;
use glommio::timer::sleep;

use crate::ops::{DamagedRange, FetchResult, ListOffsetsResult, PartitionHealth, ProduceResult};
use crate::producer_ids::ProducerIds;
use crate::producer_state::{ProducerBatch, ProducerStateConfig, ProducerStates, Verdict};
use crate::topics::{write_atomically, TopicConfig};

/// Every partition is led by this epoch until replication exists.
const LEADER_EPOCH: LeaderEpoch = LeaderEpoch(0);
/// ListOffsets' special timestamps.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;

/// One partition on its owning shard.
#[derive(Debug)]
pub struct Partition {
    pub topic: String,
    pub id: PartitionId,
    /// Changed by a topic config alter (`PartitionManager::reconfigure`).
    config: RefCell<TopicConfig>,
    pub log: PartitionLog,
    /// Woken after every append (long-poll fetches wait here) and when the
    /// partition is closed.
    data: Notify,
    /// One produce request's batches are appended contiguously, and the
    /// producer-state check, the append and the state update are one step.
    append_gate: Semaphore,
    /// Idempotent producers' epochs and last batches (see
    /// `producer_state`); changed only while holding `append_gate`.
    producers: RefCell<ProducerStates>,
    /// Log end of the newest snapshot of `producers` (`NO_SNAPSHOT`).
    snapshot_end: Cell<Offset>,
    closed: Cell<bool>,
    /// Housekeeping's view of the active segment: its base offset and when
    /// housekeeping first saw it (for `segment.ms` on idle partitions).
    active_seen: Cell<Option<(Offset, i64)>>,
}

pub use crate::error::OpenError; // issue-12 merge shim

/// A partition recovery could not open. Its files are left exactly as
/// found; produce, fetch and ListOffsets on it fail with `reason` until an
/// operator restores or repairs it (`fjord repair`) and restarts.
#[derive(Debug, Clone)]
pub struct Offline {
    pub reason: String,
    /// What a fetch answers: CORRUPT_MESSAGE for damaged data (librdkafka
    /// reports it to the application), else KAFKA_STORAGE_ERROR.
    pub fetch_error: ErrorCode,
}

/// The partitions of one shard.
///
/// Lives on: every shard. Owns: the logs of the partitions the placement
/// table gives this shard, and the shard's batch cache they share.
/// Lifecycle: created empty at shard start → `open` for every placed
/// partition (recovery) before the shard serves, and on CreateTopics →
/// produce / fetch / flush timer / housekeeping → `delete` on DeleteTopics
/// → `close_all` (flush + close) on clean shutdown.
pub struct PartitionManager {
    shard: ShardId,
    data_dir: PathBuf,
    base: LogConfig,
    cache: Rc<RefCell<BatchCache>>,
    clock: Rc<dyn Clock>,
    partitions: RefCell<BTreeMap<String, HashMap<PartitionId, Rc<Partition>>>>,
    /// Placed partitions recovery kept offline (bounded by the placement).
    offline: RefCell<BTreeMap<(String, PartitionId), Offline>>,
    producer_ids: RefCell<ProducerIds>,
    producer_state: ProducerStateConfig,
}

impl std::fmt::Debug for PartitionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionManager")
            .field("shard", &self.shard)
            .field("partitions", &self.count())
            .finish()
    }
}

impl PartitionManager {
    pub fn new(
        shard: ShardId,
        data_dir: PathBuf,
        base: LogConfig,
        cache: BatchCache,
        clock: Rc<dyn Clock>,
    ) -> PartitionManager {
        PartitionManager {
            shard,
            producer_ids: RefCell::new(ProducerIds::new(data_dir.clone())),
            data_dir,
            base,
            cache: Rc::new(RefCell::new(cache)),
            clock,
            partitions: RefCell::new(BTreeMap::new()),
            offline: RefCell::new(BTreeMap::new()),
            producer_state: ProducerStateConfig::default(),
        }
    }

    /// Bounds of every partition's producer state (before any `open`).
    pub fn with_producer_state(mut self, config: ProducerStateConfig) -> PartitionManager {
        assert_eq!(self.count(), 0, "set before partitions open");
        self.producer_state = config;
        self
    }

    pub fn get(&self, topic: &str, partition: PartitionId) -> Option<Rc<Partition>> {
        self.partitions
            .borrow()
            .get(topic)?
            .get(&partition)
            .cloned()
    }

    fn all(&self) -> Vec<Rc<Partition>> {
        self.partitions
            .borrow()
            .values()
            .flat_map(|m| m.values().cloned())
            .collect()
    }

    pub fn count(&self) -> usize {
        self.partitions.borrow().values().map(HashMap::len).sum()
    }

    /// Why `partition` is offline, if recovery kept it so.
    pub fn offline(&self, topic: &str, partition: PartitionId) -> Option<Offline> {
        self.offline
            .borrow()
            .get(&(topic.to_owned(), partition))
            .cloned()
    }

    /// Recovery at shard start: opens the logs of `partitions`; a log that
    /// fails to open (damaged data, an unreadable file) takes only its own
    /// partition offline, with one ERROR saying what is at stake and how to
    /// proceed, and the shard serves the others.
    pub async fn open_or_offline(
        &self,
        topic: &str,
        partitions: &[PartitionId],
        config: &TopicConfig,
    ) -> Result<(), OpenError> {
        for &partition in partitions {
            match self.open(topic, &[partition], config).await {
                Ok(()) => {}
                Err(OpenError::Storage { source, .. }) => {
                    let offline = offline_for(&self.data_dir, topic, partition, &source);
                    tracing::error!(
                        shard = %self.shard,
                        topic,
                        %partition,
                        "partition {topic}-{partition} is OFFLINE: {}",
                        offline.reason
                    );
                    self.offline
                        .borrow_mut()
                        .insert((topic.to_owned(), partition), offline);
                }
                Err(other) => return Err(other),
            }
        }
        Ok(())
    }

    /// Offline state and damaged ranges of `partitions` here.
    pub fn health(&self, topic: &str, partitions: &[PartitionId]) -> Vec<PartitionHealth> {
        partitions
            .iter()
            .map(|&partition| PartitionHealth {
                partition,
                offline: self.offline(topic, partition).map(|o| o.reason),
                damaged: self.get(topic, partition).map_or_else(Vec::new, |p| {
                    p.log
                        .damaged()
                        .into_iter()
                        .map(|(damage, offsets)| DamagedRange {
                            segment_base: damage.segment_base.get(),
                            bytes_start: damage.bytes_start,
                            bytes_end: damage.bytes_end,
                            first_offset: offsets.start.get(),
                            end_offset: offsets.end.get(),
                        })
                        .collect()
                }),
            })
            .collect()
    }

    /// Opens (recovers, or creates empty) the logs of `partitions`.
    /// Partitions already open are left alone.
    pub async fn open(
        &self,
        topic: &str,
        partitions: &[PartitionId],
        config: &TopicConfig,
    ) -> Result<(), OpenError> {
        for &partition in partitions {
            if self.get(topic, partition).is_some() {
                continue;
            }
            let log_config = config
                .log_config(&self.base)
                .map_err(|e| OpenError::Config {
                    topic: topic.to_owned(),
                    partition,
                    message: e.message,
                })?;
            let log = PartitionLog::open(LogOptions {
                data_dir: self.data_dir.clone(),
                topic: topic.to_owned(),
                partition,
                config: log_config,
                cache: self.cache.clone(),
                clock: self.clock.clone(),
                initial_offset: Offset(0),
            })
            .await
            .map_err(|source| OpenError::Storage {
                topic: topic.to_owned(),
                partition,
                source,
            })?;
            let (producers, snapshot_end) = load_producer_states(&log, self.producer_state)
                .await
                .map_err(|source| OpenError::Storage {
                topic: topic.to_owned(),
                partition,
                source,
            })?;
            tracing::info!(
                shard = %self.shard,
                topic,
                %partition,
                log_start = %log.log_start(),
                log_end = %log.log_end(),
                producers = producers.len(),
                "partition open"
            );
            let entry = Rc::new(Partition {
                topic: topic.to_owned(),
                id: partition,
                config: RefCell::new(config.clone()),
                log,
                data: Notify::default(),
                append_gate: Semaphore::new(1),
                producers: RefCell::new(producers),
                snapshot_end: Cell::new(snapshot_end),
                closed: Cell::new(false),
                active_seen: Cell::new(None),
            });
            self.partitions
                .borrow_mut()
                .entry(topic.to_owned())
                .or_default()
                .insert(partition, entry);
        }
        Ok(())
    }

    /// Applies a topic's new config to its open partitions here: the log
    /// limits (retention, flush policy, segment size from the next roll,
    /// largest batch) and the produce checks, from the next request on.
    /// Partitions not open here are skipped (they open with the registry's
    /// config).
    pub async fn reconfigure(
        &self,
        topic: &str,
        partitions: &[PartitionId],
        config: &TopicConfig,
    ) -> Result<(), String> {
        let log_config = config.log_config(&self.base).map_err(|e| e.message)?;
        let mut errors = Vec::new();
        for &partition in partitions {
            let Some(p) = self.get(topic, partition) else {
                continue;
            };
            // Produce checks and log limits change together: the gate keeps
            // a produce from seeing the new `max.message.bytes` with the
            // old log limit.
            let Ok(_gate) = p.append_gate.acquire_permit(1).await else {
                continue;
            };
            match p.log.reconfigure(log_config).await {
                Ok(()) => *p.config.borrow_mut() = config.clone(),
                Err(error) => errors.push(format!("{topic}-{partition}: {error}")),
            }
        }
        tracing::info!(shard = %self.shard, topic, partitions = partitions.len(), "topic config applied");
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// Closes the logs of `partitions` and deletes their directories.
    pub async fn delete(&self, topic: &str, partitions: &[PartitionId]) -> Result<(), String> {
        let mut errors = Vec::new();
        for &partition in partitions {
            let removed = {
                let mut map = self.partitions.borrow_mut();
                let removed = map.get_mut(topic).and_then(|m| m.remove(&partition));
                if map.get(topic).is_some_and(HashMap::is_empty) {
                    map.remove(topic);
                }
                removed
            };
            if let Some(p) = removed {
                // No producer snapshot and no flush: the directory goes,
                // and on a full disk writing would only fail.
                p.close_log(false).await;
            }
            self.offline
                .borrow_mut()
                .remove(&(topic.to_owned(), partition));
            let dir = self.data_dir.join(partition_dir_name(topic, partition));
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => errors.push(format!("cannot remove {}: {e}", dir.display())),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// InitProducerId: a new producer id, or the next epoch of a known one.
    pub fn init_producer_id(
        &self,
        producer_id: ProducerId,
        epoch: ProducerEpoch,
    ) -> Result<(ProducerId, ProducerEpoch), (ErrorCode, String)> {
        self.producer_ids.borrow_mut().init(producer_id, epoch)
    }

    /// Flushes and closes every log (clean shutdown).
    pub async fn close_all(&self) {
        let all = std::mem::take(&mut *self.partitions.borrow_mut());
        for p in all.into_values().flat_map(HashMap::into_values) {
            p.close().await;
        }
    }

    /// Verifies every batch of `records`, then appends them in order (one
    /// request's batches stay contiguous in the log) and acknowledges per
    /// `acks`.
    pub async fn produce(
        &self,
        topic: &str,
        partition: PartitionId,
        records: Bytes,
        acks: i8,
    ) -> ProduceResult {
        let Some(p) = self.get(topic, partition) else {
            if let Some(offline) = self.offline(topic, partition) {
                return ProduceResult::error(ErrorCode::KafkaStorageError, offline.reason);
            }
            return not_here(topic, partition);
        };
        let (min_insync_replicas, max_message_bytes, flush_before_ack) = {
            let config = p.config.borrow();
            (
                config.min_insync_replicas,
                config.max_message_bytes,
                config.flush_before_ack,
            )
        };
        if acks == -1 && min_insync_replicas > 1 {
            return ProduceResult::error(
                ErrorCode::NotEnoughReplicas,
                format!(
                    "min.insync.replicas = {min_insync_replicas} but this single node is the only replica"
                ),
            );
        }
        let ranges = match verify_batches(&records, max_message_bytes) {
            Ok(ranges) => ranges,
            Err((code, message)) => return ProduceResult::error(code, message),
        };
        let Ok(_gate) = p.append_gate.acquire_permit(1).await else {
            return not_here(topic, partition);
        };
        let mut base_offset = None;
        let mut flush_due = false;
        for range in ranges {
            let producer = BatchView::parse_header(&records[range.clone()])
                .ok()
                .and_then(ProducerBatch::of);
            if let Some(producer) = &producer {
                // Checked under the gate, so no other append of this
                // partition runs between this check and the update below.
                match p.producers.borrow().check(producer) {
                    Ok(Verdict::Append) => {}
                    Ok(Verdict::Duplicate { base_offset: first }) => {
                        // Written before: answer with its original offset
                        // (acks=all still waits for the flush below).
                        base_offset.get_or_insert(first);
                        continue;
                    }
                    Err(error) => {
                        p.data.notify_all();
                        return ProduceResult::error(error.code(), error.to_string());
                    }
                }
            }
            // The only copy on the produce path: the request buffer is
            // shared (body and every partition's slice), the log needs the
            // batch to itself to stamp its offset in place.
            let batch = BytesMut::from(&records[range]);
            match p.log.append_leader(batch, LEADER_EPOCH).await {
                Ok(info) => {
                    base_offset.get_or_insert(info.base_offset);
                    flush_due |= info.flush_due;
                    if let Some(producer) = &producer {
                        p.producers.borrow_mut().apply(
                            producer,
                            info.base_offset,
                            info.last_offset,
                            self.clock.now_ms(),
                        );
                    }
                }
                Err(error) => {
                    p.data.notify_all();
                    return ProduceResult::error(storage_code(&error), error.to_string());
                }
            }
        }
        drop(_gate);
        p.data.notify_all();
        // acks=all waits for the fdatasync when the topic says so; several
        // producers waiting here share one (group commit in the log).
        let must_flush = flush_due || (acks == -1 && flush_before_ack);
        if must_flush {
            if let Err(error) = p.log.flush().await {
                return ProduceResult::error(storage_code(&error), error.to_string());
            }
        }
        ProduceResult {
            error: ErrorCode::None,
            message: None,
            base_offset: base_offset.map_or(-1, |o| o.get() as i64),
            log_start_offset: p.log.log_start().get() as i64,
        }
    }

    /// Whole batches from the one holding `offset`, below the high
    /// watermark (= log end, see the module doc), within `max_bytes` (the
    /// first batch always).
    pub async fn fetch(
        &self,
        topic: &str,
        partition: PartitionId,
        offset: i64,
        max_bytes: usize,
    ) -> FetchResult {
        let Some(p) = self.get(topic, partition) else {
            if let Some(offline) = self.offline(topic, partition) {
                return FetchResult::error(offline.fetch_error);
            }
            return FetchResult::error(ErrorCode::NotLeaderOrFollower);
        };
        let high_watermark = p.log.log_end();
        let log_start = p.log.log_start();
        let mut result = FetchResult {
            error: ErrorCode::None,
            high_watermark: high_watermark.get() as i64,
            log_start_offset: log_start.get() as i64,
            batches: Vec::new(),
        };
        let in_range = u64::try_from(offset)
            .ok()
            .filter(|o| *o >= log_start.get() && *o <= high_watermark.get());
        let Some(offset) = in_range else {
            result.error = ErrorCode::OffsetOutOfRange;
            return result;
        };
        if offset == high_watermark.get() {
            return result;
        }
        let request = ReadRequest {
            offset: Offset(offset),
            until: high_watermark,
            max_bytes,
        };
        match p.log.read(request).await {
            Ok(batches) => result.batches = batches,
            Err(error) => {
                // Damage is logged once, as an ERROR, when first found;
                // a consumer retrying at it must not flood the log.
                if matches!(error, StorageError::Damaged { .. }) {
                    tracing::debug!(topic, %partition, offset, %error, "fetch inside damaged data");
                } else {
                    tracing::warn!(topic, %partition, offset, %error, "fetch failed");
                }
                result.error = storage_code(&error);
            }
        }
        result
    }

    /// Returns once the high watermark is past `offset`, the partition is
    /// gone, or `deadline` passed — woken by the append, not by polling.
    pub async fn wait_for_data(
        &self,
        topic: &str,
        partition: PartitionId,
        offset: i64,
        deadline: Instant,
    ) {
        let Some(p) = self.get(topic, partition) else {
            return;
        };
        let notified = p.data.notified();
        let end = p.log.log_end().get() as i64;
        // Data past `offset` already, or `offset` is not the end (the
        // fetch will answer OFFSET_OUT_OF_RANGE): nothing to wait for.
        if end != offset || p.closed.get() {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        future::or(notified, sleep(left)).await;
    }

    pub async fn list_offsets(
        &self,
        topic: &str,
        partition: PartitionId,
        timestamp: i64,
    ) -> ListOffsetsResult {
        let Some(p) = self.get(topic, partition) else {
            if self.offline(topic, partition).is_some() {
                return ListOffsetsResult::error(ErrorCode::KafkaStorageError);
            }
            return ListOffsetsResult::error(ErrorCode::NotLeaderOrFollower);
        };
        let found = |offset: Offset| ListOffsetsResult {
            error: ErrorCode::None,
            offset: offset.get() as i64,
            timestamp: -1,
        };
        match timestamp {
            LATEST => found(p.log.log_end()),
            EARLIEST => found(p.log.log_start()),
            t if t < 0 => ListOffsetsResult::error(ErrorCode::InvalidRequest),
            t => match p.log.offset_for_timestamp(t).await {
                Ok(Some(offset)) => ListOffsetsResult {
                    timestamp: t,
                    ..found(offset)
                },
                Ok(None) => ListOffsetsResult {
                    error: ErrorCode::None,
                    offset: -1,
                    timestamp: -1,
                },
                Err(error) => ListOffsetsResult::error(storage_code(&error)),
            },
        }
    }

    /// Flushes the logs whose `flush.ms` / `flush.messages` say so.
    pub async fn flush_due(&self) {
        let now = self.clock.now_ms();
        for p in self.all() {
            if p.log.flush_due(now) {
                match p.log.flush().await {
                    // The log reported its fault once, when it started.
                    Ok(_) | Err(StorageError::WriteFault { .. }) => {}
                    Err(error) => {
                        tracing::warn!(topic = %p.topic, partition = %p.id, %error, "timed flush failed")
                    }
                }
            }
        }
    }

    /// Retention (`retention.ms`, `retention.bytes`) and `segment.ms` rolls
    /// of idle partitions (busy ones roll on append).
    pub async fn housekeeping(&self) {
        for p in self.all() {
            p.producers.borrow_mut().expire(self.clock.now_ms());
            // As Kafka, a snapshot per segment roll bounds the scan on open
            // to about the active segment without writing one per interval.
            let rolled = p.log.segment_bases().last().copied();
            let snapshot_end = p.snapshot_end.get();
            if rolled.is_some_and(|base| base > snapshot_end || snapshot_end == NO_SNAPSHOT) {
                p.snapshot_producers().await;
            }
            match p.log.apply_retention().await {
                Ok(removed) if !removed.is_empty() => {
                    tracing::info!(topic = %p.topic, partition = %p.id, segments = removed.len(), "retention removed segments")
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(topic = %p.topic, partition = %p.id, %error, "retention failed")
                }
            }
            let Some(segment_ms) = p.config.borrow().segment_ms else {
                continue;
            };
            let now = self.clock.now_ms();
            let Some(active) = p.log.segment_bases().last().copied() else {
                continue;
            };
            match p.active_seen.get() {
                Some((base, since)) if base == active => {
                    let old = now.saturating_sub(since) >= segment_ms as i64;
                    if old && p.log.log_end() > active {
                        match p.log.roll().await {
                            Ok(()) | Err(StorageError::WriteFault { .. }) => {}
                            Err(error) => {
                                tracing::warn!(topic = %p.topic, partition = %p.id, %error, "age roll failed")
                            }
                        }
                        p.active_seen.set(None);
                    }
                }
                _ => p.active_seen.set(Some((active, now))),
            }
        }
    }
}

impl Partition {
    /// Writes `<offset>.snapshot` of the producer state when the log grew
    /// since the last one (at close, and from housekeeping after a segment
    /// roll), and removes older snapshots. Taken under the append gate so
    /// the state matches the log end exactly. Blocking std I/O on the shard
    /// thread, as the topic registry: rare and small.
    async fn snapshot_producers(&self) {
        let Ok(_gate) = self.append_gate.acquire_permit(1).await else {
            return;
        };
        let end = self.log.log_end();
        if end == self.snapshot_end.get() {
            return;
        }
        let bytes = self.producers.borrow().encode();
        let dir = self.log.dir().to_owned();
        let path = dir.join(snapshot_file_name(end));
        if let Err(error) = write_atomically(&path, &bytes) {
            tracing::warn!(topic = %self.topic, partition = %self.id, %error, "producer snapshot failed");
            return;
        }
        self.snapshot_end.set(end);
        for (offset, old) in snapshot_files(&dir) {
            if offset != end {
                let _ = std::fs::remove_file(old);
            }
        }
    }

    async fn close(&self) {
        self.snapshot_producers().await;
        self.close_log(true).await;
    }

    async fn close_log(&self, flush: bool) {
        self.closed.set(true);
        let closed = if flush {
            self.log.close().await
        } else {
            self.log.close_discarding().await
        };
        if let Err(error) = closed {
            tracing::warn!(topic = %self.topic, partition = %self.id, %error, "close failed");
        }
        self.data.notify_all();
    }
}

/// `Partition::snapshot_end` before the first snapshot.
const NO_SNAPSHOT: Offset = Offset(u64::MAX);

fn snapshot_file_name(offset: Offset) -> String {
    format!("{:020}.snapshot", offset.get())
}

/// The producer snapshots in `dir`, newest first.
fn snapshot_files(dir: &std::path::Path) -> Vec<(Offset, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(Offset, PathBuf)> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let stem = name.to_str()?.strip_suffix(".snapshot")?;
            let offset = stem.parse::<u64>().ok()?;
            Some((Offset(offset), entry.path()))
        })
        .collect();
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    found
}

/// Rebuilds a partition's producer state: the newest valid snapshot at or
/// below the log end (newer ones, left by a truncation, and damaged ones
/// are removed), then the batch headers of the log after it. Returns the
/// state and the snapshot's offset.
async fn load_producer_states(
    log: &PartitionLog,
    config: ProducerStateConfig,
) -> Result<(ProducerStates, Offset), StorageError> {
    let end = log.log_end();
    let mut states = ProducerStates::new(config);
    let mut from = log.log_start();
    let mut snapshot_end = NO_SNAPSHOT;
    for (offset, path) in snapshot_files(log.dir()) {
        let loaded = (offset <= end)
            .then(|| std::fs::read(&path).ok())
            .flatten()
            .and_then(|bytes| ProducerStates::decode(config, &bytes));
        match loaded {
            Some(loaded) if snapshot_end == NO_SNAPSHOT => {
                states = loaded;
                from = from.max(offset);
                snapshot_end = offset;
            }
            Some(_) => {}
            None => {
                tracing::info!(path = %path.display(), "discarding producer snapshot");
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    while from < end {
        let batches = log
            .read(ReadRequest {
                offset: from,
                until: end,
                max_bytes: 1 << 20,
            })
            .await?;
        let Some(last) = batches.last() else { break };
        let last_end = BatchView::parse_header(last)
            .map_err(StorageError::InvalidBatch)?
            .next_offset();
        for bytes in &batches {
            let header = BatchView::parse_header(bytes).map_err(StorageError::InvalidBatch)?;
            // The read starts at the batch holding `from`, which the
            // snapshot already covers when `from` is inside it.
            if header.base_offset() < from {
                continue;
            }
            if let Some(producer) = ProducerBatch::of(header) {
                states.apply(
                    &producer,
                    header.base_offset(),
                    header.last_offset(),
                    header.max_timestamp.get(),
                );
            }
        }
        assert!(last_end > from, "the scan moves forward");
        from = last_end;
    }
    Ok((states, snapshot_end))
}

/// The operator-facing account of why a partition could not be opened:
/// what is damaged, which offsets are at stake, how to proceed.
fn offline_for(
    data_dir: &std::path::Path,
    topic: &str,
    partition: PartitionId,
    error: &StorageError,
) -> Offline {
    let repair = |at: &dyn std::fmt::Display| {
        format!(
            "fjord repair --data-dir {} --topic {topic} --partition {partition} --truncate-at {at}",
            data_dir.display()
        )
    };
    match error {
        StorageError::Damaged { segment, damage } => {
            let (resume, valid_end) = (
                damage.resume.map_or(damage.lost_from, |(_, o)| o),
                damage.valid_end,
            );
            Offline {
                reason: format!(
                    "acknowledged data is damaged: bytes {}..{} of {} fail verification \
                     (offsets {}..{resume} unreadable) and valid batches with offsets \
                     {resume}..{valid_end} follow them. Nothing was cut and no offset will \
                     be reused. To proceed, restore the partition directory from a copy, or \
                     accept the loss of offsets {}..{valid_end}: stop the broker and run `{}`, \
                     then start it again",
                    damage.bytes_start,
                    damage.bytes_end,
                    segment.display(),
                    damage.lost_from,
                    damage.lost_from,
                    repair(&damage.lost_from),
                ),
                fetch_error: ErrorCode::CorruptMessage,
            }
        }
        StorageError::Corrupt {
            segment, position, ..
        } => Offline {
            reason: format!(
                "{error}. Nothing was cut. To proceed, restore the partition directory from \
                 a copy, or stop the broker, find the offset of the batch at byte {position} \
                 of {} and accept the loss from it with `{}`",
                segment.display(),
                repair(&"OFFSET"),
            ),
            fetch_error: ErrorCode::CorruptMessage,
        },
        other => Offline {
            reason: format!("{other}; fix the cause and restart the broker"),
            fetch_error: ErrorCode::KafkaStorageError,
        },
    }
}

fn not_here(topic: &str, partition: PartitionId) -> ProduceResult {
    ProduceResult::error(
        ErrorCode::NotLeaderOrFollower,
        format!("{topic}-{partition} is not open on this shard; refresh metadata"),
    )
}

/// Checks every batch of a produce request (length, version, CRC32C,
/// non-empty, `max.message.bytes`) before any is appended; returns their
/// byte ranges.
pub fn verify_batches(
    records: &[u8],
    max_message_bytes: u64,
) -> Result<Vec<std::ops::Range<usize>>, (ErrorCode, String)> {
    if records.is_empty() {
        return Err((ErrorCode::InvalidRequest, "no record batches".to_owned()));
    }
    let mut ranges = Vec::new();
    let mut rest = records;
    while !rest.is_empty() {
        let start = records.len() - rest.len();
        let (view, tail) = BatchView::parse(rest).map_err(|error| {
            let code = match error {
                BatchError::TooLarge { .. } => ErrorCode::MessageTooLarge,
                _ => ErrorCode::CorruptMessage,
            };
            (code, format!("batch at byte {start}: {error}"))
        })?;
        let len = view.as_bytes().len();
        if len as u64 > max_message_bytes {
            return Err((
                ErrorCode::MessageTooLarge,
                format!("batch of {len} bytes exceeds max.message.bytes = {max_message_bytes}"),
            ));
        }
        if view.header().record_count() == 0 {
            return Err((
                ErrorCode::CorruptMessage,
                format!("batch at byte {start} holds no records"),
            ));
        }
        let undefined = view.header().attributes.get() & !ATTRIBUTES_DEFINED;
        if undefined != 0 {
            return Err((
                ErrorCode::CorruptMessage,
                format!("batch at byte {start} sets undefined attribute bits {undefined:#06x}"),
            ));
        }
        ranges.push(start..start + len);
        rest = tail;
    }
    Ok(ranges)
}

/// The wire code of a storage error.
pub fn storage_code(error: &StorageError) -> ErrorCode {
    match error {
        StorageError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        // CORRUPT_MESSAGE, not KAFKA_STORAGE_ERROR: librdkafka retries the
        // latter silently forever but reports the former to the
        // application (ARCHITECTURE.md, "Damaged data").
        StorageError::InvalidBatch(_) | StorageError::Damaged { .. } => ErrorCode::CorruptMessage,
        StorageError::BatchTooLarge { .. } => ErrorCode::MessageTooLarge,
        StorageError::Closed => ErrorCode::NotLeaderOrFollower,
        // Retriable for Kafka clients; the message says when the disk is full.
        StorageError::WriteFault { .. }
        | StorageError::Io { .. }
        | StorageError::Runtime(_)
        | StorageError::Corrupt { .. }
        | StorageError::Inconsistent { .. } => ErrorCode::KafkaStorageError,
        StorageError::OffsetMismatch { .. } | StorageError::Config(_) => {
            ErrorCode::UnknownServerError
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjord_schema::batch::{BatchBuilder, BatchOptions, RecordInput, BATCH_CRC_START};

    fn batch(values: &[&[u8]]) -> Vec<u8> {
        let mut builder = BatchBuilder::new(BatchOptions::default());
        for (i, value) in values.iter().enumerate() {
            builder.push(RecordInput {
                value: Some(value),
                timestamp: i as i64,
                ..RecordInput::default()
            });
        }
        builder.finish().expect("valid batch").to_vec()
    }

    #[test]
    fn verify_accepts_back_to_back_batches_and_names_the_bad_one() {
        let mut records = batch(&[b"a", b"b"]);
        let first = records.len();
        records.extend(batch(&[b"c"]));
        let ranges = verify_batches(&records, 1 << 20).expect("valid");
        assert_eq!(ranges, vec![0..first, first..records.len()]);

        let mut corrupt = records.clone();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        let (code, message) = verify_batches(&corrupt, 1 << 20).expect_err("bad crc");
        assert_eq!(code, ErrorCode::CorruptMessage);
        assert!(message.contains(&format!("byte {first}")), "{message}");

        let (code, _) = verify_batches(&records, 10).expect_err("too large");
        assert_eq!(code, ErrorCode::MessageTooLarge);
        let (code, _) = verify_batches(&records[..first + 10], 1 << 20).expect_err("cut");
        assert_eq!(code, ErrorCode::CorruptMessage);
        let (code, _) = verify_batches(&[], 1 << 20).expect_err("empty");
        assert_eq!(code, ErrorCode::InvalidRequest);
    }

    /// A native producer could store attribute bits the batch format does
    /// not define, and `native_to_kafka` served them to Kafka consumers
    /// (bit 6 is Kafka's delete-horizon flag), in batches the Kafka produce
    /// path itself refuses. Found by the `native_to_kafka` fuzz target
    /// (fuzz/): attributes 0xff39 with a recomputed CRC.
    #[test]
    fn undefined_attribute_bits_are_refused() {
        for bits in [1u16 << 6, 1 << 15, 0xff39] {
            let mut records = batch(&[b"a"]);
            let attributes = u16::from_le_bytes([records[24], records[25]]) | bits;
            records[24..26].copy_from_slice(&attributes.to_le_bytes());
            let crc = crc32c::crc32c(&records[BATCH_CRC_START..]);
            records[20..24].copy_from_slice(&crc.to_le_bytes());
            let (code, message) = verify_batches(&records, 1 << 20).expect_err("undefined bits");
            assert_eq!(code, ErrorCode::CorruptMessage);
            assert!(message.contains("undefined attribute bits"), "{message}");
        }
    }
}
