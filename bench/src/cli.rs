//! Command line: what `loadgen` is asked to do, checked into a [`Plan`]
//! before anything starts. Parse and validation errors exit with status 2.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use fjord_net::client::protocol::Acks;
use fjord_schema::Compression;

/// Smallest message: the value starts with the 8-byte send timestamp.
pub const MESSAGE_BYTES_MIN: usize = 16;
/// Distinct keys, at most (they are generated up front).
pub const KEYS_MAX: u64 = 10_000_000;

/// Load generator for Fjord: producers and consumers on pinned glommio
/// executors; publish and end-to-end latency histograms, JSON and SVG.
#[derive(Debug, Clone, Parser)]
#[command(name = "loadgen", version)]
pub struct Args {
    /// Producer actors (each on its own pinned executor).
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Consumer actors; the partitions are split between them.
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Topics (named TOPIC-0, TOPIC-1, ... when more than one).
    #[arg(long, default_value_t = 1)]
    pub topics: usize,
    /// Partitions per topic (used when the topic is created).
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    /// Topic name (prefix when --topics > 1).
    #[arg(long, default_value = "loadgen")]
    pub topic: String,
    /// Topic config for creation, KEY=VALUE (repeatable).
    #[arg(long = "topic-config", value_parser = parse_key_value)]
    pub topic_configs: Vec<(String, String)>,
    /// Record value size in bytes (the first 8 carry the send timestamp).
    #[arg(long, default_value_t = 1024)]
    pub message_size: usize,
    /// Producer batch size in bytes (`batch.size`).
    #[arg(long, default_value_t = 1024 * 1024)]
    pub batch_size: usize,
    /// Producer linger in milliseconds (`linger.ms`).
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// `none`, or the number of distinct keys (cycled in order).
    #[arg(long, default_value = "none", value_parser = parse_keys)]
    pub keys: KeyCount,
    /// 0, 1 or all.
    #[arg(long, default_value = "1", value_parser = parse_acks)]
    pub acks: Acks,
    #[arg(long, value_enum, default_value_t = CompressionArg::None)]
    pub compression: CompressionArg,
    #[arg(long, value_enum, default_value_t = PayloadKind::Random)]
    pub payload: PayloadKind,
    /// Messages per second over all producers (fixed-rate mode, latency
    /// corrected for coordinated omission); absent: max throughput.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Not measured at the start [default: 5s, or 0s with --messages].
    #[arg(long, value_parser = parse_duration)]
    pub warmup: Option<Duration>,
    /// Measured time after the warm-up; with --messages, an upper bound
    /// on the whole run [default: 30s, or 600s with --messages].
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Send this many messages in all instead of running for a duration.
    #[arg(long)]
    pub messages: Option<u64>,
    /// Produce requests in flight per connection.
    #[arg(long, default_value_t = 5)]
    pub max_in_flight: usize,
    /// Producer buffer (`buffer.memory`) in bytes, per producer.
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
    pub buffer_memory: usize,
    /// Bytes per partition per fetch (`max.partition.fetch.bytes`).
    #[arg(long, default_value_t = 1024 * 1024)]
    pub fetch_partition_max_bytes: u32,
    /// Bytes per fetch response.
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
    pub fetch_max_bytes: u32,
    /// Where consumers start: `start` (the end of the log when the run
    /// begins: only this run's messages) or `earliest`.
    #[arg(long, value_enum, default_value_t = ConsumeFrom::Start)]
    pub consume_from: ConsumeFrom,
    /// After producing stops, how long acks and consumers may take.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub drain_timeout: Duration,
    /// CPUs for the actors, round robin (e.g. `0,1`) [default: all, highest
    /// first].
    #[arg(long, value_delimiter = ',')]
    pub cpus: Vec<usize>,
    /// glommio io_memory per actor executor, in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub io_memory_bytes: usize,
    /// Park idle executors at once instead of spinning 1 ms first (for
    /// runs where the broker and loadgen share few cores).
    #[arg(long)]
    pub no_spin: bool,
    /// Write every figure, the command line and the config here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a latency-by-percentile chart here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Wire protocol of producers and consumers: `native`, or `kafka`
    /// (through the broker's Kafka listener; setup stays native).
    #[arg(long, value_enum, default_value_t = Protocol::Native)]
    pub protocol: Protocol,
    /// --protocol kafka: pipeline up to --max-in-flight produce requests on
    /// each Kafka connection (as the native mode and the Java client do;
    /// the broker answers them one at a time, in order) instead of opening
    /// one connection per request in flight.
    #[arg(long)]
    pub kafka_pipelining: bool,
    /// The Kafka listener, HOST:PORT, for --protocol kafka with --brokers
    /// (embedded brokers report theirs).
    #[arg(long, conflicts_with = "embedded")]
    pub kafka_brokers: Option<String>,
    /// Existing broker, HOST:PORT.
    #[arg(
        long,
        conflicts_with = "embedded",
        required_unless_present = "embedded"
    )]
    pub brokers: Option<String>,
    /// Start a `fjord` broker for the run and stop it at the end.
    #[arg(long)]
    pub embedded: bool,
    /// Embedded brokers: this many `fjord` nodes on 127.0.0.1 forming one
    /// cluster (node ids 1..=N, all voters of the metadata quorum), each
    /// with its own data dir under --data-dir; producers and consumers
    /// bootstrap through node 1 and follow the partition leaders.
    #[arg(long, default_value_t = 1)]
    pub embedded_nodes: u32,
    /// Replication factor of the topics loadgen creates [default: the
    /// broker's `default_replication_factor`].
    #[arg(long)]
    pub replication_factor: Option<u16>,
    /// Embedded broker's data directory [default: a fresh temporary one].
    #[arg(long, requires = "embedded")]
    pub data_dir: Option<PathBuf>,
    /// Embedded broker's shard count [default: the broker's].
    #[arg(long, requires = "embedded")]
    pub broker_shards: Option<usize>,
    /// The `fjord` binary [default: next to loadgen].
    #[arg(long, requires = "embedded")]
    pub fjord_bin: Option<PathBuf>,
    /// Broker pid whose memory (RSS) to report, for --brokers runs.
    #[arg(long, conflicts_with = "embedded")]
    pub broker_pid: Option<u32>,
    /// Seconds between progress lines on stderr (0: none).
    #[arg(long, default_value_t = 1.0)]
    pub progress_interval: f64,
}

