//! Hosts the group coordinators of one shard: one sans-IO
//! [`Coordinator`] per `__consumer_offsets` partition this shard leads
//! (Kafka 4's coordinator runtime keeps one state machine per offsets
//! partition the same way). Turns group requests (arriving as
//! [`GroupOp`]s, locally or over the mesh) into coordinator events for the
//! group's partition, parks the requests the coordinator answers later
//! (JoinGroup and SyncGroup wait for the rebalance), drives the timers,
//! writes commits to `__consumer_offsets` with acks=all, and loads and
//! unloads a partition's groups as this shard gains and loses its
//! leadership ([`GroupHost::offsets_leadership`]).
//!
//! The host reaches its shard only through [`GroupShard`] (the shard's
//! service implements it), so the group module does not depend on the
//! service that composes it.
//!
//! Decisions:
//! - A partition's groups are loaded by replaying its local log up to the
//!   log end, not the high watermark. A new leader's log is everything
//!   acknowledged (it was in the ISR) plus perhaps a tail the old leader
//!   had not yet seen replicated; its own high watermark can trail records
//!   the old leader acknowledged long ago (it learns the HW from fetch
//!   responses), so replaying to the HW could lose acknowledged commits.
//!   The tail is this leader's log now: followers truncate to it and the
//!   HW reaches it as they fetch, and every commit this coordinator writes
//!   lands after it, so its acks=all wait covers the tail too (Kafka loads
//!   to the log end as well). An offset served from the tail before the HW
//!   passes it can only be lost with this leader, and then the group
//!   resumes from an earlier offset: duplicates, never a skipped record.
//! - Requests for a partition being loaded answer
//!   COORDINATOR_LOAD_IN_PROGRESS; for a partition this shard does not
//!   lead (or stopped leading while they waited) NOT_COORDINATOR, so
//!   clients find the new coordinator. Membership is not replicated:
//!   members rejoin the new coordinator (one rebalance), as in Kafka.
//! - Every load has a fresh [`LoadId`]; a write finishing after its
//!   partition was unloaded (or reloaded) is dropped, its request having
//!   been answered NOT_COORDINATOR at the unload.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fjord_schema::{BatchView, ErrorCode, LeaderEpoch, PartitionId};
use futures_lite::future;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::timer::sleep;

use super::coordinator::{Action, Coordinator, GroupConfig, Millis, ReplyId};
use super::offsets_log::{self, OFFSETS_TOPIC};
use super::ops::{GroupOp, GroupReply, GroupUnavailable};
use crate::clock::now_ms;
use crate::lease::BrokerLease;

/// What the group host needs of the shard that runs it: its own host, and
/// the `__consumer_offsets` partitions this shard leads.
pub trait GroupShard: 'static {
    /// The host attached to this shard, if any.
    fn group_host(&self) -> Option<&GroupHost>;

    /// The partition count of `__consumer_offsets` in the shard's current
    /// catalog; `None` while the topic does not exist.
    fn offsets_partition_count(&self) -> Option<u32>;

    /// The `__consumer_offsets` partitions this shard holds and this node
    /// leads in the shard's current catalog, with their leader epochs
    /// (offline replicas are left out: their groups cannot be served until
    /// repaired, the others can).
    fn led_offsets_partitions(&self) -> Vec<(PartitionId, LeaderEpoch)>;

    /// The log start and log end of this shard's replica of an offsets
    /// partition.
    fn offsets_log_bounds(
        &self,
        partition: PartitionId,
    ) -> impl Future<Output = Result<(i64, i64), ErrorCode>>;

    /// Whole batches of this shard's replica of an offsets partition from
    /// the one holding `offset`, below the replica's log end (not the high
    /// watermark: see the module's decisions), within `max_bytes` (the
    /// first batch always).
    fn read_offsets(
        &self,
        partition: PartitionId,
        offset: i64,
        max_bytes: usize,
    ) -> impl Future<Output = Result<Vec<Bytes>, ErrorCode>>;

    /// Appends `batch` to an offsets partition with acks = all: completes
    /// once the high watermark passed it (on stable storage on every ISR
    /// member), or with the produce's error (NOT_ENOUGH_REPLICAS,
    /// NOT_LEADER_OR_FOLLOWER, ...).
    fn append_offsets(
        &self,
        partition: PartitionId,
        batch: Bytes,
    ) -> impl Future<Output = Result<(), OffsetsWriteError>>;
}

