//! Committed offsets against the real `fjord` binary (2 shards): commits
//! are durable in `__consumer_offsets` across SIGKILL, group requests reach
//! the hosting shard from any shard, the offsets topic is internal and
//! refuses client produces. No timing assertions.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use common::{batch, Broker};
use fjord_net::client::group::{Committer, OffsetToCommit};
use fjord_net::client::protocol::NewTopic;
use fjord_net::client::{Client, ClientConfig};
use fjord_schema::api::ApiKey;
use fjord_schema::ErrorCode;

const OFFSETS_TOPIC: &str = "__consumer_offsets";

fn client(addr: SocketAddr) -> Client {
    Client::connect(addr, ClientConfig::default()).expect("connect")
}

fn create_topic(client: &mut Client, name: &str, partitions: u32) {
    let results = client
        .create_topics(
            &[NewTopic {
                name: name.to_owned(),
                partitions: Some(partitions),
                replication_factor: None,
                configs: Vec::new(),
            }],
            10_000,
        )
        .expect("create");
    assert_eq!(results[0].error, ErrorCode::None, "{results:?}");
}

fn commit(client: &mut Client, group: &str, topic: &str, offsets: &[(u32, i64)]) {
    let offsets: Vec<OffsetToCommit> = offsets
        .iter()
        .map(|(partition, offset)| OffsetToCommit {
            topic: topic.to_owned(),
            partition: *partition,
            offset: *offset,
            leader_epoch: -1,
            metadata: format!("{group}@{offset}"),
        })
        .collect();
    let results = client
        .offset_commit(group, Committer::SIMPLE, &offsets)
        .expect("commit");
    assert_eq!(results.len(), offsets.len());
    for (_, _, error) in &results {
        assert_eq!(*error, ErrorCode::None, "{group}: {results:?}");
    }
}

/// (topic, partition) → (offset, metadata).
type Committed = BTreeMap<(String, u32), (i64, String)>;

/// Every committed offset of `group`.
fn fetch_all(client: &mut Client, group: &str) -> Committed {
    client
        .offset_fetch(group, None)
        .expect("offset fetch")
        .into_iter()
        .map(|o| {
            assert_eq!(o.error, ErrorCode::None);
            (
                (o.topic, o.partition),
                (o.offset, o.metadata.unwrap_or_default()),
            )
        })
        .collect()
}

#[test]
fn committed_offsets_survive_sigkill_and_are_served_from_every_shard() {
    let mut broker = Broker::start(&["--shards", "2"]);
    let mut c = client(broker.addr);
    create_topic(&mut c, "orders", 4);
    let groups: Vec<String> = (0..12).map(|i| format!("group-{i}")).collect();
    let mut expected: BTreeMap<String, Committed> = BTreeMap::new();
    let mut shards_used = std::collections::BTreeSet::new();
    for (i, group) in groups.iter().enumerate() {
        let coordinator = c.find_coordinator(group).expect("find coordinator");
        assert_eq!(coordinator.error, ErrorCode::None);
        assert_eq!(coordinator.node_id, 1, "the default node id");
        assert!(coordinator.shard < 2);
        assert_ne!(coordinator.shard_port, 0);
        shards_used.insert(coordinator.shard);
        // Two commits per group: the second one (higher offsets, fewer
        // partitions) must win where it overlaps.
        let first: Vec<(u32, i64)> = (0..4).map(|p| (p, (i * 100 + p as usize) as i64)).collect();
        commit(&mut c, group, "orders", &first);
        let second = [(1, (i * 100 + 50) as i64)];
        commit(&mut c, group, "orders", &second);
        let mut want = BTreeMap::new();
        for (p, o) in first.iter().chain(&second) {
            want.insert(("orders".to_owned(), *p), (*o, format!("{group}@{o}")));
        }
        expected.insert(group.clone(), want);
    }
    assert_eq!(shards_used.len(), 2, "12 groups should land on both shards");
    // Kafka's placement: "test".hashCode() = 3556498, % 8 = partition 2,
    // hosted by that partition's shard.
    let offsets_meta = broker.conn().metadata(Some(&[OFFSETS_TOPIC]));
    let (partition, shard) = offsets_meta.topics[0].partitions[2];
    assert_eq!(partition, 2);
    assert_eq!(c.find_coordinator("test").expect("find").shard, shard);
    for group in &groups {
        assert_eq!(
            fetch_all(&mut c, group),
            expected[group],
            "{group} before kill"
        );
    }
    drop(c);

    broker.kill_and_restart();

    let meta = client(broker.addr).metadata(Some(&[])).expect("metadata");
    let shard_ports = meta.brokers[0].shard_ports.clone();
    // Through the shared port and through each shard's own port: requests
    // on the non-hosting shard are forwarded over the mesh.
    let mut addrs = vec![broker.addr];
    addrs.extend(
        shard_ports
            .iter()
            .map(|p| SocketAddr::new(broker.addr.ip(), *p)),
    );
    for addr in addrs {
        let mut c = client(addr);
        for group in &groups {
            assert_eq!(
                fetch_all(&mut c, group),
                expected[group],
                "{group} via {addr}"
            );
        }
        let asked = c
            .offset_fetch(
                "group-0",
                Some(&[("orders".to_owned(), 2), ("other".to_owned(), 0)]),
            )
            .expect("offset fetch");
        assert_eq!(asked.len(), 2);
        assert_eq!(asked[0].offset, 2);
        assert_eq!(asked[1].offset, -1, "nothing committed");
        assert!(fetch_all(&mut c, "never-committed").is_empty());
    }
    broker.assert_running();
}

