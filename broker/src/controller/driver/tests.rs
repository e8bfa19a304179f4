//! Real sockets, real glommio: each node runs on its own thread with its
//! own executor and temp dir; the test thread drives them through a
//! command channel and reads what they publish.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use super::*;
use crate::controller::quorum::DiskStorage;
use crate::metadata::image::Endpoint;
use crate::topic::TopicConfig;

/// A generous bound for anything the cluster should do in well under a
/// second; only reached when something is broken.
const PATIENCE: Duration = Duration::from_secs(60);

fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

fn controller_config(voters: &[u32]) -> ControllerConfig {
    ControllerConfig {
        voters: voters.iter().copied().map(NodeId).collect(),
        defaults: TopicConfig::from_log_config(&fjord_storage::LogConfig::default()),
        base: fjord_storage::LogConfig::default(),
        default_partitions: 1,
        default_replication_factor: 1,
        offsets_partitions: 1,
        offsets_replication_factor: 1,
        partitions_max: 1000,
        session_timeout_ms: 9_000,
        producer_id_block_size: 1000,
        leader_rebalance_interval_ms: 0,
    }
}

fn cluster_config(node: u32, ports: &[u16], dir: &std::path::Path, tick_ms: u64) -> ClusterConfig {
    let voters: Vec<Voter> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| Voter {
            node: NodeId(i as u32 + 1),
            host: "127.0.0.1".to_string(),
            port: *port,
        })
        .collect();
    let port = ports[node as usize - 1];
    ClusterConfig {
        node: NodeId(node),
        controller: controller_config(&voters.iter().map(|v| v.node.0).collect::<Vec<_>>()),
        voters,
        cluster_listen: format!("127.0.0.1:{port}").parse().unwrap(),
        dir: dir.to_path_buf(),
        endpoints: BrokerEndpoints {
            native: None,
            kafka: None,
            cluster: Some(Endpoint {
                host: "127.0.0.1".to_string(),
                port,
            }),
        },
        shards: 1,
        rack: None,
        heartbeat_interval_ms: 200,
        raft_tick_ms: tick_ms,
        log_reopen_backoff_max_ms: 1_000,
        write_fault: WriteFault::default(),
        lease_margin_ms: 1_000,
        lease: Default::default(),
    }
}

type Submitted = Result<Answer, ControllerUnavailable>;

enum Control {
    Submit(ControllerCommand, mpsc::Sender<Submitted>),
    /// Controlled shutdown; answers whether the broker ended fenced.
    Shutdown(mpsc::Sender<bool>),
    Stop,
}

#[derive(Clone, Copy, Debug, Default)]
struct Status {
    view: QuorumView,
    controller: bool,
    unfenced: bool,
    health: LogHealth,
}

/// One node on its own thread and executor.
struct Node {
    control: mpsc::Sender<Control>,
    status: Arc<Mutex<Status>>,
    thread: Option<glommio::ExecutorJoinHandle<()>>,
}

fn bootstrap(node: u32) -> Vec<MetadataRecord> {
    vec![MetadataRecord::ClusterId {
        id: [node as u8; 16],
    }]
}

impl Node {
    fn start(config: ClusterConfig) -> Node {
        let (control, control_rx) = mpsc::channel();
        let status = Arc::new(Mutex::new(Status::default()));
        let published = status.clone();
        let thread = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .name(&format!("node-{}", config.node.0))
            .io_memory(1 << 20)
            .spawn(move || async move {
                let recovered = recover(&config).unwrap();
                let bootstrap = bootstrap(config.node.0);
                let handle = ControllerHandle::start(config, recovered, bootstrap).unwrap();
                loop {
                    *published.lock().unwrap() = Status {
                        view: handle.quorum_view(),
                        controller: handle.is_controller(),
                        unfenced: handle.unfenced(),
                        health: handle.log_health(),
                    };
                    match control_rx.try_recv() {
                        Ok(Control::Submit(command, reply)) => {
                            let handle = handle.clone();
                            glommio::spawn_local(async move {
                                let _ = reply.send(handle.submit(command).await);
                            })
                            .detach();
                        }
                        Ok(Control::Shutdown(reply)) => {
                            handle.shutdown(PATIENCE.as_millis() as u64).await;
                            let _ = reply.send(!handle.unfenced());
                        }
                        Ok(Control::Stop) | Err(mpsc::TryRecvError::Disconnected) => {
                            // Let every task see the stop and drop its
                            // sockets before the executor goes.
                            handle.stop();
                            glommio::timer::sleep(Duration::from_millis(50)).await;
                            return;
                        }
                        Err(mpsc::TryRecvError::Empty) => {
                            glommio::timer::sleep(Duration::from_millis(5)).await
                        }
                    }
                }
            })
            .unwrap();
        Node {
            control,
            status,
            thread: Some(thread),
        }
    }

