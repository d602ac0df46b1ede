"""The Kafka source reads every partition of a process through one consumer (flows/kafka_source.py):
each partition still gets all of its own records, in order, and its snapshot resumes it exactly."""

from __future__ import annotations

import time

from confluent_kafka import Producer

from flows.kafka_source import RestingKafkaSource
from omnirec.stack import create_topics, delete_topics

PARTITIONS = 4
PER_PARTITION = 300


def source(settings, topics):
    return RestingKafkaSource([settings.kafka_bootstrap], topics, tail=True, starting_offset=-2,
                              add_config={"fetch.wait.max.ms": "50"}, batch_size=50, raise_on_errors=False,
                              idle_poll_s=0.0)


def drain(parts: dict[str, object], wanted: int, timeout_s: float = 60.0) -> dict[str, list[bytes]]:
    """Ask the partitions in turn, as bytewax does, until ``wanted`` records arrived."""
    got: dict[str, list[bytes]] = {name: [] for name in parts}
    deadline = time.monotonic() + timeout_s
    while sum(map(len, got.values())) < wanted and time.monotonic() < deadline:
        for name, part in parts.items():
            got[name].extend(msg.value for msg in part.next_batch())
    return got


def test_one_consumer_gives_each_partition_its_own_records_in_order_and_resumes_from_snapshots(settings):
    topics = [f"{settings.key_prefix}.a", f"{settings.key_prefix}.b"]
    create_topics(settings, topics, partitions=PARTITIONS)
    try:
        producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
        for topic in topics:
            for partition in range(PARTITIONS):
                for n in range(PER_PARTITION):
                    producer.produce(topic, f"{topic}/{partition}/{n}".encode(), partition=partition)
        assert producer.flush(30) == 0
        names = [f"{p}-{t}" for t in topics for p in range(PARTITIONS)]
        first = source(settings, topics)
        parts = {name: first.build_part("kafka_input", name, None) for name in names}
        got = drain(parts, len(names) * PER_PARTITION)
        for name in names:
            partition, topic = name.split("-", 1)
            assert got[name] == [f"{topic}/{partition}/{n}".encode() for n in range(PER_PARTITION)]
            assert parts[name].snapshot() == PER_PARTITION

        # a restart from a snapshot taken midway reads the rest, and only the rest
        for part in parts.values():
            part.close()
        again = source(settings, topics)
        parts = {name: again.build_part("kafka_input", name, 100) for name in names}
        rest = drain(parts, len(names) * (PER_PARTITION - 100))
        for name in names:
            partition, topic = name.split("-", 1)
            assert rest[name] == [f"{topic}/{partition}/{n}".encode() for n in range(100, PER_PARTITION)]
        for part in parts.values():
            part.close()
    finally:
        delete_topics(settings, topics)
