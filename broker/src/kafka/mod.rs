//! The Kafka wire-protocol edge (issue 7): RecordBatch v2 <-> native batch
//! conversion, Kafka framing, the per-connection serve loop and the request
//! handler that maps Kafka requests onto the native dispatcher's ops.

pub mod admin;
#[cfg(test)]
mod cluster_tests;
pub mod frame;
mod groups;
pub mod handler;
pub mod leaders;
#[cfg(test)]
mod leaders_tests;
pub mod records;
pub mod serve;
