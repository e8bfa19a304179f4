//! The shard mesh: how a shard hands an [`Op`] to the shard that owns the
//! partition and gets the [`OpResult`] back.
//!
//! One bounded glommio `shared_channel` per ordered pair of shards, created
//! on the main thread ([`mesh_ends`]) and connected by each shard at start.
//! Hops are batched: each shard keeps one outbox per peer; a sender task per
//! peer takes *everything* queued for that peer (requests and replies of
//! every connection) and sends it as one message, so while one message is
//! in flight the next one fills up — under load a hop costs one channel
//! operation for many requests. Batches inside ops are `bytes::Bytes`, so a
//! hop moves pointers, never record bytes.
//!
//! Bounds: each channel holds at most `mesh_channel_capacity` messages;
//! the outboxes hold at most what the shard's in-flight requests (bounded
//! by connections and the in-flight memory budget) put there.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};

use fjord_schema::ShardId;
use fjord_storage::notify::Notify;
use glommio::channels::local_channel::{self, LocalSender};
use glommio::channels::shared_channel::{
    self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender,
};

use crate::error::ShardUnavailable;
use crate::ops::{Op, OpResult};

/// One message on a channel: a batch of requests and a batch of replies.
#[derive(Debug, Default)]
pub struct Envelope {
    requests: Vec<(u64, Op)>,
    replies: Vec<(u64, OpResult)>,
}

/// One shard's channel ends, created on the main thread: senders to and
/// receivers from every other shard (`None` at the shard's own index).
#[derive(Debug)]
pub struct MeshEnds {
    senders: Vec<Option<SharedSender<Envelope>>>,
    receivers: Vec<Option<SharedReceiver<Envelope>>>,
}

/// Channel ends for `shards` shards, indexed by shard.
pub fn mesh_ends(shards: usize, capacity: usize) -> Vec<MeshEnds> {
    let mut ends: Vec<MeshEnds> = (0..shards)
        .map(|_| MeshEnds {
            senders: (0..shards).map(|_| None).collect(),
            receivers: (0..shards).map(|_| None).collect(),
        })
        .collect();
    for from in 0..shards {
        for to in 0..shards {
            if from != to {
                let (tx, rx) = shared_channel::new_bounded(capacity);
                ends[from].senders[to] = Some(tx);
                ends[to].receivers[from] = Some(rx);
            }
        }
    }
    ends
}

/// What runs an op that arrived from a peer.
pub trait OpHandler {
    fn handle(self: Rc<Self>, op: Op) -> Pin<Box<dyn Future<Output = OpResult>>>;
}

#[derive(Debug, Default)]
struct Outbox {
    requests: RefCell<Vec<(u64, Op)>>,
    replies: RefCell<Vec<(u64, OpResult)>>,
}

impl Outbox {
    fn is_empty(&self) -> bool {
        self.requests.borrow().is_empty() && self.replies.borrow().is_empty()
    }
}

/// This shard's side of the mesh.
///
/// Lives on: every shard (absent with a single shard). Owns: the connected
/// channel ends, the per-peer outboxes, and the table of ops waiting for a
/// reply. Lifecycle: [`Mesh::connect`] at shard start (waits until every
/// peer connected its ends) → [`Mesh::start`] spawns one sender and one
/// receiver task per peer → [`Mesh::call`] while serving → the tasks end
/// when the peers' ends close (their executors exit).
pub struct Mesh {
    shard: ShardId,
    senders: Vec<Option<Rc<ConnectedSender<Envelope>>>>,
    receivers: RefCell<Vec<Option<ConnectedReceiver<Envelope>>>>,
    outboxes: Vec<Outbox>,
    wake: Vec<Notify>,
    pending: RefCell<HashMap<u64, LocalSender<OpResult>>>,
    next_id: Cell<u64>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("shard", &self.shard)
            .field("pending", &self.pending.borrow().len())
            .finish()
    }
}

