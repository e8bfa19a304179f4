//! Shared pieces of the hostile-client tests (issue 11): the broker's
//! memory from `/proc`, and a well-behaved producer that keeps producing
//! while an attack runs and afterwards proves every acknowledged record is
//! readable at the offset it was acknowledged at.
//!
//! Memory is asserted as a bound (`VmHWM`, the peak resident set, so an
//! attack that has ended still counts), never a timing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use fjord_schema::ErrorCode;

use super::{batch, Conn};

/// A field of `/proc/<pid>/status` in bytes (`VmRSS`, `VmHWM`, ...).
fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    let kib: u64 = line[field.len() + 1..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("a number of kB");
    kib * 1024
}

/// The process's resident set now.
pub fn rss_bytes(pid: u32) -> u64 {
    proc_status_bytes(pid, "VmRSS")
}

/// The process's peak resident set since it started.
pub fn rss_peak_bytes(pid: u32) -> u64 {
    proc_status_bytes(pid, "VmHWM")
}

/// One acknowledged record: its offset and value.
pub type Acked = (i64, Vec<u8>);

/// A producer on its own thread and connection, sending one small batch
/// at a time with acks=all to one partition until stopped. Records what
/// the broker acknowledged; errors (e.g. a full disk) are counted, not
/// fatal, and the batch is retried with a new value.
pub struct SteadyProducer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<(Vec<Acked>, u64)>>,
    topic: String,
    partition: u32,
}

impl SteadyProducer {
    pub fn start(addr: SocketAddr, topic: &str, partition: u32) -> SteadyProducer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let name = topic.to_owned();
        let thread = thread::spawn(move || {
            let mut conn = Conn::connect(addr);
            let mut acked = Vec::new();
            let mut errors = 0u64;
            let mut n = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let value = format!("steady-{n}").into_bytes();
                n += 1;
                let records = batch(&[(b"k", &value)], 1_700_000_000_000);
                match conn.try_produce(&name, partition, &records, -1) {
                    Ok((ErrorCode::None, offset)) => acked.push((offset, value)),
                    Ok(_) => {
                        errors += 1;
                        thread::sleep(Duration::from_millis(20));
                    }
                    Err(_) => {
                        errors += 1;
                        thread::sleep(Duration::from_millis(50));
                        conn = Conn::connect(addr);
                    }
                }
            }
            (acked, errors)
        });
        SteadyProducer {
            stop,
            thread: Some(thread),
            topic: topic.to_owned(),
            partition,
        }
    }

    /// Stops the producer; returns what was acknowledged and the number
    /// of failed attempts.
    pub fn stop(mut self) -> (Vec<Acked>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("producer thread")
    }

    /// Stops the producer and asserts that every acknowledged record is
    /// readable at its acknowledged offset through `addr`; returns how many
    /// were acknowledged.
    pub fn stop_and_verify(self, addr: SocketAddr) -> usize {
        let topic = self.topic.clone();
        let partition = self.partition;
        let (acked, _) = self.stop();
        assert_acked_readable(addr, &topic, partition, &acked);
        acked.len()
    }
}

impl Drop for SteadyProducer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Every `(offset, value)` in `acked` is in the partition at that offset.
pub fn assert_acked_readable(addr: SocketAddr, topic: &str, partition: u32, acked: &[Acked]) {
    let Some(first) = acked.iter().map(|(o, _)| *o).min() else {
        return;
    };
    let records = Conn::connect(addr).read_all(topic, partition, first);
    let by_offset: std::collections::HashMap<i64, &Option<Vec<u8>>> = records
        .iter()
        .map(|(offset, _, value)| (*offset as i64, value))
        .collect();
    for (offset, value) in acked {
        let found = by_offset.get(offset);
        assert_eq!(
            found.and_then(|v| v.as_deref()),
            Some(value.as_slice()),
            "acknowledged record at {topic}-{partition}@{offset} is not readable"
        );
    }
}
