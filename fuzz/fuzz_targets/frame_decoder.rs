//! `FrameDecoder` fed arbitrary bytes in arbitrary pieces.
//!
//! Input layout:
//!
//! ```text
//! 0      frame_len_max = 2^(byte % 21), plus byte 1 (so 1 B .. 1 MiB)
//! 1      see above
//! 2      n: number of piece sizes (n % 16, 0 means "all at once")
//! 3..3+n piece sizes (byte + 1), used cyclically
//! rest   the byte stream
//! ```
//!
//! Checks: never panics; a failed decoder stays failed with the same error;
//! every decoded frame re-encodes to exactly the bytes it was decoded from;
//! the pieces decode to the same frames and error as the whole stream at
//! once; what is left in the buffer is the undecoded tail.
#![no_main]

use bytes::BytesMut;
use fjord_schema::frame::{encode_frame, Frame, FrameDecoder, FrameError, FRAME_HEADER_LEN};
use libfuzzer_sys::fuzz_target;

/// Decodes `stream` fed in pieces of the given sizes (cyclically; empty means
/// all at once). Returns the frames, the error if any and the bytes left.
fn decode(
    stream: &[u8],
    pieces: &[u8],
    frame_len_max: u32,
) -> (Vec<Frame>, Option<FrameError>, BytesMut) {
    let mut decoder = FrameDecoder::new(frame_len_max);
    let mut buffer = BytesMut::new();
    let mut frames = Vec::new();
    let mut sizes = pieces.iter().map(|&b| usize::from(b) + 1).cycle();
    let mut rest = stream;
    loop {
        let n = sizes.next().unwrap_or(rest.len()).min(rest.len());
        let (piece, tail) = rest.split_at(n);
        buffer.extend_from_slice(piece);
        rest = tail;
        loop {
            match decoder.decode(&mut buffer) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(error) => {
                    // Failed for good, with the same error, whatever follows.
                    assert_eq!(decoder.decode(&mut buffer), Err(error.clone()));
                    let mut more = BytesMut::from(stream);
                    assert_eq!(decoder.decode(&mut more), Err(error.clone()));
                    return (frames, Some(error), buffer);
                }
            }
        }
        if rest.is_empty() {
            break;
        }
    }
    if let Some(pending) = decoder.pending_frame_len() {
        assert!((buffer.len() as u64) < pending);
    } else {
        assert!(buffer.len() < FRAME_HEADER_LEN);
    }
    (frames, None, buffer)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let frame_len_max = (1u32 << (data[0] % 21)) + u32::from(data[1]);
    let n = usize::from(data[2] % 16).min(data.len() - 3);
    let pieces = &data[3..3 + n];
    let stream = &data[3 + n..];

    let (frames, error, rest) = decode(stream, pieces, frame_len_max);

    // Decoded frames re-encode to the bytes they came from.
    let mut offset = 0;
    for frame in &frames {
        assert!(frame.header.frame_len() <= u64::from(frame_len_max));
        let mut encoded = BytesMut::new();
        encode_frame(
            &mut encoded,
            frame.header.api_key.get(),
            frame.header.api_version.get(),
            frame.header.flags(),
            frame.header.correlation_id(),
            &frame.body,
            &frame.payload,
        );
        assert_eq!(&encoded[..], &stream[offset..offset + encoded.len()]);
        offset += encoded.len();
    }
    if error.is_none() {
        // The decoder consumed the headers of a pending frame; the buffer
        // holds the rest of the stream after that.
        assert!(stream[offset..].ends_with(&rest));
        let consumed_header = stream.len() - offset - rest.len();
        assert!(consumed_header == 0 || consumed_header == FRAME_HEADER_LEN);
    }

    // Pieces make no difference.
    if !pieces.is_empty() {
        let (whole_frames, whole_error, _) = decode(stream, &[], frame_len_max);
        assert_eq!(frames, whole_frames);
        assert_eq!(error, whole_error);
    }
});
