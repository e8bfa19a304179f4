//! Broker startup and shutdown, on the main thread: checks the environment,
//! starts one shard per CPU, publishes the address, waits for SIGTERM or
//! SIGINT (or a failed shard) and stops the shards.
//!
//! The main thread serves no traffic; after startup it only waits.

use std::net::{IpAddr, SocketAddr, TcpListener as StdTcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use fjord_net::ConnectionConfig;
use fjord_schema::{NodeId, ShardId};
use glommio::{CpuSet, ExecutorJoinHandle};

use crate::config::Config;
use crate::connection_limits::ConnectionTable;
use crate::controller::driver::{ClusterConfig, Voter};
use crate::controller::import;
use crate::controller::state::{offsets_topic_overrides, ControllerConfig};
use crate::datadir::DataDir;
use crate::engine::{BrokerView, EngineLimits};
use crate::error::BrokerError;
use crate::group::offsets_log::OFFSETS_TOPIC;
use crate::lease::BrokerLease;
use crate::mesh::mesh_ends;
use crate::metadata::image::{BrokerEndpoints, Endpoint, PartitionImage, TopicId, TopicImage};
use crate::metadata::registry::TopicRegistry;
use crate::shard::{self, ControllerBoot, ShardBoot, ShardEvent, ShardSpec};
use crate::signals::Signals;
use crate::topic::{TopicConfig, TopicError};

/// How long a shard may take to create its executor and bind.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the main thread looks for a failed shard while waiting for
/// signals.
const SUPERVISE_INTERVAL: Duration = Duration::from_millis(100);

/// Runs the broker until SIGTERM/SIGINT. `Ok` is a clean shutdown.
pub fn run(config: Config) -> Result<(), BrokerError> {
    let listen = config.listen_addr()?;
    let kafka_listen = config.kafka_listen_addr()?;
    let cpus = online_cpus()?;
    let shards = config.shards.unwrap_or(cpus.len());
    if shards > cpus.len() {
        return Err(BrokerError::TooManyShards {
            shards,
            cpus: cpus.len(),
        });
    }
    let shard_count = u16::try_from(shards).map_err(|_| {
        BrokerError::InvalidSetting(format!("shards = {shards} is more than 65535"))
    })?;
    let data_dir = DataDir::open(&config.data_dir)?;
    data_dir.claim_for_node(config.node_id)?;
    let node = NodeId(config.node_id);
    // This broker's lease: written by shard 0's lifecycle, read by every
    // shard (`controller::driver::lifecycle::BrokerLease`).
    let lease = Arc::new(BrokerLease::new());
    let cluster = cluster_config(&config, &data_dir, shard_count, lease.clone())?;
    // The metadata log as on disk: what this node knew was committed.
    let recovered = crate::controller::driver::recover(&cluster)?;
    let (image, bootstrap) = if recovered.image.cluster_id().is_some() {
        retire_legacy_registry(&data_dir);
        (recovered.image.clone(), Vec::new())
    } else if cluster.voters.len() == 1 && cluster.voters[0].node == node {
        // A one-node cluster's first start on this log: a pre-cluster data
        // dir's topics (and the offsets topic) become its first records.
        let mut legacy =
            TopicRegistry::open(data_dir.path(), node, shard_count, config.partitions_max)?;
        legacy.adopt_untracked_overrides(&TopicConfig::from_log_config(&config.base_log_config()));
        let legacy_image = legacy.image().clone();
        drop(legacy);
        let offsets = offsets_topic(&config, node)?;
        let adopted = Arc::new(import::adopt(&legacy_image, node, Some(offsets)));
        let producer_ids_next = crate::partition::producer_ids::legacy_next(data_dir.path())
            .map_err(|e| BrokerError::InvalidSetting(format!("producer id counter: {e}")))?;
        let records = import::records(&adopted, producer_ids_next);
        (adopted, records)
    } else {
        (recovered.image.clone(), Vec::new())
    };
    // This node's shard table, fitted to the image: every local replica
    // goes back to the shard that holds its log.
    let registry = TopicRegistry::open_following(
        data_dir.path(),
        node,
        shard_count,
        config.partitions_max,
        image,
    )?;
    let catalog = Arc::new(registry.catalog());
    let mut registry = Some(registry);
    let mut controller = Some(ControllerBoot {
        cluster,
        recovered,
        bootstrap,
        meta: data_dir.meta_file(),
    });
    let serving = Arc::new(AtomicBool::new(false));
    let mut meshes: Vec<_> = if shards > 1 {
        mesh_ends(shards, config.mesh_channel_capacity)
            .into_iter()
            .map(Some)
            .collect()
    } else {
        vec![None]
    };
    let drained = Arc::new(AtomicUsize::new(0));
    let mut boot = |index: usize| ShardBoot {
        mesh: meshes[index].take(),
        registry: if index == 0 { registry.take() } else { None },
        controller: if index == 0 { controller.take() } else { None },
        serving: serving.clone(),
        catalog: catalog.clone(),
        drained: drained.clone(),
    };
    let private_addrs = private_addrs(&config, listen, shards)?;
    // We hold the data dir lock, so no broker runs on it: a port in use may
    // still be held by our SIGKILLed predecessor's lingering listeners.
    let port_wait = config.port_wait();
    wait_port_free(listen, "the shared port", port_wait)?;
    if let Some(kafka) = kafka_listen {
        wait_port_free(kafka, "the Kafka port", port_wait)?;
    }
    for addr in private_addrs.iter().flatten() {
        wait_port_free(
            *addr,
            "a per-shard port (listen port + 1 + shard)",
            port_wait,
        )?;
    }
    let signals = Signals::block().map_err(BrokerError::Signals)?;

    let stop = Arc::new(AtomicBool::new(false));
    let (events_tx, events) = mpsc::channel();
    let mut fleet = Fleet {
        handles: Vec::new(),
        starts: Vec::new(),
        stop: stop.clone(),
    };
    // Built before any shard starts; the shards' one shared mutable state
    // (ARCHITECTURE.md, "Decisions").
    let connection_table = ConnectionTable::new(&config.connection_limits());
    let spec = |index: usize, shared_addr: SocketAddr, kafka_addr: Option<SocketAddr>| ShardSpec {
        shard: ShardId(index as u16),
        cpu: cpus[index],
        shared_addr,
        private_addr: private_addrs[index],
        kafka_addr,
        io_memory_bytes: config.io_memory_bytes,
        connections_max: config.connections_max_per_shard,
        connection: ConnectionConfig {
            frame_bytes_max: config.frame_bytes_max,
            write_queue_bytes_max: config.write_queue_bytes_max,
            idle_timeout: config.idle_timeout(),
            first_request_timeout: config.first_request_timeout(),
        },
        connection_table: connection_table.clone(),
        lease: Some(lease.clone()),
        shutdown_grace: config.shutdown_grace(),
        shard_count: shards,
        data_dir: data_dir.path().to_owned(),
        base_log: config.base_log_config(),
        batch_cache_bytes_max: config.batch_cache_bytes_max_per_shard,
        limits: EngineLimits {
            inflight_bytes_max: config.inflight_bytes_max_per_shard,
            fetch_bytes_max: config.fetch_bytes_max as usize,
            fetch_wait_max: Duration::from_millis(config.fetch_wait_ms_max),
            auto_create_topics: config.auto_create_topics,
            request_buffer_bytes_max: config.request_buffer_bytes_max_per_shard,
            response_bytes_max: config.response_bytes_max_per_shard,
            decompressed_bytes_max_per_request: config.decompressed_bytes_max(),
            request_elements_max: config.request_elements_max,
        },
        default_partitions: config.default_partitions,
        node_id: NodeId(config.node_id),
        group: config.group_config(),
        group_parked_max: config.group_parked_requests_max_per_shard,
        flush_interval: Duration::from_millis(config.flush_interval_ms),
        housekeeping_interval: Duration::from_millis(config.housekeeping_interval_ms),
        producer_state: config.producer_state_config(),
        replication: config.replication(),
    };

    // Shard 0 binds first so that with port 0 the others bind the port it
    // got (they share it through SO_REUSEPORT).
    let mut bound: Vec<Option<Bound>> = vec![None; shards];
    let result = (|| {
        fleet.spawn(spec(0, listen, kafka_listen), boot(0), &events_tx)?;
        wait_bound(&events, &mut bound[..1])?;
        let shared = bound[0].map_or(listen, |(shared, _, _)| shared);
        let kafka = bound[0].map_or(kafka_listen, |(_, _, kafka)| kafka);

        for index in 1..shards {
            fleet.spawn(spec(index, shared, kafka), boot(index), &events_tx)?;
        }
        wait_bound(&events, &mut bound)?;
        Ok((shared, kafka))
    })();
    let shard_ports: Vec<u16> = bound
        .iter()
        .map(|b| {
            b.and_then(|(_, private, _)| private)
                .map_or(0, |a| a.port())
        })
        .collect();
    let (shared, kafka) = match result {
        Ok(bound) => bound,
        Err(error) => {
            let failures = fleet.stop();
            // An executor that did not start reports why only through its
            // join handle.
            if let BrokerError::Executor { shard, .. } = error {
                if let Some((_, reason)) = failures.into_iter().find(|(s, _)| *s == shard) {
                    return Err(BrokerError::Executor { shard, reason });
                }
            }
            return Err(error);
        }
    };

    let view = Arc::new(BrokerView {
        node_id: NodeId(config.node_id),
        host: config
            .advertised_host
            .clone()
            .unwrap_or_else(|| advertised_default(shared.ip())),
        port: shared.port(),
        kafka_host: match (&config.kafka_advertised_host, kafka) {
            (Some(host), _) => host.clone(),
            (None, Some(kafka)) => advertised_default(kafka.ip()),
            (None, None) => String::new(),
        },
        kafka_port: kafka.map_or(0, |k| k.port()),
        shard_ports: if config.shard_ports {
            shard_ports
        } else {
            Vec::new()
        },
        kafka_configs: config.kafka_broker_configs(),
    });
    for start in fleet.starts.drain(..) {
        let _ = start.send(view.clone());
    }
    // Clients and scripts learn the address only once recovery decided:
    // a shard that cannot recover stops the broker before anything says
    // it listens.
    match wait_recovered(&signals, &events, shards) {
        Ok(true) => {}
        Ok(false) => {
            fleet.stop();
            return Ok(());
        }
        Err(error) => {
            fleet.stop();
            return Err(error);
        }
    }
    match kafka {
        Some(kafka) => {
            if let Err(error) = data_dir.write_addr_file(crate::datadir::KAFKA_ADDR_FILE, kafka) {
                fleet.stop();
                return Err(error);
            }
        }
        // A previous run's address must not point clients at nothing.
        None => data_dir.remove_addr_file(crate::datadir::KAFKA_ADDR_FILE),
    }
    let addr_file = match data_dir.write_addr(shared) {
        Ok(path) => path,
        Err(error) => {
            fleet.stop();
            return Err(error);
        }
    };
    tracing::info!(
        addr = %shared,
        shards,
        shard_ports = ?view.shard_ports,
        data_dir = %data_dir.path().display(),
        addr_file = %addr_file.display(),
        "fjord listening"
    );
    println!("fjord: listening on {shared}");
    match kafka {
        Some(kafka) => println!("fjord: kafka listening on {kafka}"),
        None => println!("fjord: kafka listener off"),
    }

    let outcome = supervise(&signals, &events);
    data_dir.remove_addr();
    let failures = fleet.stop();
    outcome?;
    match failures.into_iter().next() {
        Some((shard, reason)) => Err(BrokerError::ShardFailed { shard, reason }),
        None => {
            tracing::info!("fjord stopped");
            Ok(())
        }
    }
}

/// The shards started so far.
struct Fleet {
    handles: Vec<ExecutorJoinHandle<()>>,
    /// Senders of the broker view, one per shard still waiting to serve.
    starts: Vec<mpsc::Sender<Arc<BrokerView>>>,
    stop: Arc<AtomicBool>,
}

impl Fleet {
    fn spawn(
        &mut self,
        spec: ShardSpec,
        boot: ShardBoot,
        events: &mpsc::Sender<ShardEvent>,
    ) -> Result<(), BrokerError> {
        let (start_tx, start_rx) = mpsc::channel();
        let handle = shard::spawn(spec, self.stop.clone(), events.clone(), start_rx, boot)?;
        self.handles.push(handle);
        self.starts.push(start_tx);
        Ok(())
    }

    /// Stops every shard and waits for them; returns the ones that failed.
    fn stop(&mut self) -> Vec<(usize, String)> {
        self.stop.store(true, Ordering::Release);
        // Shards still waiting for the view see the channel close and exit.
        self.starts.clear();
        let mut failures = Vec::new();
        for (shard, handle) in self.handles.drain(..).enumerate() {
            if let Err(error) = handle.join() {
                failures.push((shard, error.to_string()));
            }
        }
        failures
    }
}

/// A shard's bound addresses: shared port, private port, Kafka port.
type Bound = (SocketAddr, Option<SocketAddr>, Option<SocketAddr>);

/// Waits until every shard with a slot in `bound` (shards `0..bound.len()`)
/// has reported its addresses. Reports may arrive in any order.
fn wait_bound(
    events: &mpsc::Receiver<ShardEvent>,
    bound: &mut [Option<Bound>],
) -> Result<(), BrokerError> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    while let Some(missing) = bound.iter().position(Option::is_none) {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(ShardEvent::Bound {
                shard,
                shared,
                private,
                kafka,
            }) => {
                if let Some(slot) = bound.get_mut(usize::from(shard.get())) {
                    *slot = Some((shared, private, kafka));
                }
            }
            // Sent only after the view, which comes after binding.
            Ok(ShardEvent::Recovered { .. }) => {}
            Ok(ShardEvent::Exited { shard, result }) => {
                let reason = match result {
                    Err(reason) => reason,
                    Ok(()) => "exited before serving".to_owned(),
                };
                return Err(startup_error(shard, reason));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(BrokerError::ShardStartup {
                    shard: missing,
                    reason: format!("did not bind within {STARTUP_TIMEOUT:?}"),
                })
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(BrokerError::ShardStartup {
                    shard: missing,
                    reason: "all shards are gone".to_owned(),
                })
            }
        }
    }
    Ok(())
}

