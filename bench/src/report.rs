//! The results: per-actor histograms merged into one per metric (never
//! averaged percentiles), throughput over the measured window, printed,
//! as JSON (every figure, the command line and the config) and as an SVG
//! latency-by-percentile chart.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::cli::{Bound, Plan};
use crate::embedded::Memory;
use crate::producer::{ActorResult, Window};
use crate::stats::{fmt_ns, new_histogram, Metric, PERCENTILES};

#[derive(Debug)]
pub struct Report {
    pub histograms: Vec<(Metric, Histogram<u64>)>,
    pub json: Value,
}

fn merge(
    results: &[ActorResult],
    pick: impl Fn(&ActorResult) -> &Histogram<u64>,
) -> Histogram<u64> {
    let mut merged = new_histogram();
    for result in results {
        // Same bounds everywhere, so adding cannot fail.
        let _ = merged.add(pick(result));
    }
    merged
}

fn window_json(window: &Window) -> Value {
    let seconds = match (window.first_ns, window.last_ns) {
        (Some(first), Some(last)) if last > first => Some((last - first) as f64 / 1e9),
        _ => None,
    };
    json!({
        "messages": window.messages,
        "bytes": window.bytes,
        "seconds": seconds,
        "mb_per_s": seconds.map(|s| window.bytes as f64 / s / 1e6),
        "msgs_per_s": seconds.map(|s| window.messages as f64 / s),
    })
}

pub fn histogram_json(h: &Histogram<u64>) -> Value {
    let mut percentiles = serde_json::Map::new();
    for (p, name) in PERCENTILES {
        let v = if h.is_empty() {
            Value::Null
        } else {
            json!(h.value_at_percentile(p))
        };
        percentiles.insert(name.to_owned(), v);
    }
    json!({
        "count": h.len(),
        "min": (!h.is_empty()).then(|| h.min()),
        "mean": (!h.is_empty()).then(|| h.mean()),
        "percentiles": percentiles,
        "max": (!h.is_empty()).then(|| h.max()),
    })
}

fn load_average() -> Option<String> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

