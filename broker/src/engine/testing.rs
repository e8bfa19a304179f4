//! A one-shard engine for the edges' handler tests: node 7, one shard, a
//! topic registry and a one-node controller in a temporary data dir, the
//! node unfenced before the test body runs (as a broker is before it
//! serves). Test-only.

use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use fjord_schema::{NodeId, ShardId};
use fjord_storage::{BatchCache, CacheConfig, LogConfig, SystemClock};

use super::{BrokerView, Engine, EngineLimits};
use crate::metadata::catalog::Catalog;
use crate::metadata::registry::TopicRegistry;
use crate::partition::manager::PartitionManager;
use crate::service::{ShardService, TopicAdmin};

/// Runs `body` on a fresh engine (topics get 2 partitions by default),
/// then closes the partitions.
pub(crate) fn with_engine<T, F>(body: impl FnOnce(Rc<Engine>) -> F) -> T
where
    F: Future<Output = T>,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().to_owned();
    let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .make()
        .expect("executor");
    executor.run(async move {
        let registry = TopicRegistry::open(&data_dir, NodeId(7), 1, 100).expect("registry");
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
            NodeId(7),
            partitions,
            Arc::new(Catalog::default()),
            Some(TopicAdmin::new(registry, base, 2, NodeId(7))),
        ));
        start_controller(&service, &data_dir).await;
        let engine = Rc::new(Engine::new(
            Arc::new(BrokerView {
                node_id: NodeId(7),
                host: "127.0.0.1".into(),
                port: 9192,
                kafka_host: "127.0.0.1".into(),
                kafka_port: 9092,
                shard_ports: vec![9193, 9194],
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
        let result = body(engine).await;
        service.partitions.close_all().await;
        result
    })
}

/// Starts a one-node controller (node 7, the engine's) on `service` and
/// waits until the node is unfenced, as a broker does before it serves.
async fn start_controller(service: &Rc<ShardService>, data_dir: &std::path::Path) {
    use crate::controller::driver::{recover, ClusterConfig, Voter};
    use crate::controller::state::ControllerConfig;
    use crate::metadata::image::{BrokerEndpoints, Endpoint};
    let base = LogConfig::default();
    let node = NodeId(7);
    let config = ClusterConfig {
        node,
        voters: vec![Voter {
            node,
            host: "127.0.0.1".into(),
            port: 0,
        }],
        cluster_listen: "127.0.0.1:0".parse().expect("address"),
        dir: data_dir.join("__cluster_metadata-0"),
        // As the engine's view says.
        endpoints: BrokerEndpoints {
            native: Some(Endpoint {
                host: "127.0.0.1".into(),
                port: 9192,
            }),
            kafka: Some(Endpoint {
                host: "127.0.0.1".into(),
                port: 9092,
            }),
            cluster: None,
        },
        shards: 1,
        rack: None,
        heartbeat_interval_ms: 200,
        raft_tick_ms: 100,
        log_reopen_backoff_max_ms: 5_000,
        write_fault: crate::controller::quorum::WriteFault::default(),
        lease_margin_ms: 1_000,
        lease: Default::default(),
        controller: ControllerConfig {
            base,
            voters: vec![node],
            defaults: crate::topic::TopicConfig::from_log_config(&base),
            default_partitions: 2,
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
    data.claim_for_node(7).expect("node id");
    let stop = std::sync::atomic::AtomicBool::new(false);
    assert!(service
        .wait_unfenced(&stop, &data.meta_file())
        .await
        .expect("joined"));
}