#[test]
fn offsets_topic_is_internal_listed_and_refuses_client_produces() {
    let broker = Broker::start(&["--shards", "2"]);
    let mut c = client(broker.addr);
    let versions = c.api_versions().expect("api versions");
    for api in [
        ApiKey::FindCoordinator,
        ApiKey::JoinGroup,
        ApiKey::SyncGroup,
        ApiKey::Heartbeat,
        ApiKey::LeaveGroup,
        ApiKey::OffsetCommit,
        ApiKey::OffsetFetch,
        ApiKey::ListGroups,
        ApiKey::DescribeGroups,
    ] {
        assert!(
            versions
                .api_versions
                .iter()
                .any(|v| v.api_key == api as u16),
            "{api:?} not listed"
        );
    }
    let meta = broker.conn().metadata(Some(&[OFFSETS_TOPIC]));
    let topic = &meta.topics[0];
    assert_eq!(topic.error, ErrorCode::None);
    assert_eq!(
        topic.partitions.len(),
        8,
        "offsets_topic_partitions default"
    );
    assert!(topic.is_internal);
    let records = batch(&[(b"k", b"v")], 1);
    let (error, _) = broker.conn().produce(OFFSETS_TOPIC, 0, &records, -1);
    assert_eq!(error, ErrorCode::InvalidTopicException);
    // Nothing committed yet: no groups.
    assert!(c.list_groups().expect("list groups").is_empty());
}

/// Two members join through the shard that does *not* host the group:
/// their JoinGroup and SyncGroup are parked on the hosting shard across
/// the mesh until the rebalance completes.
#[test]
fn join_and_sync_through_the_other_shard_are_parked_across_the_mesh() {
    use fjord_net::client::group::JoinGroup;

    let config_dir = tempfile::tempdir().expect("tempdir");
    let config = config_dir.path().join("fjord.toml");
    std::fs::write(&config, "group_initial_rebalance_delay_ms = 100\n").expect("config");
    let broker = Broker::start(&["--shards", "2", "--config", config.to_str().expect("utf8")]);
    let meta = client(broker.addr).metadata(Some(&[])).expect("metadata");
    let group = "mesh-group";
    let hosting = client(broker.addr)
        .find_coordinator(group)
        .expect("find coordinator")
        .shard;
    let other = 1 - hosting;
    let other_addr = SocketAddr::new(
        broker.addr.ip(),
        meta.brokers[0].shard_ports[usize::from(other)],
    );
    let members: Vec<_> = (0..2)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = client(other_addr);
                let protocols = vec![("range".to_owned(), vec![i as u8])];
                let mut member_id = String::new();
                let deadline = std::time::Instant::now() + common::PATIENCE;
                // Join, sync, heartbeat; rejoin when the other member's
                // arrival starts a new rebalance; done once both are in.
                'rejoin: loop {
                    assert!(std::time::Instant::now() < deadline, "no stable group");
                    let joined = c
                        .join_group(&JoinGroup {
                            group_id: group,
                            member_id: &member_id,
                            instance_id: None,
                            client_id: "test",
                            protocol_type: "consumer",
                            protocols: &protocols,
                            session_timeout_ms: 10_000,
                            rebalance_timeout_ms: 10_000,
                        })
                        .expect("join");
                    match joined.error {
                        ErrorCode::None => member_id = joined.member_id.clone(),
                        ErrorCode::MemberIdRequired => {
                            member_id = joined.member_id;
                            continue;
                        }
                        other => panic!("join failed: {other:?}"),
                    }
                    let assignments: Vec<(String, Vec<u8>)> = if joined.leader == joined.member_id {
                        joined
                            .members
                            .iter()
                            .map(|m| (m.member_id.clone(), m.metadata.clone()))
                            .collect()
                    } else {
                        Vec::new()
                    };
                    let synced = c
                        .sync_group(
                            group,
                            joined.generation_id,
                            &member_id,
                            None,
                            "consumer",
                            "range",
                            &assignments,
                        )
                        .expect("sync");
                    if synced.error != ErrorCode::None {
                        continue;
                    }
                    loop {
                        assert!(std::time::Instant::now() < deadline, "no stable group");
                        // Describe first: the group's generation is at least
                        // ours here, so a heartbeat that then succeeds proves
                        // the Stable two-member generation is ours.
                        let described = c.describe_groups(&[group]).expect("describe");
                        let both_in =
                            described[0].state == "Stable" && described[0].members.len() == 2;
                        let beat = c
                            .heartbeat(group, joined.generation_id, &member_id, None)
                            .expect("heartbeat");
                        if beat != ErrorCode::None {
                            continue 'rejoin;
                        }
                        if both_in {
                            break 'rejoin (joined, synced);
                        }
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                }
            })
        })
        .collect();
    let results: Vec<_> = members
        .into_iter()
        .map(|m| m.join().expect("member thread"))
        .collect();
    // Both reached the same generation with one leader; each got the
    // assignment the leader wrote for it (here: its own metadata back).
    let generations: BTreeSet<i32> = results.iter().map(|(j, _)| j.generation_id).collect();
    assert_eq!(generations.len(), 1, "{results:?}");
    let leaders: BTreeSet<&str> = results.iter().map(|(j, _)| j.leader.as_str()).collect();
    assert_eq!(leaders.len(), 1);
    let mut assigned: Vec<Vec<u8>> = results
        .iter()
        .map(|(_, s)| {
            assert_eq!(s.error, ErrorCode::None);
            s.assignment.clone()
        })
        .collect();
    assigned.sort();
    assert_eq!(assigned, [vec![0u8], vec![1u8]]);
    let described = client(other_addr)
        .describe_groups(&[group])
        .expect("describe");
    assert_eq!(described[0].state, "Stable");
    assert_eq!(described[0].members.len(), 2);
}

