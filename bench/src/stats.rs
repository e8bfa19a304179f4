//! The shared clock, latency histograms and the counters actors publish for
//! the progress line.
//!
//! Latencies are nanoseconds on one monotonic clock for the whole process
//! ([`now_ns`]: time since a process-wide `Instant`), so a producer's
//! timestamp embedded in a record and a consumer's receipt time on another
//! thread compare directly.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::OnceLock;
use std::time::Instant;

use hdrhistogram::Histogram;

/// Largest latency a histogram holds (one hour); larger values saturate.
pub const LATENCY_NS_MAX: u64 = 3_600_000_000_000;
/// Significant figures kept by every histogram.
pub const SIGNIFICANT_FIGURES: u8 = 3;
/// Interval histograms waiting for the progress line, at most, per actor.
pub const PROGRESS_QUEUE_PER_ACTOR_MAX: usize = 8;

static BASE: OnceLock<Instant> = OnceLock::new();

/// Starts the process clock; call before any actor runs.
pub fn init_clock() {
    BASE.get_or_init(Instant::now);
}

/// Nanoseconds since the process clock started.
pub fn now_ns() -> u64 {
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// An `Instant` on the process clock, in nanoseconds (0 before the start).
pub fn instant_ns(at: Instant) -> u64 {
    at.saturating_duration_since(*BASE.get_or_init(Instant::now))
        .as_nanos() as u64
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, SIGNIFICANT_FIGURES)
        .expect("constant histogram bounds are valid")
}

/// Which latency a histogram measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Intended send time → acknowledgement, per record.
    Publish,
    /// Produce request written → its response, per request.
    Request,
    /// Intended send time → consumer receipt, per record.
    EndToEnd,
}

impl Metric {
    pub const ALL: [Metric; 3] = [Metric::Publish, Metric::Request, Metric::EndToEnd];

    pub fn name(self) -> &'static str {
        match self {
            Metric::Publish => "publish",
            Metric::Request => "request",
            Metric::EndToEnd => "end_to_end",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A histogram snapshot an actor sends for the progress line.
#[derive(Debug)]
pub struct IntervalSample {
    pub metric: Metric,
    pub histogram: Histogram<u64>,
}

/// Counters every actor adds to and the main thread reads. Relaxed: they
/// feed the progress line and the stop condition, which tolerate lag.
#[derive(Debug, Default)]
pub struct Counters {
    /// Records acknowledged (acks=0: written) without error.
    pub acked_messages: AtomicU64,
    pub acked_bytes: AtomicU64,
    pub failed_messages: AtomicU64,
    pub consumed_messages: AtomicU64,
    pub consumed_bytes: AtomicU64,
    /// Producers that have stopped (sent, acknowledged or given up).
    pub producers_done: AtomicUsize,
    /// Records consumers must see before stopping when there are no
    /// producers (set up front from the offsets).
    pub consume_target: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// An actor's view of the progress channel: keeps a histogram per metric
/// for the current interval and ships it once per interval.
#[derive(Debug)]
pub struct ProgressSender {
    sender: SyncSender<IntervalSample>,
    interval: [Option<Histogram<u64>>; 3],
    interval_ns: u64,
    next_ns: u64,
}

impl ProgressSender {
    pub fn new(sender: SyncSender<IntervalSample>, interval_ns: u64) -> ProgressSender {
        ProgressSender {
            sender,
            interval: [None, None, None],
            interval_ns,
            next_ns: now_ns() + interval_ns,
        }
    }

    pub fn record(&mut self, metric: Metric, value_ns: u64) {
        if self.interval_ns == 0 {
            return;
        }
        self.interval[metric.index()]
            .get_or_insert_with(new_histogram)
            .saturating_record(value_ns.max(1));
    }

    /// Ships the interval's histograms when the interval is over (or
    /// `force`). A full channel drops the sample: the progress line is
    /// best effort and must never slow an actor.
    pub fn maybe_ship(&mut self, now_ns: u64, force: bool) {
        if self.interval_ns == 0 || (!force && now_ns < self.next_ns) {
            return;
        }
        self.next_ns = now_ns + self.interval_ns;
        for metric in Metric::ALL {
            if let Some(histogram) = self.interval[metric.index()].as_mut() {
                if histogram.is_empty() {
                    continue;
                }
                let sample = IntervalSample {
                    metric,
                    histogram: histogram.clone(),
                };
                let _ = self.sender.try_send(sample);
                histogram.reset();
            }
        }
    }
}

/// The main thread's side: cumulative histograms for "p99 so far".
#[derive(Debug)]
pub struct ProgressReceiver {
    receiver: Receiver<IntervalSample>,
    so_far: [Histogram<u64>; 3],
}

impl ProgressReceiver {
    pub fn new(receiver: Receiver<IntervalSample>) -> ProgressReceiver {
        ProgressReceiver {
            receiver,
            so_far: [new_histogram(), new_histogram(), new_histogram()],
        }
    }

    pub fn drain(&mut self) {
        while let Ok(sample) = self.receiver.try_recv() {
            let _ = self.so_far[sample.metric.index()].add(&sample.histogram);
        }
    }

    /// p99 so far in nanoseconds, when anything was recorded.
    pub fn p99_ns(&self, metric: Metric) -> Option<u64> {
        let h = &self.so_far[metric.index()];
        (!h.is_empty()).then(|| h.value_at_quantile(0.99))
    }
}

/// The percentiles every report prints.
pub const PERCENTILES: [(f64, &str); 5] = [
    (50.0, "p50"),
    (90.0, "p90"),
    (99.0, "p99"),
    (99.9, "p99.9"),
    (99.99, "p99.99"),
];

/// Nanoseconds as a short human string.
pub fn fmt_ns(ns: u64) -> String {
    let ns = ns as f64;
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_histograms_keep_every_sample() {
        let mut a = new_histogram();
        let mut b = new_histogram();
        for v in 1..=1000 {
            a.saturating_record(v * 1000);
        }
        b.saturating_record(5_000_000_000);
        a.add(&b).expect("same bounds");
        assert_eq!(a.len(), 1001);
        assert!(a.max() >= 5_000_000_000 - 5_000_000);
        let mut last = 0;
        for (p, _) in PERCENTILES {
            let v = a.value_at_percentile(p);
            assert!(v >= last);
            last = v;
        }
    }

    #[test]
    fn durations_format() {
        assert_eq!(fmt_ns(500), "500 ns");
        assert_eq!(fmt_ns(1_500), "1.5 µs");
        assert_eq!(fmt_ns(2_500_000), "2.50 ms");
    }
}
