//! `fjord`: the broker binary and its client subcommands.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use fjord_broker::config::{ClusterFlags, DataPathFlags};
use fjord_broker::{server, Config, Overrides};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(name = "fjord", version, about = "Fjord log broker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a broker. Settings: defaults, then the --config file, then
    /// FJORD_* variables, then flags. On success the address is printed as
    /// `fjord: listening on HOST:PORT` and written to <data-dir>/broker.addr.
    /// Without --controller-quorum-voters the node is a one-node cluster
    /// (node 1 unless --node-id, a quorum of itself); with it, one of the
    /// cluster's nodes (`--node-id N --cluster-listen HOST:PORT
    /// --controller-quorum-voters 1@HOST:PORT,2@HOST:PORT,3@HOST:PORT`).
    Start(Box<StartArgs>),
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topic(cli::TopicCommand),
    /// Write one record per stdin line (`key<SEP>value` with
    /// --key-separator).
    Produce(cli::ProduceArgs),
    /// Print records, one per line; follows the log unless --count is given.
    Consume(cli::ConsumeArgs),
    /// List, describe consumer groups and reset their offsets.
    #[command(subcommand)]
    Group(cli::group::GroupCommand),
    /// Show the cluster: its nodes, the controller, the metadata log.
    #[command(subcommand)]
    Cluster(cli::cluster::ClusterCommand),
    /// Accept the loss of damaged data: with the broker stopped, truncate a
    /// partition that recovery took offline at OFFSET (everything at and
    /// after it is deleted; those offsets are given out again).
    Repair(RepairArgs),
}

#[derive(Debug, Args)]
struct RepairArgs {
    /// Data directory of the stopped broker.
    #[arg(long, env = "FJORD_DATA_DIR", default_value = "./fjord-data")]
    data_dir: PathBuf,
    /// Topic of the damaged partition.
    #[arg(long)]
    topic: String,
    /// The damaged partition.
    #[arg(long)]
    partition: u32,
    /// First offset to delete (the broker's ERROR names it).
    #[arg(long)]
    truncate_at: u64,
}

#[derive(Debug, Args)]
struct StartArgs {
    /// TOML config file.
    #[arg(long, env = "FJORD_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory [default: ./fjord-data].
    #[arg(long, env = "FJORD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Native protocol HOST:PORT; port 0 picks a free port [default: 127.0.0.1:9192].
    #[arg(long, env = "FJORD_LISTEN")]
    listen: Option<String>,
    /// Kafka wire-protocol HOST:PORT; port 0 picks a free port; `off` disables it [default: 127.0.0.1:9092].
    #[arg(long, env = "FJORD_KAFKA_LISTEN")]
    kafka_listen: Option<String>,
    /// Host advertised in Kafka Metadata [default: the Kafka listen host].
    #[arg(long, env = "FJORD_KAFKA_ADVERTISED_HOST")]
    kafka_advertised_host: Option<String>,
    /// Number of shards [default: number of CPUs].
    #[arg(long, env = "FJORD_SHARDS")]
    shards: Option<usize>,
    /// This node's id in the cluster [default: 1].
    #[arg(long, env = "FJORD_NODE_ID")]
    node_id: Option<u32>,
    /// Host advertised in Metadata [default: the listen host].
    #[arg(long, env = "FJORD_ADVERTISED_HOST")]
    advertised_host: Option<String>,
    /// Expose per-shard ports [default: true].
    #[arg(long, env = "FJORD_SHARD_PORTS")]
    shard_ports: Option<bool>,
    /// Largest frame accepted, in bytes [default: 16 MiB].
    #[arg(long, env = "FJORD_FRAME_BYTES_MAX")]
    frame_bytes_max: Option<u32>,
    /// Connections per shard on each listener [default: 1024].
    #[arg(long, env = "FJORD_CONNECTIONS_MAX_PER_SHARD")]
    connections_max_per_shard: Option<usize>,
    /// Connections on the native listener, all shards [default: 10000].
    #[arg(long, env = "FJORD_NATIVE_CONNECTIONS_MAX")]
    native_connections_max: Option<usize>,
    /// Connections on the Kafka listener, all shards [default: 10000].
    #[arg(long, env = "FJORD_KAFKA_CONNECTIONS_MAX")]
    kafka_connections_max: Option<usize>,
    /// Connections per client address, both listeners [default: 1000].
    #[arg(long, env = "FJORD_CONNECTIONS_MAX_PER_IP")]
    connections_max_per_ip: Option<usize>,
    /// Per-address limits, `address:count,address:count` ([::1]:10 for IPv6) [default: none].
    #[arg(long, env = "FJORD_CONNECTIONS_MAX_PER_IP_OVERRIDES", value_parser = parse_ip_overrides)]
    connections_max_per_ip_overrides: Option<IpOverrides>,
    /// Close connections with no complete first request this long after accept [default: 10000].
    #[arg(long, env = "FJORD_CONNECTION_FIRST_REQUEST_TIMEOUT_MS")]
    connection_first_request_timeout_ms: Option<u64>,
    /// Close connections with no complete request for this long [default: 600000].
    #[arg(long, env = "FJORD_IDLE_TIMEOUT_MS")]
    idle_timeout_ms: Option<u64>,
    /// io_uring registered memory per shard [default: 4 MiB].
    #[arg(long, env = "FJORD_IO_MEMORY_BYTES")]
    io_memory_bytes: Option<usize>,
    #[command(flatten)]
    data_path: DataPathFlags,
    #[command(flatten)]
    cluster: ClusterFlags,
}