    fn status(&self) -> Status {
        *self.status.lock().unwrap()
    }

    fn submit(&self, command: ControllerCommand) -> Submitted {
        let (reply, reply_rx) = mpsc::channel();
        self.control.send(Control::Submit(command, reply)).unwrap();
        reply_rx.recv_timeout(PATIENCE).expect("submit answered")
    }

    /// A controlled shutdown; whether the broker ended fenced.
    fn shutdown(&self) -> bool {
        let (reply, reply_rx) = mpsc::channel();
        self.control.send(Control::Shutdown(reply)).unwrap();
        reply_rx.recv_timeout(PATIENCE * 2).expect("shutdown done")
    }

    /// Stops its executor: every task, socket and timer of the node ends.
    fn stop(&mut self) {
        let _ = self.control.send(Control::Stop);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < PATIENCE, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every live node names the same controller, which says it is one, and
/// all applied the same index.
fn agreed_controller(nodes: &[Option<Node>]) -> Option<u32> {
    let statuses: Vec<Status> = nodes.iter().flatten().map(Node::status).collect();
    let controller = statuses.first()?.view.controller?;
    let applied = statuses[0].view.applied_index;
    let agreed = statuses
        .iter()
        .all(|s| s.view.controller == Some(controller) && s.view.applied_index == applied);
    let leader_ready = nodes
        .get(controller.0 as usize - 1)
        .and_then(|n| n.as_ref())
        .is_some_and(|n| n.status().controller);
    (agreed && leader_ready).then_some(controller.0)
}

/// The metadata payloads committed in `dir`'s log, decoded.
fn committed_records(dir: &std::path::Path, voters: &[u64]) -> Vec<Vec<MetadataRecord>> {
    let storage = DiskStorage::open(dir, voters).unwrap();
    storage
        .committed_entries()
        .filter(|e| e.get_entry_type() == raft::eraftpb::EntryType::EntryNormal)
        .filter(|e| !e.data.is_empty())
        .map(|e| decode_batch(&e.data).unwrap())
        .collect()
}

fn producer_ids(node: u32) -> ControllerCommand {
    ControllerCommand::AllocateProducerIds { node: NodeId(node) }
}

#[test]
fn a_lone_voter_leads_without_an_election_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(1);
    // Ticks of 10 s: an election timeout would take 100 s or more.
    let mut node = Node::start(cluster_config(1, &ports, dir.path(), 10_000));
    wait_until("node 1 leads", || {
        node.status().view.controller == Some(NodeId(1))
    });
    let answer = node.submit(producer_ids(1)).expect("answered by itself");
    wait_until("the answer's index applied", || {
        node.status().view.applied_index >= answer.index
    });
    assert!(node.status().controller);
    wait_until("registered and unfenced", || node.status().unfenced);
    // A controlled shutdown fences it (it leads no partition, so the
    // controller confirms at once).
    assert!(node.shutdown(), "fenced after a controlled shutdown");
    node.stop();
    // Its bootstrap went in with the (state's) cluster id, in one entry.
    let log = committed_records(dir.path(), &[1]);
    assert!(log.contains(&with_cluster_id(&log, 1)), "{log:?}");
}

#[test]
fn three_nodes_elect_forward_fail_over_and_catch_up() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let ports = free_ports(3);
    let config = |n: u32| cluster_config(n, &ports, dirs[n as usize - 1].path(), 20);
    let mut nodes: Vec<Option<Node>> = (1..=3).map(|n| Some(Node::start(config(n)))).collect();
    wait_until("a controller all agree on", || {
        agreed_controller(&nodes).is_some()
    });
    let first = agreed_controller(&nodes).unwrap();

