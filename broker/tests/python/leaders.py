"""Leadership apis against one fjord node with confluent-kafka
(librdkafka):

- AdminClient.elect_leaders (Kafka's ElectLeaders, api 43): one replica
  per partition, so every named partition answers ELECTION_NOT_NEEDED, an
  unknown one UNKNOWN_TOPIC_OR_PARTITION; all partitions (None) answers
  nothing;
- a consumer's position validation (KIP-320, OffsetForLeaderEpoch, api
  23): assigned at offset 10 of leader epoch 0 where epoch 0 ends at 3,
  the consumer reports the log truncation with the broker's end offset
  3 (auto.offset.reset=error); without a leader epoch the same position
  is just out of range; offset 1 of epoch 0 validates and reads.

Exits 0 when every check holds.

Usage: leaders.py KAFKA_HOST:PORT
"""

import sys
import time

from confluent_kafka import (
    Consumer,
    ElectionType,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

STEP_SECONDS_MAX = 30


def code_of(error):
    """A result's error code (None: elected); librdkafka gives a
    KafkaError, the docs promise a KafkaException."""
    if error is None:
        return None
    if isinstance(error, KafkaException):
        error = error.args[0]
    return error.code()


def elect_leaders(bootstrap):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = "elect-py"
    for future in admin.create_topics([NewTopic(topic, 2, 1)], operation_timeout=30).values():
        future.result(timeout=60)

    # No operation_timeout: confluent-kafka 2.16.1's elect_leaders raises
    # SystemError on any keyword argument (its C argument parser).
    for kind in (ElectionType.PREFERRED, ElectionType.UNCLEAN):
        asked = [TopicPartition(topic, 0), TopicPartition(topic, 1), TopicPartition(topic, 7)]
        results = admin.elect_leaders(kind, asked).result(timeout=60)
        codes = {(tp.topic, tp.partition): code_of(error) for tp, error in results.items()}
        want = {
            (topic, 0): KafkaError.ELECTION_NOT_NEEDED,
            (topic, 1): KafkaError.ELECTION_NOT_NEEDED,
            (topic, 7): KafkaError.UNKNOWN_TOPIC_OR_PART,
        }
        if codes != want:
            sys.exit(f"{kind}: got {codes}, want {want}")

    everything = admin.elect_leaders(ElectionType.PREFERRED, None)
    results = everything.result(timeout=60)
    if results:
        sys.exit(f"all partitions: got {results}, want no result (no election needed)")
    print("elect_leaders: ok")


def position_validation(bootstrap):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = "epochs-py"
    for future in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        future.result(timeout=60)
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(3):
        producer.produce(topic, value=b"before-%d" % i, partition=0)
    if producer.flush(STEP_SECONDS_MAX) != 0:
        sys.exit("records not delivered")

    def first_event(assigned):
        consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": "epochs-py",
            "enable.auto.commit": False,
            # No reset: the consumer reports what it found instead.
            "auto.offset.reset": "error",
        })
        consumer.assign([assigned])
        deadline = time.time() + STEP_SECONDS_MAX
        try:
            while time.time() < deadline:
                message = consumer.poll(0.2)
                if message is not None:
                    return message
            sys.exit(f"no event for {assigned}")
        finally:
            consumer.close()

    def error_of(message):
        error = message.error()
        if error is None:
            sys.exit(f"read offset {message.offset()}, want an error")
        return error.code(), error.str()

    # With the epoch: OffsetForLeaderEpoch says epoch 0 ends at 3.
    code, text = error_of(first_event(TopicPartition(topic, 0, 10, leader_epoch=0)))
    want = "log truncation detected at offset 10 (leader epoch 0): broker end offset is 3 " \
        "(offset leader epoch 0)"
    if code != KafkaError._AUTO_OFFSET_RESET or want not in text:
        sys.exit(f"with leader epoch: got {code} {text!r}, want {want!r}")
    # Without it: no validation, the fetch is out of range.
    code, text = error_of(first_event(TopicPartition(topic, 0, 10)))
    if code != KafkaError._AUTO_OFFSET_RESET or "Offset out of range" not in text:
        sys.exit(f"without leader epoch: got {code} {text!r}")
    # A position inside epoch 0 validates and reads on.
    message = first_event(TopicPartition(topic, 0, 1, leader_epoch=0))
    if message.error() or (message.offset(), message.leader_epoch()) != (1, 0):
        sys.exit(f"at offset 1: got {message.error() or (message.offset(), message.leader_epoch())}")
    print("position validation: ok")


def main():
    bootstrap = sys.argv[1]
    elect_leaders(bootstrap)
    position_validation(bootstrap)


if __name__ == "__main__":
    main()
