//! Transcript tests of the controller: each test drives a
//! [`ControllerState`] on a simulated clock with commands and ticks, as
//! the driver does (every returned record is committed and replayed
//! before the next step), and compares the whole transcript: the step,
//! then one line per record proposed, then the reply. Topic ids are
//! seeded and shown as `t1`, `t2`, … in order of appearance.
//!
//! Record lines: `register N inc=I`, `fence N inc=I`, `unfence N inc=I`,
//! `topic T NAME {overrides}`, `partition T/P replicas=[..] isr=[..]
//! leader=L epoch=E pe=PE`, `change T/P isr=[..] leader=L epoch=E
//! pe=PE`, `remove T`, `config T {overrides}`, `cluster-id`, `pids N
//! FIRST+SIZE`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::*;
use crate::metadata::image::BrokerEndpoints;

const SESSION_MS: u64 = 9_000;

fn config(voters: &[u32]) -> ControllerConfig {
    let base = LogConfig::default();
    ControllerConfig {
        voters: voters.iter().copied().map(NodeId).collect(),
        defaults: TopicConfig::from_log_config(&base),
        base,
        default_partitions: 2,
        default_replication_factor: 1,
        offsets_partitions: 3,
        offsets_replication_factor: 3,
        partitions_max: 40,
        session_timeout_ms: SESSION_MS,
        producer_id_block_size: 1000,
        leader_rebalance_interval_ms: 0,
    }
}

struct Harness {
    state: ControllerState,
    now_ms: u64,
    /// Every committed record, in log order.
    log: Vec<MetadataRecord>,
    ids: Vec<TopicId>,
    out: String,
}

impl Harness {
    /// An active controller of an empty log, at time 0, whose first tick
    /// has proposed (and committed) the cluster id.
    fn new(voters: &[u32]) -> Harness {
        let mut h = Harness::bare(voters);
        h.state.become_leader(0);
        h.tick(0);
        assert_eq!(h.take(), "tick @0\n  cluster-id\n");
        h
    }

    fn bare(voters: &[u32]) -> Harness {
        Harness::bare_with(config(voters))
    }

    fn bare_with(config: ControllerConfig) -> Harness {
        Harness {
            state: ControllerState::with_ids(
                config,
                Arc::new(MetadataImage::default()),
                Box::new(SeededIds::new(0)),
            ),
            now_ms: 0,
            log: Vec::new(),
            ids: Vec::new(),
            out: String::new(),
        }
    }

    fn take(&mut self) -> String {
        std::mem::take(&mut self.out)
    }

    fn id(&mut self, id: TopicId) -> String {
        let index = match self.ids.iter().position(|i| *i == id) {
            Some(index) => index,
            None => {
                self.ids.push(id);
                self.ids.len() - 1
            }
        };
        format!("t{}", index + 1)
    }

    fn nodes(nodes: &[NodeId]) -> String {
        let ids: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
        format!("[{}]", ids.join(","))
    }

    fn leader(leader: Option<NodeId>) -> String {
        leader.map_or("-".to_owned(), |n| n.to_string())
    }

    fn render(&mut self, record: &MetadataRecord) -> String {
        let configs = |c: &BTreeMap<String, String>| {
            let pairs: Vec<String> = c.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{{{}}}", pairs.join(","))
        };
        match record {
            MetadataRecord::RegisterBroker {
                node, incarnation, ..
            } => format!("register {node} inc={incarnation}"),
            MetadataRecord::FenceBroker { node, incarnation } => {
                format!("fence {node} inc={incarnation}")
            }
            MetadataRecord::UnfenceBroker { node, incarnation } => {
                format!("unfence {node} inc={incarnation}")
            }
            MetadataRecord::Topic {
                id,
                name,
                overrides,
                ..
            } => format!("topic {} {name} {}", self.id(*id), configs(overrides)),
            MetadataRecord::Partition {
                topic,
                partition,
                replicas,
                isr,
                leader,
                leader_epoch,
                partition_epoch,
            } => format!(
                "partition {}/{partition} replicas={} isr={} leader={} epoch={leader_epoch} pe={partition_epoch}",
                self.id(*topic),
                Self::nodes(replicas),
                Self::nodes(isr),
                Self::leader(*leader)
            ),
            MetadataRecord::PartitionChange {
                topic,
                partition,
                isr,
                leader,
                leader_epoch,
                partition_epoch,
            } => format!(
                "change {}/{partition} isr={} leader={} epoch={leader_epoch} pe={partition_epoch}",
                self.id(*topic),
                Self::nodes(isr),
                Self::leader(*leader)
            ),
            MetadataRecord::RemoveTopic { id } => format!("remove {}", self.id(*id)),
            MetadataRecord::ConfigChange { topic, overrides } => {
                format!("config {} {}", self.id(*topic), configs(overrides))
            }
            MetadataRecord::ClusterId { .. } => "cluster-id".to_owned(),
            MetadataRecord::ProducerIdsBlock { node, first, size } => {
                format!("pids {node} {first}+{size}")
            }
        }
    }

    /// Commits `records` as the driver would: each replayed, in order.
    fn commit(&mut self, records: Vec<MetadataRecord>) {
        for record in records {
            let line = self.render(&record);
            let _ = writeln!(self.out, "  {line}");
            // Every proposed record encodes within the decoder's limits.
            let mut bytes = Vec::new();
            record.encode(&mut bytes);
            assert_eq!(MetadataRecord::decode(&bytes).as_ref(), Ok(&record));
            self.state.replay(&record);
            self.log.push(record);
        }
    }

    fn tick(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
        let _ = writeln!(self.out, "tick @{now_ms}");
        let records = self.state.tick(now_ms);
        self.commit(records);
    }

    fn command(&mut self, label: &str, command: ControllerCommand) -> ControllerReply {
        let _ = writeln!(self.out, "{label} @{}", self.now_ms);
        let (records, reply) = self.state.handle(self.now_ms, &command);
        self.commit(records);
        let rendered = match &reply {
            ControllerReply::Registered { .. } => "registered".to_owned(),
            ControllerReply::Heartbeat {
                fenced,
                shutdown_ready,
            } => format!("heartbeat fenced={fenced} shutdown_ready={shutdown_ready}"),
            ControllerReply::Topics(results) => {
                let lines: Vec<String> = results
                    .iter()
                    .map(|r| {
                        let id =
                            r.id.map(|id| format!(" {}", self.id(id)))
                                .unwrap_or_default();
                        match &r.message {
                            None => format!("{} {:?}{id}", r.name, r.error),
                            Some(m) => format!("{} {:?}{id} {m:?}", r.name, r.error),
                        }
                    })
                    .collect();
                format!("topics: {}", lines.join("; "))
            }
            ControllerReply::ProducerIds { first, size } => format!("pids {first}+{size}"),
            ControllerReply::NotController { leader } => {
                format!("not controller {}", Self::leader(*leader))
            }
            ControllerReply::AlterPartition { error, partition } => match partition {
                None => format!("alter {error:?} (no partition)"),
                Some(p) => format!(
                    "alter {error:?}: isr={} leader={} epoch={} pe={}",
                    Self::nodes(&p.isr),
                    Self::leader(p.leader),
                    p.leader_epoch,
                    p.partition_epoch
                ),
            },
            ControllerReply::Elections(results) => {
                let lines: Vec<String> = results
                    .iter()
                    .map(|r| {
                        let at = format!("{}/{} {:?}", self.id(r.topic), r.partition, r.error);
                        match &r.message {
                            None => at,
                            Some(m) => format!("{at} {m:?}"),
                        }
                    })
                    .collect();
                if lines.is_empty() {
                    "elections: (none)".to_owned()
                } else {
                    format!("elections: {}", lines.join("; "))
                }
            }
        };
        let _ = writeln!(self.out, "  => {rendered}");
        reply
    }

    fn at(&mut self, now_ms: u64) -> &mut Harness {
        self.now_ms = now_ms;
        self
    }

