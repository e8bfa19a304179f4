//! The native edge: the flatbuffers protocol's codec on the [`Engine`].
//! Turns one decoded request frame into the engine's typed request, calls
//! the engine, and encodes its results as one response frame. Requests
//! that do not decode get an ERROR-flagged frame with an `ErrorResponse`
//! body; requests that decode get their own response type with errors per
//! topic or partition.
//!
//! Fetch responses carry the stored batches in the frame payload as the
//! `Bytes` the log returned — they are handed to the connection as
//! separate chunks, never copied into the flatbuffer; a produce's records
//! are slices of the request frame's payload, passed to the engine as
//! they are.
//!
//! The connection driver ([`fjord_net::driver::serve`]) calls
//! [`respond`] through the engine's [`Service`] implementation.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use fjord_net::driver::Service;
use fjord_schema::api::{decode_request, ApiKey, Request, SUPPORTED_VERSIONS};
use fjord_schema::frame::{Frame, FrameFlags, FrameHeader};
use fjord_schema::{wire, ErrorCode, NodeId, PartitionId, ProducerEpoch, ProducerId};
use flatbuffers::{FlatBufferBuilder, WIPOffset};
use zerocopy::IntoBytes;

use crate::engine::cluster::ClusterView;
use crate::engine::types::{
    leader_epoch_of, replica_of, CreateSpec, FetchPartition, FetchRequest, FetchResult,
    IsolationLevel, ListOffsetsPartition, ListOffsetsRequest, ListOffsetsResult, PartitionHealth,
    ProduceRequest, ProduceResult, TopicOutcome, TopicParts, VerifiedBatches,
};
use crate::engine::{BrokerView, Engine, NoReservation};
use crate::group::offsets_log::OFFSETS_TOPIC;
use crate::metadata::catalog::Catalog;

/// Apis this broker answers. ApiVersions lists only these, so a client
/// never sees an api it would be refused.
pub const SERVED_APIS: [ApiKey; 17] = [
    ApiKey::ApiVersions,
    ApiKey::Metadata,
    ApiKey::CreateTopics,
    ApiKey::DeleteTopics,
    ApiKey::Produce,
    ApiKey::Fetch,
    ApiKey::ListOffsets,
    ApiKey::FindCoordinator,
    ApiKey::JoinGroup,
    ApiKey::SyncGroup,
    ApiKey::Heartbeat,
    ApiKey::LeaveGroup,
    ApiKey::OffsetCommit,
    ApiKey::OffsetFetch,
    ApiKey::ListGroups,
    ApiKey::DescribeGroups,
    ApiKey::InitProducerId,
];

/// Versions answered, per served api: `SUPPORTED_VERSIONS` restricted to
/// [`SERVED_APIS`].
pub fn served_versions() -> impl Iterator<Item = (ApiKey, u16, u16)> {
    SUPPORTED_VERSIONS
        .into_iter()
        .filter(|(key, _, _)| SERVED_APIS.contains(key))
}

impl Service for Engine {
    async fn call(&self, frame: Frame, out: &mut Vec<Bytes>) {
        respond(self, frame, out).await;
    }
}

/// A response before framing.
#[derive(Debug)]
struct Reply {
    error: bool,
    body: Vec<u8>,
    payload: Vec<Bytes>,
}

impl Reply {
    fn ok(fbb: FlatBufferBuilder<'_>) -> Reply {
        Reply {
            error: false,
            body: fbb.finished_data().to_vec(),
            payload: Vec::new(),
        }
    }

    fn error(code: ErrorCode, message: &str) -> Reply {
        let mut fbb = FlatBufferBuilder::new();
        let message = fbb.create_string(message);
        let body = wire::ErrorResponse::create(
            &mut fbb,
            &wire::ErrorResponseArgs {
                error_code: code.code(),
                message: Some(message),
            },
        );
        fbb.finish(body, None);
        Reply {
            error: true,
            ..Reply::ok(fbb)
        }
    }
}

