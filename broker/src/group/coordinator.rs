//! The group coordinator: Kafka's classic consumer-group protocol as a
//! sans-IO state machine.
//!
//! Requests come in through `handle_*` with the current time and a
//! [`ReplyId`] the driver chose; responses (possibly much later: a
//! JoinGroup waits for the whole group to rejoin) and durable-write work
//! come out of [`Coordinator::poll_action`]. The driver calls
//! [`Coordinator::handle_tick`] at [`Coordinator::next_deadline`]. Time is
//! a monotonic millisecond count the driver passes in; nothing here reads a
//! clock.
//!
//! Group states (as in Kafka):
//!
//! ```text
//!            join                 all rejoined / timeout        leader SyncGroup
//!   Empty ─────────▶ PreparingRebalance ───────────▶ CompletingRebalance ──────▶ Stable
//!     ▲                 ▲      │ nobody left                │  member joins,     │
//!     └─────────────────┼──────┘                            │  leaves, expires   │
//!                       └───────────────────────────────────┴────────────────────┘
//! ```
//!
//! A group that is Empty with no committed offsets is dropped; a group the
//! coordinator does not hold is reported as Dead.
//!
//! Decisions:
//! - New dynamic members join in two steps (Kafka's KIP-394): a JoinGroup
//!   without a member id gets MEMBER_ID_REQUIRED and a fresh id, and the
//!   member only counts once it joins again with that id. A client whose
//!   first JoinGroup times out therefore leaves no member behind that the
//!   next rebalance would wait for. Such pending ids expire after the
//!   session timeout. Static members (`group.instance.id`) get their id
//!   directly, as in Kafka.
//! - Member ids are `<client id or instance id>-<nonce>-<counter>`; the
//!   driver passes a nonce that differs per coordinator start, so an id from
//!   before a restart never names a new member.
//! - Offset commits are applied to the in-memory view only after the driver
//!   reports them durable ([`Coordinator::offsets_persisted`]), so an
//!   OffsetFetch never returns an offset a crash could take back.
//! - Group membership is not persisted: after a coordinator restart members
//!   get UNKNOWN_MEMBER_ID and rejoin (one rebalance); committed offsets are
//!   reloaded with [`Coordinator::load_offset`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use fjord_schema::ErrorCode;

use super::TopicPartition;

/// Monotonic time in milliseconds, as given by the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(pub u64);

impl Millis {
    fn after(self, ms: u32) -> Millis {
        Millis(self.0.saturating_add(u64::from(ms)))
    }
}

/// Names a request whose response the coordinator owes; chosen by the
/// driver, unique among outstanding requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplyId(pub u64);

/// Limits and timeouts (Kafka's broker-side `group.*` settings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    /// Groups this coordinator (one offsets partition's) holds; JoinGroup
    /// or a simple OffsetCommit for a new group beyond it gets
    /// COORDINATOR_NOT_AVAILABLE.
    pub groups_max: usize,
    /// Members (and pending member ids) per group (`group.max.size`).
    pub members_per_group_max: usize,
    /// Allowed `session.timeout.ms` (`group.min/max.session.timeout.ms`).
    pub session_timeout_min_ms: u32,
    pub session_timeout_max_ms: u32,
    /// Rebalance timeouts (`max.poll.interval.ms`) above this are clamped:
    /// a rebalance never waits longer for a silent member.
    pub rebalance_timeout_max_ms: u32,
    /// How long the first rebalance of an empty group waits for more
    /// members (`group.initial.rebalance.delay.ms`); each new member extends
    /// it, up to the members' rebalance timeout.
    pub initial_rebalance_delay_ms: u32,
    /// Partitions with a committed offset per group.
    pub offsets_per_group_max: usize,
    /// Bytes of metadata per committed offset (`offset.metadata.max.bytes`).
    pub offset_metadata_bytes_max: usize,
    /// Bytes of protocol metadata per member, and of one member's
    /// assignment.
    pub member_metadata_bytes_max: usize,
    /// Protocols (assignors) one member may offer.
    pub protocols_per_member_max: usize,
    /// Offset commits waiting to become durable, over all groups of this
    /// coordinator.
    pub commits_in_flight_max: usize,
}

impl Default for GroupConfig {
    fn default() -> GroupConfig {
        GroupConfig {
            groups_max: 10_000,
            members_per_group_max: 1_000,
            session_timeout_min_ms: 6_000,
            session_timeout_max_ms: 1_800_000,
            rebalance_timeout_max_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            offsets_per_group_max: 100_000,
            offset_metadata_bytes_max: 4_096,
            member_metadata_bytes_max: 1 << 20,
            protocols_per_member_max: 16,
            commits_in_flight_max: 4_096,
        }
    }
}

impl GroupConfig {
    /// Panics on settings that make no sense (programmer or config-check
    /// error: the config loader validates user input before this).
    pub fn check(&self) {
        assert!(self.groups_max > 0);
        assert!(self.members_per_group_max > 0);
        assert!(self.session_timeout_min_ms > 0);
        assert!(self.session_timeout_min_ms <= self.session_timeout_max_ms);
        assert!(self.rebalance_timeout_max_ms > 0);
        assert!(self.protocols_per_member_max > 0);
        assert!(self.commits_in_flight_max > 0);
    }
}

/// Expected errors of group requests; [`GroupError::code`] is the wire code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("the group id is empty")]
    InvalidGroupId,
    #[error("the member id is not known to the group")]
    UnknownMemberId,
    #[error("the generation is not the group's current one")]
    IllegalGeneration,
    #[error("the group is rebalancing: rejoin")]
    RebalanceInProgress,
    #[error("join again with the member id in this response")]
    MemberIdRequired,
    #[error("another member has taken this group instance id")]
    FencedInstanceId,
    #[error("the group has its maximum number of members")]
    GroupMaxSizeReached,
    #[error("the protocol type or protocols do not match the group's")]
    InconsistentGroupProtocol,
    #[error("the session timeout is outside the broker's allowed range")]
    InvalidSessionTimeout,
    #[error("this coordinator holds its maximum number of groups")]
    GroupsMaxReached,
    #[error("too many protocols, or protocol metadata or an assignment too large")]
    InvalidRequest,
    #[error("the offset metadata is too large")]
    OffsetMetadataTooLarge,
    #[error("the group has committed offsets for its maximum number of partitions")]
    OffsetsMaxReached,
    #[error("too many offset commits are waiting to be written")]
    CommitsInFlightMaxReached,
}