    fn register(&mut self, node: u32, incarnation: u64) {
        self.command(
            &format!("register {node} inc={incarnation}"),
            ControllerCommand::RegisterBroker {
                node: NodeId(node),
                incarnation,
                endpoints: BrokerEndpoints::default(),
                shards: 1,
                rack: None,
            },
        );
    }

    fn heartbeat(&mut self, node: u32, incarnation: u64, caught_up: bool) {
        self.command(
            &format!("heartbeat {node} inc={incarnation} caught_up={caught_up}"),
            ControllerCommand::Heartbeat {
                node: NodeId(node),
                incarnation,
                caught_up,
                shutting_down: false,
            },
        );
    }

    fn shutdown(&mut self, node: u32, incarnation: u64) {
        self.command(
            &format!("shutdown {node} inc={incarnation}"),
            ControllerCommand::Heartbeat {
                node: NodeId(node),
                incarnation,
                caught_up: true,
                shutting_down: true,
            },
        );
    }

    /// Registers and unfences `nodes` (incarnation = 10 × node).
    fn live(&mut self, nodes: &[u32]) {
        for &node in nodes {
            self.register(node, u64::from(node) * 10);
            self.heartbeat(node, u64::from(node) * 10, true);
        }
        self.take();
    }

    /// Creates `name` with explicit replica assignments.
    fn create_assigned(&mut self, name: &str, assignments: &[&[u32]]) -> ControllerReply {
        let spec = CreateTopicSpec {
            name: name.to_owned(),
            partitions: None,
            replication_factor: None,
            assignments: Some(
                assignments
                    .iter()
                    .map(|nodes| nodes.iter().copied().map(NodeId).collect())
                    .collect(),
            ),
            configs: BTreeMap::new(),
            validate_only: false,
        };
        self.command("create", ControllerCommand::CreateTopics(vec![spec]))
    }

    fn create(&mut self, specs: &[(&str, Option<u32>, Option<u16>)]) {
        let specs = specs
            .iter()
            .map(|(name, partitions, factor)| CreateTopicSpec {
                name: (*name).to_owned(),
                partitions: *partitions,
                replication_factor: *factor,
                assignments: None,
                configs: BTreeMap::new(),
                validate_only: false,
            })
            .collect();
        self.command("create", ControllerCommand::CreateTopics(specs));
    }

    /// Creates `name` with explicit replica assignments and `configs`.
    fn create_configured(
        &mut self,
        name: &str,
        assignments: &[&[u32]],
        configs: &[(&str, &str)],
    ) -> TopicId {
        let spec = CreateTopicSpec {
            name: name.to_owned(),
            partitions: None,
            replication_factor: None,
            assignments: Some(
                assignments
                    .iter()
                    .map(|nodes| nodes.iter().copied().map(NodeId).collect())
                    .collect(),
            ),
            configs: configs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            validate_only: false,
        };
        self.command("create", ControllerCommand::CreateTopics(vec![spec]));
        self.topic(name)
    }

    fn topic(&self, name: &str) -> TopicId {
        self.state
            .image()
            .get(name)
            .map(|t| t.id)
            .unwrap_or_default()
    }

    /// An AlterPartition of `node` for `topic`/`partition` knowing the
    /// epochs `(leader epoch, partition epoch)`.
    fn alter(
        &mut self,
        node: u32,
        at: (TopicId, u32),
        epochs: (u32, u32),
        isr: &[u32],
    ) -> ControllerReply {
        let label = format!(
            "alter-partition by {node} {}/{} epoch={} pe={} isr={}",
            self.id(at.0),
            at.1,
            epochs.0,
            epochs.1,
            Self::nodes(&isr.iter().copied().map(NodeId).collect::<Vec<_>>())
        );
        self.command(
            &label,
            ControllerCommand::AlterPartition {
                node: NodeId(node),
                topic: at.0,
                partition: at.1,
                leader_epoch: LeaderEpoch(epochs.0),
                partition_epoch: epochs.1,
                new_isr: isr.iter().copied().map(NodeId).collect(),
            },
        )
    }

    fn elect(&mut self, partitions: Option<&[(TopicId, u32)]>, preferred: bool) {
        let kind = if preferred { "preferred" } else { "unclean" };
        let label = match partitions {
            None => format!("elect {kind} all"),
            Some(partitions) => {
                let named: Vec<String> = partitions
                    .iter()
                    .map(|(t, p)| format!("{}/{p}", self.id(*t)))
                    .collect();
                format!("elect {kind} {}", named.join(","))
            }
        };
        self.command(
            &label,
            ControllerCommand::ElectLeaders {
                partitions: partitions.map(<[_]>::to_vec),
                preferred,
            },
        );
    }

    /// A follower's view: the log replayed on a fresh state.
    fn follower_image(&self) -> MetadataImage {
        let mut follower = ControllerState::new(config(&[]), Arc::new(MetadataImage::default()));
        for record in &self.log {
            follower.replay(record);
        }
        MetadataImage::clone(follower.image())
    }
}

#[track_caller]
fn expect(actual: String, expected: &str) {
    let lines: Vec<&str> = expected.lines().filter(|l| !l.trim().is_empty()).collect();
    let indent = lines
        .iter()
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let expected: String = lines
        .iter()
        .map(|l| format!("{}\n", &l[indent..]))
        .collect();
    assert!(
        actual == expected,
        "transcript differs; actual:\n{actual}\nexpected:\n{expected}"
    );
}

#[test]
fn the_cluster_id_is_the_first_record_and_is_proposed_once() {
    let mut h = Harness::bare(&[1]);
    h.state.become_leader(0);
    h.tick(0);
    h.tick(1);
    expect(
        h.take(),
        "
        tick @0
          cluster-id
        tick @1
        ",
    );
    assert!(matches!(h.log[0], MetadataRecord::ClusterId { .. }));
    assert_eq!(h.log.len(), 1);
}

#[test]
fn a_broker_is_fenced_until_caught_up_then_unfenced() {
    let mut h = Harness::new(&[1, 2]);
    h.register(1, 10);
    h.heartbeat(1, 10, false);
    h.heartbeat(1, 10, true);
    h.heartbeat(1, 10, true);
    // An older incarnation, and a node never registered: fenced.
    h.heartbeat(1, 9, true);
    h.heartbeat(3, 1, true);
    expect(
        h.take(),
        "
        register 1 inc=10 @0
          register 1 inc=10
          => registered
        heartbeat 1 inc=10 caught_up=false @0
          => heartbeat fenced=true shutdown_ready=false
        heartbeat 1 inc=10 caught_up=true @0
          unfence 1 inc=10
          => heartbeat fenced=false shutdown_ready=false
        heartbeat 1 inc=10 caught_up=true @0
          => heartbeat fenced=false shutdown_ready=false
        heartbeat 1 inc=9 caught_up=true @0
          => heartbeat fenced=true shutdown_ready=false
        heartbeat 3 inc=1 caught_up=true @0
          => heartbeat fenced=true shutdown_ready=false
        ",
    );
    let image = h.state.image();
    assert!(!image.broker(NodeId(1)).unwrap().fenced);
    assert_eq!(image.live_brokers().count(), 1);
}

