//! Test harness for real-process clusters: `Cluster::start(3)` runs three
//! `fjord start` processes on 127.0.0.1 (node ids 1..=n, fixed ports picked
//! free below the ephemeral range so a restarted node gets its own back),
//! each with its own data dir and log under one temporary directory, all
//! voters of the metadata quorum. It reads the cluster's state with the
//! real CLI, `fjord cluster status --json`, and kills (SIGKILL),
//! terminates (SIGTERM), pauses (SIGSTOP / SIGCONT) and restarts nodes.
//! Partitions are read from Kafka Metadata (leader, leader epoch,
//! replicas, ISR, offline replicas) and group coordinators from
//! FindCoordinator, asked of a live node with `kafka-protocol`'s codecs;
//! topics are created with CreateTopics (replication factor, configs).
//!
//! Heartbeats every 200 ms and a 1.5 s session keep fencing quick. No
//! timing assertions: every wait is a bounded poll for an outcome
//! ([`CLUSTER_WAIT`]) that fails with the last state seen and the nodes'
//! logs.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, MetadataRequest, MetadataResponse, RequestHeader, ResponseHeader,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use serde::Deserialize;
use tempfile::TempDir;

/// Bound of one wait for the cluster to reach a state (serving, a new
/// controller, a node fenced or back). Generous for a loaded CI machine;
/// a healthy cluster gets there in a few seconds.
pub const CLUSTER_WAIT: Duration = Duration::from_secs(30);

/// Bound of one `fjord` CLI call.
const CLI_WAIT: Duration = Duration::from_secs(20);

/// Bound of one Kafka request of the harness (Metadata, FindCoordinator,
/// CreateTopics) to one node: a down or paused node is an error, not a
/// hang.
const KAFKA_CALL_WAIT: Duration = Duration::from_secs(10);

/// `broker_heartbeat_interval_ms` / `broker_session_timeout_ms` of the
/// test nodes: a killed node is fenced 1.5 s after its last heartbeat.
pub const HEARTBEAT_INTERVAL_MS: u64 = 200;
pub const SESSION_TIMEOUT_MS: u64 = 1500;

/// Shards per node: three nodes share the test machine's cores.
pub const SHARDS: u16 = 1;

/// Small segment preparation (as the single-node harness), quick
/// heartbeats and fencing.
fn env() -> Vec<(&'static str, String)> {
    vec![
        ("FJORD_LOG_PREPARE_STEP_BYTES", "262144".into()),
        ("FJORD_LOG_PREPARE_AHEAD_BYTES", "524288".into()),
        (
            "FJORD_BROKER_HEARTBEAT_INTERVAL_MS",
            HEARTBEAT_INTERVAL_MS.to_string(),
        ),
        (
            "FJORD_BROKER_SESSION_TIMEOUT_MS",
            SESSION_TIMEOUT_MS.to_string(),
        ),
        // FJORD_TEST_LOG: the nodes' log filter (e.g. to debug a test).
        (
            "FJORD_LOG",
            std::env::var("FJORD_TEST_LOG").unwrap_or_else(|_| "info".into()),
        ),
    ]
}

