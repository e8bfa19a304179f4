//! What operators see of leadership on a real three-node cluster
//! (`common::cluster`): Kafka Metadata while a node is down (leaderless
//! partitions with LEADER_NOT_AVAILABLE and leader -1, the down node's
//! replicas offline), `fjord cluster status --json` counting the offline
//! and under-replicated partitions, `fjord topic elect-leaders` (unclean
//! with no live replica: ELIGIBLE_LEADERS_NOT_AVAILABLE; preferred with
//! the first replica down: PREFERRED_LEADER_NOT_AVAILABLE) and `fjord
//! topic describe` with the leader's offsets.
//!
//! After the node returns, its fetchers bring it back into every ISR, a
//! preferred election moves leadership back to the first replicas, and
//! `describe` shows the followers caught up: that test is ignored until
//! leaders serve replica fetches (`cargo nextest run --run-ignored all
//! --test cluster_leaders`).
//!
//! No timing assertions: every wait polls for an outcome, bounded by
//! `CLUSTER_WAIT`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::Output;
use std::thread;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, CLUSTER_WAIT};
use common::kafka::{call, connect};
use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse};

/// One partition as Kafka Metadata v12 shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    error: i16,
    leader: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    offline: Vec<i32>,
}

/// Kafka's LEADER_NOT_AVAILABLE.
const LEADER_NOT_AVAILABLE: i16 = 5;