#[test]
fn a_silent_broker_is_fenced_after_the_session_timeout_and_its_leaderships_move() {
    let mut h = Harness::new(&[1, 2, 3]);
    h.live(&[1, 2, 3]);
    h.create(&[("a", Some(3), Some(2))]);
    h.create_assigned("solo", &[&[2]]);
    expect(
        h.take(),
        "
        create @0
          topic t1 a {}
          partition t1/0 replicas=[1,2] isr=[1,2] leader=1 epoch=0 pe=0
          partition t1/1 replicas=[2,3] isr=[2,3] leader=2 epoch=0 pe=0
          partition t1/2 replicas=[3,1] isr=[3,1] leader=3 epoch=0 pe=0
          => topics: a None t1
        create @0
          topic t2 solo {}
          partition t2/0 replicas=[2] isr=[2] leader=2 epoch=0 pe=0
          => topics: solo None t2
        ",
    );
    // Nodes 1 and 3 keep beating; node 2 goes silent at 0.
    for now in [3_000, 6_000, 9_000] {
        h.at(now);
        h.heartbeat(1, 10, true);
        h.heartbeat(3, 30, true);
        h.tick(now);
    }
    h.take();
    // Exactly the timeout: not yet.
    h.tick(SESSION_MS);
    h.at(SESSION_MS + 1);
    h.heartbeat(1, 10, true);
    h.heartbeat(3, 30, true);
    h.tick(SESSION_MS + 1);
    h.tick(SESSION_MS + 2);
    expect(
        h.take(),
        "
        tick @9000
        heartbeat 1 inc=10 caught_up=true @9001
          => heartbeat fenced=false shutdown_ready=false
        heartbeat 3 inc=30 caught_up=true @9001
          => heartbeat fenced=false shutdown_ready=false
        tick @9001
          fence 2 inc=20
          change t3/0 isr=[1,3] leader=1 epoch=0 pe=1
          change t3/1 isr=[3,1] leader=3 epoch=0 pe=1
          change t3/2 isr=[1,3] leader=1 epoch=0 pe=1
          change t1/0 isr=[1] leader=1 epoch=0 pe=1
          change t1/1 isr=[3] leader=3 epoch=1 pe=1
          change t2/0 isr=[2] leader=- epoch=1 pe=1
        tick @9002
        ",
    );
    let image = h.follower_image();
    assert_eq!(
        &image,
        &**h.state.image(),
        "a follower replaying the log agrees"
    );
    let solo = &image.get("solo").unwrap().partitions[0];
    assert_eq!(
        (solo.leader, &solo.isr[..]),
        (None, &[NodeId(2)][..]),
        "offline, last ISR kept"
    );
}

#[test]
fn a_restarted_broker_registers_again_and_gets_its_offline_leaderships_back() {
    let mut h = Harness::new(&[1, 2]);
    h.live(&[1, 2]);
    h.tick(0);
    h.create_assigned("a", &[&[2, 1]]);
    h.create_assigned("solo", &[&[2]]);
    h.take();
    // Node 2 restarts (new incarnation) before its session expired: its
    // old process leads nothing any more.
    h.at(100);
    h.register(2, 21);
    h.heartbeat(2, 20, true);
    h.heartbeat(2, 21, false);
    h.heartbeat(2, 21, true);
    expect(
        h.take(),
        "
        register 2 inc=21 @100
          register 2 inc=21
          change t1/0 isr=[1] leader=1 epoch=0 pe=1
          change t1/1 isr=[1] leader=1 epoch=1 pe=1
          change t1/2 isr=[1] leader=1 epoch=0 pe=1
          change t2/0 isr=[1] leader=1 epoch=1 pe=1
          change t3/0 isr=[2] leader=- epoch=1 pe=1
          => registered
        heartbeat 2 inc=20 caught_up=true @100
          => heartbeat fenced=true shutdown_ready=false
        heartbeat 2 inc=21 caught_up=false @100
          => heartbeat fenced=true shutdown_ready=false
        heartbeat 2 inc=21 caught_up=true @100
          unfence 2 inc=21
          change t3/0 isr=[2] leader=2 epoch=2 pe=2
          => heartbeat fenced=false shutdown_ready=false
        ",
    );
    assert_eq!(&h.follower_image(), &**h.state.image());
}

#[test]
fn a_fenced_broker_that_beats_again_is_unfenced_with_bumped_epochs() {
    let mut h = Harness::new(&[1]);
    h.live(&[1]);
    h.tick(0);
    h.create_assigned("a", &[&[1]]);
    h.take();
    h.tick(SESSION_MS + 1);
    h.at(SESSION_MS + 2);
    h.heartbeat(1, 10, true);
    expect(
        h.take(),
        "
        tick @9001
          fence 1 inc=10
          change t1/0 isr=[1] leader=- epoch=1 pe=1
          change t1/1 isr=[1] leader=- epoch=1 pe=1
          change t1/2 isr=[1] leader=- epoch=1 pe=1
          change t2/0 isr=[1] leader=- epoch=1 pe=1
        heartbeat 1 inc=10 caught_up=true @9002
          unfence 1 inc=10
          change t1/0 isr=[1] leader=1 epoch=2 pe=2
          change t1/1 isr=[1] leader=1 epoch=2 pe=2
          change t1/2 isr=[1] leader=1 epoch=2 pe=2
          change t2/0 isr=[1] leader=1 epoch=2 pe=2
          => heartbeat fenced=false shutdown_ready=false
        ",
    );
}

#[test]
fn a_new_leader_gives_every_broker_a_fresh_session() {
    let mut h = Harness::new(&[1, 2]);
    h.live(&[1, 2]);
    h.tick(0);
    h.take();
    h.state.become_follower();
    // Another node led for a while; this one takes over at 20 s.
    h.state.become_leader(20_000);
    h.tick(20_000 + SESSION_MS);
    h.at(20_000 + SESSION_MS);
    h.heartbeat(1, 10, false);
    h.tick(20_000 + SESSION_MS + 1);
    expect(
        h.take(),
        "
        tick @29000
        heartbeat 1 inc=10 caught_up=false @29000
          => heartbeat fenced=false shutdown_ready=false
        tick @29001
          fence 2 inc=20
          change t1/0 isr=[1] leader=1 epoch=0 pe=1
          change t1/1 isr=[1] leader=1 epoch=1 pe=1
          change t1/2 isr=[1] leader=1 epoch=0 pe=1
        ",
    );
}

#[test]
fn a_controlled_shutdown_moves_leadership_first() {
    let mut h = Harness::new(&[1, 2]);
    h.live(&[1, 2]);
    h.tick(0);
    h.create_assigned("a", &[&[1, 2], &[2, 1]]);
    h.create_assigned("solo", &[&[1]]);
    h.take();
    h.shutdown(1, 10);
    h.shutdown(1, 10);
    h.heartbeat(2, 20, true);
    expect(
        h.take(),
        "
        shutdown 1 inc=10 @0
          fence 1 inc=10
          change t1/0 isr=[2] leader=2 epoch=1 pe=1
          change t1/1 isr=[2] leader=2 epoch=0 pe=1
          change t1/2 isr=[2] leader=2 epoch=1 pe=1
          change t2/0 isr=[2] leader=2 epoch=1 pe=1
          change t2/1 isr=[2] leader=2 epoch=0 pe=1
          change t3/0 isr=[1] leader=- epoch=1 pe=1
          => heartbeat fenced=true shutdown_ready=true
        shutdown 1 inc=10 @0
          => heartbeat fenced=true shutdown_ready=true
        heartbeat 2 inc=20 caught_up=true @0
          => heartbeat fenced=false shutdown_ready=false
        ",
    );
}

#[test]
fn topics_are_created_deleted_and_created_again_with_a_new_id() {
    let mut h = Harness::new(&[1]);
    h.live(&[1]);
    h.create(&[
        ("a", Some(2), None),
        ("a", Some(1), None),
        ("b", None, Some(1)),
    ]);
    h.command(
        "delete",
        ControllerCommand::DeleteTopics(vec![
            "a".into(),
            "a".into(),
            "nope".into(),
            "__consumer_offsets".into(),
        ]),
    );
    h.create(&[("a", Some(1), None)]);
    expect(
        h.take(),
        r#"
        create @0
          topic t1 a {}
          partition t1/0 replicas=[1] isr=[1] leader=1 epoch=0 pe=0
          partition t1/1 replicas=[1] isr=[1] leader=1 epoch=0 pe=0
          topic t2 b {}
          partition t2/0 replicas=[1] isr=[1] leader=1 epoch=0 pe=0
          partition t2/1 replicas=[1] isr=[1] leader=1 epoch=0 pe=0
          => topics: a None t1; a TopicAlreadyExists "topic \"a\" already exists"; b None t2
        delete @0
          remove t1
          => topics: a None; a UnknownTopicOrPartition "topic \"a\" does not exist"; nope UnknownTopicOrPartition "topic \"nope\" does not exist"; __consumer_offsets InvalidTopicException "the consumer offsets topic cannot be deleted"
        create @0
          topic t3 a {}
          partition t3/0 replicas=[1] isr=[1] leader=1 epoch=0 pe=0
          => topics: a None t3
        "#,
    );
    assert_eq!(&h.follower_image(), &**h.state.image());
}