/// Why an offsets batch was not written.
#[derive(Debug, thiserror::Error)]
#[error("{code:?}{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
pub struct OffsetsWriteError {
    pub code: ErrorCode,
    pub message: Option<String>,
}

/// Why loading an offsets partition's groups failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{OFFSETS_TOPIC}-{partition}: {code:?}")]
    LogBounds {
        partition: PartitionId,
        code: ErrorCode,
    },
    #[error("{OFFSETS_TOPIC}-{partition} at {offset}: {code:?}")]
    Read {
        partition: PartitionId,
        offset: i64,
        code: ErrorCode,
    },
    #[error("{OFFSETS_TOPIC}-{partition} at {offset}: the read returned nothing before the log end {end}")]
    Short {
        partition: PartitionId,
        offset: i64,
        end: i64,
    },
    #[error("{0}")]
    Batch(#[from] fjord_schema::BatchError),
}

/// Names one load of an offsets partition's groups on a host (unique per
/// host): work started for a load that is no longer the partition's
/// current one is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LoadId(pub u64);

/// Bytes read per step while loading an offsets partition.
pub const REPLAY_READ_BYTES: usize = 1 << 20;
/// Largest decompressed offsets batch accepted on replay.
pub const REPLAY_BATCH_BYTES_MAX: usize = 64 << 20;
/// How long the timer sleeps when no deadline is pending (it is woken by
/// every event anyway).
const IDLE_TICK: Duration = Duration::from_secs(3600);
/// Backoff between attempts of a failed load (doubling up to the max);
/// its groups answer COORDINATOR_LOAD_IN_PROGRESS meanwhile.
pub const LOAD_RETRY_MIN: Duration = Duration::from_millis(100);
pub const LOAD_RETRY_MAX: Duration = Duration::from_secs(5);

/// One offsets partition this shard leads.
#[derive(Debug)]
enum Slot {
    /// Its log is being replayed; its groups' requests get
    /// COORDINATOR_LOAD_IN_PROGRESS.
    Loading {
        load: LoadId,
        leader_epoch: LeaderEpoch,
    },
    /// Its groups are served.
    Loaded {
        load: LoadId,
        leader_epoch: LeaderEpoch,
        coordinator: Box<Coordinator>,
    },
}

impl Slot {
    fn leader_epoch(&self) -> LeaderEpoch {
        match self {
            Slot::Loading { leader_epoch, .. } | Slot::Loaded { leader_epoch, .. } => *leader_epoch,
        }
    }
}

/// A request waiting for its coordinator's answer.
#[derive(Debug)]
struct Parked {
    /// The offsets partition of its group: unloading it answers the
    /// request NOT_COORDINATOR.
    partition: PartitionId,
    sender: LocalSender<GroupReply>,
}

