//! Broker configuration: defaults, overridden by a TOML file, overridden by
//! `FJORD_*` environment variables and command-line flags (clap merges the
//! last two; a flag wins over its variable).
//!
//! Every key of the file is listed in [`Config`]; unknown keys are an error
//! so a typo never silently falls back to a default.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use fjord_storage::LogConfig;
use serde::Deserialize;

use crate::controller::driver::LOG_REOPEN_BACKOFF_MIN_MS;
use crate::error::BrokerError;
use crate::partition::replicas::DEFAULT_REPLICA_LAG_TIME_MAX_MS;

/// `kafka_listen` value that turns the Kafka listener off.
pub const KAFKA_LISTEN_OFF: &str = "off";

/// The native protocol's default port.
pub const DEFAULT_PORT: u16 = 9192;

/// The array elements a Kafka request may hold when no bound is given: the
/// default `request_elements_max`.
pub const REQUEST_ELEMENTS_MAX_DEFAULT: usize = 100_000;

/// Room for one read on a Kafka connection when no longer frame is on its
/// way; what an idle connection holds of its shard's request-buffer budget
/// (here, not in the listener, so the budget check below and the listener
/// agree without config depending on the listener).
pub const KAFKA_READ_CHUNK_BYTES: usize = 16 * 1024;

/// Most voters `controller_quorum_voters` may list: Raft's messages and
/// commit wait grow with the quorum, and Kafka's guidance is 3 or 5.
pub const QUORUM_VOTERS_MAX: usize = 9;

/// One voter of the metadata quorum as `controller_quorum_voters` names
/// it: `ID@HOST:PORT`, the address being that node's `cluster_listen` (or
/// its `cluster_advertised_host` and that port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumVoter {
    pub node: u32,
    pub host: String,
    pub port: u16,
}

/// The voters of the metadata quorum, KRaft's spelling:
/// `1@host1:9193,2@host2:9193,3@host3:9193`. Parsed with [`str::parse`];
/// never empty, ids unique, ports non-zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumVoters(pub Vec<QuorumVoter>);

impl QuorumVoters {
    pub fn voters(&self) -> &[QuorumVoter] {
        &self.0
    }

    pub fn get(&self, node: u32) -> Option<&QuorumVoter> {
        self.0.iter().find(|v| v.node == node)
    }
}

impl std::str::FromStr for QuorumVoters {
    type Err = String;

    fn from_str(text: &str) -> Result<QuorumVoters, String> {
        let mut voters: Vec<QuorumVoter> = Vec::new();
        for entry in text.split(',').map(str::trim) {
            if entry.is_empty() {
                return Err(format!(
                    "{text:?} has an empty entry; expected ID@HOST:PORT,ID@HOST:PORT,..."
                ));
            }
            let Some((id, address)) = entry.split_once('@') else {
                return Err(format!("{entry:?} is not ID@HOST:PORT"));
            };
            let node = id
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|&n| (1..=NODE_ID_MAX).contains(&n))
                .ok_or_else(|| {
                    format!("{entry:?}: node id {id:?} is not a number in 1..={NODE_ID_MAX}")
                })?;
            let Some((host, port)) = address.rsplit_once(':') else {
                return Err(format!("{entry:?}: {address:?} is not HOST:PORT"));
            };
            // `[::1]:9193`: the brackets belong to the address syntax.
            let host = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host);
            if host.is_empty() {
                return Err(format!("{entry:?}: no host"));
            }
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("{entry:?}: port {port:?} is not in 1..=65535"))?;
            if voters.iter().any(|v| v.node == node) {
                return Err(format!("node {node} is listed twice in {text:?}"));
            }
            if let Some(same) = voters.iter().find(|v| v.host == host && v.port == port) {
                return Err(format!(
                    "nodes {} and {node} are both listed at {host}:{port}",
                    same.node
                ));
            }
            voters.push(QuorumVoter {
                node,
                host: host.to_owned(),
                port,
            });
        }
        if voters.len() > QUORUM_VOTERS_MAX {
            return Err(format!(
                "{} voters listed; at most {QUORUM_VOTERS_MAX} (3 or 5 is usual)",
                voters.len()
            ));
        }
        Ok(QuorumVoters(voters))
    }
}

