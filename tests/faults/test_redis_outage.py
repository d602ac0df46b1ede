"""Redis unreachable for ~10 s while the flow processes a stream: the flow waits and retries, and
afterwards every key holds the same bytes as a run that never saw the outage.

The flow under test reaches the shared Redis through a TcpProxy that the test cuts (the machine's
Redis itself is never touched); a clean flow reads the same topics at the same time, straight
into Redis under its own key prefix."""

from __future__ import annotations

import time

from online_models import keys
from tests.integration.kafka_tools import produce, wait_for
from tests.seed import CATALOG, history

from .proxy import TcpProxy
from .state import delete_prefix, differences, snapshot

OUTAGE_S = 10.0
CUSTOMERS = 60


def _orders(client, prefix: str) -> list[int]:
    scheme = keys.KeyScheme(prefix)
    raws = client.mget([scheme.customer(f"c-{c}") for c in range(CUSTOMERS)])
    return [keys.decode_profile(raw).orders if raw else 0 for raw in raws]


def test_a_redis_outage_neither_stops_the_flow_nor_changes_its_state(settings, run_flow, redis_url):
    from urllib.parse import urlparse

    import redis

    target = urlparse(redis_url)
    proxy = TcpProxy((target.hostname or "127.0.0.1", target.port or 6379)).start()
    db = target.path.lstrip("/") or "0"
    quick = {"redis_retry_base_s": 0.05, "redis_retry_max_s": 1.0, "redis_socket_timeout_s": 2.0,
             "flow_batch_size": 10, "churn_wall_clock": False}
    faulty = settings.model_copy(update={**quick, "redis_url": f"redis://{proxy.address}/{db}"})
    clean = settings.model_copy(update={**quick, "key_prefix": settings.key_prefix + "-clean",
                                        "recovery_dir": settings.recovery_dir + "-clean"})
    client = redis.Redis.from_url(redis_url)
    events = history(CUSTOMERS)
    first, second = events[0::2], events[1::2]  # every customer's first basket, then their second
    try:
        flow = run_flow(faulty)
        run_flow(clean)
        produce(settings, settings.topic_catalog, [(p["sku"].encode(), p) for p in CATALOG])
        produce(settings, settings.topic_store, [(e["customer_id"].encode(), e) for e in first])
        wait_for(lambda: min(_orders(client, settings.key_prefix)) >= 1, 60, "the first half")

        proxy.cut()
        cut_at = time.monotonic()
        produce(settings, settings.topic_store, [(e["customer_id"].encode(), e) for e in second])
        wait_for(lambda: "Redis write failed" in flow.log(), 30, "the sink to see the outage")
        wait_for(lambda: time.monotonic() - cut_at >= OUTAGE_S, OUTAGE_S + 5, "the outage to last")
        assert flow.alive(), flow.log()[-3000:]
        assert min(_orders(client, settings.key_prefix)) < 2  # nothing of the second half got through
        proxy.restore()

        wait_for(lambda: "Redis is back" in flow.log(), 30, "the sink to reconnect")
        wait_for(lambda: min(_orders(client, settings.key_prefix)) == 2 and
                 min(_orders(client, clean.key_prefix)) == 2, 60, "both runs to see every event")
        wait_for(lambda: not differences(redis_url, settings.key_prefix, clean.key_prefix), 30,
                 "every key to hold the clean run's bytes")
        assert flow.alive(), flow.log()[-3000:]
        scheme = keys.KeyScheme(settings.key_prefix)
        assert int(client.hget(scheme.flow_metrics(), "redis_retries") or 0) >= 1  # visible, counted
        assert len(snapshot(redis_url, settings.key_prefix)) > CUSTOMERS  # profiles and the rest
    finally:
        proxy.close()
        delete_prefix(redis_url, clean.key_prefix)
        client.close()
