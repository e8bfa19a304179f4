//! The glommio serve loop of one Kafka connection: read, frame, handle one
//! request at a time (so responses go out in request order, as Kafka
//! requires), write. Closes on EOF, stop, idle timeout, no whole first
//! request within `first_request_timeout`, or a frame that cannot be
//! parsed.

use std::io;
use std::time::Instant;

use futures_lite::future;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::timer::sleep;

use fjord_net::conn::ConnectionConfig;
use fjord_net::stop::StopSignal;

use super::frame::{FrameError, KafkaFramer};
use super::handler::{HandleError, KafkaHandler};

const READ_CHUNK: usize = 64 * 1024;

/// Why a Kafka connection closed abnormally.
#[derive(Debug, thiserror::Error)]
pub enum KafkaConnError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Request(#[from] HandleError),
    #[error("idle for longer than {0:?}")]
    Idle(std::time::Duration),
    #[error("no complete first request within {0:?} of connecting")]
    FirstRequest(std::time::Duration),
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
}

enum Read {
    Bytes(io::Result<usize>),
    Idle,
    Stopped,
}

/// Serves one accepted Kafka connection until it closes.
pub async fn serve(
    mut stream: TcpStream,
    config: ConnectionConfig,
    handler: &KafkaHandler,
    stop: &StopSignal,
) -> Result<(), KafkaConnError> {
    let mut framer = KafkaFramer::new(config.frame_bytes_max);
    let mut last_request = Instant::now();
    // Until the first whole request: the (shorter) first-request deadline.
    let mut requested = false;
    let first_timeout = config.first_request_timeout.min(config.idle_timeout);
    loop {
        while let Some(frame) = framer.next_frame()? {
            requested = true;
            if let Some(response) = handler.handle(frame).await? {
                let write = async { Some(stream.write_all(&response).await) };
                let timeout = async {
                    sleep(config.idle_timeout).await;
                    None
                };
                match future::or(write, timeout).await {
                    Some(result) => result?,
                    None => return Err(KafkaConnError::Idle(config.idle_timeout)),
                }
            }
            // A long-poll fetch is not idleness: count from the answer.
            last_request = Instant::now();
            if stop.is_triggered() {
                return Ok(());
            }
        }
        if stop.is_triggered() {
            return Ok(());
        }
        let timeout = if requested {
            config.idle_timeout
        } else {
            first_timeout
        };
        let deadline = last_request + timeout;
        let space = framer.read_space(READ_CHUNK);
        let read = async { Read::Bytes(stream.read(space).await) };
        let idle = async {
            sleep(deadline.saturating_duration_since(Instant::now())).await;
            Read::Idle
        };
        let stopped = async {
            stop.wait().await;
            Read::Stopped
        };
        match future::or(read, future::or(idle, stopped)).await {
            Read::Bytes(Ok(0)) | Read::Stopped => return Ok(()),
            Read::Bytes(Ok(n)) => framer.filled(n),
            Read::Bytes(Err(error)) => return Err(error.into()),
            Read::Idle if !requested && first_timeout < config.idle_timeout => {
                return Err(KafkaConnError::FirstRequest(first_timeout))
            }
            Read::Idle => return Err(KafkaConnError::Idle(config.idle_timeout)),
        }
    }
}
