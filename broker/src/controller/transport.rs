//! Inter-node frames over `--cluster-listen` (glommio): the metadata
//! quorum's Raft messages and forwarded controller commands today, replica
//! fetches next. Native frames (`fjord_schema::frame`) with the cluster
//! api keys ([`ClusterApiKey`], 1000..): the body is opaque bytes owned by
//! the caller, the payload empty. General on purpose: frames in
//! ([`ClusterService`]), frames out ([`Transport::send`],
//! [`Transport::call`]).
//!
//! Outbound: one connection per peer, opened on first use and kept,
//! reconnected with backoff; a bounded queue per peer where one-way
//! frames (Raft messages) are dropped oldest first on overflow (Raft
//! tolerates loss), and a bounded number of calls in flight.
//! Answers may carry a payload besides the body (a frame's payload
//! section, as native fetch responses): [`Reply::payload`] chunks (a
//! replica fetch's batches, shared with the leader's log cache) are
//! written to the socket as they are, never copied into one buffer
//! (chunks under [`GATHER_CHUNK_BYTES_MAX`] are gathered into one write),
//! and a caller gets the payload as a slice of the received buffer
//! ([`Transport::call_frame`]). Received bytes are read straight into the
//! frame buffer.
//! Inbound: the listener accepts any number of peers up to
//! [`INBOUND_CONNECTIONS_MAX`]; one-way frames are handed over in order,
//! requests run as tasks (bounded per connection) and answer in any order
//! by correlation id. A bad frame closes its connection, never the node.
//!
//! Lives on: shard 0 of every node. Owns: the cluster listener and the
//! outbound connections. start (`listen`) → serve → executor ends.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use fjord_schema::api::ClusterApiKey;
use fjord_schema::frame::{encode_frame, FrameDecoder, FrameFlags, FrameHeader};
use fjord_schema::CorrelationId;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalSender};
use glommio::net::{TcpListener, TcpStream};
use zerocopy::IntoBytes;

/// Largest cluster frame (body), either way. A Raft message carrying a
/// snapshot holds the whole metadata image (a few MiB for tens of
/// thousands of partitions); appends are capped far lower
/// (`quorum::MSG_BYTES_MAX`).
pub const CLUSTER_FRAME_BYTES_MAX: u32 = 64 << 20;
/// Frames queued for one peer while it is slow or unreachable; past it
/// the oldest one-way frame is dropped.
pub const PEER_QUEUE_FRAMES_MAX: usize = 512;
/// Calls waiting for their answer from one peer; more are refused
/// ([`CallError::Busy`]).
pub const PEER_CALLS_MAX: usize = 128;
/// Requests of one inbound connection running at once; more are answered
/// with an error.
pub const INBOUND_REQUESTS_MAX: usize = 128;
/// Inbound connections served at once; more are closed on accept.
pub const INBOUND_CONNECTIONS_MAX: usize = 256;
/// Connect attempts time out after this.
pub const CONNECT_TIMEOUT_MS: u64 = 1_000;
/// Reconnect backoff: doubles from the min to the max.
pub const RECONNECT_BACKOFF_MIN_MS: u64 = 50;
pub const RECONNECT_BACKOFF_MAX_MS: u64 = 2_000;
/// An unreachable peer is logged (warn) at most this often.
pub const UNREACHABLE_WARN_INTERVAL_MS: u64 = 10_000;
/// Bytes read from a socket at once.
const READ_CHUNK_BYTES: usize = 64 << 10;
/// Payload chunks below this are gathered (copied) into one write with
/// their neighbours; larger ones are written as they are.
pub const GATHER_CHUNK_BYTES_MAX: usize = 16 << 10;
/// Most bytes gathered into one write.
const GATHER_BYTES_MAX: usize = 256 << 10;
/// Frames written to a socket in one write, at most.
const WRITE_BATCH_FRAMES_MAX: usize = 64;

/// What the node serves on its cluster listener.
pub trait ClusterService {
    /// A one-way frame (no answer), in the order its connection sent it.
    fn one_way(&self, api: ClusterApiKey, body: Bytes);
    /// A request: its answer, or an error message for the caller.
    fn request(
        &self,
        api: ClusterApiKey,
        body: Bytes,
    ) -> Pin<Box<dyn Future<Output = Result<Reply, String>>>>;
}

