//! `fjord_net::client::group_consumer::GroupConsumer` in-process against a
//! real 2-shard broker: rebalance callbacks with commit before revoke,
//! auto-commit, static membership (a restart gets its partitions back and
//! resumes at the commits), and leaving on a missed `max_poll_interval`.
//! Assertions on membership and delivery only; deadlines only keep a broken
//! broker from hanging the suite.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{batch, Broker, PATIENCE};
use fjord_net::client::assignor::TopicPartition;
use fjord_net::client::consumer::{ConsumerOptions, ConsumerRecord};
use fjord_net::client::group_consumer::{GroupConsumer, GroupOptions, RebalanceListener};
use fjord_net::client::{Client, ClientConfig};
use fjord_schema::ErrorCode;

const TOPIC: &str = "jobs";

fn start_broker(dir: &tempfile::TempDir) -> Broker {
    let config = dir.path().join("fjord.toml");
    std::fs::write(
        &config,
        "group_min_session_timeout_ms = 1000\ngroup_initial_rebalance_delay_ms = 100\n",
    )
    .expect("config");
    Broker::start(&["--shards", "2", "--config", config.to_str().expect("utf8")])
}

fn produce(broker: &Broker, partitions: u32, tag: &str, count: usize) {
    let mut conn = broker.conn();
    for partition in 0..partitions {
        let values: Vec<String> = (0..count)
            .map(|i| format!("{tag}-{partition}-{i}"))
            .collect();
        let records: Vec<(&[u8], &[u8])> =
            values.iter().map(|v| (&b"k"[..], v.as_bytes())).collect();
        let (error, _) = conn.produce(TOPIC, partition, &batch(&records, 1), -1);
        assert_eq!(error, ErrorCode::None);
    }
}

/// ("assigned" | "revoked", partitions), in call order.
type Event = (String, Vec<TopicPartition>);

#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<Event>>>);

impl RebalanceListener for Events {
    fn on_revoked(&mut self, partitions: &[TopicPartition]) {
        self.0
            .lock()
            .expect("not poisoned")
            .push(("revoked".into(), partitions.to_vec()));
    }
    fn on_assigned(&mut self, partitions: &[TopicPartition]) {
        self.0
            .lock()
            .expect("not poisoned")
            .push(("assigned".into(), partitions.to_vec()));
    }
}

/// A static member; its session outlives the test, so only a restart of
/// the same instance takes its place.
fn member(addr: SocketAddr, group: &str, instance: Option<&str>) -> GroupConsumer {
    let mut options = GroupOptions::new(group);
    options.instance_id = instance.map(str::to_owned);
    options.session_timeout = Duration::from_secs(600);
    options.heartbeat_interval = Duration::from_millis(200);
    options.auto_commit_interval = Duration::from_millis(100);
    let mut consumer = GroupConsumer::new(ConsumerOptions::new(addr.to_string()), options)
        .expect("group consumer");
    consumer.subscribe(&[TOPIC]);
    consumer
}

/// Polls until `count` records arrived.
fn poll_n(consumer: &mut GroupConsumer, count: usize) -> Vec<ConsumerRecord> {
    let deadline = Instant::now() + PATIENCE;
    let mut records = Vec::new();
    while records.len() < count {
        assert!(Instant::now() < deadline, "only {} records", records.len());
        records.extend(consumer.poll(Duration::from_millis(200)).expect("poll"));
    }
    records
}

fn committed(addr: SocketAddr, group: &str) -> BTreeMap<u32, i64> {
    Client::connect(addr, ClientConfig::default())
        .expect("connect")
        .offset_fetch(group, None)
        .expect("offset fetch")
        .into_iter()
        .map(|o| (o.partition, o.offset))
        .collect()
}

