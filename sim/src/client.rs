//! The workload's data clients, as pure state machines the world steps:
//! producers (idempotent with acks=all, plain with acks=all, plain with
//! acks=1) and consumers. They behave as librdkafka does where it matters
//! to the checker: metadata from any node, produce to the leader it
//! names, one batch in flight per producer (`max.in.flight = 1`), a
//! failed or unanswered batch retried with the same producer id, epoch
//! and sequence until its delivery timeout, then given up (its records
//! are indeterminate: they may or may not be in the log) and, for an
//! idempotent producer, a new producer id taken (KIP-360's reset).
//!
//! Every value is unique per send (`p<client>-<n>`), so the checker can
//! tell a duplicate from a retry's answer and a phantom from a record.

use std::collections::BTreeMap;
use std::sync::Arc;

use fjord_broker::group::offsets_log::OFFSETS_TOPIC;
use fjord_broker::metadata::image::MetadataImage;
use fjord_schema::{ErrorCode, NodeId};

use crate::rng::SimRng;

/// A request a client sends to a node.
#[derive(Debug, Clone)]
pub enum ClientRequest {
    /// The node's metadata image.
    Metadata,
    /// A producer id (the node asks its controller for a block).
    InitProducerId,
    Produce(Produce),
    Fetch(Fetch),
}

/// A produce of one batch.
#[derive(Debug, Clone)]
pub struct Produce {
    pub topic: String,
    pub partition: u32,
    pub acks: i8,
    /// (producer id, epoch, base sequence) of an idempotent producer.
    pub producer: Option<(i64, i16, i32)>,
    /// (key, value) of each record.
    pub records: Vec<(Vec<u8>, Vec<u8>)>,
    pub timeout_ms: u64,
}

/// A consumer's fetch.
#[derive(Debug, Clone)]
pub struct Fetch {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub max_bytes: usize,
}

/// A node's answer.
#[derive(Debug, Clone)]
pub enum ClientReply {
    Metadata(Arc<MetadataImage>),
    InitProducerId(Result<i64, ErrorCode>),
    /// The base offset, and the leader epoch the answering node led at.
    Produced(Result<(u64, u32), ErrorCode>),
    /// Records (offset, value) below the high watermark.
    Fetched(Result<Vec<(u64, Vec<u8>)>, ErrorCode>),
}

/// What a client step produced.
#[derive(Debug)]
pub enum ClientOut {
    Send {
        to: NodeId,
        req: u64,
        request: ClientRequest,
    },
    /// A value is about to be sent for the first time.
    Sent { value: Vec<u8>, idempotent: bool },
    /// A batch was acknowledged.
    Acked {
        topic: String,
        partition: u32,
        base_offset: u64,
        values: Vec<Vec<u8>>,
        acks: i8,
        node: NodeId,
        leader_epoch: u32,
    },
    /// A batch was given up (indeterminate).
    GaveUp { records: usize },
    /// A consumer read these (offset, value) below the high watermark.
    Read {
        topic: String,
        partition: u32,
        records: Vec<(u64, Vec<u8>)>,
    },
}

/// The kind of a data client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    IdempotentAllAcks,
    AllAcks,
    LeaderAck,
    Consumer,
}

/// A request waiting for its answer.
#[derive(Debug, Clone)]
struct Pending {
    req: u64,
    to: NodeId,
    request: ClientRequest,
    deadline_ms: u64,
}

/// A batch not yet acknowledged.
#[derive(Debug, Clone)]
struct Batch {
    topic: String,
    partition: u32,
    records: Vec<(Vec<u8>, Vec<u8>)>,
    /// The sequence of its first record (idempotent producers).
    sequence: i32,
    /// Given up after this.
    give_up_ms: u64,
}

/// Request timeout of a client (librdkafka's `request.timeout.ms`,
/// scaled to the simulation).
const REQUEST_TIMEOUT_MS: u64 = 3_000;
/// A batch is given up after this (`delivery.timeout.ms`).
const DELIVERY_TIMEOUT_MS: u64 = 15_000;
/// Between retries (`retry.backoff.ms`).
const BACKOFF_MS: u64 = 100;
/// Metadata is refreshed at least this often.
const METADATA_MAX_AGE_MS: u64 = 2_000;

/// One data client. Lives in: the world's workload.
#[derive(Debug)]
pub struct Client {
    pub id: u32,
    pub kind: Kind,
    nodes: u32,
    rng: SimRng,
    next_req: u64,
    next_value: u64,
    pending: Option<Pending>,
    /// Not before this (backoff).
    idle_until_ms: u64,
    metadata: Option<Arc<MetadataImage>>,
    metadata_ms: u64,
    producer_id: Option<i64>,
    /// Next sequence per (topic, partition), for the current producer id.
    sequences: BTreeMap<(String, u32), i32>,
    batch: Option<Batch>,
    /// Consumer positions.
    positions: BTreeMap<(String, u32), u64>,
}

