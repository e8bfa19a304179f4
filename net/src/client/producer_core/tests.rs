use std::time::{Duration, Instant};

use fjord_schema::{BatchView, ErrorCode, Offset, PartitionId, RecordInput};

use super::*;
use crate::client::partitioner::partition_for_key;
use crate::client::protocol::ProducePartitionResult;
use crate::client::{BrokerInfo, Metadata, PartitionInfo, TopicInfo};

const PARTITIONS: u32 = 4;

fn metadata(topic_error: ErrorCode) -> Metadata {
    Metadata {
        cluster_id: None,
        controller_id: 0,
        metadata_applied_index: 0,
        metadata_committed_index: 0,
        brokers: vec![BrokerInfo {
            node_id: 0,
            host: "127.0.0.1".into(),
            port: 9192,
            shard_ports: vec![9300, 9301],
            rack: None,
            kafka: None,
            fenced: false,
        }],
        topics: vec![TopicInfo {
            error: topic_error,
            name: "t".into(),
            partitions: (0..PARTITIONS)
                .map(|p| PartitionInfo {
                    error: ErrorCode::None,
                    partition: p,
                    leader: 0,
                    leader_epoch: 0,
                    leader_shard: (p % 2) as u16,
                    replicas: vec![0],
                    isr: vec![0],
                })
                .collect(),
        }],
    }
}

fn config() -> ProducerConfig {
    ProducerConfig {
        acks: Acks::Leader,
        accumulator: AccumulatorConfig {
            batch_size_bytes: 16 * 1024,
            linger: Duration::from_millis(5),
            buffer_memory_bytes: 1024 * 1024,
            record_size_max_bytes: 64 * 1024,
            ..AccumulatorConfig::default()
        },
        in_flight_per_connection_max: 1,
        request_timeout: Duration::from_secs(1),
        retry: RetryPolicy {
            retries_max: 2,
            backoff: Duration::from_millis(100),
            backoff_max: Duration::from_millis(100),
            delivery_timeout: Duration::from_secs(10),
        },
        ..ProducerConfig::default()
    }
}

fn core(config: ProducerConfig) -> ProducerCore<u32> {
    let mut core = ProducerCore::new(config);
    core.update_metadata(&metadata(ErrorCode::None));
    core
}

fn record<'a>(key: Option<&'a [u8]>, value: &'a [u8]) -> RecordInput<'a> {
    RecordInput {
        key,
        value: Some(value),
        timestamp: 5,
        ..RecordInput::default()
    }
}

fn ok(partition: u32, base: u64) -> ProducePartitionResult {
    ProducePartitionResult {
        topic: "t".into(),
        partition: PartitionId(partition),
        error: ErrorCode::None,
        message: None,
        base_offset: Some(Offset(base)),
        log_append_time_ms: None,
    }
}

fn failed(partition: u32, error: ErrorCode) -> ProducePartitionResult {
    ProducePartitionResult {
        error,
        base_offset: None,
        ..ok(partition, 0)
    }
}

fn outcomes(completions: Vec<Completion<u32>>) -> Vec<(u32, Result<RecordMetadata, ProduceError>)> {
    let mut out: Vec<_> = completions
        .into_iter()
        .map(|c| (c.token, c.result))
        .collect();
    out.sort_by_key(|(token, _)| *token);
    out
}

