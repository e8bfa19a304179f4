//! Hosts the sans-IO [`Coordinator`] on a shard: turns group requests
//! (arriving as [`GroupOp`]s, locally or over the mesh) into coordinator
//! events, parks the requests the coordinator answers later (JoinGroup and
//! SyncGroup wait for the rebalance), drives its timers, writes committed
//! offsets to `__consumer_offsets` and replays them at start.
//!
//! The host reaches its shard only through [`GroupShard`] (the shard's
//! service implements it), so the group module does not depend on the
//! service that composes it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fjord_schema::{BatchView, ErrorCode, PartitionId};
use futures_lite::future;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::timer::sleep;

use super::coordinator::{Action, Coordinator, GroupConfig, Millis, ReplyId};
use super::offsets_log::{self, OFFSETS_TOPIC};
use super::ops::{GroupOp, GroupReply, GroupUnavailable};
use crate::clock::now_ms;

/// What the group host needs of the shard that runs it: its own host, and
/// the `__consumer_offsets` partitions this shard owns.
pub trait GroupShard: 'static {
    /// The host attached to this shard, if any.
    fn group_host(&self) -> Option<&GroupHost>;

    /// The partition count of `__consumer_offsets` in the shard's current
    /// catalog; `None` while the topic does not exist.
    fn offsets_partition_count(&self) -> Option<u32>;

    /// The `__consumer_offsets` partitions this shard owns and can read
    /// (offline ones are left out: their groups cannot be served until
    /// repaired, the others can).
    fn hosted_offsets_partitions(&self) -> Vec<PartitionId>;

    /// The first offset of an offsets partition.
    fn offsets_log_start(
        &self,
        partition: PartitionId,
    ) -> impl Future<Output = Result<i64, ErrorCode>>;

    /// Whole batches of an offsets partition from `offset`, up to
    /// `max_bytes`, and the partition's high watermark.
    fn read_offsets(
        &self,
        partition: PartitionId,
        offset: i64,
        max_bytes: usize,
    ) -> impl Future<Output = Result<(Vec<Bytes>, i64), ErrorCode>>;

    /// Appends `batch` to an offsets partition and completes once it is
    /// on stable storage (acks = all).
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

/// Why replaying the committed offsets at start failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{OFFSETS_TOPIC}-{partition}: {code:?}")]
    LogStart {
        partition: PartitionId,
        code: ErrorCode,
    },
    #[error("{OFFSETS_TOPIC}-{partition} at {offset}: {code:?}")]
    Read {
        partition: PartitionId,
        offset: i64,
        code: ErrorCode,
    },
    #[error("{0}")]
    Batch(#[from] fjord_schema::BatchError),
}

/// Bytes read per step while replaying an offsets partition.
const REPLAY_READ_BYTES: usize = 1 << 20;
/// Largest decompressed offsets batch accepted on replay.
const REPLAY_BATCH_BYTES_MAX: usize = 64 << 20;
/// How long the timer sleeps when no deadline is pending (it is woken by
/// every event anyway).
const IDLE_TICK: Duration = Duration::from_secs(3600);

/// The group coordinator of one shard.
///
/// Lives on: every shard; serves the groups whose `__consumer_offsets`
/// partition this shard owns. Owns: the [`Coordinator`] (every such
/// group's state and committed offsets), the senders of the requests
/// waiting for an answer (at most `parked_max`), and the timer task.
/// Lifecycle: created at shard start → [`GroupHost::replay`] loads the
/// committed offsets of this shard's offsets partitions (before the shard
/// serves) → serve → dropped with the shard's service (parked requests then
/// get `Unavailable`).
#[derive(Debug)]
pub struct GroupHost {
    coordinator: RefCell<Coordinator>,
    waiting: RefCell<HashMap<ReplyId, LocalSender<GroupReply>>>,
    parked_max: usize,
    next_reply: Cell<u64>,
    epoch: Instant,
    wake: LocalSender<()>,
    wake_rx: RefCell<Option<LocalReceiver<()>>>,
    /// Set when the shard stops: parked requests were answered with
    /// COORDINATOR_NOT_AVAILABLE and new ones are refused, so draining
    /// connections is not held up by a rebalance.
    stopping: Cell<bool>,
}

