//! This broker's membership (CLUSTER.md §3): a new incarnation per process
//! start → `RegisterBroker` → wait until this node applied the log up to
//! the registration → heartbeats every `broker_heartbeat_interval_ms` with
//! `caught_up`, which lets the controller unfence it. A heartbeat answered
//! `fenced` while the image no longer holds this incarnation (the
//! controller forgot it, e.g. a newer registration of the same node id
//! elsewhere or a log restored) registers again. Controlled shutdown sends
//! `shutting_down` heartbeats until the controller says it moved
//! everything away.
//!
//! The broker lease ([`BrokerLease`], gap B of docs/CORRECTNESS.md): a
//! heartbeat the active controller answers "registered, unfenced, this
//! incarnation" grants this node the right to act as partition leader and
//! group coordinator until `send time + broker_session_timeout_ms −
//! broker_lease_margin_ms` on this node's steady clock ([`LeaseRule`]).
//! The controller fences a broker only after `broker_session_timeout_ms`
//! without a heartbeat measured from its *receipt* (which is after the
//! send), and a new controller starts every session afresh at its
//! election, so a node cut off from the quorum stops leading before the
//! controller can move its leaderships. Nothing renews the lease but an
//! acknowledged heartbeat; a `fenced` answer ends it at once.
//!
//! Lives on: shard 0, a task of the controller driver. start → register →
//! heartbeat → (shutdown) → ends with the executor.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use fjord_schema::NodeId;

use super::ControllerHandle;
use crate::controller::commands::{Answer, ControllerCommand, ControllerReply};
use crate::metadata::image::MetadataImage;

/// Problems registering or heartbeating are logged (warn) at most this
/// often.
const WARN_INTERVAL_MS: u64 = 10_000;
/// Between `shutting_down` heartbeats of a controlled shutdown.
const SHUTDOWN_POLL_MS: u64 = 200;

pub use crate::lease::{steady_now_ms, BrokerLease};

/// How long an acknowledged heartbeat grants the lease for, and what an
/// answer does to it (sans-IO: the lifecycle task applies it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRule {
    /// `broker_session_timeout_ms`: the controller fences after this long
    /// without a heartbeat, counted from its receipt.
    pub session_timeout_ms: u64,
    /// `broker_lease_margin_ms`: the lease ends this much before the
    /// earliest fencing. It covers a controller deposed by a partition
    /// that still answers heartbeats until its Raft `check_quorum` steps
    /// it down (up to one election timeout past the new controller's
    /// election) and clock-rate drift between nodes; see ARCHITECTURE.md's
    /// Decisions.
    pub margin_ms: u64,
}

/// What a heartbeat answer does to the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseChange {
    /// Extend it to this deadline, once this node applied the answer's
    /// index: the controller's applied index when it answered (or the
    /// record that unfenced this node), so the image this node leads by
    /// holds every leadership moved away from it before.
    Extend { until_ms: u64, after_index: u64 },
    /// End it now: the controller holds this node fenced or does not
    /// know this incarnation.
    Revoke,
    /// Leave it: no answer (it runs out on its own).
    Keep,
}

impl LeaseChange {
    /// Applies this change to `lease` on a node that applied the metadata
    /// log up to `applied`: an extension whose index this node has not
    /// applied yet is dropped (the next acknowledged heartbeat grants it).
    pub fn apply(self, lease: &BrokerLease, applied: u64) {
        match self {
            LeaseChange::Extend {
                until_ms,
                after_index,
            } if applied >= after_index => lease.extend_to(until_ms),
            LeaseChange::Extend { .. } | LeaseChange::Keep => {}
            LeaseChange::Revoke => lease.revoke(),
        }
    }
}

impl LeaseRule {
    /// The lease an acknowledged heartbeat sent at `sent_ms` grants.
    pub fn until_ms(&self, sent_ms: u64) -> u64 {
        sent_ms
            .saturating_add(self.session_timeout_ms)
            .saturating_sub(self.margin_ms)
    }

