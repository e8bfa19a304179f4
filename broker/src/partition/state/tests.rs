//! Data-driven tests: each test is a transcript. Lines starting with `> `
//! are events fed to the state by a simulated driver (a log that assigns
//! offsets and becomes durable only when told, and a simulated clock); the
//! lines after each event are what the state decided, one per line. On a
//! mismatch the runner prints the actual transcript, ready to paste.
//!
//! Events (`#N` names a produce request):
//! - `open END` — a restart: the state opens again over a log of END
//!   offsets, all durable
//! - `tick MS` — the clock moves to MS
//! - `config [min_insync=N] [flush_before_ack=BOOL] [flush_messages=N|-]
//!   [flush_ms=MS|-]` — a topic config change
//! - `produce #N acks=A records=R[,R...] [producer=ID/EPOCH/SEQ]` — the
//!   driver's produce: one batch of R records each (the producer fields on
//!   every batch, sequences continuing); answers `#N ERROR`, or
//!   `#N base=B end=E [flush] [wait]` and `#N acked` once acknowledged
//! - `flush` — the driver flushes the whole log (`durable` and releases)
//! - `written END` — the log wrote out its buffer up to END by itself
//! - `flush timer` — whether the flush policy wants a flush now
//! - `epoch E|-` — a fetch's current leader epoch
//! - `read [replica=N]` — the offset a fetch reads up to
//! - `fetch-at O [replica=N]` — a fetch at O: out of range, nothing to
//!   read yet, or what it reads
//! - `retention START` — retention moved the log start
//! - `state` — the offsets
//!
//! Replication (this node, the leader, is node 1):
//! - `leadership replicas=N,.. isr=N,.. epoch=E pepoch=P` — the committed
//!   image's leadership; answers the waiters it completed and the ISR
//! - `fetch N offset=O [durable=D]` — follower N fetched; answers the high
//!   watermark, the waiters completed (`completed #A #B`) and a proposal
//! - `timer` — the ISR timer at the current time: a shrink proposal or not
//! - `rejected P` — the controller refused the proposal based on P
//! - `isr` — the committed ISR, its partition epoch and the proposal
//!
//! Following (this node becomes a follower of another):
//! - `follow leader=N|- epoch=E` — the image says node N leads at E;
//!   answers the waiters failed and the role
//! - `replicate epoch=E records=R` — the leader's batch of R records,
//!   written at leader epoch E, appended verbatim
//! - `leader-hw O` — a fetch response's high watermark
//! - `truncate END` — the fetcher cut the log to END
//! - `epochs` — the leader-epoch cache; `epoch-end E` — its answer to
//!   `OffsetForLeaderEpoch` for E

use std::collections::BTreeMap;

use fjord_schema::{ProducerEpoch, ProducerId, Sequence};

use super::*;
use crate::partition::producer_state::ProducerStateConfig;

fn policy() -> ProducePolicy {
    ProducePolicy {
        min_insync_replicas: 1,
        flush_before_ack: true,
        flush_messages: None,
        flush_ms: None,
        replica_lag_time_max_ms: 100,
    }
}

/// A produce not answered yet.
struct Pending {
    reply: String,
    flush: bool,
    waiter: Option<WaiterId>,
}

struct Harness {
    state: PartitionState,
    now_ms: i64,
    /// The simulated log's durable end.
    log_durable: Offset,
    pending: Vec<Pending>,
}

