//! `fjord topic elect-leaders`: preferred or unclean leader elections
//! (Kafka's `kafka-leader-election.sh`). The CLI speaks this one request
//! as Kafka's ElectLeaders (api 43) to the Kafka listener of a node it
//! finds through the native Metadata answer (the node asked, else the
//! first live one with a Kafka listener): the native protocol has no
//! election api, and Kafka's request already says everything this needs
//! (see ARCHITECTURE.md "Decisions"). Any node answers: it forwards to
//! the active controller and replies once it applied the new leaders.
//!
//! Output: one line per partition (`TOPIC PARTITION RESULT [message]`);
//! the exit status fails when any partition's election failed for
//! another reason than "not needed".

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use clap::ValueEnum;
use fjord_net::client::{Client, Metadata};
use fjord_schema::ErrorCode;
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::{
    ApiKey, ElectLeadersRequest, ElectLeadersResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::{client_config, code_name, BrokersArg, CliError};

/// The ElectLeaders version spoken (the newest the broker serves).
const VERSION: i16 = 2;

/// Largest response accepted: one result per partition of the cluster,
/// generously.
const RESPONSE_BYTES_MAX: usize = 64 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ElectionType {
    /// Move leadership to each partition's first replica where it is live
    /// and in the ISR.
    Preferred,
    /// Elect a leader for partitions without one, from outside the ISR if
    /// no member is live (may lose acknowledged records).
    Unclean,
}

impl ElectionType {
    fn wire(self) -> i8 {
        match self {
            ElectionType::Preferred => 0,
            ElectionType::Unclean => 1,
        }
    }

    fn name(self) -> &'static str {
        match self {
            ElectionType::Preferred => "PREFERRED",
            ElectionType::Unclean => "UNCLEAN",
        }
    }
}

/// What to elect: every partition, a topic's, or one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub topic: Option<String>,
    pub partition: Option<u32>,
}

/// The request for `target` (`metadata` gives a topic's partitions).
pub fn request(
    target: &Target,
    kind: ElectionType,
    metadata: &Metadata,
    timeout: Duration,
) -> Result<ElectLeadersRequest, CliError> {
    let mut request = ElectLeadersRequest::default();
    request.election_type = kind.wire();
    request.timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // Null: every partition (the default is an empty list: none).
    request.topic_partitions = None;
    let Some(topic) = &target.topic else {
        if target.partition.is_some() {
            return Err(CliError::new("--partition needs --topic"));
        }
        return Ok(request);
    };
    let partitions: Vec<i32> = match target.partition {
        Some(p) => vec![i32::try_from(p)
            .map_err(|_| CliError::new(format!("partition {p} is out of range")))?],
        None => {
            let info = metadata
                .topics
                .iter()
                .find(|t| t.name == *topic && t.error == ErrorCode::None)
                .ok_or_else(|| {
                    CliError(super::topic_error(
                        topic,
                        ErrorCode::UnknownTopicOrPartition,
                    ))
                })?;
            info.partitions.iter().map(|p| p.partition as i32).collect()
        }
    };
    let mut t = TopicPartitions::default();
    t.topic = TopicName(StrBytes::from_string(topic.clone()));
    t.partitions = partitions;
    request.topic_partitions = Some(vec![t]);
    Ok(request)
}

/// The Kafka listener to send to: the node whose native endpoint is
/// `asked`, else the first live node with one.
pub fn kafka_endpoint(metadata: &Metadata, asked: &str) -> Result<String, CliError> {
    let live = metadata.brokers.iter().filter(|b| !b.fenced);
    let same = live
        .clone()
        .find(|b| format!("{}:{}", b.host, b.port) == asked)
        .and_then(|b| b.kafka.as_ref());
    same.or_else(|| live.filter_map(|b| b.kafka.as_ref()).next())
        .map(ToString::to_string)
        .ok_or_else(|| {
            CliError::new(
                "no live node has a Kafka listener; elect-leaders speaks Kafka's ElectLeaders \
                 (start the nodes with --kafka-listen)",
            )
        })
}

/// The lines `elect-leaders` prints, and whether every election
/// succeeded or was not needed.
pub fn report(response: &ElectLeadersResponse, kind: ElectionType) -> (String, bool) {
    let mut out = String::new();
    let mut ok = true;
    if response.error_code != 0 {
        ok = false;
        out.push_str(&format!(
            "the request failed: {}\n",
            code_name(ErrorCode::from_code(response.error_code))
        ));
    }
    let mut rows: Vec<(String, i32, i16, Option<String>)> = response
        .replica_election_results
        .iter()
        .flat_map(|t| {
            t.partition_result.iter().map(|p| {
                (
                    t.topic.0.to_string(),
                    p.partition_id,
                    p.error_code,
                    p.error_message.as_ref().map(ToString::to_string),
                )
            })
        })
        .collect();
    rows.sort();
    if rows.is_empty() && response.error_code == 0 {
        out.push_str(&format!(
            "no partition needed an election ({})\n",
            kind.name()
        ));
    }
    for (topic, partition, code, message) in rows {
        let code = ErrorCode::from_code(code);
        let result = match code {
            ErrorCode::None => format!("elected ({})", kind.name()),
            other => code_name(other),
        };
        if !matches!(code, ErrorCode::None | ErrorCode::ElectionNotNeeded) {
            ok = false;
        }
        let message = message.map(|m| format!(" ({m})")).unwrap_or_default();
        out.push_str(&format!("{topic} {partition} {result}{message}\n"));
    }
    (out, ok)
}