    /// What the answer to a heartbeat sent at `sent_ms` does: only
    /// "registered, unfenced, this incarnation" (`fenced: false`) grants;
    /// `fenced: true` (fenced, unknown, or another incarnation) revokes;
    /// an error or another reply changes nothing.
    pub fn answered(&self, sent_ms: u64, answer: Option<&Answer>) -> LeaseChange {
        match answer {
            Some(Answer {
                reply: ControllerReply::Heartbeat { fenced: false, .. },
                index,
            }) => LeaseChange::Extend {
                until_ms: self.until_ms(sent_ms),
                after_index: *index,
            },
            Some(Answer {
                reply: ControllerReply::Heartbeat { fenced: true, .. },
                ..
            }) => LeaseChange::Revoke,
            _ => LeaseChange::Keep,
        }
    }
}

/// This process's registration state.
#[derive(Debug)]
pub struct Lifecycle {
    node: NodeId,
    incarnation: u64,
    /// The index the registration committed at, once applied here.
    registered_index: Cell<Option<u64>>,
    last_warn: Cell<Option<Instant>>,
}

impl Lifecycle {
    pub fn new(node: NodeId) -> Lifecycle {
        Lifecycle {
            node,
            incarnation: random_incarnation(),
            registered_index: Cell::new(None),
            last_warn: Cell::new(None),
        }
    }

    /// New on every process start.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The index of this process's registration, once applied here.
    pub fn registered_index(&self) -> Option<u64> {
        self.registered_index.get()
    }

    /// Whether `image` shows this incarnation registered and unfenced.
    pub fn unfenced(&self, image: &MetadataImage) -> bool {
        image
            .broker(self.node)
            .is_some_and(|b| b.incarnation == self.incarnation && !b.fenced)
    }

    fn warn(&self, what: &str, error: &dyn std::fmt::Display) {
        let now = Instant::now();
        let due = self
            .last_warn
            .get()
            .is_none_or(|at| now.duration_since(at) >= Duration::from_millis(WARN_INTERVAL_MS));
        if due {
            self.last_warn.set(Some(now));
            tracing::warn!(node = self.node.0, %error, "{what}; retrying");
        }
    }
}

/// A random, non-zero incarnation (std's per-process random hasher keys,
/// mixed with the time and the pid).
fn random_incarnation() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    hasher.finish().max(1)
}

/// Whether this node is the metadata quorum's only voter (its lease is
/// held for good, [`BrokerLease::hold_for_good`]).
fn sole_voter(config: &super::ClusterConfig) -> bool {
    matches!(config.voters.as_slice(), [only] if only.node == config.node)
}

/// Registers, then heartbeats, until shutdown.
pub(super) async fn run(handle: ControllerHandle) {
    let interval = Duration::from_millis(handle.config().heartbeat_interval_ms.max(1));
    let lifecycle = handle.lifecycle();
    let node = handle.node();
    let sole_voter = sole_voter(handle.config());
    if sole_voter {
        handle.config().lease.hold_for_good();
    }
    while !handle.shutting_down() {
        let register = ControllerCommand::RegisterBroker {
            node,
            incarnation: lifecycle.incarnation(),
            endpoints: handle.config().endpoints.clone(),
            shards: handle.config().shards,
            rack: handle.config().rack.clone(),
        };
        match handle.submit(register).await {
            Ok(Answer {
                reply: ControllerReply::Registered { index },
                ..
            }) => {
                handle.wait_applied(index).await;
                lifecycle.registered_index.set(Some(index));
                tracing::info!(
                    node = node.0,
                    incarnation = lifecycle.incarnation(),
                    index,
                    "broker registered with the controller"
                );
                heartbeat(&handle, interval).await;
                lifecycle.registered_index.set(None);
                // The controller forgot this incarnation: no lease until
                // registered again. (Not at a controlled shutdown: this
                // node keeps serving until the controller moved its
                // leaderships away, as the image then says.)
                if !sole_voter && !handle.shutting_down() {
                    handle.config().lease.revoke();
                }
                continue;
            }
            Ok(answer) => lifecycle.warn(
                "registration refused by the controller",
                &format!("{:?}", answer.reply),
            ),
            Err(error) => lifecycle.warn("cannot register with the controller", &error),
        }
        glommio::timer::sleep(interval).await;
    }
}

