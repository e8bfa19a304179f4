//! The controller's driver on shard 0 (glommio): it opens the metadata log
//! from disk, runs the Raft group (ticks, messages over the transport,
//! persistence before acknowledging), applies committed records to the
//! `ControllerState`, runs the active controller's commands one at a time,
//! forwards commands to the active controller from other nodes, and keeps
//! this broker registered and heartbeating (CLUSTER.md §3).
//!
//! Tasks on shard 0 (all `Rc`, one thread):
//! - the Raft pump: ticks every `raft_tick_ms`, handles every `Ready`
//!   (persist, send, apply committed entries in order, publish the image
//!   and the quorum view, snapshot every [`SNAPSHOT_EVERY_ENTRIES`]);
//! - the controller loop: while this node is the active controller (Raft
//!   leader that applied every entry of earlier terms), it handles queued
//!   commands one at a time (`handle` → propose → wait for commit and
//!   apply → answer) and the periodic `tick`;
//! - the cluster listener ([`super::transport`]) and the lifecycle
//!   ([`lifecycle`]).
//!
//! A write of the metadata log that fails (a full disk: ENOSPC) takes
//! this node out of the quorum only for a while: nothing of the failed
//! `Ready` is sent (no vote or append ack leaves before what it
//! acknowledges is durable) or applied, and Raft's memory is dropped. The
//! pump waits a backoff (100 ms doubling up to
//! `log_reopen_backoff_max_ms`), opens the log again from disk exactly as
//! at startup (hard state, entries with a torn tail cut, snapshot) and
//! rejoins as a follower; the `ControllerState` keeps what it applied
//! (committed entries never change), takes the snapshot on disk if it is
//! past that, and Raft hands it the rest of the committed log again. In
//! between, commands are forwarded to the other voters (this broker keeps
//! heartbeating to an active controller elsewhere) and the cluster
//! listener refuses commands (the caller retries elsewhere).
//!
//! Persistence runs synchronously on shard 0 (`std::fs` + fdatasync in
//! `Quorum::poll`): the metadata log is small and written rarely
//! (registrations, admin, fencing: a few entries a second at most), and a
//! `Ready` must be durable before its messages go out, so a hop to the
//! blocking pool would add latency to every commit for little gain.
//! Recorded in ARCHITECTURE.md's Decisions.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fjord_schema::api::ClusterApiKey;
use fjord_schema::NodeId;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use protobuf::Message as _;
use raft::eraftpb::Message;

use super::commands::{Answer, ControllerCommand};
use super::fold::{decode_snapshot, encode_snapshot};
use super::quorum::{Output, ProposeError, Quorum, QuorumConfig, WriteFault};
use super::records::{decode_batch, encode_batch, MetadataRecord};
use super::state::{ControllerConfig, ControllerState};
use super::transport::{CallError, ClusterService, Notify, Reply, Transport};
use crate::metadata::catalog::QuorumView;
use crate::metadata::image::{BrokerEndpoints, MetadataImage};
use lifecycle::Lifecycle;

/// A snapshot of the image is taken (and the log compacted to it) every
/// this many applied entries.
pub const SNAPSHOT_EVERY_ENTRIES: u64 = 1_000;
/// Raft ticks without a leader before a follower campaigns (randomized up
/// to twice as many): 10 × 100 ms = 1–2 s.
pub const ELECTION_TICKS: usize = 10;
/// The leader heartbeats every this many ticks.
pub const HEARTBEAT_TICKS: usize = 2;
/// A command submitted is answered within this, or `NoQuorum`/`Timeout`.
pub const SUBMIT_DEADLINE_MS: u64 = 15_000;
/// A proposal of the active controller not committed within this is
/// answered as failed (the command may still commit later).
pub const COMMIT_TIMEOUT_MS: u64 = 10_000;
/// Commands queued for the active controller on this node.
pub const COMMANDS_QUEUED_MAX: usize = 256;
const _: () = assert!(
    super::quorum::PROPOSAL_BYTES_MAX * 2 <= super::transport::CLUSTER_FRAME_BYTES_MAX as usize
);

/// One forwarding attempt waits at most this for the controller's
/// answer before trying again (maybe another node): a controller that
/// died must not hold the submit for its whole deadline. A retried
/// command may run twice (as a Kafka client's retry may); the commands'
/// answers say so (e.g. a topic that already exists).
pub const FORWARD_ATTEMPT_MS: u64 = 5_000;
/// Between retries of a submit while leadership moves.
const SUBMIT_RETRY_MS: u64 = 100;
/// A voter set without a reachable majority is logged at most this often.
const NO_LEADER_WARN_INTERVAL_MS: u64 = 5_000;
/// The first wait before the metadata log is opened again after a write
/// failed; it doubles per failure up to
/// [`ClusterConfig::log_reopen_backoff_max_ms`], and starts again from
/// here once the log has worked that long since its last reopen.
pub const LOG_REOPEN_BACKOFF_MIN_MS: u64 = 100;
/// Failed reopens are logged (warn) at most this often; the first failure
/// and each successful reopen always are.
const REOPEN_WARN_INTERVAL_MS: u64 = 10_000;

/// One voter of the metadata quorum: its node id and `--cluster-listen`
/// address (`controller_quorum_voters`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Voter {
    pub node: NodeId,
    pub host: String,
    pub port: u16,
}

/// Everything the driver needs from the node's configuration.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub node: NodeId,
    pub voters: Vec<Voter>,
    /// Where this node's cluster listener binds (`--cluster-listen`).
    pub cluster_listen: SocketAddr,
    /// The metadata log's directory (`<data>/__cluster_metadata-0`).
    pub dir: PathBuf,
    /// This broker's advertised endpoints, for its registration.
    pub endpoints: BrokerEndpoints,
    pub shards: u16,
    pub rack: Option<String>,
    /// `broker_heartbeat_interval_ms`.
    pub heartbeat_interval_ms: u64,
    /// Raft tick length; elections time out after 10–20 ticks.
    pub raft_tick_ms: u64,
    /// After a write of the metadata log failed, the log is opened again
    /// after [`LOG_REOPEN_BACKOFF_MIN_MS`], doubling per failure up to
    /// this (`controller_log_reopen_backoff_max_ms`).
    pub log_reopen_backoff_max_ms: u64,
    /// Injected write failures of the metadata log (tests only; see
    /// [`WriteFault`]). Off in the broker.
    pub write_fault: WriteFault,
    /// `broker_lease_margin_ms` ([`lifecycle::LeaseRule::margin_ms`]).
    pub lease_margin_ms: u64,
    /// This broker's lease, shared with every shard (the lifecycle writes
    /// it: [`lifecycle::BrokerLease`]).
    pub lease: Arc<lifecycle::BrokerLease>,
    /// The controller's settings (also used on non-controllers to fold).
    pub controller: ControllerConfig,
}