/// Sends `request` to the Kafka listener at `addr` and reads the answer.
fn send(
    addr: &str,
    request: &ElectLeadersRequest,
    timeout: Duration,
) -> Result<ElectLeadersResponse, CliError> {
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        CliError::new(format!("ElectLeaders to {addr}: {what}: {e}"))
    };
    let socket = addr
        .to_socket_addrs()
        .map_err(|e| failed("cannot resolve", &e))?
        .next()
        .ok_or_else(|| CliError::new(format!("cannot resolve {addr}")))?;
    let mut stream =
        TcpStream::connect_timeout(&socket, timeout).map_err(|e| failed("cannot connect", &e))?;
    // The broker answers once the controller committed and it applied the
    // elections; the socket waits a little longer than the request may.
    let wait = timeout + Duration::from_secs(5);
    stream
        .set_read_timeout(Some(wait))
        .and_then(|()| stream.set_write_timeout(Some(wait)))
        .map_err(|e| failed("socket", &e))?;
    let mut header = RequestHeader::default();
    header.request_api_key = ApiKey::ElectLeaders as i16;
    header.request_api_version = VERSION;
    header.correlation_id = 1;
    header.client_id = Some(StrBytes::from_static_str("fjord-cli"));
    let mut body = BytesMut::new();
    body.put_u32(0);
    header
        .encode(
            &mut body,
            ApiKey::ElectLeaders.request_header_version(VERSION),
        )
        .and_then(|()| request.encode(&mut body, VERSION))
        .map_err(|e| failed("cannot encode", &e))?;
    let len = u32::try_from(body.len() - 4).map_err(|e| failed("request too large", &e))?;
    body[..4].copy_from_slice(&len.to_be_bytes());
    stream
        .write_all(&body)
        .map_err(|e| failed("cannot send", &e))?;
    let mut prefix = [0u8; 4];
    stream
        .read_exact(&mut prefix)
        .map_err(|e| failed("no answer", &e))?;
    let len = u32::from_be_bytes(prefix) as usize;
    if len > RESPONSE_BYTES_MAX {
        return Err(CliError::new(format!(
            "ElectLeaders to {addr}: a response of {len} bytes is over {RESPONSE_BYTES_MAX}"
        )));
    }
    let mut frame = vec![0u8; len];
    stream
        .read_exact(&mut frame)
        .map_err(|e| failed("truncated answer", &e))?;
    let mut frame = Bytes::from(frame);
    let response_header = ResponseHeader::decode(
        &mut frame,
        ApiKey::ElectLeaders.response_header_version(VERSION),
    )
    .map_err(|e| failed("undecodable answer", &e))?;
    if response_header.correlation_id != 1 {
        return Err(CliError::new(format!(
            "ElectLeaders to {addr}: answer to another request ({})",
            response_header.correlation_id
        )));
    }
    let response = ElectLeadersResponse::decode(&mut frame, VERSION)
        .map_err(|e| failed("undecodable answer", &e))?;
    if frame.has_remaining() {
        return Err(CliError::new(format!(
            "ElectLeaders to {addr}: {} bytes after the answer",
            frame.remaining()
        )));
    }
    Ok(response)
}

/// `fjord topic elect-leaders`.
pub fn run(target: Target, kind: ElectionType, brokers: &BrokersArg) -> Result<(), CliError> {
    let config = client_config();
    let mut last = None;
    let mut found = None;
    for addr in brokers.list() {
        match Client::connect(addr.as_str(), config.clone()) {
            Ok(mut client) => {
                found = Some((addr, client.metadata(None)?));
                break;
            }
            Err(error) => last = Some(error),
        }
    }
    let Some((asked, metadata)) = found else {
        return Err(match last {
            Some(error) => error.into(),
            None => CliError::new("no broker given (--brokers)"),
        });
    };
    let request = request(&target, kind, &metadata, config.timeout)?;
    let endpoint = kafka_endpoint(&metadata, &asked)?;
    let response = send(&endpoint, &request, config.timeout)?;
    let (text, ok) = report(&response, kind);
    io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .map_err(super::output_error)?;
    if ok {
        Ok(())
    } else {
        Err(CliError::new("some elections failed"))
    }
}

#[cfg(test)]
mod tests {
    use fjord_net::client::cluster::Endpoint;
    use fjord_net::client::{BrokerInfo, PartitionInfo, TopicInfo};
    use kafka_protocol::messages::elect_leaders_response::{
        PartitionResult, ReplicaElectionResult,
    };

    use super::*;

