//! `fjord-sim`: runs seeds of the deterministic simulation, in parallel
//! (one world per thread at a time; each world is single-threaded and a
//! function of its seed). `scripts/sim` wraps it.
//!
//! ```text
//! fjord-sim --seeds 10000 --first 1 --jobs 2      # a campaign
//! fjord-sim --seed 4242 --verbose                 # one seed, its stats
//! FJORD_SIM_LOG=debug fjord-sim --seed 4242       # with the nodes' logs
//! fjord-sim --seed 161 --no-lease                 # gap B open again
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use clap::Parser;
use fjord_sim::{run_seed, Mutant, Outcome, SimConfig, World};

#[derive(Debug, Parser)]
#[command(about = "Fjord's deterministic cluster simulation")]
struct Args {
    /// Run this one seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Seeds to run (from --first).
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    #[arg(long, default_value_t = 1)]
    first: u64,
    /// Worlds run at once (default: the machine's cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Print every seed's stats.
    #[arg(long)]
    verbose: bool,
    /// Run without the broker lease (`Mutant::NoBrokerLease`: gap B
    /// open again), to show the seeds it fixed fail without it.
    #[arg(long)]
    no_lease: bool,
}

fn main() {
    let args = Args::parse();
    if let Ok(filter) = std::env::var("FJORD_SIM_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let seeds: Vec<u64> = match args.seed {
        Some(seed) => vec![seed],
        None => (args.first..args.first + args.seeds).collect(),
    };
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let started = Instant::now();
    let next = AtomicU64::new(0);
    let results: Mutex<Vec<Outcome>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(&seed) = seeds.get(i) else {
                    return;
                };
                let outcome = if args.no_lease {
                    let mut config = SimConfig::new(seed);
                    config.mutant = Some(Mutant::NoBrokerLease);
                    World::new(config).run()
                } else {
                    run_seed(seed)
                };
                if args.verbose {
                    eprintln!("seed {seed}: {} nodes, {:?}", outcome.nodes, outcome.stats);
                }
                if !outcome.violations.is_empty() {
                    eprintln!(
                        "seed {seed} ({} nodes) FAILED; replay: FJORD_SIM_SEED={seed} cargo nextest run -p fjord-sim sim",
                        outcome.nodes
                    );
                    for violation in &outcome.violations {
                        eprintln!("  {violation}");
                    }
                }
                results.lock().expect("no thread panicked holding it").push(outcome);
            });
        }
    });
    let results = results.into_inner().expect("no thread panicked holding it");
    let mut faults: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut failed: Vec<u64> = Vec::new();
    let (mut events, mut delivered, mut dropped, mut duplicated) = (0u64, 0u64, 0u64, 0u64);
    let mut totals: BTreeMap<&'static str, u64> = BTreeMap::new();
    for outcome in &results {
        for (kind, count) in &outcome.stats.faults {
            *faults.entry(kind).or_default() += count;
        }
        events += outcome.stats.events;
        delivered += outcome.stats.delivered;
        dropped += outcome.stats.dropped;
        duplicated += outcome.stats.duplicated;
        for (name, value) in outcome.stats.totals() {
            *totals.entry(name).or_default() += value;
        }
        if !outcome.violations.is_empty() {
            failed.push(outcome.seed);
        }
    }
    failed.sort_unstable();
    println!(
        "seeds: {} run, {} failed, in {:.1} s ({jobs} jobs)",
        results.len(),
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    println!("events: {events}; messages delivered {delivered}, dropped {dropped}, duplicated {duplicated}");
    for (name, value) in &totals {
        println!("{name}: {value}");
    }
    println!("faults injected:");
    for (kind, count) in &faults {
        println!("  {kind}: {count}");
    }
    if !failed.is_empty() {
        println!("failing seeds: {failed:?}");
        std::process::exit(1);
    }
}
