//! The Kafka apis this listener answers, each declared once: its request
//! type, the versions served and how it is answered. The one table below
//! makes ApiVersions' list ([`KAFKA_APIS`]), the decoded request enum
//! ([`KafkaRequest`]), the body decode and the dispatch to the handler's
//! method, so adding an api is one row here (plus its handler method).

use bytes::{Bytes, BytesMut};
use fjord_net::driver::budget::BudgetHold;
use kafka_protocol::messages::{
    AlterConfigsRequest, ApiKey, ApiVersionsRequest, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteGroupsRequest, DeleteTopicsRequest, DescribeClusterRequest, DescribeConfigsRequest,
    DescribeGroupsRequest, ElectLeadersRequest, FetchRequest, FindCoordinatorRequest,
    HeartbeatRequest, IncrementalAlterConfigsRequest, InitProducerIdRequest, JoinGroupRequest,
    LeaveGroupRequest, ListGroupsRequest, ListOffsetsRequest, MetadataRequest, OffsetCommitRequest,
    OffsetFetchRequest, OffsetForLeaderEpochRequest, ProduceRequest, RequestHeader,
    SyncGroupRequest,
};
use kafka_protocol::protocol::Decodable;

use super::{
    admin, boxed, decode_error, encode, leaders, HandleError, KafkaHandler, UNSUPPORTED_VERSION,
};

/// What a request's answer may use besides the request.
pub(super) struct Context<'c, 'b> {
    pub(super) header: &'c RequestHeader,
    pub(super) version: i16,
    /// The request's frame size (held of the in-flight budget).
    pub(super) frame_len: usize,
    /// The request's hold of the shard's in-flight budget.
    pub(super) inflight: &'c mut BudgetHold<'b>,
    /// The response's hold of the shard's response budget.
    pub(super) response_hold: &'c mut BudgetHold<'b>,
}

impl Context<'_, '_> {
    fn client_id(&self) -> String {
        self.header
            .client_id
            .as_ref()
            .map_or_else(String::new, |c| c.to_string())
    }
}

/// An answer that is always sent.
fn answer<M>(response: M) -> Result<Option<M>, HandleError> {
    Ok(Some(response))
}

/// Decodes a request body as `T`.
fn decode_body<T: Decodable>(
    buf: &mut Bytes,
    version: i16,
    what: &'static str,
) -> Result<T, HandleError> {
    T::decode(buf, version)
        .map_err(boxed)
        .map_err(decode_error(what))
}

/// Each row: `Api(RequestType) min..=max => |handler, request, context|
/// answer`, the answer a `Result<Option<Response>, HandleError>` (`None`:
/// no response is due). The rows' order is ApiVersions' order.
macro_rules! kafka_apis {
    ($(
        $api:ident($request:ty) $min:literal..=$max:literal
            => |$this:ident, $req:ident, $cx:ident| $answer:expr;
    )*) => {
        /// The apis answered on the Kafka listener: (api, min version, max
        /// version).
        pub const KAFKA_APIS: [(ApiKey, i16, i16); [$(stringify!($api)),*].len()] =
            [$((ApiKey::$api, $min, $max)),*];

        /// A decoded request of an api and version in [`KAFKA_APIS`].
        #[derive(Debug)]
        pub enum KafkaRequest {
            /// ApiVersions at a version we do not serve: answered at v0
            /// with UNSUPPORTED_VERSION.
            UnsupportedApiVersions,
            $($api($request),)*
        }

        impl KafkaRequest {
            /// Decodes the body of a request of `api` (one of
            /// [`KAFKA_APIS`]) at a served `version`.
            pub(super) fn decode(
                api: ApiKey,
                buf: &mut Bytes,
                version: i16,
            ) -> Result<KafkaRequest, HandleError> {
                match api {
                    $(ApiKey::$api => Ok(KafkaRequest::$api(decode_body(
                        buf,
                        version,
                        stringify!($api),
                    )?)),)*
                    _ => Err(HandleError::Unsupported {
                        api_key: api as i16,
                        version,
                    }),
                }
            }
        }

        impl KafkaHandler {
            /// Answers a decoded request: its framed response, or `None`
            /// when none is due.
            pub(super) async fn answer(
                &self,
                request: KafkaRequest,
                context: &mut Context<'_, '_>,
            ) -> Result<Option<BytesMut>, HandleError> {
                let header = context.header;
                let version = context.version;
                match request {
                    KafkaRequest::UnsupportedApiVersions => {
                        // The client retries with a version this lists.
                        let response = self.api_versions_response(UNSUPPORTED_VERSION);
                        encode(header, ApiKey::ApiVersions, 0, &response).map(Some)
                    }
                    $(KafkaRequest::$api($req) => {
                        let $this = self;
                        let $cx = &mut *context;
                        match $answer? {
                            Some(response) => {
                                encode(header, ApiKey::$api, version, &response).map(Some)
                            }
                            None => Ok(None),
                        }
                    })*
                }
            }
        }
    };
}