impl Mesh {
    /// Connects this shard's ends; completes once every peer connected its
    /// side too.
    pub async fn connect(shard: ShardId, ends: MeshEnds) -> Mesh {
        let peers = ends.senders.len();
        let senders: Vec<_> = ends
            .senders
            .into_iter()
            .map(|s| s.map(|s| glommio::spawn_local(s.connect())))
            .collect();
        let receivers: Vec<_> = ends
            .receivers
            .into_iter()
            .map(|r| r.map(|r| glommio::spawn_local(r.connect())))
            .collect();
        let mut connected_senders = Vec::with_capacity(peers);
        for task in senders {
            connected_senders.push(match task {
                Some(task) => Some(Rc::new(task.await)),
                None => None,
            });
        }
        let mut connected_receivers = Vec::with_capacity(peers);
        for task in receivers {
            connected_receivers.push(match task {
                Some(task) => Some(task.await),
                None => None,
            });
        }
        Mesh {
            shard,
            senders: connected_senders,
            receivers: RefCell::new(connected_receivers),
            outboxes: (0..peers).map(|_| Outbox::default()).collect(),
            wake: (0..peers).map(|_| Notify::default()).collect(),
            pending: RefCell::new(HashMap::new()),
            next_id: Cell::new(0),
        }
    }

    /// Spawns the per-peer sender and receiver tasks.
    pub fn start<H: OpHandler + 'static>(self: &Rc<Self>, handler: Weak<H>) {
        let receivers = std::mem::take(&mut *self.receivers.borrow_mut());
        for (peer, receiver) in receivers.into_iter().enumerate() {
            let Some(receiver) = receiver else { continue };
            glommio::spawn_local(self.clone().receive_loop(peer, receiver, handler.clone()))
                .detach();
        }
        for (peer, sender) in self.senders.iter().enumerate() {
            let Some(sender) = sender.clone() else {
                continue;
            };
            glommio::spawn_local(send_loop(self.clone(), peer, sender)).detach();
        }
    }

    /// Runs `op` on shard `target` (not this one) and returns its result.
    pub async fn call(&self, target: ShardId, op: Op) -> OpResult {
        let peer = usize::from(target.get());
        assert_ne!(target, self.shard, "local ops do not cross the mesh");
        if self.senders.get(peer).is_none_or(Option::is_none) {
            return OpResult::Unavailable(ShardUnavailable::NoSuchShard(target));
        }
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (tx, rx) = local_channel::new_bounded(1);
        self.pending.borrow_mut().insert(id, tx);
        self.outboxes[peer].requests.borrow_mut().push((id, op));
        self.wake[peer].notify_all();
        let result = rx.recv().await;
        self.pending.borrow_mut().remove(&id);
        result.unwrap_or_else(|| OpResult::Unavailable(ShardUnavailable::Stopping(target)))
    }

    /// Shards in the mesh, this one included.
    pub fn shards(&self) -> usize {
        self.senders.len()
    }

    fn deliver(&self, id: u64, result: OpResult) {
        // The caller may have given up (a long-poll that finished early).
        if let Some(tx) = self.pending.borrow_mut().remove(&id) {
            let _ = tx.try_send(result);
        }
    }

    fn reply(&self, peer: usize, id: u64, result: OpResult) {
        self.outboxes[peer].replies.borrow_mut().push((id, result));
        self.wake[peer].notify_all();
    }
}

impl Mesh {
    async fn receive_loop<H: OpHandler + 'static>(
        self: Rc<Self>,
        peer: usize,
        receiver: ConnectedReceiver<Envelope>,
        handler: Weak<H>,
    ) {
        // Ends when the peer's executor exits and its sender closes.
        while let Some(envelope) = receiver.recv().await {
            let Some(handler) = handler.upgrade() else {
                break;
            };
            for (id, result) in envelope.replies {
                self.deliver(id, result);
            }
            for (id, op) in envelope.requests {
                let mesh = self.clone();
                let run = handler.clone().handle(op);
                glommio::spawn_local(async move {
                    let result = run.await;
                    mesh.reply(peer, id, result);
                })
                .detach();
            }
        }
    }
}

async fn send_loop(mesh: Rc<Mesh>, peer: usize, sender: Rc<ConnectedSender<Envelope>>) {
    loop {
        let notified = mesh.wake[peer].notified();
        let outbox = &mesh.outboxes[peer];
        if outbox.is_empty() {
            notified.await;
            continue;
        }
        let envelope = Envelope {
            requests: std::mem::take(&mut *outbox.requests.borrow_mut()),
            replies: std::mem::take(&mut *outbox.replies.borrow_mut()),
        };
        if let Err(error) = sender.send(envelope).await {
            // The peer stopped: fail what we asked of it.
            if let glommio::GlommioError::Closed(glommio::ResourceType::Channel(envelope)) = error {
                for (id, _) in envelope.requests {
                    mesh.deliver(id, OpResult::Unavailable(ShardUnavailable::PeerStopped));
                }
            }
            return;
        }
    }
}
