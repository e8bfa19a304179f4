//! Which partition a record goes to, exactly as Kafka's Java client decides
//! for keyed records (`toPositive(murmur2(key)) % partitions`), so a key
//! lands on the same partition whichever client wrote it. Records without a
//! key stick to one partition until its batch is sent, then move on (Kafka's
//! sticky partitioner, KIP-480): fewer, fuller batches.

use std::collections::HashMap;

use fjord_schema::PartitionId;

/// Kafka's `Utils.murmur2`: 32-bit MurmurHash2 with seed `0x9747b28c`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    let length = data.len();
    // Java takes the length as an int; keys are far below 2 GiB.
    let mut h = SEED ^ (length as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Kafka's `Utils.toPositive`: clears the sign bit (not `abs`, which
/// overflows on `i32::MIN`).
pub fn to_positive(n: i32) -> u32 {
    (n & 0x7fff_ffff) as u32
}

/// The partition Kafka's default partitioner picks for `key`.
pub fn partition_for_key(key: &[u8], partitions: u32) -> PartitionId {
    assert!(partitions > 0, "a topic has at least one partition");
    PartitionId(to_positive(murmur2(key)) % partitions)
}

/// Picks partitions: by key hash, or sticky for keyless records.
#[derive(Debug)]
pub struct Partitioner {
    /// Keyless records of a topic go here until `batch_sent` moves them.
    sticky: HashMap<String, PartitionId>,
    /// xorshift state for choosing the next sticky partition; seeded so
    /// tests are deterministic.
    rng: u64,
}

impl Partitioner {
    pub fn new(seed: u64) -> Partitioner {
        Partitioner {
            sticky: HashMap::new(),
            rng: seed | 1,
        }
    }

    /// The partition for a record with `key` on a topic of `partitions`.
    pub fn partition(&mut self, topic: &str, key: Option<&[u8]>, partitions: u32) -> PartitionId {
        assert!(partitions > 0, "a topic has at least one partition");
        if let Some(key) = key {
            return partition_for_key(key, partitions);
        }
        if let Some(p) = self.sticky.get(topic) {
            if p.0 < partitions {
                return *p;
            }
        }
        let p = PartitionId(self.next_random() % partitions);
        self.sticky.insert(topic.to_owned(), p);
        p
    }

    /// A batch of `topic`/`partition` was closed for sending: keyless records
    /// move to another partition (a different one when there is a choice).
    pub fn batch_closed(&mut self, topic: &str, partition: PartitionId, partitions: u32) {
        if self.sticky.get(topic) != Some(&partition) {
            return;
        }
        let next = if partitions <= 1 {
            PartitionId(0)
        } else {
            // Uniform over the other partitions.
            let step = 1 + self.next_random() % (partitions - 1);
            PartitionId((partition.0 % partitions + step) % partitions)
        };
        self.sticky.insert(topic.to_owned(), next);
    }

    fn next_random(&mut self) -> u32 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        (x >> 32) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's own vectors (clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java,
    /// `testMurmur2`).
    #[test]
    fn murmur2_matches_kafka_reference_values() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(
                murmur2(key),
                expected,
                "key {:?}",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn to_positive_clears_only_the_sign_bit() {
        assert_eq!(to_positive(-1), 0x7fff_ffff);
        assert_eq!(to_positive(i32::MIN), 0);
        assert_eq!(to_positive(5), 5);
    }

    #[test]
    fn same_key_same_partition_and_kafka_mapping() {
        // toPositive(-973932308) = 1173551340; % 6 = 0.
        assert_eq!(partition_for_key(b"21", 6), PartitionId(1_173_551_340 % 6));
        let mut partitioner = Partitioner::new(1);
        for key in [&b"user-1"[..], b"user-2", b"", b"\xff\x00"] {
            let first = partitioner.partition("t", Some(key), 12);
            for _ in 0..10 {
                assert_eq!(partitioner.partition("t", Some(key), 12), first);
                partitioner.batch_closed("t", first, 12);
            }
        }
    }

    #[test]
    fn keys_spread_over_all_partitions() {
        let partitions = 8u32;
        let mut counts = vec![0u32; partitions as usize];
        for i in 0..8000 {
            let key = format!("key-{i}");
            counts[partition_for_key(key.as_bytes(), partitions).0 as usize] += 1;
        }
        // 1000 expected per partition; a decent hash stays well inside ±20%.
        for (p, count) in counts.iter().enumerate() {
            assert!((800..=1200).contains(count), "partition {p}: {count}");
        }
    }

    #[test]
    fn keyless_records_stick_until_the_batch_closes() {
        let mut partitioner = Partitioner::new(42);
        let first = partitioner.partition("t", None, 4);
        for _ in 0..5 {
            assert_eq!(partitioner.partition("t", None, 4), first);
        }
        // Closing another partition's batch does not move the sticky one.
        partitioner.batch_closed("t", PartitionId((first.0 + 1) % 4), 4);
        assert_eq!(partitioner.partition("t", None, 4), first);
        partitioner.batch_closed("t", first, 4);
        let second = partitioner.partition("t", None, 4);
        assert_ne!(second, first);
        assert!(second.0 < 4);
    }

    #[test]
    fn keyless_records_visit_every_partition_over_time() {
        let mut partitioner = Partitioner::new(7);
        let mut seen = [false; 5];
        for _ in 0..200 {
            let p = partitioner.partition("t", None, 5);
            seen[p.0 as usize] = true;
            partitioner.batch_closed("t", p, 5);
        }
        assert!(seen.iter().all(|s| *s), "{seen:?}");
    }

    #[test]
    fn sticky_partition_follows_a_shrunk_partition_count() {
        let mut partitioner = Partitioner::new(3);
        for _ in 0..50 {
            let p = partitioner.partition("t", None, 16);
            partitioner.batch_closed("t", p, 16);
            assert!(partitioner.partition("t", None, 2).0 < 2);
        }
    }
}
