//! Python Kafka clients from PyPI (confluent-kafka, kafka-python) against
//! the `fjord` binary's Kafka listener (2 shards): each library runs
//! `tests/python/kafka_clients.py` (admin, idempotent producer, consumer,
//! a two-member group with the eager range assignor and with the
//! cooperative-sticky one, commits and resume, group admin, native `fjord
//! consume` / `fjord group describe` of what Python wrote) and must exit 0.
//!
//! Where a library is not importable the test prints a loud SKIPPED and
//! passes, so `cargo nextest run --workspace` works on a machine without
//! them; with `FJORD_REQUIRE_PYTHON_CLIENTS=1` (set by `.ci/run`, which
//! installs them) it fails instead.

mod common;

use std::fs::File;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::Broker;

/// The script bounds every wait and its whole run (240 s); this only stops
/// a Python process that ignores its own watchdog. Below nextest's
/// terminate-after (5 min).
const SCRIPT_SECONDS_MAX: u64 = 270;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/kafka_clients.py");

/// False (after saying so loudly) when `module` cannot be imported and the
/// clients are not required; panics when they are.
fn importable(module: &str) -> bool {
    let probe = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdin(Stdio::null())
        .output();
    let why = match probe {
        Ok(out) if out.status.success() => return true,
        Ok(out) => String::from_utf8_lossy(&out.stderr).into_owned(),
        Err(error) => format!("python3 not runnable: {error}"),
    };
    let required = std::env::var("FJORD_REQUIRE_PYTHON_CLIENTS").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "FJORD_REQUIRE_PYTHON_CLIENTS=1 but python3 cannot import {module}: {why}"
    );
    eprintln!(
        "\n==================== SKIPPED ====================\n\
         python3 cannot import {module}, so this test checked nothing:\n{why}\n\
         Install the clients as .ci/run does (python3 -m pip install \
         confluent-kafka kafka-python), or set FJORD_REQUIRE_PYTHON_CLIENTS=1 \
         to make this a failure.\n\
         =================================================\n"
    );
    false
}

fn run_script(library: &str, module: &str, assignor: &str) {
    if !importable(module) {
        return;
    }
    let broker = Broker::start(&["--shards", "2"]);
    let kafka = broker.kafka_addr();
    let output_path = broker.dir.path().join(format!("{library}-{assignor}.out"));
    let output = File::create(&output_path).expect("script output file");
    let mut child = Command::new("python3")
        .arg(SCRIPT)
        .arg(library)
        .arg(kafka.to_string())
        .args(["--assignor", assignor])
        .arg("--fjord")
        .arg(env!("CARGO_BIN_EXE_fjord"))
        .arg("--native")
        .arg(broker.addr.to_string())
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(output.try_clone().expect("clone output file"))
        .stderr(output)
        .spawn()
        .expect("spawn python3");
    let deadline = Instant::now() + Duration::from_secs(SCRIPT_SECONDS_MAX);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&output_path).unwrap_or_default();
    match status {
        Some(status) if status.success() => println!("{text}"),
        Some(status) => panic!(
            "{SCRIPT} {library} --assignor {assignor} exited with {status}; its output:\n{text}\nfjord log:\n{}",
            broker.logs()
        ),
        None => panic!(
            "{SCRIPT} {library} --assignor {assignor} still running after {SCRIPT_SECONDS_MAX}s, killed; its output:\n\
             {text}\nfjord log:\n{}",
            broker.logs()
        ),
    }
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
