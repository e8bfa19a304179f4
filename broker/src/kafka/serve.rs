//! The Kafka edge's connections: [`KafkaFramer`] splits the bytes, the
//! shared connection core (`fjord_net::conn`) bounds the read buffer, the
//! write queue and the timeouts, and net's driver runs it, exactly as for
//! native connections; [`KafkaHandler`] answers one request at a time, so
//! responses go out in request order, as Kafka requires.
//!
//! Memory: the connection holds its read buffer's allocation (and the
//! frame being handled) of the shard's request-buffer budget, and each
//! response until it is written of the shard's response budget (see
//! `KafkaHandler`). When the first is used up the connection is not read;
//! when the second is, requests wait; so many slow or hostile clients
//! share a bounded amount of memory.

use bytes::Bytes;
use glommio::net::TcpStream;

use fjord_net::conn::ConnectionConfig;
use fjord_net::driver::budget::BudgetHold;
use fjord_net::driver::{self, DriverError, FramedService, RequestBuffers};
use fjord_net::stop::StopSignal;

use super::frame::{FrameError, KafkaFramer};
use super::handler::{HandleError, KafkaHandler};

pub use super::frame::READ_CHUNK;

/// How a Kafka connection ended abnormally.
pub type KafkaConnError = DriverError<FrameError, HandleError>;

impl FramedService<Bytes> for KafkaHandler {
    /// The response's hold of the shard's response budget.
    type Hold<'a> = Option<BudgetHold<'a>>;
    type Error = HandleError;

    async fn handle<'a>(
        &'a self,
        frame: Bytes,
        out: &mut Vec<Bytes>,
    ) -> Result<Option<BudgetHold<'a>>, HandleError> {
        let Some(response) = KafkaHandler::handle(self, frame).await? else {
            return Ok(None);
        };
        let (bytes, hold) = response.into_parts();
        out.push(bytes);
        Ok(Some(hold))
    }
}

/// Serves one accepted Kafka connection until it closes.
pub async fn serve(
    stream: TcpStream,
    config: ConnectionConfig,
    handler: &KafkaHandler,
    stop: &StopSignal,
) -> Result<(), KafkaConnError> {
    let framer = KafkaFramer::new(config.frame_bytes_max);
    // A queued response holds its bytes of the shard's response budget
    // until written, and the next request may wait for that budget (a
    // Fetch reserves before it reads the log): handling it while this
    // connection's responses wait to be written could wait on itself, or,
    // across connections, on each other. So a Kafka connection decodes its
    // next request only once its responses are written (a write queue of
    // one response), as Kafka's own broker does with its muted channels.
    let config = ConnectionConfig {
        write_queue_bytes_max: 1,
        ..config
    };
    let (budget, budget_bytes_max) = handler.request_buffers();
    let request_buffers = RequestBuffers {
        budget,
        budget_bytes_max,
    };
    driver::serve_framed(stream, config, framer, handler, Some(request_buffers), stop).await
}