#[test]
fn create_topics_refuses_as_the_single_node_did() {
    let mut h = Harness::new(&[1, 2]);
    h.live(&[1, 2]);
    let spec = |name: &str,
                partitions: Option<u32>,
                factor: Option<u16>,
                configs: &[(&str, &str)]| CreateTopicSpec {
        name: name.to_owned(),
        partitions,
        replication_factor: factor,
        assignments: None,
        configs: configs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        validate_only: false,
    };
    h.command(
        "create",
        ControllerCommand::CreateTopics(vec![
            spec("zero", Some(0), None, &[]),
            spec("rf0", None, Some(0), &[]),
            spec("rf3", None, Some(3), &[]),
            spec("bad name", None, None, &[]),
            spec("cfg", None, None, &[("retention.ms", "soon")]),
            spec("unknown", None, None, &[("no.such.key", "1")]),
            spec(
                "append",
                None,
                None,
                &[("message.timestamp.type", "LogAppendTime")],
            ),
            spec("big", Some(41), None, &[]),
            CreateTopicSpec {
                validate_only: true,
                ..spec("dry", Some(3), Some(2), &[])
            },
        ]),
    );
    let reply = h.create_assigned("twice", &[&[1, 1]]);
    let ControllerReply::Topics(results) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(results[0].error, ErrorCode::InvalidReplicaAssignment);
    h.create_assigned("nowhere", &[&[3]]);
    h.create_assigned("uneven", &[&[1, 2], &[1]]);
    h.command(
        "create",
        ControllerCommand::CreateTopics(vec![CreateTopicSpec {
            assignments: Some(vec![vec![NodeId(1)]]),
            ..spec("both", Some(1), None, &[])
        }]),
    );
    let out = h.take();
    let expected_lines = [
        r#"zero InvalidPartitions "num_partitions = 0: must be positive or -1""#,
        r#"rf0 InvalidReplicationFactor "Replication factor must be larger than 0, or -1 to use the default value.""#,
        r#"rf3 InvalidReplicationFactor "Unable to replicate the partition 3 time(s): The target replication factor of 3 cannot be reached because only 2 broker(s) are registered and unfenced.""#,
        r#"bad name InvalidTopicException "invalid topic name \"bad name\": only ASCII letters, digits, '.', '_' and '-' are allowed""#,
        "cfg InvalidConfig",
        "unknown InvalidConfig",
        r#"append InvalidConfig "message.timestamp.type = LogAppendTime is not supported yet""#,
        r#"big PolicyViolation "creating 41 partitions would exceed the broker's limit of 40 partitions""#,
        "; dry None\n",
        "nowhere InvalidReplicaAssignment \"The manual partition assignment includes broker 3, but no such broker is registered.\"",
        "uneven InvalidReplicaAssignment",
        r#"both InvalidRequest "A manual partition assignment was specified, but numPartitions was not set to -1.""#,
    ];
    for line in expected_lines {
        assert!(out.contains(line), "{line}\nnot in\n{out}");
    }
    // Nothing was proposed but the offsets topic's records, before.
    assert!(
        !out.lines()
            .any(|l| l.starts_with("  ") && !l.starts_with("  =>")),
        "{out}"
    );
    // With a valid version of the same request, the single node's error
    // messages come from the same functions.
    let mut single = TopicConfig::from_log_config(&LogConfig::default());
    let error = single.apply([("retention.ms", "soon")]).unwrap_err();
    assert!(
        out.contains(&format!("cfg InvalidConfig {:?}", error.message)),
        "{out}"
    );
}

#[test]
fn create_partitions_places_the_new_ones_like_creation() {
    let mut h = Harness::new(&[1, 2, 3]);
    h.live(&[1, 2, 3]);
    h.create(&[("a", Some(1), Some(2))]);
    h.take();
    let grow = |topics: &[(&str, u32)]| {
        topics
            .iter()
            .map(|(n, c)| ((*n).to_owned(), *c))
            .collect::<Vec<_>>()
    };
    h.command(
        "validate",
        ControllerCommand::ValidatePartitions(grow(&[("a", 3)])),
    );
    h.command(
        "grow",
        ControllerCommand::CreatePartitions(grow(&[
            ("a", 3),
            ("a", 3),
            ("nope", 2),
            ("__consumer_offsets", 9),
            ("a", 100),
        ])),
    );
    expect(
        h.take(),
        r#"
        validate @0
          => topics: a None
        grow @0
          partition t1/1 replicas=[2,3] isr=[2,3] leader=2 epoch=0 pe=0
          partition t1/2 replicas=[3,1] isr=[3,1] leader=3 epoch=0 pe=0
          => topics: a None; a InvalidPartitions "topic \"a\" has 3 partitions; the new count 3 must be larger"; nope UnknownTopicOrPartition "topic \"nope\" does not exist"; __consumer_offsets PolicyViolation "the consumer offsets topic cannot grow: groups would move and lose their offsets"; a InvalidPartitions "adding 97 partitions would exceed the broker's limit of 40 partitions"
        "#,
    );
    // Node 3 is fenced (its leadership of a/2 went to node 1): a
    // replication factor of 2 still fits, 3 does not; the new partition
    // goes to the node leading the fewest.
    h.create(&[("b", Some(1), Some(3))]);
    h.take();
    h.shutdown(3, 30);
    h.take();
    h.command(
        "grow",
        ControllerCommand::CreatePartitions(grow(&[("a", 4), ("b", 2)])),
    );
    expect(
        h.take(),
        r#"
        grow @0
          partition t1/3 replicas=[2,1] isr=[2,1] leader=2 epoch=0 pe=0
          => topics: a None; b InvalidReplicationFactor "Unable to replicate the partition 3 time(s): The target replication factor of 3 cannot be reached because only 2 broker(s) are registered and unfenced."
        "#,
    );
    assert_eq!(&h.follower_image(), &**h.state.image());
}

#[test]
fn alter_configs_replaces_the_overrides_after_checking_them() {
    let mut h = Harness::new(&[1]);
    h.live(&[1]);
    h.create(&[("a", Some(1), None)]);
    h.take();
    let alter = |name: &str, configs: &[(&str, &str)], validate_only: bool| AlterTopicConfigs {
        name: name.to_owned(),
        overrides: configs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        validate_only,
    };
    h.command(
        "alter",
        ControllerCommand::AlterConfigs(vec![
            alter("a", &[("retention.ms", "5000")], true),
            alter("a", &[("retention.ms", "soon")], false),
            alter("nope", &[], false),
            alter("__consumer_offsets", &[], false),
            alter(
                "a",
                &[("retention.ms", "5000"), ("segment.ms", "60000")],
                false,
            ),
        ]),
    );
    h.command(
        "alter",
        ControllerCommand::AlterConfigs(vec![alter("a", &[], false)]),
    );
    let out = h.take();
    expect(
        out.clone(),
        r#"
        alter @0
          config t1 {retention.ms=5000,segment.ms=60000}
          => topics: a None; a InvalidConfig "invalid value \"soon\" for retention.ms: expected a non-negative integer or -1"; nope UnknownTopicOrPartition "topic \"nope\" does not exist"; __consumer_offsets PolicyViolation "the consumer offsets topic's configs are fixed (its retention must stay off until compaction exists)"; a None
        alter @0
          config t1 {}
          => topics: a None
        "#,
    );
    let a = h.state.image().get("a").unwrap().clone();
    assert_eq!(a.config, h.state.config().defaults);
    assert_eq!(a.overrides, Some(BTreeMap::new()));
}