fn kv(words: &[&str]) -> BTreeMap<String, String> {
    words
        .iter()
        .map(|w| {
            let (k, v) = w
                .split_once('=')
                .unwrap_or_else(|| panic!("expected key=value: {w}"));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn optional(value: &str) -> Option<u64> {
    (value != "-").then(|| value.parse().expect("a number or -"))
}

impl Harness {
    fn new() -> Harness {
        let opened = Opened {
            leader_epoch: LeaderEpoch(3),
            log_start: Offset(0),
            log_end: Offset(0),
            durable_end: Offset(0),
        };
        let producers = ProducerStates::new(ProducerStateConfig::default());
        Harness {
            state: PartitionState::new(opened, policy(), producers),
            now_ms: 0,
            log_durable: Offset(0),
            pending: Vec::new(),
        }
    }

    fn event(&mut self, line: &str) -> Vec<String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["open", end] => {
                // A restart: the state opened again over a log of `end`
                // offsets, all durable (the driver recovered it).
                let end = Offset(end.parse().expect("offset"));
                let opened = Opened {
                    leader_epoch: LeaderEpoch(0),
                    log_start: Offset(0),
                    log_end: end,
                    durable_end: end,
                };
                let producers = ProducerStates::new(ProducerStateConfig::default());
                self.state = PartitionState::new(opened, self.state.policy(), producers);
                self.log_durable = end;
                self.pending.clear();
                Vec::new()
            }
            ["tick", ms] => {
                self.now_ms = ms.parse().expect("ms");
                Vec::new()
            }
            ["config", args @ ..] => {
                let mut policy = self.state.policy();
                for (key, value) in kv(args) {
                    match key.as_str() {
                        "min_insync" => policy.min_insync_replicas = value.parse().unwrap(),
                        "flush_before_ack" => policy.flush_before_ack = value.parse().unwrap(),
                        "flush_messages" => policy.flush_messages = optional(&value),
                        "flush_ms" => policy.flush_ms = optional(&value),
                        other => panic!("unknown config {other}"),
                    }
                }
                self.state.set_policy(policy);
                Vec::new()
            }
            ["produce", reply, args @ ..] => self.produce(reply, &kv(args)),
            ["flush"] => {
                self.log_durable = self.state.log_end();
                let released = self.state.durable(self.log_durable).len();
                for pending in &mut self.pending {
                    pending.flush = false;
                }
                let mut out = vec![format!("durable {} released {released}", self.log_durable)];
                out.extend(self.answer());
                out
            }
            ["written", end] => {
                self.log_durable = Offset(end.parse().expect("offset"));
                let released = self.state.durable(self.log_durable).len();
                let mut out = vec![format!("durable {} released {released}", self.log_durable)];
                out.extend(self.answer());
                out
            }
            ["flush", "timer"] => {
                let due = self.state.flush_due(self.now_ms);
                vec![if due { "flush due" } else { "no flush due" }.to_owned()]
            }
            ["epoch", epoch] => {
                let epoch = (*epoch != "-").then(|| LeaderEpoch(epoch.parse().expect("epoch")));
                vec![match self.state.check_leader_epoch(epoch) {
                    Ok(()) => "epoch ok".to_owned(),
                    Err(error) => format!("epoch {:?}: {error}", error.code()),
                }]
            }
            ["read", args @ ..] => {
                let replica = kv(args)
                    .get("replica")
                    .map(|r| NodeId(r.parse().expect("node id")));
                vec![format!("read below {}", self.state.read_limit(replica))]
            }
            ["fetch-at", offset, args @ ..] => {
                let replica = kv(args)
                    .get("replica")
                    .map(|r| NodeId(r.parse().expect("node id")));
                let offset: i64 = offset.parse().expect("offset");
                vec![match self.state.check_fetch_offset(offset) {
                    Ok(at) if at >= self.state.read_limit(replica) => {
                        format!("fetch at {at}: nothing yet")
                    }
                    Ok(at) => format!(
                        "fetch at {at}: reads below {}",
                        self.state.read_limit(replica)
                    ),
                    Err(error) => format!("{:?}", error.code()),
                }]
            }
            ["list-offsets"] => vec![match self.state.check_offsets_available() {
                Ok(()) => format!("latest {}", self.state.high_watermark()),
                Err(error) => format!("{:?}: {error}", error.code()),
            }],
            ["retention", start] => {
                self.state
                    .log_start_moved(Offset(start.parse().expect("offset")));
                Vec::new()
            }
            ["leadership", args @ ..] => {
                let args = kv(args);
                let nodes = |key: &str| -> Vec<NodeId> {
                    args[key]
                        .split(',')
                        .map(|n| NodeId(n.parse().expect("node id")))
                        .collect()
                };
                let leadership = Leadership {
                    leader: NodeId(1),
                    replicas: nodes("replicas"),
                    isr: nodes("isr"),
                    leader_epoch: LeaderEpoch(args["epoch"].parse().expect("epoch")),
                    partition_epoch: args["pepoch"].parse().expect("partition epoch"),
                };
                match self.state.apply_leadership(&leadership, self.now_ms) {
                    Ok(completed) => {
                        let mut out = self.completed(&completed);
                        out.push(self.isr());
                        out.extend(self.answer());
                        out
                    }
                    Err(error) => vec![format!("leadership {:?}: {error}", error.code())],
                }
            }
            ["fetch", node, args @ ..] => {
                let args = kv(args);
                let offset = |key: &str| args.get(key).map(|o| Offset(o.parse().expect("offset")));
                let node = NodeId(node.parse().expect("node id"));
                let fetched = self.state.follower_fetched(
                    node,
                    offset("offset").expect("offset="),
                    offset("durable"),
                    self.now_ms,
                );
                match fetched {
                    Ok(fetched) => {
                        let mut out = vec![format!("hw {}", self.state.high_watermark())];
                        out.extend(self.completed(&fetched.completed));
                        if let Some(change) = fetched.isr_change {
                            out.push(proposal(&change));
                        }
                        out.extend(self.answer());
                        out
                    }
                    Err(error) => vec![format!("fetch {:?}: {error}", error.code())],
                }
            }
            ["timer"] => vec![match self.state.tick(self.now_ms) {
                Some(change) => proposal(&change),
                None => "no isr change".to_owned(),
            }],
            ["rejected", epoch] => {
                self.state
                    .isr_change_rejected(epoch.parse().expect("partition epoch"));
                Vec::new()
            }
            ["isr"] => vec![self.isr()],
            ["follow", args @ ..] => {
                let args = kv(args);
                let leader = (args["leader"] != "-")
                    .then(|| NodeId(args["leader"].parse().expect("node id")));
                let epoch = LeaderEpoch(args["epoch"].parse().expect("epoch"));
                let failed = self.state.become_follower(leader, epoch);
                let mut out = self.completed(&failed);
                out.push(format!("role {:?}", self.state.role()));
                out.extend(self.answer());
                out
            }
            ["replicate", args @ ..] => {
                let args = kv(args);
                let epoch = LeaderEpoch(args["epoch"].parse().expect("epoch"));
                let records: u64 = args["records"].parse().expect("records");
                let base_offset = self.state.log_end();
                let appended = Appended {
                    base_offset,
                    last_offset: Offset(base_offset.get() + records - 1),
                    next_offset: Offset(base_offset.get() + records),
                    durable_end: self.log_durable,
                };
                let new = self.state.epoch_is_new(epoch);
                self.state
                    .follower_appended(None, appended, epoch, self.now_ms);
                vec![format!(
                    "end {}{}",
                    self.state.log_end(),
                    if new { " new epoch" } else { "" }
                )]
            }
            ["leader-hw", offset] => {
                self.state
                    .follower_high_watermark(Offset(offset.parse().expect("offset")));
                vec![format!("hw {}", self.state.high_watermark())]
            }
            ["truncate", end] => {
                let end = Offset(end.parse().expect("offset"));
                self.log_durable = self.log_durable.min(end);
                let producers = ProducerStates::new(ProducerStateConfig::default());
                let start = self.state.log_start();
                self.state
                    .truncated(start, end, self.log_durable, producers);
                vec![format!(
                    "end {} hw {}",
                    self.state.log_end(),
                    self.state.high_watermark()
                )]
            }
            ["epochs"] => {
                let entries: Vec<String> = self
                    .state
                    .epochs()
                    .entries()
                    .iter()
                    .map(|e| format!("{}@{}", e.epoch, e.start_offset))
                    .collect();
                let dirty = self.state.epochs_to_write().is_some();
                vec![format!(
                    "epochs {}{}",
                    entries.join(" "),
                    if dirty { " (to write)" } else { "" }
                )]
            }
            ["epoch-end", epoch] => {
                let epoch = LeaderEpoch(epoch.parse().expect("epoch"));
                vec![match self.state.epoch_end(epoch) {
                    Some(end) => format!("epoch {} ends at {}", end.epoch, end.end_offset),
                    None => "undefined".to_owned(),
                }]
            }
            ["state"] => {
                let s = &self.state;
                vec![format!(
                    "start={} end={} durable={} hw={} ack_end={} waiting={}",
                    s.log_start(),
                    s.log_end(),
                    s.durable_end(),
                    s.high_watermark(),
                    s.ack_end(),
                    s.waiting()
                )]
            }
            _ => panic!("unknown event: {line}"),
        }
    }

    /// The driver's produce, with the simulated log.
    fn produce(&mut self, reply: &str, args: &BTreeMap<String, String>) -> Vec<String> {
        let acks: i8 = args["acks"].parse().expect("acks");
        let acks = match self.state.begin_produce(acks, self.now_ms) {
            Ok(acks) => acks,
            Err(error) => return vec![format!("{reply} {:?}", error.code())],
        };
        let mut producer = args.get("producer").map(|p| {
            let fields: Vec<i64> = p
                .split('/')
                .map(|f| f.parse().expect("id/epoch/seq"))
                .collect();
            ProducerBatch {
                producer_id: ProducerId(fields[0]),
                epoch: ProducerEpoch(fields[1] as i16),
                first_seq: Sequence(fields[2] as i32),
                last_seq: Sequence(fields[2] as i32),
            }
        });
        let mut base = None;
        for records in args["records"].split(',') {
            let records: u64 = records.parse().expect("records");
            if let Some(p) = &mut producer {
                p.last_seq = p.first_seq.wrapping_plus(records as u32 - 1);
            }
            match self.state.check_batch(producer.as_ref()) {
                Ok(BatchPlan::Append) => {
                    let base_offset = self.state.log_end();
                    let appended = Appended {
                        base_offset,
                        last_offset: Offset(base_offset.get() + records - 1),
                        next_offset: Offset(base_offset.get() + records),
                        durable_end: self.log_durable,
                    };
                    self.state
                        .appended(producer.as_ref(), appended, self.now_ms);
                    base.get_or_insert(base_offset);
                }
                Ok(BatchPlan::Duplicate { base_offset }) => {
                    base.get_or_insert(base_offset);
                }
                Err(error) => return vec![format!("{reply} {:?}: {error}", error.code())],
            }
            if let Some(p) = &mut producer {
                p.first_seq = p.last_seq.wrapping_plus(1);
            }
        }
        let plan = self.state.ack_plan(acks);
        let mut line = format!(
            "{reply} base={} end={}",
            base.expect("a batch"),
            self.state.log_end()
        );
        if plan.flush {
            line.push_str(" flush");
        }
        if plan.waiter.is_some() {
            line.push_str(" wait");
        }
        self.pending.push(Pending {
            reply: reply.to_owned(),
            flush: plan.flush,
            waiter: plan.waiter,
        });
        let mut out = vec![line];
        out.extend(self.answer());
        out
    }

    /// Answers, in request order, the produces whose flush ran and whose
    /// waiter is released, with the waiter's outcome.
    fn answer(&mut self) -> Vec<String> {
        let state = &mut self.state;
        let mut out = Vec::new();
        self.pending.retain(|p| {
            if p.flush {
                return true;
            }
            let outcome = match p.waiter {
                None => Some(Ok(())),
                Some(waiter) => state.take_outcome(waiter),
            };
            match outcome {
                None => true,
                Some(Ok(())) => {
                    out.push(format!("{} acked", p.reply));
                    false
                }
                Some(Err(error)) => {
                    out.push(format!("{} {:?}", p.reply, error.code()));
                    false
                }
            }
        });
        out
    }

    /// The waiters one call completed, by produce, in the order given.
    fn completed(&self, completed: &[Completion]) -> Vec<String> {
        if completed.is_empty() {
            return Vec::new();
        }
        let names: Vec<&str> = completed
            .iter()
            .map(|c| {
                self.pending
                    .iter()
                    .find(|p| p.waiter == Some(c.waiter))
                    .map_or("?", |p| p.reply.as_str())
            })
            .collect();
        vec![format!("completed {}", names.join(" "))]
    }

    fn isr(&self) -> String {
        let replicas = self.state.replicas();
        let mut line = format!(
            "isr {} pepoch {}",
            nodes(replicas.isr()),
            replicas.partition_epoch()
        );
        if let Some(pending) = replicas.pending() {
            line.push_str(&format!(" pending {}", proposal(pending)));
        }
        line
    }
}

fn nodes(nodes: &[NodeId]) -> String {
    let nodes: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
    nodes.join(",")
}

fn proposal(change: &IsrChange) -> String {
    format!(
        "propose isr={} on pepoch {}",
        nodes(&change.new_isr),
        change.partition_epoch
    )
}

fn check(script: &str) {
    let mut harness = Harness::new();
    let mut actual = Vec::new();
    let mut expected = Vec::new();
    for line in script.lines().map(str::trim).filter(|l| !l.is_empty()) {
        expected.push(line.to_owned());
        if let Some(event) = line.strip_prefix("> ") {
            actual.push(line.to_owned());
            actual.extend(harness.event(event));
        }
    }
    let (actual, expected) = (actual.join("\n"), expected.join("\n"));
    assert!(
        actual == expected,
        "transcript differs; actual:\n{actual}\n\nexpected:\n{expected}"
    );
}

/// acks=0 and acks=1 are answered after the append; acks=all waits for the
/// flush (`flush.before.ack`); other values are refused.
#[test]
fn acks_values() {
    check(
        "
        > produce #1 acks=0 records=2
        #1 base=0 end=2
        #1 acked
        > produce #2 acks=1 records=1
        #2 base=2 end=3
        #2 acked
        > produce #3 acks=-1 records=1
        #3 base=3 end=4 flush wait
        > state
        start=0 end=4 durable=0 hw=4 ack_end=0 waiting=1
        > flush
        durable 4 released 1
        #3 acked
        > produce #4 acks=2 records=1
        #4 InvalidRequiredAcks
        > produce #5 acks=-2 records=1
        #5 InvalidRequiredAcks
        > state
        start=0 end=4 durable=4 hw=4 ack_end=4 waiting=0
        ",
    );
}

/// Without `flush.before.ack` acks=all is answered at the high watermark,
/// which is the log end with one in-sync replica.
#[test]
fn acks_all_without_flush_before_ack() {
    check(
        "
        > config flush_before_ack=false
        > produce #1 acks=-1 records=3
        #1 base=0 end=3
        #1 acked
        > state
        start=0 end=3 durable=0 hw=3 ack_end=3 waiting=0
        ",
    );
}

/// `min.insync.replicas` above the in-sync replicas (this node alone)
/// refuses acks=all only, before anything is appended.
#[test]
fn min_insync_refusal() {
    check(
        "
        > config min_insync=2
        > produce #1 acks=-1 records=1
        #1 NotEnoughReplicas
        > produce #2 acks=1 records=1
        #2 base=0 end=1
        #2 acked
        > config min_insync=1
        > produce #3 acks=-1 records=1
        #3 base=1 end=2 flush wait
        > flush
        durable 2 released 1
        #3 acked
        ",
    );
}

/// A retried batch is answered with its first offset and not appended;
/// a gap in the sequences and an older producer epoch are refused.
#[test]
fn idempotent_duplicate_out_of_order_and_fenced() {
    check(
        "
        > produce #1 acks=1 records=2 producer=7/1/0
        #1 base=0 end=2
        #1 acked
        > produce #2 acks=1 records=3 producer=7/1/2
        #2 base=2 end=5
        #2 acked
        > produce #3 acks=1 records=2 producer=7/1/0
        #3 base=0 end=5
        #3 acked
        > produce #4 acks=1 records=1 producer=7/1/9
        #4 OutOfOrderSequenceNumber: producer 7: sequence 9 out of order, expected 5
        > produce #5 acks=1 records=1 producer=7/0/5
        #5 InvalidProducerEpoch: producer 7 epoch 0 is fenced by epoch 1
        > produce #6 acks=1 records=1 producer=8/0/3
        #6 OutOfOrderSequenceNumber: producer 8: sequence 3 out of order, expected 0
        > produce #7 acks=1 records=1 producer=7/2/0
        #7 base=5 end=6
        #7 acked
        > state
        start=0 end=6 durable=0 hw=6 ack_end=0 waiting=0
        ",
    );
}

/// A duplicate under acks=all still waits for the data to be durable.
#[test]
fn duplicate_with_acks_all_waits_for_durability() {
    check(
        "
        > produce #1 acks=1 records=2 producer=7/0/0
        #1 base=0 end=2
        #1 acked
        > produce #2 acks=-1 records=2 producer=7/0/0
        #2 base=0 end=2 flush wait
        > flush
        durable 2 released 1
        #2 acked
        > produce #3 acks=-1 records=2 producer=7/0/0
        #3 base=0 end=2
        #3 acked
        ",
    );
}

/// `flush.messages` makes the produce that reaches it flush before its
/// answer, whatever its acks; `flush.ms` is the timer's.
#[test]
fn flush_before_ack_by_flush_messages_and_flush_ms() {
    check(
        "
        > config flush_messages=3 flush_ms=100
        > flush timer
        no flush due
        > tick 10
        > produce #1 acks=1 records=2
        #1 base=0 end=2
        #1 acked
        > tick 50
        > flush timer
        no flush due
        > produce #2 acks=1 records=1
        #2 base=2 end=3 flush
        > flush timer
        flush due
        > flush
        durable 3 released 0
        #2 acked
        > flush timer
        no flush due
        > tick 60
        > produce #3 acks=0 records=1
        #3 base=3 end=4
        #3 acked
        > tick 159
        > flush timer
        no flush due
        > tick 160
        > flush timer
        flush due
        > written 4
        durable 4 released 0
        > flush timer
        no flush due
        ",
    );
}

/// The log writing out its buffer on its own (backpressure) moves the
/// durable end; the next append reports it, and a later `flush.messages`
/// count starts from it.
#[test]
fn durable_end_moves_with_writes_the_driver_did_not_ask_for() {
    check(
        "
        > config flush_messages=4
        > produce #1 acks=1 records=3
        #1 base=0 end=3
        #1 acked
        > written 3
        durable 3 released 0
        > produce #2 acks=1 records=3
        #2 base=3 end=6
        #2 acked
        > produce #3 acks=1 records=1
        #3 base=6 end=7 flush
        > flush
        durable 7 released 0
        #3 acked
        > state
        start=0 end=7 durable=7 hw=7 ack_end=7 waiting=0
        ",
    );
}

/// acks=all waiters are released in offset order, all those a durable-end
/// move covers at once; a partial write releases only those below it.
#[test]
fn waiters_released_in_offset_order() {
    check(
        "
        > produce #1 acks=-1 records=2
        #1 base=0 end=2 flush wait
        > produce #2 acks=1 records=1
        #2 base=2 end=3
        #2 acked
        > produce #3 acks=-1 records=2
        #3 base=3 end=5 flush wait
        > produce #4 acks=-1 records=1
        #4 base=5 end=6 flush wait
        > state
        start=0 end=6 durable=0 hw=6 ack_end=0 waiting=3
        > written 5
        durable 5 released 2
        > state
        start=0 end=6 durable=5 hw=6 ack_end=5 waiting=1
        > flush
        durable 6 released 1
        #1 acked
        #3 acked
        #4 acked
        > state
        start=0 end=6 durable=6 hw=6 ack_end=6 waiting=0
        ",
    );
}

/// Consumers read to the high watermark, replicas to the log end; the log
/// start follows retention.
#[test]
fn high_watermark_and_read_limits() {
    check(
        "
        > read
        read below 0
        > produce #1 acks=1 records=4
        #1 base=0 end=4
        #1 acked
        > read
        read below 4
        > read replica=2
        read below 4
        > retention 2
        > state
        start=2 end=4 durable=0 hw=4 ack_end=0 waiting=0
        ",
    );
}

/// A fetch's leader epoch: older is fenced, newer is unknown, equal or
/// absent passes.
#[test]
fn leader_epoch_fencing() {
    check(
        "
        > epoch 3
        epoch ok
        > epoch -
        epoch ok
        > epoch 2
        epoch FencedLeaderEpoch: leader epoch 2 is older than the partition's 3
        > epoch 4
        epoch UnknownLeaderEpoch: leader epoch 4 is newer than the partition's 3
        ",
    );
}

/// With three replicas the high watermark is the least log end over the
/// ISR (a follower that has not fetched holds it where it is); consumers
/// read below it, followers to the log end; acks=all completes when it
/// passes the batch. A fetch between the high watermark and the log end
/// is in range with nothing to read yet (issue 15: a consumer past a new
/// leader's lagging high watermark must not reset its position); only
/// outside the log is OFFSET_OUT_OF_RANGE.
#[test]
fn high_watermark_is_the_least_end_over_the_isr() {
    check(
        "
        > config flush_before_ack=false
        > leadership replicas=1,2,3 isr=1,2,3 epoch=4 pepoch=7
        isr 1,2,3 pepoch 7
        > epoch 4
        epoch ok
        > produce #1 acks=-1 records=5
        #1 base=0 end=5 wait
        > produce #2 acks=1 records=1
        #2 base=5 end=6
        #2 acked
        > read
        read below 0
        > fetch 2 offset=6
        hw 0
        > fetch 3 offset=3
        hw 3
        > read
        read below 3
        > fetch-at 2
        fetch at 2: reads below 3
        > fetch-at 4
        fetch at 4: nothing yet
        > fetch-at 6
        fetch at 6: nothing yet
        > fetch-at 7
        OffsetOutOfRange
        > fetch-at -1
        OffsetOutOfRange
        > read replica=2
        read below 6
        > fetch-at 4 replica=2
        fetch at 4: reads below 6
        > fetch 3 offset=6
        hw 6
        completed #1
        #1 acked
        > state
        start=0 end=6 durable=0 hw=6 ack_end=6 waiting=0
        ",
    );
}

/// With `flush.before.ack` a follower counts with its durable end, the
/// leader with its log end for the high watermark and its durable end for
/// the ack end: acks=all is acknowledged once durable on every ISR member.
#[test]
fn flush_before_ack_counts_durable_ends() {
    check(
        "
        > leadership replicas=1,2,3 isr=1,2,3 epoch=4 pepoch=7
        isr 1,2,3 pepoch 7
        > produce #1 acks=-1 records=4
        #1 base=0 end=4 flush wait
        > flush
        durable 4 released 0
        > fetch 2 offset=4 durable=2
        hw 0
        > fetch 3 offset=4 durable=4
        hw 2
        > read
        read below 2
        > fetch 2 offset=4
        hw 2
        > fetch 2 offset=4 durable=4
        hw 4
        completed #1
        #1 acked
        > produce #2 acks=-1 records=2
        #2 base=4 end=6 flush wait
        > fetch 2 offset=6 durable=6
        hw 4
        > fetch 3 offset=6 durable=6
        hw 6
        > state
        start=0 end=6 durable=4 hw=6 ack_end=4 waiting=1
        > flush
        durable 6 released 1
        #2 acked
        ",
    );
}

/// A follower in the ISR that has not caught up for more than
/// `replica_lag_time_max_ms` (100 here) is proposed out, once, and stays
/// in (holding the high watermark) until the committed image says
/// otherwise; a follower at the leader's log end is in sync; a rejected
/// proposal may be made again; a stale image is ignored.
#[test]
fn lagging_follower_is_shrunk_once_and_only_when_committed() {
    check(
        "
        > config flush_before_ack=false
        > leadership replicas=1,2,3 isr=1,2,3 epoch=4 pepoch=7
        isr 1,2,3 pepoch 7
        > produce #1 acks=1 records=2
        #1 base=0 end=2
        #1 acked
        > tick 50
        > fetch 2 offset=2
        hw 0
        > tick 100
        > timer
        no isr change
        > tick 101
        > timer
        propose isr=1,2 on pepoch 7
        > timer
        no isr change
        > isr
        isr 1,2,3 pepoch 7 pending propose isr=1,2 on pepoch 7
        > read
        read below 0
        > rejected 6
        > timer
        no isr change
        > rejected 7
        > timer
        propose isr=1,2 on pepoch 7
        > leadership replicas=1,2,3 isr=1,2,3 epoch=4 pepoch=6
        isr 1,2,3 pepoch 7 pending propose isr=1,2 on pepoch 7
        > leadership replicas=1,2,3 isr=1,2 epoch=4 pepoch=8
        isr 1,2 pepoch 8
        > read
        read below 2
        > tick 500
        > timer
        no isr change
        ",
    );
}

/// Under steady produce a follower one fetch behind is caught up as of
/// its previous fetch (Kafka's rule) and stays in the ISR; one that stops
/// fetching is shrunk a lag period after it last caught up.
#[test]
fn follower_one_fetch_behind_stays_in_sync() {
    check(
        "
        > config flush_before_ack=false
        > leadership replicas=1,2 isr=1,2 epoch=4 pepoch=7
        isr 1,2 pepoch 7
        > produce #1 acks=1 records=1
        #1 base=0 end=1
        #1 acked
        > tick 60
        > fetch 2 offset=0
        hw 0
        > produce #2 acks=1 records=1
        #2 base=1 end=2
        #2 acked
        > tick 120
        > fetch 2 offset=1
        hw 1
        > produce #3 acks=1 records=1
        #3 base=2 end=3
        #3 acked
        > tick 180
        > fetch 2 offset=2
        hw 2
        > produce #4 acks=1 records=1
        #4 base=3 end=4
        #4 acked
        > tick 220
        > timer
        no isr change
        > tick 221
        > timer
        propose isr=1 on pepoch 7
        ",
    );
}

/// A follower outside the ISR whose end reaches the high watermark is
/// proposed in, once; the high watermark waits for it while the proposal
/// is pending (the maximal ISR).
#[test]
fn caught_up_follower_is_expanded() {
    check(
        "
        > config flush_before_ack=false
        > leadership replicas=1,2,3 isr=1,2 epoch=4 pepoch=7
        isr 1,2 pepoch 7
        > produce #1 acks=1 records=3
        #1 base=0 end=3
        #1 acked
        > fetch 2 offset=3
        hw 3
        > fetch 3 offset=1
        hw 3
        > fetch 3 offset=3
        hw 3
        propose isr=1,2,3 on pepoch 7
        > fetch 3 offset=3
        hw 3
        > produce #2 acks=-1 records=1
        #2 base=3 end=4 wait
        > fetch 2 offset=4
        hw 3
        > fetch 3 offset=4
        hw 4
        completed #2
        #2 acked
        > leadership replicas=1,2,3 isr=1,2,3 epoch=4 pepoch=8
        isr 1,2,3 pepoch 8
        ",
    );
}

/// `min.insync.replicas` = 2 with the leader alone in the ISR refuses
/// acks=all before the append, until the expansion is committed.
#[test]
fn min_insync_refusal_with_the_leader_alone_in_the_isr() {
    check(
        "
        > config min_insync=2
        > leadership replicas=1,2 isr=1 epoch=4 pepoch=7
        isr 1 pepoch 7
        > produce #1 acks=-1 records=1
        #1 NotEnoughReplicas
        > produce #2 acks=1 records=1
        #2 base=0 end=1
        #2 acked
        > fetch 2 offset=1 durable=1
        hw 1
        propose isr=1,2 on pepoch 7
        > produce #3 acks=-1 records=1
        #3 NotEnoughReplicas
        > leadership replicas=1,2 isr=1,2 epoch=4 pepoch=8
        isr 1,2 pepoch 8
        > produce #4 acks=-1 records=1
        #4 base=1 end=2 flush wait
        > flush
        durable 2 released 0
        > fetch 2 offset=2 durable=2
        hw 2
        completed #4
        #4 acked
        ",
    );
}

/// A committed shrink below `min.insync.replicas` while acks=all waits:
/// the high watermark moves to the leader's end and the waiters fail with
/// NOT_ENOUGH_REPLICAS_AFTER_APPEND (their records are in the log, not
/// acknowledged); an acks=all produce is refused before the append once
/// the followers lag past the lag time, even before the shrink commits.
#[test]
fn shrink_while_waiting_fails_after_append() {
    check(
        "
        > config min_insync=2 flush_before_ack=false
        > leadership replicas=1,2,3 isr=1,2,3 epoch=4 pepoch=7
        isr 1,2,3 pepoch 7
        > produce #1 acks=-1 records=2
        #1 base=0 end=2 wait
        > fetch 2 offset=2
        hw 0
        > fetch 3 offset=2
        hw 2
        completed #1
        #1 acked
        > produce #2 acks=-1 records=1
        #2 base=2 end=3 wait
        > tick 101
        > timer
        propose isr=1 on pepoch 7
        > produce #3 acks=-1 records=1
        #3 NotEnoughReplicas
        > leadership replicas=1,2,3 isr=1 epoch=4 pepoch=8
        completed #2
        isr 1 pepoch 8
        #2 NotEnoughReplicasAfterAppend
        > state
        start=0 end=3 durable=0 hw=3 ack_end=3 waiting=0
        > produce #4 acks=-1 records=1
        #4 NotEnoughReplicas
        ",
    );
}

/// Waiters complete in offset order, all those one high-watermark move
/// passes in one batch.
#[test]
fn waiters_complete_in_one_batch_per_high_watermark_move() {
    check(
        "
        > config flush_before_ack=false
        > leadership replicas=1,2 isr=1,2 epoch=4 pepoch=7
        isr 1,2 pepoch 7
        > produce #1 acks=-1 records=2
        #1 base=0 end=2 wait
        > produce #2 acks=1 records=1
        #2 base=2 end=3
        #2 acked
        > produce #3 acks=-1 records=1
        #3 base=3 end=4 wait
        > produce #4 acks=-1 records=2
        #4 base=4 end=6 wait
        > fetch 2 offset=1
        hw 1
        > fetch 2 offset=4
        hw 4
        completed #1 #3
        #1 acked
        #3 acked
        > fetch 2 offset=6
        hw 6
        completed #4
        #4 acked
        ",
    );
}

/// The high watermark never goes back: not when a follower fetches an
/// older offset (it restarted or truncated), not when a new leader epoch
/// forgets the followers' progress.
#[test]
fn high_watermark_never_goes_back() {
    check(
        "
        > config flush_before_ack=false
        > leadership replicas=1,2,3 isr=1,2,3 epoch=4 pepoch=7
        isr 1,2,3 pepoch 7
        > produce #1 acks=1 records=5
        #1 base=0 end=5
        #1 acked
        > fetch 2 offset=5
        hw 0
        > fetch 3 offset=4
        hw 4
        > fetch 3 offset=1
        hw 4
        > fetch 3 offset=5
        hw 5
        > leadership replicas=1,2,3 isr=1,2,3 epoch=5 pepoch=8
        isr 1,2,3 pepoch 8
        > read
        read below 5
        > epoch 4
        epoch FencedLeaderEpoch: leader epoch 4 is older than the partition's 5
        ",
    );
}

/// A fetch from a node that is not a follower (not a replica, or the
/// leader itself) is refused and recorded nowhere, as are impossible
/// positions; an invalid leadership changes nothing.
#[test]
fn non_followers_and_impossible_positions_are_refused() {
    check(
        "
        > config flush_before_ack=false
        > leadership replicas=1,2 isr=1,2 epoch=4 pepoch=7
        isr 1,2 pepoch 7
        > produce #1 acks=1 records=2
        #1 base=0 end=2
        #1 acked
        > fetch 4 offset=2
        fetch NotLeaderOrFollower: node 4 is not a follower of this partition
        > fetch 1 offset=2
        fetch NotLeaderOrFollower: node 1 is not a follower of this partition
        > fetch 2 offset=3
        fetch OffsetOutOfRange: follower 2 fetches at 3, past the log end 2
        > fetch 2 offset=1 durable=2
        fetch InvalidRequest: follower 2 reports durable end 2 past its fetch offset 1
        > read
        read below 0
        > leadership replicas=1,2 isr=2 epoch=5 pepoch=8
        leadership InvalidRequest: leader 1 is not in the ISR [NodeId(2)] or not in the replicas [NodeId(1), NodeId(2)]
        > leadership replicas=1,2 isr=1,3 epoch=5 pepoch=8
        leadership InvalidRequest: ISR [NodeId(1), NodeId(3)] is not a duplicate-free subset of replicas [NodeId(1), NodeId(2)]
        > isr
        isr 1,2 pepoch 7
        ",
    );
}

/// A follower joins the ISR only once it has the start of the current
/// leader epoch, even when the high watermark is below it (a re-elected
/// leader whose high watermark lags its log end).
#[test]
fn expansion_waits_for_the_start_of_the_leader_epoch() {
    check(
        "
        > config flush_before_ack=false
        > leadership replicas=1,2,3 isr=1,2 epoch=4 pepoch=7
        isr 1,2 pepoch 7
        > produce #1 acks=1 records=3
        #1 base=0 end=3
        #1 acked
        > leadership replicas=1,2,3 isr=1,2 epoch=5 pepoch=8
        isr 1,2 pepoch 8
        > read
        read below 0
        > fetch 3 offset=0
        hw 0
        > fetch 3 offset=2
        hw 0
        > fetch 3 offset=3
        hw 0
        propose isr=1,2,3 on pepoch 8
        ",
    );
}

/// A leader that loses its leadership fails its acks=all waiters and
/// refuses produces; as follower it appends the leader's batches with
/// their epochs, learns the leader's high watermark (capped by its log
/// end), truncates a divergent tail; becoming leader again it records its
/// epoch at its log end, which `OffsetForLeaderEpoch` answers.
#[test]
fn leader_to_follower_and_back() {
    check(
        "
        > leadership replicas=1,2 isr=1,2 epoch=3 pepoch=0
        isr 1,2 pepoch 0
        > produce #1 acks=-1 records=5
        #1 base=0 end=5 flush wait
        > flush
        durable 5 released 0
        > epochs
        epochs 3@0 (to write)
        > follow leader=2 epoch=4
        completed #1
        role Follower { leader: Some(NodeId(2)) }
        #1 NotLeaderOrFollower
        > produce #2 acks=1 records=1
        #2 NotLeaderOrFollower
        > truncate 3
        end 3 hw 0
        > replicate epoch=4 records=4
        end 7 new epoch
        > replicate epoch=4 records=1
        end 8
        > leader-hw 20
        hw 8
        > epochs
        epochs 3@0 4@3 (to write)
        > follow leader=2 epoch=2
        role Follower { leader: Some(NodeId(2)) }
        > leadership replicas=1,2 isr=1 epoch=6 pepoch=3
        isr 1 pepoch 3
        > epochs
        epochs 3@0 4@3 6@8 (to write)
        > epoch-end 3
        epoch 3 ends at 3
        > epoch-end 5
        epoch 4 ends at 8
        > epoch-end 6
        epoch 6 ends at 8
        > epoch-end 7
        undefined
        > produce #3 acks=1 records=2
        #3 base=8 end=10
        #3 acked
        > state
        start=0 end=10 durable=3 hw=10 ack_end=3 waiting=0
        ",
    );
}

/// Simulation seed 34: a replica opened with records does not count them
/// committed. Its high watermark starts at the log start; a leader alone in
/// its ISR moves it to the log end at once, a leader with followers only as
/// they fetch.
#[test]
fn an_opened_replica_counts_nothing_committed_until_its_leadership_says() {
    let opened = Opened {
        leader_epoch: LeaderEpoch(1),
        log_start: Offset(2),
        log_end: Offset(10),
        durable_end: Offset(10),
    };
    let producers = || ProducerStates::new(ProducerStateConfig::default());
    let leadership = |isr: &[u32]| Leadership {
        leader: NodeId(1),
        replicas: vec![NodeId(1), NodeId(2), NodeId(3)],
        isr: isr.iter().copied().map(NodeId).collect(),
        leader_epoch: LeaderEpoch(1),
        partition_epoch: 4,
    };
    let mut alone = PartitionState::new(opened, policy(), producers());
    assert_eq!(alone.high_watermark(), Offset(2));
    alone.apply_leadership(&leadership(&[1]), 0).unwrap();
    assert_eq!(alone.high_watermark(), Offset(10));

    let mut led = PartitionState::new(opened, policy(), producers());
    led.apply_leadership(&leadership(&[1, 2]), 0).unwrap();
    assert_eq!(
        led.high_watermark(),
        Offset(2),
        "the follower has not fetched"
    );
    led.follower_fetched(NodeId(2), Offset(7), Some(Offset(7)), 1)
        .unwrap();
    assert_eq!(led.high_watermark(), Offset(7));

    let mut follower = PartitionState::new(opened, policy(), producers());
    follower.become_follower(Some(NodeId(2)), LeaderEpoch(2));
    assert_eq!(follower.high_watermark(), Offset(2));
}

/// After a restart the high watermark starts from the log start and only
/// what the role says moves it — at once to the log end for a leader
/// alone in its ISR; with followers, once they report their ends; as a
/// follower, from its leader's answers. A replica elected before its
/// followers fetched must not let consumers read what they may lack
/// (issue 15's simulation); consumers past the high watermark wait.
#[test]
fn opened_high_watermark_is_forgotten_at_the_first_role() {
    check(
        "
        > config flush_before_ack=false
        > open 5
        > state
        start=0 end=5 durable=5 hw=0 ack_end=0 waiting=0
        > leadership replicas=1,2,3 isr=1,2,3 epoch=4 pepoch=7
        isr 1,2,3 pepoch 7
        > state
        start=0 end=5 durable=5 hw=0 ack_end=0 waiting=0
        > fetch-at 3
        fetch at 3: nothing yet
        > fetch 2 offset=5
        hw 0
        > fetch 3 offset=4
        hw 4
        > open 5
        > leadership replicas=1 isr=1 epoch=5 pepoch=8
        isr 1 pepoch 8
        > state
        start=0 end=5 durable=5 hw=5 ack_end=5 waiting=0
        > open 5
        > follow leader=2 epoch=6
        role Follower { leader: Some(NodeId(2)) }
        > state
        start=0 end=5 durable=5 hw=0 ack_end=0 waiting=0
        > leader-hw 3
        hw 3
        > state
        start=0 end=5 durable=5 hw=3 ack_end=3 waiting=0
        ",
    );
}

/// Kafka's ListOffsets rule: a leader whose high watermark has not reached
/// the start of its epoch answers OFFSET_NOT_AVAILABLE (retriable), not a
/// LATEST lower than one the previous leader gave. The reopened replica's
/// high watermark starts at its log start; the new epoch starts at its log
/// end; the followers' fetches bring the one past the other.
#[test]
fn a_leader_lists_offsets_only_once_its_high_watermark_reaches_its_epoch() {
    check(
        "
        > config flush_before_ack=false
        > open 5
        > leadership replicas=1,2,3 isr=1,2,3 epoch=4 pepoch=7
        isr 1,2,3 pepoch 7
        > list-offsets
        OffsetNotAvailable: the high watermark 0 has not reached the start 5 of this leader's epoch yet; retry
        > fetch 2 offset=5
        hw 0
        > list-offsets
        OffsetNotAvailable: the high watermark 0 has not reached the start 5 of this leader's epoch yet; retry
        > fetch 3 offset=5
        hw 5
        > list-offsets
        latest 5
        > open 5
        > leadership replicas=1 isr=1 epoch=5 pepoch=8
        isr 1 pepoch 8
        > list-offsets
        latest 5
        ",
    );
}
