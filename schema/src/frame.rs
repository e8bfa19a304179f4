//! Native protocol framing: a fixed 24-byte little-endian header, a
//! flatbuffers body, then an opaque payload.
//!
//! ```text
//! 0  magic           u32  "FJRD"
//! 4  api_key         u16  which request/response type the body is
//! 6  api_version     u16  version of that type's schema
//! 8  flags           u16  FrameFlags
//! 10 reserved        u16  must be zero
//! 12 correlation_id  u32  echoed in the response
//! 16 body_len        u32  bytes of flatbuffers body after the header
//! 20 payload_len     u32  bytes of payload after the body
//! ```
//!
//! The payload carries record batches (produce requests, fetch responses);
//! the body refers to them by `PayloadSlice`. Batches therefore go from the
//! socket buffer to disk and from the cache to the socket without being
//! copied into or out of a flatbuffer.
//!
//! The decoder is incremental: it is fed whatever the socket produced and
//! yields whole frames, never panicking on any input.

use bytes::{Buf, Bytes, BytesMut};
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::ids::CorrelationId;

/// "FJRD" read as a little-endian u32.
pub const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"FJRD");
pub const FRAME_HEADER_LEN: usize = 24;
/// Most the decoder asks the buffer to grow by at once for a frame whose
/// bytes have not arrived yet.
pub const RESERVE_STEP_BYTES: usize = 256 * 1024;
/// Default upper bound on body + payload; brokers configure their own.
pub const FRAME_LEN_MAX_DEFAULT: u32 = 64 * 1024 * 1024;

const _: () = assert!(size_of::<FrameHeader>() == FRAME_HEADER_LEN);

/// Frame flag bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FrameFlags(pub u16);

impl FrameFlags {
    /// The frame is a response (else a request).
    pub const RESPONSE: u16 = 1 << 0;
    /// The sender expects no response (produce with acks=0).
    pub const NO_RESPONSE: u16 = 1 << 1;
    /// A response whose body is an `ErrorResponse`, not the api's own type.
    pub const ERROR: u16 = 1 << 2;
    const KNOWN: u16 = Self::RESPONSE | Self::NO_RESPONSE | Self::ERROR;

    pub fn is_response(self) -> bool {
        self.0 & Self::RESPONSE != 0
    }
    pub fn no_response(self) -> bool {
        self.0 & Self::NO_RESPONSE != 0
    }
    pub fn is_error(self) -> bool {
        self.0 & Self::ERROR != 0
    }
}

#[repr(C)]
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
pub struct FrameHeader {
    pub magic: U32,
    pub api_key: U16,
    pub api_version: U16,
    pub flags: U16,
    pub reserved: U16,
    pub correlation_id: U32,
    pub body_len: U32,
    pub payload_len: U32,
}

impl FrameHeader {
    pub fn new(
        api_key: u16,
        api_version: u16,
        flags: FrameFlags,
        correlation_id: CorrelationId,
        body_len: u32,
        payload_len: u32,
    ) -> FrameHeader {
        FrameHeader {
            magic: U32::new(FRAME_MAGIC),
            api_key: U16::new(api_key),
            api_version: U16::new(api_version),
            flags: U16::new(flags.0),
            reserved: U16::new(0),
            correlation_id: U32::new(correlation_id.0),
            body_len: U32::new(body_len),
            payload_len: U32::new(payload_len),
        }
    }

    pub fn flags(&self) -> FrameFlags {
        FrameFlags(self.flags.get())
    }

    pub fn correlation_id(&self) -> CorrelationId {
        CorrelationId(self.correlation_id.get())
    }

    /// Bytes after the header: body plus payload.
    pub fn frame_len(&self) -> u64 {
        u64::from(self.body_len.get()) + u64::from(self.payload_len.get())
    }

