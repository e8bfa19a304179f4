//! A consumer in a consumer group: subscribe to topics, let the group
//! coordinator and the leader's assignor split their partitions among the
//! members, start each partition at the group's committed offset (or per
//! `auto_offset_reset`), commit automatically or by hand.
//!
//! Rebalances are eager with the range or round-robin assignor: before
//! rejoining, a member commits, calls `on_revoked` for everything it owns
//! and drops it; after SyncGroup it calls `on_assigned`. With
//! cooperative-sticky they are incremental (Kafka's COOPERATIVE protocol):
//! a member keeps its partitions while rejoining (its subscription names
//! them), gives up only those the new assignment moves away (commit,
//! `on_revoked`), then rejoins at once so the released ones are handed out
//! in a follow-up rebalance; `on_assigned` gets only the added ones. A heartbeat thread (its own connection to the
//! coordinator) heartbeats every `heartbeat_interval` and asks for a rejoin
//! when the coordinator says a rebalance is under way; if `poll` is not
//! called within `max_poll_interval` it leaves the group, and the next
//! `poll` rejoins. With `instance_id` set the member is static: it does not
//! leave on `close`, and a restart within the session timeout gets its
//! partitions back without a rebalance.
//!
//! Lives in: the caller's thread plus one heartbeat thread. Owns: a
//! [`Consumer`] (fetch connections), two coordinator connections.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use fjord_schema::api::ApiKey;
use fjord_schema::{CorrelationId, ErrorCode, Offset, PartitionId};

use super::assignor::{Assignor, Subscription, TopicPartition};
use super::consumer::{Consumer, ConsumerError, ConsumerOptions, ConsumerRecord, SeekTo};
use super::consumer_protocol::{self, PROTOCOL_TYPE};
use super::group::{
    encode_offset_commit, read_offset_commit, Committer, JoinGroup, OffsetToCommit,
};
use super::{Client, ClientConfig, ClientError};

/// Group settings, named after Kafka's consumer configs.
#[derive(Debug, Clone)]
pub struct GroupOptions {
    /// `group.id`.
    pub group_id: String,
    /// `group.instance.id`: static membership.
    pub instance_id: Option<String>,
    /// `client.id`, shown by `describe`.
    pub client_id: String,
    /// `session.timeout.ms`.
    pub session_timeout: Duration,
    /// `heartbeat.interval.ms`.
    pub heartbeat_interval: Duration,
    /// `max.poll.interval.ms`.
    pub max_poll_interval: Duration,
    /// `enable.auto.commit`.
    pub auto_commit: bool,
    /// `auto.commit.interval.ms`.
    pub auto_commit_interval: Duration,
    /// `partition.assignment.strategy`, in preference order: eager ones
    /// (range, roundrobin) or cooperative-sticky, not mixed.
    pub assignors: Vec<Assignor>,
}

impl GroupOptions {
    pub fn new(group_id: impl Into<String>) -> GroupOptions {
        GroupOptions {
            group_id: group_id.into(),
            instance_id: None,
            client_id: "fjord-consumer".to_owned(),
            session_timeout: Duration::from_secs(45),
            heartbeat_interval: Duration::from_secs(3),
            max_poll_interval: Duration::from_secs(300),
            auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            assignors: vec![Assignor::Range, Assignor::RoundRobin],
        }
    }
}

/// Called around rebalances, on the thread that calls `poll`.
pub trait RebalanceListener {
    /// Before the partitions are given up (offsets already committed when
    /// auto-commit is on).
    fn on_revoked(&mut self, _partitions: &[TopicPartition]) {}
    /// After new partitions were assigned, before records of them are
    /// returned.
    fn on_assigned(&mut self, _partitions: &[TopicPartition]) {}
}

/// A listener that does nothing.
#[derive(Debug, Default)]
pub struct NoListener;

impl RebalanceListener for NoListener {}

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("group {group}: {code:?}")]
    Coordinator { group: String, code: ErrorCode },
    #[error("commit failed: {0:?}")]
    Commit(Vec<(String, u32, ErrorCode)>),
    #[error("undecodable assignment: {0}")]
    Assignment(String),
}

