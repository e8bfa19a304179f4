//! Kafka's leadership apis on the Kafka listener: OffsetForLeaderEpoch
//! (api 23; clients validate their positions with it after a leader
//! change, KIP-320) and ElectLeaders (api 43; preferred or unclean
//! elections, asked by operators and admin tools). Each is a decode into
//! the engine's types, one engine call, an encode: OffsetForLeaderEpoch
//! runs on the partitions' owning shards
//! ([`Engine::offsets_for_leader_epoch`]), ElectLeaders on shard 0, which
//! asks the controller ([`Engine::elect_leaders`]).
//!
//! The conversions are free functions so tests check them without an
//! engine (`kafka/leaders_tests.rs`, a sibling: it also drives the
//! handler, which imports this module).

use std::collections::{HashMap, HashSet};

use fjord_schema::{ErrorCode, PartitionId};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    ElectLeadersRequest, ElectLeadersResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::engine::types::{leader_epoch_of, EpochEndResult, EpochQuery, TopicParts};
use crate::engine::Engine;
use crate::error::TopicOpError;
use crate::ops::ElectionOutcome;

/// Kafka's `ElectionType`.
pub const ELECTION_PREFERRED: i8 = 0;
pub const ELECTION_UNCLEAN: i8 = 1;

/// Answers an OffsetForLeaderEpoch: where each partition's asked epoch
/// ends in its leader's log. The replica id is not looked at: a consumer
/// (-1) and a follower get the same answer from the leader, and a
/// partition this node does not lead answers NOT_LEADER_OR_FOLLOWER
/// (Kafka answers followers' debugging requests, -2, from any replica;
/// nothing sends them to Fjord).
pub async fn offset_for_leader_epoch(
    engine: &Engine,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let results = engine
        .offsets_for_leader_epoch(epoch_queries(request))
        .await;
    epoch_response(results)
}

/// The engine's queries of a request, in its order. A negative partition
/// index cannot name a partition: it becomes one past every partition id,
/// which the engine answers UNKNOWN_TOPIC_OR_PARTITION.
pub fn epoch_queries(request: OffsetForLeaderEpochRequest) -> TopicParts<EpochQuery> {
    request
        .topics
        .into_iter()
        .map(|t| {
            let parts = t
                .partitions
                .into_iter()
                .map(|p| {
                    let query = EpochQuery {
                        current_leader_epoch: leader_epoch_of(p.current_leader_epoch),
                        // A negative epoch asks for no epoch; the largest
                        // epoch at or below it is none (UNDEFINED), as
                        // Kafka answers.
                        leader_epoch: fjord_schema::LeaderEpoch(
                            u32::try_from(p.leader_epoch).unwrap_or(0),
                        ),
                    };
                    (partition_of(p.partition), query)
                })
                .collect();
            (t.topic.0.to_string(), parts)
        })
        .collect()
}

/// A wire partition index; a negative one is no partition of any topic.
fn partition_of(wire: i32) -> PartitionId {
    PartitionId(u32::try_from(wire).unwrap_or(u32::MAX))
}

/// The wire index of a partition (`partition_of` inverted for the ids
/// it makes).
fn wire_partition(partition: PartitionId) -> i32 {
    i32::try_from(partition.get()).unwrap_or(-1)
}

/// The response of the engine's results, in request order.
pub fn epoch_response(results: TopicParts<EpochEndResult>) -> OffsetForLeaderEpochResponse {
    let mut response = OffsetForLeaderEpochResponse::default();
    for (name, parts) in results {
        let mut topic = OffsetForLeaderTopicResult::default();
        topic.topic = TopicName(StrBytes::from_string(name));
        for (partition, r) in parts {
            let mut p = EpochEndOffset::default();
            p.partition = wire_partition(partition);
            p.error_code = r.error.code();
            p.leader_epoch = r.leader_epoch;
            p.end_offset = r.end_offset;
            topic.partitions.push(p);
        }
        response.topics.push(topic);
    }
    response
}

