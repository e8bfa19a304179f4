//! The replica fetchers of one shard (glommio): a supervisor task watches
//! the partitions this shard follows ([`ReplicaLogs::followed`]) and runs
//! one fetcher task per leader node they name, started when a leader
//! appears and ending once none of its partitions is followed here. Each
//! fetcher runs the sans-IO core ([`super::fetcher::Fetcher`]): local
//! operations on the shard's logs, then one request at a time to the
//! leader over the [`ReplicaNetwork`] (long-polling fetches, so an idle
//! follower sends one request per `wait_max_ms` and burns no CPU in
//! between), waiting out backoffs on a timer. Nothing runs when nothing is
//! followed but the supervisor, parked on `followed_changed`.
//!
//! Lives on: every shard (started by `shard.rs` with
//! [`start_fetchers`]). Owns: its fetcher tasks and, through
//! [`TransportNetwork`], an outbound-only cluster transport of its own
//! (one connection per leader node it follows). Stopped by
//! [`ReplicaFetchers::stop`] (the shard's drain): a request in flight or
//! a pause is abandoned, a local operation (an append, a truncation)
//! finishes first; [`ReplicaFetchers::stopped`] waits for that.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use fjord_schema::api::ClusterApiKey;
use fjord_schema::NodeId;

use super::fetcher::{Fetcher, LocalOp, ReplicaFetcherConfig, Step};
use super::wire::{
    DecodeError, EpochsRequest, EpochsResponse, ReplicaFetchRequest, ReplicaFetchResponse,
};
use super::{FollowerError, FollowerPosition, ReplicaLogs};
use crate::controller::transport::{Answer, CallError, Notify, Transport};

/// Why a request to a leader got no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    #[error("no cluster address known for node {0}")]
    UnknownAddress(NodeId),
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("the answer does not decode: {0}")]
    Decode(#[from] DecodeError),
}

/// How a fetcher reaches leaders: injected (the cluster transport in a
/// broker, an in-memory leader in tests and issue 15's simulation).
#[allow(async_fn_in_trait)]
pub trait ReplicaNetwork {
    /// Sends a replica fetch to `leader`; fails after `timeout`.
    async fn fetch(
        &self,
        leader: NodeId,
        request: &ReplicaFetchRequest,
        timeout: Duration,
    ) -> Result<ReplicaFetchResponse, NetworkError>;
    /// Sends an `OffsetForLeaderEpoch` to `leader`; fails after `timeout`.
    async fn offsets_for_epochs(
        &self,
        leader: NodeId,
        request: &EpochsRequest,
        timeout: Duration,
    ) -> Result<EpochsResponse, NetworkError>;
}

/// [`ReplicaNetwork`] over a shard's own outbound cluster transport:
/// leaders are reached at the cluster address `address` gives (the
/// shard's catalog image's brokers), looked up before every request so a
/// re-registered broker's new address is used.
pub struct TransportNetwork {
    transport: Transport,
    address: AddressOf,
}

/// Where a node's cluster listener is (`host:port`), if known.
pub type AddressOf = Box<dyn Fn(NodeId) -> Option<String>>;

impl std::fmt::Debug for TransportNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportNetwork")
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl TransportNetwork {
    /// `node`: this node (its transport makes no connection to itself).
    pub fn new(node: NodeId, address: AddressOf) -> TransportNetwork {
        TransportNetwork {
            transport: Transport::new(u64::from(node.get())),
            address,
        }
    }

    async fn call(
        &self,
        leader: NodeId,
        api: ClusterApiKey,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Answer, NetworkError> {
        let id = u64::from(leader.get());
        if id == self.transport.node() {
            return Err(NetworkError::UnknownAddress(leader));
        }
        let addr = (self.address)(leader).ok_or(NetworkError::UnknownAddress(leader))?;
        self.transport.set_peer(id, addr);
        Ok(self.transport.call_frame(id, api, body, timeout).await?)
    }

    /// Closes its connections (the shard stops).
    pub fn close(&self) {
        self.transport.close();
    }
}

impl ReplicaNetwork for TransportNetwork {
    async fn fetch(
        &self,
        leader: NodeId,
        request: &ReplicaFetchRequest,
        timeout: Duration,
    ) -> Result<ReplicaFetchResponse, NetworkError> {
        let answer = self
            .call(
                leader,
                ClusterApiKey::ReplicaFetch,
                request.encode(),
                timeout,
            )
            .await?;
        Ok(ReplicaFetchResponse::decode(&answer.body, &answer.payload)?)
    }

    async fn offsets_for_epochs(
        &self,
        leader: NodeId,
        request: &EpochsRequest,
        timeout: Duration,
    ) -> Result<EpochsResponse, NetworkError> {
        let answer = self
            .call(
                leader,
                ClusterApiKey::OffsetForLeaderEpoch,
                request.encode(),
                timeout,
            )
            .await?;
        Ok(EpochsResponse::decode(&answer.body)?)
    }
}

/// The fetchers of one shard; dropping it does not stop them, [`stop`]
/// does.
///
/// [`stop`]: ReplicaFetchers::stop
#[derive(Clone)]
pub struct ReplicaFetchers {
    shared: Rc<Shared>,
}

impl std::fmt::Debug for ReplicaFetchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaFetchers")
            .field("running", &self.shared.running.borrow())
            .finish()
    }
}

