"""The omnirec API. Run with `omnirec api` (uvicorn with uvloop and httptools)."""

from __future__ import annotations

import asyncio
import gc
import logging
import secrets
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from fastapi.responses import Response
from redis.exceptions import RedisError

from api import errors, ui
from api.alert_hub import READ_BLOCK_MS, AlertHub
from api.feedback import FeedbackProducer
from api.limits import BodySizeLimit
from api.metrics import ApiMetrics, MetricsMiddleware
from api.ratelimit import TokenBuckets
from api.responses import json_response
from api.routes import alerts, catalog, customers, feedback, health, offer_report, recommendations
from api.shedding import LoadShedding
from api.store import Store
from omnirec import logs
from omnirec.settings import Settings, get_settings
from online_models import keys, ranking
from online_models.refs import SigningKeys

log = logging.getLogger("omnirec.api")
SHUTDOWN_WAIT_S = 5.0


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    logs.configure(settings.log_format, settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.redis_url, max_connections=settings.redis_max_connections, timeout=2,
            socket_timeout=2, socket_connect_timeout=2,
        )
        client = aioredis.Redis(connection_pool=pool)
        store = Store(client, keys.KeyScheme(settings.key_prefix), settings.churn_shards,
                      settings.repeat_half_life_days, settings.api_repeats_refresh_s)
        try:
            await store.refresh()
        except RedisError:
            pass  # /readyz says so; the refresher retries
        # the alert streams' one reader has a connection of its own (its read blocks)
        stream_pool = aioredis.BlockingConnectionPool.from_url(
            settings.redis_url, max_connections=1, timeout=2, socket_timeout=READ_BLOCK_MS / 1000 + 5,
            socket_connect_timeout=2)
        stream_client = aioredis.Redis(connection_pool=stream_pool)
        app.state.alert_hub = AlertHub(store, stream_client, settings.arbitration(), settings.api_stream_queue)
        tasks = [asyncio.create_task(store.refresh_forever(settings.api_catalog_refresh_s)),
                 asyncio.create_task(store.refresh_neighbors_forever(settings.api_neighbors_refresh_s)),
                 asyncio.create_task(app.state.alert_hub.run())]
        app.state.store = store
        app.state.feedback = FeedbackProducer(settings.kafka_bootstrap, settings.topic_feedback,
                                              reconnect_backoff_max_ms=settings.kafka_reconnect_backoff_max_ms)
        freeze_startup_heap()
        yield
        for task in tasks:
            task.cancel()
        # bounded: a task that does not end on cancel (seen once in CI: shutdown waited 11 min)
        # must not keep the process from closing its producer and pools
        _done, stuck = await asyncio.wait(tasks, timeout=SHUTDOWN_WAIT_S)
        for task in stuck:
            log.warning("shutdown: background task %s did not stop within %s s", task.get_coro(), SHUTDOWN_WAIT_S)
        app.state.feedback.close()
        for redis_client, redis_pool in ((client, pool), (stream_client, stream_pool)):
            await redis_client.aclose()
            await redis_pool.aclose()

    app = FastAPI(title="omnirec", version="0.1.0", lifespan=lifespan,
                  description="Real-time recommendations, cross-sell and customer profiles.")
    app.state.api_keys = settings.hashed_api_keys()
    app.state.signing = signing_keys(settings)
    app.state.rate_limits = TokenBuckets(settings.rate_limit_per_s, settings.rate_limit_burst)
    app.state.rules = ranking.Rules(replenishable=tuple(settings.replenishable_categories))
    app.state.arbitration = settings.arbitration()
    app.state.erasure_topic = settings.topic_web  # tombstones go to the customer's partition of it

    errors.install(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.state.metrics = ApiMetrics()
    app.add_middleware(LoadShedding, max_in_flight=settings.api_max_in_flight,
                       retry_after_s=settings.api_shed_retry_after_s, shed=app.state.metrics.shed)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)  # added last: the outermost
    app.add_api_route("/metrics", app.state.metrics.expose, include_in_schema=False)

    @app.exception_handler(RedisError)
    async def redis_down(request: Request, exc: RedisError) -> Response:
        return json_response({"detail": f"Redis unavailable: {type(exc).__name__}"}, 503)

    @app.exception_handler(keys.SchemaMismatch)
    async def schema_mismatch(request: Request, exc: keys.SchemaMismatch) -> Response:
        return json_response({"detail": f"Stored data has another schema: {exc}"}, 503)

    for area in (health, customers, recommendations, feedback, catalog, alerts, offer_report):
        app.include_router(area.router)
    ui.install(app)
    return app


def freeze_startup_heap() -> None:
    """Move what start-up made (modules, functions, the first catalog: ~140k objects) out of
    the collector's reach. Otherwise every full collection walks them all: the latency bench saw
    the event loop stop for 100-190 ms at a time, every request in flight waiting on it."""
    gc.collect()
    gc.freeze()


def signing_keys(settings: Settings) -> SigningKeys:
    """The configured keys; without any, one random key for this process (ids die with it)."""
    if settings.signing_keys:
        return SigningKeys.of(settings.signing_keys)
    log.warning("OMNIREC_SIGNING_KEYS is empty: signing ids with a random key of this process; ids it issues "
                "fail after a restart and on other replicas")
    return SigningKeys.of({"ephemeral": secrets.token_bytes(32)})


app = create_app()
