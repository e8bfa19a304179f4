//! Where each partition's requests go, from a Metadata answer: to the
//! node leading it (any node answers Metadata for the whole cluster, so
//! one bootstrap address reaches every leader), straight to the leader's
//! shard port when the broker exposes per-shard ports (no hop between
//! shards on the broker), else to its shared port. A partition whose
//! leader is unknown, unlisted or fenced has no route until the next
//! refresh.

use std::collections::HashMap;
use std::fmt;

use fjord_schema::{ErrorCode, PartitionId};

use super::Metadata;

/// A broker address (`host:port`), shard port or shared port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A topic as the client routes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRoute {
    /// Indexed by partition id; `None` while the partition has no usable
    /// leader.
    pub leaders: Vec<Option<Endpoint>>,
}

impl TopicRoute {
    pub fn partition_count(&self) -> u32 {
        self.leaders.len() as u32
    }

    pub fn leader(&self, partition: PartitionId) -> Option<&Endpoint> {
        self.leaders
            .get(partition.0 as usize)
            .and_then(Option::as_ref)
    }
}

/// What Metadata said about a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicState {
    Routed(TopicRoute),
    /// The broker reported an error for the whole topic.
    Error(ErrorCode),
}

/// Routes for every topic in a Metadata answer. With `shard_aware` off,
/// every partition goes to its leader's shared port.
pub fn routes(metadata: &Metadata, shard_aware: bool) -> HashMap<String, TopicState> {
    let mut out = HashMap::new();
    for topic in &metadata.topics {
        if topic.error != ErrorCode::None {
            out.insert(topic.name.clone(), TopicState::Error(topic.error));
            continue;
        }
        let count = topic
            .partitions
            .iter()
            .map(|p| p.partition as usize + 1)
            .max()
            .unwrap_or(0);
        let mut leaders = vec![None; count];
        for p in &topic.partitions {
            if p.error != ErrorCode::None || p.leader < 0 {
                continue;
            }
            let Some(broker) = metadata
                .brokers
                .iter()
                .find(|b| !b.fenced && i64::from(b.node_id) == i64::from(p.leader))
            else {
                continue;
            };
            let shard_port = shard_aware
                .then(|| broker.shard_ports.get(usize::from(p.leader_shard)).copied())
                .flatten()
                .filter(|port| *port != 0);
            leaders[p.partition as usize] = Some(Endpoint {
                host: broker.host.clone(),
                port: shard_port.unwrap_or(broker.port),
            });
        }
        out.insert(
            topic.name.clone(),
            TopicState::Routed(TopicRoute { leaders }),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{BrokerInfo, PartitionInfo, TopicInfo};

    fn partition(partition: u32, leader: i32, shard: u16) -> PartitionInfo {
        PartitionInfo {
            error: ErrorCode::None,
            partition,
            leader,
            leader_epoch: 0,
            leader_shard: shard,
            replicas: vec![leader as u32],
            isr: vec![leader as u32],
        }
    }

    fn metadata(shard_ports: Vec<u16>) -> Metadata {
        Metadata {
            cluster_id: None,
            controller_id: 0,
            metadata_applied_index: 0,
            metadata_committed_index: 0,
            brokers: vec![BrokerInfo {
                node_id: 0,
                host: "127.0.0.1".into(),
                port: 9192,
                shard_ports,
                rack: None,
                kafka: None,
                fenced: false,
            }],
            topics: vec![
                TopicInfo {
                    error: ErrorCode::None,
                    name: "t".into(),
                    partitions: vec![
                        partition(0, 0, 0),
                        partition(1, 0, 1),
                        partition(2, 5, 0),
                        PartitionInfo {
                            error: ErrorCode::LeaderNotAvailable,
                            ..partition(3, 0, 0)
                        },
                    ],
                },
                TopicInfo {
                    error: ErrorCode::UnknownTopicOrPartition,
                    name: "gone".into(),
                    partitions: vec![],
                },
            ],
        }
    }

    fn endpoint(port: u16) -> Option<Endpoint> {
        Some(Endpoint {
            host: "127.0.0.1".into(),
            port,
        })
    }

    #[test]
    fn partitions_route_to_their_leaders_shard_port() {
        let routes = routes(&metadata(vec![9300, 9301]), true);
        let TopicState::Routed(route) = &routes["t"] else {
            panic!("t is routed");
        };
        assert_eq!(route.partition_count(), 4);
        // Unknown leader node and partition errors leave no route.
        assert_eq!(
            route.leaders,
            vec![endpoint(9300), endpoint(9301), None, None]
        );
        assert_eq!(
            routes["gone"],
            TopicState::Error(ErrorCode::UnknownTopicOrPartition)
        );
    }

    #[test]
    fn without_shard_ports_everything_goes_to_the_shared_port() {
        for (ports, aware) in [(vec![], true), (vec![9300, 9301], false)] {
            let routes = routes(&metadata(ports), aware);
            let TopicState::Routed(route) = &routes["t"] else {
                panic!("t is routed");
            };
            assert_eq!(route.leader(PartitionId(0)), endpoint(9192).as_ref());
            assert_eq!(route.leader(PartitionId(1)), endpoint(9192).as_ref());
        }
    }

    /// Each partition goes to the node leading it (at that node's shared
    /// port: only its own shard ports are routed to), never to a fenced
    /// one.
    #[test]
    fn partitions_follow_their_leader_node() {
        let mut metadata = metadata(vec![9300, 9301]);
        let other = |node_id: u32, port: u16, fenced: bool| BrokerInfo {
            node_id,
            host: format!("n{node_id}"),
            port,
            shard_ports: Vec::new(),
            rack: None,
            kafka: None,
            fenced,
        };
        metadata.brokers.push(other(5, 9500, false));
        metadata.brokers.push(other(6, 9600, true));
        metadata.topics[0].partitions[1] = partition(1, 6, 0);
        let routes = routes(&metadata, true);
        let TopicState::Routed(route) = &routes["t"] else {
            panic!("t is routed");
        };
        let n5 = Endpoint {
            host: "n5".into(),
            port: 9500,
        };
        assert_eq!(
            route.leaders,
            vec![endpoint(9300), None, Some(n5), None],
            "partition 1's leader is fenced; partition 2's is node 5"
        );
    }

    #[test]
    fn endpoints_print_as_socket_addresses() {
        assert_eq!(endpoint(1).expect("some").to_string(), "127.0.0.1:1");
        let v6 = Endpoint {
            host: "::1".into(),
            port: 2,
        };
        assert_eq!(v6.to_string(), "[::1]:2");
    }
}
