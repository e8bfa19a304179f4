use super::*;
use bytes::Bytes;
use fjord_net::client::{decode_typed, ClientError};
use fjord_schema::api::Response;
use fjord_schema::frame::{FrameDecoder, FrameHeader};
use fjord_schema::CorrelationId;

fn dispatcher() -> Dispatcher {
    Dispatcher::new(
        Arc::new(BrokerView {
            node_id: NodeId(7),
            host: "127.0.0.1".into(),
            port: 9192,
            shard_ports: vec![9193, 9194],
        }),
        ShardId(0),
    )
}

fn request(api_key: u16, version: u16, flags: u16, body: &[u8]) -> Frame {
    let header = FrameHeader::new(
        api_key,
        version,
        FrameFlags(flags),
        CorrelationId(41),
        body.len() as u32,
        0,
    );
    Frame {
        header,
        body: Bytes::copy_from_slice(body),
        payload: Bytes::new(),
    }
}

/// Runs one request through the dispatcher and decodes the response frame.
fn answer(frame: &Frame) -> Option<Frame> {
    let mut out = BytesMut::new();
    dispatcher().respond(frame, &mut out);
    if out.is_empty() {
        return None;
    }
    let response = FrameDecoder::new(1 << 20)
        .decode(&mut out)
        .expect("well-formed frame")
        .expect("whole frame");
    assert!(out.is_empty(), "exactly one frame");
    assert_eq!(response.header.correlation_id(), CorrelationId(41));
    assert!(response.header.flags().is_response());
    Some(response)
}

fn metadata_body(topics: Option<&[&str]>) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let topics = topics.map(|topics| {
        let names: Vec<_> = topics.iter().map(|t| fbb.create_string(t)).collect();
        fbb.create_vector(&names)
    });
    let root = wire::MetadataRequest::create(
        &mut fbb,
        &wire::MetadataRequestArgs {
            topics,
            allow_auto_topic_creation: false,
        },
    );
    fbb.finish(root, None);
    fbb.finished_data().to_vec()
}

fn empty_table() -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let start = fbb.start_table();
    let root = fbb.end_table(start);
    fbb.finish(root, None);
    fbb.finished_data().to_vec()
}

fn broker_error(frame: &Frame) -> (ErrorCode, String) {
    match decode_typed(frame, ApiKey::ApiVersions) {
        Err(ClientError::Broker { code, message }) => (code, message),
        other => panic!("expected an error response, got {other:?}"),
    }
}

#[test]
fn api_versions_lists_exactly_the_served_apis() {
    let response = answer(&request(0, 0, 0, &empty_table())).expect("answered");
    let Ok(Response::ApiVersions(versions)) = decode_typed(&response, ApiKey::ApiVersions) else {
        panic!("not an ApiVersions response");
    };
    assert_eq!(versions.error_code(), 0);
    let listed: Vec<(u16, u16, u16)> = versions
        .api_versions()
        .iter()
        .flatten()
        .map(|r| (r.api_key(), r.min_version(), r.max_version()))
        .collect();
    assert_eq!(listed, vec![(0, 0, 0), (1, 0, 0)]);
    for (key, min, max) in &listed {
        assert!(SUPPORTED_VERSIONS
            .iter()
            .any(|(k, lo, hi)| *k as u16 == *key && lo == min && hi == max));
    }
}

#[test]
fn metadata_lists_this_broker_and_no_topics() {
    let response = answer(&request(1, 0, 0, &metadata_body(None))).expect("answered");
    let Ok(Response::Metadata(metadata)) = decode_typed(&response, ApiKey::Metadata) else {
        panic!("not a Metadata response");
    };
    let brokers: Vec<_> = metadata.brokers().iter().flatten().collect();
    assert_eq!(brokers.len(), 1);
    assert_eq!(brokers[0].node_id(), 7);
    assert_eq!(brokers[0].host(), "127.0.0.1");
    assert_eq!(brokers[0].port(), 9192);
    assert_eq!(
        brokers[0]
            .shard_ports()
            .iter()
            .flatten()
            .collect::<Vec<_>>(),
        vec![9193, 9194]
    );
    assert_eq!(metadata.controller_id(), 7);
    assert_eq!(metadata.topics().iter().flatten().count(), 0);
}

#[test]
fn metadata_for_named_topics_says_unknown() {
    let body = metadata_body(Some(&["orders", "payments"]));
    let response = answer(&request(1, 0, 0, &body)).expect("answered");
    let Ok(Response::Metadata(metadata)) = decode_typed(&response, ApiKey::Metadata) else {
        panic!("not a Metadata response");
    };
    let topics: Vec<(String, i16)> = metadata
        .topics()
        .iter()
        .flatten()
        .map(|t| (t.name().to_owned(), t.error_code()))
        .collect();
    let unknown = ErrorCode::UnknownTopicOrPartition.code();
    assert_eq!(
        topics,
        vec![("orders".into(), unknown), ("payments".into(), unknown)]
    );
}

#[test]
fn unserved_unknown_and_wrong_version_are_unsupported() {
    for (key, version) in [(4, 0), (2, 0), (999, 0), (0, 9), (1, 3)] {
        let response = answer(&request(key, version, 0, &empty_table())).expect("answered");
        assert!(response.header.flags().is_error());
        assert_eq!(response.header.api_key.get(), key);
        assert_eq!(response.header.api_version.get(), version);
        let (code, message) = broker_error(&response);
        assert_eq!(
            code,
            ErrorCode::UnsupportedVersion,
            "{key} v{version}: {message}"
        );
    }
}

#[test]
fn malformed_body_and_wrong_direction_are_invalid_request() {
    for frame in [
        request(1, 0, 0, b"\xff\xff\xff\x7fgarbage"),
        request(1, 0, 0, b""),
        request(0, 0, FrameFlags::RESPONSE, &empty_table()),
    ] {
        let response = answer(&frame).expect("answered");
        let (code, _) = broker_error(&response);
        assert_eq!(code, ErrorCode::InvalidRequest);
    }
}

#[test]
fn no_response_flag_is_honoured() {
    assert!(answer(&request(0, 0, FrameFlags::NO_RESPONSE, &empty_table())).is_none());
}
