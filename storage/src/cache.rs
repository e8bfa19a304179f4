//! The per-shard batch cache: recent batches of every log on the shard, so
//! consumers at the tail are served from memory and never touch the disk.
//!
//! Lives on: every shard (one instance, shared by the shard's logs through
//! `Rc<RefCell<_>>`; shards share nothing). Owns: `Bytes` handles of
//! batches, at most `CacheConfig::bytes_max` bytes of them. Lifecycle:
//! created with the shard, logs register on open and deregister on close;
//! appends insert, truncation and retention remove, inserts evict the
//! oldest batches (insertion order, which for logs is age order) to stay
//! under the budget.

use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::Bytes;
use fjord_schema::Offset;

use crate::config::CacheConfig;

/// A log's handle in the cache, unique on its shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheLogId(u64);

#[derive(Debug)]
struct Entry {
    next: Offset,
    batch: Bytes,
}

/// Hit and miss counters for the metrics endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub bytes: usize,
    pub batches: usize,
}

#[derive(Debug)]
pub struct BatchCache {
    config: CacheConfig,
    logs: HashMap<CacheLogId, BTreeMap<Offset, Entry>>,
    /// Insertion order; may hold keys already removed (skipped on eviction
    /// and compacted when they dominate).
    order: VecDeque<(CacheLogId, Offset)>,
    next_id: u64,
    stats: CacheStats,
}

impl BatchCache {
    pub fn new(config: CacheConfig) -> BatchCache {
        BatchCache {
            config,
            logs: HashMap::new(),
            order: VecDeque::new(),
            next_id: 0,
            stats: CacheStats::default(),
        }
    }

    pub fn register(&mut self) -> CacheLogId {
        let id = CacheLogId(self.next_id);
        self.next_id += 1;
        self.logs.insert(id, BTreeMap::new());
        id
    }

    pub fn deregister(&mut self, log: CacheLogId) {
        if let Some(batches) = self.logs.remove(&log) {
            self.stats.batches -= batches.len();
            self.stats.bytes -= batches.values().map(|e| e.batch.len()).sum::<usize>();
        }
    }

    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Caches a batch the log just appended (`base..next`). Batches bigger
    /// than the per-batch limit are skipped.
    pub fn insert(&mut self, log: CacheLogId, base: Offset, next: Offset, batch: Bytes) {
        assert!(next > base, "empty batch range");
        let len = batch.len();
        if len > self.config.batch_bytes_max || len > self.config.bytes_max {
            return;
        }
        while self.stats.bytes + len > self.config.bytes_max {
            if !self.evict_one() {
                break;
            }
        }
        let Some(batches) = self.logs.get_mut(&log) else {
            panic!("insert into an unregistered log");
        };
        if let Some(old) = batches.insert(base, Entry { next, batch }) {
            self.stats.bytes -= old.batch.len();
            self.stats.batches -= 1;
        }
        self.stats.bytes += len;
        self.stats.batches += 1;
        self.order.push_back((log, base));
        if self.order.len() > 2 * self.stats.batches + 1024 {
            let logs = &self.logs;
            self.order
                .retain(|(log, base)| logs.get(log).is_some_and(|b| b.contains_key(base)));
        }
        assert!(
            self.stats.bytes <= self.config.bytes_max,
            "cache over budget"
        );
    }

    fn evict_one(&mut self) -> bool {
        while let Some((log, base)) = self.order.pop_front() {
            if let Some(entry) = self.logs.get_mut(&log).and_then(|b| b.remove(&base)) {
                self.stats.bytes -= entry.batch.len();
                self.stats.batches -= 1;
                self.stats.evictions += 1;
                return true;
            }
        }
        false
    }

    /// Contiguous cached batches starting with the one holding `offset`,
    /// stopping before `until`, within `max_bytes` (the first batch always).
    /// Empty on a miss.
    pub fn read(
        &mut self,
        log: CacheLogId,
        offset: Offset,
        until: Offset,
        max_bytes: usize,
    ) -> Vec<Bytes> {
        let mut out = Vec::new();
        let Some(batches) = self.logs.get(&log) else {
            return out;
        };
        let first = batches.range(..=offset).next_back();
        let Some((&base, entry)) = first.filter(|(_, e)| e.next > offset) else {
            self.stats.misses += 1;
            return out;
        };
        self.stats.hits += 1;
        if base >= until {
            return out;
        }
        let mut bytes = entry.batch.len();
        let mut expected = entry.next;
        out.push(entry.batch.clone());
        for (&base, entry) in batches.range(expected..) {
            if base != expected || base >= until || bytes + entry.batch.len() > max_bytes {
                break;
            }
            bytes += entry.batch.len();
            expected = entry.next;
            out.push(entry.batch.clone());
        }
        out
    }

