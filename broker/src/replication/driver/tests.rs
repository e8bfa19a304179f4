//! The fetchers' driver on a real executor with a fake local side
//! (in-memory follower logs behind [`ReplicaLogs`]) and a fake network
//! (an in-memory leader that long-polls like the engine), both going
//! through the wire codec.

use std::collections::BTreeMap;
use std::time::Instant;

use fjord_schema::{ErrorCode, LeaderEpoch, Offset, PartitionId};

use super::*;
use crate::replication::testing::{MemBatch, MemLog};
use crate::replication::wire::{EpochAnswer, ReplicaFetchResult};
use crate::replication::Followed;

const ME: NodeId = NodeId(1);
const LEADER: NodeId = NodeId(2);

type Key = (String, PartitionId);

/// The follower shard's logs and followed set.
#[derive(Default)]
struct FakeLogs {
    logs: RefCell<BTreeMap<Key, MemLog>>,
    followed: RefCell<(u64, Vec<Followed>)>,
    changed: Notify,
}

impl FakeLogs {
    fn follow(&self, entries: &[(&str, u32, MemLog)]) {
        let mut followed = self.followed.borrow_mut();
        followed.0 += 1;
        followed.1 = entries
            .iter()
            .map(|(topic, epoch, _)| Followed {
                topic: topic.to_string(),
                partition: PartitionId(0),
                leader: LEADER,
                leader_epoch: LeaderEpoch(*epoch),
            })
            .collect();
        for (topic, _, log) in entries {
            self.logs
                .borrow_mut()
                .entry((topic.to_string(), PartitionId(0)))
                .or_insert_with(|| log.clone());
        }
        drop(followed);
        self.changed.notify();
    }

    fn check(
        &self,
        topic: &str,
        partition: PartitionId,
        epoch: LeaderEpoch,
    ) -> Result<(), FollowerError> {
        let followed = self.followed.borrow();
        if followed
            .1
            .iter()
            .any(|f| f.topic == topic && f.partition == partition && f.leader_epoch == epoch)
        {
            return Ok(());
        }
        Err(FollowerError::NotFollowing {
            topic: topic.to_string(),
            partition,
            leader_epoch: epoch,
        })
    }

    fn with<T>(&self, topic: &str, f: impl FnOnce(&mut MemLog) -> T) -> T {
        let mut logs = self.logs.borrow_mut();
        f(logs
            .get_mut(&(topic.to_string(), PartitionId(0)))
            .expect("a log"))
    }

    fn describe(&self, topic: &str) -> String {
        self.with(topic, |log| log.describe())
    }
}

impl ReplicaLogs for FakeLogs {
    fn followed(&self) -> (u64, Vec<Followed>) {
        self.followed.borrow().clone()
    }

    async fn followed_changed(&self, seen: u64) {
        loop {
            let version = self.changed.version();
            if self.followed.borrow().0 != seen {
                return;
            }
            self.changed.wait_past(version).await;
        }
    }

    fn position(
        &self,
        topic: &str,
        partition: PartitionId,
        epoch: LeaderEpoch,
    ) -> Result<FollowerPosition, FollowerError> {
        self.check(topic, partition, epoch)?;
        Ok(self.with(topic, |log| log.position()))
    }

    async fn truncate(
        &self,
        topic: &str,
        partition: PartitionId,
        epoch: LeaderEpoch,
        end: Offset,
    ) -> Result<FollowerPosition, FollowerError> {
        self.check(topic, partition, epoch)?;
        Ok(self.with(topic, |log| log.truncate(end.get())))
    }

    async fn append(
        &self,
        topic: &str,
        partition: PartitionId,
        epoch: LeaderEpoch,
        batches: Vec<Bytes>,
        high_watermark: Offset,
        log_start: Offset,
    ) -> Result<FollowerPosition, FollowerError> {
        self.check(topic, partition, epoch)?;
        self.with(topic, |log| {
            log.append(&batches, high_watermark.get(), log_start.get())
        })
    }

    async fn flush(
        &self,
        topic: &str,
        partition: PartitionId,
        epoch: LeaderEpoch,
    ) -> Result<FollowerPosition, FollowerError> {
        self.check(topic, partition, epoch)?;
        Ok(self.with(topic, |log| log.flush()))
    }
}

/// The leader node: its logs at `epoch`, answering through the codec and
/// holding a fetch without data until an append or `max_wait_ms`.
struct FakeLeader {
    logs: RefCell<BTreeMap<String, MemLog>>,
    epoch: u32,
    appended: Notify,
    fetches: Cell<u64>,
    /// Stopped (SIGSTOP): requests get no answer.
    stopped: Cell<bool>,
}

