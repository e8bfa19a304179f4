//! Consumer groups through the Kafka listener with a real Kafka client
//! (rdkafka, bundled librdkafka): two members share a topic's partitions,
//! commit, ride through a SIGKILL restart of the broker (same Kafka port)
//! and resume from their commits; a fresh member after they leave resumes
//! from the commits too; then the group is listed, described and deleted,
//! and the delete survives another restart.
//!
//! No timing assertions: deadlines only keep a broken broker from hanging
//! the suite.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Broker, PATIENCE};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const TOPIC: &str = "grouped";
const GROUP: &str = "kafka-groups-test";
const PARTITIONS: i32 = 4;

fn config(broker: &Broker) -> ClientConfig {
    let mut config = common::kafka::client_config(broker);
    // Reconnect quickly once the broker is back.
    config.set("reconnect.backoff.max.ms", "500");
    config
}

/// Counts the assignments a member received (rebalances it took part in).
#[derive(Clone, Default)]
struct Assignments(Arc<AtomicUsize>);

impl Assignments {
    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl ClientContext for Assignments {}

impl ConsumerContext for Assignments {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = rebalance {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

type Member = BaseConsumer<Assignments>;

fn consumer(broker: &Broker, name: &str) -> Member {
    config(broker)
        .set("group.id", GROUP)
        .set("client.id", name)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "500")
        .create_with_context(Assignments::default())
        .expect("consumer")
}

/// Produces `count` keyed records with an idempotent acks=all producer;
/// returns their "key=value" strings.
fn produce(broker: &Broker, from: usize, count: usize) -> BTreeSet<String> {
    let producer: FutureProducer = config(broker)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let mut sent = BTreeSet::new();
    let mut deliveries = Vec::new();
    for i in from..from + count {
        let key = format!("key-{}", i % 17);
        let value = format!("value-{i}");
        let delivery = producer
            .send_result(FutureRecord::to(TOPIC).key(&key).payload(&value))
            .map_err(|(e, _)| e)
            .expect("queued");
        deliveries.push(delivery);
        sent.insert(format!("{key}={value}"));
    }
    for delivery in deliveries {
        futures_lite::future::block_on(delivery)
            .expect("delivery future")
            .expect("acknowledged");
    }
    sent
}

/// What one member consumed: "key=value" per partition.
type Consumed = BTreeMap<i32, Vec<String>>;

/// Polls `members` round robin until `expected` records arrived in total.
fn consume(members: &[&Member], expected: usize, seen: &mut [Consumed]) {
    let deadline = Instant::now() + PATIENCE;
    let total = |seen: &[Consumed]| -> usize {
        seen.iter()
            .flat_map(|m| m.values())
            .map(Vec::len)
            .sum::<usize>()
    };
    let start = total(seen);
    while total(seen) - start < expected {
        assert!(
            Instant::now() < deadline,
            "consumed {} of {expected}",
            total(seen) - start
        );
        for (member, out) in members.iter().zip(seen.iter_mut()) {
            match member.poll(Duration::from_millis(50)) {
                Some(Ok(message)) => {
                    let key = String::from_utf8(message.key().expect("key").to_vec()).unwrap();
                    let value =
                        String::from_utf8(message.payload().expect("value").to_vec()).unwrap();
                    out.entry(message.partition())
                        .or_default()
                        .push(format!("{key}={value}"));
                }
                // Transient while the broker restarts (transport errors).
                Some(Err(error)) => eprintln!("poll: {error}"),
                None => {}
            }
        }
    }
}

/// Polls until every member has a non-empty assignment and together they
/// hold each partition exactly once; returns the assignments.
fn await_shared_assignment(members: &[&Member]) -> Vec<BTreeSet<i32>> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let assignments: Vec<BTreeSet<i32>> = members
            .iter()
            .map(|m| {
                m.assignment()
                    .expect("assignment")
                    .elements()
                    .iter()
                    .map(|e| e.partition())
                    .collect()
            })
            .collect();
        let all: Vec<i32> = assignments.iter().flatten().copied().collect();
        let union: BTreeSet<i32> = all.iter().copied().collect();
        if assignments.iter().all(|a| !a.is_empty())
            && all.len() == PARTITIONS as usize
            && union == (0..PARTITIONS).collect()
        {
            return assignments;
        }
        assert!(
            Instant::now() < deadline,
            "no shared assignment: {assignments:?}"
        );
        for member in members {
            if let Some(Err(error)) = member.poll(Duration::from_millis(50)) {
                eprintln!("poll: {error}");
            }
        }
    }
}

