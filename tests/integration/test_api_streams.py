"""Many open alert streams against the real Redis: they share the app's one reader of the alert
stream, so a request pool far smaller than the number of streams still serves other requests,
and every stream gets the alert (measured before: 200 streams exhausted the pool, 83 were cut
and other requests took 0.3–2.3 s)."""

from __future__ import annotations

import asyncio
import threading

import httpx
import orjson
import pytest
import redis
import uvicorn

from api.main import create_app
from omnirec.settings import Settings
from omnirec.stack import free_port
from online_models import keys

STREAMS = 60
POOL = 4  # Redis connections of the request pool: far fewer than the streams
TILL = {"Authorization": "Bearer till-key"}


@pytest.fixture
def served(redis_url, key_prefix):
    settings = Settings(redis_url=redis_url, key_prefix=key_prefix, kafka_bootstrap="127.0.0.1:1",
                        api_keys={"till-key": ["recommend", "profile"]}, redis_max_connections=POOL,
                        rate_limit_per_s=0, api_max_in_flight=1000)
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield app, f"http://127.0.0.1:{port}", keys.KeyScheme(key_prefix)
    server.should_exit = True
    thread.join(15)


async def until(predicate, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def first_alert(client: httpx.AsyncClient, opened: list) -> dict:
    async with client.stream("GET", "/v1/alerts/churn/stream?max_events=1", headers=TILL) as response:
        assert response.status_code == 200
        opened.append(1)
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                return orjson.loads(line[6:])
    raise AssertionError("the stream ended without an alert")


def test_many_streams_share_one_reader_and_all_get_the_alert(served, redis_url):
    app, base, scheme = served

    async def scenario():
        limits = httpx.Limits(max_connections=STREAMS + 20)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
            await until(lambda: _answers(base), 20, "the API to listen")
            opened: list = []
            streams = [asyncio.create_task(first_alert(client, opened)) for _ in range(STREAMS)]
            await until(lambda: len(app.state.alert_hub.subscribers) == STREAMS, 30, "every stream to subscribe")
            # Other requests, with every stream open: each reads Redis through the small pool.
            others = await asyncio.gather(*(client.get(f"/v1/customers/c-nobody-{i}", headers=TILL)
                                            for i in range(3 * POOL)))
            assert [r.status_code for r in others] == [404] * len(others), [r.text for r in others]
            redis.Redis.from_url(redis_url).xadd(scheme.churn_alerts(), {"alert": orjson.dumps(
                {"customer_id": "c-lapsing", "value_at_risk": 120.0, "reasons": ["overdue"]})})
            alerts = await asyncio.wait_for(asyncio.gather(*streams), 30)
        assert len(alerts) == STREAMS and {a["customer_id"] for a in alerts} == {"c-lapsing"}
        assert app.state.alert_hub.batches >= 1

    asyncio.run(scenario())


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_stream_resumed_with_last_event_id_gets_what_was_raised_meanwhile(served, redis_url):
    app, base, scheme = served
    raised = redis.Redis.from_url(redis_url).xadd(scheme.churn_alerts(), {"alert": orjson.dumps(
        {"customer_id": "c-missed", "value_at_risk": 80.0, "reasons": ["overdue"]})}).decode()

    async def scenario():
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            await until(lambda: _answers(base), 20, "the API to listen")
            headers = {**TILL, "Last-Event-ID": "0-0"}
            async with client.stream("GET", "/v1/alerts/churn/stream?max_events=1", headers=headers) as response:
                lines = [line async for line in response.aiter_lines()]
        return lines

    lines = asyncio.run(scenario())
    data = [orjson.loads(line[6:]) for line in lines if line.startswith("data: ")]
    assert [a["customer_id"] for a in data] == ["c-missed"]
    assert f"id: {raised}" in lines  # where a later reconnect resumes
