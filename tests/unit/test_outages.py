"""Outage handling that needs no services: the Redis sink's retry loop, the recovery identity
rules, and the Kafka source's error records (the fault suite, tests/faults, runs them for real)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import redis
from confluent_kafka import KafkaError

from flows import metrics
from flows.dataflow import SourceOffsetLost, source_error
from flows.redis_sink import Backoff, _RedisPartition
from omnirec.recovery import BrokerIdentity, mismatches


def test_backoff_doubles_up_to_its_cap():
    assert [Backoff(0.1, 1.0).delay(n) for n in range(1, 7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert Backoff(0.1, 5.0).delay(10_000) == 5.0


def test_the_sink_retries_a_failed_batch_whole_until_redis_answers(monkeypatch):
    slept: list[float] = []
    sink = _RedisPartition("redis://127.0.0.1:1/0", None, Backoff(0.1, 0.3), 1.0, sleep=slept.append)
    sent: list[list] = []
    failures = [redis.exceptions.ConnectionError("refused"), redis.exceptions.TimeoutError("slow"),
                redis.exceptions.ConnectionError("refused"), redis.exceptions.ConnectionError("refused")]

    def execute(writes, processed, retries):
        sent.append(list(writes))
        if failures:
            raise failures.pop(0)

    monkeypatch.setattr(sink, "_execute", execute)
    before = metrics.total(metrics.REDIS_RETRIES)

    monkeypatch.setattr("flows.redis_sink.coalesce", lambda items: dict(enumerate(items)))
    sink.write_batch(["write a", "write b"])
    assert slept == [0.1, 0.2, 0.3, 0.3]  # exponential, capped
    assert len(sent) == 5 and all(batch == sent[0] for batch in sent)  # the whole batch each time
    assert metrics.total(metrics.REDIS_RETRIES) - before == 4  # Prometheus, and from it the Redis hash


def test_other_redis_errors_are_not_retried(monkeypatch):
    sink = _RedisPartition("redis://127.0.0.1:1/0", None, Backoff(), 1.0, sleep=lambda s: None)
    monkeypatch.setattr("flows.redis_sink.coalesce", lambda items: dict(enumerate(items)))

    def execute(*_):
        raise redis.exceptions.ResponseError("WRONGTYPE")

    monkeypatch.setattr(sink, "_execute", execute)
    with pytest.raises(redis.exceptions.ResponseError):
        sink.write_batch([object()])


def _identity(cluster="c1", bootstrap="127.0.0.1:9092", **topics):
    return BrokerIdentity(cluster, bootstrap, topics or {"web": "id-web", "store": "id-store"})


def test_the_same_broker_at_another_address_matches():
    assert mismatches(_identity(), _identity(bootstrap="kafka:9092"), {("web", 0): 5}, {("web", 0): 5}) == []


def test_another_cluster_recreated_topics_and_offsets_beyond_the_end_are_named():
    found = mismatches(_identity(), _identity(cluster="c2", web="id-web-2", store="id-store"),
                       {("web", 0): 7, ("web", 9): 1}, {("web", 0): 3, ("web", 9): None})
    assert any("it belongs to cluster 'c1'" in f and "this broker is cluster 'c2'" in f for f in found)
    assert "topic web was created again since (id id-web, now id-web-2)" in found
    assert any("web[0] at offset 7, beyond the partition's end (3)" in f for f in found)
    assert any("web[9] at offset 1, a partition this broker does not have" in f for f in found)


def test_other_topics_or_no_record_with_offsets_mismatch_but_a_new_directory_does_not():
    assert mismatches(_identity(), _identity(web="id-web", orders="id-o"), {}, {})
    assert mismatches(None, _identity(), {("web", 0): 1}, {("web", 0): 1})
    assert mismatches(None, _identity(), {}, {}) == []
    assert mismatches(_identity(web=None, store=None), _identity(), {}, {}) == []  # no topic ids: no opinion


def _error(code, topic="web.events"):
    err = KafkaError(code)
    msg = SimpleNamespace(topic=topic, partition=0, offset=5, key=b"k", value=b"v")
    return SimpleNamespace(err=err, msg=msg)


def test_an_offset_out_of_range_stops_the_flow_and_client_errors_are_not_dead_letters():
    with pytest.raises(SourceOffsetLost, match="--reset-recovery"):
        source_error(_error(KafkaError._AUTO_OFFSET_RESET))
    assert source_error(_error(KafkaError._TRANSPORT, topic=None)) is None
    letter = source_error(_error(KafkaError._MSG_TIMED_OUT))
    assert letter.raw.topic == "web.events"


def test_the_broker_watch_raises_at_its_next_poll_or_exits_when_the_worker_is_blocked(monkeypatch):
    import os

    from flows.broker_watch import BrokerChanged, _Watch

    watch = _Watch("127.0.0.1:1", ["web"], 1.0, {}, active=False)
    assert watch.next_batch() == []
    watch._problem = "input topic web is gone"
    exits: list[int] = []
    monkeypatch.setattr(os, "_exit", exits.append)
    watch._exit_unless_raised(0.01)  # a worker blocked in a sink never polls the watch
    assert exits == [3]
    with pytest.raises(BrokerChanged, match="--reset-recovery"):
        watch.next_batch()
    watch._exit_unless_raised(0.01)  # it raised: no exit on top
    assert exits == [3]


def test_a_broker_that_does_not_answer_in_time_is_unreachable_not_a_crash_of_the_watch():
    """A topic description that times out (a broker restarting) is "cannot tell" (KafkaException),
    which the broker watch waits out; a bare TimeoutError once killed its thread, and a flow whose
    broker then lost its topics was never stopped."""
    import concurrent.futures

    import pytest
    from confluent_kafka import KafkaException

    from omnirec.recovery import topic_ids

    class Slow:
        def describe_topics(self, topics, request_timeout):
            future = concurrent.futures.Future()  # never answered
            return {name: future for name in topics.topic_names}

    with pytest.raises(KafkaException):
        topic_ids(Slow(), ["t.web"], timeout=0.01)
