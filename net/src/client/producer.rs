//! The producer on std threads and blocking sockets: the driver of
//! [`ProducerCore`]. Callers append from any thread; one sender thread turns
//! ready batches into requests and writes them; one reader thread per broker
//! connection reads answers. Results reach each record's [`SendHandle`].
//!
//! Lives in: the caller's process. Owns: its connections and threads.
//! new → send/flush → close (or drop, which closes).

use std::collections::{HashMap, HashSet};
use std::io::ErrorKind;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use fjord_schema::api::ApiKey;
use fjord_schema::frame::{FrameDecoder, FrameFlags};
use fjord_schema::{CorrelationId, ErrorCode, PartitionId, ProducerEpoch, ProducerId, RecordInput};

use super::cluster::Endpoint;
use super::producer_core::{
    Completion, Outgoing, ProduceError, ProducerConfig, ProducerCore, RecordMetadata, Refused,
};
use super::protocol::{encode_init_producer_id, read_init_producer_id, read_produce, Acks};
use super::retry::AttemptFailure;
use super::{broker_error, connect_stream, write_frame, Client, ClientConfig, ClientError};

/// Producer settings: where to bootstrap, the core's settings and the
/// connection settings.
#[derive(Debug, Clone)]
pub struct ProducerOptions {
    /// `bootstrap.servers`: `host:port` of any broker listener.
    pub bootstrap: Vec<String>,
    pub producer: ProducerConfig,
    /// Connect timeout and frame size limit for every connection.
    pub client: ClientConfig,
    /// `max.block.ms`: how long `send` waits for buffer space or metadata.
    pub max_block: Duration,
}

impl ProducerOptions {
    pub fn new(bootstrap: impl Into<String>) -> ProducerOptions {
        ProducerOptions {
            bootstrap: vec![bootstrap.into()],
            producer: ProducerConfig::default(),
            client: ClientConfig::default(),
            max_block: Duration::from_secs(60),
        }
    }
}

/// A record to send.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProducerRecord<'a> {
    pub topic: &'a str,
    /// `None`: the partitioner picks (key hash, or sticky when keyless).
    pub partition: Option<PartitionId>,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [(&'a [u8], Option<&'a [u8]>)],
    /// Milliseconds since the epoch; `None`: now.
    pub timestamp: Option<i64>,
}

impl<'a> ProducerRecord<'a> {
    pub fn new(topic: &'a str, key: Option<&'a [u8]>, value: &'a [u8]) -> ProducerRecord<'a> {
        ProducerRecord {
            topic,
            key,
            value: Some(value),
            ..ProducerRecord::default()
        }
    }
}

#[derive(Debug, Default)]
struct Slot {
    result: Mutex<Option<Result<RecordMetadata, ProduceError>>>,
    done: Condvar,
}

impl Slot {
    fn complete(&self, result: Result<RecordMetadata, ProduceError>) {
        let mut guard = lock(&self.result);
        if guard.is_none() {
            *guard = Some(result);
        }
        self.done.notify_all();
    }
}

/// The future of one `send`: resolves to the record's partition and offset,
/// or why it was not written.
#[derive(Debug, Clone)]
pub struct SendHandle {
    slot: Arc<Slot>,
}

impl SendHandle {
    /// Blocks until the record is acknowledged or failed.
    pub fn wait(&self) -> Result<RecordMetadata, ProduceError> {
        let mut guard = lock(&self.slot.result);
        loop {
            if let Some(result) = guard.as_ref() {
                return result.clone();
            }
            guard = self
                .slot
                .done
                .wait(guard)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// The result if it is known.
    pub fn try_result(&self) -> Option<Result<RecordMetadata, ProduceError>> {
        lock(&self.slot.result).clone()
    }
}

type Token = Arc<Slot>;

#[derive(Debug)]
struct State {
    core: ProducerCore<Token>,
    closing: bool,
    /// Something happened the sender thread should look at.
    dirty: bool,
    /// The last metadata failure, reported to `send` callers.
    metadata_error: Option<ClientError>,
}

#[derive(Debug)]
struct Conn {
    id: u64,
    writer: Mutex<TcpStream>,
    /// Request ids written here and not answered yet.
    pending: Mutex<HashSet<u32>>,
    closed: AtomicBool,
    reader: Mutex<Option<JoinHandle<()>>>,
}

impl Conn {
    fn shutdown(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _ = lock(&self.writer).shutdown(Shutdown::Both);
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// The sender thread waits here.
    wake: Condvar,
    /// `send` (buffer full) and `flush` wait here.
    progress: Condvar,
    conns: Mutex<HashMap<Endpoint, Arc<Conn>>>,
    /// Connection for Metadata, to whichever bootstrap broker answers.
    bootstrap: Mutex<Option<Client>>,
    options: ProducerOptions,
    next_conn_id: Mutex<u64>,
}

/// A Kafka-style producer. `send` is thread-safe (`&self`).
#[derive(Debug)]
pub struct Producer {
    shared: Arc<Shared>,
    sender: Option<JoinHandle<()>>,
}

impl Producer {
    /// Connects to a bootstrap broker (so a wrong address fails here, not on
    /// the first send) and starts the sender thread.
    ///
    /// An idempotent producer (the default, see
    /// [`ProducerConfig::idempotence`]) gets its producer id here.
    pub fn new(mut options: ProducerOptions) -> Result<Producer, ClientError> {
        let idempotent = options.producer.idempotence().map_err(|message| {
            ClientError::Io(std::io::Error::new(ErrorKind::InvalidInput, message))
        })?;
        let mut client = connect_bootstrap(&options)?;
        if idempotent {
            let body = encode_init_producer_id(ProducerId::NONE, ProducerEpoch::NONE);
            let frame = client.call(ApiKey::InitProducerId, 0, &body)?;
            let (producer_id, epoch) = read_init_producer_id(&frame)?;
            options.producer.accumulator.producer_id = producer_id;
            options.producer.accumulator.producer_epoch = epoch;
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                core: ProducerCore::new(options.producer.clone()),
                closing: false,
                dirty: false,
                metadata_error: None,
            }),
            wake: Condvar::new(),
            progress: Condvar::new(),
            conns: Mutex::new(HashMap::new()),
            bootstrap: Mutex::new(Some(client)),
            options,
            next_conn_id: Mutex::new(0),
        });
        let sender_shared = shared.clone();
        let sender = thread::Builder::new()
            .name("fjord-producer".into())
            .spawn(move || sender_loop(&sender_shared))
            .map_err(ClientError::Io)?;
        Ok(Producer {
            shared,
            sender: Some(sender),
        })
    }

