//! How a protocol's byte stream splits into frames, for the connection core
//! ([`crate::conn::Connection`]): a framer only reads a frame's header
//! (how long is the whole frame, is the header valid) and turns one whole
//! frame's bytes into the protocol's frame type. Buffering, growth,
//! backpressure and timeouts are the core's, the same for every protocol.
//!
//! [`NativeFramer`]: Fjord's 24-byte header (`fjord_schema::frame`). The
//! Kafka framer (a 4-byte big-endian length) lives with the Kafka edge in
//! the broker.

use bytes::Bytes;
use fjord_schema::frame::{Frame, FrameError, FrameHeader, FRAME_HEADER_LEN};

/// Splits one protocol's byte stream into frames. Sans-IO: no socket, no
/// clock.
pub trait Framer {
    /// A whole frame as the service takes it.
    type Frame;
    /// Why the bytes are not this protocol's frames. The stream cannot be
    /// resynchronised after one, so the connection closes.
    type Error: std::error::Error + Clone;

    /// Largest whole frame, header included: the read buffer's bound.
    fn frame_bytes_max(&self) -> usize;

    /// Room for one read when no longer frame is on its way (what an idle
    /// connection's buffer takes).
    fn read_chunk_bytes(&self) -> usize;

    /// The whole length (header included, at most
    /// [`Framer::frame_bytes_max`]) of the frame at the front of
    /// `buffered`, once its header is there; `Ok(None)` while it is not.
    /// An invalid header is an error.
    fn frame_len(&self, buffered: &[u8]) -> Result<Option<usize>, Self::Error>;

    /// One whole frame's bytes, header included, exactly as long as
    /// [`Framer::frame_len`] said.
    fn frame(&self, bytes: Bytes) -> Result<Self::Frame, Self::Error>;
}

/// Fjord's native frames: a 24-byte header (magic, api, flags, correlation
/// id, body and payload lengths), then the body, then the payload.
#[derive(Debug, Clone)]
pub struct NativeFramer {
    /// Largest body + payload (header excluded).
    frame_len_max: u32,
}

/// Bytes a native read asks for at most when no longer frame is on its
/// way: many pipelined small requests arrive in one read.
const NATIVE_READ_CHUNK_BYTES: usize = 64 * 1024;

impl NativeFramer {
    /// `frame_len_max`: the largest body + payload, header excluded.
    pub fn new(frame_len_max: u32) -> NativeFramer {
        NativeFramer { frame_len_max }
    }
}

impl Framer for NativeFramer {
    type Frame = Frame;
    type Error = FrameError;

    fn frame_bytes_max(&self) -> usize {
        FRAME_HEADER_LEN + self.frame_len_max as usize
    }

    fn read_chunk_bytes(&self) -> usize {
        NATIVE_READ_CHUNK_BYTES
    }

    fn frame_len(&self, buffered: &[u8]) -> Result<Option<usize>, FrameError> {
        if buffered.len() < FRAME_HEADER_LEN {
            return Ok(None);
        }
        let header = FrameHeader::parse(&buffered[..FRAME_HEADER_LEN], self.frame_len_max)?;
        // Bounded by frame_len_max (a u32), so this fits in usize.
        Ok(Some(FRAME_HEADER_LEN + header.frame_len() as usize))
    }

    fn frame(&self, mut bytes: Bytes) -> Result<Frame, FrameError> {
        let header = FrameHeader::parse(&bytes, self.frame_len_max)?;
        assert_eq!(
            bytes.len() as u64,
            FRAME_HEADER_LEN as u64 + header.frame_len(),
            "a whole frame"
        );
        let mut frame = bytes.split_off(FRAME_HEADER_LEN);
        let body = frame.split_to(header.body_len.get() as usize);
        Ok(Frame {
            header,
            body,
            payload: frame,
        })
    }
}
