//! Native-protocol frames over a `glommio::net::TcpStream`: the socket half
//! of loadgen's producer and consumer drivers. The stream is split so one
//! task can write requests while another reads responses (glommio keeps
//! separate read and write readiness sources per socket).

use std::io;

use bytes::{Bytes, BytesMut};
use fjord_schema::api::ApiKey;
use fjord_schema::frame::{FrameDecoder, FrameFlags, FrameHeader};
use fjord_schema::{CorrelationId, Frame};
use futures_lite::io::{split, ReadHalf, WriteHalf};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use zerocopy::IntoBytes;

/// Frames whose pieces add up to less than this are copied into one buffer
/// and written with one syscall; larger payload pieces are written from
/// where they are.
const GATHER_BYTES_MAX: usize = 64 * 1024;
/// Bytes asked of the socket per read.
const READ_CHUNK_BYTES: usize = 256 * 1024;

pub type Reader = ReadHalf<TcpStream>;
pub type Writer = WriteHalf<TcpStream>;

/// Connects with TCP_NODELAY and splits the stream.
pub async fn connect(addr: &str) -> io::Result<(Reader, Writer)> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| io::Error::other(format!("cannot connect to {addr}: {e}")))?;
    stream
        .set_nodelay(true)
        .map_err(|e| io::Error::other(format!("set_nodelay: {e}")))?;
    Ok(split(stream))
}

/// Writes one request frame: header, body, then the payload pieces.
pub async fn write_frame(
    writer: &mut Writer,
    gather: &mut Vec<u8>,
    api_key: ApiKey,
    flags: FrameFlags,
    correlation_id: CorrelationId,
    body: &[u8],
    payload: &[Bytes],
) -> io::Result<()> {
    let too_large = || io::Error::new(io::ErrorKind::InvalidInput, "frame section over 4 GiB");
    let body_len = u32::try_from(body.len()).map_err(|_| too_large())?;
    let payload_len: usize = payload.iter().map(Bytes::len).sum();
    let payload_len_u32 = u32::try_from(payload_len).map_err(|_| too_large())?;
    let header = FrameHeader::new(
        api_key as u16,
        0,
        flags,
        correlation_id,
        body_len,
        payload_len_u32,
    );
    gather.clear();
    gather.extend_from_slice(header.as_bytes());
    gather.extend_from_slice(body);
    let mut pieces = payload.iter().peekable();
    // Small leading pieces join the header write.
    while let Some(piece) = pieces.peek() {
        if gather.len() + piece.len() > GATHER_BYTES_MAX {
            break;
        }
        gather.extend_from_slice(piece);
        pieces.next();
    }
    writer.write_all(gather).await?;
    for piece in pieces {
        writer.write_all(piece).await?;
    }
    Ok(())
}

/// Reads whole frames off a connection.
#[derive(Debug)]
pub struct FrameReader {
    decoder: FrameDecoder,
    buffer: BytesMut,
}

impl FrameReader {
    pub fn new(frame_bytes_max: u32) -> FrameReader {
        FrameReader {
            decoder: FrameDecoder::new(frame_bytes_max),
            buffer: BytesMut::with_capacity(READ_CHUNK_BYTES),
        }
    }

    /// The next frame; an error when the peer closed or sent garbage.
    pub async fn next(&mut self, reader: &mut Reader) -> io::Result<Frame> {
        loop {
            match self.decoder.decode(&mut self.buffer) {
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) => {}
                Err(error) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("unparseable frame from the broker: {error}"),
                    ))
                }
            }
            read_more(&mut self.buffer, reader).await?;
        }
    }
}

/// Appends what the socket has (up to a chunk) to `buffer`; an error when
/// the broker closed the connection.
pub async fn read_more(buffer: &mut BytesMut, reader: &mut Reader) -> io::Result<()> {
    let filled = buffer.len();
    buffer.resize(filled + READ_CHUNK_BYTES, 0);
    let read = reader.read(&mut buffer[filled..]).await;
    let n = match read {
        Ok(n) => n,
        Err(error) => {
            buffer.truncate(filled);
            return Err(error);
        }
    };
    buffer.truncate(filled + n);
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the broker closed the connection",
        ));
    }
    Ok(())
}
