//! The controller's driver on shard 0 (glommio): it opens the metadata log
//! from disk, runs the Raft group (ticks, messages over the transport,
//! persistence before acknowledging), applies committed records to the
//! `ControllerState`, runs the active controller's commands one at a time,
//! forwards commands to the active controller from other nodes, and keeps
//! this broker registered and heartbeating (CLUSTER.md §3).
//!
//! ISSUE-13 SKELETON: signatures only; the quorum branch implements them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use fjord_schema::NodeId;

use super::commands::{Answer, ControllerCommand};
use super::records::MetadataRecord;
use super::state::ControllerConfig;
use crate::metadata::catalog::QuorumView;
use crate::metadata::image::{BrokerEndpoints, MetadataImage};

/// One voter of the metadata quorum: its node id and `--cluster-listen`
/// address (`controller_quorum_voters`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Voter {
    pub node: NodeId,
    pub host: String,
    pub port: u16,
}

/// Everything the driver needs from the node's configuration.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub node: NodeId,
    pub voters: Vec<Voter>,
    /// Where this node's cluster listener binds (`--cluster-listen`).
    pub cluster_listen: SocketAddr,
    /// The metadata log's directory (`<data>/__cluster_metadata-0`).
    pub dir: PathBuf,
    /// This broker's advertised endpoints, for its registration.
    pub endpoints: BrokerEndpoints,
    pub shards: u16,
    pub rack: Option<String>,
    /// `broker_heartbeat_interval_ms`.
    pub heartbeat_interval_ms: u64,
    /// Raft tick length; elections time out after 10–20 ticks.
    pub raft_tick_ms: u64,
    /// The controller's settings (also used on non-controllers to fold).
    pub controller: ControllerConfig,
}

/// Why the metadata log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    #[error("metadata log {path}: {reason}")]
    Storage { path: PathBuf, reason: String },
}

/// Why a command got no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControllerUnavailable {
    #[error("no active controller (no quorum of the voters is reachable)")]
    NoQuorum,
    #[error("the controller did not answer in time")]
    Timeout,
    #[error("this node is shutting down")]
    ShuttingDown,
}

/// The metadata log as found on disk: what it folds to, before any shard
/// serves. `Send`, so the main thread can recover it and hand it to
/// shard 0.
#[derive(Debug)]
pub struct Recovered {
    pub image: Arc<MetadataImage>,
    pub applied_index: u64,
}

/// Opens (creating if new) the metadata log under `config.dir` and folds
/// its snapshot and the entries known committed. Synchronous: called once
/// at startup, on the main thread.
pub fn recover(config: &ClusterConfig) -> Result<Recovered, QuorumError> {
    let _ = config;
    Ok(Recovered {
        image: Arc::new(MetadataImage::default()),
        applied_index: 0,
    })
}

/// The broker's side of the controller: submit commands, watch the image.
/// Cheap to clone; lives on shard 0.
#[derive(Clone, Debug)]
pub struct ControllerHandle {
    image: Arc<MetadataImage>,
}

impl ControllerHandle {
    /// Starts the driver on the current (shard 0) executor: the cluster
    /// listener, Raft, the lifecycle (register, heartbeat). `bootstrap`:
    /// records the first controller of an empty log proposes right after
    /// the cluster id (an existing single-node data dir's topics).
    pub fn start(
        config: ClusterConfig,
        recovered: Recovered,
        bootstrap: Vec<MetadataRecord>,
    ) -> Result<ControllerHandle, QuorumError> {
        let _ = (config, bootstrap);
        Ok(ControllerHandle {
            image: recovered.image,
        })
    }

    /// Sends `command` to the active controller (this node or another,
    /// retrying as leadership moves until a deadline); answers once its
    /// records are committed.
    pub async fn submit(
        &self,
        command: ControllerCommand,
    ) -> Result<Answer, ControllerUnavailable> {
        let _ = command;
        Err(ControllerUnavailable::NoQuorum)
    }

    /// The latest applied image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.clone()
    }

    pub fn quorum_view(&self) -> QuorumView {
        QuorumView::default()
    }

    /// Waits until this node has applied the log up to `index`.
    pub async fn wait_applied(&self, index: u64) {
        let _ = index;
    }

    /// Waits until the image or the quorum view differ from `seen` (the
    /// applied index last returned; 0 at first), then returns the latest.
    /// Changes in between are coalesced.
    pub async fn changed(&self, seen: u64) -> (Arc<MetadataImage>, QuorumView) {
        let _ = seen;
        (self.image.clone(), self.quorum_view())
    }

    /// Whether this broker is registered and unfenced (serving).
    pub fn unfenced(&self) -> bool {
        false
    }

    /// Controlled shutdown: asks the controller to fence this broker and
    /// move leadership away; returns when done or after `deadline_ms`.
    pub async fn shutdown(&self, deadline_ms: u64) {
        let _ = deadline_ms;
    }

    pub fn node(&self) -> NodeId {
        NodeId(0)
    }
}
