//! `loadgen`: Fjord's load generator. Producers and consumers run on their
//! own pinned glommio executors; the producer is the client's sans-IO
//! `ProducerCore` under a glommio driver (`producer.rs`). It measures
//! producer and consumer throughput, publish latency (intended send →
//! ack, corrected for coordinated omission in fixed-rate mode) and
//! end-to-end latency (intended send → consumer receipt), with one
//! HdrHistogram per actor merged into one per metric. See
//! "loadgen" in `docs/BENCHMARKS.md`.

mod cli;
mod conn;
mod consumer;
mod embedded;
mod kafka;
mod payload;
mod producer;
mod report;
mod run;
mod stats;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Usage errors exit with status 2 (clap's convention).
    let args = cli::Args::parse();
    let plan = match cli::plan(args) {
        Ok(plan) => plan,
        Err(message) => {
            eprintln!("loadgen: {message}");
            return ExitCode::from(2);
        }
    };
    match run::run(plan) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("loadgen: error: {message}");
            ExitCode::FAILURE
        }
    }
}
