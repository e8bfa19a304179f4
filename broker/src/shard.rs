//! One shard: a glommio executor pinned to a CPU that opens the logs of the
//! partitions placed on it, connects to the other shards, accepts and
//! serves native-protocol and Kafka connections (one accept loop, one
//! connection core), runs its flush-policy timer and
//! housekeeping, and on shutdown drains, waits for every shard to drain,
//! then flushes and closes its logs.

use std::cell::Cell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use fjord_net::driver::{self, DriverError, RequestBuffers};
use fjord_net::{ConnectionConfig, ConnectionError, NativeFramer, StopSignal};
use fjord_schema::{NodeId, ShardId};
use fjord_storage::{BatchCache, CacheConfig, LogConfig, SystemClock};
use futures_lite::future;
use glommio::net::{TcpListener, TcpStream};
use glommio::timer::sleep;
use glommio::{ExecutorJoinHandle, Latency, LocalExecutorBuilder, Placement, Shares};

use crate::config::ReplicationConfig;
use crate::connection_limits::{Admitted, ConnectionTable, Listener};
use crate::controller::driver::lifecycle::BrokerLease;
use crate::controller::driver::{ClusterConfig, Recovered};
use crate::controller::records::MetadataRecord;
use crate::datadir::MetaFile;
use crate::engine::{BrokerView, Engine, EngineLimits};
use crate::error::BrokerError;
use crate::group::coordinator::GroupConfig;
use crate::group::host::GroupHost;
use crate::kafka;
use crate::kafka::handler::KafkaHandler;
use crate::mesh::{Mesh, MeshEnds};
use crate::metadata::catalog::Catalog;
use crate::metadata::image::{BrokerEndpoints, Endpoint};
use crate::metadata::registry::TopicRegistry;
use crate::partition::manager::{PartitionManager, DEFAULT_ACK_TIMEOUT};
use crate::partition::producer_state::ProducerStateConfig;
use crate::replication::driver::{start_fetchers, OwnedLogs, ReplicaFetchers, TransportNetwork};
use crate::replication::fetcher::ReplicaFetcherConfig;
use crate::replication::server::ReplicationService;
use crate::service::{ShardService, TopicAdmin};

/// How often a shard checks the process-wide stop flag. Shutdown latency
/// only; requests never wait on it.
const STOP_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// At most one warning about refused connections per shard this often.
const REFUSAL_WARN_INTERVAL: Duration = Duration::from_secs(10);
/// Back-off after a failed accept (EMFILE and the like).
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(20);

/// Everything a shard needs to start.
#[derive(Debug, Clone)]
pub struct ShardSpec {
    pub shard: ShardId,
    pub cpu: usize,
    /// The shared port (SO_REUSEPORT across shards).
    pub shared_addr: SocketAddr,
    /// This shard's own port, if exposed.
    pub private_addr: Option<SocketAddr>,
    /// The Kafka wire-protocol port (SO_REUSEPORT across shards); `None`:
    /// no Kafka listener.
    pub kafka_addr: Option<SocketAddr>,
    pub io_memory_bytes: usize,
    /// Connections this shard serves at once on each listener.
    pub connections_max: usize,
    pub connection: ConnectionConfig,
    /// The node-wide per-listener and per-address connection counts, shared
    /// by every shard.
    pub connection_table: Arc<ConnectionTable>,
    /// The broker's lease (`controller::driver::lifecycle::BrokerLease`),
    /// shared by every shard: its partition manager and group host act as
    /// leader and coordinator only while it holds. `None`: not in a
    /// cluster, no lease needed.
    pub lease: Option<Arc<BrokerLease>>,
    pub shutdown_grace: Duration,
    pub shard_count: usize,
    pub data_dir: PathBuf,
    /// Storage limits every partition starts from.
    pub base_log: LogConfig,
    pub batch_cache_bytes_max: usize,
    pub limits: EngineLimits,
    pub default_partitions: u32,
    /// This broker's node id (replica assignments may name only it).
    pub node_id: NodeId,
    pub group: GroupConfig,
    pub group_parked_max: usize,
    pub flush_interval: Duration,
    pub housekeeping_interval: Duration,
    pub producer_state: ProducerStateConfig,
    /// The `replica_*` keys: the fetchers' limits and the leaders' ISR
    /// lag time.
    pub replication: ReplicationConfig,
}

