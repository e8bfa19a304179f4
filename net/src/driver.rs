//! glommio driver: runs a [`Connection`] over a `glommio::net::TcpStream`.
//!
//! The only module of this crate that imports glommio. It does the socket
//! reads and writes and the timers; every protocol decision is the core's.

use std::future::Future;
use std::io;
use std::time::Instant;

use bytes::Bytes;
use fjord_schema::frame::Frame;
use futures_lite::future;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::timer::sleep;

use crate::conn::{Action, Connection, ConnectionConfig, ConnectionError};
use crate::stop::StopSignal;

/// Consecutive response chunks smaller than this are copied into one write
/// (a fetch of many small batches costs one syscall, not one per batch);
/// larger chunks are written from where they are.
const GATHER_CHUNK_BYTES_MAX: usize = 16 * 1024;
/// Most bytes one gathered write copies.
const GATHER_BYTES_MAX: usize = 64 * 1024;

/// What serves requests on a connection.
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

/// How a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
}

enum ReadOutcome {
    Read(io::Result<usize>),
    Deadline,
    Stopped,
}

/// Serves one connection until the peer closes it, it breaks a limit, or
/// `stop` fires. On `stop` the requests already received are answered and
/// flushed before the socket is closed. `Ok(())` is a clean close.
pub async fn serve<S: Service>(
    mut stream: TcpStream,
    config: ConnectionConfig,
    service: &S,
    stop: &StopSignal,
) -> Result<(), DriverError> {
    let mut conn = Connection::new(config, Instant::now());
    let mut out = Vec::new();
    let mut scratch = Vec::new();
    let result = loop {
        let action = match conn.poll_action(Instant::now()) {
            Ok(action) => action,
            Err(error) => break Err(error.into()),
        };
        match action {
            Action::Handle(frame) => {
                service.call(frame, &mut out).await;
                for chunk in out.drain(..) {
                    conn.queue_response(chunk);
                }
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
                    Some(Ok(n)) => conn.handle_written(n),
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
                    let space = conn.read_space();
                    let read = async { ReadOutcome::Read(stream.read(space).await) };
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
            Action::Close => break Ok(()),
        }
    };
    // Best effort: the peer may already be gone.
    let _ = stream.close().await;
    result
}
