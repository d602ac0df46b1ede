"""Produce a JSONL file of event envelopes (and products) to Kafka.

Lines are sent as their original bytes: the flow validates them, so a malformed line
still goes to the web topic and ends up dead-lettered there, never silently dropped.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import orjson

from omnirec.settings import Settings
from online_models.events import partition_key
from online_models.messages import Raw

STORE_CHANNELS = frozenset({"store"})


def producer_config(settings: Settings, **extra) -> dict:
    conf = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 500_000,
        "compression.type": "none",
        "log_level": 3,
    }
    conf.update(extra)
    return conf


def route(line: bytes, settings: Settings) -> tuple[str, bytes | None, str]:
    """(topic, key, kind) for one raw JSONL line; kind is event/product/malformed."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return settings.topic_web, None, "malformed"
    if not isinstance(obj, dict):
        return settings.topic_web, None, "malformed"
    if obj.get("type") == "product":
        sku = obj.get("sku")
        return settings.topic_catalog, str(sku).encode() if sku is not None else None, "product"
    key = partition_key(obj)
    key_b = key.encode() if key is not None else None
    topic = settings.topic_store if obj.get("channel") in STORE_CHANNELS else settings.topic_web
    return topic, key_b, "event"


def as_records(lines: Iterable[bytes], settings: Settings) -> Iterator[Raw]:
    """JSONL lines as the records the flow would read had `omnirec replay` produced them: each
    on its topic (products to the catalog, events by channel), keyed as producers key them,
    one partition per topic, offsets in order (what the evaluators and benches feed the engine)."""
    offsets: dict[str, int] = {}
    for line in lines:
        topic, key, _ = route(line, settings)
        offset = offsets[topic] = offsets.get(topic, -1) + 1
        yield Raw(topic, 0, offset, key, line)


def _lines(path: str | Path):
    with open(path, "rb") as f:
        for raw in f:
            line = raw.rstrip(b"\r\n")
            if line.strip():
                yield line


def _produce(producer, topic: str, key: bytes | None, value: bytes, errors: list) -> None:
    def on_delivery(err, _msg):
        if err is not None:
            errors.append(err)

    while True:
        try:
            producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(0.05)


def produce_catalog(path: str | Path, settings: Settings, producer=None,
                    progress: bool = False) -> int:
    """Produce every line of a catalog JSONL file to ``topic_catalog`` keyed by sku."""
    from confluent_kafka import Producer

    own = producer is None
    producer = producer or Producer(producer_config(settings))
    errors: list = []
    n = 0
    for line in _lines(path):
        try:
            sku = orjson.loads(line).get("sku")
        except (orjson.JSONDecodeError, AttributeError):
            sku = None
        _produce(producer, settings.topic_catalog, str(sku).encode() if sku is not None else None,
                 line, errors)
        n += 1
        if n % 1000 == 0:
            producer.poll(0)
    if own:
        producer.flush(30)
    if errors:
        raise RuntimeError(f"{len(errors)} catalog messages failed, first: {errors[0]}")
    return n


def replay(path: str | Path, settings: Settings | None = None, rate: float | None = None,
           max_speed: bool = False, catalog: str | Path | None = None,
           progress: bool = True) -> dict[str, int]:
    """Produce ``path`` (JSONL envelopes) to Kafka; return counts by kind and topic.

    ``rate``: events per second (paced); ``max_speed`` or no rate: as fast as possible.
    ``catalog``: a products JSONL file produced to ``topic_catalog`` first.
    """
    from confluent_kafka import Producer

    settings = settings or Settings()
    producer = Producer(producer_config(settings))
    counts: Counter[str] = Counter()
    errors: list = []
    if catalog:
        counts["product"] += produce_catalog(catalog, settings, producer)
        counts[f"topic:{settings.topic_catalog}"] += counts["product"]

    pace = None if (max_speed or not rate) else 1.0 / float(rate)
    total_bytes = Path(path).stat().st_size

    prog = None
    task = None
    if progress:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )

        prog = Progress(TextColumn("replay {task.fields[n]} lines"), BarColumn(),
                        TransferSpeedColumn(), TimeElapsedColumn(),
                        console=Console(stderr=True), transient=False)
        prog.start()
        task = prog.add_task("replay", total=total_bytes, n=0)

    start = time.perf_counter()
    n = 0
    done_bytes = 0
    try:
        for line in _lines(path):
            topic, key, kind = route(line, settings)
            if pace is not None:
                due = start + n * pace
                now = time.perf_counter()
                if due > now:
                    producer.poll(0)
                    time.sleep(due - now)
            _produce(producer, topic, key, line, errors)
            counts[kind] += 1
            counts[f"topic:{topic}"] += 1
            n += 1
            done_bytes += len(line) + 1
            if n % 1000 == 0 or pace is not None:
                producer.poll(0)
                if prog is not None and (n % 1000 == 0 or pace is not None):
                    prog.update(task, completed=done_bytes, n=n)
        remaining = producer.flush(60)
        if prog is not None:
            prog.update(task, completed=total_bytes, n=n)
    finally:
        if prog is not None:
            prog.stop()
    if remaining:
        raise RuntimeError(f"{remaining} messages still undelivered after 60 s")
    if errors:
        raise RuntimeError(f"{len(errors)} messages failed, first: {errors[0]}")
    counts["lines"] = n
    counts["seconds_ms"] = int((time.perf_counter() - start) * 1000)
    return dict(counts)