/// Appends the response to `frame` to `out` (nothing if the request
/// asked for none). The request holds its frame's size of the engine's
/// in-flight budget while it is handled.
pub async fn respond(engine: &Engine, frame: Frame, out: &mut Vec<Bytes>) {
    let header = frame.header;
    let cost = frame.body.len() + frame.payload.len();
    let inflight_max = engine.limits().inflight_bytes_max;
    let reply = if cost > inflight_max {
        Reply::error(
            ErrorCode::BrokerBusy,
            &format!(
                "a {cost}-byte request exceeds this shard's in-flight budget of {inflight_max} bytes"
            ),
        )
    } else {
        match engine.inflight().acquire_permit(cost as u64).await {
            Ok(_permit) => handle(engine, &frame, cost).await,
            Err(_) => Reply::error(ErrorCode::BrokerBusy, "the shard is stopping"),
        }
    };
    if header.flags().no_response() {
        return;
    }
    encode_reply(&header, reply, out);
}

async fn handle(engine: &Engine, frame: &Frame, cost: usize) -> Reply {
    let request = match decode_request(frame) {
        Ok(request) => request,
        Err(error) => {
            tracing::debug!(shard = %engine.shard(), %error, "undecodable request");
            return Reply::error(error.error_code(), &error.to_string());
        }
    };
    match request {
        Request::ApiVersions(_) => api_versions(),
        Request::Metadata(request) => {
            let names = request
                .topics()
                .map(|names| names.iter().map(str::to_owned).collect::<Vec<_>>());
            let metadata = engine
                .metadata(names.as_deref(), request.allow_auto_topic_creation())
                .await;
            let health = match &names {
                Some(names) => engine.partition_health(names, &metadata.catalog).await,
                None => HashMap::new(),
            };
            let view = engine.cluster_view(&metadata.catalog);
            let missing = |name: &str| metadata.missing_topic_error(name);
            metadata_reply(
                engine.broker(),
                &view,
                &metadata.catalog,
                names,
                missing,
                &health,
            )
        }
        Request::CreateTopics(request) => {
            let specs = request
                .topics()
                .iter()
                .flatten()
                .map(|t| CreateSpec {
                    name: t.name().to_owned(),
                    num_partitions: t.num_partitions(),
                    replication_factor: t.replication_factor(),
                    configs: t
                        .configs()
                        .iter()
                        .flatten()
                        // A null value means "the default": no override.
                        .filter_map(|c| Some((c.key().to_owned(), c.value()?.to_owned())))
                        .collect(),
                    // The native CreateTopics has no assignments.
                    assignments: Vec::new(),
                })
                .collect();
            let outcomes = engine.create_topics(specs, request.validate_only()).await;
            create_topics_reply(&outcomes)
        }
        Request::DeleteTopics(request) => {
            let names = request
                .topics()
                .iter()
                .flatten()
                .map(str::to_owned)
                .collect();
            delete_topics_reply(&engine.delete_topics(names).await)
        }
        Request::Produce(request) => {
            let topics = request
                .topics()
                .iter()
                .flatten()
                .map(|t| {
                    let partitions = t.partitions();
                    let parts = partitions.iter().flatten().map(|p| {
                        let records = match p.records() {
                            Some(s) => {
                                let start = s.offset() as usize;
                                frame.payload.slice(start..start + s.len() as usize)
                            }
                            None => Bytes::new(),
                        };
                        // Verified once, here (each batch a slice of the
                        // frame); a partition whose batches fail is
                        // answered with why, by the engine, in its place.
                        (
                            PartitionId(p.partition()),
                            VerifiedBatches::verify(&records),
                        )
                    });
                    (t.name().to_owned(), parts.collect())
                })
                .collect();
            let request = ProduceRequest {
                acks: request.acks().0,
                timeout: Duration::from_millis(u64::from(request.timeout_ms())),
                topics,
            };
            produce_reply(&engine.produce(request).await)
        }
        Request::Fetch(request) => {
            let topics = request
                .topics()
                .iter()
                .flatten()
                .map(|t| {
                    let partitions = t.partitions();
                    let parts = partitions.iter().flatten().map(|p| {
                        let partition = FetchPartition {
                            fetch_offset: p.fetch_offset(),
                            partition_max_bytes: p.partition_max_bytes() as usize,
                            current_leader_epoch: leader_epoch_of(p.current_leader_epoch()),
                            replica_durable_end: None,
                        };
                        (PartitionId(p.partition()), partition)
                    });
                    (t.name().to_owned(), parts.collect())
                })
                .collect();
            let request = FetchRequest {
                max_wait: Duration::from_millis(u64::from(request.max_wait_ms())),
                min_bytes: request.min_bytes() as usize,
                max_bytes: request.max_bytes() as usize,
                replica_id: replica_of(request.replica_id()),
                isolation: isolation(request.isolation_level()),
                topics,
            };
            match engine.fetch(request, cost, &mut NoReservation).await {
                Ok(results) => fetch_reply(results),
                Err(error) => Reply::error(error.error_code(), &error.to_string()),
            }
        }
        Request::ListOffsets(request) => {
            let topics = request
                .topics()
                .iter()
                .flatten()
                .map(|t| {
                    let partitions = t.partitions();
                    let parts = partitions.iter().flatten().map(|p| {
                        let partition = ListOffsetsPartition {
                            timestamp: p.timestamp(),
                            current_leader_epoch: leader_epoch_of(p.current_leader_epoch()),
                        };
                        (PartitionId(p.partition()), partition)
                    });
                    (t.name().to_owned(), parts.collect())
                })
                .collect();
            let request = ListOffsetsRequest {
                replica_id: replica_of(request.replica_id()),
                isolation: isolation(request.isolation_level()),
                topics,
            };
            list_offsets_reply(&engine.list_offsets(request).await)
        }
        request @ (Request::FindCoordinator(_)
        | Request::JoinGroup(_)
        | Request::SyncGroup(_)
        | Request::Heartbeat(_)
        | Request::LeaveGroup(_)
        | Request::OffsetCommit(_)
        | Request::OffsetFetch(_)
        | Request::ListGroups(_)
        | Request::DescribeGroups(_)) => groups::group_request(engine, request).await,
        Request::InitProducerId(request) => init_producer_id(engine, request).await,
    }
}

