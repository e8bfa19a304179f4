//! The client subcommands of `fjord`: `topic create/list/describe/delete/elect-leaders`,
//! `produce`, `consume`, `group ...` and `cluster status`, in the spirit of rpk and kcat. Scripts rely on
//! these spellings and output formats; change them only on purpose.
//!
//! Every failure becomes one line on stderr (`fjord: ...`) and a non-zero
//! exit; connection failures say how to start a broker.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, BufWriter, ErrorKind, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use fjord_broker::signals::Signals;
use fjord_net::client::admin::{Admin, TopicDescription};
use fjord_net::client::assignor::Assignor;
use fjord_net::client::consumer::{
    Consumer, ConsumerError, ConsumerOptions, ConsumerRecord, OffsetReset, SeekTo,
};
use fjord_net::client::group::OffsetToCommit;
use fjord_net::client::group_consumer::{GroupConsumer, GroupError, GroupOptions};
use fjord_net::client::producer::{Producer, ProducerOptions, ProducerRecord, SendHandle};
use fjord_net::client::producer_core::ProduceError;
use fjord_net::client::protocol::{Acks, NewTopic};
use fjord_net::client::{ClientConfig, ClientError, PartitionHealthInfo};
use fjord_schema::{Compression, ErrorCode, Offset, PartitionId};

pub mod cluster;
mod elect;
mod format;
pub mod group;

use format::Format;

/// Where the default `fjord start` listens.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9192";

/// Records `produce` keeps unconfirmed before waiting for the oldest.
const PRODUCE_UNCONFIRMED_MAX: usize = 64 * 1024;

#[derive(Debug, Args)]
pub struct BrokersArg {
    /// Broker HOST:PORT (comma-separated for several).
    #[arg(long, short = 'b', env = "FJORD_BROKERS", default_value = DEFAULT_BROKERS)]
    pub brokers: String,
}

impl BrokersArg {
    fn list(&self) -> Vec<String> {
        self.brokers
            .split(',')
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .map(str::to_owned)
            .collect()
    }

    fn first(&self) -> String {
        self.list()
            .into_iter()
            .next()
            .unwrap_or_else(|| DEFAULT_BROKERS.to_owned())
    }
}

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        /// Partitions [default: the broker's default].
        #[arg(long, short = 'p')]
        partitions: Option<u32>,
        /// Replicas per partition [default: the broker's default].
        #[arg(long, short = 'r')]
        replication_factor: Option<u16>,
        /// Topic config, repeatable: --config retention.ms=3600000.
        #[arg(long = "config", short = 'c', value_parser = parse_config)]
        configs: Vec<(String, String)>,
        #[command(flatten)]
        brokers: BrokersArg,
    },
    /// List topics with their partition counts.
    List {
        #[command(flatten)]
        brokers: BrokersArg,
    },
    /// Show a topic's partitions: leader, leader epoch, replicas, ISR,
    /// log end, high watermark, each follower's lag behind the leader, the
    /// leader's shard and endpoint.
    Describe {
        name: String,
        #[command(flatten)]
        brokers: BrokersArg,
    },
    /// Elect leaders: move leadership to the preferred replicas, or give
    /// partitions without a leader one (unclean); every partition unless
    /// --topic (and --partition) narrow it.
    ElectLeaders {
        #[arg(long, short = 't')]
        topic: Option<String>,
        #[arg(long, short = 'p', requires = "topic")]
        partition: Option<u32>,
        #[arg(long = "type", value_enum, default_value = "preferred")]
        election_type: elect::ElectionType,
        #[command(flatten)]
        brokers: BrokersArg,
    },
    /// Delete a topic.
    Delete {
        name: String,
        #[command(flatten)]
        brokers: BrokersArg,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CompressionArg {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl From<CompressionArg> for Compression {
    fn from(value: CompressionArg) -> Compression {
        match value {
            CompressionArg::None => Compression::None,
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Snappy => Compression::Snappy,
            CompressionArg::Lz4 => Compression::Lz4,
            CompressionArg::Zstd => Compression::Zstd,
        }
    }
}

/// `fjord produce`: one record per stdin line.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    pub topic: String,
    /// 0 (no answer), 1 (leader appended) or all.
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    pub acks: Acks,
    /// Split each line at the first SEP into key and value; lines without
    /// it get a null key.
    #[arg(long, short = 'K')]
    pub key_separator: Option<String>,
    #[arg(long, short = 'z', value_enum, default_value = "none")]
    pub compression: CompressionArg,
    /// Send every record to this partition instead of partitioning by key.
    #[arg(long, short = 'p')]
    pub partition: Option<u32>,
    /// How long a batch waits for more records.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// Batch size in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    pub batch_size: usize,
    #[command(flatten)]
    pub brokers: BrokersArg,
}

/// `fjord consume`: one record per stdout line.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    pub topic: String,
    /// earliest, latest or an offset.
    #[arg(long, short = 'o', default_value = "earliest", value_parser = parse_from)]
    pub from: SeekTo,
    /// Exit after this many records; without it, follow the log until
    /// interrupted.
    #[arg(long, short = 'n')]
    pub count: Option<u64>,
    /// Read only this partition [default: all].
    #[arg(long, short = 'p')]
    pub partition: Option<u32>,
    /// `json`, or a kcat-style template: %t topic, %p partition, %o offset,
    /// %k key, %v value, %T timestamp (ms), %h headers, %K key length, %S
    /// value length, %% percent, \n \t \\ escapes. A newline ends each
    /// record unless the template ends with one [default: %v].
    #[arg(long, short = 'f', default_value = "%v")]
    pub format: String,
    #[command(flatten)]
    pub group: GroupArgs,
    #[command(flatten)]
    pub brokers: BrokersArg,
}

