//! Kafka framing for the connection core (`fjord_net::conn::Connection`):
//! a 4-byte big-endian length, then that many bytes (request header +
//! body). A length above the maximum, or one too short for a request
//! header (negative included), fails the connection for good.
//!
//! Only the header is read here; the read buffer, its growth with the
//! bytes that arrive (never with the announced length), the write queue
//! and the timeouts are the core's, the same as the native protocol's.

use bytes::{Buf, Bytes};
use fjord_net::framer::Framer;

/// Room for one read when no longer frame is on its way; what an idle
/// Kafka connection holds of its shard's request-buffer budget.
pub const READ_CHUNK: usize = 16 * 1024;

/// Bytes of the length prefix.
const PREFIX_LEN: usize = 4;

/// Why a byte stream is not Kafka frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame length {len} is over the maximum of {max} bytes")]
    TooLarge { len: i64, max: u32 },
    #[error("frame length {0} is too short for a request header")]
    TooShort(i32),
}

/// The smallest request: api key, api version, correlation id, client id
/// length.
const HEADER_MIN: i32 = 2 + 2 + 4 + 2;

/// Splits a Kafka connection's bytes into frames (length prefix removed).
#[derive(Debug, Clone)]
pub struct KafkaFramer {
    /// Largest frame after its length prefix.
    frame_bytes_max: u32,
}

impl KafkaFramer {
    pub fn new(frame_bytes_max: u32) -> KafkaFramer {
        KafkaFramer { frame_bytes_max }
    }
}

impl Framer for KafkaFramer {
    type Frame = Bytes;
    type Error = FrameError;

    fn frame_bytes_max(&self) -> usize {
        PREFIX_LEN + self.frame_bytes_max as usize
    }

    fn read_chunk_bytes(&self) -> usize {
        READ_CHUNK
    }

    fn frame_len(&self, buffered: &[u8]) -> Result<Option<usize>, FrameError> {
        let Some(prefix) = buffered.first_chunk::<PREFIX_LEN>() else {
            return Ok(None);
        };
        let len = i32::from_be_bytes(*prefix);
        if len < HEADER_MIN {
            return Err(FrameError::TooShort(len));
        }
        if len as u32 > self.frame_bytes_max {
            return Err(FrameError::TooLarge {
                len: i64::from(len),
                max: self.frame_bytes_max,
            });
        }
        Ok(Some(PREFIX_LEN + len as usize))
    }

