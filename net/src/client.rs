//! The native Rust client.
//!
//! - [`Client`]: a blocking connection to one broker that sends requests
//!   and matches responses by correlation id. Requests may be pipelined:
//!   [`Client::send`] returns the correlation id, [`Client::receive`] waits
//!   for that id's response and keeps responses to other in-flight ids
//!   until they are asked for. Typed calls build the request, decode the
//!   response into owned values, and turn ERROR-flagged frames into
//!   [`ClientError::Broker`].
//! - [`producer::Producer`], [`consumer::Consumer`], [`admin::Admin`]: the
//!   Kafka-style client on std threads and blocking sockets.
//! - The sans-IO pieces they are built from, shared with a future
//!   thread-per-core driver: [`protocol`] (request builders, response readers),
//!   [`partitioner`], [`accumulator`], [`retry`], [`cluster`] (routing to
//!   each partition's leader node and its shard ports) and [`producer_core`].

pub mod accumulator;
pub mod admin;
pub mod assignor;
pub mod cluster;
pub mod consumer;
pub mod consumer_protocol;
pub mod format;
pub mod group;
pub mod group_consumer;
pub mod partitioner;
pub mod producer;
pub mod producer_core;
pub mod protocol;
pub mod retry;

use std::collections::HashMap;
use std::io::{self, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fjord_schema::api::{decode_response, ApiKey, DecodeError, Response};
use fjord_schema::frame::{Frame, FrameDecoder, FrameError, FrameFlags, FrameHeader};
use fjord_schema::{wire, CorrelationId, ErrorCode, PartitionId};
use flatbuffers::FlatBufferBuilder;
use zerocopy::IntoBytes;

use self::protocol::{
    FetchParams, FetchPartitionRequest, FetchedPartition, ListedOffset, NewTopic, TopicResult,
};

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Connect, read and write timeout.
    pub timeout: Duration,
    /// Largest response frame accepted.
    pub frame_bytes_max: u32,
    /// Sent in ApiVersions.
    pub client_software_name: String,
    /// Requests sent but not yet answered, at most.
    pub in_flight_max: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            timeout: Duration::from_secs(30),
            frame_bytes_max: fjord_schema::frame::FRAME_LEN_MAX_DEFAULT,
            client_software_name: "fjord-net".to_owned(),
            in_flight_max: 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    #[error("broker closed the connection")]
    Closed,
    #[error("unparseable frame from broker: {0}")]
    Frame(#[from] FrameError),
    #[error("undecodable response: {0}")]
    Decode(#[from] DecodeError),
    #[error("malformed ErrorResponse: {0}")]
    MalformedError(String),
    #[error("broker rejected the request: {code:?}: {message}")]
    Broker { code: ErrorCode, message: String },
    #[error("response for correlation id {0} matches no request in flight")]
    UnknownCorrelation(CorrelationId),
    #[error("no request in flight with correlation id {0}")]
    NotInFlight(CorrelationId),
    #[error("{in_flight_max} requests already in flight")]
    TooManyInFlight { in_flight_max: usize },
    #[error("expected a {expected:?} response, got api key {got}")]
    UnexpectedResponse { expected: ApiKey, got: u16 },
    #[error("{api_key:?} response carries error {code:?}")]
    ErrorCode { api_key: ApiKey, code: ErrorCode },
}

/// One api and the versions the broker serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiVersionRange {
    pub api_key: u16,
    pub min_version: u16,
    pub max_version: u16,
}

/// ApiVersions answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiVersions {
    pub api_versions: Vec<ApiVersionRange>,
    pub broker_software_version: Option<String>,
}

/// A broker as listed in Metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub node_id: u32,
    pub host: String,
    pub port: u16,
    /// Per-shard ports, indexed by shard id.
    pub shard_ports: Vec<u16>,
    pub rack: Option<String>,
    /// The broker's Kafka listener, if it has one.
    pub kafka: Option<cluster::Endpoint>,
    /// Fenced: listed for operators, never routed to.
    pub fenced: bool,
}

/// A partition as listed in Metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub error: ErrorCode,
    pub partition: u32,
    pub leader: i32,
    pub leader_epoch: i32,
    pub leader_shard: u16,
    /// Nodes holding a replica, preferred leader first.
    pub replicas: Vec<u32>,
    /// The in-sync replicas.
    pub isr: Vec<u32>,
}

