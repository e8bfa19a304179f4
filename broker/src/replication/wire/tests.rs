use bytes::Bytes;
use fjord_schema::{ErrorCode, LeaderEpoch, NodeId, Offset, PartitionId};
use proptest::prelude::*;

use super::*;

fn arb_topic() -> impl Strategy<Value = String> {
    "[a-z._-]{1,12}"
}

fn arb_fetch_partition() -> impl Strategy<Value = ReplicaFetchPartition> {
    (
        any::<u32>(),
        0..=i64::MAX as u64,
        0..=i32::MAX as u32,
        proptest::option::of(0..=i64::MAX as u64),
        any::<u32>(),
    )
        .prop_map(|(p, off, epoch, durable, max)| ReplicaFetchPartition {
            partition: PartitionId(p),
            fetch_offset: Offset(off),
            current_leader_epoch: LeaderEpoch(epoch),
            durable_end: durable.map(Offset),
            partition_max_bytes: max,
        })
}

fn arb_fetch_request() -> impl Strategy<Value = ReplicaFetchRequest> {
    (
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        proptest::collection::vec(
            (
                arb_topic(),
                proptest::collection::vec(arb_fetch_partition(), 0..4),
            ),
            0..4,
        ),
    )
        .prop_map(|(node, wait, min, max, topics)| ReplicaFetchRequest {
            replica_id: NodeId(node),
            max_wait_ms: wait,
            min_bytes: min,
            max_bytes: max,
            topics,
        })
}

fn arb_error() -> impl Strategy<Value = ErrorCode> {
    prop::sample::select(vec![
        ErrorCode::None,
        ErrorCode::OffsetOutOfRange,
        ErrorCode::NotLeaderOrFollower,
        ErrorCode::FencedLeaderEpoch,
        ErrorCode::UnknownLeaderEpoch,
        ErrorCode::UnknownTopicOrPartition,
        ErrorCode::KafkaStorageError,
    ])
}

fn arb_fetch_response() -> impl Strategy<Value = ReplicaFetchResponse> {
    let result = (
        any::<u32>(),
        arb_error(),
        any::<i64>(),
        any::<i64>(),
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..4),
    )
        .prop_map(|(p, error, hw, start, batches)| ReplicaFetchResult {
            partition: PartitionId(p),
            error,
            high_watermark: hw,
            log_start_offset: start,
            batches: batches.into_iter().map(Bytes::from).collect(),
        });
    proptest::collection::vec((arb_topic(), proptest::collection::vec(result, 0..4)), 0..4)
        .prop_map(|topics| ReplicaFetchResponse { topics })
}

fn arb_epochs_request() -> impl Strategy<Value = EpochsRequest> {
    let part = (any::<u32>(), 0..=i32::MAX as u32, 0..=i32::MAX as u32).prop_map(|(p, c, e)| {
        EpochQueryPartition {
            partition: PartitionId(p),
            current_leader_epoch: LeaderEpoch(c),
            leader_epoch: LeaderEpoch(e),
        }
    });
    (
        any::<u32>(),
        proptest::collection::vec((arb_topic(), proptest::collection::vec(part, 0..4)), 0..4),
    )
        .prop_map(|(node, topics)| EpochsRequest {
            replica_id: NodeId(node),
            topics,
        })
}

fn arb_epochs_response() -> impl Strategy<Value = EpochsResponse> {
    let part = (any::<u32>(), arb_error(), any::<i32>(), any::<i64>()).prop_map(
        |(p, error, leader_epoch, end_offset)| EpochAnswer {
            partition: PartitionId(p),
            error,
            leader_epoch,
            end_offset,
        },
    );
    proptest::collection::vec((arb_topic(), proptest::collection::vec(part, 0..4)), 0..4)
        .prop_map(|topics| EpochsResponse { topics })
}

/// The payload as the follower receives it: the chunks in one buffer.
fn joined(chunks: &[Bytes]) -> Bytes {
    Bytes::from(chunks.concat())
}

/// Decodes `bytes` as every body kind; none may panic.
fn decode_all(bytes: &[u8]) {
    let _ = ReplicaFetchRequest::decode(bytes);
    let _ = ReplicaFetchResponse::decode(bytes, &Bytes::new());
    let half = bytes.len() / 2;
    let _ = ReplicaFetchResponse::decode(&bytes[..half], &Bytes::copy_from_slice(&bytes[half..]));
    let _ = EpochsRequest::decode(bytes);
    let _ = EpochsResponse::decode(bytes);
}

