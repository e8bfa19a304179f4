#!/usr/bin/env python3
"""Kafka clients from PyPI against Fjord's Kafka listener (issue 7).

    python3 kafka_clients.py {confluent-kafka|kafka-python} HOST:PORT
        [--assignor {range|cooperative-sticky}] [--fjord PATH --native HOST:PORT]

The same round trip as broker/tests/kafka_clients.rs, with a Python client:
admin create topic; an idempotent acks=all producer (keys, headers, explicit
timestamps, every partition); a manual-assignment consumer reading all of it
back intact; a group of two members sharing the partitions (non-empty
disjoint shares, union = all); explicit commits; a restarted member resuming
exactly at the commits; group admin; topic configs and an added partition;
admin delete topic. With --fjord and
--native, the native `fjord consume` reads what Python produced and `fjord
group describe` shows what it committed.

Exit status 0 when every scenario passed, 1 at the first failure (with what
was expected and what was seen), 2 on bad usage. Every wait has a deadline,
and a watchdog dumps all stacks and exits if the whole run exceeds
RUN_SECONDS_MAX: a broken broker cannot hang the caller. No timing
assertions: deadlines only bound waits.
"""

import argparse
import contextlib
import faulthandler
import json
import queue
import subprocess
import sys
import threading
import time
import traceback
import uuid

PARTITIONS = 3
# Records per produce round; keys spread them over every partition.
RECORDS_COUNT = 60
KEYS_COUNT = 12
TIMESTAMP_BASE_MS = 1_700_000_000_000
# Bound of any single wait (consume, rebalance, admin call).
STEP_SECONDS_MAX = 60
# Below the Rust test's bound on the script (270 s).
RUN_SECONDS_MAX = 240
POLL_SECONDS = 0.2
INCREMENTAL_ASSIGNORS = ("cooperative-sticky",)


class Failure(Exception):
    """A scenario saw something other than what it expected."""


def check(condition, message):
    if not condition:
        raise Failure(message)


class Deadline:
    def __init__(self, what, seconds=STEP_SECONDS_MAX):
        self.what = what
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self):
        return max(0.0, self.end - time.monotonic())

    def check(self, progress):
        """Fails with `progress` (a callable giving the state so far) once past."""
        if time.monotonic() >= self.end:
            raise Failure(f"{self.what}: no success within {self.seconds}s; {progress()}")


class Record:
    """One record as the test wrote it or a client read it back."""

    __slots__ = ("partition", "offset", "key", "value", "headers", "timestamp")

    def __init__(self, partition, offset, key, value, headers, timestamp):
        self.partition = partition
        self.offset = offset
        self.key = key
        self.value = value
        self.headers = tuple(headers)
        self.timestamp = timestamp

    def ident(self):
        return (self.partition, self.offset)

    def content(self):
        return (self.partition, self.offset, self.key, self.value, self.headers, self.timestamp)

    def __repr__(self):
        return "Record(p={} o={} k={!r} v={!r} h={!r} ts={})".format(*self.content())


def records_to_send(client, round_index):
    """RECORDS_COUNT records: keyed (one in ten without a key), headers with a
    duplicate key, an empty value and (where the client can send one) a null
    value; explicit timestamps."""
    tag = client.name
    out = []
    for i in range(RECORDS_COUNT):
        n = round_index * RECORDS_COUNT + i
        key = None if i % 10 == 9 else f"key-{i % KEYS_COUNT}".encode()
        value = f"{tag}-value-{n}".encode()
        headers = [("seq", str(n).encode()), ("origin", tag.encode()), ("dup", b"1"), ("dup", b"")]
        if i % 5 == 0 and client.null_header_values:
            headers.append(("nullable", None))
        out.append(Record(None, None, key, value, headers, TIMESTAMP_BASE_MS + n))
    return out


