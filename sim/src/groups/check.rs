//! The rules the group members' histories are held to, checked as the
//! events come (the world passes each [`GroupEvent`] to
//! [`GroupChecker::observe`] at once, in the order the members produce
//! them, which is the order of the world's events).
//!
//! The workload's discipline makes the rules exact: a member has one
//! request in flight, commits only its own partitions (one writer per
//! group and partition) and each commit carries a larger offset than its
//! last for every partition; and nodes serve a member's requests in the
//! order they were sent, once each (the connection model, `super`).
//!
//! - **Committed offsets never go backwards.** An OffsetFetch answer for
//!   (group, partition) is never below the largest offset whose commit
//!   was acknowledged before the fetch was sent (and never empty when
//!   there is one), unless the answer is the offset of a commit that was
//!   *never* acknowledged — an indeterminate commit (timed out, answered
//!   with an error after its append started, or its answer lost), which
//!   may have been written and surface at any time, since its request
//!   could sit in the socket buffers of a paused node or its append
//!   could complete after the answer. An acknowledged commit lost across
//!   a coordinator failover, a replay that misses records, or an
//!   acknowledgement before the offsets were durable all break this rule.
//! - **No phantom offsets.** Every offset an OffsetFetch returns for
//!   (group, partition) was sent in a commit of that group and partition
//!   before the answer arrived.
//! - **Acknowledged commits outlive the run** ([`GroupChecker::check_final`],
//!   after the quiet period): what the group's coordinator holds for
//!   (group, partition) is at least the largest acknowledged offset, by
//!   the same rule (an indeterminate commit may stand in for it).
//! - (Sanity of the harness) an acknowledged offset was sent in a commit
//!   first, and no two clients commit the same (group, partition).

use std::collections::BTreeMap;

use fjord_broker::group::TopicPartition;

/// One observation of a member (world time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupEvent {
    /// An OffsetCommit request went out with these offsets.
    CommitSent {
        group: String,
        client: u32,
        req: u64,
        offsets: Vec<(TopicPartition, i64)>,
        at_ms: u64,
    },
    /// The commit `req` was acknowledged for `tp` (error NONE).
    CommitAcked {
        group: String,
        client: u32,
        req: u64,
        tp: TopicPartition,
        offset: i64,
        at_ms: u64,
    },
    /// An OffsetFetch request went out.
    FetchSent {
        group: String,
        client: u32,
        req: u64,
        at_ms: u64,
    },
    /// The fetch `req` answered `offset` for `tp` (`None`: nothing
    /// committed).
    Fetched {
        group: String,
        client: u32,
        req: u64,
        tp: TopicPartition,
        offset: Option<i64>,
        at_ms: u64,
    },
}

/// What happened to the commits of one (group, partition).
#[derive(Debug, Default)]
struct Commits {
    /// The client committing it.
    writer: Option<u32>,
    /// Offset → acknowledged.
    sent: BTreeMap<i64, bool>,
    /// The largest acknowledged offset.
    acked_max: Option<i64>,
}

/// A fetch in flight: the largest acknowledged offset of each (group,
/// partition) when it was sent.
#[derive(Debug)]
struct PendingFetch {
    req: u64,
    group: String,
    acked_max: BTreeMap<TopicPartition, i64>,
}

/// The group rules' state. Lives in: the run's `Checker`.
#[derive(Debug, Default)]
pub struct GroupChecker {
    commits: BTreeMap<(String, TopicPartition), Commits>,
    /// Per client, its fetch in flight (a member has one request in
    /// flight, so this is bounded by the clients).
    fetches: BTreeMap<u32, PendingFetch>,
    pub commits_acked: u64,
    pub fetches_answered: u64,
    /// Fetch answers excused by an indeterminate commit.
    pub indeterminate_seen: u64,
    /// Fetches answered by a node that was no longer the group's
    /// coordinator in the committed metadata (it had not applied that
    /// yet): (client, request). Counted, and held to every rule like any
    /// other answer (see [`GroupChecker::deposed_answer`]).
    deposed: std::collections::BTreeSet<(u32, u64)>,
    pub deposed_answers: u64,
}

impl GroupChecker {
    /// The world saw fetch `req` of `client` answered by a coordinator
    /// the committed metadata had already deposed (it had not applied
    /// the move yet). Such an answer is counted and, since the broker
    /// lease (gap B of docs/CORRECTNESS.md), held to the never-backwards
    /// rule like any other: a node cut off from the quorum stops
    /// answering before the controller can fence it and move its groups,
    /// so a deposed coordinator that still answers must not answer
    /// behind the new one's acknowledged commits.
    pub fn deposed_answer(&mut self, client: u32, req: u64) {
        self.deposed.insert((client, req));
    }