/// Asynchronous commits in flight at most; one more waits for the oldest.
const ASYNC_COMMITS_MAX: usize = 16;

/// What the heartbeat thread and the caller's thread share.
#[derive(Debug, Default)]
struct Membership {
    /// (generation, member id) while a member of a stable generation.
    active: Option<(i32, String)>,
    /// The coordinator asked for a rejoin (or the member was dropped).
    rejoin: bool,
    last_poll: Option<Instant>,
    /// Left because `poll` was not called within `max_poll_interval`.
    left_for_poll_timeout: bool,
}

/// Errors after which the coordinator is looked up again and the request
/// retried: lost connections and a coordinator that is moving or stopping.
fn is_transient(error: &ClientError) -> bool {
    match error {
        ClientError::Io(_) | ClientError::Closed | ClientError::Connect { .. } => true,
        ClientError::Broker { code, .. } | ClientError::ErrorCode { code, .. } => {
            code.is_retriable()
        }
        _ => false,
    }
}

/// The coordinator's address.
fn coordinator_addr(bootstrap: &mut Client, group: &str) -> Result<(String, u16), GroupError> {
    let info = bootstrap.find_coordinator(group)?;
    if info.error != ErrorCode::None {
        return Err(GroupError::Coordinator {
            group: group.to_owned(),
            code: info.error,
        });
    }
    let port = if info.shard_port != 0 {
        info.shard_port
    } else {
        info.port
    };
    Ok((info.host, port))
}

/// A consumer that is a member of a group.
pub struct GroupConsumer {
    options: GroupOptions,
    consumer_options: ConsumerOptions,
    consumer: Consumer,
    coordinator: Option<Client>,
    topics: Vec<String>,
    member_id: String,
    generation: i32,
    owned: Vec<TopicPartition>,
    membership: Arc<Mutex<Membership>>,
    stop: Arc<AtomicBool>,
    heartbeat: Option<JoinHandle<()>>,
    /// Correlation ids of asynchronous commits not yet answered.
    async_commits: VecDeque<CorrelationId>,
    async_error: Option<GroupError>,
    last_commit: Instant,
    listener: Box<dyn RebalanceListener + Send>,
}

impl std::fmt::Debug for GroupConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupConsumer")
            .field("group", &self.options.group_id)
            .field("member_id", &self.member_id)
            .field("generation", &self.generation)
            .field("owned", &self.owned)
            .finish()
    }
}

impl GroupConsumer {
    pub fn new(
        consumer_options: ConsumerOptions,
        options: GroupOptions,
    ) -> Result<GroupConsumer, GroupError> {
        assert!(!options.assignors.is_empty());
        assert!(
            options.assignors.iter().all(|a| !a.is_cooperative())
                || options.assignors.iter().all(|a| a.is_cooperative()),
            "eager (range, roundrobin) and cooperative assignors cannot be mixed"
        );
        let consumer = Consumer::new(consumer_options.clone())?;
        Ok(GroupConsumer {
            options,
            consumer_options,
            consumer,
            coordinator: None,
            topics: Vec::new(),
            member_id: String::new(),
            generation: -1,
            owned: Vec::new(),
            membership: Arc::new(Mutex::new(Membership {
                rejoin: true,
                ..Membership::default()
            })),
            stop: Arc::new(AtomicBool::new(false)),
            heartbeat: None,
            async_commits: VecDeque::new(),
            async_error: None,
            last_commit: Instant::now(),
            listener: Box::new(NoListener),
        })
    }

    pub fn set_listener(&mut self, listener: Box<dyn RebalanceListener + Send>) {
        self.listener = listener;
    }

    /// Subscribes to `topics` (replacing any previous subscription); takes
    /// effect at the next `poll`.
    pub fn subscribe(&mut self, topics: &[&str]) {
        let mut topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
        topics.sort();
        topics.dedup();
        self.topics = topics;
        self.membership.lock().expect("not poisoned").rejoin = true;
    }