def check_same(expected, seen, what):
    """`seen` holds exactly `expected` (by partition and offset, every field
    equal), each partition in offset order."""
    by_ident = {}
    for r in seen:
        check(r.ident() not in by_ident, f"{what}: {r.ident()} delivered twice")
        by_ident[r.ident()] = r
    want = {r.ident(): r for r in expected}
    missing = sorted(set(want) - set(by_ident))
    extra = sorted(set(by_ident) - set(want))
    check(not missing, f"{what}: missing (partition, offset) {missing[:10]} of {len(missing)}")
    check(not extra, f"{what}: unexpected (partition, offset) {extra[:10]} of {len(extra)}")
    for ident, r in want.items():
        got = by_ident[ident]
        check(got.content() == r.content(), f"{what}: at {ident} expected {r!r}, got {got!r}")
    last = {}
    for r in seen:
        check(
            last.get(r.partition, -1) < r.offset,
            f"{what}: partition {r.partition} went back to offset {r.offset} after {last.get(r.partition)}",
        )
        last[r.partition] = r.offset


def attach_offsets(sent, delivered):
    """Records as sent, with the partition and offset the producer was told."""
    check(len(delivered) == len(sent), f"{len(delivered)} delivery reports for {len(sent)} records")
    out = []
    for r, (partition, offset) in zip(sent, delivered):
        out.append(Record(partition, offset, r.key, r.value, r.headers, r.timestamp))
    return out


def check_produced(produced):
    idents = [r.ident() for r in produced]
    check(len(set(idents)) == len(idents), f"two records acknowledged at the same offset: {idents}")
    partitions = {r.partition for r in produced}
    check(
        partitions == set(range(PARTITIONS)),
        f"records landed on partitions {sorted(partitions)}, expected all of 0..{PARTITIONS - 1}",
    )
    key_partition = {}
    for r in produced:
        if r.key is None:
            continue
        p = key_partition.setdefault(r.key, r.partition)
        check(p == r.partition, f"key {r.key!r} went to partitions {p} and {r.partition}")
    # Acknowledged offsets of one partition are in send order (idempotence
    # keeps order under retries).
    last = {}
    for r in produced:
        check(
            last.get(r.partition, -1) < r.offset,
            f"partition {r.partition}: offset {r.offset} acknowledged after {last.get(r.partition)}",
        )
        last[r.partition] = r.offset


# ---------------------------------------------------------------- clients


