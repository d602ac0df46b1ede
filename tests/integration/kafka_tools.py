"""Produce to and read from the real broker, and wait on Redis, for integration tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from omnirec.settings import Settings


def produce(settings: Settings, topic: str, records: Iterable[tuple[bytes | None, bytes | dict]]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True,
                         "linger.ms": 5})
    for key, value in records:
        payload = value if isinstance(value, bytes) else orjson.dumps(value)
        producer.produce(topic, key=key, value=payload)
    assert producer.flush(15) == 0, "broker did not take every message"


def consume(settings: Settings, topic: str, expected: int, timeout: float = 30.0):
    """Read a topic from the beginning by assignment (no group join) until `expected` arrive."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "tests",
                         "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        messages, deadline = [], time.monotonic() + timeout
        while len(messages) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                messages.append(msg)
        return messages
    finally:
        consumer.close()


def wait_for(condition: Callable[[], object], timeout: float = 60.0, what: str = "condition",
             every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
