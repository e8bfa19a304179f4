//! Tests of the leader-epoch cache. The truncation tests are transcripts of
//! the whole KIP-279 exchange between a follower and a leader (both
//! caches, no I/O): each `ask` line is the follower's `OffsetForLeaderEpoch`
//! and the leader's answer, each `truncate` line the follower's decision,
//! the last line the follower's log after it. A property test then checks
//! the exchange against the ground truth on random leader-change histories.

use proptest::prelude::*;

use super::*;

/// Parses `"0@0 2@40 end=90 hw=10"`: entries `epoch@start`, the log end,
/// the high watermark (default 0).
fn replica(spec: &str) -> (LeaderEpochCache, Offset, Offset) {
    let mut cache = LeaderEpochCache::new();
    let (mut end, mut hw) = (Offset(0), Offset(0));
    for word in spec.split_whitespace() {
        if let Some(v) = word.strip_prefix("end=") {
            end = Offset(v.parse().unwrap());
        } else if let Some(v) = word.strip_prefix("hw=") {
            hw = Offset(v.parse().unwrap());
        } else {
            let (e, s) = word.split_once('@').unwrap();
            assert!(cache.assign(LeaderEpoch(e.parse().unwrap()), Offset(s.parse().unwrap())));
        }
    }
    (cache, end, hw)
}

fn show(cache: &LeaderEpochCache, end: Offset) -> String {
    let mut out: Vec<String> = cache
        .entries()
        .iter()
        .map(|e| format!("{}@{}", e.epoch, e.start_offset))
        .collect();
    out.push(format!("end={end}"));
    out.join(" ")
}

/// Runs the follower's truncation against the leader, applying each
/// truncation to `follower`; returns the transcript.
fn exchange(
    leader: &(LeaderEpochCache, Offset),
    follower: &mut (LeaderEpochCache, Offset, Offset),
) -> String {
    let mut out = Vec::new();
    let (cache, end, hw) = follower;
    let mut step = first_truncation_step(FollowerLog {
        cache,
        log_end: *end,
        high_watermark: *hw,
    });
    for _ in 0..64 {
        let truncate = |to: Offset, cache: &mut LeaderEpochCache, end: &mut Offset| {
            cache.truncate_from_end(to);
            *end = (*end).min(to);
        };
        let asked = match step {
            TruncationStep::Ask(epoch) => epoch,
            TruncationStep::AskAgain { truncate_to, epoch } => {
                out.push(format!("truncate to {truncate_to}, ask again"));
                truncate(truncate_to, cache, end);
                epoch
            }
            TruncationStep::TruncateTo(to) => {
                out.push(format!("truncate to {to}"));
                truncate(to, cache, end);
                out.push(format!("follower {}", show(cache, *end)));
                return out.join("\n");
            }
        };
        let answer = leader.0.end_offset_for(asked, leader.1);
        out.push(match answer {
            Some(a) => format!("ask {asked} -> {} end {}", a.epoch, a.end_offset),
            None => format!("ask {asked} -> undefined"),
        });
        let log = FollowerLog {
            cache,
            log_end: *end,
            high_watermark: *hw,
        };
        step = truncation_step(log, asked, answer).unwrap();
    }
    panic!("no end after 64 rounds:\n{}", out.join("\n"));
}

#[track_caller]
fn check(leader: &str, follower: &str, expected: &str) {
    let (lc, le, _) = replica(leader);
    let mut f = replica(follower);
    let actual = exchange(&(lc, le), &mut f);
    assert_eq!(actual, expected.trim(), "\nactual transcript:\n{actual}\n");
}

#[test]
fn same_latest_epoch_truncates_to_the_smaller_end() {
    // The follower is behind in the leader's current epoch: nothing to cut.
    check(
        "0@0 3@50 end=120",
        "0@0 3@50 end=90",
        "
ask 3 -> 3 end 120
truncate to 90
follower 0@0 3@50 end=90",
    );
    // The follower wrote past the end the leader kept in the epoch
    // (the old leader's unreplicated tail; the leader moved on to 4).
    check(
        "0@0 3@50 4@80 end=120",
        "0@0 3@50 end=95",
        "
ask 3 -> 3 end 80
truncate to 80
follower 0@0 3@50 end=80",
    );
}

