//! Every limit of the storage layer, in one place. The broker builds these
//! from its per-topic and per-shard configuration; nothing here is hidden in
//! a constant except the block size the disk format is built on.

use crate::error::{Result, StorageError};
use crate::layout::BLOCK_BYTES;

/// Durability policy of one topic, as in Kafka (`flush.messages`,
/// `flush.ms`) plus Fjord's "flush before ack" for `acks=all`.
///
/// The log itself only promises: after `append` the batch is in memory;
/// after `flush` everything appended before it is on stable storage. This
/// struct tells the broker *when* to call `flush`
/// ([`crate::PartitionLog::flush_due`] evaluates it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlushPolicy {
    /// Flush once this many records were appended since the last flush.
    /// `None`: no count trigger (Kafka's default of `Long.MAX_VALUE`).
    pub flush_messages: Option<u64>,
    /// Flush when the oldest unflushed append is this old.
    /// `None`: no time trigger.
    pub flush_ms: Option<u64>,
    /// Acknowledge `acks=all` produces only after their batch is flushed
    /// (group commit makes concurrent producers share one fdatasync).
    pub flush_before_ack: bool,
}

impl Default for FlushPolicy {
    fn default() -> Self {
        FlushPolicy {
            flush_messages: None,
            flush_ms: None,
            flush_before_ack: true,
        }
    }
}

/// Limits of one partition log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll to a new segment before one would grow past this
    /// (`segment.bytes`).
    pub segment_bytes_max: u64,
    /// Roll a non-empty segment whose first append is this old
    /// (`segment.ms`). `None`: no age trigger.
    pub segment_age_ms_max: Option<u64>,
    /// Delete sealed segments whose newest timestamp is older than this
    /// (`retention.ms`). `None`: keep forever.
    pub retention_ms: Option<u64>,
    /// Delete the oldest sealed segments while the log is bigger than this
    /// (`retention.bytes`). `None`: no size limit.
    pub retention_bytes: Option<u64>,
    /// Add a sparse index entry after this many bytes of batches
    /// (`index.interval.bytes`).
    pub index_interval_bytes: u64,
    /// Largest batch the log accepts (the broker's `message.max.bytes`).
    pub batch_bytes_max: usize,
    /// In-memory write buffer of the log: appended bytes not yet written.
    /// An append that does not fit waits for a flush (backpressure). This is
    /// also the most bytes that can be written but not yet fdatasynced at a
    /// crash, which recovery uses to tell a torn tail from corruption: keep
    /// it equal across restarts, or only raise it after a clean shutdown.
    pub write_buffer_bytes: usize,
    /// Zero-fill the active segment ahead of the writer in writes of this
    /// size (see "Zero-fill step size" in `docs/BENCHMARKS.md`).
    pub prepare_step_bytes: u64,
    /// Keep this many bytes zero-filled ahead of the write position.
    pub prepare_ahead_bytes: u64,
    /// Size of the reads recovery and cold reads issue at once.
    pub read_chunk_bytes: usize,
    /// Damaged ranges a log remembers (for reads past them and for
    /// `describe`); more are still logged and refused, not remembered.
    pub damaged_ranges_max: usize,
    /// When to flush (evaluated by the broker via `flush_due`).
    pub flush: FlushPolicy,
    /// After a failed write or fdatasync (a full disk) the log retries
    /// first after this long, then doubling...
    pub write_retry_backoff_ms_min: u64,
    /// ...up to this long between retries; it never gives up, so the
    /// partition heals whenever space comes back.
    pub write_retry_backoff_ms_max: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes_max: 1 << 30,
            segment_age_ms_max: Some(7 * 24 * 3600 * 1000),
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            index_interval_bytes: 4096,
            batch_bytes_max: 4 << 20,
            write_buffer_bytes: 8 << 20,
            prepare_step_bytes: 8 << 20,
            prepare_ahead_bytes: 32 << 20,
            read_chunk_bytes: 1 << 20,
            damaged_ranges_max: 64,
            flush: FlushPolicy::default(),
            write_retry_backoff_ms_min: 100,
            write_retry_backoff_ms_max: 5_000,
        }
    }
}