struct Shared {
    running: RefCell<BTreeSet<NodeId>>,
    stopped: Cell<bool>,
    stopping: Notify,
    /// A fetcher task ended.
    exited: Notify,
    /// Requests sent (fetches and epoch queries), for tests and metrics.
    requests: Cell<u64>,
}

impl ReplicaFetchers {
    /// Ends every fetcher and the supervisor: a request in flight is
    /// dropped unanswered, a local operation running finishes.
    pub fn stop(&self) {
        self.shared.stopped.set(true);
        self.shared.stopping.notify();
    }

    /// Returns once every fetcher task ended (after [`Self::stop`]; the
    /// shard closes its logs after this).
    pub async fn stopped(&self) {
        loop {
            let seen = self.shared.exited.version();
            if self.shared.running.borrow().is_empty() {
                return;
            }
            self.shared.exited.wait_past(seen).await;
        }
    }

    /// The leaders with a fetcher running now.
    pub fn running(&self) -> Vec<NodeId> {
        self.shared.running.borrow().iter().copied().collect()
    }

    /// Requests sent so far by this shard's fetchers.
    pub fn requests(&self) -> u64 {
        self.shared.requests.get()
    }
}

/// Starts the replica fetchers of the current shard: `node` is this
/// node, `logs` the shard's follower side, `network` how leaders are
/// reached. Returns at once; the tasks run on the current executor.
pub fn start_fetchers<L, N>(
    node: NodeId,
    logs: Rc<L>,
    network: Rc<N>,
    config: ReplicaFetcherConfig,
) -> ReplicaFetchers
where
    L: ReplicaLogs + 'static,
    N: ReplicaNetwork + 'static,
{
    let shared = Rc::new(Shared {
        running: RefCell::new(BTreeSet::new()),
        stopped: Cell::new(false),
        stopping: Notify::default(),
        exited: Notify::default(),
        requests: Cell::new(0),
    });
    let context = Rc::new(Context {
        node,
        logs,
        network,
        config,
        shared: shared.clone(),
    });
    glommio::spawn_local(supervise(context)).detach();
    ReplicaFetchers { shared }
}

struct Context<L, N> {
    node: NodeId,
    logs: Rc<L>,
    network: Rc<N>,
    config: ReplicaFetcherConfig,
    shared: Rc<Shared>,
}

impl<L: ReplicaLogs, N> Context<L, N> {
    /// `future`'s output, or `None` once the fetchers are stopped.
    async fn unless_stopped<T>(&self, future: impl Future<Output = T>) -> Option<T> {
        let seen = self.shared.stopping.version();
        if self.shared.stopped.get() {
            return None;
        }
        futures_lite::future::or(async { Some(future.await) }, async {
            self.shared.stopping.wait_past(seen).await;
            None
        })
        .await
    }
}

fn now_ms() -> u64 {
    u64::try_from(crate::clock::steady_ms()).unwrap_or(0)
}