#[test]
fn a_divergent_tail_after_an_unclean_leader_change_takes_two_rounds() {
    // The follower led epoch 2 from 40 and wrote to 70, unreplicated; an
    // unclean election made the other replica leader of 3 at 40 and then
    // of 4. The follower never saw 3: the leader answers 1 for its 2, the
    // follower ends 1 at 40, truncates there and asks for 1.
    check(
        "0@0 1@20 3@40 4@60 end=100",
        "0@0 1@20 2@40 end=70",
        "
ask 2 -> 1 end 40
truncate to 40
follower 0@0 1@20 end=40",
    );
    // The leader's answered epoch is one the follower lacks: KIP-279's
    // second round. Follower epochs 1, 3 (its own, unreplicated, 30..);
    // leader epochs 1, 2 (30..45), 5.
    check(
        "0@0 1@10 2@30 5@45 end=80",
        "0@0 1@10 3@30 end=60",
        "
ask 3 -> 2 end 45
truncate to 30, ask again
ask 1 -> 1 end 30
truncate to 30
follower 0@0 1@10 end=30",
    );
}

#[test]
fn a_leader_without_the_epoch_answers_from_its_older_history() {
    // Retention deleted the leader's early epochs: it answers the
    // requested epoch with its first start, and the follower truncates
    // there.
    check(
        "4@100 6@150 end=200",
        "0@0 2@60 end=130",
        "
ask 2 -> 2 end 100
truncate to 100
follower 0@0 2@60 end=100",
    );
}

#[test]
fn a_follower_ahead_in_an_epoch_the_leader_never_saw_falls_back_to_its_high_watermark() {
    // The leader's cache ends before the follower's latest epoch (it never
    // recorded its own epoch): Kafka's undefined answer, truncate to the
    // high watermark.
    check(
        "0@0 2@30 end=50",
        "0@0 2@30 5@45 end=70 hw=40",
        "
ask 5 -> undefined
truncate to 40
follower 0@0 2@30 end=40",
    );
    // A leader that recorded its new epoch 6 (as a new leader does): it
    // never had 5, so it answers its floor 2, ending where 6 starts; the
    // follower's 2 ends earlier, where its own 5 starts.
    check(
        "0@0 2@30 6@50 end=60",
        "0@0 2@30 5@45 end=70 hw=40",
        "
ask 5 -> 2 end 50
truncate to 45
follower 0@0 2@30 end=45",
    );
}

#[test]
fn empty_logs() {
    check("end=0", "end=0", "truncate to 0\nfollower end=0");
    check(
        "end=0",
        "0@0 end=30 hw=10",
        "
ask 0 -> undefined
truncate to 10
follower 0@0 end=10",
    );
    check("0@0 end=30", "end=0 hw=0", "truncate to 0\nfollower end=0");
}

#[test]
fn an_answer_newer_than_the_question_is_refused() {
    let (cache, end, hw) = replica("0@0 2@10 end=20");
    let log = FollowerLog {
        cache: &cache,
        log_end: end,
        high_watermark: hw,
    };
    let answer = EpochEndOffset {
        epoch: LeaderEpoch(3),
        end_offset: Offset(15),
    };
    assert_eq!(
        truncation_step(log, LeaderEpoch(2), Some(answer)),
        Err(TruncationError::AnswerNewerThanAsked {
            asked: LeaderEpoch(2),
            answered: LeaderEpoch(3)
        })
    );
}

#[test]
fn end_offset_for_follows_kafka() {
    let (cache, _, _) = replica("2@10 4@30 7@50");
    let end = |e| {
        cache
            .end_offset_for(LeaderEpoch(e), Offset(90))
            .map(|a| (a.epoch.get(), a.end_offset.get()))
    };
    assert_eq!(end(7), Some((7, 90)), "latest: the log end");
    assert_eq!(end(4), Some((4, 50)));
    assert_eq!(end(5), Some((4, 50)), "floor epoch, next start");
    assert_eq!(end(6), Some((4, 50)));
    assert_eq!(end(2), Some((2, 30)));
    assert_eq!(end(3), Some((2, 30)));
    assert_eq!(
        end(0),
        Some((0, 10)),
        "older than all: requested, first start"
    );
    assert_eq!(end(8), None, "newer than the latest");
    assert_eq!(
        LeaderEpochCache::new().end_offset_for(LeaderEpoch(0), Offset(0)),
        None
    );
}

