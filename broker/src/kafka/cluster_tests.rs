//! The Kafka answers that describe the cluster (Metadata, DescribeCluster,
//! FindCoordinator) and the leadership refusals, on a hand-built image of
//! three brokers (node 3 fenced) whose partitions are led by different
//! nodes, seen from node 1 (`engine::cluster::tests::three_nodes`).

use bytes::BytesMut;
use fjord_schema::{ErrorCode, NodeId, PartitionId};
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, FindCoordinatorResponse,
    MetadataResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::admin::describe_cluster_response;
use super::groups::find_coordinator_response;
use super::handler::metadata_response;
use crate::engine::cluster::tests::{group_on, three_nodes};
use crate::engine::cluster::ClusterView;
use crate::engine::{route, RouteError};
use crate::group::offsets_log::OFFSETS_TOPIC;
use crate::group::ops::GroupUnavailable;

/// `message` encoded at `version` and decoded again: what a client reads.
fn round_trip<M: Encodable + Decodable>(message: &M, version: i16) -> M {
    let mut buf = BytesMut::new();
    message.encode(&mut buf, version).expect("encodes");
    M::decode(&mut buf.freeze(), version).expect("decodes")
}

/// Error, leader, leader epoch, replicas, ISR, offline replicas.
type PartitionRow = (i16, i32, i32, Vec<i32>, Vec<i32>, Vec<i32>);

fn ids(brokers: &[BrokerId]) -> Vec<i32> {
    brokers.iter().map(|b| b.0).collect()
}

#[test]
fn metadata_lists_the_unfenced_brokers_and_each_partitions_leader() {
    let (catalog, _) = three_nodes();
    let view = ClusterView::of(&catalog);
    let names = Some(vec!["t".to_owned(), "missing".to_owned()]);
    let response = metadata_response(&catalog, &view, names, |_| {
        ErrorCode::UnknownTopicOrPartition
    });
    let response: MetadataResponse = round_trip(&response, 12);
    let brokers: Vec<(i32, String, i32, Option<String>)> = response
        .brokers
        .iter()
        .map(|b| {
            (
                b.node_id.0,
                b.host.to_string(),
                b.port,
                b.rack.as_ref().map(|r| r.to_string()),
            )
        })
        .collect();
    assert_eq!(
        brokers,
        [
            (1, "n1".to_owned(), 9101, None),
            (2, "n2".to_owned(), 9102, Some("r2".to_owned())),
        ],
        "node 3 is fenced: not listed"
    );
    assert_eq!(response.controller_id, BrokerId(2));
    assert_eq!(response.topics.len(), 2);
    let t = &response.topics[0];
    assert_eq!(t.error_code, 0);
    let parts: Vec<PartitionRow> = t
        .partitions
        .iter()
        .map(|p| {
            (
                p.error_code,
                p.leader_id.0,
                p.leader_epoch,
                ids(&p.replica_nodes),
                ids(&p.isr_nodes),
                ids(&p.offline_replicas),
            )
        })
        .collect();
    let leader_not_available = ErrorCode::LeaderNotAvailable.code();
    assert_eq!(
        parts,
        [
            (0, 1, 4, vec![1], vec![1], vec![]),
            (0, 2, 5, vec![2], vec![2], vec![]),
            (leader_not_available, -1, 6, vec![3], vec![3], vec![3]),
            (0, 1, 7, vec![1, 3], vec![1, 3], vec![3]),
        ]
    );
    assert_eq!(
        response.topics[1].error_code,
        ErrorCode::UnknownTopicOrPartition.code()
    );
    // Old versions skip what they lack (epoch, offline replicas) and
    // still decode.
    let old = metadata_response(&catalog, &view, None, |_| ErrorCode::None);
    let old: MetadataResponse = round_trip(&old, 1);
    assert_eq!(old.controller_id, BrokerId(2));
    assert_eq!(old.brokers.len(), 2);
    assert_eq!(old.topics.len(), 2, "every topic");
}

#[test]
fn describe_cluster_names_the_controller_and_the_live_brokers() {
    let (catalog, _) = three_nodes();
    let view = ClusterView::of(&catalog);
    for version in [0, 1] {
        let mut request = DescribeClusterRequest::default();
        request.endpoint_type = 1;
        let response = describe_cluster_response(&view, request, version);
        let response: DescribeClusterResponse = round_trip(&response, version);
        assert_eq!(response.error_code, 0);
        assert_eq!(response.controller_id, BrokerId(2));
        let brokers: Vec<(i32, i32)> = response
            .brokers
            .iter()
            .map(|b| (b.broker_id.0, b.port))
            .collect();
        assert_eq!(brokers, [(1, 9101), (2, 9102)]);
    }
}

