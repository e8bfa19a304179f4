//! The leader-epoch cache of one partition replica (KIP-101/279), sans-IO:
//! which leader epoch wrote which range of the log, as ordered
//! (epoch → start offset) entries; the answer to `OffsetForLeaderEpoch`
//! ([`LeaderEpochCache::end_offset_for`]); the follower's decision of where
//! to truncate a divergent tail ([`truncation_step`]); and the encoding of
//! the `leader-epoch-checkpoint` file ([`LeaderEpochCache::encode`],
//! [`LeaderEpochCache::decode`]).
//!
//! One cache lives beside each partition's log on its owning shard. The
//! partition manager drives it (issue 14, not wired yet): it assigns the
//! epoch of every appended batch ([`LeaderEpochCache::assign`], also the
//! new leader's epoch at its log end when it takes over), cuts it when the
//! log is truncated or retention moves the log start, and writes the
//! checkpoint through [`super::epochs_file`] on glommio's blocking pool.
//! No files, no clock here: the caller passes offsets in.
//!
//! The rules follow Kafka's `LeaderEpochFileCache` so that a Kafka client's
//! `OffsetForLeaderEpoch` (api 23) sees the answers it expects.

use fjord_schema::{LeaderEpoch, Offset};

#[cfg(test)]
mod tests;

/// One entry: `epoch` led the log from `start_offset` (until the next
/// entry's start, or the log end for the latest one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: LeaderEpoch,
    pub start_offset: Offset,
}

/// An answer to `OffsetForLeaderEpoch`: the largest epoch at or below the
/// requested one and the offset where it ended (exclusive). Kafka's
/// `(UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)` is `None` where one is
/// returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEndOffset {
    pub epoch: LeaderEpoch,
    pub end_offset: Offset,
}

/// A partition replica's leader-epoch cache: entries ordered by epoch,
/// both epochs and start offsets strictly increasing (an invariant every
/// method keeps and [`LeaderEpochCache::decode`] checks).
///
/// Its size is the number of leader changes the retained log saw; retention
/// ([`LeaderEpochCache::truncate_from_start`]) drops the entries of deleted
/// segments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    entries: Vec<EpochEntry>,
}

/// Version of the checkpoint's text format (Kafka's is 0 too).
pub const CHECKPOINT_VERSION: u32 = 0;

/// Why checkpoint bytes are not a valid cache.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("leader-epoch checkpoint is not UTF-8 text")]
    NotText,
    #[error("leader-epoch checkpoint line {line}: {what}")]
    BadLine { line: usize, what: &'static str },
    #[error("leader-epoch checkpoint has version {0}, expected {CHECKPOINT_VERSION}")]
    Version(u32),
    #[error("leader-epoch checkpoint says {expected} entries but holds {found}")]
    Count { expected: u64, found: u64 },
    #[error("leader-epoch checkpoint line {line}: epochs and start offsets must increase")]
    NotIncreasing { line: usize },
}