class ConfluentClient:
    """confluent-kafka (librdkafka bundled in the wheel)."""

    name = "confluent-kafka"
    null_header_values = True

    def __init__(self, bootstrap):
        import confluent_kafka
        from confluent_kafka import admin

        self.ck = confluent_kafka
        self.admin_mod = admin
        self.base = {"bootstrap.servers": bootstrap, "broker.address.family": "v4"}
        self.admin = admin.AdminClient(dict(self.base))

    def version(self):
        return f"confluent-kafka {self.ck.__version__}, librdkafka {self.ck.libversion()[0]}"

    def _wait(self, futures, what):
        for key, future in futures.items():
            try:
                future.result(timeout=STEP_SECONDS_MAX)
            except Exception as e:  # noqa: BLE001 - reported with its context
                raise Failure(f"{what} {key}: {e!r}") from e

    def create_topic(self, topic):
        new = self.admin_mod.NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)
        self._wait(self.admin.create_topics([new], operation_timeout=30), "create topic")

    def partition_count(self, topic):
        meta = self.admin.list_topics(timeout=STEP_SECONDS_MAX)
        t = meta.topics.get(topic)
        if t is None or t.error is not None:
            return None
        return len(t.partitions)

    def delete_topic(self, topic):
        self._wait(self.admin.delete_topics([topic], operation_timeout=30), "delete topic")

    def add_partitions(self, topic, total):
        new = self.admin_mod.NewPartitions(topic, total)
        self._wait(self.admin.create_partitions([new], operation_timeout=30), "create partitions")

    def alter_topic_config(self, topic, key, value):
        a = self.admin_mod
        entry = a.ConfigEntry(key, value, incremental_operation=a.AlterConfigOpType.SET)
        resource = a.ConfigResource("topic", topic, incremental_configs=[entry])
        self._wait(self.admin.incremental_alter_configs([resource]), "alter configs")

    def topic_config(self, topic):
        resource = self.admin_mod.ConfigResource("topic", topic)
        entries = self.admin.describe_configs([resource])[resource].result(timeout=STEP_SECONDS_MAX)
        source = self.admin_mod.ConfigSource
        return {k: (e.value, source(e.source).name) for k, e in entries.items()}

    def produce(self, topic, records):
        producer = self.ck.Producer(
            dict(self.base, **{"enable.idempotence": True, "acks": "all", "linger.ms": 5})
        )
        delivered = [None] * len(records)
        errors = []

        def report(i):
            def on_delivery(err, msg):
                if err is not None:
                    errors.append((i, err))
                else:
                    delivered[i] = (msg.partition(), msg.offset())

            return on_delivery

        for i, r in enumerate(records):
            extra = {} if r.partition is None else {"partition": r.partition}
            producer.produce(
                topic,
                **extra,
                key=r.key,
                value=r.value,
                headers=list(r.headers),
                timestamp=r.timestamp,
                on_delivery=report(i),
            )
        left = producer.flush(STEP_SECONDS_MAX)
        check(not errors, f"delivery errors: {errors[:5]}")
        check(left == 0, f"{left} records still unacknowledged after {STEP_SECONDS_MAX}s")
        return delivered

    def _record(self, msg):
        kind, ts = msg.timestamp()
        check(
            kind == self.ck.TIMESTAMP_CREATE_TIME,
            f"timestamp type {kind} at {msg.partition()}/{msg.offset()}, expected CreateTime",
        )
        return Record(msg.partition(), msg.offset(), msg.key(), msg.value(), msg.headers() or [], ts)

    def _poll(self, consumer):
        msg = consumer.poll(POLL_SECONDS)
        if msg is None:
            return []
        if msg.error() is not None:
            if msg.error().code() == self.ck.KafkaError._PARTITION_EOF:
                return []
            raise Failure(f"consumer error: {msg.error()}")
        return [self._record(msg)]

    def read_all(self, topic, count):
        consumer = self.ck.Consumer(
            dict(self.base, **{"group.id": f"manual-{uuid.uuid4()}", "enable.auto.commit": False})
        )
        try:
            consumer.assign(
                [self.ck.TopicPartition(topic, p, self.ck.OFFSET_BEGINNING) for p in range(PARTITIONS)]
            )
            seen = []
            deadline = Deadline("manual-assignment consumer")
            while len(seen) < count:
                deadline.check(lambda: f"read {len(seen)} of {count} records")
                seen.extend(self._poll(consumer))
            return seen
        finally:
            consumer.close()

    def group_member(self, group, topic, assignor, on_assign, on_revoke):
        consumer = self.ck.Consumer(
            dict(
                self.base,
                **{
                    "group.id": group,
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "session.timeout.ms": 30000,
                    "partition.assignment.strategy": assignor,
                },
            )
        )
        consumer.subscribe(
            [topic],
            on_assign=lambda _c, parts: on_assign({tp.partition for tp in parts}),
            on_revoke=lambda _c, parts: on_revoke({tp.partition for tp in parts}),
            on_lost=lambda _c, parts: on_revoke({tp.partition for tp in parts}),
        )
        return ConfluentMember(self, consumer, topic)

    def committed(self, group, topic):
        consumer = self.ck.Consumer(dict(self.base, **{"group.id": group, "enable.auto.commit": False}))
        try:
            parts = consumer.committed(
                [self.ck.TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=STEP_SECONDS_MAX
            )
            return {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in parts}
        finally:
            consumer.close()

    def list_groups(self):
        result = self.admin.list_consumer_groups(request_timeout=STEP_SECONDS_MAX).result(
            timeout=STEP_SECONDS_MAX
        )
        check(not result.errors, f"list groups errors: {result.errors}")
        return {g.group_id: str(g.state) for g in result.valid}

    def describe_group(self, group):
        futures = self.admin.describe_consumer_groups([group], request_timeout=STEP_SECONDS_MAX)
        d = futures[group].result(timeout=STEP_SECONDS_MAX)
        return str(d.state), len(d.members)

    def delete_group(self, group):
        futures = self.admin.delete_consumer_groups([group], request_timeout=STEP_SECONDS_MAX)
        self._wait(futures, "delete group")


class ConfluentMember:
    def __init__(self, client, consumer, topic):
        self.client = client
        self.consumer = consumer
        self.topic = topic

    def poll(self):
        return self.client._poll(self.consumer)

    def commit(self, offsets):
        ck = self.client.ck
        parts = [ck.TopicPartition(self.topic, p, o) for p, o in sorted(offsets.items())]
        result = self.consumer.commit(offsets=parts, asynchronous=False)
        errors = [(tp.partition, tp.error) for tp in result if tp.error is not None]
        check(not errors, f"commit errors: {errors}")

    def commit_positions(self):
        result = self.consumer.commit(asynchronous=False)
        errors = [(tp.partition, tp.error) for tp in result if tp.error is not None]
        check(not errors, f"commit errors: {errors}")

    def close(self):
        self.consumer.close()


class KafkaPythonClient:
    """kafka-python (pure Python)."""

    name = "kafka-python"
    # KafkaProducer.send refuses a None header value.
    null_header_values = False

    def __init__(self, bootstrap):
        import kafka
        import kafka.admin

        self.kafka = kafka
        self.bootstrap = bootstrap
        self.admin = kafka.KafkaAdminClient(
            bootstrap_servers=bootstrap, request_timeout_ms=STEP_SECONDS_MAX * 1000
        )

    def version(self):
        # api_version is left to auto-negotiation, which infers a Kafka
        # release from ApiVersions; shown for the record.
        inferred = getattr(getattr(self.admin, "_manager", None), "broker_version", None)
        return f"kafka-python {self.kafka.__version__}, broker version inferred {inferred}"

    def create_topic(self, topic):
        self.admin.create_topics(
            {topic: {"num_partitions": PARTITIONS, "replication_factor": 1}}, timeout_ms=30000
        )

    def partition_count(self, topic):
        topics = self.admin.describe_topics([topic])
        for t in topics:
            if t["name"] == topic and t["error_code"] == 0:
                return len(t["partitions"])
        return None

    def delete_topic(self, topic):
        self.admin.delete_topics([topic], timeout_ms=30000)

    def add_partitions(self, topic, total):
        self.admin.create_partitions({topic: total}, timeout_ms=30000)

    def alter_topic_config(self, topic, key, value):
        from kafka.admin import ConfigResource, ConfigResourceType

        self.admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs={key: value})])

    def topic_config(self, topic):
        from kafka.admin import ConfigResource, ConfigResourceType

        described = self.admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all"
        )
        entries = described["topic"][topic]
        return {k: (e["value"], str(e["config_source"])) for k, e in entries.items()}

    def produce(self, topic, records):
        producer = self.kafka.KafkaProducer(
            bootstrap_servers=self.bootstrap, enable_idempotence=True, acks="all", linger_ms=5
        )
        try:
            futures = [
                producer.send(
                    topic,
                    partition=r.partition,
                    key=r.key,
                    value=r.value,
                    headers=list(r.headers),
                    timestamp_ms=r.timestamp,
                )
                for r in records
            ]
            producer.flush(timeout=STEP_SECONDS_MAX)
            delivered = []
            for i, f in enumerate(futures):
                try:
                    meta = f.get(timeout=STEP_SECONDS_MAX)
                except Exception as e:  # noqa: BLE001 - reported with its context
                    raise Failure(f"record {i} not delivered: {e!r}") from e
                delivered.append((meta.partition, meta.offset))
            return delivered
        finally:
            producer.close(timeout=STEP_SECONDS_MAX)

    def _records(self, batches):
        out = []
        for records in batches.values():
            for m in records:
                check(
                    m.timestamp_type == 0,
                    f"timestamp type {m.timestamp_type} at {m.partition}/{m.offset}, expected CreateTime",
                )
                out.append(Record(m.partition, m.offset, m.key, m.value, m.headers or [], m.timestamp))
        return out

    def read_all(self, topic, count):
        tp = self.kafka.TopicPartition
        consumer = self.kafka.KafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None
        )
        try:
            parts = [tp(topic, p) for p in range(PARTITIONS)]
            consumer.assign(parts)
            consumer.seek_to_beginning(*parts)
            seen = []
            deadline = Deadline("manual-assignment consumer")
            while len(seen) < count:
                deadline.check(lambda: f"read {len(seen)} of {count} records")
                seen.extend(self._records(consumer.poll(timeout_ms=int(POLL_SECONDS * 1000))))
            return seen
        finally:
            consumer.close()

    def group_member(self, group, topic, assignor, on_assign, on_revoke):
        from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
        from kafka.coordinator.assignors.range import RangePartitionAssignor

        assignors = {"range": RangePartitionAssignor, "cooperative-sticky": CooperativeStickyAssignor}

        class Listener(self.kafka.ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                on_revoke({tp.partition for tp in revoked})

            def on_partitions_assigned(self, assigned):
                on_assign({tp.partition for tp in assigned})

        consumer = self.kafka.KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=30000,
            partition_assignment_strategy=(assignors[assignor],),
        )
        consumer.subscribe(topics=[topic], listener=Listener())
        return KafkaPythonMember(self, consumer, topic)

    def committed(self, group, topic):
        consumer = self.kafka.KafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=group, enable_auto_commit=False
        )
        try:
            return {
                p: consumer.committed(self.kafka.TopicPartition(topic, p)) for p in range(PARTITIONS)
            }
        finally:
            consumer.close(autocommit=False)

    def list_groups(self):
        return {g["group_id"]: str(g.get("group_state", "")) for g in self.admin.list_groups()}

    def describe_group(self, group):
        d = self.admin.describe_groups([group])[group]
        check(d["error"] is None, f"describe group {group}: {d['error']}")
        return str(d["group_state"]), len(d["members"])

    def delete_group(self, group):
        result = self.admin.delete_groups([group])
        check(result.get(group) == "OK", f"delete group {group}: {result}")