impl ClusterConfig {
    /// The lease an acknowledged heartbeat grants (`lifecycle`).
    pub fn lease_rule(&self) -> lifecycle::LeaseRule {
        lifecycle::LeaseRule {
            session_timeout_ms: self.controller.session_timeout_ms,
            margin_ms: self.lease_margin_ms,
        }
    }

    fn voter_ids(&self) -> Vec<u64> {
        self.voters.iter().map(|v| u64::from(v.node.0)).collect()
    }

    fn quorum_config(&self) -> QuorumConfig {
        QuorumConfig {
            id: u64::from(self.node.0),
            voters: self.voter_ids(),
            election_tick: ELECTION_TICKS,
            heartbeat_tick: HEARTBEAT_TICKS,
            fixed_election_timeout: false,
            write_fault: self.write_fault.clone(),
        }
    }

    /// The first reopen backoff, within the configured bound.
    fn reopen_backoff_min(&self) -> Duration {
        Duration::from_millis(LOG_REOPEN_BACKOFF_MIN_MS.min(self.log_reopen_backoff_max_ms))
    }

    fn reopen_backoff_max(&self) -> Duration {
        Duration::from_millis(self.log_reopen_backoff_max_ms.max(1))
    }
}

/// The metadata log's health on this node: whether it is out of the
/// quorum after a write failed, and how often that happened (for
/// metrics and tests; [`ControllerHandle::log_health`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogHealth {
    /// A write failed and the log has not been opened again yet.
    pub failed: bool,
    /// Writes (persisting a `Ready`) that failed since startup.
    pub write_failures: u64,
    /// Times the log was opened again after a failure.
    pub reopens: u64,
    /// Attempts to open it again that failed.
    pub reopen_failures: u64,
}

/// Why the metadata log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    #[error("metadata log {path}: {reason}")]
    Storage { path: PathBuf, reason: String },
}

impl QuorumError {
    fn storage(path: &std::path::Path, reason: impl std::fmt::Display) -> QuorumError {
        QuorumError::Storage {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }
}

/// Why a command got no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControllerUnavailable {
    #[error("no active controller (no quorum of the voters is reachable)")]
    NoQuorum,
    #[error("the controller did not answer in time")]
    Timeout,
    #[error("this node is shutting down")]
    ShuttingDown,
}

/// The metadata log as found on disk: what it folds to, before any shard
/// serves. `Send`, so the main thread can recover it and hand it to
/// shard 0.
#[derive(Debug)]
pub struct Recovered {
    pub image: Arc<MetadataImage>,
    pub applied_index: u64,
}

/// Opens (creating if new) the metadata log under `config.dir` and folds
/// its snapshot and the entries known committed. Synchronous: called once
/// at startup, on the main thread.
pub fn recover(config: &ClusterConfig) -> Result<Recovered, QuorumError> {
    let storage = super::quorum::DiskStorage::open(&config.dir, &config.voter_ids())
        .map_err(|e| QuorumError::storage(&config.dir, e))?;
    let snapshot = storage.latest_snapshot();
    let image = if snapshot.get_metadata().index == 0 {
        MetadataImage::default()
    } else {
        decode_snapshot(&snapshot.data, &config.controller.defaults).map_err(|e| {
            QuorumError::storage(&config.dir, format!("snapshot does not decode: {e}"))
        })?
    };
    let mut state = ControllerState::new(config.controller.clone(), Arc::new(image));
    let mut applied_index = snapshot.get_metadata().index;
    for entry in storage.committed_entries() {
        if entry.get_entry_type() == raft::eraftpb::EntryType::EntryNormal && !entry.data.is_empty()
        {
            replay_entry(&mut state, entry.index, &entry.data);
        }
        applied_index = entry.index;
    }
    tracing::info!(
        dir = %config.dir.display(),
        applied_index,
        brokers = state.image().brokers().count(),
        topics = state.image().topics().count(),
        "metadata log recovered"
    );
    Ok(Recovered {
        image: state.image().clone(),
        applied_index,
    })
}

/// Folds one committed entry's records. An entry that does not decode is
/// skipped and logged: every node skips it alike (the log is the same
/// everywhere), so images stay equal.
fn replay_entry(state: &mut ControllerState, index: u64, payload: &[u8]) {
    match decode_batch(payload) {
        Ok(records) => {
            for record in &records {
                state.replay(record);
            }
        }
        Err(error) => {
            tracing::error!(index, %error, "metadata log: entry does not decode; skipped");
        }
    }
}

/// The broker's side of the controller: submit commands, watch the image.
/// Cheap to clone; lives on shard 0.
#[derive(Clone)]
pub struct ControllerHandle {
    driver: Rc<Driver>,
}

impl std::fmt::Debug for ControllerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerHandle")
            .field("node", &self.driver.config.node)
            .field("view", &self.driver.view.get())
            .finish()
    }
}

/// Why a proposal did not commit as proposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lost {
    /// Leadership moved before it committed (it may commit or not).
    Leadership,
    /// Not committed in time.
    Timeout,
    /// Its records do not fit one entry (`quorum::PROPOSAL_BYTES_MAX`):
    /// retrying cannot help.
    TooLarge,
}

type Job = (ControllerCommand, LocalSender<Result<Answer, Lost>>);

/// A proposal waiting for its commit: its term and who waits.
type Proposal = (u64, LocalSender<Result<(), Lost>>);