    // A follower forwards to the controller and gets its answer.
    let follower = (1..=3).find(|n| *n != first).unwrap();
    let answer = nodes[follower as usize - 1]
        .as_ref()
        .unwrap()
        .submit(producer_ids(follower))
        .expect("forwarded and answered");
    wait_until("the answer's index applied everywhere", || {
        nodes
            .iter()
            .flatten()
            .all(|n| n.status().view.applied_index >= answer.index)
    });

    // The controller's executor stops: the two others elect another and
    // keep answering.
    nodes[first as usize - 1].as_mut().unwrap().stop();
    nodes[first as usize - 1] = None;
    // Submitted at once, while the survivors still name the dead
    // controller: the submit retries until the new one answers.
    nodes[follower as usize - 1]
        .as_ref()
        .unwrap()
        .submit(producer_ids(follower))
        .expect("answered across the leadership change");
    wait_until("a new controller", || {
        agreed_controller(&nodes).is_some_and(|c| c != first)
    });
    let second = agreed_controller(&nodes).unwrap();
    let other = (1..=3).find(|n| *n != first && *n != second).unwrap();
    nodes[other as usize - 1]
        .as_ref()
        .unwrap()
        .submit(producer_ids(other))
        .expect("answered by the new controller");
    nodes[second as usize - 1]
        .as_ref()
        .unwrap()
        .submit(producer_ids(second))
        .expect("answered by itself");

    // The old controller restarts from its dir and catches up.
    nodes[first as usize - 1] = Some(Node::start(config(first)));
    wait_until("the restarted node caught up", || {
        agreed_controller(&nodes).is_some()
    });
    // Registered again (a new incarnation) and unfenced.
    wait_until("every node unfenced", || {
        nodes.iter().flatten().all(|n| n.status().unfenced)
    });
    wait_until("every node applied the same index", || {
        let applied: Vec<u64> = nodes
            .iter()
            .flatten()
            .map(|n| n.status().view.applied_index)
            .collect();
        applied.iter().all(|a| *a == applied[0])
    });

    for node in nodes.iter_mut().flatten() {
        node.stop();
    }
    // Every node holds the same committed log (one may know of fewer
    // commits: it stopped first), with one bootstrap (the first
    // controller's) in it.
    let mut logs: Vec<_> = dirs
        .iter()
        .map(|d| committed_records(d.path(), &[1, 2, 3]))
        .collect();
    logs.sort_by_key(|log| std::cmp::Reverse(log.len()));
    for log in &logs[1..] {
        assert_eq!(log[..], logs[0][..log.len()]);
    }
    let bootstraps = logs[0]
        .iter()
        .filter(|batch| (1..=3).any(|n| batch.ends_with(&bootstrap(n))))
        .count();
    assert_eq!(bootstraps, 1, "{:?}", logs[0]);
    assert!(logs[0].contains(&with_cluster_id(&logs[0], first)));
}

/// The entry that starts the log: the cluster id (found in `log`), then
/// node `node`'s bootstrap records.
fn with_cluster_id(log: &[Vec<MetadataRecord>], node: u32) -> Vec<MetadataRecord> {
    let cluster_id = log
        .iter()
        .flatten()
        .find(|r| matches!(r, MetadataRecord::ClusterId { .. }))
        .cloned()
        .expect("a cluster id");
    let mut entry = vec![cluster_id];
    entry.extend(bootstrap(node));
    entry
}

#[test]
fn without_a_reachable_majority_a_voter_waits_and_answers_no_quorum() {
    let dir = tempfile::tempdir().unwrap();
    // Three voters, only node 1 runs: nobody listens on the others'
    // ports.
    let ports = free_ports(3);
    let mut node = Node::start(cluster_config(1, &ports, dir.path(), 10));
    // It keeps trying (pre-votes to unreachable peers) and never leads;
    // a submit gives up at its deadline with NoQuorum.
    assert_eq!(
        node.submit(producer_ids(1)),
        Err(ControllerUnavailable::NoQuorum)
    );
    let status = node.status();
    assert_eq!(status.view.controller, None);
    assert!(!status.controller);
    assert_eq!(status.view.committed_index, 0);
    node.stop();
}

