use bytes::BytesMut;
use flatbuffers::FlatBufferBuilder;

use super::*;
use crate::frame::{encode_frame, FrameDecoder, FrameFlags};
use crate::ids::CorrelationId;

fn frame(api_key: u16, version: u16, flags: u16, body: &[u8], payload: &[u8]) -> Frame {
    let mut out = BytesMut::new();
    encode_frame(
        &mut out,
        api_key,
        version,
        FrameFlags(flags),
        CorrelationId(7),
        body,
        payload,
    );
    FrameDecoder::new(1 << 20)
        .decode(&mut out)
        .unwrap()
        .unwrap()
}

fn produce_body(slices: &[(u32, u32)]) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let partitions: Vec<_> = slices
        .iter()
        .enumerate()
        .map(|(i, (offset, len))| {
            let slice = wire::PayloadSlice::new(*offset, *len);
            wire::PartitionProduceData::create(
                &mut fbb,
                &wire::PartitionProduceDataArgs {
                    partition: i as u32,
                    records: Some(&slice),
                },
            )
        })
        .collect();
    let partitions = fbb.create_vector(&partitions);
    let name = fbb.create_string("events");
    let topic = wire::TopicProduceData::create(
        &mut fbb,
        &wire::TopicProduceDataArgs {
            name: Some(name),
            partitions: Some(partitions),
        },
    );
    let topics = fbb.create_vector(&[topic]);
    let request = wire::ProduceRequest::create(
        &mut fbb,
        &wire::ProduceRequestArgs {
            acks: wire::Acks::All,
            timeout_ms: 1000,
            topics: Some(topics),
            ..Default::default()
        },
    );
    fbb.finish_minimal(request);
    fbb.finished_data().to_vec()
}

#[test]
fn produce_request_round_trips_with_payload_slices() {
    let payload = b"aaaabbbbbbcc";
    let frame = frame(
        ApiKey::Produce as u16,
        0,
        0,
        &produce_body(&[(0, 4), (4, 6), (10, 2)]),
        payload,
    );
    let Request::Produce(request) = decode_request(&frame).unwrap() else {
        panic!("not a produce request")
    };
    assert_eq!(request.acks(), wire::Acks::All);
    let topic = request.topics().unwrap().get(0);
    assert_eq!(topic.name(), "events");
    let records: Vec<&[u8]> = topic
        .partitions()
        .unwrap()
        .iter()
        .map(|p| payload_slice(&frame.payload, p.records()))
        .collect();
    assert_eq!(records, vec![&b"aaaa"[..], &b"bbbbbb"[..], &b"cc"[..]]);
}

#[test]
fn payload_slices_out_of_bounds_are_rejected() {
    for slice in [(0, 13), (12, 1), (u32::MAX, 2), (2, u32::MAX)] {
        let frame = frame(
            ApiKey::Produce as u16,
            0,
            0,
            &produce_body(&[slice]),
            b"aaaabbbbbbcc",
        );
        assert!(
            matches!(
                decode_request(&frame),
                Err(DecodeError::PayloadOutOfBounds { .. })
            ),
            "{slice:?}"
        );
    }
}

#[test]
fn unknown_keys_versions_and_directions_are_typed_errors() {
    let body = produce_body(&[]);
    let unknown = frame(999, 0, 0, &body, &[]);
    assert_eq!(
        decode_request(&unknown).unwrap_err(),
        DecodeError::UnknownApiKey(999)
    );

    let future = frame(ApiKey::Produce as u16, 7, 0, &body, &[]);
    let error = decode_request(&future).unwrap_err();
    assert_eq!(
        error,
        DecodeError::UnsupportedVersion {
            api_key: ApiKey::Produce,
            version: 7,
            min: 0,
            max: 0
        }
    );
    assert_eq!(error.error_code(), ErrorCode::UnsupportedVersion);

    let response = frame(ApiKey::Produce as u16, 0, FrameFlags::RESPONSE, &body, &[]);
    assert!(matches!(
        decode_request(&response),
        Err(DecodeError::WrongDirection { .. })
    ));
    let request = frame(ApiKey::Produce as u16, 0, 0, &body, &[]);
    assert!(matches!(
        decode_response(&request),
        Err(DecodeError::WrongDirection { .. })
    ));
}

