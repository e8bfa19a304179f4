//! One simulated node's side of the metadata quorum: the real Raft group
//! ([`Quorum`], tikv `raft`, its log in a real [`DiskStorage`] directory
//! on tmpfs) and the real [`ControllerState`], driven the way the glommio
//! driver (`broker/src/controller/driver.rs`) and the broker lifecycle
//! (`driver/lifecycle.rs`) drive them, as synchronous steps:
//!
//! - the pump: a Raft tick every `tick_ms`, every `Ready` handled at once
//!   (persist, send, apply committed entries, snapshot every
//!   [`SNAPSHOT_EVERY_ENTRIES`]);
//! - the controller loop: while this node is the active controller, one
//!   command at a time (`handle` → propose → committed and applied →
//!   answered), the periodic `tick`, learners added;
//! - submits: a command of this node (its registration and heartbeats,
//!   its data plane's AlterPartition, a client's admin request) goes to
//!   the active controller, here or forwarded, retried as leadership moves
//!   until [`SUBMIT_DEADLINE_MS`] (each forward attempt bounded by
//!   [`FORWARD_ATTEMPT_MS`], dropped at once when the quorum knows another
//!   leader);
//! - the lifecycle: register with a new incarnation per start, wait until
//!   the registration is applied here, heartbeat every
//!   `heartbeat_interval_ms`, register again when the controller forgot
//!   this incarnation; the broker lease (`lifecycle::BrokerLease`, gap B):
//!   an acknowledged heartbeat grants it until its send time + the session
//!   timeout − `lease_margin_ms` once this node applied the answer's index,
//!   a fenced answer ends it (the world hands [`SimController::lease_holds`]
//!   to the node's data plane and group coordinators before every call).
//!   One difference: the broker's lifecycle waits (up to an interval) for
//!   the answer's index before its next heartbeat; here the next one goes
//!   out on schedule and the grant waits beside it.
//!
//! - a metadata-log write failure (the world's full disk): as the driver
//!   does, nothing of the failed `Ready` is sent or applied, the Raft
//!   group is dropped, submits go to the other voters, and after a
//!   backoff (100 ms doubling up to [`LOG_REOPEN_BACKOFF_MAX_MS`]) the log
//!   is opened again from disk and the node rejoins as a follower.
//!
//! Commands and answers cross the simulated network encoded with the
//! broker's own codec (`ControllerCommand::encode`, `Answer::encode`).
//! Raft messages travel as values (raft-rs' protobuf codec is not ours to
//! test).

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use fjord_broker::controller::commands::{Answer, ControllerCommand, ControllerReply};
use fjord_broker::controller::driver::lifecycle::{BrokerLease, LeaseChange, LeaseRule};
use fjord_broker::controller::driver::{
    heartbeat_index, COMMANDS_QUEUED_MAX, COMMIT_TIMEOUT_MS, ELECTION_TICKS, FORWARD_ATTEMPT_MS,
    HEARTBEAT_TICKS, LOG_REOPEN_BACKOFF_MIN_MS, SNAPSHOT_EVERY_ENTRIES, SUBMIT_DEADLINE_MS,
};
use fjord_broker::controller::fold::{decode_snapshot, encode_snapshot};
use fjord_broker::controller::quorum::{DiskStorage, Output, Quorum, QuorumConfig, WriteFault};
use fjord_broker::controller::records::{decode_batch, encode_batch, MetadataRecord};
use fjord_broker::controller::state::{ControllerConfig, ControllerState, SeededIds};
use fjord_broker::metadata::image::{BrokerEndpoints, Endpoint, MetadataImage};
use fjord_schema::NodeId;
use raft::eraftpb::Message;

use crate::rng::SimRng;

/// Between retries of a submit while leadership moves (the driver's
/// `SUBMIT_RETRY_MS`).
const SUBMIT_RETRY_MS: u64 = 100;
/// The broker's default `controller_log_reopen_backoff_max_ms`.
pub const LOG_REOPEN_BACKOFF_MAX_MS: u64 = 5_000;

/// A message of the metadata quorum between two nodes.
#[derive(Debug, Clone)]
pub enum CtlMsg {
    Raft(Vec<Message>),
    /// A forwarded command (encoded), answered with [`CtlMsg::Answer`]
    /// carrying the same `req`.
    Command {
        req: u64,
        body: Bytes,
    },
    /// The encoded [`Answer`], or why the receiver did not run it.
    Answer {
        req: u64,
        result: Result<Bytes, String>,
    },
}