/// Waits until every shard has recovered; `false` when a stop signal came
/// first. Recovery has no deadline (a large active segment takes as long
/// to scan as it takes); a shard that fails ends the wait with its reason.
fn wait_recovered(
    signals: &Signals,
    events: &mpsc::Receiver<ShardEvent>,
    shards: usize,
) -> Result<bool, BrokerError> {
    let mut recovered = vec![false; shards];
    while recovered.iter().any(|r| !r) {
        match signals.wait(SUPERVISE_INTERVAL) {
            Ok(Some(name)) => {
                tracing::info!(signal = name, "stopping during recovery");
                return Ok(false);
            }
            Ok(None) => {}
            Err(error) => return Err(BrokerError::Signals(error)),
        }
        while let Ok(event) = events.try_recv() {
            match event {
                ShardEvent::Recovered { shard } => {
                    if let Some(slot) = recovered.get_mut(usize::from(shard.get())) {
                        *slot = true;
                    }
                }
                ShardEvent::Exited { shard, result } => {
                    let reason = match result {
                        Err(reason) => reason,
                        Ok(()) => "exited during recovery".to_owned(),
                    };
                    return Err(startup_error(shard, reason));
                }
                ShardEvent::Bound { .. } => {}
            }
        }
    }
    Ok(true)
}