impl LeaderEpochCache {
    /// An empty cache (a new replica, or one whose checkpoint is missing
    /// and whose log is empty).
    pub fn new() -> LeaderEpochCache {
        LeaderEpochCache::default()
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The newest entry.
    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// The oldest entry.
    pub fn earliest(&self) -> Option<EpochEntry> {
        self.entries.first().copied()
    }

    /// Records that `epoch` writes the log from `start_offset`; returns
    /// whether the cache changed (and so the checkpoint must be written).
    ///
    /// As Kafka: the latest epoch again at its start offset or later
    /// changes nothing; otherwise every entry whose epoch is at or above
    /// `epoch`, or whose start is at or after `start_offset`, is removed
    /// from the end first (entries that no longer describe the log: the log
    /// was written by `epoch` at `start_offset`, so nothing after it can
    /// remain), then the entry is added. The log is the authority; a cache
    /// that drifted from it (a checkpoint newer than a log whose unflushed
    /// tail was lost) is corrected by the next append.
    pub fn assign(&mut self, epoch: LeaderEpoch, start_offset: Offset) -> bool {
        if let Some(latest) = self.latest() {
            if latest.epoch == epoch && start_offset >= latest.start_offset {
                return false;
            }
        }
        while let Some(last) = self.entries.last() {
            if last.epoch >= epoch || last.start_offset >= start_offset {
                self.entries.pop();
            } else {
                break;
            }
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// `OffsetForLeaderEpoch` for `requested` on a replica whose log ends
    /// at `log_end`, exactly as Kafka's `LeaderEpochFileCache.endOffsetFor`:
    /// - `requested` is the latest epoch: `(requested, log_end)`;
    /// - older than the latest: the largest epoch at or below it and the
    ///   start of the next larger epoch; when it is older than every entry
    ///   (the log that held it was deleted), `(requested, first start)` so
    ///   a follower replicates from the start of what is left;
    /// - newer than the latest, or an empty cache: `None` (undefined).
    pub fn end_offset_for(
        &self,
        requested: LeaderEpoch,
        log_end: Offset,
    ) -> Option<EpochEndOffset> {
        let latest = self.latest()?;
        if requested == latest.epoch {
            return Some(EpochEndOffset {
                epoch: requested,
                end_offset: log_end,
            });
        }
        // The first entry newer than `requested`.
        let higher = self.entries.partition_point(|e| e.epoch <= requested);
        let next = self.entries.get(higher)?;
        let epoch = match higher.checked_sub(1) {
            Some(floor) => self.entries[floor].epoch,
            None => requested,
        };
        Some(EpochEndOffset {
            epoch,
            end_offset: next.start_offset,
        })
    }

    /// The follower truncated its log to end at `end`: drops every entry
    /// starting at or after it (Kafka's `truncateFromEnd`).
    pub fn truncate_from_end(&mut self, end: Offset) {
        let keep = self.entries.partition_point(|e| e.start_offset < end);
        self.entries.truncate(keep);
    }

    /// Retention moved the log start to `start`: the entries starting at or
    /// before it are replaced by the last of them, now starting at `start`
    /// (Kafka's `truncateFromStart`).
    pub fn truncate_from_start(&mut self, start: Offset) {
        let covered = self.entries.partition_point(|e| e.start_offset <= start);
        let Some(last) = covered.checked_sub(1) else {
            return;
        };
        let epoch = self.entries[last].epoch;
        self.entries.drain(..last);
        self.entries[0] = EpochEntry {
            epoch,
            start_offset: start,
        };
    }

    /// Cuts the cache to a log holding `[log_start, log_end)`, as on open:
    /// a checkpoint written before the log's unflushed tail was lost, or
    /// before retention deleted segments, describes more than the log.
    pub fn clamp_to_log(&mut self, log_start: Offset, log_end: Offset) {
        self.truncate_from_end(log_end);
        self.truncate_from_start(log_start);
    }

    /// Rebuilds the cache from the log's batch headers, oldest first, as
    /// `(base offset, leader epoch)`: for a partition whose checkpoint is
    /// missing or damaged.
    pub fn rebuild_from_batches(
        batches: impl IntoIterator<Item = (Offset, LeaderEpoch)>,
    ) -> LeaderEpochCache {
        let mut cache = LeaderEpochCache::new();
        for (base_offset, epoch) in batches {
            cache.assign(epoch, base_offset);
        }
        cache
    }

    /// The checkpoint file's content, Kafka's text format: the version, the
    /// number of entries, then one `epoch start_offset` line per entry.
    pub fn encode(&self) -> Vec<u8> {
        let mut text = format!("{CHECKPOINT_VERSION}\n{}\n", self.entries.len());
        for entry in &self.entries {
            text.push_str(&format!("{} {}\n", entry.epoch, entry.start_offset));
        }
        text.into_bytes()
    }

    /// Parses checkpoint bytes written by [`LeaderEpochCache::encode`].
    /// Anything else (a torn or garbage file, entries out of order, a count
    /// that does not match) is an error, never a panic; the caller then
    /// rebuilds the cache from the log.
    pub fn decode(bytes: &[u8]) -> Result<LeaderEpochCache, CheckpointError> {
        let text = std::str::from_utf8(bytes).map_err(|_| CheckpointError::NotText)?;
        let body = text.strip_suffix('\n').ok_or(CheckpointError::BadLine {
            line: text.lines().count().max(1),
            what: "missing final newline",
        })?;
        let mut lines = body.split('\n');
        let version: u32 = parse_number(lines.next(), 1, "bad version")?;
        if version != CHECKPOINT_VERSION {
            return Err(CheckpointError::Version(version));
        }
        let expected: u64 = parse_number(lines.next(), 2, "bad entry count")?;
        let mut cache = LeaderEpochCache::new();
        let mut found = 0u64;
        for (index, line) in lines.enumerate() {
            let line_no = index + 3;
            found += 1;
            if found > expected {
                continue;
            }
            let mut fields = line.split(' ');
            let epoch: u32 = parse_number(fields.next(), line_no, "bad epoch")?;
            let start: u64 = parse_number(fields.next(), line_no, "bad start offset")?;
            if fields.next().is_some() {
                return Err(CheckpointError::BadLine {
                    line: line_no,
                    what: "more than two fields",
                });
            }
            if let Some(last) = cache.latest() {
                if epoch <= last.epoch.get() || start <= last.start_offset.get() {
                    return Err(CheckpointError::NotIncreasing { line: line_no });
                }
            }
            cache.entries.push(EpochEntry {
                epoch: LeaderEpoch(epoch),
                start_offset: Offset(start),
            });
        }
        if found != expected {
            return Err(CheckpointError::Count { expected, found });
        }
        Ok(cache)
    }
}

/// Parses one decimal field (digits only: no sign, no spaces).
fn parse_number<T: std::str::FromStr>(
    field: Option<&str>,
    line: usize,
    what: &'static str,
) -> Result<T, CheckpointError> {
    field
        .filter(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|f| f.parse().ok())
        .ok_or(CheckpointError::BadLine { line, what })
}

/// What a follower knows of its own log when it decides where to truncate.
#[derive(Clone, Copy, Debug)]
pub struct FollowerLog<'a> {
    pub cache: &'a LeaderEpochCache,
    /// Its log end offset.
    pub log_end: Offset,
    /// Its high watermark (what it last learned from a leader): the
    /// fallback truncation point when epochs cannot tell (as Kafka).
    pub high_watermark: Offset,
}

/// The follower's next step in finding its divergence point with the
/// leader (KIP-279), driven by the replica fetcher before it fetches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TruncationStep {
    /// Send `OffsetForLeaderEpoch` for `epoch` (the follower's latest) to
    /// the leader, then call [`truncation_step`] with the answer.
    Ask(LeaderEpoch),
    /// Truncate the log to end at `offset` (a no-op when it already does)
    /// and start fetching there: the logs agree up to it.
    TruncateTo(Offset),
    /// Truncate to `truncate_to` (everything after it is surely divergent)
    /// and ask the leader again for `epoch`, the follower's latest epoch
    /// after that truncation: the leader answered an epoch the follower
    /// never saw, so one round did not find the divergence point. Each
    /// round asks for a strictly older epoch, so the exchange ends.
    AskAgain {
        truncate_to: Offset,
        epoch: LeaderEpoch,
    },
}

/// The leader's answer cannot come from a correct leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TruncationError {
    #[error("leader answered epoch {answered} for requested epoch {asked}")]
    AnswerNewerThanAsked {
        asked: LeaderEpoch,
        answered: LeaderEpoch,
    },
}

