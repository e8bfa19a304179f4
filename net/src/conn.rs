//! Sans-IO connection core: the state of one connection, with no socket,
//! no clock and no runtime, for any protocol whose frames a
//! [`Framer`] splits (the native protocol's [`NativeFramer`], the Kafka
//! edge's length prefix).
//!
//! The driver feeds it events (`handle_read`, `handle_written`, `handle_eof`,
//! `handle_timeout`) and asks it what to do next (`poll_action`,
//! `poll_timeout`). Because it never touches a socket or reads the clock, the
//! whole state machine (framing, backpressure, timeouts, half-close) is
//! unit-tested without a runtime; see `conn/tests.rs`.
//!
//! Bounds, all from [`ConnectionConfig`] and the framer:
//! - the read buffer never holds more than the framer's
//!   `frame_bytes_max` (one whole frame, header included);
//! - it grows with the bytes that arrive, never with the length a peer
//!   announces: each read gets room for one chunk, and for a frame whose
//!   length is known at most [`GROWTH`] times what is already buffered, so
//!   a header announcing a huge frame costs one chunk, and a 1 MiB frame
//!   takes three allocations, not seven (every allocation is fresh memory
//!   the kernel must fault in). Its allocation size is exact
//!   ([`Connection::read_capacity`]) so a driver can hold it of a shard's
//!   budget before it is allocated;
//! - a connection that has not sent a whole request within
//!   `first_request_timeout` of being accepted is closed, and afterwards
//!   one idle (no whole request) for `idle_timeout`;
//! - the outgoing queue stops the connection from *decoding* further requests
//!   once it holds `write_queue_bytes_max` bytes, so a client that pipelines
//!   requests but never reads responses stalls itself, not the broker.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use fjord_schema::frame::FrameError;

pub use crate::framer::{Framer, NativeFramer};

/// A known frame's buffer grows to at most this many times the bytes
/// already received.
pub const GROWTH: usize = 8;

/// Limits of one connection.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// Largest frame (body + payload, header excluded) accepted; larger
    /// frames close the connection.
    pub frame_bytes_max: u32,
    /// Bytes of responses queued before the connection stops decoding
    /// requests until the peer has read some.
    pub write_queue_bytes_max: usize,
    /// A connection that has not delivered a whole request for this long is
    /// closed. Partial frames do not count as activity, so a peer trickling
    /// one byte at a time (slowloris) is closed too.
    pub idle_timeout: Duration,
    /// A connection that has not delivered its first whole request this
    /// long after it was accepted is closed (a flood of connections that
    /// never speak holds its slots for seconds, not for `idle_timeout`).
    /// Applies only while it is shorter than `idle_timeout`.
    pub first_request_timeout: Duration,
}

impl ConnectionConfig {
    /// The read buffer of a native connection holds one maximal frame plus
    /// its header.
    pub fn read_buffer_bytes_max(&self) -> usize {
        NativeFramer::new(self.frame_bytes_max).frame_bytes_max()
    }
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            frame_bytes_max: fjord_schema::frame::FRAME_LEN_MAX_DEFAULT,
            write_queue_bytes_max: 4 * 1024 * 1024,
            idle_timeout: Duration::from_secs(600),
            first_request_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a connection must be closed; `E` is the framer's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError<E = FrameError> {
    #[error("unparseable frame: {0}")]
    Frame(E),
    #[error("no complete request for {idle_timeout:?}")]
    IdleTimeout { idle_timeout: Duration },
    #[error("no complete first request within {first_request_timeout:?} of connecting")]
    FirstRequestTimeout { first_request_timeout: Duration },
    #[error("peer closed the connection in the middle of a frame ({buffered} bytes buffered)")]
    ClosedMidFrame { buffered: usize },
}

impl From<FrameError> for ConnectionError {
    fn from(error: FrameError) -> Self {
        ConnectionError::Frame(error)
    }
}

/// What the driver should do next; `Fr` is the framer's frame.
#[derive(Debug)]
pub enum Action<Fr = fjord_schema::frame::Frame> {
    /// Handle this request and queue its response (if any) with
    /// [`Connection::queue_response`].
    Handle(Fr),
    /// Write [`Connection::transmit_chunk`] to the socket.
    Write,
    /// Read into [`Connection::read_space`].
    Read,
    /// Everything received was handled and everything queued was written;
    /// close the socket.
    Close,
}