/// What a shard takes over at start (not `Clone`: channel ends and the
/// registry have one owner).
#[derive(Debug)]
pub struct ShardBoot {
    /// This shard's mesh channel ends; `None` with a single shard.
    pub mesh: Option<MeshEnds>,
    /// The topic registry, for shard 0.
    pub registry: Option<TopicRegistry>,
    /// The catalog as loaded at startup.
    pub catalog: Arc<Catalog>,
    /// For shard 0: the controller's settings, the metadata log as
    /// recovered from disk, and the records an empty log starts with.
    pub controller: Option<ControllerBoot>,
    /// Set by shard 0 once this broker is registered, unfenced and caught
    /// up; every shard serves clients only then.
    pub serving: Arc<AtomicBool>,
    /// Shards done draining connections (shutdown barrier).
    pub drained: Arc<AtomicUsize>,
}

/// What shard 0 starts the controller with.
#[derive(Debug)]
pub struct ControllerBoot {
    pub cluster: ClusterConfig,
    /// The metadata log as recovered from disk.
    pub recovered: Recovered,
    /// The records an empty log starts with (see `controller::import`).
    pub bootstrap: Vec<MetadataRecord>,
    /// Where the cluster id is recorded once known.
    pub meta: MetaFile,
}

/// The `Exited` reason of a shard whose executor could not be created; the
/// real error is in its join handle.
pub const EXECUTOR_NOT_STARTED: &str = "executor did not start";

/// What shards tell the main thread.
#[derive(Debug)]
pub enum ShardEvent {
    /// Listening; the addresses are the ones actually bound.
    Bound {
        shard: ShardId,
        shared: SocketAddr,
        private: Option<SocketAddr>,
        kafka: Option<SocketAddr>,
    },
    /// Recovery decided: every placed partition is open or offline, the
    /// committed offsets are loaded; the shard serves next.
    Recovered { shard: ShardId },
    /// The shard's executor finished (sent on every exit path, panics
    /// included); `Err` carries why.
    Exited {
        shard: ShardId,
        result: Result<(), String>,
    },
}

/// Sends `Exited` when dropped, so the main thread hears of a shard that
/// unwound as well as of one that returned.
struct ExitNotice {
    shard: ShardId,
    events: mpsc::Sender<ShardEvent>,
    result: Option<Result<(), String>>,
}

impl ExitNotice {
    /// The executor runs: from here an exit without a result is a panic.
    fn running(mut self) -> ExitNotice {
        self.result = None;
        self
    }

    fn finish(mut self, result: Result<(), String>) {
        self.result = Some(result);
    }
}

impl Drop for ExitNotice {
    fn drop(&mut self) {
        let result = self
            .result
            .take()
            .unwrap_or_else(|| Err("shard panicked".to_owned()));
        let _ = self.events.send(ShardEvent::Exited {
            shard: self.shard,
            result,
        });
    }
}

/// Counts a shard's open connections per listener; decrements when the
/// connection task ends or is dropped.
struct ConnectionSlot {
    counts: Rc<[Cell<usize>; 2]>,
    listener: Listener,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let count = &self.counts[self.listener.index()];
        assert!(count.get() > 0, "connection count underflow");
        count.set(count.get() - 1);
    }
}

/// Starts a shard's executor thread.
///
/// The shard binds its listeners, reports [`ShardEvent::Bound`], then waits
/// on `start` for the broker view (which needs every shard's ports) before
/// serving. If `start` is dropped instead, the shard exits without serving.
/// It serves until `stop` becomes true.
pub fn spawn(
    spec: ShardSpec,
    stop: Arc<AtomicBool>,
    events: mpsc::Sender<ShardEvent>,
    start: mpsc::Receiver<Arc<BrokerView>>,
    boot: ShardBoot,
) -> Result<ExecutorJoinHandle<()>, BrokerError> {
    let shard = spec.shard;
    // glommio drops the future generator uncalled when it cannot create the
    // executor (io_uring unavailable...), so the notice must live in it.
    let notice = ExitNotice {
        shard,
        events: events.clone(),
        result: Some(Err(EXECUTOR_NOT_STARTED.to_owned())),
    };
    LocalExecutorBuilder::new(Placement::Fixed(spec.cpu))
        .name(&format!("fjord-shard-{shard}"))
        .io_memory(spec.io_memory_bytes)
        // Measured here: cuts a round trip's p50 from 97 µs to 59 µs.
        .spin_before_park(Duration::from_millis(1))
        .spawn(move || {
            let notice = notice.running();
            async move {
                let result = run(spec, stop, events, start, boot).await;
                notice.finish(result.map_err(|e| e.to_string()));
            }
        })
        .map_err(|e| BrokerError::Executor {
            shard: usize::from(shard.get()),
            reason: e.to_string(),
        })
}

