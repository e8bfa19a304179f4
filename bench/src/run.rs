//! One loadgen run: broker (embedded or given), topics, offsets, then the
//! actors on their pinned executors, the progress line, and the merged
//! results.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use fjord_net::client::accumulator::AccumulatorConfig;
use fjord_net::client::cluster::{routes, Endpoint, TopicState};
use fjord_net::client::producer_core::ProducerConfig;
use fjord_net::client::protocol::{NewTopic, LIST_OFFSETS_EARLIEST, LIST_OFFSETS_LATEST};
use fjord_net::client::{Client, ClientConfig, Metadata};
use fjord_schema::{ErrorCode, Offset, PartitionId};
use glommio::{LocalExecutorBuilder, Placement};

use crate::cli::{Bound, ConsumeFrom, Plan, Protocol};
use crate::consumer::{self, ConsumerSpec};
use crate::embedded::{self, EmbeddedCluster, Memory};
use crate::producer::{self, ProducerSpec, Wire};
use crate::report::{self, Report};
use crate::stats::{
    init_clock, now_ns, Counters, Metric, ProgressReceiver, ProgressSender,
    PROGRESS_QUEUE_PER_ACTOR_MAX,
};

/// Largest response frame accepted.
const FRAME_BYTES_MAX: u32 = 256 * 1024 * 1024;
/// Time between starting the executors and the first intended send.
const START_DELAY: Duration = Duration::from_millis(300);
/// How long topics may take to get leaders after creation.
const LEADER_WAIT: Duration = Duration::from_secs(30);

pub fn run(plan: Plan) -> Result<(), String> {
    init_clock();
    let args = &plan.args;
    let broker = if args.embedded {
        let broker = EmbeddedCluster::start(
            args.fjord_bin.as_deref(),
            args.data_dir.as_deref(),
            args.broker_shards,
            args.embedded_nodes,
        )?;
        for (i, node) in broker.nodes.iter().enumerate() {
            eprintln!(
                "loadgen: embedded broker {} pid {} on {} (data {})",
                i + 1,
                node.pid(),
                node.addr,
                node.data_dir.display()
            );
        }
        Some(broker)
    } else {
        None
    };
    let addr = match (&broker, &args.brokers) {
        (Some(broker), _) => broker.addr().to_owned(),
        (None, Some(addr)) => addr.clone(),
        (None, None) => return Err("no broker: pass --brokers HOST:PORT or --embedded".into()),
    };
    let wire = match (args.protocol, &broker, &args.kafka_brokers) {
        (Protocol::Native, _, _) => Wire::Native,
        (Protocol::Kafka, Some(broker), _) => Wire::Kafka {
            addr: broker.kafka_addr().to_owned(),
            pipelined_max: args.kafka_pipelining.then_some(args.max_in_flight),
        },
        (Protocol::Kafka, None, Some(addr)) => Wire::Kafka {
            addr: addr.clone(),
            pipelined_max: args.kafka_pipelining.then_some(args.max_in_flight),
        },
        (Protocol::Kafka, None, None) => {
            return Err("--protocol kafka needs --kafka-brokers HOST:PORT".into())
        }
    };
    if let Wire::Kafka { addr, .. } = &wire {
        eprintln!("loadgen: producers and consumers speak Kafka to {addr}");
    }
    // The memory figure is node 1's (the only node without --embedded-nodes).
    let result = run_against(
        &plan,
        &addr,
        &wire,
        broker.as_ref().map(|b| b.nodes[0].pid()),
    );
    if let Some(broker) = broker {
        if let Err(error) = broker.stop() {
            eprintln!("loadgen: stopping the broker: {error}");
        }
    }
    result
}