/// A panic anywhere in the broker ends the process, in every build: a
/// glommio executor whose task panics ends its thread without dropping the
/// shard's future, so without this a debug build would keep its ports
/// open and serve nothing. Release builds set `panic = "abort"` anyway;
/// this makes tests see what production does (the process exits and the
/// supervisor, systemd, restarts it). The default hook prints the message
/// first.
fn abort_on_panic() {
    let print = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        print(info);
        tracing::error!(%info, "panic: aborting");
        std::process::abort();
    }));
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The broker logs at info; client subcommands keep stderr for errors.
    let default_level = match cli.command {
        Command::Start(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("FJORD_LOG").unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Start(args) => start(*args),
        Command::Topic(command) => cli::exit(cli::topic(command)),
        Command::Produce(args) => cli::exit(cli::produce(args)),
        Command::Consume(args) => cli::exit(cli::consume(args)),
        Command::Group(command) => cli::exit(cli::group::run(command)),
        Command::Cluster(command) => cli::exit(cli::cluster::run(command)),
        Command::Repair(args) => repair(args),
    }
}

fn repair(args: RepairArgs) -> ExitCode {
    let partition = fjord_schema::PartitionId(args.partition);
    let offset = fjord_schema::Offset(args.truncate_at);
    match fjord_broker::repair::repair(&args.data_dir, &args.topic, partition, offset) {
        Ok(repaired) => {
            println!(
                "fjord: repaired {}-{partition}: log end is now {} ({} segments removed, {} bytes \
                 cut); offsets from {} on will be given to new records",
                args.topic,
                repaired.log_end,
                repaired.segments_removed.len(),
                repaired.bytes_cut,
                repaired.log_end
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("fjord: error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Per-address connection limits (a named type so clap takes the whole
/// map as one value).
type IpOverrides = std::collections::BTreeMap<std::net::IpAddr, usize>;

fn parse_ip_overrides(text: &str) -> Result<IpOverrides, String> {
    fjord_broker::connection_limits::parse_ip_overrides(text)
}

/// glibc malloc hands freed memory back to the kernel as soon as a free
/// chunk at an arena's top passes its trim threshold (2x the dynamic mmap
/// threshold, a few MiB here), so a shard converting 1 MiB Kafka batches
/// page-faulted its buffers in again on every request: a third of a
/// pipelined Kafka producer's broker time in `exc_page_fault` (perf,
/// docs/BENCHMARKS.md). Requests below 4 MiB now come from the arenas and up
/// to 64 MiB of free top is kept per arena; larger buffers (fetch responses,
/// frames up to `frame_bytes_max`) are still mmapped and returned at once.
/// Every byte still comes from the configured budgets: this changes how
/// soon freed memory leaves the process, not how much is used.
fn tune_allocator() {
    // SAFETY: mallopt only sets allocator parameters; it is called on the
    // main thread before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

fn start(args: StartArgs) -> ExitCode {
    abort_on_panic();
    tune_allocator();
    let overrides = Overrides {
        node_id: args.node_id,
        data_dir: args.data_dir,
        listen: args.listen,
        advertised_host: args.advertised_host,
        kafka_listen: args.kafka_listen,
        kafka_advertised_host: args.kafka_advertised_host,
        shards: args.shards,
        shard_ports: args.shard_ports,
        frame_bytes_max: args.frame_bytes_max,
        connections_max_per_shard: args.connections_max_per_shard,
        native_connections_max: args.native_connections_max,
        kafka_connections_max: args.kafka_connections_max,
        connections_max_per_ip: args.connections_max_per_ip,
        connections_max_per_ip_overrides: args.connections_max_per_ip_overrides,
        connection_first_request_timeout_ms: args.connection_first_request_timeout_ms,
        idle_timeout_ms: args.idle_timeout_ms,
        io_memory_bytes: args.io_memory_bytes,
        data_path: args.data_path,
        cluster: args.cluster,
    };
    let result = Config::load(args.config.as_deref(), overrides).and_then(server::run);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fjord: error: {error}");
            ExitCode::FAILURE
        }
    }
}
