//! Runs `loadgen --embedded` against the real `fjord` binary and checks
//! the JSON it writes: every record sent was acknowledged and consumed,
//! histograms are filled, percentiles are monotonic. No timing or
//! throughput figure is asserted.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// `fjord` sits in the same target directory as `loadgen`
/// (`cargo nextest run --workspace` builds every workspace binary).
fn fjord_bin() -> PathBuf {
    let loadgen = PathBuf::from(env!("CARGO_BIN_EXE_loadgen"));
    let dir = loadgen.parent().expect("loadgen has a directory");
    let fjord = dir.join("fjord");
    assert!(
        fjord.is_file(),
        "{} is missing: build it with `cargo build -p fjord-broker` (nextest --workspace does)",
        fjord.display()
    );
    fjord
}

fn run_loadgen(extra: &[&str]) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("result.json");
    let svg = dir.path().join("result.svg");
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .arg("--embedded")
        .arg("--fjord-bin")
        .arg(fjord_bin())
        .arg("--data-dir")
        .arg(dir.path().join("broker"))
        .arg("--json")
        .arg(&json)
        .arg("--svg")
        .arg(&svg)
        .args(["--no-spin", "--progress-interval", "0.5"])
        .args(extra)
        .output()
        .expect("run loadgen");
    assert!(
        output.status.success(),
        "loadgen failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&json).expect("JSON written");
    let chart = std::fs::read_to_string(&svg).expect("SVG written");
    assert!(chart.starts_with("<svg") && chart.contains("<polyline"));
    serde_json::from_str(&text).expect("valid JSON")
}

fn check_histogram(result: &Value, name: &str, count: u64) {
    let h = &result["latency_ns"][name];
    assert_eq!(h["count"].as_u64(), Some(count), "{name} count: {h}");
    let mut last = h["min"].as_u64().expect("min");
    for p in ["p50", "p90", "p99", "p99.9", "p99.99"] {
        let v = h["percentiles"][p].as_u64().expect("percentile");
        assert!(v >= last, "{name} {p} = {v} below {last}");
        last = v;
    }
    assert!(h["max"].as_u64().expect("max") >= last, "{name} max");
}

/// `--embedded-nodes 3 --replication-factor 3 --acks all`: a 3-node
/// cluster, topics replicated three times, producers and consumers
/// following the leaders of partitions spread over the nodes.
#[test]
fn a_replicated_cluster_run_acknowledges_and_consumes_every_message() {
    let messages = 6_000u64;
    let result = run_loadgen(&[
        "--embedded-nodes",
        "3",
        "--broker-shards",
        "1",
        "--replication-factor",
        "3",
        "--topic-config",
        "min.insync.replicas=2",
        "--messages",
        "6000",
        "--producers",
        "1",
        "--consumers",
        "1",
        "--partitions",
        "3",
        "--batch-size",
        "65536",
        "--acks",
        "all",
        "--duration",
        "120s",
    ]);
    let producer = &result["producer"];
    assert_eq!(producer["messages_sent"].as_u64(), Some(messages));
    assert_eq!(producer["messages_acked"].as_u64(), Some(messages));
    assert_eq!(producer["messages_failed"].as_u64(), Some(0));
    assert_eq!(result["consumer"]["messages"].as_u64(), Some(messages));
    assert_eq!(
        result["consumer"]["timestamp_sum"],
        result["producer"]["acked_timestamp_sum"]
    );
    assert_eq!(result["config"]["embedded_nodes"].as_u64(), Some(3));
    assert_eq!(result["config"]["replication_factor"].as_u64(), Some(3));
}

#[test]
fn every_message_is_acknowledged_and_consumed() {
    let messages = 20_000u64;
    let result = run_loadgen(&[
        "--messages",
        "20000",
        "--producers",
        "2",
        "--consumers",
        "2",
        "--partitions",
        "4",
        "--batch-size",
        "65536",
        "--acks",
        "all",
        "--keys",
        "100",
        "--duration",
        "60s",
    ]);
    let producer = &result["producer"];
    assert_eq!(producer["messages_sent"].as_u64(), Some(messages));
    assert_eq!(producer["messages_acked"].as_u64(), Some(messages));
    assert_eq!(producer["messages_failed"].as_u64(), Some(0));
    assert_eq!(result["consumer"]["messages"].as_u64(), Some(messages));
    assert_eq!(
        result["consumer"]["bytes"].as_u64(),
        Some(messages * 1024),
        "every value is --message-size bytes"
    );
    check_histogram(&result, "publish", messages);
    check_histogram(&result, "end_to_end", messages);
    assert_eq!(
        result["consumer"]["timestamp_sum"],
        result["producer"]["acked_timestamp_sum"]
    );
    assert!(result["latency_ns"]["request"]["count"].as_u64() > Some(0));
    assert!(result["command"].as_array().is_some_and(|c| !c.is_empty()));
    assert_eq!(result["config"]["partitions"].as_u64(), Some(4));
    assert!(result["broker"]["rss_bytes"].as_u64() > Some(0));
}