/// An answer: its body, and a payload written after it as these chunks
/// (not copied together; the caller receives them as one slice,
/// [`Answer::payload`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reply {
    pub body: Bytes,
    pub payload: Vec<Bytes>,
}

impl From<Bytes> for Reply {
    fn from(body: Bytes) -> Reply {
        Reply {
            body,
            payload: Vec::new(),
        }
    }
}

/// A received answer: body and payload, slices of the received buffer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    pub body: Bytes,
    pub payload: Bytes,
}

/// Why a call got no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("no address known for node {0}")]
    UnknownPeer(u64),
    #[error("too many calls in flight to node {0}")]
    Busy(u64),
    #[error("node {0} did not answer in time")]
    Timeout(u64),
    #[error("connection to node {0} lost")]
    Disconnected(u64),
    #[error("node {node} answered an error: {message}")]
    Remote { node: u64, message: String },
}

/// A coalescing wake-up: waiters wait for the version to pass the one
/// they saw. Single-threaded (shard 0).
#[derive(Debug, Default)]
pub struct Notify {
    version: Cell<u64>,
    wakers: RefCell<Vec<Waker>>,
}

impl Notify {
    pub fn notify(&self) {
        self.version.set(self.version.get() + 1);
        for waker in self.wakers.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    pub fn version(&self) -> u64 {
        self.version.get()
    }

    /// Returns once [`Notify::notify`] was called after `seen` was read.
    pub async fn wait_past(&self, seen: u64) {
        futures_lite::future::poll_fn(|cx| {
            if self.version.get() > seen {
                return Poll::Ready(());
            }
            let mut wakers = self.wakers.borrow_mut();
            if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                wakers.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}

/// The cluster transport of this node. Cheap to clone.
#[derive(Clone)]
pub struct Transport {
    inner: Rc<Inner>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("node", &self.inner.node)
            .finish()
    }
}

struct Inner {
    node: u64,
    peers: RefCell<BTreeMap<u64, Rc<Peer>>>,
    inbound: Cell<usize>,
    /// Set by [`Transport::close`]: every task ends and drops its socket.
    closed: Cell<bool>,
    closing: Notify,
}

impl Inner {
    /// Returns once the transport is closed.
    async fn closed(&self) {
        loop {
            let seen = self.closing.version();
            if self.closed.get() {
                return;
            }
            self.closing.wait_past(seen).await;
        }
    }
}

/// `future`'s output, or `None` once `inner` is closed.
async fn unless_closed<T>(inner: &Inner, future: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(future.await) }, async {
        inner.closed().await;
        None
    })
    .await
}

struct Outgoing {
    api: u16,
    flags: u16,
    correlation: u32,
    body: Bytes,
}

impl Outgoing {
    fn one_way(&self) -> bool {
        self.flags & FrameFlags::NO_RESPONSE != 0
    }
}

type Pending = LocalSender<Result<Answer, CallError>>;

struct Peer {
    node: u64,
    addr: RefCell<String>,
    queue: RefCell<VecDeque<Outgoing>>,
    wake: Notify,
    pending: RefCell<HashMap<u32, Pending>>,
    next_correlation: Cell<u32>,
    /// Set once the overflow of this queue was logged; cleared when it
    /// drains.
    overflow_logged: Cell<bool>,
    last_warn: Cell<Option<Instant>>,
    connected: Cell<bool>,
}

impl Peer {
    fn push(&self, outgoing: Outgoing) {
        let mut queue = self.queue.borrow_mut();
        if queue.len() >= PEER_QUEUE_FRAMES_MAX {
            match queue.iter().position(Outgoing::one_way) {
                Some(oldest) => {
                    queue.remove(oldest);
                }
                None => return,
            }
            if !self.overflow_logged.replace(true) {
                tracing::warn!(
                    node = self.node,
                    queued_max = PEER_QUEUE_FRAMES_MAX,
                    "cluster transport: queue to node full, dropping its oldest messages"
                );
            }
        }
        queue.push_back(outgoing);
        drop(queue);
        self.wake.notify();
    }

