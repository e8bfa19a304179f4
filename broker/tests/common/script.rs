//! Runs another language's Kafka client script against a broker: the
//! Python (`tests/python/`) and Node (`tests/node/`) client tests. The
//! script bounds its own waits; this only enforces an outer deadline and
//! prints the script's output (and the broker's log) when it fails.
//!
//! A client library that is not installed makes the test print a loud
//! SKIPPED and pass, so `cargo nextest run --workspace` works on a machine
//! without it; with the `require_env` variable set to 1 (`.ci/run` sets it
//! after installing the clients) it fails instead.

use std::fs::File;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::Broker;

/// False (after saying so loudly) when `probe` fails and the clients are
/// not required (`require_env` unset); panics when they are.
pub fn available(probe: &mut Command, what: &str, install: &str, require_env: &str) -> bool {
    let outcome = probe.stdin(Stdio::null()).output();
    let why = match outcome {
        Ok(out) if out.status.success() => return true,
        Ok(out) => String::from_utf8_lossy(&out.stderr).into_owned(),
        Err(error) => format!("{probe:?} not runnable: {error}"),
    };
    let required = std::env::var(require_env).is_ok_and(|v| v == "1");
    assert!(!required, "{require_env}=1 but {what} is missing: {why}");
    eprintln!(
        "\n==================== SKIPPED ====================\n\
         {what} is missing, so this test checked nothing:\n{why}\n\
         Install it as .ci/run does ({install}), or set {require_env}=1 \
         to make this a failure.\n\
         =================================================\n"
    );
    false
}

/// The Python confluent-kafka client (`python3 -c "import
/// confluent_kafka"`), through [`available`] with
/// `FJORD_REQUIRE_PYTHON_CLIENTS`.
pub fn confluent_kafka() -> bool {
    let mut probe = Command::new("python3");
    probe.args(["-c", "import confluent_kafka"]);
    available(
        &mut probe,
        "the Python module confluent_kafka (confluent-kafka from PyPI)",
        "python3 -m pip install confluent-kafka, version pinned in scripts/test",
        "FJORD_REQUIRE_PYTHON_CLIENTS",
    )
}

/// Runs `command` (its output to a file in the broker's temp dir) until
/// it exits or `seconds_max` pass; panics with its output unless it
/// exited 0.
pub fn run(broker: &Broker, mut command: Command, label: &str, seconds_max: u64) {
    let file_name: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let output_path = broker.dir.path().join(format!("{file_name}.out"));
    let output = File::create(&output_path).expect("script output file");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(output.try_clone().expect("clone output file"))
        .stderr(output)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {label}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(seconds_max);
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
            "{label} exited with {status}; its output:\n{text}\nfjord log:\n{}",
            broker.logs()
        ),
        None => panic!(
            "{label} still running after {seconds_max}s, killed; its output:\n{text}\nfjord log:\n{}",
            broker.logs()
        ),
    }
}