struct Driver {
    config: ClusterConfig,
    quorum: RefCell<Quorum>,
    state: RefCell<ControllerState>,
    transport: Transport,
    /// The last entry folded into `state`.
    applied: Cell<u64>,
    /// The index of the latest snapshot taken or installed.
    snapshot_index: Cell<u64>,
    /// Whether the log held a metadata entry (a snapshot or a payload):
    /// only the first controller of an empty log bootstraps.
    log_has_data: Cell<bool>,
    /// This node is bootstrapping the empty log it became controller of.
    bootstrapping: Cell<bool>,
    image: RefCell<Arc<MetadataImage>>,
    view: Cell<QuorumView>,
    /// Image or view changed (`changed`, `wait_applied`).
    changed: Notify,
    /// Work for the Raft pump (a message stepped, a proposal).
    wake: Notify,
    /// Proposals of this node as leader: index → (term, waiter).
    proposals: RefCell<BTreeMap<u64, Proposal>>,
    /// The term whose leadership this node's `ControllerState` was told of.
    controller_term: Cell<u64>,
    jobs: LocalSender<Job>,
    bootstrap: RefCell<Vec<MetadataRecord>>,
    /// This node does not take part in the quorum now: its log could not
    /// be written (`recovering`: the pump opens it again), or it stopped
    /// for good (stopped, or a leader's snapshot that does not decode).
    failed: Cell<bool>,
    /// `failed` after a write error: the pump reopens the log after
    /// `reopen_backoff`.
    recovering: Cell<bool>,
    /// The wait before the next reopen attempt.
    reopen_backoff: Cell<Duration>,
    /// When the log was last opened again (the backoff restarts from its
    /// minimum once the log has worked for the maximum since).
    reopened_at: Cell<Option<Instant>>,
    last_reopen_warn: Cell<Option<Instant>>,
    health: Cell<LogHealth>,
    shutting_down: Cell<bool>,
    /// [`ControllerHandle::stop`] was called.
    stopped: Cell<bool>,
    lifecycle: Lifecycle,
    last_no_leader_warn: Cell<Option<Instant>>,
    /// Serves the replication keys ([`REPLICATION_KEYS`]) of the cluster
    /// listener once shard 0's engine exists
    /// ([`ControllerHandle::serve_replication`]); until then they are
    /// refused (the follower backs off and retries).
    replication: RefCell<Option<Rc<dyn ClusterService>>>,
}

/// The cluster api keys the listener hands to the replication service
/// (`replication::server`) rather than to the controller.
pub const REPLICATION_KEYS: [ClusterApiKey; 2] = [
    ClusterApiKey::ReplicaFetch,
    ClusterApiKey::OffsetForLeaderEpoch,
];

impl ControllerHandle {
    /// Starts the driver on the current (shard 0) executor: the cluster
    /// listener, Raft, the lifecycle (register, heartbeat). `bootstrap`:
    /// records the first controller of an empty log proposes right after
    /// the cluster id (an existing single-node data dir's topics).
    pub fn start(
        config: ClusterConfig,
        recovered: Recovered,
        bootstrap: Vec<MetadataRecord>,
    ) -> Result<ControllerHandle, QuorumError> {
        let quorum = Quorum::open(&config.dir, &config.quorum_config())
            .map_err(|e| QuorumError::storage(&config.dir, e))?;
        let snapshot_index = quorum.storage().latest_snapshot().get_metadata().index;
        let log_has_data = snapshot_index > 0
            || quorum.storage().committed_entries().any(|e| {
                e.get_entry_type() == raft::eraftpb::EntryType::EntryNormal && !e.data.is_empty()
            });
        let transport = Transport::new(u64::from(config.node.0));
        for voter in &config.voters {
            if voter.node != config.node {
                transport.set_peer(
                    u64::from(voter.node.0),
                    format!("{}:{}", voter.host, voter.port),
                );
            }
        }
        let (jobs, jobs_rx) = local_channel::new_bounded(COMMANDS_QUEUED_MAX);
        let state = ControllerState::new(config.controller.clone(), recovered.image.clone());
        let view = QuorumView {
            controller: None,
            applied_index: recovered.applied_index,
            committed_index: quorum.commit_index(),
        };
        let reopen_backoff = config.reopen_backoff_min();
        let driver = Rc::new(Driver {
            lifecycle: Lifecycle::new(config.node),
            config,
            quorum: RefCell::new(quorum),
            state: RefCell::new(state),
            transport,
            applied: Cell::new(recovered.applied_index),
            snapshot_index: Cell::new(snapshot_index),
            log_has_data: Cell::new(log_has_data),
            bootstrapping: Cell::new(false),
            image: RefCell::new(recovered.image),
            view: Cell::new(view),
            changed: Notify::default(),
            wake: Notify::default(),
            proposals: RefCell::new(BTreeMap::new()),
            controller_term: Cell::new(0),
            jobs,
            bootstrap: RefCell::new(bootstrap),
            failed: Cell::new(false),
            recovering: Cell::new(false),
            reopen_backoff: Cell::new(reopen_backoff),
            reopened_at: Cell::new(None),
            last_reopen_warn: Cell::new(None),
            health: Cell::new(LogHealth::default()),
            shutting_down: Cell::new(false),
            stopped: Cell::new(false),
            last_no_leader_warn: Cell::new(None),
            replication: RefCell::new(None),
        });
        driver.learn_peers();
        // A lone voter with no cluster address (a one-node cluster started
        // without --cluster-listen) talks to nobody: no listener.
        let alone = matches!(driver.config.voters.as_slice(),
            [only] if only.node == driver.config.node && only.port == 0);
        if !alone {
            let service: Rc<dyn ClusterService> = Rc::new(Service(Rc::downgrade(&driver)));
            driver
                .transport
                .listen(driver.config.cluster_listen, service)
                .map_err(|e| {
                    QuorumError::storage(
                        &driver.config.dir,
                        format!("cluster listener {}: {e}", driver.config.cluster_listen),
                    )
                })?;
        }
        glommio::spawn_local(pump(Rc::downgrade(&driver))).detach();
        glommio::spawn_local(controller_loop(Rc::downgrade(&driver), jobs_rx)).detach();
        let handle = ControllerHandle { driver };
        glommio::spawn_local(lifecycle::run(handle.clone())).detach();
        Ok(handle)
    }

