"""The flow's edges: Kafka records in, Kafka records out, and the filters the wiring names.

Nothing here decides anything; the engine (`online_models.engine`) does.
"""

from __future__ import annotations

import time
from typing import Any

from flows import metrics
from online_models import keys
from online_models.churn import Alert
from online_models.messages import WRITE_TYPES, DeadLetter, Raw

# messages read, for the flow metrics hash in Redis: the Prometheus counter's, not a second count
FLOW_METRICS = metrics.Reported(metrics.EVENTS_IN)
_EVENTS_BY_TOPIC: dict[str, Any] = {}  # topic → its counter child (labels() takes a lock each time)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def from_kafka(msg: Any, error: str | None = None) -> Raw | DeadLetter:
    """A Kafka record as the engine sees it, stamped with the wall time it was read (the only
    wall time events carry: it bounds how far in the future an event may claim to be)."""
    _count_read(msg.topic, 1)
    metrics.POSITIONS.read(msg.topic, msg.partition, msg.offset)
    raw = Raw(msg.topic, msg.partition, msg.offset, msg.key, msg.value, wall_ms())
    return raw if error is None else DeadLetter(raw, error)


def batch_from_kafka(batch: list) -> list[Raw]:
    """``from_kafka`` for a batch the source read: one wall time for all of it (read at once), and
    the counters moved once per topic, not once per record (a lock each: 3 % of the flow's CPU)."""
    now = wall_ms()
    out, counts = [], {}
    positions = metrics.POSITIONS.read
    for msg in batch:
        topic = msg.topic
        counts[topic] = counts.get(topic, 0) + 1
        positions(topic, msg.partition, msg.offset)
        out.append(Raw(topic, msg.partition, msg.offset, msg.key, msg.value, now))
    for topic, n in counts.items():
        _count_read(topic, n)
    return out


def _count_read(topic: str, n: int) -> None:
    counter = _EVENTS_BY_TOPIC.get(topic)
    if counter is None:
        counter = _EVENTS_BY_TOPIC[topic] = metrics.EVENTS_IN.labels(str(topic))
    counter.inc(n)


_WRITES = frozenset(WRITE_TYPES)


def is_write(message: Any) -> bool:
    return type(message) in _WRITES


def is_dead_letter(message: Any) -> bool:
    return type(message) is DeadLetter


def is_alert(message: Any) -> bool:
    return type(message) is Alert


def alert_message(alert: Alert):
    from bytewax.connectors.kafka import KafkaSinkMessage

    metrics.CHURN_ALERTS.inc()
    return KafkaSinkMessage(key=alert.customer_id.encode(), value=keys.encode_alert(alert))


# A record must fit the broker's message.max.bytes (Kafka's default is about 1 MB; tansu rejects a
# larger one with MSG_SIZE_TOO_LARGE, and the output step would die on it). A dead letter's value
# is cut to this, its key and reason to less, so that the whole record stays well below 1 MB.
DEAD_LETTER_MAX_VALUE_BYTES = 512 * 1024
DEAD_LETTER_MAX_KEY_BYTES = 4096
DEAD_LETTER_MAX_REASON_BYTES = 2048


def dead_letter_message(letter: DeadLetter, max_value_bytes: int = DEAD_LETTER_MAX_VALUE_BYTES):
    """Original key and bytes, with the reason and the source position in headers.

    A value (or key) too large to re-produce whole is written truncated, with the headers
    ``truncated: true`` and ``original_size`` (bytes of the value as read), so the dead-letter
    output never fails on the message it is meant to keep."""
    from bytewax.connectors.kafka import KafkaSinkMessage

    metrics.DEAD_LETTERS.labels(metrics.reason_kind(letter.reason, letter.step)).inc()
    if letter.step is not None:
        metrics.STEP_ERRORS.labels(letter.step).inc()
    raw = letter.raw
    value = raw.value if raw.value is not None else b""
    key = raw.key
    reason = letter.reason.encode("utf-8", "replace")
    headers = [
        ("reason", reason[:DEAD_LETTER_MAX_REASON_BYTES]),
        ("source_topic", raw.topic.encode("utf-8", "replace")[:DEAD_LETTER_MAX_KEY_BYTES]),
        ("source_partition", str(raw.partition).encode()),
        ("source_offset", str(raw.offset).encode()),
    ]
    if letter.step is not None:
        headers.append(("step", letter.step.encode()))
    if len(value) > max_value_bytes or (key is not None and len(key) > DEAD_LETTER_MAX_KEY_BYTES):
        headers += [("truncated", b"true"), ("original_size", str(len(value)).encode())]
        if key is not None and len(key) > DEAD_LETTER_MAX_KEY_BYTES:
            headers.append(("original_key_size", str(len(key)).encode()))
            key = key[:DEAD_LETTER_MAX_KEY_BYTES]
        value = value[:max_value_bytes]
    return KafkaSinkMessage(key=key, value=value, headers=headers)