fn isolation(level: wire::IsolationLevel) -> IsolationLevel {
    if level == wire::IsolationLevel::ReadCommitted {
        IsolationLevel::ReadCommitted
    } else {
        IsolationLevel::ReadUncommitted
    }
}

async fn init_producer_id(engine: &Engine, request: wire::InitProducerIdRequest<'_>) -> Reply {
    let answer = engine
        .init_producer_id(
            request.transactional_id(),
            ProducerId(request.producer_id()),
            ProducerEpoch(request.producer_epoch()),
        )
        .await;
    let (error, message, (producer_id, epoch)) = match answer {
        Ok(ids) => (ErrorCode::None, None, ids),
        Err((code, message)) => {
            let none = (ProducerId::NONE, ProducerEpoch::NONE);
            (code, Some(message), none)
        }
    };
    let mut fbb = FlatBufferBuilder::new();
    let error_message = message.map(|m| fbb.create_string(&m));
    let response = wire::InitProducerIdResponse::create(
        &mut fbb,
        &wire::InitProducerIdResponseArgs {
            throttle_time_ms: 0,
            error_code: error.code(),
            error_message,
            producer_id: producer_id.0,
            producer_epoch: epoch.0,
        },
    );
    fbb.finish(response, None);
    Reply::ok(fbb)
}

fn api_versions() -> Reply {
    let mut fbb = FlatBufferBuilder::new();
    let ranges: Vec<wire::ApiVersionRange> = served_versions()
        .map(|(key, min, max)| wire::ApiVersionRange::new(key as u16, min, max))
        .collect();
    let api_versions = fbb.create_vector(&ranges);
    let version = fbb.create_string(env!("CARGO_PKG_VERSION"));
    let response = wire::ApiVersionsResponse::create(
        &mut fbb,
        &wire::ApiVersionsResponseArgs {
            error_code: ErrorCode::None.code(),
            api_versions: Some(api_versions),
            broker_software_version: Some(version),
        },
    );
    fbb.finish(response, None);
    Reply::ok(fbb)
}

/// An offset on the wire's `int64` (offsets stay far below `i64::MAX`).
fn offset_i64(offset: u64) -> i64 {
    i64::try_from(offset).unwrap_or(i64::MAX)
}