    /// Sends `command` to the active controller (this node or another,
    /// retrying as leadership moves until a deadline); answers once its
    /// records are committed.
    pub async fn submit(
        &self,
        command: ControllerCommand,
    ) -> Result<Answer, ControllerUnavailable> {
        let driver = &self.driver;
        let deadline = Instant::now() + Duration::from_millis(SUBMIT_DEADLINE_MS);
        let mut encoded = None;
        let mut attempt = 0usize;
        loop {
            if driver.stopped.get() {
                return Err(ControllerUnavailable::ShuttingDown);
            }
            // A log that failed for good cannot take part; one that is
            // being reopened still forwards to the voters (below).
            if driver.failed.get() && !driver.recovering.get() {
                return Err(ControllerUnavailable::NoQuorum);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(match driver.quorum.borrow().leader() {
                    None => ControllerUnavailable::NoQuorum,
                    Some(_) => ControllerUnavailable::Timeout,
                });
            }
            let seen = driver.changed.version();
            attempt += 1;
            // Unknown leader (e.g. a learner not yet added, which hears
            // from nobody): ask the voters in turn; the controller among
            // them answers, the others refuse.
            //
            // While this node's log is being reopened its Raft group is
            // stale: the leader it knew (if not itself) or the voters in
            // turn, so this broker's heartbeats reach an active
            // controller elsewhere and it stays a broker.
            let known = driver.quorum.borrow().leader();
            let leader = if driver.failed.get() {
                known
                    .filter(|l| *l != driver.id())
                    .or_else(|| driver.voter_to_try(attempt))
            } else {
                known.or_else(|| driver.voter_to_try(attempt))
            };
            match leader {
                Some(leader) if leader == driver.id() => {
                    match driver.execute(command.clone()).await {
                        Ok(answer) => return Ok(answer),
                        Err(Lost::TooLarge) => return Err(ControllerUnavailable::Timeout),
                        Err(Lost::Leadership | Lost::Timeout) => {}
                    }
                }
                Some(leader) => {
                    let body = encoded
                        .get_or_insert_with(|| {
                            let mut out = Vec::new();
                            command.encode(&mut out);
                            Bytes::from(out)
                        })
                        .clone();
                    let left = deadline
                        .saturating_duration_since(now)
                        .min(Duration::from_millis(FORWARD_ATTEMPT_MS));
                    let call =
                        driver
                            .transport
                            .call(leader, ClusterApiKey::ControllerCommand, body, left);
                    // A call to a controller that stopped answering (a
                    // SIGSTOPped or partitioned node: its connection stays
                    // open) is dropped as soon as the quorum knows another
                    // leader, not after the attempt's timeout: heartbeats
                    // stuck behind it would cost this broker its session.
                    let moved = async {
                        loop {
                            let seen = driver.changed.version();
                            if driver.quorum.borrow().leader().is_some_and(|l| l != leader) {
                                return;
                            }
                            driver.changed.wait_past(seen).await;
                        }
                    };
                    let answered = futures_lite::future::or(async { Some(call.await) }, async {
                        moved.await;
                        None
                    })
                    .await;
                    let Some(answered) = answered else {
                        tracing::debug!(leader, "the controller moved; forwarding again");
                        continue;
                    };
                    match answered {
                        Ok(bytes) => match Answer::decode(&bytes) {
                            Ok(answer) => return Ok(answer),
                            Err(error) => {
                                tracing::warn!(leader, %error, "controller answer does not decode");
                            }
                        },
                        Err(CallError::Remote { message, .. }) => {
                            tracing::debug!(leader, %message, "controller refused; retrying");
                        }
                        Err(error) => {
                            tracing::debug!(leader, %error, "forwarding to the controller failed; retrying");
                        }
                    }
                }
                None => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let pause = left.min(Duration::from_millis(SUBMIT_RETRY_MS));
            futures_lite::future::or(driver.changed.wait_past(seen), glommio::timer::sleep(pause))
                .await;
            if pause.is_zero() {
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
        }
    }

    /// The latest applied image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.driver.image.borrow().clone()
    }

    pub fn quorum_view(&self) -> QuorumView {
        self.driver.view.get()
    }

    /// Waits until this node has applied the log up to `index` (or it
    /// was stopped).
    pub async fn wait_applied(&self, index: u64) {
        loop {
            let seen = self.driver.changed.version();
            if self.driver.applied.get() >= index || self.driver.stopped.get() {
                return;
            }
            self.driver.changed.wait_past(seen).await;
        }
    }

    /// Waits until the image or the quorum view differ from `seen` (the
    /// applied index last returned; 0 at first), then returns the latest.
    /// Changes in between are coalesced. When the applied index is still
    /// `seen`, it waits for the next change of either (e.g. a new
    /// controller); read [`ControllerHandle::image`] first to start.
    pub async fn changed(&self, seen: u64) -> (Arc<MetadataImage>, QuorumView) {
        let version = self.driver.changed.version();
        if self.driver.view.get().applied_index == seen {
            self.driver.changed.wait_past(version).await;
        }
        (self.image(), self.driver.view.get())
    }

    /// Whether this broker is registered and unfenced (serving).
    pub fn unfenced(&self) -> bool {
        self.driver.lifecycle.unfenced(&self.driver.image.borrow())
    }

    /// Controlled shutdown: asks the controller to fence this broker and
    /// move leadership away; returns when done or after `deadline_ms`.
    pub async fn shutdown(&self, deadline_ms: u64) {
        self.driver.shutting_down.set(true);
        lifecycle::shutdown(self, deadline_ms).await;
    }

    pub fn node(&self) -> NodeId {
        self.driver.config.node
    }

    /// Stops this node's part in the cluster without ending the process:
    /// the Raft group stops, the listener and every connection close,
    /// submits fail. (A process that exits needs no call.)
    pub fn stop(&self) {
        self.driver.stopped.set(true);
        self.driver.failed.set(true);
        self.driver.recovering.set(false);
        self.driver.shutting_down.set(true);
        self.driver.fail_proposals();
        self.driver.transport.close();
        self.driver.wake.notify();
        self.driver.changed.notify();
    }

    /// The cluster transport (its connections to the voters and learners),
    /// for other inter-node traffic (replica fetches, issue 14).
    pub fn transport(&self) -> &Transport {
        &self.driver.transport
    }

    /// Hands the cluster listener's replication requests
    /// ([`REPLICATION_KEYS`]: replica fetches, `OffsetForLeaderEpoch`) to
    /// `service` (shard 0's `replication::server::ReplicationService`,
    /// set once its engine exists); every other key stays the
    /// controller's. A second call replaces the first.
    pub fn serve_replication(&self, service: Rc<dyn ClusterService>) {
        *self.driver.replication.borrow_mut() = Some(service);
    }

    /// Whether this node is the active controller now.
    pub fn is_controller(&self) -> bool {
        if self.driver.failed.get() {
            return false;
        }
        let quorum = self.driver.quorum.borrow();
        quorum.leader_ready(self.driver.applied.get())
    }

    /// The metadata log's health (out of the quorum after a write
    /// failure, failures and reopens so far).
    pub fn log_health(&self) -> LogHealth {
        LogHealth {
            failed: self.driver.recovering.get(),
            ..self.driver.health.get()
        }
    }

    pub(super) fn config(&self) -> &ClusterConfig {
        &self.driver.config
    }

    pub(super) fn lifecycle(&self) -> &Lifecycle {
        &self.driver.lifecycle
    }

    pub(super) fn shutting_down(&self) -> bool {
        self.driver.shutting_down.get()
    }
}

impl Driver {
    fn id(&self) -> u64 {
        self.quorum.borrow().id()
    }

