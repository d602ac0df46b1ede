"""What routes depend on, as `Annotated` aliases: the Redis reader, the feedback producer, the
id signing keys and the answer settings, all made once in `create_app` and its lifespan. API-key scopes are in api/auth.py."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from api.feedback import FeedbackProducer
from api.store import Store
from online_models import offers, ranking
from online_models.refs import SigningKeys

if TYPE_CHECKING:  # api.alert_hub imports this module (for the clock)
    from api.alert_hub import AlertHub


# async: a plain def would cost a threadpool hop per request
async def get_store(request: Request) -> Store:
    return request.app.state.store


async def get_feedback(request: Request) -> FeedbackProducer:
    return request.app.state.feedback


async def get_rules(request: Request) -> ranking.Rules:
    return request.app.state.rules


async def get_arbitration(request: Request) -> offers.ArbitrationSettings:
    return request.app.state.arbitration


async def get_alert_hub(request: Request):
    return request.app.state.alert_hub


async def get_signing(request: Request) -> SigningKeys:
    return request.app.state.signing


StoreDep = Annotated[Store, Depends(get_store)]
FeedbackDep = Annotated[FeedbackProducer, Depends(get_feedback)]
RulesDep = Annotated[ranking.Rules, Depends(get_rules)]
ArbitrationDep = Annotated[offers.ArbitrationSettings, Depends(get_arbitration)]
SigningDep = Annotated[SigningKeys, Depends(get_signing)]
AlertHubDep = Annotated["AlertHub", Depends(get_alert_hub)]


def now_ms() -> int:
    """The API's clock (wall time, epoch ms); the answer functions take it as an argument."""
    return int(time.time() * 1000)