/// Listen backlog of every listener.
const LISTEN_BACKLOG: i32 = 1024;

/// A listener like glommio's `TcpListener::bind` (SO_REUSEPORT, so every
/// shard listens on the shared port) plus SO_REUSEADDR, so a broker
/// restarting on a fixed port is not refused by its previous run's
/// closing connections (FIN_WAIT / TIME_WAIT sockets on that port).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::unix::io::{FromRawFd, IntoRawFd};
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    // SAFETY: the fd is a bound, listening TCP socket that nothing else
    // owns (`into_raw_fd` gave up ownership).
    Ok(unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

async fn run(
    spec: ShardSpec,
    stop: Arc<AtomicBool>,
    events: mpsc::Sender<ShardEvent>,
    start: mpsc::Receiver<Arc<BrokerView>>,
    boot: ShardBoot,
) -> Result<(), BrokerError> {
    let bind = |addr: SocketAddr| listen(addr).map_err(|source| BrokerError::Bind { addr, source });
    let shared = bind(spec.shared_addr)?;
    let private = spec.private_addr.map(bind).transpose()?;
    let kafka = spec.kafka_addr.map(bind).transpose()?;
    let local = |l: &TcpListener| {
        l.local_addr().map_err(|e| BrokerError::Bind {
            addr: spec.shared_addr,
            source: e.into(),
        })
    };
    let shared_local = local(&shared)?;
    let private_local = private.as_ref().map(local).transpose()?;
    let kafka_local = kafka.as_ref().map(local).transpose()?;
    let _ = events.send(ShardEvent::Bound {
        shard: spec.shard,
        shared: shared_local,
        private: private_local,
        kafka: kafka_local,
    });
    // Blocking here is fine: nothing else runs on this executor yet.
    let Ok(view) = start.recv() else {
        return Ok(());
    };
    let shard = spec.shard;
    let mesh = match boot.mesh {
        None => None,
        // Every peer must connect its ends; a peer that failed to start
        // never will, and then the stop flag ends the wait.
        Some(ends) => {
            let connect = async { Some(Mesh::connect(shard, ends).await) };
            match future::or(connect, async {
                wait_stop(&stop).await;
                None
            })
            .await
            {
                Some(mesh) => Some(mesh),
                None => return Ok(()),
            }
        }
    };
    let cache = BatchCache::new(CacheConfig {
        bytes_max: spec.batch_cache_bytes_max,
        ..CacheConfig::default()
    });
    let partitions = PartitionManager::new(
        shard,
        spec.data_dir.clone(),
        spec.base_log,
        cache,
        Rc::new(SystemClock),
    )
    .with_producer_state(spec.producer_state)
    .with_replication(DEFAULT_ACK_TIMEOUT, spec.replication.lag_time_max_ms)
    .with_lease(spec.lease.clone());
    let admin = boot.registry.map(|registry| {
        TopicAdmin::new(
            registry,
            spec.base_log,
            spec.default_partitions,
            spec.node_id,
        )
    });
    let service = Rc::new(ShardService::new(
        shard,
        spec.node_id,
        partitions,
        boot.catalog,
        admin,
    ));
    service
        .open_placed()
        .await
        .map_err(|e| BrokerError::Recovery {
            shard: usize::from(shard.get()),
            reason: e.to_string(),
        })?;
    tracing::info!(%shard, partitions = service.partitions.count(), "partitions recovered");
    service.set_groups(
        GroupHost::new(
            spec.group.clone(),
            spec.group_parked_max,
            member_nonce(shard),
        )
        .with_lease(spec.lease.clone()),
    );
    let host = service.groups().expect("just attached");
    // The offsets partitions led here at start; later leadership changes
    // go through `GroupHost::offsets_leadership`.
    let loaded = host
        .load_led(&service)
        .await
        .map_err(|e| BrokerError::Recovery {
            shard: usize::from(shard.get()),
            reason: e.to_string(),
        })?;
    tracing::info!(%shard, records = loaded, "committed offsets loaded");
    GroupHost::start_timer(&service);
    if let Some(mesh) = mesh {
        service.start_mesh(mesh);
    }
    glommio::spawn_local(flush_timer(Rc::downgrade(&service), spec.flush_interval)).detach();
    glommio::spawn_local(replica_timer(Rc::downgrade(&service))).detach();
    glommio::spawn_local(service.clone().send_isr_changes()).detach();
    let housekeeping_queue = glommio::executor().create_task_queue(
        Shares::Static(10),
        Latency::NotImportant,
        "housekeeping",
    );
    glommio::spawn_local_into(
        housekeeping(Rc::downgrade(&service), spec.housekeeping_interval),
        housekeeping_queue,
    )
    .map_err(|e| BrokerError::ShardStartup {
        shard: usize::from(shard.get()),
        reason: format!("cannot start housekeeping: {e}"),
    })?
    .detach();

    // Parked group requests would hold connections open through the drain.
    glommio::spawn_local({
        let service = Rc::downgrade(&service);
        let stop = stop.clone();
        async move {
            wait_stop(&stop).await;
            if let Some(host) = service.upgrade().as_deref().and_then(ShardService::groups) {
                host.stop();
            }
        }
    })
    .detach();
    // Serve only as a member of the cluster: registered, unfenced, and
    // with the catalog caught up to the metadata log.
    let joined = match boot.controller {
        Some(ControllerBoot {
            mut cluster,
            recovered,
            bootstrap,
            meta,
        }) => {
            cluster.endpoints = endpoints(&view, &cluster);
            service
                .start_controller(cluster, recovered, bootstrap)
                .map_err(|e| BrokerError::ShardStartup {
                    shard: usize::from(shard.get()),
                    reason: e.to_string(),
                })?;
            let joined = service.wait_unfenced(&stop, &meta).await?;
            boot.serving.store(joined, Ordering::Release);
            joined
        }
        None => loop {
            if boot.serving.load(Ordering::Acquire) {
                break true;
            }
            if stop.load(Ordering::Acquire) {
                break false;
            }
            sleep(Duration::from_millis(5)).await;
        },
    };
    if !joined {
        service.partitions.close_all().await;
        return Ok(());
    }
    let grace = spec.shutdown_grace;
    let shard_count = spec.shard_count;
    let (fetchers, fetch_network) =
        start_replica_fetchers(&service, spec.node_id, &spec.replication);
    let _ = events.send(ShardEvent::Recovered { shard });
    Shard::new(spec, view, service.clone())
        .serve(stop, shared, private, kafka)
        .await;
    // SIGTERM: a controlled shutdown (the controller fences this broker
    // and moves leadership away) before the logs close.
    service
        .controlled_shutdown(grace.min(CONTROLLED_SHUTDOWN_MAX))
        .await;
    // Other shards may still forward requests for our partitions while
    // they drain: keep the logs open until every shard has drained.
    boot.drained.fetch_add(1, Ordering::AcqRel);
    let deadline = Instant::now() + grace;
    while boot.drained.load(Ordering::Acquire) < shard_count && Instant::now() < deadline {
        sleep(Duration::from_millis(10)).await;
    }
    // The fetchers finish the local operation they run (an append), then
    // the logs close.
    fetchers.stop();
    fetchers.stopped().await;
    fetch_network.close();
    service.partitions.close_all().await;
    tracing::info!(%shard, "logs flushed and closed");
    Ok(())
}

/// Starts this shard's replica fetchers (`replication::driver`): its
/// partition manager is the follower side, its own outbound cluster
/// transport reaches the leaders at the cluster addresses of its catalog's
/// brokers. Nothing runs while the shard follows nothing.
fn start_replica_fetchers(
    service: &Rc<ShardService>,
    node: NodeId,
    replication: &ReplicationConfig,
) -> (ReplicaFetchers, Rc<TransportNetwork>) {
    let catalog_of = Rc::downgrade(service);
    let address = move |leader: NodeId| {
        let catalog = catalog_of.upgrade()?.catalog();
        let broker = catalog.image().broker(leader)?;
        broker.endpoints.cluster.as_ref().map(ToString::to_string)
    };
    let network = Rc::new(TransportNetwork::new(node, Box::new(address)));
    let logs = Rc::new(OwnedLogs::new(service.clone(), |s: &ShardService| {
        &s.partitions
    }));
    let config = ReplicaFetcherConfig {
        fetch_max_bytes: replication.fetch_max_bytes,
        response_max_bytes: replication.fetch_response_max_bytes,
        wait_max_ms: u32::try_from(replication.fetch_wait_max_ms).unwrap_or(u32::MAX),
        backoff_ms: replication.fetch_backoff_ms,
        backoff_max_ms: replication.fetch_backoff_ms.saturating_mul(10),
        ..ReplicaFetcherConfig::default()
    };
    let fetchers = start_fetchers(node, logs, network.clone(), config);
    (fetchers, network)
}

/// Where this broker is reached, for its registration.
fn endpoints(view: &BrokerView, cluster: &ClusterConfig) -> BrokerEndpoints {
    BrokerEndpoints {
        native: Some(Endpoint {
            host: view.host.clone(),
            port: view.port,
        }),
        kafka: (view.kafka_port != 0).then(|| Endpoint {
            host: view.kafka_host.clone(),
            port: view.kafka_port,
        }),
        cluster: cluster.endpoints.cluster.clone(),
    }
}

/// Longest a stopping broker waits for the controller to confirm its
/// controlled shutdown (the rest of the cluster then learns at once that
/// it is gone, instead of after `broker_session_timeout_ms`).
const CONTROLLED_SHUTDOWN_MAX: Duration = Duration::from_secs(3);

/// Makes member ids unique across shards and restarts.
fn member_nonce(shard: ShardId) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(shard.get()) << 48)
}

