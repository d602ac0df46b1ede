"""One customer: the profile, and the next best offer with its reasons."""

from __future__ import annotations

import logging
import secrets
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Response

from api.auth import ProfileScope, RecommendScope
from api.deps import ArbitrationDep, SigningDep, StoreDep, now_ms
from api.errors import KEYED, responses
from api.responses import json_response
from api.schemas import NextBestOffer, Profile
from online_models import answers, offers
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
        log.info("nbo decision %s customer=%s offer=%s control=%s exploration=%s", body["decision_id"],
                 customer_id, decision.chosen.offer.offer_id, decision.control, decision.explored)
    return json_response(body)
