//! The leader's service on a one-node, one-shard engine (a real metadata
//! quorum of one, a real log in a temporary data dir): requests go in as
//! encoded bodies, answers come back through the codec.

use fjord_schema::batch::{BatchBuilder, BatchOptions, RecordInput};
use fjord_schema::{ErrorCode, LeaderEpoch, NodeId, Offset, PartitionId};

use super::*;
use crate::batches::VerifiedBatches;
use crate::engine::types::{CreateSpec, ProduceRequest};
use crate::replication::wire::{EpochQueryPartition, ReplicaFetchPartition};

fn batch(records: usize) -> Bytes {
    let mut builder = BatchBuilder::new(BatchOptions::default());
    for i in 0..records {
        builder.push(RecordInput {
            value: Some(b"value"),
            timestamp: i as i64,
            ..RecordInput::default()
        });
    }
    builder.finish().expect("batch")
}

/// Runs `test` with the service of a one-shard engine
/// (`engine::testing::with_engine`, node 7) holding topic `r` (one
/// partition, led here) with two batches of 3 and 2 records.
fn with_leader<F: std::future::Future<Output = ()>>(
    test: impl FnOnce(Rc<ReplicationService>, LeaderEpoch) -> F + Send + 'static,
) {
    crate::engine::testing::with_engine(|engine| async move {
        let created = engine
            .create_topics(
                vec![CreateSpec {
                    name: "r".into(),
                    num_partitions: 1,
                    replication_factor: 1,
                    configs: Vec::new(),
                    assignments: Vec::new(),
                }],
                false,
            )
            .await;
        assert!(created[0].error.is_none(), "{created:?}");
        let mut epoch = None;
        for _ in 0..500 {
            epoch = engine
                .catalog()
                .image()
                .topics()
                .find(|t| t.name == "r")
                .and_then(|t| t.partition(PartitionId(0)).map(|p| p.leader_epoch));
            if epoch.is_some() {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        let epoch = epoch.expect("the topic in the catalog");
        let produced = engine
            .produce(ProduceRequest {
                timeout: std::time::Duration::from_secs(30),
                acks: 1,
                topics: vec![(
                    "r".into(),
                    vec![(
                        PartitionId(0),
                        Ok(VerifiedBatches::built(vec![batch(3), batch(2)])),
                    )],
                )],
            })
            .await;
        assert_eq!(produced[0].1[0].1.error, ErrorCode::None, "{produced:?}");
        test(Rc::new(ReplicationService::new(engine)), epoch).await;
    });
}

fn fetch_body(replica: NodeId, epoch: LeaderEpoch, offset: u64) -> Bytes {
    ReplicaFetchRequest {
        replica_id: replica,
        max_wait_ms: 0,
        min_bytes: 0,
        max_bytes: 1 << 20,
        topics: vec![(
            "r".into(),
            vec![ReplicaFetchPartition {
                partition: PartitionId(0),
                fetch_offset: Offset(offset),
                current_leader_epoch: epoch,
                durable_end: None,
                partition_max_bytes: 1 << 20,
            }],
        )],
    }
    .encode()
}

/// OffsetForLeaderEpoch is answered from the leader's log (its current
/// epoch ends at the log end); a fetch from a node that is no replica is
/// refused per partition, which shows the engine took it as a replica
/// fetch (a consumer would have read); a malformed body is an error, a
/// key not served is refused.
#[test]
fn answers_epochs_and_replica_fetches_through_the_engine() {
    with_leader(|service, epoch| async move {
        let body = EpochsRequest {
            replica_id: NodeId(9),
            topics: vec![(
                "r".into(),
                vec![EpochQueryPartition {
                    partition: PartitionId(0),
                    current_leader_epoch: epoch,
                    leader_epoch: epoch,
                }],
            )],
        }
        .encode();
        let reply = service
            .request(ClusterApiKey::OffsetForLeaderEpoch, body)
            .await
            .expect("answered");
        assert!(reply.payload.is_empty());
        let answer = EpochsResponse::decode(&reply.body).expect("decodes");
        let part = answer.topics[0].1[0];
        assert_eq!(
            (part.error, part.leader_epoch, part.end_offset),
            (ErrorCode::None, epoch.get() as i32, 5)
        );

        let reply = service
            .request(ClusterApiKey::ReplicaFetch, fetch_body(NodeId(9), epoch, 0))
            .await
            .expect("answered");
        let payload = Bytes::from(reply.payload.concat());
        let answer = ReplicaFetchResponse::decode(&reply.body, &payload).expect("decodes");
        let part = &answer.topics[0].1[0];
        assert_ne!(
            part.error,
            ErrorCode::None,
            "a non-replica fetched: {part:?}"
        );
        assert!(part.batches.is_empty());

        assert!(service
            .request(ClusterApiKey::ReplicaFetch, Bytes::from_static(b"\0junk"))
            .await
            .is_err());
        assert!(service
            .request(ClusterApiKey::ControllerCommand, Bytes::new())
            .await
            .is_err());
    });
}