    /// Drops a log's batches at or after `offset` (truncation).
    pub fn remove_from(&mut self, log: CacheLogId, offset: Offset) {
        let Some(batches) = self.logs.get_mut(&log) else {
            return;
        };
        // A batch holding `offset` goes too: truncation cuts whole batches.
        let from = batches
            .range(..=offset)
            .next_back()
            .filter(|(_, e)| e.next > offset)
            .map_or(offset, |(&base, _)| base);
        let removed = batches.split_off(&from);
        self.stats.batches -= removed.len();
        self.stats.bytes -= removed.values().map(|e| e.batch.len()).sum::<usize>();
    }

    /// Drops a log's batches below `offset` (retention).
    pub fn remove_below(&mut self, log: CacheLogId, offset: Offset) {
        let Some(batches) = self.logs.get_mut(&log) else {
            return;
        };
        let kept = batches.split_off(&offset);
        let removed = std::mem::replace(batches, kept);
        self.stats.batches -= removed.len();
        self.stats.bytes -= removed.values().map(|e| e.batch.len()).sum::<usize>();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(bytes_max: usize) -> BatchCache {
        BatchCache::new(CacheConfig {
            bytes_max,
            batch_bytes_max: bytes_max,
        })
    }

    #[test]
    fn serves_contiguous_batches_within_budget() {
        let mut c = cache(1000);
        let log = c.register();
        c.insert(log, Offset(0), Offset(5), Bytes::from(vec![1; 100]));
        c.insert(log, Offset(5), Offset(6), Bytes::from(vec![2; 100]));
        c.insert(log, Offset(6), Offset(9), Bytes::from(vec![3; 100]));
        let got = c.read(log, Offset(3), Offset(100), 250);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0][0], 1);
        assert_eq!(got[1][0], 2);
        assert_eq!(
            c.read(log, Offset(6), Offset(100), 1).len(),
            1,
            "first batch always"
        );
        assert_eq!(
            c.read(log, Offset(0), Offset(5), 1000).len(),
            1,
            "until bounds"
        );
        assert!(c.read(log, Offset(9), Offset(100), 1000).is_empty());
        assert_eq!(c.stats().misses, 1);
    }

    #[test]
    fn evicts_oldest_to_stay_in_budget() {
        let mut c = cache(250);
        let a = c.register();
        let b = c.register();
        c.insert(a, Offset(0), Offset(1), Bytes::from(vec![0; 100]));
        c.insert(b, Offset(0), Offset(1), Bytes::from(vec![0; 100]));
        c.insert(a, Offset(1), Offset(2), Bytes::from(vec![0; 100]));
        assert!(c.stats().bytes <= 250);
        assert!(
            c.read(a, Offset(0), Offset(9), 1000).is_empty(),
            "oldest evicted"
        );
        assert_eq!(c.read(b, Offset(0), Offset(9), 1000).len(), 1);
        c.insert(a, Offset(2), Offset(3), Bytes::from(vec![0; 1000]));
        assert_eq!(c.stats().batches, 2, "oversized batch not cached");
    }

    #[test]
    fn truncation_and_retention_remove_batches() {
        let mut c = cache(10_000);
        let log = c.register();
        for i in 0..10u64 {
            c.insert(
                log,
                Offset(i * 2),
                Offset(i * 2 + 2),
                Bytes::from(vec![0; 10]),
            );
        }
        c.remove_from(log, Offset(7));
        assert!(c.read(log, Offset(6), Offset(99), 99).is_empty());
        assert_eq!(c.read(log, Offset(4), Offset(99), 99).len(), 1);
        c.remove_below(log, Offset(4));
        assert!(c.read(log, Offset(2), Offset(99), 99).is_empty());
        assert_eq!(c.stats().batches, 1);
        c.deregister(log);
        assert_eq!(c.stats().bytes, 0);
    }
}