impl Client {
    pub fn new(id: u32, kind: Kind, nodes: u32, rng: SimRng) -> Client {
        Client {
            id,
            kind,
            nodes,
            rng,
            next_req: 1,
            next_value: 0,
            pending: None,
            idle_until_ms: 0,
            metadata: None,
            metadata_ms: 0,
            producer_id: None,
            sequences: BTreeMap::new(),
            batch: None,
            positions: BTreeMap::new(),
        }
    }

    fn acks(&self) -> i8 {
        match self.kind {
            Kind::LeaderAck => 1,
            _ => -1,
        }
    }

    fn idempotent(&self) -> bool {
        self.kind == Kind::IdempotentAllAcks
    }

    fn send(&mut self, now_ms: u64, to: NodeId, request: ClientRequest, out: &mut Vec<ClientOut>) {
        let req = (u64::from(self.id) << 40) | self.next_req;
        self.next_req += 1;
        self.pending = Some(Pending {
            req,
            to,
            request: request.clone(),
            deadline_ms: now_ms + REQUEST_TIMEOUT_MS,
        });
        out.push(ClientOut::Send { to, req, request });
    }

    fn any_node(&mut self) -> NodeId {
        NodeId(self.rng.range(1, u64::from(self.nodes)) as u32)
    }

    /// The leader of `topic`-`partition` in the last metadata.
    fn leader(&self, topic: &str, partition: u32) -> Option<NodeId> {
        let image = self.metadata.as_ref()?;
        let topic = image.topics().find(|t| t.name == topic)?;
        topic.partitions.get(partition as usize)?.leader
    }

    /// A partition of a user topic of the last metadata.
    fn pick_partition(&mut self) -> Option<(String, u32)> {
        let image = self.metadata.as_ref()?;
        let topics: Vec<(String, u32)> = image
            .topics()
            .filter(|t| t.name != OFFSETS_TOPIC)
            .map(|t| (t.name.clone(), t.partitions.len() as u32))
            .collect();
        let (name, count) = self.rng.pick(&topics)?.clone();
        let partition = self.rng.below(u64::from(count.max(1))) as u32;
        Some((name, partition))
    }

    /// Time passes: timeouts, the next request.
    pub fn step(&mut self, now_ms: u64, out: &mut Vec<ClientOut>) {
        if let Some(pending) = &self.pending {
            if now_ms < pending.deadline_ms {
                return;
            }
            // No answer: lost, or the node is down or cut off.
            self.pending = None;
            self.metadata = None;
        }
        if now_ms < self.idle_until_ms {
            return;
        }
        let stale = now_ms >= self.metadata_ms + METADATA_MAX_AGE_MS;
        if self.metadata.is_none() || stale {
            let to = self.any_node();
            self.send(now_ms, to, ClientRequest::Metadata, out);
            return;
        }
        match self.kind {
            Kind::Consumer => self.consume(now_ms, out),
            _ => self.produce(now_ms, out),
        }
    }

    fn produce(&mut self, now_ms: u64, out: &mut Vec<ClientOut>) {
        if self.idempotent() && self.producer_id.is_none() {
            let to = self.any_node();
            self.send(now_ms, to, ClientRequest::InitProducerId, out);
            return;
        }
        if let Some(batch) = &self.batch {
            if now_ms >= batch.give_up_ms {
                let records = batch.records.len();
                self.batch = None;
                out.push(ClientOut::GaveUp { records });
                if self.idempotent() {
                    // The sequence may have a gap now: a new producer id.
                    self.producer_id = None;
                    self.sequences.clear();
                    return;
                }
            }
        }
        if self.batch.is_none() {
            let Some((topic, partition)) = self.pick_partition() else {
                self.idle_until_ms = now_ms + BACKOFF_MS;
                return;
            };
            let count = self.rng.range(1, 3) as usize;
            let mut records = Vec::with_capacity(count);
            for _ in 0..count {
                let value = format!("p{}-{}", self.id, self.next_value).into_bytes();
                self.next_value += 1;
                out.push(ClientOut::Sent {
                    value: value.clone(),
                    idempotent: self.idempotent(),
                });
                let key = format!("k{}", self.rng.below(8)).into_bytes();
                records.push((key, value));
            }
            let sequence = *self
                .sequences
                .entry((topic.clone(), partition))
                .or_default();
            self.batch = Some(Batch {
                topic,
                partition,
                records,
                sequence,
                give_up_ms: now_ms + DELIVERY_TIMEOUT_MS,
            });
        }
        let Some(batch) = self.batch.clone() else {
            return;
        };
        let Some(leader) = self.leader(&batch.topic, batch.partition) else {
            self.metadata = None;
            self.idle_until_ms = now_ms + BACKOFF_MS;
            return;
        };
        let producer = match (self.idempotent(), self.producer_id) {
            (true, Some(id)) => Some((id, 0, batch.sequence)),
            _ => None,
        };
        let produce = Produce {
            topic: batch.topic,
            partition: batch.partition,
            acks: self.acks(),
            producer,
            records: batch.records,
            timeout_ms: REQUEST_TIMEOUT_MS - 500,
        };
        self.send(now_ms, leader, ClientRequest::Produce(produce), out);
    }