#[test]
fn assign_keeps_epochs_and_starts_increasing() {
    let mut cache = LeaderEpochCache::new();
    assert!(cache.assign(LeaderEpoch(1), Offset(0)));
    assert!(
        !cache.assign(LeaderEpoch(1), Offset(5)),
        "same epoch, later batch"
    );
    assert!(cache.assign(LeaderEpoch(3), Offset(10)));
    assert!(!cache.assign(LeaderEpoch(3), Offset(10)));
    assert_eq!(show(&cache, Offset(0)), "1@0 3@10 end=0");
    // The same epoch at an earlier start: the entry moves back.
    assert!(cache.assign(LeaderEpoch(3), Offset(8)));
    assert_eq!(show(&cache, Offset(0)), "1@0 3@8 end=0");
    // An older epoch written at 9: entries from 3 up no longer describe
    // the log.
    assert!(cache.assign(LeaderEpoch(2), Offset(9)));
    assert_eq!(show(&cache, Offset(0)), "1@0 2@9 end=0");
    // A newer epoch starting before the latest's start replaces it.
    assert!(cache.assign(LeaderEpoch(4), Offset(5)));
    assert_eq!(show(&cache, Offset(0)), "1@0 4@5 end=0");
    assert_eq!(
        cache.latest(),
        Some(EpochEntry {
            epoch: LeaderEpoch(4),
            start_offset: Offset(5)
        })
    );
}

#[test]
fn truncations_cut_either_end() {
    let (mut cache, _, _) = replica("1@0 3@10 5@20 6@30");
    cache.truncate_from_end(Offset(21));
    assert_eq!(show(&cache, Offset(21)), "1@0 3@10 5@20 end=21");
    cache.truncate_from_end(Offset(20));
    assert_eq!(show(&cache, Offset(20)), "1@0 3@10 end=20");
    let (mut cache, _, _) = replica("1@0 3@10 5@20 6@30");
    cache.truncate_from_start(Offset(5));
    assert_eq!(show(&cache, Offset(0)), "1@5 3@10 5@20 6@30 end=0");
    cache.truncate_from_start(Offset(20));
    assert_eq!(show(&cache, Offset(0)), "5@20 6@30 end=0");
    cache.truncate_from_start(Offset(45));
    assert_eq!(show(&cache, Offset(0)), "6@45 end=0");
    let (mut cache, _, _) = replica("3@10 5@20");
    cache.truncate_from_start(Offset(4));
    assert_eq!(
        show(&cache, Offset(0)),
        "3@10 5@20 end=0",
        "before the first: kept"
    );
    let (mut cache, _, _) = replica("1@0 3@10 5@20 6@30");
    cache.clamp_to_log(Offset(12), Offset(25));
    assert_eq!(show(&cache, Offset(25)), "3@12 5@20 end=25");
}

#[test]
fn rebuild_from_batches_keeps_each_epochs_first_batch() {
    let cache = LeaderEpochCache::rebuild_from_batches(
        [(0, 0), (3, 0), (7, 2), (9, 2), (12, 5)].map(|(o, e)| (Offset(o), LeaderEpoch(e))),
    );
    assert_eq!(show(&cache, Offset(0)), "0@0 2@7 5@12 end=0");
    assert!(LeaderEpochCache::rebuild_from_batches([]).is_empty());
}

#[test]
fn checkpoint_encoding_is_kafkas_text_format() {
    let (cache, _, _) = replica("0@0 2@40 5@75");
    let bytes = cache.encode();
    assert_eq!(bytes, b"0\n3\n0 0\n2 40\n5 75\n");
    assert_eq!(LeaderEpochCache::decode(&bytes), Ok(cache));
    assert_eq!(
        LeaderEpochCache::decode(b"0\n0\n"),
        Ok(LeaderEpochCache::new())
    );
    let bad = |text: &[u8]| LeaderEpochCache::decode(text).unwrap_err();
    assert_eq!(bad(b"1\n0\n"), CheckpointError::Version(1));
    assert_eq!(
        bad(b"0\n2\n1 0\n"),
        CheckpointError::Count {
            expected: 2,
            found: 1
        }
    );
    assert_eq!(
        bad(b"0\n1\n1 0\n2 5\n"),
        CheckpointError::Count {
            expected: 1,
            found: 2
        }
    );
    assert_eq!(
        bad(b"0\n2\n2 0\n1 5\n"),
        CheckpointError::NotIncreasing { line: 4 }
    );
    assert_eq!(
        bad(b"0\n2\n1 5\n2 5\n"),
        CheckpointError::NotIncreasing { line: 4 }
    );
    assert!(matches!(
        bad(b"0\n1\n-1 0\n"),
        CheckpointError::BadLine { line: 3, .. }
    ));
    assert!(matches!(
        bad(b"0\n1\n1 0 7\n"),
        CheckpointError::BadLine { line: 3, .. }
    ));
    assert!(matches!(
        bad(b"0\n1\n1  0\n"),
        CheckpointError::BadLine { line: 3, .. }
    ));
    assert!(matches!(bad(b"0\n1\n1 0"), CheckpointError::BadLine { .. }));
    assert!(matches!(bad(b""), CheckpointError::BadLine { line: 1, .. }));
    assert_eq!(bad(&[0xc3, 0x28]), CheckpointError::NotText);
}

