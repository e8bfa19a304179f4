//! Property test: the partition log against an in-memory model, through
//! random sequences of append, flush, read, lookups, truncate, roll,
//! retention, close and reopen, on a real ext4 directory.

mod common;

use std::rc::Rc;

use bytes::Bytes;
use common::*;
use fjord_schema::{BatchView, Offset};
use fjord_storage::{LogConfig, ManualClock, ReadRequest};
use proptest::prelude::*;
use proptest::sample::Index;

#[derive(Clone, Debug)]
enum Op {
    Append {
        records: usize,
        value_len: usize,
        ts: i64,
    },
    Flush,
    Read {
        at: Index,
        max_bytes: usize,
        until: Index,
    },
    Lookup {
        at: Index,
        delta: i64,
    },
    Truncate {
        at: Index,
        below_start: bool,
    },
    Roll,
    Retention {
        advance_ms: i64,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1usize..6, 0usize..3000, 0i64..10_000)
            .prop_map(|(records, value_len, ts)| Op::Append { records, value_len, ts }),
        2 => Just(Op::Flush),
        4 => (any::<Index>(), 1usize..40_000, any::<Index>())
            .prop_map(|(at, max_bytes, until)| Op::Read { at, max_bytes, until }),
        2 => (any::<Index>(), -1i64..2).prop_map(|(at, delta)| Op::Lookup { at, delta }),
        1 => (any::<Index>(), proptest::bool::weighted(0.1))
            .prop_map(|(at, below_start)| Op::Truncate { at, below_start }),
        1 => Just(Op::Roll),
        1 => (0i64..8_000).prop_map(|advance_ms| Op::Retention { advance_ms }),
        1 => Just(Op::Reopen),
    ]
}

/// The model: the batches of the log, in order, and where it starts.
struct Model {
    start: Offset,
    batches: Vec<Bytes>,
}

impl Model {
    fn end(&self) -> Offset {
        self.batches.last().map_or(self.start, |b| next_of(b))
    }
    fn base(batch: &[u8]) -> Offset {
        BatchView::parse_header(batch)
            .expect("header")
            .base_offset()
    }
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 48 << 10,
        segment_age_ms_max: Some(20_000),
        retention_ms: Some(30_000),
        retention_bytes: None,
        index_interval_bytes: 1024,
        batch_bytes_max: 16 << 10,
        write_buffer_bytes: 32 << 10,
        prepare_step_bytes: 16 << 10,
        prepare_ahead_bytes: 32 << 10,
        read_chunk_bytes: 8 << 10,
        ..LogConfig::default()
    }
}

fn check(ops: Vec<Op>) {
    let dir = temp_dir();
    run(async move {
        let clock = Rc::new(ManualClock::new(1_000_000));
        let mut log = open(dir.path(), config(), cache(24 << 10), clock.clone())
            .await
            .expect("open");
        let mut model = Model {
            start: Offset(0),
            batches: Vec::new(),
        };
        for op in ops {
            match op {
                Op::Append {
                    records,
                    value_len,
                    ts,
                } => {
                    let batch = batch_with(log.log_end(), records, value_len, 1_000_000 + ts);
                    let info = log.append(batch.clone()).await.expect("append");
                    assert_eq!(info.base_offset, model.end());
                    model.batches.push(batch);
                }
                Op::Flush => {
                    let durable = log.flush().await.expect("flush");
                    assert_eq!(durable, model.end());
                }
                Op::Read {
                    at,
                    max_bytes,
                    until,
                } => {
                    let span = model.end().get() - model.start.get() + 1;
                    let offset = Offset(model.start.get() + at.index(span as usize) as u64);
                    let until = Offset(offset.get() + until.index(span as usize) as u64);
                    let got = log
                        .read(ReadRequest {
                            offset,
                            until,
                            max_bytes,
                        })
                        .await
                        .expect("read");
                    let first = model.batches.iter().position(|b| next_of(b) > offset);
                    match first {
                        Some(i) if offset < until => {
                            assert!(!got.is_empty(), "read at {offset:?} returned nothing");
                            let total: usize = got.iter().map(|b| b.len()).sum();
                            assert!(got.len() == 1 || total <= max_bytes, "budget");
                            for (k, batch) in got.iter().enumerate() {
                                assert_eq!(
                                    batch,
                                    &model.batches[i + k],
                                    "batch {k} of read at {offset:?}"
                                );
                                assert!(Model::base(batch) < until);
                            }
                        }
                        _ => assert!(got.is_empty()),
                    }
                }
                Op::Lookup { at, delta } => {
                    if model.batches.is_empty() {
                        continue;
                    }
                    let batch = &model.batches[at.index(model.batches.len())];
                    let target = BatchView::parse_header(batch)
                        .expect("h")
                        .first_timestamp
                        .get()
                        + delta;
                    let expected = model.batches.iter().find_map(|b| {
                        let (view, _) = BatchView::parse(b).expect("valid");
                        if view.header().max_timestamp.get() < target {
                            return None;
                        }
                        let mut scratch = Vec::new();
                        let records = view.records(&mut scratch, 1 << 20).expect("records");
                        let offset = records
                            .iter()
                            .find(|r| r.timestamp >= target)
                            .map(|r| r.offset);
                        offset
                    });
                    assert_eq!(
                        log.offset_for_timestamp(target).await.expect("lookup"),
                        expected
                    );
                }
                Op::Truncate { at, below_start } => {
                    let span = model.end().get() - model.start.get() + 1;
                    let offset = if below_start && model.start.get() > 0 {
                        Offset(model.start.get() - 1)
                    } else {
                        Offset(model.start.get() + at.index(span as usize) as u64)
                    };
                    log.truncate(offset).await.expect("truncate");
                    if offset < model.start {
                        model.start = offset;
                        model.batches.clear();
                    } else {
                        model.batches.retain(|b| next_of(b) <= offset);
                    }
                    assert_eq!(log.log_end(), model.end());
                    assert_eq!(log.durable_end(), model.end());
                }
                Op::Roll => log.roll().await.expect("roll"),
                Op::Retention { advance_ms } => {
                    clock.advance(advance_ms);
                    log.apply_retention().await.expect("retention");
                    let start = log.log_start();
                    assert!(start >= model.start);
                    let horizon = fjord_storage::Clock::now_ms(&*clock) - 30_000;
                    while model.start < start {
                        let batch = model.batches.remove(0);
                        let max_ts = BatchView::parse_header(&batch)
                            .expect("h")
                            .max_timestamp
                            .get();
                        assert!(
                            max_ts < horizon,
                            "retention removed a batch newer than retention.ms"
                        );
                        model.start = next_of(&batch);
                    }
                    assert_eq!(model.start, start, "retention cut at a batch boundary");
                }
                Op::Reopen => {
                    log.close().await.expect("close");
                    log = open(dir.path(), config(), cache(24 << 10), clock.clone())
                        .await
                        .expect("reopen");
                    assert_eq!(log.log_start(), model.start);
                    assert_eq!(log.log_end(), model.end());
                }
            }
            assert_eq!(log.log_end(), model.end());
            assert_eq!(log.log_start(), model.start);
        }
        // Everything reads back, cold, after a final reopen.
        log.close().await.expect("close");
        let log = open(dir.path(), config(), cache(1024), clock.clone())
            .await
            .expect("reopen");
        let all = read_all(&log, model.start, model.end())
            .await
            .expect("read all");
        assert_eq!(all, model.batches);
        log.close().await.expect("close");
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(ops in proptest::collection::vec(op(), 1..80)) {
        check(ops);
    }
}