    /// Queues a record. Blocks up to `max_block` when the buffer is full or
    /// the topic's metadata is not known yet; errors that no wait can fix
    /// (unknown topic, record too large) come back at once.
    pub fn send(&self, record: ProducerRecord<'_>) -> Result<SendHandle, ProduceError> {
        let timestamp = record.timestamp.unwrap_or_else(now_ms);
        let input = RecordInput {
            key: record.key,
            value: record.value,
            headers: record.headers,
            timestamp,
            offset_delta: None,
        };
        let deadline = Instant::now() + self.shared.options.max_block;
        let slot = Arc::new(Slot::default());
        let mut token = slot.clone();
        let mut fetched_metadata = false;
        let mut state = lock(&self.shared.state);
        loop {
            if state.closing {
                return Err(ProduceError::Closed);
            }
            let now = Instant::now();
            match state
                .core
                .append(record.topic, record.partition, input, token, now)
            {
                Ok(_) => {
                    state.dirty = true;
                    self.shared.wake.notify_one();
                    return Ok(SendHandle { slot });
                }
                Err(Refused::Failed(completion)) => {
                    return Err(completion.result.err().unwrap_or(ProduceError::Closed));
                }
                Err(Refused::NeedMetadata(back)) => {
                    token = back;
                    if fetched_metadata {
                        let error = state.metadata_error.take().map_or_else(
                            || "no metadata for the topic".to_owned(),
                            |e| e.to_string(),
                        );
                        return Err(ProduceError::Connection(error));
                    }
                    drop(state);
                    refresh_metadata(&self.shared);
                    fetched_metadata = true;
                    state = lock(&self.shared.state);
                }
                Err(Refused::BufferFull(back)) => {
                    token = back;
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(ProduceError::BufferFull {
                            buffer_memory_bytes: self
                                .shared
                                .options
                                .producer
                                .accumulator
                                .buffer_memory_bytes,
                        });
                    }
                    state = self
                        .shared
                        .progress
                        .wait_timeout(state, deadline - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
        }
    }

    /// Sends everything buffered now and waits until every record sent
    /// before (and during) the call is acknowledged or failed.
    pub fn flush(&self) {
        let mut state = lock(&self.shared.state);
        state.core.flush();
        state.dirty = true;
        self.shared.wake.notify_one();
        while !state.core.is_idle() {
            state = self
                .shared
                .progress
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Flushes, then stops the threads and closes the connections.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(sender) = self.sender.take() else {
            return;
        };
        self.flush();
        {
            let mut state = lock(&self.shared.state);
            state.closing = true;
            self.shared.wake.notify_one();
        }
        let _ = sender.join();
        let conns: Vec<Arc<Conn>> = lock(&self.shared.conns).drain().map(|(_, c)| c).collect();
        for conn in conns {
            conn.shutdown();
            if let Some(reader) = lock(&conn.reader).take() {
                let _ = reader.join();
            }
        }
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking thread cannot leave these structures half-updated in a way
    // that matters more than losing the producer; keep going.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn connect_bootstrap(options: &ProducerOptions) -> Result<Client, ClientError> {
    let mut last = None;
    for addr in &options.bootstrap {
        match Client::connect(addr.as_str(), options.client.clone()) {
            Ok(client) => return Ok(client),
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| ClientError::Resolve("no bootstrap brokers given".into())))
}

/// Fetches metadata for the topics the core wants and hands it over.
fn refresh_metadata(shared: &Shared) {
    let topics = lock(&shared.state).core.wanted_topics();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let result = {
        let mut bootstrap = lock(&shared.bootstrap);
        let result = match bootstrap.as_mut() {
            Some(client) => client.metadata_creating(&names),
            None => Err(ClientError::Closed),
        };
        let result = match result {
            Ok(metadata) => Ok(metadata),
            // The connection may have gone stale: reconnect once.
            Err(_) => connect_bootstrap(&shared.options).and_then(|mut client| {
                let metadata = client.metadata_creating(&names);
                *bootstrap = Some(client);
                metadata
            }),
        };
        if result.is_err() {
            *bootstrap = None;
        }
        result
    };
    let mut state = lock(&shared.state);
    match result {
        Ok(metadata) => {
            state.core.update_metadata(&metadata);
            state.metadata_error = None;
        }
        Err(error) => state.metadata_error = Some(error),
    }
    state.dirty = true;
    shared.wake.notify_one();
}

fn deliver(shared: &Shared, completions: Vec<Completion<Token>>) {
    if completions.is_empty() {
        return;
    }
    for completion in completions {
        completion.token.complete(completion.result);
    }
    shared.progress.notify_all();
}

fn sender_loop(shared: &Arc<Shared>) {
    let backoff = shared.options.producer.retry.backoff;
    let mut last_metadata: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let (work, timed_out, want_metadata) = {
            let mut state = lock(&shared.state);
            if state.closing && state.core.is_idle() {
                return;
            }
            state.dirty = false;
            let timed_out = state.core.timed_out(now);
            let mut completions = Vec::new();
            for (id, _) in &timed_out {
                completions.extend(state.core.handle_failure(
                    *id,
                    AttemptFailure::TimedOut,
                    ProduceError::Broker {
                        code: ErrorCode::RequestTimedOut,
                        message: Some("no answer within the request timeout".into()),
                    },
                    now,
                ));
            }
            let mut work = state.core.poll(now);
            work.completions.append(&mut completions);
            (work, timed_out, state.core.metadata_wanted())
        };
        deliver(shared, work.completions);
        for (_, endpoint) in timed_out {
            // Answers may be stuck behind the lost one: start afresh.
            if let Some(conn) = lock(&shared.conns).remove(&endpoint) {
                conn.shutdown();
            }
        }
        if want_metadata && last_metadata.is_none_or(|at| at + backoff <= now) {
            last_metadata = Some(now);
            refresh_metadata(shared);
        }
        for outgoing in work.requests {
            send_request(shared, outgoing);
        }

        let mut state = lock(&shared.state);
        if state.dirty || (state.closing && state.core.is_idle()) {
            continue;
        }
        let now = Instant::now();
        let mut wait = state
            .core
            .next_wakeup()
            .map_or(Duration::from_secs(1), |at| {
                at.saturating_duration_since(now)
            });
        if state.core.metadata_wanted() {
            wait = wait.min(backoff);
        }
        if wait.is_zero() {
            continue;
        }
        state = shared
            .wake
            .wait_timeout(state, wait.min(Duration::from_secs(1)))
            .unwrap_or_else(PoisonError::into_inner)
            .0;
        drop(state);
    }
}

fn connection(shared: &Arc<Shared>, endpoint: &Endpoint) -> Result<Arc<Conn>, ClientError> {
    if let Some(conn) = lock(&shared.conns).get(endpoint) {
        if !conn.closed.load(Ordering::SeqCst) {
            return Ok(conn.clone());
        }
    }
    let stream = connect_stream(
        (endpoint.host.as_str(), endpoint.port),
        shared.options.client.timeout,
    )?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(shared.options.client.timeout))?;
    let read_half = stream.try_clone()?;
    let id = {
        let mut next = lock(&shared.next_conn_id);
        *next += 1;
        *next
    };
    let conn = Arc::new(Conn {
        id,
        writer: Mutex::new(stream),
        pending: Mutex::new(HashSet::new()),
        closed: AtomicBool::new(false),
        reader: Mutex::new(None),
    });
    let reader_shared = shared.clone();
    let reader_conn = conn.clone();
    let reader_endpoint = endpoint.clone();
    let handle = thread::Builder::new()
        .name(format!("fjord-producer-read-{id}"))
        .spawn(move || reader_loop(&reader_shared, &reader_conn, &reader_endpoint, read_half))?;
    *lock(&conn.reader) = Some(handle);
    if let Some(old) = lock(&shared.conns).insert(endpoint.clone(), conn.clone()) {
        old.shutdown();
    }
    Ok(conn)
}

fn send_request(shared: &Arc<Shared>, outgoing: Outgoing) {
    let id = outgoing.request_id;
    let conn = match connection(shared, &outgoing.endpoint) {
        Ok(conn) => conn,
        Err(error) => {
            let completions = lock(&shared.state).core.handle_failure(
                id,
                AttemptFailure::Disconnected,
                ProduceError::Connection(error.to_string()),
                Instant::now(),
            );
            deliver(shared, completions);
            return;
        }
    };
    let no_response = outgoing.acks == Acks::None;
    if !no_response {
        lock(&conn.pending).insert(id);
    }
    let flags = if no_response {
        FrameFlags(FrameFlags::NO_RESPONSE)
    } else {
        FrameFlags(0)
    };
    let written = write_frame(
        &mut *lock(&conn.writer),
        ApiKey::Produce,
        0,
        flags,
        CorrelationId(id),
        &outgoing.request.body,
        &outgoing.request.payload,
    );
    let completions = match written {
        Ok(()) if no_response => lock(&shared.state).core.handle_sent(id),
        Ok(()) => Vec::new(),
        Err(error) => {
            // The reader fails whatever else was pending on this socket.
            conn.shutdown();
            lock(&conn.pending).remove(&id);
            lock(&shared.state).core.handle_failure(
                id,
                AttemptFailure::Disconnected,
                ProduceError::Connection(error.to_string()),
                Instant::now(),
            )
        }
    };
    deliver(shared, completions);
}

fn reader_loop(shared: &Arc<Shared>, conn: &Arc<Conn>, endpoint: &Endpoint, mut stream: TcpStream) {
    let mut decoder = FrameDecoder::new(shared.options.client.frame_bytes_max);
    let mut buffer = BytesMut::with_capacity(64 * 1024);
    let reason = loop {
        let frame = match super::read_frame_from(&mut stream, &mut decoder, &mut buffer) {
            Ok(frame) => frame,
            Err(error) => break error.to_string(),
        };
        let id = frame.header.correlation_id().0;
        if !lock(&conn.pending).remove(&id) {
            // Timed out already, or not ours: nothing waits for it.
            continue;
        }
        let now = Instant::now();
        let flags = frame.header.flags();
        let completions = if flags.is_error() {
            let (code, message) = match broker_error(&frame) {
                Ok(ClientError::Broker { code, message }) => (code, message),
                Ok(other) | Err(other) => (ErrorCode::UnknownServerError, other.to_string()),
            };
            lock(&shared.state).core.handle_failure(
                id,
                AttemptFailure::Broker(code),
                ProduceError::Broker {
                    code,
                    message: Some(message),
                },
                now,
            )
        } else {
            match read_produce(&frame) {
                Ok(results) => lock(&shared.state).core.handle_response(id, &results, now),
                Err(error) => lock(&shared.state).core.handle_failure(
                    id,
                    AttemptFailure::Broker(ErrorCode::UnknownServerError),
                    ProduceError::Connection(format!("bad produce response: {error}")),
                    now,
                ),
            }
        };
        {
            let mut state = lock(&shared.state);
            state.dirty = true;
        }
        shared.wake.notify_one();
        deliver(shared, completions);
        shared.progress.notify_all();
    };
    conn.closed.store(true, Ordering::SeqCst);
    let pending: Vec<u32> = lock(&conn.pending).drain().collect();
    let now = Instant::now();
    let mut completions = Vec::new();
    {
        let mut state = lock(&shared.state);
        for id in pending {
            completions.extend(state.core.handle_failure(
                id,
                AttemptFailure::Disconnected,
                ProduceError::Connection(format!("{endpoint}: {reason}")),
                now,
            ));
        }
        state.dirty = true;
    }
    {
        let mut conns = lock(&shared.conns);
        if conns.get(endpoint).is_some_and(|c| c.id == conn.id) {
            conns.remove(endpoint);
        }
    }
    shared.wake.notify_one();
    deliver(shared, completions);
    shared.progress.notify_all();
}
