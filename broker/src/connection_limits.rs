//! Node-wide connection admission: how many connections each listener and
//! each client address hold, counted across every shard, so that a flood
//! of connections from one address (or on one port) cannot take the slots
//! that other clients (or the other port) need.
//!
//! Kafka's `listener.name.<listener>.max.connections`,
//! `max.connections.per.ip` and `max.connections.per.ip.overrides`, as
//! `native_connections_max` / `kafka_connections_max`,
//! `connections_max_per_ip` and `connections_max_per_ip_overrides`.
//!
//! The counts live in one table of atomics that the main thread builds
//! before the shards start and every shard shares (the one mutable thing
//! shards share; why: ARCHITECTURE.md, "Decisions"). It never grows: one
//! counter per listener, one per overridden address, and a fixed array of
//! buckets for every other address, picked by a hash keyed with a random
//! seed at startup. Two addresses in one bucket share its count, so a
//! collision can only refuse early, never admit past a limit; with
//! [`ADDRESS_BUCKETS`] buckets and a key an attacker cannot know, a given
//! client shares a flooder's bucket with odds of 1 in 65,536.
//!
//! Every admission is a compare-and-swap loop that increments only below
//! the limit, so no count ever passes its limit, not even for a moment;
//! [`Admitted`] gives the slots back when the connection ends.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

/// Buckets of the per-address counts (of addresses without an override).
/// 256 KiB of `AtomicU32`, allocated once.
pub const ADDRESS_BUCKETS: usize = 1 << 16;
const _: () = assert!(ADDRESS_BUCKETS.is_power_of_two());

/// Which port a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The native protocol: the shared port and the per-shard ports.
    Native,
    /// The Kafka wire protocol.
    Kafka,
}

impl Listener {
    pub const ALL: [Listener; 2] = [Listener::Native, Listener::Kafka];

    pub fn index(self) -> usize {
        match self {
            Listener::Native => 0,
            Listener::Kafka => 1,
        }
    }
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Listener::Native => "native",
            Listener::Kafka => "kafka",
        })
    }
}

/// The limits, from the broker config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections the native listener serves at once, all shards together.
    pub native_max: usize,
    /// Connections the Kafka listener serves at once, all shards together.
    pub kafka_max: usize,
    /// Connections one client address holds at once, both listeners and all
    /// shards together, unless overridden.
    pub per_ip_max: usize,
    /// Per-address limits replacing `per_ip_max` (0 refuses the address).
    pub per_ip_overrides: BTreeMap<IpAddr, usize>,
}

/// Why a new connection was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the {listener} listener already serves its maximum of {max} connections")]
    Listener { listener: Listener, max: usize },
    #[error("client address {ip} already holds its maximum of {max} connections")]
    Address { ip: IpAddr, max: usize },
}

/// The node's connection counts.
///
/// Lives on: the main thread builds it before the shards start; every shard
/// holds an `Arc` of it. Owns: one count per listener and per client
/// address (bucketed). Lifecycle: built with the limits → shared → dropped
/// with the last shard.
pub struct ConnectionTable {
    listener_counts: [AtomicUsize; 2],
    listener_max: [usize; 2],
    per_ip_max: u32,
    /// Sorted by address (binary search); the counts of overridden
    /// addresses are exact.
    overrides: Box<[(IpAddr, u32, AtomicU32)]>,
    buckets: Box<[AtomicU32]>,
    seed: std::hash::RandomState,
}

impl fmt::Debug for ConnectionTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionTable")
            .field("listener_counts", &self.listener_counts)
            .field("listener_max", &self.listener_max)
            .field("per_ip_max", &self.per_ip_max)
            .field("overrides", &self.overrides)
            .finish_non_exhaustive()
    }
}

/// Which address count an admitted connection holds.
#[derive(Debug, Clone, Copy)]
enum AddressSlot {
    Override(usize),
    Bucket(usize),
}

/// One admitted connection's slots; given back on drop.
#[derive(Debug)]
pub struct Admitted {
    table: Arc<ConnectionTable>,
    listener: Listener,
    address: AddressSlot,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let before =
            self.table.listener_counts[self.listener.index()].fetch_sub(1, Ordering::AcqRel);
        assert!(before > 0, "listener count underflow");
        let before = self
            .table
            .address_count(self.address)
            .fetch_sub(1, Ordering::AcqRel);
        assert!(before > 0, "address count underflow");
    }
}