/// Executor creation fails inside the shard thread, so its error comes back
/// as a shard exit; that one gets the io_uring hint.
/// `__consumer_offsets` as a one-node cluster creates it on its first start
/// (see `controller::import`). Retention is off (`retention.ms = -1`, no
/// size limit) until compaction exists: deleting old segments could drop
/// the latest commit of a live group. Commits are acknowledged only after
/// an fdatasync (`flush.before.ack`). A cluster's controller creates it
/// with the same configs (`ControllerState::tick`).
fn offsets_topic(config: &Config, node: NodeId) -> Result<TopicImage, BrokerError> {
    let mut topic = TopicConfig::from_log_config(&config.base_log_config());
    let overrides = offsets_topic_overrides(&topic);
    let invalid = |e: TopicError| {
        BrokerError::InvalidSetting(format!("cannot create {OFFSETS_TOPIC}: {}", e.message))
    };
    topic
        .apply(overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(invalid)?;
    Ok(TopicImage {
        id: TopicId::random(),
        name: OFFSETS_TOPIC.to_owned(),
        config: topic,
        created_ms: crate::clock::now_ms(),
        overrides: Some(overrides),
        partitions: vec![PartitionImage::single(node); config.offsets_topic_partitions as usize],
    })
}

/// Once the metadata log holds the cluster, a pre-cluster `topics.toml`
/// is history: renamed (kept for the operator), never read again.
fn retire_legacy_registry(data_dir: &DataDir) {
    let legacy = data_dir
        .path()
        .join(crate::metadata::registry::REGISTRY_FILE);
    if legacy.exists() {
        let retired = legacy.with_extension("toml.imported");
        match std::fs::rename(&legacy, &retired) {
            Ok(()) => {
                tracing::info!(from = %legacy.display(), to = %retired.display(), "the pre-cluster topic registry was imported into the metadata log; renamed")
            }
            Err(error) => {
                tracing::warn!(%error, path = %legacy.display(), "cannot rename the imported topic registry")
            }
        }
    }
}

/// The controller's settings from this node's configuration. The
/// endpoints are filled in on shard 0 once the listeners are bound.
fn cluster_config(
    config: &Config,
    data_dir: &DataDir,
    shard_count: u16,
    lease: Arc<BrokerLease>,
) -> Result<ClusterConfig, BrokerError> {
    let node = NodeId(config.node_id);
    let voters: Vec<Voter> = config
        .quorum_voters()
        .voters()
        .iter()
        .map(|v| Voter {
            node: NodeId(v.node),
            host: v.host.clone(),
            port: v.port,
        })
        .collect();
    let configured_listen = config.cluster_listen_addr()?;
    let cluster_listen = configured_listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let base = config.base_log_config();
    Ok(ClusterConfig {
        node,
        controller: ControllerConfig {
            base,
            voters: voters.iter().map(|v| v.node).collect(),
            defaults: TopicConfig::from_log_config(&base),
            default_partitions: config.default_partitions,
            default_replication_factor: config.default_replication_factor,
            offsets_partitions: config.offsets_topic_partitions,
            offsets_replication_factor: config.offsets_topic_replication_factor,
            partitions_max: config.partitions_max,
            session_timeout_ms: config.broker_session_timeout_ms,
            producer_id_block_size: PRODUCER_ID_BLOCK_SIZE,
            // Off until followers replicate (issue 14): every partition has one replica.
            leader_rebalance_interval_ms: 0,
        },
        voters,
        cluster_listen,
        dir: data_dir.path().join(METADATA_LOG_DIR),
        endpoints: BrokerEndpoints {
            cluster: configured_listen.map(|addr| Endpoint {
                host: config
                    .cluster_advertised_host()
                    .unwrap_or_else(|| addr.ip().to_string()),
                port: addr.port(),
            }),
            ..BrokerEndpoints::default()
        },
        shards: shard_count,
        rack: None,
        heartbeat_interval_ms: config.broker_heartbeat_interval_ms,
        raft_tick_ms: config.controller_raft_tick_ms,
        log_reopen_backoff_max_ms: config.controller_log_reopen_backoff_max_ms,
        write_fault: crate::controller::quorum::WriteFault::default(),
        lease_margin_ms: config.broker_lease_margin_ms,
        lease,
    })
}

/// The metadata log's directory in the data dir (KRaft's name).
pub const METADATA_LOG_DIR: &str = "__cluster_metadata-0";

/// Producer ids per block the controller allots a shard.
const PRODUCER_ID_BLOCK_SIZE: u32 = 1000;

fn startup_error(shard: ShardId, reason: String) -> BrokerError {
    let shard = usize::from(shard.get());
    if reason == shard::EXECUTOR_NOT_STARTED {
        BrokerError::Executor { shard, reason }
    } else {
        BrokerError::ShardStartup { shard, reason }
    }
}

/// Waits for a stop signal; returns early with an error if a shard exits on
/// its own.
fn supervise(signals: &Signals, events: &mpsc::Receiver<ShardEvent>) -> Result<(), BrokerError> {
    loop {
        match signals.wait(SUPERVISE_INTERVAL) {
            Ok(Some(name)) => {
                tracing::info!(signal = name, "shutting down");
                return Ok(());
            }
            Ok(None) => {}
            Err(error) => return Err(BrokerError::Signals(error)),
        }
        if let Ok(ShardEvent::Exited { shard, result }) = events.try_recv() {
            let reason = match result {
                Err(reason) => reason,
                Ok(()) => "exited unexpectedly".to_owned(),
            };
            tracing::error!(%shard, %reason, "shard stopped; shutting the broker down");
            return Err(BrokerError::ShardFailed {
                shard: usize::from(shard.get()),
                reason,
            });
        }
    }
}

/// CPU ids this process may run on, ascending.
fn online_cpus() -> Result<Vec<usize>, BrokerError> {
    let set = CpuSet::online().map_err(|e| BrokerError::Executor {
        shard: 0,
        reason: format!("cannot read the CPU topology: {e}"),
    })?;
    let mut cpus: Vec<usize> = set.iter().map(|location| location.cpu).collect();
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// Per-shard listen addresses: `port + 1 + shard`, or port 0 (any free
/// port) when the shared port is itself 0.
fn private_addrs(
    config: &Config,
    listen: SocketAddr,
    shards: usize,
) -> Result<Vec<Option<SocketAddr>>, BrokerError> {
    (0..shards)
        .map(|index| {
            if !config.shard_ports {
                return Ok(None);
            }
            if listen.port() == 0 {
                return Ok(Some(SocketAddr::new(listen.ip(), 0)));
            }
            let port = u16::try_from(usize::from(listen.port()) + 1 + index).map_err(|_| {
                BrokerError::InvalidSetting(format!(
                    "listen port {} leaves no room for {shards} per-shard ports above it; \
                     lower the port or set shard_ports = false",
                    listen.port()
                ))
            })?;
            Ok(Some(SocketAddr::new(listen.ip(), port)))
        })
        .collect()
}

/// glommio binds with SO_REUSEPORT, which would silently share a port with
/// another process that did the same (a stale broker). A plain bind (no
/// SO_REUSEPORT) fails if anything listens there; it is released before the
/// shards bind.
fn check_port_free(addr: SocketAddr, what: &str) -> Result<(), BrokerError> {
    if addr.port() == 0 {
        return Ok(());
    }
    match StdTcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {
            Err(BrokerError::PortInUse {
                addr,
                what: format!(" ({what})"),
            })
        }
        Err(source) => Err(BrokerError::Bind { addr, source }),
    }
}

/// [`check_port_free`], retried until `wait` has passed: a SIGKILLed
/// broker's listeners linger (and even accept) for a few milliseconds after
/// the process is reaped, while io_uring tears down. Called only once the
/// data dir lock is ours, so the holder cannot be a live broker of this
/// data dir; anything else still holding the port gets today's error.
fn wait_port_free(addr: SocketAddr, what: &str, wait: Duration) -> Result<(), BrokerError> {
    let deadline = Instant::now() + wait;
    loop {
        match check_port_free(addr, what) {
            Err(BrokerError::PortInUse { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result,
        }
    }
}

/// An unspecified listen address (0.0.0.0, ::) is not something a client
/// can dial; advertise loopback and let `advertised_host` say better.
fn advertised_default(ip: IpAddr) -> String {
    if ip.is_unspecified() {
        tracing::warn!(
            "listening on {ip}: advertising localhost; set advertised_host to a reachable name"
        );
        "localhost".to_owned()
    } else {
        ip.to_string()
    }
}
