"""Churn alerts for CRM: a page of them, or a live server-sent stream; each with a win-back offer."""

from __future__ import annotations

import re
import secrets
from typing import Annotated, Literal

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


ALERT_SCAN = 1000  # alerts read per page when ordering by value at risk


@router.get("/v1/alerts/churn", response_model=ChurnAlerts, responses=responses(*KEYED, 503))
async def churn_alerts(
    _: ProfileScope,
    store: StoreDep,
    arbitration: ArbitrationDep,
    since: Annotated[str | None, Query(max_length=40, description="an alert id, ISO-8601 time or epoch ms")] = None,
    tier: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    order: Annotated[Literal["value", "time"], Query(description="most value at risk first, or as raised")] = "value",
) -> Response:
    """Alerts whose value at risk clears the value floor. ``order=value`` (default): the ``limit``
    most valuable among the next ``ALERT_SCAN`` alerts after ``since``; ``next`` is the last alert
    read, so polling with it sees only newer ones. ``order=time``: as raised."""
    entries = await store.alerts(_stream_start(since), count=ALERT_SCAN if order == "value" else limit * 4)
    states = dict(zip((a["id"] for a in entries), await _with_tiers(store, entries)))
    chosen = answers.alerts_by_value(entries, store.population.median_value_at_risk(), tier, limit)
    if order == "time":
        chosen.sort(key=lambda a: answers.stream_order(a["id"]))
    await _suggest_win_back(store, arbitration, [(alert, states[alert["id"]]) for alert in chosen])
    last = (chosen[-1]["id"] if chosen else None) if order == "time" else (entries[-1]["id"] if entries else None)
    return json_response({"alerts": chosen, "next": last or since})


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
    """Server-sent events: each new churn alert worth a call (value at risk above the floor) as
    it is raised. Alerts arrive in the order they are raised; those that arrive together (one
    read of the stream, up to 100) are sent most value at risk first. An event carries an
    ``id`` only where everything raised before it has been sent, so a reconnect with
    Last-Event-ID never loses an alert (it may repeat a few)."""
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
            states = dict(zip((a["id"] for a in arrived), await _with_tiers(store, arrived)))
            ranked = answers.alerts_by_value(arrived, store.population.median_value_at_risk(), tier)
            read_ids = [a["id"] for a in arrived]
            done = set(read_ids) - {a["id"] for a in ranked}  # left out: nothing to send
            if not ranked:
                last_id = read_ids[-1]
                continue
            for alert in ranked:
                await _suggest_win_back(store, arbitration, [(alert, states[alert["id"]])])
                done.add(alert["id"])
                sent += 1
                final = sent == max_events or alert is ranked[-1]
                resume = answers.resume_id(read_ids, done) if final else None
                head = f"id: {resume}\n" if resume else ""
                yield f"{head}event: churn_alert\ndata: {orjson.dumps(alert).decode()}\n\n"
                if max_events is not None and sent >= max_events:
                    return
            last_id = read_ids[-1]

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
    """Attach the next best offer in a churn-alert context to each (alert, profile): the same
    gates as any next best offer (a win-back only while they are lapsing or at risk, no price
    cut for who returned everything), so the suggestion may be none."""
    now = now_ms()
    for alert, state in alerts:
        situation = offers.Situation(now, None, None, "churn_alert", alert.get("tier"),
                                     churn_score=store.population.churn_score(state, now))
        decision = offers.decide(store.offers.values(), store.offer_stats, state, situation, store.catalog,
                                 arbitration, seed=secrets.randbits(63))
        alert["suggested_offer"] = answers.suggested_offer(decision)