/// `--keys`: `None` for keyless records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyCount(pub Option<u64>);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressionArg {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl CompressionArg {
    pub fn codec(self) -> Compression {
        match self {
            CompressionArg::None => Compression::None,
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Snappy => Compression::Snappy,
            CompressionArg::Lz4 => Compression::Lz4,
            CompressionArg::Zstd => Compression::Zstd,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    Native,
    Kafka,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Native => "native",
            Protocol::Kafka => "kafka",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PayloadKind {
    /// Incompressible bytes.
    Random,
    /// Text-like bytes (compress about 3-4x).
    Compressible,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConsumeFrom {
    Start,
    Earliest,
}

/// How the run ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    /// Measure for this long after the warm-up.
    Time { duration: Duration },
    /// Send this many messages (over all producers), within `limit`.
    Count { messages: u64, limit: Duration },
}

/// The checked arguments.
#[derive(Debug, Clone)]
pub struct Plan {
    pub args: Args,
    pub warmup: Duration,
    pub bound: Bound,
    pub cpus: Vec<usize>,
}

pub fn plan(args: Args) -> Result<Plan, String> {
    if args.producers == 0 && args.consumers == 0 {
        return Err("nothing to do: --producers and --consumers are both 0".into());
    }
    if args.topics == 0 || args.partitions == 0 {
        return Err("--topics and --partitions must be at least 1".into());
    }
    if args.message_size < MESSAGE_BYTES_MIN {
        return Err(format!(
            "--message-size must be at least {MESSAGE_BYTES_MIN} (the value carries an 8-byte timestamp)"
        ));
    }
    if args.batch_size == 0 || args.max_in_flight == 0 {
        return Err("--batch-size and --max-in-flight must be positive".into());
    }
    let record_max = args.message_size + 4096;
    if args.buffer_memory < record_max.max(args.batch_size.min(record_max)) {
        return Err(format!(
            "--buffer-memory must hold at least one record ({record_max} bytes)"
        ));
    }
    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate > 0.0) {
            return Err("--rate must be a positive number of messages per second".into());
        }
        if args.producers == 0 {
            return Err("--rate needs at least one producer".into());
        }
    }
    if args.consumers > 0 && args.producers == 0 && args.consume_from == ConsumeFrom::Start {
        return Err(
            "consumers without producers read existing data: add --consume-from earliest".into(),
        );
    }
    if args.kafka_pipelining && args.protocol != Protocol::Kafka {
        return Err("--kafka-pipelining needs --protocol kafka".into());
    }
    if args.protocol == Protocol::Kafka && !args.embedded && args.kafka_brokers.is_none() {
        return Err("--protocol kafka with --brokers needs --kafka-brokers HOST:PORT".into());
    }
    if args.embedded_nodes == 0 {
        return Err("--embedded-nodes must be at least 1".into());
    }
    // Checked here: clap's `requires` does not see an argument that has a
    // default value.
    if args.embedded_nodes > 1 && !args.embedded {
        return Err("--embedded-nodes needs --embedded".into());
    }
    if args.embedded_nodes > 1 && args.protocol == Protocol::Kafka {
        return Err(
            "--embedded-nodes with --protocol kafka: the Kafka mode sends every partition to one listener; use the native protocol (it follows the leaders)"
                .into(),
        );
    }
    if args.replication_factor == Some(0) {
        return Err("--replication-factor must be at least 1".into());
    }
    if !(args.progress_interval >= 0.0 && args.progress_interval.is_finite()) {
        return Err("--progress-interval must be a non-negative number".into());
    }
    let bound = match (args.messages, args.duration) {
        (Some(0), _) => return Err("--messages must be at least 1".into()),
        (Some(messages), limit) => Bound::Count {
            messages,
            limit: limit.unwrap_or(Duration::from_secs(600)),
        },
        (None, duration) => Bound::Time {
            duration: duration.unwrap_or(Duration::from_secs(30)),
        },
    };
    let warmup = args.warmup.unwrap_or(match bound {
        Bound::Time { .. } => Duration::from_secs(5),
        Bound::Count { .. } => Duration::ZERO,
    });
    let online = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Highest CPU first: brokers number their shards from CPU 0, so on a
    // shared host the first actors land away from the busiest shard.
    let cpus = if args.cpus.is_empty() {
        (0..online).rev().collect()
    } else {
        args.cpus.clone()
    };
    if let Some(bad) = cpus.iter().find(|c| **c >= online) {
        return Err(format!(
            "--cpus: CPU {bad} does not exist ({online} online)"
        ));
    }
    Ok(Plan {
        args,
        warmup,
        bound,
        cpus,
    })
}