impl GroupHost {
    pub fn new(config: GroupConfig, parked_max: usize, nonce: u64) -> GroupHost {
        config.check();
        assert!(parked_max > 0);
        let (wake, wake_rx) = local_channel::new_bounded(1);
        GroupHost {
            coordinator: RefCell::new(Coordinator::new(config, nonce)),
            waiting: RefCell::new(HashMap::new()),
            parked_max,
            next_reply: Cell::new(0),
            epoch: Instant::now(),
            wake,
            wake_rx: RefCell::new(Some(wake_rx)),
            stopping: Cell::new(false),
        }
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

    /// Starts the timer task that calls `handle_tick` at the coordinator's
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

    /// Loads the committed offsets of this shard's offsets partitions, in
    /// log order (latest record per key wins; tombstones delete).
    pub async fn replay<S: GroupShard>(&self, service: &Rc<S>) -> Result<u64, ReplayError> {
        let mut loaded = 0u64;
        let mut scratch = Vec::new();
        for partition in service.hosted_offsets_partitions() {
            let mut offset = service
                .offsets_log_start(partition)
                .await
                .map_err(|code| ReplayError::LogStart { partition, code })?;
            loop {
                let (batches, high_watermark) = service
                    .read_offsets(partition, offset, REPLAY_READ_BYTES)
                    .await
                    .map_err(|code| ReplayError::Read {
                        partition,
                        offset,
                        code,
                    })?;
                if batches.is_empty() {
                    break;
                }
                for bytes in &batches {
                    let (batch, _) = BatchView::parse(bytes)?;
                    offset = batch.header().next_offset().get() as i64;
                    let records = batch.records(&mut scratch, REPLAY_BATCH_BYTES_MAX)?;
                    let mut coordinator = self.coordinator.borrow_mut();
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
                if offset >= high_watermark {
                    break;
                }
            }
        }
        Ok(loaded)
    }

    /// Serves one group request; parked ones wait here until the
    /// coordinator answers.
    pub async fn call<S: GroupShard>(&self, service: &Rc<S>, op: GroupOp) -> GroupReply {
        let now = self.now();
        let receiver = {
            let coordinator = self.coordinator.borrow();
            match op {
                GroupOp::Fetch {
                    group_id,
                    partitions,
                } => {
                    return GroupReply::Fetch(
                        coordinator.offset_fetch(&group_id, partitions.as_deref()),
                    )
                }
                GroupOp::List(states) => return GroupReply::List(coordinator.list_groups(&states)),
                GroupOp::Describe(group_id) => {
                    return GroupReply::Describe(coordinator.describe_group(&group_id))
                }
                op => {
                    drop(coordinator);
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
                    self.waiting.borrow_mut().insert(reply, sender);
                    let mut coordinator = self.coordinator.borrow_mut();
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
        self.drain(service);
        self.wake();
        match receiver.recv().await {
            Some(reply) => reply,
            None => GroupReply::Unavailable(GroupUnavailable::CoordinatorStopping),
        }
    }

    fn tick<S: GroupShard>(&self, service: &Rc<S>) {
        let now = self.now();
        self.coordinator.borrow_mut().handle_tick(now);
        self.drain(service);
    }

    /// Tells the timer that the next deadline may have moved.
    fn wake(&self) {
        // A full channel means a wake-up is already pending.
        let _ = self.wake.try_send(());
    }

    /// Carries out the coordinator's actions.
    fn drain<S: GroupShard>(&self, service: &Rc<S>) {
        loop {
            let action = self.coordinator.borrow_mut().poll_action();
            let Some(action) = action else { break };
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
                    glommio::spawn_local(persist(service.clone(), reply, group_id, batch, false))
                        .detach();
                    continue;
                }
                Action::PersistTombstones {
                    reply,
                    group_id,
                    partitions,
                } => {
                    let batch = offsets_log::tombstone_batch(&group_id, &partitions, now_ms());
                    glommio::spawn_local(persist(service.clone(), reply, group_id, batch, true))
                        .detach();
                    continue;
                }
            };
            // The requester may have gone (connection closed): nothing to do.
            if let Some(sender) = self.waiting.borrow_mut().remove(&reply) {
                let _ = sender.try_send(answer);
            }
        }
    }
}

/// Appends a commit's records (or a deleted group's tombstones) to the
/// group's offsets partition (this shard owns it) and waits for the
/// fdatasync, then tells the coordinator.
async fn persist<S: GroupShard>(
    service: Rc<S>,
    reply: ReplyId,
    group_id: String,
    batch: Result<Bytes, offsets_log::EncodeError>,
    tombstones: bool,
) {
    let Some(host) = service.group_host() else {
        return;
    };
    let written = match batch {
        Err(error) => {
            tracing::warn!(group = %group_id, %error, "offsets records not encodable");
            false
        }
        Ok(batch) => match service.offsets_partition_count() {
            None => false,
            Some(n) => {
                let partition = PartitionId(offsets_log::partition_for(&group_id, n));
                let result = service.append_offsets(partition, batch).await;
                if let Err(error) = &result {
                    tracing::warn!(group = %group_id, error = ?error.code,
                        message = ?error.message, tombstones, "offsets records not written");
                }
                result.is_ok()
            }
        },
    };
    {
        let mut coordinator = host.coordinator.borrow_mut();
        if tombstones {
            coordinator.tombstones_persisted(reply, written);
        } else {
            coordinator.offsets_persisted(reply, written);
        }
    }
    host.drain(&service);
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
        let next = host.coordinator.borrow().next_deadline();
        let wait = match next {
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
