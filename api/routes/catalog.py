"""Product search for the checkout assistant."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from api.auth import RecommendScope
from api.deps import StoreDep
from api.errors import KEYED, responses
from api.responses import json_response
from api.schemas import CatalogSearch
from online_models import answers

router = APIRouter(tags=["catalog"])


@router.get("/v1/catalog/search", response_model=CatalogSearch, responses=responses(*KEYED))
async def catalog_search(
    _: RecommendScope,
    store: StoreDep,
    q: Annotated[str, Query(min_length=1, max_length=64)],
    limit: Annotated[int, Query(ge=1, le=50)] = 10,
) -> Response:
    """Products whose SKU or name contains every word of `q` (case-insensitive), in stock first."""
    return json_response({"items": answers.search_catalog(store.catalog.values(), q, limit)})