fn parse_acks(text: &str) -> Result<Acks, String> {
    Acks::parse(text).ok_or_else(|| format!("expected 0, 1 or all, got {text:?}"))
}

fn parse_keys(text: &str) -> Result<KeyCount, String> {
    if text == "none" {
        return Ok(KeyCount(None));
    }
    match text.parse::<u64>() {
        Ok(n) if (1..=KEYS_MAX).contains(&n) => Ok(KeyCount(Some(n))),
        _ => Err(format!(
            "expected `none` or a number of keys in 1..={KEYS_MAX}"
        )),
    }
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

/// `250ms`, `5s`, `2m`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    match number.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 && v * scale < 1e9 => {
            Ok(Duration::from_secs_f64(v * scale))
        }
        _ => Err(format!(
            "expected a duration such as 500ms, 5s or 2m, got {text:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn keys_parse() {
        assert_eq!(parse_keys("none"), Ok(KeyCount(None)));
        assert_eq!(parse_keys("16"), Ok(KeyCount(Some(16))));
        assert!(parse_keys("0").is_err());
        assert!(parse_keys("many").is_err());
    }

    #[test]
    fn count_mode_defaults_to_no_warmup() {
        let args = Args::try_parse_from(["loadgen", "--embedded", "--messages", "10"])
            .expect("valid arguments");
        let plan = plan(args).expect("valid plan");
        assert_eq!(plan.warmup, Duration::ZERO);
        assert!(matches!(plan.bound, Bound::Count { messages: 10, .. }));
    }

    #[test]
    fn a_broker_is_required() {
        assert!(Args::try_parse_from(["loadgen"]).is_err());
        assert!(
            Args::try_parse_from(["loadgen", "--embedded", "--brokers", "127.0.0.1:1"]).is_err()
        );
    }

    #[test]
    fn kafka_mode_needs_the_kafka_listener() {
        let args =
            Args::try_parse_from(["loadgen", "--brokers", "127.0.0.1:1", "--protocol", "kafka"])
                .expect("parses");
        assert!(plan(args).is_err());
        let args =
            Args::try_parse_from(["loadgen", "--embedded", "--protocol", "kafka"]).expect("parses");
        assert_eq!(plan(args).expect("valid").args.protocol, Protocol::Kafka);
    }

    #[test]
    fn embedded_clusters_are_checked() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["loadgen"];
            argv.extend_from_slice(extra);
            Args::try_parse_from(argv)
        };
        let args = parse(&[
            "--embedded",
            "--embedded-nodes",
            "3",
            "--replication-factor",
            "3",
        ])
        .expect("parses");
        let plan_ok = plan(args).expect("valid");
        assert_eq!(plan_ok.args.embedded_nodes, 3);
        assert_eq!(plan_ok.args.replication_factor, Some(3));
        // Nodes only for embedded runs; at least one; native only.
        let remote = parse(&["--brokers", "127.0.0.1:1", "--embedded-nodes", "3"]);
        assert!(remote.map_or(true, |args| plan(args).is_err()));
        let zero = parse(&["--embedded", "--embedded-nodes", "0"]).expect("parses");
        assert!(plan(zero).is_err());
        let kafka =
            parse(&["--embedded", "--embedded-nodes", "3", "--protocol", "kafka"]).expect("parses");
        assert!(plan(kafka).is_err());
        let rf0 = parse(&["--embedded", "--replication-factor", "0"]).expect("parses");
        assert!(plan(rf0).is_err());
    }
}
