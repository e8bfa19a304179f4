//! Transcript tests of the fetcher core: a simulated driver runs the
//! core's steps against an in-memory follower log (`MemLog`) and a
//! simulated leader, with a simulated clock. Each `expect` runs the core
//! until it sends a request or waits, and compares what it did, one line
//! per step:
//! - `position T-P`, `truncate T-P to O`, `append T-P [B-L@E ..] hw=H
//!   start=S`, `flush T-P`: local operations (run at once on the follower
//!   log; a failure injected with `fail_next` is shown as `-> ERROR`);
//! - `fetch T-P@E from O [durable=D], ..`: the fetch request sent;
//! - `epochs T-P@E ask A, ..`: the `OffsetForLeaderEpoch` request sent;
//! - `wait [until MS]`.
//!
//! The leader answers with `leader` (from its log), or the test injects
//! an error per partition (`fetch_error`, `epochs_error`) or fails the
//! whole request (`fail`).

use std::collections::BTreeMap;

use fjord_schema::{ErrorCode, LeaderEpoch, NodeId, PartitionId};

use super::*;
use crate::replication::testing::{MemBatch, MemLog};
use crate::replication::wire::{EpochAnswer, ReplicaFetchResult};

const LEADER: NodeId = NodeId(2);

fn config() -> ReplicaFetcherConfig {
    ReplicaFetcherConfig {
        backoff_ms: 1_000,
        backoff_max_ms: 4_000,
        ..ReplicaFetcherConfig::default()
    }
}

struct Harness {
    fetcher: Fetcher,
    follower: BTreeMap<Key, MemLog>,
    leader: BTreeMap<Key, MemLog>,
    sent: Option<Step>,
    fail_next: Option<FollowerError>,
    /// Fails the next flush, leaving the log unsynced (a full disk).
    fail_flush: Option<FollowerError>,
}

fn key(name: &str) -> Key {
    let (topic, partition) = name.rsplit_once('-').expect("topic-partition");
    (
        topic.to_string(),
        PartitionId(partition.parse().expect("index")),
    )
}

fn show(key: &Key) -> String {
    format!("{}-{}", key.0, key.1)
}

fn show_batches(batches: &[Bytes]) -> String {
    let names: Vec<String> = batches
        .iter()
        .map(|b| {
            let b = MemBatch::parse(b).expect("a test batch");
            format!("{}-{}@{}", b.base, b.last, b.epoch)
        })
        .collect();
    format!("[{}]", names.join(" "))
}

impl Harness {
    fn new() -> Harness {
        Harness {
            fetcher: Fetcher::new(NodeId(1), LEADER, config()),
            follower: BTreeMap::new(),
            leader: BTreeMap::new(),
            sent: None,
            fail_next: None,
            fail_flush: None,
        }
    }

    /// Partition `name` on both sides.
    fn logs(&mut self, name: &str, follower: MemLog, leader: MemLog) {
        self.follower.insert(key(name), follower);
        self.leader.insert(key(name), leader);
    }

    fn follow(&mut self, entries: &[(&str, u32)]) {
        let followed: Vec<Followed> = entries
            .iter()
            .map(|(name, epoch)| {
                let (topic, partition) = key(name);
                Followed {
                    topic,
                    partition,
                    leader: LEADER,
                    leader_epoch: LeaderEpoch(*epoch),
                }
            })
            .collect();
        self.fetcher.set_followed(&followed);
    }

    fn run_op(&mut self, now: u64, op: &LocalOp) -> String {
        let key = op.key().clone();
        let log = self.follower.get_mut(&key).expect("a follower log");
        let (line, result) = match op {
            LocalOp::Position { .. } => (format!("position {}", show(&key)), Ok(log.position())),
            LocalOp::Truncate { end, .. } => (
                format!("truncate {} to {end}", show(&key)),
                Ok(log.truncate(end.get())),
            ),
            LocalOp::Append {
                batches,
                high_watermark,
                log_start,
                ..
            } => (
                format!(
                    "append {} {} hw={high_watermark} start={log_start}",
                    show(&key),
                    show_batches(batches)
                ),
                if self.fail_next.is_some() {
                    Ok(log.position())
                } else {
                    log.append(batches, high_watermark.get(), log_start.get())
                },
            ),
            LocalOp::Flush { .. } => match self.fail_flush.take() {
                Some(error) => (format!("flush {}", show(&key)), Err(error)),
                None => (format!("flush {}", show(&key)), Ok(log.flush())),
            },
        };
        let result = match self.fail_next.take() {
            Some(error) => Err(error),
            None => result,
        };
        let line = match &result {
            Ok(_) => line,
            Err(error) => format!("{line} -> {error:?}"),
        };
        self.fetcher.local_done(now, &key, op.epoch(), result);
        line
    }

