"""The broker goes away and comes back.

- Kept its data (unreachable for a while, as a Kafka broker restarting): the flow reads on by
  itself, the API's feedback producer delivers again, and /readyz said so meanwhile.
- Lost its data (tansu keeps topics in memory; restarted, then the topics re-created and some
  events produced again): the flow stops loudly, naming the topics, instead of waiting at offsets
  that will never come; the API's feedback producer recovers (rebuilt if it went fatal).
"""

from __future__ import annotations

import asyncio
import time

import redis
from fastapi.testclient import TestClient

from api.feedback import FeedbackProducer
from api.main import create_app
from omnirec.stack import create_topics, free_port
from online_models import keys
from tests.integration.kafka_tools import produce, wait_for
from tests.seed import CATALOG, history

from .proxy import TcpProxy
from .state import delete_prefix, differences

CUSTOMERS = 20


def _orders(settings) -> list[int]:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        scheme = keys.KeyScheme(settings.key_prefix)
        raws = client.mget([scheme.customer(f"c-{c}") for c in range(CUSTOMERS)])
        return [keys.decode_profile(raw).orders if raw else 0 for raw in raws]
    finally:
        client.close()


def _load(settings, events) -> None:
    produce(settings, settings.topic_store, [(e["customer_id"].encode(), e) for e in events])


def _delivers(producer: FeedbackProducer) -> bool:
    try:
        asyncio.run(producer.send("c-0", b'{"probe": true}'))
        return True
    except Exception:  # noqa: BLE001 - any failure: not yet
        return False


def test_a_broker_that_comes_back_with_its_data_is_read_on(settings, run_flow, own_broker):
    proxy_port = free_port()
    broker = own_broker(advertised_port=proxy_port)  # clients reach it only through the proxy
    proxy = TcpProxy(("127.0.0.1", broker.port), port=proxy_port).start()
    s = settings.model_copy(update={"kafka_bootstrap": proxy.address, "broker_check_s": 1.0,
                                    "churn_wall_clock": False})
    create_topics(s)
    events = history(CUSTOMERS)
    producer = FeedbackProducer(s.kafka_bootstrap, s.topic_feedback, timeout_s=5)
    try:
        flow = run_flow(s)
        produce(s, s.topic_catalog, [(p["sku"].encode(), p) for p in CATALOG])
        _load(s, events[0::2])
        wait_for(lambda: min(_orders(s)) >= 1, 60, "the first baskets")
        with TestClient(create_app(s)) as api:
            assert api.get("/readyz").json()["broker"] == "ok"
            proxy.cut()
            cut_at = time.monotonic()
            down = wait_for(lambda: (r := api.get("/readyz")).json()["broker"] != "ok" and r, 20,
                            "/readyz to report the broker")
            assert down.status_code == 200 and down.json()["status"] == "degraded"
            assert down.json()["redis"] == "ok"
            wait_for(lambda: time.monotonic() - cut_at >= 5, 10, "the broker to stay away 5 s")
            proxy.restore()
            wait_for(lambda: api.get("/readyz").json()["broker"] == "ok", 30, "/readyz to see it back")
        _load(s, events[1::2])
        wait_for(lambda: min(_orders(s)) == 2, 60, "the flow to read on after the broker came back")
        assert flow.alive(), flow.log()[-3000:]
        wait_for(lambda: _delivers(producer), 30, "feedback to be delivered again")

        clean = s.model_copy(update={"key_prefix": s.key_prefix + "-clean",
                                     "recovery_dir": s.recovery_dir + "-clean"})
        run_flow(clean)  # the same topics, read once without a cut
        wait_for(lambda: min(_orders(clean)) == 2, 60, "the clean run")
        wait_for(lambda: not differences(s.redis_url, s.key_prefix, clean.key_prefix), 30,
                 "every key to hold the clean run's bytes")
    finally:
        producer.close()
        proxy.close()
        delete_prefix(s.redis_url, s.key_prefix + "-clean")


def test_a_broker_that_lost_its_topics_stops_the_flow_loudly(settings, run_flow, own_broker):
    broker = own_broker()
    s = settings.model_copy(update={"kafka_bootstrap": broker.bootstrap, "broker_check_s": 1.0,
                                    "churn_wall_clock": False})
    create_topics(s)
    events = history(CUSTOMERS)
    producer = FeedbackProducer(s.kafka_bootstrap, s.topic_feedback, timeout_s=5)
    try:
        flow = run_flow(s)
        produce(s, s.topic_catalog, [(p["sku"].encode(), p) for p in CATALOG])
        _load(s, events[0::2])
        wait_for(lambda: min(_orders(s)) >= 1, 60, "the first baskets")
        assert _delivers(producer)

        broker.stop()
        broker.start()  # same port, empty: tansu keeps topics in memory
        create_topics(s)
        _load(s, events[1::2])  # fewer messages than the flow has read: its offsets are at the end
        stopped_at = wait_for(lambda: not flow.alive() and time.monotonic(), 30, "the flow to stop")
        assert flow.proc.returncode != 0
        log = flow.log()
        assert "input topic" in log and ("gone from the broker" in log or "created again" in log), log[-3000:]
        assert "--reset-recovery" in log
        wait_for(lambda: _delivers(producer), 30, "feedback to be delivered by the restarted broker")
        assert time.monotonic() - stopped_at < 30
    finally:
        producer.close()