    /// The partitions this member owns.
    pub fn assignment(&self) -> &[TopicPartition] {
        &self.owned
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    fn client_config(&self) -> ClientConfig {
        let mut config = self.consumer_options.client.clone();
        // JoinGroup and SyncGroup block for up to the rebalance timeout.
        config.timeout = config
            .timeout
            .max(self.options.max_poll_interval + self.options.session_timeout);
        config
    }

    fn connect_coordinator(&self) -> Result<Client, GroupError> {
        let mut last = None;
        for addr in &self.consumer_options.bootstrap {
            match Client::connect(addr.as_str(), self.consumer_options.client.clone()) {
                Ok(mut bootstrap) => {
                    let (host, port) = coordinator_addr(&mut bootstrap, &self.options.group_id)?;
                    return Ok(Client::connect(
                        (host.as_str(), port),
                        self.client_config(),
                    )?);
                }
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or(ClientError::Closed).into())
    }

    fn coordinator(&mut self) -> Result<&mut Client, GroupError> {
        if self.coordinator.is_none() {
            self.coordinator = Some(self.connect_coordinator()?);
        }
        Ok(self.coordinator.as_mut().expect("just connected"))
    }

    /// Returns records of the owned partitions, (re)joining the group
    /// first when needed; auto-commits when due.
    pub fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>, GroupError> {
        let rejoin = {
            let mut m = self.membership.lock().expect("not poisoned");
            m.last_poll = Some(Instant::now());
            if m.left_for_poll_timeout {
                m.left_for_poll_timeout = false;
                m.rejoin = true;
            }
            m.rejoin
        };
        if rejoin {
            if let Err(error) = self.rejoin() {
                // Try again at the next poll.
                self.membership.lock().expect("not poisoned").rejoin = true;
                return Err(error);
            }
            // A long rebalance is not a missed poll.
            self.membership.lock().expect("not poisoned").last_poll = Some(Instant::now());
        }
        self.maybe_auto_commit();
        Ok(self.consumer.poll(timeout)?)
    }

    fn maybe_auto_commit(&mut self) {
        if self.options.auto_commit
            && self.last_commit.elapsed() >= self.options.auto_commit_interval
        {
            self.last_commit = Instant::now();
            // A failed auto-commit is retried at the next interval; a
            // rebalance in progress is noticed by the heartbeat.
            let _ = self.commit_sync();
        }
    }

    /// The offsets to commit: each owned partition's position.
    fn positions(&self) -> Vec<OffsetToCommit> {
        self.owned
            .iter()
            .filter_map(|tp| {
                let position = self
                    .consumer
                    .position(&tp.topic, PartitionId(tp.partition))?;
                Some(OffsetToCommit {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    offset: position.get() as i64,
                    leader_epoch: -1,
                    metadata: String::new(),
                })
            })
            .collect()
    }

    /// Commits the positions of the owned partitions and waits.
    pub fn commit_sync(&mut self) -> Result<(), GroupError> {
        let offsets = self.positions();
        self.commit_offsets(&offsets)
    }

    /// Commits explicit offsets (the next offset to read, Kafka's
    /// convention) and waits.
    pub fn commit_offsets(&mut self, offsets: &[OffsetToCommit]) -> Result<(), GroupError> {
        if offsets.is_empty() || self.generation < 0 {
            return Ok(());
        }
        // Commits are answered in order: earlier async ones first.
        self.finish_async_commits();
        let group = self.options.group_id.clone();
        let member = self.member_id.clone();
        let instance = self.options.instance_id.clone();
        let generation = self.generation;
        let committer = Committer {
            generation_id: generation,
            member_id: &member,
            instance_id: instance.as_deref(),
        };
        let results = match self
            .coordinator()?
            .offset_commit(&group, committer, offsets)
        {
            Ok(results) => results,
            Err(error) => {
                self.forget_coordinator();
                return Err(error.into());
            }
        };
        let failed: Vec<_> = results
            .into_iter()
            .filter(|(_, _, code)| *code != ErrorCode::None)
            .collect();
        if failed.is_empty() {
            return Ok(());
        }
        if failed.iter().any(|(_, _, code)| {
            matches!(
                code,
                ErrorCode::RebalanceInProgress
                    | ErrorCode::IllegalGeneration
                    | ErrorCode::UnknownMemberId
            )
        }) {
            self.membership.lock().expect("not poisoned").rejoin = true;
        }
        Err(GroupError::Commit(failed))
    }

    /// Commits the positions of the owned partitions without waiting: the
    /// request is pipelined on the coordinator connection and its answer
    /// read by a later commit, `poll` or `close` (at most
    /// `ASYNC_COMMITS_MAX` stay unanswered). A failure is kept for
    /// [`GroupConsumer::take_async_error`].
    pub fn commit_async(&mut self) -> Result<(), GroupError> {
        let offsets = self.positions();
        if offsets.is_empty() || self.generation < 0 {
            return Ok(());
        }
        while self.async_commits.len() >= ASYNC_COMMITS_MAX {
            self.read_async_commit()?;
        }
        let member = self.member_id.clone();
        let instance = self.options.instance_id.clone();
        let committer = Committer {
            generation_id: self.generation,
            member_id: &member,
            instance_id: instance.as_deref(),
        };
        let body = encode_offset_commit(&self.options.group_id, committer, &offsets);
        let sent = self
            .coordinator()?
            .send(ApiKey::OffsetCommit, 0, &body, &[]);
        match sent {
            Ok(id) => {
                self.async_commits.push_back(id);
                Ok(())
            }
            Err(error) => {
                self.forget_coordinator();
                Err(error.into())
            }
        }
    }

    /// The first failure of an asynchronous commit since the last call.
    pub fn take_async_error(&mut self) -> Option<GroupError> {
        self.async_error.take()
    }

    /// Waits for every asynchronous commit's answer; the first failure.
    pub fn wait_async_commits(&mut self) -> Result<(), GroupError> {
        self.finish_async_commits();
        match self.async_error.take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn read_async_commit(&mut self) -> Result<(), GroupError> {
        let Some(id) = self.async_commits.pop_front() else {
            return Ok(());
        };
        let received = self.coordinator()?.receive(id);
        let results = match received.and_then(|frame| read_offset_commit(&frame)) {
            Ok(results) => results,
            Err(error) => {
                self.forget_coordinator();
                return Err(error.into());
            }
        };
        let failed: Vec<_> = results
            .into_iter()
            .filter(|(_, _, code)| *code != ErrorCode::None)
            .collect();
        if !failed.is_empty() && self.async_error.is_none() {
            self.async_error = Some(GroupError::Commit(failed));
        }
        Ok(())
    }

    /// Reads the answers of every asynchronous commit still in flight.
    fn finish_async_commits(&mut self) {
        while !self.async_commits.is_empty() {
            if let Err(error) = self.read_async_commit() {
                self.async_error.get_or_insert(error);
            }
        }
    }

    /// Drops the coordinator connection (and with it any unanswered
    /// asynchronous commits, which are reported as failed).
    fn forget_coordinator(&mut self) {
        self.coordinator = None;
        if !self.async_commits.is_empty() {
            self.async_commits.clear();
            self.async_error
                .get_or_insert(GroupError::Client(ClientError::Closed));
        }
    }

    /// Gives up everything owned: commit (auto-commit on), `on_revoked`,
    /// unassign.
    fn revoke_all(&mut self) {
        if self.owned.is_empty() {
            return;
        }
        if self.options.auto_commit {
            let _ = self.commit_sync();
        }
        let owned = std::mem::take(&mut self.owned);
        self.listener.on_revoked(&owned);
        self.unassign(&owned);
    }

    /// Incremental cooperative rebalancing: keep owned partitions across a
    /// rebalance, give up only those that move.
    fn cooperative(&self) -> bool {
        self.options.assignors.iter().all(|a| a.is_cooperative())
    }

    fn rejoin(&mut self) -> Result<(), GroupError> {
        self.finish_async_commits();
        if !self.cooperative() {
            self.revoke_all();
        }
        {
            let mut m = self.membership.lock().expect("not poisoned");
            m.active = None;
            m.rejoin = false;
        }
        if self.topics.is_empty() {
            return Ok(());
        }
        self.ensure_heartbeat();
        loop {
            match self.join_once() {
                Ok(true) => return Ok(()),
                Ok(false) => continue,
                Err(GroupError::Client(error)) => {
                    // The coordinator moved, is restarting, or the
                    // connection broke: find it again.
                    self.forget_coordinator();
                    if !is_transient(&error) {
                        return Err(error.into());
                    }
                    thread::sleep(Duration::from_millis(100));
                }
                Err(GroupError::Coordinator { code, .. }) if code.is_retriable() => {
                    self.forget_coordinator();
                    thread::sleep(Duration::from_millis(100));
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// One JoinGroup + SyncGroup round; `Ok(false)`: try again.
    fn join_once(&mut self) -> Result<bool, GroupError> {
        let cooperative = self.cooperative();
        let subscription = Subscription {
            topics: self.topics.clone(),
            owned: if cooperative {
                self.owned.clone()
            } else {
                Vec::new()
            },
            generation: if cooperative { self.generation } else { -1 },
        };
        let metadata = consumer_protocol::encode_subscription(&subscription);
        let protocols: Vec<(String, Vec<u8>)> = self
            .options
            .assignors
            .iter()
            .map(|a| (a.name().to_owned(), metadata.clone()))
            .collect();
        let group = self.options.group_id.clone();
        let instance = self.options.instance_id.clone();
        let client_id = self.options.client_id.clone();
        let member_id = self.member_id.clone();
        let request = JoinGroup {
            group_id: &group,
            member_id: &member_id,
            instance_id: instance.as_deref(),
            client_id: &client_id,
            protocol_type: PROTOCOL_TYPE,
            protocols: &protocols,
            session_timeout_ms: self.options.session_timeout.as_millis() as i32,
            rebalance_timeout_ms: self.options.max_poll_interval.as_millis() as i32,
        };
        let joined = self.coordinator()?.join_group(&request)?;
        match joined.error {
            ErrorCode::None => {}
            ErrorCode::MemberIdRequired => {
                self.member_id = joined.member_id;
                return Ok(false);
            }
            ErrorCode::UnknownMemberId => {
                self.member_id.clear();
                return Ok(false);
            }
            ErrorCode::RebalanceInProgress
            | ErrorCode::CoordinatorLoadInProgress
            | ErrorCode::CoordinatorNotAvailable
            | ErrorCode::NotCoordinator => {
                self.forget_coordinator();
                thread::sleep(Duration::from_millis(100));
                return Ok(false);
            }
            code => return Err(GroupError::Coordinator { group, code }),
        }
        self.member_id = joined.member_id.clone();
        let protocol = joined.protocol_name.clone().unwrap_or_default();
        let assignments = if joined.leader == joined.member_id && !joined.skip_assignment {
            self.assign(&protocol, &joined.members)?
        } else {
            Vec::new()
        };
        let member_id = self.member_id.clone();
        let synced = self.coordinator()?.sync_group(
            &group,
            joined.generation_id,
            &member_id,
            instance.as_deref(),
            PROTOCOL_TYPE,
            &protocol,
            &assignments,
        )?;
        match synced.error {
            ErrorCode::None => {}
            ErrorCode::RebalanceInProgress | ErrorCode::IllegalGeneration => return Ok(false),
            ErrorCode::UnknownMemberId => {
                self.member_id.clear();
                return Ok(false);
            }
            code => return Err(GroupError::Coordinator { group, code }),
        }
        let partitions = consumer_protocol::decode_assignment(&synced.assignment)
            .map_err(|e| GroupError::Assignment(e.to_string()))?;
        self.generation = joined.generation_id;
        if cooperative {
            return self.apply_incremental(partitions);
        }
        self.start_partitions(&partitions)?;
        {
            let mut m = self.membership.lock().expect("not poisoned");
            m.active = Some((self.generation, self.member_id.clone()));
        }
        self.owned = partitions;
        self.last_commit = Instant::now();
        self.listener.on_assigned(&self.owned);
        Ok(true)
    }

    /// Cooperative: revoke what moved away (commit first), start what is
    /// new, keep the rest untouched; after revoking, rejoin at once so the
    /// leader can hand the released partitions out (the follow-up
    /// rebalance).
    fn apply_incremental(&mut self, assigned: Vec<TopicPartition>) -> Result<bool, GroupError> {
        let new: BTreeSet<TopicPartition> = assigned.into_iter().collect();
        let old: BTreeSet<TopicPartition> = self.owned.iter().cloned().collect();
        let revoked: Vec<TopicPartition> = old.difference(&new).cloned().collect();
        let added: Vec<TopicPartition> = new.difference(&old).cloned().collect();
        if !revoked.is_empty() {
            if self.options.auto_commit {
                let _ = self.commit_sync();
            }
            self.listener.on_revoked(&revoked);
            self.unassign(&revoked);
            self.owned.retain(|tp| !revoked.contains(tp));
        }
        self.start_partitions(&added)?;
        {
            let mut m = self.membership.lock().expect("not poisoned");
            m.active = Some((self.generation, self.member_id.clone()));
            if !revoked.is_empty() {
                m.rejoin = true;
            }
        }
        self.owned = new.into_iter().collect();
        self.last_commit = Instant::now();
        if !added.is_empty() {
            self.listener.on_assigned(&added);
        }
        Ok(true)
    }

    fn unassign(&mut self, partitions: &[TopicPartition]) {
        let mut by_topic: BTreeMap<&str, Vec<PartitionId>> = BTreeMap::new();
        for tp in partitions {
            by_topic
                .entry(&tp.topic)
                .or_default()
                .push(PartitionId(tp.partition));
        }
        for (topic, ids) in by_topic {
            self.consumer.unassign(topic, &ids);
        }
    }

    /// The leader's part: every member's assignment.
    fn assign(
        &mut self,
        protocol: &str,
        members: &[super::group::JoinedMember],
    ) -> Result<Vec<(String, Vec<u8>)>, GroupError> {
        let assignor = Assignor::from_name(protocol).ok_or_else(|| GroupError::Coordinator {
            group: self.options.group_id.clone(),
            code: ErrorCode::InconsistentGroupProtocol,
        })?;
        let mut subscriptions = BTreeMap::new();
        let mut topics = BTreeSet::new();
        for member in members {
            let subscription = consumer_protocol::decode_subscription(&member.metadata)
                .map_err(|e| GroupError::Assignment(e.to_string()))?;
            topics.extend(subscription.topics.iter().cloned());
            subscriptions.insert(member.member_id.clone(), subscription);
        }
        let mut counts = BTreeMap::new();
        for topic in topics {
            // A topic that does not exist (yet) is simply not assigned.
            if let Ok(partitions) = self.consumer.partitions_for(&topic) {
                counts.insert(topic, partitions.len() as u32);
            }
        }
        let assignment = assignor.assign(&counts, &subscriptions);
        Ok(subscriptions
            .keys()
            .map(|member| {
                let partitions = assignment.get(member).cloned().unwrap_or_default();
                (
                    member.clone(),
                    consumer_protocol::encode_assignment(&partitions),
                )
            })
            .collect())
    }

    /// Assigns `partitions` to the fetcher at the group's committed offsets
    /// (the others start per `auto_offset_reset`).
    fn start_partitions(&mut self, partitions: &[TopicPartition]) -> Result<(), GroupError> {
        if partitions.is_empty() {
            return Ok(());
        }
        let group = self.options.group_id.clone();
        let wanted: Vec<(String, u32)> = partitions
            .iter()
            .map(|tp| (tp.topic.clone(), tp.partition))
            .collect();
        let committed = self.coordinator()?.offset_fetch(&group, Some(&wanted))?;
        let mut by_topic: BTreeMap<&str, Vec<PartitionId>> = BTreeMap::new();
        for tp in partitions {
            by_topic
                .entry(&tp.topic)
                .or_default()
                .push(PartitionId(tp.partition));
        }
        for (topic, ids) in by_topic {
            self.consumer.assign(topic, &ids);
        }
        for c in committed {
            if c.error == ErrorCode::None && c.offset >= 0 {
                self.consumer.seek(
                    &c.topic,
                    PartitionId(c.partition),
                    SeekTo::Offset(Offset(c.offset as u64)),
                )?;
            }
        }
        Ok(())
    }

    fn ensure_heartbeat(&mut self) {
        if self.heartbeat.is_some() {
            return;
        }
        let membership = self.membership.clone();
        let stop = self.stop.clone();
        let options = self.options.clone();
        let bootstrap = self.consumer_options.bootstrap.clone();
        let client = self.consumer_options.client.clone();
        self.heartbeat = Some(thread::spawn(move || {
            heartbeat_loop(&options, &bootstrap, &client, &membership, &stop)
        }));
    }

    /// Commits (auto-commit on), calls `on_revoked`, leaves the group
    /// (dynamic members only: a static member keeps its place until its
    /// session times out) and stops the heartbeat.
    pub fn close(mut self) -> Result<(), GroupError> {
        self.finish_async_commits();
        self.revoke_all();
        self.stop.store(true, Ordering::Release);
        if let Some(heartbeat) = self.heartbeat.take() {
            let _ = heartbeat.join();
        }
        if self.options.instance_id.is_none() && !self.member_id.is_empty() {
            let group = self.options.group_id.clone();
            let member = self.member_id.clone();
            self.coordinator()?.leave_group(&group, &member, None)?;
        }
        Ok(())
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Heartbeats while the member is in a stable generation; leaves the group
/// when `poll` was not called within `max_poll_interval`.
fn heartbeat_loop(
    options: &GroupOptions,
    bootstrap: &[String],
    client_config: &ClientConfig,
    membership: &Mutex<Membership>,
    stop: &AtomicBool,
) {
    let mut coordinator: Option<Client> = None;
    let tick = Duration::from_millis(50).min(options.heartbeat_interval);
    let mut next = Instant::now();
    while !stop.load(Ordering::Acquire) {
        thread::sleep(tick);
        if Instant::now() < next {
            continue;
        }
        next = Instant::now() + options.heartbeat_interval;
        let (active, poll_overdue) = {
            let m = membership.lock().expect("not poisoned");
            let overdue = m
                .last_poll
                .is_some_and(|at| at.elapsed() > options.max_poll_interval);
            (m.active.clone(), overdue)
        };
        let Some((generation, member_id)) = active else {
            continue;
        };
        if coordinator.is_none() {
            coordinator = bootstrap.iter().find_map(|addr| {
                let mut b = Client::connect(addr.as_str(), client_config.clone()).ok()?;
                let (host, port) = coordinator_addr(&mut b, &options.group_id).ok()?;
                Client::connect((host.as_str(), port), client_config.clone()).ok()
            });
        }
        let Some(client) = coordinator.as_mut() else {
            continue;
        };
        let instance = options.instance_id.as_deref();
        if poll_overdue {
            let _ = client.leave_group(&options.group_id, &member_id, instance);
            let mut m = membership.lock().expect("not poisoned");
            m.active = None;
            m.left_for_poll_timeout = true;
            continue;
        }
        match client.heartbeat(&options.group_id, generation, &member_id, instance) {
            Ok(ErrorCode::None) => {}
            Ok(_) => {
                // Rebalance in progress, fenced, or dropped: rejoin.
                let mut m = membership.lock().expect("not poisoned");
                if m.active.as_ref().map(|a| a.0) == Some(generation) {
                    m.rejoin = true;
                    m.active = None;
                }
            }
            Err(_) => coordinator = None,
        }
    }
}