    /// Runs the core at `now` until it sends or waits.
    fn run(&mut self, now: u64) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let step = self.fetcher.next_step(now);
            match &step {
                Step::Local(ops) => {
                    for op in ops {
                        let line = self.run_op(now, op);
                        lines.push(line);
                    }
                    continue;
                }
                Step::Fetch(request) => {
                    let parts: Vec<String> = request
                        .topics
                        .iter()
                        .flat_map(|(t, parts)| {
                            parts.iter().map(move |p| {
                                let durable = p
                                    .durable_end
                                    .map(|d| format!(" durable={d}"))
                                    .unwrap_or_default();
                                format!(
                                    "{t}-{}@{} from {}{durable}",
                                    p.partition, p.current_leader_epoch, p.fetch_offset
                                )
                            })
                        })
                        .collect();
                    lines.push(format!("fetch {}", parts.join(", ")));
                }
                Step::Epochs(request) => {
                    let parts: Vec<String> = request
                        .topics
                        .iter()
                        .flat_map(|(t, parts)| {
                            parts.iter().map(move |p| {
                                format!(
                                    "{t}-{}@{} ask {}",
                                    p.partition, p.current_leader_epoch, p.leader_epoch
                                )
                            })
                        })
                        .collect();
                    lines.push(format!("epochs {}", parts.join(", ")));
                }
                Step::Wait { until_ms: None } => lines.push("wait".to_string()),
                Step::Wait { until_ms: Some(ms) } => lines.push(format!("wait until {ms}")),
            }
            self.sent = Some(step);
            return lines;
        }
    }

    fn expect(&mut self, now: u64, expected: &str) {
        let actual = self.run(now);
        let expected: Vec<&str> = expected
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(
            actual,
            expected,
            "\nactual transcript at {now}:\n{}\n",
            actual.join("\n")
        );
    }

    /// The leader answers the request sent, from its logs, with `errors`
    /// instead for the partitions named.
    fn answer(&mut self, now: u64, errors: &[(&str, ErrorCode)]) {
        let errors: BTreeMap<Key, ErrorCode> = errors.iter().map(|(n, e)| (key(n), *e)).collect();
        match self.sent.take() {
            Some(Step::Fetch(request)) => {
                let topics = request
                    .topics
                    .iter()
                    .map(|(topic, parts)| {
                        let results = parts
                            .iter()
                            .map(|p| {
                                let k = (topic.clone(), p.partition);
                                let log = &self.leader[&k];
                                let read = match errors.get(&k) {
                                    Some(e) => Err(*e),
                                    None => log.read(p.fetch_offset.get()),
                                };
                                match read {
                                    Ok((hw, start, batches)) => ReplicaFetchResult {
                                        partition: p.partition,
                                        error: ErrorCode::None,
                                        high_watermark: hw as i64,
                                        log_start_offset: start as i64,
                                        batches,
                                    },
                                    Err(error) => ReplicaFetchResult {
                                        partition: p.partition,
                                        error,
                                        high_watermark: -1,
                                        log_start_offset: log.log_start as i64,
                                        batches: vec![],
                                    },
                                }
                            })
                            .collect();
                        (topic.clone(), results)
                    })
                    .collect();
                self.fetcher.fetched(now, ReplicaFetchResponse { topics });
            }
            Some(Step::Epochs(request)) => {
                let topics = request
                    .topics
                    .iter()
                    .map(|(topic, parts)| {
                        let answers = parts
                            .iter()
                            .map(|p| {
                                let k = (topic.clone(), p.partition);
                                let (error, (leader_epoch, end_offset)) = match errors.get(&k) {
                                    Some(e) => (*e, (-1, -1)),
                                    None => (
                                        ErrorCode::None,
                                        self.leader[&k].epoch_end(p.leader_epoch.get()),
                                    ),
                                };
                                EpochAnswer {
                                    partition: p.partition,
                                    error,
                                    leader_epoch,
                                    end_offset,
                                }
                            })
                            .collect();
                        (topic.clone(), answers)
                    })
                    .collect();
                self.fetcher.epochs_answered(now, EpochsResponse { topics });
            }
            other => panic!("nothing in flight to answer: {other:?}"),
        }
    }

    fn fail(&mut self, now: u64) {
        assert!(matches!(
            self.sent.take(),
            Some(Step::Fetch(_) | Step::Epochs(_))
        ));
        self.fetcher.request_failed(now);
    }

    fn follower_log(&self, name: &str) -> String {
        self.follower[&key(name)].describe()
    }

    fn leader_log(&mut self, name: &str) -> &mut MemLog {
        self.leader.get_mut(&key(name)).expect("a leader log")
    }
}