    fn metadata() -> Metadata {
        let broker = |node_id: u32, fenced: bool, kafka: bool| BrokerInfo {
            node_id,
            host: "h".into(),
            port: 9000 + node_id as u16,
            shard_ports: Vec::new(),
            rack: None,
            kafka: kafka.then(|| Endpoint {
                host: "h".into(),
                port: 9100 + node_id as u16,
            }),
            fenced,
        };
        let partition = |partition| PartitionInfo {
            error: ErrorCode::None,
            partition,
            leader: 1,
            leader_epoch: 0,
            leader_shard: 0,
            replicas: vec![1],
            isr: vec![1],
        };
        Metadata {
            cluster_id: None,
            controller_id: 1,
            metadata_applied_index: 1,
            metadata_committed_index: 1,
            brokers: vec![
                broker(1, true, true),
                broker(2, false, false),
                broker(3, false, true),
            ],
            topics: vec![TopicInfo {
                error: ErrorCode::None,
                name: "t".into(),
                partitions: vec![partition(1), partition(0)],
            }],
        }
    }

    fn asked(request: &ElectLeadersRequest) -> Option<Vec<(String, Vec<i32>)>> {
        request.topic_partitions.as_ref().map(|topics| {
            topics
                .iter()
                .map(|t| (t.topic.0.to_string(), t.partitions.clone()))
                .collect()
        })
    }

    #[test]
    fn the_target_becomes_every_partition_a_topics_or_one() {
        let timeout = Duration::from_secs(30);
        let target = |topic: Option<&str>, partition| Target {
            topic: topic.map(str::to_owned),
            partition,
        };
        let all = request(
            &target(None, None),
            ElectionType::Unclean,
            &metadata(),
            timeout,
        )
        .expect("valid");
        assert_eq!((all.election_type, asked(&all)), (1, None));
        assert_eq!(all.timeout_ms, 30_000);
        let topic = request(
            &target(Some("t"), None),
            ElectionType::Preferred,
            &metadata(),
            timeout,
        )
        .expect("valid");
        assert_eq!(
            (topic.election_type, asked(&topic)),
            (0, Some(vec![("t".to_owned(), vec![1, 0])]))
        );
        let one = request(
            &target(Some("t"), Some(4)),
            ElectionType::Preferred,
            &metadata(),
            timeout,
        )
        .expect("valid");
        assert_eq!(asked(&one), Some(vec![("t".to_owned(), vec![4])]));
        let unknown = request(
            &target(Some("x"), None),
            ElectionType::Preferred,
            &metadata(),
            timeout,
        )
        .expect_err("no topic x");
        assert_eq!(unknown.0, "topic x does not exist");
        let partition_alone = request(
            &target(None, Some(0)),
            ElectionType::Preferred,
            &metadata(),
            timeout,
        )
        .expect_err("needs a topic");
        assert_eq!(partition_alone.0, "--partition needs --topic");
    }

    #[test]
    fn the_kafka_endpoint_is_the_asked_nodes_else_a_live_ones() {
        let metadata = metadata();
        assert_eq!(
            kafka_endpoint(&metadata, "h:9003").expect("node 3"),
            "h:9103"
        );
        // Node 1 is fenced, node 2 has no Kafka listener: node 3's.
        assert_eq!(
            kafka_endpoint(&metadata, "h:9001").expect("node 3"),
            "h:9103"
        );
        assert_eq!(
            kafka_endpoint(&metadata, "h:9002").expect("node 3"),
            "h:9103"
        );
        let mut none = metadata.clone();
        none.brokers.retain(|b| b.node_id != 3);
        let error = kafka_endpoint(&none, "h:9002").expect_err("no listener");
        assert!(error.0.contains("--kafka-listen"), "{}", error.0);
    }

    #[test]
    fn the_report_names_each_partition_and_fails_on_real_errors() {
        let result = |partition_id, code: ErrorCode, message: Option<&str>| {
            let mut p = PartitionResult::default();
            p.partition_id = partition_id;
            p.error_code = code.code();
            p.error_message = message.map(|m| StrBytes::from_string(m.to_owned()));
            p
        };
        let mut response = ElectLeadersResponse::default();
        let mut t = ReplicaElectionResult::default();
        t.topic = TopicName(StrBytes::from_static_str("t"));
        t.partition_result = vec![
            result(1, ErrorCode::ElectionNotNeeded, None),
            result(0, ErrorCode::None, None),
        ];
        response.replica_election_results = vec![t.clone()];
        let (text, ok) = report(&response, ElectionType::Preferred);
        assert_eq!(text, "t 0 elected (PREFERRED)\nt 1 ELECTION_NOT_NEEDED\n");
        assert!(ok);
        t.partition_result.push(result(
            2,
            ErrorCode::PreferredLeaderNotAvailable,
            Some("the preferred leader 3 is not live"),
        ));
        response.replica_election_results = vec![t];
        let (text, ok) = report(&response, ElectionType::Preferred);
        assert!(
            text.ends_with(
                "t 2 PREFERRED_LEADER_NOT_AVAILABLE (the preferred leader 3 is not live)\n"
            ),
            "{text}"
        );
        assert!(!ok);
        let (text, ok) = report(&ElectLeadersResponse::default(), ElectionType::Unclean);
        assert_eq!(text, "no partition needed an election (UNCLEAN)\n");
        assert!(ok);
    }
}