impl GroupError {
    pub fn code(self) -> ErrorCode {
        match self {
            GroupError::InvalidGroupId => ErrorCode::InvalidGroupId,
            GroupError::UnknownMemberId => ErrorCode::UnknownMemberId,
            GroupError::IllegalGeneration => ErrorCode::IllegalGeneration,
            GroupError::RebalanceInProgress => ErrorCode::RebalanceInProgress,
            GroupError::MemberIdRequired => ErrorCode::MemberIdRequired,
            GroupError::FencedInstanceId => ErrorCode::FencedInstanceId,
            GroupError::GroupMaxSizeReached => ErrorCode::GroupMaxSizeReached,
            GroupError::InconsistentGroupProtocol => ErrorCode::InconsistentGroupProtocol,
            GroupError::InvalidSessionTimeout => ErrorCode::InvalidSessionTimeout,
            // Kafka has no group limit; a retriable code sends clients
            // back to FindCoordinator rather than failing them.
            GroupError::GroupsMaxReached => ErrorCode::CoordinatorNotAvailable,
            GroupError::InvalidRequest => ErrorCode::InvalidRequest,
            GroupError::OffsetMetadataTooLarge => ErrorCode::OffsetMetadataTooLarge,
            GroupError::OffsetsMaxReached => ErrorCode::InvalidCommitOffsetSize,
            GroupError::CommitsInFlightMaxReached => ErrorCode::BrokerBusy,
        }
    }
}

/// The error a group request answers when appending its records to
/// `__consumer_offsets` (acks=all) failed with `append`: Kafka's mapping
/// for OffsetCommit and group writes. Too few in-sync replicas or a
/// timeout waiting for them is COORDINATOR_NOT_AVAILABLE (retriable: the
/// client retries here), a replica that no longer leads is
/// NOT_COORDINATOR (the client finds the new coordinator), a batch too
/// large is INVALID_COMMIT_OFFSET_SIZE; a storage error stays
/// KAFKA_STORAGE_ERROR, and anything else is passed on.
pub fn persist_error(append: ErrorCode) -> ErrorCode {
    match append {
        ErrorCode::NotEnoughReplicas
        | ErrorCode::NotEnoughReplicasAfterAppend
        | ErrorCode::RequestTimedOut
        | ErrorCode::UnknownTopicOrPartition => ErrorCode::CoordinatorNotAvailable,
        ErrorCode::NotLeaderOrFollower | ErrorCode::FencedLeaderEpoch => ErrorCode::NotCoordinator,
        ErrorCode::MessageTooLarge | ErrorCode::RecordListTooLarge => {
            ErrorCode::InvalidCommitOffsetSize
        }
        // `None` is no failure: a driver bug, reported as one.
        ErrorCode::None => ErrorCode::UnknownServerError,
        other => other,
    }
}

fn code(result: Result<(), GroupError>) -> ErrorCode {
    match result {
        Ok(()) => ErrorCode::None,
        Err(e) => e.code(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    /// Not held by this coordinator.
    Dead,
}

impl GroupState {
    pub const ALL: [GroupState; 5] = [
        GroupState::Empty,
        GroupState::PreparingRebalance,
        GroupState::CompletingRebalance,
        GroupState::Stable,
        GroupState::Dead,
    ];

    /// Kafka's name of the state (ListGroups, DescribeGroups).
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }

    pub fn from_name(name: &str) -> Option<GroupState> {
        GroupState::ALL
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name))
    }
}

/// One protocol (assignor) a member offers, with its subscription bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    pub metadata: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinRequest {
    pub group_id: String,
    /// Empty on a member's first join.
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub protocol_type: String,
    /// In the member's order of preference.
    pub protocols: Vec<Protocol>,
    pub session_timeout_ms: i32,
    /// -1: the session timeout.
    pub rebalance_timeout_ms: i32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    /// The member's metadata for the chosen protocol.
    pub metadata: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinResponse {
    pub error: ErrorCode,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub skip_assignment: bool,
    pub member_id: String,
    /// Only for the leader.
    pub members: Vec<JoinedMember>,
}

impl JoinResponse {
    fn error(error: GroupError, member_id: String) -> JoinResponse {
        JoinResponse {
            error: error.code(),
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            skip_assignment: false,
            member_id,
            members: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// From the leader: (member id, assignment bytes).
    pub assignments: Vec<(String, Vec<u8>)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncResponse {
    pub error: ErrorCode,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Vec<u8>,
}

impl SyncResponse {
    fn error(error: GroupError) -> SyncResponse {
        SyncResponse {
            error: error.code(),
            protocol_type: None,
            protocol_name: None,
            assignment: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub instance_id: Option<String>,
}

/// A member leaving: by member id, or (static members) by instance id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeavingMember {
    pub member_id: String,
    pub instance_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaveResponse {
    pub error: ErrorCode,
    /// Per member of the request, in its order.
    pub members: Vec<(LeavingMember, ErrorCode)>,
}

/// A committed offset as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitRequest {
    pub group_id: String,
    /// -1 with no member: a simple commit (manual assignment), accepted
    /// while the group has no members.
    pub generation_id: i32,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub offsets: Vec<(TopicPartition, CommittedOffset)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedGroup {
    pub group_id: String,
    pub protocol_type: String,
    pub state: GroupState,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescribedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    /// Metadata for the chosen protocol (empty before one is chosen).
    pub metadata: Vec<u8>,
    /// Empty unless the group is Stable.
    pub assignment: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescribedGroup {
    pub group_id: String,
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol_name: String,
    pub members: Vec<DescribedMember>,
}

/// Work for the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Join {
        reply: ReplyId,
        response: JoinResponse,
    },
    Sync {
        reply: ReplyId,
        response: SyncResponse,
    },
    Heartbeat {
        reply: ReplyId,
        error: ErrorCode,
    },
    Leave {
        reply: ReplyId,
        response: LeaveResponse,
    },
    /// Write these offsets durably (in `__consumer_offsets`), then call
    /// [`Coordinator::offsets_persisted`] with `reply`.
    PersistOffsets {
        reply: ReplyId,
        group_id: String,
        offsets: Vec<(TopicPartition, CommittedOffset)>,
    },
    /// The OffsetCommit response, per partition in request order.
    OffsetCommit {
        reply: ReplyId,
        results: Vec<(TopicPartition, ErrorCode)>,
    },
    /// Write a tombstone for each of these partitions' offsets durably,
    /// then call [`Coordinator::tombstones_persisted`] with `reply`.
    PersistTombstones {
        reply: ReplyId,
        group_id: String,
        partitions: Vec<TopicPartition>,
    },
    /// The DeleteGroups answer for one group.
    DeleteGroup {
        reply: ReplyId,
        error: ErrorCode,
    },
}

#[derive(Debug)]
struct Member {
    instance_id: Option<String>,
    client_id: String,
    protocol_type: String,
    protocols: Vec<Protocol>,
    session_timeout_ms: u32,
    rebalance_timeout_ms: u32,
    assignment: Vec<u8>,
    /// A JoinGroup waiting for the rebalance to complete.
    awaiting_join: Option<ReplyId>,
    /// A SyncGroup waiting for the leader's assignment.
    awaiting_sync: Option<ReplyId>,
    /// When the member is dropped unless it is heard from. `None` while
    /// one of its requests is parked here: a waiting member is alive.
    session_deadline: Option<Millis>,
}

impl Member {
    fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|p| p.name == protocol)
    }

    fn metadata(&self, protocol: &str) -> Vec<u8> {
        self.protocols
            .iter()
            .find(|p| p.name == protocol)
            .map(|p| p.metadata.clone())
            .unwrap_or_default()
    }

    fn touch(&mut self, now: Millis) {
        if self.awaiting_join.is_none() && self.awaiting_sync.is_none() {
            self.session_deadline = Some(now.after(self.session_timeout_ms));
        }
    }
}

#[derive(Debug)]
struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Instance id → member id of the static members.
    static_members: BTreeMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with their expiry.
    pending_members: BTreeMap<String, Millis>,
    /// PreparingRebalance: when the join phase ends regardless.
    join_deadline: Option<Millis>,
    /// During the initial delay of an empty group's first rebalance: the
    /// latest the delay may be extended to.
    initial_delay_limit: Option<Millis>,
    /// CompletingRebalance: when members that have not synced are dropped.
    sync_deadline: Option<Millis>,
    offsets: BTreeMap<TopicPartition, CommittedOffset>,
    commits_in_flight: usize,
    /// The deadline under which `Coordinator::timers` holds this group.
    indexed_deadline: Option<Millis>,
}

impl Group {
    fn new() -> Group {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            pending_members: BTreeMap::new(),
            join_deadline: None,
            initial_delay_limit: None,
            sync_deadline: None,
            offsets: BTreeMap::new(),
            commits_in_flight: 0,
            indexed_deadline: None,
        }
    }