    /// The `attempt`-th voter other than this node, round robin.
    fn voter_to_try(&self, attempt: usize) -> Option<u64> {
        let others: Vec<u64> = self
            .config
            .voter_ids()
            .into_iter()
            .filter(|id| *id != self.id())
            .collect();
        if others.is_empty() {
            return None;
        }
        Some(others[attempt % others.len()])
    }

    /// Runs `command` on this node's active controller (queued behind the
    /// ones before it).
    async fn execute(&self, command: ControllerCommand) -> Result<Answer, Lost> {
        let (reply, reply_rx) = local_channel::new_bounded(1);
        if self.jobs.try_send((command, reply)).is_err() {
            return Err(Lost::Timeout);
        }
        reply_rx.recv().await.unwrap_or(Err(Lost::Leadership))
    }

    /// Proposes `records` as one entry and waits until it is committed and
    /// applied here.
    async fn propose(&self, records: &[MetadataRecord]) -> Result<u64, Lost> {
        let proposed = self.quorum.borrow_mut().propose(encode_batch(records));
        let (term, index) = match proposed {
            Ok(at) => at,
            Err(ProposeError::NotLeader { .. }) => return Err(Lost::Leadership),
            Err(error @ ProposeError::TooLarge(_)) => {
                tracing::error!(%error, records = records.len(), "metadata proposal refused");
                return Err(Lost::TooLarge);
            }
            Err(error) => {
                tracing::warn!(%error, "metadata proposal refused");
                return Err(Lost::Leadership);
            }
        };
        let (sender, receiver) = local_channel::new_bounded(1);
        self.proposals.borrow_mut().insert(index, (term, sender));
        self.wake.notify();
        let committed = async { receiver.recv().await.unwrap_or(Err(Lost::Leadership)) };
        let expired = async {
            glommio::timer::sleep(Duration::from_millis(COMMIT_TIMEOUT_MS)).await;
            Err(Lost::Timeout)
        };
        let result = futures_lite::future::or(committed, expired).await;
        self.proposals.borrow_mut().remove(&index);
        result.map(|()| index)
    }

    /// Handles every pending `Ready` of the Raft group.
    fn process_ready(&self) {
        loop {
            if self.failed.get() {
                return;
            }
            // `poll` persists the `Ready` before it returns its messages:
            // on an error nothing of it is sent or applied.
            let polled = self.quorum.borrow_mut().poll();
            let mut out = match polled {
                Ok(out) => out,
                Err(error) => {
                    self.log_write_failed(&error);
                    return;
                }
            };
            let idle =
                out.messages.is_empty() && out.committed.is_empty() && out.snapshot.is_none();
            self.send(std::mem::take(&mut out.messages));
            self.apply(out);
            self.check_leadership();
            self.publish();
            if idle {
                return;
            }
        }
    }

    /// A write of the log failed: this node leaves the quorum until the
    /// pump opens the log again ([`Driver::reopen`]). Its Raft group (whose
    /// memory may be ahead of the files) is no longer stepped, ticked or
    /// polled; proposals fail (they may still commit elsewhere).
    fn log_write_failed(&self, error: &super::quorum::StorageError) {
        let now = Instant::now();
        // Failing again soon after a reopen (the disk is still full):
        // wait longer; after a good while working: start over.
        let backoff = match self.reopened_at.get() {
            Some(at) if now.duration_since(at) < self.config.reopen_backoff_max() => {
                (self.reopen_backoff.get() * 2).min(self.config.reopen_backoff_max())
            }
            _ => self.config.reopen_backoff_min(),
        };
        self.reopen_backoff.set(backoff);
        let mut health = self.health.get();
        health.write_failures += 1;
        self.health.set(health);
        tracing::error!(
            node = self.config.node.0,
            %error,
            failures = health.write_failures,
            retry_in_ms = backoff.as_millis() as u64,
            "metadata log cannot be written: this node leaves the metadata quorum until the log is opened again"
        );
        self.failed.set(true);
        self.recovering.set(true);
        self.fail_proposals();
        if self.controller_term.get() != 0 {
            self.controller_term.set(0);
            self.state.borrow_mut().become_follower();
        }
        self.publish();
        self.changed.notify();
    }