kafka_apis! {
    Produce(ProduceRequest) 3..=9 => |h, request, cx| {
        let acks = request.acks;
        let response = h.produce(request, cx.inflight, cx.frame_len).await;
        Ok((acks != 0).then_some(response))
    };
    Fetch(FetchRequest) 4..=12 => |h, request, cx| answer(h.fetch(request, cx.version, cx.response_hold).await?);
    ListOffsets(ListOffsetsRequest) 1..=7 => |h, request, cx| answer(h.list_offsets(request, cx.version).await);
    Metadata(MetadataRequest) 1..=12 => |h, request, cx| answer(h.metadata(request, cx.version).await);
    OffsetCommit(OffsetCommitRequest) 2..=8 => |h, request, cx| answer(h.offset_commit(request, cx.version).await);
    OffsetFetch(OffsetFetchRequest) 1..=8 => |h, request, cx| answer(h.offset_fetch(request, cx.version).await);
    FindCoordinator(FindCoordinatorRequest) 0..=4 => |h, request, cx| answer(h.find_coordinator(request, cx.version));
    JoinGroup(JoinGroupRequest) 0..=9 => |h, request, cx| answer(h.join_group(request, cx.version, cx.client_id()).await);
    Heartbeat(HeartbeatRequest) 0..=4 => |h, request, _cx| answer(h.heartbeat(request).await);
    LeaveGroup(LeaveGroupRequest) 0..=5 => |h, request, cx| answer(h.leave_group(request, cx.version).await);
    SyncGroup(SyncGroupRequest) 0..=5 => |h, request, cx| answer(h.sync_group(request, cx.version).await);
    DescribeGroups(DescribeGroupsRequest) 0..=5 => |h, request, cx| answer(h.describe_groups(request, cx.version).await);
    ListGroups(ListGroupsRequest) 0..=4 => |h, request, _cx| answer(h.list_groups(request).await);
    ApiVersions(ApiVersionsRequest) 0..=3 => |h, _request, _cx| answer(h.api_versions_response(0));
    CreateTopics(CreateTopicsRequest) 2..=7 => |h, request, _cx| answer(h.create_topics(request).await);
    DeleteTopics(DeleteTopicsRequest) 1..=6 => |h, request, _cx| answer(h.delete_topics(request).await);
    DeleteGroups(DeleteGroupsRequest) 0..=2 => |h, request, _cx| answer(h.delete_groups(request).await);
    InitProducerId(InitProducerIdRequest) 0..=4 => |h, request, _cx| answer(h.init_producer_id(request).await);
    DescribeConfigs(DescribeConfigsRequest) 1..=4 => |h, request, _cx| answer(admin::describe_configs(&h.engine, request));
    AlterConfigs(AlterConfigsRequest) 0..=2 => |h, request, _cx| answer(admin::alter_configs(&h.engine, request).await);
    IncrementalAlterConfigs(IncrementalAlterConfigsRequest) 0..=1 => |h, request, _cx| answer(admin::incremental_alter_configs(&h.engine, request).await);
    CreatePartitions(CreatePartitionsRequest) 0..=3 => |h, request, _cx| answer(admin::create_partitions(&h.engine, request).await);
    DescribeCluster(DescribeClusterRequest) 0..=1 => |h, request, cx| answer(admin::describe_cluster(&h.engine, request, cx.version));
    OffsetForLeaderEpoch(OffsetForLeaderEpochRequest) 2..=4 => |h, request, _cx| answer(leaders::offset_for_leader_epoch(&h.engine, request).await);
    ElectLeaders(ElectLeadersRequest) 0..=2 => |h, request, cx| answer(leaders::elect_leaders(&h.engine, request, cx.version).await);
}
