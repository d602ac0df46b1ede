"""Redis sink: each batch is coalesced per key and written in one pipeline."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from flows.messages import Write
from flows.steps import FLOW_METRICS
from online_models import keys

ENCODERS: dict[str, Callable] = {
    "customer": keys.encode_customer,
    "neighbors": keys.encode_neighbors,
    "product": keys.encode_product,
    "offer": keys.encode_offer,
    "offer_stats": keys.encode_offer_stats,
    "ranker": keys.encode_ranker,
    "churn_shard": keys.encode_churn_shard,
    "link": lambda pair: keys.encode_link(*pair),
}


def coalesce(batch: list[Write]) -> dict[tuple[str, str | None], Write]:
    """Last write per (key, member) wins; values are absolute so nothing is lost."""
    latest: dict[tuple[str, str | None], Write] = {}
    for write in batch:
        latest[write.slot] = write
    return latest


# An alert goes into the stream once, however often a resumed flow replays it.
ADD_ALERT_ONCE = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[3]) then
  return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'alert', ARGV[1])
end
return false
"""
SEEN_TTL_S = 180 * 86_400


def apply_writes(pipe, writes, add_alert=None, scheme: keys.KeyScheme | None = None, maxlen: int = 10_000) -> None:
    for write in writes:
        if write.kind == "alert":
            add_alert(keys=[write.key, scheme.churn_alert_seen(write.member)],
                      args=[keys.encode_alert(write.value), maxlen, SEEN_TTL_S], client=pipe)
        elif write.kind == "zadd":
            pipe.zadd(write.key, {write.member: write.value})
        elif write.kind == "sadd":
            pipe.sadd(write.key, write.member)
        elif write.kind in ("product", "offer"):
            pipe.hset(write.key, write.member, ENCODERS[write.kind](write.value))
        else:
            pipe.set(write.key, ENCODERS[write.kind](write.value))


class _RedisPartition(StatelessSinkPartition[Write]):
    def __init__(self, url: str, scheme: keys.KeyScheme, alerts_maxlen: int) -> None:
        self._client = redis.Redis.from_url(url)
        self._add_alert = self._client.register_script(ADD_ALERT_ONCE)
        self._scheme = scheme
        self._maxlen = alerts_maxlen

    def write_batch(self, items: list[Write]) -> None:
        if not items:
            return
        pipe = self._client.pipeline(transaction=False)
        apply_writes(pipe, coalesce(items).values(), self._add_alert, self._scheme, self._maxlen)
        processed = FLOW_METRICS.take()
        if processed:  # for dashboards: a running count, not part of the materialised view
            pipe.hincrby(self._scheme.flow_metrics(), "messages", processed)
            pipe.hset(self._scheme.flow_metrics(), "updated_ms", time.time_ns() // 1_000_000)
        pipe.execute()

    def close(self) -> None:
        self._client.close()


class RedisSink(DynamicSink[Write]):
    def __init__(self, url: str, scheme: keys.KeyScheme, alerts_maxlen: int = 10_000) -> None:
        self.url = url
        self.scheme = scheme
        self.alerts_maxlen = alerts_maxlen

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RedisPartition:
        return _RedisPartition(self.url, self.scheme, self.alerts_maxlen)