/// Who submitted a command, told its outcome by [`CtlOut::Answered`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The node's registration and heartbeats (handled here).
    Lifecycle,
    /// The node's data plane (an AlterPartition, by its id there).
    Data(u64),
    /// A client's admin request, by request id.
    Client(u64),
}

/// Why a submitted command has no answer (the broker's
/// `ControllerUnavailable`, simplified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// No answer before [`SUBMIT_DEADLINE_MS`]: it may still commit.
    Timeout,
    /// The node's metadata log failed.
    Failed,
}

/// What a step produced for the world.
#[derive(Debug)]
pub enum CtlOut {
    Send {
        to: NodeId,
        msg: CtlMsg,
    },
    Answered {
        origin: Origin,
        command: ControllerCommand,
        result: Result<Answer, Unavailable>,
    },
}

/// A job for the active controller: a command and whom to answer.
#[derive(Debug)]
enum ReplyTo {
    /// A submit of this node.
    Local(u64),
    /// A forwarded command: answer `req` to `node`.
    Remote { node: NodeId, req: u64 },
}

#[derive(Debug)]
struct Job {
    command: ControllerCommand,
    reply: ReplyTo,
}

/// The active controller's proposal in flight: committed at `index` in
/// `term`, or failed.
#[derive(Debug)]
struct Running {
    index: u64,
    term: u64,
    deadline_ms: u64,
    /// `None`: the periodic tick's or the bootstrap's records.
    job: Option<(Job, ControllerReply)>,
}

#[derive(Debug)]
enum Attempt {
    /// Not sent; try at this time.
    Idle { at_ms: u64 },
    /// Queued on this node's own controller.
    Local,
    /// Forwarded to `leader` until `until_ms`.
    Remote { leader: u64, until_ms: u64 },
}

#[derive(Debug)]
struct Submit {
    command: ControllerCommand,
    origin: Origin,
    deadline_ms: u64,
    attempts: usize,
    attempt: Attempt,
}

/// The lifecycle's phase (`lifecycle.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Registration to send at `at_ms` (or in flight).
    Register { at_ms: u64, sent: bool },
    /// Registered at `index`; heartbeats start once it is applied here.
    WaitApplied { index: u64 },
    /// Registered: a heartbeat at `at_ms` (or in flight).
    Beat { at_ms: u64, sent: bool },
}

/// Settings of one node's controller side.
#[derive(Debug, Clone)]
pub struct CtlConfig {
    pub node: NodeId,
    /// The voters of the quorum (the rest of the nodes are learners).
    pub voters: Vec<NodeId>,
    pub controller: ControllerConfig,
    pub tick_ms: u64,
    pub heartbeat_interval_ms: u64,
    /// The node's metadata log fails its writes while this is on (the
    /// world's full disk; kept by the world across restarts).
    pub metadata_write_fault: WriteFault,
    /// `broker_lease_margin_ms`.
    pub lease_margin_ms: u64,
}

/// One node's controller side. Lives in: the world's node, dropped on a
/// crash (its Raft log directory survives), opened again on restart.
#[derive(Debug)]
pub struct SimController {
    config: CtlConfig,
    dir: PathBuf,
    quorum: Quorum,
    state: ControllerState,
    applied: u64,
    snapshot_index: u64,
    log_has_data: bool,
    /// The term this node last became the active controller in (0: not).
    controller_term: u64,
    bootstrapping: bool,
    /// Out of the quorum: a write of the log failed (`reopen_at_ms` set:
    /// opened again then) or a snapshot did not decode (for good).
    failed: bool,
    /// When the failed log is opened again.
    reopen_at_ms: Option<u64>,
    /// The wait before the next reopen (doubles per failure).
    reopen_backoff_ms: u64,
    /// When the log was last opened again after a failure.
    reopened_ms: Option<u64>,
    /// Write failures and reopens (the world's counters).
    pub log_write_failures: u64,
    pub log_reopens: u64,
    next_tick_ms: u64,
    next_controller_tick_ms: u64,
    jobs: VecDeque<Job>,
    running: Option<Running>,
    submits: BTreeMap<u64, Submit>,
    next_submit: u64,
    incarnation: u64,
    phase: Phase,
    /// Seed of the ids this node's `ControllerState` draws (topic ids,
    /// the cluster id), fixed per start.
    ids_seed: u64,
    /// The time of the step being run (set by `poll` and `on_message`).
    now_ms: u64,
    /// Draws the length of each Raft tick: this node's rate (100–160 % of
    /// `tick_ms`, fixed per start) with ±20 % per tick. It stands in for
    /// raft-rs' randomized election timeout (see
    /// `QuorumConfig::fixed_election_timeout`).
    ticks: SimRng,
    tick_rate_pct: u64,
    /// See [`Self::serving`].
    serving: bool,
    /// This start's broker lease (the lifecycle's), on this node's clock.
    lease: BrokerLease,
    /// When the heartbeat in flight was sent.
    beat_sent_ms: u64,
    /// An acknowledgement whose index this node has not applied yet, and
    /// when it is dropped (one heartbeat interval after its answer).
    lease_pending: Option<(LeaseChange, u64)>,
}