fn members_of(addr: SocketAddr, group: &str) -> Vec<String> {
    Client::connect(addr, ClientConfig::default())
        .expect("connect")
        .describe_groups(&[group])
        .expect("describe")
        .into_iter()
        .flat_map(|g| g.members)
        .map(|m| m.member_id)
        .collect()
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !ready() {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn static_member_restarts_with_its_partitions_at_the_committed_offsets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_broker(&dir);
    let addr = broker.addr;
    assert_eq!(broker.conn().create_topic(TOPIC, 4, &[]), ErrorCode::None);
    produce(&broker, 4, "a", 10);

    let events = Events::default();
    let mut first = member(addr, "static", Some("worker-1"));
    first.set_listener(Box::new(events.clone()));
    let records = poll_n(&mut first, 40);
    let values: BTreeSet<String> = records
        .iter()
        .map(|r| String::from_utf8(r.value.clone().expect("value").to_vec()).expect("utf8"))
        .collect();
    assert_eq!(values.len(), 40, "each record once");
    let all: Vec<TopicPartition> = (0..4).map(|p| TopicPartition::new(TOPIC, p)).collect();
    assert_eq!(first.assignment(), all.as_slice());
    let member_id = first.member_id().to_owned();
    first.commit_async().expect("async commit sent");
    first.wait_async_commits().expect("async commit answered");
    assert_eq!(
        committed(addr, "static")
            .values()
            .copied()
            .collect::<Vec<_>>(),
        [10; 4],
        "the async commit is durable once answered"
    );
    first.close().expect("close");
    {
        let events = events.0.lock().expect("not poisoned");
        assert_eq!(events.first(), Some(&("assigned".to_owned(), all.clone())));
        assert_eq!(events.last(), Some(&("revoked".to_owned(), all.clone())));
    }
    // Committed before the revoke: all 40 records.
    let after_close = committed(addr, "static");
    assert_eq!(after_close.values().copied().collect::<Vec<_>>(), [10; 4]);
    // A static member does not leave on close.
    assert_eq!(members_of(addr, "static"), [member_id]);

    // The same instance comes back: same partitions, resumes at the commits.
    produce(&broker, 4, "b", 1);
    let mut second = member(addr, "static", Some("worker-1"));
    let records = poll_n(&mut second, 4);
    assert!(records.iter().all(|r| r.offset.get() == 10), "{records:?}");
    assert_eq!(second.assignment(), all.as_slice());
    second.close().expect("close");
}

#[test]
fn a_member_that_stops_polling_leaves_and_rejoins_on_the_next_poll() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_broker(&dir);
    let addr = broker.addr;
    assert_eq!(broker.conn().create_topic(TOPIC, 2, &[]), ErrorCode::None);
    produce(&broker, 2, "x", 3);

    let mut options = GroupOptions::new("slow");
    options.session_timeout = Duration::from_secs(3);
    options.heartbeat_interval = Duration::from_millis(100);
    options.max_poll_interval = Duration::from_millis(1_500);
    let mut consumer = GroupConsumer::new(ConsumerOptions::new(addr.to_string()), options)
        .expect("group consumer");
    consumer.subscribe(&[TOPIC]);
    poll_n(&mut consumer, 6);
    consumer.commit_sync().expect("commit");
    assert_eq!(members_of(addr, "slow").len(), 1);
    // No poll: the heartbeat thread leaves the group.
    wait_for("the member left", || members_of(addr, "slow").is_empty());
    // The next poll rejoins and gets the partitions back.
    produce(&broker, 2, "y", 1);
    let records = poll_n(&mut consumer, 2);
    assert!(records.iter().all(|r| r.offset.get() == 3), "{records:?}");
    assert_eq!(members_of(addr, "slow").len(), 1);
    consumer.close().expect("close");
    assert!(
        members_of(addr, "slow").is_empty(),
        "a dynamic member leaves on close"
    );
}

#[test]
fn partitions_without_commits_start_per_auto_offset_reset() {
    use fjord_net::client::consumer::OffsetReset;

    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_broker(&dir);
    let addr = broker.addr;
    assert_eq!(broker.conn().create_topic(TOPIC, 2, &[]), ErrorCode::None);
    produce(&broker, 2, "old", 5);

    let mut consumer_options = ConsumerOptions::new(addr.to_string());
    consumer_options.consumer.auto_offset_reset = OffsetReset::Latest;
    let mut options = GroupOptions::new("tail");
    options.session_timeout = Duration::from_secs(600);
    let mut consumer = GroupConsumer::new(consumer_options, options).expect("group consumer");
    consumer.subscribe(&[TOPIC]);
    // The first poll joins and positions both partitions at their ends.
    let records = consumer.poll(Duration::from_millis(100)).expect("poll");
    assert!(records.is_empty(), "{records:?}");
    assert_eq!(consumer.assignment().len(), 2);
    produce(&broker, 2, "new", 1);
    let records = poll_n(&mut consumer, 2);
    assert!(records.iter().all(|r| r.offset.get() == 5), "{records:?}");
    consumer.close().expect("close");
    // Committed at close: the next member starts after what was read.
    assert_eq!(
        committed(addr, "tail")
            .values()
            .copied()
            .collect::<Vec<_>>(),
        [6, 6]
    );
}

