"""The throughput ceiling: a bare bytewax keyed-state pass over the same topics.

kafka in → orjson parse → key on customer (or anonymous id / sku) → stateful_map count →
a sink that discards, counting items into one Redis counter (INCRBY per batch) so the bench
knows when all N messages went through. Configured by environment:
BENCH_BOOTSTRAP, BENCH_TOPICS (comma separated), BENCH_REDIS_URL, BENCH_COUNTER_KEY, BENCH_BATCH.
"""

from __future__ import annotations

import os

import orjson
import redis
from bytewax import operators as op
from bytewax.connectors.kafka import operators as kop
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition


class _Counting(StatelessSinkPartition):
    def __init__(self, url: str, key: str) -> None:
        self.r = redis.Redis.from_url(url)
        self.key = key

    def write_batch(self, items) -> None:
        if items:
            self.r.incrby(self.key, len(items))

    def close(self) -> None:
        self.r.close()


class CountingSink(DynamicSink):
    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key

    def build(self, step_id, worker_index, worker_count):
        return _Counting(self.url, self.key)


def _key(obj) -> str:
    if isinstance(obj, dict):
        return str(obj.get("customer_id") or obj.get("anonymous_id") or obj.get("sku") or "")
    return ""


def _parse(msg):
    try:
        return orjson.loads(msg.value)
    except orjson.JSONDecodeError:
        return None


def _count(n, _obj):
    n = (n or 0) + 1
    return n, n


def build() -> Dataflow:
    flow = Dataflow("bench_ceiling")
    kin = kop.input("kafka_in", flow, brokers=[os.environ["BENCH_BOOTSTRAP"]],
                    topics=os.environ["BENCH_TOPICS"].split(","), starting_offset=-2,
                    batch_size=int(os.environ.get("BENCH_BATCH", "1000")))
    parsed = op.map("parse", kin.oks, _parse)
    keyed = op.key_on("key", parsed, _key)
    counted = op.stateful_map("count", keyed, _count)
    op.output("discard", counted, CountingSink(os.environ["BENCH_REDIS_URL"], os.environ["BENCH_COUNTER_KEY"]))
    return flow
