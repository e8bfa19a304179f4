//! Partition assignors, run by the group leader: range, round-robin and
//! cooperative-sticky (Kafka's `range`, `roundrobin`,
//! `cooperative-sticky`). Pure functions of the members' subscriptions and
//! the partition counts; the output is deterministic (members and
//! partitions are visited in sorted order, ties go to the smallest member
//! id). They live in the client (the leader runs them) and the broker
//! re-exports them for its tests.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// One partition of one topic.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: u32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: u32) -> TopicPartition {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// What one member asked for, and (for the sticky assignor) what it owns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subscription {
    pub topics: Vec<String>,
    /// Partitions the member owned in `generation`.
    pub owned: Vec<TopicPartition>,
    /// The generation `owned` is from; -1 if none.
    pub generation: i32,
}

/// Member id → its partitions, sorted.
pub type Assignment = BTreeMap<String, Vec<TopicPartition>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Assignor {
    Range,
    RoundRobin,
    CooperativeSticky,
}

impl Assignor {
    pub const ALL: [Assignor; 3] = [
        Assignor::Range,
        Assignor::RoundRobin,
        Assignor::CooperativeSticky,
    ];

    /// The protocol name in JoinGroup (Kafka's names).
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "roundrobin",
            Assignor::CooperativeSticky => "cooperative-sticky",
        }
    }

    pub fn from_name(name: &str) -> Option<Assignor> {
        Assignor::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Whether members keep their partitions across a rebalance and give up
    /// only those that move (incremental cooperative rebalancing), instead
    /// of revoking everything first (eager).
    pub fn is_cooperative(self) -> bool {
        self == Assignor::CooperativeSticky
    }

    /// Assigns the partitions of `topics` (name → partition count) to
    /// `members`. Every member appears in the result. Topics nobody
    /// subscribes to, and subscriptions to topics not in `topics`, are
    /// ignored.
    ///
    /// Cooperative-sticky: a partition that must move from its current
    /// owner is left unassigned in this generation (its owner revokes it);
    /// [`needs_follow_up`] then tells the leader to ask for another
    /// rebalance, in which it is assigned to its new owner.
    pub fn assign(
        self,
        topics: &BTreeMap<String, u32>,
        members: &BTreeMap<String, Subscription>,
    ) -> Assignment {
        let assignment = match self {
            Assignor::Range => range(topics, members),
            Assignor::RoundRobin => round_robin(topics, members),
            Assignor::CooperativeSticky => cooperative_sticky(topics, members),
        };
        assert_eq!(assignment.len(), members.len());
        assignment
    }
}

/// Whether a cooperative assignment withheld partitions that a member
/// still owns elsewhere, so another rebalance must follow.
pub fn needs_follow_up(members: &BTreeMap<String, Subscription>, assignment: &Assignment) -> bool {
    members.iter().any(|(id, sub)| {
        let kept = assignment.get(id);
        sub.owned
            .iter()
            .any(|tp| !kept.is_some_and(|parts| parts.contains(tp)))
    })
}

fn empty_assignment(members: &BTreeMap<String, Subscription>) -> Assignment {
    members.keys().map(|id| (id.clone(), Vec::new())).collect()
}

fn subscribers<'a>(members: &'a BTreeMap<String, Subscription>, topic: &str) -> Vec<&'a String> {
    members
        .iter()
        .filter(|(_, s)| s.topics.iter().any(|t| t == topic))
        .map(|(id, _)| id)
        .collect()
}

/// Per topic, consecutive ranges of partitions to its subscribers in member
/// order; the first `partitions % subscribers` get one more.
fn range(topics: &BTreeMap<String, u32>, members: &BTreeMap<String, Subscription>) -> Assignment {
    let mut assignment = empty_assignment(members);
    for (topic, count) in topics {
        let subscribed = subscribers(members, topic);
        if subscribed.is_empty() {
            continue;
        }
        let n = subscribed.len() as u32;
        let (quota, extra) = (count / n, count % n);
        let mut next = 0;
        for (i, id) in subscribed.into_iter().enumerate() {
            let take = quota + u32::from((i as u32) < extra);
            let parts = assignment.get_mut(id).expect("every member is listed");
            parts.extend((next..next + take).map(|p| TopicPartition::new(topic.clone(), p)));
            next += take;
        }
        assert_eq!(next, *count);
    }
    assignment
}