/// The Metadata answer: every registered broker (fenced ones flagged, so
/// operators see them; clients route to none of them) with its native
/// and Kafka listeners (this node's shard ports too), the controller, the
/// metadata log position, and per partition its leader, leader epoch,
/// replicas and ISR as the image says; `leader_shard` is the local shard
/// for partitions this node leads, 0 for others (their node's shard ports
/// are not known here: clients use its shared port). For the topics a
/// request names, `health` adds each local replica's storage problems,
/// log end and high watermark, and where this node leads, each
/// follower's fetch offset (`fjord topic describe`'s lag).
fn metadata_reply(
    broker: &BrokerView,
    view: &ClusterView,
    catalog: &Catalog,
    names: Option<Vec<String>>,
    missing: impl Fn(&str) -> ErrorCode,
    health: &HashMap<(String, u32), PartitionHealth>,
) -> Reply {
    let node = broker.node_id;
    let mut fbb = FlatBufferBuilder::new();
    let brokers: Vec<_> = view
        .nodes
        .iter()
        .filter_map(|n| {
            let native = n.native.as_ref()?;
            let host = fbb.create_string(&native.host);
            let shard_ports = (n.node == node).then(|| fbb.create_vector(&broker.shard_ports));
            let rack = n.rack.as_deref().map(|r| fbb.create_string(r));
            let kafka_host = n.kafka.as_ref().map(|k| fbb.create_string(&k.host));
            Some(wire::BrokerMetadata::create(
                &mut fbb,
                &wire::BrokerMetadataArgs {
                    node_id: n.node.get(),
                    host: Some(host),
                    port: native.port,
                    shard_ports,
                    rack,
                    kafka_host,
                    kafka_port: n.kafka.as_ref().map_or(0, |k| k.port),
                    fenced: n.fenced,
                },
            ))
        })
        .collect();
    let brokers = fbb.create_vector(&brokers);
    let wanted: Vec<String> = match &names {
        Some(names) => names.clone(),
        None => catalog.topics().map(|t| t.name.clone()).collect(),
    };
    let mut topics = Vec::with_capacity(wanted.len());
    for name in &wanted {
        let fb_name = fbb.create_string(name);
        let Some(meta) = catalog.get(name) else {
            let error = missing(name);
            topics.push(wire::TopicMetadata::create(
                &mut fbb,
                &wire::TopicMetadataArgs {
                    error_code: error.code(),
                    name: Some(fb_name),
                    is_internal: false,
                    partitions: None,
                },
            ));
            continue;
        };
        let partitions: Vec<_> = meta
            .partitions
            .iter()
            .enumerate()
            .map(|(partition, image)| {
                let ids = |nodes: &[NodeId]| nodes.iter().map(|n| n.get()).collect::<Vec<u32>>();
                let replicas = fbb.create_vector(&ids(&image.replicas));
                let isr = fbb.create_vector(&ids(&image.isr));
                let health = health.get(&(name.clone(), partition as u32));
                let offline = health.and_then(|h| h.offline.as_deref());
                let offline_reason = offline.map(|r| fbb.create_string(r));
                let damaged = health.filter(|h| !h.damaged.is_empty()).map(|h| {
                    let ranges: Vec<wire::DamagedRange> = h
                        .damaged
                        .iter()
                        .map(|d| {
                            wire::DamagedRange::new(
                                d.segment_base,
                                d.bytes_start,
                                d.bytes_end,
                                d.first_offset,
                                d.end_offset,
                            )
                        })
                        .collect();
                    fbb.create_vector(&ranges)
                });
                let offsets = health.and_then(|h| h.offsets);
                // Lag is the leader's to tell: only where this node leads
                // (a replica that led before keeps a stale view).
                let leads = image.leader == Some(node);
                let followers = health
                    .filter(|h| leads && !h.followers.is_empty())
                    .map(|h| {
                        let progress: Vec<wire::FollowerProgress> = h
                            .followers
                            .iter()
                            .map(|(follower, end)| {
                                let fetch_offset = end.map_or(-1, |o| offset_i64(o.get()));
                                wire::FollowerProgress::new(follower.get(), fetch_offset)
                            })
                            .collect();
                        fbb.create_vector(&progress)
                    });
                let error = if offline.is_some() {
                    ErrorCode::KafkaStorageError
                } else if image.leader.is_none() {
                    ErrorCode::LeaderNotAvailable
                } else {
                    ErrorCode::None
                };
                let leader_shard = match image.leader {
                    Some(leader) if leader == node => meta
                        .shard_of(PartitionId(partition as u32))
                        .map_or(0, |s| s.0),
                    _ => 0,
                };
                wire::PartitionMetadata::create(
                    &mut fbb,
                    &wire::PartitionMetadataArgs {
                        error_code: error.code(),
                        partition: partition as u32,
                        leader: image.leader.map_or(-1, |n| n.get() as i32),
                        leader_epoch: image.leader_epoch.0 as i32,
                        leader_shard,
                        replicas: Some(replicas),
                        isr: Some(isr),
                        offline_reason,
                        damaged,
                        log_end: offsets.map_or(-1, |o| offset_i64(o.log_end.get())),
                        high_watermark: offsets.map_or(-1, |o| offset_i64(o.high_watermark.get())),
                        followers,
                    },
                )
            })
            .collect();
        let partitions = fbb.create_vector(&partitions);
        topics.push(wire::TopicMetadata::create(
            &mut fbb,
            &wire::TopicMetadataArgs {
                error_code: ErrorCode::None.code(),
                name: Some(fb_name),
                is_internal: name == OFFSETS_TOPIC,
                partitions: Some(partitions),
            },
        ));
    }
    let topics = fbb.create_vector(&topics);
    let response = wire::MetadataResponse::create(
        &mut fbb,
        &wire::MetadataResponseArgs {
            throttle_time_ms: 0,
            cluster_id: None,
            controller_id: view.controller.map_or(-1, |n| n.get() as i32),
            brokers: Some(brokers),
            topics: Some(topics),
            metadata_applied_index: view.applied_index,
            metadata_committed_index: view.committed_index,
        },
    );
    fbb.finish(response, None);
    Reply::ok(fbb)
}