/// `fjord consume --group`: consume as a member of a consumer group.
#[derive(Debug, Args)]
pub struct GroupArgs {
    /// Join this consumer group: the group's members share the topic's
    /// partitions, each starts at the group's committed offset (--from
    /// applies only where nothing is committed), and what is printed is
    /// committed after each batch. --partition is not allowed with it.
    #[arg(long, short = 'g')]
    pub group: Option<String>,
    /// Static membership (`group.instance.id`).
    #[arg(long)]
    pub instance_id: Option<String>,
    /// `session.timeout.ms`.
    #[arg(long, default_value_t = 45_000)]
    pub session_timeout_ms: u64,
    /// `heartbeat.interval.ms`.
    #[arg(long, default_value_t = 3_000)]
    pub heartbeat_interval_ms: u64,
    /// `partition.assignment.strategy`: range, roundrobin or
    /// cooperative-sticky.
    #[arg(long, default_value = "range")]
    pub assignor: String,
}

/// A failure, shown as `fjord: <message>`.
#[derive(Debug)]
pub struct CliError(String);

impl CliError {
    fn new(message: impl Into<String>) -> CliError {
        CliError(message.into())
    }
}

impl From<ClientError> for CliError {
    fn from(error: ClientError) -> CliError {
        CliError(describe_client_error(&error))
    }
}

impl From<ConsumerError> for CliError {
    fn from(error: ConsumerError) -> CliError {
        match error {
            ConsumerError::Client(error) => error.into(),
            ConsumerError::Topic { topic, code } => CliError(topic_error(&topic, code)),
            other => CliError(other.to_string()),
        }
    }
}

fn describe_client_error(error: &ClientError) -> String {
    match error {
        ClientError::Connect { addr, source } => {
            let reason = match source.kind() {
                ErrorKind::ConnectionRefused => "connection refused".to_owned(),
                ErrorKind::TimedOut => "timed out".to_owned(),
                _ => source.to_string(),
            };
            format!(
                "cannot connect to {addr}: {reason} — is a broker running? start one with `fjord start`"
            )
        }
        ClientError::Resolve(what) => format!("cannot resolve broker address {what}"),
        ClientError::Io(source) if source.kind() == ErrorKind::AddrNotAvailable => {
            format!("cannot resolve broker address: {source}")
        }
        ClientError::Broker { code, message } => format!("{}: {message}", code_name(*code)),
        other => other.to_string(),
    }
}

fn topic_error(topic: &str, code: ErrorCode) -> String {
    match code {
        ErrorCode::UnknownTopicOrPartition => format!("topic {topic} does not exist"),
        ErrorCode::TopicAlreadyExists => format!("topic {topic} already exists"),
        other => format!("topic {topic}: {}", code_name(other)),
    }
}