/// Received bytes not yet taken out as frames, in an allocation whose size
/// the connection chooses (see the module doc).
#[derive(Debug)]
struct ReadBuffer {
    /// The first `filled` bytes are received; during a read the rest is
    /// the room given to the driver.
    buf: BytesMut,
    filled: usize,
    /// Size of the allocation `buf` lives in (0: none); frames split off
    /// share it until they are dropped.
    alloc_bytes: usize,
    /// Bytes of `buf` exposed by `read_space` but not yet filled.
    reserved: usize,
    /// The whole length of the frame at the front, once its header is
    /// buffered and valid.
    front_frame_len: Option<usize>,
}

impl ReadBuffer {
    fn new() -> ReadBuffer {
        ReadBuffer {
            buf: BytesMut::new(),
            filled: 0,
            alloc_bytes: 0,
            reserved: 0,
            front_frame_len: None,
        }
    }

    fn clear(&mut self) {
        *self = ReadBuffer::new();
    }
}

/// One connection's protocol state.
#[derive(Debug)]
pub struct Connection<F: Framer = NativeFramer> {
    config: ConnectionConfig,
    framer: F,
    read: ReadBuffer,
    /// The framer refused the stream (returned again on every poll).
    failed: Option<F::Error>,
    write_queue: VecDeque<Bytes>,
    write_queue_bytes: usize,
    /// Set once the peer sent EOF or we decided to stop reading.
    read_closed: bool,
    /// When the connection was accepted until its first whole request,
    /// then when the last whole request arrived or was answered.
    last_request_at: Instant,
    /// Whether a whole request has arrived (which ends the first-request
    /// deadline).
    requested: bool,
}

impl Connection<NativeFramer> {
    /// A native-protocol connection.
    pub fn new(config: ConnectionConfig, now: Instant) -> Connection<NativeFramer> {
        let framer = NativeFramer::new(config.frame_bytes_max);
        Connection::with_framer(config, framer, now)
    }
}

impl<F: Framer> Connection<F> {
    /// A connection whose frames `framer` splits (its `frame_bytes_max`,
    /// not the config's, bounds the read buffer).
    pub fn with_framer(config: ConnectionConfig, framer: F, now: Instant) -> Connection<F> {
        assert!(
            config.frame_bytes_max > 0,
            "frame_bytes_max must be positive"
        );
        assert!(
            config.write_queue_bytes_max > 0,
            "write_queue_bytes_max must be positive"
        );
        assert!(
            !config.first_request_timeout.is_zero(),
            "first_request_timeout must be positive"
        );
        assert!(framer.read_chunk_bytes() > 0, "a read needs room");
        assert!(framer.frame_bytes_max() > 0, "a frame needs bytes");
        Connection {
            framer,
            read: ReadBuffer::new(),
            failed: None,
            write_queue: VecDeque::new(),
            write_queue_bytes: 0,
            read_closed: false,
            last_request_at: now,
            requested: false,
            config,
        }
    }

    pub fn config(&self) -> &ConnectionConfig {
        &self.config
    }

    pub fn framer(&self) -> &F {
        &self.framer
    }

    /// The next thing to do. An error means the connection must be closed
    /// (after flushing what is queued, if the driver wishes).
    pub fn poll_action(
        &mut self,
        now: Instant,
    ) -> Result<Action<F::Frame>, ConnectionError<F::Error>> {
        debug_assert_eq!(self.read.reserved, 0, "read_space without handle_read");
        if let Some(error) = &self.failed {
            return Err(ConnectionError::Frame(error.clone()));
        }
        if self.write_queue_bytes < self.config.write_queue_bytes_max {
            match self.decode() {
                Ok(Some(frame)) => {
                    self.last_request_at = now;
                    self.requested = true;
                    return Ok(Action::Handle(frame));
                }
                Ok(None) => {}
                Err(error) => {
                    self.read.clear();
                    self.failed = Some(error.clone());
                    return Err(ConnectionError::Frame(error));
                }
            }
        }
        if !self.write_queue.is_empty() {
            return Ok(Action::Write);
        }
        if self.read_closed {
            if self.read.filled > 0 {
                return Err(ConnectionError::ClosedMidFrame {
                    buffered: self.read.filled,
                });
            }
            return Ok(Action::Close);
        }
        Ok(Action::Read)
    }

