//! The group host against an in-memory [`GroupShard`]: what it writes to
//! the offsets log on a commit is what a new host replays, and a failed
//! write is the commit's error, without a shard service or real logs.

use std::cell::{Cell, OnceCell};

use fjord_schema::batch::assign_offset_and_epoch;
use fjord_schema::{LeaderEpoch, Offset};

use super::*;
use crate::group::coordinator::{CommitRequest, CommittedOffset};
use crate::group::TopicPartition;

/// One `__consumer_offsets` partition (0), hosted here, kept in memory.
#[derive(Debug, Default)]
struct MemoryShard {
    host: OnceCell<GroupHost>,
    batches: RefCell<Vec<Bytes>>,
    fail_appends: Cell<bool>,
}

fn next_offset(batch: &[u8]) -> i64 {
    let (view, _) = BatchView::parse(batch).expect("a batch the host wrote");
    view.header().next_offset().get() as i64
}

impl GroupShard for MemoryShard {
    fn group_host(&self) -> Option<&GroupHost> {
        self.host.get()
    }

    fn offsets_partition_count(&self) -> Option<u32> {
        Some(1)
    }

    fn hosted_offsets_partitions(&self) -> Vec<PartitionId> {
        vec![PartitionId(0)]
    }

    async fn offsets_log_start(&self, partition: PartitionId) -> Result<i64, ErrorCode> {
        assert_eq!(partition, PartitionId(0));
        Ok(0)
    }

    async fn read_offsets(
        &self,
        partition: PartitionId,
        offset: i64,
        _max_bytes: usize,
    ) -> Result<(Vec<Bytes>, i64), ErrorCode> {
        assert_eq!(partition, PartitionId(0));
        let batches = self.batches.borrow();
        let end = batches.last().map_or(0, |b| next_offset(b));
        let from = batches
            .iter()
            .filter(|b| next_offset(b) > offset)
            .cloned()
            .collect();
        Ok((from, end))
    }

    async fn append_offsets(
        &self,
        partition: PartitionId,
        batch: Bytes,
    ) -> Result<(), OffsetsWriteError> {
        assert_eq!(partition, PartitionId(0));
        if self.fail_appends.get() {
            return Err(OffsetsWriteError {
                code: ErrorCode::KafkaStorageError,
                message: Some("disk full".to_owned()),
            });
        }
        // As the log does: each batch gets the next offsets.
        let mut batches = self.batches.borrow_mut();
        let mut rest = &batch[..];
        while !rest.is_empty() {
            let (_, tail) = BatchView::parse(rest).expect("an encodable commit");
            let len = rest.len() - tail.len();
            let base = batches.last().map_or(0, |b| next_offset(b));
            let mut stored = rest[..len].to_vec();
            assign_offset_and_epoch(&mut stored, Offset(base as u64), LeaderEpoch(0));
            batches.push(Bytes::from(stored));
            rest = tail;
        }
        Ok(())
    }
}

fn shard() -> Rc<MemoryShard> {
    let shard = Rc::new(MemoryShard::default());
    let attached = shard
        .host
        .set(GroupHost::new(GroupConfig::default(), 8, 1))
        .is_ok();
    assert!(attached);
    shard
}

fn tp(partition: u32) -> TopicPartition {
    TopicPartition {
        topic: "events".to_owned(),
        partition,
    }
}

fn simple_commit(offsets: &[(u32, i64)]) -> GroupOp {
    GroupOp::Commit(CommitRequest {
        group_id: "g".to_owned(),
        generation_id: -1,
        member_id: String::new(),
        instance_id: None,
        offsets: offsets
            .iter()
            .map(|&(p, offset)| {
                let committed = CommittedOffset {
                    offset,
                    leader_epoch: -1,
                    metadata: String::new(),
                };
                (tp(p), committed)
            })
            .collect(),
    })
}

fn commit_results(reply: GroupReply) -> Vec<(TopicPartition, ErrorCode)> {
    match reply {
        GroupReply::Commit(results) => results,
        other => panic!("not a commit reply: {other:?}"),
    }
}

fn fetched(reply: GroupReply) -> Vec<(u32, i64)> {
    let GroupReply::Fetch(offsets) = reply else {
        panic!("not a fetch reply: {reply:?}");
    };
    offsets
        .into_iter()
        .filter_map(|(tp, o)| o.map(|o| (tp.partition, o.offset)))
        .collect()
}

fn fetch_all() -> GroupOp {
    GroupOp::Fetch {
        group_id: "g".to_owned(),
        partitions: None,
    }
}

#[test]
fn committed_offsets_are_written_and_replayed_and_a_failed_write_is_the_commits_error() {
    let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .make()
        .expect("executor");
    executor.run(async {
        let first = shard();
        let host = first.group_host().expect("attached");
        let results = commit_results(host.call(&first, simple_commit(&[(0, 5), (1, 7)])).await);
        assert_eq!(
            results,
            [(tp(0), ErrorCode::None), (tp(1), ErrorCode::None)]
        );
        assert_eq!(first.batches.borrow().len(), 1);
        assert_eq!(
            fetched(host.call(&first, fetch_all()).await),
            [(0, 5), (1, 7)]
        );

        // The write fails: the commit reports it and the offset stays.
        first.fail_appends.set(true);
        let results = commit_results(host.call(&first, simple_commit(&[(0, 9)])).await);
        assert_eq!(results, [(tp(0), ErrorCode::KafkaStorageError)]);
        assert_eq!(first.batches.borrow().len(), 1);
        first.fail_appends.set(false);
        let results = commit_results(host.call(&first, simple_commit(&[(1, 8)])).await);
        assert_eq!(results, [(tp(1), ErrorCode::None)]);
        assert_eq!(
            fetched(host.call(&first, fetch_all()).await),
            [(0, 5), (1, 8)]
        );

        // A new host over the same log loads the latest offset per key.
        let second = shard();
        *second.batches.borrow_mut() = first.batches.borrow().clone();
        let host = second.group_host().expect("attached");
        assert_eq!(host.replay(&second).await.expect("replay"), 3);
        assert_eq!(
            fetched(host.call(&second, fetch_all()).await),
            [(0, 5), (1, 8)]
        );

        // Stopping: no new request is parked.
        host.stop();
        let reply = host.call(&second, simple_commit(&[(0, 1)])).await;
        let GroupReply::Unavailable(e) = reply else {
            panic!("not refused: {reply:?}");
        };
        assert_eq!(e, GroupUnavailable::BrokerStopping);
        assert_eq!(e.code(), ErrorCode::CoordinatorNotAvailable);
    });
}
