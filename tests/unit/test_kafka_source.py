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
