//! Request dispatch: turns one decoded request frame into one response
//! frame. Requests that do not decode, and apis this broker does not serve
//! yet, get an ERROR-flagged frame with an `ErrorResponse` body.

use std::sync::Arc;

use bytes::BytesMut;
use fjord_net::driver::Service;
use fjord_schema::api::{decode_request, ApiKey, Request, SUPPORTED_VERSIONS};
use fjord_schema::frame::{encode_frame, Frame, FrameFlags};
use fjord_schema::{wire, ErrorCode, NodeId, ShardId};
use flatbuffers::FlatBufferBuilder;

/// Apis this broker answers. ApiVersions lists only these, so a client
/// never sees an api it would be refused.
pub const SERVED_APIS: [ApiKey; 2] = [ApiKey::ApiVersions, ApiKey::Metadata];

/// Versions answered, per served api: `SUPPORTED_VERSIONS` restricted to
/// [`SERVED_APIS`].
pub fn served_versions() -> impl Iterator<Item = (ApiKey, u16, u16)> {
    SUPPORTED_VERSIONS
        .into_iter()
        .filter(|(key, _, _)| SERVED_APIS.contains(key))
}

/// What Metadata says about this broker; fixed once every shard is bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerView {
    pub node_id: NodeId,
    pub host: String,
    pub port: u16,
    /// Per-shard ports indexed by shard id; empty when not exposed.
    pub shard_ports: Vec<u16>,
}

/// Answers requests on one shard.
///
/// Lives on: every shard, one instance shared by that shard's connections.
/// Owns: nothing mutable yet (the broker view is shared, read-only).
/// Lifecycle: created when the shard starts serving, dropped with the last
/// connection after the shard stops.
#[derive(Debug)]
pub struct Dispatcher {
    broker: Arc<BrokerView>,
    shard: ShardId,
}

impl Service for Dispatcher {
    async fn call(&self, frame: Frame, out: &mut BytesMut) {
        self.respond(&frame, out);
    }
}

impl Dispatcher {
    pub fn new(broker: Arc<BrokerView>, shard: ShardId) -> Dispatcher {
        Dispatcher { broker, shard }
    }

    /// Appends the response to `frame` to `out` (nothing if the request
    /// asked for none).
    pub fn respond(&self, frame: &Frame, out: &mut BytesMut) {
        let header = &frame.header;
        let mut fbb = FlatBufferBuilder::new();
        let mut flags = FrameFlags::RESPONSE;
        match decode_request(frame) {
            Ok(Request::ApiVersions(_)) => self.api_versions(&mut fbb),
            Ok(Request::Metadata(request)) => self.metadata(&mut fbb, request),
            Ok(_) => {
                let key = header.api_key.get();
                tracing::debug!(shard = %self.shard, api_key = key, "api not served");
                flags |= FrameFlags::ERROR;
                error_body(
                    &mut fbb,
                    ErrorCode::UnsupportedVersion,
                    &format!("api key {key} is not served by this broker yet"),
                );
            }
            Err(error) => {
                tracing::debug!(shard = %self.shard, %error, "undecodable request");
                flags |= FrameFlags::ERROR;
                error_body(&mut fbb, error.error_code(), &error.to_string());
            }
        }
        if header.flags().no_response() {
            return;
        }
        encode_frame(
            out,
            header.api_key.get(),
            header.api_version.get(),
            FrameFlags(flags),
            header.correlation_id(),
            fbb.finished_data(),
            &[],
        );
    }

    fn api_versions(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let ranges: Vec<wire::ApiVersionRange> = served_versions()
            .map(|(key, min, max)| wire::ApiVersionRange::new(key as u16, min, max))
            .collect();
        let api_versions = fbb.create_vector(&ranges);
        let version = fbb.create_string(env!("CARGO_PKG_VERSION"));
        let response = wire::ApiVersionsResponse::create(
            fbb,
            &wire::ApiVersionsResponseArgs {
                error_code: ErrorCode::None.code(),
                api_versions: Some(api_versions),
                broker_software_version: Some(version),
            },
        );
        fbb.finish(response, None);
    }

    fn metadata(&self, fbb: &mut FlatBufferBuilder<'_>, request: wire::MetadataRequest<'_>) {
        let broker = &self.broker;
        let host = fbb.create_string(&broker.host);
        let shard_ports = fbb.create_vector(&broker.shard_ports);
        let this = wire::BrokerMetadata::create(
            fbb,
            &wire::BrokerMetadataArgs {
                node_id: broker.node_id.get(),
                host: Some(host),
                port: broker.port,
                shard_ports: Some(shard_ports),
                rack: None,
            },
        );
        let brokers = fbb.create_vector(&[this]);
        // No topics exist yet: "all topics" is empty and every named topic
        // is unknown.
        let topics: Vec<_> = request
            .topics()
            .iter()
            .flatten()
            .map(|name| {
                let name = fbb.create_string(name);
                wire::TopicMetadata::create(
                    fbb,
                    &wire::TopicMetadataArgs {
                        error_code: ErrorCode::UnknownTopicOrPartition.code(),
                        name: Some(name),
                        is_internal: false,
                        partitions: None,
                    },
                )
            })
            .collect();
        let topics = fbb.create_vector(&topics);
        let response = wire::MetadataResponse::create(
            fbb,
            &wire::MetadataResponseArgs {
                throttle_time_ms: 0,
                cluster_id: None,
                // A single node is its own controller.
                controller_id: broker.node_id.get() as i32,
                brokers: Some(brokers),
                topics: Some(topics),
            },
        );
        fbb.finish(response, None);
    }
}

fn error_body(fbb: &mut FlatBufferBuilder<'_>, code: ErrorCode, message: &str) {
    let message = fbb.create_string(message);
    let body = wire::ErrorResponse::create(
        fbb,
        &wire::ErrorResponseArgs {
            error_code: code.code(),
            message: Some(message),
        },
    );
    fbb.finish(body, None);
}

#[cfg(test)]
mod tests;
