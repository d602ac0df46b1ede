"""The omnirec API. Run with `omnirec api` (uvicorn with uvloop and httptools)."""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Annotated, Literal

import orjson
import redis.asyncio as aioredis
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import Response
from redis.exceptions import RedisError

from api.auth import ProfileScope, RecommendScope
from api.schemas import MAX_K, CrossSellRequest
from api.store import Store
from omnirec.settings import Settings, get_settings
from online_models import keys, ranking
from online_models.profile import profile_view


def json_response(payload, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.redis_url, max_connections=settings.redis_max_connections, timeout=2,
            socket_timeout=2, socket_connect_timeout=2,
        )
        client = aioredis.Redis(connection_pool=pool)
        store = Store(client, keys.KeyScheme(settings.key_prefix))
        try:
            await store.refresh()
        except RedisError:
            pass  # /readyz says so; the refresher retries
        refresher = asyncio.create_task(store.refresh_forever(settings.api_catalog_refresh_s))
        app.state.store = store
        yield
        refresher.cancel()
        await client.aclose()
        await pool.aclose()

    app = FastAPI(title="omnirec", version="0.1.0", lifespan=lifespan,
                  description="Real-time recommendations, cross-sell and customer profiles.")
    app.state.api_keys = settings.hashed_api_keys()
    app.state.rules = ranking.Rules(replenishable=tuple(settings.replenishable_categories))

    @app.exception_handler(RedisError)
    async def redis_down(request: Request, exc: RedisError) -> Response:
        return json_response({"detail": f"Redis unavailable: {type(exc).__name__}"}, 503)

    @app.exception_handler(keys.SchemaMismatch)
    async def schema_mismatch(request: Request, exc: keys.SchemaMismatch) -> Response:
        return json_response({"detail": f"Stored data has another schema: {exc}"}, 503)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.get("/readyz", tags=["ops"])
    async def readyz(request: Request) -> Response:
        store: Store = request.app.state.store
        try:
            await store.client.ping()
        except RedisError as exc:
            return json_response({"status": "unavailable", "detail": f"Redis: {type(exc).__name__}"}, 503)
        return json_response({"status": "ready", "products": len(store.catalog)})

    @app.get("/v1/customers/{customer_id}", tags=["profile"])
    async def customer_profile(customer_id: str, request: Request, _: ProfileScope) -> Response:
        store: Store = request.app.state.store
        state, _neighbors = await store.fetch(customer_id, None, ())
        if state is None:
            raise HTTPException(404, "Customer not found")
        return json_response(profile_view(state, _now_ms(), store.catalog))

    @app.get("/v1/recommendations", tags=["recommend"])
    async def recommendations(
        request: Request,
        _: RecommendScope,
        customer_id: Annotated[str | None, Query(max_length=128)] = None,
        anonymous_id: Annotated[str | None, Query(max_length=128)] = None,
        context: Literal["home", "product", "cart"] = "home",
        sku: Annotated[list[str] | None, Query(max_length=100)] = None,
        channel: Literal["web", "app", "store"] | None = None,
        store_id: Annotated[str | None, Query(max_length=64)] = None,
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
    ) -> Response:
        skus = tuple(dict.fromkeys(sku or ()))
        if context in ("product", "cart") and not skus:
            raise HTTPException(422, f"context '{context}' needs at least one 'sku'")
        req = ranking.Request(context=context, skus=skus, channel=channel, store_id=store_id, k=k)
        return await _recommend(request.app, customer_id, anonymous_id, req)

    @app.post("/v1/cross-sell", tags=["recommend"])
    async def cross_sell(body: CrossSellRequest, request: Request, _: RecommendScope) -> Response:
        req = ranking.Request(context="cart", skus=tuple(body.basket), channel=body.channel,
                              store_id=body.store_id, k=body.k)
        return await _recommend(request.app, body.customer_id, None, req)

    return app


async def _recommend(app: FastAPI, customer_id, anonymous_id, req: ranking.Request) -> Response:
    store: Store = app.state.store
    state, neighbors = await store.fetch(customer_id, anonymous_id, req.skus)
    missing = [sku for sku in ranking.anchors(state, req) if sku not in neighbors and sku not in req.skus]
    if missing:  # home page anchors come from the profile, so they need a second trip
        neighbors.update(await store.neighbors(missing))
    suggestions = ranking.recommend(state, req, neighbors, store.popularity, store.catalog, app.state.rules)
    return json_response({
        "customer_id": state.customer_id if state else customer_id,
        "known_customer": state is not None,
        "context": req.context,
        "items": [asdict(s) for s in suggestions],
    })


def _now_ms() -> int:
    return int(time.time() * 1000)


app = create_app()
