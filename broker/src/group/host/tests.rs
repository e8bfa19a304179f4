//! The group host against in-memory [`GroupShard`]s: what it writes to
//! the offsets log on a commit is what a host replays when it becomes the
//! partition's leader, a failed write is the commit's error as Kafka maps
//! it, and leadership changes load and unload a partition's groups —
//! without a shard service or real logs.
//!
//! Two nodes' shards may share one [`MemoryLog`] per offsets partition:
//! replication as the host sees it (whatever one leader appended, the next
//! one replays).

use std::cell::{Cell, OnceCell};
use std::collections::BTreeMap;

use fjord_schema::batch::assign_offset_and_epoch;
use fjord_schema::Offset;
use glommio::sync::Semaphore;

use super::*;
use crate::group::coordinator::{CommitRequest, CommittedOffset, JoinRequest, Protocol};
use crate::group::TopicPartition;

/// Partitions of `__consumer_offsets` in these tests.
const PARTITIONS: u32 = 2;

/// One offsets partition's log, kept in memory.
#[derive(Debug, Default)]
struct MemoryLog {
    batches: RefCell<Vec<Bytes>>,
}

impl MemoryLog {
    fn end(&self) -> i64 {
        self.batches.borrow().last().map_or(0, |b| next_offset(b))
    }
}

fn next_offset(batch: &[u8]) -> i64 {
    let (view, _) = BatchView::parse(batch).expect("a batch the host wrote");
    view.header().next_offset().get() as i64
}

/// One shard: its host, the offsets partitions its catalog has it lead,
/// and their logs (shared with other nodes' shards).
#[derive(Debug)]
struct MemoryShard {
    host: OnceCell<GroupHost>,
    logs: BTreeMap<PartitionId, Rc<MemoryLog>>,
    /// What the shard's catalog says this shard leads.
    led: RefCell<BTreeMap<PartitionId, LeaderEpoch>>,
    /// The next appends fail with this code.
    fail_appends: Cell<Option<ErrorCode>>,
    /// Reads fail with KAFKA_STORAGE_ERROR while set.
    fail_reads: Cell<bool>,
    /// While set, appends wait for a permit of `gate` before landing.
    hold_appends: Cell<bool>,
    /// While set, reads wait for a permit of `gate`.
    hold_reads: Cell<bool>,
    gate: Semaphore,
}

impl MemoryShard {
    fn log(&self, partition: PartitionId) -> &MemoryLog {
        self.logs.get(&partition).expect("an offsets partition")
    }
}

impl GroupShard for MemoryShard {
    fn group_host(&self) -> Option<&GroupHost> {
        self.host.get()
    }

    fn offsets_partition_count(&self) -> Option<u32> {
        Some(PARTITIONS)
    }

    fn led_offsets_partitions(&self) -> Vec<(PartitionId, LeaderEpoch)> {
        self.led.borrow().iter().map(|(p, e)| (*p, *e)).collect()
    }

    async fn offsets_log_bounds(&self, partition: PartitionId) -> Result<(i64, i64), ErrorCode> {
        Ok((0, self.log(partition).end()))
    }

    async fn read_offsets(
        &self,
        partition: PartitionId,
        offset: i64,
        _max_bytes: usize,
    ) -> Result<Vec<Bytes>, ErrorCode> {
        if self.hold_reads.get() {
            self.gate.acquire(1).await.expect("gate open");
        }
        if self.fail_reads.get() {
            return Err(ErrorCode::KafkaStorageError);
        }
        let batches = self.log(partition).batches.borrow();
        Ok(batches
            .iter()
            .filter(|b| next_offset(b) > offset)
            .cloned()
            .collect())
    }