/// A partition's replica on the answering node, as Metadata reports it
/// when the request names its topics: its storage health, offsets, and
/// (where that node leads) its followers' progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionHealthInfo {
    pub topic: String,
    pub partition: u32,
    /// Why the broker keeps the partition offline.
    pub offline_reason: Option<String>,
    /// Damaged ranges reads ran into.
    pub damaged: Vec<DamagedRangeInfo>,
    /// The replica's log end and high watermark (`None`: no open replica
    /// on the answering node).
    pub log_end: Option<u64>,
    pub high_watermark: Option<u64>,
    /// Where the answering node leads: each follower (node id) and the
    /// offset it fetches from (`None` before its first fetch).
    pub followers: Vec<(u32, Option<u64>)>,
}

/// Bytes `[bytes_start, bytes_end)` of segment `segment_base` fail
/// verification; offsets `[first_offset, end_offset)` cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DamagedRangeInfo {
    pub segment_base: u64,
    pub bytes_start: u64,
    pub bytes_end: u64,
    pub first_offset: u64,
    pub end_offset: u64,
}

/// A topic as listed in Metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub error: ErrorCode,
    pub name: String,
    pub partitions: Vec<PartitionInfo>,
}

/// Metadata answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub cluster_id: Option<String>,
    /// The active controller; -1 while none is known.
    pub controller_id: i32,
    /// The metadata log index the answering node's image is at.
    pub metadata_applied_index: u64,
    /// The highest metadata log index the answering node knows committed.
    pub metadata_committed_index: u64,
    pub brokers: Vec<BrokerInfo>,
    pub topics: Vec<TopicInfo>,
}

/// A blocking connection to one broker.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    config: ClientConfig,
    decoder: FrameDecoder,
    read_buffer: BytesMut,
    next_correlation_id: u32,
    in_flight: HashMap<CorrelationId, ApiKey>,
    /// Responses that arrived while waiting for another id.
    arrived: HashMap<CorrelationId, Frame>,
}

impl Client {
    pub fn connect(addr: impl ToSocketAddrs, config: ClientConfig) -> Result<Client, ClientError> {
        let stream = connect_stream(addr, config.timeout)?;
        Client::from_stream(stream, config)
    }

