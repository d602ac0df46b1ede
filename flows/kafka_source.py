"""bytewax's Kafka source, resting between empty polls.

bytewax asks a source partition for its next batch again 1 ms after an empty one, and its Kafka
partition waits at most 1 ms in ``consume``: with 6 topics × 4 partitions an idle flow called
``consume`` about 12,000 times a second (most of the flow's idle CPU, measured with
`omnirec bench freshness`). librdkafka fetches in the background whatever the caller does, so a
partition that found nothing can rest for ``idle_poll_s`` (``OMNIREC_FLOW_IDLE_POLL_MS``) before
it is asked again: a quiet partition's next event waits at most that much longer, a busy one
never rests (its batches are not empty).

One consumer per process, not per partition. bytewax's partition opens a librdkafka consumer of
its own, each with its threads, connections and fetch loop: 6 topics × 4 partitions made 24, and
an idle flow sent the broker 24 fetch requests per fetch wait. Here every partition of the source
in a process shares one consumer (``SharedConsumer``), assigned exactly the partitions this
process owns; a partition's ``next_batch`` takes what the consumer handed over for it and, when
it has nothing, consumes on behalf of all. Snapshots stay bytewax's (the next offset of each
Kafka partition), and what the consumer handed over but bytewax has not taken is read again
after a restart, as with one consumer per partition.

The step ids are those of ``bytewax.connectors.kafka.operators.input`` (``…kafka_input``), and
the snapshots the same, so a recovery directory written by either resumes with the other.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from datetime import datetime, timedelta, timezone
from typing import Any

from bytewax import operators as op
from bytewax.connectors.kafka import KafkaError, KafkaSource, KafkaSourceMessage
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


# After a consume that found nothing at all, the partitions that ask within this long get nothing
# without consuming again: bytewax asks each of a source's partitions in turn, and an idle flow
# made one consume (with its 1 ms wait) per partition per pass, a fifth of its CPU at 50 events/s.
QUIET_REST_S = 0.01


class SharedConsumer:
    """One librdkafka consumer for every partition of a source in this process: ``take`` hands
    each partition what was consumed for it, consuming for all when it has nothing waiting (but
    not again within ``QUIET_REST_S`` of a consume that found nothing). A partition holding more
    than ``hold`` records is paused on the broker until it is drained, so what waits stays
    bounded whatever order bytewax asks the partitions in."""

    def __init__(self, config: dict[str, Any], batch_size: int, consumer: Any = None,
                 clock=time.monotonic) -> None:
        from confluent_kafka import Consumer

        self._consumer = consumer if consumer is not None else Consumer(config)
        self._clock = clock
        self._quiet_until = 0.0
        self._batch_size = batch_size
        self._hold = 2 * batch_size
        self._waiting: dict[tuple[str, int], deque] = {}
        self._paused: set[tuple[str, int]] = set()
        self._lock = threading.Lock()  # a process's workers are threads: one consume at a time
        self.users = 0

    def assign(self, topic: str, partition: int, offset: int) -> None:
        from confluent_kafka import TopicPartition

        with self._lock:
            self._waiting[(topic, partition)] = deque()
            self._consumer.incremental_assign([TopicPartition(topic, partition, offset)])
            self.users += 1

    def take(self, topic: str, partition: int) -> list[Any]:
        """What was consumed for this partition (at most a batch), consuming first if nothing was."""
        key = (topic, partition)
        with self._lock:
            waiting = self._waiting[key]
            if not waiting and self._clock() >= self._quiet_until:
                self._consume(key)
            batch = [waiting.popleft() for _ in range(min(len(waiting), self._batch_size))]
            if key in self._paused and len(waiting) < self._batch_size:
                self._set_paused(key, False)
            return batch

    def _consume(self, asking: tuple[str, int]) -> None:
        consumed = self._consumer.consume(self._batch_size, 0.001)
        if not consumed:
            self._quiet_until = self._clock() + QUIET_REST_S
        for msg in consumed:
            key = (msg.topic(), msg.partition())
            waiting = self._waiting.get(key)
            if waiting is None:  # an error of the client, not of a partition: the caller reports it
                waiting, key = self._waiting[asking], asking
            waiting.append(_as_bytewax(msg))
            if len(waiting) > self._hold and key not in self._paused and key != asking:
                self._set_paused(key, True)

    def _set_paused(self, key: tuple[str, int], paused: bool) -> None:
        from confluent_kafka import TopicPartition

        (self._consumer.pause if paused else self._consumer.resume)([TopicPartition(*key)])
        (self._paused.add if paused else self._paused.discard)(key)

    def release(self) -> bool:
        """One partition closed; True (and the consumer closed) when it was the last."""
        with self._lock:
            self.users -= 1
            if self.users > 0:
                return False
            self._consumer.close()
            return True


def _as_bytewax(msg) -> KafkaSourceMessage | KafkaError:
    """A consumed record as bytewax's Kafka partition emits it (its errors wrapped, not raised)."""
    record = KafkaSourceMessage(key=msg.key(), value=msg.value(), topic=msg.topic(), headers=msg.headers() or [],
                                latency=msg.latency(), offset=msg.offset(), partition=msg.partition(),
                                timestamp=msg.timestamp())
    error = msg.error()
    return record if error is None else KafkaError(error, record)