#[test]
fn producer_id_blocks_never_overlap_across_nodes_nor_a_new_leader() {
    let mut h = Harness::new(&[1, 2]);
    h.live(&[1, 2]);
    for node in [1, 2, 1] {
        h.command(
            "allocate",
            ControllerCommand::AllocateProducerIds { node: NodeId(node) },
        );
    }
    expect(
        h.take(),
        "
        allocate @0
          pids 1 0+1000
          => pids 0+1000
        allocate @0
          pids 2 1000+1000
          => pids 1000+1000
        allocate @0
          pids 1 2000+1000
          => pids 2000+1000
        ",
    );
    // Another node takes over from the replayed log, and from a snapshot.
    let mut next = ControllerState::with_ids(
        config(&[1, 2]),
        Arc::new(MetadataImage::default()),
        Box::new(SeededIds::new(7)),
    );
    for record in &h.log {
        next.replay(record);
    }
    next.become_leader(0);
    let (records, reply) = next.handle(
        0,
        &ControllerCommand::AllocateProducerIds { node: NodeId(2) },
    );
    assert_eq!(
        reply,
        ControllerReply::ProducerIds {
            first: 3000,
            size: 1000
        }
    );
    assert_eq!(records.len(), 1);
    let snapshot = super::super::fold::encode_snapshot(h.state.image());
    let restored = super::super::fold::decode_snapshot(&snapshot, &config(&[]).defaults).unwrap();
    assert_eq!(&restored, &**h.state.image());
    let mut from_snapshot = ControllerState::new(config(&[1, 2]), Arc::new(restored));
    from_snapshot.become_leader(0);
    let (_, reply) = from_snapshot.handle(
        0,
        &ControllerCommand::AllocateProducerIds { node: NodeId(1) },
    );
    assert_eq!(
        reply,
        ControllerReply::ProducerIds {
            first: 3000,
            size: 1000
        }
    );
}

#[test]
fn the_offsets_topic_is_created_once_when_every_voter_is_live() {
    let mut h = Harness::new(&[1, 2, 3]);
    h.live(&[1, 2]);
    h.tick(1_000);
    expect(h.take(), "tick @1000");
    h.live(&[3]);
    h.tick(2_000);
    h.tick(3_000);
    expect(
        h.take(),
        "
        tick @2000
          topic t1 __consumer_offsets {flush.before.ack=true,retention.bytes=-1,retention.ms=-1,segment.bytes=104857600}
          partition t1/0 replicas=[1,2,3] isr=[1,2,3] leader=1 epoch=0 pe=0
          partition t1/1 replicas=[2,3,1] isr=[2,3,1] leader=2 epoch=0 pe=0
          partition t1/2 replicas=[3,1,2] isr=[3,1,2] leader=3 epoch=0 pe=0
        tick @3000
        ",
    );
    let offsets = h.state.image().get(OFFSETS_TOPIC).unwrap().clone();
    assert_eq!(offsets.config.retention_ms, None);
    assert!(offsets.config.flush_before_ack);
    assert_eq!(&h.follower_image(), &**h.state.image());
}

/// `offsets_topic_replication_factor` (3) is capped by the live nodes
/// when the topic is created, not raised past it by more nodes: five
/// nodes still give three replicas per offsets partition.
#[test]
fn the_offsets_topic_gets_at_most_its_replication_factor() {
    let mut h = Harness::new(&[1, 2, 3, 4, 5]);
    h.live(&[1, 2, 3, 4, 5]);
    h.tick(1_000);
    expect(
        h.take(),
        "
        tick @1000
          topic t1 __consumer_offsets {flush.before.ack=true,retention.bytes=-1,retention.ms=-1,segment.bytes=104857600}
          partition t1/0 replicas=[1,2,3] isr=[1,2,3] leader=1 epoch=0 pe=0
          partition t1/1 replicas=[2,3,4] isr=[2,3,4] leader=2 epoch=0 pe=0
          partition t1/2 replicas=[3,4,5] isr=[3,4,5] leader=3 epoch=0 pe=0
        ",
    );
}

#[test]
fn the_offsets_topic_waits_a_session_for_missing_voters() {
    let mut h = Harness::new(&[1, 9]);
    h.live(&[1]);
    h.heartbeat(1, 10, true);
    h.tick(SESSION_MS);
    h.at(SESSION_MS);
    h.heartbeat(1, 10, true);
    h.tick(SESSION_MS + 1);
    h.tick(SESSION_MS + 2);
    expect(
        h.take(),
        "
        heartbeat 1 inc=10 caught_up=true @0
          => heartbeat fenced=false shutdown_ready=false
        tick @9000
        heartbeat 1 inc=10 caught_up=true @9000
          => heartbeat fenced=false shutdown_ready=false
        tick @9001
          topic t1 __consumer_offsets {flush.before.ack=true,retention.bytes=-1,retention.ms=-1,segment.bytes=104857600}
          partition t1/0 replicas=[1] isr=[1] leader=1 epoch=0 pe=0
          partition t1/1 replicas=[1] isr=[1] leader=1 epoch=0 pe=0
          partition t1/2 replicas=[1] isr=[1] leader=1 epoch=0 pe=0
        tick @9002
        ",
    );
}

#[test]
fn every_record_proposed_replays_to_the_same_image_on_a_follower() {
    let mut h = Harness::new(&[1, 2, 3]);
    h.live(&[1, 2, 3]);
    h.tick(1);
    h.create(&[("a", Some(5), Some(3)), ("b", None, Some(2))]);
    h.command(
        "grow",
        ControllerCommand::CreatePartitions(vec![("b".into(), 4)]),
    );
    h.shutdown(2, 20);
    h.register(2, 21);
    h.heartbeat(2, 21, true);
    h.tick(SESSION_MS + 2);
    h.command("delete", ControllerCommand::DeleteTopics(vec!["a".into()]));
    h.take();
    assert_eq!(&h.follower_image(), &**h.state.image());
    let log = super::super::records::encode_batch(&h.log);
    assert_eq!(
        super::super::records::decode_batch(&log).as_ref(),
        Ok(&h.log)
    );
}

#[test]
fn a_command_before_the_first_tick_still_puts_the_cluster_id_first() {
    let mut h = Harness::bare(&[1]);
    h.register(1, 10);
    h.tick(1);
    expect(
        h.take(),
        "
        register 1 inc=10 @0
          cluster-id
          register 1 inc=10
          => registered
        tick @1
        ",
    );
}

#[test]
fn a_registration_that_would_not_decode_is_refused() {
    let mut h = Harness::new(&[1]);
    h.command(
        "register 1 inc=10 (long host)",
        ControllerCommand::RegisterBroker {
            node: NodeId(1),
            incarnation: 10,
            endpoints: BrokerEndpoints {
                native: Some(crate::metadata::image::Endpoint {
                    host: "h".repeat(300),
                    port: 1,
                }),
                ..BrokerEndpoints::default()
            },
            shards: 1,
            rack: None,
        },
    );
    expect(
        h.take(),
        "
        register 1 inc=10 (long host) @0
          => heartbeat fenced=true shutdown_ready=false
        ",
    );
    assert!(h.state.image().broker(NodeId(1)).is_none());
}

mod random {
    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Step {
        Advance(u64),
        Tick,
        Command(ControllerCommand),
    }