async fn wait_stop(stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        sleep(STOP_POLL_INTERVAL).await;
    }
}

/// Flushes the logs whose flush policy (`flush.ms`, `flush.messages`) is
/// due. Ends with the shard.
async fn flush_timer(service: std::rc::Weak<ShardService>, interval: Duration) {
    loop {
        sleep(interval).await;
        let Some(service) = service.upgrade() else {
            return;
        };
        service.partitions.flush_due().await;
    }
}

/// The leaders' ISR-shrink check (`replica_lag_time_max_ms`), a few
/// times per lag period as Kafka does. Ends with the shard.
async fn replica_timer(service: std::rc::Weak<ShardService>) {
    loop {
        let Some(lag_ms) = service
            .upgrade()
            .map(|s| s.partitions.replica_lag_time_max_ms())
        else {
            return;
        };
        sleep(Duration::from_millis((lag_ms / 4).clamp(50, 5_000))).await;
        let Some(service) = service.upgrade() else {
            return;
        };
        service.partitions.tick_replicas();
    }
}

/// Retention and age rolls, in the low-share task queue.
async fn housekeeping(service: std::rc::Weak<ShardService>, interval: Duration) {
    loop {
        sleep(interval).await;
        let Some(service) = service.upgrade() else {
            return;
        };
        service.partitions.housekeeping().await;
    }
}