class SharedPartition(StatefulSourcePartition):
    """One Kafka partition, read through the process's ``SharedConsumer``; its snapshot is the
    next offset to emit, as bytewax's own partition's."""

    def __init__(self, source: RestingKafkaSource, consumer: SharedConsumer, topic: str, partition: int,
                 offset: int) -> None:
        self._source, self._consumer = source, consumer
        self._topic, self._partition = topic, partition
        self._offset = offset
        consumer.assign(topic, partition, offset)

    def next_batch(self) -> list[Any]:
        from confluent_kafka import KafkaError as ConfluentError

        batch = []
        for item in self._consumer.take(self._topic, self._partition):
            if isinstance(item, KafkaError) and item.err.code() == ConfluentError._PARTITION_EOF:
                continue  # tail=True: the end of a partition is no error
            batch.append(item)
            record = item if isinstance(item, KafkaSourceMessage) else item.msg
            if record.offset is not None and record.offset >= 0:
                self._offset = record.offset + 1  # resume after the last record emitted
        return batch

    def snapshot(self) -> int:
        return self._offset

    def close(self) -> None:
        self._source.release(self._consumer)


class RestingKafkaSource(KafkaSource):
    """bytewax's Kafka source with one consumer per process and partitions that rest."""

    def __init__(self, *args: Any, idle_poll_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._idle = timedelta(seconds=idle_poll_s)
        self._shared: SharedConsumer | None = None
        self._shared_lock = threading.Lock()

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> RestingPartition:
        idx, topic = for_part.split("-", 1)
        if topic not in self._topics:
            raise ValueError(f"recovery state names topic {topic!r}, not one of this flow's {list(self._topics)}")
        offset = self._starting_offset if resume_state is None else resume_state
        return RestingPartition(SharedPartition(self, self._consumer(), topic, int(idx), offset), self._idle)

    def _consumer(self) -> SharedConsumer:
        with self._shared_lock:
            if self._shared is None:
                # bytewax's own partition settings: offsets live in the recovery snapshots
                config = {"group.id": "BYTEWAX_IGNORED", "enable.auto.commit": "false",
                          "bootstrap.servers": ",".join(self._brokers), "enable.partition.eof": str(not self._tail)}
                config.update(self._add_config)
                self._shared = SharedConsumer(config, self._batch_size)
            return self._shared

    def release(self, consumer: SharedConsumer) -> None:
        with self._shared_lock:
            if consumer.release() and self._shared is consumer:
                self._shared = None


@operator
def kafka_input(step_id: str, flow: Dataflow, *, brokers: list[str], topics: list[str], starting_offset: int,
                batch_size: int, add_config: dict[str, str], idle_poll_s: float) -> KafkaOpOut:
    """Records (``oks``) and the source's errors (``errs``), as ``kop.input`` gives them."""
    records = op.input("kafka_input", flow, RestingKafkaSource(
        brokers, topics, tail=True, starting_offset=starting_offset, add_config=add_config,
        batch_size=batch_size, raise_on_errors=False, idle_poll_s=idle_poll_s))
    split = op.branch("split_err", records, lambda msg: isinstance(msg, KafkaSourceMessage))
    return KafkaOpOut(split.trues, split.falses)
