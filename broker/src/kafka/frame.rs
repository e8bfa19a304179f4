//! Sans-IO Kafka framing: a 4-byte big-endian length, then that many bytes
//! (request header + body). Bounded: a length above the maximum, or a
//! negative one, fails the framer for good (the connection closes).
//!
//! The buffer grows with the bytes that arrive, never with the length a
//! client announces: each read gets room for at least one chunk, and for a
//! frame whose length is known at most [`GROWTH`] times what is already
//! buffered, so four bytes of prefix cost one chunk, not
//! `frame_bytes_max`, and a 1 MiB request takes three allocations (16 KiB,
//! 128 KiB, 1 MiB), not seven: every allocation is fresh memory the kernel
//! must fault in, which doubling made a third of a pipelined producer's
//! cost. Room once zeroed is never zeroed again: the buffer stays
//! initialized to its capacity and `filled` counts the received bytes.
//! The buffer's capacity is exact
//! ([`KafkaFramer::capacity`]) so the connection can hold it of its shard's
//! request-buffer budget before it is allocated.

use bytes::{Buf, Bytes, BytesMut};

/// Why a byte stream is not Kafka frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame length {len} is over the maximum of {max} bytes")]
    TooLarge { len: i64, max: u32 },
    #[error("frame length {0} is too short for a request header")]
    TooShort(i32),
}

/// Splits received bytes into whole frames.
#[derive(Debug)]
pub struct KafkaFramer {
    /// Received bytes not yet returned as frames (the first `filled`),
    /// then initialized room to read into. Its capacity is exactly what
    /// [`KafkaFramer::read_capacity`] said.
    buf: BytesMut,
    /// Bytes of `buf` received and not yet returned as frames.
    filled: usize,
    frame_bytes_max: u32,
    failed: Option<FrameError>,
    /// Between `read_space` and `filled`: the bytes buffered before the
    /// space (the rest of `buf` is the space).
    reading: Option<usize>,
}

/// The smallest request: api key, api version, correlation id, client id
/// length.
const HEADER_MIN: i32 = 2 + 2 + 4 + 2;

/// A known frame's buffer grows to at most this many times the bytes
/// already received.
pub const GROWTH: usize = 8;