/// The group coordinators of one shard.
///
/// Lives on: every shard; serves the groups whose `__consumer_offsets`
/// partition this shard leads. Owns: one [`Coordinator`] per such
/// partition (its groups' state and committed offsets; the `GroupConfig`
/// limits apply per partition), the senders of the requests waiting for an
/// answer (at most `parked_max` over all partitions), and the timer task.
/// Lifecycle: created at shard start → [`GroupHost::load_led`] loads the
/// partitions led at start (before the shard serves) →
/// [`GroupHost::offsets_leadership`] on every leadership change of an
/// offsets partition held by the shard (the shard's image handling drives
/// it) → dropped with the shard's service (parked requests then get
/// `Unavailable`).
#[derive(Debug)]
pub struct GroupHost {
    config: GroupConfig,
    /// Mixed with each load's id into its coordinator's member-id nonce.
    nonce: u64,
    slots: RefCell<BTreeMap<PartitionId, Slot>>,
    next_load: Cell<u64>,
    waiting: RefCell<HashMap<ReplyId, Parked>>,
    parked_max: usize,
    next_reply: Cell<u64>,
    epoch: Instant,
    wake: LocalSender<()>,
    wake_rx: RefCell<Option<LocalReceiver<()>>>,
    /// Set when the shard stops: parked requests were answered with
    /// COORDINATOR_NOT_AVAILABLE and new ones are refused, so draining
    /// connections is not held up by a rebalance.
    stopping: Cell<bool>,
    /// The broker's lease (`controller::driver::lifecycle::BrokerLease`,
    /// shared by every shard): while it does not hold, every group request
    /// answers NOT_COORDINATOR ([`GroupHost::call`]). `None`: not in a
    /// cluster, always coordinating.
    lease: Option<Arc<BrokerLease>>,
}

impl GroupHost {
    /// `nonce` must differ between starts of a shard (the shard takes it
    /// from the wall clock): member ids of a coordinator include it.
    pub fn new(config: GroupConfig, parked_max: usize, nonce: u64) -> GroupHost {
        config.check();
        assert!(parked_max > 0);
        let (wake, wake_rx) = local_channel::new_bounded(1);
        GroupHost {
            config,
            nonce,
            slots: RefCell::new(BTreeMap::new()),
            next_load: Cell::new(0),
            waiting: RefCell::new(HashMap::new()),
            parked_max,
            next_reply: Cell::new(0),
            epoch: Instant::now(),
            wake,
            wake_rx: RefCell::new(Some(wake_rx)),
            stopping: Cell::new(false),
            lease: None,
        }
    }

    /// The broker's lease this host coordinates under (gap B of
    /// docs/CORRECTNESS.md); `None`: none needed.
    pub fn with_lease(mut self, lease: Option<Arc<BrokerLease>>) -> GroupHost {
        self.lease = lease;
        self
    }

    /// Whether this node may act as a group coordinator now: its lease
    /// holds. A node cut off from the metadata quorum stops answering
    /// from the groups it loaded (OffsetFetch from its cache, JoinGroup
    /// for a new generation) before the controller can fence it and move
    /// `__consumer_offsets` leadership to a node that loads them afresh.
    /// Its loaded groups stay: they serve again as soon as a heartbeat is
    /// acknowledged, unless the image it applied meanwhile unloaded them.
    pub fn coordinating(&self) -> bool {
        self.lease.as_ref().is_none_or(|lease| lease.holds())
    }

    /// The shard is stopping: answers every parked request (clients
    /// retry with the restarted broker) and refuses new ones.
    pub fn stop(&self) {
        self.stopping.set(true);
        // Dropping the senders wakes every waiter with `Unavailable`.
        self.waiting.borrow_mut().clear();
    }

    fn now(&self) -> Millis {
        Millis(self.epoch.elapsed().as_millis() as u64)
    }

    /// Starts the timer task that calls `handle_tick` at the coordinators'
    /// next deadline. Ends when the service is dropped.
    pub fn start_timer<S: GroupShard>(service: &Rc<S>) {
        let Some(host) = service.group_host() else {
            return;
        };
        let wake = host
            .wake_rx
            .borrow_mut()
            .take()
            .expect("group timer started twice");
        let weak = Rc::downgrade(service);
        glommio::spawn_local(timer(weak, wake)).detach();
    }

