//! `fjord group list|describe|reset-offsets`: consumer groups seen through
//! the group apis (ListGroups, DescribeGroups, OffsetFetch, OffsetCommit)
//! and ListOffsets for the lag. Any node of `--brokers` is a way in: group
//! requests go to the group's coordinator, ListOffsets to each
//! partition's leader, ListGroups to every live node.

use std::collections::BTreeMap;
use std::io::{self, Write};

use clap::Subcommand;
use fjord_net::client::cluster::{routes, Endpoint, TopicState};
use fjord_net::client::consumer_protocol::decode_assignment;
use fjord_net::client::group::{Committer, OffsetToCommit};
use fjord_net::client::protocol::{LIST_OFFSETS_EARLIEST, LIST_OFFSETS_LATEST};
use fjord_net::client::Client;
use fjord_schema::{ErrorCode, PartitionId};

use super::{client_config, BrokersArg, CliError};

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List consumer groups with their state.
    List {
        #[command(flatten)]
        brokers: BrokersArg,
    },
    /// Show a group's state, members and assignments, committed offsets
    /// and lag per partition.
    Describe {
        group: String,
        #[command(flatten)]
        brokers: BrokersArg,
    },
    /// Move a group's committed offsets of one topic; only while the group
    /// has no members (as Kafka).
    ResetOffsets {
        group: String,
        #[arg(long, short = 't')]
        topic: String,
        /// earliest, latest or an offset.
        #[arg(long)]
        to: String,
        #[command(flatten)]
        brokers: BrokersArg,
    },
}

fn connect(brokers: &BrokersArg) -> Result<Client, CliError> {
    Ok(Client::connect(brokers.first().as_str(), client_config())?)
}

/// A connection to `group`'s coordinator, found through any node.
fn connect_coordinator(brokers: &BrokersArg, group: &str) -> Result<Client, CliError> {
    let info = connect(brokers)?.find_coordinator(group)?;
    if info.error != ErrorCode::None {
        return Err(CliError(format!(
            "group {group}: no coordinator ({:?})",
            info.error
        )));
    }
    Ok(Client::connect(
        (info.host.as_str(), info.port),
        client_config(),
    )?)
}

/// Every live node's native endpoint, from any node's Metadata.
fn live_nodes(client: &mut Client) -> Result<Vec<Endpoint>, CliError> {
    Ok(client
        .metadata(Some(&[]))?
        .brokers
        .into_iter()
        .filter(|b| !b.fenced)
        .map(|b| Endpoint {
            host: b.host,
            port: b.port,
        })
        .collect())
}

fn write_err(error: io::Error) -> CliError {
    CliError(format!("cannot write output: {error}"))
}

/// Log end offsets of `partitions` of `topic`, each asked of its leader
/// (found through `client`'s Metadata); partitions without a reachable
/// leader are left out.
fn log_ends(
    client: &mut Client,
    topic: &str,
    partitions: &[u32],
    at: i64,
) -> Result<BTreeMap<u32, i64>, CliError> {
    let metadata = client.metadata(Some(&[topic]))?;
    let Some(TopicState::Routed(route)) = routes(&metadata, false).remove(topic) else {
        return Ok(BTreeMap::new());
    };
    let mut by_leader: BTreeMap<Endpoint, Vec<(PartitionId, i64)>> = BTreeMap::new();
    for p in partitions {
        if let Some(leader) = route.leader(PartitionId(*p)) {
            by_leader
                .entry(leader.clone())
                .or_default()
                .push((PartitionId(*p), at));
        }
    }
    let mut ends = BTreeMap::new();
    for (leader, asked) in by_leader {
        let Ok(mut leader) = Client::connect((leader.host.as_str(), leader.port), client_config())
        else {
            continue;
        };
        ends.extend(
            leader
                .list_offsets(topic, &asked)?
                .into_iter()
                .filter(|l| l.error == ErrorCode::None)
                .filter_map(|l| Some((l.partition.get(), l.offset?.get() as i64))),
        );
    }
    Ok(ends)
}

pub fn run(command: GroupCommand) -> Result<(), CliError> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match command {
        GroupCommand::List { brokers } => {
            // Each node lists the groups it coordinates: ask every live one.
            let mut bootstrap = connect(&brokers)?;
            let mut groups = Vec::new();
            for node in live_nodes(&mut bootstrap)? {
                let mut client = Client::connect((node.host.as_str(), node.port), client_config())?;
                groups.extend(client.list_groups()?);
            }
            groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
            groups.dedup_by(|a, b| a.group_id == b.group_id);
            writeln!(out, "{:<32} {:<20} PROTOCOL-TYPE", "GROUP", "STATE").map_err(write_err)?;
            for g in groups {
                writeln!(
                    out,
                    "{:<32} {:<20} {}",
                    g.group_id, g.state, g.protocol_type
                )
                .map_err(write_err)?;
            }
        }
        GroupCommand::Describe { group, brokers } => describe(&mut out, &group, &brokers)?,
        GroupCommand::ResetOffsets {
            group,
            topic,
            to,
            brokers,
        } => reset_offsets(&mut out, &group, &topic, &to, &brokers)?,
    }
    Ok(())
}

