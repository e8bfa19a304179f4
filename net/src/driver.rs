//! glommio driver: runs a [`Connection`] over a `glommio::net::TcpStream`.
//!
//! The only module of this crate that imports glommio (with its
//! [`budget`] holds). It does the socket reads and writes, the timers and
//! the budget waits; every protocol decision is the core's.

pub mod budget;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::time::Instant;

use bytes::Bytes;
use fjord_schema::frame::{Frame, FrameError};
use futures_lite::future;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::sync::Semaphore;
use glommio::timer::sleep;

use crate::conn::{Action, Connection, ConnectionConfig, ConnectionError};
use crate::framer::{Framer, NativeFramer};
use crate::stop::StopSignal;
use budget::BudgetHold;

/// Consecutive response chunks smaller than this are copied into one write
/// (a fetch of many small batches costs one syscall, not one per batch);
/// larger chunks are written from where they are.
const GATHER_CHUNK_BYTES_MAX: usize = 16 * 1024;
/// Most bytes one gathered write copies.
const GATHER_BYTES_MAX: usize = 64 * 1024;

/// What serves native-protocol requests on a connection.
///
/// Single-threaded by design (shards share nothing), hence no `Send` bound
/// on the returned future.
pub trait Service {
    /// Handles one request frame and appends the encoded response frame to
    /// `out` as chunks written back to back (typically header + body, then
    /// payload pieces shared with a cache, so they are never copied into
    /// the frame); appends nothing when the request asked for no response.
    fn call(&self, frame: Frame, out: &mut Vec<Bytes>) -> impl Future<Output = ()>;
}

/// What serves the requests a framer splits off a connection, of any
/// protocol (every native [`Service`] is one).
pub trait FramedService<Fr> {
    /// Kept until the response's last byte is written (e.g. its hold of
    /// the shard's response budget).
    type Hold<'a>
    where
        Self: 'a;
    /// A request that ends the connection (what was answered before it is
    /// flushed first).
    type Error: std::error::Error;

    /// Handles one request frame and appends its response to `out` as
    /// chunks written back to back (nothing when none is due).
    fn handle<'a>(
        &'a self,
        frame: Fr,
        out: &mut Vec<Bytes>,
    ) -> impl Future<Output = Result<Self::Hold<'a>, Self::Error>>;
}

impl<S: Service> FramedService<Frame> for S {
    type Hold<'a>
        = ()
    where
        S: 'a;
    type Error = Infallible;

    async fn handle(&self, frame: Frame, out: &mut Vec<Bytes>) -> Result<(), Infallible> {
        self.call(frame, out).await;
        Ok(())
    }
}

/// A shard's budget of received, not yet handled request bytes, shared by
/// its connections: a connection holds its read buffer's allocation of it
/// and waits, not reading, while it is used up.
#[derive(Debug, Clone, Copy)]
pub struct RequestBuffers<'a> {
    pub budget: &'a Semaphore,
    /// The budget's size.
    pub budget_bytes_max: usize,
}

/// How a connection ended; `E` is the framer's error, `H` the service's.
#[derive(Debug, thiserror::Error)]
pub enum DriverError<E = FrameError, H = Infallible> {
    #[error(transparent)]
    Connection(ConnectionError<E>),
    #[error(transparent)]
    Request(H),
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
}

impl<E, H> From<ConnectionError<E>> for DriverError<E, H> {
    fn from(error: ConnectionError<E>) -> Self {
        DriverError::Connection(error)
    }
}

enum ReadOutcome {
    Read(io::Result<usize>),
    Deadline,
    Stopped,
}

/// Serves one native-protocol connection until the peer closes it, it
/// breaks a limit, or `stop` fires (see [`serve_framed`]).
pub async fn serve<S: Service>(
    stream: TcpStream,
    config: ConnectionConfig,
    service: &S,
    stop: &StopSignal,
) -> Result<(), DriverError> {
    let framer = NativeFramer::new(config.frame_bytes_max);
    serve_framed(stream, config, framer, service, None, stop).await
}