/// Answers an ElectLeaders: the elections run through the controller, one
/// result per partition asked (every partition: those whose election was
/// needed). A request the controller could not answer gets its error on
/// every partition asked; an unknown election type is INVALID_REQUEST for
/// the whole request (v1+, else on every partition). The request's
/// `timeout_ms` is not used: as every admin request, it is answered once
/// the elections are committed and applied on this node, or
/// REQUEST_TIMED_OUT after the broker's own wait (`service::APPLY_WAIT`).
pub async fn elect_leaders(
    engine: &Engine,
    request: ElectLeadersRequest,
    version: i16,
) -> ElectLeadersResponse {
    let asked = asked_partitions(&request);
    // v0 has no election type: preferred.
    let preferred = match (version, request.election_type) {
        (0, _) | (_, ELECTION_PREFERRED) => true,
        (_, ELECTION_UNCLEAN) => false,
        (_, other) => {
            let message = format!("unknown election type {other} (0 preferred, 1 unclean)");
            return refused(asked, ErrorCode::InvalidRequest, message, version);
        }
    };
    match engine.elect_leaders(asked.clone(), preferred).await {
        Ok(outcomes) => elect_response(outcomes),
        Err(error) => refused_by(asked, &error, version),
    }
}

/// The partitions a request names by topic (`None`: every partition),
/// duplicates dropped (asked twice, elected once).
pub fn asked_partitions(request: &ElectLeadersRequest) -> Option<Vec<(String, Vec<u32>)>> {
    let topics = request.topic_partitions.as_ref()?;
    // Hashed, not searched: a request may name `request_elements_max`
    // topics and partitions.
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(topics.len());
    let mut seen: HashSet<(usize, u32)> = HashSet::new();
    let mut asked: Vec<(String, Vec<u32>)> = Vec::with_capacity(topics.len());
    for t in topics {
        let name = t.topic.0.as_str();
        let at = *index.entry(name).or_insert_with(|| {
            asked.push((name.to_owned(), Vec::new()));
            asked.len() - 1
        });
        for p in &t.partitions {
            let id = partition_of(*p).get();
            if seen.insert((at, id)) {
                asked[at].1.push(id);
            }
        }
    }
    Some(asked)
}

/// The response of the elections' outcomes, grouped by topic in the
/// order topics first appear.
pub fn elect_response(outcomes: Vec<ElectionOutcome>) -> ElectLeadersResponse {
    let mut response = ElectLeadersResponse::default();
    let mut topics: HashMap<String, usize> = HashMap::new();
    for outcome in outcomes {
        let results = &mut response.replica_election_results;
        let index = *topics.entry(outcome.topic).or_insert_with_key(|name| {
            let mut topic = ReplicaElectionResult::default();
            topic.topic = TopicName(StrBytes::from_string(name.clone()));
            results.push(topic);
            results.len() - 1
        });
        let mut p = PartitionResult::default();
        p.partition_id = wire_partition(PartitionId(outcome.partition));
        p.error_code = outcome.error.code();
        p.error_message = outcome.message.map(StrBytes::from_string);
        response.replica_election_results[index]
            .partition_result
            .push(p);
    }
    response
}

/// Every asked partition refused for `error` (the controller gave no
/// answer); asked for every partition, the request's error (v1+).
fn refused_by(
    asked: Option<Vec<(String, Vec<u32>)>>,
    error: &TopicOpError,
    version: i16,
) -> ElectLeadersResponse {
    refused(asked, error.code(), error.to_string(), version)
}

fn refused(
    asked: Option<Vec<(String, Vec<u32>)>>,
    code: ErrorCode,
    message: String,
    version: i16,
) -> ElectLeadersResponse {
    let outcomes: Vec<ElectionOutcome> = asked
        .into_iter()
        .flatten()
        .flat_map(|(topic, ids)| {
            let message = message.clone();
            ids.into_iter().map(move |partition| ElectionOutcome {
                topic: topic.clone(),
                partition,
                error: code,
                message: Some(message.clone()),
            })
        })
        .collect();
    let mut response = elect_response(outcomes);
    if version >= 1 {
        // The request's own error exists from v1.
        response.error_code = code.code();
    }
    response
}