    fn warn_unreachable(&self, error: &dyn std::fmt::Display) {
        let now = Instant::now();
        let due = self.last_warn.get().is_none_or(|at| {
            now.duration_since(at) >= Duration::from_millis(UNREACHABLE_WARN_INTERVAL_MS)
        });
        if due {
            self.last_warn.set(Some(now));
            tracing::warn!(
                node = self.node,
                addr = %self.addr.borrow(),
                %error,
                "cluster transport: node unreachable, retrying"
            );
        }
    }

    /// The connection is gone: every call waiting on it fails, and calls
    /// not yet sent are dropped (their callers were told).
    fn fail_calls(&self) {
        for (_, pending) in self.pending.borrow_mut().drain() {
            let _ = pending.try_send(Err(CallError::Disconnected(self.node)));
        }
        self.queue.borrow_mut().retain(Outgoing::one_way);
    }
}

impl Transport {
    /// The transport of node `node` (no listener yet, no peers).
    pub fn new(node: u64) -> Transport {
        Transport {
            inner: Rc::new(Inner {
                node,
                peers: RefCell::new(BTreeMap::new()),
                inbound: Cell::new(0),
                closed: Cell::new(false),
                closing: Notify::default(),
            }),
        }
    }

    pub fn node(&self) -> u64 {
        self.inner.node
    }

    /// Closes the listener and every connection, in and out, and fails
    /// the calls waiting (a node stopping without its process ending).
    pub fn close(&self) {
        self.inner.closed.set(true);
        self.inner.closing.notify();
        for peer in self.inner.peers.borrow().values() {
            peer.wake.notify();
        }
    }

    /// Binds `addr` on this executor and serves `service` there. Returns
    /// the bound address.
    pub fn listen(
        &self,
        addr: SocketAddr,
        service: Rc<dyn ClusterService>,
    ) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(addr).map_err(|e| std::io::Error::other(e.to_string()))?;
        let bound = listener
            .local_addr()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        tracing::info!(%bound, "cluster listener up");
        let inner = Rc::downgrade(&self.inner);
        glommio::spawn_local(accept_loop(inner, listener, service)).detach();
        Ok(bound)
    }

    /// Sets (or changes) where `node` is reached (`host:port`). The first
    /// time, starts its outbound connection task.
    pub fn set_peer(&self, node: u64, addr: String) {
        assert_ne!(node, self.inner.node, "no connection to self");
        let mut peers = self.inner.peers.borrow_mut();
        if let Some(peer) = peers.get(&node) {
            if *peer.addr.borrow() != addr {
                tracing::info!(node, %addr, "cluster transport: peer address changed");
                *peer.addr.borrow_mut() = addr;
            }
            return;
        }
        let peer = Rc::new(Peer {
            node,
            addr: RefCell::new(addr),
            queue: RefCell::new(VecDeque::new()),
            wake: Notify::default(),
            pending: RefCell::new(HashMap::new()),
            next_correlation: Cell::new(1),
            overflow_logged: Cell::new(false),
            last_warn: Cell::new(None),
            connected: Cell::new(false),
        });
        peers.insert(node, peer.clone());
        glommio::spawn_local(run_peer(Rc::downgrade(&self.inner), peer)).detach();
    }

    pub fn has_peer(&self, node: u64) -> bool {
        self.inner.peers.borrow().contains_key(&node)
    }

    /// Whether the connection to `node` is up now.
    pub fn connected(&self, node: u64) -> bool {
        self.inner
            .peers
            .borrow()
            .get(&node)
            .is_some_and(|p| p.connected.get())
    }

    /// Queues a one-way frame to `node`; false when its address is
    /// unknown. May be dropped later (queue overflow, connection loss).
    pub fn send(&self, node: u64, api: ClusterApiKey, body: Bytes) -> bool {
        let Some(peer) = self.peer(node) else {
            return false;
        };
        peer.push(Outgoing {
            api: api as u16,
            flags: FrameFlags::NO_RESPONSE,
            correlation: 0,
            body,
        });
        true
    }