    fn from_stream(stream: TcpStream, config: ClientConfig) -> Result<Client, ClientError> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(config.timeout))?;
        stream.set_write_timeout(Some(config.timeout))?;
        Ok(Client {
            stream,
            decoder: FrameDecoder::new(config.frame_bytes_max),
            read_buffer: BytesMut::with_capacity(64 * 1024),
            next_correlation_id: 0,
            in_flight: HashMap::new(),
            arrived: HashMap::new(),
            config,
        })
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.stream.peer_addr()
    }

    /// Sends one request and returns its correlation id.
    pub fn send(
        &mut self,
        api_key: ApiKey,
        api_version: u16,
        body: &[u8],
        payload: &[u8],
    ) -> Result<CorrelationId, ClientError> {
        let payload = [Bytes::copy_from_slice(payload)];
        let parts: &[Bytes] = if payload[0].is_empty() { &[] } else { &payload };
        self.send_parts(api_key, api_version, FrameFlags(0), body, parts)
    }

    /// Sends one request whose payload is `payload` back to back, written
    /// vectored (the batches are not copied). With the NO_RESPONSE flag the
    /// request is not tracked: no answer will come.
    pub fn send_parts(
        &mut self,
        api_key: ApiKey,
        api_version: u16,
        flags: FrameFlags,
        body: &[u8],
        payload: &[Bytes],
    ) -> Result<CorrelationId, ClientError> {
        if self.in_flight.len() >= self.config.in_flight_max {
            return Err(ClientError::TooManyInFlight {
                in_flight_max: self.config.in_flight_max,
            });
        }
        let correlation_id = CorrelationId(self.next_correlation_id);
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        write_frame(
            &mut self.stream,
            api_key,
            api_version,
            flags,
            correlation_id,
            body,
            payload,
        )?;
        if !flags.no_response() {
            self.in_flight.insert(correlation_id, api_key);
        }
        Ok(correlation_id)
    }

    /// Requests in flight on this connection.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Waits for the response to `correlation_id`.
    pub fn receive(&mut self, correlation_id: CorrelationId) -> Result<Frame, ClientError> {
        if !self.in_flight.contains_key(&correlation_id) {
            return Err(ClientError::NotInFlight(correlation_id));
        }
        loop {
            if let Some(frame) = self.arrived.remove(&correlation_id) {
                self.in_flight.remove(&correlation_id);
                return Ok(frame);
            }
            let frame = self.read_frame()?;
            let id = frame.header.correlation_id();
            if !self.in_flight.contains_key(&id) || self.arrived.contains_key(&id) {
                return Err(ClientError::UnknownCorrelation(id));
            }
            self.arrived.insert(id, frame);
        }
    }

    /// Sends a request and waits for its response.
    pub fn call(
        &mut self,
        api_key: ApiKey,
        api_version: u16,
        body: &[u8],
    ) -> Result<Frame, ClientError> {
        let correlation_id = self.send(api_key, api_version, body, &[])?;
        self.receive(correlation_id)
    }

    fn read_frame(&mut self) -> Result<Frame, ClientError> {
        read_frame_from(&mut self.stream, &mut self.decoder, &mut self.read_buffer)
    }

    /// Asks which apis and versions the broker serves.
    pub fn api_versions(&mut self) -> Result<ApiVersions, ClientError> {
        let mut fbb = FlatBufferBuilder::new();
        let name = fbb.create_string(&self.config.client_software_name);
        let version = fbb.create_string(env!("CARGO_PKG_VERSION"));
        let request = wire::ApiVersionsRequest::create(
            &mut fbb,
            &wire::ApiVersionsRequestArgs {
                client_software_name: Some(name),
                client_software_version: Some(version),
            },
        );
        fbb.finish(request, None);
        let frame = self.call(ApiKey::ApiVersions, 0, fbb.finished_data())?;
        let Response::ApiVersions(response) = decode_typed(&frame, ApiKey::ApiVersions)? else {
            return Err(unexpected(ApiKey::ApiVersions, &frame));
        };
        let code = ErrorCode::from_code(response.error_code());
        if code != ErrorCode::None {
            return Err(ClientError::ErrorCode {
                api_key: ApiKey::ApiVersions,
                code,
            });
        }
        Ok(ApiVersions {
            api_versions: response
                .api_versions()
                .iter()
                .flatten()
                .map(|r| ApiVersionRange {
                    api_key: r.api_key(),
                    min_version: r.min_version(),
                    max_version: r.max_version(),
                })
                .collect(),
            broker_software_version: response.broker_software_version().map(str::to_owned),
        })
    }

    /// Asks for brokers and topics. `None`: all topics; `Some(&[])`: brokers
    /// only. Never creates a topic.
    pub fn metadata(&mut self, topics: Option<&[&str]>) -> Result<Metadata, ClientError> {
        self.metadata_with_health(topics, false)
            .map(|(metadata, _)| metadata)
    }

    /// [`Client::metadata`] for a producer: asks the broker to create the
    /// named topics that do not exist yet (when its `auto_create_topics`
    /// is on), as Kafka's producers do. Consumers and admin never do.
    pub fn metadata_creating(&mut self, topics: &[&str]) -> Result<Metadata, ClientError> {
        self.metadata_with_health(Some(topics), true)
            .map(|(metadata, _)| metadata)
    }

    /// Metadata plus, for the topics the request names, each partition
    /// the answering node holds a replica of or reports a storage problem
    /// for: its health, offsets and (where that node leads) followers.
    pub fn metadata_with_health(
        &mut self,
        topics: Option<&[&str]>,
        allow_auto_topic_creation: bool,
    ) -> Result<(Metadata, Vec<PartitionHealthInfo>), ClientError> {
        let mut fbb = FlatBufferBuilder::new();
        let topics = topics.map(|topics| {
            let names: Vec<_> = topics.iter().map(|t| fbb.create_string(t)).collect();
            fbb.create_vector(&names)
        });
        let request = wire::MetadataRequest::create(
            &mut fbb,
            &wire::MetadataRequestArgs {
                topics,
                allow_auto_topic_creation,
            },
        );
        fbb.finish(request, None);
        let frame = self.call(ApiKey::Metadata, 0, fbb.finished_data())?;
        let Response::Metadata(response) = decode_typed(&frame, ApiKey::Metadata)? else {
            return Err(unexpected(ApiKey::Metadata, &frame));
        };
        let mut health = Vec::new();
        for t in response.topics().iter().flatten() {
            for p in t.partitions().iter().flatten() {
                let offline_reason = p.offline_reason().map(str::to_owned);
                let damaged: Vec<DamagedRangeInfo> = p
                    .damaged()
                    .iter()
                    .flatten()
                    .map(|d| DamagedRangeInfo {
                        segment_base: d.segment_base(),
                        bytes_start: d.bytes_start(),
                        bytes_end: d.bytes_end(),
                        first_offset: d.first_offset(),
                        end_offset: d.end_offset(),
                    })
                    .collect();
                let log_end = u64::try_from(p.log_end()).ok();
                let followers: Vec<(u32, Option<u64>)> = p
                    .followers()
                    .iter()
                    .flatten()
                    .map(|f| (f.node(), u64::try_from(f.fetch_offset()).ok()))
                    .collect();
                if offline_reason.is_some() || !damaged.is_empty() || log_end.is_some() {
                    health.push(PartitionHealthInfo {
                        topic: t.name().to_owned(),
                        partition: p.partition(),
                        offline_reason,
                        damaged,
                        log_end,
                        high_watermark: u64::try_from(p.high_watermark()).ok(),
                        followers,
                    });
                }
            }
        }
        let metadata = Metadata {
            cluster_id: response.cluster_id().map(str::to_owned),
            controller_id: response.controller_id(),
            metadata_applied_index: response.metadata_applied_index(),
            metadata_committed_index: response.metadata_committed_index(),
            brokers: response
                .brokers()
                .iter()
                .flatten()
                .map(|b| BrokerInfo {
                    node_id: b.node_id(),
                    host: b.host().to_owned(),
                    port: b.port(),
                    shard_ports: b.shard_ports().iter().flatten().collect(),
                    rack: b.rack().map(str::to_owned),
                    kafka: b.kafka_host().filter(|_| b.kafka_port() != 0).map(|host| {
                        cluster::Endpoint {
                            host: host.to_owned(),
                            port: b.kafka_port(),
                        }
                    }),
                    fenced: b.fenced(),
                })
                .collect(),
            topics: response
                .topics()
                .iter()
                .flatten()
                .map(|t| TopicInfo {
                    error: ErrorCode::from_code(t.error_code()),
                    name: t.name().to_owned(),
                    partitions: t
                        .partitions()
                        .iter()
                        .flatten()
                        .map(|p| PartitionInfo {
                            error: ErrorCode::from_code(p.error_code()),
                            partition: p.partition(),
                            leader: p.leader(),
                            leader_epoch: p.leader_epoch(),
                            leader_shard: p.leader_shard(),
                            replicas: p.replicas().iter().flatten().collect(),
                            isr: p.isr().iter().flatten().collect(),
                        })
                        .collect(),
                })
                .collect(),
        };
        Ok((metadata, health))
    }

    /// Creates topics; one result per topic (errors such as
    /// TOPIC_ALREADY_EXISTS are per topic, not a failed call).
    pub fn create_topics(
        &mut self,
        topics: &[NewTopic],
        timeout_ms: u32,
    ) -> Result<Vec<TopicResult>, ClientError> {
        let body = protocol::encode_create_topics(topics, timeout_ms);
        let frame = self.call(ApiKey::CreateTopics, 0, &body)?;
        protocol::read_create_topics(&frame)
    }

    /// Deletes topics; one result per topic.
    pub fn delete_topics(
        &mut self,
        names: &[&str],
        timeout_ms: u32,
    ) -> Result<Vec<TopicResult>, ClientError> {
        let body = protocol::encode_delete_topics(names, timeout_ms);
        let frame = self.call(ApiKey::DeleteTopics, 0, &body)?;
        protocol::read_delete_topics(&frame)
    }

    /// Looks up offsets: `protocol::LIST_OFFSETS_EARLIEST`,
    /// `protocol::LIST_OFFSETS_LATEST`, or a timestamp in ms.
    pub fn list_offsets(
        &mut self,
        topic: &str,
        partitions: &[(PartitionId, i64)],
    ) -> Result<Vec<ListedOffset>, ClientError> {
        let body = protocol::encode_list_offsets(topic, partitions);
        let frame = self.call(ApiKey::ListOffsets, 0, &body)?;
        protocol::read_list_offsets(&frame)
    }

    /// Sends a fetch without waiting; read it with [`Client::receive`] and
    /// [`protocol::read_fetch`]. Several connections can long-poll at once.
    pub fn send_fetch(
        &mut self,
        topic: &str,
        partitions: &[FetchPartitionRequest],
        params: FetchParams,
    ) -> Result<CorrelationId, ClientError> {
        let body = protocol::encode_fetch(topic, partitions, params);
        self.send_parts(ApiKey::Fetch, 0, FrameFlags(0), &body, &[])
    }

    /// Fetches and waits for the answer.
    pub fn fetch(
        &mut self,
        topic: &str,
        partitions: &[FetchPartitionRequest],
        params: FetchParams,
    ) -> Result<Vec<FetchedPartition>, ClientError> {
        let id = self.send_fetch(topic, partitions, params)?;
        let frame = self.receive(id)?;
        protocol::read_fetch(&frame)
    }
}

