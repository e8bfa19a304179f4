//! An in-memory replica log for the fetcher's tests (the core's
//! transcripts and the driver's glommio test): batches are opaque bytes
//! `"BASE-LAST@EPOCH"`, appended, truncated and flushed as
//! [`super::ReplicaLogs`] describes. Also the leader's log of those tests,
//! answering fetches and epoch queries.

use bytes::Bytes;
use fjord_schema::{ErrorCode, LeaderEpoch, Offset};

use super::{FollowerError, FollowerPosition};
use crate::partition::epochs::LeaderEpochCache;

/// One batch: offsets `base..=last` written at `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemBatch {
    pub base: u64,
    pub last: u64,
    pub epoch: u32,
}

impl MemBatch {
    pub fn bytes(self) -> Bytes {
        Bytes::from(format!("{}-{}@{}", self.base, self.last, self.epoch))
    }

    pub fn parse(bytes: &[u8]) -> Option<MemBatch> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (range, epoch) = text.split_once('@')?;
        let (base, last) = range.split_once('-')?;
        Some(MemBatch {
            base: base.parse().ok()?,
            last: last.parse().ok()?,
            epoch: epoch.parse().ok()?,
        })
    }
}

/// A log in memory.
#[derive(Debug, Clone, Default)]
pub struct MemLog {
    pub batches: Vec<MemBatch>,
    pub log_start: u64,
    pub log_end: u64,
    pub durable_end: u64,
    pub high_watermark: u64,
    pub epochs: LeaderEpochCache,
    pub flush_before_ack: bool,
}

impl MemLog {
    /// A log holding `batches` (contiguous from the first's base), all
    /// durable.
    pub fn with(batches: &[(u64, u64, u32)]) -> MemLog {
        let mut log = MemLog::default();
        if let Some(first) = batches.first() {
            log.log_start = first.0;
            log.log_end = first.0;
        }
        for &(base, last, epoch) in batches {
            log.push(MemBatch { base, last, epoch });
        }
        log.durable_end = log.log_end;
        log
    }

    fn push(&mut self, batch: MemBatch) {
        self.epochs
            .assign(LeaderEpoch(batch.epoch), Offset(batch.base));
        self.log_end = batch.last + 1;
        self.batches.push(batch);
    }

    pub fn position(&self) -> FollowerPosition {
        FollowerPosition {
            log_start: Offset(self.log_start),
            log_end: Offset(self.log_end),
            durable_end: Offset(self.durable_end),
            high_watermark: Offset(self.high_watermark),
            epochs: self.epochs.clone(),
            flush_before_ack: self.flush_before_ack,
        }
    }

    pub fn truncate(&mut self, end: u64) -> FollowerPosition {
        if end > self.log_end {
            self.batches.clear();
            self.epochs = LeaderEpochCache::new();
            self.log_start = end;
            self.log_end = end;
            self.durable_end = end;
            self.high_watermark = self.high_watermark.max(end);
        } else {
            self.batches.retain(|b| b.last < end);
            self.epochs.truncate_from_end(Offset(end));
            self.log_end = end;
            self.durable_end = self.durable_end.min(end);
            self.high_watermark = self.high_watermark.min(end);
        }
        self.position()
    }

    pub fn append(
        &mut self,
        batches: &[Bytes],
        high_watermark: u64,
        log_start: u64,
    ) -> Result<FollowerPosition, FollowerError> {
        for bytes in batches {
            let batch = MemBatch::parse(bytes)
                .ok_or_else(|| FollowerError::Diverged("not a batch".to_string()))?;
            if batch.base != self.log_end || batch.last < batch.base {
                return Err(FollowerError::Diverged(format!(
                    "batch {}-{} does not continue the log at {}",
                    batch.base, batch.last, self.log_end
                )));
            }
            self.push(batch);
        }
        self.high_watermark = high_watermark.min(self.log_end);
        self.log_start = self.log_start.max(log_start.min(self.log_end));
        Ok(self.position())
    }

    pub fn flush(&mut self) -> FollowerPosition {
        self.durable_end = self.log_end;
        self.position()
    }

    /// The leader's answer to a fetch at `offset`: an error, or its HW,
    /// log start and the batches from `offset` on.
    pub fn read(&self, offset: u64) -> Result<(u64, u64, Vec<Bytes>), ErrorCode> {
        if offset < self.log_start || offset > self.log_end {
            return Err(ErrorCode::OffsetOutOfRange);
        }
        let batches = self
            .batches
            .iter()
            .filter(|b| b.base >= offset)
            .map(|b| b.bytes())
            .collect();
        Ok((self.high_watermark, self.log_start, batches))
    }

    /// The leader's `OffsetForLeaderEpoch` answer: (epoch, end offset), -1
    /// for undefined.
    pub fn epoch_end(&self, epoch: u32) -> (i32, i64) {
        match self
            .epochs
            .end_offset_for(LeaderEpoch(epoch), Offset(self.log_end))
        {
            Some(end) => (end.epoch.get() as i32, end.end_offset.get() as i64),
            None => (-1, -1),
        }
    }

    /// The batches, as `base-last@epoch`.
    pub fn describe(&self) -> String {
        let batches: Vec<String> = self
            .batches
            .iter()
            .map(|b| format!("{}-{}@{}", b.base, b.last, b.epoch))
            .collect();
        format!(
            "[{}] start={} end={} durable={} hw={}",
            batches.join(" "),
            self.log_start,
            self.log_end,
            self.durable_end,
            self.high_watermark
        )
    }
}
