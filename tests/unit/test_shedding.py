"""Load shedding (api/shedding.py): past the bound of requests in flight, an answer of 503 with
Retry-After at once, without waiting for the requests being worked on; health and metrics are
never shed; once a slot frees up, requests are accepted again."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter

from api.shedding import LoadShedding


def make(max_in_flight: int = 2):
    release = asyncio.Event()

    async def slow_app(scope, receive, send):
        if scope["path"] == "/slow":
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    shed = Counter("shed", "shed", registry=CollectorRegistry())
    return LoadShedding(slow_app, max_in_flight, retry_after_s=2, shed=shed), release, shed


async def call(app, path: str) -> tuple[int, dict[bytes, bytes], bytes]:
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await app({"type": "http", "path": path, "method": "GET", "headers": []}, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]


def test_past_the_bound_requests_get_503_with_retry_after_at_once_and_health_is_exempt():
    async def scenario():
        app, release, shed = make(max_in_flight=2)
        busy = [asyncio.create_task(call(app, "/slow")) for _ in range(2)]
        await asyncio.sleep(0)  # both are in flight now, waiting
        status, headers, body = await asyncio.wait_for(call(app, "/v1/recommendations"), 1)
        assert status == 503 and headers[b"retry-after"] == b"2" and b"Overloaded" in body
        assert (await asyncio.wait_for(call(app, "/healthz"), 1))[0] == 200
        assert (await asyncio.wait_for(call(app, "/metrics"), 1))[0] == 200
        assert shed._value.get() == 1
        release.set()
        assert [r[0] for r in await asyncio.gather(*busy)] == [200, 200]
        assert (await call(app, "/v1/recommendations"))[0] == 200  # slots free again
        assert app.in_flight == 0

    asyncio.run(scenario())


def test_a_failing_request_frees_its_slot():
    async def failing(scope, receive, send):
        raise RuntimeError("boom")

    app = LoadShedding(failing, 1, 1, Counter("s", "s", registry=CollectorRegistry()))

    async def scenario():
        for _ in range(3):
            try:
                await call(app, "/x")
            except RuntimeError:
                pass
        assert app.in_flight == 0

    asyncio.run(scenario())
