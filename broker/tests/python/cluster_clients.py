#!/usr/bin/env python3
"""confluent-kafka against a Fjord cluster through one bootstrap address
(issue 13; run by broker/tests/cluster.rs).

    python3 cluster_clients.py HOST:PORT --topic NAME --partitions P
        --nodes N --records R

Creates NAME with P partitions, waits until the cluster's metadata lists N
brokers each leading P/N of them, produces R keyed records (idempotent,
acks=all) round-robin over every partition, then reads every partition
from the beginning with manual assignment and checks that every
acknowledged record arrived exactly once, each partition in offset order,
with the key and value sent. Every request goes through the one bootstrap
address given; the client finds the leaders from the metadata.

Exit status 0 when all held, 1 at the first failure (what was expected and
what was seen), 2 on bad usage. Every wait has a deadline and a watchdog
dumps all stacks and exits if the whole run exceeds RUN_SECONDS_MAX. No
timing assertions: deadlines only bound waits.
"""

import argparse
import faulthandler
import sys
import time

# Bound of any single wait (admin call, metadata, produce, consume).
STEP_SECONDS_MAX = 60
# Below the Rust test's bound on the script (180 s).
RUN_SECONDS_MAX = 150
POLL_SECONDS = 0.2


class Failure(Exception):
    """Something other than what was expected."""


def check(condition, message):
    if not condition:
        raise Failure(message)


def deadline(seconds=STEP_SECONDS_MAX):
    return time.monotonic() + seconds


def create_topic(admin, topic, partitions):
    from confluent_kafka.admin import NewTopic

    futures = admin.create_topics([NewTopic(topic, partitions, 1)], request_timeout=30)
    futures[topic].result(timeout=STEP_SECONDS_MAX)


def wait_spread(admin, topic, partitions, nodes):
    """Waits until the metadata lists `nodes` brokers, each leading
    partitions/nodes of the topic's `partitions`; returns the leaders."""
    end = deadline()
    seen = None
    while time.monotonic() < end:
        meta = admin.list_topics(topic, timeout=10)
        described = meta.topics.get(topic)
        if described is not None and described.error is None:
            leaders = {p.id: p.leader for p in described.partitions.values()}
            counts = {}
            for leader in leaders.values():
                counts[leader] = counts.get(leader, 0) + 1
            seen = (sorted(meta.brokers), leaders, counts)
            spread = len(leaders) == partitions and sorted(counts.values()) == [
                partitions // nodes
            ] * nodes
            if len(meta.brokers) == nodes and spread and set(counts) <= set(meta.brokers):
                return leaders
        time.sleep(POLL_SECONDS)
    raise Failure(
        f"{topic}: want {nodes} brokers leading {partitions // nodes} partitions each; "
        f"saw (brokers, leaders, counts) {seen}"
    )


def produce(bootstrap, topic, partitions, records):
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "broker.address.family": "v4",
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
        }
    )
    delivered = []
    errors = []

    def on_delivery(error, message):
        if error is not None:
            errors.append((message.value(), error))
        else:
            delivered.append(
                (message.partition(), message.offset(), message.key(), message.value())
            )

    sent = []
    for i in range(records):
        partition = i % partitions
        key = f"python-key-{i % 40}".encode()
        value = f"python-value-{i}".encode()
        sent.append((partition, key, value))
        producer.produce(topic, value=value, key=key, partition=partition, on_delivery=on_delivery)
        producer.poll(0)
    left = producer.flush(STEP_SECONDS_MAX)
    check(left == 0, f"{left} records still unacknowledged after {STEP_SECONDS_MAX}s")
    check(not errors, f"delivery errors: {errors[:5]}")
    check(len(delivered) == records, f"{len(delivered)} of {records} acknowledged")
    # Each partition's records were acknowledged at increasing offsets, in
    # the order they were sent.
    by_partition = {}
    for partition, offset, key, value in sorted(delivered, key=lambda r: (r[0], r[1])):
        by_partition.setdefault(partition, []).append((offset, key, value))
    for partition in range(partitions):
        want = [(k, v) for p, k, v in sent if p == partition]
        got = [(k, v) for _o, k, v in by_partition.get(partition, [])]
        check(got == want, f"partition {partition}: acknowledged order {got[:3]}... != sent {want[:3]}...")
    return delivered


def consume(bootstrap, topic, partitions, expected):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "broker.address.family": "v4",
            "group.id": f"cluster-clients-{topic}",
            "enable.auto.commit": False,
            "topic.metadata.refresh.interval.ms": 1000,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    seen = []
    end = deadline()
    try:
        while len(seen) < expected:
            check(
                time.monotonic() < end,
                f"consumed {len(seen)} of {expected} within {STEP_SECONDS_MAX}s",
            )
            message = consumer.poll(POLL_SECONDS)
            if message is None:
                continue
            if message.error() is not None:
                print(f"consumer error (retrying): {message.error()}", flush=True)
                continue
            seen.append((message.partition(), message.offset(), message.key(), message.value()))
    finally:
        consumer.close()
    return seen


def check_read_back(delivered, consumed, partitions):
    idents = [(p, o) for p, o, _k, _v in consumed]
    check(len(set(idents)) == len(idents), "a record was read twice")
    for partition in range(partitions):
        offsets = [o for p, o, _k, _v in consumed if p == partition]
        check(offsets == sorted(offsets), f"partition {partition} read out of order: {offsets[:10]}")
        check(offsets, f"partition {partition}: nothing read")
    check(
        sorted(consumed) == sorted(delivered),
        "what was read differs from what was acknowledged: "
        f"missing {sorted(set(delivered) - set(consumed))[:5]}, "
        f"unexpected {sorted(set(consumed) - set(delivered))[:5]}",
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bootstrap")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--partitions", type=int, required=True)
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--records", type=int, required=True)
    args = parser.parse_args()
    if args.partitions % args.nodes != 0:
        parser.error("--partitions must be a multiple of --nodes")
    faulthandler.dump_traceback_later(RUN_SECONDS_MAX, exit=True)

    import confluent_kafka
    from confluent_kafka.admin import AdminClient

    print(f"confluent-kafka {confluent_kafka.version()[0]}, bootstrap {args.bootstrap}", flush=True)
    admin = AdminClient({"bootstrap.servers": args.bootstrap, "broker.address.family": "v4"})
    try:
        create_topic(admin, args.topic, args.partitions)
        leaders = wait_spread(admin, args.topic, args.partitions, args.nodes)
        print(f"{args.topic}: leaders {leaders}", flush=True)
        delivered = produce(args.bootstrap, args.topic, args.partitions, args.records)
        print(f"{len(delivered)} records acknowledged", flush=True)
        consumed = consume(args.bootstrap, args.topic, args.partitions, len(delivered))
        check_read_back(delivered, consumed, args.partitions)
        print(f"read back all {len(consumed)} records, each partition in order", flush=True)
    except Failure as failure:
        print(f"FAILED: {failure}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