class KafkaPythonMember:
    def __init__(self, client, consumer, topic):
        self.client = client
        self.consumer = consumer
        self.topic = topic

    def poll(self):
        return self.client._records(self.consumer.poll(timeout_ms=int(POLL_SECONDS * 1000)))

    def commit(self, offsets):
        k = self.client.kafka
        self.consumer.commit(
            {k.TopicPartition(self.topic, p): k.OffsetAndMetadata(o, "", -1) for p, o in offsets.items()}
        )

    def commit_positions(self):
        self.consumer.commit()

    def close(self):
        self.consumer.close(autocommit=False)


CLIENTS = {c.name: c for c in (ConfluentClient, KafkaPythonClient)}


# ---------------------------------------------------------------- group members


class Member(threading.Thread):
    """One group member on its own thread (as an application runs it): polls
    until told to stop; commits and closes on its own thread, since neither
    client's consumer may be used from two threads.

    `read` keeps every record delivered with the number of the assignment it
    came under: after a rebalance a client may re-read what it read before
    (librdkafka restarts kept partitions at the committed offset) or go on
    from its position (kafka-python keeps it, as the Java client does)."""

    def __init__(self, client, group, topic, assignor, name):
        super().__init__(name=name, daemon=True)
        self.client = client
        self.group = group
        self.topic = topic
        self.assignor = assignor
        # Cooperative assignors hand out (and revoke) only what moves.
        self.incremental = assignor in INCREMENTAL_ASSIGNORS
        self.lock = threading.Lock()
        self.assigned = frozenset()
        self.assignments_count = 0
        self.read = []
        self.foreign = []
        self.error = None
        self.commands = queue.Queue()
        self.replies = queue.Queue()

    def _on_assign(self, partitions):
        with self.lock:
            if self.incremental:
                self.assigned = self.assigned | frozenset(partitions)
            else:
                self.assigned = frozenset(partitions)
            self.assignments_count += 1

    def _on_revoke(self, partitions):
        with self.lock:
            self.assigned = self.assigned - partitions

    def run(self):
        try:
            member = self.client.group_member(
                self.group, self.topic, self.assignor, self._on_assign, self._on_revoke
            )
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            self.error = e
            return
        try:
            while True:
                try:
                    command, arg = self.commands.get_nowait()
                except queue.Empty:
                    command = None
                if command is not None:
                    try:
                        getattr(member, "close" if command == "stop" else command)(*arg)
                        self.replies.put(("ok", None))
                    except BaseException as e:  # noqa: BLE001 - handed to the main thread
                        self.replies.put(("error", e))
                    if command == "stop":
                        return
                    continue
                records = member.poll()
                with self.lock:
                    for r in records:
                        if r.partition in self.assigned:
                            self.read.append((self.assignments_count, r))
                        else:
                            self.foreign.append((sorted(self.assigned), r))
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            self.error = e
            try:
                member.close()
            except BaseException:  # noqa: BLE001 - the first error is the one reported
                pass

    def call(self, command, *arg):
        self.commands.put((command, arg))
        try:
            status, value = self.replies.get(timeout=STEP_SECONDS_MAX)
        except queue.Empty:
            raise Failure(f"{self.name}: {command} did not return within {STEP_SECONDS_MAX}s") from None
        if status == "error":
            raise Failure(f"{self.name}: {command} failed: {value!r}") from value

    def snapshot(self):
        with self.lock:
            return self.assigned, list(self.read), list(self.foreign), self.assignments_count

    def stop(self):
        if self.is_alive():
            self.call("stop")
        self.join(STEP_SECONDS_MAX)
        check(not self.is_alive(), f"{self.name}: did not stop within {STEP_SECONDS_MAX}s")


