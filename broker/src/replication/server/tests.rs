//! The leader's service on a one-node, one-shard engine (a real metadata
//! quorum of one, a real log in a temporary data dir): requests go in as
//! encoded bodies, answers come back through the codec.

use std::sync::Arc;

use fjord_schema::batch::{BatchBuilder, BatchOptions, RecordInput};
use fjord_schema::{ErrorCode, LeaderEpoch, NodeId, Offset, PartitionId, ShardId};
use fjord_storage::{BatchCache, CacheConfig, LogConfig, SystemClock};

use super::*;
use crate::batches::VerifiedBatches;
use crate::engine::types::{CreateSpec, ProduceRequest};
use crate::engine::{BrokerView, EngineLimits};
use crate::metadata::catalog::Catalog;
use crate::metadata::registry::TopicRegistry;
use crate::partition::manager::PartitionManager;
use crate::replication::wire::{EpochQueryPartition, ReplicaFetchPartition};
use crate::service::{ShardService, TopicAdmin};

const NODE: NodeId = NodeId(7);

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

/// Starts a one-node controller on `service` and waits until unfenced.
async fn start_controller(service: &Rc<ShardService>, data_dir: &std::path::Path) {
    use crate::controller::driver::{recover, ClusterConfig, Voter};
    use crate::controller::state::ControllerConfig;
    use crate::metadata::image::{BrokerEndpoints, Endpoint};
    let base = LogConfig::default();
    let config = ClusterConfig {
        node: NODE,
        voters: vec![Voter {
            node: NODE,
            host: "127.0.0.1".into(),
            port: 0,
        }],
        cluster_listen: "127.0.0.1:0".parse().expect("address"),
        dir: data_dir.join("__cluster_metadata-0"),
        endpoints: BrokerEndpoints {
            native: Some(Endpoint {
                host: "127.0.0.1".into(),
                port: 9192,
            }),
            kafka: None,
            cluster: None,
        },
        shards: 1,
        rack: None,
        heartbeat_interval_ms: 200,
        raft_tick_ms: 100,
        controller: ControllerConfig {
            base,
            voters: vec![NODE],
            defaults: crate::topic::TopicConfig::from_log_config(&base),
            default_partitions: 1,
            default_replication_factor: 1,
            offsets_partitions: 1,
            offsets_replication_factor: 1,
            partitions_max: 100,
            session_timeout_ms: 9_000,
            producer_id_block_size: 10,
            leader_rebalance_interval_ms: 0,
        },
    };
    let recovered = recover(&config).expect("metadata log");
    service
        .start_controller(config, recovered, Vec::new())
        .expect("controller");
    let data = crate::datadir::DataDir::open(data_dir).expect("data dir");
    data.claim_for_node(NODE.get()).expect("node id");
    let stop = std::sync::atomic::AtomicBool::new(false);
    assert!(service
        .wait_unfenced(&stop, &data.meta_file())
        .await
        .expect("joined"));
}

/// Runs `test` with the service of a one-shard engine holding topic `r`
/// (one partition, led here) with two batches of 3 and 2 records.
fn with_leader<F: std::future::Future<Output = ()>>(
    test: impl FnOnce(Rc<ReplicationService>, LeaderEpoch) -> F + Send + 'static,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().to_owned();
    let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .make()
        .expect("executor");
    executor.run(async move {
        let registry = TopicRegistry::open(&data_dir, NODE, 1, 100).expect("registry");
        let base = LogConfig {
            prepare_step_bytes: 64 * 1024,
            prepare_ahead_bytes: 64 * 1024,
            ..LogConfig::default()
        };
        let partitions = PartitionManager::new(
            ShardId(0),
            data_dir.clone(),
            base,
            BatchCache::new(CacheConfig::default()),
            Rc::new(SystemClock),
        );
        let service = Rc::new(ShardService::new(
            ShardId(0),
            NODE,
            partitions,
            Arc::new(Catalog::default()),
            Some(TopicAdmin::new(registry, base, 1, NODE)),
        ));
        start_controller(&service, &data_dir).await;
        let engine = Rc::new(Engine::new(
            Arc::new(BrokerView {
                node_id: NODE,
                host: "127.0.0.1".into(),
                port: 9192,
                kafka_host: "127.0.0.1".into(),
                kafka_port: 0,
                shard_ports: vec![9193],
                kafka_configs: Vec::new(),
            }),
            service.clone(),
            EngineLimits {
                inflight_bytes_max: 1 << 20,
                fetch_bytes_max: 1 << 20,
                fetch_wait_max: Duration::from_secs(1),
                auto_create_topics: false,
                request_buffer_bytes_max: 2 << 20,
                response_bytes_max: 1 << 20,
                decompressed_bytes_max_per_request: 256 << 10,
                request_elements_max: 1000,
            },
        ));
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
            if epoch.is_some() && service.partitions.count() > 0 {
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
        service.partitions.close_all().await;
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
