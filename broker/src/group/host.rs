//! Hosts the sans-IO [`Coordinator`] on a shard: turns group requests
//! (arriving as [`GroupOp`]s, locally or over the mesh) into coordinator
//! events, parks the requests the coordinator answers later (JoinGroup and
//! SyncGroup wait for the rebalance), drives its timers, writes committed
//! offsets to `__consumer_offsets` and replays them at start.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use fjord_schema::{BatchView, ErrorCode, PartitionId};
use futures_lite::future;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::timer::sleep;

use super::coordinator::{
    Action, CommitRequest, CommittedOffset, Coordinator, DescribedGroup, GroupConfig, GroupState,
    HeartbeatRequest, JoinRequest, JoinResponse, LeaveResponse, LeavingMember, ListedGroup, Millis,
    ReplyId, SyncRequest, SyncResponse,
};
use super::offsets_log::{self, OFFSETS_TOPIC};
use super::TopicPartition;
use crate::service::{now_ms, ShardService};

/// A group request for the shard that hosts the group (`Send`: it may
/// cross the mesh).
#[derive(Debug)]
pub enum GroupOp {
    Join(JoinRequest),
    Sync(SyncRequest),
    Heartbeat(HeartbeatRequest),
    Leave {
        group_id: String,
        members: Vec<LeavingMember>,
    },
    Commit(CommitRequest),
    Fetch {
        group_id: String,
        partitions: Option<Vec<TopicPartition>>,
    },
    List(Vec<GroupState>),
    Describe(String),
    /// DeleteGroups, one group.
    Delete(String),
}

/// The answer to a [`GroupOp`].
#[derive(Debug)]
pub enum GroupReply {
    Join(JoinResponse),
    Sync(SyncResponse),
    Heartbeat(ErrorCode),
    Leave(LeaveResponse),
    Commit(Vec<(TopicPartition, ErrorCode)>),
    Fetch(Vec<(TopicPartition, Option<CommittedOffset>)>),
    List(Vec<ListedGroup>),
    Describe(DescribedGroup),
    Delete(ErrorCode),
    /// Not answered: too many parked requests, or the shard is stopping.
    Unavailable(ErrorCode, String),
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
    pub fn start_timer(service: &Rc<ShardService>) {
        let Some(host) = service.groups() else { return };
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
    pub async fn replay(&self, service: &ShardService) -> Result<u64, String> {
        let catalog = service.catalog();
        let Some(meta) = catalog.get(OFFSETS_TOPIC) else {
            return Ok(0);
        };
        let mut loaded = 0u64;
        let mut scratch = Vec::new();
        for partition in 0..meta.partition_count() {
            let partition = PartitionId(partition);
            if meta.shard_of(partition) != Some(service.shard) {
                continue;
            }
            // Its ERROR is logged already; its groups' commits cannot be
            // served until it is repaired, the other groups can.
            if service
                .partitions
                .offline(OFFSETS_TOPIC, partition)
                .is_some()
            {
                continue;
            }
            let listed = service
                .partitions
                .list_offsets(OFFSETS_TOPIC, partition, -2, None)
                .await;
            if listed.error != ErrorCode::None {
                return Err(format!("{OFFSETS_TOPIC}-{partition}: {:?}", listed.error));
            }
            let mut offset = listed.offset;
            loop {
                let read = service
                    .partitions
                    .fetch(
                        OFFSETS_TOPIC,
                        partition,
                        offset,
                        REPLAY_READ_BYTES,
                        None,
                        None,
                    )
                    .await;
                if read.error != ErrorCode::None {
                    return Err(format!(
                        "{OFFSETS_TOPIC}-{partition} at {offset}: {:?}",
                        read.error
                    ));
                }
                if read.batches.is_empty() {
                    break;
                }
                for bytes in &read.batches {
                    let (batch, _) = BatchView::parse(bytes).map_err(|e| e.to_string())?;
                    offset = batch.header().next_offset().get() as i64;
                    let records = batch
                        .records(&mut scratch, REPLAY_BATCH_BYTES_MAX)
                        .map_err(|e| e.to_string())?;
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
                if offset >= read.high_watermark {
                    break;
                }
            }
        }
        Ok(loaded)
    }

    /// Serves one group request; parked ones wait here until the
    /// coordinator answers.
    pub async fn call(&self, service: &Rc<ShardService>, op: GroupOp) -> GroupReply {
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
                        return GroupReply::Unavailable(
                            ErrorCode::CoordinatorNotAvailable,
                            "the broker is stopping".to_owned(),
                        );
                    }
                    if self.waiting.borrow().len() >= self.parked_max {
                        return GroupReply::Unavailable(
                            ErrorCode::CoordinatorNotAvailable,
                            format!(
                                "{} group requests are waiting on this shard",
                                self.parked_max
                            ),
                        );
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
            None => GroupReply::Unavailable(
                ErrorCode::CoordinatorNotAvailable,
                "the coordinator is stopping".to_owned(),
            ),
        }
    }

    fn tick(&self, service: &Rc<ShardService>) {
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
    fn drain(&self, service: &Rc<ShardService>) {
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
async fn persist(
    service: Rc<ShardService>,
    reply: ReplyId,
    group_id: String,
    batch: Result<bytes::Bytes, String>,
    tombstones: bool,
) {
    let Some(host) = service.groups() else { return };
    let written = match batch {
        Err(error) => {
            tracing::warn!(group = %group_id, %error, "offsets records not encodable");
            false
        }
        Ok(batch) => {
            let partitions = service
                .catalog()
                .get(OFFSETS_TOPIC)
                .map(|m| m.partition_count());
            match partitions {
                None => false,
                Some(n) => {
                    let partition = PartitionId(offsets_log::partition_for(&group_id, n));
                    // acks = -1: flush before ack (the topic keeps
                    // flush.before.ack = true).
                    let result = service
                        .partitions
                        .produce(OFFSETS_TOPIC, partition, batch, -1)
                        .await;
                    if result.error != ErrorCode::None {
                        tracing::warn!(group = %group_id, error = ?result.error,
                            message = ?result.message, tombstones, "offsets records not written");
                    }
                    result.error == ErrorCode::None
                }
            }
        }
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

async fn timer(service: Weak<ShardService>, wake: LocalReceiver<()>) {
    loop {
        let Some(strong) = service.upgrade() else {
            return;
        };
        let Some(host) = strong.groups() else { return };
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
        let Some(host) = service.groups() else { return };
        if !alive {
            return;
        }
        // Woken early, nothing is due yet and this is cheap; the tick
        // itself does not wake the timer again.
        host.tick(&service);
    }
}