@contextlib.contextmanager
def running_members(client, group, topic, assignor, names):
    """Members started on entry, closed (leaving the group) on exit. A
    failure while closing is reported only when nothing failed before."""
    members = [Member(client, group, topic, assignor, name) for name in names]
    for m in members:
        m.start()
    try:
        yield members
    except BaseException:
        for m in members:
            try:
                m.stop()
            except BaseException as e:  # noqa: BLE001 - the first failure is the one reported
                print(f"(while failing) {m.name} did not stop cleanly: {e!r}", flush=True)
        raise
    for m in members:
        m.stop()
    for m in members:
        if m.error is not None:
            raise Failure(f"{m.name} failed: {m.error!r}") from m.error


def distinct_records(read, assigned, what):
    """{(partition, offset): record} of what `read` ([(assignment, record)])
    holds of the `assigned` partitions. Fails when a record read twice
    differs, or when a partition goes back within one assignment."""
    out = {}
    last = {}
    for assignment, r in read:
        key = (assignment, r.partition)
        check(
            last.get(key, -1) < r.offset,
            f"{what}: partition {r.partition} went from offset {last.get(key)} to {r.offset}"
            f" within assignment {assignment}",
        )
        last[key] = r.offset
        if r.partition not in assigned:
            continue
        before = out.setdefault(r.ident(), r)
        check(
            before.content() == r.content(),
            f"{what}: {r.ident()} read twice with different contents: {before!r}, {r!r}",
        )
    return out


