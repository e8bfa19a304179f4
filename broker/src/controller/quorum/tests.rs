//! Quorums wired in memory: messages delivered by the test, ticks by the
//! test, each node on its own temp dir.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

struct Node {
    dir: tempfile::TempDir,
    quorum: Option<Quorum>,
    /// Every payload committed, by index, as the node applied it.
    applied: BTreeMap<u64, Vec<u8>>,
    /// The snapshot installed last, if any.
    installed: Option<Installed>,
    /// Its log's injected write failures (kept across restarts).
    fault: WriteFault,
}

struct Net {
    nodes: BTreeMap<u64, Node>,
    voters: Vec<u64>,
    /// Messages of this kind to drop, and how many more.
    lose: Option<(raft::eraftpb::MessageType, usize)>,
    /// Nodes whose `poll` failed (dropped then, as the driver drops its
    /// `Quorum`, until [`Net::restart`]).
    failed: BTreeSet<u64>,
}

fn config(id: u64, voters: &[u64]) -> QuorumConfig {
    QuorumConfig {
        id,
        voters: voters.to_vec(),
        election_tick: 10,
        heartbeat_tick: 2,
        fixed_election_timeout: false,
        write_fault: WriteFault::default(),
    }
}

impl Net {
    fn new(voters: &[u64]) -> Net {
        let mut net = Net {
            nodes: BTreeMap::new(),
            voters: voters.to_vec(),
            lose: None,
            failed: BTreeSet::new(),
        };
        for &id in voters {
            net.add(id);
        }
        net
    }

    /// Drops the next `count` messages of `kind` (the network loses them).
    fn lose(&mut self, kind: raft::eraftpb::MessageType, count: usize) {
        self.lose = Some((kind, count));
    }

    fn add(&mut self, id: u64) {
        let dir = tempfile::tempdir().unwrap();
        let quorum = Quorum::open(dir.path(), &config(id, &self.voters)).unwrap();
        self.nodes.insert(
            id,
            Node {
                dir,
                quorum: Some(quorum),
                applied: BTreeMap::new(),
                installed: None,
                fault: WriteFault::default(),
            },
        );
    }

    fn q(&mut self, id: u64) -> &mut Quorum {
        self.nodes.get_mut(&id).unwrap().quorum.as_mut().unwrap()
    }

    fn kill(&mut self, id: u64) {
        self.nodes.get_mut(&id).unwrap().quorum = None;
    }

    /// Reopens a killed node from its directory; what it applied before
    /// is what its storage holds committed.
    fn restart(&mut self, id: u64) {
        let voters = self.voters.clone();
        let node = self.nodes.get_mut(&id).unwrap();
        assert!(node.quorum.is_none());
        let mut config = config(id, &voters);
        config.write_fault = node.fault.clone();
        let quorum = Quorum::open(node.dir.path(), &config).unwrap();
        self.failed.remove(&id);
        node.applied = quorum
            .storage()
            .committed_entries()
            .filter(|e| !e.data.is_empty() && e.get_entry_type() == EntryType::EntryNormal)
            .map(|e| (e.index, e.data.to_vec()))
            .collect();
        node.quorum = Some(quorum);
    }

