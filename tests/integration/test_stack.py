"""The local stack, the per-test isolation fixtures and replay routing, against real services."""

from __future__ import annotations

import time

import orjson
import redis

from omnirec.replay import replay


def _consume_all(settings, topics, expected, timeout=30.0):
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "unused",
                  "enable.auto.commit": False, "log_level": 3})
    try:
        parts = []
        md = c.list_topics(timeout=10).topics
        for t in topics:
            parts += [TopicPartition(t, p, 0) for p in md[t].partitions]  # offset 0: beginning
        c.assign(parts)
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < expected and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            out.append((m.topic(), m.key(), m.value()))
        return out
    finally:
        c.close()


def test_replay_routes_by_channel_and_keeps_bytes(settings, tmp_path):
    lines = [
        b'{"event_id":"e1","type":"page_view","ts":"2026-11-25T10:00:00Z","channel":"web","anonymous_id":"a-1"}',
        b'{"event_id":"e2","type":"purchase","ts":"2026-11-25T10:01:00Z","channel":"store","customer_id":"c-42","items":[{"sku":"TR-001","qty":1,"price":49.9}]}',
        b'{"type":"product","sku":"TR-001","name":"Chinos","category":"men/trousers","price":49.9}',
        b'{not json',
    ]
    f = tmp_path / "events.jsonl"
    f.write_bytes(b"\n".join(lines) + b"\n")
    counts = replay(f, settings, max_speed=True, progress=False)
    assert counts["lines"] == 4 and counts["event"] == 2 and counts["product"] == 1
    assert counts["malformed"] == 1
    got = _consume_all(settings, [settings.topic_web, settings.topic_store, settings.topic_catalog], 4)
    by_value = {v: (t, k) for t, k, v in got}
    assert by_value[lines[0]] == (settings.topic_web, b"a-1")
    assert by_value[lines[1]] == (settings.topic_store, b"c-42")
    assert by_value[lines[2]] == (settings.topic_catalog, b"TR-001")
    assert by_value[lines[3]][0] == settings.topic_web
    assert orjson.loads(lines[1])["customer_id"] == "c-42"


def test_key_prefix_isolation(settings, redis_url, key_prefix):
    r = redis.Redis.from_url(redis_url)
    r.set(f"{key_prefix}:probe", b"1")
    assert settings.key_prefix == key_prefix
    assert settings.topic_web.startswith(key_prefix)
    r.close()
