//! Kafka's ConsumerProtocol bytes (`fjord_net::client::consumer_protocol`):
//! a member's subscription, which the group leader decodes for every
//! member from the JoinGroup response, and an assignment, which every
//! member (and `fjord group describe`) decodes from SyncGroup /
//! DescribeGroups. Both come from other clients, through the broker
//! unchanged.
//!
//! Input layout: byte 0 bit 0 chooses subscription (0) or assignment (1);
//! the rest is the bytes.
//!
//! Checks: never panics; what decodes re-encodes and decodes to the same
//! subscription / assignment (partitions compared as a set: the encoder
//! groups them by topic); and decoding is linear in memory: the decoded
//! value takes at most [`AMPLIFICATION_MAX`] times the input's bytes (a
//! member's bytes must not make the leader allocate without bound).
#![no_main]

use fjord_net::client::assignor::{Subscription, TopicPartition};
use fjord_net::client::consumer_protocol::{
    decode_assignment, decode_subscription, encode_assignment, encode_subscription,
};
use libfuzzer_sys::fuzz_target;

/// Kafka's longest topic name.
const TOPIC_BYTES_MAX: usize = 249;
/// The worst honest ratio of decoded bytes to input bytes: a partition is
/// 4 input bytes and decodes to a `TopicPartition` holding its own copy of
/// a topic name of up to 249 bytes.
const AMPLIFICATION_MAX: usize = (std::mem::size_of::<TopicPartition>() + TOPIC_BYTES_MAX) / 4 + 1;

fn partitions_bytes(partitions: &[TopicPartition]) -> usize {
    partitions
        .iter()
        .map(|tp| std::mem::size_of::<TopicPartition>() + tp.topic.len())
        .sum()
}

fn sorted(mut partitions: Vec<TopicPartition>) -> Vec<TopicPartition> {
    partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    partitions
}

fn check_subscription(bytes: &[u8]) {
    let Ok(subscription) = decode_subscription(bytes) else {
        return;
    };
    let decoded = subscription
        .topics
        .iter()
        .map(|t| std::mem::size_of::<String>() + t.len())
        .sum::<usize>()
        + partitions_bytes(&subscription.owned);
    assert!(
        decoded <= AMPLIFICATION_MAX * bytes.len(),
        "{} input bytes decoded to {decoded} bytes",
        bytes.len()
    );
    let again = decode_subscription(&encode_subscription(&subscription))
        .expect("an encoded subscription decodes");
    let Subscription {
        topics,
        owned,
        generation,
    } = subscription;
    assert_eq!(again.topics, topics);
    assert_eq!(again.generation, generation);
    assert_eq!(sorted(again.owned), sorted(owned));
}

fn check_assignment(bytes: &[u8]) {
    let Ok(partitions) = decode_assignment(bytes) else {
        return;
    };
    let decoded = partitions_bytes(&partitions);
    assert!(
        decoded <= AMPLIFICATION_MAX * bytes.len(),
        "{} input bytes decoded to {decoded} bytes",
        bytes.len()
    );
    let again =
        decode_assignment(&encode_assignment(&partitions)).expect("an encoded assignment decodes");
    assert_eq!(sorted(again), sorted(partitions));
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        check_subscription(bytes);
    } else {
        check_assignment(bytes);
    }
});