fn quorum_config(config: &CtlConfig) -> QuorumConfig {
    QuorumConfig {
        id: u64::from(config.node.0),
        voters: config.voters.iter().map(|v| u64::from(v.0)).collect(),
        election_tick: ELECTION_TICKS,
        heartbeat_tick: HEARTBEAT_TICKS,
        fixed_election_timeout: true,
        write_fault: config.metadata_write_fault.clone(),
    }
}

/// The endpoints a simulated broker registers (never dialled: the world
/// routes by node id).
pub fn sim_endpoints(node: NodeId) -> BrokerEndpoints {
    let endpoint = |port: u16| {
        Some(Endpoint {
            host: format!("10.77.0.{}", node.0),
            port,
        })
    };
    BrokerEndpoints {
        native: endpoint(9090),
        kafka: endpoint(9092),
        cluster: endpoint(9093),
    }
}

impl SimController {
    /// Opens (recovers) the node's metadata log under `dir` (as
    /// `driver::recover` + `ControllerHandle::start` do) at `now_ms`.
    pub fn open(
        config: CtlConfig,
        dir: &Path,
        now_ms: u64,
        rng: &mut SimRng,
    ) -> Result<SimController, String> {
        let quorum_config = quorum_config(&config);
        let ids_seed = rng.next_u64();
        // Recovery: the snapshot and the entries known committed.
        let (state, applied) = {
            let storage = DiskStorage::open(dir, &quorum_config.voters)
                .map_err(|e| format!("metadata log: {e}"))?;
            let snapshot = storage.latest_snapshot();
            let image = if snapshot.get_metadata().index == 0 {
                MetadataImage::default()
            } else {
                decode_snapshot(&snapshot.data, &config.controller.defaults)
                    .map_err(|e| format!("snapshot does not decode: {e}"))?
            };
            let mut state = ControllerState::with_ids(
                config.controller.clone(),
                Arc::new(image),
                Box::new(SeededIds::new(ids_seed)),
            );
            let mut applied = snapshot.get_metadata().index;
            for entry in storage.committed_entries() {
                if entry.get_entry_type() == raft::eraftpb::EntryType::EntryNormal
                    && !entry.data.is_empty()
                {
                    replay_entry(&mut state, &entry.data);
                }
                applied = entry.index;
            }
            (state, applied)
        };
        let quorum =
            Quorum::open(dir, &quorum_config).map_err(|e| format!("metadata quorum: {e}"))?;
        let snapshot_index = quorum.storage().latest_snapshot().get_metadata().index;
        let log_has_data = snapshot_index > 0
            || quorum.storage().committed_entries().any(|e| {
                e.get_entry_type() == raft::eraftpb::EntryType::EntryNormal && !e.data.is_empty()
            });
        let lease = BrokerLease::new();
        if sole_voter(&config) {
            lease.hold_for_good();
        }
        Ok(SimController {
            incarnation: rng.next_u64().max(1),
            phase: Phase::Register {
                at_ms: now_ms,
                sent: false,
            },
            next_tick_ms: now_ms + config.tick_ms,
            next_controller_tick_ms: now_ms + config.tick_ms,
            config,
            dir: dir.to_path_buf(),
            quorum,
            state,
            applied,
            snapshot_index,
            log_has_data,
            controller_term: 0,
            bootstrapping: false,
            failed: false,
            reopen_at_ms: None,
            reopen_backoff_ms: LOG_REOPEN_BACKOFF_MIN_MS,
            reopened_ms: None,
            log_write_failures: 0,
            log_reopens: 0,
            jobs: VecDeque::new(),
            running: None,
            submits: BTreeMap::new(),
            next_submit: 1,
            ids_seed,
            now_ms,
            tick_rate_pct: rng.range(100, 160),
            ticks: rng.fork("ticks"),
            serving: false,
            lease,
            beat_sent_ms: 0,
            lease_pending: None,
        })
    }

