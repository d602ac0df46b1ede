"""Redis sink: each batch is coalesced per slot and written in one pipeline.

The writes are the engine's typed operations; each knows how to apply itself.

Redis outages: a batch whose pipeline fails with a connection error or a timeout is sent again,
whole, after an exponential backoff capped at ``OMNIREC_REDIS_RETRY_MAX_S``, on a fresh
connection, for as long as it takes. The flow neither exits nor drops a write: every write is an
absolute value (SET, HSET, ZADD with the full score), so a batch that was partly applied before
the connection broke converges to the same bytes when applied again. While it waits, the worker
waits with it (backpressure: nothing is read from Kafka that cannot be written). Retries are
counted (Prometheus ``omnirec_flow_redis_retries_total``, and from it the flow metrics hash's
field ``redis_retries``) and logged; each batch's write time is ``omnirec_flow_redis_batch_seconds``."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass

import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from redis.backoff import NoBackoff
from redis.retry import Retry

from flows import metrics
from flows.steps import FLOW_METRICS
from online_models import keys
from online_models.messages import Write, coalesce

log = logging.getLogger("omnirec.flow.redis")

RETRYABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


@dataclass(frozen=True)
class Backoff:
    base_s: float = 0.1
    max_s: float = 5.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1, 2, …): base, 2·base, … up to max."""
        return min(self.max_s, self.base_s * 2 ** min(attempt - 1, 32))


REDIS_RETRIES = metrics.Reported(metrics.REDIS_RETRIES)  # for the hash: the Prometheus count


def _say(message: str) -> None:
    # bytewax leaves logging unconfigured: print too, so the message is in the flow's log
    if log.hasHandlers():
        log.warning(message)
    else:
        print(f"omnirec flow: {message}", file=sys.stderr, flush=True)


class _RedisPartition(StatelessSinkPartition[Write]):
    def __init__(self, url: str, scheme: keys.KeyScheme | None, backoff: Backoff,
                 socket_timeout_s: float, sleep=time.sleep) -> None:
        # No retries inside redis-py: this sink retries whole batches, forever.
        self._client = redis.Redis.from_url(url, socket_timeout=socket_timeout_s,
                                            socket_connect_timeout=socket_timeout_s,
                                            retry=Retry(NoBackoff(), 0))
        self._scheme = scheme
        self._backoff = backoff
        self._sleep = sleep

    def write_batch(self, items: list[Write | CountOnly]) -> None:
        writes = list(coalesce(item for item in items if not isinstance(item, CountOnly)).values())
        processed = FLOW_METRICS.take()
        if not writes and not processed:
            return
        attempt, started, retries = 0, time.monotonic(), 0
        while True:
            retries += REDIS_RETRIES.take()
            try:
                self._execute(writes, processed, retries)
            except RETRYABLE as exc:
                attempt += 1
                metrics.REDIS_RETRIES.inc()
                delay = self._backoff.delay(attempt)
                _say(f"Redis write failed ({type(exc).__name__}: {exc}); batch of {len(writes)} writes, "
                     f"attempt {attempt}, retrying in {delay:.2f} s")
                self._client.connection_pool.disconnect()  # the next attempt connects afresh
                self._sleep(delay)
                continue
            metrics.REDIS_BATCH_SECONDS.observe(time.monotonic() - started)
            if attempt:
                _say(f"Redis is back: batch of {len(writes)} writes applied after {attempt} retries "
                     f"in {time.monotonic() - started:.1f} s")
            return

    def _execute(self, writes: list[Write], processed: int, retries: int) -> None:
        pipe = self._client.pipeline(transaction=False)
        for write in writes:
            write.apply(pipe)
        if self._scheme is not None and (processed or retries):
            # for dashboards, not part of the materialised view (a retried batch may count twice)
            metrics = self._scheme.flow_metrics()
            if processed:
                pipe.hincrby(metrics, "messages", processed)
            if retries:
                pipe.hincrby(metrics, "redis_retries", retries)
            pipe.hset(metrics, "updated_ms", time.time_ns() // 1_000_000)
        pipe.execute()

    def close(self) -> None:
        self._client.close()


class CountOnly:
    """Sent to the sink once per batch read: nothing to write, but the messages read so far are
    counted in the flow metrics hash. A batch whose messages write nothing on this worker (dead
    letters, or writes keyed to another process) would otherwise leave its count waiting for the
    next write (a live-metrics test saw 14 of 17 messages counted)."""

    __slots__ = ()


class RedisSink(DynamicSink[Write]):
    def __init__(self, url: str, scheme: keys.KeyScheme | None = None, backoff: Backoff | None = None,
                 socket_timeout_s: float = 5.0) -> None:
        self.url = url
        self.scheme = scheme
        self.backoff = backoff or Backoff()
        self.socket_timeout_s = socket_timeout_s

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RedisPartition:
        return _RedisPartition(self.url, self.scheme, self.backoff, self.socket_timeout_s)