    /// The offsets partitions with a slot here, and whether each is loaded
    /// (for tests and status).
    pub fn offsets_partitions(&self) -> Vec<(PartitionId, bool)> {
        self.slots
            .borrow()
            .iter()
            .map(|(p, slot)| (*p, matches!(slot, Slot::Loaded { .. })))
            .collect()
    }

    /// At shard start, before serving: loads the groups of every offsets
    /// partition the shard's catalog has this shard lead, one after the
    /// other, and returns the records replayed. A partition that cannot be
    /// read fails the start (as the single node always did).
    pub async fn load_led<S: GroupShard>(&self, service: &Rc<S>) -> Result<u64, ReplayError> {
        let mut records = 0;
        for (partition, leader_epoch) in service.led_offsets_partitions() {
            if self.slots.borrow().contains_key(&partition) {
                continue;
            }
            let load = self.begin_load(partition, leader_epoch);
            if let Some((coordinator, replayed)) = self.replay(service, partition, load).await? {
                self.install(partition, load, coordinator);
                records += replayed;
            }
        }
        Ok(records)
    }

    /// This shard's leadership of `__consumer_offsets-{partition}` changed:
    /// `Some(epoch)` — it leads the partition at `epoch`; `None` — it does
    /// not lead it (a follower now, or the replica is gone).
    ///
    /// Called by the shard's leadership handling once the partition's
    /// replica took its new role (a leader's appends are accepted), for
    /// every offsets partition held by this shard whose leader or leader
    /// epoch changed, and harmless to call more often: the same epoch again
    /// changes nothing. Gaining the partition marks it loading at once
    /// (its groups answer COORDINATOR_LOAD_IN_PROGRESS) and replays its log
    /// in a task of its own (retried with backoff on errors, as long as
    /// this load is current). Losing it drops its groups at once: their
    /// parked JoinGroup / SyncGroup / commits are answered NOT_COORDINATOR
    /// and later requests get NOT_COORDINATOR. A new epoch while leading
    /// (leadership lost and regained in between, when another leader may
    /// have appended commits) reloads.
    pub fn offsets_leadership<S: GroupShard>(
        &self,
        service: &Rc<S>,
        partition: PartitionId,
        leader_epoch: Option<LeaderEpoch>,
    ) {
        let current = self.slots.borrow().get(&partition).map(Slot::leader_epoch);
        if current == leader_epoch {
            return;
        }
        if current.is_some() {
            self.unload(partition);
        }
        if let Some(leader_epoch) = leader_epoch {
            let load = self.begin_load(partition, leader_epoch);
            glommio::spawn_local(load_task(Rc::downgrade(service), partition, load)).detach();
        }
        self.wake();
    }

    /// [`GroupHost::offsets_leadership`] for every offsets partition, as
    /// the shard's catalog now has them: loads the partitions led here and
    /// not loaded at their epoch, unloads those no longer led here. For a
    /// shard that handles leadership by publishing a new catalog.
    pub fn follow_catalog<S: GroupShard>(&self, service: &Rc<S>) {
        let led: BTreeMap<PartitionId, LeaderEpoch> =
            service.led_offsets_partitions().into_iter().collect();
        let held: Vec<PartitionId> = self.slots.borrow().keys().copied().collect();
        for partition in held {
            if !led.contains_key(&partition) {
                self.offsets_leadership(service, partition, None);
            }
        }
        for (partition, leader_epoch) in led {
            self.offsets_leadership(service, partition, Some(leader_epoch));
        }
    }

    fn begin_load(&self, partition: PartitionId, leader_epoch: LeaderEpoch) -> LoadId {
        let load = LoadId(self.next_load.get());
        self.next_load.set(load.0 + 1);
        let replaced = self
            .slots
            .borrow_mut()
            .insert(partition, Slot::Loading { load, leader_epoch });
        assert!(replaced.is_none(), "the partition was unloaded first");
        tracing::debug!(%partition, %leader_epoch, "loading the groups of {OFFSETS_TOPIC}-{partition}");
        load
    }

