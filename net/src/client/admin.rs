//! Topic administration: create, delete, list and describe (the latter two
//! from Metadata). Blocking, one connection to a bootstrap broker.

use fjord_schema::ErrorCode;

use super::protocol::{NewTopic, TopicResult};
use super::{BrokerInfo, Client, ClientConfig, ClientError, PartitionHealthInfo, TopicInfo};

/// A topic as `describe` shows it: its partitions, the brokers they name,
/// and the partitions with a storage problem (offline, damaged ranges).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    pub topic: TopicInfo,
    pub brokers: Vec<BrokerInfo>,
    pub health: Vec<PartitionHealthInfo>,
}

/// Admin client.
#[derive(Debug)]
pub struct Admin {
    client: Client,
    /// How long the broker may take for create/delete.
    pub timeout_ms: u32,
}

impl Admin {
    pub fn connect(bootstrap: &str, config: ClientConfig) -> Result<Admin, ClientError> {
        let timeout_ms = u32::try_from(config.timeout.as_millis()).unwrap_or(u32::MAX);
        Ok(Admin {
            client: Client::connect(bootstrap, config)?,
            timeout_ms,
        })
    }

    /// Creates topics; one result per topic.
    pub fn create_topics(&mut self, topics: &[NewTopic]) -> Result<Vec<TopicResult>, ClientError> {
        self.client.create_topics(topics, self.timeout_ms)
    }

    /// Creates one topic; its error (e.g. TOPIC_ALREADY_EXISTS) as `Err`.
    pub fn create_topic(&mut self, topic: NewTopic) -> Result<(), ClientError> {
        let name = topic.name.clone();
        let results = self.create_topics(&[topic])?;
        one_result(results, &name)
    }

    /// Deletes topics; one result per topic.
    pub fn delete_topics(&mut self, names: &[&str]) -> Result<Vec<TopicResult>, ClientError> {
        self.client.delete_topics(names, self.timeout_ms)
    }

    /// Deletes one topic; its error (e.g. UNKNOWN_TOPIC_OR_PARTITION) as `Err`.
    pub fn delete_topic(&mut self, name: &str) -> Result<(), ClientError> {
        let results = self.delete_topics(&[name])?;
        one_result(results, name)
    }

    /// Every topic, sorted by name (internal ones included).
    pub fn list_topics(&mut self) -> Result<Vec<TopicInfo>, ClientError> {
        let mut topics = self.client.metadata(None)?.topics;
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    /// One topic's partitions, leaders and shards.
    pub fn describe_topic(&mut self, name: &str) -> Result<TopicDescription, ClientError> {
        let (metadata, health) = self.client.metadata_with_health(Some(&[name]), false)?;
        let topic = metadata
            .topics
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| ClientError::Broker {
                code: ErrorCode::UnknownTopicOrPartition,
                message: format!("topic {name} is not in the metadata answer"),
            })?;
        if topic.error != ErrorCode::None {
            return Err(ClientError::Broker {
                code: topic.error,
                message: format!("topic {name}"),
            });
        }
        Ok(TopicDescription {
            topic,
            brokers: metadata.brokers,
            health,
        })
    }

    /// The underlying connection, for other requests.
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }
}

fn one_result(results: Vec<TopicResult>, name: &str) -> Result<(), ClientError> {
    match results.into_iter().find(|r| r.name == name) {
        Some(result) => result.into_result().map(|_| ()),
        None => Err(ClientError::Broker {
            code: ErrorCode::UnknownServerError,
            message: format!("no result for topic {name} in the answer"),
        }),
    }
}