impl std::fmt::Display for QuorumVoters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, voter) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if voter.host.contains(':') {
                write!(f, "{}@[{}]:{}", voter.node, voter.host, voter.port)?;
            } else {
                write!(f, "{}@{}:{}", voter.node, voter.host, voter.port)?;
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for QuorumVoters {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<QuorumVoters, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Largest node id: Kafka's broker ids are non-negative `int32`s.
pub const NODE_ID_MAX: u32 = i32::MAX as u32;

/// Broker settings, as read from the TOML file (all keys optional).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This node's id in the cluster (Kafka's `node.id`), at most
    /// [`NODE_ID_MAX`]. Recorded in the data dir's `meta.properties`: a
    /// data dir is only ever served as the node that first wrote it. 1 by
    /// default (0 before issue 13; a data dir written by that release as
    /// node 0 is adopted, see [`crate::datadir::DataDir::claim_for_node`]).
    pub node_id: u32,
    /// Where partitions, the lock file and `broker.addr` live.
    pub data_dir: PathBuf,
    /// `HOST:PORT` of the shared native-protocol port; port 0 picks a free
    /// one.
    pub listen: String,
    /// Host advertised in Metadata; defaults to the listen host.
    pub advertised_host: Option<String>,
    /// `HOST:PORT` of the Kafka wire-protocol port (every shard, SO_REUSEPORT);
    /// port 0 picks a free one; `off` runs no Kafka listener.
    pub kafka_listen: String,
    /// Host advertised in Kafka Metadata; defaults to the Kafka listen host.
    pub kafka_advertised_host: Option<String>,
    /// `HOST:PORT` of the inter-node port (native frames only: Raft
    /// messages, forwarded admin requests; replica fetches later), served
    /// on shard 0. Unset: no cluster listener, which only a one-node
    /// cluster (the voters are just this node) may do. When this node is a
    /// voter its entry in `controller_quorum_voters` must name this port
    /// (and this host or `cluster_advertised_host`).
    pub cluster_listen: Option<String>,
    /// Host other nodes reach `cluster_listen` at; defaults to its host.
    pub cluster_advertised_host: Option<String>,
    /// The voters of the metadata quorum, `ID@HOST:PORT,...` (KRaft's
    /// `controller.quorum.voters`), each at its `cluster_listen` address;
    /// nodes not listed follow the metadata log as learners. Unset: just
    /// this node (a one-node cluster, a quorum of itself).
    pub controller_quorum_voters: Option<QuorumVoters>,
    /// How often this broker heartbeats to the active controller.
    pub broker_heartbeat_interval_ms: u64,
    /// The controller fences a broker that sent no heartbeat for this
    /// long (and moves its partitions' leadership away); must exceed
    /// `broker_heartbeat_interval_ms`.
    pub broker_session_timeout_ms: u64,
    /// The broker's lease (gap B of docs/CORRECTNESS.md) ends this long
    /// before the controller can fence it: it acts as partition leader and
    /// group coordinator only until `send time of its last acknowledged
    /// heartbeat + broker_session_timeout_ms − broker_lease_margin_ms`.
    /// The margin covers a deposed controller still answering heartbeats
    /// until its quorum check steps it down (one election timeout, 10 ×
    /// `controller_raft_tick_ms`) and clock-rate drift; with
    /// `broker_heartbeat_interval_ms` it must stay below the session
    /// timeout.
    pub broker_lease_margin_ms: u64,
    /// Replicas of a topic created without a replication factor
    /// (`replication_factor = -1`, or auto-created).
    pub default_replication_factor: u16,
    /// Replicas of each `__consumer_offsets` partition, capped by the
    /// nodes alive when the topic is created (3, as in Kafka, so a
    /// three-node cluster keeps its groups through the loss of a node).
    pub offsets_topic_replication_factor: u16,
    /// Length of one tick of the metadata quorum's Raft group; an election
    /// starts after 10-20 ticks without hearing from the leader.
    pub controller_raft_tick_ms: u64,
    /// After a write of the metadata log fails (a full disk), this node
    /// leaves the metadata quorum and opens the log again after 100 ms,
    /// doubling per failure up to this (the controller's driver,
    /// `controller/driver.rs`). At least 100.
    pub controller_log_reopen_backoff_max_ms: u64,
    /// Bytes a replica fetcher asks of each partition it follows per fetch
    /// (Kafka's `replica.fetch.max.bytes`); the first batch always comes,
    /// so a larger batch still replicates.
    pub replica_fetch_max_bytes: u32,
    /// How long a leader holds a replica fetch that finds no new data
    /// (Kafka's `replica.fetch.wait.max.ms`): the follower's long-poll.
    /// Below `replica_lag_time_max_ms`, or idle followers would be shrunk
    /// out of the ISR.
    pub replica_fetch_wait_max_ms: u64,
    /// How long a replica fetcher waits after a failed fetch before the
    /// next (Kafka's `replica.fetch.backoff.ms`).
    pub replica_fetch_backoff_ms: u64,
    /// A follower in the ISR that has not caught up with the leader's log
    /// end for this long is proposed out of it (Kafka's
    /// `replica.lag.time.max.ms`).
    pub replica_lag_time_max_ms: u64,
    /// Bytes of one replica fetch's response, all partitions together
    /// (Kafka's `replica.fetch.response.max.bytes`); at least
    /// `replica_fetch_max_bytes`.
    pub replica_fetch_response_max_bytes: u32,
    /// Number of shards (executors, one per core); default: every online CPU.
    pub shards: Option<usize>,
    /// Whether each shard also listens on its own port (`port + 1 + shard`,
    /// or a free port when `listen` has port 0), advertised in Metadata so
    /// shard-aware clients skip the cross-shard hop.
    pub shard_ports: bool,
    /// Largest frame (body + payload) accepted; larger ones close the
    /// connection.
    pub frame_bytes_max: u32,
    /// Connections each shard serves at once on each listener (native and
    /// Kafka separately); more are closed on accept.
    pub connections_max_per_shard: usize,
    /// Connections the native listener (shared and per-shard ports) serves
    /// at once, all shards together (Kafka's
    /// `listener.name.<listener>.max.connections`); more are closed on
    /// accept.
    pub native_connections_max: usize,
    /// Connections the Kafka listener serves at once, all shards together.
    pub kafka_connections_max: usize,
    /// Connections one client address holds at once, both listeners and all
    /// shards together (Kafka's `max.connections.per.ip`); more are closed
    /// on accept.
    pub connections_max_per_ip: usize,
    /// Per-address replacements of `connections_max_per_ip` (Kafka's
    /// `max.connections.per.ip.overrides`), a TOML table of IP address to
    /// count, e.g. `{ "10.0.0.5" = 5000, "::1" = 10 }`; 0 refuses the
    /// address. `FJORD_CONNECTIONS_MAX_PER_IP_OVERRIDES` and the flag take
    /// Kafka's `address:count,address:count` form (`[::1]:10` for IPv6).
    /// IP addresses only: host names are refused.
    pub connections_max_per_ip_overrides: BTreeMap<IpAddr, usize>,
    /// A connection that has not sent one complete request this long after
    /// it was accepted is closed (both listeners), so connections that
    /// never speak free their slots quickly.
    pub connection_first_request_timeout_ms: u64,
    /// Responses queued per connection before it stops reading requests.
    pub write_queue_bytes_max: usize,
    /// A connection that sends no complete request for this long is closed.
    pub idle_timeout_ms: u64,
    /// How long a start keeps checking a listen port that is in use before
    /// giving up: the data dir lock was free, so no broker runs here, but a
    /// SIGKILLed predecessor's listeners linger for a few milliseconds
    /// after it is reaped (io_uring teardown), and a supervisor restarting
    /// at once must not trip over them.
    pub port_wait_ms: u64,
    /// Memory each shard registers with io_uring for storage I/O.
    pub io_memory_bytes: usize,
    /// After SIGTERM, how long shards wait for in-flight requests.
    pub shutdown_grace_ms: u64,

    // Data path. Each key below can also be set with `FJORD_<KEY>` in
    // upper case (e.g. `FJORD_AUTO_CREATE_TOPICS=true`) and with the flag
    // of [`DataPathFlags`] (`--auto-create-topics true`).
    /// Whether a Metadata request with `allow_auto_topic_creation` creates
    /// the unknown topics it names, with `default_partitions` partitions
    /// and default configs (Kafka's `auto.create.topics.enable`, on by
    /// default as in Kafka). Names are validated as for CreateTopics;
    /// internal topics are never auto-created.
    pub auto_create_topics: bool,
    /// Partitions of a topic created without a count (`num_partitions =
    /// -1`, or auto-created).
    pub default_partitions: u32,
    /// Partitions this broker holds at most, all topics together; a create
    /// that would exceed it fails with POLICY_VIOLATION.
    pub partitions_max: u32,
    /// Largest record batch accepted by default (Kafka's
    /// `message.max.bytes`); topics override it with `max.message.bytes`.
    pub message_max_bytes: u32,
    /// Default segment size (`segment.bytes`).
    pub log_segment_bytes: u64,
    /// Per-partition write buffer of appended but unwritten bytes; at least
    /// one largest batch plus 8 KiB. Keep it equal across restarts (see
    /// `fjord_storage::LogConfig::write_buffer_bytes`).
    pub log_write_buffer_bytes: usize,
    /// Segment files are zero-filled ahead of the writer in steps of this
    /// many bytes (multiple of 4096)...
    pub log_prepare_step_bytes: u64,
    /// ...keeping this many bytes prepared ahead (at least one step).
    pub log_prepare_ahead_bytes: u64,
    /// A partition whose writes failed (a full disk) refuses produces and
    /// retries in the background: first after this long, then doubling...
    pub log_write_retry_backoff_ms_min: u64,
    /// ...up to this long between retries (it never gives up).
    pub log_write_retry_backoff_ms_max: u64,
    /// Damaged ranges each partition log remembers (reads resume past
    /// them, `topic describe` lists them); more are logged, not kept.
    pub log_damaged_ranges_max: usize,
    /// Memory each shard lets in-flight requests hold (request frames being
    /// handled, fetch responses being read). A request that does not fit
    /// waits; one bigger than the whole budget gets BROKER_BUSY.
    pub inflight_bytes_max_per_shard: usize,
    /// Memory each shard lets Kafka connections hold in request bytes
    /// received but not yet handled (partial frames, whole frames waiting
    /// for the in-flight budget), all connections together. A connection's
    /// buffer grows with the bytes that arrive; when this is used up,
    /// connections are not read until it drains (backpressure).
    pub request_buffer_bytes_max_per_shard: usize,
    /// Memory each shard lets Kafka responses hold from when they are made
    /// until the client has read them, all connections together. When
    /// used up, connections are not read and their fetches do not run.
    pub response_bytes_max_per_shard: usize,
    /// Bytes the compressed batches of one Kafka Produce may decompress
    /// to, all batches together (also the reservation a compressed Produce
    /// takes from the in-flight budget, twice: decompressed section and
    /// rebuilt batch). Past it the partition gets MESSAGE_TOO_LARGE.
    /// Unset: 64 MiB, or less so that twice it plus `frame_bytes_max` fits
    /// `inflight_bytes_max_per_shard` (see
    /// [`Config::decompressed_bytes_max`]).
    pub decompressed_bytes_max_per_request: Option<usize>,
    /// Array elements one Kafka request may hold, all arrays together
    /// (topics, partitions, ...); checked while decoding, before the
    /// elements are allocated. A request with more closes the connection.
    pub request_elements_max: usize,
    /// Bytes of recent batches each shard caches for tail reads.
    pub batch_cache_bytes_max_per_shard: usize,
    /// Largest fetch response; a request's `max_bytes` is clamped to it.
    pub fetch_bytes_max: u32,
    /// Longest long-poll; a request's `max_wait_ms` is clamped to it.
    pub fetch_wait_ms_max: u64,
    /// How often each shard checks `flush.ms` / `flush.messages` of its
    /// partitions.
    pub flush_interval_ms: u64,
    /// How often each shard runs retention and age-based segment rolls (in
    /// a low-priority task queue).
    pub housekeeping_interval_ms: u64,
    /// Messages (each a batch of forwarded requests or replies) in flight
    /// per shard pair on the cross-shard mesh.
    pub mesh_channel_capacity: usize,

    // Consumer groups (TOML / `--config` only).
    /// Partitions of `__consumer_offsets`, created at first start (changing
    /// it later moves groups to other partitions and loses their offsets,
    /// as in Kafka). 8 rather than Kafka's 50: every partition costs a
    /// direct-I/O write buffer and a zero-filled segment prepared ahead,
    /// and a few partitions per shard already spread the groups.
    pub offsets_topic_partitions: u32,
    /// Allowed `session.timeout.ms` of members (`group.min/max.session.timeout.ms`).
    pub group_min_session_timeout_ms: u32,
    pub group_max_session_timeout_ms: u32,
    /// `group.initial.rebalance.delay.ms`.
    pub group_initial_rebalance_delay_ms: u32,
    /// Group requests waiting for the coordinator's answer (JoinGroup and
    /// SyncGroup park until the rebalance completes), per shard.
    pub group_parked_requests_max_per_shard: usize,

    // Idempotent producers (TOML / `--config` only).
    /// Producer ids whose state a partition keeps; the least recently used
    /// is forgotten beyond it.
    pub producer_ids_max_per_partition: usize,
    /// `producer.id.expiration.ms`: a producer id not seen for this long is
    /// forgotten by a partition.
    pub producer_id_expiration_ms: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: 1,
            data_dir: PathBuf::from("./fjord-data"),
            listen: format!("127.0.0.1:{DEFAULT_PORT}"),
            advertised_host: None,
            kafka_listen: "127.0.0.1:9092".to_owned(),
            kafka_advertised_host: None,
            cluster_listen: None,
            cluster_advertised_host: None,
            controller_quorum_voters: None,
            broker_heartbeat_interval_ms: 2_000,
            broker_session_timeout_ms: 9_000,
            broker_lease_margin_ms: 1_000,
            default_replication_factor: 1,
            offsets_topic_replication_factor: 3,
            controller_raft_tick_ms: 100,
            controller_log_reopen_backoff_max_ms: 5_000,
            replica_fetch_max_bytes: 1 << 20,
            replica_fetch_wait_max_ms: 500,
            replica_fetch_backoff_ms: 1_000,
            replica_lag_time_max_ms: DEFAULT_REPLICA_LAG_TIME_MAX_MS,
            replica_fetch_response_max_bytes: 10 << 20,
            shards: None,
            shard_ports: true,
            frame_bytes_max: 16 * 1024 * 1024,
            connections_max_per_shard: 1024,
            native_connections_max: 10_000,
            kafka_connections_max: 10_000,
            connections_max_per_ip: 1_000,
            connections_max_per_ip_overrides: BTreeMap::new(),
            connection_first_request_timeout_ms: 10_000,
            write_queue_bytes_max: 4 * 1024 * 1024,
            idle_timeout_ms: 10 * 60 * 1000,
            port_wait_ms: 2000,
            // glommio's floor is 64 KiB and its default 10 MiB; the network
            // path uses none of it, storage sizes it for direct I/O.
            io_memory_bytes: 4 * 1024 * 1024,
            shutdown_grace_ms: 10_000,
            // Kafka's default: librdkafka's producer and `kcat -P` rely on it.
            auto_create_topics: true,
            default_partitions: 1,
            partitions_max: 10_000,
            message_max_bytes: 4 << 20,
            log_segment_bytes: 1 << 30,
            log_write_buffer_bytes: 8 << 20,
            log_prepare_step_bytes: 8 << 20,
            log_prepare_ahead_bytes: 32 << 20,
            log_write_retry_backoff_ms_min: 100,
            log_write_retry_backoff_ms_max: 5_000,
            log_damaged_ranges_max: 64,
            inflight_bytes_max_per_shard: 256 << 20,
            request_buffer_bytes_max_per_shard: 64 << 20,
            response_bytes_max_per_shard: 64 << 20,
            decompressed_bytes_max_per_request: None,
            request_elements_max: REQUEST_ELEMENTS_MAX_DEFAULT,
            batch_cache_bytes_max_per_shard: 256 << 20,
            fetch_bytes_max: 16 << 20,
            fetch_wait_ms_max: 30_000,
            flush_interval_ms: 20,
            housekeeping_interval_ms: 30_000,
            mesh_channel_capacity: 128,
            offsets_topic_partitions: 8,
            producer_ids_max_per_partition: 10_000,
            producer_id_expiration_ms: 86_400_000,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            group_initial_rebalance_delay_ms: 3_000,
            group_parked_requests_max_per_shard: 10_000,
        }
    }
}

/// The replication keys of [`Config`] (Kafka's `replica.*`), as the
/// replica fetchers (`crate::replication`) and the leaders' ISR decisions
/// (`ProducePolicy::replica_lag_time_max_ms`) take them. Built by
/// [`Config::replication`]; plain values, no I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// `replica_fetch_max_bytes`: per partition of a fetch.
    pub fetch_max_bytes: u32,
    /// `replica_fetch_wait_max_ms`: a fetch's long-poll.
    pub fetch_wait_max_ms: u64,
    /// `replica_fetch_backoff_ms`: after a failed fetch.
    pub fetch_backoff_ms: u64,
    /// `replica_lag_time_max_ms`: ISR shrink.
    pub lag_time_max_ms: u64,
    /// `replica_fetch_response_max_bytes`: a whole fetch response.
    pub fetch_response_max_bytes: u32,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        Config::default().replication()
    }
}

impl ReplicationConfig {
    pub fn fetch_wait_max(&self) -> Duration {
        Duration::from_millis(self.fetch_wait_max_ms)
    }

    pub fn fetch_backoff(&self) -> Duration {
        Duration::from_millis(self.fetch_backoff_ms)
    }

