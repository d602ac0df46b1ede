"""Liveness, readiness and the dashboard's summary."""

from __future__ import annotations

from fastapi import APIRouter, Response
from redis.exceptions import RedisError

from api.auth import ProfileScope
from api.deps import StoreDep, now_ms
from api.responses import json_response
from online_models import answers

router = APIRouter(tags=["ops"])


@router.get("/healthz")
async def healthz() -> Response:
    return json_response({"status": "ok"})


@router.get("/readyz")
async def readyz(store: StoreDep) -> Response:
    try:
        await store.client.ping()
    except RedisError as exc:
        return json_response({"status": "unavailable", "detail": f"Redis: {type(exc).__name__}"}, 503)
    return json_response({"status": "ready", "products": len(store.catalog)})


@router.get("/v1/metrics/summary")
async def metrics_summary(_: ProfileScope, store: StoreDep) -> Response:
    """For dashboards: messages the flow has processed, alerts raised today, offer acceptance."""
    now = now_ms()
    messages, updated_ms, alerts_today = await store.flow_metrics(answers.day_start_ms(now))
    return json_response(answers.metrics_summary(messages, updated_ms, alerts_today,
                                                 store.offer_stats.values(), now))
