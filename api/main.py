"""The omnirec API. Run with `omnirec api` (uvicorn with uvloop and httptools)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from contextlib import asynccontextmanager
from typing import Annotated, Literal

import orjson
import redis.asyncio as aioredis
from confluent_kafka import KafkaException
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import Response, StreamingResponse
from redis.exceptions import RedisError

from api import ui
from api.auth import ProfileScope, RecommendScope
from api.feedback import FeedbackProducer
from api.schemas import MAX_K, CrossSellRequest, FeedbackRequest
from api.store import Store
from omnirec.settings import Settings, get_settings
from online_models import keys, offers, ranking
from online_models.events import parse_ts
from online_models.learning import feature_vector
from online_models.profile import profile_view
from online_models.refs import DecisionRef, RecommendationRef, decode_ref, encode_ref

log = logging.getLogger("omnirec.api")
NBO_CONTEXTS = "^(default|checkout|cancellation_intent|churn_alert)$"


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
        store = Store(client, keys.KeyScheme(settings.key_prefix), settings.churn_shards)
        try:
            await store.refresh()
        except RedisError:
            pass  # /readyz says so; the refresher retries
        refresher = asyncio.create_task(store.refresh_forever(settings.api_catalog_refresh_s))
        app.state.store = store
        app.state.feedback = FeedbackProducer(settings.kafka_bootstrap, settings.topic_feedback)
        yield
        refresher.cancel()
        app.state.feedback.close()
        await client.aclose()
        await pool.aclose()

    app = FastAPI(title="omnirec", version="0.1.0", lifespan=lifespan,
                  description="Real-time recommendations, cross-sell and customer profiles.")
    app.state.api_keys = settings.hashed_api_keys()
    app.state.rules = ranking.Rules(replenishable=tuple(settings.replenishable_categories))
    app.state.arbitration = settings.arbitration()

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
        return json_response(profile_view(state, _now_ms(), store.catalog, store.population))

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

    @app.get("/v1/customers/{customer_id}/next-best-offer", tags=["offers"])
    async def next_best_offer(
        customer_id: str,
        request: Request,
        _: RecommendScope,
        channel: Literal["web", "app", "store"] | None = None,
        store_id: Annotated[str | None, Query(max_length=64)] = None,
        context: Annotated[str, Query(pattern=NBO_CONTEXTS)] = "default",
    ) -> Response:
        store: Store = request.app.state.store
        state, _neighbors = await store.fetch(customer_id, None, ())
        now = _now_ms()
        tier = store.population.tier_of(state) if state is not None else None  # not the whole churn assessment
        situation = offers.Situation(now, channel, store_id, context, tier)
        decision = offers.decide(store.offers.values(), store.offer_stats, state, situation, store.catalog,
                                 request.app.state.arbitration, seed=secrets.randbits(63))
        return json_response(_decision_body(customer_id, decision, situation))

    @app.post("/v1/feedback", status_code=202, tags=["offers"])
    async def feedback(body: FeedbackRequest, request: Request, _: RecommendScope) -> Response:
        envelope = _feedback_envelope(body)
        try:
            await request.app.state.feedback.send(envelope["customer_id"] or "", orjson.dumps(envelope))
        except (asyncio.TimeoutError, KafkaException) as exc:
            raise HTTPException(503, f"Feedback not accepted, the broker did not acknowledge it: {exc}") from None
        return json_response({"accepted": True, "event_id": envelope["event_id"]}, 202)

    @app.get("/v1/catalog/search", tags=["catalog"])
    async def catalog_search(
        request: Request,
        _: RecommendScope,
        q: Annotated[str, Query(min_length=1, max_length=64)],
        limit: Annotated[int, Query(ge=1, le=50)] = 10,
    ) -> Response:
        """Products whose SKU or name contains every word of `q` (case-insensitive), in stock first."""
        store: Store = request.app.state.store
        words = q.lower().split()
        found = [p for p in store.catalog.values()
                 if all(word in f"{p.sku} {p.name}".lower() for word in words)]
        found.sort(key=lambda p: (not p.in_stock, p.name))
        return json_response({"items": [
            {"sku": p.sku, "name": p.name, "category": p.category, "brand": p.brand, "price": p.price,
             "in_stock": p.in_stock} for p in found[:limit]]})

    @app.get("/v1/metrics/summary", tags=["ops"])
    async def metrics_summary(request: Request, _: ProfileScope) -> Response:
        """For dashboards: messages the flow has processed, alerts raised today, offer acceptance."""
        store: Store = request.app.state.store
        now = _now_ms()
        midnight = now - now % 86_400_000
        pipe = store.client.pipeline(transaction=False)
        pipe.hgetall(store.scheme.flow_metrics())
        pipe.xrange(store.scheme.churn_alerts(), min=str(midnight), max="+", count=100_000)
        flow, alerts_today = await pipe.execute()
        shown = sum(stats.totals()[0] for stats in store.offer_stats.values())
        accepted = sum(stats.totals()[1] for stats in store.offer_stats.values())
        return json_response({
            "flow_messages": int(flow.get(b"messages", 0)),
            "flow_updated_ms": int(flow.get(b"updated_ms", 0)),
            "alerts_today": len(alerts_today),
            "offer_impressions": shown, "offer_accepts": accepted,
            "offer_acceptance_rate": round(accepted / shown, 4) if shown else None,
            "now_ms": now,
        })

    @app.get("/v1/alerts/churn", tags=["churn"])
    async def churn_alerts(
        request: Request,
        _: ProfileScope,
        since: Annotated[str | None, Query(max_length=40, description="an alert id, ISO-8601 time or epoch ms")] = None,
        tier: Annotated[str | None, Query(max_length=32)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> Response:
        store: Store = request.app.state.store
        start = _stream_start(since)
        entries = await store.client.xrange(store.scheme.churn_alerts(), min=start, max="+", count=limit * 4)
        alerts = [alert for alert in map(_alert_entry, entries) if tier is None or alert["tier"] == tier][:limit]
        await _suggest_win_back(request.app, alerts)
        return json_response({"alerts": alerts, "next": alerts[-1]["id"] if alerts else since})

    @app.get("/v1/alerts/churn/stream", tags=["churn"])
    async def churn_alert_stream(
        request: Request,
        _: ProfileScope,
        tier: Annotated[str | None, Query(max_length=32)] = None,
        max_events: Annotated[int | None, Query(ge=1)] = None,
    ) -> StreamingResponse:
        """Server-sent events: each new churn alert as it is raised (resume with Last-Event-ID)."""
        store: Store = request.app.state.store
        last_id = request.headers.get("last-event-id") or "$"

        async def events():
            nonlocal last_id
            sent = 0
            while max_events is None or sent < max_events:
                if await request.is_disconnected():
                    return
                reply = await store.client.xread({store.scheme.churn_alerts(): last_id}, count=100, block=1000)
                if not reply:
                    yield ": keep-alive\n\n"
                    continue
                for entry in reply[0][1]:
                    alert = _alert_entry(entry)
                    last_id = alert["id"]
                    if tier is not None and alert["tier"] != tier:
                        continue
                    await _suggest_win_back(request.app, [alert])
                    yield f"id: {alert['id']}\nevent: churn_alert\ndata: {orjson.dumps(alert).decode()}\n\n"
                    sent += 1
                    if max_events is not None and sent >= max_events:
                        return

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    ui.install(app)
    return app


def _stream_start(since: str | None) -> str:
    if not since:
        return "-"
    if "-" in since and since.replace("-", "").isdigit():
        return "(" + since  # an alert id: everything after it
    try:
        return str(parse_ts(since))
    except ValueError as exc:
        raise HTTPException(422, f"'since' must be an alert id, ISO-8601 time or epoch ms: {exc}") from None


def _alert_entry(entry) -> dict:
    entry_id, fields = entry
    return {"id": entry_id.decode(), **orjson.loads(fields[b"alert"])}


async def _suggest_win_back(app: FastAPI, alerts: list[dict]) -> None:
    """Attach the next best offer in a churn-alert context (one pipelined read for all)."""
    if not alerts:
        return
    store: Store = app.state.store
    states = await store.profiles([alert["customer_id"] for alert in alerts])
    now = _now_ms()
    for alert, state in zip(alerts, states):
        situation = offers.Situation(now, None, None, "churn_alert", alert.get("tier"))
        decision = offers.decide(store.offers.values(), store.offer_stats, state, situation, store.catalog,
                                 app.state.arbitration, seed=secrets.randbits(63))
        alert["suggested_offer"] = decision.chosen.summary() if decision.chosen else None


def _decision_body(customer_id: str, decision: offers.Decision, situation: offers.Situation) -> dict:
    body = {"customer_id": customer_id, "cell": decision.cell, "offer": None, "decision_id": None,
            "control": decision.control, "exploration": decision.explored, "reasons": decision.reasons,
            "runner_ups": [c.summary() for c in decision.runner_ups], "not_eligible": decision.rejected}
    if decision.chosen is not None:
        chosen = decision.chosen
        ref = DecisionRef(customer_id, chosen.offer.offer_id, chosen.cell, situation.channel,
                          decision.control, situation.now_ms, secrets.randbits(32))
        body["decision_id"] = encode_ref(ref)
        body["offer"] = {**chosen.summary(), "value": chosen.offer.value, "valid_days": chosen.offer.valid_days,
                         "bundle_skus": list(chosen.offer.bundle_skus)}
        log.info("nbo decision %s customer=%s offer=%s control=%s exploration=%s", body["decision_id"],
                 customer_id, chosen.offer.offer_id, decision.control, decision.explored)
    return body


def _feedback_envelope(body: FeedbackRequest) -> dict:
    """The `recs.feedback` envelope; its event_id is derived from the subject, so a client's
    retry of the same feedback is counted once downstream."""
    try:
        ref = decode_ref(body.decision_id, DecisionRef) if body.decision_id else \
            decode_ref(body.recommendation_id, RecommendationRef)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    subject = f"{body.decision_id or body.recommendation_id}|{body.event}"
    envelope = {
        "event_id": hashlib.sha256(subject.encode()).hexdigest()[:32],
        "type": body.event, "ts": body.ts or _now_ms(), "customer_id": ref.customer_id or "anonymous",
        "channel": ref.channel, "recommendation_id": body.recommendation_id, "decision_id": body.decision_id,
    }
    if isinstance(ref, DecisionRef):
        envelope.update(offer_id=ref.offer_id, cell=ref.cell, control=ref.control)
    else:
        envelope.update(sku=ref.sku, features=list(ref.features))
    return envelope


async def _recommend(app: FastAPI, customer_id, anonymous_id, req: ranking.Request) -> Response:
    store: Store = app.state.store
    state, neighbors = await store.fetch(customer_id, anonymous_id, req.skus)
    missing = [sku for sku in ranking.anchors(state, req) if sku not in neighbors and sku not in req.skus]
    if missing:  # home page anchors come from the profile, so they need a second trip
        neighbors.update(await store.neighbors(missing))
    suggestions = ranking.recommend(state, req, neighbors, store.popularity, store.catalog, app.state.rules,
                                    ranker=store.ranker)
    known_id = state.customer_id if state else customer_id
    now = _now_ms()
    items = []
    for suggestion in suggestions:
        ref = RecommendationRef(known_id, req.context, req.channel, now, secrets.randbits(32), suggestion.sku,
                                tuple(feature_vector(suggestion.features)))
        items.append({"sku": suggestion.sku, "score": suggestion.score, "reasons": suggestion.reasons,
                      "name": suggestion.name, "category": suggestion.category, "price": suggestion.price,
                      "recommendation_id": encode_ref(ref)})
    return json_response({"customer_id": known_id, "known_customer": state is not None,
                          "context": req.context, "items": items})


def _now_ms() -> int:
    return int(time.time() * 1000)


app = create_app()
