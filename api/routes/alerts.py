"""Churn alerts for CRM: a page of them, or a live server-sent stream; each with a win-back offer."""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse

from api.alert_hub import AlertHub, enrich, still_away, suggest_win_back
from api.auth import ProfileScope
from api.deps import AlertHubDep, ArbitrationDep, StoreDep
from api.errors import KEYED, invalid, responses
from api.responses import json_response
from api.schemas import ChurnAlerts
from api.store import Store
from online_models import answers, tiers
from online_models.events import parse_ts

router = APIRouter(tags=["churn"])
ALERT_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")  # a Redis stream id: two 64-bit numbers


def _is_alert_id(text: str) -> bool:
    """A Redis stream id Redis accepts as an exclusive start: two numbers of at most 64 bits (20
    digits may hold more), and not the largest id of all (nothing can follow it: Redis refuses it)."""
    if ALERT_ID.fullmatch(text) is None:
        return False
    parts = tuple(int(part) for part in text.split("-"))
    return all(part < 2**64 for part in parts) and parts != (2**64 - 1, 2**64 - 1)


ALERT_SCAN = 1000  # alerts read per page when ordering by value at risk
TIER_NAMES = (*(name for name, _ in tiers.DEFAULT_TIERS), tiers.DEFAULT_REST)
TIER_HELP = f"only alerts of this value tier: {', '.join(TIER_NAMES)}"


def _check_tier(tier: str | None) -> None:
    """A tier no customer can be in is a mistake (a typo gave an empty list, silently): 422."""
    if tier is not None and tier not in TIER_NAMES:
        raise invalid(("query", "tier"), f"must be one of {', '.join(TIER_NAMES)}")


@router.get("/v1/alerts/churn", response_model=ChurnAlerts, responses=responses(*KEYED, 503))
async def churn_alerts(
    _: ProfileScope,
    store: StoreDep,
    arbitration: ArbitrationDep,
    since: Annotated[str | None, Query(max_length=41, description="an alert id, ISO-8601 time or epoch ms")] = None,
    tier: Annotated[str | None, Query(max_length=32, description=TIER_HELP)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    order: Annotated[Literal["value", "time"], Query(description="most value at risk first, or as raised")] = "value",
) -> Response:
    """Alerts whose value at risk clears the value floor. ``order=value`` (default): the ``limit``
    most valuable among the next ``ALERT_SCAN`` alerts after ``since``; ``next`` is the last alert
    read, so polling with it sees only newer ones. ``order=time``: as raised."""
    _check_tier(tier)
    read = await store.alerts(_stream_start(since), count=ALERT_SCAN if order == "value" else limit * 4)
    last_read = read[-1]["id"] if read else None
    entries, states = await still_away(store, read)
    median = store.population.median_value_at_risk()
    if order == "time":
        kept = sorted(answers.alerts_by_value(entries, median, tier), key=lambda a: answers.stream_order(a["id"]))
        chosen = kept[:limit]
        # past every alert read when all were sent or left out: a poller never sticks on a page
        # of alerts below the floor (the demo audit saw `next` stay null)
        last = chosen[-1]["id"] if len(kept) > limit else last_read
    else:
        chosen, last = answers.alerts_by_value(entries, median, tier, limit), last_read
    suggest_win_back(store, arbitration, chosen, states)
    return json_response({"alerts": chosen, "next": last or since})


@router.get("/v1/alerts/churn/stream", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "one `churn_alert` event per alert"},
                       **responses(*KEYED, 503)})
async def churn_alert_stream(
    request: Request,
    _: ProfileScope,
    store: StoreDep,
    hub: AlertHubDep,
    tier: Annotated[str | None, Query(max_length=32, description=TIER_HELP)] = None,
    max_events: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
) -> StreamingResponse:
    """Server-sent events: each new churn alert worth a call (value at risk above the floor) as
    it is raised. Alerts arrive in the order they are raised; those that arrive together (one
    read of the stream, up to 100) are sent most value at risk first. An event carries an
    ``id`` only where everything raised before it has been sent, so a reconnect with
    Last-Event-ID never loses an alert (it may repeat a few). Every stream is fed by the app's
    one reader of the alert stream (api/alert_hub.py); a client that falls far behind is
    disconnected, and resumes with Last-Event-ID."""
    _check_tier(tier)
    resume_from = request.headers.get("last-event-id")
    if resume_from is not None and not _is_alert_id(resume_from):
        raise invalid(("header", "last-event-id"), "must be an alert id (ms-seq)")
    sub = hub.subscribe()  # before the catch-up read, so that nothing falls between the two

    async def events():
        sent = 0
        seen = answers.stream_order(resume_from) if resume_from else None
        try:
            batches = [await _catch_up(store, hub, resume_from)] if resume_from else []
            while max_events is None or sent < max_events:
                if not batches:
                    if sub.cut or await request.is_disconnected():
                        return
                    try:
                        batches.append(await asyncio.wait_for(sub.queue.get(), KEEP_ALIVE_S))
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                batch = [a for a in batches.pop(0) if seen is None or answers.stream_order(a["id"]) > seen]
                if not batch:
                    continue
                seen = answers.stream_order(batch[-1]["id"])
                for event in _batch_events(batch, store, tier, max_events, sent):
                    sent += 1
                    yield event
        finally:
            hub.unsubscribe(sub)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


KEEP_ALIVE_S = 1.0
CATCH_UP_MAX = 10_000  # alerts re-read on a resume (the stream itself keeps churn_alerts_maxlen)


async def _catch_up(store: Store, hub: AlertHub, after_id: str) -> list[dict]:
    """The alerts raised after `after_id` that the live reader may have passed already."""
    return await enrich(store, hub.arbitration, await store.alerts("(" + after_id, CATCH_UP_MAX))


def _batch_events(batch: list[dict], store: Store, tier: str | None, max_events: int | None, sent: int):
    """The SSE events of one batch (already enriched), most value at risk first; the last one
    sent carries the id to resume from."""
    ranked = answers.alerts_by_value(batch, store.population.median_value_at_risk(), tier)
    read_ids = [a["id"] for a in batch]
    done = set(read_ids) - {a["id"] for a in ranked}  # left out: nothing to send
    for alert in ranked:
        done.add(alert["id"])
        sent += 1
        final = sent == max_events or alert is ranked[-1]
        resume = answers.resume_id(read_ids, done) if final else None
        head = f"id: {resume}\n" if resume else ""
        yield f"{head}event: churn_alert\ndata: {orjson.dumps(alert).decode()}\n\n"
        if max_events is not None and sent >= max_events:
            return


def _stream_start(since: str | None) -> str:
    if not since:
        return "-"
    if _is_alert_id(since):
        return "(" + since  # an alert id: everything after it
    try:
        return str(max(0, parse_ts(since)))  # stream ids start at 0
    except ValueError:  # its message quotes the value: the API never echoes what it was sent
        raise invalid(("query", "since"), "must be an alert id (ms-seq), an ISO-8601 time with a time zone, "
                      "or epoch ms within the years 1 to 9999") from None