    /// Whether `load` is still the current load of `partition`, unfinished.
    fn loading(&self, partition: PartitionId, load: LoadId) -> bool {
        matches!(
            self.slots.borrow().get(&partition),
            Some(Slot::Loading { load: l, .. }) if *l == load
        )
    }

    /// Serves the groups of a loaded partition (when `load` is still its
    /// current load).
    fn install(&self, partition: PartitionId, load: LoadId, coordinator: Coordinator) {
        let mut slots = self.slots.borrow_mut();
        let Some(slot) = slots.get_mut(&partition) else {
            return;
        };
        let Slot::Loading {
            load: current,
            leader_epoch,
        } = *slot
        else {
            return;
        };
        if current != load {
            return;
        }
        tracing::info!(%partition, %leader_epoch, groups = coordinator.group_count(),
            "groups of {OFFSETS_TOPIC}-{partition} loaded");
        *slot = Slot::Loaded {
            load,
            leader_epoch,
            coordinator: Box::new(coordinator),
        };
    }

    /// Drops `partition`'s groups: its parked requests are answered
    /// NOT_COORDINATOR, writes in flight are forgotten.
    fn unload(&self, partition: PartitionId) {
        let Some(slot) = self.slots.borrow_mut().remove(&partition) else {
            return;
        };
        let parked: Vec<ReplyId> = self
            .waiting
            .borrow()
            .iter()
            .filter(|(_, p)| p.partition == partition)
            .map(|(reply, _)| *reply)
            .collect();
        for reply in parked {
            if let Some(p) = self.waiting.borrow_mut().remove(&reply) {
                let _ = p
                    .sender
                    .try_send(GroupReply::Unavailable(GroupUnavailable::NotCoordinator));
            }
        }
        let groups = match &slot {
            Slot::Loaded { coordinator, .. } => coordinator.group_count(),
            Slot::Loading { .. } => 0,
        };
        tracing::info!(%partition, leader_epoch = %slot.leader_epoch(), groups,
            "groups of {OFFSETS_TOPIC}-{partition} unloaded");
    }

    /// Replays `partition`'s log from its start to its end into a new
    /// coordinator: the latest record per key wins, tombstones delete.
    /// `None` when `load` stopped being the partition's current load
    /// meanwhile.
    async fn replay<S: GroupShard>(
        &self,
        service: &Rc<S>,
        partition: PartitionId,
        load: LoadId,
    ) -> Result<Option<(Coordinator, u64)>, ReplayError> {
        let nonce = self.nonce.wrapping_add(load.0);
        let mut coordinator = Coordinator::new(self.config.clone(), nonce);
        let mut loaded = 0u64;
        let mut scratch = Vec::new();
        let (mut offset, _) = service
            .offsets_log_bounds(partition)
            .await
            .map_err(|code| ReplayError::LogBounds { partition, code })?;
        loop {
            // The end is read again each step: nothing is appended while
            // loading, but a write of an earlier load may still land.
            let (_, end) = service
                .offsets_log_bounds(partition)
                .await
                .map_err(|code| ReplayError::LogBounds { partition, code })?;
            if !self.loading(partition, load) {
                return Ok(None);
            }
            if offset >= end {
                break;
            }
            let batches = service
                .read_offsets(partition, offset, REPLAY_READ_BYTES)
                .await
                .map_err(|code| ReplayError::Read {
                    partition,
                    offset,
                    code,
                })?;
            if !self.loading(partition, load) {
                return Ok(None);
            }
            if batches.is_empty() {
                return Err(ReplayError::Short {
                    partition,
                    offset,
                    end,
                });
            }
            for bytes in &batches {
                let (batch, _) = BatchView::parse(bytes)?;
                offset = batch.header().next_offset().get() as i64;
                let records = batch.records(&mut scratch, REPLAY_BATCH_BYTES_MAX)?;
                for record in records.iter() {
                    match offsets_log::decode(record.key(), record.value()) {
                        Ok(r) => {
                            coordinator.load_offset(&r.group_id, r.partition, r.offset);
                            loaded += 1;
                        }
                        Err(error) => tracing::warn!(
                            %partition, offset = record.offset.get(), %error,
                            "skipping an offsets record"
                        ),
                    }
                }
            }
        }
        Ok(Some((coordinator, loaded)))
    }