impl Report {
    pub fn build(
        plan: &Plan,
        broker_addr: &str,
        producers: &[ActorResult],
        consumers: &[ActorResult],
        memory: Option<Memory>,
    ) -> Report {
        let args = &plan.args;
        let publish = merge(producers, |r| &r.publish);
        let request = merge(producers, |r| &r.request);
        let end_to_end = merge(consumers, |r| &r.end_to_end);
        let mut produced = Window::default();
        for p in producers {
            produced.merge(&p.measured);
        }
        let mut consumed = Window::default();
        for c in consumers {
            consumed.merge(&c.measured);
        }
        let errors: Vec<&String> = producers
            .iter()
            .chain(consumers)
            .flat_map(|r| &r.errors)
            .collect();
        let (bound, messages, duration) = match plan.bound {
            Bound::Time { duration } => ("time", None, Some(duration.as_secs_f64())),
            Bound::Count { messages, limit } => {
                ("count", Some(messages), Some(limit.as_secs_f64()))
            }
        };
        let json = json!({
            "command": std::env::args().collect::<Vec<_>>(),
            "config": {
                "producers": args.producers,
                "consumers": args.consumers,
                "topics": args.topics,
                "topic": args.topic,
                "partitions": args.partitions,
                "topic_configs": args.topic_configs,
                "message_size": args.message_size,
                "batch_size": args.batch_size,
                "linger_ms": args.linger_ms,
                "keys": args.keys.0,
                "acks": format!("{:?}", args.acks),
                "compression": format!("{:?}", args.compression),
                "payload": format!("{:?}", args.payload),
                "rate_msgs_per_s": args.rate,
                "protocol": args.protocol.name(),
                "kafka_pipelining": args.kafka_pipelining,
                "mode": if args.rate.is_some() { "fixed-rate" } else { "max-throughput" },
                "bound": bound,
                "messages": messages,
                "duration_s": duration,
                "warmup_s": plan.warmup.as_secs_f64(),
                "max_in_flight": args.max_in_flight,
                "buffer_memory": args.buffer_memory,
                "fetch_partition_max_bytes": args.fetch_partition_max_bytes,
                "fetch_max_bytes": args.fetch_max_bytes,
                "consume_from": format!("{:?}", args.consume_from),
                "cpus": plan.cpus,
                "spin_before_park_ms": if args.no_spin { 0 } else { 1 },
                "embedded": args.embedded,
                "broker_shards": args.broker_shards,
                "embedded_nodes": args.embedded.then_some(args.embedded_nodes),
                "replication_factor": args.replication_factor,
            },
            "machine": {
                "cpus_online": std::thread::available_parallelism().map_or(0, |n| n.get()),
                "load_average_at_end": load_average(),
            },
            "broker": {
                "address": broker_addr,
                "rss_bytes": memory.map(|m| m.rss_bytes),
                "peak_rss_bytes": memory.map(|m| m.peak_rss_bytes),
            },
            "producer": {
                "messages_sent": producers.iter().map(|p| p.messages).sum::<u64>(),
                "messages_acked": producers.iter().map(|p| p.acked).sum::<u64>(),
                "messages_failed": producers.iter().map(|p| p.failed).sum::<u64>(),
                "bytes_acked": producers.iter().map(|p| p.bytes).sum::<u64>(),
                "acked_timestamp_sum": producers
                    .iter()
                    .fold(0u64, |sum, p| sum.wrapping_add(p.timestamp_sum)),
                "measured": window_json(&produced),
            },
            "consumer": {
                "messages": consumers.iter().map(|c| c.messages).sum::<u64>(),
                "bytes": consumers.iter().map(|c| c.bytes).sum::<u64>(),
                "timestamp_sum": consumers
                    .iter()
                    .fold(0u64, |sum, c| sum.wrapping_add(c.timestamp_sum)),
                "measured": window_json(&consumed),
            },
            "latency_ns": {
                "publish": histogram_json(&publish),
                "request": histogram_json(&request),
                "end_to_end": histogram_json(&end_to_end),
            },
            "errors": errors,
        });
        Report {
            histograms: vec![
                (Metric::Publish, publish),
                (Metric::Request, request),
                (Metric::EndToEnd, end_to_end),
            ],
            json,
        }
    }

    pub fn json_text(&self) -> String {
        let mut text = serde_json::to_string_pretty(&self.json).unwrap_or_default();
        text.push('\n');
        text
    }

    pub fn print(&self) {
        let j = &self.json;
        let line = |side: &str, measured: &Value| {
            let num = |k: &str| measured[k].as_f64();
            match (num("mb_per_s"), num("msgs_per_s"), num("seconds")) {
                (Some(mb), Some(msgs), Some(s)) => println!(
                    "{side:<9} {mb:>10.1} MB/s {msgs:>12.0} msgs/s  ({} msgs in {s:.1} s measured)",
                    measured["messages"]
                ),
                _ => println!("{side:<9} (nothing measured)"),
            }
        };
        if self.json["config"]["producers"].as_u64().unwrap_or(0) > 0 {
            line("produce", &j["producer"]["measured"]);
            println!(
                "          sent {} acked {} failed {}",
                j["producer"]["messages_sent"],
                j["producer"]["messages_acked"],
                j["producer"]["messages_failed"]
            );
        }
        if self.json["config"]["consumers"].as_u64().unwrap_or(0) > 0 {
            line("consume", &j["consumer"]["measured"]);
            println!("          received {}", j["consumer"]["messages"]);
        }
        println!(
            "{:<11} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "latency", "count", "p50", "p90", "p99", "p99.9", "p99.99", "max"
        );
        for (metric, h) in &self.histograms {
            if h.is_empty() {
                continue;
            }
            let mut row = format!("{:<11} {:>9}", metric.name(), h.len());
            for (p, _) in PERCENTILES {
                let _ = write!(row, " {:>10}", fmt_ns(h.value_at_percentile(p)));
            }
            let _ = write!(row, " {:>10}", fmt_ns(h.max()));
            println!("{row}");
        }
        if let Some(rss) = j["broker"]["rss_bytes"].as_u64() {
            println!(
                "broker RSS {:.1} MiB (peak {:.1} MiB)",
                rss as f64 / 1048576.0,
                j["broker"]["peak_rss_bytes"].as_u64().unwrap_or(0) as f64 / 1048576.0
            );
        }
        for error in j["errors"].as_array().into_iter().flatten() {
            println!("error: {}", error.as_str().unwrap_or_default());
        }
    }
}