/// Decodes a response, turning an ERROR-flagged frame into
/// [`ClientError::Broker`].
///
/// ERROR frames are decoded here rather than by `decode_response`, which
/// checks the api key and version first: an error answering an unknown api
/// key or version would not get past that check.
pub fn decode_typed(frame: &Frame, expected: ApiKey) -> Result<Response<'_>, ClientError> {
    let flags = frame.header.flags();
    if flags.is_response() && flags.is_error() {
        return Err(broker_error(frame)?);
    }
    if frame.header.api_key.get() != expected as u16 {
        return Err(unexpected(expected, frame));
    }
    Ok(decode_response(frame)?)
}

/// The error an ERROR-flagged response frame carries.
pub fn broker_error(frame: &Frame) -> Result<ClientError, ClientError> {
    let options = flatbuffers::VerifierOptions {
        max_depth: 4,
        max_tables: 16,
        ..Default::default()
    };
    let error = flatbuffers::root_with_opts::<wire::ErrorResponse>(&options, &frame.body)
        .map_err(|e| ClientError::MalformedError(e.to_string()))?;
    Ok(ClientError::Broker {
        code: ErrorCode::from_code(error.error_code()),
        message: error.message().unwrap_or_default().to_owned(),
    })
}

/// Reads from `stream` until `decoder` yields a whole frame.
pub(crate) fn read_frame_from(
    stream: &mut impl Read,
    decoder: &mut FrameDecoder,
    buffer: &mut BytesMut,
) -> Result<Frame, ClientError> {
    loop {
        if let Some(frame) = decoder.decode(buffer)? {
            return Ok(frame);
        }
        let filled = buffer.len();
        buffer.resize(filled + 64 * 1024, 0);
        let read = stream.read(&mut buffer[filled..]);
        let n = match read {
            Ok(n) => n,
            Err(error) => {
                buffer.truncate(filled);
                return Err(error.into());
            }
        };
        buffer.truncate(filled + n);
        if n == 0 {
            return Err(ClientError::Closed);
        }
    }
}