/// A follower that shares a prefix with the leader but wrote a divergent
/// tail at an epoch the leader never saw: it asks, the leader answers an
/// epoch the follower never saw, so it truncates and asks again for its
/// older epoch, then fetches the leader's batches, which continue its log
/// exactly.
#[test]
fn divergent_tail_is_found_in_two_rounds_and_replaced() {
    let mut h = Harness::new();
    // Follower: epoch 1 wrote 0-4, epoch 3 wrote 5-9 and 10-11 (never
    // replicated). Leader: epoch 1 wrote 0-4, epoch 2 wrote 5-7, epoch 4
    // wrote 8-9.
    h.logs(
        "t-0",
        MemLog::with(&[(0, 4, 1), (5, 9, 3), (10, 11, 3)]),
        MemLog::with(&[(0, 4, 1), (5, 7, 2), (8, 9, 4)]),
    );
    h.leader_log("t-0").high_watermark = 10;
    h.follow(&[("t-0", 4)]);
    h.expect(
        0,
        "position t-0
         epochs t-0@4 ask 3",
    );
    // The leader's floor of 3 is 2, ending at 8; the follower has no
    // epoch 2: its floor (1) ends at 5, it cuts there and asks for 1.
    h.answer(0, &[]);
    h.expect(
        0,
        "truncate t-0 to 5
         epochs t-0@4 ask 1",
    );
    h.answer(0, &[]);
    // Epoch 1 ends at 5 on both: nothing more to cut.
    h.expect(0, "fetch t-0@4 from 5");
    h.answer(0, &[]);
    h.expect(
        0,
        "append t-0 [5-7@2 8-9@4] hw=10 start=0
         fetch t-0@4 from 10",
    );
    assert_eq!(
        h.follower_log("t-0"),
        "[0-4@1 5-7@2 8-9@4] start=0 end=10 durable=5 hw=10"
    );
    // Caught up: the next fetch gets nothing new, and the core keeps
    // long-polling without a local operation.
    h.answer(10, &[]);
    h.expect(10, "fetch t-0@4 from 10");
    // New data on the leader continues the offsets.
    let next = MemBatch {
        base: 10,
        last: 14,
        epoch: 4,
    }
    .bytes();
    h.leader_log("t-0").append(&[next], 10, 0).expect("appends");
    h.answer(20, &[]);
    h.expect(
        20,
        "append t-0 [10-14@4] hw=10 start=0
         fetch t-0@4 from 15",
    );
}

/// A follower whose tail is at the leader's current epoch but longer than
/// the leader's: one round, truncated to the leader's end of that epoch.
#[test]
fn longer_tail_at_same_epoch_is_cut_to_the_leaders_end() {
    let mut h = Harness::new();
    h.logs(
        "t-0",
        MemLog::with(&[(0, 4, 1), (5, 9, 1)]),
        MemLog::with(&[(0, 4, 1), (5, 6, 2)]),
    );
    h.follow(&[("t-0", 2)]);
    h.expect(0, "position t-0\nepochs t-0@2 ask 1");
    h.answer(0, &[]);
    h.expect(0, "truncate t-0 to 5\nfetch t-0@2 from 5");
}

