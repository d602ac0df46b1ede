"""Product search for the checkout assistant."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from api.auth import RecommendScope
from api.deps import StoreDep
from api.errors import KEYED, responses
from api.responses import json_response
from api.schemas import CatalogSearch
from online_models import answers, ranking

router = APIRouter(tags=["catalog"])


@router.get("/v1/catalog/search", response_model=CatalogSearch, responses=responses(*KEYED, 503))
async def catalog_search(
    _: RecommendScope,
    store: StoreDep,
    q: Annotated[str, Query(min_length=1, max_length=64)],
    limit: Annotated[int, Query(ge=1, le=50)] = 10,
    customer_id: Annotated[str | None, Query(max_length=128, description="order matches by their affinity")] = None,
) -> Response:
    """Products whose SKU or name contains every word of `q` (case-insensitive), in stock first;
    for a known `customer_id`, the ones of their line, category and brand next
    (``ranking.search_order``), then by name."""
    state = (await store.fetch(customer_id, None, ()))[0] if customer_id else None
    found = ranking.search_order(answers.matching_products(store.catalog.values(), q), state, store.catalog)
    return json_response({"items": answers.product_rows(found[:limit])})