def wait_for_share(members, expected, what):
    """Waits until the members' assignments are non-empty, disjoint and cover
    every partition, and each member has read every expected record of the
    partitions it now owns; nothing else of them. Returns {member name:
    (assigned, records, assignments count)}."""
    by_partition = {}
    for r in expected:
        by_partition.setdefault(r.partition, []).append(r)

    state = {}

    def wanted(assigned):
        return {r.ident() for p in assigned for r in by_partition.get(p, [])}

    def progress():
        parts = []
        for m, (assigned, read, _f, n) in state.items():
            missing = sorted(wanted(assigned) - set(distinct_records(read, assigned, what)))
            parts.append(
                f"{m.name}: assigned {sorted(assigned)} after {n} assignments, read {len(read)}"
                f" records, missing (partition, offset) {missing[:10]} of {len(missing)}"
            )
        return "; ".join(parts)

    deadline = Deadline(what)
    while True:
        for m in members:
            if m.error is not None:
                raise Failure(f"{what}: {m.name} failed: {m.error!r}") from m.error
            state[m] = m.snapshot()
        for m, (_a, _r, foreign, _n) in state.items():
            check(not foreign, f"{what}: {m.name} got records of partitions it does not own: {foreign[:3]}")
        assignments = [a for a, _r, _f, _n in state.values()]
        union = frozenset().union(*assignments)
        if (
            all(assignments)
            and sum(len(a) for a in assignments) == len(union)
            and union == frozenset(range(PARTITIONS))
            and all(
                wanted(assigned) <= set(distinct_records(read, assigned, what))
                for assigned, read, _f, _n in state.values()
            )
        ):
            break
        deadline.check(progress)
        time.sleep(POLL_SECONDS)
    out = {}
    for m, (assigned, read, _f, n) in state.items():
        want = [r for p in assigned for r in by_partition.get(p, [])]
        seen = sorted(distinct_records(read, assigned, what).values(), key=Record.ident)
        check_same(want, seen, f"{what}: {m.name}")
        out[m.name] = (assigned, seen, n)
    return out


# ---------------------------------------------------------------- scenarios