/// All partitions in (topic, partition) order, dealt to the members in
/// turn, skipping members not subscribed to the partition's topic.
fn round_robin(
    topics: &BTreeMap<String, u32>,
    members: &BTreeMap<String, Subscription>,
) -> Assignment {
    let mut assignment = empty_assignment(members);
    let ids: Vec<&String> = members.keys().collect();
    let mut turn = 0;
    for (topic, count) in topics {
        if subscribers(members, topic).is_empty() {
            continue;
        }
        for partition in 0..*count {
            loop {
                let id = ids[turn % ids.len()];
                turn += 1;
                if members[id].topics.iter().any(|t| t == topic) {
                    let parts = assignment.get_mut(id).expect("every member is listed");
                    parts.push(TopicPartition::new(topic.clone(), partition));
                    break;
                }
            }
        }
    }
    assignment
}

/// Sticky and balanced, then cooperative:
/// 1. each member keeps what it owned, if it still exists and it is still
///    subscribed (a partition claimed by two members goes to the one with
///    the newer generation, then the smaller id);
/// 2. the rest go, in order, to the least-loaded subscriber;
/// 3. while some member has two or more partitions more than another member
///    that could take one of them, one moves (from the most to the least
///    loaded); each move lowers the sum of squared loads, so this ends;
/// 4. partitions that end up with a different owner than they had are
///    withheld this generation (cooperative: revoked first).
fn cooperative_sticky(
    topics: &BTreeMap<String, u32>,
    members: &BTreeMap<String, Subscription>,
) -> Assignment {
    let subscribed = |id: &str, topic: &str| members[id].topics.iter().any(|t| t == topic);
    let exists = |tp: &TopicPartition| topics.get(&tp.topic).is_some_and(|n| tp.partition < *n);

    // 1. Previous owners, conflicts resolved.
    let mut previous: BTreeMap<TopicPartition, (&String, i32)> = BTreeMap::new();
    for (id, sub) in members {
        for tp in &sub.owned {
            if !exists(tp) || !subscribed(id, &tp.topic) {
                continue;
            }
            let claim = (id, sub.generation);
            previous
                .entry(tp.clone())
                .and_modify(|held| {
                    if claim.1 > held.1 {
                        *held = claim;
                    }
                })
                .or_insert(claim);
        }
    }
    let mut owned: BTreeMap<&String, BTreeSet<TopicPartition>> =
        members.keys().map(|id| (id, BTreeSet::new())).collect();
    for (tp, (id, _)) in &previous {
        owned.get_mut(id).expect("member").insert(tp.clone());
    }

    // 2. Unowned partitions to the least-loaded subscriber.
    for (topic, count) in topics {
        for partition in 0..*count {
            let tp = TopicPartition::new(topic.clone(), partition);
            if previous.contains_key(&tp) {
                continue;
            }
            let target = owned
                .iter()
                .filter(|(id, _)| subscribed(id, topic))
                .min_by_key(|(id, parts)| (parts.len(), *id))
                .map(|(id, _)| *id);
            if let Some(id) = target {
                owned.get_mut(id).expect("member").insert(tp);
            }
        }
    }

    // 3. Balance.
    loop {
        let mut best: Option<(usize, &String, &String, TopicPartition)> = None;
        for (donor, donor_parts) in &owned {
            for (receiver, receiver_parts) in &owned {
                if donor_parts.len() < receiver_parts.len() + 2 {
                    continue;
                }
                // Prefer moving a partition the donor did not own before.
                let movable = donor_parts
                    .iter()
                    .filter(|tp| subscribed(receiver, &tp.topic))
                    .min_by_key(|tp| (previous.get(*tp).map(|(id, _)| *id) == Some(*donor), *tp));
                if let Some(tp) = movable {
                    let gap = donor_parts.len() - receiver_parts.len();
                    if best.as_ref().is_none_or(|(g, ..)| gap > *g) {
                        best = Some((gap, *donor, *receiver, tp.clone()));
                    }
                }
            }
        }
        let Some((_, donor, receiver, tp)) = best else {
            break;
        };
        owned.get_mut(donor).expect("member").remove(&tp);
        owned.get_mut(receiver).expect("member").insert(tp);
    }

    // 4. Withhold partitions that change owner.
    owned
        .into_iter()
        .map(|(id, parts)| {
            let kept = parts
                .into_iter()
                .filter(|tp| previous.get(tp).is_none_or(|(owner, _)| *owner == id))
                .collect();
            (id.clone(), kept)
        })
        .collect()
}

#[cfg(test)]
mod tests;