    /// The offsets partition holding `group_id`.
    fn partition_of<S: GroupShard>(
        service: &Rc<S>,
        group_id: &str,
    ) -> Result<PartitionId, GroupUnavailable> {
        match service.offsets_partition_count() {
            Some(count) if count > 0 => {
                Ok(PartitionId(offsets_log::partition_for(group_id, count)))
            }
            _ => Err(GroupUnavailable::NoOffsetsTopic),
        }
    }

    /// Serves one group request; parked ones wait here until the
    /// coordinator answers.
    pub async fn call<S: GroupShard>(&self, service: &Rc<S>, op: GroupOp) -> GroupReply {
        let now = self.now();
        let Some(group_id) = op.group_id() else {
            let GroupOp::List(states) = op else {
                unreachable!("only ListGroups names no group")
            };
            return self.list(&states);
        };
        let partition = match Self::partition_of(service, group_id) {
            Ok(partition) => partition,
            Err(e) => return GroupReply::Unavailable(e),
        };
        if !self.coordinating() {
            return GroupReply::Unavailable(GroupUnavailable::NotCoordinator);
        }
        let receiver = {
            let mut slots = self.slots.borrow_mut();
            let coordinator = match slots.get_mut(&partition) {
                None => return GroupReply::Unavailable(GroupUnavailable::NotCoordinator),
                Some(Slot::Loading { .. }) => {
                    return GroupReply::Unavailable(GroupUnavailable::LoadInProgress)
                }
                Some(Slot::Loaded { coordinator, .. }) => coordinator,
            };
            match op {
                GroupOp::Fetch {
                    group_id,
                    partitions,
                } => {
                    return GroupReply::Fetch(
                        coordinator.offset_fetch(&group_id, partitions.as_deref()),
                    )
                }
                GroupOp::Describe(group_id) => {
                    return GroupReply::Describe(coordinator.describe_group(&group_id))
                }
                op => {
                    if self.stopping.get() {
                        return GroupReply::Unavailable(GroupUnavailable::BrokerStopping);
                    }
                    if self.waiting.borrow().len() >= self.parked_max {
                        return GroupReply::Unavailable(GroupUnavailable::Busy {
                            parked_max: self.parked_max,
                        });
                    }
                    let reply = ReplyId(self.next_reply.get());
                    self.next_reply.set(reply.0 + 1);
                    let (sender, receiver) = local_channel::new_bounded(1);
                    self.waiting
                        .borrow_mut()
                        .insert(reply, Parked { partition, sender });
                    match op {
                        GroupOp::Join(r) => coordinator.handle_join(now, reply, r),
                        GroupOp::Sync(r) => coordinator.handle_sync(now, reply, r),
                        GroupOp::Heartbeat(r) => coordinator.handle_heartbeat(now, reply, r),
                        GroupOp::Leave { group_id, members } => {
                            coordinator.handle_leave(now, reply, &group_id, members)
                        }
                        GroupOp::Commit(r) => coordinator.handle_offset_commit(now, reply, r),
                        GroupOp::Delete(group_id) => {
                            coordinator.handle_delete_group(reply, &group_id)
                        }
                        GroupOp::Fetch { .. } | GroupOp::List(_) | GroupOp::Describe(_) => {
                            unreachable!("answered above")
                        }
                    }
                    receiver
                }
            }
        };
        self.drain(service, partition);
        self.wake();
        match receiver.recv().await {
            Some(reply) => reply,
            None => GroupReply::Unavailable(GroupUnavailable::CoordinatorStopping),
        }
    }