/// An empty follower (no epochs) truncates to its high watermark (a
/// no-op here) and fetches from the start.
#[test]
fn empty_follower_fetches_from_zero_without_asking() {
    let mut h = Harness::new();
    h.logs("t-0", MemLog::default(), MemLog::with(&[(0, 2, 1)]));
    h.follow(&[("t-0", 1)]);
    h.expect(0, "position t-0\nfetch t-0@1 from 0");
    h.answer(0, &[]);
    h.expect(0, "append t-0 [0-2@1] hw=0 start=0\nfetch t-0@1 from 3");
}

/// Flush before ack: the fetch reports the durable end, and only after
/// the flush of what the previous response appended.
#[test]
fn durable_end_is_reported_only_after_a_flush() {
    let mut h = Harness::new();
    let follower = MemLog {
        flush_before_ack: true,
        ..MemLog::default()
    };
    h.logs("t-0", follower, MemLog::with(&[(0, 2, 1), (3, 4, 1)]));
    h.follow(&[("t-0", 1)]);
    h.expect(0, "position t-0\nfetch t-0@1 from 0 durable=0");
    h.answer(0, &[]);
    h.expect(
        0,
        "append t-0 [0-2@1 3-4@1] hw=0 start=0
         flush t-0
         fetch t-0@1 from 5 durable=5",
    );
    // Nothing new: no flush, the same durable end.
    h.answer(0, &[]);
    h.expect(0, "fetch t-0@1 from 5 durable=5");
}

