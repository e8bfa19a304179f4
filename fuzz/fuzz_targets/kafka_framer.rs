//! The Kafka listener's framer (`fjord_broker::kafka::frame::KafkaFramer`)
//! on the connection core (`fjord_net::conn::Connection`, as the listener
//! runs it) fed an arbitrary byte stream in arbitrary reads, then every
//! frame through the request-header decode.
//!
//! Input layout:
//!
//! ```text
//! 0      frame_bytes_max = 2^(byte % 21) + byte 1 (so 1 B .. 1 MiB + 255)
//! 1      see above
//! 2      bit 0: unused; bits 1-4: n, the number of piece sizes
//! 3..3+n piece sizes (byte + 1), used cyclically (none: all at once)
//! rest   the byte stream
//! ```
//!
//! Checks: never panics; the frames and the error are those of a
//! straightforward reference parser of the same stream, whatever the pieces;
//! a failed connection stays failed with the same error; what stays
//! buffered is exactly the undecoded tail (never more than one frame); the
//! read buffer never grows past one whole frame; every frame's request header decodes at
//! every header version or is refused, and one that decodes re-encodes and
//! decodes to the same header (see `fjord_fuzz::has_negative_tag` for the
//! one exception); `decode_request` (the listener's trust
//! boundary) takes every frame without panicking.
#![no_main]

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use fjord_broker::kafka::frame::{FrameError, KafkaFramer};
use fjord_net::conn::{Action, Connection, ConnectionConfig, ConnectionError};
use fjord_broker::kafka::handler::decode_request;
use kafka_protocol::messages::RequestHeader;
use kafka_protocol::protocol::{Decodable, Encodable};
use libfuzzer_sys::fuzz_target;

/// The smallest frame the framer accepts: api key, api version,
/// correlation id, client id length.
const HEADER_MIN: i32 = 10;

/// Frames and error as the protocol defines them.
fn reference(stream: &[u8], frame_bytes_max: u32) -> (Vec<Bytes>, Option<FrameError>, usize) {
    let mut frames = Vec::new();
    let mut at = 0;
    while stream.len() - at >= 4 {
        let len = i32::from_be_bytes(stream[at..at + 4].try_into().expect("4 bytes"));
        if len < HEADER_MIN {
            return (frames, Some(FrameError::TooShort(len)), 0);
        }
        if len as u32 > frame_bytes_max {
            return (
                frames,
                Some(FrameError::TooLarge {
                    len: i64::from(len),
                    max: frame_bytes_max,
                }),
                0,
            );
        }
        let end = at + 4 + len as usize;
        if stream.len() < end {
            break;
        }
        frames.push(Bytes::copy_from_slice(&stream[at + 4..end]));
        at = end;
    }
    (frames, None, stream.len() - at)
}

/// Runs the connection over `stream` in reads of the piece sizes; returns
/// frames, error and the bytes left buffered.
fn frame(stream: &[u8], pieces: &[u8], frame_bytes_max: u32) -> (Vec<Bytes>, Option<FrameError>, usize) {
    let config = ConnectionConfig {
        frame_bytes_max,
        ..ConnectionConfig::default()
    };
    let now = Instant::now();
    let mut conn = Connection::with_framer(config, KafkaFramer::new(frame_bytes_max), now);
    let mut frames = Vec::new();
    let mut sizes = pieces.iter().map(|&b| usize::from(b) + 1).cycle();
    let mut rest = stream;
    loop {
        match conn.poll_action(now) {
            Ok(Action::Handle(frame)) => frames.push(frame),
            Ok(Action::Read) => {
                // Only the undecoded tail stays: less than a header, or
                // less than the pending frame.
                let consumed: usize = frames.iter().map(|f| 4 + f.len()).sum();
                let fed = stream.len() - rest.len();
                assert_eq!(conn.read_buffered_bytes(), fed - consumed);
                if rest.is_empty() {
                    return (frames, None, conn.read_buffered_bytes());
                }
                assert!(conn.read_capacity() <= 4 + frame_bytes_max as usize);
                let want = sizes.next().unwrap_or(rest.len()).min(rest.len());
                let space = conn.read_space();
                assert!(!space.is_empty(), "read_space gave no room");
                let n = want.min(space.len());
                space[..n].copy_from_slice(&rest[..n]);
                conn.handle_read(n);
                rest = &rest[n..];
            }
            Err(ConnectionError::Frame(error)) => {
                // Failed for good.
                assert!(matches!(
                    conn.poll_action(now),
                    Err(ConnectionError::Frame(again)) if again == error
                ));
                return (frames, Some(error), 0);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// The request header at every header version: refused, or decoded and
/// stable through an encode.
fn check_header(frame: &Bytes) {
    for version in 0..=2 {
        let mut buf = frame.clone();
        let Ok(header) = RequestHeader::decode(&mut buf, version) else {
            continue;
        };
        if fjord_fuzz::has_negative_tag(&header) {
            continue;
        }
        let mut encoded = BytesMut::new();
        header
            .encode(&mut encoded, version)
            .expect("a decoded header encodes");
        let again = RequestHeader::decode(&mut encoded.freeze(), version)
            .expect("an encoded header decodes");
        assert_eq!(header, again);
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let frame_bytes_max = (1u32 << (data[0] % 21)) + u32::from(data[1]);
    let n = usize::from((data[2] >> 1) % 16).min(data.len() - 3);
    let pieces = &data[3..3 + n];
    let stream = &data[3 + n..];

    let expected = reference(stream, frame_bytes_max);
    let got = frame(stream, pieces, frame_bytes_max);
    assert_eq!(got, expected);
    // All at once agrees too.
    assert_eq!(frame(stream, &[], frame_bytes_max), expected);

    for frame in &got.0 {
        check_header(frame);
        let _ = decode_request(frame.clone());
    }
});