    /// Sends a request to `node` and waits (at most `timeout`) for its
    /// answer's body.
    pub async fn call(
        &self,
        node: u64,
        api: ClusterApiKey,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, CallError> {
        self.call_frame(node, api, body, timeout)
            .await
            .map(|answer| answer.body)
    }

    /// As [`Transport::call`], with the answer's payload.
    pub async fn call_frame(
        &self,
        node: u64,
        api: ClusterApiKey,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Answer, CallError> {
        let peer = self.peer(node).ok_or(CallError::UnknownPeer(node))?;
        if peer.pending.borrow().len() >= PEER_CALLS_MAX {
            return Err(CallError::Busy(node));
        }
        let correlation = peer.next_correlation.get();
        peer.next_correlation
            .set(correlation.wrapping_add(1).max(1));
        let (sender, receiver) = local_channel::new_bounded(1);
        peer.pending.borrow_mut().insert(correlation, sender);
        peer.push(Outgoing {
            api: api as u16,
            flags: 0,
            correlation,
            body,
        });
        let answer = async {
            receiver
                .recv()
                .await
                .unwrap_or(Err(CallError::Disconnected(node)))
        };
        let expired = async {
            glommio::timer::sleep(timeout).await;
            Err(CallError::Timeout(node))
        };
        let result = futures_lite::future::or(answer, expired).await;
        peer.pending.borrow_mut().remove(&correlation);
        result
    }

    fn peer(&self, node: u64) -> Option<Rc<Peer>> {
        self.inner.peers.borrow().get(&node).cloned()
    }
}

fn resolve(addr: &str) -> std::io::Result<SocketAddr> {
    addr.to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "address resolves to nothing")
    })
}

/// Keeps the connection to `peer` up while the transport lives.
async fn run_peer(inner: Weak<Inner>, peer: Rc<Peer>) {
    let mut backoff_ms = RECONNECT_BACKOFF_MIN_MS;
    loop {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if inner.closed.get() {
            peer.fail_calls();
            return;
        }
        let addr = peer.addr.borrow().clone();
        let connected = match resolve(&addr) {
            Ok(addr) => {
                let connect =
                    TcpStream::connect_timeout(addr, Duration::from_millis(CONNECT_TIMEOUT_MS));
                match unless_closed(&inner, connect).await {
                    Some(connected) => connected.map_err(|e| e.to_string()),
                    None => continue,
                }
            }
            Err(e) => Err(e.to_string()),
        };
        match connected {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                backoff_ms = RECONNECT_BACKOFF_MIN_MS;
                peer.connected.set(true);
                if peer.last_warn.take().is_some() {
                    tracing::info!(node = peer.node, %addr, "cluster transport: node reachable again");
                }
                let reason = unless_closed(&inner, serve_outbound(&peer, stream))
                    .await
                    .unwrap_or_else(|| "transport closed".to_string());
                peer.connected.set(false);
                peer.fail_calls();
                tracing::debug!(node = peer.node, %reason, "cluster transport: connection closed");
            }
            Err(error) => {
                // Callers retry elsewhere now rather than wait for their
                // timeouts.
                peer.fail_calls();
                peer.warn_unreachable(&error);
            }
        }
        let backoff = glommio::timer::sleep(Duration::from_millis(backoff_ms));
        unless_closed(&inner, backoff).await;
        backoff_ms = (backoff_ms * 2).min(RECONNECT_BACKOFF_MAX_MS);
    }
}

/// Writes the peer's queue to `stream` and reads answers until the
/// connection fails; returns why.
async fn serve_outbound(peer: &Rc<Peer>, stream: TcpStream) -> String {
    let (reader, mut writer) = futures_lite::io::split(stream);
    let broken: Rc<RefCell<Option<String>>> = Rc::new(RefCell::new(None));
    let reader_task = glommio::spawn_local(read_answers(peer.clone(), reader, broken.clone()));
    let mut buffer = BytesMut::new();
    loop {
        if let Some(reason) = broken.borrow_mut().take() {
            return reason;
        }
        let seen = peer.wake.version();
        buffer.clear();
        {
            let mut queue = peer.queue.borrow_mut();
            let batch = queue.len().min(WRITE_BATCH_FRAMES_MAX);
            for outgoing in queue.drain(..batch) {
                encode_frame(
                    &mut buffer,
                    outgoing.api,
                    0,
                    FrameFlags(outgoing.flags),
                    CorrelationId(outgoing.correlation),
                    &outgoing.body,
                    &[],
                );
            }
            if queue.is_empty() {
                peer.overflow_logged.set(false);
            }
        }
        if buffer.is_empty() {
            peer.wake.wait_past(seen).await;
            continue;
        }
        if let Err(error) = writer.write_all(&buffer).await {
            drop(reader_task);
            return format!("write: {error}");
        }
    }
}