/// Starts a fetcher for every leader named by the followed set that has
/// none, each time the set changes.
async fn supervise<L, N>(context: Rc<Context<L, N>>)
where
    L: ReplicaLogs + 'static,
    N: ReplicaNetwork + 'static,
{
    loop {
        let (version, followed) = context.logs.followed();
        let leaders: BTreeSet<NodeId> = followed
            .iter()
            .map(|f| f.leader)
            .filter(|l| *l != context.node)
            .collect();
        for leader in leaders {
            if context.shared.running.borrow_mut().insert(leader) {
                tracing::debug!(leader = leader.get(), "replica fetcher started");
                glommio::spawn_local(run_fetcher(context.clone(), leader)).detach();
            }
        }
        if context
            .unless_stopped(context.logs.followed_changed(version))
            .await
            .is_none()
        {
            return;
        }
    }
}

/// One fetcher: follows `leader` until none of its partitions is followed
/// here (or the fetchers stop).
async fn run_fetcher<L, N>(context: Rc<Context<L, N>>, leader: NodeId)
where
    L: ReplicaLogs,
    N: ReplicaNetwork,
{
    let mut fetcher = Fetcher::new(context.node, leader, context.config);
    let mut seen = None;
    let timeout = Duration::from_millis(
        u64::from(context.config.wait_max_ms).saturating_add(context.config.request_timeout_ms),
    );
    let mut failing = false;
    while !context.shared.stopped.get() {
        let (version, followed) = context.logs.followed();
        if seen != Some(version) {
            fetcher.set_followed(&followed);
            seen = Some(version);
        }
        if fetcher.is_empty() {
            break;
        }
        match fetcher.next_step(now_ms()) {
            Step::Local(ops) => {
                // Not abandoned on stop: an append or truncation runs to
                // its end before the shard closes its logs.
                for op in ops {
                    let key = op.key().clone();
                    let epoch = op.epoch();
                    let result = run_op(&*context.logs, op).await;
                    fetcher.local_done(now_ms(), &key, epoch, result);
                }
            }
            Step::Fetch(request) => {
                context
                    .shared
                    .requests
                    .set(context.shared.requests.get() + 1);
                let call = context.network.fetch(leader, &request, timeout);
                let result = match in_flight(&context, &mut fetcher, &mut seen, call).await {
                    Waited::Answered(result) => result,
                    Waited::Abandoned => continue,
                    Waited::Stopped => break,
                };
                match result {
                    Ok(response) => {
                        failing = false;
                        fetcher.fetched(now_ms(), response);
                    }
                    Err(error) => {
                        report(&mut failing, leader, &error);
                        fetcher.request_failed(now_ms());
                    }
                }
            }
            Step::Epochs(request) => {
                context
                    .shared
                    .requests
                    .set(context.shared.requests.get() + 1);
                let call = context
                    .network
                    .offsets_for_epochs(leader, &request, timeout);
                let result = match in_flight(&context, &mut fetcher, &mut seen, call).await {
                    Waited::Answered(result) => result,
                    Waited::Abandoned => continue,
                    Waited::Stopped => break,
                };
                match result {
                    Ok(response) => {
                        failing = false;
                        fetcher.epochs_answered(now_ms(), response);
                    }
                    Err(error) => {
                        report(&mut failing, leader, &error);
                        fetcher.request_failed(now_ms());
                    }
                }
            }
            Step::Wait { until_ms } => {
                let changed = context.logs.followed_changed(seen.unwrap_or_default());
                let waited = match until_ms {
                    None => context.unless_stopped(changed).await,
                    Some(until) => {
                        let pause = Duration::from_millis(until.saturating_sub(now_ms()));
                        let timer = glommio::timer::sleep(pause);
                        context
                            .unless_stopped(futures_lite::future::or(changed, timer))
                            .await
                    }
                };
                if waited.is_none() {
                    break;
                }
            }
        }
    }
    context.shared.running.borrow_mut().remove(&leader);
    context.shared.exited.notify();
    tracing::debug!(leader = leader.get(), "replica fetcher ended");
}

/// How the wait for a request in flight ended.
enum Waited<T> {
    Answered(Result<T, NetworkError>),
    /// The followed set changed so that no partition of the request is
    /// still wanted: the request was dropped (a stopped or unreachable
    /// leader must not hold the fetcher for the request timeout).
    Abandoned,
    Stopped,
}

