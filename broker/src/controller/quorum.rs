//! The metadata quorum's Raft group: a thin, mostly sans-IO core around
//! tikv `raft::RawNode`. Bytes in, bytes out: entries are opaque payloads
//! (the driver encodes and decodes metadata records), messages are
//! `eraftpb::Message`s for the driver to send. No sockets, no clock: the
//! driver calls [`Quorum::tick`] on its timer and [`Quorum::step`] for
//! every message received.
//!
//! The one kind of I/O here is the durable log ([`storage::DiskStorage`]):
//! [`Quorum::poll`] persists a `Ready`'s entries and hard state
//! (fdatasync) before it returns the messages that acknowledge them, as
//! raft-rs' examples do (`messages` may go before persistence,
//! `persisted_messages` only after; we return both after it). Lives on:
//! shard 0 of every node (voter or learner), owned by the driver.

pub mod storage;

use std::path::Path;

use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType,
    Message,
};
use raft::{ProgressState, RawNode, SnapshotStatus, StateRole};

pub use self::storage::{DiskStorage, StorageError, WriteFault};

/// Most bytes of entries in one append message (raft `max_size_per_msg`).
pub const MSG_BYTES_MAX: u64 = 1 << 20;
/// Most append messages in flight to one peer (raft `max_inflight_msgs`).
pub const INFLIGHT_MSGS_MAX: usize = 256;
/// Largest payload one proposal may carry: well under what the entries
/// file reads back (`storage::ENTRY_BYTES_MAX`) and what one cluster
/// frame carries (`transport::CLUSTER_FRAME_BYTES_MAX`), so a committed
/// entry always survives a restart and always reaches a follower.
pub const PROPOSAL_BYTES_MAX: usize = 16 << 20;

const _: () = assert!(PROPOSAL_BYTES_MAX * 2 <= storage::ENTRY_BYTES_MAX);

/// How the group is set up.
#[derive(Clone, Debug)]
pub struct QuorumConfig {
    /// This node's id (its `node_id`).
    pub id: u64,
    /// The voters of an empty log (`controller_quorum_voters`); a log on
    /// disk keeps its own conf state.
    pub voters: Vec<u64>,
    /// A follower campaigns after `election_tick..2 * election_tick`
    /// ticks without hearing a leader.
    pub election_tick: usize,
    /// The leader heartbeats every `heartbeat_tick` ticks.
    pub heartbeat_tick: usize,
    /// Campaign after exactly `election_tick` ticks instead of a random
    /// count in `election_tick..2 * election_tick`. raft-rs draws that
    /// count from `thread_rng`, which a deterministic simulation cannot
    /// seed; the simulation (`fjord-sim`) sets this and jitters the
    /// length of each node's ticks from its own seeded generator instead,
    /// which breaks split votes the same way. `false` in the broker.
    pub fixed_election_timeout: bool,
    /// Injected write failures of the log (see [`WriteFault`]): the
    /// driver's tests and the simulation turn it on; off in the broker.
    pub write_fault: WriteFault,
}

/// Why a proposal was not taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
    #[error("a membership change is already in flight")]
    ConfChangePending,
    #[error("proposal dropped by raft: {0}")]
    Dropped(String),
    #[error("proposal of {0} bytes exceeds {PROPOSAL_BYTES_MAX}")]
    TooLarge(usize),
}

/// One committed entry, in log order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub index: u64,
    pub term: u64,
    /// The proposed bytes; `None` for Raft's own entries (a new leader's
    /// empty entry, membership changes).
    pub payload: Option<Vec<u8>>,
}

/// A snapshot installed from the leader: the state machine restarts from
/// `data` at `index`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installed {
    pub index: u64,
    pub term: u64,
    pub data: Vec<u8>,
}

/// What one [`Quorum::poll`] produced, persisted already.
#[derive(Debug, Default)]
pub struct Output {
    /// To send to their `to`.
    pub messages: Vec<Message>,
    /// Apply before `committed` (it replaces the state machine).
    pub snapshot: Option<Installed>,
    pub committed: Vec<Committed>,
}

/// The Raft group of the metadata log on this node.
pub struct Quorum {
    raw: RawNode<DiskStorage>,
    /// The leader last reported (for logging changes).
    leader_seen: u64,
    /// A membership change was applied since the last snapshot: the next
    /// snapshot must carry it (a new learner refuses one without itself).
    snapshot_wanted: bool,
    /// Leader only: ticks each peer has spent in raft's Snapshot state
    /// (a snapshot sent, no answer yet). See [`Quorum::tick`].
    snapshot_ticks: std::collections::BTreeMap<u64, usize>,
    /// Ticks after which a snapshot send counts as lost.
    snapshot_timeout_ticks: usize,
}