def run(client, assignor, fjord, native):
    tag = client.name
    topic = f"py-{tag}-{uuid.uuid4().hex[:8]}"
    group = f"py-{tag}-group-{uuid.uuid4().hex[:8]}"

    started = time.monotonic()

    def step(name):
        print(f"[{tag} {time.monotonic() - started:6.1f}s] {name}", flush=True)

    step(f"client: {client.version()}; group assignor {assignor}")

    step(f"admin: create topic {topic} with {PARTITIONS} partitions")
    client.create_topic(topic)
    deadline = Deadline("topic visible in metadata")
    while client.partition_count(topic) != PARTITIONS:
        deadline.check(lambda: f"partition count {client.partition_count(topic)}")
        time.sleep(POLL_SECONDS)

    step("idempotent producer, acks=all: keys, headers, timestamps")
    sent = records_to_send(client, 0)
    produced = attach_offsets(sent, client.produce(topic, sent))
    check_produced(produced)
    counts = {p: sum(1 for r in produced if r.partition == p) for p in range(PARTITIONS)}
    step(f"  {len(produced)} records acknowledged, per partition {counts}")

    step("manual-assignment consumer reads everything back intact")
    check_same(produced, client.read_all(topic, len(produced)), "read back")

    if fjord is not None:
        step("native `fjord consume` reads the same records")
        check_same(produced, fjord_consume(fjord, native, topic, len(produced)), "fjord consume")

    step(f"group {group}: member-a alone gets every partition")
    with running_members(client, group, topic, assignor, ["member-a"]) as (member_a,):
        wait_for_share([member_a], produced, "one-member group")
        step("  member-b joins: after a rebalance the two share the partitions")
        with running_members(client, group, topic, assignor, ["member-b"]) as (member_b,):
            members = [member_a, member_b]
            shares = wait_for_share(members, produced, "two-member group")
            for name, (assigned, seen, assignments_count) in shares.items():
                step(
                    f"  {name}: partitions {sorted(assigned)}, {len(seen)} records"
                    f" (assignment {assignments_count})"
                )
            state, members_count = client.describe_group(group)
            check(members_count == 2, f"group {group} described with {members_count} members, expected 2")
            check("STABLE" in state.upper(), f"group {group} state {state}, expected Stable")
            # Commit the first half of every partition, each member its own.
            commits = {}
            for m in members:
                assigned, seen, _n = shares[m.name]
                offsets = {}
                for p in assigned:
                    in_p = sorted(r.offset for r in seen if r.partition == p)
                    offsets[p] = in_p[len(in_p) // 2]
                m.call("commit", offsets)
                commits.update(offsets)
            step(f"  committed {dict(sorted(commits.items()))}")
    committed = client.committed(group, topic)
    check(committed == commits, f"committed offsets read back {committed}, expected {commits}")

    if fjord is not None:
        step("native `fjord group describe` shows the same commits")
        committed = fjord_group_committed(fjord, native, group, topic)
        check(committed == commits, f"fjord group describe shows {committed}, expected {commits}")

    step("group admin: list and describe (group has no members)")
    groups = client.list_groups()
    check(group in groups, f"group {group} not listed: {groups}")
    state, members_count = client.describe_group(group)
    check(members_count == 0, f"group {group} has {members_count} members after both left")
    check("EMPTY" in state.upper(), f"group {group} state {state}, expected Empty")

    step("more records while nobody consumes")
    more_sent = records_to_send(client, 1)
    more = attach_offsets(more_sent, client.produce(topic, more_sent))
    check_produced(produced + more)

    step("restarted member resumes at the commits: no re-delivery, nothing missed")
    expected = [r for r in produced + more if r.offset >= commits[r.partition]]
    with running_members(client, group, topic, assignor, ["member-restarted"]) as (member,):
        shares = wait_for_share([member], expected, "restarted member")
        _assigned, seen, _n = shares[member.name]
        for p in range(PARTITIONS):
            first = min(r.offset for r in seen if r.partition == p)
            check(first == commits[p], f"partition {p}: resumed at {first}, committed {commits[p]}")
        member.call("commit_positions")
    ends = {p: max(r.offset for r in produced + more if r.partition == p) + 1 for p in range(PARTITIONS)}
    committed = client.committed(group, topic)
    check(committed == ends, f"after consuming everything committed {committed}, expected {ends}")

    step("admin: alter and describe a topic config")
    client.alter_topic_config(topic, "retention.ms", "3600000")
    config = client.topic_config(topic)
    value, source = config.get("retention.ms", (None, None))
    check(value == "3600000", f"retention.ms described as {value!r} after setting 3600000")
    check("DYNAMIC_TOPIC_CONFIG" in source, f"retention.ms source {source}, expected DYNAMIC_TOPIC_CONFIG")

    step("admin: add a partition, then produce to it")
    client.add_partitions(topic, PARTITIONS + 1)
    deadline = Deadline("added partition visible in metadata")
    while client.partition_count(topic) != PARTITIONS + 1:
        deadline.check(lambda: f"partition count {client.partition_count(topic)}")
        time.sleep(POLL_SECONDS)
    (first,) = records_to_send(client, 2)[:1]
    first.partition = PARTITIONS
    delivered = client.produce(topic, [first])
    check(delivered == [(PARTITIONS, 0)], f"record for the new partition acknowledged at {delivered}")

    step("group admin: delete the group")
    client.delete_group(group)
    deadline = Deadline("deleted group unlisted")
    while group in client.list_groups():
        deadline.check(lambda: "still listed")
        time.sleep(POLL_SECONDS)

    step(f"admin: delete topic {topic}")
    client.delete_topic(topic)
    deadline = Deadline("deleted topic gone from metadata")
    while client.partition_count(topic) is not None:
        deadline.check(lambda: f"partition count {client.partition_count(topic)}")
        time.sleep(POLL_SECONDS)


def fjord_run(command):
    """stdout of the native CLI `command`, which must exit 0 in time."""
    try:
        out = subprocess.run(command, capture_output=True, timeout=STEP_SECONDS_MAX, check=False)
    except subprocess.TimeoutExpired as e:
        raise Failure(f"{' '.join(command)} did not finish within {STEP_SECONDS_MAX}s") from e
    check(out.returncode == 0, f"{' '.join(command)} exited {out.returncode}: {out.stderr.decode()}")
    return out.stdout.decode()


def fjord_group_committed(fjord, native, group, topic):
    """{partition: committed offset} from `fjord group describe`'s table
    (TOPIC PARTITION COMMITTED LOG-END LAG OWNER)."""
    text = fjord_run([fjord, "group", "describe", group, "--brokers", native])
    committed = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0] == topic:
            committed[int(fields[1])] = None if fields[2] == "-" else int(fields[2])
    check(committed, f"no partition of {topic} in `fjord group describe {group}`:\n{text}")
    return committed