fn create_topics_reply(outcomes: &[TopicOutcome]) -> Reply {
    let mut fbb = FlatBufferBuilder::new();
    let results: Vec<_> = outcomes
        .iter()
        .map(|o| {
            let name = fbb.create_string(&o.name);
            let message = o.message().map(|m| fbb.create_string(&m));
            wire::CreatableTopicResult::create(
                &mut fbb,
                &wire::CreatableTopicResultArgs {
                    name: Some(name),
                    error_code: o.code().code(),
                    error_message: message,
                    num_partitions: o.num_partitions,
                    replication_factor: if o.code() == ErrorCode::None { 1 } else { -1 },
                },
            )
        })
        .collect();
    let topics = fbb.create_vector(&results);
    let response = wire::CreateTopicsResponse::create(
        &mut fbb,
        &wire::CreateTopicsResponseArgs {
            throttle_time_ms: 0,
            topics: Some(topics),
        },
    );
    fbb.finish(response, None);
    Reply::ok(fbb)
}

fn delete_topics_reply(outcomes: &[TopicOutcome]) -> Reply {
    let mut fbb = FlatBufferBuilder::new();
    let results: Vec<_> = outcomes
        .iter()
        .map(|o| {
            let name = fbb.create_string(&o.name);
            let message = o.message().map(|m| fbb.create_string(&m));
            wire::DeletableTopicResult::create(
                &mut fbb,
                &wire::DeletableTopicResultArgs {
                    name: Some(name),
                    error_code: o.code().code(),
                    error_message: message,
                },
            )
        })
        .collect();
    let topics = fbb.create_vector(&results);
    let response = wire::DeleteTopicsResponse::create(
        &mut fbb,
        &wire::DeleteTopicsResponseArgs {
            throttle_time_ms: 0,
            topics: Some(topics),
        },
    );
    fbb.finish(response, None);
    Reply::ok(fbb)
}

fn produce_reply(results: &TopicParts<ProduceResult>) -> Reply {
    let mut fbb = FlatBufferBuilder::new();
    let topic_offsets: Vec<_> = results
        .iter()
        .map(|(name, parts)| {
            let partitions: Vec<_> = parts
                .iter()
                .map(|(partition, r)| {
                    let message = r.message.as_deref().map(|m| fbb.create_string(m));
                    wire::PartitionProduceResponse::create(
                        &mut fbb,
                        &wire::PartitionProduceResponseArgs {
                            partition: partition.get(),
                            error_code: r.error.code(),
                            error_message: message,
                            base_offset: r.base_offset,
                            log_append_time_ms: -1,
                            log_start_offset: r.log_start_offset,
                        },
                    )
                })
                .collect();
            let partitions = fbb.create_vector(&partitions);
            let name = fbb.create_string(name);
            wire::TopicProduceResponse::create(
                &mut fbb,
                &wire::TopicProduceResponseArgs {
                    name: Some(name),
                    partitions: Some(partitions),
                },
            )
        })
        .collect();
    let topics = fbb.create_vector(&topic_offsets);
    let response = wire::ProduceResponse::create(
        &mut fbb,
        &wire::ProduceResponseArgs {
            throttle_time_ms: 0,
            topics: Some(topics),
        },
    );
    fbb.finish(response, None);
    Reply::ok(fbb)
}