/// A chart line: name, colour, (percentile axis position, latency ns).
type ChartLine<'a> = (&'a str, &'a str, Vec<(f64, u64)>);

/// Percentile axis position: -log10(1 - p), so 50 → 0.3, 90 → 1, 99 → 2.
fn nines(percentile: f64) -> f64 {
    -(1.0 - percentile / 100.0).log10()
}

/// A latency-by-percentile chart: log-scale percentile axis
/// (50 / 90 / 99 / 99.9 / 99.99), log-scale latency axis, one line per
/// non-empty histogram.
pub fn svg(report: &Report) -> String {
    const W: f64 = 800.0;
    const H: f64 = 480.0;
    const LEFT: f64 = 80.0;
    const RIGHT: f64 = 150.0;
    const TOP: f64 = 40.0;
    const BOTTOM: f64 = 50.0;
    const X_MAX: f64 = 4.3;
    let colors = ["#1f77b4", "#2ca02c", "#d62728"];
    let lines: Vec<ChartLine<'_>> = report
        .histograms
        .iter()
        .zip(colors)
        .filter(|((_, h), _)| !h.is_empty())
        .map(|((metric, h), color)| {
            let points = (0..=200)
                .map(|i| {
                    let x = nines(50.0) + (X_MAX - nines(50.0)) * f64::from(i) / 200.0;
                    let p = 100.0 * (1.0 - 10f64.powf(-x));
                    (x, h.value_at_percentile(p).max(1))
                })
                .collect();
            (metric.name(), color, points)
        })
        .collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">loadgen latency by percentile</text>"#,
        LEFT + (W - LEFT - RIGHT) / 2.0
    );
    let (lo, hi) = lines
        .iter()
        .flat_map(|(_, _, pts)| pts.iter().map(|(_, v)| *v))
        .fold((u64::MAX, 1u64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let lo_exp = if lo == u64::MAX {
        3.0
    } else {
        (lo as f64).log10().floor()
    };
    let hi_exp = ((hi as f64).log10().ceil()).max(lo_exp + 1.0);
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let sx = |x: f64| LEFT + plot_w * (x - nines(50.0)) / (X_MAX - nines(50.0));
    let sy = |v: u64| TOP + plot_h * (1.0 - ((v as f64).log10() - lo_exp) / (hi_exp - lo_exp));
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#444"/>"##
    );
    for (p, label) in [
        (50.0, "50"),
        (90.0, "90"),
        (99.0, "99"),
        (99.9, "99.9"),
        (99.99, "99.99"),
    ] {
        let x = sx(nines(p));
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 18.0
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        LEFT + plot_w / 2.0,
        H - 10.0
    );
    let mut exp = lo_exp;
    while exp <= hi_exp {
        let v = 10f64.powf(exp) as u64;
        let y = sy(v.max(1));
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0,
            fmt_ns(v)
        );
        exp += 1.0;
    }
    let _ = writeln!(
        out,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">latency (log scale)</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    for (i, (name, color, points)) in lines.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .map(|(x, v)| format!("{:.1},{:.1}", sx(*x), sy(*v)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        let y = TOP + 20.0 + 20.0 * i as f64;
        let x = LEFT + plot_w + 12.0;
        let _ = writeln!(
            out,
            r#"<line x1="{x:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{color}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{name}</text>"#,
            x + 20.0,
            x + 26.0,
            y + 4.0
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_axis_is_in_nines() {
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
    }
}
