//! The glommio serve loop of one Kafka connection: read, frame, handle one
//! request at a time (so responses go out in request order, as Kafka
//! requires), write. Closes on EOF, stop, idle timeout, no whole first
//! request within `first_request_timeout`, or a frame that cannot be
//! parsed.
//!
//! Memory: the connection holds its read buffer (and the frame being
//! handled) of the shard's request-buffer budget, and each response until
//! it is written of the shard's response budget (see `KafkaHandler`). When
//! either is used up the connection waits instead of reading, so many
//! slow or hostile clients share a bounded amount of memory.

use std::io;
use std::time::Instant;

use futures_lite::future;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::timer::sleep;

use fjord_net::conn::ConnectionConfig;
use fjord_net::stop::StopSignal;

use super::budget::BudgetHold;
use super::frame::{FrameError, KafkaFramer};
use super::handler::{HandleError, KafkaHandler};

pub use crate::config::KAFKA_READ_CHUNK_BYTES as READ_CHUNK; // issue-12 merge shim

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
    let (budget, budget_max) = handler.request_buffers();
    // Covers the framer's capacity, and while a frame is handled that
    // frame's allocation too (it is the capacity the framer had).
    let mut buffered = BudgetHold::new(budget, budget_max);
    let mut last_request = Instant::now();
    // Until the first whole request: the (shorter) first-request deadline.
    let mut requested = false;
    let first_timeout = config.first_request_timeout.min(config.idle_timeout);
    loop {
        while let Some(frame) = framer.next_frame()? {
            requested = true;
            if let Some(response) = handler.handle(frame).await? {
                let write = async { Some(stream.write_all(response.bytes()).await) };
                let timeout = async {
                    sleep(config.idle_timeout).await;
                    None
                };
                match future::or(write, timeout).await {
                    Some(result) => result?,
                    None => return Err(KafkaConnError::Idle(config.idle_timeout)),
                }
            }
            buffered.shrink_to(framer.capacity());
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
        let read = async {
            // Waits here while the shard's request buffers are full.
            if !buffered.grow_to(framer.read_capacity(READ_CHUNK)).await {
                return Read::Stopped;
            }
            let space = framer.read_space(READ_CHUNK);
            Read::Bytes(stream.read(space).await)
        };
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
