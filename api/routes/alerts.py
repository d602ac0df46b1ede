"""Churn alerts for CRM: a page of them, or a live server-sent stream; each with a win-back offer."""

from __future__ import annotations

import re
import secrets
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse

from api.auth import ProfileScope
from api.deps import ArbitrationDep, StoreDep, now_ms
from api.errors import KEYED, invalid, responses
from api.responses import json_response
from api.schemas import ChurnAlerts
from api.store import Store
from online_models import answers, offers
from online_models.events import parse_ts

router = APIRouter(tags=["churn"])
ALERT_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")  # a Redis stream id: two 64-bit numbers


@router.get("/v1/alerts/churn", response_model=ChurnAlerts, responses=responses(*KEYED, 503))
async def churn_alerts(
    _: ProfileScope,
    store: StoreDep,
    arbitration: ArbitrationDep,
    since: Annotated[str | None, Query(max_length=40, description="an alert id, ISO-8601 time or epoch ms")] = None,
    tier: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    entries = await store.alerts(_stream_start(since), count=limit * 4)
    chosen = [(alert, state) for alert, state in zip(entries, await _with_tiers(store, entries))
              if tier is None or alert["tier"] == tier][:limit]
    await _suggest_win_back(store, arbitration, chosen)
    alerts = [alert for alert, _ in chosen]
    return json_response({"alerts": alerts, "next": alerts[-1]["id"] if alerts else since})


@router.get("/v1/alerts/churn/stream", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "one `churn_alert` event per alert"},
                       **responses(*KEYED, 503)})
async def churn_alert_stream(
    request: Request,
    _: ProfileScope,
    store: StoreDep,
    arbitration: ArbitrationDep,
    tier: Annotated[str | None, Query(max_length=32)] = None,
    max_events: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
) -> StreamingResponse:
    """Server-sent events: each new churn alert as it is raised (resume with Last-Event-ID)."""
    last_id = request.headers.get("last-event-id") or "$"

    async def events():
        nonlocal last_id
        sent = 0
        while max_events is None or sent < max_events:
            if await request.is_disconnected():
                return
            arrived = await store.alerts_after(last_id, block_ms=1000)
            if not arrived:
                yield ": keep-alive\n\n"
                continue
            for alert, state in zip(arrived, await _with_tiers(store, arrived)):
                last_id = alert["id"]
                if tier is not None and alert["tier"] != tier:
                    continue
                await _suggest_win_back(store, arbitration, [(alert, state)])
                yield f"id: {alert['id']}\nevent: churn_alert\ndata: {orjson.dumps(alert).decode()}\n\n"
                sent += 1
                if max_events is not None and sent >= max_events:
                    return

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _stream_start(since: str | None) -> str:
    if not since:
        return "-"
    if ALERT_ID.fullmatch(since) and all(int(part) < 2**64 for part in since.split("-")):
        return "(" + since  # an alert id: everything after it
    try:
        return str(max(0, parse_ts(since)))  # stream ids start at 0
    except ValueError as exc:
        raise invalid(("query", "since"), f"must be an alert id, ISO-8601 time or epoch ms: {exc}") from None


async def _with_tiers(store: Store, alerts: list[dict]) -> list:
    """The alerted customers' profiles (one pipelined read), and each alert's value tier from
    the population as it is now: the flow raises alerts without one (a rank in a population
    that was still moving when the timer was set)."""
    if not alerts:
        return []
    states = await store.profiles([alert["customer_id"] for alert in alerts])
    for alert, state in zip(alerts, states):
        if alert.get("tier") is None:
            alert["tier"] = store.population.tier_of(state) if state is not None else None
    return states


async def _suggest_win_back(store: Store, arbitration: offers.ArbitrationSettings, alerts: list[tuple]) -> None:
    """Attach the next best offer in a churn-alert context to each (alert, profile)."""
    now = now_ms()
    for alert, state in alerts:
        situation = offers.Situation(now, None, None, "churn_alert", alert.get("tier"))
        decision = offers.decide(store.offers.values(), store.offer_stats, state, situation, store.catalog,
                                 arbitration, seed=secrets.randbits(63))
        alert["suggested_offer"] = answers.suggested_offer(decision)
