//! Api keys, supported versions, and the decoders that turn a frame body into
//! a verified flatbuffers view.
//!
//! Decoding is the trust boundary: a `Request` returned here has passed the
//! flatbuffers verifier (bounded by the body size) and every `PayloadSlice`
//! it carries lies inside the frame's payload, so later code may index
//! without checking again.

use crate::frame::{Frame, FrameHeader};
use crate::wire;
use crate::ErrorCode;

/// Native protocol api keys. Ranges are reserved so later families do not
/// renumber these: 10..=19 consumer groups and offsets, 20..=29 producer ids
/// and transactions, 30..=49 replication and cluster control.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ApiKey {
    ApiVersions = 0,
    Metadata = 1,
    CreateTopics = 2,
    DeleteTopics = 3,
    Produce = 4,
    Fetch = 5,
    ListOffsets = 6,
    FindCoordinator = 10,
    JoinGroup = 11,
    SyncGroup = 12,
    Heartbeat = 13,
    LeaveGroup = 14,
    OffsetCommit = 15,
    OffsetFetch = 16,
    ListGroups = 17,
    DescribeGroups = 18,
    InitProducerId = 20,
}

/// Inter-node api keys, spoken only on `--cluster-listen` (never on the
/// client listeners, never listed by ApiVersions): 1000..=1099. Their
/// bodies are opaque bytes owned by the broker's cluster code (not
/// flatbuffers) and the frame carries no payload.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClusterApiKey {
    /// One-way: a batch of Raft messages of the metadata quorum (each a
    /// length-prefixed protobuf `eraftpb::Message`).
    RaftMessages = 1000,
    /// Request/response: a controller command forwarded to the active
    /// controller; the response is its answer.
    ControllerCommand = 1001,
    /// Request/response: a follower's replica fetch (issue 14,
    /// `broker/src/replication/wire.rs`), answered by the leader.
    ReplicaFetch = 1002,
    /// Request/response: a follower's `OffsetForLeaderEpoch` (KIP-279),
    /// answered by the leader from its leader-epoch cache.
    OffsetForLeaderEpoch = 1003,
}

impl ClusterApiKey {
    /// The first and last keys of the cluster range.
    pub const RANGE: std::ops::RangeInclusive<u16> = 1000..=1099;

    pub fn from_u16(key: u16) -> Option<ClusterApiKey> {
        match key {
            1000 => Some(ClusterApiKey::RaftMessages),
            1001 => Some(ClusterApiKey::ControllerCommand),
            1002 => Some(ClusterApiKey::ReplicaFetch),
            1003 => Some(ClusterApiKey::OffsetForLeaderEpoch),
            _ => None,
        }
    }
}

/// Versions this build speaks, per api key: (key, min, max).
pub const SUPPORTED_VERSIONS: [(ApiKey, u16, u16); 17] = [
    (ApiKey::ApiVersions, 0, 0),
    (ApiKey::Metadata, 0, 0),
    (ApiKey::CreateTopics, 0, 0),
    (ApiKey::DeleteTopics, 0, 0),
    (ApiKey::Produce, 0, 0),
    (ApiKey::Fetch, 0, 0),
    (ApiKey::ListOffsets, 0, 0),
    (ApiKey::FindCoordinator, 0, 0),
    (ApiKey::JoinGroup, 0, 0),
    (ApiKey::SyncGroup, 0, 0),
    (ApiKey::Heartbeat, 0, 0),
    (ApiKey::LeaveGroup, 0, 0),
    (ApiKey::OffsetCommit, 0, 0),
    (ApiKey::OffsetFetch, 0, 0),
    (ApiKey::ListGroups, 0, 0),
    (ApiKey::DescribeGroups, 0, 0),
    (ApiKey::InitProducerId, 0, 0),
];

impl ApiKey {
    pub fn from_u16(key: u16) -> Option<ApiKey> {
        SUPPORTED_VERSIONS
            .iter()
            .map(|(k, _, _)| *k)
            .find(|k| *k as u16 == key)
    }

