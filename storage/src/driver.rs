//! The glommio driver of a partition log: the only module of this crate that
//! imports glommio. It does the I/O the sans-IO core ([`crate::log`])
//! decides: direct-I/O appends with the partial tail block kept in memory,
//! group-committed fdatasync, background zero-fill ahead of the writer,
//! recovery scans on open, cold reads through the index, roll, truncation
//! and retention.
//!
//! Durability contract: after [`PartitionLog::append`] returns, the batch is
//! in memory (readable, not durable); after [`PartitionLog::flush`] returns
//! `Ok`, every batch appended before the call is on stable storage
//! (written with O_DIRECT and fdatasynced). Concurrent flushes share one
//! fdatasync (group commit). At most `write_buffer_bytes` of data is ever
//! written but not yet synced. Recovery cuts only a torn tail: where its
//! scan stops nothing valid may follow (else `StorageError::Damaged`, cut
//! by nobody but `repair_truncate`), and nothing non-zero further than
//! `write_buffer_bytes` past the data (else `StorageError::Corrupt`).
//!
//! Write faults (a full disk): the bytes of a data write stay in memory
//! until an fdatasync issued after it succeeded. A failed write, short
//! write or fdatasync puts the log in fault: appends and flushes are
//! refused at once ([`StorageError::WriteFault`]), reads go on (unwritten
//! batches are served from memory), and a background task rewrites the
//! unconfirmed write whole, at the same place, then the rest of the write
//! buffer, each followed by an fdatasync, with backoff, until it succeeds.
//! Offsets already assigned stay assigned; nothing moves the log end back.
//! Why a rewrite and not a second fdatasync: see "Write faults" in
//! ARCHITECTURE.md.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fjord_schema::batch::{assign_offset_and_epoch, BatchView};
use fjord_schema::{LeaderEpoch, Offset, PartitionId};
use glommio::io::{DmaBuffer, DmaFile, OpenOptions};
use glommio::sync::Semaphore;

use crate::cache::{BatchCache, CacheLogId};
use crate::clock::Clock;
use crate::config::LogConfig;
use crate::error::{CorruptionKind, Result, StorageError};
use crate::index::{OffsetIndex, TimeIndex};
use crate::layout::{
    align_down, align_up, parse_segment_file_name, partition_dir_name, segment_file_name,
    SegmentFile, BLOCK_BYTES,
};
use crate::log::{
    collect_batches, verify_tail, Collect, Cut, Damage, LogCore, ReadRequest, SalvageScanner,
    SalvageStep, ScanLimit, ScanStep, SegmentMeta, SegmentScanner,
};
use crate::notify::Notify;

/// What opening a log needs.
pub struct LogOptions {
    /// The data directory; the log lives in `<data_dir>/<topic>-<partition>/`.
    pub data_dir: PathBuf,
    pub topic: String,
    pub partition: PartitionId,
    pub config: LogConfig,
    /// The shard's batch cache.
    pub cache: Rc<RefCell<BatchCache>>,
    pub clock: Rc<dyn Clock>,
    /// Base offset of the first segment of a brand-new log.
    pub initial_offset: Offset,
}

impl std::fmt::Debug for LogOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogOptions")
            .field("data_dir", &self.data_dir)
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("config", &self.config)
            .finish()
    }
}

/// What an append did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: Offset,
    pub last_offset: Offset,
    /// The log end after this batch.
    pub next_offset: Offset,
    /// The topic's flush policy asks for a flush now (`flush.messages`).
    pub flush_due: bool,
}

/// A partition log on one shard.
///
/// Lives on: the shard that owns the partition (placement table), wrapped
/// in `Rc`; never crosses threads. Owns: the partition directory, its open
/// segment files, the in-memory write buffer and the not-yet-written
/// batches, and a background zero-fill task for the active segment.
/// Lifecycle: [`PartitionLog::open`] (recovery) → append / flush / read /
/// roll / truncate / retention → [`PartitionLog::close`] (flushes and stops
/// the background task). Dropping without `close` loses only unflushed data.
pub struct PartitionLog {
    inner: Rc<Inner>,
}

impl std::fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionLog")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

struct Inner {
    dir: PathBuf,
    /// Changed only by `reconfigure` (under the append lock).
    config: Cell<LogConfig>,
    clock: Rc<dyn Clock>,
    cache: Rc<RefCell<BatchCache>>,
    cache_id: CacheLogId,
    state: RefCell<State>,
    /// Serialises appends (and the roll / backpressure waits inside them)
    /// so offsets are assigned in arrival order.
    append_lock: Semaphore,
    /// Serialises data writes + fdatasync, roll, truncation, retention.
    io_lock: Semaphore,
    /// A zero-fill write finished.
    prep_done: Notify,
    /// Work for the zero-fill task (or shutdown).
    prep_wake: Rc<Notify>,
    /// Bumped whenever segment files are cut or removed, so a read that
    /// raced with it retries instead of reporting corruption.
    generation: Cell<u64>,
    /// The log entered a write fault (or shuts down): wakes the retry task.
    fault_wake: Rc<Notify>,
    /// Damaged ranges reads ran into (at most
    /// `LogConfig::damaged_ranges_max`).
    damaged: RefCell<Vec<Damage>>,
}

struct State {
    core: LogCore,
    /// Open `.log` files by base offset (the active one read-write).
    files: BTreeMap<Offset, Rc<DmaFile>>,
    /// Bytes from `staging_pos` (block-aligned) of the active segment that
    /// are not written yet, plus the already-written head of the partial
    /// block they start in. `None` while empty and aligned.
    staging: Option<DmaBuffer>,
    staging_pos: u64,
    staging_len: usize,
    /// Appended batches not yet durable (readable from here until their
    /// write is fdatasynced).
    pending: VecDeque<(Offset, Offset, Bytes)>,
    /// Bytes of the active segment written and fdatasynced (readable from
    /// disk).
    disk_end: u64,
    /// Offsets below this are fdatasynced.
    durable_end: Offset,
    records_appended: u64,
    records_flushed: u64,
    oldest_unflushed_ms: Option<i64>,
    /// Active segment bytes known zero-filled (or written) on disk.
    prepared_end: u64,
    /// Batch bytes appended since open: the zero-fill runs at most twice
    /// this far ahead (capped by `prepare_ahead_bytes`), so a shard with
    /// thousands of idle or slow partitions does not pre-write 32 MiB each.
    appended_bytes: u64,
    prep_inflight: Option<(u64, u64)>,
    /// Roll / truncation / close in progress: no new zero-fill may start.
    maintenance: bool,
    closed: bool,
    /// The last data write, kept until an fdatasync after it succeeded;
    /// after a failure it is written again, whole, before anything else.
    unsynced: Option<Unsynced>,
    /// Writes failed: appends and flushes are refused until the retry task
    /// succeeds.
    fault: Option<Fault>,
    /// The zero-fill failed since it last succeeded (logged once).
    prep_failing: bool,
    zeros: Option<Rc<DmaBuffer>>,
}

/// A data write of the active segment that is not known durable yet.
#[derive(Clone)]
struct Unsynced {
    /// Its segment (a roll or truncation flushes first, so it is always
    /// the active one).
    base: Offset,
    buffer: Rc<DmaBuffer>,
    position: u64,
    /// Log end, segment bytes and appended records once it is durable.
    end_offset: Offset,
    end_bytes: u64,
    records: u64,
}

/// Why a log refuses writes, since when, and what its retry must redo.
struct Fault {
    disk_full: bool,
    /// The latest failure.
    cause: String,
    since_ms: i64,
    failed_retries: u32,
    /// A roll failed part way: the retry completes it before appends go
    /// on, so the old segment never grows past the base of a next segment
    /// file that may already exist.
    roll: bool,
}

impl Fault {
    fn error(&self) -> StorageError {
        StorageError::WriteFault {
            disk_full: self.disk_full,
            cause: self.cause.clone(),
        }
    }
}

fn rt(e: glommio::GlommioError<()>) -> StorageError {
    StorageError::Runtime(e.to_string())
}

fn rt_at(path: &Path) -> impl FnOnce(glommio::GlommioError<()>) -> StorageError + '_ {
    move |e| StorageError::io(path, e.into())
}

fn std_io(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |e| StorageError::io(path, e)
}