#[test]
fn malformed_bodies_are_rejected_for_every_api() {
    for (api_key, _, _) in SUPPORTED_VERSIONS {
        for body in [&[][..], &[1, 2, 3][..], &[0xff; 64][..]] {
            let request = frame(api_key as u16, 0, 0, body, &[]);
            let error = decode_request(&request).unwrap_err();
            assert!(
                matches!(error, DecodeError::Malformed { .. }),
                "{api_key:?}: {error:?}"
            );
            assert_eq!(error.error_code(), ErrorCode::InvalidRequest);
            let response = frame(api_key as u16, 0, FrameFlags::RESPONSE, body, &[]);
            assert!(decode_response(&response).is_err(), "{api_key:?}");
        }
    }
}

#[test]
fn error_responses_decode_for_any_api() {
    let mut fbb = FlatBufferBuilder::new();
    let message = fbb.create_string("no such api");
    let body = wire::ErrorResponse::create(
        &mut fbb,
        &wire::ErrorResponseArgs {
            error_code: ErrorCode::UnsupportedVersion.code(),
            message: Some(message),
        },
    );
    fbb.finish_minimal(body);
    let response = frame(
        ApiKey::Fetch as u16,
        0,
        FrameFlags::RESPONSE | FrameFlags::ERROR,
        fbb.finished_data(),
        &[],
    );
    let Response::Error(error) = decode_response(&response).unwrap() else {
        panic!("not an error response")
    };
    assert_eq!(
        ErrorCode::from_code(error.error_code()),
        ErrorCode::UnsupportedVersion
    );
    assert_eq!(error.message(), Some("no such api"));
}

#[test]
fn api_keys_are_unique_and_ranges_sane() {
    for (i, (key, min, max)) in SUPPORTED_VERSIONS.iter().enumerate() {
        assert!(min <= max);
        assert_eq!(ApiKey::from_u16(*key as u16), Some(*key));
        assert!(SUPPORTED_VERSIONS[i + 1..].iter().all(|(k, _, _)| k != key));
    }
}

/// The checked-in generated code was produced from the `.fbs` files as they
/// are now. `scripts/gen-flatbuffers.sh --check` (run by CI) compares the
/// code itself; this catches an edited schema without flatc installed.
#[test]
fn generated_code_matches_the_schema_files() {
    let fbs = concat!(env!("CARGO_MANIFEST_DIR"), "/fbs");
    let mut names: Vec<String> = std::fs::read_dir(fbs)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".fbs"))
        .collect();
    names.sort();
    let mut crc = flate2::Crc::new();
    for name in &names {
        crc.update(format!("{name}\n").as_bytes());
        crc.update(&std::fs::read(format!("{fbs}/{name}")).unwrap());
    }
    let recorded = include_str!("../generated/FBS_FINGERPRINT").trim();
    assert_eq!(
        format!("{:08x}", crc.sum()),
        recorded,
        "schema/fbs changed: run scripts/gen-flatbuffers.sh and commit schema/src/generated"
    );
}

fn join_group_body(group_id: &str) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let group_id = Some(fbb.create_string(group_id));
    let name = fbb.create_string("range");
    let metadata = fbb.create_vector(&[1u8, 2, 3]);
    let protocol = wire::JoinGroupProtocol::create(
        &mut fbb,
        &wire::JoinGroupProtocolArgs {
            name: Some(name),
            metadata: Some(metadata),
        },
    );
    let protocols = fbb.create_vector(&[protocol]);
    let protocol_type = fbb.create_string("consumer");
    let instance = fbb.create_string("host-1");
    let request = wire::JoinGroupRequest::create(
        &mut fbb,
        &wire::JoinGroupRequestArgs {
            group_id,
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 300_000,
            group_instance_id: Some(instance),
            protocol_type: Some(protocol_type),
            protocols: Some(protocols),
            ..Default::default()
        },
    );
    fbb.finish_minimal(request);
    fbb.finished_data().to_vec()
}