    pub fn version_range(self) -> (u16, u16) {
        let (_, min, max) = SUPPORTED_VERSIONS
            .iter()
            .find(|(k, _, _)| *k == self)
            .expect("every api key has a version range");
        (*min, *max)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown api key {0}")]
    UnknownApiKey(u16),
    #[error("{api_key:?} version {version} is not supported (supported: {min}..={max})")]
    UnsupportedVersion {
        api_key: ApiKey,
        version: u16,
        min: u16,
        max: u16,
    },
    #[error("expected a {expected}, got a frame with flags {flags:#06x}")]
    WrongDirection { expected: &'static str, flags: u16 },
    #[error("malformed {api_key:?} body: {reason}")]
    Malformed { api_key: ApiKey, reason: String },
    #[error("payload slice {offset}+{len} is outside the {payload_len}-byte payload")]
    PayloadOutOfBounds {
        offset: u32,
        len: u32,
        payload_len: usize,
    },
}

impl DecodeError {
    /// The code to answer with in an `ErrorResponse`.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            DecodeError::UnknownApiKey(_) | DecodeError::UnsupportedVersion { .. } => {
                ErrorCode::UnsupportedVersion
            }
            DecodeError::WrongDirection { .. }
            | DecodeError::Malformed { .. }
            | DecodeError::PayloadOutOfBounds { .. } => ErrorCode::InvalidRequest,
        }
    }
}

