//! A consumer group of real processes (`fjord consume --group`) against a
//! real 2-shard broker: partitions are shared out exactly once, a SIGKILLed
//! member's partitions move to the survivors, every message is consumed,
//! and a restarted group resumes at its committed offsets. Assertions are
//! on ownership and delivery only, never on timing: deadlines only keep a
//! broken broker from hanging the suite.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{batch, Broker, PATIENCE};
use fjord_net::client::consumer_protocol::decode_assignment;
use fjord_net::client::protocol::NewTopic;
use fjord_net::client::{Client, ClientConfig};
use fjord_schema::ErrorCode;

const TOPIC: &str = "events";
const GROUP: &str = "readers";
const PARTITIONS: u32 = 12;

/// (partition, offset, value) as printed by `--format '%p %o %v'`.
type Line = (u32, u64, String);

/// One `fjord consume --group` process and what it printed so far.
struct Member {
    child: Child,
    lines: Arc<Mutex<Vec<Line>>>,
}

impl Member {
    fn start(addr: SocketAddr) -> Member {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fjord"))
            .args(["consume", TOPIC, "--group", GROUP, "--format", "%p %o %v"])
            .args(["--session-timeout-ms", "3000"])
            .args(["--heartbeat-interval-ms", "300"])
            .args(["--brokers", &addr.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn fjord consume");
        let stdout = child.stdout.take().expect("piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let mut parts = line.splitn(3, ' ');
                let parsed = (|| {
                    let p = parts.next()?.parse().ok()?;
                    let o = parts.next()?.parse().ok()?;
                    Some((p, o, parts.next()?.to_owned()))
                })();
                sink.lock()
                    .expect("not poisoned")
                    .push(parsed.unwrap_or_else(|| panic!("unparseable line {line:?}")));
            }
        });
        Member { child, lines }
    }

