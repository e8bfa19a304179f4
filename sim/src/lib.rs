//! Fjord's deterministic cluster simulation (issue 15; in the spirit of
//! TigerBeetle's VOPR and FoundationDB's simulator).
//!
//! One process, one thread, one seed: 3–5 simulated nodes, each running
//! the broker's real state machines — the metadata quorum
//! (`controller::quorum::Quorum`, tikv `raft`) with the active
//! controller's `ControllerState`, every replica's `PartitionState` with
//! the replica `Fetcher`s, and the group `Coordinator`s — over a
//! simulated clock, network and disk. The glue that the glommio drivers
//! provide in the broker (`controller/driver.rs`,
//! `partition/manager.rs`, `replication/driver.rs`, `group/host.rs`) is
//! re-created here as plain synchronous code, step for step.
//!
//! - [`rng`]: the seeded generator every choice draws from.
//! - `groups`: one node's group coordinators (the real `Coordinator`s,
//!   loaded from and written to the offsets topic), the workload's group
//!   members and the group rules of the checker.
//! - `world`: the event loop (time, message delivery, faults, workload),
//!   and `checker`: the invariants checked on every run.
//!
//! A run is a pure function of its seed and its `SimConfig`: a
//! failing seed prints itself and replays bit-for-bit
//! (`FJORD_SIM_SEED=… cargo nextest run -p fjord-sim sim`).

pub mod checker;
pub mod client;
pub mod controller;
pub mod data;
pub mod disk;
pub mod groups;
pub mod rng;
pub mod world;

pub use world::{Mutant, Outcome, SimConfig, World};

/// Runs the seed `seed` with its default configuration.
pub fn run_seed(seed: u64) -> Outcome {
    World::new(SimConfig::new(seed)).run()
}