/// Runs `consumer` on a thread, polling until `stop`; returns it.
fn keep_polling(
    mut consumer: GroupConsumer,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> thread::JoinHandle<GroupConsumer> {
    thread::spawn(move || {
        while !stop.load(std::sync::atomic::Ordering::Acquire) {
            consumer.poll(Duration::from_millis(50)).expect("poll");
        }
        consumer
    })
}

#[test]
fn cooperative_members_keep_their_partitions_and_give_up_only_what_moves() {
    use fjord_net::client::assignor::Assignor;

    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_broker(&dir);
    let addr = broker.addr;
    assert_eq!(broker.conn().create_topic(TOPIC, 6, &[]), ErrorCode::None);
    let cooperative = |events: &Events| {
        let mut options = GroupOptions::new("coop");
        options.session_timeout = Duration::from_secs(600);
        options.heartbeat_interval = Duration::from_millis(100);
        options.assignors = vec![Assignor::CooperativeSticky];
        let mut consumer = GroupConsumer::new(ConsumerOptions::new(addr.to_string()), options)
            .expect("group consumer");
        consumer.set_listener(Box::new(events.clone()));
        consumer.subscribe(&[TOPIC]);
        consumer
    };
    let first_events = Events::default();
    let mut first = cooperative(&first_events);
    first.poll(Duration::from_millis(50)).expect("poll");
    assert_eq!(first.assignment().len(), 6);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let first = keep_polling(first, stop.clone());
    let second_events = Events::default();
    let second = keep_polling(cooperative(&second_events), stop.clone());

    // Stable with both members owning three partitions each, once.
    wait_for("3 + 3 partitions", || {
        let Ok(groups) = Client::connect(addr, ClientConfig::default())
            .expect("connect")
            .describe_groups(&["coop"])
        else {
            return false;
        };
        let group = &groups[0];
        let mut owned: Vec<u32> = Vec::new();
        let mut sizes = Vec::new();
        for m in &group.members {
            let parts = fjord_net::client::consumer_protocol::decode_assignment(&m.assignment)
                .expect("assignment");
            sizes.push(parts.len());
            owned.extend(parts.iter().map(|tp| tp.partition));
        }
        owned.sort_unstable();
        group.state == "Stable" && sizes == [3, 3] && owned == (0..6).collect::<Vec<_>>()
    });
    stop.store(true, std::sync::atomic::Ordering::Release);
    let first = first.join().expect("first");
    let second = second.join().expect("second");
    let kept: BTreeSet<TopicPartition> = first.assignment().iter().cloned().collect();
    let moved: BTreeSet<TopicPartition> = second.assignment().iter().cloned().collect();
    assert_eq!(kept.len(), 3);
    assert!(kept.is_disjoint(&moved));
    // The first member was assigned all six once and revoked only the
    // three that moved; it never gave up the ones it kept.
    let events = first_events.0.lock().expect("not poisoned").clone();
    let revoked: BTreeSet<TopicPartition> = events
        .iter()
        .filter(|(kind, _)| kind == "revoked")
        .flat_map(|(_, p)| p.iter().cloned())
        .collect();
    assert_eq!(revoked, moved, "{events:?}");
    let assigned: Vec<_> = events
        .iter()
        .filter(|(kind, _)| kind == "assigned")
        .collect();
    assert_eq!(assigned.len(), 1, "{events:?}");
    assert_eq!(assigned[0].1.len(), 6);
    let second_assigned: BTreeSet<TopicPartition> = second_events
        .0
        .lock()
        .expect("not poisoned")
        .iter()
        .filter(|(kind, _)| kind == "assigned")
        .flat_map(|(_, p)| p.iter().cloned())
        .collect();
    assert_eq!(second_assigned, moved);
    first.close().expect("close");
    second.close().expect("close");
}
