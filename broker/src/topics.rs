//! issue-12 merge shim: the old `crate::topics` paths, re-exported from
//! `crate::topic` (names, configs), `crate::metadata::registry` and
//! `crate::durable_file`. Removed by the lead after merging.

// issue-12 merge shim
pub use crate::durable_file::write_atomically;
// issue-12 merge shim
pub use crate::metadata::catalog::TopicMeta;
// issue-12 merge shim
pub use crate::metadata::registry::{RegistryError, TopicRegistry};
// issue-12 merge shim
pub use crate::topic::*;