    fn alive(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.quorum.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Polls and delivers until nothing moves.
    fn settle(&mut self) {
        for _ in 0..1000 {
            let mut messages = Vec::new();
            for id in self.alive() {
                let node = self.nodes.get_mut(&id).unwrap();
                let Ok(out) = node.quorum.as_mut().unwrap().poll() else {
                    // Nothing of the failed `Ready` goes out.
                    node.quorum = None;
                    self.failed.insert(id);
                    continue;
                };
                if let Some(installed) = out.snapshot {
                    node.applied.retain(|index, _| *index > installed.index);
                    node.installed = Some(installed);
                }
                let mut last = None;
                for c in out.committed {
                    last = Some(c.index);
                    if let Some(payload) = c.payload {
                        node.applied.insert(c.index, payload);
                    }
                }
                // As the driver does: snapshot once a membership change
                // is applied.
                let q = node.quorum.as_mut().unwrap();
                if let (Some(index), true) = (last, q.snapshot_wanted()) {
                    q.snapshot(index, format!("image@{index}").into_bytes())
                        .unwrap();
                }
                messages.extend(out.messages);
            }
            if messages.is_empty() {
                return;
            }
            for m in messages {
                if let Some((kind, left)) = &mut self.lose {
                    if *left > 0 && m.get_msg_type() == *kind {
                        *left -= 1;
                        continue;
                    }
                }
                if let Some(Node {
                    quorum: Some(q), ..
                }) = self.nodes.get_mut(&m.to)
                {
                    q.step(m);
                }
            }
        }
        panic!("the network never settled");
    }

    fn leader(&self) -> Option<u64> {
        let leaders: BTreeSet<u64> = self
            .nodes
            .values()
            .filter_map(|n| n.quorum.as_ref())
            .filter(|q| q.is_leader())
            .map(|q| q.id())
            .collect();
        // With check_quorum a deposed leader steps down, but two leaders
        // of different terms may coexist briefly; the highest term wins.
        leaders
            .into_iter()
            .max_by_key(|id| self.nodes[id].quorum.as_ref().unwrap().term())
    }

    /// Ticks every live node until one leads and every live node knows
    /// it.
    fn elect(&mut self) -> u64 {
        for _ in 0..500 {
            for id in self.alive() {
                self.q(id).tick();
            }
            self.settle();
            if let Some(leader) = self.leader() {
                let alive = self.alive();
                if alive
                    .iter()
                    .all(|id| self.nodes[id].quorum.as_ref().unwrap().leader() == Some(leader))
                {
                    return leader;
                }
            }
        }
        panic!("no leader elected");
    }

    fn propose(&mut self, payload: &[u8]) -> (u64, u64) {
        let leader = self.leader().unwrap();
        let at = self.q(leader).propose(payload.to_vec()).unwrap();
        self.settle();
        at
    }

    fn applied(&self, id: u64) -> Vec<Vec<u8>> {
        self.nodes[&id].applied.values().cloned().collect()
    }
}

fn payloads(items: &[&str]) -> Vec<Vec<u8>> {
    items.iter().map(|s| s.as_bytes().to_vec()).collect()
}

#[test]
fn a_lone_voter_leads_at_once() {
    let mut net = Net::new(&[1]);
    net.settle();
    assert!(net.q(1).is_leader(), "no tick was needed");
    let (term, index) = net.propose(b"a");
    assert_eq!(net.q(1).term_at(index), Some(term));
    assert_eq!(net.applied(1), payloads(&["a"]));
    assert!(net.q(1).leader_ready(index));
}

#[test]
fn three_voters_elect_replicate_and_survive_the_leaders_loss() {
    let mut net = Net::new(&[1, 2, 3]);
    let first = net.elect();
    net.propose(b"a");
    net.propose(b"b");
    for id in [1, 2, 3] {
        assert_eq!(net.applied(id), payloads(&["a", "b"]), "node {id}");
    }
    // Too large a payload is refused, not written.
    assert_eq!(
        net.q(first).propose(vec![1; PROPOSAL_BYTES_MAX + 1]),
        Err(ProposeError::TooLarge(PROPOSAL_BYTES_MAX + 1))
    );
    // A follower cannot propose.
    let follower = [1, 2, 3].into_iter().find(|id| *id != first).unwrap();
    assert_eq!(
        net.q(follower).propose(b"x".to_vec()),
        Err(ProposeError::NotLeader {
            leader: Some(first)
        })
    );

    net.kill(first);
    let second = net.elect();
    assert_ne!(second, first);
    net.propose(b"c");
    for id in net.alive() {
        assert_eq!(net.applied(id), payloads(&["a", "b", "c"]), "node {id}");
    }

    // The old leader comes back from disk with what it had committed and
    // catches up.
    net.restart(first);
    assert_eq!(net.applied(first), payloads(&["a", "b"]));
    net.elect();
    net.propose(b"d");
    for id in [1, 2, 3] {
        assert_eq!(
            net.applied(id),
            payloads(&["a", "b", "c", "d"]),
            "node {id}"
        );
    }
}

#[test]
fn an_uncommitted_proposal_of_a_deposed_leader_is_not_committed_with_its_term() {
    let mut net = Net::new(&[1, 2, 3]);
    let first = net.elect();
    // The leader proposes, but its messages are lost: it dies.
    let (term, index) = net.q(first).propose(b"lost".to_vec()).unwrap();
    net.kill(first);
    net.elect();
    net.propose(b"won");
    for id in net.alive() {
        assert_eq!(net.applied(id), payloads(&["won"]));
        let q = net.nodes[&id].quorum.as_ref().unwrap();
        assert_ne!(
            q.term_at(index),
            Some(term),
            "index {index} was overwritten"
        );
    }
    net.restart(first);
    net.elect();
    net.settle();
    assert_eq!(net.applied(first), payloads(&["won"]));
}

#[test]
fn snapshots_compact_the_log_survive_restarts_and_feed_a_learner() {
    let mut net = Net::new(&[1, 2, 3]);
    let leader = net.elect();
    net.propose(b"a");
    let (_, at) = net.propose(b"b");
    for id in [1, 2, 3] {
        net.q(id)
            .snapshot(at, format!("image@{at}").into_bytes())
            .unwrap();
    }
    net.propose(b"c");
    assert_eq!(net.q(leader).storage().first_index(), at + 1);

    // Restart everyone from disk: snapshot and entries kept.
    for id in [1, 2, 3] {
        net.kill(id);
        net.restart(id);
        let storage = net.q(id).storage();
        assert_eq!(storage.latest_snapshot().get_metadata().index, at);
        assert_eq!(
            &storage.latest_snapshot().data[..],
            format!("image@{at}").as_bytes()
        );
        assert_eq!(net.applied(id), payloads(&["c"]), "node {id}");
    }
    let leader = net.elect();

    // A learner (not a voter) joins: the leader sends it the snapshot,
    // then the entries after it.
    net.add(4);
    net.q(leader).add_learner(4).unwrap();
    net.settle();
    // Heartbeats make the leader notice the learner lags.
    for _ in 0..5 {
        net.q(leader).tick();
        net.settle();
    }
    for id in net.alive() {
        assert_eq!(net.q(id).conf_state().learners, vec![4], "node {id}");
        assert_eq!(net.q(id).conf_state().voters, vec![1, 2, 3]);
    }
    // The snapshot taken when the learner was added (it names it).
    let installed = net.nodes[&4].installed.clone().expect("snapshot sent");
    assert!(installed.index > at);
    assert_eq!(
        installed.data,
        format!("image@{}", installed.index).into_bytes()
    );
    assert!(net.applied(4).is_empty(), "all before the snapshot");
    net.propose(b"d");
    assert_eq!(net.applied(4), payloads(&["d"]));
    assert!(!net.q(4).is_leader());
    // The learner never campaigns, even when the voters go silent.
    net.kill(1);
    net.kill(2);
    net.kill(3);
    for _ in 0..100 {
        net.q(4).tick();
        net.settle();
    }
    assert!(!net.q(4).is_leader());
}

#[test]
fn a_learner_follows_the_log_and_keeps_it_across_restarts() {
    let mut net = Net::new(&[1, 2, 3]);
    let leader = net.elect();
    net.propose(b"a");
    net.add(7);
    net.q(leader).add_learner(7).unwrap();
    // Adding it again while it is a member is a no-op.
    net.settle();
    net.q(leader).add_learner(7).unwrap();
    net.propose(b"b");
    for _ in 0..3 {
        net.q(leader).tick();
        net.settle();
    }
    // It starts from the snapshot taken when it was added (which holds
    // "a"), then follows entries.
    let installed = net.nodes[&7].installed.clone().expect("snapshot sent");
    assert!(installed.index > 1);
    assert_eq!(net.applied(7), payloads(&["b"]));
    net.propose(b"c");
    assert_eq!(net.applied(7), payloads(&["b", "c"]));
    // Restarted from its disk, the learner keeps its log and membership.
    net.kill(7);
    net.restart(7);
    assert_eq!(net.applied(7), payloads(&["b", "c"]));
    assert_eq!(net.q(7).conf_state().learners, vec![7]);
    assert_eq!(
        net.q(7).storage().latest_snapshot().get_metadata().index,
        installed.index
    );
}

/// Seed 1282 of the simulation: the snapshot a leader sends a new learner
/// is lost; the leader sends it again after `2 * election_tick` ticks
/// (before the fix, raft-rs kept the learner paused in Snapshot state for
/// as long as this leader lived).
#[test]
fn a_lost_snapshot_is_sent_again() {
    let mut net = Net::new(&[1, 2, 3]);
    let leader = net.elect();
    net.propose(b"a");
    net.add(4);
    net.lose(raft::eraftpb::MessageType::MsgSnapshot, 1);
    net.q(leader).add_learner(4).unwrap();
    net.settle();
    for _ in 0..3 {
        net.q(leader).tick();
        net.settle();
    }
    assert!(
        net.nodes[&4].installed.is_none(),
        "the first snapshot was lost"
    );
    for _ in 0..2 * 10 {
        net.q(leader).tick();
        net.settle();
    }
    assert!(net.nodes[&4].installed.is_some(), "sent again");
    net.propose(b"b");
    assert_eq!(net.applied(4), payloads(&["b"]));
}

/// N4: a follower whose log write fails (a full disk) acknowledges
/// nothing it could not make durable, the two others commit without it,
/// and opened again from disk (the torn tail of its failed append cut) it
/// catches up to the same log.
#[test]
fn a_node_whose_log_write_fails_acknowledges_nothing_and_rejoins_after_reopening() {
    let mut net = Net::new(&[1, 2, 3]);
    let leader = net.elect();
    net.propose(b"a");
    let victim = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    let fault = net.nodes[&victim].fault.clone();
    // The fault is the node's from its next open on (the driver's
    // `QuorumConfig::write_fault`): restart it with the fault in place.
    net.kill(victim);
    net.restart(victim);
    net.elect();
    let durable = net.q(victim).storage().last_index();
    fault.set(true);
    net.propose(b"b");
    net.propose(b"c");
    assert!(net.failed.contains(&victim), "the victim's write failed");
    for id in net.alive() {
        assert_eq!(net.applied(id), payloads(&["a", "b", "c"]), "node {id}");
    }
    // The leader never heard it acknowledge what it could not write.
    let leader = net.leader().unwrap();
    let matched = net.q(leader).raw.raft.prs().get(victim).unwrap().matched;
    assert!(
        matched <= durable,
        "acknowledged {matched} > durable {durable}"
    );

    // Writes work again: opened as at startup, it has what was durable
    // (the half-written append cut), and catches up.
    fault.set(false);
    net.restart(victim);
    assert_eq!(net.q(victim).storage().last_index(), durable);
    assert_eq!(net.applied(victim), payloads(&["a"]));
    net.elect();
    net.propose(b"d");
    for id in [1, 2, 3] {
        assert_eq!(
            net.applied(id),
            payloads(&["a", "b", "c", "d"]),
            "node {id}"
        );
    }
}