proptest! {
    #[test]
    fn fetch_requests_round_trip(request in arb_fetch_request()) {
        let bytes = request.encode();
        prop_assert_eq!(ReplicaFetchRequest::decode(&bytes), Ok(request));
    }

    #[test]
    fn fetch_responses_round_trip(response in arb_fetch_response()) {
        let (body, payload) = response.encode();
        let batches: Vec<&Bytes> = response.topics.iter().flat_map(|(_, p)| p).flat_map(|p| &p.batches).collect();
        prop_assert_eq!(payload.iter().collect::<Vec<_>>(), batches);
        prop_assert_eq!(ReplicaFetchResponse::decode(&body, &joined(&payload)), Ok(response));
    }

    #[test]
    fn epoch_requests_round_trip(request in arb_epochs_request()) {
        let bytes = request.encode();
        prop_assert_eq!(EpochsRequest::decode(&bytes), Ok(request));
    }

    #[test]
    fn epoch_responses_round_trip(response in arb_epochs_response()) {
        let bytes = response.encode();
        prop_assert_eq!(EpochsResponse::decode(&bytes), Ok(response));
    }

    /// Every strict prefix of a valid body is an error (nothing is
    /// optional at the end), and so is a byte appended.
    #[test]
    fn cut_or_extended_bodies_are_errors(response in arb_fetch_response(), request in arb_fetch_request()) {
        let (body, payload) = response.encode();
        let payload = joined(&payload);
        for cut in 0..body.len() {
            prop_assert!(ReplicaFetchResponse::decode(&body[..cut], &payload).is_err());
        }
        for cut in 0..payload.len() {
            prop_assert!(ReplicaFetchResponse::decode(&body, &payload.slice(..cut)).is_err());
        }
        let mut longer = body.to_vec();
        longer.push(0);
        prop_assert_eq!(
            ReplicaFetchResponse::decode(&longer, &payload),
            Err(DecodeError::Trailing(1))
        );
        let mut longer = payload.to_vec();
        longer.push(0);
        prop_assert_eq!(
            ReplicaFetchResponse::decode(&body, &Bytes::from(longer)),
            Err(DecodeError::Trailing(1))
        );
        let body = request.encode();
        for cut in 0..body.len() {
            prop_assert!(ReplicaFetchRequest::decode(&body[..cut]).is_err());
        }
    }

    /// Arbitrary bytes, and valid bodies with one byte changed, decode or
    /// fail, never panic.
    #[test]
    fn garbage_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        response in arb_fetch_response(),
        at in any::<prop::sample::Index>(),
        value in any::<u8>(),
    ) {
        decode_all(&bytes);
        let (body, payload) = response.encode();
        let mut body = body.to_vec();
        let at = at.index(body.len());
        body[at] = value;
        decode_all(&body);
        let _ = ReplicaFetchResponse::decode(&body, &joined(&payload));
    }
}

/// The batches travel as the payload's chunks (not copied on encode),
/// and a decoded response's batches point into the received payload.
#[test]
fn fetch_response_batches_are_not_copied() {
    let response = ReplicaFetchResponse {
        topics: vec![(
            "t".to_string(),
            vec![ReplicaFetchResult {
                partition: PartitionId(0),
                error: ErrorCode::None,
                high_watermark: 10,
                log_start_offset: 0,
                batches: vec![
                    Bytes::from_static(b"first batch"),
                    Bytes::from_static(b"second"),
                ],
            }],
        )],
    };
    let (body, chunks) = response.encode();
    let sent = &response.topics[0].1[0].batches;
    assert_eq!(chunks.len(), sent.len());
    for (chunk, batch) in chunks.iter().zip(sent) {
        assert_eq!(
            chunk.as_ptr(),
            batch.as_ptr(),
            "a batch was copied on encode"
        );
    }
    let payload = joined(&chunks);
    let decoded = ReplicaFetchResponse::decode(&body, &payload).expect("decodes");
    let range = payload.as_ptr_range();
    for batch in &decoded.topics[0].1[0].batches {
        assert!(range.contains(&batch.as_ptr()), "a batch was copied");
    }
    assert_eq!(decoded, response);
}

/// A count far beyond the input is refused before anything is reserved.
#[test]
fn huge_counts_are_refused_before_allocating() {
    let mut body = vec![WIRE_VERSION];
    body.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        EpochsResponse::decode(&body),
        Err(DecodeError::TooLong { .. })
    ));
    let mut body = vec![WIRE_VERSION];
    body.extend_from_slice(&1000u32.to_le_bytes());
    assert!(matches!(
        EpochsResponse::decode(&body),
        Err(DecodeError::Truncated { .. })
    ));
    // One partition claiming a batch larger than the payload.
    let mut body = vec![WIRE_VERSION];
    body.extend_from_slice(&1u32.to_le_bytes());
    body.extend_from_slice(&1u32.to_le_bytes());
    body.push(b't');
    body.extend_from_slice(&1u32.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    body.extend_from_slice(&0i16.to_le_bytes());
    body.extend_from_slice(&0i64.to_le_bytes());
    body.extend_from_slice(&0i64.to_le_bytes());
    body.extend_from_slice(&1u32.to_le_bytes());
    body.extend_from_slice(&1_000_000u32.to_le_bytes());
    assert!(matches!(
        ReplicaFetchResponse::decode(&body, &Bytes::from_static(b"short")),
        Err(DecodeError::Truncated { what: "payload" })
    ));
}

/// Another version is refused, not misread.
#[test]
fn other_versions_are_refused() {
    let mut body = EpochsRequest {
        replica_id: NodeId(1),
        topics: vec![],
    }
    .encode()
    .to_vec();
    body[0] = WIRE_VERSION + 1;
    assert_eq!(
        EpochsRequest::decode(&body),
        Err(DecodeError::UnknownVersion {
            found: WIRE_VERSION + 1,
            supported: WIRE_VERSION
        })
    );
}

/// Offsets and epochs beyond the signed range the logs use are refused.
#[test]
fn offsets_past_i64_are_refused() {
    let request = ReplicaFetchRequest {
        replica_id: NodeId(1),
        max_wait_ms: 0,
        min_bytes: 0,
        max_bytes: 0,
        topics: vec![(
            "t".to_string(),
            vec![ReplicaFetchPartition {
                partition: PartitionId(0),
                fetch_offset: Offset(u64::MAX),
                current_leader_epoch: LeaderEpoch(0),
                durable_end: None,
                partition_max_bytes: 0,
            }],
        )],
    };
    assert!(matches!(
        ReplicaFetchRequest::decode(&request.encode()),
        Err(DecodeError::Invalid {
            what: "fetch offset",
            ..
        })
    ));
}