    pub fn node(&self) -> NodeId {
        self.config.node
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The image as applied on this node.
    pub fn image(&self) -> &Arc<MetadataImage> {
        self.state.image()
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The Raft leader this node knows.
    pub fn leader(&self) -> Option<u64> {
        self.quorum.leader()
    }

    pub fn term(&self) -> u64 {
        self.quorum.term()
    }

    pub fn applied(&self) -> u64 {
        self.applied
    }

    pub fn is_active_controller(&self) -> bool {
        self.controller_term != 0 && self.quorum.is_leader()
    }

    /// Whether this node serves (clients, replication): set once this
    /// start's registration is applied here and the image shows it
    /// unfenced — the broker's `ShardService::wait_unfenced`, which gates
    /// its listeners, its replica fetchers and its replication service.
    /// Until then a node restarted with a stale image must not act on it
    /// (it would lead at an old epoch). Stays set for this start.
    pub fn serving(&mut self) -> bool {
        if !self.serving && matches!(self.phase, Phase::Beat { .. }) && self.unfenced() {
            self.serving = true;
        }
        self.serving
    }

    /// Whether this node's broker is registered and unfenced in its own
    /// image (it serves only then, as the broker's shards do).
    pub fn unfenced(&self) -> bool {
        self.state
            .image()
            .broker(self.config.node)
            .is_some_and(|b| b.incarnation == self.incarnation && !b.fenced)
    }

    /// Whether this node's broker lease holds at `now_ms` (its clock).
    pub fn lease_holds(&self, now_ms: u64) -> bool {
        self.lease.holds_at(now_ms)
    }

    fn lease_rule(&self) -> LeaseRule {
        LeaseRule {
            session_timeout_ms: self.config.controller.session_timeout_ms,
            margin_ms: self.config.lease_margin_ms,
        }
    }

    /// When [`Self::poll`] next has timed work.
    pub fn next_wakeup(&self) -> u64 {
        let mut at = self.next_tick_ms.min(self.next_controller_tick_ms);
        for submit in self.submits.values() {
            at = at.min(submit.deadline_ms);
            match submit.attempt {
                Attempt::Idle { at_ms } => at = at.min(at_ms),
                Attempt::Remote { until_ms, .. } => at = at.min(until_ms),
                Attempt::Local => {}
            }
        }
        match self.phase {
            Phase::Register { at_ms, sent: false } | Phase::Beat { at_ms, sent: false } => {
                at = at.min(at_ms)
            }
            _ => {}
        }
        if let Some(running) = &self.running {
            at = at.min(running.deadline_ms);
        }
        if let Some(reopen) = self.reopen_at_ms {
            at = at.min(reopen);
        }
        at
    }

    /// Submits `command` to the active controller (here or forwarded);
    /// answered with [`CtlOut::Answered`] for `origin`.
    pub fn submit(&mut self, command: ControllerCommand, origin: Origin, now_ms: u64) {
        let id = self.next_submit;
        self.next_submit += 1;
        self.submits.insert(
            id,
            Submit {
                command,
                origin,
                deadline_ms: now_ms + SUBMIT_DEADLINE_MS,
                attempts: 0,
                attempt: Attempt::Idle { at_ms: now_ms },
            },
        );
    }

    /// A message from `from`.
    pub fn on_message(&mut self, from: NodeId, msg: CtlMsg, now_ms: u64, out: &mut Vec<CtlOut>) {
        self.now_ms = now_ms;
        match msg {
            CtlMsg::Raft(messages) => {
                if self.failed {
                    return;
                }
                for message in messages {
                    self.quorum.step(message);
                }
            }
            CtlMsg::Command { req, body } => {
                let command = match ControllerCommand::decode(&body) {
                    Ok(command) => command,
                    Err(error) => {
                        out.push(CtlOut::Send {
                            to: from,
                            msg: CtlMsg::Answer {
                                req,
                                result: Err(error.to_string()),
                            },
                        });
                        return;
                    }
                };
                let me = u64::from(self.config.node.0);
                if self.failed
                    || self.quorum.leader() != Some(me)
                    || self.jobs.len() >= COMMANDS_QUEUED_MAX
                {
                    out.push(CtlOut::Send {
                        to: from,
                        msg: CtlMsg::Answer {
                            req,
                            result: Err(format!(
                                "not the controller (leader: {:?})",
                                self.quorum.leader()
                            )),
                        },
                    });
                    return;
                }
                self.jobs.push_back(Job {
                    command,
                    reply: ReplyTo::Remote { node: from, req },
                });
            }
            CtlMsg::Answer { req, result } => {
                let Some(submit) = self.submits.get_mut(&req) else {
                    return; // answered or expired already
                };
                let Attempt::Remote { leader, .. } = submit.attempt else {
                    return; // a late answer to an abandoned attempt
                };
                if leader != u64::from(from.0) {
                    return;
                }
                let answer =
                    result.and_then(|bytes| Answer::decode(&bytes).map_err(|e| e.to_string()));
                match answer {
                    Ok(answer) => self.answered(req, Ok(answer), out),
                    Err(_) => {
                        submit.attempt = Attempt::Idle {
                            at_ms: now_ms + SUBMIT_RETRY_MS,
                        }
                    }
                }
            }
        }
        self.process_ready(out);
    }

    /// Runs everything due at `now_ms`.
    pub fn poll(&mut self, now_ms: u64, out: &mut Vec<CtlOut>) {
        self.now_ms = now_ms;
        if self.reopen_at_ms.is_some_and(|at| now_ms >= at) {
            self.reopen(now_ms);
        }
        while now_ms >= self.next_tick_ms {
            if !self.failed {
                self.quorum.tick();
            }
            let tick = self.config.tick_ms * self.tick_rate_pct / 100;
            self.next_tick_ms += self.ticks.range(tick * 4 / 5, tick * 6 / 5).max(1);
        }
        self.process_ready(out);
        self.controller_loop(now_ms, out);
        self.process_ready(out);
        self.lifecycle(now_ms);
        self.drive_submits(now_ms, out);
        self.process_ready(out);
    }

    fn process_ready(&mut self, out: &mut Vec<CtlOut>) {
        loop {
            if self.failed {
                return;
            }
            let polled = match self.quorum.poll() {
                Ok(polled) => polled,
                Err(error) => {
                    tracing::info!(node = self.config.node.0, %error, "metadata log failed");
                    self.log_write_failed(out);
                    return;
                }
            };
            let idle = polled.messages.is_empty()
                && polled.committed.is_empty()
                && polled.snapshot.is_none();
            self.send_raft(&polled.messages, out);
            self.apply(polled, out);
            self.check_leadership(out);
            if idle {
                return;
            }
        }
    }

    /// The driver's `log_write_failed`: out of the quorum until
    /// [`Self::reopen`] at `reopen_at_ms`.
    fn log_write_failed(&mut self, out: &mut Vec<CtlOut>) {
        let max = LOG_REOPEN_BACKOFF_MAX_MS;
        self.reopen_backoff_ms = match self.reopened_ms {
            Some(at) if self.now_ms.saturating_sub(at) < max => {
                (self.reopen_backoff_ms * 2).min(max)
            }
            _ => LOG_REOPEN_BACKOFF_MIN_MS,
        };
        self.reopen_at_ms = Some(self.now_ms + self.reopen_backoff_ms);
        self.log_write_failures += 1;
        self.failed = true;
        self.step_down(out);
    }

    /// No longer the controller (or never was, now): the command running
    /// and the queued ones fail (they may still commit: never a wrong
    /// success), and the controller state follows.
    fn step_down(&mut self, out: &mut Vec<CtlOut>) {
        self.fail_running(out);
        for job in std::mem::take(&mut self.jobs) {
            self.reply(job, Err("not the controller".to_owned()), out);
        }
        if self.controller_term != 0 {
            self.controller_term = 0;
            self.state.become_follower();
        }
    }

    /// The driver's `reopen`: the log opened again from disk as at
    /// startup; the state keeps what it applied, takes a snapshot on disk
    /// past it, and folds the entries on disk known committed past it.
    fn reopen(&mut self, now_ms: u64) {
        self.reopen_at_ms = None;
        let quorum = match Quorum::open(&self.dir, &quorum_config(&self.config)) {
            Ok(quorum) => quorum,
            Err(error) => {
                tracing::info!(node = self.config.node.0, %error, "metadata log: reopen failed");
                self.reopen_backoff_ms =
                    (self.reopen_backoff_ms * 2).min(LOG_REOPEN_BACKOFF_MAX_MS);
                self.reopen_at_ms = Some(now_ms + self.reopen_backoff_ms);
                return;
            }
        };
        let snapshot = quorum.storage().latest_snapshot();
        let snapshot_index = snapshot.get_metadata().index;
        if snapshot_index > self.applied {
            match decode_snapshot(&snapshot.data, &self.config.controller.defaults) {
                Ok(image) => {
                    self.state = ControllerState::with_ids(
                        self.config.controller.clone(),
                        Arc::new(image),
                        Box::new(SeededIds::new(self.ids_seed ^ snapshot_index)),
                    );
                    self.applied = snapshot_index;
                    self.log_has_data = true;
                }
                Err(error) => {
                    tracing::error!(%error, "metadata snapshot on disk does not decode");
                    return;
                }
            }
        }
        self.snapshot_index = snapshot_index;
        for entry in quorum.storage().committed_entries() {
            if entry.get_entry_type() == raft::eraftpb::EntryType::EntryNormal
                && !entry.data.is_empty()
            {
                self.log_has_data = true;
                if entry.index > self.applied {
                    replay_entry(&mut self.state, &entry.data);
                }
            }
            self.applied = self.applied.max(entry.index);
        }
        self.quorum = quorum;
        self.controller_term = 0;
        self.failed = false;
        self.reopened_ms = Some(now_ms);
        self.log_reopens += 1;
        tracing::info!(
            node = self.config.node.0,
            t = now_ms,
            "metadata log opened again"
        );
    }

    fn send_raft(&mut self, messages: &[Message], out: &mut Vec<CtlOut>) {
        let mut by_peer: BTreeMap<u64, Vec<Message>> = BTreeMap::new();
        for message in messages {
            by_peer.entry(message.to).or_default().push(message.clone());
        }
        for (to, batch) in by_peer {
            out.push(CtlOut::Send {
                to: NodeId(to as u32),
                msg: CtlMsg::Raft(batch),
            });
        }
    }

    fn apply(&mut self, polled: Output, out: &mut Vec<CtlOut>) {
        if let Some(installed) = polled.snapshot {
            match decode_snapshot(&installed.data, &self.config.controller.defaults) {
                Ok(image) => {
                    self.state = ControllerState::with_ids(
                        self.config.controller.clone(),
                        Arc::new(image),
                        Box::new(SeededIds::new(self.ids_seed ^ installed.index)),
                    );
                    self.applied = installed.index;
                    self.snapshot_index = installed.index;
                    self.log_has_data = true;
                    self.fail_running(out);
                }
                Err(error) => {
                    tracing::error!(%error, "metadata snapshot does not decode");
                    self.failed = true;
                    return;
                }
            }
        }
        for committed in polled.committed {
            if committed.index <= self.applied {
                continue;
            }
            if let Some(payload) = &committed.payload {
                replay_entry(&mut self.state, payload);
                self.log_has_data = true;
            }
            self.applied = committed.index;
            let done = self
                .running
                .as_ref()
                .is_some_and(|r| r.index == committed.index);
            if done {
                let running = self.running.take().expect("checked above");
                let ok = running.term == committed.term;
                if let Some((job, reply)) = running.job {
                    let result = if ok {
                        Ok(Answer {
                            reply,
                            index: committed.index,
                        })
                    } else {
                        Err("not committed: leadership".to_owned())
                    };
                    self.reply(job, result, out);
                }
            }
        }
        let wanted = self.quorum.snapshot_wanted();
        if self.applied > self.snapshot_index
            && (wanted || self.applied - self.snapshot_index >= SNAPSHOT_EVERY_ENTRIES)
        {
            let data = encode_snapshot(self.state.image());
            if self.quorum.snapshot(self.applied, data).is_ok() {
                self.snapshot_index = self.applied;
            }
        }
    }

    /// A proposal of an earlier term, or of a leader that no longer leads,
    /// fails (it may still commit: never a wrong success).
    fn check_leadership(&mut self, out: &mut Vec<CtlOut>) {
        if !self.quorum.is_leader() {
            self.step_down(out);
            return;
        }
        let term = self.quorum.term();
        if self.running.as_ref().is_some_and(|r| r.term != term) {
            self.fail_running(out);
        }
    }

    fn fail_running(&mut self, out: &mut Vec<CtlOut>) {
        if let Some(running) = self.running.take() {
            if let Some((job, _)) = running.job {
                self.reply(job, Err("not committed: leadership".to_owned()), out);
            }
        }
    }

    fn reply(&mut self, job: Job, result: Result<Answer, String>, out: &mut Vec<CtlOut>) {
        match job.reply {
            ReplyTo::Local(id) => match result {
                Ok(answer) => self.answered(id, Ok(answer), out),
                Err(_) => {
                    if let Some(submit) = self.submits.get_mut(&id) {
                        submit.attempt = Attempt::Idle {
                            at_ms: self.now_ms + SUBMIT_RETRY_MS,
                        };
                    }
                }
            },
            ReplyTo::Remote { node, req } => {
                let result = result.map(|answer| {
                    let mut bytes = Vec::new();
                    answer.encode(&mut bytes);
                    Bytes::from(bytes)
                });
                out.push(CtlOut::Send {
                    to: node,
                    msg: CtlMsg::Answer { req, result },
                });
            }
        }
    }

    /// The active controller: becomes it (bootstrap), then one command or
    /// the periodic tick at a time.
    fn controller_loop(&mut self, now_ms: u64, out: &mut Vec<CtlOut>) {
        if self.failed || !self.quorum.leader_ready(self.applied) {
            return;
        }
        let term = self.quorum.term();
        if self.controller_term != term {
            self.controller_term = term;
            self.state.become_leader(now_ms);
            if !self.log_has_data {
                self.bootstrapping = true;
            }
        }
        if let Some(running) = &self.running {
            if now_ms >= running.deadline_ms {
                self.fail_running(out);
            }
            return;
        }
        if self.bootstrapping {
            let records = self.state.tick(now_ms);
            self.bootstrapping = false;
            if !records.is_empty() {
                self.propose(&records, None, now_ms, out);
            }
            return;
        }
        if let Some(job) = self.jobs.pop_front() {
            let (records, reply) = self.state.handle(now_ms, &job.command);
            if records.is_empty() {
                let index = heartbeat_index(&job.command, self.applied);
                self.reply(job, Ok(Answer { reply, index }), out);
            } else {
                self.propose(&records, Some((job, reply)), now_ms, out);
            }
            return;
        }
        if now_ms >= self.next_controller_tick_ms {
            self.next_controller_tick_ms = now_ms + self.config.tick_ms;
            let records = self.state.tick(now_ms);
            if !records.is_empty() {
                self.propose(&records, None, now_ms, out);
                return;
            }
            self.add_learners();
        }
    }

    fn propose(
        &mut self,
        records: &[MetadataRecord],
        job: Option<(Job, ControllerReply)>,
        now_ms: u64,
        out: &mut Vec<CtlOut>,
    ) {
        match self.quorum.propose(encode_batch(records)) {
            Ok((term, index)) => {
                self.running = Some(Running {
                    index,
                    term,
                    deadline_ms: now_ms + COMMIT_TIMEOUT_MS,
                    job,
                });
            }
            Err(_) => {
                if let Some((job, _)) = job {
                    self.reply(job, Err("proposal refused".to_owned()), out);
                }
            }
        }
    }

    fn add_learners(&mut self) {
        let image = self.state.image().clone();
        for broker in image.brokers() {
            let id = u64::from(broker.node.0);
            let conf = self.quorum.conf_state();
            if conf.voters.contains(&id) || conf.learners.contains(&id) {
                continue;
            }
            let _ = self.quorum.add_learner(id);
            return;
        }
    }

    fn lifecycle(&mut self, now_ms: u64) {
        let node = self.config.node;
        if let Some((change, drop_ms)) = self.lease_pending {
            if let LeaseChange::Extend { after_index, .. } = change {
                if self.applied >= after_index {
                    change.apply(&self.lease, self.applied);
                    self.lease_pending = None;
                } else if now_ms >= drop_ms {
                    self.lease_pending = None;
                }
            }
        }
        match self.phase {
            Phase::Register { at_ms, sent: false } if now_ms >= at_ms => {
                self.submit(
                    ControllerCommand::RegisterBroker {
                        node,
                        incarnation: self.incarnation,
                        endpoints: sim_endpoints(node),
                        shards: 1,
                        rack: None,
                    },
                    Origin::Lifecycle,
                    now_ms,
                );
                self.phase = Phase::Register { at_ms, sent: true };
            }
            Phase::WaitApplied { index } if self.applied >= index => {
                self.phase = Phase::Beat {
                    at_ms: now_ms,
                    sent: false,
                };
            }
            Phase::Beat { at_ms, sent: false } if now_ms >= at_ms => {
                self.submit(
                    ControllerCommand::Heartbeat {
                        node,
                        incarnation: self.incarnation,
                        caught_up: true,
                        shutting_down: false,
                    },
                    Origin::Lifecycle,
                    now_ms,
                );
                self.beat_sent_ms = now_ms;
                self.phase = Phase::Beat { at_ms, sent: true };
            }
            _ => {}
        }
    }

    fn lifecycle_answered(&mut self, result: Result<Answer, Unavailable>, now_ms: u64) {
        let interval = self.config.heartbeat_interval_ms;
        if matches!(self.phase, Phase::Beat { .. }) && !sole_voter(&self.config) {
            let change = self
                .lease_rule()
                .answered(self.beat_sent_ms, result.as_ref().ok());
            match change {
                LeaseChange::Extend { after_index, .. } if after_index > self.applied => {
                    self.lease_pending = Some((change, now_ms + interval));
                }
                LeaseChange::Keep => {}
                LeaseChange::Extend { .. } | LeaseChange::Revoke => {
                    self.lease_pending = None;
                    change.apply(&self.lease, self.applied);
                }
            }
        }
        self.phase = match (self.phase, result) {
            (
                Phase::Register { .. },
                Ok(Answer {
                    reply: ControllerReply::Registered { index },
                    ..
                }),
            ) => Phase::WaitApplied { index },
            (Phase::Register { .. }, _) => Phase::Register {
                at_ms: now_ms + interval,
                sent: false,
            },
            (
                Phase::Beat { .. },
                Ok(Answer {
                    reply: ControllerReply::Heartbeat { fenced: true, .. },
                    ..
                }),
            ) => {
                let known = self
                    .state
                    .image()
                    .broker(self.config.node)
                    .is_some_and(|b| b.incarnation == self.incarnation);
                if known {
                    Phase::Beat {
                        at_ms: now_ms + interval,
                        sent: false,
                    }
                } else {
                    Phase::Register {
                        at_ms: now_ms,
                        sent: false,
                    }
                }
            }
            (Phase::Beat { .. }, _) => Phase::Beat {
                at_ms: now_ms + interval,
                sent: false,
            },
            (phase, _) => phase,
        };
    }

    fn answered(&mut self, id: u64, result: Result<Answer, Unavailable>, out: &mut Vec<CtlOut>) {
        let Some(submit) = self.submits.remove(&id) else {
            return;
        };
        if submit.origin == Origin::Lifecycle {
            self.lifecycle_answered(result, self.now_ms);
            return;
        }
        out.push(CtlOut::Answered {
            origin: submit.origin,
            command: submit.command,
            result,
        });
    }

    fn drive_submits(&mut self, now_ms: u64, out: &mut Vec<CtlOut>) {
        let me = u64::from(self.config.node.0);
        let voters: Vec<u64> = self
            .config
            .voters
            .iter()
            .map(|v| u64::from(v.0))
            .filter(|v| *v != me)
            .collect();
        let ids: Vec<u64> = self.submits.keys().copied().collect();
        for id in ids {
            let leader_known = self.quorum.leader();
            let Some(submit) = self.submits.get_mut(&id) else {
                continue;
            };
            if now_ms >= submit.deadline_ms {
                // A job of it still queued here may run; its answer then
                // finds no submit and is dropped.
                self.answered(id, Err(Unavailable::Timeout), out);
                continue;
            }
            match submit.attempt {
                Attempt::Remote { leader, until_ms } => {
                    let moved = leader_known.is_some_and(|l| l != leader);
                    if now_ms >= until_ms || moved {
                        submit.attempt = Attempt::Idle { at_ms: now_ms };
                    } else {
                        continue;
                    }
                }
                Attempt::Local => {
                    if self.quorum.is_leader() && !self.failed {
                        continue;
                    }
                    submit.attempt = Attempt::Idle { at_ms: now_ms };
                }
                Attempt::Idle { at_ms } if at_ms > now_ms => continue,
                Attempt::Idle { .. } => {}
            }
            submit.attempts += 1;
            // A failed log's Raft group is stale: the other voters (the
            // driver's `submit`).
            let leader_known = leader_known.filter(|l| !self.failed || *l != me);
            let target = leader_known
                .or_else(|| (!voters.is_empty()).then(|| voters[submit.attempts % voters.len()]));
            match target {
                Some(leader) if leader == me => {
                    if self.jobs.len() >= COMMANDS_QUEUED_MAX {
                        submit.attempt = Attempt::Idle {
                            at_ms: now_ms + SUBMIT_RETRY_MS,
                        };
                        continue;
                    }
                    submit.attempt = Attempt::Local;
                    let command = submit.command.clone();
                    self.jobs.push_back(Job {
                        command,
                        reply: ReplyTo::Local(id),
                    });
                }
                Some(leader) => {
                    let until_ms = (now_ms + FORWARD_ATTEMPT_MS).min(submit.deadline_ms);
                    submit.attempt = Attempt::Remote { leader, until_ms };
                    let mut body = Vec::new();
                    submit.command.encode(&mut body);
                    out.push(CtlOut::Send {
                        to: NodeId(leader as u32),
                        msg: CtlMsg::Command {
                            req: id,
                            body: Bytes::from(body),
                        },
                    });
                }
                None => {
                    submit.attempt = Attempt::Idle {
                        at_ms: now_ms + SUBMIT_RETRY_MS,
                    };
                }
            }
        }
    }
}

/// Folds one committed entry's records (an entry that does not decode is
/// skipped on every node alike, as the driver does).
/// The lifecycle's `sole_voter`: the only voter holds its lease for good.
fn sole_voter(config: &CtlConfig) -> bool {
    matches!(config.voters.as_slice(), [only] if *only == config.node)
}

fn replay_entry(state: &mut ControllerState, payload: &[u8]) {
    if let Ok(records) = decode_batch(payload) {
        for record in &records {
            state.replay(record);
        }
    }
}
