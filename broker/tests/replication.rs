//! Replication across real processes (issue 14; `CLUSTER.md` §0, §4, §7):
//! three `fjord` nodes on 127.0.0.1 (`common::cluster`), topics with
//! `replication.factor=3` and `min.insync.replicas=2`, written by the
//! confluent-kafka Python client (`python/replication_clients.py`: an
//! idempotent producer with `acks=all` that records every delivery
//! report — partition, offset, key, value or the error — as it arrives)
//! and read back with it. The checker ([`check_read_back`]) holds every
//! run to the promise of §0: every acknowledged record is read back
//! exactly once at the offset it was acknowledged at, nothing (acknowledged
//! or not) is read twice, nothing is read that was never sent, and each
//! producer's acknowledgements on a partition follow its send order.
//!
//! - Metadata of an RF=3 topic: three replicas and a full ISR; a killed
//!   follower leaves the ISR (a short `replica_lag_time_max_ms`), shows
//!   offline, acks=all keeps working with two of three; restarted, it is
//!   back in the ISR.
//! - (a) SIGKILL of a partition's leader under load, three rounds, each
//!   restarted: every acknowledged record read back at its offset.
//! - (b) SIGSTOP of the leader for longer than the broker session, then
//!   SIGCONT: no acknowledgement conflicts with the new leader's log; the
//!   old leader rejoins the ISR as a follower, and once it leads again
//!   its log (its divergent tail truncated) reads back as acknowledged.
//! - (c) two of three nodes down under load: no record sent meanwhile is
//!   acknowledged (errors or timeouts); with the nodes back, producing
//!   works again.
//! - (d) a consumer group's committed offsets survive the loss of its
//!   coordinator's node (`__consumer_offsets` has three replicas).
//!
//! No timing assertions: every wait polls for an outcome, bounded by
//! `CLUSTER_WAIT` or the script's own deadlines, and fails with the last
//! state seen and the nodes' logs.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, CLUSTER_WAIT};
use serde::Deserialize;

const NODES: u32 = 3;
const REPLICATION_FACTOR: i16 = 3;
const MIN_INSYNC: &str = "2";

/// `replica_lag_time_max_ms` of the test nodes: a dead follower leaves
/// the ISR after 2 s instead of 30; well above the 500 ms long-poll of an
/// idle follower's fetch, with room for three debug nodes on two cores.
const REPLICA_LAG_TIME_MAX_MS: &str = "2000";

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/python/replication_clients.py"
);

/// Bound of one script run (it bounds its own waits below this).
const SCRIPT_SECONDS_MAX: u64 = 240;

/// Acknowledgements a producer must add to show it makes progress (on one
/// partition, at the producers' default 400 records/s over all of them).
const PROGRESS: usize = 100;

/// Three nodes with a short replica lag time.
fn start_cluster() -> Cluster {
    Cluster::start_with_env(
        NODES,
        &[("FJORD_REPLICA_LAG_TIME_MAX_MS", REPLICA_LAG_TIME_MAX_MS)],
    )
}

/// Creates `topic` (RF 3, `min.insync.replicas=2`) through node 1 and
/// waits until every partition has three replicas in sync.
fn create_replicated(cluster: &mut Cluster, topic: &str, partitions: i32) {
    cluster.create_topic(
        1,
        topic,
        partitions,
        REPLICATION_FACTOR,
        &[("min.insync.replicas", MIN_INSYNC)],
    );
    cluster.wait_isr_full(topic, REPLICATION_FACTOR as usize);
}

/// One line of the producer's report file.
#[derive(Debug, Deserialize)]
struct Line {
    i: Option<u64>,
    t: Option<f64>,
    p: Option<i32>,
    o: Option<i64>,
    k: Option<String>,
    v: Option<String>,
    e: Option<String>,
    fatal: Option<String>,
    done: Option<bool>,
    sent: Option<u64>,
    unreported: Option<u64>,
}

/// A record as acknowledged or read: partition, offset, key, value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Record {
    p: i32,
    o: i64,
    k: String,
    v: String,
}

/// What one producer run reported.
#[derive(Debug, Default)]
struct Produced {
    tag: String,
    /// (send index, record) of every acknowledged record, in report order.
    acked: Vec<(u64, Record)>,
    /// (value, error) of every record that was not acknowledged.
    failed: Vec<(String, String)>,
    /// When each record was handed to the client (seconds since the
    /// epoch), by send index.
    sent_at: BTreeMap<u64, f64>,
    fatal: Vec<String>,
    /// Records sent (the script's last line).
    sent: Option<u64>,
    /// Records without a report when the flush gave up.
    unreported: Option<u64>,
}