/// A shard's network service.
///
/// Lives on: every shard (one glommio executor pinned to one CPU).
/// Owns: the shard's listeners (the shared port, bound with SO_REUSEPORT
/// like every other shard's, its private port and the Kafka port), every
/// connection it accepted (at most `connections_max` per listener here,
/// and within the node-wide per-listener and per-address limits of the
/// shared [`ConnectionTable`]), and the [`Engine`] they share (which
/// holds the shard's [`ShardService`]: partitions, catalog, mesh).
/// Lifecycle: bind (in [`spawn`]) → serve (accept until the stop flag) →
/// drain (stop accepting; connections answer what they already received,
/// flush and close, for at most `shutdown_grace`) → the executor exits.
struct Shard {
    spec: ShardSpec,
    engine: Rc<Engine>,
    stop: StopSignal,
    /// Open connections per listener ([`Listener::index`]).
    connections: Rc<[Cell<usize>; 2]>,
    /// Connections refused since the last warning about refusals, and
    /// when that warning was (a flood must not flood the log).
    refused_unlogged: Cell<u64>,
    refusals_logged_at: Cell<Option<Instant>>,
}

impl Shard {
    fn new(spec: ShardSpec, view: Arc<BrokerView>, service: Rc<ShardService>) -> Rc<Shard> {
        let engine = Rc::new(Engine::new(view, service.clone(), spec.limits.clone()));
        // Shard 0's cluster listener answers the followers' replica
        // fetches and OffsetForLeaderEpoch through this engine.
        if let Some(controller) = service.controller() {
            controller.serve_replication(Rc::new(ReplicationService::new(engine.clone())));
        }
        Rc::new(Shard {
            spec,
            engine,
            stop: StopSignal::new(),
            connections: Rc::new([Cell::new(0), Cell::new(0)]),
            refused_unlogged: Cell::new(0),
            refusals_logged_at: Cell::new(None),
        })
    }