/// Increments `count` if it is below `max`; never lets it pass `max`.
fn take_usize(count: &AtomicUsize, max: usize) -> bool {
    count
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}

fn take_u32(count: &AtomicU32, max: u32) -> bool {
    count
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}

/// Limits above this are the same as this (a count never gets there: each
/// connection is a file descriptor).
fn clamp_u32(max: usize) -> u32 {
    u32::try_from(max).unwrap_or(u32::MAX)
}

impl ConnectionTable {
    pub fn new(limits: &ConnectionLimits) -> Arc<ConnectionTable> {
        let overrides: Vec<(IpAddr, u32, AtomicU32)> = limits
            .per_ip_overrides
            .iter()
            .map(|(ip, max)| (ip.to_canonical(), clamp_u32(*max), AtomicU32::new(0)))
            .collect();
        assert!(
            overrides.windows(2).all(|w| w[0].0 < w[1].0),
            "override addresses sorted and distinct"
        );
        Arc::new(ConnectionTable {
            listener_counts: [AtomicUsize::new(0), AtomicUsize::new(0)],
            listener_max: [limits.native_max, limits.kafka_max],
            per_ip_max: clamp_u32(limits.per_ip_max),
            overrides: overrides.into_boxed_slice(),
            buckets: (0..ADDRESS_BUCKETS).map(|_| AtomicU32::new(0)).collect(),
            seed: std::hash::RandomState::new(),
        })
    }

    /// Takes a slot of `listener` and one of the client address `ip`, or
    /// says which limit is reached (and takes nothing).
    pub fn admit(self: &Arc<Self>, listener: Listener, ip: IpAddr) -> Result<Admitted, Refused> {
        let ip = ip.to_canonical();
        let listener_max = self.listener_max[listener.index()];
        if !take_usize(&self.listener_counts[listener.index()], listener_max) {
            return Err(Refused::Listener {
                listener,
                max: listener_max,
            });
        }
        let (address, max) = self.address_slot(ip);
        if !take_u32(self.address_count(address), max) {
            self.listener_counts[listener.index()].fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Address {
                ip,
                max: max as usize,
            });
        }
        Ok(Admitted {
            table: self.clone(),
            listener,
            address,
        })
    }

    /// Connections `listener` holds now, all shards together.
    pub fn listener_count(&self, listener: Listener) -> usize {
        self.listener_counts[listener.index()].load(Ordering::Acquire)
    }

    fn address_slot(&self, ip: IpAddr) -> (AddressSlot, u32) {
        match self.overrides.binary_search_by(|(a, _, _)| a.cmp(&ip)) {
            Ok(i) => (AddressSlot::Override(i), self.overrides[i].1),
            Err(_) => {
                let hash = self.seed.hash_one(ip) as usize;
                (
                    AddressSlot::Bucket(hash & (ADDRESS_BUCKETS - 1)),
                    self.per_ip_max,
                )
            }
        }
    }

    fn address_count(&self, slot: AddressSlot) -> &AtomicU32 {
        match slot {
            AddressSlot::Override(i) => &self.overrides[i].2,
            AddressSlot::Bucket(i) => &self.buckets[i],
        }
    }
}

/// Parses Kafka's `max.connections.per.ip.overrides` form,
/// `address:count,address:count` (an IPv6 address in brackets:
/// `[::1]:10`), into per-address limits. Host names are refused: the
/// limit applies to the address a connection comes from, and resolving a
/// name once at startup would silently go stale.
pub fn parse_ip_overrides(text: &str) -> Result<BTreeMap<IpAddr, usize>, String> {
    let mut overrides = BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (host, count) = entry
            .rsplit_once(':')
            .ok_or_else(|| format!("{entry:?} is not ADDRESS:COUNT"))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let ip: IpAddr = host.parse().map_err(|_| {
            format!("{host:?} in {entry:?} is not an IP address (host names are not supported)")
        })?;
        let count: usize = count
            .parse()
            .map_err(|_| format!("{count:?} in {entry:?} is not a connection count"))?;
        if overrides.insert(ip.to_canonical(), count).is_some() {
            return Err(format!("{ip} is listed twice"));
        }
    }
    Ok(overrides)
}

