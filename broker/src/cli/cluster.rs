//! `fjord cluster status`: the nodes of the cluster as any one of them
//! sees it (Metadata lists every registered broker, fenced ones flagged),
//! which node is the active controller, the metadata log position of the
//! node asked, and how many partitions are under-replicated (ISR smaller
//! than the replica set) or offline (no leader). `--json` prints one JSON object (the shape
//! [`status_json`] documents) for scripts and tests.

use std::fmt::Write as _;
use std::io::{self, Write};

use clap::Subcommand;
use fjord_net::client::cluster::Endpoint;
use fjord_net::client::{Client, Metadata};

use super::{client_config, BrokersArg, CliError};

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show the nodes (endpoints, fenced or live, partitions led), the
    /// active controller and the metadata log position.
    Status {
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        brokers: BrokersArg,
    },
}

/// One node as `cluster status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub node: u32,
    pub native: String,
    pub kafka: Option<String>,
    pub fenced: bool,
    /// Partitions it leads.
    pub leaders: usize,
}

/// What `cluster status` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    /// `None` while no controller is known.
    pub controller: Option<u32>,
    pub applied: u64,
    pub committed: u64,
    /// By node id.
    pub nodes: Vec<NodeStatus>,
    /// Partitions of every topic, the internal ones included.
    pub partitions: usize,
    /// Partitions whose ISR is smaller than their replica set.
    pub under_replicated: usize,
    /// Partitions without a leader.
    pub offline: usize,
}

impl ClusterStatus {
    /// The status a Metadata answer for every topic shows.
    pub fn of(metadata: &Metadata) -> ClusterStatus {
        let mut nodes: Vec<NodeStatus> = metadata
            .brokers
            .iter()
            .map(|b| {
                let leaders = metadata
                    .topics
                    .iter()
                    .flat_map(|t| &t.partitions)
                    .filter(|p| i64::from(p.leader) == i64::from(b.node_id))
                    .count();
                let native = Endpoint {
                    host: b.host.clone(),
                    port: b.port,
                };
                NodeStatus {
                    node: b.node_id,
                    native: native.to_string(),
                    kafka: b.kafka.as_ref().map(Endpoint::to_string),
                    fenced: b.fenced,
                    leaders,
                }
            })
            .collect();
        nodes.sort_by_key(|n| n.node);
        let partitions: Vec<_> = metadata.topics.iter().flat_map(|t| &t.partitions).collect();
        ClusterStatus {
            controller: u32::try_from(metadata.controller_id).ok(),
            applied: metadata.metadata_applied_index,
            committed: metadata.metadata_committed_index,
            nodes,
            partitions: partitions.len(),
            under_replicated: partitions
                .iter()
                .filter(|p| p.isr.len() < p.replicas.len())
                .count(),
            offline: partitions.iter().filter(|p| p.leader < 0).count(),
        }
    }
}

/// `text` as a JSON string literal (RFC 8259 escaping).
fn json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `status` as one line of JSON:
/// `{"controller": N|null, "metadata_log": {"applied": I, "committed": C},
/// "partitions": {"total": P, "under_replicated": U, "offline": O},
/// "nodes": [{"node": N, "native": "h:p", "kafka": "h:p"|null,
/// "fenced": bool, "leaders": K}]}` (nodes by id; `controller` is null
/// while none is known).
pub fn status_json(status: &ClusterStatus) -> String {
    let mut out = String::new();
    out.push_str("{\"controller\": ");
    match status.controller {
        Some(node) => {
            let _ = write!(out, "{node}");
        }
        None => out.push_str("null"),
    }
    let _ = write!(
        out,
        ", \"metadata_log\": {{\"applied\": {}, \"committed\": {}}}, \
         \"partitions\": {{\"total\": {}, \"under_replicated\": {}, \"offline\": {}}}, \
         \"nodes\": [",
        status.applied,
        status.committed,
        status.partitions,
        status.under_replicated,
        status.offline
    );
    for (i, node) in status.nodes.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{{\"node\": {}, \"native\": ", node.node);
        json_string(&mut out, &node.native);
        out.push_str(", \"kafka\": ");
        match &node.kafka {
            Some(kafka) => json_string(&mut out, kafka),
            None => out.push_str("null"),
        }
        let _ = write!(
            out,
            ", \"fenced\": {}, \"leaders\": {}}}",
            node.fenced, node.leaders
        );
    }
    out.push_str("]}");
    out
}

/// `status` as a table.
pub fn status_text(status: &ClusterStatus) -> String {
    let mut out = String::new();
    let controller = status
        .controller
        .map_or_else(|| "none".to_owned(), |n| n.to_string());
    let _ = writeln!(out, "CONTROLLER    {controller}");
    let _ = writeln!(
        out,
        "METADATA LOG  applied {}, committed {}",
        status.applied, status.committed
    );
    let _ = writeln!(
        out,
        "PARTITIONS    {} ({} under-replicated, {} offline)\n",
        status.partitions, status.under_replicated, status.offline
    );
    let native_width = status
        .nodes
        .iter()
        .map(|n| n.native.len())
        .max()
        .unwrap_or(0)
        .max(6);
    let kafka_width = status
        .nodes
        .iter()
        .filter_map(|n| n.kafka.as_ref().map(String::len))
        .max()
        .unwrap_or(0)
        .max(5);
    let _ = writeln!(
        out,
        "NODE  {:native_width$}  {:kafka_width$}  STATUS  LEADERS",
        "NATIVE", "KAFKA"
    );
    for n in &status.nodes {
        let role = if Some(n.node) == status.controller {
            " (controller)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{:<4}  {:native_width$}  {:kafka_width$}  {:<6}  {}{role}",
            n.node,
            n.native,
            n.kafka.as_deref().unwrap_or("-"),
            if n.fenced { "fenced" } else { "live" },
            n.leaders,
        );
    }
    out
}

