//! `ControllerState`: the controller's logic, sans-IO (no Raft, no files,
//! no clock reads: `now_ms` is passed in). Every node folds committed
//! records with [`ControllerState::replay`]; the active controller (the
//! Raft leader) also turns commands into records with
//! [`ControllerState::handle`] and fences silent brokers in
//! [`ControllerState::tick`].
//!
//! Commands are handled one at a time by the driver: a command's records
//! are proposed, committed and replayed before the next command is
//! handled, so `handle` always validates against the latest image.
//!
//! ISSUE-13 SKELETON: signatures only; the controller-state branch
//! implements them.

use std::sync::Arc;

use fjord_schema::NodeId;

use super::commands::{ControllerCommand, ControllerReply};
use super::records::MetadataRecord;
use crate::metadata::image::MetadataImage;
use crate::topic::TopicConfig;

/// The controller's settings (from the node's `Config`).
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// The voters of the metadata quorum (`controller_quorum_voters`).
    pub voters: Vec<NodeId>,
    /// Topic config defaults (the broker's `base_log_config`).
    pub defaults: TopicConfig,
    /// `num_partitions` default of a topic created without a count.
    pub default_partitions: u32,
    /// `default_replication_factor`.
    pub default_replication_factor: u16,
    /// Partitions of `__consumer_offsets`.
    pub offsets_partitions: u32,
    /// `offsets_topic_replication_factor` (capped by live brokers).
    pub offsets_replication_factor: u16,
    /// Most partitions a topic may have (`partitions_max`).
    pub partitions_max: u32,
    /// `broker_session_timeout_ms`.
    pub session_timeout_ms: u64,
    /// Producer ids per `ProducerIdsBlock`.
    pub producer_id_block_size: u32,
}

#[derive(Debug)]
pub struct ControllerState {
    config: ControllerConfig,
    image: Arc<MetadataImage>,
}

impl ControllerState {
    /// `image`: what the committed log folded to so far (a snapshot's, or
    /// empty).
    pub fn new(config: ControllerConfig, image: Arc<MetadataImage>) -> ControllerState {
        ControllerState { config, image }
    }

    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// The image as of the last replayed record.
    pub fn image(&self) -> &Arc<MetadataImage> {
        &self.image
    }

    /// Folds one committed record (every node, in log order).
    pub fn replay(&mut self, _record: &MetadataRecord) {}

    /// This node became the active controller at `now_ms`: every broker's
    /// session starts afresh (nobody is fenced for the old leader's view).
    pub fn become_leader(&mut self, _now_ms: u64) {}

    /// The active controller handles `command` at `now_ms`: the records to
    /// propose (maybe none) and the reply to give once they are committed.
    pub fn handle(
        &mut self,
        _now_ms: u64,
        _command: &ControllerCommand,
    ) -> (Vec<MetadataRecord>, ControllerReply) {
        (Vec::new(), ControllerReply::NotController { leader: None })
    }

    /// The active controller's periodic work at `now_ms`: the cluster id
    /// of an empty log, fencing brokers whose session expired (and moving
    /// their leaderships), `__consumer_offsets` once enough brokers are
    /// live. Records to propose, maybe none.
    pub fn tick(&mut self, _now_ms: u64) -> Vec<MetadataRecord> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests;