    fn consume(&mut self, now_ms: u64, out: &mut Vec<ClientOut>) {
        let Some((topic, partition)) = self.pick_partition() else {
            self.idle_until_ms = now_ms + BACKOFF_MS;
            return;
        };
        let Some(leader) = self.leader(&topic, partition) else {
            self.metadata = None;
            self.idle_until_ms = now_ms + BACKOFF_MS;
            return;
        };
        let offset = *self
            .positions
            .get(&(topic.clone(), partition))
            .unwrap_or(&0);
        let fetch = Fetch {
            topic,
            partition,
            offset,
            max_bytes: 4096,
        };
        self.send(now_ms, leader, ClientRequest::Fetch(fetch), out);
    }

    /// The answer to request `req` from `from`.
    pub fn on_reply(
        &mut self,
        now_ms: u64,
        from: NodeId,
        req: u64,
        reply: ClientReply,
        out: &mut Vec<ClientOut>,
    ) {
        let Some(pending) = self.pending.take_if(|p| p.req == req && p.to == from) else {
            return; // late or duplicated
        };
        match (pending.request, reply) {
            (ClientRequest::Metadata, ClientReply::Metadata(image)) => {
                self.metadata = Some(image);
                self.metadata_ms = now_ms;
            }
            (ClientRequest::InitProducerId, ClientReply::InitProducerId(result)) => match result {
                Ok(id) => {
                    self.producer_id = Some(id);
                    self.sequences.clear();
                }
                Err(_) => self.idle_until_ms = now_ms + BACKOFF_MS,
            },
            (ClientRequest::Produce(produce), ClientReply::Produced(result)) => {
                self.produced(now_ms, from, produce, result, out)
            }
            (ClientRequest::Fetch(fetch), ClientReply::Fetched(result)) => match result {
                Ok(records) => {
                    if let Some((last, _)) = records.last() {
                        self.positions
                            .insert((fetch.topic.clone(), fetch.partition), last + 1);
                    }
                    if !records.is_empty() {
                        out.push(ClientOut::Read {
                            topic: fetch.topic,
                            partition: fetch.partition,
                            records,
                        });
                    }
                }
                Err(ErrorCode::OffsetOutOfRange) => {
                    self.positions.remove(&(fetch.topic, fetch.partition));
                }
                Err(_) => {
                    self.metadata = None;
                    self.idle_until_ms = now_ms + BACKOFF_MS;
                }
            },
            _ => {}
        }
    }

    fn produced(
        &mut self,
        now_ms: u64,
        from: NodeId,
        produce: Produce,
        result: Result<(u64, u32), ErrorCode>,
        out: &mut Vec<ClientOut>,
    ) {
        match result {
            Ok((base_offset, leader_epoch)) => {
                let Some(batch) = self.batch.take() else {
                    return;
                };
                if self.idempotent() {
                    self.sequences.insert(
                        (batch.topic.clone(), batch.partition),
                        batch.sequence + batch.records.len() as i32,
                    );
                }
                out.push(ClientOut::Acked {
                    topic: produce.topic,
                    partition: produce.partition,
                    base_offset,
                    values: produce.records.into_iter().map(|(_, v)| v).collect(),
                    acks: produce.acks,
                    node: from,
                    leader_epoch,
                });
            }
            Err(
                ErrorCode::OutOfOrderSequenceNumber
                | ErrorCode::UnknownProducerId
                | ErrorCode::InvalidProducerEpoch
                | ErrorCode::ProducerFenced,
            ) if self.idempotent() => {
                // The broker lost this producer's state (or the batch was
                // truncated away): the batch is indeterminate, and the
                // producer starts again under a new id.
                if let Some(batch) = self.batch.take() {
                    out.push(ClientOut::GaveUp {
                        records: batch.records.len(),
                    });
                }
                self.producer_id = None;
                self.sequences.clear();
            }
            Err(_) => {
                // Retriable (not the leader, not enough replicas, timed
                // out, storage...): the same batch again, after fresh
                // metadata.
                self.metadata = None;
                self.idle_until_ms = now_ms + BACKOFF_MS;
            }
        }
    }
}