    /// ListGroups over every loaded partition, by id; while one is loading
    /// COORDINATOR_LOAD_IN_PROGRESS (as Kafka: the list would be partial).
    fn list(&self, states: &[super::coordinator::GroupState]) -> GroupReply {
        let slots = self.slots.borrow();
        let mut groups = Vec::new();
        for slot in slots.values() {
            match slot {
                Slot::Loading { .. } => {
                    return GroupReply::Unavailable(GroupUnavailable::LoadInProgress)
                }
                Slot::Loaded { coordinator, .. } => groups.extend(coordinator.list_groups(states)),
            }
        }
        groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        GroupReply::List(groups)
    }

    /// When the timer must next tick: the earliest deadline of any loaded
    /// coordinator.
    fn next_deadline(&self) -> Option<Millis> {
        self.slots
            .borrow()
            .values()
            .filter_map(|slot| match slot {
                Slot::Loaded { coordinator, .. } => coordinator.next_deadline(),
                Slot::Loading { .. } => None,
            })
            .min()
    }

    fn tick<S: GroupShard>(&self, service: &Rc<S>) {
        let now = self.now();
        let due: Vec<PartitionId> = {
            let mut slots = self.slots.borrow_mut();
            slots
                .iter_mut()
                .filter_map(|(p, slot)| match slot {
                    Slot::Loaded { coordinator, .. }
                        if coordinator.next_deadline().is_some_and(|at| at <= now) =>
                    {
                        coordinator.handle_tick(now);
                        Some(*p)
                    }
                    _ => None,
                })
                .collect()
        };
        for partition in due {
            self.drain(service, partition);
        }
    }

    /// Tells the timer that the next deadline may have moved.
    fn wake(&self) {
        // A full channel means a wake-up is already pending.
        let _ = self.wake.try_send(());
    }

    /// Carries out the actions of `partition`'s coordinator.
    fn drain<S: GroupShard>(&self, service: &Rc<S>, partition: PartitionId) {
        loop {
            let (action, load) = {
                let mut slots = self.slots.borrow_mut();
                let Some(Slot::Loaded {
                    coordinator, load, ..
                }) = slots.get_mut(&partition)
                else {
                    return;
                };
                match coordinator.poll_action() {
                    Some(action) => (action, *load),
                    None => return,
                }
            };
            let (reply, answer) = match action {
                Action::Join { reply, response } => (reply, GroupReply::Join(response)),
                Action::Sync { reply, response } => (reply, GroupReply::Sync(response)),
                Action::Heartbeat { reply, error } => (reply, GroupReply::Heartbeat(error)),
                Action::Leave { reply, response } => (reply, GroupReply::Leave(response)),
                Action::OffsetCommit { reply, results } => (reply, GroupReply::Commit(results)),
                Action::DeleteGroup { reply, error } => (reply, GroupReply::Delete(error)),
                Action::PersistOffsets {
                    reply,
                    group_id,
                    offsets,
                } => {
                    let batch = offsets_log::commit_batch(&group_id, &offsets, now_ms());
                    let write = Write {
                        partition,
                        load,
                        reply,
                        group_id,
                        tombstones: false,
                    };
                    glommio::spawn_local(persist(service.clone(), write, batch)).detach();
                    continue;
                }
                Action::PersistTombstones {
                    reply,
                    group_id,
                    partitions,
                } => {
                    let batch = offsets_log::tombstone_batch(&group_id, &partitions, now_ms());
                    let write = Write {
                        partition,
                        load,
                        reply,
                        group_id,
                        tombstones: true,
                    };
                    glommio::spawn_local(persist(service.clone(), write, batch)).detach();
                    continue;
                }
            };
            // The requester may have gone (connection closed): nothing to do.
            if let Some(parked) = self.waiting.borrow_mut().remove(&reply) {
                let _ = parked.sender.try_send(answer);
            }
        }
    }
}

