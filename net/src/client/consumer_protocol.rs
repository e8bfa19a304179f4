//! The bytes a consumer puts in JoinGroup metadata (its subscription) and
//! the leader puts in SyncGroup (each member's assignment): Kafka's
//! `ConsumerProtocol` format, so native and Kafka consumers can one day
//! share a group. Big-endian; strings are i16 length + UTF-8; arrays are
//! i32 count; nullable bytes are i32 length (-1: null).
//!
//! ```text
//! Subscription: version i16 | topics [string] | user_data bytes?
//!               | v1+: owned_partitions [topic string, partitions [i32]]
//!               | v2+: generation_id i32 | v3+: rack_id string?
//! Assignment:   version i16 | [topic string, partitions [i32]] | user_data bytes?
//! ```
//!
//! We write Subscription v2 (owned partitions and generation, which the
//! cooperative-sticky assignor needs) and Assignment v0; readers accept
//! versions 0..=3 and, as Kafka does, read higher versions as the latest
//! known one (fields are only ever appended).

use std::collections::BTreeMap;

use super::assignor::{Subscription, TopicPartition};

/// Protocol type of consumer groups in JoinGroup.
pub const PROTOCOL_TYPE: &str = "consumer";

/// Kafka's longest topic name. Every string in these bytes is a topic
/// name; a longer one is refused, which also bounds what decoding
/// allocates: each partition (4 input bytes) holds its own copy of its
/// topic's name, so an unbounded name would make memory quadratic in the
/// input (a 32 KiB name and 1 MiB of partitions: 8 GiB in the group
/// leader).
pub const TOPIC_NAME_BYTES_MAX: usize = 249;

const SUBSCRIPTION_VERSION: i16 = 2;
const ASSIGNMENT_VERSION: i16 = 0;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("truncated consumer protocol bytes")]
    Truncated,
    #[error("negative length or version")]
    Negative,
    #[error("string is not UTF-8")]
    NotUtf8,
    #[error("topic name of {0} bytes is over Kafka's {TOPIC_NAME_BYTES_MAX}")]
    TopicNameTooLong(usize),
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = i16::try_from(s.len()).expect("topic names are at most 249 bytes");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    let n = i32::try_from(n).expect("fewer than 2^31 items");
    out.extend_from_slice(&n.to_be_bytes());
}

fn put_partitions(out: &mut Vec<u8>, partitions: &[TopicPartition]) {
    let mut by_topic: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for tp in partitions {
        by_topic.entry(&tp.topic).or_default().push(tp.partition);
    }
    put_len(out, by_topic.len());
    for (topic, ids) in by_topic {
        put_str(out, topic);
        put_len(out, ids.len());
        for id in ids {
            out.extend_from_slice(&(id as i32).to_be_bytes());
        }
    }
}

/// Encodes a subscription (no user data).
pub fn encode_subscription(subscription: &Subscription) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&SUBSCRIPTION_VERSION.to_be_bytes());
    put_len(&mut out, subscription.topics.len());
    for topic in &subscription.topics {
        put_str(&mut out, topic);
    }
    out.extend_from_slice(&(-1i32).to_be_bytes());
    put_partitions(&mut out, &subscription.owned);
    out.extend_from_slice(&subscription.generation.to_be_bytes());
    out
}