/// Serves one connection whose frames `framer` splits until the peer
/// closes it, it breaks a limit, the service refuses a request, or `stop`
/// fires. On `stop` the requests already received are answered and flushed
/// before the socket is closed; on a refused request what was answered
/// before it is flushed. `Ok(())` is a clean close.
///
/// With `request_buffers`, the read buffer's allocation is held of that
/// budget (grown before each read, waiting while the shard's budget is
/// used up, so the connection is not read; shrunk once a request is
/// handled, returned when the connection ends).
pub async fn serve_framed<F, S>(
    mut stream: TcpStream,
    config: ConnectionConfig,
    framer: F,
    service: &S,
    request_buffers: Option<RequestBuffers<'_>>,
    stop: &StopSignal,
) -> Result<(), DriverError<F::Error, S::Error>>
where
    F: Framer,
    S: FramedService<F::Frame>,
{
    let mut conn = Connection::with_framer(config, framer, Instant::now());
    let mut buffered = request_buffers.map(|r| BudgetHold::new(r.budget, r.budget_bytes_max));
    let mut out = Vec::new();
    let mut scratch = Vec::new();
    // Each response's hold, with the byte count written when its last
    // byte is.
    let mut holds: VecDeque<(u64, S::Hold<'_>)> = VecDeque::new();
    let mut queued_bytes_total = 0u64;
    let mut written_bytes_total = 0u64;
    let mut refused = None;
    let result = loop {
        let action = match conn.poll_action(Instant::now()) {
            Ok(action) => action,
            Err(error) => break Err(error.into()),
        };
        match action {
            Action::Handle(frame) => {
                match service.handle(frame, &mut out).await {
                    Ok(hold) => {
                        for chunk in out.drain(..) {
                            queued_bytes_total += chunk.len() as u64;
                            conn.queue_response(chunk);
                        }
                        holds.push_back((queued_bytes_total, hold));
                    }
                    Err(error) => {
                        out.clear();
                        conn.stop_reading();
                        refused = Some(error);
                    }
                }
                conn.handle_answered(Instant::now());
                if let Some(buffered) = &mut buffered {
                    buffered.shrink_to(conn.read_allocation_bytes());
                }
                release_written(&mut holds, written_bytes_total);
            }
            Action::Write => {
                let deadline = conn.poll_timeout();
                let Some(chunk) =
                    conn.transmit_gather(&mut scratch, GATHER_CHUNK_BYTES_MAX, GATHER_BYTES_MAX)
                else {
                    continue;
                };
                let written = future::or(async { Some(stream.write(chunk).await) }, async {
                    sleep(deadline.saturating_duration_since(Instant::now())).await;
                    None
                })
                .await;
                match written {
                    Some(Ok(0)) => break Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                    Some(Ok(n)) => {
                        conn.handle_written(n);
                        written_bytes_total += n as u64;
                        release_written(&mut holds, written_bytes_total);
                    }
                    Some(Err(error)) => break Err(error.into()),
                    None => {
                        if let Err(error) = conn.handle_timeout(Instant::now()) {
                            break Err(error.into());
                        }
                    }
                }
            }
            Action::Read => {
                if stop.is_triggered() {
                    conn.handle_eof();
                    continue;
                }
                let deadline = conn.poll_timeout();
                let outcome = {
                    let read = async {
                        if let Some(buffered) = &mut buffered {
                            // Waits here while the shard's request buffers
                            // are used up.
                            if !buffered.grow_to(conn.read_capacity()).await {
                                return ReadOutcome::Stopped;
                            }
                        }
                        let space = conn.read_space();
                        ReadOutcome::Read(stream.read(space).await)
                    };
                    let timer = async {
                        sleep(deadline.saturating_duration_since(Instant::now())).await;
                        ReadOutcome::Deadline
                    };
                    let stopped = async {
                        stop.wait().await;
                        ReadOutcome::Stopped
                    };
                    future::or(read, future::or(timer, stopped)).await
                };
                match outcome {
                    ReadOutcome::Read(Ok(0)) => {
                        conn.handle_read(0);
                        conn.handle_eof();
                    }
                    ReadOutcome::Read(Ok(n)) => conn.handle_read(n),
                    ReadOutcome::Read(Err(error)) => {
                        conn.handle_read(0);
                        break Err(error.into());
                    }
                    // Abandoned reads (possibly before the space was asked
                    // for, while waiting on the budget) count as 0 bytes.
                    ReadOutcome::Deadline => {
                        conn.handle_read(0);
                        if let Err(error) = conn.handle_timeout(Instant::now()) {
                            break Err(error.into());
                        }
                    }
                    ReadOutcome::Stopped => {
                        conn.handle_read(0);
                        conn.handle_eof();
                    }
                }
            }
            Action::Close => {
                break match refused.take() {
                    Some(error) => Err(DriverError::Request(error)),
                    None => Ok(()),
                }
            }
        }
    };
    // Best effort: the peer may already be gone.
    let _ = stream.close().await;
    result
}

/// Drops the holds of responses written whole.
fn release_written<H>(holds: &mut VecDeque<(u64, H)>, written_bytes_total: u64) {
    while holds
        .front()
        .is_some_and(|(end, _)| *end <= written_bytes_total)
    {
        holds.pop_front();
    }
}