/// Kafka's spelling of an error code, which operators search for.
fn code_name(code: ErrorCode) -> String {
    let debug = format!("{code:?}");
    let mut out = String::with_capacity(debug.len() + 4);
    for (i, c) in debug.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn parse_config(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected key=value, got `{text}`")),
    }
}

fn parse_acks(text: &str) -> Result<Acks, String> {
    Acks::parse(text).ok_or_else(|| format!("expected 0, 1 or all, got `{text}`"))
}

fn parse_from(text: &str) -> Result<SeekTo, String> {
    match text {
        "earliest" | "beginning" | "start" => Ok(SeekTo::Earliest),
        "latest" | "end" => Ok(SeekTo::Latest),
        number => number
            .parse::<u64>()
            .map(|o| SeekTo::Offset(Offset(o)))
            .map_err(|_| format!("expected earliest, latest or an offset, got `{text}`")),
    }
}

/// Runs a subcommand and turns its outcome into an exit code.
pub fn exit(result: Result<(), CliError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError(message)) => {
            eprintln!("fjord: {message}");
            ExitCode::FAILURE
        }
    }
}

fn client_config() -> ClientConfig {
    ClientConfig {
        timeout: Duration::from_secs(30),
        client_software_name: "fjord-cli".to_owned(),
        ..ClientConfig::default()
    }
}

/// An admin connection to the first of `brokers` that answers: any node
/// of a cluster serves topic admin (it forwards to the controller).
fn connect_admin(brokers: &BrokersArg) -> Result<Admin, CliError> {
    let mut last = None;
    for addr in brokers.list() {
        match Admin::connect(&addr, client_config()) {
            Ok(admin) => return Ok(admin),
            Err(error) => last = Some(error),
        }
    }
    match last {
        Some(error) => Err(error.into()),
        None => Ok(Admin::connect(&brokers.first(), client_config())?),
    }
}

