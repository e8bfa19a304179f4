#!/usr/bin/env python3
"""confluent-kafka driver for the replication tests (issue 14; run by
broker/tests/replication.rs against a 3-node Fjord cluster).

    python3 replication_clients.py produce BOOTSTRAP --topic T --partitions P
        --out ACKS.jsonl [--stop-file F | --records N] [--tag TAG]
        [--per-second R] [--message-timeout-ms MS] [--request-timeout-ms MS]
    python3 replication_clients.py consume BOOTSTRAP --topic T --partitions P
        --out READ.jsonl [--min-ends P:OFFSET,...]
    python3 replication_clients.py follow BOOTSTRAP --topic T --partitions P
        --out READ.jsonl --stop-file F
    python3 replication_clients.py group-commit BOOTSTRAP --topic T
        --partitions P --group G --per-partition N
    python3 replication_clients.py group-resume BOOTSTRAP --topic T
        --partitions P --group G

produce: an idempotent producer (acks=all) sends values TAG-0, TAG-1, ...
(key TAG-key-(i % 50)) round-robin over the partitions, R per second,
until the stop file exists (--stop-file) or N were sent (--records), then
flushes. Every delivery report is one JSON line in ACKS.jsonl, written and
flushed as it arrives so the test can follow the progress:
  {"i": 7, "t": 1764974400.25, "p": 1, "o": 2, "k": "...", "v": "...", "e": null}
("t" is the wall-clock time it was handed to the client, "e" the error's
name and text when the record was not acknowledged).
A fatal producer error is a line {"fatal": "..."}; the last line is
{"done": true, "sent": S, "unreported": U}.

consume: reads partitions 0..P from the beginning up to their high
watermarks (what is committed; with --min-ends P:OFFSET,... it first
waits, bounded, until each reached the given end: a new leader's high
watermark moves up only as its followers fetch), one JSON line per
record {"p", "o", "k", "v"} in READ.jsonl, then {"done": true}.

follow: reads partitions 0..P from the beginning while the cluster is
under faults (chaos.py), one JSON line per record {"p", "o", "k", "v"}
in READ.jsonl, written and flushed as it arrives, until the stop file
exists; then {"done": true}. Consumer errors are printed and retried.

group-commit: a consumer of group G subscribes to T, reads until it holds
the first N records of every partition, commits offset N for each
(synchronously), prints {"committed": {"0": N, ...}} and leaves the group.

group-resume: a new consumer of group G (auto.offset.reset=earliest, no
commits) subscribes to T and prints {"first": {"0": offset, ...},
"committed": {...}}: the offset of the first record it got from each
partition and what the group's committed offsets were.

Exit status 0 when the run completed, 1 when a bounded wait ran out (what
was expected and what was seen on stdout), 2 on bad usage, 3 after a
fatal producer error. Every wait has a deadline and a watchdog dumps all
stacks and exits if the whole run exceeds --run-seconds-max. No timing
assertions: deadlines only bound waits.
"""

import argparse
import faulthandler
import json
import os
import sys
import time

# Bound of any single wait (flush, consume, group join).
STEP_SECONDS_MAX = 90
POLL_SECONDS = 0.1


class Failure(Exception):
    """A bounded wait ran out."""


def deadline(seconds=STEP_SECONDS_MAX):
    return time.monotonic() + seconds


def common_config(bootstrap):
    return {
        "bootstrap.servers": bootstrap,
        "broker.address.family": "v4",
        # Follow leadership changes quickly.
        "topic.metadata.refresh.interval.ms": 1000,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 1000,
        "retry.backoff.ms": 100,
        "retry.backoff.max.ms": 1000,
        # Requests other than Produce (Metadata, ...) to a node that stopped
        # answering (SIGSTOP) give up after this, not librdkafka's 60 s.
        "socket.timeout.ms": 10000,
    }