/// The first of `brokers` that answers: any node describes the cluster.
fn connect_any(brokers: &BrokersArg) -> Result<Client, CliError> {
    let mut last = None;
    for addr in brokers.list() {
        match Client::connect(addr.as_str(), client_config()) {
            Ok(client) => return Ok(client),
            Err(error) => last = Some(error),
        }
    }
    match last {
        Some(error) => Err(error.into()),
        None => Err(CliError::new("no broker given (--brokers)")),
    }
}

pub fn run(command: ClusterCommand) -> Result<(), CliError> {
    match command {
        ClusterCommand::Status { json, brokers } => {
            let metadata = connect_any(&brokers)?.metadata(None)?;
            let status = ClusterStatus::of(&metadata);
            let text = if json {
                status_json(&status) + "\n"
            } else {
                status_text(&status)
            };
            io::stdout()
                .lock()
                .write_all(text.as_bytes())
                .map_err(|e| CliError(format!("cannot write output: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use fjord_net::client::{BrokerInfo, PartitionInfo, TopicInfo};
    use fjord_schema::ErrorCode;

    use super::*;

    fn broker(node_id: u32, kafka: bool, fenced: bool) -> BrokerInfo {
        BrokerInfo {
            node_id,
            host: format!("n{node_id}"),
            port: 9000 + node_id as u16,
            shard_ports: Vec::new(),
            rack: None,
            kafka: kafka.then(|| Endpoint {
                host: format!("n{node_id}"),
                port: 9100 + node_id as u16,
            }),
            fenced,
        }
    }

    fn partition(partition: u32, leader: i32) -> PartitionInfo {
        PartitionInfo {
            error: ErrorCode::None,
            partition,
            leader,
            leader_epoch: 0,
            leader_shard: 0,
            replicas: Vec::new(),
            isr: Vec::new(),
        }
    }

    fn replicated(partition: u32, leader: i32, replicas: &[u32], isr: &[u32]) -> PartitionInfo {
        PartitionInfo {
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            ..self::partition(partition, leader)
        }
    }

    fn metadata() -> Metadata {
        Metadata {
            cluster_id: None,
            controller_id: 2,
            metadata_applied_index: 41,
            metadata_committed_index: 42,
            brokers: vec![
                broker(3, false, true),
                broker(1, true, false),
                broker(2, true, false),
            ],
            topics: vec![TopicInfo {
                error: ErrorCode::None,
                name: "t".into(),
                partitions: vec![
                    replicated(0, 1, &[1, 2, 3], &[1, 2, 3]),
                    replicated(1, 2, &[2, 3, 1], &[2, 1]),
                    partition(2, 1),
                    replicated(3, -1, &[3], &[3]),
                ],
            }],
        }
    }

    #[test]
    fn status_counts_leaders_per_node_and_names_the_controller() {
        let status = ClusterStatus::of(&metadata());
        assert_eq!(status.controller, Some(2));
        assert_eq!((status.applied, status.committed), (41, 42));
        let rows: Vec<(u32, bool, usize)> = status
            .nodes
            .iter()
            .map(|n| (n.node, n.fenced, n.leaders))
            .collect();
        assert_eq!(rows, [(1, false, 2), (2, false, 1), (3, true, 0)]);
        let text = status_text(&status);
        assert_eq!(
            (status.partitions, status.under_replicated, status.offline),
            (4, 1, 1)
        );
        assert!(
            text.starts_with(
                "CONTROLLER    2\nMETADATA LOG  applied 41, committed 42\n\
                 PARTITIONS    4 (1 under-replicated, 1 offline)\n\n"
            ),
            "{text}"
        );
        assert!(text.contains("n3:9003"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("3 ") && l.contains("fenced")),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("2 ") && l.ends_with("(controller)")),
            "{text}"
        );
    }

    #[test]
    fn status_json_is_the_documented_object() {
        let json = status_json(&ClusterStatus::of(&metadata()));
        assert_eq!(
            json,
            "{\"controller\": 2, \"metadata_log\": {\"applied\": 41, \"committed\": 42}, \
             \"partitions\": {\"total\": 4, \"under_replicated\": 1, \"offline\": 1}, \"nodes\": [\
             {\"node\": 1, \"native\": \"n1:9001\", \"kafka\": \"n1:9101\", \"fenced\": false, \"leaders\": 2}, \
             {\"node\": 2, \"native\": \"n2:9002\", \"kafka\": \"n2:9102\", \"fenced\": false, \"leaders\": 1}, \
             {\"node\": 3, \"native\": \"n3:9003\", \"kafka\": null, \"fenced\": true, \"leaders\": 0}]}"
        );
        let mut unknown = metadata();
        unknown.controller_id = -1;
        assert!(status_json(&ClusterStatus::of(&unknown)).starts_with("{\"controller\": null,"));
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut out = String::new();
        json_string(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, "\"a\\\"b\\\\c\\nd\\u0001é\"");
    }
}