impl PartitionLog {
    /// Opens (creating if missing) and recovers a partition log: sealed
    /// segments are trusted through their index files (rebuilt by a scan
    /// when missing or inconsistent); the active segment is scanned batch
    /// by batch, its torn tail and zero padding cut. A damaged batch with
    /// valid batches after it is `StorageError::Damaged`, never cut; damage
    /// in a sealed segment's checked tail is kept as a damaged range.
    pub async fn open(options: LogOptions) -> Result<PartitionLog> {
        options.config.validate()?;
        let dir = options
            .data_dir
            .join(partition_dir_name(&options.topic, options.partition));
        std::fs::create_dir_all(&dir).map_err(std_io(&dir))?;
        prime_iopoll_probe(&dir).await?;
        let config = options.config;
        let mut bases = Vec::new();
        let mut index_files = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(std_io(&dir))? {
            let entry = entry.map_err(std_io(&dir))?;
            let name = entry.file_name();
            match name.to_str().and_then(parse_segment_file_name) {
                Some((base, SegmentFile::Log)) => bases.push(base),
                Some((base, _)) => index_files.push((base, entry.path())),
                None => {}
            }
        }
        bases.sort();
        // Index files whose segment is gone (retention crashed midway).
        for (base, path) in index_files {
            if bases.binary_search(&base).is_err() {
                std::fs::remove_file(&path).map_err(std_io(&path))?;
            }
        }
        if bases.is_empty() {
            let path = dir.join(segment_file_name(options.initial_offset, SegmentFile::Log));
            let file = open_rw(&path).await?;
            file.close().await.map_err(rt_at(&path))?;
            sync_dir(&dir).await?;
            bases.push(options.initial_offset);
        }

        let mut metas = Vec::with_capacity(bases.len());
        let mut files = BTreeMap::new();
        let mut found_damage = Vec::new();
        for (i, &base) in bases.iter().enumerate() {
            let path = dir.join(segment_file_name(base, SegmentFile::Log));
            if let Some(previous) = metas.last().map(|m: &SegmentMeta| m.next) {
                if previous != base {
                    return Err(StorageError::Inconsistent {
                        dir: dir.clone(),
                        reason: format!("segment {base} follows a segment ending at {previous}"),
                    });
                }
            }
            if i + 1 < bases.len() {
                let file = Rc::new(DmaFile::open(&path).await.map_err(rt_at(&path))?);
                let (meta, damage) =
                    open_sealed(&dir, &file, &path, base, bases[i + 1], &config).await?;
                if let Some(damage) = damage {
                    log_damage(&path, &damage, None);
                    if found_damage.len() < config.damaged_ranges_max {
                        found_damage.push(damage);
                    }
                }
                files.insert(base, file);
                metas.push(meta);
            } else {
                let file = Rc::new(open_rw(&path).await?);
                files.insert(base, file);
                metas.push(SegmentMeta::empty(base));
            }
        }

        // The active segment: a full verifying scan.
        let base = bases[bases.len() - 1];
        let path = dir.join(segment_file_name(base, SegmentFile::Log));
        let Some(file) = files.get(&base).cloned() else {
            unreachable!("active file opened above")
        };
        let file_len = file.file_size().await.map_err(rt_at(&path))?;
        let scanner = SegmentScanner::new(base, config.index_interval_bytes);
        let (meta, end) =
            scan_file(&file, &path, file_len, scanner, ScanLimit::None, &config).await?;
        let data_end = meta.bytes;
        // Only a torn tail may be cut: if anything valid follows the point
        // where the scan stopped, acknowledged data is damaged.
        // Bytes further than the write buffer past the data were never
        // unsynced, so anything non-zero there is damage too (checked on
        // the salvage scan's reads, not by reading the tail again).
        if data_end < file_len {
            let padding_from = align_up(data_end + config.write_buffer_bytes as u64);
            let (damage, garbage) = salvage_file(
                &file,
                &path,
                file_len,
                base,
                data_end,
                meta.next,
                padding_from,
                &config,
            )
            .await?;
            if damage.resume.is_some() {
                return Err(StorageError::Damaged {
                    segment: path,
                    damage,
                });
            }
            if garbage {
                return Err(corrupt(&path, data_end, end));
            }
        }
        if let Some(previous) = metas.len().checked_sub(2).map(|i| metas[i].next) {
            assert_eq!(previous, base, "contiguity checked above");
        }
        let last = metas.len() - 1;
        metas[last] = meta;
        let tail = cut_after(&file, &path, file_len, data_end).await?;
        let tail_start = align_down(data_end);
        let tail_len = tail.len();

        let now = options.clock.now_ms();
        let mut core = LogCore::new(config, metas);
        core.set_active_since(now);
        let log_end = core.log_end();
        let mut staging = None;
        if tail_len > 0 {
            let mut buffer = file.alloc_dma_buffer(BLOCK_BYTES as usize);
            buffer.as_bytes_mut()[..tail_len].copy_from_slice(&tail);
            staging = Some(buffer);
        }
        let cache_id = options.cache.borrow_mut().register();
        let inner = Rc::new(Inner {
            dir,
            config: Cell::new(config),
            clock: options.clock,
            cache: options.cache,
            cache_id,
            state: RefCell::new(State {
                core,
                files,
                staging,
                staging_pos: tail_start,
                staging_len: tail_len,
                pending: VecDeque::new(),
                disk_end: data_end,
                durable_end: log_end,
                records_appended: 0,
                records_flushed: 0,
                oldest_unflushed_ms: None,
                prepared_end: align_up(data_end),
                appended_bytes: 0,
                prep_inflight: None,
                maintenance: false,
                closed: false,
                unsynced: None,
                fault: None,
                prep_failing: false,
                zeros: None,
            }),
            append_lock: Semaphore::new(1),
            io_lock: Semaphore::new(1),
            prep_done: Notify::default(),
            prep_wake: Rc::new(Notify::default()),
            generation: Cell::new(0),
            fault_wake: Rc::new(Notify::default()),
            damaged: RefCell::new(found_damage),
        });
        glommio::spawn_local(prepare_loop(Rc::downgrade(&inner))).detach();
        glommio::spawn_local(retry_loop(Rc::downgrade(&inner))).detach();
        Ok(PartitionLog { inner })
    }