    /// The frame at the front of the read buffer, if all of it is there.
    fn decode(&mut self) -> Result<Option<F::Frame>, F::Error> {
        let read = &mut self.read;
        let total = match read.front_frame_len {
            Some(total) => total,
            None => match self.framer.frame_len(&read.buf[..read.filled])? {
                Some(total) => {
                    assert!(
                        total > 0 && total <= self.framer.frame_bytes_max(),
                        "the framer bounds frames"
                    );
                    read.front_frame_len = Some(total);
                    total
                }
                None => return Ok(None),
            },
        };
        if read.filled < total {
            return Ok(None);
        }
        read.front_frame_len = None;
        // Shares the allocation with what follows it (no copy).
        read.buf.truncate(read.filled);
        let bytes = read.buf.split_to(total).freeze();
        read.filled -= total;
        let chunk = self.framer.read_chunk_bytes();
        if read.filled == 0 && read.alloc_bytes > GROWTH * chunk {
            // A large frame's allocation leaves with the frame.
            read.buf = BytesMut::new();
            read.alloc_bytes = 0;
        } else if read.filled > 0 && read.alloc_bytes > GROWTH * (read.filled + chunk) {
            // What follows a large frame (a pipelined request's first
            // bytes) moves to an allocation of its own size, so the large
            // one leaves with the frame.
            read.buf = BytesMut::from(&read.buf[..]);
            read.alloc_bytes = read.filled;
        }
        self.framer.frame(bytes).map(Some)
    }

    /// How many bytes the next read may bring: one chunk, or for a known
    /// frame up to `GROWTH - 1` times what is buffered (bounded by the rest
    /// of the frame), never past the framer's frame bound.
    fn read_len(&self) -> usize {
        let filled = self.read.filled;
        let bound = self.framer.frame_bytes_max();
        // poll_action only asks for a read when no whole frame is buffered,
        // and a partial frame is always smaller than the bound.
        assert!(filled < bound, "read buffer full without a whole frame");
        let rest = self.read.front_frame_len.map_or(0, |total| total - filled);
        let want = self
            .framer
            .read_chunk_bytes()
            .max(rest.min(filled.saturating_mul(GROWTH - 1)));
        want.min(bound - filled)
    }

    /// The size of the read buffer's allocation once
    /// [`Connection::read_space`] has made room: what a driver holds of its
    /// shard's request-buffer budget before calling it. At most the
    /// framer's `frame_bytes_max` plus one read chunk.
    pub fn read_capacity(&self) -> usize {
        assert_eq!(self.read.reserved, 0, "read_capacity during a read");
        // The room fits in the allocation (reclaimed once the frames split
        // off it are gone), or a new one of exactly the size needed
        // replaces it.
        self.read
            .alloc_bytes
            .max(self.read.filled + self.read_len())
    }

    /// The size of the read buffer's allocation now (frames split off it
    /// share it until they are dropped): what a driver holds of its
    /// shard's request-buffer budget between reads.
    pub fn read_allocation_bytes(&self) -> usize {
        self.read.alloc_bytes
    }

    /// Writable space for the next read (see
    /// [`Connection::read_capacity`] for its allocation). Must be followed
    /// by [`Connection::handle_read`].
    pub fn read_space(&mut self) -> &mut [u8] {
        let len = self.read_len();
        let read = &mut self.read;
        let filled = read.filled;
        let needed = filled + len;
        read.buf.truncate(filled);
        if read.buf.capacity() < needed && !read.buf.try_reclaim(len) {
            // Grown by hand rather than `reserve`, so the allocation is
            // exactly `needed` and the driver's budget hold matches it.
            let mut grown = BytesMut::with_capacity(needed);
            grown.extend_from_slice(&read.buf[..filled]);
            read.buf = grown;
            read.alloc_bytes = needed;
        }
        debug_assert!(read.alloc_bytes >= needed, "the room is in the allocation");
        read.buf.resize(needed, 0);
        read.reserved = len;
        &mut read.buf[filled..]
    }

    /// `n` bytes were read into the space from [`Connection::read_space`].
    /// `0` means the read was abandoned (timer, stop); end of stream is
    /// reported with [`Connection::handle_eof`].
    pub fn handle_read(&mut self, n: usize) {
        assert!(n <= self.read.reserved, "read more than the space given");
        self.read.filled += n;
        self.read.buf.truncate(self.read.filled);
        self.read.reserved = 0;
    }

