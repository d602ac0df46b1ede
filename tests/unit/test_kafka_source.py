"""The flow's Kafka source rests a quiet partition between polls and never a busy one."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from bytewax.inputs import StatefulSourcePartition

from flows.kafka_source import RestingPartition


class Scripted(StatefulSourcePartition):
    def __init__(self, batches):
        self.batches = list(batches)
        self.closed = False

    def next_batch(self):
        return self.batches.pop(0)

    def snapshot(self):
        return len(self.batches)

    def close(self):
        self.closed = True


def test_a_partition_that_found_nothing_rests_and_one_that_found_records_is_asked_again_at_once():
    part = RestingPartition(Scripted([[], ["a", "b"], []]), timedelta(milliseconds=50))
    before = datetime.now(timezone.utc)
    assert part.next_batch() == []
    assert before + timedelta(milliseconds=50) <= part.next_awake() <= datetime.now(timezone.utc) + timedelta(milliseconds=50)
    assert part.next_batch() == ["a", "b"] and part.next_awake() is None
    assert part.next_batch() == [] and part.next_awake() is not None


def test_snapshots_and_close_are_the_wrapped_partitions():
    inner = Scripted([[], []])
    part = RestingPartition(inner, timedelta(milliseconds=50))
    part.next_batch()
    assert part.snapshot() == 1
    part.close()
    assert inner.closed


class FakeMessage:
    def __init__(self, topic, partition, offset):
        self._t, self._p, self._o = topic, partition, offset

    def topic(self): return self._t
    def partition(self): return self._p
    def offset(self): return self._o
    def key(self): return b"k"
    def value(self): return b"{}"
    def headers(self): return None
    def latency(self): return None
    def timestamp(self): return (0, 0)
    def error(self): return None


class FakeConsumer:
    """What the shared consumer asks of librdkafka's: consume calls counted, answers scripted."""

    def __init__(self, answers):
        self.answers, self.calls = list(answers), 0

    def incremental_assign(self, partitions):
        pass

    def consume(self, n, timeout):
        self.calls += 1
        return self.answers.pop(0) if self.answers else []


def test_partitions_asking_right_after_a_consume_that_found_nothing_do_not_consume_again():
    from flows.kafka_source import QUIET_REST_S, SharedConsumer

    now = [100.0]
    fake = FakeConsumer([[], [FakeMessage("web", 1, 7)]])
    shared = SharedConsumer({}, batch_size=10, consumer=fake, clock=lambda: now[0])
    for partition in range(4):
        shared.assign("web", partition, 0)
    assert [shared.take("web", p) for p in range(4)] == [[], [], [], []]
    assert fake.calls == 1  # one consume for the four partitions of a quiet pass, not four
    now[0] += QUIET_REST_S
    assert shared.take("web", 0) == [] and fake.calls == 2  # the rest is over: consumed again
    [record] = shared.take("web", 1)  # what that consume found for partition 1 is handed over
    assert record.offset == 7 and fake.calls == 2