    /// Opens the metadata log again after a write failure, exactly as at
    /// startup (`Quorum::open`: the hard state, the entries with a torn
    /// tail cut, the snapshot), and rejoins the quorum as a follower.
    ///
    /// The `ControllerState` keeps what it applied: entries committed are
    /// the same on every node forever, and every entry it applied was
    /// durable here before Raft handed it over (raft-rs hands out only
    /// persisted committed entries). A snapshot on disk past it (installed
    /// from the leader by the `Ready` whose later write failed) replaces
    /// it, as at startup; Raft hands the committed entries after its
    /// applied index out again and [`Driver::apply`] skips those already
    /// folded. On failure, the next attempt waits twice as long.
    fn reopen(&self) {
        let attempt = match Quorum::open(&self.config.dir, &self.config.quorum_config()) {
            Ok(quorum) => quorum,
            Err(error) => {
                let backoff = (self.reopen_backoff.get() * 2).min(self.config.reopen_backoff_max());
                self.reopen_backoff.set(backoff);
                let mut health = self.health.get();
                health.reopen_failures += 1;
                self.health.set(health);
                let now = Instant::now();
                let due = self.last_reopen_warn.get().is_none_or(|at| {
                    now.duration_since(at) >= Duration::from_millis(REOPEN_WARN_INTERVAL_MS)
                });
                if due {
                    self.last_reopen_warn.set(Some(now));
                    tracing::warn!(
                        node = self.config.node.0,
                        %error,
                        attempts = health.reopen_failures,
                        retry_in_ms = backoff.as_millis() as u64,
                        "metadata log: opening it again failed; retrying"
                    );
                }
                return;
            }
        };
        let quorum = attempt;
        let snapshot = quorum.storage().latest_snapshot();
        let snapshot_index = snapshot.get_metadata().index;
        if snapshot_index > self.applied.get() {
            match decode_snapshot(&snapshot.data, &self.config.controller.defaults) {
                Ok(image) => {
                    *self.state.borrow_mut() =
                        ControllerState::new(self.config.controller.clone(), Arc::new(image));
                    self.applied.set(snapshot_index);
                    self.log_has_data.set(true);
                }
                Err(error) => {
                    // As at startup (`recover`): a log whose snapshot does
                    // not decode cannot be followed.
                    tracing::error!(
                        index = snapshot_index,
                        %error,
                        "metadata snapshot on disk does not decode: this node stops following"
                    );
                    self.recovering.set(false);
                    return;
                }
            }
        }
        self.snapshot_index.set(snapshot_index);
        // The entries on disk known committed, past what was applied, as
        // `recover` folds them: Raft hands out again only those after the
        // conf state's index, which the failed `Ready` may have moved
        // past what the driver saw.
        for entry in quorum.storage().committed_entries() {
            if entry.get_entry_type() == raft::eraftpb::EntryType::EntryNormal
                && !entry.data.is_empty()
            {
                self.log_has_data.set(true);
                if entry.index > self.applied.get() {
                    replay_entry(&mut self.state.borrow_mut(), entry.index, &entry.data);
                }
            }
            if entry.index > self.applied.get() {
                self.applied.set(entry.index);
            }
        }
        let (term, commit) = (quorum.term(), quorum.commit_index());
        *self.quorum.borrow_mut() = quorum;
        self.controller_term.set(0);
        self.failed.set(false);
        self.recovering.set(false);
        self.reopened_at.set(Some(Instant::now()));
        let mut health = self.health.get();
        health.reopens += 1;
        self.health.set(health);
        tracing::info!(
            node = self.config.node.0,
            term,
            commit,
            applied = self.applied.get(),
            reopens = health.reopens,
            "metadata log opened again: rejoining the metadata quorum as a follower"
        );
        self.learn_peers();
        self.publish();
        self.wake.notify();
    }

    fn send(&self, messages: Vec<Message>) {
        let mut by_peer: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        for message in messages {
            let body = by_peer.entry(message.to).or_default();
            let bytes = message.write_to_bytes().expect("raft messages encode");
            body.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            body.extend_from_slice(&bytes);
        }
        for (to, body) in by_peer {
            if !self
                .transport
                .send(to, ClusterApiKey::RaftMessages, Bytes::from(body))
            {
                tracing::debug!(to, "no address for a metadata quorum member yet");
                self.quorum.borrow_mut().report_unreachable(to);
            }
        }
    }

    fn apply(&self, out: Output) {
        if let Some(installed) = out.snapshot {
            match decode_snapshot(&installed.data, &self.config.controller.defaults) {
                Ok(image) => {
                    *self.state.borrow_mut() =
                        ControllerState::new(self.config.controller.clone(), Arc::new(image));
                    self.applied.set(installed.index);
                    self.snapshot_index.set(installed.index);
                    self.log_has_data.set(true);
                    self.fail_proposals();
                    self.learn_peers();
                }
                Err(error) => {
                    // The leader's snapshot is the cluster's state: a node
                    // that cannot read it cannot follow.
                    tracing::error!(
                        index = installed.index,
                        %error,
                        "metadata snapshot from the leader does not decode: this node stops following"
                    );
                    self.failed.set(true);
                    return;
                }
            }
        }
        let mut changed_brokers = false;
        for committed in out.committed {
            if committed.index <= self.applied.get() {
                continue;
            }
            if let Some(payload) = &committed.payload {
                replay_entry(&mut self.state.borrow_mut(), committed.index, payload);
                self.log_has_data.set(true);
                changed_brokers = true;
            }
            self.applied.set(committed.index);
            if let Some((term, waiter)) = self.proposals.borrow_mut().remove(&committed.index) {
                let result = if term == committed.term {
                    Ok(())
                } else {
                    Err(Lost::Leadership)
                };
                let _ = waiter.try_send(result);
            }
        }
        if changed_brokers {
            self.learn_peers();
        }
        let applied = self.applied.get();
        let wanted = self.quorum.borrow().snapshot_wanted();
        if applied > self.snapshot_index.get()
            && (wanted || applied - self.snapshot_index.get() >= SNAPSHOT_EVERY_ENTRIES)
        {
            let data = encode_snapshot(self.state.borrow().image());
            match self.quorum.borrow_mut().snapshot(applied, data) {
                Ok(()) => {
                    self.snapshot_index.set(applied);
                    tracing::debug!(index = applied, "metadata log compacted to a snapshot");
                }
                Err(error) => {
                    // The log stays as it was; the next snapshot retries.
                    tracing::warn!(%error, "metadata snapshot failed; the log keeps its entries");
                }
            }
        }
    }

