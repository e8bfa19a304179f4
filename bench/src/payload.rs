//! Message contents: values cut from a pre-generated pool (random or
//! text-like) so generating a message costs one copy, and the send
//! timestamp written over the value's first 8 bytes.

use crate::cli::PayloadKind;

/// Bytes of the pool values are cut from.
const POOL_BYTES: usize = 8 * 1024 * 1024;
/// Bytes of the timestamp at the start of every value.
pub const TIMESTAMP_BYTES: usize = 8;

const WORDS: [&str; 24] = [
    "fjord",
    "broker",
    "partition",
    "offset",
    "segment",
    "leader",
    "replica",
    "batch",
    "record",
    "consumer",
    "producer",
    "topic",
    "shard",
    "index",
    "commit",
    "fetch",
    "append",
    "flush",
    "timestamp",
    "header",
    "value",
    "key",
    "the",
    "and",
];

/// xorshift64*: fast, seedable, good enough for payloads and offsets.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Values for one producer.
#[derive(Debug)]
pub struct Payloads {
    pool: Vec<u8>,
    message_bytes: usize,
    rng: Rng,
    value: Vec<u8>,
}

impl Payloads {
    pub fn new(kind: PayloadKind, message_bytes: usize, seed: u64) -> Payloads {
        assert!(message_bytes >= TIMESTAMP_BYTES);
        let mut rng = Rng::new(seed);
        let pool_bytes = POOL_BYTES.max(message_bytes * 2);
        let mut pool = Vec::with_capacity(pool_bytes + 64);
        match kind {
            PayloadKind::Random => {
                while pool.len() < pool_bytes {
                    pool.extend_from_slice(&rng.next_u64().to_le_bytes());
                }
            }
            PayloadKind::Compressible => {
                while pool.len() < pool_bytes {
                    let r = rng.next_u64();
                    pool.extend_from_slice(WORDS[(r % WORDS.len() as u64) as usize].as_bytes());
                    pool.push(if r >> 60 == 0 { b'\n' } else { b' ' });
                    if r >> 56 == 1 {
                        pool.extend_from_slice(format!("{}", r >> 40).as_bytes());
                    }
                }
            }
        }
        pool.truncate(pool_bytes);
        Payloads {
            pool,
            message_bytes,
            rng,
            value: vec![0; message_bytes],
        }
    }

    /// The next value, stamped with `timestamp_ns`.
    pub fn next(&mut self, timestamp_ns: u64) -> &[u8] {
        let start = (self.rng.next_u64() as usize) % (self.pool.len() - self.message_bytes + 1);
        self.value
            .copy_from_slice(&self.pool[start..start + self.message_bytes]);
        self.value[..TIMESTAMP_BYTES].copy_from_slice(&timestamp_ns.to_le_bytes());
        &self.value
    }
}

/// The send timestamp a value carries, if it is long enough.
pub fn timestamp_of(value: &[u8]) -> Option<u64> {
    let bytes: [u8; TIMESTAMP_BYTES] = value.get(..TIMESTAMP_BYTES)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// Keys `key-00000000` ... cycled in order, or none.
#[derive(Debug)]
pub struct Keys {
    count: Option<u64>,
    next: u64,
    key: Vec<u8>,
}

impl Keys {
    pub fn new(count: Option<u64>, producer: usize) -> Keys {
        Keys {
            count,
            next: producer as u64,
            key: Vec::with_capacity(16),
        }
    }

    pub fn next(&mut self) -> Option<&[u8]> {
        let count = self.count?;
        let n = self.next % count;
        self.next = self.next.wrapping_add(1);
        self.key.clear();
        self.key.extend_from_slice(format!("key-{n:08}").as_bytes());
        Some(&self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_carry_their_timestamp() {
        for kind in [PayloadKind::Random, PayloadKind::Compressible] {
            let mut payloads = Payloads::new(kind, 100, 7);
            let value = payloads.next(123_456_789).to_vec();
            assert_eq!(value.len(), 100);
            assert_eq!(timestamp_of(&value), Some(123_456_789));
        }
        assert_eq!(timestamp_of(b"short"), None);
    }

    #[test]
    fn keys_cycle() {
        let mut keys = Keys::new(Some(2), 0);
        let a = keys.next().map(<[u8]>::to_vec);
        let b = keys.next().map(<[u8]>::to_vec);
        let c = keys.next().map(<[u8]>::to_vec);
        assert_ne!(a, b);
        assert_eq!(a, c);
        assert_eq!(Keys::new(None, 0).next(), None);
    }
}
