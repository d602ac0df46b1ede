"""One shared run for the persona tests: the pet shop's history (tests/relevance/shop.py) goes
through the real broker (tansu), the real flow (a subprocess) and the real Redis (a test key
prefix) once per module, and the tests ask the real API about each persona.

Every test here is marked ``integration`` and ``relevance`` (tests/conftest.py)."""

from __future__ import annotations

import signal
import subprocess
import time
import uuid

import pytest
import redis
from fastapi.testclient import TestClient

from api.main import create_app
from omnirec.settings import Settings
from tests.integration.kafka_tools import produce, wait_for
from tests.integration.state_dump import wait_until_settled

from . import shop as pet_shop

KEYS = {"till-key": ["recommend", "profile"], "ops-key": ["admin"]}
TILL = {"Authorization": "Bearer till-key"}


@pytest.fixture(scope="module")
def shop_settings(kafka_bootstrap, redis_url, tmp_path_factory):
    """Settings of this module's run: its own key prefix and topics; churn on event time (a
    replay of history must raise its alerts too)."""
    from omnirec.stack import create_topics, delete_topics

    tag = f"t-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, redis_url=redis_url, key_prefix=tag,
        topic_web=f"{tag}.web.events", topic_store=f"{tag}.store.events", topic_catalog=f"{tag}.catalog.products",
        topic_offers=f"{tag}.offers", topic_feedback=f"{tag}.recs.feedback",
        topic_churn_alerts=f"{tag}.alerts.churn", topic_deadletter=f"{tag}.events.deadletter",
        recovery_dir=str(tmp_path_factory.mktemp("recovery") / "recovery"), snapshot_interval_s=1.0,
        churn_wall_clock=False, churn_shards=2)
    create_topics(settings)
    yield settings
    delete_topics(settings, settings.all_topics)
    _delete_prefix(redis_url, tag)


@pytest.fixture(scope="module")
def shop(shop_settings, tmp_path_factory):
    """The pet shop, fed to a running flow that has read all of it and gone quiet."""
    from omnirec.stack import flow_argv, settings_env, stop_pid

    built = pet_shop.build(int(time.time() * 1000))
    log_path = tmp_path_factory.mktemp("flow") / "flow.log"
    env = {**settings_env(shop_settings), "PYTHONUNBUFFERED": "1"}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(flow_argv(shop_settings, 1), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        produce(shop_settings, shop_settings.topic_catalog, [(p["sku"].encode(), p) for p in pet_shop.CATALOG])
        produce(shop_settings, shop_settings.topic_offers, [(o["offer_id"].encode(), o) for o in pet_shop.OFFERS])
        events = built.sorted_events()
        produce(shop_settings, shop_settings.topic_store, [(e["customer_id"].encode(), e) for e in events])
        produced = len(pet_shop.CATALOG) + len(pet_shop.OFFERS) + len(events)
        wait_until_settled(shop_settings.redis_url, shop_settings.key_prefix, produced, timeout=150,
                           alive=lambda: proc.poll() is None, describe=lambda: log_path.read_text(errors="replace"))
        built.flow = proc
        yield built
    finally:
        stop_pid(proc.pid, timeout=15, sig=signal.SIGINT)


@pytest.fixture(scope="module")
def api(shop_settings, shop):
    """The API over the run's Redis, once its copy of the catalog, offers and models is loaded."""
    app = create_app(shop_settings.model_copy(update={"api_keys": KEYS, "api_catalog_refresh_s": 0.2,
                                                      "nbo_control_share": 0.0}))
    with TestClient(app) as client:
        store = client.app.state.store
        wait_for(lambda: len(store.catalog) == len(pet_shop.CATALOG) and len(store.offers) == len(pet_shop.OFFERS)
                 and "WW-DB1" in store.basket_counts, 30, "the API's copy of the catalog, offers and basket counts")
        yield client


def _delete_prefix(redis_url: str, prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        found = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if found:
            client.delete(*found)
    finally:
        client.close()