    /// Damaged ranges reads have run into, with the offsets each makes
    /// unreadable, oldest first (segments since deleted or cut are left
    /// out).
    pub fn damaged(&self) -> Vec<(Damage, std::ops::Range<Offset>)> {
        let state = self.inner.state.borrow();
        let segments = state.core.segments();
        let mut out: Vec<_> = self
            .inner
            .damaged
            .borrow()
            .iter()
            .filter_map(|d| {
                let segment = segments.iter().find(|s| s.base == d.segment_base)?;
                (d.bytes_start < segment.bytes).then(|| (*d, d.lost_offsets(segment.next)))
            })
            .collect();
        out.sort_by_key(|(d, _)| (d.segment_base, d.bytes_start));
        out
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// First offset in the log (`earliest`).
    pub fn log_start(&self) -> Offset {
        self.inner.state.borrow().core.log_start()
    }

    /// The offset the next batch gets (`latest`).
    pub fn log_end(&self) -> Offset {
        self.inner.state.borrow().core.log_end()
    }

    /// Offsets below this are on stable storage.
    pub fn durable_end(&self) -> Offset {
        self.inner.state.borrow().durable_end
    }

    /// Bytes of batches in all segments.
    pub fn size_bytes(&self) -> u64 {
        self.inner.state.borrow().core.size_bytes()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_bases(&self) -> Vec<Offset> {
        let state = self.inner.state.borrow();
        state.core.segments().iter().map(|s| s.base).collect()
    }

    /// Whether the topic's flush policy wants a flush at `now_ms`
    /// (`flush.messages` or `flush.ms` reached).
    pub fn flush_due(&self, now_ms: i64) -> bool {
        let state = self.inner.state.borrow();
        let policy = self.inner.config.get().flush;
        let unflushed = state.records_appended - state.records_flushed;
        if unflushed == 0 {
            return false;
        }
        let by_count = policy.flush_messages.is_some_and(|n| unflushed >= n);
        let by_time = match (policy.flush_ms, state.oldest_unflushed_ms) {
            (Some(ms), Some(since)) => now_ms.saturating_sub(since) >= ms as i64,
            _ => false,
        };
        by_count || by_time
    }

    /// Appends a batch whose base offset the caller already assigned (a
    /// follower appending the leader's batches, or a leader that assigned
    /// with `assign_offset_and_epoch`). The batch must continue the log.
    /// After this returns the batch is in memory; see [`Self::flush`].
    pub async fn append(&self, batch: Bytes) -> Result<AppendInfo> {
        self.append_inner(Appended::Assigned(batch)).await
    }

    /// Appends a batch as the leader: assigns the next offset and `epoch` in
    /// place (the CRC does not cover them), so offsets follow the order in
    /// which concurrent appends reach the log.
    pub async fn append_leader(&self, batch: BytesMut, epoch: LeaderEpoch) -> Result<AppendInfo> {
        self.append_inner(Appended::Leader(batch, epoch)).await
    }

    async fn append_inner(&self, batch: Appended) -> Result<AppendInfo> {
        let inner = &self.inner;
        let bytes: &[u8] = match &batch {
            Appended::Assigned(b) => b,
            Appended::Leader(b, _) => b,
        };
        let header = BatchView::parse_header(bytes)?;
        let len = header.batch_len();
        if len != bytes.len() {
            return Err(StorageError::InvalidBatch(
                fjord_schema::BatchError::Truncated {
                    needed: len,
                    got: bytes.len(),
                },
            ));
        }
        if len > inner.config.get().batch_bytes_max {
            return Err(StorageError::BatchTooLarge {
                len,
                len_max: inner.config.get().batch_bytes_max,
            });
        }
        let _append = inner.append_lock.acquire_permit(1).await.map_err(rt)?;
        inner.check_writable()?;
        let now = inner.clock.now_ms();
        let roll = inner.state.borrow().core.roll_needed(len, now).is_some();
        if roll {
            inner.roll_locked().await?;
        }
        loop {
            let fits = {
                let state = inner.state.borrow();
                state.staging_len + len
                    <= inner.config.get().write_buffer_bytes - BLOCK_BYTES as usize
            };
            if fits {
                break;
            }
            // Backpressure: the write buffer is full, write it out first.
            let _io = inner.io_lock.acquire_permit(1).await.map_err(rt)?;
            inner.flush_locked().await?;
        }
        inner.check_writable()?;
        let batch = match batch {
            Appended::Assigned(batch) => {
                let expected = inner.state.borrow().core.log_end();
                let found = BatchView::parse_header(&batch)?.base_offset();
                if found != expected {
                    return Err(StorageError::OffsetMismatch { expected, found });
                }
                batch
            }
            Appended::Leader(mut batch, epoch) => {
                let offset = inner.state.borrow().core.log_end();
                assign_offset_and_epoch(&mut batch, offset, epoch);
                batch.freeze()
            }
        };
        Ok(inner.push_batch(batch, now))
    }

    /// Makes every batch appended before this call durable (written and
    /// fdatasynced). Concurrent callers share one fdatasync. Returns the
    /// durable end offset.
    pub async fn flush(&self) -> Result<Offset> {
        let inner = &self.inner;
        let target = inner.state.borrow().core.log_end();
        if inner.state.borrow().durable_end >= target {
            return Ok(inner.state.borrow().durable_end);
        }
        let _io = inner.io_lock.acquire_permit(1).await.map_err(rt)?;
        // Group commit: the flush we waited for may have covered us.
        if inner.state.borrow().durable_end < target {
            inner.check_writable()?;
            inner.flush_locked().await?;
        }
        Ok(inner.state.borrow().durable_end)
    }

    /// The limits the log runs with.
    pub fn config(&self) -> LogConfig {
        self.inner.config.get()
    }

    /// Changes the limits of a live log (a topic config change): the next
    /// append, roll, flush check and retention pass use them; a smaller
    /// `segment_bytes_max` applies from the next roll. Read sizes and the
    /// zero-fill steps stay as opened.
    ///
    /// A smaller `write_buffer_bytes` is taken only after everything
    /// appended is fdatasynced, so that at any crash at most the new
    /// amount is unsynced and recovery with the new config tells a torn
    /// tail from corruption correctly.
    pub async fn reconfigure(&self, config: LogConfig) -> Result<()> {
        config.validate()?;
        let inner = &self.inner;
        let old = inner.config.get();
        let runtime = |c: &LogConfig| {
            (
                c.read_chunk_bytes,
                c.prepare_step_bytes,
                c.prepare_ahead_bytes,
            )
        };
        if runtime(&config) != runtime(&old) {
            return Err(StorageError::Config(
                "read_chunk_bytes and the zero-fill sizes cannot change on a live log".to_owned(),
            ));
        }
        let _append = inner.append_lock.acquire_permit(1).await.map_err(rt)?;
        if config.write_buffer_bytes < old.write_buffer_bytes {
            let _io = inner.io_lock.acquire_permit(1).await.map_err(rt)?;
            inner.check_writable()?;
            inner.flush_locked().await?;
            let state = inner.state.borrow();
            assert_eq!(
                state.durable_end,
                state.core.log_end(),
                "flushed before shrinking"
            );
        }
        inner.config.set(config);
        inner.state.borrow_mut().core.set_config(config);
        Ok(())
    }

    /// Whole batches starting with the one holding `request.offset`, within
    /// the byte budget (the first batch always), none at or past
    /// `request.until`. Served from the shard cache, then from batches not
    /// yet written, then from disk with aligned DMA reads; every batch read
    /// from disk is CRC-checked before it is returned. An offset equal to
    /// the log end gives an empty result; outside the log, an error.
    pub async fn read(&self, request: ReadRequest) -> Result<Vec<Bytes>> {
        let inner = &self.inner;
        let (start, end) = {
            let state = inner.state.borrow();
            (state.core.log_start(), state.core.log_end())
        };
        if request.offset < start || request.offset > end {
            return Err(StorageError::OffsetOutOfRange {
                offset: request.offset,
                log_start: start,
                log_end: end,
            });
        }
        if request.offset == end || request.offset >= request.until {
            return Ok(Vec::new());
        }
        let cached = inner.cache.borrow_mut().read(
            inner.cache_id,
            request.offset,
            request.until,
            request.max_bytes,
        );
        if !cached.is_empty() {
            return Ok(cached);
        }
        let mut attempts = 0;
        loop {
            let generation = inner.generation.get();
            match inner.read_uncached(&request).await {
                Err(e) if inner.generation.get() != generation && attempts < 3 => {
                    tracing::debug!("read raced with a truncation, retrying: {e}");
                    attempts += 1;
                }
                other => return other,
            }
        }
    }

    /// The first offset whose record timestamp is at or after `timestamp`
    /// (Kafka's ListOffsets by time); `None` if every record is older.
    pub async fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<Offset>> {
        let inner = &self.inner;
        let Some(mut offset) = inner.state.borrow().core.time_lookup_start(timestamp) else {
            return Ok(None);
        };
        let mut scratch = Vec::new();
        loop {
            let end = self.log_end();
            if offset >= end {
                return Ok(None);
            }
            let request = ReadRequest {
                offset,
                until: end,
                max_bytes: inner.config.get().read_chunk_bytes,
            };
            let batches = self.read(request).await?;
            if batches.is_empty() {
                return Ok(None);
            }
            for batch in &batches {
                let (view, _) = BatchView::parse(batch)?;
                let header = view.header();
                if header.max_timestamp.get() >= timestamp {
                    let limit = inner.config.get().batch_bytes_max.saturating_mul(8);
                    let first = view.records(&mut scratch, limit).ok().and_then(|records| {
                        records
                            .iter()
                            .find(|r| r.timestamp >= timestamp)
                            .map(|r| r.offset)
                    });
                    return Ok(Some(first.unwrap_or(header.base_offset())));
                }
                offset = header.next_offset();
            }
        }
    }

    /// Seals the active segment and starts a new one (if it holds data).
    pub async fn roll(&self) -> Result<()> {
        let inner = &self.inner;
        let _append = inner.append_lock.acquire_permit(1).await.map_err(rt)?;
        inner.check_writable()?;
        if inner.state.borrow().core.active().is_empty() {
            return Ok(());
        }
        inner.roll_locked().await
    }

    /// Removes every batch at or after `offset` (whole batches: one holding
    /// `offset` goes entirely), durably, before returning. Below the log
    /// start, the log restarts empty at `offset`. Followers call this after
    /// a leader change.
    pub async fn truncate(&self, offset: Offset) -> Result<()> {
        let inner = &self.inner;
        let _append = inner.append_lock.acquire_permit(1).await.map_err(rt)?;
        let _io = inner.io_lock.acquire_permit(1).await.map_err(rt)?;
        inner.check_writable()?;
        inner.flush_locked().await?;
        let Some(plan) = inner.state.borrow().core.truncate_plan(offset) else {
            return Ok(());
        };
        inner.begin_maintenance().await;
        let result = inner.truncate_locked(plan).await;
        inner.end_maintenance();
        result
    }

    /// Removes every batch and restarts the log empty at `offset`,
    /// durably, before returning; `offset` may be past the log end (a
    /// follower whose leader's log starts past everything it has).
    pub async fn reset(&self, offset: Offset) -> Result<()> {
        let inner = &self.inner;
        let _append = inner.append_lock.acquire_permit(1).await.map_err(rt)?;
        let _io = inner.io_lock.acquire_permit(1).await.map_err(rt)?;
        inner.check_writable()?;
        inner.flush_locked().await?;
        let Some(plan) = inner.state.borrow().core.reset_plan(offset) else {
            return Ok(());
        };
        inner.begin_maintenance().await;
        let result = inner.truncate_locked(plan).await;
        inner.end_maintenance();
        result
    }

    /// Deletes the sealed segments that retention (time and size) no longer
    /// keeps; returns their base offsets.
    pub async fn apply_retention(&self) -> Result<Vec<Offset>> {
        let inner = &self.inner;
        let _io = inner.io_lock.acquire_permit(1).await.map_err(rt)?;
        // Also while in write fault: removing sealed segments needs no
        // space and gives some back.
        if inner.state.borrow().closed {
            return Err(StorageError::Closed);
        }
        let plan = inner
            .state
            .borrow()
            .core
            .retention_plan(inner.clock.now_ms());
        for &base in &plan {
            let file = inner.state.borrow_mut().files.remove(&base);
            inner.state.borrow_mut().core.remove_oldest(base);
            let start = inner.state.borrow().core.log_start();
            inner.cache.borrow_mut().remove_below(inner.cache_id, start);
            inner.generation.set(inner.generation.get() + 1);
            // The log file goes first: index files without it are removed
            // as orphans on the next open.
            for kind in [SegmentFile::Log, SegmentFile::Index, SegmentFile::TimeIndex] {
                remove_if_exists(&inner.dir.join(segment_file_name(base, kind)))?;
            }
            if let Some(file) = file.and_then(|f| Rc::try_unwrap(f).ok()) {
                file.close().await.map_err(rt)?;
            }
        }
        if !plan.is_empty() {
            sync_dir(&inner.dir).await?;
        }
        Ok(plan)
    }

    /// Flushes, stops the zero-fill task and closes the files. The log
    /// refuses every operation afterwards.
    pub async fn close(&self) -> Result<()> {
        self.close_inner(true).await
    }

    /// Closes without flushing, for a log whose directory is removed next
    /// (a deleted topic): on a full disk a flush would only fail.
    pub async fn close_discarding(&self) -> Result<()> {
        self.close_inner(false).await
    }

    async fn close_inner(&self, flush: bool) -> Result<()> {
        let inner = &self.inner;
        let _append = inner.append_lock.acquire_permit(1).await.map_err(rt)?;
        let _io = inner.io_lock.acquire_permit(1).await.map_err(rt)?;
        if inner.state.borrow().closed {
            return Ok(());
        }
        // In write fault too: one last rewrite; if it fails, what was not
        // durable is lost as at a crash (it was never acknowledged).
        let flushed = if flush {
            inner.flush_locked().await
        } else {
            Ok(())
        };
        inner.begin_maintenance().await;
        let files = {
            let mut state = inner.state.borrow_mut();
            state.closed = true;
            state.zeros = None;
            std::mem::take(&mut state.files)
        };
        inner.prep_wake.notify_all();
        inner.fault_wake.notify_all();
        inner.cache.borrow_mut().deregister(inner.cache_id);
        for (_, file) in files {
            if let Ok(file) = Rc::try_unwrap(file) {
                file.close().await.map_err(rt)?;
            }
        }
        flushed
    }
}

impl Drop for PartitionLog {
    fn drop(&mut self) {
        // Let the zero-fill and retry tasks see the log is gone.
        self.inner.prep_wake.notify_all();
        self.inner.fault_wake.notify_all();
    }
}

enum Appended {
    Assigned(Bytes),
    Leader(BytesMut, LeaderEpoch),
}

impl Inner {
    fn check_writable(&self) -> Result<()> {
        let state = self.state.borrow();
        if state.closed {
            return Err(StorageError::Closed);
        }
        if let Some(fault) = &state.fault {
            return Err(fault.error());
        }
        Ok(())
    }

    /// Copies a verified, offset-assigned batch into the write buffer.
    fn push_batch(&self, batch: Bytes, now: i64) -> AppendInfo {
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        let Ok(header) = BatchView::parse_header(&batch) else {
            unreachable!("header verified before the offset was assigned")
        };
        let len = batch.len();
        state.appended_bytes = state.appended_bytes.saturating_add(len as u64);
        // Pair assertion before the disk boundary: what we write is one
        // whole batch continuing the log.
        assert_eq!(header.batch_len(), len, "batch length");
        assert_eq!(header.base_offset(), state.core.log_end(), "batch offset");
        assert_eq!(
            state.core.active().bytes,
            state.staging_pos + state.staging_len as u64,
            "write buffer out of step with the segment"
        );
        let needed = state.staging_len + len;
        let capacity = state.staging.as_ref().map_or(0, |b| b.len());
        if needed > capacity {
            let Some(file) = state.files.get(&state.core.active().base) else {
                unreachable!("active segment file is open")
            };
            let size = (align_up(needed as u64) as usize)
                .next_power_of_two()
                .min(self.config.get().write_buffer_bytes);
            assert!(size >= needed, "write buffer smaller than checked");
            let mut grown = file.alloc_dma_buffer(size);
            if let Some(old) = &state.staging {
                grown.as_bytes_mut()[..state.staging_len]
                    .copy_from_slice(&old.as_bytes()[..state.staging_len]);
            }
            state.staging = Some(grown);
        }
        let Some(staging) = state.staging.as_mut() else {
            unreachable!("write buffer allocated above")
        };
        staging.as_bytes_mut()[state.staging_len..needed].copy_from_slice(&batch);
        state.staging_len = needed;
        let base = header.base_offset();
        let next = header.next_offset();
        let last = header.last_offset();
        let records = u64::from(header.record_count());
        state.core.push_batch(header, now);
        state.records_appended += records;
        state.oldest_unflushed_ms.get_or_insert(now);
        self.cache
            .borrow_mut()
            .insert(self.cache_id, base, next, batch.clone());
        state.pending.push_back((base, next, batch));
        let unflushed = state.records_appended - state.records_flushed;
        AppendInfo {
            base_offset: base,
            last_offset: last,
            next_offset: next,
            flush_due: self
                .config
                .get()
                .flush
                .flush_messages
                .is_some_and(|n| unflushed >= n),
        }
    }

    /// Writes the write buffer (rewriting the partial tail block) and
    /// fdatasyncs; first the write a failure left unconfirmed, if any.
    /// A failure puts the log in write fault and comes back as
    /// [`StorageError::WriteFault`]. Caller holds `io_lock`.
    async fn flush_locked(&self) -> Result<()> {
        match self.flush_once().await {
            Ok(()) => Ok(()),
            Err(error) => Err(self.enter_fault(error, false)),
        }
    }

    async fn flush_once(&self) -> Result<()> {
        let unconfirmed = self.state.borrow().unsynced.clone();
        if let Some(unsynced) = unconfirmed {
            self.write_and_sync(&unsynced).await?;
        }
        let Some(unsynced) = self.take_write_buffer() else {
            return Ok(());
        };
        self.state.borrow_mut().unsynced = Some(unsynced.clone());
        self.write_and_sync(&unsynced).await
    }

    /// Moves the unwritten bytes of the write buffer (from the block they
    /// start in, padded with zeros to a block) into a write; the partial
    /// last block stays in the buffer for the next one. `None` when
    /// everything appended is durable.
    fn take_write_buffer(&self) -> Option<Unsynced> {
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        if state.durable_end == state.core.log_end() {
            return None;
        }
        assert!(state.unsynced.is_none(), "one unconfirmed write at a time");
        let written_len = (state.disk_end - state.staging_pos) as usize;
        let base = state.core.active().base;
        let Some(file) = state.files.get(&base) else {
            unreachable!("active segment file is open")
        };
        let len = state.staging_len;
        // Offsets and bytes advance together, so appends past the durable
        // end are bytes past the durable (written) end.
        assert!(
            len > written_len,
            "undurable appends are in the write buffer"
        );
        let keep_from = align_down(len as u64) as usize;
        let mut next = None;
        if len > keep_from {
            let mut buffer = file.alloc_dma_buffer(BLOCK_BYTES as usize);
            let Some(old) = &state.staging else {
                unreachable!("non-empty write buffer")
            };
            buffer.as_bytes_mut()[..len - keep_from]
                .copy_from_slice(&old.as_bytes()[keep_from..len]);
            next = Some(buffer);
        }
        let Some(mut buffer) = std::mem::replace(&mut state.staging, next) else {
            unreachable!("non-empty write buffer")
        };
        let aligned = align_up(len as u64) as usize;
        buffer.as_bytes_mut()[len..aligned].fill(0);
        buffer.trim_to_size(aligned);
        let position = state.staging_pos;
        state.staging_pos += keep_from as u64;
        state.staging_len = len - keep_from;
        Some(Unsynced {
            base,
            buffer: Rc::new(buffer),
            position,
            end_offset: state.core.log_end(),
            end_bytes: state.core.active().bytes,
            records: state.records_appended,
        })
    }

    /// Writes `unsynced` whole at its place, fdatasyncs, and only then
    /// counts it written and durable.
    async fn write_and_sync(&self, unsynced: &Unsynced) -> Result<()> {
        let file = {
            let state = self.state.borrow();
            assert_eq!(
                state.core.active().base,
                unsynced.base,
                "an unconfirmed write outlived its segment"
            );
            let Some(file) = state.files.get(&unsynced.base).cloned() else {
                unreachable!("active segment file is open")
            };
            file
        };
        let path = self
            .dir
            .join(segment_file_name(unsynced.base, SegmentFile::Log));
        let write_end = unsynced.position + unsynced.buffer.len() as u64;
        // Never race a zero-fill write over the same blocks.
        loop {
            let overlaps = self
                .state
                .borrow()
                .prep_inflight
                .is_some_and(|(start, end)| start < write_end && unsynced.position < end);
            if !overlaps {
                break;
            }
            self.prep_done.notified().await;
        }
        write_all_rc(&file, &path, unsynced.buffer.clone(), unsynced.position).await?;
        file.fdatasync().await.map_err(rt_at(&path))?;
        {
            let mut state = self.state.borrow_mut();
            state.unsynced = None;
            state.disk_end = state.disk_end.max(unsynced.end_bytes);
            state.prepared_end = state.prepared_end.max(write_end);
            while state
                .pending
                .front()
                .is_some_and(|p| p.1 <= unsynced.end_offset)
            {
                state.pending.pop_front();
            }
            state.durable_end = state.durable_end.max(unsynced.end_offset);
            state.records_flushed = state.records_flushed.max(unsynced.records);
            if state.records_flushed == state.records_appended {
                state.oldest_unflushed_ms = None;
            }
        }
        self.prep_wake.notify_all();
        Ok(())
    }

    /// Puts the log in write fault (logged once per fault, when it
    /// starts) or records a further failure; returns the error callers
    /// get while it lasts.
    fn enter_fault(&self, error: StorageError, roll: bool) -> StorageError {
        let disk_full = error.is_disk_full();
        let mut state = self.state.borrow_mut();
        match &mut state.fault {
            Some(fault) => {
                fault.roll |= roll;
                fault.disk_full = disk_full;
                fault.cause = error.to_string();
            }
            None => {
                if disk_full {
                    tracing::error!(
                        log = %self.dir.display(),
                        "disk full: writing the log failed ({error}); it keeps serving reads, refuses appends and retries with backoff until space is freed"
                    );
                } else {
                    tracing::error!(
                        log = %self.dir.display(),
                        "writing the log failed ({error}); it keeps serving reads, refuses appends and retries with backoff"
                    );
                }
                state.fault = Some(Fault {
                    disk_full,
                    cause: error.to_string(),
                    since_ms: self.clock.now_ms(),
                    failed_retries: 0,
                    roll,
                });
                self.fault_wake.notify_all();
            }
        }
        let Some(fault) = &state.fault else {
            unreachable!("set above")
        };
        fault.error()
    }

    /// One retry of a log in write fault: the unconfirmed write and the
    /// rest of the write buffer, then the roll that failed, if one did.
    /// On success the fault ends and appends go on.
    async fn retry_writes(&self) {
        let Ok(_append) = self.append_lock.acquire_permit(1).await else {
            return;
        };
        let Ok(_io) = self.io_lock.acquire_permit(1).await else {
            return;
        };
        let roll = {
            let state = self.state.borrow();
            match &state.fault {
                Some(fault) if !state.closed => fault.roll,
                _ => return,
            }
        };
        let mut result = self.flush_once().await;
        if result.is_ok() && roll {
            self.begin_maintenance().await;
            result = self.roll_inner().await;
            self.end_maintenance();
        }
        let mut state = self.state.borrow_mut();
        match result {
            Ok(()) => {
                let Some(fault) = state.fault.take() else {
                    unreachable!("checked above under the locks")
                };
                drop(state);
                tracing::info!(
                    log = %self.dir.display(),
                    after_ms = self.clock.now_ms().saturating_sub(fault.since_ms),
                    retries = fault.failed_retries + 1,
                    "writes resumed: everything appended is written and fdatasynced"
                );
                self.prep_wake.notify_all();
            }
            Err(error) => {
                if let Some(fault) = &mut state.fault {
                    fault.failed_retries = fault.failed_retries.saturating_add(1);
                    fault.disk_full = error.is_disk_full();
                    fault.cause = error.to_string();
                }
            }
        }
    }

    /// Waits for the zero-fill task to be idle and keeps it idle.
    async fn begin_maintenance(&self) {
        self.state.borrow_mut().maintenance = true;
        while self.state.borrow().prep_inflight.is_some() {
            self.prep_done.notified().await;
        }
    }

    fn end_maintenance(&self) {
        self.state.borrow_mut().maintenance = false;
        self.prep_wake.notify_all();
    }

    /// Caller holds `append_lock`.
    async fn roll_locked(&self) -> Result<()> {
        let _io = self.io_lock.acquire_permit(1).await.map_err(rt)?;
        self.flush_locked().await?;
        self.begin_maintenance().await;
        let result = self.roll_inner().await;
        self.end_maintenance();
        result.map_err(|error| self.enter_fault(error, true))
    }

    /// Seals the active segment and opens the next. Nothing in memory
    /// changes until every step succeeded, and each step can be redone,
    /// so a failed roll is retried from the start.
    async fn roll_inner(&self) -> Result<()> {
        let (bytes, file, sealed) = {
            let state = self.state.borrow();
            let active = state.core.active();
            let Some(file) = state.files.get(&active.base).cloned() else {
                unreachable!("active segment file is open")
            };
            assert_eq!(
                state.durable_end,
                state.core.log_end(),
                "flushed before a roll"
            );
            let mut sealed = active.clone();
            sealed.seal();
            (active.bytes, file, sealed)
        };
        let path = self
            .dir
            .join(segment_file_name(sealed.base, SegmentFile::Log));
        // Order matters for recovery: data synced, file cut to its exact
        // length, index files synced, and only then the next segment exists.
        file.truncate(bytes).await.map_err(rt_at(&path))?;
        file.fdatasync().await.map_err(rt_at(&path))?;
        write_indexes(&self.dir, &sealed).await?;
        let new_path = self
            .dir
            .join(segment_file_name(sealed.next, SegmentFile::Log));
        let new_file = Rc::new(open_rw(&new_path).await?);
        sync_dir(&self.dir).await?;
        let mut state = self.state.borrow_mut();
        let new_base = state.core.roll();
        assert_eq!(
            new_base, sealed.next,
            "the next segment starts at the log end"
        );
        let segments = state.core.segments();
        assert_eq!(
            segments[segments.len() - 2],
            sealed,
            "the segment sealed is the one indexed"
        );
        state.files.insert(new_base, new_file);
        state.staging = None;
        state.staging_pos = 0;
        state.staging_len = 0;
        state.disk_end = 0;
        state.prepared_end = 0;
        state.pending.clear();
        Ok(())
    }

    /// Caller holds both locks, has flushed and is in maintenance.
    async fn truncate_locked(&self, plan: crate::log::TruncatePlan) -> Result<()> {
        let (cut_base, reset) = match plan.cut {
            Cut::Segment { base, .. } => (Some(base), false),
            Cut::Reset { .. } => (None, true),
        };
        self.generation.set(self.generation.get() + 1);
        for &base in &plan.remove {
            if Some(base) == cut_base {
                continue;
            }
            let file = self.state.borrow_mut().files.remove(&base);
            for kind in [SegmentFile::Log, SegmentFile::Index, SegmentFile::TimeIndex] {
                remove_if_exists(&self.dir.join(segment_file_name(base, kind)))?;
            }
            if let Some(file) = file.and_then(|f| Rc::try_unwrap(f).ok()) {
                file.close().await.map_err(rt)?;
            }
        }
        let (meta, file, path) = match plan.cut {
            Cut::Segment { base, offset, .. } => {
                for kind in [SegmentFile::Index, SegmentFile::TimeIndex] {
                    remove_if_exists(&self.dir.join(segment_file_name(base, kind)))?;
                }
                let path = self.dir.join(segment_file_name(base, SegmentFile::Log));
                // The cut segment may have been sealed (read-only handle).
                let file = Rc::new(open_rw(&path).await?);
                let file_len = file.file_size().await.map_err(rt_at(&path))?;
                let scanner = SegmentScanner::new(base, self.config.get().index_interval_bytes);
                let (meta, _) = scan_file(
                    &file,
                    &path,
                    file_len,
                    scanner,
                    ScanLimit::Offset(offset),
                    &self.config.get(),
                )
                .await?;
                (meta, file, path)
            }
            Cut::Reset { base } => {
                let path = self.dir.join(segment_file_name(base, SegmentFile::Log));
                let file = Rc::new(open_rw(&path).await?);
                (SegmentMeta::empty(base), file, path)
            }
        };
        let data_end = meta.bytes;
        let tail_start = align_down(data_end);
        let tail_len = (data_end - tail_start) as usize;
        let mut staging = None;
        if tail_len > 0 {
            let read = file
                .read_at_aligned(tail_start, BLOCK_BYTES as usize)
                .await
                .map_err(rt_at(&path))?;
            let Some(head) = read.get(..tail_len) else {
                return Err(StorageError::Inconsistent {
                    dir: self.dir.clone(),
                    reason: format!("{} shrank during truncation", path.display()),
                });
            };
            let mut block = file.alloc_dma_buffer(BLOCK_BYTES as usize);
            block.as_bytes_mut().fill(0);
            block.as_bytes_mut()[..tail_len].copy_from_slice(head);
            let mut kept = file.alloc_dma_buffer(BLOCK_BYTES as usize);
            kept.as_bytes_mut()[..tail_len].copy_from_slice(head);
            staging = Some(kept);
            write_all(&file, &path, block, tail_start).await?;
        }
        file.truncate(align_up(data_end))
            .await
            .map_err(rt_at(&path))?;
        file.fdatasync().await.map_err(rt_at(&path))?;
        sync_dir(&self.dir).await?;
        let mut meta = meta;
        meta.active_since_ms = Some(self.clock.now_ms());
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        state.files.insert(meta.base, file);
        if reset {
            state.core.apply_reset(meta);
        } else {
            state.core.apply_truncate(meta);
        }
        let end = state.core.log_end();
        self.cache.borrow_mut().remove_from(self.cache_id, end);
        state.pending.clear();
        state.staging = staging;
        state.staging_pos = tail_start;
        state.staging_len = tail_len;
        state.disk_end = data_end;
        state.prepared_end = align_up(data_end);
        state.durable_end = end;
        state.records_flushed = state.records_appended;
        state.oldest_unflushed_ms = None;
        Ok(())
    }

    /// The damaged range at byte `position` of segment `segment_base`
    /// (`lost_from` is the base offset the batch there should have): found
    /// by a salvage scan the first time a read runs into it, logged once,
    /// and remembered for later reads and [`PartitionLog::damaged`].
    #[allow(clippy::too_many_arguments)]
    async fn damage_at(
        &self,
        file: &DmaFile,
        path: &Path,
        segment_base: Offset,
        position: u64,
        lost_from: Offset,
        end: u64,
        kind: &CorruptionKind,
    ) -> Result<Damage> {
        let known = self
            .damaged
            .borrow()
            .iter()
            .find(|d| d.segment_base == segment_base && d.bytes_start == position)
            .copied();
        if let Some(damage) = known {
            return Ok(damage);
        }
        let config = self.config.get();
        let damage = salvage_file(
            file,
            path,
            end,
            segment_base,
            position,
            lost_from,
            end,
            &config,
        )
        .await?
        .0;
        let mut damaged = self.damaged.borrow_mut();
        let fresh = !damaged
            .iter()
            .any(|d| d.segment_base == segment_base && d.bytes_start == position);
        if fresh {
            log_damage(path, &damage, Some(kind));
            if damaged.len() < config.damaged_ranges_max {
                damaged.push(damage);
            }
        }
        Ok(damage)
    }

    async fn read_uncached(&self, request: &ReadRequest) -> Result<Vec<Bytes>> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        // Batches not yet on disk.
        {
            let state = self.state.borrow();
            let first = state.pending.front().map(|p| p.0);
            if first.is_some_and(|f| request.offset >= f) {
                for (base, next, batch) in &state.pending {
                    if *next <= request.offset {
                        continue;
                    }
                    if *base >= request.until
                        || (!out.is_empty() && bytes + batch.len() > request.max_bytes)
                    {
                        break;
                    }
                    bytes += batch.len();
                    out.push(batch.clone());
                }
                return Ok(out);
            }
        }
        let Some(mut start) = self.state.borrow().core.read_start(request.offset) else {
            return Ok(out);
        };
        let chunk = self.config.get().read_chunk_bytes;
        loop {
            let (file, readable_end, active) = {
                let state = self.state.borrow();
                let active = state.core.active().base == start.segment_base;
                let Some(file) = state.files.get(&start.segment_base).cloned() else {
                    return Ok(out);
                };
                let end = if active {
                    state.disk_end
                } else {
                    start.segment_bytes
                };
                (file, end, active)
            };
            let path = self
                .dir
                .join(segment_file_name(start.segment_base, SegmentFile::Log));
            let mut position = start.position;
            let mut expected = start.offset;
            let mut want =
                (request.max_bytes.saturating_sub(bytes)).clamp(BLOCK_BYTES as usize, chunk);
            loop {
                if position >= readable_end {
                    break;
                }
                let window_pos = align_down(position);
                let window_end = align_up((position + want as u64).min(readable_end));
                let window = file
                    .read_at_aligned(window_pos, (window_end - window_pos) as usize)
                    .await
                    .map_err(rt_at(&path))?;
                let window: &[u8] = &window;
                match collect_batches(
                    window,
                    window_pos,
                    position,
                    expected,
                    readable_end,
                    request,
                    bytes,
                ) {
                    Collect::Batches {
                        ranges,
                        next_position,
                        next_offset,
                        bytes: total,
                        done,
                    } => {
                        if let (Some(first), Some(last)) = (ranges.first(), ranges.last()) {
                            let shared = Bytes::copy_from_slice(&window[first.start..last.end]);
                            for range in &ranges {
                                out.push(
                                    shared
                                        .slice(range.start - first.start..range.end - first.start),
                                );
                            }
                        }
                        bytes = total;
                        if done || bytes >= request.max_bytes {
                            return Ok(out);
                        }
                        position = next_position;
                        expected = next_offset;
                        want = (request.max_bytes - bytes).clamp(BLOCK_BYTES as usize, chunk);
                    }
                    Collect::NeedMore { from, len, offset } => {
                        let have = window_pos + window.len() as u64;
                        if from + len as u64 <= have || from + len as u64 > readable_end {
                            return Err(StorageError::Corrupt {
                                segment: path,
                                position: from,
                                kind: CorruptionKind::PastEnd { len },
                            });
                        }
                        position = from;
                        expected = offset;
                        want = len + BLOCK_BYTES as usize;
                    }
                    Collect::Corrupt {
                        position: bad,
                        expected: lost_from,
                        kind,
                    } => {
                        // Serve the good batches before the damage; a read
                        // starting inside it fails, one past it resumes at
                        // the first valid batch after it.
                        if !out.is_empty() {
                            return Ok(out);
                        }
                        let damage = self
                            .damage_at(
                                &file,
                                &path,
                                start.segment_base,
                                bad,
                                lost_from,
                                readable_end,
                                &kind,
                            )
                            .await?;
                        match damage.resume {
                            Some((resume_position, resume_offset))
                                if request.offset >= resume_offset =>
                            {
                                position = resume_position;
                                expected = resume_offset;
                            }
                            _ => {
                                return Err(StorageError::Damaged {
                                    segment: path,
                                    damage,
                                })
                            }
                        }
                    }
                }
            }
            if active {
                // The rest is in memory (not yet written): the next read
                // gets it from the cache or the pending batches.
                return Ok(out);
            }
            match self
                .state
                .borrow()
                .core
                .next_segment_start(start.segment_base)
            {
                Some(next) => start = next,
                None => return Ok(out),
            }
        }
    }
}

/// Zero-fills the active segment ahead of the writer so the data path's
/// fdatasync finds the blocks already written (no extent conversion, no
/// size change in the journal). Runs until the log closes or is dropped.
async fn prepare_loop(log: Weak<Inner>) {
    loop {
        let Some(inner) = log.upgrade() else {
            return;
        };
        let step = {
            let state = inner.state.borrow();
            if state.closed {
                return;
            }
            next_prepare_step(&inner.config.get(), &state)
        };
        let idle = match step {
            None => true,
            Some((start, end)) => match prepare_step(&inner, start, end).await {
                Ok(()) => {
                    inner.state.borrow_mut().prep_failing = false;
                    false
                }
                Err(e) => {
                    // Once until it works again: on a full disk it fails
                    // after every flush.
                    let first =
                        !std::mem::replace(&mut inner.state.borrow_mut().prep_failing, true);
                    if first {
                        tracing::warn!(dir = %inner.dir.display(), "zero-fill ahead of the writer failed (not logged again until it succeeds): {e}");
                    }
                    true
                }
            },
        };
        if idle {
            // Idle logs hold no zero buffer (a shard may own thousands).
            inner.state.borrow_mut().zeros = None;
            let notify = inner.prep_wake.clone();
            let wake = notify.notified();
            drop(inner);
            wake.await;
        }
    }
}

/// Retries the writes of a log in write fault, with backoff, until one
/// succeeds (see [`Inner::retry_writes`]); idle otherwise. Holds the log
/// only while it retries. Runs until the log closes or is dropped.
async fn retry_loop(log: Weak<Inner>) {
    loop {
        let Some(inner) = log.upgrade() else {
            return;
        };
        let failed_retries = {
            let state = inner.state.borrow();
            if state.closed {
                return;
            }
            state.fault.as_ref().map(|f| f.failed_retries)
        };
        let Some(failed_retries) = failed_retries else {
            let notify = inner.fault_wake.clone();
            let wake = notify.notified();
            drop(inner);
            wake.await;
            continue;
        };
        let delay_ms = inner.config.get().write_retry_delay_ms(failed_retries);
        drop(inner);
        glommio::timer::sleep(Duration::from_millis(delay_ms)).await;
        let Some(inner) = log.upgrade() else {
            return;
        };
        inner.retry_writes().await;
    }
}

fn next_prepare_step(config: &LogConfig, state: &State) -> Option<(u64, u64)> {
    if state.maintenance || state.fault.is_some() || state.prep_inflight.is_some() {
        return None;
    }
    let active = state.core.active();
    let limit = align_up(config.segment_bytes_max);
    let start = state.prepared_end.max(align_up(active.bytes));
    // Zero-fill in proportion to the traffic the log has seen: a busy log
    // gets the full `prepare_ahead_bytes` in `prepare_step_bytes` steps, a
    // log that was never written prepares nothing, a slow one a little.
    let ahead = config
        .prepare_ahead_bytes
        .min(align_up(state.appended_bytes.saturating_mul(2)));
    let want = (align_up(active.bytes) + ahead).min(limit);
    if start >= want {
        return None;
    }
    let step = config.prepare_step_bytes.min(ahead);
    Some((start, (start + step).min(limit)))
}

/// Largest zero buffer a log holds while it prepares.
const ZERO_CHUNK_BYTES: usize = 1 << 20;

async fn prepare_step(inner: &Inner, start: u64, end: u64) -> Result<()> {
    let (file, zeros, base) = {
        let mut state = inner.state.borrow_mut();
        let base = state.core.active().base;
        let Some(file) = state.files.get(&base).cloned() else {
            return Ok(());
        };
        let chunk = (inner.config.get().prepare_step_bytes as usize).min(ZERO_CHUNK_BYTES);
        let zeros = match &state.zeros {
            Some(z) => z.clone(),
            None => {
                let mut buffer = file.alloc_dma_buffer(chunk);
                buffer.as_bytes_mut().fill(0);
                let zeros = Rc::new(buffer);
                state.zeros = Some(zeros.clone());
                zeros
            }
        };
        state.prep_inflight = Some((start, end));
        (file, zeros, base)
    };
    let path = inner.dir.join(segment_file_name(base, SegmentFile::Log));
    let written: Result<()> = async {
        let mut position = start;
        while position < end {
            let len = ((end - position) as usize).min(zeros.len());
            if len == zeros.len() {
                write_all_rc(&file, &path, zeros.clone(), position).await?;
            } else {
                let mut buffer = file.alloc_dma_buffer(len);
                buffer.as_bytes_mut().fill(0);
                write_all(&file, &path, buffer, position).await?;
            }
            position += len as u64;
        }
        Ok(())
    }
    .await;
    // The blocks hold zeros now: data may be written over them.
    inner.state.borrow_mut().prep_inflight = None;
    inner.prep_done.notify_all();
    written?;
    // Commit the extent conversion here, once per step, off the data path;
    // under the I/O lock so it never runs beside a data fdatasync (two
    // syncs of one inode queue on the same ext4 journal commit, and the
    // data one would pay for the conversion).
    let _io = inner.io_lock.acquire_permit(1).await.map_err(rt)?;
    if inner.state.borrow().closed {
        return Ok(());
    }
    file.fdatasync().await.map_err(rt_at(&path))?;
    let mut state = inner.state.borrow_mut();
    if state.core.active().base == base {
        state.prepared_end = state.prepared_end.max(end);
    }
    Ok(())
}

fn short_write(path: &Path, position: u64) -> StorageError {
    StorageError::io(
        path,
        std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            format!("short direct write at {position}"),
        ),
    )
}