impl LogConfig {
    /// Checks the relations between limits; a broker refuses to start (or to
    /// create a topic) with a config that fails here.
    pub fn validate(&self) -> Result<()> {
        let fail = |reason: &str| Err(StorageError::Config(reason.to_owned()));
        let block = BLOCK_BYTES as usize;
        if self.segment_bytes_max < BLOCK_BYTES || self.segment_bytes_max > u64::from(u32::MAX) {
            return fail(
                "segment_bytes_max must be within [4096, 2^32 - 1] (index positions are u32)",
            );
        }
        if self.batch_bytes_max < fjord_schema::batch::BATCH_HEADER_LEN
            || self.batch_bytes_max > fjord_schema::batch::BATCH_LEN_MAX
        {
            return fail(
                "batch_bytes_max must hold a batch header and stay within the format limit",
            );
        }
        if (self.batch_bytes_max as u64) > self.segment_bytes_max {
            return fail("batch_bytes_max must not exceed segment_bytes_max");
        }
        if self.write_buffer_bytes < self.batch_bytes_max + 2 * block {
            return fail("write_buffer_bytes must hold one largest batch plus two blocks");
        }
        if self.write_buffer_bytes % block != 0 {
            return fail("write_buffer_bytes must be a multiple of 4096");
        }
        if self.prepare_step_bytes == 0 || self.prepare_step_bytes % BLOCK_BYTES != 0 {
            return fail("prepare_step_bytes must be a non-zero multiple of 4096");
        }
        if self.prepare_ahead_bytes < self.prepare_step_bytes {
            return fail("prepare_ahead_bytes must be at least prepare_step_bytes");
        }
        if self.read_chunk_bytes < block || self.read_chunk_bytes % block != 0 {
            return fail("read_chunk_bytes must be a non-zero multiple of 4096");
        }
        if self.write_retry_backoff_ms_min == 0
            || self.write_retry_backoff_ms_max < self.write_retry_backoff_ms_min
        {
            return fail(
                "write_retry_backoff_ms_min must be positive and at most write_retry_backoff_ms_max",
            );
        }
        if self.index_interval_bytes == 0 {
            return fail("index_interval_bytes must be positive");
        }
        if self.damaged_ranges_max == 0 {
            return fail("damaged_ranges_max must be positive");
        }
        Ok(())
    }
}

impl LogConfig {
    /// How long a log in write fault waits before its next retry, after
    /// `failed_retries` failed ones: the minimum, doubling per failure,
    /// capped at the maximum.
    pub fn write_retry_delay_ms(&self, failed_retries: u32) -> u64 {
        let factor = 1u64.checked_shl(failed_retries.min(63)).unwrap_or(u64::MAX);
        self.write_retry_backoff_ms_min
            .saturating_mul(factor)
            .min(self.write_retry_backoff_ms_max)
    }
}

/// Limits of the per-shard batch cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// Bytes of batches the cache holds at most (the shard's share of the
    /// broker memory budget for tail reads).
    pub bytes_max: usize,
    /// Batches larger than this are not cached (they would evict many
    /// small ones for one reader).
    pub batch_bytes_max: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            bytes_max: 256 << 20,
            batch_bytes_max: 8 << 20,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_retries_back_off_doubling_up_to_the_maximum() {
        let config = LogConfig {
            write_retry_backoff_ms_min: 100,
            write_retry_backoff_ms_max: 1_000,
            ..LogConfig::default()
        };
        let delays: Vec<u64> = (0..6).map(|n| config.write_retry_delay_ms(n)).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(config.write_retry_delay_ms(u32::MAX), 1_000);
        assert!(LogConfig {
            write_retry_backoff_ms_min: 0,
            ..config
        }
        .validate()
        .is_err());
        assert!(LogConfig {
            write_retry_backoff_ms_max: 99,
            ..config
        }
        .validate()
        .is_err());
    }
}