#[test]
fn find_coordinator_points_at_the_offsets_partitions_leader() {
    let (catalog, _) = three_nodes();
    let view = ClusterView::of(&catalog);
    let lookup = |group: &str| view.coordinator(&catalog, group).cloned();
    let here = group_on(0);
    let there = group_on(1);
    // v4: a batch of keys.
    let mut request = FindCoordinatorRequest::default();
    request.coordinator_keys = vec![
        StrBytes::from_string(here.clone()),
        StrBytes::from_string(there.clone()),
    ];
    let response = find_coordinator_response(&request, 4, lookup);
    let response: FindCoordinatorResponse = round_trip(&response, 4);
    let found: Vec<(i16, i32, String, i32)> = response
        .coordinators
        .iter()
        .map(|c| (c.error_code, c.node_id.0, c.host.to_string(), c.port))
        .collect();
    assert_eq!(
        found,
        [(0, 1, "n1".to_owned(), 9101), (0, 2, "n2".to_owned(), 9102)]
    );
    // v3: one key.
    let mut request = FindCoordinatorRequest::default();
    request.key = StrBytes::from_string(there);
    let response = find_coordinator_response(&request, 3, lookup);
    assert_eq!((response.node_id.0, response.port), (2, 9102));
    // Without an offsets topic: COORDINATOR_NOT_AVAILABLE.
    let response =
        find_coordinator_response(&request, 3, |_| Err(ErrorCode::CoordinatorNotAvailable));
    assert_eq!(
        (response.error_code, response.node_id.0),
        (ErrorCode::CoordinatorNotAvailable.code(), -1)
    );
}

#[test]
fn requests_for_partitions_and_groups_led_elsewhere_are_refused() {
    let (catalog, this) = three_nodes();
    let node = this;
    let code = |topic: &str, p: u32| {
        route(&catalog, node, topic, PartitionId(p)).map_err(RouteError::error_code)
    };
    assert!(code("t", 0).is_ok());
    // Led by node 2, and leaderless: this node has no replica of either,
    // yet the client is told to refresh, not that the topic is unknown.
    assert_eq!(code("t", 1), Err(ErrorCode::NotLeaderOrFollower));
    assert_eq!(code("t", 2), Err(ErrorCode::NotLeaderOrFollower));
    assert_eq!(code("t", 9), Err(ErrorCode::UnknownTopicOrPartition));
    assert_eq!(code("nope", 0), Err(ErrorCode::UnknownTopicOrPartition));
    // The group whose offsets partition node 2 leads.
    let there = group_on(1);
    assert_eq!(
        crate::engine::cluster::local_coordinator(&catalog, node, &there),
        Err(ErrorCode::NotCoordinator)
    );
    assert_eq!(
        GroupUnavailable::NotCoordinator.code(),
        ErrorCode::NotCoordinator
    );
    assert!(catalog.get(OFFSETS_TOPIC).is_some());
    assert!(route(&catalog, NodeId(2), "t", PartitionId(1)).is_ok());
}

/// KIP-951: a Fetch v12+ answer for a partition led elsewhere names the
/// current leader and its epoch, so the client goes there without a
/// Metadata round trip.
#[test]
fn fetch_names_the_current_leader_of_a_partition_led_elsewhere() {
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{FetchResponse, TopicName};

    use super::handler::current_leader;

    let (catalog, _) = three_nodes();
    let leader = current_leader(&catalog, "t", PartitionId(1)).expect("t-1 exists");
    assert_eq!((leader.leader_id, leader.leader_epoch), (BrokerId(2), 5));
    let none = current_leader(&catalog, "t", PartitionId(2)).expect("t-2 exists");
    assert_eq!((none.leader_id, none.leader_epoch), (BrokerId(-1), 6));
    assert!(current_leader(&catalog, "t", PartitionId(9)).is_none());
    assert!(current_leader(&catalog, "nope", PartitionId(0)).is_none());

    let mut p = PartitionData::default();
    p.partition_index = 1;
    p.error_code = ErrorCode::NotLeaderOrFollower.code();
    p.current_leader = leader;
    let mut topic = FetchableTopicResponse::default();
    topic.topic = TopicName(StrBytes::from_static_str("t"));
    topic.partitions.push(p);
    let mut response = FetchResponse::default();
    response.responses.push(topic);
    let decoded: FetchResponse = round_trip(&response, 12);
    let p = &decoded.responses[0].partitions[0];
    assert_eq!(p.current_leader.leader_id, BrokerId(2));
    assert_eq!(p.current_leader.leader_epoch, 5);
}