    /// Parses and checks a header. `bytes` must hold at least
    /// `FRAME_HEADER_LEN` bytes.
    pub fn parse(bytes: &[u8], frame_len_max: u32) -> Result<FrameHeader, FrameError> {
        let (header, _) =
            FrameHeader::read_from_prefix(bytes).map_err(|_| FrameError::Truncated {
                needed: FRAME_HEADER_LEN,
                got: bytes.len(),
            })?;
        if header.magic.get() != FRAME_MAGIC {
            return Err(FrameError::BadMagic(header.magic.get()));
        }
        if header.reserved.get() != 0 {
            return Err(FrameError::ReservedNotZero);
        }
        if header.flags.get() & !FrameFlags::KNOWN != 0 {
            return Err(FrameError::UnknownFlags(header.flags.get()));
        }
        if header.frame_len() > u64::from(frame_len_max) {
            return Err(FrameError::TooLarge {
                frame_len: header.frame_len(),
                frame_len_max,
            });
        }
        Ok(header)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("bad frame magic {0:#010x}: the peer does not speak the Fjord native protocol")]
    BadMagic(u32),
    #[error("frame header reserved field is not zero")]
    ReservedNotZero,
    #[error("unknown frame flags {0:#06x}")]
    UnknownFlags(u16),
    #[error("frame of {frame_len} bytes exceeds the limit of {frame_len_max} bytes")]
    TooLarge { frame_len: u64, frame_len_max: u32 },
    #[error("truncated frame: needed {needed} bytes, got {got}")]
    Truncated { needed: usize, got: usize },
}

/// A whole frame: header, body and payload, the bytes shared with the
/// receive buffer (no copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub header: FrameHeader,
    pub body: Bytes,
    pub payload: Bytes,
}

/// Incremental frame decoder. After an error the stream cannot be
/// resynchronised, so the decoder stays failed and the caller closes the
/// connection.
#[derive(Debug)]
pub struct FrameDecoder {
    frame_len_max: u32,
    header: Option<FrameHeader>,
    failed: Option<FrameError>,
}

impl FrameDecoder {
    pub fn new(frame_len_max: u32) -> FrameDecoder {
        FrameDecoder {
            frame_len_max,
            header: None,
            failed: None,
        }
    }

    /// Takes the next whole frame out of `buffer`, or `Ok(None)` when more
    /// bytes are needed. Consumes exactly the bytes of the returned frame.
    pub fn decode(&mut self, buffer: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let header = match self.header {
            Some(header) => header,
            None => {
                if buffer.len() < FRAME_HEADER_LEN {
                    return Ok(None);
                }
                match FrameHeader::parse(&buffer[..FRAME_HEADER_LEN], self.frame_len_max) {
                    Ok(header) => {
                        buffer.advance(FRAME_HEADER_LEN);
                        self.header = Some(header);
                        header
                    }
                    Err(error) => {
                        self.failed = Some(error.clone());
                        return Err(error);
                    }
                }
            }
        };
        // Bounded by frame_len_max (a u32), so this fits in usize.
        let frame_len = header.frame_len() as usize;
        if buffer.len() < frame_len {
            // Grow toward the announced size in bounded steps: memory follows
            // the bytes that actually arrive, so a peer announcing a large
            // frame and then stalling does not pin `frame_len_max` of it.
            let missing = frame_len - buffer.len();
            buffer.reserve(missing.min(RESERVE_STEP_BYTES));
            return Ok(None);
        }
        self.header = None;
        let mut frame = buffer.split_to(frame_len).freeze();
        let body = frame.split_to(header.body_len.get() as usize);
        Ok(Some(Frame {
            header,
            body,
            payload: frame,
        }))
    }

    /// Bytes of the frame being received (body + payload), once its header
    /// was read.
    pub fn pending_frame_len(&self) -> Option<u64> {
        self.header.map(|h| h.frame_len())
    }
}

