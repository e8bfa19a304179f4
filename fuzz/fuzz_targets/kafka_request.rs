//! Every api and version the Kafka listener serves (`KAFKA_APIS`), decoded
//! through the listener's trust boundary,
//! `fjord_broker::kafka::handler::decode_request`.
//!
//! Input layout:
//!
//! ```text
//! 0      api: index into KAFKA_APIS (byte % its length)
//! 1      bit 7 clear: a valid request header for that api at version
//!          min + (bits 0-5 % the served range), correlation id 7, client
//!          id "fuzz" (null when bit 6 is set); the rest is the body
//!        bit 7 set: "raw": the frame is the api key, then the rest of the
//!          input as it is (version, header and body, any of them invalid)
//! rest   body (or version + header + body)
//! ```
//!
//! Checks: never panics (nor aborts on an allocation); apis and versions
//! outside KAFKA_APIS are refused (ApiVersions at an unserved version
//! excepted, which is answered); a valid header comes back as it was
//! written; the body decodes through the edge exactly when it decodes as
//! the api's message type on its own; a decoded body re-encodes (to
//! `compute_size` bytes) and decodes to the same message (see
//! `fjord_fuzz::has_negative_tag` for the one exception).
#![no_main]

use bytes::{BufMut, Bytes, BytesMut};
use fjord_broker::kafka::handler::{decode_request, HandleError, KafkaRequest, KAFKA_APIS};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use libfuzzer_sys::fuzz_target;

/// Decodes `body` as `T` at `version`; if it decodes, checks that it
/// re-encodes to `compute_size` bytes and decodes to the same message.
/// Returns whether it decoded.
fn round_trip<T: Decodable + Encodable + PartialEq + std::fmt::Debug>(
    body: &Bytes,
    version: i16,
) -> bool {
    let Ok(message) = T::decode(&mut body.clone(), version) else {
        return false;
    };
    if fjord_fuzz::has_negative_tag(&message) {
        return true;
    }
    let mut encoded = BytesMut::new();
    message
        .encode(&mut encoded, version)
        .expect("a decoded request encodes at its version");
    let size = message
        .compute_size(version)
        .expect("a decoded request has a size");
    assert_eq!(size, encoded.len(), "compute_size disagrees with encode");
    let again = T::decode(&mut encoded.freeze(), version).expect("an encoded request decodes");
    assert_eq!(message, again);
    true
}

/// [`round_trip`] with the message type of `api`.
fn body_decodes(api: ApiKey, body: &Bytes, version: i16) -> bool {
    match api {
        ApiKey::Produce => round_trip::<ProduceRequest>(body, version),
        ApiKey::Fetch => round_trip::<FetchRequest>(body, version),
        ApiKey::ListOffsets => round_trip::<ListOffsetsRequest>(body, version),
        ApiKey::Metadata => round_trip::<MetadataRequest>(body, version),
        ApiKey::OffsetCommit => round_trip::<OffsetCommitRequest>(body, version),
        ApiKey::OffsetFetch => round_trip::<OffsetFetchRequest>(body, version),
        ApiKey::FindCoordinator => round_trip::<FindCoordinatorRequest>(body, version),
        ApiKey::JoinGroup => round_trip::<JoinGroupRequest>(body, version),
        ApiKey::Heartbeat => round_trip::<HeartbeatRequest>(body, version),
        ApiKey::LeaveGroup => round_trip::<LeaveGroupRequest>(body, version),
        ApiKey::SyncGroup => round_trip::<SyncGroupRequest>(body, version),
        ApiKey::DescribeGroups => round_trip::<DescribeGroupsRequest>(body, version),
        ApiKey::ListGroups => round_trip::<ListGroupsRequest>(body, version),
        ApiKey::ApiVersions => round_trip::<ApiVersionsRequest>(body, version),
        ApiKey::CreateTopics => round_trip::<CreateTopicsRequest>(body, version),
        ApiKey::DeleteTopics => round_trip::<DeleteTopicsRequest>(body, version),
        ApiKey::DeleteGroups => round_trip::<DeleteGroupsRequest>(body, version),
        ApiKey::InitProducerId => round_trip::<InitProducerIdRequest>(body, version),
        ApiKey::DescribeConfigs => round_trip::<DescribeConfigsRequest>(body, version),
        ApiKey::AlterConfigs => round_trip::<AlterConfigsRequest>(body, version),
        ApiKey::IncrementalAlterConfigs => {
            round_trip::<IncrementalAlterConfigsRequest>(body, version)
        }
        ApiKey::CreatePartitions => round_trip::<CreatePartitionsRequest>(body, version),
        ApiKey::DescribeCluster => round_trip::<DescribeClusterRequest>(body, version),
        other => panic!("{other:?} is not in KAFKA_APIS"),
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (api, min, max) = KAFKA_APIS[usize::from(data[0]) % KAFKA_APIS.len()];
    let rest = &data[2..];

    if data[1] & 0x80 != 0 {
        // Raw: anything after the api key.
        let mut frame = (api as i16).to_be_bytes().to_vec();
        frame.extend_from_slice(rest);
        let version = match frame.get(2..4) {
            Some(v) => i16::from_be_bytes([v[0], v[1]]),
            None => {
                assert!(decode_request(Bytes::from(frame)).is_err());
                return;
            }
        };
        match decode_request(Bytes::from(frame)) {
            Ok((header, v, request)) => {
                assert_eq!(v, version);
                assert_eq!(header.request_api_key, api as i16);
                assert_eq!(header.request_api_version, version);
                if (min..=max).contains(&version) {
                    assert!(!matches!(request, KafkaRequest::UnsupportedApiVersions));
                } else {
                    assert_eq!(api, ApiKey::ApiVersions, "an unserved version decoded");
                    assert!(matches!(request, KafkaRequest::UnsupportedApiVersions));
                }
                std::hint::black_box(format!("{request:?}"));
            }
            Err(HandleError::Unsupported {
                api_key,
                version: v,
            }) => {
                assert_eq!((api_key, v), (api as i16, version));
                assert!(!(min..=max).contains(&version) && api != ApiKey::ApiVersions);
            }
            Err(error) => {
                std::hint::black_box(error.to_string());
            }
        }
        return;
    }

    let version = min + i16::from(data[1] & 0x3f) % (max - min + 1);
    let header_version = api.request_header_version(version);
    let mut header = RequestHeader::default();
    header.request_api_key = api as i16;
    header.request_api_version = version;
    header.correlation_id = 7;
    header.client_id = (data[1] & 0x40 == 0).then(|| StrBytes::from_static_str("fuzz"));
    let mut frame = BytesMut::new();
    header
        .encode(&mut frame, header_version)
        .expect("the header encodes");
    frame.put_slice(rest);
    let body = Bytes::copy_from_slice(rest);

    let direct = body_decodes(api, &body, version);
    match decode_request(frame.freeze()) {
        Ok((decoded, v, request)) => {
            assert_eq!(v, version);
            assert_eq!(decoded, header);
            assert!(direct, "the edge decoded a body its type refuses");
            std::hint::black_box(format!("{request:?}"));
        }
        Err(error) => {
            assert!(!direct, "the edge refused a body its type decodes: {error}");
        }
    }
});