impl KafkaFramer {
    pub fn new(frame_bytes_max: u32) -> KafkaFramer {
        KafkaFramer {
            buf: BytesMut::new(),
            filled: 0,
            frame_bytes_max,
            failed: None,
            reading: None,
        }
    }

    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.failed.is_none() {
            self.buf.truncate(self.filled);
            self.buf.extend_from_slice(bytes);
            self.filled = self.buf.len();
        }
    }

    /// The whole length (prefix included) of the frame at the front, once
    /// its prefix is buffered and valid.
    fn frame_total(&self) -> Option<usize> {
        if self.failed.is_some() || self.filled < 4 {
            return None;
        }
        let len = i32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        (HEADER_MIN..=self.frame_bytes_max as i32)
            .contains(&len)
            .then(|| 4 + len as usize)
    }

    /// How many bytes the next read may bring: one `chunk`, or for a
    /// known frame up to `GROWTH - 1` times what is buffered (bounded by
    /// the rest of the frame).
    fn read_len(&self, chunk: usize) -> usize {
        let filled = self.filled;
        let rest = self
            .frame_total()
            .map_or(0, |total| total.saturating_sub(filled));
        chunk.max(rest.min(filled.saturating_mul(GROWTH - 1)))
    }

    /// The buffer's capacity once [`KafkaFramer::read_space`]`(chunk)` has
    /// made room: what the connection must hold of its shard's budget
    /// before calling it. At most `frame_bytes_max + 4 + chunk`.
    pub fn read_capacity(&self, chunk: usize) -> usize {
        assert!(self.reading.is_none(), "read_capacity during a read");
        self.buf.capacity().max(self.filled + self.read_len(chunk))
    }

    /// Room to read into, so received bytes are not copied again (see
    /// [`KafkaFramer::read_capacity`] for its size). Follow with
    /// [`KafkaFramer::filled`].
    pub fn read_space(&mut self, chunk: usize) -> &mut [u8] {
        assert!(chunk > 0, "a read needs room");
        let capacity = self.read_capacity(chunk);
        let filled = self.filled;
        if self.buf.capacity() < capacity {
            // Grown by hand rather than `reserve`, so the capacity is
            // exactly what the connection holds of the budget.
            let mut grown = BytesMut::with_capacity(capacity);
            grown.extend_from_slice(&self.buf[..filled]);
            self.buf = grown;
        }
        self.reading = Some(filled);
        if self.buf.len() < capacity {
            // Only room never zeroed before.
            self.buf.resize(capacity, 0);
        }
        &mut self.buf[filled..]
    }

    /// `n` bytes of the last [`KafkaFramer::read_space`] were read into.
    pub fn filled(&mut self, n: usize) {
        let filled = self
            .reading
            .take()
            .expect("KafkaFramer::filled without read_space");
        assert!(filled + n <= self.buf.len(), "read past the space");
        self.filled = filled + n;
    }

    /// Bytes buffered but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.filled
    }

    /// Bytes the buffer has allocated (frames already returned keep their
    /// own allocation until they are dropped).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The next whole frame (without its length prefix), if one is
    /// buffered.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        if self.filled < 4 {
            return Ok(None);
        }
        let len = i32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        let error = if len < HEADER_MIN {
            Some(FrameError::TooShort(len))
        } else if len as u32 > self.frame_bytes_max {
            Some(FrameError::TooLarge {
                len: i64::from(len),
                max: self.frame_bytes_max,
            })
        } else {
            None
        };
        if let Some(error) = error {
            self.buf = BytesMut::new();
            self.filled = 0;
            self.failed = Some(error.clone());
            return Err(error);
        }
        let len = len as usize;
        if self.filled < 4 + len {
            return Ok(None);
        }
        let mut frame = self.buf.split_to(4 + len);
        frame.advance(4);
        // The frame keeps the old allocation alive; what follows it (a
        // pipelined request's first bytes) moves to its own, so the
        // buffer's capacity stays exact and the old allocation goes with
        // the frame.
        let tail = &self.buf[..self.filled - 4 - len];
        self.buf = if tail.is_empty() {
            BytesMut::new()
        } else {
            BytesMut::from(tail)
        };
        self.filled = self.buf.len();
        Ok(Some(frame.freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    /// Reading into the framer's own space, in reads of any size (a
    /// socket returns at most what was asked and may return less), gives
    /// the same frames as feeding; a known frame length widens the space.
    #[test]
    fn reads_into_the_framer_give_the_same_frames() {
        let a = [1u8; 12];
        let b = vec![2u8; 3000];
        let mut stream = framed(&a);
        stream.extend(framed(&b));
        for max_read in [1, 3, 7, 64, 5000] {
            let mut framer = KafkaFramer::new(4096);
            let mut got = Vec::new();
            let mut at = 0;
            while at < stream.len() {
                let space = framer.read_space(16);
                let n = space.len().min(max_read).min(stream.len() - at);
                space[..n].copy_from_slice(&stream[at..at + n]);
                framer.filled(n);
                at += n;
                while let Some(frame) = framer.next_frame().expect("valid") {
                    got.push(frame);
                }
            }
            assert_eq!(got, vec![Bytes::from(a.to_vec()), Bytes::from(b.clone())]);
            assert_eq!(framer.buffered(), 0);
        }
    }

    /// A length prefix alone makes room for one chunk (or `GROWTH` times
    /// the prefix), not the announced frame; the room then grows at most
    /// `GROWTH`-fold with the bytes that arrive, up to the frame's end,
    /// and the capacity is exactly what was announced.
    #[test]
    fn the_buffer_grows_with_arrived_bytes_not_the_announced_length() {
        let max = 16 << 20;
        let mut framer = KafkaFramer::new(max);
        framer.feed(&max.to_be_bytes());
        assert_eq!(framer.read_capacity(16), 4 * GROWTH);
        assert_eq!(framer.read_space(16).len(), 4 * GROWTH - 4);
        assert_eq!(framer.capacity(), 4 * GROWTH);
        framer.filled(16);
        let mut capacities = Vec::new();
        while framer.buffered() < 4 + max as usize {
            let expected = framer.read_capacity(16);
            let space = framer.read_space(16).len();
            assert_eq!(framer.capacity(), expected);
            capacities.push(expected);
            framer.filled(space);
        }
        assert!(
            capacities.windows(2).all(|w| w[1] <= GROWTH * w[0]),
            "{capacities:?}"
        );
        assert_eq!(
            framer.capacity(),
            4 + max as usize,
            "no room past the frame"
        );
        assert_eq!(
            framer.next_frame().expect("valid").map(|f| f.len()),
            Some(max as usize)
        );
        assert_eq!(framer.capacity(), 0, "the buffer leaves with the frame");
    }

    /// Bytes of the next frame that came with the previous one are kept,
    /// in a buffer of their own size.
    #[test]
    fn a_pipelined_tail_moves_to_an_exact_buffer() {
        let mut stream = framed(&[1u8; 12]);
        stream.extend_from_slice(&framed(&[2u8; 12])[..7]);
        let mut framer = KafkaFramer::new(1024);
        let space = framer.read_space(64);
        space[..stream.len()].copy_from_slice(&stream);
        framer.filled(stream.len());
        assert_eq!(
            framer.next_frame().expect("valid").map(|f| f.len()),
            Some(12)
        );
        assert_eq!(framer.next_frame().expect("valid"), None);
        assert_eq!(framer.buffered(), 7);
        assert_eq!(framer.capacity(), 7);
    }

    #[test]
    fn frames_come_out_whole_from_any_split() {
        let a = [1u8; 12];
        let b = [2u8; 30];
        let mut stream = framed(&a);
        stream.extend(framed(&b));
        for cut in 0..stream.len() {
            let mut framer = KafkaFramer::new(1024);
            let mut got = Vec::new();
            for piece in [&stream[..cut], &stream[cut..]] {
                framer.feed(piece);
                while let Some(frame) = framer.next_frame().expect("valid") {
                    got.push(frame);
                }
            }
            assert_eq!(got, vec![Bytes::from(a.to_vec()), Bytes::from(b.to_vec())]);
            assert_eq!(framer.buffered(), 0);
        }
    }

    #[test]
    fn oversized_negative_and_short_lengths_fail_for_good() {
        for prefix in [[0, 0, 4, 1], [0xff, 0xff, 0xff, 0xff], [0, 0, 0, 3]] {
            let mut framer = KafkaFramer::new(1024);
            framer.feed(&prefix);
            assert!(framer.next_frame().is_err());
            framer.feed(&framed(&[0u8; 12]));
            assert!(framer.next_frame().is_err());
        }
    }
}