impl FakeLeader {
    fn new(epoch: u32, logs: &[(&str, MemLog)]) -> FakeLeader {
        FakeLeader {
            logs: RefCell::new(
                logs.iter()
                    .map(|(t, l)| (t.to_string(), l.clone()))
                    .collect(),
            ),
            epoch,
            appended: Notify::default(),
            fetches: Cell::new(0),
            stopped: Cell::new(false),
        }
    }

    fn append(&self, topic: &str, base: u64, last: u64) {
        let batch = MemBatch {
            base,
            last,
            epoch: self.epoch,
        };
        let mut logs = self.logs.borrow_mut();
        let log = logs.get_mut(topic).expect("a leader log");
        log.append(&[batch.bytes()], 0, 0).expect("continues");
        log.high_watermark = log.log_end;
        drop(logs);
        self.appended.notify();
    }

    fn answer(&self, request: &ReplicaFetchRequest) -> (ReplicaFetchResponse, usize) {
        let mut bytes = 0;
        let logs = self.logs.borrow();
        let topics = request
            .topics
            .iter()
            .map(|(topic, parts)| {
                let results = parts
                    .iter()
                    .map(|p| {
                        let log = &logs[topic];
                        let read = if p.current_leader_epoch.get() != self.epoch {
                            Err(ErrorCode::FencedLeaderEpoch)
                        } else {
                            log.read(p.fetch_offset.get())
                        };
                        match read {
                            Ok((hw, start, batches)) => {
                                bytes += batches.len();
                                ReplicaFetchResult {
                                    partition: p.partition,
                                    error: ErrorCode::None,
                                    high_watermark: hw as i64,
                                    log_start_offset: start as i64,
                                    batches,
                                }
                            }
                            Err(error) => {
                                bytes += 1;
                                ReplicaFetchResult {
                                    partition: p.partition,
                                    error,
                                    high_watermark: -1,
                                    log_start_offset: log.log_start as i64,
                                    batches: vec![],
                                }
                            }
                        }
                    })
                    .collect();
                (topic.clone(), results)
            })
            .collect();
        (ReplicaFetchResponse { topics }, bytes)
    }
}

impl ReplicaNetwork for FakeLeader {
    async fn fetch(
        &self,
        leader: NodeId,
        request: &ReplicaFetchRequest,
        _timeout: Duration,
    ) -> Result<ReplicaFetchResponse, NetworkError> {
        assert_eq!(leader, LEADER);
        self.fetches.set(self.fetches.get() + 1);
        if self.stopped.get() {
            return futures_lite::future::pending().await;
        }
        let request = ReplicaFetchRequest::decode(&request.encode())?;
        let deadline = Instant::now() + Duration::from_millis(u64::from(request.max_wait_ms));
        loop {
            let seen = self.appended.version();
            let (response, found) = self.answer(&request);
            let left = deadline.saturating_duration_since(Instant::now());
            if found > 0 || left.is_zero() {
                let (body, payload) = response.encode();
                let payload = Bytes::from(payload.concat());
                return Ok(ReplicaFetchResponse::decode(&body, &payload)?);
            }
            futures_lite::future::or(self.appended.wait_past(seen), glommio::timer::sleep(left))
                .await;
        }
    }

    async fn offsets_for_epochs(
        &self,
        leader: NodeId,
        request: &EpochsRequest,
        _timeout: Duration,
    ) -> Result<EpochsResponse, NetworkError> {
        assert_eq!(leader, LEADER);
        let request = EpochsRequest::decode(&request.encode())?;
        let logs = self.logs.borrow();
        let topics = request
            .topics
            .iter()
            .map(|(topic, parts)| {
                let answers = parts
                    .iter()
                    .map(|p| {
                        let (leader_epoch, end_offset) =
                            logs[topic].epoch_end(p.leader_epoch.get());
                        EpochAnswer {
                            partition: p.partition,
                            error: ErrorCode::None,
                            leader_epoch,
                            end_offset,
                        }
                    })
                    .collect();
                (topic.clone(), answers)
            })
            .collect();
        Ok(EpochsResponse::decode(&EpochsResponse { topics }.encode())?)
    }
}

fn run<F: Future<Output = ()> + 'static>(test: impl FnOnce() -> F + Send + 'static) {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .spawn(move || async move { test().await })
        .expect("executor")
        .join()
        .expect("test ran");
}

const WAIT_MS: u32 = 50;

