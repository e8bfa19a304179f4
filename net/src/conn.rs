//! Sans-IO connection core: the state of one native-protocol connection,
//! with no socket, no clock and no runtime.
//!
//! The driver feeds it events (`handle_read`, `handle_written`, `handle_eof`,
//! `handle_timeout`) and asks it what to do next (`poll_action`,
//! `poll_timeout`). Because it never touches a socket or reads the clock, the
//! whole state machine (framing, backpressure, timeouts, half-close) is
//! unit-tested without a runtime; see `conn/tests.rs`.
//!
//! Bounds, all from [`ConnectionConfig`]:
//! - the read buffer never holds more than `read_buffer_bytes_max`, which is
//!   at least one whole frame of `frame_bytes_max`;
//! - a connection that has not sent a whole request within
//!   `first_request_timeout` of being accepted is closed, and afterwards
//!   one idle (no whole request) for `idle_timeout`;
//! - the outgoing queue stops the connection from *decoding* further requests
//!   once it holds `write_queue_bytes_max` bytes, so a client that pipelines
//!   requests but never reads responses stalls itself, not the broker.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use fjord_schema::frame::{Frame, FrameDecoder, FrameError, FRAME_HEADER_LEN};

/// Largest single read the core asks the driver to do.
const READ_CHUNK_BYTES_MAX: usize = 64 * 1024;

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
    /// The read buffer holds one maximal frame plus its header.
    pub fn read_buffer_bytes_max(&self) -> usize {
        FRAME_HEADER_LEN + self.frame_bytes_max as usize
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

/// Why a connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError {
    #[error("unparseable frame: {0}")]
    Frame(#[from] FrameError),
    #[error("no complete request for {idle_timeout:?}")]
    IdleTimeout { idle_timeout: Duration },
    #[error("no complete first request within {first_request_timeout:?} of connecting")]
    FirstRequestTimeout { first_request_timeout: Duration },
    #[error("peer closed the connection in the middle of a frame ({buffered} bytes buffered)")]
    ClosedMidFrame { buffered: usize },
}

/// What the driver should do next.
#[derive(Debug)]
pub enum Action {
    /// Handle this request and queue its response (if any) with
    /// [`Connection::queue_response`].
    Handle(Frame),
    /// Write [`Connection::transmit_chunk`] to the socket.
    Write,
    /// Read into [`Connection::read_space`].
    Read,
    /// Everything received was handled and everything queued was written;
    /// close the socket.
    Close,
}

/// One connection's protocol state.
#[derive(Debug)]
pub struct Connection {
    config: ConnectionConfig,
    decoder: FrameDecoder,
    read_buffer: BytesMut,
    /// Bytes of `read_buffer` exposed by `read_space` but not yet filled.
    read_reserved: usize,
    write_queue: VecDeque<Bytes>,
    write_queue_bytes: usize,
    /// Set once the peer sent EOF or we decided to stop reading.
    read_closed: bool,
    /// When the connection was accepted until its first whole request,
    /// then when the last whole request arrived.
    last_request_at: Instant,
    /// Whether a whole request has arrived (which ends the first-request
    /// deadline).
    requested: bool,
}

impl Connection {
    pub fn new(config: ConnectionConfig, now: Instant) -> Connection {
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
        Connection {
            decoder: FrameDecoder::new(config.frame_bytes_max),
            read_buffer: BytesMut::with_capacity(FRAME_HEADER_LEN.max(4096)),
            read_reserved: 0,
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

    /// The next thing to do. An error means the connection must be closed
    /// (after flushing what is queued, if the driver wishes).
    pub fn poll_action(&mut self, now: Instant) -> Result<Action, ConnectionError> {
        debug_assert_eq!(self.read_reserved, 0, "read_space without handle_read");
        if self.write_queue_bytes < self.config.write_queue_bytes_max {
            if let Some(frame) = self.decoder.decode(&mut self.read_buffer)? {
                self.last_request_at = now;
                self.requested = true;
                return Ok(Action::Handle(frame));
            }
        }
        if !self.write_queue.is_empty() {
            return Ok(Action::Write);
        }
        if self.read_closed {
            if !self.read_buffer.is_empty() || self.decoder.pending_frame_len().is_some() {
                return Err(ConnectionError::ClosedMidFrame {
                    buffered: self.read_buffer.len(),
                });
            }
            return Ok(Action::Close);
        }
        Ok(Action::Read)
    }

    /// Writable space for the next read, never past the read buffer bound.
    /// Must be followed by [`Connection::handle_read`].
    pub fn read_space(&mut self) -> &mut [u8] {
        let filled = self.read_buffer.len();
        let room = self.config.read_buffer_bytes_max().saturating_sub(filled);
        // poll_action only asks for a read when no whole frame is buffered,
        // and a partial frame is always smaller than the bound.
        assert!(room > 0, "read buffer full without a whole frame");
        let want = room.min(READ_CHUNK_BYTES_MAX);
        self.read_buffer.resize(filled + want, 0);
        self.read_reserved = want;
        &mut self.read_buffer[filled..]
    }

    /// `n` bytes were read into the space from [`Connection::read_space`].
    /// `0` means the read was abandoned (timer, stop); end of stream is
    /// reported with [`Connection::handle_eof`].
    pub fn handle_read(&mut self, n: usize) {
        assert!(n <= self.read_reserved, "read more than the space given");
        let filled = self.read_buffer.len() - self.read_reserved;
        self.read_buffer.truncate(filled + n);
        self.read_reserved = 0;
    }

    /// The peer half-closed (read returned 0) or the driver stops reading
    /// (shutdown): handle what is buffered, flush, then close.
    pub fn handle_eof(&mut self) {
        if self.read_reserved > 0 {
            self.handle_read(0);
        }
        self.read_closed = true;
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
        self.read_buffer.len() - self.read_reserved
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
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ConnectionError> {
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
