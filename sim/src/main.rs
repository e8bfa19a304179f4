//! `fjord-sim`: runs seeds of the deterministic simulation (see
//! `scripts/sim`).

fn main() {}
