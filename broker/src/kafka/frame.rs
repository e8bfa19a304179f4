//! Sans-IO Kafka framing: a 4-byte big-endian length, then that many bytes
//! (request header + body). Bounded: a length above the maximum, or a
//! negative one, fails the framer for good (the connection closes).

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
    buf: BytesMut,
    frame_bytes_max: u32,
    failed: Option<FrameError>,
    /// Between `read_space` and `filled`: the bytes buffered before the
    /// space (the rest of `buf` is the space).
    reading: Option<usize>,
}

/// The smallest request: api key, api version, correlation id, client id
/// length.
const HEADER_MIN: i32 = 2 + 2 + 4 + 2;

impl KafkaFramer {
    pub fn new(frame_bytes_max: u32) -> KafkaFramer {
        KafkaFramer {
            buf: BytesMut::new(),
            frame_bytes_max,
            failed: None,
            reading: None,
        }
    }

    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// Room to read into, so received bytes are not copied again: at
    /// least `chunk` bytes, or the rest of a frame whose (valid) length is
    /// already buffered. Follow with [`KafkaFramer::filled`].
    pub fn read_space(&mut self, chunk: usize) -> &mut [u8] {
        let mut want = chunk;
        if self.failed.is_none() && self.buf.len() >= 4 {
            let len = i32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
            if (HEADER_MIN..=self.frame_bytes_max as i32).contains(&len) {
                want = want.max((4 + len as usize).saturating_sub(self.buf.len()));
            }
        }
        let filled = *self.reading.get_or_insert(self.buf.len());
        self.buf.truncate(filled);
        self.buf.resize(filled + want, 0);
        &mut self.buf[filled..]
    }

    /// `n` bytes of the last [`KafkaFramer::read_space`] were read into.
    pub fn filled(&mut self, n: usize) {
        let filled = self
            .reading
            .take()
            .expect("KafkaFramer::filled without read_space");
        assert!(filled + n <= self.buf.len(), "read past the space");
        self.buf.truncate(filled + n);
    }

    /// Bytes buffered but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole frame (without its length prefix), if one is
    /// buffered.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        if self.buf.len() < 4 {
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
            self.failed = Some(error.clone());
            return Err(error);
        }
        let len = len as usize;
        if self.buf.len() < 4 + len {
            self.buf.reserve(4 + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(4);
        Ok(Some(self.buf.split_to(len).freeze()))
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
        let mut framer = KafkaFramer::new(4096);
        framer.feed(&3000u32.to_be_bytes());
        assert!(framer.read_space(16).len() >= 3000, "the whole frame fits");
        framer.filled(0);
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