fn config() -> ReplicaFetcherConfig {
    ReplicaFetcherConfig {
        wait_max_ms: WAIT_MS,
        backoff_ms: 10,
        backoff_max_ms: 40,
        ..ReplicaFetcherConfig::default()
    }
}

/// Waits (at most 10 s) until `done` holds.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < give_up, "never happened: {what}");
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
}

/// A follower with a divergent tail truncates it, catches up with the
/// leader's log, follows new appends, and then idles on long-polls: at
/// most one request per wait period (plus the one in flight).
#[test]
fn follower_truncates_catches_up_and_idles_on_long_polls() {
    run(|| async {
        let leader = Rc::new(FakeLeader::new(
            3,
            &[
                ("a", MemLog::with(&[(0, 4, 1), (5, 9, 3)])),
                ("b", MemLog::with(&[(0, 99, 3)])),
            ],
        ));
        let logs = Rc::new(FakeLogs::default());
        let fetchers = start_fetchers(ME, logs.clone(), leader.clone(), config());
        glommio::yield_if_needed().await;
        assert!(
            fetchers.running().is_empty(),
            "a fetcher with nothing followed"
        );
        // "a" wrote 5-7 at epoch 2 here, never replicated: divergent.
        logs.follow(&[
            ("a", 3, MemLog::with(&[(0, 4, 1), (5, 7, 2)])),
            ("b", 3, MemLog::default()),
        ]);
        eventually("caught up", || {
            logs.describe("a") == "[0-4@1 5-9@3] start=0 end=10 durable=5 hw=0"
                && logs.describe("b") == "[0-99@3] start=0 end=100 durable=0 hw=0"
        })
        .await;
        assert_eq!(fetchers.running(), vec![LEADER]);
        leader.append("a", 10, 19);
        eventually("new batch replicated", || {
            logs.describe("a") == "[0-4@1 5-9@3 10-19@3] start=0 end=20 durable=5 hw=20"
        })
        .await;
        // Idle: count requests over a while.
        let before = fetchers.requests();
        let started = Instant::now();
        glommio::timer::sleep(Duration::from_millis(u64::from(WAIT_MS) * 6)).await;
        let periods = started.elapsed().as_millis() as u64 / u64::from(WAIT_MS);
        let sent = fetchers.requests() - before;
        assert!(
            sent <= periods + 1,
            "{sent} requests in {periods} wait periods while idle"
        );
        fetchers.stop();
    });
}

/// The fetcher of a leader ends once none of its partitions is followed,
/// and a new one starts when one is followed again; a fenced partition is
/// not fetched until its epoch changes.
#[test]
fn fetchers_start_and_end_with_the_followed_set() {
    run(|| async {
        let leader = Rc::new(FakeLeader::new(2, &[("a", MemLog::with(&[(0, 1, 2)]))]));
        let logs = Rc::new(FakeLogs::default());
        let fetchers = start_fetchers(ME, logs.clone(), leader.clone(), config());
        logs.follow(&[("a", 2, MemLog::default())]);
        eventually("replicated", || logs.describe("a").starts_with("[0-1@2]")).await;
        logs.follow(&[]);
        eventually("fetcher ended", || fetchers.running().is_empty()).await;
        let fetches = leader.fetches.get();
        glommio::timer::sleep(Duration::from_millis(u64::from(WAIT_MS) * 3)).await;
        assert_eq!(
            leader.fetches.get(),
            fetches,
            "fetches with nothing followed"
        );
        // Followed again at an epoch older than the leader's: fenced and
        // dropped, the fetcher then waits for the set to change.
        logs.follow(&[("a", 1, MemLog::default())]);
        eventually("fetcher started", || fetchers.running() == vec![LEADER]).await;
        eventually("fenced", || leader.fetches.get() > fetches).await;
        let fenced = leader.fetches.get();
        glommio::timer::sleep(Duration::from_millis(u64::from(WAIT_MS) * 3)).await;
        assert_eq!(
            leader.fetches.get(),
            fenced,
            "a fenced partition fetched again"
        );
        logs.follow(&[("a", 2, MemLog::default())]);
        leader.append("a", 2, 4);
        eventually("fetching again", || {
            logs.describe("a").starts_with("[0-1@2 2-4@2]")
        })
        .await;
        fetchers.stop();
        fetchers.stopped().await;
        assert!(fetchers.running().is_empty());
    });
}

/// The in-memory leader behind a real cluster listener: bodies decoded
/// and answers encoded as the leader's `ReplicationService` does (the
/// batches as payload chunks).
struct LeaderService(Rc<FakeLeader>);