async fn write_all(file: &DmaFile, path: &Path, buffer: DmaBuffer, position: u64) -> Result<()> {
    write_all_rc(file, path, Rc::new(buffer), position).await
}

/// Writes the whole buffer. A direct write that stops short at a block
/// boundary (the filesystem ran out of space part way) is continued with
/// the rest, so the error that stopped it is the one reported (ENOSPC).
async fn write_all_rc(
    file: &DmaFile,
    path: &Path,
    mut buffer: Rc<DmaBuffer>,
    mut position: u64,
) -> Result<()> {
    loop {
        assert_eq!(position % BLOCK_BYTES, 0, "unaligned direct write position");
        assert_eq!(
            buffer.len() as u64 % BLOCK_BYTES,
            0,
            "unaligned direct write length"
        );
        let len = buffer.len();
        let written = file
            .write_rc_at(buffer.clone(), position)
            .await
            .map_err(rt_at(path))?;
        if written == len {
            return Ok(());
        }
        if written == 0 || written as u64 % BLOCK_BYTES != 0 {
            return Err(short_write(path, position + written as u64));
        }
        let mut rest = file.alloc_dma_buffer(len - written);
        rest.as_bytes_mut()
            .copy_from_slice(&buffer.as_bytes()[written..len]);
        buffer = Rc::new(rest);
        position += written as u64;
    }
}