#[test]
fn a_non_voter_registers_and_follows_the_log_as_a_learner() {
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let ports = free_ports(4);
    let voters = &ports[..3];
    let mut nodes: Vec<Option<Node>> = (1..=3)
        .map(|n| {
            Some(Node::start(cluster_config(
                n,
                voters,
                dirs[n as usize - 1].path(),
                20,
            )))
        })
        .collect();
    wait_until("a controller", || agreed_controller(&nodes).is_some());
    // Node 4: not a voter; its own listener.
    let mut learner = cluster_config(1, voters, dirs[3].path(), 20);
    learner.node = NodeId(4);
    learner.cluster_listen = format!("127.0.0.1:{}", ports[3]).parse().unwrap();
    learner.endpoints.cluster = Some(Endpoint {
        host: "127.0.0.1".to_string(),
        port: ports[3],
    });
    nodes.push(Some(Node::start(learner)));
    // It registers (forwarded to the controller it finds among the
    // voters), is added as a learner and follows: it names the same
    // controller and applies what the voters apply.
    wait_until("the learner follows", || {
        agreed_controller(&nodes).is_some()
    });
    let answer = nodes[0]
        .as_ref()
        .unwrap()
        .submit(producer_ids(1))
        .expect("answered");
    wait_until("the learner applied the new entry", || {
        nodes[3].as_ref().unwrap().status().view.applied_index >= answer.index
    });
    assert!(!nodes[3].as_ref().unwrap().status().controller);
    // Its registration and heartbeats got it unfenced, as every voter.
    wait_until("every node unfenced", || {
        nodes.iter().flatten().all(|n| n.status().unfenced)
    });
    for node in nodes.iter_mut().flatten() {
        node.stop();
    }
}

/// Answers every request with its api key's number and the body as the
/// payload.
struct Replication;

impl ClusterService for Replication {
    fn one_way(&self, _api: ClusterApiKey, _body: Bytes) {}

    fn request(
        &self,
        api: ClusterApiKey,
        body: Bytes,
    ) -> Pin<Box<dyn Future<Output = Result<Reply, String>>>> {
        Box::pin(async move {
            Ok(Reply {
                body: Bytes::from((api as u16).to_le_bytes().to_vec()),
                payload: vec![body],
            })
        })
    }
}

/// The listener hands the replication keys to the service registered
/// with `serve_replication` (refusing them before), and every other key
/// to the controller as before.
#[test]
fn replication_keys_reach_the_replication_service_and_the_rest_the_controller() {
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(1);
    let config = cluster_config(1, &ports, dir.path(), 100);
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            let recovered = recover(&config).unwrap();
            let handle = ControllerHandle::start(config, recovered, bootstrap(1)).unwrap();
            let client = Transport::new(9);
            client.set_peer(1, format!("127.0.0.1:{}", ports[0]));
            let call = |api| client.call_frame(1, api, Bytes::from_static(b"ask"), PATIENCE);
            for api in REPLICATION_KEYS {
                match call(api).await {
                    Err(CallError::Remote { message, .. }) => {
                        assert!(message.contains("not serving replication yet"), "{message}");
                    }
                    other => panic!("{api:?} answered before a service: {other:?}"),
                }
            }
            handle.serve_replication(Rc::new(Replication));
            for api in REPLICATION_KEYS {
                let answer = call(api).await.expect("answered");
                assert_eq!(answer.body[..], (api as u16).to_le_bytes());
                assert_eq!(answer.payload, Bytes::from_static(b"ask"));
            }
            // A controller command still reaches the controller (which
            // refuses a body that is no command).
            match call(ClusterApiKey::ControllerCommand).await {
                Err(CallError::Remote { message, .. }) => {
                    assert!(!message.contains("replication"), "{message}");
                }
                other => panic!("a bad command answered: {other:?}"),
            }
            handle.stop();
            client.close();
            glommio::timer::sleep(Duration::from_millis(50)).await;
        })
        .unwrap()
        .join()
        .unwrap();
}

/// The committed payloads of `dir`'s log by index.
fn committed_by_index(dir: &std::path::Path, voters: &[u64]) -> BTreeMap<u64, Vec<u8>> {
    let storage = DiskStorage::open(dir, voters).unwrap();
    storage
        .committed_entries()
        .map(|e| (e.index, e.data.to_vec()))
        .collect()
}

