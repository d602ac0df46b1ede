"""What a shopper should see next: home, product page and cart; cross-sell at the till."""

from __future__ import annotations

import secrets
from dataclasses import replace
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from api.auth import RecommendScope
from api.deps import RulesDep, SigningDep, StoreDep, now_ms
from api.errors import KEYED, invalid, responses
from api.responses import json_response
from api.schemas import MAX_K, CrossSellRequest, Recommendations
from api.store import Store
from online_models import answers, ranking
from online_models.refs import SigningKeys

router = APIRouter(tags=["recommend"])


@router.get("/v1/recommendations", response_model=Recommendations, responses=responses(*KEYED, 503))
async def recommendations(
    _: RecommendScope,
    store: StoreDep,
    rules: RulesDep,
    signing: SigningDep,
    customer_id: Annotated[str | None, Query(max_length=128)] = None,
    anonymous_id: Annotated[str | None, Query(max_length=128)] = None,
    context: Literal["home", "product", "cart"] = "home",
    sku: Annotated[list[str] | None, Query(max_length=100)] = None,
    channel: Literal["web", "app", "store"] | None = None,
    store_id: Annotated[str | None, Query(max_length=64)] = None,
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
    exclude: Annotated[list[str] | None, Query(max_length=100, description="SKUs or categories to leave out")] = None,
) -> Response:
    skus = tuple(dict.fromkeys(sku or ()))
    if context in ("product", "cart") and not skus:
        raise invalid(("query", "sku"), f"context '{context}' needs at least one 'sku'")
    req = ranking.Request(context=context, skus=skus, channel=channel, store_id=store_id, k=k,
                          exclude=tuple(exclude or ()))
    return await _recommend(store, rules, signing, customer_id, anonymous_id, req)


@router.post("/v1/cross-sell", response_model=Recommendations, responses=responses(400, *KEYED, 503))
async def cross_sell(body: CrossSellRequest, _: RecommendScope, store: StoreDep, rules: RulesDep,
                     signing: SigningDep) -> Response:
    req = ranking.Request(context="cart", skus=tuple(body.basket), channel=body.channel,
                          store_id=body.store_id, k=body.k, exclude=tuple(body.exclude))
    return await _recommend(store, rules, signing, body.customer_id, None, req)


async def _recommend(store: Store, rules: ranking.Rules, signing: SigningKeys, customer_id: str | None,
                     anonymous_id: str | None, req: ranking.Request) -> Response:
    state, at_hand = await store.fetch(customer_id, anonymous_id, req.skus)
    # home page anchors come from the profile: their lists from the store's neighbour table
    neighbors = store.anchor_neighbors([sku for sku in ranking.lists_to_read(state, req) if sku not in req.skus],
                                       at_hand)
    # a thinly known basket item borrows its category's lists: from the table, no round trip
    neighbors = store.anchor_neighbors(ranking.stand_ins(req, neighbors, store.catalog, store.popularity), neighbors)
    now = now_ms()
    suggestions = ranking.recommend(state, replace(req, now_ms=now), neighbors, store.popularity, store.catalog,
                                    rules, ranker=store.ranker, repeats=store.repeats)
    nonces = [secrets.randbits(32) for _ in suggestions]
    return json_response(answers.recommendations_body(state, customer_id, req, suggestions, now, nonces,
                                                      signing))