    /// The peer half-closed (read returned 0) or the driver stops reading
    /// (shutdown): handle what is buffered, flush, then close.
    pub fn handle_eof(&mut self) {
        if self.read.reserved > 0 {
            self.handle_read(0);
        }
        self.read_closed = true;
    }

    /// The service refused a request in a way that ends the connection:
    /// what is buffered is dropped unhandled, what is queued is flushed,
    /// then [`Action::Close`].
    pub fn stop_reading(&mut self) {
        if self.read.reserved > 0 {
            self.handle_read(0);
        }
        self.read.clear();
        self.read_closed = true;
    }

    /// A request was answered (its response queued, or none was due): the
    /// idle timer counts from here, so a long-polling request is not
    /// idleness.
    pub fn handle_answered(&mut self, now: Instant) {
        self.last_request_at = self.last_request_at.max(now);
    }

    /// Queues an encoded response frame. Never fails: the bound is enforced
    /// by not decoding further requests while the queue is full.
    pub fn queue_response(&mut self, frame: Bytes) {
        if frame.is_empty() {
            return;
        }
        self.write_queue_bytes += frame.len();
        self.write_queue.push_back(frame);
    }
    /// The next bytes to write, if any.
    pub fn transmit_chunk(&self) -> Option<&[u8]> {
        self.write_queue.front().map(|b| &b[..])
    }

    /// Like [`Connection::transmit_chunk`], but when the front chunk and
    /// the ones after it are each below `chunk_bytes_max`, copies as many
    /// of them as fit in `gather_bytes_max` into `scratch` and returns
    /// that, so many small pieces go out in one write. Report what was
    /// written with [`Connection::handle_written`] either way.
    pub fn transmit_gather<'a>(
        &'a self,
        scratch: &'a mut Vec<u8>,
        chunk_bytes_max: usize,
        gather_bytes_max: usize,
    ) -> Option<&'a [u8]> {
        let front = self.write_queue.front()?;
        let small = |b: &Bytes| b.len() < chunk_bytes_max;
        if !small(front) || self.write_queue.get(1).is_none_or(|next| !small(next)) {
            return Some(&front[..]);
        }
        scratch.clear();
        for chunk in self.write_queue.iter().take_while(|b| small(b)) {
            if !scratch.is_empty() && scratch.len() + chunk.len() > gather_bytes_max {
                break;
            }
            scratch.extend_from_slice(chunk);
        }
        Some(&scratch[..])
    }

    /// `n` bytes of [`Connection::transmit_chunk`] were written.
    pub fn handle_written(&mut self, mut n: usize) {
        assert!(n <= self.write_queue_bytes, "wrote more than was queued");
        self.write_queue_bytes -= n;
        while n > 0 {
            let Some(front) = self.write_queue.front_mut() else {
                break;
            };
            let take = n.min(front.len());
            front.advance(take);
            n -= take;
            if front.is_empty() {
                self.write_queue.pop_front();
            }
        }
    }

    /// Received bytes not yet taken out as frames.
    pub fn read_buffered_bytes(&self) -> usize {
        self.read.filled
    }

    pub fn write_queue_bytes(&self) -> usize {
        self.write_queue_bytes
    }

    /// When [`Connection::handle_timeout`] must be called if nothing else
    /// happens first.
    pub fn poll_timeout(&self) -> Instant {
        self.last_request_at + self.timeout()
    }

    /// The timeout running now: the first-request deadline until a whole
    /// request arrived (unless the idle timeout is shorter), then the idle
    /// timeout.
    fn timeout(&self) -> Duration {
        if self.requested {
            self.config.idle_timeout
        } else {
            self.config
                .first_request_timeout
                .min(self.config.idle_timeout)
        }
    }

    /// The timer from [`Connection::poll_timeout`] fired (or the driver
    /// checks it early: firing early is harmless).
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ConnectionError<F::Error>> {
        if now < self.poll_timeout() {
            return Ok(());
        }
        if !self.requested && self.config.first_request_timeout < self.config.idle_timeout {
            return Err(ConnectionError::FirstRequestTimeout {
                first_request_timeout: self.config.first_request_timeout,
            });
        }
        Err(ConnectionError::IdleTimeout {
            idle_timeout: self.config.idle_timeout,
        })
    }
}

#[cfg(test)]
mod tests;
