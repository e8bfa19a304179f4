//! The Kafka wire-protocol edge (issue 7). For now: RecordBatch v2 <-> native
//! batch conversion.

pub mod records;
