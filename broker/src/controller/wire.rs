//! The little-endian binary encoding shared by the metadata records
//! ([`super::records`]) and the controller commands
//! ([`super::commands`]): fixed-width integers, length-prefixed strings
//! and vectors, each with an explicit limit checked on decode. Decoding
//! never panics and never allocates more than the input can justify: a
//! length is checked against its limit and against the bytes left before
//! anything is reserved.
//!
//! Pure: no I/O.

use std::collections::BTreeMap;

use fjord_schema::{ErrorCode, NodeId};

use crate::metadata::image::{BrokerEndpoints, Endpoint, TopicId};
use crate::topic::TOPIC_NAME_LEN_MAX;

/// Longest host name of an endpoint (DNS names are at most 253 bytes).
pub const HOST_LEN_MAX: usize = 255;
/// Longest rack id.
pub const RACK_LEN_MAX: usize = 255;
/// Longest topic config key.
pub const CONFIG_KEY_LEN_MAX: usize = 255;
/// Longest topic config value (Kafka's STRING limit).
pub const CONFIG_VALUE_LEN_MAX: usize = i16::MAX as usize;
/// Most config overrides of one topic (known keys are far fewer).
pub const CONFIGS_MAX: usize = 256;
/// Most replicas of one partition (and nodes of one assignment).
pub const REPLICAS_MAX: usize = 256;
/// Longest topic name inside a command: a Kafka STRING, so an invalid
/// (too long) name still reaches the controller and gets its Kafka error.
pub const COMMAND_NAME_LEN_MAX: usize = i16::MAX as usize;
/// Longest error message of a reply.
pub const MESSAGE_LEN_MAX: usize = i16::MAX as usize;
/// Most topics of one admin command or reply.
pub const COMMAND_TOPICS_MAX: usize = 10_000;
/// Most partitions of an explicit assignment of one topic.
pub const ASSIGNMENT_PARTITIONS_MAX: usize = 100_000;