/// Every partition of `topic` in the Metadata of the node at `kafka`.
fn partitions(kafka: SocketAddr, topic: &str) -> BTreeMap<i32, Seen> {
    let mut stream = connect(kafka);
    let mut request = MetadataRequest::default();
    request.topics = None;
    request.allow_auto_topic_creation = false;
    let response: MetadataResponse = call(&mut stream, ApiKey::Metadata, 12, &request);
    let ids = |b: &[kafka_protocol::messages::BrokerId]| b.iter().map(|b| b.0).collect();
    response
        .topics
        .iter()
        .filter(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
        .flat_map(|t| &t.partitions)
        .map(|p| {
            (
                p.partition_index,
                Seen {
                    error: p.error_code,
                    leader: p.leader_id.0,
                    replicas: ids(&p.replica_nodes),
                    isr: ids(&p.isr_nodes),
                    offline: ids(&p.offline_replicas),
                },
            )
        })
        .collect()
}

/// Polls until `topic` has `count` partitions in `kafka`'s Metadata and
/// `ready` holds for them.
fn wait_partitions(
    cluster: &Cluster,
    kafka: SocketAddr,
    topic: &str,
    count: usize,
    ready: impl Fn(&BTreeMap<i32, Seen>) -> bool,
) -> BTreeMap<i32, Seen> {
    let deadline = Instant::now() + CLUSTER_WAIT;
    loop {
        let seen = partitions(kafka, topic);
        if seen.len() == count && ready(&seen) {
            return seen;
        }
        if Instant::now() >= deadline {
            cluster.fail(&format!("{topic} never got ready: {seen:#?}"));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn fjord(cluster: &Cluster, args: &[&str]) -> Output {
    cluster
        .fjord(args)
        .unwrap_or_else(|e| cluster.fail(&format!("fjord {args:?}: {e}")))
}

fn succeed(cluster: &Cluster, args: &[&str]) -> String {
    let out = fjord(cluster, args);
    if !out.status.success() {
        cluster.fail(&format!(
            "fjord {args:?}: {}: {}{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        ));
    }
    text(&out.stdout)
}

/// `(partition, result)` of each `TOPIC PARTITION RESULT` line.
fn elections(stdout: &str, topic: &str) -> BTreeMap<i32, String> {
    stdout
        .lines()
        .filter_map(|l| {
            let mut words = l.splitn(3, ' ');
            (words.next()? == topic).then_some(())?;
            Some((words.next()?.parse().ok()?, words.next()?.to_owned()))
        })
        .collect()
}

#[test]
fn leadership_and_elections_are_visible_while_a_node_is_down() {
    let mut cluster = Cluster::start(3);
    let controller = cluster.controller();
    let victim = cluster
        .ids()
        .into_iter()
        .find(|&id| id != controller)
        .expect("a non-controller");
    let survivor = controller;
    let via = cluster.node(survivor).native.to_string();
    let kafka = cluster.node(survivor).kafka;

    for (topic, replicas) in [("replicated", "3"), ("single", "1")] {
        let out = succeed(
            &cluster,
            &[
                "topic", "create", topic, "-p", "3", "-r", replicas, "-b", &via,
            ],
        );
        assert_eq!(out, format!("created topic {topic} (3 partitions)\n"));
    }
    let before = wait_partitions(&cluster, kafka, "replicated", 3, |seen| {
        seen.values()
            .all(|p| p.leader >= 0 && p.replicas.len() == 3 && p.isr.len() == 3)
    });
    let single = wait_partitions(&cluster, kafka, "single", 3, |seen| {
        seen.values().all(|p| p.leader >= 0)
    });
    let on_victim: BTreeSet<i32> = single
        .iter()
        .filter(|(_, p)| p.replicas == [victim as i32])
        .map(|(&i, _)| i)
        .collect();
    assert!(
        !on_victim.is_empty(),
        "node {victim} holds some of {single:?}"
    );

    cluster.kill(victim);
    cluster.wait_status(&format!("node {victim} fenced"), |s| s.fenced(victim));
    let v = victim as i32;
    let down = wait_partitions(&cluster, kafka, "replicated", 3, |seen| {
        seen.values().all(|p| p.leader >= 0 && p.leader != v)
    });
    for p in down.values() {
        assert_eq!(p.offline, [v], "{p:?}");
        assert_eq!(p.error, 0, "{p:?}");
    }
    let single_down = wait_partitions(&cluster, kafka, "single", 3, |seen| {
        on_victim.iter().all(|i| seen[i].leader == -1)
    });
    for (i, p) in &single_down {
        if on_victim.contains(i) {
            assert_eq!(
                (p.error, p.leader, p.offline.as_slice()),
                (LEADER_NOT_AVAILABLE, -1, [v].as_slice()),
                "{p:?}"
            );
        } else {
            assert_eq!((p.error, p.offline.len()), (0, 0), "{p:?}");
        }
    }

    // `cluster status` counts every partition without a leader (this
    // test's, and any of `__consumer_offsets` that lived on the victim
    // alone) and every one whose ISR lost the victim (the controller takes
    // a fenced node out of the ISR), as Metadata shows them.
    let replicated = wait_partitions(&cluster, kafka, "replicated", 3, |seen| {
        seen.values().all(|p| !p.isr.contains(&v))
    });
    assert!(
        replicated.values().all(|p| p.isr.len() == 2),
        "{replicated:?}"
    );
    let json = succeed(&cluster, &["cluster", "status", "--json", "-b", &via]);
    let status: serde_json::Value = serde_json::from_str(json.trim()).expect("json");
    let count = |what: &str| status["partitions"][what].as_u64().expect(what);
    assert!(count("offline") >= on_victim.len() as u64, "{json}");
    assert!(count("under_replicated") >= 3, "{json}");
    assert!(count("total") >= 6, "{json}");

    // An unclean election cannot help a partition whose only replica is
    // down; the others need none.
    let unclean = fjord(
        &cluster,
        &[
            "topic",
            "elect-leaders",
            "--topic",
            "single",
            "--type",
            "unclean",
            "-b",
            &via,
        ],
    );
    assert!(!unclean.status.success(), "{}", text(&unclean.stdout));
    let results = elections(&text(&unclean.stdout), "single");
    for i in 0..3 {
        let want = if on_victim.contains(&i) {
            "ELIGIBLE_LEADERS_NOT_AVAILABLE (no replica is live)"
        } else {
            "ELECTION_NOT_NEEDED"
        };
        assert_eq!(
            results.get(&i).map(String::as_str),
            Some(want),
            "{results:?}"
        );
    }

    // A preferred election cannot move a partition back to the victim
    // while it is down; the partitions it is not first replica of need
    // none.
    let moved: BTreeSet<i32> = before
        .iter()
        .filter(|(_, p)| p.leader == v)
        .map(|(&i, _)| i)
        .collect();
    assert!(!moved.is_empty(), "node {victim} led some of {before:?}");
    let preferred = fjord(
        &cluster,
        &[
            "topic",
            "elect-leaders",
            "--topic",
            "replicated",
            "-b",
            &via,
        ],
    );
    assert!(!preferred.status.success(), "{}", text(&preferred.stdout));
    let results = elections(&text(&preferred.stdout), "replicated");
    for i in 0..3 {
        // A new partition's leader is its first replica.
        let want = if moved.contains(&i) {
            format!("PREFERRED_LEADER_NOT_AVAILABLE (the preferred leader {victim} is not live)")
        } else {
            "ELECTION_NOT_NEEDED".to_owned()
        };
        assert_eq!(results.get(&i), Some(&want), "{results:?}");
    }
    let after = partitions(kafka, "replicated");
    for (i, p) in &after {
        assert_eq!(p.leader, down[i].leader, "no leader moved: {p:?}");
    }

    // `describe` shows each partition's leader's offsets (an empty log:
    // 0 and 0); lag cells are per follower, or `-`.
    let out = succeed(&cluster, &["topic", "describe", "replicated", "-b", &via]);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip_while(|l| !l.starts_with("PARTITION "))
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "{out}");
    for row in rows {
        assert_eq!(row.len(), 11, "{out}");
        let p = &after[&row[0].parse::<i32>().expect("partition")];
        assert_eq!(row[1], p.leader.to_string(), "{out}");
        assert_eq!(row[5..7], ["0", "0"], "{out}");
        let lag_ok = row[7] == "-"
            || row[7].split(',').all(|cell| {
                cell.split_once(':').is_some_and(|(node, lag)| {
                    node.parse::<i32>().is_ok_and(|n| p.replicas.contains(&n))
                        && (lag == "?" || lag.parse::<u64>().is_ok())
                })
            });
        assert!(lag_ok, "{out}");
    }
}

/// `describe`'s rows for `topic` asked of `via`, split into cells.
fn describe_rows(cluster: &Cluster, topic: &str, via: &str) -> (String, Vec<Vec<String>>) {
    let out = succeed(cluster, &["topic", "describe", topic, "-b", via]);
    let rows = out
        .lines()
        .skip_while(|l| !l.starts_with("PARTITION "))
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    (out, rows)
}

/// After a killed node returns, its replica fetchers bring it back into
/// every ISR; a preferred election then moves leadership back to the first
/// replicas (its own partitions), and `describe` shows every follower
/// caught up (lag 0 from the leader's view).
#[test]
fn after_a_node_returns_a_preferred_election_moves_leadership_back() {
    let mut cluster = Cluster::start(3);
    let controller = cluster.controller();
    let victim = cluster
        .ids()
        .into_iter()
        .find(|&id| id != controller)
        .expect("a non-controller");
    let v = victim as i32;
    let via = cluster.node(controller).native.to_string();
    let kafka = cluster.node(controller).kafka;
    succeed(
        &cluster,
        &["topic", "create", "back", "-p", "3", "-r", "3", "-b", &via],
    );
    let before = wait_partitions(&cluster, kafka, "back", 3, |seen| {
        seen.values().all(|p| p.leader >= 0 && p.isr.len() == 3)
    });
    let moved: BTreeSet<i32> = before
        .iter()
        .filter(|(_, p)| p.leader == v)
        .map(|(&i, _)| i)
        .collect();
    assert!(!moved.is_empty(), "node {victim} led some of {before:?}");

    cluster.kill(victim);
    cluster.wait_status(&format!("node {victim} fenced"), |s| s.fenced(victim));
    wait_partitions(&cluster, kafka, "back", 3, |seen| {
        seen.values()
            .all(|p| p.leader >= 0 && p.leader != v && !p.isr.contains(&v))
    });
    cluster.restart(victim);
    cluster.wait_ready();
    let rejoined = wait_partitions(&cluster, kafka, "back", 3, |seen| {
        seen.values().all(|p| p.isr.len() == 3)
    });
    for (i, p) in &rejoined {
        assert_ne!(p.leader, v, "partition {i} moved back on its own: {p:?}");
    }

    let out = succeed(
        &cluster,
        &["topic", "elect-leaders", "--topic", "back", "-b", &via],
    );
    let results = elections(&out, "back");
    for i in 0..3 {
        let want = if moved.contains(&i) {
            "elected (PREFERRED)"
        } else {
            "ELECTION_NOT_NEEDED"
        };
        assert_eq!(results.get(&i).map(String::as_str), Some(want), "{out}");
    }
    let after = partitions(kafka, "back");
    for (i, p) in &after {
        assert_eq!(p.leader, p.replicas[0], "partition {i}: {p:?}");
    }

    // Each leader reports its followers caught up: lag 0 for both.
    let deadline = Instant::now() + CLUSTER_WAIT;
    loop {
        let (out, rows) = describe_rows(&cluster, "back", &via);
        assert_eq!(rows.len(), 3, "{out}");
        let caught_up = rows.iter().all(|row| {
            let p = &after[&row[0].parse::<i32>().expect("partition")];
            let mut want: Vec<String> = p.replicas[1..].iter().map(|n| format!("{n}:0")).collect();
            let mut lag: Vec<String> = row[7].split(',').map(str::to_owned).collect();
            want.sort();
            lag.sort();
            row[1] == p.leader.to_string() && row[5] == row[6] && lag == want
        });
        if caught_up {
            break;
        }
        if Instant::now() >= deadline {
            cluster.fail(&format!("followers never shown caught up:\n{out}"));
        }
        thread::sleep(Duration::from_millis(200));
    }
}