fn run_against(
    plan: &Plan,
    addr: &str,
    wire: &Wire,
    broker_pid: Option<u32>,
) -> Result<(), String> {
    let args = &plan.args;
    let topics: Vec<String> = if args.topics == 1 {
        vec![args.topic.clone()]
    } else {
        (0..args.topics)
            .map(|i| format!("{}-{i}", args.topic))
            .collect()
    };
    let client_config = ClientConfig {
        timeout: Duration::from_secs(60),
        frame_bytes_max: FRAME_BYTES_MAX,
        ..ClientConfig::default()
    };
    let mut admin = Client::connect(addr, client_config.clone())
        .map_err(|e| format!("cannot reach the broker at {addr}: {e}"))?;
    let metadata = ensure_topics(&mut admin, plan, &topics)?;
    let endpoints = count_endpoints(&metadata);

    // Where consumers start, and (consumer-only runs) how much they read.
    let counters = Arc::new(Counters::default());
    let mut assignment = Vec::new();
    let mut consume_target = 0u64;
    let mut leaders = LeaderClients {
        config: client_config,
        clients: BTreeMap::new(),
    };
    if args.consumers > 0 {
        for topic in &topics {
            let count = partition_count(&metadata, topic);
            let partitions: Vec<PartitionId> = (0..count).map(PartitionId).collect();
            let latest = offsets(
                &mut leaders,
                &metadata,
                topic,
                &partitions,
                LIST_OFFSETS_LATEST,
            )?;
            let earliest = offsets(
                &mut leaders,
                &metadata,
                topic,
                &partitions,
                LIST_OFFSETS_EARLIEST,
            )?;
            for ((partition, end), (_, start)) in latest.iter().zip(&earliest) {
                let from = match args.consume_from {
                    ConsumeFrom::Start => *end,
                    ConsumeFrom::Earliest => *start,
                };
                consume_target += end.0.saturating_sub(from.0);
                assignment.push((topic.clone(), *partition, from));
            }
        }
    }
    counters
        .consume_target
        .store(consume_target, Ordering::Relaxed);

    let start_ns = now_ns() + START_DELAY.as_nanos() as u64;
    let warmup_end_ns = start_ns + plan.warmup.as_nanos() as u64;
    let (stop_ns, messages) = match plan.bound {
        Bound::Time { duration } => (warmup_end_ns + duration.as_nanos() as u64, None),
        Bound::Count { messages, limit } => (start_ns + limit.as_nanos() as u64, Some(messages)),
    };
    let drain_deadline_ns = stop_ns + args.drain_timeout.as_nanos() as u64;

    let actors = args.producers + args.consumers;
    let (progress_tx, progress_rx) = sync_channel(actors * PROGRESS_QUEUE_PER_ACTOR_MAX);
    let interval_ns = (args.progress_interval * 1e9) as u64;
    let finished = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::with_capacity(actors);
    let mut actor_index = 0usize;
    let mut next_cpu = || {
        let cpu = plan.cpus[actor_index % plan.cpus.len()];
        actor_index += 1;
        cpu
    };

    for id in 0..args.consumers {
        let mine: Vec<_> = assignment
            .iter()
            .enumerate()
            .filter(|(i, _)| i % args.consumers == id)
            .map(|(_, a)| a.clone())
            .collect();
        let spec = ConsumerSpec {
            assignment: mine,
            metadata: metadata.clone(),
            partition_max_bytes: args.fetch_partition_max_bytes,
            fetch_max_bytes: args.fetch_max_bytes,
            frame_bytes_max: FRAME_BYTES_MAX,
            end_to_end: args.producers > 0,
            warmup_end_ns,
            producers: args.producers,
            wire: wire.clone(),
            // Without producers a timed run reads for the duration only.
            drain_deadline_ns: match (args.producers, plan.bound) {
                (0, Bound::Time { .. }) => stop_ns,
                _ => drain_deadline_ns,
            },
        };
        let counters = counters.clone();
        let progress = ProgressSender::new(progress_tx.clone(), interval_ns);
        let finished = finished.clone();
        let handle = builder(plan, &format!("consumer-{id}"), next_cpu())
            .spawn(move || async move {
                let result = consumer::run(spec, counters, progress).await;
                finished.fetch_add(1, Ordering::SeqCst);
                result
            })
            .map_err(|e| format!("cannot start consumer executor: {e}"))?;
        handles.push((false, handle));
    }

    let per_producer_rate = args.rate.map(|r| r / args.producers as f64);
    for id in 0..args.producers {
        let share = messages.map(|m| {
            m / args.producers as u64 + u64::from((id as u64) < m % args.producers as u64)
        });
        let spec = ProducerSpec {
            id,
            topics: topics.clone(),
            metadata: metadata.clone(),
            config: producer_config(plan, wire, &metadata, &topics),
            payload: args.payload,
            message_bytes: args.message_size,
            keys: args.keys.0,
            messages: share,
            interval_ns: per_producer_rate.map(|r| 1e9 / r),
            start_ns,
            warmup_end_ns,
            stop_ns,
            drain_deadline_ns,
            frame_bytes_max: FRAME_BYTES_MAX,
            endpoints,
            wire: wire.clone(),
        };
        let counters = counters.clone();
        let progress = ProgressSender::new(progress_tx.clone(), interval_ns);
        let finished = finished.clone();
        let handle = builder(plan, &format!("producer-{id}"), next_cpu())
            .spawn(move || async move {
                let result = producer::run(spec, counters.clone(), progress).await;
                counters.producers_done.fetch_add(1, Ordering::SeqCst);
                finished.fetch_add(1, Ordering::SeqCst);
                result
            })
            .map_err(|e| format!("cannot start producer executor: {e}"))?;
        handles.push((true, handle));
    }
    drop(progress_tx);

    let mut progress = ProgressReceiver::new(progress_rx);
    let started = Instant::now();
    let mut last = [0u64; 4];
    let mut last_at = Instant::now();
    let mut next_line = Instant::now() + Duration::from_secs_f64(args.progress_interval.max(0.1));
    while finished.load(Ordering::SeqCst) < actors {
        thread::sleep(Duration::from_millis(50));
        progress.drain();
        if args.progress_interval > 0.0 && Instant::now() >= next_line {
            next_line += Duration::from_secs_f64(args.progress_interval);
            let now = Instant::now();
            let current = [
                Counters::get(&counters.acked_bytes),
                Counters::get(&counters.acked_messages),
                Counters::get(&counters.consumed_bytes),
                Counters::get(&counters.consumed_messages),
            ];
            let seconds = now.duration_since(last_at).as_secs_f64().max(1e-9);
            let rate = |i: usize| current[i].saturating_sub(last[i]) as f64 / seconds;
            let line = progress_line(
                started.elapsed(),
                (rate(0), rate(1)),
                (rate(2), rate(3)),
                &progress,
            );
            eprintln!("{line}");
            last = current;
            last_at = now;
        }
    }
    let mut producers = Vec::new();
    let mut consumers = Vec::new();
    for (is_producer, handle) in handles {
        let result = handle
            .join()
            .map_err(|e| format!("an actor executor failed: {e}"))?;
        if is_producer {
            producers.push(result);
        } else {
            consumers.push(result);
        }
    }
    let memory: Option<Memory> = broker_pid.or(args.broker_pid).and_then(embedded::memory_of);

    let report = Report::build(plan, addr, &producers, &consumers, memory);
    report.print();
    if let Some(path) = &args.json {
        std::fs::write(path, report.json_text())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.svg {
        std::fs::write(path, report::svg(&report))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(error) = producers
        .iter()
        .find(|p| p.messages == 0)
        .and_then(|p| p.errors.first())
    {
        return Err(format!("a producer failed: {error}"));
    }
    let failed: u64 = producers.iter().map(|p| p.failed).sum();
    if failed > 0 {
        return Err(format!("{failed} records were not acknowledged"));
    }
    let errors: Vec<&String> = consumers.iter().flat_map(|c| &c.errors).collect();
    if let Some(error) = errors.first() {
        return Err(format!("a consumer failed: {error}"));
    }
    Ok(())
}

fn builder(plan: &Plan, name: &str, cpu: usize) -> LocalExecutorBuilder {
    let spin = if plan.args.no_spin {
        Duration::ZERO
    } else {
        Duration::from_millis(1)
    };
    LocalExecutorBuilder::new(Placement::Fixed(cpu))
        .name(name)
        .io_memory(plan.args.io_memory_bytes)
        .spin_before_park(spin)
}

/// The client's producer settings from the arguments. The in-flight limit
/// is per endpoint: natively one connection per shard that leads a
/// partition, each with up to `--max-in-flight` pipelined requests. The
/// Kafka listener is one endpoint, so the Kafka producer gets the same
/// total, `--max-in-flight` per leading shard: as that many connections
/// with one request each, or (`--kafka-pipelining`) as one connection per
/// leading shard with up to `--max-in-flight` pipelined on each.
fn producer_config(
    plan: &Plan,
    wire: &Wire,
    metadata: &Metadata,
    topics: &[String],
) -> ProducerConfig {
    let args = &plan.args;
    let in_flight_max = match wire {
        Wire::Native => args.max_in_flight,
        Wire::Kafka { .. } => {
            let shards: BTreeSet<u16> = metadata
                .topics
                .iter()
                .filter(|t| topics.contains(&t.name))
                .flat_map(|t| t.partitions.iter().map(|p| p.leader_shard))
                .collect();
            args.max_in_flight * shards.len().max(1)
        }
    };
    let record_size_max_bytes = (args.message_size + 4096).max(args.batch_size.min(1 << 20));
    let record_size_max_bytes = record_size_max_bytes.min(args.buffer_memory);
    let request_payload_max_bytes = (4 * 1024 * 1024).max(args.batch_size + 64 * 1024);
    let defaults = ProducerConfig::default();
    ProducerConfig {
        acks: args.acks,
        accumulator: AccumulatorConfig {
            batch_size_bytes: args.batch_size,
            linger: Duration::from_millis(args.linger_ms),
            buffer_memory_bytes: args.buffer_memory,
            record_size_max_bytes,
            compression: args.compression.codec(),
            ..AccumulatorConfig::default()
        },
        in_flight_per_connection_max: in_flight_max,
        request_payload_max_bytes: request_payload_max_bytes.max(record_size_max_bytes),
        ..defaults
    }
}

/// Creates missing topics and waits until every partition has a leader.
fn ensure_topics(admin: &mut Client, plan: &Plan, topics: &[String]) -> Result<Metadata, String> {
    let args = &plan.args;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let existing = admin
        .metadata(Some(&names))
        .map_err(|e| format!("metadata: {e}"))?;
    let missing: Vec<NewTopic> = topics
        .iter()
        .filter(|t| {
            !existing
                .topics
                .iter()
                .any(|i| &i.name == *t && i.error == ErrorCode::None)
        })
        .map(|name| NewTopic {
            name: name.clone(),
            partitions: Some(args.partitions),
            replication_factor: args.replication_factor,
            configs: args.topic_configs.clone(),
        })
        .collect();
    if !missing.is_empty() {
        let results = admin
            .create_topics(&missing, 60_000)
            .map_err(|e| format!("CreateTopics: {e}"))?;
        for result in results {
            if result.error != ErrorCode::None && result.error != ErrorCode::TopicAlreadyExists {
                return Err(format!(
                    "cannot create topic {}: {:?} {}",
                    result.name,
                    result.error,
                    result.message.unwrap_or_default()
                ));
            }
        }
    }
    let deadline = Instant::now() + LEADER_WAIT;
    loop {
        let metadata = admin
            .metadata(Some(&names))
            .map_err(|e| format!("metadata: {e}"))?;
        let ready = topics.iter().all(|t| {
            metadata.topics.iter().any(|i| {
                &i.name == t
                    && i.error == ErrorCode::None
                    && !i.partitions.is_empty()
                    && i.partitions
                        .iter()
                        .all(|p| p.error == ErrorCode::None && p.leader >= 0)
            })
        });
        if ready {
            for topic in topics {
                let count = partition_count(&metadata, topic);
                if count != args.partitions {
                    eprintln!(
                        "loadgen: note: topic {topic} exists with {count} partitions (not {})",
                        args.partitions
                    );
                }
            }
            return Ok(metadata);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "topics {names:?} have no leaders after {LEADER_WAIT:?}"
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn partition_count(metadata: &Metadata, topic: &str) -> u32 {
    metadata
        .topics
        .iter()
        .find(|t| t.name == topic)
        .map_or(0, |t| t.partitions.len() as u32)
}

fn count_endpoints(metadata: &Metadata) -> usize {
    let mut ports = BTreeSet::new();
    for broker in &metadata.brokers {
        ports.insert((broker.host.clone(), broker.port));
        for port in &broker.shard_ports {
            ports.insert((broker.host.clone(), *port));
        }
    }
    ports.len()
}

/// One admin connection per partition leader (a cluster's nodes each
/// answer ListOffsets only for the partitions they lead).
struct LeaderClients {
    config: ClientConfig,
    clients: BTreeMap<String, Client>,
}

impl LeaderClients {
    fn get(&mut self, endpoint: &Endpoint) -> Result<&mut Client, String> {
        let addr = format!("{}:{}", endpoint.host, endpoint.port);
        if !self.clients.contains_key(&addr) {
            let client = Client::connect(&addr, self.config.clone())
                .map_err(|e| format!("cannot reach the leader at {addr}: {e}"))?;
            self.clients.insert(addr.clone(), client);
        }
        self.clients
            .get_mut(&addr)
            .ok_or_else(|| format!("no connection to {addr}"))
    }
}

/// Offsets of `partitions` (ListOffsets to each partition's leader, in
/// chunks so a 10,000-partition topic stays within frame limits).
fn offsets(
    leaders: &mut LeaderClients,
    metadata: &Metadata,
    topic: &str,
    partitions: &[PartitionId],
    timestamp: i64,
) -> Result<Vec<(PartitionId, Offset)>, String> {
    let routes = routes(metadata, false);
    let Some(TopicState::Routed(route)) = routes.get(topic) else {
        return Err(format!("no route to the leaders of {topic}"));
    };
    let mut by_leader: BTreeMap<Endpoint, Vec<PartitionId>> = BTreeMap::new();
    for partition in partitions {
        let leader = route
            .leader(*partition)
            .ok_or_else(|| format!("{topic}-{}: no leader in the metadata", partition.0))?;
        by_leader
            .entry(leader.clone())
            .or_default()
            .push(*partition);
    }
    let mut found: BTreeMap<PartitionId, Offset> = BTreeMap::new();
    for (leader, led) in by_leader {
        let admin = leaders.get(&leader)?;
        for chunk in led.chunks(1000) {
            let query: Vec<(PartitionId, i64)> = chunk.iter().map(|p| (*p, timestamp)).collect();
            // A node named leader by another's metadata may not have
            // applied the topic yet: UNKNOWN_TOPIC_OR_PARTITION for a
            // moment after creation.
            let deadline = Instant::now() + LEADER_WAIT;
            let answers = loop {
                let answers = admin
                    .list_offsets(topic, &query)
                    .map_err(|e| format!("ListOffsets {topic} at {leader}: {e}"))?;
                let opening = answers
                    .iter()
                    .any(|a| a.error == ErrorCode::UnknownTopicOrPartition);
                if !opening || Instant::now() >= deadline {
                    break answers;
                }
                thread::sleep(Duration::from_millis(50));
            };
            for partition in chunk {
                let answer = answers
                    .iter()
                    .find(|a| a.partition == *partition)
                    .ok_or_else(|| format!("ListOffsets left out {topic}-{}", partition.0))?;
                if answer.error != ErrorCode::None {
                    return Err(format!(
                        "ListOffsets {topic}-{} at {leader}: {:?}",
                        partition.0, answer.error
                    ));
                }
                found.insert(*partition, answer.offset.unwrap_or(Offset(0)));
            }
        }
    }
    Ok(partitions
        .iter()
        .map(|p| (*p, found.get(p).copied().unwrap_or(Offset(0))))
        .collect())
}

fn progress_line(
    elapsed: Duration,
    produce: (f64, f64),
    consume: (f64, f64),
    progress: &ProgressReceiver,
) -> String {
    let p99 = |m: Metric| {
        progress
            .p99_ns(m)
            .map_or("-".to_owned(), crate::stats::fmt_ns)
    };
    format!(
        "[{:>6.1}s] produce {:>8.1} MB/s {:>9.0} msg/s p99 {} | consume {:>8.1} MB/s {:>9.0} msg/s e2e p99 {}",
        elapsed.as_secs_f64(),
        produce.0 / 1e6,
        produce.1,
        p99(Metric::Publish),
        consume.0 / 1e6,
        consume.1,
        p99(Metric::EndToEnd),
    )
}