/// Why bytes are not a record, command or reply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("format version {found} is not one this node reads (it reads {supported})")]
    UnknownVersion { found: u8, supported: u8 },
    #[error("unknown {what} tag {tag}")]
    UnknownTag { what: &'static str, tag: u8 },
    #[error("truncated: {what} needs more bytes")]
    Truncated { what: &'static str },
    #[error("{what}: length {len} is over the limit of {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{what} is not UTF-8")]
    NotUtf8 { what: &'static str },
    #[error("{what}: invalid value {value}")]
    Invalid { what: &'static str, value: u64 },
    #[error("{0} bytes left over after the end")]
    Trailing(usize),
}

/// Appends encodings to a buffer.
pub(crate) struct Writer<'a>(pub &'a mut Vec<u8>);

impl Writer<'_> {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }
    pub fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i16(&mut self, v: i16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    /// A length prefix; lengths over `u32::MAX` cannot be decoded anyway
    /// (every limit is far lower), so they saturate.
    pub fn len(&mut self, len: usize) {
        self.u32(u32::try_from(len).unwrap_or(u32::MAX));
    }
    pub fn bytes16(&mut self, v: &[u8; 16]) {
        self.0.extend_from_slice(v);
    }
    pub fn str(&mut self, v: &str) {
        self.len(v.len());
        self.0.extend_from_slice(v.as_bytes());
    }
    pub fn opt_str(&mut self, v: Option<&str>) {
        match v {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }
    pub fn node(&mut self, v: NodeId) {
        self.u32(v.get());
    }
    pub fn opt_node(&mut self, v: Option<NodeId>) {
        match v {
            None => self.u8(0),
            Some(n) => {
                self.u8(1);
                self.node(n);
            }
        }
    }
    pub fn nodes(&mut self, v: &[NodeId]) {
        self.len(v.len());
        for n in v {
            self.node(*n);
        }
    }
    pub fn topic_id(&mut self, v: TopicId) {
        self.bytes16(&v.0);
    }
    pub fn configs(&mut self, v: &BTreeMap<String, String>) {
        self.len(v.len());
        for (key, value) in v {
            self.str(key);
            self.str(value);
        }
    }
    pub fn endpoint(&mut self, v: Option<&Endpoint>) {
        match v {
            None => self.u8(0),
            Some(e) => {
                self.u8(1);
                self.str(&e.host);
                self.u16(e.port);
            }
        }
    }
    pub fn endpoints(&mut self, v: &BrokerEndpoints) {
        self.endpoint(v.native.as_ref());
        self.endpoint(v.kafka.as_ref());
        self.endpoint(v.cluster.as_ref());
    }
    pub fn error_code(&mut self, v: ErrorCode) {
        self.i16(v.code());
    }
}

/// Reads encodings from a slice; every read checks what is left.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len()
    }

    /// Fails unless every byte was read.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.bytes.len() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }

    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError::Truncated { what });
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }
    pub fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(DecodeError::Invalid {
                what,
                value: u64::from(v),
            }),
        }
    }
    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    pub fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array(what)?))
    }
    pub fn i16(&mut self, what: &'static str) -> Result<i16, DecodeError> {
        Ok(i16::from_le_bytes(self.array(what)?))
    }
    pub fn bytes16(&mut self, what: &'static str) -> Result<[u8; 16], DecodeError> {
        self.array(what)
    }

    /// A length prefix at most `max`, and (each element taking at least
    /// `element_min` bytes) at most what the input still holds.
    pub fn len(
        &mut self,
        max: usize,
        element_min: usize,
        what: &'static str,
    ) -> Result<usize, DecodeError> {
        let len = self.u32(what)? as usize;
        if len > max {
            return Err(DecodeError::TooLong { what, len, max });
        }
        if len.saturating_mul(element_min) > self.remaining() {
            return Err(DecodeError::Truncated { what });
        }
        Ok(len)
    }

    pub fn str(&mut self, max: usize, what: &'static str) -> Result<String, DecodeError> {
        let len = self.len(max, 1, what)?;
        let bytes = self.take(len, what)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| DecodeError::NotUtf8 { what })
    }
    pub fn opt_str(
        &mut self,
        max: usize,
        what: &'static str,
    ) -> Result<Option<String>, DecodeError> {
        Ok(if self.bool(what)? {
            Some(self.str(max, what)?)
        } else {
            None
        })
    }
    pub fn topic_name(&mut self) -> Result<String, DecodeError> {
        self.str(TOPIC_NAME_LEN_MAX, "topic name")
    }
    pub fn node(&mut self, what: &'static str) -> Result<NodeId, DecodeError> {
        Ok(NodeId(self.u32(what)?))
    }
    pub fn opt_node(&mut self, what: &'static str) -> Result<Option<NodeId>, DecodeError> {
        Ok(if self.bool(what)? {
            Some(self.node(what)?)
        } else {
            None
        })
    }
    pub fn nodes(&mut self, what: &'static str) -> Result<Vec<NodeId>, DecodeError> {
        let len = self.len(REPLICAS_MAX, 4, what)?;
        (0..len).map(|_| self.node(what)).collect()
    }
    pub fn topic_id(&mut self) -> Result<TopicId, DecodeError> {
        Ok(TopicId(self.bytes16("topic id")?))
    }
    pub fn configs(&mut self) -> Result<BTreeMap<String, String>, DecodeError> {
        let len = self.len(CONFIGS_MAX, 8, "configs")?;
        let mut configs = BTreeMap::new();
        for _ in 0..len {
            let key = self.str(CONFIG_KEY_LEN_MAX, "config key")?;
            let value = self.str(CONFIG_VALUE_LEN_MAX, "config value")?;
            configs.insert(key, value);
        }
        if configs.len() != len {
            return Err(DecodeError::Invalid {
                what: "configs: a key twice",
                value: len as u64,
            });
        }
        Ok(configs)
    }
    pub fn endpoint(&mut self) -> Result<Option<Endpoint>, DecodeError> {
        if !self.bool("endpoint")? {
            return Ok(None);
        }
        let host = self.str(HOST_LEN_MAX, "endpoint host")?;
        let port = self.u16("endpoint port")?;
        Ok(Some(Endpoint { host, port }))
    }
    pub fn endpoints(&mut self) -> Result<BrokerEndpoints, DecodeError> {
        Ok(BrokerEndpoints {
            native: self.endpoint()?,
            kafka: self.endpoint()?,
            cluster: self.endpoint()?,
        })
    }
    pub fn error_code(&mut self) -> Result<ErrorCode, DecodeError> {
        Ok(ErrorCode::from_code(self.i16("error code")?))
    }
}

/// Whether `endpoints` and `rack` fit the limits a decoder enforces.
pub fn broker_fits(endpoints: &BrokerEndpoints, rack: Option<&str>) -> bool {
    let host_fits = |e: &Option<Endpoint>| e.as_ref().is_none_or(|e| e.host.len() <= HOST_LEN_MAX);
    host_fits(&endpoints.native)
        && host_fits(&endpoints.kafka)
        && host_fits(&endpoints.cluster)
        && rack.is_none_or(|r| r.len() <= RACK_LEN_MAX)
}
