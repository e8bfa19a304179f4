//! Strong id types. Anything written to disk or to the wire is one of these,
//! never a bare integer, so an offset can never be passed where a partition
//! id was meant.

use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[repr(transparent)]
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub $inner);

        impl $name {
            #[inline]
            pub const fn get(self) -> $inner {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl From<$inner> for $name {
            #[inline]
            fn from(value: $inner) -> Self {
                Self(value)
            }
        }
    };
}

id_type!(
    /// Position of a record in a partition log. Offsets are dense per
    /// partition and start at 0.
    Offset(u64)
);
id_type!(
    /// Partition index within a topic.
    PartitionId(u32)
);
id_type!(
    /// A CPU shard (one glommio executor) within a broker process.
    ShardId(u16)
);
id_type!(
    /// A broker in the cluster.
    NodeId(u32)
);
id_type!(
    /// Leader epoch of a partition: bumped on every leadership change, stamped
    /// into every batch the leader appends.
    LeaderEpoch(u32)
);
id_type!(
    /// Idempotent-producer id, assigned by InitProducerId. `-1` means none.
    ProducerId(i64)
);
id_type!(
    /// Idempotent-producer epoch; a newer epoch fences older producer instances.
    ProducerEpoch(i16)
);
id_type!(
    /// Per-partition sequence number of the first record of a batch.
    Sequence(i32)
);
id_type!(
    /// Request/response correlation id chosen by the client.
    CorrelationId(u32)
);

impl Offset {
    /// The offset `delta` records after this one.
    #[inline]
    pub fn plus(self, delta: u64) -> Offset {
        Offset(self.0.checked_add(delta).expect("offset overflow"))
    }
}

impl ProducerId {
    /// No producer id: the batch was not written by an idempotent producer.
    pub const NONE: ProducerId = ProducerId(-1);
}

impl ProducerEpoch {
    pub const NONE: ProducerEpoch = ProducerEpoch(-1);
}

impl Sequence {
    pub const NONE: Sequence = Sequence(-1);

    /// The sequence `delta` records after this one; sequences wrap from
    /// `i32::MAX` to 0, as Kafka's `incrementSequence`.
    #[inline]
    pub fn wrapping_plus(self, delta: u32) -> Sequence {
        assert!(self.0 >= 0, "no sequence to advance");
        let modulus = i64::from(i32::MAX) + 1;
        let next = (i64::from(self.0) + i64::from(delta)) % modulus;
        Sequence(next as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_wrap_after_i32_max_as_in_kafka() {
        assert_eq!(Sequence(0).wrapping_plus(5), Sequence(5));
        assert_eq!(Sequence(i32::MAX - 1).wrapping_plus(1), Sequence(i32::MAX));
        assert_eq!(Sequence(i32::MAX).wrapping_plus(1), Sequence(0));
        assert_eq!(Sequence(i32::MAX - 1).wrapping_plus(4), Sequence(2));
    }
}
