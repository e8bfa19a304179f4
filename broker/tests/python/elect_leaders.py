"""confluent-kafka's AdminClient.elect_leaders against one fjord node
(Kafka's ElectLeaders, api 43, as librdkafka sends it). One replica per
partition: every named partition answers ELECTION_NOT_NEEDED, an unknown
one UNKNOWN_TOPIC_OR_PARTITION; all partitions (None) answers nothing.
Exits 0 when every check holds.

Usage: elect_leaders.py KAFKA_HOST:PORT
"""

import sys

from confluent_kafka import ElectionType, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def code_of(error):
    """A result's error code (None: elected); librdkafka gives a
    KafkaError, the docs promise a KafkaException."""
    if error is None:
        return None
    if isinstance(error, KafkaException):
        error = error.args[0]
    return error.code()


def main():
    bootstrap = sys.argv[1]
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


if __name__ == "__main__":
    main()