async fn read_answers(
    peer: Rc<Peer>,
    mut reader: futures_lite::io::ReadHalf<TcpStream>,
    broken: Rc<RefCell<Option<String>>>,
) {
    let reason = read_frames(&mut reader, true, |frame| {
        let flags = frame.header.flags();
        if !flags.is_response() {
            return Err("a request on an outbound connection".to_string());
        }
        let correlation = frame.header.correlation_id().0;
        if let Some(pending) = peer.pending.borrow_mut().remove(&correlation) {
            let result = if flags.is_error() {
                Err(CallError::Remote {
                    node: peer.node,
                    message: String::from_utf8_lossy(&frame.body).into_owned(),
                })
            } else {
                Ok(Answer {
                    body: frame.body,
                    payload: frame.payload,
                })
            };
            let _ = pending.try_send(result);
        }
        Ok(())
    })
    .await;
    *broken.borrow_mut() = Some(reason);
    peer.wake.notify();
}

/// Reads frames from `reader` into `on_frame` until the connection ends
/// or a frame is bad; returns why it stopped. `whole_frames`: make room
/// for each frame at once when its header arrives (answers).
async fn read_frames<R, F>(reader: &mut R, whole_frames: bool, mut on_frame: F) -> String
where
    R: futures_lite::AsyncRead + Unpin,
    F: FnMut(fjord_schema::frame::Frame) -> Result<(), String>,
{
    let mut decoder = FrameDecoder::new(CLUSTER_FRAME_BYTES_MAX);
    let mut buffer = BytesMut::new();
    loop {
        loop {
            match decoder.decode(&mut buffer) {
                Ok(Some(frame)) => {
                    if let Err(reason) = on_frame(frame) {
                        return reason;
                    }
                }
                Ok(None) => break,
                Err(error) => return format!("bad frame: {error}"),
            }
        }
        // Read straight into the frame buffer (no copy out of a chunk);
        // frames split off it keep sharing its memory. On an outbound
        // connection (answers this node asked for, of a size it bounded)
        // room for the whole frame being read is made at once: growing by
        // steps would copy its first part again at each. Inbound, memory
        // follows the bytes that arrive (the decoder's steps).
        if whole_frames {
            if let Some(frame_len) = decoder.pending_frame_len() {
                let missing = (frame_len as usize).saturating_sub(buffer.len());
                buffer.reserve(missing + READ_CHUNK_BYTES);
            }
        }
        let filled = buffer.len();
        buffer.resize(filled + READ_CHUNK_BYTES, 0);
        match reader.read(&mut buffer[filled..]).await {
            Ok(0) => return "closed by the peer".to_string(),
            Ok(n) => buffer.truncate(filled + n),
            Err(error) => return format!("read: {error}"),
        }
    }
}