impl crate::controller::transport::ClusterService for LeaderService {
    fn one_way(&self, _api: ClusterApiKey, _body: Bytes) {}

    fn request(
        &self,
        api: ClusterApiKey,
        body: Bytes,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<crate::controller::transport::Reply, String>>>>
    {
        let leader = self.0.clone();
        Box::pin(async move {
            let timeout = Duration::from_secs(10);
            match api {
                ClusterApiKey::ReplicaFetch => {
                    let request = ReplicaFetchRequest::decode(&body).map_err(|e| e.to_string())?;
                    let response = leader
                        .fetch(LEADER, &request, timeout)
                        .await
                        .map_err(|e| e.to_string())?;
                    let (body, payload) = response.encode();
                    Ok(crate::controller::transport::Reply { body, payload })
                }
                ClusterApiKey::OffsetForLeaderEpoch => {
                    let request = EpochsRequest::decode(&body).map_err(|e| e.to_string())?;
                    let response = leader
                        .offsets_for_epochs(LEADER, &request, timeout)
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok(response.encode().into())
                }
                other => Err(format!("{other:?}")),
            }
        })
    }
}

/// Over real sockets: the follower's `TransportNetwork` reaches the
/// leader at the address its lookup gives, truncates and catches up; a
/// leader whose address is unknown is retried after a pause.
#[test]
fn fetchers_replicate_over_the_cluster_transport() {
    run(|| async {
        let leader = Rc::new(FakeLeader::new(
            3,
            &[("a", MemLog::with(&[(0, 4, 1), (5, 9, 3)]))],
        ));
        let server = Transport::new(u64::from(LEADER.get()));
        let addr = server
            .listen(
                "127.0.0.1:0".parse().expect("address"),
                Rc::new(LeaderService(leader.clone())),
            )
            .expect("listens");
        let known = Rc::new(Cell::new(false));
        let lookup = {
            let known = known.clone();
            move |node: NodeId| (node == LEADER && known.get()).then(|| addr.to_string())
        };
        let network = Rc::new(TransportNetwork::new(ME, Box::new(lookup)));
        let logs = Rc::new(FakeLogs::default());
        let fetchers = start_fetchers(ME, logs.clone(), network.clone(), config());
        logs.follow(&[("a", 3, MemLog::with(&[(0, 4, 1), (5, 7, 2)]))]);
        eventually("a request failed for want of an address", || {
            fetchers.requests() > 0
        })
        .await;
        assert!(logs.describe("a").starts_with("[0-4@1 5-7@2]"));
        known.set(true);
        eventually("caught up over the transport", || {
            logs.describe("a") == "[0-4@1 5-9@3] start=0 end=10 durable=5 hw=0"
        })
        .await;
        leader.append("a", 10, 10_009);
        eventually("a new batch replicated", || {
            logs.describe("a")
                .ends_with("10-10009@3] start=0 end=10010 durable=5 hw=10010")
        })
        .await;
        fetchers.stop();
        fetchers.stopped().await;
        network.close();
        server.close();
    });
}

/// A leader that stopped answering holds the fetch in flight; once the
/// image moves its partitions to a new epoch (it was replaced and, here,
/// re-elected), the fetcher drops that request at once instead of
/// waiting for its timeout, and fetches at the new epoch.
#[test]
fn a_request_to_a_stopped_leader_is_dropped_when_the_epochs_move_on() {
    run(|| async {
        let leader = Rc::new(FakeLeader::new(2, &[("a", MemLog::with(&[(0, 1, 2)]))]));
        let logs = Rc::new(FakeLogs::default());
        let config = ReplicaFetcherConfig {
            request_timeout_ms: 3_600_000,
            ..config()
        };
        let fetchers = start_fetchers(ME, logs.clone(), leader.clone(), config);
        logs.follow(&[("a", 2, MemLog::default())]);
        eventually("replicated", || logs.describe("a").starts_with("[0-1@2]")).await;
        leader.stopped.set(true);
        let stuck = leader.fetches.get() + 1;
        eventually("a fetch stuck", || leader.fetches.get() >= stuck).await;
        glommio::timer::sleep(Duration::from_millis(u64::from(WAIT_MS) * 3)).await;
        assert_eq!(leader.fetches.get(), stuck, "sent while one was in flight");
        // Epoch 3 in the image (what the fake answers then does not
        // matter: a new request went out while the old one hung).
        logs.follow(&[("a", 3, MemLog::default())]);
        eventually("fetching at the new epoch", || leader.fetches.get() > stuck).await;
        leader.stopped.set(false);
        fetchers.stop();
        fetchers.stopped().await;
    });
}
