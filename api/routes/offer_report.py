"""The offers' measured uplift: treated against the control group (admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from api.auth import AdminScope
from api.deps import StoreDep
from api.errors import KEYED, responses
from api.responses import json_response
from online_models import uplift

router = APIRouter(tags=["offers"])


@router.get("/v1/offers/report", responses=responses(*KEYED, 503))
async def offers_report(
    _: AdminScope, store: StoreDep,
    confidence: Annotated[float, Query(gt=0.5, lt=1.0)] = 0.95,
) -> Response:
    """Impressions, acceptance and value per offer and cell for treated and control decisions,
    the uplift with its interval, and the offers each gate removed (as of the store's last refresh)."""
    return json_response(uplift.offers_report(store.offers, store.offer_stats.values(), confidence))