async fn accept_loop(inner: Weak<Inner>, listener: TcpListener, service: Rc<dyn ClusterService>) {
    loop {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let Some(accepted) = unless_closed(&inner, listener.accept()).await else {
            return;
        };
        match accepted {
            Ok(stream) => {
                if inner.inbound.get() >= INBOUND_CONNECTIONS_MAX {
                    tracing::warn!(
                        max = INBOUND_CONNECTIONS_MAX,
                        "cluster listener: too many connections, closing a new one"
                    );
                    continue;
                }
                inner.inbound.set(inner.inbound.get() + 1);
                let _ = stream.set_nodelay(true);
                let service = service.clone();
                glommio::spawn_local(async move {
                    unless_closed(&inner.clone(), serve_inbound(stream, service)).await;
                    inner.inbound.set(inner.inbound.get() - 1);
                })
                .detach();
            }
            Err(error) => {
                tracing::warn!(%error, "cluster listener: accept failed");
                glommio::timer::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve_inbound(stream: TcpStream, service: Rc<dyn ClusterService>) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let (answers, answers_rx) = local_channel::new_bounded::<Outbound>(INBOUND_REQUESTS_MAX);
    let answers = Rc::new(answers);
    let writer_task = glommio::spawn_local(async move {
        let mut scratch = Vec::new();
        while let Some(outbound) = answers_rx.recv().await {
            if write_outbound(&mut writer, outbound, &mut scratch)
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let in_flight = Rc::new(Cell::new(0usize));
    let reason = read_frames(&mut reader, false, |frame| {
        let flags = frame.header.flags();
        if flags.is_response() {
            return Err("a response on an inbound connection".to_string());
        }
        let key = frame.header.api_key.get();
        let api =
            ClusterApiKey::from_u16(key).ok_or_else(|| format!("unknown cluster api key {key}"))?;
        if flags.no_response() {
            service.one_way(api, frame.body);
            return Ok(());
        }
        let correlation = frame.header.correlation_id();
        if in_flight.get() >= INBOUND_REQUESTS_MAX {
            let _ = answers.try_send(answer(key, correlation, Err("busy".to_string())));
            return Ok(());
        }
        in_flight.set(in_flight.get() + 1);
        let request = service.request(api, frame.body);
        let answers = answers.clone();
        let in_flight = in_flight.clone();
        glommio::spawn_local(async move {
            let result = request.await;
            let _ = answers.send(answer(key, correlation, result)).await;
            in_flight.set(in_flight.get() - 1);
        })
        .detach();
        Ok(())
    })
    .await;
    tracing::debug!(%peer, %reason, "cluster listener: connection closed");
    drop(answers);
    drop(writer_task);
}

/// An answer on its way out: the frame header, then the body and the
/// payload chunks, each written as it is.
struct Outbound {
    header: FrameHeader,
    body: Bytes,
    payload: Vec<Bytes>,
}

fn answer(api: u16, correlation: CorrelationId, result: Result<Reply, String>) -> Outbound {
    let (flags, reply) = match result {
        Ok(reply) => (FrameFlags::RESPONSE, reply),
        Err(message) => (
            FrameFlags::RESPONSE | FrameFlags::ERROR,
            Reply::from(Bytes::from(message.into_bytes())),
        ),
    };
    let payload_len: usize = reply.payload.iter().map(Bytes::len).sum();
    let header = FrameHeader::new(
        api,
        0,
        FrameFlags(flags),
        correlation,
        u32::try_from(reply.body.len()).unwrap_or(u32::MAX),
        u32::try_from(payload_len).unwrap_or(u32::MAX),
    );
    Outbound {
        header,
        body: reply.body,
        payload: reply.payload,
    }
}

/// Writes `outbound`: the header with the body (copied: they are small),
/// then each payload chunk as it is, neighbours under
/// [`GATHER_CHUNK_BYTES_MAX`] gathered into one write.
async fn write_outbound<W: futures_lite::AsyncWrite + Unpin>(
    writer: &mut W,
    outbound: Outbound,
    scratch: &mut Vec<u8>,
) -> std::io::Result<()> {
    scratch.clear();
    scratch.extend_from_slice(outbound.header.as_bytes());
    scratch.extend_from_slice(&outbound.body);
    for chunk in &outbound.payload {
        let small = chunk.len() < GATHER_CHUNK_BYTES_MAX;
        if small && scratch.len() + chunk.len() <= GATHER_BYTES_MAX {
            scratch.extend_from_slice(chunk);
            continue;
        }
        if !scratch.is_empty() {
            writer.write_all(scratch).await?;
            scratch.clear();
        }
        if small {
            scratch.extend_from_slice(chunk);
        } else {
            writer.write_all(chunk).await?;
        }
    }
    if !scratch.is_empty() {
        writer.write_all(scratch).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