impl std::fmt::Debug for Quorum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quorum")
            .field("id", &self.raw.raft.id)
            .field("term", &self.raw.raft.term)
            .field("leader", &self.raw.raft.leader_id)
            .finish()
    }
}

impl Quorum {
    /// Opens the log under `dir` and starts the node as a follower (a
    /// lone voter campaigns at once: no election timeout to wait out).
    pub fn open(dir: &Path, config: &QuorumConfig) -> Result<Quorum, StorageError> {
        let mut storage = DiskStorage::open(dir, &config.voters)?;
        storage.set_write_fault(config.write_fault.clone());
        // Entries up to the conf state's index need not be applied again
        // for membership; the driver skips records it folded at recovery.
        let applied = storage.conf_index().min(storage.hard_state().commit);
        let raft_config = raft::Config {
            id: config.id,
            election_tick: config.election_tick,
            heartbeat_tick: config.heartbeat_tick,
            // `min..max` of one value: raft-rs' draw has one outcome.
            min_election_tick: if config.fixed_election_timeout {
                config.election_tick
            } else {
                0
            },
            max_election_tick: if config.fixed_election_timeout {
                config.election_tick + 1
            } else {
                0
            },
            applied,
            max_size_per_msg: MSG_BYTES_MAX,
            max_inflight_msgs: INFLIGHT_MSGS_MAX,
            check_quorum: true,
            pre_vote: true,
            ..raft::Config::default()
        };
        let invalid = |e: raft::Error| StorageError::Corrupt {
            path: dir.to_path_buf(),
            reason: format!("raft refused the log or the config: {e}"),
        };
        raft_config.validate().map_err(invalid)?;
        let lone = storage.conf_state().voters == [config.id];
        let logger = slog::Logger::root(TracingDrain, slog::o!());
        let mut raw = RawNode::new(&raft_config, storage, &logger).map_err(invalid)?;
        if lone {
            // A single voter needs nobody's vote: lead now.
            let _ = raw.campaign();
        }
        Ok(Quorum {
            raw,
            leader_seen: 0,
            snapshot_wanted: false,
            snapshot_ticks: std::collections::BTreeMap::new(),
            snapshot_timeout_ticks: 2 * config.election_tick,
        })
    }

    pub fn id(&self) -> u64 {
        self.raw.raft.id
    }

    /// One Raft tick (the driver's timer). On the leader, a peer that
    /// stayed in raft's Snapshot state for `2 * election_tick` ticks is
    /// reported as a failed snapshot send, so the leader sends it again.
    ///
    /// raft-rs pauses a peer once a snapshot is sent to it and only
    /// resumes on the peer's answer or on `report_snapshot`; a snapshot
    /// message lost on the way (a connection reset, a cut link, a peer
    /// that crashed before installing it) left the peer without the log
    /// for as long as this leader lived. Found by the simulation (seed
    /// 1282, a learner restarted while it was being added).
    pub fn tick(&mut self) {
        self.raw.tick();
        if !self.is_leader() {
            self.snapshot_ticks.clear();
            return;
        }
        let waiting: Vec<u64> = self
            .raw
            .raft
            .prs()
            .iter()
            .filter(|(_, progress)| progress.state == ProgressState::Snapshot)
            .map(|(id, _)| *id)
            .collect();
        self.snapshot_ticks.retain(|id, _| waiting.contains(id));
        for id in waiting {
            let ticks = self.snapshot_ticks.entry(id).or_default();
            *ticks += 1;
            if *ticks >= self.snapshot_timeout_ticks {
                *ticks = 0;
                tracing::info!(
                    node = id,
                    "metadata quorum: no answer to the snapshot sent; sending it again"
                );
                self.raw.report_snapshot(id, SnapshotStatus::Failure);
            }
        }
    }

    /// A message from a peer. Messages Raft refuses (from an unknown
    /// peer, stale) are dropped: Raft tolerates loss.
    pub fn step(&mut self, message: Message) {
        if message.to != self.id() {
            // A peer that has this node's address under another id: a
            // configuration error, not something to act on.
            tracing::warn!(
                to = message.to,
                from = message.from,
                node = self.id(),
                "metadata quorum: message for another node id dropped (check controller_quorum_voters)"
            );
            return;
        }
        if let Err(error) = self.raw.step(message) {
            tracing::debug!(%error, "metadata quorum: message dropped");
        }
    }

