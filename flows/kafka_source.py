"""bytewax's Kafka source, resting between empty polls.

bytewax asks a source partition for its next batch again 1 ms after an empty one, and its Kafka
partition waits at most 1 ms in ``consume``: with 6 topics × 4 partitions an idle flow called
``consume`` about 12,000 times a second (most of the flow's idle CPU, measured with
`omnirec bench freshness`). librdkafka fetches in the background whatever the caller does, so a
partition that found nothing can rest for ``idle_poll_s`` (``OMNIREC_FLOW_IDLE_POLL_MS``) before
it is asked again: a quiet partition's next event waits at most that much longer, a busy one
never rests (its batches are not empty).

The step ids are those of ``bytewax.connectors.kafka.operators.input`` (``…kafka_input``), so a
recovery directory written by either resumes with the other.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from bytewax import operators as op
from bytewax.connectors.kafka import KafkaSource, KafkaSourceMessage
from bytewax.connectors.kafka.operators import KafkaOpOut
from bytewax.dataflow import Dataflow, operator
from bytewax.inputs import StatefulSourcePartition


class RestingPartition(StatefulSourcePartition):
    """One Kafka partition of bytewax's source, asked again ``idle`` after an empty batch."""

    def __init__(self, inner: StatefulSourcePartition, idle: timedelta) -> None:
        self._inner = inner
        self._idle = idle
        self._awake: datetime | None = None

    def next_batch(self) -> list[Any]:
        batch = self._inner.next_batch()
        self._awake = None if batch else datetime.now(timezone.utc) + self._idle
        return batch

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> Any:
        return self._inner.snapshot()

    def close(self) -> None:
        self._inner.close()


class RestingKafkaSource(KafkaSource):
    def __init__(self, *args: Any, idle_poll_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._idle = timedelta(seconds=idle_poll_s)

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> RestingPartition:
        return RestingPartition(super().build_part(step_id, for_part, resume_state), self._idle)


@operator
def kafka_input(step_id: str, flow: Dataflow, *, brokers: list[str], topics: list[str], starting_offset: int,
                batch_size: int, add_config: dict[str, str], idle_poll_s: float) -> KafkaOpOut:
    """Records (``oks``) and the source's errors (``errs``), as ``kop.input`` gives them."""
    records = op.input("kafka_input", flow, RestingKafkaSource(
        brokers, topics, tail=True, starting_offset=starting_offset, add_config=add_config,
        batch_size=batch_size, raise_on_errors=False, idle_poll_s=idle_poll_s))
    split = op.branch("split_err", records, lambda msg: isinstance(msg, KafkaSourceMessage))
    return KafkaOpOut(split.trues, split.falses)