pub fn topic(command: TopicCommand) -> Result<(), CliError> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
            brokers,
        } => {
            let mut admin = connect_admin(&brokers)?;
            let results = admin.create_topics(&[NewTopic {
                name: name.clone(),
                partitions,
                replication_factor,
                configs,
            }])?;
            let result = results
                .into_iter()
                .find(|r| r.name == name)
                .ok_or_else(|| CliError::new(format!("the broker did not answer for {name}")))?;
            if result.error != ErrorCode::None {
                let detail = result
                    .message
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default();
                return Err(CliError(format!(
                    "{}{detail}",
                    topic_error(&name, result.error)
                )));
            }
            let partitions = admin
                .describe_topic(&name)
                .map(|d| d.topic.partitions.len().to_string())
                .unwrap_or_else(|_| "?".to_owned());
            print(
                &mut out,
                format_args!("created topic {name} ({partitions} partitions)\n"),
            )
        }
        TopicCommand::List { brokers } => {
            let mut admin = connect_admin(&brokers)?;
            let topics = admin.list_topics()?;
            let width = topics
                .iter()
                .map(|t| t.name.len())
                .max()
                .unwrap_or(0)
                .max(4);
            print(&mut out, format_args!("{:width$}  PARTITIONS\n", "NAME"))?;
            for topic in topics {
                print(
                    &mut out,
                    format_args!("{:width$}  {}\n", topic.name, topic.partitions.len()),
                )?;
            }
            Ok(())
        }
        TopicCommand::Describe { name, brokers } => {
            let mut admin = connect_admin(&brokers)?;
            let description = admin.describe_topic(&name).map_err(|e| match e {
                ClientError::Broker { code, .. } => CliError(topic_error(&name, code)),
                other => other.into(),
            })?;
            let leader_views = leader_views(&name, &description);
            let topic = description.topic;
            print(&mut out, format_args!("NAME        {}\n", topic.name))?;
            print(
                &mut out,
                format_args!("PARTITIONS  {}\n\n", topic.partitions.len()),
            )?;
            let mut partitions = topic.partitions;
            partitions.sort_by_key(|p| p.partition);
            let nodes = |nodes: &[u32]| -> String {
                let list: Vec<String> = nodes.iter().map(u32::to_string).collect();
                if list.is_empty() {
                    "-".to_owned()
                } else {
                    list.join(",")
                }
            };
            let rows: Vec<[String; 11]> = partitions
                .iter()
                .map(|p| {
                    let endpoint = description
                        .brokers
                        .iter()
                        .find(|b| i64::from(b.node_id) == i64::from(p.leader))
                        .map(|b| {
                            let port = b
                                .shard_ports
                                .get(usize::from(p.leader_shard))
                                .copied()
                                .filter(|port| *port != 0)
                                .unwrap_or(b.port);
                            format!("{}:{port}", b.host)
                        })
                        .unwrap_or_else(|| "-".to_owned());
                    let error = if p.error == ErrorCode::None {
                        "-".to_owned()
                    } else {
                        code_name(p.error)
                    };
                    let [log_end, high_watermark, lag] =
                        replication_cells(leader_views.get(&p.partition));
                    [
                        p.partition.to_string(),
                        p.leader.to_string(),
                        p.leader_epoch.to_string(),
                        nodes(&p.replicas),
                        nodes(&p.isr),
                        log_end,
                        high_watermark,
                        lag,
                        p.leader_shard.to_string(),
                        endpoint,
                        error,
                    ]
                })
                .collect();
            let header = [
                "PARTITION",
                "LEADER",
                "EPOCH",
                "REPLICAS",
                "ISR",
                "LOG-END",
                "HW",
                "LAG",
                "SHARD",
                "ENDPOINT",
                "ERROR",
            ];
            let widths: Vec<usize> = (0..header.len())
                .map(|i| {
                    rows.iter()
                        .map(|r| r[i].len())
                        .chain([header[i].len()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let line = |cells: &[&str]| -> String {
                let mut text = String::new();
                for (i, cell) in cells.iter().enumerate() {
                    if i + 1 == cells.len() {
                        text.push_str(cell);
                    } else {
                        text.push_str(&format!("{cell:<w$}  ", w = widths[i]));
                    }
                }
                text.push('\n');
                text
            };
            print(&mut out, format_args!("{}", line(&header)))?;
            for row in &rows {
                let cells: Vec<&str> = row.iter().map(String::as_str).collect();
                print(&mut out, format_args!("{}", line(&cells)))?;
            }
            for h in &description.health {
                if let Some(reason) = &h.offline_reason {
                    print(
                        &mut out,
                        format_args!("\npartition {} OFFLINE: {reason}\n", h.partition),
                    )?;
                }
                for d in &h.damaged {
                    print(
                        &mut out,
                        format_args!(
                            "\npartition {} DAMAGED: offsets {}..{} unreadable (segment {}, bytes {}..{})\n",
                            h.partition,
                            d.first_offset,
                            d.end_offset,
                            d.segment_base,
                            d.bytes_start,
                            d.bytes_end
                        ),
                    )?;
                }
            }
            Ok(())
        }
        TopicCommand::ElectLeaders {
            topic,
            partition,
            election_type,
            brokers,
        } => elect::run(elect::Target { topic, partition }, election_type, &brokers),
        TopicCommand::Delete { name, brokers } => {
            let mut admin = connect_admin(&brokers)?;
            let results = admin.delete_topics(&[&name])?;
            let result = results
                .into_iter()
                .find(|r| r.name == name)
                .ok_or_else(|| CliError::new(format!("the broker did not answer for {name}")))?;
            if result.error != ErrorCode::None {
                return Err(CliError(topic_error(&name, result.error)));
            }
            print(&mut out, format_args!("deleted topic {name}\n"))
        }
    }
}

/// Each partition's replica as its leader reports it (log end, HW, the
/// followers' fetch offsets), by partition: only the leader knows its
/// followers' progress, so each leader node is asked for the topic
/// (partitions without a leader, or whose leader does not answer, have
/// none).
fn leader_views(name: &str, description: &TopicDescription) -> HashMap<u32, PartitionHealthInfo> {
    let mut views = HashMap::new();
    let mut leaders: Vec<i32> = description
        .topic
        .partitions
        .iter()
        .map(|p| p.leader)
        .filter(|l| *l >= 0)
        .collect();
    leaders.sort_unstable();
    leaders.dedup();
    for leader in leaders {
        let Some(broker) = description
            .brokers
            .iter()
            .find(|b| i64::from(b.node_id) == i64::from(leader))
        else {
            continue;
        };
        let addr = format!("{}:{}", broker.host, broker.port);
        let Ok(from_leader) =
            Admin::connect(&addr, client_config()).and_then(|mut a| a.describe_topic(name))
        else {
            continue;
        };
        let led: std::collections::HashSet<u32> = from_leader
            .topic
            .partitions
            .iter()
            .filter(|p| p.leader == leader)
            .map(|p| p.partition)
            .collect();
        for h in from_leader.health {
            if led.contains(&h.partition) {
                views.insert(h.partition, h);
            }
        }
    }
    views
}

/// The LOG-END, HW and LAG cells of a partition from its leader's view:
/// the lag of each follower is the leader's log end minus the offset the
/// follower fetches from (`node:lag`, `node:?` before its first fetch);
/// `-` where unknown or without followers.
fn replication_cells(view: Option<&PartitionHealthInfo>) -> [String; 3] {
    let Some(view) = view else {
        return ["-".to_owned(), "-".to_owned(), "-".to_owned()];
    };
    let offset = |o: Option<u64>| o.map_or_else(|| "-".to_owned(), |o| o.to_string());
    let lag = if view.followers.is_empty() {
        "-".to_owned()
    } else {
        view.followers
            .iter()
            .map(|(node, fetched)| match (view.log_end, fetched) {
                (Some(end), Some(fetched)) => format!("{node}:{}", end.saturating_sub(*fetched)),
                _ => format!("{node}:?"),
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    [offset(view.log_end), offset(view.high_watermark), lag]
}

fn print(out: &mut impl Write, args: std::fmt::Arguments<'_>) -> Result<(), CliError> {
    out.write_fmt(args).map_err(output_error)
}

fn output_error(error: io::Error) -> CliError {
    CliError(format!("cannot write to stdout: {error}"))
}

pub fn produce(args: ProduceArgs) -> Result<(), CliError> {
    let mut options = ProducerOptions::new(args.brokers.first());
    options.bootstrap = args.brokers.list();
    options.client = client_config();
    options.producer.acks = args.acks;
    options.producer.accumulator.compression = args.compression.into();
    options.producer.accumulator.linger = Duration::from_millis(args.linger_ms);
    options.producer.accumulator.batch_size_bytes = args.batch_size.max(1);
    let producer = Producer::new(options)?;
    let partition = args.partition.map(PartitionId);

    let stdin = io::stdin();
    let mut input = stdin.lock();
    let mut line = Vec::with_capacity(4096);
    let mut unconfirmed: std::collections::VecDeque<SendHandle> = std::collections::VecDeque::new();
    let mut failure: Option<ProduceError> = None;
    let mut failed = 0u64;
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .map_err(|e| CliError(format!("cannot read stdin: {e}")))?;
        if n == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        let (key, value) = split_key(&line, args.key_separator.as_deref());
        let record = ProducerRecord {
            topic: &args.topic,
            partition,
            key,
            value: Some(value),
            ..ProducerRecord::default()
        };
        let handle = producer
            .send(record)
            .map_err(|e| produce_error(&args.topic, e))?;
        unconfirmed.push_back(handle);
        while unconfirmed.len() > PRODUCE_UNCONFIRMED_MAX
            || unconfirmed
                .front()
                .is_some_and(|h| h.try_result().is_some())
        {
            let Some(handle) = unconfirmed.pop_front() else {
                break;
            };
            if let Err(error) = handle.wait() {
                failed += 1;
                failure.get_or_insert(error);
            }
        }
    }
    producer.flush();
    for handle in unconfirmed {
        if let Err(error) = handle.wait() {
            failed += 1;
            failure.get_or_insert(error);
        }
    }
    producer.close();
    match failure {
        None => Ok(()),
        Some(error) => Err(CliError(format!(
            "{failed} record(s) not written: {}",
            produce_error(&args.topic, error).0
        ))),
    }
}

fn produce_error(topic: &str, error: ProduceError) -> CliError {
    match error {
        ProduceError::Topic { code, .. } => CliError(topic_error(topic, code)),
        ProduceError::Broker { code, message } => CliError(format!(
            "{}{}",
            code_name(code),
            message.map(|m| format!(": {m}")).unwrap_or_default()
        )),
        other => CliError(other.to_string()),
    }
}

/// `key<SEP>value` → (key, value); without a separator (or without it in
/// the line) the key is null.
fn split_key<'a>(line: &'a [u8], separator: Option<&str>) -> (Option<&'a [u8]>, &'a [u8]) {
    let Some(separator) = separator.map(str::as_bytes).filter(|s| !s.is_empty()) else {
        return (None, line);
    };
    match line
        .windows(separator.len())
        .position(|window| window == separator)
    {
        Some(at) => (Some(&line[..at]), &line[at + separator.len()..]),
        None => (None, line),
    }
}

pub fn consume(args: ConsumeArgs) -> Result<(), CliError> {
    let format = Format::parse(&args.format).map_err(CliError)?;
    let mut options = ConsumerOptions::new(args.brokers.first());
    options.bootstrap = args.brokers.list();
    options.client = client_config();
    options.consumer.auto_offset_reset = match args.from {
        SeekTo::Latest => OffsetReset::Latest,
        _ => OffsetReset::Earliest,
    };
    if args.group.group.is_some() {
        return consume_group(args, options, format);
    }
    let mut consumer = Consumer::new(options)?;
    let partitions = match args.partition {
        Some(p) => {
            let all = consumer.partitions_for(&args.topic)?;
            if !all.contains(&PartitionId(p)) {
                return Err(CliError(format!(
                    "topic {} has no partition {p} (it has {})",
                    args.topic,
                    all.len()
                )));
            }
            vec![PartitionId(p)]
        }
        None => consumer.partitions_for(&args.topic)?,
    };
    consumer.assign(&args.topic, &partitions);
    for partition in &partitions {
        consumer.seek(&args.topic, *partition, args.from)?;
    }

    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut remaining = args.count;
    if remaining == Some(0) {
        return Ok(());
    }
    loop {
        let records = consumer.poll(Duration::from_secs(1))?;
        for record in &records {
            if let Err(error) = write_record(&mut out, &format, record) {
                return quiet_on_broken_pipe(error);
            }
            if let Some(left) = remaining.as_mut() {
                *left -= 1;
                if *left == 0 {
                    return out.flush().or_else(quiet_on_broken_pipe);
                }
            }
        }
        if let Err(error) = out.flush() {
            return quiet_on_broken_pipe(error);
        }
    }
}

/// `fjord consume --group`: prints, then commits what it printed (so a
/// restarted group resumes right after the last printed record).
fn consume_group(
    args: ConsumeArgs,
    options: ConsumerOptions,
    format: Format,
) -> Result<(), CliError> {
    let group = args.group.group.clone().unwrap_or_default();
    if args.partition.is_some() {
        return Err(CliError::new("--partition cannot be used with --group"));
    }
    let assignor = Assignor::from_name(&args.group.assignor).ok_or_else(|| {
        CliError(format!(
            "unknown assignor {:?}: use range, roundrobin or cooperative-sticky",
            args.group.assignor
        ))
    })?;
    let mut group_options = GroupOptions::new(group);
    group_options.instance_id = args.group.instance_id.clone();
    group_options.client_id = "fjord-cli".to_owned();
    group_options.session_timeout = Duration::from_millis(args.group.session_timeout_ms);
    group_options.heartbeat_interval = Duration::from_millis(args.group.heartbeat_interval_ms);
    group_options.auto_commit = false;
    group_options.assignors = vec![assignor];
    // SIGTERM / SIGINT end the loop cleanly (commit, leave the group)
    // rather than leave a member the group waits for until its session
    // times out. Blocked before the heartbeat thread exists, so it
    // inherits the mask.
    let signals =
        Signals::block().map_err(|e| CliError(format!("cannot install signal handling: {e}")))?;
    let mut consumer = GroupConsumer::new(options, group_options).map_err(group_error)?;
    consumer.subscribe(&[&args.topic]);

    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut remaining = args.count;
    if remaining == Some(0) {
        return Ok(());
    }
    loop {
        let records = consumer.poll(Duration::from_secs(1)).map_err(group_error)?;
        let mut printed: BTreeMap<(String, u32), i64> = BTreeMap::new();
        let mut done = false;
        for record in &records {
            if let Err(error) = write_record(&mut out, &format, record) {
                return quiet_on_broken_pipe(error);
            }
            printed.insert(
                (record.topic.to_string(), record.partition.get()),
                record.offset.get() as i64 + 1,
            );
            if let Some(left) = remaining.as_mut() {
                *left -= 1;
                if *left == 0 {
                    done = true;
                    break;
                }
            }
        }
        if let Err(error) = out.flush() {
            return quiet_on_broken_pipe(error);
        }
        let offsets: Vec<OffsetToCommit> = printed
            .into_iter()
            .map(|((topic, partition), offset)| OffsetToCommit {
                topic,
                partition,
                offset,
                leader_epoch: -1,
                metadata: String::new(),
            })
            .collect();
        // A commit refused by a rebalance is retried by the next batch of
        // the partition's new owner; the records may be printed twice.
        if let Err(error) = consumer.commit_offsets(&offsets) {
            tracing::debug!(%error, "commit failed");
        }
        let signalled = signals.wait(Duration::ZERO).ok().flatten().is_some();
        if done || signalled {
            return consumer.close().map_err(group_error);
        }
    }
}

fn group_error(error: GroupError) -> CliError {
    match error {
        GroupError::Consumer(error) => error.into(),
        GroupError::Client(error) => error.into(),
        other => CliError(other.to_string()),
    }
}

fn write_record(out: &mut impl Write, format: &Format, record: &ConsumerRecord) -> io::Result<()> {
    format.write(out, record)
}

/// `fjord consume | head` closes the pipe: that is the reader's choice, not
/// an error.
fn quiet_on_broken_pipe(error: io::Error) -> Result<(), CliError> {
    if error.kind() == ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(output_error(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_separator_splits_at_the_first_occurrence() {
        assert_eq!(
            split_key(b"k:v:w", Some(":")),
            (Some(&b"k"[..]), &b"v:w"[..])
        );
        assert_eq!(split_key(b"novalue", Some(":")), (None, &b"novalue"[..]));
        assert_eq!(split_key(b"k::v", Some("::")), (Some(&b"k"[..]), &b"v"[..]));
        assert_eq!(split_key(b":v", Some(":")), (Some(&b""[..]), &b"v"[..]));
        assert_eq!(split_key(b"k:v", None), (None, &b"k:v"[..]));
    }

    #[test]
    fn from_and_config_spellings() {
        assert_eq!(parse_from("earliest"), Ok(SeekTo::Earliest));
        assert_eq!(parse_from("latest"), Ok(SeekTo::Latest));
        assert_eq!(parse_from("42"), Ok(SeekTo::Offset(Offset(42))));
        assert!(parse_from("-3").is_err());
        assert_eq!(
            parse_config("retention.ms=1000"),
            Ok(("retention.ms".to_owned(), "1000".to_owned()))
        );
        assert_eq!(
            parse_config("a=b=c"),
            Ok(("a".to_owned(), "b=c".to_owned()))
        );
        assert!(parse_config("novalue").is_err());
        assert!(parse_config("=v").is_err());
    }

    #[test]
    fn describe_shows_the_leaders_offsets_and_each_followers_lag() {
        let view = |log_end, followers: Vec<(u32, Option<u64>)>| PartitionHealthInfo {
            topic: "t".into(),
            partition: 0,
            offline_reason: None,
            damaged: Vec::new(),
            log_end,
            high_watermark: log_end.map(|e| e - 5),
            followers,
        };
        assert_eq!(replication_cells(None), ["-", "-", "-"]);
        assert_eq!(
            replication_cells(Some(&view(Some(120), Vec::new()))),
            ["120", "115", "-"]
        );
        assert_eq!(
            replication_cells(Some(&view(
                Some(120),
                vec![(2, Some(120)), (3, Some(100)), (4, None)]
            ))),
            ["120", "115", "2:0,3:20,4:?"]
        );
        // A follower ahead of a leader that just lost its tail: no lag.
        assert_eq!(
            replication_cells(Some(&view(Some(10), vec![(2, Some(12))])))[2],
            "2:0"
        );
    }

    #[test]
    fn error_codes_print_in_kafkas_spelling() {
        assert_eq!(
            code_name(ErrorCode::UnknownTopicOrPartition),
            "UNKNOWN_TOPIC_OR_PARTITION"
        );
        assert_eq!(
            code_name(ErrorCode::NotLeaderOrFollower),
            "NOT_LEADER_OR_FOLLOWER"
        );
    }

    #[test]
    fn connection_refused_says_how_to_start_a_broker() {
        let error = ClientError::Connect {
            addr: "127.0.0.1:9192".into(),
            source: io::Error::from(ErrorKind::ConnectionRefused),
        };
        assert_eq!(
            describe_client_error(&error),
            "cannot connect to 127.0.0.1:9192: connection refused — is a broker running? \
             start one with `fjord start`"
        );
    }
}