    /// A proposal of an earlier term, or of a leader that no longer
    /// leads, gets an error (it may still commit: never a wrong success).
    fn check_leadership(&self) {
        let (leader, term) = {
            let quorum = self.quorum.borrow();
            (quorum.is_leader(), quorum.term())
        };
        if !leader {
            self.fail_proposals();
            if self.controller_term.get() != 0 {
                tracing::info!(node = self.id(), "no longer the active controller");
                self.controller_term.set(0);
            }
            return;
        }
        let stale: Vec<u64> = self
            .proposals
            .borrow()
            .iter()
            .filter(|(_, (t, _))| *t != term)
            .map(|(index, _)| *index)
            .collect();
        for index in stale {
            if let Some((_, waiter)) = self.proposals.borrow_mut().remove(&index) {
                let _ = waiter.try_send(Err(Lost::Leadership));
            }
        }
    }

    fn fail_proposals(&self) {
        for (_, (_, waiter)) in std::mem::take(&mut *self.proposals.borrow_mut()) {
            let _ = waiter.try_send(Err(Lost::Leadership));
        }
    }

    fn publish(&self) {
        let quorum = self.quorum.borrow();
        let view = QuorumView {
            // A failed log's Raft group is stale: no controller known.
            controller: quorum
                .leader()
                .filter(|_| !self.failed.get())
                .and_then(|id| u32::try_from(id).ok())
                .map(NodeId),
            applied_index: self.applied.get(),
            committed_index: quorum.commit_index(),
        };
        drop(quorum);
        let image = self.state.borrow().image().clone();
        let image_changed = !Arc::ptr_eq(&image, &self.image.borrow());
        if image_changed {
            *self.image.borrow_mut() = image;
        }
        if image_changed || view != self.view.get() {
            self.view.set(view);
            self.changed.notify();
        }
    }

    /// Learners are reached at their registered cluster endpoint.
    fn learn_peers(&self) {
        let me = self.config.node;
        let image = self.state.borrow().image().clone();
        for broker in image.brokers() {
            if broker.node == me {
                continue;
            }
            if let Some(endpoint) = &broker.endpoints.cluster {
                let id = u64::from(broker.node.0);
                let is_voter = self.config.voters.iter().any(|v| v.node == broker.node);
                if !is_voter {
                    self.transport.set_peer(id, endpoint.to_string());
                }
            }
        }
    }

    /// The active controller adds registered non-voters as learners, one
    /// membership change at a time.
    fn add_learners(&self) {
        let image = self.state.borrow().image().clone();
        for broker in image.brokers() {
            let id = u64::from(broker.node.0);
            let known = {
                let quorum = self.quorum.borrow();
                let conf = quorum.conf_state();
                conf.voters.contains(&id) || conf.learners.contains(&id)
            };
            if known {
                continue;
            }
            match self.quorum.borrow_mut().add_learner(id) {
                Ok(()) => self.wake.notify(),
                Err(ProposeError::ConfChangePending) => {}
                Err(error) => tracing::debug!(node = id, %error, "learner not added yet"),
            }
            return;
        }
    }