    /// Why these values cannot work together, in the keys' names.
    pub fn validate(&self) -> Result<(), String> {
        if self.fetch_max_bytes == 0 {
            return Err("replica_fetch_max_bytes must be at least 1".into());
        }
        if self.fetch_response_max_bytes < self.fetch_max_bytes {
            return Err(format!(
                "replica_fetch_response_max_bytes = {} is below replica_fetch_max_bytes = {} \
                 (a whole fetch response must hold at least one partition's share)",
                self.fetch_response_max_bytes, self.fetch_max_bytes
            ));
        }
        if self.lag_time_max_ms == 0 {
            return Err("replica_lag_time_max_ms must be at least 1".into());
        }
        if self.fetch_wait_max_ms == 0 {
            return Err(
                "replica_fetch_wait_max_ms must be at least 1 (0 would make an idle follower \
                 spin)"
                    .into(),
            );
        }
        if self.fetch_wait_max_ms >= self.lag_time_max_ms {
            // Kafka's rule: an idle follower's long-poll must end before
            // the leader counts it as lagging.
            return Err(format!(
                "replica_fetch_wait_max_ms = {} must be below replica_lag_time_max_ms = {} \
                 (an idle follower would be shrunk out of the ISR while its fetch waits)",
                self.fetch_wait_max_ms, self.lag_time_max_ms
            ));
        }
        if self.fetch_backoff_ms == 0 {
            return Err(
                "replica_fetch_backoff_ms must be at least 1 (a failing leader would be \
                 retried in a tight loop)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Values from flags or the environment; `None` keeps the file's value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub node_id: Option<u32>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub advertised_host: Option<String>,
    pub kafka_listen: Option<String>,
    pub kafka_advertised_host: Option<String>,
    pub shards: Option<usize>,
    pub shard_ports: Option<bool>,
    pub frame_bytes_max: Option<u32>,
    pub connections_max_per_shard: Option<usize>,
    pub native_connections_max: Option<usize>,
    pub kafka_connections_max: Option<usize>,
    pub connections_max_per_ip: Option<usize>,
    pub connections_max_per_ip_overrides: Option<BTreeMap<IpAddr, usize>>,
    pub connection_first_request_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub io_memory_bytes: Option<usize>,
    /// Data-path flags; applied after the `FJORD_*` data-path variables so
    /// a flag wins over the environment, as for every other setting.
    pub data_path: DataPathFlags,
    /// Cluster flags; applied after the `FJORD_*` cluster variables.
    pub cluster: ClusterFlags,
}

/// Command-line flags of the cluster keys, flattened into `fjord start`
/// and applied with [`Config::apply_cluster_flags`] (after the `FJORD_*`
/// variables, so a flag wins). Each flag is the key with dashes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClusterFlags {
    /// Inter-node HOST:PORT (Raft, forwarded admin) [default: none: a one-node cluster].
    #[arg(long)]
    pub cluster_listen: Option<String>,
    /// Host other nodes reach --cluster-listen at [default: its host].
    #[arg(long)]
    pub cluster_advertised_host: Option<String>,
    /// Metadata quorum voters, ID@HOST:PORT,... at their --cluster-listen [default: this node alone].
    #[arg(long)]
    pub controller_quorum_voters: Option<QuorumVoters>,
    /// Heartbeat interval to the controller [default: 2000].
    #[arg(long)]
    pub broker_heartbeat_interval_ms: Option<u64>,
    /// Fenced after this long without heartbeat [default: 9000].
    #[arg(long)]
    pub broker_session_timeout_ms: Option<u64>,
    /// The lease ends this long before the controller may fence [default: 1000].
    #[arg(long)]
    pub broker_lease_margin_ms: Option<u64>,
    /// Replicas of topics created without a factor [default: 1].
    #[arg(long)]
    pub default_replication_factor: Option<u16>,
    /// Replicas of __consumer_offsets partitions, capped by live nodes [default: 3].
    #[arg(long)]
    pub offsets_topic_replication_factor: Option<u16>,
    /// Raft tick of the metadata quorum [default: 100].
    #[arg(long)]
    pub controller_raft_tick_ms: Option<u64>,
    /// Longest wait before reopening a metadata log whose write failed [default: 5000].
    #[arg(long)]
    pub controller_log_reopen_backoff_max_ms: Option<u64>,
    /// Bytes a replica fetch asks of each partition [default: 1048576].
    #[arg(long)]
    pub replica_fetch_max_bytes: Option<u32>,
    /// Long-poll of a replica fetch without new data [default: 500].
    #[arg(long)]
    pub replica_fetch_wait_max_ms: Option<u64>,
    /// Wait after a failed replica fetch [default: 1000].
    #[arg(long)]
    pub replica_fetch_backoff_ms: Option<u64>,
    /// A follower behind the leader this long leaves the ISR [default: 30000].
    #[arg(long)]
    pub replica_lag_time_max_ms: Option<u64>,
    /// Bytes of one replica fetch response, all partitions [default: 10485760].
    #[arg(long)]
    pub replica_fetch_response_max_bytes: Option<u32>,
}

/// Command-line flags of the data-path keys, for the CLI to flatten into
/// `fjord start` (`#[command(flatten)]`) and pass to
/// [`Config::apply_flags`]. Each flag is the key with dashes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DataPathFlags {
    /// Create unknown topics named in Metadata requests that allow it [default: true].
    #[arg(long)]
    pub auto_create_topics: Option<bool>,
    /// Partitions of topics created without a count [default: 1].
    #[arg(long)]
    pub default_partitions: Option<u32>,
    /// Partitions this broker holds at most [default: 10000].
    #[arg(long)]
    pub partitions_max: Option<u32>,
    /// Largest batch accepted by default [default: 4 MiB].
    #[arg(long)]
    pub message_max_bytes: Option<u32>,
    /// Default segment size [default: 1 GiB].
    #[arg(long)]
    pub log_segment_bytes: Option<u64>,
    /// Per-partition write buffer [default: 8 MiB].
    #[arg(long)]
    pub log_write_buffer_bytes: Option<usize>,
    /// Segment zero-fill step [default: 8 MiB].
    #[arg(long)]
    pub log_prepare_step_bytes: Option<u64>,
    /// Segment bytes kept zero-filled ahead of the writer [default: 32 MiB].
    #[arg(long)]
    pub log_prepare_ahead_bytes: Option<u64>,
    /// First retry delay of a partition whose writes failed [default: 100].
    #[arg(long)]
    pub log_write_retry_backoff_ms_min: Option<u64>,
    /// Longest retry delay of a partition whose writes failed [default: 5000].
    #[arg(long)]
    pub log_write_retry_backoff_ms_max: Option<u64>,
    /// Damaged ranges remembered per partition [default: 64].
    #[arg(long)]
    pub log_damaged_ranges_max: Option<usize>,
    /// In-flight request memory per shard [default: 256 MiB].
    #[arg(long)]
    pub inflight_bytes_max_per_shard: Option<usize>,
    /// Buffered Kafka request bytes per shard [default: 64 MiB].
    #[arg(long)]
    pub request_buffer_bytes_max_per_shard: Option<usize>,
    /// Unread Kafka response bytes per shard [default: 64 MiB].
    #[arg(long)]
    pub response_bytes_max_per_shard: Option<usize>,
    /// Decompressed bytes of one Kafka Produce [default: 64 MiB].
    #[arg(long)]
    pub decompressed_bytes_max_per_request: Option<usize>,
    /// Array elements of one Kafka request [default: 100000].
    #[arg(long)]
    pub request_elements_max: Option<usize>,
    /// Batch cache per shard [default: 256 MiB].
    #[arg(long)]
    pub batch_cache_bytes_max_per_shard: Option<usize>,
    /// Largest fetch response [default: 16 MiB].
    #[arg(long)]
    pub fetch_bytes_max: Option<u32>,
    /// Longest fetch long-poll [default: 30000].
    #[arg(long)]
    pub fetch_wait_ms_max: Option<u64>,
    /// Flush-policy check interval [default: 20].
    #[arg(long)]
    pub flush_interval_ms: Option<u64>,
    /// Retention / segment-age check interval [default: 30000].
    #[arg(long)]
    pub housekeeping_interval_ms: Option<u64>,
    /// Cross-shard messages in flight per shard pair [default: 128].
    #[arg(long)]
    pub mesh_channel_capacity: Option<usize>,
}

impl Config {
    /// Defaults, then `file` (if any), then `overrides`; then validated.
    pub fn load(file: Option<&Path>, overrides: Overrides) -> Result<Config, BrokerError> {
        let mut config = match file {
            None => Config::default(),
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| BrokerError::ConfigRead {
                        path: path.to_owned(),
                        source,
                    })?;
                Config::parse(&text).map_err(|reason| BrokerError::ConfigInvalid {
                    path: path.to_owned(),
                    reason,
                })?
            }
        };
        let data_path = overrides.data_path.clone();
        let cluster = overrides.cluster.clone();
        config.apply(overrides);
        config.apply_env(|name| std::env::var(name).ok())?;
        config.apply_flags(data_path);
        config.apply_cluster_flags(cluster);
        config.validate()?;
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    fn apply(&mut self, o: Overrides) {
        fn set<T>(slot: &mut T, value: Option<T>) {
            if let Some(value) = value {
                *slot = value;
            }
        }
        set(&mut self.node_id, o.node_id);
        set(&mut self.data_dir, o.data_dir);
        set(&mut self.listen, o.listen);
        set(&mut self.kafka_listen, o.kafka_listen);
        if o.kafka_advertised_host.is_some() {
            self.kafka_advertised_host = o.kafka_advertised_host;
        }
        set(&mut self.shard_ports, o.shard_ports);
        set(&mut self.frame_bytes_max, o.frame_bytes_max);
        set(
            &mut self.connections_max_per_shard,
            o.connections_max_per_shard,
        );
        set(&mut self.native_connections_max, o.native_connections_max);
        set(&mut self.kafka_connections_max, o.kafka_connections_max);
        set(&mut self.connections_max_per_ip, o.connections_max_per_ip);
        set(
            &mut self.connections_max_per_ip_overrides,
            o.connections_max_per_ip_overrides,
        );
        set(
            &mut self.connection_first_request_timeout_ms,
            o.connection_first_request_timeout_ms,
        );
        set(&mut self.idle_timeout_ms, o.idle_timeout_ms);
        set(&mut self.io_memory_bytes, o.io_memory_bytes);
        if o.advertised_host.is_some() {
            self.advertised_host = o.advertised_host;
        }
        if o.shards.is_some() {
            self.shards = o.shards;
        }
    }