#[test]
fn kafka_mode_consumes_every_acknowledged_message() {
    // Produce v9 / Fetch v12 through the Kafka listener, with several
    // requests in flight (one per connection) and keys over 4 partitions.
    let messages = 20_000u64;
    let result = run_loadgen(&[
        "--protocol",
        "kafka",
        "--messages",
        "20000",
        "--producers",
        "2",
        "--consumers",
        "2",
        "--partitions",
        "4",
        "--batch-size",
        "65536",
        "--acks",
        "all",
        "--keys",
        "100",
        "--duration",
        "60s",
    ]);
    assert_eq!(result["config"]["protocol"], "kafka");
    assert_eq!(
        result["consumer"]["timestamp_sum"], result["producer"]["acked_timestamp_sum"],
        "the records consumed are the records acknowledged, each once"
    );
    let producer = &result["producer"];
    assert_eq!(producer["messages_sent"].as_u64(), Some(messages));
    assert_eq!(producer["messages_acked"].as_u64(), Some(messages));
    assert_eq!(producer["messages_failed"].as_u64(), Some(0));
    assert_eq!(result["consumer"]["messages"].as_u64(), Some(messages));
    assert_eq!(
        result["consumer"]["bytes"].as_u64(),
        Some(messages * 1024),
        "every value is --message-size bytes"
    );
    check_histogram(&result, "publish", messages);
    check_histogram(&result, "end_to_end", messages);
    assert!(result["latency_ns"]["request"]["count"].as_u64() > Some(0));
}

#[test]
fn kafka_mode_with_compression_and_acks_0_is_complete() {
    // acks=0 completes on write; lz4 batches are decompressed by the
    // broker and the consumer.
    let result = run_loadgen(&[
        "--protocol",
        "kafka",
        "--messages",
        "5000",
        "--acks",
        "0",
        "--compression",
        "lz4",
        "--payload",
        "compressible",
        "--partitions",
        "2",
        "--duration",
        "60s",
    ]);
    let producer = &result["producer"];
    assert_eq!(producer["messages_acked"].as_u64(), Some(5000));
    assert_eq!(result["consumer"]["messages"].as_u64(), Some(5000));
    assert_eq!(
        result["consumer"]["timestamp_sum"],
        result["producer"]["acked_timestamp_sum"]
    );
}

#[test]
fn kafka_mode_pipelined_is_complete() {
    // Several produce requests pipelined on each Kafka connection: the
    // broker answers them in order, the producer matches correlation ids.
    let result = run_loadgen(&[
        "--protocol",
        "kafka",
        "--kafka-pipelining",
        "--max-in-flight",
        "3",
        "--messages",
        "10000",
        "--batch-size",
        "16384",
        "--linger-ms",
        "0",
        "--partitions",
        "3",
        "--duration",
        "60s",
    ]);
    assert_eq!(result["config"]["kafka_pipelining"], true);
    assert_eq!(result["producer"]["messages_acked"].as_u64(), Some(10000));
    assert_eq!(result["consumer"]["messages"].as_u64(), Some(10000));
    assert_eq!(
        result["consumer"]["timestamp_sum"],
        result["producer"]["acked_timestamp_sum"]
    );
}

#[test]
fn fixed_rate_runs_are_bounded_and_complete() {
    // 2,000 msg/s for ~1 s with compression and keys, measured after a
    // short warm-up: counts still match exactly.
    let result = run_loadgen(&[
        "--rate",
        "2000",
        "--warmup",
        "200ms",
        "--duration",
        "1s",
        "--compression",
        "lz4",
        "--payload",
        "compressible",
        "--partitions",
        "2",
    ]);
    let producer = &result["producer"];
    let sent = producer["messages_sent"].as_u64().expect("sent");
    assert!(sent > 0);
    assert_eq!(producer["messages_acked"].as_u64(), Some(sent));
    assert_eq!(result["consumer"]["messages"].as_u64(), Some(sent));
    let measured = result["latency_ns"]["publish"]["count"]
        .as_u64()
        .expect("count");
    assert!(measured > 0 && measured <= sent);
    check_histogram(&result, "publish", measured);
    assert_eq!(result["config"]["mode"], "fixed-rate");
}

#[test]
fn usage_errors_exit_with_status_2() {
    for args in [
        &["--embedded", "--acks", "2"][..],
        &["--embedded", "--message-size", "4"],
        &["--producers", "1"],
    ] {
        let status = Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .args(args)
            .output()
            .expect("run loadgen")
            .status;
        assert_eq!(status.code(), Some(2), "{args:?}");
    }
}