def produce(args):
    from confluent_kafka import KafkaException, Producer

    config = common_config(args.bootstrap)
    config.update(
        {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "request.timeout.ms": args.request_timeout_ms,
            # Requests other than Produce (InitProducerId after a timeout,
            # Metadata) time out after this; librdkafka's 60 s default
            # would keep the producer waiting on a SIGSTOPped broker whose
            # connection stays up.
            "socket.timeout.ms": 5000,
            "message.timeout.ms": args.message_timeout_ms,
        }
    )
    out = open(args.out, "w", buffering=1)
    fatal = []

    def on_error(error):
        if error.fatal():
            fatal.append(str(error))
            out.write(json.dumps({"fatal": str(error)}) + "\n")

    config["error_cb"] = on_error
    if os.environ.get("REPLICATION_CLIENTS_DEBUG"):
        # librdkafka's own log of the idempotent producer (epoch bumps,
        # retries), for diagnosing a failure by hand.
        config["debug"] = os.environ["REPLICATION_CLIENTS_DEBUG"]
    producer = Producer(config)

    def report(i, partition):
        sent_at = time.time()

        def on_delivery(error, message):
            record = {
                "i": i,
                "t": sent_at,
                "p": message.partition() if error is None else partition,
                "o": message.offset() if error is None else -1,
                "k": message.key().decode(),
                "v": message.value().decode(),
                "e": None if error is None else f"{error.name()}: {error.str()}",
            }
            out.write(json.dumps(record) + "\n")

        return on_delivery

    def poll(timeout):
        # librdkafka may raise a fatal error from its own state here (e.g.
        # "Unable to reconstruct MessageSet" after epoch bumps): recorded,
        # and the loop ends with the closing line saying how many were
        # sent, so the checker knows every value that may be in the log.
        try:
            producer.poll(timeout)
        except KafkaException as error:
            fatal.append(str(error))
            out.write(json.dumps({"fatal": str(error)}) + "\n")

    sent = 0
    interval = 1.0 / args.per_second
    next_send = time.monotonic()
    while not fatal:
        if args.records is not None and sent >= args.records:
            break
        if args.stop_file is not None and os.path.exists(args.stop_file):
            break
        now = time.monotonic()
        if now < next_send:
            poll(min(next_send - now, POLL_SECONDS))
            continue
        next_send += interval
        partition = sent % args.partitions
        key = f"{args.tag}-key-{sent % 50}".encode()
        value = f"{args.tag}-{sent}".encode()
        try:
            producer.produce(
                args.topic,
                value=value,
                key=key,
                partition=partition,
                on_delivery=report(sent, partition),
            )
        except BufferError:
            # The local queue is full (a long failover): wait, send again.
            poll(POLL_SECONDS)
            next_send = time.monotonic()
            continue
        except KafkaException as error:
            fatal.append(str(error))
            out.write(json.dumps({"fatal": str(error)}) + "\n")
            break
        sent += 1
        poll(0)
    # Every record gets its report: acknowledged, or failed when
    # message.timeout.ms runs out.
    try:
        unreported = producer.flush(args.message_timeout_ms / 1000 + 30)
    except KafkaException as error:
        fatal.append(str(error))
        out.write(json.dumps({"fatal": str(error)}) + "\n")
        unreported = len(producer)
    out.write(json.dumps({"done": True, "sent": sent, "unreported": unreported}) + "\n")
    out.close()
    print(f"produce: sent {sent}, {unreported} without a report, fatal {fatal}", flush=True)
    return 3 if fatal else 0


def high_watermarks(consumer, topic, partitions, min_ends):
    """Each partition's high watermark, once it reached min_ends[p] (a new
    leader's moves up as its followers fetch), or what it is when the
    bounded wait runs out (the test then reports what is missing)."""
    from confluent_kafka import KafkaException, TopicPartition

    end = deadline()
    highs = {}
    while len(highs) < partitions:
        for p in range(partitions):
            if p in highs:
                continue
            try:
                _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)
                if high >= min_ends.get(p, 0) or time.monotonic() >= end:
                    highs[p] = high
            except KafkaException as error:
                if time.monotonic() >= end:
                    raise Failure(f"no high watermark of {topic}-{p}: {error}")
        if len(highs) < partitions:
            time.sleep(POLL_SECONDS)
    return highs


def consume(args):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    config = common_config(args.bootstrap)
    config.update({"group.id": f"replication-read-{args.topic}", "enable.auto.commit": False})
    consumer = Consumer(config)
    out = open(args.out, "w")
    try:
        min_ends = {}
        for item in filter(None, (args.min_ends or "").split(",")):
            p, _, o = item.partition(":")
            min_ends[int(p)] = int(o)
        highs = high_watermarks(consumer, args.topic, args.partitions, min_ends)
        print(f"consume: high watermarks {highs}", flush=True)
        consumer.assign(
            [TopicPartition(args.topic, p, OFFSET_BEGINNING) for p in range(args.partitions)]
        )
        positions = {p: 0 for p in range(args.partitions)}
        end = deadline()
        while any(positions[p] < highs[p] for p in positions):
            if time.monotonic() >= end:
                raise Failure(f"read up to {positions}, want {highs}, within {STEP_SECONDS_MAX}s")
            message = consumer.poll(POLL_SECONDS)
            if message is None:
                continue
            if message.error() is not None:
                print(f"consumer error (retrying): {message.error()}", flush=True)
                continue
            p, o = message.partition(), message.offset()
            positions[p] = max(positions[p], o + 1)
            if o < highs[p]:
                record = {
                    "p": p,
                    "o": o,
                    "k": (message.key() or b"").decode(),
                    "v": (message.value() or b"").decode(),
                }
                out.write(json.dumps(record) + "\n")
        out.write(json.dumps({"done": True}) + "\n")
    finally:
        out.close()
        consumer.close()
    return 0