    /// Applies `FJORD_<KEY>` variables of the data-path keys (the older keys
    /// come through [`Overrides`], which the CLI fills from flags and the
    /// environment).
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), BrokerError> {
        fn set<T: std::str::FromStr>(
            slot: &mut T,
            var: &impl Fn(&str) -> Option<String>,
            name: &str,
        ) -> Result<(), BrokerError>
        where
            T::Err: std::fmt::Display,
        {
            if let Some(text) = var(name) {
                *slot = text.trim().parse().map_err(|e| {
                    BrokerError::InvalidSetting(format!("{name}={text:?} is not valid: {e}"))
                })?;
            }
            Ok(())
        }
        /// As `set`, for an optional key (a set variable makes it `Some`).
        fn set_some<T: std::str::FromStr>(
            slot: &mut Option<T>,
            var: &impl Fn(&str) -> Option<String>,
            name: &str,
        ) -> Result<(), BrokerError>
        where
            T::Err: std::fmt::Display,
        {
            if let Some(text) = var(name) {
                *slot = Some(text.trim().parse().map_err(|e| {
                    BrokerError::InvalidSetting(format!("{name}={text:?} is not valid: {e}"))
                })?);
            }
            Ok(())
        }
        set(
            &mut self.auto_create_topics,
            &var,
            "FJORD_AUTO_CREATE_TOPICS",
        )?;
        set(
            &mut self.default_partitions,
            &var,
            "FJORD_DEFAULT_PARTITIONS",
        )?;
        set(&mut self.partitions_max, &var, "FJORD_PARTITIONS_MAX")?;
        set(&mut self.message_max_bytes, &var, "FJORD_MESSAGE_MAX_BYTES")?;
        set(&mut self.log_segment_bytes, &var, "FJORD_LOG_SEGMENT_BYTES")?;
        set(
            &mut self.log_write_buffer_bytes,
            &var,
            "FJORD_LOG_WRITE_BUFFER_BYTES",
        )?;
        set(
            &mut self.log_prepare_step_bytes,
            &var,
            "FJORD_LOG_PREPARE_STEP_BYTES",
        )?;
        set(
            &mut self.log_prepare_ahead_bytes,
            &var,
            "FJORD_LOG_PREPARE_AHEAD_BYTES",
        )?;
        set(
            &mut self.log_write_retry_backoff_ms_min,
            &var,
            "FJORD_LOG_WRITE_RETRY_BACKOFF_MS_MIN",
        )?;
        set(
            &mut self.log_write_retry_backoff_ms_max,
            &var,
            "FJORD_LOG_WRITE_RETRY_BACKOFF_MS_MAX",
        )?;
        set(
            &mut self.log_damaged_ranges_max,
            &var,
            "FJORD_LOG_DAMAGED_RANGES_MAX",
        )?;
        set(
            &mut self.inflight_bytes_max_per_shard,
            &var,
            "FJORD_INFLIGHT_BYTES_MAX_PER_SHARD",
        )?;
        set(
            &mut self.request_buffer_bytes_max_per_shard,
            &var,
            "FJORD_REQUEST_BUFFER_BYTES_MAX_PER_SHARD",
        )?;
        set(
            &mut self.response_bytes_max_per_shard,
            &var,
            "FJORD_RESPONSE_BYTES_MAX_PER_SHARD",
        )?;
        let mut decompressed = 0usize;
        set(
            &mut decompressed,
            &var,
            "FJORD_DECOMPRESSED_BYTES_MAX_PER_REQUEST",
        )?;
        if var("FJORD_DECOMPRESSED_BYTES_MAX_PER_REQUEST").is_some() {
            self.decompressed_bytes_max_per_request = Some(decompressed);
        }
        set(
            &mut self.request_elements_max,
            &var,
            "FJORD_REQUEST_ELEMENTS_MAX",
        )?;
        set(
            &mut self.batch_cache_bytes_max_per_shard,
            &var,
            "FJORD_BATCH_CACHE_BYTES_MAX_PER_SHARD",
        )?;
        set(&mut self.fetch_bytes_max, &var, "FJORD_FETCH_BYTES_MAX")?;
        set(&mut self.fetch_wait_ms_max, &var, "FJORD_FETCH_WAIT_MS_MAX")?;
        set(&mut self.port_wait_ms, &var, "FJORD_PORT_WAIT_MS")?;
        set(&mut self.flush_interval_ms, &var, "FJORD_FLUSH_INTERVAL_MS")?;
        set(
            &mut self.housekeeping_interval_ms,
            &var,
            "FJORD_HOUSEKEEPING_INTERVAL_MS",
        )?;
        set(
            &mut self.mesh_channel_capacity,
            &var,
            "FJORD_MESH_CHANNEL_CAPACITY",
        )?;
        set_some(&mut self.cluster_listen, &var, "FJORD_CLUSTER_LISTEN")?;
        set_some(
            &mut self.cluster_advertised_host,
            &var,
            "FJORD_CLUSTER_ADVERTISED_HOST",
        )?;
        set_some(
            &mut self.controller_quorum_voters,
            &var,
            "FJORD_CONTROLLER_QUORUM_VOTERS",
        )?;
        set(
            &mut self.broker_heartbeat_interval_ms,
            &var,
            "FJORD_BROKER_HEARTBEAT_INTERVAL_MS",
        )?;
        set(
            &mut self.broker_session_timeout_ms,
            &var,
            "FJORD_BROKER_SESSION_TIMEOUT_MS",
        )?;
        set(
            &mut self.broker_lease_margin_ms,
            &var,
            "FJORD_BROKER_LEASE_MARGIN_MS",
        )?;
        set(
            &mut self.default_replication_factor,
            &var,
            "FJORD_DEFAULT_REPLICATION_FACTOR",
        )?;
        set(
            &mut self.offsets_topic_replication_factor,
            &var,
            "FJORD_OFFSETS_TOPIC_REPLICATION_FACTOR",
        )?;
        set(
            &mut self.controller_raft_tick_ms,
            &var,
            "FJORD_CONTROLLER_RAFT_TICK_MS",
        )?;
        set(
            &mut self.controller_log_reopen_backoff_max_ms,
            &var,
            "FJORD_CONTROLLER_LOG_REOPEN_BACKOFF_MAX_MS",
        )?;
        set(
            &mut self.replica_fetch_max_bytes,
            &var,
            "FJORD_REPLICA_FETCH_MAX_BYTES",
        )?;
        set(
            &mut self.replica_fetch_wait_max_ms,
            &var,
            "FJORD_REPLICA_FETCH_WAIT_MAX_MS",
        )?;
        set(
            &mut self.replica_fetch_backoff_ms,
            &var,
            "FJORD_REPLICA_FETCH_BACKOFF_MS",
        )?;
        set(
            &mut self.replica_lag_time_max_ms,
            &var,
            "FJORD_REPLICA_LAG_TIME_MAX_MS",
        )?;
        set(
            &mut self.replica_fetch_response_max_bytes,
            &var,
            "FJORD_REPLICA_FETCH_RESPONSE_MAX_BYTES",
        )?;
        Ok(())
    }

    /// Applies the cluster flags (see [`ClusterFlags`]).
    pub fn apply_cluster_flags(&mut self, flags: ClusterFlags) {
        fn set<T>(slot: &mut T, value: Option<T>) {
            if let Some(value) = value {
                *slot = value;
            }
        }
        set(&mut self.cluster_listen, flags.cluster_listen.map(Some));
        set(
            &mut self.cluster_advertised_host,
            flags.cluster_advertised_host.map(Some),
        );
        set(
            &mut self.controller_quorum_voters,
            flags.controller_quorum_voters.map(Some),
        );
        set(
            &mut self.broker_heartbeat_interval_ms,
            flags.broker_heartbeat_interval_ms,
        );
        set(
            &mut self.broker_session_timeout_ms,
            flags.broker_session_timeout_ms,
        );
        set(
            &mut self.broker_lease_margin_ms,
            flags.broker_lease_margin_ms,
        );
        set(
            &mut self.default_replication_factor,
            flags.default_replication_factor,
        );
        set(
            &mut self.offsets_topic_replication_factor,
            flags.offsets_topic_replication_factor,
        );
        set(
            &mut self.controller_raft_tick_ms,
            flags.controller_raft_tick_ms,
        );
        set(
            &mut self.controller_log_reopen_backoff_max_ms,
            flags.controller_log_reopen_backoff_max_ms,
        );
        set(
            &mut self.replica_fetch_max_bytes,
            flags.replica_fetch_max_bytes,
        );
        set(
            &mut self.replica_fetch_wait_max_ms,
            flags.replica_fetch_wait_max_ms,
        );
        set(
            &mut self.replica_fetch_backoff_ms,
            flags.replica_fetch_backoff_ms,
        );
        set(
            &mut self.replica_lag_time_max_ms,
            flags.replica_lag_time_max_ms,
        );
        set(
            &mut self.replica_fetch_response_max_bytes,
            flags.replica_fetch_response_max_bytes,
        );
    }

    /// Applies the data-path flags (see [`DataPathFlags`]).
    pub fn apply_flags(&mut self, flags: DataPathFlags) {
        fn set<T>(slot: &mut T, value: Option<T>) {
            if let Some(value) = value {
                *slot = value;
            }
        }
        set(&mut self.auto_create_topics, flags.auto_create_topics);
        set(&mut self.default_partitions, flags.default_partitions);
        set(&mut self.partitions_max, flags.partitions_max);
        set(&mut self.message_max_bytes, flags.message_max_bytes);
        set(&mut self.log_segment_bytes, flags.log_segment_bytes);
        set(
            &mut self.log_write_buffer_bytes,
            flags.log_write_buffer_bytes,
        );
        set(
            &mut self.log_prepare_step_bytes,
            flags.log_prepare_step_bytes,
        );
        set(
            &mut self.log_prepare_ahead_bytes,
            flags.log_prepare_ahead_bytes,
        );
        set(
            &mut self.log_write_retry_backoff_ms_min,
            flags.log_write_retry_backoff_ms_min,
        );
        set(
            &mut self.log_write_retry_backoff_ms_max,
            flags.log_write_retry_backoff_ms_max,
        );
        set(
            &mut self.log_damaged_ranges_max,
            flags.log_damaged_ranges_max,
        );
        set(
            &mut self.inflight_bytes_max_per_shard,
            flags.inflight_bytes_max_per_shard,
        );
        set(
            &mut self.request_buffer_bytes_max_per_shard,
            flags.request_buffer_bytes_max_per_shard,
        );
        set(
            &mut self.response_bytes_max_per_shard,
            flags.response_bytes_max_per_shard,
        );
        set(
            &mut self.decompressed_bytes_max_per_request,
            flags.decompressed_bytes_max_per_request.map(Some),
        );
        set(&mut self.request_elements_max, flags.request_elements_max);
        set(
            &mut self.batch_cache_bytes_max_per_shard,
            flags.batch_cache_bytes_max_per_shard,
        );
        set(&mut self.fetch_bytes_max, flags.fetch_bytes_max);
        set(&mut self.fetch_wait_ms_max, flags.fetch_wait_ms_max);
        set(&mut self.flush_interval_ms, flags.flush_interval_ms);
        set(
            &mut self.housekeeping_interval_ms,
            flags.housekeeping_interval_ms,
        );
        set(&mut self.mesh_channel_capacity, flags.mesh_channel_capacity);
    }

    /// The effective settings that have a Kafka broker config name, as
    /// Kafka would describe them (DescribeConfigs on the BROKER resource).
    /// The topic defaults come from the same `TopicConfig` topics start
    /// from, so the two cannot disagree.
    pub fn kafka_broker_configs(&self) -> Vec<(&'static str, String)> {
        let topic = crate::topic::TopicConfig::from_log_config(&self.base_log_config());
        let topic: std::collections::BTreeMap<&str, String> = topic.entries().into_iter().collect();
        let topic_default = |key: &str| topic.get(key).cloned().unwrap_or_default();
        vec![
            ("node.id", self.node_id.to_string()),
            ("broker.id", self.node_id.to_string()),
            ("log.dirs", self.data_dir.display().to_string()),
            ("num.partitions", self.default_partitions.to_string()),
            (
                "auto.create.topics.enable",
                self.auto_create_topics.to_string(),
            ),
            (
                "default.replication.factor",
                self.default_replication_factor.to_string(),
            ),
            ("min.insync.replicas", topic_default("min.insync.replicas")),
            ("message.max.bytes", self.message_max_bytes.to_string()),
            ("log.segment.bytes", self.log_segment_bytes.to_string()),
            ("log.roll.ms", topic_default("segment.ms")),
            ("log.retention.ms", topic_default("retention.ms")),
            ("log.retention.bytes", topic_default("retention.bytes")),
            ("log.cleanup.policy", topic_default("cleanup.policy")),
            ("compression.type", topic_default("compression.type")),
            (
                "log.index.interval.bytes",
                topic_default("index.interval.bytes"),
            ),
            (
                "log.flush.interval.messages",
                topic_default("flush.messages"),
            ),
            ("log.flush.interval.ms", topic_default("flush.ms")),
            (
                "log.message.timestamp.type",
                topic_default("message.timestamp.type"),
            ),
            (
                "offsets.topic.num.partitions",
                self.offsets_topic_partitions.to_string(),
            ),
            (
                "offsets.topic.replication.factor",
                self.offsets_topic_replication_factor.to_string(),
            ),
            // As configured (Kafka's default is empty): unset means this
            // node alone.
            (
                "controller.quorum.voters",
                self.controller_quorum_voters
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            ),
            (
                "broker.heartbeat.interval.ms",
                self.broker_heartbeat_interval_ms.to_string(),
            ),
            (
                "broker.session.timeout.ms",
                self.broker_session_timeout_ms.to_string(),
            ),
            (
                "broker.lease.margin.ms",
                self.broker_lease_margin_ms.to_string(),
            ),
            (
                "replica.fetch.max.bytes",
                self.replica_fetch_max_bytes.to_string(),
            ),
            (
                "replica.fetch.wait.max.ms",
                self.replica_fetch_wait_max_ms.to_string(),
            ),
            (
                "replica.fetch.backoff.ms",
                self.replica_fetch_backoff_ms.to_string(),
            ),
            (
                "replica.lag.time.max.ms",
                self.replica_lag_time_max_ms.to_string(),
            ),
            (
                "replica.fetch.response.max.bytes",
                self.replica_fetch_response_max_bytes.to_string(),
            ),
            (
                "offsets.topic.segment.bytes",
                self.log_segment_bytes.min(100 << 20).to_string(),
            ),
            ("transaction.state.log.replication.factor", "1".to_owned()),
            (
                "group.min.session.timeout.ms",
                self.group_min_session_timeout_ms.to_string(),
            ),
            (
                "group.max.session.timeout.ms",
                self.group_max_session_timeout_ms.to_string(),
            ),
            (
                "group.initial.rebalance.delay.ms",
                self.group_initial_rebalance_delay_ms.to_string(),
            ),
            (
                "producer.id.expiration.ms",
                self.producer_id_expiration_ms.to_string(),
            ),
            ("socket.request.max.bytes", self.frame_bytes_max.to_string()),
            ("connections.max.idle.ms", self.idle_timeout_ms.to_string()),
            (
                "max.connections",
                self.native_connections_max
                    .saturating_add(self.kafka_connections_max)
                    .min(i32::MAX as usize)
                    .to_string(),
            ),
            (
                "max.connections.per.ip",
                self.connections_max_per_ip
                    .min(i32::MAX as usize)
                    .to_string(),
            ),
            (
                "max.connections.per.ip.overrides",
                crate::connection_limits::format_ip_overrides(
                    &self.connections_max_per_ip_overrides,
                ),
            ),
            ("fetch.max.bytes", self.fetch_bytes_max.to_string()),
            ("delete.topic.enable", "true".to_owned()),
        ]
    }

    /// The storage limits every partition starts from; topic configs
    /// override the Kafka-visible ones.
    pub fn base_log_config(&self) -> LogConfig {
        LogConfig {
            segment_bytes_max: self.log_segment_bytes,
            batch_bytes_max: self.message_max_bytes as usize,
            write_buffer_bytes: self.log_write_buffer_bytes,
            prepare_step_bytes: self.log_prepare_step_bytes,
            prepare_ahead_bytes: self.log_prepare_ahead_bytes,
            write_retry_backoff_ms_min: self.log_write_retry_backoff_ms_min,
            write_retry_backoff_ms_max: self.log_write_retry_backoff_ms_max,
            damaged_ranges_max: self.log_damaged_ranges_max,
            ..LogConfig::default()
        }
    }

    /// The group coordinator's settings.
    pub fn producer_state_config(&self) -> crate::partition::producer_state::ProducerStateConfig {
        crate::partition::producer_state::ProducerStateConfig {
            producers_max: self.producer_ids_max_per_partition,
            expiration_ms: self.producer_id_expiration_ms,
        }
    }

    pub fn group_config(&self) -> crate::group::coordinator::GroupConfig {
        crate::group::coordinator::GroupConfig {
            session_timeout_min_ms: self.group_min_session_timeout_ms,
            session_timeout_max_ms: self.group_max_session_timeout_ms,
            initial_rebalance_delay_ms: self.group_initial_rebalance_delay_ms,
            ..Default::default()
        }
    }

    fn validate(&self) -> Result<(), BrokerError> {
        let invalid = |reason: String| Err(BrokerError::InvalidSetting(reason));
        if let Err(error) = self.base_log_config().validate() {
            return invalid(format!("log settings: {error}"));
        }
        if self.default_partitions == 0 {
            return invalid("default_partitions must be at least 1".into());
        }
        if self.partitions_max == 0 {
            return invalid("partitions_max must be at least 1".into());
        }
        if self.producer_ids_max_per_partition == 0 || self.producer_id_expiration_ms <= 0 {
            return invalid(
                "producer_ids_max_per_partition and producer_id_expiration_ms must be positive"
                    .into(),
            );
        }
        if self.offsets_topic_partitions == 0 {
            return invalid("offsets_topic_partitions must be at least 1".into());
        }
        if self.group_min_session_timeout_ms == 0
            || self.group_min_session_timeout_ms > self.group_max_session_timeout_ms
        {
            return invalid(
                "group_min_session_timeout_ms must be positive and at most group_max_session_timeout_ms"
                    .into(),
            );
        }
        if self.group_parked_requests_max_per_shard == 0 {
            return invalid("group_parked_requests_max_per_shard must be at least 1".into());
        }
        if self.inflight_bytes_max_per_shard < self.frame_bytes_max as usize {
            return invalid(format!(
                "inflight_bytes_max_per_shard = {} must hold one largest frame \
                 (frame_bytes_max = {})",
                self.inflight_bytes_max_per_shard, self.frame_bytes_max
            ));
        }
        let request_buffer_min = 2 * self.frame_bytes_max as usize + KAFKA_READ_CHUNK_BYTES;
        if self.request_buffer_bytes_max_per_shard < request_buffer_min {
            return invalid(format!(
                "request_buffer_bytes_max_per_shard = {} must hold two largest frames \
                 (frame_bytes_max = {}) and a read chunk: at least {request_buffer_min}",
                self.request_buffer_bytes_max_per_shard, self.frame_bytes_max
            ));
        }
        if self.response_bytes_max_per_shard < self.fetch_bytes_max as usize {
            return invalid(format!(
                "response_bytes_max_per_shard = {} must hold one largest fetch response \
                 (fetch_bytes_max = {})",
                self.response_bytes_max_per_shard, self.fetch_bytes_max
            ));
        }
        let decompressed_max = self.decompressed_bytes_max();
        let decompress_reservation = decompressed_max.saturating_mul(2);
        if decompressed_max == 0
            || self.inflight_bytes_max_per_shard
                < decompress_reservation.saturating_add(self.frame_bytes_max as usize)
        {
            return invalid(format!(
                "decompressed_bytes_max_per_request = {} must be positive, and twice it plus \
                 frame_bytes_max = {} must fit inflight_bytes_max_per_shard = {}",
                decompressed_max, self.frame_bytes_max, self.inflight_bytes_max_per_shard
            ));
        }
        if self.request_elements_max == 0 {
            return invalid("request_elements_max must be at least 1".into());
        }
        if self.fetch_bytes_max == 0 {
            return invalid("fetch_bytes_max must be at least 1".into());
        }
        if self.flush_interval_ms == 0 || self.housekeeping_interval_ms == 0 {
            return invalid(
                "flush_interval_ms and housekeeping_interval_ms must be positive".into(),
            );
        }
        if self.mesh_channel_capacity == 0 {
            return invalid("mesh_channel_capacity must be at least 1".into());
        }
        if self.shards == Some(0) {
            return invalid("shards must be at least 1".into());
        }
        if self.frame_bytes_max < 1024 {
            return invalid(format!(
                "frame_bytes_max = {} is below the 1024-byte minimum",
                self.frame_bytes_max
            ));
        }
        if self.connections_max_per_shard == 0 {
            return invalid("connections_max_per_shard must be at least 1".into());
        }
        if self.write_queue_bytes_max == 0 {
            return invalid("write_queue_bytes_max must be at least 1".into());
        }
        if self.idle_timeout_ms == 0 {
            return invalid("idle_timeout_ms must be at least 1".into());
        }
        if self.native_connections_max == 0 || self.kafka_connections_max == 0 {
            return invalid(
                "native_connections_max and kafka_connections_max must be at least 1".into(),
            );
        }
        if self.connections_max_per_ip == 0 {
            return invalid(
                "connections_max_per_ip must be at least 1 (refuse single addresses with \
                 connections_max_per_ip_overrides = { \"ADDRESS\" = 0 })"
                    .into(),
            );
        }
        if self.connection_first_request_timeout_ms == 0 {
            return invalid("connection_first_request_timeout_ms must be at least 1".into());
        }
        let listen = self.listen_addr()?;
        let kafka = self.kafka_listen_addr()?;
        self.validate_cluster(listen, kafka)
    }

    /// The cluster keys: identity, timings, and that the voters list and
    /// `cluster_listen` agree about this node.
    fn validate_cluster(
        &self,
        listen: SocketAddr,
        kafka: Option<SocketAddr>,
    ) -> Result<(), BrokerError> {
        let invalid = |reason: String| Err(BrokerError::InvalidSetting(reason));
        if self.node_id > NODE_ID_MAX {
            return invalid(format!(
                "node_id = {} is above {NODE_ID_MAX} (Kafka's broker ids are int32)",
                self.node_id
            ));
        }
        if self.node_id == 0 {
            // Raft (tikv raft) reserves id 0 for "no node".
            return invalid(
                "node_id = 0: node ids start at 1 (0 means \"no node\" to the metadata quorum)"
                    .into(),
            );
        }
        if self.broker_heartbeat_interval_ms == 0 {
            return invalid("broker_heartbeat_interval_ms must be at least 1".into());
        }
        if self.broker_session_timeout_ms <= self.broker_heartbeat_interval_ms {
            return invalid(format!(
                "broker_session_timeout_ms = {} must exceed broker_heartbeat_interval_ms = {} \
                 (several heartbeats should fit a session)",
                self.broker_session_timeout_ms, self.broker_heartbeat_interval_ms
            ));
        }
        if self.controller_raft_tick_ms == 0 {
            return invalid("controller_raft_tick_ms must be at least 1".into());
        }
        if self.controller_log_reopen_backoff_max_ms < LOG_REOPEN_BACKOFF_MIN_MS {
            return invalid(format!(
                "controller_log_reopen_backoff_max_ms = {} must be at least {LOG_REOPEN_BACKOFF_MIN_MS}",
                self.controller_log_reopen_backoff_max_ms
            ));
        }
        if self
            .broker_lease_margin_ms
            .saturating_add(self.broker_heartbeat_interval_ms)
            >= self.broker_session_timeout_ms
        {
            return invalid(format!(
                "broker_lease_margin_ms = {} plus broker_heartbeat_interval_ms = {} must stay \
                 below broker_session_timeout_ms = {} (the lease must outlast a heartbeat)",
                self.broker_lease_margin_ms,
                self.broker_heartbeat_interval_ms,
                self.broker_session_timeout_ms
            ));
        }
        self.replication()
            .validate()
            .map_err(BrokerError::InvalidSetting)?;
        if self.default_replication_factor == 0 || self.offsets_topic_replication_factor == 0 {
            return invalid(
                "default_replication_factor and offsets_topic_replication_factor must be at \
                 least 1"
                    .into(),
            );
        }
        let cluster = self.cluster_listen_addr()?;
        let voters = self.quorum_voters();
        let alone = matches!(voters.voters(), [only] if only.node == self.node_id);
        let Some(cluster) = cluster else {
            if alone {
                return Ok(());
            }
            return invalid(format!(
                "controller_quorum_voters = {voters} names other nodes than this one (node {}), \
                 so this node needs cluster_listen = HOST:PORT, its inter-node port",
                self.node_id
            ));
        };
        for (other, name) in [(Some(listen), "listen"), (kafka, "kafka_listen")] {
            if other == Some(cluster) && cluster.port() != 0 {
                return invalid(format!(
                    "cluster_listen = {cluster} is also {name}'s address; give it its own port"
                ));
            }
        }
        let Some(me) = self
            .controller_quorum_voters
            .as_ref()
            .and_then(|v| v.get(self.node_id))
        else {
            // Not a voter (a learner), or the default list of just this
            // node, which takes its address from cluster_listen.
            return Ok(());
        };
        let listen_host = self
            .cluster_listen
            .as_deref()
            .and_then(|l| l.rsplit_once(':'))
            .map(|(host, _)| host.trim_start_matches('[').trim_end_matches(']'))
            .unwrap_or_default();
        let host_matches = me.host == listen_host
            || self.cluster_advertised_host.as_deref() == Some(me.host.as_str())
            || cluster.ip().is_unspecified()
            || (me.host.as_str(), me.port)
                .to_socket_addrs()
                .is_ok_and(|mut addrs| addrs.any(|a| a.ip() == cluster.ip()));
        if me.port != cluster.port() || !host_matches {
            return invalid(format!(
                "controller_quorum_voters lists this node ({}) at {}:{}, but its \
                 cluster_listen is {:?}{}; a voter's entry must be its cluster_listen address \
                 (or cluster_advertised_host and that port)",
                self.node_id,
                me.host,
                me.port,
                self.cluster_listen.as_deref().unwrap_or_default(),
                match &self.cluster_advertised_host {
                    Some(host) => format!(" (advertised as {host})"),
                    None => String::new(),
                }
            ));
        }
        Ok(())
    }

    /// The resolved `cluster_listen` address; `None` when unset (a
    /// one-node cluster without an inter-node port).
    pub fn cluster_listen_addr(&self) -> Result<Option<SocketAddr>, BrokerError> {
        let Some(text) = &self.cluster_listen else {
            return Ok(None);
        };
        let unresolvable = |reason: String| {
            BrokerError::InvalidSetting(format!(
                "cluster_listen = {text:?} is not a usable HOST:PORT ({reason})"
            ))
        };
        text.to_socket_addrs()
            .map_err(|e| unresolvable(e.to_string()))?
            .next()
            .map(Some)
            .ok_or_else(|| unresolvable("resolves to no address".into()))
    }

    /// The host other nodes reach this node's cluster port at:
    /// `cluster_advertised_host`, else `cluster_listen`'s host; `None`
    /// without a cluster listener.
    pub fn cluster_advertised_host(&self) -> Option<String> {
        if let Some(host) = &self.cluster_advertised_host {
            return Some(host.clone());
        }
        let (host, _) = self.cluster_listen.as_deref()?.rsplit_once(':')?;
        Some(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
        )
    }

    /// The effective voters: `controller_quorum_voters`, or this node
    /// alone at its advertised cluster address (port 0 and the listen host
    /// without a cluster listener: a one-node quorum sends no messages).
    pub fn quorum_voters(&self) -> QuorumVoters {
        if let Some(voters) = &self.controller_quorum_voters {
            return voters.clone();
        }
        let port = self
            .cluster_listen
            .as_deref()
            .and_then(|l| l.rsplit_once(':'))
            .and_then(|(_, port)| port.parse().ok())
            .unwrap_or(0);
        let host = self.cluster_advertised_host().unwrap_or_else(|| {
            self.listen
                .rsplit_once(':')
                .map(|(host, _)| host.trim_start_matches('[').trim_end_matches(']'))
                .unwrap_or("127.0.0.1")
                .to_owned()
        });
        QuorumVoters(vec![QuorumVoter {
            node: self.node_id,
            host,
            port,
        }])
    }

    /// Whether this node votes in the metadata quorum (else it follows the
    /// metadata log as a learner).
    pub fn is_voter(&self) -> bool {
        self.quorum_voters().get(self.node_id).is_some()
    }

    pub fn broker_heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.broker_heartbeat_interval_ms)
    }

    pub fn broker_session_timeout(&self) -> Duration {
        Duration::from_millis(self.broker_session_timeout_ms)
    }

    /// The replication keys, for the replica fetchers and the leaders'
    /// ISR decisions.
    pub fn replication(&self) -> ReplicationConfig {
        ReplicationConfig {
            fetch_max_bytes: self.replica_fetch_max_bytes,
            fetch_wait_max_ms: self.replica_fetch_wait_max_ms,
            fetch_backoff_ms: self.replica_fetch_backoff_ms,
            lag_time_max_ms: self.replica_lag_time_max_ms,
            fetch_response_max_bytes: self.replica_fetch_response_max_bytes,
        }
    }

    /// The resolved Kafka listen address; `None` when `kafka_listen = "off"`.
    pub fn kafka_listen_addr(&self) -> Result<Option<SocketAddr>, BrokerError> {
        if self.kafka_listen.eq_ignore_ascii_case(KAFKA_LISTEN_OFF) {
            return Ok(None);
        }
        let unresolvable = |reason: String| {
            BrokerError::InvalidSetting(format!(
                "kafka_listen = {:?} is not a usable HOST:PORT ({reason})",
                self.kafka_listen
            ))
        };
        self.kafka_listen
            .to_socket_addrs()
            .map_err(|e| unresolvable(e.to_string()))?
            .next()
            .map(Some)
            .ok_or_else(|| unresolvable("resolves to no address".into()))
    }

    /// The resolved listen address.
    pub fn listen_addr(&self) -> Result<SocketAddr, BrokerError> {
        let unresolvable = |reason: String| {
            BrokerError::InvalidSetting(format!(
                "listen = {:?} is not a usable HOST:PORT ({reason})",
                self.listen
            ))
        };
        self.listen
            .to_socket_addrs()
            .map_err(|e| unresolvable(e.to_string()))?
            .next()
            .ok_or_else(|| unresolvable("resolves to no address".into()))
    }

    /// `decompressed_bytes_max_per_request`, or its default: 64 MiB, or
    /// less so that twice it plus one frame fits the in-flight budget (a
    /// small budget must not need a second setting to start).
    pub fn decompressed_bytes_max(&self) -> usize {
        self.decompressed_bytes_max_per_request.unwrap_or_else(|| {
            let room = self
                .inflight_bytes_max_per_shard
                .saturating_sub(self.frame_bytes_max as usize);
            (64 << 20).min(room / 2)
        })
    }

    pub fn port_wait(&self) -> Duration {
        Duration::from_millis(self.port_wait_ms)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    pub fn first_request_timeout(&self) -> Duration {
        Duration::from_millis(self.connection_first_request_timeout_ms)
    }

    /// The node-wide connection limits (see [`crate::connection_limits`]).
    pub fn connection_limits(&self) -> crate::connection_limits::ConnectionLimits {
        crate::connection_limits::ConnectionLimits {
            native_max: self.native_connections_max,
            kafka_max: self.kafka_connections_max,
            per_ip_max: self.connections_max_per_ip,
            per_ip_overrides: self.connections_max_per_ip_overrides.clone(),
        }
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_work_with_no_file() {
        let config = Config::load(None, Overrides::default()).expect("defaults are valid");
        assert_eq!(config.data_dir, PathBuf::from("./fjord-data"));
        assert_eq!(
            config.listen_addr().expect("resolves"),
            "127.0.0.1:9192".parse::<SocketAddr>().expect("literal")
        );
        assert_eq!(config.shards, None);
    }

    #[test]
    fn kafka_listener_settings_from_file_and_flags() {
        let defaults = Config::default();
        assert_eq!(
            defaults.kafka_listen_addr().expect("resolves"),
            Some("127.0.0.1:9092".parse::<SocketAddr>().expect("literal"))
        );
        let mut config = Config::parse(
            "kafka_listen = \"127.0.0.1:19092\"\nkafka_advertised_host = \"kafka.example\"\n",
        )
        .expect("valid toml");
        assert_eq!(config.kafka_listen, "127.0.0.1:19092");
        assert_eq!(
            config.kafka_advertised_host.as_deref(),
            Some("kafka.example")
        );
        config.apply(Overrides {
            kafka_listen: Some("127.0.0.1:0".into()),
            ..Overrides::default()
        });
        assert_eq!(config.kafka_listen, "127.0.0.1:0");
        assert_eq!(
            config.kafka_advertised_host.as_deref(),
            Some("kafka.example")
        );
        config.kafka_listen = "no-port-here".into();
        assert!(config.validate().is_err());
        config.kafka_listen = "off".into();
        assert_eq!(config.kafka_listen_addr().expect("valid"), None);
    }

    #[test]
    fn file_then_overrides() {
        let mut config =
            Config::parse("listen = \"127.0.0.1:7000\"\nshards = 3\nidle_timeout_ms = 500\n")
                .expect("valid toml");
        assert_eq!(config.shards, Some(3));
        config.apply(Overrides {
            listen: Some("127.0.0.1:0".into()),
            ..Overrides::default()
        });
        assert_eq!(config.listen, "127.0.0.1:0");
        assert_eq!(config.idle_timeout_ms, 500);
        assert_eq!(config.shards, Some(3));
    }

    #[test]
    fn producer_state_bounds_come_from_the_file_and_must_be_positive() {
        let config = Config::parse(
            "producer_ids_max_per_partition = 50\nproducer_id_expiration_ms = 60000\n",
        )
        .expect("valid toml");
        let bounds = config.producer_state_config();
        assert_eq!((bounds.producers_max, bounds.expiration_ms), (50, 60_000));
        let zero = Config::parse("producer_ids_max_per_partition = 0\n").expect("valid toml");
        assert!(zero.validate().is_err());
    }

    #[test]
    fn data_path_keys_come_from_file_env_and_flags() {
        let mut config =
            Config::parse("auto_create_topics = false\npartitions_max = 7\n").expect("valid toml");
        assert!(!config.auto_create_topics);
        assert!(
            Config::default().auto_create_topics,
            "on by default, as in Kafka"
        );
        config
            .apply_env(|name| (name == "FJORD_PARTITIONS_MAX").then(|| "9".to_owned()))
            .expect("valid env");
        assert_eq!(config.partitions_max, 9);
        let error = config
            .apply_env(|name| (name == "FJORD_FETCH_BYTES_MAX").then(|| "lots".to_owned()))
            .expect_err("not a number");
        assert!(
            error.to_string().contains("FJORD_FETCH_BYTES_MAX"),
            "{error}"
        );
        config.apply_flags(DataPathFlags {
            partitions_max: Some(11),
            ..DataPathFlags::default()
        });
        assert_eq!(config.partitions_max, 11);
        assert!(config.validate().is_ok());
        config
            .apply_env(|name| {
                (name == "FJORD_LOG_WRITE_RETRY_BACKOFF_MS_MAX").then(|| "50".to_owned())
            })
            .expect("valid env");
        assert_eq!(config.base_log_config().write_retry_backoff_ms_max, 50);
        assert!(
            config.validate().is_err(),
            "the retry backoff maximum is below its minimum"
        );
        config.apply_flags(DataPathFlags {
            log_write_retry_backoff_ms_min: Some(20),
            ..DataPathFlags::default()
        });
        assert!(config.validate().is_ok());
        config.inflight_bytes_max_per_shard = 10;
        assert!(config.validate().is_err());
    }

    /// The Kafka listener's memory bounds come from the environment and
    /// flags, and must fit each other: two frames and a read chunk of
    /// request buffers, a fetch response of response budget, a frame and
    /// twice the decompression bound of in-flight budget.
    #[test]
    fn kafka_memory_bounds_are_set_and_validated() {
        let mut config = Config::default();
        assert!(config.validate().is_ok());
        config
            .apply_env(|name| (name == "FJORD_REQUEST_ELEMENTS_MAX").then(|| "500".to_owned()))
            .expect("valid");
        assert_eq!(config.request_elements_max, 500);
        config.apply_flags(DataPathFlags {
            response_bytes_max_per_shard: Some(32 << 20),
            ..DataPathFlags::default()
        });
        assert_eq!(config.response_bytes_max_per_shard, 32 << 20);
        assert!(config.validate().is_ok());
        let broken: [fn(&mut Config); 4] = [
            |c| c.request_buffer_bytes_max_per_shard = 2 * c.frame_bytes_max as usize,
            |c| c.response_bytes_max_per_shard = c.fetch_bytes_max as usize - 1,
            |c| c.decompressed_bytes_max_per_request = Some(c.inflight_bytes_max_per_shard / 2),
            |c| c.request_elements_max = 0,
        ];
        for breaks in broken {
            let mut config = Config::default();
            breaks(&mut config);
            assert!(config.validate().is_err(), "{config:?}");
        }
    }

    #[test]
    fn connection_limits_from_the_file_and_overrides() {
        let mut config = Config::parse(
            "connections_max_per_ip = 50\n\
             connections_max_per_ip_overrides = { \"127.0.0.2\" = 5000, \"::1\" = 0 }\n\
             kafka_connections_max = 300\n\
             connection_first_request_timeout_ms = 2500\n",
        )
        .expect("valid toml");
        let limits = config.connection_limits();
        assert_eq!(limits.per_ip_max, 50);
        assert_eq!(limits.kafka_max, 300);
        assert_eq!(limits.native_max, Config::default().native_connections_max);
        assert_eq!(
            limits.per_ip_overrides,
            BTreeMap::from([
                ("127.0.0.2".parse().expect("literal"), 5000),
                ("::1".parse().expect("literal"), 0)
            ])
        );
        assert_eq!(config.first_request_timeout(), Duration::from_millis(2500));
        assert!(config.validate().is_ok());
        let described: BTreeMap<&str, String> = config.kafka_broker_configs().into_iter().collect();
        assert_eq!(described["max.connections.per.ip"], "50");
        assert_eq!(
            described["max.connections.per.ip.overrides"],
            "127.0.0.2:5000,[::1]:0"
        );
        assert_eq!(described["max.connections"], "10300");
        config.apply(Overrides {
            connections_max_per_ip_overrides: Some(
                crate::connection_limits::parse_ip_overrides("10.0.0.1:3").expect("valid"),
            ),
            ..Overrides::default()
        });
        assert_eq!(
            config
                .connections_max_per_ip_overrides
                .keys()
                .collect::<Vec<_>>(),
            vec![&"10.0.0.1".parse::<IpAddr>().expect("literal")]
        );
        assert!(
            Config::parse("connections_max_per_ip_overrides = { \"db.example\" = 5 }\n").is_err()
        );
        for zero in [
            "connections_max_per_ip = 0\n",
            "kafka_connections_max = 0\n",
            "connection_first_request_timeout_ms = 0\n",
        ] {
            let config = Config::parse(zero).expect("valid toml");
            assert!(config.validate().is_err(), "{zero}");
        }
    }

    #[test]
    fn quorum_voters_parse_in_kraft_spelling_with_clear_errors() {
        let voters: QuorumVoters = "1@10.0.0.1:9193, 2@node-b:9193,3@[::1]:9194"
            .parse()
            .expect("valid");
        assert_eq!(
            voters.voters(),
            [
                QuorumVoter {
                    node: 1,
                    host: "10.0.0.1".into(),
                    port: 9193
                },
                QuorumVoter {
                    node: 2,
                    host: "node-b".into(),
                    port: 9193
                },
                QuorumVoter {
                    node: 3,
                    host: "::1".into(),
                    port: 9194
                },
            ]
        );
        assert_eq!(
            voters.to_string(),
            "1@10.0.0.1:9193,2@node-b:9193,3@[::1]:9194"
        );
        assert_eq!(voters.to_string().parse::<QuorumVoters>(), Ok(voters));
        for (bad, says) in [
            ("", "empty entry"),
            ("1@a:1,,2@b:1", "empty entry"),
            ("a:9193", "is not ID@HOST:PORT"),
            ("x@a:9193", "node id \"x\""),
            ("-1@a:9193", "node id"),
            ("3000000000@a:9193", "node id"),
            ("1@a", "is not HOST:PORT"),
            ("1@:9193", "no host"),
            ("1@a:0", "port \"0\""),
            ("1@a:65536", "port \"65536\""),
            ("1@a:http", "port \"http\""),
            ("1@a:1,2@b:1,1@c:1", "node 1 is listed twice"),
            ("1@a:1,2@a:1", "nodes 1 and 2 are both listed at a:1"),
            (
                "1@a:1,2@a:2,3@a:3,4@a:4,5@a:5,6@a:6,7@a:7,8@a:8,9@a:9,10@a:10",
                "at most 9",
            ),
        ] {
            let error = bad.parse::<QuorumVoters>().expect_err(bad);
            assert!(error.contains(says), "{bad:?}: {error}");
        }
    }

    #[test]
    fn a_node_without_cluster_settings_is_a_one_node_cluster_of_node_1() {
        let config = Config::load(None, Overrides::default()).expect("defaults are valid");
        assert_eq!(config.node_id, 1);
        assert_eq!(config.cluster_listen_addr().expect("valid"), None);
        assert!(config.is_voter());
        assert_eq!(
            config.quorum_voters().voters(),
            [QuorumVoter {
                node: 1,
                host: "127.0.0.1".into(),
                port: 0
            }]
        );
        assert_eq!(
            (
                config.broker_heartbeat_interval(),
                config.broker_session_timeout()
            ),
            (Duration::from_millis(2000), Duration::from_millis(9000))
        );
        assert_eq!(config.default_replication_factor, 1);
        assert_eq!(config.offsets_topic_replication_factor, 3);
        assert_eq!(config.controller_raft_tick_ms, 100);
        assert_eq!(config.controller_log_reopen_backoff_max_ms, 5_000);
    }

    #[test]
    fn cluster_keys_come_from_file_env_and_flags() {
        let mut config = Config::parse(
            "node_id = 2
\
             listen = \"127.0.0.1:9292\"\n\
             kafka_listen = \"127.0.0.1:9392\"\n\
             cluster_listen = \"127.0.0.1:9293\"\n\
             controller_quorum_voters = \"1@127.0.0.1:9193,2@127.0.0.1:9293,3@127.0.0.1:9393\"\n\
             broker_heartbeat_interval_ms = 500\n\
             broker_session_timeout_ms = 3000\n\
             offsets_topic_replication_factor = 2\n",
        )
        .expect("valid toml");
        assert!(config.validate().is_ok(), "{:?}", config.validate());
        assert!(config.is_voter());
        assert_eq!(
            config.cluster_listen_addr().expect("valid"),
            Some("127.0.0.1:9293".parse().expect("literal"))
        );
        assert_eq!(config.quorum_voters().voters().len(), 3);
        let described: BTreeMap<&str, String> = config.kafka_broker_configs().into_iter().collect();
        assert_eq!(
            described["controller.quorum.voters"],
            "1@127.0.0.1:9193,2@127.0.0.1:9293,3@127.0.0.1:9393"
        );
        assert_eq!(described["broker.session.timeout.ms"], "3000");
        assert_eq!(described["offsets.topic.replication.factor"], "2");
        assert_eq!(described["node.id"], "2");

        config
            .apply_env(|name| match name {
                "FJORD_BROKER_SESSION_TIMEOUT_MS" => Some("4000".into()),
                "FJORD_CONTROLLER_RAFT_TICK_MS" => Some("50".into()),
                "FJORD_CONTROLLER_LOG_REOPEN_BACKOFF_MAX_MS" => Some("2000".into()),
                "FJORD_CLUSTER_ADVERTISED_HOST" => Some("node-2.example".into()),
                _ => None,
            })
            .expect("valid env");
        assert_eq!(config.broker_session_timeout_ms, 4000);
        assert_eq!(config.controller_raft_tick_ms, 50);
        assert_eq!(config.controller_log_reopen_backoff_max_ms, 2000);
        assert!(config.validate().is_ok(), "{:?}", config.validate());
        let mut short = config.clone();
        short.controller_log_reopen_backoff_max_ms = 50;
        let error = short.validate().expect_err("under the minimum backoff");
        assert!(
            error
                .to_string()
                .contains("controller_log_reopen_backoff_max_ms"),
            "{error}"
        );
        assert_eq!(
            config.cluster_advertised_host().as_deref(),
            Some("node-2.example")
        );
        let error = config
            .apply_env(|name| {
                (name == "FJORD_CONTROLLER_QUORUM_VOTERS").then(|| "1@a:1,1@b:1".to_owned())
            })
            .expect_err("duplicate id");
        let text = error.to_string();
        assert!(text.contains("FJORD_CONTROLLER_QUORUM_VOTERS"), "{text}");
        assert!(text.contains("listed twice"), "{text}");

        config.apply_cluster_flags(ClusterFlags {
            cluster_listen: Some("127.0.0.1:9493".into()),
            controller_quorum_voters: Some(
                "1@127.0.0.1:9193,2@node-2.example:9493"
                    .parse()
                    .expect("valid"),
            ),
            broker_heartbeat_interval_ms: Some(100),
            ..ClusterFlags::default()
        });
        assert_eq!(config.cluster_listen.as_deref(), Some("127.0.0.1:9493"));
        assert_eq!(config.broker_heartbeat_interval_ms, 100);
        assert!(
            config.validate().is_ok(),
            "listed at its advertised host: {:?}",
            config.validate()
        );
        // A voters list in the file that does not parse names the key.
        let error = Config::parse("controller_quorum_voters = \"1@a:0\"\n").expect_err("port 0");
        assert!(error.contains("controller_quorum_voters"), "{error}");
    }

    #[test]
    fn cluster_settings_that_cannot_work_are_refused() {
        let three = "1@127.0.0.1:9193,2@127.0.0.1:9293,3@127.0.0.1:9393";
        let valid = || Config {
            node_id: 1,
            listen: "127.0.0.1:9192".into(),
            kafka_listen: "127.0.0.1:9092".into(),
            cluster_listen: Some("127.0.0.1:9193".into()),
            controller_quorum_voters: Some(three.parse().expect("valid")),
            ..Config::default()
        };
        assert!(valid().validate().is_ok(), "{:?}", valid().validate());
        // Listening on every interface, listed at a routable address.
        let wildcard = Config {
            cluster_listen: Some("0.0.0.0:9193".into()),
            ..valid()
        };
        assert!(wildcard.validate().is_ok(), "{:?}", wildcard.validate());
        // A learner: not among the voters, with its own cluster port.
        let learner = Config {
            node_id: 4,
            cluster_listen: Some("127.0.0.1:9493".into()),
            ..valid()
        };
        assert!(learner.validate().is_ok(), "{:?}", learner.validate());
        assert!(!learner.is_voter());

        type Breaks = fn(&mut Config);
        let broken: [(Breaks, &str); 11] = [
            (|c| c.cluster_listen = None, "needs cluster_listen"),
            (
                |c| c.cluster_listen = Some("127.0.0.1:9999".into()),
                "lists this node (1) at 127.0.0.1:9193",
            ),
            (
                |c| c.cluster_listen = Some("127.0.0.1:0".into()),
                "lists this node (1)",
            ),
            (
                |c| c.cluster_listen = Some("10.1.2.3:9193".into()),
                "but its cluster_listen is \"10.1.2.3:9193\"",
            ),
            (
                |c| c.cluster_listen = Some("nowhere".into()),
                "cluster_listen",
            ),
            (
                |c| c.kafka_listen = "127.0.0.1:9193".into(),
                "also kafka_listen's address",
            ),
            (
                |c| c.broker_session_timeout_ms = c.broker_heartbeat_interval_ms,
                "must exceed broker_heartbeat_interval_ms",
            ),
            (
                |c| c.broker_lease_margin_ms = 7_000,
                "the lease must outlast a heartbeat",
            ),
            (|c| c.offsets_topic_replication_factor = 0, "at least 1"),
            (|c| c.node_id = NODE_ID_MAX + 1, "int32"),
            (|c| c.node_id = 0, "node ids start at 1"),
        ];
        for (breaks, says) in broken {
            let mut config = valid();
            breaks(&mut config);
            let error = config.validate().expect_err(says).to_string();
            assert!(error.contains(says), "{says:?} not in {error}");
        }
        // Without other nodes no cluster listener is needed, with or
        // without the voters spelled out.
        let alone = Config {
            node_id: 3,
            cluster_listen: None,
            controller_quorum_voters: Some("3@127.0.0.1:9393".parse().expect("valid")),
            ..valid()
        };
        assert!(alone.validate().is_ok(), "{:?}", alone.validate());
    }

    #[test]
    fn replication_keys_default_as_kafka_and_come_from_file_env_and_flags() {
        let defaults = Config::default().replication();
        assert_eq!(
            defaults,
            ReplicationConfig {
                fetch_max_bytes: 1_048_576,
                fetch_wait_max_ms: 500,
                fetch_backoff_ms: 1_000,
                lag_time_max_ms: 30_000,
                fetch_response_max_bytes: 10_485_760,
            }
        );
        assert_eq!(ReplicationConfig::default(), defaults);
        let mut config = Config::parse(
            "replica_fetch_max_bytes = 65536\n\
             replica_fetch_wait_max_ms = 250\n\
             replica_lag_time_max_ms = 10000\n",
        )
        .expect("valid toml");
        assert!(config.validate().is_ok(), "{:?}", config.validate());
        config
            .apply_env(|name| match name {
                "FJORD_REPLICA_FETCH_BACKOFF_MS" => Some("300".into()),
                "FJORD_REPLICA_FETCH_RESPONSE_MAX_BYTES" => Some("131072".into()),
                "FJORD_REPLICA_FETCH_WAIT_MAX_MS" => Some("200".into()),
                _ => None,
            })
            .expect("valid env");
        config.apply_cluster_flags(ClusterFlags {
            replica_lag_time_max_ms: Some(20_000),
            ..ClusterFlags::default()
        });
        let replication = config.replication();
        assert_eq!(
            replication,
            ReplicationConfig {
                fetch_max_bytes: 65_536,
                fetch_wait_max_ms: 200,
                fetch_backoff_ms: 300,
                lag_time_max_ms: 20_000,
                fetch_response_max_bytes: 131_072,
            }
        );
        assert_eq!(replication.fetch_wait_max(), Duration::from_millis(200));
        assert_eq!(replication.fetch_backoff(), Duration::from_millis(300));
        let described: BTreeMap<&str, String> = config.kafka_broker_configs().into_iter().collect();
        for (name, value) in [
            ("replica.fetch.max.bytes", "65536"),
            ("replica.fetch.wait.max.ms", "200"),
            ("replica.fetch.backoff.ms", "300"),
            ("replica.lag.time.max.ms", "20000"),
            ("replica.fetch.response.max.bytes", "131072"),
        ] {
            assert_eq!(described[name], value, "{name}");
        }
        let error = config
            .apply_env(|name| (name == "FJORD_REPLICA_FETCH_MAX_BYTES").then(|| "-1".to_owned()))
            .expect_err("negative bytes")
            .to_string();
        assert!(error.contains("FJORD_REPLICA_FETCH_MAX_BYTES"), "{error}");
    }

    #[test]
    fn replication_keys_that_cannot_work_are_refused_with_their_names() {
        type Breaks = fn(&mut Config);
        let broken: [(Breaks, &str); 6] = [
            (
                |c| c.replica_fetch_max_bytes = 0,
                "replica_fetch_max_bytes must be at least 1",
            ),
            (
                |c| c.replica_fetch_response_max_bytes = c.replica_fetch_max_bytes - 1,
                "replica_fetch_response_max_bytes = 1048575 is below replica_fetch_max_bytes",
            ),
            (
                |c| c.replica_lag_time_max_ms = 0,
                "replica_lag_time_max_ms must be at least 1",
            ),
            (
                |c| c.replica_fetch_wait_max_ms = 0,
                "replica_fetch_wait_max_ms must be at least 1",
            ),
            (
                |c| c.replica_fetch_wait_max_ms = c.replica_lag_time_max_ms,
                "must be below replica_lag_time_max_ms = 30000",
            ),
            (
                |c| c.replica_fetch_backoff_ms = 0,
                "replica_fetch_backoff_ms must be at least 1",
            ),
        ];
        for (breaks, says) in broken {
            let mut config = Config::default();
            breaks(&mut config);
            let error = config.validate().expect_err(says).to_string();
            assert!(error.contains(says), "{says:?} not in {error}");
        }
        assert!(Config::default().validate().is_ok());
    }

    /// The example configs in `deploy/` are valid, and the three nodes'
    /// files make one cluster: the same voters, each voter at its own
    /// node's cluster_listen, distinct ids, ports and data dirs.
    #[test]
    fn the_example_configs_in_deploy_are_valid_and_agree() {
        let single = Config::parse(include_str!("../../deploy/fjord.toml.example"))
            .expect("fjord.toml.example parses");
        single.validate().expect("fjord.toml.example is valid");
        assert_eq!(single, Config::default(), "the example shows the defaults");
        let nodes: Vec<Config> = [
            include_str!("../../deploy/cluster/node1.toml"),
            include_str!("../../deploy/cluster/node2.toml"),
            include_str!("../../deploy/cluster/node3.toml"),
        ]
        .into_iter()
        .map(|text| Config::parse(text).expect("node config parses"))
        .collect();
        for (i, node) in nodes.iter().enumerate() {
            node.validate().expect("node config is valid");
            assert_eq!(node.node_id, i as u32 + 1);
            assert!(node.is_voter());
            assert_eq!(node.quorum_voters(), nodes[0].quorum_voters());
            let me = node
                .quorum_voters()
                .get(node.node_id)
                .cloned()
                .expect("listed");
            assert_eq!(
                Some(format!("{}:{}", me.host, me.port)),
                node.cluster_listen
            );
        }
        let distinct = |key: fn(&Config) -> String| {
            let values: std::collections::BTreeSet<String> = nodes.iter().map(key).collect();
            values.len() == nodes.len()
        };
        assert!(distinct(|c| c.listen.clone()));
        assert!(distinct(|c| c.kafka_listen.clone()));
        assert!(distinct(|c| c.data_dir.display().to_string()));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() {
        let error = Config::parse("idle_timeout = 5\n").expect_err("typo must fail");
        assert!(error.contains("idle_timeout"), "{error}");
        let mut config = Config::default();
        config.apply(Overrides {
            shards: Some(0),
            ..Overrides::default()
        });
        assert!(matches!(
            config.validate(),
            Err(BrokerError::InvalidSetting(_))
        ));
        config = Config {
            listen: "no-port-here".into(),
            ..Config::default()
        };
        assert!(config.validate().is_err());
    }
}