/// Waits for the request in flight, applying changes of the followed set
/// meanwhile (the core ignores answers for partitions gone or changed).
async fn in_flight<L, N, T>(
    context: &Context<L, N>,
    fetcher: &mut Fetcher,
    seen: &mut Option<u64>,
    call: impl Future<Output = Result<T, NetworkError>>,
) -> Waited<T>
where
    L: ReplicaLogs,
{
    let mut call = std::pin::pin!(call);
    loop {
        let changed = context.logs.followed_changed(seen.unwrap_or_default());
        let next = futures_lite::future::or(async { Some(call.as_mut().await) }, async {
            changed.await;
            None
        });
        match context.unless_stopped(next).await {
            None => return Waited::Stopped,
            Some(Some(result)) => return Waited::Answered(result),
            Some(None) => {
                let (version, followed) = context.logs.followed();
                fetcher.set_followed(&followed);
                *seen = Some(version);
                if !fetcher.in_flight_wanted() {
                    fetcher.abandon();
                    return Waited::Abandoned;
                }
            }
        }
    }
}

/// Logs a failed request: the first of a streak as a warning, the rest
/// at debug (a leader down must not flood the log).
fn report(failing: &mut bool, leader: NodeId, error: &NetworkError) {
    if *failing {
        tracing::debug!(leader = leader.get(), %error, "replica fetch failed again");
    } else {
        tracing::warn!(leader = leader.get(), %error, "replica fetch failed; backing off");
        *failing = true;
    }
}

/// The [`ReplicaLogs`] that a shared owner holds (a shard's
/// `ShardService` and its partition manager): the fetchers keep the owner
/// alive until they stop.
pub struct OwnedLogs<O, L> {
    owner: Rc<O>,
    logs: fn(&O) -> &L,
}

impl<O, L> std::fmt::Debug for OwnedLogs<O, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedLogs").finish_non_exhaustive()
    }
}

impl<O, L> OwnedLogs<O, L> {
    pub fn new(owner: Rc<O>, logs: fn(&O) -> &L) -> OwnedLogs<O, L> {
        OwnedLogs { owner, logs }
    }

    fn get(&self) -> &L {
        (self.logs)(&self.owner)
    }
}

impl<O, L: ReplicaLogs> ReplicaLogs for OwnedLogs<O, L> {
    fn followed(&self) -> (u64, Vec<super::Followed>) {
        self.get().followed()
    }

    fn followed_changed(&self, seen: u64) -> impl Future<Output = ()> {
        self.get().followed_changed(seen)
    }

    fn position(
        &self,
        topic: &str,
        partition: fjord_schema::PartitionId,
        leader_epoch: fjord_schema::LeaderEpoch,
    ) -> Result<FollowerPosition, FollowerError> {
        self.get().position(topic, partition, leader_epoch)
    }

    async fn truncate(
        &self,
        topic: &str,
        partition: fjord_schema::PartitionId,
        leader_epoch: fjord_schema::LeaderEpoch,
        end: fjord_schema::Offset,
    ) -> Result<FollowerPosition, FollowerError> {
        self.get()
            .truncate(topic, partition, leader_epoch, end)
            .await
    }

    async fn append(
        &self,
        topic: &str,
        partition: fjord_schema::PartitionId,
        leader_epoch: fjord_schema::LeaderEpoch,
        batches: Vec<Bytes>,
        leader_high_watermark: fjord_schema::Offset,
        leader_log_start: fjord_schema::Offset,
    ) -> Result<FollowerPosition, FollowerError> {
        self.get()
            .append(
                topic,
                partition,
                leader_epoch,
                batches,
                leader_high_watermark,
                leader_log_start,
            )
            .await
    }

    async fn flush(
        &self,
        topic: &str,
        partition: fjord_schema::PartitionId,
        leader_epoch: fjord_schema::LeaderEpoch,
    ) -> Result<FollowerPosition, FollowerError> {
        self.get().flush(topic, partition, leader_epoch).await
    }
}

async fn run_op<L: ReplicaLogs>(logs: &L, op: LocalOp) -> Result<FollowerPosition, FollowerError> {
    match op {
        LocalOp::Position { key, epoch } => logs.position(&key.0, key.1, epoch),
        LocalOp::Truncate { key, epoch, end } => logs.truncate(&key.0, key.1, epoch, end).await,
        LocalOp::Append {
            key,
            epoch,
            batches,
            high_watermark,
            log_start,
        } => {
            logs.append(&key.0, key.1, epoch, batches, high_watermark, log_start)
                .await
        }
        LocalOp::Flush { key, epoch } => logs.flush(&key.0, key.1, epoch).await,
    }
}

#[cfg(test)]
mod tests;