/// Loads `partition`'s groups for `load`, retrying with backoff while the
/// load is current. Holds the service only while reading, so a retrying
/// load does not keep a stopped shard alive.
async fn load_task<S: GroupShard>(service: Weak<S>, partition: PartitionId, load: LoadId) {
    let mut backoff = LOAD_RETRY_MIN;
    loop {
        {
            let Some(service) = service.upgrade() else {
                return;
            };
            let Some(host) = service.group_host() else {
                return;
            };
            if !host.loading(partition, load) {
                return;
            }
            match host.replay(&service, partition, load).await {
                Ok(Some((coordinator, records))) => {
                    tracing::debug!(%partition, records, "offsets replayed");
                    host.install(partition, load, coordinator);
                    host.wake();
                    return;
                }
                Ok(None) => return,
                Err(error) => tracing::warn!(%partition, %error, ?backoff,
                    "cannot load the groups of {OFFSETS_TOPIC}-{partition}; retrying"),
            }
        }
        sleep(backoff).await;
        backoff = (backoff * 2).min(LOAD_RETRY_MAX);
    }
}

/// A write to `__consumer_offsets` the coordinator of `partition` (at
/// load `load`) asked for.
#[derive(Debug)]
struct Write {
    partition: PartitionId,
    load: LoadId,
    reply: ReplyId,
    group_id: String,
    /// A deleted group's tombstones (else a commit's offsets).
    tombstones: bool,
}

/// Appends a commit's records (or a deleted group's tombstones) to the
/// group's offsets partition with acks=all, then tells the coordinator
/// that asked — if its partition was not unloaded meanwhile.
async fn persist<S: GroupShard>(
    service: Rc<S>,
    write: Write,
    batch: Result<Bytes, offsets_log::EncodeError>,
) {
    let Write {
        partition,
        load,
        reply,
        group_id,
        tombstones,
    } = write;
    let written = match batch {
        Err(error) => {
            tracing::warn!(group = %group_id, %error, "offsets records not encodable");
            Err(ErrorCode::InvalidCommitOffsetSize)
        }
        Ok(batch) => service
            .append_offsets(partition, batch)
            .await
            .map_err(|error| {
                tracing::warn!(group = %group_id, error = ?error.code,
                    message = ?error.message, tombstones, "offsets records not written");
                error.code
            }),
    };
    let Some(host) = service.group_host() else {
        return;
    };
    {
        let mut slots = host.slots.borrow_mut();
        let Some(Slot::Loaded {
            load: current,
            coordinator,
            ..
        }) = slots.get_mut(&partition)
        else {
            // Unloaded: the request was answered NOT_COORDINATOR then.
            return;
        };
        if *current != load {
            return;
        }
        if tombstones {
            coordinator.tombstones_persisted(reply, written);
        } else {
            coordinator.offsets_persisted(reply, written);
        }
    }
    host.drain(&service, partition);
    host.wake();
}

async fn timer<S: GroupShard>(service: Weak<S>, wake: LocalReceiver<()>) {
    loop {
        let Some(strong) = service.upgrade() else {
            return;
        };
        let Some(host) = strong.group_host() else {
            return;
        };
        let now = host.now();
        let wait = match host.next_deadline() {
            Some(at) => Duration::from_millis(at.0.saturating_sub(now.0)),
            None => IDLE_TICK,
        };
        drop(strong);
        let alive = future::or(
            async {
                sleep(wait).await;
                true
            },
            async { wake.recv().await.is_some() },
        )
        .await;
        let Some(service) = service.upgrade() else {
            return;
        };
        let Some(host) = service.group_host() else {
            return;
        };
        if !alive {
            return;
        }
        // Woken early, nothing is due yet and this is cheap; the tick
        // itself does not wake the timer again.
        host.tick(&service);
    }
}

#[cfg(test)]
mod tests;
