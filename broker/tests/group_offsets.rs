//! Committed offsets against the real `fjord` binary (2 shards): commits
//! are durable in `__consumer_offsets` across SIGKILL, group requests reach
//! the hosting shard from any shard, the offsets topic is internal and
//! refuses client produces. No timing assertions.

mod common;

use std::collections::BTreeMap;
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
        assert_eq!(coordinator.node_id, 0);
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