def follow(args):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    config = common_config(args.bootstrap)
    config.update({"group.id": f"chaos-follow-{args.topic}", "enable.auto.commit": False})
    consumer = Consumer(config)
    out = open(args.out, "w", buffering=1)
    read = 0
    try:
        consumer.assign(
            [TopicPartition(args.topic, p, OFFSET_BEGINNING) for p in range(args.partitions)]
        )
        while not os.path.exists(args.stop_file):
            message = consumer.poll(POLL_SECONDS)
            if message is None:
                continue
            if message.error() is not None:
                print(f"consumer error (retrying): {message.error()}", flush=True)
                continue
            record = {
                "p": message.partition(),
                "o": message.offset(),
                "k": (message.key() or b"").decode(),
                "v": (message.value() or b"").decode(),
            }
            out.write(json.dumps(record) + "\n")
            read += 1
        out.write(json.dumps({"done": True}) + "\n")
    finally:
        out.close()
        consumer.close()
    print(f"follow: read {read}", flush=True)
    return 0


def group_consumer(args, extra):
    from confluent_kafka import Consumer

    config = common_config(args.bootstrap)
    config.update(
        {
            "group.id": args.group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 1000,
        }
    )
    config.update(extra)
    consumer = Consumer(config)
    consumer.subscribe([args.topic])
    return consumer


def committed(consumer, topic, partitions):
    from confluent_kafka import TopicPartition

    got = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=30)
    return {str(tp.partition): tp.offset for tp in got}


def group_commit(args):
    from confluent_kafka import TopicPartition

    consumer = group_consumer(args, {})
    held = {p: 0 for p in range(args.partitions)}
    end = deadline()
    try:
        while any(n < args.per_partition for n in held.values()):
            if time.monotonic() >= end:
                raise Failure(f"held {held}, want {args.per_partition} per partition")
            message = consumer.poll(POLL_SECONDS)
            if message is None:
                continue
            if message.error() is not None:
                print(f"consumer error (retrying): {message.error()}", flush=True)
                continue
            p = message.partition()
            held[p] = max(held[p], message.offset() + 1)
        offsets = [TopicPartition(args.topic, p, args.per_partition) for p in range(args.partitions)]
        # Synchronous: returns once the coordinator acknowledged the commit.
        for attempt in range(20):
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
                break
            except Exception as error:  # retriable while the group settles
                print(f"commit attempt {attempt}: {error}", flush=True)
                if time.monotonic() >= end:
                    raise Failure(f"commit not acknowledged: {error}")
                time.sleep(0.5)
        print(json.dumps({"committed": committed(consumer, args.topic, args.partitions)}), flush=True)
    finally:
        consumer.close()
    return 0


def group_resume(args):
    consumer = group_consumer(args, {})
    first = {}
    end = deadline()
    try:
        while len(first) < args.partitions:
            if time.monotonic() >= end:
                raise Failure(f"first records {first}, want one from each of {args.partitions}")
            message = consumer.poll(POLL_SECONDS)
            if message is None:
                continue
            if message.error() is not None:
                print(f"consumer error (retrying): {message.error()}", flush=True)
                continue
            first.setdefault(str(message.partition()), message.offset())
        seen = committed(consumer, args.topic, args.partitions)
        print(json.dumps({"first": first, "committed": seen}), flush=True)
    finally:
        consumer.close()
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["produce", "consume", "follow", "group-commit", "group-resume"])
    parser.add_argument("bootstrap")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--partitions", type=int, required=True)
    parser.add_argument("--out")
    parser.add_argument("--stop-file")
    parser.add_argument("--records", type=int)
    parser.add_argument("--tag", default="r")
    parser.add_argument("--per-second", type=float, default=400.0)
    parser.add_argument("--message-timeout-ms", type=int, default=60000)
    # chaos.py: 30000 (librdkafka's default), longer than any fault: a
    # request that times out is "possibly persisted", and librdkafka's
    # idempotent producer resends such a batch under a bumped epoch, which
    # no broker can tell from a new one (docs/CORRECTNESS.md).
    parser.add_argument("--request-timeout-ms", type=int, default=5000)
    parser.add_argument("--min-ends", help="consume: P:OFFSET,... high watermarks to wait for")
    parser.add_argument("--group")
    parser.add_argument("--per-partition", type=int)
    parser.add_argument("--run-seconds-max", type=int, default=400)
    args = parser.parse_args()
    if args.command in ("produce", "consume") and args.out is None:
        parser.error(f"{args.command} needs --out")
    if args.command == "follow" and (args.out is None or args.stop_file is None):
        parser.error("follow needs --out and --stop-file")
    if args.command == "produce" and (args.stop_file is None) == (args.records is None):
        parser.error("produce needs exactly one of --stop-file and --records")
    if args.command.startswith("group") and args.group is None:
        parser.error(f"{args.command} needs --group")
    if args.command == "group-commit" and args.per_partition is None:
        parser.error("group-commit needs --per-partition")
    faulthandler.dump_traceback_later(args.run_seconds_max, exit=True)
    run = {
        "produce": produce,
        "consume": consume,
        "follow": follow,
        "group-commit": group_commit,
        "group-resume": group_resume,
    }[args.command]
    try:
        return run(args)
    except Failure as failure:
        print(f"FAILED: {failure}", flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