thread_local! {
    static PROBED_DEVICES: RefCell<std::collections::HashSet<u64>> = RefCell::default();
}

/// glommio 0.9 decides once per block device whether reads may use the
/// io_uring poll ring, by reading the first block of the first file opened
/// there. If that file is empty the read succeeds without touching the
/// device, the poll ring is wrongly enabled, and every later read fails with
/// EOPNOTSUPP on devices without iopoll (virtio, most cloud disks). So the
/// first open on a device is of a file that really has a block of data.
async fn prime_iopoll_probe(dir: &Path) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    let device = std::fs::metadata(dir).map_err(std_io(dir))?.dev();
    if PROBED_DEVICES.with(|d| d.borrow().contains(&device)) {
        return Ok(());
    }
    let path = dir.join(".iopoll-probe");
    {
        let mut file = std::fs::File::create(&path).map_err(std_io(&path))?;
        file.write_all(&[0u8; BLOCK_BYTES as usize])
            .map_err(std_io(&path))?;
        file.sync_all().map_err(std_io(&path))?;
    }
    let probe = DmaFile::open(&path).await.map_err(rt_at(&path))?;
    probe.close().await.map_err(rt_at(&path))?;
    remove_if_exists(&path)?;
    PROBED_DEVICES.with(|d| d.borrow_mut().insert(device));
    Ok(())
}