/// A flush that failed (a full disk) leaves appended records unsynced:
/// after the pause the follower reads its position again and flushes
/// before fetching, instead of reporting its old durable end until the
/// leader sends something new, which may be never (a leader whose ISR is
/// below min.insync.replicas takes no acks=all produce, and waits for this
/// follower's durable end to let it back in).
#[test]
fn a_failed_flush_is_retried_before_the_next_fetch() {
    let mut h = Harness::new();
    let follower = MemLog {
        flush_before_ack: true,
        ..MemLog::default()
    };
    h.logs("t-0", follower, MemLog::with(&[(0, 2, 1), (3, 4, 1)]));
    h.follow(&[("t-0", 1)]);
    h.expect(0, "position t-0\nfetch t-0@1 from 0 durable=0");
    h.fail_flush = Some(FollowerError::Storage("disk full".to_string()));
    h.answer(0, &[]);
    h.expect(
        0,
        "append t-0 [0-2@1 3-4@1] hw=0 start=0
         flush t-0 -> Storage(\"disk full\")
         wait until 1000",
    );
    h.expect(1000, "position t-0\nepochs t-0@1 ask 1");
    h.answer(1000, &[]);
    h.expect(
        1000,
        "flush t-0
         fetch t-0@1 from 5 durable=5",
    );
}

/// A fenced partition is dropped until its followed entry changes; the
/// others keep fetching. The new epoch starts it over.
#[test]
fn fenced_partition_is_dropped_until_its_epoch_changes() {
    let mut h = Harness::new();
    h.logs("t-0", MemLog::default(), MemLog::default());
    h.logs("t-1", MemLog::default(), MemLog::default());
    h.follow(&[("t-0", 1), ("t-1", 1)]);
    h.expect(
        0,
        "position t-0
         position t-1
         fetch t-0@1 from 0, t-1@1 from 0",
    );
    h.answer(0, &[("t-0", ErrorCode::FencedLeaderEpoch)]);
    h.expect(0, "fetch t-1@1 from 0");
    h.answer(0, &[]);
    // The same entry again changes nothing.
    h.follow(&[("t-0", 1), ("t-1", 1)]);
    h.expect(0, "fetch t-1@1 from 0");
    h.answer(0, &[]);
    h.follow(&[("t-0", 2), ("t-1", 1)]);
    h.expect(0, "position t-0\nfetch t-0@2 from 0, t-1@1 from 0");
}

/// Fenced as the only partition: the fetcher waits for a change of the
/// followed set, with no timer.
#[test]
fn a_fetcher_with_only_dropped_partitions_waits_without_a_timer() {
    let mut h = Harness::new();
    h.logs("t-0", MemLog::default(), MemLog::default());
    h.follow(&[("t-0", 1)]);
    h.expect(0, "position t-0\nfetch t-0@1 from 0");
    h.answer(0, &[("t-0", ErrorCode::FencedLeaderEpoch)]);
    h.expect(0, "wait");
}

/// The leader has not applied the image yet (an unknown epoch, not the
/// leader, an unknown topic): back off `backoff_ms`, then fetch again.
#[test]
fn leader_behind_errors_back_off_and_retry() {
    for error in [
        ErrorCode::UnknownLeaderEpoch,
        ErrorCode::NotLeaderOrFollower,
        ErrorCode::UnknownTopicOrPartition,
        ErrorCode::KafkaStorageError,
    ] {
        let mut h = Harness::new();
        h.logs("t-0", MemLog::default(), MemLog::default());
        h.follow(&[("t-0", 1)]);
        h.expect(100, "position t-0\nfetch t-0@1 from 0");
        h.answer(100, &[("t-0", error)]);
        h.expect(100, "wait until 1100");
        h.expect(1099, "wait until 1100");
        h.expect(1100, "fetch t-0@1 from 0");
    }
}

/// An epochs answer with an error retries the same question after the
/// pause.
#[test]
fn epochs_error_backs_off_and_asks_again() {
    let mut h = Harness::new();
    h.logs(
        "t-0",
        MemLog::with(&[(0, 4, 1)]),
        MemLog::with(&[(0, 4, 1)]),
    );
    h.follow(&[("t-0", 2)]);
    h.expect(0, "position t-0\nepochs t-0@2 ask 1");
    h.answer(0, &[("t-0", ErrorCode::UnknownLeaderEpoch)]);
    h.expect(0, "wait until 1000");
    h.expect(1000, "epochs t-0@2 ask 1");
    h.answer(1000, &[]);
    h.expect(1000, "fetch t-0@2 from 5");
}

/// Out of range with the leader's log start past the follower's end:
/// the log restarts at the leader's start.
#[test]
fn out_of_range_behind_the_leaders_start_restarts_the_log_there() {
    let mut h = Harness::new();
    h.logs(
        "t-0",
        MemLog::with(&[(0, 4, 1)]),
        MemLog::with(&[(20, 24, 1)]),
    );
    h.follow(&[("t-0", 1)]);
    h.expect(0, "position t-0\nepochs t-0@1 ask 1");
    h.answer(0, &[]);
    // Epoch 1 is the leader's latest: it ends at the leader's end (25),
    // past the follower's end: nothing to cut, fetch from 5.
    h.expect(0, "fetch t-0@1 from 5");
    h.answer(0, &[]);
    h.expect(0, "truncate t-0 to 20\nfetch t-0@1 from 20");
    h.answer(0, &[]);
    h.expect(0, "append t-0 [20-24@1] hw=0 start=20\nfetch t-0@1 from 25");
    assert_eq!(
        h.follower_log("t-0"),
        "[20-24@1] start=20 end=25 durable=20 hw=0"
    );
}

/// Out of range with the follower ahead of the leader: find the
/// divergence point again; a second time in a row, pause first.
#[test]
fn out_of_range_ahead_of_the_leader_refinds_the_divergence_point() {
    let mut h = Harness::new();
    h.logs(
        "t-0",
        MemLog::with(&[(0, 9, 1)]),
        MemLog::with(&[(0, 9, 1)]),
    );
    h.follow(&[("t-0", 1)]);
    h.expect(0, "position t-0\nepochs t-0@1 ask 1");
    h.answer(0, &[]);
    h.expect(0, "fetch t-0@1 from 10");
    h.answer(0, &[("t-0", ErrorCode::OffsetOutOfRange)]);
    h.expect(0, "position t-0\nepochs t-0@1 ask 1");
    // Meanwhile the leader lost its tail (an unclean election elsewhere):
    // its epoch 1 now ends at 6.
    *h.leader_log("t-0") = MemLog::with(&[(0, 6, 1), (7, 7, 2)]);
    h.answer(0, &[]);
    h.expect(0, "truncate t-0 to 7\nfetch t-0@1 from 7");
    h.answer(0, &[("t-0", ErrorCode::OffsetOutOfRange)]);
    h.expect(0, "wait until 1000");
    h.expect(1000, "position t-0\nepochs t-0@1 ask 1");
}

/// A batch that does not continue the log (`Diverged`) starts the
/// divergence search again; a storage failure pauses, then re-reads the
/// position.
#[test]
fn local_failures_refind_or_back_off() {
    let mut h = Harness::new();
    h.logs("t-0", MemLog::default(), MemLog::with(&[(0, 2, 1)]));
    h.follow(&[("t-0", 1)]);
    h.expect(0, "position t-0\nfetch t-0@1 from 0");
    h.fail_next = Some(FollowerError::Diverged("crc".to_string()));
    h.answer(0, &[]);
    h.expect(
        0,
        "append t-0 [0-2@1] hw=0 start=0 -> Diverged(\"crc\")
         position t-0
         fetch t-0@1 from 0",
    );
    h.fail_next = Some(FollowerError::Storage("disk full".to_string()));
    h.answer(0, &[]);
    h.expect(
        0,
        "append t-0 [0-2@1] hw=0 start=0 -> Storage(\"disk full\")
         wait until 1000",
    );
    h.expect(1000, "position t-0\nfetch t-0@1 from 0");
    h.fail_next = Some(FollowerError::NotFollowing {
        topic: "t".to_string(),
        partition: PartitionId(0),
        leader_epoch: LeaderEpoch(1),
    });
    h.answer(1000, &[]);
    h.expect(
        1000,
        "append t-0 [0-2@1] hw=0 start=0 -> NotFollowing { topic: \"t\", partition: PartitionId(0), leader_epoch: LeaderEpoch(1) }
         wait",
    );
}

/// Failed requests pause the whole fetcher, doubling up to the maximum;
/// an answer resets it.
#[test]
fn network_failures_back_off_exponentially_and_bounded() {
    let mut h = Harness::new();
    h.logs("t-0", MemLog::default(), MemLog::default());
    h.follow(&[("t-0", 1)]);
    h.expect(0, "position t-0\nfetch t-0@1 from 0");
    h.fail(0);
    h.expect(0, "wait until 1000");
    h.expect(1000, "fetch t-0@1 from 0");
    h.fail(1000);
    h.expect(1000, "wait until 3000");
    h.expect(3000, "fetch t-0@1 from 0");
    h.fail(3000);
    h.expect(3000, "wait until 7000");
    h.expect(7000, "fetch t-0@1 from 0");
    h.fail(7000);
    h.expect(7000, "wait until 11000");
    h.expect(11000, "fetch t-0@1 from 0");
    h.answer(11000, &[]);
    h.expect(11000, "fetch t-0@1 from 0");
    h.fail(11000);
    h.expect(11000, "wait until 12000");
}

/// A failed epochs request asks the same again after the pause.
#[test]
fn failed_epochs_request_is_asked_again() {
    let mut h = Harness::new();
    h.logs(
        "t-0",
        MemLog::with(&[(0, 4, 1)]),
        MemLog::with(&[(0, 4, 1)]),
    );
    h.follow(&[("t-0", 1)]);
    h.expect(0, "position t-0\nepochs t-0@1 ask 1");
    h.fail(0);
    h.expect(0, "wait until 1000");
    h.expect(1000, "epochs t-0@1 ask 1");
}

/// Partitions added and removed while a fetch is in flight: the answer
/// for a removed one is ignored, one re-added at a new epoch starts over,
/// a new one is read and fetched with the next request.
#[test]
fn followed_set_changes_while_a_request_is_in_flight() {
    let mut h = Harness::new();
    h.logs("t-0", MemLog::default(), MemLog::with(&[(0, 1, 1)]));
    h.logs("t-1", MemLog::default(), MemLog::with(&[(0, 1, 1)]));
    h.logs("u-0", MemLog::default(), MemLog::with(&[(0, 1, 1)]));
    h.follow(&[("t-0", 1), ("t-1", 1)]);
    h.expect(
        0,
        "position t-0\nposition t-1\nfetch t-0@1 from 0, t-1@1 from 0",
    );
    assert!(h.fetcher.in_flight());
    // While the long-poll waits: t-1 goes (it became leader here), t-0
    // moves to epoch 2, u-0 is new.
    h.follow(&[("t-0", 2), ("u-0", 1)]);
    h.answer(0, &[]);
    h.expect(
        0,
        "position t-0
         position u-0
         fetch t-0@2 from 0, u-0@1 from 0",
    );
    assert_eq!(h.follower_log("t-1"), "[] start=0 end=0 durable=0 hw=0");
    assert_eq!(h.follower_log("t-0"), "[] start=0 end=0 durable=0 hw=0");
    // Everything removed: empty, and the answer in flight is ignored.
    h.follow(&[]);
    assert!(h.fetcher.is_empty());
    h.answer(0, &[]);
    h.expect(0, "wait");
}

/// Partitions of another leader are not this fetcher's.
#[test]
fn entries_of_other_leaders_are_ignored() {
    let mut h = Harness::new();
    h.fetcher.set_followed(&[Followed {
        topic: "t".to_string(),
        partition: PartitionId(0),
        leader: NodeId(3),
        leader_epoch: LeaderEpoch(1),
    }]);
    assert!(h.fetcher.is_empty());
    h.expect(0, "wait");
}

/// A response with only a new high watermark is handed to the log
/// (followers learn the HW); one with nothing new is not.
#[test]
fn a_moved_high_watermark_alone_is_taken() {
    let mut h = Harness::new();
    h.logs("t-0", MemLog::default(), MemLog::with(&[(0, 2, 1)]));
    h.follow(&[("t-0", 1)]);
    h.expect(0, "position t-0\nfetch t-0@1 from 0");
    h.answer(0, &[]);
    h.expect(0, "append t-0 [0-2@1] hw=0 start=0\nfetch t-0@1 from 3");
    h.leader_log("t-0").high_watermark = 3;
    h.answer(0, &[]);
    h.expect(0, "append t-0 [] hw=3 start=0\nfetch t-0@1 from 3");
    h.answer(0, &[]);
    h.expect(0, "fetch t-0@1 from 3");
    assert_eq!(
        h.follower_log("t-0"),
        "[0-2@1] start=0 end=3 durable=0 hw=3"
    );
}

/// A request in flight whose partitions are all gone or at a new epoch is
/// not wanted any more: the driver abandons it, and the core asks afresh
/// (an epochs question in flight is asked again). One still wanted keeps
/// it.
#[test]
fn a_request_no_longer_wanted_is_abandoned_and_asked_afresh() {
    let mut h = Harness::new();
    h.logs(
        "t-0",
        MemLog::with(&[(0, 4, 1)]),
        MemLog::with(&[(0, 4, 1)]),
    );
    h.logs("t-1", MemLog::default(), MemLog::default());
    h.follow(&[("t-0", 1), ("t-1", 1)]);
    h.expect(
        0,
        "position t-0
         position t-1
         epochs t-0@1 ask 1",
    );
    // t-1 moves on; t-0 is still wanted at its epoch.
    h.follow(&[("t-0", 1), ("t-1", 2)]);
    assert!(h.fetcher.in_flight_wanted());
    // Now t-0 moves too: nothing of the request is wanted.
    h.follow(&[("t-0", 2), ("t-1", 2)]);
    assert!(!h.fetcher.in_flight_wanted());
    h.fetcher.abandon();
    h.sent = None;
    assert!(!h.fetcher.in_flight());
    h.expect(
        0,
        "position t-0
         position t-1
         epochs t-0@2 ask 1",
    );
    // An epochs request abandoned with its partitions unchanged is asked
    // again.
    h.fetcher.abandon();
    h.sent = None;
    h.expect(0, "epochs t-0@2 ask 1");
    h.answer(0, &[]);
    h.expect(0, "fetch t-0@2 from 5, t-1@2 from 0");
}