    fn arb_step() -> impl Strategy<Value = Step> {
        let node = 1u32..5;
        let name = prop::sample::select(vec!["a", "b", "__consumer_offsets", "bad name"]);
        prop_oneof![
            (1u64..4_000).prop_map(Step::Advance),
            Just(Step::Tick),
            (node.clone(), 0u64..2).prop_map(|(n, i)| Step::Command(
                ControllerCommand::RegisterBroker {
                    node: NodeId(n),
                    incarnation: u64::from(n) * 10 + i,
                    endpoints: BrokerEndpoints::default(),
                    shards: 1,
                    rack: None,
                }
            )),
            (
                node.clone(),
                0u64..3,
                any::<bool>(),
                prop::bool::weighted(0.1)
            )
                .prop_map(|(n, i, caught_up, shutting_down)| Step::Command(
                    ControllerCommand::Heartbeat {
                        node: NodeId(n),
                        incarnation: i,
                        caught_up,
                        shutting_down,
                    }
                )),
            (
                name.clone(),
                proptest::option::of(0u32..5),
                proptest::option::of(0u16..4)
            )
                .prop_map(|(name, partitions, factor)| Step::Command(
                    ControllerCommand::CreateTopics(vec![CreateTopicSpec {
                        name: name.to_owned(),
                        partitions,
                        replication_factor: factor,
                        assignments: None,
                        configs: BTreeMap::new(),
                        validate_only: false,
                    }])
                )),
            name.clone()
                .prop_map(|n| Step::Command(ControllerCommand::DeleteTopics(vec![n.to_owned()]))),
            (name.clone(), 0u32..8).prop_map(|(n, c)| Step::Command(
                ControllerCommand::CreatePartitions(vec![(n.to_owned(), c)])
            )),
            (name, prop::sample::select(vec!["1000", "x"])).prop_map(|(n, v)| Step::Command(
                ControllerCommand::AlterConfigs(vec![AlterTopicConfigs {
                    name: n.to_owned(),
                    overrides: BTreeMap::from([("retention.ms".to_owned(), v.to_owned())]),
                    validate_only: false,
                }])
            )),
            node.prop_map(|n| Step::Command(ControllerCommand::AllocateProducerIds {
                node: NodeId(n)
            })),
        ]
    }

    proptest! {
        /// Any sequence of commands and ticks keeps the invariants: a
        /// leader is a live ISR member, producer-id blocks are disjoint,
        /// the cluster id is the first record, and a follower replaying
        /// the log (or a snapshot of it) has the same image.
        #[test]
        fn any_command_sequence_keeps_the_invariants(
            steps in proptest::collection::vec(arb_step(), 1..60),
        ) {
            let mut h = Harness::new(&[1, 2, 3]);
            h.live(&[1, 2, 3]);
            h.tick(0);
            for step in steps {
                match step {
                    Step::Advance(ms) => h.now_ms += ms,
                    Step::Tick => {
                        let now = h.now_ms;
                        h.tick(now);
                    }
                    Step::Command(command) => {
                        h.command("step", command);
                    }
                }
                let image = h.state.image().clone();
                for topic in image.topics() {
                    for p in &topic.partitions {
                        if let Some(leader) = p.leader {
                            prop_assert!(p.isr.contains(&leader), "{p:?}");
                            prop_assert!(image.broker(leader).is_some_and(|b| !b.fenced), "{p:?}");
                        }
                        prop_assert!(p.isr.iter().all(|n| p.replicas.contains(n)), "{p:?}");
                    }
                }
            }
            let first_is_cluster_id = matches!(h.log[0], MetadataRecord::ClusterId { .. });
            prop_assert!(first_is_cluster_id);
            let mut blocks: Vec<(i64, i64)> = h
                .log
                .iter()
                .filter_map(|r| match r {
                    MetadataRecord::ProducerIdsBlock { first, size, .. } => {
                        Some((*first, *first + i64::from(*size)))
                    }
                    _ => None,
                })
                .collect();
            blocks.sort_unstable();
            prop_assert!(blocks.windows(2).all(|w| w[0].1 <= w[1].0), "{blocks:?}");
            prop_assert_eq!(&h.follower_image(), &**h.state.image());
            let snapshot = super::super::super::fold::encode_snapshot(h.state.image());
            let restored =
                super::super::super::fold::decode_snapshot(&snapshot, &config(&[]).defaults);
            prop_assert_eq!(restored.as_ref(), Ok(&**h.state.image()));
        }
    }

    /// A replication step: an AlterPartition from a partition's current
    /// leader (or, `stale`, a node at old epochs) with a random ISR drawn
    /// from its replicas, or an ElectLeaders of every partition.
    #[derive(Clone, Debug)]
    enum Replication {
        Alter {
            pick: usize,
            stale: bool,
            isr_mask: u8,
        },
        Elect {
            preferred: bool,
        },
        Unclean {
            topic: &'static str,
            on: bool,
        },
    }

    fn arb_replication() -> impl Strategy<Value = Replication> {
        prop_oneof![
            (any::<usize>(), prop::bool::weighted(0.2), any::<u8>()).prop_map(
                |(pick, stale, isr_mask)| Replication::Alter {
                    pick,
                    stale,
                    isr_mask
                }
            ),
            any::<bool>().prop_map(|preferred| Replication::Elect { preferred }),
            (prop::sample::select(vec!["a", "b"]), any::<bool>())
                .prop_map(|(topic, on)| Replication::Unclean { topic, on }),
        ]
    }

    fn replication_command(h: &Harness, step: &Replication) -> Option<ControllerCommand> {
        Some(match step {
            Replication::Alter {
                pick,
                stale,
                isr_mask,
            } => {
                let image = h.state.image();
                let all: Vec<(TopicId, u32, &PartitionImage)> = image
                    .topics()
                    .flat_map(|t| {
                        t.partitions
                            .iter()
                            .enumerate()
                            .map(move |(i, p)| (t.id, i as u32, p))
                    })
                    .collect();
                let (topic, partition, p) = *all.get(pick % all.len().max(1))?;
                let node = p.leader.or_else(|| p.replicas.first().copied())?;
                let mut new_isr: Vec<NodeId> = p
                    .replicas
                    .iter()
                    .enumerate()
                    .filter(|(i, r)| **r == node || isr_mask & (1 << (i % 8)) != 0)
                    .map(|(_, r)| *r)
                    .collect();
                new_isr.sort_unstable_by_key(|r| *r != node);
                let back = u32::from(*stale);
                ControllerCommand::AlterPartition {
                    node,
                    topic,
                    partition,
                    leader_epoch: LeaderEpoch(p.leader_epoch.get().saturating_sub(back)),
                    partition_epoch: p.partition_epoch.saturating_sub(back),
                    new_isr,
                }
            }
            Replication::Elect { preferred } => ControllerCommand::ElectLeaders {
                partitions: None,
                preferred: *preferred,
            },
            Replication::Unclean { topic, on } => {
                ControllerCommand::AlterConfigs(vec![AlterTopicConfigs {
                    name: (*topic).to_owned(),
                    overrides: BTreeMap::from([(
                        "unclean.leader.election.enable".to_owned(),
                        on.to_string(),
                    )]),
                    validate_only: false,
                }])
            }
        })
    }