async fn open_rw(path: &Path) -> Result<DmaFile> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .dma_open(path)
        .await
        .map_err(rt_at(path))
}

async fn sync_dir(dir: &Path) -> Result<()> {
    let directory = glommio::io::Directory::open(dir)
        .await
        .map_err(rt_at(dir))?;
    directory.sync().await.map_err(rt_at(dir))?;
    directory.close().await.map_err(rt_at(dir))
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io(path, e)),
    }
}

/// Reads a whole small file (an index).
async fn read_small(path: &Path) -> Result<Option<Vec<u8>>> {
    if !path.exists() {
        return Ok(None);
    }
    let file = DmaFile::open(path).await.map_err(rt_at(path))?;
    let len = file.file_size().await.map_err(rt_at(path))?;
    let mut out = Vec::with_capacity(len as usize);
    let chunk = 1u64 << 20;
    let mut position = 0;
    while position < len {
        let want = chunk.min(align_up(len - position));
        let read = file
            .read_at_aligned(position, want as usize)
            .await
            .map_err(rt_at(path))?;
        if read.is_empty() {
            break;
        }
        let take = read.len().min((len - position) as usize);
        out.extend_from_slice(&read[..take]);
        position += take as u64;
    }
    file.close().await.map_err(rt_at(path))?;
    Ok(Some(out))
}