/// Heartbeats until shutdown or until the controller no longer knows this
/// incarnation.
async fn heartbeat(handle: &ControllerHandle, interval: Duration) {
    let lifecycle = handle.lifecycle();
    let node = handle.node();
    let lease = &handle.config().lease;
    let rule = handle.config().lease_rule();
    let sole_voter = sole_voter(handle.config());
    loop {
        if handle.shutting_down() {
            return;
        }
        let beat = ControllerCommand::Heartbeat {
            node,
            incarnation: lifecycle.incarnation(),
            caught_up: true,
            shutting_down: false,
        };
        // Before the submit: the controller receives it later still.
        let sent_ms = steady_now_ms();
        let answer = handle.submit(beat).await;
        let change = if sole_voter {
            LeaseChange::Keep
        } else {
            rule.answered(sent_ms, answer.as_ref().ok())
        };
        // An acknowledgement carries the index the controller had applied
        // (or the record that unfenced this node): lead only with an image
        // that has it, and every leadership move before it. Bounded: a
        // node that cannot apply keeps beating once its lease is gone.
        if let LeaseChange::Extend { after_index, .. } = change {
            if after_index > handle.quorum_view().applied_index {
                futures_lite::future::or(
                    handle.wait_applied(after_index),
                    glommio::timer::sleep(interval),
                )
                .await;
            }
        }
        change.apply(lease, handle.quorum_view().applied_index);
        match answer {
            Ok(Answer {
                reply: ControllerReply::Heartbeat { fenced: true, .. },
                ..
            }) => {
                let known = handle
                    .image()
                    .broker(node)
                    .is_some_and(|b| b.incarnation == lifecycle.incarnation());
                if !known {
                    tracing::info!(
                        node = node.0,
                        "the controller does not know this incarnation: registering again"
                    );
                    return;
                }
            }
            Ok(_) => {}
            Err(error) => lifecycle.warn("heartbeat not answered", &error),
        }
        glommio::timer::sleep(interval).await;
    }
}

