"""Redis sink: each batch is coalesced per slot and written in one pipeline.

The writes are the engine's typed operations; each knows how to apply itself."""

from __future__ import annotations

import time

import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from flows.steps import FLOW_METRICS
from online_models import keys
from online_models.messages import Write, coalesce


class _RedisPartition(StatelessSinkPartition[Write]):
    def __init__(self, url: str, scheme: keys.KeyScheme | None) -> None:
        self._client = redis.Redis.from_url(url)
        self._scheme = scheme

    def write_batch(self, items: list[Write]) -> None:
        if not items:
            return
        pipe = self._client.pipeline(transaction=False)
        for write in coalesce(items).values():
            write.apply(pipe)
        processed = FLOW_METRICS.take()
        if processed and self._scheme is not None:  # for dashboards: not part of the materialised view
            pipe.hincrby(self._scheme.flow_metrics(), "messages", processed)
            pipe.hset(self._scheme.flow_metrics(), "updated_ms", time.time_ns() // 1_000_000)
        pipe.execute()

    def close(self) -> None:
        self._client.close()


class RedisSink(DynamicSink[Write]):
    def __init__(self, url: str, scheme: keys.KeyScheme | None = None) -> None:
        self.url = url
        self.scheme = scheme

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RedisPartition:
        return _RedisPartition(self.url, self.scheme)