    proptest! {
        /// Commands, ticks, ISR changes and elections in any order: a
        /// leader is a live replica in the ISR, the ISR is never empty and
        /// within the replicas, epochs never go back, an accepted
        /// AlterPartition bumps the partition epoch alone, and a follower
        /// replaying the log has the same image.
        #[test]
        fn any_replication_sequence_keeps_the_invariants(
            steps in proptest::collection::vec(
                prop_oneof![
                    arb_step().prop_map(Ok),
                    arb_replication().prop_map(Err),
                ],
                1..60,
            ),
        ) {
            let mut h = Harness::new(&[1, 2, 3]);
            h.live(&[1, 2, 3]);
            h.tick(0);
            for step in steps {
                let before = h.state.image().clone();
                match step {
                    Ok(Step::Advance(ms)) => h.now_ms += ms,
                    Ok(Step::Tick) => {
                        let now = h.now_ms;
                        h.tick(now);
                    }
                    Ok(Step::Command(command)) => {
                        h.command("step", command);
                    }
                    Err(step) => {
                        if let Some(command) = replication_command(&h, &step) {
                            let reply = h.command("replication", command.clone());
                            if let (
                                ControllerCommand::AlterPartition { topic, partition, .. },
                                ControllerReply::AlterPartition { error: ErrorCode::None, partition: Some(after) },
                            ) = (&command, &reply) {
                                let old = before
                                    .by_id(*topic)
                                    .and_then(|t| t.partitions.get(*partition as usize));
                                prop_assert!(old.is_some());
                                if let Some(old) = old {
                                    prop_assert_eq!(after.leader, old.leader);
                                    prop_assert_eq!(after.leader_epoch, old.leader_epoch);
                                    let bump = u32::from(old.isr != after.isr);
                                    prop_assert_eq!(after.partition_epoch, old.partition_epoch + bump);
                                }
                            }
                        }
                    }
                }
                let image = h.state.image().clone();
                for topic in image.topics() {
                    for (index, p) in topic.partitions.iter().enumerate() {
                        if let Some(leader) = p.leader {
                            prop_assert!(p.isr.contains(&leader), "{p:?}");
                            prop_assert!(image.broker(leader).is_some_and(|b| !b.fenced), "{p:?}");
                        }
                        prop_assert!(!p.isr.is_empty(), "{p:?}");
                        prop_assert!(p.isr.iter().all(|n| p.replicas.contains(n)), "{p:?}");
                        if let Some(old) = before.by_id(topic.id).and_then(|t| t.partitions.get(index)) {
                            prop_assert!(p.leader_epoch.get() >= old.leader_epoch.get(), "{old:?} -> {p:?}");
                            prop_assert!(p.partition_epoch >= old.partition_epoch, "{old:?} -> {p:?}");
                        }
                    }
                }
            }
            prop_assert_eq!(&h.follower_image(), &**h.state.image());
        }
    }
}

/// What `f` logs at warn and above, without ANSI colours.
fn warnings(f: impl FnOnce()) -> String {
    #[derive(Clone, Default)]
    struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut out) = self.0.lock() {
                out.extend_from_slice(bytes);
            }
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let bytes = sink.0.lock().map(|b| b.clone()).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn alter_partition_is_a_compare_and_set_on_both_epochs() {
    let mut h = Harness::new(&[9]);
    h.live(&[1, 2, 3]);
    let a = h.create_configured("a", &[&[1, 2, 3]], &[]);
    h.take();
    // Shrink (3 lags), a stale partition epoch, then expand.
    h.alter(1, (a, 0), (0, 0), &[1, 2]);
    h.alter(1, (a, 0), (0, 0), &[1, 2, 3]);
    h.alter(1, (a, 0), (0, 1), &[1, 2, 3]);
    // The same ISR again: accepted, nothing proposed.
    h.alter(1, (a, 0), (0, 2), &[1, 2, 3]);
    expect(
        h.take(),
        "
        alter-partition by 1 t1/0 epoch=0 pe=0 isr=[1,2] @0
          change t1/0 isr=[1,2] leader=1 epoch=0 pe=1
          => alter None: isr=[1,2] leader=1 epoch=0 pe=1
        alter-partition by 1 t1/0 epoch=0 pe=0 isr=[1,2,3] @0
          => alter InvalidUpdateVersion: isr=[1,2] leader=1 epoch=0 pe=1
        alter-partition by 1 t1/0 epoch=0 pe=1 isr=[1,2,3] @0
          change t1/0 isr=[1,2,3] leader=1 epoch=0 pe=2
          => alter None: isr=[1,2,3] leader=1 epoch=0 pe=2
        alter-partition by 1 t1/0 epoch=0 pe=2 isr=[1,2,3] @0
          => alter None: isr=[1,2,3] leader=1 epoch=0 pe=2
        ",
    );
    // Malformed: not the leader, no leader in the ISR, empty, a node that
    // is no replica, a node twice; epochs the controller has not seen; an
    // unknown partition and topic.
    h.alter(2, (a, 0), (0, 2), &[2, 3]);
    h.alter(1, (a, 0), (0, 2), &[2, 3]);
    h.alter(1, (a, 0), (0, 2), &[]);
    h.alter(1, (a, 0), (0, 2), &[1, 4]);
    h.alter(1, (a, 0), (0, 2), &[1, 1]);
    h.alter(1, (a, 0), (1, 2), &[1]);
    h.alter(1, (a, 0), (0, 3), &[1]);
    h.alter(1, (a, 7), (0, 0), &[1]);
    h.alter(1, (TopicId([7; 16]), 0), (0, 0), &[1]);
    expect(
        h.take(),
        "
        alter-partition by 2 t1/0 epoch=0 pe=2 isr=[2,3] @0
          => alter InvalidRequest: isr=[1,2,3] leader=1 epoch=0 pe=2
        alter-partition by 1 t1/0 epoch=0 pe=2 isr=[2,3] @0
          => alter InvalidRequest: isr=[1,2,3] leader=1 epoch=0 pe=2
        alter-partition by 1 t1/0 epoch=0 pe=2 isr=[] @0
          => alter InvalidRequest: isr=[1,2,3] leader=1 epoch=0 pe=2
        alter-partition by 1 t1/0 epoch=0 pe=2 isr=[1,4] @0
          => alter InvalidRequest: isr=[1,2,3] leader=1 epoch=0 pe=2
        alter-partition by 1 t1/0 epoch=0 pe=2 isr=[1,1] @0
          => alter InvalidRequest: isr=[1,2,3] leader=1 epoch=0 pe=2
        alter-partition by 1 t1/0 epoch=1 pe=2 isr=[1] @0
          => alter NotController: isr=[1,2,3] leader=1 epoch=0 pe=2
        alter-partition by 1 t1/0 epoch=0 pe=3 isr=[1] @0
          => alter NotController: isr=[1,2,3] leader=1 epoch=0 pe=2
        alter-partition by 1 t1/7 epoch=0 pe=0 isr=[1] @0
          => alter UnknownTopicOrPartition (no partition)
        alter-partition by 1 t2/0 epoch=0 pe=0 isr=[1] @0
          => alter UnknownTopicOrPartition (no partition)
        ",
    );
    // Node 1 shuts down: node 2 leads at epoch 1 and node 1 leaves the
    // ISR. The old leader's request is fenced; a fenced node cannot join
    // the ISR again.
    h.shutdown(1, 10);
    h.alter(1, (a, 0), (0, 3), &[1, 2, 3]);
    h.alter(2, (a, 0), (1, 3), &[2]);
    h.alter(2, (a, 0), (1, 4), &[2, 1]);
    h.alter(2, (a, 0), (1, 4), &[2, 3]);
    expect(
        h.take(),
        "
        shutdown 1 inc=10 @0
          fence 1 inc=10
          change t1/0 isr=[2,3] leader=2 epoch=1 pe=3
          => heartbeat fenced=true shutdown_ready=true
        alter-partition by 1 t1/0 epoch=0 pe=3 isr=[1,2,3] @0
          => alter FencedLeaderEpoch: isr=[2,3] leader=2 epoch=1 pe=3
        alter-partition by 2 t1/0 epoch=1 pe=3 isr=[2] @0
          change t1/0 isr=[2] leader=2 epoch=1 pe=4
          => alter None: isr=[2] leader=2 epoch=1 pe=4
        alter-partition by 2 t1/0 epoch=1 pe=4 isr=[2,1] @0
          => alter IneligibleReplica: isr=[2] leader=2 epoch=1 pe=4
        alter-partition by 2 t1/0 epoch=1 pe=4 isr=[2,3] @0
          change t1/0 isr=[2,3] leader=2 epoch=1 pe=5
          => alter None: isr=[2,3] leader=2 epoch=1 pe=5
        ",
    );
    assert_eq!(&h.follower_image(), &**h.state.image());
}