    async fn serve(
        self: Rc<Self>,
        stop: Arc<AtomicBool>,
        shared: TcpListener,
        private: Option<TcpListener>,
        kafka: Option<TcpListener>,
    ) {
        tracing::info!(shard = %self.spec.shard, cpu = self.spec.cpu, "shard serving");
        let watcher = glommio::spawn_local({
            let signal = self.stop.clone();
            async move {
                while !stop.load(Ordering::Acquire) {
                    sleep(STOP_POLL_INTERVAL).await;
                }
                signal.trigger();
            }
        });
        let private_loop = private.map(|listener| {
            glommio::spawn_local(self.clone().accept_loop(listener, Listener::Native))
        });
        let kafka_loop = kafka.map(|listener| {
            glommio::spawn_local(self.clone().accept_loop(listener, Listener::Kafka))
        });
        self.clone().accept_loop(shared, Listener::Native).await;
        if let Some(task) = private_loop {
            task.await;
        }
        if let Some(task) = kafka_loop {
            task.await;
        }
        watcher.await;
        self.drain().await;
    }

    /// Accepts connections on one listener until the stop signal; each
    /// must fit this shard's per-listener limit and the node-wide
    /// listener and client-address limits, else it is closed at once.
    async fn accept_loop(self: Rc<Self>, socket: TcpListener, listener: Listener) {
        loop {
            let accepted = future::or(async { Some(socket.accept().await) }, async {
                self.stop.wait().await;
                None
            })
            .await;
            let stream = match accepted {
                None => break,
                Some(Ok(stream)) => stream,
                Some(Err(error)) => {
                    tracing::warn!(shard = %self.spec.shard, %listener, %error, "accept failed");
                    sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            };
            let Ok(peer) = stream.peer_addr() else {
                // Reset before we looked at it; dropping closes it.
                continue;
            };
            let Some((slot, admitted)) = self.admit(listener, peer) else {
                continue;
            };
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(shard = %self.spec.shard, %peer, %error, "set_nodelay failed");
            }
            let shard = self.clone();
            glommio::spawn_local(async move {
                let _slots = (slot, admitted);
                shard.serve_connection(stream, listener, peer).await;
            })
            .detach();
        }
        tracing::debug!(shard = %self.spec.shard, %listener, "stopped accepting");
    }

    /// Serves one accepted connection on the shared connection core
    /// (`fjord_net::driver`), with the protocol's framer and service;
    /// both hold their read buffers of the shard's request-buffer budget.
    async fn serve_connection(&self, stream: TcpStream, listener: Listener, peer: SocketAddr) {
        let shard = self.spec.shard;
        let config = self.spec.connection.clone();
        let request_buffers = RequestBuffers {
            budget: self.engine.request_buffers(),
            budget_bytes_max: self.engine.limits().request_buffer_bytes_max,
        };
        match listener {
            Listener::Native => {
                let framer = NativeFramer::new(config.frame_bytes_max);
                let result = driver::serve_framed(
                    stream,
                    config,
                    framer,
                    &*self.engine,
                    Some(request_buffers),
                    &self.stop,
                )
                .await;
                log_close(shard, peer, listener, result);
            }
            Listener::Kafka => {
                let handler =
                    KafkaHandler::new(self.engine.clone(), config.frame_bytes_max as usize);
                let result = kafka::serve::serve(stream, config, &handler, &self.stop).await;
                log_close(shard, peer, listener, result);
            }
        }
    }