/// N4 (docs/CORRECTNESS.md): the active controller's metadata log stops
/// taking writes (a full disk). It leaves the quorum without sending
/// anything its failed write would have acknowledged, the two others
/// elect a controller and keep committing, and its own broker keeps
/// getting answers (forwarded to the new controller). Once writes work
/// again it opens its log again (cutting the torn tail the failed append
/// left), rejoins as a follower and catches up; no committed entry is
/// lost or changed on any node.
#[test]
fn a_node_whose_metadata_log_cannot_be_written_reopens_it_and_rejoins() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let ports = free_ports(3);
    let faults: Vec<WriteFault> = (0..3).map(|_| WriteFault::default()).collect();
    let config = |n: u32| {
        let mut config = cluster_config(n, &ports, dirs[n as usize - 1].path(), 20);
        config.write_fault = faults[n as usize - 1].clone();
        config
    };
    let mut nodes: Vec<Option<Node>> = (1..=3).map(|n| Some(Node::start(config(n)))).collect();
    let node = |n: u32| nodes[n as usize - 1].as_ref().unwrap();
    // Read together: under load the controller may still change between
    // two separate waits.
    let mut agreed = None;
    wait_until("a controller all agree on, every node unfenced", || {
        agreed = agreed_controller(&nodes)
            .filter(|_| nodes.iter().flatten().all(|n| n.status().unfenced));
        agreed.is_some()
    });
    let victim = agreed.expect("waited for above");
    let others: Vec<u32> = (1..=3).filter(|n| *n != victim).collect();
    let mut answers = Vec::new();

    // The controller's disk fills. A command forwarded to it makes it
    // write (and fail); the submit retries until the two others elect a
    // controller, which answers.
    faults[victim as usize - 1].set(true);
    answers.push(
        node(others[0])
            .submit(producer_ids(others[0]))
            .expect("answered by the two nodes left"),
    );
    wait_until("the victim's log failed", || {
        node(victim).status().health.write_failures >= 1
    });
    wait_until("a new controller among the others", || {
        others.iter().any(|n| {
            node(*n).status().controller && node(*n).status().view.controller == Some(NodeId(*n))
        })
    });
    for n in &others {
        answers.push(node(*n).submit(producer_ids(*n)).expect("answered"));
    }
    // The victim's own broker still gets answers from the controller
    // elsewhere (its heartbeats take the same path).
    answers.push(
        node(victim)
            .submit(producer_ids(victim))
            .expect("forwarded while its log is out"),
    );
    assert!(!node(victim).status().controller);
    let last = answers.iter().map(|a| a.index).max().unwrap();
    let survivors_applied = |nodes: &[Option<Node>]| {
        others.iter().all(|n| {
            nodes[*n as usize - 1]
                .as_ref()
                .unwrap()
                .status()
                .view
                .applied_index
                >= last
        })
    };
    wait_until("the survivors applied every answer", || {
        survivors_applied(&nodes)
    });

    // Writes work again: the victim reopens its log and catches up.
    faults[victim as usize - 1].set(false);
    wait_until("the victim reopened its log", || {
        let health = node(victim).status().health;
        health.reopens >= 1 && !health.failed
    });
    wait_until("the victim caught up", || {
        node(victim).status().view.applied_index >= last
    });
    answers.push(
        node(victim)
            .submit(producer_ids(victim))
            .expect("answered after the reopen"),
    );
    wait_until("every node agrees on a controller again", || {
        agreed_controller(&nodes).is_some()
    });
    wait_until("every node unfenced", || {
        nodes.iter().flatten().all(|n| n.status().unfenced)
    });
    let health = node(victim).status().health;
    assert!(
        health.write_failures >= 1 && health.reopens >= 1,
        "{health:?}"
    );
    for n in &others {
        assert_eq!(node(*n).status().health, LogHealth::default());
    }

    for node in nodes.iter_mut().flatten() {
        node.stop();
    }
    // One committed log: every node's is a prefix of the longest, and
    // every answered command is in it, in every log long enough.
    let logs: Vec<_> = dirs
        .iter()
        .map(|d| committed_by_index(d.path(), &[1, 2, 3]))
        .collect();
    let longest = logs.iter().max_by_key(|log| log.len()).unwrap();
    for log in &logs {
        for (index, data) in log {
            assert_eq!(longest.get(index), Some(data), "entry {index} differs");
        }
    }
    for answer in &answers {
        let entry = longest
            .get(&answer.index)
            .expect("answered entry committed");
        assert!(!entry.is_empty());
    }
    let victim_log = &logs[victim as usize - 1];
    assert!(
        victim_log.keys().max().copied().unwrap_or(0) >= last,
        "the victim's log holds every entry answered while it was out"
    );
}