impl Produced {
    fn acked_on(&self, partition: i32) -> usize {
        self.acked.iter().filter(|(_, r)| r.p == partition).count()
    }

    fn take(&mut self, line: Line) -> Result<(), String> {
        if let Some(fatal) = line.fatal {
            self.fatal.push(fatal);
        } else if line.done == Some(true) {
            self.sent = line.sent;
            self.unreported = line.unreported;
        } else {
            let (Some(i), Some(t), Some(p), Some(o), Some(k), Some(v)) =
                (line.i, line.t, line.p, line.o, line.k, line.v)
            else {
                return Err("a delivery report without i, t, p, o, k or v".into());
            };
            self.sent_at.insert(i, t);
            match line.e {
                None => self.acked.push((i, Record { p, o, k, v })),
                Some(error) => self.failed.push((v, error)),
            }
        }
        Ok(())
    }

    /// Distinct error names of the failed records, with counts.
    fn error_kinds(&self) -> BTreeMap<String, usize> {
        let mut kinds = BTreeMap::new();
        for (_, error) in &self.failed {
            let name = error.split(':').next().unwrap_or_default().to_owned();
            *kinds.entry(name).or_default() += 1;
        }
        kinds
    }
}

/// The producer script running in the background (`--stop-file` mode):
/// its report file is read as it grows.
struct Producer {
    child: Option<Child>,
    tag: String,
    report: PathBuf,
    stop_file: PathBuf,
    output: PathBuf,
    /// Bytes of `report` already parsed.
    read: usize,
    produced: Produced,
}

impl Producer {
    /// Starts producing `tag`-0, `tag`-1, ... round-robin to partitions
    /// `0..partitions` of `topic` through every node's address; `extra`
    /// are more options of the script.
    fn start(
        cluster: &Cluster,
        topic: &str,
        partitions: i32,
        tag: &str,
        extra: &[&str],
    ) -> Producer {
        let dir = cluster.root.path();
        let report = dir.join(format!("{tag}.acks.jsonl"));
        let stop_file = dir.join(format!("{tag}.stop"));
        let output = dir.join(format!("{tag}.producer.out"));
        let out = File::create(&output).expect("producer output");
        let child = Command::new("python3")
            .arg(SCRIPT)
            .arg("produce")
            .arg(cluster.bootstrap())
            .args(["--topic", topic])
            .args(["--partitions", &partitions.to_string()])
            .arg("--out")
            .arg(&report)
            .arg("--stop-file")
            .arg(&stop_file)
            .args(["--tag", tag])
            .args(extra)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone"))
            .stderr(out)
            .spawn()
            .expect("spawn python3");
        Producer {
            child: Some(child),
            tag: tag.to_owned(),
            report,
            stop_file,
            output,
            read: 0,
            produced: Produced {
                tag: tag.to_owned(),
                ..Produced::default()
            },
        }
    }

    /// Parses the complete lines added to the report since the last call.
    fn refresh(&mut self, cluster: &Cluster) {
        let text = std::fs::read(&self.report).unwrap_or_default();
        let Some(end) = text.iter().rposition(|&b| b == b'\n').map(|i| i + 1) else {
            return;
        };
        if end <= self.read {
            return;
        }
        let fresh = String::from_utf8_lossy(&text[self.read..end]).into_owned();
        self.read = end;
        for line in fresh.lines().filter(|l| !l.trim().is_empty()) {
            let parsed = serde_json::from_str::<Line>(line)
                .map_err(|e| e.to_string())
                .and_then(|l| self.produced.take(l));
            if let Err(error) = parsed {
                cluster.fail(&format!("{}: report line {line:?}: {error}", self.tag));
            }
        }
    }

    fn script_output(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }

    /// Waits until `done` holds for what was reported so far; fails when
    /// the producer died, hit a fatal error or [`CLUSTER_WAIT`] passed.
    fn wait(&mut self, cluster: &Cluster, what: &str, done: impl Fn(&Produced) -> bool) {
        let deadline = Instant::now() + CLUSTER_WAIT;
        loop {
            self.refresh(cluster);
            if !self.produced.fatal.is_empty() {
                cluster.fail(&format!(
                    "{}: fatal producer error while waiting for {what}: {:?}",
                    self.tag, self.produced.fatal
                ));
            }
            if done(&self.produced) {
                return;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().expect("try_wait"));
            if let Some(status) = exited {
                cluster.fail(&format!(
                    "{}: the producer exited ({status}) while waiting for {what}; its output:\n{}",
                    self.tag,
                    self.script_output()
                ));
            }
            if Instant::now() >= deadline {
                let errors = self.produced.error_kinds();
                cluster.fail(&format!(
                    "{}: no {what} within {CLUSTER_WAIT:?}: {} acknowledged (by partition {:?}), errors {errors:?}; producer output:\n{}",
                    self.tag,
                    self.produced.acked.len(),
                    (0..3).map(|p| self.produced.acked_on(p)).collect::<Vec<_>>(),
                    self.script_output()
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for [`PROGRESS`] more acknowledgements on `partition`.
    fn wait_progress(&mut self, cluster: &Cluster, partition: i32, what: &str) {
        self.refresh(cluster);
        let target = self.produced.acked_on(partition) + PROGRESS;
        self.wait(
            cluster,
            &format!("{PROGRESS} more acknowledgements on partition {partition} ({what})"),
            |p| p.acked_on(partition) >= target,
        );
    }

    /// Stops producing, waits for the flush (every record reported) and
    /// the script's exit; returns everything it reported.
    fn stop(mut self, cluster: &Cluster) -> Produced {
        std::fs::write(&self.stop_file, b"stop").expect("stop file");
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(SCRIPT_SECONDS_MAX);
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                cluster.fail(&format!(
                    "{}: the producer did not finish within {SCRIPT_SECONDS_MAX}s of the stop; its output:\n{}",
                    self.tag,
                    self.script_output()
                ));
            }
            thread::sleep(Duration::from_millis(100));
        };
        self.refresh(cluster);
        println!("{}: {}", self.tag, self.script_output().trim());
        if !status.success() || self.produced.sent.is_none() {
            cluster.fail(&format!(
                "{}: the producer exited with {status} (fatal errors {:?}); its output:\n{}",
                self.tag,
                self.produced.fatal,
                self.script_output()
            ));
        }
        std::mem::take(&mut self.produced)
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Produces `records` records (`--records` mode) and returns the report;
/// `message_timeout_ms` bounds each record's delivery.
fn produce(
    cluster: &Cluster,
    topic: &str,
    partitions: i32,
    records: u64,
    tag: &str,
    message_timeout_ms: u64,
) -> Produced {
    let report = cluster.root.path().join(format!("{tag}.acks.jsonl"));
    let mut python = Command::new("python3");
    python
        .arg(SCRIPT)
        .arg("produce")
        .arg(cluster.bootstrap())
        .args(["--topic", topic])
        .args(["--partitions", &partitions.to_string()])
        .arg("--out")
        .arg(&report)
        .args(["--records", &records.to_string()])
        .args(["--tag", tag])
        .args(["--message-timeout-ms", &message_timeout_ms.to_string()])
        .env("PYTHONUNBUFFERED", "1");
    let output = cluster.run_script_output(python, &format!("produce {tag}"), SCRIPT_SECONDS_MAX);
    println!("{tag}: {}", output.trim());
    let mut produced = Produced {
        tag: tag.to_owned(),
        ..Produced::default()
    };
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let parsed = serde_json::from_str::<Line>(line)
            .map_err(|e| e.to_string())
            .and_then(|l| produced.take(l));
        if let Err(error) = parsed {
            cluster.fail(&format!("{tag}: report line {line:?}: {error}"));
        }
    }
    if produced.sent != Some(records) {
        cluster.fail(&format!(
            "{tag}: sent {:?} of {records} records (fatal {:?})",
            produced.sent, produced.fatal
        ));
    }
    produced
}

/// Reads partitions `0..partitions` of `topic` from the start up to their
/// high watermarks, once those cover every record `runs` acknowledged (a
/// new leader's high watermark moves up as its followers fetch; a bounded
/// wait, after which the checker reports what is missing).
fn consume(cluster: &Cluster, topic: &str, partitions: i32, runs: &[&Produced]) -> Vec<Record> {
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for (_, ack) in runs.iter().flat_map(|r| r.acked.iter()) {
        let end = ends.entry(ack.p).or_default();
        *end = (*end).max(ack.o + 1);
    }
    let min_ends = ends
        .iter()
        .map(|(p, o)| format!("{p}:{o}"))
        .collect::<Vec<_>>()
        .join(",");
    let out = cluster.root.path().join(format!("{topic}.read.jsonl"));
    let mut python = Command::new("python3");
    python
        .arg(SCRIPT)
        .arg("consume")
        .arg(cluster.bootstrap())
        .args(["--topic", topic])
        .args(["--partitions", &partitions.to_string()])
        .arg("--out")
        .arg(&out)
        .args(["--min-ends", &min_ends])
        .env("PYTHONUNBUFFERED", "1");
    let output = cluster.run_script_output(python, &format!("consume {topic}"), SCRIPT_SECONDS_MAX);
    println!("{}", output.trim());
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let mut read = Vec::new();
    let mut done = false;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        #[derive(Deserialize)]
        struct Read {
            p: Option<i32>,
            o: Option<i64>,
            k: Option<String>,
            v: Option<String>,
            done: Option<bool>,
        }
        match serde_json::from_str::<Read>(line) {
            Ok(Read {
                p: Some(p),
                o: Some(o),
                k: Some(k),
                v: Some(v),
                ..
            }) => read.push(Record { p, o, k, v }),
            Ok(Read {
                done: Some(true), ..
            }) => done = true,
            _ => cluster.fail(&format!("{topic}: read line {line:?}")),
        }
    }
    if !done {
        cluster.fail(&format!("{topic}: the consumer did not finish: {output}"));
    }
    read
}

/// The promise of `CLUSTER.md` §0 over what `runs` reported and `read`
/// (a full read of the partitions): every acknowledged record exactly once
/// at its acknowledged offset with its key and value; no offset and no
/// value read twice (unacknowledged records too: idempotent producers);
/// nothing read that no run sent; each run's acknowledgements on a
/// partition at increasing offsets in send order. Fails with the first
/// problems found.
fn check_read_back(cluster: &Cluster, runs: &[&Produced], read: &[Record]) {
    check_read_back_with(cluster, runs, read, Unacknowledged::AtMostOnce);
}

/// How often a record that was sent but never acknowledged may be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unacknowledged {
    /// At most once: an idempotent producer's retries are deduplicated.
    AtMostOnce,
    /// Any number of times: when records time out in flight
    /// (`message.timeout.ms`), librdkafka bumps the producer epoch
    /// (KIP-360) and sends the records still queued — some of them
    /// possibly written already — again under the new epoch with
    /// sequences from 0, which no broker can tell from new records.
    /// Acknowledged records are still held to exactly once.
    Repeatable,
}

fn check_read_back_with(
    cluster: &Cluster,
    runs: &[&Produced],
    read: &[Record],
    unacknowledged: Unacknowledged,
) {
    let mut problems: Vec<String> = Vec::new();
    let mut at: BTreeMap<(i32, i64), &Record> = BTreeMap::new();
    let mut by_value: BTreeMap<&str, Vec<(i32, i64)>> = BTreeMap::new();
    let mut last_offset: BTreeMap<i32, i64> = BTreeMap::new();
    for record in read {
        if at.insert((record.p, record.o), record).is_some() {
            problems.push(format!("offset {}-{} read twice", record.p, record.o));
        }
        let last = last_offset.entry(record.p).or_insert(-1);
        if record.o <= *last {
            problems.push(format!(
                "partition {} read out of order: {} after {}",
                record.p, record.o, last
            ));
        }
        *last = record.o;
        by_value
            .entry(record.v.as_str())
            .or_default()
            .push((record.p, record.o));
    }
    let acked_values: BTreeSet<&str> = runs
        .iter()
        .flat_map(|r| r.acked.iter().map(|(_, a)| a.v.as_str()))
        .collect();
    for (value, places) in &by_value {
        let acked = acked_values.contains(value);
        if places.len() > 1 && (acked || unacknowledged == Unacknowledged::AtMostOnce) {
            problems.push(format!(
                "value {value} ({}) read {} times at {places:?}",
                if acked {
                    "acknowledged"
                } else {
                    "not acknowledged"
                },
                places.len()
            ));
        }
    }
    let mut sent: BTreeSet<&str> = BTreeSet::new();
    let mut acked = 0usize;
    for run in runs {
        let mut order: BTreeMap<i32, Vec<(u64, i64)>> = BTreeMap::new();
        for (i, ack) in &run.acked {
            acked += 1;
            sent.insert(ack.v.as_str());
            order.entry(ack.p).or_default().push((*i, ack.o));
            match at.get(&(ack.p, ack.o)) {
                Some(found) if found.k == ack.k && found.v == ack.v => {}
                Some(found) => problems.push(format!(
                    "{}: {} acknowledged at {}-{} but {} (key {}) is there",
                    run.tag, ack.v, ack.p, ack.o, found.v, found.k
                )),
                None => problems.push(format!(
                    "{}: {} acknowledged at {}-{} is missing (partition read up to {:?})",
                    run.tag,
                    ack.v,
                    ack.p,
                    ack.o,
                    last_offset.get(&ack.p)
                )),
            }
        }
        for (value, _) in &run.failed {
            sent.insert(value.as_str());
        }
        for (partition, mut acks) in order {
            acks.sort_unstable();
            if let Some(w) = acks.windows(2).find(|w| w[0].1 >= w[1].1) {
                problems.push(format!(
                    "{}: partition {partition}: record {} acknowledged at {} but the later record {} at {}",
                    run.tag, w[0].0, w[0].1, w[1].0, w[1].1
                ));
            }
        }
        if run.unreported != Some(0) {
            problems.push(format!(
                "{}: {:?} records without a delivery report",
                run.tag, run.unreported
            ));
        }
    }
    for record in read {
        let ours = runs
            .iter()
            .any(|r| record.v.starts_with(&format!("{}-", r.tag)));
        if !ours {
            problems.push(format!(
                "{}-{}: {} was never sent",
                record.p, record.o, record.v
            ));
        }
    }
    println!(
        "read back {} records; {acked} acknowledged, {} sent and not acknowledged",
        read.len(),
        sent.len() - acked.min(sent.len())
    );
    if !problems.is_empty() {
        let shown: Vec<&String> = problems.iter().take(25).collect();
        cluster.fail(&format!(
            "{} problems in the read-back of {} records ({acked} acknowledged); the first: {shown:#?}",
            problems.len(),
            read.len()
        ));
    }
}

/// The RF=3 topic's Metadata: three replicas and a full ISR once the
/// followers caught up; a SIGKILLed follower leaves the ISR and shows as
/// offline, acks=all still works with two of three in sync, and after
/// its restart it is back in the ISR of every partition.
#[test]
fn the_isr_of_an_rf3_topic_shrinks_when_a_follower_dies_and_grows_back_after_its_restart() {
    if !common::script::confluent_kafka() {
        return;
    }
    let mut cluster = start_cluster();
    let topic = "isr";
    create_replicated(&mut cluster, topic, 3);
    let view = cluster.wait_isr_full(topic, 3);
    for (partition, p) in &view {
        let distinct: BTreeSet<i32> = p.replicas.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            3,
            "partition {partition}: 3 distinct replicas: {p:?}"
        );
        assert!(p.offline.is_empty(), "partition {partition}: {p:?}");
    }
    // The offsets topic is replicated too (offsets_topic_replication_factor
    // defaults to min(3, nodes)).
    cluster.wait_partitions("__consumer_offsets", "3 replicas per partition", |v| {
        !v.is_empty() && v.values().all(|p| p.replicas.len() == 3)
    });

    let before = produce(&cluster, topic, 3, 60, "before", 60_000);
    assert_eq!(
        before.acked.len(),
        60,
        "acks=all with 3 in sync: every record acknowledged; failures {:?}",
        before.error_kinds()
    );
    // A follower of partition 0 (it leads another partition).
    let leader = view[&0].leader().expect("a leader");
    let follower = cluster
        .ids()
        .into_iter()
        .find(|&id| id != leader)
        .expect("a follower");
    cluster.kill(follower);
    let shrunk = cluster.wait_partitions(
        topic,
        &format!("node {follower} out of every ISR and offline"),
        |v| {
            v.values().all(|p| {
                p.replicas.len() == 3
                    && p.replicas.contains(&(follower as i32))
                    && !p.in_isr(follower)
                    && p.isr.len() == 2
                    && p.offline.contains(&(follower as i32))
            })
        },
    );
    println!("node {follower} killed: {shrunk:?}");
    // Two of three in sync meets min.insync.replicas = 2.
    let degraded = produce(&cluster, topic, 3, 60, "degraded", 60_000);
    assert_eq!(
        degraded.acked.len(),
        60,
        "acks=all with 2 of 3 in sync: every record acknowledged; failures {:?}",
        degraded.error_kinds()
    );

    cluster.restart(follower);
    cluster.wait_ready();
    let grown = cluster.wait_isr_full(topic, 3);
    assert!(grown.values().all(|p| p.offline.is_empty()), "{grown:?}");
    let read = consume(&cluster, topic, 3, &[&before, &degraded]);
    check_read_back(&cluster, &[&before, &degraded], &read);
}

/// (a) The leader of partition 0 is SIGKILLed under acks=all load, three
/// times (whichever node leads it then), and restarted each time: the
/// producer goes on through the new leader, and every acknowledged record
/// is read back exactly once at its acknowledged offset.
#[test]
fn sigkill_of_the_leader_under_load_loses_no_acknowledged_record() {
    if !common::script::confluent_kafka() {
        return;
    }
    let mut cluster = start_cluster();
    let topic = "failover";
    let partitions = 3;
    create_replicated(&mut cluster, topic, partitions);
    let mut producer = Producer::start(&cluster, topic, partitions, "load", &[]);
    producer.wait_progress(&cluster, 0, "the first records");
    for round in 1..=3 {
        let before = cluster.leader(topic, 0);
        let victim = before.leader().expect("a leader");
        cluster.kill(victim);
        let after = cluster.wait_partitions(
            topic,
            &format!("round {round}: a new leader of partition 0 (node {victim} killed)"),
            |v| v[&0].leader() != Some(victim) && v[&0].leader_epoch > before.leader_epoch,
        );
        println!(
            "round {round}: node {victim} killed; partition 0 led by {:?} at epoch {} (was {})",
            after[&0].leader(),
            after[&0].leader_epoch,
            before.leader_epoch
        );
        producer.wait_progress(&cluster, 0, &format!("round {round}, new leader"));
        cluster.restart(victim);
        cluster.wait_ready();
        // Full again before the next kill: otherwise that kill would leave
        // fewer than min.insync.replicas in sync.
        cluster.wait_isr_full(topic, 3);
        producer.wait_progress(&cluster, 0, &format!("round {round}, node {victim} back"));
    }
    let produced = producer.stop(&cluster);
    println!(
        "load: {} acknowledged, {} failed {:?}",
        produced.acked.len(),
        produced.failed.len(),
        produced.error_kinds()
    );
    let read = consume(&cluster, topic, partitions, &[&produced]);
    check_read_back(&cluster, &[&produced], &read);
}

/// A controlled shutdown (SIGTERM) of the leader under acks=all load: the
/// controller moves its leaderships away before it stops, so the
/// idempotent producer goes on at the new leader without a single failed
/// record, and everything acknowledged reads back once at its offset.
#[test]
fn sigterm_of_the_leader_moves_leadership_first_and_fails_no_record() {
    if !common::script::confluent_kafka() {
        return;
    }
    let mut cluster = start_cluster();
    let topic = "handover";
    let partitions = 3;
    create_replicated(&mut cluster, topic, partitions);
    let mut producer = Producer::start(&cluster, topic, partitions, "handover", &[]);
    producer.wait_progress(&cluster, 0, "the first records");
    let before = cluster.leader(topic, 0);
    let victim = before.leader().expect("a leader");
    let status = cluster.terminate(victim);
    assert!(
        status.success(),
        "node {victim} stopped cleanly: {status:?}"
    );
    let after = cluster.wait_partitions(
        topic,
        &format!("a new leader of partition 0 (node {victim} stopped)"),
        |v| v[&0].leader() != Some(victim) && v[&0].leader_epoch > before.leader_epoch,
    );
    println!(
        "node {victim} stopped (SIGTERM); partition 0 led by {:?} at epoch {}",
        after[&0].leader(),
        after[&0].leader_epoch
    );
    producer.wait_progress(
        &cluster,
        0,
        &format!("after node {victim}'s controlled shutdown"),
    );
    cluster.restart(victim);
    cluster.wait_ready();
    cluster.wait_isr_full(topic, 3);
    let produced = producer.stop(&cluster);
    assert!(
        produced.failed.is_empty(),
        "a controlled shutdown fails no record: {:?}",
        produced.error_kinds()
    );
    let read = consume(&cluster, topic, partitions, &[&produced]);
    check_read_back(&cluster, &[&produced], &read);
}

/// (b) The leader is SIGSTOPped until the controller fenced it and another
/// replica leads (past the 1.5 s broker session), then SIGCONTed: nothing
/// it acknowledges conflicts with the new leader's log, it is unfenced and
/// back in the ISR as a follower, and once it leads again (the new leader
/// killed: the first live ISR member in replica order) every
/// acknowledged record reads back from its log at its offset — its
/// divergent tail, if any, was truncated.
#[test]
fn a_paused_leader_is_replaced_acknowledges_nothing_after_and_rejoins_as_follower() {
    if !common::script::confluent_kafka() {
        return;
    }
    let mut cluster = start_cluster();
    let topic = "paused";
    create_replicated(&mut cluster, topic, 1);
    let mut producer = Producer::start(&cluster, topic, 1, "pause", &[]);
    producer.wait_progress(&cluster, 0, "the first records");

    let before = cluster.leader(topic, 0);
    let old = before.leader().expect("a leader");
    cluster.pause(old);
    let replaced = cluster.wait_partitions(
        topic,
        &format!("a new leader of partition 0 (node {old} paused)"),
        |v| v[&0].leader() != Some(old) && v[&0].leader_epoch > before.leader_epoch,
    );
    let new = replaced[&0].leader().expect("checked");
    println!(
        "node {old} paused; node {new} leads at epoch {} (was {})",
        replaced[&0].leader_epoch, before.leader_epoch
    );
    producer.wait_progress(&cluster, 0, &format!("through node {new}"));

    cluster.resume(old);
    let status = cluster.wait_status(&format!("node {old} unfenced after SIGCONT"), |s| {
        s.unfenced(old)
    });
    println!("node {old} resumed: {status:?}");
    let rejoined = cluster.wait_partitions(
        topic,
        &format!("node {old} back in the ISR as a follower of node {new}"),
        |v| v[&0].leader() == Some(new) && v[&0].isr_full(),
    );
    println!("rejoined: {rejoined:?}");
    producer.wait_progress(&cluster, 0, &format!("node {old} following"));
    let produced = producer.stop(&cluster);

    // The old leader leads again: its log is what a reader now sees.
    let expected = rejoined[&0]
        .replicas
        .iter()
        .copied()
        .find(|&r| r != new as i32 && rejoined[&0].isr.contains(&r))
        .and_then(|r| u32::try_from(r).ok())
        .expect("a live ISR member");
    cluster.kill(new);
    let led = cluster.wait_partitions(
        topic,
        &format!("node {expected} (first live ISR member in replica order) leading after node {new} was killed"),
        |v| v[&0].leader() == Some(expected),
    );
    println!("node {new} killed: {led:?}");
    if expected != old {
        println!(
            "note: node {old} is not first in the replica order {:?}, so node {expected} leads; \
             the read-back checks node {old}'s log only through replication",
            rejoined[&0].replicas
        );
    }
    let read = consume(&cluster, topic, 1, &[&produced]);
    check_read_back(&cluster, &[&produced], &read);

    cluster.restart(new);
    cluster.wait_ready();
    cluster.wait_isr_full(topic, 3);
}

/// Seconds since the epoch, as the script's `"t"`.
fn wall_clock() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// (c) Two of the three nodes SIGKILLed under acks=all load (the leader
/// of the partition stays; the metadata quorum is lost with them): no
/// record sent while they are down is acknowledged — each fails with an
/// error (refused, or timed out after `message.timeout.ms`, 8 s here).
/// Once they are back, a new producer's records are all acknowledged, and
/// the read-back holds everything acknowledged, once, at its offset.
///
/// The producer of the outage stops before the nodes return: librdkafka
/// answers records timing out in flight with a producer-epoch bump
/// (KIP-360) and sends the records still queued again under the new
/// epoch, so a record it had already written could be written (and then
/// acknowledged) a second time — a client behaviour, not the broker's.
#[test]
fn with_two_of_three_nodes_down_acks_all_acknowledges_nothing() {
    if !common::script::confluent_kafka() {
        return;
    }
    let mut cluster = start_cluster();
    let topic = "starved";
    create_replicated(&mut cluster, topic, 1);
    let mut producer = Producer::start(
        &cluster,
        topic,
        1,
        "starve",
        &["--message-timeout-ms", "8000", "--per-second", "100"],
    );
    producer.wait_progress(&cluster, 0, "the first records");

    let leader = cluster.leader(topic, 0).leader().expect("a leader");
    let others: Vec<u32> = cluster
        .ids()
        .into_iter()
        .filter(|&id| id != leader)
        .collect();
    for &id in &others {
        cluster.kill(id);
    }
    let down_since = wall_clock();
    // The records handed to the client from 0.5 s to 5 s after the kill:
    // none of them can reach a second replica.
    let window = (down_since + 0.5, down_since + 5.0);
    // Wait until each of them has its report: a record sent after the
    // window has one, and so has every record sent before it.
    producer.wait(
        &cluster,
        &format!(
            "a delivery report for every record sent in the first 5 s after nodes {others:?} were killed"
        ),
        |p| {
            let after = p
                .sent_at
                .iter()
                .filter(|(_, t)| **t > window.1)
                .map(|(i, _)| *i)
                .min();
            after.is_some_and(|after| (0..after).all(|i| p.sent_at.contains_key(&i)))
        },
    );
    // Stopped before the nodes return: every record it sent afterwards
    // fails too, none is acknowledged later.
    let starved = producer.stop(&cluster);
    let after_kill: BTreeSet<u64> = starved
        .sent_at
        .iter()
        .filter(|(_, t)| **t >= window.0)
        .map(|(i, _)| *i)
        .collect();
    let acked_after_kill: Vec<&(u64, Record)> = starved
        .acked
        .iter()
        .filter(|(i, _)| after_kill.contains(i))
        .collect();
    println!(
        "nodes {others:?} down: {} records sent after the kill, {} acknowledged before it, errors {:?}",
        after_kill.len(),
        starved.acked.len(),
        starved.error_kinds()
    );
    if !acked_after_kill.is_empty() {
        cluster.fail(&format!(
            "with nodes {others:?} down, node {leader} acknowledged {} of the {} acks=all records sent then, e.g. {:?}",
            acked_after_kill.len(),
            after_kill.len(),
            &acked_after_kill[..acked_after_kill.len().min(5)]
        ));
    }
    let in_window = starved
        .sent_at
        .values()
        .filter(|t| **t >= window.0 && **t <= window.1)
        .count();
    assert!(
        in_window >= 50,
        "the producer kept sending while the nodes were down: {in_window} records in the window"
    );

    for &id in &others {
        cluster.restart(id);
    }
    cluster.wait_ready();
    cluster.wait_isr_full(topic, 3);
    let again = produce(&cluster, topic, 1, 100, "again", 60_000);
    assert_eq!(
        again.acked.len(),
        100,
        "the nodes back: every record acknowledged; failures {:?}",
        again.error_kinds()
    );
    let read = consume(&cluster, topic, 1, &[&starved, &again]);
    // The first producer's records timed out in flight by design: those it
    // sent again under a bumped epoch may be in the log more than once.
    check_read_back_with(
        &cluster,
        &[&starved, &again],
        &read,
        Unacknowledged::Repeatable,
    );
}

/// Runs a group command of the script; its last JSON line.
fn group_script(
    cluster: &Cluster,
    command: &str,
    topic: &str,
    partitions: i32,
    group: &str,
    extra: &[&str],
) -> serde_json::Value {
    let mut python = Command::new("python3");
    python
        .arg(SCRIPT)
        .arg(command)
        .arg(cluster.bootstrap())
        .args(["--topic", topic])
        .args(["--partitions", &partitions.to_string()])
        .args(["--group", group])
        .args(extra)
        .env("PYTHONUNBUFFERED", "1");
    let output = cluster.run_script_output(python, command, SCRIPT_SECONDS_MAX);
    println!("{command}: {}", output.trim());
    output
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .unwrap_or_else(|| cluster.fail(&format!("{command}: no JSON line in {output}")))
}

/// (d) A consumer group commits offsets (`__consumer_offsets` has three
/// replicas); the node of its coordinator is SIGKILLed; another node
/// becomes coordinator, and a new consumer of the group starts from the
/// committed offsets, not from the start.
#[test]
fn a_consumer_group_keeps_its_committed_offsets_when_the_coordinators_node_dies() {
    if !common::script::confluent_kafka() {
        return;
    }
    let mut cluster = start_cluster();
    let topic = "grouped";
    let partitions = 3;
    let group = "survivors";
    create_replicated(&mut cluster, topic, partitions);
    cluster.wait_partitions("__consumer_offsets", "3 replicas per partition", |v| {
        !v.is_empty() && v.values().all(|p| p.replicas.len() == 3)
    });
    let produced = produce(&cluster, topic, partitions, 180, "grouped", 60_000);
    assert_eq!(produced.acked.len(), 180, "failures: {:?}", produced.failed);

    let committed = group_script(
        &cluster,
        "group-commit",
        topic,
        partitions,
        group,
        &["--per-partition", "25"],
    );
    let want: serde_json::Value = (0..partitions)
        .map(|p| (p.to_string(), serde_json::json!(25)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    assert_eq!(committed["committed"], want, "{committed}");

    let coordinator = cluster.wait_coordinator(group, |_| true);
    cluster.kill(coordinator);
    cluster.wait_status(&format!("node {coordinator} fenced"), |s| {
        s.fenced(coordinator)
    });
    let successor = cluster.wait_coordinator(group, |c| c != coordinator);
    println!("group {group}: coordinator node {coordinator} killed, node {successor} took over");

    let resumed = group_script(&cluster, "group-resume", topic, partitions, group, &[]);
    assert_eq!(
        resumed["committed"], want,
        "the new coordinator has the committed offsets: {resumed}"
    );
    assert_eq!(
        resumed["first"], want,
        "the new consumer starts at the committed offsets, not from the start: {resumed}"
    );
}