    async fn append_offsets(
        &self,
        partition: PartitionId,
        batch: Bytes,
    ) -> Result<(), OffsetsWriteError> {
        if self.hold_appends.get() {
            self.gate.acquire(1).await.expect("gate open");
        }
        if let Some(code) = self.fail_appends.get() {
            return Err(OffsetsWriteError {
                code,
                message: Some("refused".to_owned()),
            });
        }
        // As the log does: each batch gets the next offsets.
        let mut batches = self.log(partition).batches.borrow_mut();
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

/// A shard over `logs` leading nothing yet, with its host attached and
/// its timer started.
fn shard_over(logs: &BTreeMap<PartitionId, Rc<MemoryLog>>, config: GroupConfig) -> Rc<MemoryShard> {
    shard_leased(logs, config, None)
}

/// [`shard_over`], its host coordinating under `lease`.
fn shard_leased(
    logs: &BTreeMap<PartitionId, Rc<MemoryLog>>,
    config: GroupConfig,
    lease: Option<Arc<BrokerLease>>,
) -> Rc<MemoryShard> {
    let shard = Rc::new(MemoryShard {
        host: OnceCell::new(),
        logs: logs.clone(),
        led: RefCell::new(BTreeMap::new()),
        fail_appends: Cell::new(None),
        fail_reads: Cell::new(false),
        hold_appends: Cell::new(false),
        hold_reads: Cell::new(false),
        gate: Semaphore::new(0),
    });
    let attached = shard
        .host
        .set(GroupHost::new(config, 8, 1).with_lease(lease))
        .is_ok();
    assert!(attached);
    GroupHost::start_timer(&shard);
    shard
}

fn logs() -> BTreeMap<PartitionId, Rc<MemoryLog>> {
    (0..PARTITIONS)
        .map(|p| (PartitionId(p), Rc::new(MemoryLog::default())))
        .collect()
}

/// The `nth` of `g0`, `g1`, ... whose offsets live in `partition`.
fn nth_group_on(partition: u32, nth: usize) -> String {
    (0..)
        .map(|i| format!("g{i}"))
        .filter(|g| offsets_log::partition_for(g, PARTITIONS) == partition)
        .nth(nth)
        .expect("groups hash everywhere")
}

fn group_on(partition: u32) -> String {
    nth_group_on(partition, 0)
}

fn tp(partition: u32) -> TopicPartition {
    TopicPartition {
        topic: "events".to_owned(),
        partition,
    }
}

fn simple_commit(group: &str, offsets: &[(u32, i64)]) -> GroupOp {
    GroupOp::Commit(CommitRequest {
        group_id: group.to_owned(),
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

fn join(group: &str) -> GroupOp {
    GroupOp::Join(JoinRequest {
        group_id: group.to_owned(),
        member_id: String::new(),
        instance_id: Some("static".to_owned()),
        client_id: "c".to_owned(),
        protocol_type: "consumer".to_owned(),
        protocols: vec![Protocol {
            name: "range".to_owned(),
            metadata: Vec::new(),
        }],
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: -1,
    })
}

fn commit_results(reply: GroupReply) -> Vec<(TopicPartition, ErrorCode)> {
    match reply {
        GroupReply::Commit(results) => results,
        other => panic!("not a commit reply: {other:?}"),
    }
}

fn commit_error(reply: GroupReply) -> ErrorCode {
    let results = commit_results(reply);
    assert_eq!(results.len(), 1, "one partition committed");
    results[0].1
}

fn unavailable(reply: GroupReply) -> GroupUnavailable {
    match reply {
        GroupReply::Unavailable(e) => e,
        other => panic!("answered: {other:?}"),
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

fn fetch_all(group: &str) -> GroupOp {
    GroupOp::Fetch {
        group_id: group.to_owned(),
        partitions: None,
    }
}

async fn call(shard: &Rc<MemoryShard>, op: GroupOp) -> GroupReply {
    shard.group_host().expect("attached").call(shard, op).await
}

fn leadership(shard: &Rc<MemoryShard>, partition: u32, epoch: Option<u32>) {
    let host = shard.group_host().expect("attached");
    host.offsets_leadership(shard, PartitionId(partition), epoch.map(LeaderEpoch));
}

/// Lets every ready task run (the executor runs them in turn).
async fn settle() {
    for _ in 0..64 {
        futures_lite::future::yield_now().await;
    }
}

/// Waits until `partition` is loaded on `shard` (its loads run in tasks of
/// their own, a failed one retried after a backoff).
async fn loaded(shard: &Rc<MemoryShard>, partition: u32) {
    let host = shard.group_host().expect("attached");
    for _ in 0..1_000 {
        if host
            .offsets_partitions()
            .contains(&(PartitionId(partition), true))
        {
            return;
        }
        sleep(Duration::from_millis(5)).await;
    }
    panic!("partition {partition} never loaded");
}

fn run(test: impl Future<Output = ()> + 'static) {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .make()
        .expect("executor")
        .run(test);
}

#[test]
fn committed_offsets_are_written_and_replayed_and_a_failed_write_is_the_commits_error() {
    run(async {
        let logs = logs();
        let g = group_on(0);
        let first = shard_over(&logs, GroupConfig::default());
        first
            .led
            .borrow_mut()
            .insert(PartitionId(0), LeaderEpoch(0));
        let host = first.group_host().expect("attached");
        assert_eq!(host.load_led(&first).await.expect("load"), 0);
        let results = commit_results(call(&first, simple_commit(&g, &[(0, 5), (1, 7)])).await);
        assert_eq!(
            results,
            [(tp(0), ErrorCode::None), (tp(1), ErrorCode::None)]
        );
        assert_eq!(logs[&PartitionId(0)].batches.borrow().len(), 1);
        assert_eq!(fetched(call(&first, fetch_all(&g)).await), [(0, 5), (1, 7)]);

        // The write fails: the commit reports it and the offset stays.
        first.fail_appends.set(Some(ErrorCode::KafkaStorageError));
        let reply = call(&first, simple_commit(&g, &[(0, 9)])).await;
        assert_eq!(commit_error(reply), ErrorCode::KafkaStorageError);
        assert_eq!(logs[&PartitionId(0)].batches.borrow().len(), 1);
        first.fail_appends.set(None);
        let reply = call(&first, simple_commit(&g, &[(1, 8)])).await;
        assert_eq!(commit_error(reply), ErrorCode::None);
        assert_eq!(fetched(call(&first, fetch_all(&g)).await), [(0, 5), (1, 8)]);

        // A new host over the same log loads the latest offset per key.
        let second = shard_over(&logs, GroupConfig::default());
        second
            .led
            .borrow_mut()
            .insert(PartitionId(0), LeaderEpoch(0));
        let host = second.group_host().expect("attached");
        assert_eq!(host.load_led(&second).await.expect("load"), 3);
        assert_eq!(
            fetched(call(&second, fetch_all(&g)).await),
            [(0, 5), (1, 8)]
        );

        // Stopping: no new request is parked.
        host.stop();
        let e = unavailable(call(&second, simple_commit(&g, &[(0, 1)])).await);
        assert_eq!(e, GroupUnavailable::BrokerStopping);
        assert_eq!(e.code(), ErrorCode::CoordinatorNotAvailable);
    });
}

/// Gap B: a node whose lease ran out (cut off from the controller) keeps
/// its loaded groups but answers every group request NOT_COORDINATOR
/// (no OffsetFetch from its cache, no JoinGroup for a new generation, no
/// commit) until a heartbeat is acknowledged again.
#[test]
fn a_host_without_its_lease_coordinates_nothing() {
    run(async {
        let logs = logs();
        let g = group_on(0);
        let lease = Arc::new(BrokerLease::new());
        lease.extend_to(u64::MAX - 1);
        let shard = shard_leased(&logs, GroupConfig::default(), Some(lease.clone()));
        shard
            .led
            .borrow_mut()
            .insert(PartitionId(0), LeaderEpoch(0));
        let host = shard.group_host().expect("attached");
        host.load_led(&shard).await.expect("load");
        let reply = call(&shard, simple_commit(&g, &[(0, 5)])).await;
        assert_eq!(commit_error(reply), ErrorCode::None);
        assert_eq!(fetched(call(&shard, fetch_all(&g)).await), [(0, 5)]);

        lease.revoke();
        assert!(!host.coordinating());
        for op in [fetch_all(&g), join(&g), simple_commit(&g, &[(0, 6)])] {
            let e = unavailable(call(&shard, op).await);
            assert_eq!(e, GroupUnavailable::NotCoordinator);
            assert_eq!(e.code(), ErrorCode::NotCoordinator);
        }
        assert_eq!(
            logs[&PartitionId(0)].batches.borrow().len(),
            1,
            "nothing written"
        );
        // Still loaded: an acknowledged heartbeat brings it back as it was.
        assert!(host.offsets_partitions().contains(&(PartitionId(0), true)));

        lease.extend_to(u64::MAX - 1);
        assert_eq!(fetched(call(&shard, fetch_all(&g)).await), [(0, 5)]);
    });
}

/// Commits wait for the acks=all append; its refusals answer what Kafka
/// answers an OffsetCommit.
#[test]
fn refused_offsets_appends_answer_as_kafka_does() {
    run(async {
        let logs = logs();
        let g = group_on(1);
        let shard = shard_over(&logs, GroupConfig::default());
        leadership(&shard, 1, Some(4));
        loaded(&shard, 1).await;
        for (append, answer) in [
            (
                ErrorCode::NotEnoughReplicas,
                ErrorCode::CoordinatorNotAvailable,
            ),
            (
                ErrorCode::NotEnoughReplicasAfterAppend,
                ErrorCode::CoordinatorNotAvailable,
            ),
            (
                ErrorCode::RequestTimedOut,
                ErrorCode::CoordinatorNotAvailable,
            ),
            (ErrorCode::NotLeaderOrFollower, ErrorCode::NotCoordinator),
            (ErrorCode::KafkaStorageError, ErrorCode::KafkaStorageError),
        ] {
            shard.fail_appends.set(Some(append));
            let reply = call(&shard, simple_commit(&g, &[(0, 3)])).await;
            assert_eq!(commit_error(reply), answer, "append {append:?}");
        }
        assert!(fetched(call(&shard, fetch_all(&g)).await).is_empty());
        assert_eq!(logs[&PartitionId(1)].end(), 0);
    });
}

/// A partition's groups are served only by the shard leading it: loaded
/// when it becomes leader (with what earlier leaders committed), dropped
/// when it stops, reloaded when it leads again at a later epoch.
#[test]
fn groups_move_with_the_leadership_of_their_offsets_partition() {
    run(async {
        let logs = logs();
        let (g0, g1) = (group_on(0), group_on(1));
        let a = shard_over(&logs, GroupConfig::default());
        let b = shard_over(&logs, GroupConfig::default());

        // Nobody leads anything: not the coordinator.
        let e = unavailable(call(&a, fetch_all(&g0)).await);
        assert_eq!(e.code(), ErrorCode::NotCoordinator);

        // A leads partition 0, B partition 1.
        leadership(&a, 0, Some(1));
        leadership(&b, 1, Some(1));
        loaded(&a, 0).await;
        loaded(&b, 1).await;
        assert_eq!(
            commit_error(call(&a, simple_commit(&g0, &[(0, 5)])).await),
            ErrorCode::None
        );
        assert_eq!(
            commit_error(call(&b, simple_commit(&g1, &[(0, 50)])).await),
            ErrorCode::None
        );
        let e = unavailable(call(&a, simple_commit(&g1, &[(0, 6)])).await);
        assert_eq!(e, GroupUnavailable::NotCoordinator);

        // Partition 0 moves to B: A unloads its groups at once.
        leadership(&a, 0, None);
        assert!(a
            .group_host()
            .expect("attached")
            .offsets_partitions()
            .is_empty());
        let e = unavailable(call(&a, fetch_all(&g0)).await);
        assert_eq!(e.code(), ErrorCode::NotCoordinator);
        leadership(&b, 0, Some(2));
        loaded(&b, 0).await;
        assert_eq!(fetched(call(&b, fetch_all(&g0)).await), [(0, 5)]);
        let results = commit_results(call(&b, simple_commit(&g0, &[(0, 9), (1, 1)])).await);
        assert_eq!(
            results,
            [(tp(0), ErrorCode::None), (tp(1), ErrorCode::None)]
        );

        // And back to A, which replays what B appended.
        leadership(&b, 0, None);
        leadership(&a, 0, Some(3));
        loaded(&a, 0).await;
        assert_eq!(fetched(call(&a, fetch_all(&g0)).await), [(0, 9), (1, 1)]);

        // The same epoch again changes nothing; a later one reloads (A lost
        // the partition in between without being told, and B committed).
        leadership(&a, 0, Some(3));
        assert_eq!(
            a.group_host().expect("attached").offsets_partitions(),
            [(PartitionId(0), true)]
        );
        leadership(&b, 0, Some(4));
        loaded(&b, 0).await;
        assert_eq!(
            commit_error(call(&b, simple_commit(&g0, &[(0, 11)])).await),
            ErrorCode::None
        );
        leadership(&b, 0, None);
        leadership(&a, 0, Some(5));
        loaded(&a, 0).await;
        assert_eq!(fetched(call(&a, fetch_all(&g0)).await), [(0, 11), (1, 1)]);

        // `follow_catalog` does the same from what the catalog says.
        *a.led.borrow_mut() = BTreeMap::from([(PartitionId(1), LeaderEpoch(2))]);
        a.group_host().expect("attached").follow_catalog(&a);
        let e = unavailable(call(&a, fetch_all(&g0)).await);
        assert_eq!(e.code(), ErrorCode::NotCoordinator);
        loaded(&a, 1).await;
        assert_eq!(
            a.group_host().expect("attached").offsets_partitions(),
            [(PartitionId(1), true)]
        );
        assert_eq!(fetched(call(&a, fetch_all(&g1)).await), [(0, 50)]);
    });
}

/// While a partition loads, its groups' requests (and ListGroups) answer
/// COORDINATOR_LOAD_IN_PROGRESS; the other partitions' groups are served.
/// A load that fails is retried.
#[test]
fn requests_during_a_load_are_told_to_retry() {
    run(async {
        let logs = logs();
        let (g0, g1) = (group_on(0), group_on(1));
        let old = shard_over(&logs, GroupConfig::default());
        leadership(&old, 0, Some(1));
        loaded(&old, 0).await;
        assert_eq!(
            commit_error(call(&old, simple_commit(&g0, &[(0, 7)])).await),
            ErrorCode::None
        );

        let shard = shard_over(&logs, GroupConfig::default());
        leadership(&shard, 1, Some(1));
        loaded(&shard, 1).await;
        shard.hold_reads.set(true);
        leadership(&shard, 0, Some(2));
        settle().await;
        for op in [
            fetch_all(&g0),
            simple_commit(&g0, &[(0, 8)]),
            join(&g0),
            GroupOp::Describe(g0.clone()),
            GroupOp::List(Vec::new()),
        ] {
            let e = unavailable(call(&shard, op).await);
            assert_eq!(e, GroupUnavailable::LoadInProgress);
            assert_eq!(e.code(), ErrorCode::CoordinatorLoadInProgress);
        }
        assert!(fetched(call(&shard, fetch_all(&g1)).await).is_empty());

        // The read fails; the load retries it.
        shard.fail_reads.set(true);
        shard.gate.signal(1);
        settle().await;
        assert_eq!(
            shard.group_host().expect("attached").offsets_partitions(),
            [(PartitionId(0), false), (PartitionId(1), true)]
        );
        shard.fail_reads.set(false);
        shard.hold_reads.set(false);
        loaded(&shard, 0).await;
        assert_eq!(fetched(call(&shard, fetch_all(&g0)).await), [(0, 7)]);
        let GroupReply::List(listed) = call(&shard, GroupOp::List(Vec::new())).await else {
            panic!("not a list");
        };
        let ids: Vec<&str> = listed.iter().map(|g| g.group_id.as_str()).collect();
        assert_eq!(ids, [g0.as_str()]);
    });
}

/// Losing the partition answers its parked requests (a JoinGroup waiting
/// for the rebalance, a commit waiting for its append) NOT_COORDINATOR; a
/// write landing after the unload is not reported to the new load.
#[test]
fn unloading_answers_parked_requests_not_coordinator() {
    run(async {
        let logs = logs();
        let g0 = group_on(0);
        // Kafka's initial rebalance delay keeps the first JoinGroup parked.
        let shard = shard_over(&logs, GroupConfig::default());
        leadership(&shard, 0, Some(1));
        loaded(&shard, 0).await;
        let joining = glommio::spawn_local({
            let shard = shard.clone();
            let g0 = g0.clone();
            async move { call(&shard, join(&g0)).await }
        });
        shard.hold_appends.set(true);
        let other = nth_group_on(0, 1);
        let committing = glommio::spawn_local({
            let shard = shard.clone();
            let other = other.clone();
            async move { call(&shard, simple_commit(&other, &[(0, 4)])).await }
        });
        settle().await;

        leadership(&shard, 0, None);
        assert_eq!(unavailable(joining.await).code(), ErrorCode::NotCoordinator);
        assert_eq!(
            unavailable(committing.await).code(),
            ErrorCode::NotCoordinator
        );

        // Leading again while the held append lands: its answer reaches
        // no coordinator (the new load's books are its own; the record is
        // in the log, so this or the next load replays it).
        shard.hold_appends.set(false);
        leadership(&shard, 0, Some(2));
        shard.gate.signal(1);
        loaded(&shard, 0).await;
        settle().await;
        assert_eq!(logs[&PartitionId(0)].end(), 1);
        // Served normally afterwards: the stale write reached no one.
        let reply = call(&shard, simple_commit(&other, &[(0, 6)])).await;
        assert_eq!(commit_error(reply), ErrorCode::None);
        assert_eq!(fetched(call(&shard, fetch_all(&other)).await), [(0, 6)]);
        // The group whose JoinGroup was cut off starts over.
        let GroupReply::Describe(described) = call(&shard, GroupOp::Describe(g0)).await else {
            panic!("not a describe");
        };
        assert_eq!(described.state, crate::group::coordinator::GroupState::Dead);
    });
}