/// (partition, record values) of each batch in a request.
fn request_contents(outgoing: &Outgoing) -> Vec<Vec<u8>> {
    outgoing
        .request
        .payload
        .iter()
        .flat_map(|bytes| {
            let (view, _) = BatchView::parse(bytes).expect("valid batch");
            let mut scratch = Vec::new();
            let records = view.records(&mut scratch, 1 << 20).expect("records");
            records
                .iter()
                .map(|r| r.value().unwrap_or_default().to_vec())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn keyed_records_go_to_kafkas_partition_on_the_leaders_shard_port() {
    let mut core = core(config());
    let t0 = Instant::now();
    let partition = core
        .append("t", None, record(Some(b"user-7"), b"v0"), 0, t0)
        .expect("accepted");
    assert_eq!(partition, partition_for_key(b"user-7", PARTITIONS));
    core.append("t", None, record(Some(b"user-7"), b"v1"), 1, t0)
        .expect("accepted");

    // Lingering: nothing to send yet.
    assert!(core.poll(t0).requests.is_empty());
    assert_eq!(core.next_wakeup(), Some(t0 + Duration::from_millis(5)));

    let t1 = t0 + Duration::from_millis(5);
    let work = core.poll(t1);
    assert_eq!(work.requests.len(), 1);
    let request = &work.requests[0];
    let shard = partition.0 % 2;
    assert_eq!(request.endpoint.port, 9300 + shard as u16);
    assert_eq!(
        request_contents(request),
        vec![b"v0".to_vec(), b"v1".to_vec()]
    );

    let done = core.handle_response(request.request_id, &[ok(partition.0, 40)], t1);
    let outcomes = outcomes(done);
    assert_eq!(outcomes.len(), 2);
    for (token, result) in outcomes {
        assert_eq!(
            result,
            Ok(RecordMetadata {
                partition,
                offset: Some(Offset(40 + u64::from(token)))
            })
        );
    }
    assert!(core.is_idle());
    assert_eq!(core.buffered_bytes(), 0);
}

#[test]
fn the_in_flight_limit_holds_batches_back_until_an_answer() {
    let mut core = core(config());
    let t0 = Instant::now();
    let p = PartitionId(0);
    core.append("t", Some(p), record(None, b"a"), 0, t0)
        .expect("accepted");
    core.flush();
    let first = core.poll(t0).requests;
    assert_eq!(first.len(), 1);

    core.append("t", Some(p), record(None, b"b"), 1, t0)
        .expect("accepted");
    core.flush();
    assert!(
        core.poll(t0).requests.is_empty(),
        "one request in flight at most"
    );

    core.handle_response(first[0].request_id, &[ok(0, 0)], t0);
    let second = core.poll(t0).requests;
    assert_eq!(second.len(), 1);
    assert_eq!(request_contents(&second[0]), vec![b"b".to_vec()]);
}

#[test]
fn retriable_errors_resend_the_same_batch_after_backoff_and_refresh_metadata() {
    let mut core = core(config());
    let t0 = Instant::now();
    core.append("t", Some(PartitionId(1)), record(None, b"x"), 0, t0)
        .expect("accepted");
    core.flush();
    let first = core.poll(t0).requests.remove(0);
    let done = core.handle_response(
        first.request_id,
        &[failed(1, ErrorCode::NotLeaderOrFollower)],
        t0,
    );
    assert!(done.is_empty(), "retried, not failed");
    assert!(core.metadata_wanted());
    core.update_metadata(&metadata(ErrorCode::None));

    assert!(core
        .poll(t0 + Duration::from_millis(99))
        .requests
        .is_empty());
    let retry = core
        .poll(t0 + Duration::from_millis(100))
        .requests
        .remove(0);
    assert_eq!(retry.request.payload, first.request.payload, "same bytes");
    let done = core.handle_response(retry.request_id, &[ok(1, 9)], t0);
    assert_eq!(
        outcomes(done),
        vec![(
            0,
            Ok(RecordMetadata {
                partition: PartitionId(1),
                offset: Some(Offset(9))
            })
        )]
    );
}

#[test]
fn retries_run_out_and_non_retriable_errors_fail_at_once() {
    let mut core = core(config());
    let t0 = Instant::now();
    core.append("t", Some(PartitionId(0)), record(None, b"x"), 0, t0)
        .expect("accepted");
    core.append("t", Some(PartitionId(2)), record(None, b"y"), 1, t0)
        .expect("accepted");
    core.flush();
    let mut now = t0;
    let mut failures = Vec::new();
    for _ in 0..3 {
        let work = core.poll(now);
        assert_eq!(work.requests.len(), 1, "both partitions are on shard 0");
        let request = &work.requests[0];
        failures.extend(core.handle_response(
            request.request_id,
            &[
                failed(0, ErrorCode::NotEnoughReplicas),
                failed(2, ErrorCode::MessageTooLarge),
            ],
            now,
        ));
        now += Duration::from_millis(100);
    }
    let outcomes = outcomes(failures);
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    assert_eq!(
        outcomes[0].1,
        Err(ProduceError::Broker {
            code: ErrorCode::NotEnoughReplicas,
            message: None
        })
    );
    assert_eq!(
        outcomes[1].1,
        Err(ProduceError::Broker {
            code: ErrorCode::MessageTooLarge,
            message: None
        })
    );
    assert!(core.is_idle());
    assert_eq!(core.buffered_bytes(), 0);
}

#[test]
fn acks_zero_completes_on_write_without_offsets() {
    let mut core = core(ProducerConfig {
        acks: Acks::None,
        ..config()
    });
    let t0 = Instant::now();
    core.append("t", Some(PartitionId(3)), record(None, b"x"), 0, t0)
        .expect("accepted");
    core.flush();
    let request = core.poll(t0).requests.remove(0);
    assert_eq!(request.acks, Acks::None);
    let done = core.handle_sent(request.request_id);
    assert_eq!(
        outcomes(done),
        vec![(
            0,
            Ok(RecordMetadata {
                partition: PartitionId(3),
                offset: None
            })
        )]
    );
    assert!(core.is_idle());
}

#[test]
fn unanswered_requests_time_out_and_are_retried() {
    let mut core = core(config());
    let t0 = Instant::now();
    core.append("t", Some(PartitionId(0)), record(None, b"x"), 0, t0)
        .expect("accepted");
    core.flush();
    let request = core.poll(t0).requests.remove(0);
    assert!(core.timed_out(t0 + Duration::from_millis(999)).is_empty());
    let late = t0 + Duration::from_secs(1);
    let expired = core.timed_out(late);
    assert_eq!(
        expired,
        vec![(request.request_id, request.endpoint.clone())]
    );
    let done = core.handle_failure(
        request.request_id,
        AttemptFailure::TimedOut,
        ProduceError::Connection("timed out".into()),
        late,
    );
    assert!(done.is_empty());
    // An answer arriving after the timeout is ignored.
    assert!(core
        .handle_response(request.request_id, &[ok(0, 0)], late)
        .is_empty());
    let retry = core.poll(late + Duration::from_millis(100)).requests;
    assert_eq!(retry.len(), 1);
    assert_ne!(retry[0].request_id, request.request_id);
}

#[test]
fn batches_without_a_leader_expire_at_the_delivery_timeout() {
    let mut core: ProducerCore<u32> = ProducerCore::new(config());
    let mut meta = metadata(ErrorCode::None);
    meta.topics[0].partitions[0].leader = -1;
    core.update_metadata(&meta);
    let t0 = Instant::now();
    core.append("t", Some(PartitionId(0)), record(None, b"x"), 0, t0)
        .expect("accepted");
    core.flush();
    assert!(core.poll(t0).requests.is_empty());
    assert!(core.metadata_wanted());
    let done = core.poll(t0 + Duration::from_secs(11)).completions;
    assert_eq!(
        outcomes(done),
        vec![(
            0,
            Err(ProduceError::DeliveryTimeout(Duration::from_secs(10)))
        )]
    );
}

#[test]
fn unknown_topics_need_metadata_then_fail_with_the_topic_error() {
    let mut unrouted: ProducerCore<u32> = ProducerCore::new(config());
    let t0 = Instant::now();
    assert!(matches!(
        unrouted.append("t", None, record(None, b"x"), 7, t0),
        Err(Refused::NeedMetadata(7))
    ));
    assert!(unrouted.metadata_wanted());
    assert_eq!(unrouted.wanted_topics(), vec!["t".to_owned()]);
    unrouted.update_metadata(&metadata(ErrorCode::UnknownTopicOrPartition));
    match unrouted.append("t", None, record(None, b"x"), 7, t0) {
        Err(Refused::Failed(completion)) => assert_eq!(
            completion.result,
            Err(ProduceError::Topic {
                topic: "t".into(),
                code: ErrorCode::UnknownTopicOrPartition
            })
        ),
        other => panic!("expected a topic error, got {other:?}"),
    }
    let mut routed = core(config());
    assert!(matches!(
        routed.append(
            "t",
            Some(PartitionId(PARTITIONS)),
            record(None, b"x"),
            1,
            t0
        ),
        Err(Refused::Failed(_))
    ));
}

#[test]
fn a_full_buffer_refuses_until_batches_complete() {
    let mut core = core(ProducerConfig {
        accumulator: AccumulatorConfig {
            buffer_memory_bytes: 4 * 1024,
            record_size_max_bytes: 2 * 1024,
            ..config().accumulator
        },
        request_payload_max_bytes: 4 * 1024,
        ..config()
    });
    let t0 = Instant::now();
    let value = [0u8; 1000];
    let mut token = 0;
    loop {
        match core.append("t", Some(PartitionId(0)), record(None, &value), token, t0) {
            Ok(_) => token += 1,
            Err(Refused::BufferFull(back)) => {
                assert_eq!(back, token);
                break;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
        assert!(token < 10, "the buffer never filled");
    }
    core.flush();
    let request = core.poll(t0).requests.remove(0);
    core.handle_response(request.request_id, &[ok(0, 0)], t0);
    core.append("t", Some(PartitionId(0)), record(None, &value), token, t0)
        .expect("room again");
}

#[test]
fn keyless_records_fill_one_partition_per_batch() {
    let mut core = core(config());
    let t0 = Instant::now();
    let first = core
        .append("t", None, record(None, b"a"), 0, t0)
        .expect("accepted");
    let again = core
        .append("t", None, record(None, b"b"), 1, t0)
        .expect("accepted");
    assert_eq!(first, again, "sticky within a batch");
    let work = core.poll(t0 + Duration::from_millis(5));
    assert_eq!(work.requests.len(), 1);
    let next = core
        .append("t", None, record(None, b"c"), 2, t0)
        .expect("accepted");
    assert_ne!(next, first, "moves on once the batch closed");
}

fn idempotent_config() -> ProducerConfig {
    let mut config = config();
    config.acks = Acks::All;
    config.in_flight_per_connection_max = 5;
    config.accumulator.producer_id = fjord_schema::ProducerId(9);
    config.accumulator.producer_epoch = fjord_schema::ProducerEpoch(0);
    config
}

fn sequences(outgoing: &Outgoing) -> Vec<i32> {
    outgoing
        .request
        .payload
        .iter()
        .map(|bytes| {
            BatchView::parse(bytes)
                .expect("valid")
                .0
                .header()
                .base_sequence()
                .0
        })
        .collect()
}

#[test]
fn idempotence_defaults_on_and_conflicts_with_acks_1_only_when_asked_for() {
    let mut c = ProducerConfig::default();
    assert_eq!(c.idempotence(), Ok(true));
    c.acks = Acks::Leader;
    assert_eq!(c.idempotence(), Ok(false), "implicitly off, as Kafka");
    c.enable_idempotence = Some(true);
    assert!(c.idempotence().is_err());
    c.acks = Acks::All;
    c.in_flight_per_connection_max = 6;
    assert!(c.idempotence().is_err());
    c.enable_idempotence = Some(false);
    assert_eq!(c.idempotence(), Ok(false));
}

#[test]
fn an_idempotent_retry_keeps_its_sequence_and_goes_before_later_batches() {
    let mut core = core(idempotent_config());
    let t0 = Instant::now();
    let p = Some(PartitionId(0));
    core.append("t", p, record(None, b"a"), 1, t0).unwrap();
    core.flush();
    let first = core.poll(t0).requests;
    assert_eq!(first.len(), 1);
    assert_eq!(sequences(&first[0]), vec![0]);

    // A later batch of the same partition waits while the first is in
    // flight, even with room for more requests.
    core.append("t", p, record(None, b"b"), 2, t0).unwrap();
    core.flush();
    assert!(core.poll(t0).requests.is_empty());

    // The connection drops: the first batch is retried, unchanged, first.
    let failure = AttemptFailure::Disconnected;
    let error = ProduceError::Connection("cut".into());
    assert!(core
        .handle_failure(first[0].request_id, failure, error, t0)
        .is_empty());
    let later = t0 + Duration::from_secs(1);
    let retry = core.poll(later).requests;
    assert_eq!(retry.len(), 1);
    assert_eq!(sequences(&retry[0]), vec![0]);
    assert_eq!(request_contents(&retry[0]), vec![b"a".to_vec()]);

    // The broker had written it: DUPLICATE_SEQUENCE_NUMBER is a success.
    let done = core.handle_response(
        retry[0].request_id,
        &[failed(0, ErrorCode::DuplicateSequenceNumber)],
        later,
    );
    assert!(matches!(&outcomes(done)[..], [(1, Ok(_))]));
    let next = core.poll(later).requests;
    assert_eq!(sequences(&next[0]), vec![1]);
    assert_eq!(request_contents(&next[0]), vec![b"b".to_vec()]);
}

#[test]
fn sequence_and_epoch_errors_are_fatal_for_an_idempotent_producer() {
    for code in [
        ErrorCode::OutOfOrderSequenceNumber,
        ErrorCode::InvalidProducerEpoch,
    ] {
        let mut core = core(idempotent_config());
        let t0 = Instant::now();
        core.append("t", Some(PartitionId(0)), record(None, b"a"), 1, t0)
            .unwrap();
        core.append("t", Some(PartitionId(1)), record(None, b"b"), 2, t0)
            .unwrap();
        core.flush();
        let requests = core.poll(t0).requests;
        let first = requests
            .iter()
            .find(|r| request_contents(r) == vec![b"a".to_vec()])
            .expect("partition 0's request");
        let done = core.handle_response(first.request_id, &[failed(0, code)], t0);
        assert!(matches!(
            &outcomes(done)[..],
            [(1, Err(ProduceError::Broker { code: c, .. }))] if *c == code
        ));
        assert!(core.fatal_error().is_some());
        // Everything else fails with it; new records are refused.
        let rest = outcomes(core.poll(t0).completions);
        assert!(matches!(&rest[..], [(2, Err(ProduceError::Broker { .. }))]));
        assert!(matches!(
            core.append("t", None, record(None, b"c"), 3, t0),
            Err(Refused::Failed(_))
        ));
    }
}