    /// Takes the slots of a new connection: this shard's count on
    /// `listener`, then the node-wide listener and address counts. `None`
    /// (logged, nothing taken): the connection must be closed.
    fn admit(&self, listener: Listener, peer: SocketAddr) -> Option<(ConnectionSlot, Admitted)> {
        let count = &self.connections[listener.index()];
        if count.get() >= self.spec.connections_max {
            let reason = format!(
                "this shard already serves its maximum of {} connections on the {listener} listener \
                 (connections_max_per_shard)",
                self.spec.connections_max
            );
            self.log_refusal(peer, &reason);
            return None;
        }
        match self.spec.connection_table.admit(listener, peer.ip()) {
            Ok(admitted) => {
                count.set(count.get() + 1);
                let slot = ConnectionSlot {
                    counts: self.connections.clone(),
                    listener,
                };
                Some((slot, admitted))
            }
            Err(refused) => {
                self.log_refusal(peer, &refused.to_string());
                None
            }
        }
    }

    /// Every refusal at debug; a warning with the count at most every
    /// [`REFUSAL_WARN_INTERVAL`], so a flood shows without flooding the log.
    fn log_refusal(&self, peer: SocketAddr, reason: &str) {
        tracing::debug!(shard = %self.spec.shard, %peer, reason, "closing new connection");
        self.refused_unlogged.set(self.refused_unlogged.get() + 1);
        let now = Instant::now();
        let due = self
            .refusals_logged_at
            .get()
            .is_none_or(|at| now.duration_since(at) >= REFUSAL_WARN_INTERVAL);
        if due {
            tracing::warn!(
                shard = %self.spec.shard,
                refused = self.refused_unlogged.get(),
                last_peer = %peer,
                last_reason = reason,
                "connection limits reached; new connections closed on accept"
            );
            self.refused_unlogged.set(0);
            self.refusals_logged_at.set(Some(now));
        }
    }

    /// Waits for open connections to finish, at most `shutdown_grace`.
    async fn drain(&self) {
        let deadline = Instant::now() + self.spec.shutdown_grace;
        let open = || self.connections.iter().map(Cell::get).sum::<usize>();
        while open() > 0 && Instant::now() < deadline {
            sleep(Duration::from_millis(10)).await;
        }
        let left = open();
        if left > 0 {
            tracing::warn!(shard = %self.spec.shard, left, "closing connections still busy after the shutdown grace");
        }
        tracing::info!(shard = %self.spec.shard, "shard stopped");
    }
}

fn log_close<E: std::fmt::Display, H: std::fmt::Display>(
    shard: ShardId,
    peer: SocketAddr,
    listener: Listener,
    result: Result<(), DriverError<E, H>>,
) {
    match result {
        Ok(()) => tracing::debug!(%shard, %peer, %listener, "connection closed"),
        Err(DriverError::Connection(ConnectionError::Frame(error))) => {
            tracing::info!(%shard, %peer, %listener, %error, "closing connection: unparseable frame")
        }
        // Debug: a flood of silent connections would flood the log.
        Err(DriverError::Connection(error @ ConnectionError::FirstRequestTimeout { .. })) => {
            tracing::debug!(%shard, %peer, %listener, %error, "closing connection")
        }
        Err(DriverError::Connection(error)) => {
            tracing::info!(%shard, %peer, %listener, %error, "closing connection")
        }
        Err(DriverError::Request(error)) => {
            tracing::info!(%shard, %peer, %listener, %error, "closing connection: refused request")
        }
        Err(DriverError::Io(error)) => {
            tracing::debug!(%shard, %peer, %listener, %error, "connection error")
        }
    }
}