fn describe(out: &mut impl Write, group: &str, brokers: &BrokersArg) -> Result<(), CliError> {
    let mut client = connect_coordinator(brokers, group)?;
    let described = client
        .describe_groups(&[group])?
        .into_iter()
        .next()
        .ok_or_else(|| CliError::new("the broker did not describe the group"))?;
    if described.error != ErrorCode::None {
        return Err(CliError(format!("group {group}: {:?}", described.error)));
    }
    writeln!(
        out,
        "group {}  state {}  protocol {}/{}  members {}",
        described.group_id,
        described.state,
        described.protocol_type,
        described.protocol,
        described.members.len()
    )
    .map_err(write_err)?;
    let mut owner: BTreeMap<(String, u32), String> = BTreeMap::new();
    if !described.members.is_empty() {
        writeln!(
            out,
            "{:<48} {:<16} {:<16} PARTITIONS",
            "MEMBER", "INSTANCE", "CLIENT"
        )
        .map_err(write_err)?;
    }
    for m in &described.members {
        let assigned = decode_assignment(&m.assignment).unwrap_or_default();
        let listed: Vec<String> = assigned.iter().map(ToString::to_string).collect();
        for tp in assigned {
            owner.insert((tp.topic, tp.partition), m.member_id.clone());
        }
        writeln!(
            out,
            "{:<48} {:<16} {:<16} {}",
            m.member_id,
            m.instance_id.as_deref().unwrap_or("-"),
            m.client_id,
            listed.join(",")
        )
        .map_err(write_err)?;
    }
    let committed = client.offset_fetch(group, None)?;
    let mut by_topic: BTreeMap<String, BTreeMap<u32, i64>> = BTreeMap::new();
    for c in &committed {
        by_topic
            .entry(c.topic.clone())
            .or_default()
            .insert(c.partition, c.offset);
    }
    for (topic, partition) in owner.keys() {
        by_topic
            .entry(topic.clone())
            .or_default()
            .entry(*partition)
            .or_insert(-1);
    }
    writeln!(
        out,
        "{:<24} {:>9} {:>12} {:>12} {:>8} OWNER",
        "TOPIC", "PARTITION", "COMMITTED", "LOG-END", "LAG"
    )
    .map_err(write_err)?;
    for (topic, partitions) in by_topic {
        let ids: Vec<u32> = partitions.keys().copied().collect();
        let ends = log_ends(&mut client, &topic, &ids, LIST_OFFSETS_LATEST).unwrap_or_default();
        for (partition, offset) in partitions {
            let end = ends.get(&partition).copied();
            let show = |v: Option<i64>| v.map_or("-".to_owned(), |v| v.to_string());
            let lag = match (end, offset) {
                (Some(end), o) if o >= 0 => Some(end - o),
                _ => None,
            };
            writeln!(
                out,
                "{:<24} {:>9} {:>12} {:>12} {:>8} {}",
                topic,
                partition,
                show(Some(offset).filter(|o| *o >= 0)),
                show(end),
                show(lag),
                owner
                    .get(&(topic.clone(), partition))
                    .map_or("-", String::as_str)
            )
            .map_err(write_err)?;
        }
    }
    Ok(())
}

fn reset_offsets(
    out: &mut impl Write,
    group: &str,
    topic: &str,
    to: &str,
    brokers: &BrokersArg,
) -> Result<(), CliError> {
    let mut client = connect_coordinator(brokers, group)?;
    let described = client
        .describe_groups(&[group])?
        .into_iter()
        .next()
        .ok_or_else(|| CliError::new("the broker did not describe the group"))?;
    if !described.members.is_empty() {
        return Err(CliError(format!(
            "group {group} has {} active members (state {}); stop them first",
            described.members.len(),
            described.state
        )));
    }
    let metadata = client.metadata(Some(&[topic]))?;
    let info = metadata
        .topics
        .into_iter()
        .find(|t| t.name == topic && t.error == ErrorCode::None)
        .ok_or_else(|| CliError(format!("topic {topic} does not exist")))?;
    let ids: Vec<u32> = info.partitions.iter().map(|p| p.partition).collect();
    let targets: BTreeMap<u32, i64> = match to {
        "earliest" => log_ends(&mut client, topic, &ids, LIST_OFFSETS_EARLIEST)?,
        "latest" => log_ends(&mut client, topic, &ids, LIST_OFFSETS_LATEST)?,
        n => {
            let offset: i64 = n.parse().ok().filter(|o| *o >= 0).ok_or_else(|| {
                CliError(format!(
                    "--to {n:?}: expected earliest, latest or an offset"
                ))
            })?;
            ids.iter().map(|p| (*p, offset)).collect()
        }
    };
    let offsets: Vec<OffsetToCommit> = targets
        .iter()
        .map(|(partition, offset)| OffsetToCommit {
            topic: topic.to_owned(),
            partition: *partition,
            offset: *offset,
            leader_epoch: -1,
            metadata: String::new(),
        })
        .collect();
    let results = client.offset_commit(group, Committer::SIMPLE, &offsets)?;
    if let Some((_, partition, code)) = results.iter().find(|(_, _, c)| *c != ErrorCode::None) {
        return Err(CliError(format!(
            "group {group}: resetting {topic}-{partition} failed: {code:?}"
        )));
    }
    for (partition, offset) in targets {
        writeln!(out, "{topic} {partition} {offset}").map_err(write_err)?;
    }
    Ok(())
}