def fjord_consume(fjord, native, topic, count):
    command = [fjord, "consume", topic, "--brokers", native, "--count", str(count), "--format", "json"]
    seen = []
    for line in fjord_run(command).splitlines():
        j = json.loads(line)
        headers = [
            (h["key"], None if h["value"] is None else h["value"].encode()) for h in j["headers"]
        ]
        seen.append(
            Record(
                j["partition"],
                j["offset"],
                None if j["key"] is None else j["key"].encode(),
                None if j["value"] is None else j["value"].encode(),
                headers,
                j["timestamp"],
            )
        )
    return seen


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("library", choices=sorted(CLIENTS))
    parser.add_argument("bootstrap", help="the broker's Kafka listener HOST:PORT")
    parser.add_argument(
        "--assignor",
        choices=["range", *INCREMENTAL_ASSIGNORS],
        default="range",
        help="the group members' partition.assignment.strategy",
    )
    parser.add_argument("--fjord", help="path of the fjord binary, for the cross-protocol check")
    parser.add_argument("--native", help="the broker's native listener HOST:PORT")
    args = parser.parse_args()
    if (args.fjord is None) != (args.native is None):
        parser.error("--fjord and --native go together")
    faulthandler.dump_traceback_later(RUN_SECONDS_MAX, exit=True)
    try:
        client = CLIENTS[args.library](args.bootstrap)
        run(client, args.assignor, args.fjord, args.native)
    except Failure as e:
        traceback.print_exc()
        print(f"FAILED [{args.library}]: {e}", flush=True)
        return 1
    except Exception as e:  # noqa: BLE001 - a client exception is a failure too
        traceback.print_exc()
        print(f"FAILED [{args.library}]: unexpected {e!r}", flush=True)
        return 1
    print(f"[{args.library}] all scenarios passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