/// Writes a small file through direct I/O: padded to blocks, then cut to
/// its exact length, then synced.
async fn write_small(path: &Path, bytes: &[u8]) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .dma_open(path)
        .await
        .map_err(rt_at(path))?;
    let written = async {
        if !bytes.is_empty() {
            let aligned = align_up(bytes.len() as u64) as usize;
            let mut buffer = file.alloc_dma_buffer(aligned);
            buffer.as_bytes_mut().fill(0);
            buffer.as_bytes_mut()[..bytes.len()].copy_from_slice(bytes);
            write_all(&file, path, buffer, 0).await?;
            file.truncate(bytes.len() as u64)
                .await
                .map_err(rt_at(path))?;
        }
        file.fdatasync().await.map_err(rt_at(path))
    }
    .await;
    // Closed on failure too (a full disk fails here on every retry).
    let closed = file.close().await.map_err(rt_at(path));
    written.and(closed)
}

async fn write_indexes(dir: &Path, segment: &SegmentMeta) -> Result<()> {
    assert!(
        segment.sealed,
        "index files are written for sealed segments"
    );
    let index = dir.join(segment_file_name(segment.base, SegmentFile::Index));
    write_small(&index, &segment.offset_index.encode()).await?;
    let time = dir.join(segment_file_name(segment.base, SegmentFile::TimeIndex));
    write_small(&time, &segment.time_index.encode()).await
}

/// A sealed segment on open: trusted through its index files, or scanned
/// (and its index files rewritten) when they are missing or inconsistent.
/// Also returns damage found in the checked tail when valid batches after
/// it still end the segment where the index says.
async fn open_sealed(
    dir: &Path,
    file: &DmaFile,
    path: &Path,
    base: Offset,
    next: Offset,
    config: &LogConfig,
) -> Result<(SegmentMeta, Option<Damage>)> {
    let file_len = file.file_size().await.map_err(rt_at(path))?;
    let index = read_small(&dir.join(segment_file_name(base, SegmentFile::Index))).await?;
    let time = read_small(&dir.join(segment_file_name(base, SegmentFile::TimeIndex))).await?;
    let relative_next = next.get().saturating_sub(base.get());
    let decoded = index
        .and_then(|i| OffsetIndex::decode(&i, file_len))
        .zip(time.and_then(|t| TimeIndex::decode(&t, relative_next)));
    if let Some((offset_index, time_index)) = decoded.filter(|_| next >= base) {
        let meta = SegmentMeta::sealed_from_indexes(base, next, file_len, offset_index, time_index);
        // Trust the index, but check the batches after its last entry end
        // exactly at the file end, at the next segment's base.
        let (offset, position) = meta.last_indexed();
        let window_pos = align_down(position);
        let window = if file_len > window_pos {
            let read = file
                .read_at_aligned(window_pos, (align_up(file_len) - window_pos) as usize)
                .await
                .map_err(rt_at(path))?;
            read.to_vec()
        } else {
            Vec::new()
        };
        match verify_tail(&window, window_pos, position, offset, file_len) {
            Ok(end) if end == next => return Ok((meta, None)),
            Ok(_) => {}
            Err((bad, lost_from, _)) => {
                // Damage in the tail, and what follows it is either nothing
                // valid (the offsets up to the next segment are lost) or
                // valid batches ending where the next segment starts: the
                // index is right, reads serve around the damage and fail
                // inside it. Anything else is rebuilt by the scan below.
                let damage =
                    salvage_file(file, path, file_len, base, bad, lost_from, file_len, config)
                        .await?
                        .0;
                if damage.resume.is_none() || damage.valid_end == next {
                    return Ok((meta, Some(damage)));
                }
            }
        }
    }
    tracing::info!(segment = %path.display(), "rebuilding index files by a scan");
    let scanner = SegmentScanner::new(base, config.index_interval_bytes);
    let (mut meta, end) = scan_file(
        file,
        path,
        file_len,
        scanner,
        ScanLimit::Position(file_len),
        config,
    )
    .await?;
    check_padding(file, path, file_len, meta.bytes, 0, end, config).await?;
    if meta.next != next {
        return Err(StorageError::Inconsistent {
            dir: dir.to_owned(),
            reason: format!(
                "segment {base} ends at offset {} but the next starts at {next}",
                meta.next
            ),
        });
    }
    meta.seal();
    write_indexes(dir, &meta).await?;
    Ok((meta, None))
}

/// The bytes of a file a recovery scan looks at, read in aligned chunks:
/// what was verified is dropped, the block the next batch starts in kept.
#[derive(Default)]
struct ScanWindow {
    /// File position of `bytes[0]` (block aligned).
    pos: u64,
    bytes: Vec<u8>,
}

/// What [`ScanWindow::fill`] did.
enum Fill {
    /// The window already reached the bytes asked for.
    Enough,
    /// Read more, starting at file position `at`.
    Read { at: u64 },
    /// The file ended at `at` before the bytes asked for.
    Eof { at: u64 },
}

impl ScanWindow {
    fn end(&self) -> u64 {
        self.pos + self.bytes.len() as u64
    }

    /// Drops what lies before `position`'s block, then reads until the
    /// window reaches `need_end` (one aligned read).
    async fn fill(
        &mut self,
        file: &DmaFile,
        path: &Path,
        position: u64,
        need_end: u64,
    ) -> Result<Fill> {
        let keep_from = align_down(position);
        if keep_from > self.pos {
            let drop_len = ((keep_from - self.pos) as usize).min(self.bytes.len());
            self.bytes.drain(..drop_len);
            self.pos = keep_from;
        }
        let at = self.end();
        if at >= need_end {
            return Ok(Fill::Enough);
        }
        let read = file
            .read_at_aligned(at, (align_up(need_end) - at) as usize)
            .await
            .map_err(rt_at(path))?;
        if read.is_empty() {
            return Ok(Fill::Eof { at });
        }
        self.bytes.extend_from_slice(&read);
        Ok(Fill::Read { at })
    }
}

/// How a scan ended: where, and why (`None`: zero padding or end of file).
type ScanEnd = Option<CorruptionKind>;

/// Runs a [`SegmentScanner`] over a file with chunked aligned reads.
async fn scan_file(
    file: &DmaFile,
    path: &Path,
    file_len: u64,
    mut scanner: SegmentScanner,
    limit: ScanLimit,
    config: &LogConfig,
) -> Result<(SegmentMeta, ScanEnd)> {
    let chunk = config.read_chunk_bytes as u64;
    let mut window = ScanWindow::default();
    let mut want = chunk;
    loop {
        let position = scanner.position();
        if position >= file_len {
            return Ok((scanner.finish(), None));
        }
        let need_end = (position + want).min(file_len);
        if let Fill::Eof { at } = window.fill(file, path, position, need_end).await? {
            return Err(StorageError::Inconsistent {
                dir: path.to_owned(),
                reason: format!("short read at {at} of a {file_len}-byte file"),
            });
        }
        let (window_pos, window) = (window.pos, &window.bytes);
        match scanner.scan(window, window_pos, limit) {
            ScanStep::Limit => return Ok((scanner.finish(), None)),
            ScanStep::Stop { kind, .. } => return Ok((scanner.finish(), kind)),
            ScanStep::NeedMore { from, len } => {
                if from + len as u64 > file_len {
                    // The file ends inside this batch (or header).
                    let rest = &window[(from - window_pos) as usize..];
                    let torn = rest.iter().any(|&b| b != 0);
                    let kind = torn.then_some(CorruptionKind::PastEnd { len });
                    return Ok((scanner.finish(), kind));
                }
                want = (len as u64).max(chunk);
            }
        }
    }
}

