//! Topics as requests name them: name rules ([`name`]), per-topic
//! configuration ([`config`]), explicit replica assignments
//! ([`assignments`]), and [`TopicError`], the refusal every topic operation
//! reports with its wire error code. Pure: no I/O, no runtime.

use fjord_schema::ErrorCode;

pub mod assignments;
pub mod config;
pub mod name;

pub use assignments::partitions_from_assignments;
pub use config::{
    CompressionType, ConfigAlter, ConfigChange, ConfigOp, OtherConfig, TopicConfig, ValueKind,
    LIST_CONFIGS, OTHER_TOPIC_CONFIGS,
};
pub use name::{is_internal_topic, validate_topic_name, INTERNAL_TOPICS, TOPIC_NAME_LEN_MAX};

/// Why a topic operation was refused; carries the wire error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TopicError {
    pub code: ErrorCode,
    pub message: String,
}

impl TopicError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> TopicError {
        TopicError {
            code,
            message: message.into(),
        }
    }
}