#[test]
fn group_requests_round_trip_and_required_fields_are_enforced() {
    let request = frame(
        ApiKey::JoinGroup as u16,
        0,
        0,
        &join_group_body("payments"),
        &[],
    );
    let Request::JoinGroup(join) = decode_request(&request).unwrap() else {
        panic!("not a join group request")
    };
    assert_eq!(join.group_id(), "payments");
    assert_eq!(join.member_id(), None);
    assert_eq!(join.group_instance_id(), Some("host-1"));
    assert_eq!(join.rebalance_timeout_ms(), 300_000);
    let protocol = join.protocols().unwrap().get(0);
    assert_eq!(protocol.name(), "range");
    assert_eq!(protocol.metadata().unwrap().bytes(), &[1, 2, 3]);

    // A table without the required group id (the builder refuses to make
    // one, so an empty table of another type stands in for a hostile peer).
    let mut fbb = FlatBufferBuilder::new();
    let empty = wire::ListGroupsRequest::create(&mut fbb, &Default::default());
    fbb.finish_minimal(empty);
    let missing = frame(ApiKey::JoinGroup as u16, 0, 0, fbb.finished_data(), &[]);
    assert!(matches!(
        decode_request(&missing),
        Err(DecodeError::Malformed {
            api_key: ApiKey::JoinGroup,
            ..
        })
    ));
}

#[test]
fn group_api_keys_live_in_the_reserved_range() {
    for key in [
        ApiKey::FindCoordinator,
        ApiKey::JoinGroup,
        ApiKey::SyncGroup,
        ApiKey::Heartbeat,
        ApiKey::LeaveGroup,
        ApiKey::OffsetCommit,
        ApiKey::OffsetFetch,
        ApiKey::ListGroups,
        ApiKey::DescribeGroups,
    ] {
        assert!((10..=19).contains(&(key as u16)), "{key:?}");
    }
}

#[test]
fn init_producer_id_round_trips_in_the_producer_id_range() {
    assert!((20..=29).contains(&(ApiKey::InitProducerId as u16)));
    let mut fbb = FlatBufferBuilder::new();
    let request = wire::InitProducerIdRequest::create(
        &mut fbb,
        &wire::InitProducerIdRequestArgs {
            transactional_id: None,
            transaction_timeout_ms: -1,
            producer_id: 42,
            producer_epoch: 3,
        },
    );
    fbb.finish(request, None);
    let request = frame(
        ApiKey::InitProducerId as u16,
        0,
        0,
        fbb.finished_data(),
        &[],
    );
    let Ok(Request::InitProducerId(request)) = decode_request(&request) else {
        panic!("not an InitProducerId request");
    };
    assert_eq!(request.transactional_id(), None);
    assert_eq!((request.producer_id(), request.producer_epoch()), (42, 3));

    let mut fbb = FlatBufferBuilder::new();
    let response = wire::InitProducerIdResponse::create(
        &mut fbb,
        &wire::InitProducerIdResponseArgs {
            producer_id: 43,
            producer_epoch: 0,
            ..Default::default()
        },
    );
    fbb.finish(response, None);
    let response = frame(
        ApiKey::InitProducerId as u16,
        0,
        FrameFlags::RESPONSE,
        fbb.finished_data(),
        &[],
    );
    let Ok(Response::InitProducerId(response)) = decode_response(&response) else {
        panic!("not an InitProducerId response");
    };
    assert_eq!((response.producer_id(), response.producer_epoch()), (43, 0));
    assert_eq!(response.error_code(), 0);
}