/// Resolves `addr` and connects to the first address that answers.
pub fn connect_stream(
    addr: impl ToSocketAddrs,
    timeout: Duration,
) -> Result<TcpStream, ClientError> {
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    let mut last_error = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(error) => last_error = Some((addr, error)),
        }
    }
    match last_error {
        Some((addr, source)) => Err(ClientError::Connect {
            addr: addr.to_string(),
            source,
        }),
        None => Err(ClientError::Resolve(format!("{addrs:?}"))),
    }
}

/// Writes a request frame: header and body, then the payload pieces, with
/// vectored writes so batches are not copied into one buffer.
pub fn write_frame(
    stream: &mut impl Write,
    api_key: ApiKey,
    api_version: u16,
    flags: FrameFlags,
    correlation_id: CorrelationId,
    body: &[u8],
    payload: &[Bytes],
) -> Result<(), ClientError> {
    let body_len = u32::try_from(body.len()).map_err(|_| too_large())?;
    let payload_len: usize = payload.iter().map(Bytes::len).sum();
    let payload_len = u32::try_from(payload_len).map_err(|_| too_large())?;
    let header = FrameHeader::new(
        api_key as u16,
        api_version,
        flags,
        correlation_id,
        body_len,
        payload_len,
    );
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(2 + payload.len());
    slices.push(IoSlice::new(header.as_bytes()));
    slices.push(IoSlice::new(body));
    slices.extend(payload.iter().map(|p| IoSlice::new(p)));
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        match stream.write_vectored(slices) {
            Ok(0) => return Err(ClientError::Closed),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

fn too_large() -> ClientError {
    ClientError::Io(io::Error::new(
        io::ErrorKind::InvalidInput,
        "frame section over 4 GiB",
    ))
}

pub(crate) fn unexpected(expected: ApiKey, frame: &Frame) -> ClientError {
    ClientError::UnexpectedResponse {
        expected,
        got: frame.header.api_key.get(),
    }
}

#[cfg(test)]
mod invariants {
    /// The client's pieces stay runtime-free (see the crate docs).
    #[test]
    fn client_modules_stay_runtime_free() {
        for (file, text) in [
            ("accumulator.rs", include_str!("client/accumulator.rs")),
            ("admin.rs", include_str!("client/admin.rs")),
            ("cluster.rs", include_str!("client/cluster.rs")),
            ("consumer.rs", include_str!("client/consumer.rs")),
            ("partitioner.rs", include_str!("client/partitioner.rs")),
            ("producer.rs", include_str!("client/producer.rs")),
            ("producer_core.rs", include_str!("client/producer_core.rs")),
            ("protocol.rs", include_str!("client/protocol.rs")),
            ("retry.rs", include_str!("client/retry.rs")),
        ] {
            assert!(
                !text.contains(concat!("glom", "mio")),
                "{file} mentions the runtime"
            );
        }
    }
}