#[test]
fn without_unclean_election_a_partition_waits_for_its_last_isr() {
    let mut h = Harness::new(&[9]);
    h.live(&[1, 2]);
    let clean = h.create_configured("clean", &[&[1, 2]], &[]);
    let dirty = h.create_configured(
        "dirty",
        &[&[1, 2]],
        &[("unclean.leader.election.enable", "true")],
    );
    // Node 2 fell behind on both.
    h.alter(1, (clean, 0), (0, 0), &[1]);
    h.alter(1, (dirty, 0), (0, 0), &[1]);
    h.take();
    let logged = warnings(|| h.shutdown(1, 10));
    expect(
        h.take(),
        "
        shutdown 1 inc=10 @0
          fence 1 inc=10
          change t1/0 isr=[1] leader=- epoch=1 pe=2
          change t2/0 isr=[2] leader=2 epoch=1 pe=2
          => heartbeat fenced=true shutdown_ready=true
        ",
    );
    assert_eq!(
        logged.matches("unclean leader election").count(),
        1,
        "one warning, for the dirty topic: {logged}"
    );
    assert!(
        logged.contains("dirty") && logged.contains("WARN"),
        "{logged}"
    );
    // Turning it on for the offline topic: the next tick elects.
    h.tick(1);
    h.command(
        "alter-configs",
        ControllerCommand::AlterConfigs(vec![AlterTopicConfigs {
            name: "clean".into(),
            overrides: BTreeMap::from([(
                "unclean.leader.election.enable".to_owned(),
                "true".to_owned(),
            )]),
            validate_only: false,
        }]),
    );
    let logged = warnings(|| h.tick(2));
    // Node 1 comes back: a follower, it leads nothing.
    h.register(1, 11);
    h.heartbeat(1, 11, true);
    expect(
        h.take(),
        "
        tick @1
        alter-configs @1
          config t1 {unclean.leader.election.enable=true}
          => topics: clean None
        tick @2
          change t1/0 isr=[2] leader=2 epoch=2 pe=3
        register 1 inc=11 @2
          register 1 inc=11
          => registered
        heartbeat 1 inc=11 caught_up=true @2
          unfence 1 inc=11
          => heartbeat fenced=false shutdown_ready=false
        ",
    );
    assert_eq!(
        logged.matches("unclean leader election").count(),
        1,
        "{logged}"
    );
    assert_eq!(&h.follower_image(), &**h.state.image());
}

#[test]
fn a_returning_last_isr_member_leads_again_without_unclean_election() {
    let mut h = Harness::new(&[9]);
    h.live(&[1, 2]);
    let a = h.create_configured("a", &[&[2, 1]], &[]);
    h.alter(2, (a, 0), (0, 0), &[2]);
    h.shutdown(2, 20);
    h.take();
    // Node 1 is live but out of sync: the partition stays offline until
    // node 2 returns.
    h.tick(1);
    h.register(2, 21);
    h.heartbeat(2, 21, true);
    expect(
        h.take(),
        "
        tick @1
        register 2 inc=21 @1
          register 2 inc=21
          => registered
        heartbeat 2 inc=21 caught_up=true @1
          unfence 2 inc=21
          change t1/0 isr=[2] leader=2 epoch=2 pe=3
          => heartbeat fenced=false shutdown_ready=false
        ",
    );
    assert_eq!(&h.follower_image(), &**h.state.image());
}

#[test]
fn preferred_election_moves_leadership_back_once() {
    let mut h = Harness::new(&[9]);
    h.live(&[1, 2]);
    let a = h.create_configured("a", &[&[1, 2], &[2, 1]], &[]);
    h.shutdown(1, 10);
    h.take();
    // The preferred replica is fenced: not available.
    h.elect(Some(&[(a, 0)]), true);
    h.register(1, 11);
    h.heartbeat(1, 11, true);
    // Back in sync: the leader (node 2) adds node 1 to the ISRs again.
    h.alter(2, (a, 0), (1, 1), &[2, 1]);
    h.alter(2, (a, 1), (0, 1), &[2, 1]);
    h.elect(Some(&[(a, 0), (a, 1)]), true);
    // Already preferred: nothing to do; asked for all, nothing listed.
    h.elect(Some(&[(a, 0)]), true);
    h.elect(None, true);
    expect(
        h.take(),
        "
        elect preferred t1/0 @0
          => elections: t1/0 PreferredLeaderNotAvailable \"the preferred leader 1 is not live\"
        register 1 inc=11 @0
          register 1 inc=11
          => registered
        heartbeat 1 inc=11 caught_up=true @0
          unfence 1 inc=11
          => heartbeat fenced=false shutdown_ready=false
        alter-partition by 2 t1/0 epoch=1 pe=1 isr=[2,1] @0
          change t1/0 isr=[2,1] leader=2 epoch=1 pe=2
          => alter None: isr=[2,1] leader=2 epoch=1 pe=2
        alter-partition by 2 t1/1 epoch=0 pe=1 isr=[2,1] @0
          change t1/1 isr=[2,1] leader=2 epoch=0 pe=2
          => alter None: isr=[2,1] leader=2 epoch=0 pe=2
        elect preferred t1/0,t1/1 @0
          change t1/0 isr=[2,1] leader=1 epoch=2 pe=3
          => elections: t1/0 None; t1/1 ElectionNotNeeded
        elect preferred t1/0 @0
          => elections: t1/0 ElectionNotNeeded
        elect preferred all @0
          => elections: (none)
        ",
    );
    // A preferred replica out of the ISR is not available either.
    h.shutdown(2, 20);
    h.alter(1, (a, 1), (1, 1), &[1]);
    h.register(2, 21);
    h.heartbeat(2, 21, true);
    h.take();
    h.elect(None, true);
    expect(
        h.take(),
        "
        elect preferred all @0
          => elections: t1/1 PreferredLeaderNotAvailable \"the preferred leader 2 is not in the ISR\"
        ",
    );
    assert_eq!(&h.follower_image(), &**h.state.image());
}

#[test]
fn unclean_elect_leaders_elects_offline_partitions_and_names_unknown_ones() {
    let mut h = Harness::new(&[9]);
    h.live(&[1, 2]);
    let a = h.create_configured("a", &[&[1, 2]], &[]);
    let solo = h.create_configured("solo", &[&[1]], &[]);
    let live = h.create_configured("live", &[&[2]], &[]);
    h.alter(1, (a, 0), (0, 0), &[1]);
    h.shutdown(1, 10);
    h.take();
    let logged = warnings(|| {
        h.elect(
            Some(&[(a, 5), (TopicId([7; 16]), 0), (live, 0), (solo, 0), (a, 0)]),
            false,
        )
    });
    h.elect(None, false);
    expect(
        h.take(),
        "
        elect unclean t1/5,t4/0,t3/0,t2/0,t1/0 @0
          change t1/0 isr=[2] leader=2 epoch=2 pe=3
          => elections: t1/5 UnknownTopicOrPartition \"topic \\\"a\\\" has no partition 5\"; t4/0 UnknownTopicOrPartition \"no topic has id 07070707-0707-0707-0707-070707070707\"; t3/0 ElectionNotNeeded; t2/0 EligibleLeadersNotAvailable \"no replica is live\"; t1/0 None
        elect unclean all @0
          => elections: t2/0 EligibleLeadersNotAvailable \"no replica is live\"
        ",
    );
    assert_eq!(
        logged.matches("unclean leader election").count(),
        1,
        "{logged}"
    );
    assert_eq!(&h.follower_image(), &**h.state.image());
}

#[test]
fn the_periodic_rebalance_moves_leaderships_to_preferred_replicas() {
    let mut h = Harness::bare_with(ControllerConfig {
        leader_rebalance_interval_ms: 5_000,
        ..config(&[9])
    });
    h.state.become_leader(0);
    h.tick(0);
    h.live(&[1, 2]);
    let a = h.create_configured("a", &[&[1, 2]], &[]);
    h.shutdown(1, 10);
    h.register(1, 11);
    h.heartbeat(1, 11, true);
    h.alter(2, (a, 0), (1, 1), &[2, 1]);
    h.take();
    h.tick(4_999);
    h.tick(5_000);
    h.tick(6_000);
    expect(
        h.take(),
        "
        tick @4999
        tick @5000
          change t1/0 isr=[2,1] leader=1 epoch=2 pe=3
        tick @6000
        ",
    );
    assert_eq!(&h.follower_image(), &**h.state.image());
}