/// A JoinGroup parked for a rebalance gets COORDINATOR_NOT_AVAILABLE when
/// the broker is stopped (SIGTERM), instead of holding the drain; the
/// broker exits cleanly.
#[test]
fn parked_join_is_answered_when_the_broker_stops() {
    use fjord_net::client::group::JoinGroup;
    use fjord_net::client::ClientError;

    let config_dir = tempfile::tempdir().expect("tempdir");
    let config = config_dir.path().join("fjord.toml");
    std::fs::write(&config, "group_initial_rebalance_delay_ms = 100\n").expect("config");
    let mut broker = Broker::start(&["--shards", "2", "--config", config.to_str().expect("utf8")]);
    let group = "parked";
    let join = |c: &mut Client, member_id: &str| {
        c.join_group(&JoinGroup {
            group_id: group,
            member_id,
            instance_id: None,
            client_id: "test",
            protocol_type: "consumer",
            protocols: &[("range".to_owned(), Vec::new())],
            session_timeout_ms: 60_000,
            rebalance_timeout_ms: 60_000,
        })
    };
    // Member A joins and stays silent (long session).
    let mut a = client(broker.addr);
    let first = join(&mut a, "").expect("join");
    assert_eq!(first.error, ErrorCode::MemberIdRequired);
    let joined = join(&mut a, &first.member_id).expect("join");
    assert_eq!(joined.error, ErrorCode::None);
    let synced = a
        .sync_group(
            group,
            joined.generation_id,
            &joined.member_id,
            None,
            "consumer",
            "range",
            &[(joined.member_id.clone(), Vec::new())],
        )
        .expect("sync");
    assert_eq!(synced.error, ErrorCode::None);
    // Member B's JoinGroup waits for A to rejoin, which it never does.
    let addr = broker.addr;
    let b = std::thread::spawn(move || {
        let mut b = client(addr);
        let first = join(&mut b, "").expect("join");
        assert_eq!(first.error, ErrorCode::MemberIdRequired);
        join(&mut b, &first.member_id)
    });
    // Parked once the group is rebalancing.
    let deadline = std::time::Instant::now() + common::PATIENCE;
    loop {
        let described = client(broker.addr)
            .describe_groups(&[group])
            .expect("describe");
        if described[0].state == "PreparingRebalance" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no rebalance");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let status = broker.terminate();
    assert!(status.success(), "unclean exit {status}: {}", broker.logs());
    match b.join().expect("member B") {
        // The controlled shutdown takes the offsets partitions' leadership
        // away first (their groups unload: NOT_COORDINATOR, as Kafka's
        // coordinator resigning), unless the shard's stop answers first
        // (COORDINATOR_NOT_AVAILABLE); both send the member to find the
        // coordinator again.
        Err(ClientError::Broker { code, .. }) => assert!(
            matches!(
                code,
                ErrorCode::CoordinatorNotAvailable | ErrorCode::NotCoordinator
            ),
            "{code:?}"
        ),
        other => panic!("parked JoinGroup answered with {other:?}"),
    }
}
