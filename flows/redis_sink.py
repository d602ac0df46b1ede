"""Redis sink: each batch is coalesced per key and written in one pipeline."""

from __future__ import annotations

from collections.abc import Callable

import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from flows.messages import Write
from online_models import keys

ENCODERS: dict[str, Callable] = {
    "customer": keys.encode_customer,
    "neighbors": keys.encode_neighbors,
    "product": keys.encode_product,
    "offer": keys.encode_offer,
    "offer_stats": keys.encode_offer_stats,
    "ranker": keys.encode_ranker,
    "link": lambda pair: keys.encode_link(*pair),
}


def coalesce(batch: list[Write]) -> dict[tuple[str, str | None], Write]:
    """Last write per (key, member) wins; values are absolute so nothing is lost."""
    latest: dict[tuple[str, str | None], Write] = {}
    for write in batch:
        latest[write.slot] = write
    return latest


def apply_writes(pipe, writes) -> None:
    for write in writes:
        if write.kind == "zadd":
            pipe.zadd(write.key, {write.member: write.value})
        elif write.kind == "sadd":
            pipe.sadd(write.key, write.member)
        elif write.kind in ("product", "offer"):
            pipe.hset(write.key, write.member, ENCODERS[write.kind](write.value))
        else:
            pipe.set(write.key, ENCODERS[write.kind](write.value))


class _RedisPartition(StatelessSinkPartition[Write]):
    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url)

    def write_batch(self, items: list[Write]) -> None:
        if not items:
            return
        pipe = self._client.pipeline(transaction=False)
        apply_writes(pipe, coalesce(items).values())
        pipe.execute()

    def close(self) -> None:
        self._client.close()


class RedisSink(DynamicSink[Write]):
    def __init__(self, url: str) -> None:
        self.url = url

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RedisPartition:
        return _RedisPartition(self.url)
