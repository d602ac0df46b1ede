"""One customer: the profile, and the next best offer with its reasons."""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Annotated, Literal

import orjson
from confluent_kafka import KafkaException
from fastapi import APIRouter, HTTPException, Path, Query, Request, Response

from api.auth import AdminScope, ProfileScope, RecommendScope
from api.deps import ArbitrationDep, FeedbackDep, SigningDep, StoreDep, now_ms
from api.errors import KEYED, responses
from api.responses import json_response
from api.schemas import Erasure, NextBestOffer, Profile
from online_models import answers, erasure, offers
from online_models.profile import profile_view

log = logging.getLogger("omnirec.api")
router = APIRouter()
NBO_CONTEXTS = "^(default|checkout|cancellation_intent|churn_alert)$"
CustomerId = Annotated[str, Path(min_length=1, max_length=128)]


@router.get("/v1/customers/{customer_id}", tags=["profile"], response_model=Profile,
            responses=responses(*KEYED, 404, 503))
async def customer_profile(customer_id: CustomerId, _: ProfileScope, store: StoreDep) -> Response:
    state, _neighbors = await store.fetch(customer_id, None, ())
    if state is None:
        raise HTTPException(404, "Customer not found")
    return json_response(profile_view(state, now_ms(), store.catalog, store.population))


@router.delete("/v1/customers/{customer_id}", tags=["profile"], response_model=Erasure,
               responses=responses(*KEYED, 503))
async def erase_customer(customer_id: CustomerId, request: Request, _: AdminScope, store: StoreDep,
                         producer: FeedbackDep) -> Response:
    """Erase the customer: first a tombstone to their partition of the events topic (so the flow
    drops their state and ignores their late events), then every Redis key of them and of their
    aliases, their churn alerts and offer contacts. Idempotent; an unknown id is erased too (its
    events may be on their way). 503 if the broker did not take the tombstone: nothing is deleted."""
    aliases = await store.aliases(customer_id)
    tombstone = erasure.tombstone_envelope(customer_id, aliases, now_ms())
    try:
        await producer.send(customer_id, orjson.dumps(tombstone), topic=request.app.state.erasure_topic)
    except (asyncio.TimeoutError, KafkaException) as exc:
        raise HTTPException(503, f"Not erased, the broker did not acknowledge the tombstone: {exc}") from None
    keys_deleted, alerts_deleted = await store.erase(customer_id, aliases)
    log.info("erased customer=%s aliases=%d keys=%d alerts=%d tombstone=%s", customer_id, len(aliases),
             keys_deleted, alerts_deleted, tombstone["event_id"])
    return json_response({"customer_id": customer_id, "aliases": list(tombstone["aliases"]),
                          "keys_deleted": keys_deleted, "alerts_deleted": alerts_deleted,
                          "tombstone_event_id": tombstone["event_id"]})


@router.get("/v1/customers/{customer_id}/next-best-offer", tags=["offers"], response_model=NextBestOffer,
            responses=responses(*KEYED, 503))
async def next_best_offer(
    customer_id: CustomerId,
    caller: RecommendScope,
    store: StoreDep,
    arbitration: ArbitrationDep,
    signing: SigningDep,
    channel: Literal["web", "app", "store"] | None = None,
    store_id: Annotated[str | None, Query(max_length=64)] = None,
    context: Annotated[str, Query(pattern=NBO_CONTEXTS)] = "default",
    sku: Annotated[list[str] | None, Query(max_length=100, description="the basket at hand (bundles fit it)")] = None,
) -> Response:
    state, _neighbors = await store.fetch(customer_id, None, ())
    tier = store.population.tier_of(state) if state is not None else None  # not the whole churn assessment
    now = now_ms()
    situation = offers.Situation(now, channel, store_id, context, tier,
                                 churn_score=store.population.churn_score(state, now),
                                 basket=tuple(dict.fromkeys(sku or ())))
    decision = offers.decide(store.offers.values(), store.offer_stats, state, situation, store.catalog,
                             arbitration, seed=secrets.randbits(63))
    body = answers.decision_body(customer_id, decision, situation, nonce=secrets.randbits(32), signing=signing,
                                 reveal_profile=caller.may("profile"))
    if decision.chosen is not None:
        log.debug("nbo decision %s customer=%s offer=%s control=%s exploration=%s", body["decision_id"],
                 customer_id, decision.chosen.offer.offer_id, decision.control, decision.explored)
    return json_response(body)