/// The first step of a replica that became follower: ask for its latest
/// epoch, or, without any epoch (an empty log, or a cache that was lost),
/// truncate to its high watermark as Kafka does.
pub fn first_truncation_step(follower: FollowerLog<'_>) -> TruncationStep {
    match follower.cache.latest() {
        Some(latest) => TruncationStep::Ask(latest.epoch),
        None => TruncationStep::TruncateTo(follower.high_watermark.min(follower.log_end)),
    }
}

/// The follower's decision on the leader's `answer` to its
/// `OffsetForLeaderEpoch` for `asked`, exactly as Kafka's
/// `AbstractFetcherThread.getOffsetTruncationState`:
/// - undefined (`asked` is newer than every epoch the leader recorded, or
///   the leader's cache is empty): truncate to the high watermark;
/// - the answered epoch is one the follower has (its floor of the answered
///   epoch is that epoch): both logs agree up to the smaller of the two
///   ends of it, truncate there;
/// - the follower's floor is an older epoch (the leader answered an epoch
///   the follower never saw): truncate to where that older epoch ends on
///   the follower and ask again for it;
/// - the follower has no epoch at or below the answer: truncate to the
///   leader's end offset.
///
/// Every truncation point is at most the follower's log end.
pub fn truncation_step(
    follower: FollowerLog<'_>,
    asked: LeaderEpoch,
    answer: Option<EpochEndOffset>,
) -> Result<TruncationStep, TruncationError> {
    let own_end = follower.log_end;
    let Some(answer) = answer else {
        return Ok(TruncationStep::TruncateTo(
            follower.high_watermark.min(own_end),
        ));
    };
    if answer.epoch > asked {
        return Err(TruncationError::AnswerNewerThanAsked {
            asked,
            answered: answer.epoch,
        });
    }
    let Some(own) = follower.cache.end_offset_for(answer.epoch, own_end) else {
        return Ok(TruncationStep::TruncateTo(answer.end_offset.min(own_end)));
    };
    if own.epoch == answer.epoch {
        return Ok(TruncationStep::TruncateTo(
            own.end_offset.min(answer.end_offset).min(own_end),
        ));
    }
    let truncate_to = own.end_offset.min(own_end);
    let mut after = follower.cache.clone();
    after.truncate_from_end(truncate_to);
    Ok(match after.latest() {
        Some(latest) if latest.epoch < asked => TruncationStep::AskAgain {
            truncate_to,
            epoch: latest.epoch,
        },
        _ => TruncationStep::TruncateTo(truncate_to),
    })
}