/// Encodes an assignment (no user data).
pub fn encode_assignment(partitions: &[TopicPartition]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&ASSIGNMENT_VERSION.to_be_bytes());
    put_partitions(&mut out, partitions);
    out.extend_from_slice(&(-1i32).to_be_bytes());
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if self.0.len() < n {
            return Err(ProtocolError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn i16(&mut self) -> Result<i16, ProtocolError> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn i32(&mut self) -> Result<i32, ProtocolError> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn len(&mut self) -> Result<usize, ProtocolError> {
        usize::try_from(self.i32()?).map_err(|_| ProtocolError::Negative)
    }
    fn string(&mut self) -> Result<String, ProtocolError> {
        let len = usize::try_from(self.i16()?).map_err(|_| ProtocolError::Negative)?;
        if len > TOPIC_NAME_BYTES_MAX {
            return Err(ProtocolError::TopicNameTooLong(len));
        }
        std::str::from_utf8(self.take(len)?)
            .map(str::to_owned)
            .map_err(|_| ProtocolError::NotUtf8)
    }
    fn skip_nullable_bytes(&mut self) -> Result<(), ProtocolError> {
        let len = self.i32()?;
        if len >= 0 {
            self.take(len as usize)?;
        }
        Ok(())
    }
    /// Counts come from untrusted bytes: never preallocate from them.
    fn partitions(&mut self) -> Result<Vec<TopicPartition>, ProtocolError> {
        let mut out = Vec::new();
        for _ in 0..self.len()? {
            let topic = self.string()?;
            for _ in 0..self.len()? {
                let id = u32::try_from(self.i32()?).map_err(|_| ProtocolError::Negative)?;
                out.push(TopicPartition::new(topic.clone(), id));
            }
        }
        Ok(out)
    }
}

pub fn decode_subscription(bytes: &[u8]) -> Result<Subscription, ProtocolError> {
    let mut r = Reader(bytes);
    let version = r.i16()?;
    if version < 0 {
        return Err(ProtocolError::Negative);
    }
    let mut topics = Vec::new();
    for _ in 0..r.len()? {
        topics.push(r.string()?);
    }
    r.skip_nullable_bytes()?;
    let owned = if version >= 1 {
        r.partitions()?
    } else {
        Vec::new()
    };
    let generation = if version >= 2 { r.i32()? } else { -1 };
    Ok(Subscription {
        topics,
        owned,
        generation,
    })
}

pub fn decode_assignment(bytes: &[u8]) -> Result<Vec<TopicPartition>, ProtocolError> {
    // An empty assignment (a member the leader left out, or an error).
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut r = Reader(bytes);
    let version = r.i16()?;
    if version < 0 {
        return Err(ProtocolError::Negative);
    }
    r.partitions()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_round_trips() {
        let sub = Subscription {
            topics: vec!["a".into(), "b".into()],
            owned: vec![TopicPartition::new("a", 1), TopicPartition::new("b", 0)],
            generation: 7,
        };
        assert_eq!(decode_subscription(&encode_subscription(&sub)), Ok(sub));
    }

    #[test]
    fn assignment_round_trips() {
        let parts = vec![
            TopicPartition::new("a", 0),
            TopicPartition::new("a", 3),
            TopicPartition::new("z", 2),
        ];
        assert_eq!(decode_assignment(&encode_assignment(&parts)), Ok(parts));
        assert_eq!(decode_assignment(&[]), Ok(Vec::new()));
    }

    #[test]
    fn kafka_v0_subscription_bytes_decode() {
        // Java ConsumerProtocol.serializeSubscription(v0) of topics ["t"],
        // null user data.
        let bytes = [0, 0, 0, 0, 0, 1, 0, 1, b't', 0xff, 0xff, 0xff, 0xff];
        let sub = decode_subscription(&bytes).expect("valid");
        assert_eq!(sub.topics, ["t"]);
        assert!(sub.owned.is_empty());
        assert_eq!(sub.generation, -1);
    }

    /// The `consumer_protocol` fuzz target's linear-memory check (fuzz/)
    /// fails on this input before the fix: a 300-byte topic name owning
    /// 1,000 partitions, 4.3 KB of input, decoded to 332 KB; with a 32 KiB
    /// name, 1 MiB of input would have decoded to 8 GiB. Names over Kafka's
    /// 249 bytes are refused.
    #[test]
    fn a_long_topic_name_repeated_per_partition_is_refused() {
        let topic = "t".repeat(300);
        let mut bytes = vec![0, 0]; // version 0
        bytes.extend_from_slice(&1i32.to_be_bytes());
        bytes.extend_from_slice(&300i16.to_be_bytes());
        bytes.extend_from_slice(topic.as_bytes());
        bytes.extend_from_slice(&1_000i32.to_be_bytes());
        for p in 0..1_000i32 {
            bytes.extend_from_slice(&p.to_be_bytes());
        }
        bytes.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(
            decode_assignment(&bytes),
            Err(ProtocolError::TopicNameTooLong(300))
        );
        // The same partitions of a 249-byte name decode.
        let parts: Vec<_> = (0..1_000)
            .map(|p| TopicPartition::new("t".repeat(249), p))
            .collect();
        assert_eq!(decode_assignment(&encode_assignment(&parts)), Ok(parts));
        let sub = Subscription {
            topics: vec![topic],
            owned: Vec::new(),
            generation: 1,
        };
        assert_eq!(
            decode_subscription(&encode_subscription(&sub)),
            Err(ProtocolError::TopicNameTooLong(300))
        );
    }

    #[test]
    fn truncations_are_errors() {
        let sub = Subscription {
            topics: vec!["topic".into()],
            owned: vec![TopicPartition::new("topic", 4)],
            generation: 1,
        };
        let bytes = encode_subscription(&sub);
        for cut in 0..bytes.len() {
            assert!(decode_subscription(&bytes[..cut]).is_err(), "cut {cut}");
        }
        let bytes = encode_assignment(&sub.owned);
        for cut in 1..bytes.len() - 4 {
            assert!(decode_assignment(&bytes[..cut]).is_err(), "cut {cut}");
        }
    }
}
