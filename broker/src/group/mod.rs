//! Consumer groups: the group coordinator's state machine and the
//! partition assignors.
//!
//! Both are pure: no sockets, files, clocks or glommio. The coordinator
//! takes requests and clock ticks and yields responses and "persist these
//! offsets" work; a driver on the hosting shard does the I/O. The assignors
//! run on the group leader (a client), and the broker's tests use them to
//! drive whole rebalances; they depend only on `std`, so they can move to
//! `fjord-net` for the client unchanged.

pub mod assignor;
pub mod coordinator;
pub mod wire;

use std::fmt;

/// One partition of one topic.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: u32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: u32) -> TopicPartition {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}