/// Kafka's form of the overrides (the inverse of [`parse_ip_overrides`]).
pub fn format_ip_overrides(overrides: &BTreeMap<IpAddr, usize>) -> String {
    overrides
        .iter()
        .map(|(ip, count)| match ip {
            IpAddr::V4(v4) => format!("{v4}:{count}"),
            IpAddr::V6(v6) => format!("[{v6}]:{count}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("literal address")
    }

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            native_max: 5,
            kafka_max: 3,
            per_ip_max: 2,
            per_ip_overrides: BTreeMap::from([(ip("127.0.0.2"), 4), (ip("10.0.0.9"), 0)]),
        }
    }

    #[test]
    fn an_address_holds_at_most_its_limit_across_listeners() {
        let table = ConnectionTable::new(&limits());
        let a = table
            .admit(Listener::Native, ip("127.0.0.1"))
            .expect("first");
        let b = table
            .admit(Listener::Kafka, ip("127.0.0.1"))
            .expect("second");
        assert_eq!(
            table
                .admit(Listener::Native, ip("127.0.0.1"))
                .expect_err("third"),
            Refused::Address {
                ip: ip("127.0.0.1"),
                max: 2
            }
        );
        // The refusal took no listener slot.
        assert_eq!(table.listener_count(Listener::Native), 1);
        drop(a);
        let _c = table
            .admit(Listener::Native, ip("127.0.0.1"))
            .expect("slot given back");
        drop(b);
        assert_eq!(table.listener_count(Listener::Kafka), 0);
    }

    #[test]
    fn overrides_replace_the_per_address_limit() {
        let table = ConnectionTable::new(&limits());
        let held: Vec<Admitted> = (0..4)
            .map(|_| {
                table
                    .admit(Listener::Native, ip("127.0.0.2"))
                    .expect("override allows 4")
            })
            .collect();
        assert!(matches!(
            table.admit(Listener::Native, ip("127.0.0.2")),
            Err(Refused::Address { max: 4, .. })
        ));
        assert!(matches!(
            table.admit(Listener::Kafka, ip("10.0.0.9")),
            Err(Refused::Address { max: 0, .. })
        ));
        drop(held);
        assert_eq!(table.listener_count(Listener::Native), 0);
    }

    #[test]
    fn a_full_listener_leaves_the_other_listener_alone() {
        let table = ConnectionTable::new(&limits());
        let held: Vec<Admitted> = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
            .into_iter()
            .map(|a| {
                table
                    .admit(Listener::Kafka, ip(a))
                    .expect("below the listener limit")
            })
            .collect();
        assert_eq!(
            table
                .admit(Listener::Kafka, ip("10.0.0.4"))
                .expect_err("kafka full"),
            Refused::Listener {
                listener: Listener::Kafka,
                max: 3
            }
        );
        let _native = table
            .admit(Listener::Native, ip("10.0.0.4"))
            .expect("the native listener has its own limit");
        drop(held);
        let _kafka = table.admit(Listener::Kafka, ip("10.0.0.4")).expect("freed");
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_their_ipv4_address() {
        let table = ConnectionTable::new(&limits());
        let _a = table
            .admit(Listener::Native, ip("::ffff:127.0.0.2"))
            .expect("1");
        let _held: Vec<Admitted> = (0..3)
            .map(|_| {
                table
                    .admit(Listener::Native, ip("127.0.0.2"))
                    .expect("override")
            })
            .collect();
        assert!(table.admit(Listener::Kafka, ip("127.0.0.2")).is_err());
    }

    #[test]
    fn overrides_parse_kafkas_form() {
        let parsed = parse_ip_overrides("127.0.0.2:5000, [::1]:7,10.1.2.3:0").expect("valid");
        assert_eq!(
            parsed,
            BTreeMap::from([(ip("127.0.0.2"), 5000), (ip("::1"), 7), (ip("10.1.2.3"), 0)])
        );
        assert_eq!(
            parse_ip_overrides(&format_ip_overrides(&parsed)).expect("round trip"),
            parsed
        );
        assert_eq!(parse_ip_overrides("").expect("empty"), BTreeMap::new());
        for bad in [
            "127.0.0.2",
            "broker.example:5",
            "127.0.0.2:many",
            "127.0.0.2:1,127.0.0.2:2",
        ] {
            assert!(parse_ip_overrides(bad).is_err(), "{bad}");
        }
    }
}