    fn next_deadline(&self) -> Option<Millis> {
        let members = self.members.values().filter_map(|m| m.session_deadline);
        let pending = self.pending_members.values().copied();
        members
            .chain(pending)
            .chain(self.join_deadline)
            .chain(self.sync_deadline)
            .min()
    }

    fn removable(&self) -> bool {
        self.state == GroupState::Empty
            && self.members.is_empty()
            && self.pending_members.is_empty()
            && self.offsets.is_empty()
            && self.commits_in_flight == 0
    }

    fn check_invariants(&self) {
        assert!(self.generation >= 0);
        if let Some(leader) = &self.leader {
            assert!(self.members.contains_key(leader));
        }
        assert_eq!(
            self.join_deadline.is_some(),
            self.state == GroupState::PreparingRebalance
        );
        assert_eq!(
            self.sync_deadline.is_some(),
            self.state == GroupState::CompletingRebalance
        );
        assert!(self.initial_delay_limit.is_none() || self.state == GroupState::PreparingRebalance);
        if self.state == GroupState::Empty {
            assert!(self.members.is_empty());
        }
        if matches!(
            self.state,
            GroupState::CompletingRebalance | GroupState::Stable
        ) {
            assert!(self.protocol_name.is_some());
            let leader = self.leader.as_ref().expect("a formed group has a leader");
            assert!(self.members.contains_key(leader));
        }
        for (instance, member_id) in &self.static_members {
            let member = self.members.get(member_id).expect("static member exists");
            assert_eq!(member.instance_id.as_ref(), Some(instance));
        }
        for (id, member) in &self.members {
            if let Some(instance) = &member.instance_id {
                assert_eq!(self.static_members.get(instance), Some(id));
            }
            assert!(member.awaiting_join.is_none() || self.state == GroupState::PreparingRebalance);
            assert!(
                member.awaiting_sync.is_none() || self.state == GroupState::CompletingRebalance
            );
            let parked = member.awaiting_join.is_some() || member.awaiting_sync.is_some();
            assert_eq!(member.session_deadline.is_none(), parked);
        }
        for id in self.pending_members.keys() {
            assert!(!self.members.contains_key(id));
        }
    }

    /// A protocol all members support, by vote: each member votes for the
    /// first of its protocols all support; most votes wins, ties go to the
    /// smallest name (deterministic).
    fn select_protocol(&self) -> String {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for member in self.members.values() {
            let choice = member
                .protocols
                .iter()
                .find(|p| self.members.values().all(|m| m.supports(&p.name)))
                .expect("joins keep a protocol common to all members");
            *votes.entry(&choice.name).or_default() += 1;
        }
        let best = votes.values().copied().max().unwrap_or(0);
        votes
            .into_iter()
            .find(|(_, n)| *n == best)
            .map(|(name, _)| name.to_owned())
            .expect("a group with members has a protocol")
    }

    /// Whether a member with these protocols may join: the type matches and
    /// one of its protocols is supported by every other member.
    fn supports(&self, joining: &str, protocol_type: &str, protocols: &[Protocol]) -> bool {
        let others: Vec<&Member> = self
            .members
            .iter()
            .filter(|(id, _)| id.as_str() != joining)
            .map(|(_, m)| m)
            .collect();
        if others.is_empty() {
            return true;
        }
        others.iter().all(|m| m.protocol_type == protocol_type)
            && protocols
                .iter()
                .any(|p| others.iter().all(|m| m.supports(&p.name)))
    }

