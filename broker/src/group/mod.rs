//! Consumer groups: the group coordinator's state machine, its host on a
//! shard, the `__consumer_offsets` record format and the partition
//! assignors.
//!
//! The coordinator, `offsets_log`, `ops` (the group requests and replies
//! that cross the shard mesh) and the assignors are pure: no sockets,
//! files, clocks or glommio; `host` is the glommio driver, and reaches its
//! shard only through the `host::GroupShard` trait the shard's service
//! implements (so nothing here imports the service). The coordinator
//! takes requests and clock ticks and yields responses and "persist these
//! offsets" work; a driver on the hosting shard does the I/O. The assignors
//! run on the group leader (a client), and the broker's tests use them to
//! drive whole rebalances; they live in `fjord_net::client::assignor` and
//! are re-exported here.

pub use fjord_net::client::assignor;
pub use fjord_net::client::assignor::TopicPartition;

pub mod coordinator;
pub mod host;
pub mod offsets_log;
pub mod ops;
pub mod wire;
