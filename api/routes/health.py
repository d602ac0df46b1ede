"""Liveness, readiness and the dashboard's summary."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from redis.exceptions import RedisError

from api.auth import ProfileScope
from api.deps import FeedbackDep, StoreDep, now_ms
from api.errors import KEYED, responses
from api.responses import json_response
from api.schemas import Health, MetricsSummary, Readiness
from online_models import answers

router = APIRouter(tags=["ops"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Response:
    return json_response({"status": "ok"})


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness, "description": "Redis unavailable"}})
async def readyz(store: StoreDep, producer: FeedbackDep) -> Response:
    """Redis and the broker, each with its own field. Without Redis nothing can be answered: 503.
    Without the broker every read still works and only feedback is refused (503 on
    /v1/feedback), so the API stays in rotation: 200 with status "degraded"."""
    redis_problem, broker_problem = None, None
    try:
        await store.client.ping()
    except RedisError as exc:
        redis_problem = f"Redis: {type(exc).__name__}"
    broker_problem = await asyncio.to_thread(producer.broker_status)
    body = {"redis": redis_problem or "ok", "broker": broker_problem or "ok"}
    if redis_problem:
        return json_response({"status": "unavailable", "detail": redis_problem, **body}, 503)
    if broker_problem:
        return json_response({"status": "degraded", "detail": f"Kafka: {broker_problem}",
                              "products": len(store.catalog), **body})
    return json_response({"status": "ready", "products": len(store.catalog), **body})


@router.get("/v1/metrics/summary", response_model=MetricsSummary, responses=responses(*KEYED, 503))
async def metrics_summary(_: ProfileScope, store: StoreDep, request: Request) -> Response:
    """For dashboards: messages the flow has processed, alerts raised today, offer acceptance, and
    the numbers the Prometheus metrics show: the flow's (`flow`) and this API process's (`api`)."""
    now = now_ms()
    flow, alerts_today = await store.flow_metrics(answers.day_start_ms(now))
    return json_response(answers.metrics_summary(flow, alerts_today, store.offer_stats.values(),
                                                 request.app.state.metrics.counts(), now))