fn committed(consumer: &Member) -> BTreeMap<i32, Offset> {
    let mut wanted = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        wanted.add_partition(TOPIC, p);
    }
    consumer
        .committed_offsets(wanted, PATIENCE)
        .expect("OffsetFetch")
        .elements()
        .iter()
        .map(|e| (e.partition(), e.offset()))
        .collect()
}

fn high_watermarks(consumer: &Member) -> BTreeMap<i32, Offset> {
    (0..PARTITIONS)
        .map(|p| {
            let (_, high) = consumer
                .fetch_watermarks(TOPIC, p, PATIENCE)
                .expect("watermarks");
            (p, Offset::Offset(high))
        })
        .collect()
}

#[test]
fn group_shares_partitions_commits_and_resumes_after_restart() {
    let config_dir = tempfile::tempdir().expect("tempdir");
    let config_file = config_dir.path().join("fjord.toml");
    std::fs::write(&config_file, "group_initial_rebalance_delay_ms = 1000\n").expect("config");
    // Pinned, so the members reconnect to the restarted broker.
    let kafka = format!("127.0.0.1:{}", Broker::free_fixed_port());
    let mut broker = Broker::start(&[
        "--shards",
        "2",
        "--config",
        config_file.to_str().unwrap(),
        "--kafka-listen",
        &kafka,
    ]);

    let admin: AdminClient<DefaultClientContext> = config(&broker).create().expect("admin");
    let topic = NewTopic::new(TOPIC, PARTITIONS, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(PATIENCE));
    for result in
        futures_lite::future::block_on(admin.create_topics(&[topic], &options)).expect("create")
    {
        result.expect("topic created");
    }
    drop(admin);

    // Two members share the partitions.
    let mut sent = produce(&broker, 0, 200);
    let a = consumer(&broker, "member-a");
    let b = consumer(&broker, "member-b");
    a.subscribe(&[TOPIC]).expect("subscribe");
    b.subscribe(&[TOPIC]).expect("subscribe");
    let assignments = await_shared_assignment(&[&a, &b]);
    let mut seen = vec![Consumed::new(), Consumed::new()];
    consume(&[&a, &b], 200, &mut seen);
    for (member, assignment) in seen.iter().zip(&assignments) {
        let partitions: BTreeSet<i32> = member.keys().copied().collect();
        assert!(
            partitions.is_subset(assignment),
            "consumed {partitions:?} outside its assignment {assignment:?}"
        );
    }
    let got: BTreeSet<String> = seen
        .iter()
        .flat_map(|m| m.values().flatten().cloned())
        .collect();
    assert_eq!(got, sent, "the first 200 records, each once");
    a.commit_consumer_state(CommitMode::Sync).expect("commit a");
    b.commit_consumer_state(CommitMode::Sync).expect("commit b");
    assert_eq!(committed(&a), high_watermarks(&a), "commits are at the end");

    // SIGKILL the broker; it comes back on the same Kafka port, the same
    // members rejoin (the coordinator's membership died with it) and carry
    // on from their acknowledged commits.
    let before = (a.context().count(), b.context().count());
    broker.kill_and_restart();
    assert_eq!(broker.kafka_addr().to_string(), kafka);
    let deadline = Instant::now() + PATIENCE;
    while a.context().count() == before.0 || b.context().count() == before.1 {
        assert!(Instant::now() < deadline, "the members did not rejoin");
        for member in [&a, &b] {
            if let Some(Err(error)) = member.poll(Duration::from_millis(50)) {
                eprintln!("poll: {error}");
            }
        }
    }
    await_shared_assignment(&[&a, &b]);
    let more = produce(&broker, 200, 100);
    let mut after = vec![Consumed::new(), Consumed::new()];
    consume(&[&a, &b], 100, &mut after);
    let got: Vec<String> = after
        .iter()
        .flat_map(|m| m.values().flatten().cloned())
        .collect();
    let unique: BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!(got.len(), unique.len(), "nothing delivered twice");
    assert_eq!(
        unique, more,
        "exactly the records produced after the commit"
    );
    a.commit_consumer_state(CommitMode::Sync).expect("commit a");
    b.commit_consumer_state(CommitMode::Sync).expect("commit b");
    sent.extend(more);

    // Both leave (LeaveGroup); a new member gets every partition and
    // starts at the commits.
    drop(a);
    drop(b);
    let last = produce(&broker, 300, 50);
    let c = consumer(&broker, "member-c");
    c.subscribe(&[TOPIC]).expect("subscribe");
    let mut alone = vec![Consumed::new()];
    consume(&[&c], 50, &mut alone);
    let got: BTreeSet<String> = alone[0].values().flatten().cloned().collect();
    assert_eq!(got, last, "the new member resumes at the commits");
    c.commit_consumer_state(CommitMode::Sync).expect("commit c");

    // ListGroups / DescribeGroups see the group and its member.
    let groups = c
        .fetch_group_list(Some(GROUP), PATIENCE)
        .expect("DescribeGroups");
    let group = groups
        .groups()
        .iter()
        .find(|g| g.name() == GROUP)
        .expect("the group is described");
    assert_eq!(group.state(), "Stable");
    assert_eq!(group.protocol_type(), "consumer");
    assert_eq!(group.members().len(), 1);
    assert_eq!(group.members()[0].client_id(), "member-c");
    let listed = c.fetch_group_list(None, PATIENCE).expect("ListGroups");
    assert!(listed.groups().iter().any(|g| g.name() == GROUP));

    // DeleteGroups refuses a group with members, then deletes it once
    // empty; the delete (tombstones) survives a restart.
    let admin: AdminClient<DefaultClientContext> = config(&broker).create().expect("admin");
    let delete = |admin: &AdminClient<DefaultClientContext>| {
        futures_lite::future::block_on(admin.delete_groups(&[GROUP], &options))
            .expect("DeleteGroups")
            .remove(0)
    };
    let refused = delete(&admin).expect_err("a group with a member is not deleted");
    assert_eq!(
        refused.1,
        rdkafka::types::RDKafkaErrorCode::NonEmptyGroup,
        "{refused:?}"
    );
    drop(c);
    let deadline = Instant::now() + PATIENCE;
    loop {
        match delete(&admin) {
            Ok(_) => break,
            // The member's LeaveGroup may still be on its way.
            Err((_, rdkafka::types::RDKafkaErrorCode::NonEmptyGroup))
                if Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(other) => panic!("delete failed: {other:?}"),
        }
    }
    drop(admin);
    broker.kill_and_restart();
    let fresh = consumer(&broker, "member-d");
    let offsets = committed(&fresh);
    assert!(
        offsets.values().all(|o| *o == Offset::Invalid),
        "deleted commits came back: {offsets:?}"
    );
    let sent_total = sent.len() + last.len();
    fresh.subscribe(&[TOPIC]).expect("subscribe");
    let mut everything = vec![Consumed::new()];
    consume(&[&fresh], sent_total, &mut everything);
    assert_eq!(everything[0].values().map(Vec::len).sum::<usize>(), 350);
}

