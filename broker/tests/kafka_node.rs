//! KafkaJS (npm) against the `fjord` binary's Kafka listener (2 shards):
//! `tests/node/kafka_clients.mjs` does admin create / describe / delete,
//! an idempotent producer, a two-member group sharing the partitions with
//! commits, a new member resuming from them, group describe / list /
//! delete, and must exit 0.
//!
//! Where KafkaJS is not installed (`npm ci --prefix broker/tests/node`)
//! the test prints a loud SKIPPED and passes; with
//! `FJORD_REQUIRE_NODE_CLIENTS=1` (set by `.ci/run`, which installs it) it
//! fails instead.

mod common;

use std::process::Command;

use common::Broker;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node");

#[test]
fn kafkajs_round_trip_groups_and_admin() {
    let mut probe = Command::new("node");
    probe
        .current_dir(DIR)
        .args(["-e", "await import('kafkajs')", "--input-type=module"]);
    if !common::script::available(
        &mut probe,
        "KafkaJS (node + the kafkajs package)",
        "npm ci --prefix broker/tests/node",
        "FJORD_REQUIRE_NODE_CLIENTS",
    ) {
        return;
    }
    let broker = Broker::start(&["--shards", "2"]);
    let mut node = Command::new("node");
    node.current_dir(DIR)
        .arg("kafka_clients.mjs")
        .arg(broker.kafka_addr().to_string())
        .env("KAFKAJS_NO_PARTITIONER_WARNING", "1");
    // The script's watchdog is 240 s; below nextest's terminate-after.
    common::script::run(&broker, node, "node kafka_clients.mjs", 270);
}