/// `fjord cluster status --json`, as the CLI prints it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Status {
    /// The active controller; `None` (null, or a negative id) while there
    /// is none.
    pub controller: Option<i64>,
    pub metadata_log: LogPosition,
    pub nodes: Vec<NodeStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LogPosition {
    pub applied: u64,
    pub committed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NodeStatus {
    pub node: u32,
    pub native: String,
    pub kafka: Option<String>,
    pub fenced: bool,
    /// Partitions this node leads (all topics, `__consumer_offsets` too).
    pub leaders: u32,
}

impl Status {
    pub fn controller(&self) -> Option<u32> {
        self.controller
            .filter(|&id| id >= 0)
            .and_then(|id| u32::try_from(id).ok())
    }

    pub fn node(&self, id: u32) -> Option<&NodeStatus> {
        self.nodes.iter().find(|n| n.node == id)
    }

    /// Registered and not fenced.
    pub fn unfenced(&self, id: u32) -> bool {
        self.node(id).is_some_and(|n| !n.fenced)
    }

    /// Registered and fenced.
    pub fn fenced(&self, id: u32) -> bool {
        self.node(id).is_some_and(|n| n.fenced)
    }
}

/// One node: its ports (fixed for its life, restarts included) and
/// process.
pub struct Node {
    pub id: u32,
    pub native: SocketAddr,
    pub kafka: SocketAddr,
    pub cluster: SocketAddr,
    dir: PathBuf,
    child: Option<Child>,
    /// Length of the log when the current process was spawned.
    log_start: u64,
    /// Stopped with SIGSTOP (see [`Cluster::pause`]): not asked anything
    /// until resumed.
    paused: bool,
    /// Environment of this node only, on top of the cluster's.
    pub env: Vec<(String, String)>,
}

impl Node {
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("fjord.log")
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// What the current (or last) process logged.
    fn latest_logs(&self) -> String {
        let logs = self.logs();
        logs.get(self.log_start as usize..)
            .unwrap_or_default()
            .to_owned()
    }

    /// The process id of the running process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => child.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }
}

pub struct Cluster {
    pub root: TempDir,
    pub nodes: Vec<Node>,
    /// `--controller-quorum-voters` of every node.
    pub voters: String,
    /// Environment of every node, on top of the harness's (e.g. a short
    /// `FJORD_REPLICA_LAG_TIME_MAX_MS`); a node's own `env` comes last.
    pub env: Vec<(String, String)>,
}

impl Cluster {
    /// Starts `count` nodes (ids 1..=count, all voters) and waits until
    /// every one is registered and unfenced and a controller is active.
    pub fn start(count: u32) -> Cluster {
        let began = Instant::now();
        let mut cluster = Cluster::prepare(count);
        for id in 1..=count {
            cluster.restart(id);
        }
        cluster.wait_ready();
        // Not asserted: a figure for docs/BENCHMARKS.md (debug build).
        println!(
            "cluster of {count} nodes serving {} ms after the first spawn",
            began.elapsed().as_millis()
        );
        cluster
    }

    /// Starts `count` nodes (all voters) with `env` added to every node's
    /// environment, and waits until they serve.
    pub fn start_with_env(count: u32, env: &[(&str, &str)]) -> Cluster {
        let mut cluster = Cluster::prepare(count);
        cluster.env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        for id in 1..=count {
            cluster.restart(id);
        }
        cluster.wait_ready();
        cluster
    }

    /// Starts `count` nodes of which only the first `voters` vote in the
    /// metadata quorum (the others follow it as learners), and waits until
    /// every one is registered and unfenced.
    pub fn start_with_voters(count: u32, voters: u32) -> Cluster {
        assert!(voters >= 1 && voters <= count);
        let mut cluster = Cluster::prepare(count);
        cluster.voters = cluster
            .nodes
            .iter()
            .take(voters as usize)
            .map(|n| format!("{}@{}", n.id, n.cluster))
            .collect::<Vec<_>>()
            .join(",");
        for id in 1..=count {
            cluster.restart(id);
        }
        cluster.wait_ready();
        cluster
    }

    /// The nodes' ports and directories, no process started yet (start
    /// each with [`Cluster::restart`]).
    pub fn prepare(count: u32) -> Cluster {
        let root = tempfile::Builder::new()
            .prefix("fjord-cluster")
            .tempdir_in(std::env::temp_dir())
            .expect("tempdir");
        let mut taken = BTreeSet::new();
        let nodes: Vec<Node> = (1..=count)
            .map(|id| {
                // The native port and the shard ports right above it.
                let native = free_port(&mut taken, 1 + SHARDS);
                let kafka = free_port(&mut taken, 1);
                let cluster = free_port(&mut taken, 1);
                let addr = |port| SocketAddr::from(([127, 0, 0, 1], port));
                let dir = root.path().join(format!("node{id}"));
                std::fs::create_dir_all(&dir).expect("node dir");
                Node {
                    id,
                    native: addr(native),
                    kafka: addr(kafka),
                    cluster: addr(cluster),
                    dir,
                    child: None,
                    log_start: 0,
                    paused: false,
                    env: Vec::new(),
                }
            })
            .collect();
        let voters = nodes
            .iter()
            .map(|n| format!("{}@{}", n.id, n.cluster))
            .collect::<Vec<_>>()
            .join(",");
        Cluster {
            root,
            nodes,
            voters,
            env: Vec::new(),
        }
    }

    pub fn node(&self, id: u32) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    fn node_mut(&mut self, id: u32) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    pub fn ids(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// The nodes whose process runs and is not paused.
    pub fn live(&mut self) -> Vec<u32> {
        self.nodes
            .iter_mut()
            .filter_map(|n| (n.running() && !n.paused).then_some(n.id))
            .collect()
    }

    fn spawn(&mut self, id: u32) {
        let voters = self.voters.clone();
        let cluster_env = self.env.clone();
        let node = self.node_mut(id);
        assert!(node.child.is_none(), "node {id} already runs");
        // A killed node leaves its address files behind.
        let _ = std::fs::remove_file(node.data_dir().join("broker.addr"));
        let _ = std::fs::remove_file(node.data_dir().join("kafka.addr"));
        let log = File::options()
            .create(true)
            .append(true)
            .open(node.log_path())
            .expect("log file");
        node.log_start = log.metadata().expect("log metadata").len();
        let child = Command::new(env!("CARGO_BIN_EXE_fjord"))
            .arg("start")
            .args(["--node-id", &id.to_string()])
            .arg("--data-dir")
            .arg(node.data_dir())
            .args(["--listen", &node.native.to_string()])
            .args(["--kafka-listen", &node.kafka.to_string()])
            .args(["--cluster-listen", &node.cluster.to_string()])
            .args(["--controller-quorum-voters", &voters])
            .args(["--shards", &SHARDS.to_string()])
            .envs(env())
            .envs(cluster_env)
            .envs(node.env.clone())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn fjord");
        node.child = Some(child);
    }

    /// SIGKILL `id` and reap it.
    pub fn kill(&mut self, id: u32) {
        let node = self.node_mut(id);
        let mut child = node
            .child
            .take()
            .unwrap_or_else(|| panic!("node {id} is not running"));
        // SIGKILL also ends a stopped (paused) process.
        node.paused = false;
        child.kill().expect("kill");
        child.wait().expect("wait");
    }

    /// SIGSTOP `id`: the process stays, holds its sockets and answers
    /// nothing (no heartbeats, no fetches, no produce responses) until
    /// [`Cluster::resume`]. Not asked anything meanwhile (not in
    /// [`Cluster::live`]).
    pub fn pause(&mut self, id: u32) {
        self.signal(id, libc::SIGSTOP);
        self.node_mut(id).paused = true;
    }

    /// SIGCONT `id` after [`Cluster::pause`].
    pub fn resume(&mut self, id: u32) {
        self.signal(id, libc::SIGCONT);
        self.node_mut(id).paused = false;
    }

    fn signal(&mut self, id: u32, signal: libc::c_int) {
        let node = self.node_mut(id);
        assert!(node.running(), "node {id} is not running");
        let pid = node.pid().expect("running");
        // SAFETY: kill(2) on a child we spawned and have not reaped.
        let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
    }

    /// SIGTERM `id` (controlled shutdown) and wait for it to exit.
    pub fn terminate(&mut self, id: u32) -> ExitStatus {
        let node = self.node_mut(id);
        let mut child = node
            .child
            .take()
            .unwrap_or_else(|| panic!("node {id} is not running"));
        assert!(!node.paused, "node {id} is paused: resume it first");
        // SAFETY: kill(2) on a child we spawned and have not reaped.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill failed");
        let deadline = Instant::now() + CLUSTER_WAIT;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "node {id} did not exit within {CLUSTER_WAIT:?} of SIGTERM; its log:\n{}",
                    self.node(id).logs()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts `id` (again, after `kill` or `terminate`) on its data dir
    /// and ports; does not wait for it to serve (see
    /// [`Cluster::wait_ready`]).
    pub fn restart(&mut self, id: u32) {
        self.spawn(id);
    }

    /// Runs the `fjord` CLI with `args`, bounded by a deadline.
    pub fn fjord(&self, args: &[&str]) -> Result<Output, String> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_fjord"));
        command.args(args).env_remove("FJORD_BROKERS");
        run_bounded(command, self.root.path(), CLI_WAIT)
    }

    /// `fjord cluster status --json` asked of node `via`.
    pub fn status(&self, via: u32) -> Result<Status, String> {
        let brokers = self.node(via).native.to_string();
        let out = self.fjord(&["cluster", "status", "--brokers", &brokers, "--json"])?;
        if !out.status.success() {
            return Err(format!(
                "fjord cluster status via node {via}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.trim()).map_err(|e| format!("status {text:?}: {e}"))
    }

    /// Polls the status of the live nodes (each in turn) until `done`
    /// holds for one of them; returns that status. Fails after
    /// [`CLUSTER_WAIT`], or at once when a node that should run exited,
    /// with the last answers and every node's log.
    pub fn wait_status(&mut self, what: &str, done: impl Fn(&Status) -> bool) -> Status {
        let expected_live = self.live();
        let deadline = Instant::now() + CLUSTER_WAIT;
        let mut last: Vec<String> = Vec::new();
        loop {
            for &id in &expected_live {
                if self.node_mut(id).running() {
                    continue;
                }
                // A pinned port may be held for a moment by another
                // process's connection while the node was down: try again.
                let logs = self.node(id).latest_logs();
                if logs.contains("already in use") && Instant::now() < deadline {
                    self.node_mut(id).child = None;
                    thread::sleep(Duration::from_millis(200));
                    self.spawn(id);
                    continue;
                }
                self.fail(&format!(
                    "waiting for {what}: node {id} exited; last answers: {last:#?}"
                ));
            }
            for id in &expected_live {
                match self.status(*id) {
                    Ok(status) if done(&status) => return status,
                    Ok(status) => remember(&mut last, format!("node {id}: {status:?}")),
                    Err(error) => remember(&mut last, format!("node {id}: {error}")),
                }
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "no {what} within {CLUSTER_WAIT:?}; last answers: {last:#?}"
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every running node is registered and unfenced and a
    /// live voter is the controller.
    pub fn wait_ready(&mut self) -> Status {
        let live = self.live();
        self.wait_status(&format!("cluster of nodes {live:?} serving"), |s| {
            s.controller().is_some_and(|c| live.contains(&c))
                && live.iter().all(|&id| s.unfenced(id))
        })
    }

    /// The active controller (a live node's answer).
    pub fn controller(&mut self) -> u32 {
        let live = self.live();
        let status = self.wait_status("an active controller", |s| {
            s.controller().is_some_and(|c| live.contains(&c))
        });
        status.controller().expect("checked")
    }

    /// Panics with `message` and the end of every node's log.
    pub fn fail(&self, message: &str) -> ! {
        let mut text = format!("{message}\n");
        // FJORD_TEST_KEEP_LOGS=DIR keeps every node's whole log there.
        let keep = std::env::var_os("FJORD_TEST_KEEP_LOGS").map(std::path::PathBuf::from);
        if let Some(dir) = &keep {
            // The clients' outputs in the cluster's directory too.
            if let Ok(entries) = std::fs::read_dir(self.root.path()) {
                for entry in entries.flatten().filter(|e| e.path().is_file()) {
                    let _ = std::fs::create_dir_all(dir);
                    let _ = std::fs::copy(entry.path(), dir.join(entry.file_name()));
                }
            }
        }
        for node in &self.nodes {
            let logs = node.logs();
            if let Some(dir) = &keep {
                let _ = std::fs::create_dir_all(dir);
                let _ = std::fs::write(dir.join(format!("node{}.log", node.id)), &logs);
            }
            let tail: Vec<&str> = logs.lines().rev().take(60).collect();
            text.push_str(&format!(
                "\n---- node {} log (last 60 lines) ----\n",
                node.id
            ));
            for line in tail.into_iter().rev() {
                text.push_str(line);
                text.push('\n');
            }
        }
        panic!("{text}");
    }

    /// Runs `command` (a client script) until it exits or `seconds_max`
    /// pass; panics with its output and the nodes' logs unless it exited 0.
    pub fn run_script(&self, command: Command, label: &str, seconds_max: u64) {
        let stdout = self.run_script_output(command, label, seconds_max);
        println!("{stdout}");
    }

    /// [`Cluster::run_script`] that returns the script's standard output.
    pub fn run_script_output(&self, command: Command, label: &str, seconds_max: u64) -> String {
        match run_bounded(command, self.root.path(), Duration::from_secs(seconds_max)) {
            Ok(out) if out.status.success() => {
                eprintln!("{label}: {}", String::from_utf8_lossy(&out.stderr));
                String::from_utf8_lossy(&out.stdout).into_owned()
            }
            Ok(out) => self.fail(&format!(
                "{label} exited with {}; its output:\n{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )),
            Err(error) => self.fail(&format!("{label}: {error}")),
        }
    }
}

/// One partition as a node's Kafka Metadata (v12) shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionView {
    pub error: i16,
    /// -1: none.
    pub leader: i32,
    pub leader_epoch: i32,
    /// In replica order (the first is the preferred leader).
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline: Vec<i32>,
}

impl PartitionView {
    /// Every replica is in the ISR.
    pub fn isr_full(&self) -> bool {
        let replicas: BTreeSet<i32> = self.replicas.iter().copied().collect();
        let isr: BTreeSet<i32> = self.isr.iter().copied().collect();
        !replicas.is_empty() && replicas == isr
    }

    pub fn in_isr(&self, id: u32) -> bool {
        self.isr.contains(&(id as i32))
    }

    /// The leader as a node id, if there is one.
    pub fn leader(&self) -> Option<u32> {
        u32::try_from(self.leader).ok()
    }
}

/// A topic's partitions by index, as one node sees them.
pub type TopicPartitions = BTreeMap<i32, PartitionView>;

impl Cluster {
    /// CreateTopics v7 through `via`'s Kafka listener (forwarded to the
    /// controller): `partitions` partitions of `replication_factor`
    /// replicas with the topic `configs`. Fails the test on an error.
    pub fn create_topic(
        &self,
        via: u32,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(&str, &str)],
    ) {
        let mut request = CreateTopicsRequest::default();
        let mut topic = CreatableTopic::default();
        topic.name = TopicName(StrBytes::from_string(name.to_owned()));
        topic.num_partitions = partitions;
        topic.replication_factor = replication_factor;
        for (key, value) in configs {
            let mut config = CreatableTopicConfig::default();
            config.name = StrBytes::from_string((*key).to_owned());
            config.value = Some(StrBytes::from_string((*value).to_owned()));
            topic.configs.push(config);
        }
        request.topics.push(topic);
        request.timeout_ms = 30_000;
        let response: CreateTopicsResponse =
            kafka_call(self.node(via).kafka, ApiKey::CreateTopics, 7, &request)
                .unwrap_or_else(|e| self.fail(&format!("CreateTopics {name} via node {via}: {e}")));
        let topic = &response.topics[0];
        if topic.error_code != 0 {
            self.fail(&format!(
                "CreateTopics {name} (RF {replication_factor}, {configs:?}) via node {via}: error {} {:?}",
                topic.error_code, topic.error_message
            ));
        }
    }

    /// `topic`'s partitions in node `via`'s Kafka Metadata v12.
    pub fn partitions(&self, via: u32, topic: &str) -> Result<TopicPartitions, String> {
        let mut request = MetadataRequest::default();
        let mut wanted = MetadataRequestTopic::default();
        wanted.name = Some(TopicName(StrBytes::from_string(topic.to_owned())));
        request.topics = Some(vec![wanted]);
        request.allow_auto_topic_creation = false;
        let response: MetadataResponse =
            kafka_call(self.node(via).kafka, ApiKey::Metadata, 12, &request)?;
        let found = response
            .topics
            .into_iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
            .ok_or_else(|| format!("node {via}: no {topic} in the Metadata response"))?;
        if found.error_code != 0 {
            return Err(format!("node {via}: {topic}: error {}", found.error_code));
        }
        let ids = |nodes: &[kafka_protocol::messages::BrokerId]| -> Vec<i32> {
            nodes.iter().map(|b| b.0).collect()
        };
        Ok(found
            .partitions
            .iter()
            .map(|p| {
                (
                    p.partition_index,
                    PartitionView {
                        error: p.error_code,
                        leader: p.leader_id.0,
                        leader_epoch: p.leader_epoch,
                        replicas: ids(&p.replica_nodes),
                        isr: ids(&p.isr_nodes),
                        offline: ids(&p.offline_replicas),
                    },
                )
            })
            .collect())
    }

    /// Polls the Metadata of `topic` on every live node in turn until
    /// one's answer names a live leader for every partition and satisfies
    /// `done`; returns that answer. Fails after [`CLUSTER_WAIT`] with the
    /// last answers and the nodes' logs.
    pub fn wait_partitions(
        &mut self,
        topic: &str,
        what: &str,
        done: impl Fn(&TopicPartitions) -> bool,
    ) -> TopicPartitions {
        self.poll_partitions(topic, what, false, done)
    }

    /// [`Cluster::wait_partitions`] until every live node's answer
    /// satisfies `done` (a node that has not applied the latest metadata
    /// yet cannot end the wait with a stale view); returns the last one.
    pub fn wait_partitions_everywhere(
        &mut self,
        topic: &str,
        what: &str,
        done: impl Fn(&TopicPartitions) -> bool,
    ) -> TopicPartitions {
        self.poll_partitions(topic, what, true, done)
    }

    fn poll_partitions(
        &mut self,
        topic: &str,
        what: &str,
        everywhere: bool,
        done: impl Fn(&TopicPartitions) -> bool,
    ) -> TopicPartitions {
        let deadline = Instant::now() + CLUSTER_WAIT;
        let mut last: Vec<String> = Vec::new();
        loop {
            let live = self.live();
            let mut satisfied = Vec::new();
            let mut everyone = true;
            for &id in &live {
                match self.partitions(id, topic) {
                    Ok(view)
                        if view
                            .values()
                            .all(|p| p.leader().is_some_and(|l| live.contains(&l)))
                            && done(&view) =>
                    {
                        if !everywhere {
                            return view;
                        }
                        satisfied.push(view);
                    }
                    Ok(view) => {
                        remember(&mut last, format!("node {id}: {view:?}"));
                        everyone = false;
                    }
                    Err(error) => {
                        remember(&mut last, format!("node {id}: {error}"));
                        everyone = false;
                    }
                }
                if everywhere && !everyone {
                    break;
                }
            }
            if everywhere && everyone {
                if let Some(view) = satisfied.pop() {
                    return view;
                }
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "{topic}: no {what} within {CLUSTER_WAIT:?} (live nodes {live:?}); last answers: {last:#?}"
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every partition of `topic` has `replication_factor`
    /// replicas, all in the ISR, and a live leader, in the Metadata of
    /// every live node.
    pub fn wait_isr_full(&mut self, topic: &str, replication_factor: usize) -> TopicPartitions {
        self.wait_partitions_everywhere(
            topic,
            &format!("{replication_factor} replicas all in the ISR"),
            |view| {
                !view.is_empty()
                    && view
                        .values()
                        .all(|p| p.replicas.len() == replication_factor && p.isr_full())
            },
        )
    }

    /// The live leader of `topic`-`partition` (waits for one).
    pub fn leader(&mut self, topic: &str, partition: i32) -> PartitionView {
        let view = self.wait_partitions(
            topic,
            &format!("live leader of partition {partition}"),
            |v| v.contains_key(&partition),
        );
        view[&partition].clone()
    }

    /// The coordinator node of `group` by FindCoordinator v3 asked of
    /// node `via`.
    pub fn coordinator(&self, via: u32, group: &str) -> Result<u32, String> {
        let mut request = FindCoordinatorRequest::default();
        request.key = StrBytes::from_string(group.to_owned());
        request.key_type = 0;
        let response: FindCoordinatorResponse =
            kafka_call(self.node(via).kafka, ApiKey::FindCoordinator, 3, &request)?;
        if response.error_code != 0 {
            return Err(format!(
                "node {via}: FindCoordinator {group}: error {}",
                response.error_code
            ));
        }
        u32::try_from(response.node_id.0).map_err(|_| {
            format!(
                "node {via}: FindCoordinator {group}: node {}",
                response.node_id.0
            )
        })
    }

    /// Asks every live node in turn until one names a coordinator of
    /// `group` that `done` accepts.
    pub fn wait_coordinator(&mut self, group: &str, done: impl Fn(u32) -> bool) -> u32 {
        let deadline = Instant::now() + CLUSTER_WAIT;
        let mut last: Vec<String> = Vec::new();
        loop {
            let live = self.live();
            for &id in &live {
                match self.coordinator(id, group) {
                    Ok(found) if live.contains(&found) && done(found) => return found,
                    Ok(found) => remember(&mut last, format!("node {id}: coordinator {found}")),
                    Err(error) => remember(&mut last, error),
                }
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "no acceptable coordinator of group {group} within {CLUSTER_WAIT:?}; last answers: {last:#?}"
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The comma-separated Kafka addresses of every node (a client's
    /// `bootstrap.servers` that survives any one node being down).
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.kafka.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// One Kafka request/response of `api` at `version` on a fresh
/// connection to `addr`, bounded by [`KAFKA_CALL_WAIT`]; an error (not a
/// panic) when the node is down, paused or answers something else.
pub fn kafka_call<Q: Encodable, R: Decodable>(
    addr: SocketAddr,
    api: ApiKey,
    version: i16,
    request: &Q,
) -> Result<R, String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        format!("{api:?} v{version} to {addr}: {what}: {e}")
    };
    let mut stream =
        TcpStream::connect_timeout(&addr, KAFKA_CALL_WAIT).map_err(|e| fail("connect", &e))?;
    stream
        .set_read_timeout(Some(KAFKA_CALL_WAIT))
        .and_then(|()| stream.set_write_timeout(Some(KAFKA_CALL_WAIT)))
        .map_err(|e| fail("timeouts", &e))?;
    let mut header = RequestHeader::default();
    header.request_api_key = api as i16;
    header.request_api_version = version;
    header.correlation_id = 14;
    header.client_id = Some(StrBytes::from_static_str("cluster-harness"));
    let mut body = BytesMut::new();
    header
        .encode(&mut body, api.request_header_version(version))
        .map_err(|e| fail("encode header", &e))?;
    request
        .encode(&mut body, version)
        .map_err(|e| fail("encode body", &e))?;
    let mut frame = BytesMut::new();
    frame.put_u32(body.len() as u32);
    frame.extend_from_slice(&body);
    stream.write_all(&frame).map_err(|e| fail("write", &e))?;
    let mut len = [0u8; 4];
    stream
        .read_exact(&mut len)
        .map_err(|e| fail("read length", &e))?;
    let mut response = vec![0u8; u32::from_be_bytes(len) as usize];
    stream
        .read_exact(&mut response)
        .map_err(|e| fail("read response", &e))?;
    let mut response = Bytes::from(response);
    let header = ResponseHeader::decode(&mut response, api.response_header_version(version))
        .map_err(|e| fail("decode header", &e))?;
    if header.correlation_id != 14 {
        return Err(fail("correlation id", &header.correlation_id));
    }
    R::decode(&mut response, version).map_err(|e| fail("decode body", &e))
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Keeps the last few distinct answers for a failure message.
fn remember(last: &mut Vec<String>, answer: String) {
    if last.last() != Some(&answer) {
        last.push(answer);
    }
    if last.len() > 6 {
        last.remove(0);
    }
}

/// A port with `span - 1` free ports right after it, in 20000..32000
/// (below Linux's ephemeral range, so no outgoing connection takes it
/// while its node restarts), none of them in `taken`.
fn free_port(taken: &mut BTreeSet<u16>, span: u16) -> u16 {
    let seed = u64::from(std::process::id()) * 7919
        + u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .subsec_nanos(),
        );
    let port = (0..2000u64)
        .map(|i| 20_000 + ((seed + i * 104_729) % 11_900) as u16)
        .find(|&port| {
            (port..port + span).all(|p| !taken.contains(&p))
                && (port..port + span).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok())
        })
        .expect("free ports in 20000..32000");
    taken.extend(port..port + span);
    port
}

/// Runs `command` with its output in files under `dir`, killing it after
/// `limit`.
fn run_bounded(mut command: Command, dir: &Path, limit: Duration) -> Result<Output, String> {
    let out_file = tempfile::NamedTempFile::new_in(dir).map_err(|e| e.to_string())?;
    let err_file = tempfile::NamedTempFile::new_in(dir).map_err(|e| e.to_string())?;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(out_file.reopen().map_err(|e| e.to_string())?)
        .stderr(err_file.reopen().map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("spawn {command:?}: {e}"))?;
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{command:?} still running after {limit:?}, killed; its output: {}{}",
                std::fs::read_to_string(out_file.path()).unwrap_or_default(),
                std::fs::read_to_string(err_file.path()).unwrap_or_default()
            ));
        }
        thread::sleep(Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: std::fs::read(out_file.path()).map_err(|e| e.to_string())?,
        stderr: std::fs::read(err_file.path()).map_err(|e| e.to_string())?,
    })
}