/// Every served version of every group api, with `kafka-protocol`'s own
/// encoders (they refuse fields a version lacks, so a version-gated field
/// set wrongly fails here): join, sync, heartbeat, commit, fetch, describe,
/// list, leave and delete, each at each version.
#[test]
fn every_group_api_version_round_trips() {
    use common::kafka::call;
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::messages::leave_group_request::MemberIdentity;
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
    };
    use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;

    let config_dir = tempfile::tempdir().expect("tempdir");
    let config_file = config_dir.path().join("fjord.toml");
    std::fs::write(&config_file, "group_initial_rebalance_delay_ms = 0\n").expect("config");
    let broker = Broker::start(&["--shards", "2", "--config", config_file.to_str().unwrap()]);
    let kafka = broker.kafka_addr();
    assert_eq!(
        broker.conn().create_topic("t", 3, &[]),
        fjord_schema::ErrorCode::None
    );
    let mut stream = common::kafka::connect(kafka);
    let s = |text: String| StrBytes::from_string(text);
    let group = |v: i16| GroupId(s(format!("raw-v{v}")));

    for version in 0..=4i16 {
        let mut find = FindCoordinatorRequest::default();
        if version >= 4 {
            find.coordinator_keys = vec![s("raw-v0".into()), s("raw-v1".into())];
        } else {
            find.key = s("raw-v0".into());
        }
        let found: FindCoordinatorResponse =
            call(&mut stream, ApiKey::FindCoordinator, version, &find);
        if version >= 4 {
            assert_eq!(found.coordinators.len(), 2);
            for c in &found.coordinators {
                assert_eq!((c.error_code, c.port), (0, i32::from(kafka.port())));
            }
        } else {
            assert_eq!(found.error_code, 0, "FindCoordinator v{version}");
            assert_eq!(found.port, i32::from(kafka.port()));
        }
    }

    // One single-member group per JoinGroup version: v4+ are told
    // MEMBER_ID_REQUIRED first; v0-v3 get their id in one step.
    let mut members = BTreeMap::new();
    for version in 0..=9i16 {
        let mut join = JoinGroupRequest::default();
        join.group_id = group(version);
        join.session_timeout_ms = 30_000;
        join.rebalance_timeout_ms = 30_000;
        join.member_id = StrBytes::default();
        join.protocol_type = s("consumer".into());
        let mut protocol = JoinGroupRequestProtocol::default();
        protocol.name = s("range".into());
        protocol.metadata = bytes::Bytes::from_static(b"subscription");
        join.protocols.push(protocol);
        let mut joined: JoinGroupResponse = call(&mut stream, ApiKey::JoinGroup, version, &join);
        if version >= 4 {
            assert_eq!(
                joined.error_code, 79,
                "JoinGroup v{version}: MEMBER_ID_REQUIRED"
            );
            join.member_id = joined.member_id.clone();
            joined = call(&mut stream, ApiKey::JoinGroup, version, &join);
        }
        assert_eq!(joined.error_code, 0, "JoinGroup v{version}");
        assert_eq!(joined.generation_id, 1, "JoinGroup v{version}");
        assert_eq!(joined.leader, joined.member_id, "JoinGroup v{version}");
        assert_eq!(joined.members.len(), 1, "JoinGroup v{version}");
        assert_eq!(&joined.members[0].metadata[..], b"subscription");
        assert_eq!(joined.protocol_name.as_deref(), Some("range"));
        members.insert(version, joined.member_id);
    }

    for version in 0..=5i16 {
        let mut sync = SyncGroupRequest::default();
        sync.group_id = group(version);
        sync.generation_id = 1;
        sync.member_id = members[&version].clone();
        if version >= 5 {
            sync.protocol_type = Some(s("consumer".into()));
            sync.protocol_name = Some(s("range".into()));
        }
        let mut assignment = SyncGroupRequestAssignment::default();
        assignment.member_id = members[&version].clone();
        assignment.assignment = bytes::Bytes::from(format!("assignment-v{version}"));
        sync.assignments.push(assignment);
        let synced: SyncGroupResponse = call(&mut stream, ApiKey::SyncGroup, version, &sync);
        assert_eq!(synced.error_code, 0, "SyncGroup v{version}");
        assert_eq!(
            &synced.assignment[..],
            format!("assignment-v{version}").as_bytes()
        );
    }

    for version in 0..=4i16 {
        let mut heartbeat = HeartbeatRequest::default();
        heartbeat.group_id = group(version);
        heartbeat.generation_id = 1;
        heartbeat.member_id = members[&version].clone();
        let answer: HeartbeatResponse = call(&mut stream, ApiKey::Heartbeat, version, &heartbeat);
        assert_eq!(answer.error_code, 0, "Heartbeat v{version}");
        heartbeat.generation_id = 7;
        let stale: HeartbeatResponse = call(&mut stream, ApiKey::Heartbeat, version, &heartbeat);
        assert_eq!(
            stale.error_code, 22,
            "Heartbeat v{version}: ILLEGAL_GENERATION"
        );
    }

    // Member commits at every version (group raw-v5 is Stable, gen 1).
    for version in 2..=8i16 {
        let mut commit = OffsetCommitRequest::default();
        commit.group_id = group(5);
        commit.generation_id_or_member_epoch = 1;
        commit.member_id = members[&5].clone();
        let mut topic = OffsetCommitRequestTopic::default();
        topic.name = TopicName(s("t".into()));
        for partition in 0..2 {
            let mut p = OffsetCommitRequestPartition::default();
            p.partition_index = partition;
            p.committed_offset = i64::from(version) * 10 + i64::from(partition);
            if version >= 6 {
                p.committed_leader_epoch = 3;
            }
            p.committed_metadata = Some(s(format!("meta-v{version}")));
            topic.partitions.push(p);
        }
        commit.topics.push(topic);
        let answer: OffsetCommitResponse =
            call(&mut stream, ApiKey::OffsetCommit, version, &commit);
        let errors: Vec<i16> = answer.topics[0]
            .partitions
            .iter()
            .map(|p| p.error_code)
            .collect();
        assert_eq!(errors, [0, 0], "OffsetCommit v{version}");
    }

    // Partitions the broker does not have are refused, as Kafka does; the
    // others in the same request are committed.
    let mut commit = OffsetCommitRequest::default();
    commit.group_id = group(5);
    commit.generation_id_or_member_epoch = 1;
    commit.member_id = members[&5].clone();
    for (name, partition) in [("no-such-topic", 0), ("t", 9), ("t", 2)] {
        let mut topic = OffsetCommitRequestTopic::default();
        topic.name = TopicName(s(name.into()));
        let mut p = OffsetCommitRequestPartition::default();
        p.partition_index = partition;
        p.committed_offset = 7;
        topic.partitions.push(p);
        commit.topics.push(topic);
    }
    let answer: OffsetCommitResponse = call(&mut stream, ApiKey::OffsetCommit, 8, &commit);
    let errors: Vec<i16> = answer
        .topics
        .iter()
        .map(|t| t.partitions[0].error_code)
        .collect();
    assert_eq!(
        errors,
        [3, 3, 0],
        "UNKNOWN_TOPIC_OR_PARTITION twice, then ok"
    );

    for version in 1..=8i16 {
        let mut fetch = OffsetFetchRequest::default();
        if version >= 8 {
            let mut g = OffsetFetchRequestGroup::default();
            g.group_id = group(5);
            let mut t = OffsetFetchRequestTopics::default();
            t.name = TopicName(s("t".into()));
            t.partition_indexes = vec![0, 1, 2];
            g.topics = Some(vec![t]);
            fetch.groups.push(g);
        } else {
            fetch.group_id = group(5);
            let mut t = OffsetFetchRequestTopic::default();
            t.name = TopicName(s("t".into()));
            t.partition_indexes = vec![0, 1, 2];
            fetch.topics = Some(vec![t]);
        }
        let answer: OffsetFetchResponse = call(&mut stream, ApiKey::OffsetFetch, version, &fetch);
        let offsets: Vec<(i32, i64, i16)> = if version >= 8 {
            assert_eq!(answer.groups[0].error_code, 0);
            answer.groups[0].topics[0]
                .partitions
                .iter()
                .map(|p| (p.partition_index, p.committed_offset, p.error_code))
                .collect()
        } else {
            answer.topics[0]
                .partitions
                .iter()
                .map(|p| (p.partition_index, p.committed_offset, p.error_code))
                .collect()
        };
        assert_eq!(
            offsets,
            [(0, 80, 0), (1, 81, 0), (2, 7, 0)],
            "OffsetFetch v{version}"
        );
    }

    for version in 0..=5i16 {
        let mut describe = DescribeGroupsRequest::default();
        describe.groups = vec![group(version), GroupId(s("no-such-group".into()))];
        let answer: DescribeGroupsResponse =
            call(&mut stream, ApiKey::DescribeGroups, version, &describe);
        let described = &answer.groups[0];
        assert_eq!(described.error_code, 0, "DescribeGroups v{version}");
        assert_eq!(described.group_state.as_str(), "Stable");
        assert_eq!(described.protocol_data.as_str(), "range");
        assert_eq!(described.members.len(), 1);
        assert_eq!(described.members[0].member_id, members[&version]);
        assert_eq!(described.members[0].client_id.as_str(), "raw-test");
        assert_eq!(answer.groups[1].group_state.as_str(), "Dead");
    }

    for version in 0..=4i16 {
        let mut list = ListGroupsRequest::default();
        if version >= 4 {
            list.states_filter = vec![s("Stable".into())];
        }
        let answer: ListGroupsResponse = call(&mut stream, ApiKey::ListGroups, version, &list);
        assert_eq!(answer.error_code, 0, "ListGroups v{version}");
        let names: BTreeSet<String> = answer
            .groups
            .iter()
            .map(|g| g.group_id.0.to_string())
            .collect();
        // raw-v6..9 never synced: CompletingRebalance, not Stable.
        let last = if version >= 4 { 5 } else { 9 };
        let expected: BTreeSet<String> = (0..=last).map(|v| format!("raw-v{v}")).collect();
        assert_eq!(names, expected, "ListGroups v{version}");
    }

    for version in 0..=5i16 {
        let mut leave = LeaveGroupRequest::default();
        leave.group_id = group(version);
        if version >= 3 {
            let mut member = MemberIdentity::default();
            member.member_id = members[&version].clone();
            leave.members.push(member);
        } else {
            leave.member_id = members[&version].clone();
        }
        let answer: LeaveGroupResponse = call(&mut stream, ApiKey::LeaveGroup, version, &leave);
        assert_eq!(answer.error_code, 0, "LeaveGroup v{version}");
        if version >= 3 {
            assert_eq!(answer.members.len(), 1);
            assert_eq!(answer.members[0].error_code, 0);
        }
    }

    // An empty group with commits is deleted; one with a member is not;
    // an unknown one (or an empty one without commits: the coordinator
    // keeps no such group) is not found.
    for version in 0..=2i16 {
        let deleted = GroupId(s(format!("del-v{version}")));
        let mut commit = OffsetCommitRequest::default();
        commit.group_id = deleted.clone();
        commit.generation_id_or_member_epoch = -1;
        let mut topic = OffsetCommitRequestTopic::default();
        topic.name = TopicName(s("t".into()));
        let mut p = OffsetCommitRequestPartition::default();
        p.committed_offset = 5;
        topic.partitions.push(p);
        commit.topics.push(topic);
        let answer: OffsetCommitResponse = call(&mut stream, ApiKey::OffsetCommit, 2, &commit);
        assert_eq!(answer.topics[0].partitions[0].error_code, 0);
        let mut delete = DeleteGroupsRequest::default();
        delete.groups_names = vec![deleted, group(9), group(0)];
        let answer: DeleteGroupsResponse =
            call(&mut stream, ApiKey::DeleteGroups, version, &delete);
        let errors: Vec<i16> = answer.results.iter().map(|r| r.error_code).collect();
        // NON_EMPTY_GROUP, GROUP_ID_NOT_FOUND.
        assert_eq!(errors, [0, 68, 69], "DeleteGroups v{version}");
    }
    let mut delete = DeleteGroupsRequest::default();
    delete.groups_names = vec![group(5)];
    let answer: DeleteGroupsResponse = call(&mut stream, ApiKey::DeleteGroups, 2, &delete);
    assert_eq!(answer.results[0].error_code, 0);
    let mut fetch = OffsetFetchRequest::default();
    fetch.group_id = group(5);
    fetch.topics = None;
    let answer: OffsetFetchResponse = call(&mut stream, ApiKey::OffsetFetch, 7, &fetch);
    assert!(
        answer.topics.is_empty(),
        "deleted offsets: {:?}",
        answer.topics
    );
}