    fn warn_no_leader(&self) {
        let now = Instant::now();
        let due = self.last_no_leader_warn.get().is_none_or(|at| {
            now.duration_since(at) >= Duration::from_millis(NO_LEADER_WARN_INTERVAL_MS)
        });
        if !due {
            return;
        }
        self.last_no_leader_warn.set(Some(now));
        let unreachable: Vec<u32> = self
            .config
            .voters
            .iter()
            .filter(|v| v.node != self.config.node)
            .filter(|v| !self.transport.connected(u64::from(v.node.0)))
            .map(|v| v.node.0)
            .collect();
        tracing::warn!(
            node = self.config.node.0,
            voters = ?self.config.voter_ids(),
            ?unreachable,
            "metadata quorum has no leader: waiting for a majority of the voters to be reachable"
        );
    }
}

/// Ticks Raft and handles its `Ready`s while the driver lives.
async fn pump(driver: Weak<Driver>) {
    let tick = {
        let Some(driver) = driver.upgrade() else {
            return;
        };
        Duration::from_millis(driver.config.raft_tick_ms.max(1))
    };
    let mut next_tick = Instant::now() + tick;
    let mut leaderless_ticks = 0u64;
    loop {
        let Some(d) = driver.upgrade() else {
            return;
        };
        if d.failed.get() {
            if !d.recovering.get() || d.stopped.get() {
                return;
            }
            let backoff = d.reopen_backoff.get();
            drop(d);
            glommio::timer::sleep(backoff).await;
            let Some(d) = driver.upgrade() else {
                return;
            };
            if d.stopped.get() {
                return;
            }
            d.reopen();
            next_tick = Instant::now() + tick;
            leaderless_ticks = 0;
            continue;
        }
        let seen = d.wake.version();
        d.process_ready();
        let now = Instant::now();
        if now >= next_tick {
            d.quorum.borrow_mut().tick();
            next_tick = (next_tick + tick).max(now);
            if d.quorum.borrow().leader().is_none() {
                leaderless_ticks += 1;
                if leaderless_ticks > 2 * ELECTION_TICKS as u64 {
                    d.warn_no_leader();
                }
            } else {
                leaderless_ticks = 0;
            }
            continue;
        }
        futures_lite::future::or(
            d.wake.wait_past(seen),
            glommio::timer::sleep(next_tick - now),
        )
        .await;
    }
}

/// The active controller's work: queued commands one at a time, and the
/// periodic `tick`.
async fn controller_loop(driver: Weak<Driver>, jobs: LocalReceiver<Job>) {
    let tick = {
        let Some(driver) = driver.upgrade() else {
            return;
        };
        Duration::from_millis(driver.config.raft_tick_ms.max(1))
    };
    loop {
        let job = futures_lite::future::or(async { Some(jobs.recv().await) }, async {
            glommio::timer::sleep(tick).await;
            None
        })
        .await;
        let Some(d) = driver.upgrade() else {
            return;
        };
        if d.failed.get() {
            if let Some(Some((_, reply))) = job {
                let _ = reply.try_send(Err(Lost::Leadership));
            }
            continue;
        }
        let ready = d.become_controller_if_ready().await;
        match job {
            Some(Some((command, reply))) => {
                if !ready {
                    let _ = reply.try_send(Err(Lost::Leadership));
                    continue;
                }
                let now_ms = now_ms();
                let (records, answer) = d.state.borrow_mut().handle(now_ms, &command);
                let result = if records.is_empty() {
                    Ok(Answer {
                        reply: answer,
                        index: heartbeat_index(&command, d.applied.get()),
                    })
                } else {
                    d.propose(&records).await.map(|index| Answer {
                        reply: answer,
                        index,
                    })
                };
                let _ = reply.try_send(result);
            }
            Some(None) => return,
            None => {
                if ready {
                    let records = d.state.borrow_mut().tick(now_ms());
                    if !records.is_empty() {
                        let _ = d.propose(&records).await;
                    }
                    d.add_learners();
                }
            }
        }
    }
}

impl Driver {
    /// Whether this node is the active controller; on the first time in a
    /// term, tells the state machine (and bootstraps an empty log).
    async fn become_controller_if_ready(&self) -> bool {
        let (ready, term) = {
            let quorum = self.quorum.borrow();
            (quorum.leader_ready(self.applied.get()), quorum.term())
        };
        if !ready {
            return false;
        }
        if self.controller_term.get() != term {
            self.controller_term.set(term);
            tracing::info!(node = self.id(), term, "this node is the active controller");
            self.state.borrow_mut().become_leader(now_ms());
            // The first controller of an empty log bootstraps it (again
            // in a later term if it did not finish).
            if !self.log_has_data.get() {
                self.bootstrapping.set(true);
            }
        }
        if self.bootstrapping.get() {
            // The cluster id (from the state's tick) and this node's
            // bootstrap records, in ONE entry: no node ever applies an
            // image that has a cluster id but not yet the imported topics
            // (a node following the log would take their absence for a
            // deletion).
            let mut records = self.state.borrow_mut().tick(now_ms());
            let bootstrap = self.bootstrap.borrow().clone();
            records.extend(bootstrap.iter().cloned());
            if !records.is_empty() {
                match self.propose(&records).await {
                    Ok(index) => {
                        if !bootstrap.is_empty() {
                            tracing::info!(
                                index,
                                records = bootstrap.len(),
                                "metadata log bootstrapped"
                            );
                        }
                        self.bootstrap.borrow_mut().clear();
                    }
                    Err(_) => return false,
                }
            }
            self.bootstrapping.set(false);
        }
        self.quorum.borrow().leader_ready(self.applied.get())
    }
}

/// The index an answer without records carries: for a heartbeat, what
/// this controller had applied when it answered (the broker extends its
/// lease only once its own image reached it: a node far behind on the log
/// must not lead on an image that misses leaderships moved away from it,
/// `lifecycle::LeaseRule`); else 0.
pub fn heartbeat_index(command: &ControllerCommand, applied: u64) -> u64 {
    match command {
        ControllerCommand::Heartbeat { .. } => applied,
        _ => 0,
    }
}

/// The controller's time: sessions and intervals are measured on it, so it
/// must not jump with the wall clock (see `clock::steady_ms`).
fn now_ms() -> u64 {
    u64::try_from(crate::clock::steady_ms()).unwrap_or(0)
}

/// What the cluster listener serves from the driver.
struct Service(Weak<Driver>);

impl ClusterService for Service {
    fn one_way(&self, api: ClusterApiKey, body: Bytes) {
        let Some(driver) = self.0.upgrade() else {
            return;
        };
        if REPLICATION_KEYS.contains(&api) {
            let replication = driver.replication.borrow().clone();
            if let Some(replication) = replication {
                replication.one_way(api, body);
            }
            return;
        }
        if api != ClusterApiKey::RaftMessages {
            tracing::debug!(?api, "cluster frame ignored: not one-way");
            return;
        }
        if driver.failed.get() {
            return;
        }
        match decode_messages(&body) {
            Ok(messages) => {
                let mut quorum = driver.quorum.borrow_mut();
                for message in messages {
                    quorum.step(message);
                }
                drop(quorum);
                driver.wake.notify();
            }
            Err(reason) => tracing::warn!(%reason, "bad raft message batch dropped"),
        }
    }

    fn request(
        &self,
        api: ClusterApiKey,
        body: Bytes,
    ) -> Pin<Box<dyn Future<Output = Result<Reply, String>>>> {
        if REPLICATION_KEYS.contains(&api) {
            let replication = self
                .0
                .upgrade()
                .and_then(|driver| driver.replication.borrow().clone());
            return match replication {
                Some(replication) => replication.request(api, body),
                None => {
                    Box::pin(async move { Err(format!("{api:?}: not serving replication yet")) })
                }
            };
        }
        let driver = self.0.clone();
        Box::pin(async move {
            let driver = driver.upgrade().ok_or("shutting down")?;
            if api != ClusterApiKey::ControllerCommand {
                return Err(format!("{api:?} is not a request"));
            }
            let command = ControllerCommand::decode(&body).map_err(|e| e.to_string())?;
            if driver.failed.get() {
                // Retriable: the caller tries the other voters.
                return Err("not the controller (its metadata log is being reopened)".to_owned());
            }
            let leader = driver.quorum.borrow().leader();
            if leader != Some(driver.id()) {
                return Err(format!("not the controller (leader: {leader:?})"));
            }
            match driver.execute(command).await {
                Ok(answer) => {
                    let mut out = Vec::new();
                    answer.encode(&mut out);
                    Ok(Reply::from(Bytes::from(out)))
                }
                Err(lost) => Err(format!("not committed: {lost:?}")),
            }
        })
    }
}

/// Most messages in one Raft batch frame.
const BATCH_MESSAGES_MAX: usize = 4_096;

fn decode_messages(body: &[u8]) -> Result<Vec<Message>, String> {
    let mut messages = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        if messages.len() >= BATCH_MESSAGES_MAX {
            return Err(format!("more than {BATCH_MESSAGES_MAX} messages"));
        }
        let len: [u8; 4] = rest
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or("message length cut short")?;
        let len = u32::from_le_bytes(len) as usize;
        let bytes = rest.get(4..4 + len).ok_or("message cut short")?;
        messages.push(Message::parse_from_bytes(bytes).map_err(|e| e.to_string())?);
        rest = &rest[4 + len..];
    }
    Ok(messages)
}

pub mod lifecycle;

#[cfg(test)]
mod tests;
