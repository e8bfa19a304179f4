//! This broker's membership (CLUSTER.md §3): a new incarnation per process
//! start → `RegisterBroker` → wait until this node applied the log up to
//! the registration → heartbeats every `broker_heartbeat_interval_ms` with
//! `caught_up`, which lets the controller unfence it. A heartbeat answered
//! `fenced` while the image no longer holds this incarnation (the
//! controller forgot it, e.g. a newer registration of the same node id
//! elsewhere or a log restored) registers again. Controlled shutdown sends
//! `shutting_down` heartbeats until the controller says it moved
//! everything away.
//!
//! Lives on: shard 0, a task of the controller driver. start → register →
//! heartbeat → (shutdown) → ends with the executor.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use fjord_schema::NodeId;

use super::ControllerHandle;
use crate::controller::commands::{Answer, ControllerCommand, ControllerReply};
use crate::metadata::image::MetadataImage;

/// Problems registering or heartbeating are logged (warn) at most this
/// often.
const WARN_INTERVAL_MS: u64 = 10_000;
/// Between `shutting_down` heartbeats of a controlled shutdown.
const SHUTDOWN_POLL_MS: u64 = 200;

/// This process's registration state.
#[derive(Debug)]
pub struct Lifecycle {
    node: NodeId,
    incarnation: u64,
    /// The index the registration committed at, once applied here.
    registered_index: Cell<Option<u64>>,
    last_warn: Cell<Option<Instant>>,
}

impl Lifecycle {
    pub fn new(node: NodeId) -> Lifecycle {
        Lifecycle {
            node,
            incarnation: random_incarnation(),
            registered_index: Cell::new(None),
            last_warn: Cell::new(None),
        }
    }

    /// New on every process start.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The index of this process's registration, once applied here.
    pub fn registered_index(&self) -> Option<u64> {
        self.registered_index.get()
    }

    /// Whether `image` shows this incarnation registered and unfenced.
    pub fn unfenced(&self, image: &MetadataImage) -> bool {
        image
            .broker(self.node)
            .is_some_and(|b| b.incarnation == self.incarnation && !b.fenced)
    }

    fn warn(&self, what: &str, error: &dyn std::fmt::Display) {
        let now = Instant::now();
        let due = self
            .last_warn
            .get()
            .is_none_or(|at| now.duration_since(at) >= Duration::from_millis(WARN_INTERVAL_MS));
        if due {
            self.last_warn.set(Some(now));
            tracing::warn!(node = self.node.0, %error, "{what}; retrying");
        }
    }
}

/// A random, non-zero incarnation (std's per-process random hasher keys,
/// mixed with the time and the pid).
fn random_incarnation() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    hasher.finish().max(1)
}

/// Registers, then heartbeats, until shutdown.
pub(super) async fn run(handle: ControllerHandle) {
    let interval = Duration::from_millis(handle.config().heartbeat_interval_ms.max(1));
    let lifecycle = handle.lifecycle();
    let node = handle.node();
    while !handle.shutting_down() {
        let register = ControllerCommand::RegisterBroker {
            node,
            incarnation: lifecycle.incarnation(),
            endpoints: handle.config().endpoints.clone(),
            shards: handle.config().shards,
            rack: handle.config().rack.clone(),
        };
        match handle.submit(register).await {
            Ok(Answer {
                reply: ControllerReply::Registered { index },
                ..
            }) => {
                handle.wait_applied(index).await;
                lifecycle.registered_index.set(Some(index));
                tracing::info!(
                    node = node.0,
                    incarnation = lifecycle.incarnation(),
                    index,
                    "broker registered with the controller"
                );
                heartbeat(&handle, interval).await;
                lifecycle.registered_index.set(None);
                continue;
            }
            Ok(answer) => lifecycle.warn(
                "registration refused by the controller",
                &format!("{:?}", answer.reply),
            ),
            Err(error) => lifecycle.warn("cannot register with the controller", &error),
        }
        glommio::timer::sleep(interval).await;
    }
}

/// Heartbeats until shutdown or until the controller no longer knows this
/// incarnation.
async fn heartbeat(handle: &ControllerHandle, interval: Duration) {
    let lifecycle = handle.lifecycle();
    let node = handle.node();
    loop {
        if handle.shutting_down() {
            return;
        }
        let beat = ControllerCommand::Heartbeat {
            node,
            incarnation: lifecycle.incarnation(),
            caught_up: true,
            shutting_down: false,
        };
        match handle.submit(beat).await {
            Ok(Answer {
                reply: ControllerReply::Heartbeat { fenced: true, .. },
                ..
            }) => {
                let known = handle
                    .image()
                    .broker(node)
                    .is_some_and(|b| b.incarnation == lifecycle.incarnation());
                if !known {
                    tracing::info!(
                        node = node.0,
                        "the controller does not know this incarnation: registering again"
                    );
                    return;
                }
            }
            Ok(_) => {}
            Err(error) => lifecycle.warn("heartbeat not answered", &error),
        }
        glommio::timer::sleep(interval).await;
    }
}

/// Sends `shutting_down` heartbeats until the controller answers
/// `shutdown_ready` or `deadline_ms` passes.
pub(super) async fn shutdown(handle: &ControllerHandle, deadline_ms: u64) {
    let deadline = Instant::now() + Duration::from_millis(deadline_ms);
    let lifecycle = handle.lifecycle();
    let node = handle.node();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            tracing::warn!(
                node = node.0,
                "controlled shutdown not confirmed before its deadline"
            );
            return;
        }
        let beat = ControllerCommand::Heartbeat {
            node,
            incarnation: lifecycle.incarnation(),
            caught_up: true,
            shutting_down: true,
        };
        let answer = futures_lite::future::or(async { Some(handle.submit(beat).await) }, async {
            glommio::timer::sleep(left).await;
            None
        })
        .await;
        if let Some(Ok(Answer {
            reply:
                ControllerReply::Heartbeat {
                    shutdown_ready: true,
                    ..
                },
            ..
        })) = answer
        {
            tracing::info!(
                node = node.0,
                "controlled shutdown confirmed by the controller"
            );
            return;
        }
        let pause = left.min(Duration::from_millis(SHUTDOWN_POLL_MS));
        glommio::timer::sleep(pause).await;
    }
}
