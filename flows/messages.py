"""What travels between the flow's steps and into its sinks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class RawMessage:
    """A Kafka record as the flow saw it, kept whole so a dead letter can carry it back."""

    topic: str
    partition: int | None
    offset: int | None
    key: bytes | None
    value: bytes | None

    @classmethod
    def from_kafka(cls, msg: Any) -> RawMessage:
        return cls(msg.topic, msg.partition, msg.offset, msg.key, msg.value)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    raw: RawMessage
    reason: str


@dataclass(frozen=True, slots=True)
class Write:
    """One absolute write to Redis. `value` may be a live state object, encoded by the sink
    once per batch: several updates of one key inside a batch cost one encode and one SET."""

    kind: str  # customer | link | neighbors | product | offer | offer_stats | ranker | churn_shard | alert | zadd | sadd
    key: str
    value: Any
    member: str | None = None

    @property
    def slot(self) -> tuple[str, str | None]:
        return (self.key, self.member)
