//! Python Kafka clients from PyPI (confluent-kafka, kafka-python) against
//! the `fjord` binary's Kafka listener (2 shards): each library runs
//! `tests/python/kafka_clients.py` (admin, idempotent producer, consumer,
//! a two-member group with the eager range assignor and with the
//! cooperative-sticky one, commits and resume, group admin, topic configs
//! and CreatePartitions, native `fjord consume` / `fjord group describe` of
//! what Python wrote) and must exit 0; confluent-kafka's `elect_leaders`
//! and a consumer's position validation (OffsetForLeaderEpoch) run
//! `tests/python/leaders.py`.
//!
//! Where a library is not importable the test prints a loud SKIPPED and
//! passes, so `cargo nextest run --workspace` works on a machine without
//! them; with `FJORD_REQUIRE_PYTHON_CLIENTS=1` (set by `.ci/run`, which
//! installs them) it fails instead.

mod common;

use std::process::Command;

use common::Broker;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/kafka_clients.py");

fn run_script(library: &str, module: &str, assignor: &str) {
    let mut probe = Command::new("python3");
    probe.args(["-c", &format!("import {module}")]);
    if !common::script::available(
        &mut probe,
        &format!("the Python module {module} ({library} from PyPI)"),
        "python3 -m pip install confluent-kafka kafka-python, versions pinned there",
        "FJORD_REQUIRE_PYTHON_CLIENTS",
    ) {
        return;
    }
    let broker = Broker::start(&["--shards", "2"]);
    let mut python = Command::new("python3");
    python
        .arg(SCRIPT)
        .arg(library)
        .arg(broker.kafka_addr().to_string())
        .args(["--assignor", assignor])
        .arg("--fjord")
        .arg(env!("CARGO_BIN_EXE_fjord"))
        .arg("--native")
        .arg(broker.addr.to_string())
        .env("PYTHONUNBUFFERED", "1");
    // The script's watchdog is 240 s; below nextest's terminate-after.
    common::script::run(
        &broker,
        python,
        &format!("kafka_clients.py {library} --assignor {assignor}"),
        270,
    );
}

#[test]
fn kafka_python_confluent_kafka() {
    run_script("confluent-kafka", "confluent_kafka", "range");
}

/// The group rebalances incrementally (KIP-429): only moved partitions are
/// revoked.
#[test]
fn kafka_python_confluent_kafka_cooperative() {
    run_script("confluent-kafka", "confluent_kafka", "cooperative-sticky");
}

#[test]
fn kafka_python_kafka_python() {
    run_script("kafka-python", "kafka", "range");
}

#[test]
fn kafka_python_kafka_python_cooperative() {
    run_script("kafka-python", "kafka", "cooperative-sticky");
}

/// confluent-kafka's `AdminClient.elect_leaders` (librdkafka's
/// ElectLeaders) gets Kafka's per-partition answers from one node, and a
/// consumer assigned past the end of its leader epoch is moved back to it
/// by OffsetForLeaderEpoch (`tests/python/leaders.py`).
#[test]
fn kafka_python_confluent_kafka_leadership_apis() {
    let mut probe = Command::new("python3");
    probe.args(["-c", "import confluent_kafka"]);
    if !common::script::available(
        &mut probe,
        "the Python module confluent_kafka (confluent-kafka from PyPI)",
        "python3 -m pip install confluent-kafka, version pinned there",
        "FJORD_REQUIRE_PYTHON_CLIENTS",
    ) {
        return;
    }
    let broker = Broker::start(&["--shards", "2"]);
    let mut python = Command::new("python3");
    python
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/leaders.py"
        ))
        .arg(broker.kafka_addr().to_string())
        .env("PYTHONUNBUFFERED", "1");
    common::script::run(&broker, python, "leaders.py", 120);
}