    fn frame(&self, mut bytes: Bytes) -> Result<Bytes, FrameError> {
        assert!(bytes.len() >= PREFIX_LEN, "a whole frame");
        bytes.advance(PREFIX_LEN);
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use fjord_net::conn::{Action, Connection, ConnectionConfig, ConnectionError, GROWTH};

    use super::*;

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    fn connection(frame_bytes_max: u32) -> Connection<KafkaFramer> {
        let config = ConnectionConfig {
            frame_bytes_max,
            write_queue_bytes_max: 100,
            idle_timeout: Duration::from_secs(10),
            first_request_timeout: Duration::from_secs(10),
        };
        Connection::with_framer(config, KafkaFramer::new(frame_bytes_max), Instant::now())
    }

    /// Reads `bytes` into the connection's own space, at most `max_read`
    /// at a time (a socket returns at most what was asked, maybe less),
    /// taking out the whole frames as they come.
    fn read_frames(
        conn: &mut Connection<KafkaFramer>,
        bytes: &[u8],
        max_read: usize,
    ) -> Vec<Bytes> {
        let now = Instant::now();
        let mut frames = Vec::new();
        let mut at = 0;
        loop {
            match conn.poll_action(now).expect("valid frames") {
                Action::Handle(frame) => frames.push(frame),
                Action::Read if at == bytes.len() => return frames,
                Action::Read => {
                    let space = conn.read_space();
                    let n = space.len().min(max_read).min(bytes.len() - at);
                    space[..n].copy_from_slice(&bytes[at..at + n]);
                    conn.handle_read(n);
                    at += n;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Frames come out whole, prefix removed, from reads of any size.
    #[test]
    fn reads_of_any_size_give_the_same_frames() {
        let a = [1u8; 12];
        let b = vec![2u8; 3000];
        let mut stream = framed(&a);
        stream.extend(framed(&b));
        for max_read in [1, 3, 7, 64, 5000] {
            let mut conn = connection(4096);
            let got = read_frames(&mut conn, &stream, max_read);
            assert_eq!(got, vec![Bytes::from(a.to_vec()), Bytes::from(b.clone())]);
            assert_eq!(conn.read_buffered_bytes(), 0);
        }
    }

    /// A length prefix alone makes room for one chunk, not the announced
    /// frame; the allocation then grows at most `GROWTH`-fold with the
    /// bytes that arrive, never past the frame's end, and leaves with the
    /// frame.
    #[test]
    fn the_buffer_grows_with_arrived_bytes_not_the_announced_length() {
        let max = 16 << 20;
        let mut conn = connection(max);
        let now = Instant::now();
        assert_eq!(conn.read_capacity(), READ_CHUNK);
        conn.read_space()[..4].copy_from_slice(&max.to_be_bytes());
        conn.handle_read(4);
        assert!(matches!(conn.poll_action(now), Ok(Action::Read)));
        assert_eq!(conn.read_allocation_bytes(), READ_CHUNK);
        let mut capacities = vec![READ_CHUNK];
        while conn.read_buffered_bytes() < 4 + max as usize {
            let expected = conn.read_capacity();
            let space = conn.read_space().len();
            assert_eq!(conn.read_allocation_bytes(), expected);
            capacities.push(expected);
            conn.handle_read(space);
        }
        assert!(
            capacities.windows(2).all(|w| w[1] <= GROWTH * w[0]),
            "{capacities:?}"
        );
        assert!(capacities.len() < 12, "{capacities:?}");
        assert_eq!(
            conn.read_allocation_bytes(),
            4 + max as usize,
            "no room past the frame"
        );
        match conn.poll_action(now) {
            Ok(Action::Handle(frame)) => assert_eq!(frame.len(), max as usize),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            conn.read_allocation_bytes(),
            0,
            "the buffer leaves with the frame"
        );
    }

    /// Bytes of the next request that came with a large one move to an
    /// allocation of their own size; the large one leaves with its frame.
    #[test]
    fn a_tail_after_a_large_frame_moves_to_an_exact_buffer() {
        // The frame's last bytes and the tail come in one read.
        let mut stream = framed(&vec![1u8; 140_000]);
        stream.extend_from_slice(&framed(&[2u8; 12])[..7]);
        let mut conn = connection(1 << 20);
        let got = read_frames(&mut conn, &stream, usize::MAX);
        assert_eq!(got.len(), 1);
        assert_eq!(conn.read_buffered_bytes(), 7);
        assert_eq!(conn.read_allocation_bytes(), 7);
    }

    /// Small pipelined requests share one read's allocation (no copy per
    /// frame), which is reused once they are handled.
    #[test]
    fn small_frames_share_and_reuse_one_allocation() {
        let stream: Vec<u8> = (0..100).flat_map(|i| framed(&[i; 20])).collect();
        let mut conn = connection(1 << 20);
        let got = read_frames(&mut conn, &stream, usize::MAX);
        assert_eq!(got.len(), 100);
        assert_eq!(conn.read_allocation_bytes(), READ_CHUNK);
        let first_at = got[0].as_ptr() as usize;
        assert_eq!(
            got[99].as_ptr() as usize,
            first_at + 99 * 24,
            "one allocation"
        );
        drop(got);
        let again = read_frames(&mut conn, &stream, usize::MAX);
        assert_eq!(again.len(), 100);
        assert_eq!(again[0].as_ptr() as usize, first_at, "reused");
        assert_eq!(conn.read_allocation_bytes(), READ_CHUNK);
    }

    #[test]
    fn frames_come_out_whole_from_any_split() {
        let a = [1u8; 12];
        let b = [2u8; 30];
        let mut stream = framed(&a);
        stream.extend(framed(&b));
        for cut in 0..stream.len() {
            let mut conn = connection(1024);
            let mut got = read_frames(&mut conn, &stream[..cut], usize::MAX);
            got.extend(read_frames(&mut conn, &stream[cut..], usize::MAX));
            assert_eq!(got, vec![Bytes::from(a.to_vec()), Bytes::from(b.to_vec())]);
            assert_eq!(conn.read_buffered_bytes(), 0);
        }
    }

    #[test]
    fn oversized_negative_and_short_lengths_fail_for_good() {
        let now = Instant::now();
        for (prefix, expected) in [
            (
                [0, 0, 4, 1],
                FrameError::TooLarge {
                    len: 1025,
                    max: 1024,
                },
            ),
            ([0xff, 0xff, 0xff, 0xff], FrameError::TooShort(-1)),
            ([0, 0, 0, 3], FrameError::TooShort(3)),
        ] {
            let mut conn = connection(1024);
            let mut wire = prefix.to_vec();
            wire.extend(framed(&[0u8; 12]));
            let space = conn.read_space();
            space[..wire.len()].copy_from_slice(&wire);
            conn.handle_read(wire.len());
            for _ in 0..2 {
                assert_eq!(
                    conn.poll_action(now).map(|_| ()),
                    Err(ConnectionError::Frame(expected.clone()))
                );
            }
            assert_eq!(conn.read_allocation_bytes(), 0, "the buffer is freed");
        }
    }

    /// The native edge's backpressure, for Kafka too: with the write queue
    /// full, pipelined requests stay unhandled until responses are written.
    #[test]
    fn a_full_write_queue_stops_handling_kafka_requests() {
        let now = Instant::now();
        let mut conn = connection(1024);
        let stream: Vec<u8> = (0..4).flat_map(|i| framed(&[i; 12])).collect();
        let space = conn.read_space();
        space[..stream.len()].copy_from_slice(&stream);
        conn.handle_read(stream.len());
        let mut handled = 0;
        loop {
            match conn.poll_action(now).expect("valid") {
                Action::Handle(_) => {
                    handled += 1;
                    conn.queue_response(Bytes::from(vec![0u8; 60]));
                }
                Action::Write => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(handled, 2, "the queue bound is 100 bytes");
        conn.handle_written(120);
        assert!(matches!(conn.poll_action(now), Ok(Action::Handle(_))));
    }

    /// A connection that sends only part of a request is closed at the
    /// idle deadline: a prefix is no activity.
    #[test]
    fn a_partial_request_is_closed_at_the_idle_deadline() {
        let mut conn = connection(1024);
        let deadline = conn.poll_timeout();
        let wire = framed(&[1u8; 12]);
        conn.read_space()[..5].copy_from_slice(&wire[..5]);
        conn.handle_read(5);
        assert!(matches!(conn.poll_action(Instant::now()), Ok(Action::Read)));
        assert_eq!(
            conn.poll_timeout(),
            deadline,
            "a partial request is no activity"
        );
        conn.handle_timeout(deadline - Duration::from_millis(1))
            .expect("not idle yet");
        assert_eq!(
            conn.handle_timeout(deadline),
            Err(ConnectionError::IdleTimeout {
                idle_timeout: Duration::from_secs(10)
            })
        );
    }
}