fn list_offsets_reply(results: &TopicParts<ListOffsetsResult>) -> Reply {
    let mut fbb = FlatBufferBuilder::new();
    let topic_offsets: Vec<_> = results
        .iter()
        .map(|(name, parts)| {
            let partitions: Vec<_> = parts
                .iter()
                .map(|(partition, r)| {
                    wire::ListOffsetsPartitionResponse::create(
                        &mut fbb,
                        &wire::ListOffsetsPartitionResponseArgs {
                            partition: partition.get(),
                            error_code: r.error.code(),
                            timestamp: r.timestamp,
                            offset: r.offset,
                            leader_epoch: if r.error == ErrorCode::None { 0 } else { -1 },
                        },
                    )
                })
                .collect();
            let partitions = fbb.create_vector(&partitions);
            let name = fbb.create_string(name);
            wire::ListOffsetsTopicResponse::create(
                &mut fbb,
                &wire::ListOffsetsTopicResponseArgs {
                    name: Some(name),
                    partitions: Some(partitions),
                },
            )
        })
        .collect();
    let topics = fbb.create_vector(&topic_offsets);
    let response = wire::ListOffsetsResponse::create(
        &mut fbb,
        &wire::ListOffsetsResponseArgs {
            throttle_time_ms: 0,
            topics: Some(topics),
        },
    );
    fbb.finish(response, None);
    Reply::ok(fbb)
}

/// Builds the fetch response: the batches the engine fitted go to the
/// payload in request order; each partition names its slice of the
/// payload.
fn fetch_reply(results: TopicParts<FetchResult>) -> Reply {
    let mut fbb = FlatBufferBuilder::new();
    let mut payload: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    let mut topic_offsets: Vec<WIPOffset<wire::FetchTopicResponse>> = Vec::new();
    for (name, parts) in results {
        let mut partitions = Vec::with_capacity(parts.len());
        for (partition, result) in parts {
            let start = total;
            for batch in result.batches {
                total += batch.len();
                payload.push(batch);
            }
            let slice = wire::PayloadSlice::new(start as u32, (total - start) as u32);
            partitions.push(wire::FetchPartitionResponse::create(
                &mut fbb,
                &wire::FetchPartitionResponseArgs {
                    partition: partition.get(),
                    error_code: result.error.code(),
                    high_watermark: result.high_watermark,
                    last_stable_offset: result.high_watermark,
                    log_start_offset: result.log_start_offset,
                    records: Some(&slice),
                },
            ));
        }
        let partitions = fbb.create_vector(&partitions);
        let name = fbb.create_string(&name);
        topic_offsets.push(wire::FetchTopicResponse::create(
            &mut fbb,
            &wire::FetchTopicResponseArgs {
                name: Some(name),
                partitions: Some(partitions),
            },
        ));
    }
    let topics = fbb.create_vector(&topic_offsets);
    let response = wire::FetchResponse::create(
        &mut fbb,
        &wire::FetchResponseArgs {
            throttle_time_ms: 0,
            error_code: ErrorCode::None.code(),
            topics: Some(topics),
        },
    );
    fbb.finish(response, None);
    Reply {
        payload,
        ..Reply::ok(fbb)
    }
}

/// Frames `reply`: one chunk with the header and body, then the payload
/// chunks as they are.
fn encode_reply(request: &FrameHeader, reply: Reply, out: &mut Vec<Bytes>) {
    let mut flags = FrameFlags::RESPONSE;
    if reply.error {
        flags |= FrameFlags::ERROR;
    }
    let payload_len: usize = reply.payload.iter().map(Bytes::len).sum();
    // Bounded: the body is small and the payload by fetch_bytes_max (u32).
    let header = FrameHeader::new(
        request.api_key.get(),
        request.api_version.get(),
        FrameFlags(flags),
        request.correlation_id(),
        u32::try_from(reply.body.len()).expect("response body over 4 GiB"),
        u32::try_from(payload_len).expect("response payload over 4 GiB"),
    );
    let mut head = Vec::with_capacity(header.as_bytes().len() + reply.body.len());
    head.extend_from_slice(header.as_bytes());
    head.extend_from_slice(&reply.body);
    out.push(Bytes::from(head));
    out.extend(reply.payload);
}

mod groups;

#[cfg(test)]
mod tests;
