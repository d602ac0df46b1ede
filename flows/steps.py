"""The flow's edges: Kafka records in, Kafka records out, and the filters the wiring names.

Nothing here decides anything; the engine (`online_models.engine`) does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from online_models import keys
from online_models.churn import Alert
from online_models.messages import WRITE_TYPES, DeadLetter, Raw


@dataclass
class FlowMetrics:
    """Process-wide counters; each Redis sink partition adds what it has not yet reported."""

    messages: int = 0
    reported: int = 0

    def take(self) -> int:
        delta, self.reported = self.messages - self.reported, self.messages
        return delta


FLOW_METRICS = FlowMetrics()


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def from_kafka(msg: Any, error: str | None = None) -> Raw | DeadLetter:
    """A Kafka record as the engine sees it, stamped with the wall time it was read (the only
    wall time events carry: it bounds how far in the future an event may claim to be)."""
    FLOW_METRICS.messages += 1
    raw = Raw(msg.topic, msg.partition, msg.offset, msg.key, msg.value, wall_ms())
    return raw if error is None else DeadLetter(raw, error)


_WRITES = frozenset(WRITE_TYPES)


def is_write(message: Any) -> bool:
    return type(message) in _WRITES


def is_dead_letter(message: Any) -> bool:
    return type(message) is DeadLetter


def is_alert(message: Any) -> bool:
    return type(message) is Alert


def alert_message(alert: Alert):
    from bytewax.connectors.kafka import KafkaSinkMessage

    return KafkaSinkMessage(key=alert.customer_id.encode(), value=keys.encode_alert(alert))


def dead_letter_message(letter: DeadLetter):
    """Original key and bytes, with the reason and the source position in headers."""
    from bytewax.connectors.kafka import KafkaSinkMessage

    raw = letter.raw
    headers = [
        ("reason", letter.reason.encode()),
        ("source_topic", raw.topic.encode()),
        ("source_partition", str(raw.partition).encode()),
        ("source_offset", str(raw.offset).encode()),
    ]
    return KafkaSinkMessage(key=raw.key, value=raw.value if raw.value is not None else b"", headers=headers)