    /// Starts an election now.
    pub fn campaign(&mut self) {
        let _ = self.raw.campaign();
    }

    /// Proposes `payload` as one entry; on success its (term, index). It
    /// is committed with that payload only if the entry committed at
    /// `index` has that `term`.
    pub fn propose(&mut self, payload: Vec<u8>) -> Result<(u64, u64), ProposeError> {
        if !self.is_leader() {
            return Err(ProposeError::NotLeader {
                leader: self.leader(),
            });
        }
        assert!(!payload.is_empty(), "empty payloads are Raft's own");
        if payload.len() > PROPOSAL_BYTES_MAX {
            return Err(ProposeError::TooLarge(payload.len()));
        }
        self.raw
            .propose(Vec::new(), payload)
            .map_err(|e| ProposeError::Dropped(e.to_string()))?;
        Ok((self.raw.raft.term, self.raw.raft.raft_log.last_index()))
    }

    /// Adds `node` as a learner (it follows the committed log, does not
    /// vote). A no-op when it is already a member.
    pub fn add_learner(&mut self, node: u64) -> Result<(), ProposeError> {
        let conf = self.raw.store().conf_state();
        if conf.voters.contains(&node) || conf.learners.contains(&node) {
            return Ok(());
        }
        if !self.is_leader() {
            return Err(ProposeError::NotLeader {
                leader: self.leader(),
            });
        }
        if self.raw.raft.has_pending_conf() {
            return Err(ProposeError::ConfChangePending);
        }
        let mut change = ConfChangeSingle::default();
        change.set_change_type(ConfChangeType::AddLearnerNode);
        change.node_id = node;
        let mut cc = ConfChangeV2::default();
        cc.set_changes(vec![change].into());
        self.raw
            .propose_conf_change(Vec::new(), cc)
            .map_err(|e| ProposeError::Dropped(e.to_string()))?;
        tracing::info!(node, "metadata quorum: adding a learner");
        Ok(())
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// The leader as this node knows it.
    pub fn leader(&self) -> Option<u64> {
        match self.raw.raft.leader_id {
            raft::INVALID_ID => None,
            id => Some(id),
        }
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    /// The term of the entry at `index`, if stored (or the snapshot's).
    pub fn term_at(&self, index: u64) -> Option<u64> {
        self.raw.raft.raft_log.term(index).ok()
    }

    /// Whether this node leads and the state machine applied up to
    /// `applied` has every entry of earlier terms (the leader's own empty
    /// entry of this term is applied): only then may it handle commands.
    pub fn leader_ready(&self, applied: u64) -> bool {
        self.is_leader() && self.term_at(applied) == Some(self.term())
    }

    pub fn conf_state(&self) -> &ConfState {
        self.raw.store().conf_state()
    }

    pub fn storage(&self) -> &DiskStorage {
        self.raw.store()
    }

    /// Tells Raft that sending to `node` failed (it probes again later
    /// instead of streaming appends into the void).
    pub fn report_unreachable(&mut self, node: u64) {
        self.raw.report_unreachable(node);
    }

    /// Snapshots the state machine at `index` (applied) as `data` and
    /// compacts the log to it.
    pub fn snapshot(&mut self, index: u64, data: Vec<u8>) -> Result<(), StorageError> {
        assert!(
            index <= self.raw.raft.raft_log.applied,
            "snapshot past applied"
        );
        self.snapshot_wanted = false;
        self.raw.mut_store().compact(index, data)
    }

    /// Whether the driver should snapshot now (after applying the last
    /// [`Output`]): a membership change was applied, and a learner it
    /// added can only start from a snapshot that names it.
    pub fn snapshot_wanted(&self) -> bool {
        self.snapshot_wanted
    }

    /// Handles Raft's pending `Ready`, if any: persists its snapshot,
    /// entries and hard state (fdatasynced), applies membership changes,
    /// and returns the messages to send (safe to send now: what they
    /// acknowledge is durable) and the committed entries to apply, in
    /// order.
    ///
    /// A storage error returns nothing of the `Ready`: no message (what
    /// they vote for or acknowledge may not be durable), no committed
    /// entry. Raft's memory (term, vote, log) and the storage's may then
    /// be ahead of the files, so this `Quorum` must not be used again:
    /// its owner drops it and [`Quorum::open`]s the log again (the
    /// driver's reopen after a backoff).
    pub fn poll(&mut self) -> Result<Output, StorageError> {
        let mut out = Output::default();
        if !self.raw.has_ready() {
            return Ok(out);
        }
        let mut ready = self.raw.ready();
        if let Some(soft) = ready.ss() {
            self.note_leader(soft.leader_id, soft.raft_state);
        }
        out.messages = ready.take_messages();
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            self.raw.mut_store().apply_snapshot(&snapshot)?;
            let meta = snapshot.get_metadata();
            tracing::info!(
                index = meta.index,
                term = meta.term,
                "metadata quorum: installed a snapshot from the leader"
            );
            out.snapshot = Some(Installed {
                index: meta.index,
                term: meta.term,
                data: snapshot.data.to_vec(),
            });
        }
        let committed = ready.take_committed_entries();
        self.apply(committed, &mut out)?;
        self.raw.mut_store().append(ready.entries())?;
        if let Some(hard_state) = ready.hs() {
            self.raw.mut_store().set_hard_state(hard_state)?;
        }
        out.messages.extend(ready.take_persisted_messages());
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit)?;
        }
        out.messages.extend(light.take_messages());
        self.apply(light.take_committed_entries(), &mut out)?;
        self.raw.advance_apply();
        Ok(out)
    }

    fn note_leader(&mut self, leader: u64, role: StateRole) {
        if leader == self.leader_seen {
            return;
        }
        self.leader_seen = leader;
        if leader == raft::INVALID_ID {
            tracing::info!(
                node = self.id(),
                term = self.term(),
                ?role,
                "metadata quorum: no leader"
            );
        } else {
            tracing::info!(
                node = self.id(),
                leader,
                term = self.term(),
                "metadata quorum: new leader"
            );
        }
    }

    fn apply(&mut self, entries: Vec<Entry>, out: &mut Output) -> Result<(), StorageError> {
        for entry in entries {
            let payload = match entry.get_entry_type() {
                EntryType::EntryNormal if entry.data.is_empty() => None,
                EntryType::EntryNormal => Some(entry.data.to_vec()),
                EntryType::EntryConfChange => {
                    let cc = ConfChange::parse_from_bytes(&entry.data);
                    self.apply_conf_change(entry.index, cc.map(v1_to_v2))?;
                    None
                }
                EntryType::EntryConfChangeV2 => {
                    let cc = ConfChangeV2::parse_from_bytes(&entry.data);
                    self.apply_conf_change(entry.index, cc)?;
                    None
                }
            };
            out.committed.push(Committed {
                index: entry.index,
                term: entry.term,
                payload,
            });
        }
        Ok(())
    }

    fn apply_conf_change(
        &mut self,
        index: u64,
        cc: protobuf::ProtobufResult<ConfChangeV2>,
    ) -> Result<(), StorageError> {
        let cc = match cc {
            Ok(cc) => cc,
            Err(error) => {
                tracing::error!(index, %error, "metadata quorum: undecodable membership change skipped");
                return Ok(());
            }
        };
        match self.raw.apply_conf_change(&cc) {
            Ok(conf) => {
                tracing::info!(
                    index,
                    voters = ?conf.voters,
                    learners = ?conf.learners,
                    "metadata quorum: membership changed"
                );
                self.snapshot_wanted = true;
                self.raw.mut_store().set_conf_state(conf, index)
            }
            Err(error) => {
                tracing::warn!(index, %error, "metadata quorum: membership change refused");
                Ok(())
            }
        }
    }
}

/// A membership change of the older kind as a one-change V2 (this
/// quorum proposes only V2; raft-rs may write V1 itself).
fn v1_to_v2(cc: ConfChange) -> ConfChangeV2 {
    let mut change = ConfChangeSingle::default();
    change.set_change_type(cc.get_change_type());
    change.node_id = cc.node_id;
    let mut v2 = ConfChangeV2::default();
    v2.set_changes(vec![change].into());
    v2
}

/// raft-rs logs through `slog`; this drain hands its records to
/// `tracing` (target `raft`), so one subscriber shows both.
struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(
        &self,
        record: &slog::Record<'_>,
        _values: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
        let message = record.msg();
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", "{message}")
            }
            slog::Level::Warning => tracing::warn!(target: "raft", "{message}"),
            slog::Level::Info | slog::Level::Debug => {
                tracing::debug!(target: "raft", "{message}")
            }
            slog::Level::Trace => tracing::trace!(target: "raft", "{message}"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