/// Encodes a whole frame into `out`. Senders that want to avoid copying the
/// payload write the header and body with this and the payload separately
/// (vectored write), using [`FrameHeader::new`].
pub fn encode_frame(
    out: &mut BytesMut,
    api_key: u16,
    api_version: u16,
    flags: FrameFlags,
    correlation_id: CorrelationId,
    body: &[u8],
    payload: &[u8],
) {
    let body_len = u32::try_from(body.len()).expect("frame body over 4 GiB");
    let payload_len = u32::try_from(payload.len()).expect("frame payload over 4 GiB");
    let header = FrameHeader::new(
        api_key,
        api_version,
        flags,
        correlation_id,
        body_len,
        payload_len,
    );
    out.reserve(FRAME_HEADER_LEN + body.len() + payload.len());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame_bytes(api_key: u16, version: u16, cid: u32, body: &[u8]) -> BytesMut {
        let (body, payload) = body.split_at(body.len() / 2);
        let mut out = BytesMut::new();
        encode_frame(
            &mut out,
            api_key,
            version,
            FrameFlags(0),
            CorrelationId(cid),
            body,
            payload,
        );
        out
    }

    #[test]
    fn header_layout_is_stable() {
        let bytes = frame_bytes(5, 2, 0x0102_0304, b"wxyz");
        assert_eq!(&bytes[0..4], b"FJRD");
        assert_eq!(&bytes[4..6], &[5, 0]);
        assert_eq!(&bytes[6..8], &[2, 0]);
        assert_eq!(&bytes[12..16], &[4, 3, 2, 1]);
        assert_eq!(&bytes[16..20], &[2, 0, 0, 0]);
        assert_eq!(&bytes[20..24], &[2, 0, 0, 0]);
        assert_eq!(&bytes[24..], b"wxyz");
        let frame = FrameDecoder::new(64)
            .decode(&mut bytes.clone())
            .unwrap()
            .unwrap();
        assert_eq!(&frame.body[..], b"wx");
        assert_eq!(&frame.payload[..], b"yz");
    }

    #[test]
    fn rejects_bad_magic_and_oversized() {
        let mut bytes = frame_bytes(1, 0, 1, b"");
        bytes[0] = b'X';
        let mut decoder = FrameDecoder::new(1024);
        assert!(matches!(
            decoder.decode(&mut bytes),
            Err(FrameError::BadMagic(_))
        ));
        // A failed decoder stays failed.
        assert!(matches!(
            decoder.decode(&mut BytesMut::new()),
            Err(FrameError::BadMagic(_))
        ));

        let mut bytes = frame_bytes(1, 0, 1, &[0; 2000]);
        let mut decoder = FrameDecoder::new(1024);
        assert_eq!(
            decoder.decode(&mut bytes),
            Err(FrameError::TooLarge {
                frame_len: 2000,
                frame_len_max: 1024
            })
        );
    }

    #[test]
    fn rejects_unknown_flags_and_reserved() {
        let mut bytes = frame_bytes(1, 0, 1, b"");
        bytes[8] = 0x80;
        assert!(matches!(
            FrameDecoder::new(1024).decode(&mut bytes),
            Err(FrameError::UnknownFlags(0x80))
        ));
        let mut bytes = frame_bytes(1, 0, 1, b"");
        bytes[10] = 1;
        assert_eq!(
            FrameDecoder::new(1024).decode(&mut bytes),
            Err(FrameError::ReservedNotZero)
        );
    }

    #[test]
    fn a_large_announced_frame_does_not_reserve_its_size_up_front() {
        let mut header = BytesMut::new();
        header.extend_from_slice(
            FrameHeader::new(1, 0, FrameFlags(0), CorrelationId(1), 60 << 20, 0).as_bytes(),
        );
        let mut decoder = FrameDecoder::new(FRAME_LEN_MAX_DEFAULT);
        assert_eq!(decoder.decode(&mut header), Ok(None));
        assert!(header.capacity() <= RESERVE_STEP_BYTES + FRAME_HEADER_LEN);
        assert_eq!(decoder.pending_frame_len(), Some(60 << 20));
    }

    proptest! {
        /// Any sequence of frames, cut into arbitrary pieces, decodes back to
        /// the same frames in order.
        #[test]
        fn frames_round_trip_through_arbitrary_splits(
            frames in prop::collection::vec(
                (any::<u16>(), any::<u16>(), any::<u32>(), prop::collection::vec(any::<u8>(), 0..300)),
                1..8,
            ),
            cuts in prop::collection::vec(1usize..64, 1..64),
        ) {
            let mut wire = BytesMut::new();
            for (key, version, cid, body) in &frames {
                wire.extend_from_slice(&frame_bytes(*key, *version, *cid, body));
            }
            let mut decoder = FrameDecoder::new(1024);
            let mut buffer = BytesMut::new();
            let mut decoded = Vec::new();
            let mut cuts = cuts.into_iter().cycle();
            while !wire.is_empty() {
                let n = cuts.next().unwrap().min(wire.len());
                buffer.extend_from_slice(&wire.split_to(n));
                while let Some(frame) = decoder.decode(&mut buffer).unwrap() {
                    decoded.push(frame);
                }
            }
            prop_assert!(buffer.is_empty());
            prop_assert_eq!(decoded.len(), frames.len());
            for (frame, (key, version, cid, body)) in decoded.iter().zip(&frames) {
                prop_assert_eq!(frame.header.api_key.get(), *key);
                prop_assert_eq!(frame.header.api_version.get(), *version);
                prop_assert_eq!(frame.header.correlation_id(), CorrelationId(*cid));
                let whole = [&frame.body[..], &frame.payload[..]].concat();
                prop_assert_eq!(&whole[..], &body[..]);
            }
        }

        /// Arbitrary bytes never panic the decoder.
        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let mut decoder = FrameDecoder::new(256);
            let mut buffer = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = decoder.decode(&mut buffer) {}
        }
    }
}
