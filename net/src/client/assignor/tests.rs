use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn topics(spec: &[(&str, u32)]) -> BTreeMap<String, u32> {
    spec.iter().map(|(t, n)| (t.to_string(), *n)).collect()
}

fn members(spec: &[(&str, &[&str])]) -> BTreeMap<String, Subscription> {
    spec.iter()
        .map(|(id, topics)| {
            let sub = Subscription {
                topics: topics.iter().map(|t| t.to_string()).collect(),
                owned: Vec::new(),
                generation: -1,
            };
            (id.to_string(), sub)
        })
        .collect()
}

/// `a: t-0 t-1 | b: t-2` — one line per member, for readable expectations.
fn render(assignment: &Assignment) -> String {
    assignment
        .iter()
        .map(|(id, parts)| {
            let parts: Vec<String> = parts.iter().map(ToString::to_string).collect();
            format!("{id}: {}", parts.join(" "))
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The members owning what `assignment` gave them, in `generation`.
fn owning(
    members: &BTreeMap<String, Subscription>,
    assignment: &Assignment,
    generation: i32,
) -> BTreeMap<String, Subscription> {
    members
        .iter()
        .map(|(id, sub)| {
            let owned = assignment.get(id).cloned().unwrap_or_default();
            (
                id.clone(),
                Subscription {
                    owned,
                    generation,
                    ..sub.clone()
                },
            )
        })
        .collect()
}

/// Runs cooperative-sticky rebalances until none needs a follow-up; returns
/// the final assignment and the number of rebalances.
fn settle(
    topics: &BTreeMap<String, u32>,
    mut members: BTreeMap<String, Subscription>,
) -> (Assignment, usize) {
    for round in 1..=4 {
        let assignment = Assignor::CooperativeSticky.assign(topics, &members);
        assert_at_most_once(&assignment);
        if !needs_follow_up(&members, &assignment) {
            return (assignment, round);
        }
        members = owning(&members, &assignment, round as i32);
    }
    panic!("cooperative-sticky did not settle in 4 rebalances");
}

fn assert_at_most_once(assignment: &Assignment) {
    let mut seen = BTreeSet::new();
    for parts in assignment.values() {
        for tp in parts {
            assert!(seen.insert(tp.clone()), "{tp} assigned twice");
        }
    }
}

/// Every partition of a subscribed topic is assigned exactly once, only to
/// a subscriber.
fn assert_exactly_once(
    topics: &BTreeMap<String, u32>,
    members: &BTreeMap<String, Subscription>,
    assignment: &Assignment,
) {
    assert_at_most_once(assignment);
    assert_eq!(
        assignment.keys().collect::<Vec<_>>(),
        members.keys().collect::<Vec<_>>()
    );
    for (id, parts) in assignment {
        for tp in parts {
            assert!(members[id].topics.contains(&tp.topic), "{id} got {tp}");
        }
    }
    let assigned: usize = assignment.values().map(Vec::len).sum();
    let expected: u32 = topics
        .iter()
        .filter(|(t, _)| members.values().any(|s| s.topics.contains(t)))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(assigned, expected as usize);
}

fn spread(assignment: &Assignment) -> usize {
    let counts = assignment.values().map(Vec::len);
    counts.clone().max().unwrap_or(0) - counts.min().unwrap_or(0)
}

#[test]
fn range_gives_consecutive_ranges_per_topic_with_extras_first() {
    let t = topics(&[("a", 5), ("b", 2)]);
    let m = members(&[("m1", &["a", "b"]), ("m2", &["a", "b"])]);
    assert_eq!(
        render(&Assignor::Range.assign(&t, &m)),
        "m1: a-0 a-1 a-2 b-0 | m2: a-3 a-4 b-1"
    );
    // Range balances per topic, not overall: with many one-partition topics
    // the first member gets them all (as in Kafka).
    let t = topics(&[("x", 1), ("y", 1)]);
    assert_eq!(
        render(&Assignor::Range.assign(&t, &m_xy())),
        "m1: x-0 y-0 | m2: "
    );
}

fn m_xy() -> BTreeMap<String, Subscription> {
    members(&[("m1", &["x", "y"]), ("m2", &["x", "y"])])
}

#[test]
fn round_robin_deals_in_turn_and_skips_non_subscribers() {
    let t = topics(&[("x", 1), ("y", 1)]);
    assert_eq!(
        render(&Assignor::RoundRobin.assign(&t, &m_xy())),
        "m1: x-0 | m2: y-0"
    );
    let t = topics(&[("a", 3), ("b", 3)]);
    let m = members(&[("m1", &["a"]), ("m2", &["a", "b"]), ("m3", &["b"])]);
    assert_eq!(
        render(&Assignor::RoundRobin.assign(&t, &m)),
        "m1: a-0 a-2 | m2: a-1 b-0 b-2 | m3: b-1"
    );
}

#[test]
fn unsubscribed_and_unknown_topics_are_ignored_by_every_assignor() {
    let t = topics(&[("a", 2), ("unused", 3)]);
    let m = members(&[("m1", &["a", "missing"])]);
    for assignor in Assignor::ALL {
        assert_eq!(
            render(&assignor.assign(&t, &m)),
            "m1: a-0 a-1",
            "{assignor:?}"
        );
    }
}

#[test]
fn sticky_keeps_owners_when_a_member_leaves() {
    let t = topics(&[("t", 6)]);
    let m = members(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"])]);
    let first = Assignor::CooperativeSticky.assign(&t, &m);
    assert_eq!(render(&first), "a: t-0 t-3 | b: t-1 t-4 | c: t-2 t-5");
    let mut after = owning(&m, &first, 1);
    after.remove("b");
    let second = Assignor::CooperativeSticky.assign(&t, &after);
    // b's partitions had no live owner: assigned at once, nothing revoked.
    assert!(!needs_follow_up(&after, &second));
    assert_eq!(render(&second), "a: t-0 t-1 t-3 | c: t-2 t-4 t-5");
}

#[test]
fn cooperative_sticky_moves_partitions_to_a_new_member_in_two_phases() {
    let t = topics(&[("t", 4)]);
    let m = members(&[("a", &["t"]), ("b", &["t"])]);
    let first = Assignor::CooperativeSticky.assign(&t, &m);
    assert_eq!(render(&first), "a: t-0 t-2 | b: t-1 t-3");

    let mut joined = owning(&m, &first, 1);
    joined.insert(
        "c".into(),
        Subscription {
            topics: vec!["t".into()],
            ..Subscription::default()
        },
    );
    // Phase 1: one partition of a is revoked, assigned to nobody yet.
    let revoke = Assignor::CooperativeSticky.assign(&t, &joined);
    assert_eq!(render(&revoke), "a: t-2 | b: t-1 t-3 | c: ");
    assert!(needs_follow_up(&joined, &revoke));
    // Phase 2: it goes to the new member; nobody else moves.
    let settled = Assignor::CooperativeSticky.assign(&t, &owning(&joined, &revoke, 2));
    assert_eq!(render(&settled), "a: t-2 | b: t-1 t-3 | c: t-0");
    assert!(!needs_follow_up(&owning(&joined, &revoke, 2), &settled));
}

#[test]
fn sticky_resolves_double_claims_by_newer_generation() {
    let t = topics(&[("t", 2)]);
    let mut m = members(&[("a", &["t"]), ("b", &["t"])]);
    let claim = |gen, parts: &[u32]| Subscription {
        topics: vec!["t".into()],
        owned: parts.iter().map(|p| TopicPartition::new("t", *p)).collect(),
        generation: gen,
    };
    m.insert("a".into(), claim(3, &[0, 1]));
    m.insert("b".into(), claim(4, &[1]));
    let assignment = Assignor::CooperativeSticky.assign(&t, &m);
    assert_eq!(render(&assignment), "a: t-0 | b: t-1");
}

#[test]
fn names_round_trip() {
    for assignor in Assignor::ALL {
        assert_eq!(Assignor::from_name(assignor.name()), Some(assignor));
    }
    assert_eq!(Assignor::from_name("sticky"), None);
}

fn arb_group() -> impl Strategy<Value = (BTreeMap<String, u32>, BTreeMap<String, Subscription>)> {
    let topics = prop::collection::btree_map("[a-d]", 0u32..12, 1..4);
    (topics, 1usize..8).prop_flat_map(|(topics, n)| {
        let names: Vec<String> = topics.keys().cloned().collect();
        let subscription = prop::sample::subsequence(names.clone(), 1..=names.len());
        (
            Just(topics),
            prop::collection::vec(subscription, n).prop_map(|subs| {
                subs.into_iter()
                    .enumerate()
                    .map(|(i, topics)| {
                        let sub = Subscription {
                            topics,
                            ..Subscription::default()
                        };
                        (format!("m{i:02}"), sub)
                    })
                    .collect()
            }),
        )
    })
}

proptest! {
    #[test]
    fn every_assignor_assigns_every_partition_exactly_once((topics, members) in arb_group()) {
        for assignor in Assignor::ALL {
            let assignment = assignor.assign(&topics, &members);
            assert_exactly_once(&topics, &members, &assignment);
            prop_assert_eq!(&assignment, &assignor.assign(&topics, &members), "deterministic");
        }
    }

    #[test]
    fn equal_subscriptions_are_balanced(
        partitions in 0u32..40,
        n in 1usize..9,
    ) {
        let t = topics(&[("t", partitions)]);
        let m: BTreeMap<String, Subscription> = (0..n)
            .map(|i| (format!("m{i}"), Subscription { topics: vec!["t".into()], ..Subscription::default() }))
            .collect();
        for assignor in Assignor::ALL {
            prop_assert!(spread(&assignor.assign(&t, &m)) <= 1, "{:?}", assignor);
        }
    }

    /// Members come and go; cooperative-sticky settles, never assigns a
    /// partition twice, ends with every partition assigned, and moves none
    /// of the partitions of members that kept their share.
    #[test]
    fn cooperative_sticky_settles_after_membership_changes(
        (topics, members) in arb_group(),
        leave in prop::collection::vec(any::<bool>(), 8),
        joiners in 0usize..3,
    ) {
        let (first, _) = settle(&topics, members.clone());
        assert_exactly_once(&topics, &members, &first);
        let mut changed = owning(&members, &first, 10);
        let mut index = 0;
        changed.retain(|_, _| { index += 1; !leave[index - 1] });
        for j in 0..joiners {
            let all: Vec<String> = topics.keys().cloned().collect();
            changed.insert(format!("new{j}"), Subscription { topics: all, ..Subscription::default() });
        }
        prop_assume!(!changed.is_empty());
        let (settled, _) = settle(&topics, changed.clone());
        assert_exactly_once(&topics, &changed, &settled);
    }
}