/// Sends `shutting_down` heartbeats until the controller answers
/// `shutdown_ready` or `deadline_ms` passes.
pub(super) async fn shutdown(handle: &ControllerHandle, deadline_ms: u64) {
    let deadline = Instant::now() + Duration::from_millis(deadline_ms);
    let lifecycle = handle.lifecycle();
    let node = handle.node();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            tracing::warn!(
                node = node.0,
                "controlled shutdown not confirmed before its deadline"
            );
            return;
        }
        let beat = ControllerCommand::Heartbeat {
            node,
            incarnation: lifecycle.incarnation(),
            caught_up: true,
            shutting_down: true,
        };
        let answer = futures_lite::future::or(async { Some(handle.submit(beat).await) }, async {
            glommio::timer::sleep(left).await;
            None
        })
        .await;
        if let Some(Ok(Answer {
            reply:
                ControllerReply::Heartbeat {
                    shutdown_ready: true,
                    ..
                },
            ..
        })) = answer
        {
            tracing::info!(
                node = node.0,
                "controlled shutdown confirmed by the controller"
            );
            return;
        }
        let pause = left.min(Duration::from_millis(SHUTDOWN_POLL_MS));
        glommio::timer::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    //! Transcripts of the lease: heartbeats sent at steady times, answered
    //! (or not), and what the lease says at later times.

    use super::*;

    const RULE: LeaseRule = LeaseRule {
        session_timeout_ms: 9_000,
        margin_ms: 1_000,
    };

    fn acked(index: u64) -> Answer {
        Answer {
            reply: ControllerReply::Heartbeat {
                fenced: false,
                shutdown_ready: false,
            },
            index,
        }
    }

    fn fenced() -> Answer {
        Answer {
            reply: ControllerReply::Heartbeat {
                fenced: true,
                shutdown_ready: false,
            },
            index: 0,
        }
    }

    /// One heartbeat sent at `sent_ms` and its answer applied on a node
    /// that applied the log up to `applied`.
    fn beat(lease: &BrokerLease, sent_ms: u64, answer: Option<&Answer>, applied: u64) {
        RULE.answered(sent_ms, answer).apply(lease, applied);
    }

    #[test]
    fn no_lease_before_the_first_acknowledged_heartbeat() {
        let lease = BrokerLease::new();
        assert!(!lease.holds_at(0));
        assert!(!lease.holds_at(1_000));
        // Unanswered (the controller unreachable): still none.
        beat(&lease, 1_000, None, 10);
        assert!(!lease.holds_at(1_001));
    }

    #[test]
    fn an_acknowledged_heartbeat_grants_the_lease_from_its_send_time() {
        let lease = BrokerLease::new();
        // Sent at 1 000, answered (say) at 5 000: measured from the send.
        beat(&lease, 1_000, Some(&acked(0)), 0);
        assert_eq!(lease.until_ms(), 1_000 + 9_000 - 1_000);
        assert!(lease.holds_at(5_000));
        assert!(lease.holds_at(8_999));
        assert!(!lease.holds_at(9_000), "ends at send + session - margin");
        // The controller fences at its receipt (>= the send) + the session
        // timeout, after the lease ended.
        assert!(lease.until_ms() < 1_000 + RULE.session_timeout_ms);
    }

    #[test]
    fn the_lease_runs_out_without_answers() {
        let lease = BrokerLease::new();
        beat(&lease, 1_000, Some(&acked(0)), 0);
        // Heartbeats at 3 000, 5 000, 7 000 go unanswered.
        for sent in [3_000, 5_000, 7_000] {
            beat(&lease, sent, None, 0);
        }
        assert!(lease.holds_at(8_999));
        assert!(!lease.holds_at(9_000));
        assert!(!lease.holds_at(20_000));
    }

    #[test]
    fn a_fenced_answer_ends_the_lease_and_never_extends_it() {
        let lease = BrokerLease::new();
        beat(&lease, 1_000, Some(&acked(0)), 0);
        assert!(lease.holds_at(2_000));
        beat(&lease, 3_000, Some(&fenced()), 0);
        assert!(!lease.holds_at(3_001), "revoked at once");
        assert_eq!(lease.until_ms(), 0);
        // Registered again and acknowledged: regained.
        beat(&lease, 6_000, Some(&acked(0)), 0);
        assert!(lease.holds_at(13_999));
        assert!(!lease.holds_at(14_000));
    }

    #[test]
    fn a_stale_answer_does_not_move_the_lease() {
        let lease = BrokerLease::new();
        // The answer to the heartbeat sent at 3 000 arrives first...
        beat(&lease, 3_000, Some(&acked(0)), 0);
        // ...then the one sent at 1 000: it grants less, nothing changes.
        beat(&lease, 1_000, Some(&acked(0)), 0);
        assert_eq!(lease.until_ms(), 3_000 + 8_000);
        // Other replies (a registration, an error) change nothing either.
        let registered = Answer {
            reply: ControllerReply::Registered { index: 9 },
            index: 9,
        };
        beat(&lease, 9_000, Some(&registered), 9);
        assert_eq!(lease.until_ms(), 11_000);
    }

    #[test]
    fn an_acknowledgement_counts_only_once_its_index_is_applied_here() {
        let lease = BrokerLease::new();
        // Unfenced by the record at index 40; this node applied 39: its
        // image may still name it leader of partitions moved away.
        beat(&lease, 1_000, Some(&acked(40)), 39);
        assert!(!lease.holds_at(1_001));
        // The next acknowledgement, once the image caught up.
        beat(&lease, 3_000, Some(&acked(41)), 41);
        assert!(lease.holds_at(3_001));
        assert!(!lease.holds_at(11_000));
    }

    #[test]
    fn lost_then_regained() {
        let lease = BrokerLease::new();
        beat(&lease, 1_000, Some(&acked(0)), 0);
        assert!(!lease.holds_at(12_000), "cut off: lost");
        beat(&lease, 12_000, Some(&acked(0)), 0);
        assert!(lease.holds_at(12_000));
        assert!(lease.holds_at(19_999));
        assert!(!lease.holds_at(20_000));
    }

    #[test]
    fn a_sole_voter_holds_it_for_good() {
        let lease = BrokerLease::new();
        lease.hold_for_good();
        assert!(lease.holds_at(u64::MAX - 1));
        assert!(lease.holds());
    }
}