/// The one ERROR a damaged range gets, when first found.
fn log_damage(path: &Path, damage: &Damage, kind: Option<&CorruptionKind>) {
    tracing::error!(
        segment = %path.display(),
        bytes = ?(damage.bytes_start..damage.bytes_end),
        lost_from = %damage.lost_from,
        resume = ?damage.resume.map(|(_, offset)| offset.get()),
        kind = ?kind.map(ToString::to_string),
        "damaged data in a segment: reads of the damaged offsets fail with a \
         corrupt-data error, batches before and after it are served; restore \
         the partition from a copy (or, broker stopped, accept the loss with \
         `fjord repair --truncate-at`)"
    );
}

/// Cuts a segment after its valid data: the tail block is rewritten with
/// zeros after `data_end`, the rest of the file dropped (it reads as zeros
/// until the zero-fill task prepares it again). Returns the bytes of the
/// partial tail block before `data_end`.
async fn cut_after(file: &DmaFile, path: &Path, file_len: u64, data_end: u64) -> Result<Vec<u8>> {
    let tail_start = align_down(data_end);
    let tail_len = (data_end - tail_start) as usize;
    let mut tail = vec![0u8; tail_len];
    if tail_len > 0 {
        let read = file
            .read_at_aligned(tail_start, BLOCK_BYTES as usize)
            .await
            .map_err(rt_at(path))?;
        let Some(head) = read.get(..tail_len) else {
            return Err(StorageError::Inconsistent {
                dir: path.to_owned(),
                reason: format!("{} shrank during recovery", path.display()),
            });
        };
        tail.copy_from_slice(head);
    }
    if file_len > align_up(data_end) || file_len % BLOCK_BYTES != 0 {
        if tail_len > 0 {
            let mut block = file.alloc_dma_buffer(BLOCK_BYTES as usize);
            block.as_bytes_mut().fill(0);
            block.as_bytes_mut()[..tail_len].copy_from_slice(&tail);
            write_all(file, path, block, tail_start).await?;
        }
        file.truncate(align_up(data_end))
            .await
            .map_err(rt_at(path))?;
        file.fdatasync().await.map_err(rt_at(path))?;
    }
    Ok(tail)
}

/// Runs a [`SalvageScanner`] from `position` (where a batch with base
/// offset `lost_from` failed verification) to `end` with chunked reads.
/// Also tells whether any byte it read at or past `padding_from` is
/// non-zero.
#[allow(clippy::too_many_arguments)]
async fn salvage_file(
    file: &DmaFile,
    path: &Path,
    end: u64,
    segment_base: Offset,
    position: u64,
    lost_from: Offset,
    padding_from: u64,
    config: &LogConfig,
) -> Result<(Damage, bool)> {
    let mut garbage = false;
    let chunk = config.read_chunk_bytes as u64;
    let mut scanner = SalvageScanner::new(segment_base, position, lost_from);
    let mut window = ScanWindow::default();
    let mut want = chunk;
    loop {
        let position = scanner.position();
        let need_end = (position + want).min(end);
        match window.fill(file, path, position, need_end).await? {
            Fill::Enough => {}
            Fill::Eof { at } => return Ok((scanner.finish(at), garbage)),
            Fill::Read { at } => {
                let read = &window.bytes[(at - window.pos) as usize..];
                let skip = padding_from.saturating_sub(at) as usize;
                garbage |= read.get(skip..).is_some_and(|r| r.iter().any(|&b| b != 0));
            }
        }
        match scanner.scan(&window.bytes, window.pos, end) {
            SalvageStep::Done => {
                // The rest of the file was not needed by the scan: check
                // its padding too.
                let mut at = window.end();
                while at < end && !garbage {
                    let len = (align_up(end) - at).min(config.read_chunk_bytes as u64);
                    let read = file
                        .read_at_aligned(at, len as usize)
                        .await
                        .map_err(rt_at(path))?;
                    if read.is_empty() {
                        break;
                    }
                    let skip = padding_from.saturating_sub(at) as usize;
                    garbage |= read.get(skip..).is_some_and(|r| r.iter().any(|&b| b != 0));
                    at += read.len() as u64;
                }
                return Ok((scanner.finish(end), garbage));
            }
            SalvageStep::NeedMore { len, .. } => want = (len as u64).max(chunk),
        }
    }
}

/// What [`repair_truncate`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repaired {
    /// The log end after the repair: the next offset a produce gets.
    pub log_end: Offset,
    /// Segments deleted whole.
    pub segments_removed: Vec<Offset>,
    /// Bytes cut from the end of the kept segment (damage, the batches
    /// after it, zero padding).
    pub bytes_cut: u64,
}

/// The operator's explicit acceptance of a loss (`fjord repair
/// --truncate-at`): everything at and after `offset` in the partition
/// directory `dir` goes (whole batches: a batch holding `offset` goes
/// entirely), so the log opens again with its end at or below `offset`.
/// Refused when damaged data lies before `offset`, which would still stop
/// the log from opening. The log must not be open (the broker stopped).
pub async fn repair_truncate(dir: &Path, offset: Offset, config: &LogConfig) -> Result<Repaired> {
    config.validate()?;
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(std_io(dir))? {
        let entry = entry.map_err(std_io(dir))?;
        if let Some((base, SegmentFile::Log)) =
            entry.file_name().to_str().and_then(parse_segment_file_name)
        {
            bases.push(base);
        }
    }
    bases.sort();
    let inconsistent = |reason: String| StorageError::Inconsistent {
        dir: dir.to_owned(),
        reason,
    };
    let Some(&first) = bases.first() else {
        return Err(inconsistent("no segment files".to_owned()));
    };
    if offset < first {
        return Err(inconsistent(format!(
            "offset {offset} is below the log start {first}"
        )));
    }
    let keep = bases.partition_point(|&b| b <= offset) - 1;
    let base = bases[keep];
    let path = dir.join(segment_file_name(base, SegmentFile::Log));
    let file = open_rw(&path).await?;
    let file_len = file.file_size().await.map_err(rt_at(&path))?;
    let scanner = SegmentScanner::new(base, config.index_interval_bytes);
    let (meta, _) = scan_file(
        &file,
        &path,
        file_len,
        scanner,
        ScanLimit::Offset(offset),
        config,
    )
    .await?;
    if meta.next < offset && meta.bytes < file_len {
        let damage = salvage_file(
            &file, &path, file_len, base, meta.bytes, meta.next, file_len, config,
        )
        .await?
        .0;
        if damage.resume.is_some() {
            return Err(inconsistent(format!(
                "{damage}: data before offset {offset} is damaged; truncate at {} or lower",
                meta.next
            )));
        }
    }
    let mut segments_removed = Vec::new();
    for &later in bases[keep + 1..].iter().rev() {
        for kind in [SegmentFile::Log, SegmentFile::Index, SegmentFile::TimeIndex] {
            remove_if_exists(&dir.join(segment_file_name(later, kind)))?;
        }
        segments_removed.push(later);
    }
    // The kept segment becomes the active one, which has no index files.
    for kind in [SegmentFile::Index, SegmentFile::TimeIndex] {
        remove_if_exists(&dir.join(segment_file_name(base, kind)))?;
    }
    cut_after(&file, &path, file_len, meta.bytes).await?;
    file.close().await.map_err(rt_at(&path))?;
    sync_dir(dir).await?;
    Ok(Repaired {
        log_end: meta.next,
        segments_removed,
        bytes_cut: file_len.saturating_sub(meta.bytes),
    })
}

/// After the valid data ends at `data_end`, bytes up to `data_end +
/// allowance` may be a torn write; anything non-zero past that is data the
/// scan could not reach, so corruption in the middle of the segment.
async fn check_padding(
    file: &DmaFile,
    path: &Path,
    file_len: u64,
    data_end: u64,
    allowance: u64,
    end: ScanEnd,
    config: &LogConfig,
) -> Result<()> {
    let from = align_up(data_end + allowance);
    let chunk = config.read_chunk_bytes as u64;
    let mut position = from;
    // The partial block at the boundary, when the allowance is zero,
    // must be zero after the data too.
    if allowance == 0 && data_end % BLOCK_BYTES != 0 && data_end < file_len {
        let read = file
            .read_at_aligned(align_down(data_end), BLOCK_BYTES as usize)
            .await
            .map_err(rt_at(path))?;
        let skip = (data_end % BLOCK_BYTES) as usize;
        if read
            .get(skip..)
            .is_some_and(|rest| rest.iter().any(|&b| b != 0))
        {
            return Err(corrupt(path, data_end, end));
        }
    }
    while position < file_len {
        let want = chunk.min(align_up(file_len - position));
        let read = file
            .read_at_aligned(position, want as usize)
            .await
            .map_err(rt_at(path))?;
        if read.is_empty() {
            break;
        }
        if read.iter().any(|&b| b != 0) {
            return Err(corrupt(path, data_end, end));
        }
        position += read.len() as u64;
    }
    Ok(())
}

fn corrupt(path: &Path, position: u64, end: ScanEnd) -> StorageError {
    StorageError::Corrupt {
        segment: path.to_owned(),
        position,
        kind: end.unwrap_or(CorruptionKind::DataAfterPadding),
    }
}