/// A decoded, verified request.
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    ApiVersions(wire::ApiVersionsRequest<'a>),
    Metadata(wire::MetadataRequest<'a>),
    CreateTopics(wire::CreateTopicsRequest<'a>),
    DeleteTopics(wire::DeleteTopicsRequest<'a>),
    Produce(wire::ProduceRequest<'a>),
    Fetch(wire::FetchRequest<'a>),
    ListOffsets(wire::ListOffsetsRequest<'a>),
    FindCoordinator(wire::FindCoordinatorRequest<'a>),
    JoinGroup(wire::JoinGroupRequest<'a>),
    SyncGroup(wire::SyncGroupRequest<'a>),
    Heartbeat(wire::HeartbeatRequest<'a>),
    LeaveGroup(wire::LeaveGroupRequest<'a>),
    OffsetCommit(wire::OffsetCommitRequest<'a>),
    OffsetFetch(wire::OffsetFetchRequest<'a>),
    ListGroups(wire::ListGroupsRequest<'a>),
    DescribeGroups(wire::DescribeGroupsRequest<'a>),
    InitProducerId(wire::InitProducerIdRequest<'a>),
}

/// A decoded, verified response.
#[derive(Debug, Clone, Copy)]
pub enum Response<'a> {
    Error(wire::ErrorResponse<'a>),
    ApiVersions(wire::ApiVersionsResponse<'a>),
    Metadata(wire::MetadataResponse<'a>),
    CreateTopics(wire::CreateTopicsResponse<'a>),
    DeleteTopics(wire::DeleteTopicsResponse<'a>),
    Produce(wire::ProduceResponse<'a>),
    Fetch(wire::FetchResponse<'a>),
    ListOffsets(wire::ListOffsetsResponse<'a>),
    FindCoordinator(wire::FindCoordinatorResponse<'a>),
    JoinGroup(wire::JoinGroupResponse<'a>),
    SyncGroup(wire::SyncGroupResponse<'a>),
    Heartbeat(wire::HeartbeatResponse<'a>),
    LeaveGroup(wire::LeaveGroupResponse<'a>),
    OffsetCommit(wire::OffsetCommitResponse<'a>),
    OffsetFetch(wire::OffsetFetchResponse<'a>),
    ListGroups(wire::ListGroupsResponse<'a>),
    DescribeGroups(wire::DescribeGroupsResponse<'a>),
    InitProducerId(wire::InitProducerIdResponse<'a>),
}

/// Checks the api key and version of a frame header.
pub fn check_version(header: &FrameHeader) -> Result<ApiKey, DecodeError> {
    let key = header.api_key.get();
    let api_key = ApiKey::from_u16(key).ok_or(DecodeError::UnknownApiKey(key))?;
    let (min, max) = api_key.version_range();
    let version = header.api_version.get();
    if version < min || version > max {
        return Err(DecodeError::UnsupportedVersion {
            api_key,
            version,
            min,
            max,
        });
    }
    Ok(api_key)
}

fn verify<'a, T>(api_key: ApiKey, body: &'a [u8]) -> Result<T::Inner, DecodeError>
where
    T: flatbuffers::Follow<'a> + flatbuffers::Verifiable + 'a,
{
    let options = flatbuffers::VerifierOptions {
        max_depth: 16,
        max_tables: body.len() / 4 + 16,
        max_apparent_size: body.len() * 4 + 1024,
        ..Default::default()
    };
    flatbuffers::root_with_opts::<T>(&options, body).map_err(|e| DecodeError::Malformed {
        api_key,
        reason: e.to_string(),
    })
}

fn check_slice(slice: Option<&wire::PayloadSlice>, payload_len: usize) -> Result<(), DecodeError> {
    let Some(slice) = slice else { return Ok(()) };
    let end = u64::from(slice.offset()) + u64::from(slice.len());
    if end > payload_len as u64 {
        return Err(DecodeError::PayloadOutOfBounds {
            offset: slice.offset(),
            len: slice.len(),
            payload_len,
        });
    }
    Ok(())
}

/// The bytes a checked `PayloadSlice` names. Slices that came through
/// [`decode_request`] / [`decode_response`] are known to be in bounds;
/// an absent slice is empty.
pub fn payload_slice<'p>(payload: &'p [u8], slice: Option<&wire::PayloadSlice>) -> &'p [u8] {
    match slice {
        None => &[],
        Some(slice) => {
            let start = slice.offset() as usize;
            &payload[start..start + slice.len() as usize]
        }
    }
}

/// Decodes and verifies a request frame.
pub fn decode_request(frame: &Frame) -> Result<Request<'_>, DecodeError> {
    if frame.header.flags().is_response() {
        return Err(DecodeError::WrongDirection {
            expected: "request",
            flags: frame.header.flags.get(),
        });
    }
    let api_key = check_version(&frame.header)?;
    let body = &frame.body[..];
    let request = match api_key {
        ApiKey::ApiVersions => {
            Request::ApiVersions(verify::<wire::ApiVersionsRequest>(api_key, body)?)
        }
        ApiKey::Metadata => Request::Metadata(verify::<wire::MetadataRequest>(api_key, body)?),
        ApiKey::CreateTopics => {
            Request::CreateTopics(verify::<wire::CreateTopicsRequest>(api_key, body)?)
        }
        ApiKey::DeleteTopics => {
            Request::DeleteTopics(verify::<wire::DeleteTopicsRequest>(api_key, body)?)
        }
        ApiKey::Produce => {
            let request = verify::<wire::ProduceRequest>(api_key, body)?;
            for topic in request.topics().iter().flatten() {
                for partition in topic.partitions().iter().flatten() {
                    check_slice(partition.records(), frame.payload.len())?;
                }
            }
            Request::Produce(request)
        }
        ApiKey::Fetch => Request::Fetch(verify::<wire::FetchRequest>(api_key, body)?),
        ApiKey::ListOffsets => {
            Request::ListOffsets(verify::<wire::ListOffsetsRequest>(api_key, body)?)
        }
        ApiKey::FindCoordinator => {
            Request::FindCoordinator(verify::<wire::FindCoordinatorRequest>(api_key, body)?)
        }
        ApiKey::JoinGroup => Request::JoinGroup(verify::<wire::JoinGroupRequest>(api_key, body)?),
        ApiKey::SyncGroup => Request::SyncGroup(verify::<wire::SyncGroupRequest>(api_key, body)?),
        ApiKey::Heartbeat => Request::Heartbeat(verify::<wire::HeartbeatRequest>(api_key, body)?),
        ApiKey::LeaveGroup => {
            Request::LeaveGroup(verify::<wire::LeaveGroupRequest>(api_key, body)?)
        }
        ApiKey::OffsetCommit => {
            Request::OffsetCommit(verify::<wire::OffsetCommitRequest>(api_key, body)?)
        }
        ApiKey::OffsetFetch => {
            Request::OffsetFetch(verify::<wire::OffsetFetchRequest>(api_key, body)?)
        }
        ApiKey::ListGroups => {
            Request::ListGroups(verify::<wire::ListGroupsRequest>(api_key, body)?)
        }
        ApiKey::DescribeGroups => {
            Request::DescribeGroups(verify::<wire::DescribeGroupsRequest>(api_key, body)?)
        }
        ApiKey::InitProducerId => {
            Request::InitProducerId(verify::<wire::InitProducerIdRequest>(api_key, body)?)
        }
    };
    Ok(request)
}

/// Decodes and verifies a response frame.
pub fn decode_response(frame: &Frame) -> Result<Response<'_>, DecodeError> {
    let flags = frame.header.flags();
    if !flags.is_response() {
        return Err(DecodeError::WrongDirection {
            expected: "response",
            flags: flags.0,
        });
    }
    let api_key = check_version(&frame.header)?;
    let body = &frame.body[..];
    if flags.is_error() {
        return Ok(Response::Error(verify::<wire::ErrorResponse>(
            api_key, body,
        )?));
    }
    let response = match api_key {
        ApiKey::ApiVersions => {
            Response::ApiVersions(verify::<wire::ApiVersionsResponse>(api_key, body)?)
        }
        ApiKey::Metadata => Response::Metadata(verify::<wire::MetadataResponse>(api_key, body)?),
        ApiKey::CreateTopics => {
            Response::CreateTopics(verify::<wire::CreateTopicsResponse>(api_key, body)?)
        }
        ApiKey::DeleteTopics => {
            Response::DeleteTopics(verify::<wire::DeleteTopicsResponse>(api_key, body)?)
        }
        ApiKey::Produce => Response::Produce(verify::<wire::ProduceResponse>(api_key, body)?),
        ApiKey::Fetch => {
            let response = verify::<wire::FetchResponse>(api_key, body)?;
            for topic in response.topics().iter().flatten() {
                for partition in topic.partitions().iter().flatten() {
                    check_slice(partition.records(), frame.payload.len())?;
                }
            }
            Response::Fetch(response)
        }
        ApiKey::ListOffsets => {
            Response::ListOffsets(verify::<wire::ListOffsetsResponse>(api_key, body)?)
        }
        ApiKey::FindCoordinator => {
            Response::FindCoordinator(verify::<wire::FindCoordinatorResponse>(api_key, body)?)
        }
        ApiKey::JoinGroup => Response::JoinGroup(verify::<wire::JoinGroupResponse>(api_key, body)?),
        ApiKey::SyncGroup => Response::SyncGroup(verify::<wire::SyncGroupResponse>(api_key, body)?),
        ApiKey::Heartbeat => Response::Heartbeat(verify::<wire::HeartbeatResponse>(api_key, body)?),
        ApiKey::LeaveGroup => {
            Response::LeaveGroup(verify::<wire::LeaveGroupResponse>(api_key, body)?)
        }
        ApiKey::OffsetCommit => {
            Response::OffsetCommit(verify::<wire::OffsetCommitResponse>(api_key, body)?)
        }
        ApiKey::OffsetFetch => {
            Response::OffsetFetch(verify::<wire::OffsetFetchResponse>(api_key, body)?)
        }
        ApiKey::ListGroups => {
            Response::ListGroups(verify::<wire::ListGroupsResponse>(api_key, body)?)
        }
        ApiKey::DescribeGroups => {
            Response::DescribeGroups(verify::<wire::DescribeGroupsResponse>(api_key, body)?)
        }
        ApiKey::InitProducerId => {
            Response::InitProducerId(verify::<wire::InitProducerIdResponse>(api_key, body)?)
        }
    };
    Ok(response)
}

#[cfg(test)]
mod tests;