/// Two replicas through random leader changes, each record's epoch kept
/// per offset as the ground truth.
#[derive(Clone, Debug, Default)]
struct Replica {
    records: Vec<u32>,
    cache: LeaderEpochCache,
}

impl Replica {
    fn end(&self) -> Offset {
        Offset(self.records.len() as u64)
    }

    fn truncate(&mut self, to: usize) {
        self.records.truncate(to);
        self.cache.truncate_from_end(Offset(to as u64));
    }

    fn append(&mut self, epoch: u32, count: usize) {
        for _ in 0..count {
            self.cache.assign(LeaderEpoch(epoch), self.end());
            self.records.push(epoch);
        }
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

proptest! {
    #[test]
    fn decoding_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = LeaderEpochCache::decode(&bytes);
    }

    #[test]
    fn decoding_checkpoint_like_text_never_panics(text in "[0-9 \n-]{0,48}") {
        if let Ok(cache) = LeaderEpochCache::decode(text.as_bytes()) {
            prop_assert_eq!(LeaderEpochCache::decode(&cache.encode()), Ok(cache));
        }
    }

    /// Each epoch has one leader, which appends; the other replica
    /// (sometimes) first copies a prefix of the leader's log after their
    /// common prefix, as a fetcher would, or misses it (an unclean or
    /// unreplicated tail). At the end replica 0 leads a new epoch (and
    /// records it, as a new leader does), replica 1 runs the exchange: it
    /// must end exactly at the two logs' common prefix.
    #[test]
    fn the_exchange_truncates_to_the_common_prefix(
        history in proptest::collection::vec((any::<bool>(), 0usize..4, 0usize..6), 1..12),
    ) {
        let mut replicas = [Replica::default(), Replica::default()];
        for (epoch, &(leader_is_1, copied, appended)) in history.iter().enumerate() {
            let (l, f) = if leader_is_1 { (1, 0) } else { (0, 1) };
            let epoch = epoch as u32 + 1;
            let lcp = common_prefix(&replicas[l].records, &replicas[f].records);
            if copied > 0 {
                let upto = (lcp + copied).min(replicas[l].records.len());
                replicas[f].truncate(lcp);
                let copy: Vec<u32> = replicas[l].records[lcp..upto].to_vec();
                for e in copy {
                    replicas[f].append(e, 1);
                }
            }
            let end = replicas[l].end();
            replicas[l].cache.assign(LeaderEpoch(epoch), end);
            replicas[l].append(epoch, appended);
        }
        let last = history.len() as u32 + 1;
        let end = replicas[0].end();
        replicas[0].cache.assign(LeaderEpoch(last), end);
        let expected = common_prefix(&replicas[0].records, &replicas[1].records);
        let leader = (replicas[0].cache.clone(), replicas[0].end());
        let follower = &replicas[1];
        let mut state = (follower.cache.clone(), follower.end(), Offset(0));
        let transcript = exchange(&leader, &mut state);
        prop_assert_eq!(
            state.1,
            Offset(expected as u64),
            "leader {:?}\nfollower {:?}\n{}",
            replicas[0].records,
            replicas[1].records,
            transcript
        );
        prop_assert_eq!(
            &state.0,
            &LeaderEpochCache::rebuild_from_batches(
                replicas[1].records[..expected]
                    .iter()
                    .enumerate()
                    .map(|(o, &e)| (Offset(o as u64), LeaderEpoch(e)))
            )
        );
    }
}