    /// At the end of the run: `committed` is what `group`'s coordinator
    /// holds for `tp` (`NodeGroups::committed`); a violation when it lost
    /// an acknowledged commit or holds a phantom.
    pub fn check_final(
        &self,
        group: &str,
        tp: &TopicPartition,
        committed: Option<i64>,
    ) -> Option<String> {
        let c = self.commits.get(&(group.to_owned(), tp.clone()));
        let sent = |o: i64| c.and_then(|c| c.sent.get(&o).copied());
        let floor = c.and_then(|c| c.acked_max);
        match (committed, floor) {
            (Some(o), _) if sent(o).is_none() => Some(format!(
                "phantom offset: at the end {group}/{tp} holds {o}, never committed"
            )),
            (None, Some(floor)) => Some(format!(
                "committed offset lost: at the end {group}/{tp} holds nothing, {floor} was acknowledged"
            )),
            (Some(o), Some(floor)) if o < floor && sent(o) != Some(false) => Some(format!(
                "committed offset went backwards: at the end {group}/{tp} holds {o}, {floor} was acknowledged"
            )),
            _ => None,
        }
    }

    /// Checks one event; returns the violations it shows (each a
    /// sentence naming the group, partition, offsets and times).
    pub fn observe(&mut self, event: &GroupEvent) -> Vec<String> {
        let mut violations = Vec::new();
        match event {
            GroupEvent::CommitSent {
                group,
                client,
                offsets,
                ..
            } => {
                for (tp, offset) in offsets {
                    let c = self.commits.entry((group.clone(), tp.clone())).or_default();
                    match c.writer {
                        Some(w) if w != *client => violations.push(format!(
                            "harness: clients {w} and {client} both commit {group}/{tp}"
                        )),
                        _ => c.writer = Some(*client),
                    }
                    c.sent.entry(*offset).or_insert(false);
                }
            }
            GroupEvent::CommitAcked {
                group,
                tp,
                offset,
                at_ms,
                ..
            } => {
                self.commits_acked += 1;
                let c = self.commits.entry((group.clone(), tp.clone())).or_default();
                match c.sent.get_mut(offset) {
                    Some(acked) => *acked = true,
                    None => violations.push(format!(
                        "harness: {group}/{tp} offset {offset} acknowledged at {at_ms} ms was never sent"
                    )),
                }
                c.acked_max = c.acked_max.max(Some(*offset));
            }
            GroupEvent::FetchSent {
                group, client, req, ..
            } => {
                let acked_max = self
                    .commits
                    .range((group.clone(), TopicPartition::new("", 0))..)
                    .take_while(|((g, _), _)| g == group)
                    .filter_map(|((_, tp), c)| c.acked_max.map(|m| (tp.clone(), m)))
                    .collect();
                self.fetches.insert(
                    *client,
                    PendingFetch {
                        req: *req,
                        group: group.clone(),
                        acked_max,
                    },
                );
            }
            GroupEvent::Fetched {
                group,
                client,
                req,
                tp,
                offset,
                at_ms,
            } => {
                self.fetches_answered += 1;
                let floor = match self.fetches.get(client) {
                    Some(p) if p.req == *req && p.group == *group => p.acked_max.get(tp).copied(),
                    _ => {
                        violations.push(format!(
                            "harness: client {client}'s fetch {req} of {group} answered at {at_ms} ms was not seen sent"
                        ));
                        None
                    }
                };
                let c = self.commits.get(&(group.clone(), tp.clone()));
                let sent = |o: i64| c.and_then(|c| c.sent.get(&o).copied());
                if let Some(o) = offset {
                    if sent(*o).is_none() {
                        violations.push(format!(
                            "phantom offset: {group}/{tp} fetched {o} at {at_ms} ms, never committed"
                        ));
                    }
                }
                // Every partition of that answer (a set per run: deposed
                // answers are few).
                let deposed = if self.deposed.contains(&(*client, *req)) {
                    self.deposed_answers += 1;
                    " (answered by a deposed coordinator)"
                } else {
                    ""
                };
                if let Some(floor) = floor {
                    match offset {
                        None => violations.push(format!(
                            "committed offset lost: {group}/{tp} fetched nothing at {at_ms} ms after {floor} was acknowledged{deposed}"
                        )),
                        Some(o) if *o < floor => {
                            if sent(*o) == Some(false) {
                                self.indeterminate_seen += 1;
                            } else {
                                violations.push(format!(
                                    "committed offset went backwards: {group}/{tp} fetched {o} at {at_ms} ms after {floor} was acknowledged{deposed}"
                                ));
                            }
                        }
                        Some(_) => {}
                    }
                }
            }
        }
        violations
    }
}