    fn kill(&mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    fn lines(&self) -> Vec<Line> {
        self.lines.lock().expect("not poisoned").clone()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client(addr: SocketAddr) -> Client {
    Client::connect(addr, ClientConfig::default()).expect("connect")
}

/// Produces `per_partition` records to every partition; values name the
/// round, partition and sequence so every one is distinct.
fn produce_round(broker: &Broker, round: u32, per_partition: u32) -> BTreeSet<String> {
    let mut produced = BTreeSet::new();
    let mut conn = broker.conn();
    for partition in 0..PARTITIONS {
        let values: Vec<String> = (0..per_partition)
            .map(|i| format!("r{round}-p{partition}-{i}"))
            .collect();
        let records: Vec<(&[u8], &[u8])> =
            values.iter().map(|v| (&b"k"[..], v.as_bytes())).collect();
        let (error, _) = conn.produce(TOPIC, partition, &batch(&records, 1), -1);
        assert_eq!(error, ErrorCode::None);
        produced.extend(values);
    }
    produced
}

/// Polls until `ready` holds, panicking with `what` after the patience.
fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !ready() {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// The group's members and their partitions, once the group is Stable.
fn stable_ownership(addr: SocketAddr) -> Option<BTreeMap<String, Vec<u32>>> {
    let groups = client(addr).describe_groups(&[GROUP]).ok()?;
    let group = groups.into_iter().next()?;
    if group.state != "Stable" {
        return None;
    }
    let mut owners = BTreeMap::new();
    for member in group.members {
        let partitions = decode_assignment(&member.assignment).expect("assignment bytes");
        assert!(partitions.iter().all(|tp| tp.topic == TOPIC));
        owners.insert(
            member.member_id,
            partitions.iter().map(|tp| tp.partition).collect(),
        );
    }
    Some(owners)
}

/// Waits until the group is Stable with `members` members that own every
/// partition exactly once.
fn wait_for_exact_ownership(addr: SocketAddr, members: usize) -> BTreeMap<String, Vec<u32>> {
    let mut seen = None;
    wait_for(
        &format!("{members} members owning each partition once"),
        || {
            let Some(owners) = stable_ownership(addr) else {
                return false;
            };
            let mut all: Vec<u32> = owners.values().flatten().copied().collect();
            all.sort_unstable();
            let exact = owners.len() == members && all == (0..PARTITIONS).collect::<Vec<_>>();
            if exact {
                seen = Some(owners);
            }
            exact
        },
    );
    seen.expect("set when ready")
}

fn consumed_values(members: &[&Member]) -> BTreeSet<String> {
    members
        .iter()
        .flat_map(|m| m.lines())
        .map(|(_, _, v)| v)
        .collect()
}

#[test]
fn a_group_of_processes_shares_partitions_survives_a_kill_and_resumes_from_commits() {
    let config_dir = tempfile::tempdir().expect("tempdir");
    let config = config_dir.path().join("fjord.toml");
    std::fs::write(
        &config,
        "group_min_session_timeout_ms = 1000\ngroup_initial_rebalance_delay_ms = 300\n",
    )
    .expect("config");
    let broker = Broker::start(&["--shards", "2", "--config", config.to_str().expect("utf8")]);
    let addr = broker.addr;
    let created = client(addr)
        .create_topics(
            &[NewTopic {
                name: TOPIC.to_owned(),
                partitions: Some(PARTITIONS),
                replication_factor: None,
                configs: Vec::new(),
            }],
            10_000,
        )
        .expect("create");
    assert_eq!(created[0].error, ErrorCode::None);
    let mut produced = produce_round(&broker, 0, 50);

    // Three members share the twelve partitions.
    let mut members: Vec<Member> = (0..3).map(|_| Member::start(addr)).collect();
    let owners = wait_for_exact_ownership(addr, 3);
    assert!(owners.values().all(|p| !p.is_empty()), "{owners:?}");
    wait_for("round 0 consumed", || {
        consumed_values(&members.iter().collect::<Vec<_>>()).is_superset(&produced)
    });
    // Each partition was read by one member only while the group was stable.
    let mut readers: BTreeMap<u32, BTreeSet<usize>> = BTreeMap::new();
    for (i, m) in members.iter().enumerate() {
        for (p, _, _) in m.lines() {
            readers.entry(p).or_default().insert(i);
        }
    }
    assert_eq!(readers.len(), PARTITIONS as usize);

    // SIGKILL one member: its partitions move to the other two.
    members[0].kill();
    let after_kill = wait_for_exact_ownership(addr, 2);
    assert_eq!(after_kill.values().map(Vec::len).sum::<usize>(), 12);
    produced.extend(produce_round(&broker, 1, 50));
    wait_for("round 1 consumed by the survivors", || {
        consumed_values(&[&members[1], &members[2]]).is_superset(
            &produced
                .iter()
                .filter(|v| v.starts_with("r1-"))
                .cloned()
                .collect(),
        )
    });
    let everything = consumed_values(&members.iter().collect::<Vec<_>>());
    assert!(
        everything.is_superset(&produced),
        "every produced message consumed"
    );

    // Stop the group; what it committed is where a new group starts.
    for member in &mut members {
        let _ = member.child.kill();
        let _ = member.child.wait();
    }
    let committed: BTreeMap<u32, i64> = client(addr)
        .offset_fetch(GROUP, None)
        .expect("offset fetch")
        .into_iter()
        .map(|o| (o.partition, o.offset))
        .collect();
    assert_eq!(committed.len(), PARTITIONS as usize, "{committed:?}");
    // Everything consumed so far was printed, hence committed up to its
    // tail: every commit is at most the log end (100 per partition).
    assert!(committed.values().all(|o| (0..=100).contains(o)));

    let fresh = produce_round(&broker, 2, 30);
    let restarted: Vec<Member> = (0..3).map(|_| Member::start(addr)).collect();
    wait_for_exact_ownership(addr, 3);
    wait_for("round 2 consumed by the restarted group", || {
        consumed_values(&restarted.iter().collect::<Vec<_>>()).is_superset(&fresh)
    });
    for member in &restarted {
        for (p, o, v) in member.lines() {
            assert!(
                o as i64 >= committed[&p],
                "{v} at {p}/{o} was committed (up to {}) and re-delivered",
                committed[&p]
            );
        }
    }
    // The restarted group starts exactly at the commits: the first record
    // read of each partition is the committed offset.
    let mut first: BTreeMap<u32, u64> = BTreeMap::new();
    for member in &restarted {
        for (p, o, _) in member.lines() {
            let slot = first.entry(p).or_insert(o);
            *slot = (*slot).min(o);
        }
    }
    for (p, o) in &first {
        assert_eq!(*o as i64, committed[p], "partition {p} resumed elsewhere");
    }
}