    /// Validates a member id (and instance id) of a request.
    fn check_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), GroupError> {
        if let Some(instance) = instance_id {
            match self.static_members.get(instance) {
                Some(owner) if owner != member_id => return Err(GroupError::FencedInstanceId),
                Some(_) => {}
                None => return Err(GroupError::UnknownMemberId),
            }
        }
        if self.members.contains_key(member_id) {
            Ok(())
        } else {
            Err(GroupError::UnknownMemberId)
        }
    }

    fn join_response(&self, member_id: &str, skip_assignment: bool) -> JoinResponse {
        let protocol = self.protocol_name.clone().expect("chosen protocol");
        let leader = self.leader.clone().expect("formed group has a leader");
        let members = if leader == member_id {
            self.members
                .iter()
                .map(|(id, m)| JoinedMember {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    metadata: m.metadata(&protocol),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResponse {
            error: ErrorCode::None,
            generation_id: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: Some(protocol),
            leader,
            skip_assignment,
            member_id: member_id.to_owned(),
            members,
        }
    }
}

/// The coordinator of the groups one `__consumer_offsets` partition owns.
///
/// Lives on: the shard that leads that partition (its `GroupHost` owns
/// it). Owns: those groups' membership, generations and committed offsets.
/// Lifecycle: new when the shard becomes the partition's leader →
/// `load_offset` for every record of the partition → serve (`handle_*`,
/// `poll_action`, `handle_tick`) → dropped when the shard stops leading the
/// partition or stops (members rejoin the next coordinator).
#[derive(Debug)]
pub struct Coordinator {
    config: GroupConfig,
    groups: BTreeMap<String, Group>,
    /// Groups by their next deadline.
    timers: BTreeSet<(Millis, String)>,
    actions: VecDeque<Action>,
    /// Commits handed to the driver, awaiting `offsets_persisted`.
    commits: BTreeMap<ReplyId, PendingCommit>,
    /// Deleted groups whose tombstones are being written, awaiting
    /// `tombstones_persisted`: the offsets to restore if that fails.
    deletions: BTreeMap<ReplyId, (String, BTreeMap<TopicPartition, CommittedOffset>)>,
    member_nonce: u64,
    member_counter: u64,
}

#[derive(Debug)]
struct PendingCommit {
    group_id: String,
    offsets: Vec<(TopicPartition, CommittedOffset)>,
    /// Every partition of the request: refused ones with their error,
    /// persisted ones with `None`.
    results: Vec<(TopicPartition, Option<ErrorCode>)>,
}

impl Coordinator {
    /// `member_nonce` must differ between starts of the coordinator of the
    /// same groups (the driver takes it from the wall clock).
    pub fn new(config: GroupConfig, member_nonce: u64) -> Coordinator {
        config.check();
        Coordinator {
            config,
            groups: BTreeMap::new(),
            timers: BTreeSet::new(),
            actions: VecDeque::new(),
            commits: BTreeMap::new(),
            deletions: BTreeMap::new(),
            member_nonce,
            member_counter: 0,
        }
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When `handle_tick` must next run, if anything is timed.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.timers.first().map(|(at, _)| *at)
    }

    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Restores one committed offset read back from the log (`None`: a
    /// tombstone). Later records of the same key override earlier ones, so
    /// the loader feeds records in log order. Loading is not limited by
    /// `groups_max` / `offsets_per_group_max`: what was accepted stays.
    pub fn load_offset(
        &mut self,
        group_id: &str,
        partition: TopicPartition,
        offset: Option<CommittedOffset>,
    ) {
        let group = self
            .groups
            .entry(group_id.to_owned())
            .or_insert_with(Group::new);
        match offset {
            Some(offset) => {
                group.offsets.insert(partition, offset);
            }
            None => {
                group.offsets.remove(&partition);
            }
        }
        self.reindex(group_id);
    }

    fn new_member_id(&mut self, prefix: &str) -> String {
        self.member_counter += 1;
        let mut end = prefix.len().min(64);
        while !prefix.is_char_boundary(end) {
            end -= 1;
        }
        format!(
            "{}-{:x}-{}",
            &prefix[..end],
            self.member_nonce,
            self.member_counter
        )
    }

    // ---- JoinGroup ----

    pub fn handle_join(&mut self, now: Millis, reply: ReplyId, request: JoinRequest) {
        let group_id = request.group_id.clone();
        let member_id = request.member_id.clone();
        if let Err(error) = self.join(now, reply, request) {
            self.actions.push_back(Action::Join {
                reply,
                response: JoinResponse::error(error, member_id),
            });
        }
        self.reindex(&group_id);
    }

    fn join(
        &mut self,
        now: Millis,
        reply: ReplyId,
        request: JoinRequest,
    ) -> Result<(), GroupError> {
        let config = &self.config;
        if request.group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let session = u32::try_from(request.session_timeout_ms)
            .ok()
            .filter(|s| (config.session_timeout_min_ms..=config.session_timeout_max_ms).contains(s))
            .ok_or(GroupError::InvalidSessionTimeout)?;
        let rebalance = match request.rebalance_timeout_ms {
            -1 => session,
            n if n > 0 => n as u32,
            _ => return Err(GroupError::InvalidSessionTimeout),
        }
        .min(config.rebalance_timeout_max_ms);
        if request.protocol_type.is_empty() || request.protocols.is_empty() {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        let metadata_bytes: usize = request
            .protocols
            .iter()
            .map(|p| p.name.len() + p.metadata.len())
            .sum();
        if request.protocols.len() > config.protocols_per_member_max
            || metadata_bytes > config.member_metadata_bytes_max
        {
            return Err(GroupError::InvalidRequest);
        }
        if !self.groups.contains_key(&request.group_id) {
            if !request.member_id.is_empty() {
                return Err(GroupError::UnknownMemberId);
            }
            if self.groups.len() >= config.groups_max {
                return Err(GroupError::GroupsMaxReached);
            }
            self.groups.insert(request.group_id.clone(), Group::new());
        }
        let members_max = config.members_per_group_max;
        let initial_delay = config.initial_rebalance_delay_ms;
        let group = self.groups.get(&request.group_id).expect("just ensured");
        if !group.supports(
            &request.member_id,
            &request.protocol_type,
            &request.protocols,
        ) {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        let full = group.members.len() + group.pending_members.len() >= members_max;

        let instance_owner = request
            .instance_id
            .as_ref()
            .and_then(|i| group.static_members.get(i).cloned());
        let new_member = |request: &JoinRequest, awaiting_join| Member {
            instance_id: request.instance_id.clone(),
            client_id: request.client_id.clone(),
            protocol_type: request.protocol_type.clone(),
            protocols: request.protocols.clone(),
            session_timeout_ms: session,
            rebalance_timeout_ms: rebalance,
            assignment: Vec::new(),
            awaiting_join,
            session_deadline: None,
            awaiting_sync: None,
        };

        if request.member_id.is_empty() {
            match (&request.instance_id, instance_owner) {
                (Some(_), Some(old_id)) => {
                    // A static member restarting (or a duplicate): it takes
                    // over the slot; the old id is fenced.
                    let prefix = request.instance_id.clone().unwrap_or_default();
                    let new_id = self.new_member_id(&prefix);
                    let group = self.groups.get_mut(&request.group_id).expect("exists");
                    replace_static_member(group, &old_id, &new_id, &mut self.actions);
                    let member = group.members.get_mut(&new_id).expect("replaced");
                    let unchanged = member.protocols == request.protocols;
                    member.protocols = request.protocols.clone();
                    member.client_id = request.client_id.clone();
                    member.session_timeout_ms = session;
                    member.rebalance_timeout_ms = rebalance;
                    match group.state {
                        GroupState::Stable if unchanged => {
                            member.touch(now);
                            let leader = group.leader.as_deref() == Some(new_id.as_str());
                            let response = group.join_response(&new_id, leader);
                            self.actions.push_back(Action::Join { reply, response });
                        }
                        GroupState::PreparingRebalance => {
                            park_join(group, &new_id, reply, &mut self.actions);
                            try_complete_join(group, now, &mut self.actions);
                        }
                        GroupState::Stable | GroupState::CompletingRebalance => {
                            // In CompletingRebalance the leader may already
                            // have computed an assignment for the old id.
                            park_join(group, &new_id, reply, &mut self.actions);
                            prepare_rebalance(group, now, initial_delay, &mut self.actions);
                        }
                        GroupState::Empty | GroupState::Dead => {
                            unreachable!("a group with a static member is not {:?}", group.state)
                        }
                    }
                    Ok(())
                }
                (Some(instance), None) => {
                    if full {
                        return Err(GroupError::GroupMaxSizeReached);
                    }
                    let id = self.new_member_id(instance);
                    let group = self.groups.get_mut(&request.group_id).expect("exists");
                    group.static_members.insert(instance.clone(), id.clone());
                    group.members.insert(id, new_member(&request, Some(reply)));
                    member_joined(group, now, initial_delay, &mut self.actions);
                    Ok(())
                }
                (None, _) => {
                    if full {
                        return Err(GroupError::GroupMaxSizeReached);
                    }
                    let prefix = if request.client_id.is_empty() {
                        "member"
                    } else {
                        request.client_id.as_str()
                    };
                    let id = self.new_member_id(prefix);
                    let group = self.groups.get_mut(&request.group_id).expect("exists");
                    group.pending_members.insert(id.clone(), now.after(session));
                    self.actions.push_back(Action::Join {
                        reply,
                        response: JoinResponse::error(GroupError::MemberIdRequired, id),
                    });
                    Ok(())
                }
            }
        } else {
            let group = self.groups.get_mut(&request.group_id).expect("exists");
            let member_id = request.member_id.clone();
            if group.pending_members.contains_key(&member_id) {
                if request.instance_id.is_some() {
                    // Pending ids are only handed to dynamic members.
                    return Err(GroupError::UnknownMemberId);
                }
                group.pending_members.remove(&member_id);
                group
                    .members
                    .insert(member_id, new_member(&request, Some(reply)));
                member_joined(group, now, initial_delay, &mut self.actions);
                return Ok(());
            }
            group.check_member(&member_id, request.instance_id.as_deref())?;
            let member = group.members.get_mut(&member_id).expect("checked");
            let unchanged = member.protocols == request.protocols;
            member.protocols = request.protocols.clone();
            member.client_id = request.client_id.clone();
            member.session_timeout_ms = session;
            member.rebalance_timeout_ms = rebalance;
            let is_leader = group.leader.as_deref() == Some(member_id.as_str());
            match group.state {
                GroupState::PreparingRebalance => {
                    park_join(group, &member_id, reply, &mut self.actions);
                    try_complete_join(group, now, &mut self.actions);
                }
                GroupState::CompletingRebalance | GroupState::Stable
                    if unchanged && !(group.state == GroupState::Stable && is_leader) =>
                {
                    // A member that missed its JoinGroup response (or a
                    // follower rejoining with nothing new): it is told the
                    // current generation again.
                    member.touch(now);
                    let response = group.join_response(&member_id, false);
                    self.actions.push_back(Action::Join { reply, response });
                }
                GroupState::CompletingRebalance | GroupState::Stable => {
                    park_join(group, &member_id, reply, &mut self.actions);
                    prepare_rebalance(group, now, initial_delay, &mut self.actions);
                }
                GroupState::Empty | GroupState::Dead => {
                    unreachable!("a group with members is not {:?}", group.state)
                }
            }
            Ok(())
        }
    }

    // ---- SyncGroup ----

    pub fn handle_sync(&mut self, now: Millis, reply: ReplyId, request: SyncRequest) {
        let group_id = request.group_id.clone();
        if let Err(error) = self.sync(now, reply, request) {
            self.actions.push_back(Action::Sync {
                reply,
                response: SyncResponse::error(error),
            });
        }
        self.reindex(&group_id);
    }

    fn sync(
        &mut self,
        now: Millis,
        reply: ReplyId,
        request: SyncRequest,
    ) -> Result<(), GroupError> {
        let assignment_max = self.config.member_metadata_bytes_max;
        let group = self
            .groups
            .get_mut(&request.group_id)
            .ok_or(GroupError::UnknownMemberId)?;
        group.check_member(&request.member_id, request.instance_id.as_deref())?;
        if request.generation_id != group.generation {
            return Err(GroupError::IllegalGeneration);
        }
        let mismatch =
            |given: &Option<String>, have: &Option<String>| given.is_some() && given != have;
        if mismatch(&request.protocol_type, &group.protocol_type)
            || mismatch(&request.protocol_name, &group.protocol_name)
        {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        match group.state {
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::Stable => {
                let member = group.members.get_mut(&request.member_id).expect("checked");
                member.touch(now);
                let response = SyncResponse {
                    error: ErrorCode::None,
                    protocol_type: group.protocol_type.clone(),
                    protocol_name: group.protocol_name.clone(),
                    assignment: member.assignment.clone(),
                };
                self.actions.push_back(Action::Sync { reply, response });
                Ok(())
            }
            GroupState::CompletingRebalance => {
                let is_leader = group.leader.as_deref() == Some(request.member_id.as_str());
                if is_leader
                    && request
                        .assignments
                        .iter()
                        .any(|(_, a)| a.len() > assignment_max)
                {
                    return Err(GroupError::InvalidRequest);
                }
                let member = group.members.get_mut(&request.member_id).expect("checked");
                if let Some(earlier) = member.awaiting_sync.replace(reply) {
                    self.actions.push_back(Action::Sync {
                        reply: earlier,
                        response: SyncResponse::error(GroupError::RebalanceInProgress),
                    });
                }
                member.session_deadline = None;
                if is_leader {
                    // Members the leader left out get an empty assignment;
                    // assignments for ids not in the group are ignored.
                    let mut given: BTreeMap<String, Vec<u8>> =
                        request.assignments.into_iter().collect();
                    for (id, member) in &mut group.members {
                        member.assignment = given.remove(id).unwrap_or_default();
                    }
                    group.state = GroupState::Stable;
                    group.sync_deadline = None;
                    let (protocol_type, protocol_name) =
                        (group.protocol_type.clone(), group.protocol_name.clone());
                    for member in group.members.values_mut() {
                        if let Some(waiting) = member.awaiting_sync.take() {
                            member.touch(now);
                            self.actions.push_back(Action::Sync {
                                reply: waiting,
                                response: SyncResponse {
                                    error: ErrorCode::None,
                                    protocol_type: protocol_type.clone(),
                                    protocol_name: protocol_name.clone(),
                                    assignment: member.assignment.clone(),
                                },
                            });
                        }
                    }
                }
                Ok(())
            }
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId),
        }
    }

    // ---- Heartbeat ----

    pub fn handle_heartbeat(&mut self, now: Millis, reply: ReplyId, request: HeartbeatRequest) {
        let error = code(self.heartbeat(now, &request));
        self.actions.push_back(Action::Heartbeat { reply, error });
        self.reindex(&request.group_id);
    }

    fn heartbeat(&mut self, now: Millis, request: &HeartbeatRequest) -> Result<(), GroupError> {
        let group = self
            .groups
            .get_mut(&request.group_id)
            .ok_or(GroupError::UnknownMemberId)?;
        group.check_member(&request.member_id, request.instance_id.as_deref())?;
        if request.generation_id != group.generation {
            return Err(GroupError::IllegalGeneration);
        }
        let state = group.state;
        let member = group.members.get_mut(&request.member_id).expect("checked");
        member.touch(now);
        match state {
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId),
        }
    }

    // ---- LeaveGroup ----

    pub fn handle_leave(
        &mut self,
        now: Millis,
        reply: ReplyId,
        group_id: &str,
        members: Vec<LeavingMember>,
    ) {
        let initial_delay = self.config.initial_rebalance_delay_ms;
        let mut results = Vec::with_capacity(members.len());
        let Some(group) = self.groups.get_mut(group_id) else {
            let results = members
                .into_iter()
                .map(|m| (m, ErrorCode::UnknownMemberId))
                .collect();
            self.actions.push_back(Action::Leave {
                reply,
                response: LeaveResponse {
                    error: ErrorCode::None,
                    members: results,
                },
            });
            return;
        };
        let mut removed = false;
        for leaving in members {
            let target = match &leaving.instance_id {
                Some(instance) => match group.static_members.get(instance) {
                    None => Err(GroupError::UnknownMemberId),
                    Some(owner) if !leaving.member_id.is_empty() && *owner != leaving.member_id => {
                        Err(GroupError::FencedInstanceId)
                    }
                    Some(owner) => Ok(owner.clone()),
                },
                None => Ok(leaving.member_id.clone()),
            };
            let result = target.and_then(|id| {
                if group.pending_members.remove(&id).is_some() {
                    return Ok(());
                }
                if !group.members.contains_key(&id) {
                    return Err(GroupError::UnknownMemberId);
                }
                remove_member(group, &id, &mut self.actions);
                removed = true;
                Ok(())
            });
            results.push((leaving, code(result)));
        }
        if removed {
            members_removed(group, now, initial_delay, &mut self.actions);
        } else if group.state == GroupState::PreparingRebalance {
            // A pending member leaving may be what the join phase waited for.
            try_complete_join(group, now, &mut self.actions);
        }
        self.actions.push_back(Action::Leave {
            reply,
            response: LeaveResponse {
                error: ErrorCode::None,
                members: results,
            },
        });
        self.reindex(group_id);
    }

    // ---- OffsetCommit / OffsetFetch ----

    pub fn handle_offset_commit(&mut self, now: Millis, reply: ReplyId, request: CommitRequest) {
        let group_id = request.group_id.clone();
        match self.commit(now, reply, request.clone()) {
            Ok(()) => {}
            Err(error) => {
                let results = request
                    .offsets
                    .into_iter()
                    .map(|(tp, _)| (tp, error.code()))
                    .collect();
                self.actions
                    .push_back(Action::OffsetCommit { reply, results });
            }
        }
        self.reindex(&group_id);
    }

    fn commit(
        &mut self,
        now: Millis,
        reply: ReplyId,
        request: CommitRequest,
    ) -> Result<(), GroupError> {
        assert!(
            !self.commits.contains_key(&reply),
            "reply id {reply:?} reused"
        );
        let config = &self.config;
        if request.group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        if self.commits.len() >= config.commits_in_flight_max {
            return Err(GroupError::CommitsInFlightMaxReached);
        }
        let simple = request.generation_id < 0 && request.member_id.is_empty();
        if !self.groups.contains_key(&request.group_id) {
            if !simple {
                // A member of a generation this coordinator never saw.
                return Err(GroupError::IllegalGeneration);
            }
            if self.groups.len() >= config.groups_max {
                return Err(GroupError::GroupsMaxReached);
            }
            self.groups.insert(request.group_id.clone(), Group::new());
        }
        let group = self.groups.get_mut(&request.group_id).expect("ensured");
        if !(request.generation_id < 0 && group.state == GroupState::Empty) {
            if let Some(instance) = &request.instance_id {
                if group
                    .static_members
                    .get(instance)
                    .is_some_and(|owner| *owner != request.member_id)
                {
                    return Err(GroupError::FencedInstanceId);
                }
            }
            if group.state == GroupState::CompletingRebalance {
                return Err(GroupError::RebalanceInProgress);
            }
            let member = group
                .members
                .get_mut(&request.member_id)
                .ok_or(GroupError::UnknownMemberId)?;
            if request.generation_id != group.generation {
                return Err(GroupError::IllegalGeneration);
            }
            member.touch(now);
        }
        let mut room = config
            .offsets_per_group_max
            .saturating_sub(group.offsets.len());
        let mut accepted = Vec::new();
        let mut results = Vec::with_capacity(request.offsets.len());
        for (tp, offset) in request.offsets {
            let known = group.offsets.contains_key(&tp) || accepted.iter().any(|(t, _)| *t == tp);
            let refused = if offset.metadata.len() > config.offset_metadata_bytes_max {
                Some(GroupError::OffsetMetadataTooLarge.code())
            } else if !known && room == 0 {
                Some(GroupError::OffsetsMaxReached.code())
            } else {
                if !known {
                    room -= 1;
                }
                accepted.push((tp.clone(), offset));
                None
            };
            results.push((tp, refused));
        }
        if accepted.is_empty() {
            let results = results
                .into_iter()
                .map(|(tp, e)| (tp, e.expect("nothing accepted")))
                .collect();
            self.actions
                .push_back(Action::OffsetCommit { reply, results });
            return Ok(());
        }
        group.commits_in_flight += 1;
        self.actions.push_back(Action::PersistOffsets {
            reply,
            group_id: request.group_id.clone(),
            offsets: accepted.clone(),
        });
        self.commits.insert(
            reply,
            PendingCommit {
                group_id: request.group_id,
                offsets: accepted,
                results,
            },
        );
        Ok(())
    }

    /// The driver wrote the offsets of `Action::PersistOffsets { reply,
    /// .. }` (`Ok`: the append was acknowledged with acks=all), or the
    /// append failed with this code ([`persist_error`] maps it to the
    /// commit's error, as Kafka does).
    pub fn offsets_persisted(&mut self, reply: ReplyId, written: Result<(), ErrorCode>) {
        let pending = self
            .commits
            .remove(&reply)
            .expect("offsets_persisted for a commit that was not handed out");
        let group = self
            .groups
            .get_mut(&pending.group_id)
            .expect("a group with commits in flight is kept");
        assert!(group.commits_in_flight > 0);
        group.commits_in_flight -= 1;
        if written.is_ok() {
            for (tp, offset) in pending.offsets {
                group.offsets.insert(tp, offset);
            }
        }
        let persisted = match written {
            Ok(()) => ErrorCode::None,
            Err(code) => persist_error(code),
        };
        let results = pending
            .results
            .into_iter()
            .map(|(tp, refused)| (tp, refused.unwrap_or(persisted)))
            .collect();
        self.actions
            .push_back(Action::OffsetCommit { reply, results });
        self.reindex(&pending.group_id);
    }

    /// Committed offsets of `partitions` (`None`: every committed one).
    /// A partition with nothing committed maps to `None`.
    pub fn offset_fetch(
        &self,
        group_id: &str,
        partitions: Option<&[TopicPartition]>,
    ) -> Vec<(TopicPartition, Option<CommittedOffset>)> {
        let offsets = self.groups.get(group_id).map(|g| &g.offsets);
        match partitions {
            Some(wanted) => wanted
                .iter()
                .map(|tp| (tp.clone(), offsets.and_then(|o| o.get(tp)).cloned()))
                .collect(),
            None => offsets
                .into_iter()
                .flatten()
                .map(|(tp, o)| (tp.clone(), Some(o.clone())))
                .collect(),
        }
    }

    // ---- DeleteGroups ----

    /// Deletes an Empty group and its committed offsets (Kafka's
    /// DeleteGroups): GROUP_ID_NOT_FOUND when this coordinator does not
    /// hold it, NON_EMPTY_GROUP while it has members or commits in flight.
    /// The group is gone at once (a new member starts a fresh group); the
    /// answer waits for the tombstones, so a restart cannot bring the
    /// offsets back after a successful delete.
    pub fn handle_delete_group(&mut self, reply: ReplyId, group_id: &str) {
        assert!(
            !self.deletions.contains_key(&reply),
            "reply id {reply:?} reused"
        );
        let error = match self.groups.get(group_id) {
            None => Some(ErrorCode::GroupIdNotFound),
            Some(group) if group.state != GroupState::Empty || group.commits_in_flight > 0 => {
                Some(ErrorCode::NonEmptyGroup)
            }
            Some(_) => None,
        };
        if let Some(error) = error {
            self.actions.push_back(Action::DeleteGroup { reply, error });
            return;
        }
        let mut group = self.groups.remove(group_id).expect("checked above");
        if let Some(at) = group.indexed_deadline.take() {
            // Pending member ids expire with the group.
            let was_filed = self.timers.remove(&(at, group_id.to_owned()));
            assert!(was_filed);
        }
        if group.offsets.is_empty() {
            self.actions.push_back(Action::DeleteGroup {
                reply,
                error: ErrorCode::None,
            });
            return;
        }
        self.actions.push_back(Action::PersistTombstones {
            reply,
            group_id: group_id.to_owned(),
            partitions: group.offsets.keys().cloned().collect(),
        });
        self.deletions
            .insert(reply, (group_id.to_owned(), group.offsets));
    }

    /// The driver wrote the tombstones of `Action::PersistTombstones {
    /// reply, .. }` (`Ok`), or the append failed with this code. On
    /// failure the offsets come back (commits made since win) and the
    /// delete fails with the code [`persist_error`] maps it to.
    pub fn tombstones_persisted(&mut self, reply: ReplyId, written: Result<(), ErrorCode>) {
        let (group_id, offsets) = self
            .deletions
            .remove(&reply)
            .expect("tombstones_persisted for a delete that was not handed out");
        let error = if let Err(code) = written {
            let group = self
                .groups
                .entry(group_id.clone())
                .or_insert_with(Group::new);
            for (tp, offset) in offsets {
                group.offsets.entry(tp).or_insert(offset);
            }
            self.reindex(&group_id);
            persist_error(code)
        } else {
            ErrorCode::None
        };
        self.actions.push_back(Action::DeleteGroup { reply, error });
    }

    // ---- ListGroups / DescribeGroups ----

    /// Groups in one of `states` (all when empty), by id.
    pub fn list_groups(&self, states: &[GroupState]) -> Vec<ListedGroup> {
        self.groups
            .iter()
            .filter(|(_, g)| states.is_empty() || states.contains(&g.state))
            .map(|(id, g)| ListedGroup {
                group_id: id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state,
            })
            .collect()
    }

    pub fn describe_group(&self, group_id: &str) -> DescribedGroup {
        let Some(group) = self.groups.get(group_id) else {
            return DescribedGroup {
                group_id: group_id.to_owned(),
                state: GroupState::Dead,
                protocol_type: String::new(),
                protocol_name: String::new(),
                members: Vec::new(),
            };
        };
        let protocol = group.protocol_name.clone().unwrap_or_default();
        let members = group
            .members
            .iter()
            .map(|(id, m)| DescribedMember {
                member_id: id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                metadata: m.metadata(&protocol),
                assignment: if group.state == GroupState::Stable {
                    m.assignment.clone()
                } else {
                    Vec::new()
                },
            })
            .collect();
        DescribedGroup {
            group_id: group_id.to_owned(),
            state: group.state,
            protocol_type: group.protocol_type.clone().unwrap_or_default(),
            protocol_name: protocol,
            members,
        }
    }

    // ---- Time ----

    /// Expires sessions, pending member ids and join / sync phases due at
    /// or before `now`.
    pub fn handle_tick(&mut self, now: Millis) {
        let due: Vec<String> = self
            .timers
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, id)| id.clone())
            .collect();
        let initial_delay = self.config.initial_rebalance_delay_ms;
        for group_id in due {
            let group = self
                .groups
                .get_mut(&group_id)
                .expect("timers name held groups");
            expire(group, now, initial_delay, &mut self.actions);
            self.reindex(&group_id);
        }
    }

    /// Re-files a group under its next deadline after a change, and drops
    /// it once it holds nothing.
    fn reindex(&mut self, group_id: &str) {
        let Some(group) = self.groups.get_mut(group_id) else {
            return;
        };
        group.check_invariants();
        if let Some(old) = group.indexed_deadline.take() {
            let was_filed = self.timers.remove(&(old, group_id.to_owned()));
            assert!(was_filed);
        }
        if group.removable() {
            self.groups.remove(group_id);
            return;
        }
        if let Some(at) = group.next_deadline() {
            group.indexed_deadline = Some(at);
            self.timers.insert((at, group_id.to_owned()));
        }
    }
}

fn park_join(group: &mut Group, member_id: &str, reply: ReplyId, actions: &mut VecDeque<Action>) {
    let member = group.members.get_mut(member_id).expect("parking a member");
    if let Some(earlier) = member.awaiting_join.replace(reply) {
        // A retried JoinGroup supersedes the earlier one.
        actions.push_back(Action::Join {
            reply: earlier,
            response: JoinResponse::error(GroupError::RebalanceInProgress, member_id.to_owned()),
        });
    }
    member.session_deadline = None;
}

/// A new member (with a parked JoinGroup) was added.
fn member_joined(
    group: &mut Group,
    now: Millis,
    initial_delay: u32,
    actions: &mut VecDeque<Action>,
) {
    match group.state {
        GroupState::PreparingRebalance => {
            if let Some(limit) = group.initial_delay_limit {
                // Still in the initial delay: wait a little longer for more.
                group.join_deadline = Some(now.after(initial_delay).min(limit));
            } else {
                try_complete_join(group, now, actions);
            }
        }
        GroupState::Empty | GroupState::CompletingRebalance | GroupState::Stable => {
            prepare_rebalance(group, now, initial_delay, actions);
        }
        GroupState::Dead => unreachable!("dead groups are not held"),
    }
}

/// Starts a rebalance: every member must rejoin within the rebalance
/// timeout.
fn prepare_rebalance(
    group: &mut Group,
    now: Millis,
    initial_delay: u32,
    actions: &mut VecDeque<Action>,
) {
    assert_ne!(group.state, GroupState::PreparingRebalance);
    if group.state == GroupState::CompletingRebalance {
        for member in group.members.values_mut() {
            if let Some(waiting) = member.awaiting_sync.take() {
                member.touch(now);
                actions.push_back(Action::Sync {
                    reply: waiting,
                    response: SyncResponse::error(GroupError::RebalanceInProgress),
                });
            }
        }
        group.sync_deadline = None;
    }
    for member in group.members.values_mut() {
        member.assignment.clear();
    }
    let rebalance = group
        .members
        .values()
        .map(|m| m.rebalance_timeout_ms)
        .max()
        .unwrap_or(0);
    if group.state == GroupState::Empty && initial_delay > 0 {
        let limit = now.after(rebalance.max(initial_delay));
        group.initial_delay_limit = Some(limit);
        group.join_deadline = Some(now.after(initial_delay).min(limit));
    } else {
        group.join_deadline = Some(now.after(rebalance));
    }
    group.state = GroupState::PreparingRebalance;
    try_complete_join(group, now, actions);
}

/// Ends the join phase once every member rejoined and no member id handed
/// out is still to come back (never during the initial delay).
fn try_complete_join(group: &mut Group, now: Millis, actions: &mut VecDeque<Action>) {
    assert_eq!(group.state, GroupState::PreparingRebalance);
    let all_joined = group.members.values().all(|m| m.awaiting_join.is_some());
    if group.initial_delay_limit.is_none() && all_joined && group.pending_members.is_empty() {
        complete_join(group, now, actions);
    }
}

/// Ends the join phase: members that did not rejoin are dropped, the
/// generation advances and everyone waiting gets its JoinGroup response.
fn complete_join(group: &mut Group, now: Millis, actions: &mut VecDeque<Action>) {
    assert_eq!(group.state, GroupState::PreparingRebalance);
    let late: Vec<String> = group
        .members
        .iter()
        .filter(|(_, m)| m.awaiting_join.is_none())
        .map(|(id, _)| id.clone())
        .collect();
    for id in late {
        remove_member(group, &id, actions);
    }
    group.join_deadline = None;
    group.initial_delay_limit = None;
    group.generation += 1;
    if group.members.is_empty() {
        group.state = GroupState::Empty;
        group.protocol_type = None;
        group.protocol_name = None;
        group.leader = None;
        return;
    }
    let protocol_type = group
        .members
        .values()
        .next()
        .map(|m| m.protocol_type.clone());
    group.protocol_type = protocol_type;
    group.protocol_name = Some(group.select_protocol());
    let leader_stays = group
        .leader
        .as_ref()
        .is_some_and(|l| group.members.contains_key(l));
    if !leader_stays {
        group.leader = group.members.keys().next().cloned();
    }
    group.state = GroupState::CompletingRebalance;
    let rebalance = group
        .members
        .values()
        .map(|m| m.rebalance_timeout_ms)
        .max()
        .expect("members");
    group.sync_deadline = Some(now.after(rebalance));
    let ids: Vec<String> = group.members.keys().cloned().collect();
    for id in ids {
        let response = group.join_response(&id, false);
        let member = group.members.get_mut(&id).expect("listed");
        let reply = member
            .awaiting_join
            .take()
            .expect("all remaining members rejoined");
        member.touch(now);
        actions.push_back(Action::Join { reply, response });
    }
}

/// Removes a member, answering its parked requests with UNKNOWN_MEMBER_ID.
/// The caller then runs [`members_removed`].
fn remove_member(group: &mut Group, member_id: &str, actions: &mut VecDeque<Action>) {
    let member = group.members.remove(member_id).expect("removing a member");
    if let Some(reply) = member.awaiting_join {
        actions.push_back(Action::Join {
            reply,
            response: JoinResponse::error(GroupError::UnknownMemberId, member_id.to_owned()),
        });
    }
    if let Some(reply) = member.awaiting_sync {
        actions.push_back(Action::Sync {
            reply,
            response: SyncResponse::error(GroupError::UnknownMemberId),
        });
    }
    if let Some(instance) = member.instance_id {
        let owner = group.static_members.remove(&instance);
        assert_eq!(owner.as_deref(), Some(member_id));
    }
    if group.leader.as_deref() == Some(member_id) {
        group.leader = None;
    }
}

/// After members left or expired: a formed group rebalances; a group in the
/// join phase may now have everyone it waits for.
fn members_removed(
    group: &mut Group,
    now: Millis,
    initial_delay: u32,
    actions: &mut VecDeque<Action>,
) {
    match group.state {
        GroupState::CompletingRebalance | GroupState::Stable => {
            prepare_rebalance(group, now, initial_delay, actions)
        }
        GroupState::PreparingRebalance => try_complete_join(group, now, actions),
        GroupState::Empty | GroupState::Dead => {}
    }
}

/// Moves a static member's slot to a new member id; requests parked under
/// the old id are answered FENCED_INSTANCE_ID.
fn replace_static_member(
    group: &mut Group,
    old_id: &str,
    new_id: &str,
    actions: &mut VecDeque<Action>,
) {
    let mut member = group.members.remove(old_id).expect("static member exists");
    if let Some(reply) = member.awaiting_join.take() {
        actions.push_back(Action::Join {
            reply,
            response: JoinResponse::error(GroupError::FencedInstanceId, old_id.to_owned()),
        });
    }
    if let Some(reply) = member.awaiting_sync.take() {
        actions.push_back(Action::Sync {
            reply,
            response: SyncResponse::error(GroupError::FencedInstanceId),
        });
    }
    let instance = member.instance_id.clone().expect("a static member");
    group.static_members.insert(instance, new_id.to_owned());
    if group.leader.as_deref() == Some(old_id) {
        group.leader = Some(new_id.to_owned());
    }
    group.members.insert(new_id.to_owned(), member);
}

fn expire(group: &mut Group, now: Millis, initial_delay: u32, actions: &mut VecDeque<Action>) {
    let expired: Vec<String> = group
        .members
        .iter()
        .filter(|(_, m)| m.session_deadline.is_some_and(|d| d <= now))
        .map(|(id, _)| id.clone())
        .collect();
    let pending_expired = {
        let before = group.pending_members.len();
        group.pending_members.retain(|_, deadline| *deadline > now);
        before != group.pending_members.len()
    };
    for id in &expired {
        tracing::debug!(member = %id, "group member session expired");
        remove_member(group, id, actions);
    }
    if !expired.is_empty() {
        members_removed(group, now, initial_delay, actions);
    } else if pending_expired && group.state == GroupState::PreparingRebalance {
        try_complete_join(group, now, actions);
    }
    if group.state == GroupState::PreparingRebalance
        && group.join_deadline.is_some_and(|d| d <= now)
    {
        complete_join(group, now, actions);
    }
    if group.state == GroupState::CompletingRebalance
        && group.sync_deadline.is_some_and(|d| d <= now)
    {
        // The leader (at least) never sent its assignment: drop whoever
        // did not sync and start over.
        let silent: Vec<String> = group
            .members
            .iter()
            .filter(|(_, m)| m.awaiting_sync.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in &silent {
            remove_member(group, id, actions);
        }
        members_removed(group, now, initial_delay, actions);
    }
}

#[cfg(test)]
mod tests;
